//! The seller's paywall: a pingora `ProxyHttp` service on the public port.
//!
//! Free routes are proxied by pingora as usual. A paid route is handled whole inside
//! `request_filter`, top to bottom, because settlement must wait for the *complete* upstream
//! answer (pingora's body filter is synchronous and cannot settle):
//!
//! 1. route → 2. body (capped) and `StrategyRequest` check → 3. no payment: 402 challenge →
//! 4. decode → 5. match this route's requirements, authorization window, signature →
//! 6. claim the payment in the replay store → 7. nonce and balance on chain →
//! 8. forward to the upstream (watching for the buyer hanging up) → 9. check the answer →
//! 10. settle → 11. merge `payment`/`metadata`/`disclaimer`, answer with the receipt header.
//!
//! Every failure after the claim either releases it (nothing happened: the buyer may send the
//! same payment again) or keeps the finished answer for a retry, so nobody pays for an answer
//! they did not get and nobody gets an answer they did not pay for.

pub mod config;
pub mod settle;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{B256, Signature};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};
use serde_json::{Value, json};
use tracing::{Instrument, info, warn};

use crate::advisor;
use crate::audit::{Event, Journal};
use crate::evm::{Chain, SettleOutcome};
use crate::http::{BodyError, Reply, read_body};
use crate::seller::config::{Route, Seller, UnknownRoutes};
use crate::seller::settle::{Remote, Settler};
use crate::store::{PaymentRecord, PaymentState, ReplayStore, StoreSpec, StoredAnswer};
use crate::telemetry;
use crate::util::{new_id, now_secs, rfc3339, sha256_hex};
use crate::x402::challenge::ChallengeKey;
use crate::x402::codec::{self, decode_payment};
use crate::x402::ids::PaymentRef;
use crate::x402::matching::{Offer, match_payment};
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::*;
use crate::x402::{HEADER_PAYMENT_REQUIRED, HEADER_PAYMENT_SIGNATURE, HEADER_X_PAYMENT, money};

/// Extra time a settled answer is kept after the authorization expires.
/// Largest upstream answer accepted (it is stored with the claim for retries).
pub const MAX_UPSTREAM_ANSWER: usize = 1024 * 1024;
const KEEP_AFTER_EXPIRY: Duration = Duration::from_secs(600);

/// The upstream strategy endpoint.
struct Upstream {
    base: reqwest::Url,
    addr: SocketAddr,
    timeout: Duration,
    /// Sent in `X-Sidecar-Secret` on paid calls only (free routes must not reach the advisor).
    secret: Option<String>,
}

/// The paywall service. Built once; shared by all requests.
pub struct Paywall {
    routes: Vec<Route>,
    unknown: UnknownRoutes,
    max_body: usize,
    disclaimer: String,
    upstream: Upstream,
    http: reqwest::Client,
    settlers: HashMap<u64, Arc<Settler>>,
    store: Arc<dyn ReplayStore>,
    key: ChallengeKey,
    journal: Option<Arc<Journal>>,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<std::net::IpAddr>,
}

/// Per-request state.
pub struct Ctx {
    request_id: String,
    started: Instant,
}

/// Why the paywall could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("inbound.upstream.url `{0}` does not resolve to an address")]
    Upstream(String),
    #[error("facilitator for {network}: {why}")]
    Facilitator { network: String, why: String },
    #[error("store: {0}")]
    Store(String),
    #[error("HTTP client: {0}")]
    Http(String),
}

impl Paywall {
    /// Build from the resolved seller section (keys are loaded here, clients connect lazily).
    pub fn new(
        cfg: &Seller,
        store: &StoreSpec,
        journal: Option<Arc<Journal>>,
    ) -> Result<Self, BuildError> {
        let base = cfg.upstream.url.clone();
        let host = base.host_str().unwrap_or_default().to_string();
        let port = base.port_or_known_default().unwrap_or(80);
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| BuildError::Upstream(cfg.upstream.text.clone()))?;
        let settlers = settlers(&cfg.settlement)?;
        let store = crate::store::open(store).map_err(|e| BuildError::Store(e.to_string()))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let key = match &cfg.challenge_secret {
            Some(s) => ChallengeKey::new(s.expose().as_bytes().to_vec()),
            None => {
                warn!(
                    "inbound.challenge_secret is not set: using a random one; replicas will not accept each other's challenges"
                );
                ChallengeKey::random()
            }
        };
        Ok(Paywall {
            routes: cfg.routes.clone(),
            unknown: cfg.unknown_routes,
            max_body: cfg.max_body,
            disclaimer: cfg.disclaimer.clone(),
            upstream: Upstream {
                base,
                addr,
                timeout: cfg.upstream.timeout,
                secret: cfg.upstream.secret.as_ref().map(|s| s.expose().to_string()),
            },
            http,
            settlers,
            store,
            key,
            journal,
            trusted_proxies: cfg.trusted_proxies.clone(),
        })
    }

    /// What `/readyz` should check for this service: each chain's RPC, the store, the upstream.
    pub fn readiness(&self) -> telemetry::Readiness {
        telemetry::Readiness {
            chains: self
                .settlers
                .iter()
                .map(|(id, c)| (format!("eip155:{id}"), c.chain().clone()))
                .collect(),
            facilitators: self
                .settlers
                .iter()
                .filter(|(_, c)| c.remote().is_some())
                .map(|(id, c)| {
                    let probe: Arc<dyn telemetry::Probe> = c.clone();
                    (format!("eip155:{id}"), probe)
                })
                .collect(),
            store: Some(self.store.clone()),
            upstream: Some(self.upstream.addr),
        }
    }

    fn route(&self, method: &str, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.method == method && r.path == path)
    }

    /// Steps 2–11 for a paid route. `None` means the buyer is gone and nothing can be written.
    async fn paid(&self, s: &mut Session, route: &Route, ctx: &Ctx) -> Option<Reply> {
        // 2. Body, capped; validated before any payment is asked.
        let body = match read_body(s, self.max_body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Some(Reply::error(
                    413,
                    "body_too_large",
                    format!("the request body is larger than {} bytes", self.max_body),
                ));
            }
            Err(BodyError::Unreadable) => return None,
        };
        if route.strategy_request
            && !body.is_empty()
            && let Err(details) = advisor::validate(&body)
        {
            return Some(Reply::json(
                400,
                &json!({
                    "error": "invalid_request",
                    "message": "the body is not a valid StrategyRequest; nothing was charged",
                    "details": details,
                }),
            ));
        }
        // 3. Payment header (v2 first).
        let (raw, v2) = match payment_header(s) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(self.challenge(s, route, &Rejection::new(Reason::PaymentRequired, "this route is paid: sign one of `accepts` and send it in PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1)"))),
            Err(r) => return Some(self.challenge(s, route, &r)),
        };
        if route.strategy_request && body.is_empty() {
            return Some(Reply::error(
                400,
                "invalid_request",
                "a paid call needs a StrategyRequest body; nothing was charged",
            ));
        }
        // 4–5. Decode, match, check the authorization and the signature: no I/O.
        let now = now_secs();
        let verify_started = Instant::now();
        let checked = decode_payment(&raw, v2).and_then(|p| {
            let m = match_payment(&route.offers, &p, &self.key, &route.id(), now)?;
            Ok((p, m.offer, m.payment.signature))
        });
        let (payment, offer_ix, sig) = match checked {
            Ok(x) => x,
            Err(r) => {
                info!(request_id = %ctx.request_id, reason = %r.reason, "payment refused: {}", r.message);
                telemetry::with(|m| {
                    m.payments
                        .with_label_values(&["refused", r.reason.code()])
                        .inc()
                });
                return Some(self.challenge(s, route, &r));
            }
        };
        let offer = &route.offers[offer_ix];
        let auth = payment.exact().authorization.clone();
        // Only a remote facilitator reads it: the local path skips building it.
        let remote = self
            .settlers
            .get(&offer.chain_id)
            .is_some_and(|c| c.remote().is_some());
        let request = if remote {
            facilitator_request(&payment, offer, &route.description)
        } else {
            FacilitatorRequest {
                x402_version: payment.version(),
                payment_payload: Value::Null,
                payment_requirements: Value::Null,
            }
        };
        let id = PaymentRef::new(offer.chain_id, offer.asset, auth.from, auth.nonce);
        let paying = Paying {
            key: id.replay_key(),
            payment_id: id.payment_id(),
            token: new_id("claim"),
            body_hash: sha256_hex(&body),
            offer,
            auth,
            sig,
            version: payment.version(),
            receipt_header: payment.response_header(),
            ttl: ttl_for(&payment.exact().authorization, now),
            request,
        };
        tracing::Span::current()
            .record("payment_id", paying.payment_id.as_str())
            .record("payer", paying.auth.from.to_string().as_str());
        let Some(chain) = self.settlers.get(&offer.chain_id).cloned() else {
            return Some(
                Reply::error(
                    503,
                    "no_facilitator",
                    "no facilitator is configured for this network",
                )
                .retry_after(30),
            );
        };
        // 6. Claim: one payment, one request at a time, one answer ever.
        let mut rec = PaymentRecord {
            state: PaymentState::InFlight,
            token: paying.token.clone(),
            body_hash: paying.body_hash.clone(),
            answer: None,
            tx: None,
            request_id: Some(ctx.request_id.clone()),
        };
        match self.store.claim(&paying.key, &rec, paying.ttl).await {
            Err(e) => {
                warn!(request_id = %ctx.request_id, "replay store unavailable: {e}");
                return Some(Reply::error(503, "store_unavailable", "the payment could not be recorded safely; nothing was charged, try again shortly").retry_after(2));
            }
            Ok(Some(existing)) => {
                return self
                    .existing(s, route, ctx, &paying, &chain, existing)
                    .await;
            }
            Ok(None) => {}
        }
        observe("verify", verify_started);
        // 7. Chain checks (nonce unused, balance), or the remote facilitator's `/verify`.
        let chain_started = Instant::now();
        let span = match chain.remote() {
            Some(r) => tracing::info_span!("facilitator_verify", facilitator = %r.shown()),
            None => tracing::info_span!("chain_verify"),
        };
        let onchain = chain
            .verify(offer.asset, &paying.auth, &paying.request)
            .instrument(span)
            .await;
        observe("chain", chain_started);
        if let Err(r) = onchain {
            self.release(&paying).await;
            self.audit(ctx, &paying, "payment_refused", |e| {
                e.with("reason", r.reason.code())
            })
            .await;
            return Some(self.refusal(s, route, ctx, &paying, &r));
        }
        telemetry::with(|m| m.payments.with_label_values(&["verified", ""]).inc());
        self.audit(ctx, &paying, "payment_verified", |e| {
            e.with("route", route.id())
                .with("x402Version", paying.version)
        })
        .await;
        // 8–9. Forward and check the answer, noticing if the buyer hangs up meanwhile.
        let upstream = self
            .forward(s, route, ctx, &paying, body)
            .instrument(tracing::info_span!("upstream", otel.kind = "client"))
            .await;
        let answer = match upstream {
            (Err(reply), _) => {
                self.release(&paying).await;
                self.audit(ctx, &paying, "not_charged", |e| {
                    e.with("why", "upstream failed; claim released")
                        .with("status", reply.status)
                })
                .await;
                return Some(reply);
            }
            (Ok(a), gone) => {
                if gone {
                    rec.state = PaymentState::Unsettled;
                    rec.answer = Some(StoredAnswer {
                        status: 200,
                        body: a.to_string(),
                        receipt: None,
                    });
                    let kept = self
                        .store
                        .replace(&paying.key, &paying.token, &rec, paying.ttl)
                        .await;
                    self.audit(ctx, &paying, "not_charged", |e| {
                        e.with("why", "buyer hung up before settlement; answer kept for a retry with the same payment")
                    }).await;
                    info!(request_id = %ctx.request_id, payment_id = %paying.payment_id, kept = kept.unwrap_or(false),
                        "buyer hung up before settlement: not charged; the answer is kept for a retry with the same payment");
                    return None;
                }
                self.audit(ctx, &paying, "forwarded", |e| {
                    e.with("model", a["metadata"]["model"].clone())
                        .with("modelCallId", a["metadata"]["modelCallId"].clone())
                })
                .await;
                a
            }
        };
        // 10–11.
        Some(
            self.settle_and_answer(s, route, ctx, &paying, &chain, answer)
                .await,
        )
    }

    /// A payment already known to the store.
    async fn existing(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        paying: &Paying<'_>,
        chain: &Settler,
        existing: PaymentRecord,
    ) -> Option<Reply> {
        let kind = match existing.state {
            _ if existing.body_hash != paying.body_hash => "reused",
            PaymentState::InFlight => "in_flight",
            PaymentState::Done => "replayed",
            PaymentState::Unsettled | PaymentState::Pending => "resumed",
        };
        telemetry::with(|m| m.replays.with_label_values(&[kind]).inc());
        if existing.body_hash != paying.body_hash {
            return Some(Reply::error(
                409,
                "payment_already_used",
                "this payment was already used for a different request; sign a new authorization for this one",
            ));
        }
        match existing.state {
            PaymentState::InFlight => Some(
                Reply::error(
                    409,
                    "payment_in_flight",
                    "this payment is being processed by another request; retry to get its answer",
                )
                .retry_after(2),
            ),
            PaymentState::Done => {
                let a = existing.answer?;
                info!(request_id = %ctx.request_id, payment_id = %paying.payment_id, "replay of a settled payment: stored answer, no second charge");
                self.audit(ctx, paying, "replayed", |e| match existing.tx.as_deref() {
                    Some(tx) => e.tx(tx).with(
                        "why",
                        "settled payment sent again: stored answer, no second charge",
                    ),
                    None => e,
                })
                .await;
                let mut r = Reply::raw(a.status, "application/json", a.body);
                if let Some((name, value)) = a.receipt {
                    r.headers.push((crate::x402::receipt_name(&name), value));
                }
                Some(r.with("X-Payment-Replayed", "true"))
            }
            PaymentState::Unsettled | PaymentState::Pending => {
                // Take the record over atomically; whoever wins settles or reconciles.
                let mut mine = existing.clone();
                mine.token = paying.token.clone();
                mine.state = PaymentState::InFlight;
                mine.request_id = Some(ctx.request_id.clone());
                match self
                    .store
                    .replace(&paying.key, &existing.token, &mine, paying.ttl)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return Some(
                            Reply::error(
                                409,
                                "payment_in_flight",
                                "this payment is being processed by another request",
                            )
                            .retry_after(2),
                        );
                    }
                    Err(e) => {
                        warn!(request_id = %ctx.request_id, "replay store unavailable: {e}");
                        return Some(
                            Reply::error(503, "store_unavailable", "try again shortly")
                                .retry_after(2),
                        );
                    }
                }
                let answer: Value = existing
                    .answer
                    .as_ref()
                    .and_then(|a| serde_json::from_str(&a.body).ok())?;
                if existing.state == PaymentState::Pending {
                    let tx: Option<B256> = existing.tx.as_deref().and_then(|t| t.parse().ok());
                    let outcome = chain
                        .reconcile(tx, paying.offer.asset, &paying.auth, &paying.request)
                        .instrument(tracing::info_span!("settle", reconcile = true))
                        .await;
                    return Some(self.finish(s, route, ctx, paying, answer, outcome).await);
                }
                // A settlement whose answer went astray may have gone through after all.
                if let Ok(Some(o @ SettleOutcome::Settled { .. })) = chain
                    .chain()
                    .settlement_of(paying.offer.asset, &paying.auth)
                    .await
                {
                    info!(request_id = %ctx.request_id, payment_id = %paying.payment_id, "retry of an answer whose payment is settled on chain: delivering it");
                    return Some(self.finish(s, route, ctx, paying, answer, o).await);
                }
                if let Err(r) = chain
                    .verify(paying.offer.asset, &paying.auth, &paying.request)
                    .await
                {
                    let mut back = mine;
                    back.state = PaymentState::Unsettled;
                    let _ = self
                        .store
                        .replace(&paying.key, &paying.token, &back, paying.ttl)
                        .await;
                    return Some(self.refusal(s, route, ctx, paying, &r));
                }
                info!(request_id = %ctx.request_id, payment_id = %paying.payment_id, "retry of an unsettled answer: settling now");
                Some(
                    self.settle_and_answer(s, route, ctx, paying, chain, answer)
                        .await,
                )
            }
        }
    }

    async fn settle_and_answer(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        p: &Paying<'_>,
        chain: &Settler,
        answer: Value,
    ) -> Reply {
        let settle_started = Instant::now();
        let outcome = chain
            .settle(p.offer.asset, &p.auth, &p.sig, &p.request)
            .instrument(tracing::info_span!("settle"))
            .await;
        observe("settle", settle_started);
        self.finish(s, route, ctx, p, answer, outcome).await
    }

    /// Turn a settlement outcome into the stored record and the buyer's answer.
    async fn finish(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        p: &Paying<'_>,
        answer: Value,
        outcome: SettleOutcome,
    ) -> Reply {
        let mut rec = PaymentRecord {
            state: PaymentState::Unsettled,
            token: p.token.clone(),
            body_hash: p.body_hash.clone(),
            answer: Some(StoredAnswer {
                status: 200,
                body: answer.to_string(),
                receipt: None,
            }),
            tx: None,
            request_id: Some(ctx.request_id.clone()),
        };
        let o = p.offer;
        match outcome {
            SettleOutcome::Settled { tx } => {
                telemetry::with(|m| m.settlements.with_label_values(&["settled"]).inc());
                observe("total", ctx.started);
                let receipt = SettleResponse {
                    success: true,
                    error_reason: None,
                    payer: Some(p.auth.from),
                    transaction: format!("{tx:#x}"),
                    network: o.network.clone(),
                    amount: Some(o.amount.to_string()),
                    error_message: None,
                };
                let body = self.merge(answer, ctx, p, tx);
                let encoded = codec::encode(&receipt);
                rec.state = PaymentState::Done;
                rec.tx = Some(format!("{tx:#x}"));
                rec.answer = Some(StoredAnswer {
                    status: 200,
                    body: body.to_string(),
                    receipt: Some((p.receipt_header.to_string(), encoded.clone())),
                });
                if let Err(e) = self.store.replace(&p.key, &p.token, &rec, p.ttl).await {
                    // The chain is the source of truth; a lost record only costs a later replay.
                    warn!(request_id = %ctx.request_id, "settled, but the answer could not be stored: {e}");
                }
                let txs = format!("{tx:#x}");
                self.audit(ctx, p, "settled", |e| e.tx(&txs)).await;
                self.audit(ctx, p, "answered", |e| {
                    e.tx(&txs)
                        .with("status", 200)
                        .with("model", body["metadata"]["model"].clone())
                        .with("modelCallId", body["metadata"]["modelCallId"].clone())
                })
                .await;
                info!(request_id = %ctx.request_id, payment_id = %p.payment_id, payer = %p.auth.from, tx = %format!("{tx:#x}"),
                    amount = %o.amount, ms = ctx.started.elapsed().as_millis() as u64, "paid call settled");
                Reply::json(200, &body).with(p.receipt_header, encoded)
            }
            SettleOutcome::Pending { tx } => {
                telemetry::with(|m| m.settlements.with_label_values(&["pending"]).inc());
                rec.state = PaymentState::Pending;
                rec.tx = Some(format!("{tx:#x}"));
                let _ = self.store.replace(&p.key, &p.token, &rec, p.ttl).await;
                let txs = format!("{tx:#x}");
                self.audit(ctx, p, "settlement_pending", |e| {
                    e.tx(&txs).with(
                        "why",
                        "broadcast, no receipt yet; answer withheld until confirmed",
                    )
                })
                .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, tx = %format!("{tx:#x}"), "settlement pending: outcome unknown");
                Reply::json(
                    503,
                    &json!({
                        "error": Reason::SettlementPending,
                        "message": "the payment was submitted and is not confirmed yet; send the same request with the same payment again to get the answer (you will not be charged twice)",
                        "transaction": format!("{tx:#x}"),
                    }),
                )
                .retry_after(5)
            }
            SettleOutcome::Unknown { message } => {
                telemetry::with(|m| m.settlements.with_label_values(&["pending"]).inc());
                rec.state = PaymentState::Pending;
                let _ = self.store.replace(&p.key, &p.token, &rec, p.ttl).await;
                self.audit(ctx, p, "settlement_pending", |e| {
                    e.with(
                        "why",
                        format!(
                            "outcome unknown ({message}); answer withheld until the chain shows it"
                        ),
                    )
                })
                .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, "settlement outcome unknown: {message}");
                Reply::json(
                    503,
                    &json!({
                        "error": Reason::SettlementPending,
                        "message": "the payment's settlement could not be confirmed yet; send the same request with the same payment again to get the answer (you will not be charged twice)",
                    }),
                )
                .retry_after(5)
            }
            SettleOutcome::Failed {
                reason,
                message,
                tx,
            } => {
                let _ = self.store.replace(&p.key, &p.token, &rec, p.ttl).await;
                telemetry::with(|m| m.settlements.with_label_values(&["failed"]).inc());
                self.audit(ctx, p, "settlement_failed", |e| {
                    let e = e
                        .with("reason", reason.code())
                        .with("message", message.clone())
                        .with("answer", "withheld");
                    match tx {
                        Some(t) => e.tx(&format!("{t:#x}")),
                        None => e,
                    }
                })
                .await;
                warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, reason = %reason, tx = ?tx, "settlement failed: {message}");
                self.refusal(s, route, ctx, p, &Rejection::new(reason, message))
            }
        }
    }

    /// A refused payment: 402 with a fresh challenge for payer faults, 503 for ours.
    fn refusal(
        &self,
        s: &Session,
        route: &Route,
        ctx: &Ctx,
        p: &Paying<'_>,
        r: &Rejection,
    ) -> Reply {
        info!(request_id = %ctx.request_id, payment_id = %p.payment_id, reason = %r.reason, "payment refused: {}", r.message);
        telemetry::with(|m| {
            m.payments
                .with_label_values(&["refused", r.reason.code()])
                .inc()
        });
        if r.reason.is_payer_fault() {
            let mut reply = self.challenge(s, route, r);
            let receipt = SettleResponse {
                success: false,
                error_reason: Some(r.reason.code().into()),
                payer: Some(p.auth.from),
                transaction: String::new(),
                network: p.offer.network.clone(),
                amount: None,
                error_message: None,
            };
            reply
                .headers
                .push((p.receipt_header, codec::encode(&receipt)));
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

    /// Write a lifecycle event about a payment to the audit journal. Resolves once the record
    /// is on disk, except for the steps named below.
    async fn audit(&self, ctx: &Ctx, p: &Paying<'_>, event: &str, f: impl FnOnce(Event) -> Event) {
        let Some(j) = &self.journal else { return };
        let e = Event::new(event)
            .request(&ctx.request_id)
            .payment(&p.payment_id)
            .payer(&p.auth.from.to_string())
            .with("amount", p.offer.amount.to_string())
            .with("asset", p.offer.asset.to_string())
            .with("network", p.offer.network.clone())
            .with("payTo", p.offer.pay_to.to_string());
        // Steps followed by another record of the same request only queue: the writer keeps
        // queue order, so the next awaited record takes them to disk before the buyer hears
        // anything. The others wait for their batch's fsync without blocking this thread.
        let e = f(e);
        let written = if matches!(event, "payment_verified" | "forwarded" | "settled") {
            j.append_unsynced(e, now_secs())
        } else {
            j.append(e, now_secs()).await.map(drop)
        };
        if let Err(err) = written {
            warn!(request_id = %ctx.request_id, "audit journal write failed: {err}");
        }
    }

    async fn release(&self, p: &Paying<'_>) {
        if let Err(e) = self.store.release(&p.key, &p.token).await {
            warn!(payment_id = %p.payment_id, "claim not released ({e}); it expires by itself");
        }
    }

    /// The 402: v2 `PAYMENT-REQUIRED` header plus a v1 JSON body, both with fresh challenges.
    fn challenge(&self, s: &Session, route: &Route, why: &Rejection) -> Reply {
        telemetry::with(|m| m.challenges.with_label_values(&[&route.id()]).inc());
        let now = now_secs();
        let url = resource_url(s);
        let accepts: Vec<PaymentRequirements> = route
            .offers
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
            extensions: None,
        };
        let v1: Vec<PaymentRequirementsV1> = accepts
            .iter()
            .map(|a| a.to_v1(&url, &route.description))
            .collect();
        let body = json!({
            "x402Version": 1,
            "error": why.reason,
            "message": why.message,
            "accepts": v1,
            "price": route.offers.iter().map(|o| json!({
                "network": o.network,
                "asset": o.asset,
                "amount": o.amount.to_string(),
                "display": money::format_decimal(o.amount, o.decimals),
            })).collect::<Vec<_>>(),
        });
        Reply::json(402, &body).with(HEADER_PAYMENT_REQUIRED, codec::encode(&v2))
    }

    /// Call the upstream with the buyer's body. Returns the checked JSON answer, or the reply to
    /// send instead; and whether the buyer hung up while we waited.
    async fn forward(
        &self,
        s: &mut Session,
        route: &Route,
        ctx: &Ctx,
        p: &Paying<'_>,
        body: Bytes,
    ) -> (Result<Value, Reply>, bool) {
        let upstream_started = Instant::now();
        let mut url = self.upstream.base.clone();
        url.set_path(&route.path);
        url.set_query(s.req_header().uri.query());
        let mut req = self
            .http
            .request(route.method.parse().unwrap_or(reqwest::Method::POST), url)
            .timeout(self.upstream.timeout)
            .header("Content-Type", "application/json")
            .header("X-Request-Id", ctx.request_id.as_str())
            .header("X-Payment-Id", p.payment_id.as_str())
            .header("X-Payer", format!("{}", p.auth.from));
        if let Some(secret) = &self.upstream.secret {
            req = req.header(advisor::SECRET_HEADER, secret.as_str());
        }
        for (k, v) in crate::telemetry::otlp::outgoing(
            &tracing::Span::current(),
            Some(&s.req_header().headers),
        ) {
            req = req.header(k, v);
        }
        let call = async {
            let resp = req.body(body).send().await?;
            let status = resp.status();
            let bytes = crate::http::read_capped(resp, MAX_UPSTREAM_ANSWER).await?;
            Ok::<_, crate::http::ReadError>((status, bytes))
        };
        tokio::pin!(call);
        let mut gone = false;
        let mut watching = true;
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                idle = s.as_downstream_mut().read_body_or_idle(true), if watching => {
                    watching = false;
                    gone = idle.is_err();
                }
            }
        };
        let started = upstream_started.elapsed();
        let out = match result {
            Err(crate::http::ReadError::TooLarge(max)) => Err(Reply::error(
                502,
                "upstream_bad_answer",
                format!(
                    "the strategy service's answer is larger than {max} bytes; you were not charged"
                ),
            )
            .retry_after(2)),
            Err(crate::http::ReadError::Http(e)) if e.is_timeout() => Err(Reply::error(
                504,
                "upstream_timeout",
                format!(
                    "the strategy service did not answer within {} ms; you were not charged",
                    self.upstream.timeout.as_millis()
                ),
            )
            .retry_after(5)),
            Err(crate::http::ReadError::Http(e)) if e.is_connect() => Err(Reply::error(
                502,
                "upstream_unreachable",
                "the strategy service is unreachable; you were not charged",
            )
            .retry_after(5)),
            Err(crate::http::ReadError::Http(e)) => Err(Reply::error(
                502,
                "upstream_bad_answer",
                format!("the strategy service's answer was incomplete ({e}); you were not charged"),
            )
            .retry_after(2)),
            Ok((status, _)) if status.is_server_error() => Err(Reply::error(
                503,
                "upstream_error",
                format!("the strategy service failed with {status}; you were not charged"),
            )
            .retry_after(5)),
            Ok((status, _)) if !status.is_success() => Err(Reply::error(
                502,
                "upstream_error",
                format!("the strategy service answered {status}; you were not charged"),
            )
            .retry_after(2)),
            Ok((_, bytes)) => check_answer(&bytes, route.strategy_request).map_err(|why| {
                Reply::error(
                    502,
                    "upstream_bad_answer",
                    format!("the strategy service's answer {why}; you were not charged"),
                )
                .retry_after(2)
            }),
        };
        observe_secs("upstream", started);
        if let Err(r) = &out {
            let kind = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            telemetry::with(|m| m.upstream_errors.with_label_values(&[&kind]).inc());
            warn!(request_id = %ctx.request_id, payment_id = %p.payment_id, status = r.status, ms = started.as_millis() as u64, "upstream failed: not settling, claim released");
        }
        (out, gone)
    }

    /// The upstream answer plus `payment`, `metadata` and the disclaimer.
    fn merge(&self, mut answer: Value, ctx: &Ctx, p: &Paying<'_>, tx: B256) -> Value {
        let o = p.offer;
        let Some(obj) = answer.as_object_mut() else {
            return answer;
        };
        obj.insert(
            "payment".into(),
            json!({
                "receiptId": format!("{tx:#x}"),
                "transaction": format!("{tx:#x}"),
                "amount": o.amount.to_string(),
                "amountDisplay": money::format_decimal(o.amount, o.decimals),
                "decimals": o.decimals,
                "asset": o.asset.to_string(),
                "network": o.network,
                "payer": p.auth.from.to_string(),
                "payTo": o.pay_to.to_string(),
                "paymentId": p.payment_id,
            }),
        );
        let up = obj
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut meta = up.clone();
        meta.insert("requestId".into(), json!(ctx.request_id));
        meta.insert("paymentId".into(), json!(p.payment_id));
        meta.insert(
            "modelCallId".into(),
            up.get("modelCallId").cloned().unwrap_or(Value::Null),
        );
        meta.insert(
            "model".into(),
            up.get("model").cloned().unwrap_or(json!("unknown")),
        );
        meta.insert(
            "generatedAt".into(),
            up.get("generatedAt")
                .cloned()
                .unwrap_or_else(|| json!(rfc3339(now_secs()))),
        );
        meta.insert("x402Version".into(), json!(p.version));
        obj.insert("metadata".into(), Value::Object(meta));
        if obj
            .get("disclaimer")
            .is_none_or(|d| d.as_str().is_none_or(str::is_empty))
        {
            obj.insert("disclaimer".into(), json!(self.disclaimer));
        }
        answer
    }
}

fn observe(phase: &str, since: Instant) {
    observe_secs(phase, since.elapsed());
}

fn observe_secs(phase: &str, d: Duration) {
    telemetry::with(|m| {
        m.phase_seconds
            .with_label_values(&[phase])
            .observe(d.as_secs_f64())
    });
}

/// What the request is paying with, once verified.
struct Paying<'a> {
    key: String,
    payment_id: String,
    token: String,
    body_hash: String,
    offer: &'a Offer,
    auth: Authorization,
    sig: Signature,
    version: u8,
    receipt_header: &'static str,
    ttl: Duration,
    /// What a remote facilitator is sent: the payment as received and our requirement
    /// (empty payload and requirements when this network settles locally).
    request: FacilitatorRequest,
}

/// The `/verify` and `/settle` body for `payment`, matched to `offer`.
fn facilitator_request(
    payment: &IncomingPayment,
    offer: &Offer,
    description: &str,
) -> FacilitatorRequest {
    match payment {
        IncomingPayment::V2(p) => FacilitatorRequest {
            x402_version: 2,
            payment_payload: serde_json::to_value(p).unwrap_or(Value::Null),
            payment_requirements: serde_json::to_value(&p.accepted).unwrap_or(Value::Null),
        },
        IncomingPayment::V1(p) => {
            let v1 = offer.base_requirement().to_v1("", description);
            FacilitatorRequest {
                x402_version: 1,
                payment_payload: serde_json::to_value(p).unwrap_or(Value::Null),
                payment_requirements: serde_json::to_value(&v1).unwrap_or(Value::Null),
            }
        }
    }
}

fn ttl_for(a: &Authorization, now: u64) -> Duration {
    let until: u64 = a.valid_before.try_into().unwrap_or(u64::MAX);
    Duration::from_secs(until.saturating_sub(now).min(86_400 * 7)) + KEEP_AFTER_EXPIRY
}

/// Is this the answer we sell? A JSON object, with a `strategy` object on strategy routes.
pub fn check_answer(bytes: &[u8], strategy_route: bool) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not JSON ({e})"))?;
    let Some(obj) = v.as_object() else {
        return Err("is not a JSON object".into());
    };
    if strategy_route && !obj.get("strategy").is_some_and(Value::is_object) {
        return Err("has no `strategy` object".into());
    }
    Ok(v)
}

fn payment_header(s: &Session) -> Result<Option<(Vec<u8>, bool)>, Rejection> {
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

/// The settlement backend of each chain: this sidecar's own (`kind: local`) or a remote
/// facilitator (`kind: http`).
fn settlers(settlement: &config::BackendSpecs) -> Result<HashMap<u64, Arc<Settler>>, BuildError> {
    let mut settlers = HashMap::new();
    for f in &settlement.local {
        let chain = Chain::from_spec(f).map_err(|why| BuildError::Facilitator {
            network: f.network.clone(),
            why,
        })?;
        settlers.insert(f.chain_id, Arc::new(Settler::Local(Arc::new(chain))));
    }
    let facilitator_http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))?;
    for f in &settlement.remote {
        let remote =
            Remote::new(f, facilitator_http.clone()).map_err(|why| BuildError::Facilitator {
                network: f.network.clone(),
                why,
            })?;
        settlers.insert(f.chain_id, Arc::new(Settler::Remote(remote)));
    }
    Ok(settlers)
}

/// The caller's address: the TCP peer, or — only when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
fn client_ip(s: &Session, trusted: &[std::net::IpAddr]) -> String {
    let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let Some(peer) = peer else {
        return "unknown".into();
    };
    if !trusted.contains(&peer) {
        return peer.to_string();
    }
    let xff = s.req_header().headers.get_all("x-forwarded-for");
    let hops: Vec<std::net::IpAddr> = xff
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(&peer)
        .to_string()
}

fn resource_url(s: &Session) -> String {
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
    format!("{proto}://{host}{}", req.uri.path())
}

async fn write(s: &mut Session, reply: Reply, request_id: &str) -> pingora_core::Result<()> {
    let mut h = ResponseHeader::build(reply.status, Some(reply.headers.len() + 5))?;
    h.insert_header("Content-Type", reply.content_type)?;
    h.insert_header("Cache-Control", "no-store")?;
    h.insert_header("Vary", "PAYMENT-SIGNATURE, X-PAYMENT")?;
    h.insert_header("X-Request-Id", request_id)?;
    h.insert_header("Content-Length", reply.body.len().to_string())?;
    for (k, v) in reply.headers {
        h.insert_header(k, v)?;
    }
    s.write_response_header(Box::new(h), false).await?;
    s.write_response_body(Some(reply.body), true).await
}

#[async_trait]
impl ProxyHttp for Paywall {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: new_id("req"),
            started: Instant::now(),
        }
    }

    /// Paid routes are answered here, whole; free routes return `false` and are proxied.
    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> pingora_core::Result<bool> {
        let method = s.req_header().method.as_str().to_string();
        let path = s.req_header().uri.path().to_string();
        let Some(route) = self.route(&method, &path) else {
            if self.unknown == UnknownRoutes::Proxy {
                return Ok(false);
            }
            let reply = Reply::error(
                404,
                "no_such_route",
                format!("{method} {path} is not served here"),
            );
            write(s, reply, &ctx.request_id).await?;
            return Ok(true);
        };
        if route.offers.is_empty() {
            return Ok(false);
        }
        let client = client_ip(s, &self.trusted_proxies);
        let span = tracing::info_span!(
            "paid_request",
            otel.kind = "server",
            request_id = %ctx.request_id,
            client = %client,
            route = %route.id(),
            payment_id = tracing::field::Empty,
            payer = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        crate::telemetry::otlp::adopt_parent(&span, &s.req_header().headers);
        let answer = self.paid(s, route, ctx).instrument(span.clone()).await;
        let _entered = span.enter();
        match answer {
            Some(reply) => {
                span.record("http.response.status_code", reply.status);
                if let Err(e) = write(s, reply, &ctx.request_id).await {
                    info!(request_id = %ctx.request_id, "the buyer left before the answer was written: {e}");
                }
            }
            None => s.set_keepalive(None),
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.addr,
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut pingora_http::RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora_core::Result<()> {
        req.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        req.remove_header(HEADER_PAYMENT_SIGNATURE);
        req.remove_header(HEADER_X_PAYMENT);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_be_json_objects_with_a_strategy() {
        assert!(check_answer(br#"{"strategy":{"summary":"x"}}"#, true).is_ok());
        assert!(check_answer(br#"{"strategy":{"summ"#, true).is_err());
        assert!(check_answer(b"<html>", true).is_err());
        assert!(check_answer(br#"{"advice":"x"}"#, true).is_err());
        assert!(check_answer(br#"{"advice":"x"}"#, false).is_ok());
        assert!(check_answer(b"[]", false).is_err());
    }
}
