//! One logical call over the sellers: try each in priority order (skipping open breakers),
//! and for one seller ask, pay if the policy allows, send and resend the one authorization.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use serde_json::Value;
use tracing::{Instrument, info, warn};

use super::answer::{Answer, Paid, receipt_name};
use super::config::{FallbackMode, Seller};
use super::{MAX_SELLER_ANSWER, Payer, client, policy};
use crate::breaker;
use crate::telemetry;
use crate::util::{now_secs, rfc3339};
use crate::x402::codec;
use crate::x402::types::SettleResponse;

/// Time kept for the local fallback out of the whole-call deadline.
const FALLBACK_RESERVE: Duration = Duration::from_millis(1_500);

/// What one seller attempt came to.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) seller: String,
    pub(super) outcome: &'static str,
    pub(super) detail: String,
}

/// One logical call: its id and when it started.
pub(super) struct Call<'a> {
    pub(super) id: &'a str,
    pub(super) started: Instant,
    /// roma-01's account owner as the policy writes it down (`outbound.owners`).
    pub(super) owner: Option<&'a str>,
}

/// A reservation of budget for one signed authorization.
pub(super) struct Reservation {
    pub(super) key: String,
    pub(super) amount: u64,
}
impl Payer {
    /// One logical call from roma-01.
    pub(super) async fn call(
        &self,
        body: Bytes,
        sellers: Vec<&Seller>,
        call_id: &str,
        owner: Option<&str>,
    ) -> Response<Vec<u8>> {
        let started = Instant::now();
        let total = self.cfg.timeout;
        let reserve = if self.cfg.fallback.mode == FallbackMode::Local {
            FALLBACK_RESERVE.min(total / 2)
        } else {
            Duration::ZERO
        };
        let sellers_deadline = started + total - reserve;
        let mut attempts: Vec<Attempt> = Vec::new();
        for seller in sellers {
            if Instant::now() >= sellers_deadline {
                attempts.push(Attempt {
                    seller: seller.name.clone(),
                    outcome: "skipped",
                    detail: "no time left".into(),
                });
                continue;
            }
            if self.breaker(&seller.name, |b| b.allow(Instant::now())) == Some(false) {
                attempts.push(Attempt {
                    seller: seller.name.clone(),
                    outcome: "breaker_open",
                    detail: "skipped while its breaker is open".into(),
                });
                continue;
            }
            let span = tracing::info_span!(
                "seller_attempt",
                otel.kind = "client",
                seller = %seller.name,
                url = %seller.url,
                outcome = tracing::field::Empty,
            );
            let result = self
                .attempt(
                    seller,
                    &body,
                    sellers_deadline,
                    &Call {
                        id: call_id,
                        started,
                        owner,
                    },
                )
                .instrument(span.clone())
                .await;
            span.record(
                "outcome",
                match &result {
                    Ok(_) => "answered",
                    Err((a, _)) => a.outcome,
                },
            );
            match result {
                Ok(answer) => {
                    self.breaker(&seller.name, |b| b.success());
                    return self.answer(answer, call_id, &attempts);
                }
                Err((a, trips)) => {
                    warn!(call_id, seller = %seller.name, outcome = a.outcome, "seller attempt failed: {}", a.detail);
                    if trips {
                        self.breaker(&seller.name, |b| b.failure(Instant::now()));
                    } else {
                        // A policy refusal says nothing about the seller's health; free a probe slot.
                        self.breaker(&seller.name, |b| {
                            if matches!(b.state, breaker::State::HalfOpen { .. }) {
                                b.success()
                            }
                        });
                    }
                    attempts.push(a);
                }
            }
        }
        self.fallback(body, call_id, owner, attempts, started + total)
            .await
    }

    /// Ask one seller, paying if it asks and the policy allows.
    async fn attempt(
        &self,
        seller: &Seller,
        body: &Bytes,
        deadline: Instant,
        call: &Call<'_>,
    ) -> Result<Answer, (Attempt, bool)> {
        let call_id = call.id;
        let fail = |outcome: &'static str, detail: String, trips: bool| {
            Err((
                Attempt {
                    seller: seller.name.clone(),
                    outcome,
                    detail,
                },
                trips,
            ))
        };
        let first = self.send(seller, body, None, deadline).await;
        let (status, headers, bytes) = match first {
            Ok(r) => r,
            Err(e) => return fail(e.0, e.1, true),
        };
        if (200..300).contains(&status) {
            return match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v.is_object() => Ok(Answer {
                    seller: seller.name.clone(),
                    body: bytes,
                    receipt_header: None,
                    paid: None,
                }),
                _ => fail(
                    "bad_answer",
                    "the seller answered without asking for payment, but not with JSON".into(),
                    true,
                ),
            };
        }
        if status != 402 {
            return fail(
                "seller_error",
                format!("the seller answered {status} to an unpaid request"),
                true,
            );
        }
        let header = headers
            .get(crate::x402::HEADER_PAYMENT_REQUIRED)
            .and_then(|v| v.to_str().ok());
        let quotes = client::parse_all(header, &bytes);
        let quote = match policy::choose(seller, &quotes) {
            Ok(o) => o,
            Err(r) => return fail(r.code, r.message, false),
        };
        let req = &quote.requirement;
        // Budget before the signature: no budget, no signature.
        let Some(limit) = self
            .cfg
            .budgets
            .get(&(req.network.clone(), req.asset))
            .copied()
        else {
            return fail(
                "no_budget",
                format!(
                    "no daily budget is configured for {} on {}",
                    req.asset, req.network
                ),
                false,
            );
        };
        let Ok(amount) = u64::try_from(req.amount) else {
            return fail(
                "price_above_cap",
                "the price does not fit a budget".into(),
                false,
            );
        };
        let day = rfc3339(now_secs());
        // Per wallet, asset and UTC day: replicas sharing the store share the budget.
        let key = format!(
            "{:#x}:{}:{:#x}:{}",
            self.cfg.signer.address(),
            req.network,
            req.asset,
            &day[..10]
        );
        match self
            .store
            .reserve(&key, amount, limit, Duration::from_secs(2 * 86_400))
            .await
        {
            Ok(true) => {
                if let Ok(spent) = self.store.spent(&key).await {
                    let left = limit.saturating_sub(spent) as i64;
                    telemetry::with(|m| {
                        m.budget_remaining
                            .with_label_values(&[&req.asset.to_string()])
                            .set(left)
                    });
                }
            }
            Ok(false) => {
                let spent = self.store.spent(&key).await.unwrap_or(0);
                return fail(
                    "budget_exhausted",
                    format!(
                        "today's budget {limit} is spent down to {}; this call costs {amount}",
                        limit.saturating_sub(spent)
                    ),
                    false,
                );
            }
            Err(e) => {
                return fail(
                    "store_unavailable",
                    format!("the budget could not be reserved safely: {e}"),
                    false,
                );
            }
        }
        let reservation = Reservation { key, amount };
        let (name, value, auth) = match client::payment_with(
            &self.cfg.signer,
            &quote,
            self.cfg.max_authorization.as_secs(),
        ) {
            Ok(x) => x,
            Err(e) => {
                self.release(&reservation).await;
                return fail("sign_failed", e.to_string(), false);
            }
        };
        info!(call_id, seller = %seller.name, amount = %req.amount, network = %req.network, pay_to = %req.pay_to, nonce = %auth.nonce, "paying");
        // Send the one authorization; resend the same one after network trouble or a 5xx.
        let mut retries_left = self.cfg.retry.attempts;
        let mut last = String::new();
        loop {
            if Instant::now() >= deadline {
                break;
            }
            match self
                .send(seller, body, Some((name, &value)), deadline)
                .await
            {
                Ok((200..=299, headers, bytes)) => {
                    let receipt = [
                        crate::x402::HEADER_PAYMENT_RESPONSE,
                        crate::x402::HEADER_X_PAYMENT_RESPONSE,
                    ]
                    .iter()
                    .find_map(|h| {
                        headers
                            .get(*h)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| (*h, v.to_string()))
                    });
                    let settled = receipt.as_ref().and_then(|(_, v)| {
                        codec::decode::<SettleResponse>(v.as_bytes(), 16 * 1024).ok()
                    });
                    let body_json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
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
                    let paid = Paid {
                        tx: tx.clone(),
                        amount: req.amount,
                        asset: req.asset,
                        network: req.network.clone(),
                        pay_to: req.pay_to,
                    };
                    self.record(seller, call, "paid", &paid, &auth, Some(&body_json))
                        .await;
                    return Ok(Answer {
                        seller: seller.name.clone(),
                        body: bytes,
                        receipt_header: receipt.map(|(n, v)| (receipt_name(n), v)),
                        paid: Some(paid),
                    });
                }
                Ok((402, _, bytes)) => {
                    // A paid attempt answered 402 is never paid again automatically.
                    let why = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    let charged = self
                        .settle_check(req, &auth, &reservation, seller, call)
                        .await;
                    return fail(
                        if charged {
                            "paid_no_delivery"
                        } else {
                            "payment_refused"
                        },
                        format!("the seller refused the payment: {why}"),
                        true,
                    );
                }
                Ok((409, headers, _)) | Ok((503, headers, _))
                    if retry_after(&headers).is_some() =>
                {
                    // In flight elsewhere or settlement pending: same authorization, after a pause.
                    let pause = retry_after(&headers).unwrap_or(1).min(2);
                    last = "seller busy with this payment".into();
                    tokio::time::sleep(
                        Duration::from_secs(pause)
                            .min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                }
                Ok((status, _, bytes)) => {
                    last = format!(
                        "{status} {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    );
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                    tokio::time::sleep(self.backoff(retries_left)).await;
                }
                Err((_, detail)) => {
                    last = detail;
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                    tokio::time::sleep(self.backoff(retries_left)).await;
                }
            }
        }
        // Outcome unknown: the chain decides whether we paid.
        let charged = self
            .settle_check(req, &auth, &reservation, seller, call)
            .await;
        fail(
            if charged { "paid_no_answer" } else { "failed" },
            format!("no usable answer after the payment was sent: {last}"),
            true,
        )
    }

    fn backoff(&self, retries_left: u32) -> Duration {
        let n = self.cfg.retry.attempts.saturating_sub(retries_left).min(6);
        Duration::from_millis(self.cfg.retry.backoff_ms.saturating_mul(1 << n))
    }

    /// POST to a seller; `Err((outcome, detail))` on network trouble.
    async fn send(
        &self,
        seller: &Seller,
        body: &Bytes,
        payment: Option<(&str, &str)>,
        deadline: Instant,
    ) -> Result<(u16, reqwest::header::HeaderMap, Bytes), (&'static str, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(("timeout", "the call's deadline passed".into()));
        }
        let mut req = self
            .http
            .post(seller.url.clone())
            .timeout(left)
            .header("Content-Type", "application/json")
            .body(body.clone());
        for (k, v) in crate::telemetry::otlp::outgoing(&tracing::Span::current(), None) {
            req = req.header(k, v);
        }
        if let Some((k, v)) = payment {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = crate::http::read_capped(resp, MAX_SELLER_ANSWER)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::Http(e) => classify(&e),
                too_large => ("answer_too_large", format!("the seller's {too_large}")),
            })?;
        Ok((status, headers, bytes))
    }
}

fn classify(e: &reqwest::Error) -> (&'static str, String) {
    if e.is_timeout() {
        ("timeout", "the seller did not answer in time".into())
    } else if e.is_connect() {
        ("unreachable", format!("the seller is unreachable: {e}"))
    } else {
        ("network_error", format!("the connection failed: {e}"))
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<u64> {
    h.get("retry-after")?.to_str().ok()?.trim().parse().ok()
}
