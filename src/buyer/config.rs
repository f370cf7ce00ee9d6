//! The `outbound:` section of sidecar.yaml (the buyer side): wallet, sellers with their pinned
//! policy, budgets, timeouts, retries, breaker, fallback, ledger. Resolution checks it all and
//! loads the wallet key, so a bad key or a mismatched address stops `run` before it starts.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use serde::Deserialize;

use crate::evm::KeySource;
use crate::util::Problem;
use crate::x402::address::{self, AddressError};
use crate::x402::money::PriceSpec;
use crate::x402::networks;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    #[serde(default)]
    pub(crate) enabled: bool,
    /// Local address roma-01's HTTP client points at.
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    #[serde(default)]
    pub(crate) wallet: WalletConfig,
    /// An optional key of the buyer's holding gas (ETH), to cancel on chain an authorization
    /// whose outcome is unknown before another seller is paid. Never the paying wallet's key.
    #[serde(default)]
    pub(crate) gas_wallet: Option<WalletConfig>,
    /// How often the watcher reads the chain for the authorizations still open.
    #[serde(default = "default_watch_interval")]
    pub(crate) watch_interval_ms: u64,
    /// RPC per network: every paid answer is checked on it, and every authorization followed.
    #[serde(default)]
    pub(crate) chains: Vec<ChainConfig>,
    #[serde(default)]
    pub(crate) sellers: Vec<SellerConfig>,
    /// Daily spend limit per asset. An asset without a budget is never paid.
    #[serde(default)]
    pub(crate) budgets: Vec<BudgetConfig>,
    /// Longest authorization ever signed, whatever the seller asks.
    #[serde(default = "default_max_auth")]
    pub(crate) max_authorization_seconds: u64,
    /// Whole-call deadline, fallback included (at most 10 s unless you raise it).
    #[serde(default = "default_timeout")]
    pub(crate) timeout_ms: u64,
    #[serde(default)]
    pub(crate) retry: RetryConfig,
    #[serde(default)]
    pub(crate) breaker: BreakerConfig,
    #[serde(default)]
    pub(crate) fallback: FallbackConfig,
    /// Append-only JSON-lines ledger of paid calls.
    #[serde(default = "default_ledger")]
    pub(crate) ledger_path: PathBuf,
    /// How roma-01's account owner (`account.owner`) appears in logs, ledger and journal.
    #[serde(default)]
    pub(crate) owners: OwnersConfig,
}

/// `plain` (as sent), `hashed` (a keyed hash: records of one account stay linkable, the
/// address is not readable) or `none` (left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OwnerLog {
    #[default]
    Plain,
    Hashed,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnersConfig {
    #[serde(default)]
    pub(crate) log: OwnerLog,
    /// Environment variable holding the hash key (at least 16 bytes) for `log: hashed`.
    #[serde(default = "default_owner_key_env")]
    pub(crate) key_env: String,
}

impl Default for OwnersConfig {
    fn default() -> Self {
        OwnersConfig {
            log: OwnerLog::Plain,
            key_env: default_owner_key_env(),
        }
    }
}

fn default_owner_key_env() -> String {
    "X402_OWNER_HASH_KEY".into()
}

/// Shortest owner hash key accepted (bytes).
pub(crate) const MIN_OWNER_KEY: usize = 16;

/// The resolved owner policy.
#[derive(Clone)]
pub struct Owners {
    log: OwnerLog,
    key: Vec<u8>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners").field("log", &self.log).finish()
    }
}

impl Owners {
    pub(crate) fn plain() -> Self {
        Owners {
            log: OwnerLog::Plain,
            key: Vec::new(),
        }
    }

    /// A hashing policy with `key` (at least [`MIN_OWNER_KEY`] bytes).
    pub fn hashed(key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_OWNER_KEY {
            return Err(format!(
                "the owner hash key must be at least {MIN_OWNER_KEY} bytes"
            ));
        }
        Ok(Owners {
            log: OwnerLog::Hashed,
            key: key.to_vec(),
        })
    }

    pub(crate) fn none() -> Self {
        Owners {
            log: OwnerLog::None,
            key: Vec::new(),
        }
    }

    /// `plain`, `hashed` or `none`, for reports.
    pub(crate) fn describe(&self) -> &'static str {
        match self.log {
            OwnerLog::Plain => "plain",
            OwnerLog::Hashed => "hashed",
            OwnerLog::None => "none",
        }
    }

    /// How `owner` is written down: as is, as `hmac:<24 hex>` of its lower-cased form (so
    /// `0xAbC…` and `0xabc…` match), or not at all.
    pub fn render(&self, owner: &str) -> Option<String> {
        use hmac::Mac;
        match self.log {
            OwnerLog::Plain => Some(owner.to_string()),
            OwnerLog::None => None,
            OwnerLog::Hashed => {
                let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).ok()?;
                m.update(owner.trim().to_lowercase().as_bytes());
                let d = m.finalize().into_bytes();
                Some(format!("hmac:{}", crate::util::hex(&d[..12])))
            }
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            enabled: false,
            listen: default_listen(),
            wallet: WalletConfig::default(),
            gas_wallet: None,
            watch_interval_ms: default_watch_interval(),
            chains: Vec::new(),
            sellers: Vec::new(),
            budgets: Vec::new(),
            max_authorization_seconds: default_max_auth(),
            timeout_ms: default_timeout(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            fallback: FallbackConfig::default(),
            ledger_path: default_ledger(),
            owners: OwnersConfig::default(),
        }
    }
}

/// The buyer's key: an env var or an encrypted keystore; optional expected address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WalletConfig {
    #[serde(default)]
    pub(crate) key_env: Option<String>,
    #[serde(default)]
    pub(crate) keystore: Option<PathBuf>,
    #[serde(default)]
    pub(crate) password_env: Option<String>,
    #[serde(default)]
    pub(crate) password_file: Option<PathBuf>,
    /// If set, the key must be this address's (refuse to start otherwise).
    #[serde(default)]
    pub(crate) address: Option<String>,
}

impl WalletConfig {
    pub(crate) fn key_source(&self) -> KeySource {
        KeySource {
            key_env: self.key_env.clone(),
            keystore: self.keystore.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChainConfig {
    pub(crate) network: String,
    pub(crate) rpc_url: String,
}

/// A remote seller and what we accept to pay it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SellerConfig {
    pub(crate) name: String,
    /// The paid endpoint, e.g. `https://node-a.example/x402`.
    pub(crate) url: String,
    /// Lower is tried first.
    #[serde(default = "default_priority")]
    pub(crate) priority: u32,
    /// The only addresses we pay for this seller.
    pub(crate) pay_to: Vec<String>,
    pub(crate) networks: Vec<String>,
    pub(crate) assets: Vec<String>,
    /// Most we pay per call ("$0.05" or atomic units), in the assets' units.
    pub(crate) max_price: PriceSpec,
    /// Decimals of the assets (ours, never the challenge's).
    #[serde(default = "default_decimals")]
    pub(crate) decimals: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetConfig {
    pub(crate) network: String,
    pub(crate) asset: String,
    /// Most spent per UTC day ("$5" or atomic units).
    pub(crate) daily: PriceSpec,
    #[serde(default = "default_decimals")]
    pub(crate) decimals: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryConfig {
    /// Extra sends of the same paid request after a network failure or a 5xx.
    #[serde(default = "default_attempts")]
    pub(crate) attempts: u32,
    #[serde(default = "default_backoff")]
    pub(crate) backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            backoff_ms: default_backoff(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakerConfig {
    /// Consecutive failures that open a seller's breaker.
    #[serde(default = "default_threshold")]
    pub(crate) failure_threshold: u32,
    /// How long an open breaker skips the seller before one probe is let through.
    #[serde(default = "default_open")]
    pub(crate) open_seconds: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_threshold(),
            open_seconds: default_open(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FallbackMode {
    /// Ask a local strategy endpoint (e.g. the built-in advisor).
    Local,
    /// 503 + Retry-After and a hint for manual action.
    Wait,
    /// 502 with what happened at each seller.
    #[default]
    Error,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FallbackConfig {
    #[serde(default)]
    pub(crate) mode: FallbackMode,
    /// For `local`: the local endpoint, e.g. http://127.0.0.1:8500/x402
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// For `local`: environment variable holding the secret the local advisor expects in
    /// `X-Sidecar-Secret` (the same variable as its `--secret-env`).
    #[serde(default)]
    pub(crate) secret_env: Option<String>,
    #[serde(default = "default_retry_after")]
    pub(crate) retry_after_seconds: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            mode: FallbackMode::Error,
            url: None,
            secret_env: None,
            retry_after_seconds: default_retry_after(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8403".into()
}
fn default_max_auth() -> u64 {
    120
}
fn default_watch_interval() -> u64 {
    1_000
}
fn default_timeout() -> u64 {
    10_000
}
fn default_ledger() -> PathBuf {
    PathBuf::from("x402-ledger.jsonl")
}
fn default_priority() -> u32 {
    100
}
fn default_decimals() -> u8 {
    6
}
fn default_attempts() -> u32 {
    2
}
fn default_backoff() -> u64 {
    200
}
fn default_threshold() -> u32 {
    3
}
fn default_open() -> u64 {
    30
}
fn default_retry_after() -> u64 {
    60
}

/// A seller ready to call.
#[derive(Debug, Clone)]
pub(crate) struct Seller {
    pub(crate) name: String,
    pub(crate) url: reqwest::Url,
    pub(crate) priority: u32,
    pub(crate) pay_to: BTreeSet<Address>,
    pub(crate) networks: BTreeSet<String>,
    pub(crate) assets: BTreeSet<Address>,
    pub(crate) max_price: U256,
}

/// The outbound side, checked.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub(crate) listen: String,
    pub(crate) signer: PrivateKeySigner,
    /// Submits the buyer's cancellations (`gas_wallet`), if configured.
    pub(crate) gas_key: Option<PrivateKeySigner>,
    pub(crate) watch_interval: Duration,
    pub(crate) chains: HashMap<String, String>,
    /// Sorted by priority.
    pub(crate) sellers: Vec<Seller>,
    /// (network, asset) → daily limit, atomic units.
    pub(crate) budgets: HashMap<(String, Address), u64>,
    pub(crate) max_authorization: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) fallback: FallbackConfig,
    pub(crate) fallback_url: Option<reqwest::Url>,
    /// Sent to the local fallback in `X-Sidecar-Secret`.
    pub(crate) fallback_secret: Option<crate::util::Secret>,
    pub(crate) ledger_path: PathBuf,
    pub(crate) owners: Owners,
}

/// The problems found while resolving the section, each under its YAML path.
struct Problems<'a>(&'a mut Vec<Problem>);

impl Problems<'_> {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl Outbound {
    /// One line for `check-config`.
    pub(crate) fn describe(outbound: Option<&Self>) -> String {
        match outbound {
            Some(ob) => format!(
                "enabled on {}, paying from {}, {} seller(s), fallback {:?}, owners {}",
                ob.listen,
                ob.signer.address(),
                ob.sellers.len(),
                ob.fallback.mode,
                ob.owners.describe()
            ),
            None => "disabled".into(),
        }
    }
}

impl OutboundConfig {
    /// Check the section; `None` when disabled. Problems are reported in the order of the
    /// section: limits, chains, sellers, budgets, fallback, wallet, owners.
    pub(crate) fn resolve(&self, problems: &mut Vec<Problem>) -> Option<Outbound> {
        if !self.enabled {
            return None;
        }
        let start = problems.len();
        let p = &mut Problems(problems);
        self.check_limits(p);
        let chains = self.resolve_chains(p);
        let (sellers, all_networks) = self.resolve_sellers(p);
        self.check_rpcs(&chains, p);
        let budgets = self.resolve_budgets(p);
        let fallback_url = self.fallback.resolve_url(p);
        let fallback_secret = self.fallback.resolve_secret(p);
        let signer = self.wallet.resolve(&all_networks, p);
        let gas_key = self.resolve_gas_key(&all_networks, p);
        let owners = self.owners.resolve(p);
        if problems.len() > start {
            return None;
        }
        Some(Outbound {
            listen: self.listen.clone(),
            signer: signer?,
            gas_key,
            watch_interval: Duration::from_millis(self.watch_interval_ms.max(50)),
            chains,
            sellers,
            budgets,
            max_authorization: Duration::from_secs(self.max_authorization_seconds),
            timeout: Duration::from_millis(self.timeout_ms),
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            fallback: self.fallback.clone(),
            fallback_url,
            fallback_secret,
            ledger_path: self.ledger_path.clone(),
            owners,
        })
    }

    /// The listen address, that there is someone to ask, the whole-call deadline and the
    /// longest authorization.
    fn check_limits(&self, p: &mut Problems<'_>) {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.add("outbound.listen", "is not an address like 127.0.0.1:8403");
        }
        if self.sellers.is_empty() && self.fallback.mode != FallbackMode::Local {
            p.add(
                "outbound.sellers",
                "outbound is enabled but no seller is configured",
            );
        }
        if self.timeout_ms == 0 {
            p.add("outbound.timeout_ms", "must be more than 0");
        }
        if self.max_authorization_seconds < 10 {
            p.add(
                "outbound.max_authorization_seconds",
                "must be at least 10 (sellers need 6 s to settle)",
            );
        }
    }

    /// The gas key, when `gas_wallet` is given: loaded like the wallet (development keys only
    /// on a devnet), and never the paying key itself.
    fn resolve_gas_key(
        &self,
        networks: &BTreeSet<String>,
        p: &mut Problems<'_>,
    ) -> Option<PrivateKeySigner> {
        let g = self.gas_wallet.as_ref()?;
        let src = g.key_source();
        if !src.is_configured() {
            p.add(
                "outbound.gas_wallet",
                "set `key_env` (environment variable) or `keystore` (encrypted file)",
            );
            return None;
        }
        let check_id = networks
            .iter()
            .filter_map(|n| networks::chain_id(n))
            .find(|id| !crate::evm::keys::DEVNET_CHAIN_IDS.contains(id))
            .unwrap_or(84532);
        match src.load(check_id) {
            Ok(k) => {
                if self.wallet.key_env.is_some() && self.wallet.key_env == g.key_env {
                    p.add(
                        "outbound.gas_wallet.key_env",
                        "must not be the paying wallet's key: use a separate key holding only gas",
                    );
                    return None;
                }
                if self.chains.is_empty() {
                    p.add(
                        "outbound.chains",
                        "a gas wallet needs the RPC of each network to submit cancellations",
                    );
                }
                Some(k)
            }
            Err(e) => {
                p.add("outbound.gas_wallet", e.to_string());
                None
            }
        }
    }

    /// network → RPC URL.
    fn resolve_chains(&self, p: &mut Problems<'_>) -> HashMap<String, String> {
        let mut chains = HashMap::new();
        for (i, c) in self.chains.iter().enumerate() {
            if networks::chain_id(&c.network).is_none() {
                p.add(
                    format!("outbound.chains[{i}].network"),
                    "is not a CAIP-2 EVM network",
                );
            }
            if reqwest::Url::parse(&c.rpc_url).is_err() {
                p.add(format!("outbound.chains[{i}].rpc_url"), "is not a URL");
            }
            chains.insert(c.network.clone(), c.rpc_url.clone());
        }
        chains
    }

    /// Every seller network has an RPC: each paid answer is checked on chain, and every
    /// authorization followed there to its end.
    fn check_rpcs(&self, chains: &HashMap<String, String>, p: &mut Problems<'_>) {
        for (i, s) in self.sellers.iter().enumerate() {
            for (j, n) in s.networks.iter().enumerate() {
                if networks::chain_id(n).is_some() && !chains.contains_key(n) {
                    p.add(
                        format!("outbound.sellers[{i}].networks[{j}]"),
                        format!("no RPC for {n} in outbound.chains: the buyer checks every payment on chain (an answer is `paid` only when the chain shows its transfer)"),
                    );
                }
            }
        }
    }

    /// The sellers that resolved, sorted by priority, and every network any seller names
    /// (they decide whether a development key may be used).
    fn resolve_sellers(&self, p: &mut Problems<'_>) -> (Vec<Seller>, BTreeSet<String>) {
        let mut sellers = Vec::new();
        let mut all_networks = BTreeSet::new();
        for (i, s) in self.sellers.iter().enumerate() {
            all_networks.extend(s.networks.iter().cloned());
            if let Some(seller) = s.resolve(&format!("outbound.sellers[{i}]"), p) {
                sellers.push(seller);
            }
        }
        sellers.sort_by_key(|s| s.priority);
        (sellers, all_networks)
    }

    /// (network, asset) → daily limit in atomic units; at least one when sellers are paid.
    fn resolve_budgets(&self, p: &mut Problems<'_>) -> HashMap<(String, Address), u64> {
        let mut budgets = HashMap::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let at = format!("outbound.budgets[{i}]");
            let asset = address::parse(&b.asset);
            match &asset {
                Err(AddressError::Malformed) => p.add(
                    format!("{at}.asset"),
                    "is not a token address (0x + 40 hex digits)",
                ),
                Err(e) => p.add(format!("{at}.asset"), e.to_string()),
                Ok(_) => {}
            }
            let limit = b
                .daily
                .parse(b.decimals)
                .map_err(|e| e.to_string())
                .and_then(|v| u64::try_from(v).map_err(|_| "too large".to_string()));
            match (asset, limit) {
                (Ok(a), Ok(l)) => {
                    budgets.insert((b.network.clone(), a), l);
                }
                (_, Err(e)) => p.add(format!("{at}.daily"), e),
                _ => {}
            }
        }
        if budgets.is_empty() && !self.sellers.is_empty() {
            p.add(
                "outbound.budgets",
                "no daily budget: add one per asset (nothing is paid without a budget)",
            );
        }
        budgets
    }
}

impl SellerConfig {
    /// The seller at `at` (`outbound.sellers[i]`), if its URL and price resolve; every other
    /// problem is reported too.
    fn resolve(&self, at: &str, p: &mut Problems<'_>) -> Option<Seller> {
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                p.add(format!("{at}.url"), "is not an http(s) URL");
                None
            }
        };
        let pay_to = addresses(&self.pay_to, &format!("{at}.pay_to"), "an address", p);
        if self.pay_to.is_empty() {
            p.add(
                format!("{at}.pay_to"),
                "pin at least one payTo address: nothing is paid to an address not listed",
            );
        }
        let assets = addresses(&self.assets, &format!("{at}.assets"), "a token address", p);
        for (j, n) in self.networks.iter().enumerate() {
            if networks::chain_id(n).is_none() {
                p.add(format!("{at}.networks[{j}]"), "is not a CAIP-2 EVM network");
            }
        }
        if self.networks.is_empty() || self.assets.is_empty() {
            p.add(at, "list the allowed `networks` and `assets`");
        }
        let max_price = match self.max_price.parse(self.decimals) {
            Ok(v) => Some(v),
            Err(e) => {
                p.add(format!("{at}.max_price"), e.to_string());
                None
            }
        };
        Some(Seller {
            name: self.name.clone(),
            url: url?,
            priority: self.priority,
            pay_to,
            networks: self.networks.iter().cloned().collect(),
            assets,
            max_price: max_price?,
        })
    }
}

/// The addresses of the list at `at` that parse; each that does not is reported as not
/// being `what` (`an address`, `a token address`).
fn addresses(list: &[String], at: &str, what: &str, p: &mut Problems<'_>) -> BTreeSet<Address> {
    let mut out = BTreeSet::new();
    for (j, a) in list.iter().enumerate() {
        match address::parse(a) {
            Ok(addr) => {
                out.insert(addr);
            }
            Err(AddressError::Malformed) => p.add(format!("{at}[{j}]"), format!("is not {what}")),
            Err(e) => p.add(format!("{at}[{j}]"), e.to_string()),
        }
    }
    out
}

impl FallbackConfig {
    /// The local endpoint's URL: required for `local`, checked whenever given.
    fn resolve_url(&self, p: &mut Problems<'_>) -> Option<reqwest::Url> {
        match (self.mode, &self.url) {
            (FallbackMode::Local, None) => {
                p.add(
                    "outbound.fallback.url",
                    "`local` fallback needs the local strategy endpoint's URL",
                );
                None
            }
            (_, Some(u)) => match reqwest::Url::parse(u) {
                Ok(u) => Some(u),
                Err(_) => {
                    p.add("outbound.fallback.url", "is not a URL");
                    None
                }
            },
            _ => None,
        }
    }

    /// The local advisor's secret, read from `secret_env` when one is named.
    fn resolve_secret(&self, p: &mut Problems<'_>) -> Option<crate::util::Secret> {
        let var = self.secret_env.as_ref()?;
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(crate::util::Secret::new(v)),
            _ => {
                p.add(
                    "outbound.fallback.secret_env",
                    format!(
                        "environment variable {var} is not set (it must hold the secret the local advisor expects)"
                    ),
                );
                None
            }
        }
    }
}

impl WalletConfig {
    /// Load the buyer's key: anvil's development keys only if every network in `networks`
    /// is a devnet's; the key must be `address`'s when one is configured.
    fn resolve(
        &self,
        networks: &BTreeSet<String>,
        p: &mut Problems<'_>,
    ) -> Option<PrivateKeySigner> {
        let src = self.key_source();
        if !src.is_configured() {
            p.add(
                "outbound.wallet",
                "no buyer key: set `key_env` (environment variable) or `keystore` (encrypted file)",
            );
            return None;
        }
        let check_id = networks
            .iter()
            .filter_map(|n| networks::chain_id(n))
            .find(|id| !crate::evm::keys::DEVNET_CHAIN_IDS.contains(id))
            .unwrap_or(84532);
        let signer = match src.load(check_id) {
            Ok(s) => s,
            Err(e) => {
                p.add("outbound.wallet", e.to_string());
                return None;
            }
        };
        if let Some(want) = &self.address {
            match address::parse(want) {
                Ok(a) if a == signer.address() => {}
                Ok(a) => p.add(
                    "outbound.wallet.address",
                    format!(
                        "the key belongs to {}, not to the configured {a}",
                        signer.address()
                    ),
                ),
                Err(AddressError::Malformed) => p.add(
                    "outbound.wallet.address",
                    "is not an address (0x + 40 hex digits)",
                ),
                Err(e) => p.add("outbound.wallet.address", e.to_string()),
            }
        }
        Some(signer)
    }
}

impl OwnersConfig {
    /// How owners are written down; `hashed` needs its key in `key_env`.
    fn resolve(&self, p: &mut Problems<'_>) -> Owners {
        match self.log {
            OwnerLog::Plain => Owners::plain(),
            OwnerLog::None => Owners::none(),
            OwnerLog::Hashed => {
                let var = &self.key_env;
                match std::env::var(var) {
                    Ok(k) => Owners::hashed(k.as_bytes()).unwrap_or_else(|e| {
                        p.add("outbound.owners.key_env", format!("{var}: {e}"));
                        Owners::none()
                    }),
                    Err(_) => {
                        p.add(
                            "outbound.owners.key_env",
                            format!(
                                "`log: hashed` needs a key: set the environment variable {var} (at least {MIN_OWNER_KEY} bytes)"
                            ),
                        );
                        Owners::none()
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "0xAbC0000000000000000000000000000000000001";

    #[test]
    fn owners_are_written_as_configured() {
        assert_eq!(Owners::plain().render(OWNER).as_deref(), Some(OWNER));
        assert_eq!(Owners::none().render(OWNER), None);
        let h = Owners::hashed(b"0123456789abcdef").unwrap();
        let a = h.render(OWNER).unwrap();
        assert!(a.starts_with("hmac:") && a.len() == 5 + 24, "{a}");
        assert!(!a.to_lowercase().contains("abc0000"));
        // Case and stray spaces do not split one account into two.
        assert_eq!(
            h.render(&format!(" {} ", OWNER.to_lowercase())),
            Some(a.clone())
        );
        // Another account, or another key, gives another value.
        assert_ne!(
            h.render("0xabc0000000000000000000000000000000000002"),
            Some(a.clone())
        );
        let other = Owners::hashed(b"fedcba9876543210").unwrap();
        assert_ne!(other.render(OWNER), Some(a));
    }

    #[test]
    fn a_short_hash_key_is_refused() {
        assert!(Owners::hashed(b"short").is_err());
    }

    #[test]
    fn the_policy_does_not_print_its_key() {
        let h = Owners::hashed(b"very-secret-key-0001").unwrap();
        assert!(!format!("{h:?}").contains("very-secret"));
    }
}
