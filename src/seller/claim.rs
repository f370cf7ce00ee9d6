//! Step 6, the replay claim: one payment, one request at a time, one answer ever; and what a
//! payment the store already holds gets ([`Paywall::repeated`]).

use alloy_primitives::B256;
use bytes::Bytes;
use pingora_proxy::Session;
use serde_json::Value;
use tracing::{Instrument, info, warn};

use crate::audit::Kind;
use crate::evm::SettleOutcome;
use crate::http::Reply;
use crate::seller::Paywall;
use crate::seller::config::Route;
use crate::seller::ctx::Ctx;
use crate::seller::paid::Step;
use crate::seller::payment::{ClaimedPayment, VerifiedPayment};
use crate::seller::settle::Settlement;
use crate::store::{PaymentRecord, PaymentState, StoredAnswer};
use crate::telemetry;
use crate::telemetry::Replay;
use crate::util::{new_id, sha256_hex};

impl<'a> ClaimedPayment<'a> {
    /// `payment`, to be claimed for the request with `body`, kept until its authorization
    /// expires (counted from `now`).
    pub(crate) fn new(payment: VerifiedPayment<'a>, body: &Bytes, now: u64) -> Self {
        ClaimedPayment {
            token: new_id("claim"),
            body_hash: sha256_hex(body),
            ttl: payment.ttl(now),
            payment,
        }
    }

    /// The record of this claim in `state`, with `answer` (no transaction yet).
    pub(crate) fn record(
        &self,
        ctx: &Ctx,
        state: PaymentState,
        answer: Option<StoredAnswer>,
    ) -> PaymentRecord {
        PaymentRecord {
            state,
            token: self.token.clone(),
            body_hash: self.body_hash.clone(),
            answer,
            tx: None,
            request_id: Some(ctx.request_id.clone()),
        }
    }

    /// The record of this claim holding the upstream's `answer`, not settled.
    pub(crate) fn unsettled(&self, ctx: &Ctx, answer: &Value) -> PaymentRecord {
        let answer = StoredAnswer {
            status: 200,
            body: answer.to_string(),
            receipt: None,
        };
        self.record(ctx, PaymentState::Unsettled, Some(answer))
    }
}

impl Paywall {
    /// Step 6: claim the payment for this request. A payment the store already holds stops
    /// here with what [`Paywall::repeated`] gives it.
    pub(crate) async fn claim(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        claimed: &ClaimedPayment<'_>,
        settlement: &dyn Settlement,
    ) -> Step<()> {
        let rec = claimed.record(ctx, PaymentState::InFlight, None);
        let key = &claimed.payment.replay_key;
        match self.store.claim(key, &rec, claimed.ttl).await {
            Err(e) => {
                warn!(request_id = %ctx.request_id, "replay store unavailable: {e}");
                Err(Some(Reply::error(503, "store_unavailable", "the payment could not be recorded safely; nothing was charged, try again shortly").retry_after(2)))
            }
            Ok(Some(held)) => Err(self
                .repeated(s, route, ctx, claimed, settlement, held)
                .await),
            Ok(None) => Ok(()),
        }
    }

    /// Give the claim back: nothing happened, the buyer may send the same payment again.
    pub(crate) async fn release(&self, c: &ClaimedPayment<'_>) {
        let p = &c.payment;
        if let Err(e) = self.store.release(&p.replay_key, &c.token).await {
            warn!(payment_id = %p.payment_id, "claim not released ({e}); it expires by itself");
        }
    }

    /// What a payment already in the store gets: 409 if it was used for another body or is
    /// being processed, the stored answer if it settled, and, if its answer is kept unsettled
    /// or its settlement is pending, the settlement finished by this request.
    async fn repeated(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        settlement: &dyn Settlement,
        held: PaymentRecord,
    ) -> Option<Reply> {
        let kind = match held.state {
            _ if held.body_hash != c.body_hash => Replay::Reused,
            PaymentState::InFlight => Replay::InFlight,
            PaymentState::Done => Replay::Replayed,
            PaymentState::Unsettled | PaymentState::Pending => Replay::Resumed,
        };
        telemetry::with(|m| m.replay(kind));
        if held.body_hash != c.body_hash {
            return Some(Reply::error(
                409,
                "payment_already_used",
                "this payment was already used for a different request; sign a new authorization for this one",
            ));
        }
        match held.state {
            PaymentState::InFlight => Some(
                Reply::error(
                    409,
                    "payment_in_flight",
                    "this payment is being processed by another request; retry to get its answer",
                )
                .retry_after(2),
            ),
            PaymentState::Done => self.replay_settled(ctx, &c.payment, held).await,
            PaymentState::Unsettled | PaymentState::Pending => {
                self.resume(s, route, ctx, c, settlement, held).await
            }
        }
    }

    /// A settled payment sent again: its stored answer and receipt, no second charge.
    async fn replay_settled(
        &self,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        held: PaymentRecord,
    ) -> Option<Reply> {
        let a = held.answer?;
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "replay of a settled payment: stored answer, no second charge");
        self.audit(ctx, p, Kind::Replayed, |e| match held.tx.as_deref() {
            Some(tx) => e.tx(tx).with(
                "why",
                "settled payment sent again: stored answer, no second charge",
            ),
            None => e,
        })
        .await;
        let mut r = Reply::raw(a.status, "application/json", a.body);
        if let Some((name, value)) = a.receipt {
            r.headers.push((crate::x402::receipt_name(&name), value));
        }
        Some(r.with("X-Payment-Replayed", "true"))
    }

    /// A kept answer whose payment is unsettled or pending: take the record over atomically
    /// (whoever wins settles or reconciles), then finish its settlement.
    async fn resume(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        settlement: &dyn Settlement,
        held: PaymentRecord,
    ) -> Option<Reply> {
        let p = &c.payment;
        let mut mine = held.clone();
        mine.token = c.token.clone();
        mine.state = PaymentState::InFlight;
        mine.request_id = Some(ctx.request_id.clone());
        match self
            .store
            .replace(&p.replay_key, &held.token, &mine, c.ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Some(
                    Reply::error(
                        409,
                        "payment_in_flight",
                        "this payment is being processed by another request",
                    )
                    .retry_after(2),
                );
            }
            Err(e) => {
                warn!(request_id = %ctx.request_id, "replay store unavailable: {e}");
                return Some(
                    Reply::error(503, "store_unavailable", "try again shortly").retry_after(2),
                );
            }
        }
        let answer: Value = held
            .answer
            .as_ref()
            .and_then(|a| serde_json::from_str(&a.body).ok())?;
        if held.state == PaymentState::Pending {
            let tx: Option<B256> = held.tx.as_deref().and_then(|t| t.parse().ok());
            let outcome = settlement
                .reconcile(p, tx)
                .instrument(tracing::info_span!("settle", reconcile = true))
                .await;
            return Some(self.finish(s, route, ctx, c, answer, outcome).await);
        }
        Some(
            self.settle_unsettled(s, route, ctx, c, settlement, mine, answer)
                .await,
        )
    }

    /// A kept answer nobody paid for yet: delivered if the chain shows the payment settled
    /// after all, else verified and settled now (a refusal keeps it unsettled).
    #[allow(clippy::too_many_arguments)]
    async fn settle_unsettled(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        settlement: &dyn Settlement,
        mine: PaymentRecord,
        answer: Value,
    ) -> Reply {
        let p = &c.payment;
        // A settlement whose answer went astray may have gone through after all.
        if let Ok(Some(o @ SettleOutcome::Settled { .. })) = settlement
            .chain()
            .settlement_of(p.offer.asset, p.authorization())
            .await
        {
            info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "retry of an answer whose payment is settled on chain: delivering it");
            return self.finish(s, route, ctx, c, answer, o).await;
        }
        if let Err(r) = settlement.verify(p).await {
            let mut back = mine;
            back.state = PaymentState::Unsettled;
            let _ = self
                .store
                .replace(&p.replay_key, &c.token, &back, c.ttl)
                .await;
            return self.refusal(s, route, ctx, p, &r);
        }
        // Settling now moves money: the journal must be able to tell it first.
        let recorded = self
            .audit_before_money(ctx, p, Kind::PaymentVerified, |e| {
                e.with("route", route.id())
                    .with("x402Version", p.version())
                    .with("resumed", true)
            })
            .await;
        if let Err(reply) = recorded {
            let mut back = mine;
            back.state = PaymentState::Unsettled;
            let _ = self
                .store
                .replace(&p.replay_key, &c.token, &back, c.ttl)
                .await;
            return reply;
        }
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "retry of an unsettled answer: settling now");
        self.settle_and_answer(s, route, ctx, c, settlement, answer)
            .await
    }
}
