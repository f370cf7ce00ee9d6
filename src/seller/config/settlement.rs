//! The `facilitators:` section: who verifies and settles payments on each network.
//!
//! Where it lives: the seller is the one part that uses all of it (`kind: local` and
//! `kind: http` alike), so the section's serde type and its checks are the seller's. The
//! facilitator service also settles with the `kind: local` entries, but a role never imports
//! another, so it is handed those entries already resolved, as [`ChainSpec`]s (a lower
//! part), by the aggregate configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::evm::batch::MAX_ITEMS as MAX_BATCH_ITEMS;
use crate::evm::{BatchOptions, ChainSpec, KeySource, MULTICALL3, RpcOptions};
use crate::util::{Problem, Secret, redact_url};
use crate::x402::networks;

/// One entry of `facilitators:` as written: the settlement backend of one network, `local`
/// (this sidecar, on chain, with its settler key) or `http` (a remote facilitator:
/// `POST {url}/verify`, `POST {url}/settle`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub network: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The chain's RPC. `http` kind: read only, to check what the facilitator reports and to
    /// reconcile a settlement whose answer was lost.
    pub rpc_url: String,
    /// `local` kind: settler key (pays gas): `key_env` or `keystore` + `password_env`/`password_file`.
    #[serde(default)]
    pub settler: KeySource,
    /// `local` kind: a pool of settler keys instead of one (used round robin, each with its
    /// own nonce): the recommended set-up under load or with replicas.
    #[serde(default)]
    pub settlers: Vec<KeySource>,
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_ms: u64,
    /// Longest wait for one RPC answer (connecting included).
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_ms: u64,
    /// `local` kind: `/readyz` is not ready while no settler key holds gas for this many
    /// settlements at today's fee (0: no floor).
    #[serde(default = "default_gas_floor")]
    pub gas_floor_settlements: u64,
    /// `local` kind: a settlement not mined within this is sent again at the same nonce with
    /// higher fees (0: never).
    #[serde(default = "default_replace_after")]
    pub replace_after_ms: u64,
    /// `local` kind: batched settlement (off unless set): the settlements arriving within
    /// `window_ms` (or until `max_items`) go out in one transaction through a Multicall3
    /// `aggregate3` contract.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// `http` kind: the facilitator's base URL (e.g. `https://x402.org/facilitator`).
    #[serde(default)]
    pub url: Option<String>,
    /// `http` kind: extra request headers (e.g. `authorization: Bearer ${FACILITATOR_TOKEN}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `http` kind: longest wait for one `/verify` or `/settle` answer.
    #[serde(default = "default_facilitator_timeout")]
    pub timeout_ms: u64,
}

/// `batch:` of a `kind: local` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// How long the first settlement of a batch waits for others.
    #[serde(default = "default_batch_window")]
    pub window_ms: u64,
    /// A batch leaves as soon as it holds this many settlements.
    #[serde(default = "default_batch_items")]
    pub max_items: usize,
    /// The batching contract (Multicall3's `aggregate3` ABI); the canonical Multicall3
    /// (`0xcA11bde05977b3631167028862bE2a173976CA11`, also where the devnet has its own).
    #[serde(default)]
    pub contract: Option<String>,
}

fn default_batch_window() -> u64 {
    5
}
fn default_batch_items() -> usize {
    32
}

/// The checked `batch:` of entry `at`.
fn batch_options(b: &BatchConfig, mut p: impl FnMut(&str, String)) -> Option<BatchOptions> {
    let mut ok = true;
    if b.window_ms == 0 || b.window_ms > 1_000 {
        p(
            ".batch.window_ms",
            "must be 1 to 1000 (milliseconds a settlement waits for others)".into(),
        );
        ok = false;
    }
    if b.max_items < 2 || b.max_items > MAX_BATCH_ITEMS {
        p(
            ".batch.max_items",
            format!("must be 2 to {MAX_BATCH_ITEMS} (settlements in one transaction)"),
        );
        ok = false;
    }
    let contract = match b.contract.as_deref() {
        None => MULTICALL3,
        Some(c) => match c.parse::<alloy_primitives::Address>() {
            Ok(a) if a != alloy_primitives::Address::ZERO => a,
            _ => {
                p(
                    ".batch.contract",
                    "is not a contract address (0x and 40 hex digits)".into(),
                );
                return None;
            }
        },
    };
    ok.then_some(BatchOptions {
        window: Duration::from_millis(b.window_ms),
        max_items: b.max_items,
        contract,
    })
}

fn default_kind() -> String {
    "local".into()
}
fn default_receipt_timeout() -> u64 {
    30_000
}
fn default_rpc_timeout() -> u64 {
    5_000
}
fn default_gas_floor() -> u64 {
    100
}
fn default_replace_after() -> u64 {
    10_000
}
fn default_facilitator_timeout() -> u64 {
    15_000
}

/// A remote facilitator reached over HTTP (`kind: http`), ready to connect.
#[derive(Clone)]
pub struct RemoteFacilitator {
    pub network: String,
    pub chain_id: u64,
    pub rpc_url: String,
    pub url: reqwest::Url,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub receipt_timeout: Duration,
    /// Deadlines of its read-only RPC.
    pub rpc: RpcOptions,
}

impl std::fmt::Debug for RemoteFacilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFacilitator")
            .field("network", &self.network)
            .field("url", &redact_url(self.url.as_str()))
            .finish()
    }
}

/// The `facilitators:` section, resolved: the settlement backend of each network, ready to
/// connect.
#[derive(Debug, Clone, Default)]
pub struct BackendSpecs {
    /// `kind: local`: this sidecar settles on chain with its settler key.
    pub local: Vec<ChainSpec>,
    /// `kind: http`.
    pub remote: Vec<RemoteFacilitator>,
    /// Every network with an entry, resolved or not: a route on a network whose entry is
    /// wrong is not reported a second time.
    declared: BTreeSet<String>,
    /// Whether any entry (resolved or not) is `kind: local`.
    declares_local: bool,
}

impl BackendSpecs {
    /// Check every entry of `facilitators:` (the `local` ones load their settler key).
    pub(crate) fn resolve(entries: &[BackendConfig], problems: &mut Vec<Problem>) -> BackendSpecs {
        let mut s = BackendSpecs {
            declared: entries.iter().map(|f| f.network.clone()).collect(),
            declares_local: entries.iter().any(|f| f.kind == "local"),
            ..BackendSpecs::default()
        };
        for (i, f) in entries.iter().enumerate() {
            s.add(&format!("facilitators[{i}]"), f, problems);
        }
        s
    }

    /// One entry: the checks both kinds share, then its own kind's.
    fn add(&mut self, at: &str, f: &BackendConfig, problems: &mut Vec<Problem>) {
        let mut p = |field: &str, message: String| problems.push(problem(at, field, message));
        if f.kind != "local" && f.kind != "http" {
            p(
                ".kind",
                "is not a facilitator kind; use `local` or `http`".into(),
            );
            return;
        }
        let Some(chain_id) = networks::chain_id(&f.network) else {
            p(
                ".network",
                "is not a CAIP-2 EVM network like `eip155:84532`".into(),
            );
            return;
        };
        if reqwest::Url::parse(&f.rpc_url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            p(".rpc_url", "is not an http(s) URL".into());
        }
        if self.settled_by(&f.network).is_some() {
            p(
                ".network",
                format!(
                    "a second facilitator for {}; keep one per network",
                    f.network
                ),
            );
        }
        let receipt_timeout = Duration::from_millis(f.receipt_timeout_ms);
        if f.rpc_timeout_ms == 0 {
            p(".rpc_timeout_ms", "must be more than 0".into());
        }
        let rpc = RpcOptions {
            timeout: Duration::from_millis(f.rpc_timeout_ms.max(1)),
        };
        if f.kind == "http" {
            if f.batch.is_some() {
                p(
                    ".batch",
                    "a remote facilitator settles in its own way: batching is for `kind: local`"
                        .into(),
                );
            }
            if let Some(r) = remote(at, f, chain_id, problems) {
                self.remote.push(r);
            }
            return;
        }
        let batch = f.batch.as_ref().map(|b| batch_options(b, &mut p));
        if matches!(batch, Some(None)) {
            return;
        }
        let (field, keys) = match (f.settler.is_configured(), f.settlers.is_empty()) {
            (true, false) => {
                p(
                    ".settlers",
                    "set either `settler` (one key) or `settlers` (a pool), not both".into(),
                );
                return;
            }
            (false, false) => (".settlers", f.settlers.clone()),
            _ => (".settler", vec![f.settler.clone()]),
        };
        match ChainSpec::load(&f.network, chain_id, &f.rpc_url, &keys, receipt_timeout) {
            Ok(mut spec) => {
                spec.rpc = rpc;
                spec.gas_floor_settlements = f.gas_floor_settlements;
                spec.replace_after = Duration::from_millis(f.replace_after_ms);
                spec.batch = batch.flatten();
                self.local.push(spec)
            }
            Err(message) => problems.push(problem(at, field, message)),
        }
    }

    /// Who settles `network`, as announced in a requirement's `extra.facilitator`:
    /// `local:<settler address>`, or the remote facilitator's URL without credentials.
    pub(crate) fn settled_by(&self, network: &str) -> Option<String> {
        let local = self.local.iter().find(|c| c.network == network);
        let remote = self.remote.iter().find(|r| r.network == network);
        match (local, remote) {
            (Some(c), _) => Some(format!("local:{}", c.settler_address)),
            (None, Some(r)) => Some(redact_url(r.url.as_str())),
            (None, None) => None,
        }
    }

    /// Whether `facilitators:` has an entry for `network`, resolved or not.
    pub(crate) fn declares(&self, network: &str) -> bool {
        self.declared.contains(network)
    }

    /// Whether `facilitators:` has a `kind: local` entry, resolved or not.
    pub(crate) fn declares_local(&self) -> bool {
        self.declares_local
    }
}

/// A `kind: http` entry.
fn remote(
    at: &str,
    f: &BackendConfig,
    chain_id: u64,
    problems: &mut Vec<Problem>,
) -> Option<RemoteFacilitator> {
    let mut p = |field: &str, message: String| problems.push(problem(at, field, message));
    let url = match f.url.as_deref().map(reqwest::Url::parse) {
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Some(_) => {
            p(
                ".url",
                "is not an http(s) URL like https://x402.org/facilitator".into(),
            );
            None
        }
        None => {
            p(
                ".url",
                "`kind: http` needs the facilitator's base URL".into(),
            );
            None
        }
    };
    if f.settler.is_configured() || !f.settlers.is_empty() {
        p(
            ".settler",
            "a remote facilitator settles with its own key: remove `settler`".into(),
        );
    }
    if f.timeout_ms == 0 {
        p(".timeout_ms", "must be more than 0".into());
    }
    for (k, v) in &f.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            p(
                ".headers",
                "a header name or value is not valid HTTP".into(),
            );
        }
    }
    Some(RemoteFacilitator {
        network: f.network.clone(),
        chain_id,
        rpc_url: f.rpc_url.clone(),
        url: url?,
        headers: f
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect(),
        timeout: Duration::from_millis(f.timeout_ms),
        receipt_timeout: Duration::from_millis(f.receipt_timeout_ms),
        rpc: RpcOptions {
            timeout: Duration::from_millis(f.rpc_timeout_ms.max(1)),
        },
    })
}

fn problem(at: &str, field: &str, message: String) -> Problem {
    Problem {
        path: format!("{at}{field}"),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::keys::DEV_KEYS;

    fn entries(yaml: &str) -> Vec<BackendConfig> {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn resolve(yaml: &str) -> (BackendSpecs, Vec<Problem>) {
        // SAFETY: test-only variables, always set to the same values.
        unsafe {
            std::env::set_var("X402_POOL_TEST_A", DEV_KEYS[1]);
            std::env::set_var("X402_POOL_TEST_B", DEV_KEYS[2]);
        }
        let mut problems = Vec::new();
        let s = BackendSpecs::resolve(&entries(yaml), &mut problems);
        (s, problems)
    }

    #[test]
    fn a_pool_of_settler_keys_resolves_in_order_with_its_deadlines() {
        let (s, problems) = resolve(
            "- network: eip155:84532
  rpc_url: http://127.0.0.1:8545
  settlers: [{ key_env: X402_POOL_TEST_A }, { key_env: X402_POOL_TEST_B }]
  rpc_timeout_ms: 1500
  gas_floor_settlements: 7
",
        );
        assert!(problems.is_empty(), "{problems:#?}");
        let c = &s.local[0];
        let want: Vec<alloy_primitives::Address> = [1, 2]
            .iter()
            .map(|i| {
                DEV_KEYS[*i]
                    .parse::<alloy_signer_local::PrivateKeySigner>()
                    .unwrap()
                    .address()
            })
            .collect();
        assert_eq!(c.settler_addresses, want);
        assert_eq!(c.settler_address, want[0]);
        assert_eq!(c.rpc.timeout, Duration::from_millis(1500));
        assert_eq!(c.gas_floor_settlements, 7);
        assert_eq!(c.replace_after, Duration::from_millis(10_000));
    }

    #[test]
    fn batching_is_off_by_default_and_checked_when_set() {
        let base = "- network: eip155:84532
  rpc_url: http://127.0.0.1:8545
  settler: { key_env: X402_POOL_TEST_A }
";
        let (s, problems) = resolve(base);
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(s.local[0].batch, None);
        let (s, problems) = resolve(&format!("{base}  batch: {{}}\n"));
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(
            s.local[0].batch,
            Some(BatchOptions {
                window: Duration::from_millis(5),
                max_items: 32,
                contract: MULTICALL3,
            })
        );
        let (_, problems) = resolve(&format!(
            "{base}  batch: {{ window_ms: 0, max_items: 65, contract: nope }}\n"
        ));
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "facilitators[0].batch.window_ms",
                "facilitators[0].batch.max_items",
                "facilitators[0].batch.contract"
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn a_pool_and_a_single_key_together_or_a_key_twice_are_refused() {
        let (_, problems) = resolve(
            "- network: eip155:84532
  rpc_url: http://127.0.0.1:8545
  settler: { key_env: X402_POOL_TEST_A }
  settlers: [{ key_env: X402_POOL_TEST_B }]
",
        );
        assert_eq!(
            problems[0].path, "facilitators[0].settlers",
            "{problems:#?}"
        );
        let (_, problems) = resolve(
            "- network: eip155:84532
  rpc_url: http://127.0.0.1:8545
  settlers: [{ key_env: X402_POOL_TEST_A }, { key_env: X402_POOL_TEST_A }]
  rpc_timeout_ms: 0
",
        );
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(
            paths.contains(&"facilitators[0].rpc_timeout_ms"),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.path == "facilitators[0].settlers" && p.message.contains("twice")),
            "{problems:#?}"
        );
    }
}
