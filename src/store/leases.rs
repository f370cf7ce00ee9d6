//! The settler keys' nonce leases on Redis ([`NonceLeases`]), shared by the replicas that use
//! one key: `SET NX PX` takes a lease (it lapses by itself should its holder die), a Lua
//! compare-and-delete on its token gives it back. The connection is made lazily.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;

use crate::evm::NonceLeases;

const LEASE_PREFIX: &str = "x402-sidecar:nonce-lease:";

/// Delete KEYS[1] if it holds ARGV[1].
const UNLEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

pub struct RedisLeases {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    unlease: Script,
}

impl RedisLeases {
    pub fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
        Ok(RedisLeases {
            client,
            conn: OnceCell::new(),
            unlease: Script::new(UNLEASE),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, String> {
        super::redis_store::connection(&self.client, &self.conn).await
    }
}

#[async_trait]
impl NonceLeases for RedisLeases {
    async fn lease(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<String>, String> {
        let mut c = self.conn().await?;
        let key = format!("{LEASE_PREFIX}{name}");
        let token = format!("{:032x}", rand::random::<u128>());
        let deadline = Instant::now() + wait;
        // A lease is held for one broadcast (a few ms on a near RPC): poll briefly.
        let mut pause = Duration::from_micros(500);
        loop {
            let opts = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64));
            let set: Option<String> = c
                .set_options(&key, &token, opts)
                .await
                .map_err(|e| e.to_string())?;
            if set.is_some() {
                return Ok(Some(token));
            }
            if Instant::now() + pause > deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn unlease(&self, name: &str, token: &str) -> Result<(), String> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .unlease
            .key(format!("{LEASE_PREFIX}{name}"))
            .arg(token)
            .invoke_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn url() -> String {
        std::env::var("X402_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
    }

    /// Two replicas' leases on one key: never both held; a lapsed lease is free again; only
    /// its own token gives a lease back.
    #[tokio::test]
    async fn one_holder_at_a_time_across_clients() {
        let a = Arc::new(RedisLeases::new(&url()).unwrap());
        let b = Arc::new(RedisLeases::new(&url()).unwrap());
        let name = format!("unit-{}", rand::random::<u64>());
        let held = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (name, held) = (name.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                let t = l
                    .lease(&name, Duration::from_secs(5), Duration::from_secs(5))
                    .await
                    .unwrap()
                    .expect("lease within the wait");
                assert_eq!(held.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokio::time::sleep(Duration::from_millis(2)).await;
                held.fetch_sub(1, Ordering::SeqCst);
                l.unlease(&name, &t).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let t = a
            .lease(&name, Duration::from_millis(50), Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            b.lease(&name, Duration::from_secs(5), Duration::ZERO)
                .await
                .unwrap(),
            None
        );
        b.unlease(&name, "not-the-token").await.unwrap();
        // Lapses by itself.
        let t2 = b
            .lease(&name, Duration::from_secs(5), Duration::from_secs(2))
            .await
            .unwrap()
            .expect("the lapsed lease is free");
        a.unlease(&name, &t).await.unwrap(); // no longer its: no effect
        assert_eq!(
            a.lease(&name, Duration::from_secs(5), Duration::ZERO)
                .await
                .unwrap(),
            None
        );
        b.unlease(&name, &t2).await.unwrap();
    }
}
