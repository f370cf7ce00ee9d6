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
        }
    }
}

struct Buyer {
    sidecar: Sidecar,
    key: PrivateKeySigner,
    ledger: std::path::PathBuf,
}

impl Buyer {
    fn url(&self) -> String {
        format!("{}/x402", self.sidecar.url)
    }

    fn ledger(&self) -> Vec<ledger::Entry> {
        ledger::read(&self.ledger).unwrap()
    }
}

const BUYER_ENV: &str = "X402_TEST_BUYER_KEY";

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
    node.max_authorization_seconds = Some(60);
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

async fn start_buyer(w: &World, sellers: Vec<SellerEntry>, mut o: BuyerOpts) -> Buyer {
    let key = w.buyer(5_000_000).await;
    let port = free_port();
    let ledger = w.dir.path().join(format!("ledger-{port}.jsonl"));
    let envs = std::mem::take(&mut o.envs);
    let yaml = buyer_node(port, &w.net, sellers, o, &ledger).yaml();
    let mut l = launch(w.dir.path(), &format!("buyer-{port}")).env(
        BUYER_ENV,
        format!("0x{}", x402_sidecar::util::hex(&key.to_bytes()[..])),
    );
    for (k, v) in envs {
        l = l.env(k, v);
    }
    Buyer {
        sidecar: run(l, &yaml, port).await,
        key,
        ledger,
    }
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
            ..Default::default()
        },
    )
    .await;
    let (status, headers, body) = buy(&w, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h(&headers, "x-payment-seller"), "node-b");
    assert!(h(&headers, "x-attempts").contains("node-a="), "{headers:?}");
    assert!(bad_up.calls() >= 1, "seller A was really tried");
    // Exactly one transfer in total.
    w.money().assert_paid_once(b.key.address(), 5_000_000).await;
    let l = b.ledger();
    assert_eq!((l.len(), l[0].seller.as_str()), (1, "node-b"));
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
