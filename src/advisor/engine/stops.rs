//! Step 4 of [`super::advise`], rule 5: the order parameters — the exchange leverage on opens,
//! and a stop-loss and take-profit bracket for every position that stays open, with a warning
//! when the stop lies past the liquidation price.

use crate::advisor::contract::Side;
use crate::advisor::response::ActionKind;
use crate::advisor::response::fmt::px;

use super::Draft;
use super::book::Book;
use super::round::sig5;

impl Draft {
    /// Sets leverage on opens and the bracket on what stays open; returns the warnings about
    /// stops past liquidation (they follow the other per-position notes).
    pub(super) fn bracket(&mut self, book: &Book) -> Vec<String> {
        let mut past_liquidation = Vec::new();
        for (i, (a, p)) in self.actions.iter_mut().zip(book.positions).enumerate() {
            if matches!(a.action, ActionKind::OpenLong | ActionKind::OpenShort) {
                a.leverage = book.open_leverage();
            }
            if self.after_sizes[i] == 0.0 || !p.priced() {
                continue;
            }
            let (sl, tp) = stops(p.side, p.price(), book.stop_pct, book.tp_pct);
            a.stop_loss = Some(sl);
            a.take_profit = Some(tp);
            let beyond = p.liquidation_price.filter(|liq| match p.side {
                Side::Long => sl <= *liq,
                Side::Short => sl >= *liq,
            });
            if let Some(liq) = beyond {
                past_liquidation.push(format!(
                    "{}: the stop at {} is past the liquidation price {}; add margin or cut more.",
                    p.symbol,
                    px(sl),
                    px(liq)
                ));
            }
        }
        past_liquidation
    }
}

/// Stop-loss and take-profit from the reference price (mark, else entry), at five significant
/// figures (Hyperliquid's price rule).
fn stops(side: Side, reference: f64, stop_pct: f64, tp_pct: f64) -> (f64, f64) {
    match side {
        Side::Long => (
            sig5(reference * (1.0 - stop_pct / 100.0)),
            sig5(reference * (1.0 + tp_pct / 100.0)),
        ),
        Side::Short => (
            sig5(reference * (1.0 + stop_pct / 100.0)),
            sig5(reference * (1.0 - tp_pct / 100.0)),
        ),
    }
}
