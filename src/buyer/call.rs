//! One logical call over the sellers: try each in priority order, skipping a seller when time
//! is up or its breaker is open, keep what each attempt came to, and end with the first answer
//! or the fallback. Once an authorization is in play without an answer (or was charged
//! without one), no other seller is paid: the call ends with the fallback, never with a second
//! transfer. One seller's attempt is in `attempt.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tracing::{Instrument, warn};

use super::Payer;
use super::answer::Answer;
use super::config::{FallbackMode, Seller};
use crate::breaker;

/// Time kept for the local fallback out of the whole-call deadline.
const FALLBACK_RESERVE: Duration = Duration::from_millis(1_500);

/// What one seller attempt came to (the `X-Attempts` summary, the error JSON's `attempts`).
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) seller: String,
    pub(super) outcome: &'static str,
    pub(super) detail: String,
    /// Why no other seller may be paid after this attempt, if so.
    pub(super) blocks: Option<String>,
}

/// One logical call from roma-01: what every step of it reads.
pub(super) struct Call<'a> {
    pub(super) id: &'a str,
    pub(super) started: Instant,
    /// roma-01's account owner as the policy writes it down (`outbound.owners`).
    pub(super) owner: Option<&'a str>,
    /// roma-01's request, sent to each seller (and the local fallback) unchanged.
    pub(super) body: Bytes,
    /// When the sellers' time is up: the local fallback keeps a reserve after it.
    pub(super) sellers_deadline: Instant,
    /// The whole call's deadline, fallback included.
    pub(super) deadline: Instant,
}

impl Payer {
    /// One logical call from roma-01: the sellers in order, then the fallback.
    pub(super) async fn call(
        &self,
        body: Bytes,
        sellers: Vec<&Seller>,
        call_id: &str,
        owner: Option<&str>,
    ) -> Response<Vec<u8>> {
        let call = self.begin(call_id, owner, body);
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut blocked: Option<String> = None;
        for seller in sellers {
            if let Some(why) = &blocked {
                attempts.push(Attempt {
                    seller: seller.name.clone(),
                    outcome: "not_paid_twice",
                    detail: format!("not asked: {why}; one call is never two transfers"),
                    blocks: None,
                });
                continue;
            }
            if let Some(skipped) = self.skip(seller, &call) {
                attempts.push(skipped);
                continue;
            }
            match self.try_seller(seller, &call).await {
                Ok(answer) => return self.answer(answer, call.id, &attempts),
                Err(a) => {
                    blocked = a.blocks.clone();
                    attempts.push(a);
                }
            }
        }
        self.fallback(&call, attempts).await
    }

    /// The call's context, its deadlines counted from now (`outbound.timeout_ms`, less the
    /// local fallback's reserve for the sellers).
    fn begin<'a>(&self, id: &'a str, owner: Option<&'a str>, body: Bytes) -> Call<'a> {
        let started = Instant::now();
        let total = self.cfg.timeout;
        let reserve = if self.cfg.fallback.mode == FallbackMode::Local {
            FALLBACK_RESERVE.min(total / 2)
        } else {
            Duration::ZERO
        };
        Call {
            id,
            started,
            owner,
            body,
            sellers_deadline: started + total - reserve,
            deadline: started + total,
        }
    }

    /// Why `seller` is not asked at all: no time left, or its breaker is open.
    fn skip(&self, seller: &Seller, call: &Call<'_>) -> Option<Attempt> {
        let (outcome, detail) = if Instant::now() >= call.sellers_deadline {
            ("skipped", "no time left")
        } else if self.breaker(&seller.name, |b| b.allow(Instant::now())) == Some(false) {
            ("breaker_open", "skipped while its breaker is open")
        } else {
            return None;
        };
        Some(Attempt {
            seller: seller.name.clone(),
            outcome,
            detail: detail.into(),
            blocks: None,
        })
    }

    /// One seller's attempt inside its `seller_attempt` span; the breaker learns the result.
    async fn try_seller(&self, seller: &Seller, call: &Call<'_>) -> Result<Answer, Attempt> {
        let span = tracing::info_span!(
            "seller_attempt",
            otel.kind = "client",
            seller = %seller.name,
            url = %seller.url,
            outcome = tracing::field::Empty,
        );
        let result = self.attempt(seller, call).instrument(span.clone()).await;
        span.record(
            "outcome",
            match &result {
                Ok(_) => "answered",
                Err(miss) => miss.outcome,
            },
        );
        match result {
            Ok(answer) => {
                self.breaker(&seller.name, |b| b.success());
                Ok(answer)
            }
            Err(miss) => {
                warn!(call_id = call.id, seller = %seller.name, outcome = miss.outcome, "seller attempt failed: {}", miss.detail);
                if miss.trips {
                    self.breaker(&seller.name, |b| b.failure(Instant::now()));
                } else {
                    // A policy refusal says nothing about the seller's health; free a probe slot.
                    self.breaker(&seller.name, |b| {
                        if matches!(b.state, breaker::State::HalfOpen { .. }) {
                            b.success()
                        }
                    });
                }
                Err(miss.at(seller))
            }
        }
    }
}
