//! What the paid scenarios drive: whole paid calls ([`whole_flow`]), calls through the buyer's
//! outbound proxy ([`via_flow`]), and for the settle phase the sidecar's settler code in this
//! process ([`settle_inprocess`]) and the devnet's own floor ([`Floor`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;
use x402_sidecar::buyer::client;
use x402_sidecar::devkit::devnet::{self, Devnet};
use x402_sidecar::util;

use crate::measure::{Outcome, Run, Tally, counted, expect, micros, status_kind};
use crate::{PRICE, Res};

/// `n` whole paid calls as a client makes them (`client::pay`: POST → 402 → sign → POST),
/// `conc` at a time, signed by the buyers in turn; counts the 200s in `paid_ok`.
pub(crate) fn whole_flow(
    http: &reqwest::Client,
    url: &str,
    seed: &Bytes,
    buyers: &[PrivateKeySigner],
    n: usize,
    conc: usize,
    paid_ok: &Arc<AtomicU64>,
) -> impl Future<Output = Run> + use<> {
    let (c, url, body, ok) = (http.clone(), url.to_string(), seed.clone(), paid_ok.clone());
    let signers: Vec<PrivateKeySigner> = (0..n).map(|i| buyers[i % buyers.len()].clone()).collect();
    counted(conc, signers, move |signer: &PrivateKeySigner| {
        let (c, url, body, ok, signer) = (
            c.clone(),
            url.clone(),
            body.clone(),
            ok.clone(),
            signer.clone(),
        );
        async move {
            let paid = client::pay(&c, &url, body, &signer, false, None, |_| {})
                .await
                .map_err(|e| {
                    let mut s = e.to_string();
                    s.truncate(80);
                    s
                })?;
            if paid.status == 200 {
                ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            } else {
                Err(status_kind(paid.status, &paid.body))
            }
        }
    })
}

/// `n` calls through the buyer's outbound proxy, `conc` at a time; counts the 200s.
pub(crate) fn via_flow(
    http: &reqwest::Client,
    url: &str,
    seed: &Bytes,
    n: usize,
    conc: usize,
    paid_ok: &Arc<AtomicU64>,
) -> impl Future<Output = Run> + use<> {
    let (c, url, body, ok) = (http.clone(), url.to_string(), seed.clone(), paid_ok.clone());
    counted(conc, (0..n).collect::<Vec<_>>(), move |_: &usize| {
        let req = c
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.clone());
        paid_200(req, &ok)
    })
}

/// Send `req`, expect a 200 and count it in `paid_ok`.
pub(crate) fn paid_200(
    req: reqwest::RequestBuilder,
    paid_ok: &Arc<AtomicU64>,
) -> impl Future<Output = Outcome> + use<> {
    let ok = paid_ok.clone();
    async move {
        expect(req, 200).await?;
        ok.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Fresh buyers holding 1 000 000 USDC each. Like `Devnet::new_buyer`, but minted through a
/// provider of our own whose receipts are polled by hand: `new_buyer` waits with alloy's
/// `get_receipt`, which starts a block watcher on the devnet's provider that then fetches every
/// new block (one `eth_getBlockByNumber` per settled call) for as long as the devnet lives, an
/// extra load on anvil and on this process during the measurements.
pub(crate) async fn fund_buyers(net: &Devnet, n: usize) -> Res<Vec<PrivateKeySigner>> {
    use alloy_network::{EthereumWallet, TransactionBuilder};
    use alloy_provider::{Provider, ProviderBuilder};
    use alloy_rpc_types_eth::TransactionRequest;
    use alloy_sol_types::SolCall;
    use x402_sidecar::evm::typed::IEip3009Token as Token;

    let e = |e: &dyn std::fmt::Display| format!("funding buyers: {e}");
    let url = net.rpc_url.parse().map_err(|x| e(&x))?;
    let p = ProviderBuilder::new()
        .wallet(EthereumWallet::from(net.owner.clone()))
        .connect_http(url);
    let mut out = Vec::new();
    for _ in 0..n {
        let buyer = PrivateKeySigner::random();
        let mint = Token::mintCall {
            to: buyer.address(),
            amount: U256::from(1_000_000 * devnet::ONE_USDC),
        };
        let tx = TransactionRequest::default()
            .with_to(devnet::USDC)
            .with_input(mint.abi_encode());
        let hash = *p.send_transaction(tx).await.map_err(|x| e(&x))?.tx_hash();
        let receipt = loop {
            if let Some(r) = p.get_transaction_receipt(hash).await.map_err(|x| e(&x))? {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if !receipt.status() {
            return Err(e(&"mint reverted"));
        }
        out.push(buyer);
    }
    Ok(out)
}

/// A signed authorization from `payer` to a throwaway address (not the seller's payTo).
fn floor_auth(
    payer: &PrivateKeySigner,
) -> Res<(
    x402_sidecar::x402::types::Authorization,
    alloy_primitives::Signature,
)> {
    use x402_sidecar::evm::typed;
    let domain = typed::domain("USDC", "2", devnet::CHAIN_ID, devnet::USDC);
    let auth = x402_sidecar::x402::types::Authorization {
        from: payer.address(),
        to: Address::repeat_byte(0x5a),
        value: U256::from(PRICE),
        valid_after: U256::ZERO,
        valid_before: U256::from(util::now_secs() + 600),
        nonce: alloy_primitives::B256::random(),
    };
    let sig = typed::sign(payer, &auth, &domain).map_err(|e| format!("signing: {e}"))?;
    Ok((auth, sig))
}

/// The sidecar's own settler code (`evm::Chain::settle`), with its own settler key (anvil dev
/// key 4), for calling in this process: the settle phase without the HTTP server around it.
pub(crate) fn inprocess_settler(net: &Devnet) -> Res<x402_sidecar::evm::Chain> {
    let key: PrivateKeySigner = x402_sidecar::evm::keys::DEV_KEYS[4]
        .parse()
        .map_err(|e| format!("settler key: {e}"))?;
    x402_sidecar::evm::Chain::new(&net.rpc_url, devnet::CHAIN_ID, key, Duration::from_secs(30))
        .map_err(|e| e.to_string())
}

/// `n` settlements through `chain`, one at a time.
pub(crate) async fn settle_inprocess(
    chain: &x402_sidecar::evm::Chain,
    payer: &PrivateKeySigner,
    n: usize,
) -> Res<Run> {
    use x402_sidecar::evm::SettleOutcome;
    let mut t: Tally = Default::default();
    let t_start = Instant::now();
    for _ in 0..n {
        let (auth, sig) = floor_auth(payer)?;
        let t0 = Instant::now();
        let out = chain.settle(devnet::USDC, &auth, &sig).await;
        t.2 += 1;
        match out {
            SettleOutcome::Settled { .. } => {
                t.0.push(micros(t0.elapsed()));
                t.1 += 1;
            }
            other => {
                let mut k = format!("{other:?}");
                k.truncate(60);
                *t.3.entry(k).or_default() += 1;
            }
        }
    }
    let mut run = Run::default();
    run.merge(t);
    run.elapsed = t_start.elapsed();
    Ok(run)
}

/// The devnet's own floor for one settlement: the RPCs the settler issues (dry-run `eth_call`,
/// `eth_feeHistory`, `eth_sendRawTransaction`, receipt), back to back, the receipt polled every
/// 0.2 ms; no sidecar involved. Sent with anvil dev key 3; transfers go to a throwaway address,
/// not to the seller.
pub(crate) struct Floor {
    p: alloy_provider::DynProvider,
    me: Address,
    nonce: u64,
    /// Summed milliseconds of the four steps.
    steps: [f64; 4],
    n: u64,
    first_empty: u64,
    polls: u64,
}

impl Floor {
    pub(crate) async fn new(net: &Devnet) -> Res<Floor> {
        use alloy_provider::Provider;
        let e = |e: &dyn std::fmt::Display| format!("devnet floor: {e}");
        let key: PrivateKeySigner = x402_sidecar::evm::keys::DEV_KEYS[3]
            .parse()
            .map_err(|x| e(&x))?;
        let me = key.address();
        let p = x402_sidecar::evm::connect(&net.rpc_url, Some(key)).map_err(|x| e(&x))?;
        let nonce = p
            .get_transaction_count(me)
            .pending()
            .await
            .map_err(|x| e(&x))?;
        Ok(Floor {
            p,
            me,
            nonce,
            steps: [0.0; 4],
            n: 0,
            first_empty: 0,
            polls: 0,
        })
    }

    pub(crate) async fn run(&mut self, payer: &PrivateKeySigner, n: usize) -> Res<Run> {
        use alloy_network::TransactionBuilder;
        use alloy_provider::Provider;
        use alloy_rpc_types_eth::TransactionRequest;

        let e = |e: &dyn std::fmt::Display| format!("devnet floor: {e}");
        let mut t: Tally = Default::default();
        let t_start = Instant::now();
        for _ in 0..n {
            let (auth, sig) = floor_auth(payer)?;
            let data = alloy_sol_types::SolCall::abi_encode(
                &x402_sidecar::evm::typed::transfer_call(&auth, &sig),
            );
            let t0 = Instant::now();
            let dry = TransactionRequest::default()
                .with_from(self.me)
                .with_to(devnet::USDC)
                .with_input(data.clone());
            self.p.call(dry).await.map_err(|x| e(&x))?;
            let t1 = Instant::now();
            let fees = self.p.estimate_eip1559_fees().await.map_err(|x| e(&x))?;
            let t2 = Instant::now();
            let req = TransactionRequest::default()
                .with_from(self.me)
                .with_to(devnet::USDC)
                .with_input(data)
                .with_chain_id(devnet::CHAIN_ID)
                .with_nonce(self.nonce)
                .with_gas_limit(200_000)
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
            let tx = *self
                .p
                .send_transaction(req)
                .await
                .map_err(|x| e(&x))?
                .tx_hash();
            self.nonce += 1;
            let t3 = Instant::now();
            let mut first = true;
            let ok = loop {
                self.polls += 1;
                if let Some(r) = self
                    .p
                    .get_transaction_receipt(tx)
                    .await
                    .map_err(|x| e(&x))?
                {
                    break r.status();
                }
                if first {
                    self.first_empty += 1;
                    first = false;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            let t4 = Instant::now();
            for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].iter().enumerate() {
                self.steps[i] += d.as_secs_f64() * 1000.0;
            }
            self.n += 1;
            t.2 += 1;
            if ok {
                t.0.push(micros(t4 - t0));
                t.1 += 1;
            } else {
                *t.3.entry("reverted".into()).or_default() += 1;
            }
        }
        let mut run = Run::default();
        run.merge(t);
        run.elapsed = t_start.elapsed();
        Ok(run)
    }

    pub(crate) fn note(&self) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "mean ms: eth_call {:.2} · eth_feeHistory {:.2} · eth_sendRawTransaction {:.2} · receipt {:.2} (first poll empty for {:.0}%, {:.1} polls per receipt)",
            self.steps[0] / n,
            self.steps[1] / n,
            self.steps[2] / n,
            self.steps[3] / n,
            self.first_empty as f64 / n * 100.0,
            self.polls as f64 / n
        )
    }
}
