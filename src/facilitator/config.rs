//! The facilitator service's section of `sidecar.yaml`: `facilitator:` (off unless enabled).
//!
//! The service settles with the `kind: local` entries of `facilitators:`. That section is the
//! seller's (it uses both kinds); the aggregate configuration hands this one the entries
//! already resolved, as [`ChainSpec`]s.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::evm::ChainSpec;
use crate::util::Problem;

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            enabled: false,
            listen: default_listen(),
        }
    }
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
        })
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
}
