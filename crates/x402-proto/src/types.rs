//! Wire types of x402 v1 and v2 (EVM `exact` scheme), camelCase JSON as on the wire.
//!
//! Addresses are [`Address`], amounts and times [`U256`] carried as decimal strings, nonces
//! [`B256`]: a value that decodes is already well-formed.

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::money::dec_u256;

/// What a resource is (v2 `resource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay (v2 `accepts[]` entry, echoed back as `accepted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    #[serde(with = "dec_u256")]
    pub amount: U256,
    #[serde(with = "crate::address::eip55")]
    pub asset: Address,
    #[serde(with = "crate::address::eip55")]
    pub pay_to: Address,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// The v2 challenge, sent base64-encoded in `PAYMENT-REQUIRED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// One way to pay in v1 (resource metadata inside each requirement, `maxAmountRequired`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    pub network: String,
    #[serde(with = "dec_u256")]
    pub max_amount_required: U256,
    pub resource: String,
    pub description: String,
    pub mime_type: String,
    #[serde(with = "crate::address::eip55")]
    pub pay_to: Address,
    pub max_timeout_seconds: u64,
    #[serde(with = "crate::address::eip55")]
    pub asset: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// The v1 challenge: the JSON body of the 402.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u8,
    pub error: String,
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// The EIP-3009 `TransferWithAuthorization` message as sent by clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    #[serde(with = "crate::address::eip55")]
    pub from: Address,
    #[serde(with = "crate::address::eip55")]
    pub to: Address,
    #[serde(with = "dec_u256")]
    pub value: U256,
    #[serde(with = "dec_u256")]
    pub valid_after: U256,
    #[serde(with = "dec_u256")]
    pub valid_before: U256,
    pub nonce: B256,
}

/// The `exact` EVM payload: the signed authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExactEvmPayload {
    pub signature: Bytes,
    pub authorization: Authorization,
}

/// A v2 payment, sent base64-encoded in `PAYMENT-SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentPayload {
    pub x402_version: u8,
    pub accepted: PaymentRequirements,
    pub payload: ExactEvmPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// A v1 payment, sent base64-encoded in `X-PAYMENT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentPayloadV1 {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    pub payload: ExactEvmPayload,
}

/// A payment as received, in either version.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per request, never stored in bulk
pub enum IncomingPayment {
    V1(PaymentPayloadV1),
    V2(PaymentPayload),
}

impl IncomingPayment {
    pub fn version(&self) -> u8 {
        match self {
            IncomingPayment::V1(_) => 1,
            IncomingPayment::V2(_) => 2,
        }
    }

    pub fn exact(&self) -> &ExactEvmPayload {
        match self {
            IncomingPayment::V1(p) => &p.payload,
            IncomingPayment::V2(p) => &p.payload,
        }
    }

    /// Header that carries the settlement receipt back in this payment's version.
    pub fn response_header(&self) -> &'static str {
        match self {
            IncomingPayment::V1(_) => super::HEADER_X_PAYMENT_RESPONSE,
            IncomingPayment::V2(_) => super::HEADER_PAYMENT_RESPONSE,
        }
    }
}

/// The settlement receipt (`PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::address::eip55::option"
    )]
    pub payer: Option<Address>,
    pub transaction: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// A sentence for people explaining `errorReason` (SDK extension; optional on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Body of a facilitator's `POST /verify` and `POST /settle`: the payment as the client sent
/// it and the resource server's own matched requirement (v1 or v2 shapes, by `x402Version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    pub x402_version: u8,
    pub payment_payload: Value,
    pub payment_requirements: Value,
}

/// A facilitator's `/verify` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// A sentence for people (SDK extension; optional on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// Kept as text: facilitators differ in what they put here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// One payment kind a facilitator handles (`GET /supported`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// A facilitator's `GET /supported` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    #[serde(default)]
    pub extensions: Vec<String>,
    /// CAIP-2 pattern → addresses that settle (e.g. `"eip155:*": ["0x…"]`).
    #[serde(default)]
    pub signers: std::collections::BTreeMap<String, Vec<String>>,
}
