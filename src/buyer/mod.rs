//! The buyer's paying proxy: a pingora `ServeHttp` app on a local port that roma-01 uses as
//! its strategy endpoint (`POST /x402`) or as an HTTP proxy (absolute-form URL of a seller
//! named in the configuration).
//!
//! One logical call, top to bottom: pick sellers by priority (skipping open breakers) → ask →
//! on 402 keep the options the spend policy allows → reserve budget → sign ONE authorization →
//! send it, resending the same one on network trouble (never a second signature) → commit the
//! budget on a settled answer, release it only when the chain proves nothing was paid → ledger →
//! answer roma-01 with the seller's body unchanged plus `X-Payment-*` headers; or the next
//! seller; or the fallback.

pub mod client;
pub mod config;
pub mod ledger;
pub mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, B256, U256};
use alloy_provider::{DynProvider, Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_sol_types::SolCall;
use async_trait::async_trait;
use bytes::Bytes;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{Value, json};
use tracing::{Instrument, info, warn};

use self::config::{FallbackMode, Outbound, Seller};
use self::ledger::{Entry, Ledger};
use crate::audit::{Event, Journal};
use crate::breaker::{self, Breaker};
use crate::evm::typed::IEip3009Token as Token;
use crate::http::{BodyError, Reply, read_body};
use crate::store::BudgetStore;
use crate::telemetry;
use crate::util::{new_id, now_secs, rfc3339};
use crate::x402::codec;
use crate::x402::types::{Authorization, PaymentRequirements, SettleResponse};

/// Most bytes of a request body roma-01 may send.
const MAX_BODY: usize = 64 * 1024;
/// Time kept for the local fallback out of the whole-call deadline.
/// Largest answer read from a seller or the local fallback.
pub const MAX_SELLER_ANSWER: usize = 1024 * 1024;
const FALLBACK_RESERVE: Duration = Duration::from_millis(1_500);

/// What one seller attempt came to.
#[derive(Debug, Clone)]
struct Attempt {
    seller: String,
    outcome: &'static str,
    detail: String,
}

/// A successful answer from a seller.
struct Answer {
    seller: String,
    body: Bytes,
    receipt_header: Option<(&'static str, String)>,
    paid: Option<Paid>,
}

/// What was paid for an answer.
struct Paid {
    tx: String,
    amount: U256,
    asset: Address,
    network: String,
    pay_to: Address,
}

/// One logical call: its id and when it started.
struct Call<'a> {
    id: &'a str,
    started: Instant,
    /// roma-01's account owner as the policy writes it down (`outbound.owners`).
    owner: Option<&'a str>,
}

/// A reservation of budget for one signed authorization.
struct Reservation {
    key: String,
    amount: u64,
}

/// The paying proxy.
pub struct Payer {
    cfg: Outbound,
    http: reqwest::Client,
    store: Arc<dyn BudgetStore>,
    chains: HashMap<String, DynProvider>,
    breakers: Mutex<HashMap<String, Breaker>>,
    ledger: Arc<Ledger>,
    journal: Option<Arc<Journal>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("store: {0}")]
    Store(String),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("outbound.chains: RPC URL `{0}` is not valid")]
    Rpc(String),
}

impl Payer {
    pub fn new(
        cfg: Outbound,
        store_spec: &str,
        journal: Option<Arc<Journal>>,
    ) -> Result<Self, BuildError> {
        let store = crate::store::open(store_spec).map_err(|e| BuildError::Store(e.to_string()))?;
        // No redirects: a seller's 3xx must never lead the payment somewhere else.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let mut chains = HashMap::new();
        for (network, url) in &cfg.chains {
            let url = url.parse().map_err(|_| BuildError::Rpc(url.clone()))?;
            chains.insert(
                network.clone(),
                ProviderBuilder::new()
                    .disable_recommended_fillers()
                    .connect_http(url)
                    .erased(),
            );
        }
        let breakers = cfg
            .sellers
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Breaker::new(
                        cfg.breaker.failure_threshold,
                        Duration::from_secs(cfg.breaker.open_seconds),
                    ),
                )
            })
            .collect();
        let ledger = Arc::new(Ledger::new(cfg.ledger_path.clone()));
        Ok(Payer {
            cfg,
            http,
            store: store as Arc<dyn BudgetStore>,
            chains,
            breakers: Mutex::new(breakers),
            ledger,
            journal,
        })
    }

    fn breaker<T>(&self, name: &str, f: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.get_mut(name)?;
        let out = f(b);
        let state = match b.label() {
            "closed" => 0,
            "half_open" => 1,
            _ => 2,
        };
        telemetry::with(|m| m.breaker_state.with_label_values(&[name]).set(state));
        Some(out)
    }

    /// One logical call from roma-01.
    async fn call(
        &self,
        body: Bytes,
        sellers: Vec<&Seller>,
        call_id: &str,
        owner: Option<&str>,
    ) -> Response<Vec<u8>> {
        let started = Instant::now();
        let total = self.cfg.timeout;
        let reserve = if self.cfg.fallback.mode == FallbackMode::Local {
            FALLBACK_RESERVE.min(total / 2)
        } else {
            Duration::ZERO
        };
        let sellers_deadline = started + total - reserve;
        let mut attempts: Vec<Attempt> = Vec::new();
        for seller in sellers {
            if Instant::now() >= sellers_deadline {
                attempts.push(Attempt {
                    seller: seller.name.clone(),
                    outcome: "skipped",
                    detail: "no time left".into(),
                });
                continue;
            }
            if self.breaker(&seller.name, |b| b.allow(Instant::now())) == Some(false) {
                attempts.push(Attempt {
                    seller: seller.name.clone(),
                    outcome: "breaker_open",
                    detail: "skipped while its breaker is open".into(),
                });
                continue;
            }
            let span = tracing::info_span!(
                "seller_attempt",
                otel.kind = "client",
                seller = %seller.name,
                url = %seller.url,
                outcome = tracing::field::Empty,
            );
            let result = self
                .attempt(
                    seller,
                    &body,
                    sellers_deadline,
                    &Call {
                        id: call_id,
                        started,
                        owner,
                    },
                )
                .instrument(span.clone())
                .await;
            span.record(
                "outcome",
                match &result {
                    Ok(_) => "answered",
                    Err((a, _)) => a.outcome,
                },
            );
            match result {
                Ok(answer) => {
                    self.breaker(&seller.name, |b| b.success());
                    return self.answer(answer, call_id, &attempts);
                }
                Err((a, trips)) => {
                    warn!(call_id, seller = %seller.name, outcome = a.outcome, "seller attempt failed: {}", a.detail);
                    if trips {
                        self.breaker(&seller.name, |b| b.failure(Instant::now()));
                    } else {
                        // A policy refusal says nothing about the seller's health; free a probe slot.
                        self.breaker(&seller.name, |b| {
                            if matches!(b.state, breaker::State::HalfOpen { .. }) {
                                b.success()
                            }
                        });
                    }
                    attempts.push(a);
                }
            }
        }
        self.fallback(body, call_id, owner, attempts, started + total)
            .await
    }

    /// Ask one seller, paying if it asks and the policy allows.
    async fn attempt(
        &self,
        seller: &Seller,
        body: &Bytes,
        deadline: Instant,
        call: &Call<'_>,
    ) -> Result<Answer, (Attempt, bool)> {
        let call_id = call.id;
        let fail = |outcome: &'static str, detail: String, trips: bool| {
            Err((
                Attempt {
                    seller: seller.name.clone(),
                    outcome,
                    detail,
                },
                trips,
            ))
        };
        let first = self.send(seller, body, None, deadline).await;
        let (status, headers, bytes) = match first {
            Ok(r) => r,
            Err(e) => return fail(e.0, e.1, true),
        };
        if (200..300).contains(&status) {
            return match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v.is_object() => Ok(Answer {
                    seller: seller.name.clone(),
                    body: bytes,
                    receipt_header: None,
                    paid: None,
                }),
                _ => fail(
                    "bad_answer",
                    "the seller answered without asking for payment, but not with JSON".into(),
                    true,
                ),
            };
        }
        if status != 402 {
            return fail(
                "seller_error",
                format!("the seller answered {status} to an unpaid request"),
                true,
            );
        }
        let header = headers
            .get(crate::x402::HEADER_PAYMENT_REQUIRED)
            .and_then(|v| v.to_str().ok());
        let offers = client::parse_all(header, &bytes);
        let offer = match policy::choose(seller, &offers) {
            Ok(o) => o,
            Err(r) => return fail(r.code, r.message, false),
        };
        let req = &offer.requirement;
        // Budget before the signature: no budget, no signature.
        let Some(limit) = self
            .cfg
            .budgets
            .get(&(req.network.clone(), req.asset))
            .copied()
        else {
            return fail(
                "no_budget",
                format!(
                    "no daily budget is configured for {} on {}",
                    req.asset, req.network
                ),
                false,
            );
        };
        let Ok(amount) = u64::try_from(req.amount) else {
            return fail(
                "price_above_cap",
                "the price does not fit a budget".into(),
                false,
            );
        };
        let day = rfc3339(now_secs());
        // Per wallet, asset and UTC day: replicas sharing the store share the budget.
        let key = format!(
            "{:#x}:{}:{:#x}:{}",
            self.cfg.signer.address(),
            req.network,
            req.asset,
            &day[..10]
        );
        match self
            .store
            .reserve(&key, amount, limit, Duration::from_secs(2 * 86_400))
            .await
        {
            Ok(true) => {
                if let Ok(spent) = self.store.spent(&key).await {
                    let left = limit.saturating_sub(spent) as i64;
                    telemetry::with(|m| {
                        m.budget_remaining
                            .with_label_values(&[&req.asset.to_string()])
                            .set(left)
                    });
                }
            }
            Ok(false) => {
                let spent = self.store.spent(&key).await.unwrap_or(0);
                return fail(
                    "budget_exhausted",
                    format!(
                        "today's budget {limit} is spent down to {}; this call costs {amount}",
                        limit.saturating_sub(spent)
                    ),
                    false,
                );
            }
            Err(e) => {
                return fail(
                    "store_unavailable",
                    format!("the budget could not be reserved safely: {e}"),
                    false,
                );
            }
        }
        let reservation = Reservation { key, amount };
        let (name, value, auth) = match client::payment_with(
            &self.cfg.signer,
            &offer,
            self.cfg.max_authorization.as_secs(),
        ) {
            Ok(x) => x,
            Err(e) => {
                self.release(&reservation).await;
                return fail("sign_failed", e.to_string(), false);
            }
        };
        info!(call_id, seller = %seller.name, amount = %req.amount, network = %req.network, pay_to = %req.pay_to, nonce = %auth.nonce, "paying");
        // Send the one authorization; resend the same one after network trouble or a 5xx.
        let mut retries_left = self.cfg.retry.attempts;
        let mut last = String::new();
        loop {
            if Instant::now() >= deadline {
                break;
            }
            match self
                .send(seller, body, Some((name, &value)), deadline)
                .await
            {
                Ok((200..=299, headers, bytes)) => {
                    let receipt = [
                        crate::x402::HEADER_PAYMENT_RESPONSE,
                        crate::x402::HEADER_X_PAYMENT_RESPONSE,
                    ]
                    .iter()
                    .find_map(|h| {
                        headers
                            .get(*h)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| (*h, v.to_string()))
                    });
                    let settled = receipt.as_ref().and_then(|(_, v)| {
                        codec::decode::<SettleResponse>(v.as_bytes(), 16 * 1024).ok()
                    });
                    let body_json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let tx = settled
                        .as_ref()
                        .filter(|s| s.success)
                        .map(|s| s.transaction.clone())
                        .or_else(|| {
                            body_json["payment"]["receiptId"]
                                .as_str()
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    let paid = Paid {
                        tx: tx.clone(),
                        amount: req.amount,
                        asset: req.asset,
                        network: req.network.clone(),
                        pay_to: req.pay_to,
                    };
                    self.record(seller, call, "paid", &paid, &auth, Some(&body_json))
                        .await;
                    return Ok(Answer {
                        seller: seller.name.clone(),
                        body: bytes,
                        receipt_header: receipt.map(|(n, v)| (crate::x402::receipt_name(n), v)),
                        paid: Some(paid),
                    });
                }
                Ok((402, _, bytes)) => {
                    // A paid attempt answered 402 is never paid again automatically.
                    let why = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    let charged = self
                        .settle_check(req, &auth, &reservation, seller, call)
                        .await;
                    return fail(
                        if charged {
                            "paid_no_delivery"
                        } else {
                            "payment_refused"
                        },
                        format!("the seller refused the payment: {why}"),
                        true,
                    );
                }
                Ok((409, headers, _)) | Ok((503, headers, _))
                    if retry_after(&headers).is_some() =>
                {
                    // In flight elsewhere or settlement pending: same authorization, after a pause.
                    let pause = retry_after(&headers).unwrap_or(1).min(2);
                    last = "seller busy with this payment".into();
                    tokio::time::sleep(
                        Duration::from_secs(pause)
                            .min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                }
                Ok((status, _, bytes)) => {
                    last = format!(
                        "{status} {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    );
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                    tokio::time::sleep(self.backoff(retries_left)).await;
                }
                Err((_, detail)) => {
                    last = detail;
                    if retries_left == 0 {
                        break;
                    }
                    retries_left -= 1;
                    tokio::time::sleep(self.backoff(retries_left)).await;
                }
            }
        }
        // Outcome unknown: the chain decides whether we paid.
        let charged = self
            .settle_check(req, &auth, &reservation, seller, call)
            .await;
        fail(
            if charged { "paid_no_answer" } else { "failed" },
            format!("no usable answer after the payment was sent: {last}"),
            true,
        )
    }

    fn backoff(&self, retries_left: u32) -> Duration {
        let n = self.cfg.retry.attempts.saturating_sub(retries_left).min(6);
        Duration::from_millis(self.cfg.retry.backoff_ms.saturating_mul(1 << n))
    }

    /// Did the authorization move money? Commit if so; release only if the chain says no and
    /// the authorization can no longer be used; otherwise keep it reserved until it expires.
    async fn settle_check(
        &self,
        req: &PaymentRequirements,
        auth: &Authorization,
        r: &Reservation,
        seller: &Seller,
        call: &Call<'_>,
    ) -> bool {
        let call_id = call.id;
        let (network, asset) = (req.network.as_str(), req.asset);
        let Some(chain) = self.chains.get(network).cloned() else {
            warn!(call_id, %network, "no RPC configured for this network: the budget stays reserved for this authorization");
            return false;
        };
        match authorization_used(&chain, asset, auth.from, auth.nonce).await {
            Some(true) => {
                let paid = Paid {
                    tx: String::new(),
                    amount: auth.value,
                    asset,
                    network: network.into(),
                    pay_to: auth.to,
                };
                self.record(seller, call, "paid_no_answer", &paid, auth, None)
                    .await;
                true
            }
            Some(false) => {
                // Still usable until validBefore: release only once it has expired unused.
                let store = self.store.clone();
                let (key, amount) = (r.key.clone(), r.amount);
                let valid_before: u64 = auth.valid_before.try_into().unwrap_or(u64::MAX);
                let (from, nonce) = (auth.from, auth.nonce);
                let call = call_id.to_string();
                tokio::spawn(async move {
                    let wait = valid_before.saturating_sub(now_secs()) + 2;
                    tokio::time::sleep(Duration::from_secs(wait.min(3_600))).await;
                    match authorization_used(&chain, asset, from, nonce).await {
                        Some(false) => {
                            let _ = store.unreserve(&key, amount).await;
                            info!(call_id = %call, "authorization expired unused: budget released");
                        }
                        _ => {
                            warn!(call_id = %call, "authorization was used or state unknown: budget kept")
                        }
                    }
                });
                false
            }
            None => false,
        }
    }

    /// Journal an event; resolves once it is on disk (the fsync happens on the journal's
    /// writer thread, shared with whatever else is queued).
    async fn audit(&self, e: Event, tx: Option<&str>) {
        let Some(j) = &self.journal else { return };
        let e = match tx {
            Some(t) => e.tx(t),
            None => e,
        };
        if let Err(err) = j.append(e, now_secs()).await {
            warn!("audit journal write failed: {err}");
        }
    }

    async fn release(&self, r: &Reservation) {
        if let Err(e) = self.store.unreserve(&r.key, r.amount).await {
            warn!("budget not released: {e}");
        }
    }

    async fn record(
        &self,
        seller: &Seller,
        call: &Call<'_>,
        outcome: &str,
        p: &Paid,
        auth: &Authorization,
        body: Option<&Value>,
    ) {
        let (call_id, started) = (call.id, call.started);
        let meta = body.map(|b| &b["metadata"]);
        let e = Entry {
            time: rfc3339(now_secs()),
            call_id: call_id.to_string(),
            seller: seller.name.clone(),
            url: seller.url.to_string(),
            outcome: outcome.into(),
            amount: p.amount.to_string(),
            asset: p.asset.to_string(),
            network: p.network.clone(),
            payer: auth.from.to_string(),
            pay_to: p.pay_to.to_string(),
            nonce: format!("{:#x}", auth.nonce),
            tx: (!p.tx.is_empty()).then(|| p.tx.clone()),
            remote_request_id: meta.and_then(|m| m["requestId"].as_str().map(str::to_string)),
            remote_payment_id: meta.and_then(|m| m["paymentId"].as_str().map(str::to_string)),
            disclaimer: body.and_then(|b| b["disclaimer"].as_str().map(str::to_string)),
            latency_ms: started.elapsed().as_millis() as u64,
            owner: call.owner.map(str::to_string),
        };
        info!(call_id, seller = %seller.name, outcome, tx = %p.tx, amount = %p.amount,
            remote_request_id = ?e.remote_request_id, remote_payment_id = ?e.remote_payment_id, "ledger");
        let spent = u64::try_from(p.amount).unwrap_or(u64::MAX);
        telemetry::with(|m| {
            m.buyer_spend
                .with_label_values(&[&e.asset, &e.seller])
                .inc_by(spent)
        });
        self.audit(
            Event::new("buyer_paid")
                .payer(&e.payer)
                .with("callId", e.call_id.clone())
                .with("owner", e.owner.clone())
                .with("outcome", e.outcome.clone())
                .with("seller", e.seller.clone())
                .with("url", e.url.clone())
                .with("amount", e.amount.clone())
                .with("asset", e.asset.clone())
                .with("network", e.network.clone())
                .with("remoteRequestId", e.remote_request_id.clone())
                .with("remotePaymentId", e.remote_payment_id.clone()),
            e.tx.as_deref(),
        )
        .await;
        // The ledger's fsync runs on the blocking pool, not on a request thread.
        let ledger = self.ledger.clone();
        let written = tokio::task::spawn_blocking(move || ledger.append(&e)).await;
        if let Err(err) = written
            .map_err(|j| j.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            warn!(call_id, "ledger write failed: {err}");
        }
    }

    /// POST to a seller; `Err((outcome, detail))` on network trouble.
    async fn send(
        &self,
        seller: &Seller,
        body: &Bytes,
        payment: Option<(&str, &str)>,
        deadline: Instant,
    ) -> Result<(u16, reqwest::header::HeaderMap, Bytes), (&'static str, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(("timeout", "the call's deadline passed".into()));
        }
        let mut req = self
            .http
            .post(seller.url.clone())
            .timeout(left)
            .header("Content-Type", "application/json")
            .body(body.clone());
        for (k, v) in crate::telemetry::otlp::outgoing(&tracing::Span::current(), None) {
            req = req.header(k, v);
        }
        if let Some((k, v)) = payment {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = crate::http::read_capped(resp, MAX_SELLER_ANSWER)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::Http(e) => classify(&e),
                too_large => ("answer_too_large", format!("the seller's {too_large}")),
            })?;
        Ok((status, headers, bytes))
    }

    fn answer(&self, a: Answer, call_id: &str, attempts: &[Attempt]) -> Response<Vec<u8>> {
        let mut b = Response::builder()
            .status(200)
            .header("Content-Type", "application/json")
            .header("Cache-Control", "no-store")
            .header("X-Call-Id", call_id)
            .header("X-Payment-Seller", a.seller.as_str())
            .header(
                "X-Strategy-Source",
                if a.paid.is_some() { "paid" } else { "free" },
            );
        if let Some(p) = &a.paid {
            b = b
                .header("X-Payment-Tx", p.tx.as_str())
                .header("X-Payment-Amount", p.amount.to_string())
                .header("X-Payment-Asset", p.asset.to_string())
                .header("X-Payment-Network", p.network.as_str())
                .header("X-Payment-Payer", self.cfg.signer.address().to_string());
        }
        if let Some((name, value)) = &a.receipt_header {
            b = b.header(*name, value.as_str());
        }
        if !attempts.is_empty() {
            b = b.header("X-Attempts", summary(attempts));
        }
        b.body(a.body.to_vec())
            .unwrap_or_else(|_| plain(500, "response could not be built"))
    }

    async fn fallback(
        &self,
        body: Bytes,
        call_id: &str,
        owner: Option<&str>,
        attempts: Vec<Attempt>,
        deadline: Instant,
    ) -> Response<Vec<u8>> {
        let mode = match self.cfg.fallback.mode {
            FallbackMode::Local => "local",
            FallbackMode::Wait => "wait",
            FallbackMode::Error => "error",
        };
        telemetry::with(|m| m.fallbacks.with_label_values(&[mode]).inc());
        let detail: Vec<Value> = attempts
            .iter()
            .map(|a| json!({"seller": a.seller, "outcome": a.outcome, "detail": a.detail}))
            .collect();
        match (self.cfg.fallback.mode, &self.cfg.fallback_url) {
            (FallbackMode::Local, Some(url)) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(200));
                let mut req = self
                    .http
                    .post(url.clone())
                    .timeout(left)
                    .header("Content-Type", "application/json");
                for (k, v) in crate::telemetry::otlp::outgoing(&tracing::Span::current(), None) {
                    req = req.header(k, v);
                }
                if let Some(secret) = &self.cfg.fallback_secret {
                    req = req.header(crate::advisor::SECRET_HEADER, secret.expose());
                }
                let read = match req.body(body).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        crate::http::read_capped(resp, MAX_SELLER_ANSWER)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(resp) => Err(format!("answered {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                match read {
                    Ok(bytes) => {
                        info!(call_id, attempts = %summary(&attempts), "answered by the local fallback");
                        self.audit(
                            Event::new("fallback")
                                .with("callId", call_id)
                                .with("owner", owner)
                                .with("attempts", summary(&attempts))
                                .with("source", url.to_string()),
                            None,
                        )
                        .await;
                        Response::builder()
                            .status(200)
                            .header("Content-Type", "application/json")
                            .header("Cache-Control", "no-store")
                            .header("X-Call-Id", call_id)
                            .header("X-Strategy-Source", "fallback")
                            .header("X-Attempts", summary(&attempts))
                            .body(bytes.to_vec())
                            .unwrap_or_else(|_| plain(500, "response could not be built"))
                    }
                    Err(why) => error_json(
                        502,
                        "fallback_failed",
                        &format!("no seller answered and the local fallback failed ({why})"),
                        call_id,
                        detail,
                        None,
                    ),
                }
            }
            (FallbackMode::Wait, _) => error_json(
                503,
                "sellers_unavailable",
                "no seller could answer now; nothing more was paid. Retry after the delay, or act manually.",
                call_id,
                detail,
                Some(self.cfg.fallback.retry_after_seconds),
            ),
            _ => error_json(
                502,
                "no_seller_answered",
                "no configured seller gave a usable answer; see `attempts`",
                call_id,
                detail,
                None,
            ),
        }
    }

    /// Sellers for a request: the configured list for `/x402`, or the one named by an
    /// absolute-form URL. `Err` carries the answer for anything else.
    fn route<'a>(
        &'a self,
        raw_path: &str,
        path: &str,
    ) -> Result<Vec<&'a Seller>, Box<Response<Vec<u8>>>> {
        if raw_path.starts_with("http://") || raw_path.starts_with("https://") {
            let target = reqwest::Url::parse(raw_path)
                .map_err(|_| boxed(400, "not a valid absolute URL"))?;
            return self
                .cfg
                .sellers
                .iter()
                .find(|s| s.url == target)
                .map(|s| vec![s])
                .ok_or_else(|| boxed(403, "that URL is not a configured seller; only sellers named in the configuration are paid"));
        }
        if path == "/x402" {
            return Ok(self.cfg.sellers.iter().collect());
        }
        Err(boxed(
            404,
            "use POST /x402, or this sidecar as an HTTP proxy for a configured seller",
        ))
    }
}

/// `authorizationState(from, nonce)`; `None` when the chain cannot be read.
async fn authorization_used(
    chain: &DynProvider,
    asset: Address,
    from: Address,
    nonce: B256,
) -> Option<bool> {
    let tx = TransactionRequest::default().with_to(asset).with_input(
        Token::authorizationStateCall {
            authorizer: from,
            nonce,
        }
        .abi_encode(),
    );
    let out = chain.call(tx).await.ok()?;
    Token::authorizationStateCall::abi_decode_returns(&out).ok()
}

fn classify(e: &reqwest::Error) -> (&'static str, String) {
    if e.is_timeout() {
        ("timeout", "the seller did not answer in time".into())
    } else if e.is_connect() {
        ("unreachable", format!("the seller is unreachable: {e}"))
    } else {
        ("network_error", format!("the connection failed: {e}"))
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<u64> {
    h.get("retry-after")?.to_str().ok()?.trim().parse().ok()
}

fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}={}", a.seller, a.outcome))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plain(status: u16, message: &str) -> Response<Vec<u8>> {
    let code = match status {
        400 => "bad_request",
        403 => "seller_not_configured",
        404 => "no_such_route",
        413 => "body_too_large",
        _ => "error",
    };
    Reply::error(status, code, message).into_response()
}

fn boxed(status: u16, message: &str) -> Box<Response<Vec<u8>>> {
    Box::new(plain(status, message))
}

fn error_json(
    status: u16,
    code: &str,
    message: &str,
    call_id: &str,
    attempts: Vec<Value>,
    retry: Option<u64>,
) -> Response<Vec<u8>> {
    let mut body =
        json!({"error": code, "message": message, "callId": call_id, "attempts": attempts});
    if let Some(s) = retry {
        body["retryAfterSeconds"] = json!(s);
        body["action"] = json!("wait, or decide manually: no strategy advice is available");
    }
    let reply = Reply::json(status, &body)
        .with("X-Call-Id", call_id)
        .with("X-Strategy-Source", "none");
    match retry {
        Some(s) => reply.retry_after(s),
        None => reply,
    }
    .into_response()
}

async fn read_request(s: &mut ServerSession) -> Result<Bytes, Box<Response<Vec<u8>>>> {
    read_body(s, MAX_BODY).await.map_err(|e| match e {
        BodyError::TooLarge => boxed(413, "the request body is larger than 64 KiB"),
        BodyError::Unreadable => boxed(400, "the request body could not be read"),
    })
}

#[async_trait]
impl ServeHttp for Payer {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let mut r = self.respond(s).await;
        // A length lets roma-01's client keep the connection alive (else the body is
        // close-delimited and every call opens a new connection).
        let len = http::HeaderValue::from(r.body().len());
        r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
        r
    }
}

impl Payer {
    async fn respond(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let call_id = new_id("call");
        let raw = String::from_utf8_lossy(s.req_header().raw_path()).into_owned();
        let path = s.req_header().uri.path().to_string();
        let sellers = match self.route(&raw, &path) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let body = match read_request(s).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let request = match crate::advisor::parse(&body) {
            Ok(r) => r,
            Err(details) => {
                let b = json!({"error": "invalid_request", "message": "the body is not a valid StrategyRequest; nothing was paid", "details": details});
                return Response::builder()
                    .status(400)
                    .header("Content-Type", "application/json")
                    .body(b.to_string().into_bytes())
                    .unwrap_or_else(|_| Response::new(Vec::new()));
            }
        };
        let owner = request
            .account
            .owner
            .as_deref()
            .and_then(|o| self.cfg.owners.render(o));
        let span = tracing::info_span!(
            "buyer_call",
            otel.kind = "server",
            call_id = %call_id,
            owner = owner.as_deref(),
            http.response.status_code = tracing::field::Empty,
            strategy_source = tracing::field::Empty,
        );
        crate::telemetry::otlp::adopt_parent(&span, &s.req_header().headers);
        let r = self
            .call(body, sellers, &call_id, owner.as_deref())
            .instrument(span.clone())
            .await;
        span.record("http.response.status_code", r.status().as_u16());
        if let Some(src) = r
            .headers()
            .get("X-Strategy-Source")
            .and_then(|v| v.to_str().ok())
        {
            span.record("strategy_source", src);
        }
        r
    }
}
