//! Reason codes: the official x402 vocabulary where one exists, a few of our own where the
//! sidecar checks more than the reference implementations (challenge, upper time bound).

use serde::{Serialize, Serializer};

/// Why a payment was not accepted or not settled. Each maps to one machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No payment header was sent.
    PaymentRequired,
    /// The header is not strict base64 of a JSON payment payload of the expected shape.
    InvalidPayload,
    /// `x402Version` is not the one this header carries.
    InvalidX402Version,
    /// The scheme is not `exact`.
    UnsupportedScheme,
    /// The network is not one this route accepts.
    NetworkMismatch,
    /// The asset is not one this route accepts.
    AssetMismatch,
    /// The authorization pays someone else.
    RecipientMismatch,
    /// The authorization's value is not the price.
    ValueMismatch,
    /// The echoed requirements differ from this route's own (timeout, EIP-712 domain, facilitator).
    RequirementsMismatch,
    /// The echoed server challenge is missing or was not issued by this sidecar.
    InvalidChallenge,
    /// The echoed server challenge is past its deadline.
    ChallengeExpired,
    /// `validAfter` is in the future.
    ValidAfter,
    /// `validBefore` is in the past or closer than the settlement buffer.
    ValidBefore,
    /// `validBefore` is further ahead than `maxTimeoutSeconds` allows.
    ValidBeforeTooFar,
    /// The signature does not recover the payer.
    Signature,
    /// The EIP-3009 nonce was already used on chain.
    NonceUsed,
    /// The payer's balance is below the price.
    InsufficientBalance,
    /// The settlement transaction failed.
    TransactionFailed,
    /// Verification could not complete (chain unreachable, …): not the payer's fault.
    UnexpectedVerifyError,
    /// Settlement could not complete for a reason that is not the payer's fault.
    UnexpectedSettleError,
    /// The settlement was broadcast but its outcome is not known yet.
    SettlementPending,
    /// A remote facilitator refused the payment with a code of its own vocabulary.
    InvalidPayment,
    /// A settlement was reported whose transaction is not this payment's (no
    /// `AuthorizationUsed(payer, nonce)` with its `Transfer` to payTo): nothing was charged.
    ReceiptMismatch,
    /// The payment signs another amount than this request's price (a route with a pricing
    /// policy quotes each request by its content): sign the new quote.
    PriceMismatch,
}

/// Every reason, for lookups by code.
const ALL: [Reason; 24] = [
    Reason::PaymentRequired,
    Reason::InvalidPayload,
    Reason::InvalidX402Version,
    Reason::UnsupportedScheme,
    Reason::NetworkMismatch,
    Reason::AssetMismatch,
    Reason::RecipientMismatch,
    Reason::ValueMismatch,
    Reason::RequirementsMismatch,
    Reason::InvalidChallenge,
    Reason::ChallengeExpired,
    Reason::ValidAfter,
    Reason::ValidBefore,
    Reason::ValidBeforeTooFar,
    Reason::Signature,
    Reason::NonceUsed,
    Reason::InsufficientBalance,
    Reason::TransactionFailed,
    Reason::UnexpectedVerifyError,
    Reason::UnexpectedSettleError,
    Reason::SettlementPending,
    Reason::InvalidPayment,
    Reason::ReceiptMismatch,
    Reason::PriceMismatch,
];

impl Reason {
    /// The machine-readable code sent on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Reason::PaymentRequired => "payment_required",
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidX402Version => "invalid_x402_version",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::NetworkMismatch => "network_mismatch",
            Reason::AssetMismatch => "asset_mismatch",
            Reason::RecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            Reason::ValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            Reason::RequirementsMismatch => "invalid_payment_requirements",
            Reason::InvalidChallenge => "invalid_challenge",
            Reason::ChallengeExpired => "challenge_expired",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::ValidBeforeTooFar => {
                "invalid_exact_evm_payload_authorization_valid_before_too_far"
            }
            Reason::Signature => "invalid_exact_evm_payload_signature",
            Reason::NonceUsed => "invalid_exact_evm_nonce_already_used",
            Reason::InsufficientBalance => "invalid_exact_evm_insufficient_balance",
            Reason::TransactionFailed => "transaction_failed",
            Reason::UnexpectedVerifyError => "unexpected_verify_error",
            Reason::UnexpectedSettleError => "unexpected_settle_error",
            Reason::SettlementPending => "settlement_pending",
            Reason::InvalidPayment => "invalid_payment",
            Reason::ReceiptMismatch => "settlement_receipt_mismatch",
            Reason::PriceMismatch => "price_mismatch",
        }
    }

    /// Read a facilitator's reason code: ours and the spec's, the other SDKs' spellings of the
    /// same faults, and [`Reason::InvalidPayment`] for any other refusal.
    pub fn from_facilitator(code: &str) -> Reason {
        if let Some(r) = ALL.iter().copied().find(|r| r.code() == code) {
            return r;
        }
        match code {
            "insufficient_funds" | "invalid_exact_evm_payload_insufficient_balance" => {
                Reason::InsufficientBalance
            }
            "invalid_signature" | "invalid_exact_evm_failed_to_verify_signature" => {
                Reason::Signature
            }
            "invalid_payment_expired" | "payment_expired" => Reason::ValidBefore,
            "invalid_payment_early" => Reason::ValidAfter,
            "recipient_mismatch" => Reason::RecipientMismatch,
            "invalid_payment_amount" | "invalid_exact_evm_payload_authorization_value" => {
                Reason::ValueMismatch
            }
            "invalid_network" | "chain_id_mismatch" | "unsupported_chain" => {
                Reason::NetworkMismatch
            }
            "invalid_scheme" => Reason::UnsupportedScheme,
            "invalid_format" => Reason::InvalidPayload,
            "accepted_requirements_mismatch" => Reason::RequirementsMismatch,
            "invalid_transaction_state" | "duplicate_settlement" => Reason::NonceUsed,
            "unexpected_error" => Reason::UnexpectedVerifyError,
            _ => Reason::InvalidPayment,
        }
    }

    /// True when the payer can fix it by paying again (HTTP 402); false for server-side faults.
    pub fn is_payer_fault(self) -> bool {
        !matches!(
            self,
            Reason::UnexpectedVerifyError
                | Reason::UnexpectedSettleError
                | Reason::SettlementPending
                | Reason::ReceiptMismatch
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// A rejected payment: the reason code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    /// A rejection whose sentence never carries a long hex value (a signature, a nonce, a key):
    /// any run of 64 or more hex digits is cut to its ends ([`crate::redact::mask_hex`]).
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: crate::redact::mask_hex(&message.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilitator_codes_map_to_ours() {
        for r in ALL {
            assert_eq!(
                Reason::from_facilitator(r.code()),
                r,
                "our own codes round-trip"
            );
        }
        assert_eq!(
            Reason::from_facilitator("insufficient_funds"),
            Reason::InsufficientBalance
        );
        assert_eq!(
            Reason::from_facilitator("invalid_signature"),
            Reason::Signature
        );
        assert_eq!(
            Reason::from_facilitator("invalid_payment_expired"),
            Reason::ValidBefore
        );
        let other = Reason::from_facilitator("permit2_allowance_required");
        assert_eq!(other, Reason::InvalidPayment);
        assert!(other.is_payer_fault());
        assert!(!Reason::from_facilitator("unexpected_error").is_payer_fault());
    }

    #[test]
    fn codes_are_unique() {
        use std::collections::HashSet;
        let all = ALL;
        let codes: HashSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(!Reason::SettlementPending.is_payer_fault());
        assert!(Reason::NonceUsed.is_payer_fault());
        assert!(!Reason::ReceiptMismatch.is_payer_fault());
    }

    #[test]
    fn a_rejection_never_carries_a_long_hex_value() {
        let sig = format!("0x{}", "ab".repeat(65));
        let r = Rejection::new(Reason::InvalidPayload, format!("bad value {sig} here"));
        assert!(!r.message.contains(&sig[..40]), "{}", r.message);
        assert!(r.message.starts_with("bad value 0xabab"), "{}", r.message);
    }
}
