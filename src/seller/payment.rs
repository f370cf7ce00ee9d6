//! The payment a paid request carries, in its two stages: [`VerifiedPayment`] (it passed every
//! check that needs no chain) and [`ClaimedPayment`] (this request holds its replay claim).

use std::time::Duration;

use bytes::Bytes;
use pingora_proxy::Session;

use crate::store::StoredAuth;
use crate::util::{new_id, sha256_hex};
use crate::x402::check::Verified;
use crate::x402::ids::PaymentRef;
use crate::x402::matching::Offer;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::{Authorization, IncomingPayment};
use crate::x402::{HEADER_PAYMENT_SIGNATURE, HEADER_X_PAYMENT};

/// Extra time a settled answer is kept after the authorization expires.
const KEEP_AFTER_EXPIRY: Duration = Duration::from_secs(600);

/// A payment that matched one of the route's offers and passed the protocol's check (window,
/// amount, recipient, signature): what the settlement backends verify and settle.
pub(crate) struct VerifiedPayment<'a> {
    /// The payment as the buyer sent it (a remote facilitator is sent it as is).
    pub(crate) received: IncomingPayment,
    /// What the protocol check established: the chain, the authorization, the signature.
    pub(crate) verified: Verified,
    /// The route's offer it pays.
    pub(crate) offer: &'a Offer,
    /// The route's description (a v1 requirement sent to a remote facilitator carries it).
    pub(crate) description: &'a str,
    /// The payment's stable id (`pay_…`), the same for every request that carries it.
    pub(crate) payment_id: String,
    /// The replay store's key for it.
    pub(crate) replay_key: String,
}

impl<'a> VerifiedPayment<'a> {
    pub(crate) fn new(
        received: IncomingPayment,
        verified: Verified,
        offer: &'a Offer,
        description: &'a str,
    ) -> Self {
        let auth = &verified.authorization;
        let id = PaymentRef::new(offer.chain_id, offer.asset, auth.from, auth.nonce);
        VerifiedPayment {
            received,
            payment_id: id.payment_id(),
            replay_key: id.replay_key(),
            verified,
            offer,
            description,
        }
    }

    pub(crate) fn authorization(&self) -> &Authorization {
        &self.verified.authorization
    }

    /// The x402 version the buyer speaks (1 or 2).
    pub(crate) fn version(&self) -> u8 {
        self.received.version()
    }

    /// The offer's network as the buyer's version names it: a v1 name (`base-sepolia`) for a
    /// v1 payment, CAIP-2 (`eip155:84532`) for v2.
    pub(crate) fn network_name(&self) -> String {
        if self.version() == 1 {
            crate::x402::networks::to_v1(&self.offer.network).to_string()
        } else {
            self.offer.network.clone()
        }
    }

    /// The header that carries the settlement receipt back in the buyer's version.
    pub(crate) fn receipt_header(&self) -> &'static str {
        self.received.response_header()
    }

    /// How long the store keeps the claim: until the authorization expires (at most a week),
    /// plus [`KEEP_AFTER_EXPIRY`].
    pub(crate) fn ttl(&self, now: u64) -> Duration {
        record_ttl(self.authorization(), now)
    }

    /// What the payment authorized, as its store record keeps it (no signature).
    pub(crate) fn stored_auth(&self) -> StoredAuth {
        StoredAuth {
            chain_id: self.offer.chain_id,
            asset: self.offer.asset,
            authorization: self.authorization().clone(),
        }
    }
}

/// How long the store keeps the record of authorization `a`, from `now`: until it expires (at
/// most a week), plus [`KEEP_AFTER_EXPIRY`].
pub(crate) fn record_ttl(a: &Authorization, now: u64) -> Duration {
    let until: u64 = a.valid_before.try_into().unwrap_or(u64::MAX);
    Duration::from_secs(until.saturating_sub(now).min(86_400 * 7)) + KEEP_AFTER_EXPIRY
}

/// A verified payment whose replay claim this request holds: every change to its record is
/// conditional on `token`.
pub(crate) struct ClaimedPayment<'a> {
    pub(crate) payment: VerifiedPayment<'a>,
    /// This request's claim token.
    pub(crate) token: String,
    /// SHA-256 of the request body the payment is used with.
    pub(crate) body_hash: String,
    /// That body (kept in the journal with the `forwarded` record).
    pub(crate) body: Bytes,
    /// How long the record is kept.
    pub(crate) ttl: Duration,
}

impl<'a> ClaimedPayment<'a> {
    /// `payment`, to be claimed for the request with `body`, kept until its authorization
    /// expires (counted from `now`).
    pub(crate) fn new(payment: VerifiedPayment<'a>, body: &Bytes, now: u64) -> Self {
        ClaimedPayment {
            token: new_id("claim"),
            body_hash: sha256_hex(body),
            body: body.clone(),
            ttl: payment.ttl(now),
            payment,
        }
    }
}

/// The payment header, v2 (`PAYMENT-SIGNATURE`) first, then v1 (`X-PAYMENT`): its bytes and
/// whether it is v2. Sent twice is refused.
pub(crate) fn payment_header(s: &Session) -> Result<Option<(Vec<u8>, bool)>, Rejection> {
    let h = &s.req_header().headers;
    for (name, v2) in [(HEADER_PAYMENT_SIGNATURE, true), (HEADER_X_PAYMENT, false)] {
        let mut values = h.get_all(name).iter();
        if let Some(first) = values.next() {
            if values.next().is_some() {
                return Err(Rejection::new(
                    Reason::InvalidPayload,
                    format!("{name} was sent more than once"),
                ));
            }
            return Ok(Some((first.as_bytes().to_vec(), v2)));
        }
    }
    Ok(None)
}
