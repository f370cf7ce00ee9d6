//! An authorization that went to a seller without an answer coming back (a refusal, a 5xx, a
//! hang, a timeout): what the chain says of it, and whether the call may pay someone else.
//! It may, only once the authorization is out of play: cancelled on chain with the buyer's
//! gas key (`outbound.gas_wallet`), or dead. Otherwise the watcher follows it and the call
//! pays nobody else.

use tracing::{info, warn};

use super::Payer;
use super::attempt::Payment;
use super::call::Call;
use super::config::Seller;
use super::watch::Verdict;
use crate::evm::typed;

/// What became of an unanswered authorization, for the rest of the call.
#[derive(Debug)]
pub(super) enum Unanswered {
    /// The chain shows the transfer (written down `charged_as`): the call is paid for; no one
    /// else is paid.
    Charged { tx: String },
    /// It can no longer move money (`cancelled`, `unused`): its budget is released, another
    /// seller may be paid.
    OutOfPlay(&'static str),
    /// It may still move money (why): the watcher follows it, no one else is paid.
    InPlay(String),
}

/// The least time given to a cancellation, even at the call's deadline.
const MIN_CANCEL_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl Payer {
    /// Decide an authorization that got no answer: charged (written down as `charged_as`,
    /// `paid_no_answer` or `paid_no_delivery`), taken out of play, or left to the watcher.
    pub(super) async fn unanswered(
        &self,
        payment: &Payment,
        seller: &Seller,
        call: &Call<'_>,
        charged_as: &'static str,
    ) -> Unanswered {
        let (req, auth) = (&payment.quote.requirement, &payment.auth);
        let mut verdict = self.watcher.verdict(&req.network, req.asset, auth).await;
        if verdict == Verdict::Open {
            verdict = match self.cancel(payment, call).await {
                Ok(()) => Verdict::Dead("cancelled"),
                // Refused or failed: perhaps the seller used it meanwhile; the chain says.
                Err(why) => match self.watcher.verdict(&req.network, req.asset, auth).await {
                    Verdict::Open => Verdict::Unknown(why),
                    other => other,
                },
            };
        }
        match verdict {
            Verdict::Charged(tx) => {
                let mut e = self.entry(seller, call, charged_as, payment, None);
                e.tx = Some(tx.clone());
                self.write(e, payment, call).await;
                Unanswered::Charged { tx }
            }
            Verdict::Dead(outcome) => {
                self.write(
                    self.entry(seller, call, outcome, payment, None),
                    payment,
                    call,
                )
                .await;
                self.release(&payment.reservation).await;
                Unanswered::OutOfPlay(outcome)
            }
            Verdict::Open => {
                self.watcher.hand_over(auth.nonce);
                Unanswered::InPlay("it is still valid".into())
            }
            Verdict::Unknown(why) => {
                self.watcher.hand_over(auth.nonce);
                Unanswered::InPlay(why)
            }
        }
    }

    /// Cancel `payment`'s authorization on chain: the buyer signs `cancelAuthorization`, its
    /// gas key submits it. `Err` says why not (no gas key, a revert, no receipt in time).
    async fn cancel(&self, payment: &Payment, call: &Call<'_>) -> Result<(), String> {
        let req = &payment.quote.requirement;
        let Some(chain) = self.cancellers.get(&req.network) else {
            return Err(
                "no gas wallet is configured to cancel it (outbound.gas_wallet)".to_string(),
            );
        };
        let domain = typed::requirement_domain(req).map_err(|e| e.to_string())?;
        let sig = typed::sign_cancel(&self.cfg.signer, payment.auth.nonce, &domain)
            .map_err(|e| format!("the cancellation could not be signed: {e}"))?;
        // Within the call's time (at least a moment): a cancellation mined later is the
        // watcher's to see.
        let left = call
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(MIN_CANCEL_WAIT);
        let cancelled = tokio::time::timeout(
            left,
            chain.cancel_authorization(req.asset, &payment.auth, &sig),
        )
        .await
        .unwrap_or_else(|_| Err("no receipt within the call's time".into()));
        match cancelled {
            Ok(tx) => {
                info!(call_id = call.id, nonce = %payment.auth.nonce, tx = %format!("{tx:#x}"), "authorization cancelled on chain");
                Ok(())
            }
            Err(e) => {
                warn!(call_id = call.id, nonce = %payment.auth.nonce, "the authorization could not be cancelled: {e}");
                Err(format!("the cancellation failed: {e}"))
            }
        }
    }
}
