//! The preflight of a paid route's token: what the chain says of the configured asset
//! (a contract at all, its `decimals()`, its EIP-712 domain) against what the route says, so a
//! wrong network, a wrong `eip712.name` or `decimals` is found before the first payment is
//! refused as a bad signature (blaming the buyer) or charged 10¹² times the price.

use alloy_primitives::{Address, B256};
use alloy_provider::Provider;

use super::chain::Chain;
use super::typed::IEip3009Token as Token;
use crate::x402::matching::Offer;
use crate::x402::typed::domain;

/// What the chain says of a token; `None` where the call failed (not every token has every
/// view: a token without `version()` is judged by its domain separator alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    pub has_code: bool,
    pub domain_separator: Option<B256>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub decimals: Option<u8>,
}

impl Chain {
    /// Read what [`check_token`] compares. `Err` only when the RPC cannot be read at all.
    pub async fn token_facts(&self, asset: Address) -> Result<TokenFacts, String> {
        let code = self
            .provider()
            .get_code_at(asset)
            .await
            .map_err(|e| e.to_string())?;
        if code.is_empty() {
            return Ok(TokenFacts::default());
        }
        Ok(TokenFacts {
            has_code: true,
            domain_separator: self.view_of(asset, Token::DOMAIN_SEPARATORCall {}).await,
            name: self.view_of(asset, Token::nameCall {}).await,
            version: self.view_of(asset, Token::versionCall {}).await,
            decimals: self.view_of(asset, Token::decimalsCall {}).await,
        })
    }
}

/// Every way `offer` disagrees with its token on chain, each a sentence saying what would go
/// wrong (empty: the route's terms are the token's).
pub fn check_token(offer: &Offer, facts: &TokenFacts) -> Vec<String> {
    let o = offer;
    let mut problems = Vec::new();
    if !facts.has_code {
        problems.push(format!(
            "there is no contract at asset {} on {}: a wrong address, or an RPC of another network",
            o.asset, o.network
        ));
        return problems;
    }
    if o.pay_to == o.asset {
        problems
            .push("pay_to is the token contract itself: the proceeds would be locked in it".into());
    }
    if let Some(d) = facts.decimals
        && d != o.decimals
    {
        problems.push(format!(
            "the token has {d} decimals, the configuration says {}: every price would be off by a factor of 10^{}",
            o.decimals,
            d.abs_diff(o.decimals)
        ));
    }
    let configured = domain(&o.eip712_name, &o.eip712_version, o.chain_id, o.asset).separator();
    let mismatch = match facts.domain_separator {
        Some(ds) => ds != configured,
        None => {
            facts.name.as_deref().is_some_and(|n| n != o.eip712_name)
                || facts
                    .version
                    .as_deref()
                    .is_some_and(|v| v != o.eip712_version)
        }
    };
    if mismatch {
        let said = match (&facts.name, &facts.version) {
            (Some(n), Some(v)) => format!("name \"{n}\", version \"{v}\""),
            (Some(n), None) => format!("name \"{n}\""),
            _ => "another name or version".into(),
        };
        problems.push(format!(
            "the token's EIP-712 domain on chain {} is {said}; the configuration says name \"{}\", version \"{}\": every payment's signature would be refused",
            o.chain_id, o.eip712_name, o.eip712_version
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{U256, address};

    fn offer() -> Offer {
        Offer {
            scheme: "exact".into(),
            network: "eip155:84532".into(),
            chain_id: 84532,
            asset: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            pay_to: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            amount: U256::from(10_000),
            max_timeout_seconds: 300,
            decimals: 6,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            facilitator: "local:0x".into(),
        }
    }

    fn facts_of(o: &Offer, name: &str, version: &str, decimals: u8) -> TokenFacts {
        TokenFacts {
            has_code: true,
            domain_separator: Some(domain(name, version, o.chain_id, o.asset).separator()),
            name: Some(name.into()),
            version: Some(version.into()),
            decimals: Some(decimals),
        }
    }

    #[test]
    fn the_routes_own_token_passes() {
        let o = offer();
        assert!(check_token(&o, &facts_of(&o, "USDC", "2", 6)).is_empty());
    }

    #[test]
    fn each_disagreement_is_one_sentence() {
        let o = offer();
        let p = check_token(&o, &facts_of(&o, "USD Coin", "2", 6));
        assert!(p.len() == 1 && p[0].contains("\"USD Coin\""), "{p:?}");
        let p = check_token(&o, &facts_of(&o, "USDC", "2", 18));
        assert!(p.len() == 1 && p[0].contains("18 decimals"), "{p:?}");
        let p = check_token(&o, &TokenFacts::default());
        assert!(p[0].contains("no contract"), "{p:?}");
        let mut locked = offer();
        locked.pay_to = locked.asset;
        let p = check_token(&locked, &facts_of(&locked, "USDC", "2", 6));
        assert!(p[0].contains("locked"), "{p:?}");
    }

    #[test]
    fn a_token_without_a_domain_separator_view_is_judged_by_its_name_and_version() {
        let o = offer();
        let mut f = facts_of(&o, "USDC", "1", 6);
        f.domain_separator = None;
        assert_eq!(check_token(&o, &f).len(), 1);
        f.version = None;
        assert!(check_token(&o, &f).is_empty());
    }
}
