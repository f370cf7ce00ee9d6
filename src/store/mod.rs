//! The replay guard's store: one atomic claim per payment `(chain, asset, payer, nonce)`,
//! and the answer kept with it so a retry of the same payment never pays or computes twice.
//!
//! Two implementations behind [`ReplayStore`]: [`MemoryStore`] (moka, one node) and
//! [`RedisStore`] (many replicas; compare-and-set in Lua so ownership is checked atomically).

mod leases;
mod memory;
mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use alloy_primitives::Address;

use crate::util::Problem;
use crate::x402::types::Authorization;

pub use leases::RedisLeases;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// Where a payment is in its life. The states a paid request passes through in memory
/// (`seller::machine`) are stored at the points a crash must not lose: claimed (`InFlight`), answer
/// held and not settled (`Unsettled`), settling or broadcast (`Pending`), delivered (`Done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Claimed by a request that is verifying, forwarding or settling it.
    InFlight,
    /// The upstream's answer is kept but nothing was settled (the buyer hung up, or the
    /// settlement failed for a reason the buyer can fix). A retry with the same payment settles
    /// and gets it. Stored as `ready`, its name before it was renamed.
    #[serde(rename = "ready")]
    Unsettled,
    /// Settling: the settlement is being submitted (`tx` unknown yet) or was broadcast (`tx`)
    /// and its outcome is not known. Resolved by the transaction hash, else by the payment's
    /// own identity on chain (`AuthorizationUsed(from, nonce)`), before answering.
    Pending,
    /// Settled; `answer` is the final response, served again to a retry with the same body.
    Done,
}

/// A stored answer: what the upstream said (Unsettled/Pending) or what the buyer got (Done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
    /// Settlement receipt header (name, base64 value), once settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<(String, String)>,
}

/// The record kept per payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub state: PaymentState,
    /// Identifies the request holding the claim; every change is conditional on it.
    pub token: String,
    /// SHA-256 of the request body the payment was first used with.
    pub body_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<StoredAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// Request id of the request that claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The node working on it (`host:port`); none once it was handed back for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Until when (unix milliseconds) the owner's lease holds; a record whose lease ran out is
    /// taken over by the next request with the same payment ([`ReplayStore::take_over`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<u64>,
    /// What the payment authorized (no signature): what a recovery sweep looks up on chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<StoredAuth>,
}

impl PaymentRecord {
    /// Is somebody's lease on it still running at `now_ms`?
    pub fn leased_at(&self, now_ms: u64) -> bool {
        self.lease_until.is_some_and(|t| t > now_ms)
    }
}

/// A payment's authorization as kept with its record: enough to find its settlement on chain
/// (never the signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAuth {
    pub chain_id: u64,
    #[serde(with = "crate::x402::address::eip55")]
    pub asset: Address,
    pub authorization: Authorization,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
}

/// The replay guard's storage. Every mutation after the claim is a compare-and-set on `token`.
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Insert `rec` unless the key exists. `Ok(None)`: claimed. `Ok(Some(r))`: already held.
    async fn claim(
        &self,
        key: &str,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<Option<PaymentRecord>, StoreError>;
    /// Replace the record if it is still held by `token`; false if it is not.
    async fn replace(
        &self,
        key: &str,
        token: &str,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Delete the record if it is still held by `token`; false if it is not.
    async fn release(&self, key: &str, token: &str) -> Result<bool, StoreError>;
    /// Take the record over: replace it with `rec` if it is still held by `token` **and** its
    /// lease has run out at `now_ms` (checked atomically, so a heartbeat that came first wins);
    /// false if not.
    async fn take_over(
        &self,
        key: &str,
        token: &str,
        now_ms: u64,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Records not `Done` yet, at most `limit` of them (a bounded scan, for the recovery sweep).
    async fn unfinished(&self, limit: usize) -> Result<Vec<(String, PaymentRecord)>, StoreError>;
    /// Is the store reachable?
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The buyer's spend counters: one integer per (asset, day), reserved before signing.
/// A reservation is spend until released; release happens only on a definite failure.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Add `amount` to `key` if the total stays within `limit`; false (and no change) otherwise.
    async fn reserve(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Give back a reservation (never below zero).
    async fn unreserve(&self, key: &str, amount: u64) -> Result<(), StoreError>;
    /// Spent or reserved so far.
    async fn spent(&self, key: &str) -> Result<u64, StoreError>;
}

/// Both halves, from one configuration value.
pub trait Store: ReplayStore + BudgetStore {}
impl<T: ReplayStore + BudgetStore> Store for T {}

/// The `store:` section of `sidecar.yaml` as written: `memory` (one node, the default) or
/// `redis://host:port/db` / `rediss://…` (replicas share claims and budgets).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreConfig(pub String);

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig("memory".into())
    }
}

impl StoreConfig {
    /// Check the value; `None` (and a problem at `store`) if it names no store.
    pub(crate) fn resolve(&self, problems: &mut Vec<Problem>) -> Option<StoreSpec> {
        let spec = &self.0;
        if spec == "memory" {
            Some(StoreSpec::Memory)
        } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            Some(StoreSpec::Redis(spec.clone()))
        } else {
            problems.push(Problem {
                path: "store".into(),
                message: "is not a store: use `memory` or `redis://host:6379/0`".into(),
            });
            None
        }
    }
}

/// A store that passed the checks: what [`open`] connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// In this process (one node).
    Memory,
    /// A Redis URL (`redis://` or `rediss://`).
    Redis(String),
}

impl std::fmt::Display for StoreSpec {
    /// As written in the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Redis(url) => f.write_str(url),
        }
    }
}

/// Open the store of the configuration (Redis connects lazily).
pub fn open(spec: &StoreSpec) -> Result<Arc<dyn Store>, StoreError> {
    match spec {
        StoreSpec::Memory => Ok(Arc::new(MemoryStore::new(1_000_000))),
        StoreSpec::Redis(url) => Ok(Arc::new(RedisStore::new(url)?)),
    }
}

/// The settler keys' nonce leases of the configured store: Redis shares them with the other
/// replicas; `memory` needs none (one process: its keys' nonce locks are process-wide).
pub fn nonce_leases(spec: &StoreSpec) -> Option<Arc<dyn crate::evm::NonceLeases>> {
    match spec {
        StoreSpec::Memory => None,
        StoreSpec::Redis(url) => match RedisLeases::new(url) {
            Ok(l) => Some(Arc::new(l)),
            // Not reached: the same URL opened the replay store already.
            Err(e) => {
                tracing::warn!("nonce leases unavailable: {e}");
                None
            }
        },
    }
}

#[cfg(test)]
pub(crate) fn sample(token: &str, state: PaymentState) -> PaymentRecord {
    PaymentRecord {
        state,
        token: token.into(),
        body_hash: "h".into(),
        answer: None,
        tx: None,
        request_id: None,
        owner: None,
        lease_until: None,
        auth: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before a rename must still read: the stored state names are fixed.
    #[test]
    fn stored_state_names_are_unchanged() {
        for (state, name) in [
            (PaymentState::InFlight, "\"in_flight\""),
            (PaymentState::Unsettled, "\"ready\""),
            (PaymentState::Pending, "\"pending\""),
            (PaymentState::Done, "\"done\""),
        ] {
            assert_eq!(serde_json::to_string(&state).unwrap(), name);
            assert_eq!(serde_json::from_str::<PaymentState>(name).unwrap(), state);
        }
    }
}
