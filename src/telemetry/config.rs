//! Telemetry's sections of `sidecar.yaml`: `otlp:` (span export) and `admin:` (the listener of
//! `/metrics`, `/healthz`, `/readyz`). Both are off unless enabled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::util::Problem;

/// OTLP/HTTP (protobuf) export of the spans: `paid_request` and its phases on the seller,
/// `buyer_call` and its seller attempts on the buyer. Off unless enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The collector's traces URL, used as is (OTLP/HTTP: `…:4318/v1/traces`).
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    /// `service.name` of the exported spans (tell replicas apart with `${HOSTNAME}` if needed).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Extra request headers, e.g. `authorization: Bearer ${OTLP_TOKEN}` for a hosted collector.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Share of new traces kept (0.0–1.0); a caller's sampled `traceparent` is always followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Longest wait for one export request.
    #[serde(default = "default_otlp_timeout")]
    pub timeout_ms: u64,
    /// Spans are sent in batches at most this often.
    #[serde(default = "default_otlp_delay")]
    pub batch_delay_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: false,
            endpoint: default_otlp_endpoint(),
            service_name: default_service_name(),
            headers: BTreeMap::new(),
            sample_ratio: default_sample_ratio(),
            timeout_ms: default_otlp_timeout(),
            batch_delay_ms: default_otlp_delay(),
        }
    }
}

fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4318/v1/traces".into()
}
fn default_service_name() -> String {
    "x402-sidecar".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_otlp_timeout() -> u64 {
    3000
}
fn default_otlp_delay() -> u64 {
    1000
}

/// An enabled export that passed the checks: what [`super::otlp::Export::start`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSpec {
    /// An http(s) URL.
    pub endpoint: String,
    pub service_name: String,
    /// Valid HTTP header names and values.
    pub headers: BTreeMap<String, String>,
    /// 0.0–1.0.
    pub sample_ratio: f64,
    pub timeout: Duration,
    pub batch_delay: Duration,
}

impl OtlpConfig {
    /// `None` when export is off, or (with problems at `otlp.*`) when the section is wrong.
    pub(crate) fn resolve(&self, problems: &mut Vec<Problem>) -> Option<OtlpSpec> {
        if !self.enabled {
            return None;
        }
        let found = self.problems();
        let ok = found.is_empty();
        problems.extend(found.into_iter().map(|(field, message)| Problem {
            path: format!("otlp.{field}"),
            message,
        }));
        ok.then(|| OtlpSpec {
            endpoint: self.endpoint.clone(),
            service_name: self.service_name.clone(),
            headers: self.headers.clone(),
            sample_ratio: self.sample_ratio,
            timeout: Duration::from_millis(self.timeout_ms),
            batch_delay: Duration::from_millis(self.batch_delay_ms),
        })
    }

    /// What is wrong with the section, as `(field, sentence)`.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => out.push((
                "endpoint",
                "is not an http(s) URL like http://collector:4318/v1/traces".into(),
            )),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.push(("sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        if self.timeout_ms == 0 {
            out.push(("timeout_ms", "must be at least 1".into()));
        }
        if self.batch_delay_ms == 0 {
            out.push(("batch_delay_ms", "must be at least 1".into()));
        }
        if self.service_name.trim().is_empty() {
            out.push(("service_name", "must not be empty".into()));
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                out.push(("headers", "a header name or value is not valid HTTP".into()));
            }
        }
        out
    }
}

impl OtlpSpec {
    /// One line for `check-config`.
    pub(crate) fn describe(spec: Option<&Self>) -> String {
        match spec {
            Some(s) => format!(
                "spans to {} as {} (sampling {})",
                crate::util::redact_url(&s.endpoint),
                s.service_name,
                s.sample_ratio
            ),
            None => "off".into(),
        }
    }
}

/// The admin listener (Prometheus metrics and health probes). Off unless enabled, so several
/// sidecars on one host do not fight over its port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9402".into()
}

/// An enabled admin listener that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSpec {
    /// An address like `0.0.0.0:9402` (checked), kept as written for the listener and the logs.
    pub listen: String,
}

impl AdminConfig {
    /// `None` when the listener is off, or (with a problem) when its address is wrong.
    pub(crate) fn resolve(&self, problems: &mut Vec<Problem>) -> Option<AdminSpec> {
        if !self.enabled {
            return None;
        }
        match self.listen.parse::<SocketAddr>() {
            Ok(_) => Some(AdminSpec {
                listen: self.listen.clone(),
            }),
            Err(_) => {
                problems.push(Problem {
                    path: "admin.listen".into(),
                    message: "is not an address like 0.0.0.0:9402".into(),
                });
                None
            }
        }
    }
}

impl AdminSpec {
    /// One line for `check-config`.
    pub(crate) fn describe(spec: Option<&Self>) -> String {
        match spec {
            Some(s) => format!("/metrics /healthz /readyz on {}", s.listen),
            None => "disabled".into(),
        }
    }
}
