//! When no seller answered (`outbound.fallback.mode`): ask the local strategy endpoint
//! (`local`), answer 503 with `Retry-After` (`wait`), or 502 with what happened at each seller
//! (`error`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tracing::info;

use super::answer::{details, error_json, strategy, summary};
use super::call::{Attempt, Call};
use super::config::FallbackMode;
use super::{MAX_SELLER_ANSWER, Payer};
use crate::audit::{Event, Kind};
use crate::telemetry;

/// The least time the local fallback is given, even past the call's deadline.
const LOCAL_MIN_TIME: Duration = Duration::from_millis(200);

impl Payer {
    /// The call's end when no seller answered.
    pub(super) async fn fallback(
        &self,
        call: &Call<'_>,
        attempts: Vec<Attempt>,
    ) -> Response<Vec<u8>> {
        let mode = self.cfg.fallback.mode;
        telemetry::with(|m| m.fallbacks.with_label_values(&[mode_label(mode)]).inc());
        match (mode, &self.cfg.fallback_url) {
            (FallbackMode::Local, Some(url)) => match self.ask_local(url, call).await {
                Ok(body) => self.answered_locally(url, call, &attempts, body).await,
                Err(why) => error_json(
                    502,
                    "fallback_failed",
                    &format!("no seller answered and the local fallback failed ({why})"),
                    call.id,
                    details(&attempts),
                    None,
                ),
            },
            (FallbackMode::Wait, _) => error_json(
                503,
                "sellers_unavailable",
                "no seller could answer now; nothing more was paid. Retry after the delay, or act manually.",
                call.id,
                details(&attempts),
                Some(self.cfg.fallback.retry_after_seconds),
            ),
            _ => error_json(
                502,
                "no_seller_answered",
                "no configured seller gave a usable answer; see `attempts`",
                call.id,
                details(&attempts),
                None,
            ),
        }
    }

    /// POST roma-01's request to the local strategy endpoint (with its secret, if any) in the
    /// time left; its body on a 2xx, else why not.
    async fn ask_local(&self, url: &reqwest::Url, call: &Call<'_>) -> Result<Bytes, String> {
        let left = call
            .deadline
            .saturating_duration_since(Instant::now())
            .max(LOCAL_MIN_TIME);
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
        match req.body(call.body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => {
                crate::http::read_capped(resp, MAX_SELLER_ANSWER)
                    .await
                    .map_err(|e| e.to_string())
            }
            Ok(resp) => Err(format!("answered {}", resp.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The local fallback's answer, journalled, marked `X-Strategy-Source: fallback`.
    async fn answered_locally(
        &self,
        url: &reqwest::Url,
        call: &Call<'_>,
        attempts: &[Attempt],
        body: Bytes,
    ) -> Response<Vec<u8>> {
        let call_id = call.id;
        info!(call_id, attempts = %summary(attempts), "answered by the local fallback");
        self.audit(
            Event::new(Kind::Fallback)
                .with("callId", call_id)
                .with("owner", call.owner)
                .with("attempts", summary(attempts))
                .with("source", url.to_string()),
            None,
        )
        .await;
        strategy(
            call_id,
            "fallback",
            vec![
                ("X-Payment-Status", "fallback".to_string()),
                ("X-Attempts", summary(attempts)),
            ],
            body,
        )
    }
}

/// The `fallbacks` metric's label for `mode`.
fn mode_label(mode: FallbackMode) -> &'static str {
    match mode {
        FallbackMode::Local => "local",
        FallbackMode::Wait => "wait",
        FallbackMode::Error => "error",
    }
}
