//! Steps 10–11: settle, keep the outcome with the claim, and answer: the upstream's answer
//! merged with `payment`, `metadata` and the disclaimer (in both key sets: `shape.rs`) plus the
//! receipt header once settled;
//! a 503 while the settlement is pending or unknown; a refusal if it failed.

use std::time::Instant;

use alloy_primitives::B256;
use pingora_proxy::Session;
use serde_json::{Value, json};
use tracing::{Instrument, info, warn};

use crate::audit::Kind;
use crate::evm::SettleOutcome;
use crate::http::Reply;
use crate::seller::Paywall;
use crate::seller::config::Route;
use crate::seller::ctx::Ctx;
use crate::seller::paid::observe;
use crate::seller::payment::{ClaimedPayment, VerifiedPayment};
use crate::seller::settle::Settlement;
use crate::seller::shape;
use crate::store::{PaymentRecord, PaymentState, StoredAnswer};
use crate::telemetry;
use crate::telemetry::{Phase, SettlementOutcome};
use crate::x402::codec;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::SettleResponse;

impl Paywall {
    /// Steps 10–11: settle the claimed payment, then answer by the outcome.
    pub(crate) async fn settle_and_answer(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        settlement: &dyn Settlement,
        answer: Value,
    ) -> Reply {
        let settle_started = Instant::now();
        let outcome = settlement
            .settle(&c.payment)
            .instrument(tracing::info_span!("settle"))
            .await;
        observe(Phase::Settle, settle_started);
        self.finish(s, route, ctx, c, answer, outcome).await
    }

    /// Turn a settlement outcome into the stored record and the buyer's answer.
    pub(crate) async fn finish(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        answer: Value,
        outcome: SettleOutcome,
    ) -> Reply {
        let rec = c.unsettled(ctx, &answer);
        match outcome {
            SettleOutcome::Settled { tx } => self.settled(ctx, c, rec, answer, tx).await,
            SettleOutcome::Pending { tx } => self.pending(ctx, c, rec, tx).await,
            SettleOutcome::Unknown { message } => self.unknown(ctx, c, rec, message).await,
            SettleOutcome::Failed {
                reason,
                message,
                tx,
            } => {
                let p = &c.payment;
                let _ = self
                    .store
                    .replace(&p.replay_key, &c.token, &rec, c.ttl)
                    .await;
                telemetry::with(|m| m.settlement(SettlementOutcome::Failed));
                self.audit(ctx, p, Kind::SettlementFailed, |e| {
                    let e = e
                        .with("reason", reason.code())
                        .with("message", message.clone())
                        .with("answer", "withheld");
                    match tx {
                        Some(t) => e.tx(&format!("{t:#x}")),
                        None => e,
                    }
                })
                .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, reason = %reason, tx = ?tx, "settlement failed: {message}");
                self.refusal(s, route, ctx, p, &Rejection::new(reason, message))
            }
        }
    }

    /// Settled: the merged answer and the receipt, stored for replays, then sent.
    async fn settled(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        mut rec: PaymentRecord,
        answer: Value,
        tx: B256,
    ) -> Reply {
        let p = &c.payment;
        let o = p.offer;
        telemetry::with(|m| m.settlement(SettlementOutcome::Settled));
        observe(Phase::Total, ctx.started);
        let receipt = SettleResponse {
            success: true,
            error_reason: None,
            payer: Some(p.authorization().from),
            transaction: format!("{tx:#x}"),
            network: p.network_name(),
            amount: Some(o.amount.to_string()),
            error_message: None,
        };
        let body = self.merge(answer, ctx, p, tx);
        let encoded = codec::encode(&receipt);
        rec.state = PaymentState::Done;
        rec.tx = Some(format!("{tx:#x}"));
        rec.answer = Some(StoredAnswer {
            status: 200,
            body: body.to_string(),
            receipt: Some((p.receipt_header().to_string(), encoded.clone())),
        });
        if let Err(e) = self
            .store
            .replace(&p.replay_key, &c.token, &rec, c.ttl)
            .await
        {
            // The chain is the source of truth; a lost record only costs a later replay.
            warn!(request_id = %ctx.request_id, "settled, but the answer could not be stored: {e}");
        }
        let txs = format!("{tx:#x}");
        self.audit(ctx, p, Kind::Settled, |e| e.tx(&txs)).await;
        self.audit(ctx, p, Kind::Answered, |e| {
            e.tx(&txs)
                .with("status", 200)
                .with("model", body["metadata"]["model"].clone())
                .with("modelCallId", body["metadata"]["modelCallId"].clone())
        })
        .await;
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, payer = %p.authorization().from, tx = %format!("{tx:#x}"),
            amount = %o.amount, ms = ctx.started.elapsed().as_millis() as u64, "paid call settled");
        Reply::json(200, &body).with(p.receipt_header(), encoded)
    }

    /// Broadcast without a receipt yet: the answer is withheld until a retry sees it confirmed.
    async fn pending(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        mut rec: PaymentRecord,
        tx: B256,
    ) -> Reply {
        let p = &c.payment;
        telemetry::with(|m| m.settlement(SettlementOutcome::Pending));
        rec.state = PaymentState::Pending;
        rec.tx = Some(format!("{tx:#x}"));
        let _ = self
            .store
            .replace(&p.replay_key, &c.token, &rec, c.ttl)
            .await;
        let txs = format!("{tx:#x}");
        self.audit(ctx, p, Kind::SettlementPending, |e| {
            e.tx(&txs).with(
                "why",
                "broadcast, no receipt yet; answer withheld until confirmed",
            )
        })
        .await;
        warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, tx = %format!("{tx:#x}"), "settlement pending: outcome unknown");
        Reply::json(
            503,
            &json!({
                "error": Reason::SettlementPending,
                "message": "the payment was submitted and is not confirmed yet; send the same request with the same payment again to get the answer (you will not be charged twice)",
                "transaction": format!("{tx:#x}"),
            }),
        )
        .retry_after(5)
    }

    /// Outcome unknown, no transaction known: withheld until the chain shows it.
    async fn unknown(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        mut rec: PaymentRecord,
        message: String,
    ) -> Reply {
        let p = &c.payment;
        telemetry::with(|m| m.settlement(SettlementOutcome::Pending));
        rec.state = PaymentState::Pending;
        let _ = self
            .store
            .replace(&p.replay_key, &c.token, &rec, c.ttl)
            .await;
        self.audit(ctx, p, Kind::SettlementPending, |e| {
            e.with(
                "why",
                format!("outcome unknown ({message}); answer withheld until the chain shows it"),
            )
        })
        .await;
        warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, "settlement outcome unknown: {message}");
        Reply::json(
            503,
            &json!({
                "error": Reason::SettlementPending,
                "message": "the payment's settlement could not be confirmed yet; send the same request with the same payment again to get the answer (you will not be charged twice)",
            }),
        )
        .retry_after(5)
    }

    /// The upstream answer plus `payment`, `metadata` and the disclaimer, in the seed's and
    /// roma-01's key sets ([`shape`]).
    fn merge(&self, answer: Value, ctx: &Ctx, p: &VerifiedPayment<'_>, tx: B256) -> Value {
        shape::merge(answer, &paid(ctx, p, tx), &self.disclaimer)
    }
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
