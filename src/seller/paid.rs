//! The paid path, steps 2–11 (the module docs of [`crate::seller`] list them), one method per
//! step. A step either hands the next one what it needs or stops the request with its answer
//! ([`Step`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_proxy::Session;
use serde_json::{Value, json};
use tracing::{Instrument, info};

use crate::advisor;
use crate::audit::Kind;
use crate::http::{BodyError, Reply, read_body};
use crate::seller::Paywall;
use crate::seller::config::Route;
use crate::seller::ctx::Ctx;
use crate::seller::payment::{ClaimedPayment, VerifiedPayment, payment_header};
use crate::seller::settle::Settlement;
use crate::telemetry::{self, PaymentOutcome, Phase};
use crate::util::now_secs;
use crate::x402::codec::decode_payment;
use crate::x402::matching::match_payment;
use crate::x402::reason::{Reason, Rejection};

/// Where a step leaves the request: go on with `T`, or stop with this answer (`None`: the
/// buyer is gone and nothing can be written).
pub(crate) type Step<T> = Result<T, Option<Reply>>;

impl Paywall {
    /// Steps 2–11 for a paid route. `None` means the buyer is gone and nothing can be written.
    pub(crate) async fn paid(&self, s: &mut Session, route: &Route, ctx: &Ctx) -> Option<Reply> {
        match self.paid_steps(s, route, ctx).await {
            Ok(answer) => Some(answer),
            Err(stopped) => stopped,
        }
    }

    /// The steps in order; each one may stop the request with its own answer.
    async fn paid_steps(&self, s: &mut Session, route: &Route, ctx: &Ctx) -> Step<Reply> {
        let body = self.request_body(s, route).await?;
        let (raw, v2) = self.payment_or_challenge(s, route, &body)?;
        let now = now_secs();
        let verify_started = Instant::now();
        let payment = self.check_payment(s, route, ctx, &raw, v2, now)?;
        tracing::Span::current()
            .record("payment_id", payment.payment_id.as_str())
            .record("payer", payment.authorization().from.to_string().as_str());
        let settlement = self.settlement_for(&payment)?;
        let settlement = settlement.as_ref();
        let claimed = ClaimedPayment::new(payment, &body, now);
        self.claim(s, route, ctx, &claimed, settlement).await?;
        observe(Phase::Verify, verify_started);
        self.verify_with_backend(s, route, ctx, &claimed, settlement)
            .await?;
        let answer = self.upstream_answer(s, route, ctx, &claimed, body).await?;
        Ok(self
            .settle_and_answer(s, route, ctx, &claimed, settlement, answer)
            .await)
    }

    /// Step 2: the body, capped; validated as a `StrategyRequest` before any payment is asked.
    async fn request_body(&self, s: &mut Session, route: &Route) -> Step<Bytes> {
        let body = match read_body(s, self.max_body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(Some(Reply::error(
                    413,
                    "body_too_large",
                    format!("the request body is larger than {} bytes", self.max_body),
                )));
            }
            Err(BodyError::Unreadable) => return Err(None),
        };
        if route.strategy_request
            && !body.is_empty()
            && let Err(details) = advisor::validate(&body)
        {
            return Err(Some(Reply::json(
                400,
                &json!({
                    "error": "invalid_request",
                    "message": "the body is not a valid StrategyRequest; nothing was charged",
                    "details": details,
                }),
            )));
        }
        Ok(body)
    }

    /// Step 3: the payment header (v2 first); without one, the 402. A strategy route's paid call
    /// needs a body.
    fn payment_or_challenge(
        &self,
        s: &Session,
        route: &Route,
        body: &Bytes,
    ) -> Step<(Vec<u8>, bool)> {
        let header = match payment_header(s) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(Some(self.challenge(s, route, &Rejection::new(Reason::PaymentRequired, "this route is paid: sign one of `accepts` and send it in PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1)")))),
            Err(r) => return Err(Some(self.challenge(s, route, &r))),
        };
        if route.strategy_request && body.is_empty() {
            return Err(Some(Reply::error(
                400,
                "invalid_request",
                "a paid call needs a StrategyRequest body; nothing was charged",
            )));
        }
        Ok(header)
    }

    /// Steps 4–5: decode, match this route's offers, check the authorization and the signature: no
    /// I/O. A refusal is a 402 with a fresh challenge.
    fn check_payment<'r>(
        &self,
        s: &Session,
        route: &'r Route,
        ctx: &Ctx,
        raw: &[u8],
        v2: bool,
        now: u64,
    ) -> Step<VerifiedPayment<'r>> {
        let checked = decode_payment(raw, v2).and_then(|p| {
            let m = match_payment(&route.offers, &p, &self.key, &route.id(), now)?;
            Ok((p, m))
        });
        match checked {
            Ok((received, m)) => Ok(VerifiedPayment::new(
                received,
                m.payment,
                &route.offers[m.offer],
                &route.description,
            )),
            Err(r) => {
                info!(request_id = %ctx.request_id, reason = %r.reason, "payment refused: {}", r.message);
                telemetry::with(|m| m.payment(PaymentOutcome::Refused(r.reason)));
                Err(Some(self.challenge(s, route, &r)))
            }
        }
    }

    /// The settlement backend of the payment's network; none configured is our fault (503).
    fn settlement_for(&self, p: &VerifiedPayment<'_>) -> Step<Arc<dyn Settlement>> {
        self.backends.get(p.offer.chain_id).ok_or_else(|| {
            Some(
                Reply::error(
                    503,
                    "no_facilitator",
                    "no facilitator is configured for this network",
                )
                .retry_after(30),
            )
        })
    }

    /// Step 7: the backend's checks (nonce unused and balance on chain, or the remote facilitator's
    /// `/verify`). A refusal releases the claim.
    async fn verify_with_backend(
        &self,
        s: &Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        settlement: &dyn Settlement,
    ) -> Step<()> {
        let p = &c.payment;
        let chain_started = Instant::now();
        let verified = settlement
            .verify(p)
            .instrument(settlement.verify_span())
            .await;
        observe(Phase::Chain, chain_started);
        if let Err(r) = verified {
            self.release(c).await;
            self.audit(ctx, p, Kind::PaymentRefused, |e| {
                e.with("reason", r.reason.code())
            })
            .await;
            return Err(Some(self.refusal(s, route, ctx, p, &r)));
        }
        telemetry::with(|m| m.payment(PaymentOutcome::Verified));
        self.audit(ctx, p, Kind::PaymentVerified, |e| {
            e.with("route", route.id()).with("x402Version", p.version())
        })
        .await;
        Ok(())
    }

    /// Steps 8–9: forward and check the answer. A failure releases the claim; a buyer who hung up
    /// meanwhile is not charged and the answer is kept for a retry with the same payment.
    async fn upstream_answer(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        body: Bytes,
    ) -> Step<Value> {
        let p = &c.payment;
        let (answer, buyer_left) = self
            .forward(s, route, ctx, p, body)
            .instrument(tracing::info_span!("upstream", otel.kind = "client"))
            .await;
        let answer = match answer {
            Err(reply) => {
                self.release(c).await;
                self.audit(ctx, p, Kind::NotCharged, |e| {
                    e.with("why", "upstream failed; claim released")
                        .with("status", reply.status)
                })
                .await;
                return Err(Some(reply));
            }
            Ok(a) => a,
        };
        if buyer_left {
            let rec = c.unsettled(ctx, &answer);
            let kept = self
                .store
                .replace(&p.replay_key, &c.token, &rec, c.ttl)
                .await;
            self.audit(ctx, p, Kind::NotCharged, |e| {
                e.with("why", "buyer hung up before settlement; answer kept for a retry with the same payment")
            }).await;
            info!(request_id = %ctx.request_id, payment_id = %p.payment_id, kept = kept.unwrap_or(false),
                "buyer hung up before settlement: not charged; the answer is kept for a retry with the same payment");
            return Err(None);
        }
        // The last record before money moves: on disk, or no settlement (503, claim released).
        let recorded = self
            .audit_before_money(ctx, p, Kind::Forwarded, |e| {
                e.with("model", answer["metadata"]["model"].clone())
                    .with("modelCallId", answer["metadata"]["modelCallId"].clone())
            })
            .await;
        if let Err(reply) = recorded {
            self.release(c).await;
            return Err(Some(reply));
        }
        Ok(answer)
    }
}

/// Record how long a phase of the paid path took, from `since`.
pub(crate) fn observe(phase: Phase, since: Instant) {
    observe_secs(phase, since.elapsed());
}

/// Record how long a phase of the paid path took.
pub(crate) fn observe_secs(phase: Phase, d: Duration) {
    telemetry::with(|m| m.phase(phase, d));
}
