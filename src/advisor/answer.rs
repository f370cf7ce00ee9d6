//! What a strategy answer must hold to be advice at all: the `StrategyResponse` contract as a
//! check over any upstream's JSON (ours, roma-01's own advisor, another one), so a seller can
//! refuse to sell an empty or placeholder answer.
//!
//! The contract: a `strategy` object with a non-empty `summary`, `steps` a non-empty array of
//! non-empty strings, and, when present, `riskNotes` (or roma-01's `risk_notes`) an array of
//! strings, `actions` an array of well-formed [`Action`]s (a known action, a symbol, finite
//! sizes ≥ 0, positive stops and leverage), `confidence` a number from 0 to 1. Placeholders are
//! told apart from advice: the labelled stand-in ([`STANDIN_MODEL`] in `metadata.model`) and
//! roma-01's "Unable to parse model output" placeholder.

use serde_json::Value;

use super::response::Action;

/// `metadata.model` of the labelled stand-in answer (no model, no analysis).
pub const STANDIN_MODEL: &str = "standin-fixed-v0";

/// The summary roma-01's advisor returns when it could not parse its model's output.
const ROMA_PLACEHOLDER: &str = "Unable to parse model output";

/// Why an answer is not a strategy answer: a machine-readable code, the field at fault and a
/// sentence (neither quotes the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerProblem {
    /// `no_strategy`, `empty_summary`, `no_steps`, `bad_steps`, `bad_risk_notes`,
    /// `bad_actions`, `bad_confidence`, `standin` or `placeholder`.
    pub code: &'static str,
    /// The JSON path at fault, e.g. `strategy.steps[2]`.
    pub field: String,
    /// What is wrong, to follow "the answer …".
    pub message: String,
}

impl AnswerProblem {
    fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        AnswerProblem {
            code,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// True for the labelled stand-in answer ([`STANDIN_MODEL`]).
pub fn is_standin(answer: &Value) -> bool {
    answer["metadata"]["model"].as_str() == Some(STANDIN_MODEL)
}

/// Check `answer` against the strategy answer contract. The stand-in passes only with
/// `standin_ok`.
pub fn check_strategy_answer(answer: &Value, standin_ok: bool) -> Result<(), AnswerProblem> {
    let Some(s) = answer.get("strategy").and_then(Value::as_object) else {
        return Err(AnswerProblem::new(
            "no_strategy",
            "strategy",
            "has no `strategy` object",
        ));
    };
    if !standin_ok && is_standin(answer) {
        return Err(AnswerProblem::new(
            "standin",
            "metadata.model",
            "is the labelled stand-in placeholder, not advice",
        ));
    }
    let summary = s.get("summary").and_then(Value::as_str).map(str::trim);
    match summary {
        None | Some("") => {
            return Err(AnswerProblem::new(
                "empty_summary",
                "strategy.summary",
                "has no summary (`strategy.summary` must be a non-empty string)",
            ));
        }
        Some(t) if t.starts_with(ROMA_PLACEHOLDER) => {
            return Err(AnswerProblem::new(
                "placeholder",
                "strategy.summary",
                "is the upstream's placeholder for a model output it could not parse, not advice",
            ));
        }
        Some(_) => {}
    }
    let steps = s.get("steps").and_then(Value::as_array);
    match steps {
        None => {
            return Err(AnswerProblem::new(
                "no_steps",
                "strategy.steps",
                "has no steps (`strategy.steps` must be a non-empty array of strings)",
            ));
        }
        Some(v) if v.is_empty() => {
            return Err(AnswerProblem::new(
                "no_steps",
                "strategy.steps",
                "has no steps (`strategy.steps` is empty)",
            ));
        }
        Some(v) => strings(v, "strategy.steps", "bad_steps", true)?,
    }
    for key in ["riskNotes", "risk_notes"] {
        match s.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(v)) => {
                strings(v, &format!("strategy.{key}"), "bad_risk_notes", false)?
            }
            Some(_) => {
                return Err(AnswerProblem::new(
                    "bad_risk_notes",
                    format!("strategy.{key}"),
                    format!("has a `strategy.{key}` that is not an array of strings"),
                ));
            }
        }
    }
    match s.get("actions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(v)) => {
            for (i, a) in v.iter().enumerate() {
                action(a).map_err(|why| {
                    AnswerProblem::new(
                        "bad_actions",
                        format!("strategy.actions[{i}]"),
                        format!("has a malformed action `strategy.actions[{i}]`: {why}"),
                    )
                })?;
            }
        }
        Some(_) => {
            return Err(AnswerProblem::new(
                "bad_actions",
                "strategy.actions",
                "has a `strategy.actions` that is not an array",
            ));
        }
    }
    match s.get("confidence") {
        None | Some(Value::Null) => {}
        Some(c) if c.as_f64().is_some_and(|c| (0.0..=1.0).contains(&c)) => {}
        Some(_) => {
            return Err(AnswerProblem::new(
                "bad_confidence",
                "strategy.confidence",
                "has a `strategy.confidence` that is not a number from 0 to 1",
            ));
        }
    }
    Ok(())
}

/// Every entry of `v` a string (non-empty when `non_empty`).
fn strings(
    v: &[Value],
    at: &str,
    code: &'static str,
    non_empty: bool,
) -> Result<(), AnswerProblem> {
    for (i, x) in v.iter().enumerate() {
        let ok = x
            .as_str()
            .is_some_and(|t| !non_empty || !t.trim().is_empty());
        if !ok {
            let what = if non_empty {
                "a non-empty string"
            } else {
                "a string"
            };
            return Err(AnswerProblem::new(
                code,
                format!("{at}[{i}]"),
                format!("has `{at}[{i}]`, which is not {what}"),
            ));
        }
    }
    Ok(())
}

/// One action: the [`Action`] shape, with numbers a trading engine can act on.
fn action(v: &Value) -> Result<(), &'static str> {
    let a: Action = serde_json::from_value(v.clone())
        .map_err(|_| "it is not {symbol, action, size, notionalUsd, reason} with a known action")?;
    if a.symbol.trim().is_empty() {
        return Err("its symbol is empty");
    }
    if !a.size.is_finite() || a.size < 0.0 {
        return Err("its size is not a finite number ≥ 0");
    }
    if !a.notional_usd.is_finite() || a.notional_usd < 0.0 {
        return Err("its notionalUsd is not a finite number ≥ 0");
    }
    if a.leverage == Some(0) {
        return Err("its leverage is 0");
    }
    for p in [a.stop_loss, a.take_profit].into_iter().flatten() {
        if !p.is_finite() || p <= 0.0 {
            return Err("a stop-loss or take-profit is not a positive price");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"strategy": {
            "summary": "Cut both sides to 2.7x.",
            "steps": ["Reduce ETH-PERP by 0.1.", "Re-check within 24h."],
            "riskNotes": ["Prices are entry prices."],
            "actions": [{"symbol": "ETH-PERP", "action": "reduce", "size": 0.1,
                "notionalUsd": 315.0, "stopLoss": 3056.0, "reason": "over the cap"}],
            "confidence": 0.6,
        }, "metadata": {"model": "rules-v1"}})
    }

    #[test]
    fn the_engines_answer_and_roma_01s_shape_are_advice() {
        assert_eq!(check_strategy_answer(&good(), false), Ok(()));
        let roma = json!({"strategy": {"summary": "Hedge.", "steps": ["Open a short."],
            "risk_notes": [], "confidence": 0.4, "rationale": "r"}});
        assert_eq!(check_strategy_answer(&roma, false), Ok(()));
        // The built-in engine's own answer passes.
        let req = crate::advisor::contract::parse(crate::advisor::SEED_EXAMPLE.as_bytes()).unwrap();
        let advice = serde_json::to_value(crate::advisor::engine::advise(&req)).unwrap();
        assert_eq!(
            check_strategy_answer(&json!({"strategy": advice}), false),
            Ok(())
        );
    }

    #[test]
    fn empty_and_malformed_answers_are_not_advice() {
        type Edit = fn(&mut Value);
        let cases: [(Edit, &str, &str); 12] = [
            (
                |v| v["strategy"] = json!({}),
                "empty_summary",
                "strategy.summary",
            ),
            (|v| v["strategy"] = json!("hold"), "no_strategy", "strategy"),
            (
                |v| v["strategy"]["summary"] = json!("  "),
                "empty_summary",
                "strategy.summary",
            ),
            (
                |v| v["strategy"]["steps"] = json!([]),
                "no_steps",
                "strategy.steps",
            ),
            (
                |v| {
                    v["strategy"].as_object_mut().unwrap().remove("steps");
                },
                "no_steps",
                "strategy.steps",
            ),
            (
                |v| v["strategy"]["steps"] = json!(["ok", 3]),
                "bad_steps",
                "strategy.steps[1]",
            ),
            (
                |v| v["strategy"]["steps"] = json!(["ok", ""]),
                "bad_steps",
                "strategy.steps[1]",
            ),
            (
                |v| v["strategy"]["riskNotes"] = json!("careful"),
                "bad_risk_notes",
                "strategy.riskNotes",
            ),
            (
                |v| v["strategy"]["actions"][0]["action"] = json!("yolo"),
                "bad_actions",
                "strategy.actions[0]",
            ),
            (
                |v| v["strategy"]["actions"][0]["size"] = json!(-1.0),
                "bad_actions",
                "strategy.actions[0]",
            ),
            (
                |v| v["strategy"]["confidence"] = json!(7),
                "bad_confidence",
                "strategy.confidence",
            ),
            (
                |v| v["strategy"]["summary"] = json!("Unable to parse model output: {"),
                "placeholder",
                "strategy.summary",
            ),
        ];
        for (edit, code, field) in cases {
            let mut v = good();
            edit(&mut v);
            let p = check_strategy_answer(&v, false).unwrap_err();
            assert_eq!((p.code, p.field.as_str()), (code, field), "{v}");
        }
    }

    #[test]
    fn the_standin_is_advice_only_where_a_route_says_so() {
        let mut v = good();
        v["metadata"]["model"] = json!(STANDIN_MODEL);
        assert_eq!(
            check_strategy_answer(&v, false).unwrap_err().code,
            "standin"
        );
        assert_eq!(check_strategy_answer(&v, true), Ok(()));
    }
}
