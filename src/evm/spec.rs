//! A chain this sidecar settles on with its own keys (`kind: local` under `facilitators:`),
//! resolved: the keys are loaded once at check time, so a missing or refused key is reported
//! before anything is served. The YAML section itself belongs to the seller's configuration.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;

use super::batch::BatchOptions;
use super::chain::Chain;
use super::keys::KeySource;
use super::nonce::NonceLeases;
use super::rpc::RpcOptions;

/// A chain ready to connect, with settler keys known to load.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// CAIP-2, e.g. `eip155:84532`.
    pub network: String,
    pub chain_id: u64,
    pub rpc_url: String,
    /// The key pool, at least one (used round robin, each with its own nonce).
    pub settlers: Vec<KeySource>,
    /// Their addresses, in the same order.
    pub settler_addresses: Vec<Address>,
    /// The first key's address (what `extra.facilitator` names).
    pub settler_address: Address,
    pub receipt_timeout: Duration,
    pub rpc: RpcOptions,
    /// Each key should hold gas for this many settlements (0: no floor).
    pub gas_floor_settlements: u64,
    /// A settlement not mined within this is replaced with higher fees (zero: never).
    pub replace_after: Duration,
    /// Batched settlement (off: `None`).
    pub batch: Option<BatchOptions>,
}

impl ChainSpec {
    /// Load the settler keys (refused off the devnet if one is a public development key, or
    /// if one appears twice). The error is a sentence about the key, without the key.
    pub(crate) fn load(
        network: &str,
        chain_id: u64,
        rpc_url: &str,
        settlers: &[KeySource],
        receipt_timeout: Duration,
    ) -> Result<Self, String> {
        if settlers.is_empty() || settlers.iter().any(|s| !s.is_configured()) {
            return Err("no settler key: set `key_env` (environment variable with the key) or `keystore` (encrypted file)".into());
        }
        let mut addresses: Vec<Address> = Vec::with_capacity(settlers.len());
        for (i, s) in settlers.iter().enumerate() {
            let signer = s.load(chain_id).map_err(|e| match settlers.len() {
                1 => e.to_string(),
                _ => format!("key {i} of the pool: {e}"),
            })?;
            if addresses.contains(&signer.address()) {
                return Err(format!(
                    "the pool holds the key of {} twice: each key has one nonce, list it once",
                    signer.address()
                ));
            }
            addresses.push(signer.address());
        }
        Ok(ChainSpec {
            network: network.to_string(),
            chain_id,
            rpc_url: rpc_url.to_string(),
            settlers: settlers.to_vec(),
            settler_address: addresses[0],
            settler_addresses: addresses,
            receipt_timeout,
            rpc: RpcOptions::default(),
            gas_floor_settlements: 0,
            replace_after: Duration::ZERO,
            batch: None,
        })
    }
}

impl Chain {
    /// The chain of a [`ChainSpec`], with its settler keys loaded (no I/O yet), their nonces
    /// shared with other replicas through `leases` when given.
    pub(crate) fn from_spec(
        spec: &ChainSpec,
        leases: Option<Arc<dyn NonceLeases>>,
    ) -> Result<Self, String> {
        let chain = Chain::unbatched(spec, leases.clone())?;
        match spec.batch {
            Some(opts) => Ok(chain.with_batch(Chain::unbatched(spec, leases)?, opts)),
            None => Ok(chain),
        }
    }

    /// The chain of a [`ChainSpec`], ignoring its batching.
    fn unbatched(spec: &ChainSpec, leases: Option<Arc<dyn NonceLeases>>) -> Result<Self, String> {
        let signers = spec
            .settlers
            .iter()
            .map(|s| s.load(spec.chain_id).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain::pool(
            &spec.rpc_url,
            spec.chain_id,
            signers,
            spec.receipt_timeout,
            spec.rpc,
        )
        .map_err(|e| e.to_string())?
        .with_leases(leases)
        .with_gas_floor(spec.gas_floor_settlements)
        .with_replace_after(Some(spec.replace_after)))
    }
}
