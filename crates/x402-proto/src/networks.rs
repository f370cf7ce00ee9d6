//! CAIP-2 network ids and the v1 network names that map to them.

/// The v1 name for an `eip155:<id>` network, where x402 v1 defined one.
fn v1_name(caip2: &str) -> Option<&'static str> {
    Some(match chain_id(caip2)? {
        8453 => "base",
        84532 => "base-sepolia",
        43114 => "avalanche",
        43113 => "avalanche-fuji",
        137 => "polygon",
        80002 => "polygon-amoy",
        _ => return None,
    })
}

/// The CAIP-2 id for a v1 network name, or the id itself when it already is CAIP-2.
fn from_v1_name(name: &str) -> Option<String> {
    let id = match name {
        "base" => 8453,
        "base-sepolia" => 84532,
        "avalanche" => 43114,
        "avalanche-fuji" => 43113,
        "polygon" => 137,
        "polygon-amoy" => 80002,
        other => return chain_id(other).map(|_| other.to_string()),
    };
    Some(format!("eip155:{id}"))
}

/// The name a v1 message uses for a CAIP-2 network: its v1 name, else the id itself.
pub fn to_v1(caip2: &str) -> &str {
    v1_name(caip2).unwrap_or(caip2)
}

/// The CAIP-2 id a v1 message's network name stands for, else the name itself (which then
/// names no network this crate knows: every check on it fails).
pub fn from_v1(name: &str) -> String {
    from_v1_name(name).unwrap_or_else(|| name.to_string())
}

/// The EVM chain id of an `eip155:<id>` network.
pub fn chain_id(caip2: &str) -> Option<u64> {
    let rest = caip2.strip_prefix("eip155:")?;
    if rest.is_empty() || rest.len() > 19 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways() {
        assert_eq!(chain_id("eip155:84532"), Some(84532));
        assert_eq!(chain_id("eip155:"), None);
        assert_eq!(chain_id("eip155:-1"), None);
        assert_eq!(chain_id("solana:abc"), None);
        assert_eq!(v1_name("eip155:84532"), Some("base-sepolia"));
        assert_eq!(
            from_v1_name("base-sepolia").as_deref(),
            Some("eip155:84532")
        );
        assert_eq!(
            from_v1_name("eip155:31337").as_deref(),
            Some("eip155:31337")
        );
        assert_eq!(from_v1_name("moon"), None);
        assert_eq!(to_v1("eip155:84532"), "base-sepolia");
        assert_eq!(to_v1("eip155:31337"), "eip155:31337");
        assert_eq!(from_v1("base"), "eip155:8453");
        assert_eq!(from_v1("moon"), "moon");
    }
}
