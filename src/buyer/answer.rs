//! The answers to roma-01: a strategy (a seller's or the local fallback's body, unchanged, with
//! `X-Strategy-Source`, `X-Payment-Status`, `X-Payment-*`, the receipt as `X-PAYMENT-RESPONSE`
//! and `X-Attempts`), and the error JSON.

use alloy_primitives::{Address, U256};
use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};

use super::Payer;
use super::call::Attempt;
use crate::http::Reply;
use crate::x402::types::SettleResponse;
use crate::x402::{HEADER_PAYMENT_RESPONSE, HEADER_X_PAYMENT_RESPONSE, codec, networks};

/// What roma-01 is told of the call's payment (`X-Payment-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PaymentStatus {
    /// The chain shows this answer's transfer.
    Paid,
    /// The seller answered as paid; the chain does not show the transfer (yet).
    Unconfirmed,
    /// The seller did not ask for payment.
    Free,
}

impl PaymentStatus {
    pub(super) fn label(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "paid",
            PaymentStatus::Unconfirmed => "unconfirmed",
            PaymentStatus::Free => "free",
        }
    }
}

/// A successful answer from a seller.
pub(super) struct Answer {
    pub(super) seller: String,
    pub(super) body: Bytes,
    /// The settlement receipt as the chain confirms it (or says it does not), passed on to
    /// roma-01 under the v1 name whatever the seller's version.
    pub(super) receipt: Option<SettleResponse>,
    /// What the answer cost; `None` when the seller did not ask for payment.
    pub(super) charge: Option<Charge>,
    pub(super) status: PaymentStatus,
}

/// What one answer cost: the amount moved to whom, and the transaction (empty when unknown).
pub(super) struct Charge {
    pub(super) tx: String,
    pub(super) amount: U256,
    pub(super) asset: Address,
    pub(super) network: String,
}

impl Payer {
    /// A seller's answer: `X-Strategy-Source` `paid` (with the `X-Payment-*` headers and
    /// the receipt) or `free`; `X-Attempts` when earlier sellers were tried.
    pub(super) fn answer(
        &self,
        a: Answer,
        call_id: &str,
        attempts: &[Attempt],
    ) -> Response<Vec<u8>> {
        let mut headers = vec![
            ("X-Payment-Seller", a.seller),
            ("X-Payment-Status", a.status.label().to_string()),
        ];
        if let Some(c) = &a.charge {
            headers.extend([
                ("X-Payment-Tx", c.tx.clone()),
                ("X-Payment-Amount", c.amount.to_string()),
                ("X-Payment-Asset", c.asset.to_string()),
                ("X-Payment-Network", c.network.clone()),
                ("X-Payment-Payer", self.cfg.signer.address().to_string()),
            ]);
        }
        if let Some(r) = a.receipt {
            // v1's header for roma-01 (v1 network names), and v2's for v2 clients.
            let v1 = SettleResponse {
                network: networks::to_v1(&r.network).to_string(),
                ..r.clone()
            };
            headers.push((HEADER_X_PAYMENT_RESPONSE, codec::encode(&v1)));
            headers.push((HEADER_PAYMENT_RESPONSE, codec::encode(&r)));
        }
        if !attempts.is_empty() {
            headers.push(("X-Attempts", summary(attempts)));
        }
        let source = if a.charge.is_some() { "paid" } else { "free" };
        strategy(call_id, source, headers, a.body)
    }
}

/// A 200 carrying a strategy `body` unchanged, where it came from (`X-Strategy-Source`) and
/// `headers`. A header value that cannot be sent makes it a 500.
pub(super) fn strategy(
    call_id: &str,
    source: &str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .header("X-Call-Id", call_id)
        .header("X-Strategy-Source", source);
    for (name, value) in headers {
        b = b.header(name, value);
    }
    b.body(body.to_vec())
        .unwrap_or_else(|_| plain(500, "response could not be built"))
}

/// `seller=outcome, …`: the `X-Attempts` header.
pub(super) fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}={}", a.seller, a.outcome))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error JSON's `attempts`: each seller, its outcome and why.
pub(super) fn details(attempts: &[Attempt]) -> Vec<Value> {
    attempts
        .iter()
        .map(|a| json!({"seller": a.seller, "outcome": a.outcome, "detail": a.detail}))
        .collect()
}

/// A refusal before any call: `{error, message}` with the code for `status`.
pub(super) fn plain(status: u16, message: &str) -> Response<Vec<u8>> {
    let code = match status {
        400 => "bad_request",
        403 => "seller_not_configured",
        404 => "no_such_route",
        405 => "connect_not_supported",
        413 => "body_too_large",
        _ => "error",
    };
    Reply::error(status, code, message).into_response()
}

pub(super) fn boxed(status: u16, message: &str) -> Box<Response<Vec<u8>>> {
    Box::new(plain(status, message))
}

/// The body is not a `StrategyRequest`: a 400 with the validation `details`.
pub(super) fn invalid_request(details: impl serde::Serialize) -> Response<Vec<u8>> {
    let b = json!({"error": "invalid_request", "message": "the body is not a valid StrategyRequest; nothing was paid", "details": details});
    Response::builder()
        .status(400)
        .header("Content-Type", "application/json")
        .body(b.to_string().into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// A call that ended without a strategy: `X-Strategy-Source: none`, what each seller came to,
/// and with `retry` a `Retry-After` and a hint to act manually.
pub(super) fn error_json(
    status: u16,
    code: &str,
    message: &str,
    call_id: &str,
    attempts: Vec<Value>,
    retry: Option<u64>,
) -> Response<Vec<u8>> {
    let mut body =
        json!({"error": code, "message": message, "callId": call_id, "attempts": attempts});
    if let Some(s) = retry {
        body["retryAfterSeconds"] = json!(s);
        body["action"] = json!("wait, or decide manually: no strategy advice is available");
    }
    let reply = Reply::json(status, &body)
        .with("X-Call-Id", call_id)
        .with("X-Strategy-Source", "none")
        .with("X-Payment-Status", "none");
    match retry {
        Some(s) => reply.retry_after(s),
        None => reply,
    }
    .into_response()
}
