//! What became of a signed authorization when the seller's answer does not say: the chain
//! decides whether we paid, and the budget is committed, kept or released accordingly.

use std::time::Duration;

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, B256};
use alloy_provider::{DynProvider, Provider};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_sol_types::SolCall;
use tracing::{info, warn};

use super::Payer;
use super::answer::Paid;
use super::call::{Call, Reservation};
use super::config::Seller;
use crate::evm::typed::IEip3009Token as Token;
use crate::util::now_secs;
use crate::x402::types::{Authorization, PaymentRequirements};

impl Payer {
    /// Did the authorization move money? Commit if so; release only if the chain says no and
    /// the authorization can no longer be used; otherwise keep it reserved until it expires.
    pub(super) async fn settle_check(
        &self,
        req: &PaymentRequirements,
        auth: &Authorization,
        r: &Reservation,
        seller: &Seller,
        call: &Call<'_>,
    ) -> bool {
        let call_id = call.id;
        let (network, asset) = (req.network.as_str(), req.asset);
        let Some(chain) = self.chains.get(network).cloned() else {
            warn!(call_id, %network, "no RPC configured for this network: the budget stays reserved for this authorization");
            return false;
        };
        match authorization_used(&chain, asset, auth.from, auth.nonce).await {
            Some(true) => {
                let paid = Paid {
                    tx: String::new(),
                    amount: auth.value,
                    asset,
                    network: network.into(),
                    pay_to: auth.to,
                };
                self.record(seller, call, "paid_no_answer", &paid, auth, None)
                    .await;
                true
            }
            Some(false) => {
                // Still usable until validBefore: release only once it has expired unused.
                let store = self.store.clone();
                let (key, amount) = (r.key.clone(), r.amount);
                let valid_before: u64 = auth.valid_before.try_into().unwrap_or(u64::MAX);
                let (from, nonce) = (auth.from, auth.nonce);
                let call = call_id.to_string();
                tokio::spawn(async move {
                    let wait = valid_before.saturating_sub(now_secs()) + 2;
                    tokio::time::sleep(Duration::from_secs(wait.min(3_600))).await;
                    match authorization_used(&chain, asset, from, nonce).await {
                        Some(false) => {
                            let _ = store.unreserve(&key, amount).await;
                            info!(call_id = %call, "authorization expired unused: budget released");
                        }
                        _ => {
                            warn!(call_id = %call, "authorization was used or state unknown: budget kept")
                        }
                    }
                });
                false
            }
            None => false,
        }
    }
}

/// `authorizationState(from, nonce)`; `None` when the chain cannot be read.
async fn authorization_used(
    chain: &DynProvider,
    asset: Address,
    from: Address,
    nonce: B256,
) -> Option<bool> {
    let tx = TransactionRequest::default().with_to(asset).with_input(
        Token::authorizationStateCall {
            authorizer: from,
            nonce,
        }
        .abi_encode(),
    );
    let out = chain.call(tx).await.ok()?;
    Token::authorizationStateCall::abi_decode_returns(&out).ok()
}
