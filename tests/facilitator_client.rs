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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_remote_facilitator() {
    let s = setup().await;
    let readyz = |admin: u16| {
        let http = s.http.clone();
        async move {
            let url = format!("http://127.0.0.1:{admin}/readyz");
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
    assert_eq!(
        body["checks"][format!("facilitator:{}", devnet::NETWORK)],
        true,
        "{body}"
    );

    let admin = free_port();
    let gone = format!("http://127.0.0.1:{}", free_port());
    let _down = seller_with(&s, "seller-down", &gone, Some(admin)).await;
    let (status, body) = readyz(admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["checks"][format!("facilitator:{}", devnet::NETWORK)],
        false,
        "{body}"
    );
}
