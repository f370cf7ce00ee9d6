//! Test harness: a real anvil devnet with the project's token, a scriptable upstream, and real
//! sidecar processes (the built binary) in front of it — the processes, the sidecars' YAML and
//! the money checks are the dev kit's (`x402_sidecar::devkit`).

#![allow(dead_code)]

pub mod otlp;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use reqwest::header::HeaderMap;
use serde_json::Value;
pub use x402_sidecar::devkit::devnet::Devnet;
pub use x402_sidecar::devkit::nodes::{SellerNode, Server};
use x402_sidecar::devkit::spawn;
pub use x402_sidecar::devkit::spawn::{Launch, Sidecar};
use x402_sidecar::devkit::standin::{self, Request, Response};
pub use x402_sidecar::devkit::world::Money;

pub const PRICE: u64 = 10_000; // $0.01
pub const SECRET: &str = "test-challenge-secret-0123456789";
/// The Redis the tests share.
pub const REDIS: &str = "redis://127.0.0.1:6379/0";

/// How the upstream behaves for the next calls.
#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    Slow(Duration),
    Status(u16),
    Truncated,
    NotJson,
    /// Answer normally after `Duration`, running `hook` first (e.g. drain the payer).
    SlowThen(Duration),
    /// A valid strategy answer of 2 MB.
    Huge,
    /// 200 with this body.
    Answer(String),
    /// A normal answer whose `metadata.modelCallId` is this many characters long (its journal
    /// records are larger than a page).
    LongCallId(usize),
}

/// A well-formed strategy answer of about `bytes` bytes.
pub fn huge_answer(bytes: usize) -> String {
    format!(
        r#"{{"strategy":{{"summary":"{}","steps":[],"riskNotes":[]}}}}"#,
        "x".repeat(bytes)
    )
}

/// The upstream strategy endpoint, counting calls.
pub struct Upstream {
    pub url: String,
    pub calls: Arc<AtomicUsize>,
    pub mode: Arc<Mutex<Mode>>,
    pub last: Arc<Mutex<Option<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let last = Arc::new(Mutex::new(None));
        let (c, m, l) = (calls.clone(), mode.clone(), last.clone());
        let handler: standin::Handler = Arc::new(move |req: Request| {
            c.fetch_add(1, Ordering::SeqCst);
            let mode = m.lock().unwrap().clone();
            *l.lock().unwrap() = Some(req.clone());
            Box::pin(async move {
                let ok = standin::standin_answer(&req);
                match mode {
                    Mode::Normal => ok,
                    Mode::Slow(d) | Mode::SlowThen(d) => Response::After(d, Box::new(ok)),
                    Mode::Status(s) => Response::Body(s, r#"{"error":"boom"}"#.into()),
                    Mode::Truncated => Response::Raw(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"strategy\":{\"summary\":\"cut".to_vec(),
                    ),
                    Mode::NotJson => Response::Body(200, "<html>not json</html>".into()),
                    Mode::Huge => Response::Body(200, huge_answer(2 << 20)),
                    Mode::Answer(body) => Response::Body(200, body),
                    Mode::LongCallId(n) => match ok {
                        Response::Body(status, text) => {
                            let mut v: Value = serde_json::from_str(&text).unwrap();
                            v["metadata"]["modelCallId"] = Value::from("c".repeat(n));
                            Response::Body(status, v.to_string())
                        }
                        other => other,
                    },
                }
            })
        });
        let task = tokio::spawn(standin::serve(listener, handler));
        Upstream {
            url,
            calls,
            mode,
            last,
            task,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_x402-sidecar")
}

pub fn free_port() -> u16 {
    spawn::free_port().unwrap()
}

/// The devnet (and the TLS provider every HTTP client needs).
pub async fn devnet() -> Devnet {
    x402_sidecar::init_tls();
    Devnet::start()
        .await
        .expect("devnet (run `make devnet` first)")
}

/// A process of the built binary kept in `dir` as `name`, logging JSON at `info`.
pub fn launch(dir: &Path, name: &str) -> Launch {
    Launch::new(bin(), dir, name).env("RUST_LOG", "info")
}

/// Start `launch` on `config` and wait until `port` accepts connections (panics with the log).
pub async fn run(launch: Launch, config: &str, port: u16) -> Sidecar {
    launch
        .run(config, port)
        .await
        .unwrap_or_else(|e| panic!("sidecar did not start: {e}"))
}

/// Start a sidecar on `config` with the settler key in `X402_TEST_SETTLER_KEY`.
pub async fn start_sidecar(
    dir: &Path,
    name: &str,
    port: u16,
    config: &str,
    settler_key: &str,
) -> Sidecar {
    run(
        launch(dir, name).env(SETTLER_ENV, settler_key),
        config,
        port,
    )
    .await
}

/// SIGTERM and wait up to 30 s for the sidecar to exit (panics with the log).
pub async fn terminate(s: &mut Sidecar) -> std::process::ExitStatus {
    match s.terminate(Duration::from_secs(30)).await {
        Ok(status) => status,
        Err(e) => panic!("{e}; log:\n{}", s.logs()),
    }
}

/// Where the test sellers find their settler key.
pub const SETTLER_ENV: &str = "X402_TEST_SETTLER_KEY";

/// The tests' seller on the devnet: the dev kit's seller node with the test challenge secret,
/// 120 s payment windows, a free route `GET /free`, a 10 s receipt timeout and a small server.
pub fn seller_node(port: u16, upstream: &str, net: &Devnet) -> SellerNode {
    let mut node = SellerNode::new(port, upstream, net, SETTLER_ENV);
    node.challenge_secret = Some(SECRET.into());
    node.max_timeout_seconds = Some(120);
    node.free_route = true;
    node.settlement.receipt_timeout_ms = Some(10_000);
    node.server = Some(Server::small());
    node
}

/// Everything one scenario needs.
pub struct World {
    pub net: Devnet,
    pub upstream: Upstream,
    pub seller: Sidecar,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn start() -> World {
        Self::start_with(|_| {}).await
    }

    /// A world whose seller is the tests' seller node edited by `edit` first.
    pub async fn start_with(edit: impl FnOnce(&mut SellerNode)) -> World {
        let net = devnet().await;
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut node = seller_node(free_port(), &upstream.url, &net);
        edit(&mut node);
        let seller = start_sidecar(
            dir.path(),
            "seller",
            node.listen,
            &node.yaml(),
            &net.settler_key_hex(),
        )
        .await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        World {
            net,
            upstream,
            seller,
            http,
            dir,
        }
    }

    /// Another seller sidecar in this world's directory, with the devnet's settler key.
    pub async fn start_seller(&self, name: &str, node: &SellerNode) -> Sidecar {
        let key = self.net.settler_key_hex();
        start_sidecar(self.dir.path(), name, node.listen, &node.yaml(), &key).await
    }

    /// The tests' seller node on a free port in front of this world's upstream.
    pub fn seller_node(&self) -> SellerNode {
        seller_node(free_port(), &self.upstream.url, &self.net)
    }

    pub fn paid_url(&self) -> String {
        format!("{}/x402", self.seller.url)
    }

    pub async fn buyer(&self, usdc: u64) -> PrivateKeySigner {
        self.net.new_buyer(U256::from(usdc)).await.unwrap()
    }

    /// A buyer node paying this world's seller (`node-a`, capped at `max_price`) from a wallet
    /// funded with `usdc`, its day's budget `daily`, its ledger in the world's directory; and
    /// the launch that gives it the wallet's key. Adjust the node, then
    /// `run(launch, &node.yaml(), node.listen)`.
    #[allow(dead_code)]
    pub async fn buyer_node(
        &self,
        usdc: u64,
        daily: x402_sidecar::x402::money::PriceSpec,
        max_price: x402_sidecar::x402::money::PriceSpec,
    ) -> (
        x402_sidecar::devkit::nodes::BuyerNode,
        PrivateKeySigner,
        Launch,
    ) {
        use x402_sidecar::devkit::nodes::{BuyerNode, SellerEntry};
        const KEY_ENV: &str = "X402_TEST_BUYER_KEY";
        let key = self.buyer(usdc).await;
        let ledger = self.dir.path().join("ledger.jsonl");
        let mut node = BuyerNode::new(free_port(), &self.net, KEY_ENV, daily, &ledger);
        node.sellers = vec![SellerEntry::new(
            "node-a",
            &self.paid_url(),
            self.net.pay_to,
            max_price,
        )];
        let l = launch(self.dir.path(), "buyer").env(
            KEY_ENV,
            format!("0x{}", x402_sidecar::util::hex(&key.to_bytes()[..])),
        );
        (node, key, l)
    }

    pub async fn balance(&self, who: Address) -> U256 {
        self.net.balance(who).await.unwrap()
    }

    /// Transfers into the seller's account so far.
    pub async fn seller_transfers(&self) -> usize {
        self.net.transfers_to(self.net.pay_to).await.unwrap().len()
    }

    /// The money checks of this world: paid calls of `PRICE` to the devnet's seller.
    pub fn money(&self) -> Money<'_> {
        Money::new(&self.net, PRICE)
    }
}

/// POST `body` as JSON to `url` with more headers: the status, the headers and the JSON body
/// (`Null` if it is none).
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Value) {
    let mut req = http
        .post(url)
        .header("Content-Type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// GET `url`; the body as text.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

pub fn seed_body() -> &'static str {
    x402_sidecar::advisor::SEED_EXAMPLE
}

/// Ask `url` for its 402 with the seed request and sign it with `buyer`: the header to send.
pub async fn signed_payment(
    http: &reqwest::Client,
    url: &str,
    buyer: &PrivateKeySigner,
) -> (&'static str, String) {
    let (status, headers, body) = post_json(http, url, seed_body(), &[]).await;
    assert_eq!(status, 402);
    let h = headers["payment-required"].to_str().unwrap();
    let offer =
        x402_sidecar::buyer::client::parse_challenge(Some(h), body.to_string().as_bytes(), false)
            .unwrap();
    let (name, value, _) = x402_sidecar::buyer::client::payment_for(buyer, &offer).unwrap();
    (name, value)
}

/// `check-config` on `text` with `env` set (and `unset` removed), which must fail; its stderr.
pub fn check_config_fails(text: &str, env: &[(&str, &str)], unset: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check-config", "--config"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "check-config accepted:\n{text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
