//! The seller killed (`kill -9`) at each point of a paid call — after the claim, during the
//! upstream call, after broadcasting the settlement and before its receipt, after the receipt
//! and before the answer — then restarted (memory store) or taken over by a second replica
//! (Redis), and the buyer's retry with the same payment: the buyer gets the answer, the chain
//! shows exactly one transfer, the journal one `settled` and one `answered`, and no payment
//! stays dead longer than its lease. Plus a front-run: a third party submits the buyer's
//! authorization first; the seller still answers, one transfer.
//!
//! Exact points are hit with the debug-only test hook `X402_TEST_CRASH_AT` (the process aborts
//! there, as a `kill -9` would) or, where the process waits anyway, with a real `kill -9`.
//! Real anvil, real Redis, real processes.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloy_primitives::Signature;
use alloy_provider::Provider;
use common::*;
use reqwest::header::HeaderMap;
use serde_json::Value;
use x402_sidecar::buyer::client;
use x402_sidecar::evm::chain::{Chain, SettleOutcome};
use x402_sidecar::util::now_secs;

/// The upstream timeout of these sellers: their lease is 5 s longer.
const UPSTREAM_TIMEOUT_MS: u64 = 2_000;
const LEASE: Duration = Duration::from_millis(UPSTREAM_TIMEOUT_MS + 5_000);

/// One scenario: a devnet, an upstream, a directory for the seller processes.
struct Scene {
    net: Devnet,
    upstream: Upstream,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    redis: bool,
    /// Its sellers' paid route is `settle: before`.
    settle_before: bool,
}

impl Scene {
    async fn new(redis: bool) -> Scene {
        Scene {
            net: devnet().await,
            upstream: Upstream::start().await,
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            redis,
            settle_before: false,
        }
    }

    /// A seller node on a free port (Redis or memory store).
    fn node(&self) -> SellerNode {
        let mut n = seller_node(free_port(), &self.upstream.url, &self.net);
        n.upstream_timeout_ms = UPSTREAM_TIMEOUT_MS;
        n.settle_before = self.settle_before;
        if self.redis {
            n.store = REDIS.into();
        }
        n
    }

    /// Start `node` as process `name`, aborting at `crash_at` if given.
    async fn start(&self, name: &str, node: &SellerNode, crash_at: Option<&str>) -> Sidecar {
        let mut l = launch(self.dir.path(), name).env(SETTLER_ENV, self.net.settler_key_hex());
        if let Some(point) = crash_at {
            l = l.env("X402_TEST_CRASH_AT", point);
        }
        run(l, &node.yaml(), node.listen).await
    }

    /// The journal directories of processes `names` (a restarted process keeps its own).
    fn journals(&self, names: &[&str]) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = names
            .iter()
            .map(|n| self.dir.path().join(n).join("x402-audit"))
            .collect();
        dirs.dedup();
        dirs
    }

    /// The money invariant after the scenario: Σ transfers to payTo = paid answers delivered =
    /// `settled` records (and as many `answered`), each transfer from `payer` of the price.
    async fn invariant(&self, payer: alloy_primitives::Address, delivered: usize, names: &[&str]) {
        let money = Money::new(&self.net, PRICE);
        let transfers = money.assert_transfers(delivered).await;
        assert!(transfers.iter().all(|t| t.from == payer));
        let dirs = self.journals(names);
        assert_eq!(count(&dirs, "settled"), delivered, "settled records");
        assert_eq!(count(&dirs, "answered"), delivered, "answered records");
    }
}

/// How many journal records of `event` the day files under `dirs` hold.
fn count(dirs: &[PathBuf], event: &str) -> usize {
    journal_lines(dirs, event).len()
}

/// `kill -9` the process and reap it.
fn kill9(s: Sidecar) {
    let pid = i32::try_from(s.pid()).unwrap();
    // SAFETY: kill(2) only sends a signal, here to our own child process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(s);
}

/// POST the seed request with the payment to `seller`'s paid route; `None` if the connection
/// broke (the process died under it).
async fn send(
    http: &reqwest::Client,
    seller: &str,
    payment: &(&str, String),
) -> Option<(u16, HeaderMap, Value)> {
    let resp = http
        .post(format!("{seller}/x402"))
        .header("Content-Type", "application/json")
        .header(payment.0, payment.1.as_str())
        .body(seed_body())
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.ok()?;
    Some((
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// Retry the same payment until it is answered: while its lease runs it is `409
/// payment_in_flight` (or `503 settlement_pending`), never a 402, and never longer than the lease
/// (plus the time a request takes). The answer, and how long it took.
async fn until_answered(
    http: &reqwest::Client,
    seller: &str,
    payment: &(&str, String),
) -> (Value, Duration) {
    let started = Instant::now();
    let within = LEASE + Duration::from_secs(4);
    loop {
        let got = send(http, seller, payment).await;
        match &got {
            Some((200, headers, body)) => {
                assert!(headers.get("payment-response").is_some(), "{body}");
                assert!(body["strategy"].is_object(), "{body}");
                return (body.clone(), started.elapsed());
            }
            Some((409, _, b)) if b["error"] == "payment_in_flight" => {}
            Some((503, _, b)) if b["error"] == "settlement_pending" => {}
            other => panic!("the retry got {other:?}"),
        }
        assert!(
            started.elapsed() < within,
            "the payment stayed dead longer than its lease ({LEASE:?}): {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh buyer with 1 USDC and its payment for `seller`.
async fn buyer_and_payment(
    s: &Scene,
    seller: &str,
) -> (alloy_signer_local::PrivateKeySigner, (&'static str, String)) {
    let buyer = s
        .net
        .new_buyer(alloy_primitives::U256::from(1_000_000u64))
        .await
        .unwrap();
    let payment = signed_payment(&s.http, &format!("{seller}/x402"), &buyer).await;
    (buyer, payment)
}

/// Where the retry goes after the crash of the first seller, `a`: a restart of `a` on the same
/// port (memory store: what it held is gone, the chain decides), or, with Redis, a second
/// replica `b` that takes the payment over once the lease ran out.
async fn after_crash(s: &Scene, node: &SellerNode) -> (Sidecar, &'static str) {
    if s.redis {
        (s.start("b", &s.node(), None).await, "b")
    } else {
        (s.start("a", node, None).await, "a")
    }
}

/// The seller dies at `point` (the test hook) on the first call; the retry gets the answer once.
async fn crash_at_hook(redis: bool, point: &str) {
    crash_at(Scene::new(redis).await, point).await;
}

async fn crash_at(s: Scene, point: &str) {
    let node = s.node();
    let a = s.start("a", &node, Some(point)).await;
    let (buyer, payment) = buyer_and_payment(&s, &a.url).await;
    assert!(
        send(&s.http, &a.url, &payment).await.is_none(),
        "the seller died at {point}"
    );
    kill9(a);
    let (next, name) = after_crash(&s, &node).await;
    let (body, took) = until_answered(&s.http, &next.url, &payment).await;
    assert_eq!(body["payment"]["payer"], buyer.address().to_string());
    assert!(took < LEASE + Duration::from_secs(4), "{took:?}");
    s.invariant(buyer.address(), 1, &["a", name]).await;
    // And it stays answered: the same payment again is the stored answer, no second charge.
    let (status, headers, _) = send(&s.http, &next.url, &payment).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-payment-replayed"], "true");
    s.invariant(buyer.address(), 1, &["a", name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_claim_memory_store() {
    crash_at_hook(false, "after_claim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_claim_redis_second_replica_takes_over() {
    crash_at_hook(true, "after_claim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_answer_held_before_settling_memory_store() {
    crash_at_hook(false, "before_settle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_answer_held_before_settling_redis_second_replica_takes_over() {
    crash_at_hook(true, "before_settle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_receipt_before_the_answer_memory_store() {
    crash_at_hook(false, "after_receipt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_receipt_before_the_answer_redis_second_replica_takes_over() {
    crash_at_hook(true, "after_receipt").await;
}

/// `kill -9` while the upstream works on the answer: nothing charged by then; the retry asks the
/// upstream again and is charged once.
async fn killed_during_the_upstream_call(redis: bool) {
    let s = Scene::new(redis).await;
    let node = s.node();
    let a = s.start("a", &node, None).await;
    let (buyer, payment) = buyer_and_payment(&s, &a.url).await;
    s.upstream.set(Mode::Slow(Duration::from_millis(1_500)));
    let (http, url, p) = (s.http.clone(), a.url.clone(), payment.clone());
    let call = tokio::spawn(async move { send(&http, &url, &p).await });
    while s.upstream.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(a);
    assert!(
        call.await.unwrap().is_none(),
        "the seller died under the call"
    );
    Money::new(&s.net, PRICE)
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    s.upstream.set(Mode::Normal);
    let (next, name) = after_crash(&s, &node).await;
    until_answered(&s.http, &next.url, &payment).await;
    assert_eq!(s.upstream.calls(), 2, "the killed call, then the retry's");
    s.invariant(buyer.address(), 1, &["a", name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_upstream_call_memory_store() {
    killed_during_the_upstream_call(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_upstream_call_redis_second_replica_takes_over() {
    killed_during_the_upstream_call(true).await;
}

/// The node's mempool holds a transaction not mined yet.
async fn mempool_has_a_tx(net: &Devnet) -> bool {
    let status: Value = net
        .provider()
        .raw_request("txpool_status".into(), ())
        .await
        .unwrap();
    let pending = status["pending"].as_str().unwrap_or("0x0");
    u64::from_str_radix(pending.trim_start_matches("0x"), 16).unwrap_or(0) > 0
}

async fn automine(net: &Devnet, on: bool) {
    let _: () = net
        .provider()
        .raw_request("evm_setAutomine".into(), (on,))
        .await
        .unwrap();
}

/// `kill -9` once the settlement is broadcast and sits in the mempool (blocks stopped), then the
/// block: the restarted seller (its recovery sweep, with Redis; the chain by the payment's
/// identity, with memory) or the second replica delivers the answer with that transaction.
async fn killed_after_broadcast_before_the_receipt(redis: bool, restart: bool) {
    let s = Scene::new(redis).await;
    let node = s.node();
    let a = s.start("a", &node, None).await;
    let (buyer, payment) = buyer_and_payment(&s, &a.url).await;
    automine(&s.net, false).await;
    let (http, url, p) = (s.http.clone(), a.url.clone(), payment.clone());
    let call = tokio::spawn(async move { send(&http, &url, &p).await });
    let deadline = Instant::now() + Duration::from_secs(8);
    while !mempool_has_a_tx(&s.net).await {
        assert!(Instant::now() < deadline, "no settlement was broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(a);
    assert!(call.await.unwrap().is_none());
    automine(&s.net, true).await;
    let _: String = s
        .net
        .provider()
        .raw_request("evm_mine".into(), ())
        .await
        .unwrap();
    let mined = Money::new(&s.net, PRICE).assert_transfers(1).await;
    let (next, name) = if restart {
        (s.start("a", &node, None).await, "a")
    } else {
        after_crash(&s, &node).await
    };
    let (body, took) = until_answered(&s.http, &next.url, &payment).await;
    assert_eq!(
        body["payment"]["transaction"],
        format!("{:#x}", mined[0].tx),
        "the broadcast transaction is the one recorded"
    );
    eprintln!("answered {took:?} after the restart");
    if redis && restart {
        // The restarted node's sweep handed its own record back: no lease to wait for.
        assert!(
            next.logs().contains("recovery sweep"),
            "{}",
            next.log_tail(20)
        );
        assert!(took < LEASE / 2, "{took:?}");
        assert_eq!(s.upstream.calls(), 1, "the held answer was delivered");
    }
    s.invariant(buyer.address(), 1, &["a", name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_broadcast_before_the_receipt_memory_store() {
    killed_after_broadcast_before_the_receipt(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_broadcast_before_the_receipt_redis_restart_recovers_it() {
    killed_after_broadcast_before_the_receipt(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_broadcast_before_the_receipt_redis_second_replica_takes_over() {
    killed_after_broadcast_before_the_receipt(true, false).await;
}

/// A third party who saw the payment header submits the authorization to the token first: the
/// money reached payTo, so the seller answers (recording the front-runner's transaction), once.
async fn front_run(redis: bool) {
    let s = Scene::new(redis).await;
    let node = s.node();
    let a = s.start("a", &node, None).await;
    let buyer = s
        .net
        .new_buyer(alloy_primitives::U256::from(1_000_000u64))
        .await
        .unwrap();
    let (status, headers, body) =
        post_json(&s.http, &format!("{}/x402", a.url), seed_body(), &[]).await;
    assert_eq!(status, 402);
    let quote = client::parse_challenge(
        headers
            .get("payment-required")
            .and_then(|h| h.to_str().ok()),
        body.to_string().as_bytes(),
        false,
    )
    .unwrap();
    let auth = client::authorization(&buyer, &quote.requirement, now_secs());
    let signed = client::sign(&buyer, &quote.requirement, auth.clone()).unwrap();
    let header = client::v2_header(&quote.raw, &signed, None);
    // The front-runner: another account, its own gas, the buyer's signed authorization.
    let sig = Signature::try_from(signed.signature.as_ref()).unwrap();
    let third = Chain::new(
        &s.net.rpc_url,
        x402_sidecar::devkit::devnet::CHAIN_ID,
        s.net.owner.clone(),
        Duration::from_secs(10),
    )
    .unwrap();
    let ran = third
        .settle(x402_sidecar::devkit::devnet::USDC, &auth, &sig)
        .await;
    let SettleOutcome::Settled { tx } = ran else {
        panic!("the front-run did not land: {ran:?}")
    };
    let payment = ("PAYMENT-SIGNATURE", header);
    let (status, headers, body) = send(&s.http, &a.url, &payment).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("payment-response").is_some());
    assert_eq!(body["payment"]["transaction"], format!("{tx:#x}"));
    assert!(body["strategy"].is_object());
    s.invariant(buyer.address(), 1, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_run_still_gets_the_answer_and_one_transfer_memory_store() {
    front_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_run_still_gets_the_answer_and_one_transfer_redis() {
    front_run(true).await;
}

/// `settle: before`, killed at each step (before the settlement, after its receipt and before
/// the upstream was asked): the retry with the same payment gets the answer, charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_first_killed_before_settling_and_after_the_receipt() {
    for (redis, point) in [
        (false, "before_settle"),
        (false, "after_receipt"),
        (true, "after_receipt"),
    ] {
        let mut s = Scene::new(redis).await;
        s.settle_before = true;
        crash_at(s, point).await;
    }
}

/// `settle: before`: the payment is settled before the upstream is asked, so an upstream
/// failure leaves the buyer paid and unanswered; it is told so (503, the transaction named, the
/// same payment to send again), and the retry gets the answer without a second charge. The
/// journal shows the settlement-first step and the failure; one `settled`, one `answered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_first_pays_before_the_upstream_and_a_failed_upstream_is_answered_on_retry() {
    for redis in [false, true] {
        let mut s = Scene::new(redis).await;
        s.settle_before = true;
        let node = s.node();
        let a = s.start("a", &node, None).await;
        let (buyer, payment) = buyer_and_payment(&s, &a.url).await;
        s.upstream.set(Mode::Status(500));
        let (status, _, body) = send(&s.http, &a.url, &payment).await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "upstream_error", "{body}");
        let why = body["message"].as_str().unwrap();
        assert!(
            why.contains("settled") && why.contains("same payment"),
            "{why}"
        );
        // Paid already: the transfer is on chain before any answer.
        let money = Money::new(&s.net, PRICE);
        money.assert_transfers(1).await;
        let dirs = s.journals(&["a"]);
        assert_eq!(count(&dirs, "answered"), 0);
        s.upstream.set(Mode::Normal);
        let (answer, _) = until_answered(&s.http, &a.url, &payment).await;
        assert_eq!(answer["payment"]["payer"], buyer.address().to_string());
        s.invariant(buyer.address(), 1, &["a"]).await;
        let verified = journal_lines(&dirs, "payment_verified");
        assert!(
            verified.iter().any(|v| v["details"]["settle"] == "before"),
            "{verified:?}"
        );
        let forwarded = journal_lines(&dirs, "forwarded");
        assert!(
            forwarded.iter().any(|v| v["details"]["why"]
                .as_str()
                .is_some_and(|w| w.contains("upstream failed after the settlement"))),
            "{forwarded:?}"
        );
    }
}

/// The journal records of `event` the day files under `dirs` hold.
fn journal_lines(dirs: &[PathBuf], event: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().ends_with(".jsonl") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| v["event"] == event),
            );
        }
    }
    out
}
