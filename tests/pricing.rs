//! Pricing policies (`pricing:` on a route): the 402 quotes each request by what it asks (its
//! positions and symbols, the model tier, the market), the paid request is priced again from
//! its own body, and a payment signed for another amount is refused as `price_mismatch`
//! before the chain or the upstream is asked. A real seller process, a real anvil chain; every
//! scenario ends with the transfers on chain.

mod common;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use common::*;
use serde_json::{Value, json};

/// 10 000 base; +1 000 per position, +500 per symbol, +20 000 for `rules+model`, +2 000 on
/// Aster, +3 000 when BTC is asked; at least 11 000, at most 40 000 atomic units.
fn policy() -> Value {
    json!({
        "per_position": 1000,
        "per_symbol": 500,
        "tiers": {"rules": "$0", "rules+model": "$0.02"},
        "platforms": {"aster": 2000},
        "symbols": {"BTC": 3000},
        "floor": "$0.011",
        "cap": "$0.04",
    })
}

fn request(platform: &str, held: &[&str], asked: &[&str]) -> String {
    let positions: Vec<Value> = held
        .iter()
        .map(|s| json!({"symbol": s, "side": "long", "size": 1.0, "entryPrice": 100.0, "markPrice": 101.0, "leverage": 2.0}))
        .collect();
    json!({
        "account": {"platform": platform, "balance": {"asset": "USDC", "amount": 5000.0}, "positions": positions},
        "preferences": {"leverage": 3.0, "riskTolerance": "medium"},
        "symbols": asked,
    })
    .to_string()
}

/// The 402 for `body` (with `headers`): the amount it quotes and the header that pays it.
async fn quote(
    w: &World,
    body: &str,
    headers: &[(&str, &str)],
    buyer: &PrivateKeySigner,
) -> (u64, (&'static str, String), Value) {
    let (status, h, b) = post_json(&w.http, &w.paid_url(), body.to_string(), headers).await;
    assert_eq!(status, 402, "{b}");
    let header = h["payment-required"].to_str().unwrap();
    let offer =
        x402_sidecar::buyer::client::parse_challenge(Some(header), b.to_string().as_bytes(), false)
            .unwrap();
    let amount = offer.requirement.amount.to::<u64>();
    let (name, value, _) = x402_sidecar::buyer::client::payment_for(buyer, &offer).unwrap();
    (amount, (name, value), b)
}

async fn pay(
    w: &World,
    body: &str,
    headers: &[(&str, &str)],
    payment: &(&'static str, String),
) -> (u16, Value) {
    let mut all = headers.to_vec();
    all.push((payment.0, payment.1.as_str()));
    let (status, _, b) = post_json(&w.http, &w.paid_url(), body.to_string(), &all).await;
    (status, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_pays_its_own_quote_and_a_payment_for_another_is_refused_before_any_work() {
    let w = World::start_with(|n| n.pricing = Some(policy())).await;
    let buyer = w.buyer(1_000_000).await;
    let small = request("hyperliquid", &["ETH"], &["ETH"]);
    let big = request("aster", &["BTC", "ETH", "SOL"], &["BTC"]);
    let huge_symbols: Vec<String> = (0..40).map(|i| format!("C{i}")).collect();
    let held: Vec<&str> = huge_symbols.iter().map(String::as_str).collect();
    let huge = request("hyperliquid", &held, &[]);
    let model = [("X-Strategy-Tier", "rules+model")];

    // Each dimension in the quote: size, market, tier, the cap.
    let (a, pay_small, q) = quote(&w, &small, &[], &buyer).await;
    assert_eq!(a, 10_000 + 1_000 + 500, "size: {q}");
    assert_eq!(q["quote"]["tier"], "rules", "{q}");
    assert_eq!(
        q["quote"]["accepts"][0]["amount"], "11500",
        "the 402 says how: {q}"
    );
    let (b, pay_big, q) = quote(&w, &big, &[], &buyer).await;
    assert_eq!(
        b,
        10_000 + 3 * 1_000 + 3 * 500 + 2_000 + 3_000,
        "market: {q}"
    );
    let (c, pay_model, _) = quote(&w, &small, &model, &buyer).await;
    assert_eq!(c, 11_500 + 20_000, "tier");
    let (d, pay_huge, q) = quote(&w, &huge, &model, &buyer).await;
    assert_eq!(d, 40_000, "capped: {q}");
    // The same request gets the same quote again (the kept 402 is per quote).
    let (again, _, _) = quote(&w, &small, &[], &buyer).await;
    assert_eq!(again, a);

    // A payment signed for the small request, sent with the big one: refused with its own
    // reason and both amounts, before the chain or the upstream is asked.
    let calls = w.upstream.calls();
    let (status, body) = pay(&w, &big, &[], &pay_small).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "price_mismatch", "{body}");
    let why = body["message"].as_str().unwrap();
    assert!(
        why.contains(&b.to_string()) && why.contains(&a.to_string()),
        "{why}"
    );
    assert_eq!(
        body["quote"]["accepts"][0]["amount"],
        b.to_string(),
        "a fresh quote: {body}"
    );
    // Asking for the model tier with a payment for the rules tier: the same.
    let (status, body) = pay(&w, &small, &model, &pay_small).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("price_mismatch")),
        "{body}"
    );
    assert_eq!(w.upstream.calls(), calls, "the upstream did no work");
    assert_eq!(w.seller_transfers().await, 0, "nothing moved");

    // Each request paid at its own quote: 200, and exactly that amount on chain.
    for (body, headers, payment) in [
        (&small, &[][..], &pay_small),
        (&big, &[][..], &pay_big),
        (&small, &model[..], &pay_model),
        (&huge, &model[..], &pay_huge),
    ] {
        let (status, answer) = pay(&w, body, headers, payment).await;
        assert_eq!(status, 200, "{answer}\n{}", w.seller.logs());
    }
    // The tier bought is passed to the upstream.
    let last = w.upstream.last.lock().unwrap().clone().unwrap();
    assert_eq!(last.header("x-strategy-tier"), Some("rules+model"));

    let transfers = w.net.transfers_to(w.net.pay_to).await.unwrap();
    let mut paid: Vec<u64> = transfers.iter().map(|t| t.value.to::<u64>()).collect();
    paid.sort();
    let mut want = vec![a, b, c, d];
    want.sort();
    assert_eq!(
        paid, want,
        "one transfer per paid answer, each at its quote"
    );
    assert!(transfers.iter().all(|t| t.from == buyer.address()));
    let spent: u64 = want.iter().sum();
    assert_eq!(
        w.balance(buyer.address()).await,
        U256::from(1_000_000 - spent)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tier_is_a_400_naming_the_tiers_and_nothing_is_charged() {
    let w = World::start_with(|n| n.pricing = Some(policy())).await;
    let body = request("hyperliquid", &["ETH"], &[]);
    let (status, _, b) = post_json(
        &w.http,
        &w.paid_url(),
        body,
        &[("X-Strategy-Tier", "platinum")],
    )
    .await;
    assert_eq!(status, 400, "{b}");
    assert_eq!(b["error"], "unknown_tier");
    let why = b["message"].as_str().unwrap();
    assert!(
        why.contains("rules, rules+model") && why.contains("nothing was charged"),
        "{why}"
    );
    // The tier may also be named in the body.
    let mut v: Value = serde_json::from_str(&request("hyperliquid", &["ETH"], &[])).unwrap();
    v["tier"] = json!("rules+model");
    let buyer = w.buyer(100_000).await;
    let (amount, _, _) = quote(&w, &v.to_string(), &[], &buyer).await;
    assert_eq!(amount, 31_500);
    assert_eq!(w.seller_transfers().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pricing_policy_is_checked_with_paths() {
    let net = devnet().await;
    let key = net.settler_key_hex();
    let node = |p: Value| {
        let mut n = seller_node(free_port(), "http://127.0.0.1:9", &net);
        n.pricing = Some(p);
        n.yaml()
    };
    let bad = node(json!({"per_position": 0.001, "platforms": {"binance": 10}}));
    let err = check_config_fails(&bad, &[(SETTLER_ENV, key.as_str())], &[]);
    assert!(err.contains("per_position"), "{err}");
    let bad = node(json!({"platforms": {"binance": 10}, "floor": 50000, "cap": 20000}));
    let err = check_config_fails(&bad, &[(SETTLER_ENV, key.as_str())], &[]);
    assert!(
        err.contains("inbound.routes[0].pricing.platforms.binance"),
        "{err}"
    );
    assert!(
        err.contains("inbound.routes[0].pricing.floor: is above the cap"),
        "{err}"
    );
    let low = node(json!({"cap": 5000}));
    let err = check_config_fails(&low, &[(SETTLER_ENV, key.as_str())], &[]);
    assert!(
        err.contains("inbound.routes[0].pricing.cap: is below accepts[0]'s own price"),
        "{err}"
    );
    let typo = node(json!({"per_postion": 1000}));
    let err = check_config_fails(&typo, &[(SETTLER_ENV, key.as_str())], &[]);
    assert!(
        err.contains("per_postion") && err.contains("per_position"),
        "did you mean: {err}"
    );
}
