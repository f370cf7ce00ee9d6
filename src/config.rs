//! `sidecar.yaml`: schema, `${ENV}` expansion, defaults (both modes off) and validation that
//! explains every problem in plain words, with the path of the field at fault.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use alloy_primitives::Address;
use serde::Deserialize;
use serde_yaml::Value;

use crate::evm::KeySource;
use crate::x402::matching::Offer;
use crate::x402::networks;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub inbound: InboundConfig,
    /// One local facilitator per network the routes accept.
    #[serde(default)]
    pub facilitators: Vec<FacilitatorConfig>,
    /// Replay-guard store: `memory` (one node) or `redis://host:port/db` (replicas).
    #[serde(default = "default_store")]
    pub store: String,
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener: /metrics, /healthz, /readyz.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The tamper-evident audit journal of paid requests.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The buyer side: the paying proxy roma-01 points its HTTP client at.
    #[serde(default)]
    pub outbound: crate::buyer::config::OutboundConfig,
    /// Optional export of the request spans to an OpenTelemetry collector.
    #[serde(default)]
    pub otlp: OtlpConfig,
    /// Serve the standard x402 facilitator API (/verify, /settle, /supported) for other
    /// resource servers, settling with the `local` entries of `facilitators`.
    #[serde(default)]
    pub facilitator: FacilitatorServerConfig,
}

/// The facilitator listener. Off unless enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilitatorServerConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_facilitator_listen")]
    pub listen: String,
}

impl Default for FacilitatorServerConfig {
    fn default() -> Self {
        FacilitatorServerConfig {
            enabled: false,
            listen: default_facilitator_listen(),
        }
    }
}

fn default_facilitator_listen() -> String {
    "127.0.0.1:8404".into()
}

/// OTLP/HTTP (protobuf) export of the spans: `paid_request` and its phases on the seller,
/// `buyer_call` and its seller attempts on the buyer. Off unless enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The collector's traces URL, used as is (OTLP/HTTP: `…:4318/v1/traces`).
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    /// `service.name` of the exported spans (tell replicas apart with `${HOSTNAME}` if needed).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Extra request headers, e.g. `authorization: Bearer ${OTLP_TOKEN}` for a hosted collector.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Share of new traces kept (0.0–1.0); a caller's sampled `traceparent` is always followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Longest wait for one export request.
    #[serde(default = "default_otlp_timeout")]
    pub timeout_ms: u64,
    /// Spans are sent in batches at most this often.
    #[serde(default = "default_otlp_delay")]
    pub batch_delay_ms: u64,
}

impl OtlpConfig {
    /// What is wrong with an enabled export section, as `(field, sentence)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => out.push((
                "endpoint",
                format!(
                    "`{}` is not an http(s) URL like http://collector:4318/v1/traces",
                    self.endpoint
                ),
            )),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.push(("sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        if self.timeout_ms == 0 {
            out.push(("timeout_ms", "must be at least 1".into()));
        }
        if self.batch_delay_ms == 0 {
            out.push(("batch_delay_ms", "must be at least 1".into()));
        }
        if self.service_name.trim().is_empty() {
            out.push(("service_name", "must not be empty".into()));
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                out.push(("headers", format!("`{k}` is not a valid HTTP header")));
            }
        }
        out
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: false,
            endpoint: default_otlp_endpoint(),
            service_name: default_service_name(),
            headers: BTreeMap::new(),
            sample_ratio: default_sample_ratio(),
            timeout_ms: default_otlp_timeout(),
            batch_delay_ms: default_otlp_delay(),
        }
    }
}

fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4318/v1/traces".into()
}
fn default_service_name() -> String {
    "x402-sidecar".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_otlp_timeout() -> u64 {
    3000
}
fn default_otlp_delay() -> u64 {
    1000
}

/// The admin listener (Prometheus metrics and health probes). Off unless enabled, so several
/// sidecars on one host do not fight over its port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9402".into()
}

/// Where the audit journal lives and how long it is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory of the day files (`audit-YYYY-MM-DD.jsonl`).
    #[serde(default = "default_audit_dir")]
    pub dir: std::path::PathBuf,
    /// Days kept; older day files are deleted (at least 90 is the requirement).
    #[serde(default = "default_retention")]
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: default_audit_dir(),
            retention_days: default_retention(),
        }
    }
}

fn default_audit_dir() -> std::path::PathBuf {
    "x402-audit".into()
}
fn default_retention() -> u64 {
    90
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads per service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// On SIGTERM, how long in-flight paid calls may take to finish.
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: default_threads(),
            grace_period_seconds: default_grace(),
        }
    }
}

/// The seller side: the public paywall.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// What to do with a request that matches no route: `reject` (404) or `proxy` (forward free).
    #[serde(default)]
    pub unknown_routes: UnknownRoutes,
    /// Request body cap in bytes (at most 65536).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Secret that signs the 402 challenge. Replicas must share it; random per process if unset.
    #[serde(default)]
    pub challenge_secret: Option<String>,
    /// Addresses of proxies in front of the sidecar whose `X-Forwarded-For` is believed
    /// when logging the caller; nobody else's is.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Added to every paid answer that lacks one.
    #[serde(default = "default_disclaimer")]
    pub disclaimer: String,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            enabled: false,
            listen: default_listen(),
            upstream: UpstreamConfig::default(),
            unknown_routes: UnknownRoutes::default(),
            max_body_bytes: default_max_body(),
            challenge_secret: None,
            trusted_proxies: Vec::new(),
            disclaimer: default_disclaimer(),
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownRoutes {
    #[default]
    Reject,
    Proxy,
}

/// The strategy endpoint behind the paywall.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default = "default_upstream")]
    pub url: String,
    #[serde(default = "default_upstream_timeout")]
    pub timeout_ms: u64,
    /// Environment variable holding a secret sent to the upstream in `X-Sidecar-Secret` on
    /// paid calls (the built-in advisor refuses calls without it; see `x402-sidecar advisor`).
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: default_upstream(),
            timeout_ms: default_upstream_timeout(),
            secret_env: None,
        }
    }
}

/// One protected (or free) route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub description: String,
    /// Price for every accept that sets none. A route with no price and no accepts is free.
    #[serde(default)]
    pub price: Option<PriceSpec>,
    /// Validate the body as a `StrategyRequest` before asking for payment.
    #[serde(default = "yes")]
    pub strategy_request: bool,
    #[serde(default)]
    pub accepts: Vec<AcceptConfig>,
}

/// One way to pay a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    /// CAIP-2 network, e.g. `eip155:84532`.
    pub network: String,
    /// Token contract address.
    pub asset: String,
    /// Seller's receiving address.
    pub pay_to: String,
    #[serde(default)]
    pub price: Option<PriceSpec>,
    #[serde(default = "default_decimals")]
    pub decimals: u8,
    /// The token's EIP-712 domain name and version (`USDC`/`2` on Base Sepolia, `USD Coin`/`2` on Base).
    pub eip712: Option<Eip712Config>,
    #[serde(default = "default_max_timeout")]
    pub max_timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eip712Config {
    pub name: String,
    pub version: String,
}

/// Who verifies and settles payments on one network: `local` (this sidecar, on chain, with
/// its settler key) or `http` (a facilitator server: `POST {url}/verify`, `POST {url}/settle`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilitatorConfig {
    pub network: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The chain's RPC. `http` kind: read only, to check what the facilitator reports and to
    /// reconcile a settlement whose answer was lost.
    pub rpc_url: String,
    /// `local` kind: settler key (pays gas): `key_env` or `keystore` + `password_env`/`password_file`.
    #[serde(default)]
    pub settler: KeySource,
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_ms: u64,
    /// `http` kind: the facilitator's base URL (e.g. `https://x402.org/facilitator`).
    #[serde(default)]
    pub url: Option<String>,
    /// `http` kind: extra request headers (e.g. `authorization: Bearer ${FACILITATOR_TOKEN}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `http` kind: longest wait for one `/verify` or `/settle` answer.
    #[serde(default = "default_facilitator_timeout")]
    pub timeout_ms: u64,
}

fn default_facilitator_timeout() -> u64 {
    15_000
}

fn default_store() -> String {
    "memory".into()
}
fn default_threads() -> usize {
    2
}
fn default_grace() -> u64 {
    30
}
fn default_listen() -> String {
    "0.0.0.0:8402".into()
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_disclaimer() -> String {
    "This is automated strategy information, not investment advice. Trading perpetual futures carries a high risk of loss; you alone are responsible for your trades.".into()
}
fn default_upstream() -> String {
    "http://127.0.0.1:8500".into()
}
fn default_upstream_timeout() -> u64 {
    4_000
}
fn default_method() -> String {
    "POST".into()
}
fn yes() -> bool {
    true
}
fn default_decimals() -> u8 {
    6
}
fn default_max_timeout() -> u64 {
    300
}
fn default_kind() -> String {
    "local".into()
}
fn default_receipt_timeout() -> u64 {
    30_000
}

pub use crate::util::Problem;
pub use crate::x402::money::PriceSpec;

/// A route ready to serve.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub description: String,
    pub strategy_request: bool,
    /// Empty for a free route.
    pub offers: Vec<Offer>,
}

impl Route {
    /// `"POST /x402"`: the route's identity inside challenges.
    pub fn id(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A facilitator ready to connect.
#[derive(Debug, Clone)]
pub struct Facilitator {
    pub network: String,
    pub chain_id: u64,
    pub rpc_url: String,
    pub settler: KeySource,
    pub settler_address: Address,
    pub receipt_timeout: Duration,
}

/// A facilitator reached over HTTP (`kind: http`).
#[derive(Clone)]
pub struct RemoteFacilitator {
    pub network: String,
    pub chain_id: u64,
    pub rpc_url: String,
    pub url: reqwest::Url,
    pub headers: Vec<(String, crate::util::Secret)>,
    pub timeout: Duration,
    pub receipt_timeout: Duration,
}

impl std::fmt::Debug for RemoteFacilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFacilitator")
            .field("network", &self.network)
            .field("url", &crate::util::redact_url(self.url.as_str()))
            .finish()
    }
}

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub raw: Config,
    pub routes: Vec<Route>,
    /// `kind: local` facilitators.
    pub facilitators: Vec<Facilitator>,
    /// `kind: http` facilitators.
    pub remote_facilitators: Vec<RemoteFacilitator>,
    /// Present when `outbound.enabled`.
    pub outbound: Option<crate::buyer::config::Outbound>,
}

/// Read a file, expand `${ENV}`, parse. Problems in the text come back as a list.
pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            path: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        }]
    })?;
    parse(&text, &|k| std::env::var(k).ok())
}

/// Parse YAML text, expanding `${VAR}` and `${VAR:-default}` inside string values.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<Problem>> {
    let mut v: Value = serde_yaml::from_str(text).map_err(|e| {
        vec![Problem {
            path: "sidecar.yaml".into(),
            message: format!("not valid YAML: {e}"),
        }]
    })?;
    if v.is_null() {
        v = Value::Mapping(Default::default());
    }
    let mut problems = Vec::new();
    expand(&mut v, "", env, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_yaml::from_value(v).map_err(|e| {
        vec![Problem {
            path: "sidecar.yaml".into(),
            message: e.to_string(),
        }]
    })
}

fn expand(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match v {
        Value::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let Some(end) = rest[start..].find('}') else {
                    problems.push(Problem {
                        path: path.into(),
                        message: "unclosed `${` in value".into(),
                    });
                    return;
                };
                let inner = &rest[start + 2..start + end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                match env(name)
                    .filter(|x| !x.is_empty())
                    .or(default.map(str::to_string))
                {
                    Some(val) => out.push_str(&val),
                    None => problems.push(Problem {
                        path: path.into(),
                        message: format!("environment variable {name} is not set"),
                    }),
                }
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                expand(val, &p, env, problems);
            }
        }
        Value::Sequence(s) => {
            for (i, val) in s.iter_mut().enumerate() {
                expand(val, &format!("{path}[{i}]"), env, problems);
            }
        }
        _ => {}
    }
}

impl Config {
    /// Check everything; on success return what the services need. Loads the settler keys,
    /// so a missing or refused key is reported here, not at the first paid call.
    pub fn resolve(&self) -> Result<Resolved, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut p = |path: String, message: String| problems.push(Problem { path, message });

        if !(self.store == "memory"
            || self.store.starts_with("redis://")
            || self.store.starts_with("rediss://"))
        {
            p(
                "store".into(),
                format!(
                    "`{}` is not a store: use `memory` or `redis://host:6379/0`",
                    self.store
                ),
            );
        }
        if self.admin.enabled && self.admin.listen.parse::<std::net::SocketAddr>().is_err() {
            p(
                "admin.listen".into(),
                format!(
                    "`{}` is not an address like 0.0.0.0:9402",
                    self.admin.listen
                ),
            );
        }
        if self.audit.enabled && self.audit.retention_days == 0 {
            p(
                "audit.retention_days".into(),
                "must be at least 1 (the requirement is 90 days or more)".into(),
            );
        }
        if self.server.threads == 0 {
            p("server.threads".into(), "must be at least 1".into());
        }
        if self.otlp.enabled {
            for (path, message) in self.otlp.problems() {
                p(format!("otlp.{path}"), message);
            }
        }

        let mut facilitators = Vec::new();
        let mut remote_facilitators = Vec::new();
        let mut fac_by_network: BTreeMap<String, String> = BTreeMap::new();
        for (i, f) in self.facilitators.iter().enumerate() {
            let at = format!("facilitators[{i}]");
            if f.kind != "local" && f.kind != "http" {
                p(
                    format!("{at}.kind"),
                    format!(
                        "`{}` is not a facilitator kind; use `local` or `http`",
                        f.kind
                    ),
                );
                continue;
            }
            let Some(chain_id) = networks::chain_id(&f.network) else {
                p(
                    format!("{at}.network"),
                    format!(
                        "`{}` is not a CAIP-2 EVM network like `eip155:84532`",
                        f.network
                    ),
                );
                continue;
            };
            if reqwest::Url::parse(&f.rpc_url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                p(
                    format!("{at}.rpc_url"),
                    format!("`{}` is not an http(s) URL", f.rpc_url),
                );
            }
            if fac_by_network.contains_key(&f.network) {
                p(
                    format!("{at}.network"),
                    format!(
                        "a second facilitator for {}; keep one per network",
                        f.network
                    ),
                );
            }
            if f.kind == "http" {
                let url = match f.url.as_deref().map(reqwest::Url::parse) {
                    Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(u)
                    }
                    Some(_) => {
                        p(
                            format!("{at}.url"),
                            "is not an http(s) URL like https://x402.org/facilitator".into(),
                        );
                        None
                    }
                    None => {
                        p(
                            format!("{at}.url"),
                            "`kind: http` needs the facilitator's base URL".into(),
                        );
                        None
                    }
                };
                if f.settler.is_configured() {
                    p(
                        format!("{at}.settler"),
                        "a remote facilitator settles with its own key: remove `settler`".into(),
                    );
                }
                if f.timeout_ms == 0 {
                    p(format!("{at}.timeout_ms"), "must be more than 0".into());
                }
                for (k, v) in &f.headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                        || http::HeaderValue::from_str(v).is_err()
                    {
                        p(
                            format!("{at}.headers"),
                            format!("`{k}` is not a valid HTTP header"),
                        );
                    }
                }
                if let Some(url) = url {
                    fac_by_network.insert(f.network.clone(), crate::util::redact_url(url.as_str()));
                    remote_facilitators.push(RemoteFacilitator {
                        network: f.network.clone(),
                        chain_id,
                        rpc_url: f.rpc_url.clone(),
                        url,
                        headers: f
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), crate::util::Secret::new(v.clone())))
                            .collect(),
                        timeout: Duration::from_millis(f.timeout_ms),
                        receipt_timeout: Duration::from_millis(f.receipt_timeout_ms),
                    });
                }
                continue;
            }
            if !f.settler.is_configured() {
                p(format!("{at}.settler"), "no settler key: set `key_env` (environment variable with the key) or `keystore` (encrypted file)".into());
                continue;
            }
            match f.settler.load(chain_id) {
                Ok(signer) => {
                    let address = signer.address();
                    fac_by_network.insert(f.network.clone(), format!("local:{address}"));
                    facilitators.push(Facilitator {
                        network: f.network.clone(),
                        chain_id,
                        rpc_url: f.rpc_url.clone(),
                        settler: f.settler.clone(),
                        settler_address: address,
                        receipt_timeout: Duration::from_millis(f.receipt_timeout_ms),
                    });
                }
                Err(e) => p(format!("{at}.settler"), e.to_string()),
            }
        }

        if self.facilitator.enabled {
            if self
                .facilitator
                .listen
                .parse::<std::net::SocketAddr>()
                .is_err()
            {
                p(
                    "facilitator.listen".into(),
                    format!(
                        "`{}` is not an address like 127.0.0.1:8404",
                        self.facilitator.listen
                    ),
                );
            }
            if !self.facilitators.iter().any(|f| f.kind == "local") {
                p(
                    "facilitator.enabled".into(),
                    "the facilitator service needs at least one `kind: local` entry under `facilitators` (network, rpc_url, settler) to verify and settle with".into(),
                );
            }
        }

        let ib = &self.inbound;
        let mut routes = Vec::new();
        if ib.enabled {
            if ib.listen.parse::<std::net::SocketAddr>().is_err() {
                p(
                    "inbound.listen".into(),
                    format!("`{}` is not an address like 0.0.0.0:8402", ib.listen),
                );
            }
            match reqwest::Url::parse(&ib.upstream.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => p(
                    "inbound.upstream.url".into(),
                    format!("`{}` is not an http(s) URL", ib.upstream.url),
                ),
            }
            if let Some(var) = &ib.upstream.secret_env
                && std::env::var(var).map_or(true, |v| v.is_empty())
            {
                p(
                    "inbound.upstream.secret_env".into(),
                    format!(
                        "environment variable {var} is not set (it must hold the secret the upstream advisor expects)"
                    ),
                );
            }
            if ib.upstream.timeout_ms == 0 {
                p(
                    "inbound.upstream.timeout_ms".into(),
                    "must be more than 0".into(),
                );
            }
            if ib.max_body_bytes == 0 || ib.max_body_bytes > 64 * 1024 {
                p(
                    "inbound.max_body_bytes".into(),
                    "must be between 1 and 65536 (the proxy's replay buffer)".into(),
                );
            }
            if ib.routes.is_empty() {
                p(
                    "inbound.routes".into(),
                    "inbound is enabled but no route is configured; add one such as `POST /x402`"
                        .into(),
                );
            }
            for (i, t) in ib.trusted_proxies.iter().enumerate() {
                if t.parse::<std::net::IpAddr>().is_err() {
                    p(
                        format!("inbound.trusted_proxies[{i}]"),
                        format!("`{t}` is not an IP address"),
                    );
                }
            }
            if matches!(&ib.challenge_secret, Some(s) if s.len() < 16) {
                p(
                    "inbound.challenge_secret".into(),
                    "use at least 16 characters".into(),
                );
            }
        }
        for (ri, r) in ib.routes.iter().enumerate() {
            let at = format!("inbound.routes[{ri}]");
            let method = r.method.to_ascii_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                p(
                    format!("{at}.method"),
                    format!("`{}` is not an HTTP method", r.method),
                );
            }
            if !r.path.starts_with('/') {
                p(
                    format!("{at}.path"),
                    format!("`{}` must start with /", r.path),
                );
            }
            if ib.routes[..ri]
                .iter()
                .any(|o| o.path == r.path && o.method.eq_ignore_ascii_case(&r.method))
            {
                p(
                    at.clone(),
                    format!("{method} {} is configured twice", r.path),
                );
            }
            if r.accepts.is_empty() && r.price.is_some() {
                p(format!("{at}.accepts"), "the route has a price but no way to pay it: add an accepts entry (network, asset, pay_to, eip712)".into());
            }
            let mut offers = Vec::new();
            for (ai, a) in r.accepts.iter().enumerate() {
                let at = format!("{at}.accepts[{ai}]");
                let chain_id = networks::chain_id(&a.network);
                if chain_id.is_none() {
                    p(
                        format!("{at}.network"),
                        format!(
                            "`{}` is not a CAIP-2 EVM network like `eip155:84532`",
                            a.network
                        ),
                    );
                }
                let asset = a.asset.parse::<Address>();
                if asset.is_err() {
                    p(
                        format!("{at}.asset"),
                        format!("`{}` is not a token address (0x + 40 hex digits)", a.asset),
                    );
                }
                let pay_to = a.pay_to.parse::<Address>();
                match &pay_to {
                    Err(_) => p(
                        format!("{at}.pay_to"),
                        format!("`{}` is not an address (0x + 40 hex digits)", a.pay_to),
                    ),
                    Ok(addr) if addr.is_zero() => p(
                        format!("{at}.pay_to"),
                        "the zero address would burn every payment".into(),
                    ),
                    Ok(_) => {}
                }
                let price = match a.price.as_ref().or(r.price.as_ref()) {
                    None => {
                        p(format!("{at}.price"), "no price: set `price` on the route or on this accepts entry (\"$0.01\" or atomic units)".into());
                        None
                    }
                    Some(spec) => match spec.parse(a.decimals) {
                        Ok(v) if v.is_zero() => {
                            p(format!("{at}.price"), "a price of 0 is not a paid route; remove `accepts` to make it free".into());
                            None
                        }
                        Ok(v) => Some(v),
                        Err(e) => {
                            p(format!("{at}.price"), e.to_string());
                            None
                        }
                    },
                };
                if a.eip712.is_none() {
                    p(format!("{at}.eip712"), "the token's EIP-712 domain is required: `eip712: {name: USDC, version: \"2\"}` (Base Sepolia USDC) or `{name: USD Coin, version: \"2\"}` (Base USDC)".into());
                }
                if a.max_timeout_seconds < 10 || a.max_timeout_seconds > 3600 {
                    p(
                        format!("{at}.max_timeout_seconds"),
                        "must be between 10 and 3600 seconds".into(),
                    );
                }
                let facilitator = fac_by_network.get(&a.network).cloned();
                if facilitator.is_none()
                    && chain_id.is_some()
                    && !self.facilitators.iter().any(|f| f.network == a.network)
                {
                    p(
                        format!("{at}.network"),
                        format!(
                            "no facilitator settles {}: add one under `facilitators`",
                            a.network
                        ),
                    );
                }
                if let (
                    Some(chain_id),
                    Ok(asset),
                    Ok(pay_to),
                    Some(amount),
                    Some(e),
                    Some(facilitator),
                ) = (
                    chain_id,
                    asset,
                    pay_to,
                    price,
                    a.eip712.as_ref(),
                    facilitator,
                ) {
                    offers.push(Offer {
                        scheme: "exact".into(),
                        network: a.network.clone(),
                        chain_id,
                        asset,
                        pay_to,
                        amount,
                        max_timeout_seconds: a.max_timeout_seconds,
                        decimals: a.decimals,
                        eip712_name: e.name.clone(),
                        eip712_version: e.version.clone(),
                        facilitator,
                    });
                }
            }
            routes.push(Route {
                method,
                path: r.path.clone(),
                description: r.description.clone(),
                strategy_request: r.strategy_request,
                offers,
            });
        }
        let outbound = self.outbound.resolve(&mut problems);
        if problems.is_empty() {
            Ok(Resolved {
                raw: self.clone(),
                routes,
                facilitators,
                remote_facilitators,
                outbound,
            })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn env(k: &str) -> Option<String> {
        // The settler key is read from the process environment by `KeySource::load`.
        // SAFETY: a test-only variable, always set to the same value.
        unsafe { std::env::set_var("X402_CFG_TEST_SETTLER", DEV0) };
        match k {
            "SETTLER" => Some(DEV0.into()),
            "PAY_TO" => Some("0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into()),
            _ => None,
        }
    }

    const GOOD: &str = r#"
inbound:
  enabled: true
  listen: 127.0.0.1:8402
  upstream: { url: "http://127.0.0.1:8500" }
  routes:
    - path: /x402
      price: "$0.01"
      accepts:
        - network: eip155:84532
          asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
          pay_to: "${PAY_TO}"
          eip712: { name: USDC, version: "2" }
facilitators:
  - network: eip155:84532
    rpc_url: http://127.0.0.1:8545
    settler: { key_env: X402_CFG_TEST_SETTLER }
"#;

    #[test]
    fn defaults_keep_everything_off() {
        let c = parse("", &env).unwrap();
        assert!(!c.inbound.enabled);
        assert_eq!(c.store, "memory");
        assert!(c.resolve().is_ok());
    }

    #[test]
    fn a_complete_paid_route_resolves() {
        let r = parse(GOOD, &env).unwrap().resolve().unwrap();
        let o = &r.routes[0].offers[0];
        assert_eq!(o.amount, alloy_primitives::U256::from(10_000));
        assert_eq!(o.chain_id, 84532);
        assert_eq!(r.routes[0].id(), "POST /x402");
        assert!(o.facilitator.starts_with("local:0x"));
    }

    #[test]
    fn missing_env_is_named() {
        let probs = parse(GOOD, &|_| None).unwrap_err();
        assert!(
            probs
                .iter()
                .any(|p| p.message.contains("PAY_TO") && p.path.contains("pay_to")),
            "{probs:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = GOOD
            .replace("\"$0.01\"", "\"$0.0000001\"")
            .replace(
                "eip712: { name: USDC, version: \"2\" }",
                "max_timeout_seconds: 5",
            )
            .replace("eip155:84532\n    rpc", "eip155:8453\n    rpc");
        let probs = parse(&bad, &env).unwrap().resolve().unwrap_err();
        let paths: Vec<_> = probs.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "inbound.routes[0].accepts[0].price",
            "inbound.routes[0].accepts[0].eip712",
            "inbound.routes[0].accepts[0].max_timeout_seconds",
            "facilitators[0].settler",
        ] {
            assert!(paths.contains(&want), "{want} missing from {probs:#?}");
        }
        // The dev key on Base mainnet is refused, and the sentence says why.
        assert!(probs.iter().any(|p| p.message.contains("development keys")));
    }

    #[test]
    fn the_facilitator_service_needs_a_local_facilitator_and_an_address() {
        let c = parse("facilitator: { enabled: true, listen: nowhere }\n", &env).unwrap();
        assert!(!Config::default().facilitator.enabled);
        assert_eq!(Config::default().facilitator.listen, "127.0.0.1:8404");
        let probs = c.resolve().unwrap_err();
        let paths: Vec<_> = probs.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"facilitator.listen"), "{probs:#?}");
        assert!(paths.contains(&"facilitator.enabled"), "{probs:#?}");
        let ok = format!(
            "{}facilitator: {{ enabled: true }}\n",
            GOOD.replace("enabled: true\n  listen", "enabled: false\n  listen")
        );
        let r = parse(&ok, &env).unwrap().resolve().unwrap();
        assert!(r.raw.facilitator.enabled);
        assert_eq!(r.facilitators.len(), 1);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = parse("inbound:\n  enable: true\n", &env).unwrap_err();
        assert!(e[0].message.contains("enable"), "{e:?}");
    }
}
