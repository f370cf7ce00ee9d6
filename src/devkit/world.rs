//! The money side of a scenario on the devnet, and the assertions the tests make about it: who
//! was charged, how often, and for how much — read from the chain (the token's balances and its
//! `Transfer` logs), never from what a sidecar says.
//!
//! [`Money`] looks at the transfers into the seller's `payTo`. The `check_*` methods return what
//! does not match (the benches report it); the `assert_*` methods panic with it (the tests).

use alloy_primitives::{Address, U256};

use super::devnet::{Devnet, DevnetError, Transfer};

/// What the chain shows that a money check did not expect.
#[derive(Debug, thiserror::Error)]
pub enum MoneyError {
    #[error("reading the devnet: {0}")]
    Devnet(#[from] DevnetError),
    #[error("expected {want} transfer(s) to payTo {pay_to}, the chain shows {got:?}")]
    Count {
        pay_to: Address,
        want: usize,
        got: Vec<Transfer>,
    },
    #[error("a transfer to payTo is not of the price {price}: {transfer:?}")]
    NotPriced { price: U256, transfer: Transfer },
    #[error("the transfer to payTo came from {from}, not from the payer {payer}")]
    WrongPayer { payer: Address, from: Address },
    #[error("{who} holds {got}, expected {want}")]
    Balance { who: Address, got: U256, want: U256 },
}

/// Money checks for one seller's `payTo` on a devnet, at one price per paid call.
pub struct Money<'a> {
    net: &'a Devnet,
    pay_to: Address,
    price: U256,
}

impl<'a> Money<'a> {
    /// Payments of `price` atomic units to the devnet's seller address.
    pub fn new(net: &'a Devnet, price: u64) -> Money<'a> {
        Money {
            net,
            pay_to: net.pay_to,
            price: U256::from(price),
        }
    }

    /// Payments of `price` atomic units to `pay_to` (another tier's receiving address).
    pub fn at(net: &'a Devnet, pay_to: Address, price: u64) -> Money<'a> {
        Money {
            net,
            pay_to,
            price: U256::from(price),
        }
    }

    /// Every transfer into `payTo` so far, oldest first.
    pub async fn transfers(&self) -> Result<Vec<Transfer>, DevnetError> {
        self.net.transfers_to(self.pay_to).await
    }

    /// `who` holds exactly `want`.
    pub async fn check_holds(&self, who: Address, want: U256) -> Result<(), MoneyError> {
        let got = self.net.balance(who).await?;
        if got == want {
            Ok(())
        } else {
            Err(MoneyError::Balance { who, got, want })
        }
    }

    /// Exactly `n` transfers into `payTo`, each of the price, and `payTo` holds what they
    /// brought (it held nothing before: a fresh devnet's seller address has no token).
    pub async fn check_transfers(&self, n: usize) -> Result<Vec<Transfer>, MoneyError> {
        let got = self.transfers().await?;
        if got.len() != n {
            return Err(MoneyError::Count {
                pay_to: self.pay_to,
                want: n,
                got,
            });
        }
        if let Some(t) = got.iter().find(|t| t.value != self.price) {
            return Err(MoneyError::NotPriced {
                price: self.price,
                transfer: *t,
            });
        }
        self.check_holds(self.pay_to, self.price * U256::from(n))
            .await?;
        Ok(got)
    }

    /// The whole scenario charged once: one transfer into `payTo` in total, of the price, from
    /// `payer`, who now holds `funded` less the price. Returns that transfer.
    pub async fn check_paid_once(
        &self,
        payer: Address,
        funded: u64,
    ) -> Result<Transfer, MoneyError> {
        let t = self.check_transfers(1).await?[0];
        if t.from != payer {
            return Err(MoneyError::WrongPayer {
                payer,
                from: t.from,
            });
        }
        self.check_holds(payer, U256::from(funded).saturating_sub(self.price))
            .await?;
        Ok(t)
    }

    /// Nobody charged: no transfer into `payTo`, and `payer` still holds `funded`.
    pub async fn check_not_charged(&self, payer: Address, funded: u64) -> Result<(), MoneyError> {
        self.check_transfers(0).await?;
        self.check_holds(payer, U256::from(funded)).await
    }

    /// [`check_transfers`](Self::check_transfers), for tests.
    pub async fn assert_transfers(&self, n: usize) -> Vec<Transfer> {
        self.check_transfers(n)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`check_paid_once`](Self::check_paid_once), for tests.
    pub async fn assert_paid_once(&self, payer: Address, funded: u64) -> Transfer {
        self.check_paid_once(payer, funded)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`check_not_charged`](Self::check_not_charged), for tests.
    pub async fn assert_not_charged(&self, payer: Address, funded: u64) {
        if let Err(e) = self.check_not_charged(payer, funded).await {
            panic!("{e}")
        }
    }

    /// [`check_holds`](Self::check_holds), for tests.
    pub async fn assert_holds(&self, who: Address, want: u64) {
        if let Err(e) = self.check_holds(who, U256::from(want)).await {
            panic!("{e}")
        }
    }
}
