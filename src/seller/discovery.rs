//! Discovery: how agents find and call the paid routes without reading this README.
//!
//! - In every 402, the x402 **bazaar** extension (`extensions.bazaar`): the route's input (an
//!   example body and its JSON Schema) and output (an example answer), with the JSON Schema
//!   its `info` validates against, as the official SDKs declare and facilitators catalogue it.
//! - `GET /.well-known/x402` on the paid port: the discovery document listing the paid
//!   resources (version 1: `resources`, plus each route's method, description and prices).
//! - `GET /openapi.json` on the admin port: an OpenAPI 3.1 document of the paid API, each
//!   operation with its `402` answer and its payment terms (`x-x402`).
//!
//! Pure functions of the configured routes (no I/O).

use serde_json::{Value, json};

use crate::seller::config::Route;
use crate::x402::money;

/// The JSON Schema of a `StrategyRequest` (roma-01's request schema: extra fields allowed).
pub fn strategy_request_schema() -> Value {
    let number = json!({"type": ["number", "null"]});
    let text = json!({"type": ["string", "null"]});
    json!({
        "type": "object",
        "required": ["account"],
        "properties": {
            "account": {
                "type": "object",
                "required": ["platform"],
                "properties": {
                    "platform": {"type": "string", "enum": ["hyperliquid", "aster"]},
                    "owner": text,
                    "balance": {
                        "type": ["object", "null"],
                        "required": ["asset", "amount"],
                        "properties": {"asset": {"type": "string"}, "amount": {"type": "number"}}
                    },
                    "equity": number,
                    "positions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["symbol", "size"],
                            "properties": {
                                "symbol": {"type": "string"},
                                "size": {"type": "number"},
                                "side": {"type": ["string", "null"], "enum": ["long", "short", "buy", "sell", null]},
                                "entryPrice": number,
                                "markPrice": number,
                                "leverage": number,
                                "unrealizedPnl": number,
                                "liquidationPrice": number
                            }
                        }
                    }
                }
            },
            "preferences": {
                "type": ["object", "null"],
                "properties": {
                    "leverage": number,
                    "riskTolerance": text,
                    "timeHorizon": text,
                    "notes": text
                }
            },
            "objectives": text,
            "constraints": {"type": ["array", "null"], "items": {"type": "string"}},
            "symbols": {"type": ["array", "null"], "items": {"type": "string"}},
            "telemetry": {"type": "object"},
            "tier": {"type": "string"}
        }
    })
}

/// The JSON Schema of the answer a strategy route sells (`StrategyResponse`).
pub fn strategy_response_schema() -> Value {
    json!({
        "type": "object",
        "required": ["strategy", "disclaimer", "payment", "metadata"],
        "properties": {
            "strategy": {
                "type": "object",
                "required": ["summary", "steps"],
                "properties": {
                    "summary": {"type": "string"},
                    "steps": {"type": "array", "items": {"type": "string"}},
                    "riskNotes": {"type": "array", "items": {"type": "string"}},
                    "risk_notes": {"type": "array", "items": {"type": "string"}},
                    "confidence": {"type": ["number", "null"]},
                    "actions": {"type": "array", "items": {"type": "object"}},
                    "decisions": {"type": "array", "items": {"type": "object"}}
                }
            },
            "disclaimer": {"type": "string"},
            "payment": {"type": "object"},
            "metadata": {"type": "object"}
        }
    })
}

fn answer_example() -> Value {
    json!({
        "strategy": {
            "summary": "Reduce ETH-PERP to stay within 3x and hedge BTC-PERP.",
            "steps": ["Reduce ETH-PERP by 0.4 at market.", "Place a stop on BTC-PERP."],
            "riskNotes": ["Funding may turn against the short."],
            "confidence": 0.6
        },
        "disclaimer": "This is automated strategy information, not investment advice.",
        "payment": {"amount": "0.01", "asset": "0x…", "network": "eip155:8453", "pay_to": "0x…"},
        "metadata": {"request_id": "req_…", "model": "rules-v1"}
    })
}

/// The route's input: an example body and its schema (strategy routes), or any JSON object.
fn input_of(route: &Route) -> (Value, Value) {
    if route.strategy_request {
        let example: Value =
            serde_json::from_str(crate::advisor::SEED_EXAMPLE).unwrap_or_else(|_| json!({}));
        (example, strategy_request_schema())
    } else {
        (json!({}), json!({"type": "object"}))
    }
}

/// `extensions.bazaar` of the route's 402: `info` (input and output) and the JSON Schema that
/// `info` validates against.
pub fn bazaar(route: &Route) -> Value {
    let (body, body_schema) = input_of(route);
    let body_method = matches!(route.method.as_str(), "POST" | "PUT" | "PATCH");
    let (input, input_schema) = if body_method {
        (
            json!({"type": "http", "method": route.method, "bodyType": "json", "body": body}),
            json!({
                "type": "object",
                "properties": {
                    "type": {"type": "string", "const": "http"},
                    "method": {"type": "string", "enum": ["POST", "PUT", "PATCH"]},
                    "bodyType": {"type": "string", "enum": ["json", "form-data", "text"]},
                    "body": body_schema
                },
                "required": ["type", "method", "bodyType", "body"],
                "additionalProperties": false
            }),
        )
    } else {
        (
            json!({"type": "http", "method": route.method}),
            json!({
                "type": "object",
                "properties": {
                    "type": {"type": "string", "const": "http"},
                    "method": {"type": "string", "enum": ["GET", "HEAD", "DELETE"]},
                    "queryParams": {"type": "object"}
                },
                "required": ["type"],
                "additionalProperties": false
            }),
        )
    };
    let example = if route.strategy_request {
        answer_example()
    } else {
        json!({})
    };
    json!({
        "info": {
            "input": input,
            "output": {"type": "json", "example": example}
        },
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "input": input_schema,
                "output": {
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "example": {"type": "object"}},
                    "required": ["type"]
                }
            },
            "required": ["input"]
        }
    })
}

/// Each way to pay a route, as people and agents read it.
fn prices(route: &Route) -> Vec<Value> {
    route
        .offers
        .iter()
        .map(|o| {
            json!({
                "scheme": o.scheme,
                "network": o.network,
                "asset": o.asset.to_checksum(None),
                "payTo": o.pay_to.to_checksum(None),
                "amount": o.amount.to_string(),
                "display": money::format_decimal(o.amount, o.decimals),
                "maxTimeoutSeconds": o.max_timeout_seconds,
                "priced": if route.pricing.is_some() { "per request: see quote in the 402" } else { "fixed" },
            })
        })
        .collect()
}

/// `/.well-known/x402`: the paid resources at `base` (`http(s)://host`).
pub fn well_known(routes: &[Route], base: &str) -> Value {
    let paid: Vec<&Route> = routes.iter().filter(|r| !r.offers.is_empty()).collect();
    json!({
        "version": 1,
        "x402Version": 2,
        "resources": paid.iter().map(|r| format!("{base}{}", r.path)).collect::<Vec<_>>(),
        "items": paid.iter().map(|r| json!({
            "resource": format!("{base}{}", r.path),
            "method": r.method,
            "description": r.description,
            "mimeType": "application/json",
            "accepts": prices(r),
            "extensions": {"bazaar": bazaar(r)},
        })).collect::<Vec<_>>(),
        "instructions": "Send the request without payment to get its 402 (the price of a route with a pricing policy depends on the body: send the body you will pay for), sign one of `accepts` (EIP-3009 transferWithAuthorization) and send it again in PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (v1).",
    })
}

/// `/openapi.json`: an OpenAPI 3.1 document of the paid routes (served on the admin port).
pub fn openapi(routes: &[Route], title: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in routes {
        let (example, schema) = input_of(r);
        let ok_schema = if r.strategy_request {
            strategy_response_schema()
        } else {
            json!({"type": "object"})
        };
        let mut op = json!({
            "summary": if r.description.is_empty() { r.path.clone() } else { r.description.clone() },
            "operationId": format!("{}{}", r.method.to_ascii_lowercase(), r.path.replace(['/', '-', '.'], "_")),
            "responses": {
                "200": {"description": "the answer (paid routes: settled; receipt in PAYMENT-RESPONSE)",
                        "content": {"application/json": {"schema": ok_schema}}},
                "400": {"description": "invalid request; nothing charged", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema, "example": example}}});
        }
        if !r.offers.is_empty() {
            let responses = &mut op["responses"];
            responses["402"] = json!({
                "description": "payment required, or the payment was refused (error names the reason); the challenge is in PAYMENT-REQUIRED (base64 JSON, x402 v2) and the body (v1)",
                "headers": {"PAYMENT-REQUIRED": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentRequired"}}}
            });
            responses["409"] = json!({"description": "the payment was used for another request, or is in flight", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            responses["503"] = json!({"description": "our fault (chain, store, upstream): not charged, retry after Retry-After", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            op["parameters"] = json!([
                {"name": "PAYMENT-SIGNATURE", "in": "header", "required": false, "schema": {"type": "string"}, "description": "x402 v2 payment (base64 JSON)"},
                {"name": "X-PAYMENT", "in": "header", "required": false, "schema": {"type": "string"}, "description": "x402 v1 payment (base64 JSON)"}
            ]);
            op["x-x402"] = json!({"accepts": prices(r), "extensions": {"bazaar": bazaar(r)}});
        }
        let path = paths.entry(r.path.clone()).or_insert_with(|| json!({}));
        path[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": env!("CARGO_PKG_VERSION"),
                 "description": "Paid strategy advice over x402 (USDC, EIP-3009). Every paid operation answers 402 without a payment."},
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "message"],
                      "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
            "PaymentRequired": {"type": "object", "required": ["x402Version", "accepts"],
                      "properties": {"x402Version": {"type": "integer"}, "error": {"type": "string"},
                                     "message": {"type": "string"}, "accepts": {"type": "array", "items": {"type": "object"}},
                                     "quote": {"type": "object"}}}
        }}
    })
}
