//! The pingora `ServeHttp` app: read roma-01's request, route it (`POST /x402` or the
//! forward-proxy form naming a configured seller), run the call inside its span.

use async_trait::async_trait;
use bytes::Bytes;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use tracing::Instrument;

use super::Payer;
use super::answer::{boxed, invalid_request};
use super::config::Seller;
use crate::http::{BodyError, read_body};
use crate::util::new_id;

/// The answer to a `CONNECT`: a tunnel would hide the exchange the proxy has to pay for.
const CONNECT_REFUSED: &str = "this proxy pays for the exchanges it sees, so it does not tunnel (CONNECT): configure the seller with its https:// URL in outbound.sellers and send plain HTTP to this sidecar (POST http://<sidecar>/x402, or the seller's URL as http://… through this proxy); the sidecar speaks TLS to the seller";

/// Most bytes of a request body roma-01 may send.
const MAX_BODY: usize = 64 * 1024;

async fn read_request(s: &mut ServerSession) -> Result<Bytes, Box<Response<Vec<u8>>>> {
    read_body(s, MAX_BODY).await.map_err(|e| match e {
        BodyError::TooLarge => boxed(413, "the request body is larger than 64 KiB"),
        BodyError::Unreadable => boxed(400, "the request body could not be read"),
    })
}

#[async_trait]
impl ServeHttp for Payer {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let started = std::time::Instant::now();
        let mut r = self.respond(s).await;
        // RED on this listener too: one count and one duration per answer, by a bounded path
        // label (`/x402`, `proxy` for the forward-proxy form, `unmatched`).
        let req = s.req_header();
        let method = req.method.as_str().to_string();
        let raw = req.raw_path();
        let path = if raw.starts_with(b"http://") || raw.starts_with(b"https://") {
            "proxy"
        } else if req.uri.path() == "/x402" && req.method != http::Method::CONNECT {
            "/x402"
        } else {
            "unmatched"
        };
        let status = r.status().as_u16();
        let took = started.elapsed();
        crate::telemetry::with(|m| {
            m.answer_on(
                crate::telemetry::Listener::Outbound,
                &method,
                path,
                status,
                took,
            )
        });
        tracing::info!(
            method = %method,
            path,
            status,
            ms = took.as_millis() as u64,
            trace_id = crate::telemetry::trace_id(&req.headers).as_deref().unwrap_or("-"),
            "access"
        );
        // A length lets roma-01's client keep the connection alive (else the body is
        // close-delimited and every call opens a new connection).
        let len = http::HeaderValue::from(r.body().len());
        r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
        r
    }
}

impl Payer {
    async fn respond(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        if s.req_header().method == http::Method::CONNECT {
            return *boxed(405, CONNECT_REFUSED);
        }
        let call_id = new_id("call");
        let raw = String::from_utf8_lossy(s.req_header().raw_path()).into_owned();
        let path = s.req_header().uri.path().to_string();
        let sellers = match self.route(&raw, &path) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let body = match read_request(s).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let request = match crate::advisor::parse(&body) {
            Ok(r) => r,
            Err(details) => {
                return invalid_request(details);
            }
        };
        let owner = request
            .account
            .owner
            .as_deref()
            .and_then(|o| self.cfg.owners.render(o));
        let span = tracing::info_span!(
            "buyer_call",
            otel.kind = "server",
            call_id = %call_id,
            owner = owner.as_deref(),
            http.response.status_code = tracing::field::Empty,
            strategy_source = tracing::field::Empty,
        );
        crate::telemetry::otlp::adopt_parent(&span, &s.req_header().headers);
        let r = self
            .call(body, sellers.iter().collect(), &call_id, owner.as_deref())
            .instrument(span.clone())
            .await;
        span.record("http.response.status_code", r.status().as_u16());
        if let Some(src) = r
            .headers()
            .get("X-Strategy-Source")
            .and_then(|v| v.to_str().ok())
        {
            span.record("strategy_source", src);
        }
        r
    }

    /// Sellers for a request: the configured list for `/x402`, or the one named by an
    /// absolute-form URL. `Err` carries the answer for anything else.
    fn route(&self, raw_path: &str, path: &str) -> Result<Vec<Seller>, Box<Response<Vec<u8>>>> {
        let live = self.live.load();
        if raw_path.starts_with("http://") || raw_path.starts_with("https://") {
            let target = reqwest::Url::parse(raw_path)
                .map_err(|_| boxed(400, "not a valid absolute URL"))?;
            // An `http://` URL also names the same seller configured as `https://`: roma-01
            // speaks plain HTTP to this proxy, the sidecar speaks TLS to the seller.
            let as_https = (target.scheme() == "http")
                .then(|| {
                    let mut u = target.clone();
                    u.set_scheme("https").ok().map(|_| u)
                })
                .flatten();
            return live
                .sellers
                .iter()
                .find(|s| s.url == target)
                .or_else(|| {
                    as_https
                        .as_ref()
                        .and_then(|u| live.sellers.iter().find(|s| &s.url == u))
                })
                .map(|s| vec![s.clone()])
                .ok_or_else(|| boxed(403, "that URL is not a configured seller; only sellers named in the configuration are paid"));
        }
        if path == "/x402" {
            return Ok(live.sellers.clone());
        }
        Err(boxed(
            404,
            "use POST /x402, or this sidecar as an HTTP proxy for a configured seller",
        ))
    }
}
