//! The buyer's paying proxy end to end: roma-01-style requests go to a real outbound sidecar,
//! which pays real inbound sidecars on a real anvil chain. Every scenario checks the chain and
//! the ledger, not just the status.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x402_sidecar::buyer::ledger;
use x402_sidecar::devkit::nodes::{Breaker, BuyerNode, Fallback, Otlp, Retry, SellerEntry};
use x402_sidecar::x402::money::PriceSpec;

/// What the tests vary of the buyer node (the rest is [`buyer_node`]'s).
struct BuyerOpts {
    daily: u64,
    timeout_ms: u64,
    attempts: u32,
    threshold: u32,
    open_seconds: u64,
    fallback: &'static str,
    fallback_url: Option<String>,
    /// `outbound.fallback.secret_env`.
    fallback_secret_env: Option<&'static str>,
    store: &'static str,
    otlp: Option<Otlp>,
    /// `outbound.owners.log`.
    owners: &'static str,
    /// More environment variables for the buyer process.
    envs: Vec<(&'static str, String)>,
    /// Give the buyer a funded gas key (`outbound.gas_wallet`), to cancel authorizations.
    gas_key: bool,
    /// `outbound.max_authorization_seconds` (60 unless set).
    max_auth: u64,
}

impl Default for BuyerOpts {
    fn default() -> Self {
        BuyerOpts {
            daily: 1_000_000,
            timeout_ms: 10_000,
            attempts: 2,
            threshold: 3,
            open_seconds: 30,
            fallback: "error",
            fallback_url: None,
            fallback_secret_env: None,
            store: "memory",
            otlp: None,
            owners: "plain",
            envs: Vec::new(),
            gas_key: false,
            max_auth: 60,
        }
    }
}

struct Buyer {
    sidecar: Sidecar,
    key: PrivateKeySigner,
    ledger: std::path::PathBuf,
    /// How to start the same buyer again (its YAML, port and environment).
    yaml: String,
    port: u16,
    envs: Vec<(String, String)>,
}

impl Buyer {
    fn url(&self) -> String {
        format!("{}/x402", self.sidecar.url)
    }

    /// Each authorization's state: the last ledger line of each nonce.
    fn ledger(&self) -> Vec<ledger::Entry> {
        ledger::finals(&self.lines())
    }

    /// Every ledger line as written.
    fn lines(&self) -> Vec<ledger::Entry> {
        ledger::read(&self.ledger).unwrap()
    }

    /// Wait (up to `within`) until no authorization in the ledger is open any more; the states.
    async fn settled_ledger(&self, within: Duration) -> Vec<ledger::Entry> {
        let until = Instant::now() + within;
        loop {
            let l = self.ledger();
            if l.iter().all(|e| !e.open()) || Instant::now() > until {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Σ of the charged states (`paid`, `paid_no_answer`, `paid_no_delivery`).
    fn charged(&self) -> u64 {
        self.ledger()
            .iter()
            .filter(|e| e.charged())
            .map(|e| e.amount.parse::<u64>().unwrap())
            .sum()
    }
}

const BUYER_ENV: &str = "X402_TEST_BUYER_KEY";
const GAS_ENV: &str = "X402_TEST_GAS_KEY";

/// The tests' buyer node: the dev kit's with `sellers` in priority order and `o` applied.
fn buyer_node(
    port: u16,
    net: &Devnet,
    sellers: Vec<SellerEntry>,
    o: BuyerOpts,
    ledger: &std::path::Path,
) -> BuyerNode {
    let mut node = BuyerNode::new(port, net, BUYER_ENV, PriceSpec::Units(o.daily), ledger);
    node.sellers = sellers
        .into_iter()
        .enumerate()
        .map(|(i, s)| SellerEntry {
            priority: Some(i as u32 + 1),
            ..s
        })
        .collect();
    node.max_authorization_seconds = Some(o.max_auth);
    node.watch_interval_ms = Some(200);
    if o.gas_key {
        node.gas_key_env = Some(GAS_ENV.into());
    }
    node.timeout_ms = Some(o.timeout_ms);
    node.retry = Some(Retry {
        attempts: o.attempts,
        backoff_ms: 50,
    });
    node.breaker = Some(Breaker {
        failure_threshold: o.threshold,
        open_seconds: o.open_seconds,
    });
    node.fallback = Fallback {
        url: o.fallback_url,
        secret_env: o.fallback_secret_env.map(str::to_string),
        ..Fallback::mode(o.fallback)
    };
    node.owners = Some(o.owners.into());
    node.store = o.store.into();
    node.otlp = o.otlp;
    node
}

fn key_hex(k: &PrivateKeySigner) -> String {
    format!("0x{}", x402_sidecar::util::hex(&k.to_bytes()[..]))
}

async fn start_buyer(w: &World, sellers: Vec<SellerEntry>, mut o: BuyerOpts) -> Buyer {
    let key = w.buyer(5_000_000).await;
    let port = free_port();
    let ledger = w.dir.path().join(format!("ledger-{port}.jsonl"));
    let mut envs: Vec<(String, String)> = std::mem::take(&mut o.envs)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    envs.push((BUYER_ENV.into(), key_hex(&key)));
    if o.gas_key {
        envs.push((GAS_ENV.into(), key_hex(&w.net.gas_key().await.unwrap())));
    }
    let yaml = buyer_node(port, &w.net, sellers, o, &ledger).yaml();
    let sidecar = launch_buyer(w, &yaml, port, &envs, "").await;
    Buyer {
        sidecar,
        key,
        ledger,
        yaml,
        port,
        envs,
    }
}

async fn launch_buyer(
    w: &World,
    yaml: &str,
    port: u16,
    envs: &[(String, String)],
    suffix: &str,
) -> Sidecar {
    let mut l = launch(w.dir.path(), &format!("buyer-{port}{suffix}"));
    for (k, v) in envs {
        l = l.env(k, v.clone());
    }
    run(l, yaml, port).await
}

/// Kill the buyer with SIGKILL (nothing flushed, nothing finished) and start it again on the
/// same configuration, port and ledger.
async fn kill_and_restart(w: &World, b: &mut Buyer) {
    // SAFETY: signalling a child process we started, by its pid.
    unsafe { libc::kill(b.sidecar.pid() as i32, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.sidecar = launch_buyer(w, &b.yaml, b.port, &b.envs, "-restarted").await;
}

/// A seller the buyer may pay, at most 50 000 atomic units a call.
fn seller(name: &str, url: String, w: &World) -> SellerEntry {
    SellerEntry::new(name, &url, w.net.pay_to, PriceSpec::Units(50_000))
}

async fn buy(w: &World, b: &Buyer) -> (u16, reqwest::header::HeaderMap, Value) {
    post_json(&w.http, &b.url(), seed_body(), &[]).await
}

fn h<'a>(headers: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_through_the_outbound_proxy_pays_once_and_is_in_the_ledger() {
    let w = World::start().await;
    let b = start_buyer(
        &w,
        vec![seller("node-a", w.paid_url(), &w)],
        BuyerOpts::default(),
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-strategy-source"), "paid");
    assert_eq!(h(&headers, "x-payment-seller"), "node-a");
    assert!(
        h(&headers, "content-length").parse::<usize>().is_ok(),
        "a length keeps roma-01's connection alive"
    );
    assert_eq!(h(&headers, "x-payment-amount"), PRICE.to_string());
    let paid = w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    let tx = format!("{:#x}", paid.tx);
    assert_eq!(h(&headers, "x-payment-tx"), tx);
    assert!(
        headers.contains_key("payment-response"),
        "the seller's receipt is passed on"
    );
    // The seller's body, unchanged: its own payment block names the same transaction.
    assert_eq!(body["payment"]["receiptId"], tx);
    assert!(body["strategy"].is_object());
    let l = b.ledger();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (
            l[0].outcome.as_str(),
            l[0].tx.as_deref(),
            l[0].seller.as_str()
        ),
        ("paid", Some(tx.as_str()), "node-a")
    );
    assert_eq!(
        l[0].remote_request_id.as_deref(),
        body["metadata"]["requestId"].as_str()
    );
    assert_eq!(
        l[0].remote_payment_id.as_deref(),
        body["metadata"]["paymentId"].as_str()
    );
    assert!(l[0].disclaimer.as_deref().is_some_and(|d| !d.is_empty()));

    // The forward-proxy form: roma-01 uses the sidecar as its HTTP proxy for a configured seller.
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&b.sidecar.url).unwrap())
        .build()
        .unwrap();
    let r = via_proxy
        .post(w.paid_url())
        .header("Content-Type", "application/json")
        .body(seed_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(r.headers(), "x-strategy-source"), "paid");
    w.money().assert_transfers(2).await;
    // An unknown seller is not paid through the proxy.
    let r = via_proxy
        .post("http://127.0.0.1:9/x402")
        .body(seed_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(b.ledger().len(), 2);

    // The buyer's key is never in its logs.
    let logs = b.sidecar.logs();
    assert!(logs.contains("ledger"), "paid calls are logged");
    assert!(
        !logs.contains(&x402_sidecar::util::hex(&b.key.to_bytes()[..])),
        "buyer key in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_above_the_cap_is_refused_before_signing() {
    let w = World::start().await;
    let mut s = seller("node-a", w.paid_url(), &w);
    s.max_price = PriceSpec::Units(PRICE - 1);
    let b = start_buyer(&w, vec![s], BuyerOpts::default()).await;
    let (status, _, body) = buy(&w, &b).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "no_seller_answered");
    assert_eq!(body["attempts"][0]["outcome"], "price_above_cap");
    assert_eq!(w.upstream.calls(), 0, "no payment was ever sent");
    w.money()
        .assert_not_charged(b.key.address(), 5_000_000)
        .await;
    assert!(b.ledger().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_to_that_is_not_pinned_is_refused() {
    let w = World::start().await;
    let mut s = seller("node-a", w.paid_url(), &w);
    s.pay_to = Address::repeat_byte(0x33);
    let b = start_buyer(&w, vec![s], BuyerOpts::default()).await;
    let (status, _, body) = buy(&w, &b).await;
    assert_eq!(
        (status, body["attempts"][0]["outcome"].as_str()),
        (502, Some("pay_to_not_pinned"))
    );
    assert_eq!(w.upstream.calls(), 0);
    w.money()
        .assert_not_charged(b.key.address(), 5_000_000)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_daily_budget_is_refused() {
    let w = World::start().await;
    let b = start_buyer(
        &w,
        vec![seller("node-a", w.paid_url(), &w)],
        BuyerOpts {
            daily: PRICE,
            ..Default::default()
        },
    )
    .await;
    let (status, _, _) = buy(&w, &b).await;
    assert_eq!(status, 200);
    let (status, _, body) = buy(&w, &b).await;
    assert_eq!(
        (status, body["attempts"][0]["outcome"].as_str()),
        (502, Some("budget_exhausted")),
        "{body}"
    );
    w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    assert_eq!(b.ledger().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_calls_under_a_budget_for_five_pay_at_most_five_and_the_ledger_equals_the_chain()
 {
    let w = World::start().await;
    let opts = BuyerOpts {
        daily: 5 * PRICE,
        store: "redis://127.0.0.1:6379/0",
        ..Default::default()
    };
    let b = start_buyer(&w, vec![seller("node-a", w.paid_url(), &w)], opts).await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (http, url) = (w.http.clone(), b.url());
        calls.push(tokio::spawn(async move {
            post_json(&http, &url, seed_body(), &[]).await.0
        }));
    }
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap() == 200 {
            ok += 1;
        }
    }
    // The budget buys exactly five calls, never more.
    let chain: BTreeSet<String> = w
        .money()
        .assert_transfers(5)
        .await
        .iter()
        .map(|t| format!("{:#x}", t.tx))
        .collect();
    assert_eq!(chain.len(), 5, "five distinct transactions");
    assert_eq!(ok, chain.len(), "every paid answer is one transfer");
    let ledger: BTreeSet<String> = b.ledger().iter().filter_map(|e| e.tx.clone()).collect();
    assert_eq!(ledger, chain, "the ledger equals the chain");
    assert_eq!(
        w.balance(b.key.address()).await,
        U256::from(5_000_000 - chain.len() as u64 * PRICE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_seller_hands_over_to_the_second_with_one_transfer_in_total() {
    let w = World::start().await;
    // Seller A: a real sidecar whose strategy endpoint fails (it answers 503, charging nothing).
    let bad_up = Upstream::start().await;
    bad_up.set(Mode::Status(500));
    let a = w
        .start_seller("seller-a", &seller_node(free_port(), &bad_up.url, &w.net))
        .await;
    let b = start_buyer(
        &w,
        vec![
            seller("node-a", format!("{}/x402", a.url), &w),
            seller("node-b", w.paid_url(), &w),
        ],
        BuyerOpts {
            attempts: 1,
            gas_key: true,
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-payment-seller"), "node-b");
    assert_eq!(h(&headers, "x-payment-status"), "paid");
    assert!(h(&headers, "x-attempts").contains("node-a="), "{headers:?}");
    assert!(bad_up.calls() >= 1, "seller A was really tried");
    // Exactly one transfer in total.
    w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    // A's authorization was cancelled on chain before B was paid.
    let l = b.ledger();
    let states: Vec<_> = l
        .iter()
        .map(|e| (e.seller.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(states, [("node-a", "cancelled"), ("node-b", "paid")]);
}

/// A seller that accepts connections and never answers.
async fn hanging_seller() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x402", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_seller_gets_a_fallback_answer_inside_the_timeout_marked_as_fallback() {
    let w = World::start().await;
    let (url, _task) = hanging_seller().await;
    let opts = BuyerOpts {
        timeout_ms: 2_500,
        fallback: "local",
        fallback_url: Some(format!("{}/x402", w.upstream.url)),
        ..Default::default()
    };
    let b = start_buyer(&w, vec![seller("stuck", url, &w)], opts).await;
    let t = Instant::now();
    let (status, headers, body) = buy(&w, &b).await;
    let took = t.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(2_800), "answered in {took:?}");
    assert_eq!(h(&headers, "x-strategy-source"), "fallback");
    assert!(
        h(&headers, "x-attempts").contains("stuck=timeout"),
        "{headers:?}"
    );
    assert!(body["strategy"].is_object());
    assert!(
        headers.get("x-payment-tx").is_none(),
        "fallback advice is not paid advice"
    );
    w.money()
        .assert_not_charged(b.key.address(), 5_000_000)
        .await;
    assert!(b.ledger().is_empty());
    let journal = x402_sidecar::audit::read_all(&b.sidecar.audit_dir()).unwrap();
    assert_eq!(
        journal.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["fallback"]
    );
    assert_eq!(journal[0].details["callId"], h(&headers, "x-call-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_answers_503_with_retry_after_and_a_hint() {
    let w = World::start().await;
    let (url, _task) = hanging_seller().await;
    let opts = BuyerOpts {
        timeout_ms: 1_000,
        fallback: "wait",
        ..Default::default()
    };
    let b = start_buyer(&w, vec![seller("stuck", url, &w)], opts).await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 503);
    assert_eq!(h(&headers, "retry-after"), "60");
    assert_eq!(body["error"], "sellers_unavailable");
    assert!(body["action"].as_str().is_some());
    assert_eq!(h(&headers, "x-strategy-source"), "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_skips_the_seller_probes_and_closes_again() {
    let w = World::start().await;
    let local = Upstream::start().await;
    w.upstream.set(Mode::Status(500));
    let opts = BuyerOpts {
        attempts: 0,
        threshold: 2,
        open_seconds: 1,
        fallback: "local",
        fallback_url: Some(format!("{}/x402", local.url)),
        ..Default::default()
    };
    let b = start_buyer(&w, vec![seller("node-a", w.paid_url(), &w)], opts).await;
    for _ in 0..2 {
        let (status, headers, _) = buy(&w, &b).await;
        assert_eq!(
            (status, h(&headers, "x-strategy-source")),
            (200, "fallback")
        );
        assert!(
            h(&headers, "x-attempts").contains("node-a=failed"),
            "{headers:?}"
        );
    }
    let seller_calls = w.upstream.calls();
    assert_eq!(
        seller_calls, 2,
        "each failing call really reached the seller's strategy endpoint"
    );
    w.upstream.set(Mode::Normal);
    let (status, headers, _) = buy(&w, &b).await;
    assert_eq!(
        (status, h(&headers, "x-strategy-source")),
        (200, "fallback")
    );
    assert!(
        h(&headers, "x-attempts").contains("node-a=breaker_open"),
        "{headers:?}"
    );
    assert_eq!(
        w.upstream.calls(),
        seller_calls,
        "the open breaker kept the seller out"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, headers, _) = buy(&w, &b).await;
    assert_eq!(
        (status, h(&headers, "x-strategy-source")),
        (200, "paid"),
        "the half-open probe succeeds"
    );
    let (status, headers, _) = buy(&w, &b).await;
    assert_eq!(
        (status, h(&headers, "x-strategy-source")),
        (200, "paid"),
        "closed again"
    );
    w.money().assert_transfers(2).await;
}

/// A TCP relay to the seller that loses the answer to the first paid request.
async fn lossy_relay(target: String) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x402", l.local_addr().unwrap());
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let (target, d) = (target.clone(), d.clone());
            tokio::spawn(async move {
                let Some(req) = read_http(&mut client).await else {
                    return;
                };
                let paid = String::from_utf8_lossy(&req)
                    .to_ascii_lowercase()
                    .contains("payment-signature:");
                let mut up = tokio::net::TcpStream::connect(&target).await.unwrap();
                up.write_all(&req).await.unwrap();
                let Some(resp) = read_http(&mut up).await else {
                    return;
                };
                if paid && d.fetch_add(1, Ordering::SeqCst) == 0 {
                    return; // the seller answered; the buyer never hears it
                }
                let _ = client.write_all(&resp).await;
            });
        }
    });
    (url, dropped, task)
}

/// Read one HTTP/1.1 message (headers + Content-Length body).
async fn read_http(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < i + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_after_payment_is_retried_with_the_same_authorization_and_paid_once() {
    let w = World::start().await;
    let target = w.seller.url.trim_start_matches("http://").to_string();
    let (url, dropped, _task) = lossy_relay(target).await;
    let b = start_buyer(&w, vec![seller("node-a", url, &w)], BuyerOpts::default()).await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-strategy-source"), "paid");
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "an answer was really lost"
    );
    assert_eq!(
        w.upstream.calls(),
        1,
        "the retry got the seller's stored answer"
    );
    // At most one transfer.
    w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    let l = b.ledger();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].tx.as_deref(), Some(h(&headers, "x-payment-tx")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_buyer_through_the_seller_to_its_upstream() {
    use common::otlp::{Collector, otlp};
    let collector = Collector::start().await;
    let w = World::start_with(|s| s.otlp = Some(otlp(&collector.url, "seller-node"))).await;
    let b = start_buyer(
        &w,
        vec![seller("alpha", w.paid_url(), &w)],
        BuyerOpts {
            otlp: Some(otlp(&collector.url, "buyer-node")),
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "X-Strategy-Source"), "paid");
    w.money().assert_paid_once(b.key.address(), 5_000_000).await;

    let spans = collector
        .wait_for("the buyer's and the seller's spans", |s| {
            s.iter().any(|x| x.name == "buyer_call")
                && s.iter().any(|x| x.name == "settle")
                && s.iter().filter(|x| x.name == "paid_request").count() == 2
        })
        .await;
    let call = spans.iter().find(|s| s.name == "buyer_call").unwrap();
    assert_eq!(call.service, "buyer-node");
    assert_eq!(
        call.parent, "",
        "roma-01 sent no traceparent: the buyer starts the trace"
    );
    assert_eq!(call.attr("call_id"), Some(h(&headers, "X-Call-Id")));
    assert_eq!(call.attr("strategy_source"), Some("paid"));
    let attempt = spans.iter().find(|s| s.name == "seller_attempt").unwrap();
    assert_eq!(attempt.parent, call.span_id);
    assert_eq!(attempt.attr("seller"), Some("alpha"));
    assert_eq!(attempt.attr("outcome"), Some("answered"));
    // Both of the seller's requests (the 402 and the paid retry) hang under the attempt.
    let remote_id = body["metadata"]["requestId"].as_str().unwrap();
    let mut paid_seen = false;
    for r in spans.iter().filter(|s| s.name == "paid_request") {
        assert_eq!(r.service, "seller-node");
        assert_eq!(
            r.trace_id, call.trace_id,
            "the seller continues the buyer's trace"
        );
        assert_eq!(r.parent, attempt.span_id);
        paid_seen |= r.attr("request_id") == Some(remote_id);
    }
    assert!(
        paid_seen,
        "the paid request's span carries the id the buyer got"
    );
    let settle = spans.iter().find(|s| s.name == "settle").unwrap();
    assert_eq!(settle.trace_id, call.trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_owners_are_written_plain_hashed_or_not_at_all_as_configured() {
    use x402_sidecar::buyer::config::Owners;
    const OWNER: &str = "0xAbC0000000000000000000000000000000000001";
    const KEY: &str = "owner-hash-key-for-tests-0001";
    let w = World::start().await;
    let body = seed_body().replacen(
        r#""platform": "hyperliquid","#,
        &format!(r#""platform": "hyperliquid", "owner": "{OWNER}","#),
        1,
    );
    assert!(body.contains(OWNER));
    let hashed = Owners::hashed(KEY.as_bytes())
        .unwrap()
        .render(OWNER)
        .unwrap();
    for (mode, want) in [
        ("plain", Some(OWNER.to_string())),
        ("hashed", Some(hashed.clone())),
        ("none", None),
    ] {
        let b = start_buyer(
            &w,
            vec![seller("alpha", w.paid_url(), &w)],
            BuyerOpts {
                owners: mode,
                envs: vec![("X402_OWNER_HASH_KEY", KEY.to_string())],
                ..Default::default()
            },
        )
        .await;
        let r = w
            .http
            .post(b.url())
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{mode}");
        let ledger = b.ledger();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].owner, want, "{mode}: ledger");
        let journal = x402_sidecar::audit::read_all(&b.sidecar.audit_dir()).unwrap();
        let paid = journal.iter().find(|r| r.event == "buyer_paid").unwrap();
        assert_eq!(
            paid.details.get("owner").and_then(|v| v.as_str()),
            want.as_deref(),
            "{mode}: journal"
        );
        let logs = b.sidecar.logs().to_lowercase();
        let plain_seen = logs.contains(&OWNER.to_lowercase());
        assert_eq!(
            plain_seen,
            mode == "plain",
            "{mode}: the address in the logs"
        );
        assert_eq!(
            logs.contains(&hashed),
            mode == "hashed",
            "{mode}: the hash in the logs"
        );
        assert!(!logs.contains(KEY), "the hash key is never logged");

        // Risk staff find one account's records by its address, hashed for them.
        let list = |args: &[&str]| {
            let out = std::process::Command::new(bin())
                .arg("audit")
                .arg("--dir")
                .arg(b.sidecar.audit_dir())
                .arg("list")
                .args(args)
                .env("X402_OWNER_HASH_KEY", KEY)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let by_address = list(&["--owner", &OWNER.to_lowercase()]);
        let by_hash = list(&["--owner", OWNER, "--hash-owner"]);
        assert_eq!(
            by_address.contains("buyer_paid"),
            mode == "plain",
            "{mode}: {by_address}"
        );
        assert_eq!(
            by_hash.contains("buyer_paid"),
            mode == "hashed",
            "{mode}: {by_hash}"
        );
    }
    w.money().assert_transfers(3).await;
}

#[test]
fn hashed_owners_without_a_key_are_a_config_error() {
    let err = check_config_fails(
        "outbound:\n  enabled: true\n  owners: { log: hashed, key_env: X402_TEST_NO_SUCH_KEY }\n",
        &[],
        &["X402_TEST_NO_SUCH_KEY"],
    );
    assert!(err.contains("outbound.owners.key_env"), "{err}");
    assert!(err.contains("X402_TEST_NO_SUCH_KEY"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_can_be_the_built_in_advisor_behind_its_secret() {
    use x402_sidecar::advisor::server::{self as advisor, Advisor};
    const ADVISOR_SECRET: &str = "advisor-secret-for-the-fallback-01";
    let w = World::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advisor_url = format!("http://{}/x402", listener.local_addr().unwrap());
    let _advisor = tokio::spawn(advisor::serve(
        listener,
        Arc::new(Advisor::rules_only(ADVISOR_SECRET).unwrap()),
    ));
    let (stuck, _task) = hanging_seller().await;
    for with_secret in [false, true] {
        let opts = BuyerOpts {
            timeout_ms: 2_500,
            fallback: "local",
            fallback_url: Some(advisor_url.clone()),
            fallback_secret_env: with_secret.then_some("X402_TEST_FALLBACK_SECRET"),
            envs: vec![("X402_TEST_FALLBACK_SECRET", ADVISOR_SECRET.to_string())],
            ..Default::default()
        };
        let b = start_buyer(&w, vec![seller("stuck", stuck.clone(), &w)], opts).await;
        let (status, headers, body) = buy(&w, &b).await;
        if with_secret {
            assert_eq!(status, 200, "{body}");
            assert_eq!(h(&headers, "x-strategy-source"), "fallback");
            assert!(
                body["metadata"]["model"]
                    .as_str()
                    .unwrap()
                    .starts_with("rules-v1"),
                "the advisor's own engine answered: {body}"
            );
            assert!(body["strategy"]["actions"].is_array(), "{body}");
        } else {
            assert_eq!(status, 502, "{body}");
            assert_eq!(body["error"], "fallback_failed", "{body}");
        }
        assert!(
            !b.sidecar.logs().contains(ADVISOR_SECRET),
            "the secret is never logged"
        );
    }
    // Fallback advice is never paid.
    w.money().assert_transfers(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_answering_megabytes_is_cut_off_and_not_paid() {
    let w = World::start().await;
    // A "seller" that answers every call with 2 MB, without asking for payment.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x402", l.local_addr().unwrap());
    let handler: x402_sidecar::devkit::standin::Handler = Arc::new(|_req| {
        Box::pin(async { x402_sidecar::devkit::standin::Response::Body(200, huge_answer(2 << 20)) })
    });
    let _task = tokio::spawn(x402_sidecar::devkit::standin::serve(l, handler));
    let b = start_buyer(&w, vec![seller("flood", url, &w)], BuyerOpts::default()).await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "no_seller_answered");
    assert_eq!(h(&headers, "x-strategy-source"), "none");
    assert_eq!(body["attempts"][0]["outcome"], "answer_too_large", "{body}");
    assert!(b.ledger().is_empty());
    w.money()
        .assert_not_charged(b.key.address(), 5_000_000)
        .await;
}

// ---- One logical call is never two transfers, and the ledger believes the chain (issue 14) ----

use x402_sidecar::devkit::rogue::{Behaviour, Rogue};

/// A misbehaving seller on this world's devnet, asking `PRICE`, settling with a key of its own.
async fn rogue(w: &World, b: Behaviour) -> Rogue {
    Rogue::start(&w.net, w.net.gas_key().await.unwrap(), PRICE, b).await
}

/// The ledger's states as (seller, outcome).
fn states(l: &[ledger::Entry]) -> Vec<(String, String)> {
    l.iter()
        .map(|e| (e.seller.clone(), e.outcome.clone()))
        .collect()
}

/// Σ of the transfers from `payer` on chain (to the sellers' payTo).
async fn transferred_from(w: &World, payer: Address) -> u64 {
    w.net
        .transfers_to(w.net.pay_to)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.from == payer)
        .map(|t| u64::try_from(t.value).unwrap())
        .sum()
}

/// The receipt roma-01 reads: `X-PAYMENT-RESPONSE`, decoded.
fn v1_receipt(headers: &reqwest::header::HeaderMap) -> Value {
    let v = h(headers, "x-payment-response");
    assert!(!v.is_empty(), "no X-PAYMENT-RESPONSE: {headers:?}");
    x402_sidecar::x402::codec::decode(v.as_bytes(), 16 * 1024).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_answering_500_then_settling_is_cancelled_before_the_next_is_paid() {
    let w = World::start().await;
    let bad = rogue(&w, Behaviour::FailThenSettle(500, Duration::from_secs(2))).await;
    let b = start_buyer(
        &w,
        vec![
            seller("rogue", bad.url.clone(), &w),
            seller("node-b", w.paid_url(), &w),
        ],
        BuyerOpts {
            attempts: 1,
            gas_key: true,
            ..Default::default()
        },
    )
    .await;
    let asked_at = x402_sidecar::util::now_secs();
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-payment-seller"), "node-b");
    assert_eq!(h(&headers, "x-payment-status"), "paid");
    assert!(bad.paid_requests() >= 1, "the rogue got the authorization");
    // Short lifetimes: the call's 10 s plus a 10 s margin, not the allowed 60 s.
    for e in b.ledger() {
        let life = e.valid_before.unwrap() - asked_at;
        assert!((18..=21).contains(&life), "lives {life} s");
    }
    // The rogue's settlement comes after the cancellation, and fails.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    let l = b.ledger();
    assert_eq!(
        states(&l),
        [
            ("rogue".into(), "cancelled".into()),
            ("node-b".into(), "paid".into())
        ]
    );
    assert_eq!(l[1].tx.as_deref(), Some(format!("{:#x}", t.tx).as_str()));
    // roma-01 reads the receipt under the v1 name, with v1's network name.
    let r = v1_receipt(&headers);
    assert_eq!(r["success"], true);
    assert_eq!(r["transaction"], format!("{:#x}", t.tx));
    assert_eq!(r["network"], "base-sepolia");
    assert_eq!(b.charged(), transferred_from(&w, b.key.address()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gas_key_a_503_then_settling_seller_gets_the_fallback_and_the_late_transfer_is_recorded()
 {
    let w = World::start().await;
    let local = Upstream::start().await;
    let bad = rogue(&w, Behaviour::FailThenSettle(503, Duration::from_secs(2))).await;
    let b = start_buyer(
        &w,
        vec![
            seller("rogue", bad.url.clone(), &w),
            seller("node-b", w.paid_url(), &w),
        ],
        BuyerOpts {
            attempts: 1,
            fallback: "local",
            fallback_url: Some(format!("{}/x402", local.url)),
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-strategy-source"), "fallback");
    assert_eq!(h(&headers, "x-payment-status"), "fallback");
    assert!(
        h(&headers, "x-attempts").contains("node-b=not_paid_twice"),
        "{headers:?}"
    );
    assert_eq!(w.upstream.calls(), 0, "the second seller was never paid");
    assert_eq!(states(&b.ledger()), [("rogue".into(), "pending".into())]);
    // The rogue settles 2 s later: the watcher writes the late transfer down.
    let l = b.settled_ledger(Duration::from_secs(20)).await;
    let t = w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    assert_eq!(states(&l), [("rogue".into(), "paid_no_answer".into())]);
    assert_eq!(l[0].tx.as_deref(), Some(format!("{:#x}", t.tx).as_str()));
    assert!(l[0].late);
    assert!(b.sidecar.logs().contains("late transfer"));
    let journal = x402_sidecar::audit::read_all(&b.sidecar.audit_dir()).unwrap();
    assert!(
        journal.iter().any(|r| r.event == "buyer_paid"
            && r.details["outcome"] == "paid_no_answer"
            && r.details["late"] == true),
        "the journal has the late transfer"
    );
    assert_eq!(b.charged(), transferred_from(&w, b.key.address()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_seller_that_settles_is_paid_once_and_the_next_seller_is_not_paid() {
    let w = World::start().await;
    let local = Upstream::start().await;
    let bad = rogue(&w, Behaviour::HangThenSettle(Duration::from_millis(300))).await;
    let b = start_buyer(
        &w,
        vec![
            seller("rogue", bad.url.clone(), &w),
            seller("node-b", w.paid_url(), &w),
        ],
        BuyerOpts {
            timeout_ms: 4_000,
            gas_key: true,
            fallback: "local",
            fallback_url: Some(format!("{}/x402", local.url)),
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-strategy-source"), "fallback");
    assert!(
        h(&headers, "x-attempts").contains("rogue=paid_no_answer"),
        "{headers:?}"
    );
    assert_eq!(w.upstream.calls(), 0, "the second seller was never paid");
    let t = w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    let l = b.ledger();
    assert_eq!(states(&l), [("rogue".into(), "paid_no_answer".into())]);
    assert_eq!(l[0].tx.as_deref(), Some(format!("{:#x}", t.tx).as_str()));
    assert!(!l[0].late, "seen by the call itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_receipts_and_missing_settlements_are_unconfirmed_until_the_chain_decides_even_across_a_restart()
 {
    let w = World::start().await;
    let forged = rogue(&w, Behaviour::ForgedReceipt).await;
    let none = rogue(&w, Behaviour::NoSettlement).await;
    let later = rogue(&w, Behaviour::AnswerThenSettle(Duration::from_secs(1))).await;
    let opts = || BuyerOpts {
        timeout_ms: 2_000,
        max_auth: 10,
        ..Default::default()
    };
    let b_forged = start_buyer(&w, vec![seller("forged", forged.url.clone(), &w)], opts()).await;
    let mut b_none = start_buyer(&w, vec![seller("none", none.url.clone(), &w)], opts()).await;
    let b_later = start_buyer(&w, vec![seller("later", later.url.clone(), &w)], opts()).await;
    for b in [&b_forged, &b_none, &b_later] {
        let (status, headers, body) = buy(&w, b).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            h(&headers, "x-payment-status"),
            "unconfirmed",
            "{headers:?}"
        );
        assert_eq!(
            h(&headers, "x-payment-tx"),
            "",
            "no transaction the chain does not show"
        );
        assert_eq!(v1_receipt(&headers)["success"], false);
        let l = b.ledger();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].outcome.as_str(), l[0].tx.as_deref()),
            ("unconfirmed", None)
        );
    }
    assert_eq!(
        b_forged.ledger()[0].claimed_tx.as_deref(),
        Some(format!("0x{}", "ab".repeat(32)).as_str()),
        "the seller's claim is kept apart"
    );
    // The buyer watching the seller that never settles dies; its successor reads the ledger.
    kill_and_restart(&w, &mut b_none).await;
    let within = Duration::from_secs(30);
    let (f, n, l) = tokio::join!(
        b_forged.settled_ledger(within),
        b_none.settled_ledger(within),
        b_later.settled_ledger(within)
    );
    assert_eq!(states(&f), [("forged".into(), "unused".into())]);
    assert_eq!(states(&n), [("none".into(), "unused".into())]);
    assert_eq!(states(&l), [("later".into(), "paid".into())]);
    let t = w.money().assert_transfers(1).await;
    assert_eq!(t[0].from, b_later.key.address());
    assert_eq!(l[0].tx.as_deref(), Some(format!("{:#x}", t[0].tx).as_str()));
    for b in [&b_forged, &b_none, &b_later] {
        assert_eq!(b.charged(), transferred_from(&w, b.key.address()).await);
    }
    assert!(b_none.sidecar.logs().contains("read back from the ledger"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mixed_calls_against_misbehaving_sellers_reconcile_with_the_chain() {
    let w = World::start().await;
    let fail = rogue(&w, Behaviour::FailThenSettle(500, Duration::from_secs(1))).await;
    let forged = rogue(&w, Behaviour::ForgedReceipt).await;
    let later = rogue(&w, Behaviour::AnswerThenSettle(Duration::from_millis(500))).await;
    let hang = rogue(&w, Behaviour::HangThenSettle(Duration::from_millis(300))).await;
    let b = start_buyer(
        &w,
        vec![
            seller("fail", fail.url.clone(), &w),
            seller("honest", w.paid_url(), &w),
            seller("forged", forged.url.clone(), &w),
            seller("later", later.url.clone(), &w),
            seller("hang", hang.url.clone(), &w),
        ],
        BuyerOpts {
            timeout_ms: 3_000,
            attempts: 1,
            max_auth: 10,
            gas_key: true,
            threshold: 100, // every seller is asked every time
            ..Default::default()
        },
    )
    .await;
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&b.sidecar.url).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..20 {
        let target = match i % 5 {
            0 => b.url(), // the sellers in order: `fail` first, then `honest`
            1 => forged.url.clone(),
            2 => later.url.clone(),
            3 => hang.url.clone(),
            _ => w.paid_url(),
        };
        let client = if i % 5 == 0 {
            w.http.clone()
        } else {
            via_proxy.clone()
        };
        calls.push(tokio::spawn(async move {
            post_json(&client, &target, seed_body(), &[]).await.0
        }));
    }
    for c in calls {
        let status = c.await.unwrap();
        assert!(status == 200 || status == 502, "{status}");
    }
    let l = b.settled_ledger(Duration::from_secs(40)).await;
    assert_eq!(
        l.len(),
        20 + 4,
        "every authorization (4 cancelled ones too) has a state"
    );
    assert!(l.iter().all(|e| !e.open()), "{:?}", states(&l));
    // Σ ledger paid + paid_no_answer = Σ transfers from the buyer on chain.
    assert_eq!(b.charged(), transferred_from(&w, b.key.address()).await);
    assert!(b.charged() > 0);
    let verify = |path: &std::path::Path| {
        std::process::Command::new(bin())
            .args(["ledger", "verify", "--rpc", &w.net.rpc_url, "--path"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = verify(&b.ledger);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("match the chain"), "{stdout}");
    // A ledger that says otherwise than the chain: one line per difference, exit 1.
    let tampered = w.dir.path().join("tampered.jsonl");
    let text = std::fs::read_to_string(&b.ledger).unwrap();
    let first_paid = text
        .lines()
        .position(|l| l.contains(r#""outcome":"paid""#))
        .unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == first_paid {
                l.replace(r#""outcome":"paid""#, r#""outcome":"unused""#)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let out = verify(&tampered);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("DIFF")).count(),
        1,
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_a_reason() {
    let w = World::start().await;
    let b = start_buyer(
        &w,
        vec![seller("node-a", w.paid_url(), &w)],
        BuyerOpts::default(),
    )
    .await;
    let addr = b.sidecar.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"CONNECT node-a.example:443 HTTP/1.1\r\nHost: node-a.example:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(text.contains("connect_not_supported"), "{text}");
    assert!(text.contains("https://"), "{text}");
    w.money().assert_transfers(0).await;
}

/// `x402-sidecar pay` with the buyer's key in its environment: exit code, stdout, stderr.
fn pay_cli(key: &PrivateKeySigner, body: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .arg("pay")
        .arg("--body")
        .arg(body)
        .args(["--key-env", "X402_TEST_PAY_KEY"])
        .args(args)
        .env("X402_TEST_PAY_KEY", key_hex(key))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_and_sign_refuse_above_ten_cents_unless_told_and_pay_says_what_a_5xx_did() {
    let w = World::start_with(|s| s.price = PriceSpec::Text("$0.50".into())).await;
    let key = w.buyer(5_000_000).await;
    let body = w.dir.path().join("request.json");
    std::fs::write(&body, seed_body()).unwrap();
    let url = w.paid_url();
    let (code, out, err) = pay_cli(&key, &body, &["--url", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("above the limit 100000"), "{err}");
    assert!(err.contains("--max-amount"), "{err}");
    assert!(w.net.transfers_to(w.net.pay_to).await.unwrap().is_empty());
    // `sign` refuses the same challenge.
    let (status, headers, _) = post_json(&w.http, &url, seed_body(), &[]).await;
    assert_eq!(status, 402);
    let challenge = h(&headers, "payment-required").to_string();
    let sign = |extra: &[&str]| {
        std::process::Command::new(bin())
            .args([
                "sign",
                "--challenge",
                &challenge,
                "--key-env",
                "X402_TEST_PAY_KEY",
            ])
            .args(extra)
            .env("X402_TEST_PAY_KEY", key_hex(&key))
            .output()
            .unwrap()
    };
    let out = sign(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no payment header is printed");
    assert!(sign(&["--max-amount", "$1"]).status.success());
    // Told otherwise, it pays once.
    let (code, out, err) = pay_cli(&key, &body, &["--url", &url, "--max-amount", "$1"]);
    assert_eq!(code, 0, "{out}{err}");
    let t = w.net.transfers_to(w.net.pay_to).await.unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].value, U256::from(500_000u64));

    // A seller that answers 500 and has not settled: `pay` says what the chain says.
    let bad = rogue(&w, Behaviour::FailThenSettle(500, Duration::from_secs(600))).await;
    let (code, out, err) = pay_cli(&key, &body, &["--url", &bad.url, "--rpc", &w.net.rpc_url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("does not say whether it settled"), "{out}");
    assert!(out.contains("on chain: not charged (yet)"), "{out}");
    assert!(!out.contains("no settlement receipt"), "{out}");
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1 signed by it (openssl):
/// the CA's PEM, the server's certificate and key.
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=x402 test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (p("ca.pem"), p("srv.pem"), p("srv.key"))
}

/// A TLS server on `localhost` (certificate `cert`, key `key`) relaying every connection to
/// `target` (host:port): an `https://` seller in front of a real seller sidecar.
async fn tls_seller(
    cert: &std::path::Path,
    key: &std::path::Path,
    target: String,
) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, target) = (acceptor.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_seller_is_paid_over_tls_in_the_route_and_the_proxy_forms() {
    let w = World::start().await;
    let (ca, cert, key) = test_ca(w.dir.path());
    let target = w.seller.url.trim_start_matches("http://").to_string();
    let (port, _tls) = tls_seller(&cert, &key, target).await;
    let url = format!("https://localhost:{port}/x402");
    let b = start_buyer(
        &w,
        vec![seller("tls", url.clone(), &w)],
        BuyerOpts {
            envs: vec![("SSL_CERT_FILE", ca.display().to_string())],
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-payment-status"), "paid");
    // The forward-proxy form: roma-01 speaks plain HTTP to the proxy, the sidecar TLS to the seller.
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&b.sidecar.url).unwrap())
        .build()
        .unwrap();
    let r = via_proxy
        .post(format!("http://localhost:{port}/x402"))
        .header("Content-Type", "application/json")
        .body(seed_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(r.headers(), "x-payment-seller"), "tls");
    assert_eq!(h(r.headers(), "x-payment-status"), "paid");
    w.money().assert_transfers(2).await;
    // A buyer that does not trust the test CA pays nothing.
    let untrusting = start_buyer(&w, vec![seller("tls", url, &w)], BuyerOpts::default()).await;
    let (status, _, body) = buy(&w, &untrusting).await;
    assert_eq!(status, 502, "{body}");
    assert!(untrusting.ledger().is_empty());
    w.money().assert_transfers(2).await;
    assert_eq!(b.charged(), transferred_from(&w, b.key.address()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_roma_hangs_up_mid_call_the_watcher_still_writes_the_transfer_down() {
    let w = World::start().await;
    let bad = rogue(&w, Behaviour::HangThenSettle(Duration::from_secs(1))).await;
    let b = start_buyer(
        &w,
        vec![seller("rogue", bad.url.clone(), &w)],
        BuyerOpts {
            timeout_ms: 3_000,
            ..Default::default()
        },
    )
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = impatient
        .post(b.url())
        .header("Content-Type", "application/json")
        .body(seed_body())
        .send()
        .await;
    assert!(gone.is_err(), "roma-01 hung up");
    let l = b.settled_ledger(Duration::from_secs(20)).await;
    let t = w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    assert_eq!(states(&l), [("rogue".into(), "paid_no_answer".into())]);
    assert_eq!(l[0].tx.as_deref(), Some(format!("{:#x}", t.tx).as_str()));
    assert_eq!(b.charged(), transferred_from(&w, b.key.address()).await);
}
