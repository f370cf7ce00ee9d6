//! The seller's audit records: every lifecycle event of a payment goes through [`Paywall::audit`],
//! and the last record before money moves through [`Paywall::audit_before_money`].
//!
//! The journal fails closed before money moves: a settlement is only sent once the records
//! before it are on disk, so a settlement the journal could not tell is never made. After the
//! money moved, a record that cannot be written does not stop the answer (the buyer paid): the
//! journal keeps it in its spill and writes it, in order, once it can.

use crate::audit::{AuditError, Event, Kind};
use crate::http::Reply;
use crate::seller::Paywall;
use crate::seller::ctx::Ctx;
use crate::seller::payment::VerifiedPayment;
use crate::telemetry::{self, JournalRefusal};
use crate::util::now_secs;
use tracing::{error, warn};

/// The machine-readable reason of the 503 when the journal cannot record a payment.
pub(crate) const JOURNAL_UNAVAILABLE: &str = "journal_unavailable";

impl Paywall {
    /// The journal event about a payment, with what every record of it carries.
    fn payment_event(&self, ctx: &Ctx, p: &VerifiedPayment<'_>, kind: Kind) -> Event {
        Event::new(kind)
            .request(&ctx.request_id)
            .payment(&p.payment_id)
            .payer(&p.authorization().from.to_string())
            .with("amount", p.offer.amount.to_string())
            .with("asset", p.offer.asset.to_string())
            .with("network", p.offer.network.clone())
            .with("payTo", p.offer.pay_to.to_string())
    }

    /// Write a lifecycle event about a payment to the audit journal. Resolves once the record
    /// is on disk, unless its kind only queues (`Kind::durability`). A record the journal
    /// cannot write is kept in its spill and written later; the request goes on.
    pub(crate) async fn audit(
        &self,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        event: Kind,
        f: impl FnOnce(Event) -> Event,
    ) {
        let Some(j) = &self.journal else { return };
        let e = f(self.payment_event(ctx, p, event));
        // Steps followed by another record of the same request only queue, and the writer keeps
        // queue order, so the next durable record takes them to disk before the buyer hears
        // anything; the others wait for their batch's fsync without blocking this thread.
        match j.record(e, now_secs()).await {
            Ok(()) => {}
            Err(err @ AuditError::Spilled { .. }) => {
                error!(request_id = %ctx.request_id, payment_id = %p.payment_id, event = %event, "{err}");
            }
            Err(err) => {
                error!(request_id = %ctx.request_id, payment_id = %p.payment_id, event = %event, "audit journal write failed: {err}");
            }
        }
    }

    /// Write the last record before money moves (`forwarded`, or the check before settling a
    /// kept answer) and wait until it is on disk. If it cannot be, the payment must not be
    /// settled: the answer is a 503 `journal_unavailable` for the buyer (not charged); the
    /// caller releases the claim so the same payment can be sent again once the journal
    /// recovers. Without a journal (`audit.enabled: false`) there is nothing to wait for.
    pub(crate) async fn audit_before_money(
        &self,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        event: Kind,
        f: impl FnOnce(Event) -> Event,
    ) -> Result<(), Reply> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let e = f(self.payment_event(ctx, p, event));
        let err = match j.append(e, now_secs()).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, event = %event,
            "audit journal cannot record the payment, so it is not settled: {err}");
        telemetry::with(|m| m.journal_refusal(JournalRefusal::BeforeSettlement));
        self.audit(ctx, p, Kind::NotCharged, |e| {
            e.with("why", "the audit journal could not record the payment before settlement; not settled, claim released")
                .with("status", 503)
                .with("reason", JOURNAL_UNAVAILABLE)
        })
        .await;
        Err(Reply::error(
            503,
            JOURNAL_UNAVAILABLE,
            "the seller's audit journal cannot record payments right now, so this one was not settled and you were not charged; send the same payment again shortly",
        )
        .retry_after(5))
    }
}
