//! `run`: build the services the configuration enables (seller, buyer, facilitator, admin) on
//! one pingora server, and run them until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;

use super::{Failure, LogFormat, Outcome, failed, preflight, resolve};
use crate::audit::Journal;
use crate::buyer::Payer;
use crate::buyer::config::Outbound;
use crate::config::Resolved;
use crate::facilitator::{self, FacilitatorApp};
use crate::seller::Paywall;
use crate::seller::config::Seller;
use crate::store::StoreSpec;
use crate::telemetry::otlp::Export;
use crate::telemetry::{Admin, AdminSpec, Flag, GasWatch, Readiness, logs};
use crate::util::redact_url;

/// `run`: resolve the configuration, start logs (and span export), serve until SIGTERM.
pub(super) fn run(path: &Path, log_format: LogFormat) -> Outcome {
    // A file-size limit (`ulimit -f`, a container's) must not kill the sidecar in the middle of
    // a paid call: with SIGXFSZ ignored, a write past the limit fails with EFBIG, and the audit
    // journal handles it like a full disk (no settlement it cannot record; records after a
    // settlement wait in its spill).
    // SAFETY: called once at start, before any thread is spawned.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let r = resolve(path)?;
    let export = match &r.otlp {
        Some(spec) => Some(Export::start(spec).map_err(failed("otlp"))?),
        None => None,
    };
    let logs = logs::init(log_format == LogFormat::Json, export.as_ref(), true);
    if let (Some(_e), Some(spec)) = (&export, &r.otlp) {
        tracing::info!(endpoint = %redact_url(&spec.endpoint), service = %spec.service_name, sample_ratio = spec.sample_ratio, "exporting spans over OTLP/HTTP");
    }
    let done = serve(path, &r);
    if let Some(e) = export {
        e.shutdown();
    }
    drop(logs);
    done
}

/// Build the services the config enables and run them until SIGTERM/SIGINT.
fn serve(path: &Path, r: &Resolved) -> Outcome {
    if r.inbound.seller().is_none() && r.outbound.is_none() && r.facilitator.is_none() {
        return Err(Failure::usage(format!(
            "{}: inbound.enabled, outbound.enabled and facilitator.enabled are all false, so there is nothing to serve; enable one",
            path.display()
        )));
    }
    let conf = ServerConf {
        threads: r.server.threads,
        grace_period_seconds: Some(r.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let journal = match &r.audit {
        Some(spec) => {
            let j = Arc::new(spec.open().map_err(failed("audit journal"))?);
            let watched = Arc::downgrade(&j);
            crate::telemetry::on_render(move |m| {
                if let Some(j) = watched.upgrade() {
                    let s = j.spill_stats();
                    m.audit_spill(crate::telemetry::SpillCounts {
                        pending: s.pending,
                        spilled: s.spilled,
                        journaled: s.journaled,
                        dropped: s.dropped,
                    });
                }
            });
            Some(j)
        }
        None => {
            tracing::warn!("audit.enabled is false: paid requests are not journaled");
            None
        }
    };
    // A store that does not answer at start is said now, by its URL (without credentials),
    // not at the first paid call; the sidecar still starts (the store may come up later, and
    // `/readyz` reports it meanwhile).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed("cannot start the async runtime"))?;
    if let Err(e) = rt.block_on(crate::store::reachable(&r.store, Duration::from_secs(2))) {
        tracing::error!("{e}");
    }
    // The preflight on chain: a configuration the chain contradicts (chain id, the token's
    // decimals or EIP-712 domain, payTo the token) does not start; checks an unreachable RPC
    // kept from being made are logged, shown by `/readyz`, and repeated in the background.
    let pending = rt
        .block_on(preflight::at_start(r, Duration::from_secs(10)))
        .map_err(Failure::new)?;
    drop(rt);
    let mut readiness = Readiness::default();
    let mut reload = super::reload::Reload {
        path: path.to_path_buf(),
        started: r.clone(),
        seller: None,
        buyer: None,
    };
    if r.inbound.seller().is_some() || r.facilitator.is_some() {
        let flag = if pending.is_empty() {
            Flag::new(true, "the chain and token checks passed at start")
        } else {
            Flag::new(false, format!("not yet made: {}", pending.join("; ")))
        };
        let flag = Arc::new(flag);
        if !pending.is_empty() {
            server.add_service(pingora_core::services::background::background_service(
                "preflight",
                preflight::Repeat {
                    resolved: r.clone(),
                    flag: flag.clone(),
                    every: Duration::from_secs(30),
                },
            ));
        }
        readiness.flags.push(("preflight".into(), flag));
    }
    if let Some(seller) = r.inbound.seller() {
        let (ready, reloader) = add_seller(&mut server, seller, &r.store, &journal)?;
        readiness.merge(ready);
        reload.seller = Some(reloader);
    }
    if let Some(ob) = &r.outbound {
        reload.buyer = Some(add_buyer(&mut server, ob, &r.store, &journal)?);
        readiness
            .listeners
            .push(("outbound".into(), ob.listen.clone()));
    }
    if let Some(service) = &r.facilitator {
        readiness.merge(add_facilitator(&mut server, service, &r.store, &journal)?);
    }
    add_gas_watch(&mut server, &readiness);
    server.add_service(pingora_core::services::background::background_service(
        "reload on SIGHUP",
        reload,
    ));
    if let Some(spec) = &r.admin {
        let openapi = r
            .inbound
            .seller()
            .map(|s| crate::seller::discovery::openapi(&s.routes, "x402-sidecar paid API"));
        add_admin(&mut server, spec, readiness, openapi);
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

/// The paywall on `inbound.listen`; returns what `/readyz` checks for it.
fn add_seller(
    server: &mut Server,
    seller: &Seller,
    store: &StoreSpec,
    journal: &Option<Arc<Journal>>,
) -> Result<(Readiness, crate::seller::Reloader), Failure> {
    let paywall = Paywall::new(seller, store, journal.clone()).map_err(failed(""))?;
    let reloader = paywall.reloader(seller);
    let mut ready = paywall.readiness();
    ready
        .listeners
        .push(("inbound".into(), seller.listen.clone()));
    // What a crash of this node left unfinished is resolved first thing (a bounded sweep).
    let recovery = paywall.recovery();
    server.add_service(pingora_core::services::background::background_service(
        "inbound recovery",
        recovery,
    ));
    let mut svc =
        pingora_proxy::http_proxy_service_with_name(&server.configuration, paywall, "inbound");
    svc.add_listener(listener(&seller.listen));
    server.add_service(svc);
    tracing::info!(listen = %seller.listen, upstream = %seller.upstream.text, routes = seller.routes.len(), "inbound paywall listening");
    Ok((ready, reloader))
}

/// The paying proxy on `outbound.listen`.
fn add_buyer(
    server: &mut Server,
    ob: &Outbound,
    store: &StoreSpec,
    journal: &Option<Arc<Journal>>,
) -> Result<crate::buyer::Reloader, Failure> {
    let listen = ob.listen.clone();
    let (sellers, wallet) = (ob.sellers.len(), ob.signer.address());
    let payer = Payer::new(ob.clone(), store, journal.clone()).map_err(failed("outbound"))?;
    let reloader = payer.reloader();
    // Every signed authorization followed to its end on chain, also those read back from the
    // ledger after a restart.
    server.add_service(pingora_core::services::background::background_service(
        "buyer watcher",
        crate::buyer::WatchService(payer.watcher()),
    ));
    let mut svc = pingora_core::services::listening::Service::new(
        "outbound".to_string(),
        pingora_core::apps::http_app::HttpServer::new_app(payer),
    );
    svc.add_listener(listener(&listen));
    server.add_service(svc);
    tracing::info!(%listen, sellers, %wallet, "outbound paying proxy listening");
    Ok(reloader)
}

/// The facilitator API on `facilitator.listen`; returns what `/readyz` checks for it.
fn add_facilitator(
    server: &mut Server,
    service: &facilitator::config::Service,
    store: &StoreSpec,
    journal: &Option<Arc<Journal>>,
) -> Result<Readiness, Failure> {
    let app = FacilitatorApp::with_leases(service, crate::store::nonce_leases(store))
        .map_err(failed("facilitator"))?
        .with_journal(journal.clone());
    let ready = Readiness {
        listeners: vec![("facilitator".into(), service.listen.clone())],
        chains: app.readiness_chains(),
        ..Readiness::default()
    };
    let networks = app.networks().join(", ");
    let mut svc = pingora_core::services::listening::Service::new(
        "facilitator".to_string(),
        pingora_core::apps::http_app::HttpServer::new_app(app),
    );
    svc.add_listener(listener(&service.listen));
    server.add_service(svc);
    tracing::info!(listen = %service.listen, %networks, "facilitator listening: GET /supported, POST /verify, POST /settle");
    Ok(ready)
}

/// Bytes an answer may gather before they are sent: a whole 402 (headers of a few KB: the
/// `PAYMENT-REQUIRED` challenge alone is one to two, the body as much) leaves in one `send`,
/// where pingora's default (one MSS, 1460 bytes) sends the header and the body apart. Streamed
/// bodies are still flushed chunk by chunk, as pingora does.
const WRITE_BUFFER: usize = 8 * 1024;

/// Bytes read from a connection at a time: pingora's default is 64 KiB per connection, held
/// for as long as it is open; a request to the sidecar is a few KB (bodies are capped by
/// `inbound.max_body_bytes` and read in as many reads as they need).
const READ_BUFFER: usize = 16 * 1024;

/// A TCP listener on `addr` with [`READ_BUFFER`] and [`WRITE_BUFFER`].
fn listener(addr: &str) -> pingora_core::listeners::ListenerConfig {
    pingora_core::listeners::ListenerConfig::tcp(addr).l4_buffer(
        pingora_core::listeners::L4BufferSettings {
            read: Some(READ_BUFFER),
            write: Some(WRITE_BUFFER),
        },
    )
}

/// The settler keys' balances, read at start and every 30 s (one reader per network).
fn add_gas_watch(server: &mut Server, readiness: &Readiness) {
    let mut chains: Vec<(String, Arc<crate::evm::Chain>)> = Vec::new();
    for (network, chain) in &readiness.chains {
        if !chain.settlers().is_empty() && !chains.iter().any(|(n, _)| n == network) {
            chains.push((network.clone(), chain.clone()));
        }
    }
    if chains.is_empty() {
        return;
    }
    let watch = GasWatch {
        chains,
        every: std::time::Duration::from_secs(30),
    };
    server.add_service(pingora_core::services::background::background_service(
        "settler gas",
        watch,
    ));
}

/// `/metrics`, `/livez` (`/healthz`), `/readyz` and `/readyz?settle` (over every service's
/// checks) on `admin.listen`.
fn add_admin(
    server: &mut Server,
    spec: &AdminSpec,
    readiness: Readiness,
    openapi: Option<serde_json::Value>,
) {
    let admin = Admin { readiness, openapi };
    let mut svc = pingora_core::services::listening::Service::new(
        "admin".to_string(),
        pingora_core::apps::http_app::HttpServer::new_app(admin),
    );
    svc.threads = Some(1);
    svc.add_tcp(&spec.listen);
    server.add_service(svc);
    tracing::info!(listen = %spec.listen, "admin listener: /metrics /livez /readyz /readyz?settle");
}
