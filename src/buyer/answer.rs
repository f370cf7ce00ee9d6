//! The answers to roma-01: a seller's body with the `X-Payment-*` headers, and the error JSON.

use alloy_primitives::{Address, U256};
use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};

use super::Payer;
use super::call::Attempt;
use crate::http::Reply;

/// A successful answer from a seller.
pub(super) struct Answer {
    pub(super) seller: String,
    pub(super) body: Bytes,
    pub(super) receipt_header: Option<(&'static str, String)>,
    pub(super) paid: Option<Paid>,
}

/// What was paid for an answer.
pub(super) struct Paid {
    pub(super) tx: String,
    pub(super) amount: U256,
    pub(super) asset: Address,
    pub(super) network: String,
    pub(super) pay_to: Address,
}
impl Payer {
    pub(super) fn answer(
        &self,
        a: Answer,
        call_id: &str,
        attempts: &[Attempt],
    ) -> Response<Vec<u8>> {
        let mut b = Response::builder()
            .status(200)
            .header("Content-Type", "application/json")
            .header("Cache-Control", "no-store")
            .header("X-Call-Id", call_id)
            .header("X-Payment-Seller", a.seller.as_str())
            .header(
                "X-Strategy-Source",
                if a.paid.is_some() { "paid" } else { "free" },
            );
        if let Some(p) = &a.paid {
            b = b
                .header("X-Payment-Tx", p.tx.as_str())
                .header("X-Payment-Amount", p.amount.to_string())
                .header("X-Payment-Asset", p.asset.to_string())
                .header("X-Payment-Network", p.network.as_str())
                .header("X-Payment-Payer", self.cfg.signer.address().to_string());
        }
        if let Some((name, value)) = &a.receipt_header {
            b = b.header(*name, value.as_str());
        }
        if !attempts.is_empty() {
            b = b.header("X-Attempts", summary(attempts));
        }
        b.body(a.body.to_vec())
            .unwrap_or_else(|_| plain(500, "response could not be built"))
    }
}

pub(super) fn receipt_name(n: &str) -> &'static str {
    if n == crate::x402::HEADER_X_PAYMENT_RESPONSE {
        crate::x402::HEADER_X_PAYMENT_RESPONSE
    } else {
        crate::x402::HEADER_PAYMENT_RESPONSE
    }
}

pub(super) fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}={}", a.seller, a.outcome))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn plain(status: u16, message: &str) -> Response<Vec<u8>> {
    let code = match status {
        400 => "bad_request",
        403 => "seller_not_configured",
        404 => "no_such_route",
        413 => "body_too_large",
        _ => "error",
    };
    Reply::error(status, code, message).into_response()
}

pub(super) fn boxed(status: u16, message: &str) -> Box<Response<Vec<u8>>> {
    Box::new(plain(status, message))
}

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
        .with("X-Strategy-Source", "none");
    match retry {
        Some(s) => reply.retry_after(s),
        None => reply,
    }
    .into_response()
}
