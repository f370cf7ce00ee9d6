//! Chain access for the local facilitator: the reads verification needs (nonce state, balance,
//! a dry run of the transfer) and the settler, which submits `transferWithAuthorization`.
//!
//! Settlements are pipelined: the settler's own tx nonce is assigned under a short lock that
//! covers only "pick nonce + broadcast"; receipts are awaited outside it, so concurrent
//! settlements neither collide on a nonce nor wait for each other's blocks.

use std::time::Duration;

use alloy_network::{Ethereum, EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::{TransactionReceipt, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};
use tokio::sync::Mutex;

use super::typed::IEip3009Token as Token;
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
    /// Connect (lazily: no request is made until first use).
    pub fn new(
        rpc_url: &str,
        chain_id: u64,
        settler: PrivateKeySigner,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        let url = rpc_url
            .parse()
            .map_err(|_| ChainError::BadUrl(rpc_url.to_string()))?;
        let settler_addr = settler.address();
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .wallet(EthereumWallet::from(settler))
            .connect_http(url)
            .erased();
        Ok(Chain {
            provider,
            settler: Some(settler_addr),
            chain_id,
            next_nonce: Mutex::new(None),
            receipt_timeout,
        })
    }

    /// Reads only (no key): what a seller whose facilitator is remote needs to reconcile.
    pub fn read_only(
        rpc_url: &str,
        chain_id: u64,
        receipt_timeout: Duration,
    ) -> Result<Self, ChainError> {
        let url = rpc_url
            .parse()
            .map_err(|_| ChainError::BadUrl(rpc_url.to_string()))?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(url)
            .erased();
        Ok(Chain {
            provider,
            settler: None,
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

    async fn view(&self, to: Address, data: Vec<u8>) -> Result<Bytes, String> {
        let tx = TransactionRequest::default().with_to(to).with_input(data);
        self.provider.call(tx).await.map_err(|e| e.to_string())
    }

    /// `authorizationState(from, nonce)`: true once the nonce was used or cancelled.
    pub async fn authorization_used(
        &self,
        asset: Address,
        from: Address,
        nonce: B256,
    ) -> Result<bool, String> {
        let out = self
            .view(
                asset,
                Token::authorizationStateCall {
                    authorizer: from,
                    nonce,
                }
                .abi_encode(),
            )
            .await?;
        Token::authorizationStateCall::abi_decode_returns(&out).map_err(|e| e.to_string())
    }

    /// `balanceOf(who)`.
    pub async fn balance(&self, asset: Address, who: Address) -> Result<U256, String> {
        let out = self
            .view(asset, Token::balanceOfCall { account: who }.abi_encode())
            .await?;
        Token::balanceOfCall::abi_decode_returns(&out).map_err(|e| e.to_string())
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

    /// The calldata of `transferWithAuthorization` for `a` signed with `sig`.
    pub fn settle_call(a: &Authorization, sig: &alloy_primitives::Signature) -> Vec<u8> {
        Token::transferWithAuthorizationCall {
            from: a.from,
            to: a.to,
            value: a.value,
            validAfter: a.valid_after,
            validBefore: a.valid_before,
            nonce: a.nonce,
            v: 27 + sig.v() as u8,
            r: sig.r().into(),
            s: sig.s().into(),
        }
        .abi_encode()
    }

    /// Submit `transferWithAuthorization` and wait for its receipt.
    pub async fn settle(
        &self,
        asset: Address,
        a: &Authorization,
        sig: &alloy_primitives::Signature,
    ) -> SettleOutcome {
        let Some(settler) = self.settler else {
            return SettleOutcome::Failed {
                reason: Reason::UnexpectedSettleError,
                message: "this chain access is read-only: it has no settler key".into(),
                tx: None,
            };
        };
        let data = Self::settle_call(a, sig);
        // Dry run first: a revert here means nothing is broadcast and the outcome is certain.
        let dry = TransactionRequest::default()
            .with_from(settler)
            .with_to(asset)
            .with_input(data.clone());
        if let Err(e) = self.provider.call(dry).await {
            let msg = e.to_string();
            return match revert_reason(&msg) {
                Some(reason) => SettleOutcome::Failed {
                    reason,
                    message: format!("the transfer would revert: {msg}"),
                    tx: None,
                },
                None => SettleOutcome::Failed {
                    reason: Reason::UnexpectedSettleError,
                    message: format!("the settlement could not be simulated: {msg}"),
                    tx: None,
                },
            };
        }
        let fees = match self.provider.estimate_eip1559_fees().await {
            Ok(f) => f,
            Err(e) => {
                return SettleOutcome::Failed {
                    reason: Reason::UnexpectedSettleError,
                    message: format!("gas fees could not be read: {e}"),
                    tx: None,
                };
            }
        };
        let tx = {
            let mut next = self.next_nonce.lock().await;
            let nonce = match *next {
                Some(n) => n,
                None => match self.provider.get_transaction_count(settler).pending().await {
                    Ok(n) => n,
                    Err(e) => {
                        return SettleOutcome::Failed {
                            reason: Reason::UnexpectedSettleError,
                            message: format!("the settler nonce could not be read: {e}"),
                            tx: None,
                        };
                    }
                },
            };
            let req = TransactionRequest::default()
                .with_from(settler)
                .with_to(asset)
                .with_input(data)
                .with_chain_id(self.chain_id)
                .with_nonce(nonce)
                .with_gas_limit(SETTLE_GAS)
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
            match self.provider.send_transaction(req).await {
                Ok(pending) => {
                    *next = Some(nonce + 1);
                    *pending.tx_hash()
                }
                Err(e) => {
                    // Unknown whether the node kept the nonce: read it again next time.
                    *next = None;
                    return SettleOutcome::Failed {
                        reason: Reason::UnexpectedSettleError,
                        message: format!(
                            "the settlement transaction was not accepted by the node: {e}"
                        ),
                        tx: None,
                    };
                }
            }
        };
        match self.wait_receipt(tx, self.receipt_timeout).await {
            Some(r) => check_receipt(&r, asset, a),
            None => SettleOutcome::Pending { tx },
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
}
