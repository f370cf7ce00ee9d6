//! The field readers the contract is written with: aliases ([`pick`]), numbers in ranges
//! ([`num`]), bounded strings and lists, optional objects — each one records
//! its problems as `{path, reason}` and lets the caller go on, so a reply lists them all.
//! Used by the request's sections in [`super`] and [`super::account`].

use serde_json::{Map, Value};

use super::FieldError;

/// The problems found so far, in the order the fields are read.
#[derive(Default)]
pub(super) struct Errs(pub Vec<FieldError>);

impl Errs {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(path, reason));
    }
}

/// `at.key`, or `key` at the root.
pub(super) fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// The value under the first of `keys` present and not null, with the key used. Two aliases
/// present with different values is a contradiction.
pub(super) fn pick<'a>(
    o: &'a Map<String, Value>,
    at: &str,
    keys: &[&'static str],
    e: &mut Errs,
) -> Option<(&'static str, &'a Value)> {
    let present: Vec<(&'static str, &Value)> = keys
        .iter()
        .filter_map(|k| o.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
        .collect();
    let (first_key, first) = *present.first()?;
    for (k, v) in &present[1..] {
        let same = match (number(first), number(v)) {
            (Some(a), Some(b)) => a == b,
            _ => first == *v,
        };
        if !same {
            e.push(
                join(at, k),
                format!("contradicts `{first_key}`; send one of them"),
            );
        }
    }
    Some((first_key, first))
}

/// A JSON number, or a string holding one (Hyperliquid sends decimals as strings).
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            // `str::parse::<f64>` also takes "inf" and "NaN"; only plain decimals are numbers here.
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
            {
                return None;
            }
            t.parse().ok()
        }
        _ => None,
    }
}

/// Which numbers a field accepts.
#[derive(Clone, Copy)]
pub(super) enum Range {
    /// `[0, max]`
    NonNegative(f64),
    /// `(0, max]`
    Positive(f64),
    /// `[-max, max]`
    Signed(f64),
}

impl Range {
    fn contains(self, n: f64) -> bool {
        match self {
            Range::NonNegative(max) => (0.0..=max).contains(&n),
            Range::Positive(max) => n > 0.0 && n <= max,
            Range::Signed(max) => (-max..=max).contains(&n),
        }
    }

    fn describe(self) -> String {
        match self {
            Range::NonNegative(max) => format!("between 0 and {max}"),
            Range::Positive(max) => format!("more than 0 and at most {max}"),
            Range::Signed(max) => format!("between -{max} and {max}"),
        }
    }
}

/// A number under one of `keys` (aliases), finite and within `range`; when `required`, a
/// problem at the first key if none of them is sent.
pub(super) fn num(
    o: &Map<String, Value>,
    at: &str,
    keys: &[&'static str],
    required: bool,
    range: Range,
    e: &mut Errs,
) -> Option<f64> {
    let Some((key, v)) = pick(o, at, keys, e) else {
        if required {
            e.push(join(at, keys[0]), "required: a number");
        }
        return None;
    };
    let path = join(at, key);
    let Some(n) = number(v).filter(|n| n.is_finite()) else {
        e.push(path, format!("must be a finite number, not {}", kind_of(v)));
        return None;
    };
    if !range.contains(n) {
        e.push(
            path,
            format!("{n} is out of range: must be {}", range.describe()),
        );
        return None;
    }
    Some(n)
}

/// A non-empty string of at most `max` characters, without control characters (newlines and
/// tabs allowed), and only `allowed` characters when given.
pub(super) fn check_string(
    v: &Value,
    path: &str,
    max: usize,
    allowed: Option<fn(char) -> bool>,
    e: &mut Errs,
) -> Option<String> {
    let Some(s) = v.as_str() else {
        e.push(path, "must be a string");
        return None;
    };
    let s = s.trim();
    let n = s.chars().count();
    if n == 0 {
        e.push(path, "must not be empty");
        return None;
    }
    if n > max {
        e.push(path, format!("{n} characters; at most {max}"));
        return None;
    }
    if let Some(bad) = s.chars().find(|c| {
        (c.is_control() && !matches!(c, '\n' | '\t')) || allowed.is_some_and(|ok| !ok(*c))
    }) {
        e.push(path, format!("must not contain {bad:?}"));
        return None;
    }
    Some(s.to_string())
}

/// An optional free-text field `key` of `o` (absent or null: none), checked at `path`.
pub(super) fn optional_string(
    o: &Map<String, Value>,
    key: &str,
    path: &str,
    max: usize,
    e: &mut Errs,
) -> Option<String> {
    o.get(key)
        .filter(|v| !v.is_null())
        .and_then(|v| check_string(v, path, max, None, e))
}

/// An optional object (absent or null: none); anything else is the problem `wrong_type`.
pub(super) fn optional_object<'a>(
    v: Option<&'a Value>,
    path: &str,
    wrong_type: &str,
    e: &mut Errs,
) -> Option<&'a Map<String, Value>> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(_) => {
            e.push(path, wrong_type);
            None
        }
    }
}

/// An optional array of at most `max` items (absent or null: empty); too many items is a
/// problem counted in `noun`s, anything but an array is the problem `wrong_type`.
pub(super) fn array<'a>(
    v: Option<&'a Value>,
    path: &str,
    max: usize,
    noun: &str,
    wrong_type: &str,
    e: &mut Errs,
) -> &'a [Value] {
    match v {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) if items.len() > max => {
            e.push(path, format!("{} {noun}; at most {max}", items.len()));
            &[]
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            e.push(path, wrong_type);
            &[]
        }
    }
}

/// An optional list of at most `max_items` strings, each checked as [`check_string`].
pub(super) fn string_list(
    v: Option<&Value>,
    path: &str,
    max_items: usize,
    max_len: usize,
    allowed: Option<fn(char) -> bool>,
    e: &mut Errs,
) -> Vec<String> {
    array(
        v,
        path,
        max_items,
        "entries",
        "must be an array of strings",
        e,
    )
    .iter()
    .enumerate()
    .filter_map(|(i, x)| check_string(x, &format!("{path}[{i}]"), max_len, allowed, e))
    .collect()
}

/// Symbols as exchanges spell them: `ETH-PERP`, `ETHUSDT`, `kPEPE`, `xyz:TSLA`, `@107`.
pub(super) fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@')
}

/// What a JSON value is, for a sentence that must not quote it.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number out of range",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
