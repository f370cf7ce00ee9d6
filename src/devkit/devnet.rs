//! The local devnet behind `make demo` and the integration tests: anvil (from the npm package
//! `@foundry-rs/anvil-linux-amd64`, installed under `devnet/`) on a free loopback port with
//! chain id 84532, the project's own EIP-3009 token (`devnet/contracts/TestUSDC.sol`, compiled
//! artifact embedded in the binary) placed at Base Sepolia's USDC address, and funded buyers.
//! anvil is stopped when the [`Devnet`] is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes, U256, address};
use alloy_provider::ext::AnvilApi;
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};

use super::spawn::free_port;
use crate::evm::keys::DEV_KEYS;
use crate::evm::typed::IEip3009Token as Token;

/// Chain id of the devnet: Base Sepolia's, so configurations read like the real testnet's.
pub const CHAIN_ID: u64 = 84532;
/// CAIP-2 id of the devnet.
pub const NETWORK: &str = "eip155:84532";
/// Where the token lives: Base Sepolia's USDC address.
pub const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// USDC has 6 decimals: one dollar.
pub const ONE_USDC: u64 = 1_000_000;

const ARTIFACT: &str = include_str!("../../devnet/artifacts/TestUSDC.json");
const BATCHER_ARTIFACT: &str = include_str!("../../devnet/artifacts/Batcher.json");
/// Where the devnet's batching contract lives (the project's own `Batcher`, Multicall3's
/// `aggregate3` ABI): Multicall3's canonical address, so batching is configured alike on the
/// devnet and on public chains.
pub const BATCHER: Address = crate::evm::MULTICALL3;
const ANVIL_REL: &str = "devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error(
        "anvil not found: run `make devnet` (npm ci in devnet/) or set X402_ANVIL to the anvil binary"
    )]
    NoAnvil,
    #[error("anvil did not start: {0}")]
    Start(String),
    #[error("devnet RPC failed: {0}")]
    Rpc(String),
}

fn rpc<E: std::fmt::Display>(e: E) -> DevnetError {
    DevnetError::Rpc(e.to_string())
}

/// One token `Transfer` log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub from: Address,
    pub value: U256,
    /// The transaction that made it.
    pub tx: B256,
}

/// A running devnet. Dropping it stops anvil.
pub struct Devnet {
    child: Child,
    pub rpc_url: String,
    /// Token owner (mints): anvil account 0.
    pub owner: PrivateKeySigner,
    /// Settler (pays gas for settlements): anvil account 1.
    pub settler: PrivateKeySigner,
    /// Seller's receiving address: anvil account 9.
    pub pay_to: Address,
    provider: DynProvider,
}

/// Find the anvil binary: `X402_ANVIL`, else `devnet/node_modules/…` in this directory or a parent.
pub fn anvil_path() -> Result<PathBuf, DevnetError> {
    if let Ok(p) = std::env::var("X402_ANVIL") {
        return Ok(PathBuf::from(p));
    }
    let mut dir = std::env::current_dir().ok();
    while let Some(d) = dir {
        let candidate = d.join(ANVIL_REL);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(PathBuf::from);
    }
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(ANVIL_REL);
    if built_in.is_file() {
        Ok(built_in)
    } else {
        Err(DevnetError::NoAnvil)
    }
}

/// The token's runtime bytecode from the committed artifact.
pub fn token_runtime_code() -> Result<Bytes, DevnetError> {
    runtime_code(ARTIFACT)
}

/// The batching contract's runtime bytecode from the committed artifact.
pub fn batcher_runtime_code() -> Result<Bytes, DevnetError> {
    runtime_code(BATCHER_ARTIFACT)
}

fn runtime_code(artifact: &str) -> Result<Bytes, DevnetError> {
    let v: serde_json::Value =
        serde_json::from_str(artifact).map_err(|e| DevnetError::Start(e.to_string()))?;
    v["deployedBytecode"]
        .as_str()
        .and_then(|s| s.parse::<Bytes>().ok())
        .ok_or_else(|| DevnetError::Start("artifact has no deployedBytecode".into()))
}

fn dev_signer(i: usize) -> PrivateKeySigner {
    // The ten keys are constants that parse; index is always < 10 here.
    DEV_KEYS[i % DEV_KEYS.len()]
        .parse()
        .unwrap_or_else(|_| PrivateKeySigner::random())
}

impl Devnet {
    /// Start anvil, place the token (account 0 its owner) and the batching contract.
    pub async fn start() -> Result<Devnet, DevnetError> {
        let anvil = anvil_path()?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|e| DevnetError::Start(e.to_string()))?;
            let child = Command::new(&anvil)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--chain-id",
                    &CHAIN_ID.to_string(),
                    "--silent",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| DevnetError::Start(format!("{}: {e}", anvil.display())))?;
            let rpc_url = format!("http://127.0.0.1:{port}");
            let owner = dev_signer(0);
            let url = rpc_url
                .parse()
                .map_err(|_| DevnetError::Start(rpc_url.clone()))?;
            let provider = ProviderBuilder::new()
                .wallet(EthereumWallet::from(owner.clone()))
                .connect_http(url)
                .erased();
            let mut net = Devnet {
                child,
                rpc_url,
                owner,
                settler: dev_signer(1),
                pay_to: dev_signer(9).address(),
                provider,
            };
            match net.wait_ready().await {
                Ok(()) => {
                    net.place_token().await?;
                    return Ok(net);
                }
                Err(e) => last = e.to_string(), // port taken in the meantime: try another
            }
        }
        Err(DevnetError::Start(last))
    }

    async fn wait_ready(&mut self) -> Result<(), DevnetError> {
        for _ in 0..200 {
            if let Ok(id) = self.provider.get_chain_id().await {
                return if id == CHAIN_ID {
                    Ok(())
                } else {
                    Err(DevnetError::Start(format!("chain id {id}")))
                };
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(DevnetError::Start(format!("anvil exited: {status}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(DevnetError::Start(
            "anvil did not answer within 10 s".into(),
        ))
    }

    async fn place_token(&self) -> Result<(), DevnetError> {
        self.provider
            .anvil_set_code(USDC, token_runtime_code()?)
            .await
            .map_err(rpc)?;
        let owner_word = B256::left_padding_from(self.owner.address().as_slice());
        self.provider
            .anvil_set_storage_at(USDC, U256::ZERO, owner_word)
            .await
            .map_err(rpc)?;
        self.provider
            .anvil_set_code(BATCHER, batcher_runtime_code()?)
            .await
            .map_err(rpc)?;
        Ok(())
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Mint `amount` atomic units of the token to `to` (a real owner transaction).
    pub async fn mint(&self, to: Address, amount: U256) -> Result<(), DevnetError> {
        token_tx(
            &self.provider,
            Token::mintCall { to, amount }.abi_encode(),
            "mint",
        )
        .await
    }

    /// A fresh buyer holding `amount` atomic units (and no ETH: x402 buyers need no gas).
    pub async fn new_buyer(&self, amount: U256) -> Result<PrivateKeySigner, DevnetError> {
        let buyer = PrivateKeySigner::random();
        self.mint(buyer.address(), amount).await?;
        Ok(buyer)
    }

    /// Token balance of `who`.
    pub async fn balance(&self, who: Address) -> Result<U256, DevnetError> {
        let tx = TransactionRequest::default()
            .with_to(USDC)
            .with_input(Token::balanceOfCall { account: who }.abi_encode());
        let out = self.provider.call(tx).await.map_err(rpc)?;
        Token::balanceOfCall::abi_decode_returns(&out).map_err(rpc)
    }

    /// Every token `Transfer` to `to` so far, oldest first.
    pub async fn transfers_to(&self, to: Address) -> Result<Vec<Transfer>, DevnetError> {
        let filter = Filter::new()
            .address(USDC)
            .event_signature(Token::Transfer::SIGNATURE_HASH)
            .from_block(0u64);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc)?;
        Ok(logs
            .iter()
            .filter_map(|l| {
                let t = Token::Transfer::decode_log_data(l.data()).ok()?;
                (t.to == to).then_some(Transfer {
                    from: t.from,
                    value: t.value,
                    tx: l.transaction_hash.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Send the whole token balance of `from` to `to` with a plain ERC-20 transfer (gives it gas first).
    pub async fn drain(&self, from: &PrivateKeySigner, to: Address) -> Result<(), DevnetError> {
        self.provider
            .anvil_set_balance(from.address(), U256::from(10u64).pow(U256::from(18)))
            .await
            .map_err(rpc)?;
        let value = self.balance(from.address()).await?;
        let url = self
            .rpc_url
            .parse()
            .map_err(|_| DevnetError::Rpc("url".into()))?;
        let p = ProviderBuilder::new()
            .wallet(EthereumWallet::from(from.clone()))
            .connect_http(url);
        token_tx(
            &p,
            Token::transferCall { to, value }.abi_encode(),
            "transfer",
        )
        .await
    }

    /// The settler's key as hex, for a child process's environment (devnet only).
    pub fn settler_key_hex(&self) -> String {
        DEV_KEYS[1].to_string()
    }
}

/// Send a call to the token from the provider's wallet and require it to succeed.
async fn token_tx(p: &impl Provider, input: Vec<u8>, what: &str) -> Result<(), DevnetError> {
    let tx = TransactionRequest::default()
        .with_to(USDC)
        .with_input(input);
    let r = p
        .send_transaction(tx)
        .await
        .map_err(rpc)?
        .get_receipt()
        .await
        .map_err(rpc)?;
    if r.status() {
        Ok(())
    } else {
        Err(DevnetError::Rpc(format!("{what} reverted")))
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
