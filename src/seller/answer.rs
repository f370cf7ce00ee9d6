//! What the buyer is sent, transport-free: the paid answer (the upstream's JSON merged with
//! `payment`, `metadata` and the disclaimer, plus the receipt header), a stored answer sent again,
//! and the 503 of a settlement whose outcome is not known yet.

use alloy_primitives::B256;
use serde_json::{Value, json};

use crate::http::Reply;
use crate::seller::ctx::Ctx;
use crate::seller::payment::VerifiedPayment;
use crate::store::StoredAnswer;
use crate::util::{now_secs, rfc3339};
use crate::x402::codec;
use crate::x402::money;
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

/// The upstream answer plus `payment`, `metadata` and the disclaimer.
fn merge(
    mut answer: Value,
    disclaimer: &str,
    ctx: &Ctx,
    p: &VerifiedPayment<'_>,
    tx: B256,
) -> Value {
    let Some(obj) = answer.as_object_mut() else {
        return answer;
    };
    obj.insert("payment".into(), payment_block(p, tx));
    let up = obj
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut meta = up.clone();
    meta.insert("requestId".into(), json!(ctx.request_id));
    meta.insert("paymentId".into(), json!(p.payment_id));
    meta.insert(
        "modelCallId".into(),
        up.get("modelCallId").cloned().unwrap_or(Value::Null),
    );
    meta.insert(
        "model".into(),
        up.get("model").cloned().unwrap_or(json!("unknown")),
    );
    meta.insert(
        "generatedAt".into(),
        up.get("generatedAt")
            .cloned()
            .unwrap_or_else(|| json!(rfc3339(now_secs()))),
    );
    meta.insert("x402Version".into(), json!(p.version()));
    obj.insert("metadata".into(), Value::Object(meta));
    if obj
        .get("disclaimer")
        .is_none_or(|d| d.as_str().is_none_or(str::is_empty))
    {
        obj.insert("disclaimer".into(), json!(disclaimer));
    }
    answer
}

/// The answer's `payment` object: what was paid, by whom, to whom, in which transaction.
fn payment_block(p: &VerifiedPayment<'_>, tx: B256) -> Value {
    let o = p.offer;
    json!({
        "receiptId": format!("{tx:#x}"),
        "transaction": format!("{tx:#x}"),
        "amount": o.amount.to_string(),
        "amountDisplay": money::format_decimal(o.amount, o.decimals),
        "decimals": o.decimals,
        "asset": o.asset.to_string(),
        "network": p.network_name(),
        "payer": p.authorization().from.to_string(),
        "payTo": o.pay_to.to_string(),
        "paymentId": p.payment_id,
    })
}
