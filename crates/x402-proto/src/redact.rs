//! Errors name, never echo: what a refusal or a log line may say about a value it received.
//!
//! - [`mask_hex`], the safety net: any run of 64 or more hex digits (a signature, an EIP-3009
//!   nonce, a private key, a transaction hash) is cut to its first and last four digits, so
//!   no such value leaves through a message, whatever built it.
//! - [`json_error`]: a serde decode error as "field `payload.authorization.value`: …", naming the
//!   field and the kind of problem, never the value (serde's own messages quote it).

use std::borrow::Cow;

/// The shortest hex run that is masked: a 32-byte value (a nonce, a key, a hash) and longer.
pub const MASKED_HEX_RUN: usize = 64;

/// `text` with every run of [`MASKED_HEX_RUN`] or more hex digits (after an optional `0x`)
/// replaced by its first and last four digits around `…`.
pub fn mask_hex(text: &str) -> String {
    match mask(text) {
        Cow::Borrowed(s) => s.to_string(),
        Cow::Owned(s) => s,
    }
}

fn mask(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start >= MASKED_HEX_RUN {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[last..start]);
            o.push_str(&text[start..start + 4]);
            o.push('…');
            o.push_str(&text[i - 4..i]);
            last = i;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[last..]);
            Cow::Owned(o)
        }
    }
}

/// True when `text` holds a run of [`MASKED_HEX_RUN`] or more hex digits.
pub fn has_long_hex(text: &str) -> bool {
    let mut run = 0;
    for b in text.bytes() {
        if b.is_ascii_hexdigit() {
            run += 1;
            if run >= MASKED_HEX_RUN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Decode JSON `value` into `T`; a failure says which field and what kind of problem, never the
/// value (see [`json_error`]).
pub fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| json_error(&e))
}

/// Decode JSON text into `T`, the same way.
pub fn from_slice<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))
}

/// "field `a.b[0].c` <kind of problem>": the path (segments that are not plain names, such as
/// unknown keys a client chose, shown as `?`) and serde's category of error with the quoted
/// input left out.
pub fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    // Where JSON syntax breaks, the path is only what the client wrote: not shown.
    let (path, kind) = match inner.classify() {
        serde_json::error::Category::Syntax => (String::new(), "is not valid JSON".to_string()),
        serde_json::error::Category::Eof => (
            String::new(),
            "ends before its JSON is complete".to_string(),
        ),
        serde_json::error::Category::Io => (String::new(), "could not be read".to_string()),
        serde_json::error::Category::Data => {
            (field_path(e.path()), data_problem(&inner.to_string()))
        }
    };
    if path.is_empty() || path == "." {
        format!("the payment {kind}")
    } else {
        format!("field `{path}` {kind}")
    }
}

/// The path as `a.b[0]`, every segment a client could have chosen freely shown as `?` (and
/// left out at the end: an unknown key is named by its parent).
pub fn field_path(p: &serde_path_to_error::Path) -> String {
    let mut out = raw_path(p);
    while let Some(parent) = out.strip_suffix(".?") {
        out = parent.to_string();
    }
    if out == "?" {
        out.clear();
    }
    out
}

fn raw_path(p: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                if is_plain_name(key) {
                    out.push_str(key);
                } else {
                    out.push('?');
                }
            }
            serde_path_to_error::Segment::Enum { variant } if is_plain_name(variant) => {
                out.push_str(&format!("::{variant}"))
            }
            _ => out.push_str(".?"),
        }
    }
    out
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Serde's data errors, by their fixed wording, without the value they quote: "invalid type:
/// string \"0xab…\", expected struct ExactEvmPayload" becomes "has the wrong type: a string
/// where struct ExactEvmPayload is expected".
pub fn data_problem(msg: &str) -> String {
    // serde_json appends " at line L column C"; our paths say where.
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    // Our own deserializers' sentences ("is not a decimal integer …") quote nothing.
    if msg.starts_with("is not ") && !msg.contains(['"', '`', '\'']) {
        return mask_hex(msg);
    }
    let expected = msg
        .rsplit_once(", expected ")
        .map(|(_, e)| e)
        .filter(|e| !e.contains('"'))
        .map(|e| {
            // Rust type names mean nothing to a client: a struct or a map is a JSON object.
            if e.starts_with("struct ") || e.starts_with("a map") {
                "an object"
            } else if e.starts_with("a sequence") {
                "an array"
            } else if matches!(e, "u8" | "u16" | "u32" | "u64" | "u128" | "usize") {
                "a whole number ≥ 0"
            } else if matches!(e, "i8" | "i16" | "i32" | "i64" | "i128" | "isize") {
                "a whole number"
            } else if matches!(e, "f32" | "f64") {
                "a number"
            } else {
                e
            }
        });
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let found = rest.split([' ', ',']).next().unwrap_or("value");
        let found = match found {
            "string" | "map" | "sequence" | "boolean" | "integer" | "floating" | "null"
            | "unit" | "char" | "bytes" => found,
            _ => "value",
        };
        return match expected {
            Some(e) => format!(
                "has the wrong type: {} where {e} is expected",
                article(found)
            ),
            None => format!("has the wrong type: {}", article(found)),
        };
    }
    if msg.starts_with("missing field `") {
        let name = msg
            .trim_start_matches("missing field `")
            .split('`')
            .next()
            .filter(|n| is_plain_name(n))
            .unwrap_or("?");
        return format!("lacks its required field `{name}`");
    }
    if msg.starts_with("unknown field") {
        return "has a field that is not allowed here".into();
    }
    if msg.starts_with("unknown variant") {
        return "names a variant that is not known".into();
    }
    if msg.starts_with("invalid length") {
        return match expected {
            Some(e) => format!("has the wrong length: {e} is expected"),
            None => "has the wrong length".into(),
        };
    }
    if msg.starts_with("duplicate field") {
        return "is given twice".into();
    }
    match expected {
        Some(e) => format!("has an invalid value: {e} is expected"),
        None => "has an invalid value".into(),
    }
}

/// "a string", "an integer", "null".
fn article(found: &str) -> String {
    match found {
        "null" | "unit" => "null".into(),
        "map" => "an object".into(),
        "sequence" => "an array".into(),
        "integer" => "an integer".into(),
        "floating" => "a number".into(),
        other => format!("a {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PaymentPayload;

    #[test]
    fn long_hex_runs_are_cut_to_their_ends() {
        let sig = "ab".repeat(65);
        let m = mask_hex(&format!("signature 0x{sig}, nonce {}.", "1".repeat(64)));
        assert_eq!(m, "signature 0xabab…abab, nonce 1111…1111.");
        assert!(!has_long_hex(&m));
        let short = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8 and 63 digits ".to_string()
            + &"f".repeat(63);
        assert_eq!(mask_hex(&short), short, "addresses and shorter runs stay");
        assert!(has_long_hex(&"0".repeat(64)));
    }

    #[test]
    fn decode_errors_name_the_field_never_the_value() {
        let sig = format!("0x{}", "cd".repeat(65));
        let v = serde_json::json!({
            "x402Version": 2,
            "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "1",
                "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "maxTimeoutSeconds": 60},
            "payload": format!("{{\"signature\":\"{sig}\"}}"),
        });
        let e = from_value::<PaymentPayload>(v.clone()).unwrap_err();
        assert!(e.contains("`payload`"), "{e}");
        assert!(
            e.contains("wrong type: a string where an object is expected"),
            "{e}"
        );
        assert!(!e.contains("cdcd"), "{e}");
        // A bad amount, an unknown key chosen by the client, a missing field.
        let mut bad = v.clone();
        bad["payload"] = serde_json::json!({"signature": sig, "authorization": {
            "from": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "value": sig.clone(), "validAfter": "0", "validBefore": "1",
            "nonce": format!("0x{}", "11".repeat(32))}});
        let e = from_value::<PaymentPayload>(bad.clone()).unwrap_err();
        assert!(e.contains("payload.authorization.value"), "{e}");
        assert!(e.contains("is not a decimal integer"), "{e}");
        assert!(!e.contains("cdcd"), "{e}");
        let mut unknown = bad.clone();
        unknown["payload"]["authorization"]["value"] = serde_json::json!("1");
        unknown["payload"]["authorization"][format!("0x{}", "ee".repeat(40))] =
            serde_json::json!(1);
        let e = from_value::<PaymentPayload>(unknown).unwrap_err();
        assert!(!e.contains("eeee"), "{e}");
        assert!(e.contains("not allowed"), "{e}");
        assert!(e.contains("`payload.authorization`"), "{e}");
        let mut missing = bad;
        missing["payload"]["authorization"]
            .as_object_mut()
            .unwrap()
            .remove("nonce");
        missing["payload"]["authorization"]["value"] = serde_json::json!("1");
        let e = from_value::<PaymentPayload>(missing).unwrap_err();
        assert!(e.contains("`nonce`"), "{e}");
        let e = from_slice::<PaymentPayload>(b"{\"x402Version\": 2, ").unwrap_err();
        assert!(e.contains("ends before"), "{e}");
    }
}
