//! The settler as an operator runs it: replicas sharing one settler key (through Redis), a key
//! pool, something else using the key, an RPC that accepts connections and never answers, and
//! a key without gas. Real sidecar processes, a real anvil chain, a real Redis; every scenario
//! ends with the transfers on chain.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, U256};
use alloy_provider::ext::AnvilApi;
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer_local::PrivateKeySigner;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x402_sidecar::devkit::nodes::SettledBy;
use x402_sidecar::evm::keys::DEV_KEYS;

/// One paid call: the 402, a fresh authorization signed by `buyer`, the paid request. The
/// status, the answer, and the payment header (to send the same payment again).
async fn pay(
    http: &reqwest::Client,
    url: &str,
    buyer: &PrivateKeySigner,
) -> (u16, Value, (&'static str, String)) {
    let payment = signed_payment(http, url, buyer).await;
    let (status, body) = send_again(http, url, &payment).await;
    (status, body, payment)
}

/// The same payment sent (again).
async fn send_again(
    http: &reqwest::Client,
    url: &str,
    payment: &(&'static str, String),
) -> (u16, Value) {
    let (status, _, body) = post_json(http, url, seed_body(), &[(payment.0, &payment.1)]).await;
    (status, body)
}

/// Two seller processes on one settler key, sharing claims and the key's nonce lease through
/// Redis — what `deploy/kubernetes` ships. Alternating sequential calls, then concurrent ones
/// on both: every paid call settles, one transfer each, no nonce failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sellers_on_one_settler_key_settle_every_paid_call() {
    two_sellers_sharing(None).await;
}

/// The same with a pool of two keys on both sellers (the recommended set-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sellers_sharing_a_pool_of_two_keys_settle_every_paid_call() {
    two_sellers_sharing(Some(["X402_TEST_POOL_A", "X402_TEST_POOL_B"])).await;
}

async fn two_sellers_sharing(pool: Option<[&str; 2]>) {
    let by = pool.map(|envs| SettledBy::Pool {
        key_envs: envs.iter().map(|e| e.to_string()).collect(),
    });
    let edit = |n: &mut SellerNode| {
        n.store = REDIS.into();
        if let Some(by) = &by {
            n.settlement.by = by.clone();
        }
    };
    let net = devnet().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sellers = Vec::new();
    for name in ["seller-a", "seller-b"] {
        let mut node = seller_node(free_port(), &upstream.url, &net);
        edit(&mut node);
        let launch = launch(dir.path(), name)
            .env(SETTLER_ENV, net.settler_key_hex())
            .env("X402_TEST_POOL_A", DEV_KEYS[1])
            .env("X402_TEST_POOL_B", DEV_KEYS[2]);
        sellers.push(run(launch, &node.yaml(), node.listen).await);
    }
    let http = reqwest::Client::new();
    let urls: Vec<String> = sellers.iter().map(|s| format!("{}/x402", s.url)).collect();
    let buyer = net.new_buyer(U256::from(100 * PRICE)).await.unwrap();
    let mut paid = 0;
    for i in 0..10 {
        let (status, body, _) = pay(&http, &urls[i % 2], &buyer).await;
        assert_eq!(status, 200, "alternating call {i}: {body}");
        paid += 1;
    }
    let mut calls = Vec::new();
    for i in 0..24 {
        let (http, url, buyer) = (http.clone(), urls[i % 2].clone(), buyer.clone());
        calls.push(tokio::spawn(async move { pay(&http, &url, &buyer).await }));
    }
    for (i, c) in calls.into_iter().enumerate() {
        let (status, body, _) = c.await.unwrap();
        assert_eq!(status, 200, "concurrent call {i}: {body}");
        paid += 1;
    }
    let money = Money::new(&net, PRICE);
    money.assert_transfers(paid).await;
    money
        .assert_holds(buyer.address(), 100 * PRICE - paid as u64 * PRICE)
        .await;
    for s in &sellers {
        let log = s.logs();
        assert!(!log.contains("unexpected_settle_error"), "{log}");
    }
}

/// A transaction from the settler key by someone else (a top-up script, an operator's wallet)
/// between two payments: the seller's cached nonce is taken, it reads the pending nonce again
/// and sends the same authorization; the buyer never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_transaction_from_the_settler_key_between_two_payments() {
    let w = World::start().await;
    let buyer = w.buyer(10 * PRICE).await;
    let (status, body, _) = pay(&w.http, &w.paid_url(), &buyer).await;
    assert_eq!(status, 200, "{body}");
    // The operator's wallet: the same key, a plain transfer, mined.
    let operator = ProviderBuilder::new()
        .wallet(EthereumWallet::from(w.net.settler.clone()))
        .connect_http(w.net.rpc_url.parse().unwrap());
    let tx = TransactionRequest::default()
        .with_to(Address::repeat_byte(0x42))
        .with_value(U256::from(1));
    let r = operator
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(r.status());
    let (status, body, _) = pay(&w.http, &w.paid_url(), &buyer).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_transfers(2).await;
    w.money()
        .assert_holds(buyer.address(), 10 * PRICE - 2 * PRICE)
        .await;
    assert!(
        w.seller.logs().contains("nonce taken"),
        "the second settlement met the taken nonce:\n{}",
        w.seller.logs()
    );
}

/// Two keys in the pool: used in turn, each with its own nonce; every call settles once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_settler_keys_is_used_in_turn() {
    let net = devnet().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = seller_node(free_port(), &upstream.url, &net);
    node.settlement.by = SettledBy::Pool {
        key_envs: vec!["X402_TEST_POOL_A".into(), "X402_TEST_POOL_B".into()],
    };
    let seller = run(
        launch(dir.path(), "seller")
            .env("X402_TEST_POOL_A", DEV_KEYS[1])
            .env("X402_TEST_POOL_B", DEV_KEYS[2]),
        &node.yaml(),
        node.listen,
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/x402", seller.url);
    let buyer = net.new_buyer(U256::from(10 * PRICE)).await.unwrap();
    let mut calls = Vec::new();
    for _ in 0..6 {
        let (http, url, buyer) = (http.clone(), url.clone(), buyer.clone());
        calls.push(tokio::spawn(async move { pay(&http, &url, &buyer).await }));
    }
    for c in calls {
        let (status, body, _) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let transfers = Money::new(&net, PRICE).assert_transfers(6).await;
    let mut senders = Vec::new();
    for t in &transfers {
        let tx = net
            .provider()
            .get_transaction_by_hash(t.tx)
            .await
            .unwrap()
            .unwrap();
        senders.push(tx.inner.signer());
    }
    let keys: Vec<Address> = [1, 2]
        .iter()
        .map(|i| DEV_KEYS[*i].parse::<PrivateKeySigner>().unwrap().address())
        .collect();
    for k in &keys {
        let n = senders.iter().filter(|s| *s == k).count();
        assert_eq!(n, 3, "key {k} sent {n} of the 6 settlements: {senders:?}");
    }
}

/// What the RPC proxy does with the traffic.
const PASS: u8 = 0;
/// Accept connections, read everything, answer nothing.
const BLACKHOLE: u8 = 1;
/// Pass until a broadcast's answer went back, then blackhole.
const AFTER_SEND: u8 = 2;
/// Pass until a broadcast arrives: drop it, and blackhole from then on.
const AT_SEND: u8 = 3;

/// A TCP proxy in front of the chain's RPC that can stop answering. A connection that lost
/// bytes stays silent for good (its stream is no longer whole).
struct RpcProxy {
    url: String,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    async fn start(target: &str) -> RpcProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (m, target) = (m.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    pipe(client, server, m).await;
                });
            }
        });
        RpcProxy { url, mode, task }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d, a, m) = (dead.clone(), armed.clone(), mode.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                return;
            }
            let chunk = &buf[..n];
            let sends = contains(chunk, b"eth_sendRawTransaction");
            match m.load(Ordering::SeqCst) {
                AT_SEND if sends => {
                    m.store(BLACKHOLE, Ordering::SeqCst);
                    d.store(true, Ordering::SeqCst);
                    continue;
                }
                AFTER_SEND if sends => a.store(true, Ordering::SeqCst),
                BLACKHOLE => d.store(true, Ordering::SeqCst),
                _ => {}
            }
            if d.load(Ordering::SeqCst) {
                continue;
            }
            if sw.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 {
                return;
            }
            if armed.swap(false, Ordering::SeqCst) {
                // The broadcast's answer goes back; nothing after it.
                mode.store(BLACKHOLE, Ordering::SeqCst);
            } else if mode.load(Ordering::SeqCst) == BLACKHOLE {
                dead.store(true, Ordering::SeqCst);
            }
            if dead.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The RPC accepts connections and never answers. Before any broadcast: `503
/// unexpected_verify_error` within the RPC deadline, nobody charged, the claim released. Once
/// the RPC is back, the same payment settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_rpc_before_the_broadcast_is_a_bounded_503_then_the_same_payment_settles() {
    // The proxy needs the devnet's address: the world's own seller stays idle, a second one
    // reaches the chain through the proxy.
    let w = World::start().await;
    let proxy = RpcProxy::start(&w.net.rpc_url).await;
    let mut node = w.seller_node();
    node.settlement.rpc_url = proxy.url.clone();
    node.settlement.rpc_timeout_ms = Some(1_000);
    node.settlement.receipt_timeout_ms = Some(2_000);
    let seller = w.start_seller("seller-proxied", &node).await;
    let url = format!("{}/x402", seller.url);
    let buyer = w.buyer(10 * PRICE).await;
    let payment = signed_payment(&w.http, &url, &buyer).await;
    proxy.set(BLACKHOLE);
    let t0 = Instant::now();
    let (status, body) = send_again(&w.http, &url, &payment).await;
    let took = t0.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unexpected_verify_error", "{body}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    w.money()
        .assert_not_charged(buyer.address(), 10 * PRICE)
        .await;
    proxy.set(PASS);
    let (status, body) = send_again(&w.http, &url, &payment).await;
    assert_eq!(status, 200, "{body}");
    w.money()
        .assert_paid_once(buyer.address(), 10 * PRICE)
        .await;
}

/// The RPC stops answering right after it took the broadcast: the receipt wait ends at
/// `receipt_timeout_ms` with `503 settlement_pending` (the buyer is charged on chain, the
/// answer withheld); once the RPC is back, the same payment gets the answer, charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_rpc_after_the_broadcast_is_settlement_pending_then_the_answer() {
    let w = World::start().await;
    let proxy = RpcProxy::start(&w.net.rpc_url).await;
    let mut node = w.seller_node();
    node.settlement.rpc_url = proxy.url.clone();
    node.settlement.rpc_timeout_ms = Some(1_000);
    node.settlement.receipt_timeout_ms = Some(2_000);
    let seller = w.start_seller("seller-proxied", &node).await;
    let url = format!("{}/x402", seller.url);
    let buyer = w.buyer(10 * PRICE).await;
    let payment = signed_payment(&w.http, &url, &buyer).await;
    proxy.set(AFTER_SEND);
    let t0 = Instant::now();
    let (status, body) = send_again(&w.http, &url, &payment).await;
    let took = t0.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "settlement_pending", "{body}");
    let pending_tx = body["transaction"].as_str().unwrap_or_default().to_string();
    assert!(pending_tx.starts_with("0x"), "{body}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(proxy.mode.load(Ordering::SeqCst), BLACKHOLE);
    // The broadcast did reach the chain.
    w.money()
        .assert_paid_once(buyer.address(), 10 * PRICE)
        .await;
    proxy.set(PASS);
    let (status, body) = send_again(&w.http, &url, &payment).await;
    assert_eq!(status, 200, "{body}");
    // The transaction that was pending is the one that counts.
    assert_eq!(
        body["payment"]["transaction"],
        pending_tx.as_str(),
        "{body}"
    );
    w.money()
        .assert_paid_once(buyer.address(), 10 * PRICE)
        .await;
}

/// The broadcast itself is lost (the RPC goes silent as it arrives): `503 settlement_pending`
/// within the RPC deadline, nothing on chain; once the RPC is back, the same payment finds
/// its transaction unknown to the node and the authorization unused, and settles it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broadcast_is_sent_again_when_the_same_payment_comes_back() {
    let w = World::start().await;
    let proxy = RpcProxy::start(&w.net.rpc_url).await;
    let mut node = w.seller_node();
    node.settlement.rpc_url = proxy.url.clone();
    node.settlement.rpc_timeout_ms = Some(1_000);
    node.settlement.receipt_timeout_ms = Some(2_000);
    let seller = w.start_seller("seller-proxied", &node).await;
    let url = format!("{}/x402", seller.url);
    let buyer = w.buyer(10 * PRICE).await;
    let payment = signed_payment(&w.http, &url, &buyer).await;
    proxy.set(AT_SEND);
    let t0 = Instant::now();
    let (status, body) = send_again(&w.http, &url, &payment).await;
    let took = t0.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "settlement_pending", "{body}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    w.money()
        .assert_not_charged(buyer.address(), 10 * PRICE)
        .await;
    proxy.set(PASS);
    let (status, body) = send_again(&w.http, &url, &payment).await;
    assert_eq!(status, 200, "{body}");
    w.money()
        .assert_paid_once(buyer.address(), 10 * PRICE)
        .await;
    // A second payment after that: the key's nonce is right again.
    let (status, body, _) = pay(&w.http, &url, &buyer).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_transfers(2).await;
}

/// A settler key without gas for its floor: `/readyz` is not ready and says why, the balance
/// is on `/metrics`, `check-config --online` fails with the same sentence; topped up, ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settler_below_the_gas_floor_is_not_ready_with_its_reason() {
    let net = devnet().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settler = PrivateKeySigner::random();
    // Gas for a few settlements only (the floor is 100).
    net.provider()
        .anvil_set_balance(settler.address(), U256::from(10u64).pow(U256::from(14)))
        .await
        .unwrap();
    let admin = free_port();
    let mut node = seller_node(free_port(), &upstream.url, &net);
    node.admin = Some(admin);
    node.settlement.gas_floor_settlements = Some(100);
    let key = format!("0x{}", x402_sidecar::util::hex(&settler.to_bytes()[..]));
    let seller = start_sidecar(dir.path(), "seller", node.listen, &node.yaml(), &key).await;
    let http = reqwest::Client::new();
    // Short of gas, the pod still takes traffic (`/readyz`, it answers 402s) but cannot settle
    // (`/readyz?settle`), and says why.
    let readyz = format!("http://127.0.0.1:{admin}/readyz?settle");
    let check = format!("settler_gas:{}", x402_sidecar::devkit::devnet::NETWORK);
    let by_name = |body: &Value| {
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check.as_str())
            .cloned()
            .unwrap_or_default()
    };
    let serve = http
        .get(readyz.trim_end_matches("?settle"))
        .send()
        .await
        .unwrap();
    assert_eq!(serve.status(), 200);
    let resp = http.get(&readyz).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["serve"], &body["settle"]),
        (&Value::Bool(true), &Value::Bool(false)),
        "{body}"
    );
    assert_eq!(by_name(&body)["ok"], false, "{body}");
    let why = by_name(&body)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains(&settler.address().to_string())
            && why.contains("less than the floor of 100 settlements"),
        "{body}"
    );
    let metrics = get_text(&http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    let line = format!(
        "x402_settler_balance_wei{{network=\"{}\",settler=\"{}\"}} 100000000000000",
        x402_sidecar::devkit::devnet::NETWORK,
        settler.address()
    );
    assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    // Before start, check-config --online says the same.
    let out = std::process::Command::new(bin())
        .args(["check-config", "--online", "--config"])
        .arg(seller.config.as_ref().unwrap())
        .env(SETTLER_ENV, &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("less than the floor of 100 settlements"),
        "{stdout}"
    );
    // Topped up: ready.
    net.provider()
        .anvil_set_balance(settler.address(), U256::from(10u64).pow(U256::from(18)))
        .await
        .unwrap();
    let resp = http.get(&readyz).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(by_name(&body)["ok"], true, "{body}");
    let out = std::process::Command::new(bin())
        .args(["check-config", "--online", "--config"])
        .arg(seller.config.as_ref().unwrap())
        .env(SETTLER_ENV, &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("enough for about"), "{stdout}");
}

/// A settlement stuck in the node's pool (automine off): after `replace_after_ms` it is sent
/// again at the same nonce with higher fees; the block mined then holds the replacement, and
/// the payment counts it: one transfer, the answer naming the replacement's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_settlement_is_replaced_with_higher_fees_and_the_replacement_counts() {
    let w = World::start_with(|n| {
        n.settlement.replace_after_ms = Some(400);
        n.settlement.receipt_timeout_ms = Some(15_000);
    })
    .await;
    let buyer = w.buyer(10 * PRICE).await;
    let payment = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    w.net.provider().anvil_set_auto_mine(false).await.unwrap();
    let call = {
        let (http, url, payment) = (w.http.clone(), w.paid_url(), payment.clone());
        tokio::spawn(async move { send_again(&http, &url, &payment).await })
    };
    // Wait for the first replacement, then mine one block.
    let deadline = Instant::now() + Duration::from_secs(10);
    let replaced = loop {
        let line = w
            .seller
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("replaced at the same nonce"))
            });
        if let Some(l) = line {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement:\n{}",
            w.seller.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    w.net.provider().anvil_mine(Some(1), None).await.unwrap();
    let (status, body) = call.await.unwrap();
    w.net.provider().anvil_set_auto_mine(true).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let first = replaced["from"].as_str().unwrap().to_string();
    let answered = body["payment"]["transaction"].as_str().unwrap().to_string();
    assert_ne!(
        answered, first,
        "the first broadcast was replaced, not mined"
    );
    let t = w
        .money()
        .assert_paid_once(buyer.address(), 10 * PRICE)
        .await;
    assert_eq!(format!("{:#x}", t.tx), answered);
    let first_receipt = w
        .net
        .provider()
        .get_transaction_receipt(first.parse().unwrap())
        .await
        .unwrap();
    assert!(
        first_receipt.is_none(),
        "the replaced transaction has no receipt"
    );
}

/// The node forgets a settlement (its pool flushed): the next settlement, sent at the key's
/// cached nonce, would wait forever behind the gap. It is sent again at the pending nonce and
/// settles; the forgotten payment, sent again by its buyer, settles too. Each charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_behind_a_nonce_gap_is_sent_again_at_the_gap() {
    let w = World::start_with(|n| {
        n.settlement.replace_after_ms = Some(300);
        n.settlement.receipt_timeout_ms = Some(1_500);
    })
    .await;
    let a = w.buyer(10 * PRICE).await;
    let b = w.buyer(10 * PRICE).await;
    let p = w.net.provider();
    // A is broadcast but never mined, then the node's pool is flushed.
    let first = signed_payment(&w.http, &w.paid_url(), &a).await;
    p.anvil_set_auto_mine(false).await.unwrap();
    let (status, body) = send_again(&w.http, &w.paid_url(), &first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("settlement_pending")),
        "{body}"
    );
    p.anvil_drop_all_transactions().await.unwrap();
    p.anvil_set_auto_mine(true).await.unwrap();
    // B goes out at the nonce after A's: a gap below it.
    let (status, body, _) = pay(&w.http, &w.paid_url(), &b).await;
    assert_eq!(status, 200, "{body}\n{}", w.seller.logs());
    assert!(w.seller.logs().contains("queued behind a nonce gap"));
    // A's buyer sends the same payment again: its transaction is gone, its authorization
    // unused, so it is settled now.
    let (status, body) = send_again(&w.http, &w.paid_url(), &first).await;
    assert_eq!(status, 200, "{body}");
    let money = w.money();
    money.assert_transfers(2).await;
    money.assert_holds(a.address(), 9 * PRICE).await;
    money.assert_holds(b.address(), 9 * PRICE).await;
}

/// `check-config --online` reads each paid route's token on its network's RPC: the project's
/// token as configured passes; a wrong EIP-712 name, wrong decimals, a payTo that is the token
/// itself or an address without a contract each fail with a sentence naming the accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_compares_each_routes_token_with_the_chain() {
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let node = seller_node(free_port(), "http://127.0.0.1:9", &net);
    let good = node.yaml();
    let asset = x402_sidecar::devkit::devnet::USDC.to_string();
    let run = |yaml: &str, name: &str| online_check(&net, dir.path(), yaml, name);
    let (ok, stdout) = run(&good, "good.yaml");
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("has 6 decimals and the EIP-712 domain USDC/2, as configured"),
        "{stdout}"
    );
    assert!(good.contains("name: USDC"), "{good}");
    let cases = [
        (
            good.replacen("name: USDC", "name: USD Coin", 1),
            "\"USD Coin\"",
        ),
        (
            with_decimals(&good, 18),
            "the token has 6 decimals, the configuration says 18",
        ),
        (
            good.replacen(&node_pay_to(&good), &asset, 1),
            "pay_to is the token contract itself",
        ),
        (
            good.replace(&asset, "\"0x000000000000000000000000000000000000dEaD\""),
            "there is no contract at asset",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let (ok, stdout) = run(yaml, &format!("bad{i}.yaml"));
        assert!(!ok, "case {i}: {stdout}");
        assert!(
            stdout.contains("inbound.routes[0].accepts[0]: PROBLEM:") && stdout.contains(want),
            "case {i}: {want} missing:\n{stdout}"
        );
    }
}

/// The `pay_to` value written in a node's YAML.
fn node_pay_to(yaml: &str) -> String {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("pay_to: "))
        .unwrap()
        .trim_matches('\'')
        .trim_matches('"')
        .to_string()
}

/// `yaml` with `decimals: n` beside the first accept's `pay_to`, at its indentation.
fn with_decimals(yaml: &str, n: u8) -> String {
    let line = yaml
        .lines()
        .find(|l| l.trim().starts_with("pay_to: "))
        .unwrap();
    let indent = &line[..line.len() - line.trim_start().len()];
    yaml.replacen(line, &format!("{indent}decimals: {n}\n{line}"), 1)
}

/// With batching on, `check-config --online` asks the batching contract: the devnet's own at
/// Multicall3's address answers `aggregate3`; an address without code is a problem named with
/// what it would cost (every batch settled one payment at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_asks_the_batching_contract() {
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = seller_node(free_port(), "http://127.0.0.1:9", &net);
    node.settlement.batch = Some((5, 8));
    let good = node.yaml();
    let run = |yaml: &str, name: &str| online_check(&net, dir.path(), yaml, name);
    let (ok, out) = run(&good, "good.yaml");
    assert!(ok, "{out}");
    let at = x402_sidecar::evm::MULTICALL3.to_string();
    assert!(
        out.contains(&format!("batching contract {at} answers aggregate3")),
        "{out}"
    );
    let line = good
        .lines()
        .find(|l| l.trim().starts_with("window_ms:"))
        .unwrap();
    let indent = &line[..line.len() - line.trim_start().len()];
    let nowhere = good.replacen(
        line,
        &format!("{line}\n{indent}contract: \"0x000000000000000000000000000000000000dEaD\""),
        1,
    );
    let (ok, out) = run(&nowhere, "nowhere.yaml");
    assert!(!ok, "{out}");
    assert!(
        out.contains("PROBLEM: there is no contract at the batching address")
            && out.contains("one transaction per payment"),
        "{out}"
    );
}

/// `check-config --online` on `yaml` (written to `dir/name`) with the devnet's settler key:
/// whether it passed, and what it printed.
fn online_check(net: &Devnet, dir: &std::path::Path, yaml: &str, name: &str) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", "--online", "--config"])
        .arg(&path)
        .env(SETTLER_ENV, net.settler_key_hex())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}
