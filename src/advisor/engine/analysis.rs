//! The last step of [`super::advise`]: the numbers behind the advice (`analysis`: equity,
//! exposure before and after, cap, target, delta per symbol), the confidence, and the
//! assembled [`Strategy`].

use std::collections::BTreeMap;

use crate::advisor::contract::EquitySource;
use crate::advisor::response::{Analysis, Exposure, Strategy, SymbolDelta};

use super::Draft;
use super::book::Book;
use super::round::{round2, round4, round6};
use super::targets::Targets;
use super::wording::summary;

impl Draft {
    /// The finished strategy: the summary, the draft's texts and actions, and the analysis.
    pub(super) fn finish(self, book: &Book, targets: &Targets) -> Strategy {
        let after = book.exposure(&self.after_sizes);
        Strategy {
            summary: summary(book, targets, &after, &self.actions),
            steps: self.steps,
            risk_notes: self.notes,
            actions: self.actions,
            confidence: confidence(book),
            analysis: Some(Analysis {
                equity_usd: round2(book.equity),
                equity_source: match book.equity_source {
                    EquitySource::Equity => "equity",
                    EquitySource::Balance => "balance",
                }
                .into(),
                before: rounded(book.before),
                after: rounded(after),
                leverage_cap: book.cap,
                target_gross_usd: round2(book.target),
                goal: targets.goal.as_str().into(),
                per_symbol: per_symbol(book),
                stop_loss_pct: book.stop_pct,
                take_profit_pct: book.tp_pct,
            }),
        }
    }
}

/// 0.9, less 0.2 when a price was the entry price and 0.1 when equity was the balance.
fn confidence(book: &Book) -> f64 {
    let mut confidence: f64 = 0.9;
    if book.missing_marks {
        confidence -= 0.2;
    }
    if book.equity_assumed() {
        confidence -= 0.1;
    }
    round2(confidence.clamp(0.3, 0.9))
}

/// Net size and delta per symbol, in symbol order.
fn per_symbol(book: &Book) -> Vec<SymbolDelta> {
    let mut per_symbol: BTreeMap<&str, SymbolDelta> = BTreeMap::new();
    for p in book.positions {
        let e = per_symbol.entry(&p.symbol).or_insert_with(|| SymbolDelta {
            symbol: p.symbol.clone(),
            size: 0.0,
            price: p.price(),
            price_source: if p.mark_price.is_some() {
                "mark"
            } else if p.entry_price.is_some() {
                "entry"
            } else {
                "none"
            }
            .into(),
            delta_usd: 0.0,
        });
        e.size = round6(e.size + p.size);
        e.delta_usd = round2(e.delta_usd + p.delta());
    }
    per_symbol.into_values().collect()
}

/// Cents and four decimals of leverage (an infinite leverage reads 0).
fn rounded(x: Exposure) -> Exposure {
    Exposure {
        gross_usd: round2(x.gross_usd),
        net_usd: round2(x.net_usd),
        leverage: if x.leverage.is_finite() {
            round4(x.leverage)
        } else {
            0.0
        },
    }
}
