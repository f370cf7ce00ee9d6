//! The seller paywall end to end: a real anvil chain with the project's EIP-3009 token, real
//! EIP-712 signatures, a real sidecar process, a real upstream over HTTP, real Redis.
//! Every money path checks the chain, not just the HTTP status.

mod common;

use std::time::Duration;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use base64::Engine;
use common::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use x402_sidecar::buyer::client;
use x402_sidecar::util::now_secs;
use x402_sidecar::x402::challenge::ChallengeKey;
use x402_sidecar::x402::types::*;

fn b64json(h: &str) -> Value {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h)
        .expect("base64");
    serde_json::from_slice(&raw).expect("json")
}

async fn post(
    w: &World,
    url: &str,
    body: &str,
    payment: Option<(&str, &str)>,
) -> (u16, HeaderMap, Value) {
    let headers: Vec<(&str, &str)> = payment.into_iter().collect();
    post_json(&w.http, url, body.to_string(), &headers).await
}

/// POST the seed request to the seller's paid route with a v2 payment header.
async fn paid(w: &World, header: &str) -> (u16, HeaderMap, Value) {
    post(
        w,
        &w.paid_url(),
        seed_body(),
        Some(("PAYMENT-SIGNATURE", header)),
    )
    .await
}

/// A fresh v2 challenge from the seller.
async fn challenge(w: &World) -> client::Quote {
    let (status, headers, body) = post(w, &w.paid_url(), seed_body(), None).await;
    assert_eq!(status, 402);
    let h = headers.get("payment-required").unwrap().to_str().unwrap();
    client::parse_challenge(Some(h), body.to_string().as_bytes(), false).unwrap()
}

/// A v2 payment for `offer`, with the authorization and the echoed requirement edited first.
fn v2_payment(
    signer: &PrivateKeySigner,
    offer: &client::Quote,
    edit_auth: impl FnOnce(&mut Authorization),
    edit_accepted: impl FnOnce(&mut Value),
) -> String {
    let mut auth = client::authorization(signer, &offer.requirement, now_secs());
    edit_auth(&mut auth);
    let payload = client::sign(signer, &offer.requirement, auth).unwrap();
    let mut accepted = offer.raw.clone();
    edit_accepted(&mut accepted);
    client::v2_header(&accepted, &payload, None)
}

fn reason(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_call_gets_a_402_in_both_encodings() {
    let w = World::start().await;
    let (status, headers, body) = post(&w, &w.paid_url(), seed_body(), None).await;
    assert_eq!(status, 402);
    assert_eq!(headers["cache-control"], "no-store");
    // v2: the PAYMENT-REQUIRED header.
    let v2 = b64json(headers["payment-required"].to_str().unwrap());
    assert_eq!(v2["x402Version"], 2);
    assert!(v2["resource"]["url"].as_str().unwrap().ends_with("/x402"));
    let a = &v2["accepts"][0];
    assert_eq!(a["scheme"], "exact");
    assert_eq!(a["network"], "eip155:84532");
    assert_eq!(a["amount"], PRICE.to_string());
    assert_eq!(
        a["asset"].as_str().unwrap().parse::<Address>().unwrap(),
        x402_sidecar::devkit::devnet::USDC
    );
    assert_eq!(
        a["payTo"].as_str().unwrap().parse::<Address>().unwrap(),
        w.net.pay_to
    );
    assert_eq!(a["maxTimeoutSeconds"], 120);
    assert_eq!(a["extra"]["name"], "USDC");
    assert_eq!(a["extra"]["version"], "2");
    let fac = a["extra"]["facilitator"].as_str().unwrap();
    assert_eq!(
        fac.strip_prefix("local:")
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        w.net.settler.address()
    );
    let expires = a["extra"]["expiresAt"].as_u64().unwrap();
    assert!(expires >= now_secs() + 110 && expires <= now_secs() + 121);
    assert!(a["extra"]["challenge"].as_str().unwrap().contains('.'));
    // v1: the JSON body.
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["error"], "payment_required");
    assert_eq!(body["accepts"][0]["maxAmountRequired"], PRICE.to_string());
    assert_eq!(body["accepts"][0]["network"], "base-sepolia");
    assert!(
        body["accepts"][0]["resource"]
            .as_str()
            .unwrap()
            .ends_with("/x402")
    );
    // A bare probe (no body) gets the price too, and nothing reached the upstream.
    let (status, _, _) = post(&w, &w.paid_url(), "", None).await;
    assert_eq!(status, 402);
    assert_eq!(w.upstream.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_v2_call_moves_the_price_on_chain_and_returns_the_receipt() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, body) = post_json(
        &w.http,
        &w.paid_url(),
        seed_body(),
        &[("PAYMENT-SIGNATURE", &header), ("traceparent", traceparent)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The buyer paid the price once, to the seller, and nothing else moved.
    let transfer = w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    let receipt = b64json(headers["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true);
    let tx = receipt["transaction"].as_str().unwrap();
    assert_eq!(
        tx,
        format!("{:#x}", transfer.tx),
        "the receipt names the transfer on chain"
    );
    assert_eq!(body["payment"]["receiptId"], tx);
    // Token units as the seed and roma-01 write it; the atomic integer under its own name.
    assert_eq!(body["payment"]["amount"], "0.01");
    assert_eq!(body["payment"]["amountAtomic"], PRICE.to_string());
    assert_eq!(
        body["payment"]["payer"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        buyer.address()
    );
    assert!(body["strategy"]["summary"].is_string());
    assert!(!body["disclaimer"].as_str().unwrap().is_empty());
    assert_eq!(
        body["metadata"]["requestId"],
        headers["x-request-id"].to_str().unwrap()
    );
    assert!(
        body["metadata"]["paymentId"]
            .as_str()
            .unwrap()
            .starts_with("pay_")
    );
    assert_eq!(body["metadata"]["model"], "standin-fixed-v0");
    // The upstream saw who paid, and never the payment itself.
    let seen = w.upstream.last.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen.header("x-payer").unwrap().parse::<Address>().unwrap(),
        buyer.address()
    );
    assert_eq!(
        seen.header("x-payment-id"),
        body["metadata"]["paymentId"].as_str()
    );
    assert!(seen.header("payment-signature").is_none());
    assert_eq!(
        seen.header("traceparent"),
        Some(traceparent),
        "W3C trace context reaches the upstream"
    );
    assert_eq!(w.upstream.calls(), 1);

    // The audit journal tells the whole life of the request with the ids the client saw.
    let request_id = headers["x-request-id"].to_str().unwrap();
    let shown = audit_cli(&w, &["show", request_id]);
    // The records, then (after a blank line) the request and answer they kept.
    let out = shown.split("\n\n").next().unwrap();
    assert!(shown.contains("--- answer body of record"), "{shown}");
    let events: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(
        events,
        ["payment_verified", "forwarded", "settled", "answered"],
        "{out}"
    );
    for line in out.lines() {
        assert!(
            line.contains(request_id)
                && line.contains(body["metadata"]["paymentId"].as_str().unwrap()),
            "{line}"
        );
    }
    assert!(
        out.lines().nth(2).unwrap().contains(tx),
        "the settled record names the on-chain tx"
    );
    assert_eq!(
        audit_cli(&w, &["show", tx])
            .lines()
            .take_while(|l| !l.is_empty())
            .count(),
        4,
        "found by tx hash too"
    );
    assert!(audit_cli(&w, &["verify"]).contains("hash chain intact"));
}

/// Run `x402-sidecar audit …` on the seller's journal.
fn audit_cli(w: &World, args: &[&str]) -> String {
    let dir = w.seller.audit_dir();
    let out = std::process::Command::new(bin())
        .arg("audit")
        .arg("--dir")
        .arg(&dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_v1_call_works_with_x_payment() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let paid = client::pay(
        &w.http,
        &w.paid_url(),
        seed_body().into(),
        &buyer,
        true,
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(paid.status, 200);
    assert_eq!(paid.quote.unwrap().version, 1);
    let receipt = paid.receipt.expect("X-PAYMENT-RESPONSE");
    assert!(receipt.success);
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    let body: Value = serde_json::from_slice(&paid.body).unwrap();
    assert_eq!(body["metadata"]["x402Version"], 1);
    // A v1 exchange names its network the v1 way everywhere, as the official servers do.
    assert_eq!(receipt.network, "base-sepolia");
    assert_eq!(body["payment"]["network"], "base-sepolia");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_success_gets_the_stored_answer_and_pays_once() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let (s1, h1, b1) = paid(&w, &header).await;
    assert_eq!(s1, 200);
    let (s2, h2, b2) = paid(&w, &header).await;
    assert_eq!(s2, 200);
    assert_eq!(b1, b2, "the very same answer");
    assert_eq!(h2["x-payment-replayed"], "true");
    assert_eq!(h1["payment-response"], h2["payment-response"]);
    // Same payment, another request: refused.
    let other = seed_body().replace("ETH-PERP\", \"size\": 1.2", "ETH-PERP\", \"size\": 2.2");
    let (s3, _, b3) = post(
        &w,
        &w.paid_url(),
        &other,
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(s3, 409);
    assert_eq!(reason(&b3), "payment_already_used");
    assert_eq!(w.upstream.calls(), 1);
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_payment_gets_its_own_reason_and_no_upstream_call() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let poor = w.buyer(PRICE - 1).await;
    let stranger = PrivateKeySigner::random();
    let now = now_secs();
    let key = ChallengeKey::new(SECRET.as_bytes().to_vec());
    type AuthEdit = Box<dyn FnOnce(&mut Authorization)>;
    type AccEdit = Box<dyn FnOnce(&mut Value)>;
    let none_a = || -> AuthEdit { Box::new(|_| {}) };
    let none_r = || -> AccEdit { Box::new(|_| {}) };
    let other = Address::repeat_byte(0x42);
    let cases: Vec<(&str, &PrivateKeySigner, AuthEdit, AccEdit, &str)> = vec![
        (
            "authorization for less",
            &buyer,
            Box::new(|a| a.value = U256::from(PRICE - 1)),
            none_r(),
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        (
            "accepted amount lowered",
            &buyer,
            Box::new(|a| a.value = U256::from(1)),
            Box::new(|r| r["amount"] = json!("1")),
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        (
            "pays someone else",
            &buyer,
            Box::new(move |a| a.to = other),
            none_r(),
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        (
            "accepted payTo changed",
            &buyer,
            Box::new(move |a| a.to = other),
            Box::new(move |r| r["payTo"] = json!(other)),
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        (
            "another asset",
            &buyer,
            none_a(),
            Box::new(move |r| r["asset"] = json!(other)),
            "asset_mismatch",
        ),
        (
            "another network",
            &buyer,
            none_a(),
            Box::new(|r| r["network"] = json!("eip155:8453")),
            "network_mismatch",
        ),
        (
            "expired",
            &buyer,
            Box::new(move |a| a.valid_before = U256::from(now - 10)),
            none_r(),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        (
            "not yet valid",
            &buyer,
            Box::new(move |a| a.valid_after = U256::from(now + 60)),
            none_r(),
            "invalid_exact_evm_payload_authorization_valid_after",
        ),
        (
            "valid too long",
            &buyer,
            Box::new(move |a| a.valid_before = U256::from(now + 3_600)),
            none_r(),
            "invalid_exact_evm_payload_authorization_valid_before_too_far",
        ),
        (
            "signed by someone else",
            &stranger,
            Box::new(|a| a.from = Address::repeat_byte(0x11)),
            none_r(),
            "invalid_exact_evm_payload_signature",
        ),
        (
            "forged challenge",
            &buyer,
            none_a(),
            Box::new(|r| {
                r["extra"]["challenge"] = json!(format!("{}.{}", "ab".repeat(16), "cd".repeat(32)))
            }),
            "invalid_challenge",
        ),
        (
            "no challenge",
            &buyer,
            none_a(),
            Box::new(|r| {
                r["extra"].as_object_mut().unwrap().remove("challenge");
            }),
            "invalid_challenge",
        ),
        (
            "insufficient balance",
            &poor,
            none_a(),
            none_r(),
            "invalid_exact_evm_insufficient_balance",
        ),
    ];
    for (name, signer, edit_auth, edit_acc, want) in cases {
        let offer = challenge(&w).await;
        let header = v2_payment(signer, &offer, edit_auth, edit_acc);
        let (status, headers, body) = paid(&w, &header).await;
        assert_eq!(status, 402, "{name}: {body}");
        assert_eq!(reason(&body), want, "{name}: {body}");
        assert!(
            !body["message"].as_str().unwrap_or("").is_empty(),
            "{name}: a sentence for people"
        );
        let v2 = b64json(headers["payment-required"].to_str().unwrap());
        assert_eq!(
            v2["error"], want,
            "{name}: the v2 header carries the reason too"
        );
    }
    // A challenge that was really issued by this seller but has expired.
    let offer = challenge(&w).await;
    let mut stale = offer.requirement.clone();
    let expired_at = now - 5;
    let mut base = stale.clone();
    base.extra = Some(
        json!({"name": "USDC", "version": "2", "facilitator": offer.raw["extra"]["facilitator"]}),
    );
    let token = key.issue("POST /x402", &base, expired_at);
    stale.extra = Some(
        json!({"name": "USDC", "version": "2", "facilitator": offer.raw["extra"]["facilitator"], "expiresAt": expired_at, "challenge": token}),
    );
    let auth = client::authorization(&buyer, &stale, now);
    let payload = client::sign(&buyer, &stale, auth).unwrap();
    let header = client::v2_header(&serde_json::to_value(&stale).unwrap(), &payload, None);
    let (status, _, body) = paid(&w, &header).await;
    assert_eq!(
        (status, reason(&body)),
        (402, "challenge_expired"),
        "{body}"
    );
    // Garbage in the header.
    let (status, _, body) = post(
        &w,
        &w.paid_url(),
        seed_body(),
        Some(("PAYMENT-SIGNATURE", "not base64 at all!")),
    )
    .await;
    assert_eq!((status, reason(&body)), (402, "invalid_payload"));
    // A domain mismatch (signed for "USD Coin") does not recover the payer.
    let offer = challenge(&w).await;
    let mut wrong_domain = offer.requirement.clone();
    wrong_domain.extra = Some(json!({"name": "USD Coin", "version": "2"}));
    let auth = client::authorization(&buyer, &offer.requirement, now);
    let payload = client::sign(&buyer, &wrong_domain, auth).unwrap();
    let header = client::v2_header(&offer.raw, &payload, None);
    let (status, _, body) = paid(&w, &header).await;
    assert_eq!(
        (status, reason(&body)),
        (402, "invalid_exact_evm_payload_signature")
    );

    assert_eq!(
        w.upstream.calls(),
        0,
        "no refused payment reached the upstream"
    );
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_already_settled_on_chain_is_answered_by_a_seller_that_never_saw_it() {
    let w = World::start().await;
    // A second seller with its own memory store: only the chain knows the nonce was used, and it
    // shows the authorization paid this route's payTo this amount (issue 12, item 2).
    let other = w.start_seller("other", &w.seller_node()).await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let (s1, _, b1) = paid(&w, &header).await;
    assert_eq!(s1, 200);
    let (s2, h2, body) = post(
        &w,
        &format!("{}/x402", other.url),
        seed_body(),
        Some(("PAYMENT-SIGNATURE", &header)),
    )
    .await;
    assert_eq!(s2, 200, "{body}");
    assert!(h2.get("payment-response").is_some());
    assert_eq!(body["payment"]["transaction"], b1["payment"]["transaction"]);
    assert_eq!(w.upstream.calls(), 2, "the other seller asked its upstream");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_gets_400_or_413_and_never_a_402() {
    let w = World::start().await;
    let bad = r#"{"account":{"platform":"binance","positions":[]},"preferences":{"leverage":500}}"#;
    let (status, headers, body) = post(&w, &w.paid_url(), bad, None).await;
    assert_eq!(status, 400);
    assert!(headers.get("payment-required").is_none());
    assert_eq!(reason(&body), "invalid_request");
    let paths: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["account.platform", "preferences.leverage"]);
    // Even with a valid payment attached, invalid input is never charged.
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let (status, _, _) = post(&w, &w.paid_url(), bad, Some(("PAYMENT-SIGNATURE", &header))).await;
    assert_eq!(status, 400);
    let (status, _, body) = post(&w, &w.paid_url(), &"x".repeat(70_000), None).await;
    assert_eq!((status, reason(&body)), (413, "body_too_large"));
    assert_eq!(w.upstream.calls(), 0);
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    // Unknown routes are refused; free routes pass without payment.
    let r = w
        .http
        .get(format!("{}/nope", w.seller.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_is_not_charged_and_the_same_payment_then_succeeds() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    for (mode, want_status, want) in [
        (Mode::Status(500), 503, "upstream_error"),
        (Mode::Truncated, 502, "upstream_bad_answer"),
        (Mode::NotJson, 502, "upstream_bad_answer"),
        (Mode::Huge, 502, "upstream_bad_answer"),
    ] {
        w.upstream.set(mode.clone());
        let (status, headers, body) = paid(&w, &header).await;
        assert_eq!(
            (status, reason(&body)),
            (want_status, want),
            "{mode:?}: {body}"
        );
        assert!(headers.get("retry-after").is_some(), "{mode:?}: retryable");
        assert!(body.get("strategy").is_none());
        assert_eq!(w.seller_transfers().await, 0, "{mode:?}: nothing charged");
    }
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    // The claim was released each time: the same authorization now buys the answer, once.
    w.upstream.set(Mode::Normal);
    let (status, _, body) = paid(&w, &header).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_past_the_timeout_is_not_charged() {
    let w = World::start_with(|s| s.upstream_timeout_ms = 500).await;
    let buyer = w.buyer(1_000_000).await;
    w.upstream.set(Mode::Slow(Duration::from_millis(1_500)));
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let (status, headers, body) = paid(&w, &header).await;
    assert_eq!((status, reason(&body)), (504, "upstream_timeout"));
    assert!(headers.get("retry-after").is_some());
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_who_hangs_up_is_not_charged_and_a_retry_gets_the_answer_once() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    w.upstream.set(Mode::Slow(Duration::from_millis(1_500)));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(w.paid_url())
        .header("PAYMENT-SIGNATURE", &header)
        .header("Content-Type", "application/json")
        .body(seed_body())
        .send()
        .await;
    assert!(r.is_err(), "the buyer gave up");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(w.upstream.calls(), 1, "the upstream finished its work");
    // Nobody pays for an answer they did not receive.
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    // The retry with the same payment gets the kept answer and is charged now, once.
    let (status, headers, body) = paid(&w, &header).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("payment-response").is_some());
    assert!(body["strategy"].is_object());
    assert_eq!(w.upstream.calls(), 1, "no second model call");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_drained_before_settlement_gets_402_and_no_answer() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    w.upstream.set(Mode::Slow(Duration::from_millis(1_500)));
    let (http, url, h) = (w.http.clone(), w.paid_url(), header.clone());
    let call = tokio::spawn(async move {
        post_json(&http, &url, seed_body(), &[("PAYMENT-SIGNATURE", &h)]).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sink = Address::repeat_byte(0x77);
    w.net.drain(&buyer, sink).await.unwrap();
    let (status, headers, body) = call.await.unwrap();
    assert_eq!(
        (status, reason(&body)),
        (402, "invalid_exact_evm_insufficient_balance"),
        "{body}"
    );
    assert!(body.get("strategy").is_none(), "the answer is withheld");
    let receipt = b64json(headers["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], false);
    w.money().assert_transfers(0).await;
    assert_eq!(w.balance(sink).await, U256::from(1_000_000));
    let out = audit_cli(&w, &["show", headers["x-request-id"].to_str().unwrap()]);
    assert!(
        out.contains("settlement_failed")
            && out.contains("invalid_exact_evm_insufficient_balance")
            && out.contains("withheld"),
        "{out}"
    );
    assert!(!out.contains(" settled "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_copies_of_one_payment_through_two_sidecars_sharing_redis_settle_once() {
    let w = World::start_with(|s| s.store = REDIS.into()).await;
    let node = SellerNode {
        store: REDIS.into(),
        ..w.seller_node()
    };
    let second = w.start_seller("second", &node).await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    w.upstream.set(Mode::Slow(Duration::from_millis(300)));
    let urls = [w.paid_url(), format!("{}/x402", second.url)];
    let mut calls = Vec::new();
    for i in 0..20 {
        let (http, url, h) = (w.http.clone(), urls[i % 2].clone(), header.clone());
        calls.push(tokio::spawn(async move {
            post_json(&http, &url, seed_body(), &[("PAYMENT-SIGNATURE", &h)]).await
        }));
    }
    let mut ok = 0;
    for c in calls {
        let (status, _, body) = c.await.unwrap();
        match status {
            200 => ok += 1,
            409 => assert_eq!(reason(&body), "payment_in_flight"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(w.upstream.calls(), 1, "exactly one upstream call");
    // Exactly one transfer.
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    // Afterwards both replicas serve the stored answer.
    for url in &urls {
        let (status, headers, _) =
            post(&w, url, seed_body(), Some(("PAYMENT-SIGNATURE", &header))).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-payment-replayed"], "true");
    }
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_settlement_is_pending_never_a_fresh_402_and_the_retry_gets_the_answer() {
    let w = World::start_with(|s| s.settlement.receipt_timeout_ms = Some(1_000)).await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    // Blocks stop being mined: the settlement is broadcast but gets no receipt in time.
    let p = w.net.provider();
    let _: () = alloy_provider::Provider::raw_request(p, "evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let (status, headers, body) = paid(&w, &header).await;
    assert_eq!(
        (status, reason(&body)),
        (503, "settlement_pending"),
        "{body}"
    );
    assert!(headers.get("retry-after").is_some());
    assert!(body.get("strategy").is_none());
    let tx = body["transaction"].as_str().unwrap().to_string();
    // While still unconfirmed, a retry is told to wait again, not asked to pay again.
    let (status, _, body) = paid(&w, &header).await;
    assert_eq!(
        (status, reason(&body)),
        (503, "settlement_pending"),
        "{body}"
    );
    // The block arrives; the retry with the same payment gets the answer, charged once.
    let _: () = alloy_provider::Provider::raw_request(p, "evm_setAutomine".into(), (true,))
        .await
        .unwrap();
    let _: String = alloy_provider::Provider::raw_request(p, "evm_mine".into(), ())
        .await
        .unwrap();
    let (status, headers, body) = paid(&w, &header).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment"]["receiptId"], tx);
    assert_eq!(
        b64json(headers["payment-response"].to_str().unwrap())["transaction"],
        tx
    );
    assert_eq!(w.upstream.calls(), 1);
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_from_many_buyers_all_settle_without_nonce_collisions() {
    let w = World::start().await;
    let mut buyers = Vec::new();
    for _ in 0..8 {
        buyers.push(w.buyer(1_000_000).await);
    }
    let mut calls = Vec::new();
    for b in &buyers {
        let offer = challenge(&w).await;
        let header = v2_payment(b, &offer, |_| {}, |_| {});
        let (http, url) = (w.http.clone(), w.paid_url());
        calls.push(tokio::spawn(async move {
            post_json(&http, &url, seed_body(), &[("PAYMENT-SIGNATURE", &header)]).await
        }));
    }
    for c in calls {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Eight transfers of the price, the seller holds 8 × the price, each buyer paid once.
    let transfers = w.money().assert_transfers(8).await;
    for b in &buyers {
        assert_eq!(
            transfers.iter().filter(|t| t.from == b.address()).count(),
            1
        );
        w.money().assert_holds(b.address(), 1_000_000 - PRICE).await;
    }
    // Logs never carry a payment header, a signature or the settler key.
    let logs = w.seller.logs();
    assert!(
        logs.contains("paid call settled"),
        "the sidecar logs paid calls"
    );
    // Every line of a paid request carries its ids and the caller (JSON logs, span fields).
    for line in logs.lines().filter(|l| l.contains("paid call settled")) {
        let v: Value = serde_json::from_str(line).expect("JSON log line");
        // Each span once: in `spans`, not repeated as `span`.
        assert!(v.get("span").is_none(), "{line}");
        let span = v["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "paid_request")
            .unwrap();
        assert!(
            span["request_id"].as_str().unwrap().starts_with("req_"),
            "{line}"
        );
        assert!(
            span["payment_id"].as_str().unwrap().starts_with("pay_"),
            "{line}"
        );
        assert!(span["payer"].as_str().unwrap().starts_with("0x"), "{line}");
        assert_eq!(span["client"], "127.0.0.1", "{line}");
    }
    assert!(
        !logs.to_lowercase().contains(&w.net.settler_key_hex()[2..]),
        "settler key in logs"
    );
    assert!(
        !logs.contains("eyJ4NDAyVmVyc2lvbiI6"),
        "a base64 payment header in logs"
    );
    assert!(!logs.contains("\"signature\""), "a signature in logs");
}

/// Is `s` an address written in its EIP-55 form (what web3.py-based peers require)?
fn is_eip55(s: &Value) -> bool {
    s.as_str().is_some_and(|t| {
        t.parse::<Address>()
            .is_ok_and(|a| a.to_checksum(None) == t && t != t.to_lowercase())
    })
}

/// Every address the seller writes — the 402 (v2 header and v1 body), the signed payment the
/// buyer client builds, the receipt, the answer's `payment` block and the journal — is EIP-55.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_on_the_wire_is_eip55() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let (status, headers, body) = post(&w, &w.paid_url(), seed_body(), None).await;
    assert_eq!(status, 402);
    let v2 = b64json(headers["payment-required"].to_str().unwrap());
    for field in ["asset", "payTo"] {
        assert!(is_eip55(&v2["accepts"][0][field]), "v2 {field}: {v2}");
        assert!(is_eip55(&body["accepts"][0][field]), "v1 {field}: {body}");
    }
    assert!(is_eip55(&body["price"][0]["asset"]), "{body}");
    let (name, value) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    let sent = b64json(&value);
    for field in ["from", "to"] {
        assert!(
            is_eip55(&sent["payload"]["authorization"][field]),
            "signed {field}: {sent}"
        );
    }
    let (status, headers, body) = post(&w, &w.paid_url(), seed_body(), Some((name, &value))).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    let receipt = b64json(headers["payment-response"].to_str().unwrap());
    assert!(is_eip55(&receipt["payer"]), "{receipt}");
    for field in ["payer", "payTo", "asset"] {
        assert!(is_eip55(&body["payment"][field]), "answer {field}: {body}");
    }
    let out = audit_cli(&w, &["export"]);
    let checksummed = buyer.address().to_checksum(None);
    assert!(out.contains(&checksummed), "{out}");
    assert!(!out.contains(&checksummed.to_lowercase()), "{out}");
}

/// The 402's options as offered (v2 header), each with its requirement.
async fn offers(w: &World) -> Vec<(Value, PaymentRequirements)> {
    let (status, headers, _) = post(w, &w.paid_url(), seed_body(), None).await;
    assert_eq!(status, 402);
    let v2 = b64json(headers["payment-required"].to_str().unwrap());
    v2["accepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|raw| (raw.clone(), serde_json::from_value(raw.clone()).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_price_tier_of_a_route_is_payable_and_settled_at_its_price() {
    use x402_sidecar::devkit::nodes::Tier;
    use x402_sidecar::x402::money::PriceSpec;
    let elsewhere = Address::repeat_byte(0x7e);
    let w = World::start_with(|n| {
        n.tiers = vec![
            // Dearer, to the same payTo; and the base price to another payTo.
            Tier {
                price: PriceSpec::Units(25_000),
                pay_to: n.pay_to,
            },
            Tier {
                price: PriceSpec::Units(PRICE),
                pay_to: elsewhere,
            },
        ];
    })
    .await;
    let tiers = offers(&w).await;
    assert_eq!(tiers.len(), 3);
    let funded = 1_000_000;
    let mut paid_by = Vec::new();
    // Tiers 1 and 2 with v2, the elsewhere tier also with v1 (which echoes nothing).
    for (i, v1) in [(0, false), (1, false), (2, false), (2, true)] {
        let (raw, req) = &tiers[i];
        let buyer = w.buyer(funded).await;
        let auth = client::authorization(&buyer, req, now_secs());
        let payload = client::sign(&buyer, req, auth).unwrap();
        let (name, header) = if v1 {
            ("X-PAYMENT", client::v1_header(&req.network, &payload))
        } else {
            ("PAYMENT-SIGNATURE", client::v2_header(raw, &payload, None))
        };
        let (status, _, body) = post(&w, &w.paid_url(), seed_body(), Some((name, &header))).await;
        assert_eq!(status, 200, "tier {i} (v1: {v1}): {body}");
        assert_eq!(
            body["payment"]["amountAtomic"],
            req.amount.to_string(),
            "{body}"
        );
        assert_eq!(
            body["payment"]["payTo"],
            req.pay_to.to_checksum(None),
            "{body}"
        );
        w.money()
            .assert_holds(buyer.address(), funded - req.amount.to::<u64>())
            .await;
        paid_by.push((buyer.address(), req.amount, req.pay_to));
    }
    // On chain: each buyer paid its tier's amount to its tier's payTo, once.
    let to_seller = w.net.transfers_to(w.net.pay_to).await.unwrap();
    let got: Vec<_> = to_seller.iter().map(|t| (t.from, t.value)).collect();
    assert_eq!(
        got,
        vec![(paid_by[0].0, paid_by[0].1), (paid_by[1].0, paid_by[1].1)]
    );
    w.money().assert_holds(w.net.pay_to, PRICE + 25_000).await;
    let to_elsewhere = x402_sidecar::devkit::world::Money::at(&w.net, elsewhere, PRICE)
        .assert_transfers(2)
        .await;
    assert_eq!(to_elsewhere[0].from, paid_by[2].0);
    assert_eq!(to_elsewhere[1].from, paid_by[3].0);
    let records = x402_sidecar::audit::read_all(&w.seller.audit_dir()).unwrap();
    assert_eq!(records.iter().filter(|r| r.event == "settled").count(), 4);
    assert_eq!(records.iter().filter(|r| r.event == "answered").count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payments_are_refused_without_echoing_the_signature() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let auth = client::authorization(&buyer, &offer.requirement, now_secs());
    let payload = client::sign(&buyer, &offer.requirement, auth).unwrap();
    let signature = x402_sidecar::util::hex(&payload.signature);
    let exact = serde_json::to_value(&payload).unwrap();
    let good = json!({"x402Version": 2, "accepted": offer.raw, "payload": exact});
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let long_hex_key = format!("0x{}", "ee".repeat(40));
    let mut cases: Vec<(&str, &str, String)> = Vec::new();
    let refused_for = |what: &str| {
        if what == "hex scheme" {
            "unsupported_scheme"
        } else {
            "invalid_payload"
        }
    };
    // The known case: `payload` as a JSON string, signature and all.
    let mut v = good.clone();
    v["payload"] = json!(exact.to_string());
    cases.push(("string payload", "PAYMENT-SIGNATURE", b64(&v)));
    let mut v = good.clone();
    v["payload"]["authorization"]["value"] = json!(format!("0x{signature}"));
    cases.push(("signature as the value", "PAYMENT-SIGNATURE", b64(&v)));
    let mut v = good.clone();
    v["payload"]["authorization"][long_hex_key.as_str()] = json!(signature);
    cases.push(("unknown hex key", "PAYMENT-SIGNATURE", b64(&v)));
    let mut v = good.clone();
    v["accepted"] = json!(exact.to_string());
    cases.push(("string accepted", "PAYMENT-SIGNATURE", b64(&v)));
    let mut v = good.clone();
    v["accepted"]["scheme"] = json!(format!("0x{signature}"));
    cases.push(("hex scheme", "PAYMENT-SIGNATURE", b64(&v)));
    let v1 = json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
        "payload": exact.to_string()});
    cases.push(("v1 string payload", "X-PAYMENT", b64(&v1)));
    cases.push(("not base64", "PAYMENT-SIGNATURE", format!("%{signature}")));
    cases.push((
        "not JSON",
        "PAYMENT-SIGNATURE",
        base64::engine::general_purpose::STANDARD.encode(format!("{{\"sig\": \"{signature}")),
    ));
    for (what, name, header) in &cases {
        let (status, headers, body) =
            post(&w, &w.paid_url(), seed_body(), Some((name, header))).await;
        assert_eq!(status, 402, "{what}: {body}");
        assert_eq!(reason(&body), refused_for(what), "{what}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains(&signature[..24]),
            "{what}: the 402 echoes the signature: {text}"
        );
        assert!(
            !x402_sidecar::x402::redact::has_long_hex(&text),
            "{what}: a long hex run in the 402: {text}"
        );
        let required = headers["payment-required"].to_str().unwrap();
        assert!(!x402_sidecar::x402::redact::has_long_hex(
            &b64json(required).to_string()
        ));
    }
    // The string payload's refusal names the field.
    let (_, _, body) = post(
        &w,
        &w.paid_url(),
        seed_body(),
        Some((cases[0].1, &cases[0].2)),
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("`payload`"),
        "{body}"
    );
    let logs = w.seller.logs();
    assert!(logs.contains("payment refused"), "the refusals are logged");
    assert!(
        !logs.contains(&signature[..24]),
        "the log echoes the signature"
    );
    assert!(
        !x402_sidecar::x402::redact::has_long_hex(&logs),
        "a long hex run in the log:\n{logs}"
    );
    assert_eq!(w.upstream.calls(), 0);
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_advice_is_not_charged() {
    let w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let cases = [
        (r#"{"strategy":{}}"#, "empty_summary"),
        (r#"{"strategy":{"summary":"Hold.","steps":[]}}"#, "no_steps"),
        (
            r#"{"strategy":{"summary":"Hold.","steps":[""]}}"#,
            "bad_steps",
        ),
        (
            r#"{"strategy":{"summary":"Hold.","steps":["Hold."],"actions":[{"symbol":"BTC-PERP","action":"yolo","size":1,"notionalUsd":1,"reason":"r"}]}}"#,
            "bad_actions",
        ),
        (
            r#"{"strategy":{"summary":"Hold.","steps":["Hold."],"riskNotes":"none"}}"#,
            "bad_risk_notes",
        ),
        (r#"{"strategy":"hold"}"#, "no_strategy"),
    ];
    for (answer, problem) in cases {
        w.upstream.set(Mode::Answer(answer.into()));
        // The same payment each time: a refused answer releases the claim.
        let (status, headers, body) = paid(&w, &header).await;
        assert_eq!(status, 502, "{answer}: {body}");
        assert_eq!(reason(&body), "answer_not_chargeable", "{body}");
        assert_eq!(body["problem"], problem, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("not charged"),
            "{body}"
        );
        assert!(headers.contains_key("retry-after"));
        w.money()
            .assert_not_charged(buyer.address(), 1_000_000)
            .await;
    }
    // The claim was released each time: the same payment buys the advice once it is real.
    w.upstream.set(Mode::Normal);
    let (status, _, body) = paid(&w, &header).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    let records = x402_sidecar::audit::read_all(&w.seller.audit_dir()).unwrap();
    assert_eq!(records.iter().filter(|r| r.event == "settled").count(), 1);
    assert_eq!(
        records.iter().filter(|r| r.event == "not_charged").count(),
        cases.len()
    );
    // Each not_charged record says what was wrong with the answer.
    for (_, problem) in cases {
        assert!(
            records
                .iter()
                .any(|r| r.event == "not_charged" && r.details["problem"] == problem),
            "{problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labelled_stand_in_is_not_sold_unless_the_route_says_so() {
    let w = World::start_with(|n| n.charge_standin = false).await;
    let buyer = w.buyer(1_000_000).await;
    let offer = challenge(&w).await;
    let header = v2_payment(&buyer, &offer, |_| {}, |_| {});
    let (status, _, body) = paid(&w, &header).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(reason(&body), "answer_not_chargeable", "{body}");
    assert_eq!(body["problem"], "standin", "{body}");
    assert_eq!(w.upstream.calls(), 1);
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    let records = x402_sidecar::audit::read_all(&w.seller.audit_dir()).unwrap();
    assert!(
        !records
            .iter()
            .any(|r| r.event == "settled" || r.event == "answered")
    );
    assert!(records.iter().any(|r| r.event == "not_charged"));
}

/// The plain 402 of a route is built once per second and answered again as built: two buyers
/// within the window get the same challenge and both pay with it (each payment its own
/// transfer: the EIP-3009 nonce, not the challenge, prevents replay); after the window the
/// challenge is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_402_is_kept_for_a_second_and_a_kept_challenge_pays_like_a_fresh_one() {
    let w = World::start().await;
    let first = challenge(&w).await;
    let again = challenge(&w).await;
    assert_eq!(first.raw, again.raw, "within the window: the same 402");
    let (a, b) = (w.buyer(1_000_000).await, w.buyer(1_000_000).await);
    for buyer in [&a, &b] {
        let header = v2_payment(buyer, &again, |_| {}, |_| {});
        let (status, _, body) = paid(&w, &header).await;
        assert_eq!(status, 200, "{body}");
    }
    let transfers = w.money().assert_transfers(2).await;
    for buyer in [&a, &b] {
        assert!(
            transfers.iter().any(|t| t.from == buyer.address()),
            "{transfers:?}"
        );
        w.money()
            .assert_holds(buyer.address(), 1_000_000 - PRICE)
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = challenge(&w).await;
    assert_ne!(first.raw, later.raw, "after the window: a new challenge");
}
