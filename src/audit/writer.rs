//! The journal's writer thread: it owns the open day file and the chain's tail, takes
//! everything queued at once, writes it, fsyncs once for the batch if anyone waits for it, and
//! answers every waiter; a failed write is cut back so no partial line stays.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::anchor::{Body, BodyLine, Head, bodies_path, read_head, write_head};
use super::read::{day_files, last_record, read_file};
use super::spill::Spill;
use super::{AuditError, Event, GENESIS, Kind, Record, record_hash};
use crate::util::{now_secs, rfc3339};

/// Most messages one batch takes off the queue; the rest go into the next batch.
pub(super) const MAX_BATCH: usize = 4096;

/// How often a writer with records in the spill tries the journal again when nothing new
/// comes.
pub(super) const SPILL_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the answer to a durable append goes.
pub(super) enum Ack {
    Async(oneshot::Sender<Result<Record, AuditError>>),
    Blocking(mpsc::SyncSender<Result<Record, AuditError>>),
}

impl Ack {
    pub(super) fn send(self, r: Result<Record, AuditError>) {
        // A waiter that went away (its request was cancelled) does not need the answer.
        let _ = match self {
            Ack::Async(tx) => tx.send(r).map_err(|_| ()),
            Ack::Blocking(tx) => tx.send(r).map_err(|_| ()),
        };
    }
}

pub(super) enum Msg {
    /// `ack` is `None` for an append that does not wait for the disk.
    Append {
        event: Event,
        now_secs: u64,
        ack: Option<Ack>,
    },
    /// Everything queued before is written and fsync'd, then this is answered.
    Flush(mpsc::SyncSender<Result<(), AuditError>>),
    /// Delete the day files older than the retention window at this time.
    Prune(u64, mpsc::SyncSender<Result<Vec<String>, AuditError>>),
}

/// Delete the day files (and their bodies) older than the retention window, after moving the
/// head's base to the last record they hold: what is left starts where retention cut, so a
/// file deleted by hand is still found by `verify`. `base` is the writer's (kept in step).
pub(super) fn prune(
    dir: &Path,
    retention_days: u64,
    now_secs: u64,
    head: &mut Head,
) -> Result<Vec<String>, AuditError> {
    let cutoff = rfc3339(now_secs.saturating_sub(retention_days * 86_400));
    let cutoff_day = &cutoff[..10];
    let old: Vec<(String, PathBuf)> = day_files(dir)?
        .into_iter()
        .filter(|(day, _)| day.as_str() < cutoff_day)
        .collect();
    let mut last = None;
    for (_, path) in old.iter().rev() {
        if let Some(r) = read_file(path)?.pop() {
            last = Some(r);
            break;
        }
    }
    if let Some(r) = last
        && r.seq > head.base_seq
    {
        head.base_seq = r.seq;
        head.base_hash = r.hash;
        if head.seq < r.seq {
            head.seq = r.seq;
            head.hash = head.base_hash.clone();
        }
        // The base moves before the files go: a crash in between leaves files the base
        // already covers, which `verify` accepts.
        write_head(dir, head)?;
    }
    let mut removed = Vec::new();
    for (day, path) in old {
        std::fs::remove_file(&path).map_err(|e| AuditError::Io(path.clone(), e))?;
        let bodies = bodies_path(dir, &day);
        match std::fs::remove_file(&bodies) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::Io(bodies, e)),
        }
        removed.push(day);
    }
    Ok(removed)
}

#[derive(Clone)]
pub(super) struct Tail {
    pub(super) seq: u64,
    pub(super) hash: String,
    /// Day of the last retention sweep; the first record of a new day sweeps again.
    pub(super) swept: String,
    /// Time of the last record: a record queued behind a later one (its clock was read
    /// first) gets this time, so days never run backwards and the chain never jumps back
    /// into an earlier day file.
    pub(super) secs: u64,
}

/// The open day file.
pub(super) struct DayFile {
    pub(super) day: String,
    pub(super) path: PathBuf,
    pub(super) file: std::fs::File,
    /// Length after the last successful write: a failed write is cut back to it.
    pub(super) len: u64,
    /// Written since the last fsync.
    pub(super) dirty: bool,
    /// Created by this writer and its directory entry not yet fsync'd.
    pub(super) created: bool,
    /// The day's bodies file, opened with the first body.
    pub(super) bodies: Option<BodiesFile>,
}

/// The open day's bodies file.
pub(super) struct BodiesFile {
    pub(super) path: PathBuf,
    pub(super) file: std::fs::File,
    pub(super) len: u64,
    pub(super) dirty: bool,
    pub(super) created: bool,
}

/// A record staged for the open file, with its time and its waiter.
pub(super) struct Pending {
    pub(super) record: Record,
    pub(super) secs: u64,
    pub(super) ack: Option<Ack>,
    pub(super) bodies: Vec<Body>,
}

/// Lines built for the open file and not yet written, with the records and waiters they carry.
#[derive(Default)]
pub(super) struct Staged {
    pub(super) buf: Vec<u8>,
    /// Lines for the day's bodies file.
    pub(super) bodies: Vec<u8>,
    pub(super) records: Vec<Pending>,
}

/// A record that did not reach the journal in this batch: it goes to the spill.
struct Unwritten {
    event: Event,
    secs: u64,
    ack: Option<Ack>,
}

/// The event a staged record was built from (to spill it).
fn unstage(p: Pending) -> Option<Unwritten> {
    let r = p.record;
    let kind = Kind::from_name(&r.event)?;
    Some(Unwritten {
        event: Event {
            kind,
            request_id: r.request_id,
            payment_id: r.payment_id,
            tx: r.tx,
            payer: r.payer,
            details: r.details,
            bodies: p.bodies,
        },
        secs: p.secs,
        ack: p.ack,
    })
}

/// The state owned by the writer thread.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) retention_days: u64,
    pub(super) tail: Option<Tail>,
    /// The tail before the first staged record: restored when the staged lines fail to write.
    pub(super) rollback: Option<Tail>,
    pub(super) file: Option<DayFile>,
    /// Records that could not be written yet, in queue order.
    pub(super) spill: Spill,
    /// When writing the spill last failed: the next try waits [`SPILL_RETRY`], so a full disk
    /// is not sent the whole spill with every record.
    pub(super) spill_failed_at: Option<std::time::Instant>,
    /// An fsync of this batch that failed on a change of day: the batch's waiters get it.
    pub(super) sync_error: Option<AuditError>,
    pub(super) syncs: Arc<AtomicU64>,
    /// The head as last written (its base moves with retention); `None` until the tail is read.
    pub(super) head: Option<Head>,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // Anchor at once: a journal written before heads existed gets one now.
        if let Err(e) = self.load_tail() {
            tracing::warn!("audit journal: the chain's tail could not be read yet: {e}");
        }
        loop {
            // With records in the spill, try the journal again every SPILL_RETRY even when
            // nothing new comes: a freed disk takes them without waiting for traffic.
            let first = if self.spill.is_empty() {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(SPILL_RETRY) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut batch: Vec<Msg> = first.into_iter().collect();
            while !batch.is_empty() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // Every handle is gone and the queue is empty: one last try for the spill, then what
        // is only in the page cache goes to disk.
        self.spill_failed_at = None;
        self.flush_spill();
        if let Err(e) = self.sync() {
            tracing::error!("audit journal: final fsync failed: {e}");
        }
        let left = self.spill.entries.len();
        if left > 0 {
            if self.spill.has_file() {
                tracing::error!(
                    records = left,
                    "audit journal: records are still in the spill file; the next start writes them to the journal"
                );
            } else {
                tracing::error!(
                    records = left,
                    "audit journal: records could not be written and there is no audit.spill_dir: they are lost"
                );
            }
        }
    }

    /// Write one batch (after whatever waits in the spill), fsync it if anyone waits for it,
    /// answer the waiters. What cannot be written goes to the spill.
    pub(super) fn commit(&mut self, batch: Vec<Msg>) {
        let mut wait = false;
        let mut flushes = Vec::new();
        let mut appends = Vec::new();
        for m in batch {
            match m {
                Msg::Flush(ack) => {
                    wait = true;
                    flushes.push(ack);
                }
                Msg::Prune(now, ack) => {
                    let _ = ack.send(self.load_tail().and_then(|()| self.prune(now)));
                }
                Msg::Append {
                    event,
                    now_secs,
                    ack,
                } => {
                    wait |= ack.is_some();
                    appends.push(Unwritten {
                        event,
                        secs: now_secs,
                        ack,
                    });
                }
            }
        }
        if !flushes.is_empty() {
            // Asked to flush: try the spill now, whenever it failed last.
            self.spill_failed_at = None;
        }
        self.flush_spill();
        let mut staged = Staged::default();
        let mut written: Vec<Pending> = Vec::new();
        let mut unwritten: Vec<Unwritten> = Vec::new();
        let mut why: Option<String> = None;
        if !self.spill.is_empty() {
            // Records keep their order: nothing new is written before the spill is.
            why = Some("earlier records are still waiting in the spill".into());
            unwritten = appends;
        } else {
            let mut rest = appends.into_iter();
            for u in rest.by_ref() {
                if let Err(failed) = self.stage(u, &mut staged, &mut written) {
                    let (err, u) = *failed;
                    why = Some(err.to_string());
                    unwritten.push(u);
                    break;
                }
            }
            if why.is_none()
                && let Err(err) = self.write_staged(&mut staged, &mut written)
            {
                why = Some(err.to_string());
            }
            if let Some(w) = &why {
                tracing::error!("audit journal write failed: {w}");
                // Staged and not written: in queue order before the ones not staged yet.
                let mut back: Vec<Unwritten> = std::mem::take(&mut staged.records)
                    .into_iter()
                    .filter_map(unstage)
                    .collect();
                back.append(&mut unwritten);
                back.extend(rest);
                unwritten = back;
            }
        }
        let synced = match self.sync_error.take() {
            Some(e) => Err(e),
            None if wait => self.sync(),
            None => Ok(()),
        };
        if let Err(e) = &synced {
            tracing::error!("audit journal fsync failed: {e}");
        }
        if let Some(why) = why {
            self.spill_all(unwritten, &why);
        }
        for p in written {
            if let Some(ack) = p.ack {
                ack.send(match &synced {
                    Ok(()) => Ok(p.record),
                    Err(e) => Err(e.duplicate()),
                });
            }
        }
        if flushes.is_empty() {
            return;
        }
        let pending = self.spill.entries.len() as u64;
        let flushed = match synced {
            Err(e) => Err(e),
            Ok(()) if pending > 0 => Err(AuditError::Spilled {
                records: pending,
                why: self
                    .spill
                    .entries
                    .back()
                    .map(|s| s.why.clone())
                    .unwrap_or_default(),
            }),
            Ok(()) => Ok(()),
        };
        for ack in flushes {
            let _ = ack.send(flushed.as_ref().map(|_| ()).map_err(AuditError::duplicate));
        }
    }

    /// Keep records the journal did not take in the spill (durably, if it has a file), then
    /// tell their waiters.
    fn spill_all(&mut self, unwritten: Vec<Unwritten>, why: &str) {
        let mut kept = 0;
        let mut acks = Vec::new();
        for u in unwritten {
            if self.spill.push(u.event, u.secs, why) {
                kept += 1;
            }
            acks.extend(u.ack);
        }
        self.spill.persist_last(kept);
        let pending = self.spill.entries.len() as u64;
        for ack in acks {
            ack.send(Err(AuditError::Spilled {
                records: pending,
                why: why.to_string(),
            }));
        }
    }

    /// Write what waits in the spill to the journal, in order with its original times, and
    /// fsync it; what was written leaves the spill. Stops at the first failure.
    pub(super) fn flush_spill(&mut self) {
        if self.spill.is_empty()
            || self
                .spill_failed_at
                .is_some_and(|t| t.elapsed() < SPILL_RETRY)
        {
            return;
        }
        let now = now_secs();
        let events: Vec<Unwritten> = self
            .spill
            .entries
            .iter()
            .filter_map(|s| {
                s.event(now).map(|event| Unwritten {
                    event,
                    secs: s.secs,
                    ack: None,
                })
            })
            .collect();
        let mut staged = Staged::default();
        let mut written = Vec::new();
        let mut failed = false;
        for u in events {
            if self.stage(u, &mut staged, &mut written).is_err() {
                failed = true;
                break;
            }
        }
        if !failed && self.write_staged(&mut staged, &mut written).is_err() {
            failed = true;
        }
        if failed {
            // Not written: the tail is back where it was; those records stay in the spill.
            staged.records.clear();
            self.spill_failed_at = Some(std::time::Instant::now());
        } else {
            self.spill_failed_at = None;
        }
        let synced = match self.sync_error.take() {
            Some(e) => Err(e),
            None => self.sync(),
        };
        if let Err(e) = synced {
            // Written but maybe not durable: journaling them again could duplicate them.
            tracing::error!("audit journal: fsync after writing spilled records failed: {e}");
        }
        if !written.is_empty() {
            tracing::info!(
                records = written.len(),
                left = self.spill.entries.len() - written.len(),
                "audit journal: spilled records written to the journal"
            );
        }
        self.spill.journaled(written.len());
    }

    /// Assign seq, time and hash to one event and add its line to the staged bytes; a change
    /// of day writes what is staged for the old file first. On error the event comes back.
    fn stage(
        &mut self,
        u: Unwritten,
        staged: &mut Staged,
        written: &mut Vec<Pending>,
    ) -> Result<(), Box<(AuditError, Unwritten)>> {
        let (secs, prev) = match self.prepare(u.secs, staged, written) {
            Ok(p) => p,
            Err(err) => return Err(Box::new((err, u))),
        };
        let mut e = u.event;
        let bodies = std::mem::take(&mut e.bodies);
        let body_start = staged.bodies.len();
        if !bodies.is_empty() {
            let mut roles = Vec::new();
            for b in &bodies {
                let line = BodyLine::new(prev.seq + 1, b);
                e.details
                    .insert(Body::hash_key(&b.role), line.sha256.clone().into());
                roles.push(serde_json::Value::from(b.role.clone()));
                if serde_json::to_writer(&mut staged.bodies, &line).is_ok() {
                    staged.bodies.push(b'\n');
                }
            }
            e.details.insert("bodies".into(), roles.into());
        }
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
        let line_start = staged.buf.len();
        if let Err(err) = serde_json::to_writer(&mut staged.buf, &r) {
            staged.buf.truncate(line_start);
            staged.bodies.truncate(body_start);
            // The tail was taken by `prepare`: put it back unchanged.
            self.tail = Some(prev);
            let err = AuditError::Io(self.dir.clone(), std::io::Error::other(err));
            let back = unstage(Pending {
                record: r,
                secs: u.secs,
                ack: u.ack,
                bodies,
            });
            return match back {
                Some(u) => Err(Box::new((err, u))),
                None => Ok(()),
            };
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
        staged.records.push(Pending {
            record: r,
            secs: u.secs,
            ack: u.ack,
            bodies,
        });
        Ok(())
    }

    /// The record's time and the tail it follows, with the right day file open.
    pub(super) fn prepare(
        &mut self,
        now_secs: u64,
        staged: &mut Staged,
        written: &mut Vec<Pending>,
    ) -> Result<(u64, Tail), AuditError> {
        self.load_tail()?;
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
            if let Err(e) = self.prune(secs) {
                tracing::warn!("audit retention sweep failed: {e}");
            }
            tail.swept = day;
        }
        Ok((secs, tail))
    }

    /// Read the chain's tail from the files and the head, once. A head ahead of the files
    /// (their last records were cut off, or the newest file deleted) wins: the chain goes on
    /// from the head, so the cut stays visible to `verify` as missing records.
    pub(super) fn load_tail(&mut self) -> Result<(), AuditError> {
        if self.tail.is_some() {
            return Ok(());
        }
        let last = last_record(&self.dir)?;
        let head = read_head(&self.dir)?;
        let (seq, hash) = last
            .as_ref()
            .map(|r| (r.seq, r.hash.clone()))
            .unwrap_or((0, GENESIS.into()));
        let mut h = match head {
            Some(h) => h,
            None => {
                // No head yet (a new journal, or one written before heads): it starts where its
                // oldest record says.
                let first = day_files(&self.dir)?
                    .into_iter()
                    .find_map(|(_, p)| read_file(&p).ok().and_then(|v| v.into_iter().next()));
                let mut h = Head::default();
                if let Some(f) = first {
                    h.base_seq = f.seq.saturating_sub(1);
                    h.base_hash = f.prev_hash;
                }
                h.seq = seq;
                h.hash = hash.clone();
                if last.is_some()
                    && let Err(e) = write_head(&self.dir, &h)
                {
                    tracing::warn!("audit journal: head file not written: {e}");
                }
                h
            }
        };
        let (seq, hash) = if h.seq > seq {
            tracing::error!(
                head = h.seq,
                last = seq,
                "audit journal: the files end before the record the head names: records were cut off or a day file deleted; the chain goes on from the head"
            );
            (h.seq, h.hash.clone())
        } else {
            h.seq = seq;
            h.hash = hash.clone();
            (seq, hash)
        };
        self.head = Some(h);
        self.tail = Some(Tail {
            seq,
            hash,
            swept: String::new(),
            secs: 0,
        });
        Ok(())
    }

    /// The retention sweep, keeping the head's base in step.
    /// The head must be loaded ([`Writer::load_tail`]); the tail may be taken meanwhile.
    fn prune(&mut self, now_secs: u64) -> Result<Vec<String>, AuditError> {
        let mut head = self.head.clone().unwrap_or_default();
        let removed = prune(&self.dir, self.retention_days, now_secs, &mut head)?;
        self.head = Some(head);
        Ok(removed)
    }

    /// After an fsync: the head names the last record on disk.
    fn write_head(&mut self) {
        let (Some(tail), Some(head)) = (self.tail.as_ref(), self.head.as_mut()) else {
            return;
        };
        if head.seq == tail.seq && head.hash == tail.hash {
            return;
        }
        head.seq = tail.seq;
        head.hash = tail.hash.clone();
        if let Err(e) = write_head(&self.dir, head) {
            // The records are on disk; only the check of the journal's end lags.
            tracing::warn!("audit journal: head file not written: {e}");
        }
    }

    /// Fsync the open file if it has unsynced writes, then open the day file for `day`.
    pub(super) fn switch(&mut self, day: &str, secs: u64) -> Result<(), AuditError> {
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
            bodies: None,
        });
        Ok(())
    }

    /// Write the staged lines to the open file in one write. On failure the file is cut back
    /// to its length before, the tail goes back to the last written record, and the file is
    /// closed so the next batch opens it again.
    pub(super) fn write_staged(
        &mut self,
        staged: &mut Staged,
        written: &mut Vec<Pending>,
    ) -> Result<(), AuditError> {
        if staged.records.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            return Err(AuditError::Stopped);
        };
        // The bodies first: a record on disk always has its bodies beside it.
        if !staged.bodies.is_empty()
            && let Err(err) = write_bodies(&self.dir, f, &staged.bodies)
        {
            self.tail = self.rollback.take();
            self.file = None;
            return Err(err);
        }
        let bodies_before = f
            .bodies
            .as_ref()
            .map(|b| b.len - staged.bodies.len() as u64);
        match f.file.write_all(&staged.buf) {
            Ok(()) => {
                f.len += staged.buf.len() as u64;
                f.dirty = true;
                staged.buf.clear();
                staged.bodies.clear();
                written.append(&mut staged.records);
                self.rollback = None;
                Ok(())
            }
            Err(e) => {
                let err = AuditError::Io(f.path.clone(), e);
                if let (Some(b), Some(before)) = (f.bodies.as_mut(), bodies_before)
                    && b.file.set_len(before).is_ok()
                {
                    b.len = before;
                }
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
    pub(super) fn sync(&mut self) -> Result<(), AuditError> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        if !f.dirty {
            return Ok(());
        }
        if let Some(b) = f.bodies.as_mut()
            && b.dirty
        {
            b.file
                .sync_data()
                .map_err(|e| AuditError::Io(b.path.clone(), e))?;
            b.dirty = false;
            if b.created {
                // The directory entry goes with the day file's (below, or now).
                f.created = true;
                b.created = false;
            }
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
        self.write_head();
        Ok(())
    }
}

/// Append `buf` to the open day's bodies file (opened on first use); a failed write is cut
/// back.
fn write_bodies(dir: &Path, f: &mut DayFile, buf: &[u8]) -> Result<(), AuditError> {
    if f.bodies.is_none() {
        let path = bodies_path(dir, &f.day);
        let io = |e| AuditError::Io(path.clone(), e);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        f.bodies = Some(BodiesFile {
            path: path.clone(),
            file,
            len,
            dirty: false,
            created: len == 0,
        });
    }
    let Some(b) = f.bodies.as_mut() else {
        return Err(AuditError::Stopped);
    };
    match b.file.write_all(buf) {
        Ok(()) => {
            b.len += buf.len() as u64;
            b.dirty = true;
            Ok(())
        }
        Err(e) => {
            let err = AuditError::Io(b.path.clone(), e);
            if b.file.set_len(b.len).is_err() {
                f.bodies = None;
            }
            Err(err)
        }
    }
}

pub(super) fn file_name(now_secs: u64) -> String {
    format!("audit-{}.jsonl", &rfc3339(now_secs)[..10])
}
