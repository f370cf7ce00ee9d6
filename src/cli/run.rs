//! `run`: build the services the configuration enables (seller, buyer, facilitator, admin) on
//! one pingora server, and run them until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;

use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;

use super::{Failure, LogFormat, Outcome, failed, resolve};
use crate::audit::Journal;
use crate::buyer::Payer;
use crate::config::Resolved;
use crate::facilitator::FacilitatorApp;
use crate::seller::Paywall;
use crate::telemetry::otlp::Export;
use crate::telemetry::{Admin, Readiness, logs};
use crate::util::redact_url;

/// `run`: resolve the configuration, start logs (and span export), serve until SIGTERM.
pub(super) fn run(path: &Path, log_format: LogFormat) -> Outcome {
    let r = resolve(path)?;
    let export = if r.raw.otlp.enabled {
        Some(Export::start(&r.raw.otlp).map_err(failed("otlp"))?)
    } else {
        None
    };
    logs::init(log_format == LogFormat::Json, export.as_ref());
    if let Some(_e) = &export {
        tracing::info!(endpoint = %redact_url(&r.raw.otlp.endpoint), service = %r.raw.otlp.service_name, sample_ratio = r.raw.otlp.sample_ratio, "exporting spans over OTLP/HTTP");
    }
    let done = serve(path, &r);
    if let Some(e) = export {
        e.shutdown();
    }
    done
}

/// Build the services the config enables and run them until SIGTERM/SIGINT.
fn serve(path: &Path, r: &Resolved) -> Outcome {
    if !r.raw.inbound.enabled && r.outbound.is_none() && !r.raw.facilitator.enabled {
        return Err(Failure::usage(format!(
            "{}: inbound.enabled, outbound.enabled and facilitator.enabled are all false, so there is nothing to serve; enable one",
            path.display()
        )));
    }
    let conf = ServerConf {
        threads: r.raw.server.threads,
        grace_period_seconds: Some(r.raw.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let journal = if r.raw.audit.enabled {
        let j = Journal::open(&r.raw.audit.dir, r.raw.audit.retention_days)
            .map_err(failed("audit journal"))?;
        Some(Arc::new(j))
    } else {
        tracing::warn!("audit.enabled is false: paid requests are not journaled");
        None
    };
    let mut readiness = Readiness::default();
    if r.raw.inbound.enabled {
        let paywall = Paywall::new(r, journal.clone()).map_err(failed(""))?;
        let ready = paywall.readiness();
        readiness.chains.extend(ready.chains);
        readiness.facilitators.extend(ready.facilitators);
        readiness.store = ready.store;
        readiness.upstream = ready.upstream;
        let mut svc =
            pingora_proxy::http_proxy_service_with_name(&server.configuration, paywall, "inbound");
        svc.add_tcp(&r.raw.inbound.listen);
        server.add_service(svc);
        tracing::info!(listen = %r.raw.inbound.listen, upstream = %r.raw.inbound.upstream.url, routes = r.routes.len(), "inbound paywall listening");
    }
    if let Some(ob) = r.outbound.clone() {
        let listen = ob.listen.clone();
        let (sellers, wallet) = (ob.sellers.len(), ob.signer.address());
        let payer = Payer::new(ob, &r.raw.store, journal.clone()).map_err(failed("outbound"))?;
        let mut svc = pingora_core::services::listening::Service::new(
            "outbound".to_string(),
            pingora_core::apps::http_app::HttpServer::new_app(payer),
        );
        svc.add_tcp(&listen);
        server.add_service(svc);
        tracing::info!(%listen, sellers, %wallet, "outbound paying proxy listening");
    }
    if r.raw.facilitator.enabled {
        let app = FacilitatorApp::new(r)
            .map_err(failed("facilitator"))?
            .with_journal(journal.clone());
        readiness.chains.extend(app.readiness_chains());
        let networks = app.networks().join(", ");
        let mut svc = pingora_core::services::listening::Service::new(
            "facilitator".to_string(),
            pingora_core::apps::http_app::HttpServer::new_app(app),
        );
        svc.add_tcp(&r.raw.facilitator.listen);
        server.add_service(svc);
        tracing::info!(listen = %r.raw.facilitator.listen, %networks, "facilitator listening: GET /supported, POST /verify, POST /settle");
    }
    if r.raw.admin.enabled {
        let admin = Admin { readiness };
        let mut svc = pingora_core::services::listening::Service::new(
            "admin".to_string(),
            pingora_core::apps::http_app::HttpServer::new_app(admin),
        );
        svc.threads = Some(1);
        svc.add_tcp(&r.raw.admin.listen);
        server.add_service(svc);
        tracing::info!(listen = %r.raw.admin.listen, "admin listener: /metrics /healthz /readyz");
    }
    server.run(pingora_core::server::RunArgs::default());
    // The services have stopped: whatever the audit journal still holds goes to disk first.
    if let Some(j) = journal
        && let Err(e) = j.flush()
    {
        tracing::error!("audit journal: {e}");
        return Err(Failure::reported());
    }
    Ok(())
}
