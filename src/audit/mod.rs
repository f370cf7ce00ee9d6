//! The audit journal: append-only JSON-lines files, one per UTC day, each record one lifecycle
//! event of a paid request, chained by hash so an edited, inserted or deleted line is found by
//! `x402-sidecar audit verify`. Records of settled payments are flushed to disk before the
//! answer leaves. Files older than the retention window (90 days by default) are pruned.
//!
//! The journal is separate from Redis on purpose: it survives the loss of the store.

mod config;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::util::{rfc3339, sha256_hex};

pub use config::{AuditConfig, JournalSpec};

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

/// Every lifecycle event the sidecar journals. Its [`name`](Kind::name) is the record's
/// `event` field; its [`durability`](Kind::durability) says when it must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Seller: the payment passed every check and is claimed.
    PaymentVerified,
    /// Seller: the chain (or the remote facilitator) refused the payment.
    PaymentRefused,
    /// Seller: the request went to the upstream.
    Forwarded,
    /// Seller: the settlement transaction is mined and moved the money.
    Settled,
    /// Seller: the settlement failed for sure; the answer was withheld.
    SettlementFailed,
    /// Seller: the settlement's outcome is not known yet; the answer is kept for a retry.
    SettlementPending,
    /// Seller: the paid answer left.
    Answered,
    /// Seller: the upstream failed or the buyer hung up; nothing was settled.
    NotCharged,
    /// Seller: a settled payment sent again got its stored answer.
    Replayed,
    /// Buyer: a seller was paid (or the chain says it was).
    BuyerPaid,
    /// Buyer: the answer came from the local fallback.
    Fallback,
    /// Facilitator service: a settlement it submitted is mined.
    FacilitatorSettled,
    /// Facilitator service: a settlement it submitted failed.
    FacilitatorSettleFailed,
    /// Facilitator service: a settlement's outcome is not known yet.
    FacilitatorSettlePending,
}

/// When a record has to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Queued: it reaches the disk with the next durable record, which the answer waits for
    /// (the seller's `answered`), so one fsync serves a whole paid call.
    WithNext,
    /// On disk before the caller goes on (before an answer leaves).
    Now,
}

impl Kind {
    /// Every kind, for tests and documentation.
    pub const ALL: [Kind; 14] = [
        Kind::PaymentVerified,
        Kind::PaymentRefused,
        Kind::Forwarded,
        Kind::Settled,
        Kind::SettlementFailed,
        Kind::SettlementPending,
        Kind::Answered,
        Kind::NotCharged,
        Kind::Replayed,
        Kind::BuyerPaid,
        Kind::Fallback,
        Kind::FacilitatorSettled,
        Kind::FacilitatorSettleFailed,
        Kind::FacilitatorSettlePending,
    ];

    /// The record's `event` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PaymentVerified => "payment_verified",
            Kind::PaymentRefused => "payment_refused",
            Kind::Forwarded => "forwarded",
            Kind::Settled => "settled",
            Kind::SettlementFailed => "settlement_failed",
            Kind::SettlementPending => "settlement_pending",
            Kind::Answered => "answered",
            Kind::NotCharged => "not_charged",
            Kind::Replayed => "replayed",
            Kind::BuyerPaid => "buyer_paid",
            Kind::Fallback => "fallback",
            Kind::FacilitatorSettled => "facilitator_settled",
            Kind::FacilitatorSettleFailed => "facilitator_settle_failed",
            Kind::FacilitatorSettlePending => "facilitator_settle_pending",
        }
    }

    /// `payment_verified`, `forwarded` and `settled` ride with the seller's durable `answered`
    /// (or `not_charged`, `settlement_*`) record of the same call; everything else is written
    /// through before the caller goes on.
    pub fn durability(self) -> Durability {
        match self {
            Kind::PaymentVerified | Kind::Forwarded | Kind::Settled => Durability::WithNext,
            _ => Durability::Now,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An event about to be written (the journal assigns seq, time and hashes).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub request_id: Option<String>,
    pub payment_id: Option<String>,
    pub tx: Option<String>,
    pub payer: Option<String>,
    pub details: Map<String, Value>,
}

impl Event {
    pub fn new(kind: Kind) -> Self {
        Event {
            kind,
            request_id: None,
            payment_id: None,
            tx: None,
            payer: None,
            details: Map::new(),
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
    #[error("audit journal: the writer has stopped; the record was not written")]
    Stopped,
    #[error("audit journal: {records} record(s) could not be written since the last flush: {why}")]
    Lost { records: u64, why: String },
    #[error(
        "audit journal {0} is being written by another process: two writers would break its hash chain; give each sidecar its own audit.dir"
    )]
    Busy(PathBuf),
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
            AuditError::Lost { records, why } => AuditError::Lost {
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

/// Most messages one batch takes off the queue; the rest go into the next batch.
const MAX_BATCH: usize = 4096;

/// Where the answer to a durable append goes.
enum Ack {
    Async(oneshot::Sender<Result<Record, AuditError>>),
    Blocking(mpsc::SyncSender<Result<Record, AuditError>>),
}

impl Ack {
    fn send(self, r: Result<Record, AuditError>) {
        // A waiter that went away (its request was cancelled) does not need the answer.
        let _ = match self {
            Ack::Async(tx) => tx.send(r).map_err(|_| ()),
            Ack::Blocking(tx) => tx.send(r).map_err(|_| ()),
        };
    }
}

enum Msg {
    /// `ack` is `None` for an append that does not wait for the disk.
    Append {
        event: Event,
        now_secs: u64,
        ack: Option<Ack>,
    },
    /// Everything queued before is written and fsync'd, then this is answered.
    Flush(mpsc::SyncSender<Result<(), AuditError>>),
}

/// The writer. One per process; replicas keep one journal directory each.
///
/// Appends are queued to one writer thread that owns the open day file and the chain tail. It
/// takes everything queued at once, writes it, fsyncs once for the whole batch if any record in
/// it is waited for, and then answers every waiter of the batch: concurrent requests share
/// fsyncs, and sequence numbers and hashes follow the queue order.
pub struct Journal {
    dir: PathBuf,
    retention_days: u64,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
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
    /// Open (or create) a journal directory and start its writer thread. The chain tail is
    /// read from the files by the first append.
    pub fn open(dir: impl Into<PathBuf>, retention_days: u64) -> Result<Self, AuditError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::Io(dir.clone(), e))?;
        let lock = lock_dir(&dir)?;
        let (tx, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            dir: dir.clone(),
            retention_days,
            tail: None,
            rollback: None,
            file: None,
            lost: 0,
            lost_why: String::new(),
            sync_error: None,
            syncs: syncs.clone(),
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
            retention_days,
            tx: Some(tx),
            writer: Some(handle),
            syncs,
            _lock: lock,
        })
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
    /// record, or on disk before this resolves.
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
    /// Errors only if the writer has stopped; a failed write of this record is logged and
    /// reported by the next [`Journal::flush`].
    pub fn append_unsynced(&self, e: Event, now_secs: u64) -> Result<(), AuditError> {
        self.send(Msg::Append {
            event: e,
            now_secs,
            ack: None,
        })
    }

    /// Block until everything queued so far is written and fsync'd. Fails if the fsync does,
    /// or if any record could not be written since the last flush (waiters of durable
    /// appends heard of it already; this is where unwaited ones are reported).
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
        prune(&self.dir, self.retention_days, now_secs)
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

fn prune(dir: &Path, retention_days: u64, now_secs: u64) -> Result<Vec<String>, AuditError> {
    let cutoff = rfc3339(now_secs.saturating_sub(retention_days * 86_400));
    let cutoff_day = &cutoff[..10];
    let mut removed = Vec::new();
    for (day, path) in day_files(dir)? {
        if day.as_str() < cutoff_day {
            std::fs::remove_file(&path).map_err(|e| AuditError::Io(path.clone(), e))?;
            removed.push(day);
        }
    }
    Ok(removed)
}

#[derive(Clone)]
struct Tail {
    seq: u64,
    hash: String,
    /// Day of the last retention sweep; the first record of a new day sweeps again.
    swept: String,
    /// Time of the last record: a record queued behind a later one (its clock was read
    /// first) gets this time, so days never run backwards and the chain never jumps back
    /// into an earlier day file.
    secs: u64,
}

/// The open day file.
struct DayFile {
    day: String,
    path: PathBuf,
    file: std::fs::File,
    /// Length after the last successful write: a failed write is cut back to it.
    len: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// Created by this writer and its directory entry not yet fsync'd.
    created: bool,
}

/// Lines built for the open file and not yet written, with the records and waiters they carry.
#[derive(Default)]
struct Staged {
    buf: Vec<u8>,
    records: Vec<(Record, Option<Ack>)>,
}

/// The state owned by the writer thread.
struct Writer {
    dir: PathBuf,
    retention_days: u64,
    tail: Option<Tail>,
    /// The tail before the first staged record: restored when the staged lines fail to write.
    rollback: Option<Tail>,
    file: Option<DayFile>,
    /// Records that failed since the last flush, and the last error.
    lost: u64,
    lost_why: String,
    /// An fsync of this batch that failed on a change of day: the batch's waiters get it.
    sync_error: Option<AuditError>,
    syncs: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // Every handle is gone and the queue is empty: what is only in the page cache goes to disk.
        if let Err(e) = self.sync() {
            tracing::error!("audit journal: final fsync failed: {e}");
        }
    }

    /// Write one batch, fsync it if anyone waits for it, answer the waiters.
    fn commit(&mut self, batch: Vec<Msg>) {
        let mut wait = false;
        let mut flushes = Vec::new();
        let mut staged = Staged::default();
        let mut written: Vec<(Record, Option<Ack>)> = Vec::new();
        let mut failed: Option<AuditError> = None;
        for m in batch {
            match m {
                Msg::Flush(ack) => {
                    wait = true;
                    flushes.push(ack);
                }
                Msg::Append {
                    event,
                    now_secs,
                    ack,
                } => {
                    wait |= ack.is_some();
                    if let Some(err) = &failed {
                        self.fail(ack, err);
                        continue;
                    }
                    if let Err(err) = self.stage(event, now_secs, ack, &mut staged, &mut written) {
                        failed = Some(err);
                    }
                }
            }
        }
        if failed.is_none()
            && let Err(err) = self.write_staged(&mut staged, &mut written)
        {
            failed = Some(err);
        }
        // Whatever is left staged was not written (the batch failed before it got there).
        if let Some(err) = &failed {
            tracing::error!("audit journal write failed: {err}");
            for (_, ack) in std::mem::take(&mut staged.records) {
                self.fail(ack, err);
            }
        }
        let synced = match self.sync_error.take() {
            Some(e) => Err(e),
            None if wait => self.sync(),
            None => Ok(()),
        };
        for (r, ack) in written {
            if let Some(ack) = ack {
                ack.send(match &synced {
                    Ok(()) => Ok(r),
                    Err(e) => Err(e.duplicate()),
                });
            }
        }
        if flushes.is_empty() {
            return;
        }
        let flushed = match synced {
            Err(e) => Err(e),
            Ok(()) if self.lost > 0 => Err(AuditError::Lost {
                records: std::mem::take(&mut self.lost),
                why: std::mem::take(&mut self.lost_why),
            }),
            Ok(()) => Ok(()),
        };
        for ack in flushes {
            let _ = ack.send(flushed.as_ref().map(|_| ()).map_err(AuditError::duplicate));
        }
    }

    /// Answer a record's waiter (if any) with `err`, and count it for the next flush.
    fn fail(&mut self, ack: Option<Ack>, err: &AuditError) {
        if let Some(ack) = ack {
            ack.send(Err(err.duplicate()));
        }
        self.lost += 1;
        self.lost_why = err.to_string();
    }

    /// Assign seq, time and hash to one event and add its line to the staged bytes; a change
    /// of day writes what is staged for the old file first. On error the record has been
    /// answered and counted.
    fn stage(
        &mut self,
        e: Event,
        now_secs: u64,
        ack: Option<Ack>,
        staged: &mut Staged,
        written: &mut Vec<(Record, Option<Ack>)>,
    ) -> Result<(), AuditError> {
        let prepared = self.prepare(now_secs, staged, written);
        let (secs, prev) = match prepared {
            Ok(p) => p,
            Err(err) => {
                self.fail(ack, &err);
                return Err(err);
            }
        };
        let mut r = Record {
            seq: prev.seq + 1,
            time: rfc3339(secs),
            event: e.kind.name().to_string(),
            request_id: e.request_id,
            payment_id: e.payment_id,
            tx: e.tx,
            payer: e.payer,
            details: e.details,
            prev_hash: prev.hash.clone(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        if let Err(err) = serde_json::to_writer(&mut staged.buf, &r) {
            let err = AuditError::Io(self.dir.clone(), std::io::Error::other(err));
            self.fail(ack, &err);
            return Err(err);
        }
        staged.buf.push(b'\n');
        if staged.records.is_empty() {
            self.rollback = Some(prev.clone());
        }
        self.tail = Some(Tail {
            seq: r.seq,
            hash: r.hash.clone(),
            secs,
            ..prev
        });
        staged.records.push((r, ack));
        Ok(())
    }

    /// The record's time and the tail it follows, with the right day file open.
    fn prepare(
        &mut self,
        now_secs: u64,
        staged: &mut Staged,
        written: &mut Vec<(Record, Option<Ack>)>,
    ) -> Result<(u64, Tail), AuditError> {
        if self.tail.is_none() {
            let (seq, hash) = last_record(&self.dir)?
                .map(|r| (r.seq, r.hash))
                .unwrap_or((0, GENESIS.into()));
            self.tail = Some(Tail {
                seq,
                hash,
                swept: String::new(),
                secs: 0,
            });
        }
        let secs = self
            .tail
            .as_ref()
            .map_or(now_secs, |t| now_secs.max(t.secs));
        let day = rfc3339(secs)[..10].to_string();
        if self.file.as_ref().is_none_or(|f| f.day != day) {
            self.write_staged(staged, written)?;
            self.switch(&day, secs)?;
        }
        let Some(mut tail) = self.tail.take() else {
            return Err(AuditError::Stopped);
        };
        if tail.swept != day {
            // After the switch: the file just left is written and fsync'd before it may go.
            if let Err(e) = prune(&self.dir, self.retention_days, secs) {
                tracing::warn!("audit retention sweep failed: {e}");
            }
            tail.swept = day;
        }
        Ok((secs, tail))
    }

    /// Fsync the open file if it has unsynced writes, then open the day file for `day`.
    fn switch(&mut self, day: &str, secs: u64) -> Result<(), AuditError> {
        if let Err(e) = self.sync() {
            self.sync_error = Some(e.duplicate());
            return Err(e);
        }
        self.file = None;
        let path = self.dir.join(file_name(secs));
        let io = |e| AuditError::Io(path.clone(), e);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        self.file = Some(DayFile {
            day: day.to_string(),
            path: path.clone(),
            file,
            len,
            dirty: false,
            created: len == 0,
        });
        Ok(())
    }

    /// Write the staged lines to the open file in one write. On failure the file is cut back
    /// to its length before, the tail goes back to the last written record, and the file is
    /// closed so the next batch opens it again.
    fn write_staged(
        &mut self,
        staged: &mut Staged,
        written: &mut Vec<(Record, Option<Ack>)>,
    ) -> Result<(), AuditError> {
        if staged.records.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            return Err(AuditError::Stopped);
        };
        match f.file.write_all(&staged.buf) {
            Ok(()) => {
                f.len += staged.buf.len() as u64;
                f.dirty = true;
                staged.buf.clear();
                written.append(&mut staged.records);
                self.rollback = None;
                Ok(())
            }
            Err(e) => {
                let err = AuditError::Io(f.path.clone(), e);
                if f.file.set_len(f.len).is_ok() {
                    self.tail = self.rollback.take();
                } else {
                    // Unknown what reached the file: read the tail from disk next time.
                    self.tail = None;
                }
                self.file = None;
                Err(err)
            }
        }
    }

    /// Fsync the open file if it has unsynced writes (and, for a new file, its directory).
    fn sync(&mut self) -> Result<(), AuditError> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        if !f.dirty {
            return Ok(());
        }
        f.file
            .sync_data()
            .map_err(|e| AuditError::Io(f.path.clone(), e))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        f.dirty = false;
        if f.created {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| AuditError::Io(self.dir.clone(), e))?;
            f.created = false;
        }
        Ok(())
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
        j.append_blocking(
            Event::new(Kind::PaymentVerified)
                .request("req_1")
                .payment("pay_1")
                .payer("0xP"),
            T0,
        )
        .unwrap();
        j.append_blocking(
            Event::new(Kind::Forwarded)
                .request("req_1")
                .payment("pay_1"),
            T0 + 1,
        )
        .unwrap();
        j.append_blocking(
            Event::new(Kind::Settled)
                .request("req_1")
                .payment("pay_1")
                .tx("0xABC")
                .with("amount", "10000"),
            T0 + DAY,
        )
        .unwrap();
        j.append_blocking(
            Event::new(Kind::Answered).request("req_1").payment("pay_1"),
            T0 + DAY,
        )
        .unwrap();
        j.append_blocking(
            Event::new(Kind::PaymentVerified)
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
            .append_blocking(Event::new(Kind::Answered).request("req_2"), T0 + DAY)
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
            j.append_blocking(Event::new(Kind::Answered), T0 + day * DAY)
                .unwrap();
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

    /// `(appender, index)` of every record, in file order, after checking seq is 1..=N.
    fn appended(dir: &Path) -> Vec<(u64, u64)> {
        let all = read_all(dir).unwrap();
        let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
        all.iter()
            .map(|r| {
                (
                    r.details["appender"].as_u64().unwrap(),
                    r.details["i"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Every appender's records are there exactly once, in the order it appended them.
    fn assert_all_once_in_order(seen: &[(u64, u64)], appenders: u64, each: u64) {
        assert_eq!(seen.len() as u64, appenders * each);
        for a in 0..appenders {
            let mine: Vec<u64> = seen
                .iter()
                .filter(|(who, _)| *who == a)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(mine, (0..each).collect::<Vec<_>>(), "appender {a}");
        }
    }

    fn numbered(appender: u64, i: u64) -> Event {
        Event::new(Kind::Answered)
            .with("appender", appender)
            .with("i", i)
    }

    #[test]
    fn concurrent_threads_produce_one_valid_chain_with_every_record_once() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        const THREADS: u64 = 8;
        const EACH: u64 = 200;
        std::thread::scope(|s| {
            for a in 0..THREADS {
                let j = &j;
                s.spawn(move || {
                    for i in 0..EACH {
                        // Mixed: three steps that do not wait, then one that does.
                        if i % 4 == 3 {
                            j.append_blocking(numbered(a, i), T0).unwrap();
                        } else {
                            j.append_unsynced(numbered(a, i), T0).unwrap();
                        }
                    }
                });
            }
        });
        j.flush().unwrap();
        assert_eq!(verify(d.path()).unwrap().records as u64, THREADS * EACH);
        assert_all_once_in_order(&appended(d.path()), THREADS, EACH);
    }

    #[test]
    fn every_kind_has_its_own_name_and_only_the_steps_before_an_answer_queue() {
        let names: std::collections::HashSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kind::ALL.len());
        let queued: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| k.durability() == Durability::WithNext)
            .map(|k| k.name())
            .collect();
        assert_eq!(queued, ["payment_verified", "forwarded", "settled"]);
    }

    #[tokio::test]
    async fn record_queues_a_step_and_writes_through_a_durable_event() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let syncs = j.syncs();
        j.record(Event::new(Kind::Forwarded).request("req_1"), T0)
            .await
            .unwrap();
        j.record(Event::new(Kind::Settled).request("req_1"), T0)
            .await
            .unwrap();
        // Queued steps have not cost an fsync of their own.
        assert_eq!(j.syncs(), syncs);
        j.record(Event::new(Kind::Answered).request("req_1"), T0)
            .await
            .unwrap();
        // The durable answer took the queued steps with it, in order.
        let on_disk: Vec<String> = read_all(dir.path())
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(on_disk, ["forwarded", "settled", "answered"]);
        assert_eq!(j.syncs(), syncs + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tasks_share_fsyncs_and_keep_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let j = Arc::new(journal(d.path()));
        const TASKS: u64 = 16;
        const EACH: u64 = 50;
        let mut tasks = Vec::new();
        for a in 0..TASKS {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    if i % 2 == 0 {
                        j.append_unsynced(numbered(a, i), T0).unwrap();
                    } else {
                        let r = j.append(numbered(a, i), T0).await.unwrap();
                        assert_eq!(r.details["i"], i);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Never more fsyncs than waited-for appends; usually far fewer.
        assert!(j.syncs() <= TASKS * EACH / 2, "{} fsyncs", j.syncs());
        assert_eq!(verify(d.path()).unwrap().records as u64, TASKS * EACH);
        assert_all_once_in_order(&appended(d.path()), TASKS, EACH);
    }

    #[test]
    fn an_unsynced_record_is_on_disk_once_a_later_durable_one_is_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        j.append_unsynced(Event::new(Kind::PaymentVerified).request("req_1"), T0)
            .unwrap();
        j.append_unsynced(Event::new(Kind::Forwarded).request("req_1"), T0)
            .unwrap();
        let r = j
            .append_blocking(Event::new(Kind::Settled).request("req_1"), T0)
            .unwrap();
        assert_eq!(r.seq, 3);
        // Read while the journal is still open: no drop or flush has helped.
        let events: Vec<String> = read_all(d.path())
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(events, ["payment_verified", "forwarded", "settled"]);
        assert_eq!(j.syncs(), 1, "one fsync for the three records");
        // Unsynced records alone are written but not fsync'd; flush does.
        j.append_unsynced(Event::new(Kind::Forwarded).request("req_2"), T0)
            .unwrap();
        j.flush().unwrap();
        assert_eq!(j.syncs(), 2);
        assert_eq!(verify(d.path()).unwrap().records, 4);
    }

    #[test]
    fn a_day_file_that_cannot_be_opened_fails_the_append_and_the_writer_recovers() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        j.append_blocking(Event::new(Kind::Answered).request("req_1"), T0)
            .unwrap();
        // Tomorrow's file is a directory: the change of day cannot open it.
        let blocker = d.path().join(file_name(T0 + DAY));
        std::fs::create_dir(&blocker).unwrap();
        j.append_unsynced(Event::new(Kind::Forwarded).request("req_2"), T0 + DAY)
            .unwrap();
        let e = j
            .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
            .unwrap_err();
        assert!(matches!(e, AuditError::Io(..)), "{e}");
        // Both failures are reported by the next flush, once.
        let e = j.flush().unwrap_err();
        assert!(matches!(e, AuditError::Lost { records: 2, .. }), "{e}");
        j.flush().unwrap();
        // Fixed: the writer carries on, the chain has no gap.
        std::fs::remove_dir(&blocker).unwrap();
        let r = j
            .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
            .unwrap();
        assert_eq!(r.seq, 2);
        assert_eq!(
            verify(d.path()).unwrap(),
            Verified {
                records: 2,
                files: 2
            }
        );
    }

    /// A write that fails (disk full) leaves no partial line and the chain continues.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_reaches_the_waiter_and_leaves_no_trace() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        j.append_blocking(Event::new(Kind::Answered).request("req_1"), T0)
            .unwrap();
        let full = d.path().join(file_name(T0 + DAY));
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let e = j
            .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
            .unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        std::fs::remove_file(&full).unwrap();
        let r = j
            .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
            .unwrap();
        assert_eq!(r.seq, 2);
        assert_eq!(verify(d.path()).unwrap().records, 2);
    }

    #[test]
    fn a_change_of_day_opens_a_new_file_and_the_chain_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        let a = j.append_blocking(Event::new(Kind::Answered), T0).unwrap();
        let b = j
            .append_blocking(Event::new(Kind::Answered), T0 + DAY)
            .unwrap();
        assert_eq!(b.prev_hash, a.hash);
        // A record whose clock was read before the last one's is not sent back a day.
        let c = j.append_blocking(Event::new(Kind::Answered), T0).unwrap();
        assert_eq!(c.time, b.time);
        assert_eq!(
            verify(d.path()).unwrap(),
            Verified {
                records: 3,
                files: 2
            }
        );
        let per_file: Vec<usize> = day_files(d.path())
            .unwrap()
            .iter()
            .map(|(_, p)| read_file(p).unwrap().len())
            .collect();
        assert_eq!(per_file, [1, 2]);
    }

    #[test]
    fn one_writer_per_directory() {
        let d = tempfile::tempdir().unwrap();
        let first = Journal::open(d.path(), 90).unwrap();
        first
            .append_blocking(Event::new(Kind::Answered), T0)
            .unwrap();
        match Journal::open(d.path(), 90) {
            Err(AuditError::Busy(dir)) => assert_eq!(dir, d.path()),
            Err(e) => panic!("expected Busy, got {e}"),
            Ok(_) => panic!("a second writer opened the same journal"),
        }
        drop(first);
        let again = Journal::open(d.path(), 90).unwrap();
        again
            .append_blocking(Event::new(Kind::Answered), T0 + 1)
            .unwrap();
        drop(again);
        assert_eq!(
            verify(d.path()).unwrap().records,
            2,
            "one chain, the lock file ignored"
        );
    }

    #[tokio::test]
    async fn a_stopped_writer_is_an_error_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        drop(rx);
        let j = Journal {
            dir: d.path().into(),
            retention_days: 90,
            tx: Some(tx),
            writer: None,
            syncs: Arc::default(),
            _lock: lock_dir(d.path()).unwrap(),
        };
        assert!(matches!(
            j.append(Event::new(Kind::Answered), T0).await,
            Err(AuditError::Stopped)
        ));
        assert!(matches!(
            j.append_blocking(Event::new(Kind::Answered), T0),
            Err(AuditError::Stopped)
        ));
        assert!(matches!(
            j.append_unsynced(Event::new(Kind::Answered), T0),
            Err(AuditError::Stopped)
        ));
        assert!(matches!(j.flush(), Err(AuditError::Stopped)));
    }

    #[test]
    fn dropping_the_journal_writes_what_is_queued() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        for i in 0..100 {
            j.append_unsynced(numbered(0, i), T0).unwrap();
        }
        drop(j);
        assert_all_once_in_order(&appended(d.path()), 1, 100);
    }
}
