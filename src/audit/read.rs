//! Reading the journal back: its day files, every record, the chain check (`audit verify`),
//! one request's whole life (`audit show`) and the accounting export.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::spill::{SPILL_FILE, Spilled, read_spill};
use super::{AuditError, Kind, Record, record_hash};
use crate::util::rfc3339;

/// `(day, path)` of every journal file, oldest first.
pub fn day_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::Io(dir.to_path_buf(), e)),
    };
    let mut out: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        // A directory with a day file's name is not one (and cannot be read as one).
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
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

pub(super) fn read_file(path: &Path) -> Result<Vec<Record>, AuditError> {
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

pub(super) fn last_record(dir: &Path) -> Result<Option<Record>, AuditError> {
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

/// How long a payment may be `forwarded` with no outcome record before `audit verify` calls it
/// a hole (until then it may still be settling).
pub const OPEN_GRACE_SECS: u64 = 900;

/// What `audit verify` reports besides a broken chain: records that are not in the journal.
#[derive(Debug, Clone, PartialEq)]
pub enum Gap {
    /// A record the journal could not write, still waiting in the spill.
    Spilled(Spilled),
    /// A payment was forwarded (money was about to move) and no record says what came of it:
    /// its later records were lost (a spill kept only in memory, then a restart).
    NoOutcome {
        payment_id: String,
        request_id: Option<String>,
        seq: u64,
        time: String,
    },
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gap::Spilled(s) => f.write_str(&s.describe()),
            Gap::NoOutcome {
                payment_id,
                request_id,
                seq,
                time,
            } => write!(
                f,
                "hole: payment {payment_id} (request {}) was forwarded at {time} (record {seq}) and no record says whether it was settled; look its authorization up on chain",
                request_id.as_deref().unwrap_or("-")
            ),
        }
    }
}

/// Whether a record closes a forwarded payment: it says what came of the settlement.
fn is_outcome(event: &str) -> bool {
    [
        Kind::Settled,
        Kind::SettlementFailed,
        Kind::SettlementPending,
        Kind::NotCharged,
        Kind::PaymentRefused,
    ]
    .iter()
    .any(|k| k.name() == event)
}

/// The gaps of the journal in `dir`: every record waiting in the spill of `spill_dir`, and
/// every payment forwarded more than `grace_secs` before `now_secs` with no outcome record
/// (in the journal or the spill).
pub fn gaps(
    dir: &Path,
    spill_dir: Option<&Path>,
    now_secs: u64,
    grace_secs: u64,
) -> Result<Vec<Gap>, AuditError> {
    let spilled = match spill_dir {
        Some(s) => read_spill(&s.join(SPILL_FILE))?,
        None => Vec::new(),
    };
    // payment id → the forwarded record still waiting for its outcome.
    let mut open: std::collections::BTreeMap<String, (u64, Option<String>, String)> =
        Default::default();
    for (_, path) in day_files(dir)? {
        for r in read_file(&path)? {
            let Some(pay) = r.payment_id.clone() else {
                continue;
            };
            if r.event == Kind::Forwarded.name() {
                open.insert(pay, (r.seq, r.request_id.clone(), r.time.clone()));
            } else if is_outcome(&r.event) {
                open.remove(&pay);
            }
        }
    }
    for s in &spilled {
        if let Some(pay) = &s.payment_id
            && is_outcome(&s.event)
        {
            open.remove(pay);
        }
    }
    let cutoff = rfc3339(now_secs.saturating_sub(grace_secs));
    let mut holes: Vec<Gap> = open
        .into_iter()
        .filter(|(_, (_, _, time))| time.as_str() <= cutoff.as_str())
        .map(|(payment_id, (seq, request_id, time))| Gap::NoOutcome {
            payment_id,
            request_id,
            seq,
            time,
        })
        .collect();
    holes.sort_by_key(|g| match g {
        Gap::NoOutcome { seq, .. } => *seq,
        Gap::Spilled(_) => 0,
    });
    let mut out: Vec<Gap> = spilled.into_iter().map(Gap::Spilled).collect();
    out.extend(holes);
    Ok(out)
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
