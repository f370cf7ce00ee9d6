//! The facilitator API end to end: a real anvil devnet with the project's EIP-3009 token, real
//! EIP-712 signatures, and real HTTP to a sidecar process that runs only its `facilitator:`
//! section. Every money path checks the chain: verify never moves money, settle moves it once.

mod common;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use common::*;
use serde_json::{Value, json};
use x402_sidecar::buyer::client;
use x402_sidecar::devkit::devnet::{NETWORK, USDC};
use x402_sidecar::devkit::nodes::{FacilitatorNode, SettledBy, Settlement};
use x402_sidecar::util::now_secs;
use x402_sidecar::x402::Reason;
use x402_sidecar::x402::types::*;

/// A devnet world plus a second sidecar serving only the facilitator API (and /metrics).
struct Fac {
    w: World,
    sidecar: Sidecar,
    admin: String,
}

impl Fac {
    async fn start() -> Fac {
        let w = World::start().await;
        let admin_port = free_port();
        let mut node = FacilitatorNode::new(free_port(), &w.net, SETTLER_ENV);
        node.settlement.receipt_timeout_ms = Some(10_000);
        node.admin = Some(admin_port);
        node.server = Some(Server::small());
        let key = w.net.settler_key_hex();
        let sidecar =
            start_sidecar(w.dir.path(), "facilitator", node.listen, &node.yaml(), &key).await;
        Fac {
            w,
            sidecar,
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    /// The resource server's requirement: the seller's price, paid to the seller.
    fn requirements(&self) -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: NETWORK.into(),
            amount: U256::from(PRICE),
            asset: USDC,
            pay_to: self.w.net.pay_to,
            max_timeout_seconds: 120,
            extra: Some(json!({"name": "USDC", "version": "2"})),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .w
            .http
            .post(format!("{}{path}", self.sidecar.url))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn balances(&self, payer: Address) -> (U256, U256, usize) {
        (
            self.w.balance(payer).await,
            self.w.balance(self.w.net.pay_to).await,
            self.w.seller_transfers().await,
        )
    }
}

/// A signed v2 payment for `accepted`, its authorization edited first, signed by `key`.
fn v2_payment(
    payer: &PrivateKeySigner,
    key: &PrivateKeySigner,
    accepted: &PaymentRequirements,
    edit: impl FnOnce(&mut Authorization),
) -> Value {
    let mut auth = client::authorization(payer, accepted, now_secs());
    edit(&mut auth);
    let payload = client::sign(key, accepted, auth).unwrap();
    json!({"x402Version": 2, "accepted": accepted, "payload": payload})
}

fn request(version: u8, payment: &Value, requirements: &impl serde::Serialize) -> Value {
    json!({"x402Version": version, "paymentPayload": payment, "paymentRequirements": requirements})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supported_lists_the_devnet_in_both_versions_and_the_settler() {
    let f = Fac::start().await;
    let resp =
        f.w.http
            .get(format!("{}/supported", f.sidecar.url))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let s: SupportedResponse = resp.json().await.unwrap();
    let kinds: Vec<(u8, &str, &str)> = s
        .kinds
        .iter()
        .map(|k| (k.x402_version, k.scheme.as_str(), k.network.as_str()))
        .collect();
    assert!(kinds.contains(&(2, "exact", NETWORK)), "{kinds:?}");
    assert!(kinds.contains(&(1, "exact", "base-sepolia")), "{kinds:?}");
    assert_eq!(kinds.len(), 2);
    let signers = &s.signers["eip155:*"];
    assert_eq!(
        signers
            .iter()
            .map(|a| a.parse::<Address>().unwrap())
            .collect::<Vec<_>>(),
        vec![f.w.net.settler.address()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accepts_valid_v2_and_v1_payments_without_moving_money() {
    let f = Fac::start().await;
    let buyer = f.w.buyer(PRICE * 3).await;
    let before = f.balances(buyer.address()).await;
    let req = f.requirements();

    let (status, body) = f
        .post(
            "/verify",
            &request(2, &v2_payment(&buyer, &buyer, &req, |_| {}), &req),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["isValid"], true, "{body}");
    assert_eq!(
        body["payer"].as_str().unwrap().parse::<Address>().unwrap(),
        buyer.address()
    );
    assert!(body.get("invalidReason").is_none(), "{body}");

    // v1: the payload names the v1 network, the requirements are in the v1 shape.
    let v1_req = PaymentRequirementsV1 {
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        max_amount_required: req.amount,
        resource: "http://seller.example/x402".into(),
        description: "Trading strategy advice".into(),
        mime_type: "application/json".into(),
        pay_to: req.pay_to,
        max_timeout_seconds: req.max_timeout_seconds,
        asset: req.asset,
        extra: req.extra.clone(),
        output_schema: None,
    };
    let auth = client::authorization(&buyer, &req, now_secs());
    let payload = client::sign(&buyer, &req, auth).unwrap();
    let v1_payment =
        json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": payload});
    let (status, body) = f.post("/verify", &request(1, &v1_payment, &v1_req)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["isValid"], true, "{body}");

    // The same authorization may be verified again: verify reads, it does not claim.
    let (_, again) = f.post("/verify", &request(1, &v1_payment, &v1_req)).await;
    assert_eq!(again["isValid"], true, "{again}");

    assert_eq!(f.balances(buyer.address()).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_each_bad_payment_with_its_reason_and_moves_no_money() {
    let f = Fac::start().await;
    let buyer = f.w.buyer(PRICE * 3).await;
    let stranger = PrivateKeySigner::random();
    let unfunded = PrivateKeySigner::random();
    let before = f.balances(buyer.address()).await;
    let req = f.requirements();

    let mut elsewhere = req.clone();
    elsewhere.pay_to = Address::repeat_byte(0x42);
    let mut dearer = req.clone();
    dearer.amount = U256::from(PRICE * 2);
    let cases: Vec<(&str, Value, Reason, Address)> = vec![
        (
            "paid to another address than the requirements",
            request(2, &v2_payment(&buyer, &buyer, &elsewhere, |_| {}), &req),
            Reason::RecipientMismatch,
            buyer.address(),
        ),
        (
            "an amount below the requirements",
            request(2, &v2_payment(&buyer, &buyer, &req, |_| {}), &dearer),
            Reason::ValueMismatch,
            buyer.address(),
        ),
        (
            "an expired authorization",
            request(
                2,
                &v2_payment(&buyer, &buyer, &req, |a| {
                    a.valid_before = U256::from(now_secs() - 10)
                }),
                &req,
            ),
            Reason::ValidBefore,
            buyer.address(),
        ),
        (
            "signed by another key",
            request(2, &v2_payment(&buyer, &stranger, &req, |_| {}), &req),
            Reason::Signature,
            buyer.address(),
        ),
        (
            "a payer without funds",
            request(2, &v2_payment(&unfunded, &unfunded, &req, |_| {}), &req),
            Reason::InsufficientBalance,
            unfunded.address(),
        ),
    ];
    for (what, body, want, payer) in cases {
        let (status, v) = f.post("/verify", &body).await;
        assert_eq!(status, 200, "{what}: {v}");
        assert_eq!(v["isValid"], false, "{what}: {v}");
        assert_eq!(v["invalidReason"], want.code(), "{what}: {v}");
        assert!(
            !v["invalidMessage"].as_str().unwrap_or_default().is_empty(),
            "{what}: {v}"
        );
        assert_eq!(
            v["payer"].as_str().unwrap().parse::<Address>().unwrap(),
            payer,
            "{what}"
        );
    }
    assert_eq!(f.balances(buyer.address()).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_moves_the_price_once_and_refuses_the_same_payment_again() {
    let f = Fac::start().await;
    let buyer = f.w.buyer(PRICE * 3).await;
    let (payer_before, seller_before, transfers_before) = f.balances(buyer.address()).await;
    let req = f.requirements();
    let payment = v2_payment(&buyer, &buyer, &req, |_| {});
    let signature = payment["payload"]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let body = request(2, &payment, &req);

    let (status, r) = f.post("/settle", &body).await;
    assert_eq!(status, 200, "{r}");
    let receipt: SettleResponse = serde_json::from_value(r.clone()).unwrap();
    assert!(receipt.success, "{r}");
    assert_eq!(receipt.network, NETWORK);
    assert_eq!(receipt.payer, Some(buyer.address()));
    assert_eq!(receipt.amount.as_deref(), Some(PRICE.to_string().as_str()));
    assert!(receipt.error_reason.is_none(), "{r}");

    // On chain: exactly one Transfer, in the answered transaction, of the price.
    let paid =
        f.w.money()
            .assert_paid_once(buyer.address(), PRICE * 3)
            .await;
    assert_eq!(format!("{:#x}", paid.tx), receipt.transaction);
    assert_eq!(
        f.balances(buyer.address()).await,
        (
            payer_before - U256::from(PRICE),
            seller_before + U256::from(PRICE),
            transfers_before + 1
        )
    );

    // The same payment again: the nonce is spent, nothing moves.
    let (status, again) = f.post("/settle", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(again["errorReason"], Reason::NonceUsed.code(), "{again}");
    assert_eq!(again["transaction"], "", "{again}");
    assert_eq!(
        again["payer"].as_str().unwrap().parse::<Address>().unwrap(),
        buyer.address()
    );
    assert!(again["errorMessage"].as_str().is_some(), "{again}");
    f.w.money()
        .assert_paid_once(buyer.address(), PRICE * 3)
        .await;
    // And verify says the same.
    let (_, v) = f.post("/verify", &body).await;
    assert_eq!(v["invalidReason"], Reason::NonceUsed.code(), "{v}");

    // The facilitator's own journal: one settlement, with the transaction on chain; the refused
    // second attempt never reached the chain and is not a settlement record.
    let records = x402_sidecar::audit::read_all(&f.sidecar.audit_dir()).unwrap();
    let settled: Vec<_> = records
        .iter()
        .filter(|r| r.event.starts_with("facilitator_settle"))
        .collect();
    assert_eq!(settled.len(), 1, "{records:#?}");
    assert_eq!(settled[0].event, "facilitator_settled");
    assert_eq!(settled[0].tx.as_deref(), Some(receipt.transaction.as_str()));
    assert_eq!(
        settled[0].payer.as_deref().map(str::to_lowercase),
        Some(format!("{:#x}", buyer.address()))
    );
    let v = x402_sidecar::audit::verify(&f.sidecar.audit_dir()).unwrap();
    assert_eq!(v.records, records.len(), "the hash chain is intact");

    // Counted, logged once each, and the signature is never in the log.
    let metrics = get_text(&f.w.http, &format!("{}/metrics", f.admin)).await;
    for line in [
        r#"x402_facilitator_requests_total{endpoint="settle",outcome="settled"} 1"#,
        r#"x402_facilitator_requests_total{endpoint="settle",outcome="invalid"} 1"#,
        r#"x402_facilitator_requests_total{endpoint="verify",outcome="invalid"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let logs = f.sidecar.logs();
    assert!(logs.contains(&receipt.transaction), "{logs}");
    let sig_hex = signature.trim_start_matches("0x");
    assert!(
        !logs.to_lowercase().contains(&sig_hex.to_lowercase()),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_http_errors() {
    let f = Fac::start().await;
    let url = |p: &str| format!("{}{p}", f.sidecar.url);
    let resp =
        f.w.http
            .post(url("/verify"))
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["message"].as_str().is_some());

    // Valid JSON that is not a facilitator request.
    let (status, body) = f.post("/settle", &json!({"hello": 1})).await;
    assert_eq!(status, 400, "{body}");

    let resp = f.w.http.get(url("/verify")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = f.w.http.post(url("/supported")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = f.w.http.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let big = "x".repeat(70 * 1024);
    let resp =
        f.w.http
            .post(url("/verify"))
            .body(big)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 413);

    // An unknown x402Version is a verdict, not an HTTP error.
    let (status, body) = f
        .post(
            "/verify",
            &json!({"x402Version": 7, "paymentPayload": {}, "paymentRequirements": {}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["isValid"], false);
    assert_eq!(body["invalidReason"], Reason::InvalidX402Version.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_chain_is_an_unexpected_error_not_the_payers_fault() {
    x402_sidecar::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let node = FacilitatorNode {
        listen: free_port(),
        settlement: Settlement {
            network: NETWORK.into(),
            rpc_url: format!("http://127.0.0.1:{}", free_port()),
            by: SettledBy::Key {
                key_env: SETTLER_ENV.into(),
            },
            receipt_timeout_ms: None,
            rpc_timeout_ms: None,
            gas_floor_settlements: None,
            replace_after_ms: None,
            batch: None,
        },
        server: None,
        admin: None,
        audit: false,
        per_client: None,
        bearer_keys_env: Vec::new(),
    };
    let key = x402_sidecar::evm::keys::DEV_KEYS[1];
    let sidecar = start_sidecar(dir.path(), "facilitator", node.listen, &node.yaml(), key).await;
    let req = PaymentRequirements {
        scheme: "exact".into(),
        network: NETWORK.into(),
        amount: U256::from(PRICE),
        asset: USDC,
        pay_to: Address::repeat_byte(9),
        max_timeout_seconds: 120,
        extra: Some(json!({"name": "USDC", "version": "2"})),
    };
    let buyer = PrivateKeySigner::random();
    let body = request(2, &v2_payment(&buyer, &buyer, &req, |_| {}), &req);
    let http = reqwest::Client::new();
    for path in ["/verify", "/settle"] {
        let resp = http
            .post(format!("{}{path}", sidecar.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let v: Value = resp.json().await.unwrap();
        let (flag, reason) = if path == "/verify" {
            ("isValid", "invalidReason")
        } else {
            ("success", "errorReason")
        };
        assert_eq!(v[flag], false, "{path}: {v}");
        assert_eq!(
            v[reason],
            Reason::UnexpectedVerifyError.code(),
            "{path}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_settles_of_one_payment_move_the_money_once() {
    let f = Fac::start().await;
    let buyer = f.w.buyer(PRICE * 3).await;
    let req = f.requirements();
    let body = request(2, &v2_payment(&buyer, &buyer, &req, |_| {}), &req);
    let url = format!("{}/settle", f.sidecar.url);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (http, url, body) = (f.w.http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let resp = http.post(url).json(&body).send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let settled = answers.iter().filter(|(_, v)| v["success"] == true).count();
    assert_eq!(settled, 1, "{answers:?}");
    for (status, v) in &answers {
        assert_eq!(*status, 200);
        if v["success"] == false {
            assert_eq!(v["errorReason"], Reason::NonceUsed.code(), "{v}");
        }
    }
    f.w.money()
        .assert_paid_once(buyer.address(), PRICE * 3)
        .await;
}

/// With `auth.bearer_keys_env`, `/verify` and `/settle` refuse a caller without a known key
/// (401) and serve one with it; each key has its own rate limit (429 with `Retry-After`), and
/// the refusals move no money and are counted on /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_keys_guard_the_facilitator_and_each_key_is_rate_limited() {
    const KEY_ENV: &str = "X402_TEST_FACILITATOR_BEARER";
    const KEY: &str = "test-bearer-key-0123456789abcdefghijkl";
    let w = World::start().await;
    let admin = free_port();
    let mut node = FacilitatorNode::new(free_port(), &w.net, SETTLER_ENV);
    node.admin = Some(admin);
    node.bearer_keys_env = vec![KEY_ENV.into()];
    node.per_client = Some((3, 60));
    let sidecar = run(
        launch(w.dir.path(), "facilitator")
            .env(SETTLER_ENV, w.net.settler_key_hex())
            .env(KEY_ENV, KEY),
        &node.yaml(),
        node.listen,
    )
    .await;
    let buyer = w.buyer(PRICE).await;
    let req = PaymentRequirements {
        scheme: "exact".into(),
        network: NETWORK.into(),
        amount: U256::from(PRICE),
        asset: USDC,
        pay_to: w.net.pay_to,
        max_timeout_seconds: 120,
        extra: Some(json!({"name": "USDC", "version": "2"})),
    };
    let body = request(2, &v2_payment(&buyer, &buyer, &req, |_| {}), &req);
    let call = |auth: Option<&'static str>, path: &'static str| {
        let mut r = w.http.post(format!("{}{path}", sidecar.url)).json(&body);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let www = resp.headers().get("www-authenticate").is_some();
            (status, retry, www, resp.json::<Value>().await.unwrap())
        }
    };
    let bearer = Box::leak(format!("Bearer {KEY}").into_boxed_str()) as &'static str;

    for (auth, path) in [
        (None, "/verify"),
        (
            Some("Bearer not-the-key-0123456789abcdefghijklm"),
            "/verify",
        ),
        (None, "/settle"),
    ] {
        let (status, _, www, b) = call(auth, path).await;
        assert_eq!(status, 401, "{path} {b}");
        assert!(www);
        assert_eq!(b["error"], "unauthorized");
        assert!(!b.to_string().contains(KEY));
    }
    for _ in 0..3 {
        let (status, _, _, b) = call(Some(bearer), "/verify").await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(b["isValid"], true, "{b}");
    }
    let (status, retry, _, b) = call(Some(bearer), "/verify").await;
    assert_eq!(status, 429, "{b}");
    assert_eq!(b["error"], "rate_limited");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    // /supported stays open (discovery and readiness probes).
    let s = w
        .http
        .get(format!("{}/supported", sidecar.url))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 200);
    let metrics = get_text(&w.http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        metrics.contains("x402_rate_limited_total{limit=\"facilitator_client\"} 1"),
        "{metrics}"
    );
    assert!(
        !sidecar.logs().contains(KEY),
        "the bearer key reached the log"
    );
    w.money().assert_not_charged(buyer.address(), PRICE).await;
}
