//! Sending to a seller: one POST within the sellers' deadline, and the paid resend loop that
//! sends the same authorization again after network trouble (never a second signature).

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::attempt::{Miss, Payment};
use super::call::Call;
use super::config::Seller;
use super::{MAX_SELLER_ANSWER, Payer};

/// One answer from a seller.
pub(super) struct Sent {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// What sending the payment came to.
pub(super) enum Delivery {
    /// A 2xx: the seller delivered.
    Answered { headers: HeaderMap, body: Bytes },
    /// A 402 to the paid request: the seller's `error`, possibly empty.
    Refused { why: String },
    /// No usable answer before the retries or the time ran out: the last trouble seen.
    Lost { last: String },
}

impl Payer {
    /// Send the one authorization; resend the same one after network trouble or a 5xx, and
    /// after a pause when the seller is busy with it (409/503 with `Retry-After`).
    pub(super) async fn deliver(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        payment: &Payment,
    ) -> Delivery {
        let deadline = call.sellers_deadline;
        let (name, value) = (payment.header.0, payment.header.1.as_str());
        let mut retries_left = self.cfg.retry.attempts;
        let mut last = String::new();
        loop {
            if Instant::now() >= deadline {
                break;
            }
            match self.send(seller, call, Some((name, value))).await {
                Ok(Sent {
                    status: 200..=299,
                    headers,
                    body,
                }) => return Delivery::Answered { headers, body },
                Ok(Sent {
                    status: 402,
                    headers,
                    body,
                }) => {
                    // A paid attempt answered 402 is never paid again automatically.
                    return Delivery::Refused {
                        why: refusal(&headers, &body),
                    };
                }
                Ok(Sent {
                    status: 409 | 503,
                    headers,
                    ..
                }) if retry_after(&headers).is_some() => {
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
                Ok(Sent { status, body, .. }) => {
                    last = format!(
                        "{status} {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    );
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                    tokio::time::sleep(self.backoff(retries_left)).await;
                }
                Err(miss) => {
                    last = miss.detail;
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                    tokio::time::sleep(self.backoff(retries_left)).await;
                }
            }
        }
        Delivery::Lost { last }
    }

    /// The pause before resend number `attempts - retries_left`: `backoff_ms` doubled each time.
    fn backoff(&self, retries_left: u32) -> Duration {
        let n = self.cfg.retry.attempts.saturating_sub(retries_left).min(6);
        Duration::from_millis(self.cfg.retry.backoff_ms.saturating_mul(1 << n))
    }

    /// POST roma-01's request to a seller, with `payment` as a header if given, within the
    /// sellers' deadline; a miss on network trouble or an answer above [`MAX_SELLER_ANSWER`].
    pub(super) async fn send(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        payment: Option<(&str, &str)>,
    ) -> Result<Sent, Miss> {
        let left = call
            .sellers_deadline
            .saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Miss::seller("timeout", "the call's deadline passed"));
        }
        let mut req = self
            .http
            .post(seller.url.clone())
            .timeout(left)
            .header("Content-Type", "application/json")
            .body(call.body.clone());
        for (k, v) in crate::telemetry::otlp::outgoing(&tracing::Span::current(), None) {
            req = req.header(k, v);
        }
        if let Some((k, v)) = payment {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = crate::http::read_capped(resp, MAX_SELLER_ANSWER)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::Http(e) => classify(&e),
                too_large => Miss::seller("answer_too_large", format!("the seller's {too_large}")),
            })?;
        Ok(Sent {
            status,
            headers,
            body,
        })
    }
}

/// Network trouble, as an attempt's outcome.
fn classify(e: &reqwest::Error) -> Miss {
    if e.is_timeout() {
        Miss::seller("timeout", "the seller did not answer in time")
    } else if e.is_connect() {
        Miss::seller("unreachable", format!("the seller is unreachable: {e}"))
    } else {
        Miss::seller("network_error", format!("the connection failed: {e}"))
    }
}

/// `Retry-After` in seconds, when the seller sent one.
fn retry_after(h: &HeaderMap) -> Option<u64> {
    h.get("retry-after")?.to_str().ok()?.trim().parse().ok()
}

/// Why a seller refused a paid attempt, where it put it: a v2 seller in the `PAYMENT-REQUIRED`
/// header's `error` (its body may be `{}`), a v1 seller in the body's `error`; with the
/// body's `message` when there is one. Empty when the seller said nothing. It is the seller's
/// text, passed on to roma-01: cut at [`MAX_REFUSAL_CHARS`] so a seller cannot fill the answer.
pub(super) fn refusal(headers: &reqwest::header::HeaderMap, body: &[u8]) -> String {
    let mut why = refusal_text(headers, body);
    if let Some((cut, _)) = why.char_indices().nth(MAX_REFUSAL_CHARS) {
        why.truncate(cut);
        why.push('…');
    }
    why
}

/// Longest seller reason passed on.
const MAX_REFUSAL_CHARS: usize = 300;

fn refusal_text(headers: &reqwest::header::HeaderMap, body: &[u8]) -> String {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let from_header = headers
        .get(crate::x402::HEADER_PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| crate::x402::codec::decode::<Value>(h.as_bytes(), 64 * 1024).ok())
        .and_then(|v| v["error"].as_str().map(str::to_string));
    let code = from_header
        .or_else(|| body["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    match body["message"].as_str() {
        Some(m) if !m.is_empty() && !code.is_empty() => format!("{code} ({m})"),
        Some(m) if !m.is_empty() => m.to_string(),
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn a_refusal_is_read_from_the_v2_header_then_the_body() {
        let mut h = HeaderMap::new();
        let header = crate::x402::codec::encode(
            &serde_json::json!({"x402Version": 2, "error": "invalid_exact_evm_nonce_already_used", "accepts": []}),
        );
        h.insert("payment-required", HeaderValue::from_str(&header).unwrap());
        assert_eq!(refusal(&h, b"{}"), "invalid_exact_evm_nonce_already_used");
        let body = br#"{"error":"invalid_exact_evm_payload_signature","message":"the signature does not recover"}"#;
        assert_eq!(
            refusal(&HeaderMap::new(), body),
            "invalid_exact_evm_payload_signature (the signature does not recover)"
        );
        assert_eq!(refusal(&HeaderMap::new(), b"not json"), "");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(5000));
        assert_eq!(
            refusal(&HeaderMap::new(), long.as_bytes()).chars().count(),
            MAX_REFUSAL_CHARS + 1
        );
    }
}
