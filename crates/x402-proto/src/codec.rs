//! Header codec: strict standard base64 (with padding) of UTF-8 JSON, with size caps.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::reason::{Reason, Rejection};
use super::redact;
use super::types::{IncomingPayment, PaymentPayload, PaymentPayloadV1};

/// Largest payment header accepted. A real EIP-3009 payment is about 1.2 KB encoded; the
/// official clients also echo the 402's `extensions` (the bazaar declaration, a few KB).
const MAX_PAYMENT_HEADER_BYTES: usize = 32 * 1024;

/// Encode a value as a header: base64 of its JSON.
pub fn encode<T: Serialize>(value: &T) -> String {
    // Serialising our own wire types cannot fail (string keys, no maps with non-string keys).
    STANDARD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Decode a base64 JSON header into `T`, refusing oversized or non-strict input.
pub fn decode<T: DeserializeOwned>(header: &[u8], max: usize) -> Result<T, Rejection> {
    if header.len() > max {
        return Err(Rejection::new(
            Reason::InvalidPayload,
            format!(
                "the payment header is {} bytes, more than the {max} accepted",
                header.len()
            ),
        ));
    }
    let trimmed = header.trim_ascii();
    let raw = STANDARD.decode(trimmed).map_err(|_| {
        Rejection::new(
            Reason::InvalidPayload,
            "the payment header is not strict base64 (standard alphabet, padded)",
        )
    })?;
    // Errors name the field and the problem, never the value (serde's messages quote it).
    redact::from_slice(&raw).map_err(|why| {
        Rejection::new(
            Reason::InvalidPayload,
            format!("the payment header is not a payment payload of the expected shape: {why}"),
        )
    })
}

/// Decode a payment from the header it came in: `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
pub fn decode_payment(header: &[u8], v2_header: bool) -> Result<IncomingPayment, Rejection> {
    // Peek at the version first so a v1 payload in the v2 header gets a clear answer.
    let probe: serde_json::Value = decode(header, MAX_PAYMENT_HEADER_BYTES)?;
    let version = probe.get("x402Version").and_then(|v| v.as_u64());
    match (v2_header, version) {
        (true, Some(2)) => redact::from_value::<PaymentPayload>(probe)
            .map(IncomingPayment::V2)
            .map_err(|why| {
                Rejection::new(
                    Reason::InvalidPayload,
                    format!("not a v2 exact payment: {why}"),
                )
            }),
        (false, Some(1)) => redact::from_value::<PaymentPayloadV1>(probe)
            .map(IncomingPayment::V1)
            .map_err(|why| {
                Rejection::new(
                    Reason::InvalidPayload,
                    format!("not a v1 exact payment: {why}"),
                )
            }),
        (true, v) => Err(Rejection::new(
            Reason::InvalidX402Version,
            format!(
                "PAYMENT-SIGNATURE carries x402Version 2, this one {}",
                said(v)
            ),
        )),
        (false, v) => Err(Rejection::new(
            Reason::InvalidX402Version,
            format!("X-PAYMENT carries x402Version 1, this one {}", said(v)),
        )),
    }
}

/// What a payment says of its version, for a sentence: a small number is shown, nothing else.
fn said(v: Option<u64>) -> String {
    match v {
        Some(n) if n < 1000 => format!("says {n}"),
        Some(_) => "names a version that does not exist".into(),
        None => "has no numeric `x402Version`".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, authorization, requirement};
    use crate::types::*;
    use alloy_primitives::Bytes;

    fn sample_v2() -> PaymentPayload {
        PaymentPayload {
            x402_version: 2,
            accepted: requirement(),
            payload: ExactEvmPayload {
                signature: Bytes::from(vec![7u8; 65]),
                authorization: authorization(),
            },
            resource: None,
            extensions: None,
        }
    }

    #[test]
    fn round_trips_a_v2_payment() {
        let p = sample_v2();
        let h = encode(&p);
        assert_eq!(
            decode_payment(h.as_bytes(), true),
            Ok(IncomingPayment::V2(p))
        );
    }

    #[test]
    fn amounts_travel_as_decimal_strings() {
        let json = serde_json::to_value(sample_v2()).unwrap();
        assert_eq!(json["accepted"]["amount"], "10000");
        assert_eq!(
            json["payload"]["authorization"]["validBefore"],
            (NOW + 300).to_string()
        );
    }

    #[test]
    fn refuses_garbage_and_oversize() {
        let r = decode_payment(b"%%%not base64", true).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidPayload);
        let big = "A".repeat(MAX_PAYMENT_HEADER_BYTES + 4);
        assert_eq!(
            decode_payment(big.as_bytes(), true).unwrap_err().reason,
            Reason::InvalidPayload
        );
        let not_json = STANDARD.encode(b"hello");
        assert_eq!(
            decode_payment(not_json.as_bytes(), true)
                .unwrap_err()
                .reason,
            Reason::InvalidPayload
        );
    }

    #[test]
    fn refuses_a_version_in_the_wrong_header() {
        let h = encode(&sample_v2());
        assert_eq!(
            decode_payment(h.as_bytes(), false).unwrap_err().reason,
            Reason::InvalidX402Version
        );
    }

    #[test]
    fn refuses_unknown_fields_in_the_authorization() {
        let mut v = serde_json::to_value(sample_v2()).unwrap();
        v["payload"]["authorization"]["extra"] = serde_json::json!(1);
        let h = STANDARD.encode(serde_json::to_vec(&v).unwrap());
        assert_eq!(
            decode_payment(h.as_bytes(), true).unwrap_err().reason,
            Reason::InvalidPayload
        );
    }

    #[test]
    fn a_string_payload_is_refused_without_its_signature() {
        let mut v = serde_json::to_value(sample_v2()).unwrap();
        let inner = serde_json::to_string(&v["payload"]).unwrap();
        v["payload"] = serde_json::json!(inner);
        let h = STANDARD.encode(serde_json::to_vec(&v).unwrap());
        let r = decode_payment(h.as_bytes(), true).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidPayload);
        assert!(r.message.contains("`payload`"), "{}", r.message);
        assert!(
            !r.message.contains("0707"),
            "the signature is not echoed: {}",
            r.message
        );
        assert!(!crate::redact::has_long_hex(&r.message), "{}", r.message);
    }

    #[test]
    fn refuses_negative_or_hex_amounts() {
        for bad in ["-1", "0x10", "1e3", ""] {
            let mut v = serde_json::to_value(sample_v2()).unwrap();
            v["payload"]["authorization"]["value"] = serde_json::json!(bad);
            let h = STANDARD.encode(serde_json::to_vec(&v).unwrap());
            assert!(decode_payment(h.as_bytes(), true).is_err(), "{bad}");
        }
    }
}
