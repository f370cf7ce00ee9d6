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
//!    `reduce only` constraint —, target ÷ 2), scaling each side's positions pro rata; otherwise
//!    `risk_budget` scales every position by target ÷ gross when gross is above the cap.
//! 4. **Sizes**: reductions round *up* to 6 decimals (never less de-risking than computed),
//!    additions round *down*; a reduction leaving less than $10 closes the position; below the
//!    cap, changes under $10 are not worth a trade. Additions only go to existing positions in
//!    the buyer's `symbols` (no price is known for anything else) and never when a constraint
//!    says `reduce only`. After the actions, gross ≤ cap × equity, always.
//! 5. **Stops** for what stays open, from the reference price (mark, else entry): stop-loss at
//!    low 2% / medium 3% / high 5% (or a `stop loss N%` constraint), take-profit at twice that
//!    (or `take profit N%`), rounded to 5 significant figures (Hyperliquid's price rule).

use std::collections::BTreeMap;

use super::contract::{EquitySource, Position, RiskTolerance, Side, StrategyRequest};
use super::response::fmt::{dec, lev, px, qty, usd};
use super::response::{Action, ActionKind, Analysis, Exposure, Strategy, SymbolDelta};

/// The engine's name in `metadata.model`.
pub const ENGINE_ID: &str = "rules-v1";

/// Below the cap, a change smaller than this (USD) is not worth a trade; a remainder smaller
/// than this is closed rather than kept.
pub const MIN_TRADE_USD: f64 = 10.0;

/// What the buyer wants, read from `objectives`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Flat,
    DeltaNeutral,
    RiskBudget,
}

impl Goal {
    /// Keyword rules, documented in the module header. `flat` wins over `neutral`.
    pub fn from_objectives(text: Option<&str>) -> Goal {
        let Some(t) = text else {
            return Goal::RiskBudget;
        };
        let lower = t.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let phrase = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
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
        } else {
            Goal::RiskBudget
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Flat => "flat",
            Goal::DeltaNeutral => "delta_neutral",
            Goal::RiskBudget => "risk_budget",
        }
    }
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

/// Leverage cap when the buyer sends none.
pub fn default_leverage(t: RiskTolerance) -> f64 {
    match t {
        RiskTolerance::Low => 2.0,
        RiskTolerance::Medium => 3.0,
        RiskTolerance::High => 5.0,
    }
}

/// Share of the cap the engine aims for when it has to cut.
pub fn utilisation(t: RiskTolerance) -> f64 {
    match t {
        RiskTolerance::Low => 0.8,
        RiskTolerance::Medium => 0.9,
        RiskTolerance::High => 1.0,
    }
}

/// Stop-loss distance, percent, when no constraint sets one.
pub fn default_stop_pct(t: RiskTolerance) -> f64 {
    match t {
        RiskTolerance::Low => 2.0,
        RiskTolerance::Medium => 3.0,
        RiskTolerance::High => 5.0,
    }
}

/// Round up to 6 decimals (a hair of float noise is not rounded up).
pub fn ceil6(x: f64) -> f64 {
    (x * 1e6 - 1e-6).ceil() / 1e6
}

/// Round down to 6 decimals (a hair of float noise is not rounded down).
pub fn floor6(x: f64) -> f64 {
    (x * 1e6 + 1e-6).floor() / 1e6
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Five significant figures.
pub fn sig5(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let d = 4 - x.log10().floor() as i32;
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// The coin a symbol trades, for matching `symbols` against positions: `ETH-PERP`, `ETHUSDT`,
/// `ETH/USDC` and `ETH` are all `ETH`.
pub fn coin_of(symbol: &str) -> String {
    let s = symbol.to_ascii_uppercase();
    let mut s = s.as_str();
    for suffix in [
        "-PERP", "PERP", "-USDT", "-USDC", "-USD", "/USDT", "/USDC", "/USD",
    ] {
        if let Some(x) = s.strip_suffix(suffix) {
            s = x;
            break;
        }
    }
    for suffix in ["USDT", "USDC"] {
        if let Some(x) = s.strip_suffix(suffix).filter(|x| !x.is_empty()) {
            s = x;
            break;
        }
    }
    s.to_string()
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

/// The whole advice for a request.
pub fn advise(req: &StrategyRequest) -> Strategy {
    let prefs = &req.preferences;
    let tol = prefs.risk_tolerance.unwrap_or(RiskTolerance::Medium);
    let limits = Limits::from_constraints(&req.constraints);
    let positions = &req.account.positions;
    let mut notes: Vec<String> = Vec::new();
    let mut steps: Vec<String> = Vec::new();

    // 1–2. Prices, equity, cap, target.
    let missing_marks: Vec<&Position> = positions
        .iter()
        .filter(|p| p.mark_price.is_none())
        .collect();
    if !missing_marks.is_empty() {
        notes.push(format!(
            "No mark price for {}: valued at entry price ({}); send markPx for sizes and stops at today's prices.",
            missing_marks.iter().map(|p| p.symbol.as_str()).collect::<Vec<_>>().join(", "),
            missing_marks.iter().map(|p| px(p.price())).collect::<Vec<_>>().join(", "),
        ));
    }
    let (equity_raw, equity_source) = req
        .account
        .equity_basis()
        .unwrap_or((0.0, EquitySource::Balance));
    let equity = equity_raw.max(0.0);
    if equity_source == EquitySource::Balance && !positions.is_empty() {
        notes.push(format!(
            "Leverage is measured against balance.amount ({}) because account.equity was not sent.",
            usd(equity)
        ));
    }
    let preference = match prefs.leverage {
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
    };
    let cap = match limits.max_leverage {
        Some(c) if c < preference => {
            notes.push(format!(
                "A constraint caps leverage at {} (preference {}).",
                lev(c),
                lev(preference)
            ));
            c
        }
        _ => preference,
    };
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

    // 3. Target notional per position.
    let mut goal = Goal::from_objectives(req.objectives.as_deref());
    let current: Vec<f64> = positions.iter().map(Position::notional).collect();
    let mut wanted = current.clone();
    let long: f64 = positions
        .iter()
        .filter(|p| p.side == Side::Long)
        .map(Position::notional)
        .sum();
    let short: f64 = positions
        .iter()
        .filter(|p| p.side == Side::Short)
        .map(Position::notional)
        .sum();
    if goal == Goal::DeltaNeutral && (long == 0.0 || short == 0.0) && !positions.is_empty() {
        notes.push(format!(
            "Delta-neutral needs positions on both sides; with only {} and no price for another market, the engine can only keep leverage within the cap.",
            if long > 0.0 { "longs" } else { "shorts" }
        ));
        goal = Goal::RiskBudget;
    }
    let reduce_only = limits.reduce_only || tol == RiskTolerance::Low;
    let mut side_target = None;
    match goal {
        Goal::Flat => wanted.iter_mut().for_each(|w| *w = 0.0),
        Goal::DeltaNeutral => {
            let t = if reduce_only {
                long.min(short)
            } else {
                long.max(short)
            }
            .min(target / 2.0);
            side_target = Some(t);
            for (w, p) in wanted.iter_mut().zip(positions) {
                let side_total = if p.side == Side::Long { long } else { short };
                *w = p.notional() * t / side_total;
            }
        }
        Goal::RiskBudget if over && before.gross_usd > 0.0 => {
            let k = target / before.gross_usd;
            wanted.iter_mut().for_each(|w| *w *= k);
        }
        Goal::RiskBudget => {}
    }

    // 4. Actions.
    let universe: Vec<String> = req.symbols.iter().map(|s| coin_of(s)).collect();
    let may_add = |p: &Position| {
        !limits.reduce_only && (universe.is_empty() || universe.contains(&coin_of(&p.symbol)))
    };
    let open_leverage = (cap >= 1.0).then(|| cap.floor() as u32);
    let mut actions: Vec<Action> = Vec::new();
    let mut after_sizes = sizes.clone();
    let mut blocked_adds: Vec<&str> = Vec::new();
    for (i, p) in positions.iter().enumerate() {
        let price = p.price();
        let diff = wanted[i] - current[i];
        let (kind, amount) = if wanted[i] <= 0.0 {
            (close_kind(p.side), p.abs_size())
        } else if diff < 0.0 {
            let amount = ceil6(-diff / price).min(p.abs_size());
            let remainder = (p.abs_size() - amount) * price;
            if amount <= 0.0 {
                // Float noise, or less than the size step: nothing to trade.
                (ActionKind::Hold, 0.0)
            } else if remainder < MIN_TRADE_USD || amount >= p.abs_size() {
                (close_kind(p.side), p.abs_size())
            } else if !over && amount * price < MIN_TRADE_USD {
                (ActionKind::Hold, 0.0)
            } else {
                (ActionKind::Reduce, amount)
            }
        } else if diff > 0.0 {
            let amount = floor6(diff / price);
            if amount <= 0.0 || amount * price < MIN_TRADE_USD {
                (ActionKind::Hold, 0.0)
            } else if !may_add(p) {
                blocked_adds.push(&p.symbol);
                (ActionKind::Hold, 0.0)
            } else {
                (open_kind(p.side), amount)
            }
        } else {
            (ActionKind::Hold, 0.0)
        };
        after_sizes[i] = match kind {
            ActionKind::CloseLong | ActionKind::CloseShort => 0.0,
            ActionKind::Reduce => round6(p.size - p.size.signum() * amount),
            ActionKind::OpenLong | ActionKind::OpenShort => {
                round6(p.size + p.size.signum() * amount)
            }
            ActionKind::Hold => p.size,
        };
        actions.push(Action {
            symbol: p.symbol.clone(),
            action: kind,
            size: amount,
            notional_usd: round2(amount * price),
            leverage: None,
            stop_loss: None,
            take_profit: None,
            reason: String::new(),
        });
    }
    // Safety net: additions never take the account above its cap, whatever rounding did.
    if exposure(positions, &after_sizes, equity).gross_usd > cap_usd * (1.0 + 1e-9) {
        for (i, a) in actions.iter_mut().enumerate() {
            if matches!(a.action, ActionKind::OpenLong | ActionKind::OpenShort) {
                a.action = ActionKind::Hold;
                a.size = 0.0;
                a.notional_usd = 0.0;
                after_sizes[i] = positions[i].size;
            }
        }
    }
    if !blocked_adds.is_empty() {
        notes.push(format!(
            "Not added to {} ({}): the hedge stays smaller than computed.",
            blocked_adds.join(", "),
            if limits.reduce_only {
                "a constraint says reduce only"
            } else {
                "not in the request's symbols"
            }
        ));
    }
    let after = exposure(positions, &after_sizes, equity);

    // 5. Stops, reasons, steps.
    let mut liq_warnings = Vec::new();
    for (i, (a, p)) in actions.iter_mut().zip(positions).enumerate() {
        let remaining = after_sizes[i];
        let reference = p.price();
        let (sl, tp) = match p.side {
            Side::Long => (
                sig5(reference * (1.0 - stop_pct / 100.0)),
                sig5(reference * (1.0 + tp_pct / 100.0)),
            ),
            Side::Short => (
                sig5(reference * (1.0 + stop_pct / 100.0)),
                sig5(reference * (1.0 - tp_pct / 100.0)),
            ),
        };
        if remaining != 0.0 {
            a.stop_loss = Some(sl);
            a.take_profit = Some(tp);
            if let Some(liq) = p.liquidation_price {
                let beyond = match p.side {
                    Side::Long => sl <= liq,
                    Side::Short => sl >= liq,
                };
                if beyond {
                    liq_warnings.push(format!(
                        "{}: the stop at {} is past the liquidation price {}; add margin or cut more.",
                        p.symbol,
                        px(sl),
                        px(liq)
                    ));
                }
            }
        }
        let stops = if remaining != 0.0 {
            format!("; stop-loss {}, take-profit {}", px(sl), px(tp))
        } else {
            String::new()
        };
        let side = p.side.as_str();
        let approx = usd(a.notional_usd);
        match a.action {
            ActionKind::CloseLong | ActionKind::CloseShort => {
                a.reason = match goal {
                    Goal::Flat => "objective is to go flat".into(),
                    _ if equity <= 0.0 => "no equity to carry the position".into(),
                    _ => "the remainder would be below the minimum trade".into(),
                };
                steps.push(format!(
                    "Close the {} {side} of {} (≈{approx}).",
                    p.symbol,
                    qty(a.size)
                ));
            }
            ActionKind::Reduce => {
                let why = if over {
                    format!(
                        "gross {} is above the {} cap",
                        lev(before.leverage),
                        lev(cap)
                    )
                } else {
                    "rebalance toward delta-neutral".into()
                };
                a.reason = match side_target {
                    Some(t) => format!("{why}; each side to {}", usd(t)),
                    None => why,
                };
                steps.push(format!(
                    "Reduce the {} {side} by {} (≈{approx}) to {}{stops}.",
                    p.symbol,
                    qty(a.size),
                    qty(remaining.abs())
                ));
            }
            ActionKind::OpenLong | ActionKind::OpenShort => {
                a.leverage = open_leverage;
                a.reason = match side_target {
                    Some(t) => format!("hedge: each side to {}", usd(t)),
                    None => "hedge".into(),
                };
                steps.push(format!(
                    "Add {} to the {} {side} (≈{approx}){}{stops}.",
                    qty(a.size),
                    p.symbol,
                    open_leverage
                        .map(|l| format!(" at {l}x leverage or less"))
                        .unwrap_or_default()
                ));
            }
            ActionKind::Hold => {
                a.reason = if over {
                    "kept as is while the rest is cut".into()
                } else {
                    format!("within the {} cap", lev(cap))
                };
                steps.push(format!(
                    "Hold the {} {side} of {}{stops}.",
                    p.symbol,
                    qty(p.abs_size())
                ));
            }
        }
        if let Some(l) = p.leverage.filter(|l| *l > cap) {
            notes.push(format!(
                "{} is set to {} on the exchange, above the {} cap: lower it before adding.",
                p.symbol,
                lev(l),
                lev(cap)
            ));
        }
    }
    notes.extend(liq_warnings);
    // Symbols the buyer trades but holds nothing in: nothing to value, nothing suggested.
    let held: Vec<String> = positions.iter().map(|p| coin_of(&p.symbol)).collect();
    let mut idle = Vec::new();
    for s in &req.symbols {
        if !held.contains(&coin_of(s)) {
            idle.push(s.as_str());
            actions.push(Action {
                symbol: s.clone(),
                action: ActionKind::Hold,
                size: 0.0,
                notional_usd: 0.0,
                leverage: None,
                stop_loss: None,
                take_profit: None,
                reason: "no position and no price in the request".into(),
            });
        }
    }
    if !idle.is_empty() {
        notes.push(format!(
            "{}: no position and no price in the request, so no trade is suggested.",
            idle.join(", ")
        ));
    }
    if let Some(max) = limits.max_positions.filter(|m| positions.len() > *m) {
        notes.push(format!(
            "{} positions are open; the constraint allows {max}.",
            positions.len()
        ));
    }
    if !positions.is_empty() && goal != Goal::Flat {
        notes.push(format!(
            "Stops are {}% and take-profits {}% from the reference price ({} risk tolerance{}).",
            dec(stop_pct, 2),
            dec(tp_pct, 2),
            tol.as_str(),
            if prefs.risk_tolerance.is_none() {
                ", assumed"
            } else {
                ""
            }
        ));
    }
    if let Some(h) = &prefs.time_horizon {
        steps.push(format!("Re-check within the {h} time horizon."));
    }

    let summary = summary(
        positions.len(),
        goal,
        over,
        cap,
        equity,
        &before,
        &after,
        &actions,
    );
    let mut confidence: f64 = 0.9;
    if !missing_marks.is_empty() {
        confidence -= 0.2;
    }
    if equity_source == EquitySource::Balance && !positions.is_empty() {
        confidence -= 0.1;
    }

    let mut per_symbol: BTreeMap<&str, SymbolDelta> = BTreeMap::new();
    for p in positions {
        let e = per_symbol.entry(&p.symbol).or_insert_with(|| SymbolDelta {
            symbol: p.symbol.clone(),
            size: 0.0,
            price: p.price(),
            price_source: if p.mark_price.is_some() {
                "mark"
            } else {
                "entry"
            }
            .into(),
            delta_usd: 0.0,
        });
        e.size = round6(e.size + p.size);
        e.delta_usd = round2(e.delta_usd + p.delta());
    }
    let rounded = |x: Exposure| Exposure {
        gross_usd: round2(x.gross_usd),
        net_usd: round2(x.net_usd),
        leverage: if x.leverage.is_finite() {
            round4(x.leverage)
        } else {
            0.0
        },
    };
    Strategy {
        summary,
        steps,
        risk_notes: notes,
        actions,
        confidence: round2(confidence.clamp(0.3, 0.9)),
        analysis: Some(Analysis {
            equity_usd: round2(equity),
            equity_source: match equity_source {
                EquitySource::Equity => "equity",
                EquitySource::Balance => "balance",
            }
            .into(),
            before: rounded(before),
            after: rounded(after),
            leverage_cap: cap,
            target_gross_usd: round2(target),
            goal: goal.as_str().into(),
            per_symbol: per_symbol.into_values().collect(),
            stop_loss_pct: stop_pct,
            take_profit_pct: tp_pct,
        }),
    }
}

fn close_kind(side: Side) -> ActionKind {
    match side {
        Side::Long => ActionKind::CloseLong,
        Side::Short => ActionKind::CloseShort,
    }
}

fn open_kind(side: Side) -> ActionKind {
    match side {
        Side::Long => ActionKind::OpenLong,
        Side::Short => ActionKind::OpenShort,
    }
}

fn direction(net: f64, gross: f64) -> &'static str {
    if net.abs() <= 0.01 * gross.max(1.0) {
        "about neutral"
    } else if net > 0.0 {
        "net long"
    } else {
        "net short"
    }
}

#[allow(clippy::too_many_arguments)]
fn summary(
    n: usize,
    goal: Goal,
    over: bool,
    cap: f64,
    equity: f64,
    before: &Exposure,
    after: &Exposure,
    actions: &[Action],
) -> String {
    if n == 0 {
        return "No open positions: nothing to de-risk, and without prices no new position is suggested.".into();
    }
    let size = if before.leverage.is_finite() {
        format!("is {} the {} equity", lev(before.leverage), usd(equity))
    } else {
        "has no equity behind it".into()
    };
    let head = format!(
        "Gross exposure {} {size} against a {} cap; net delta {} ({}).",
        usd(before.gross_usd),
        lev(cap),
        usd(before.net_usd),
        direction(before.net_usd, before.gross_usd)
    );
    let trades = actions
        .iter()
        .filter(|a| a.action != ActionKind::Hold)
        .count();
    let tail = match goal {
        Goal::Flat => format!("Objective is flat: close all {n} position(s)."),
        _ if trades == 0 => "Within the cap: hold, with the stops below.".into(),
        Goal::DeltaNeutral => format!(
            "{}ebalance both sides to equal notional: gross {} ({}), net {}.",
            if over { "Cut and r" } else { "R" },
            usd(after.gross_usd),
            lev(after.leverage),
            usd(after.net_usd)
        ),
        Goal::RiskBudget => format!(
            "Cut every position pro rata: gross {} ({}), net {}.",
            usd(after.gross_usd),
            lev(after.leverage),
            usd(after.net_usd)
        ),
    };
    format!("{head} {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::contract::{SEED_EXAMPLE, parse};

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
        let eth = &s.actions[0];
        assert_eq!(
            (eth.symbol.as_str(), eth.action, eth.size),
            ("ETH-PERP", ActionKind::Reduce, 0.128742)
        );
        assert_eq!(
            (eth.stop_loss, eth.take_profit),
            (Some(3056.0), Some(3339.5))
        );
        let btc = &s.actions[1];
        assert_eq!(
            (btc.symbol.as_str(), btc.action, btc.size),
            ("BTC-PERP", ActionKind::Reduce, 0.445565)
        );
        assert_eq!(
            (btc.stop_loss, btc.take_profit),
            (Some(63_860.0), Some(58_280.0))
        );
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
