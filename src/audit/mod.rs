//! The audit journal: append-only JSON-lines files, one per UTC day, each record one lifecycle
//! event of a paid request, chained by hash across the day files (a day's first record points
//! at the previous day's last), and anchored at both ends by a head file, so an edited,
//! inserted, deleted or moved line, cut-off last records and a deleted day file are found by
//! `x402-sidecar audit verify`. The request body and the delivered answer of a paid call are
//! kept beside the day files, their sha256 in the records. Records of settled payments are
//! flushed to disk before the answer leaves. Files older than the retention window (90 days by
//! default) are pruned.
//!
//! The journal is separate from Redis on purpose: it survives the loss of the store.
//!
//! - [`event`]: what a record says ([`Kind`], [`Event`], [`Record`]);
//! - [`writer`]: the group-commit writer thread (one fsync for everything queued at once);
//! - [`read`]: reading the files back — verify the chain and the gaps, show a request's life,
//!   export;
//! - [`anchor`]: the head file and the bodies files;
//! - [`spill`]: records the journal could not write (a full disk), kept until it can;
//! - here: the [`Journal`] handle and its directory lock.

mod anchor;
mod config;
mod event;
mod read;
mod spill;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::util::sha256_hex;

pub use anchor::{Body, BodyLine, HEAD_FILE, Head, read_bodies, read_head};
pub use config::{AuditConfig, JournalSpec};
pub use event::{Durability, Event, Kind, Record};
pub use read::{
    Gap, OPEN_GRACE_SECS, Verified, bodies_of, check, day_files, gaps, read_all, show, to_csv,
    verify,
};
pub use spill::{SPILL_FILE, SpillStats, Spilled, read_spill};

use spill::{Spill, SpillCounters};
use writer::{Ack, Msg, Writer};

/// Hash of "nothing before": the first record of a journal points at it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
    #[error("audit journal: the writer has stopped; the record was not written")]
    Stopped,
    /// The record is not in the journal yet: it waits in the spill (with `records` in all)
    /// and is written once the journal can be written again.
    #[error(
        "audit journal: the record could not be written ({why}); it is kept in the spill ({records} record(s) waiting) and written once the journal can be written again"
    )]
    Spilled { records: u64, why: String },
    #[error(
        "audit journal {0} is being written by another process: two writers would break its hash chain; give each sidecar its own audit.dir"
    )]
    Busy(PathBuf),
    /// `verify` found these problems (one sentence each).
    #[error("audit journal: {}", .0.join("; "))]
    Tampered(Vec<String>),
}

impl AuditError {
    /// The same error for another waiter of the batch (`std::io::Error` is not `Clone`).
    fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Io(path, e) => {
                AuditError::Io(path.clone(), std::io::Error::new(e.kind(), e.to_string()))
            }
            AuditError::Broken { file, line, why } => AuditError::Broken {
                file: file.clone(),
                line: *line,
                why: why.clone(),
            },
            AuditError::Stopped => AuditError::Stopped,
            AuditError::Busy(dir) => AuditError::Busy(dir.clone()),
            AuditError::Tampered(p) => AuditError::Tampered(p.clone()),
            AuditError::Spilled { records, why } => AuditError::Spilled {
                records: *records,
                why: why.clone(),
            },
        }
    }
}

fn record_hash(r: &Record) -> String {
    let mut copy = r.clone();
    copy.hash = String::new();
    // Canonical: serde_json sorts object keys (no preserve_order), fixed field order for the struct.
    let body = serde_json::to_string(&copy).unwrap_or_default();
    sha256_hex(format!("{}{}", r.prev_hash, body).as_bytes())
}

/// The writer. One per process; replicas keep one journal directory each.
///
/// Appends are queued to one writer thread that owns the open day file and the chain tail. It
/// takes everything queued at once, writes it, fsyncs once for the whole batch if any record in
/// it is waited for, and then answers every waiter of the batch: concurrent requests share
/// fsyncs, and sequence numbers and hashes follow the queue order.
pub struct Journal {
    dir: PathBuf,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
    spill: Arc<SpillCounters>,
    /// `.lock` in the directory, held (flock) for as long as this journal is open.
    _lock: std::fs::File,
}

/// Take the directory's writer lock, or say who holds it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, AuditError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::Io(path.clone(), e))?;
    // SAFETY: flock(2) on a descriptor this function owns; released when the file is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            AuditError::Busy(dir.to_path_buf())
        } else {
            AuditError::Io(path, e)
        });
    }
    Ok(f)
}

impl Journal {
    /// Open (or create) a journal directory and start its writer thread, with a spill in
    /// memory only. The chain tail is read from the files by the first append.
    pub fn open(dir: impl Into<PathBuf>, retention_days: u64) -> Result<Self, AuditError> {
        Self::open_with_spill(dir, retention_days, None)
    }

    /// [`Journal::open`] with the spill kept in `spill_dir` too (another disk: it survives
    /// a restart). What an earlier writer left in it is written first.
    pub fn open_with_spill(
        dir: impl Into<PathBuf>,
        retention_days: u64,
        spill_dir: Option<&Path>,
    ) -> Result<Self, AuditError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::Io(dir.clone(), e))?;
        let lock = lock_dir(&dir)?;
        let spill = match spill_dir {
            Some(s) => Spill::open(s, &dir)?,
            None => Spill::memory(),
        };
        let counters = spill.counters.clone();
        let (tx, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            dir: dir.clone(),
            retention_days,
            tail: None,
            rollback: None,
            file: None,
            spill,
            spill_failed_at: None,
            sync_error: None,
            syncs: syncs.clone(),
            head: None,
        };
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                AuditError::Io(
                    dir.clone(),
                    std::io::Error::other(format!("cannot start the writer thread: {e}")),
                )
            })?;
        Ok(Journal {
            dir,
            tx: Some(tx),
            writer: Some(handle),
            syncs,
            spill: counters,
            _lock: lock,
        })
    }

    /// What the spill holds and has seen (for `/metrics`).
    pub fn spill_stats(&self) -> SpillStats {
        self.spill.snapshot()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, m: Msg) -> Result<(), AuditError> {
        let tx = self.tx.as_ref().ok_or(AuditError::Stopped)?;
        tx.send(m).map_err(|_| AuditError::Stopped)
    }

    /// Append one event; the returned future resolves once the record is on disk (fsync'd
    /// together with whatever else was queued meanwhile). The record is queued by this call,
    /// before the future is first polled, so queue order is call order.
    pub fn append(
        &self,
        e: Event,
        now_secs: u64,
    ) -> impl Future<Output = Result<Record, AuditError>> + Send + use<> {
        let (tx, rx) = oneshot::channel();
        let queued = self.send(Msg::Append {
            event: e,
            now_secs,
            ack: Some(Ack::Async(tx)),
        });
        async move {
            queued?;
            rx.await.map_err(|_| AuditError::Stopped)?
        }
    }

    /// Write `e` as its kind requires ([`Kind::durability`]): queued behind the next durable
    /// record, or on disk before this resolves. A record that cannot be written is kept in the
    /// spill ([`AuditError::Spilled`]) and written later, in order.
    pub async fn record(&self, e: Event, now_secs: u64) -> Result<(), AuditError> {
        match e.kind.durability() {
            Durability::WithNext => self.append_unsynced(e, now_secs),
            Durability::Now => self.append(e, now_secs).await.map(drop),
        }
    }

    /// [`Journal::append`] for code outside an async runtime: blocks the calling thread until
    /// the record is on disk.
    pub fn append_blocking(&self, e: Event, now_secs: u64) -> Result<Record, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Append {
            event: e,
            now_secs,
            ack: Some(Ack::Blocking(tx)),
        })?;
        rx.recv().map_err(|_| AuditError::Stopped)?
    }

    /// Queue an event without waiting for the disk: for an intermediate step of a request whose
    /// final record is appended (and waited for) before it answers. Records are written in
    /// queue order, so this one is on disk before any later durable append is acknowledged.
    /// Errors only if the writer has stopped; a record that cannot be written goes to the spill.
    pub fn append_unsynced(&self, e: Event, now_secs: u64) -> Result<(), AuditError> {
        self.send(Msg::Append {
            event: e,
            now_secs,
            ack: None,
        })
    }

    /// Block until everything queued so far is written and fsync'd. Fails if the fsync does,
    /// or if records are waiting in the spill (they are written once the journal can be).
    pub fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Flush(tx))?;
        rx.recv().map_err(|_| AuditError::Stopped)?
    }

    /// Flush, then stop the writer thread. Dropping the journal also stops it after writing
    /// and fsyncing what is queued, but without reporting errors.
    pub fn close(self) -> Result<(), AuditError> {
        self.flush()
        // `drop(self)` joins the writer.
    }

    /// How many fsyncs the writer has done (each covers one batch of appends).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Delete day files older than the retention window; returns the names removed.
    pub fn prune(&self, now_secs: u64) -> Result<Vec<String>, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Prune(now_secs, tx))?;
        rx.recv().map_err(|_| AuditError::Stopped)?
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written what is still queued.
        self.tx = None;
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("audit journal writer thread panicked");
        }
    }
}
