//! The market's part of [`super::advise_with`]: today's marks for positions sent without one,
//! stops at a multiple of the volatility (ATR) instead of a fixed percentage, the funding a
//! position pays or earns over the time horizon, and sized opens for a flat or under-exposed
//! account that asks to deploy capital into symbols it does not hold. Everything from a
//! [`Snapshot`] (plain recorded data), so every number can be redone by hand.
//!
//! Rules (the engine's header numbers them 6–9):
//!
//! 6. **Marks**: a position without `markPx` is valued at the venue's mark (`priceSource:
//!    venue`); a mark sent in the request is kept.
//! 7. **Stops**: with at least 15 candles and no `stop loss N%` constraint, the stop lies
//!    k × ATR(14) from the reference price (k: low 1.5, medium 2, high 3), between 0.5 % and
//!    20 %; the take-profit twice as far (or `take profit N%`).
//! 8. **Funding**: the hourly rate × 24 × 365 is its yearly rate; at 10 % or more a risk note
//!    gives what the position pays (or earns) over `timeHorizon` (24h when not sent).
//! 9. **Opens** (goal `deploy`: "deploy", "allocate", "invest", "put … to work"): every symbol
//!    asked for, not held, with a venue mark and a trend (EMA 9 against EMA 21 of the closes:
//!    above → long, below → short), up to `max positions`, unless `reduce only`. Each gets
//!    notional = min(headroom ÷ n, margin ÷ n × leverage, risk × equity ÷ stop distance), where
//!    headroom = target gross − gross after the other actions, margin = `balance.amount` (else
//!    equity − gross ÷ cap), leverage = the cap rounded down (at most the venue's maximum), and
//!    risk = low 1 % / medium 2 % / high 3 % of equity lost at the stop. Sizes round down to
//!    the venue's size decimals (else 6); an open under $10 is not made.

use crate::advisor::contract::{Position, RiskTolerance, Side, StrategyRequest};
use crate::advisor::market::{self, Quote, Snapshot};
use crate::advisor::response::fmt::{dec, px, qty, usd};
use crate::advisor::response::{Action, ActionKind};

use super::book::Book;
use super::round::{coin_of, round2, round6, sig5};
use super::{Draft, MIN_TRADE_USD};

/// Candles ATR is measured over.
pub(super) const ATR_PERIOD: usize = 14;
/// Yearly funding above which a note is written.
const MATERIAL_FUNDING_APR: f64 = 0.10;

/// The market as the engine reads it for one request.
pub(super) struct Venue<'a> {
    pub snap: &'a Snapshot,
    /// Per position: its mark came from the venue.
    pub marked: Vec<bool>,
}

/// `req` with the venue's marks filled in where the request has none, and which positions got
/// one.
pub(super) fn fill_marks(req: &StrategyRequest, snap: &Snapshot) -> (StrategyRequest, Vec<bool>) {
    let mut out = req.clone();
    let marked = out
        .account
        .positions
        .iter_mut()
        .map(|p| match (p.mark_price, snap.quotes.get(&p.symbol)) {
            (None, Some(q)) if q.mark > 0.0 => {
                p.mark_price = Some(q.mark);
                true
            }
            _ => false,
        })
        .collect();
    (out, marked)
}

impl Venue<'_> {
    /// The notes on the market data itself: where the marks came from, what is missing.
    pub(super) fn notes(&self, positions: &[Position], notes: &mut Vec<String>) {
        let s = self.snap;
        let marked: Vec<String> = positions
            .iter()
            .zip(&self.marked)
            .filter(|(_, m)| **m)
            .map(|(p, _)| format!("{} {}", p.symbol, px(p.price())))
            .collect();
        if !marked.is_empty() {
            notes.push(format!(
                "Valued at {}'s mark price (not sent in the request): {}.",
                s.venue,
                marked.join(", ")
            ));
        }
        if !s.problems.is_empty() {
            notes.push(format!(
                "Market data from {} is unavailable ({}): the advice uses the request's own prices and fixed stop distances, and opens nothing.",
                s.venue,
                s.problems.join("; ")
            ));
        }
        if !s.unlisted.is_empty() {
            notes.push(format!(
                "{} not listed on {}: no market data for it.",
                s.unlisted.join(", "),
                s.venue
            ));
        }
    }

    pub(super) fn quote(&self, symbol: &str) -> Option<&Quote> {
        self.snap.quotes.get(symbol)
    }

    /// ATR(14) of the symbol's candles, when there are enough.
    pub(super) fn atr(&self, symbol: &str) -> Option<f64> {
        self.snap
            .candles
            .get(symbol)
            .and_then(|c| market::atr(c, ATR_PERIOD))
    }

    /// +1 up, −1 down, from EMA 9 against EMA 21 (at least 21 candles).
    fn trend(&self, symbol: &str) -> Option<(Side, f64, f64)> {
        let c = self.snap.candles.get(symbol).filter(|c| c.len() >= 21)?;
        let (fast, slow) = (market::ema(c, 9)?, market::ema(c, 21)?);
        if fast > slow {
            Some((Side::Long, fast, slow))
        } else if fast < slow {
            Some((Side::Short, fast, slow))
        } else {
            None
        }
    }
}

/// ATR multiple for the stop, by risk tolerance.
fn atr_multiple(t: RiskTolerance) -> f64 {
    match t {
        RiskTolerance::Low => 1.5,
        RiskTolerance::Medium => 2.0,
        RiskTolerance::High => 3.0,
    }
}

/// Share of equity an open may lose at its stop.
fn risk_share(t: RiskTolerance) -> f64 {
    match t {
        RiskTolerance::Low => 0.01,
        RiskTolerance::Medium => 0.02,
        RiskTolerance::High => 0.03,
    }
}

/// Hours in a `timeHorizon` like `24h`, `4h`, `1d`, `1w`, `30m`.
pub(super) fn horizon_hours(h: Option<&str>) -> Option<f64> {
    let h = h?.trim().to_ascii_lowercase();
    let split = h.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = h.split_at(split);
    let n: f64 = n.parse().ok()?;
    let per = match unit.trim() {
        "m" | "min" | "mins" | "minutes" => 1.0 / 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 1.0,
        "d" | "day" | "days" => 24.0,
        "w" | "wk" | "week" | "weeks" => 168.0,
        _ => return None,
    };
    Some(n * per).filter(|x| *x > 0.0)
}

impl Book<'_> {
    /// Stop-loss and take-profit distance (percent) for `symbol` at `price`, and the ATR they
    /// come from when they do (rule 7).
    pub(super) fn stop_for(&self, symbol: &str, price: f64) -> (f64, f64, Option<f64>) {
        let atr = self
            .venue
            .as_ref()
            .and_then(|v| v.atr(symbol))
            .filter(|a| *a > 0.0 && price > 0.0);
        match atr {
            Some(a) if self.limits.stop_loss_pct.is_none() => {
                let sl = (atr_multiple(self.tol) * a / price * 100.0).clamp(0.5, 20.0);
                let sl = (sl * 100.0).round() / 100.0;
                (sl, self.limits.take_profit_pct.unwrap_or(2.0 * sl), Some(a))
            }
            _ => (self.stop_pct, self.tp_pct, None),
        }
    }
}

/// Stop-loss and take-profit prices from `reference`, five significant figures.
pub(super) fn bracket(side: Side, reference: f64, stop_pct: f64, tp_pct: f64) -> (f64, f64) {
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

/// A new position the engine opens (rule 9).
#[derive(Debug, Clone)]
pub(super) struct Opened {
    pub symbol: String,
    /// Signed coin size.
    pub size: f64,
    pub price: f64,
}

impl Draft {
    /// Rule 9: sized opens into the symbols asked for and not held. Returns the symbols it
    /// opened, so `idle_symbols` does not list them as idle.
    pub(super) fn open_new(&mut self, book: &Book, deploy: bool) {
        let Some(venue) = book.venue.as_ref() else {
            return;
        };
        if !deploy || book.over || book.equity <= 0.0 {
            return;
        }
        if book.limits.reduce_only {
            self.notes
                .push("Nothing new is opened: a constraint says reduce only.".into());
            return;
        }
        let held: Vec<String> = book.positions.iter().map(|p| coin_of(&p.symbol)).collect();
        let mut candidates = Vec::new();
        let mut no_trend = Vec::new();
        for s in &book.req.symbols {
            if held.contains(&coin_of(s)) {
                continue;
            }
            let Some(q) = venue.quote(s).filter(|q| q.mark > 0.0) else {
                continue;
            };
            match venue.trend(s) {
                Some(t) => candidates.push((s.clone(), q.clone(), t)),
                None => no_trend.push(s.as_str()),
            }
        }
        if !no_trend.is_empty() {
            self.notes.push(format!(
                "{}: no trend from the candles (fewer than 21, or flat), so no direction to open.",
                no_trend.join(", ")
            ));
        }
        if let Some(max) = book.limits.max_positions {
            let room = max.saturating_sub(book.positions.len());
            if candidates.len() > room {
                self.notes.push(format!(
                    "Only {room} new position(s) fit the constraint of {max} positions."
                ));
                candidates.truncate(room);
            }
        }
        if candidates.is_empty() {
            return;
        }
        let n = candidates.len() as f64;
        let gross_after = book.exposure(&self.after_sizes).gross_usd;
        let headroom = (book.target - gross_after).max(0.0);
        let margin = match &book.req.account.balance {
            Some(b) => b.amount.max(0.0),
            None => (book.equity - book.before.gross_usd / book.cap.max(1e-9)).max(0.0),
        };
        let cap_lev = book.open_leverage().unwrap_or(1).max(1);
        for (symbol, q, (side, fast, slow)) in candidates {
            let leverage = q.max_leverage.map_or(cap_lev, |m| cap_lev.min(m.max(1)));
            let (stop_pct, tp_pct, _) = book.stop_for(&symbol, q.mark);
            let by_risk = risk_share(book.tol) * book.equity / (stop_pct / 100.0);
            let notional = (headroom / n)
                .min(margin / n * f64::from(leverage))
                .min(by_risk);
            let dp = q.size_decimals.unwrap_or(6).min(6) as i32;
            let step = 10f64.powi(dp);
            let size = ((notional / q.mark) * step + 1e-9).floor() / step;
            if size <= 0.0 || size * q.mark < MIN_TRADE_USD {
                continue;
            }
            let kind = match side {
                Side::Long => ActionKind::OpenLong,
                Side::Short => ActionKind::OpenShort,
            };
            let (sl, tp) = bracket(side, q.mark, stop_pct, tp_pct);
            let bound = if by_risk <= notional + 1e-9 {
                format!(
                    "{}% of equity at risk at the stop",
                    dec(risk_share(book.tol) * 100.0, 2)
                )
            } else {
                "an equal share of the room below the cap".into()
            };
            let mut a = Action::trade(symbol.clone(), kind, size, round2(size * q.mark));
            a.leverage = Some(leverage);
            a.stop_loss = Some(sl);
            a.take_profit = Some(tp);
            a.reason = format!(
                "deploy: trend {} (EMA 9 {} {} EMA 21 {}), sized to {bound}",
                if side == Side::Long { "up" } else { "down" },
                px(sig5(fast)),
                if side == Side::Long { ">" } else { "<" },
                px(sig5(slow)),
            );
            self.steps.push(format!(
                "Open a {} of {} {} at {}'s mark {} (≈{}) at {leverage}x leverage or less; stop-loss {}, take-profit {}.",
                side.as_str(),
                qty(size),
                symbol,
                venue.snap.venue,
                px(q.mark),
                usd(a.notional_usd),
                px(sl),
                px(tp)
            ));
            self.actions.push(a);
            self.opened.push(Opened {
                symbol,
                size: if side == Side::Long { size } else { -size },
                price: q.mark,
            });
        }
    }

    /// Rule 7's and 8's notes: the ATR behind each stop, and the funding worth knowing.
    pub(super) fn market_notes(&mut self, book: &Book) {
        let Some(venue) = book.venue.as_ref() else {
            return;
        };
        let hours = horizon_hours(book.req.preferences.time_horizon.as_deref());
        let (h, assumed) = hours.map_or((24.0, true), |h| (h, false));
        let mut held: Vec<(String, f64, f64)> = book
            .positions
            .iter()
            .zip(&self.after_sizes)
            .filter(|(_, s)| **s != 0.0)
            .map(|(p, s)| (p.symbol.clone(), *s, p.price()))
            .collect();
        held.extend(
            self.opened
                .iter()
                .map(|o| (o.symbol.clone(), o.size, o.price)),
        );
        let mut atr_parts = Vec::new();
        for (symbol, size, price) in &held {
            if let (sl, _, Some(a)) = book.stop_for(symbol, *price) {
                atr_parts.push(format!(
                    "{symbol} ATR {} → stop {}%",
                    px(sig5(a)),
                    dec(sl, 2)
                ));
            }
            let Some(q) = venue.quote(symbol) else {
                continue;
            };
            let hourly = q.hourly_funding();
            let apr = hourly * 24.0 * 365.0;
            if apr.abs() < MATERIAL_FUNDING_APR {
                continue;
            }
            // Longs pay a positive rate, shorts receive it.
            let cost = size * price * hourly * h;
            let side = if *size > 0.0 { "long" } else { "short" };
            self.notes.push(format!(
                "{symbol} funding is {}% an hour ({}% a year): the {side} {} ≈{} over {}{}.",
                dec(hourly * 100.0, 6),
                dec(apr * 100.0, 2),
                if cost > 0.0 { "pays" } else { "earns" },
                usd(cost.abs()),
                dec(h, 2) + "h",
                if assumed {
                    " (no time horizon sent: 24h assumed)"
                } else {
                    ""
                }
            ));
        }
        if !atr_parts.is_empty() {
            self.notes.push(format!(
                "Stops at {} × ATR({ATR_PERIOD}, {} candles from {}) for {} risk tolerance: {}.",
                dec(atr_multiple(book.tol), 2),
                venue.snap.interval,
                venue.snap.venue,
                book.tol.as_str(),
                atr_parts.join("; ")
            ));
        }
    }
}

/// The opens' exposure added to the positions' (gross, net).
pub(super) fn with_opens(gross: f64, net: f64, opened: &[Opened]) -> (f64, f64) {
    opened.iter().fold((gross, net), |(g, n), o| {
        (g + o.size.abs() * o.price, n + o.size * o.price)
    })
}

/// Rounded coin size of an open, for the analysis.
pub(super) fn opened_size(o: &Opened) -> f64 {
    round6(o.size)
}
