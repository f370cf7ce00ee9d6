//! The x402 protocol core: wire types for v1 and v2, the header codec, money parsing,
//! the stateless server challenge, requirement matching, EIP-3009 typed data and the reason
//! codes.
//!
//! Nothing here does I/O. The inbound paywall, the `pay` client and the tests build on these
//! pure functions; chain reads and settlement live in the sidecar's `evm` module.

pub mod challenge;
pub mod codec;
pub mod matching;
pub mod money;
pub mod networks;
pub mod reason;
pub mod typed;
pub mod types;

pub use reason::Reason;
pub use types::*;

/// Header carrying the v2 challenge (base64 JSON [`PaymentRequired`]).
pub const HEADER_PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// Header carrying a v2 payment (base64 JSON [`PaymentPayload`]).
pub const HEADER_PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
/// Header carrying a v2 settlement receipt (base64 JSON [`SettleResponse`]).
pub const HEADER_PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
/// Header carrying a v1 payment.
pub const HEADER_X_PAYMENT: &str = "X-PAYMENT";
/// Header carrying a v1 settlement receipt.
pub const HEADER_X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";
