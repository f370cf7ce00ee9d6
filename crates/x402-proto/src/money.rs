//! Money: integer atomic units, parsed strictly, printed as decimals only for people.

use alloy_primitives::U256;

/// Why a price or amount string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is not a price: use atomic units like \"10000\" or dollars like \"$0.01\"")]
    Malformed(String),
    #[error("has more decimal places than the asset's {1} decimals")]
    TooPrecise(String, u8),
    #[error("is too large for a token amount")]
    TooLarge(String),
}

/// Parse a price: `"$0.01"` (dollars, converted with `decimals`) or `"10000"` (atomic units).
pub fn parse_price(text: &str, decimals: u8) -> Result<U256, MoneyError> {
    let t = text.trim();
    match t.strip_prefix('$') {
        Some(dollars) => parse_decimal(dollars, decimals).map_err(|e| match e {
            MoneyError::Malformed(_) => MoneyError::Malformed(text.to_string()),
            MoneyError::TooPrecise(_, d) => MoneyError::TooPrecise(text.to_string(), d),
            MoneyError::TooLarge(_) => MoneyError::TooLarge(text.to_string()),
        }),
        None => parse_atomic(t).ok_or_else(|| MoneyError::Malformed(text.to_string())),
    }
}

/// Parse a decimal amount such as `0.01` into atomic units with `decimals` places.
fn parse_decimal(text: &str, decimals: u8) -> Result<U256, MoneyError> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
        return Err(MoneyError::Malformed(text.to_string()));
    }
    if frac.len() > decimals as usize {
        return Err(MoneyError::TooPrecise(text.to_string(), decimals));
    }
    let scaled = format!("{int}{frac:0<width$}", width = decimals as usize);
    parse_atomic(&scaled).ok_or_else(|| MoneyError::TooLarge(text.to_string()))
}

/// Parse atomic units: ASCII digits only (no sign, no hex, no exponent), at most a uint256.
fn parse_atomic(text: &str) -> Option<U256> {
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(text, 10).ok()
}

/// Print atomic units as a decimal: `10000` with 6 decimals is `"0.01"`.
pub fn format_decimal(amount: U256, decimals: u8) -> String {
    let s = amount.to_string();
    let d = decimals as usize;
    if d == 0 {
        return s;
    }
    let padded = format!("{s:0>width$}", width = d + 1);
    let (int, frac) = padded.split_at(padded.len() - d);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// A configured price: atomic units (`10000` or `"10000"`) or dollars (`"$0.01"`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum PriceSpec {
    Units(u64),
    Text(String),
}

/// Read by hand so that a wrong form gets a sentence a person can act on (a bare `0.01` is a
/// float in YAML and is refused: dollars are written `"$0.01"`).
impl<'de> serde::Deserialize<'de> for PriceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PriceSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(PRICE_FORMS)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PriceSpec, E> {
                Ok(PriceSpec::Units(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PriceSpec, E> {
                u64::try_from(v)
                    .map(PriceSpec::Units)
                    .map_err(|_| E::custom(format!("a price cannot be negative: {PRICE_FORMS}")))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<PriceSpec, E> {
                Err(E::custom(format!(
                    "a bare decimal number is not a price: {PRICE_FORMS}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PriceSpec, E> {
                Ok(PriceSpec::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The forms a configured price takes, for messages.
const PRICE_FORMS: &str =
    "write dollars in quotes, like \"$0.01\", or a whole number of atomic units, like 10000";

impl PriceSpec {
    /// The price in atomic units of a token with `decimals`.
    pub fn parse(&self, decimals: u8) -> Result<U256, MoneyError> {
        match self {
            PriceSpec::Units(n) => Ok(U256::from(*n)),
            PriceSpec::Text(t) => parse_price(t, decimals),
        }
    }
}

/// Serde for a `U256` carried as a decimal string (the x402 wire form of amounts and times).
pub(crate) mod dec_u256 {
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        // Accept a JSON string (the spec) or a small JSON integer (some clients).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => super::parse_atomic(&s).ok_or_else(|| {
                D::Error::custom("is not a decimal integer (atomic units as a string of digits)")
            }),
            Raw::N(n) => Ok(U256::from(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_price_is_units_or_quoted_dollars_and_a_bare_decimal_is_refused_in_words() {
        let read = |t: &str| serde_json::from_str::<PriceSpec>(t);
        assert_eq!(read("10000").unwrap(), PriceSpec::Units(10_000));
        assert_eq!(read("\"$0.01\"").unwrap(), PriceSpec::Text("$0.01".into()));
        for bad in ["0.01", "-5", "true", "{}"] {
            let e = read(bad).unwrap_err().to_string();
            assert!(e.contains("\"$0.01\"") && !e.contains("enum"), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_dollars_and_atomic_units() {
        assert_eq!(parse_price("$0.01", 6), Ok(U256::from(10_000)));
        assert_eq!(parse_price("$5", 6), Ok(U256::from(5_000_000)));
        assert_eq!(parse_price("10000", 6), Ok(U256::from(10_000)));
        assert_eq!(parse_price(" $1.5 ", 6), Ok(U256::from(1_500_000)));
    }

    #[test]
    fn refuses_what_is_not_money() {
        for bad in [
            "",
            "$",
            "-1",
            "+5",
            "0x10",
            "1e6",
            "$0.0000001",
            "$.5",
            "$1.",
            "1.5",
            "abc",
        ] {
            assert!(parse_price(bad, 6).is_err(), "{bad} should be refused");
        }
        assert!(matches!(
            parse_price("$0.0000001", 6),
            Err(MoneyError::TooPrecise(..))
        ));
        assert!(parse_atomic(&"9".repeat(79)).is_none());
        assert!(
            parse_atomic(&"9".repeat(78)).is_none(),
            "larger than uint256"
        );
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_decimal(U256::from(10_000), 6), "0.01");
        assert_eq!(format_decimal(U256::from(5_000_000), 6), "5");
        assert_eq!(format_decimal(U256::from(1), 6), "0.000001");
        assert_eq!(format_decimal(U256::from(1_234_567), 6), "1.234567");
        assert_eq!(format_decimal(U256::from(7), 0), "7");
    }
}
