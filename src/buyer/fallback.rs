//! When no seller answered: the local strategy endpoint, a 503 to wait, or a 502 with what
//! happened at each seller (`outbound.fallback.mode`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use tracing::info;

use super::answer::{error_json, plain, summary};
use super::call::Attempt;
use super::config::FallbackMode;
use super::{MAX_SELLER_ANSWER, Payer};
use crate::audit::Event;
use crate::telemetry;

impl Payer {
    pub(super) async fn fallback(
        &self,
        body: Bytes,
        call_id: &str,
        owner: Option<&str>,
        attempts: Vec<Attempt>,
        deadline: Instant,
    ) -> Response<Vec<u8>> {
        let mode = match self.cfg.fallback.mode {
            FallbackMode::Local => "local",
            FallbackMode::Wait => "wait",
            FallbackMode::Error => "error",
        };
        telemetry::with(|m| m.fallbacks.with_label_values(&[mode]).inc());
        let detail: Vec<Value> = attempts
            .iter()
            .map(|a| json!({"seller": a.seller, "outcome": a.outcome, "detail": a.detail}))
            .collect();
        match (self.cfg.fallback.mode, &self.cfg.fallback_url) {
            (FallbackMode::Local, Some(url)) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(200));
                let mut req = self
                    .http
                    .post(url.clone())
                    .timeout(left)
                    .header("Content-Type", "application/json");
                for (k, v) in crate::telemetry::otlp::outgoing(&tracing::Span::current(), None) {
                    req = req.header(k, v);
                }
                if let Some(secret) = &self.cfg.fallback_secret {
                    req = req.header(crate::advisor::SECRET_HEADER, secret.expose());
                }
                let read = match req.body(body).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        crate::http::read_capped(resp, MAX_SELLER_ANSWER)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(resp) => Err(format!("answered {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                match read {
                    Ok(bytes) => {
                        info!(call_id, attempts = %summary(&attempts), "answered by the local fallback");
                        self.audit(
                            Event::new("fallback")
                                .with("callId", call_id)
                                .with("owner", owner)
                                .with("attempts", summary(&attempts))
                                .with("source", url.to_string()),
                            None,
                        )
                        .await;
                        Response::builder()
                            .status(200)
                            .header("Content-Type", "application/json")
                            .header("Cache-Control", "no-store")
                            .header("X-Call-Id", call_id)
                            .header("X-Strategy-Source", "fallback")
                            .header("X-Attempts", summary(&attempts))
                            .body(bytes.to_vec())
                            .unwrap_or_else(|_| plain(500, "response could not be built"))
                    }
                    Err(why) => error_json(
                        502,
                        "fallback_failed",
                        &format!("no seller answered and the local fallback failed ({why})"),
                        call_id,
                        detail,
                        None,
                    ),
                }
            }
            (FallbackMode::Wait, _) => error_json(
                503,
                "sellers_unavailable",
                "no seller could answer now; nothing more was paid. Retry after the delay, or act manually.",
                call_id,
                detail,
                Some(self.cfg.fallback.retry_after_seconds),
            ),
            _ => error_json(
                502,
                "no_seller_answered",
                "no configured seller gave a usable answer; see `attempts`",
                call_id,
                detail,
                None,
            ),
        }
    }
}
