//! Structural problems of `sidecar.yaml` (a missing or misspelt key, a value of the wrong
//! kind) in words a person can act on: the key's path, its line and column in the file, no
//! Rust type names, and "did you mean" for a misspelt key. Values are not repeated (a secret
//! may sit in the wrong place); a key or a variant name is.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::util::Problem;

/// Deserialize the expanded document `value` into `T`; on failure, the problem at its path,
/// located in `text` (the file as written) when the same problem is found there.
pub(super) fn deserialize<T: DeserializeOwned>(text: &str, value: Value) -> Result<T, Problem> {
    let err = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let path = err.path().to_string();
    let message = words(&err.into_inner().to_string());
    let (path, message) = refine(path, message);
    let at = locate::<T>(text, &path);
    Err(Problem {
        path: if path == "." {
            "sidecar.yaml".into()
        } else {
            path
        },
        message: match at {
            Some((line, column)) => format!("{message} (line {line}, column {column})"),
            None => message,
        },
    })
}

/// Where in `text` the same problem is found: the file read as written gives the parser's
/// position when the problem is structural (an `${ENV}` value may move it; then no position).
fn locate<T: DeserializeOwned>(text: &str, path: &str) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    let err = serde_path_to_error::deserialize::<_, T>(de).err()?;
    let (found, _) = refine(err.path().to_string(), words(&err.inner().to_string()));
    if found != path {
        return None;
    }
    err.inner().location().map(|l| (l.line(), l.column()))
}

/// A missing field is reported at its parent: name the field itself.
fn refine(path: String, message: String) -> (String, String) {
    let Some(field) = message
        .strip_prefix("required key `")
        .and_then(|m| m.split('`').next())
    else {
        return (path, message);
    };
    let full = if path == "." {
        field.to_string()
    } else {
        format!("{path}.{field}")
    };
    (full, "required here, but missing".into())
}

/// serde's message, reworded: no positions (given apart), no Rust type names, no values.
pub(super) fn words(raw: &str) -> String {
    let msg = raw.split(" at line ").next().unwrap_or(raw).trim();
    let msg = msg
        .split_once(": ")
        .filter(|(head, _)| is_path(head))
        .map_or(msg, |(_, m)| m);
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return format!("required key `{field}` is missing");
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
        return unknown("key", key, tail, "this section takes no keys");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
        return unknown("value", value, tail, "no value is accepted here");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((found, expected)) = msg
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            let (expected, found) = (expected_words(expected), kind(found));
            return format!("expected {expected}, found {found}");
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid length ") {
        return format!("wrong number of items ({rest})");
    }
    mask_hex(msg)
}

/// Any run of 64 or more hex digits (a key, a signature) hidden.
fn mask_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 64 {
            out.push_str("[hex hidden]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// yaml_serde prefixes some messages with the path it knows (`inbound.routes[0]: …`).
fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

/// An unknown key or variant: the closest valid one, if close, and the valid ones.
fn unknown(what: &str, got: &str, tail: &str, none: &str) -> String {
    let valid: Vec<&str> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|v| !v.is_empty())
        .collect();
    if valid.is_empty() {
        return format!("unknown {what} `{got}`: {none}");
    }
    let list = valid.join(", ");
    match closest(got, &valid) {
        Some(near) => {
            format!("unknown {what} `{got}`: did you mean `{near}`? (valid here: {list})")
        }
        None => format!("unknown {what} `{got}` (valid here: {list})"),
    }
}

/// The valid name nearest to `got`, if it is a likely typo (a few edits away).
fn closest<'a>(got: &str, valid: &[&'a str]) -> Option<&'a str> {
    let got = got.to_ascii_lowercase().replace('-', "_");
    valid
        .iter()
        .map(|v| (edits(&got, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// What serde says it expected, without Rust type names.
fn expected_words(e: &str) -> String {
    let e = e.trim();
    let named = match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number of 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "string" => "text",
        "a sequence" => "a list",
        "a map" => "a mapping of keys",
        "unit" => "nothing",
        _ => "",
    };
    if !named.is_empty() {
        return named.to_string();
    }
    if e.starts_with("struct ") || e.starts_with("a map") {
        return "a mapping of keys".into();
    }
    if e.starts_with("enum ") {
        return "one of the accepted names".into();
    }
    if let Some(inner) = e.strip_prefix("option ") {
        return expected_words(inner);
    }
    mask_hex(e)
}

/// The kind of value found, never the value itself.
fn kind(found: &str) -> &'static str {
    let f = found.trim();
    if f.starts_with("floating point") {
        "a decimal number"
    } else if f.starts_with("integer") {
        "a whole number"
    } else if f.starts_with("string") {
        "text"
    } else if f.starts_with("boolean") {
        "true or false"
    } else if f.starts_with("sequence") {
        "a list"
    } else if f.starts_with("map") {
        "a mapping"
    } else if f.starts_with("unit") || f.starts_with("null") {
        "nothing"
    } else {
        "another kind of value"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_are_reworded_without_types_or_values() {
        assert_eq!(
            words("invalid type: floating point `0.01`, expected a string at line 3 column 9"),
            "expected text, found a decimal number"
        );
        assert_eq!(
            words("invalid type: string \"0xabc\", expected u64"),
            "expected a whole number of 0 or more, found text"
        );
        assert_eq!(
            words("unknown field `pricee`, expected one of `method`, `path`, `price`, `accepts`"),
            "unknown key `pricee`: did you mean `price`? (valid here: method, path, price, accepts)"
        );
        assert_eq!(
            words("unknown field `zzz`, expected `a` or `b`"),
            "unknown key `zzz` (valid here: a, b)"
        );
        assert_eq!(
            words("unknown variant `lokal`, expected `local` or `http`"),
            "unknown value `lokal`: did you mean `local`? (valid here: local, http)"
        );
        assert_eq!(
            words("inbound.routes[0]: missing field `pay_to`"),
            "required key `pay_to` is missing"
        );
    }

    #[test]
    fn a_far_name_is_not_suggested() {
        assert_eq!(closest("frobnicate", &["path", "price"]), None);
        assert_eq!(closest("Rpc-Url", &["rpc_url", "network"]), Some("rpc_url"));
    }
}
