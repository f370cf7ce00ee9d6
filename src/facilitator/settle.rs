//! `POST /settle`: verify, claim the authorization (one settlement of it at a time), submit
//! `transferWithAuthorization`, record the attempt in the journal.

use std::collections::HashSet;
use std::sync::Mutex;

use tracing::warn;

use super::FacilitatorApp;
use super::api::{refused_settle, settle_response};
use super::verify::{Checked, Invalid};
use crate::audit::{Event, Kind};
use crate::evm::SettleOutcome;
use crate::util::now_secs;
use crate::x402::ids::PaymentRef;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::{FacilitatorRequest, SettleResponse};

impl FacilitatorApp {
    /// Verify, then submit `transferWithAuthorization` and wait for its receipt. The label is
    /// the request's outcome for the metrics and the log.
    pub(super) async fn settle(&self, req: &FacilitatorRequest) -> (SettleResponse, &'static str) {
        let c = match self.verify(req).await {
            Ok(c) => c,
            Err(i) => return (refused_settle(&i), "invalid"),
        };
        let refused = |reason: Reason, message: String| {
            refused_settle(&Invalid {
                rejection: Rejection::new(reason, message),
                payer: Some(c.payer()),
                network: c.network.clone(),
            })
        };
        let Some(chain) = self.chain(&c.requirements.network) else {
            return (
                refused(
                    Reason::UnexpectedSettleError,
                    "no chain for a served network".into(),
                ),
                "failed",
            );
        };
        let auth = &c.payment.authorization;
        let Some(_claim) = Claim::take(&self.settling, c.payment_ref()) else {
            return (
                refused(
                    Reason::NonceUsed,
                    format!(
                        "authorization nonce {} of {} is being settled by another request right now",
                        auth.nonce, auth.from
                    ),
                ),
                "invalid",
            );
        };
        let outcome = chain
            .settle(c.requirements.asset, auth, &c.payment.signature)
            .await;
        self.record(&c, &outcome).await;
        let label = match &outcome {
            SettleOutcome::Settled { .. } => "settled",
            SettleOutcome::Failed { .. } => "failed",
            SettleOutcome::Pending { .. } | SettleOutcome::Unknown { .. } => "pending",
        };
        (settle_response(&c, &outcome), label)
    }

    /// One durable record per settlement attempt, under the same payment id the seller uses.
    async fn record(&self, c: &Checked, outcome: &SettleOutcome) {
        let Some(j) = &self.journal else { return };
        let (event, tx, reason, message) = match outcome {
            SettleOutcome::Settled { tx } => (Kind::FacilitatorSettled, Some(*tx), None, None),
            SettleOutcome::Failed {
                reason,
                message,
                tx,
            } => (
                Kind::FacilitatorSettleFailed,
                *tx,
                Some(reason.code()),
                Some(message.clone()),
            ),
            SettleOutcome::Pending { tx } => {
                (Kind::FacilitatorSettlePending, Some(*tx), None, None)
            }
            SettleOutcome::Unknown { message } => (
                Kind::FacilitatorSettlePending,
                None,
                None,
                Some(message.clone()),
            ),
        };
        let (r, a) = (&c.requirements, &c.payment.authorization);
        let mut e = Event::new(event)
            .payment(&c.payment_ref().payment_id())
            .payer(&a.from.to_string())
            .with("amount", r.amount.to_string())
            .with("asset", r.asset.to_string())
            .with("network", r.network.clone())
            .with("payTo", r.pay_to.to_string())
            .with("nonce", format!("{:#x}", a.nonce))
            .with("reason", reason)
            .with("message", message);
        if let Some(tx) = tx {
            e = e.tx(&format!("{tx:#x}"));
        }
        if let Err(err) = j.record(e, now_secs()).await {
            warn!("audit journal write failed: {err}");
        }
    }
}

/// A claim on an authorization being settled; released when dropped.
struct Claim<'a> {
    set: &'a Mutex<HashSet<PaymentRef>>,
    key: PaymentRef,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<PaymentRef>>, key: PaymentRef) -> Option<Claim<'a>> {
        let fresh = set.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        // Built only when fresh: a Claim dropped here would lock the set again.
        fresh.then(|| Claim { set, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, B256};

    #[test]
    fn one_claim_per_authorization_at_a_time() {
        let set = Mutex::new(HashSet::new());
        let key = PaymentRef::new(
            84532,
            Address::repeat_byte(1),
            Address::repeat_byte(3),
            B256::ZERO,
        );
        let first = Claim::take(&set, key).unwrap();
        assert!(Claim::take(&set, key).is_none());
        drop(first);
        assert!(Claim::take(&set, key).is_some());
    }
}
