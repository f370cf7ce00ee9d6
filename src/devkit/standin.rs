//! The labelled stand-in strategy endpoint: a fixed "hold" answer, no model, no analysis (the
//! demo buyer's last fallback and the default upstream of the tests). Its label,
//! `metadata.model: standin-fixed-v0`, keeps a seller from charging for it unless the route
//! says `charge_standin: true`. It runs on the small
//! server of [`crate::http::server`], whose types it re-exports for the tests.

use std::sync::Arc;

use serde_json::{Value, json};

pub use crate::http::server::{Handler, MAX_BODY, READ_TIMEOUT, Request, Response, serve};
use crate::util::{new_id, now_secs, rfc3339};

/// The stand-in strategy answer: clearly labelled, derived only from what the request says.
pub fn standin_answer(req: &Request) -> Response {
    let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let positions = v["account"]["positions"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let symbols: Vec<String> = v["account"]["positions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["symbol"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let answer = json!({
        "strategy": {
            "summary": format!("STAND-IN ANSWER (no model, no analysis): received {positions} position(s); the built-in advisor replaces this endpoint."),
            "steps": symbols.iter().map(|s| format!("Review {s}: hold until real advice is available")).chain(std::iter::once("Replace this stand-in with a real strategy endpoint before relying on it.".to_string())).collect::<Vec<_>>(),
            "riskNotes": ["This is a fixed placeholder produced by the x402-sidecar stand-in upstream, not trading advice."],
            "actions": symbols.iter().map(|s| json!({"symbol": s, "action": "hold", "size": 0, "notionalUsd": 0, "reason": "stand-in"})).collect::<Vec<_>>(),
            "confidence": 0.0,
        },
        "metadata": {
            "model": crate::advisor::answer::STANDIN_MODEL,
            "modelCallId": null,
            "upstreamId": new_id("standin"),
            "generatedAt": rfc3339(now_secs()),
            "requestId": req.header("x-request-id"),
        }
    });
    Response::Body(200, answer.to_string())
}

/// Handler for the stand-in upstream.
pub fn standin_handler() -> Handler {
    Arc::new(|req: Request| Box::pin(async move { standin_answer(&req) }))
}
