//! The official x402 SDKs as peers (pinned: the Python SDK in `.venv-interop`, made by
//! `scripts/setup-interop.sh`; the TypeScript SDK in `tests/interop/js`, `npm ci`): an official
//! FastAPI seller, an official express seller and the official Python facilitator, started as
//! child processes. Shared by the interop suite (tests/interop.rs) and the load harness, which
//! measures the sellers' 402 path beside ours in the same run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_primitives::Address;

use super::spawn::{Launch, Sidecar, SpawnError, free_port};

/// Where the peers find the key they sign with (the facilitator's settler key).
pub const PEER_KEY_ENV: &str = "X402_PEER_KEY";

fn port() -> Result<u16, SpawnError> {
    free_port().map_err(|source| SpawnError::Io {
        what: "a free port for an official peer".into(),
        source,
    })
}

/// The installed peers of this checkout.
pub struct OfficialPeers {
    /// The interpreter of `.venv-interop`.
    pub python: PathBuf,
    /// `tests/interop/x402_peer.py`: client, facilitator and seller modes.
    pub script: PathBuf,
    /// `tests/interop/js`: `client.mjs`, `seller.mjs` and their node_modules.
    pub js: PathBuf,
}

impl OfficialPeers {
    /// The peers of the checkout at `root`, or what is missing (a sentence naming the command
    /// that installs it).
    pub fn find(root: &Path) -> Result<OfficialPeers, String> {
        let peers = OfficialPeers {
            python: root.join(".venv-interop/bin/python"),
            script: root.join("tests/interop/x402_peer.py"),
            js: root.join("tests/interop/js"),
        };
        if !peers.python.exists() {
            Err("the official Python SDK (.venv-interop): run scripts/setup-interop.sh".into())
        } else if !peers.js.join("node_modules/@x402/express").exists() {
            Err(
                "the official TypeScript SDK (tests/interop/js/node_modules): run npm ci there"
                    .into(),
            )
        } else {
            Ok(peers)
        }
    }

    /// The official Python facilitator, served over HTTP, settling with `key`.
    pub async fn python_facilitator(
        &self,
        dir: &Path,
        rpc_url: &str,
        key: &str,
    ) -> Result<Sidecar, SpawnError> {
        let port = port()?;
        let launch = Launch::new(&self.python, dir, "official-facilitator")
            .env(PEER_KEY_ENV, key)
            .wait(Duration::from_secs(30));
        let (script, port_arg) = (self.script.to_string_lossy(), port.to_string());
        let args = [
            &*script,
            "facilitator",
            "--port",
            &port_arg,
            "--rpc-url",
            rpc_url,
        ];
        launch.command(&args, port).await
    }

    /// An official FastAPI seller (`payment_middleware`, one uvicorn worker) of `POST /x402`
    /// at $0.01 to `pay_to`, verified and settled by the facilitator at `facilitator`.
    pub async fn python_seller(
        &self,
        dir: &Path,
        facilitator: &str,
        pay_to: Address,
    ) -> Result<Sidecar, SpawnError> {
        let script = self.script.to_string_lossy().into_owned();
        let launch = Launch::new(&self.python, dir, "official-python-seller");
        seller(launch, &[&script, "seller"], facilitator, pay_to).await
    }

    /// An official express seller (`@x402/express`) of the same route.
    pub async fn express_seller(
        &self,
        dir: &Path,
        facilitator: &str,
        pay_to: Address,
    ) -> Result<Sidecar, SpawnError> {
        let script = self.js.join("seller.mjs").to_string_lossy().into_owned();
        let launch = Launch::new("node", dir, "official-express-seller");
        seller(launch, &[&script], facilitator, pay_to).await
    }
}

/// Start a seller peer: `command` then its port, facilitator and `pay_to`.
async fn seller(
    launch: Launch,
    command: &[&str],
    facilitator: &str,
    pay_to: Address,
) -> Result<Sidecar, SpawnError> {
    let port = port()?;
    let (port_arg, pay_to) = (port.to_string(), pay_to.to_checksum(None));
    let mut args = command.to_vec();
    args.extend([
        "--port",
        &port_arg,
        "--facilitator-url",
        facilitator,
        "--pay-to",
        &pay_to,
    ]);
    launch
        .wait(Duration::from_secs(30))
        .command(&args, port)
        .await
}
