//! What the request asks for, read once: the goal from `objectives`, the limits from the
//! constraint strings, and the defaults by risk tolerance. Read by the engine's first two steps
//! ([`super::book`], [`super::targets`]) and by the tests that recompute the cap.

use crate::advisor::contract::RiskTolerance;

/// What the buyer wants, read from `objectives`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Goal {
    Flat,
    DeltaNeutral,
    /// "lock in gains", "take profit", "secure / bank / realise gains": part of each winning
    /// position comes off ([`Goal::share`]), the stops of what stays move to break-even.
    LockGains,
    /// "reduce risk", "de-risk", "lower / cut risk", "reduce exposure": every position is cut
    /// by [`Goal::share`], and at least to the cap.
    ReduceRisk,
    RiskBudget,
}

impl Goal {
    /// Keyword rules, documented in the engine's header. `flat` wins over `neutral`.
    pub(super) fn from_objectives(text: Option<&str>) -> Goal {
        let Some(t) = text else {
            return Goal::RiskBudget;
        };
        let lower = t.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let phrase = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
        let gains = |verb: &str| {
            ["gain", "gains", "profit", "profits"]
                .iter()
                .any(|g| phrase(verb, g))
        };
        if words.iter().any(|w| matches!(*w, "flat" | "flatten"))
            || phrase("close", "all")
            || phrase("close", "everything")
            || phrase("exit", "all")
        {
            Goal::Flat
        } else if words
            .iter()
            .any(|w| matches!(*w, "neutral" | "hedge" | "hedged" | "hedging"))
        {
            Goal::DeltaNeutral
        } else if phrase("lock", "in")
            || phrase("take", "profit")
            || phrase("take", "profits")
            || ["secure", "bank", "realise", "realize", "protect"]
                .iter()
                .any(|v| gains(v))
        {
            Goal::LockGains
        } else if ["reduce", "lower", "cut", "less", "de"]
            .iter()
            .any(|v| phrase(v, "risk"))
            || words.contains(&"derisk")
            || phrase("reduce", "exposure")
        {
            Goal::ReduceRisk
        } else {
            Goal::RiskBudget
        }
    }

    /// The share of a position that [`Goal::LockGains`] takes off a winner, and that
    /// [`Goal::ReduceRisk`] cuts from everything: low 50%, medium 33%, high 25%.
    pub(super) fn share(tol: RiskTolerance) -> f64 {
        match tol {
            RiskTolerance::Low => 0.5,
            RiskTolerance::Medium => 0.33,
            RiskTolerance::High => 0.25,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Goal::Flat => "flat",
            Goal::DeltaNeutral => "delta_neutral",
            Goal::LockGains => "lock_in_gains",
            Goal::ReduceRisk => "reduce_risk",
            Goal::RiskBudget => "risk_budget",
        }
    }
}

/// The lower-case words of `text` (none when absent).
fn words_of(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// The objectives ask to put capital to work: "deploy", "allocate", "invest", "put … to work"
/// (rule 9 opens new positions then).
pub(super) fn deploys(text: Option<&str>) -> bool {
    let owned = words_of(text);
    let words: Vec<&str> = owned.iter().map(String::as_str).collect();
    words.iter().any(|w| {
        matches!(
            *w,
            "deploy" | "deploying" | "allocate" | "allocating" | "invest" | "investing"
        )
    }) || (words.contains(&"put") && words.windows(2).any(|w| w == ["to", "work"]))
}

/// The objectives ask to keep the upside ("preserve / keep upside", "let winners run"):
/// a winning position's take-profit sits 1.5× farther and its stop moves to break-even
/// (a position is known to win from its `unrealizedPnl`, or its mark against its entry).
pub(super) fn keeps_upside(text: Option<&str>) -> bool {
    let owned = words_of(text);
    let words: Vec<&str> = owned.iter().map(String::as_str).collect();
    words.contains(&"upside") || words.windows(2).any(|w| w == ["winners", "run"])
}

/// Limits read from the request's constraint strings, e.g. roma-01's
/// `"Max positions 3 / Max leverage 10x"` and `"Stop loss 2.0% / Take profit 5.0%"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub max_leverage: Option<f64>,
    pub max_positions: Option<usize>,
    pub stop_loss_pct: Option<f64>,
    pub take_profit_pct: Option<f64>,
    pub reduce_only: bool,
}

impl Limits {
    /// Every constraint read: the tightest leverage and position count win, the last
    /// stop-loss and take-profit win; any of the reduce-only phrases sets `reduce_only`.
    pub fn from_constraints(constraints: &[String]) -> Limits {
        let mut l = Limits::default();
        for c in constraints {
            let t = c.to_lowercase();
            for p in [
                "max leverage",
                "maximum leverage",
                "leverage cap",
                "leverage limit",
            ] {
                if let Some(n) = number_after(&t, p).filter(|n| *n > 0.0) {
                    l.max_leverage = Some(l.max_leverage.map_or(n, |m: f64| m.min(n)));
                }
            }
            for p in ["max positions", "maximum positions", "max open positions"] {
                if let Some(n) = number_after(&t, p).filter(|n| *n >= 0.0 && n.fract() == 0.0) {
                    let n = n as usize;
                    l.max_positions = Some(l.max_positions.map_or(n, |m| m.min(n)));
                }
            }
            for p in ["stop loss", "stop-loss", "stoploss"] {
                if let Some(n) = number_after(&t, p).filter(|n| *n > 0.0 && *n < 50.0) {
                    l.stop_loss_pct = Some(n);
                }
            }
            for p in ["take profit", "take-profit", "takeprofit"] {
                if let Some(n) = number_after(&t, p).filter(|n| *n > 0.0 && *n <= 1000.0) {
                    l.take_profit_pct = Some(n);
                }
            }
            if ["reduce only", "reduce-only", "no new positions", "no opens"]
                .iter()
                .any(|p| t.contains(p))
            {
                l.reduce_only = true;
            }
        }
        l
    }
}

/// The first number after `phrase` in `text`, skipping separators like `: = <=`.
fn number_after(text: &str, phrase: &str) -> Option<f64> {
    let at = text.find(phrase)? + phrase.len();
    let rest = text[at..].trim_start_matches([' ', ':', '=', '<', '≤', 'o', 'f']);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].trim_end_matches('.').parse().ok()
}

/// The engine's defaults for one risk tolerance.
struct Defaults {
    /// Leverage cap when the buyer sends none.
    leverage: f64,
    /// Share of the cap the engine aims for when it has to cut.
    utilisation: f64,
    /// Stop-loss distance, percent, when no constraint sets one.
    stop_pct: f64,
}

/// The defaults table (the engine's header gives it as rules 2 and 5).
fn defaults(t: RiskTolerance) -> Defaults {
    match t {
        RiskTolerance::Low => Defaults {
            leverage: 2.0,
            utilisation: 0.8,
            stop_pct: 2.0,
        },
        RiskTolerance::Medium => Defaults {
            leverage: 3.0,
            utilisation: 0.9,
            stop_pct: 3.0,
        },
        RiskTolerance::High => Defaults {
            leverage: 5.0,
            utilisation: 1.0,
            stop_pct: 5.0,
        },
    }
}

/// Leverage cap when the buyer sends none.
pub fn default_leverage(t: RiskTolerance) -> f64 {
    defaults(t).leverage
}

/// Share of the cap the engine aims for when it has to cut.
pub(super) fn utilisation(t: RiskTolerance) -> f64 {
    defaults(t).utilisation
}

/// Stop-loss distance, percent, when no constraint sets one.
pub(super) fn default_stop_pct(t: RiskTolerance) -> f64 {
    defaults(t).stop_pct
}
