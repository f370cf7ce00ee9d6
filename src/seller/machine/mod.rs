//! The paid request as a state machine that knows no transport: given a payment that passed
//! every check needing no I/O, it claims the payment, verifies it on chain, forwards, settles and
//! delivers, through a store, a settlement backend, an upstream and a journal it is handed
//! (fakes in its unit tests; the pingora service is thin glue around it, `seller::paid`).
//!
//! ```text
//! claimed ─► verified ─► forwarded ─► answer held ─► settling ─► settled ─► delivered
//!    │           │            │           (tx?)          │
//!    └─released◄─┴─ refused   └─ released (upstream failed) / kept (buyer hung up)
//! ```
//!
//! The store keeps the states a crash must not lose, under the payment's replay key: claimed
//! (`InFlight`), answer held (`Unsettled`), settling (`Pending`, with the tx hash once
//! broadcast), delivered (`Done`). Each is owned by one process through a lease
//! ([`lease`]); a record whose owner is gone is taken over by the next request with the same
//! payment. The chain decides what happened, by the payment's own identity: when its nonce is
//! used already (our own earlier settlement, a crash after broadcast, a front-run), the machine
//! finds that transaction and, if it paid this route's payTo this amount, delivers (the held
//! answer, or the upstream's, asked now) and records that transaction; otherwise it refuses.

mod lease;
mod recover;
#[cfg(test)]
mod tests;

use std::time::Instant;

use alloy_primitives::B256;
use async_trait::async_trait;
use serde_json::Value;
use tracing::{Instrument, info, warn};

use crate::audit::{Event, Kind};
use crate::evm::SettleOutcome;
use crate::http::Reply;
use crate::seller::answer;
use crate::seller::ctx::Ctx;
use crate::seller::payment::{ClaimedPayment, VerifiedPayment};
use crate::seller::settle::Settlement;
use crate::store::{PaymentRecord, PaymentState, ReplayStore, StoreError, StoredAnswer};
use crate::telemetry::{self, PaymentOutcome, Phase, Replay, SettlementOutcome};
use crate::x402::reason::{Reason, Rejection};

pub(crate) use lease::{LEASE_MARGIN, LeaseSpec, node_id, now_ms};
pub(crate) use recover::sweep;

use lease::Lease;

/// The journal, as the machine writes to it.
#[async_trait]
pub(crate) trait Recorder: Send + Sync {
    /// Write a lifecycle event of payment `p` (resolves once it is as durable as its kind asks).
    async fn record(&self, ctx: &Ctx, p: &VerifiedPayment<'_>, kind: Kind, note: Note);

    /// Write the last event before money moves and wait until it is on disk; if it cannot be,
    /// the payment must not be settled: the buyer's answer (a 503, not charged).
    async fn before_money(
        &self,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        kind: Kind,
        note: Note,
    ) -> Result<(), Reply> {
        self.record(ctx, p, kind, note).await;
        Ok(())
    }
}

/// The fields of one journal event beyond the payment's own.
#[derive(Debug, Default, Clone)]
pub(crate) struct Note {
    pub(crate) tx: Option<String>,
    pub(crate) fields: Vec<(&'static str, Value)>,
    /// Bodies kept with the record (the request sold, the answer delivered).
    pub(crate) bodies: Vec<(&'static str, bytes::Bytes)>,
}

impl Note {
    pub(crate) fn tx(tx: B256) -> Note {
        Note {
            tx: Some(format!("{tx:#x}")),
            ..Note::default()
        }
    }

    pub(crate) fn with(mut self, k: &'static str, v: impl Into<Value>) -> Note {
        self.fields.push((k, v.into()));
        self
    }

    /// Keep `bytes` with the record as its `role` body; the record gets their sha256.
    pub(crate) fn body(mut self, role: &'static str, bytes: bytes::Bytes) -> Note {
        self.bodies.push((role, bytes));
        self
    }

    /// The event with these fields.
    pub(crate) fn apply(self, mut e: Event) -> Event {
        if let Some(tx) = &self.tx {
            e = e.tx(tx);
        }
        for (k, v) in self.fields {
            e = e.with(k, v);
        }
        for (role, b) in self.bodies {
            e = e.body(role, b);
        }
        e
    }
}

/// The upstream, as the machine calls it.
#[async_trait]
pub(crate) trait Upstream: Send {
    /// Ask the upstream for payment `p`'s answer.
    async fn answer(&mut self, ctx: &Ctx, p: &VerifiedPayment<'_>) -> Forwarded;
}

/// What the upstream gave.
pub(crate) struct Forwarded {
    /// The checked answer, or the reply that says why there is none (never charged).
    pub(crate) answer: Result<Value, Reply>,
    /// The buyer hung up while the upstream worked.
    pub(crate) buyer_left: bool,
}

/// How a paid request ends.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this.
    Reply(Reply),
    /// The payment is refused: a 402 with a fresh challenge (payer's fault) or a 503.
    Refused(Rejection),
    /// The buyer is gone; nothing to write.
    Gone,
}

/// One paid request's machine: what it works with.
pub(crate) struct Machine<'a> {
    pub(crate) store: &'a dyn ReplayStore,
    pub(crate) backend: &'a dyn Settlement,
    pub(crate) journal: &'a dyn Recorder,
    pub(crate) lease: &'a LeaseSpec,
    pub(crate) disclaimer: &'a str,
    /// The route's id, for the journal.
    pub(crate) route: &'a str,
    /// `settle: before`: settle, then forward (an expensive upstream is paid before it works).
    pub(crate) settle_first: bool,
}

/// A test hook, honoured in debug builds only (never in a release binary): with
/// `X402_TEST_CRASH_AT=<point>` the process aborts at that point of the paid path, as a
/// `kill -9` would, so the fault tests hit exact points. Points: `after_claim`,
/// `before_settle`, `after_receipt`.
fn crash_point(point: &str) {
    #[cfg(debug_assertions)]
    {
        static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let at = AT.get_or_init(|| std::env::var("X402_TEST_CRASH_AT").ok());
        if at.as_deref() == Some(point) {
            eprintln!("X402_TEST_CRASH_AT={point}: aborting here (test hook)");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

impl Machine<'_> {
    /// Run payment `c` to its end.
    pub(crate) async fn run(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        up: &mut dyn Upstream,
    ) -> Outcome {
        let p = &c.payment;
        let rec = PaymentRecord {
            state: PaymentState::InFlight,
            token: c.token.clone(),
            body_hash: c.body_hash.clone(),
            answer: None,
            tx: None,
            request_id: Some(ctx.request_id.clone()),
            owner: Some(self.lease.owner.clone()),
            lease_until: Some(self.lease.until()),
            auth: Some(p.stored_auth()),
        };
        match self.store.claim(&p.replay_key, &rec, c.ttl).await {
            Err(e) => store_unavailable(ctx, &e),
            Ok(None) => {
                let lease = self.lease_on(c, rec);
                crash_point("after_claim");
                self.fresh(ctx, c, &lease, up).await
            }
            Ok(Some(held)) => self.repeated(ctx, c, held, up).await,
        }
    }

    fn lease_on<'m>(&'m self, c: &'m ClaimedPayment<'_>, rec: PaymentRecord) -> Lease<'m> {
        Lease::new(self.store, self.lease, &c.payment.replay_key, c.ttl, rec)
    }

    /// Claimed: verify on chain, forward, settle. A nonce already used goes to
    /// [`Machine::nonce_used`].
    async fn fresh(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        up: &mut dyn Upstream,
    ) -> Outcome {
        let p = &c.payment;
        let started = Instant::now();
        let verified = self
            .backend
            .verify(p)
            .instrument(self.backend.verify_span())
            .await;
        observe(Phase::Chain, started);
        match verified {
            Err(r) if r.reason == Reason::NonceUsed => {
                return self.nonce_used(ctx, c, lease, up).await;
            }
            Err(r) => {
                lease.release().await;
                let note = Note::default().with("reason", r.reason.code());
                self.journal
                    .record(ctx, p, Kind::PaymentRefused, note)
                    .await;
                return Outcome::Refused(r);
            }
            Ok(()) => {}
        }
        telemetry::with(|m| m.payment(PaymentOutcome::Verified));
        let note = Note::default()
            .with("route", self.route)
            .with("x402Version", p.version());
        if self.settle_first {
            return self.settle_then_forward(ctx, c, lease, up, note).await;
        }
        self.journal
            .record(ctx, p, Kind::PaymentVerified, note)
            .await;
        let answer = match self.forward(ctx, c, lease, up).await {
            Ok(a) => a,
            Err(out) => return out,
        };
        self.settle(ctx, c, lease, answer).await
    }

    /// `settle: before`: the verified payment is settled first (its record on disk before money
    /// moves, the store saying "settling" with no answer), then the upstream is asked. An
    /// upstream failure after the settlement leaves "settled by `tx`, no answer" in the store:
    /// the buyer's retry with the same payment asks the upstream again and is not charged
    /// twice ([`Machine::answer_for_paid`]).
    async fn settle_then_forward(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        up: &mut dyn Upstream,
        note: Note,
    ) -> Outcome {
        let p = &c.payment;
        let note = note.with("settle", "before");
        if let Err(reply) = self
            .journal
            .before_money(ctx, p, Kind::PaymentVerified, note)
            .await
        {
            lease.release().await;
            return Outcome::Reply(reply);
        }
        let outcome = match self.settle_recorded(ctx, c, lease, None).await {
            Ok(o) => o,
            Err(out) => return out,
        };
        if let SettleOutcome::Settled { tx } = &outcome {
            // Settled, nothing asked yet: a crash from here on leaves "settled, no answer",
            // and the retry gets the answer without paying again.
            let txs = format!("{tx:#x}");
            let _ = lease
                .write(|r| {
                    r.state = PaymentState::Pending;
                    r.tx = Some(txs);
                })
                .await;
            crash_point("after_receipt");
        }
        self.finish(ctx, c, lease, None, outcome, Some(up)).await
    }

    /// Verified, nothing paid: the upstream's answer. A failure releases the claim; a buyer who
    /// hung up meanwhile is not charged and the answer is held for a retry.
    async fn forward(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        up: &mut dyn Upstream,
    ) -> Result<Value, Outcome> {
        let p = &c.payment;
        let f = lease.hold(up.answer(ctx, p)).await;
        match f.answer {
            Err(reply) => {
                lease.release().await;
                // The reply's code and, for an answer the route does not sell, what was wrong.
                let said: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                let mut note = Note::default()
                    .with("why", "upstream failed; claim released")
                    .with("status", reply.status)
                    .with("error", said["error"].clone());
                if let Some(problem) = said["problem"].as_str() {
                    note = note.with("problem", problem);
                }
                self.journal.record(ctx, p, Kind::NotCharged, note).await;
                Err(Outcome::Reply(reply))
            }
            Ok(answer) if f.buyer_left => {
                let held = held_answer(&answer);
                let kept = lease
                    .hand_back(|r| {
                        r.state = PaymentState::Unsettled;
                        r.answer = Some(held);
                    })
                    .await;
                let note = Note::default().with(
                    "why",
                    "buyer hung up before settlement; answer kept for a retry with the same payment",
                );
                self.journal.record(ctx, p, Kind::NotCharged, note).await;
                info!(request_id = %ctx.request_id, payment_id = %p.payment_id, kept = kept.unwrap_or(false),
                    "buyer hung up before settlement: not charged; the answer is kept for a retry with the same payment");
                Err(Outcome::Gone)
            }
            Ok(answer) => {
                // The last record before money moves: on disk, or no settlement (503, released).
                let note = forwarded_note(c, &answer);
                if let Err(reply) = self
                    .journal
                    .before_money(ctx, p, Kind::Forwarded, note)
                    .await
                {
                    lease.release().await;
                    return Err(Outcome::Reply(reply));
                }
                Ok(answer)
            }
        }
    }

    async fn forwarded(&self, ctx: &Ctx, c: &ClaimedPayment<'_>, answer: &Value) {
        let note = forwarded_note(c, answer);
        self.journal
            .record(ctx, &c.payment, Kind::Forwarded, note)
            .await;
    }

    /// Answer held: record "settling", settle, and go on by the outcome.
    async fn settle(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        answer: Value,
    ) -> Outcome {
        let held = held_answer(&answer);
        let outcome = match self.settle_recorded(ctx, c, lease, Some(held)).await {
            Ok(o) => o,
            Err(out) => return out,
        };
        self.finish(ctx, c, lease, Some(answer), outcome, None)
            .await
    }

    /// Record "settling" (with the held answer, if any), settle, and read a refusal the chain
    /// contradicts. `Err` when another process took the record over meanwhile.
    async fn settle_recorded(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        held: Option<StoredAnswer>,
    ) -> Result<SettleOutcome, Outcome> {
        let p = &c.payment;
        match lease
            .write(|r| {
                r.state = PaymentState::Pending;
                r.answer = held;
                r.tx = None;
            })
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(taken_over()),
            // The chain still decides: a crash from here on is resolved by the payment's
            // identity on chain.
            Err(e) => {
                warn!(request_id = %ctx.request_id, "settling, but the store could not record it: {e}")
            }
        }
        crash_point("before_settle");
        let started = Instant::now();
        let outcome = lease
            .hold(
                self.backend
                    .settle(p)
                    .instrument(tracing::info_span!("settle")),
            )
            .await;
        observe(Phase::Settle, started);
        Ok(self.confirm(p, outcome).await)
    }

    /// A settlement refused because the authorization is used (or reverted): the chain may show
    /// it settled by another transaction (our own earlier one, a front-run).
    async fn confirm(&self, p: &VerifiedPayment<'_>, o: SettleOutcome) -> SettleOutcome {
        let SettleOutcome::Failed {
            reason: Reason::NonceUsed | Reason::TransactionFailed,
            ..
        } = &o
        else {
            return o;
        };
        match self.backend.lookup(p.offer.asset, p.authorization()).await {
            Ok(Some(found @ SettleOutcome::Settled { .. })) => {
                info!(payment_id = %p.payment_id, "the settlement was refused, but the chain shows this payment settled");
                found
            }
            _ => o,
        }
    }

    /// Turn a settlement outcome into the stored record and the buyer's answer. `answer` is the
    /// held answer if there is one; `up`, when given, asks the upstream now if there is none.
    async fn finish(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        answer: Option<Value>,
        outcome: SettleOutcome,
        up: Option<&mut dyn Upstream>,
    ) -> Outcome {
        let p = &c.payment;
        let held = answer.as_ref().map(held_answer);
        match outcome {
            SettleOutcome::Settled { tx } => {
                crash_point("after_receipt");
                self.deliver(ctx, c, lease, tx, answer, up).await
            }
            SettleOutcome::Pending { tx } => {
                telemetry::with(|m| m.settlement(SettlementOutcome::Pending));
                let _ = lease
                    .hand_back(|r| {
                        r.state = PaymentState::Pending;
                        r.tx = Some(format!("{tx:#x}"));
                        r.answer = held;
                    })
                    .await;
                let note = Note::tx(tx).with(
                    "why",
                    "broadcast, no receipt yet; answer withheld until confirmed",
                );
                self.journal
                    .record(ctx, p, Kind::SettlementPending, note)
                    .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, tx = %format!("{tx:#x}"), "settlement pending: outcome unknown");
                Outcome::Reply(answer::pending(Some(tx)))
            }
            SettleOutcome::Unknown { message } => {
                telemetry::with(|m| m.settlement(SettlementOutcome::Pending));
                let _ = lease
                    .hand_back(|r| {
                        r.state = PaymentState::Pending;
                        r.tx = None;
                        r.answer = held;
                    })
                    .await;
                let note = Note::default().with(
                    "why",
                    format!(
                        "outcome unknown ({message}); answer withheld until the chain shows it"
                    ),
                );
                self.journal
                    .record(ctx, p, Kind::SettlementPending, note)
                    .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, "settlement outcome unknown: {message}");
                Outcome::Reply(answer::pending(None))
            }
            SettleOutcome::Failed {
                reason,
                message,
                tx,
            } => {
                match held {
                    Some(held) => {
                        let _ = lease
                            .hand_back(|r| {
                                r.state = PaymentState::Unsettled;
                                r.tx = None;
                                r.answer = Some(held);
                            })
                            .await;
                    }
                    None => lease.release().await,
                }
                telemetry::with(|m| m.settlement(SettlementOutcome::Failed));
                let mut note = Note::default()
                    .with("reason", reason.code())
                    .with("message", message.clone())
                    .with("answer", "withheld");
                note.tx = tx.map(|t| format!("{t:#x}"));
                self.journal
                    .record(ctx, p, Kind::SettlementFailed, note)
                    .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, reason = %reason, tx = ?tx, "settlement failed: {message}");
                Outcome::Refused(Rejection::new(reason, message))
            }
        }
    }

    /// Settled by `tx`: the answer (held, or asked of the upstream now), merged, stored for
    /// replays, journaled (`settled` with that transaction, then `answered`) and sent.
    async fn deliver(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        tx: B256,
        answer: Option<Value>,
        up: Option<&mut dyn Upstream>,
    ) -> Outcome {
        let p = &c.payment;
        let txs = format!("{tx:#x}");
        let answer = match (answer, up) {
            (Some(a), _) => a,
            (None, None) => {
                // Only a caller with an upstream gets here without an answer.
                let _ = lease
                    .hand_back(|r| {
                        r.state = PaymentState::Pending;
                        r.tx = Some(txs.clone());
                    })
                    .await;
                return Outcome::Reply(answer::pending(Some(tx)));
            }
            (None, Some(up)) => match self.answer_for_paid(ctx, c, lease, tx, up).await {
                Ok(a) => a,
                Err(out) => return out,
            },
        };
        let (body, (name, value)) = answer::paid_answer(answer, self.disclaimer, ctx, p, tx);
        let done = StoredAnswer {
            status: 200,
            body: body.to_string(),
            receipt: Some((name.to_string(), value.clone())),
        };
        let t = txs.clone();
        match lease
            .hand_back(|r| {
                r.state = PaymentState::Done;
                r.tx = Some(t);
                r.answer = Some(done);
            })
            .await
        {
            Ok(true) => {}
            // The chain is the source of truth; a lost record only costs a later replay.
            Ok(false) => {
                warn!(request_id = %ctx.request_id, "settled, but the record was taken over meanwhile")
            }
            Err(e) => {
                warn!(request_id = %ctx.request_id, "settled, but the answer could not be stored: {e}")
            }
        }
        telemetry::with(|m| {
            m.settlement(SettlementOutcome::Settled);
            let o = &p.offer;
            m.revenue(
                &o.network,
                &o.asset.to_string(),
                &o.pay_to.to_string(),
                u64::try_from(o.amount).unwrap_or(u64::MAX),
                o.decimals,
            );
        });
        observe(Phase::Total, ctx.started);
        if let Some(id) = body["metadata"]["modelCallId"].as_str() {
            let _ = ctx.model_call_id.set(id.to_string());
            tracing::Span::current().record("model_call_id", id);
        }
        self.journal
            .record(ctx, p, Kind::Settled, Note::tx(tx))
            .await;
        let reply = Reply::json(200, &body).with(name, value);
        // The answer as delivered, byte for byte, kept with the request's hash.
        let note = Note::tx(tx)
            .with("status", 200)
            .with("model", body["metadata"]["model"].clone())
            .with("modelCallId", body["metadata"]["modelCallId"].clone())
            .with("requestSha256", c.body_hash.clone())
            .body("answer", reply.body.clone());
        self.journal.record(ctx, p, Kind::Answered, note).await;
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, payer = %p.authorization().from, tx = %txs,
            amount = %p.offer.amount, ms = ctx.started.elapsed().as_millis() as u64, "paid call settled");
        Outcome::Reply(reply)
    }

    /// A payment settled on chain with no answer held: the upstream's, now. If it fails, the
    /// record says "settled by `tx`, no answer" and the retry asks again (no second charge).
    async fn answer_for_paid(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        tx: B256,
        up: &mut dyn Upstream,
    ) -> Result<Value, Outcome> {
        let p = &c.payment;
        let txs = format!("{tx:#x}");
        let f = lease.hold(up.answer(ctx, p)).await;
        match f.answer {
            Err(reply) => {
                let _ = lease
                    .hand_back(|r| {
                        r.state = PaymentState::Pending;
                        r.tx = Some(txs);
                        r.answer = None;
                    })
                    .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, status = reply.status,
                    "the payment is settled on chain but the upstream failed: the retry asks it again");
                let said: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                let note = Note::tx(tx)
                    .with("why", "upstream failed after the settlement; the retry with the same payment asks it again, no second charge")
                    .with("status", reply.status)
                    .with("error", said["error"].clone());
                self.journal.record(ctx, p, Kind::Forwarded, note).await;
                Err(Outcome::Reply(
                    Reply::error(
                        503,
                        "upstream_error",
                        format!(
                            "your payment is settled (transaction {tx:#x}) but the strategy service failed; send the same request with the same payment again to get the answer (you will not be charged twice)"
                        ),
                    )
                    .retry_after(5),
                ))
            }
            Ok(answer) if f.buyer_left => {
                let held = held_answer(&answer);
                let _ = lease
                    .hand_back(|r| {
                        r.state = PaymentState::Pending;
                        r.tx = Some(txs);
                        r.answer = Some(held);
                    })
                    .await;
                Err(Outcome::Gone)
            }
            Ok(answer) => {
                self.forwarded(ctx, c, &answer).await;
                Ok(answer)
            }
        }
    }

    /// The nonce is used on chain already: find the transaction that used it. If it paid this
    /// route's payTo this amount, the payment is good (deliver); otherwise refuse.
    async fn nonce_used(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        up: &mut dyn Upstream,
    ) -> Outcome {
        let p = &c.payment;
        match self.backend.lookup(p.offer.asset, p.authorization()).await {
            Ok(Some(SettleOutcome::Settled { tx })) => {
                info!(request_id = %ctx.request_id, payment_id = %p.payment_id, tx = %format!("{tx:#x}"),
                    "the payment's nonce is used: the chain shows it paid this route; delivering");
                telemetry::with(|m| m.payment(PaymentOutcome::Verified));
                self.deliver(ctx, c, lease, tx, None, Some(up)).await
            }
            Ok(Some(o @ SettleOutcome::Pending { .. })) => {
                self.finish(ctx, c, lease, None, o, Some(up)).await
            }
            Ok(Some(SettleOutcome::Failed { .. })) => {
                lease.release().await;
                let r = Rejection::new(
                    Reason::NonceUsed,
                    "the authorization's nonce is already used on chain, by a transaction that did not pay this route",
                );
                let note = Note::default().with("reason", r.reason.code());
                self.journal
                    .record(ctx, p, Kind::PaymentRefused, note)
                    .await;
                Outcome::Refused(r)
            }
            Ok(Some(SettleOutcome::Unknown { message })) | Err(message) => {
                lease.release().await;
                Outcome::Refused(Rejection::new(
                    Reason::UnexpectedVerifyError,
                    format!("the chain could not be read: {message}"),
                ))
            }
            Ok(None) => {
                lease.release().await;
                Outcome::Refused(Rejection::new(
                    Reason::UnexpectedVerifyError,
                    "the chain reported the nonce used, then unused",
                ))
            }
        }
    }

    /// A payment the store already holds: 409 if it was used for another body or another
    /// request holds its lease; the stored answer if it was delivered; else the record is taken
    /// over (its owner is gone or handed it back) and the payment goes on from where it was.
    async fn repeated(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        held: PaymentRecord,
        up: &mut dyn Upstream,
    ) -> Outcome {
        let p = &c.payment;
        if held.body_hash != c.body_hash {
            telemetry::with(|m| m.replay(Replay::Reused));
            return Outcome::Reply(Reply::error(
                409,
                "payment_already_used",
                "this payment was already used for a different request; sign a new authorization for this one",
            ));
        }
        if held.state == PaymentState::Done {
            telemetry::with(|m| m.replay(Replay::Replayed));
            return self.replay(ctx, p, held).await;
        }
        let now = self.lease.now();
        if held.leased_at(now) {
            telemetry::with(|m| m.replay(Replay::InFlight));
            let left = held.lease_until.unwrap_or(now).saturating_sub(now) / 1000;
            return Outcome::Reply(in_flight(left.clamp(1, 30)));
        }
        let mut mine = held.clone();
        mine.token = c.token.clone();
        mine.owner = Some(self.lease.owner.clone());
        mine.lease_until = Some(self.lease.until());
        mine.request_id = Some(ctx.request_id.clone());
        mine.auth = Some(p.stored_auth());
        match self
            .store
            .take_over(&p.replay_key, &held.token, now, &mine, c.ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                telemetry::with(|m| m.replay(Replay::InFlight));
                return Outcome::Reply(in_flight(2));
            }
            Err(e) => return store_unavailable(ctx, &e),
        }
        telemetry::with(|m| m.replay(Replay::Resumed));
        let lease = self.lease_on(c, mine);
        let answer: Option<Value> = held
            .answer
            .as_ref()
            .and_then(|a| serde_json::from_str(&a.body).ok());
        match (held.state, answer) {
            (PaymentState::Pending, answer) => {
                let tx = held.tx.as_deref().and_then(|t| t.parse().ok());
                info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "a settling payment whose owner is gone: resolving it on chain");
                let o = self.reconcile(p, &lease, tx).await;
                self.finish(ctx, c, &lease, answer, o, Some(up)).await
            }
            (PaymentState::Unsettled, Some(answer)) => {
                self.settle_held(ctx, c, &lease, answer).await
            }
            // Claimed, nothing settled by us: start again (the chain check sees a front-run).
            _ => {
                info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "a claim whose owner is gone: taken over");
                self.fresh(ctx, c, &lease, up).await
            }
        }
    }

    /// A delivered payment sent again: its stored answer and receipt, no second charge.
    async fn replay(&self, ctx: &Ctx, p: &VerifiedPayment<'_>, held: PaymentRecord) -> Outcome {
        let Some(a) = held.answer else {
            return Outcome::Reply(in_flight(2));
        };
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "replay of a settled payment: stored answer, no second charge");
        let note = match held.tx {
            Some(tx) => Note {
                tx: Some(tx),
                ..Note::default()
            }
            .with(
                "why",
                "settled payment sent again: stored answer, no second charge",
            ),
            None => Note::default(),
        }
        .with("answerSha256", crate::util::sha256_hex(a.body.as_bytes()));
        self.journal.record(ctx, p, Kind::Replayed, note).await;
        Outcome::Reply(answer::replayed(a))
    }

    /// A held answer nobody paid for yet: delivered if the chain shows the payment settled after
    /// all, else verified and settled now (a refusal keeps it held).
    async fn settle_held(
        &self,
        ctx: &Ctx,
        c: &ClaimedPayment<'_>,
        lease: &Lease<'_>,
        answer: Value,
    ) -> Outcome {
        let p = &c.payment;
        if let Ok(Some(SettleOutcome::Settled { tx })) =
            self.backend.lookup(p.offer.asset, p.authorization()).await
        {
            info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "retry of an answer whose payment is settled on chain: delivering it");
            return self.deliver(ctx, c, lease, tx, Some(answer), None).await;
        }
        if let Err(r) = self.backend.verify(p).await {
            let _ = lease.hand_back(|_| {}).await;
            return Outcome::Refused(r);
        }
        // Settling now moves money: the journal must be able to tell it first.
        let note = Note::default()
            .with("route", self.route)
            .with("x402Version", p.version())
            .with("resumed", true);
        if let Err(reply) = self
            .journal
            .before_money(ctx, p, Kind::PaymentVerified, note)
            .await
        {
            let _ = lease.hand_back(|_| {}).await;
            return Outcome::Reply(reply);
        }
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, "retry of an unsettled answer: settling now");
        self.settle(ctx, c, lease, answer).await
    }

    /// What became of a settlement whose owner is gone or whose outcome was not known: by its
    /// transaction when there is one, else by the payment's identity on chain; unused on chain,
    /// it is submitted again (the token accepts an authorization once, so this never charges
    /// twice: a copy still in the mempool makes one of the two revert, and the chain then shows
    /// the other).
    async fn reconcile(
        &self,
        p: &VerifiedPayment<'_>,
        lease: &Lease<'_>,
        tx: Option<B256>,
    ) -> SettleOutcome {
        let (asset, auth) = (p.offer.asset, p.authorization());
        if let Some(tx) = tx {
            let o = self.backend.by_tx(asset, auth, tx).await;
            if matches!(
                o,
                SettleOutcome::Settled { .. } | SettleOutcome::Pending { .. }
            ) {
                return o;
            }
        }
        match self.backend.lookup(asset, auth).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                info!(payment_id = %p.payment_id, "no settlement of this payment on chain: submitting it again");
                if let Ok(false) = lease.write(|r| r.tx = None).await {
                    return SettleOutcome::Unknown {
                        message: "another request took the payment over".into(),
                    };
                }
                let o = lease
                    .hold(
                        self.backend
                            .settle(p)
                            .instrument(tracing::info_span!("settle", again = true)),
                    )
                    .await;
                self.confirm(p, o).await
            }
            Err(e) => SettleOutcome::Unknown {
                message: format!("the chain could not be read: {e}"),
            },
        }
    }
}

/// The `forwarded` record's fields: which model answered.
/// The `forwarded` record: the upstream's model, and the request sold (kept with its sha256).
fn forwarded_note(c: &ClaimedPayment<'_>, answer: &Value) -> Note {
    Note::default()
        .with("model", answer["metadata"]["model"].clone())
        .with("modelCallId", answer["metadata"]["modelCallId"].clone())
        .body("request", c.body.clone())
}

/// The upstream's answer as held with the claim (not settled).
fn held_answer(answer: &Value) -> StoredAnswer {
    StoredAnswer {
        status: 200,
        body: answer.to_string(),
        receipt: None,
    }
}

fn in_flight(retry_after: u64) -> Reply {
    Reply::error(
        409,
        "payment_in_flight",
        "this payment is being processed by another request; retry to get its answer",
    )
    .retry_after(retry_after)
}

fn taken_over() -> Outcome {
    Outcome::Reply(in_flight(2))
}

fn store_unavailable(ctx: &Ctx, e: &StoreError) -> Outcome {
    warn!(request_id = %ctx.request_id, "replay store unavailable: {e}");
    Outcome::Reply(
        Reply::error(
            503,
            "store_unavailable",
            "the payment could not be recorded safely; nothing was charged, try again shortly",
        )
        .retry_after(2),
    )
}

/// Record how long a phase of the paid path took, from `since`.
pub(crate) fn observe(phase: Phase, since: Instant) {
    telemetry::with(|m| m.phase(phase, since.elapsed()));
}
