//! Reload without restart (`SIGHUP`): a new price changes the next 402 on a connection that
//! stays open, and is what the next paid call pays on chain; an invalid file, or a change only a
//! restart can make, is refused with its reason and the running configuration kept. A real
//! seller process, a real anvil chain.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 keep-alive connection to the seller.
struct Conn(TcpStream);

impl Conn {
    async fn open(port: u16) -> Conn {
        Conn(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
    }

    /// POST the seed request without a payment on this connection: the 402's JSON body.
    async fn ask(&mut self) -> Value {
        let body = seed_body();
        let req = format!(
            "POST /x402 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            assert!(n > 0, "the connection was closed");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = &text[..end];
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap();
                if buf.len() >= end + 4 + len {
                    assert!(head.starts_with("HTTP/1.1 402"), "{head}");
                    return serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                }
            }
        }
    }
}

fn amount(body: &Value) -> String {
    body["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .to_string()
}

fn hup(s: &x402_sidecar::devkit::spawn::Sidecar) {
    let pid = i32::try_from(s.pid()).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// Wait until the log holds `needle` (a reload is applied by a background task).
async fn logged(s: &x402_sidecar::devkit::spawn::Sidecar, needle: &str) {
    logged_times(s, needle, 1).await;
}

/// Wait until the log holds `needle` `n` times.
async fn logged_times(s: &x402_sidecar::devkit::spawn::Sidecar, needle: &str, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while s.logs().matches(needle).count() < n {
        assert!(Instant::now() < until, "no `{needle}` in:\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_price_changes_the_next_402_on_the_same_connection() {
    let mut node_yaml = String::new();
    let w = World::start_with(|n| node_yaml = n.yaml()).await;
    let config = w.seller.config.clone().unwrap();
    let mut conn = Conn::open(w.seller.port).await;
    assert_eq!(amount(&conn.ask().await), "10000");

    // A new price, then SIGHUP: the next 402 on the same open connection quotes it.
    let dearer = node_yaml.replacen("price: 10000", "price: 25000", 1);
    assert_ne!(dearer, node_yaml, "{node_yaml}");
    std::fs::write(&config, &dearer).unwrap();
    hup(&w.seller);
    logged(&w.seller, "configuration reloaded").await;
    assert_eq!(amount(&conn.ask().await), "25000", "{}", w.seller.logs());

    // The next paid call pays the new price on chain.
    let buyer = w.buyer(100_000).await;
    let (name, value) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    let (status, _, body) = post_json(
        &w.http,
        &w.paid_url(),
        seed_body(),
        &[(name, value.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    x402_sidecar::devkit::world::Money::new(&w.net, 25_000)
        .assert_paid_once(buyer.address(), 100_000)
        .await;

    // An invalid file: refused with its reason, the running price kept.
    std::fs::write(&config, dearer.replacen("price: 25000", "price: 0.5", 1)).unwrap();
    hup(&w.seller);
    logged(&w.seller, "configuration reload refused").await;
    assert!(
        w.seller
            .logs()
            .contains("a bare decimal number is not a price"),
        "{}",
        w.seller.logs()
    );
    assert_eq!(amount(&conn.ask().await), "25000");

    // A change only a restart can make: refused, nothing of the file applied.
    let moved = dearer.replacen("price: 25000", "price: 30000", 1).replacen(
        &format!(":{}", w.seller.port),
        &format!(":{}", free_port()),
        1,
    );
    std::fs::write(&config, moved).unwrap();
    hup(&w.seller);
    let until = Instant::now() + Duration::from_secs(10);
    while !w.seller.logs().contains("inbound.listen changed") {
        assert!(Instant::now() < until, "{}", w.seller.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        amount(&conn.ask().await),
        "25000",
        "the running configuration is kept"
    );
}

/// The buyer reloads too: a daily budget too small for the seller's price refuses the call
/// before anything is signed; raised by `SIGHUP`, the next call pays (once, on chain); a price
/// cap lowered below the seller's price refuses the call after it, and nothing more is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_on_the_buyer_changes_its_budget_and_its_price_cap() {
    use x402_sidecar::x402::money::PriceSpec;
    const FUNDED: u64 = 5_000_000;
    let w = World::start().await;
    let (mut node, key, l) = w
        .buyer_node(FUNDED, PriceSpec::Units(5_000), PriceSpec::Units(50_000))
        .await;
    let ledger = node.ledger.clone();
    let b = run(l, &node.yaml(), node.listen).await;
    let config = b.config.clone().unwrap();
    let url = format!("{}/x402", b.url);
    let outcome = |body: &Value| {
        body["attempts"][0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // A budget of 5,000 units for a 10,000-unit call: refused, nothing signed.
    let (status, _, body) = post_json(&w.http, &url, seed_body(), &[]).await;
    assert_eq!(
        (status, outcome(&body).as_str()),
        (502, "budget_exhausted"),
        "{body}"
    );
    w.money().assert_not_charged(key.address(), FUNDED).await;

    // Raised by SIGHUP: the next call pays, once.
    node.daily = PriceSpec::Units(100_000);
    std::fs::write(&config, node.yaml()).unwrap();
    hup(&b);
    logged(&b, "configuration reloaded").await;
    let (status, _, body) = post_json(&w.http, &url, seed_body(), &[]).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(key.address(), FUNDED).await;

    // The seller's price cap lowered below its price: refused before signing.
    node.sellers[0].max_price = PriceSpec::Units(5_000);
    std::fs::write(&config, node.yaml()).unwrap();
    hup(&b);
    logged_times(&b, "configuration reloaded", 2).await;
    let (status, _, body) = post_json(&w.http, &url, seed_body(), &[]).await;
    assert_eq!(
        (status, outcome(&body).as_str()),
        (502, "price_above_cap"),
        "{body}"
    );
    w.money().assert_paid_once(key.address(), FUNDED).await;
    let finals =
        x402_sidecar::buyer::ledger::finals(&x402_sidecar::buyer::ledger::read(&ledger).unwrap());
    assert_eq!(
        finals.len(),
        1,
        "one payment in the ledger, as on chain: {finals:?}"
    );
}
