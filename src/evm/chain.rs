//! Chain access for the local facilitator: the reads verification needs (nonce state, balance,
//! a dry run of the transfer) and the settler, which submits `transferWithAuthorization`.
//!
//! Settlements are pipelined: the settler's own tx nonce is assigned under a short lock that
//! covers only "pick nonce + broadcast"; receipts are awaited outside it, so concurrent
//! settlements neither collide on a nonce nor wait for each other's blocks.

use std::time::Duration;

use alloy_network::{Ethereum, EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Signature, U256};
use alloy_provider::transport::TransportError;
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::{TransactionReceipt, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Revert, SolCall, SolError, SolEvent};
use tokio::sync::Mutex;

use super::typed::{IEip3009Token as Token, transfer_call};
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::Authorization;

/// How far back [`Chain::find_settlement`] looks: authorizations live an hour at most, and
/// 10 000 blocks are 5.5 hours on Base (2 s blocks).
const SEARCH_BLOCKS: u64 = 10_000;

/// Gas limit for `transferWithAuthorization` (~86k used); fixed so no estimate is needed.
const SETTLE_GAS: u64 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("RPC URL `{0}` is not a valid URL")]
    BadUrl(String),
    #[error("the chain at the RPC has chain id {found}, the configuration says {expected}")]
    WrongChain { expected: u64, found: u64 },
    #[error("RPC error: {0}")]
    Rpc(String),
}

/// How a settlement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Mined with status 1 and the expected `Transfer` event.
    Settled { tx: B256 },
    /// Definitely not settled (refused before broadcast, or reverted).
    Failed {
        reason: Reason,
        message: String,
        tx: Option<B256>,
    },
    /// Broadcast, but no receipt within the timeout: reconcile by tx hash, never re-charge.
    Pending { tx: B256 },
    /// A remote facilitator gave no usable answer: reconcile by the authorization on chain.
    Unknown { message: String },
}

/// The one way an RPC provider is built: HTTP to `rpc_url`, none of alloy's recommended fillers
/// (every field of our transactions is set by hand), signing with `wallet` when given. Lazy:
/// no request is made until first use.
pub fn connect(
    rpc_url: &str,
    wallet: Option<PrivateKeySigner>,
) -> Result<DynProvider<Ethereum>, ChainError> {
    let url = rpc_url
        .parse()
        .map_err(|_| ChainError::BadUrl(rpc_url.to_string()))?;
    let builder = ProviderBuilder::new().disable_recommended_fillers();
    Ok(match wallet {
        Some(w) => builder
            .wallet(EthereumWallet::from(w))
            .connect_http(url)
            .erased(),
        None => builder.connect_http(url).erased(),
    })
}

/// One chain, one RPC endpoint, one settler key.
pub struct Chain {
    provider: DynProvider<Ethereum>,
    /// `None` for read-only access (a remote facilitator settles).
    settler: Option<Address>,
    chain_id: u64,
    next_nonce: Mutex<Option<u64>>,
    receipt_timeout: Duration,
}

impl Chain {
    /// Connect with a settler key (lazily: no request is made until first use).
    pub fn new(
        rpc_url: &str,
        chain_id: u64,
        settler: PrivateKeySigner,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        Chain::build(rpc_url, chain_id, Some(settler), receipt_timeout)
    }

    /// Reads only (no key): what a seller whose facilitator is remote, or a buyer, needs to
    /// reconcile.
    pub fn read_only(
        rpc_url: &str,
        chain_id: u64,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        Chain::build(rpc_url, chain_id, None, receipt_timeout)
    }

    fn build(
        rpc_url: &str,
        chain_id: u64,
        settler: Option<PrivateKeySigner>,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        let address = settler.as_ref().map(PrivateKeySigner::address);
        Ok(Chain {
            provider: connect(rpc_url, settler)?,
            settler: address,
            chain_id,
            next_nonce: Mutex::new(None),
            receipt_timeout,
        })
    }

    /// The settler's address (`Address::ZERO` for read-only access).
    pub fn settler(&self) -> Address {
        self.settler.unwrap_or_default()
    }

    pub fn provider(&self) -> &DynProvider<Ethereum> {
        &self.provider
    }

    /// Check the RPC serves the configured chain.
    pub async fn check_chain_id(&self) -> Result<(), ChainError> {
        let found = self
            .provider
            .get_chain_id()
            .await
            .map_err(|e| ChainError::Rpc(e.to_string()))?;
        if found != self.chain_id {
            return Err(ChainError::WrongChain {
                expected: self.chain_id,
                found,
            });
        }
        Ok(())
    }

    /// A typed view call on the contract at `to`.
    async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, String> {
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(call.abi_encode());
        let out = self.provider.call(tx).await.map_err(|e| e.to_string())?;
        C::abi_decode_returns(&out).map_err(|e| e.to_string())
    }

    /// `authorizationState(from, nonce)`: true once the nonce was used or cancelled.
    pub async fn authorization_used(
        &self,
        asset: Address,
        from: Address,
        nonce: B256,
    ) -> Result<bool, String> {
        let call = Token::authorizationStateCall {
            authorizer: from,
            nonce,
        };
        self.view(asset, call).await
    }

    /// `balanceOf(who)`.
    pub async fn balance(&self, asset: Address, who: Address) -> Result<U256, String> {
        self.view(asset, Token::balanceOfCall { account: who })
            .await
    }

    /// The chain checks of verification: nonce unused and balance ≥ value (read in parallel).
    pub async fn verify_onchain(&self, asset: Address, a: &Authorization) -> Result<(), Rejection> {
        let (used, bal) = tokio::join!(
            self.authorization_used(asset, a.from, a.nonce),
            self.balance(asset, a.from)
        );
        let unexpected = |e: String| {
            Rejection::new(
                Reason::UnexpectedVerifyError,
                format!("the chain could not be read: {e}"),
            )
        };
        if used.map_err(unexpected)? {
            return Err(Rejection::new(
                Reason::NonceUsed,
                format!(
                    "authorization nonce {} of {} was already used on chain",
                    a.nonce, a.from
                ),
            ));
        }
        let bal = bal.map_err(unexpected)?;
        if bal < a.value {
            return Err(Rejection::new(
                Reason::InsufficientBalance,
                format!(
                    "the payer {} holds {bal} atomic units, less than the {} required",
                    a.from, a.value
                ),
            ));
        }
        Ok(())
    }

    /// Submit `transferWithAuthorization` and wait for its receipt.
    pub async fn settle(
        &self,
        asset: Address,
        a: &Authorization,
        sig: &Signature,
    ) -> SettleOutcome {
        let Some(settler) = self.settler else {
            return failed("this chain access is read-only: it has no settler key".into());
        };
        let data = transfer_call(a, sig).abi_encode();
        let tx = TransactionRequest::default()
            .with_from(settler)
            .with_to(asset)
            .with_input(data);
        // Dry run first: a revert here means nothing is broadcast and the outcome is certain.
        if let Err(outcome) = self.simulate(tx.clone()).await {
            return outcome;
        }
        let tx = match self.broadcast(settler, tx).await {
            Ok(tx) => tx,
            Err(outcome) => return outcome,
        };
        match self.wait_receipt(tx, self.receipt_timeout).await {
            Some(r) => check_receipt(&r, asset, a),
            None => SettleOutcome::Pending { tx },
        }
    }

    /// `eth_call` the settlement: a revert is a certain failure, with the token's reason.
    async fn simulate(&self, tx: TransactionRequest) -> Result<(), SettleOutcome> {
        let Err(e) = self.provider.call(tx).await else {
            return Ok(());
        };
        let msg = e.to_string();
        Err(match classify_revert(&e) {
            Some(reason) => SettleOutcome::Failed {
                reason,
                message: format!("the transfer would revert: {msg}"),
                tx: None,
            },
            None => failed(format!("the settlement could not be simulated: {msg}")),
        })
    }

    /// Fees, then the settler's next nonce and the broadcast under one short lock; the
    /// transaction's hash once the node accepted it.
    async fn broadcast(
        &self,
        settler: Address,
        tx: TransactionRequest,
    ) -> Result<B256, SettleOutcome> {
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| failed(format!("gas fees could not be read: {e}")))?;
        let mut next = self.next_nonce.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self
                .provider
                .get_transaction_count(settler)
                .pending()
                .await
                .map_err(|e| failed(format!("the settler nonce could not be read: {e}")))?,
        };
        let tx = tx
            .with_chain_id(self.chain_id)
            .with_nonce(nonce)
            .with_gas_limit(SETTLE_GAS)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        match self.provider.send_transaction(tx).await {
            Ok(pending) => {
                *next = Some(nonce + 1);
                Ok(*pending.tx_hash())
            }
            Err(e) => {
                // Unknown whether the node kept the nonce: read it again next time.
                *next = None;
                Err(failed(format!(
                    "the settlement transaction was not accepted by the node: {e}"
                )))
            }
        }
    }

    /// Poll for a receipt until `timeout`.
    pub async fn wait_receipt(&self, tx: B256, timeout: Duration) -> Option<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + timeout;
        // A local node mines right after answering the send: the first empty poll is common,
        // so retry soon (0.5 ms) and back off from there.
        let mut pause = Duration::from_micros(500);
        loop {
            if let Ok(Some(r)) = self.provider.get_transaction_receipt(tx).await {
                return Some(r);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The transaction that used authorization `a` on `asset`, from the token's
    /// `AuthorizationUsed(authorizer, nonce)` log in the last `SEARCH_BLOCKS` blocks.
    pub async fn find_settlement(
        &self,
        asset: Address,
        a: &Authorization,
    ) -> Result<Option<B256>, String> {
        let latest = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| e.to_string())?;
        let filter = alloy_rpc_types_eth::Filter::new()
            .address(asset)
            .event_signature(Token::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(a.from.into_word())
            .topic2(a.nonce)
            .from_block(latest.saturating_sub(SEARCH_BLOCKS))
            .to_block(latest);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| e.to_string())?;
        Ok(logs.iter().find_map(|l| l.transaction_hash))
    }

    /// What became of authorization `a`, read from the chain alone: `Ok(None)` while it is
    /// unused; else the settlement that used it, checked like our own (status and `Transfer`).
    pub async fn settlement_of(
        &self,
        asset: Address,
        a: &Authorization,
    ) -> Result<Option<SettleOutcome>, String> {
        if !self.authorization_used(asset, a.from, a.nonce).await? {
            return Ok(None);
        }
        let Some(tx) = self.find_settlement(asset, a).await? else {
            return Ok(Some(SettleOutcome::Failed {
                reason: Reason::NonceUsed,
                message: format!(
                    "authorization nonce {} of {} is used on chain, by no transaction found in the last {SEARCH_BLOCKS} blocks",
                    a.nonce, a.from
                ),
                tx: None,
            }));
        };
        Ok(Some(
            match self.wait_receipt(tx, self.receipt_timeout).await {
                Some(r) => check_receipt(&r, asset, a),
                None => SettleOutcome::Pending { tx },
            },
        ))
    }

    /// Reconcile a pending settlement by its tx hash.
    pub async fn reconcile(&self, tx: B256, asset: Address, a: &Authorization) -> SettleOutcome {
        match self.wait_receipt(tx, Duration::from_millis(200)).await {
            Some(r) => check_receipt(&r, asset, a),
            None => SettleOutcome::Pending { tx },
        }
    }
}

/// What the chain says of one authorization, by its identity `(from, nonce)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Not used, not cancelled: still usable until its `validBefore`.
    Unused,
    /// `AuthorizationUsed(from, nonce)` in transaction `tx`; `outcome` is that transaction
    /// checked like a settlement (status 1 and the token's `Transfer(from → to, value)`).
    Used { tx: B256, outcome: SettleOutcome },
    /// `AuthorizationCanceled(from, nonce)`: it can never move money.
    Canceled { tx: Option<B256> },
}

impl Chain {
    /// The fate of authorization `a` on `asset`: its state, then the log that ended it (used
    /// or cancelled) in the last `SEARCH_BLOCKS` blocks. `Err` when the chain cannot say.
    pub async fn fate(&self, asset: Address, a: &Authorization) -> Result<Fate, String> {
        if !self.authorization_used(asset, a.from, a.nonce).await? {
            return Ok(Fate::Unused);
        }
        let latest = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| e.to_string())?;
        let filter = alloy_rpc_types_eth::Filter::new()
            .address(asset)
            .event_signature(vec![
                Token::AuthorizationUsed::SIGNATURE_HASH,
                Token::AuthorizationCanceled::SIGNATURE_HASH,
            ])
            .topic1(a.from.into_word())
            .topic2(a.nonce)
            .from_block(latest.saturating_sub(SEARCH_BLOCKS))
            .to_block(latest);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| e.to_string())?;
        for log in &logs {
            let topic0 = log.topics().first().copied();
            if topic0 == Some(Token::AuthorizationCanceled::SIGNATURE_HASH) {
                return Ok(Fate::Canceled {
                    tx: log.transaction_hash,
                });
            }
            if let Some(tx) = log.transaction_hash {
                let outcome = match self.provider.get_transaction_receipt(tx).await {
                    Ok(Some(r)) => check_receipt(&r, asset, a),
                    _ => SettleOutcome::Pending { tx },
                };
                return Ok(Fate::Used { tx, outcome });
            }
        }
        Err(format!(
            "authorization nonce {} of {} is used on chain, by no transaction found in the last {SEARCH_BLOCKS} blocks",
            a.nonce, a.from
        ))
    }

    /// Every authorization of `from` used on `asset` since block `since` (`None`: the last
    /// `SEARCH_BLOCKS` blocks): (nonce, transaction), oldest first.
    pub async fn authorizations_used_by(
        &self,
        asset: Address,
        from: Address,
        since: Option<u64>,
    ) -> Result<Vec<(B256, B256)>, String> {
        let latest = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| e.to_string())?;
        let filter = alloy_rpc_types_eth::Filter::new()
            .address(asset)
            .event_signature(Token::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(from.into_word())
            .from_block(since.unwrap_or(latest.saturating_sub(SEARCH_BLOCKS)))
            .to_block(latest);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| e.to_string())?;
        Ok(logs
            .iter()
            .filter_map(|l| Some((*l.topics().get(2)?, l.transaction_hash?)))
            .collect())
    }

    /// Does transaction `tx` carry authorization `a`: mined with status 1, the token's
    /// `AuthorizationUsed(from, nonce)` and its `Transfer(from → to, value)`? One receipt read:
    /// the quick check of a seller's receipt (`false` when the transaction is unknown).
    pub async fn carries(
        &self,
        tx: B256,
        asset: Address,
        a: &Authorization,
    ) -> Result<bool, String> {
        let Some(r) = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        let used = r.inner.logs().iter().any(|log| {
            log.address() == asset
                && log.topics().first() == Some(&Token::AuthorizationUsed::SIGNATURE_HASH)
                && log.topics().get(1) == Some(&a.from.into_word())
                && log.topics().get(2) == Some(&a.nonce)
        });
        Ok(used && check_receipt(&r, asset, a) == SettleOutcome::Settled { tx })
    }

    /// Submit a signed `cancelAuthorization(authorizer, nonce)` with this chain's key (the
    /// buyer's gas key) and wait for its receipt: the transaction once mined with status 1.
    /// A dry run first: a revert (the authorization was used meanwhile) broadcasts nothing.
    pub async fn cancel_authorization(
        &self,
        asset: Address,
        authorizer: Address,
        nonce: B256,
        sig: &Signature,
    ) -> Result<B256, String> {
        let Some(key) = self.settler else {
            return Err("this chain access has no key to submit a cancellation".into());
        };
        let data = super::typed::cancel_call(authorizer, nonce, sig).abi_encode();
        let tx = TransactionRequest::default()
            .with_from(key)
            .with_to(asset)
            .with_input(data);
        let message = |o: SettleOutcome| match o {
            SettleOutcome::Failed { message, .. } | SettleOutcome::Unknown { message } => message,
            other => format!("{other:?}"),
        };
        self.simulate(tx.clone()).await.map_err(message)?;
        let hash = self.broadcast(key, tx).await.map_err(message)?;
        match self.wait_receipt(hash, self.receipt_timeout).await {
            Some(r) if r.status() => Ok(hash),
            Some(_) => Err(format!("the cancellation {hash} reverted")),
            None => Err(format!("no receipt for the cancellation {hash} yet")),
        }
    }
}

/// Status 1 is not enough: the receipt must carry `Transfer(from → to, value)` from the token.
pub fn check_receipt(r: &TransactionReceipt, asset: Address, a: &Authorization) -> SettleOutcome {
    let tx = r.transaction_hash;
    if !r.status() {
        return SettleOutcome::Failed {
            reason: Reason::TransactionFailed,
            message: format!("the settlement transaction {tx} reverted"),
            tx: Some(tx),
        };
    }
    let paid = r.inner.logs().iter().any(|log| {
        log.address() == asset
            && Token::Transfer::decode_log_data(log.data())
                .map(|t| t.from == a.from && t.to == a.to && t.value == a.value)
                .unwrap_or(false)
    });
    if paid {
        SettleOutcome::Settled { tx }
    } else {
        SettleOutcome::Failed {
            reason: Reason::TransactionFailed,
            message: format!("transaction {tx} succeeded but moved no funds to the seller"),
            tx: Some(tx),
        }
    }
}

/// A settlement that certainly did not happen, for a reason that is not the payer's fault.
fn failed(message: String) -> SettleOutcome {
    SettleOutcome::Failed {
        reason: Reason::UnexpectedSettleError,
        message,
        tx: None,
    }
}

/// The reason code of a failed call: the token's `Error(string)` revert decoded from the
/// node's answer when it carries revert data (every such revert is at least a failed
/// transaction), else read from the message; `None` when nothing says it reverted.
fn classify_revert(e: &TransportError) -> Option<Reason> {
    let data = e.as_error_resp().and_then(|p| p.as_revert_data());
    match data.and_then(|d| Revert::abi_decode(&d).ok()) {
        Some(revert) => Some(revert_reason(&revert.reason).unwrap_or(Reason::TransactionFailed)),
        None => revert_reason(&e.to_string()),
    }
}

/// Map a token revert message to a reason code (USDC / FiatTokenV2 strings).
pub fn revert_reason(msg: &str) -> Option<Reason> {
    let m = msg.to_ascii_lowercase();
    Some(if m.contains("authorization is used or canceled") {
        Reason::NonceUsed
    } else if m.contains("transfer amount exceeds balance") {
        Reason::InsufficientBalance
    } else if m.contains("authorization is expired") {
        Reason::ValidBefore
    } else if m.contains("authorization is not yet valid") {
        Reason::ValidAfter
    } else if m.contains("invalid signature") {
        Reason::Signature
    } else if m.contains("revert") {
        Reason::TransactionFailed
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_usdc_revert_strings() {
        assert_eq!(
            revert_reason(
                "server returned an error response: execution reverted: FiatTokenV2: authorization is used or canceled"
            ),
            Some(Reason::NonceUsed)
        );
        assert_eq!(
            revert_reason("execution reverted: ERC20: transfer amount exceeds balance"),
            Some(Reason::InsufficientBalance)
        );
        assert_eq!(
            revert_reason("execution reverted: FiatTokenV2: invalid signature"),
            Some(Reason::Signature)
        );
        assert_eq!(revert_reason("connection refused"), None);
    }

    /// A node's answer to a reverted `eth_call`, with `data` as revert data.
    fn reverted(message: &str, data: Option<Vec<u8>>) -> TransportError {
        let data = data.map(|d| format!("0x{}", crate::util::hex(&d)));
        TransportError::ErrorResp(
            serde_json::from_value(
                serde_json::json!({"code": 3, "message": message, "data": data}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn decodes_the_tokens_revert_strings() {
        let revert = |why: &str| Some(Revert::from(why).abi_encode());
        let cases = [
            (
                "FiatTokenV2: authorization is used or canceled",
                Reason::NonceUsed,
            ),
            ("FiatTokenV2: authorization is expired", Reason::ValidBefore),
            (
                "FiatTokenV2: authorization is not yet valid",
                Reason::ValidAfter,
            ),
            ("FiatTokenV2: invalid signature", Reason::Signature),
            (
                "ERC20: transfer amount exceeds balance",
                Reason::InsufficientBalance,
            ),
            ("Pausable: paused", Reason::TransactionFailed),
        ];
        for (why, want) in cases {
            let e = reverted("execution reverted", revert(why));
            assert_eq!(classify_revert(&e), Some(want), "{why}");
        }
        // Without revert data, the message decides.
        let e = reverted("execution reverted: FiatTokenV2: invalid signature", None);
        assert_eq!(classify_revert(&e), Some(Reason::Signature));
        assert_eq!(classify_revert(&reverted("nonce too low", None)), None);
    }
}
