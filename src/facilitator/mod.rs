//! The standard x402 facilitator HTTP API, served from the sidecar's own `local` facilitators:
//! `GET /supported`, `POST /verify` and `POST /settle`, so other resource servers (this
//! project's `kind: http` facilitator client or any third-party x402 server) can have their
//! payments verified and settled by this process's settler keys.
//!
//! - [`api`]: the request and answer bodies, and the pingora app with its three routes;
//! - [`verify`]: a request decoded step by step (version, shapes, scheme, network, the
//!   payload's `accepted` against the resource server's requirements), then the protocol's one
//!   payment check ([`crate::x402::check`]: authorization and EIP-712 signature), then the
//!   chain's nonce and balance reads;
//! - [`settle`]: one claim per authorization while it settles, the settlement and its journal
//!   record;
//! - here: the [`FacilitatorApp`], its chains and `GET /supported`.
//!
//! A payment that is not valid is a 200 answer with `isValid: false` / `success: false` and a
//! reason code, as the spec's examples do; only a body that is not a facilitator request at
//! all gets a 4xx.

mod api;
mod settle;
#[cfg(test)]
mod tests;
mod verify;

pub mod config;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::audit::Journal;
use crate::evm::{Chain, NonceLeases};
use crate::http::limit::Limiter;
use crate::x402::ids::PaymentRef;
use crate::x402::networks;
use crate::x402::types::{SupportedKind, SupportedResponse};

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("facilitator for {network}: {why}")]
    Chain { network: String, why: String },
    #[error(
        "no `kind: local` entry under `facilitators`: there is nothing to verify or settle with"
    )]
    NoNetwork,
}

/// One configured network.
struct Served {
    network: String,
    chain: Arc<Chain>,
}

/// The facilitator listener's app.
pub struct FacilitatorApp {
    /// By CAIP-2 network.
    chains: BTreeMap<String, Served>,
    /// Authorizations being settled right now, so a concurrent duplicate is refused here
    /// instead of costing a reverted transaction.
    settling: Mutex<HashSet<PaymentRef>>,
    /// Where settlement attempts are recorded (`facilitator_settled`, `…_failed`, `…_pending`).
    journal: Option<Arc<Journal>>,
    /// `facilitator.limits.per_client`, when on.
    limit: Option<Limiter>,
    /// `facilitator.auth`: the accepted bearer keys (empty: no authentication).
    keys: Vec<config::BearerKey>,
}

impl FacilitatorApp {
    /// One chain per `kind: local` facilitator of the configuration (no request is made yet).
    pub fn new(cfg: &config::Service) -> Result<Self, BuildError> {
        FacilitatorApp::with_leases(cfg, None)
    }

    /// [`FacilitatorApp::new`], the settler keys' nonces shared with other replicas (and other
    /// processes using the same keys) through `leases`.
    pub fn with_leases(
        cfg: &config::Service,
        leases: Option<Arc<dyn NonceLeases>>,
    ) -> Result<Self, BuildError> {
        let mut chains = BTreeMap::new();
        for f in &cfg.chains {
            let chain = Chain::from_spec(f, leases.clone()).map_err(|why| BuildError::Chain {
                network: f.network.clone(),
                why,
            })?;
            chains.insert(
                f.network.clone(),
                Served {
                    network: f.network.clone(),
                    chain: Arc::new(chain),
                },
            );
        }
        if chains.is_empty() {
            return Err(BuildError::NoNetwork);
        }
        Ok(FacilitatorApp {
            chains,
            settling: Mutex::new(HashSet::new()),
            journal: None,
            limit: cfg.limits.map(|l| Limiter::new(l.per_client)),
            keys: cfg.keys.clone(),
        })
    }

    /// Record every settlement attempt that reached the chain in `journal`.
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
        self.journal = journal;
        self
    }

    /// The chains, for `/readyz`.
    pub fn readiness_chains(&self) -> Vec<(String, Arc<Chain>)> {
        self.chains
            .values()
            .map(|s| (s.network.clone(), s.chain.clone()))
            .collect()
    }

    /// The networks served, CAIP-2.
    pub fn networks(&self) -> Vec<String> {
        self.chains.keys().cloned().collect()
    }

    /// `GET /supported`: v1 and v2 `exact` on every network; the settlers sign for `eip155:*`.
    fn supported(&self) -> SupportedResponse {
        let mut kinds = Vec::new();
        let mut signers: Vec<String> = Vec::new();
        for s in self.chains.values() {
            kinds.push(SupportedKind {
                x402_version: 1,
                scheme: "exact".into(),
                network: networks::to_v1(&s.network).to_string(),
                extra: None,
            });
            kinds.push(SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: s.network.clone(),
                extra: None,
            });
            for addr in s.chain.settlers() {
                let addr = addr.to_checksum(None);
                if !signers.contains(&addr) {
                    signers.push(addr);
                }
            }
        }
        SupportedResponse {
            kinds,
            extensions: Vec::new(),
            signers: BTreeMap::from([("eip155:*".to_string(), signers)]),
        }
    }

    /// Whether this facilitator settles on a CAIP-2 network.
    fn serves(&self, network: &str) -> bool {
        self.chains.contains_key(network)
    }

    fn chain(&self, network: &str) -> Option<&Arc<Chain>> {
        self.chains.get(network).map(|s| &s.chain)
    }
}
