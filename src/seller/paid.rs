//! The paid path's glue around pingora: steps 2–5 (the module docs of [`crate::seller`] list
//! them), one method per step, each handing the next what it needs or stopping the request with
//! its answer ([`Step`]); then the transport-free [`Machine`] runs steps 6–11 with this request's
//! upstream call and the paywall's store, backend and journal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_proxy::Session;
use serde_json::json;
use tracing::{Instrument, info};

use crate::advisor;
use crate::audit::Kind;
use crate::http::{BodyError, Reply, read_body};
use crate::seller::Paywall;
use crate::seller::config::Route;
use crate::seller::ctx::Ctx;
use crate::seller::machine::{self, Forwarded, Machine, Note, Outcome, Recorder, Upstream};
use crate::seller::payment::{ClaimedPayment, VerifiedPayment, payment_header};
use crate::seller::pricing::{self, Priced};
use crate::seller::settle::Settlement;
use crate::telemetry::{self, PaymentOutcome, Phase};
use crate::util::now_secs;
use crate::x402::codec::decode_payment;
use crate::x402::matching::{Offer, match_payment};
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::IncomingPayment;

/// Where a step leaves the request: go on with `T`, or stop with this answer (`None`: the
/// buyer is gone and nothing can be written).
pub(crate) type Step<T> = Result<T, Option<Reply>>;

impl Paywall {
    /// Steps 2–11 for a paid route, from `client` (the caller's address, as the proxy phase
    /// read it). `None` means the buyer is gone and nothing can be written.
    pub(crate) async fn paid(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        client: &str,
    ) -> Option<Reply> {
        match self.paid_steps(s, route, ctx, client).await {
            Ok(answer) => Some(answer),
            Err(stopped) => stopped,
        }
    }

    /// The steps in order; each one may stop the request with its own answer. Steps 6–11 are
    /// the transport-free [`Machine`].
    async fn paid_steps(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        client: &str,
    ) -> Step<Reply> {
        let body = self.request_body(s, route).await?;
        let priced = self.priced(s, route, ctx, &body)?;
        let (raw, v2) = self.payment_or_challenge(s, route, &priced, &body)?;
        let now = now_secs();
        let verify_started = Instant::now();
        let payment = self.check_payment(s, route, &priced, ctx, &raw, v2, now)?;
        tracing::Span::current()
            .record("payment_id", payment.payment_id.as_str())
            .record("payer", payment.authorization().from.to_string().as_str());
        if let Some(limited) = self.over_payer_limit(&payment.authorization().from) {
            return Err(Some(limited));
        }
        if let Some(limited) = self.over_refused_limit(client) {
            return Err(Some(limited));
        }
        let settlement = self.settlement_for(&payment)?;
        let claimed = ClaimedPayment::new(payment, &body, now);
        observe(Phase::Verify, verify_started);
        let route_id = route.id();
        let live = self.live.load_full();
        let machine = Machine {
            store: self.store.as_ref(),
            backend: settlement.as_ref(),
            journal: self,
            lease: &self.lease,
            disclaimer: &live.disclaimer,
            route: &route_id,
            settle_first: route.settle_first,
        };
        let mut up = ToUpstream {
            paywall: self,
            s,
            route,
            body,
        };
        match machine.run(ctx, &claimed, &mut up).await {
            Outcome::Reply(r) => Ok(r),
            Outcome::Refused(r) => {
                if r.reason.is_payer_fault() {
                    self.count_refused(client);
                }
                Ok(self.refusal(up.s, route, &priced, ctx, &claimed.payment, &r))
            }
            Outcome::Gone => Err(None),
        }
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
        if route.strategy_request && !body.is_empty() && !self.valid_bodies.contains_key(&body) {
            let Err(details) = advisor::validate(&body) else {
                // Its own copy: `body` may share a larger read buffer.
                self.valid_bodies.insert(Bytes::copy_from_slice(&body), ());
                return Ok(body);
            };
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

    /// Step 2b: this request's price: the route's own, or its pricing policy's quote for this
    /// body and tier. An unknown tier is a 400 before any payment is asked.
    fn priced<'r>(
        &self,
        s: &Session,
        route: &'r Route,
        ctx: &Ctx,
        body: &Bytes,
    ) -> Step<Priced<'r>> {
        let Some(policy) = &route.pricing else {
            return Ok(Priced::fixed(&route.offers));
        };
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let (mut facts, body_tier) = if policy.reads_request || json.is_object() {
            pricing::facts_of(&json)
        } else {
            (pricing::Facts::default(), None)
        };
        if !policy.reads_request {
            facts = pricing::Facts::default();
        }
        let header = s
            .req_header()
            .headers
            .get(pricing::TIER_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        facts.tier = policy
            .tier(header.as_deref().or(body_tier.as_deref()))
            .map_err(|why| {
                Some(Reply::error(
                    400,
                    "unknown_tier",
                    format!("{why}; nothing was charged"),
                ))
            })?;
        if let Some(name) = facts.tier.and_then(|t| policy.tiers.get(t)) {
            let _ = ctx.tier.set(name.clone());
        }
        Ok(policy.quote(&route.offers, &facts))
    }

    /// Step 3: the payment header (v2 first); without one, the 402. A strategy route's paid call
    /// needs a body.
    fn payment_or_challenge(
        &self,
        s: &Session,
        route: &Route,
        priced: &Priced<'_>,
        body: &Bytes,
    ) -> Step<(Vec<u8>, bool)> {
        let header = match payment_header(s) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(Some(self.challenge(s, route, priced, &Rejection::new(Reason::PaymentRequired, "this route is paid: sign one of `accepts` and send it in PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1)")))),
            Err(r) => return Err(Some(self.challenge(s, route, priced, &r))),
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
    #[allow(clippy::too_many_arguments)]
    fn check_payment<'r>(
        &self,
        s: &Session,
        route: &'r Route,
        priced: &'r Priced<'r>,
        ctx: &Ctx,
        raw: &[u8],
        v2: bool,
        now: u64,
    ) -> Step<VerifiedPayment<'r>> {
        let offers: &'r [Offer] = &priced.offers;
        let checked = decode_payment(raw, v2).and_then(|p| {
            match match_payment(offers, &p, &self.key, &route.id(), now) {
                Ok(m) => Ok((p, m)),
                Err(r) => Err(priced_differently(priced, &p).unwrap_or(r)),
            }
        });
        match checked {
            Ok((received, m)) => Ok(VerifiedPayment::new(
                received,
                m.payment,
                &offers[m.offer],
                &route.description,
            )),
            Err(r) => {
                info!(request_id = %ctx.request_id, reason = %r.reason, "payment refused: {}", r.message);
                telemetry::with(|m| m.payment(PaymentOutcome::Refused(r.reason)));
                Err(Some(self.challenge(s, route, priced, &r)))
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
}

/// On a route with a pricing policy, a payment that signs another amount than this request's
/// quote for the same network, asset and payTo: `price_mismatch`, with both amounts.
fn priced_differently(priced: &Priced<'_>, p: &IncomingPayment) -> Option<Rejection> {
    priced.detail.as_ref()?;
    let a = &p.exact().authorization;
    let network = match p {
        IncomingPayment::V2(v2) => v2.accepted.network.clone(),
        IncomingPayment::V1(v1) => v1.network.clone(),
    };
    let same = |o: &&Offer| {
        o.pay_to == a.to
            && (o.network == network || crate::x402::networks::from_v1(&network) == o.network)
    };
    let quote = priced.offers.iter().find(same)?;
    (a.value != quote.amount).then(|| {
        Rejection::new(
            Reason::PriceMismatch,
            format!(
                "this request's price is {} atomic units ({} of the asset on {}), the payment signs {}: the price depends on the request (see `quote` in the 402); sign the new quote, nothing was charged",
                quote.amount,
                crate::x402::money::format_decimal(quote.amount, quote.decimals),
                quote.network,
                a.value
            ),
        )
    })
}

/// The upstream as the machine calls it: this request's session (to notice the buyer hanging
/// up), route and body.
struct ToUpstream<'s> {
    paywall: &'s Paywall,
    s: &'s mut Session,
    route: &'s Route,
    body: Bytes,
}

#[async_trait]
impl Upstream for ToUpstream<'_> {
    async fn answer(&mut self, ctx: &Ctx, p: &VerifiedPayment<'_>) -> Forwarded {
        let (answer, buyer_left) = self
            .paywall
            .forward(self.s, self.route, ctx, p, self.body.clone())
            .instrument(tracing::info_span!("upstream", otel.kind = "client"))
            .await;
        Forwarded { answer, buyer_left }
    }
}

/// The journal as the machine writes to it: through [`Paywall::audit`].
#[async_trait]
impl Recorder for Paywall {
    async fn record(&self, ctx: &Ctx, p: &VerifiedPayment<'_>, kind: Kind, note: Note) {
        self.audit(ctx, p, kind, |e| note.apply(e)).await
    }

    async fn before_money(
        &self,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        kind: Kind,
        note: Note,
    ) -> Result<(), Reply> {
        self.audit_before_money(ctx, p, kind, |e| note.apply(e))
            .await
    }
}

/// Record how long a phase of the paid path took, from `since`.
pub(crate) fn observe(phase: Phase, since: Instant) {
    machine::observe(phase, since);
}

/// Record how long a phase of the paid path took.
pub(crate) fn observe_secs(phase: Phase, d: Duration) {
    telemetry::with(|m| m.phase(phase, d));
}
