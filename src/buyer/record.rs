//! Writing a call's authorization down: the ledger line (with the log line, the metrics and the
//! journal event, in the watcher's one writer), before the payment leaves (`pending`) and when
//! the call learns what became of it.

use std::time::Duration;

use serde_json::Value;

use super::Payer;
use super::attempt::Payment;
use super::call::Call;
use super::config::Seller;
use super::ledger::Entry;
use crate::util::{now_secs, rfc3339};

/// How long after a call's deadline its open authorization is still left to it.
const CALL_SLACK: Duration = Duration::from_secs(5);

impl Payer {
    /// The ledger line of `payment` to `seller` in `call`, with `outcome`; `body` is the
    /// seller's answer, for its metadata.
    pub(super) fn entry(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        outcome: &str,
        payment: &Payment,
        body: Option<&Value>,
    ) -> Entry {
        let (auth, req) = (&payment.auth, &payment.quote.requirement);
        let meta = body.map(|b| &b["metadata"]);
        Entry {
            time: rfc3339(now_secs()),
            call_id: call.id.to_string(),
            seller: seller.name.clone(),
            url: seller.url.to_string(),
            outcome: outcome.into(),
            amount: auth.value.to_string(),
            asset: req.asset.to_string(),
            network: req.network.clone(),
            payer: auth.from.to_string(),
            pay_to: auth.to.to_string(),
            nonce: format!("{:#x}", auth.nonce),
            valid_before: u64::try_from(auth.valid_before).ok(),
            tx: None,
            claimed_tx: None,
            late: false,
            remote_request_id: meta.and_then(|m| m["requestId"].as_str().map(str::to_string)),
            remote_payment_id: meta.and_then(|m| m["paymentId"].as_str().map(str::to_string)),
            disclaimer: body.and_then(|b| b["disclaimer"].as_str().map(str::to_string)),
            latency_ms: call.started.elapsed().as_millis() as u64,
            owner: call.owner.map(str::to_string),
        }
    }

    /// Write `e` down for `payment` in `call`; an open outcome stays with the call until it
    /// hands it over (or, should the call be dropped, a little after its deadline).
    pub(super) async fn write(&self, e: Entry, payment: &Payment, call: &Call<'_>) {
        let until = call.deadline + CALL_SLACK;
        self.watcher
            .write(e, &payment.reservation.key, Some(until))
            .await;
    }
}
