//! The `StrategyRequest` contract, checked before any payment is asked: invalid input is
//! never charged. This is the minimal schema (account, positions, preferences, symbols);
//! field aliases and exchange-native converters refine it later.

use serde::Serialize;
use serde_json::Value;

/// Most positions accepted in one request.
pub const MAX_POSITIONS: usize = 100;
/// Most symbols accepted in one request.
pub const MAX_SYMBOLS: usize = 50;
/// Longest free-text field accepted.
pub const MAX_TEXT: usize = 2_000;
/// Highest leverage accepted as a preference.
pub const MAX_LEVERAGE: f64 = 100.0;

/// The example request from the requirements, byte for byte.
pub const SEED_EXAMPLE: &str = r#"{
  "account": {
"platform": "hyperliquid",
"positions": [
  { "symbol": "ETH-PERP", "size": 1.2, "entryPx": 3150.5 },
  { "symbol": "BTC-PERP", "size": -0.5, "entryPx": 62000 }
],
"balance": { "asset": "USDC", "amount": 2500 }
  },
  "preferences": {
"leverage": 3,
"riskTolerance": "medium",
"timeHorizon": "24h"
  },
  "objectives": "Optimize delta-neutral coverage while preserving upside",
  "symbols": ["ETH-PERP", "BTC-PERP", "BNB-PERP"]
}"#;

/// One problem in a request body: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

/// Validate a body as a `StrategyRequest`. Returns every problem found, not just the first.
pub fn validate(body: &[u8]) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |path: &str, reason: String| {
        errs.push(FieldError {
            path: path.into(),
            reason,
        })
    };
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            err("$", format!("the body is not JSON: {e}"));
            return Err(errs);
        }
    };
    let Some(root) = v.as_object() else {
        err("$", "the body must be a JSON object".into());
        return Err(errs);
    };
    match root.get("account").and_then(Value::as_object) {
        None => err(
            "account",
            "required: an object with `platform`, `balance` and `positions`".into(),
        ),
        Some(acct) => {
            match acct.get("platform").and_then(Value::as_str) {
                Some("hyperliquid" | "aster") => {}
                Some(other) => err(
                    "account.platform",
                    format!("`{other}` is not supported; use `hyperliquid` or `aster`"),
                ),
                None => err(
                    "account.platform",
                    "required: `hyperliquid` or `aster`".into(),
                ),
            }
            if let Some(b) = acct.get("balance") {
                match b.as_object() {
                    None => err(
                        "account.balance",
                        "must be an object {asset, amount}".into(),
                    ),
                    Some(b) => {
                        if !b.get("asset").is_some_and(Value::is_string) {
                            err(
                                "account.balance.asset",
                                "required: a string such as \"USDC\"".into(),
                            );
                        }
                        check_number(
                            &mut err,
                            "account.balance.amount",
                            b.get("amount"),
                            true,
                            Some(0.0),
                            None,
                        );
                    }
                }
            }
            match acct.get("positions") {
                None | Some(Value::Null) => {}
                Some(Value::Array(ps)) => {
                    if ps.len() > MAX_POSITIONS {
                        err(
                            "account.positions",
                            format!("{} positions; at most {MAX_POSITIONS}", ps.len()),
                        );
                    }
                    for (i, p) in ps.iter().take(MAX_POSITIONS).enumerate() {
                        let at = format!("account.positions[{i}]");
                        let Some(p) = p.as_object() else {
                            err(&at, "must be an object".into());
                            continue;
                        };
                        check_text(&mut err, &format!("{at}.symbol"), p.get("symbol"), 40, true);
                        let size = p
                            .get("size")
                            .or(p.get("quantity"))
                            .or(p.get("positionSize"));
                        check_number(&mut err, &format!("{at}.size"), size, true, None, None);
                        for k in [
                            "entryPx",
                            "entryPrice",
                            "entry_price",
                            "markPx",
                            "markPrice",
                            "mark_price",
                        ] {
                            check_number(
                                &mut err,
                                &format!("{at}.{k}"),
                                p.get(k),
                                false,
                                Some(0.0),
                                None,
                            );
                        }
                    }
                }
                Some(_) => err("account.positions", "must be an array".into()),
            }
        }
    }
    if let Some(p) = root.get("preferences") {
        match p.as_object() {
            None => err("preferences", "must be an object".into()),
            Some(p) => {
                check_number(
                    &mut err,
                    "preferences.leverage",
                    p.get("leverage"),
                    false,
                    Some(0.0),
                    Some(MAX_LEVERAGE),
                );
                let rt = p.get("riskTolerance").or(p.get("risk_tolerance"));
                if let Some(rt) = rt
                    && !matches!(rt.as_str(), Some("low" | "medium" | "high"))
                {
                    err(
                        "preferences.riskTolerance",
                        "must be `low`, `medium` or `high`".into(),
                    );
                }
            }
        }
    }
    check_text(
        &mut err,
        "objectives",
        root.get("objectives"),
        MAX_TEXT,
        false,
    );
    if let Some(s) = root.get("symbols") {
        match s.as_array() {
            Some(list) if list.len() <= MAX_SYMBOLS => {
                for (i, x) in list.iter().enumerate() {
                    check_text(&mut err, &format!("symbols[{i}]"), Some(x), 40, true);
                }
            }
            Some(list) => err(
                "symbols",
                format!("{} symbols; at most {MAX_SYMBOLS}", list.len()),
            ),
            None => err("symbols", "must be an array of strings".into()),
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn check_number(
    err: &mut impl FnMut(&str, String),
    path: &str,
    v: Option<&Value>,
    required: bool,
    min: Option<f64>,
    max: Option<f64>,
) {
    match v {
        None | Some(Value::Null) if !required => {}
        None | Some(Value::Null) => err(path, "required: a number".into()),
        Some(v) => match v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse::<f64>().ok()))
        {
            Some(n) if n.is_finite() => {
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    err(
                        path,
                        format!(
                            "{n} is out of range [{}, {}]",
                            min.unwrap_or(f64::MIN),
                            max.unwrap_or(f64::MAX)
                        ),
                    );
                }
            }
            _ => err(path, "must be a finite number".into()),
        },
    }
}

fn check_text(
    err: &mut impl FnMut(&str, String),
    path: &str,
    v: Option<&Value>,
    max: usize,
    required: bool,
) {
    match v {
        None | Some(Value::Null) if !required => {}
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => {}
        Some(Value::String(s)) if s.is_empty() => err(path, "must not be empty".into()),
        Some(Value::String(_)) => err(path, format!("longer than {max} characters")),
        _ => err(path, "required: a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_is_valid() {
        assert_eq!(validate(SEED_EXAMPLE.as_bytes()), Ok(()));
    }

    #[test]
    fn every_problem_comes_with_its_path() {
        let bad = r#"{"account":{"platform":"binance","positions":[{"symbol":"","size":"x"}]},"preferences":{"leverage":500,"riskTolerance":"yolo"},"symbols":"ETH"}"#;
        let errs = validate(bad.as_bytes()).unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "account.platform",
                "account.positions[0].symbol",
                "account.positions[0].size",
                "preferences.leverage",
                "preferences.riskTolerance",
                "symbols"
            ]
        );
    }

    #[test]
    fn non_json_and_non_objects_are_refused() {
        assert_eq!(validate(b"hello").unwrap_err()[0].path, "$");
        assert_eq!(validate(b"[1]").unwrap_err()[0].path, "$");
        assert_eq!(validate(b"{}").unwrap_err()[0].path, "account");
    }
}
