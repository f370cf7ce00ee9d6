//! A chain this sidecar settles on with its own key (`kind: local` under `facilitators:`),
//! resolved: the key is loaded once at check time, so a missing or refused key is reported
//! before anything is served. The YAML section itself belongs to the seller's configuration.

use std::time::Duration;

use alloy_primitives::Address;

use super::chain::Chain;
use super::keys::KeySource;

/// A chain ready to connect, with a settler key known to load.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// CAIP-2, e.g. `eip155:84532`.
    pub network: String,
    pub chain_id: u64,
    pub rpc_url: String,
    pub settler: KeySource,
    pub settler_address: Address,
    pub receipt_timeout: Duration,
}

impl ChainSpec {
    /// Load the settler key (refused off the devnet if it is a public development key).
    /// The error is a sentence about the key, without the key.
    pub(crate) fn load(
        network: &str,
        chain_id: u64,
        rpc_url: &str,
        settler: &KeySource,
        receipt_timeout: Duration,
    ) -> Result<Self, String> {
        if !settler.is_configured() {
            return Err("no settler key: set `key_env` (environment variable with the key) or `keystore` (encrypted file)".into());
        }
        let signer = settler.load(chain_id).map_err(|e| e.to_string())?;
        Ok(ChainSpec {
            network: network.to_string(),
            chain_id,
            rpc_url: rpc_url.to_string(),
            settler: settler.clone(),
            settler_address: signer.address(),
            receipt_timeout,
        })
    }
}

impl Chain {
    /// The chain of a [`ChainSpec`], with its settler key loaded (no I/O yet).
    pub(crate) fn from_spec(spec: &ChainSpec) -> Result<Self, String> {
        let signer = spec
            .settler
            .load(spec.chain_id)
            .map_err(|e| e.to_string())?;
        Chain::new(&spec.rpc_url, spec.chain_id, signer, spec.receipt_timeout)
            .map_err(|e| e.to_string())
    }
}
