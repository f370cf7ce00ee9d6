//! The x402 protocol core: wire types for v1 and v2 with the one conversion between their
//! requirements, the header codec, money parsing, networks, the stateless server challenge,
//! the seller's requirement matching, the one payment check, EIP-3009 typed data, payment ids
//! and the reason codes.
//!
//! Nothing here does I/O: the seller's paywall, the facilitator service, the `pay` client and
//! the tests build on these pure functions; chain reads and settlement live in the sidecar's
//! `evm` module.
//!
//! A seller's whole verification of a payment header, short of the chain:
//!
//! ```
//! use alloy_primitives::{Address, B256, U256};
//! use alloy_signer::SignerSync;
//! use alloy_signer_local::PrivateKeySigner;
//! use x402_proto::challenge::ChallengeKey;
//! use x402_proto::matching::{Offer, match_payment};
//! use x402_proto::{Authorization, ExactEvmPayload, Reason, codec, typed};
//!
//! let offer = Offer {
//!     scheme: "exact".into(),
//!     network: "eip155:84532".into(),
//!     chain_id: 84532,
//!     asset: Address::repeat_byte(1),
//!     pay_to: Address::repeat_byte(2),
//!     amount: U256::from(10_000),
//!     max_timeout_seconds: 300,
//!     decimals: 6,
//!     eip712_name: "USDC".into(),
//!     eip712_version: "2".into(),
//!     facilitator: "local:settler".into(),
//! };
//! let key = ChallengeKey::new(b"the sellers' shared secret".to_vec());
//! let now = 1_800_000_000;
//!
//! // The 402 offers a challenge-bound requirement; the buyer signs it and echoes it back.
//! let accepted = offer.challenge(&key, "POST /x402", now);
//! let buyer = PrivateKeySigner::random();
//! let authorization = Authorization {
//!     from: buyer.address(),
//!     to: offer.pay_to,
//!     value: offer.amount,
//!     valid_after: U256::ZERO,
//!     valid_before: U256::from(now + 300),
//!     nonce: B256::repeat_byte(7),
//! };
//! let domain = typed::domain("USDC", "2", 84532, offer.asset);
//! let sig = buyer.sign_hash_sync(&typed::signing_hash(&authorization, &domain)).unwrap();
//! let payload = ExactEvmPayload { signature: sig.as_bytes().to_vec().into(), authorization };
//! let header = codec::encode(&serde_json::json!({
//!     "x402Version": 2, "accepted": accepted, "payload": payload,
//! }));
//!
//! // The seller decodes the header and matches it against its own offers.
//! let payment = codec::decode_payment(header.as_bytes(), true).unwrap();
//! let matched = match_payment(&[offer.clone()], &payment, &key, "POST /x402", now).unwrap();
//! assert_eq!((matched.offer, matched.payment.payer()), (0, buyer.address()));
//!
//! // The same payment on another route is refused, with a reason code for the answer.
//! let refused = match_payment(&[offer], &payment, &key, "POST /other", now).unwrap_err();
//! assert_eq!(refused.reason, Reason::InvalidChallenge);
//! ```

pub mod address;
pub mod challenge;
pub mod check;
pub mod codec;
pub mod convert;
pub mod ids;
pub mod matching;
pub mod money;
pub mod networks;
pub mod reason;
pub mod redact;
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

/// The settlement-receipt header named `name` (in any case), as sent: `X-PAYMENT-RESPONSE`
/// for v1's, `PAYMENT-RESPONSE` for anything else.
pub fn receipt_name(name: &str) -> &'static str {
    if name.eq_ignore_ascii_case(HEADER_X_PAYMENT_RESPONSE) {
        HEADER_X_PAYMENT_RESPONSE
    } else {
        HEADER_PAYMENT_RESPONSE
    }
}

/// Lowercase hex of `bytes`, no prefix.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the unit tests pay with: one requirement, its authorization, a signature.
#[cfg(test)]
mod fixtures {
    use alloy_primitives::{Address, B256, U256};
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use crate::types::{Authorization, ExactEvmPayload, PaymentRequirements};

    pub const NOW: u64 = 1_800_000_000;

    /// 10 000 atomic units of token 0x01…01 to 0x02…02 on Base Sepolia, 300 s, USDC / 2.
    pub fn requirement() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: "eip155:84532".into(),
            amount: U256::from(10_000),
            asset: Address::repeat_byte(1),
            pay_to: Address::repeat_byte(2),
            max_timeout_seconds: 300,
            extra: Some(serde_json::json!({"name": "USDC", "version": "2"})),
        }
    }

    /// The requirement's authorization from 0x03…03, valid from 0 until `NOW + 300`.
    pub fn authorization() -> Authorization {
        Authorization {
            from: Address::repeat_byte(3),
            to: Address::repeat_byte(2),
            value: U256::from(10_000),
            valid_after: U256::ZERO,
            valid_before: U256::from(NOW + 300),
            nonce: B256::repeat_byte(4),
        }
    }

    /// [`authorization`] from `signer`, signed in the requirement's domain.
    pub fn signed(signer: &PrivateKeySigner) -> ExactEvmPayload {
        let mut a = authorization();
        a.from = signer.address();
        let d = crate::typed::domain("USDC", "2", 84532, Address::repeat_byte(1));
        let sig = signer
            .sign_hash_sync(&crate::typed::signing_hash(&a, &d))
            .unwrap();
        ExactEvmPayload {
            signature: sig.as_bytes().to_vec().into(),
            authorization: a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_names_ignore_case() {
        assert_eq!(
            receipt_name("x-payment-response"),
            HEADER_X_PAYMENT_RESPONSE
        );
        assert_eq!(
            receipt_name(HEADER_X_PAYMENT_RESPONSE),
            HEADER_X_PAYMENT_RESPONSE
        );
        assert_eq!(receipt_name("payment-response"), HEADER_PAYMENT_RESPONSE);
        assert_eq!(
            receipt_name(HEADER_PAYMENT_RESPONSE),
            HEADER_PAYMENT_RESPONSE
        );
    }
}
