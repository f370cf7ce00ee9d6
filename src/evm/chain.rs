//! Chain access for the local facilitator: the reads verification needs (nonce state, balance,
//! a dry run of the transfer) and the settler, which submits `transferWithAuthorization`.
//!
//! Settlements are pipelined: a settler key's tx nonce is assigned under a short lock that
//! covers only "pick nonce + broadcast" (shared with other replicas through the store's lease,
//! see [`super::nonce`]); receipts are awaited outside it, so concurrent settlements neither
//! collide on a nonce nor wait for each other's blocks. The pipeline itself (key pool, fees,
//! nonce errors, resuming a lost outcome, gas) is [`super::settler`]; every RPC call has a
//! deadline ([`super::rpc`]).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use alloy_network::{Ethereum, EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Signature, U256};
use alloy_provider::transport::TransportError;
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::{TransactionReceipt, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Revert, SolCall, SolError, SolEvent};

use super::nonce::NonceLeases;
use super::rpc::{RpcOptions, connect_with};
use super::settler::{FeeCache, SettlerKey};
use super::typed::{IEip3009Token as Token, transfer_call};
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::Authorization;

/// How far back [`Chain::find_settlement`] looks: authorizations live an hour at most, and
/// 10 000 blocks are 5.5 hours on Base (2 s blocks).
const SEARCH_BLOCKS: u64 = 10_000;

/// Gas limit for `transferWithAuthorization` (~86k used); fixed so no estimate is needed.
pub(crate) const SETTLE_GAS: u64 = 200_000;

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

/// A provider for `rpc_url` with the default RPC deadlines (see [`super::rpc`]), none of
/// alloy's recommended fillers, signing with `wallet` when given. Lazy: no request is made
/// until first use. (The settler signs its own transactions: it needs no wallet here.)
pub fn connect(
    rpc_url: &str,
    wallet: Option<PrivateKeySigner>,
) -> Result<DynProvider<Ethereum>, ChainError> {
    let Some(w) = wallet else {
        return connect_with(rpc_url, RpcOptions::default());
    };
    let (url, http) = super::rpc::client(rpc_url, RpcOptions::default())?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .wallet(EthereumWallet::from(w))
        .connect_reqwest(http, url)
        .erased())
}

/// One chain, one RPC endpoint, and the settler keys (none for read-only access; several
/// are used round robin, each with its own nonce).
pub struct Chain {
    provider: DynProvider<Ethereum>,
    pub(super) chain_id: u64,
    pub(super) keys: Vec<SettlerKey>,
    /// Whose turn it is in the key pool.
    pub(super) turn: AtomicUsize,
    /// The replicas' lease on a key's nonce (the store's), when the key is shared.
    pub(super) leases: Option<Arc<dyn NonceLeases>>,
    pub(super) rpc: RpcOptions,
    /// `/readyz` wants each key to hold gas for this many settlements (0: no floor).
    pub(super) gas_floor_settlements: u64,
    pub(super) fees: FeeCache,
    /// A broadcast not mined within this is sent again at the same nonce with higher fees.
    pub(super) replace_after: Option<Duration>,
    pub(super) receipt_timeout: Duration,
    /// Batched settlement, when configured (see [`super::batch`]).
    pub(super) batch: Option<super::batch::Batcher>,
}

impl Chain {
    /// Connect with a settler key (lazily: no request is made until first use).
    pub fn new(
        rpc_url: &str,
        chain_id: u64,
        settler: PrivateKeySigner,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        Chain::build(
            rpc_url,
            chain_id,
            vec![settler],
            receipt_timeout,
            RpcOptions::default(),
        )
    }

    /// Connect with a pool of settler keys, used round robin, and these RPC deadlines.
    pub fn pool(
        rpc_url: &str,
        chain_id: u64,
        settlers: Vec<PrivateKeySigner>,
        receipt_timeout: Duration,
        rpc: RpcOptions,
    ) -> Result<Self, ChainError> {
        Chain::build(rpc_url, chain_id, settlers, receipt_timeout, rpc)
    }

    /// Reads only (no key): what a seller whose facilitator is remote, or a buyer, needs to
    /// reconcile.
    pub fn read_only(
        rpc_url: &str,
        chain_id: u64,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        Chain::read_only_with(rpc_url, chain_id, receipt_timeout, RpcOptions::default())
    }

    /// [`Chain::read_only`] with these RPC deadlines.
    pub fn read_only_with(
        rpc_url: &str,
        chain_id: u64,
        receipt_timeout: Duration,
        rpc: RpcOptions,
    ) -> Result<Self, ChainError> {
        Chain::build(rpc_url, chain_id, Vec::new(), receipt_timeout, rpc)
    }

    fn build(
        rpc_url: &str,
        chain_id: u64,
        settlers: Vec<PrivateKeySigner>,
        receipt_timeout: Duration,
        rpc: RpcOptions,
    ) -> Result<Self, ChainError> {
        Ok(Chain {
            provider: connect_with(rpc_url, rpc)?,
            chain_id,
            keys: settlers
                .into_iter()
                .map(|s| SettlerKey::new(rpc_url, s))
                .collect(),
            turn: AtomicUsize::new(0),
            leases: None,
            rpc,
            gas_floor_settlements: 0,
            fees: FeeCache::default(),
            replace_after: None,
            receipt_timeout,
            batch: None,
        })
    }

    /// Replace a broadcast not mined within `after` (same nonce, fees up by an eighth).
    pub fn with_replace_after(mut self, after: Option<Duration>) -> Self {
        self.replace_after = after.filter(|d| !d.is_zero());
        self
    }

    /// Settle in batches through `worker` (this chain's twin: the same RPC and keys, built
    /// without batching) with these options.
    pub fn with_batch(mut self, worker: Chain, opts: super::batch::BatchOptions) -> Self {
        self.batch = Some(super::batch::Batcher::new(worker, opts));
        self
    }

    /// How settlements are batched, if they are.
    pub fn batching(&self) -> Option<super::batch::BatchOptions> {
        self.batch.as_ref().map(|b| b.options())
    }

    /// Share the keys' nonces with the other replicas through `leases` (the store's).
    pub fn with_leases(mut self, leases: Option<Arc<dyn NonceLeases>>) -> Self {
        self.leases = leases;
        self
    }

    /// Each key should hold gas for `n` settlements (`/readyz`, `check-config --online`).
    pub fn with_gas_floor(mut self, n: u64) -> Self {
        self.gas_floor_settlements = n;
        self
    }

    /// The first settler's address (`Address::ZERO` for read-only access).
    pub fn settler(&self) -> Address {
        self.keys.first().map(|k| k.address).unwrap_or_default()
    }

    /// Every settler key's address, in pool order.
    pub fn settlers(&self) -> Vec<Address> {
        self.keys.iter().map(|k| k.address).collect()
    }

    /// The chain id this access is configured for.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
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

    /// A view call's answer, `None` when the call fails (the contract may not have it).
    pub(crate) async fn view_of<C: SolCall>(&self, to: Address, call: C) -> Option<C::Return> {
        self.view(to, call).await.ok()
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

    /// `authorizationState(from, nonce)` and `balanceOf(from)` in one JSON-RPC batch: one
    /// round trip for the two reads of verification.
    pub async fn verify_reads(
        &self,
        asset: Address,
        a: &Authorization,
    ) -> Result<(bool, U256), String> {
        let call = |data: Vec<u8>| {
            let tx = TransactionRequest::default()
                .with_to(asset)
                .with_input(data);
            // The pending state, as every other read of this module (alloy's `eth_call`
            // default): an authorization in a transaction not yet mined counts as used.
            (tx, alloy_rpc_types_eth::BlockNumberOrTag::Pending)
        };
        let state = Token::authorizationStateCall {
            authorizer: a.from,
            nonce: a.nonce,
        };
        let balance = Token::balanceOfCall { account: a.from };
        let client = self.provider.client();
        let mut batch = alloy_rpc_client::BatchRequest::new(client);
        let used = batch
            .add_call::<_, alloy_primitives::Bytes>("eth_call", &call(state.abi_encode()))
            .map_err(|e| e.to_string())?;
        let bal = batch
            .add_call::<_, alloy_primitives::Bytes>("eth_call", &call(balance.abi_encode()))
            .map_err(|e| e.to_string())?;
        batch.send().await.map_err(|e| e.to_string())?;
        let used = used.await.map_err(|e| e.to_string())?;
        let bal = bal.await.map_err(|e| e.to_string())?;
        Ok((
            Token::authorizationStateCall::abi_decode_returns(&used).map_err(|e| e.to_string())?,
            Token::balanceOfCall::abi_decode_returns(&bal).map_err(|e| e.to_string())?,
        ))
    }

    /// The chain checks of verification: nonce unused and balance ≥ value (one round trip).
    pub async fn verify_onchain(&self, asset: Address, a: &Authorization) -> Result<(), Rejection> {
        let unexpected = |e: String| {
            Rejection::new(
                Reason::UnexpectedVerifyError,
                format!("the chain could not be read: {e}"),
            )
        };
        let (used, bal) = self.verify_reads(asset, a).await.map_err(unexpected)?;
        if used {
            return Err(Rejection::new(
                Reason::NonceUsed,
                "this authorization's nonce was already used on chain: sign a new authorization",
            ));
        }
        if bal < a.value {
            return Err(Rejection::new(
                Reason::InsufficientBalance,
                format!(
                    "the payer holds {bal} atomic units, less than the {} required",
                    a.value
                ),
            ));
        }
        Ok(())
    }

    /// Submit `transferWithAuthorization` with the next key of the pool and wait for its
    /// receipt (within `receipt_timeout`); with batching on, in the next batch, waiting for
    /// this payment's own outcome only.
    pub async fn settle(
        &self,
        asset: Address,
        a: &Authorization,
        sig: &Signature,
    ) -> SettleOutcome {
        if let Some(b) = &self.batch {
            return b.settle(asset, a, sig).await;
        }
        self.settle_one(asset, a, sig).await
    }

    /// One payment in a transaction of its own.
    pub(super) async fn settle_one(
        &self,
        asset: Address,
        a: &Authorization,
        sig: &Signature,
    ) -> SettleOutcome {
        let Some(key) = self.pick_key() else {
            return failed("this chain access is read-only: it has no settler key".into());
        };
        let data = transfer_call(a, sig).abi_encode();
        let tx = TransactionRequest::default()
            .with_from(key.address)
            .with_to(asset)
            .with_input(data);
        // Dry run first: a revert here means nothing is broadcast and the outcome is certain.
        if let Err(outcome) = self.simulate(tx.clone()).await {
            return outcome;
        }
        let sent = match self
            .broadcast(key, tx, super::settler::Job::One { asset, a })
            .await
        {
            Ok(sent) => sent,
            Err(outcome) => return outcome,
        };
        self.until_mined(key, sent, asset, a).await
    }

    /// `eth_call` the settlement: a revert is a certain failure, with the token's reason.
    async fn simulate(&self, tx: TransactionRequest) -> Result<(), SettleOutcome> {
        let Err(e) = self.provider.call(tx).await else {
            return Ok(());
        };
        // The node's message may carry the call's data: no long hex in our sentences.
        let msg = crate::x402::redact::mask_hex(&e.to_string());
        Err(match classify_revert(&e) {
            Some(reason) => SettleOutcome::Failed {
                reason,
                message: format!("the transfer would revert: {msg}"),
                tx: None,
            },
            None => failed(format!("the settlement could not be simulated: {msg}")),
        })
    }

    /// Poll for a receipt until `timeout`, which bounds the whole wait (a poll that gets no
    /// answer is cut off at the deadline).
    pub async fn wait_receipt(&self, tx: B256, timeout: Duration) -> Option<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + timeout;
        // A local node mines right after answering the send: the first empty poll is common,
        // so retry soon (0.5 ms) and back off from there.
        let mut pause = Duration::from_micros(500);
        loop {
            let poll = self.provider.get_transaction_receipt(tx);
            match tokio::time::timeout_at(deadline, poll).await {
                Ok(Ok(Some(r))) => return Some(r),
                Err(_) => return None,
                Ok(_) => {}
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
        let filter = alloy_rpc_types_eth::Filter::new()
            .address(asset)
            .event_signature(Token::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(a.from.into_word())
            .topic2(a.nonce);
        let logs = self.recent_logs(filter, None).await?;
        Ok(logs.iter().find_map(|l| l.transaction_hash))
    }

    /// The logs matching `filter` from block `since` (`None`: the last `SEARCH_BLOCKS` blocks)
    /// to the latest.
    async fn recent_logs(
        &self,
        filter: alloy_rpc_types_eth::Filter,
        since: Option<u64>,
    ) -> Result<Vec<alloy_rpc_types_eth::Log>, String> {
        let latest = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| e.to_string())?;
        let from = since.unwrap_or(latest.saturating_sub(SEARCH_BLOCKS));
        let filter = filter.from_block(from).to_block(latest);
        self.provider
            .get_logs(&filter)
            .await
            .map_err(|e| e.to_string())
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
                    "this authorization's nonce is used on chain (cancelled, or settled more than {SEARCH_BLOCKS} blocks ago)"
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
        let filter = alloy_rpc_types_eth::Filter::new()
            .address(asset)
            .event_signature(vec![
                Token::AuthorizationUsed::SIGNATURE_HASH,
                Token::AuthorizationCanceled::SIGNATURE_HASH,
            ])
            .topic1(a.from.into_word())
            .topic2(a.nonce);
        let logs = self.recent_logs(filter, None).await?;
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
            "this authorization of {} is used on chain, by no transaction found in the last {SEARCH_BLOCKS} blocks",
            a.from
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
        let filter = alloy_rpc_types_eth::Filter::new()
            .address(asset)
            .event_signature(Token::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(from.into_word());
        let logs = self.recent_logs(filter, since).await?;
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
        // The one receipt rule: this payment's AuthorizationUsed and its Transfer, one tx.
        Ok(check_receipt(&r, asset, a) == SettleOutcome::Settled { tx })
    }

    /// Submit a signed `cancelAuthorization(authorizer, nonce)` with this chain's key (the
    /// buyer's gas key) and wait for its receipt: the transaction once mined with status 1.
    /// A dry run first: a revert (the authorization was used meanwhile) broadcasts nothing.
    pub async fn cancel_authorization(
        &self,
        asset: Address,
        a: &Authorization,
        sig: &Signature,
    ) -> Result<B256, String> {
        let Some(key) = self.keys.first() else {
            return Err("this chain access has no key to submit a cancellation".into());
        };
        let data = super::typed::cancel_call(a.from, a.nonce, sig).abi_encode();
        let tx = TransactionRequest::default()
            .with_from(key.address)
            .with_to(asset)
            .with_input(data);
        let message = |o: SettleOutcome| match o {
            SettleOutcome::Failed { message, .. } | SettleOutcome::Unknown { message } => message,
            other => format!("{other:?}"),
        };
        self.simulate(tx.clone()).await.map_err(message)?;
        // Sent like a settlement (the key's nonce lock, again at a fresh nonce while the
        // authorization is unused); a use of it meanwhile makes the cancellation moot.
        let hash = self
            .broadcast(key, tx, super::settler::Job::One { asset, a })
            .await
            .map_err(message)?
            .hash;
        match self.wait_receipt(hash, self.receipt_timeout).await {
            Some(r) if r.status() => Ok(hash),
            Some(_) => Err(format!("the cancellation {hash} reverted")),
            None => Err(format!("no receipt for the cancellation {hash} yet")),
        }
    }
}

/// Status 1 is not enough: the receipt must prove *this* payment, by its own identity. The
/// token (`asset`) must have emitted `AuthorizationUsed(authorizer = a.from, nonce = a.nonce)`,
/// and its next log must be the `Transfer(a.from → a.to, a.value)` of that same call (EIP-3009
/// tokens mark the authorization used, then transfer). `a.to` is the payTo the payment was
/// matched against. Anything else, however genuine (an older transfer of the same payer, another
/// nonce, a look-alike event from another contract), is not this payment's settlement.
pub fn check_receipt(r: &TransactionReceipt, asset: Address, a: &Authorization) -> SettleOutcome {
    let tx = r.transaction_hash;
    if !r.status() {
        return SettleOutcome::Failed {
            reason: Reason::TransactionFailed,
            message: format!(
                "the settlement transaction {} reverted",
                crate::x402::redact::mask_hex(&format!("{tx:#x}"))
            ),
            tx: Some(tx),
        };
    }
    match proves_payment(r.inner.logs().iter().map(|l| &l.inner), asset, a) {
        Ok(()) => SettleOutcome::Settled { tx },
        Err(m) => SettleOutcome::Failed {
            reason: Reason::ReceiptMismatch,
            message: format!(
                "transaction {} is not this payment's settlement ({}): {}",
                crate::x402::redact::mask_hex(&format!("{tx:#x}")),
                m.code(),
                m
            ),
            tx: Some(tx),
        },
    }
}

/// Why a successful transaction's logs do not prove a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptMismatch {
    #[error("it carries no AuthorizationUsed of this payer from the token")]
    NoAuthorizationUsed,
    #[error("it used another authorization of this payer (another nonce), not this payment's")]
    OtherNonce,
    #[error("this payment's AuthorizationUsed was emitted by another contract, not the token")]
    OtherContract,
    #[error("no Transfer of the token follows this payment's AuthorizationUsed")]
    NoTransfer,
    #[error("its Transfer is from another address than the payer")]
    OtherPayer,
    #[error("its Transfer pays another address than this payment's payTo")]
    OtherPayTo,
    #[error("its Transfer moves another amount than this payment's value")]
    OtherAmount,
}

impl ReceiptMismatch {
    /// A short machine-readable name, carried in messages and the journal.
    pub fn code(self) -> &'static str {
        match self {
            ReceiptMismatch::NoAuthorizationUsed => "no_authorization_used",
            ReceiptMismatch::OtherNonce => "other_nonce",
            ReceiptMismatch::OtherContract => "other_contract",
            ReceiptMismatch::NoTransfer => "no_transfer",
            ReceiptMismatch::OtherPayer => "other_payer",
            ReceiptMismatch::OtherPayTo => "other_pay_to",
            ReceiptMismatch::OtherAmount => "other_amount",
        }
    }
}

/// The rule of [`check_receipt`] over a successful transaction's logs, in order.
pub fn proves_payment<'a>(
    logs: impl IntoIterator<Item = &'a alloy_primitives::Log>,
    asset: Address,
    a: &Authorization,
) -> Result<(), ReceiptMismatch> {
    let logs: Vec<&alloy_primitives::Log> = logs.into_iter().collect();
    let used = |l: &alloy_primitives::Log| Token::AuthorizationUsed::decode_log_data(&l.data).ok();
    let ours = logs.iter().position(|l| {
        l.address == asset && used(l).is_some_and(|u| u.authorizer == a.from && u.nonce == a.nonce)
    });
    let Some(at) = ours else {
        // Say what is there instead, most telling first.
        let elsewhere = logs.iter().any(|l| {
            l.address != asset
                && used(l).is_some_and(|u| u.authorizer == a.from && u.nonce == a.nonce)
        });
        let other_nonce = logs
            .iter()
            .any(|l| l.address == asset && used(l).is_some_and(|u| u.authorizer == a.from));
        return Err(if elsewhere {
            ReceiptMismatch::OtherContract
        } else if other_nonce {
            ReceiptMismatch::OtherNonce
        } else {
            ReceiptMismatch::NoAuthorizationUsed
        });
    };
    let transfer = logs[at + 1..]
        .iter()
        .find(|l| l.address == asset)
        .and_then(|l| Token::Transfer::decode_log_data(&l.data).ok())
        .ok_or(ReceiptMismatch::NoTransfer)?;
    if transfer.from != a.from {
        Err(ReceiptMismatch::OtherPayer)
    } else if transfer.to != a.to {
        Err(ReceiptMismatch::OtherPayTo)
    } else if transfer.value != a.value {
        Err(ReceiptMismatch::OtherAmount)
    } else {
        Ok(())
    }
}

/// A settlement that certainly did not happen, for a reason that is not the payer's fault.
pub(super) fn failed(message: String) -> SettleOutcome {
    SettleOutcome::Failed {
        reason: Reason::UnexpectedSettleError,
        message: crate::x402::redact::mask_hex(&message),
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

    mod receipts {
        use super::super::*;
        use alloy_primitives::{Log, LogData};
        use serde_json::json;

        const TOKEN: Address = Address::repeat_byte(0xaa);

        fn auth() -> Authorization {
            Authorization {
                from: Address::repeat_byte(1),
                to: Address::repeat_byte(2),
                value: U256::from(10_000),
                valid_after: U256::ZERO,
                valid_before: U256::from(u64::MAX),
                nonce: B256::repeat_byte(7),
            }
        }

        fn used(at: Address, authorizer: Address, nonce: B256) -> Log {
            let data: LogData = Token::AuthorizationUsed { authorizer, nonce }.encode_log_data();
            Log { address: at, data }
        }

        fn transfer(at: Address, from: Address, to: Address, value: u64) -> Log {
            let data = Token::Transfer {
                from,
                to,
                value: U256::from(value),
            }
            .encode_log_data();
            Log { address: at, data }
        }

        /// This payment's two logs, as the token emits them.
        fn genuine() -> Vec<Log> {
            let a = auth();
            vec![
                used(TOKEN, a.from, a.nonce),
                transfer(TOKEN, a.from, a.to, 10_000),
            ]
        }

        fn judged(logs: &[Log]) -> Result<(), ReceiptMismatch> {
            proves_payment(logs.iter(), TOKEN, &auth())
        }

        /// A receipt as a node returns it, with `logs` and `status`.
        fn receipt(status: bool, logs: &[Log]) -> TransactionReceipt {
            let logs: Vec<serde_json::Value> = logs
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    json!({
                        "address": l.address,
                        "topics": l.data.topics(),
                        "data": l.data.data,
                        "blockHash": B256::repeat_byte(9),
                        "blockNumber": "0x1",
                        "transactionHash": B256::repeat_byte(8),
                        "transactionIndex": "0x0",
                        "logIndex": format!("{i:#x}"),
                        "removed": false,
                    })
                })
                .collect();
            serde_json::from_value(json!({
                "type": "0x2",
                "status": if status { "0x1" } else { "0x0" },
                "cumulativeGasUsed": "0x1",
                "logs": logs,
                "logsBloom": format!("0x{}", "00".repeat(256)),
                "transactionHash": B256::repeat_byte(8),
                "transactionIndex": "0x0",
                "blockHash": B256::repeat_byte(9),
                "blockNumber": "0x1",
                "gasUsed": "0x1",
                "effectiveGasPrice": "0x1",
                "from": Address::repeat_byte(3),
                "to": TOKEN,
                "contractAddress": null,
            }))
            .unwrap()
        }

        #[test]
        fn the_payments_own_authorization_and_transfer_settle_it() {
            assert_eq!(judged(&genuine()), Ok(()));
            let r = receipt(true, &genuine());
            assert_eq!(
                check_receipt(&r, TOKEN, &auth()),
                SettleOutcome::Settled {
                    tx: B256::repeat_byte(8)
                }
            );
        }

        #[test]
        fn a_reverted_transaction_settles_nothing() {
            let r = receipt(false, &[]);
            let SettleOutcome::Failed {
                reason,
                message,
                tx,
            } = check_receipt(&r, TOKEN, &auth())
            else {
                panic!("a reverted receipt is a failure")
            };
            assert_eq!(reason, Reason::TransactionFailed);
            assert_eq!(tx, Some(B256::repeat_byte(8)));
            assert!(!crate::x402::redact::has_long_hex(&message), "{message}");
        }

        #[test]
        fn a_transfer_without_this_authorization_is_not_this_payment() {
            let a = auth();
            // The old genuine transfer of the same payer, same amount, same payTo: it is
            // another authorization's.
            let old = vec![
                used(TOKEN, a.from, B256::repeat_byte(6)),
                transfer(TOKEN, a.from, a.to, 10_000),
            ];
            assert_eq!(judged(&old), Err(ReceiptMismatch::OtherNonce));
            let bare = vec![transfer(TOKEN, a.from, a.to, 10_000)];
            assert_eq!(judged(&bare), Err(ReceiptMismatch::NoAuthorizationUsed));
            // The event, but emitted by a look-alike contract.
            let foreign = vec![
                used(Address::repeat_byte(0xbb), a.from, a.nonce),
                transfer(TOKEN, a.from, a.to, 10_000),
            ];
            assert_eq!(judged(&foreign), Err(ReceiptMismatch::OtherContract));
            // Another payer's authorization with the same nonce.
            let other_payer = vec![
                used(TOKEN, Address::repeat_byte(4), a.nonce),
                transfer(TOKEN, a.from, a.to, 10_000),
            ];
            assert_eq!(
                judged(&other_payer),
                Err(ReceiptMismatch::NoAuthorizationUsed)
            );
            let r = receipt(true, &old);
            let SettleOutcome::Failed {
                reason, message, ..
            } = check_receipt(&r, TOKEN, &auth())
            else {
                panic!("not this payment")
            };
            assert_eq!(reason, Reason::ReceiptMismatch);
            assert!(message.contains("other_nonce"), "{message}");
            assert!(!reason.is_payer_fault());
        }

        #[test]
        fn this_authorization_must_pay_the_payto_the_amount() {
            let a = auth();
            let case = |t: Log| vec![used(TOKEN, a.from, a.nonce), t];
            assert_eq!(
                judged(&case(transfer(
                    TOKEN,
                    a.from,
                    Address::repeat_byte(5),
                    10_000
                ))),
                Err(ReceiptMismatch::OtherPayTo)
            );
            assert_eq!(
                judged(&case(transfer(TOKEN, a.from, a.to, 9_999))),
                Err(ReceiptMismatch::OtherAmount)
            );
            assert_eq!(
                judged(&case(transfer(
                    TOKEN,
                    Address::repeat_byte(4),
                    a.to,
                    10_000
                ))),
                Err(ReceiptMismatch::OtherPayer)
            );
            // A Transfer from another contract is not the token's.
            assert_eq!(
                judged(&case(transfer(
                    Address::repeat_byte(0xbb),
                    a.from,
                    a.to,
                    10_000
                ))),
                Err(ReceiptMismatch::NoTransfer)
            );
            assert_eq!(
                judged(&[used(TOKEN, a.from, a.nonce)]),
                Err(ReceiptMismatch::NoTransfer)
            );
            // The right transfer, but before the authorization (another call's): not paired.
            let swapped = vec![
                transfer(TOKEN, a.from, a.to, 10_000),
                used(TOKEN, a.from, a.nonce),
            ];
            assert_eq!(judged(&swapped), Err(ReceiptMismatch::NoTransfer));
        }
    }
}
