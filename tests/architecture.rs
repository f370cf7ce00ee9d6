//! The house rules, checked: which part of the sidecar may use which (README, "Architecture").
//!
//! Two checks. (1) The protocol core, `crates/x402-proto`, builds without any crate that does
//! I/O (tokio, pingora, reqwest, alloy-provider, redis): read from `cargo metadata`'s resolved
//! graph, normal dependencies only. (2) Every `crate::<part>` path in `src/` (in `use` lines and
//! in code, grouped imports included) points to a part its own part may use, and the parts form
//! no cycle. A new import that breaks a rule fails `make test` with the file, the line and the
//! rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts every role may use: the protocol, the shared lower parts, the EVM side, the
/// stores, the journal and telemetry.
const SHARED: &[&str] = &[
    "x402",
    "util",
    "http",
    "breaker",
    "evm",
    "store",
    "audit",
    "telemetry",
];

/// The sidecar's top-level parts and what each may use (besides itself and the crate root's
/// `init_tls`), lowest first: each part may use only parts listed before it. `x402` is the
/// protocol crate, re-exported as `crate::x402`.
fn rules() -> Vec<(&'static str, Vec<&'static str>)> {
    let with = |base: &[&'static str], more: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(more).copied().collect()
    };
    let roles = with(SHARED, &["advisor"]);
    let config = with(&roles, &["seller", "buyer", "facilitator"]);
    let devkit = with(&config, &["config"]);
    let cli = with(&devkit, &["devkit"]);
    vec![
        ("x402", vec![]),
        ("util", vec![]),
        ("breaker", vec![]),
        ("http", vec!["util"]),
        ("evm", vec!["x402", "util", "http"]),
        // The store implements the settler's nonce lease (`evm::NonceLeases`) on Redis.
        ("store", vec!["x402", "util", "evm"]),
        ("audit", vec!["x402", "util"]),
        ("telemetry", vec!["x402", "util", "http", "evm", "store"]),
        ("advisor", vec!["x402", "util", "http", "breaker"]),
        ("seller", roles.clone()),
        ("buyer", roles.clone()),
        ("facilitator", roles),
        ("config", config),
        ("devkit", devkit),
        ("cli", cli),
    ]
}

/// Items of the crate root that any part may use.
const ROOT_ITEMS: &[&str] = &["init_tls"];

/// Crates the protocol core must never depend on, directly or not.
const IO_CRATES: &[&str] = &[
    "tokio",
    "pingora-core",
    "pingora-proxy",
    "reqwest",
    "alloy-provider",
    "redis",
    "hyper",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part a file belongs to: `src/seller/paid.rs` → `seller`, `src/util.rs` → `util`.
fn part_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Code without comments (line comments, doc comments, block comments) and string contents.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            // skip a plain string literal (escapes honoured); raw strings are rare here and
            // hold no `crate::` paths
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // a char literal such as '"' or '{'
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level names a `crate::…` path at the start of `rest` reaches (`crate::{a, b::c}` → a, b).
fn tops(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut names = Vec::new();
        let mut depth = 0usize;
        let mut at_item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => at_item_start = true,
                c if at_item_start && (c.is_ascii_alphabetic() || c == '_') && depth == 0 => {
                    let name = ident_at(&group[i..]);
                    if name != "self" {
                        names.push(name.to_string());
                    }
                    at_item_start = false;
                }
                _ => {}
            }
        }
        names
    } else {
        vec![ident_at(rest).to_string()]
    }
}

/// Every `crate::` reference in `src/`: (file, line, from part, to part).
fn references() -> Vec<(PathBuf, usize, String, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut refs = Vec::new();
    for file in files {
        let Some(from) = part_of(&src, &file) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (n, line) in code.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let before = rest[..at].chars().last();
                rest = &rest[at + "crate::".len()..];
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue; // `x402_sidecar::crate::`-like false friends, `$crate::`
                }
                for to in tops(rest) {
                    refs.push((file.clone(), n + 1, from.clone(), to));
                }
            }
        }
    }
    refs
}

#[test]
fn every_part_uses_only_the_parts_below_it() {
    let rules: BTreeMap<&str, BTreeSet<&str>> = rules()
        .into_iter()
        .map(|(part, may)| (part, may.into_iter().collect()))
        .collect();
    let refs = references();
    assert!(
        refs.len() > 100,
        "the scan found too few references to be reading the tree"
    );
    let mut broken = Vec::new();
    for (file, line, from, to) in &refs {
        if from == to || ROOT_ITEMS.contains(&to.as_str()) {
            continue;
        }
        let Some(may) = rules.get(from.as_str()) else {
            broken.push(format!(
                "{}: `{from}` is a part the rules do not know; add it to rules() in tests/architecture.rs and to README's Architecture section",
                file.display()
            ));
            continue;
        };
        if !may.contains(to.as_str()) {
            broken.push(format!(
                "{}:{line}: `{from}` uses `crate::{to}`, but {from} may use only {:?}",
                file.strip_prefix(root()).unwrap_or(file).display(),
                may
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden imports:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_rules_have_no_cycle_and_put_roles_side_by_side() {
    // Each part may only use parts listed before it: the table is a topological order.
    let rules = rules();
    let order: Vec<&str> = rules.iter().map(|(p, _)| *p).collect();
    for (i, (part, may)) in rules.iter().enumerate() {
        for m in may {
            let j = order
                .iter()
                .position(|o| o == m)
                .expect("a rule names a known part");
            assert!(
                j < i,
                "{part} may use {m}, which comes after it: a cycle is possible"
            );
        }
    }
    // The roles share only lower parts.
    for role in ["seller", "buyer", "facilitator"] {
        let may = &rules.iter().find(|(p, _)| *p == role).unwrap().1;
        for other in ["seller", "buyer", "facilitator", "config", "devkit", "cli"] {
            assert!(!may.contains(&other), "{role} must not use {other}");
        }
    }
}

#[test]
fn the_scanner_reads_grouped_imports_and_ignores_comments() {
    let code = code_only(
        "use crate::{audit::{Event, Journal}, store, self};\n// crate::buyer\nlet s = \"crate::cli\";\n/* crate::config */ crate::evm::Chain::new();\n",
    );
    let mut seen = Vec::new();
    for line in code.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + 7..];
            seen.extend(tops(rest));
        }
    }
    assert_eq!(seen, ["audit", "store", "evm"]);
}

/// The triple of the machine the tests run on, as `rustc -vV` says.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .trim()
        .to_string()
}

#[test]
fn the_protocol_core_depends_on_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Offline, the graph of this host only: a fresh machine has downloaded no crate that is
    // built for other platforms only, and `cargo metadata` would need them all.
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let nodes: BTreeMap<String, Vec<String>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_string())
                .collect();
            (n["id"].as_str().unwrap().to_string(), normal)
        })
        .collect();
    let core = names
        .iter()
        .find(|(_, name)| name.as_str() == "x402-proto")
        .map(|(id, _)| id.clone())
        .expect("the workspace has the x402-proto crate");
    let (mut seen, mut todo) = (BTreeSet::new(), vec![core]);
    while let Some(id) = todo.pop() {
        if seen.insert(id.clone()) {
            todo.extend(nodes.get(&id).cloned().unwrap_or_default());
        }
    }
    let reached: BTreeSet<&str> = seen.iter().map(|id| names[id].as_str()).collect();
    assert!(
        reached.contains("alloy-primitives"),
        "the walk reads the graph: {reached:?}"
    );
    let bad: Vec<&&str> = IO_CRATES.iter().filter(|c| reached.contains(**c)).collect();
    assert!(
        bad.is_empty(),
        "the protocol core must build without I/O crates, but depends on {bad:?}"
    );
}

/// The paid request's state machine knows no transport: nothing of pingora (nor a `Session`)
/// in `src/seller/machine/`; the pingora service is glue around it.
#[test]
fn the_paid_request_state_machine_knows_no_transport() {
    let mut files = Vec::new();
    rust_files(&root().join("src/seller/machine"), &mut files);
    assert!(!files.is_empty(), "src/seller/machine/ has no Rust file");
    for f in files {
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for word in ["pingora", "Session"] {
            assert!(
                !code.contains(word),
                "{} mentions `{word}`: the state machine must know no transport",
                f.display()
            );
        }
    }
}
