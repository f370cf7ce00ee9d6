//! Transaction nonces of the settler keys, right when a key is shared.
//!
//! A key's next nonce is picked and its transaction broadcast under the key's lock, held only
//! for "pick the nonce + broadcast" (receipts are awaited outside it):
//!
//! - in one process, the lock is the key's [`KeyNonce`], one per (RPC, key) for the whole
//!   process, so the seller and the facilitator service of one sidecar share it; the next
//!   nonce is cached between broadcasts;
//! - across replicas, a [`NonceLeases`] (the store's, Redis) adds an atomic lease on the key:
//!   one replica at a time picks and broadcasts, and it reads the key's pending nonce from the
//!   chain each time (another replica may have used the previous one).
//!
//! Whatever else uses the key (another replica without the lease, a top-up script, an operator's
//! wallet), a nonce error from the node makes the settler read the pending nonce again and
//! resend the *same* authorization (see `settler.rs`); that can never charge twice, since the
//! token accepts each EIP-3009 nonce once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use alloy_primitives::Address;
use async_trait::async_trait;
use tokio::sync::{Mutex, MutexGuard};

/// An atomic lease per settler key, shared by the replicas that use the key (implemented by
/// the store: Redis `SET NX PX`, released by its token).
#[async_trait]
pub trait NonceLeases: Send + Sync {
    /// Take the lease `name` for at most `ttl` (it lapses by itself after that, should the
    /// holder die), waiting up to `wait` for it. `Ok(Some(token))`: held; `Ok(None)`: still
    /// held by another after `wait`.
    async fn lease(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<String>, String>;
    /// Give the lease back if `token` still holds it.
    async fn unlease(&self, name: &str, token: &str) -> Result<(), String>;
}

/// The lease's name for a key on a chain.
pub(crate) fn lease_name(chain_id: u64, key: Address) -> String {
    format!("{chain_id}:{key:#x}")
}

/// One key's nonce state in this process.
#[derive(Debug, Default)]
pub(crate) struct KeyNonce {
    /// The next nonce to use, when known (`None`: read the pending nonce from the chain).
    next: Mutex<Option<u64>>,
}

impl KeyNonce {
    /// The key's lock, with the cached next nonce.
    pub(crate) async fn lock(&self) -> MutexGuard<'_, Option<u64>> {
        self.next.lock().await
    }
}

/// The process's nonce state of `key` as reached through `rpc_url` (one chain per RPC URL;
/// two devnets on one machine are two chains even with the same chain id).
pub(crate) fn key_nonce(rpc_url: &str, key: Address) -> Arc<KeyNonce> {
    type Keys = HashMap<(String, Address), Arc<KeyNonce>>;
    static KEYS: OnceLock<StdMutex<Keys>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    keys.entry((rpc_url.to_string(), key)).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_per_key_and_rpc_in_a_process() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        let x = key_nonce("http://127.0.0.1:1", a);
        assert!(Arc::ptr_eq(&x, &key_nonce("http://127.0.0.1:1", a)));
        assert!(!Arc::ptr_eq(&x, &key_nonce("http://127.0.0.1:1", b)));
        assert!(!Arc::ptr_eq(&x, &key_nonce("http://127.0.0.1:2", a)));
        assert_eq!(lease_name(84532, a), format!("84532:{a:#x}"));
    }
}
