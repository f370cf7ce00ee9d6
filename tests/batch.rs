//! Batched settlement (`batch:` under a `kind: local` facilitator): several payments in one
//! transaction through the batching contract (the project's own `Batcher` on the devnet, at
//! Multicall3's address). Real seller processes and a real anvil chain; every scenario ends
//! with the transfers on chain.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Signature, U256};
use alloy_provider::ext::AnvilApi;
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use common::*;
use serde_json::Value;
use x402_sidecar::devkit::devnet::{CHAIN_ID, USDC};
use x402_sidecar::evm::typed::{domain, sign, transfer_call};
use x402_sidecar::evm::{BatchOptions, Chain, MULTICALL3, SettleOutcome};
use x402_sidecar::x402::types::Authorization;

/// The same payment sent (again).
async fn send(http: &reqwest::Client, url: &str, payment: &(&'static str, String)) -> (u16, Value) {
    let (status, _, body) = post_json(http, url, seed_body(), &[(payment.0, &payment.1)]).await;
    (status, body)
}

/// The transaction an answer names as its settlement.
fn answered_tx(body: &Value) -> B256 {
    body["payment"]["transaction"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no settlement transaction in {body}"))
}

/// 16 concurrent paid calls to a seller that batches: every call is answered 200, each
/// payment is exactly one transfer on chain, and they went out in fewer transactions than
/// payments (counted on chain), each answer naming the transaction that carries its own
/// transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_paid_calls_settle_in_fewer_transactions_than_payments() {
    let admin = free_port();
    let w = World::start_with(|n| {
        n.settlement.batch = Some((50, 32));
        n.admin = Some(admin);
    })
    .await;
    let buyers = [
        w.buyer(10 * PRICE).await,
        w.buyer(10 * PRICE).await,
        w.buyer(10 * PRICE).await,
        w.buyer(10 * PRICE).await,
    ];
    let mut payments = Vec::new();
    for i in 0..16 {
        let b = &buyers[i % buyers.len()];
        payments.push((b.address(), signed_payment(&w.http, &w.paid_url(), b).await));
    }
    let calls: Vec<_> = payments
        .iter()
        .map(|(who, p)| {
            let (http, url, p, who) = (w.http.clone(), w.paid_url(), p.clone(), *who);
            tokio::spawn(async move { (who, send(&http, &url, &p).await) })
        })
        .collect();
    let mut answered: BTreeMap<B256, Vec<Address>> = BTreeMap::new();
    for c in calls {
        let (who, (status, body)) = c.await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", w.seller.logs());
        answered.entry(answered_tx(&body)).or_default().push(who);
    }
    let transfers = w.money().assert_transfers(16).await;
    for b in &buyers {
        w.money()
            .assert_holds(b.address(), 10 * PRICE - 4 * PRICE)
            .await;
    }
    // On chain: fewer transactions than payments, and each answer names a transaction that
    // carries a transfer from its payer.
    let mut on_chain: BTreeMap<B256, Vec<Address>> = BTreeMap::new();
    for t in &transfers {
        on_chain.entry(t.tx).or_default().push(t.from);
    }
    assert!(
        on_chain.len() < 16,
        "16 payments in {} transactions: not batched",
        on_chain.len()
    );
    for (tx, payers) in &answered {
        let mut got = on_chain.get(tx).cloned().unwrap_or_default();
        let mut want = payers.clone();
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "the payers answered with {tx} are its transfers' payers"
        );
    }
    // Every batch went to the batching contract.
    for tx in on_chain.keys().filter(|tx| on_chain[*tx].len() > 1) {
        let r = w
            .net
            .provider()
            .get_transaction_receipt(*tx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.to, Some(MULTICALL3));
    }
    assert!(
        w.seller.logs().contains("batch mined"),
        "{}",
        w.seller.logs()
    );
    // `/metrics` counts the same transactions as the chain: as many as on chain, the batches
    // among them, and payments per transaction adding up to the 16.
    let text = w
        .http
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str, labels: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let batches = on_chain.values().filter(|p| p.len() > 1).count();
    assert_eq!(
        metric("x402_settlement_transactions_total{", ""),
        on_chain.len() as f64,
        "{text}"
    );
    assert_eq!(
        metric("x402_settlement_transactions_total{", "kind=\"batch\""),
        batches as f64,
        "{text}"
    );
    assert_eq!(
        metric("x402_settlement_payments_per_transaction_sum", ""),
        16.0,
        "{text}"
    );
}

/// A batch where one authorization was used on chain by someone else (a front-run) after the
/// seller verified it: the others settle in one batch transaction, and that one is answered by
/// the seller's rule: the chain shows it paid this route, so the answer is delivered, naming
/// the front-runner's transaction. Four payments, four transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_run_payment_in_a_batch_is_delivered_and_the_others_settle_together() {
    let w = World::start_with(|n| n.settlement.batch = Some((100, 32))).await;
    let buyers = [w.buyer(10 * PRICE).await, w.buyer(10 * PRICE).await];
    let mut payments = Vec::new();
    for i in 0..4 {
        let b = &buyers[i % 2];
        payments.push((b.address(), signed_payment(&w.http, &w.paid_url(), b).await));
    }
    w.upstream.set(Mode::Slow(Duration::from_millis(1_500)));
    let calls: Vec<_> = payments
        .iter()
        .map(|(_, p)| {
            let (http, url, p) = (w.http.clone(), w.paid_url(), p.clone());
            tokio::spawn(async move { send(&http, &url, &p).await })
        })
        .collect();
    // All four verified and at the upstream: front-run the first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.upstream.calls() < 4 {
        assert!(Instant::now() < deadline, "{}", w.seller.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let front = front_run(&w.net, &payments[0].1).await;
    let mut answers = Vec::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", w.seller.logs());
        answers.push(answered_tx(&body));
    }
    assert_eq!(
        answers[0], front,
        "the front-run payment names the front-runner's tx"
    );
    let rest: BTreeSet<B256> = answers[1..].iter().copied().collect();
    assert_eq!(
        rest.len(),
        1,
        "the other three settled in one batch: {answers:?}"
    );
    assert!(!rest.contains(&front));
    let transfers = w.money().assert_transfers(4).await;
    assert_eq!(
        transfers.iter().filter(|t| rest.contains(&t.tx)).count(),
        3,
        "{transfers:?}"
    );
    for b in &buyers {
        w.money()
            .assert_holds(b.address(), 10 * PRICE - 2 * PRICE)
            .await;
    }
    let log = w.seller.logs();
    assert!(
        log.contains("the chain shows this payment settled"),
        "{log}"
    );
}

/// A payment header's authorization and signature.
fn decode(payment: &(&'static str, String)) -> (Authorization, Signature) {
    let v: Value = x402_sidecar::x402::codec::decode(payment.1.as_bytes(), 1 << 16).unwrap();
    let payload = &v["payload"];
    let a: Authorization = serde_json::from_value(payload["authorization"].clone()).unwrap();
    let sig: alloy_primitives::Bytes =
        serde_json::from_value(payload["signature"].clone()).unwrap();
    (a, Signature::from_raw(&sig).unwrap())
}

/// Submit the payment's `transferWithAuthorization` from an unrelated account, mined; its hash.
async fn front_run(net: &Devnet, payment: &(&'static str, String)) -> B256 {
    let (a, sig) = decode(payment);
    let stranger = net.gas_key().await.unwrap();
    let p = ProviderBuilder::new()
        .wallet(EthereumWallet::from(stranger))
        .connect_http(net.rpc_url.parse().unwrap());
    let tx = TransactionRequest::default()
        .with_to(USDC)
        .with_input(transfer_call(&a, &sig).abi_encode());
    let r = p
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(r.status());
    r.transaction_hash
}

/// Inside one batch transaction, a payment whose call fails (its authorization used by a
/// front-runner ordered before the batch in the same block, after the batch's dry run) fails
/// alone: the others settle in the batch, and the failed one's outcome is what the chain shows
/// for its own identity (settled by the front-runner's transaction). Settled through
/// `evm::Chain` with batching, automine off so that both land in one block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_failing_inside_the_batch_transaction_fails_alone() {
    let net = devnet().await;
    let opts = BatchOptions {
        window: Duration::from_millis(100),
        max_items: 8,
        contract: MULTICALL3,
    };
    let timeout = Duration::from_secs(20);
    let chain = |s: PrivateKeySigner| Chain::new(&net.rpc_url, CHAIN_ID, s, timeout).unwrap();
    let chain = chain(net.settler.clone()).with_batch(chain(net.settler.clone()), opts);
    assert_eq!(chain.batching(), Some(opts));
    let d = domain("USDC", "2", CHAIN_ID, USDC);
    let mut signed = Vec::new();
    for _ in 0..3 {
        let buyer = net.new_buyer(U256::from(10 * PRICE)).await.unwrap();
        let a = Authorization {
            from: buyer.address(),
            to: net.pay_to,
            value: U256::from(PRICE),
            valid_after: U256::ZERO,
            valid_before: U256::from(u64::MAX),
            nonce: B256::random(),
        };
        let sig = sign(&buyer, &a, &d).unwrap();
        signed.push((buyer, a, sig));
    }
    let p = net.provider();
    p.anvil_set_auto_mine(false).await.unwrap();
    let chain = std::sync::Arc::new(chain);
    let settles: Vec<_> = signed
        .iter()
        .map(|(_, a, sig)| {
            let (chain, a, sig) = (chain.clone(), a.clone(), *sig);
            tokio::spawn(async move { chain.settle(USDC, &a, &sig).await })
        })
        .collect();
    // The batch is in the node's pool: the settler's pending nonce moved.
    let settler = net.settler.address();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let latest = p.get_transaction_count(settler).await.unwrap();
        let pending = p.get_transaction_count(settler).pending().await.unwrap();
        if pending > latest {
            break;
        }
        assert!(Instant::now() < deadline, "no batch broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The front-runner pays a higher tip: ordered first in the next block.
    let (_, a1, sig1) = &signed[1];
    let stranger = net.gas_key().await.unwrap();
    let sp = ProviderBuilder::new()
        .wallet(EthereumWallet::from(stranger))
        .connect_http(net.rpc_url.parse().unwrap());
    let tx = TransactionRequest::default()
        .with_to(USDC)
        .with_input(transfer_call(a1, sig1).abi_encode())
        .with_gas_limit(200_000)
        .with_max_priority_fee_per_gas(100_000_000_000)
        .with_max_fee_per_gas(200_000_000_000);
    let front = *sp.send_transaction(tx).await.unwrap().tx_hash();
    p.anvil_mine(Some(1), None).await.unwrap();
    p.anvil_set_auto_mine(true).await.unwrap();
    let mut outcomes = Vec::new();
    for s in settles {
        outcomes.push(s.await.unwrap());
    }
    let batch = match &outcomes[0] {
        SettleOutcome::Settled { tx } => *tx,
        o => panic!("the first payment settled in the batch: {o:?}"),
    };
    assert_eq!(
        outcomes[2],
        SettleOutcome::Settled { tx: batch },
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        SettleOutcome::Settled { tx: front },
        "{outcomes:?}"
    );
    // Asked again by the batch's hash (a retry after `settlement_pending`), the front-run
    // payment is still the front-runner's settlement.
    assert_eq!(
        chain.by_tx(batch, USDC, a1).await,
        SettleOutcome::Settled { tx: front }
    );
    assert_eq!(
        chain.by_tx(batch, USDC, &signed[0].1).await,
        SettleOutcome::Settled { tx: batch }
    );
    let r = p.get_transaction_receipt(batch).await.unwrap().unwrap();
    let fr = p.get_transaction_receipt(front).await.unwrap().unwrap();
    assert!(r.status() && fr.status());
    assert_eq!(r.block_number, fr.block_number, "one block");
    let money = Money::new(&net, PRICE);
    money.assert_transfers(3).await;
    for (b, _, _) in &signed {
        money.assert_holds(b.address(), 9 * PRICE).await;
    }
}
