//! What names one payment: an EIP-3009 authorization can be used once per token, payer and
//! nonce on one chain, so those four make the replay key and the stable payment id that the
//! seller's store, its journal and the facilitator's journal all share.

use alloy_primitives::{Address, B256, keccak256};

/// One payment, named by chain, token, payer and EIP-3009 nonce (never by the signature: it
/// is malleable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaymentRef {
    pub chain_id: u64,
    pub asset: Address,
    pub payer: Address,
    pub nonce: B256,
}

impl PaymentRef {
    pub fn new(chain_id: u64, asset: Address, payer: Address, nonce: B256) -> Self {
        PaymentRef {
            chain_id,
            asset,
            payer,
            nonce,
        }
    }

    /// The replay store's key: `<chain id>:<asset>:<payer>:<nonce>`.
    pub fn replay_key(&self) -> String {
        format!(
            "{}:{:#x}:{:#x}:{:#x}",
            self.chain_id, self.asset, self.payer, self.nonce
        )
    }

    /// The stable payment id: the same payment always gets the same id, whatever request
    /// carries it (`pay_` and 16 bytes of the replay key's keccak256, hex).
    pub fn payment_id(&self) -> String {
        let h = keccak256(self.replay_key().as_bytes());
        format!("pay_{}", crate::hex(&h[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_name_all_four_parts() {
        let p = PaymentRef::new(
            84532,
            Address::repeat_byte(1),
            Address::repeat_byte(3),
            B256::repeat_byte(4),
        );
        assert_eq!(
            p.replay_key(),
            format!(
                "84532:0x{}:0x{}:0x{}",
                "01".repeat(20),
                "03".repeat(20),
                "04".repeat(32)
            )
        );
        let id = p.payment_id();
        assert!(id.starts_with("pay_") && id.len() == 4 + 32, "{id}");
        assert_eq!(id, p.payment_id());
        let other = PaymentRef {
            chain_id: 8453,
            ..p
        };
        assert_ne!(other.payment_id(), id);
    }
}
