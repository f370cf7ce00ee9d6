//! The facilitator's unit tests: request checking, answers, claims.

use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use serde_json::json;

use super::api::*;
use super::verify::*;
use crate::evm::SettleOutcome;
use crate::x402::reason::Reason;
use crate::x402::types::*;

const NOW: u64 = 1_800_000_000;
const NET: &str = "eip155:84532";

fn requirements() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: NET.into(),
        amount: U256::from(10_000),
        asset: Address::repeat_byte(1),
        pay_to: Address::repeat_byte(2),
        max_timeout_seconds: 120,
        extra: Some(json!({"name": "USDC", "version": "2"})),
    }
}

fn signed(signer: &PrivateKeySigner, req: &PaymentRequirements) -> ExactEvmPayload {
    let mut auth = crate::evm::typed::authorization(signer, req, NOW);
    auth.valid_before = U256::from(NOW + 100);
    crate::evm::typed::sign_payment(signer, req, auth).unwrap()
}

fn v2_request(signer: &PrivateKeySigner) -> FacilitatorRequest {
    let req = requirements();
    FacilitatorRequest {
        x402_version: 2,
        payment_payload: json!({"x402Version": 2, "accepted": req, "payload": signed(signer, &req)}),
        payment_requirements: serde_json::to_value(&req).unwrap(),
    }
}

type Edit = Box<dyn Fn(&mut FacilitatorRequest)>;

fn served(n: &str) -> bool {
    n == NET
}

fn reason(r: &FacilitatorRequest) -> Reason {
    check(r, &served, NOW).unwrap_err().rejection.reason
}

#[test]
fn a_valid_v2_payment_passes_and_names_its_payer() {
    let signer = PrivateKeySigner::random();
    let c = check(&v2_request(&signer), &served, NOW).unwrap();
    assert_eq!(c.payer(), signer.address());
    assert_eq!(c.network, NET);
    assert_eq!(c.requirements.extra.as_ref().unwrap()["name"], "USDC");
    let v = verify_response(&Ok(c));
    assert!(v.is_valid);
    assert_eq!(v.payer, Some(signer.address().to_checksum(None)));
}

#[test]
fn each_disagreement_has_its_reason() {
    let signer = PrivateKeySigner::random();
    let cases: Vec<(Edit, Reason)> = vec![
        (Box::new(|r| r.x402_version = 3), Reason::InvalidX402Version),
        (
            Box::new(|r| r.payment_payload["x402Version"] = json!(1)),
            Reason::InvalidX402Version,
        ),
        (
            Box::new(|r| r.payment_payload["payload"]["signature"] = json!("nope")),
            Reason::InvalidPayload,
        ),
        (
            Box::new(|r| r.payment_requirements["amount"] = json!("ten")),
            Reason::RequirementsMismatch,
        ),
        (
            Box::new(|r| r.payment_requirements["scheme"] = json!("upto")),
            Reason::UnsupportedScheme,
        ),
        (
            Box::new(|r| r.payment_requirements["network"] = json!("eip155:8453")),
            Reason::NetworkMismatch,
        ),
        (
            Box::new(|r| r.payment_payload["accepted"]["network"] = json!("eip155:1")),
            Reason::NetworkMismatch,
        ),
        (
            Box::new(|r| r.payment_requirements["asset"] = json!(Address::repeat_byte(9))),
            Reason::AssetMismatch,
        ),
        (
            Box::new(|r| r.payment_requirements["payTo"] = json!(Address::repeat_byte(9))),
            Reason::RecipientMismatch,
        ),
        (
            Box::new(|r| r.payment_requirements["amount"] = json!("20000")),
            Reason::ValueMismatch,
        ),
        (
            Box::new(|r| r.payment_requirements["extra"] = json!({"name": "USDC"})),
            Reason::RequirementsMismatch,
        ),
        (
            Box::new(|r| r.payment_requirements["extra"]["name"] = json!("USD Coin")),
            Reason::Signature,
        ),
        (
            Box::new(|r| r.payment_requirements["maxTimeoutSeconds"] = json!(10)),
            Reason::ValidBeforeTooFar,
        ),
    ];
    for (edit, want) in cases {
        let mut r = v2_request(&signer);
        edit(&mut r);
        let got = check(&r, &served, NOW).unwrap_err();
        assert_eq!(got.rejection.reason, want, "{}", got.rejection.message);
        if want != Reason::InvalidPayload {
            assert_eq!(got.payer, Some(signer.address()), "{want:?}");
        }
    }
}

#[test]
fn v1_requirements_are_converted() {
    let signer = PrivateKeySigner::random();
    let req = requirements();
    let v1 = req.to_v1("http://x/x402", "advice");
    let mut r = FacilitatorRequest {
        x402_version: 1,
        payment_payload: json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": signed(&signer, &req)}),
        payment_requirements: serde_json::to_value(&v1).unwrap(),
    };
    let c = check(&r, &served, NOW).unwrap();
    assert_eq!(c.network, "base-sepolia");
    assert_eq!(c.requirements.network, NET);
    r.payment_payload["network"] = json!("base");
    assert_eq!(reason(&r), Reason::NetworkMismatch);
}

#[test]
fn settlement_outcomes_become_receipts() {
    let signer = PrivateKeySigner::random();
    let c = check(&v2_request(&signer), &served, NOW).unwrap();
    let tx = B256::repeat_byte(5);
    let ok = settle_response(&c, &SettleOutcome::Settled { tx });
    assert!(ok.success);
    assert_eq!(ok.amount.as_deref(), Some("10000"));
    assert_eq!(ok.transaction, format!("{tx:#x}"));
    let pending = settle_response(&c, &SettleOutcome::Pending { tx });
    assert!(!pending.success);
    assert_eq!(pending.error_reason.as_deref(), Some("settlement_pending"));
    assert_eq!(pending.transaction, format!("{tx:#x}"));
    let failed = settle_response(
        &c,
        &SettleOutcome::Failed {
            reason: Reason::NonceUsed,
            message: "used".into(),
            tx: None,
        },
    );
    assert_eq!(failed.transaction, "");
    assert_eq!(
        failed.error_reason.as_deref(),
        Some(Reason::NonceUsed.code())
    );
    let json = serde_json::to_value(&failed).unwrap();
    assert_eq!(json["errorMessage"], "used");
    assert!(json.get("amount").is_none());
}

#[test]
fn decode_errors_do_not_quote_signatures() {
    let sig = format!("0x{}", "ab".repeat(66));
    let signer = PrivateKeySigner::random();
    let mut r = v2_request(&signer);
    r.payment_payload["payload"]["signature"] = json!(sig);
    r.payment_payload["payload"]["authorization"]["value"] = json!(sig);
    let got = check(&r, &served, NOW).unwrap_err();
    assert_eq!(got.rejection.reason, Reason::InvalidPayload);
    assert!(!got.rejection.message.contains(&sig[2..]));
    let nonce = format!("0x{}", "cd".repeat(32));
    assert_eq!(
        crate::x402::redact::mask_hex(&format!("nonce {nonce}, sig \"{sig}\"")),
        "nonce 0xcdcd…cdcd, sig \"0xabab…abab\""
    );
    // A string where the payload object belongs: named, not echoed.
    let mut r = v2_request(&signer);
    let inner = r.payment_payload["payload"].to_string();
    r.payment_payload["payload"] = json!(inner);
    let got = check(&r, &served, NOW).unwrap_err();
    assert!(
        got.rejection.message.contains("`payload`"),
        "{}",
        got.rejection.message
    );
    assert!(!crate::x402::redact::has_long_hex(&got.rejection.message));
}

#[test]
fn bodies_that_are_not_requests_are_refused() {
    assert!(matches!(
        parse_request(b"{not json"),
        Err(RequestError::BadJson(_))
    ));
    assert!(matches!(
        parse_request(&vec![b' '; MAX_BODY + 1]),
        Err(RequestError::TooLarge)
    ));
}
