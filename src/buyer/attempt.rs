//! One seller's attempt, step by step: ask without payment → read the 402 → keep the quotes
//! the spend policy allows → reserve budget → sign ONE authorization → send it, resending the
//! same one after network trouble → decide from the answer, or from the chain when there is none.

use std::time::Duration;

use alloy_primitives::Address;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tracing::info;

use super::answer::{Answer, Charge};
use super::call::{Attempt, Call};
use super::client::Quote;
use super::config::Seller;
use super::send::Delivery;
use super::{Payer, client, policy};
use crate::telemetry;
use crate::util::{now_secs, rfc3339};
use crate::x402::types::Authorization;

/// How long a day's budget reservation lives in the store.
const BUDGET_TTL: Duration = Duration::from_secs(2 * 86_400);

/// Why one seller gave no answer, and whether that counts against its breaker.
#[derive(Debug)]
pub(super) struct Miss {
    pub(super) outcome: &'static str,
    pub(super) detail: String,
    /// The seller failed us (counts against its breaker); `false` when we declined.
    pub(super) trips: bool,
}

impl Miss {
    /// The seller failed us: the network, its answer, or a payment it did not deliver for.
    pub(super) fn seller(outcome: &'static str, detail: impl Into<String>) -> Self {
        Miss {
            outcome,
            detail: detail.into(),
            trips: true,
        }
    }

    /// We declined (policy, budget, signing): says nothing about the seller's health.
    fn ours(outcome: &'static str, detail: impl Into<String>) -> Self {
        Miss {
            outcome,
            detail: detail.into(),
            trips: false,
        }
    }

    /// The attempt as the call reports it.
    pub(super) fn at(self, seller: &Seller) -> Attempt {
        Attempt {
            seller: seller.name.clone(),
            outcome: self.outcome,
            detail: self.detail,
        }
    }
}

/// A budget reservation for one signed authorization.
pub(super) struct Reservation {
    pub(super) key: String,
    pub(super) amount: u64,
}

/// One signed authorization and the budget held for it: what is sent, and resent, to a seller.
pub(super) struct Payment {
    pub(super) quote: Quote,
    /// The payment header's name (`PAYMENT-SIGNATURE` or v1's `X-PAYMENT`) and value.
    pub(super) header: (&'static str, String),
    pub(super) auth: Authorization,
    pub(super) reservation: Reservation,
}

/// What the unpaid ask came to.
enum Asked {
    /// The seller answered without asking for payment.
    Free(Answer),
    /// A 402: every option it offers.
    Quotes(Vec<Quote>),
}

impl Payer {
    /// Ask one seller, paying if it asks and the policy allows.
    pub(super) async fn attempt(&self, seller: &Seller, call: &Call<'_>) -> Result<Answer, Miss> {
        let quotes = match self.ask(seller, call).await? {
            Asked::Free(answer) => return Ok(answer),
            Asked::Quotes(quotes) => quotes,
        };
        let quote = policy::choose(seller, &quotes).map_err(|r| Miss::ours(r.code, r.message))?;
        // Budget before the signature: no budget, no signature.
        let reservation = self.reserve(&quote).await?;
        let payment = self.sign(seller, call, quote, reservation).await?;
        let delivery = self.deliver(seller, call, &payment).await;
        self.decide(seller, call, payment, delivery).await
    }

    /// The unpaid request: a free JSON answer, a 402's quotes, or a miss.
    async fn ask(&self, seller: &Seller, call: &Call<'_>) -> Result<Asked, Miss> {
        let sent = self.send(seller, call, None).await?;
        let status = sent.status;
        if (200..300).contains(&status) {
            return match serde_json::from_slice::<Value>(&sent.body) {
                Ok(v) if v.is_object() => Ok(Asked::Free(Answer {
                    seller: seller.name.clone(),
                    body: sent.body,
                    receipt_header: None,
                    charge: None,
                })),
                _ => Err(Miss::seller(
                    "bad_answer",
                    "the seller answered without asking for payment, but not with JSON",
                )),
            };
        }
        if status != 402 {
            return Err(Miss::seller(
                "seller_error",
                format!("the seller answered {status} to an unpaid request"),
            ));
        }
        let header = sent
            .headers
            .get(crate::x402::HEADER_PAYMENT_REQUIRED)
            .and_then(|v| v.to_str().ok());
        Ok(Asked::Quotes(client::parse_all(header, &sent.body)))
    }

    /// Reserve the quote's price in today's budget for its network and asset.
    async fn reserve(&self, quote: &Quote) -> Result<Reservation, Miss> {
        let req = &quote.requirement;
        let Some(limit) = self
            .cfg
            .budgets
            .get(&(req.network.clone(), req.asset))
            .copied()
        else {
            return Err(Miss::ours(
                "no_budget",
                format!(
                    "no daily budget is configured for {} on {}",
                    req.asset, req.network
                ),
            ));
        };
        let Ok(amount) = u64::try_from(req.amount) else {
            return Err(Miss::ours(
                "price_above_cap",
                "the price does not fit a budget",
            ));
        };
        let key = self.budget_key(&req.network, req.asset);
        match self.store.reserve(&key, amount, limit, BUDGET_TTL).await {
            Ok(true) => {
                self.report_budget_left(&key, limit, req.asset).await;
                Ok(Reservation { key, amount })
            }
            Ok(false) => {
                let spent = self.store.spent(&key).await.unwrap_or(0);
                Err(Miss::ours(
                    "budget_exhausted",
                    format!(
                        "today's budget {limit} is spent down to {}; this call costs {amount}",
                        limit.saturating_sub(spent)
                    ),
                ))
            }
            Err(e) => Err(Miss::ours(
                "store_unavailable",
                format!("the budget could not be reserved safely: {e}"),
            )),
        }
    }

    /// The budget's key: per wallet, network, asset and UTC day, so replicas sharing the
    /// store share the budget.
    fn budget_key(&self, network: &str, asset: Address) -> String {
        let day = rfc3339(now_secs());
        format!(
            "{:#x}:{}:{:#x}:{}",
            self.cfg.signer.address(),
            network,
            asset,
            &day[..10]
        )
    }

    /// The `budget_remaining` gauge for `asset`, when the store can say what is spent.
    async fn report_budget_left(&self, key: &str, limit: u64, asset: Address) {
        if let Ok(spent) = self.store.spent(key).await {
            let left = limit.saturating_sub(spent) as i64;
            telemetry::with(|m| {
                m.budget_remaining
                    .with_label_values(&[&asset.to_string()])
                    .set(left)
            });
        }
    }

    /// Sign the one authorization for `quote` (its lifetime clamped to
    /// `outbound.max_authorization_seconds`); the reservation goes back if signing fails.
    async fn sign(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        quote: Quote,
        reservation: Reservation,
    ) -> Result<Payment, Miss> {
        let signed = client::payment_with(
            &self.cfg.signer,
            &quote,
            self.cfg.max_authorization.as_secs(),
        );
        let (name, value, auth) = match signed {
            Ok(x) => x,
            Err(e) => {
                self.release(&reservation).await;
                return Err(Miss::ours("sign_failed", e.to_string()));
            }
        };
        let req = &quote.requirement;
        info!(call_id = call.id, seller = %seller.name, amount = %req.amount, network = %req.network, pay_to = %req.pay_to, nonce = %auth.nonce, "paying");
        Ok(Payment {
            quote,
            header: (name, value),
            auth,
            reservation,
        })
    }

    /// What the payment came to: a delivered answer is paid; a refusal or no answer is
    /// decided by the chain (charged or not) and counts against the seller.
    async fn decide(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        payment: Payment,
        delivery: Delivery,
    ) -> Result<Answer, Miss> {
        // (outcome if the chain shows a charge, outcome if not), and what happened.
        let (outcomes, detail) = match delivery {
            Delivery::Answered { headers, body } => {
                return Ok(self.delivered(seller, call, &payment, &headers, body).await);
            }
            Delivery::Refused { why } => (
                ("paid_no_delivery", "payment_refused"),
                format!("the seller refused the payment: {why}"),
            ),
            // Outcome unknown: the chain decides whether we paid.
            Delivery::Lost { last } => (
                ("paid_no_answer", "failed"),
                format!("no usable answer after the payment was sent: {last}"),
            ),
        };
        let charged = self.charged_on_chain(&payment, seller, call).await;
        Err(Miss::seller(
            if charged { outcomes.0 } else { outcomes.1 },
            detail,
        ))
    }

    /// A delivered answer: what it cost (the receipt's transaction, else the body's
    /// `payment.receiptId`), written down as `paid`.
    async fn delivered(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        payment: &Payment,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Answer {
        let receipt = client::RECEIPT_HEADERS.iter().find_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| (*h, v.to_string()))
        });
        let settled = receipt
            .as_ref()
            .and_then(|(_, v)| client::settlement(v.as_bytes()));
        let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let tx = settled
            .as_ref()
            .filter(|s| s.success)
            .map(|s| s.transaction.clone())
            .or_else(|| {
                body_json["payment"]["receiptId"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let req = &payment.quote.requirement;
        let charge = Charge {
            tx,
            amount: req.amount,
            asset: req.asset,
            network: req.network.clone(),
            pay_to: req.pay_to,
        };
        self.record(
            seller,
            call,
            "paid",
            &charge,
            &payment.auth,
            Some(&body_json),
        )
        .await;
        Answer {
            seller: seller.name.clone(),
            body,
            receipt_header: receipt.map(|(n, v)| (crate::x402::receipt_name(n), v)),
            charge: Some(charge),
        }
    }
}
