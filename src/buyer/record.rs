//! Writing a payment down: the log line, the spend metric, the journal event (`buyer_paid`)
//! and the ledger line, in that order, all before the answer goes back to roma-01.

use serde_json::Value;
use tracing::{info, warn};

use super::Payer;
use super::answer::Charge;
use super::call::Call;
use super::config::Seller;
use super::ledger::Entry;
use crate::audit::{Event, Kind};
use crate::telemetry;
use crate::util::{now_secs, rfc3339};
use crate::x402::types::Authorization;

impl Payer {
    /// Write down that `seller` was paid `charge` for `auth`, with `outcome` (`paid`,
    /// `paid_no_answer`); `body` is the seller's answer, for its metadata.
    pub(super) async fn record(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        outcome: &str,
        charge: &Charge,
        auth: &Authorization,
        body: Option<&Value>,
    ) {
        let call_id = call.id;
        let meta = body.map(|b| &b["metadata"]);
        let e = Entry {
            time: rfc3339(now_secs()),
            call_id: call_id.to_string(),
            seller: seller.name.clone(),
            url: seller.url.to_string(),
            outcome: outcome.into(),
            amount: charge.amount.to_string(),
            asset: charge.asset.to_string(),
            network: charge.network.clone(),
            payer: auth.from.to_string(),
            pay_to: charge.pay_to.to_string(),
            nonce: format!("{:#x}", auth.nonce),
            tx: (!charge.tx.is_empty()).then(|| charge.tx.clone()),
            remote_request_id: meta.and_then(|m| m["requestId"].as_str().map(str::to_string)),
            remote_payment_id: meta.and_then(|m| m["paymentId"].as_str().map(str::to_string)),
            disclaimer: body.and_then(|b| b["disclaimer"].as_str().map(str::to_string)),
            latency_ms: call.started.elapsed().as_millis() as u64,
            owner: call.owner.map(str::to_string),
        };
        info!(call_id, seller = %seller.name, outcome, tx = %charge.tx, amount = %charge.amount,
            remote_request_id = ?e.remote_request_id, remote_payment_id = ?e.remote_payment_id, "ledger");
        let spent = u64::try_from(charge.amount).unwrap_or(u64::MAX);
        telemetry::with(|m| {
            m.buyer_spend
                .with_label_values(&[&e.asset, &e.seller])
                .inc_by(spent)
        });
        self.audit(journal_event(&e), e.tx.as_deref()).await;
        self.append_ledger(e, call_id).await;
    }

    /// Append `e` to the ledger; its fsync runs on the blocking pool, not on a request thread.
    async fn append_ledger(&self, e: Entry, call_id: &str) {
        let ledger = self.ledger.clone();
        let written = tokio::task::spawn_blocking(move || ledger.append(&e)).await;
        if let Err(err) = written
            .map_err(|j| j.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            warn!(call_id, "ledger write failed: {err}");
        }
    }
}

/// The `buyer_paid` journal event for a ledger line (its transaction goes in separately).
fn journal_event(e: &Entry) -> Event {
    Event::new(Kind::BuyerPaid)
        .payer(&e.payer)
        .with("callId", e.call_id.clone())
        .with("owner", e.owner.clone())
        .with("outcome", e.outcome.clone())
        .with("seller", e.seller.clone())
        .with("url", e.url.clone())
        .with("amount", e.amount.clone())
        .with("asset", e.asset.clone())
        .with("network", e.network.clone())
        .with("remoteRequestId", e.remote_request_id.clone())
        .with("remotePaymentId", e.remote_payment_id.clone())
}
