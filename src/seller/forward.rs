//! Steps 8–9: call the upstream with the buyer's body, watching for the buyer hanging up,
//! and check that its answer is the one we sell.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_proxy::Session;
use serde_json::{Value, json};
use tracing::warn;

use crate::advisor;
use crate::http::{ReadError, Reply};
use crate::seller::Paywall;
use crate::seller::config::{AnswerShape, Route};
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
        if let Some(tier) = ctx.tier.get() {
            req = req.header(crate::seller::pricing::TIER_HEADER, tier.as_str());
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
            Ok((_, bytes)) => check_answer(&bytes, route).map_err(refused_answer),
        }
    }
}

/// Count and log an upstream failure by its reply's `error` code.
fn upstream_failed(r: &Reply, ctx: &Ctx, p: &VerifiedPayment<'_>, took: Duration) {
    let body = serde_json::from_slice::<Value>(&r.body).unwrap_or_default();
    let kind = body["error"].as_str().unwrap_or_default();
    let problem = body["problem"].as_str().unwrap_or("-");
    telemetry::with(|m| m.upstream_errors.with_label_values(&[kind]).inc());
    warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, status = r.status, error = kind, problem, ms = took.as_millis() as u64, "upstream failed: not settling, claim released");
}

/// Why an upstream answer is not charged: a machine-readable code (`upstream_bad_answer` for
/// what is not a complete JSON document of the route's kind, `answer_not_chargeable` for one that
/// does not meet the route's answer contract), the contract's problem and field, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) error: &'static str,
    pub(crate) problem: &'static str,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl Refused {
    fn bad(problem: &'static str, message: &str) -> Refused {
        Refused {
            error: "upstream_bad_answer",
            problem,
            field: None,
            message: message.into(),
        }
    }
}

/// The 502 for an answer that is not charged: the buyer may send the same payment again.
fn refused_answer(r: Refused) -> Reply {
    Reply::json(
        502,
        &json!({
            "error": r.error,
            "problem": r.problem,
            "field": r.field,
            "message": format!("the strategy service's answer {}; you were not charged", r.message),
        }),
    )
    .retry_after(2)
}

/// Is this the answer we sell on `route`? Its `answer:` shape: `strategy` (the strategy answer
/// contract of [`advisor::answer`]), `json` (a JSON object) or `any` (any JSON document); the
/// labelled stand-in only where the route charges for it.
pub(crate) fn check_answer(bytes: &[u8], route: &Route) -> Result<Value, Refused> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|_| Refused::bad("not_json", "is not a complete JSON document"))?;
    if route.answer != AnswerShape::Any && !v.is_object() {
        return Err(Refused::bad("not_object", "is not a JSON object"));
    }
    if !route.charge_standin && advisor::answer::is_standin(&v) {
        return Err(Refused {
            error: "answer_not_chargeable",
            problem: "standin",
            field: Some("metadata.model".into()),
            message: "is the labelled stand-in placeholder, not advice".into(),
        });
    }
    if route.answer == AnswerShape::Strategy {
        advisor::answer::check_strategy_answer(&v, route.charge_standin).map_err(|p| Refused {
            error: "answer_not_chargeable",
            problem: p.code,
            field: Some(p.field),
            message: p.message,
        })?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(answer: AnswerShape, charge_standin: bool) -> Route {
        Route {
            method: "POST".into(),
            path: "/x402".into(),
            description: String::new(),
            strategy_request: true,
            answer,
            charge_standin,
            offers: Vec::new(),
            pricing: None,
            settle_first: false,
        }
    }

    const ADVICE: &[u8] = br#"{"strategy":{"summary":"Cut.","steps":["Reduce ETH-PERP."]}}"#;

    #[test]
    fn a_strategy_route_sells_only_advice() {
        let r = route(AnswerShape::Strategy, false);
        assert!(check_answer(ADVICE, &r).is_ok());
        for (body, problem) in [
            (&br#"{"strategy":{}}"#[..], "empty_summary"),
            (br#"{"strategy":{"summ"#, "not_json"),
            (b"<html>", "not_json"),
            (br#"{"advice":"x"}"#, "no_strategy"),
            (br#"{"strategy":{"summary":"s","steps":[]}}"#, "no_steps"),
            (b"[]", "not_object"),
        ] {
            let got = check_answer(body, &r).unwrap_err();
            assert_eq!(got.problem, problem, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_standin_is_sold_only_where_the_route_says_so() {
        let standin = br#"{"strategy":{"summary":"STAND-IN","steps":["hold"]},"metadata":{"model":"standin-fixed-v0"}}"#;
        for shape in [AnswerShape::Strategy, AnswerShape::Json, AnswerShape::Any] {
            let got = check_answer(standin, &route(shape, false)).unwrap_err();
            assert_eq!(
                (got.error, got.problem),
                ("answer_not_chargeable", "standin")
            );
            assert!(check_answer(standin, &route(shape, true)).is_ok());
        }
    }

    #[test]
    fn json_and_any_routes_take_what_they_say() {
        assert!(check_answer(br#"{"advice":"x"}"#, &route(AnswerShape::Json, false)).is_ok());
        assert!(check_answer(b"[]", &route(AnswerShape::Json, false)).is_err());
        assert!(check_answer(b"[1]", &route(AnswerShape::Any, false)).is_ok());
        assert!(check_answer(b"[1", &route(AnswerShape::Any, false)).is_err());
    }
}
