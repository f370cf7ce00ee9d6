//! What anchors the chain at both ends, and the bodies kept beside it.
//!
//! - The head file (`head.json`) names the last record of the last fsync'd batch and the base
//!   the journal starts from: the last record of the newest day pruned by retention (or
//!   nothing, [`GENESIS`]). It is rewritten (a new file renamed over the old one) after every
//!   fsync of the journal, so it never names a record that is not on disk; after a power cut it
//!   may lag the last batch. `audit verify` checks that the journal reaches the head (cutting
//!   the last records or deleting the newest day file fails) and starts at the base (deleting
//!   the oldest day file fails, pruning by retention does not).
//! - The bodies files (`bodies-YYYY-MM-DD.jsonl`): the request body and the delivered answer
//!   of a paid call, one line each, named by the seq of the record whose `bodies` lists them;
//!   the record carries their sha256 (`requestSha256`, `answerSha256`). Pruned with their day.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{AuditError, GENESIS};
use crate::util::sha256_hex;

/// The head file's name in the journal directory.
pub const HEAD_FILE: &str = "head.json";

/// The head: the last record on disk and the record the journal starts after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// The last record of the last fsync'd batch (0 and [`GENESIS`]: none yet).
    pub seq: u64,
    pub hash: String,
    /// The record the journal starts after: the last one pruned by retention (0 and
    /// [`GENESIS`]: nothing pruned, the journal starts at record 1).
    pub base_seq: u64,
    pub base_hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.into(),
            base_seq: 0,
            base_hash: GENESIS.into(),
        }
    }
}

/// The head of the journal in `dir`, `None` if there is no head file.
pub fn read_head(dir: &Path) -> Result<Option<Head>, AuditError> {
    let path = dir.join(HEAD_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuditError::Broken {
                file: path,
                line: 1,
                why: format!("not a journal head: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::Io(path, e)),
    }
}

/// Replace the head file: written beside it, then renamed over it (never half a head).
pub(super) fn write_head(dir: &Path, head: &Head) -> Result<(), AuditError> {
    let path = dir.join(HEAD_FILE);
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let bytes = serde_json::to_vec(head).map_err(|e| AuditError::Io(path.clone(), e.into()))?;
    std::fs::write(&tmp, bytes).map_err(|e| AuditError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| AuditError::Io(path, e))
}

/// A body kept with a record: what it is (`request`, `answer`) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub role: String,
    pub bytes: bytes::Bytes,
}

impl Body {
    /// The record's details key for this body's sha256 (`requestSha256`, `answerSha256`).
    pub fn hash_key(role: &str) -> String {
        format!("{role}Sha256")
    }
}

/// One line of a bodies file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BodyLine {
    /// The seq of the record that lists this body.
    pub seq: u64,
    pub role: String,
    pub sha256: String,
    /// `base64` when the body is not UTF-8 text; absent for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    pub body: String,
}

impl BodyLine {
    pub(super) fn new(seq: u64, b: &Body) -> BodyLine {
        let (encoding, body) = match std::str::from_utf8(&b.bytes) {
            Ok(text) => (None, text.to_string()),
            Err(_) => (
                Some("base64".to_string()),
                base64::engine::general_purpose::STANDARD.encode(&b.bytes),
            ),
        };
        BodyLine {
            seq,
            role: b.role.clone(),
            sha256: sha256_hex(&b.bytes),
            encoding,
            body,
        }
    }

    /// The body's bytes as they were received or sent (`None`: undecodable).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self.encoding.as_deref() {
            None => Some(self.body.clone().into_bytes()),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(&self.body)
                .ok(),
            Some(_) => None,
        }
    }
}

/// The bodies file of a day, in `dir`.
pub(super) fn bodies_path(dir: &Path, day: &str) -> PathBuf {
    dir.join(format!("bodies-{day}.jsonl"))
}

/// Every body of a day, by `(seq, role)` (an absent file is an empty day; a line that cannot
/// be read is skipped: `verify` reports the body as missing).
pub fn read_bodies(dir: &Path, day: &str) -> Result<HashMap<(u64, String), BodyLine>, AuditError> {
    let path = bodies_path(dir, day);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(AuditError::Io(path, e)),
    };
    let mut out = HashMap::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| AuditError::Io(path.clone(), e))?;
        if let Ok(b) = serde_json::from_str::<BodyLine>(&line) {
            out.insert((b.seq, b.role.clone()), b);
        }
    }
    Ok(out)
}
