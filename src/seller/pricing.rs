//! Pricing policies: a route's price computed from the request it is asked for, quoted in the
//! 402 and computed again for the paid request (the same request gets the same price; a
//! payment signed for another amount is refused as `price_mismatch` before any work).
//!
//! The price of each accept is its own configured price (the base) plus, when the policy sets
//! them: a charge per position in the account, per symbol asked (the request's `symbols` and
//! the symbols of the positions held, each counted once), for the model tier the buyer asks
//! for (`X-Strategy-Tier` header, else a top-level `tier` field of the body, else the cheapest
//! tier), for the account's platform and for each listed symbol in the request; then held
//! between the floor and the cap. All in the accept's own atomic units: no floats.
//!
//! This module is arithmetic only (no I/O); `sidecar.yaml`'s `pricing:` is read and checked in
//! [`super::config`].

use std::borrow::Cow;

use alloy_primitives::U256;
use serde_json::{Value, json};

use crate::x402::matching::Offer;

/// The header a buyer names its model tier in.
pub const TIER_HEADER: &str = "x-strategy-tier";

/// A route's pricing policy, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    /// Tier names, in the order `tiers:` lists them (sorted by name); empty: no tiers.
    pub tiers: Vec<String>,
    /// The tier of a request that names none: the cheapest (of the first accept).
    pub default_tier: Option<usize>,
    /// Whether the price depends on the request body (positions, symbols, platform).
    pub reads_request: bool,
    /// The policy's amounts for each of the route's offers (same order), in its units.
    pub per_offer: Vec<Amounts>,
}

/// A policy's amounts in one accept's atomic units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Amounts {
    pub per_position: U256,
    pub per_symbol: U256,
    /// Aligned with [`Pricing::tiers`].
    pub tiers: Vec<U256>,
    /// By platform (`hyperliquid`, `aster`).
    pub platforms: Vec<(String, U256)>,
    /// By symbol, upper case.
    pub symbols: Vec<(String, U256)>,
    pub floor: Option<U256>,
    pub cap: Option<U256>,
}

/// What the price of one request depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Index into [`Pricing::tiers`].
    pub tier: Option<usize>,
    pub positions: usize,
    /// Upper case, each once, in the order first seen.
    pub symbols: Vec<String>,
    pub platform: Option<String>,
}

/// A request's price: the offers at their quoted amounts, and how each was computed.
#[derive(Debug, Clone)]
pub struct Priced<'r> {
    pub offers: Cow<'r, [Offer]>,
    /// The computation, for the 402 (`None` for a fixed price).
    pub detail: Option<Value>,
}

impl<'r> Priced<'r> {
    /// A route's fixed price.
    pub fn fixed(offers: &'r [Offer]) -> Self {
        Priced {
            offers: Cow::Borrowed(offers),
            detail: None,
        }
    }

    /// What tells two quotes of one route apart (the amounts), for the kept 402s.
    pub fn key(&self) -> String {
        if self.detail.is_none() {
            return String::new();
        }
        self.offers
            .iter()
            .map(|o| o.amount.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Pricing {
    /// The tier a request asks for (`None`: the default); `Err` names the tiers there are.
    pub fn tier(&self, asked: Option<&str>) -> Result<Option<usize>, String> {
        let Some(asked) = asked.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(self.default_tier);
        };
        if self.tiers.is_empty() {
            return Err(format!(
                "this route has no model tiers, so tier \"{}\" cannot be bought here",
                clip(asked)
            ));
        }
        self.tiers
            .iter()
            .position(|t| t.eq_ignore_ascii_case(asked))
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "tier \"{}\" is not sold on this route; the tiers are {}",
                    clip(asked),
                    self.tiers.join(", ")
                )
            })
    }

    /// The offers at this request's price.
    pub fn quote<'r>(&self, base: &'r [Offer], f: &Facts) -> Priced<'r> {
        let mut offers = base.to_vec();
        let mut each = Vec::with_capacity(offers.len());
        for (o, a) in offers.iter_mut().zip(&self.per_offer) {
            let (amount, detail) = self.price(o.amount, a, f);
            detail_of(&mut each, o, detail, amount);
            o.amount = amount;
        }
        let tier = f.tier.and_then(|t| self.tiers.get(t));
        Priced {
            offers: Cow::Owned(offers),
            detail: Some(json!({
                "tier": tier,
                "positions": f.positions,
                "symbols": f.symbols,
                "platform": f.platform,
                "accepts": each,
            })),
        }
    }

    /// One accept's price: its base plus the policy's charges, held between floor and cap.
    fn price(&self, base: U256, a: &Amounts, f: &Facts) -> (U256, Vec<(String, U256)>) {
        let mut parts = vec![("base".to_string(), base)];
        let mut add = |what: String, v: U256| {
            if !v.is_zero() {
                parts.push((what, v));
            }
        };
        add(
            format!("{} position(s)", f.positions),
            a.per_position.saturating_mul(U256::from(f.positions)),
        );
        add(
            format!("{} symbol(s)", f.symbols.len()),
            a.per_symbol.saturating_mul(U256::from(f.symbols.len())),
        );
        if let (Some(t), Some(name)) = (f.tier, f.tier.and_then(|t| self.tiers.get(t))) {
            add(
                format!("tier {name}"),
                a.tiers.get(t).copied().unwrap_or_default(),
            );
        }
        if let Some(p) = &f.platform
            && let Some((_, v)) = a.platforms.iter().find(|(name, _)| name == p)
        {
            add(format!("platform {p}"), *v);
        }
        for s in &f.symbols {
            if let Some((_, v)) = a.symbols.iter().find(|(name, _)| name == s) {
                add(format!("symbol {s}"), *v);
            }
        }
        let sum = parts
            .iter()
            .fold(U256::ZERO, |acc, (_, v)| acc.saturating_add(*v));
        let mut amount = sum;
        if let Some(floor) = a.floor
            && amount < floor
        {
            amount = floor;
            parts.push(("floor".into(), floor));
        }
        if let Some(cap) = a.cap
            && amount > cap
        {
            amount = cap;
            parts.push(("cap".into(), cap));
        }
        (amount, parts)
    }
}

/// One accept's line of the 402's `quote`.
fn detail_of(out: &mut Vec<Value>, o: &Offer, parts: Vec<(String, U256)>, amount: U256) {
    let parts: Vec<Value> = parts
        .into_iter()
        .map(|(what, v)| json!({"part": what, "amount": v.to_string()}))
        .collect();
    out.push(json!({
        "network": o.network,
        "asset": o.asset.to_checksum(None),
        "payTo": o.pay_to.to_checksum(None),
        "parts": parts,
        "amount": amount.to_string(),
    }));
}

/// What the price of a strategy request depends on, read from its JSON: the positions held,
/// the symbols asked and held (upper case, each once), the platform, and the body's `tier`.
pub fn facts_of(body: &Value) -> (Facts, Option<String>) {
    let account = &body["account"];
    let positions = account["positions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let mut symbols: Vec<String> = Vec::new();
    let asked = body["symbols"].as_array().map_or(&[][..], Vec::as_slice);
    let held = positions.iter().map(|p| &p["symbol"]);
    for s in asked.iter().chain(held).filter_map(Value::as_str) {
        let s = s.trim().to_ascii_uppercase();
        if !s.is_empty() && !symbols.contains(&s) {
            symbols.push(s);
        }
    }
    let platform = account["platform"]
        .as_str()
        .map(|p| p.trim().to_ascii_lowercase());
    let tier = body["tier"].as_str().map(str::to_string);
    (
        Facts {
            tier: None,
            positions: positions.len(),
            symbols,
            platform,
        },
        tier,
    )
}

/// A buyer's word, shortened for a message.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    fn offer(amount: u64) -> Offer {
        Offer {
            scheme: "exact".into(),
            network: "eip155:84532".into(),
            chain_id: 84532,
            asset: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            pay_to: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            amount: U256::from(amount),
            max_timeout_seconds: 300,
            decimals: 6,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            facilitator: "local:0x".into(),
        }
    }

    fn policy() -> Pricing {
        Pricing {
            tiers: vec!["rules".into(), "rules+model".into()],
            default_tier: Some(0),
            reads_request: true,
            per_offer: vec![Amounts {
                per_position: U256::from(1_000),
                per_symbol: U256::from(500),
                tiers: vec![U256::ZERO, U256::from(20_000)],
                platforms: vec![("aster".into(), U256::from(2_000))],
                symbols: vec![("BTC".into(), U256::from(3_000))],
                floor: Some(U256::from(5_000)),
                cap: Some(U256::from(50_000)),
            }],
        }
    }

    fn amount(p: &Pricing, f: &Facts) -> u64 {
        let base = [offer(10_000)];
        p.quote(&base, f).offers[0].amount.to::<u64>()
    }

    #[test]
    fn each_dimension_adds_its_own_charge_in_atomic_units() {
        let p = policy();
        let plain = Facts {
            tier: Some(0),
            ..Facts::default()
        };
        assert_eq!(amount(&p, &plain), 10_000);
        let sized = Facts {
            positions: 3,
            symbols: vec!["ETH".into(), "SOL".into()],
            ..plain.clone()
        };
        assert_eq!(amount(&p, &sized), 10_000 + 3 * 1_000 + 2 * 500);
        let model = Facts {
            tier: Some(1),
            ..plain.clone()
        };
        assert_eq!(amount(&p, &model), 30_000);
        let market = Facts {
            platform: Some("aster".into()),
            symbols: vec!["BTC".into()],
            ..plain.clone()
        };
        assert_eq!(amount(&p, &market), 10_000 + 500 + 2_000 + 3_000);
    }

    #[test]
    fn the_floor_and_the_cap_hold_the_price() {
        let mut p = policy();
        let f = Facts {
            tier: Some(1),
            positions: 40,
            ..Facts::default()
        };
        assert_eq!(amount(&p, &f), 50_000, "capped");
        p.per_offer[0].floor = Some(U256::from(12_345));
        assert_eq!(amount(&p, &Facts::default()), 12_345, "floored");
        let base = [offer(10_000)];
        let q = p.quote(&base, &Facts::default());
        let parts = q.detail.unwrap()["accepts"][0]["parts"].clone();
        assert_eq!(parts[1]["part"], "floor", "{parts}");
    }

    #[test]
    fn the_same_request_gets_the_same_quote_and_another_gets_another() {
        let p = policy();
        let body = json!({"account": {"platform": "Aster", "positions": [
            {"symbol": "btc", "size": 1}, {"symbol": "ETH", "size": 2}]},
            "symbols": ["BTC", "kPEPE"], "tier": "rules+model"});
        let (mut f, tier) = facts_of(&body);
        assert_eq!(f.symbols, ["BTC", "KPEPE", "ETH"]);
        assert_eq!(f.platform.as_deref(), Some("aster"));
        f.tier = p.tier(tier.as_deref()).unwrap();
        assert_eq!(f.tier, Some(1));
        let base = [offer(10_000)];
        let a = p.quote(&base, &f);
        let b = p.quote(&base, &f);
        assert_eq!(a.key(), b.key());
        let (fewer, _) = facts_of(&json!({"account": {"platform": "aster", "positions": []}}));
        assert_ne!(p.quote(&base, &fewer).key(), a.key());
        assert!(Priced::fixed(&base).key().is_empty());
    }

    #[test]
    fn an_unknown_tier_names_the_ones_there_are() {
        let p = policy();
        assert_eq!(p.tier(None), Ok(Some(0)));
        assert_eq!(p.tier(Some("RULES+MODEL")), Ok(Some(1)));
        let e = p.tier(Some("gold")).unwrap_err();
        assert!(e.contains("rules, rules+model"), "{e}");
    }
}
