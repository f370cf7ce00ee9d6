//! What each mined settlement transaction cost, for whoever counts it: the settler reports
//! here, telemetry installs the observer when its metrics are built (the EVM layer does not
//! depend on telemetry).

use std::sync::OnceLock;

/// One settlement transaction the settler saw mined (a single payment or a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinedTx {
    pub chain_id: u64,
    /// Payments the transaction carried (1 without batching).
    pub payments: usize,
    /// Gas the transaction used, from its receipt.
    pub gas_used: u64,
    /// What the settler paid for it, in wei (`gas_used × effective_gas_price`).
    pub fee_wei: u128,
}

type Observer = Box<dyn Fn(&MinedTx) + Send + Sync>;

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Install the process's observer (the first one wins; later calls are ignored).
pub fn set_observer(f: impl Fn(&MinedTx) + Send + Sync + 'static) {
    let _ = OBSERVER.set(Box::new(f));
}

/// Report a mined settlement transaction.
pub(super) fn mined(chain_id: u64, payments: usize, r: &alloy_rpc_types_eth::TransactionReceipt) {
    if let Some(f) = OBSERVER.get() {
        f(&MinedTx {
            chain_id,
            payments: payments.max(1),
            gas_used: r.gas_used,
            fee_wei: u128::from(r.gas_used).saturating_mul(r.effective_gas_price),
        });
    }
}
