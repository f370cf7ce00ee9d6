//! The facilitator service's section of `sidecar.yaml`: `facilitator:` (off unless enabled).
//!
//! The service settles with the `kind: local` entries of `facilitators:`. That section is the
//! seller's (it uses both kinds); the aggregate configuration hands this one the entries
//! already resolved, as [`ChainSpec`]s.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::evm::ChainSpec;
use crate::http::limit::LimitConfig;
use crate::util::{Problem, Secret};

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Rate limits (on by default): calls per bearer key, or per client IP without `auth`.
    #[serde(default)]
    pub limits: ServiceLimits,
    /// Optional bearer authentication: without it anyone who reaches the port may call.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            enabled: false,
            listen: default_listen(),
            limits: ServiceLimits::default(),
            auth: None,
        }
    }
}

/// `facilitator.limits:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLimits {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `/verify` and `/settle` calls per client (its bearer key, or its IP without `auth`).
    #[serde(default = "default_per_client")]
    pub per_client: LimitConfig,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            enabled: true,
            per_client: default_per_client(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_per_client() -> LimitConfig {
    LimitConfig::new(4096, 10)
}

/// `facilitator.auth:` the environment variables holding the accepted bearer keys (one per
/// client, so that each is limited and can be revoked on its own).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub bearer_keys_env: Vec<String>,
}

/// One accepted bearer key: the variable it came from names it in logs and limits.
#[derive(Debug, Clone)]
pub struct BearerKey {
    pub name: String,
    pub key: Secret,
}

fn default_listen() -> String {
    "127.0.0.1:8404".into()
}

/// An enabled service, resolved: where it listens and the chains it settles on.
#[derive(Debug, Clone)]
pub struct Service {
    /// An address like `127.0.0.1:8404` (checked), kept as written for the listener and the logs.
    pub listen: String,
    /// At least one.
    pub chains: Vec<ChainSpec>,
    /// `None`: `facilitator.limits.enabled: false`.
    pub limits: Option<ServiceLimits>,
    /// Empty: no authentication.
    pub keys: Vec<BearerKey>,
}

impl ServiceConfig {
    /// `None` when disabled, or (with problems) when the section is wrong. `chains` are the
    /// resolved `kind: local` entries; `declares_local` says whether there is any such entry,
    /// resolved or not (a broken entry is reported at the entry, not here as well).
    pub(crate) fn resolve(
        &self,
        chains: &[ChainSpec],
        declares_local: bool,
        problems: &mut Vec<Problem>,
    ) -> Option<Service> {
        if !self.enabled {
            return None;
        }
        let listen = (self.listen.parse::<SocketAddr>().is_ok()).then(|| self.listen.clone());
        if listen.is_none() {
            problems.push(Problem {
                path: "facilitator.listen".into(),
                message: "is not an address like 127.0.0.1:8404".into(),
            });
        }
        self.limits
            .per_client
            .check("facilitator.limits.per_client", problems);
        let keys = self.keys(problems);
        if !declares_local {
            problems.push(Problem {
                path: "facilitator.enabled".into(),
                message: "the facilitator service needs at least one `kind: local` entry under `facilitators` (network, rpc_url, settler) to verify and settle with".into(),
            });
            return None;
        }
        Some(Service {
            listen: listen?,
            chains: chains.to_vec(),
            limits: self.limits.enabled.then_some(self.limits),
            keys,
        })
    }

    /// The bearer keys named by `auth.bearer_keys_env`: each variable set and at least 32
    /// characters long (its value is never shown).
    fn keys(&self, problems: &mut Vec<Problem>) -> Vec<BearerKey> {
        let Some(auth) = &self.auth else {
            return Vec::new();
        };
        if auth.bearer_keys_env.is_empty() {
            problems.push(Problem {
                path: "facilitator.auth.bearer_keys_env".into(),
                message:
                    "name at least one environment variable holding a bearer key, or remove `auth`"
                        .into(),
            });
        }
        let mut keys = Vec::new();
        for (i, var) in auth.bearer_keys_env.iter().enumerate() {
            let path = format!("facilitator.auth.bearer_keys_env[{i}]");
            match std::env::var(var) {
                Ok(v) if v.len() >= 32 => keys.push(BearerKey {
                    name: var.clone(),
                    key: Secret::new(v),
                }),
                Ok(v) if !v.is_empty() => problems.push(Problem {
                    path,
                    message: format!("the key in {var} is too short: use at least 32 characters"),
                }),
                _ => problems.push(Problem {
                    path,
                    message: format!("environment variable {var} is not set"),
                }),
            }
        }
        keys
    }
}

impl Service {
    /// One line for `check-config`.
    pub(crate) fn describe(service: Option<&Self>) -> String {
        match service {
            Some(s) => format!(
                "/supported /verify /settle on {} for {}",
                s.listen,
                s.chains
                    .iter()
                    .map(|c| c.network.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "disabled".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facilitator_service_needs_a_local_facilitator_and_an_address() {
        let c: ServiceConfig = serde_yaml::from_str("{ enabled: true, listen: nowhere }").unwrap();
        assert!(!ServiceConfig::default().enabled);
        assert_eq!(ServiceConfig::default().listen, "127.0.0.1:8404");
        let mut probs = Vec::new();
        assert!(c.resolve(&[], false, &mut probs).is_none());
        let paths: Vec<_> = probs.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"facilitator.listen"), "{probs:#?}");
        assert!(paths.contains(&"facilitator.enabled"), "{probs:#?}");
    }

    #[test]
    fn bearer_keys_come_from_the_environment_and_are_never_shown() {
        // SAFETY: test-only variables, always set to the same values.
        unsafe {
            std::env::set_var("X402_FAC_CFG_TEST_SHORT", "short-key");
            std::env::remove_var("X402_FAC_CFG_TEST_UNSET");
        }
        let c: ServiceConfig = serde_yaml::from_str(
            "{ enabled: true, auth: { bearer_keys_env: [X402_FAC_CFG_TEST_SHORT, X402_FAC_CFG_TEST_UNSET] }, limits: { per_client: { requests: 0 } } }",
        )
        .unwrap();
        let mut probs = Vec::new();
        let _ = c.resolve(&[], true, &mut probs);
        let paths: Vec<_> = probs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "facilitator.limits.per_client.requests",
                "facilitator.auth.bearer_keys_env[0]",
                "facilitator.auth.bearer_keys_env[1]"
            ],
            "{probs:#?}"
        );
        assert!(!probs.iter().any(|p| p.message.contains("short-key")));
        assert!(ServiceConfig::default().limits.enabled);
    }
}
