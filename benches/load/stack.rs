//! What the run drives, started with the dev kit: the devnet and its funded buyers, the stand-in
//! upstream, a seller and a buyer sidecar (their YAML from `devkit::nodes`, their processes
//! from `devkit::spawn`), and an OTLP sink for the ablation that exports spans.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_signer_local::PrivateKeySigner;
use x402_sidecar::devkit::devnet::{self, Devnet};
use x402_sidecar::devkit::nodes::{
    Breaker, BuyerNode, FacilitatorNode, Retry, SellerEntry, SellerNode, Server,
};
use x402_sidecar::devkit::spawn::{self, Launch, Sidecar};
use x402_sidecar::devkit::standin;
use x402_sidecar::util;
use x402_sidecar::x402::money::PriceSpec;

use crate::flows::fund_buyers;
use crate::{Knobs, PRICE, Res, SIDECAR, say};

const SETTLER_ENV: &str = "X402_LOAD_SETTLER_KEY";
const BUYER_ENV: &str = "X402_LOAD_BUYER_KEY";

pub(crate) fn free_port() -> Res<u16> {
    spawn::free_port().map_err(|e| format!("no free port: {e}"))
}

/// A process of the bench's sidecar binary kept in `dir`, given 10 s to listen.
fn launch(dir: &Path, name: &str) -> Launch {
    Launch::new(SIDECAR, dir, name).wait(Duration::from_secs(10))
}

/// The processes and the chain of the run. Dropped in this order: the buyer, the seller, the
/// upstream, then the devnet.
pub(crate) struct Stack {
    pub(crate) buyer: Sidecar,
    pub(crate) seller: Sidecar,
    /// The seller's admin port (metrics).
    pub(crate) seller_admin: u16,
    pub(crate) upstream: Sidecar,
    /// Funded buyers signing the paid calls (the outbound wallet is not among them).
    pub(crate) buyers: Vec<PrivateKeySigner>,
    pub(crate) net: Devnet,
}

impl Stack {
    /// The devnet, `k.buyers` funded buyers and the outbound wallet, the stand-in upstream, the
    /// seller and the buyer node paying it.
    pub(crate) async fn start(k: &Knobs, dir: &Path) -> Res<Stack> {
        say("starting the devnet (anvil + the project's USDC)");
        let net = Devnet::start().await.map_err(|e| match e {
            devnet::DevnetError::NoAnvil => "anvil is missing: run `make devnet` first (it installs the pinned anvil into devnet/node_modules), or set X402_ANVIL".to_string(),
            e => format!("the devnet did not start: {e}"),
        })?;
        say(format!("funding {} buyers + the outbound wallet", k.buyers));
        let mut buyers = fund_buyers(&net, k.buyers + 1).await?;
        let wallet = buyers.pop().ok_or("no buyer")?;

        say("starting the stand-in upstream, the seller and the buyer sidecars");
        let up_port = free_port()?;
        let up_listen = format!("127.0.0.1:{up_port}");
        let upstream = launch(dir, "standin")
            .command(&["standin", "--listen", &up_listen], up_port)
            .await
            .map_err(|e| e.to_string())?;
        let (seller, seller_admin) = start_seller(
            dir,
            "seller",
            &upstream.url,
            &net,
            net.settler_key_hex(),
            |_| {},
        )
        .await?;
        let buyer = start_buyer(dir, &seller.url, &net, &wallet).await?;
        Ok(Stack {
            buyer,
            seller,
            seller_admin,
            upstream,
            buyers,
            net,
        })
    }

    /// The upstream, the seller and the buyer are all still running.
    pub(crate) fn alive(&mut self) -> Res<()> {
        for p in [&mut self.upstream, &mut self.seller, &mut self.buyer] {
            p.check_alive().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A seller sidecar in front of `upstream` settling with `settler_key`, its node as the rows
/// use it (audit journal on, no rate limits), changed by `tweak` (no journal, OTLP export,
/// batching, limits on); returns it and its admin port.
pub(crate) async fn start_seller(
    dir: &Path,
    name: &str,
    upstream: &str,
    net: &Devnet,
    settler_key: String,
    tweak: impl FnOnce(&mut SellerNode),
) -> Res<(Sidecar, u16)> {
    let (port, admin) = (free_port()?, free_port()?);
    let mut node = SellerNode::new(port, upstream, net, SETTLER_ENV);
    node.challenge_secret = Some("load-harness-challenge-secret-0123456789".into());
    node.price = PriceSpec::Units(PRICE);
    node.max_timeout_seconds = Some(600);
    node.free_route = true;
    node.settlement.receipt_timeout_ms = Some(30_000);
    node.server = Some(Server::small());
    node.admin = Some(admin);
    node.audit = true;
    // One load generator on one address is, to the paywall, one abusive client: the rows
    // measure the paywall without its rate limits (the row that measures them says so).
    node.limits_off = true;
    tweak(&mut node);
    let seller = launch(dir, name)
        .env(SETTLER_ENV, settler_key)
        .run(&node.yaml(), port)
        .await
        .map_err(|e| e.to_string())?;
    Ok((seller, admin))
}

/// A facilitator service (the sidecar's facilitator API) settling with anvil dev key `key`:
/// what the official sellers of the 402 rows are configured with. Its URL.
pub(crate) async fn start_facilitator(dir: &Path, net: &Devnet, key: usize) -> Res<Sidecar> {
    const KEY_ENV: &str = "X402_LOAD_FACILITATOR_KEY";
    let mut node = FacilitatorNode::new(free_port()?, net, KEY_ENV);
    node.server = Some(Server::small());
    launch(dir, "facilitator")
        .env(KEY_ENV, x402_sidecar::evm::keys::DEV_KEYS[key])
        .run(&node.yaml(), node.listen)
        .await
        .map_err(|e| e.to_string())
}

/// The buyer node: pays `seller` from `wallet`, never runs out of budget or trips its breaker,
/// and has no fallback (an error is an error).
async fn start_buyer(
    dir: &Path,
    seller: &str,
    net: &Devnet,
    wallet: &PrivateKeySigner,
) -> Res<Sidecar> {
    let port = free_port()?;
    let mut node = BuyerNode::new(
        port,
        net,
        BUYER_ENV,
        PriceSpec::Units(1_000_000_000_000),
        dir.join("ledger.jsonl"),
    );
    node.sellers.push(SellerEntry {
        priority: Some(1),
        ..SellerEntry::new(
            "seller",
            &format!("{seller}/x402"),
            net.pay_to,
            PriceSpec::Units(50_000),
        )
    });
    node.max_authorization_seconds = Some(120);
    node.timeout_ms = Some(10_000);
    node.retry = Some(Retry {
        attempts: 2,
        backoff_ms: 50,
    });
    node.breaker = Some(Breaker {
        failure_threshold: 1_000_000,
        open_seconds: 1,
    });
    node.server = Some(Server::small());
    launch(dir, "buyer")
        .env(
            BUYER_ENV,
            format!("0x{}", util::hex(&wallet.to_bytes()[..])),
        )
        .run(&node.yaml(), port)
        .await
        .map_err(|e| e.to_string())
}

/// A trace collector that accepts every OTLP/HTTP export and keeps only counts: (its traces
/// URL, export requests, body bytes). Dropping the handle stops it.
pub(crate) async fn otlp_sink() -> Res<(SinkHandle, Arc<AtomicUsize>, Arc<AtomicUsize>)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}/v1/traces",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let (posts, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (p, b) = (posts.clone(), bytes.clone());
    let handler: standin::Handler = Arc::new(move |req: standin::Request| {
        p.fetch_add(1, Ordering::SeqCst);
        b.fetch_add(req.body.len(), Ordering::SeqCst);
        Box::pin(async { standin::Response::Body(200, String::new()) })
    });
    let task = tokio::spawn(standin::serve(l, handler));
    Ok((SinkHandle { url, task }, posts, bytes))
}

pub(crate) struct SinkHandle {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Display for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
