//! The journal's writer thread: it owns the open day file and the chain's tail, takes
//! everything queued at once, writes it, fsyncs once for the batch if anyone waits for it, and
//! answers every waiter; a failed write is cut back so no partial line stays.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::read::{day_files, last_record};
use super::{AuditError, Event, GENESIS, Record, record_hash};
use crate::util::rfc3339;

/// Most messages one batch takes off the queue; the rest go into the next batch.
pub(super) const MAX_BATCH: usize = 4096;

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
}

pub(super) fn prune(
    dir: &Path,
    retention_days: u64,
    now_secs: u64,
) -> Result<Vec<String>, AuditError> {
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
}

/// Lines built for the open file and not yet written, with the records and waiters they carry.
#[derive(Default)]
pub(super) struct Staged {
    pub(super) buf: Vec<u8>,
    pub(super) records: Vec<(Record, Option<Ack>)>,
}

/// The state owned by the writer thread.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) retention_days: u64,
    pub(super) tail: Option<Tail>,
    /// The tail before the first staged record: restored when the staged lines fail to write.
    pub(super) rollback: Option<Tail>,
    pub(super) file: Option<DayFile>,
    /// Records that failed since the last flush, and the last error.
    pub(super) lost: u64,
    pub(super) lost_why: String,
    /// An fsync of this batch that failed on a change of day: the batch's waiters get it.
    pub(super) sync_error: Option<AuditError>,
    pub(super) syncs: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
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
    pub(super) fn commit(&mut self, batch: Vec<Msg>) {
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
    pub(super) fn fail(&mut self, ack: Option<Ack>, err: &AuditError) {
        if let Some(ack) = ack {
            ack.send(Err(err.duplicate()));
        }
        self.lost += 1;
        self.lost_why = err.to_string();
    }

    /// Assign seq, time and hash to one event and add its line to the staged bytes; a change
    /// of day writes what is staged for the old file first. On error the record has been
    /// answered and counted.
    pub(super) fn stage(
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
    pub(super) fn prepare(
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
        });
        Ok(())
    }

    /// Write the staged lines to the open file in one write. On failure the file is cut back
    /// to its length before, the tail goes back to the last written record, and the file is
    /// closed so the next batch opens it again.
    pub(super) fn write_staged(
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
    pub(super) fn sync(&mut self) -> Result<(), AuditError> {
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

pub(super) fn file_name(now_secs: u64) -> String {
    format!("audit-{}.jsonl", &rfc3339(now_secs)[..10])
}
