//! What a journal record says: the kinds of lifecycle events, an event about to be written and
//! a record as it is on disk.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::anchor::Body;

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    pub time: String,
    /// `payment_verified`, `forwarded`, `settled`, `settlement_failed`, `settlement_pending`,
    /// `answered`, `not_charged`, `replayed`, `buyer_paid`, `fallback`, …
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Everything else about the event (amount, asset, network, model, modelCallId, reason, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
    pub prev_hash: String,
    pub hash: String,
}

/// Every lifecycle event the sidecar journals. Its [`name`](Kind::name) is the record's
/// `event` field; its [`durability`](Kind::durability) says when it must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Seller: the payment passed every check and is claimed.
    PaymentVerified,
    /// Seller: the chain (or the remote facilitator) refused the payment.
    PaymentRefused,
    /// Seller: the request went to the upstream.
    Forwarded,
    /// Seller: the settlement transaction is mined and moved the money.
    Settled,
    /// Seller: the settlement failed for sure; the answer was withheld.
    SettlementFailed,
    /// Seller: the settlement's outcome is not known yet; the answer is kept for a retry.
    SettlementPending,
    /// Seller: the paid answer left.
    Answered,
    /// Seller: the upstream failed or the buyer hung up; nothing was settled.
    NotCharged,
    /// Seller: a settled payment sent again got its stored answer.
    Replayed,
    /// Buyer: a seller was paid (or the chain says it was).
    BuyerPaid,
    /// Buyer: the answer came from the local fallback.
    Fallback,
    /// Facilitator service: a settlement it submitted is mined.
    FacilitatorSettled,
    /// Facilitator service: a settlement it submitted failed.
    FacilitatorSettleFailed,
    /// Facilitator service: a settlement's outcome is not known yet.
    FacilitatorSettlePending,
}

/// When a record has to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Queued: it reaches the disk with the next durable record, which the answer waits for
    /// (the seller's `answered`), so one fsync serves a whole paid call.
    WithNext,
    /// On disk before the caller goes on (before an answer leaves).
    Now,
}

impl Kind {
    /// Every kind, for tests and documentation.
    pub const ALL: [Kind; 14] = [
        Kind::PaymentVerified,
        Kind::PaymentRefused,
        Kind::Forwarded,
        Kind::Settled,
        Kind::SettlementFailed,
        Kind::SettlementPending,
        Kind::Answered,
        Kind::NotCharged,
        Kind::Replayed,
        Kind::BuyerPaid,
        Kind::Fallback,
        Kind::FacilitatorSettled,
        Kind::FacilitatorSettleFailed,
        Kind::FacilitatorSettlePending,
    ];

    /// The record's `event` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PaymentVerified => "payment_verified",
            Kind::PaymentRefused => "payment_refused",
            Kind::Forwarded => "forwarded",
            Kind::Settled => "settled",
            Kind::SettlementFailed => "settlement_failed",
            Kind::SettlementPending => "settlement_pending",
            Kind::Answered => "answered",
            Kind::NotCharged => "not_charged",
            Kind::Replayed => "replayed",
            Kind::BuyerPaid => "buyer_paid",
            Kind::Fallback => "fallback",
            Kind::FacilitatorSettled => "facilitator_settled",
            Kind::FacilitatorSettleFailed => "facilitator_settle_failed",
            Kind::FacilitatorSettlePending => "facilitator_settle_pending",
        }
    }

    /// The kind whose [`name`](Kind::name) is `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `payment_verified` rides with the seller's `forwarded`, which is on disk before the
    /// settlement is sent (the journal fails closed before money moves: the seller does not
    /// settle what it could not record); `settled` rides with the durable `answered` of the
    /// same call. Everything else is written through before the caller goes on.
    pub fn durability(self) -> Durability {
        match self {
            Kind::PaymentVerified | Kind::Settled => Durability::WithNext,
            _ => Durability::Now,
        }
    }

    /// Whether the record is about money that moved or may have moved (a settlement, its
    /// answer, a payment by the buyer side): such a record is always kept in the spill, however
    /// long the journal cannot be written.
    pub fn documents_money(self) -> bool {
        !matches!(
            self,
            Kind::PaymentVerified | Kind::PaymentRefused | Kind::Forwarded | Kind::NotCharged
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An event about to be written (the journal assigns seq, time and hashes).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub request_id: Option<String>,
    pub payment_id: Option<String>,
    pub tx: Option<String>,
    pub payer: Option<String>,
    pub details: Map<String, Value>,
    /// Bodies kept with the record in the day's bodies file (the record gets their sha256).
    pub bodies: Vec<Body>,
}

impl Event {
    pub fn new(kind: Kind) -> Self {
        Event {
            kind,
            request_id: None,
            payment_id: None,
            tx: None,
            payer: None,
            details: Map::new(),
            bodies: Vec::new(),
        }
    }
    /// Keep `bytes` with the record, as its `role` body (`request`, `answer`).
    pub fn body(mut self, role: &str, bytes: impl Into<bytes::Bytes>) -> Self {
        self.bodies.push(Body {
            role: role.into(),
            bytes: bytes.into(),
        });
        self
    }
    pub fn request(mut self, id: &str) -> Self {
        self.request_id = Some(id.into());
        self
    }
    pub fn payment(mut self, id: &str) -> Self {
        self.payment_id = Some(id.into());
        self
    }
    pub fn tx(mut self, tx: &str) -> Self {
        self.tx = Some(tx.into());
        self
    }
    pub fn payer(mut self, who: &str) -> Self {
        self.payer = Some(who.into());
        self
    }
    pub fn with(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
}
