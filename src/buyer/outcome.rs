//! What became of a signed authorization when the seller's answer does not say: the chain
//! decides whether we paid, and the budget is committed, kept or released accordingly.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use tracing::{info, warn};

use super::Payer;
use super::answer::Charge;
use super::attempt::{Payment, Reservation};
use super::call::Call;
use super::config::Seller;
use crate::evm::Chain;
use crate::util::now_secs;
use crate::x402::types::Authorization;

impl Payer {
    /// Did the authorization move money? If so it is written down as `paid_no_answer` and
    /// its budget stays spent; if the chain says no, the budget is released once the
    /// authorization has expired unused; if the chain cannot be read, it stays reserved.
    pub(super) async fn charged_on_chain(
        &self,
        payment: &Payment,
        seller: &Seller,
        call: &Call<'_>,
    ) -> bool {
        let call_id = call.id;
        let (req, auth) = (&payment.quote.requirement, &payment.auth);
        let (network, asset) = (req.network.as_str(), req.asset);
        let Some(chain) = self.chains.get(network).cloned() else {
            warn!(call_id, %network, "no RPC configured for this network: the budget stays reserved for this authorization");
            return false;
        };
        match chain
            .authorization_used(asset, auth.from, auth.nonce)
            .await
            .ok()
        {
            Some(true) => {
                let charge = Charge {
                    tx: String::new(),
                    amount: auth.value,
                    asset,
                    network: network.into(),
                    pay_to: auth.to,
                };
                self.record(seller, call, "paid_no_answer", &charge, auth, None)
                    .await;
                true
            }
            Some(false) => {
                self.release_once_expired(chain, asset, auth, &payment.reservation, call_id);
                false
            }
            None => false,
        }
    }

    /// An unused authorization is still usable until `validBefore`: in the background, wait
    /// until it has expired (an hour at most), read the chain again, and release the budget
    /// only if it is still unused.
    fn release_once_expired(
        &self,
        chain: Arc<Chain>,
        asset: Address,
        auth: &Authorization,
        r: &Reservation,
        call_id: &str,
    ) {
        let store = self.store.clone();
        let (key, amount) = (r.key.clone(), r.amount);
        let valid_before: u64 = auth.valid_before.try_into().unwrap_or(u64::MAX);
        let (from, nonce) = (auth.from, auth.nonce);
        let call = call_id.to_string();
        tokio::spawn(async move {
            let wait = valid_before.saturating_sub(now_secs()) + 2;
            tokio::time::sleep(Duration::from_secs(wait.min(3_600))).await;
            match chain.authorization_used(asset, from, nonce).await.ok() {
                Some(false) => {
                    let _ = store.unreserve(&key, amount).await;
                    info!(call_id = %call, "authorization expired unused: budget released");
                }
                _ => {
                    warn!(call_id = %call, "authorization was used or state unknown: budget kept")
                }
            }
        });
    }
}
