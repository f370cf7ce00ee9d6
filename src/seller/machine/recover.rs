//! Recovery on start: a sweep of the unfinished records this node left (its own owner id, a lease
//! stamped before this process started) or whose lease ran out (any owner), so a restart
//! resolves what a crash left instead of waiting for the leases to run out:
//!
//! - claimed, nothing settled (`InFlight`): released; the retry starts again;
//! - answer held (`Unsettled`): kept for the retry, handed back (no lease);
//! - settling (`Pending`): looked up on chain (by tx hash, else by the payment's identity), the
//!   transaction found kept with it, handed back; the retry delivers the held answer (or asks the
//!   upstream) once the chain shows it paid, and only then journals `settled` and `answered`.

use std::sync::Arc;

use alloy_primitives::B256;
use tracing::{info, warn};

use super::lease::LeaseSpec;
use crate::evm::SettleOutcome;
use crate::seller::payment::record_ttl;
use crate::seller::settle::Settlement;
use crate::store::{PaymentRecord, PaymentState, ReplayStore};
use crate::util::now_secs;

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Claims released (nothing had been settled).
    pub(crate) released: usize,
    /// Held answers handed back for their retry.
    pub(crate) held: usize,
    /// Settling payments looked up on chain: the ones found settled.
    pub(crate) settled: usize,
    /// Settling payments not on chain (yet): handed back, the retry settles them.
    pub(crate) unsettled: usize,
}

/// Sweep at most `limit` unfinished records. `started_ms`: when this process started (records
/// of this node with a lease from before it are its crashed predecessor's). `backend`: the
/// settlement backend of a chain id.
pub(crate) async fn sweep(
    store: &dyn ReplayStore,
    backend: &(dyn Fn(u64) -> Option<Arc<dyn Settlement>> + Send + Sync),
    spec: &LeaseSpec,
    started_ms: u64,
    limit: usize,
) -> Swept {
    let mut swept = Swept::default();
    let open = match store.unfinished(limit).await {
        Ok(o) => o,
        Err(e) => {
            warn!("recovery sweep: the store could not be read: {e}");
            return swept;
        }
    };
    let now = spec.now();
    let before_me = started_ms.saturating_add(spec.ttl.as_millis() as u64);
    for (key, rec) in open {
        let mine = rec.owner.as_deref() == Some(spec.owner.as_str())
            && rec.lease_until.is_some_and(|t| t < before_me);
        let lapsed = rec.lease_until.is_some_and(|t| t <= now);
        if !(mine || lapsed) {
            continue;
        }
        if let Err(e) = recover(store, backend, &key, rec, &mut swept).await {
            warn!("recovery sweep: a record could not be updated: {e}");
        }
    }
    if swept != Swept::default() {
        info!(
            released = swept.released,
            held = swept.held,
            settled = swept.settled,
            unsettled = swept.unsettled,
            "recovery sweep: unfinished payments left by a crash resolved for their retry"
        );
    }
    swept
}

async fn recover(
    store: &dyn ReplayStore,
    backend: &(dyn Fn(u64) -> Option<Arc<dyn Settlement>> + Send + Sync),
    key: &str,
    mut rec: PaymentRecord,
    swept: &mut Swept,
) -> Result<(), crate::store::StoreError> {
    let token = rec.token.clone();
    match rec.state {
        PaymentState::Done => return Ok(()),
        PaymentState::InFlight => {
            store.release(key, &token).await?;
            swept.released += 1;
            return Ok(());
        }
        PaymentState::Unsettled => swept.held += 1,
        PaymentState::Pending => {
            let found = match (
                &rec.auth,
                rec.auth.as_ref().and_then(|a| backend(a.chain_id)),
            ) {
                (Some(a), Some(b)) => {
                    let tx: Option<B256> = rec.tx.as_deref().and_then(|t| t.parse().ok());
                    let by_tx = match tx {
                        Some(tx) => Some(b.by_tx(a.asset, &a.authorization, tx).await),
                        None => None,
                    };
                    match by_tx {
                        Some(
                            o @ (SettleOutcome::Settled { .. } | SettleOutcome::Pending { .. }),
                        ) => Some(o),
                        _ => b.lookup(a.asset, &a.authorization).await.ok().flatten(),
                    }
                }
                _ => None,
            };
            match found {
                Some(SettleOutcome::Settled { tx }) => {
                    rec.tx = Some(format!("{tx:#x}"));
                    swept.settled += 1;
                }
                Some(SettleOutcome::Pending { tx }) => {
                    rec.tx = Some(format!("{tx:#x}"));
                    swept.unsettled += 1;
                }
                Some(SettleOutcome::Failed { .. }) if rec.answer.is_some() => {
                    rec.state = PaymentState::Unsettled;
                    rec.tx = None;
                    swept.unsettled += 1;
                }
                Some(SettleOutcome::Failed { .. }) => {
                    store.release(key, &token).await?;
                    swept.released += 1;
                    return Ok(());
                }
                Some(SettleOutcome::Unknown { .. }) | None => swept.unsettled += 1,
            }
        }
    }
    rec.owner = None;
    rec.lease_until = None;
    let ttl = match &rec.auth {
        Some(a) => record_ttl(&a.authorization, now_secs()),
        None => std::time::Duration::from_secs(600),
    };
    store.replace(key, &token, &rec, ttl).await?;
    Ok(())
}
