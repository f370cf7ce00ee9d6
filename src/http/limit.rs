//! Rate limits shared by the roles: a window of `requests` per `window_secs` per key (a client
//! IP, a payer, a facilitator client), counted with pingora's own estimator
//! ([`pingora_limits::rate::Rate`]: fixed memory, no per-key allocation, a sliding estimate
//! over the current and the previous window). A request over its limit gets `429` with
//! `Retry-After` and a reason code ([`Limited::reply`]).

use std::hash::Hash;
use std::time::Duration;

use pingora_limits::rate::Rate;
use serde::Deserialize;

use crate::http::Reply;
use crate::util::Problem;

/// One limit as written: `{ requests: 1024, window_secs: 10 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests allowed per key in one window (at least 1).
    pub requests: u32,
    /// The window, 1–3600 seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
}

fn default_window() -> u64 {
    10
}

impl LimitConfig {
    pub const fn new(requests: u32, window_secs: u64) -> Self {
        LimitConfig {
            requests,
            window_secs,
        }
    }

    /// Report a bad value under `path` (e.g. `inbound.limits.per_ip`).
    pub fn check(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.requests == 0 {
            problems.push(Problem {
                path: format!("{path}.requests"),
                message: "must be at least 1; to turn the limits off set `enabled: false` on the `limits` section".into(),
            });
        }
        if !(1..=3600).contains(&self.window_secs) {
            problems.push(Problem {
                path: format!("{path}.window_secs"),
                message: "must be between 1 and 3600 seconds".into(),
            });
        }
    }

    /// `1024 per 10 s` for `check-config`.
    pub fn describe(&self) -> String {
        format!("{} per {} s", self.requests, self.window_secs)
    }
}

/// A request over its limit: how long until it would be served again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl Limited {
    /// The `429` answer: `Retry-After`, the reason code and a sentence naming the limit (never
    /// the key: it may be a client's address).
    pub fn reply(&self, code: &str, what: &str, limit: &LimitConfig) -> Reply {
        Reply::error(
            429,
            code,
            format!(
                "too many requests {what}: the limit is {} per {} s; retry after {} s",
                limit.requests, limit.window_secs, self.retry_after_secs
            ),
        )
        .retry_after(self.retry_after_secs)
    }
}

/// Estimator sizing: 4 hashes × 8192 columns (2 × 256 KiB), so that many busy keys rarely
/// push an unrelated key over its limit.
const HASHES: usize = 4;
const SLOTS: usize = 8192;

/// One limit, counting per key.
pub struct Limiter {
    rate: Rate,
    limit: LimitConfig,
}

impl Limiter {
    pub fn new(limit: LimitConfig) -> Self {
        let window = Duration::from_secs(limit.window_secs.max(1));
        Limiter {
            rate: Rate::new_with_estimator_config(window, HASHES, SLOTS),
            limit,
        }
    }

    pub fn limit(&self) -> &LimitConfig {
        &self.limit
    }

    /// Count one request of `key`; `Err` when it is over the limit (it still counts, so a
    /// client that keeps going stays limited).
    pub fn check<K: Hash>(&self, key: &K) -> Result<(), Limited> {
        self.rate.observe(key, 1);
        self.judge(key, 0.0)
    }

    /// Count one event for `key` without asking (see [`Limiter::peek`]).
    pub fn count<K: Hash>(&self, key: &K) {
        self.rate.observe(key, 1);
    }

    /// Is `key` over its limit already, by the events counted so far (this one not counted)?
    pub fn peek<K: Hash>(&self, key: &K) -> Result<(), Limited> {
        self.judge(key, 1.0)
    }

    /// Within the limit with `extra` more events than counted so far?
    fn judge<K: Hash>(&self, key: &K, extra: f64) -> Result<(), Limited> {
        let limit = f64::from(self.limit.requests);
        let window = self.limit.window_secs.max(1) as f64;
        self.rate.rate_with(key, |c| {
            let prev = c.prev_samples.max(0) as f64;
            let curr = c.curr_samples.max(0) as f64 + extra;
            let frac = c.current_interval_fraction.clamp(0.0, 1.0);
            if prev * (1.0 - frac) + curr <= limit {
                return Ok(());
            }
            Err(Limited {
                retry_after_secs: wait(prev, curr, frac, limit, window),
            })
        })
    }
}

/// Seconds until the sliding estimate, with no more requests, lets one more through.
fn wait(prev: f64, curr: f64, frac: f64, limit: f64, window: f64) -> u64 {
    let room = (limit - 1.0).max(0.0);
    let secs = if curr <= room && prev > 0.0 {
        // the previous window's share fades out within this window
        window * ((1.0 - frac) - (room - curr) / prev).max(0.0)
    } else {
        // this window's count must fade once it is the previous one
        let to_end = window * (1.0 - frac);
        to_end + window * (1.0 - room / curr.max(1.0)).max(0.0)
    };
    (secs.ceil() as u64).clamp(1, 2 * window as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_is_refused_and_another_key_is_not() {
        let l = Limiter::new(LimitConfig::new(5, 60));
        for _ in 0..5 {
            assert!(l.check(&"a").is_ok());
        }
        let over = l.check(&"a").unwrap_err();
        assert!((1..=120).contains(&over.retry_after_secs), "{over:?}");
        assert!(l.check(&"b").is_ok());
    }

    #[test]
    fn bad_values_are_reported_with_their_path() {
        let mut p = Vec::new();
        LimitConfig::new(0, 0).check("inbound.limits.per_ip", &mut p);
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "inbound.limits.per_ip.requests",
                "inbound.limits.per_ip.window_secs"
            ]
        );
    }

    #[test]
    fn the_429_names_the_limit_and_when_to_come_back() {
        let r = Limited {
            retry_after_secs: 3,
        }
        .reply(
            "rate_limited_ip",
            "from your address",
            &LimitConfig::new(10, 1),
        );
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("Retry-After", "3".to_string())));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "rate_limited_ip");
    }
}
