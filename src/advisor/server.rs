//! The built-in advisor: the HTTP upstream the paywall forwards paid calls to.
//!
//! `POST <any path>` with a `StrategyRequest` body and the shared secret in
//! [`SECRET_HEADER`] → the rule engine's answer, worded by the model when one is configured and
//! its words pass the checks, with the actions also in roma-01's decision format (`decisions`). Without the secret: 401, so nobody reaches the engine or the
//! model without going through the paywall (and paying). `GET /healthz` answers without it.
//!
//! Started by `x402-sidecar advisor` (loopback by default) and by `x402-sidecar demo`. Serves
//! with the small HTTP/1.1 server of [`crate::http::server`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::contract::{self, StrategyRequest};
use super::engine::{ENGINE_ID, advise_with, decisions};
use super::market::{self, ClientConfig, Market, MarketData};
use super::model::{self, ModelClient, ModelConfig, StructuredFormat};
use super::response::{Decision, Metadata, Strategy};
use crate::http::server::{self, Handler, Request, Response};
use crate::util::{new_id, now_secs, rfc3339};

/// Header carrying the secret shared by the sidecar (`inbound.upstream.secret_env`) and the
/// advisor (`--secret-env`).
pub const SECRET_HEADER: &str = "X-Sidecar-Secret";

/// Shortest secret accepted.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// Why the advisor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdvisorError {
    #[error(
        "environment variable {0} is not set: it must hold the secret the sidecar sends in {SECRET_HEADER} (at least {MIN_SECRET_LEN} characters; the sidecar's inbound.upstream.secret_env names the same variable)"
    )]
    NoSecret(String),
    #[error("the secret in {0} is shorter than {MIN_SECRET_LEN} characters")]
    ShortSecret(String),
    #[error("environment variable {0} (the model API key) is not set")]
    NoApiKey(String),
    #[error("--model-extra must be a JSON object: {0}")]
    Extra(String),
    #[error("--model-url `{0}` is not an http(s) URL")]
    ModelUrl(String),
    #[error("--{0} `{1}` is not an http(s) URL")]
    MarketUrl(&'static str, String),
    #[error("market data client: {0}")]
    Market(#[from] market::MarketError),
    #[error("model client: {0}")]
    Model(#[from] model::ModelError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

/// The advisor: the secret, the model client and the market data when configured.
pub struct Advisor {
    secret: Vec<u8>,
    model: Option<ModelClient>,
    market: Option<Market>,
}

/// One answer and how it was made (for the HTTP reply, the logs and the tests).
#[derive(Debug, Clone)]
pub struct Answer {
    pub strategy: Strategy,
    pub metadata: Metadata,
    /// The actions in roma-01's decision format.
    pub decisions: Vec<Decision>,
    pub engine_time: Duration,
    pub model_time: Option<Duration>,
}

impl Advisor {
    pub fn new(
        secret: impl Into<String>,
        model: Option<ModelClient>,
    ) -> Result<Self, AdvisorError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return Err(AdvisorError::ShortSecret("the given secret".into()));
        }
        Ok(Advisor {
            secret: secret.into_bytes(),
            model,
            market: None,
        })
    }

    /// The same advisor, reading the venues' market data (sizes and stops at today's marks,
    /// ATR stops, funding, opens).
    pub fn with_market(mut self, market: Market) -> Self {
        self.market = Some(market);
        self
    }

    /// The rule engine alone (the demo's and the embedded default's advisor).
    pub fn rules_only(secret: impl Into<String>) -> Result<Self, AdvisorError> {
        Self::new(secret, None)
    }

    /// Engine, then the model step if configured. `metadata.model` names what wrote the texts.
    pub async fn answer(&self, req: &StrategyRequest) -> Answer {
        let call_id = new_id("mc");
        let tm = Instant::now();
        let snapshot = match &self.market {
            Some(m) => m.snapshot(req).await,
            None => None,
        };
        let market_time = self.market.as_ref().map(|_| tm.elapsed());
        if let Some(s) = snapshot.as_ref().filter(|s| !s.problems.is_empty()) {
            warn!(venue = %s.venue, problems = %s.problems.join("; "), "market data unavailable; advising without it");
        }
        let t = Instant::now();
        let mut strategy = advise_with(req, snapshot.as_ref());
        let engine_time = t.elapsed();
        let mut model_name = ENGINE_ID.to_string();
        let mut fallback = None;
        let mut model_time = None;
        if let Some(m) = &self.model {
            let outcome = m.word(&strategy, req, &call_id).await;
            model_time = Some(outcome.elapsed);
            match outcome.result {
                Ok(words) => {
                    model::apply(&mut strategy, words);
                    model_name = format!("{ENGINE_ID}+{}", m.config().model);
                }
                Err(e) => fallback = Some(e.code().to_string()),
            }
        }
        let mut extra = Map::new();
        extra.insert("engine".into(), json!(ENGINE_ID));
        extra.insert("engineMicros".into(), json!(engine_time.as_micros() as u64));
        if let Some(t) = model_time {
            extra.insert("modelMs".into(), json!(t.as_millis() as u64));
        }
        if let Some(s) = &snapshot {
            extra.insert(
                "market".into(),
                json!({"venue": s.venue, "interval": s.interval,
                    "symbols": s.quotes.keys().collect::<Vec<_>>(),
                    "available": s.problems.is_empty(),
                    "ms": market_time.map(|t| t.as_millis() as u64)}),
            );
        }
        if !req.telemetry.is_empty() {
            extra.insert("telemetry".into(), Value::Object(req.telemetry.clone()));
        }
        let decisions = decisions(&strategy, req);
        Answer {
            strategy,
            decisions,
            metadata: Metadata {
                model: model_name,
                model_call_id: Some(call_id),
                generated_at: rfc3339(now_secs()),
                request_id: None,
                payment_id: None,
                model_fallback: fallback,
                extra,
            },
            engine_time,
            model_time,
        }
    }

    fn authorised(&self, req: &Request) -> bool {
        req.header(SECRET_HEADER)
            .is_some_and(|v| constant_time_eq(v.as_bytes(), &self.secret))
    }

    /// One HTTP request.
    pub(crate) async fn handle(&self, req: Request) -> Response {
        let path = req.path.split('?').next().unwrap_or_default();
        if req.method == "GET" && path == "/healthz" {
            return reply(200, json!({"status": "ok", "engine": ENGINE_ID}));
        }
        if !self.authorised(&req) {
            warn!(path, "advisor call without the sidecar's secret refused");
            return error(
                401,
                "unauthorized",
                &format!("this advisor answers only its sidecar ({SECRET_HEADER})"),
            );
        }
        if req.method != "POST" {
            return error(405, "method_not_allowed", "POST a StrategyRequest");
        }
        let request = match contract::parse(&req.body) {
            Ok(r) => r,
            Err(details) => {
                return reply(
                    400,
                    json!({"error": "invalid_request", "message": "the body is not a valid StrategyRequest", "details": details}),
                );
            }
        };
        let mut a = self.answer(&request).await;
        a.metadata.request_id = req.header("x-request-id").map(str::to_string);
        a.metadata.payment_id = req.header("x-payment-id").map(str::to_string);
        info!(
            request_id = a.metadata.request_id.as_deref().unwrap_or("-"),
            payment_id = a.metadata.payment_id.as_deref().unwrap_or("-"),
            model_call_id = a.metadata.model_call_id.as_deref().unwrap_or("-"),
            model = %a.metadata.model,
            fallback = a.metadata.model_fallback.as_deref().unwrap_or("-"),
            engine_us = a.engine_time.as_micros() as u64,
            model_ms = a.model_time.map(|t| t.as_millis() as u64),
            actions = a.strategy.actions.len(),
            "advice served"
        );
        reply(
            200,
            json!({"strategy": a.strategy, "decisions": a.decisions, "metadata": a.metadata}),
        )
    }

    /// The advisor as a [`server::Handler`].
    pub(crate) fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req: Request| {
            let me = self.clone();
            Box::pin(async move { me.handle(req).await })
        })
    }
}

/// A JSON reply.
fn reply(status: u16, body: Value) -> Response {
    Response::Body(status, body.to_string())
}

/// A JSON error reply: `{error, message}`.
fn error(status: u16, code: &str, message: &str) -> Response {
    reply(status, json!({"error": code, "message": message}))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serve `advisor` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, advisor: Arc<Advisor>) {
    server::serve(listener, advisor.handler()).await
}

/// `x402-sidecar advisor`: where to listen, the shared secret, and the optional model.
#[derive(Debug, Clone, clap::Args)]
pub struct AdvisorArgs {
    /// Address to listen on. Keep it on loopback: the sidecar is its only client.
    #[arg(long, env = "X402_ADVISOR_LISTEN", default_value = "127.0.0.1:8500")]
    pub listen: String,
    /// Environment variable holding the shared secret; the sidecar's
    /// `inbound.upstream.secret_env` must name a variable with the same value.
    #[arg(long, default_value = "X402_ADVISOR_SECRET")]
    pub secret_env: String,
    /// Base URL of an OpenAI-compatible API, up to `/v1` (llama.cpp server, Ollama, vLLM,
    /// OpenAI, DeepSeek). Without it the rule engine writes everything.
    #[arg(long, env = "X402_ADVISOR_MODEL_URL")]
    pub model_url: Option<String>,
    /// Model id to request; reported as `rules-v1+<id>` when its words are used.
    #[arg(long, env = "X402_ADVISOR_MODEL", default_value = "local")]
    pub model: String,
    /// Environment variable holding the API key (sent as a Bearer token), if the API needs one.
    #[arg(long, env = "X402_ADVISOR_MODEL_KEY_ENV")]
    pub model_key_env: Option<String>,
    /// Budget for the model step, repair retry included; then the engine's words stand. Keep it
    /// below the sidecar's inbound.upstream.timeout_ms.
    #[arg(long, env = "X402_ADVISOR_MODEL_TIMEOUT_MS", default_value_t = 2_500)]
    pub model_timeout_ms: u64,
    /// max_tokens per model call (above the schema's worst case).
    #[arg(long, default_value_t = 1_400)]
    pub model_max_tokens: u32,
    /// How to ask for JSON: json-schema (most servers), json-object (llama-cpp-python), prompt.
    #[arg(long, value_enum, default_value = "json-schema")]
    pub model_format: StructuredFormat,
    /// JSON object merged into each request body, e.g. '{"cache_prompt": false}' for llama.cpp.
    #[arg(long)]
    pub model_extra: Option<String>,
    /// Consecutive model failures that open the circuit breaker.
    #[arg(long, default_value_t = 3)]
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before one probe call.
    #[arg(long, default_value_t = 30)]
    pub breaker_open_secs: u64,
    /// Market data for Hyperliquid accounts: base URL of Hyperliquid's public info endpoint
    /// (`https://api.hyperliquid.xyz`; the advisor POSTs to `<url>/info`). Off when not given:
    /// the advice then comes from the request alone, reproducible and without outbound calls.
    #[arg(long, env = "X402_ADVISOR_HYPERLIQUID_URL")]
    pub hyperliquid_url: Option<String>,
    /// Market data for Aster accounts: base URL of Aster's public futures REST
    /// (`https://fapi.asterdex.com`; `<url>/fapi/v1/premiumIndex` and `/fapi/v1/klines`). Off
    /// when not given.
    #[arg(long, env = "X402_ADVISOR_ASTER_URL")]
    pub aster_url: Option<String>,
    /// Timeout of one venue request, and the budget of all of one advice's market fetches;
    /// past it the advice is made without market data and says so.
    #[arg(long, env = "X402_ADVISOR_MARKET_TIMEOUT_MS", default_value_t = 1_000)]
    pub market_timeout_ms: u64,
    /// How long a venue answer is reused: a burst of paid calls makes one venue request per
    /// symbol and interval.
    #[arg(long, env = "X402_ADVISOR_MARKET_CACHE_MS", default_value_t = 5_000)]
    pub market_cache_ms: u64,
    /// Candle interval for volatility (ATR) and trend (EMA): 15m, 1h, 4h, 1d, …
    #[arg(long, default_value = "1h")]
    pub candle_interval: String,
    /// Consecutive failed venue requests that open that venue's breaker (then the advice is
    /// made without market data until a probe succeeds).
    #[arg(long, default_value_t = 3)]
    pub market_breaker_failures: u32,
    /// Seconds a venue's breaker stays open before one probe request.
    #[arg(long, default_value_t = 30)]
    pub market_breaker_open_secs: u64,
}

/// Candles fetched per symbol (ATR(14) and EMA 21 need at least 22).
pub const CANDLES: usize = 30;

impl AdvisorArgs {
    /// The market data these flags describe; `None` when no venue URL is given.
    pub fn market(&self) -> Result<Option<Market>, AdvisorError> {
        if self.hyperliquid_url.is_none() && self.aster_url.is_none() {
            return Ok(None);
        }
        let timeout = Duration::from_millis(self.market_timeout_ms.max(1));
        let cfg = |flag: &'static str, url: &str| -> Result<ClientConfig, AdvisorError> {
            if !matches!(
                reqwest::Url::parse(url)
                    .map(|u| u.scheme().to_string())
                    .as_deref(),
                Ok("http" | "https")
            ) {
                return Err(AdvisorError::MarketUrl(flag, url.to_string()));
            }
            let mut c = ClientConfig::new(url);
            c.timeout = timeout;
            c.cache_ttl = Duration::from_millis(self.market_cache_ms);
            c.breaker_failures = self.market_breaker_failures;
            c.breaker_open = Duration::from_secs(self.market_breaker_open_secs);
            Ok(c)
        };
        let hyperliquid = match &self.hyperliquid_url {
            Some(u) => Some(Arc::new(market::hyperliquid::Hyperliquid::new(&cfg(
                "hyperliquid-url",
                u,
            )?)?) as Arc<dyn MarketData>),
            None => None,
        };
        let aster =
            match &self.aster_url {
                Some(u) => Some(Arc::new(market::aster::Aster::new(&cfg("aster-url", u)?)?)
                    as Arc<dyn MarketData>),
                None => None,
            };
        Ok(Some(Market {
            hyperliquid,
            aster,
            interval: self.candle_interval.clone(),
            candles: CANDLES,
            budget: timeout,
        }))
    }

    /// The model configuration these flags describe, reading the key from the environment.
    pub(crate) fn model_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ModelConfig>, AdvisorError> {
        let Some(url) = &self.model_url else {
            return Ok(None);
        };
        if !matches!(
            reqwest::Url::parse(url)
                .map(|u| u.scheme().to_string())
                .as_deref(),
            Ok("http" | "https")
        ) {
            return Err(AdvisorError::ModelUrl(url.clone()));
        }
        let mut cfg = ModelConfig::new(url.clone(), self.model.clone());
        if let Some(var) = &self.model_key_env {
            cfg.api_key = Some(
                env(var)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| AdvisorError::NoApiKey(var.clone()))?,
            );
        }
        cfg.timeout = Duration::from_millis(self.model_timeout_ms.max(1));
        cfg.max_tokens = self.model_max_tokens;
        cfg.format = self.model_format;
        cfg.breaker_failures = self.breaker_failures;
        cfg.breaker_open = Duration::from_secs(self.breaker_open_secs);
        if let Some(extra) = &self.model_extra {
            match serde_json::from_str::<Value>(extra) {
                Ok(Value::Object(m)) => cfg.extra = m,
                Ok(other) => return Err(AdvisorError::Extra(format!("got {other}"))),
                Err(e) => return Err(AdvisorError::Extra(e.to_string())),
            }
        }
        Ok(Some(cfg))
    }
}

/// Run `x402-sidecar advisor` until the process is stopped.
pub(crate) async fn run(args: AdvisorArgs) -> Result<(), AdvisorError> {
    let env = |k: &str| std::env::var(k).ok();
    let secret = env(&args.secret_env)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AdvisorError::NoSecret(args.secret_env.clone()))?;
    if secret.len() < MIN_SECRET_LEN {
        return Err(AdvisorError::ShortSecret(args.secret_env.clone()));
    }
    let model = args.model_config(&env)?.map(ModelClient::new).transpose()?;
    let model_desc = model
        .as_ref()
        .map(|m| format!("{} at {}", m.config().model, m.config().base_url));
    let market = args.market()?;
    let market_desc = format!(
        "hyperliquid {}, aster {}",
        args.hyperliquid_url.as_deref().unwrap_or("off"),
        args.aster_url.as_deref().unwrap_or("off")
    );
    let mut advisor = Advisor::new(secret, model)?;
    if let Some(m) = market {
        advisor = advisor.with_market(m);
    }
    let advisor = Arc::new(advisor);
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| AdvisorError::Listen(args.listen.clone(), e))?;
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if addr.is_some_and(|a| !a.ip().is_loopback()) {
        warn!(listen = %args.listen, "the advisor listens beyond loopback; only the shared secret protects it");
    }
    info!(
        listen = %args.listen,
        engine = ENGINE_ID,
        model = model_desc.as_deref().unwrap_or("none (rules only)"),
        market = %market_desc,
        "strategy advisor listening"
    );
    serve(listener, advisor).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::contract::SEED_EXAMPLE;

    const SECRET: &str = "0123456789abcdef-secret";

    fn post(body: &str, secret: Option<&str>) -> Request {
        let mut headers = vec![("X-Request-Id".to_string(), "req_1".to_string())];
        if let Some(s) = secret {
            headers.push((SECRET_HEADER.to_string(), s.to_string()));
        }
        Request {
            method: "POST".into(),
            path: "/x402".into(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn body(r: Response) -> (u16, Value) {
        match r {
            Response::Body(s, b) => (s, serde_json::from_str(&b).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn only_the_sidecar_gets_advice() {
        let a = Advisor::rules_only(SECRET).unwrap();
        assert_eq!(body(a.handle(post(SEED_EXAMPLE, None)).await).0, 401);
        assert_eq!(
            body(
                a.handle(post(SEED_EXAMPLE, Some("0123456789abcdef-secreT")))
                    .await
            )
            .0,
            401
        );
        let (status, v) = body(a.handle(post(SEED_EXAMPLE, Some(SECRET))).await);
        assert_eq!(status, 200);
        assert_eq!(v["metadata"]["model"], "rules-v1");
        assert_eq!(v["metadata"]["requestId"], "req_1");
        assert!(
            v["metadata"]["modelCallId"]
                .as_str()
                .unwrap()
                .starts_with("mc_")
        );
        assert_eq!(v["strategy"]["actions"][0]["action"], "reduce");
        let (status, v) = body(a.handle(post("{}", Some(SECRET))).await);
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("invalid_request"))
        );
        assert!(Advisor::rules_only("short").is_err());
    }

    #[test]
    fn model_flags_become_a_configuration() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: AdvisorArgs,
        }
        let t = T::parse_from([
            "t",
            "--model-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "smollm2",
            "--model-key-env",
            "K",
            "--model-extra",
            r#"{"cache_prompt": false}"#,
        ]);
        let cfg =
            t.a.model_config(&|k| (k == "K").then(|| "sk-1".to_string()))
                .unwrap()
                .unwrap();
        assert_eq!(cfg.api_key.as_deref(), Some("sk-1"));
        assert_eq!(cfg.extra["cache_prompt"], false);
        assert!(matches!(
            t.a.model_config(&|_| None),
            Err(AdvisorError::NoApiKey(_))
        ));
    }
}
