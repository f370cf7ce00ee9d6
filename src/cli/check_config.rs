//! `check-config`: resolve the configuration and summarise what every section will do; with
//! `--online`, also ask each chain's RPC (chain id, each settler key's gas against its floor, and
//! each paid route's token: a contract, its decimals and its EIP-712 domain).

use std::path::Path;

use super::{Failure, Outcome, block_on, preflight, resolve};
use crate::config::Resolved;

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

/// Each chain's RPC answers with the configured chain id, each chain settled here has a
/// settler key holding gas for its floor (`gas_floor_settlements`), each paid route's token is
/// as configured, and the store answers: what `run` checks at start and `/readyz` says.
async fn check_online(r: &Resolved) -> Outcome {
    let found = preflight::run(r, true).await.map_err(Failure::new)?;
    println!("  online:");
    for f in &found {
        println!("    {}", f.line());
    }
    let problems = found.iter().filter(|f| f.is_problem()).count();
    if problems > 0 {
        return Err(Failure::new(format!(
            "{problems} problem(s) found online; /readyz would not be ready to settle"
        )));
    }
    Ok(())
}
