//! The spill: records the journal could not write (a full disk, a file-size limit, an I/O
//! error), kept in queue order with their original time until the journal can be written
//! again, then written to it ahead of anything newer and cleared.
//!
//! The spill lives in the writer's memory and, when `audit.spill_dir` is set, in
//! `spill.jsonl` there, fsync'd before the waiter hears of the failure: a spill directory on
//! another disk survives a restart, and the next writer of the journal writes what it holds
//! first. Each spilled record carries a `spillId`, also written into its journal record, so a
//! crash between writing the journal and clearing the spill file never journals it twice.
//!
//! `audit verify` reads the spill file: records spilled and not yet journaled are a gap.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::anchor::{Body, BodyLine};
use super::read::{day_files, read_file};
use super::{AuditError, Event, Kind};
use crate::util::{new_id, rfc3339};

/// The spill file's name in `audit.spill_dir`.
pub const SPILL_FILE: &str = "spill.jsonl";

/// Past this many spilled records, records that document no money (a refused or uncharged
/// call's steps) are dropped rather than kept: buyers retrying against a full disk must not
/// grow the spill without bound. Records of money that moved are always kept.
const SOFT_CAP: usize = 10_000;

/// One record waiting in the spill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spilled {
    /// Unique across spills and processes; written into the journal record's details.
    pub spill_id: String,
    /// When the event happened (the journal record gets this time).
    pub secs: u64,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
    /// The bodies to keep with the record (their `seq` is set when it is journaled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bodies: Vec<BodyLine>,
    /// Why the journal could not take it.
    pub why: String,
}

impl Spilled {
    fn new(e: Event, secs: u64, why: &str) -> Spilled {
        Spilled {
            spill_id: new_id("spill"),
            secs,
            event: e.kind.name().to_string(),
            request_id: e.request_id,
            payment_id: e.payment_id,
            tx: e.tx,
            payer: e.payer,
            details: e.details,
            bodies: e.bodies.iter().map(|b| BodyLine::new(0, b)).collect(),
            why: why.to_string(),
        }
    }

    /// The event to journal now: the original one, marked with its spill id and the time it
    /// reached the journal. `None` for a kind this build does not know.
    pub(super) fn event(&self, now_secs: u64) -> Option<Event> {
        let kind = Kind::from_name(&self.event)?;
        let mut details = self.details.clone();
        details.insert("spillId".into(), self.spill_id.clone().into());
        details.insert("journaledAt".into(), rfc3339(now_secs).into());
        Some(Event {
            kind,
            request_id: self.request_id.clone(),
            payment_id: self.payment_id.clone(),
            tx: self.tx.clone(),
            payer: self.payer.clone(),
            details,
            bodies: self
                .bodies
                .iter()
                .filter_map(|b| {
                    Some(Body {
                        role: b.role.clone(),
                        bytes: b.bytes()?.into(),
                    })
                })
                .collect(),
        })
    }

    /// One line for `audit verify`.
    pub fn describe(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        format!(
            "spilled, not yet in the journal: {} at {} (request {}, payment {}, tx {}): {}",
            self.event,
            rfc3339(self.secs),
            opt(&self.request_id),
            opt(&self.payment_id),
            opt(&self.tx),
            self.why
        )
    }
}

/// What the spill has seen, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct SpillCounters {
    pending: AtomicU64,
    spilled: AtomicU64,
    journaled: AtomicU64,
    dropped: AtomicU64,
}

/// A snapshot of [`SpillCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillStats {
    /// Records in the spill now, not yet in the journal.
    pub pending: u64,
    /// Records spilled since the journal was opened (including those loaded from the file).
    pub spilled: u64,
    /// Spilled records written to the journal since.
    pub journaled: u64,
    /// Records about no money dropped because the spill was past its cap.
    pub dropped: u64,
}

impl SpillCounters {
    pub(super) fn snapshot(&self) -> SpillStats {
        SpillStats {
            pending: self.pending.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            journaled: self.journaled.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The spill file, locked for as long as the journal is open.
struct SpillFile {
    path: PathBuf,
    file: std::fs::File,
    /// The file holds exactly the spill's entries (an append failed: rewrite it next time).
    in_sync: bool,
}

/// The writer's spill.
pub(super) struct Spill {
    pub(super) entries: VecDeque<Spilled>,
    file: Option<SpillFile>,
    pub(super) counters: Arc<SpillCounters>,
}

impl Spill {
    /// A spill in memory only.
    pub(super) fn memory() -> Spill {
        Spill {
            entries: VecDeque::new(),
            file: None,
            counters: Arc::default(),
        }
    }

    /// Open (or create) `spill_dir/spill.jsonl`, lock it, and load what a previous writer
    /// left there, minus what already reached `journal_dir`.
    pub(super) fn open(spill_dir: &Path, journal_dir: &Path) -> Result<Spill, AuditError> {
        std::fs::create_dir_all(spill_dir).map_err(|e| AuditError::Io(spill_dir.into(), e))?;
        let path = spill_dir.join(SPILL_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::Io(path.clone(), e))?;
        lock(&file, &path, spill_dir)?;
        let mut entries: VecDeque<Spilled> = read_spill(&path)?.into();
        let before = entries.len();
        if before > 0 {
            let done = journaled_ids(journal_dir, entries.iter().map(|s| s.secs).min())?;
            entries.retain(|s| {
                let known = Kind::from_name(&s.event).is_some();
                if !known {
                    tracing::error!(event = %s.event, "audit spill: a record of an unknown kind was dropped");
                }
                known && !done.contains(&s.spill_id)
            });
        }
        let mut spill = Spill {
            entries,
            file: Some(SpillFile {
                path,
                file,
                in_sync: true,
            }),
            counters: Arc::default(),
        };
        let n = spill.entries.len() as u64;
        spill.counters.spilled.store(n, Ordering::Relaxed);
        spill.counters.pending.store(n, Ordering::Relaxed);
        if spill.entries.len() != before {
            // Some were journaled before the file was cleared: the file gets the rest only.
            spill.mark_out_of_sync();
            spill.persist(&[]);
        }
        if n > 0 {
            tracing::warn!(
                records = n,
                "audit journal: records spilled by an earlier run are waiting to be written"
            );
        }
        Ok(spill)
    }

    /// Whether the spill is kept in a file too.
    pub(super) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keep `e` (the journal failed with `why`); returns whether it was kept.
    pub(super) fn push(&mut self, e: Event, secs: u64, why: &str) -> bool {
        if self.entries.len() >= SOFT_CAP && !e.kind.documents_money() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(event = %e.kind, "audit journal: spill past its cap, a record about no money was dropped");
            return false;
        }
        let s = Spilled::new(e, secs, why);
        self.entries.push_back(s);
        self.counters.spilled.fetch_add(1, Ordering::Relaxed);
        self.counters
            .pending
            .store(self.entries.len() as u64, Ordering::Relaxed);
        true
    }

    /// Make the last `added` entries durable in the spill file (if there is one): appended,
    /// or the whole file rewritten if an earlier append failed.
    pub(super) fn persist_last(&mut self, added: usize) {
        let from = self.entries.len().saturating_sub(added);
        let tail: Vec<Spilled> = self.entries.iter().skip(from).cloned().collect();
        self.persist(&tail);
    }

    fn mark_out_of_sync(&mut self) {
        if let Some(f) = self.file.as_mut() {
            f.in_sync = false;
        }
    }

    fn persist(&mut self, added: &[Spilled]) {
        if self.file.is_none() {
            return;
        }
        let all: Vec<Spilled> = self.entries.iter().cloned().collect();
        let Some(f) = self.file.as_mut() else { return };
        let (lines, rewrite) = if f.in_sync {
            (added, false)
        } else {
            (all.as_slice(), true)
        };
        let mut buf = Vec::new();
        for s in lines {
            if serde_json::to_writer(&mut buf, s).is_ok() {
                buf.push(b'\n');
            }
        }
        let written = (|| {
            if rewrite {
                f.file.set_len(0)?;
            }
            f.file.write_all(&buf)?;
            f.file.sync_data()
        })();
        match written {
            Ok(()) => f.in_sync = true,
            Err(e) => {
                f.in_sync = false;
                tracing::error!(path = %f.path.display(), "audit spill file not written ({e}): the spilled records are kept in memory only");
            }
        }
    }

    /// The first `n` entries reached the journal: drop them, here and in the file.
    pub(super) fn journaled(&mut self, n: usize) {
        let n = n.min(self.entries.len());
        if n == 0 {
            return;
        }
        self.entries.drain(..n);
        self.counters
            .journaled
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters
            .pending
            .store(self.entries.len() as u64, Ordering::Relaxed);
        self.mark_out_of_sync();
        self.persist(&[]);
    }
}

/// flock the spill file: one journal per spill directory.
fn lock(f: &std::fs::File, path: &Path, dir: &Path) -> Result<(), AuditError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor the caller owns; released when the file is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            AuditError::Busy(dir.to_path_buf())
        } else {
            AuditError::Io(path.to_path_buf(), e)
        });
    }
    Ok(())
}

/// Every record in a spill file, oldest first (a torn last line, from a crash during its
/// write, is skipped: its waiter never heard it was kept).
pub fn read_spill(path: &Path) -> Result<Vec<Spilled>, AuditError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::Io(path.to_path_buf(), e)),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| AuditError::Io(path.to_path_buf(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Spilled>(&line) {
            Ok(s) => out.push(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), "audit spill: a torn line was skipped: {e}")
            }
        }
    }
    Ok(out)
}

/// The spill ids already in the journal, from the day of `since` on.
pub(super) fn journaled_ids(
    journal_dir: &Path,
    since: Option<u64>,
) -> Result<HashSet<String>, AuditError> {
    let mut out = HashSet::new();
    let Some(since) = since else {
        return Ok(out);
    };
    let first_day = rfc3339(since)[..10].to_string();
    for (day, path) in day_files(journal_dir)? {
        if day < first_day {
            continue;
        }
        for r in read_file(&path)? {
            if let Some(id) = r.details.get("spillId").and_then(Value::as_str) {
                out.insert(id.to_string());
            }
        }
    }
    Ok(out)
}
