//! `buy` and `ledger`: one call through the outbound paying proxy, reported for people, and the
//! buyer's ledger with its spend per day and seller.

use std::path::{Path, PathBuf};

use alloy_primitives::U256;
use bytes::Bytes;

use super::{Failure, Outcome, failed, pretty};
use crate::buyer::ledger;
use crate::evm::{Chain, Fate, SettleOutcome};
use crate::util::{now_secs, rfc3339};
use crate::x402;

#[derive(clap::Subcommand)]
pub enum LedgerCmd {
    /// Reconcile every ledger entry with the chain: one line per difference, exit 1 if any.
    Verify {
        /// An RPC of the ledger's chain (the buyer's `outbound.chains` RPC).
        #[arg(long)]
        rpc: String,
        /// Look for the wallet's transfers the ledger does not know from this block on
        /// (default: the last 10 000 blocks).
        #[arg(long)]
        from_block: Option<u64>,
    },
}

pub(super) async fn buy(body: PathBuf, via: String, ledger: Option<PathBuf>) -> Outcome {
    let bytes = std::fs::read(&body).map_err(failed(&format!("cannot read {}", body.display())))?;
    let (status, report) = buy_once(&reqwest::Client::new(), &via, Bytes::from(bytes))
        .await
        .map_err(Failure::new)?;
    println!("{report}");
    if let Some(path) = ledger {
        show_ledger(&path, Some(&rfc3339(now_secs())[..10]))?;
    }
    if status == 200 {
        Ok(())
    } else {
        Err(Failure::reported())
    }
}

/// One call through the outbound proxy; a report for people.
pub(super) async fn buy_once(
    http: &reqwest::Client,
    via: &str,
    body: Bytes,
) -> Result<(u16, String), String> {
    let url = format!("{}/x402", via.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the outbound proxy at {via} did not answer: {e}"))?;
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let get = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let text = resp.bytes().await.map_err(|e| e.to_string())?;
    let mut out = format!(
        "→ POST {url}\n← {status}, answered by: {}\n",
        get("x-strategy-source")
    );
    if get("x-strategy-source") == "paid" {
        let amount = get("x-payment-amount")
            .parse::<U256>()
            .map(|a| x402::money::format_decimal(a, 6))
            .unwrap_or_default();
        out += &format!(
            "  seller   {}\n  price    {} ({} atomic units of {} on {})\n  payment  {} tx {} from {}\n",
            get("x-payment-seller"),
            amount,
            get("x-payment-amount"),
            get("x-payment-asset"),
            get("x-payment-network"),
            get("x-payment-status"),
            get("x-payment-tx"),
            get("x-payment-payer"),
        );
    }
    if h.contains_key("x-attempts") {
        out += &format!("  attempts {}\n", get("x-attempts"));
    }
    out += &format!(
        "  answer   {}",
        pretty(&text).replace('\n', "\n           ")
    );
    Ok((status, out))
}

pub(super) fn show_ledger(path: &Path, since: Option<&str>) -> Outcome {
    if !path.is_file() {
        return Err(Failure::usage(format!(
            "no ledger at {}: the file does not exist (give --path the outbound.ledger_path of sidecar.yaml)",
            path.display()
        )));
    }
    let entries = ledger::read(path).map_err(failed(""))?;
    let entries: Vec<_> = ledger::finals(&entries)
        .into_iter()
        .filter(|e| since.is_none_or(|d| e.time.as_str() >= d))
        .collect();
    let charged = entries.iter().filter(|e| e.charged()).count();
    println!(
        "{} authorization(s) in {}, {charged} charged",
        entries.len(),
        path.display()
    );
    for e in &entries {
        println!(
            "  {}  {:<12} {:>10} {}  tx {}  remote {} / {}  {} ms  {}",
            e.time,
            e.seller,
            e.amount,
            e.outcome,
            e.tx.as_deref().unwrap_or("-"),
            e.remote_request_id.as_deref().unwrap_or("-"),
            e.remote_payment_id.as_deref().unwrap_or("-"),
            e.latency_ms,
            e.call_id
        );
    }
    println!("spend per day and seller:");
    for ((day, seller, asset), (sum, n)) in ledger::totals(&entries) {
        println!(
            "  {day}  {seller:<12} {} ({sum} atomic units of {asset}) over {n} call(s)",
            x402::money::format_decimal(U256::from(sum), 6)
        );
    }
    Ok(())
}

/// `ledger verify`: every authorization's state in the ledger against the chain's; one line per
/// difference, exit 1 if there is any.
pub(super) async fn verify_ledger(path: PathBuf, rpc: String, from_block: Option<u64>) -> Outcome {
    let entries = ledger::read(&path).map_err(failed(""))?;
    let finals = ledger::finals(&entries);
    let mut chains: std::collections::HashMap<String, Chain> = std::collections::HashMap::new();
    let mut differences = 0usize;
    let mut charged = U256::ZERO;
    for e in &finals {
        let Some(chain_id) = x402::networks::chain_id(&e.network) else {
            println!(
                "DIFF {} {}: network {} is not an EVM network",
                e.call_id, e.nonce, e.network
            );
            differences += 1;
            continue;
        };
        if !chains.contains_key(&e.network) {
            let chain = Chain::read_only(&rpc, chain_id, std::time::Duration::from_secs(5))
                .map_err(failed("--rpc"))?;
            chain.check_chain_id().await.map_err(failed("--rpc"))?;
            chains.insert(e.network.clone(), chain);
        }
        let chain = &chains[&e.network];
        let Some((asset, auth)) = crate::buyer::watch_authorization(e) else {
            println!(
                "DIFF {} {}: the entry's fields do not parse",
                e.call_id, e.nonce
            );
            differences += 1;
            continue;
        };
        let fate = chain
            .fate(asset, &auth)
            .await
            .map_err(failed("reading the chain"))?;
        let on_chain = match &fate {
            Fate::Used {
                outcome: SettleOutcome::Settled { tx },
                ..
            } => Some(format!("{tx:#x}")),
            _ => None,
        };
        let expired = now_secs() > u64::try_from(auth.valid_before).unwrap_or(u64::MAX);
        let problem = match (e.outcome.as_str(), &fate, &on_chain) {
            (_, _, Some(tx)) if e.charged() => {
                (!e.tx.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(tx))).then(|| {
                    format!(
                        "the ledger names transaction {}, the chain {tx}",
                        e.tx.as_deref().unwrap_or("-")
                    )
                })
            }
            (_, _, None) if e.charged() => Some(format!(
                "the ledger says {} in {}, the chain shows no transfer ({fate:?})",
                e.outcome,
                e.tx.as_deref().unwrap_or("-")
            )),
            (_, _, Some(tx)) => Some(format!(
                "the ledger says {}, the chain shows the transfer {tx}",
                e.outcome
            )),
            ("cancelled", Fate::Canceled { .. }, _) => None,
            ("unused", Fate::Unused, _) => None,
            (o, Fate::Unused, _) if ledger::OPEN.contains(&o) && !expired => None,
            (o, Fate::Unused, _) if ledger::OPEN.contains(&o) => Some(format!(
                "the ledger still says {o}, the authorization expired unused"
            )),
            (o, f, _) => Some(format!("the ledger says {o}, the chain says {f:?}")),
        };
        if let Some(p) = problem {
            println!(
                "DIFF {} {} {} {}: {p}",
                e.call_id, e.seller, e.amount, e.nonce
            );
            differences += 1;
        } else if e.charged() {
            charged += e.amount.parse::<U256>().unwrap_or_default();
        }
    }
    // The other way round: every authorization of the ledger's wallets the chain shows used.
    let known: std::collections::HashSet<(String, String)> = finals
        .iter()
        .map(|e| (e.payer.to_lowercase(), e.nonce.to_lowercase()))
        .collect();
    let wallets: std::collections::BTreeSet<(String, String, String)> = finals
        .iter()
        .map(|e| (e.network.clone(), e.asset.clone(), e.payer.clone()))
        .collect();
    for (network, asset, payer) in wallets {
        let (Some(chain), Ok(asset_addr), Ok(payer_addr)) = (
            chains.get(&network),
            asset.parse::<alloy_primitives::Address>(),
            payer.parse::<alloy_primitives::Address>(),
        ) else {
            continue;
        };
        let used = chain
            .authorizations_used_by(asset_addr, payer_addr, from_block)
            .await
            .map_err(failed("reading the chain"))?;
        for (nonce, tx) in used {
            if !known.contains(&(payer.to_lowercase(), format!("{nonce:#x}"))) {
                println!(
                    "DIFF - - - {nonce:#x}: the chain shows {payer}'s authorization used in transaction {tx:#x}, the ledger has no entry for it"
                );
                differences += 1;
            }
        }
    }
    if differences > 0 {
        eprintln!(
            "{differences} difference(s) between {} and the chain",
            path.display()
        );
        return Err(Failure::reported());
    }
    println!(
        "OK: {} authorization(s) in {} match the chain; charged {charged} atomic units",
        finals.len(),
        path.display()
    );
    Ok(())
}
