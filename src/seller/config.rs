//! The seller's sections of `sidecar.yaml`: `inbound:` (the paywall and its routes) and
//! `facilitators:` (who settles each network, in [`settlement`]).
//!
//! `InboundConfig::resolve` gives a complete [`Inbound`]: every address, URL, secret and
//! price is parsed and checked here, once, so the paywall is built from plain values and never
//! reads the YAML again. Problems carry the path of the field at fault
//! (`inbound.routes[0].accepts[0].price`).

pub mod settlement;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::pricing::{Amounts, Pricing};
use crate::http::limit::LimitConfig;
use crate::util::{Problem, Secret};
use crate::x402::address::{self, AddressError};
use crate::x402::matching::Offer;
use crate::x402::money::{self, PriceSpec};
use crate::x402::networks;
use alloy_primitives::U256;

pub use settlement::{BackendConfig, BackendSpecs, RemoteFacilitator};

/// The `inbound:` section as written: the public paywall. Off unless enabled.
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
    /// Rate limits (on by default): unpaid calls per client IP, signed payments per payer.
    #[serde(default)]
    pub limits: InboundLimits,
}

/// `inbound.limits:` the paywall's rate limits. On by default, generous for honest clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundLimits {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls to a paid route without a payment (the 402 path), per client IP (behind
    /// `trusted_proxies`, the forwarded address).
    #[serde(default = "default_per_ip")]
    pub per_ip: LimitConfig,
    /// Signed payments per payer, counted after the signature check and before any claim or
    /// chain read.
    #[serde(default = "default_per_payer")]
    pub per_payer: LimitConfig,
    /// Payments refused on chain (no funds, nonce used, …) per client IP: past it, that
    /// address's payments are refused before any chain read, so a flood of payments signed by
    /// many unfunded keys cannot drain the RPC. Honest clients are rarely refused at all.
    #[serde(default = "default_refused_per_ip")]
    pub refused_per_ip: LimitConfig,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits {
            enabled: true,
            per_ip: default_per_ip(),
            per_payer: default_per_payer(),
            refused_per_ip: default_refused_per_ip(),
        }
    }
}

fn default_per_ip() -> LimitConfig {
    LimitConfig::new(1024, 10)
}
fn default_per_payer() -> LimitConfig {
    LimitConfig::new(256, 10)
}
fn default_refused_per_ip() -> LimitConfig {
    LimitConfig::new(32, 10)
}

impl InboundLimits {
    /// The limits to enforce, `None` when off; bad values are reported under `inbound.limits`.
    fn resolve(&self, problems: &mut Vec<Problem>) -> Option<InboundLimits> {
        self.per_ip.check("inbound.limits.per_ip", problems);
        self.per_payer.check("inbound.limits.per_payer", problems);
        self.refused_per_ip
            .check("inbound.limits.refused_per_ip", problems);
        self.enabled.then_some(*self)
    }
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
            limits: InboundLimits::default(),
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
    /// The shape an upstream answer must have to be charged: `strategy` (the strategy answer
    /// contract; the default when `strategy_request` is true), `json` (a JSON object; the
    /// default otherwise) or `any` (any JSON document).
    #[serde(default)]
    pub answer: Option<String>,
    /// Charge for the labelled stand-in answer (`metadata.model: standin-fixed-v0`) too. Off:
    /// a placeholder is never sold unless a route says so.
    #[serde(default)]
    pub charge_standin: bool,
    #[serde(default)]
    pub accepts: Vec<AcceptConfig>,
    /// A pricing policy: the price computed from each request (see [`super::pricing`]).
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
    /// When the payment is settled: `after` the upstream answered (the default: nobody pays
    /// for an answer that failed) or `before` it is asked (an expensive model is paid first).
    #[serde(default)]
    pub settle: Option<String>,
}

/// `pricing:` of a route: charges added to each accept's own price, by what the request asks.
/// Prices are written like `price` (`"$0.001"`, or atomic units).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Added for each position in `account.positions`.
    #[serde(default)]
    pub per_position: Option<PriceSpec>,
    /// Added for each symbol asked or held (`symbols` and the positions' symbols, each once).
    #[serde(default)]
    pub per_symbol: Option<PriceSpec>,
    /// Model tiers a buyer chooses with `X-Strategy-Tier` (or a `tier` field in the body), each
    /// with what it adds; a request naming none pays the cheapest.
    #[serde(default)]
    pub tiers: std::collections::BTreeMap<String, PriceSpec>,
    /// Added when `account.platform` is this one (`hyperliquid`, `aster`).
    #[serde(default)]
    pub platforms: std::collections::BTreeMap<String, PriceSpec>,
    /// Added for each of these symbols the request asks or holds.
    #[serde(default)]
    pub symbols: std::collections::BTreeMap<String, PriceSpec>,
    /// No request pays less than this, or more than `cap`.
    #[serde(default)]
    pub floor: Option<PriceSpec>,
    #[serde(default)]
    pub cap: Option<PriceSpec>,
}

/// What an upstream answer must be for the route to charge for it (`answer:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerShape {
    /// The strategy answer contract: a `strategy` with a summary, steps, well-formed actions
    /// and risk notes ([`crate::advisor::answer`]).
    Strategy,
    /// A JSON object.
    Json,
    /// Any JSON document.
    Any,
}

impl AnswerShape {
    /// The word used in `sidecar.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            AnswerShape::Strategy => "strategy",
            AnswerShape::Json => "json",
            AnswerShape::Any => "any",
        }
    }

    fn parse(text: &str) -> Option<AnswerShape> {
        [AnswerShape::Strategy, AnswerShape::Json, AnswerShape::Any]
            .into_iter()
            .find(|a| a.name() == text.trim())
    }
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

/// The largest body the paywall buffers (its replay buffer).
const MAX_BODY_LIMIT: usize = 64 * 1024;

/// A route ready to serve.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub description: String,
    pub strategy_request: bool,
    /// What an upstream answer must be to be charged.
    pub answer: AnswerShape,
    /// Whether the labelled stand-in answer may be charged.
    pub charge_standin: bool,
    /// Empty for a free route.
    pub offers: Vec<Offer>,
    /// The pricing policy, when the price depends on the request.
    pub pricing: Option<Pricing>,
    /// `settle: before`: settle, then forward.
    pub settle_first: bool,
}

impl Route {
    /// `"POST /x402"`: the route's identity inside challenges.
    pub fn id(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// `check-config` lines: the route is free, or one line per way to pay it.
    pub(crate) fn describe(&self) -> Vec<String> {
        if self.offers.is_empty() {
            return vec![format!("{} (free)", self.id())];
        }
        let mut lines: Vec<String> = self
            .offers
            .iter()
            .map(|o| {
                format!(
                    "{} costs {} ({} atomic units) of {} on {}, paid to {}, settled by {}",
                    self.id(),
                    money::format_decimal(o.amount, o.decimals),
                    o.amount,
                    o.asset,
                    o.network,
                    o.pay_to,
                    o.facilitator
                )
            })
            .collect();
        lines.push(format!(
            "{} charges only for a `{}` answer{}",
            self.id(),
            self.answer.name(),
            if self.charge_standin {
                ", the labelled stand-in included"
            } else {
                ""
            }
        ));
        lines
    }
}

/// The upstream strategy endpoint, checked.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// An http(s) URL with a host.
    pub url: reqwest::Url,
    /// The URL as written (for the summary and the logs).
    pub text: String,
    /// More than 0.
    pub timeout: Duration,
    /// The value of `secret_env`, sent in `X-Sidecar-Secret` on paid calls.
    pub secret: Option<Secret>,
}

/// Everything the paywall serves with: `inbound:` with `enabled: true`, resolved, and the
/// settlement of its networks.
#[derive(Debug, Clone)]
pub struct Seller {
    /// An address like `0.0.0.0:8402` (checked), kept as written for the listener and the logs.
    pub listen: String,
    pub upstream: Upstream,
    pub unknown_routes: UnknownRoutes,
    /// 1–65536 bytes.
    pub max_body: usize,
    /// At least 16 characters; `None`: a random key per process.
    pub challenge_secret: Option<Secret>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    pub disclaimer: String,
    pub routes: Vec<Route>,
    pub settlement: BackendSpecs,
    /// `None`: `inbound.limits.enabled: false`.
    pub limits: Option<InboundLimits>,
}

/// The `inbound:` section, resolved.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// `enabled: false`: the routes are still checked (a wrong one is refused either way) and
    /// shown by `check-config`, but nothing is served.
    Off {
        routes: Vec<Route>,
    },
    On(Box<Seller>),
}

impl Inbound {
    /// The paywall to serve, if enabled.
    pub fn seller(&self) -> Option<&Seller> {
        match self {
            Inbound::Off { .. } => None,
            Inbound::On(s) => Some(s),
        }
    }

    pub fn routes(&self) -> &[Route] {
        match self {
            Inbound::Off { routes } => routes,
            Inbound::On(s) => &s.routes,
        }
    }

    /// `check-config` lines: the section, then each route.
    pub(crate) fn describe(&self) -> Vec<String> {
        let head = match self.seller() {
            Some(s) => format!(
                "inbound: enabled on {} → {}; rate limits: {}",
                s.listen,
                s.upstream.text,
                match &s.limits {
                    Some(l) => format!(
                        "{} unpaid calls per IP, {} payments per payer",
                        l.per_ip.describe(),
                        l.per_payer.describe()
                    ),
                    None => "off".into(),
                }
            ),
            None => "inbound: disabled".into(),
        };
        std::iter::once(head)
            .chain(self.routes().iter().flat_map(Route::describe))
            .collect()
    }
}

/// The checked values of an enabled section, before its routes.
struct Serving {
    listen: Option<String>,
    upstream: Option<Upstream>,
    trusted_proxies: Vec<IpAddr>,
}

impl InboundConfig {
    /// Check the section; `None` when a problem was found (each one is in `problems`).
    /// `settlement` is the resolved `facilitators:` section the routes' networks need.
    pub(crate) fn resolve(
        &self,
        settlement: &BackendSpecs,
        problems: &mut Vec<Problem>,
    ) -> Option<Inbound> {
        let before = problems.len();
        let serving = self.enabled.then(|| self.serving(problems));
        let limits = self.limits.resolve(problems);
        let routes: Vec<Route> = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(i, r, settlement, problems))
            .collect();
        if problems.len() > before {
            return None;
        }
        let Some(serving) = serving else {
            return Some(Inbound::Off { routes });
        };
        Some(Inbound::On(Box::new(Seller {
            listen: serving.listen?,
            upstream: serving.upstream?,
            unknown_routes: self.unknown_routes,
            max_body: self.max_body_bytes,
            challenge_secret: self.challenge_secret.clone().map(Secret::new),
            trusted_proxies: serving.trusted_proxies,
            disclaimer: self.disclaimer.clone(),
            routes,
            settlement: settlement.clone(),
            limits,
        })))
    }

    /// The checks of an enabled section: addresses, upstream, limits, secrets.
    fn serving(&self, problems: &mut Vec<Problem>) -> Serving {
        let mut p = |path: &str, message: String| {
            problems.push(Problem {
                path: path.into(),
                message,
            })
        };
        let listen = (self.listen.parse::<SocketAddr>().is_ok()).then(|| self.listen.clone());
        if listen.is_none() {
            p(
                "inbound.listen",
                "is not an address like 0.0.0.0:8402".into(),
            );
        }
        let upstream = self.upstream.resolve(&mut p);
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            p(
                "inbound.max_body_bytes",
                "must be between 1 and 65536 (the proxy's replay buffer)".into(),
            );
        }
        if self.routes.is_empty() {
            p(
                "inbound.routes",
                "inbound is enabled but no route is configured; add one such as `POST /x402`"
                    .into(),
            );
        }
        let mut trusted_proxies = Vec::new();
        for (i, t) in self.trusted_proxies.iter().enumerate() {
            match t.parse() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => p(
                    &format!("inbound.trusted_proxies[{i}]"),
                    "is not an IP address".into(),
                ),
            }
        }
        if matches!(&self.challenge_secret, Some(s) if s.len() < 16) {
            p(
                "inbound.challenge_secret",
                "use at least 16 characters".into(),
            );
        }
        Serving {
            listen,
            upstream,
            trusted_proxies,
        }
    }

    /// One route: method, path, not twice, and each way to pay it.
    fn route(
        &self,
        ri: usize,
        r: &RouteConfig,
        settlement: &BackendSpecs,
        problems: &mut Vec<Problem>,
    ) -> Route {
        let at = format!("inbound.routes[{ri}]");
        let mut p = |path: String, message: String| problems.push(Problem { path, message });
        let method = r.method.to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            p(
                format!("{at}.method"),
                "is not an HTTP method (GET, POST, PUT, PATCH or DELETE)".into(),
            );
        }
        if !r.path.starts_with('/') {
            p(format!("{at}.path"), "must start with /".into());
        }
        if self.routes[..ri]
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
        let default_answer = if r.strategy_request {
            AnswerShape::Strategy
        } else {
            AnswerShape::Json
        };
        let answer = match r.answer.as_deref() {
            None => default_answer,
            Some(text) => AnswerShape::parse(text).unwrap_or_else(|| {
                p(
                    format!("{at}.answer"),
                    "must be `strategy` (the strategy answer contract), `json` (a JSON object) or `any` (any JSON document)".into(),
                );
                default_answer
            }),
        };
        let offers = r
            .accepts
            .iter()
            .enumerate()
            .filter_map(|(ai, a)| a.offer(&format!("{at}.accepts[{ai}]"), r, settlement, problems))
            .collect::<Vec<Offer>>();
        // Tiers must differ: a payment names the one it pays by its terms.
        if offers.len() == r.accepts.len() {
            for (j, o) in offers.iter().enumerate() {
                if let Some(i) = offers[..j]
                    .iter()
                    .position(|e| e.base_requirement() == o.base_requirement())
                {
                    problems.push(Problem {
                        path: format!("{at}.accepts[{j}]"),
                        message: format!("offers the same terms as accepts[{i}] (network, asset, pay_to, price, window, domain): remove one, or make the tiers differ"),
                    });
                }
            }
        }
        let settle_first = match r.settle.as_deref().map(str::trim) {
            None | Some("after") => false,
            Some("before") if r.accepts.is_empty() => {
                problems.push(Problem {
                    path: format!("{at}.settle"),
                    message: "a free route has nothing to settle: remove `settle`, or add accepts"
                        .into(),
                });
                false
            }
            Some("before") => true,
            Some(_) => {
                problems.push(Problem {
                    path: format!("{at}.settle"),
                    message: "must be `after` (settle once the upstream answered, the default) or `before` (settle, then ask the upstream)".into(),
                });
                false
            }
        };
        let pricing = r
            .pricing
            .as_ref()
            .and_then(|pc| pricing(&format!("{at}.pricing"), pc, r, &offers, problems));
        Route {
            method,
            path: r.path.clone(),
            description: r.description.clone(),
            strategy_request: r.strategy_request,
            answer,
            charge_standin: r.charge_standin,
            offers,
            pricing,
            settle_first,
        }
    }
}

/// A route's checked pricing policy: each charge in each accept's units.
fn pricing(
    at: &str,
    pc: &PricingConfig,
    r: &RouteConfig,
    offers: &[Offer],
    problems: &mut Vec<Problem>,
) -> Option<Pricing> {
    let before = problems.len();
    let mut p = |path: String, message: String| problems.push(Problem { path, message });
    if r.accepts.is_empty() {
        p(
            at.to_string(),
            "a pricing policy needs a paid route: add an accepts entry".into(),
        );
        return None;
    }
    let reads_request = pc.per_position.is_some()
        || pc.per_symbol.is_some()
        || !pc.platforms.is_empty()
        || !pc.symbols.is_empty();
    if reads_request && !r.strategy_request {
        p(
            at.to_string(),
            "per_position, per_symbol, platforms and symbols price a StrategyRequest: they need strategy_request: true (tiers, floor and cap work on any route)".into(),
        );
    }
    for name in pc.platforms.keys() {
        if !matches!(name.as_str(), "hyperliquid" | "aster") {
            p(
                format!("{at}.platforms.{name}"),
                "is not a platform: use hyperliquid or aster".into(),
            );
        }
    }
    for name in pc.tiers.keys() {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-_.".contains(&b));
        if !ok {
            p(
                format!("{at}.tiers.{name}"),
                "a tier name is 1 to 32 letters, digits or + - _ . (it is sent in a header)".into(),
            );
        }
    }
    let mut per_offer = Vec::with_capacity(offers.len());
    for (j, o) in offers.iter().enumerate() {
        let d = o.decimals;
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut one = |key: String, spec: &PriceSpec| -> U256 {
            spec.parse(d).unwrap_or_else(|e| {
                bad.push((
                    format!("{at}.{key}"),
                    format!("{e} (for accepts[{j}], {d} decimals)"),
                ));
                U256::ZERO
            })
        };
        let per_position = pc
            .per_position
            .as_ref()
            .map_or(U256::ZERO, |v| one("per_position".into(), v));
        let per_symbol = pc
            .per_symbol
            .as_ref()
            .map_or(U256::ZERO, |v| one("per_symbol".into(), v));
        let floor = pc.floor.as_ref().map(|v| one("floor".into(), v));
        let cap = pc.cap.as_ref().map(|v| one("cap".into(), v));
        let tiers = pc
            .tiers
            .iter()
            .map(|(k, v)| one(format!("tiers.{k}"), v))
            .collect();
        let platforms = pc
            .platforms
            .iter()
            .map(|(k, v)| (k.clone(), one(format!("platforms.{k}"), v)))
            .collect();
        let symbols = pc
            .symbols
            .iter()
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_uppercase(),
                    one(format!("symbols.{k}"), v),
                )
            })
            .collect();
        for (path, message) in bad {
            p(path, message);
        }
        if let (Some(f), Some(c)) = (floor, cap)
            && f > c
        {
            p(
                format!("{at}.floor"),
                format!("is above the cap ({f} > {c} atomic units for accepts[{j}])"),
            );
        }
        if let Some(c) = cap
            && c < o.amount
        {
            p(
                format!("{at}.cap"),
                format!(
                    "is below accepts[{j}]'s own price ({c} < {} atomic units): every request would pay the cap",
                    o.amount
                ),
            );
        }
        if floor.is_some_and(|f| f.is_zero()) || cap.is_some_and(|c| c.is_zero()) {
            p(
                format!("{at}.floor"),
                "a floor or cap of 0 is not a price".into(),
            );
        }
        per_offer.push(Amounts {
            per_position,
            per_symbol,
            tiers,
            platforms,
            symbols,
            floor,
            cap,
        });
    }
    if problems.len() > before || offers.len() != r.accepts.len() {
        return None;
    }
    let tiers: Vec<String> = pc.tiers.keys().cloned().collect();
    let default_tier = per_offer.first().and_then(|a| {
        a.tiers
            .iter()
            .enumerate()
            .min_by_key(|(_, v)| **v)
            .map(|(i, _)| i)
    });
    Some(Pricing {
        tiers,
        default_tier,
        reads_request,
        per_offer,
    })
}

impl UpstreamConfig {
    /// URL, secret and timeout of an enabled section's upstream.
    fn resolve(&self, p: &mut impl FnMut(&str, String)) -> Option<Upstream> {
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                p(
                    "inbound.upstream.url",
                    "is not an http(s) URL with a host".into(),
                );
                None
            }
        };
        let secret = match &self.secret_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                _ => Err(var),
            },
        };
        if let Err(var) = &secret {
            p(
                "inbound.upstream.secret_env",
                format!(
                    "environment variable {var} is not set (it must hold the secret the upstream advisor expects)"
                ),
            );
        }
        if self.timeout_ms == 0 {
            p("inbound.upstream.timeout_ms", "must be more than 0".into());
        }
        Some(Upstream {
            url: url?,
            text: self.url.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            secret: secret.ok()?,
        })
    }
}

impl AcceptConfig {
    /// One way to pay `route`: network, token, recipient, price, domain, window, settlement.
    fn offer(
        &self,
        at: &str,
        route: &RouteConfig,
        settlement: &BackendSpecs,
        problems: &mut Vec<Problem>,
    ) -> Option<Offer> {
        let mut p = |field: &str, message: String| {
            problems.push(Problem {
                path: format!("{at}.{field}"),
                message,
            })
        };
        let chain_id = networks::chain_id(&self.network);
        if chain_id.is_none() {
            p(
                "network",
                "is not a CAIP-2 EVM network like `eip155:84532`".into(),
            );
        }
        let asset = address::parse(&self.asset);
        match &asset {
            Err(AddressError::Malformed) => p(
                "asset",
                "is not a token address (0x + 40 hex digits)".into(),
            ),
            Err(e) => p("asset", e.to_string()),
            Ok(_) => {}
        }
        let pay_to = address::parse(&self.pay_to);
        match &pay_to {
            Err(e) => p("pay_to", e.to_string()),
            Ok(addr) if addr.is_zero() => {
                p("pay_to", "the zero address would burn every payment".into())
            }
            Ok(_) => {}
        }
        let amount = self.price(route, &mut p);
        match &self.eip712 {
            None => p("eip712", "the token's EIP-712 domain is required: `eip712: {name: USDC, version: \"2\"}` (Base Sepolia USDC) or `{name: USD Coin, version: \"2\"}` (Base USDC)".into()),
            // Every payment would be refused: buyers cannot sign for an empty domain name.
            Some(e) if e.name.trim().is_empty() => p("eip712.name", "must name the token's EIP-712 domain (`USDC` on Base Sepolia, `USD Coin` on Base); it is empty".into()),
            Some(e) if e.version.trim().is_empty() => p("eip712.version", "must be the token's EIP-712 domain version (`2` for USDC); it is empty".into()),
            Some(_) => {}
        }
        if self.max_timeout_seconds < 10 || self.max_timeout_seconds > 3600 {
            p(
                "max_timeout_seconds",
                "must be between 10 and 3600 seconds".into(),
            );
        }
        let settled_by = settlement.settled_by(&self.network);
        if settled_by.is_none() && chain_id.is_some() && !settlement.declares(&self.network) {
            p(
                "network",
                format!(
                    "no facilitator settles {}: add one under `facilitators`",
                    self.network
                ),
            );
        }
        let e = self.eip712.as_ref()?;
        Some(Offer {
            scheme: "exact".into(),
            network: self.network.clone(),
            chain_id: chain_id?,
            asset: asset.ok()?,
            pay_to: pay_to.ok()?,
            amount: amount?,
            max_timeout_seconds: self.max_timeout_seconds,
            decimals: self.decimals,
            eip712_name: e.name.clone(),
            eip712_version: e.version.clone(),
            facilitator: settled_by?,
        })
    }

    /// This entry's price, or the route's, in atomic units; more than 0.
    fn price(
        &self,
        route: &RouteConfig,
        p: &mut impl FnMut(&str, String),
    ) -> Option<alloy_primitives::U256> {
        let Some(spec) = self.price.as_ref().or(route.price.as_ref()) else {
            p("price", "no price: set `price` on the route or on this accepts entry (\"$0.01\" or atomic units)".into());
            return None;
        };
        match spec.parse(self.decimals) {
            Ok(v) if v.is_zero() => {
                p(
                    "price",
                    "a price of 0 is not a paid route; remove `accepts` to make it free".into(),
                );
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                p("price", e.to_string());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

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
          pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
          eip712: { name: USDC, version: "2" }
facilitators:
  - network: eip155:84532
    rpc_url: http://127.0.0.1:8545
    settler: { key_env: X402_SELLER_CFG_TEST_SETTLER }
"#;

    /// The seller's two sections of a file, resolved as the aggregate does.
    fn resolve(text: &str) -> Result<Inbound, Vec<Problem>> {
        #[derive(Deserialize)]
        struct Sections {
            inbound: InboundConfig,
            facilitators: Vec<BackendConfig>,
        }
        // The settler key is read from the process environment by `KeySource::load`.
        // SAFETY: a test-only variable, always set to the same value.
        unsafe { std::env::set_var("X402_SELLER_CFG_TEST_SETTLER", DEV0) };
        let s: Sections = serde_yaml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let settlement = BackendSpecs::resolve(&s.facilitators, &mut problems);
        let inbound = s.inbound.resolve(&settlement, &mut problems);
        match inbound {
            Some(i) if problems.is_empty() => Ok(i),
            _ => Err(problems),
        }
    }

    #[test]
    fn a_complete_paid_route_resolves() {
        let r = resolve(GOOD).unwrap();
        let route = &r.routes()[0];
        let o = &route.offers[0];
        assert_eq!(o.amount, alloy_primitives::U256::from(10_000));
        assert_eq!(o.chain_id, 84532);
        assert_eq!(route.id(), "POST /x402");
        assert!(o.facilitator.starts_with("local:0x"));
        let seller = r.seller().expect("enabled");
        assert_eq!(seller.listen, "127.0.0.1:8402");
        assert_eq!(seller.upstream.text, "http://127.0.0.1:8500");
        assert_eq!(seller.max_body, 64 * 1024);
    }

    #[test]
    fn an_empty_eip712_name_or_version_is_refused_here_not_at_payment_time() {
        for (edit, path) in [
            (
                "name: \"\", version: \"2\"",
                "inbound.routes[0].accepts[0].eip712.name",
            ),
            (
                "name: USDC, version: \" \"",
                "inbound.routes[0].accepts[0].eip712.version",
            ),
        ] {
            let bad = GOOD.replace("name: USDC, version: \"2\"", edit);
            let probs = resolve(&bad).unwrap_err();
            assert!(probs.iter().any(|p| p.path == path), "{path}: {probs:#?}");
        }
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
        let probs = resolve(&bad).unwrap_err();
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
    fn rate_limits_are_on_by_default_and_bad_values_are_reported_with_their_path() {
        let r = resolve(GOOD).unwrap();
        let l = r.seller().unwrap().limits.expect("on by default");
        assert_eq!(l.per_ip, LimitConfig::new(1024, 10));
        let bad = GOOD.replace(
            "  routes:",
            "  limits: { per_ip: { requests: 0 }, per_payer: { requests: 5, window_secs: 0 } }\n  routes:",
        );
        let probs = resolve(&bad).unwrap_err();
        let paths: Vec<_> = probs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "inbound.limits.per_ip.requests",
                "inbound.limits.per_payer.window_secs"
            ],
            "{probs:#?}"
        );
        let off = GOOD.replace("  routes:", "  limits: { enabled: false }\n  routes:");
        assert!(resolve(&off).unwrap().seller().unwrap().limits.is_none());
    }

    #[test]
    fn a_route_declares_the_answer_it_charges_for() {
        let r = resolve(GOOD).unwrap();
        assert_eq!(
            r.routes()[0].answer,
            AnswerShape::Strategy,
            "strategy routes default to the contract"
        );
        assert!(
            !r.routes()[0].charge_standin,
            "the stand-in is not sold by default"
        );
        let json = GOOD.replace(
            "      price: \"$0.01\"",
            "      price: \"$0.01\"\n      answer: json\n      charge_standin: true",
        );
        let r = resolve(&json).unwrap();
        assert_eq!(r.routes()[0].answer, AnswerShape::Json);
        assert!(r.routes()[0].charge_standin);
        let plain = GOOD.replace(
            "      price: \"$0.01\"",
            "      price: \"$0.01\"\n      strategy_request: false",
        );
        assert_eq!(
            resolve(&plain).unwrap().routes()[0].answer,
            AnswerShape::Json
        );
        let bad = GOOD.replace(
            "      price: \"$0.01\"",
            "      price: \"$0.01\"\n      answer: 0xdeadbeefsecret",
        );
        let probs = resolve(&bad).unwrap_err();
        assert_eq!(probs[0].path, "inbound.routes[0].answer", "{probs:#?}");
        assert!(!probs[0].message.contains("deadbeef"), "{probs:#?}");
    }

    #[test]
    fn two_tiers_must_differ() {
        let tiers = GOOD.replace(
            "          eip712: { name: USDC, version: \"2\" }\n",
            "          eip712: { name: USDC, version: \"2\" }\n        - network: eip155:84532\n          asset: \"0x036CbD53842c5426634e7929541eC2318f3dCF7e\"\n          pay_to: \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\n          price: \"$0.05\"\n          eip712: { name: USDC, version: \"2\" }\n",
        );
        let r = resolve(&tiers).unwrap();
        assert_eq!(r.routes()[0].offers.len(), 2);
        let same = tiers.replace("          price: \"$0.05\"\n", "");
        let probs = resolve(&same).unwrap_err();
        assert_eq!(probs[0].path, "inbound.routes[0].accepts[1]", "{probs:#?}");
    }

    #[test]
    fn problems_name_the_field_not_the_value() {
        let key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let bad = GOOD.replace("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", key);
        let probs = resolve(&bad).unwrap_err();
        assert_eq!(
            probs[0].path, "inbound.routes[0].accepts[0].pay_to",
            "{probs:#?}"
        );
        assert!(!probs[0].message.contains(&key[..16]), "{probs:#?}");
    }

    #[test]
    fn a_disabled_paywall_still_checks_its_routes() {
        let off = GOOD.replace(
            "enabled: true\n  listen: 127.0.0.1:8402",
            "enabled: false\n  listen: nowhere",
        );
        let r = resolve(&off).unwrap();
        assert!(r.seller().is_none());
        assert_eq!(r.routes().len(), 1);
        let probs = resolve(&off.replace("/x402", "x402")).unwrap_err();
        assert_eq!(probs[0].path, "inbound.routes[0].path", "{probs:#?}");
    }
}
