//! The facilitator's HTTP face: the request and answer bodies, and the pingora app with its
//! routes (`GET /supported`, `POST /verify`, `POST /settle`).

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use tracing::info;

use super::FacilitatorApp;
use super::verify::{Checked, Invalid};
use crate::evm::SettleOutcome;
use crate::http::{BodyError, Reply, read_body};
use crate::telemetry;
use crate::x402::reason::Reason;
use crate::x402::types::*;

/// Largest request body accepted.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// A request that is not a facilitator request at all (answered with a 4xx, not a verdict).
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    #[error("the request body is larger than 64 KiB")]
    TooLarge,
    #[error("the request body could not be read")]
    Unreadable,
    #[error(
        "the body is not a facilitator request {{x402Version, paymentPayload, paymentRequirements}}: {0}"
    )]
    BadJson(String),
}

impl RequestError {
    fn status(&self) -> u16 {
        match self {
            RequestError::TooLarge => 413,
            RequestError::Unreadable | RequestError::BadJson(_) => 400,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RequestError::TooLarge => "body_too_large",
            RequestError::Unreadable | RequestError::BadJson(_) => "invalid_request",
        }
    }
}

/// Parse a request body.
pub(super) fn parse_request(body: &[u8]) -> Result<FacilitatorRequest, RequestError> {
    if body.len() > MAX_BODY {
        return Err(RequestError::TooLarge);
    }
    crate::x402::redact::from_slice(body).map_err(RequestError::BadJson)
}

/// The `/verify` answer for a verdict.
pub(super) fn verify_response(v: &Result<Checked, Invalid>) -> VerifyResponse {
    match v {
        Ok(c) => VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(c.payer().to_checksum(None)),
        },
        Err(i) => VerifyResponse {
            is_valid: false,
            invalid_reason: Some(i.rejection.reason.code().into()),
            invalid_message: Some(i.rejection.message.clone()),
            payer: i.payer.map(|a| a.to_checksum(None)),
        },
    }
}

/// The `/settle` answer for a payment refused before settlement.
pub(super) fn refused_settle(i: &Invalid) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some(i.rejection.reason.code().into()),
        payer: i.payer,
        transaction: String::new(),
        network: i.network.clone(),
        amount: None,
        error_message: Some(i.rejection.message.clone()),
    }
}

/// The `/settle` answer for a settlement's outcome.
pub(super) fn settle_response(c: &Checked, outcome: &SettleOutcome) -> SettleResponse {
    let mut r = SettleResponse {
        success: false,
        error_reason: None,
        payer: Some(c.payer()),
        transaction: String::new(),
        network: c.network.clone(),
        amount: None,
        error_message: None,
    };
    match outcome {
        SettleOutcome::Settled { tx } => {
            r.success = true;
            r.transaction = format!("{tx:#x}");
            r.amount = Some(c.requirements.amount.to_string());
        }
        SettleOutcome::Failed {
            reason,
            message,
            tx,
        } => {
            r.error_reason = Some(reason.code().into());
            r.error_message = Some(message.clone());
            r.transaction = tx.map(|t| format!("{t:#x}")).unwrap_or_default();
        }
        SettleOutcome::Pending { tx } => {
            r.error_reason = Some(Reason::SettlementPending.code().into());
            r.error_message = Some(format!(
                "transaction {tx:#x} was broadcast but has no receipt yet; look it up before paying again"
            ));
            r.transaction = format!("{tx:#x}");
        }
        // A local chain never reports this (only a remote facilitator's client does).
        SettleOutcome::Unknown { message } => {
            r.error_reason = Some(Reason::UnexpectedSettleError.code().into());
            r.error_message = Some(message.clone());
        }
    }
    r
}

/// The three routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Supported,
    Verify,
    Settle,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/supported" => Endpoint::Supported,
            "/verify" => Endpoint::Verify,
            "/settle" => Endpoint::Settle,
            _ => return None,
        })
    }

    /// The metric label and log field.
    fn name(self) -> &'static str {
        match self {
            Endpoint::Supported => "supported",
            Endpoint::Verify => "verify",
            Endpoint::Settle => "settle",
        }
    }

    fn method(self) -> http::Method {
        match self {
            Endpoint::Supported => http::Method::GET,
            Endpoint::Verify | Endpoint::Settle => http::Method::POST,
        }
    }
}

impl FacilitatorApp {
    async fn respond(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path().to_string();
        let Some(endpoint) = Endpoint::of(&path) else {
            return json_reply(
                404,
                &json!({"error": "no_such_route", "message": "use GET /supported, POST /verify or POST /settle"}),
                None,
            );
        };
        let allowed = endpoint.method();
        if s.req_header().method != allowed {
            return json_reply(
                405,
                &json!({"error": "method_not_allowed", "message": format!("{path} takes {allowed}")}),
                Some(allowed.as_str()),
            );
        }
        if endpoint == Endpoint::Supported {
            return json_reply(200, &self.supported(), None);
        }
        if let Err(refused) = self.admit(s) {
            count(endpoint, "refused");
            return refused.into_response();
        }
        let req = match read_request(s).await {
            Ok(r) => r,
            Err(e) => return refuse_request(s, endpoint, &e),
        };
        if endpoint == Endpoint::Verify {
            self.answer_verify(&req).await
        } else {
            self.answer_settle(&req).await
        }
    }

    async fn answer_verify(&self, req: &FacilitatorRequest) -> Response<Vec<u8>> {
        let v = self.verify(req).await;
        let outcome = if v.is_ok() { "valid" } else { "invalid" };
        log_verdict(outcome, &v);
        count(Endpoint::Verify, outcome);
        json_reply(200, &verify_response(&v), None)
    }

    async fn answer_settle(&self, req: &FacilitatorRequest) -> Response<Vec<u8>> {
        let (r, outcome) = self.settle(req).await;
        info!(
            endpoint = Endpoint::Settle.name(),
            network = %r.network,
            payer = %r.payer.map(|a| format!("{a:#x}")).unwrap_or_default(),
            outcome,
            reason = r.error_reason.as_deref().unwrap_or(""),
            tx = %r.transaction,
            "facilitator settle: {}",
            r.error_message.as_deref().unwrap_or("settled")
        );
        count(Endpoint::Settle, outcome);
        json_reply(200, &r, None)
    }
}

impl FacilitatorApp {
    /// Authentication (when `auth` is configured: 401 without a known bearer key) and the
    /// per-client rate limit (429), before the body is read.
    fn admit(&self, s: &ServerSession) -> Result<(), Reply> {
        let client = if self.keys.is_empty() {
            s.client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string())
                .unwrap_or_default()
        } else {
            let given = s
                .req_header()
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let known = given.and_then(|g| {
                self.keys
                    .iter()
                    .find(|k| same(k.key.expose().as_bytes(), g.as_bytes()))
            });
            match known {
                Some(k) => k.name.clone(),
                None => {
                    info!("facilitator request refused: no valid bearer key");
                    return Err(Reply::error(
                        401,
                        "unauthorized",
                        "this facilitator needs `Authorization: Bearer <key>` with a key it was given",
                    )
                    .with("WWW-Authenticate", "Bearer"));
                }
            }
        };
        if let Some(l) = &self.limit
            && let Err(over) = l.check(&client)
        {
            telemetry::with(|m| m.rate_limited(telemetry::RateLimit::FacilitatorClient));
            return Err(over.reply("rate_limited", "from this client", l.limit()));
        }
        Ok(())
    }
}

/// Compare two keys in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body, size-limited, as a facilitator request.
async fn read_request(s: &mut ServerSession) -> Result<FacilitatorRequest, RequestError> {
    let body = read_body(s, MAX_BODY).await.map_err(|e| match e {
        BodyError::TooLarge => RequestError::TooLarge,
        BodyError::Unreadable => RequestError::Unreadable,
    })?;
    parse_request(&body)
}

/// The 4xx for a body that is not a facilitator request.
fn refuse_request(
    s: &mut ServerSession,
    endpoint: Endpoint,
    e: &RequestError,
) -> Response<Vec<u8>> {
    if matches!(e, RequestError::TooLarge) {
        s.set_keepalive(None);
    }
    count(endpoint, "bad_request");
    info!(
        endpoint = endpoint.name(),
        "facilitator request refused: {e}"
    );
    json_reply(
        e.status(),
        &json!({"error": e.code(), "message": e.to_string()}),
        None,
    )
}

fn count(endpoint: Endpoint, outcome: &str) {
    telemetry::with(|m| {
        m.facilitator_requests
            .with_label_values(&[endpoint.name(), outcome])
            .inc()
    });
}

fn log_verdict(outcome: &str, v: &Result<Checked, Invalid>) {
    let (network, payer, reason, message) = match v {
        Ok(c) => (c.network.as_str(), Some(c.payer()), "", "valid"),
        Err(i) => (
            i.network.as_str(),
            i.payer,
            i.rejection.reason.code(),
            i.rejection.message.as_str(),
        ),
    };
    info!(
        endpoint = "verify",
        network,
        payer = %payer.map(|a| format!("{a:#x}")).unwrap_or_default(),
        outcome,
        reason,
        "facilitator verify: {message}"
    );
}

fn json_reply(status: u16, body: &impl serde::Serialize, allow: Option<&str>) -> Response<Vec<u8>> {
    let r = Reply::json(status, body);
    match allow {
        Some(a) => r.with("Allow", a),
        None => r,
    }
    .into_response()
}

#[async_trait]
impl ServeHttp for FacilitatorApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        self.respond(s).await
    }
}
