//! `pay` and `sign`: the buyer client for scripts and tests. `pay` runs one whole exchange
//! (POST, read the 402, sign one EIP-3009 authorization, send it again); `sign` prints the
//! payment header for a 402 a curl script already holds.

use std::path::PathBuf;

use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;

use super::{Failure, Outcome, failed, pretty};
use crate::buyer::client;
use crate::x402;

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
) -> Outcome {
    let signer = buyer_key(&key_env)?;
    let body = std::fs::read(&body)
        .map(Bytes::from)
        .map_err(failed(&format!("cannot read {}", body.display())))?;
    let limit = max_amount
        .map(|m| x402::money::parse_price(&m, 6))
        .transpose()
        .map_err(failed("--max-amount"))?;
    let http = reqwest::Client::new();
    println!("buyer {}", signer.address());
    let paid = client::pay(&http, &url, body, &signer, v1, limit, |s| println!("→ {s}"))
        .await
        .map_err(failed(""))?;
    println!("← {} {}", paid.status, pretty(&paid.body));
    if (200..300).contains(&paid.status) {
        Ok(())
    } else {
        Err(Failure::reported())
    }
}

pub(super) fn sign(
    challenge: Option<String>,
    body_file: Option<PathBuf>,
    key_env: &str,
    v1: bool,
) -> Outcome {
    let signer = buyer_key(key_env)?;
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
    let (name, value, auth) = client::payment_for(&signer, &offer).map_err(failed(""))?;
    eprintln!(
        "signed: {} atomic units to {} on {}, nonce {}, valid until {}",
        auth.value, auth.to, offer.requirement.network, auth.nonce, auth.valid_before
    );
    println!("{name}: {value}");
    Ok(())
}
