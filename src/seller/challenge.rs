//! The 402 and refused payments: a fresh challenge for every offer of the route, in the v2
//! `PAYMENT-REQUIRED` header and a v1 JSON body.

use pingora_proxy::Session;
use serde_json::json;
use tracing::info;

use crate::http::Reply;
use crate::seller::Paywall;
use crate::seller::config::Route;
use crate::seller::ctx::Ctx;
use crate::seller::discovery;
use crate::seller::payment::VerifiedPayment;
use crate::seller::pricing::Priced;
use crate::telemetry;
use crate::telemetry::PaymentOutcome;
use crate::util::now_secs;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::{
    PaymentRequired, PaymentRequirements, PaymentRequirementsV1, ResourceInfo, SettleResponse,
};
use crate::x402::{HEADER_PAYMENT_REQUIRED, codec, money};

/// How long the plain 402 of a route is answered again as built: well inside any
/// `max_timeout_seconds` (at least 10 s), so a kept challenge is as payable as a fresh one.
pub(crate) const KEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// How many (route, resource URL) pairs are kept at most (the URL carries the `Host` the buyer
/// sent, so this bounds what varying it can cost).
pub(crate) const KEPT: u64 = 4096;

impl Paywall {
    /// The 402: v2 `PAYMENT-REQUIRED` header plus a v1 JSON body, both with fresh challenges
    /// (the plain 402, no payment sent, is built once per [`KEEP`] per route and URL).
    /// A route with a pricing policy keeps one per quote (its amounts).
    pub(crate) fn challenge(
        &self,
        s: &Session,
        route: &Route,
        priced: &Priced<'_>,
        why: &Rejection,
    ) -> Reply {
        telemetry::with(|m| m.challenge(&route.id()));
        let url = resource_url(s);
        if why.reason != Reason::PaymentRequired {
            return self.build_challenge(route, priced, why, url);
        }
        let key = (route.id(), url, priced.key());
        if let Some(kept) = self.challenges.get(&key) {
            return kept;
        }
        let reply = self.build_challenge(route, priced, why, key.1.clone());
        self.challenges.insert(key, reply.clone());
        reply
    }

    /// The 402 for `route` at `url` at this request's price, with fresh challenges.
    fn build_challenge(
        &self,
        route: &Route,
        priced: &Priced<'_>,
        why: &Rejection,
        url: String,
    ) -> Reply {
        let now = now_secs();
        let offers: &[crate::x402::matching::Offer] = &priced.offers;
        let accepts: Vec<PaymentRequirements> = offers
            .iter()
            .map(|o| o.challenge(&self.key, &route.id(), now))
            .collect();
        let v2 = PaymentRequired {
            x402_version: 2,
            error: Some(why.reason.code().into()),
            resource: ResourceInfo {
                url: url.clone(),
                description: Some(route.description.clone()),
                mime_type: Some("application/json".into()),
            },
            accepts: accepts.clone(),
            extensions: Some(match &priced.detail {
                Some(q) => json!({ "bazaar": discovery::bazaar(route), "pricing": q }),
                None => json!({ "bazaar": discovery::bazaar(route) }),
            }),
        };
        let v1: Vec<PaymentRequirementsV1> = accepts
            .iter()
            .map(|a| a.to_v1(&url, &route.description))
            .collect();
        let mut body = json!({
            "x402Version": 1,
            "error": why.reason,
            "message": why.message,
            "accepts": v1,
            "price": offers.iter().map(|o| json!({
                "network": o.network,
                "asset": o.asset.to_checksum(None),
                "amount": o.amount.to_string(),
                "display": money::format_decimal(o.amount, o.decimals),
            })).collect::<Vec<_>>(),
        });
        if let Some(q) = &priced.detail {
            body["quote"] = q.clone();
        }
        Reply::json(402, &body).with(HEADER_PAYMENT_REQUIRED, codec::encode(&v2))
    }

    /// A refused payment: 402 with a fresh challenge for payer faults, 503 for ours.
    pub(crate) fn refusal(
        &self,
        s: &Session,
        route: &Route,
        priced: &Priced<'_>,
        ctx: &Ctx,
        p: &VerifiedPayment<'_>,
        r: &Rejection,
    ) -> Reply {
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, reason = %r.reason, "payment refused: {}", r.message);
        telemetry::with(|m| m.payment(PaymentOutcome::Refused(r.reason)));
        if r.reason.is_payer_fault() {
            let mut reply = self.challenge(s, route, priced, r);
            let receipt = SettleResponse {
                success: false,
                error_reason: Some(r.reason.code().into()),
                payer: Some(p.authorization().from),
                transaction: String::new(),
                network: p.network_name(),
                amount: None,
                error_message: None,
            };
            reply
                .headers
                .push((p.receipt_header(), codec::encode(&receipt)));
            reply
        } else {
            Reply::error(
                503,
                r.reason.code(),
                format!("{}; you were not charged, try again shortly", r.message),
            )
            .retry_after(5)
        }
    }
}

/// The URL the buyer asked for, as announced in the challenge's `resource`.
fn resource_url(s: &Session) -> String {
    format!("{}{}", base_url(s), s.req_header().uri.path())
}

/// `http(s)://host` as the buyer reached us (the `Host` header; `https` behind a proxy that
/// says so in `X-Forwarded-Proto`).
pub(crate) fn base_url(s: &Session) -> String {
    let req = s.req_header();
    let host = req
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let proto = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{proto}://{host}")
}
