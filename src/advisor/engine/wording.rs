//! Steps 5–6 of [`super::advise`]: the words. A reason and a step for every action, the risk
//! notes about what the engine could not do or had to assume, and the one-paragraph summary.
//! Every number in them comes from the earlier steps (the model's grounding check relies on it).

use crate::advisor::contract::Position;
use crate::advisor::response::fmt::{dec, lev, px, qty, usd};
use crate::advisor::response::{Action, ActionKind, Exposure};

use super::Draft;
use super::book::Book;
use super::limits::Goal;
use super::round::coin_of;
use super::targets::Targets;

impl Draft {
    /// Why each position's action, the step that carries it out, and a note for a position
    /// whose exchange leverage is above the cap.
    pub(super) fn explain(&mut self, book: &Book, targets: &Targets) {
        for (i, (a, p)) in self.actions.iter_mut().zip(book.positions).enumerate() {
            a.reason = if p.priced() || a.action != ActionKind::Hold {
                reason(a.action, book, targets)
            } else {
                "no price in the request (entry and mark missing or 0)".into()
            };
            self.steps.push(step(a, p, self.after_sizes[i]));
            if let Some(l) = p.leverage.filter(|l| *l > book.cap) {
                self.notes.push(format!(
                    "{} is set to {} on the exchange, above the {} cap: lower it before adding.",
                    p.symbol,
                    lev(l),
                    lev(book.cap)
                ));
            }
        }
    }

    /// Symbols the buyer trades but holds nothing in (and the engine did not open): nothing
    /// suggested.
    pub(super) fn idle_symbols(&mut self, book: &Book) {
        let held: Vec<String> = book
            .positions
            .iter()
            .map(|p| coin_of(&p.symbol))
            .chain(self.opened.iter().map(|o| coin_of(&o.symbol)))
            .collect();
        let priced = |s: &str| book.venue.as_ref().and_then(|v| v.quote(s)).is_some();
        let mut idle = Vec::new();
        let mut idle_priced = Vec::new();
        for s in &book.req.symbols {
            if !held.contains(&coin_of(s)) {
                let reason = if priced(s) {
                    idle_priced.push(s.as_str());
                    "no position; nothing opened"
                } else {
                    idle.push(s.as_str());
                    "no position and no price in the request"
                };
                self.actions.push(Action {
                    reason: reason.into(),
                    ..Action::trade(s.clone(), ActionKind::Hold, 0.0, 0.0)
                });
            }
        }
        if !idle.is_empty() {
            self.notes.push(format!(
                "{}: no position and no price in the request, so no trade is suggested.",
                idle.join(", ")
            ));
        }
        if !idle_priced.is_empty() && self.opened.is_empty() {
            self.notes.push(format!(
                "{}: no position; nothing is opened unless the objectives ask to deploy capital.",
                idle_priced.join(", ")
            ));
        }
    }

    /// The notes on the whole book (too many positions, the stop distances) and the re-check
    /// step for the buyer's time horizon.
    pub(super) fn closing_notes(&mut self, book: &Book, targets: &Targets) {
        let positions = book.positions;
        if let Some(max) = book.limits.max_positions.filter(|m| positions.len() > *m) {
            self.notes.push(format!(
                "{} positions are open; the constraint allows {max}.",
                positions.len()
            ));
        }
        // The fixed distances, when some position that stays open is bracketed by them (the
        // others are by the ATR, in their own note).
        let fixed = positions.iter().enumerate().any(|(i, p)| {
            self.after_sizes[i] != 0.0 && book.stop_for(&p.symbol, p.price()).2.is_none()
        });
        if fixed && targets.goal != Goal::Flat {
            self.notes.push(format!(
                "Stops are {}% and take-profits {}% from the reference price ({} risk tolerance{}).",
                dec(book.stop_pct, 2),
                dec(book.tp_pct, 2),
                book.tol.as_str(),
                if book.req.preferences.risk_tolerance.is_none() {
                    ", assumed"
                } else {
                    ""
                }
            ));
        }
        if let Some(h) = &book.req.preferences.time_horizon {
            self.steps
                .push(format!("Re-check within the {h} time horizon."));
        }
    }
}

/// Why the engine chose `kind` for a position.
fn reason(kind: ActionKind, book: &Book, targets: &Targets) -> String {
    match kind {
        ActionKind::CloseLong | ActionKind::CloseShort => match targets.goal {
            Goal::Flat => "objective is to go flat".into(),
            _ if book.equity <= 0.0 => "no equity to carry the position".into(),
            _ => "the remainder would be below the minimum trade".into(),
        },
        ActionKind::Reduce if matches!(targets.goal, Goal::LockGains | Goal::ReduceRisk) => {
            let share = dec(Goal::share(book.tol) * 100.0, 0);
            let why = if targets.goal == Goal::LockGains {
                format!("lock in gains: {share}% of a winning position taken off")
            } else {
                format!("reduce risk: every position cut by {share}%")
            };
            if book.over {
                format!(
                    "{why}, and gross {} is above the {} cap",
                    lev(book.before.leverage),
                    lev(book.cap)
                )
            } else {
                why
            }
        }
        ActionKind::Reduce => {
            let why = if book.over {
                format!(
                    "gross {} is above the {} cap",
                    lev(book.before.leverage),
                    lev(book.cap)
                )
            } else {
                "rebalance toward delta-neutral".into()
            };
            match targets.side_target {
                Some(t) => format!("{why}; each side to {}", usd(t)),
                None => why,
            }
        }
        ActionKind::OpenLong | ActionKind::OpenShort => match targets.side_target {
            Some(t) => format!("hedge: each side to {}", usd(t)),
            None => "hedge".into(),
        },
        ActionKind::Hold if book.over => "kept as is while the rest is cut".into(),
        ActionKind::Hold => format!("within the {} cap", lev(book.cap)),
    }
}

/// The step that carries out `a` on `p`, leaving `remaining` (signed), with its bracket.
fn step(a: &Action, p: &Position, remaining: f64) -> String {
    let stops = match (a.stop_loss, a.take_profit) {
        (Some(sl), Some(tp)) => format!("; stop-loss {}, take-profit {}", px(sl), px(tp)),
        _ => String::new(),
    };
    let side = p.side.as_str();
    let approx = usd(a.notional_usd);
    match a.action {
        ActionKind::CloseLong | ActionKind::CloseShort => format!(
            "Close the {} {side} of {} (≈{approx}).",
            p.symbol,
            qty(a.size)
        ),
        ActionKind::Reduce => format!(
            "Reduce the {} {side} by {} (≈{approx}) to {}{stops}.",
            p.symbol,
            qty(a.size),
            qty(remaining.abs())
        ),
        ActionKind::OpenLong | ActionKind::OpenShort => format!(
            "Add {} to the {} {side} (≈{approx}){}{stops}.",
            qty(a.size),
            p.symbol,
            a.leverage
                .map(|l| format!(" at {l}x leverage or less"))
                .unwrap_or_default()
        ),
        ActionKind::Hold => format!(
            "Hold the {} {side} of {}{stops}.",
            p.symbol,
            qty(p.abs_size())
        ),
    }
}

/// The summary: the book as measured, then what the actions do to it.
pub(super) fn summary(
    book: &Book,
    targets: &Targets,
    after: &Exposure,
    actions: &[Action],
) -> String {
    let n = book.positions.len();
    let opens = actions
        .iter()
        .filter(|a| {
            matches!(a.action, ActionKind::OpenLong | ActionKind::OpenShort)
                && !book.positions.iter().any(|p| p.symbol == a.symbol)
        })
        .count();
    if n == 0 && opens > 0 {
        return format!(
            "No open positions and {} equity against a {} cap: open {opens} position(s) at the venue's marks, gross {} ({}), net {}.",
            usd(book.equity),
            lev(book.cap),
            usd(after.gross_usd),
            lev(after.leverage),
            usd(after.net_usd)
        );
    }
    if n == 0 {
        return if book.venue.is_some() {
            "No open positions: nothing to de-risk, and no new position is suggested.".into()
        } else {
            "No open positions: nothing to de-risk, and without prices no new position is suggested.".into()
        };
    }
    let before = &book.before;
    let size = if before.leverage.is_finite() {
        format!(
            "is {} the {} equity",
            lev(before.leverage),
            usd(book.equity)
        )
    } else {
        "has no equity behind it".into()
    };
    let head = format!(
        "Gross exposure {} {size} against a {} cap; net delta {} ({}).",
        usd(before.gross_usd),
        lev(book.cap),
        usd(before.net_usd),
        direction(before.net_usd, before.gross_usd)
    );
    let trades = actions
        .iter()
        .filter(|a| a.action != ActionKind::Hold)
        .count();
    let tail = match targets.goal {
        _ if targets.deploy => format!(
            "Deploy: open {opens} new position(s), gross {} ({}), net {}.",
            usd(after.gross_usd),
            lev(after.leverage),
            usd(after.net_usd)
        ),
        Goal::Flat => format!("Objective is flat: close all {n} position(s)."),
        _ if trades == 0 => "Within the cap: hold, with the stops below.".into(),
        Goal::DeltaNeutral => format!(
            "{}ebalance both sides to equal notional: gross {} ({}), net {}.",
            if book.over { "Cut and r" } else { "R" },
            usd(after.gross_usd),
            lev(after.leverage),
            usd(after.net_usd)
        ),
        Goal::LockGains | Goal::ReduceRisk | Goal::RiskBudget => {
            let share = dec(Goal::share(book.tol) * 100.0, 0);
            let what = match targets.goal {
                Goal::LockGains => format!(
                    "Lock in gains: take {share}% off each winning position, the rest stopped no worse than break-even"
                ),
                Goal::ReduceRisk => format!("Reduce risk: cut every position by {share}%"),
                _ => "Cut every position pro rata".into(),
            };
            format!(
                "{what}: gross {} ({}), net {}.",
                usd(after.gross_usd),
                lev(after.leverage),
                usd(after.net_usd)
            )
        }
    };
    format!("{head} {tail}")
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
