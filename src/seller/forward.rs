//! Steps 8–9: call the upstream with the buyer's body, watching for the buyer hanging up,
//! and check that its answer is the one we sell.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_proxy::Session;
use serde_json::Value;
use tracing::warn;

use crate::advisor;
use crate::http::{ReadError, Reply};
use crate::seller::Paywall;
use crate::seller::config::Route;
use crate::seller::ctx::Ctx;
use crate::seller::paid::observe_secs;
use crate::seller::payment::VerifiedPayment;
use crate::telemetry;
use crate::telemetry::Phase;

/// Largest upstream answer accepted (it is stored with the claim for retries).
const MAX_UPSTREAM_ANSWER: usize = 1024 * 1024;

impl Paywall {
    /// Call the upstream with the buyer's body. Returns the checked JSON answer, or the reply to
    /// send instead; and whether the buyer hung up while we waited.
    pub(crate) async fn forward(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        body: Bytes,
    ) -> (Result<Value, Reply>, bool) {
        let upstream_started = Instant::now();
        let req = self.upstream_request(s, route, ctx, p);
        let call = async {
            let resp = req.body(body).send().await?;
            let status = resp.status();
            let bytes = crate::http::read_capped(resp, MAX_UPSTREAM_ANSWER).await?;
            Ok::<_, ReadError>((status, bytes))
        };
        tokio::pin!(call);
        let mut buyer_left = false;
        let mut watching = true;
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                idle = s.as_downstream_mut().read_body_or_idle(true), if watching => {
                    watching = false;
                    buyer_left = idle.is_err();
                }
            }
        };
        let took = upstream_started.elapsed();
        let out = self.upstream_outcome(result, route);
        observe_secs(Phase::Upstream, took);
        if let Err(r) = &out {
            upstream_failed(r, ctx, p, took);
        }
        (out, buyer_left)
    }

    /// The upstream call: the route's method and path with the buyer's query, the request
    /// and payment ids, the payer, the upstream secret and the trace context.
    fn upstream_request(
        &self,
        s: &Session,
        route: &Route,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
    ) -> reqwest::RequestBuilder {
        let mut url = self.upstream.base.clone();
        url.set_path(&route.path);
        url.set_query(s.req_header().uri.query());
        let mut req = self
            .http
            .request(route.method.parse().unwrap_or(reqwest::Method::POST), url)
            .timeout(self.upstream.timeout)
            .header("Content-Type", "application/json")
            .header("X-Request-Id", ctx.request_id.as_str())
            .header("X-Payment-Id", p.payment_id.as_str())
            .header("X-Payer", format!("{}", p.authorization().from));
        if let Some(secret) = &self.upstream.secret {
            req = req.header(advisor::SECRET_HEADER, secret.as_str());
        }
        for (k, v) in crate::telemetry::otlp::outgoing(
            &tracing::Span::current(),
            Some(&s.req_header().headers),
        ) {
            req = req.header(k, v);
        }
        req
    }

    /// The upstream's status and body as the answer we sell, or the reply that says why not
    /// (the buyer is never charged for it).
    fn upstream_outcome(
        &self,
        result: Result<(reqwest::StatusCode, Bytes), ReadError>,
        route: &Route,
    ) -> Result<Value, Reply> {
        match result {
            Err(ReadError::TooLarge(max)) => Err(Reply::error(
                502,
                "upstream_bad_answer",
                format!(
                    "the strategy service's answer is larger than {max} bytes; you were not charged"
                ),
            )
            .retry_after(2)),
            Err(ReadError::Http(e)) if e.is_timeout() => Err(Reply::error(
                504,
                "upstream_timeout",
                format!(
                    "the strategy service did not answer within {} ms; you were not charged",
                    self.upstream.timeout.as_millis()
                ),
            )
            .retry_after(5)),
            Err(ReadError::Http(e)) if e.is_connect() => Err(Reply::error(
                502,
                "upstream_unreachable",
                "the strategy service is unreachable; you were not charged",
            )
            .retry_after(5)),
            Err(ReadError::Http(e)) => Err(Reply::error(
                502,
                "upstream_bad_answer",
                format!("the strategy service's answer was incomplete ({e}); you were not charged"),
            )
            .retry_after(2)),
            Ok((status, _)) if status.is_server_error() => Err(Reply::error(
                503,
                "upstream_error",
                format!("the strategy service failed with {status}; you were not charged"),
            )
            .retry_after(5)),
            Ok((status, _)) if !status.is_success() => Err(Reply::error(
                502,
                "upstream_error",
                format!("the strategy service answered {status}; you were not charged"),
            )
            .retry_after(2)),
            Ok((_, bytes)) => check_answer(&bytes, route.strategy_request).map_err(|why| {
                Reply::error(
                    502,
                    "upstream_bad_answer",
                    format!("the strategy service's answer {why}; you were not charged"),
                )
                .retry_after(2)
            }),
        }
    }
}

/// Count and log an upstream failure by its reply's `error` code.
fn upstream_failed(r: &Reply, ctx: &Ctx, p: &VerifiedPayment<'_>, took: Duration) {
    let kind = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    telemetry::with(|m| m.upstream_errors.with_label_values(&[&kind]).inc());
    warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, status = r.status, ms = took.as_millis() as u64, "upstream failed: not settling, claim released");
}

/// Is this the answer we sell? A JSON object, with a `strategy` object on strategy routes.
pub(crate) fn check_answer(bytes: &[u8], strategy_route: bool) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not JSON ({e})"))?;
    let Some(obj) = v.as_object() else {
        return Err("is not a JSON object".into());
    };
    if strategy_route && !obj.get("strategy").is_some_and(Value::is_object) {
        return Err("has no `strategy` object".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_be_json_objects_with_a_strategy() {
        assert!(check_answer(br#"{"strategy":{"summary":"x"}}"#, true).is_ok());
        assert!(check_answer(br#"{"strategy":{"summ"#, true).is_err());
        assert!(check_answer(b"<html>", true).is_err());
        assert!(check_answer(br#"{"advice":"x"}"#, true).is_err());
        assert!(check_answer(br#"{"advice":"x"}"#, false).is_ok());
        assert!(check_answer(b"[]", false).is_err());
    }
}
