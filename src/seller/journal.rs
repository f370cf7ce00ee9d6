//! The seller's audit records: every lifecycle event of a payment goes through [`Paywall::audit`].

use crate::audit::{Event, Kind};
use crate::seller::Paywall;
use crate::seller::ctx::Ctx;
use crate::seller::payment::VerifiedPayment;
use crate::util::now_secs;
use tracing::warn;

impl Paywall {
    /// Write a lifecycle event about a payment to the audit journal. Resolves once the record
    /// is on disk, unless its kind only queues (`Kind::durability`).
    pub(crate) async fn audit(
        &self,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        event: Kind,
        f: impl FnOnce(Event) -> Event,
    ) {
        let Some(j) = &self.journal else { return };
        let e = Event::new(event)
            .request(&ctx.request_id)
            .payment(&p.payment_id)
            .payer(&p.authorization().from.to_string())
            .with("amount", p.offer.amount.to_string())
            .with("asset", p.offer.asset.to_string())
            .with("network", p.offer.network.clone())
            .with("payTo", p.offer.pay_to.to_string());
        // Steps followed by another record of the same request only queue, and the writer keeps
        // queue order, so the next durable record takes them to disk before the buyer hears
        // anything; the others wait for their batch's fsync without blocking this thread.
        if let Err(err) = j.record(f(e), now_secs()).await {
            warn!(request_id = %ctx.request_id, "audit journal write failed: {err}");
        }
    }
}
