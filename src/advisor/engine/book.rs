//! Step 1 of [`super::advise`], rules 1–2: measure the book. Prices, equity and its source, the
//! leverage cap (preference lowered by constraints), the target gross, the stop distances and
//! the exposure before any trade. Every later step reads the [`Book`].

use crate::advisor::contract::{EquitySource, Position, RiskTolerance, StrategyRequest};
use crate::advisor::response::Exposure;
use crate::advisor::response::fmt::{lev, px, usd};

use super::limits::{Limits, default_leverage, default_stop_pct, utilisation};

/// The account as measured, and the bounds the advice must respect.
pub(super) struct Book<'a> {
    pub req: &'a StrategyRequest,
    pub positions: &'a [Position],
    /// The buyer's risk tolerance, medium when not sent.
    pub tol: RiskTolerance,
    pub limits: Limits,
    /// Some position had no mark price (valued at entry, or not at all).
    pub missing_marks: bool,
    /// What leverage is measured against (never negative).
    pub equity: f64,
    pub equity_source: EquitySource,
    /// The leverage cap: the preference (or its default), lowered by a constraint.
    pub cap: f64,
    /// `cap × equity`.
    pub cap_usd: f64,
    /// Gross the engine aims for when it cuts: `utilisation × cap × equity`.
    pub target: f64,
    pub stop_pct: f64,
    pub tp_pct: f64,
    pub before: Exposure,
    /// Gross exposure is above the cap.
    pub over: bool,
}

impl<'a> Book<'a> {
    /// Measures `req`, writing a risk note for each assumption it makes.
    pub(crate) fn measure(req: &'a StrategyRequest, notes: &mut Vec<String>) -> Book<'a> {
        let tol = req
            .preferences
            .risk_tolerance
            .unwrap_or(RiskTolerance::Medium);
        let limits = Limits::from_constraints(&req.constraints);
        let positions = &req.account.positions[..];
        let missing_marks = note_missing_marks(positions, notes);
        let (equity, equity_source) = equity(req, notes);
        let preference = preference(req, tol, notes);
        let cap = cap(&limits, preference, notes);
        let cap_usd = cap * equity;
        let target = utilisation(tol) * cap_usd;
        let stop_pct = limits.stop_loss_pct.unwrap_or(default_stop_pct(tol));
        let tp_pct = limits.take_profit_pct.unwrap_or(2.0 * stop_pct);
        let sizes: Vec<f64> = positions.iter().map(|p| p.size).collect();
        let before = exposure(positions, &sizes, equity);
        let over = before.gross_usd > cap_usd * (1.0 + 1e-12);
        if equity <= 0.0 && !positions.is_empty() {
            notes.push("No equity to carry positions: everything is closed.".into());
        }
        Book {
            req,
            positions,
            tol,
            limits,
            missing_marks,
            equity,
            equity_source,
            cap,
            cap_usd,
            target,
            stop_pct,
            tp_pct,
            before,
            over,
        }
    }

    /// Exposure of `sizes` (signed, one per position) at the positions' prices.
    pub(crate) fn exposure(&self, sizes: &[f64]) -> Exposure {
        exposure(self.positions, sizes, self.equity)
    }

    /// Exchange leverage to set before an open: the cap, rounded down (none below 1x).
    pub(crate) fn open_leverage(&self) -> Option<u32> {
        (self.cap >= 1.0).then(|| self.cap.floor() as u32)
    }

    /// Equity came from `balance.amount` for an account with positions.
    pub(crate) fn equity_assumed(&self) -> bool {
        self.equity_source == EquitySource::Balance && !self.positions.is_empty()
    }
}

/// Rule 1: positions without a mark are valued at entry, and a note says so; positions with
/// no price at all are noted too (valued at 0, left as they are).
fn note_missing_marks(positions: &[Position], notes: &mut Vec<String>) -> bool {
    let unpriced: Vec<&str> = positions
        .iter()
        .filter(|p| !p.priced())
        .map(|p| p.symbol.as_str())
        .collect();
    if !unpriced.is_empty() {
        notes.push(format!(
            "No price for {} (entry and mark missing or 0): left out of the exposure and kept as is; send markPx to have it sized.",
            unpriced.join(", ")
        ));
    }
    let missing: Vec<&Position> = positions
        .iter()
        .filter(|p| p.mark_price.is_none() && p.priced())
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "No mark price for {}: valued at entry price ({}); send markPx for sizes and stops at today's prices.",
            missing.iter().map(|p| p.symbol.as_str()).collect::<Vec<_>>().join(", "),
            missing.iter().map(|p| px(p.price())).collect::<Vec<_>>().join(", "),
        ));
    }
    !missing.is_empty() || !unpriced.is_empty()
}

/// Rule 2: `account.equity`, else `balance.amount` (noted), never below 0.
fn equity(req: &StrategyRequest, notes: &mut Vec<String>) -> (f64, EquitySource) {
    let (raw, source) = req
        .account
        .equity_basis()
        .unwrap_or((0.0, EquitySource::Balance));
    let equity = raw.max(0.0);
    if source == EquitySource::Balance && !req.account.positions.is_empty() {
        notes.push(format!(
            "Leverage is measured against balance.amount ({}) because account.equity was not sent.",
            usd(equity)
        ));
    }
    (equity, source)
}

/// The buyer's leverage preference, else the default for its risk tolerance (noted).
fn preference(req: &StrategyRequest, tol: RiskTolerance, notes: &mut Vec<String>) -> f64 {
    match req.preferences.leverage {
        Some(l) => l,
        None => {
            let d = default_leverage(tol);
            notes.push(format!(
                "No leverage preference was sent: {} assumed for {} risk tolerance.",
                lev(d),
                tol.as_str()
            ));
            d
        }
    }
}

/// The preference, lowered by a `max leverage` constraint (noted).
fn cap(limits: &Limits, preference: f64, notes: &mut Vec<String>) -> f64 {
    match limits.max_leverage {
        Some(c) if c < preference => {
            notes.push(format!(
                "A constraint caps leverage at {} (preference {}).",
                lev(c),
                lev(preference)
            ));
            c
        }
        _ => preference,
    }
}

/// Exposure of `sizes` (signed, per position) at the positions' prices.
fn exposure(positions: &[Position], sizes: &[f64], equity: f64) -> Exposure {
    let gross: f64 = positions
        .iter()
        .zip(sizes)
        .map(|(p, s)| s.abs() * p.price())
        .sum();
    let net: f64 = positions
        .iter()
        .zip(sizes)
        .map(|(p, s)| s * p.price())
        .sum();
    Exposure {
        gross_usd: gross,
        net_usd: net,
        leverage: if equity > 0.0 {
            gross / equity
        } else if gross > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
    }
}
