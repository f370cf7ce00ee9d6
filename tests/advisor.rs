//! The built-in advisor behind a real sidecar on the devnet: a paid call of the seed example
//! returns rule-engine advice and settles on chain; a sidecar without the shared secret gets
//! nothing and charges nothing; the `advisor` command refuses to start without a secret.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;
use common::*;
use serde_json::Value;
use x402_sidecar::advisor::server::{self as advisor, Advisor};
use x402_sidecar::advisor::{SEED_EXAMPLE, contract, engine};
use x402_sidecar::buyer::client;
use x402_sidecar::devkit::devnet::Devnet;

const ADVISOR_SECRET: &str = "advisor-test-secret-0123456789";

struct Setup {
    net: Devnet,
    seller: Sidecar,
    advisor_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.advisor_task.abort();
    }
}

/// Devnet, the advisor (rules only) on loopback, and a sidecar in front of it that sends the
/// secret when `with_secret`.
async fn setup(with_secret: bool) -> Setup {
    let net = devnet().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advisor_url = format!("http://{}", listener.local_addr().unwrap());
    let advisor_task = tokio::spawn(advisor::serve(
        listener,
        Arc::new(Advisor::rules_only(ADVISOR_SECRET).unwrap()),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut node = seller_node(free_port(), &advisor_url, &net);
    if with_secret {
        node.upstream_secret_env = Some("X402_TEST_ADVISOR_SECRET".into());
    }
    // Its own directory: the audit journal (relative audit.dir) lands there.
    let seller = run(
        launch(dir.path(), "seller")
            .env(SETTLER_ENV, net.settler_key_hex())
            .env("X402_TEST_ADVISOR_SECRET", ADVISOR_SECRET),
        &node.yaml(),
        node.listen,
    )
    .await;
    Setup {
        net,
        seller,
        advisor_task,
        _dir: dir,
    }
}

impl Setup {
    /// A buyer holding 1 000 000, and one whole paid call of the seed example by it (at most
    /// `PRICE`).
    async fn pay_seed(&self, http: &reqwest::Client) -> (PrivateKeySigner, client::Paid) {
        let buyer = self.net.new_buyer(U256::from(1_000_000u64)).await.unwrap();
        let url = format!("{}/x402", self.seller.url);
        let body = Bytes::from_static(SEED_EXAMPLE.as_bytes());
        let cap = Some(U256::from(PRICE));
        let paid = client::pay(http, &url, body, &buyer, false, cap, |_| {})
            .await
            .unwrap();
        (buyer, paid)
    }

    fn money(&self) -> Money<'_> {
        Money::new(&self.net, PRICE)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_seed_request_gets_checkable_rule_engine_advice_and_settles() {
    let s = setup(true).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (buyer, paid) = s.pay_seed(&http).await;
    let v: Value = serde_json::from_slice(&paid.body).unwrap();
    assert_eq!(paid.status, 200, "{v}\n{}", s.seller.logs());
    // Exactly the engine's advice for this request, plus what the paywall adds.
    let rules = engine::advise(&contract::parse(SEED_EXAMPLE.as_bytes()).unwrap());
    let strategy = &v["strategy"];
    assert_eq!(
        strategy["actions"],
        serde_json::to_value(&rules.actions).unwrap()
    );
    assert_eq!(strategy["summary"].as_str(), Some(rules.summary.as_str()));
    assert_eq!(strategy["analysis"]["before"]["leverage"], 13.9122);
    assert_eq!(strategy["actions"][0]["action"], "reduce");
    assert_eq!(strategy["actions"][1]["action"], "reduce");
    let m = &v["metadata"];
    assert_eq!(m["model"], "rules-v1");
    assert!(m["modelCallId"].as_str().unwrap().starts_with("mc_"));
    assert!(m["requestId"].as_str().unwrap().starts_with("req_"));
    assert!(m["paymentId"].as_str().unwrap().starts_with("pay_"));
    assert!(v["disclaimer"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(v["payment"]["amount"], "0.01");
    assert_eq!(v["payment"]["amountAtomic"], PRICE.to_string());
    // roma-01's executor format, from the same actions.
    assert_eq!(v["decisions"][0]["action"], "close_long");
    assert_eq!(v["decisions"][0]["symbol"], "ETHUSDT");
    assert_eq!(v["decisions"][0]["close_quantity"], 0.128742);
    // Settled on chain.
    s.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_secret_the_advisor_answers_nothing_and_nobody_pays() {
    let s = setup(false).await;
    let (buyer, paid) = s.pay_seed(&reqwest::Client::new()).await;
    let v: Value = serde_json::from_slice(&paid.body).unwrap_or(Value::Null);
    assert_eq!(paid.status, 502, "{v}");
    assert_eq!(v["error"], "upstream_error");
    s.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
}

/// `advisor --listen 127.0.0.1:0 --secret-env <var>`, with `var` set to `value` or unset.
fn advisor_command(var: &str, value: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(["advisor", "--listen", "127.0.0.1:0", "--secret-env", var]);
    match value {
        Some(v) => cmd.env(var, v),
        None => cmd.env_remove(var),
    };
    cmd.output().unwrap()
}

#[test]
fn the_advisor_command_refuses_to_start_without_its_secret() {
    let out = advisor_command("X402_NO_SUCH_SECRET_VAR", None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("X402_NO_SUCH_SECRET_VAR"), "{err}");
    let out = advisor_command("X402_SHORT_SECRET", Some("short"));
    assert_eq!(out.status.code(), Some(1));
    // A named-but-unset secret stops the sidecar at check time, with the field and the variable.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.yaml");
    std::fs::write(
        &cfg,
        "inbound:\n  enabled: true\n  listen: 127.0.0.1:0\n  upstream: { url: \"http://127.0.0.1:8500\", secret_env: X402_NO_SUCH_SECRET_VAR }\n  routes:\n    - path: /free\n      method: GET\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env_remove("X402_NO_SUCH_SECRET_VAR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("inbound.upstream.secret_env") && err.contains("X402_NO_SUCH_SECRET_VAR"),
        "{err}"
    );
}
