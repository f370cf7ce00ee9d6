//! The buyer's paying proxy: a pingora `ServeHttp` app on a local port that roma-01 uses as
//! its strategy endpoint (`POST /x402`) or as an HTTP proxy (absolute-form URL of a seller
//! named in the configuration).
//!
//! One logical call, top to bottom: pick sellers by priority (skipping open breakers) → ask →
//! on 402 keep the options the spend policy allows → reserve budget → sign ONE authorization →
//! write it down (`pending`) → send it, resending the same one on network trouble (never a
//! second signature) → `paid` only when the chain shows the transfer (`unconfirmed` otherwise,
//! for the watcher to settle) → answer roma-01 with the seller's body unchanged plus
//! `X-Payment-*` headers and the receipt as `X-PAYMENT-RESPONSE`. Without an answer the next
//! seller is paid only once the first authorization is out of play (cancelled on chain, or
//! dead); otherwise the fallback, so that one call is never two transfers.
//!
//! Where each part lives: `service.rs` (the `ServeHttp` app and routing), `call.rs` (the call
//! over the sellers), `attempt.rs` (one seller, step by step), `send.rs` (one POST, the paid
//! resend loop), `outcome.rs` (an authorization without an answer: charged, cancelled or still
//! in play), `record.rs` (the ledger lines of a call), `watch.rs` (every authorization followed
//! to its end on chain, also after a restart), `fallback.rs`, `answer.rs` (the answers to
//! roma-01); `policy.rs`
//! (the spend policy), `config.rs` (the `outbound:` section), `ledger.rs` (the ledger file),
//! `client.rs` (paying a 402, also used by `pay`, the demo and the tests).

pub mod client;
pub mod config;
pub mod ledger;
pub(crate) mod policy;

mod answer;
mod attempt;
mod call;
mod fallback;
mod outcome;
mod record;
mod send;
mod service;
mod watch;

pub(crate) use watch::WatchService;
pub(crate) use watch::authorization_of as watch_authorization;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use self::attempt::Reservation;
use self::config::Outbound;
use self::ledger::Ledger;
use self::watch::Watcher;
use crate::audit::{Event, Journal};
use crate::breaker::Breaker;
use crate::evm::Chain;
use crate::store::BudgetStore;
use crate::telemetry;
use crate::util::now_secs;
use crate::x402::networks;

/// Largest answer read from a seller or the local fallback.
pub(crate) const MAX_SELLER_ANSWER: usize = 1024 * 1024;

/// The paying proxy.
pub(crate) struct Payer {
    cfg: Outbound,
    /// What a configuration reload (`SIGHUP`) replaces: the sellers (their allowlists and
    /// price caps) and the daily budgets. Each call works on the one it started with.
    live: Arc<arc_swap::ArcSwap<Live>>,
    http: reqwest::Client,
    store: Arc<dyn BudgetStore>,
    /// Chain access with the buyer's gas key per network, to cancel an authorization whose
    /// outcome is unknown (`outbound.gas_wallet`); empty without one.
    cancellers: HashMap<String, Arc<Chain>>,
    breakers: Mutex<HashMap<String, Breaker>>,
    /// The ledger, the journal and the chain reads, shared with the background watcher.
    watcher: Arc<Watcher>,
    journal: Option<Arc<Journal>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("store: {0}")]
    Store(String),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("outbound.chains: RPC URL `{0}` is not valid")]
    Rpc(String),
    #[error("outbound.chains: `{0}` is not a CAIP-2 EVM network")]
    Network(String),
}

impl Payer {
    pub(crate) fn new(
        cfg: Outbound,
        store_spec: &crate::store::StoreSpec,
        journal: Option<Arc<Journal>>,
    ) -> Result<Self, BuildError> {
        let store = crate::store::open(store_spec).map_err(|e| BuildError::Store(e.to_string()))?;
        // No redirects: a seller's 3xx must never lead the payment somewhere else.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let chains = readers(&cfg.chains)?;
        let cancellers = match &cfg.gas_key {
            Some(key) => writers(&cfg.chains, key)?,
            None => HashMap::new(),
        };
        let breakers = cfg
            .sellers
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Breaker::new(
                        cfg.breaker.failure_threshold,
                        Duration::from_secs(cfg.breaker.open_seconds),
                    ),
                )
            })
            .collect();
        let ledger = Arc::new(Ledger::new(cfg.ledger_path.clone()));
        let store = store as Arc<dyn BudgetStore>;
        let watcher = Arc::new(Watcher::new(
            ledger,
            journal.clone(),
            store.clone(),
            chains,
            cfg.watch_interval,
        ));
        Ok(Payer {
            live: Arc::new(arc_swap::ArcSwap::from_pointee(Live::of(&cfg))),
            cfg,
            http,
            store,
            cancellers,
            breakers: Mutex::new(breakers),
            watcher,
            journal,
        })
    }

    /// The handle a configuration reload goes through (the payer is moved into its service).
    pub(crate) fn reloader(&self) -> Reloader {
        Reloader {
            live: self.live.clone(),
            started: self.cfg.clone(),
        }
    }

    /// The watcher, to run as a background service next to the proxy.
    pub(crate) fn watcher(&self) -> Arc<Watcher> {
        self.watcher.clone()
    }

    fn breaker<T>(&self, name: &str, f: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(name) && self.live.load().sellers.iter().any(|s| s.name == name) {
            // A seller added by a reload.
            let b = &self.cfg.breaker;
            map.insert(
                name.to_string(),
                Breaker::new(b.failure_threshold, Duration::from_secs(b.open_seconds)),
            );
        }
        let b = map.get_mut(name)?;
        let out = f(b);
        let state = b.label();
        telemetry::with(|m| m.breaker(name, state));
        Some(out)
    }

    /// Journal an event; resolves once it is on disk (the fsync happens on the journal's
    /// writer thread, shared with whatever else is queued).
    async fn audit(&self, e: Event, tx: Option<&str>) {
        let Some(j) = &self.journal else { return };
        let e = match tx {
            Some(t) => e.tx(t),
            None => e,
        };
        if let Err(err) = j.record(e, now_secs()).await {
            warn!("audit journal write failed: {err}");
        }
    }

    async fn release(&self, r: &Reservation) {
        self.watcher.release(&r.key, r.amount).await;
    }
}

/// How long the buyer waits for its own cancellation to be mined.
const CANCEL_RECEIPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Access to each configured chain with the buyer's gas key, to submit cancellations.
fn writers(
    chains: &HashMap<String, String>,
    key: &alloy_signer_local::PrivateKeySigner,
) -> Result<HashMap<String, Arc<Chain>>, BuildError> {
    chains
        .iter()
        .map(|(network, url)| {
            let chain_id =
                networks::chain_id(network).ok_or_else(|| BuildError::Network(network.clone()))?;
            let chain = Chain::new(url, chain_id, key.clone(), CANCEL_RECEIPT_TIMEOUT)
                .map_err(|_| BuildError::Rpc(url.clone()))?;
            Ok((network.clone(), Arc::new(chain)))
        })
        .collect()
}

/// Read-only access to each configured chain (no request is made until first use): the
/// authorization's state, its logs and the receipt of the transaction that used it.
fn readers(chains: &HashMap<String, String>) -> Result<HashMap<String, Arc<Chain>>, BuildError> {
    chains
        .iter()
        .map(|(network, url)| {
            let chain_id =
                networks::chain_id(network).ok_or_else(|| BuildError::Network(network.clone()))?;
            let chain = Chain::read_only(url, chain_id, Duration::ZERO)
                .map_err(|_| BuildError::Rpc(url.clone()))?;
            Ok((network.clone(), Arc::new(chain)))
        })
        .collect()
}

/// The part of the outbound side a reload replaces.
pub(crate) struct Live {
    /// Sorted by priority.
    pub(crate) sellers: Vec<config::Seller>,
    /// (network, asset) → daily limit, atomic units.
    pub(crate) budgets: HashMap<(String, alloy_primitives::Address), u64>,
}

impl Live {
    fn of(cfg: &Outbound) -> Live {
        Live {
            sellers: cfg.sellers.clone(),
            budgets: cfg.budgets.clone(),
        }
    }
}

/// Replaces a running payer's sellers and budgets with a new configuration's.
pub(crate) struct Reloader {
    live: Arc<arc_swap::ArcSwap<Live>>,
    /// The configuration the payer started with: what a reload cannot change.
    started: Outbound,
}

impl Reloader {
    /// Apply `next`'s sellers (allowlists, price caps, priorities) and budgets at once, or say
    /// which settings only a restart can change (and change nothing). Today's spend is kept:
    /// a new budget counts what was already spent today.
    pub(crate) fn apply(&self, next: &Outbound) -> Result<(), Vec<String>> {
        self.check(next)?;
        self.live.store(Arc::new(Live::of(next)));
        Ok(())
    }

    /// Whether `next` changes only what a reload may change; else each setting that needs a
    /// restart.
    pub(crate) fn check(&self, next: &Outbound) -> Result<(), Vec<String>> {
        let was = &self.started;
        let mut fixed = Vec::new();
        let mut same = |name: &str, eq: bool| {
            if !eq {
                fixed.push(format!("{name} changed: it takes a restart, not a reload"));
            }
        };
        same("outbound.listen", was.listen == next.listen);
        same(
            "outbound.wallet",
            was.signer.address() == next.signer.address(),
        );
        same(
            "outbound.gas_wallet",
            was.gas_key.as_ref().map(|k| k.address()) == next.gas_key.as_ref().map(|k| k.address()),
        );
        same("outbound.chains", was.chains == next.chains);
        same(
            "outbound.watch_interval_ms",
            was.watch_interval == next.watch_interval,
        );
        same(
            "outbound.max_authorization_seconds",
            was.max_authorization == next.max_authorization,
        );
        same("outbound.timeout_ms", was.timeout == next.timeout);
        same(
            "outbound.retry",
            format!("{:?}", was.retry) == format!("{:?}", next.retry),
        );
        same(
            "outbound.breaker",
            format!("{:?}", was.breaker) == format!("{:?}", next.breaker),
        );
        same(
            "outbound.fallback",
            format!("{:?}", was.fallback) == format!("{:?}", next.fallback)
                && was.fallback_url == next.fallback_url
                && was.fallback_secret.as_ref().map(|s| s.expose())
                    == next.fallback_secret.as_ref().map(|s| s.expose()),
        );
        same("outbound.ledger", was.ledger_path == next.ledger_path);
        same(
            "outbound.owners",
            format!("{:?}", was.owners) == format!("{:?}", next.owners),
        );
        if fixed.is_empty() { Ok(()) } else { Err(fixed) }
    }
}
