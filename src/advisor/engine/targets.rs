//! Step 2 of [`super::advise`], rule 3: the target notional of every position against the
//! preference — flat closes everything, delta-neutral sizes both sides to the same notional,
//! the risk budget scales everything down to the target when gross is above the cap.

use crate::advisor::contract::{Position, RiskTolerance, Side};

use super::book::Book;
use super::limits::Goal;

/// What each position should be worth after the advice.
pub(super) struct Targets {
    /// The goal followed (delta-neutral falls back to the risk budget with one side only).
    pub goal: Goal,
    /// Notional now, per position.
    pub current: Vec<f64>,
    /// Notional wanted, per position.
    pub wanted: Vec<f64>,
    /// Delta-neutral: the notional each side is sized to.
    pub side_target: Option<f64>,
    /// New positions were opened to deploy capital (rule 9).
    pub deploy: bool,
    /// The objectives keep the upside: wider take-profits, break-even stops on winners.
    pub upside: bool,
}

impl Targets {
    /// The goal read from `objectives`, and the notional it asks of each position.
    pub(crate) fn for_book(book: &Book, notes: &mut Vec<String>) -> Targets {
        let positions = book.positions;
        let current: Vec<f64> = positions.iter().map(Position::notional).collect();
        let long = side_total(positions, Side::Long);
        let short = side_total(positions, Side::Short);
        let mut goal = Goal::from_objectives(book.req.objectives.as_deref());
        if goal == Goal::DeltaNeutral && (long == 0.0 || short == 0.0) && !positions.is_empty() {
            notes.push(format!(
                "Delta-neutral needs positions on both sides; with only {} and no price for another market, the engine can only keep leverage within the cap.",
                if long > 0.0 { "longs" } else { "shorts" }
            ));
            goal = Goal::RiskBudget;
        }
        let mut wanted = current.clone();
        let mut side_target = None;
        match goal {
            Goal::Flat => wanted.iter_mut().for_each(|w| *w = 0.0),
            Goal::DeltaNeutral => {
                let t = neutral_side_target(book, long, short);
                side_target = Some(t);
                for (w, p) in wanted.iter_mut().zip(positions) {
                    let side_total = if p.side == Side::Long { long } else { short };
                    *w = p.notional() * t / side_total;
                }
            }
            Goal::LockGains => {
                let keep = 1.0 - Goal::share(book.tol);
                for (w, p) in wanted.iter_mut().zip(positions) {
                    if gain(p) > 0.0 {
                        *w *= keep;
                    }
                }
                // And never above the cap.
                let gross: f64 = wanted.iter().sum();
                if book.over && gross > book.target {
                    let k = book.target / gross;
                    wanted.iter_mut().for_each(|w| *w *= k);
                }
            }
            Goal::ReduceRisk if book.before.gross_usd > 0.0 => {
                let gross = book.before.gross_usd;
                let t = (gross * (1.0 - Goal::share(book.tol))).min(book.target);
                wanted.iter_mut().for_each(|w| *w *= t / gross);
            }
            Goal::RiskBudget if book.over && book.before.gross_usd > 0.0 => {
                let k = book.target / book.before.gross_usd;
                wanted.iter_mut().for_each(|w| *w *= k);
            }
            Goal::RiskBudget | Goal::ReduceRisk => {}
        }
        Targets {
            goal,
            current,
            wanted,
            side_target,
            deploy: false,
            upside: super::limits::keeps_upside(book.req.objectives.as_deref()),
        }
    }
}

/// The position's unrealised profit: as sent, else from its mark and entry; 0 when neither
/// is known.
pub(super) fn gain(p: &Position) -> f64 {
    let from_prices = match (p.mark_price, p.entry_price) {
        (Some(m), Some(e)) => (m - e) * p.size,
        _ => 0.0,
    };
    p.unrealized_pnl.unwrap_or(from_prices)
}

/// Notional of one side of the book.
fn side_total(positions: &[Position], side: Side) -> f64 {
    positions
        .iter()
        .filter(|p| p.side == side)
        .map(Position::notional)
        .sum()
}

/// T = min(the larger side — the smaller one at low risk tolerance or when reduce only —,
/// target ÷ 2).
fn neutral_side_target(book: &Book, long: f64, short: f64) -> f64 {
    let reduce_only = book.limits.reduce_only || book.tol == RiskTolerance::Low;
    if reduce_only {
        long.min(short)
    } else {
        long.max(short)
    }
    .min(book.target / 2.0)
}
