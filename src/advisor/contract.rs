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
//! Refused, with every problem listed as `{path, reason}`: two aliases with different values,
//! a `side` that contradicts a signed size, non-finite or out-of-range numbers, too many
//! positions/symbols/constraints, over-long or odd strings, and leverage outside `(0, 100]`.
//! Unknown keys are ignored (roma-01 buyers send `raw` and `metadata`), and never reach a model.
//!
//! Pure: no I/O. The paywall calls [`parse`] (through `strategy::validate`) before asking for
//! payment, so invalid input is never charged; the advisor calls it again on what it serves.

use serde::Serialize;
use serde_json::{Map, Value};

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
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Long => "long",
            Side::Short => "short",
        }
    }
}

/// One open position, canonical: `size` is signed and `side` agrees with its sign.
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
    /// The price the position is valued at: mark when known, else entry (the contract
    /// guarantees one of them).
    pub fn price(&self) -> f64 {
        self.mark_price.or(self.entry_price).unwrap_or(0.0)
    }

    pub fn abs_size(&self) -> f64 {
        self.size.abs()
    }

    /// Absolute USD value at [`Position::price`].
    pub fn notional(&self) -> f64 {
        self.abs_size() * self.price()
    }

    /// Signed USD value: positive long, negative short.
    pub fn delta(&self) -> f64 {
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
    pub fn as_str(self) -> &'static str {
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
    /// A request for `account` with no preferences, objectives or constraints (the converters'
    /// starting point).
    pub fn for_account(account: Account) -> Self {
        StrategyRequest {
            account,
            preferences: Preferences::default(),
            objectives: None,
            constraints: Vec::new(),
            symbols: Vec::new(),
            telemetry: Map::new(),
        }
    }

    /// The canonical JSON form (what [`parse`] accepts back unchanged).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Parse and normalise a body. Returns every problem found, not just the first.
pub fn parse(body: &[u8]) -> Result<StrategyRequest, Vec<FieldError>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => from_value(&v),
        Err(e) => Err(vec![FieldError {
            path: "$".into(),
            reason: format!("the body is not JSON: {e}"),
        }]),
    }
}

/// Check a body without keeping the result (what the paywall needs).
pub fn validate(body: &[u8]) -> Result<(), Vec<FieldError>> {
    parse(body).map(|_| ())
}

/// Parse and normalise an already-decoded JSON value.
pub fn from_value(v: &Value) -> Result<StrategyRequest, Vec<FieldError>> {
    let mut e = Errs::default();
    let Some(root) = v.as_object() else {
        e.push("$", "the body must be a JSON object");
        return Err(e.0);
    };
    let account = match root.get("account") {
        Some(Value::Object(a)) => account(a, &mut e),
        _ => {
            e.push(
                "account",
                "required: an object with `platform`, `balance` and `positions`",
            );
            None
        }
    };
    let preferences = match root.get("preferences") {
        None | Some(Value::Null) => Preferences::default(),
        Some(Value::Object(p)) => preferences(p, &mut e),
        Some(_) => {
            e.push("preferences", "must be an object");
            Preferences::default()
        }
    };
    let objectives = root
        .get("objectives")
        .filter(|v| !v.is_null())
        .and_then(|v| check_string(v, "objectives", MAX_TEXT, None, &mut e));
    let constraints = string_list(
        root.get("constraints"),
        "constraints",
        MAX_CONSTRAINTS,
        MAX_CONSTRAINT_LEN,
        None,
        &mut e,
    );
    let mut symbols = string_list(
        root.get("symbols"),
        "symbols",
        MAX_SYMBOLS,
        MAX_SYMBOL_LEN,
        Some(is_symbol_char),
        &mut e,
    );
    let mut seen = std::collections::HashSet::new();
    symbols.retain(|s| seen.insert(s.clone()));
    let telemetry = match root.get("telemetry") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(t)) => {
            let size = Value::Object(t.clone()).to_string().len();
            if size > MAX_TELEMETRY_BYTES {
                e.push(
                    "telemetry",
                    format!("{size} bytes serialised; at most {MAX_TELEMETRY_BYTES}"),
                );
            }
            t.clone()
        }
        Some(_) => {
            e.push("telemetry", "must be an object");
            Map::new()
        }
    };
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

#[derive(Default)]
struct Errs(Vec<FieldError>);

impl Errs {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// The value under the first of `keys` present and not null, with the key used. Two aliases
/// present with different values is a contradiction.
fn pick<'a>(
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
                format!("contradicts `{first_key}` ({first} vs {v}); send one of them"),
            );
        }
    }
    Some((first_key, first))
}

/// A JSON number, or a string holding one (Hyperliquid sends decimals as strings).
fn number(v: &Value) -> Option<f64> {
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
enum Range {
    /// `[0, max]`
    NonNegative(f64),
    /// `(0, max]`
    Positive(f64),
    /// `[-max, max]`
    Signed(f64),
}

fn num(
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
        e.push(path, format!("must be a finite number, not {v}"));
        return None;
    };
    let ok = match range {
        Range::NonNegative(max) => (0.0..=max).contains(&n),
        Range::Positive(max) => n > 0.0 && n <= max,
        Range::Signed(max) => (-max..=max).contains(&n),
    };
    if !ok {
        let want = match range {
            Range::NonNegative(max) => format!("between 0 and {max}"),
            Range::Positive(max) => format!("more than 0 and at most {max}"),
            Range::Signed(max) => format!("between -{max} and {max}"),
        };
        e.push(path, format!("{n} is out of range: must be {want}"));
        return None;
    }
    Some(n)
}

/// A non-empty string of at most `max` characters, without control characters (newlines and
/// tabs allowed), and only `allowed` characters when given.
fn check_string(
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

fn string_list(
    v: Option<&Value>,
    path: &str,
    max_items: usize,
    max_len: usize,
    allowed: Option<fn(char) -> bool>,
    e: &mut Errs,
) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() > max_items => {
            e.push(
                path,
                format!("{} entries; at most {max_items}", items.len()),
            );
            Vec::new()
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, x)| check_string(x, &format!("{path}[{i}]"), max_len, allowed, e))
            .collect(),
        Some(_) => {
            e.push(path, "must be an array of strings");
            Vec::new()
        }
    }
}

/// Symbols as exchanges spell them: `ETH-PERP`, `ETHUSDT`, `kPEPE`, `xyz:TSLA`, `@107`.
fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@')
}

fn account(a: &Map<String, Value>, e: &mut Errs) -> Option<Account> {
    let platform = match a.get("platform").and_then(Value::as_str) {
        Some(p) if p.eq_ignore_ascii_case("hyperliquid") => Some(Platform::Hyperliquid),
        Some(p) if p.eq_ignore_ascii_case("aster") => Some(Platform::Aster),
        Some(other) => {
            e.push(
                "account.platform",
                format!("`{other}` is not supported; use `hyperliquid` or `aster`"),
            );
            None
        }
        None => {
            e.push("account.platform", "required: `hyperliquid` or `aster`");
            None
        }
    };
    let owner = a
        .get("owner")
        .filter(|v| !v.is_null())
        .and_then(|v| check_string(v, "account.owner", MAX_OWNER_LEN, None, e));
    let balance = match a.get("balance") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => {
            let asset = match b.get("asset") {
                Some(v) => check_string(
                    v,
                    "account.balance.asset",
                    MAX_ASSET_LEN,
                    Some(|c: char| c.is_ascii_alphanumeric()),
                    e,
                ),
                None => {
                    e.push(
                        "account.balance.asset",
                        "required: a string such as \"USDC\"",
                    );
                    None
                }
            };
            let amount = num(
                b,
                "account.balance",
                &["amount"],
                true,
                Range::NonNegative(MAX_AMOUNT),
                e,
            );
            asset
                .zip(amount)
                .map(|(asset, amount)| Balance { asset, amount })
        }
        Some(_) => {
            e.push("account.balance", "must be an object {asset, amount}");
            None
        }
    };
    let equity = num(
        a,
        "account",
        &["equity", "totalEquity"],
        false,
        Range::NonNegative(MAX_AMOUNT),
        e,
    );
    let positions = match a.get("positions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ps)) if ps.len() > MAX_POSITIONS => {
            e.push(
                "account.positions",
                format!("{} positions; at most {MAX_POSITIONS}", ps.len()),
            );
            Vec::new()
        }
        Some(Value::Array(ps)) => {
            let mut out: Vec<Position> = Vec::with_capacity(ps.len());
            for (i, p) in ps.iter().enumerate() {
                let at = format!("account.positions[{i}]");
                let Some(p) = p.as_object() else {
                    e.push(at, "must be an object");
                    continue;
                };
                if let Some(p) = position(p, &at, e) {
                    if out.iter().any(|q| q.symbol == p.symbol && q.side == p.side) {
                        e.push(
                            format!("{at}.symbol"),
                            format!(
                                "a second {} position in {}; send one position per symbol and side",
                                p.side.as_str(),
                                p.symbol
                            ),
                        );
                        continue;
                    }
                    out.push(p);
                }
            }
            out
        }
        Some(_) => {
            e.push("account.positions", "must be an array");
            Vec::new()
        }
    };
    if !positions.is_empty()
        && balance.is_none()
        && equity.is_none()
        && !e.0.iter().any(|x| x.path.starts_with("account.balance"))
    {
        e.push(
            "account.balance",
            "required when there are positions (leverage is measured against it): {asset, amount}, or send account.equity",
        );
    }
    Some(Account {
        platform: platform?,
        owner,
        balance,
        equity,
        positions,
    })
}

/// Entry-price aliases, then mark-price aliases.
const PRICE_KEYS: [&str; 8] = [
    "entryPx",
    "entryPrice",
    "entry_price",
    "entry_price_usd",
    "markPx",
    "markPrice",
    "mark_price",
    "mark_price_usd",
];

fn position(p: &Map<String, Value>, at: &str, e: &mut Errs) -> Option<Position> {
    let symbol = match p.get("symbol") {
        Some(v) if !v.is_null() => check_string(
            v,
            &format!("{at}.symbol"),
            MAX_SYMBOL_LEN,
            Some(is_symbol_char),
            e,
        ),
        _ => {
            e.push(
                format!("{at}.symbol"),
                "required: a string such as \"ETH-PERP\"",
            );
            None
        }
    };
    let size = num(
        p,
        at,
        &["size", "quantity", "positionSize"],
        true,
        Range::Signed(MAX_SIZE),
        e,
    );
    let side = match p.get("side") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("long") => Some(Side::Long),
            Some("short") => Some(Side::Short),
            _ => {
                e.push(format!("{at}.side"), "must be `long` or `short`");
                return None;
            }
        },
    };
    let entry_price = num(
        p,
        at,
        &PRICE_KEYS[..4],
        false,
        Range::Positive(MAX_PRICE),
        e,
    );
    let mark_price = num(
        p,
        at,
        &PRICE_KEYS[4..],
        false,
        Range::Positive(MAX_PRICE),
        e,
    );
    let leverage = num(
        p,
        at,
        &["leverage"],
        false,
        Range::Positive(MAX_POSITION_LEVERAGE),
        e,
    );
    let unrealized_pnl = num(
        p,
        at,
        &["unrealizedPnl", "unrealized_pnl", "unrealized_profit"],
        false,
        Range::Signed(MAX_AMOUNT),
        e,
    );
    // roma-01's buyer puts the liquidation price into the position's `metadata`.
    let meta = p.get("metadata").and_then(Value::as_object);
    let liq_keys = ["liquidationPx", "liquidationPrice", "liquidation_price"];
    let liquidation_price = if liq_keys.iter().any(|k| p.contains_key(*k)) {
        num(p, at, &liq_keys, false, Range::NonNegative(MAX_PRICE), e)
    } else if let Some(m) = meta {
        num(
            m,
            &format!("{at}.metadata"),
            &liq_keys,
            false,
            Range::NonNegative(MAX_PRICE),
            e,
        )
    } else {
        None
    }
    // Exchanges report 0 when there is no liquidation price.
    .filter(|x| *x > 0.0);

    let size = size?;
    if size == 0.0 {
        e.push(
            format!("{at}.size"),
            "0 is not a position; leave closed positions out",
        );
        return None;
    }
    let (side, size) = match (side, size > 0.0) {
        (None, true) | (Some(Side::Long), true) => (Side::Long, size),
        (None, false) | (Some(Side::Short), false) => (Side::Short, size),
        (Some(Side::Short), true) => (Side::Short, -size),
        (Some(Side::Long), false) => {
            e.push(
                format!("{at}.side"),
                format!("`long` contradicts the negative size {size}; a negative size is short"),
            );
            return None;
        }
    };
    if entry_price.is_none() && mark_price.is_none() {
        // A price key that was present but invalid has been reported already.
        if !PRICE_KEYS
            .iter()
            .any(|k| p.get(*k).is_some_and(|v| !v.is_null()))
        {
            e.push(
                format!("{at}.entryPx"),
                "required: entryPx or markPx (a position cannot be valued without a price)",
            );
        }
        return None;
    }
    Some(Position {
        symbol: symbol?,
        side,
        size,
        entry_price,
        mark_price,
        leverage,
        unrealized_pnl,
        liquidation_price,
    })
}

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
    let notes = p
        .get("notes")
        .filter(|v| !v.is_null())
        .and_then(|v| check_string(v, "preferences.notes", MAX_NOTES, None, e));
    Preferences {
        leverage,
        risk_tolerance,
        time_horizon,
        notes,
    }
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
