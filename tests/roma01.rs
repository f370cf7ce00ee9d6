//! roma-01 end to end on the devnet: a buyer sidecar paying a seller sidecar in front of the
//! built-in advisor, driven by roma-01's own shapes. The Python side (integrations/roma01: the
//! drop-in for roma-01 `main`, pydantic models of roma-01's `StrategyResponse`, the seed's
//! camelCase answer and roma-01's decision format, and a stand-in of roma-01's executor) runs
//! under pytest against the real processes: Hyperliquid and Aster accounts built from roma-01's
//! toolkit dicts (unsigned size + side, `entryPrice`/`markPrice`, `owner`, `raw`, `telemetry`,
//! `constraints`, zero prices) are paid for through the buyer, validated in both shapes, and
//! their `decisions` executed; a buyer whose seller is down answers from its local fallback,
//! marked so and unpaid. This file also pays the seller directly with roma-01's own buyer
//! request over x402 v1 (what roma-01's `RemoteStrategyClient` does) for pytest to validate.
//! Then the money: one transfer on chain per paid call, the ledger equal to the chain, the
//! fallback buyer not charged.
//!
//! Needs `.venv-roma01` (scripts/setup-roma01.sh, run by `make test`); without it the test is
//! skipped loudly, unless `X402_REQUIRE_ROMA01=1` or `X402_REQUIRE_LLM=1` (CI) makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use alloy_primitives::U256;
use bytes::Bytes;
use common::*;
use serde_json::Value;
use x402_sidecar::advisor::server::{self as advisor, Advisor};
use x402_sidecar::buyer::{client, ledger};
use x402_sidecar::devkit::nodes::{BuyerNode, Fallback, SellerEntry};
use x402_sidecar::x402::money::PriceSpec;

const ADVISOR_SECRET: &str = "roma01-test-advisor-secret-0123";
const SECRET_ENV: &str = "X402_TEST_ADVISOR_SECRET";
const BUYER_ENV: &str = "X402_TEST_BUYER_KEY";
const FUNDED: u64 = 5_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, or `None` (skip) when it is missing and not required.
fn python() -> Option<PathBuf> {
    let py = root().join(".venv-roma01/bin/python");
    if py.exists() {
        return Some(py);
    }
    let required = ["X402_REQUIRE_ROMA01", "X402_REQUIRE_LLM"]
        .iter()
        .any(|v| std::env::var(v).as_deref() == Ok("1"));
    assert!(
        !required,
        ".venv-roma01 is missing: run scripts/setup-roma01.sh (make test does)"
    );
    eprintln!("SKIPPED tests/roma01.rs: .venv-roma01 is missing (scripts/setup-roma01.sh)");
    None
}

/// A buyer sidecar with a fresh funded key, paying `sellers`, falling back as `fallback`.
async fn buyer(
    w: &World,
    name: &str,
    sellers: Vec<SellerEntry>,
    fallback: Fallback,
) -> (Sidecar, alloy_signer_local::PrivateKeySigner, PathBuf) {
    let key = w.buyer(FUNDED).await;
    let port = free_port();
    let ledger = w.dir.path().join(format!("{name}-ledger.jsonl"));
    let mut node = BuyerNode::new(
        port,
        &w.net,
        BUYER_ENV,
        PriceSpec::Units(1_000_000),
        &ledger,
    );
    node.sellers = sellers;
    node.fallback = fallback;
    node.max_authorization_seconds = Some(60);
    let launch = launch(w.dir.path(), name)
        .env(
            BUYER_ENV,
            format!("0x{}", x402_sidecar::util::hex(&key.to_bytes()[..])),
        )
        .env(SECRET_ENV, ADVISOR_SECRET);
    (run(launch, &node.yaml(), port).await, key, ledger)
}

fn pytest(py: &Path, envs: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(py);
    cmd.current_dir(root().join("integrations/roma01"))
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            "tests",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("X402_ROMA01_REQUIRE", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roma01_requests_through_buyer_and_seller_validate_and_execute_and_each_pays_once() {
    let Some(py) = python() else { return };
    // The built-in advisor (rules only) as the seller's strategy endpoint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advisor_url = format!("http://{}", listener.local_addr().unwrap());
    let advisor_task = tokio::spawn(advisor::serve(
        listener,
        Arc::new(Advisor::rules_only(ADVISOR_SECRET).unwrap()),
    ));
    let w = World::start().await;
    let mut node = w.seller_node();
    node.upstream = advisor_url.clone();
    node.upstream_secret_env = Some(SECRET_ENV.into());
    let seller = run(
        launch(w.dir.path(), "roma-seller")
            .env(SETTLER_ENV, w.net.settler_key_hex())
            .env(SECRET_ENV, ADVISOR_SECRET),
        &node.yaml(),
        node.listen,
    )
    .await;
    let seller_url = format!("{}/x402", seller.url);
    let price_cap = PriceSpec::Units(50_000);
    let (paying, paying_key, paying_ledger) = buyer(
        &w,
        "buyer-paid",
        vec![SellerEntry::new(
            "roma-seller",
            &seller_url,
            w.net.pay_to,
            price_cap.clone(),
        )],
        Fallback::mode("error"),
    )
    .await;
    let dead = format!("http://127.0.0.1:{}/x402", free_port());
    let (falling_back, fallback_key, _) = buyer(
        &w,
        "buyer-fallback",
        vec![SellerEntry::new("down", &dead, w.net.pay_to, price_cap)],
        Fallback {
            url: Some(format!("{advisor_url}/x402")),
            secret_env: Some(SECRET_ENV.into()),
            ..Fallback::mode("local")
        },
    )
    .await;

    // roma-01's RemoteStrategyClient: its own buyer request, paid at the seller over x402 v1.
    let direct = w.buyer(FUNDED).await;
    let body = std::fs::read(root().join("tests/fixtures/roma01_buyer_request.json")).unwrap();
    let paid = client::pay(
        &w.http,
        &seller_url,
        Bytes::from(body),
        &direct,
        true,
        Some(U256::from(PRICE)),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(paid.status, 200, "{}", seller.logs());
    let direct_answer = w.dir.path().join("direct-answer.json");
    std::fs::write(&direct_answer, &paid.body).unwrap();
    let v: Value = serde_json::from_slice(&paid.body).unwrap();
    assert_eq!(v["metadata"]["telemetry"]["agentId"], "aster-deepseek-01");

    let report = w.dir.path().join("paid-txs.txt");
    let envs = [
        ("X402_ROMA01_OUTBOUND", format!("{}/x402", paying.url)),
        (
            "X402_ROMA01_FALLBACK_OUTBOUND",
            format!("{}/x402", falling_back.url),
        ),
        (
            "X402_ROMA01_DIRECT_ANSWER",
            direct_answer.display().to_string(),
        ),
        ("X402_ROMA01_REPORT", report.display().to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || pytest(&py, &envs))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}\nseller:\n{}\nbuyer:\n{}",
        String::from_utf8_lossy(&out.stderr),
        seller.logs(),
        paying.logs()
    );
    assert!(
        stdout.contains("passed") && !stdout.contains("skipped"),
        "{stdout}"
    );

    // The money: the two calls pytest paid through the buyer, plus the direct one; nothing for
    // the fallback.
    let txs: Vec<String> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(txs.len(), 2, "{txs:?}");
    let money = w.money();
    let transfers = money.assert_transfers(3).await;
    let on_chain: Vec<String> = transfers.iter().map(|t| format!("{:#x}", t.tx)).collect();
    assert!(
        txs.iter().all(|t| on_chain.contains(t)),
        "{txs:?} {on_chain:?}"
    );
    let entries = ledger::read(&paying_ledger).unwrap();
    let ledger_txs: Vec<String> = entries.iter().filter_map(|e| e.tx.clone()).collect();
    assert_eq!(ledger_txs, txs, "the buyer's ledger is the chain's");
    money
        .assert_holds(paying_key.address(), FUNDED - 2 * PRICE)
        .await;
    money.assert_holds(direct.address(), FUNDED - PRICE).await;
    money.assert_holds(fallback_key.address(), FUNDED).await;
    advisor_task.abort();
}
