//! What the buyer is sent, transport-free: the paid answer (the upstream's JSON merged with
//! `payment`, `metadata` and the disclaimer in both key sets (`shape.rs`), plus the receipt
//! header), a stored answer sent again,
//! and the 503 of a settlement whose outcome is not known yet.

use alloy_primitives::B256;
use serde_json::{Value, json};

use crate::http::Reply;
use crate::seller::ctx::Ctx;
use crate::seller::payment::VerifiedPayment;
use crate::seller::shape;
use crate::store::StoredAnswer;
use crate::x402::codec;
use crate::x402::reason::Reason;
use crate::x402::types::SettleResponse;

/// The paid answer settled by `tx`: the merged body and the receipt header (name, value).
pub(crate) fn paid_answer(
    answer: Value,
    disclaimer: &str,
    ctx: &Ctx,
    p: &VerifiedPayment<'_>,
    tx: B256,
) -> (Value, (&'static str, String)) {
    let receipt = SettleResponse {
        success: true,
        error_reason: None,
        payer: Some(p.authorization().from),
        transaction: format!("{tx:#x}"),
        network: p.network_name(),
        amount: Some(p.offer.amount.to_string()),
        error_message: None,
    };
    let body = merge(answer, disclaimer, ctx, p, tx);
    (body, (p.receipt_header(), codec::encode(&receipt)))
}

/// A stored answer sent again (a settled payment's retry).
pub(crate) fn replayed(a: StoredAnswer) -> Reply {
    let mut r = Reply::raw(a.status, "application/json", a.body);
    if let Some((name, value)) = a.receipt {
        r.headers.push((crate::x402::receipt_name(&name), value));
    }
    r.with("X-Payment-Replayed", "true")
}

/// Settlement outcome not known yet (`tx` if broadcast): 503, the same payment sent again gets
/// the answer without a second charge.
pub(crate) fn pending(tx: Option<B256>) -> Reply {
    let mut body = json!({
        "error": Reason::SettlementPending,
        "message": match tx {
            Some(_) => "the payment was submitted and is not confirmed yet; send the same request with the same payment again to get the answer (you will not be charged twice)",
            None => "the payment's settlement could not be confirmed yet; send the same request with the same payment again to get the answer (you will not be charged twice)",
        },
    });
    if let Some(tx) = tx {
        body["transaction"] = json!(format!("{tx:#x}"));
    }
    Reply::json(503, &body).retry_after(5)
}

/// The upstream answer plus `payment`, `metadata` and the disclaimer, in the seed's and
/// roma-01's key sets ([`shape`]).
fn merge(answer: Value, disclaimer: &str, ctx: &Ctx, p: &VerifiedPayment<'_>, tx: B256) -> Value {
    shape::merge(answer, &paid(ctx, p, tx), disclaimer)
}

/// What the answer says of the settled payment `p` in `tx`.
fn paid(ctx: &Ctx, p: &VerifiedPayment<'_>, tx: B256) -> shape::Paid {
    let o = p.offer;
    shape::Paid {
        tx: format!("{tx:#x}"),
        amount_atomic: o.amount.to_string(),
        amount: shape::Paid::amount_of(o.amount, o.decimals),
        decimals: o.decimals,
        asset: o.asset.to_string(),
        network: p.network_name(),
        payer: p.authorization().from.to_string(),
        pay_to: o.pay_to.to_string(),
        deadline_seconds: o.max_timeout_seconds,
        payment_id: p.payment_id.clone(),
        request_id: ctx.request_id.clone(),
        x402_version: p.version(),
    }
}
