//! The answer's shape: the upstream's JSON with `payment`, `metadata` and the disclaimer merged
//! in, written so that both readers a paid answer has accept it as it is:
//!
//! * the seed's camelCase example: `strategy{summary, steps, riskNotes}`,
//!   `payment{receiptId, amount, asset, network}`, `metadata{requestId, model, generatedAt}`;
//! * roma-01's snake_case `StrategyResponse` (pydantic, extra keys ignored):
//!   `strategy{summary, steps, risk_notes}`, `payment{amount, asset, network, pay_to,
//!   deadline_seconds, payer}`, `metadata{request_id, model, generated_at, telemetry}`.
//!
//! One answer carries both key sets (the twins hold the same values), so a caller needs no
//! setting and no negotiation: a roma-01 node calling the seller directly validates the answer
//! unchanged, and so does a client written against the seed. `payment.amount` is in token
//! units as both write it (`"0.01"`); the atomic integer is `payment.amountAtomic`.
//!
//! Blocks the upstream already sent are merged, not replaced: its keys stay, the paywall's
//! facts (what was paid, the ids) win where both name the same key, and a twin the upstream
//! left out is filled from the one it wrote. `decisions` (roma-01's executor format) pass
//! through as the upstream wrote them.

use serde_json::{Map, Value, json};

use crate::util::{now_secs, rfc3339};
use crate::x402::money;

/// What the paywall knows of one settled payment, for the answer.
pub(crate) struct Paid {
    pub(crate) tx: String,
    pub(crate) amount_atomic: String,
    /// `amount_atomic` in token units, e.g. `"0.01"`.
    pub(crate) amount: String,
    pub(crate) decimals: u8,
    pub(crate) asset: String,
    pub(crate) network: String,
    pub(crate) payer: String,
    pub(crate) pay_to: String,
    pub(crate) deadline_seconds: u64,
    pub(crate) payment_id: String,
    pub(crate) request_id: String,
    pub(crate) x402_version: u8,
}

impl Paid {
    /// The token-unit amount of `atomic` with `decimals`.
    pub(crate) fn amount_of(atomic: alloy_primitives::U256, decimals: u8) -> String {
        money::format_decimal(atomic, decimals)
    }
}

/// The upstream `answer` plus `payment`, `metadata` and `disclaimer` (when it sent none), in
/// both key sets.
pub(crate) fn merge(mut answer: Value, paid: &Paid, disclaimer: &str) -> Value {
    let Some(obj) = answer.as_object_mut() else {
        return answer;
    };
    let payment = merged(obj.get("payment"), payment_block(paid));
    obj.insert("payment".into(), payment);
    let meta = metadata(obj.get("metadata"), paid);
    obj.insert("metadata".into(), meta);
    if let Some(Value::Object(s)) = obj.get_mut("strategy") {
        twin_list(s, "riskNotes", "risk_notes");
    }
    if obj
        .get("disclaimer")
        .is_none_or(|d| d.as_str().is_none_or(str::is_empty))
    {
        obj.insert("disclaimer".into(), json!(disclaimer));
    }
    answer
}

/// The answer's `payment` object in both key sets: what was paid, by whom, to whom, in which
/// transaction.
pub(crate) fn payment_block(p: &Paid) -> Map<String, Value> {
    let v = json!({
        "receiptId": p.tx,
        "transaction": p.tx,
        "amount": p.amount,
        "amountAtomic": p.amount_atomic,
        "decimals": p.decimals,
        "asset": p.asset,
        "network": p.network,
        "payer": p.payer,
        "payTo": p.pay_to,
        "pay_to": p.pay_to,
        "deadline_seconds": p.deadline_seconds,
        "paymentId": p.payment_id,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `ours` over the upstream's object of the same name (kept when it is one).
fn merged(upstream: Option<&Value>, ours: Map<String, Value>) -> Value {
    let mut out = upstream
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    out.extend(ours);
    Value::Object(out)
}

/// The upstream's metadata with the paywall's ids, and the model and the time in both key sets.
fn metadata(upstream: Option<&Value>, p: &Paid) -> Value {
    let up = upstream
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| up.get(*k).filter(|v| !v.is_null()).cloned())
    };
    let generated_at =
        first(&["generatedAt", "generated_at"]).unwrap_or_else(|| json!(rfc3339(now_secs())));
    let model = first(&["model"]).unwrap_or_else(|| json!("unknown"));
    let model_call_id = first(&["modelCallId", "model_call_id"]).unwrap_or(Value::Null);
    let telemetry = first(&["telemetry"])
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut meta = up;
    for (k, v) in [
        ("requestId", json!(p.request_id)),
        ("request_id", json!(p.request_id)),
        ("paymentId", json!(p.payment_id)),
        ("modelCallId", model_call_id),
        ("model", model),
        ("generatedAt", generated_at.clone()),
        ("generated_at", generated_at),
        ("telemetry", telemetry),
        ("x402Version", json!(p.x402_version)),
    ] {
        meta.insert(k.into(), v);
    }
    Value::Object(meta)
}

/// Both `a` and `b` hold the list one of them holds (an empty list when neither does).
fn twin_list(s: &mut Map<String, Value>, a: &str, b: &str) {
    let present = |k: &str, s: &Map<String, Value>| s.get(k).filter(|v| v.is_array()).cloned();
    let value = present(a, s)
        .or_else(|| present(b, s))
        .unwrap_or_else(|| json!([]));
    for k in [a, b] {
        if present(k, s).is_none() {
            s.insert(k.into(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid() -> Paid {
        Paid {
            tx: "0xabc".into(),
            amount_atomic: "10000".into(),
            amount: "0.01".into(),
            decimals: 6,
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            network: "base-sepolia".into(),
            payer: "0x1027E4128c453fa17ea7e2bc1e303892dA94CD45".into(),
            pay_to: "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720".into(),
            deadline_seconds: 120,
            payment_id: "pay_1".into(),
            request_id: "req_1".into(),
            x402_version: 1,
        }
    }

    #[test]
    fn one_answer_carries_the_seeds_keys_and_roma01s() {
        let a = merge(
            json!({"strategy": {"summary": "s", "steps": [], "riskNotes": ["n"]},
                "metadata": {"model": "rules-v1", "generatedAt": "2026-01-01T00:00:00Z"}}),
            &paid(),
            "d",
        );
        assert_eq!(a["strategy"]["risk_notes"], json!(["n"]));
        let p = &a["payment"];
        assert_eq!(
            (p["amount"].as_str(), p["amountAtomic"].as_str()),
            (Some("0.01"), Some("10000"))
        );
        assert_eq!(p["receiptId"], "0xabc");
        assert_eq!(p["pay_to"], p["payTo"]);
        assert_eq!(p["deadline_seconds"], 120);
        let m = &a["metadata"];
        assert_eq!(
            (m["requestId"].as_str(), m["request_id"].as_str()),
            (Some("req_1"), Some("req_1"))
        );
        assert_eq!(m["generated_at"], "2026-01-01T00:00:00Z");
        assert_eq!(m["telemetry"], json!({}));
        assert_eq!(a["disclaimer"], "d");
    }

    #[test]
    fn an_upstream_in_roma01s_shape_is_merged_not_replaced() {
        let a = merge(
            json!({"strategy": {"summary": "s", "steps": ["x"], "risk_notes": ["r"], "rationale": "why"},
                "disclaimer": "theirs",
                "payment": {"amount": "5.0", "receipt_header": null, "note": "kept"},
                "metadata": {"request_id": "uuid-1", "model": "deepseek", "generated_at": "2026-02-02T00:00:00Z",
                    "telemetry": {"agentId": "a"}},
                "decisions": [{"action": "hold", "symbol": "BTCUSDT"}]}),
            &paid(),
            "ours",
        );
        assert_eq!(a["strategy"]["riskNotes"], json!(["r"]));
        assert_eq!(a["strategy"]["rationale"], "why");
        assert_eq!(a["disclaimer"], "theirs");
        // The paywall's facts win; the upstream's other keys stay.
        assert_eq!(a["payment"]["amount"], "0.01");
        assert_eq!(a["payment"]["note"], "kept");
        assert_eq!(a["metadata"]["request_id"], "req_1");
        assert_eq!(a["metadata"]["generatedAt"], "2026-02-02T00:00:00Z");
        assert_eq!(a["metadata"]["model"], "deepseek");
        assert_eq!(a["metadata"]["telemetry"]["agentId"], "a");
        assert_eq!(a["decisions"][0]["symbol"], "BTCUSDT");
    }
}
