//! Aster's public futures REST (`GET {base}/fapi/v1/...`, no key, Binance-style):
//! `premiumIndex?symbol=` for the mark and the last funding rate (per 8-hour interval),
//! `klines?symbol=&interval=&limit=` for candles. A 400 (`{"code":-1121,"msg":"Invalid
//! symbol."}`) means the symbol is not listed.
//!
//! The parsers are pure (`parse_*`) and tested against recorded answers in
//! tests/fixtures/venues/; the client caches per symbol, and per symbol and interval.

use std::sync::Arc;

use serde_json::Value;

use super::{Candle, ClientConfig, MarketData, MarketError, Quote, Ttl, Wire, num};

const VENUE: &str = "aster";

/// The public host.
pub const PUBLIC_URL: &str = "https://fapi.asterdex.com";

/// Hours between Aster's fundings for most symbols.
pub const FUNDING_INTERVAL_HOURS: f64 = 8.0;

/// The client.
pub struct Aster {
    wire: Wire,
    quotes: Ttl<Option<Quote>>,
    candles: Ttl<Arc<Vec<Candle>>>,
}

impl Aster {
    pub fn new(cfg: &ClientConfig) -> Result<Self, MarketError> {
        Ok(Aster {
            wire: Wire::new(VENUE, cfg)?,
            quotes: Ttl::new(cfg.cache_ttl),
            candles: Ttl::new(cfg.cache_ttl),
        })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Option<Value>, MarketError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.wire.base_url), query)
            .map_err(|_| MarketError::Unreachable { venue: VENUE })?;
        self.wire.send(self.wire.http.get(url)).await
    }
}

#[async_trait::async_trait]
impl MarketData for Aster {
    fn venue(&self) -> &'static str {
        VENUE
    }

    fn venue_symbol(&self, symbol: &str) -> String {
        crate::advisor::engine::roma_symbol(symbol)
    }

    async fn quote(&self, symbol: &str) -> Result<Option<Quote>, MarketError> {
        self.quotes
            .get(symbol, || async {
                match self
                    .get("/fapi/v1/premiumIndex", &[("symbol", symbol)])
                    .await?
                {
                    None => Ok(None),
                    Some(v) => parse_premium_index(&v).map(Some),
                }
            })
            .await
    }

    async fn candles(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
    ) -> Result<Vec<Candle>, MarketError> {
        let key = format!("{symbol}:{interval}:{limit}");
        let limit_s = limit.to_string();
        let c = self
            .candles
            .get(&key, || async {
                match self
                    .get(
                        "/fapi/v1/klines",
                        &[
                            ("symbol", symbol),
                            ("interval", interval),
                            ("limit", &limit_s),
                        ],
                    )
                    .await?
                {
                    None => Ok(Arc::new(Vec::new())),
                    Some(v) => parse_klines(&v).map(Arc::new),
                }
            })
            .await?;
        Ok(c.to_vec())
    }
}

fn format(what: &str) -> MarketError {
    MarketError::Format {
        venue: VENUE,
        what: what.into(),
    }
}

/// `premiumIndex` for one symbol → its quote: `{symbol, markPrice, indexPrice,
/// lastFundingRate, nextFundingTime, …}` (numbers as strings).
pub fn parse_premium_index(v: &Value) -> Result<Quote, MarketError> {
    let symbol = v
        .get("symbol")
        .and_then(Value::as_str)
        .ok_or_else(|| format("premiumIndex.symbol is missing"))?;
    let mark = num(v.get("markPrice"))
        .filter(|m| *m > 0.0)
        .ok_or_else(|| format("premiumIndex.markPrice is missing"))?;
    Ok(Quote {
        coin: symbol.to_string(),
        mark,
        funding_rate: num(v.get("lastFundingRate")).unwrap_or(0.0),
        funding_interval_hours: FUNDING_INTERVAL_HOURS,
        open_interest: None,
        max_leverage: None,
        size_decimals: None,
    })
}

/// `klines` → candles, oldest first: rows of `[openTime, open, high, low, close, volume,
/// closeTime, quoteVolume, trades, takerBuyBase, takerBuyQuote, ignore]`.
pub fn parse_klines(v: &Value) -> Result<Vec<Candle>, MarketError> {
    let rows = v
        .as_array()
        .ok_or_else(|| format("klines is not an array"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (Some(t), Some(o), Some(h), Some(l), Some(c)) = (
            r.get(0).and_then(Value::as_u64),
            num(r.get(1)),
            num(r.get(2)),
            num(r.get(3)),
            num(r.get(4)),
        ) else {
            return Err(format("a kline lacks openTime, open, high, low or close"));
        };
        out.push(Candle {
            open_time_ms: t,
            open: o,
            high: h,
            low: l,
            close: c,
        });
    }
    out.sort_by_key(|c| c.open_time_ms);
    Ok(out)
}
