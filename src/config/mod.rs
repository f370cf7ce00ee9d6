//! `sidecar.yaml`, the aggregate: `${ENV}` expansion, then one field per section, each section
//! owned, defaulted and checked by its own part, and [`Config::resolve`] composing their
//! resolutions into [`Resolved`], what the services are built from. Every problem is reported
//! at once, in plain words, with the path of the field at fault.
//!
//! Who owns which section, and what it resolves to:
//!
//! - `inbound:` and `facilitators:`: the seller ([`crate::seller::config`]), into [`Inbound`]
//!   and [`BackendSpecs`]; the `kind: local` entries of the latter, as `evm::ChainSpec`s, are
//!   also handed to the facilitator service (a role never imports another).
//! - `outbound:`: the buyer ([`crate::buyer::config`]), into [`Outbound`].
//! - `facilitator:`: the facilitator service ([`crate::facilitator::config`]), into [`Service`].
//! - `store:`: [`crate::store`], into [`StoreSpec`]; `audit:`: [`crate::audit`], into
//!   [`JournalSpec`]; `admin:` and `otlp:`: [`crate::telemetry`], into [`AdminSpec`] and
//!   [`OtlpSpec`].
//! - `server:` (threads, grace period): here, [`ServerConfig`].

mod explain;

use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::audit::{AuditConfig, JournalSpec};
use crate::buyer::config::{Outbound, OutboundConfig};
use crate::facilitator::config::{Service, ServiceConfig};
use crate::seller::config::{BackendConfig, BackendSpecs, Inbound, InboundConfig};
use crate::store::{StoreConfig, StoreSpec};
use crate::telemetry::{AdminConfig, AdminSpec, OtlpConfig, OtlpSpec};

pub use crate::util::Problem;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub inbound: InboundConfig,
    /// One facilitator per network the routes accept.
    #[serde(default)]
    pub facilitators: Vec<BackendConfig>,
    /// Replay-guard store: `memory` (one node) or `redis://host:port/db` (replicas).
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener: /metrics, /healthz, /readyz.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The tamper-evident audit journal of paid requests.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The buyer side: the paying proxy roma-01 points its HTTP client at.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Optional export of the request spans to an OpenTelemetry collector.
    #[serde(default)]
    pub otlp: OtlpConfig,
    /// Serve the standard x402 facilitator API (/verify, /settle, /supported) for other
    /// resource servers, settling with the `local` entries of `facilitators`.
    #[serde(default)]
    pub facilitator: ServiceConfig,
    /// Paths inside a disabled section whose `${VAR}` is not set: a disabled section asks for
    /// nothing, so what is wrong there only because of them is not a problem.
    #[serde(skip)]
    unset_while_off: Vec<String>,
}

/// Process-wide settings (the `server:` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads per service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// On SIGTERM, how long in-flight paid calls may take to finish.
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: default_threads(),
            grace_period_seconds: default_grace(),
        }
    }
}

fn default_threads() -> usize {
    2
}
fn default_grace() -> u64 {
    30
}

impl ServerConfig {
    fn check(&self, problems: &mut Vec<Problem>) {
        if self.threads == 0 {
            problems.push(Problem {
                path: "server.threads".into(),
                message: "must be at least 1".into(),
            });
        }
    }
}

/// A configuration that passed every check: each section resolved by its owner.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub server: ServerConfig,
    pub store: StoreSpec,
    /// `None`: `audit.enabled: false`.
    pub audit: Option<JournalSpec>,
    /// `None`: the admin listener is off.
    pub admin: Option<AdminSpec>,
    /// `None`: span export is off.
    pub otlp: Option<OtlpSpec>,
    /// The paywall (with its routes and settlement) when enabled, else the checked routes.
    pub inbound: Inbound,
    /// Present when `outbound.enabled`.
    pub outbound: Option<Outbound>,
    /// Present when `facilitator.enabled`.
    pub facilitator: Option<Service>,
}

impl Config {
    /// Check everything; on success return what the services need. Loads the settler keys,
    /// so a missing or refused key is reported here, not at the first paid call. The
    /// sections are checked in file order of importance: the shared parts first, then the
    /// `facilitators:` the roles settle with, then the roles.
    pub fn resolve(&self) -> Result<Resolved, Vec<Problem>> {
        let mut problems = Vec::new();
        let p = &mut problems;
        let store = self.store.resolve(p);
        let admin = self.admin.resolve(p);
        let audit = self.audit.resolve(p);
        self.server.check(p);
        let otlp = self.otlp.resolve(p);
        let settlement = BackendSpecs::resolve(&self.facilitators, p);
        let facilitator =
            self.facilitator
                .resolve(&settlement.local, settlement.declares_local(), p);
        let inbound = self.inbound.resolve(&settlement, p);
        let outbound = self.outbound.resolve(p);
        let unset = &self.unset_while_off;
        problems.retain(|q| !unset.iter().any(|u| under(&q.path, u)));
        // A disabled paywall whose only problems came from unset variables: nothing to serve.
        let inbound = inbound.or_else(|| {
            let clean = !problems.iter().any(|q| under(&q.path, "inbound"));
            (!self.inbound.enabled && clean).then(|| Inbound::Off { routes: Vec::new() })
        });
        match (store, inbound) {
            (Some(store), Some(inbound)) if problems.is_empty() => Ok(Resolved {
                server: self.server.clone(),
                store,
                audit,
                admin,
                otlp,
                inbound,
                outbound,
                facilitator,
            }),
            // No long hex value in a sentence (a key pasted into the wrong field), whichever
            // section wrote it.
            _ => Err(problems
                .into_iter()
                .map(|p| Problem {
                    message: crate::x402::redact::mask_hex(&p.message),
                    ..p
                })
                .collect()),
        }
    }
}

impl Resolved {
    /// What each section will do, as `check-config` prints it: one line per section (the
    /// seller's routes follow its line).
    pub(crate) fn summary(&self) -> Vec<String> {
        let mut lines = self.inbound.describe();
        lines.push(format!("store: {}", self.store));
        lines.push(format!(
            "outbound: {}",
            Outbound::describe(self.outbound.as_ref())
        ));
        lines.push(format!(
            "facilitator: {}",
            Service::describe(self.facilitator.as_ref())
        ));
        lines.push(format!(
            "admin: {}",
            AdminSpec::describe(self.admin.as_ref())
        ));
        lines.push(format!(
            "audit: {}",
            JournalSpec::describe(self.audit.as_ref())
        ));
        lines.push(format!("otlp: {}", OtlpSpec::describe(self.otlp.as_ref())));
        lines
    }
}

/// Read a file, expand `${ENV}`, parse. Problems in the text come back as a list.
pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            path: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        }]
    })?;
    parse(&text, &|k| std::env::var(k).ok())
}

/// Parse YAML text, expanding `${VAR}` and `${VAR:-default}` inside string values.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<Problem>> {
    let mut v: Value = serde_yaml::from_str(text).map_err(|e| {
        vec![Problem {
            path: "sidecar.yaml".into(),
            message: crate::x402::redact::mask_hex(&format!("not valid YAML: {e}")),
        }]
    })?;
    if v.is_null() {
        v = Value::Mapping(Default::default());
    }
    let mut problems = Vec::new();
    let mut unset = Vec::new();
    expand(&mut v, "", env, false, &mut problems, &mut unset);
    if !problems.is_empty() {
        return Err(problems);
    }
    v1_network_names(&mut v);
    let mut config: Config = explain::deserialize(text, v).map_err(|p| vec![p])?;
    config.unset_while_off = unset;
    Ok(config)
}

/// Is `path` the field `at` or inside it?
fn under(path: &str, at: &str) -> bool {
    path.strip_prefix(at)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Expand `${VAR}` in every string under `v`. Inside a mapping with `enabled: false` (`off`)
/// an unset variable is no problem: the value is left empty and its path noted in `unset`.
fn expand(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    off: bool,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<String>,
) {
    match v {
        Value::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let Some(end) = rest[start..].find('}') else {
                    problems.push(Problem {
                        path: path.into(),
                        message: "unclosed `${` in value".into(),
                    });
                    return;
                };
                let inner = &rest[start + 2..start + end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                match env(name)
                    .filter(|x| !x.is_empty())
                    .or(default.map(str::to_string))
                {
                    Some(val) => out.push_str(&val),
                    None if off => unset.push(path.to_string()),
                    None => problems.push(Problem {
                        path: path.into(),
                        message: format!("environment variable {name} is not set"),
                    }),
                }
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Mapping(m) => {
            let off = off || m.get("enabled") == Some(&Value::Bool(false));
            for (k, val) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                expand(val, &p, env, off, problems, unset);
            }
        }
        Value::Sequence(s) => {
            for (i, val) in s.iter_mut().enumerate() {
                expand(val, &format!("{path}[{i}]"), env, off, problems, unset);
            }
        }
        _ => {}
    }
}

/// `network:` and `networks:` values may use the x402 v1 names (`base-sepolia`, `base`, …, what
/// roma-01's `X402_NETWORK` holds); they are read as their CAIP-2 ids (`eip155:84532`).
fn v1_network_names(v: &mut Value) {
    let caip2 = |s: &mut String| {
        let id = crate::x402::networks::from_v1(s);
        if id.starts_with("eip155:") {
            *s = id;
        }
    };
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                match (k.as_str(), val) {
                    (Some("network"), Value::String(s)) => caip2(s),
                    (Some("networks"), Value::Sequence(items)) => {
                        for item in items {
                            if let Value::String(s) = item {
                                caip2(s);
                            }
                        }
                    }
                    (_, val) => v1_network_names(val),
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(v1_network_names),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_network_names_are_read_as_caip2() {
        let mut v: Value = serde_yaml::from_str(
            "inbound:\n  routes:\n    - accepts:\n        - network: base-sepolia\nfacilitators:\n  - network: eip155:8453\noutbound:\n  sellers:\n    - networks: [base, solana]\n",
        )
        .unwrap();
        v1_network_names(&mut v);
        assert_eq!(
            v["inbound"]["routes"][0]["accepts"][0]["network"],
            "eip155:84532"
        );
        assert_eq!(v["facilitators"][0]["network"], "eip155:8453");
        let sellers = &v["outbound"]["sellers"][0]["networks"];
        assert_eq!(
            (&sellers[0], &sellers[1]),
            (&Value::from("eip155:8453"), &Value::from("solana"))
        );
    }

    const DEV0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn env(k: &str) -> Option<String> {
        // The settler key is read from the process environment by `KeySource::load`.
        // SAFETY: a test-only variable, always set to the same value.
        unsafe { std::env::set_var("X402_CFG_TEST_SETTLER", DEV0) };
        match k {
            "SETTLER" => Some(DEV0.into()),
            "PAY_TO" => Some("0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into()),
            _ => None,
        }
    }

    const GOOD: &str = r#"
inbound:
  enabled: true
  listen: 127.0.0.1:8402
  upstream: { url: "http://127.0.0.1:8500" }
  routes:
    - path: /x402
      price: "$0.01"
      accepts:
        - network: eip155:84532
          asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
          pay_to: "${PAY_TO}"
          eip712: { name: USDC, version: "2" }
facilitators:
  - network: eip155:84532
    rpc_url: http://127.0.0.1:8545
    settler: { key_env: X402_CFG_TEST_SETTLER }
"#;

    #[test]
    fn defaults_keep_everything_off() {
        let c = parse("", &env).unwrap();
        assert!(!c.inbound.enabled);
        assert_eq!(c.store.0, "memory");
        assert!(c.resolve().is_ok());
    }

    #[test]
    fn a_complete_file_resolves_every_section() {
        let r = parse(GOOD, &env).unwrap().resolve().unwrap();
        let seller = r.inbound.seller().expect("inbound is enabled");
        assert_eq!(seller.routes[0].id(), "POST /x402");
        assert!(
            seller.routes[0].offers[0]
                .facilitator
                .starts_with("local:0x")
        );
        assert_eq!(seller.settlement.local.len(), 1);
        assert_eq!(r.store, StoreSpec::Memory);
        assert!(r.audit.is_some() && r.admin.is_none() && r.otlp.is_none());
    }

    #[test]
    fn shape_errors_name_the_field_never_the_value() {
        let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let text = format!("inbound:\n  max_body_bytes: \"{key}\"\n");
        let e = parse(&text, &|_| None).unwrap_err();
        assert_eq!(e[0].path, "inbound.max_body_bytes", "{e:?}");
        assert!(!e[0].message.contains("ac0974"), "{e:?}");
        assert!(e[0].message.contains("whole number"), "{e:?}");
    }

    #[test]
    fn missing_env_is_named() {
        let probs = parse(GOOD, &|_| None).unwrap_err();
        assert!(
            probs
                .iter()
                .any(|p| p.message.contains("PAY_TO") && p.path.contains("pay_to")),
            "{probs:?}"
        );
    }

    #[test]
    fn the_facilitator_service_settles_with_the_local_facilitators() {
        let ok = format!(
            "{}facilitator: {{ enabled: true }}\n",
            GOOD.replace("enabled: true\n  listen", "enabled: false\n  listen")
        );
        let r = parse(&ok, &env).unwrap().resolve().unwrap();
        let service = r.facilitator.expect("the facilitator service is enabled");
        assert_eq!(service.chains.len(), 1);
        assert_eq!(service.chains[0].network, "eip155:84532");
    }

    #[test]
    fn unknown_fields_are_refused_with_the_key_they_probably_meant() {
        let e = parse("inbound:\n  enable: true\n", &env).unwrap_err();
        assert_eq!(e[0].path, "inbound.enable", "{e:?}");
        assert!(
            e[0].message.contains("did you mean `enabled`?") && e[0].message.contains("line 2"),
            "{e:?}"
        );
    }

    /// A structural mistake names the key's path, its line and column, and the forms that are
    /// accepted, in words (no Rust type name, no value repeated).
    #[test]
    fn structural_mistakes_name_the_path_and_the_line() {
        let cases = [
            (
                GOOD.replace("price: \"$0.01\"", "price: 0.01"),
                "inbound.routes[0].price",
                "\"$0.01\"",
                "line 8",
            ),
            (
                GOOD.replace("    rpc_url: http://127.0.0.1:8545\n", ""),
                "facilitators[0].rpc_url",
                "required here, but missing",
                "line 15",
            ),
            (
                format!("{GOOD}server: {{ threads: many }}\n"),
                "server.threads",
                "expected a whole number",
                "line 18",
            ),
        ];
        for (text, path, words, line) in cases {
            let e = parse(&text, &env).unwrap_err();
            assert_eq!(e[0].path, path, "{e:?}");
            assert!(e[0].message.contains(words), "{path}: {e:?}");
            assert!(e[0].message.contains(line), "{path}: {e:?}");
            assert!(
                !e[0].message.contains("enum") && !e[0].message.contains("u64"),
                "{e:?}"
            );
        }
    }

    /// `enabled: false` asks for nothing: its `${VAR}`s may be unset; enabled, they are named.
    #[test]
    fn a_disabled_section_asks_for_no_variable() {
        let off = GOOD
            .replace("enabled: true\n  listen", "enabled: false\n  listen")
            .replace("listen: 127.0.0.1:8402", "challenge_secret: ${CHALLENGE}");
        let r = parse(&off, &|_| None).unwrap().resolve().unwrap();
        assert!(r.inbound.seller().is_none());
        let on = off.replace("enabled: false", "enabled: true");
        let probs = parse(&on, &|_| None).unwrap_err();
        for var in ["PAY_TO", "CHALLENGE"] {
            assert!(probs.iter().any(|p| p.message.contains(var)), "{probs:?}");
        }
        // What is wrong regardless of the variables is still reported.
        let bad = off.replace("path: /x402", "path: x402");
        let probs = parse(&bad, &|_| None).unwrap().resolve().unwrap_err();
        assert_eq!(probs[0].path, "inbound.routes[0].path", "{probs:?}");
    }
}
