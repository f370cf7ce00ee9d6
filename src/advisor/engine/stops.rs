//! Step 4 of [`super::advise`], rule 5: the order parameters — the exchange leverage on opens,
//! and a stop-loss and take-profit bracket for every position that stays open, with a warning
//! when the stop lies past the liquidation price.

use crate::advisor::contract::Side;
use crate::advisor::response::ActionKind;
use crate::advisor::response::fmt::px;

use super::Draft;
use super::book::Book;
use super::limits::Goal;
use super::targets::{Targets, gain};

/// How much farther take-profits sit when the objectives keep the upside.
const UPSIDE_TP: f64 = 1.5;

impl Draft {
    /// Sets leverage on opens and the bracket on what stays open; returns the notes on stops
    /// moved to break-even and the warnings about stops past liquidation (they follow the
    /// other per-position notes). Locking in gains or
    /// keeping the upside moves a winner's stop to break-even (its entry) when that is
    /// tighter; keeping the upside also sets a winner's take-profit 1.5× farther. Liquidation is checked
    /// on the position *after* the trade: with the account's margin unchanged, the distance
    /// from the price to liquidation grows as the size shrinks (distance × before ÷ after).
    pub(super) fn bracket(&mut self, book: &Book, targets: &Targets) -> Vec<String> {
        let mut notes = Vec::new();
        for (i, (a, p)) in self.actions.iter_mut().zip(book.positions).enumerate() {
            if matches!(a.action, ActionKind::OpenLong | ActionKind::OpenShort) {
                a.leverage = book.open_leverage();
            }
            if self.after_sizes[i] == 0.0 || !p.priced() {
                continue;
            }
            let (stop_pct, mut tp_pct, _) = book.stop_for(&p.symbol, p.price());
            let winner = gain(p) > 0.0;
            if targets.upside && winner {
                tp_pct *= UPSIDE_TP;
            }
            let (mut sl, tp) = super::venue::bracket(p.side, p.price(), stop_pct, tp_pct);
            if (targets.goal == Goal::LockGains || targets.upside)
                && winner
                && let Some(entry) = p.entry_price
            {
                let tighter = match p.side {
                    Side::Long => entry > sl && entry < p.price(),
                    Side::Short => entry < sl && entry > p.price(),
                };
                if tighter {
                    notes.push(format!(
                            "{}: the stop moves to the entry {} (break-even) instead of {}, so the gain is not given back.",
                            p.symbol,
                            px(entry),
                            px(sl)
                        ));
                    sl = entry;
                }
            }
            a.stop_loss = Some(sl);
            a.take_profit = Some(tp);
            let liq_after = p.liquidation_price.map(|liq| {
                liquidation_after(p.price(), liq, p.abs_size(), self.after_sizes[i].abs())
            });
            let beyond = liq_after.filter(|liq| match p.side {
                Side::Long => sl <= *liq,
                Side::Short => sl >= *liq,
            });
            if let Some(liq) = beyond {
                notes.push(format!(
                    "{}: the stop at {} is past the liquidation price {} (≈{} after this trade); add margin or cut more.",
                    p.symbol,
                    px(sl),
                    px(p.liquidation_price.unwrap_or(liq)),
                    px(liq)
                ));
            }
        }
        notes
    }
}

/// The liquidation price once the size goes from `before` to `after` (same margin): the
/// distance from `price` scales by before ÷ after. Rounded to 5 significant figures.
pub(super) fn liquidation_after(price: f64, liq: f64, before: f64, after: f64) -> f64 {
    if after <= 0.0 || before <= 0.0 {
        return liq;
    }
    let moved = price + (liq - price) * (before / after);
    super::round::sig5(moved.max(0.0))
}
