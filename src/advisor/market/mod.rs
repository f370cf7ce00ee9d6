//! Market data for the advisor: today's marks, funding, open interest and candles from the venue
//! the account trades on, behind one trait ([`MarketData`]) with two real clients —
//! [`hyperliquid::Hyperliquid`] (`POST /info`: `metaAndAssetCtxs`, `allMids`, `candleSnapshot`)
//! and [`aster::Aster`] (`GET /fapi/v1/premiumIndex`, `/fapi/v1/klines`).
//!
//! Each client has a request timeout, a circuit breaker ([`crate::breaker`]) and a short cache
//! ([`Ttl`], moka): concurrent callers asking for the same key share one venue request, and
//! for the cache's lifetime nobody asks again — a burst of paid calls makes one venue request
//! per symbol and interval. [`Market::snapshot`] gathers what one request needs into a plain
//! [`Snapshot`], which the pure engine reads ([`crate::advisor::engine::advise_with`]); what
//! could not be fetched is listed in [`Snapshot::problems`] and ends up in `riskNotes`.
//!
//! Off unless a base URL is configured (`x402-sidecar advisor --hyperliquid-url/--aster-url`).

pub mod aster;
pub mod hyperliquid;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::contract::{Platform, StrategyRequest};
use crate::breaker::Breaker;

/// Today's figures for one coin on one venue.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    /// The venue's coin name (`BTC`), or its symbol (`BTCUSDT`) on Aster.
    pub coin: String,
    pub mark: f64,
    /// Funding rate per funding interval, as a fraction (0.0001 = 0.01 %); positive: longs pay.
    pub funding_rate: f64,
    /// Hours between fundings (Hyperliquid 1, Aster 8 unless told otherwise).
    pub funding_interval_hours: f64,
    /// Open interest in coin units, when the venue publishes it with the quote.
    pub open_interest: Option<f64>,
    /// The venue's highest leverage for the coin, when known.
    pub max_leverage: Option<u32>,
    /// Decimals a size may have on the venue, when known.
    pub size_decimals: Option<u32>,
}

impl Quote {
    /// Funding per hour, as a fraction.
    pub fn hourly_funding(&self) -> f64 {
        self.funding_rate / self.funding_interval_hours.max(1e-9)
    }
}

/// One candle (open time in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    pub open_time_ms: u64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

/// Why market data could not be had. Never carries a body or a URL with secrets (the venues'
/// public URLs carry none, and only the host is named).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MarketError {
    #[error("{venue} did not answer in time")]
    Timeout { venue: &'static str },
    #[error("{venue} could not be reached")]
    Unreachable { venue: &'static str },
    #[error("{venue} answered HTTP {status}")]
    Status { venue: &'static str, status: u16 },
    #[error("{venue}'s answer is not in its documented format: {what}")]
    Format { venue: &'static str, what: String },
    #[error("{venue} is skipped for a while after repeated failures (circuit breaker open)")]
    BreakerOpen { venue: &'static str },
}

impl MarketError {
    /// A short machine-readable code (for logs and metadata).
    pub fn code(&self) -> &'static str {
        match self {
            MarketError::Timeout { .. } => "timeout",
            MarketError::Unreachable { .. } => "unreachable",
            MarketError::Status { .. } => "status",
            MarketError::Format { .. } => "format",
            MarketError::BreakerOpen { .. } => "breaker_open",
        }
    }
}

/// One venue's public market data.
#[async_trait::async_trait]
pub trait MarketData: Send + Sync {
    /// `hyperliquid` or `aster`.
    fn venue(&self) -> &'static str;
    /// The venue's name for a request symbol (`BTC-PERP` → `BTC` on Hyperliquid, `BTCUSDT` on
    /// Aster).
    fn venue_symbol(&self, symbol: &str) -> String;
    /// Today's quote for a venue symbol; `None` when the venue does not list it.
    async fn quote(&self, symbol: &str) -> Result<Option<Quote>, MarketError>;
    /// The last `limit` candles of `interval` (`1h`, `4h`, `1d`, …), oldest first.
    async fn candles(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
    ) -> Result<Vec<Candle>, MarketError>;
}

/// What the engine knows of the market for one request: plain data, reproducible.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The venue asked (`hyperliquid`, `aster`).
    pub venue: String,
    /// Quotes by the request's own symbol (as the request spells it).
    pub quotes: BTreeMap<String, Quote>,
    /// Candles by the request's own symbol, oldest first.
    pub candles: BTreeMap<String, Vec<Candle>>,
    /// The candles' interval.
    pub interval: String,
    /// Symbols the venue does not list.
    pub unlisted: Vec<String>,
    /// What could not be fetched, as sentences (the venue down, a timeout, …).
    pub problems: Vec<String>,
}

impl Snapshot {
    /// Nothing could be fetched at all.
    pub fn is_empty(&self) -> bool {
        self.quotes.is_empty() && self.candles.is_empty()
    }
}

/// The advisor's market data: one client per venue that is configured, and how much to ask.
#[derive(Clone)]
pub struct Market {
    pub hyperliquid: Option<Arc<dyn MarketData>>,
    pub aster: Option<Arc<dyn MarketData>>,
    /// Candle interval for volatility and trend.
    pub interval: String,
    /// Candles asked per symbol.
    pub candles: usize,
    /// Budget for all of one request's fetches together.
    pub budget: Duration,
}

/// How a client talks to its venue.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://api.hyperliquid.xyz`.
    pub base_url: String,
    /// Per venue request.
    pub timeout: Duration,
    /// How long an answer is reused.
    pub cache_ttl: Duration,
    /// Consecutive failures that open the breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_open: Duration,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            timeout: Duration::from_millis(1_000),
            cache_ttl: Duration::from_secs(5),
            breaker_failures: 3,
            breaker_open: Duration::from_secs(30),
        }
    }
}

impl Market {
    /// The client for the account's platform, if configured.
    pub fn venue_for(&self, platform: Platform) -> Option<&Arc<dyn MarketData>> {
        match platform {
            Platform::Hyperliquid => self.hyperliquid.as_ref(),
            Platform::Aster => self.aster.as_ref(),
        }
    }

    /// The market data `req` needs — a quote and candles for every symbol it holds or asks for —
    /// fetched concurrently within [`Market::budget`]. `None` when no client is configured for
    /// the account's platform (the engine then advises from the request alone).
    pub async fn snapshot(&self, req: &StrategyRequest) -> Option<Snapshot> {
        let venue = self.venue_for(req.account.platform)?.clone();
        let mut symbols: Vec<String> = Vec::new();
        for s in req
            .account
            .positions
            .iter()
            .map(|p| &p.symbol)
            .chain(&req.symbols)
        {
            if !symbols.contains(s) {
                symbols.push(s.clone());
            }
        }
        let mut snap = Snapshot {
            venue: venue.venue().to_string(),
            interval: self.interval.clone(),
            ..Snapshot::default()
        };
        let mut set = tokio::task::JoinSet::new();
        for s in symbols {
            let v = venue.clone();
            let (interval, n) = (self.interval.clone(), self.candles);
            set.spawn(async move {
                let vs = v.venue_symbol(&s);
                let (q, c) = tokio::join!(v.quote(&vs), v.candles(&vs, &interval, n));
                (s, q, c)
            });
        }
        let mut errors: Vec<MarketError> = Vec::new();
        let deadline = tokio::time::Instant::now() + self.budget;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok((s, q, c)))) => {
                    match q {
                        Ok(Some(q)) => {
                            snap.quotes.insert(s.clone(), q);
                        }
                        Ok(None) => snap.unlisted.push(s.clone()),
                        Err(e) => errors.push(e),
                    }
                    match c {
                        Ok(c) if !c.is_empty() => {
                            snap.candles.insert(s, c);
                        }
                        Ok(_) => {}
                        Err(e) => errors.push(e),
                    }
                }
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    set.abort_all();
                    errors.push(MarketError::Timeout {
                        venue: venue.venue(),
                    });
                    break;
                }
            }
        }
        snap.unlisted.sort();
        errors.dedup();
        let mut seen = Vec::new();
        for e in errors {
            let s = e.to_string();
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        snap.problems = seen;
        Some(snap)
    }
}

/// A short-lived cache whose concurrent misses share one fetch: the first caller for a key
/// fetches, the others wait for its answer; a failed fetch is not kept (the next caller tries
/// again, subject to the client's breaker).
pub struct Ttl<V: Clone + Send + Sync + 'static> {
    cells: moka::sync::Cache<String, Arc<OnceCell<V>>>,
}

impl<V: Clone + Send + Sync + 'static> Ttl<V> {
    pub fn new(ttl: Duration) -> Self {
        Ttl {
            cells: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// The cached value for `key`, or the one `fetch` produces (once for all waiting callers).
    pub async fn get<F, Fut, E>(&self, key: &str, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self
            .cells
            .get_with(key.to_string(), || Arc::new(OnceCell::new()));
        cell.get_or_try_init(fetch).await.cloned()
    }
}

/// The breaker and the HTTP client every venue client shares the logic of.
pub(crate) struct Wire {
    pub venue: &'static str,
    pub base_url: String,
    pub http: reqwest::Client,
    breaker: Mutex<Breaker>,
}

impl Wire {
    pub(crate) fn new(venue: &'static str, cfg: &ClientConfig) -> Result<Self, MarketError> {
        crate::init_tls();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|_| MarketError::Unreachable { venue })?;
        Ok(Wire {
            venue,
            base_url: cfg.base_url.clone(),
            http,
            breaker: Mutex::new(Breaker::new(cfg.breaker_failures, cfg.breaker_open)),
        })
    }

    /// Sends `req` through the breaker; `Ok(None)` for a 400 (Aster's "invalid symbol", which
    /// says nothing about the venue's health).
    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<serde_json::Value>, MarketError> {
        let venue = self.venue;
        if !self.lock().allow(Instant::now()) {
            return Err(MarketError::BreakerOpen { venue });
        }
        let result = async {
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    MarketError::Timeout { venue }
                } else {
                    MarketError::Unreachable { venue }
                }
            })?;
            let status = resp.status().as_u16();
            if status == 400 {
                return Ok(None);
            }
            if !(200..300).contains(&status) {
                return Err(MarketError::Status { venue, status });
            }
            let body = resp.bytes().await.map_err(|e| {
                if e.is_timeout() {
                    MarketError::Timeout { venue }
                } else {
                    MarketError::Unreachable { venue }
                }
            })?;
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|_| MarketError::Format {
                    venue,
                    what: "not JSON".into(),
                })
        }
        .await;
        let mut b = self.lock();
        match &result {
            Ok(_) => b.success(),
            Err(_) => b.failure(Instant::now()),
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A number the venues send as a string (or, rarely, a number).
pub(crate) fn num(v: Option<&serde_json::Value>) -> Option<f64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// Average true range over the last `n` candles (Wilder's true range, simple mean); `None`
/// with fewer than `n + 1` candles.
pub fn atr(candles: &[Candle], n: usize) -> Option<f64> {
    if n == 0 || candles.len() < n + 1 {
        return None;
    }
    let tail = &candles[candles.len() - n - 1..];
    let sum: f64 = tail
        .windows(2)
        .map(|w| {
            let (prev, c) = (w[0].close, w[1]);
            (c.high - c.low)
                .max((c.high - prev).abs())
                .max((c.low - prev).abs())
        })
        .sum();
    Some(sum / n as f64)
}

/// Exponential moving average of the closes with period `n` (seeded with the first close).
pub fn ema(candles: &[Candle], n: usize) -> Option<f64> {
    let first = candles.first()?.close;
    let k = 2.0 / (n as f64 + 1.0);
    Some(
        candles
            .iter()
            .skip(1)
            .fold(first, |e, c| c.close * k + e * (1.0 - k)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(h: f64, l: f64, close: f64) -> Candle {
        Candle {
            open_time_ms: 0,
            open: close,
            high: h,
            low: l,
            close,
        }
    }

    #[test]
    fn atr_is_the_mean_true_range() {
        // True ranges: max(12-9, |12-10|, |9-10|) = 3; max(11-10, |11-11|, |10-11|) = 1.
        let cs = [c(10.0, 10.0, 10.0), c(12.0, 9.0, 11.0), c(11.0, 10.0, 10.5)];
        assert_eq!(atr(&cs, 2), Some(2.0));
        assert_eq!(atr(&cs, 3), None);
    }

    #[test]
    fn ema_follows_the_closes() {
        let up: Vec<Candle> = (0..30).map(|i| c(0.0, 0.0, 100.0 + i as f64)).collect();
        assert!(ema(&up, 5).unwrap() > ema(&up, 20).unwrap());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache: Ttl<u32> = Ttl::new(Duration::from_secs(60));
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut set = tokio::task::JoinSet::new();
        let cache = Arc::new(cache);
        for _ in 0..16 {
            let (cache, calls) = (cache.clone(), calls.clone());
            set.spawn(async move {
                cache
                    .get("k", || async {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, ()>(7)
                    })
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), Ok(7));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A failure is not kept.
        let e: Ttl<u32> = Ttl::new(Duration::from_secs(60));
        assert_eq!(e.get("k", || async { Err::<u32, _>(1) }).await, Err(1));
        assert_eq!(e.get("k", || async { Ok::<_, u32>(2) }).await, Ok(2));
    }
}
