//! The spend policy, pure: which of a seller's payment options we accept, checked before any
//! signature exists. Amount and decimals come from our configuration, never from the challenge.

use super::client::Quote;

use super::config::Seller;

/// Why no option of a challenge was acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// Keep the options the policy allows and pick the cheapest; never just `accepts[0]`.
pub(crate) fn choose(seller: &Seller, quotes: &[Quote]) -> Result<Quote, Refusal> {
    let mut first_refusal = None;
    let mut best: Option<&Quote> = None;
    for o in quotes {
        match check(seller, o) {
            Ok(()) => {
                if best.is_none_or(|b| o.requirement.amount < b.requirement.amount) {
                    best = Some(o);
                }
            }
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    best.cloned().ok_or_else(|| {
        first_refusal.unwrap_or(Refusal {
            code: "no_payment_option",
            message: "the seller offered no way to pay".into(),
        })
    })
}

fn check(seller: &Seller, o: &Quote) -> Result<(), Refusal> {
    let r = &o.requirement;
    let refuse = |code, message: String| Err(Refusal { code, message });
    if r.scheme != "exact" {
        return refuse(
            "scheme_not_allowed",
            format!("scheme `{}` is not paid", r.scheme),
        );
    }
    if !seller.networks.contains(&r.network) {
        return refuse(
            "network_not_allowed",
            format!("network {} is not allowed for {}", r.network, seller.name),
        );
    }
    if !seller.assets.contains(&r.asset) {
        return refuse(
            "asset_not_allowed",
            format!("asset {} is not allowed for {}", r.asset, seller.name),
        );
    }
    if !seller.pay_to.contains(&r.pay_to) {
        return refuse(
            "pay_to_not_pinned",
            format!("payTo {} is not pinned for {}", r.pay_to, seller.name),
        );
    }
    if r.amount.is_zero() {
        return refuse("zero_price", "a price of 0 is not a payment".into());
    }
    if r.amount > seller.max_price {
        return refuse(
            "price_above_cap",
            format!(
                "the price {} is above the {} per-call cap for {}",
                r.amount, seller.max_price, seller.name
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::types::PaymentRequirements;
    use alloy_primitives::{Address, U256};

    fn seller() -> Seller {
        Seller {
            name: "a".into(),
            url: "http://127.0.0.1:1/x402".parse().unwrap(),
            priority: 1,
            pay_to: [Address::repeat_byte(2)].into(),
            networks: ["eip155:84532".to_string()].into(),
            assets: [Address::repeat_byte(1)].into(),
            max_price: U256::from(50_000),
        }
    }

    fn quote(network: &str, asset: u8, pay_to: u8, amount: u64) -> Quote {
        let requirement = PaymentRequirements {
            scheme: "exact".into(),
            network: network.into(),
            amount: U256::from(amount),
            asset: Address::repeat_byte(asset),
            pay_to: Address::repeat_byte(pay_to),
            max_timeout_seconds: 300,
            extra: None,
        };
        Quote {
            version: 2,
            raw: serde_json::to_value(&requirement).unwrap(),
            requirement,
            resource: None,
        }
    }

    #[test]
    fn refuses_each_policy_breach_before_signing() {
        let s = seller();
        let breaches = [
            (quote("eip155:8453", 1, 2, 10), "network_not_allowed"),
            (quote("eip155:84532", 9, 2, 10), "asset_not_allowed"),
            (quote("eip155:84532", 1, 9, 10), "pay_to_not_pinned"),
            (quote("eip155:84532", 1, 2, 50_001), "price_above_cap"),
            (quote("eip155:84532", 1, 2, 0), "zero_price"),
        ];
        for (q, code) in breaches {
            assert_eq!(choose(&s, &[q]).unwrap_err().code, code);
        }
        assert_eq!(choose(&s, &[]).unwrap_err().code, "no_payment_option");
    }

    #[test]
    fn filters_first_then_picks_the_cheapest() {
        let s = seller();
        // accepts[0] is a mainnet bait; the allowed options come after it.
        let quotes = [
            quote("eip155:8453", 1, 2, 1),
            quote("eip155:84532", 1, 2, 40_000),
            quote("eip155:84532", 1, 2, 30_000),
        ];
        assert_eq!(
            choose(&s, &quotes).unwrap().requirement.amount,
            U256::from(30_000)
        );
    }
}
