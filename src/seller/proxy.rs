//! The paywall as a pingora `ProxyHttp` service: the phases it implements, in the order pingora
//! runs them. A paid route is answered whole in `request_filter`; a free route goes on to
//! `upstream_peer` and `upstream_request_filter` and is proxied by pingora.

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use tracing::{Instrument, info};

use crate::http::Reply;
use crate::seller::Paywall;
use crate::seller::config::{Route, UnknownRoutes};
use crate::seller::ctx::Ctx;
use crate::x402::{HEADER_PAYMENT_SIGNATURE, HEADER_X_PAYMENT};

#[async_trait]
impl ProxyHttp for Paywall {
    type CTX = Ctx;

    /// Runs first, once per request: a fresh request id and start time.
    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// Runs when the request header has arrived. May answer the request itself (`Ok(true)`):
    /// an unknown route (404, unless `unknown_routes: proxy`) and every paid route, whole.
    /// A free route returns `Ok(false)` and is proxied.
    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> pingora_core::Result<bool> {
        let method = s.req_header().method.as_str().to_string();
        let path = s.req_header().uri.path().to_string();
        let live = self.live.load_full();
        if method == "GET" && path == "/.well-known/x402" && live.route(&method, &path).is_none() {
            let base = crate::seller::challenge::base_url(s);
            let doc = crate::seller::discovery::well_known(live.routes(), &base);
            write(s, Reply::json(200, &doc), &ctx.request_id).await?;
            return Ok(true);
        }
        let Some(route) = live.route(&method, &path) else {
            if self.unknown == UnknownRoutes::Proxy {
                return Ok(false);
            }
            let reply = Reply::error(
                404,
                "no_such_route",
                format!("{method} {path} is not served here"),
            );
            write(s, reply, &ctx.request_id).await?;
            return Ok(true);
        };
        if route.offers.is_empty() {
            return Ok(false);
        }
        self.paid_request(s, route, ctx).await;
        Ok(true)
    }

    /// Runs last, once per request, answered or proxied: one access-log line and the RED
    /// counters (`x402_http_requests_total`, `x402_http_request_duration_seconds`). The path
    /// label is the configured route's, or `unmatched` (no label per unknown URL).
    async fn logging(&self, s: &mut Session, e: Option<&pingora_core::Error>, ctx: &mut Ctx) {
        let req = s.req_header();
        let method = req.method.as_str().to_string();
        let path = req.uri.path().to_string();
        let route = self
            .live
            .load()
            .route(&method, &path)
            .map_or("unmatched".to_string(), |r| r.path.clone());
        let status = s.response_written().map_or(0, |h| h.status.as_u16());
        let took = ctx.started.elapsed();
        crate::telemetry::with(|m| m.answer(&method, &route, status, took));
        let trace_id = crate::telemetry::trace_id(&s.req_header().headers);
        info!(
            request_id = %ctx.request_id,
            method = %method,
            path = %path,
            status,
            ms = took.as_millis() as u64,
            trace_id = trace_id.as_deref().unwrap_or("-"),
            model_call_id = ctx.model_call_id.get().map_or("-", String::as_str),
            error = e.map(|e| e.to_string()).as_deref().unwrap_or("-"),
            "access"
        );
    }

    /// Runs for a proxied (free) request only: the upstream it goes to.
    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.addr,
            false,
            String::new(),
        )))
    }

    /// Runs for a proxied (free) request, before it is sent: adds the request id and strips
    /// the payment headers (a free route never passes a payment on).
    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora_core::Result<()> {
        req.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        req.remove_header(HEADER_PAYMENT_SIGNATURE);
        req.remove_header(HEADER_X_PAYMENT);
        Ok(())
    }
}

impl Paywall {
    /// A paid route, in its `paid_request` span: the paid path's answer, written; or, when the
    /// buyer is gone, no answer and no keep-alive.
    async fn paid_request(&self, s: &mut Session, route: &Route, ctx: &Ctx) {
        let client = client_ip(s, &self.live.load().trusted_proxies);
        let span = tracing::info_span!(
            "paid_request",
            otel.kind = "server",
            request_id = %ctx.request_id,
            client = %client,
            route = %route.id(),
            payment_id = tracing::field::Empty,
            payer = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            model_call_id = tracing::field::Empty,
        );
        if let Some(t) = crate::telemetry::trace_id(&s.req_header().headers) {
            span.record("trace_id", t.as_str());
        }
        crate::telemetry::otlp::adopt_parent(&span, &s.req_header().headers);
        let headers = &s.req_header().headers;
        let unpaid = !headers.contains_key(HEADER_PAYMENT_SIGNATURE)
            && !headers.contains_key(HEADER_X_PAYMENT);
        let limited = if unpaid {
            self.over_ip_limit(&client)
        } else {
            None
        };
        let answer = match limited {
            Some(reply) => Some(reply),
            None => {
                self.paid(s, route, ctx, &client)
                    .instrument(span.clone())
                    .await
            }
        };
        let _entered = span.enter();
        match answer {
            Some(reply) => {
                // On the exported span only: recorded through `tracing`, a JSON log would
                // format the span's fields again for a value no line inside it shows.
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                span.set_attribute("http.response.status_code", i64::from(reply.status));
                if let Err(e) = write(s, reply, &ctx.request_id).await {
                    info!(request_id = %ctx.request_id, "the buyer left before the answer was written: {e}");
                }
            }
            None => s.set_keepalive(None),
        }
    }
}

/// The caller's address: the TCP peer, or — only when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
fn client_ip(s: &Session, trusted: &[std::net::IpAddr]) -> String {
    let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let Some(peer) = peer else {
        return "unknown".into();
    };
    if !trusted.contains(&peer) {
        return peer.to_string();
    }
    let xff = s.req_header().headers.get_all("x-forwarded-for");
    let hops: Vec<std::net::IpAddr> = xff
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(&peer)
        .to_string()
}

/// Write a reply the paywall answers itself, with the headers every such answer carries.
async fn write(s: &mut Session, reply: Reply, request_id: &str) -> pingora_core::Result<()> {
    let mut h = ResponseHeader::build(reply.status, Some(reply.headers.len() + 5))?;
    h.insert_header("Content-Type", reply.content_type)?;
    h.insert_header("Cache-Control", "no-store")?;
    h.insert_header("Vary", "PAYMENT-SIGNATURE, X-PAYMENT")?;
    h.insert_header("X-Request-Id", request_id)?;
    h.insert_header("Content-Length", reply.body.len().to_string())?;
    for (k, v) in reply.headers {
        h.insert_header(k, v)?;
    }
    s.write_response_header(Box::new(h), false).await?;
    s.write_response_body(Some(reply.body), true).await
}

/// The recovery sweep of this node's unfinished payments, run once when the server starts
/// (a pingora background service; see `machine::sweep`).
pub(crate) struct Recovery {
    store: std::sync::Arc<dyn crate::store::ReplayStore>,
    backends: std::sync::Arc<crate::seller::settle::Backends>,
    lease: crate::seller::machine::LeaseSpec,
    started_ms: u64,
}

/// How many unfinished records one sweep looks at.
const SWEEP_LIMIT: usize = 10_000;

impl Paywall {
    /// The recovery sweep for this paywall's store and backends.
    pub(crate) fn recovery(&self) -> Recovery {
        Recovery {
            store: self.store.clone(),
            backends: self.backends.clone(),
            lease: self.lease.clone(),
            started_ms: crate::seller::machine::now_ms(),
        }
    }
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for Recovery {
    async fn start(&self, _shutdown: pingora_core::server::ShutdownWatch) {
        let backends = self.backends.clone();
        let by_chain = move |id: u64| backends.get(id);
        crate::seller::machine::sweep(
            self.store.as_ref(),
            &by_chain,
            &self.lease,
            self.started_ms,
            SWEEP_LIMIT,
        )
        .await;
    }
}
