//! EIP-3009 `TransferWithAuthorization` as EIP-712 typed data: the token's domain, the signing
//! hash and payer recovery. Pure: no chain access, no keys (signing lives on the EVM side).

use alloy_primitives::{Address, B256, Signature, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};

use crate::reason::{Reason, Rejection};
use crate::types::Authorization;

sol! {
    /// The EIP-3009 message signed by the payer.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

}

/// Half the secp256k1 group order: signatures with a larger `s` are malleable and refused.
const SECP256K1N_HALF: U256 = U256::from_be_bytes([
    0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0x5D, 0x57, 0x6E, 0x73, 0x57, 0xA4, 0x50, 0x1D, 0xDF, 0xE9, 0x2F, 0x46, 0x68, 0x1B, 0x20, 0xA0,
]);

/// The token's EIP-712 domain, built from *our* configuration, never from the payer's claims.
pub fn domain(name: &str, version: &str, chain_id: u64, asset: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.to_string().into()),
        Some(version.to_string().into()),
        Some(U256::from(chain_id)),
        Some(asset),
        None,
    )
}

/// The one mapping of an [`Authorization`] to the signed `sol!` message (the EVM side builds
/// the `transferWithAuthorization` call from it).
pub fn message(a: &Authorization) -> TransferWithAuthorization {
    TransferWithAuthorization {
        from: a.from,
        to: a.to,
        value: a.value,
        validAfter: a.valid_after,
        validBefore: a.valid_before,
        nonce: a.nonce,
    }
}

/// The EIP-712 digest the payer signs.
pub fn signing_hash(a: &Authorization, domain: &Eip712Domain) -> B256 {
    message(a).eip712_signing_hash(domain)
}

/// Parse a 65-byte EOA signature, refusing malleable (high-s) and odd `v` forms like USDC does.
fn parse_signature(raw: &[u8]) -> Result<Signature, Rejection> {
    let bad = |why: &str| Rejection::new(Reason::Signature, format!("the signature {why}"));
    if raw.len() != 65 {
        return Err(bad(&format!(
            "is {} bytes; a 65-byte EOA signature is required",
            raw.len()
        )));
    }
    if !matches!(raw[64], 0 | 1 | 27 | 28) {
        return Err(bad("has an invalid `v` value"));
    }
    let sig = Signature::from_raw(raw).map_err(|_| bad("does not parse as r, s, v"))?;
    if sig.s() > SECP256K1N_HALF {
        return Err(bad("has a high `s` value (malleable form)"));
    }
    Ok(sig)
}

/// Recover the signer of `a` and require it to be `a.from`.
pub fn verify_signature(
    a: &Authorization,
    raw_sig: &[u8],
    domain: &Eip712Domain,
) -> Result<Signature, Rejection> {
    let sig = parse_signature(raw_sig)?;
    let hash = signing_hash(a, domain);
    match sig.recover_address_from_prehash(&hash) {
        Ok(who) if who == a.from => Ok(sig),
        Ok(_) => Err(Rejection::new(
            Reason::Signature,
            "the signature does not recover the authorization's `from`; check the EIP-712 domain (name, version, chain id, token)",
        )),
        Err(_) => Err(Rejection::new(
            Reason::Signature,
            "the signature does not recover any signer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    fn sign(
        signer: &PrivateKeySigner,
        a: &Authorization,
        d: &Eip712Domain,
    ) -> Result<Signature, alloy_signer::Error> {
        signer.sign_hash_sync(&signing_hash(a, d))
    }

    fn auth(from: Address) -> Authorization {
        Authorization {
            from,
            to: Address::repeat_byte(2),
            value: U256::from(10_000),
            valid_after: U256::ZERO,
            valid_before: U256::from(1_900_000_000u64),
            nonce: B256::repeat_byte(7),
        }
    }

    #[test]
    fn a_signature_recovers_its_signer_only_in_its_own_domain() {
        let signer = PrivateKeySigner::random();
        let d = domain("USDC", "2", 84532, Address::repeat_byte(1));
        let a = auth(signer.address());
        let sig = sign(&signer, &a, &d).unwrap();
        assert!(verify_signature(&a, &sig.as_bytes(), &d).is_ok());
        for other in [
            domain("USD Coin", "2", 84532, Address::repeat_byte(1)),
            domain("USDC", "1", 84532, Address::repeat_byte(1)),
            domain("USDC", "2", 8453, Address::repeat_byte(1)),
            domain("USDC", "2", 84532, Address::repeat_byte(9)),
        ] {
            assert_eq!(
                verify_signature(&a, &sig.as_bytes(), &other)
                    .unwrap_err()
                    .reason,
                Reason::Signature
            );
        }
        let mut changed = a.clone();
        changed.value = U256::from(1);
        assert!(verify_signature(&changed, &sig.as_bytes(), &d).is_err());
    }

    #[test]
    fn refuses_malleable_and_malformed_signatures() {
        let signer = PrivateKeySigner::random();
        let d = domain("USDC", "2", 84532, Address::repeat_byte(1));
        let a = auth(signer.address());
        let sig = sign(&signer, &a, &d).unwrap();
        // The high-s twin of a valid signature recovers the same key; it must still be refused.
        let n = U256::from_be_bytes([
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF, 0xFE, 0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C,
            0xD0, 0x36, 0x41, 0x41,
        ]);
        let twin = Signature::new(sig.r(), n - sig.s(), !sig.v());
        assert!(verify_signature(&a, &twin.as_bytes(), &d).is_err());
        assert!(verify_signature(&a, &[0u8; 64], &d).is_err());
        let mut bad_v = sig.as_bytes();
        bad_v[64] = 5;
        assert!(verify_signature(&a, &bad_v, &d).is_err());
    }
}
