//! `demo`: the main job on the embedded default — a devnet, two built-in advisors, a seller and a
//! buyer sidecar, one paid call, balances, the ledger and the journal.

use alloy_primitives::U256;
use bytes::Bytes;

use super::audit::{AuditCmd, audit};
use super::buy::{buy_once, show_ledger};
use super::{Failure, Outcome};
use crate::devkit::devnet;
use crate::devkit::spawn::{free_port, start_sidecar};
use crate::x402;

/// A built-in advisor (rules only) on a loopback port, behind a fresh secret.
async fn demo_advisor(
    prefix: &str,
) -> Result<(std::net::SocketAddr, String, tokio::task::JoinHandle<()>), String> {
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

async fn demo_inner() -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let fmt = |v: U256| x402::money::format_decimal(v, 6);
    println!(
        "== 1. local chain: anvil, chain id {}, the project's EIP-3009 USDC at {}",
        devnet::CHAIN_ID,
        devnet::USDC
    );
    let net = devnet::Devnet::start().await.map_err(|e| s(&e))?;
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
    println!("== 3. seller node: a sidecar with the inbound paywall, POST /x402 at $0.01");
    let seller_cfg = format!(
        "inbound:\n  enabled: true\n  listen: 127.0.0.1:{seller_port}\n  upstream: {{ url: \"http://{advisor_addr}\", timeout_ms: 4000, secret_env: X402_DEMO_ADVISOR_SECRET }}\n  routes:\n    - path: /x402\n      description: Trading strategy advice\n      price: \"$0.01\"\n      accepts:\n        - network: {net_id}\n          asset: \"{usdc}\"\n          pay_to: \"{pay_to}\"\n          eip712: {{ name: USDC, version: \"2\" }}\nfacilitators:\n  - network: {net_id}\n    rpc_url: {rpc}\n    settler: {{ key_env: X402_DEMO_SETTLER_KEY }}\nstore: memory\n",
        net_id = devnet::NETWORK,
        usdc = devnet::USDC,
        pay_to = net.pay_to,
        rpc = net.rpc_url,
    );
    let _seller = start_sidecar(
        &dir,
        "seller",
        &seller_cfg,
        &[
            ("X402_DEMO_SETTLER_KEY", net.settler_key_hex()),
            ("X402_DEMO_ADVISOR_SECRET", advisor_secret),
        ],
        seller_port,
    )
    .await?;
    println!("   listening at http://127.0.0.1:{seller_port}/x402");

    println!(
        "== 4. buyer node: roma-01's sidecar with the outbound paying proxy (cap $0.05/call, budget $1/day)"
    );
    let ledger = dir.join("ledger.jsonl");
    let buyer_cfg = format!(
        "outbound:\n  enabled: true\n  listen: 127.0.0.1:{buyer_port}\n  wallet: {{ key_env: X402_DEMO_BUYER_KEY, address: \"{addr}\" }}\n  chains: [ {{ network: {net_id}, rpc_url: \"{rpc}\" }} ]\n  sellers:\n    - name: seller-node\n      url: \"http://127.0.0.1:{seller_port}/x402\"\n      pay_to: [\"{pay_to}\"]\n      networks: [{net_id}]\n      assets: [\"{usdc}\"]\n      max_price: \"$0.05\"\n  budgets: [ {{ network: {net_id}, asset: \"{usdc}\", daily: \"$1\" }} ]\n  fallback: {{ mode: local, url: \"http://{up_addr}/x402\", secret_env: X402_DEMO_FALLBACK_SECRET }}\n  ledger_path: \"{ledger}\"\nstore: memory\n",
        addr = wallet.address(),
        net_id = devnet::NETWORK,
        usdc = devnet::USDC,
        pay_to = net.pay_to,
        rpc = net.rpc_url,
        ledger = ledger.display(),
    );
    let key_hex = format!("0x{}", crate::util::hex(&wallet.to_bytes()[..]));
    let _buyer = start_sidecar(
        &dir,
        "buyer",
        &buyer_cfg,
        &[
            ("X402_DEMO_BUYER_KEY", key_hex),
            ("X402_DEMO_FALLBACK_SECRET", fallback_secret),
        ],
        buyer_port,
    )
    .await?;
    println!("   roma-01 points its HTTP client at http://127.0.0.1:{buyer_port}/x402");

    println!(
        "== 5. roma-01 asks for advice on the seed example StrategyRequest (402 → sign → settle happen inside)"
    );
    let before = (
        net.balance(wallet.address()).await.map_err(|e| s(&e))?,
        net.balance(net.pay_to).await.map_err(|e| s(&e))?,
    );
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
    let after = (
        net.balance(wallet.address()).await.map_err(|e| s(&e))?,
        net.balance(net.pay_to).await.map_err(|e| s(&e))?,
    );
    println!("== 6. balances on chain (USDC)");
    println!("   buyer  {} → {}", fmt(before.0), fmt(after.0));
    println!("   seller {} → {}", fmt(before.1), fmt(after.1));
    println!("== 7. the buyer's ledger");
    show_ledger(&ledger, None).map_err(|f| format!("{f:?}"))?;
    println!(
        "== 8. the seller's audit journal (x402-sidecar audit show <paymentId>; hash chain verified)"
    );
    let seller_audit = dir.join("seller").join("x402-audit");
    let payment_id = crate::buyer::ledger::read(&ledger)
        .ok()
        .and_then(|l| l.last().and_then(|e| e.remote_payment_id.clone()))
        .unwrap_or_default();
    audit(&seller_audit, AuditCmd::Show { id: payment_id }).map_err(|f| format!("{f:?}"))?;
    audit(&seller_audit, AuditCmd::Verify).map_err(|f| format!("{f:?}"))?;
    up.abort();
    advisor_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let price = U256::from(10_000u64);
    if status != 200 || after.1 != before.1 + price {
        return Err(format!(
            "expected 200 and +0.01 USDC for the seller, got {status}"
        ));
    }
    println!(
        "== done: one paid strategy call, buyer node → seller node, settled on chain; everything stopped."
    );
    Ok(())
}
