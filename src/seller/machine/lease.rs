//! The lease a process holds on a payment's record while it works on it: the owner (this node's
//! id) and a deadline a few seconds past the upstream timeout, renewed by a heartbeat while a
//! long step runs. A record whose lease ran out is taken over by the next request with the same
//! payment, on any replica ([`crate::store::ReplayStore::take_over`]).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::store::{PaymentRecord, ReplayStore, StoreError};

/// How long a lease outlives the upstream timeout.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The time in unix milliseconds (a test moves it by hand).
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Who this process is and how long its leases last.
#[derive(Clone)]
pub(crate) struct LeaseSpec {
    /// This node's id: `host:port`, the same after a restart (its recovery sweep finds its own
    /// records by it).
    pub(crate) owner: String,
    /// How long a lease holds without a heartbeat.
    pub(crate) ttl: Duration,
    pub(crate) clock: Clock,
}

impl LeaseSpec {
    /// Leases of `ttl` owned by `owner`, on the system clock.
    pub(crate) fn new(owner: String, ttl: Duration) -> Self {
        LeaseSpec {
            owner,
            ttl,
            clock: Arc::new(now_ms),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// When a lease taken now runs out.
    pub(crate) fn until(&self) -> u64 {
        self.now().saturating_add(self.ttl.as_millis() as u64)
    }

    /// How often a running step renews its lease.
    fn beat(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }
}

/// The system clock in unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This node's id for leases: the host name and the port of `listen` (`host:8402`).
pub(crate) fn node_id(listen: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "node".into());
    let port = listen.rsplit(':').next().unwrap_or(listen);
    format!("{host}:{port}")
}

/// One request's hold on one payment's record: every write is conditional on its claim token
/// and renews the lease.
pub(crate) struct Lease<'m> {
    store: &'m dyn ReplayStore,
    spec: &'m LeaseSpec,
    key: &'m str,
    /// How long the store keeps the record (the authorization's life, not the lease's).
    keep: Duration,
    rec: Mutex<PaymentRecord>,
}

impl<'m> Lease<'m> {
    pub(crate) fn new(
        store: &'m dyn ReplayStore,
        spec: &'m LeaseSpec,
        key: &'m str,
        keep: Duration,
        rec: PaymentRecord,
    ) -> Self {
        Lease {
            store,
            spec,
            key,
            keep,
            rec: Mutex::new(rec),
        }
    }

    /// Change the record and write it, the lease renewed. `Ok(false)`: it was taken over.
    pub(crate) async fn write(
        &self,
        f: impl FnOnce(&mut PaymentRecord) + Send,
    ) -> Result<bool, StoreError> {
        let until = self.spec.until();
        let owner = self.spec.owner.clone();
        self.put(move |r| {
            f(r);
            r.owner = Some(owner);
            r.lease_until = Some(until);
        })
        .await
    }

    /// Change the record and hand it back: no lease, so the next request with the payment
    /// takes it over at once.
    pub(crate) async fn hand_back(
        &self,
        f: impl FnOnce(&mut PaymentRecord) + Send,
    ) -> Result<bool, StoreError> {
        self.put(move |r| {
            f(r);
            r.owner = None;
            r.lease_until = None;
        })
        .await
    }

    async fn put(&self, f: impl FnOnce(&mut PaymentRecord)) -> Result<bool, StoreError> {
        let rec = {
            let mut r = self.rec.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut r);
            r.clone()
        };
        self.store
            .replace(self.key, &rec.token, &rec, self.keep)
            .await
    }

    /// Give the claim back: nothing happened, the same payment may be sent again.
    pub(crate) async fn release(&self) {
        let token = self.token();
        if let Err(e) = self.store.release(self.key, &token).await {
            warn!("claim not released ({e}); its lease runs out by itself");
        }
    }

    fn token(&self) -> String {
        self.rec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .token
            .clone()
    }

    /// Run `step`, renewing the lease every third of its life until it is done.
    pub(crate) async fn hold<F: Future>(&self, step: F) -> F::Output {
        tokio::pin!(step);
        loop {
            tokio::select! {
                out = &mut step => return out,
                _ = tokio::time::sleep(self.spec.beat()) => {
                    match self.write(|_| {}).await {
                        Ok(true) => {}
                        Ok(false) => warn!("lease lost to another request while a step ran"),
                        Err(e) => warn!("lease not renewed: {e}"),
                    }
                }
            }
        }
    }
}
