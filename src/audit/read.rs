//! Reading the journal back: its day files, every record, the chain check (`audit verify`),
//! one request's whole life and the bodies it kept (`audit show`) and the accounting export.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::anchor::{Body, BodyLine, HEAD_FILE, read_bodies, read_head};
use super::spill::{SPILL_FILE, Spilled, read_spill};
use super::{AuditError, GENESIS, Kind, Record, record_hash};
use crate::util::{rfc3339, sha256_hex};

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

/// [`check`], failing with every problem found ([`AuditError::Tampered`]).
pub fn verify(dir: &Path) -> Result<Verified, AuditError> {
    let (v, problems) = check(dir)?;
    if problems.is_empty() {
        Ok(v)
    } else {
        Err(AuditError::Tampered(problems))
    }
}

/// Walk the chain across all day files, from the head's base (where retention cut) to the
/// head (the last record on disk), and check every record's hash, its place in the chain, its
/// day file and its kept bodies. Returns what was read and one sentence per problem found.
pub fn check(dir: &Path) -> Result<(Verified, Vec<String>), AuditError> {
    let head = match read_head(dir) {
        Ok(h) => h,
        Err(AuditError::Broken { why, .. }) => {
            return Ok((
                Verified {
                    records: 0,
                    files: 0,
                },
                vec![format!(
                    "{HEAD_FILE}: {why}: the journal's ends cannot be checked"
                )],
            ));
        }
        Err(e) => return Err(e),
    };
    let (base_seq, base_hash) = head
        .as_ref()
        .map(|h| (h.base_seq, h.base_hash.clone()))
        .unwrap_or((0, GENESIS.to_string()));
    let files = day_files(dir)?;
    let mut problems = Vec::new();
    let mut prev: Option<(u64, String)> = None;
    let mut records = 0;
    for (day, path) in &files {
        let bodies = read_bodies(dir, day)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let f = std::fs::File::open(path).map_err(|e| AuditError::Io(path.clone(), e))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| AuditError::Io(path.clone(), e))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{name} line {}", i + 1);
            let r: Record = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(_) => {
                    problems.push(format!("{at}: not a journal record (a cut or edited line)"));
                    continue;
                }
            };
            let seq = r.seq;
            if record_hash(&r) != r.hash {
                problems.push(format!(
                    "{at}: record {seq} was altered: its hash does not match its content"
                ));
            }
            if r.time.get(..10) != Some(day.as_str()) {
                problems.push(format!(
                    "{at}: record {seq} is dated {} but is in the day file of {day}: records were moved between day files or a file was renamed",
                    r.time.get(..10).unwrap_or("-")
                ));
            }
            match &prev {
                None if seq <= base_seq => {}
                None if seq == base_seq + 1 => {
                    if r.prev_hash != base_hash {
                        problems.push(format!(
                            "{at}: record {seq}, the first of the journal, does not follow where the journal starts (record {base_seq}): it was replaced"
                        ));
                    }
                }
                None => problems.push(format!(
                    "{at}: the journal starts at record {seq}, but only records up to {base_seq} were pruned by retention: record(s) {} to {} are missing (the oldest day file was deleted?)",
                    base_seq + 1,
                    seq - 1
                )),
                Some((p, _)) if seq <= *p => problems.push(format!(
                    "{at}: record {seq} comes after record {p}: the records are out of order"
                )),
                Some((p, _)) if seq != p + 1 => problems.push(format!(
                    "{at}: record {seq} follows record {p}: {} record(s) missing (lines cut or a day file deleted)",
                    seq - p - 1
                )),
                Some((p, h)) => {
                    if &r.prev_hash != h {
                        problems.push(format!(
                            "{at}: record {seq} does not follow record {p}: a record before it was removed or replaced"
                        ));
                    }
                }
            }
            if base_seq > 0 && seq == base_seq && r.hash != base_hash {
                problems.push(format!(
                    "{at}: record {seq} is not the record the journal's head says retention cut at"
                ));
            }
            if let Some(h) = &head
                && seq == h.seq
                && r.hash != h.hash
            {
                problems.push(format!(
                    "{at}: record {seq} is not the record the head names as the last written: it was replaced"
                ));
            }
            for role in kept_roles(&r) {
                let want = r
                    .details
                    .get(&Body::hash_key(&role))
                    .and_then(|v| v.as_str());
                match bodies.get(&(seq, role.clone())) {
                    None => problems.push(format!(
                        "{at}: the {role} body of record {seq} is missing from bodies-{day}.jsonl"
                    )),
                    Some(b) => {
                        let got = b.bytes().map(|x| sha256_hex(&x));
                        if got.as_deref() != want {
                            problems.push(format!(
                                "{at}: the {role} body of record {seq} in bodies-{day}.jsonl was altered: its sha256 is not the record's"
                            ));
                        }
                    }
                }
            }
            if prev.as_ref().is_none_or(|(p, _)| seq > *p) {
                prev = Some((seq, r.hash.clone()));
            }
            records += 1;
        }
    }
    let last = prev.as_ref().map_or(base_seq, |(s, _)| *s);
    match &head {
        None if records > 0 => problems.push(format!(
            "{HEAD_FILE} is missing: the end of the journal cannot be checked (its last records may have been cut off); the sidecar writes it again with its next record"
        )),
        Some(h) if h.seq > last => problems.push(format!(
            "the journal ends at record {last}, but its head says record {} was written: the last {} record(s) were cut off or the newest day file was deleted",
            h.seq,
            h.seq - last
        )),
        _ => {}
    }
    Ok((
        Verified {
            records,
            files: files.len(),
        },
        problems,
    ))
}

/// The roles of the bodies a record keeps in its day's bodies file.
fn kept_roles(r: &Record) -> Vec<String> {
    r.details
        .get("bodies")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The bodies record `r` keeps (request, answer), as they are in its day's bodies file.
pub fn bodies_of(dir: &Path, r: &Record) -> Result<Vec<BodyLine>, AuditError> {
    let roles = kept_roles(r);
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    let Some(day) = r.time.get(..10) else {
        return Ok(Vec::new());
    };
    let mut all = read_bodies(dir, day)?;
    Ok(roles
        .into_iter()
        .filter_map(|role| all.remove(&(r.seq, role)))
        .collect())
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
