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
    #[error("the price {price} is above the limit {limit} (atomic units); not paid")]
    TooExpensive { price: U256, limit: U256 },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A parsed challenge: the chosen option, in the version the seller speaks.
#[derive(Debug, Clone)]
pub struct Offer {
    pub version: u8,
    /// The option as offered (v2 form; for v1 converted, with `network` as CAIP-2).
    pub requirement: PaymentRequirements,
    /// For v2: the option exactly as received, echoed verbatim in `accepted`.
    pub raw: Value,
    pub resource: Option<ResourceInfo>,
}

/// Parse a 402 answer: prefer the v2 header unless `prefer_v1`; else the v1 JSON body.
pub fn parse_challenge(
    header: Option<&str>,
    body: &[u8],
    prefer_v1: bool,
) -> Result<Offer, PayError> {
    if let (Some(h), false) = (header, prefer_v1) {
        let pr: Value = codec::decode(h.as_bytes(), 64 * 1024)
            .map_err(|e| PayError::BadChallenge(e.message))?;
        let accepts = pr
            .get("accepts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for raw in accepts {
            if let Ok(req) = serde_json::from_value::<PaymentRequirements>(raw.clone())
                && req.scheme == "exact"
                && networks::chain_id(&req.network).is_some()
            {
                let resource = pr
                    .get("resource")
                    .and_then(|r| serde_json::from_value(r.clone()).ok());
                return Ok(Offer {
                    version: 2,
                    requirement: req,
                    raw,
                    resource,
                });
            }
        }
        return Err(PayError::BadChallenge(
            "no `exact` option on an EVM network".into(),
        ));
    }
    let v1: PaymentRequiredV1 =
        serde_json::from_slice(body).map_err(|e| PayError::BadChallenge(e.to_string()))?;
    for r in v1.accepts {
        let req = PaymentRequirements::from(r);
        if req.scheme == "exact" && networks::chain_id(&req.network).is_some() {
            let raw = serde_json::to_value(&req).unwrap_or_default();
            return Ok(Offer {
                version: 1,
                requirement: req,
                raw,
                resource: None,
            });
        }
    }
    Err(PayError::BadChallenge(
        "no `exact` option on an EVM network".into(),
    ))
}

/// Every option of a 402: the v2 header's `accepts` if present, else the v1 body's.
/// Options that do not parse are skipped; the policy decides among the rest.
pub fn parse_all(header: Option<&str>, body: &[u8]) -> Vec<Offer> {
    if let Some(h) = header
        && let Ok(pr) = codec::decode::<Value>(h.as_bytes(), 64 * 1024)
    {
        let resource: Option<ResourceInfo> = pr
            .get("resource")
            .and_then(|r| serde_json::from_value(r.clone()).ok());
        return pr
            .get("accepts")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|raw| {
                        let requirement =
                            serde_json::from_value::<PaymentRequirements>(raw.clone()).ok()?;
                        Some(Offer {
                            version: 2,
                            requirement,
                            raw: raw.clone(),
                            resource: resource.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    let Ok(v1) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    v1.get("accepts")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|raw| {
                    let r = serde_json::from_value::<PaymentRequirementsV1>(raw.clone()).ok()?;
                    let requirement = PaymentRequirements::from(r);
                    networks::chain_id(&requirement.network)?;
                    let raw = serde_json::to_value(&requirement).ok()?;
                    Some(Offer {
                        version: 1,
                        requirement,
                        raw,
                        resource: None,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
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

/// Header name and value paying `offer` with `signer`.
pub fn payment_for(
    signer: &PrivateKeySigner,
    offer: &Offer,
) -> Result<(&'static str, String, Authorization), PayError> {
    payment_with(signer, offer, u64::MAX)
}

/// The same, with the authorization's lifetime clamped to `max_valid_secs`.
pub fn payment_with(
    signer: &PrivateKeySigner,
    offer: &Offer,
    max_valid_secs: u64,
) -> Result<(&'static str, String, Authorization), PayError> {
    let now = now_secs();
    let mut auth = authorization(signer, &offer.requirement, now);
    let life = offer.requirement.max_timeout_seconds.min(max_valid_secs);
    auth.valid_before = U256::from(now.saturating_add(life));
    let payload = sign(signer, &offer.requirement, auth.clone())?;
    Ok(match offer.version {
        1 => (
            HEADER_X_PAYMENT,
            v1_header(&offer.requirement.network, &payload),
            auth,
        ),
        _ => (
            HEADER_PAYMENT_SIGNATURE,
            v2_header(&offer.raw, &payload, offer.resource.as_ref()),
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
    pub offer: Option<Offer>,
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
    let send = |extra: Option<(&'static str, String)>| {
        let mut req = http
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        async move {
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
            Ok::<_, PayError>((status, headers, bytes))
        }
    };
    step(&format!("POST {url} without payment"));
    let (status, headers, bytes) = send(None).await?;
    if status != 402 {
        step(&format!("answered {status} without asking for payment"));
        return Ok(Paid {
            status,
            body: bytes,
            receipt: None,
            offer: None,
        });
    }
    let header = headers
        .get(HEADER_PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok());
    let offer = parse_challenge(header, &bytes, prefer_v1)?;
    let r = &offer.requirement;
    step(&format!(
        "402 Payment Required (x402 v{}): {} atomic units of {} on {} to {}, valid {} s",
        offer.version, r.amount, r.asset, r.network, r.pay_to, r.max_timeout_seconds
    ));
    if let Some(limit) = max_amount
        && r.amount > limit
    {
        return Err(PayError::TooExpensive {
            price: r.amount,
            limit,
        });
    }
    let (name, value, auth) = payment_for(signer, &offer)?;
    step(&format!(
        "signed EIP-3009 authorization from {} nonce {} ({name})",
        auth.from, auth.nonce
    ));
    let (status, headers, bytes) = send(Some((name, value))).await?;
    let receipt = [
        crate::x402::HEADER_PAYMENT_RESPONSE,
        crate::x402::HEADER_X_PAYMENT_RESPONSE,
    ]
    .iter()
    .find_map(|h| headers.get(*h))
    .and_then(|v| codec::decode::<SettleResponse>(v.as_bytes(), 16 * 1024).ok());
    match &receipt {
        Some(r) if r.success => step(&format!(
            "{status}: settled in transaction {}",
            r.transaction
        )),
        Some(r) => step(&format!(
            "{status}: settlement failed: {}",
            r.error_reason.as_deref().unwrap_or("?")
        )),
        None => step(&format!("{status}: no settlement receipt")),
    }
    Ok(Paid {
        status,
        body: bytes,
        receipt,
        offer: Some(offer),
    })
}
