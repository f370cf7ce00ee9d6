//! The settler's transaction pipeline: the key pool (round robin, a key short of gas skipped
//! while another has enough), fees (cached briefly), the broadcast under the key's nonce lock
//! (see [`super::nonce`]), with the same authorization sent again at a fresh nonce when the
//! node says the nonce is taken, a settlement resumed after its outcome was lost, and the
//! keys' gas against the configured floor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use alloy_network::eip2718::Encodable2718;
use alloy_network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy_primitives::{Address, B256, U256};
use alloy_provider::Provider;
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer_local::PrivateKeySigner;
use tracing::{info, warn};

use super::chain::{Chain, SETTLE_GAS, SettleOutcome, failed};
use super::nonce::{KeyNonce, key_nonce, lease_name};
use super::rpc::{SendError, send_error};
use crate::x402::types::Authorization;

/// How often one settlement sends its transaction at most (a nonce taken each time by
/// something else using the key).
const MAX_SENDS: u32 = 4;

/// How long a fee estimate is used: about one block of Base (2 s), so most settlements need
/// no fee RPC of their own.
const FEE_TTL: Duration = Duration::from_secs(1);

/// One settler key of the pool.
pub(crate) struct SettlerKey {
    pub(crate) address: Address,
    wallet: EthereumWallet,
    nonce: Arc<KeyNonce>,
    /// Below the gas floor at the last read: skipped while another key has enough.
    low: AtomicBool,
}

impl SettlerKey {
    pub(crate) fn new(rpc_url: &str, signer: PrivateKeySigner) -> SettlerKey {
        let address = signer.address();
        SettlerKey {
            address,
            wallet: EthereumWallet::from(signer),
            nonce: key_nonce(rpc_url, address),
            low: AtomicBool::new(false),
        }
    }
}

/// What one settlement transaction carries: one payment's `transferWithAuthorization`, or a
/// batch of them through the batching contract (see [`super::batch`]).
#[derive(Clone, Copy)]
pub(super) enum Job<'a> {
    One {
        asset: Address,
        a: &'a Authorization,
    },
    /// `n` payments in one `aggregate3`, each allowed to fail on its own.
    Batch {
        items: &'a [(Address, Authorization)],
    },
}

impl Job<'_> {
    /// How many payments the transaction carries.
    fn payments(&self) -> usize {
        match self {
            Job::One { .. } => 1,
            Job::Batch { items } => items.len(),
        }
    }

    /// The transaction's gas limit: each payment's own bound, plus the batch's overhead.
    fn gas(&self) -> u64 {
        match self {
            Job::One { .. } => SETTLE_GAS,
            Job::Batch { items } => super::batch::batch_gas(items.len()),
        }
    }
}

/// How a broadcast ended, before any payment's outcome is read from it.
pub(super) enum Mined {
    /// A receipt of one of the hashes sent (how many were sent).
    Receipt(Box<alloy_rpc_types_eth::TransactionReceipt>, usize),
    /// No receipt within the receipt timeout: the last hash sent.
    Pending(B256),
    /// Settled (or failed) otherwise: the outcome of a single payment.
    Done(SettleOutcome),
    /// A batch whose nonce was used by another transaction while some of its payments were
    /// used too: each payment's own identity on chain decides.
    Gone,
}

/// A settlement transaction the node accepted: what is needed to replace it.
pub(super) struct Sent {
    pub(super) hash: B256,
    /// The transaction as signed (nonce and fees set).
    tx: TransactionRequest,
    max_fee: u128,
    tip: u128,
}

/// The last EIP-1559 fee estimate.
#[derive(Default)]
pub(crate) struct FeeCache {
    last: StdMutex<Option<(Instant, u128, u128)>>,
}

/// One settler key's gas against the floor, as read from the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlerGas {
    pub address: Address,
    /// Wei.
    pub balance: U256,
    /// Wei: `settlements` × the settlement's gas limit × today's max fee per gas.
    pub floor: U256,
    /// The configured floor, in settlements (0: none).
    pub settlements: u64,
    /// Max fee per gas the floor was computed with.
    pub max_fee_per_gas: u128,
}

impl SettlerGas {
    /// The key holds at least the floor.
    pub fn enough(&self) -> bool {
        self.balance >= self.floor
    }

    /// How many settlements the balance pays for at today's fee.
    pub fn settlements_left(&self) -> U256 {
        let per = U256::from(SETTLE_GAS) * U256::from(self.max_fee_per_gas.max(1));
        self.balance / per
    }

    /// A sentence for `/readyz` and `check-config --online`.
    pub fn describe(&self) -> String {
        if self.enough() {
            format!(
                "settler {} holds {} ETH, enough for about {} settlements at {} wei per gas (floor {})",
                self.address,
                eth(self.balance),
                self.settlements_left(),
                self.max_fee_per_gas,
                self.settlements
            )
        } else {
            format!(
                "settler {} holds {} ETH, less than the floor of {} settlements ({} ETH at {} wei per gas); send it gas",
                self.address,
                eth(self.balance),
                self.settlements,
                eth(self.floor),
                self.max_fee_per_gas
            )
        }
    }
}

/// A signed transaction's request without its nonce and fees, to be sent afresh.
fn strip(mut tx: TransactionRequest) -> TransactionRequest {
    tx.nonce = None;
    tx.max_fee_per_gas = None;
    tx.max_priority_fee_per_gas = None;
    tx
}

/// Wei as ETH with 6 decimals.
pub fn eth(wei: U256) -> String {
    let micro = wei / U256::from(1_000_000_000_000u64);
    let micro: u128 = micro.try_into().unwrap_or(u128::MAX);
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

impl Chain {
    /// The next key of the pool, skipping keys short of gas while another has enough.
    pub(super) fn pick_key(&self) -> Option<&SettlerKey> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.keys[(start + i) % n])
            .find(|k| !k.low.load(Ordering::Relaxed))
            .or_else(|| self.keys.get(start % n))
    }

    /// `(max_fee_per_gas, max_priority_fee_per_gas)`, estimated at most once per [`FEE_TTL`].
    pub(super) async fn fees(&self) -> Result<(u128, u128), String> {
        let cached = *self.fees.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, max, tip)) = cached
            && at.elapsed() < FEE_TTL
        {
            return Ok((max, tip));
        }
        let f = self
            .provider()
            .estimate_eip1559_fees()
            .await
            .map_err(|e| e.to_string())?;
        let got = (f.max_fee_per_gas, f.max_priority_fee_per_gas);
        *self.fees.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), got.0, got.1));
        Ok(got)
    }

    /// The pending nonce of `who` (the node's pool included).
    async fn pending_nonce(&self, who: Address) -> Result<u64, String> {
        self.provider()
            .get_transaction_count(who)
            .pending()
            .await
            .map_err(|e| e.to_string())
    }

    /// Fees, then the key's nonce and the broadcast under its lock (and, when the key is shared
    /// by replicas, its lease); the transaction's hash once the node holds it. A broadcast whose
    /// answer was lost is `Pending` with the hash (it was signed here, so it is known).
    pub(super) async fn broadcast(
        &self,
        key: &SettlerKey,
        tx: TransactionRequest,
        job: Job<'_>,
    ) -> Result<Sent, SettleOutcome> {
        let (max_fee, tip) = self
            .fees()
            .await
            .map_err(|e| failed(format!("gas fees could not be read: {e}")))?;
        let tx = tx
            .with_chain_id(self.chain_id)
            .with_gas_limit(job.gas())
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip);
        let mut cached = key.nonce.lock().await;
        let Some(leases) = &self.leases else {
            return self.send(key, tx, &mut cached, job).await;
        };
        let name = lease_name(self.chain_id, key.address);
        // Long enough for a few sends at the RPC's deadline; it lapses by itself should this
        // process die holding it.
        let hold = self.rpc.timeout * 4;
        let token = match leases.lease(&name, hold, hold).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(failed(format!(
                    "the nonce lease of settler {} stayed with another replica for {} ms",
                    key.address,
                    hold.as_millis()
                )));
            }
            Err(e) => {
                return Err(failed(format!(
                    "the nonce lease of settler {} could not be taken: {e}",
                    key.address
                )));
            }
        };
        // Another replica may have used the key since this one did: read the nonce afresh.
        *cached = None;
        let sent = self.send(key, tx, &mut cached, job).await;
        if let Err(e) = leases.unlease(&name, &token).await {
            warn!(settler = %key.address, "the nonce lease could not be given back (it lapses by itself): {e}");
        }
        sent
    }

    /// Sign and send at the cached nonce (or the pending one), again at a fresh nonce while
    /// the node says the nonce is taken and the authorization is still unused on chain.
    async fn send(
        &self,
        key: &SettlerKey,
        tx: TransactionRequest,
        cached: &mut Option<u64>,
        job: Job<'_>,
    ) -> Result<Sent, SettleOutcome> {
        let mut at_least = 0u64;
        let mut last = String::new();
        for attempt in 0..MAX_SENDS {
            let nonce = match cached.take() {
                Some(n) => n,
                None => self
                    .pending_nonce(key.address)
                    .await
                    .map_err(|e| failed(format!("the settler nonce could not be read: {e}")))?,
            }
            .max(at_least);
            let signed = tx.clone().with_nonce(nonce);
            let sent = |hash| Sent {
                hash,
                max_fee: signed.max_fee_per_gas.unwrap_or_default(),
                tip: signed.max_priority_fee_per_gas.unwrap_or_default(),
                tx: signed.clone(),
            };
            let envelope = signed
                .clone()
                .build(&key.wallet)
                .await
                .map_err(|e| failed(format!("the settlement could not be signed: {e}")))?;
            let hash = *envelope.tx_hash();
            let answer = self
                .provider()
                .send_raw_transaction(&envelope.encoded_2718())
                .await;
            let why = match answer {
                Ok(_) => {
                    *cached = Some(nonce + 1);
                    return Ok(sent(hash));
                }
                Err(e) => send_error(&e),
            };
            match why {
                SendError::Known => {
                    *cached = Some(nonce + 1);
                    return Ok(sent(hash));
                }
                SendError::Refused(m) => {
                    return Err(failed(format!(
                        "the settlement transaction was not accepted by the node: {m}"
                    )));
                }
                SendError::Lost(m) => {
                    // The node may hold it: the outcome is the chain's to tell, by this hash.
                    warn!(settler = %key.address, nonce, tx = %hash, "no answer to the broadcast: {m}");
                    return Err(SettleOutcome::Pending { tx: hash });
                }
                SendError::Nonce(m) => {
                    info!(settler = %key.address, nonce, attempt, "nonce taken ({m}): reading the pending nonce again");
                    last = m;
                    // A nonce too low or taken in the pool: never lower than the next one.
                    // (A gap, `nonce too high`, is closed by the pending nonce itself.)
                    if !last.to_ascii_lowercase().contains("too high") {
                        at_least = nonce + 1;
                    } else {
                        at_least = 0;
                    }
                    // The same authorization goes out again only while it is unused. (A
                    // batch goes out again as it is: a payment of it used meanwhile fails
                    // alone inside it, which charges nobody.)
                    let Job::One { asset, a } = job else {
                        continue;
                    };
                    match self.authorization_used(asset, a.from, a.nonce).await {
                        Ok(false) => {}
                        Ok(true) => return Err(self.used_meanwhile(asset, a).await),
                        Err(e) => {
                            return Err(failed(format!(
                                "the nonce was taken and the authorization's state could not be read: {e}"
                            )));
                        }
                    }
                }
            }
        }
        Err(failed(format!(
            "the settler's nonce was taken {MAX_SENDS} times in a row (something else keeps using settler {}): {last}",
            key.address
        )))
    }

    /// Wait for the broadcast's receipt until `receipt_timeout`; a broadcast not mined within
    /// `replace_after` is sent again at the same nonce with fees up by an eighth (nodes want
    /// 10 %). Every hash sent is watched: whichever is mined counts.
    pub(super) async fn until_mined(
        &self,
        key: &SettlerKey,
        sent: Sent,
        asset: Address,
        a: &Authorization,
    ) -> SettleOutcome {
        match self.mined(key, sent, Job::One { asset, a }).await {
            Mined::Receipt(r, n) => self.counted(&r, n, asset, a).await,
            Mined::Pending(tx) => SettleOutcome::Pending { tx },
            Mined::Done(o) => o,
            Mined::Gone => match self.settlement_of(asset, a).await {
                Ok(Some(o)) => o,
                Ok(None) => failed("the settlement's nonce was used by another transaction".into()),
                Err(e) => SettleOutcome::Unknown { message: e },
            },
        }
    }

    /// [`Chain::until_mined`] for any job: the receipt of whichever hash is mined.
    pub(super) async fn mined(&self, key: &SettlerKey, mut sent: Sent, job: Job<'_>) -> Mined {
        let deadline = tokio::time::Instant::now() + self.receipt_timeout;
        let mut hashes = vec![sent.hash];
        loop {
            let round = match self.replace_after {
                Some(after) => (tokio::time::Instant::now() + after).min(deadline),
                None => deadline,
            };
            if let Some(r) = self.wait_any(&hashes, round).await {
                super::observe::mined(self.chain_id, job.payments(), &r);
                return Mined::Receipt(Box::new(r), hashes.len());
            }
            if tokio::time::Instant::now() >= deadline {
                let tx = hashes.last().copied().unwrap_or(sent.hash);
                return Mined::Pending(tx);
            }
            // Below this transaction's nonce the key has a gap (a transaction of ours was
            // dropped: a node restarted, its pool was flushed): it would wait forever, queued.
            // The key's nonce is read afresh, and this settlement sent at the gap.
            if let (Some(n), Ok(pending)) = (sent.tx.nonce, self.pending_nonce(key.address).await)
                && pending < n
            {
                warn!(settler = %key.address, nonce = n, pending, "the settlement is queued behind a nonce gap: sending it at the pending nonce");
                *key.nonce.lock().await = None;
                match self.broadcast(key, strip(sent.tx.clone()), job).await {
                    Ok(fresh) => {
                        hashes.push(fresh.hash);
                        sent = fresh;
                        continue;
                    }
                    Err(o) => return Mined::Done(o),
                }
            }
            match self.replace(key, &sent).await {
                Ok(next) => {
                    info!(settler = %key.address, from = %sent.hash, to = %next.hash, max_fee = next.max_fee, "settlement not mined in time: replaced at the same nonce with higher fees");
                    hashes.push(next.hash);
                    sent = next;
                }
                Err(SendError::Nonce(m)) => {
                    // The nonce is used: by one of these hashes (a receipt is due), or by
                    // another transaction of the key; the authorization's own log decides.
                    info!(settler = %key.address, "replacement refused ({m}): the nonce is used");
                    if let Some(r) = self
                        .wait_any(
                            &hashes,
                            tokio::time::Instant::now() + Duration::from_millis(500),
                        )
                        .await
                    {
                        super::observe::mined(self.chain_id, job.payments(), &r);
                        return Mined::Receipt(Box::new(r), hashes.len());
                    }
                    return match self.displaced(job).await {
                        Ok(Some(o)) => Mined::Done(o),
                        Ok(None) => {
                            // Displaced by another transaction of the key: send it afresh.
                            let tx = sent.tx.clone();
                            match self.broadcast(key, strip(tx), job).await {
                                Ok(fresh) => {
                                    hashes.push(fresh.hash);
                                    sent = fresh;
                                    continue;
                                }
                                Err(o) => Mined::Done(o),
                            }
                        }
                        Err(Some(())) => Mined::Gone,
                        Err(None) => Mined::Pending(sent.hash),
                    };
                }
                Err(why) => {
                    warn!(settler = %key.address, tx = %sent.hash, "the replacement was not sent ({why:?}); still waiting for the first");
                }
            }
        }
    }

    /// A job whose nonce another transaction took: `Ok(None)` when none of its payments is
    /// used (it was displaced: send it again); `Ok(Some(o))` a single payment's outcome found
    /// on chain; `Err(Some(()))` a batch with some payment used (each decides by itself);
    /// `Err(None)` when the chain could not be read.
    async fn displaced(&self, job: Job<'_>) -> Result<Option<SettleOutcome>, Option<()>> {
        match job {
            Job::One { asset, a } => self.settlement_of(asset, a).await.map_err(|_| None),
            Job::Batch { items } => {
                for (asset, a) in items {
                    match self.authorization_used(*asset, a.from, a.nonce).await {
                        Ok(false) => {}
                        Ok(true) => return Err(Some(())),
                        Err(_) => return Err(None),
                    }
                }
                Ok(None)
            }
        }
    }

    /// The outcome of a payment one of whose `sent` transactions has receipt `r`. With more
    /// than one sent (a gap closed below a queued one), the one that failed may not be the
    /// one that counts: the authorization's own `AuthorizationUsed` log says which settled it.
    async fn counted(
        &self,
        r: &alloy_rpc_types_eth::TransactionReceipt,
        sent: usize,
        asset: Address,
        a: &Authorization,
    ) -> SettleOutcome {
        let o = super::chain::check_receipt(r, asset, a);
        if sent > 1
            && matches!(o, SettleOutcome::Failed { .. })
            && let Ok(Some(settled @ SettleOutcome::Settled { .. })) =
                self.settlement_of(asset, a).await
        {
            return settled;
        }
        o
    }

    /// The first receipt of any of `hashes`, polled until `until`.
    async fn wait_any(
        &self,
        hashes: &[B256],
        until: tokio::time::Instant,
    ) -> Option<alloy_rpc_types_eth::TransactionReceipt> {
        let mut pause = Duration::from_micros(500);
        loop {
            for h in hashes.iter().rev() {
                let poll = self.provider().get_transaction_receipt(*h);
                match tokio::time::timeout_at(until, poll).await {
                    Ok(Ok(Some(r))) => return Some(r),
                    Err(_) => return None,
                    Ok(_) => {}
                }
            }
            if tokio::time::Instant::now() + pause > until {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// `sent` again at its nonce, fees up by an eighth (and at least today's estimate).
    async fn replace(&self, key: &SettlerKey, sent: &Sent) -> Result<Sent, SendError> {
        let now = self.fees().await.unwrap_or((0, 0));
        let bump = |v: u128| v.saturating_add(v / 8).saturating_add(1);
        let tip = bump(sent.tip).max(now.1);
        let max_fee = bump(sent.max_fee).max(now.0).max(tip);
        let tx = sent
            .tx
            .clone()
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip);
        let envelope = tx
            .clone()
            .build(&key.wallet)
            .await
            .map_err(|e| SendError::Refused(e.to_string()))?;
        let hash = *envelope.tx_hash();
        let next = Sent {
            hash,
            tx,
            max_fee,
            tip,
        };
        match self
            .provider()
            .send_raw_transaction(&envelope.encoded_2718())
            .await
        {
            Ok(_) => Ok(next),
            Err(e) => match send_error(&e) {
                SendError::Known | SendError::Lost(_) => Ok(next),
                other => Err(other),
            },
        }
    }

    /// The authorization was used while this settlement was being sent: whatever settled it.
    async fn used_meanwhile(&self, asset: Address, a: &Authorization) -> SettleOutcome {
        match self.settlement_of(asset, a).await {
            Ok(Some(o)) => o,
            Ok(None) => failed("the authorization's state changed while it was read".into()),
            Err(e) => SettleOutcome::Unknown {
                message: format!(
                    "the authorization is used; its settlement could not be read: {e}"
                ),
            },
        }
    }

    /// A broadcast settlement by its hash: its receipt checked; `Pending` while the node still
    /// holds the transaction; `Unknown` when the node does not know it (its broadcast never
    /// arrived, or the node dropped it), so that the payment's identity on chain decides and,
    /// unused, the settlement is submitted again (the token accepts an authorization once:
    /// this cannot charge twice).
    pub async fn by_tx(&self, tx: B256, asset: Address, a: &Authorization) -> SettleOutcome {
        match self.reconcile(tx, asset, a).await {
            SettleOutcome::Pending { .. } => {}
            // A batch carries other payments too: this one's call may have failed in it (used
            // meanwhile by someone else); its own identity on chain decides.
            failed @ SettleOutcome::Failed { .. } if self.batch.is_some() => {
                return match self.settlement_of(asset, a).await {
                    Ok(Some(o)) => o,
                    _ => failed,
                };
            }
            done => return done,
        }
        match self.provider().get_transaction_by_hash(tx).await {
            Ok(None) => {
                info!(tx = %tx, "the pending settlement is unknown to the node");
                SettleOutcome::Unknown {
                    message: format!(
                        "transaction {tx:#x} is unknown to the node: its broadcast was lost or dropped"
                    ),
                }
            }
            // Still in the node's pool, or the node could not be asked: wait for it.
            Ok(Some(_)) | Err(_) => SettleOutcome::Pending { tx },
        }
    }

    /// Each key's balance against the floor (one fee estimate for all); a key found short is
    /// skipped by the pool while another has enough.
    pub async fn read_gas(&self) -> Result<Vec<SettlerGas>, String> {
        let (max_fee, _) = self.fees().await?;
        let mut out = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            let balance = self.provider().get_balance(k.address).await.map_err(|e| {
                format!(
                    "the balance of settler {} could not be read: {e}",
                    k.address
                )
            })?;
            let floor = U256::from(self.gas_floor_settlements)
                * U256::from(SETTLE_GAS)
                * U256::from(max_fee);
            let g = SettlerGas {
                address: k.address,
                balance,
                floor,
                settlements: self.gas_floor_settlements,
                max_fee_per_gas: max_fee,
            };
            k.low.store(!g.enough(), Ordering::Relaxed);
            // The batcher's twin of this key skips it too.
            if let Some(b) = &self.batch
                && let Some(twin) = b.worker().keys.iter().find(|t| t.address == k.address)
            {
                twin.low.store(!g.enough(), Ordering::Relaxed);
            }
            out.push(g);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wei_reads_as_eth() {
        assert_eq!(eth(U256::ZERO), "0.000000");
        assert_eq!(eth(U256::from(1_500_000_000_000_000_000u128)), "1.500000");
        assert_eq!(eth(U256::from(12_345_678_000_000u64)), "0.000012");
    }

    #[test]
    fn the_floor_is_settlements_times_gas_times_fee() {
        let g = SettlerGas {
            address: Address::ZERO,
            balance: U256::from(SETTLE_GAS * 10 * 5 - 1),
            floor: U256::from(SETTLE_GAS * 10 * 5),
            settlements: 10,
            max_fee_per_gas: 5,
        };
        assert!(!g.enough());
        assert_eq!(g.settlements_left(), U256::from(9));
        assert!(
            g.describe()
                .contains("less than the floor of 10 settlements")
        );
    }
}
