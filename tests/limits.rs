//! The paywall's rate limits with real processes: a burst of unpaid calls from one address is
//! refused with 429 and `Retry-After` while another address (and a paid call) is served, and a
//! payer flooding signed payloads from an unfunded key is stopped before the chain is read
//! (the RPC calls are counted by a TCP proxy in front of anvil). The facilitator service's
//! limits and bearer keys are in `tests/facilitator.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_signer_local::PrivateKeySigner;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x402_sidecar::buyer::client;

/// A client whose requests come from `ip` (any 127.0.0.0/8 address is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn unpaid(http: &reqwest::Client, url: &str) -> (u16, Option<String>, serde_json::Value) {
    let (status, headers, body) = post_json(http, url, seed_body(), &[]).await;
    let retry = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unpaid_calls_from_one_address_is_limited_while_others_are_served() {
    let admin = free_port();
    let w = World::start_with(|n| {
        n.per_ip = Some((20, 60));
        n.admin = Some(admin);
    })
    .await;
    let url = w.paid_url();
    let a = client_from("127.0.0.1");
    for i in 0..20 {
        let (status, _, body) = unpaid(&a, &url).await;
        assert_eq!(status, 402, "call {i}: {body}");
    }
    let (status, retry, body) = unpaid(&a, &url).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("20 per 60 s"));
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");

    // Another address still gets its 402, and a paid call from the limited one is served.
    let b = client_from("127.0.0.2");
    let (status, _, body) = unpaid(&b, &url).await;
    assert_eq!(status, 402, "{body}");
    let buyer = w.buyer(PRICE).await;
    let (name, header) = signed_payment(&b, &url, &buyer).await;
    let (status, _, body) = post_json(&a, &url, seed_body(), &[(name, &header)]).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(buyer.address(), PRICE).await;

    let metrics = get_text(&w.http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        metrics.contains("x402_rate_limited_total{limit=\"ip\"} 1"),
        "{metrics}"
    );
}

/// A TCP proxy in front of the devnet's RPC that counts the JSON-RPC requests through it.
struct CountingProxy {
    url: String,
    posts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(target: &str) -> CountingProxy {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let posts = Arc::new(AtomicUsize::new(0));
        let counted = posts.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut ir, mut iw) = inbound.into_split();
                    let (mut or, mut ow) = outbound.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = ir.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let posts = buf[..n].windows(5).filter(|w| w == b"POST ").count();
                            counted.fetch_add(posts, Ordering::SeqCst);
                            if ow.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut or, &mut iw).await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        CountingProxy { url, posts, task }
    }

    fn calls(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_flooding_signed_payloads_is_limited_before_any_chain_read() {
    let net = devnet().await;
    let rpc = CountingProxy::start(&net.rpc_url).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut node = seller_node(free_port(), &upstream.url, &net);
    node.settlement.rpc_url = rpc.url.clone();
    node.per_payer = Some((5, 60));
    node.admin = Some(admin);
    let seller = start_sidecar(
        dir.path(),
        "seller",
        node.listen,
        &node.yaml(),
        &net.settler_key_hex(),
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/x402", seller.url);
    let (status, headers, body) = post_json(&http, &url, seed_body(), &[]).await;
    assert_eq!(status, 402);
    let quote = client::parse_challenge(
        headers
            .get("payment-required")
            .and_then(|h| h.to_str().ok()),
        body.to_string().as_bytes(),
        false,
    )
    .unwrap();
    let unfunded = PrivateKeySigner::random();
    let sign = || {
        let (name, value, _) = client::payment_for(&unfunded, &quote).unwrap();
        (name, value)
    };

    // Within the limit: each payment is refused after the chain's balance read.
    let before = rpc.calls();
    for i in 0..5 {
        let (name, value) = sign();
        let (status, _, body) = post_json(&http, &url, seed_body(), &[(name, &value)]).await;
        assert_eq!(status, 402, "payment {i}: {body}");
        assert_ne!(body["error"], "rate_limited_payer", "payment {i}: {body}");
    }
    let within = rpc.calls();
    assert!(
        within > before,
        "the refused payments were checked on chain"
    );

    // Over it: 429 before any claim or chain read.
    for i in 0..50 {
        let (name, value) = sign();
        let (status, headers, body) = post_json(&http, &url, seed_body(), &[(name, &value)]).await;
        assert_eq!(status, 429, "payment {}: {body}", i + 5);
        assert_eq!(body["error"], "rate_limited_payer");
        assert!(headers.get("retry-after").is_some());
    }
    assert_eq!(
        rpc.calls(),
        within,
        "limited payments reached the chain's RPC"
    );
    let metrics = get_text(&http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        metrics.contains("x402_rate_limited_total{limit=\"payer\"} 50"),
        "{metrics}"
    );
    Money::new(&net, PRICE)
        .assert_not_charged(unfunded.address(), 0)
        .await;
}

/// Many unfunded keys from one address: each payment is a new payer, so the per-payer limit
/// never trips; the address's payments refused on chain do. Past `refused_per_ip`, its
/// payments get 429 before any chain read, and another address's payment is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_signed_by_many_unfunded_keys_are_limited_per_address_before_chain_reads() {
    let net = devnet().await;
    let rpc = CountingProxy::start(&net.rpc_url).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = seller_node(free_port(), &upstream.url, &net);
    node.settlement.rpc_url = rpc.url.clone();
    node.refused_per_ip = Some((4, 60));
    let seller = start_sidecar(
        dir.path(),
        "seller",
        node.listen,
        &node.yaml(),
        &net.settler_key_hex(),
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/x402", seller.url);
    let (_, headers, body) = post_json(&http, &url, seed_body(), &[]).await;
    let quote = client::parse_challenge(
        headers
            .get("payment-required")
            .and_then(|h| h.to_str().ok()),
        body.to_string().as_bytes(),
        false,
    )
    .unwrap();
    let fresh = || {
        let key = PrivateKeySigner::random();
        let (name, value, _) = client::payment_for(&key, &quote).unwrap();
        (key.address(), name, value)
    };
    let mut payers = Vec::new();
    for i in 0..4 {
        let (who, name, value) = fresh();
        payers.push(who);
        let (status, _, body) = post_json(&http, &url, seed_body(), &[(name, &value)]).await;
        assert_eq!(status, 402, "payment {i}: {body}");
    }
    let within = rpc.calls();
    for i in 0..20 {
        let (who, name, value) = fresh();
        payers.push(who);
        let (status, headers, body) = post_json(&http, &url, seed_body(), &[(name, &value)]).await;
        assert_eq!(status, 429, "payment {}: {body}", i + 4);
        assert_eq!(body["error"], "rate_limited_refused", "{body}");
        assert!(headers.get("retry-after").is_some());
    }
    assert_eq!(
        rpc.calls(),
        within,
        "limited payments reached the chain's RPC"
    );
    for who in payers {
        Money::new(&net, PRICE).assert_not_charged(who, 0).await;
    }
}
