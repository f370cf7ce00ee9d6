//! Step 3 of [`super::advise`], rule 4: one action per position — close, reduce, add or hold —
//! sized toward its target, then the safety net that keeps gross within the cap.

use crate::advisor::contract::{Position, Side};
use crate::advisor::response::{Action, ActionKind};

use super::book::Book;
use super::limits::Goal;
use super::round::{ceil6, coin_of, floor6, round2, round6};
use super::targets::Targets;
use super::{Draft, MIN_TRADE_USD};

impl Draft {
    /// Decides each position's trade and the size it leaves; additions that would take the
    /// account above its cap (after rounding) become holds.
    pub(super) fn trade(&mut self, book: &Book, targets: &Targets) {
        let universe: Vec<String> = book.req.symbols.iter().map(|s| coin_of(s)).collect();
        let may_add = |p: &Position| {
            !book.limits.reduce_only
                && (universe.is_empty() || universe.contains(&coin_of(&p.symbol)))
        };
        let mut blocked_adds: Vec<&str> = Vec::new();
        for (i, p) in book.positions.iter().enumerate() {
            if !p.priced() {
                // Nothing to size it by: closed only when everything is (flat, no equity).
                let close = targets.goal == Goal::Flat || book.equity <= 0.0;
                let (kind, amount) = if close {
                    (close_kind(p.side), p.abs_size())
                } else {
                    (ActionKind::Hold, 0.0)
                };
                self.after_sizes.push(size_after(p, kind, amount));
                self.actions
                    .push(Action::trade(p.symbol.clone(), kind, amount, 0.0));
                continue;
            }
            let (kind, amount) = trade(
                p,
                targets.current[i],
                targets.wanted[i],
                book.over,
                may_add(p),
            )
            .unwrap_or_else(|| {
                blocked_adds.push(&p.symbol);
                (ActionKind::Hold, 0.0)
            });
            self.after_sizes.push(size_after(p, kind, amount));
            self.actions.push(Action::trade(
                p.symbol.clone(),
                kind,
                amount,
                round2(amount * p.price()),
            ));
        }
        self.keep_within_cap(book);
        if !blocked_adds.is_empty() {
            self.notes.push(format!(
                "Not added to {} ({}): the hedge stays smaller than computed.",
                blocked_adds.join(", "),
                if book.limits.reduce_only {
                    "a constraint says reduce only"
                } else {
                    "not in the request's symbols"
                }
            ));
        }
    }

    /// Safety net: additions never take the account above its cap, whatever rounding did.
    fn keep_within_cap(&mut self, book: &Book) {
        if book.exposure(&self.after_sizes).gross_usd <= book.cap_usd * (1.0 + 1e-9) {
            return;
        }
        for (i, a) in self.actions.iter_mut().enumerate() {
            if matches!(a.action, ActionKind::OpenLong | ActionKind::OpenShort) {
                a.action = ActionKind::Hold;
                a.size = 0.0;
                a.notional_usd = 0.0;
                self.after_sizes[i] = book.positions[i].size;
            }
        }
    }
}

/// The trade moving one position from `current` to `wanted` notional: `None` for an addition
/// worth making that is not allowed (reduce only, or not in the buyer's symbols).
fn trade(
    p: &Position,
    current: f64,
    wanted: f64,
    over: bool,
    may_add: bool,
) -> Option<(ActionKind, f64)> {
    let diff = wanted - current;
    Some(if wanted <= 0.0 {
        (close_kind(p.side), p.abs_size())
    } else if diff < 0.0 {
        reduction(p, -diff, over)
    } else if diff > 0.0 {
        let price = p.price();
        let amount = floor6(diff / price);
        if amount <= 0.0 || amount * price < MIN_TRADE_USD {
            (ActionKind::Hold, 0.0)
        } else if !may_add {
            return None;
        } else {
            (open_kind(p.side), amount)
        }
    } else {
        (ActionKind::Hold, 0.0)
    })
}

/// A cut of `usd` notional: rounded up; a remainder under the minimum trade closes the
/// position; below the cap, a cut under the minimum trade is not made.
fn reduction(p: &Position, usd: f64, over: bool) -> (ActionKind, f64) {
    let price = p.price();
    let amount = ceil6(usd / price).min(p.abs_size());
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
}

/// The signed size a position has once `kind` of `amount` is done.
fn size_after(p: &Position, kind: ActionKind, amount: f64) -> f64 {
    match kind {
        ActionKind::CloseLong | ActionKind::CloseShort => 0.0,
        ActionKind::Reduce => round6(p.size - p.size.signum() * amount),
        ActionKind::OpenLong | ActionKind::OpenShort => round6(p.size + p.size.signum() * amount),
        ActionKind::Hold => p.size,
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
