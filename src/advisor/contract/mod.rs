//! The `StrategyRequest` contract: one typed, normalised request out of the shapes buyers send.
//!
//! Accepted: the seed example byte for byte, roma-01's snake_case and camelCase aliases
//! (`entryPx`/`entryPrice`/`entry_price`, `markPx`/`markPrice`/`mark_price`,
//! `unrealizedPnl`/`unrealized_pnl`, `riskTolerance`/`risk_tolerance`,
//! `timeHorizon`/`time_horizon`, `size`/`quantity`/`positionSize`, `equity`/`totalEquity`),
//! numbers as JSON numbers or numeric strings (Hyperliquid sends strings), and a position's size
//! either signed (`-0.5`) or unsigned with `side` (`0.5` + `"short"`). The result has one
//! canonical form: a signed `size` (+ long, − short) and an explicit `side` that agrees with it.
//!
//! A price of 0 means "unknown" (roma-01 sends `entry_price: 0.0` when Hyperliquid omits
//! `entryPx`), as does a missing one.
//!
//! Refused, with every problem listed as `{path, reason}`: two aliases with different values,
//! a `side` that contradicts a signed size, non-finite or out-of-range numbers, too many
//! positions/symbols/constraints, over-long or odd strings, and leverage outside `(0, 100]`.
//! Unknown keys are ignored (roma-01 buyers send `raw` and `metadata`), and never reach a model.
//!
//! Pure: no I/O. The seller's paywall calls [`validate`] (as `advisor::validate`) before asking
//! for payment, so invalid input is never charged; the buyer calls [`parse`] before paying; the
//! advisor server parses again what it serves; the converters finish with [`from_value`].
//!
//! The types and the request's top-level sections are here; the `account` section is in
//! `account.rs`, the field readers every section uses (aliases, ranges, bounded strings) in
//! `fields.rs`.

mod account;
mod fields;

use serde::Serialize;
use serde_json::{Map, Value};

pub(crate) use fields::number;
use fields::{
    Errs, Range, check_string, is_symbol_char, num, optional_object, optional_string, pick,
    string_list,
};

/// Most positions accepted in one request.
pub const MAX_POSITIONS: usize = 100;
/// Most symbols accepted in one request.
pub const MAX_SYMBOLS: usize = 50;
/// Most constraint strings accepted.
pub const MAX_CONSTRAINTS: usize = 20;
/// Longest `objectives` text accepted (characters).
pub const MAX_TEXT: usize = 2_000;
/// Longest `preferences.notes` accepted (characters).
pub const MAX_NOTES: usize = 1_000;
/// Longest single constraint accepted (characters).
pub const MAX_CONSTRAINT_LEN: usize = 200;
/// Longest symbol accepted (characters).
pub const MAX_SYMBOL_LEN: usize = 40;
/// Longest `account.owner` accepted (characters).
pub const MAX_OWNER_LEN: usize = 128;
/// Longest `balance.asset` accepted (characters).
pub const MAX_ASSET_LEN: usize = 16;
/// Longest `preferences.timeHorizon` accepted (characters).
pub const MAX_HORIZON_LEN: usize = 32;
/// Largest `telemetry` object accepted, serialised (bytes).
pub const MAX_TELEMETRY_BYTES: usize = 4_096;
/// Highest leverage accepted as a preference.
pub const MAX_LEVERAGE: f64 = 100.0;
/// Highest leverage a position may report (Aster's highest tier is 1001x).
pub const MAX_POSITION_LEVERAGE: f64 = 1_001.0;
/// Largest money amount accepted (balance, equity, PnL), in the quote asset.
pub const MAX_AMOUNT: f64 = 1e15;
/// Largest price accepted.
pub const MAX_PRICE: f64 = 1e12;
/// Largest position size accepted, in coin units.
pub const MAX_SIZE: f64 = 1e15;

/// One problem in a request body: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A normalised, checked strategy request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyRequest {
    pub account: Account,
    pub preferences: Preferences,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives: Option<String>,
    pub constraints: Vec<String>,
    /// The buyer's tradable universe, first occurrence kept.
    pub symbols: Vec<String>,
    pub telemetry: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Hyperliquid,
    Aster,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub platform: Platform,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// Account value including unrealised PnL, when the buyer knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equity: Option<f64>,
    pub positions: Vec<Position>,
}

impl Account {
    /// What leverage is measured against: `equity` when sent, else `balance.amount`.
    pub fn equity_basis(&self) -> Option<(f64, EquitySource)> {
        match (self.equity, &self.balance) {
            (Some(e), _) => Some((e, EquitySource::Equity)),
            (None, Some(b)) => Some((b.amount, EquitySource::Balance)),
            (None, None) => None,
        }
    }
}

/// Where the equity figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EquitySource {
    Equity,
    Balance,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub asset: String,
    pub amount: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Long,
    Short,
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Long => "long",
            Side::Short => "short",
        }
    }
}

/// One open position, canonical: `size` is signed and `side` agrees with its sign. A price of
/// 0 is read as unknown (roma-01 sends `entry_price: 0.0` when Hyperliquid omits `entryPx`); a
/// position without any known price is kept, and the engine leaves it as it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub symbol: String,
    pub side: Side,
    /// Coin units; positive long, negative short; never zero.
    pub size: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark_price: Option<f64>,
    /// The leverage set on the exchange for this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leverage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrealized_pnl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liquidation_price: Option<f64>,
}

impl Position {
    /// The price the position is valued at: mark when known, else entry; 0 when neither was
    /// sent (or both were sent as 0, roma-01's "unknown").
    pub fn price(&self) -> f64 {
        self.mark_price.or(self.entry_price).unwrap_or(0.0)
    }

    /// A price is known (mark or entry), so the position can be valued and sized.
    pub fn priced(&self) -> bool {
        self.mark_price.is_some() || self.entry_price.is_some()
    }

    pub fn abs_size(&self) -> f64 {
        self.size.abs()
    }

    /// Absolute USD value at [`Position::price`].
    pub fn notional(&self) -> f64 {
        self.abs_size() * self.price()
    }

    /// Signed USD value: positive long, negative short.
    pub(crate) fn delta(&self) -> f64 {
        self.size * self.price()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskTolerance {
    Low,
    Medium,
    High,
}

impl RiskTolerance {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RiskTolerance::Low => "low",
            RiskTolerance::Medium => "medium",
            RiskTolerance::High => "high",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// Highest account leverage the buyer wants (gross notional ÷ equity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leverage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk_tolerance: Option<RiskTolerance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_horizon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl StrategyRequest {
    /// The canonical JSON form (what [`parse`] accepts back unchanged).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Parse and normalise a body. Returns every problem found, not just the first.
pub fn parse(body: &[u8]) -> Result<StrategyRequest, Vec<FieldError>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => from_value(&v),
        Err(e) => Err(vec![FieldError::new(
            "$",
            format!("the body is not JSON: {e}"),
        )]),
    }
}

/// Check a body without keeping the result (what the paywall needs).
pub fn validate(body: &[u8]) -> Result<(), Vec<FieldError>> {
    parse(body).map(|_| ())
}

/// Parse and normalise an already-decoded JSON value (also what the converters produce).
pub fn from_value(v: &Value) -> Result<StrategyRequest, Vec<FieldError>> {
    let mut e = Errs::default();
    let Some(root) = v.as_object() else {
        e.push("$", "the body must be a JSON object");
        return Err(e.0);
    };
    let account = match root.get("account") {
        Some(Value::Object(a)) => account::account(a, &mut e),
        _ => {
            e.push(
                "account",
                "required: an object with `platform`, `balance` and `positions`",
            );
            None
        }
    };
    let preferences = optional_object(
        root.get("preferences"),
        "preferences",
        "must be an object",
        &mut e,
    )
    .map_or_else(Preferences::default, |p| preferences(p, &mut e));
    let objectives = optional_string(root, "objectives", "objectives", MAX_TEXT, &mut e);
    let constraints = string_list(
        root.get("constraints"),
        "constraints",
        MAX_CONSTRAINTS,
        MAX_CONSTRAINT_LEN,
        None,
        &mut e,
    );
    let symbols = symbols(root.get("symbols"), &mut e);
    let telemetry = telemetry(root.get("telemetry"), &mut e);
    match account {
        Some(account) if e.0.is_empty() => Ok(StrategyRequest {
            account,
            preferences,
            objectives,
            constraints,
            symbols,
            telemetry,
        }),
        _ => Err(e.0),
    }
}

/// `preferences`: leverage, risk tolerance, time horizon, notes (each optional).
fn preferences(p: &Map<String, Value>, e: &mut Errs) -> Preferences {
    let leverage = num(
        p,
        "preferences",
        &["leverage"],
        false,
        Range::Positive(MAX_LEVERAGE),
        e,
    );
    let risk_tolerance = match pick(p, "preferences", &["riskTolerance", "risk_tolerance"], e) {
        None => None,
        Some((key, v)) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("low") => Some(RiskTolerance::Low),
            Some("medium") => Some(RiskTolerance::Medium),
            Some("high") => Some(RiskTolerance::High),
            _ => {
                e.push(
                    format!("preferences.{key}"),
                    "must be `low`, `medium` or `high`",
                );
                None
            }
        },
    };
    let time_horizon =
        pick(p, "preferences", &["timeHorizon", "time_horizon"], e).and_then(|(key, v)| {
            check_string(v, &format!("preferences.{key}"), MAX_HORIZON_LEN, None, e)
        });
    let notes = optional_string(p, "notes", "preferences.notes", MAX_NOTES, e);
    Preferences {
        leverage,
        risk_tolerance,
        time_horizon,
        notes,
    }
}

/// `symbols`: the buyer's universe, checked, first occurrence kept.
fn symbols(v: Option<&Value>, e: &mut Errs) -> Vec<String> {
    let mut symbols = string_list(
        v,
        "symbols",
        MAX_SYMBOLS,
        MAX_SYMBOL_LEN,
        Some(is_symbol_char),
        e,
    );
    let mut seen = std::collections::HashSet::new();
    symbols.retain(|s| seen.insert(s.clone()));
    symbols
}

/// `telemetry`: any object, kept as sent, up to [`MAX_TELEMETRY_BYTES`] serialised.
fn telemetry(v: Option<&Value>, e: &mut Errs) -> Map<String, Value> {
    let Some(t) = optional_object(v, "telemetry", "must be an object", e) else {
        return Map::new();
    };
    let size = Value::Object(t.clone()).to_string().len();
    if size > MAX_TELEMETRY_BYTES {
        e.push(
            "telemetry",
            format!("{size} bytes serialised; at most {MAX_TELEMETRY_BYTES}"),
        );
    }
    t.clone()
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(v: Value) -> Vec<String> {
        from_value(&v)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn the_seed_example_is_valid_and_normalised() {
        let r = parse(SEED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.account.platform, Platform::Hyperliquid);
        assert_eq!(r.account.positions[1].side, Side::Short);
        assert_eq!(r.account.positions[1].size, -0.5);
        assert_eq!(r.account.positions[0].entry_price, Some(3150.5));
        assert_eq!(r.preferences.risk_tolerance, Some(RiskTolerance::Medium));
        assert_eq!(r.symbols.len(), 3);
    }

    #[test]
    fn every_problem_comes_with_its_path() {
        let bad = r#"{"account":{"platform":"binance","positions":[{"symbol":"","size":"x"}]},"preferences":{"leverage":500,"riskTolerance":"yolo"},"symbols":"ETH"}"#;
        let errs = parse(bad.as_bytes()).unwrap_err();
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
        assert_eq!(parse(b"hello").unwrap_err()[0].path, "$");
        assert_eq!(parse(b"[1]").unwrap_err()[0].path, "$");
        assert_eq!(parse(b"{}").unwrap_err()[0].path, "account");
    }

    #[test]
    fn unsigned_size_with_side_becomes_signed() {
        let r = from_value(&json!({"account": {"platform": "aster",
            "balance": {"asset": "USDT", "amount": "1000"},
            "positions": [{"symbol": "BTCUSDT", "size": 0.5, "side": "SHORT", "entry_price": 60000}]}}))
        .unwrap();
        let p = &r.account.positions[0];
        assert_eq!((p.side, p.size), (Side::Short, -0.5));
        // Already signed and agreeing with the side: unchanged.
        let r = from_value(&json!({"account": {"platform": "aster", "equity": 10,
            "positions": [{"symbol": "BTCUSDT", "size": -0.5, "side": "short", "entryPrice": 1}]}}))
        .unwrap();
        assert_eq!(r.account.positions[0].size, -0.5);
    }

    #[test]
    fn zero_prices_mean_unknown() {
        // roma-01 sends entry_price 0.0 when Hyperliquid omits entryPx.
        let r = from_value(&json!({"account": {"platform": "hyperliquid", "equity": 1000,
            "positions": [
                {"symbol": "ETHUSDT", "size": 1, "side": "long", "entryPrice": 0.0, "markPrice": 3000},
                {"symbol": "BTCUSDT", "size": 0.1, "side": "short", "entry_price": 0, "mark_price": "0"}]}}))
        .unwrap();
        let (eth, btc) = (&r.account.positions[0], &r.account.positions[1]);
        assert_eq!((eth.entry_price, eth.mark_price), (None, Some(3000.0)));
        assert!(eth.priced());
        assert_eq!(
            (btc.entry_price, btc.mark_price, btc.priced()),
            (None, None, false)
        );
        assert_eq!(btc.price(), 0.0);
    }

    #[test]
    fn contradictions_are_refused() {
        let p = paths(
            json!({"account": {"platform": "aster", "equity": 10, "positions": [
                {"symbol": "A", "size": -1, "side": "long", "entryPx": 1},
                {"symbol": "B", "size": 1, "quantity": 2, "entryPx": 1},
                {"symbol": "C", "size": 1, "entryPx": 1, "entryPrice": 2},
                {"symbol": "D", "size": 1, "entryPx": 1, "markPx": 1, "mark_price": "1.5"},
            ]}}),
        );
        assert_eq!(
            p,
            [
                "account.positions[0].side",
                "account.positions[1].quantity",
                "account.positions[2].entryPrice",
                "account.positions[3].mark_price"
            ]
        );
        // The same value under two aliases is no contradiction.
        assert!(
            from_value(
                &json!({"account": {"platform": "aster", "equity": 10, "positions": [
                {"symbol": "A", "size": 1, "entryPx": 2, "entry_price": "2"}]}})
            )
            .is_ok()
        );
    }
}
