//! Strategy advice: the request contract, the rule engine, the optional model step and the
//! built-in advisor upstream.
//!
//! * [`contract`] — `StrategyRequest`: aliases, signed sizes, limits, errors as `{path, reason}`.
//!   The seller's paywall calls [`validate`] before asking for payment, the buyer [`parse`]
//!   before paying.
//! * [`convert`] — Hyperliquid `clearinghouseState` and Aster balance + positionRisk → request.
//! * [`engine`] — `rules-v1`: exposure, leverage against the preference, delta per symbol,
//!   de-risk and hedge sizes, stops; a complete answer with executable actions. Pure.
//! * [`market`] — today's marks, funding and candles from Hyperliquid's info endpoint and
//!   Aster's futures REST (timeouts, a breaker, a short shared cache), for the engine's rules 6–9.
//! * [`response`] — `StrategyResponse`, `Action` and the number formats.
//! * [`answer`] — the strategy answer contract as a check over any upstream's JSON (what a
//!   seller may charge for), and the label of the stand-in placeholder.
//! * [`model`] — optional wording by an OpenAI-compatible model, checked, with fallback.
//! * [`server`] — the HTTP upstream (`x402-sidecar advisor`, and the demo's), guarded by a
//!   shared secret ([`SECRET_HEADER`], which the seller sends).
//!
//! Layer 4 of the crate: it uses `util`, `http::server`, `breaker` and the crate root's TLS
//! set-up, and nothing of the seller, buyer, facilitator, config, devkit or CLI (which call it).
//!
//! ```
//! use x402_sidecar::advisor::{self, contract, engine, response::ActionKind};
//!
//! let req = contract::parse(advisor::SEED_EXAMPLE.as_bytes()).unwrap();
//! let advice = engine::advise(&req);
//! // About 13.9x levered against a 3x preference: both positions are cut.
//! assert_eq!(advice.actions[0].action, ActionKind::Reduce);
//! assert!(advice.analysis.unwrap().after.leverage <= 3.0);
//! ```

pub mod agree;
pub mod answer;
pub mod contract;
pub mod convert;
pub mod engine;
pub mod market;
pub mod model;
pub mod response;
pub mod server;

pub use contract::{SEED_EXAMPLE, parse, validate};
pub use server::SECRET_HEADER;
