//! Replay store on Redis, shared by replicas: `SET NX PX` for the claim, Lua compare-and-set
//! on the claim token for every later change. The connection is made lazily on the runtime
//! of the service that first uses it.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;

use super::{BudgetStore, PaymentRecord, PaymentState, ReplayStore, StoreError};

const KEY_PREFIX: &str = "x402-sidecar:payment:";

/// Replace or delete (empty ARGV[2]) the record if its token is ARGV[1].
const CAS: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, r = pcall(cjson.decode, v)
if not ok or r.token ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"#;

/// Replace the record with ARGV[3] (kept ARGV[4] ms) if its token is ARGV[1] and its lease
/// (`lease_until`, unix ms) has run out at ARGV[2].
const TAKE_OVER: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, r = pcall(cjson.decode, v)
if not ok or r.token ~= ARGV[1] then return 0 end
if type(r.lease_until) == 'number' and r.lease_until > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"#;

/// How many keys a recovery sweep looks at, at most, whatever `limit` says.
const SCAN_MAX: usize = 100_000;

/// Reserve ARGV[1] under limit ARGV[2]; key lives ARGV[3] ms.
const RESERVE: &str = r#"
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if spent + amount > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], spent + amount, 'PX', ARGV[3])
return 1
"#;

/// Release ARGV[1], never below zero, keeping the key's expiry.
const RELEASE: &str = r#"
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = spent - tonumber(ARGV[1])
if left < 0 then left = 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[1], left, 'KEEPTTL') end
return left
"#;

const BUDGET_PREFIX: &str = "x402-sidecar:budget:";

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    cas: Script,
    take_over: Script,
    reserve: Script,
    release: Script,
}

impl RedisStore {
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            cas: Script::new(CAS),
            take_over: Script::new(TAKE_OVER),
            reserve: Script::new(RESERVE),
            release: Script::new(RELEASE),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        connection(&self.client, &self.conn)
            .await
            .map_err(StoreError::Unavailable)
    }

    fn encode(rec: &PaymentRecord) -> Result<String, StoreError> {
        serde_json::to_string(rec).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    async fn cas(
        &self,
        key: &str,
        token: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let n: i64 = self
            .cas
            .key(format!("{KEY_PREFIX}{key}"))
            .arg(token)
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(n == 1)
    }
}

#[async_trait]
impl ReplayStore for RedisStore {
    async fn claim(
        &self,
        key: &str,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut c = self.conn().await?;
        let k = format!("{KEY_PREFIX}{key}");
        let value = Self::encode(rec)?;
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let set: Option<String> = c
            .set_options(&k, value, opts)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if set.is_some() {
            return Ok(None);
        }
        let cur: Option<String> = c
            .get(&k)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        match cur {
            Some(v) => serde_json::from_str(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
            // Expired between the two calls: the payment is free again; claim once more.
            None => {
                let opts = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64));
                let set: Option<String> = c
                    .set_options(&k, Self::encode(rec)?, opts)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                if set.is_some() {
                    Ok(None)
                } else {
                    Err(StoreError::Unavailable("claim raced with expiry".into()))
                }
            }
        }
    }

    async fn replace(
        &self,
        key: &str,
        token: &str,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.cas(key, token, &Self::encode(rec)?, ttl).await
    }

    async fn release(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        self.cas(key, token, "", Duration::from_millis(1)).await
    }

    async fn take_over(
        &self,
        key: &str,
        token: &str,
        now_ms: u64,
        rec: &PaymentRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let n: i64 = self
            .take_over
            .key(format!("{KEY_PREFIX}{key}"))
            .arg(token)
            .arg(now_ms)
            .arg(Self::encode(rec)?)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(n == 1)
    }

    /// `SCAN` over the payment keys (at most [`SCAN_MAX`] looked at), keeping those not done.
    async fn unfinished(&self, limit: usize) -> Result<Vec<(String, PaymentRecord)>, StoreError> {
        let mut c = self.conn().await?;
        let unavailable = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
        let mut cursor: u64 = 0;
        let (mut seen, mut out) = (0usize, Vec::new());
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{KEY_PREFIX}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            seen += keys.len();
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                for (k, v) in keys.iter().zip(values) {
                    let Some(rec) = v.and_then(|v| serde_json::from_str::<PaymentRecord>(&v).ok())
                    else {
                        continue;
                    };
                    if rec.state != PaymentState::Done && out.len() < limit {
                        out.push((k.trim_start_matches(KEY_PREFIX).to_string(), rec));
                    }
                }
            }
            cursor = next;
            if cursor == 0 || out.len() >= limit || seen >= SCAN_MAX {
                return Ok(out);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(())
    }
}

#[async_trait]
impl BudgetStore for RedisStore {
    async fn reserve(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let n: i64 = self
            .reserve
            .key(format!("{BUDGET_PREFIX}{key}"))
            .arg(amount)
            .arg(limit)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(n == 1)
    }

    async fn unreserve(&self, key: &str, amount: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .release
            .key(format!("{BUDGET_PREFIX}{key}"))
            .arg(amount)
            .invoke_async(&mut c)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(())
    }

    async fn spent(&self, key: &str) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let v: Option<u64> = c
            .get(format!("{BUDGET_PREFIX}{key}"))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(v.unwrap_or(0))
    }
}

/// The one lazily made connection of `client`, kept in `cell`: 2 s to connect and to answer,
/// one retry (a Redis that does not answer must not hold a paid call).
pub(super) async fn connection(
    client: &redis::Client,
    cell: &OnceCell<ConnectionManager>,
) -> Result<ConnectionManager, String> {
    cell.get_or_try_init(|| async {
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        ConnectionManager::new_with_config(client.clone(), cfg).await
    })
    .await
    .cloned()
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    fn url() -> String {
        std::env::var("X402_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
    }

    #[tokio::test]
    async fn claim_is_exclusive_and_changes_need_the_token() {
        let s = RedisStore::new(&url()).unwrap();
        let key = format!("unit-{}", rand::random::<u64>());
        let ttl = Duration::from_secs(30);
        assert_eq!(
            s.claim(&key, &sample("a", PaymentState::InFlight), ttl)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            s.claim(&key, &sample("b", PaymentState::InFlight), ttl)
                .await
                .unwrap()
                .unwrap()
                .token,
            "a"
        );
        assert!(
            !s.replace(&key, "b", &sample("b", PaymentState::Done), ttl)
                .await
                .unwrap()
        );
        assert!(
            s.replace(&key, "a", &sample("a", PaymentState::Done), ttl)
                .await
                .unwrap()
        );
        let held = s
            .claim(&key, &sample("c", PaymentState::InFlight), ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.state, PaymentState::Done);
        assert!(!s.release(&key, "c").await.unwrap());
        assert!(s.release(&key, "a").await.unwrap());
        assert_eq!(
            s.claim(&key, &sample("c", PaymentState::InFlight), ttl)
                .await
                .unwrap(),
            None
        );
        s.release(&key, "c").await.unwrap();
    }

    /// Two replicas race to take over a lapsed lease: one wins; a live lease is never taken;
    /// the sweep's scan finds the unfinished record.
    #[tokio::test]
    async fn a_lapsed_lease_is_taken_over_by_one_replica_only() {
        let a = std::sync::Arc::new(RedisStore::new(&url()).unwrap());
        let b = std::sync::Arc::new(RedisStore::new(&url()).unwrap());
        let key = format!("unit-lease-{}", rand::random::<u64>());
        let ttl = Duration::from_secs(30);
        let mut dead = sample("dead", PaymentState::Pending);
        dead.lease_until = Some(5_000);
        a.claim(&key, &dead, ttl).await.unwrap();
        let live = sample("x", PaymentState::InFlight);
        assert!(!a.take_over(&key, "dead", 4_999, &live, ttl).await.unwrap());
        let mut handles = Vec::new();
        for i in 0..10 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let k = key.clone();
            handles.push(tokio::spawn(async move {
                let mine = sample(&format!("t{i}"), PaymentState::Pending);
                s.take_over(&k, "dead", 6_000, &mine, ttl).await.unwrap()
            }));
        }
        let mut won = 0;
        for h in handles {
            won += h.await.unwrap() as usize;
        }
        assert_eq!(won, 1);
        let open = b.unfinished(usize::MAX).await.unwrap();
        assert!(
            open.iter()
                .any(|(k, r)| *k == key && r.token.starts_with('t'))
        );
        let (_, r) = open.into_iter().find(|(k, _)| *k == key).unwrap();
        a.release(&key, &r.token).await.unwrap();
    }

    #[tokio::test]
    async fn budgets_are_shared_and_never_overshoot() {
        let a = std::sync::Arc::new(RedisStore::new(&url()).unwrap());
        let b = std::sync::Arc::new(RedisStore::new(&url()).unwrap());
        let key = format!("unit-budget-{}", rand::random::<u64>());
        let mut handles = Vec::new();
        for i in 0..40 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let k = key.clone();
            handles.push(tokio::spawn(async move {
                s.reserve(&k, 5, 22, Duration::from_secs(60)).await.unwrap()
            }));
        }
        let mut granted = 0;
        for h in handles {
            granted += h.await.unwrap() as u64;
        }
        assert_eq!(granted, 4);
        assert_eq!(a.spent(&key).await.unwrap(), 20);
        b.unreserve(&key, 5).await.unwrap();
        assert_eq!(a.spent(&key).await.unwrap(), 15);
    }
}
