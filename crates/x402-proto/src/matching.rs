//! Matching a payment against *this route's own* requirements: a v2 payment by what it
//! accepted (every field, and the server challenge it echoes), a v1 payment by its network;
//! then the one [`check`](crate::check::check) of the authorization and its signature.

use alloy_primitives::{Address, U256};
use serde_json::{Map, Value, json};

use super::challenge::ChallengeKey;
use super::check::{Verified, check};
use super::networks;
use super::reason::{Reason, Rejection};
use super::types::*;

/// One way this route can be paid: the static requirement plus what is needed to check it.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub scheme: String,
    pub network: String,
    pub chain_id: u64,
    pub asset: Address,
    pub pay_to: Address,
    pub amount: U256,
    pub max_timeout_seconds: u64,
    pub decimals: u8,
    /// EIP-712 domain of the token.
    pub eip712_name: String,
    pub eip712_version: String,
    /// Who settles, announced in `extra.facilitator`.
    pub facilitator: String,
}

impl Offer {
    /// The requirement without a challenge (what the challenge MAC covers).
    pub fn base_requirement(&self) -> PaymentRequirements {
        PaymentRequirements {
            scheme: self.scheme.clone(),
            network: self.network.clone(),
            amount: self.amount,
            asset: self.asset,
            pay_to: self.pay_to,
            max_timeout_seconds: self.max_timeout_seconds,
            extra: Some(self.static_extra()),
        }
    }

    fn static_extra(&self) -> Value {
        json!({
            "name": self.eip712_name,
            "version": self.eip712_version,
            "facilitator": self.facilitator,
        })
    }

    /// The requirement as offered in a 402: static extra plus a fresh signed challenge.
    pub fn challenge(&self, key: &ChallengeKey, route: &str, now: u64) -> PaymentRequirements {
        let mut req = self.base_requirement();
        let expires_at = now + self.max_timeout_seconds;
        let token = key.issue(route, &req, expires_at);
        if let Some(Value::Object(extra)) = req.extra.as_mut() {
            extra.insert("expiresAt".into(), json!(expires_at));
            extra.insert("challenge".into(), json!(token));
        }
        req
    }
}

/// The result of matching: which offer the payment is for, and the payment, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub offer: usize,
    pub payment: Verified,
}

/// Find the offer a payment is for, checking every requirement field against ours, then check
/// the authorization and its signature against that offer.
pub fn match_payment(
    offers: &[Offer],
    payment: &IncomingPayment,
    key: &ChallengeKey,
    route: &str,
    now: u64,
) -> Result<Matched, Rejection> {
    let offer = match payment {
        IncomingPayment::V2(p) => match_v2(offers, &p.accepted, key, route, now)?,
        IncomingPayment::V1(p) => match_v1(offers, p)?,
    };
    let payment = check(&offers[offer].base_requirement(), payment.exact(), now)?;
    Ok(Matched { offer, payment })
}

/// v2: the offer on the accepted network and asset, every other field as offered, and the
/// challenge issued for it on this route.
fn match_v2(
    offers: &[Offer],
    acc: &PaymentRequirements,
    key: &ChallengeKey,
    route: &str,
    now: u64,
) -> Result<usize, Rejection> {
    let i = select_v2(offers, acc)?;
    let o = &offers[i];
    compare(o, acc)?;
    let extra = acc.extra.as_ref().and_then(Value::as_object);
    let token = extra
        .and_then(|e| e.get("challenge"))
        .and_then(Value::as_str);
    let expires_at = extra
        .and_then(|e| e.get("expiresAt"))
        .and_then(Value::as_u64);
    key.check(route, &o.base_requirement(), token, expires_at, now)?;
    Ok(i)
}

/// The offer a v2 payment names by scheme, network and asset.
fn select_v2(offers: &[Offer], acc: &PaymentRequirements) -> Result<usize, Rejection> {
    if acc.scheme != "exact" {
        return Err(Rejection::new(
            Reason::UnsupportedScheme,
            format!(
                "scheme `{}` is not offered here; this route takes `exact`",
                acc.scheme
            ),
        ));
    }
    let on_network: Vec<usize> = (0..offers.len())
        .filter(|&i| offers[i].network == acc.network)
        .collect();
    if on_network.is_empty() {
        return Err(Rejection::new(
            Reason::NetworkMismatch,
            format!(
                "network `{}` is not accepted here; accepted: {}",
                acc.network,
                list(offers, |o| o.network.clone())
            ),
        ));
    }
    let Some(i) = on_network
        .iter()
        .copied()
        .find(|&i| offers[i].asset == acc.asset)
    else {
        return Err(Rejection::new(
            Reason::AssetMismatch,
            format!("asset {} is not accepted on {}", acc.asset, acc.network),
        ));
    };
    Ok(i)
}

/// The accepted requirement's other fields against the offer's.
fn compare(o: &Offer, acc: &PaymentRequirements) -> Result<(), Rejection> {
    crate::check::same_terms(acc, &o.base_requirement())?;
    if acc.max_timeout_seconds != o.max_timeout_seconds {
        return Err(Rejection::new(
            Reason::RequirementsMismatch,
            format!(
                "maxTimeoutSeconds {} differs from this route's {}",
                acc.max_timeout_seconds, o.max_timeout_seconds
            ),
        ));
    }
    let empty = Map::new();
    let extra = acc
        .extra
        .as_ref()
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (field, ours) in [
        ("name", &o.eip712_name),
        ("version", &o.eip712_version),
        ("facilitator", &o.facilitator),
    ] {
        if extra.get(field).and_then(Value::as_str) != Some(ours.as_str()) {
            return Err(Rejection::new(
                Reason::RequirementsMismatch,
                format!("extra.{field} must be `{ours}` as offered"),
            ));
        }
    }
    Ok(())
}

fn match_v1(offers: &[Offer], p: &PaymentPayloadV1) -> Result<usize, Rejection> {
    if p.scheme != "exact" {
        return Err(Rejection::new(
            Reason::UnsupportedScheme,
            format!(
                "scheme `{}` is not offered here; this route takes `exact`",
                p.scheme
            ),
        ));
    }
    let network = networks::from_v1(&p.network);
    let on_network: Vec<usize> = (0..offers.len())
        .filter(|&i| offers[i].network == network)
        .collect();
    if on_network.is_empty() {
        return Err(Rejection::new(
            Reason::NetworkMismatch,
            format!("network `{}` is not accepted here", p.network),
        ));
    }
    let auth = &p.payload.authorization;
    // v1 names no asset: take the offer this authorization pays, else explain the first one.
    let exact = on_network
        .iter()
        .copied()
        .find(|&i| offers[i].pay_to == auth.to && offers[i].amount == auth.value);
    Ok(exact.unwrap_or(on_network[0]))
}

fn list(offers: &[Offer], f: impl Fn(&Offer) -> String) -> String {
    let mut v: Vec<String> = offers.iter().map(f).collect();
    v.dedup();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, signed};
    use alloy_primitives::B256;
    use alloy_signer_local::PrivateKeySigner;

    fn offer() -> Offer {
        Offer {
            scheme: "exact".into(),
            network: "eip155:84532".into(),
            chain_id: 84532,
            asset: Address::repeat_byte(1),
            pay_to: Address::repeat_byte(2),
            amount: U256::from(10_000),
            max_timeout_seconds: 300,
            decimals: 6,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            facilitator: "local:settler".into(),
        }
    }

    fn signer() -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap()
    }

    fn payload() -> ExactEvmPayload {
        signed(&signer())
    }

    type Edit = Box<dyn Fn(&mut PaymentRequirements)>;

    fn v2(accepted: PaymentRequirements) -> IncomingPayment {
        IncomingPayment::V2(PaymentPayload {
            x402_version: 2,
            accepted,
            payload: payload(),
            resource: None,
            extensions: None,
        })
    }

    fn key() -> ChallengeKey {
        ChallengeKey::new(b"k".to_vec())
    }

    #[test]
    fn an_echoed_challenge_matches() {
        let acc = offer().challenge(&key(), "POST /x402", NOW);
        let m = match_payment(&[offer()], &v2(acc), &key(), "POST /x402", NOW + 10).unwrap();
        assert_eq!(m.offer, 0);
        assert_eq!(m.payment.payer(), signer().address());
        assert_eq!(m.payment.chain_id, 84532);
    }

    #[test]
    fn each_changed_field_has_its_own_reason() {
        let base = offer().challenge(&key(), "POST /x402", NOW);
        let cases: Vec<(Edit, Reason)> = vec![
            (
                Box::new(|r| r.scheme = "upto".into()),
                Reason::UnsupportedScheme,
            ),
            (
                Box::new(|r| r.network = "eip155:8453".into()),
                Reason::NetworkMismatch,
            ),
            (
                Box::new(|r| r.asset = Address::repeat_byte(9)),
                Reason::AssetMismatch,
            ),
            (
                Box::new(|r| r.pay_to = Address::repeat_byte(9)),
                Reason::RecipientMismatch,
            ),
            (
                Box::new(|r| r.amount = U256::from(9_999)),
                Reason::ValueMismatch,
            ),
            (
                Box::new(|r| r.max_timeout_seconds = 3_600),
                Reason::RequirementsMismatch,
            ),
            (
                Box::new(|r| r.extra.as_mut().unwrap()["name"] = json!("USD Coin")),
                Reason::RequirementsMismatch,
            ),
            (
                Box::new(|r| r.extra.as_mut().unwrap()["challenge"] = json!("00.00")),
                Reason::InvalidChallenge,
            ),
            (
                Box::new(|r| r.extra.as_mut().unwrap().as_object_mut().unwrap().clear()),
                Reason::RequirementsMismatch,
            ),
        ];
        for (edit, want) in cases {
            let mut acc = base.clone();
            edit(&mut acc);
            let got = match_payment(&[offer()], &v2(acc), &key(), "POST /x402", NOW).unwrap_err();
            assert_eq!(got.reason, want, "{}", got.message);
        }
        let late =
            match_payment(&[offer()], &v2(base), &key(), "POST /x402", NOW + 301).unwrap_err();
        assert_eq!(late.reason, Reason::ChallengeExpired);
    }

    #[test]
    fn picks_the_offer_on_the_payment_network() {
        let mut other = offer();
        other.network = "eip155:8453".into();
        other.chain_id = 8453;
        let acc = offer().challenge(&key(), "POST /x402", NOW);
        assert_eq!(
            match_payment(&[other, offer()], &v2(acc), &key(), "POST /x402", NOW)
                .unwrap()
                .offer,
            1
        );
    }

    #[test]
    fn v1_needs_no_challenge() {
        let p = IncomingPayment::V1(PaymentPayloadV1 {
            x402_version: 1,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: payload(),
        });
        assert_eq!(
            match_payment(&[offer()], &p, &key(), "POST /x402", NOW)
                .unwrap()
                .offer,
            0
        );
        let IncomingPayment::V1(mut wrong) = p else {
            unreachable!()
        };
        wrong.network = "base".into();
        let r = match_payment(
            &[offer()],
            &IncomingPayment::V1(wrong),
            &key(),
            "POST /x402",
            NOW,
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::NetworkMismatch);
    }

    #[test]
    fn a_matched_payment_still_passes_the_check() {
        let acc = offer().challenge(&key(), "POST /x402", NOW);
        let IncomingPayment::V2(mut p) = v2(acc) else {
            unreachable!()
        };
        // Signed for 10 000 but claiming 9 999: the match holds, the check refuses.
        p.payload.authorization.value = U256::from(9_999);
        let r = match_payment(
            &[offer()],
            &IncomingPayment::V2(p.clone()),
            &key(),
            "POST /x402",
            NOW,
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::ValueMismatch);
        p.payload.authorization.value = U256::from(10_000);
        p.payload.authorization.nonce = B256::repeat_byte(5);
        let r = match_payment(
            &[offer()],
            &IncomingPayment::V2(p),
            &key(),
            "POST /x402",
            NOW,
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::Signature);
    }
}
