//! Does the model's text say what the engine does? The third check of the model step (after
//! structure and grounding): the text must name the symbols the engine trades and no other,
//! say for each one what the engine does with it (not "add" where the engine reduces, not
//! "buy" where it holds), and give each symbol its own numbers (not the size of another).
//! A sentence that names several symbols is only checked for the symbols it names.
//!
//! Pure functions over the engine's [`Strategy`], the request and the model's [`Words`]; the
//! engine's own text passes by construction (its numbers are the facts).

use super::contract::StrategyRequest;
use super::model::{Words, close_to, numbers_in};
use super::response::{ActionKind, Strategy};

/// Upper-case words a sentence may use that are not symbols.
const NOT_SYMBOLS: &[&str] = &[
    "USD",
    "USDC",
    "USDT",
    "ATR",
    "EMA",
    "SMA",
    "RSI",
    "MACD",
    "PNL",
    "TP",
    "SL",
    "OI",
    "API",
    "APR",
    "APY",
    "UTC",
    "DEX",
    "CEX",
    "PERP",
    "ID",
    "OK",
    "NOTE",
    "RISK",
    "BUY",
    "SELL",
    "HOLD",
    "LONG",
    "SHORT",
    "CLOSE",
    "REDUCE",
    "OPEN",
    "AND",
    "OR",
    "THE",
    "NO",
    "NOT",
    "IF",
    "ETF",
    "USA",
    "EU",
    "GMT",
    "AM",
    "PM",
    "KYC",
    "IMPORTANT",
    "WARNING",
    "ALERT",
];

/// Quote suffixes a venue symbol may carry, so `BTCUSDT` and `BTC-PERP` may be written `BTC`.
const SUFFIXES: &[&str] = &["-PERP", "-USD", "-USDC", "USDT", "USDC", "PERP"];

/// Words that say which way a trade goes.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Buy,
    Sell,
    Long,
    Short,
    Add,
    Cut,
    Close,
    Keep,
}

fn way_of(word: &str) -> Option<Way> {
    Some(match word {
        "buy" | "buying" | "bought" => Way::Buy,
        "sell" | "selling" | "sold" => Way::Sell,
        "long" => Way::Long,
        "short" | "shorting" => Way::Short,
        "add" | "adding" | "increase" | "increasing" | "open" | "opening" | "enter"
        | "entering" | "accumulate" | "deploy" | "deploying" => Way::Add,
        "reduce" | "reducing" | "trim" | "trimming" | "cut" | "cutting" | "decrease"
        | "decreasing" | "lower" | "lowering" | "part" | "partial" | "partially" | "half" => {
            Way::Cut
        }
        "close" | "closing" | "exit" | "exiting" | "flatten" | "unwind" | "liquidate" => Way::Close,
        "hold" | "holding" | "keep" | "keeping" | "maintain" | "unchanged" => Way::Keep,
        _ => return None,
    })
}

/// The ways that contradict `kind`, given the words of the sentence (`cut`: it also says the
/// trade is partial).
fn contradicts(kind: ActionKind, way: Way, cut: bool) -> bool {
    use Way::*;
    match kind {
        ActionKind::OpenLong => matches!(way, Sell | Short | Cut | Close),
        ActionKind::OpenShort => matches!(way, Buy | Long | Cut | Close),
        ActionKind::Reduce => way == Add || (way == Close && !cut),
        ActionKind::CloseLong => matches!(way, Buy | Add | Keep),
        ActionKind::CloseShort => matches!(way, Sell | Add | Keep),
        ActionKind::Hold => matches!(way, Buy | Sell | Add | Cut | Close),
    }
}

fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::OpenLong => "opens a long",
        ActionKind::OpenShort => "opens a short",
        ActionKind::CloseLong => "closes the long",
        ActionKind::CloseShort => "closes the short",
        ActionKind::Reduce => "reduces it",
        ActionKind::Hold => "holds it",
    }
}

/// A word that makes a direction word after it no instruction: a negation ("do not add",
/// "nothing is opened") or a condition ("unless the objectives ask to deploy", "if it breaks").
fn negation(word: &str) -> bool {
    matches!(
        word,
        "not"
            | "no"
            | "don't"
            | "dont"
            | "never"
            | "avoid"
            | "without"
            | "nor"
            | "instead"
            | "nothing"
            | "unless"
            | "if"
            | "would"
            | "could"
    )
}

/// The first direction word of `text` that contradicts `kind`, if any. Clause by clause (split
/// at `;` `,` `:` and sentence ends): a negation or condition earlier in the clause makes the
/// direction words after it no instruction.
fn contradiction(text: &str, kind: ActionKind) -> Option<String> {
    let lower = text.to_lowercase();
    let words_of = |clause: &str| -> Vec<String> {
        clause
            .split(|c: char| !(c.is_alphabetic() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let cut = words_of(&lower).iter().any(|w| way_of(w) == Some(Way::Cut));
    for clause in lower
        .split([';', ',', ':', '!', '?'])
        .flat_map(|c| c.split(". "))
    {
        let words = words_of(clause);
        for (i, w) in words.iter().enumerate() {
            let Some(way) = way_of(w) else { continue };
            if words[..i].iter().any(|p| negation(p)) {
                break;
            }
            // "the open position" describes, it does not instruct.
            let adjective = way == Way::Add
                && w == "open"
                && i > 0
                && matches!(
                    words[i - 1].as_str(),
                    "the" | "an" | "your" | "its" | "this"
                );
            if !adjective && contradicts(kind, way, cut) {
                return Some(w.clone());
            }
        }
    }
    None
}

/// One symbol of the engine's answer: its action and its own numbers.
struct Sym {
    symbol: String,
    /// The names it may be written as (the symbol, and its base without a quote suffix).
    names: Vec<String>,
    kind: ActionKind,
    numbers: Vec<f64>,
}

fn names_of(symbol: &str) -> Vec<String> {
    let mut names = vec![symbol.to_string()];
    let upper = symbol.to_ascii_uppercase();
    for s in SUFFIXES {
        if let Some(base) = upper.strip_suffix(s)
            && base.len() >= 2
        {
            names.push(base.to_string());
        }
    }
    names
}

/// The symbol-like tokens of `text`: runs of letters, digits and inner hyphens.
fn tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .map(|t| t.trim_matches('-'))
        .filter(|t| !t.is_empty())
        .collect()
}

/// A token that looks like a ticker: upper-case letters (and digits, hyphens), 2–12 long.
fn ticker_like(t: &str) -> bool {
    let letters = t.chars().filter(|c| c.is_ascii_uppercase()).count();
    (2..=12).contains(&t.len())
        && letters >= 2
        && t.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

/// The engine's symbols with their numbers, and the numbers that belong to no one symbol.
fn facts(strategy: &Strategy, req: &StrategyRequest) -> (Vec<Sym>, Vec<f64>) {
    let mut syms: Vec<Sym> = strategy
        .actions
        .iter()
        .map(|a| {
            let mut numbers = vec![a.size, a.notional_usd];
            numbers.extend(a.stop_loss);
            numbers.extend(a.take_profit);
            numbers.extend(a.leverage.map(f64::from));
            numbers.extend(numbers_in(&a.reason));
            Sym {
                names: names_of(&a.symbol),
                symbol: a.symbol.clone(),
                kind: a.action,
                numbers,
            }
        })
        .collect();
    let mut shared: Vec<f64> = (0..=12).map(f64::from).collect();
    if let Some(an) = &strategy.analysis {
        shared.extend([
            an.equity_usd,
            an.before.gross_usd,
            an.before.net_usd,
            an.before.leverage,
            an.after.gross_usd,
            an.after.net_usd,
            an.after.leverage,
            an.leverage_cap,
            an.target_gross_usd,
            an.stop_loss_pct,
            an.take_profit_pct,
        ]);
        for d in &an.per_symbol {
            if let Some(s) = syms.iter_mut().find(|s| s.symbol == d.symbol) {
                s.numbers.extend([d.size, d.price, d.delta_usd]);
                s.numbers.extend(d.atr);
                s.numbers.extend(d.stop_loss_pct);
                s.numbers.extend(d.funding_hourly);
            }
        }
    }
    for p in &req.account.positions {
        if let Some(s) = syms.iter_mut().find(|s| s.symbol == p.symbol) {
            s.numbers.extend([p.size, p.price()]);
            s.numbers.extend(p.entry_price);
            s.numbers.extend(p.leverage);
        }
    }
    let acct = &req.account;
    shared.extend(acct.equity);
    shared.extend(acct.balance.as_ref().map(|b| b.amount));
    shared.extend(req.preferences.leverage);
    for t in req
        .objectives
        .iter()
        .chain(&req.constraints)
        .chain(&req.preferences.time_horizon)
    {
        shared.extend(numbers_in(t));
    }
    // The engine's own sentences: a number in one about a single symbol is that symbol's,
    // any other is shared.
    for t in std::iter::once(&strategy.summary)
        .chain(&strategy.steps)
        .chain(&strategy.risk_notes)
    {
        let named = named(&syms, t);
        match named.as_slice() {
            [one] => syms[*one].numbers.extend(numbers_in(t)),
            _ => shared.extend(numbers_in(t)),
        }
    }
    for s in &mut syms {
        s.numbers = s.numbers.iter().map(|x| x.abs()).collect();
    }
    (syms, shared.iter().map(|x| x.abs()).collect())
}

/// The indexes of the symbols `text` names.
fn named(syms: &[Sym], text: &str) -> Vec<usize> {
    let toks = tokens(text);
    (0..syms.len())
        .filter(|&i| {
            toks.iter()
                .any(|t| syms[i].names.iter().any(|n| n.eq_ignore_ascii_case(t)))
        })
        .collect()
}

/// The third check: the model's words against the engine's actions. Every problem, by field.
pub fn check_agreement(
    words: &Words,
    strategy: &Strategy,
    req: &StrategyRequest,
) -> Result<(), Vec<String>> {
    let (syms, shared) = facts(strategy, req);
    let mut problems = Vec::new();
    for (path, text) in words.fields() {
        for t in tokens(text) {
            let known = syms
                .iter()
                .any(|s| s.names.iter().any(|n| n.eq_ignore_ascii_case(t)));
            if !known && ticker_like(t) && !NOT_SYMBOLS.contains(&t) {
                problems.push(format!(
                    "`{path}` names {t}, which the engine does not trade"
                ));
            }
        }
        let [one] = named(&syms, text)[..] else {
            continue;
        };
        let s = &syms[one];
        if let Some(w) = contradiction(text, s.kind) {
            problems.push(format!(
                "`{path}` says \"{w}\" for {}, but the engine {}",
                s.symbol,
                kind_name(s.kind)
            ));
        }
        for x in numbers_in(text) {
            let own = s.numbers.iter().chain(&shared).any(|a| close_to(x, *a));
            if !own {
                let other = syms
                    .iter()
                    .find(|o| o.symbol != s.symbol && o.numbers.iter().any(|a| close_to(x, *a)));
                problems.push(match other {
                    Some(o) => format!(
                        "`{path}` gives {x} for {}, a number of {}",
                        s.symbol, o.symbol
                    ),
                    None => format!(
                        "`{path}` gives {x} for {}, not one of its numbers",
                        s.symbol
                    ),
                });
            }
        }
    }
    // The symbols the summary and steps name, found once.
    let said: Vec<usize> = std::iter::once(&words.summary)
        .chain(&words.steps)
        .flat_map(|t| named(&syms, t))
        .collect();
    for (i, s) in syms.iter().enumerate() {
        if s.kind != ActionKind::Hold && !said.contains(&i) {
            problems.push(format!(
                "the summary and steps never name {}, which the engine {}",
                s.symbol,
                match s.kind {
                    ActionKind::Reduce => "reduces",
                    ActionKind::CloseLong | ActionKind::CloseShort => "closes",
                    _ => "opens",
                }
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::{SEED_EXAMPLE, contract, engine};

    fn seed() -> (StrategyRequest, Strategy) {
        let req = contract::parse(SEED_EXAMPLE.as_bytes()).unwrap();
        let s = engine::advise(&req);
        (req, s)
    }

    fn words(summary: &str, steps: &[&str]) -> Words {
        Words {
            summary: summary.into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            risk_notes: vec!["Prices move; stops can slip.".into()],
        }
    }

    #[test]
    fn the_engines_own_text_agrees() {
        let (req, s) = seed();
        assert_eq!(check_agreement(&Words::of(&s), &s, &req), Ok(()));
    }

    #[test]
    fn a_faithful_rewording_agrees() {
        let (req, s) = seed();
        let w = words(
            "Leverage is far above the 3x cap: cut both positions.",
            &[
                "Trim the ETH long by 0.128742, stop at 3056.",
                "Cut the BTC short by 0.445565 (about $27,625.03); take profit 58280.",
            ],
        );
        assert_eq!(check_agreement(&w, &s, &req), Ok(()));
    }

    #[test]
    fn the_wrong_direction_a_foreign_symbol_a_swapped_size_or_a_missing_symbol_is_refused() {
        let (req, s) = seed();
        let w = words(
            "Cut both positions.",
            &[
                "Add to the ETH-PERP long by 0.128742.",
                "Reduce the BTC-PERP short by 0.128742.",
            ],
        );
        let p = check_agreement(&w, &s, &req).unwrap_err();
        assert!(
            p.iter().any(|p| p.contains("\"add\" for ETH-PERP")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("0.128742 for BTC-PERP, a number of ETH-PERP")),
            "{p:?}"
        );
        let w = words("Buy SOL now.", &["Reduce the ETH long by 0.128742."]);
        let p = check_agreement(&w, &s, &req).unwrap_err();
        assert!(p.iter().any(|p| p.contains("names SOL")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("never name BTC-PERP")), "{p:?}");
        // A held symbol is not bought; "do not add" is not an instruction to add.
        let w = words(
            "Do not add to BNB-PERP; hold the open BNB position.",
            &[
                "Reduce ETH by 0.128742.",
                "Reduce BTC by 0.445565.",
                "Buy BNB.",
            ],
        );
        let p = check_agreement(&w, &s, &req).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("\"buy\" for BNB-PERP"), "{p:?}");
    }
}
