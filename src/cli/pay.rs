//! `pay` and `sign`: the buyer client for scripts and tests. `pay` runs one whole exchange
//! (POST, read the 402, sign one EIP-3009 authorization, send it again); `sign` prints the
//! payment header for a 402 a curl script already holds.

use std::path::PathBuf;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;

use super::{Failure, Outcome, failed, pretty};
use crate::buyer::client;
use crate::evm::{Chain, Fate, SettleOutcome};
use crate::x402;

/// What `pay` and `sign` pay at most unless `--max-amount` says otherwise.
pub(super) const DEFAULT_MAX_AMOUNT: &str = "$0.10";

/// The spend cap in atomic units (6 decimals): `--max-amount`, else [`DEFAULT_MAX_AMOUNT`].
fn cap(max_amount: Option<&str>) -> Result<U256, Failure> {
    x402::money::parse_price(max_amount.unwrap_or(DEFAULT_MAX_AMOUNT), 6)
        .map_err(failed("--max-amount"))
}

/// The buyer's key from an environment variable, never from an argument.
fn buyer_key(var: &str) -> Result<PrivateKeySigner, Failure> {
    let raw = std::env::var(var).map_err(|_| {
        Failure::new(format!(
            "environment variable {var} is not set (it must hold the buyer's private key)"
        ))
    })?;
    raw.trim().parse().map_err(|_| {
        Failure::new(format!(
            "environment variable {var} does not hold a 32-byte hex private key"
        ))
    })
}

pub(super) async fn pay(
    url: String,
    body: PathBuf,
    key_env: String,
    max_amount: Option<String>,
    v1: bool,
    rpc: Option<String>,
) -> Outcome {
    let signer = buyer_key(&key_env)?;
    let body = std::fs::read(&body)
        .map(Bytes::from)
        .map_err(failed(&format!("cannot read {}", body.display())))?;
    let limit = cap(max_amount.as_deref())?;
    let http = reqwest::Client::new();
    println!("buyer {}", signer.address());
    let paid = client::pay(&http, &url, body, &signer, v1, Some(limit), |s| {
        println!("→ {s}")
    })
    .await
    .map_err(failed(""))?;
    if let (Some(rpc), Some(quote), Some(auth)) = (&rpc, &paid.quote, &paid.auth) {
        println!("→ on chain: {}", on_chain(rpc, quote, auth).await);
    }
    println!("← {} {}", paid.status, pretty(&paid.body));
    if (200..300).contains(&paid.status) {
        Ok(())
    } else {
        Err(Failure::reported())
    }
}

/// What the chain says of the authorization `pay` sent: charged (in which transaction), not
/// used (and until when it may be), or why it cannot be read.
async fn on_chain(rpc: &str, quote: &client::Quote, auth: &x402::types::Authorization) -> String {
    let Some(chain_id) = x402::networks::chain_id(&quote.requirement.network) else {
        return format!("{} is not an EVM network", quote.requirement.network);
    };
    let chain = match Chain::read_only(rpc, chain_id, std::time::Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return format!("--rpc: {e}"),
    };
    match chain.fate(quote.requirement.asset, auth).await {
        Ok(Fate::Used {
            outcome: SettleOutcome::Settled { tx },
            ..
        }) => format!(
            "charged: {} atomic units moved to {} in transaction {tx:#x}",
            auth.value, auth.to
        ),
        Ok(Fate::Used { tx, .. }) => {
            format!(
                "the authorization was used by transaction {tx:#x}, without the expected transfer"
            )
        }
        Ok(Fate::Canceled { .. }) => "the authorization was cancelled: nothing was paid".into(),
        Ok(Fate::Unused) => format!(
            "not charged (yet): the authorization is unused; it stays usable until {}",
            crate::util::rfc3339(u64::try_from(auth.valid_before).unwrap_or(u64::MAX))
        ),
        Err(e) => format!("the chain could not be read: {e}"),
    }
}

pub(super) fn sign(
    challenge: Option<String>,
    body_file: Option<PathBuf>,
    key_env: &str,
    v1: bool,
    max_amount: Option<String>,
) -> Outcome {
    let signer = buyer_key(key_env)?;
    let limit = cap(max_amount.as_deref())?;
    if challenge.is_none() && body_file.is_none() {
        return Err(Failure::usage(
            "give --challenge (PAYMENT-REQUIRED header value) or --body-file (402 JSON body)",
        ));
    }
    let body = match &body_file {
        Some(f) => std::fs::read(f).map_err(failed(&format!("cannot read {}", f.display())))?,
        None => Vec::new(),
    };
    let offer = client::parse_challenge(challenge.as_deref(), &body, v1 || challenge.is_none())
        .map_err(failed(""))?;
    if offer.requirement.amount > limit {
        return Err(failed("")(client::PayError::TooExpensive {
            price: offer.requirement.amount,
            limit,
        }));
    }
    let (name, value, auth) = client::payment_for(&signer, &offer).map_err(failed(""))?;
    eprintln!(
        "signed: {} atomic units to {} on {}, nonce {}, valid until {}",
        auth.value, auth.to, offer.requirement.network, auth.nonce, auth.valid_before
    );
    println!("{name}: {value}");
    Ok(())
}
