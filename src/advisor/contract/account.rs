//! The `account` section of a request: platform, owner, balance, equity and the positions,
//! each position normalised to a signed size with a side that agrees. Read by
//! [`super::from_value`].

use serde_json::{Map, Value};

use super::fields::{
    Errs, Range, array, check_string, is_symbol_char, num, optional_object, optional_string,
};
use super::{
    Account, Balance, MAX_AMOUNT, MAX_ASSET_LEN, MAX_OWNER_LEN, MAX_POSITION_LEVERAGE,
    MAX_POSITIONS, MAX_PRICE, MAX_SIZE, MAX_SYMBOL_LEN, Platform, Position, Side,
};

/// The account; `None` when its platform is missing or unknown (the problem is recorded).
pub(super) fn account(a: &Map<String, Value>, e: &mut Errs) -> Option<Account> {
    let platform = platform(a, e);
    let owner = optional_string(a, "owner", "account.owner", MAX_OWNER_LEN, e);
    let balance = optional_object(
        a.get("balance"),
        "account.balance",
        "must be an object {asset, amount}",
        e,
    )
    .and_then(|b| balance(b, e));
    let equity = num(
        a,
        "account",
        &["equity", "totalEquity"],
        false,
        Range::NonNegative(MAX_AMOUNT),
        e,
    );
    let positions = positions(a.get("positions"), e);
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

/// `hyperliquid` or `aster`, in any case.
fn platform(a: &Map<String, Value>, e: &mut Errs) -> Option<Platform> {
    match a.get("platform").and_then(Value::as_str) {
        Some(p) if p.eq_ignore_ascii_case("hyperliquid") => Some(Platform::Hyperliquid),
        Some(p) if p.eq_ignore_ascii_case("aster") => Some(Platform::Aster),
        Some(_) => {
            e.push(
                "account.platform",
                "is not a supported platform; use `hyperliquid` or `aster`",
            );
            None
        }
        None => {
            e.push("account.platform", "required: `hyperliquid` or `aster`");
            None
        }
    }
}

/// `{asset, amount}`: an alphanumeric asset and a non-negative amount.
fn balance(b: &Map<String, Value>, e: &mut Errs) -> Option<Balance> {
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

/// At most [`MAX_POSITIONS`] positions, one per symbol and side.
fn positions(v: Option<&Value>, e: &mut Errs) -> Vec<Position> {
    let items = array(
        v,
        "account.positions",
        MAX_POSITIONS,
        "positions",
        "must be an array",
        e,
    );
    let mut out: Vec<Position> = Vec::with_capacity(items.len());
    for (i, p) in items.iter().enumerate() {
        let at = format!("account.positions[{i}]");
        let Some(p) = p.as_object() else {
            e.push(at, "must be an object");
            continue;
        };
        let Some(p) = position(p, &at, e) else {
            continue;
        };
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
    out
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

/// Liquidation-price aliases.
const LIQUIDATION_KEYS: [&str; 3] = ["liquidationPx", "liquidationPrice", "liquidation_price"];

/// One position at `at`, canonical: signed size, agreeing side, its prices (0 or none: unknown).
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
    let side = side(p, at, e)?;
    // 0 is "unknown": roma-01 sends `entry_price: 0.0` when Hyperliquid omits `entryPx`.
    let price = Range::NonNegative(MAX_PRICE);
    let known = |x: Option<f64>| x.filter(|x| *x > 0.0);
    let entry_price = known(num(p, at, &PRICE_KEYS[..4], false, price, e));
    let mark_price = known(num(p, at, &PRICE_KEYS[4..], false, price, e));
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
    let liquidation_price = liquidation_price(p, at, e);
    let (side, size) = signed(side, size?, at, e)?;
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

/// The optional `side`: `Some(None)` when not sent, `None` when it is neither long nor short.
fn side(p: &Map<String, Value>, at: &str, e: &mut Errs) -> Option<Option<Side>> {
    match p.get("side") {
        None | Some(Value::Null) => Some(None),
        Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("long") => Some(Some(Side::Long)),
            Some("short") => Some(Some(Side::Short)),
            _ => {
                e.push(format!("{at}.side"), "must be `long` or `short`");
                None
            }
        },
    }
}

/// The canonical (side, signed size): a positive size with `short` becomes negative; zero and a
/// negative size with `long` are refused.
fn signed(side: Option<Side>, size: f64, at: &str, e: &mut Errs) -> Option<(Side, f64)> {
    if size == 0.0 {
        e.push(
            format!("{at}.size"),
            "0 is not a position; leave closed positions out",
        );
        return None;
    }
    match (side, size > 0.0) {
        (None, true) | (Some(Side::Long), true) => Some((Side::Long, size)),
        (None, false) | (Some(Side::Short), false) => Some((Side::Short, size)),
        (Some(Side::Short), true) => Some((Side::Short, -size)),
        (Some(Side::Long), false) => {
            e.push(
                format!("{at}.side"),
                format!("`long` contradicts the negative size {size}; a negative size is short"),
            );
            None
        }
    }
}

/// The liquidation price, on the position or in its `metadata` (where roma-01's buyer puts
/// it); exchanges report 0 when there is none.
fn liquidation_price(p: &Map<String, Value>, at: &str, e: &mut Errs) -> Option<f64> {
    let range = Range::NonNegative(MAX_PRICE);
    if LIQUIDATION_KEYS.iter().any(|k| p.contains_key(*k)) {
        num(p, at, &LIQUIDATION_KEYS, false, range, e)
    } else if let Some(m) = p.get("metadata").and_then(Value::as_object) {
        num(
            m,
            &format!("{at}.metadata"),
            &LIQUIDATION_KEYS,
            false,
            range,
            e,
        )
    } else {
        None
    }
    .filter(|x| *x > 0.0)
}
