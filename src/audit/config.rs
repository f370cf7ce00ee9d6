//! The `audit:` section of `sidecar.yaml`: where the journal lives and how long it is kept.

use std::path::PathBuf;

use serde::Deserialize;

use super::{AuditError, Journal};
use crate::util::Problem;

/// The section as written. On unless disabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory of the day files (`audit-YYYY-MM-DD.jsonl`).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Days kept; older day files are deleted (at least 90 is the requirement).
    #[serde(default = "default_retention")]
    pub retention_days: u64,
    /// Where records the journal cannot write (a full disk) wait until it can: on another
    /// disk, so they survive a restart. Unset: in memory only.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: default_dir(),
            retention_days: default_retention(),
            spill_dir: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_dir() -> PathBuf {
    "x402-audit".into()
}
fn default_retention() -> u64 {
    90
}

/// The journal to open: the section of an enabled journal that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSpec {
    pub dir: PathBuf,
    pub retention_days: u64,
    pub spill_dir: Option<PathBuf>,
}

impl AuditConfig {
    /// `None` when disabled, or (with a problem) when the section is wrong.
    pub(crate) fn resolve(&self, problems: &mut Vec<Problem>) -> Option<JournalSpec> {
        if !self.enabled {
            return None;
        }
        if self.retention_days == 0 {
            problems.push(Problem {
                path: "audit.retention_days".into(),
                message: "must be at least 1 (the requirement is 90 days or more)".into(),
            });
            return None;
        }
        if self.spill_dir.as_ref() == Some(&self.dir) {
            problems.push(Problem {
                path: "audit.spill_dir".into(),
                message: "must not be audit.dir: the spill keeps what the journal's disk could not take, so it belongs on another disk".into(),
            });
            return None;
        }
        Some(JournalSpec {
            dir: self.dir.clone(),
            retention_days: self.retention_days,
            spill_dir: self.spill_dir.clone(),
        })
    }
}

impl JournalSpec {
    /// Open (or create) the journal.
    pub(crate) fn open(&self) -> Result<Journal, AuditError> {
        Journal::open_with_spill(&self.dir, self.retention_days, self.spill_dir.as_deref())
    }

    /// One line for `check-config`.
    pub(crate) fn describe(spec: Option<&Self>) -> String {
        match spec {
            Some(s) => format!(
                "{} (kept {} days; spill {})",
                s.dir.display(),
                s.retention_days,
                match &s.spill_dir {
                    Some(d) => d.display().to_string(),
                    None => "in memory only: set audit.spill_dir on another disk to keep it across a restart".into(),
                }
            ),
            None => "disabled".into(),
        }
    }
}
