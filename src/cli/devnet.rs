//! `devnet` and `standin`: the local chain and the stand-in upstream, for trying things by hand.

use alloy_primitives::U256;

use super::{Outcome, failed};
use crate::devkit::{devnet, standin};
use crate::util::hex;

/// `standin`: the labelled stand-in strategy upstream.
pub(super) async fn serve_standin(listen: String) -> Outcome {
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(failed(&format!("cannot listen on {listen}")))?;
    tracing::info!(%listen, "stand-in strategy upstream listening (fixed, labelled answers; no model)");
    standin::serve(listener, standin::standin_handler()).await;
    Ok(())
}

/// `devnet`: anvil with the project's USDC and funded buyers, until Ctrl-C.
pub(super) async fn run_devnet(buyers: usize) -> Outcome {
    let net = devnet::Devnet::start().await.map_err(failed(""))?;
    println!("devnet RPC      {}", net.rpc_url);
    println!("chain id        {} ({})", devnet::CHAIN_ID, devnet::NETWORK);
    println!("USDC (EIP-3009) {}", devnet::USDC);
    println!("seller payTo    {}", net.pay_to);
    println!(
        "settler key     export X402_SETTLER_KEY={}   # anvil dev key, devnet only",
        net.settler_key_hex()
    );
    for i in 0..buyers {
        match net.new_buyer(U256::from(100 * devnet::ONE_USDC)).await {
            Ok(b) => println!(
                "buyer {i}         {} holds 100 USDC: export X402_BUYER_KEY=0x{}",
                b.address(),
                hex(&b.to_bytes()[..])
            ),
            Err(e) => eprintln!("error: funding a buyer: {e}"),
        }
    }
    println!("running; Ctrl-C stops the devnet");
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
