//! The seller's paywall: a pingora `ProxyHttp` service on the public port.
//!
//! Free routes are proxied by pingora as usual. A paid route is handled whole inside
//! `request_filter`, top to bottom, because settlement must wait for the *complete* upstream
//! answer (pingora's body filter is synchronous and cannot settle):
//!
//! 1. route → 2. body (capped) and `StrategyRequest` check → 3. no payment: 402 challenge →
//! 4. decode → 5. match this route's requirements, authorization window, signature →
//! 6. claim the payment in the replay store → 7. nonce and balance on chain →
//! 8. forward to the upstream (watching for the buyer hanging up) → 9. check the answer →
//! 10. settle → 11. merge `payment`/`metadata`/`disclaimer`, answer with the receipt header.
//!
//! Every failure after the claim either releases it (nothing happened: the buyer may send the
//! same payment again) or keeps the finished answer for a retry, so nobody pays for an answer
//! they did not get and nobody gets an answer they did not pay for.
//!
//! Steps 6–11 are a state machine that knows no transport (`machine/`): its states live in the
//! store under the payment's key, each owned by one process through a lease; a lease whose owner
//! is gone is taken over by the next request with the same payment, and a recovery sweep on
//! start resolves what a crash of this node left.
//!
//! The files, by job: `proxy.rs` (the pingora phases, and the recovery sweep as a background
//! service), `ctx.rs` (the per-request context), `paid.rs` (steps 2–5 and the glue to the
//! machine), `payment.rs` (a verified and a claimed payment), `machine/` (steps 6–11, leases,
//! recovery), `forward.rs` (steps 8–9, the upstream call), `answer.rs` (what the buyer is sent),
//! `challenge.rs` (the 402 and refusals), `settle.rs` (the settlement backends behind one trait),
//! `journal.rs` (the audit records), [`config`] (the seller's sections of `sidecar.yaml`).

pub mod config;

mod answer;
mod challenge;
mod ctx;
pub mod discovery;
mod forward;
mod journal;
mod machine;
mod paid;
mod payment;
pub mod pricing;
mod proxy;
mod settle;
mod shape;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::audit::Journal;
use crate::seller::config::{InboundLimits, Route, Seller, UnknownRoutes};
use crate::seller::machine::{LEASE_MARGIN, LeaseSpec, node_id};
use crate::seller::settle::Backends;
use crate::store::{ReplayStore, StoreSpec};
use crate::telemetry;
use crate::x402::challenge::ChallengeKey;

/// The upstream strategy endpoint.
struct Upstream {
    base: reqwest::Url,
    addr: SocketAddr,
    timeout: Duration,
    /// Sent in `X-Sidecar-Secret` on paid calls only (free routes must not reach the advisor).
    secret: Option<String>,
}

/// What a configuration reload (`SIGHUP`) replaces, all at once: the routes (prices, pricing
/// policies, accepts), the disclaimer, the trusted proxies and the rate limits.
pub(crate) struct Live {
    routes: Vec<Route>,
    disclaimer: String,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<std::net::IpAddr>,
    /// `inbound.limits`, when on (and the configuration they were built from: a reload that
    /// keeps them keeps their counts).
    limits: Option<(InboundLimits, Arc<Limits>)>,
}

impl Live {
    fn new(cfg: &Seller, before: Option<&Live>) -> Live {
        let limits = cfg.limits.map(|l| {
            let kept = before
                .and_then(|b| b.limits.as_ref())
                .filter(|(was, _)| *was == l)
                .map(|(_, kept)| kept.clone());
            let built = kept.unwrap_or_else(|| {
                Arc::new(Limits {
                    per_ip: crate::http::limit::Limiter::new(l.per_ip),
                    per_payer: crate::http::limit::Limiter::new(l.per_payer),
                    refused_per_ip: crate::http::limit::Limiter::new(l.refused_per_ip),
                })
            });
            (l, built)
        });
        Live {
            routes: cfg.routes.clone(),
            disclaimer: cfg.disclaimer.clone(),
            trusted_proxies: cfg.trusted_proxies.clone(),
            limits,
        }
    }

    fn route(&self, method: &str, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.method == method && r.path == path)
    }

    fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref().map(|(_, l)| l.as_ref())
    }
}

/// The paywall service. Built once; shared by all requests.
pub(crate) struct Paywall {
    /// Replaced whole by a reload; each request works on the one it started with.
    live: Arc<arc_swap::ArcSwap<Live>>,
    unknown: UnknownRoutes,
    max_body: usize,
    upstream: Upstream,
    http: reqwest::Client,
    /// Who verifies and settles on each network (`facilitators:`).
    backends: Arc<Backends>,
    store: Arc<dyn ReplayStore>,
    /// This node's id and how long its leases on payments last.
    lease: LeaseSpec,
    key: ChallengeKey,
    journal: Option<Arc<Journal>>,
    /// The plain 402 (no payment sent) of each route and resource URL, kept for
    /// [`challenge::KEEP`]: a challenge needs to be fresh per window, not per request (the
    /// EIP-3009 nonce already prevents replay), and building it is most of a 402's cost.
    challenges: moka::sync::Cache<(String, String, String), crate::http::Reply>,
    /// Bodies that passed the `StrategyRequest` check, by their bytes (a hit compares the
    /// whole body): a buyer that asks again, unpaid then paid, is not parsed twice, and a
    /// flood of the same unpaid request costs one parse.
    valid_bodies: moka::sync::Cache<bytes::Bytes, ()>,
}

/// Most bytes of request bodies kept in [`Paywall::valid_bodies`].
const VALID_BODIES_BYTES: u64 = 8 * 1024 * 1024;

/// The paywall's rate limits: unpaid calls per client IP, signed payments per payer.
struct Limits {
    per_ip: crate::http::limit::Limiter,
    per_payer: crate::http::limit::Limiter,
    refused_per_ip: crate::http::limit::Limiter,
}

/// Why the paywall could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("inbound.upstream.url `{0}` does not resolve to an address")]
    Upstream(String),
    /// A network's settlement backend (an entry of `facilitators:`).
    #[error("facilitator for {network}: {why}")]
    Backend { network: String, why: String },
    #[error("store: {0}")]
    Store(String),
    #[error("HTTP client: {0}")]
    Http(String),
}

impl Paywall {
    /// Build from the resolved seller section (keys are loaded here, clients connect lazily).
    pub(crate) fn new(
        cfg: &Seller,
        store: &StoreSpec,
        journal: Option<Arc<Journal>>,
    ) -> Result<Self, BuildError> {
        let base = cfg.upstream.url.clone();
        let host = base.host_str().unwrap_or_default().to_string();
        let port = base.port_or_known_default().unwrap_or(80);
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| BuildError::Upstream(cfg.upstream.text.clone()))?;
        let backends = Arc::new(Backends::new(
            &cfg.settlement,
            crate::store::nonce_leases(store),
        )?);
        let store = crate::store::open(store).map_err(|e| BuildError::Store(e.to_string()))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let key = match &cfg.challenge_secret {
            Some(s) => ChallengeKey::new(s.expose().as_bytes().to_vec()),
            None => {
                warn!(
                    "inbound.challenge_secret is not set: using a random one; replicas will not accept each other's challenges"
                );
                ChallengeKey::random()
            }
        };
        Ok(Paywall {
            live: Arc::new(arc_swap::ArcSwap::from_pointee(Live::new(cfg, None))),
            unknown: cfg.unknown_routes,
            max_body: cfg.max_body,
            upstream: Upstream {
                base,
                addr,
                timeout: cfg.upstream.timeout,
                secret: cfg.upstream.secret.as_ref().map(|s| s.expose().to_string()),
            },
            http,
            backends,
            store,
            lease: LeaseSpec::new(node_id(&cfg.listen), cfg.upstream.timeout + LEASE_MARGIN),
            key,
            journal,
            challenges: moka::sync::Cache::builder()
                .max_capacity(challenge::KEPT)
                .time_to_live(challenge::KEEP)
                .build(),
            valid_bodies: moka::sync::Cache::builder()
                .max_capacity(VALID_BODIES_BYTES)
                .weigher(|b: &bytes::Bytes, _| u32::try_from(b.len()).unwrap_or(u32::MAX))
                .build(),
        })
    }

    /// What `/readyz` should check for this service: each chain's RPC, each remote
    /// facilitator, the store, the upstream.
    pub(crate) fn readiness(&self) -> telemetry::Readiness {
        telemetry::Readiness {
            chains: self.backends.chains(),
            facilitators: self.backends.remote_probes(),
            store: Some(self.store.clone()),
            upstream: Some(self.upstream.addr),
            ..telemetry::Readiness::default()
        }
    }

    /// The 429 for an unpaid call from `client` over `inbound.limits.per_ip`, if it is one.
    fn over_ip_limit(&self, client: &str) -> Option<crate::http::Reply> {
        let live = self.live.load();
        let l = &live.limits()?.per_ip;
        let over = l.check(&client).err()?;
        telemetry::with(|m| m.rate_limited(telemetry::RateLimit::Ip));
        Some(over.reply(
            "rate_limited",
            "without a payment from your address",
            l.limit(),
        ))
    }

    /// The 429 for a signed payment from `payer` over `inbound.limits.per_payer`, if it is one
    /// (before any claim or chain read: nothing was charged).
    fn over_payer_limit(&self, payer: &alloy_primitives::Address) -> Option<crate::http::Reply> {
        let live = self.live.load();
        let l = &live.limits()?.per_payer;
        let over = l.check(payer).err()?;
        telemetry::with(|m| m.rate_limited(telemetry::RateLimit::Payer));
        Some(over.reply(
            "rate_limited_payer",
            "paid by this payer (nothing was charged)",
            l.limit(),
        ))
    }

    /// The 429 for a payment from `client` once its payments refused on chain passed
    /// `inbound.limits.refused_per_ip` (before any claim or chain read: nothing was charged).
    fn over_refused_limit(&self, client: &str) -> Option<crate::http::Reply> {
        let live = self.live.load();
        let l = &live.limits()?.refused_per_ip;
        let over = l.peek(&client).err()?;
        telemetry::with(|m| m.rate_limited(telemetry::RateLimit::RefusedIp));
        Some(over.reply(
            "rate_limited_refused",
            "with payments the chain refused from your address (nothing was charged)",
            l.limit(),
        ))
    }

    /// Count a payment from `client` that the chain checks refused.
    fn count_refused(&self, client: &str) {
        if let Some(l) = self.live.load().limits() {
            l.refused_per_ip.count(&client);
        }
    }

    /// The handle a configuration reload goes through (the paywall itself is moved into its
    /// pingora service).
    pub(crate) fn reloader(&self, cfg: &Seller) -> Reloader {
        Reloader {
            live: self.live.clone(),
            challenges: self.challenges.clone(),
            started: cfg.clone(),
        }
    }
}

/// Replaces a running paywall's [`Live`] part with a new configuration's.
pub(crate) struct Reloader {
    live: Arc<arc_swap::ArcSwap<Live>>,
    challenges: moka::sync::Cache<(String, String, String), crate::http::Reply>,
    /// The configuration the paywall started with: what a reload cannot change.
    started: Seller,
}

impl Reloader {
    /// Apply `next`'s routes, prices, disclaimer, trusted proxies and limits at once, or say
    /// which settings only a restart can change (and change nothing). The next request sees
    /// the new configuration; requests under way finish with the one they started with.
    pub(crate) fn apply(&self, next: &Seller) -> Result<(), Vec<String>> {
        self.check(next)?;
        let before = self.live.load();
        self.live.store(Arc::new(Live::new(next, Some(&before))));
        self.challenges.invalidate_all();
        Ok(())
    }

    /// Whether `next` changes only what a reload may change; else each setting that needs a
    /// restart.
    pub(crate) fn check(&self, next: &Seller) -> Result<(), Vec<String>> {
        let was = &self.started;
        let mut fixed = Vec::new();
        let mut same = |name: &str, eq: bool| {
            if !eq {
                fixed.push(format!("{name} changed: it takes a restart, not a reload"));
            }
        };
        same("inbound.listen", was.listen == next.listen);
        same(
            "inbound.upstream",
            was.upstream.text == next.upstream.text
                && was.upstream.timeout == next.upstream.timeout
                && was.upstream.secret.as_ref().map(|s| s.expose())
                    == next.upstream.secret.as_ref().map(|s| s.expose()),
        );
        same(
            "inbound.unknown_routes",
            was.unknown_routes == next.unknown_routes,
        );
        same("inbound.max_body_bytes", was.max_body == next.max_body);
        same(
            "inbound.challenge_secret",
            was.challenge_secret.as_ref().map(|s| s.expose())
                == next.challenge_secret.as_ref().map(|s| s.expose()),
        );
        same(
            "facilitators",
            format!("{:?}", was.settlement) == format!("{:?}", next.settlement),
        );
        if fixed.is_empty() { Ok(()) } else { Err(fixed) }
    }
}
