//! Operations: Prometheus metrics move as calls happen; /readyz follows the RPC and Redis; a
//! SIGTERM stops the sidecar cleanly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::copy_bidirectional;
use tokio::sync::watch;
use x402_sidecar::buyer::client;

/// A TCP relay that can be switched off (existing connections cut, new ones refused) and on.
struct Relay {
    pub port: u16,
    on: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let on = Arc::new(AtomicBool::new(true));
        let (cut, rx) = watch::channel(0u64);
        let flag = on.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let (target, mut rx) = (target.clone(), rx.clone());
                rx.borrow_and_update(); // only cuts after this connection began count
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut up) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Relay {
            port,
            on,
            cut,
            task,
        }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            self.cut.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of one sample line, e.g. `x402_settlements_total{outcome="settled"}`.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_challenges_refusals_settlements_and_replays() {
    let w = World::start().await;
    let admin = free_port();
    let node = SellerNode {
        admin: Some(admin),
        ..w.seller_node()
    };
    let s = w.start_seller("observed", &node).await;
    let url = format!("{}/x402", s.url);
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let buyer = w.buyer(1_000_000).await;

    // 1 unpaid call, 1 refused payment (wrong amount), 1 paid call, 1 replay of it.
    let r = w.http.post(&url).body(seed_body()).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let offer = client::parse_challenge(
        r.headers()
            .get("payment-required")
            .and_then(|v| v.to_str().ok()),
        b"",
        false,
    )
    .unwrap();
    let mut cheap = offer.clone();
    cheap.requirement.amount = alloy_primitives::U256::from(1);
    let auth = client::authorization(&buyer, &cheap.requirement, x402_sidecar::util::now_secs());
    let bad = client::v2_header(
        &offer.raw,
        &client::sign(&buyer, &cheap.requirement, auth).unwrap(),
        None,
    );
    let r = w
        .http
        .post(&url)
        .header("PAYMENT-SIGNATURE", bad)
        .body(seed_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let (_, good, _) = client::payment_for(&buyer, &offer).unwrap();
    for _ in 0..2 {
        let r = w
            .http
            .post(&url)
            .header("PAYMENT-SIGNATURE", &good)
            .body(seed_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let (status, m) = get(&metrics_url).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&m, r#"x402_challenges_total{method="POST",path="/x402"}"#),
        2.0,
        "the unpaid call and the refusal each carried a challenge\n{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_payments_total{outcome="refused",reason="invalid_exact_evm_payload_authorization_value_mismatch"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_payments_total{outcome="verified",reason="none"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"x402_settlements_total{outcome="settled"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"x402_replay_rejections_total{kind="replayed"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"x402_phase_seconds_count{phase="settle"}"#),
        1.0,
        "{m}"
    );
    assert!(m.contains("x402_build_info{version="));
    let (status, body) = get(&format!("http://127.0.0.1:{admin}/livez")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"alive":true}"#));
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}

/// A `/readyz` check by name: `(ok, reason)`.
fn check(body: &str, name: &str) -> Option<(bool, String)> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| {
            (
                c["ok"].as_bool().unwrap(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
}

fn field(body: &str, key: &str) -> Option<bool> {
    serde_json::from_str::<Value>(body).unwrap()[key].as_bool()
}

/// `/readyz` is the Kubernetes readiness: a Redis or RPC blip leaves the pod in the Service
/// (it still answers 402s), and says so; `/readyz?settle` is strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_rpc_and_redis_going_away_and_coming_back() {
    let w = World::start().await;
    let redis = Relay::start("127.0.0.1:6379".into()).await;
    let rpc = Relay::start(w.net.rpc_url.trim_start_matches("http://").into()).await;
    let admin = free_port();
    let mut node = w.seller_node();
    node.store = format!("redis://127.0.0.1:{}/0", redis.port);
    node.settlement.rpc_url = format!("http://127.0.0.1:{}", rpc.port);
    node.admin = Some(admin);
    let _s = w.start_seller("probed", &node).await;
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let settle = format!("{ready}?settle");

    let (status, body) = get(&settle).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(check(&body, "store").map(|c| c.0), Some(true));
    assert_eq!(
        check(&body, "listener:inbound").map(|c| c.0),
        Some(true),
        "{body}"
    );
    assert_eq!(check(&body, "preflight").map(|c| c.0), Some(true), "{body}");

    redis.set(false);
    let (status, body) = get(&ready).await;
    assert_eq!(
        status, 200,
        "a Redis blip does not take the pod out: {body}"
    );
    assert_eq!(
        (field(&body, "serve"), field(&body, "settle")),
        (Some(true), Some(false))
    );
    let (ok, why) = check(&body, "store").unwrap();
    assert!(!ok && why.contains("store_unavailable"), "{body}");
    let (status, _) = get(&settle).await;
    assert_eq!(status, 503);
    // Still answering 402s meanwhile.
    let (status, _, _) = post_json(&w.http, &format!("{}/x402", _s.url), seed_body(), &[]).await;
    assert_eq!(status, 402);
    redis.set(true);
    let mut back = (0, String::new());
    for _ in 0..20 {
        back = get(&settle).await;
        if back.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(back.0, 200, "ready again after Redis returns: {}", back.1);

    rpc.set(false);
    let (status, body) = get(&ready).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        check(&body, "rpc:eip155:84532").map(|c| c.0),
        Some(false),
        "{body}"
    );
    let (status, _) = get(&settle).await;
    assert_eq!(status, 503);
    rpc.set(true);
    let (status, body) = get(&settle).await;
    assert_eq!(status, 200, "ready again after the RPC returns: {body}");
    let (status, body) = get(&format!("http://127.0.0.1:{admin}/livez")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"alive":true}"#));
}

/// The seller's node config with one accepted offer edited.
fn with_offer(yaml: &str, edit: impl Fn(&mut serde_yaml::Value)) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    edit(&mut v["inbound"]["routes"][0]["accepts"][0]);
    serde_yaml::to_string(&v).unwrap()
}

/// A configuration the chain contradicts does not start, with the sentence `check-config
/// --online` prints for the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_the_chain_contradicts_does_not_start_and_says_why() {
    let w = World::start().await;
    let base = w.seller_node().yaml();
    let token = x402_sidecar::devkit::devnet::USDC.to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "eip712",
            with_offer(&base, |o| o["eip712"]["name"] = "USD Coin".into()),
            "the configuration says name \"USD Coin\"",
        ),
        (
            "decimals",
            with_offer(&base, |o| o["decimals"] = 18.into()),
            "the token has 6 decimals, the configuration says 18",
        ),
        (
            "pay_to",
            with_offer(&base, |o| o["pay_to"] = token.clone().into()),
            "pay_to is the token contract itself",
        ),
        (
            "chain",
            base.replace("eip155:84532", "eip155:31337"),
            "the chain at the RPC has chain id 84532, the configuration says 31337",
        ),
    ];
    for (name, yaml, sentence) in cases {
        let err = match launch(w.dir.path(), &format!("contradicted-{name}"))
            .env(SETTLER_ENV, w.net.settler_key_hex())
            .run(&yaml, free_port())
            .await
        {
            Ok(s) => panic!("{name}: started anyway:\n{}", s.logs()),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(sentence) && err.contains("does not start"),
            "{name}: {err}"
        );
        let path = w.dir.path().join(format!("contradicted-{name}.yaml"));
        std::fs::write(&path, &yaml).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check-config", "--online", "--config"])
            .arg(&path)
            .env(SETTLER_ENV, w.net.settler_key_hex())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && stdout.contains(sentence),
            "{name}: {stdout}"
        );
    }
}

/// An RPC that does not answer at start does not stop the start: `/readyz` is ready to serve
/// and says the preflight is not made yet; once the RPC answers, the preflight passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_down_at_start_starts_and_readyz_says_the_preflight_waits() {
    let w = World::start().await;
    let rpc = Relay::start(w.net.rpc_url.trim_start_matches("http://").into()).await;
    rpc.set(false);
    let admin = free_port();
    let mut node = w.seller_node();
    node.settlement.rpc_url = format!("http://127.0.0.1:{}", rpc.port);
    node.admin = Some(admin);
    let s = w.start_seller("rpc-down", &node).await;
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let (status, body) = get(&ready).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "settle"), Some(false), "{body}");
    let (ok, why) = check(&body, "preflight").unwrap();
    assert!(!ok && why.contains("not yet made"), "{body}");
    assert!(s.logs().contains("preflight"), "{}", s.logs());
    let (status, _) = get(&format!("{ready}?settle")).await;
    assert_eq!(status, 503);
    rpc.set(true);
    let mut last = String::new();
    for _ in 0..40 {
        let (status, body) = get(&format!("{ready}?settle")).await;
        last = body;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(check(&last, "preflight").map(|c| c.0), Some(true), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_sidecar_cleanly_with_its_journal_on_disk() {
    let mut w = World::start().await;
    let buyer = w.buyer(1_000_000).await;
    let paid = client::pay(
        &w.http,
        &w.paid_url(),
        bytes::Bytes::from_static(seed_body().as_bytes()),
        &buyer,
        false,
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(paid.status, 200);
    // The process returns from pingora's run and flushes the journal before exiting.
    let status = terminate(&mut w.seller).await;
    assert!(status.success(), "{status}; log:\n{}", w.seller.logs());
    let journal = w.seller.audit_dir();
    assert_eq!(x402_sidecar::audit::verify(&journal).unwrap().records, 4);
    let events: Vec<String> = x402_sidecar::audit::read_all(&journal)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        ["payment_verified", "forwarded", "settled", "answered"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sidecar_on_the_same_journal_refuses_to_start() {
    let w = World::start().await;
    // Same working directory, so the same relative audit.dir; another port.
    let path = w.dir.path().join("second.yaml");
    std::fs::write(&path, w.seller_node().yaml()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .current_dir(path.parent().unwrap().join("seller"))
            .args(["run", "--config"])
            .arg(&path)
            .env(
                "X402_TEST_SETTLER_KEY",
                x402_sidecar::evm::keys::DEV_KEYS[2],
            )
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("being written by another process"), "{err}");
    // The first one is undisturbed: a paid call still lands in an intact journal.
    let buyer = w.buyer(1_000_000).await;
    let (name, value) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    let r = w
        .http
        .post(w.paid_url())
        .header("Content-Type", "application/json")
        .header(name, value)
        .body(seed_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    assert!(x402_sidecar::audit::verify(&w.seller.audit_dir()).is_ok());
}
