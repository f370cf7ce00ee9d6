//! `POST /verify`: a facilitator request decoded step by step, then the protocol's one payment
//! check, then the chain's reads (nonce unused, balance sufficient).

use alloy_primitives::Address;
use serde_json::Value;

use super::FacilitatorApp;
use crate::util::now_secs;
use crate::x402::check::{Verified, check as check_payment};
use crate::x402::ids::PaymentRef;
use crate::x402::networks;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::redact;
use crate::x402::types::*;

/// A payment that passed every check that needs no chain.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    /// The network as the requirements name it (a v1 name for v1), echoed in answers.
    pub network: String,
    /// The resource server's requirement in v2 form (CAIP-2 network).
    pub requirements: PaymentRequirements,
    pub payment: Verified,
}

impl Checked {
    pub fn payer(&self) -> Address {
        self.payment.payer()
    }

    /// Chain, token, payer and nonce: the claim while settling and the journal's payment id.
    pub fn payment_ref(&self) -> PaymentRef {
        let a = &self.payment.authorization;
        PaymentRef::new(
            self.payment.chain_id,
            self.requirements.asset,
            a.from,
            a.nonce,
        )
    }
}

/// Why a payment is not valid, with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    pub rejection: Rejection,
    /// The authorization's `from` as the payload states it, when it names one.
    pub payer: Option<Address>,
    /// The network as the requirements name it, or `""` when they did not say.
    pub network: String,
}

/// A rejection as an [`Invalid`] with what is known so far.
fn invalid(payer: Option<Address>, network: &str) -> impl Fn(Rejection) -> Invalid + '_ {
    move |rejection| Invalid {
        rejection,
        payer,
        network: network.to_string(),
    }
}

/// The payment payload of a request, in either version.
struct Payload {
    exact: ExactEvmPayload,
    /// v2: the requirement the client accepted.
    accepted: Option<PaymentRequirements>,
    scheme: String,
    /// CAIP-2 (a v1 payload's network name converted).
    network: String,
}

/// Every check of a facilitator request that needs no chain, in order. `served` says whether a
/// CAIP-2 network is one this facilitator settles on.
pub(super) fn check(
    req: &FacilitatorRequest,
    served: &dyn Fn(&str) -> bool,
    now: u64,
) -> Result<Checked, Invalid> {
    let mut network = req
        .payment_requirements
        .get("network")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let payer = req
        .payment_payload
        .pointer("/payload/authorization/from")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Address>().ok());
    // 1. Version and shapes.
    let payload = decode_payload(req).map_err(invalid(payer, &network))?;
    let payer = Some(payload.exact.authorization.from);
    let requirements = parse_requirements(req.x402_version, &req.payment_requirements)
        .map_err(|m| Rejection::new(Reason::RequirementsMismatch, m))
        .map_err(invalid(payer, &network))?;
    if network.is_empty() {
        network = requirements.network.clone();
    }
    let invalid = invalid(payer, &network);
    // 2. Scheme.
    check_scheme(&requirements, &payload).map_err(&invalid)?;
    // 3. Network: one served here, and the same in the payload.
    check_network(&requirements, &payload, served).map_err(&invalid)?;
    // 4. v2: what the client accepted is what the resource server requires.
    if let Some(acc) = &payload.accepted {
        crate::x402::check::same_terms(acc, &requirements).map_err(&invalid)?;
    }
    // 5. The authorization against the requirement, and its signature.
    let payment = check_payment(&requirements, &payload.exact, now).map_err(&invalid)?;
    Ok(Checked {
        network: network.clone(),
        requirements,
        payment,
    })
}

/// The payment payload in the request's `x402Version`, which it must repeat.
fn decode_payload(req: &FacilitatorRequest) -> Result<Payload, Rejection> {
    let version = req.x402_version;
    // Named field and problem, never the value (serde's own messages quote it).
    let shape = |why: String| {
        Rejection::new(
            Reason::InvalidPayload,
            format!("paymentPayload is not an x402 v{version} `exact` EVM payload: {why}"),
        )
    };
    let (payload, inner) = match version {
        2 => {
            let p: PaymentPayload =
                redact::from_value(req.payment_payload.clone()).map_err(shape)?;
            let payload = Payload {
                scheme: p.accepted.scheme.clone(),
                network: p.accepted.network.clone(),
                exact: p.payload,
                accepted: Some(p.accepted),
            };
            (payload, p.x402_version)
        }
        1 => {
            let p: PaymentPayloadV1 =
                redact::from_value(req.payment_payload.clone()).map_err(shape)?;
            let payload = Payload {
                network: networks::from_v1(&p.network),
                scheme: p.scheme,
                exact: p.payload,
                accepted: None,
            };
            (payload, p.x402_version)
        }
        v => {
            return Err(Rejection::new(
                Reason::InvalidX402Version,
                format!("x402Version {v} is not supported; use 1 or 2"),
            ));
        }
    };
    if inner != version {
        return Err(Rejection::new(
            Reason::InvalidX402Version,
            format!("paymentPayload.x402Version is {inner} but the request says {version}"),
        ));
    }
    Ok(payload)
}

/// The resource server's requirement in v2 form (a v1 requirement converted).
fn parse_requirements(version: u8, raw: &Value) -> Result<PaymentRequirements, String> {
    if version == 1
        && let Ok(r) = serde_json::from_value::<PaymentRequirementsV1>(raw.clone())
    {
        return Ok(r.into());
    }
    redact::from_value::<PaymentRequirements>(raw.clone()).map_err(|why| {
        let shape = if version == 1 {
            "x402 v1 requirements (maxAmountRequired, resource, description, mimeType, payTo, maxTimeoutSeconds, asset)"
        } else {
            "x402 v2 requirements (scheme, network, amount, asset, payTo, maxTimeoutSeconds, extra)"
        };
        format!("paymentRequirements are not {shape}: {why}")
    })
}

fn check_scheme(requirements: &PaymentRequirements, payload: &Payload) -> Result<(), Rejection> {
    for (whose, scheme) in [
        ("paymentRequirements", &requirements.scheme),
        ("paymentPayload", &payload.scheme),
    ] {
        if scheme != "exact" {
            return Err(Rejection::new(
                Reason::UnsupportedScheme,
                format!(
                    "{whose} names a scheme other than `exact`, the one this facilitator handles"
                ),
            ));
        }
    }
    Ok(())
}

/// A network this facilitator settles, the same in the payload and the requirements.
fn check_network(
    requirements: &PaymentRequirements,
    payload: &Payload,
    served: &dyn Fn(&str) -> bool,
) -> Result<(), Rejection> {
    if networks::chain_id(&requirements.network).is_none() || !served(&requirements.network) {
        return Err(Rejection::new(
            Reason::NetworkMismatch,
            "the requirements' network is not one this facilitator settles; see GET /supported",
        ));
    }
    if payload.network != requirements.network {
        return Err(Rejection::new(
            Reason::NetworkMismatch,
            "the payment names another network than the requirements",
        ));
    }
    Ok(())
}

impl FacilitatorApp {
    /// Every check, the chain's included (nonce unused, balance sufficient).
    pub(super) async fn verify(&self, req: &FacilitatorRequest) -> Result<Checked, Invalid> {
        let c = check(req, &|n| self.serves(n), now_secs())?;
        let invalid = |r: Rejection| Invalid {
            rejection: r,
            payer: Some(c.payer()),
            network: c.network.clone(),
        };
        let chain = self.chain(&c.requirements.network).ok_or_else(|| {
            invalid(Rejection::new(
                Reason::UnexpectedVerifyError,
                "no chain for a served network",
            ))
        })?;
        chain
            .verify_onchain(c.requirements.asset, &c.payment.authorization)
            .await
            .map_err(invalid)?;
        Ok(c)
    }
}
