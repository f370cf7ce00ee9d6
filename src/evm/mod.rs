//! EVM side of the `exact` scheme: EIP-3009 typed data and signature recovery (pure), keys
//! (env var or encrypted keystore, devnet keys refused off the devnet), chain reads for
//! verification, and the settler that submits `transferWithAuthorization` (a key pool, nonces
//! shared safely between replicas, RPC deadlines, gas against a floor).

pub mod batch;
pub mod chain;
pub mod keys;
pub mod nonce;
pub mod observe;
pub mod preflight;
pub mod rpc;
pub mod settler;
pub mod spec;
pub mod typed;

pub use batch::{BatchOptions, MULTICALL3};
pub use chain::{Chain, ChainError, Fate, SettleOutcome, connect};
pub use keys::{KeyError, KeySource};
pub use nonce::NonceLeases;
pub use rpc::RpcOptions;
pub use settler::SettlerGas;
pub use spec::ChainSpec;
