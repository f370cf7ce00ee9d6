//! `demo`: the main job on the embedded default — a devnet, two built-in advisors, a seller and a
//! buyer sidecar, one paid call, balances, the ledger and the journal. Each numbered step of the
//! output is one function here; the nodes are the dev kit's ([`crate::devkit::nodes`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;

use super::audit::{AuditCmd, audit};
use super::buy::{buy_once, show_ledger};
use super::{Failure, Outcome};
use crate::devkit::devnet::{self, Devnet};
use crate::devkit::nodes::{BuyerNode, Fallback, SellerEntry, SellerNode};
use crate::devkit::spawn::{Launch, Sidecar, SpawnError, free_port};
use crate::x402;
use crate::x402::money::PriceSpec;

type Res<T> = Result<T, String>;

fn s(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

/// The demo's words for a sidecar that did not come up.
fn not_started(e: SpawnError) -> String {
    match e {
        SpawnError::Exited { name, log, .. } | SpawnError::NotListening { name, log, .. } => {
            format!(
                "the {name} sidecar did not start within 5 s; see {}",
                log.display()
            )
        }
        SpawnError::Io { source, .. } => source.to_string(),
        e => e.to_string(),
    }
}

/// A built-in advisor (rules only) on a loopback port, behind a fresh secret.
async fn demo_advisor(prefix: &str) -> Res<(SocketAddr, String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let secret = crate::util::new_id(prefix);
    let advisor =
        crate::advisor::server::Advisor::rules_only(secret.clone()).map_err(|e| e.to_string())?;
    let task = tokio::spawn(crate::advisor::server::serve(
        listener,
        std::sync::Arc::new(advisor),
    ));
    Ok((addr, secret, task))
}

/// `demo`: the whole picture on the embedded default.
pub(super) async fn demo() -> Outcome {
    demo_inner()
        .await
        .map_err(|e| Failure::new(format!("demo failed: {e}")))
}

/// The seller's price: $0.01.
const PRICE: u64 = 10_000;

async fn demo_inner() -> Res<()> {
    let (net, wallet) = local_chain().await?;
    println!(
        "== 2. the seller's strategy endpoint: the built-in advisor (rule engine rules-v1, no model), on loopback behind a shared secret"
    );
    let (advisor_addr, advisor_secret, advisor_task) = demo_advisor("demo-secret").await?;
    // The buyer node's local fallback: its own built-in advisor, behind its own secret.
    let (up_addr, fallback_secret, up) = demo_advisor("demo-fallback-secret").await?;

    let dir = std::env::temp_dir().join(format!("x402-sidecar-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| s(&e))?;
    let (seller_port, buyer_port) = (
        free_port().map_err(|e| s(&e))?,
        free_port().map_err(|e| s(&e))?,
    );
    let _seller = seller_node(&dir, &net, seller_port, advisor_addr, advisor_secret).await?;
    let ledger = dir.join("ledger.jsonl");
    let buyer = BuyerSide {
        port: buyer_port,
        seller_port,
        fallback: up_addr,
        fallback_secret,
        ledger: ledger.clone(),
    };
    let _buyer = buyer_node(&dir, &net, &wallet, buyer).await?;

    let (status, before, after) = paid_call(&net, &wallet, buyer_port).await?;
    balances(before, after);
    println!("== 7. the buyer's ledger");
    show_ledger(&ledger, None).map_err(|f| format!("{f:?}"))?;
    seller_journal(&dir, &ledger)?;

    up.abort();
    advisor_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if status != 200 || after.1 != before.1 + U256::from(PRICE) {
        return Err(format!(
            "expected 200 and +0.01 USDC for the seller, got {status}"
        ));
    }
    println!(
        "== done: one paid strategy call, buyer node → seller node, settled on chain; everything stopped."
    );
    Ok(())
}

/// 1. anvil with the project's token, and roma-01's buyer wallet holding 5 USDC.
async fn local_chain() -> Res<(Devnet, PrivateKeySigner)> {
    println!(
        "== 1. local chain: anvil, chain id {}, the project's EIP-3009 USDC at {}",
        devnet::CHAIN_ID,
        devnet::USDC
    );
    let net = Devnet::start().await.map_err(|e| s(&e))?;
    let wallet = net
        .new_buyer(U256::from(5 * devnet::ONE_USDC))
        .await
        .map_err(|e| s(&e))?;
    println!(
        "   RPC {}; roma-01's buyer wallet {} holds 5 USDC; the seller receives at {}",
        net.rpc_url,
        wallet.address(),
        net.pay_to
    );
    Ok((net, wallet))
}

/// 3. the seller node: the inbound paywall in front of the advisor at `advisor`, $0.01 a call.
async fn seller_node(
    dir: &Path,
    net: &Devnet,
    port: u16,
    advisor: SocketAddr,
    advisor_secret: String,
) -> Res<Sidecar> {
    println!("== 3. seller node: a sidecar with the inbound paywall, POST /x402 at $0.01");
    let mut node = SellerNode::new(
        port,
        &format!("http://{advisor}"),
        net,
        "X402_DEMO_SETTLER_KEY",
    );
    node.upstream_secret_env = Some("X402_DEMO_ADVISOR_SECRET".into());
    // The built-in advisor's answers meet the strategy contract; a placeholder would not be sold.
    node.charge_standin = false;
    node.price = PriceSpec::Text("$0.01".into());
    let seller = Launch::current_exe(dir, "seller")
        .map_err(not_started)?
        .log_format("pretty")
        .env("X402_DEMO_SETTLER_KEY", net.settler_key_hex())
        .env("X402_DEMO_ADVISOR_SECRET", advisor_secret)
        .run(&node.yaml(), port)
        .await
        .map_err(not_started)?;
    println!("   listening at http://127.0.0.1:{port}/x402");
    Ok(seller)
}

/// What the buyer node is wired to.
struct BuyerSide {
    port: u16,
    seller_port: u16,
    /// The local fallback advisor.
    fallback: SocketAddr,
    fallback_secret: String,
    ledger: PathBuf,
}

/// 4. roma-01's buyer node: the outbound paying proxy with a cap of $0.05 a call and $1 a day.
async fn buyer_node(
    dir: &Path,
    net: &Devnet,
    wallet: &PrivateKeySigner,
    b: BuyerSide,
) -> Res<Sidecar> {
    println!(
        "== 4. buyer node: roma-01's sidecar with the outbound paying proxy (cap $0.05/call, budget $1/day)"
    );
    let mut node = BuyerNode::new(
        b.port,
        net,
        "X402_DEMO_BUYER_KEY",
        PriceSpec::Text("$1".into()),
        b.ledger,
    );
    node.address = Some(wallet.address());
    node.sellers.push(SellerEntry::new(
        "seller-node",
        &format!("http://127.0.0.1:{}/x402", b.seller_port),
        net.pay_to,
        PriceSpec::Text("$0.05".into()),
    ));
    node.fallback = Fallback {
        url: Some(format!("http://{}/x402", b.fallback)),
        secret_env: Some("X402_DEMO_FALLBACK_SECRET".into()),
        ..Fallback::mode("local")
    };
    let key_hex = format!("0x{}", crate::util::hex(&wallet.to_bytes()[..]));
    let buyer = Launch::current_exe(dir, "buyer")
        .map_err(not_started)?
        .log_format("pretty")
        .env("X402_DEMO_BUYER_KEY", key_hex)
        .env("X402_DEMO_FALLBACK_SECRET", b.fallback_secret)
        .run(&node.yaml(), b.port)
        .await
        .map_err(not_started)?;
    println!(
        "   roma-01 points its HTTP client at http://127.0.0.1:{}/x402",
        b.port
    );
    Ok(buyer)
}

/// (buyer, seller) balances.
type Balances = (U256, U256);

async fn balances_now(net: &Devnet, wallet: &PrivateKeySigner) -> Res<Balances> {
    Ok((
        net.balance(wallet.address()).await.map_err(|e| s(&e))?,
        net.balance(net.pay_to).await.map_err(|e| s(&e))?,
    ))
}

/// 5. one call of roma-01 through the buyer node; the status and the balances around it.
async fn paid_call(
    net: &Devnet,
    wallet: &PrivateKeySigner,
    buyer_port: u16,
) -> Res<(u16, Balances, Balances)> {
    println!(
        "== 5. roma-01 asks for advice on the seed example StrategyRequest (402 → sign → settle happen inside)"
    );
    let before = balances_now(net, wallet).await?;
    let via = format!("http://127.0.0.1:{buyer_port}");
    let (status, report) = buy_once(
        &reqwest::Client::new(),
        &via,
        Bytes::from_static(crate::advisor::SEED_EXAMPLE.as_bytes()),
    )
    .await?;
    println!(
        "{}",
        report
            .lines()
            .map(|l| format!("   {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = balances_now(net, wallet).await?;
    Ok((status, before, after))
}

/// 6. the balances on chain, before and after.
fn balances(before: Balances, after: Balances) {
    let fmt = |v: U256| x402::money::format_decimal(v, 6);
    println!("== 6. balances on chain (USDC)");
    println!("   buyer  {} → {}", fmt(before.0), fmt(after.0));
    println!("   seller {} → {}", fmt(before.1), fmt(after.1));
}

/// 8. the seller's journal of the payment the ledger names, and its hash chain.
fn seller_journal(dir: &Path, ledger: &Path) -> Res<()> {
    println!(
        "== 8. the seller's audit journal (x402-sidecar audit show <paymentId>; hash chain verified)"
    );
    let seller_audit = dir.join("seller").join("x402-audit");
    let payment_id = crate::buyer::ledger::read(ledger)
        .ok()
        .and_then(|l| l.last().and_then(|e| e.remote_payment_id.clone()))
        .unwrap_or_default();
    audit(&seller_audit, AuditCmd::Show { id: payment_id }).map_err(|f| format!("{f:?}"))?;
    audit(
        &seller_audit,
        AuditCmd::Verify {
            spill_dir: None,
            grace_secs: crate::audit::OPEN_GRACE_SECS,
        },
    )
    .map_err(|f| format!("{f:?}"))?;
    Ok(())
}
