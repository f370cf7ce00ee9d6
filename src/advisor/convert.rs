//! Exchange-native account data → [`StrategyRequest`] (pure; the caller fetched the JSON).
//!
//! * Hyperliquid: the answer to `POST /info {"type":"clearinghouseState","user":…}`.
//!   Symbols become `<coin>-PERP` (the seed example's spelling); the mark price is
//!   `|positionValue ÷ szi|`; equity is `marginSummary.accountValue`; the balance is what
//!   roma-01 calls available, `max(0, accountValue − totalMarginUsed)` USDC.
//! * Aster: `GET /fapi/v3/balance` (the `USDT` row) and `GET /fapi/v3/positionRisk`.
//!   Symbols stay as Aster spells them (`BTCUSDT`); zero rows are skipped; equity is
//!   `balance + crossUnPnl`; the balance is `availableBalance` USDT. In hedge mode the row's
//!   `positionSide` must agree with the sign of `positionAmt`.
//!
//! The result goes through the same checks as any buyer's request ([`contract::from_value`]),
//! so limits and normalisation are identical; problems in the native structure itself are
//! reported with the native path (`assetPositions[0].position.szi`).
//!
//! A library entry point for buyers that read their account from the exchange (tests/strategy.rs
//! checks it on recorded payloads); nothing in the sidecar itself calls it.

use serde_json::{Map, Value, json};

use super::contract::{self, FieldError, StrategyRequest, number};

/// A decimal that exchanges send as a string (or, sometimes, a number).
fn dec(v: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) -> Option<f64> {
    let parsed = v.and_then(number).filter(|x| x.is_finite());
    if parsed.is_none() {
        errs.push(FieldError::new(
            path,
            "required: a decimal number (string or number)",
        ));
    }
    parsed
}

/// Copies the fields of `from` that are present and not null into `to`, renamed.
fn copy_present(from: &Value, to: &mut Map<String, Value>, names: &[(&str, &str)]) {
    for (name, to_name) in names {
        if let Some(v) = from.get(name).filter(|v| !v.is_null()) {
            to.insert((*to_name).into(), v.clone());
        }
    }
}

/// Hyperliquid `clearinghouseState` → request (no preferences; the caller adds them).
pub fn from_hyperliquid(state: &Value) -> Result<StrategyRequest, Vec<FieldError>> {
    let mut errs = Vec::new();
    let Some(root) = state.as_object() else {
        return Err(vec![FieldError::new(
            "$",
            "clearinghouseState must be a JSON object",
        )]);
    };
    let summary = root.get("marginSummary").filter(|s| s.is_object());
    if summary.is_none() {
        errs.push(FieldError::new("marginSummary", "required: an object"));
    }
    let account_value = summary.and_then(|s| {
        dec(
            s.get("accountValue"),
            "marginSummary.accountValue",
            &mut errs,
        )
    });
    let margin_used = summary.and_then(|s| {
        dec(
            s.get("totalMarginUsed"),
            "marginSummary.totalMarginUsed",
            &mut errs,
        )
    });
    let mut positions = Vec::new();
    match root.get("assetPositions") {
        Some(Value::Array(list)) => {
            for (i, ap) in list.iter().enumerate() {
                let at = format!("assetPositions[{i}].position");
                positions.extend(hyperliquid_position(ap, &at, &mut errs));
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => errs.push(FieldError::new("assetPositions", "must be an array")),
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let equity = account_value.unwrap_or(0.0);
    let available = (equity - margin_used.unwrap_or(0.0)).max(0.0);
    contract::from_value(&json!({
        "account": {
            "platform": "hyperliquid",
            "balance": { "asset": "USDC", "amount": available },
            "equity": equity,
            "positions": positions,
        }
    }))
}

/// One `assetPositions[i]` → a request position (`<coin>-PERP`, mark = |positionValue ÷ szi|);
/// none for a zero row or a problem (recorded).
fn hyperliquid_position(ap: &Value, at: &str, errs: &mut Vec<FieldError>) -> Option<Value> {
    let Some(p) = ap.get("position").filter(|p| p.is_object()) else {
        errs.push(FieldError::new(at, "required: an object"));
        return None;
    };
    let Some(coin) = p.get("coin").and_then(Value::as_str) else {
        errs.push(FieldError::new(format!("{at}.coin"), "required: a string"));
        return None;
    };
    let szi = dec(p.get("szi"), &format!("{at}.szi"), errs)?;
    if szi == 0.0 {
        return None;
    }
    let value = dec(p.get("positionValue"), &format!("{at}.positionValue"), errs);
    let mut pos = Map::new();
    pos.insert("symbol".into(), json!(format!("{coin}-PERP")));
    pos.insert("size".into(), json!(szi));
    copy_present(p, &mut pos, &[("entryPx", "entryPx")]);
    if let Some(v) = value.filter(|v| *v > 0.0) {
        pos.insert("markPx".into(), json!((v / szi).abs()));
    }
    if let Some(l) = p.get("leverage").and_then(|l| l.get("value")) {
        pos.insert("leverage".into(), l.clone());
    }
    copy_present(
        p,
        &mut pos,
        &[
            ("unrealizedPnl", "unrealizedPnl"),
            ("liquidationPx", "liquidationPx"),
        ],
    );
    Some(Value::Object(pos))
}

/// Aster `/fapi/v3/balance` + `/fapi/v3/positionRisk` → request.
pub fn from_aster(
    balance: &Value,
    position_risk: &Value,
) -> Result<StrategyRequest, Vec<FieldError>> {
    let mut errs = Vec::new();
    let (equity, available) = aster_usdt(balance, &mut errs);
    let mut positions = Vec::new();
    match position_risk.as_array() {
        None => errs.push(FieldError::new("positionRisk", "must be an array")),
        Some(rows) => {
            for (i, r) in rows.iter().enumerate() {
                let at = format!("positionRisk[{i}]");
                positions.extend(aster_position(r, &at, &mut errs));
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    contract::from_value(&json!({
        "account": {
            "platform": "aster",
            "balance": { "asset": "USDT", "amount": available.unwrap_or(0.0) },
            "equity": equity.unwrap_or(0.0),
            "positions": positions,
        }
    }))
}

/// The `USDT` row of the balance: (equity = balance + crossUnPnl, availableBalance).
fn aster_usdt(balance: &Value, errs: &mut Vec<FieldError>) -> (Option<f64>, Option<f64>) {
    let usdt = balance.as_array().and_then(|rows| {
        rows.iter()
            .position(|r| r.get("asset").and_then(Value::as_str) == Some("USDT"))
            .map(|i| (i, &rows[i]))
    });
    let Some((i, row)) = usdt else {
        errs.push(FieldError::new(
            "balance",
            "required: an array with a row whose asset is \"USDT\"",
        ));
        return (None, None);
    };
    let at = format!("balance[{i}]");
    let wallet = dec(row.get("balance"), &format!("{at}.balance"), errs);
    let unpnl = dec(row.get("crossUnPnl"), &format!("{at}.crossUnPnl"), errs);
    let avail = dec(
        row.get("availableBalance"),
        &format!("{at}.availableBalance"),
        errs,
    );
    (wallet.zip(unpnl).map(|(w, u)| w + u), avail)
}

/// One `positionRisk` row → a request position; none for a zero row or a problem (recorded),
/// such as a hedge-mode `positionSide` that contradicts the sign of `positionAmt`.
fn aster_position(r: &Value, at: &str, errs: &mut Vec<FieldError>) -> Option<Value> {
    let Some(symbol) = r.get("symbol").and_then(Value::as_str) else {
        errs.push(FieldError::new(
            format!("{at}.symbol"),
            "required: a string",
        ));
        return None;
    };
    let amt = dec(r.get("positionAmt"), &format!("{at}.positionAmt"), errs)?;
    if amt == 0.0 {
        return None;
    }
    let contradiction = match r.get("positionSide").and_then(Value::as_str) {
        Some("LONG") if amt < 0.0 => Some("LONG contradicts a negative positionAmt"),
        Some("SHORT") if amt > 0.0 => Some("SHORT contradicts a positive positionAmt"),
        _ => None,
    };
    if let Some(reason) = contradiction {
        errs.push(FieldError::new(format!("{at}.positionSide"), reason));
        return None;
    }
    let mut pos = Map::new();
    pos.insert("symbol".into(), json!(symbol));
    pos.insert("size".into(), json!(amt));
    copy_present(
        r,
        &mut pos,
        &[
            ("entryPrice", "entryPrice"),
            ("markPrice", "markPrice"),
            ("unRealizedProfit", "unrealizedPnl"),
            ("leverage", "leverage"),
            ("liquidationPrice", "liquidationPrice"),
        ],
    );
    Some(Value::Object(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperliquid_strings_become_numbers_and_marks_come_from_position_value() {
        let state = json!({
            "marginSummary": {"accountValue": "1000.0", "totalMarginUsed": "250.5"},
            "assetPositions": [
                {"type": "oneWay", "position": {"coin": "BTC", "szi": "-0.1", "entryPx": "60000.0",
                 "positionValue": "6100.0", "leverage": {"type": "cross", "value": 10},
                 "unrealizedPnl": "-100.0", "liquidationPx": null}},
                {"type": "oneWay", "position": {"coin": "DOGE", "szi": "0.0", "entryPx": null,
                 "positionValue": "0.0", "leverage": {"type": "cross", "value": 3}}}
            ]
        });
        let r = from_hyperliquid(&state).unwrap();
        assert_eq!(r.account.equity, Some(1000.0));
        assert_eq!(r.account.balance.as_ref().unwrap().amount, 749.5);
        assert_eq!(r.account.positions.len(), 1, "zero rows are skipped");
        let p = &r.account.positions[0];
        assert_eq!(
            (p.symbol.as_str(), p.size, p.mark_price, p.leverage),
            ("BTC-PERP", -0.1, Some(61_000.0), Some(10.0))
        );
        assert_eq!(p.liquidation_price, None);
    }

    #[test]
    fn native_structure_problems_name_the_native_path() {
        let e = from_hyperliquid(&json!({"assetPositions": [{"position": {"coin": "ETH"}}]}))
            .unwrap_err();
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["marginSummary", "assetPositions[0].position.szi"]);
        let e = from_aster(
            &json!([{"asset": "USDT", "balance": "1", "crossUnPnl": "0", "availableBalance": "1"}]),
            &json!([{"symbol": "BTCUSDT", "positionAmt": "1", "positionSide": "SHORT", "entryPrice": "1"}]),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "positionRisk[0].positionSide");
    }
}
