//! Circuit breaker per seller: closed → open after N consecutive failures → after the open
//! time one probe is let through (half-open) → closed on success, open again on failure.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    pub state: State,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// May a call go to this seller now? Half-open lets exactly one probe through.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now < until => false,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => false,
        }
    }

    pub fn success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + self.open_for,
            },
        };
    }

    /// For metrics and logs: "closed", "open", "half_open".
    pub fn label(&self) -> &'static str {
        match self.state {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert_eq!(b.label(), "closed");
        b.failure(t0);
        assert_eq!(b.label(), "open");
        assert!(!b.allow(t0 + Duration::from_secs(5)));
        let later = t0 + Duration::from_secs(11);
        assert!(b.allow(later), "one probe");
        assert!(!b.allow(later), "only one probe at a time");
        b.success();
        assert_eq!(b.label(), "closed");
        assert!(b.allow(later));
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(10));
        b.failure(t0);
        let later = t0 + Duration::from_secs(11);
        assert!(b.allow(later));
        b.failure(later);
        assert!(!b.allow(later + Duration::from_secs(1)));
    }
}
