//! Test harness: a real anvil devnet with the project's token, a scriptable upstream, and real
//! sidecar processes (the built binary) in front of it.

#![allow(dead_code)]

pub mod otlp;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use x402_sidecar::devkit::devnet::{self, Devnet};
use x402_sidecar::devkit::standin::{self, Request, Response};

pub const PRICE: u64 = 10_000; // $0.01
pub const SECRET: &str = "test-challenge-secret-0123456789";

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

/// A sidecar process.
pub struct Sidecar {
    child: Child,
    pub url: String,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    pub fn from_child(child: Child, port: u16, log: PathBuf, config: PathBuf) -> Sidecar {
        Sidecar {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            config,
        }
    }

    /// Wait until the sidecar accepts connections.
    pub async fn wait_up(&self) {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("sidecar did not start; log:\n{}", self.logs());
    }

    /// The sidecar's audit journal directory (it runs in `<dir>/<name>`).
    pub fn audit_dir(&self) -> PathBuf {
        self.config.with_extension("").join("x402-audit")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (pingora's graceful shutdown) and wait for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) only sends a signal, here to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "sidecar did not stop within 30 s of SIGTERM; log:\n{}",
            self.logs()
        );
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_x402-sidecar")
}

/// The configuration of a seller on the devnet.
pub fn seller_config(
    port: u16,
    upstream: &str,
    net: &Devnet,
    store: &str,
    upstream_timeout_ms: u64,
) -> String {
    seller_config_with(port, upstream, net, store, upstream_timeout_ms, 10_000)
}

/// The same, with the settlement receipt timeout chosen.
pub fn seller_config_with(
    port: u16,
    upstream: &str,
    net: &Devnet,
    store: &str,
    upstream_timeout_ms: u64,
    receipt_timeout_ms: u64,
) -> String {
    format!(
        r#"inbound:
  enabled: true
  listen: 127.0.0.1:{port}
  upstream: {{ url: "{upstream}", timeout_ms: {upstream_timeout_ms} }}
  challenge_secret: {SECRET}
  routes:
    - path: /x402
      description: Trading strategy advice
      price: {PRICE}
      accepts:
        - network: {network}
          asset: "{usdc}"
          pay_to: "{pay_to}"
          eip712: {{ name: USDC, version: "2" }}
          max_timeout_seconds: 120
    - path: /free
      method: GET
facilitators:
  - network: {network}
    rpc_url: {rpc}
    settler: {{ key_env: X402_TEST_SETTLER_KEY }}
    receipt_timeout_ms: {receipt_timeout_ms}
store: "{store}"
server: {{ threads: 2, grace_period_seconds: 1 }}
"#,
        network = devnet::NETWORK,
        usdc = devnet::USDC,
        pay_to = net.pay_to,
        rpc = net.rpc_url,
    )
}

/// Start a sidecar with `config_text`; waits until it accepts connections.
pub async fn start_sidecar(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    config_text: &str,
    settler_key: &str,
) -> Sidecar {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, config_text).unwrap();
    let log = dir.join(format!("{name}.log"));
    // Each sidecar runs in its own directory: its audit journal lands there.
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let child = Command::new(bin())
        .current_dir(&home)
        .args(["run", "--config"])
        .arg(&config)
        .env("X402_TEST_SETTLER_KEY", settler_key)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sc = Sidecar::from_child(child, port, log, config);
    sc.wait_up().await;
    sc
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
        Self::start_with("memory", 4_000).await
    }

    pub async fn start_with(store: &str, upstream_timeout_ms: u64) -> World {
        Self::start_opts(store, upstream_timeout_ms, 10_000).await
    }

    pub async fn start_opts(
        store: &str,
        upstream_timeout_ms: u64,
        receipt_timeout_ms: u64,
    ) -> World {
        Self::start_full(store, upstream_timeout_ms, receipt_timeout_ms, "").await
    }

    /// A world whose seller's config ends with `extra` (more top-level sections).
    pub async fn start_extra(extra: &str) -> World {
        Self::start_full("memory", 4_000, 10_000, extra).await
    }

    async fn start_full(
        store: &str,
        upstream_timeout_ms: u64,
        receipt_timeout_ms: u64,
        extra: &str,
    ) -> World {
        x402_sidecar::init_tls();
        let net = Devnet::start()
            .await
            .expect("devnet (run `make devnet` first)");
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = seller_config_with(
            port,
            &upstream.url,
            &net,
            store,
            upstream_timeout_ms,
            receipt_timeout_ms,
        ) + extra;
        let seller = start_sidecar(dir.path(), "seller", port, &cfg, &net.settler_key_hex()).await;
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

    pub fn paid_url(&self) -> String {
        format!("{}/x402", self.seller.url)
    }

    pub async fn buyer(&self, usdc: u64) -> PrivateKeySigner {
        self.net.new_buyer(U256::from(usdc)).await.unwrap()
    }

    pub async fn balance(&self, who: Address) -> U256 {
        self.net.balance(who).await.unwrap()
    }

    /// Transfers into the seller's account so far.
    pub async fn seller_transfers(&self) -> usize {
        self.net.transfers_to(self.net.pay_to).await.unwrap().len()
    }
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
    let r = http
        .post(url)
        .header("Content-Type", "application/json")
        .body(seed_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 402);
    let h = r.headers()["payment-required"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.bytes().await.unwrap();
    let offer = x402_sidecar::buyer::client::parse_challenge(Some(&h), &body, false).unwrap();
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
