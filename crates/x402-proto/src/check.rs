//! The one payment check, shared by the seller's paywall (after [`crate::matching`] found the
//! requirement a payment is for) and the facilitator service's `/verify` (after it decoded the
//! resource server's requirement): a requirement, a signed authorization and the time in, a
//! [`Verified`] payment or a [`Rejection`] with its [`Reason`] out. No chain, no I/O.
//!
//! In order: the requirement names an EVM network and the token's EIP-712 domain; the
//! authorization pays the requirement's `payTo` exactly its amount, within a validity window
//! with an upper bound; the signature recovers the payer in the token's domain on that chain.

use alloy_primitives::{Address, Signature, U256};
use serde_json::Value;

use crate::networks;
use crate::reason::{Reason, Rejection};
use crate::typed;
use crate::types::{Authorization, ExactEvmPayload, PaymentRequirements};

/// Seconds a settlement needs after verification: `validBefore` must be at least this far ahead.
const SETTLEMENT_BUFFER_SECS: u64 = 6;
/// Clock skew tolerated above `now + maxTimeoutSeconds` for `validBefore`.
const CLOCK_SKEW_SECS: u64 = 30;

/// A payment that passed every check that needs no chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The EVM chain of the requirement's network.
    pub chain_id: u64,
    pub authorization: Authorization,
    /// The signature, parsed; it recovers `authorization.from`.
    pub signature: Signature,
}

impl Verified {
    pub fn payer(&self) -> Address {
        self.authorization.from
    }
}

/// Check `payment` against `req` at `now` (unix seconds).
pub fn check(
    req: &PaymentRequirements,
    payment: &ExactEvmPayload,
    now: u64,
) -> Result<Verified, Rejection> {
    let chain_id = networks::chain_id(&req.network).ok_or_else(|| {
        Rejection::new(
            Reason::NetworkMismatch,
            "the requirements' `network` is not an EVM (eip155) network",
        )
    })?;
    let (name, version) = eip712_domain_fields(req)?;
    let auth = &payment.authorization;
    check_authorization(req, auth, now)?;
    let domain = typed::domain(name, version, chain_id, req.asset);
    let signature = typed::verify_signature(auth, &payment.signature, &domain)?;
    Ok(Verified {
        chain_id,
        authorization: auth.clone(),
        signature,
    })
}

/// The terms a v2 payment's `accepted` echoes, against the requirement it is checked against:
/// asset, recipient and amount. One rule for the seller (against its own offer) and the
/// facilitator service (against the resource server's requirements).
pub fn same_terms(
    accepted: &PaymentRequirements,
    required: &PaymentRequirements,
) -> Result<(), Rejection> {
    if accepted.asset != required.asset {
        return Err(Rejection::new(
            Reason::AssetMismatch,
            "the payment's `accepted.asset` is not the asset the requirements ask for",
        ));
    }
    if accepted.pay_to != required.pay_to {
        return Err(Rejection::new(
            Reason::RecipientMismatch,
            "the payment's `accepted.payTo` is not the address the requirements pay",
        ));
    }
    if accepted.amount != required.amount {
        return Err(Rejection::new(
            Reason::ValueMismatch,
            format!(
                "the payment's `accepted.amount` is not the {} atomic units the requirements ask for",
                required.amount
            ),
        ));
    }
    Ok(())
}

/// The token's EIP-712 domain `name` and `version`, from the requirement's `extra`.
fn eip712_domain_fields(req: &PaymentRequirements) -> Result<(&str, &str), Rejection> {
    let extra = req.extra.as_ref().and_then(Value::as_object);
    let field = |name: &str| {
        extra
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (field("name"), field("version")) {
        (Some(name), Some(version)) => Ok((name, version)),
        _ => Err(Rejection::new(
            Reason::RequirementsMismatch,
            "paymentRequirements.extra must carry the token's EIP-712 domain `name` and `version` (e.g. USDC / 2)",
        )),
    }
}

/// The authorization against the requirement: recipient, value, validity window.
fn check_authorization(
    req: &PaymentRequirements,
    auth: &Authorization,
    now: u64,
) -> Result<(), Rejection> {
    if auth.to != req.pay_to {
        return Err(Rejection::new(
            Reason::RecipientMismatch,
            "the authorization's `to` is not the payTo of the requirements",
        ));
    }
    if auth.value != req.amount {
        return Err(Rejection::new(
            Reason::ValueMismatch,
            format!(
                "the authorization's `value` is not the price, {} atomic units",
                req.amount
            ),
        ));
    }
    check_window(auth, req.max_timeout_seconds, now)
}

/// Valid now, still valid when the settlement lands, and not longer than `max_timeout` allows.
fn check_window(auth: &Authorization, max_timeout: u64, now: u64) -> Result<(), Rejection> {
    let now_u = U256::from(now);
    if auth.valid_after > now_u {
        return Err(Rejection::new(
            Reason::ValidAfter,
            format!("the authorization's `validAfter` is still ahead (now {now})"),
        ));
    }
    if auth.valid_before < now_u + U256::from(SETTLEMENT_BUFFER_SECS) {
        return Err(Rejection::new(
            Reason::ValidBefore,
            format!(
                "the authorization's `validBefore` is less than {SETTLEMENT_BUFFER_SECS}s from now ({now}); sign a new one"
            ),
        ));
    }
    let ceiling = now + max_timeout + CLOCK_SKEW_SECS;
    if auth.valid_before > U256::from(ceiling) {
        return Err(Rejection::new(
            Reason::ValidBeforeTooFar,
            format!(
                "the authorization's `validBefore` is past the {max_timeout}s this route allows (latest {ceiling})"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, authorization as auth, requirement as req, signed};
    use alloy_signer_local::PrivateKeySigner;
    use serde_json::json;

    #[test]
    fn a_signed_authorization_for_the_requirement_is_verified() {
        let signer = PrivateKeySigner::random();
        let p = signed(&signer);
        let v = check(&req(), &p, NOW).unwrap();
        assert_eq!(v.payer(), signer.address());
        assert_eq!(v.chain_id, 84532);
    }

    #[test]
    fn the_requirement_must_name_its_network_and_domain() {
        let signer = PrivateKeySigner::random();
        let p = signed(&signer);
        let mut r = req();
        r.network = "base-sepolia".into();
        assert_eq!(
            check(&r, &p, NOW).unwrap_err().reason,
            Reason::NetworkMismatch
        );
        for extra in [
            None,
            Some(json!({"name": "USDC"})),
            Some(json!({"name": "", "version": "2"})),
        ] {
            let mut r = req();
            r.extra = extra;
            assert_eq!(
                check(&r, &p, NOW).unwrap_err().reason,
                Reason::RequirementsMismatch
            );
        }
        let mut r = req();
        r.extra = Some(json!({"name": "USD Coin", "version": "2"}));
        assert_eq!(check(&r, &p, NOW).unwrap_err().reason, Reason::Signature);
    }

    #[test]
    fn authorization_window_has_both_bounds() {
        let r = req();
        assert_eq!(check_authorization(&r, &auth(), NOW), Ok(()));
        type Edit = fn(&mut Authorization);
        let cases: [(Edit, Reason); 5] = [
            (|a| a.valid_after = U256::from(NOW + 5), Reason::ValidAfter),
            (
                |a| a.valid_before = U256::from(NOW + 5),
                Reason::ValidBefore,
            ),
            (
                |a| a.valid_before = U256::from(NOW + 300 + CLOCK_SKEW_SECS + 1),
                Reason::ValidBeforeTooFar,
            ),
            (
                |a| a.to = Address::repeat_byte(8),
                Reason::RecipientMismatch,
            ),
            (|a| a.value = U256::from(10_001), Reason::ValueMismatch),
        ];
        for (edit, want) in cases {
            let mut a = auth();
            edit(&mut a);
            assert_eq!(check_authorization(&r, &a, NOW).unwrap_err().reason, want);
        }
    }
}
