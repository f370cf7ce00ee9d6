//! One seller's attempt, step by step: ask without payment → read the 402 → keep the quotes
//! the spend policy allows → reserve budget → sign ONE authorization → send it, resending the
//! same one after network trouble → decide by the chain: a delivered answer is `paid` only when
//! the chain shows its transfer; without an answer, the authorization is charged, taken out of
//! play (cancelled) or left in play, and only out of play may the call pay someone else.

use std::time::Duration;

use alloy_primitives::Address;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tracing::{info, warn};

use super::answer::{Answer, Charge, PaymentStatus};
use super::call::{Attempt, Call};
use super::client::Quote;
use super::config::Seller;
use super::outcome::Unanswered;
use super::send::Delivery;
use super::watch::{Verdict, budget_key};
use super::{Payer, client, policy};
use crate::telemetry;
use crate::util::{now_secs, rfc3339};
use crate::x402::types::{Authorization, SettleResponse};

/// Added to the call's whole timeout for an authorization's lifetime: the seller settles within
/// the call, so an authorization outlives it by this much at most.
const AUTHORIZATION_MARGIN: Duration = Duration::from_secs(10);

/// How long a day's budget reservation lives in the store.
const BUDGET_TTL: Duration = Duration::from_secs(2 * 86_400);

/// Why one seller gave no answer, and whether that counts against its breaker.
#[derive(Debug)]
pub(super) struct Miss {
    pub(super) outcome: &'static str,
    pub(super) detail: String,
    /// The seller failed us (counts against its breaker); `false` when we declined.
    pub(super) trips: bool,
    /// No other seller may be paid in this call (an authorization is still in play, or this
    /// one was charged without an answer): why.
    pub(super) blocks: Option<String>,
}

impl Miss {
    /// The seller failed us: the network, its answer, or a payment it did not deliver for.
    pub(super) fn seller(outcome: &'static str, detail: impl Into<String>) -> Self {
        Miss {
            outcome,
            detail: detail.into(),
            trips: true,
            blocks: None,
        }
    }

    /// We declined (policy, budget, signing): says nothing about the seller's health.
    fn ours(outcome: &'static str, detail: impl Into<String>) -> Self {
        Miss {
            outcome,
            detail: detail.into(),
            trips: false,
            blocks: None,
        }
    }

    /// The attempt as the call reports it.
    pub(super) fn at(self, seller: &Seller) -> Attempt {
        Attempt {
            seller: seller.name.clone(),
            outcome: self.outcome,
            detail: self.detail,
            blocks: self.blocks,
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
    Free(Box<Answer>),
    /// A 402: every option it offers.
    Quotes(Vec<Quote>),
}

impl Payer {
    /// Ask one seller, paying if it asks and the policy allows.
    pub(super) async fn attempt(&self, seller: &Seller, call: &Call<'_>) -> Result<Answer, Miss> {
        let quotes = match self.ask(seller, call).await? {
            Asked::Free(answer) => return Ok(*answer),
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
                Ok(v) if v.is_object() => Ok(Asked::Free(Box::new(Answer {
                    seller: seller.name.clone(),
                    body: sent.body,
                    receipt: None,
                    charge: None,
                    status: PaymentStatus::Free,
                }))),
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
            .live
            .load()
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
        budget_key(self.cfg.signer.address(), network, asset, &day[..10])
    }

    /// How long an authorization lives: the whole call plus [`AUTHORIZATION_MARGIN`], at most
    /// `outbound.max_authorization_seconds` (and at most what the seller asks).
    fn authorization_lifetime(&self) -> u64 {
        (self.cfg.timeout + AUTHORIZATION_MARGIN)
            .as_secs()
            .min(self.cfg.max_authorization.as_secs())
    }

    /// The `budget_remaining` gauge for `asset`, when the store can say what is spent.
    async fn report_budget_left(&self, key: &str, limit: u64, asset: Address) {
        if let Ok(spent) = self.store.spent(key).await {
            let left = limit.saturating_sub(spent) as i64;
            let asset = asset.to_string();
            telemetry::with(|m| {
                m.budget_remaining.with_label_values(&[&asset]).set(left);
                m.budget_limit
                    .with_label_values(&[&asset])
                    .set(i64::try_from(limit).unwrap_or(i64::MAX));
            });
        }
    }

    /// Sign the one authorization for `quote` (its lifetime short: see
    /// [`authorization_lifetime`](Self::authorization_lifetime)) and write it down as `pending`
    /// before it leaves; the reservation goes back if signing fails.
    async fn sign(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        quote: Quote,
        reservation: Reservation,
    ) -> Result<Payment, Miss> {
        let signed = client::payment_with(&self.cfg.signer, &quote, self.authorization_lifetime());
        let (name, value, auth) = match signed {
            Ok(x) => x,
            Err(e) => {
                self.release(&reservation).await;
                return Err(Miss::ours("sign_failed", e.to_string()));
            }
        };
        let req = &quote.requirement;
        info!(call_id = call.id, seller = %seller.name, amount = %req.amount, network = %req.network, pay_to = %req.pay_to, nonce = %auth.nonce, "paying");
        let payment = Payment {
            quote,
            header: (name, value),
            auth,
            reservation,
        };
        self.write(
            self.entry(seller, call, "pending", &payment, None),
            &payment,
            call,
        )
        .await;
        Ok(payment)
    }

    /// What the payment came to: a delivered answer, `paid` or `unconfirmed` as the chain
    /// says; a refusal or no answer is decided by the chain (charged, out of play, in play) and
    /// counts against the seller.
    async fn decide(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        payment: Payment,
        delivery: Delivery,
    ) -> Result<Answer, Miss> {
        let (charged_as, detail) = match delivery {
            Delivery::Answered { headers, body } => {
                return Ok(self.delivered(seller, call, &payment, &headers, body).await);
            }
            Delivery::Refused { why } => (
                "paid_no_delivery",
                format!("the seller refused the payment: {why}"),
            ),
            Delivery::Lost { last } => (
                "paid_no_answer",
                format!("no usable answer after the payment was sent: {last}"),
            ),
        };
        let refused = charged_as == "paid_no_delivery";
        let miss = match self.unanswered(&payment, seller, call, charged_as).await {
            Unanswered::Charged { tx } => Miss {
                blocks: Some(format!(
                    "{} was paid without an answer (transaction {tx})",
                    seller.name
                )),
                ..Miss::seller(
                    charged_as,
                    format!("{detail}; the chain shows the transfer {tx}"),
                )
            },
            Unanswered::OutOfPlay(how) => Miss::seller(
                if refused { "payment_refused" } else { "failed" },
                format!("{detail}; the authorization is {how}, nothing was paid"),
            ),
            Unanswered::InPlay(why) => Miss {
                blocks: Some(format!(
                    "the authorization sent to {} may still be used ({why})",
                    seller.name
                )),
                ..Miss::seller(
                    if refused { "payment_refused" } else { "failed" },
                    format!("{detail}; the authorization is still in play: {why}"),
                )
            },
        };
        Err(miss)
    }

    /// A delivered answer: `paid` with the chain's transaction when the chain shows this
    /// authorization's transfer to the pinned payTo, else `unconfirmed` (the seller's claimed
    /// transaction kept apart) and handed to the watcher.
    async fn delivered(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        payment: &Payment,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Answer {
        let seller_receipt = client::RECEIPT_HEADERS
            .iter()
            .find_map(|h| headers.get(*h))
            .and_then(|v| client::settlement(v.as_bytes()));
        let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let claimed = seller_receipt
            .as_ref()
            .filter(|s| s.success)
            .map(|s| s.transaction.clone())
            .or_else(|| {
                body_json["payment"]["receiptId"]
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|t| !t.is_empty());
        let req = &payment.quote.requirement;
        let verdict = self
            .watcher
            .confirm(claimed.as_deref(), &req.network, req.asset, &payment.auth)
            .await;
        let (status, tx) = match verdict {
            Verdict::Charged(tx) => (PaymentStatus::Paid, tx),
            other => {
                warn!(call_id = call.id, seller = %seller.name, claimed_tx = claimed.as_deref().unwrap_or(""),
                    "the seller answered, but the chain does not show this payment ({other:?}): unconfirmed");
                (PaymentStatus::Unconfirmed, String::new())
            }
        };
        if status == PaymentStatus::Paid
            && let Some(c) = claimed.as_deref()
            && !c.eq_ignore_ascii_case(&tx)
        {
            warn!(call_id = call.id, seller = %seller.name, claimed_tx = c, %tx,
                "the seller's receipt names another transaction than the one that used the authorization");
        }
        let mut e = self.entry(seller, call, status.label(), payment, Some(&body_json));
        e.tx = (!tx.is_empty()).then(|| tx.clone());
        e.claimed_tx = claimed.filter(|c| !c.eq_ignore_ascii_case(&tx));
        self.write(e, payment, call).await;
        if status == PaymentStatus::Unconfirmed {
            self.watcher.hand_over(payment.auth.nonce);
        }
        let receipt = SettleResponse {
            success: status == PaymentStatus::Paid,
            error_reason: (status != PaymentStatus::Paid).then(|| "unconfirmed_on_chain".into()),
            payer: Some(payment.auth.from),
            transaction: tx.clone(),
            network: req.network.clone(),
            amount: Some(payment.auth.value.to_string()),
            error_message: (status != PaymentStatus::Paid).then(|| {
                "the seller's receipt is not confirmed by the chain yet; the buyer's watcher decides".into()
            }),
        };
        Answer {
            seller: seller.name.clone(),
            body,
            receipt: Some(receipt),
            charge: Some(Charge {
                tx,
                amount: payment.auth.value,
                asset: req.asset,
                network: req.network.clone(),
            }),
            status,
        }
    }
}
