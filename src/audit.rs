//! The audit journal: append-only JSON-lines files, one per UTC day, each record one lifecycle
//! event of a paid request, chained by hash so an edited, inserted or deleted line is found by
//! `x402-sidecar audit verify`. Records of settled payments are flushed to disk before the
//! answer leaves. Files older than the retention window (90 days by default) are pruned.
//!
//! The journal is separate from Redis on purpose: it survives the loss of the store.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::util::{rfc3339, sha256_hex};

/// Hash of "nothing before": the first record of a journal points at it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    pub time: String,
    /// `payment_verified`, `forwarded`, `settled`, `settlement_failed`, `settlement_pending`,
    /// `answered`, `not_charged`, `replayed`, `buyer_paid`, `fallback`, …
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Everything else about the event (amount, asset, network, model, modelCallId, reason, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
    pub prev_hash: String,
    pub hash: String,
}

/// An event about to be written (the journal assigns seq, time and hashes).
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub event: String,
    pub request_id: Option<String>,
    pub payment_id: Option<String>,
    pub tx: Option<String>,
    pub payer: Option<String>,
    pub details: Map<String, Value>,
}

impl Event {
    pub fn new(event: &str) -> Self {
        Event {
            event: event.into(),
            ..Default::default()
        }
    }
    pub fn request(mut self, id: &str) -> Self {
        self.request_id = Some(id.into());
        self
    }
    pub fn payment(mut self, id: &str) -> Self {
        self.payment_id = Some(id.into());
        self
    }
    pub fn tx(mut self, tx: &str) -> Self {
        self.tx = Some(tx.into());
        self
    }
    pub fn payer(mut self, who: &str) -> Self {
        self.payer = Some(who.into());
        self
    }
    pub fn with(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit journal {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("audit journal {file} line {line}: {why}")]
    Broken {
        file: PathBuf,
        line: usize,
        why: String,
    },
}

fn record_hash(r: &Record) -> String {
    let mut copy = r.clone();
    copy.hash = String::new();
    // Canonical: serde_json sorts object keys (no preserve_order), fixed field order for the struct.
    let body = serde_json::to_string(&copy).unwrap_or_default();
    sha256_hex(format!("{}{}", r.prev_hash, body).as_bytes())
}

struct Tail {
    seq: u64,
    hash: String,
    /// Day of the last retention sweep; the first record of a new day sweeps again.
    swept: String,
}

/// The writer. One per process; replicas keep one journal directory each.
pub struct Journal {
    dir: PathBuf,
    retention_days: u64,
    tail: Mutex<Option<Tail>>,
}

impl Journal {
    /// Open (or create) a journal directory.
    pub fn open(dir: impl Into<PathBuf>, retention_days: u64) -> Result<Self, AuditError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::Io(dir.clone(), e))?;
        Ok(Journal {
            dir,
            retention_days,
            tail: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append one event, flushed to disk before returning.
    pub fn append(&self, e: Event, now_secs: u64) -> Result<Record, AuditError> {
        self.write(e, now_secs, true)
    }

    /// Append without waiting for the disk: for an intermediate step of a request whose
    /// final record is appended (and flushed, taking this one along) before it answers.
    pub fn append_unsynced(&self, e: Event, now_secs: u64) -> Result<Record, AuditError> {
        self.write(e, now_secs, false)
    }

    fn write(&self, e: Event, now_secs: u64, sync: bool) -> Result<Record, AuditError> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        if tail.is_none() {
            let (seq, hash) = last_record(&self.dir)?
                .map(|r| (r.seq, r.hash))
                .unwrap_or((0, GENESIS.into()));
            *tail = Some(Tail {
                seq,
                hash,
                swept: String::new(),
            });
        }
        let Some(t) = tail.as_mut() else {
            unreachable!("tail was just set")
        };
        let today = rfc3339(now_secs)[..10].to_string();
        if t.swept != today {
            if let Err(e) = self.prune(now_secs) {
                tracing::warn!("audit retention sweep failed: {e}");
            }
            t.swept = today;
        }
        let mut r = Record {
            seq: t.seq + 1,
            time: rfc3339(now_secs),
            event: e.event,
            request_id: e.request_id,
            payment_id: e.payment_id,
            tx: e.tx,
            payer: e.payer,
            details: e.details,
            prev_hash: t.hash.clone(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        let path = self.dir.join(file_name(now_secs));
        let io = |err| AuditError::Io(path.clone(), err);
        let line = serde_json::to_string(&r)
            .map_err(|err| AuditError::Io(path.clone(), std::io::Error::other(err)))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        if sync {
            f.sync_data().map_err(io)?;
        }
        t.seq = r.seq;
        t.hash = r.hash.clone();
        Ok(r)
    }

    /// Delete day files older than the retention window; returns the names removed.
    pub fn prune(&self, now_secs: u64) -> Result<Vec<String>, AuditError> {
        let cutoff = rfc3339(now_secs.saturating_sub(self.retention_days * 86_400));
        let cutoff_day = &cutoff[..10];
        let mut removed = Vec::new();
        for (day, path) in day_files(&self.dir)? {
            if day.as_str() < cutoff_day {
                std::fs::remove_file(&path).map_err(|e| AuditError::Io(path.clone(), e))?;
                removed.push(day);
            }
        }
        Ok(removed)
    }
}

fn file_name(now_secs: u64) -> String {
    format!("audit-{}.jsonl", &rfc3339(now_secs)[..10])
}

/// `(day, path)` of every journal file, oldest first.
pub fn day_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::Io(dir.to_path_buf(), e)),
    };
    let mut out: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let day = name
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .to_string();
            (day.len() == 10).then_some((day, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<Record>, AuditError> {
    let f = std::fs::File::open(path).map_err(|e| AuditError::Io(path.to_path_buf(), e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| AuditError::Io(path.to_path_buf(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line).map_err(|e| AuditError::Broken {
            file: path.to_path_buf(),
            line: i + 1,
            why: format!("not a journal record: {e}"),
        })?;
        out.push(r);
    }
    Ok(out)
}

fn last_record(dir: &Path) -> Result<Option<Record>, AuditError> {
    for (_, path) in day_files(dir)?.into_iter().rev() {
        if let Some(r) = read_file(&path)?.pop() {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Every record, oldest first.
pub fn read_all(dir: &Path) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    for (_, path) in day_files(dir)? {
        out.extend(read_file(&path)?);
    }
    Ok(out)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    pub files: usize,
}

/// Walk the chain across all files. The first file may start after pruned ones: its first
/// record's `prevHash` is taken as given; everything after must link up.
pub fn verify(dir: &Path) -> Result<Verified, AuditError> {
    let files = day_files(dir)?;
    let mut prev: Option<(String, u64)> = None;
    let mut records = 0;
    for (_, path) in &files {
        let f = std::fs::File::open(path).map_err(|e| AuditError::Io(path.clone(), e))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| AuditError::Io(path.clone(), e))?;
            if line.trim().is_empty() {
                continue;
            }
            let broken = |why: String| AuditError::Broken {
                file: path.clone(),
                line: i + 1,
                why,
            };
            let r: Record = serde_json::from_str(&line)
                .map_err(|e| broken(format!("not a journal record: {e}")))?;
            if record_hash(&r) != r.hash {
                return Err(broken(format!(
                    "record {} was altered: its hash does not match its content",
                    r.seq
                )));
            }
            if let Some((h, seq)) = &prev {
                if &r.prev_hash != h {
                    return Err(broken(format!(
                        "record {} does not follow record {seq}: a record before it was removed or replaced",
                        r.seq
                    )));
                }
                if r.seq != seq + 1 {
                    return Err(broken(format!(
                        "record {} follows record {seq}: {} record(s) missing",
                        r.seq,
                        r.seq.saturating_sub(seq + 1)
                    )));
                }
            }
            prev = Some((r.hash.clone(), r.seq));
            records += 1;
        }
    }
    Ok(Verified {
        records,
        files: files.len(),
    })
}

/// Records about one request id, payment id or tx hash — and everything sharing their
/// request or payment id, so the whole life of a paid request comes back.
pub fn show(dir: &Path, id: &str) -> Result<Vec<Record>, AuditError> {
    let all = read_all(dir)?;
    let id_l = id.to_ascii_lowercase();
    let mut requests = std::collections::BTreeSet::new();
    let mut payments = std::collections::BTreeSet::new();
    for r in &all {
        let hit = r.request_id.as_deref() == Some(id)
            || r.payment_id.as_deref() == Some(id)
            || r.tx.as_deref().map(str::to_ascii_lowercase) == Some(id_l.clone());
        if hit {
            requests.extend(r.request_id.clone());
            payments.extend(r.payment_id.clone());
        }
    }
    Ok(all
        .into_iter()
        .filter(|r| {
            r.request_id.as_ref().is_some_and(|x| requests.contains(x))
                || r.payment_id.as_ref().is_some_and(|x| payments.contains(x))
        })
        .collect())
}

/// CSV for accounting: one row per record, the main fields plus the details as JSON.
pub fn to_csv(records: &[Record]) -> String {
    let esc = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out =
        String::from("seq,time,event,requestId,paymentId,tx,payer,amount,asset,network,details\n");
    for r in records {
        let d = |k: &str| {
            r.details
                .get(k)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_default()
        };
        out += &[
            r.seq.to_string(),
            r.time.clone(),
            r.event.clone(),
            r.request_id.clone().unwrap_or_default(),
            r.payment_id.clone().unwrap_or_default(),
            r.tx.clone().unwrap_or_default(),
            r.payer.clone().unwrap_or_default(),
            d("amount"),
            d("asset"),
            d("network"),
            serde_json::to_string(&r.details).unwrap_or_default(),
        ]
        .iter()
        .map(|f| esc(f))
        .collect::<Vec<_>>()
        .join(",");
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T0: u64 = 1_790_000_000;

    fn journal(dir: &Path) -> Journal {
        Journal::open(dir, 90).unwrap()
    }

    fn fill(j: &Journal) {
        j.append(
            Event::new("payment_verified")
                .request("req_1")
                .payment("pay_1")
                .payer("0xP"),
            T0,
        )
        .unwrap();
        j.append(
            Event::new("forwarded").request("req_1").payment("pay_1"),
            T0 + 1,
        )
        .unwrap();
        j.append(
            Event::new("settled")
                .request("req_1")
                .payment("pay_1")
                .tx("0xABC")
                .with("amount", "10000"),
            T0 + DAY,
        )
        .unwrap();
        j.append(
            Event::new("answered").request("req_1").payment("pay_1"),
            T0 + DAY,
        )
        .unwrap();
        j.append(
            Event::new("payment_verified")
                .request("req_2")
                .payment("pay_2"),
            T0 + DAY,
        )
        .unwrap();
    }

    #[test]
    fn a_chain_over_several_files_verifies_and_continues_after_reopening() {
        let d = tempfile::tempdir().unwrap();
        fill(&journal(d.path()));
        // A new process continues the same chain.
        journal(d.path())
            .append(Event::new("answered").request("req_2"), T0 + DAY)
            .unwrap();
        assert_eq!(
            verify(d.path()).unwrap(),
            Verified {
                records: 6,
                files: 2
            }
        );
    }

    #[test]
    fn an_edited_line_is_detected() {
        let d = tempfile::tempdir().unwrap();
        fill(&journal(d.path()));
        let (_, path) = day_files(d.path()).unwrap().pop().unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"10000\"", "\"1\"");
        std::fs::write(&path, text).unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("altered"), "{e}");
    }

    #[test]
    fn a_deleted_line_is_detected() {
        let d = tempfile::tempdir().unwrap();
        fill(&journal(d.path()));
        let (_, path) = day_files(d.path()).unwrap().pop().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l)
            .collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("removed"), "{e}");
    }

    #[test]
    fn show_returns_the_whole_life_from_any_id() {
        let d = tempfile::tempdir().unwrap();
        fill(&journal(d.path()));
        for id in ["req_1", "pay_1", "0xabc"] {
            let events: Vec<String> = show(d.path(), id)
                .unwrap()
                .into_iter()
                .map(|r| r.event)
                .collect();
            assert_eq!(
                events,
                ["payment_verified", "forwarded", "settled", "answered"],
                "{id}"
            );
        }
        assert!(
            to_csv(&read_all(d.path()).unwrap())
                .lines()
                .nth(3)
                .unwrap()
                .contains("\"10000\"")
        );
    }

    #[test]
    fn retention_prunes_old_days_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        let days = |d: &Path| -> Vec<String> {
            day_files(d)
                .unwrap()
                .into_iter()
                .map(|(day, _)| day)
                .collect()
        };
        for day in [0, 10, 95] {
            j.append(Event::new("answered"), T0 + day * DAY).unwrap();
        }
        // The first record of day 95 swept the window (days 5..=95): day 0 is gone, 10 stays.
        assert_eq!(
            days(d.path()),
            [&rfc3339(T0 + 10 * DAY)[..10], &rfc3339(T0 + 95 * DAY)[..10]]
        );
        // An explicit sweep on day 101 (window 11..=101) removes day 10 and keeps day 95.
        let removed = j.prune(T0 + 101 * DAY).unwrap();
        assert_eq!(removed, [rfc3339(T0 + 10 * DAY)[..10].to_string()]);
        assert_eq!(days(d.path()), [&rfc3339(T0 + 95 * DAY)[..10]]);
        // The pruned head does not break verification of what is left.
        assert_eq!(verify(d.path()).unwrap().records, 1);
    }
}
