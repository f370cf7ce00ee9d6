//! The rule engine (`rules-v1`): every number in the advice, computed, deterministic, pure.
//!
//! From a [`StrategyRequest`] it measures the account (gross and net exposure, effective
//! leverage against the preference, delta per symbol), decides sizes, and writes a complete
//! answer — summary, steps, risk notes, executable actions — without any model.
//!
//! The rules, in order (a trader can redo each number by hand):
//!
//! 1. **Price** of a position: its mark, else its entry (and a risk note says so).
//! 2. **Equity**: `account.equity`, else `balance.amount`. **Cap** = `preferences.leverage`
//!    (default by risk tolerance: low 2x, medium 3x, high 5x), lowered by a
//!    `max leverage N` constraint. **Target gross** = cap × equity × utilisation (low 0.8,
//!    medium 0.9, high 1.0), so de-risking leaves headroom below the cap.
//! 3. **Goal** from `objectives`: `flat` ("flat", "flatten", "close all", "exit all") closes
//!    everything; `delta_neutral` ("neutral", "hedge") sizes the long and the short side to
//!    the same notional T = min(larger side — or the smaller one at low risk tolerance or with a
//!    `reduce only` constraint —, target ÷ 2), scaling each side's positions pro rata;
//!    `lock_in_gains` ("lock in", "take profit", "secure/bank/realise gains") takes a share
//!    (low 50%, medium 33%, high 25%) off each winning position (unrealised PnL > 0, sent or
//!    from mark − entry), and scales to the target when above the cap; `reduce_risk` ("reduce /
//!    lower / cut risk", "de-risk", "reduce exposure") cuts every position by that share (and
//!    at least to the target); otherwise `risk_budget` scales every position by target ÷ gross
//!    when gross is above the cap. "Preserve upside" / "let winners run" widens a winner's
//!    take-profit 1.5×.
//! 4. **Sizes**: reductions round *up* to 6 decimals (never less de-risking than computed),
//!    additions round *down*; a reduction leaving less than $10 closes the position; below the
//!    cap, changes under $10 are not worth a trade. Additions only go to existing positions in
//!    the buyer's `symbols` (no price is known for anything else) and never when a constraint
//!    says `reduce only`. After the actions, gross ≤ cap × equity, always.
//! 5. **Stops** for what stays open, from the reference price (mark, else entry): stop-loss at
//!    low 2% / medium 3% / high 5% (or a `stop loss N%` constraint), take-profit at twice that
//!    (or `take profit N%`), rounded to 5 significant figures (Hyperliquid's price rule). A
//!    winner's stop moves up to its entry (break-even) when locking in gains or keeping the
//!    upside and the stop would give back more than the gain. The stop is checked against the
//!    liquidation price *after* the trade (same margin: the distance to liquidation scales by
//!    size before ÷ size after).
//!
//! With market data ([`advise_with`] and a [`Snapshot`] from [`crate::advisor::market`]), rules
//! 6–9 add the venue's marks for positions sent without one, stops at a multiple of the ATR,
//! funding over the time horizon, and sized opens when the objectives ask to deploy capital
//! (the `venue` step; its header has the rules). Without it, [`advise`] is exactly rules 1–5.
//!
//! [`advise`] runs the rules as steps, one file each, passing one `Draft` (notes, steps,
//! actions, sizes after) along: `book` measures the account (rules 1–2), `targets` sets each
//! position's target notional against the preference (rule 3), `actions` sizes one trade per
//! position (rule 4), `stops` adds leverage on opens and the brackets (rule 5), `wording`
//! writes the reasons, steps, notes and summary, and `analysis` assembles the answer with its
//! numbers. `limits` reads the request's goal, constraints and defaults; `round` holds the
//! number rules. `decisions` turns the finished actions into roma-01's decision format.
//!
//! Called by the advisor server ([`crate::advisor::server`]), by the model step's tests, and by
//! tests/strategy.rs and benches/strategy.rs through the public API.

mod actions;
mod analysis;
mod book;
mod decisions;
mod limits;
mod round;
mod stops;
mod targets;
mod venue;
mod wording;

use super::contract::StrategyRequest;
use super::market::Snapshot;
use super::response::{Action, Strategy};

pub use decisions::{MIN_QUANTITY, decisions, roma_symbol};
pub use limits::{Limits, default_leverage};

/// The engine's name in `metadata.model`.
pub(crate) const ENGINE_ID: &str = "rules-v1";

/// Below the cap, a change smaller than this (USD) is not worth a trade; a remainder smaller
/// than this is closed rather than kept.
const MIN_TRADE_USD: f64 = 10.0;

/// The advice as the steps write it, carried from one step to the next.
#[derive(Default)]
struct Draft {
    /// Risk notes, in the order the steps write them.
    notes: Vec<String>,
    /// The steps for the trader, one per position, then the re-check.
    steps: Vec<String>,
    /// One action per position, in order; then a `hold` per idle symbol.
    actions: Vec<Action>,
    /// Each position's signed size once its action is done.
    after_sizes: Vec<f64>,
    /// New positions opened (rule 9), after the positions' actions.
    opened: Vec<venue::Opened>,
}

/// The coin a symbol trades (`BTC-PERP`, `BTCUSDT`, `BTC/USDC` → `BTC`).
pub fn coin(symbol: &str) -> String {
    round::coin_of(symbol)
}

/// The whole advice for a request.
pub fn advise(req: &StrategyRequest) -> Strategy {
    run(req, None)
}

/// The whole advice for a request with the venue's market data (rules 6–9), or without when
/// `market` is `None` (then exactly [`advise`]).
pub fn advise_with(req: &StrategyRequest, market: Option<&Snapshot>) -> Strategy {
    match market {
        None => run(req, None),
        Some(snap) => {
            let (priced, marked) = venue::fill_marks(req, snap);
            run(&priced, Some(venue::Venue { snap, marked }))
        }
    }
}

fn run(req: &StrategyRequest, venue: Option<venue::Venue<'_>>) -> Strategy {
    let mut draft = Draft::default();
    let book = book::Book::measure_with(req, venue, &mut draft.notes);
    let mut targets = targets::Targets::for_book(&book, &mut draft.notes);
    draft.trade(&book, &targets);
    let stop_notes = draft.bracket(&book, &targets);
    draft.explain(&book, &targets);
    draft.notes.extend(stop_notes);
    let deploy = targets.goal != limits::Goal::Flat && limits::deploys(req.objectives.as_deref());
    draft.open_new(&book, deploy);
    if !draft.opened.is_empty() {
        targets.deploy = true;
    }
    draft.idle_symbols(&book);
    draft.market_notes(&book);
    draft.closing_notes(&book, &targets);
    draft.finish(&book, &targets)
}

#[cfg(test)]
mod tests {
    use super::limits::Goal;
    use super::round::{ceil6, coin_of, floor6, sig5};
    use super::*;
    use crate::advisor::contract::{SEED_EXAMPLE, parse};
    use crate::advisor::response::ActionKind;

    /// `a` reduces `symbol` by `size` and brackets the rest with (stop-loss, take-profit).
    fn assert_reduced(a: &Action, symbol: &str, size: f64, (sl, tp): (f64, f64)) {
        assert_eq!(
            (a.symbol.as_str(), a.action, a.size),
            (symbol, ActionKind::Reduce, size)
        );
        assert_eq!((a.stop_loss, a.take_profit), (Some(sl), Some(tp)));
    }

    #[test]
    fn the_seed_example_is_cut_to_the_cap_and_rebalanced() {
        let s = advise(&parse(SEED_EXAMPLE.as_bytes()).unwrap());
        let a = s.analysis.as_ref().unwrap();
        assert_eq!(a.before.gross_usd, 34_780.6);
        assert_eq!(a.before.net_usd, -27_219.4);
        assert_eq!(a.before.leverage, 13.9122);
        assert_eq!(a.leverage_cap, 3.0);
        assert_eq!(a.target_gross_usd, 6_750.0);
        assert_eq!(a.goal, "delta_neutral");
        // Each side to 3,375 USD: ETH 405.60 / 3150.5 = 0.1287415 → 0.128742 (rounded up);
        // BTC 27,625 / 62,000 = 0.4455645 → 0.445565.
        assert_reduced(&s.actions[0], "ETH-PERP", 0.128742, (3056.0, 3339.5));
        assert_reduced(&s.actions[1], "BTC-PERP", 0.445565, (63_860.0, 58_280.0));
        assert_eq!(s.actions[2].symbol, "BNB-PERP");
        assert_eq!(s.actions[2].action, ActionKind::Hold);
        assert!(
            a.after.leverage <= 3.0 && a.after.net_usd.abs() < 1.0,
            "{a:?}"
        );
        assert_eq!(s.confidence, 0.6);
        assert!(s.summary.contains("13.91x"), "{}", s.summary);
        assert!(s.risk_notes.iter().any(|n| n.contains("No mark price")));
    }

    #[test]
    fn objectives_map_to_goals() {
        let g = |t| Goal::from_objectives(Some(t));
        assert_eq!(g("Go flat before the FOMC"), Goal::Flat);
        assert_eq!(g("close all positions"), Goal::Flat);
        assert_eq!(g("Optimize delta-neutral coverage"), Goal::DeltaNeutral);
        assert_eq!(g("hedge my BTC"), Goal::DeltaNeutral);
        assert_eq!(g("grow the account"), Goal::RiskBudget);
        assert_eq!(g("Lock in gains on BTC"), Goal::LockGains);
        assert_eq!(g("take profits before the weekend"), Goal::LockGains);
        assert_eq!(g("bank profits"), Goal::LockGains);
        assert_eq!(g("De-risk into the weekend"), Goal::ReduceRisk);
        assert_eq!(g("reduce exposure"), Goal::ReduceRisk);
        assert_eq!(g("lower risk"), Goal::ReduceRisk);
        assert!(super::limits::keeps_upside(Some(
            "neutral while preserving upside"
        )));
        assert!(super::limits::keeps_upside(Some("let winners run")));
        assert!(!super::limits::keeps_upside(Some("grow the account")));
        assert_eq!(Goal::from_objectives(None), Goal::RiskBudget);
    }

    #[test]
    fn roma01_constraints_are_read() {
        let l = Limits::from_constraints(&[
            "Max positions 3 / Max leverage 10x".into(),
            "Stop loss 2.0% / Take profit 5.0%".into(),
            "reduce-only today".into(),
        ]);
        assert_eq!(
            l,
            Limits {
                max_leverage: Some(10.0),
                max_positions: Some(3),
                stop_loss_pct: Some(2.0),
                take_profit_pct: Some(5.0),
                reduce_only: true
            }
        );
    }

    #[test]
    fn rounding_helpers() {
        assert_eq!(ceil6(0.445_564_516), 0.445565);
        assert_eq!(ceil6(0.5), 0.5);
        assert_eq!(floor6(0.123_456_9), 0.123456);
        assert_eq!(sig5(3055.985), 3056.0);
        assert_eq!(sig5(63_860.0), 63_860.0);
        assert_eq!(sig5(0.000_123_456_7), 0.000_123_46);
        assert_eq!(coin_of("ETH-PERP"), "ETH");
        assert_eq!(coin_of("ethusdt"), "ETH");
        assert_eq!(coin_of("BTC/USDC"), "BTC");
        assert_eq!(coin_of("USDT"), "USDT");
    }
}
