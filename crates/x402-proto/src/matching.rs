//! Matching a payment against *this route's own* requirements: a v2 payment by what it
//! accepted (every field, and the server challenge it echoes), a v1 payment by its network and
//! what its authorization pays (payTo, amount, the token its signature was made for);
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
/// the authorization and its signature against that offer. Several offers may share a network
/// and asset (price tiers, or several payTo): a v2 payment is matched to the one whose every
/// field it echoes, a v1 payment to the one its authorization pays (payTo and amount) and
/// whose token domain its signature was made in.
pub fn match_payment(
    offers: &[Offer],
    payment: &IncomingPayment,
    key: &ChallengeKey,
    route: &str,
    now: u64,
) -> Result<Matched, Rejection> {
    match payment {
        IncomingPayment::V2(p) => {
            let offer = match_v2(offers, &p.accepted, key, route, now)?;
            let payment = check(&offers[offer].base_requirement(), &p.payload, now)?;
            Ok(Matched { offer, payment })
        }
        IncomingPayment::V1(p) => match_v1(offers, p, now),
    }
}

/// v2: among the offers on the accepted network and asset, the one every other field of
/// `accepted` is equal to, and the challenge issued for it on this route. When none is equal,
/// the refusal explains the offer closest to what was accepted.
fn match_v2(
    offers: &[Offer],
    acc: &PaymentRequirements,
    key: &ChallengeKey,
    route: &str,
    now: u64,
) -> Result<usize, Rejection> {
    let candidates = select_v2(offers, acc)?;
    let extra = acc.extra.as_ref().and_then(Value::as_object);
    let token = extra
        .and_then(|e| e.get("challenge"))
        .and_then(Value::as_str);
    let expires_at = extra
        .and_then(|e| e.get("expiresAt"))
        .and_then(Value::as_u64);
    if let Some(&i) = candidates
        .iter()
        .find(|&&i| compare(&offers[i], acc).is_ok())
    {
        key.check(route, &offers[i].base_requirement(), token, expires_at, now)?;
        return Ok(i);
    }
    let closest = candidates
        .iter()
        .copied()
        .max_by_key(|&i| (closeness(&offers[i], acc), std::cmp::Reverse(i)))
        .unwrap_or(candidates[0]);
    compare(&offers[closest], acc)?;
    Ok(closest)
}

/// How many of the fields a tier may differ in `accepted` shares with offer `o`.
fn closeness(o: &Offer, acc: &PaymentRequirements) -> usize {
    let extra = acc.extra.as_ref().and_then(Value::as_object);
    let same = |field: &str, ours: &str| {
        extra.and_then(|e| e.get(field)).and_then(Value::as_str) == Some(ours)
    };
    [
        o.pay_to == acc.pay_to,
        o.amount == acc.amount,
        o.max_timeout_seconds == acc.max_timeout_seconds,
        same("name", &o.eip712_name),
        same("version", &o.eip712_version),
        same("facilitator", &o.facilitator),
    ]
    .into_iter()
    .filter(|b| *b)
    .count()
}

/// The offers a v2 payment names by scheme, network and asset (at least one).
fn select_v2(offers: &[Offer], acc: &PaymentRequirements) -> Result<Vec<usize>, Rejection> {
    if acc.scheme != "exact" {
        return Err(Rejection::new(
            Reason::UnsupportedScheme,
            "the accepted `scheme` is not offered here; this route takes `exact`",
        ));
    }
    let on_network: Vec<usize> = (0..offers.len())
        .filter(|&i| offers[i].network == acc.network)
        .collect();
    if on_network.is_empty() {
        return Err(Rejection::new(
            Reason::NetworkMismatch,
            format!(
                "the accepted `network` is not one this route takes; accepted: {}",
                list(offers, |o| o.network.clone())
            ),
        ));
    }
    let same_asset: Vec<usize> = on_network
        .iter()
        .copied()
        .filter(|&i| offers[i].asset == acc.asset)
        .collect();
    if same_asset.is_empty() {
        return Err(Rejection::new(
            Reason::AssetMismatch,
            format!(
                "the accepted `asset` is not one this route takes on {}",
                offers[on_network[0]].network
            ),
        ));
    }
    Ok(same_asset)
}

/// The accepted requirement's other fields against the offer's.
fn compare(o: &Offer, acc: &PaymentRequirements) -> Result<(), Rejection> {
    crate::check::same_terms(acc, &o.base_requirement())?;
    if acc.max_timeout_seconds != o.max_timeout_seconds {
        return Err(Rejection::new(
            Reason::RequirementsMismatch,
            format!(
                "the accepted `maxTimeoutSeconds` differs from this route's {}",
                o.max_timeout_seconds
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

/// v1 echoes no requirement: the offers on its network that its authorization pays (payTo
/// and amount), and of those the first whose token domain (the asset) its signature recovers
/// in. With none, the refusal explains the closest offer on the network.
fn match_v1(offers: &[Offer], p: &PaymentPayloadV1, now: u64) -> Result<Matched, Rejection> {
    if p.scheme != "exact" {
        return Err(Rejection::new(
            Reason::UnsupportedScheme,
            "the payment's `scheme` is not offered here; this route takes `exact`",
        ));
    }
    let network = networks::from_v1(&p.network);
    let on_network: Vec<usize> = (0..offers.len())
        .filter(|&i| offers[i].network == network)
        .collect();
    if on_network.is_empty() {
        return Err(Rejection::new(
            Reason::NetworkMismatch,
            format!(
                "the payment's `network` is not one this route takes; accepted: {}",
                list(offers, |o| networks::to_v1(&o.network).to_string())
            ),
        ));
    }
    let auth = &p.payload.authorization;
    let pays = |i: &usize| offers[*i].pay_to == auth.to && offers[*i].amount == auth.value;
    let exact: Vec<usize> = on_network.iter().copied().filter(pays).collect();
    let mut first_refusal = None;
    for &i in &exact {
        match check(&offers[i].base_requirement(), &p.payload, now) {
            Ok(payment) => return Ok(Matched { offer: i, payment }),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    if let Some(r) = first_refusal {
        return Err(r);
    }
    // Nothing this authorization pays: explain the offer to its payTo, else the first.
    let closest = on_network
        .iter()
        .copied()
        .find(|&i| offers[i].pay_to == auth.to)
        .unwrap_or(on_network[0]);
    let payment = check(&offers[closest].base_requirement(), &p.payload, now)?;
    Ok(Matched {
        offer: closest,
        payment,
    })
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

    /// `payload()` re-signed to pay `amount` to `pay_to` in token `asset`'s domain.
    fn paying(pay_to: Address, amount: u64, asset: Address) -> ExactEvmPayload {
        use alloy_signer::SignerSync;
        let mut a = payload().authorization;
        a.to = pay_to;
        a.value = U256::from(amount);
        let d = crate::typed::domain("USDC", "2", 84532, asset);
        let sig = signer()
            .sign_hash_sync(&crate::typed::signing_hash(&a, &d))
            .unwrap();
        ExactEvmPayload {
            signature: sig.as_bytes().to_vec().into(),
            authorization: a,
        }
    }

    /// Two tiers on one network and asset: the second costs more, or pays another address.
    fn tiers() -> Vec<(Vec<Offer>, Offer)> {
        let mut dearer = offer();
        dearer.amount = U256::from(20_000);
        let mut elsewhere = offer();
        elsewhere.pay_to = Address::repeat_byte(7);
        vec![
            (vec![offer(), dearer.clone()], dearer),
            (vec![offer(), elsewhere.clone()], elsewhere),
        ]
    }

    #[test]
    fn a_v2_payment_matches_the_tier_it_echoes() {
        for (offers, second) in tiers() {
            for (want, o) in [(0, offer()), (1, second.clone())] {
                let acc = o.challenge(&key(), "POST /x402", NOW);
                let p = IncomingPayment::V2(PaymentPayload {
                    x402_version: 2,
                    accepted: acc,
                    payload: paying(o.pay_to, o.amount.to::<u64>(), o.asset),
                    resource: None,
                    extensions: None,
                });
                let m = match_payment(&offers, &p, &key(), "POST /x402", NOW).unwrap();
                assert_eq!(m.offer, want, "{o:?}");
                assert_eq!(m.payment.authorization.value, o.amount);
            }
            // The second tier's terms with the first tier's challenge: refused, not re-priced.
            let mut acc = offer().challenge(&key(), "POST /x402", NOW);
            acc.amount = second.amount;
            acc.pay_to = second.pay_to;
            let p = IncomingPayment::V2(PaymentPayload {
                x402_version: 2,
                accepted: acc,
                payload: paying(second.pay_to, second.amount.to::<u64>(), second.asset),
                resource: None,
                extensions: None,
            });
            let r = match_payment(&offers, &p, &key(), "POST /x402", NOW).unwrap_err();
            assert_eq!(r.reason, Reason::InvalidChallenge, "{}", r.message);
        }
    }

    #[test]
    fn a_v2_payment_matching_no_tier_is_explained_by_the_closest() {
        let (offers, _) = tiers().remove(0);
        let mut acc = offer().challenge(&key(), "POST /x402", NOW);
        acc.amount = U256::from(15_000);
        let r = match_payment(&offers, &v2(acc), &key(), "POST /x402", NOW).unwrap_err();
        assert_eq!(r.reason, Reason::ValueMismatch, "{}", r.message);
        let mut acc = offer().challenge(&key(), "POST /x402", NOW);
        acc.pay_to = Address::repeat_byte(9);
        let r = match_payment(&offers, &v2(acc), &key(), "POST /x402", NOW).unwrap_err();
        assert_eq!(r.reason, Reason::RecipientMismatch, "{}", r.message);
    }

    #[test]
    fn a_v1_payment_matches_the_tier_its_authorization_pays() {
        let v1 = |payload| {
            IncomingPayment::V1(PaymentPayloadV1 {
                x402_version: 1,
                scheme: "exact".into(),
                network: "base-sepolia".into(),
                payload,
            })
        };
        for (offers, second) in tiers() {
            for (want, o) in [(0, offer()), (1, second.clone())] {
                let p = v1(paying(o.pay_to, o.amount.to::<u64>(), o.asset));
                let m = match_payment(&offers, &p, &key(), "POST /x402", NOW).unwrap();
                assert_eq!(m.offer, want, "{o:?}");
            }
            let p = v1(paying(offer().pay_to, 15_000, offer().asset));
            let r = match_payment(&offers, &p, &key(), "POST /x402", NOW).unwrap_err();
            assert_eq!(r.reason, Reason::ValueMismatch, "{}", r.message);
        }
        // Same payTo and amount in two tokens: the one the signature was made for.
        let mut other_token = offer();
        other_token.asset = Address::repeat_byte(5);
        let offers = [offer(), other_token.clone()];
        let p = v1(paying(other_token.pay_to, 10_000, other_token.asset));
        let m = match_payment(&offers, &p, &key(), "POST /x402", NOW).unwrap();
        assert_eq!(m.offer, 1);
    }
}
