//! The one conversion between the two wire forms of a requirement: [`PaymentRequirements`] (v2,
//! the form every check works on) and [`PaymentRequirementsV1`] (v1: `maxAmountRequired`, a v1
//! network name, the resource described inside each requirement).

use crate::networks;
use crate::types::{PaymentRequirements, PaymentRequirementsV1};

/// A v1 requirement in v2 form: `maxAmountRequired` is the amount, the v1 network name becomes
/// its CAIP-2 id (a name without one is kept as it is); the resource fields are dropped.
impl From<PaymentRequirementsV1> for PaymentRequirements {
    fn from(r: PaymentRequirementsV1) -> Self {
        PaymentRequirements {
            network: networks::from_v1(&r.network),
            scheme: r.scheme,
            amount: r.max_amount_required,
            asset: r.asset,
            pay_to: r.pay_to,
            max_timeout_seconds: r.max_timeout_seconds,
            extra: r.extra,
        }
    }
}

impl PaymentRequirements {
    /// The same requirement in v1 form, for the resource at `resource` (a JSON answer).
    pub fn to_v1(&self, resource: &str, description: &str) -> PaymentRequirementsV1 {
        PaymentRequirementsV1 {
            scheme: self.scheme.clone(),
            network: networks::to_v1(&self.network).to_string(),
            max_amount_required: self.amount,
            resource: resource.to_string(),
            description: description.to_string(),
            mime_type: "application/json".into(),
            pay_to: self.pay_to,
            max_timeout_seconds: self.max_timeout_seconds,
            asset: self.asset,
            extra: self.extra.clone(),
            output_schema: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::requirement as v2;
    use alloy_primitives::U256;

    #[test]
    fn v1_and_back_is_the_same_requirement() {
        let v1 = v2().to_v1("http://x/x402", "advice");
        assert_eq!(v1.network, "base-sepolia");
        assert_eq!(v1.max_amount_required, U256::from(10_000));
        assert_eq!(v1.mime_type, "application/json");
        assert_eq!(PaymentRequirements::from(v1), v2());
    }

    #[test]
    fn networks_without_a_v1_name_travel_as_they_are() {
        let mut r = v2();
        r.network = "eip155:31337".into();
        let v1 = r.to_v1("", "");
        assert_eq!(v1.network, "eip155:31337");
        let mut odd = v1;
        odd.network = "moon".into();
        assert_eq!(PaymentRequirements::from(odd).network, "moon");
    }
}
