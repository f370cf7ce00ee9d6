//! Reading an address someone typed or copied: any case is accepted, but a mixed-case address
//! must carry a valid EIP-55 checksum — a mixed-case address whose checksum fails is a typo, and
//! re-checksumming it would send the money to a different address.

use alloy_primitives::Address;

/// Why a text is not an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is not an address (0x + 40 hex digits)")]
    Malformed,
    #[error("has mixed case, but its EIP-55 checksum does not match — a typo?")]
    Checksum,
}

/// Parse `0x` + 40 hex digits. All-lower and all-upper hex are taken as they are; mixed case
/// must be the address's EIP-55 form. Never suggests a corrected address.
pub fn parse(text: &str) -> Result<Address, AddressError> {
    let hex = text.strip_prefix("0x").ok_or(AddressError::Malformed)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::Malformed);
    }
    let address = text
        .parse::<Address>()
        .map_err(|_| AddressError::Malformed)?;
    let lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if lower && upper && address.to_checksum(None) != text {
        return Err(AddressError::Checksum);
    }
    Ok(address)
}

/// Serde for an address on the wire: written in its EIP-55 form (official SDKs hand addresses
/// to libraries that refuse any other), read in any case.
pub mod eip55 {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_checksum(None))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        Address::deserialize(d)
    }

    /// The same for an optional address.
    pub mod option {
        use alloy_primitives::Address;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(a: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
            match a {
                Some(a) => s.serialize_some(&a.to_checksum(None)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
            Option::<Address>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIP55: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    #[test]
    fn any_single_case_and_the_checksummed_form_parse_to_one_address() {
        let a = parse(EIP55).unwrap();
        assert_eq!(parse(&EIP55.to_lowercase()).unwrap(), a);
        assert_eq!(
            parse(&format!("0x{}", EIP55[2..].to_uppercase())).unwrap(),
            a
        );
        assert_eq!(a.to_checksum(None), EIP55);
    }

    #[test]
    fn a_one_digit_typo_in_a_checksummed_address_is_refused() {
        // ...C8 → ...C9: still 40 hex digits, mixed case, another address.
        let typo = "0x70997970C51812dc3A010C7d01b50e0d17dc79C9";
        assert_eq!(parse(typo), Err(AddressError::Checksum));
        // A flipped case alone is caught too.
        let flipped = "0x70997970c51812dc3A010C7d01b50e0d17dc79C8";
        assert_eq!(parse(flipped), Err(AddressError::Checksum));
    }

    #[test]
    fn the_wire_form_is_eip55_and_any_case_reads_back() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "eip55")]
            a: Address,
            #[serde(with = "eip55::option", default)]
            b: Option<Address>,
        }
        let a = parse(EIP55).unwrap();
        let text = serde_json::to_string(&T { a, b: Some(a) }).unwrap();
        assert_eq!(text, format!(r#"{{"a":"{EIP55}","b":"{EIP55}"}}"#));
        let lower: T = serde_json::from_str(&text.to_lowercase()).unwrap();
        assert_eq!(lower, T { a, b: Some(a) });
    }

    #[test]
    fn what_is_not_an_address_says_so() {
        for bad in [
            "",
            "0x",
            "70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "0x1234",
            "0xZZ997970C51812dc3A010C7d01b50e0d17dc79C8",
        ] {
            assert_eq!(parse(bad), Err(AddressError::Malformed), "{bad}");
        }
    }
}
