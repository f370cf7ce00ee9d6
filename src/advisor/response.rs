//! `StrategyResponse`: what a paid call returns, and the number formats its texts use.
//!
//! `strategy{summary, steps[], riskNotes[], actions[], confidence, analysis}` comes from the
//! advisor; the paywall adds `payment`, `disclaimer` and the request/payment ids in `metadata`.
//! `actions` are the engine's machine-readable trades: one entry per symbol, `size` in coin
//! units to trade (0 for `hold`), `notionalUsd` = size × the price the engine used, `leverage`
//! only on opens (never above the request's preference), and stop-loss / take-profit prices for
//! whatever stays open.
//!
//! [`Decision`]s are the same actions in roma-01's own decision format, for its executor.
//!
//! The engine builds the [`Strategy`] and its decisions, the model step may reword its texts,
//! the advisor server serves them with [`Metadata`]; [`StrategyResponse`] is the whole answer as a buyer
//! deserialises it. `fmt` is shared by the engine's texts and the model's grounding check.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What to do with one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Open or add to a long position.
    OpenLong,
    /// Open or add to a short position.
    OpenShort,
    /// Close the whole long position.
    CloseLong,
    /// Close the whole short position.
    CloseShort,
    /// Reduce the position by `size` (reduce-only), keeping the rest.
    Reduce,
    /// No trade; stops, if given, protect the position as it is.
    Hold,
}

/// One executable instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub symbol: String,
    pub action: ActionKind,
    /// Coin units to trade, always ≥ 0 (0 for `hold`).
    pub size: f64,
    /// `size` × the price the engine valued the position at, in USD.
    pub notional_usd: f64,
    /// Exchange leverage to set before an open; only on opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leverage: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<f64>,
    pub reason: String,
}

impl Action {
    /// A trade of `size` coins worth `notional_usd`, without leverage, stops or reason yet (the
    /// engine's later steps add them).
    pub(crate) fn trade(symbol: String, action: ActionKind, size: f64, notional_usd: f64) -> Self {
        Action {
            symbol,
            action,
            size,
            notional_usd,
            leverage: None,
            stop_loss: None,
            take_profit: None,
            reason: String::new(),
        }
    }
}

/// What roma-01's executor runs (its decision format): the six action names it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    OpenLong,
    OpenShort,
    CloseLong,
    CloseShort,
    /// Keep a position as it is.
    Hold,
    /// No position and nothing to enter.
    Wait,
}

/// One decision in roma-01's format, ready for its executor: `BTCUSDT`-style symbol; on opens
/// an integer `leverage`, `position_size_usd` as **margin** (the executor trades margin ×
/// leverage ÷ price) and absolute `stop_loss`/`take_profit`; on partial closes
/// `close_quantity` in coin units (none: the whole position). Clamped to the request's limits,
/// which roma-01's executor does not enforce itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: DecisionAction,
    pub symbol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leverage: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_size_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_quantity: Option<f64>,
    /// 0–1, the strategy's confidence.
    pub confidence: f64,
    pub reasoning: String,
}

/// The advice itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    pub summary: String,
    pub steps: Vec<String>,
    pub risk_notes: Vec<String>,
    pub actions: Vec<Action>,
    /// 0–1: how complete the input was (lower when prices or equity had to be assumed).
    pub confidence: f64,
    /// The numbers behind the advice, for checking by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

/// Exposure of the account, before or after the actions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// Σ |size × price|.
    pub gross_usd: f64,
    /// Σ size × price (positive: net long).
    pub net_usd: f64,
    /// gross ÷ equity.
    pub leverage: f64,
}

/// Net position in one coin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymbolDelta {
    pub symbol: String,
    /// Net signed size in coin units.
    pub size: f64,
    pub price: f64,
    /// `mark` or `entry`.
    pub price_source: String,
    pub delta_usd: f64,
}

/// The engine's facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub equity_usd: f64,
    /// `equity` or `balance`.
    pub equity_source: String,
    pub before: Exposure,
    pub after: Exposure,
    /// The leverage the actions respect: the preference, lowered by constraints.
    pub leverage_cap: f64,
    /// Gross exposure the engine aims for: cap × equity × utilisation (risk tolerance).
    pub target_gross_usd: f64,
    /// `flat`, `delta_neutral` or `risk_budget`.
    pub goal: String,
    pub per_symbol: Vec<SymbolDelta>,
    /// Stop distance from the reference price, percent.
    pub stop_loss_pct: f64,
    pub take_profit_pct: f64,
}

/// What produced the answer and when; the paywall adds `requestId`, `paymentId`, `x402Version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// `rules-v1`, or `rules-v1+<model id>` when a model worded the texts.
    pub model: String,
    pub model_call_id: Option<String>,
    pub generated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Why a configured model's words were not used (`timeout`, `breaker_open`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_fallback: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A whole answer as the buyer receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyResponse {
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclaimer: Option<String>,
    /// Added by the paywall: receipt, transaction, amount, asset, network, payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Value>,
    pub metadata: Metadata,
    /// The actions in roma-01's decision format (the built-in advisor writes them).
    #[serde(default)]
    pub decisions: Vec<Decision>,
}

/// Number formats shared by the engine's texts and the model's grounding check.
pub(crate) mod fmt {
    /// `$34,780.60`, `-$27,219.40`.
    pub(crate) fn usd(x: f64) -> String {
        let cents = (x.abs() * 100.0).round() as u128;
        let (whole, frac) = (cents / 100, cents % 100);
        let digits = whole.to_string();
        let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let sign = if x < 0.0 && cents > 0 { "-" } else { "" };
        format!("{sign}${grouped}.{frac:02}")
    }

    /// A plain decimal with at most `dp` places and no trailing zeros: `0.128742`, `62000`.
    pub(crate) fn dec(x: f64, dp: usize) -> String {
        let s = format!("{x:.dp$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s == "-0" { "0".into() } else { s }
    }

    /// Coin quantity: up to 6 decimals.
    pub(crate) fn qty(x: f64) -> String {
        dec(x, 6)
    }

    /// Leverage: `13.91x`, `3x`.
    pub(crate) fn lev(x: f64) -> String {
        format!("{}x", dec(x, 2))
    }

    /// A price as computed (already rounded to significant figures by the engine).
    pub(crate) fn px(x: f64) -> String {
        dec(x, 8)
    }
}

#[cfg(test)]
mod tests {
    use super::fmt::*;
    use super::*;

    #[test]
    fn numbers_read_like_a_trader_writes_them() {
        assert_eq!(usd(34780.6), "$34,780.60");
        assert_eq!(usd(-27219.4), "-$27,219.40");
        assert_eq!(usd(0.004), "$0.00");
        assert_eq!(usd(999.999), "$1,000.00");
        assert_eq!(qty(0.128742), "0.128742");
        assert_eq!(qty(62000.0), "62000");
        assert_eq!(lev(13.912239), "13.91x");
        assert_eq!(lev(3.0), "3x");
        assert_eq!(px(3056.0), "3056");
    }

    #[test]
    fn actions_serialise_as_the_contract_says() {
        let a = Action {
            symbol: "ETH-PERP".into(),
            action: ActionKind::Reduce,
            size: 0.128742,
            notional_usd: 405.6,
            leverage: None,
            stop_loss: Some(3056.0),
            take_profit: None,
            reason: "r".into(),
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"symbol": "ETH-PERP", "action": "reduce", "size": 0.128742,
                "notionalUsd": 405.6, "stopLoss": 3056.0, "reason": "r"})
        );
        let back: Action = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }
}
