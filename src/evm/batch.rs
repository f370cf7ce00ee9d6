//! Batched settlement (opt-in per facilitator, `batch:` under a `kind: local` entry): the
//! settlements that arrive within a short window (or until `max_items`) go out in one
//! transaction, a Multicall3 `aggregate3((address,bool,bytes)[])` whose calls are the
//! payments' `transferWithAuthorization`, each with `allowFailure` set.
//!
//! - On public chains the batching contract is the canonical Multicall3 at
//!   [`MULTICALL3`]; on the devnet the project's own `devnet/contracts/Batcher.sol`, the same
//!   ABI, placed by the dev kit at that same address.
//! - Before the batch is sent, one `eth_call` of the whole batch is its dry run: a payment
//!   whose call would revert there is answered at once (not charged, with the token's
//!   reason) and left out.
//! - Each payment's outcome is read from the batch's receipt by the one receipt rule
//!   ([`super::chain::check_receipt`]: its own `AuthorizationUsed(from, nonce)` and the
//!   token's `Transfer` right after it); a payment whose call failed in the batch (used
//!   meanwhile, a front-run) is what the chain shows for its own identity. One failing
//!   payment never fails the others.
//! - Each caller of [`super::Chain::settle`] waits only for its own payment's outcome. A
//!   window that collects one payment sends it alone, as without batching.
//!
//! The batch goes through the same pipeline as one payment (key pool, nonce lock and lease,
//! nonce errors, stuck-transaction replacement, receipt deadline), in
//! [`super::settler`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, Signature, address};
use alloy_provider::Provider;
use alloy_rpc_types_eth::{TransactionReceipt, TransactionRequest};
use alloy_sol_types::{Revert, SolCall, SolError, sol};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::chain::{Chain, SETTLE_GAS, SettleOutcome, check_receipt, failed, revert_reason};
use super::settler::{Job, Mined};
use super::typed::transfer_call;
use crate::x402::reason::Reason;
use crate::x402::types::Authorization;

/// The canonical Multicall3, at the same address on every chain it is deployed to (and on
/// the devnet, where the dev kit places the project's own `Batcher` there).
pub const MULTICALL3: Address = address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// The largest batch: 64 payments at the single settlement's gas bound stay below 2^24 gas,
/// the per-transaction cap of EIP-7825.
pub const MAX_ITEMS: usize = 64;

/// A batch's gas on top of its payments' own bounds (the base transaction and the contract's
/// loop).
const BATCH_OVERHEAD_GAS: u64 = 40_000;

sol! {
    /// Multicall3's `aggregate3` (the only function the settler uses).
    interface IMulticall3 {
        struct Call3 {
            address target;
            bool allowFailure;
            bytes callData;
        }
        struct CallResult {
            bool success;
            bytes returnData;
        }
        function aggregate3(Call3[] calldata calls) external payable returns (CallResult[] memory returnData);
    }
}

/// How settlements are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// How long the first payment of a batch waits for others.
    pub window: Duration,
    /// A batch is sent as soon as it holds this many payments (2..=[`MAX_ITEMS`]).
    pub max_items: usize,
    /// The batching contract (Multicall3's `aggregate3` ABI).
    pub contract: Address,
}

/// Gas limit of a batch of `n` payments.
pub(super) fn batch_gas(n: usize) -> u64 {
    BATCH_OVERHEAD_GAS + SETTLE_GAS * n as u64
}

/// One payment waiting in a batch.
struct Item {
    asset: Address,
    auth: Authorization,
    sig: Signature,
    reply: oneshot::Sender<SettleOutcome>,
}

/// The batcher of one chain: a queue, and the task that cuts it into batches (started on
/// first use, on the caller's runtime; it ends when the chain is dropped).
pub(crate) struct Batcher {
    opts: BatchOptions,
    /// The chain the batches are sent on: the same keys (and so the same nonce locks, which
    /// are per key in the process), without batching.
    worker: Arc<Chain>,
    queue: OnceLock<mpsc::UnboundedSender<Item>>,
}

impl Batcher {
    pub(crate) fn new(worker: Chain, opts: BatchOptions) -> Batcher {
        Batcher {
            opts,
            worker: Arc::new(worker),
            queue: OnceLock::new(),
        }
    }

    pub(crate) fn options(&self) -> BatchOptions {
        self.opts
    }

    pub(crate) fn worker(&self) -> &Chain {
        &self.worker
    }

    /// Settle one payment in the next batch; its own outcome.
    pub(crate) async fn settle(
        &self,
        asset: Address,
        a: &Authorization,
        sig: &Signature,
    ) -> SettleOutcome {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(collect(rx, self.worker.clone(), self.opts));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let item = Item {
            asset,
            auth: a.clone(),
            sig: *sig,
            reply,
        };
        if queue.send(item).is_err() {
            return failed("the settlement batcher has stopped".into());
        }
        answer.await.unwrap_or_else(|_| SettleOutcome::Unknown {
            message: "the batch settling this payment ended without its outcome".into(),
        })
    }
}

/// Cut the queue into batches: the first payment opens a window; the batch leaves when the
/// window closes or it is full, and is settled on its own task while the next one collects.
async fn collect(mut rx: mpsc::UnboundedReceiver<Item>, chain: Arc<Chain>, opts: BatchOptions) {
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let until = tokio::time::Instant::now() + opts.window;
        while items.len() < opts.max_items {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(item)) => items.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        let chain = chain.clone();
        tokio::spawn(async move { chain.settle_batch(items, opts.contract).await });
    }
}

/// The answer to each payment, in order.
fn reply_all(items: Vec<Item>, outcome: impl Fn() -> SettleOutcome) {
    for i in items {
        let _ = i.reply.send(outcome());
    }
}

impl Chain {
    /// Settle `items` in one transaction through `contract` (alone when one is left), and
    /// answer each with its own outcome.
    async fn settle_batch(&self, items: Vec<Item>, contract: Address) {
        if items.len() == 1 {
            return self.settle_alone(items).await;
        }
        let Some(key) = self.pick_key() else {
            return reply_all(items, || {
                failed("this chain access is read-only: it has no settler key".into())
            });
        };
        let calls = |items: &[Item]| {
            let calls = items
                .iter()
                .map(|i| IMulticall3::Call3 {
                    target: i.asset,
                    allowFailure: true,
                    callData: transfer_call(&i.auth, &i.sig).abi_encode().into(),
                })
                .collect();
            TransactionRequest::default()
                .with_from(key.address)
                .with_to(contract)
                .with_input(IMulticall3::aggregate3Call { calls }.abi_encode())
        };
        // Dry run of the whole batch: a payment whose call would revert is answered now.
        let results = match self.dry_run(calls(&items)).await {
            Ok(r) if r.len() == items.len() => r,
            Ok(_) | Err(_) => {
                warn!(contract = %contract, "the batching contract could not be dry-run: settling this batch's payments one by one");
                return self.settle_alone(items).await;
            }
        };
        let mut kept = Vec::with_capacity(items.len());
        for (item, r) in items.into_iter().zip(results) {
            if r.success {
                kept.push(item);
            } else {
                let _ = item.reply.send(would_revert(&r.returnData));
            }
        }
        if kept.len() <= 1 {
            return self.settle_alone(kept).await;
        }
        let payments: Vec<(Address, Authorization)> =
            kept.iter().map(|i| (i.asset, i.auth.clone())).collect();
        let job = Job::Batch { items: &payments };
        let sent = match self.broadcast(key, calls(&kept), job).await {
            Ok(sent) => sent,
            Err(outcome) => return reply_all(kept, || outcome.clone()),
        };
        let hash = sent.hash;
        let mined = self.mined(key, sent, job).await;
        if let Mined::Receipt(r, _) = &mined {
            info!(settler = %key.address, tx = %r.transaction_hash, payments = kept.len(), gas_used = r.gas_used, "batch mined");
        }
        match mined {
            Mined::Pending(tx) => reply_all(kept, || SettleOutcome::Pending { tx }),
            Mined::Done(o) => reply_all(kept, || o.clone()),
            Mined::Receipt(r, _) => {
                for item in kept {
                    let o = self.item_outcome(Some(&r), item.asset, &item.auth).await;
                    let _ = item.reply.send(o);
                }
            }
            Mined::Gone => {
                info!(tx = %hash, "the batch's nonce was used by another transaction: each payment is read from the chain");
                for item in kept {
                    let o = self.item_outcome(None, item.asset, &item.auth).await;
                    let _ = item.reply.send(o);
                }
            }
        }
    }

    /// Each payment settled by itself, concurrently (as without batching).
    async fn settle_alone(&self, items: Vec<Item>) {
        let each = items.into_iter().map(|i| async move {
            let o = self.settle_one(i.asset, &i.auth, &i.sig).await;
            let _ = i.reply.send(o);
        });
        futures_join(each).await;
    }

    /// `eth_call` of an `aggregate3`: each call's result.
    async fn dry_run(
        &self,
        tx: TransactionRequest,
    ) -> Result<Vec<IMulticall3::CallResult>, String> {
        let out = self.provider().call(tx).await.map_err(|e| e.to_string())?;
        IMulticall3::aggregate3Call::abi_decode_returns(&out).map_err(|e| e.to_string())
    }

    /// One payment of a mined batch: its own logs in the receipt `r`, else what the chain
    /// shows for its identity (settled by another transaction, a front-run; or unused: its
    /// call failed in the batch, nothing was charged).
    async fn item_outcome(
        &self,
        r: Option<&TransactionReceipt>,
        asset: Address,
        a: &Authorization,
    ) -> SettleOutcome {
        if let Some(r) = r {
            let o = check_receipt(r, asset, a);
            if matches!(o, SettleOutcome::Settled { .. }) {
                return o;
            }
        }
        match self.settlement_of(asset, a).await {
            Ok(Some(o)) => o,
            Ok(None) => SettleOutcome::Failed {
                reason: Reason::TransactionFailed,
                message: "this payment's transfer failed inside the settlement batch; nothing was charged"
                    .into(),
                tx: r.map(|r| r.transaction_hash),
            },
            Err(e) => SettleOutcome::Unknown {
                message: format!("the batch was mined; this payment's state could not be read: {e}"),
            },
        }
    }
}

impl Chain {
    /// With batching on, the batching contract as the chain shows it: `None` when batching is
    /// off; else `Ok(address)` when it has code and answers an empty `aggregate3`, or the
    /// sentence saying why batches would fail (each payment would then be settled alone).
    pub async fn check_batcher(&self) -> Option<Result<Address, String>> {
        let contract = self.batch.as_ref()?.opts.contract;
        Some(self.batcher_answers(contract).await)
    }

    async fn batcher_answers(&self, contract: Address) -> Result<Address, String> {
        let code = self
            .provider()
            .get_code_at(contract)
            .await
            .map_err(|e| format!("the batching contract {contract} could not be read: {e}"))?;
        if code.is_empty() {
            return Err(format!(
                "there is no contract at the batching address {contract} on chain {}: every batch would fall back to one transaction per payment",
                self.chain_id
            ));
        }
        let probe = TransactionRequest::default()
            .with_to(contract)
            .with_input(IMulticall3::aggregate3Call { calls: vec![] }.abi_encode());
        match self.provider().call(probe).await {
            Ok(out) if IMulticall3::aggregate3Call::abi_decode_returns(&out).is_ok() => {
                Ok(contract)
            }
            _ => Err(format!(
                "the contract at {contract} does not answer Multicall3's aggregate3: every batch would fall back to one transaction per payment"
            )),
        }
    }
}

/// A payment whose call reverts in the dry run: certainly not settled, with the token's reason.
fn would_revert(data: &[u8]) -> SettleOutcome {
    let why = Revert::abi_decode(data)
        .map(|r| r.reason)
        .unwrap_or_else(|_| "execution reverted".into());
    SettleOutcome::Failed {
        reason: revert_reason(&why).unwrap_or(Reason::TransactionFailed),
        message: crate::x402::redact::mask_hex(&format!("the transfer would revert: {why}")),
        tx: None,
    }
}

/// Run the futures concurrently on this task; done when all are.
async fn futures_join<F: std::future::Future<Output = ()>>(each: impl Iterator<Item = F>) {
    let mut all: Vec<std::pin::Pin<Box<F>>> = each.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        all.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if all.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_batch_stays_below_the_transaction_gas_cap() {
        assert!(batch_gas(MAX_ITEMS) < 1 << 24);
        assert_eq!(
            IMulticall3::aggregate3Call::SELECTOR,
            [0x82, 0xad, 0x56, 0xcb],
            "Multicall3's aggregate3 selector"
        );
    }

    #[test]
    fn a_dry_run_revert_is_the_tokens_reason() {
        let data = Revert::from("FiatTokenV2: authorization is used or canceled").abi_encode();
        let SettleOutcome::Failed { reason, tx, .. } = would_revert(&data) else {
            panic!("a revert is a failure")
        };
        assert_eq!((reason, tx), (Reason::NonceUsed, None));
        let SettleOutcome::Failed { reason, .. } = would_revert(&[]) else {
            panic!("a revert is a failure")
        };
        assert_eq!(reason, Reason::TransactionFailed);
    }
}
