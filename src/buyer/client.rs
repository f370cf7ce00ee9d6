//! Paying a 402: read the challenge (v2 header, else v1 body), pick an `exact` EVM option,
//! sign one EIP-3009 authorization and send the request again with it. Used by
//! `x402-sidecar pay`, the demo and the tests; the building blocks are public so tests can
//! craft payments that are wrong in exactly one way.

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;
use serde_json::Value;

use crate::evm::typed;
use crate::util::now_secs;
use crate::x402::codec;
use crate::x402::types::*;
use crate::x402::{HEADER_PAYMENT_REQUIRED, HEADER_PAYMENT_SIGNATURE, HEADER_X_PAYMENT, networks};

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("the 402 carries no payment requirements this client understands: {0}")]
    BadChallenge(String),
    #[error(
        "the price {price} is above the limit {limit} (atomic units); not paid (raise it with --max-amount)"
    )]
    TooExpensive { price: U256, limit: U256 },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A seller's priced option as the buyer sees it: one entry of a 402's `accepts`, in the
/// version the seller speaks (the seller's own `Offer` is what it asks; this is what we read).
#[derive(Debug, Clone)]
pub struct Quote {
    pub version: u8,
    /// The option as offered (v2 form; for v1 converted, with `network` as CAIP-2).
    pub requirement: PaymentRequirements,
    /// For v2: the option exactly as received, echoed verbatim in `accepted`.
    pub raw: Value,
    pub(crate) resource: Option<ResourceInfo>,
}

impl Quote {
    /// A v2 option, echoed verbatim when paid; `None` if it does not parse.
    fn v2(raw: &Value, resource: &Option<ResourceInfo>) -> Option<Quote> {
        let requirement = serde_json::from_value::<PaymentRequirements>(raw.clone()).ok()?;
        Some(Quote {
            version: 2,
            requirement,
            raw: raw.clone(),
            resource: resource.clone(),
        })
    }

    /// A v1 option in v2 form (`maxAmountRequired` as `amount`, `network` as CAIP-2); `None`
    /// for a network without a CAIP-2 EVM name.
    fn v1(r: PaymentRequirementsV1) -> Option<Quote> {
        let requirement = PaymentRequirements::from(r);
        networks::chain_id(&requirement.network)?;
        let raw = serde_json::to_value(&requirement).unwrap_or_default();
        Some(Quote {
            version: 1,
            requirement,
            raw,
            resource: None,
        })
    }

    /// `exact` on an EVM network: what this client can pay.
    fn payable(&self) -> bool {
        self.requirement.scheme == "exact"
            && networks::chain_id(&self.requirement.network).is_some()
    }
}

/// The v2 challenge's `resource`, if it parses.
fn resource_of(challenge: &Value) -> Option<ResourceInfo> {
    challenge
        .get("resource")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
}

/// The v2 challenge's `accepts`.
fn accepts_of(challenge: &Value) -> &[Value] {
    challenge
        .get("accepts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Parse a 402 answer: prefer the v2 header unless `prefer_v1`; else the v1 JSON body.
/// The first `exact` option on an EVM network is chosen.
pub fn parse_challenge(
    header: Option<&str>,
    body: &[u8],
    prefer_v1: bool,
) -> Result<Quote, PayError> {
    let none = || PayError::BadChallenge("no `exact` option on an EVM network".into());
    if let (Some(h), false) = (header, prefer_v1) {
        let pr: Value = codec::decode(h.as_bytes(), 64 * 1024)
            .map_err(|e| PayError::BadChallenge(e.message))?;
        let resource = resource_of(&pr);
        return accepts_of(&pr)
            .iter()
            .filter_map(|raw| Quote::v2(raw, &resource))
            .find(Quote::payable)
            .ok_or_else(none);
    }
    let v1: PaymentRequiredV1 =
        serde_json::from_slice(body).map_err(|e| PayError::BadChallenge(e.to_string()))?;
    v1.accepts
        .into_iter()
        .filter(|r| r.scheme == "exact")
        .find_map(Quote::v1)
        .ok_or_else(none)
}

/// Every option of a 402: the v2 header's `accepts` if present, else the v1 body's.
/// Options that do not parse are skipped; the policy decides among the rest.
pub(crate) fn parse_all(header: Option<&str>, body: &[u8]) -> Vec<Quote> {
    if let Some(h) = header
        && let Ok(pr) = codec::decode::<Value>(h.as_bytes(), 64 * 1024)
    {
        let resource = resource_of(&pr);
        return accepts_of(&pr)
            .iter()
            .filter_map(|raw| Quote::v2(raw, &resource))
            .collect();
    }
    let Ok(v1) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    accepts_of(&v1)
        .iter()
        .filter_map(|raw| serde_json::from_value::<PaymentRequirementsV1>(raw.clone()).ok())
        .filter_map(Quote::v1)
        .collect()
}

pub use crate::evm::typed::authorization;

/// Sign `auth` in the EIP-712 domain the requirement names (`extra.name`/`extra.version`).
pub fn sign(
    signer: &PrivateKeySigner,
    req: &PaymentRequirements,
    auth: Authorization,
) -> Result<ExactEvmPayload, PayError> {
    typed::sign_payment(signer, req, auth).map_err(|e| PayError::Sign(e.to_string()))
}

/// The v2 `PAYMENT-SIGNATURE` value: `accepted` is the offered option verbatim.
pub fn v2_header(
    accepted: &Value,
    payload: &ExactEvmPayload,
    resource: Option<&ResourceInfo>,
) -> String {
    let mut v = serde_json::json!({ "x402Version": 2, "accepted": accepted, "payload": payload });
    if let Some(r) = resource {
        v["resource"] = serde_json::to_value(r).unwrap_or_default();
    }
    codec::encode(&v)
}

/// The v1 `X-PAYMENT` value.
pub fn v1_header(network: &str, payload: &ExactEvmPayload) -> String {
    let name = networks::to_v1(network);
    codec::encode(
        &serde_json::json!({ "x402Version": 1, "scheme": "exact", "network": name, "payload": payload }),
    )
}

/// Header name and value paying `quote` with `signer`.
pub fn payment_for(
    signer: &PrivateKeySigner,
    quote: &Quote,
) -> Result<(&'static str, String, Authorization), PayError> {
    payment_with(signer, quote, u64::MAX)
}

/// The same, with the authorization's lifetime clamped to `max_valid_secs`.
pub(crate) fn payment_with(
    signer: &PrivateKeySigner,
    quote: &Quote,
    max_valid_secs: u64,
) -> Result<(&'static str, String, Authorization), PayError> {
    let now = now_secs();
    let mut auth = authorization(signer, &quote.requirement, now);
    let life = quote.requirement.max_timeout_seconds.min(max_valid_secs);
    auth.valid_before = U256::from(now.saturating_add(life));
    let payload = sign(signer, &quote.requirement, auth.clone())?;
    Ok(match quote.version {
        1 => (
            HEADER_X_PAYMENT,
            v1_header(&quote.requirement.network, &payload),
            auth,
        ),
        _ => (
            HEADER_PAYMENT_SIGNATURE,
            v2_header(&quote.raw, &payload, quote.resource.as_ref()),
            auth,
        ),
    })
}

/// The end of a paid call.
#[derive(Debug)]
pub struct Paid {
    pub status: u16,
    pub body: Bytes,
    pub receipt: Option<SettleResponse>,
    /// The option paid; `None` when the seller did not ask for payment.
    pub quote: Option<Quote>,
    /// The authorization sent; `None` when the seller did not ask for payment.
    pub auth: Option<Authorization>,
}

/// The settlement receipt headers a seller may answer with, v2's first.
pub(crate) const RECEIPT_HEADERS: [&str; 2] = [
    crate::x402::HEADER_PAYMENT_RESPONSE,
    crate::x402::HEADER_X_PAYMENT_RESPONSE,
];

/// A receipt header's value, decoded; `None` if it is not one.
pub(crate) fn settlement(value: &[u8]) -> Option<SettleResponse> {
    codec::decode::<SettleResponse>(value, 16 * 1024).ok()
}

/// 402 → sign → retry, reporting each step through `step`.
pub async fn pay(
    http: &reqwest::Client,
    url: &str,
    body: Bytes,
    signer: &PrivateKeySigner,
    prefer_v1: bool,
    max_amount: Option<U256>,
    mut step: impl FnMut(&str),
) -> Result<Paid, PayError> {
    step(&format!("POST {url} without payment"));
    let (status, headers, bytes) = post(http, url, &body, None).await?;
    if status != 402 {
        step(&format!("answered {status} without asking for payment"));
        return Ok(Paid {
            status,
            body: bytes,
            receipt: None,
            quote: None,
            auth: None,
        });
    }
    let header = headers
        .get(HEADER_PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok());
    let quote = parse_challenge(header, &bytes, prefer_v1)?;
    let r = &quote.requirement;
    step(&format!(
        "402 Payment Required (x402 v{}): {} atomic units of {} on {} to {}, valid {} s",
        quote.version, r.amount, r.asset, r.network, r.pay_to, r.max_timeout_seconds
    ));
    if let Some(limit) = max_amount
        && r.amount > limit
    {
        return Err(PayError::TooExpensive {
            price: r.amount,
            limit,
        });
    }
    let (name, value, auth) = payment_for(signer, &quote)?;
    step(&format!(
        "signed EIP-3009 authorization from {} nonce {} ({name})",
        auth.from, auth.nonce
    ));
    let (status, headers, bytes) = post(http, url, &body, Some((name, value))).await?;
    let receipt = RECEIPT_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| settlement(v.as_bytes()));
    step(&match &receipt {
        Some(r) if r.success => format!("{status}: settled in transaction {}", r.transaction),
        Some(r) => format!(
            "{status}: settlement failed: {}",
            r.error_reason.as_deref().unwrap_or("?")
        ),
        None if (200..300).contains(&status) => {
            format!("{status}: answered without a settlement receipt")
        }
        None => format!(
            "{status}: the seller did not deliver, and its answer does not say whether it settled; the authorization (nonce {}) stays usable until {} (unix {}): check the chain before paying again",
            auth.nonce,
            crate::util::rfc3339(u64::try_from(auth.valid_before).unwrap_or(u64::MAX)),
            auth.valid_before
        ),
    });
    Ok(Paid {
        status,
        body: bytes,
        receipt,
        quote: Some(quote),
        auth: Some(auth),
    })
}

/// POST `body` as JSON to `url`, with `payment` as a header if given.
async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &Bytes,
    payment: Option<(&'static str, String)>,
) -> Result<(u16, reqwest::header::HeaderMap, Bytes), PayError> {
    let mut req = http
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.clone());
    if let Some((k, v)) = payment {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| PayError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| PayError::Http(e.to_string()))?;
    Ok((status, headers, bytes))
}
