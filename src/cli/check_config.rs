//! `check-config`: resolve the configuration and summarise what every section will do; with
//! `--online`, also ask each chain's RPC (chain id, each settler key's gas against its floor, and
//! each paid route's token: a contract, its decimals and its EIP-712 domain).

use std::path::Path;

use super::{Failure, Outcome, block_on, resolve};
use crate::config::Resolved;
use crate::evm::preflight::check_token;
use crate::evm::{Chain, ChainSpec, RpcOptions};
use crate::util::redact_url;

/// `check-config`: every problem at once, or a summary of what each section will do.
pub(super) fn check_config(path: &Path, online: bool) -> Outcome {
    let r = resolve(path)?;
    println!("{}: OK", path.display());
    for line in r.summary() {
        println!("  {line}");
    }
    if online {
        return block_on(check_online(&r));
    }
    Ok(())
}

/// Each chain's RPC answers with the configured chain id, and each chain settled here has a
/// settler key holding gas for its floor (`gas_floor_settlements`): what `/readyz` would say.
async fn check_online(r: &Resolved) -> Outcome {
    let mut local: Vec<&ChainSpec> = Vec::new();
    let seller = r.inbound.seller().map(|s| &s.settlement);
    let service = r.facilitator.iter().flat_map(|f| f.chains.iter());
    for spec in seller.iter().flat_map(|s| s.local.iter()).chain(service) {
        if !local.iter().any(|c| c.network == spec.network) {
            local.push(spec);
        }
    }
    let mut lines = Vec::new();
    let mut problems = 0usize;
    for spec in local {
        let network = &spec.network;
        let chain =
            Chain::from_spec(spec, None).map_err(|e| Failure::new(format!("{network}: {e}")))?;
        if let Err(e) = chain.check_chain_id().await {
            lines.push(format!(
                "{network}: PROBLEM: RPC {}: {e}",
                redact_url(&spec.rpc_url)
            ));
            problems += 1;
            continue;
        }
        lines.push(format!(
            "{network}: RPC {} answers with chain id {}",
            redact_url(&spec.rpc_url),
            spec.chain_id
        ));
        match chain.read_gas().await {
            Ok(read) => {
                let enough = read.iter().any(|g| g.enough());
                for g in &read {
                    let mark = match (g.enough(), enough) {
                        (true, _) => "",
                        (false, true) => "WARNING (skipped while another key has gas): ",
                        (false, false) => "PROBLEM: ",
                    };
                    lines.push(format!("{network}: {mark}{}", g.describe()));
                }
                if !enough {
                    problems += 1;
                }
            }
            Err(e) => {
                lines.push(format!("{network}: PROBLEM: {e}"));
                problems += 1;
            }
        }
        match chain.check_batcher().await {
            Some(Ok(at)) => lines.push(format!(
                "{network}: batching contract {at} answers aggregate3"
            )),
            Some(Err(e)) => {
                lines.push(format!("{network}: PROBLEM: {e}"));
                problems += 1;
            }
            None => {}
        }
    }
    for f in r
        .inbound
        .seller()
        .iter()
        .flat_map(|s| s.settlement.remote.iter())
    {
        let chain = Chain::read_only_with(&f.rpc_url, f.chain_id, f.receipt_timeout, f.rpc)
            .map_err(|e| Failure::new(format!("{}: {e}", f.network)))?;
        match chain.check_chain_id().await {
            Ok(()) => lines.push(format!(
                "{}: RPC {} answers with chain id {}",
                f.network,
                redact_url(&f.rpc_url),
                f.chain_id
            )),
            Err(e) => {
                lines.push(format!(
                    "{}: PROBLEM: RPC {}: {e}",
                    f.network,
                    redact_url(&f.rpc_url)
                ));
                problems += 1;
            }
        }
    }
    problems += check_tokens(r, &mut lines).await;
    match crate::store::reachable(&r.store, std::time::Duration::from_secs(2)).await {
        Ok(()) => lines.push(format!("store: {} answers", r.store)),
        Err(e) => {
            lines.push(format!("store: PROBLEM: {e}"));
            problems += 1;
        }
    }
    println!("  online:");
    for l in &lines {
        println!("    {l}");
    }
    if problems > 0 {
        return Err(Failure::new(format!(
            "{problems} problem(s) found online; /readyz would not be ready"
        )));
    }
    Ok(())
}

/// Each paid route's token, read on the RPC of its network's facilitator: a contract, with the
/// configured decimals and EIP-712 domain, not the payTo. The number of problems found.
async fn check_tokens(r: &Resolved, lines: &mut Vec<String>) -> usize {
    let Some(seller) = r.inbound.seller() else {
        return 0;
    };
    let s = &seller.settlement;
    let rpc_of = |chain_id: u64| -> Option<(String, std::time::Duration, RpcOptions)> {
        s.local
            .iter()
            .find(|c| c.chain_id == chain_id)
            .map(|c| (c.rpc_url.clone(), c.receipt_timeout, c.rpc))
            .or_else(|| {
                s.remote
                    .iter()
                    .find(|f| f.chain_id == chain_id)
                    .map(|f| (f.rpc_url.clone(), f.receipt_timeout, f.rpc))
            })
    };
    let mut problems = 0;
    for (i, route) in seller.routes.iter().enumerate() {
        for (j, o) in route.offers.iter().enumerate() {
            let at = format!("inbound.routes[{i}].accepts[{j}]");
            let Some((url, receipt, rpc)) = rpc_of(o.chain_id) else {
                continue;
            };
            let facts = match Chain::read_only_with(&url, o.chain_id, receipt, rpc) {
                Ok(chain) => chain.token_facts(o.asset).await,
                Err(e) => Err(e.to_string()),
            };
            match facts {
                Ok(facts) => {
                    let found = check_token(o, &facts);
                    if found.is_empty() {
                        lines.push(format!(
                            "{at}: token {} on {} has {} decimals and the EIP-712 domain {}/{}, as configured",
                            o.asset, o.network, o.decimals, o.eip712_name, o.eip712_version
                        ));
                    }
                    for p in &found {
                        lines.push(format!("{at}: PROBLEM: {p}"));
                    }
                    problems += found.len();
                }
                Err(e) => {
                    lines.push(format!(
                        "{at}: PROBLEM: the token {} could not be read on {}: {e}",
                        o.asset,
                        redact_url(&url)
                    ));
                    problems += 1;
                }
            }
        }
    }
    problems
}
