//! One-node replay store on moka: per-key serialised compute gives the atomic claim.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use super::{BudgetStore, PaymentRecord, PaymentState, ReplayStore, StoreError};

#[derive(Clone)]
struct Entry {
    rec: PaymentRecord,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _k: &String, v: &Entry, _at: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _k: &String,
        v: &Entry,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// In-process store: correct for one sidecar; replicas need [`super::RedisStore`].
pub struct MemoryStore {
    cache: Cache<String, Entry>,
    budgets: Cache<String, u64>,
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build(),
            // Budget keys carry their day; two days of life is enough.
            budgets: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(2 * 86_400))
                .build(),
        }
    }
}

#[async_trait]
impl BudgetStore for MemoryStore {
    async fn reserve(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        let r = self.budgets.entry(key.to_string()).and_compute_with(|cur| {
            let spent = cur.map(|e| e.into_value()).unwrap_or(0);
            match spent.checked_add(amount) {
                Some(total) if total <= limit => Op::Put(total),
                _ => Op::Nop,
            }
        });
        Ok(matches!(
            r,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }

    async fn unreserve(&self, key: &str, amount: u64) -> Result<(), StoreError> {
        self.budgets
            .entry(key.to_string())
            .and_compute_with(|cur| match cur {
                Some(e) => Op::Put(e.into_value().saturating_sub(amount)),
                None => Op::Nop,
            });
        Ok(())
    }

    async fn spent(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.budgets.get(key).unwrap_or(0))
    }
}

#[async_trait]
impl ReplayStore for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut existing = None;
        self.cache
            .entry(key.to_string())
            .and_compute_with(|cur| match cur {
                Some(e) => {
                    existing = Some(e.into_value().rec);
                    Op::Nop
                }
                None => Op::Put(Entry {
                    rec: rec.clone(),
                    ttl,
                }),
            });
        Ok(existing)
    }

    async fn replace(
        &self,
        key: &str,
        token: &str,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let r = self
            .cache
            .entry(key.to_string())
            .and_compute_with(|cur| match cur {
                Some(e) if e.value().rec.token == token => Op::Put(Entry {
                    rec: rec.clone(),
                    ttl,
                }),
                _ => Op::Nop,
            });
        Ok(matches!(r, CompResult::ReplacedWith(_)))
    }

    async fn release(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let r = self
            .cache
            .entry(key.to_string())
            .and_compute_with(|cur| match cur {
                Some(e) if e.value().rec.token == token => Op::Remove,
                _ => Op::Nop,
            });
        Ok(matches!(r, CompResult::Removed(_)))
    }

    async fn take_over(
        &self,
        key: &str,
        token: &str,
        now_ms: u64,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let r = self
            .cache
            .entry(key.to_string())
            .and_compute_with(|cur| match cur {
                Some(e) if e.value().rec.token == token && !e.value().rec.leased_at(now_ms) => {
                    Op::Put(Entry {
                        rec: rec.clone(),
                        ttl,
                    })
                }
                _ => Op::Nop,
            });
        Ok(matches!(r, CompResult::ReplacedWith(_)))
    }

    async fn unfinished(&self, limit: usize) -> Result<Vec<(String, PaymentRecord)>, StoreError> {
        Ok(self
            .cache
            .iter()
            .filter(|(_, e)| e.rec.state != PaymentState::Done)
            .take(limit)
            .map(|(k, e)| (k.as_ref().clone(), e.rec))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    #[tokio::test]
    async fn claim_is_exclusive_and_changes_need_the_token() {
        let s = MemoryStore::new(100);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            s.claim("k", &sample("a", PaymentState::InFlight), ttl)
                .await
                .unwrap(),
            None
        );
        let held = s
            .claim("k", &sample("b", PaymentState::InFlight), ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.token, "a");
        assert!(
            !s.replace("k", "b", &sample("b", PaymentState::Done), ttl)
                .await
                .unwrap()
        );
        assert!(
            s.replace("k", "a", &sample("a", PaymentState::Done), ttl)
                .await
                .unwrap()
        );
        assert!(!s.release("k", "b").await.unwrap());
        assert!(s.release("k", "a").await.unwrap());
        assert_eq!(
            s.claim("k", &sample("c", PaymentState::InFlight), ttl)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_lease_is_taken_over_only_once_it_ran_out_and_only_once() {
        let s = MemoryStore::new(100);
        let ttl = Duration::from_secs(60);
        let mut a = sample("a", PaymentState::InFlight);
        a.lease_until = Some(1_000);
        s.claim("k", &a, ttl).await.unwrap();
        let b = sample("b", PaymentState::InFlight);
        assert!(
            !s.take_over("k", "a", 999, &b, ttl).await.unwrap(),
            "lease still runs"
        );
        assert!(
            !s.take_over("k", "x", 2_000, &b, ttl).await.unwrap(),
            "wrong token"
        );
        assert!(s.take_over("k", "a", 1_000, &b, ttl).await.unwrap());
        let c = sample("c", PaymentState::InFlight);
        assert!(
            !s.take_over("k", "a", 2_000, &c, ttl).await.unwrap(),
            "taken already"
        );
        assert!(
            !s.replace("k", "a", &a, ttl).await.unwrap(),
            "the old owner lost it"
        );
        let open = s.unfinished(10).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].1.token, "b");
        s.replace("k", "b", &sample("b", PaymentState::Done), ttl)
            .await
            .unwrap();
        assert!(s.unfinished(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn budgets_never_overshoot_under_concurrency() {
        let s = std::sync::Arc::new(MemoryStore::new(100));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                s.reserve("b", 3, 20, Duration::from_secs(60))
                    .await
                    .unwrap()
            }));
        }
        let mut granted = 0;
        for h in handles {
            granted += h.await.unwrap() as u64;
        }
        assert_eq!(granted, 6, "6 × 3 ≤ 20 < 7 × 3");
        assert_eq!(s.spent("b").await.unwrap(), 18);
        s.unreserve("b", 3).await.unwrap();
        assert_eq!(s.spent("b").await.unwrap(), 15);
        s.unreserve("b", 100).await.unwrap();
        assert_eq!(s.spent("b").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn claims_expire() {
        let s = MemoryStore::new(100);
        s.claim(
            "k",
            &sample("a", PaymentState::InFlight),
            Duration::from_millis(50),
        )
        .await
        .unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            s.claim(
                "k",
                &sample("b", PaymentState::InFlight),
                Duration::from_secs(5)
            )
            .await
            .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn concurrent_claims_have_one_winner() {
        let s = std::sync::Arc::new(MemoryStore::new(100));
        let mut handles = Vec::new();
        for i in 0..32 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                s.claim(
                    "k",
                    &sample(&i.to_string(), PaymentState::InFlight),
                    Duration::from_secs(5),
                )
                .await
                .unwrap()
                .is_none()
            }));
        }
        let mut winners = 0;
        for h in handles {
            winners += h.await.unwrap() as usize;
        }
        assert_eq!(winners, 1);
    }
}
