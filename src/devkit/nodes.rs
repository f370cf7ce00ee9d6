//! Typed builders for the `sidecar.yaml` of the dev kit's nodes: a seller ([`SellerNode`], the
//! inbound paywall and its settlement), a buyer ([`BuyerNode`], the outbound paying proxy and the
//! [`SellerEntry`]s it may pay) and a facilitator ([`FacilitatorNode`], the x402 facilitator
//! API). Each holds the fields its callers (tests, benches, `demo`) vary, starts from a devnet's
//! values, and renders YAML with [`yaml`](SellerNode::yaml).
//!
//! These are not the roles' own configuration types: they write the file a sidecar reads, so
//! what they produce goes through the same parsing and checks as any operator's file.

use std::path::PathBuf;

use alloy_primitives::Address;
use serde_yaml::{Mapping, Value};

use super::devnet::{self, Devnet};
use crate::x402::money::PriceSpec;

/// An insertion-ordered YAML mapping under construction.
struct Map(Mapping);

impl Map {
    fn new() -> Map {
        Map(Mapping::new())
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Map {
        self.0.insert(Value::from(key), value.into());
        self
    }

    fn maybe(self, key: &str, value: Option<impl Into<Value>>) -> Map {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Value {
        Value::Mapping(m.0)
    }
}

fn price(p: &PriceSpec) -> Value {
    match p {
        PriceSpec::Units(n) => Value::from(*n),
        PriceSpec::Text(t) => Value::from(t.as_str()),
    }
}

fn addr(a: Address) -> Value {
    Value::from(a.to_string())
}

fn listen(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn render(doc: Map) -> String {
    // A mapping of strings, numbers and booleans always serialises; should it ever not, the
    // sidecar refuses the file and says so.
    serde_yaml::to_string(&Value::from(doc))
        .unwrap_or_else(|e| format!("# the dev kit could not render this node: {e}\n"))
}

/// `server:`: pingora's worker threads and graceful-shutdown period.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub threads: u32,
    pub grace_period_seconds: u64,
}

impl Server {
    /// Two threads, one second of grace: what the tests and the benches run with.
    pub fn small() -> Server {
        Server {
            threads: 2,
            grace_period_seconds: 1,
        }
    }

    fn value(&self) -> Value {
        Map::new()
            .with("threads", self.threads)
            .with("grace_period_seconds", self.grace_period_seconds)
            .into()
    }
}

/// `otlp:`: span export over OTLP/HTTP.
#[derive(Debug, Clone)]
pub struct Otlp {
    pub endpoint: String,
    pub service_name: String,
    pub batch_delay_ms: u64,
}

impl Otlp {
    fn value(&self) -> Value {
        Map::new()
            .with("enabled", true)
            .with("endpoint", self.endpoint.as_str())
            .with("service_name", self.service_name.as_str())
            .with("batch_delay_ms", self.batch_delay_ms)
            .into()
    }
}

/// How one network's payments are settled: with a key of its own, or by a remote facilitator.
#[derive(Debug, Clone)]
pub enum SettledBy {
    /// `settler: { key_env }`: this node holds the settler key (in that variable).
    Key { key_env: String },
    /// `settlers: [{ key_env }, …]`: a pool of settler keys, one variable each.
    Pool { key_envs: Vec<String> },
    /// `kind: http`: a facilitator server at `url` verifies and settles.
    Remote { url: String, timeout_ms: u64 },
}

/// One entry of `facilitators:`: where a network's payments are checked and settled.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub network: String,
    pub rpc_url: String,
    pub by: SettledBy,
    pub receipt_timeout_ms: Option<u64>,
    /// `rpc_timeout_ms`: the deadline of one RPC call.
    pub rpc_timeout_ms: Option<u64>,
    /// `gas_floor_settlements`: `/readyz` wants this much gas per settler key.
    pub gas_floor_settlements: Option<u64>,
    /// `replace_after_ms`: a settlement not mined by then is replaced with higher fees.
    pub replace_after_ms: Option<u64>,
    /// `batch: { window_ms, max_items }`: batched settlement (off when `None`).
    pub batch: Option<(u64, usize)>,
}

impl Settlement {
    /// The devnet, settled with the key in `key_env`.
    pub fn with_key(net: &Devnet, key_env: &str) -> Settlement {
        Settlement {
            network: devnet::NETWORK.into(),
            rpc_url: net.rpc_url.clone(),
            by: SettledBy::Key {
                key_env: key_env.into(),
            },
            receipt_timeout_ms: None,
            rpc_timeout_ms: None,
            gas_floor_settlements: None,
            replace_after_ms: None,
            batch: None,
        }
    }

    fn value(&self) -> Value {
        let m = Map::new()
            .with("network", self.network.as_str())
            .with("rpc_url", self.rpc_url.as_str());
        let m = match &self.by {
            SettledBy::Key { key_env } => {
                m.with("settler", Map::new().with("key_env", key_env.as_str()))
            }
            SettledBy::Pool { key_envs } => m.with(
                "settlers",
                Value::Sequence(
                    key_envs
                        .iter()
                        .map(|k| Map::new().with("key_env", k.as_str()).into())
                        .collect(),
                ),
            ),
            SettledBy::Remote { url, timeout_ms } => m
                .with("kind", "http")
                .with("url", url.as_str())
                .with("timeout_ms", *timeout_ms),
        };
        m.maybe("receipt_timeout_ms", self.receipt_timeout_ms)
            .maybe("rpc_timeout_ms", self.rpc_timeout_ms)
            .maybe("gas_floor_settlements", self.gas_floor_settlements)
            .maybe("replace_after_ms", self.replace_after_ms)
            .maybe(
                "batch",
                self.batch.map(|(window_ms, max_items)| -> Value {
                    Map::new()
                        .with("window_ms", window_ms)
                        .with("max_items", max_items as u64)
                        .into()
                }),
            )
            .into()
    }
}

/// One more way to pay a seller node's route: its own price and payTo.
#[derive(Debug, Clone)]
pub struct Tier {
    pub price: PriceSpec,
    pub pay_to: Address,
}

/// A seller node: the inbound paywall in front of a strategy endpoint, with one paid route
/// (`POST /x402`, "Trading strategy advice") on the devnet's USDC and, if asked, a free one.
#[derive(Debug, Clone)]
pub struct SellerNode {
    /// The paywall's port on 127.0.0.1.
    pub listen: u16,
    /// The strategy endpoint.
    pub upstream: String,
    pub upstream_timeout_ms: u64,
    /// `inbound.upstream.secret_env`: the variable holding the upstream's shared secret.
    pub upstream_secret_env: Option<String>,
    /// `inbound.challenge_secret` (a fresh one per process when `None`).
    pub challenge_secret: Option<String>,
    pub price: PriceSpec,
    pub network: String,
    pub asset: Address,
    pub pay_to: Address,
    pub max_timeout_seconds: Option<u64>,
    /// Further ways to pay the route on the same network and asset: price tiers (each its own
    /// `accepts` entry with its price and payTo).
    pub tiers: Vec<Tier>,
    /// `answer:` of the paid route (`strategy`, `json`, `any`; the sidecar's default if `None`).
    pub answer: Option<String>,
    /// `charge_standin:` of the paid route. True by default here: the dev kit's test upstream
    /// is the labelled stand-in.
    pub charge_standin: bool,
    /// Also a free route, `GET /free`.
    pub free_route: bool,
    pub settlement: Settlement,
    /// `store:`: `memory` or a Redis URL.
    pub store: String,
    pub server: Option<Server>,
    /// `admin:` on this port (metrics, health, readiness).
    pub admin: Option<u16>,
    /// `audit: { enabled: false }` when false.
    pub audit: bool,
    /// `audit.dir` (the sidecar's default, relative to its working directory, when `None`).
    pub audit_dir: Option<String>,
    /// `audit.spill_dir` (in memory only when `None`).
    pub audit_spill_dir: Option<String>,
    pub otlp: Option<Otlp>,
    /// `inbound.limits.per_ip` and `.per_payer` as (requests, window seconds); the sidecar's
    /// defaults when `None`.
    pub per_ip: Option<(u32, u64)>,
    pub per_payer: Option<(u32, u64)>,
    /// `inbound.limits.refused_per_ip` as (requests, window seconds).
    pub refused_per_ip: Option<(u32, u64)>,
    /// `inbound.limits.enabled: false` (the load bench measures the paywall, not its limits).
    pub limits_off: bool,
    /// `settle: before` on the paid route (settle, then forward).
    pub settle_before: bool,
    /// `pricing:` of the paid route, as JSON of the YAML it becomes (a fixed price when `None`).
    pub pricing: Option<serde_json::Value>,
}

/// A `limits:` section: `enabled: false`, or the given limits (the rest left to the defaults).
fn limits(off: bool, each: &[(&str, Option<(u32, u64)>)]) -> Option<Value> {
    if off {
        return Some(Map::new().with("enabled", false).into());
    }
    let mut m = Map::new();
    let mut any = false;
    for (name, l) in each {
        if let Some((requests, window)) = l {
            any = true;
            m = m.with(
                name,
                Map::new()
                    .with("requests", u64::from(*requests))
                    .with("window_secs", *window),
            );
        }
    }
    any.then(|| m.into())
}

impl SellerNode {
    /// A seller on `listen` selling `upstream`'s answers on the devnet at 10 000 atomic units
    /// ($0.01), paid to the devnet's seller address and settled with the key in `key_env`; a
    /// memory store, everything else left to the sidecar's defaults.
    pub fn new(listen: u16, upstream: &str, net: &Devnet, key_env: &str) -> SellerNode {
        SellerNode {
            listen,
            upstream: upstream.into(),
            upstream_timeout_ms: 4_000,
            upstream_secret_env: None,
            challenge_secret: None,
            price: PriceSpec::Units(10_000),
            network: devnet::NETWORK.into(),
            asset: devnet::USDC,
            pay_to: net.pay_to,
            max_timeout_seconds: None,
            tiers: Vec::new(),
            answer: None,
            charge_standin: true,
            free_route: false,
            settlement: Settlement::with_key(net, key_env),
            store: "memory".into(),
            server: None,
            admin: None,
            audit: true,
            audit_dir: None,
            audit_spill_dir: None,
            otlp: None,
            per_ip: None,
            per_payer: None,
            refused_per_ip: None,
            limits_off: false,
            pricing: None,
            settle_before: false,
        }
    }

    /// The `audit:` section, if it is not the default.
    fn audit_section(&self) -> Option<Value> {
        if !self.audit {
            return Some(audit_off());
        }
        if self.audit_dir.is_none() && self.audit_spill_dir.is_none() {
            return None;
        }
        Some(
            Map::new()
                .maybe("dir", self.audit_dir.as_deref())
                .maybe("spill_dir", self.audit_spill_dir.as_deref())
                .into(),
        )
    }

    /// The node's `sidecar.yaml`.
    pub fn yaml(&self) -> String {
        let upstream = Map::new()
            .with("url", self.upstream.as_str())
            .with("timeout_ms", self.upstream_timeout_ms)
            .maybe("secret_env", self.upstream_secret_env.as_deref());
        let accept = Map::new()
            .with("network", self.network.as_str())
            .with("asset", addr(self.asset))
            .with("pay_to", addr(self.pay_to))
            .with(
                "eip712",
                Map::new().with("name", "USDC").with("version", "2"),
            )
            .maybe("max_timeout_seconds", self.max_timeout_seconds);
        let mut accepts = vec![Value::from(accept)];
        for t in &self.tiers {
            accepts.push(
                Map::new()
                    .with("network", self.network.as_str())
                    .with("asset", addr(self.asset))
                    .with("pay_to", addr(t.pay_to))
                    .with("price", price(&t.price))
                    .with(
                        "eip712",
                        Map::new().with("name", "USDC").with("version", "2"),
                    )
                    .maybe("max_timeout_seconds", self.max_timeout_seconds)
                    .into(),
            );
        }
        let mut routes = vec![Value::from(
            Map::new()
                .with("path", "/x402")
                .with("description", "Trading strategy advice")
                .with("price", price(&self.price))
                .maybe("answer", self.answer.as_deref())
                .maybe("charge_standin", self.charge_standin.then_some(true))
                .with("accepts", accepts)
                .maybe("settle", self.settle_before.then_some("before"))
                .maybe(
                    "pricing",
                    self.pricing
                        .as_ref()
                        .and_then(|p| serde_yaml::to_value(p).ok()),
                ),
        )];
        if self.free_route {
            routes.push(
                Map::new()
                    .with("path", "/free")
                    .with("method", "GET")
                    .into(),
            );
        }
        let inbound = Map::new()
            .with("enabled", true)
            .with("listen", listen(self.listen))
            .with("upstream", upstream)
            .maybe("challenge_secret", self.challenge_secret.as_deref())
            .maybe(
                "limits",
                limits(
                    self.limits_off,
                    &[
                        ("per_ip", self.per_ip),
                        ("per_payer", self.per_payer),
                        ("refused_per_ip", self.refused_per_ip),
                    ],
                ),
            )
            .with("routes", routes);
        render(
            Map::new()
                .with("inbound", inbound)
                .with("facilitators", vec![self.settlement.value()])
                .with("store", self.store.as_str())
                .maybe("server", self.server.map(|s| s.value()))
                .maybe("admin", self.admin.map(admin))
                .maybe("audit", self.audit_section())
                .maybe("otlp", self.otlp.as_ref().map(Otlp::value)),
        )
    }
}

fn admin(port: u16) -> Value {
    Map::new()
        .with("enabled", true)
        .with("listen", listen(port))
        .into()
}

fn audit_off() -> Value {
    Map::new().with("enabled", false).into()
}

/// One seller a buyer node may pay (`outbound.sellers[]`), on the devnet's network and USDC.
#[derive(Debug, Clone)]
pub struct SellerEntry {
    pub name: String,
    /// The seller's paid route.
    pub url: String,
    pub priority: Option<u32>,
    /// The pinned receiving address.
    pub pay_to: Address,
    pub network: String,
    pub asset: Address,
    /// The most the buyer pays this seller per call.
    pub max_price: PriceSpec,
}

impl SellerEntry {
    pub fn new(name: &str, url: &str, pay_to: Address, max_price: PriceSpec) -> SellerEntry {
        SellerEntry {
            name: name.into(),
            url: url.into(),
            priority: None,
            pay_to,
            network: devnet::NETWORK.into(),
            asset: devnet::USDC,
            max_price,
        }
    }

    fn value(&self) -> Value {
        Map::new()
            .with("name", self.name.as_str())
            .with("url", self.url.as_str())
            .maybe("priority", self.priority)
            .with("pay_to", vec![addr(self.pay_to)])
            .with("networks", vec![Value::from(self.network.as_str())])
            .with("assets", vec![addr(self.asset)])
            .with("max_price", price(&self.max_price))
            .into()
    }
}

/// `outbound.fallback`: what the buyer answers when no seller does.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// `error`, `wait` or `local`.
    pub mode: String,
    pub url: Option<String>,
    pub secret_env: Option<String>,
}

impl Fallback {
    pub fn mode(mode: &str) -> Fallback {
        Fallback {
            mode: mode.into(),
            url: None,
            secret_env: None,
        }
    }

    fn value(&self) -> Value {
        Map::new()
            .with("mode", self.mode.as_str())
            .maybe("url", self.url.as_deref())
            .maybe("secret_env", self.secret_env.as_deref())
            .into()
    }
}

/// `outbound.retry`.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub backoff_ms: u64,
}

/// `outbound.breaker`.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    pub failure_threshold: u32,
    pub open_seconds: u64,
}

/// A buyer node: the outbound paying proxy with its wallet (key in `key_env`), the devnet as
/// its chain, its sellers, a daily budget in the devnet's USDC and a ledger file.
#[derive(Debug, Clone)]
pub struct BuyerNode {
    pub listen: u16,
    pub key_env: String,
    /// `outbound.wallet.address`, checked against the key at start.
    pub address: Option<Address>,
    pub network: String,
    pub rpc_url: String,
    pub asset: Address,
    pub sellers: Vec<SellerEntry>,
    pub daily: PriceSpec,
    pub max_authorization_seconds: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub retry: Option<Retry>,
    pub breaker: Option<Breaker>,
    pub fallback: Fallback,
    pub ledger: PathBuf,
    /// `outbound.owners.log`: `plain`, `hashed` or `none`.
    pub owners: Option<String>,
    pub store: String,
    pub server: Option<Server>,
    pub otlp: Option<Otlp>,
    /// `admin:` on this port (metrics, health, readiness).
    pub admin: Option<u16>,
    /// `outbound.gas_wallet.key_env`: the buyer's gas key, to cancel authorizations on chain.
    pub gas_key_env: Option<String>,
    /// `outbound.watch_interval_ms`.
    pub watch_interval_ms: Option<u64>,
}

impl BuyerNode {
    /// A buyer on `listen` paying on the devnet from the key in `key_env`, writing its ledger to
    /// `ledger`; no sellers yet, fallback `error`, a memory store, a daily budget of `daily`.
    pub fn new(
        listen: u16,
        net: &Devnet,
        key_env: &str,
        daily: PriceSpec,
        ledger: impl Into<PathBuf>,
    ) -> BuyerNode {
        BuyerNode {
            listen,
            key_env: key_env.into(),
            address: None,
            network: devnet::NETWORK.into(),
            rpc_url: net.rpc_url.clone(),
            asset: devnet::USDC,
            sellers: Vec::new(),
            daily,
            max_authorization_seconds: None,
            timeout_ms: None,
            retry: None,
            breaker: None,
            fallback: Fallback::mode("error"),
            ledger: ledger.into(),
            owners: None,
            store: "memory".into(),
            server: None,
            otlp: None,
            admin: None,
            gas_key_env: None,
            watch_interval_ms: None,
        }
    }

    /// The node's `sidecar.yaml`.
    pub fn yaml(&self) -> String {
        let wallet = Map::new()
            .with("key_env", self.key_env.as_str())
            .maybe("address", self.address.map(addr));
        let chain = Map::new()
            .with("network", self.network.as_str())
            .with("rpc_url", self.rpc_url.as_str());
        let budget = Map::new()
            .with("network", self.network.as_str())
            .with("asset", addr(self.asset))
            .with("daily", price(&self.daily));
        let outbound = Map::new()
            .with("enabled", true)
            .with("listen", listen(self.listen))
            .with("wallet", wallet)
            .maybe(
                "gas_wallet",
                self.gas_key_env
                    .as_deref()
                    .map(|k| Map::new().with("key_env", k)),
            )
            .maybe("watch_interval_ms", self.watch_interval_ms)
            .with("chains", vec![Value::from(chain)])
            .with(
                "sellers",
                self.sellers
                    .iter()
                    .map(SellerEntry::value)
                    .collect::<Vec<_>>(),
            )
            .with("budgets", vec![Value::from(budget)])
            .maybe("max_authorization_seconds", self.max_authorization_seconds)
            .maybe("timeout_ms", self.timeout_ms)
            .maybe(
                "retry",
                self.retry.map(|r| {
                    Map::new()
                        .with("attempts", r.attempts)
                        .with("backoff_ms", r.backoff_ms)
                }),
            )
            .maybe(
                "breaker",
                self.breaker.map(|b| {
                    Map::new()
                        .with("failure_threshold", b.failure_threshold)
                        .with("open_seconds", b.open_seconds)
                }),
            )
            .with("fallback", self.fallback.value())
            .with("ledger_path", self.ledger.to_string_lossy().into_owned())
            .maybe(
                "owners",
                self.owners.as_deref().map(|o| Map::new().with("log", o)),
            );
        render(
            Map::new()
                .with("outbound", outbound)
                .with("store", self.store.as_str())
                .maybe("admin", self.admin.map(admin))
                .maybe("server", self.server.map(|s| s.value()))
                .maybe("otlp", self.otlp.as_ref().map(Otlp::value)),
        )
    }
}

/// A facilitator node: the x402 facilitator API (`/verify`, `/settle`, `/supported`) on one
/// network.
#[derive(Debug, Clone)]
pub struct FacilitatorNode {
    pub listen: u16,
    pub settlement: Settlement,
    pub server: Option<Server>,
    pub admin: Option<u16>,
    pub audit: bool,
    /// `facilitator.limits.per_client` as (requests, window seconds); the default when `None`.
    pub per_client: Option<(u32, u64)>,
    /// `facilitator.auth.bearer_keys_env` (no authentication when empty).
    pub bearer_keys_env: Vec<String>,
}

impl FacilitatorNode {
    /// A facilitator on `listen` settling on the devnet with the key in `key_env`.
    pub fn new(listen: u16, net: &Devnet, key_env: &str) -> FacilitatorNode {
        FacilitatorNode {
            listen,
            settlement: Settlement::with_key(net, key_env),
            server: None,
            admin: None,
            audit: true,
            per_client: None,
            bearer_keys_env: Vec::new(),
        }
    }

    /// The node's `sidecar.yaml`.
    pub fn yaml(&self) -> String {
        let auth = (!self.bearer_keys_env.is_empty()).then(|| {
            let vars: Vec<Value> = self
                .bearer_keys_env
                .iter()
                .map(|v| Value::from(v.as_str()))
                .collect();
            Map::new().with("bearer_keys_env", vars)
        });
        render(
            Map::new()
                .with(
                    "facilitator",
                    Map::new()
                        .with("enabled", true)
                        .with("listen", listen(self.listen))
                        .maybe("limits", limits(false, &[("per_client", self.per_client)]))
                        .maybe("auth", auth),
                )
                .with("facilitators", vec![self.settlement.value()])
                .maybe("admin", self.admin.map(admin))
                .maybe("server", self.server.map(|s| s.value()))
                .maybe("audit", (!self.audit).then(audit_off)),
        )
    }
}
