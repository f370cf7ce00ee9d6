//! Hyperliquid's public info endpoint (`POST {base}/info`, no key): `metaAndAssetCtxs` for the
//! universe (size decimals, max leverage) and each coin's context (mark, hourly funding, open
//! interest), `allMids` for mids (the mark's fallback), `candleSnapshot` for candles.
//!
//! The parsers are pure (`parse_*`) and tested against recorded answers in
//! tests/fixtures/venues/; the client caches the universe once per TTL for all coins, and
//! candles per coin and interval.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Candle, ClientConfig, MarketData, MarketError, Quote, Ttl, Wire, num};
use crate::util::now_secs;

const VENUE: &str = "hyperliquid";

/// The public host.
pub const PUBLIC_URL: &str = "https://api.hyperliquid.xyz";

/// The client.
pub struct Hyperliquid {
    wire: Wire,
    ctxs: Ttl<Arc<BTreeMap<String, Quote>>>,
    mids: Ttl<Arc<BTreeMap<String, f64>>>,
    candles: Ttl<Arc<Vec<Candle>>>,
}

impl Hyperliquid {
    pub fn new(cfg: &ClientConfig) -> Result<Self, MarketError> {
        Ok(Hyperliquid {
            wire: Wire::new(VENUE, cfg)?,
            ctxs: Ttl::new(cfg.cache_ttl),
            mids: Ttl::new(cfg.cache_ttl),
            candles: Ttl::new(cfg.cache_ttl),
        })
    }

    async fn info(&self, body: Value) -> Result<Value, MarketError> {
        let url = format!("{}/info", self.wire.base_url);
        self.wire
            .send(self.wire.http.post(url).json(&body))
            .await?
            .ok_or(MarketError::Status {
                venue: VENUE,
                status: 400,
            })
    }

    /// Every coin's quote (one request for the whole universe, cached).
    pub async fn contexts(&self) -> Result<Arc<BTreeMap<String, Quote>>, MarketError> {
        self.ctxs
            .get("metaAndAssetCtxs", || async {
                let v = self.info(json!({"type": "metaAndAssetCtxs"})).await?;
                parse_meta_and_asset_ctxs(&v).map(Arc::new)
            })
            .await
    }

    /// Every coin's mid (cached).
    pub async fn all_mids(&self) -> Result<Arc<BTreeMap<String, f64>>, MarketError> {
        self.mids
            .get("allMids", || async {
                let v = self.info(json!({"type": "allMids"})).await?;
                parse_all_mids(&v).map(Arc::new)
            })
            .await
    }
}

#[async_trait::async_trait]
impl MarketData for Hyperliquid {
    fn venue(&self) -> &'static str {
        VENUE
    }

    fn venue_symbol(&self, symbol: &str) -> String {
        crate::advisor::engine::coin(symbol)
    }

    async fn quote(&self, coin: &str) -> Result<Option<Quote>, MarketError> {
        let ctxs = self.contexts().await?;
        match ctxs.get(coin) {
            Some(q) if q.mark > 0.0 => Ok(Some(q.clone())),
            Some(q) => {
                // No mark in the context (a halted coin): the mid, if any.
                let mids = self.all_mids().await?;
                Ok(mids.get(coin).filter(|m| **m > 0.0).map(|m| Quote {
                    mark: *m,
                    ..q.clone()
                }))
            }
            None => Ok(None),
        }
    }

    async fn candles(
        &self,
        coin: &str,
        interval: &str,
        limit: usize,
    ) -> Result<Vec<Candle>, MarketError> {
        let Some(step) = interval_ms(interval) else {
            return Ok(Vec::new());
        };
        let key = format!("{coin}:{interval}:{limit}");
        let all = self
            .candles
            .get(&key, || async {
                let end = now_secs() * 1000;
                let start = end.saturating_sub(step * (limit as u64 + 1));
                let v = self
                    .info(json!({"type": "candleSnapshot", "req": {
                        "coin": coin, "interval": interval, "startTime": start, "endTime": end}}))
                    .await?;
                parse_candle_snapshot(&v).map(Arc::new)
            })
            .await?;
        let skip = all.len().saturating_sub(limit);
        Ok(all[skip..].to_vec())
    }
}

/// Milliseconds in one of Hyperliquid's candle intervals.
pub fn interval_ms(interval: &str) -> Option<u64> {
    let (n, unit) = interval.split_at(interval.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    Some(n * unit_ms)
}

fn format(what: &str) -> MarketError {
    MarketError::Format {
        venue: VENUE,
        what: what.into(),
    }
}

/// `metaAndAssetCtxs` → quotes by coin: `[{universe: [{name, szDecimals, maxLeverage}]},
/// [{markPx, funding, openInterest, midPx, …}]]`, the two arrays in the same order.
pub fn parse_meta_and_asset_ctxs(v: &Value) -> Result<BTreeMap<String, Quote>, MarketError> {
    let universe = v
        .get(0)
        .and_then(|m| m.get("universe"))
        .and_then(Value::as_array)
        .ok_or_else(|| format("metaAndAssetCtxs[0].universe is missing"))?;
    let ctxs = v
        .get(1)
        .and_then(Value::as_array)
        .ok_or_else(|| format("metaAndAssetCtxs[1] is missing"))?;
    let mut out = BTreeMap::new();
    for (asset, ctx) in universe.iter().zip(ctxs) {
        let Some(name) = asset.get("name").and_then(Value::as_str) else {
            continue;
        };
        if asset.get("isDelisted").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let mark = num(ctx.get("markPx"))
            .or_else(|| num(ctx.get("midPx")))
            .unwrap_or(0.0);
        out.insert(
            name.to_string(),
            Quote {
                coin: name.to_string(),
                mark,
                funding_rate: num(ctx.get("funding")).unwrap_or(0.0),
                funding_interval_hours: 1.0,
                open_interest: num(ctx.get("openInterest")),
                max_leverage: asset
                    .get("maxLeverage")
                    .and_then(Value::as_u64)
                    .map(|l| l as u32),
                size_decimals: asset
                    .get("szDecimals")
                    .and_then(Value::as_u64)
                    .map(|d| d as u32),
            },
        );
    }
    Ok(out)
}

/// `allMids` → mid by coin (`{"BTC": "97011.5", …}`; `@N` spot entries kept as they are).
pub fn parse_all_mids(v: &Value) -> Result<BTreeMap<String, f64>, MarketError> {
    let m = v
        .as_object()
        .ok_or_else(|| format("allMids is not an object"))?;
    Ok(m.iter()
        .filter_map(|(k, x)| num(Some(x)).map(|p| (k.clone(), p)))
        .collect())
}

/// `candleSnapshot` → candles, oldest first: `[{t, T, s, i, o, c, h, l, v, n}]`.
pub fn parse_candle_snapshot(v: &Value) -> Result<Vec<Candle>, MarketError> {
    let rows = v
        .as_array()
        .ok_or_else(|| format("candleSnapshot is not an array"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (Some(t), Some(o), Some(h), Some(l), Some(c)) = (
            r.get("t").and_then(Value::as_u64),
            num(r.get("o")),
            num(r.get("h")),
            num(r.get("l")),
            num(r.get("c")),
        ) else {
            return Err(format("a candle lacks t, o, h, l or c"));
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
