//! Every transition of the paid request's machine, with fakes for the chain (a settlement
//! backend whose chain is a few fields), the upstream, the journal and a clock, on the memory
//! store — including a crash (the request's future dropped) at every step, then the retry with
//! the same payment, on another "process" (another owner) once the lease ran out. After each
//! scenario the money invariant holds: transfers to payTo = paid answers delivered = `settled`
//! records.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, B256, Signature, U256};
use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::recover::Swept;
use super::*;
use crate::evm::chain::Chain;
use crate::store::MemoryStore;
use crate::x402::check::Verified;
use crate::x402::matching::Offer;
use crate::x402::types::{Authorization, ExactEvmPayload, IncomingPayment, PaymentPayloadV1};

// ---------------------------------------------------------------------------------------------
// Fakes

/// Where a fake step stops for good (the process "crashes" there: the test drops the future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hang {
    Never,
    Verify,
    /// Settle hangs before anything is broadcast.
    BeforeBroadcast,
    /// Settle broadcasts (the tx sits in the mempool) and hangs waiting for the receipt.
    AfterBroadcast,
    /// Settle is mined and paid, then hangs before the machine hears of it.
    AfterReceipt,
}

#[derive(Default)]
struct ChainState {
    /// `authorizationState`: the nonce is used (mined).
    used: bool,
    /// The mined transaction that used it, and whether it paid this route's payTo the price.
    mined: Option<(B256, bool)>,
    /// A broadcast transaction of this authorization, not mined yet.
    mempool: Option<B256>,
    /// Transfers to payTo (the money the chain shows).
    transfers: usize,
    /// Settlements submitted by the seller.
    submitted: usize,
    /// `verify` refuses with this.
    refuse: Option<Reason>,
    /// `settle` does not get a receipt in time.
    no_receipt: bool,
    next_tx: u8,
}

struct FakeChain {
    chain: Arc<Chain>,
    state: Mutex<ChainState>,
    hang: Mutex<Hang>,
    reached: Arc<Notify>,
}

impl FakeChain {
    fn new(reached: Arc<Notify>) -> Self {
        crate::init_tls();
        FakeChain {
            // Never asked: every chain access of the machine goes through the trait.
            chain: Arc::new(Chain::read_only("http://127.0.0.1:9", 84532, Duration::ZERO).unwrap()),
            state: Mutex::new(ChainState::default()),
            hang: Mutex::new(Hang::Never),
            reached,
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.state.lock().unwrap()
    }

    fn hang_at(&self, h: Hang) {
        *self.hang.lock().unwrap() = h;
    }

    async fn stop_if(&self, h: Hang) {
        if *self.hang.lock().unwrap() == h {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }

    fn new_tx(st: &mut ChainState) -> B256 {
        st.next_tx += 1;
        B256::repeat_byte(st.next_tx)
    }

    /// A block: the mempool's transaction is mined, and pays.
    fn mine(&self) {
        let mut st = self.st();
        if let Some(tx) = st.mempool.take()
            && !st.used
        {
            st.used = true;
            st.mined = Some((tx, true));
            st.transfers += 1;
        }
    }

    /// A third party submits the buyer's authorization first: it is mined and pays payTo.
    fn front_run(&self) -> B256 {
        let mut st = self.st();
        let tx = B256::repeat_byte(0xf0);
        st.used = true;
        st.mined = Some((tx, true));
        st.transfers += 1;
        tx
    }
}

#[async_trait]
impl Settlement for FakeChain {
    fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    fn verify_span(&self) -> tracing::Span {
        tracing::Span::none()
    }

    async fn verify(&self, _p: &VerifiedPayment<'_>) -> Result<(), Rejection> {
        self.stop_if(Hang::Verify).await;
        let st = self.st();
        if st.used {
            return Err(Rejection::new(Reason::NonceUsed, "used"));
        }
        match st.refuse {
            Some(r) => Err(Rejection::new(r, "refused")),
            None => Ok(()),
        }
    }

    async fn settle(&self, _p: &VerifiedPayment<'_>) -> SettleOutcome {
        self.stop_if(Hang::BeforeBroadcast).await;
        let tx = {
            let mut st = self.st();
            if st.used {
                // The dry run reverts: the authorization is used.
                return SettleOutcome::Failed {
                    reason: Reason::NonceUsed,
                    message: "authorization is used".into(),
                    tx: None,
                };
            }
            if let Some(r) = st.refuse {
                return SettleOutcome::Failed {
                    reason: r,
                    message: "refused".into(),
                    tx: None,
                };
            }
            st.submitted += 1;
            let tx = Self::new_tx(&mut st);
            if st.mempool.is_some() {
                // An earlier copy is in the mempool: the block mines it first, ours reverts.
                drop(st);
                self.mine();
                return SettleOutcome::Failed {
                    reason: Reason::TransactionFailed,
                    message: "reverted".into(),
                    tx: Some(tx),
                };
            }
            st.mempool = Some(tx);
            tx
        };
        self.stop_if(Hang::AfterBroadcast).await;
        if self.st().no_receipt {
            return SettleOutcome::Pending { tx };
        }
        self.mine();
        self.stop_if(Hang::AfterReceipt).await;
        SettleOutcome::Settled { tx }
    }

    async fn lookup(
        &self,
        _asset: Address,
        _auth: &Authorization,
    ) -> Result<Option<SettleOutcome>, String> {
        let st = self.st();
        Ok(match (st.used, st.mined) {
            (false, _) => None,
            (true, Some((tx, true))) => Some(SettleOutcome::Settled { tx }),
            (true, _) => Some(SettleOutcome::Failed {
                reason: Reason::NonceUsed,
                message: "used by a transaction that did not pay".into(),
                tx: None,
            }),
        })
    }

    async fn by_tx(&self, _asset: Address, _auth: &Authorization, tx: B256) -> SettleOutcome {
        let st = self.st();
        match st.mined {
            Some((t, true)) if t == tx => SettleOutcome::Settled { tx },
            _ if st.mempool == Some(tx) => SettleOutcome::Pending { tx },
            _ => SettleOutcome::Failed {
                reason: Reason::TransactionFailed,
                message: "no such paying transaction".into(),
                tx: Some(tx),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    Answer,
    Fail,
    BuyerLeft,
    Hang,
}

struct FakeUpstream {
    mode: Up,
    calls: Arc<AtomicUsize>,
    reached: Arc<Notify>,
}

#[async_trait]
impl Upstream for FakeUpstream {
    async fn answer(&mut self, _ctx: &Ctx, _p: &VerifiedPayment<'_>) -> Forwarded {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = json!({"strategy": {"summary": "hold", "steps": ["wait"]}});
        match self.mode {
            Up::Answer => Forwarded {
                answer: Ok(answer),
                buyer_left: false,
            },
            Up::BuyerLeft => Forwarded {
                answer: Ok(answer),
                buyer_left: true,
            },
            Up::Fail => Forwarded {
                answer: Err(Reply::error(502, "upstream_error", "boom")),
                buyer_left: false,
            },
            Up::Hang => {
                self.reached.notify_one();
                std::future::pending().await
            }
        }
    }
}

#[derive(Default)]
struct FakeJournal {
    events: Mutex<Vec<(Kind, Option<String>)>>,
}

#[async_trait]
impl Recorder for FakeJournal {
    async fn record(&self, _ctx: &Ctx, _p: &VerifiedPayment<'_>, kind: Kind, note: Note) {
        self.events.lock().unwrap().push((kind, note.tx));
    }
}

impl FakeJournal {
    fn count(&self, kind: Kind) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == kind)
            .count()
    }

    fn txs(&self, kind: Kind) -> Vec<Option<String>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The world of one test: one payment, one store, one chain, one journal, a clock; two
// "processes" (owners) to retry on.

const LEASE: Duration = Duration::from_secs(60);

struct World {
    store: MemoryStore,
    chain: FakeChain,
    journal: FakeJournal,
    clock: Arc<AtomicU64>,
    offer: Offer,
    auth: Authorization,
    calls: Arc<AtomicUsize>,
    reached: Arc<Notify>,
    /// 200 answers the buyer got for the payment.
    delivered: usize,
}

impl World {
    fn new() -> World {
        let reached = Arc::new(Notify::new());
        let offer = Offer {
            scheme: "exact".into(),
            network: "eip155:84532".into(),
            chain_id: 84532,
            asset: Address::repeat_byte(0xaa),
            pay_to: Address::repeat_byte(0xbb),
            amount: U256::from(10_000),
            max_timeout_seconds: 120,
            decimals: 6,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            facilitator: "local".into(),
        };
        let auth = Authorization {
            from: Address::repeat_byte(0xcc),
            to: offer.pay_to,
            value: offer.amount,
            valid_after: U256::ZERO,
            valid_before: U256::from(crate::util::now_secs() + 120),
            nonce: B256::repeat_byte(0x42),
        };
        World {
            store: MemoryStore::new(100),
            chain: FakeChain::new(reached.clone()),
            journal: FakeJournal::default(),
            clock: Arc::new(AtomicU64::new(1_000_000)),
            offer,
            auth,
            calls: Arc::new(AtomicUsize::new(0)),
            reached,
            delivered: 0,
        }
    }

    fn spec(&self, owner: &str) -> LeaseSpec {
        let t = self.clock.clone();
        LeaseSpec {
            owner: owner.into(),
            ttl: LEASE,
            clock: Arc::new(move || t.load(Ordering::SeqCst)),
        }
    }

    /// Time passes beyond every lease.
    fn leases_run_out(&self) {
        self.clock
            .fetch_add(LEASE.as_millis() as u64 + 1, Ordering::SeqCst);
    }

    fn payment(&self) -> VerifiedPayment<'_> {
        let received = IncomingPayment::V1(PaymentPayloadV1 {
            x402_version: 1,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: ExactEvmPayload {
                signature: Default::default(),
                authorization: self.auth.clone(),
            },
        });
        let verified = Verified {
            chain_id: 84532,
            authorization: self.auth.clone(),
            signature: Signature::new(U256::from(1), U256::from(1), false),
        };
        VerifiedPayment::new(received, verified, &self.offer, "test route")
    }

    fn upstream(&self, mode: Up) -> FakeUpstream {
        FakeUpstream {
            mode,
            calls: self.calls.clone(),
            reached: self.reached.clone(),
        }
    }

    /// The buyer sends the payment (with `body`) to process `owner`; the upstream behaves as
    /// `mode`.
    async fn send_with(&mut self, owner: &str, mode: Up, body: &str) -> Outcome {
        let spec = self.spec(owner);
        let out = {
            let m = Machine {
                store: &self.store,
                backend: &self.chain,
                journal: &self.journal,
                lease: &spec,
                disclaimer: "not advice",
                route: "POST /x402",
                settle_first: false,
            };
            let c = ClaimedPayment::new(
                self.payment(),
                &bytes::Bytes::from(body.to_string()),
                crate::util::now_secs(),
            );
            let mut up = self.upstream(mode);
            m.run(&Ctx::new(), &c, &mut up).await
        };
        if matches!(&out, Outcome::Reply(r) if r.status == 200) {
            self.delivered += 1;
        }
        out
    }

    async fn send(&mut self, owner: &str, mode: Up) -> Outcome {
        self.send_with(owner, mode, "{}").await
    }

    /// The process `owner` crashes where the fakes hang: its request's future is dropped there.
    async fn crash(&mut self, owner: &str, mode: Up) {
        let spec = self.spec(owner);
        let m = Machine {
            store: &self.store,
            backend: &self.chain,
            journal: &self.journal,
            lease: &spec,
            disclaimer: "not advice",
            route: "POST /x402",
            settle_first: false,
        };
        let c = ClaimedPayment::new(
            self.payment(),
            &bytes::Bytes::from_static(b"{}"),
            crate::util::now_secs(),
        );
        let mut up = self.upstream(mode);
        let reached = self.reached.clone();
        let ctx = Ctx::new();
        tokio::select! {
            out = m.run(&ctx, &c, &mut up) => panic!("no crash: {out:?}"),
            _ = reached.notified() => {}
        }
        self.chain.hang_at(Hang::Never);
    }

    /// The payment's record (claiming with a throwaway record reads it; a free key is given
    /// back).
    async fn record(&self) -> Option<PaymentRecord> {
        let key = self.payment().replay_key;
        let probe = crate::store::sample("probe", PaymentState::InFlight);
        match self
            .store
            .claim(&key, &probe, Duration::from_secs(1))
            .await
            .unwrap()
        {
            Some(r) => Some(r),
            None => {
                self.store.release(&key, "probe").await.unwrap();
                None
            }
        }
    }

    fn upstream_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Σ transfers to payTo = paid answers delivered = `settled` records (and one `answered`
    /// per `settled`).
    fn money_invariant(&self) {
        let transfers = self.chain.st().transfers;
        assert_eq!(transfers, self.delivered, "transfers = delivered answers");
        assert_eq!(
            self.journal.count(Kind::Settled),
            transfers,
            "settled records = transfers"
        );
        assert_eq!(
            self.journal.count(Kind::Answered),
            transfers,
            "answered records = transfers"
        );
    }
}

fn status(o: &Outcome) -> u16 {
    match o {
        Outcome::Reply(r) => r.status,
        Outcome::Refused(_) => 402,
        Outcome::Gone => 0,
    }
}

fn error_code(o: &Outcome) -> String {
    match o {
        Outcome::Reply(r) => serde_json::from_slice::<Value>(&r.body).unwrap_or_default()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Outcome::Refused(r) => r.reason.code().to_string(),
        Outcome::Gone => "gone".into(),
    }
}

fn body(o: &Outcome) -> Value {
    match o {
        Outcome::Reply(r) => serde_json::from_slice(&r.body).unwrap(),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// The happy path and what a payment already held gets

#[tokio::test(flavor = "multi_thread")]
async fn claimed_verified_forwarded_settled_delivered_then_replayed() {
    let mut w = World::new();
    let out = w.send("a", Up::Answer).await;
    assert_eq!(status(&out), 200);
    let b = body(&out);
    assert_eq!(b["strategy"]["summary"], "hold");
    assert_eq!(
        b["payment"]["transaction"],
        format!("{:#x}", B256::repeat_byte(1))
    );
    let rec = w.record().await.unwrap();
    assert_eq!(rec.state, PaymentState::Done);
    assert_eq!(rec.owner, None, "a delivered payment is nobody's");
    let kinds: Vec<Kind> = w
        .journal
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        kinds,
        [
            Kind::PaymentVerified,
            Kind::Forwarded,
            Kind::Settled,
            Kind::Answered
        ]
    );
    // The same payment again, on another process: the stored answer, nothing new.
    let again = w.send("b", Up::Answer).await;
    assert_eq!(status(&again), 200);
    w.delivered -= 1; // a replay is the same paid answer, not another one
    match &again {
        Outcome::Reply(r) => assert!(
            r.headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("X-Payment-Replayed") && v == "true")
        ),
        _ => unreachable!(),
    }
    assert_eq!(w.journal.count(Kind::Replayed), 1);
    assert_eq!((w.upstream_calls(), w.chain.st().submitted), (1, 1));
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_payment_with_another_body_is_refused() {
    let mut w = World::new();
    w.send("a", Up::Answer).await;
    let out = w.send_with("a", Up::Answer, "{\"other\":1}").await;
    assert_eq!(
        (status(&out), error_code(&out).as_str()),
        (409, "payment_already_used")
    );
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_on_chain_releases_the_claim() {
    let mut w = World::new();
    w.chain.st().refuse = Some(Reason::InsufficientBalance);
    let out = w.send("a", Up::Answer).await;
    assert_eq!(error_code(&out), Reason::InsufficientBalance.code());
    assert!(w.record().await.is_none(), "released");
    assert_eq!(w.upstream_calls(), 0);
    assert_eq!(w.journal.count(Kind::PaymentRefused), 1);
    // Funded, the same payment goes through.
    w.chain.st().refuse = None;
    assert_eq!(status(&w.send("a", Up::Answer).await), 200);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_failure_releases_the_claim_and_charges_nothing() {
    let mut w = World::new();
    let out = w.send("a", Up::Fail).await;
    assert_eq!(status(&out), 502);
    assert!(w.record().await.is_none());
    assert_eq!(w.journal.count(Kind::NotCharged), 1);
    assert_eq!(w.chain.st().submitted, 0);
    assert_eq!(status(&w.send("a", Up::Answer).await), 200);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buyer_who_left_is_not_charged_and_the_retry_settles_the_held_answer() {
    let mut w = World::new();
    let out = w.send("a", Up::BuyerLeft).await;
    assert!(matches!(out, Outcome::Gone));
    let rec = w.record().await.unwrap();
    assert_eq!(rec.state, PaymentState::Unsettled);
    assert_eq!(rec.owner, None, "handed back: the retry takes it at once");
    assert_eq!(w.chain.st().transfers, 0);
    let out = w.send("b", Up::Fail).await;
    assert_eq!(
        status(&out),
        200,
        "the held answer, the upstream not asked again"
    );
    assert_eq!(w.upstream_calls(), 1);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_settlement_withholds_the_answer_and_keeps_it_for_a_retry() {
    let mut w = World::new();
    // Verified, then the payer is drained before settlement.
    let out = {
        let spec = w.spec("a");
        struct DrainAtSettle<'c>(&'c FakeChain);
        #[async_trait]
        impl Settlement for DrainAtSettle<'_> {
            fn chain(&self) -> &Arc<Chain> {
                self.0.chain()
            }
            fn verify_span(&self) -> tracing::Span {
                tracing::Span::none()
            }
            async fn verify(&self, p: &VerifiedPayment<'_>) -> Result<(), Rejection> {
                self.0.verify(p).await
            }
            async fn settle(&self, p: &VerifiedPayment<'_>) -> SettleOutcome {
                self.0.st().refuse = Some(Reason::InsufficientBalance);
                self.0.settle(p).await
            }
            async fn lookup(
                &self,
                a: Address,
                auth: &Authorization,
            ) -> Result<Option<SettleOutcome>, String> {
                self.0.lookup(a, auth).await
            }
        }
        let backend = DrainAtSettle(&w.chain);
        let m = Machine {
            store: &w.store,
            backend: &backend,
            journal: &w.journal,
            lease: &spec,
            disclaimer: "",
            route: "POST /x402",
            settle_first: false,
        };
        let c = ClaimedPayment::new(w.payment(), &bytes::Bytes::from_static(b"{}"), 0);
        let mut up = w.upstream(Up::Answer);
        m.run(&Ctx::new(), &c, &mut up).await
    };
    assert_eq!(error_code(&out), Reason::InsufficientBalance.code());
    assert_eq!(w.journal.count(Kind::SettlementFailed), 1);
    assert_eq!(w.record().await.unwrap().state, PaymentState::Unsettled);
    // Funded again: the retry settles the held answer.
    w.chain.st().refuse = None;
    assert_eq!(status(&w.send("a", Up::Fail).await), 200);
    assert_eq!(w.upstream_calls(), 1);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receipt_not_in_time_is_pending_and_the_retry_delivers_once_mined() {
    let mut w = World::new();
    w.chain.st().no_receipt = true;
    let out = w.send("a", Up::Answer).await;
    assert_eq!(
        (status(&out), error_code(&out).as_str()),
        (503, "settlement_pending")
    );
    let tx = body(&out)["transaction"].as_str().unwrap().to_string();
    assert_eq!(w.record().await.unwrap().tx.as_deref(), Some(tx.as_str()));
    // Still in the mempool: wait again, never a second submission.
    let out = w.send("a", Up::Answer).await;
    assert_eq!(status(&out), 503);
    w.chain.mine();
    let out = w.send("a", Up::Answer).await;
    assert_eq!(status(&out), 200);
    assert_eq!(body(&out)["payment"]["transaction"], tx);
    assert_eq!((w.upstream_calls(), w.chain.st().submitted), (1, 1));
    w.money_invariant();
}

// ---------------------------------------------------------------------------------------------
// A crash at every step, then the retry with the same payment

/// Crash where `hang` says (chain) or in the upstream, check a retry while the lease runs is told
/// to wait, then retry on another process once it ran out: delivered once.
async fn crash_then_retry(w: &mut World, hang: Hang, up: Up) -> Outcome {
    w.chain.hang_at(hang);
    w.crash("a", up).await;
    let rec = w.record().await.expect("the crash left the record");
    assert_eq!(rec.owner.as_deref(), Some("a"));
    let early = w.send("b", Up::Answer).await;
    assert_eq!(
        (status(&early), error_code(&early).as_str()),
        (409, "payment_in_flight"),
        "while the lease runs"
    );
    w.leases_run_out();
    w.send("b", Up::Answer).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_claim_is_taken_over_once_the_lease_ran_out() {
    let mut w = World::new();
    let out = crash_then_retry(&mut w, Hang::Verify, Up::Answer).await;
    assert_eq!(status(&out), 200);
    assert_eq!(w.upstream_calls(), 1);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_the_upstream_call_asks_it_again_and_charges_once() {
    let mut w = World::new();
    let out = crash_then_retry(&mut w, Hang::Never, Up::Hang).await;
    assert_eq!(status(&out), 200);
    assert_eq!(w.upstream_calls(), 2, "the crashed call, then the retry's");
    assert_eq!(w.chain.st().submitted, 1);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_broadcast_settles_on_the_retry() {
    let mut w = World::new();
    let out = crash_then_retry(&mut w, Hang::BeforeBroadcast, Up::Answer).await;
    assert_eq!(status(&out), 200);
    assert_eq!((w.upstream_calls(), w.chain.st().submitted), (1, 1));
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_broadcast_delivers_the_held_answer_once_the_chain_shows_it() {
    let mut w = World::new();
    w.chain.hang_at(Hang::AfterBroadcast);
    w.crash("a", Up::Answer).await;
    let held = w.record().await.unwrap();
    assert_eq!(
        held.state,
        PaymentState::Pending,
        "settling was recorded before the broadcast"
    );
    assert!(held.answer.is_some());
    w.chain.mine();
    w.leases_run_out();
    let out = w.send("b", Up::Fail).await;
    assert_eq!(status(&out), 200);
    assert_eq!(
        body(&out)["payment"]["transaction"],
        format!("{:#x}", B256::repeat_byte(1))
    );
    assert_eq!(
        (w.upstream_calls(), w.chain.st().submitted),
        (1, 1),
        "held answer, found tx"
    );
    assert_eq!(
        w.journal.txs(Kind::Settled),
        [Some(format!("{:#x}", B256::repeat_byte(1)))]
    );
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_broadcast_with_the_tx_still_in_the_mempool_never_charges_twice() {
    let mut w = World::new();
    w.chain.hang_at(Hang::AfterBroadcast);
    w.crash("a", Up::Answer).await;
    w.leases_run_out();
    // Not mined yet: the chain shows it unused, so the retry submits it again; the block mines
    // the first copy and reverts the second; the chain then shows the first paid.
    let out = w.send("b", Up::Fail).await;
    assert_eq!(status(&out), 200);
    assert_eq!(w.chain.st().submitted, 2);
    assert_eq!(w.chain.st().transfers, 1);
    assert_eq!(
        body(&out)["payment"]["transaction"],
        format!("{:#x}", B256::repeat_byte(1))
    );
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_receipt_delivers_on_the_retry_with_the_mined_tx() {
    let mut w = World::new();
    let out = crash_then_retry(&mut w, Hang::AfterReceipt, Up::Answer).await;
    assert_eq!(status(&out), 200);
    assert_eq!((w.upstream_calls(), w.chain.st().submitted), (1, 1));
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_being_renewed_is_not_taken_over() {
    let mut w = World::new();
    w.chain.hang_at(Hang::Verify);
    w.crash("a", Up::Answer).await;
    // Its owner still beats: renewed at the current time.
    let rec = w.record().await.unwrap();
    w.leases_run_out();
    let now = w.clock.load(Ordering::SeqCst);
    let mut beat = rec.clone();
    beat.lease_until = Some(now + 30_000);
    assert!(
        w.store
            .replace(&w.payment().replay_key, &rec.token, &beat, LEASE)
            .await
            .unwrap()
    );
    let out = w.send("b", Up::Answer).await;
    assert_eq!(status(&out), 409);
    w.money_invariant();
}

// ---------------------------------------------------------------------------------------------
// The nonce already used on chain

#[tokio::test(flavor = "multi_thread")]
async fn a_front_run_that_paid_this_route_gets_the_answer_and_records_the_found_tx() {
    let mut w = World::new();
    let tx = w.chain.front_run();
    let out = w.send("a", Up::Answer).await;
    assert_eq!(status(&out), 200);
    assert_eq!(body(&out)["payment"]["transaction"], format!("{tx:#x}"));
    assert_eq!(w.chain.st().submitted, 0, "nothing submitted by the seller");
    assert_eq!(w.journal.txs(Kind::Settled), [Some(format!("{tx:#x}"))]);
    assert_eq!(w.upstream_calls(), 1);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_nonce_paid_with_the_upstream_failing_is_answered_on_the_retry() {
    let mut w = World::new();
    w.chain.front_run();
    let out = w.send("a", Up::Fail).await;
    assert_eq!(
        (status(&out), error_code(&out).as_str()),
        (503, "upstream_error")
    );
    let rec = w.record().await.unwrap();
    assert_eq!(
        (rec.state, rec.owner.as_deref()),
        (PaymentState::Pending, None)
    );
    let out = w.send("a", Up::Answer).await;
    assert_eq!(status(&out), 200);
    assert_eq!(w.journal.count(Kind::Settled), 1);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nonce_used_by_a_transaction_that_did_not_pay_this_route_is_refused() {
    let mut w = World::new();
    {
        let mut st = w.chain.st();
        st.used = true;
        st.mined = Some((B256::repeat_byte(0xee), false));
    }
    let out = w.send("a", Up::Answer).await;
    assert_eq!(error_code(&out), Reason::NonceUsed.code());
    assert_eq!(w.upstream_calls(), 0);
    assert!(w.record().await.is_none());
    w.money_invariant();
}

// ---------------------------------------------------------------------------------------------
// Recovery on start

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_resolves_what_a_crash_of_this_node_left() {
    let mut w = World::new();
    w.chain.hang_at(Hang::AfterBroadcast);
    w.crash("a", Up::Answer).await;
    w.chain.mine();
    // The node restarts (same owner id) a second later, long before the lease would run out.
    w.clock.fetch_add(1_000, Ordering::SeqCst);
    let spec = w.spec("a");
    let fresh = Arc::new(FakeChain::new(w.reached.clone()));
    {
        let mut st = fresh.st();
        st.used = true;
        st.mined = w.chain.st().mined;
    }
    let chain: Arc<dyn Settlement> = fresh;
    let by_chain = move |_: u64| Some(chain.clone());
    let swept = sweep(&w.store, &by_chain, &spec, spec.now(), 100).await;
    assert_eq!(swept.settled, 1);
    let rec = w.record().await.unwrap();
    assert_eq!(rec.tx, Some(format!("{:#x}", B256::repeat_byte(1))));
    assert_eq!(rec.owner, None, "handed back for the retry");
    // The retry, at once (no lease to wait for): the held answer, the found tx.
    let out = w.send("a", Up::Fail).await;
    assert_eq!(status(&out), 200);
    w.money_invariant();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_releases_a_bare_claim_and_leaves_live_leases_alone() {
    let mut w = World::new();
    w.chain.hang_at(Hang::Verify);
    w.crash("a", Up::Answer).await;
    let none = |_: u64| None;
    // Another node's live lease is not touched.
    let other = w.spec("b");
    assert_eq!(
        sweep(&w.store, &none, &other, other.now(), 100).await,
        Swept::default()
    );
    assert!(w.record().await.is_some());
    // A lease of this node from before it started (a second ago) is its crashed predecessor's.
    w.clock.fetch_add(1_000, Ordering::SeqCst);
    let spec = w.spec("a");
    let swept = sweep(&w.store, &none, &spec, spec.now(), 100).await;
    assert_eq!(swept.released, 1);
    assert!(w.record().await.is_none());
    assert_eq!(status(&w.send("a", Up::Answer).await), 200);
    w.money_invariant();
}
