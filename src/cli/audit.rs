//! `audit`: read the journal — verify its hash chain, show one request's whole life, list,
//! export.

use std::path::Path;

use clap::{Subcommand, ValueEnum};

use super::{Failure, Outcome, failed, pretty};
use crate::audit;
use crate::buyer::config::Owners;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check that no record was edited, inserted, deleted, moved or cut off, that no day file
    /// was deleted or renamed, that the kept bodies match their records, and that none is
    /// missing: records still waiting in the spill, payments forwarded with no outcome record
    /// (exit 1, one line per problem).
    Verify {
        /// The spill directory (audit.spill_dir in sidecar.yaml), if one is set.
        #[arg(long)]
        spill_dir: Option<std::path::PathBuf>,
        /// A payment forwarded less than this long ago with no outcome yet is still in
        /// progress, not a hole.
        #[arg(long, default_value_t = audit::OPEN_GRACE_SECS)]
        grace_secs: u64,
    },
    /// Every record about a request id, payment id or transaction hash, with the request body
    /// and the answer it kept.
    Show { id: String },
    /// Records since a day, optionally for one payer.
    List {
        /// YYYY-MM-DD
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        payer: Option<String>,
        /// Only a buyer account owner's records (as logged: the address, or its `hmac:` form).
        #[arg(long)]
        owner: Option<String>,
        /// Hash `--owner` first, with the key in `--key-env`, to find records written with
        /// `outbound.owners.log: hashed`.
        #[arg(long, requires = "owner")]
        hash_owner: bool,
        /// Environment variable holding the owner hash key.
        #[arg(long, default_value = "X402_OWNER_HASH_KEY")]
        key_env: String,
    },
    /// All records, for accounting.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// `audit list`: records since a day, of one payer, of one buyer account owner.
fn list_records(
    dir: &Path,
    since: Option<String>,
    payer: Option<String>,
    owner: Option<String>,
    print: impl Fn(&[audit::Record]),
) -> Result<(), audit::AuditError> {
    let same = |field: Option<&str>, want: &Option<String>| {
        want.as_deref()
            .is_none_or(|w| field.is_some_and(|x| x.eq_ignore_ascii_case(w)))
    };
    let all = audit::read_all(dir)?;
    let records: Vec<_> = all
        .into_iter()
        .filter(|r| since.as_deref().is_none_or(|d| r.time.as_str() >= d))
        .filter(|r| same(r.payer.as_deref(), &payer))
        .filter(|r| same(r.details.get("owner").and_then(|v| v.as_str()), &owner))
        .collect();
    print(&records);
    Ok(())
}

/// `audit verify`: the chain, then the gaps (spilled records, holes), one line per problem.
fn verify(dir: &Path, spill_dir: Option<&Path>, grace_secs: u64) -> Outcome {
    let (v, problems) = audit::check(dir).map_err(failed(""))?;
    if !problems.is_empty() {
        for p in &problems {
            println!("{p}");
        }
        // The gaps too, where the files can still be read.
        if let Ok(gaps) = audit::gaps(dir, spill_dir, crate::util::now_secs(), grace_secs) {
            for g in &gaps {
                println!("{g}");
            }
        }
        return Err(Failure::new(format!(
            "{}: the journal of {} record(s) in {} file(s) is not intact: {} problem(s) (above)",
            dir.display(),
            v.records,
            v.files,
            problems.len()
        )));
    }
    let gaps =
        audit::gaps(dir, spill_dir, crate::util::now_secs(), grace_secs).map_err(failed(""))?;
    if gaps.is_empty() {
        println!(
            "{}: OK, {} record(s) in {} file(s), hash chain intact, no record missing",
            dir.display(),
            v.records,
            v.files
        );
        return Ok(());
    }
    for g in &gaps {
        println!("{g}");
    }
    Err(Failure::new(format!(
        "{}: the hash chain of {} record(s) in {} file(s) is intact, but {} record(s) or outcome(s) are missing from it (above)",
        dir.display(),
        v.records,
        v.files,
        gaps.len()
    )))
}

/// `audit show`: the records, then the bodies they kept (pretty if JSON).
fn show(dir: &Path, id: &str, print: impl Fn(&[audit::Record])) -> Result<(), audit::AuditError> {
    let records = audit::show(dir, id)?;
    if records.is_empty() {
        println!("no record mentions {id}");
        return Ok(());
    }
    print(&records);
    for r in &records {
        for b in audit::bodies_of(dir, r)? {
            let text = match b.bytes() {
                Some(bytes) => {
                    let same = crate::util::sha256_hex(&bytes) == b.sha256;
                    format!(
                        "{}{}",
                        pretty(&bytes),
                        if same {
                            ""
                        } else {
                            "\n(altered: its sha256 is not the one recorded; see `audit verify`)"
                        }
                    )
                }
                None => "(unreadable)".into(),
            };
            println!(
                "\n--- {} body of record #{} ({}, request {}, sha256 {}):\n{text}",
                b.role,
                r.seq,
                r.event,
                r.request_id.as_deref().unwrap_or("-"),
                b.sha256
            );
        }
    }
    Ok(())
}

/// `audit`: verify, show, list or export the journal.
pub(super) fn audit(dir: &Path, cmd: AuditCmd) -> Outcome {
    use crate::audit as a;
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "no audit journal at {}: the directory does not exist (give --dir the audit.dir of sidecar.yaml)",
            dir.display()
        )));
    }
    let print = |records: &[a::Record]| {
        for r in records {
            println!(
                "{}  #{:<6} {:<20} req {}  pay {}  tx {}  payer {}  {}",
                r.time,
                r.seq,
                r.event,
                r.request_id.as_deref().unwrap_or("-"),
                r.payment_id.as_deref().unwrap_or("-"),
                r.tx.as_deref().unwrap_or("-"),
                r.payer.as_deref().unwrap_or("-"),
                serde_json::to_string(&r.details).unwrap_or_default()
            );
        }
    };
    let result = match cmd {
        AuditCmd::Verify {
            spill_dir,
            grace_secs,
        } => return verify(dir, spill_dir.as_deref(), grace_secs),
        AuditCmd::Show { id } => show(dir, &id, print),
        AuditCmd::List {
            since,
            payer,
            owner,
            hash_owner,
            key_env,
        } => {
            let since = super::since_day("--since", since)?;
            let owner = match (owner, hash_owner) {
                (Some(o), true) => {
                    let key = std::env::var(&key_env).unwrap_or_default();
                    Owners::hashed(key.as_bytes())
                        .map_err(|e| Failure::usage(format!("{key_env}: {e}")))?
                        .render(&o)
                }
                (o, _) => o,
            };
            list_records(dir, since, payer, owner, print)
        }
        AuditCmd::Export { format } => a::read_all(dir).map(|all| match format {
            ExportFormat::Csv => print!("{}", a::to_csv(&all)),
            ExportFormat::Jsonl => {
                for r in &all {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
            }
        }),
    };
    result.map_err(failed(""))
}
