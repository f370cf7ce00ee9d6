//! The buyer's ledger: one JSON line per paid call, appended and flushed before the answer
//! goes back to roma-01. `x402-sidecar ledger` lists it and sums spend per day and seller.

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
    /// `paid`, `paid_no_delivery` (charged, answer refused) or `paid_no_answer` (charged, answer lost).
    pub outcome: String,
    pub amount: String,
    pub asset: String,
    pub network: String,
    pub payer: String,
    pub pay_to: String,
    pub nonce: String,
    #[serde(default)]
    pub tx: Option<String>,
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

/// Spend per (day, seller, asset), in atomic units, with the number of calls.
pub(crate) fn totals(entries: &[Entry]) -> BTreeMap<(String, String, String), (u128, usize)> {
    let mut t = BTreeMap::new();
    for e in entries {
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
            nonce: "0xN".into(),
            tx: Some("0x1".into()),
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
}
