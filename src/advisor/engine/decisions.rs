//! The engine's actions in roma-01's decision format, for roma-01's executor: the same trades,
//! named and sized the way that executor reads them, and clamped to the request's own limits
//! (the executor clamps neither leverage nor the position count).
//!
//! | action            | decision                                                              |
//! |-------------------|-----------------------------------------------------------------------|
//! | `open_long/short` | the same, `leverage` (integer, 1..=the cap), `position_size_usd` = notional ÷ leverage (margin, at most the balance sent), `stop_loss`, `take_profit` |
//! | `close_long/short`| the same, no quantity (the whole position)                            |
//! | `reduce`          | `close_long`/`close_short` of the held side with `close_quantity`     |
//! | `hold`            | `hold` for a position, `wait` for a symbol without one                |
//!
//! Symbols become roma-01's internal `BTCUSDT` form. A trade below roma-01's minimum order
//! quantity ([`MIN_QUANTITY`]) becomes a `hold` that says so. Opens only ever add to a held
//! position (the engine never opens a new symbol), so the position count never grows.

use crate::advisor::contract::{Position, Side, StrategyRequest};
use crate::advisor::response::fmt::qty;
use crate::advisor::response::{Action, ActionKind, Decision, DecisionAction, Strategy};

use super::book::Book;
use super::round::coin_of;

/// roma-01's executor trades no less than this many coins.
pub const MIN_QUANTITY: f64 = 0.001;

/// The decisions for `strategy`'s actions on `req`, one per action, in order.
pub fn decisions(strategy: &Strategy, req: &StrategyRequest) -> Vec<Decision> {
    let book = Book::measure(req, &mut Vec::new());
    let limits = Clamp {
        max_leverage: (book.cap.floor() as u32).max(1),
        margin: req.account.balance.as_ref().map(|b| b.amount),
        confidence: strategy.confidence.clamp(0.0, 1.0),
    };
    let positions = &req.account.positions;
    strategy
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let held = positions
                .get(i)
                .filter(|p| p.symbol == a.symbol)
                .or_else(|| positions.iter().find(|p| p.symbol == a.symbol));
            decision(a, held, &limits)
        })
        .collect()
}

/// The request's limits as the decisions apply them.
struct Clamp {
    /// The leverage cap rounded down, at least 1 (the executor needs an integer ≥ 1).
    max_leverage: u32,
    /// The most margin one open may use: the balance sent (roma-01 sends its available
    /// balance), when sent.
    margin: Option<f64>,
    confidence: f64,
}

/// `BTCUSDT` for `BTC-PERP`, `BTC/USDC`, `btcusdt` or `BTC`.
pub fn roma_symbol(symbol: &str) -> String {
    let upper = symbol.to_ascii_uppercase();
    if upper.len() > 4 && upper.ends_with("USDT") && !upper.contains(['-', '/']) {
        upper
    } else {
        format!("{}USDT", coin_of(symbol))
    }
}

fn decision(a: &Action, held: Option<&Position>, c: &Clamp) -> Decision {
    let base = |action: DecisionAction, reasoning: String| Decision {
        action,
        symbol: roma_symbol(&a.symbol),
        leverage: None,
        position_size_usd: None,
        stop_loss: None,
        take_profit: None,
        close_quantity: None,
        confidence: c.confidence,
        reasoning,
    };
    let hold = |why: &str| {
        base(
            if held.is_some() {
                DecisionAction::Hold
            } else {
                DecisionAction::Wait
            },
            why.to_string(),
        )
    };
    let reason = a.reason.clone();
    match (a.action, held) {
        (ActionKind::Hold, _) => hold(&reason),
        (ActionKind::CloseLong, _) => base(DecisionAction::CloseLong, reason),
        (ActionKind::CloseShort, _) => base(DecisionAction::CloseShort, reason),
        (ActionKind::Reduce, None) | (ActionKind::OpenLong | ActionKind::OpenShort, None) => hold(
            &format!("{reason} (no position to size it by: nothing done)"),
        ),
        (ActionKind::Reduce, Some(p)) => {
            let action = match p.side {
                Side::Long => DecisionAction::CloseLong,
                Side::Short => DecisionAction::CloseShort,
            };
            if a.size < MIN_QUANTITY {
                return hold(&format!(
                    "{reason}; a cut of {} is below the minimum order of {MIN_QUANTITY}: held",
                    qty(a.size)
                ));
            }
            let whole = a.size >= p.abs_size();
            Decision {
                close_quantity: (!whole).then_some(a.size),
                ..base(
                    action,
                    format!(
                        "reduce by {} of {}: {reason}",
                        qty(a.size),
                        qty(p.abs_size())
                    ),
                )
            }
        }
        (ActionKind::OpenLong | ActionKind::OpenShort, Some(p)) => open(a, p, c, reason, base),
    }
}

/// An addition: integer leverage within the cap, margin = notional ÷ leverage (at most the
/// balance), both stops; a hold when it would be under the minimum quantity or lacks stops.
fn open(
    a: &Action,
    p: &Position,
    c: &Clamp,
    reason: String,
    base: impl Fn(DecisionAction, String) -> Decision,
) -> Decision {
    let action = if a.action == ActionKind::OpenLong {
        DecisionAction::OpenLong
    } else {
        DecisionAction::OpenShort
    };
    let leverage = a
        .leverage
        .unwrap_or(c.max_leverage)
        .clamp(1, c.max_leverage);
    let mut margin = a.notional_usd / f64::from(leverage);
    if let Some(m) = c.margin {
        margin = margin.min(m);
    }
    let margin = (margin * 100.0).floor() / 100.0;
    let price = p.price();
    let quantity = if price > 0.0 {
        margin * f64::from(leverage) / price
    } else {
        0.0
    };
    match (a.stop_loss, a.take_profit) {
        (Some(sl), Some(tp)) if quantity >= MIN_QUANTITY => Decision {
            leverage: Some(leverage),
            position_size_usd: Some(margin),
            stop_loss: Some(sl),
            take_profit: Some(tp),
            ..base(action, reason)
        },
        (Some(_), Some(_)) => base(
            DecisionAction::Hold,
            format!(
                "{reason}; an addition of {} is below the minimum order of {MIN_QUANTITY}: held",
                qty(quantity)
            ),
        ),
        _ => base(
            DecisionAction::Hold,
            format!("{reason}; no stop-loss and take-profit for it: held"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::contract::{SEED_EXAMPLE, from_value, parse};
    use crate::advisor::engine::advise;
    use serde_json::json;

    #[test]
    fn symbols_take_roma01s_form() {
        assert_eq!(roma_symbol("ETH-PERP"), "ETHUSDT");
        assert_eq!(roma_symbol("BTCUSDT"), "BTCUSDT");
        assert_eq!(roma_symbol("btcusdt"), "BTCUSDT");
        assert_eq!(roma_symbol("BTC/USDC"), "BTCUSDT");
        assert_eq!(roma_symbol("SOL"), "SOLUSDT");
    }

    #[test]
    fn the_seeds_reductions_are_partial_closes_with_their_quantity() {
        let req = parse(SEED_EXAMPLE.as_bytes()).unwrap();
        let s = advise(&req);
        let d = decisions(&s, &req);
        assert_eq!(d.len(), 3);
        assert_eq!(
            (d[0].action, d[0].symbol.as_str(), d[0].close_quantity),
            (DecisionAction::CloseLong, "ETHUSDT", Some(0.128742))
        );
        assert_eq!(
            (d[1].action, d[1].symbol.as_str(), d[1].close_quantity),
            (DecisionAction::CloseShort, "BTCUSDT", Some(0.445565))
        );
        // BNB: listed, not held, no price: nothing to enter.
        assert_eq!(
            (d[2].action, d[2].symbol.as_str()),
            (DecisionAction::Wait, "BNBUSDT")
        );
        assert!(d.iter().all(|x| x.confidence == 0.6));
        let v = serde_json::to_value(&d[0]).unwrap();
        assert_eq!(v["action"], "close_long");
        assert!(v.get("leverage").is_none() && v.get("stop_loss").is_none());
    }

    #[test]
    fn opens_carry_integer_leverage_within_the_cap_and_margin() {
        // A short hedge asked for: the engine adds to the short; the cap is 2.5x.
        let req = from_value(&json!({"account": {"platform": "aster", "equity": 10000,
            "balance": {"asset": "USDT", "amount": 10000},
            "positions": [
                {"symbol": "BTCUSDT", "size": 0.1, "side": "long", "markPrice": 60000},
                {"symbol": "ETHUSDT", "size": 0.5, "side": "short", "markPrice": 3000}]},
            "preferences": {"leverage": 2.5, "riskTolerance": "high"},
            "objectives": "stay delta neutral", "symbols": ["BTCUSDT", "ETHUSDT"]}))
        .unwrap();
        let s = advise(&req);
        let a = &s.actions[1];
        assert_eq!(a.action, ActionKind::OpenShort, "{s:?}");
        let d = decisions(&s, &req);
        let o = &d[1];
        assert_eq!(o.action, DecisionAction::OpenShort);
        assert_eq!(o.leverage, Some(2));
        let margin = o.position_size_usd.unwrap();
        assert!(
            (margin * 2.0 - a.notional_usd).abs() < 0.02,
            "{margin} {a:?}"
        );
        assert_eq!((o.stop_loss, o.take_profit), (a.stop_loss, a.take_profit));
        assert!(o.stop_loss.unwrap() > 3000.0, "a short's stop is above");
    }

    #[test]
    fn a_cut_below_the_minimum_quantity_is_held() {
        let a = Action {
            reason: "r".into(),
            ..Action::trade("BTC-PERP".into(), ActionKind::Reduce, 0.0004, 24.0)
        };
        let p = Position {
            symbol: "BTC-PERP".into(),
            side: Side::Long,
            size: 1.0,
            entry_price: Some(60000.0),
            mark_price: None,
            leverage: None,
            unrealized_pnl: None,
            liquidation_price: None,
        };
        let c = Clamp {
            max_leverage: 3,
            margin: None,
            confidence: 0.5,
        };
        let d = decision(&a, Some(&p), &c);
        assert_eq!(d.action, DecisionAction::Hold);
        assert!(d.reasoning.contains("minimum order"), "{}", d.reasoning);
    }
}
