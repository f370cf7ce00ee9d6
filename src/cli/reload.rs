//! Reload without restart: on `SIGHUP` the configuration file is read and checked again; when
//! it passes, the settings a reload may change are applied at once (the seller's routes,
//! prices, pricing policies, disclaimer, trusted proxies and rate limits; the buyer's sellers
//! and budgets); when it does not, or when it changes a setting only a restart can change, the
//! running configuration is kept and the reason logged. Connections are not dropped; the audit
//! journal's writer is untouched.

use std::path::PathBuf;

use super::resolve;
use crate::config::Resolved;
use crate::telemetry;

/// The background service that waits for `SIGHUP`.
pub(super) struct Reload {
    pub path: PathBuf,
    /// The configuration the process started with.
    pub started: Resolved,
    pub seller: Option<crate::seller::Reloader>,
    pub buyer: Option<crate::buyer::Reloader>,
}

impl Reload {
    /// Read, check and apply the file once: `Ok` with what changed, or every reason it was
    /// refused (nothing applied).
    pub(super) fn once(&self) -> Result<(), Vec<String>> {
        let next = resolve(&self.path).map_err(|f| vec![f.message])?;
        let was = &self.started;
        let mut fixed = Vec::new();
        let mut same = |name: &str, a: String, b: String| {
            if a != b {
                fixed.push(format!("{name} changed: it takes a restart, not a reload"));
            }
        };
        same(
            "server",
            format!("{:?}", was.server),
            format!("{:?}", next.server),
        );
        same(
            "store",
            format!("{:?}", was.store),
            format!("{:?}", next.store),
        );
        same(
            "audit",
            format!("{:?}", was.audit),
            format!("{:?}", next.audit),
        );
        same(
            "admin",
            format!("{:?}", was.admin),
            format!("{:?}", next.admin),
        );
        same(
            "otlp",
            format!("{:?}", was.otlp),
            format!("{:?}", next.otlp),
        );
        same(
            "facilitator",
            format!("{:?}", was.facilitator),
            format!("{:?}", next.facilitator),
        );
        same(
            "inbound.enabled",
            was.inbound.seller().is_some().to_string(),
            next.inbound.seller().is_some().to_string(),
        );
        same(
            "outbound.enabled",
            was.outbound.is_some().to_string(),
            next.outbound.is_some().to_string(),
        );
        if !fixed.is_empty() {
            return Err(fixed);
        }
        // Both sides are checked before either is changed.
        if let (Some(r), Some(s)) = (&self.seller, next.inbound.seller()) {
            r.check(s)?;
        }
        if let (Some(r), Some(o)) = (&self.buyer, &next.outbound) {
            r.check(o)?;
        }
        if let (Some(r), Some(s)) = (&self.seller, next.inbound.seller()) {
            r.apply(s)?;
        }
        if let (Some(r), Some(o)) = (&self.buyer, &next.outbound) {
            r.apply(o)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Reload {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "SIGHUP cannot be watched, so the configuration cannot be reloaded: {e}"
                );
                return;
            }
        };
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = shutdown.changed() => return,
            }
            let path = self.path.display().to_string();
            match self.once() {
                Ok(()) => {
                    telemetry::with(|m| m.reload(true));
                    tracing::info!(config = %path, "SIGHUP: configuration reloaded (routes, prices, limits, sellers, budgets)");
                }
                Err(why) => {
                    telemetry::with(|m| m.reload(false));
                    tracing::error!(config = %path, "SIGHUP: configuration reload refused, the running configuration is kept: {}", why.join("; "));
                }
            }
        }
    }
}
