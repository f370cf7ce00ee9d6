//! The buyer's ledger: JSON lines, appended and flushed to disk. Every signed authorization gets
//! a `pending` line before it leaves, then its truth as the chain tells it: `paid` (the seller's
//! answer arrived and the chain shows the transfer), `unconfirmed` (an answer arrived, the chain
//! does not show the transfer yet), `paid_no_answer` / `paid_no_delivery` (the chain shows the
//! transfer, the answer was lost / refused), `cancelled` or `unused` (it can no longer move
//! money). The last line of a nonce is its state ([`finals`]); `x402-sidecar ledger` lists the
//! states and sums what was charged per day and seller, `ledger verify` checks them on chain.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One paid call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub time: String,
    pub call_id: String,
    pub seller: String,
    pub url: String,
    /// `pending`, `unconfirmed`, `paid`, `paid_no_delivery` (charged, answer refused),
    /// `paid_no_answer` (charged, answer lost), `cancelled` or `unused`.
    pub outcome: String,
    pub amount: String,
    pub asset: String,
    pub network: String,
    pub payer: String,
    pub pay_to: String,
    pub nonce: String,
    /// The authorization's `validBefore` (unix seconds): until then it may still move money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_before: Option<u64>,
    /// The transaction the chain shows for this authorization (never a seller's word).
    #[serde(default)]
    pub tx: Option<String>,
    /// The transaction the seller's receipt named, when the chain did not confirm it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_tx: Option<String>,
    /// The authorization's transfer was seen only after the call had ended without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    #[serde(default)]
    pub remote_request_id: Option<String>,
    #[serde(default)]
    pub remote_payment_id: Option<String>,
    #[serde(default)]
    pub disclaimer: Option<String>,
    pub latency_ms: u64,
    /// roma-01's account owner, as `outbound.owners.log` writes it (absent with `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("ledger {0} line {1}: {2}")]
    Parse(PathBuf, usize, String),
}

/// Appends to one file; the lock keeps lines whole.
pub(crate) struct Ledger {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Ledger {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Ledger {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// The ledger file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry and flush it to disk.
    pub(crate) fn append(&self, e: &Entry) -> Result<(), LedgerError> {
        let io = |err| LedgerError::Io(self.path.clone(), err);
        let line = serde_json::to_string(e)
            .map_err(|err| LedgerError::Parse(self.path.clone(), 0, err.to_string()))?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

/// Read every entry of a ledger file.
pub fn read(path: &Path) -> Result<Vec<Entry>, LedgerError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LedgerError::Io(path.to_path_buf(), e)),
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| LedgerError::Io(path.to_path_buf(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| LedgerError::Parse(path.to_path_buf(), i + 1, e.to_string()))?,
        );
    }
    Ok(out)
}

/// Outcomes whose money moved (the chain showed the transfer).
pub const CHARGED: [&str; 3] = ["paid", "paid_no_answer", "paid_no_delivery"];

/// Outcomes still open: the authorization may yet move money, the watcher follows it.
pub const OPEN: [&str; 2] = ["pending", "unconfirmed"];

impl Entry {
    /// The chain showed this entry's transfer.
    pub fn charged(&self) -> bool {
        CHARGED.contains(&self.outcome.as_str())
    }

    /// The entry's authorization is not settled yet.
    pub fn open(&self) -> bool {
        OPEN.contains(&self.outcome.as_str())
    }
}

/// The state of every authorization: the last line written for each (payer, nonce), in the
/// order the authorizations were first written.
pub fn finals(entries: &[Entry]) -> Vec<Entry> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut last: std::collections::HashMap<(String, String), &Entry> =
        std::collections::HashMap::new();
    for e in entries {
        let k = (e.payer.to_lowercase(), e.nonce.to_lowercase());
        if last.insert(k.clone(), e).is_none() {
            order.push(k);
        }
    }
    order
        .iter()
        .filter_map(|k| last.get(k).map(|e| (*e).clone()))
        .collect()
}

/// Spend per (day, seller, asset), in atomic units, with the number of calls: what was
/// charged, by each authorization's final state.
pub(crate) fn totals(entries: &[Entry]) -> BTreeMap<(String, String, String), (u128, usize)> {
    let mut t = BTreeMap::new();
    for e in finals(entries).iter().filter(|e| e.charged()) {
        let day = e.time.get(..10).unwrap_or("?").to_string();
        let amount: u128 = e.amount.parse().unwrap_or(0);
        let slot = t
            .entry((day, e.seller.clone(), e.asset.clone()))
            .or_insert((0u128, 0usize));
        slot.0 += amount;
        slot.1 += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seller: &str, time: &str, amount: &str) -> Entry {
        Entry {
            time: time.into(),
            call_id: "call_1".into(),
            seller: seller.into(),
            url: "http://x/x402".into(),
            outcome: "paid".into(),
            amount: amount.into(),
            asset: "0xA".into(),
            network: "eip155:84532".into(),
            payer: "0xP".into(),
            pay_to: "0xT".into(),
            nonce: format!("0x{time}"),
            valid_before: None,
            tx: Some("0x1".into()),
            claimed_tx: None,
            late: false,
            remote_request_id: None,
            remote_payment_id: None,
            disclaimer: None,
            latency_ms: 12,
            owner: None,
        }
    }

    #[test]
    fn appends_reads_back_and_sums_per_day_and_seller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let l = Ledger::new(&path);
        l.append(&entry("a", "2026-11-24T10:00:00Z", "10000"))
            .unwrap();
        l.append(&entry("a", "2026-11-24T11:00:00Z", "10000"))
            .unwrap();
        l.append(&entry("b", "2026-11-25T09:00:00Z", "5000"))
            .unwrap();
        let all = read(&path).unwrap();
        assert_eq!(all.len(), 3);
        let t = totals(&all);
        assert_eq!(
            t[&("2026-11-24".into(), "a".into(), "0xA".into())],
            (20_000, 2)
        );
        assert_eq!(
            t[&("2026-11-25".into(), "b".into(), "0xA".into())],
            (5_000, 1)
        );
    }

    #[test]
    fn the_last_line_of_a_nonce_is_its_state_and_only_charged_states_are_spend() {
        let mut pending = entry("a", "2026-11-24T10:00:00Z", "10000");
        pending.outcome = "pending".into();
        pending.tx = None;
        let mut paid = pending.clone();
        paid.outcome = "paid".into();
        let mut other = entry("a", "2026-11-24T11:00:00Z", "10000");
        other.outcome = "pending".into();
        let mut unused = other.clone();
        unused.outcome = "unused".into();
        let all = [pending, other, paid, unused];
        let f = finals(&all);
        assert_eq!(
            f.iter().map(|e| e.outcome.as_str()).collect::<Vec<_>>(),
            ["paid", "unused"]
        );
        let t = totals(&all);
        assert_eq!(
            t[&("2026-11-24".into(), "a".into(), "0xA".into())],
            (10_000, 1)
        );
    }
}
