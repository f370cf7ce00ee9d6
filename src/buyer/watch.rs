//! The watcher: every signed authorization is followed to its end on the buyer's own RPC, by
//! its identity (`AuthorizationUsed(from, nonce)` and that transaction's `Transfer`), until it
//! can no longer move money. Its final truth goes to the ledger and the journal: `paid` (an
//! answer arrived, the chain shows the transfer), `paid_no_answer` (the chain shows a transfer
//! the call did not get an answer for: a late transfer, also a metric and a WARN with the
//! seller's name), `cancelled` or `unused` (its budget is released).
//!
//! A call hands its authorization over once it is done with it; authorizations still open in
//! the ledger are read back on start, so a restart loses none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tracing::{info, warn};

use super::ledger::{self, Entry, Ledger};
use crate::audit::{Event, Journal, Kind};
use crate::evm::{Chain, Fate, SettleOutcome};
use crate::store::BudgetStore;
use crate::telemetry;
use crate::util::{now_secs, rfc3339};
use crate::x402::types::Authorization;

/// How long past `validBefore` an unused authorization is still watched (block times lag the
/// wall clock by a block or two).
const EXPIRY_GRACE_SECS: u64 = 4;

/// What the chain says of an authorization, as the buyer acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The transfer to the pinned payTo happened, in this transaction.
    Charged(String),
    /// It can never move money: `cancelled` or `unused` (expired).
    Dead(&'static str),
    /// Unused and still valid: it may yet move money.
    Open,
    /// The chain could not say (no RPC, an RPC error, a transaction without its receipt yet).
    Unknown(String),
}

/// An authorization that may still move money.
struct Open {
    /// Its last ledger line (`pending` or `unconfirmed`).
    entry: Entry,
    /// The budget reservation held for it.
    budget_key: String,
    /// A call still decides it until then (its deadline and a little more, in case the call
    /// was dropped: roma-01 hung up); the watcher leaves it alone until it is handed over.
    in_call_until: Option<Instant>,
}

/// The ledger, the journal, the budget and the chains, shared by the calls and the watcher.
pub(crate) struct Watcher {
    pub(super) ledger: Arc<Ledger>,
    pub(super) journal: Option<Arc<Journal>>,
    pub(super) store: Arc<dyn BudgetStore>,
    /// Read access per network.
    pub(super) chains: HashMap<String, Arc<Chain>>,
    open: Mutex<HashMap<B256, Open>>,
    interval: Duration,
}

impl Watcher {
    pub(super) fn new(
        ledger: Arc<Ledger>,
        journal: Option<Arc<Journal>>,
        store: Arc<dyn BudgetStore>,
        chains: HashMap<String, Arc<Chain>>,
        interval: Duration,
    ) -> Self {
        let w = Watcher {
            ledger,
            journal,
            store,
            chains,
            open: Mutex::new(HashMap::new()),
            interval,
        };
        w.read_back();
        w
    }

    /// The authorizations the ledger leaves open (a restart): watched from now on.
    fn read_back(&self) {
        let entries = match ledger::read(self.ledger.path()) {
            Ok(e) => e,
            Err(e) => {
                warn!("ledger not read back, open authorizations are not watched: {e}");
                return;
            }
        };
        let mut first_time: HashMap<String, String> = HashMap::new();
        for e in &entries {
            first_time
                .entry(e.nonce.to_lowercase())
                .or_insert_with(|| e.time.clone());
        }
        let mut open = self.lock();
        for e in ledger::finals(&entries).into_iter().filter(Entry::open) {
            let (Ok(nonce), Some(key)) = (e.nonce.parse::<B256>(), budget_key_of(&e, &first_time))
            else {
                warn!(nonce = %e.nonce, "an open ledger line cannot be watched: its fields do not parse");
                continue;
            };
            open.insert(
                nonce,
                Open {
                    entry: e,
                    budget_key: key,
                    in_call_until: None,
                },
            );
        }
        if !open.is_empty() {
            info!(
                open = open.len(),
                "watching the open authorizations read back from the ledger"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<B256, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `e` down: the log line, the metrics, the journal, the ledger (on disk before this
    /// returns). An open outcome is watched under `budget_key` (left to its call until
    /// `in_call_until`); a final one stops the watch.
    pub(super) async fn write(&self, e: Entry, budget_key: &str, in_call_until: Option<Instant>) {
        let outcome = e.outcome.as_str();
        info!(call_id = %e.call_id, seller = %e.seller, outcome, tx = e.tx.as_deref().unwrap_or(""), amount = %e.amount, nonce = %e.nonce,
            remote_request_id = ?e.remote_request_id, remote_payment_id = ?e.remote_payment_id, "ledger");
        telemetry::with(|m| {
            m.buyer_payments.with_label_values(&[outcome]).inc();
            if e.late {
                m.buyer_late_transfers.with_label_values(&[&e.seller]).inc();
            }
            if e.charged() {
                let spent = e.amount.parse::<u64>().unwrap_or(u64::MAX);
                m.buyer_spend
                    .with_label_values(&[&e.asset, &e.seller])
                    .inc_by(spent)
            }
        });
        // The journal gets what became of an authorization, not that it left.
        if let Some(j) = &self.journal
            && outcome != "pending"
            && let Err(err) = j.record(journal_event(&e), now_secs()).await
        {
            warn!("audit journal write failed: {err}");
        }
        let nonce = e.nonce.parse::<B256>().ok();
        let open = e.open();
        let ledger = self.ledger.clone();
        let line = e.clone();
        let written = tokio::task::spawn_blocking(move || ledger.append(&line)).await;
        if let Err(err) = written
            .map_err(|j| j.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            warn!(call_id = %e.call_id, "ledger write failed: {err}");
        }
        let Some(nonce) = nonce else { return };
        let mut map = self.lock();
        if open {
            map.insert(
                nonce,
                Open {
                    entry: e,
                    budget_key: budget_key.to_string(),
                    in_call_until,
                },
            );
        } else {
            map.remove(&nonce);
        }
    }

    /// The call is done with `nonce`: from now on the watcher decides it.
    pub(super) fn hand_over(&self, nonce: B256) {
        if let Some(o) = self.lock().get_mut(&nonce) {
            o.in_call_until = None;
        }
    }

    /// What the chain says of `auth` on `asset` (`network`'s RPC): charged (with the
    /// transaction), dead (cancelled, or unused past its `validBefore`), open or unknown.
    pub(super) async fn verdict(
        &self,
        network: &str,
        asset: Address,
        auth: &Authorization,
    ) -> Verdict {
        let Some(chain) = self.chains.get(network) else {
            return Verdict::Unknown(format!("no RPC is configured for {network}"));
        };
        match chain.fate(asset, auth).await {
            Ok(Fate::Used {
                outcome: SettleOutcome::Settled { tx },
                ..
            }) => Verdict::Charged(format!("{tx:#x}")),
            Ok(Fate::Used { tx, outcome }) => Verdict::Unknown(format!(
                "transaction {tx:#x} used the authorization without the expected transfer: {outcome:?}"
            )),
            Ok(Fate::Canceled { .. }) => Verdict::Dead("cancelled"),
            Ok(Fate::Unused) => {
                let valid_before = u64::try_from(auth.valid_before).unwrap_or(u64::MAX);
                if now_secs() >= valid_before.saturating_add(EXPIRY_GRACE_SECS) {
                    Verdict::Dead("unused")
                } else {
                    Verdict::Open
                }
            }
            Err(e) => Verdict::Unknown(e),
        }
    }

    /// Whether the seller's claimed transaction `tx` carries `auth` (one receipt read); then the
    /// charge, else whatever [`verdict`](Self::verdict) finds by the authorization itself.
    pub(super) async fn confirm(
        &self,
        claimed: Option<&str>,
        network: &str,
        asset: Address,
        auth: &Authorization,
    ) -> Verdict {
        if let (Some(chain), Some(tx)) = (
            self.chains.get(network),
            claimed.and_then(|t| t.parse::<B256>().ok()),
        ) && matches!(chain.carries(tx, asset, auth).await, Ok(true))
        {
            return Verdict::Charged(format!("{tx:#x}"));
        }
        self.verdict(network, asset, auth).await
    }

    /// Release a reservation (an authorization that can no longer move money).
    pub(super) async fn release(&self, key: &str, amount: u64) {
        if let Err(e) = self.store.unreserve(key, amount).await {
            warn!("budget not released: {e}");
        }
    }

    /// One pass over the handed-over authorizations: each one the chain has decided gets its
    /// final line.
    pub(crate) async fn sweep(&self) {
        let due: Vec<(Entry, String)> = self
            .lock()
            .values()
            .filter(|o| o.in_call_until.is_none_or(|t| Instant::now() >= t))
            .map(|o| (o.entry.clone(), o.budget_key.clone()))
            .collect();
        for (e, key) in due {
            let Some((asset, auth)) = authorization_of(&e) else {
                continue;
            };
            match self.verdict(&e.network, asset, &auth).await {
                Verdict::Charged(tx) => {
                    let answered = e.outcome == "unconfirmed";
                    let mut f = final_entry(&e, if answered { "paid" } else { "paid_no_answer" });
                    f.tx = Some(tx.clone());
                    f.late = !answered;
                    if f.late {
                        warn!(call_id = %e.call_id, seller = %e.seller, %tx, amount = %e.amount,
                            "late transfer: seller {} used an authorization after the call had ended without its answer", e.seller);
                    }
                    self.write(f, &key, None).await;
                }
                Verdict::Dead(outcome) => {
                    if e.outcome == "unconfirmed" {
                        warn!(call_id = %e.call_id, seller = %e.seller, claimed_tx = e.claimed_tx.as_deref().unwrap_or(""),
                            "seller {} answered as paid, but its authorization ended {outcome} on chain", e.seller);
                    }
                    self.write(final_entry(&e, outcome), &key, None).await;
                    self.release(&key, e.amount.parse().unwrap_or(0)).await;
                }
                Verdict::Open | Verdict::Unknown(_) => {}
            }
        }
    }
}

/// The watcher as a background service: a sweep every interval until shutdown.
pub(crate) struct WatchService(pub(crate) Arc<Watcher>);

#[async_trait]
impl BackgroundService for WatchService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.0.sweep().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.0.interval) => {}
            }
        }
    }
}

/// A final line for the open entry `e`: the same authorization, now `outcome`.
fn final_entry(e: &Entry, outcome: &str) -> Entry {
    Entry {
        time: rfc3339(now_secs()),
        outcome: outcome.into(),
        ..e.clone()
    }
}

/// The asset and the authorization a ledger line is about (enough to find its fate).
pub(crate) fn authorization_of(e: &Entry) -> Option<(Address, Authorization)> {
    Some((
        e.asset.parse().ok()?,
        Authorization {
            from: e.payer.parse().ok()?,
            to: e.pay_to.parse().ok()?,
            value: e.amount.parse::<U256>().ok()?,
            valid_after: U256::ZERO,
            valid_before: U256::from(e.valid_before?),
            nonce: e.nonce.parse().ok()?,
        },
    ))
}

/// The budget key of a ledger line read back: its wallet, network, asset and the day of the
/// authorization's first line (when its budget was reserved).
fn budget_key_of(e: &Entry, first_time: &HashMap<String, String>) -> Option<String> {
    let payer: Address = e.payer.parse().ok()?;
    let asset: Address = e.asset.parse().ok()?;
    let time = first_time.get(&e.nonce.to_lowercase()).unwrap_or(&e.time);
    Some(budget_key(payer, &e.network, asset, time.get(..10)?))
}

/// The budget's key: per wallet, network, asset and UTC day, so replicas sharing the store
/// share the budget.
pub(super) fn budget_key(payer: Address, network: &str, asset: Address, day: &str) -> String {
    format!("{payer:#x}:{network}:{asset:#x}:{day}")
}

/// The `buyer_paid` journal event for a ledger line.
fn journal_event(e: &Entry) -> Event {
    let ev = Event::new(Kind::BuyerPaid)
        .payer(&e.payer)
        .with("callId", e.call_id.clone())
        .with("owner", e.owner.clone())
        .with("outcome", e.outcome.clone())
        .with("seller", e.seller.clone())
        .with("url", e.url.clone())
        .with("amount", e.amount.clone())
        .with("asset", e.asset.clone())
        .with("network", e.network.clone())
        .with("nonce", e.nonce.clone())
        .with("late", e.late)
        .with("claimedTx", e.claimed_tx.clone())
        .with("remoteRequestId", e.remote_request_id.clone())
        .with("remotePaymentId", e.remote_payment_id.clone());
    match &e.tx {
        Some(t) => ev.tx(t),
        None => ev,
    }
}
