//! The preflight on chain, shared by `check-config --online` and `run`: each chain's RPC
//! answers with the configured chain id, each settler key holds gas for its floor, each paid
//! route's token is a contract with the configured decimals and EIP-712 domain (and is not the
//! payTo), and the store answers.
//!
//! Each finding is graded. A *mismatch* is a definite fact about the configuration (the chain
//! or the token says otherwise): `run` refuses to start on it, with the same sentence
//! `check-config --online` prints. An *unavailable* check (an RPC or store that does not answer,
//! a settler short of gas) fails `check-config --online` but not `run`: it is logged, `/readyz`
//! says so, and `run` repeats the chain and token checks until they could be made.

use std::time::Duration;

use crate::config::Resolved;
use crate::evm::preflight::check_token;
use crate::evm::{Chain, ChainError, ChainSpec, RpcOptions};
use crate::util::redact_url;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grade {
    Ok,
    /// Not a problem now (another settler key has gas).
    Warning,
    /// The configuration disagrees with the chain: `run` refuses to start.
    Mismatch,
    /// Could not be checked, or a resource is short (gas): `run` starts, `/readyz` says so.
    Unavailable,
}

/// What a finding is about: the chain and token checks are the ones `run` repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    Chain,
    Gas,
    /// The batching contract, with batching on (without it, each payment settles alone).
    Batch,
    Token,
    Store,
}

/// One line of the preflight.
#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub grade: Grade,
    pub subject: Subject,
    /// Where: a network, `inbound.routes[0].accepts[0]`, `store`.
    pub at: String,
    pub text: String,
}

impl Finding {
    fn new(grade: Grade, subject: Subject, at: impl Into<String>, text: impl Into<String>) -> Self {
        Finding {
            grade,
            subject,
            at: at.into(),
            text: text.into(),
        }
    }

    /// The line as `check-config --online` prints it.
    pub fn line(&self) -> String {
        let mark = match self.grade {
            Grade::Ok => "",
            Grade::Warning => "WARNING (skipped while another key has gas): ",
            Grade::Mismatch | Grade::Unavailable => "PROBLEM: ",
        };
        format!("{}: {mark}{}", self.at, self.text)
    }

    /// A problem `check-config --online` fails on.
    pub fn is_problem(&self) -> bool {
        matches!(self.grade, Grade::Mismatch | Grade::Unavailable)
    }
}

/// Every finding, in the order `check-config --online` prints them.
pub(super) async fn run(r: &Resolved, store: bool) -> Result<Vec<Finding>, String> {
    let mut out = Vec::new();
    let mut local: Vec<&ChainSpec> = Vec::new();
    let seller = r.inbound.seller().map(|s| &s.settlement);
    let service = r.facilitator.iter().flat_map(|f| f.chains.iter());
    for spec in seller.iter().flat_map(|s| s.local.iter()).chain(service) {
        if !local.iter().any(|c| c.network == spec.network) {
            local.push(spec);
        }
    }
    for spec in local {
        let network = &spec.network;
        let chain = Chain::from_spec(spec, None).map_err(|e| format!("{network}: {e}"))?;
        if !chain_id(&chain, network, &spec.rpc_url, spec.chain_id, &mut out).await {
            continue;
        }
        match chain.read_gas().await {
            Ok(read) => {
                let enough = read.iter().any(|g| g.enough());
                for g in &read {
                    let grade = match (g.enough(), enough) {
                        (true, _) => Grade::Ok,
                        (false, true) => Grade::Warning,
                        (false, false) => Grade::Unavailable,
                    };
                    out.push(Finding::new(grade, Subject::Gas, network, g.describe()));
                }
            }
            Err(e) => out.push(Finding::new(Grade::Unavailable, Subject::Gas, network, e)),
        }
        match chain.check_batcher().await {
            Some(Ok(at)) => out.push(Finding::new(
                Grade::Ok,
                Subject::Batch,
                network,
                format!("batching contract {at} answers aggregate3"),
            )),
            Some(Err(e)) => out.push(Finding::new(Grade::Unavailable, Subject::Batch, network, e)),
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
            .map_err(|e| format!("{}: {e}", f.network))?;
        chain_id(&chain, &f.network, &f.rpc_url, f.chain_id, &mut out).await;
    }
    check_tokens(r, &mut out).await;
    if store {
        match crate::store::reachable(&r.store, Duration::from_secs(2)).await {
            Ok(()) => out.push(Finding::new(
                Grade::Ok,
                Subject::Store,
                "store",
                format!("{} answers", r.store),
            )),
            Err(e) => out.push(Finding::new(Grade::Unavailable, Subject::Store, "store", e)),
        }
    }
    Ok(out)
}

/// The RPC's chain id against the configuration's; true when it matched.
async fn chain_id(
    chain: &Chain,
    network: &str,
    rpc_url: &str,
    expected: u64,
    out: &mut Vec<Finding>,
) -> bool {
    let rpc = redact_url(rpc_url);
    let (grade, text) = match chain.check_chain_id().await {
        Ok(()) => (
            Grade::Ok,
            format!("RPC {rpc} answers with chain id {expected}"),
        ),
        Err(e @ ChainError::WrongChain { .. }) => (
            Grade::Mismatch,
            format!("RPC {rpc}: {e}: point the RPC at {network}, or fix the network"),
        ),
        Err(e) => (Grade::Unavailable, format!("RPC {rpc}: {e}")),
    };
    let ok = grade == Grade::Ok;
    out.push(Finding::new(grade, Subject::Chain, network, text));
    ok
}

/// Each paid route's token, read on the RPC of its network's facilitator: a contract, with the
/// configured decimals and EIP-712 domain, not the payTo.
async fn check_tokens(r: &Resolved, out: &mut Vec<Finding>) {
    let Some(seller) = r.inbound.seller() else {
        return;
    };
    let s = &seller.settlement;
    let rpc_of = |chain_id: u64| -> Option<(String, Duration, RpcOptions)> {
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
    for (i, route) in seller.routes.iter().enumerate() {
        for (j, o) in route.offers.iter().enumerate() {
            let at = format!("inbound.routes[{i}].accepts[{j}]");
            let Some((url, receipt, rpc)) = rpc_of(o.chain_id) else {
                continue;
            };
            let chain = match Chain::read_only_with(&url, o.chain_id, receipt, rpc) {
                Ok(chain) => chain,
                Err(e) => {
                    out.push(Finding::new(
                        Grade::Unavailable,
                        Subject::Token,
                        at,
                        e.to_string(),
                    ));
                    continue;
                }
            };
            // A token is judged only on the chain it belongs to: on another chain, the
            // chain id finding already says what is wrong.
            if chain.check_chain_id().await.is_err() {
                out.push(Finding::new(
                    Grade::Unavailable,
                    Subject::Token,
                    at,
                    format!(
                        "the token {} was not checked: the RPC {} is not (or not reachably) {}",
                        o.asset,
                        redact_url(&url),
                        o.network
                    ),
                ));
                continue;
            }
            match chain.token_facts(o.asset).await {
                Ok(facts) => {
                    let found = check_token(o, &facts);
                    if found.is_empty() {
                        out.push(Finding::new(
                            Grade::Ok,
                            Subject::Token,
                            at.clone(),
                            format!(
                                "token {} on {} has {} decimals and the EIP-712 domain {}/{}, as configured",
                                o.asset, o.network, o.decimals, o.eip712_name, o.eip712_version
                            ),
                        ));
                    }
                    for p in found {
                        out.push(Finding::new(Grade::Mismatch, Subject::Token, at.clone(), p));
                    }
                }
                Err(e) => out.push(Finding::new(
                    Grade::Unavailable,
                    Subject::Token,
                    at,
                    format!(
                        "the token {} could not be read on {}: {e}",
                        o.asset,
                        redact_url(&url)
                    ),
                )),
            }
        }
    }
}

/// The preflight at start: `Err` with every mismatch (the sentences of `check-config
/// --online`) when the configuration disagrees with the chain; otherwise the chain and token
/// checks that could not be made (empty: all made), each logged.
pub(super) async fn at_start(r: &Resolved, within: Duration) -> Result<Vec<String>, String> {
    let found = match tokio::time::timeout(within, run(r, false)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let why = format!(
                "the preflight on chain did not finish within {} ms; it is repeated in the background",
                within.as_millis()
            );
            tracing::warn!("{why}");
            return Ok(vec![why]);
        }
    };
    let mismatches: Vec<String> = found
        .iter()
        .filter(|f| f.grade == Grade::Mismatch)
        .map(Finding::line)
        .collect();
    if !mismatches.is_empty() {
        return Err(format!(
            "the configuration disagrees with the chain, so the sidecar does not start (check-config --online says the same):\n  - {}",
            mismatches.join("\n  - ")
        ));
    }
    let mut pending = Vec::new();
    for f in &found {
        match (f.grade, f.subject) {
            (Grade::Unavailable, Subject::Chain | Subject::Token) => {
                tracing::error!(check = %f.at, "preflight: {}", f.text);
                pending.push(f.line());
            }
            (Grade::Unavailable | Grade::Warning, _) => {
                tracing::warn!(check = %f.at, "preflight: {}", f.text)
            }
            _ => {}
        }
    }
    if pending.is_empty() {
        tracing::info!(checks = found.len(), "preflight on chain passed");
    }
    Ok(pending)
}

/// The chain and token checks repeated after a start that could not make them all: after
/// 2 s, then twice as long each time up to `every`, until they pass; the `preflight` check of `/readyz` follows (a mismatch found
/// now cannot stop a running sidecar, so it keeps `settle` false with its sentence).
pub(super) struct Repeat {
    pub resolved: Resolved,
    pub flag: std::sync::Arc<crate::telemetry::Flag>,
    pub every: Duration,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Repeat {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let mut wait = Duration::from_secs(2).min(self.every);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            wait = (wait * 2).min(self.every);
            let found = match tokio::time::timeout(self.every, run(&self.resolved, false)).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    self.flag.set(false, e);
                    continue;
                }
                Err(_) => continue,
            };
            let open: Vec<&Finding> = found
                .iter()
                .filter(|f| f.is_problem() && matches!(f.subject, Subject::Chain | Subject::Token))
                .collect();
            let mismatches: Vec<String> = open
                .iter()
                .filter(|f| f.grade == Grade::Mismatch)
                .map(|f| f.line())
                .collect();
            if !mismatches.is_empty() {
                let why = format!(
                    "the configuration disagrees with the chain; fix it and restart: {}",
                    mismatches.join("; ")
                );
                tracing::error!("preflight: {why}");
                self.flag.set(false, why);
                continue;
            }
            if open.is_empty() {
                tracing::info!("preflight on chain passed");
                self.flag
                    .set(true, "the chain and token checks passed".into());
                return;
            }
            let lines: Vec<String> = open.iter().map(|f| f.line()).collect();
            self.flag
                .set(false, format!("not yet made: {}", lines.join("; ")));
        }
    }
}
