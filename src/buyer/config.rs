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
use crate::x402::money::PriceSpec;
use crate::x402::networks;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Local address roma-01's HTTP client points at.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub wallet: WalletConfig,
    /// RPC per network, to read `authorizationState` when an outcome is ambiguous.
    #[serde(default)]
    pub chains: Vec<ChainConfig>,
    #[serde(default)]
    pub sellers: Vec<SellerConfig>,
    /// Daily spend limit per asset. An asset without a budget is never paid.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// Longest authorization ever signed, whatever the seller asks.
    #[serde(default = "default_max_auth")]
    pub max_authorization_seconds: u64,
    /// Whole-call deadline, fallback included (at most 10 s unless you raise it).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// Append-only JSON-lines ledger of paid calls.
    #[serde(default = "default_ledger")]
    pub ledger_path: PathBuf,
    /// How roma-01's account owner (`account.owner`) appears in logs, ledger and journal.
    #[serde(default)]
    pub owners: OwnersConfig,
}

/// `plain` (as sent), `hashed` (a keyed hash: records of one account stay linkable, the
/// address is not readable) or `none` (left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerLog {
    #[default]
    Plain,
    Hashed,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnersConfig {
    #[serde(default)]
    pub log: OwnerLog,
    /// Environment variable holding the hash key (at least 16 bytes) for `log: hashed`.
    #[serde(default = "default_owner_key_env")]
    pub key_env: String,
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
pub const MIN_OWNER_KEY: usize = 16;

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
    pub fn plain() -> Self {
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

    pub fn none() -> Self {
        Owners {
            log: OwnerLog::None,
            key: Vec::new(),
        }
    }

    /// `plain`, `hashed` or `none`, for reports.
    pub fn describe(&self) -> &'static str {
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
pub struct WalletConfig {
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// If set, the key must be this address's (refuse to start otherwise).
    #[serde(default)]
    pub address: Option<String>,
}

impl WalletConfig {
    pub fn key_source(&self) -> KeySource {
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
pub struct ChainConfig {
    pub network: String,
    pub rpc_url: String,
}

/// A remote seller and what we accept to pay it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerConfig {
    pub name: String,
    /// The paid endpoint, e.g. `https://node-a.example/x402`.
    pub url: String,
    /// Lower is tried first.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// The only addresses we pay for this seller.
    pub pay_to: Vec<String>,
    pub networks: Vec<String>,
    pub assets: Vec<String>,
    /// Most we pay per call ("$0.05" or atomic units), in the assets' units.
    pub max_price: PriceSpec,
    /// Decimals of the assets (ours, never the challenge's).
    #[serde(default = "default_decimals")]
    pub decimals: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub network: String,
    pub asset: String,
    /// Most spent per UTC day ("$5" or atomic units).
    pub daily: PriceSpec,
    #[serde(default = "default_decimals")]
    pub decimals: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra sends of the same paid request after a network failure or a 5xx.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
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
pub struct BreakerConfig {
    /// Consecutive failures that open a seller's breaker.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker skips the seller before one probe is let through.
    #[serde(default = "default_open")]
    pub open_seconds: u64,
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
pub enum FallbackMode {
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
pub struct FallbackConfig {
    #[serde(default)]
    pub mode: FallbackMode,
    /// For `local`: the local endpoint, e.g. http://127.0.0.1:8500/x402
    #[serde(default)]
    pub url: Option<String>,
    /// For `local`: environment variable holding the secret the local advisor expects in
    /// `X-Sidecar-Secret` (the same variable as its `--secret-env`).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default = "default_retry_after")]
    pub retry_after_seconds: u64,
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
pub struct Seller {
    pub name: String,
    pub url: reqwest::Url,
    pub priority: u32,
    pub pay_to: BTreeSet<Address>,
    pub networks: BTreeSet<String>,
    pub assets: BTreeSet<Address>,
    pub max_price: U256,
    pub decimals: u8,
}

/// The outbound side, checked.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub listen: String,
    pub signer: PrivateKeySigner,
    pub chains: HashMap<String, String>,
    /// Sorted by priority.
    pub sellers: Vec<Seller>,
    /// (network, asset) → daily limit, atomic units.
    pub budgets: HashMap<(String, Address), u64>,
    pub max_authorization: Duration,
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub fallback: FallbackConfig,
    pub fallback_url: Option<reqwest::Url>,
    /// Sent to the local fallback in `X-Sidecar-Secret`.
    pub fallback_secret: Option<crate::util::Secret>,
    pub ledger_path: PathBuf,
    pub owners: Owners,
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
    /// Check the section; `None` when disabled.
    pub fn resolve(&self, problems: &mut Vec<Problem>) -> Option<Outbound> {
        if !self.enabled {
            return None;
        }
        let start = problems.len();
        let mut p = |path: String, message: String| problems.push(Problem { path, message });
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            p(
                "outbound.listen".into(),
                format!("`{}` is not an address like 127.0.0.1:8403", self.listen),
            );
        }
        if self.sellers.is_empty() && self.fallback.mode != FallbackMode::Local {
            p(
                "outbound.sellers".into(),
                "outbound is enabled but no seller is configured".into(),
            );
        }
        if self.timeout_ms == 0 {
            p("outbound.timeout_ms".into(), "must be more than 0".into());
        }
        if self.max_authorization_seconds < 10 {
            p(
                "outbound.max_authorization_seconds".into(),
                "must be at least 10 (sellers need 6 s to settle)".into(),
            );
        }
        let mut chains = HashMap::new();
        for (i, c) in self.chains.iter().enumerate() {
            if networks::chain_id(&c.network).is_none() {
                p(
                    format!("outbound.chains[{i}].network"),
                    format!("`{}` is not a CAIP-2 EVM network", c.network),
                );
            }
            if reqwest::Url::parse(&c.rpc_url).is_err() {
                p(
                    format!("outbound.chains[{i}].rpc_url"),
                    format!("`{}` is not a URL", c.rpc_url),
                );
            }
            chains.insert(c.network.clone(), c.rpc_url.clone());
        }
        let mut sellers = Vec::new();
        let mut all_networks = BTreeSet::new();
        for (i, s) in self.sellers.iter().enumerate() {
            let at = format!("outbound.sellers[{i}]");
            let url = match reqwest::Url::parse(&s.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    p(
                        format!("{at}.url"),
                        format!("`{}` is not an http(s) URL", s.url),
                    );
                    None
                }
            };
            let mut pay_to = BTreeSet::new();
            for (j, a) in s.pay_to.iter().enumerate() {
                match a.parse::<Address>() {
                    Ok(addr) => {
                        pay_to.insert(addr);
                    }
                    Err(_) => p(
                        format!("{at}.pay_to[{j}]"),
                        format!("`{a}` is not an address"),
                    ),
                }
            }
            if s.pay_to.is_empty() {
                p(
                    format!("{at}.pay_to"),
                    "pin at least one payTo address: nothing is paid to an address not listed"
                        .into(),
                );
            }
            let mut assets = BTreeSet::new();
            for (j, a) in s.assets.iter().enumerate() {
                match a.parse::<Address>() {
                    Ok(addr) => {
                        assets.insert(addr);
                    }
                    Err(_) => p(
                        format!("{at}.assets[{j}]"),
                        format!("`{a}` is not a token address"),
                    ),
                }
            }
            for (j, n) in s.networks.iter().enumerate() {
                if networks::chain_id(n).is_none() {
                    p(
                        format!("{at}.networks[{j}]"),
                        format!("`{n}` is not a CAIP-2 EVM network"),
                    );
                }
                all_networks.insert(n.clone());
            }
            if s.networks.is_empty() || s.assets.is_empty() {
                p(
                    at.clone(),
                    "list the allowed `networks` and `assets`".into(),
                );
            }
            let max_price = match s.max_price.parse(s.decimals) {
                Ok(v) => Some(v),
                Err(e) => {
                    p(format!("{at}.max_price"), e.to_string());
                    None
                }
            };
            if let (Some(url), Some(max_price)) = (url, max_price) {
                sellers.push(Seller {
                    name: s.name.clone(),
                    url,
                    priority: s.priority,
                    pay_to,
                    networks: s.networks.iter().cloned().collect(),
                    assets,
                    max_price,
                    decimals: s.decimals,
                });
            }
        }
        sellers.sort_by_key(|s| s.priority);
        let mut budgets = HashMap::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let at = format!("outbound.budgets[{i}]");
            let asset = b.asset.parse::<Address>();
            if asset.is_err() {
                p(
                    format!("{at}.asset"),
                    format!("`{}` is not a token address", b.asset),
                );
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
                (_, Err(e)) => p(format!("{at}.daily"), e),
                _ => {}
            }
        }
        if budgets.is_empty() && !self.sellers.is_empty() {
            p(
                "outbound.budgets".into(),
                "no daily budget: add one per asset (nothing is paid without a budget)".into(),
            );
        }
        let fallback_url = match (self.fallback.mode, &self.fallback.url) {
            (FallbackMode::Local, None) => {
                p(
                    "outbound.fallback.url".into(),
                    "`local` fallback needs the local strategy endpoint's URL".into(),
                );
                None
            }
            (_, Some(u)) => match reqwest::Url::parse(u) {
                Ok(u) => Some(u),
                Err(_) => {
                    p(
                        "outbound.fallback.url".into(),
                        format!("`{u}` is not a URL"),
                    );
                    None
                }
            },
            _ => None,
        };
        let fallback_secret = match &self.fallback.secret_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(crate::util::Secret::new(v)),
                _ => {
                    p(
                        "outbound.fallback.secret_env".into(),
                        format!(
                            "environment variable {var} is not set (it must hold the secret the local advisor expects)"
                        ),
                    );
                    None
                }
            },
        };
        // The wallet: dev keys only if every network is a devnet's.
        let src = self.wallet.key_source();
        let mut signer = None;
        if !src.is_configured() {
            p(
                "outbound.wallet".into(),
                "no buyer key: set `key_env` (environment variable) or `keystore` (encrypted file)"
                    .into(),
            );
        } else {
            let ids: Vec<u64> = all_networks
                .iter()
                .filter_map(|n| networks::chain_id(n))
                .collect();
            let check_id = ids
                .iter()
                .copied()
                .find(|id| !crate::evm::keys::DEVNET_CHAIN_IDS.contains(id))
                .unwrap_or(84532);
            match src.load(check_id) {
                Ok(s) => {
                    if let Some(want) = &self.wallet.address {
                        match want.parse::<Address>() {
                            Ok(a) if a == s.address() => {}
                            Ok(a) => p(
                                "outbound.wallet.address".into(),
                                format!(
                                    "the key belongs to {}, not to the configured {a}",
                                    s.address()
                                ),
                            ),
                            Err(_) => p(
                                "outbound.wallet.address".into(),
                                format!("`{want}` is not an address"),
                            ),
                        }
                    }
                    signer = Some(s);
                }
                Err(e) => p("outbound.wallet".into(), e.to_string()),
            }
        }
        let owners = match self.owners.log {
            OwnerLog::Plain => Owners::plain(),
            OwnerLog::None => Owners::none(),
            OwnerLog::Hashed => {
                let var = &self.owners.key_env;
                match std::env::var(var) {
                    Ok(k) => Owners::hashed(k.as_bytes()).unwrap_or_else(|e| {
                        p("outbound.owners.key_env".into(), format!("{var}: {e}"));
                        Owners::none()
                    }),
                    Err(_) => {
                        p(
                            "outbound.owners.key_env".into(),
                            format!(
                                "`log: hashed` needs a key: set the environment variable {var} (at least {MIN_OWNER_KEY} bytes)"
                            ),
                        );
                        Owners::none()
                    }
                }
            }
        };
        if problems.len() > start {
            return None;
        }
        Some(Outbound {
            listen: self.listen.clone(),
            signer: signer?,
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
