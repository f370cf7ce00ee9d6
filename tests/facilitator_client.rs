//! A seller whose facilitator is remote (`kind: http`): it holds no settler key, asks a
//! facilitator server over HTTP to verify and settle, and believes only the chain. The
//! facilitator is a real one (a second sidecar serving the x402 facilitator API on the devnet);
//! a relay in front of it loses, withholds or falsifies its `/settle` answers, which no honest
//! facilitator can be made to do. Every scenario checks the balances and transfers on chain.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use common::*;
use serde_json::Value;
use x402_sidecar::devkit::devnet::{self, Transfer};
use x402_sidecar::devkit::nodes::{FacilitatorNode, SettledBy};
use x402_sidecar::devkit::standin::{self, Request, Response};

/// What the relay does with the next `/settle`.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Pass it on and return the answer.
    Forward,
    /// Close the connection without passing it on.
    Drop,
    /// Pass it on, then close the connection instead of answering.
    ForwardThenDrop,
    /// Answer `success: true` with a transaction that does not exist; pass nothing on.
    Lie,
    /// Answer `success: false` (`insufficient_funds`); pass nothing on.
    Refuse,
    /// Pass it on (the facilitator settles), then answer `success: false` anyway.
    ForwardThenRefuse,
}

struct Relay {
    url: String,
    plan: Arc<Mutex<VecDeque<Step>>>,
    settles: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self._task.abort();
    }
}

async fn relay(target: &str) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let plan: Arc<Mutex<VecDeque<Step>>> = Arc::new(Mutex::new(VecDeque::new()));
    let settles = Arc::new(AtomicUsize::new(0));
    let (p, n, target) = (plan.clone(), settles.clone(), target.to_string());
    let http = reqwest::Client::new();
    let handler: standin::Handler = Arc::new(move |req: Request| {
        let (p, n, target, http) = (p.clone(), n.clone(), target.clone(), http.clone());
        Box::pin(async move {
            let step = if req.path == "/settle" {
                n.fetch_add(1, Ordering::SeqCst);
                p.lock().unwrap().pop_front().unwrap_or(Step::Forward)
            } else {
                Step::Forward
            };
            let forward = || async {
                let mut r =
                    http.request(req.method.parse().unwrap(), format!("{target}{}", req.path));
                if req.method == "POST" {
                    r = r
                        .header("Content-Type", "application/json")
                        .body(req.body.clone());
                }
                let resp = r.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap())
            };
            match step {
                Step::Forward => {
                    let (status, body) = forward().await;
                    Response::Body(status, body)
                }
                Step::Drop => Response::Raw(Vec::new()),
                Step::ForwardThenDrop => {
                    forward().await;
                    Response::Raw(Vec::new())
                }
                Step::Lie => Response::Body(
                    200,
                    format!(
                        r#"{{"success":true,"transaction":"0x{}","network":"{}"}}"#,
                        "ab".repeat(32),
                        devnet::NETWORK
                    ),
                ),
                Step::ForwardThenRefuse => {
                    forward().await;
                    Response::Body(
                        200,
                        format!(
                            r#"{{"success":false,"errorReason":"invalid_transaction_state","transaction":"","network":"{}"}}"#,
                            devnet::NETWORK
                        ),
                    )
                }
                Step::Refuse => Response::Body(
                    200,
                    format!(
                        r#"{{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"{}"}}"#,
                        devnet::NETWORK
                    ),
                ),
            }
        })
    });
    let task = tokio::spawn(standin::serve(listener, handler));
    Relay {
        url,
        plan,
        settles,
        _task: task,
    }
}

struct Setup {
    net: Devnet,
    upstream: Upstream,
    _facilitator: Sidecar,
    /// The facilitator's base URL.
    facilitator_url: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

/// The devnet, an upstream and a facilitator sidecar (the only holder of a settler key).
async fn setup() -> Setup {
    let net = devnet().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = FacilitatorNode::new(free_port(), &net, SETTLER_ENV);
    let key = net.settler_key_hex();
    let facilitator =
        start_sidecar(dir.path(), "facilitator", node.listen, &node.yaml(), &key).await;
    Setup {
        facilitator_url: facilitator.url.clone(),
        net,
        upstream,
        _facilitator: facilitator,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        dir,
    }
}

/// A seller whose facilitator is at `url` (`kind: http`), with no settler key at all.
async fn seller(s: &Setup, name: &str, url: &str) -> Sidecar {
    seller_with(s, name, url, None).await
}

/// The same, with its admin listener on `admin`.
async fn seller_with(s: &Setup, name: &str, url: &str, admin: Option<u16>) -> Sidecar {
    let mut node = seller_node(free_port(), &s.upstream.url, &s.net);
    node.settlement.by = SettledBy::Remote {
        url: url.into(),
        timeout_ms: 3_000,
    };
    node.settlement.receipt_timeout_ms = Some(1_500);
    node.admin = admin;
    let cfg = node.yaml();
    assert!(cfg.contains("kind: http") && !cfg.contains("settler"));
    start_sidecar(s.dir.path(), name, node.listen, &cfg, "").await
}

/// The seller's 402, paid by `buyer`: the header to send.
async fn payment(s: &Setup, seller: &Sidecar, buyer: &PrivateKeySigner) -> (&'static str, String) {
    signed_payment(&s.http, &format!("{}/x402", seller.url), buyer).await
}

async fn send(
    s: &Setup,
    seller: &Sidecar,
    header: &(&str, String),
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("{}/x402", seller.url);
    post_json(&s.http, &url, seed_body(), &[(header.0, header.1.as_str())]).await
}

/// What each funded buyer of these tests holds at first.
const FUNDED: u64 = 1_000_000;

impl Setup {
    /// The money checks: paid calls of `PRICE` to the devnet's seller.
    fn money(&self) -> Money<'_> {
        Money::new(&self.net, PRICE)
    }

    /// A buyer holding [`FUNDED`].
    async fn buyer(&self) -> PrivateKeySigner {
        self.net.new_buyer(U256::from(FUNDED)).await.unwrap()
    }
}

/// A seller behind a relay that plays `steps` on its `/settle` calls, a funded buyer and a
/// payment for the seller's 402.
struct Scenario {
    relay: Relay,
    seller: Sidecar,
    buyer: PrivateKeySigner,
    pay: (&'static str, String),
}

async fn scenario(s: &Setup, steps: &[Step]) -> Scenario {
    let relay = relay(&s.facilitator_url).await;
    relay.plan.lock().unwrap().extend(steps.iter().copied());
    let seller = seller(s, "seller", &relay.url).await;
    let buyer = s.buyer().await;
    let pay = payment(s, &seller, &buyer).await;
    Scenario {
        relay,
        seller,
        buyer,
        pay,
    }
}

/// The receipt id of a paid answer names the one transfer on chain.
fn names_the_transfer(body: &Value, paid: &Transfer) {
    assert_eq!(
        body["payment"]["receiptId"],
        format!("{:#x}", paid.tx),
        "the receipt names the transfer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_facilitator_settles_the_paid_call_for_a_seller_without_a_key() {
    let s = setup().await;
    let seller = seller(&s, "seller", &s.facilitator_url).await;
    let buyer = s.buyer().await;
    let pay = payment(&s, &seller, &buyer).await;
    let (status, headers, body) = send(&s, &seller, &pay).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["strategy"].is_object());
    let paid = s.money().assert_paid_once(buyer.address(), FUNDED).await;
    names_the_transfer(&body, &paid);
    assert!(headers.contains_key("payment-response"));
    assert_eq!(s.upstream.calls(), 1);
    // The 402 announces who settles: the facilitator.
    let unpaid: Value = s
        .http
        .post(format!("{}/x402", seller.url))
        .header("Content-Type", "application/json")
        .body(seed_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        unpaid["accepts"][0]["extra"]["facilitator"],
        format!("{}/", s.facilitator_url),
        "{unpaid}"
    );
    // The journal has the whole life with the transaction.
    let records = x402_sidecar::audit::read_all(&seller.audit_dir()).unwrap();
    let settled = records.iter().find(|r| r.event == "settled").unwrap();
    assert_eq!(settled.tx, Some(format!("{:#x}", paid.tx)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_refusal_is_a_402_with_its_reason_and_nothing_moves() {
    let s = setup().await;
    let seller = seller(&s, "seller", &s.facilitator_url).await;
    // Signed correctly, but the payer holds nothing: only the facilitator's chain check finds it.
    let broke = s.net.new_buyer(U256::ZERO).await.unwrap();
    let pay = payment(&s, &seller, &broke).await;
    let (status, _, body) = send(&s, &seller, &pay).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(
        body["error"], "invalid_exact_evm_insufficient_balance",
        "{body}"
    );
    assert_eq!(
        s.upstream.calls(),
        0,
        "nothing is forwarded before the payment is valid"
    );
    s.money().assert_not_charged(broke.address(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_facilitator_is_a_503_and_nobody_is_charged() {
    let s = setup().await;
    let gone = format!("http://127.0.0.1:{}", free_port());
    let seller = seller(&s, "seller", &gone).await;
    let buyer = s.buyer().await;
    let pay = payment(&s, &seller, &buyer).await;
    let (status, headers, body) = send(&s, &seller, &pay).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unexpected_verify_error", "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(s.upstream.calls(), 0);
    s.money().assert_not_charged(buyer.address(), FUNDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_answer_lost_on_the_way_back_is_read_from_the_chain() {
    let s = setup().await;
    let sc = scenario(&s, &[Step::ForwardThenDrop]).await;
    let (r, seller, buyer, pay) = (&sc.relay, &sc.seller, &sc.buyer, &sc.pay);
    let (status, _, body) = send(&s, seller, pay).await;
    assert_eq!(status, 200, "the chain shows the settlement: {body}");
    let paid = s.money().assert_paid_once(buyer.address(), FUNDED).await;
    names_the_transfer(&body, &paid);
    assert_eq!(
        r.settles.load(Ordering::SeqCst),
        1,
        "settled once, not asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_settle_is_finished_on_the_retry_and_charged_once() {
    let s = setup().await;
    let sc = scenario(&s, &[Step::Drop]).await;
    let (seller, buyer, pay) = (&sc.seller, &sc.buyer, &sc.pay);
    let (status, headers, body) = send(&s, seller, pay).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "settlement_pending");
    assert!(
        body.get("strategy").is_none(),
        "no advice before the payment is settled"
    );
    assert!(headers.contains_key("retry-after"));
    // Nothing moved yet.
    s.money().assert_not_charged(buyer.address(), FUNDED).await;
    // The same request with the same payment: the chain shows it unused, so it is settled now.
    let (status, _, body) = send(&s, seller, pay).await;
    assert_eq!(status, 200, "{body}");
    let paid = s.money().assert_paid_once(buyer.address(), FUNDED).await;
    names_the_transfer(&body, &paid);
    assert_eq!(
        s.upstream.calls(),
        1,
        "the kept answer is delivered, not generated again"
    );
    // A third time: the stored answer, no new charge.
    let (status, headers, _) = send(&s, seller, pay).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-payment-replayed"], "true");
    s.money().assert_paid_once(buyer.address(), FUNDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_claiming_a_settlement_the_chain_does_not_show_gets_no_answer() {
    let s = setup().await;
    let r = relay(&s.facilitator_url).await;
    r.plan.lock().unwrap().extend([Step::Lie, Step::Lie]);
    let seller = seller(&s, "seller", &r.url).await;
    let buyer = s.buyer().await;
    let pay = payment(&s, &seller, &buyer).await;
    let (status, _, body) = send(&s, &seller, &pay).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "settlement_pending");
    assert!(body.get("strategy").is_none(), "the advice is withheld");
    // Asked again, the seller looks the claimed transaction up on chain: still nothing.
    let (status, _, body) = send(&s, &seller, &pay).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.get("strategy").is_none());
    s.money().assert_not_charged(buyer.address(), FUNDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_the_facilitator_refuses_withholds_the_answer() {
    let s = setup().await;
    let sc = scenario(&s, &[Step::Refuse]).await;
    let (seller, buyer, pay) = (&sc.seller, &sc.buyer, &sc.pay);
    let (status, headers, body) = send(&s, seller, pay).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(
        body["error"], "invalid_exact_evm_insufficient_balance",
        "{body}"
    );
    assert!(body.get("strategy").is_none());
    let receipt = headers["payment-response"].to_str().unwrap();
    let receipt: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, receipt).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["success"], false);
    s.money().assert_not_charged(buyer.address(), FUNDED).await;
    let records = x402_sidecar::audit::read_all(&seller.audit_dir()).unwrap();
    assert!(records.iter().any(|r| r.event == "settlement_failed"));
}

#[test]
fn check_config_explains_a_bad_http_facilitator() {
    let err = check_config_fails(
        &format!(
            "facilitators:\n  - network: {}\n    kind: http\n    rpc_url: http://127.0.0.1:8545\n    settler: {{ key_env: SOME_KEY }}\n",
            devnet::NETWORK
        ),
        &[(
            "SOME_KEY",
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        )],
        &[],
    );
    assert!(err.contains("facilitators[0].url"), "{err}");
    assert!(err.contains("facilitators[0].settler"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_the_chain_contradicts_delivers_the_paid_answer() {
    let s = setup().await;
    let sc = scenario(&s, &[Step::ForwardThenRefuse]).await;
    let (seller, buyer, pay) = (&sc.seller, &sc.buyer, &sc.pay);
    let (status, _, body) = send(&s, seller, pay).await;
    assert_eq!(
        status, 200,
        "the buyer paid, so the buyer gets the answer: {body}"
    );
    let paid = s.money().assert_paid_once(buyer.address(), FUNDED).await;
    names_the_transfer(&body, &paid);
}

/// The `facilitator:<network>` check of a `/readyz` body.
fn facilitator_check(body: &Value) -> Value {
    let name = format!("facilitator:{}", devnet::NETWORK);
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_remote_facilitator() {
    let s = setup().await;
    let readyz = |admin: u16| {
        let http = s.http.clone();
        async move {
            let url = format!("http://127.0.0.1:{admin}/readyz?settle");
            let mut tries = 0;
            let r = loop {
                match http.get(&url).send().await {
                    Ok(r) => break r,
                    // The admin listener may start a moment after the public port.
                    Err(e) if tries < 100 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("{url}: {e}"),
                }
            };
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let admin = free_port();
    let _up = seller_with(&s, "seller-up", &s.facilitator_url, Some(admin)).await;
    let (status, body) = readyz(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(facilitator_check(&body)["ok"], true, "{body}");

    let admin = free_port();
    let gone = format!("http://127.0.0.1:{}", free_port());
    let _down = seller_with(&s, "seller-down", &gone, Some(admin)).await;
    let (status, body) = readyz(admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(facilitator_check(&body)["ok"], false, "{body}");
    assert!(
        facilitator_check(&body)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/supported")),
        "{body}"
    );
}

/// A lying facilitator: a server speaking the facilitator wire format whose `/verify` says every
/// payment is valid and whose `/settle` settles nothing and answers `success: true` with the
/// transaction in `tx` — a real one on chain, but not the payment's own settlement.
struct Liar {
    url: String,
    tx: Arc<Mutex<String>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Liar {
    fn drop(&mut self) {
        self._task.abort();
    }
}

async fn liar() -> Liar {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tx = Arc::new(Mutex::new(String::new()));
    let t = tx.clone();
    let handler: standin::Handler = Arc::new(move |req: Request| {
        let tx = t.lock().unwrap().clone();
        Box::pin(async move {
            let v: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let payer = v["paymentPayload"]["payload"]["authorization"]["from"].clone();
            let body = match req.path.as_str() {
                "/verify" => serde_json::json!({"isValid": true, "payer": payer}),
                "/settle" => serde_json::json!({"success": true, "transaction": tx,
                    "network": devnet::NETWORK, "payer": payer}),
                _ => serde_json::json!({"kinds": [{"x402Version": 2, "scheme": "exact",
                    "network": devnet::NETWORK}]}),
            };
            Response::Body(200, body.to_string())
        })
    });
    let task = tokio::spawn(standin::serve(listener, handler));
    Liar {
        url,
        tx,
        _task: task,
    }
}

/// A transaction that reverted on the devnet: an owner transfer of more than it holds.
async fn reverted_tx(net: &Devnet) -> alloy_primitives::B256 {
    use alloy_network::TransactionBuilder;
    use alloy_provider::Provider;
    use alloy_sol_types::SolCall;
    let call = x402_sidecar::evm::typed::IEip3009Token::transferCall {
        to: net.pay_to,
        value: U256::from(u64::MAX),
    };
    let tx = alloy_rpc_types_eth::TransactionRequest::default()
        .with_to(devnet::USDC)
        .with_input(call.abi_encode())
        .with_gas_limit(100_000);
    let r = net
        .provider()
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(!r.status(), "the transaction was meant to revert");
    r.transaction_hash
}

/// `buyer`'s signed authorization of 10 000 units to `to`.
fn signed_to(
    buyer: &PrivateKeySigner,
    to: alloy_primitives::Address,
) -> x402_sidecar::x402::types::ExactEvmPayload {
    let req = x402_sidecar::x402::types::PaymentRequirements {
        scheme: "exact".into(),
        network: devnet::NETWORK.into(),
        amount: U256::from(PRICE),
        asset: devnet::USDC,
        pay_to: to,
        max_timeout_seconds: 120,
        extra: Some(serde_json::json!({"name": "USDC", "version": "2"})),
    };
    let auth =
        x402_sidecar::buyer::client::authorization(buyer, &req, x402_sidecar::util::now_secs());
    x402_sidecar::buyer::client::sign(buyer, &req, auth).unwrap()
}

/// Submit `payload` as a third party would (the devnet's settler key, outside any sidecar).
async fn submit(
    net: &Devnet,
    payload: &x402_sidecar::x402::types::ExactEvmPayload,
) -> alloy_primitives::B256 {
    let chain = x402_sidecar::evm::Chain::new(
        &net.rpc_url,
        devnet::CHAIN_ID,
        net.settler.clone(),
        Duration::from_secs(10),
    )
    .unwrap();
    let sig = alloy_primitives::Signature::from_raw(&payload.signature).unwrap();
    match chain
        .settle(devnet::USDC, &payload.authorization, &sig)
        .await
    {
        x402_sidecar::evm::SettleOutcome::Settled { tx } => tx,
        other => panic!("the genuine settlement failed: {other:?}"),
    }
}

/// `buyer` pays `to` 10 000 units with a genuine settlement of its own (another authorization
/// than any the seller sees): the hash of that real transfer.
async fn settled_elsewhere(
    net: &Devnet,
    buyer: &PrivateKeySigner,
    to: alloy_primitives::Address,
) -> alloy_primitives::B256 {
    submit(net, &signed_to(buyer, to)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_finds_a_payments_settlement_by_its_own_identity() {
    use x402_sidecar::evm::SettleOutcome;
    let net = devnet().await;
    let chain =
        x402_sidecar::evm::Chain::read_only(&net.rpc_url, devnet::CHAIN_ID, Duration::from_secs(5))
            .unwrap();
    let buyer = net.new_buyer(U256::from(FUNDED)).await.unwrap();
    // Unused: nothing to find.
    let unused = signed_to(&buyer, net.pay_to);
    assert_eq!(
        chain
            .settlement_of(devnet::USDC, &unused.authorization)
            .await
            .unwrap(),
        None
    );
    // Front-run: a third party submits the payment to the seller's payTo first. The chain shows
    // it settled, by its AuthorizationUsed and Transfer, in the front-runner's transaction.
    let front_run = submit(&net, &unused).await;
    assert_eq!(
        chain
            .settlement_of(devnet::USDC, &unused.authorization)
            .await
            .unwrap(),
        Some(SettleOutcome::Settled { tx: front_run })
    );
    assert_eq!(
        chain
            .reconcile(front_run, devnet::USDC, &unused.authorization)
            .await,
        SettleOutcome::Settled { tx: front_run }
    );
    // Another payment's transaction, though of the same payer, amount and payTo, is not it.
    let later = signed_to(&buyer, net.pay_to);
    match chain
        .reconcile(front_run, devnet::USDC, &later.authorization)
        .await
    {
        SettleOutcome::Failed {
            reason, message, ..
        } => {
            assert_eq!(reason, x402_sidecar::x402::Reason::ReceiptMismatch);
            assert!(message.contains("other_nonce"), "{message}");
        }
        other => panic!("another payment's transaction was taken for this one: {other:?}"),
    }
    Money::new(&net, PRICE)
        .assert_paid_once(buyer.address(), FUNDED)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_reporting_a_transaction_that_is_not_this_payment_gets_no_answer() {
    let s = setup().await;
    // Real transactions to lie with: the payer's own earlier paid call (same amount, same
    // payTo, another nonce), another payer's paid call, a reverted transaction, and the payer's
    // genuine payment to another address.
    let honest = seller(&s, "honest", &s.facilitator_url).await;
    let payer = s.buyer().await;
    let other_payer = s.buyer().await;
    let mut old = Vec::new();
    for b in [&payer, &other_payer] {
        let pay = payment(&s, &honest, b).await;
        let (status, _, body) = send(&s, &honest, &pay).await;
        assert_eq!(status, 200, "{body}");
        old.push(body["payment"]["transaction"].as_str().unwrap().to_string());
    }
    let elsewhere = alloy_primitives::Address::repeat_byte(0x5e);
    let to_elsewhere = settled_elsewhere(&s.net, &payer, elsewhere).await;
    let reverted = reverted_tx(&s.net).await;
    let cases = [
        ("the payer's older payment", old[0].clone(), "other_nonce"),
        (
            "another payer's payment",
            old[1].clone(),
            "no_authorization_used",
        ),
        (
            "a reverted transaction",
            format!("{reverted:#x}"),
            "reverted",
        ),
        (
            "the payer's payment to another payTo",
            format!("{to_elsewhere:#x}"),
            "other_nonce",
        ),
    ];
    let lie = liar().await;
    let seller = seller(&s, "lied-to", &lie.url).await;
    for (what, tx, why) in &cases {
        *lie.tx.lock().unwrap() = tx.clone();
        let pay = payment(&s, &seller, &payer).await;
        let (status, _, body) = send(&s, &seller, &pay).await;
        assert_ne!(status, 200, "{what}: {body}");
        assert!(
            body.get("strategy").is_none(),
            "{what}: the advice is withheld: {body}"
        );
        // Sent again, the same payment is still not answered.
        let (status, _, body) = send(&s, &seller, &pay).await;
        assert_ne!(status, 200, "{what}, retried: {body}");
        let records = x402_sidecar::audit::read_all(&seller.audit_dir()).unwrap();
        let failed: Vec<String> = records
            .iter()
            .filter(|r| r.event == "settlement_failed")
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        assert!(
            failed.iter().any(|r| r.contains(why)),
            "{what}: the journal names the mismatch `{why}`: {failed:#?}"
        );
    }
    let records = x402_sidecar::audit::read_all(&seller.audit_dir()).unwrap();
    assert!(
        !records
            .iter()
            .any(|r| r.event == "settled" || r.event == "answered"),
        "nothing was settled or answered by the lied-to seller"
    );
    let honest_records = x402_sidecar::audit::read_all(&honest.audit_dir()).unwrap();
    for event in ["settled", "answered"] {
        assert_eq!(
            honest_records.iter().filter(|r| r.event == event).count(),
            2,
            "the honest seller's {event} records match its transfers"
        );
    }
    // On chain: the two honest calls and the payment elsewhere, nothing more.
    let to_seller = s.money().assert_transfers(2).await;
    assert_eq!(to_seller[0].from, payer.address());
    assert_eq!(to_seller[1].from, other_payer.address());
    s.money()
        .assert_holds(payer.address(), FUNDED - 2 * PRICE)
        .await;
    s.money().assert_holds(elsewhere, PRICE).await;
}
