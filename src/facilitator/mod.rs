//! The standard x402 facilitator HTTP API, served from the sidecar's own `local` facilitators:
//! `GET /supported`, `POST /verify` and `POST /settle`, so other resource servers (this
//! project's `kind: http` facilitator client or any third-party x402 server) can have their
//! payments verified and settled by this process's settler keys.
//!
//! Request checking is pure ([`check`]): version, shapes, scheme, network, the payload's
//! `accepted` against the resource server's requirements, the authorization (recipient, value,
//! time window) and the EIP-712 signature. Only the nonce/balance reads and the settlement
//! touch the chain. A payment that is not valid is a 200 answer with `isValid: false` /
//! `success: false` and a reason code, as the spec's examples do; only a body that is not a
//! facilitator request at all gets a 4xx.

pub mod config;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use alloy_primitives::{Address, B256, Signature};
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::audit::{Event, Journal};
use crate::evm::{Chain, SettleOutcome, typed};
use crate::http::{BodyError, Reply, read_body};
use crate::telemetry;
use crate::util::now_secs;
use crate::x402::matching::{Offer, check_authorization};
use crate::x402::networks;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::*;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("facilitator for {network}: {why}")]
    Chain { network: String, why: String },
    #[error(
        "no `kind: local` entry under `facilitators`: there is nothing to verify or settle with"
    )]
    NoNetwork,
}

/// A request that is not a facilitator request at all (answered with a 4xx, not a verdict).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request body is larger than 64 KiB")]
    TooLarge,
    #[error("the request body could not be read")]
    Unreadable,
    #[error(
        "the body is not a facilitator request {{x402Version, paymentPayload, paymentRequirements}}: {0}"
    )]
    BadJson(String),
}

impl RequestError {
    fn status(&self) -> u16 {
        match self {
            RequestError::TooLarge => 413,
            RequestError::Unreadable | RequestError::BadJson(_) => 400,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RequestError::TooLarge => "body_too_large",
            RequestError::Unreadable | RequestError::BadJson(_) => "invalid_request",
        }
    }
}

/// Parse a request body.
pub fn parse_request(body: &[u8]) -> Result<FacilitatorRequest, RequestError> {
    if body.len() > MAX_BODY {
        return Err(RequestError::TooLarge);
    }
    serde_json::from_slice(body).map_err(|e| RequestError::BadJson(e.to_string()))
}

/// A payment that passed every check that needs no chain.
#[derive(Debug, Clone)]
pub struct Checked {
    pub version: u8,
    /// The network as the requirements name it (a v1 name for v1), echoed in answers.
    pub network: String,
    /// The requirement as an offer (CAIP-2 network, EIP-712 domain from `extra`).
    pub offer: Offer,
    pub auth: Authorization,
    pub sig: Signature,
}

impl Checked {
    pub fn payer(&self) -> Address {
        self.auth.from
    }
}

/// Why a payment is not valid, with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub rejection: Rejection,
    /// The authorization's `from` as the payload states it, when it names one.
    pub payer: Option<Address>,
    /// The network as the requirements name it, or `""` when they did not say.
    pub network: String,
}

/// Every check of a facilitator request that needs no chain, in order. `served` says whether a
/// CAIP-2 network is one this facilitator settles on.
pub fn check(
    req: &FacilitatorRequest,
    served: &dyn Fn(&str) -> bool,
    now: u64,
) -> Result<Checked, Invalid> {
    let mut network = req
        .payment_requirements
        .get("network")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut payer = req
        .payment_payload
        .pointer("/payload/authorization/from")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Address>().ok());
    let fail = |reason: Reason, message: String, payer: Option<Address>, network: &str| Invalid {
        rejection: Rejection::new(reason, message),
        payer,
        network: network.to_string(),
    };

    // 1. Version and shapes.
    let version = req.x402_version;
    let parsed = match version {
        2 => {
            let p: PaymentPayload =
                serde_json::from_value(req.payment_payload.clone()).map_err(|e| {
                    fail(
                        Reason::InvalidPayload,
                        format!(
                            "paymentPayload is not an x402 v2 `exact` EVM payload: {}",
                            redact_long_hex(&e.to_string())
                        ),
                        payer,
                        &network,
                    )
                })?;
            let (scheme, net) = (p.accepted.scheme.clone(), p.accepted.network.clone());
            (p.payload, Some(p.accepted), scheme, net, p.x402_version)
        }
        1 => {
            let p: PaymentPayloadV1 =
                serde_json::from_value(req.payment_payload.clone()).map_err(|e| {
                    fail(
                        Reason::InvalidPayload,
                        format!(
                            "paymentPayload is not an x402 v1 `exact` EVM payload: {}",
                            redact_long_hex(&e.to_string())
                        ),
                        payer,
                        &network,
                    )
                })?;
            let net = networks::from_v1_name(&p.network).unwrap_or_else(|| p.network.clone());
            (p.payload, None, p.scheme, net, p.x402_version)
        }
        v => {
            return Err(fail(
                Reason::InvalidX402Version,
                format!("x402Version {v} is not supported; use 1 or 2"),
                payer,
                &network,
            ));
        }
    };
    let (payload, accepted, payload_scheme, payload_network, inner) = parsed;
    if inner != version {
        return Err(fail(
            Reason::InvalidX402Version,
            format!("paymentPayload.x402Version is {inner} but the request says {version}"),
            payer,
            &network,
        ));
    }
    payer = Some(payload.authorization.from);
    let requirements = parse_requirements(version, &req.payment_requirements)
        .map_err(|m| fail(Reason::RequirementsMismatch, m, payer, &network))?;
    if network.is_empty() {
        network = requirements.network.clone();
    }
    let fail = |reason: Reason, message: String| Invalid {
        rejection: Rejection::new(reason, message),
        payer,
        network: network.clone(),
    };

    // 2. Scheme.
    for (whose, scheme) in [
        ("paymentRequirements", &requirements.scheme),
        ("paymentPayload", &payload_scheme),
    ] {
        if scheme != "exact" {
            return Err(fail(
                Reason::UnsupportedScheme,
                format!("{whose} names scheme `{scheme}`; this facilitator handles `exact`"),
            ));
        }
    }

    // 3. Network: one served here, and the same in the payload.
    let chain_id = networks::chain_id(&requirements.network)
        .filter(|_| served(&requirements.network))
        .ok_or_else(|| {
            fail(
                Reason::NetworkMismatch,
                format!(
                    "network `{network}` is not settled by this facilitator; see GET /supported"
                ),
            )
        })?;
    if payload_network != requirements.network {
        return Err(fail(
            Reason::NetworkMismatch,
            format!(
                "the payment is for network `{payload_network}`, the requirements for `{}`",
                requirements.network
            ),
        ));
    }

    // 4. v2: what the client accepted is what the resource server requires.
    if let Some(acc) = &accepted {
        if acc.asset != requirements.asset {
            return Err(fail(
                Reason::AssetMismatch,
                format!(
                    "the payment accepted asset {}, the requirements ask for {}",
                    acc.asset, requirements.asset
                ),
            ));
        }
        if acc.pay_to != requirements.pay_to {
            return Err(fail(
                Reason::RecipientMismatch,
                format!(
                    "the payment accepted payTo {}, the requirements pay {}",
                    acc.pay_to, requirements.pay_to
                ),
            ));
        }
        if acc.amount != requirements.amount {
            return Err(fail(
                Reason::ValueMismatch,
                format!(
                    "the payment accepted amount {}, the requirements ask for {}",
                    acc.amount, requirements.amount
                ),
            ));
        }
    }

    // 5. The authorization against the requirement.
    let extra = requirements.extra.as_ref().and_then(Value::as_object);
    let field = |name: &str| {
        extra
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (Some(eip712_name), Some(eip712_version)) = (field("name"), field("version")) else {
        return Err(fail(
            Reason::RequirementsMismatch,
            "paymentRequirements.extra must carry the token's EIP-712 domain `name` and `version` (e.g. USDC / 2)".into(),
        ));
    };
    let offer = Offer {
        scheme: "exact".into(),
        network: requirements.network.clone(),
        chain_id,
        asset: requirements.asset,
        pay_to: requirements.pay_to,
        amount: requirements.amount,
        max_timeout_seconds: requirements.max_timeout_seconds,
        decimals: 6,
        eip712_name,
        eip712_version,
        facilitator: String::new(),
    };
    let auth = payload.authorization;
    check_authorization(&offer, &auth, now).map_err(|r| fail(r.reason, r.message))?;

    // 6. The signature recovers the payer in the token's domain on this chain.
    let domain = typed::domain(
        &offer.eip712_name,
        &offer.eip712_version,
        chain_id,
        offer.asset,
    );
    let sig = typed::verify_signature(&auth, &payload.signature, &domain)
        .map_err(|r| fail(r.reason, r.message))?;
    Ok(Checked {
        version,
        network,
        offer,
        auth,
        sig,
    })
}

/// Decode errors may quote the offending value: hex longer than a nonce (a signature) is cut,
/// so neither the answer nor the log carries one.
fn redact_long_hex(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() > 66 {
            out.push_str(&run[..10]);
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for ch in msg.chars() {
        if ch.is_ascii_hexdigit() || (ch == 'x' && run == "0") {
            run.push(ch);
        } else {
            flush(&mut run, &mut out);
            out.push(ch);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The resource server's requirement in v2 form (v1's `maxAmountRequired` and network name
/// converted).
fn parse_requirements(version: u8, raw: &Value) -> Result<PaymentRequirements, String> {
    if version == 1
        && let Ok(r) = serde_json::from_value::<PaymentRequirementsV1>(raw.clone())
    {
        return Ok(PaymentRequirements {
            network: networks::from_v1_name(&r.network).unwrap_or(r.network),
            scheme: r.scheme,
            amount: r.max_amount_required,
            asset: r.asset,
            pay_to: r.pay_to,
            max_timeout_seconds: r.max_timeout_seconds,
            extra: r.extra,
        });
    }
    serde_json::from_value::<PaymentRequirements>(raw.clone()).map_err(|e| {
        let shape = if version == 1 {
            "x402 v1 requirements (maxAmountRequired, resource, description, mimeType, payTo, maxTimeoutSeconds, asset)"
        } else {
            "x402 v2 requirements (scheme, network, amount, asset, payTo, maxTimeoutSeconds, extra)"
        };
        format!("paymentRequirements are not {shape}: {e}")
    })
}

/// The `/verify` answer for a verdict.
pub fn verify_response(v: &Result<Checked, Invalid>) -> VerifyResponse {
    match v {
        Ok(c) => VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(c.payer().to_checksum(None)),
        },
        Err(i) => VerifyResponse {
            is_valid: false,
            invalid_reason: Some(i.rejection.reason.code().into()),
            invalid_message: Some(i.rejection.message.clone()),
            payer: i.payer.map(|a| a.to_checksum(None)),
        },
    }
}

/// The `/settle` answer for a payment refused before settlement.
pub fn refused_settle(i: &Invalid) -> SettleResponse {
    SettleResponse {
        success: false,
        error_reason: Some(i.rejection.reason.code().into()),
        payer: i.payer,
        transaction: String::new(),
        network: i.network.clone(),
        amount: None,
        error_message: Some(i.rejection.message.clone()),
    }
}

/// The `/settle` answer for a settlement's outcome.
pub fn settle_response(c: &Checked, outcome: &SettleOutcome) -> SettleResponse {
    let mut r = SettleResponse {
        success: false,
        error_reason: None,
        payer: Some(c.payer()),
        transaction: String::new(),
        network: c.network.clone(),
        amount: None,
        error_message: None,
    };
    match outcome {
        SettleOutcome::Settled { tx } => {
            r.success = true;
            r.transaction = format!("{tx:#x}");
            r.amount = Some(c.offer.amount.to_string());
        }
        SettleOutcome::Failed {
            reason,
            message,
            tx,
        } => {
            r.error_reason = Some(reason.code().into());
            r.error_message = Some(message.clone());
            r.transaction = tx.map(|t| format!("{t:#x}")).unwrap_or_default();
        }
        SettleOutcome::Pending { tx } => {
            r.error_reason = Some(Reason::SettlementPending.code().into());
            r.error_message = Some(format!(
                "transaction {tx:#x} was broadcast but has no receipt yet; look it up before paying again"
            ));
            r.transaction = format!("{tx:#x}");
        }
        // A local chain never reports this (only a remote facilitator's client does).
        SettleOutcome::Unknown { message } => {
            r.error_reason = Some(Reason::UnexpectedSettleError.code().into());
            r.error_message = Some(message.clone());
        }
    }
    r
}

/// One configured network.
struct Served {
    network: String,
    chain: Arc<Chain>,
}

/// The facilitator listener's app.
pub struct FacilitatorApp {
    /// By CAIP-2 network.
    chains: BTreeMap<String, Served>,
    /// Authorizations being settled right now, so a concurrent duplicate is refused here
    /// instead of costing a reverted transaction.
    settling: Mutex<HashSet<SettlingKey>>,
    /// Where settlement attempts are recorded (`facilitator_settled`, `…_failed`, `…_pending`).
    journal: Option<Arc<Journal>>,
}

impl FacilitatorApp {
    /// Record every settlement attempt that reached the chain in `journal`.
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
        self.journal = journal;
        self
    }

    /// One durable record per settlement attempt, under the same payment id the seller uses.
    async fn record(&self, c: &Checked, outcome: &SettleOutcome) {
        let Some(j) = &self.journal else { return };
        let (event, tx, reason, message) = match outcome {
            SettleOutcome::Settled { tx } => ("facilitator_settled", Some(*tx), None, None),
            SettleOutcome::Failed {
                reason,
                message,
                tx,
            } => (
                "facilitator_settle_failed",
                *tx,
                Some(reason.code()),
                Some(message.clone()),
            ),
            SettleOutcome::Pending { tx } => ("facilitator_settle_pending", Some(*tx), None, None),
            SettleOutcome::Unknown { message } => (
                "facilitator_settle_pending",
                None,
                None,
                Some(message.clone()),
            ),
        };
        let o = &c.offer;
        let mut e = Event::new(event)
            .payment(&crate::seller::payment_id(o, c.auth.from, c.auth.nonce))
            .payer(&c.auth.from.to_string())
            .with("amount", o.amount.to_string())
            .with("asset", o.asset.to_string())
            .with("network", o.network.clone())
            .with("payTo", o.pay_to.to_string())
            .with("nonce", format!("{:#x}", c.auth.nonce))
            .with("reason", reason)
            .with("message", message);
        if let Some(tx) = tx {
            e = e.tx(&format!("{tx:#x}"));
        }
        if let Err(err) = j.append(e, now_secs()).await {
            warn!("audit journal write failed: {err}");
        }
    }

    /// One chain per `kind: local` facilitator of the configuration (no request is made yet).
    pub fn new(cfg: &config::Service) -> Result<Self, BuildError> {
        let mut chains = BTreeMap::new();
        for f in &cfg.chains {
            let chain = Chain::from_spec(f).map_err(|why| BuildError::Chain {
                network: f.network.clone(),
                why,
            })?;
            chains.insert(
                f.network.clone(),
                Served {
                    network: f.network.clone(),
                    chain: Arc::new(chain),
                },
            );
        }
        if chains.is_empty() {
            return Err(BuildError::NoNetwork);
        }
        Ok(FacilitatorApp {
            chains,
            settling: Mutex::new(HashSet::new()),
            journal: None,
        })
    }

    /// The chains, for `/readyz`.
    pub fn readiness_chains(&self) -> Vec<(String, Arc<Chain>)> {
        self.chains
            .values()
            .map(|s| (s.network.clone(), s.chain.clone()))
            .collect()
    }

    /// The networks served, CAIP-2.
    pub fn networks(&self) -> Vec<String> {
        self.chains.keys().cloned().collect()
    }

    /// `GET /supported`: v1 and v2 `exact` on every network; the settlers sign for `eip155:*`.
    pub fn supported(&self) -> SupportedResponse {
        let mut kinds = Vec::new();
        let mut signers: Vec<String> = Vec::new();
        for s in self.chains.values() {
            kinds.push(SupportedKind {
                x402_version: 1,
                scheme: "exact".into(),
                network: networks::v1_name(&s.network)
                    .unwrap_or(&s.network)
                    .to_string(),
                extra: None,
            });
            kinds.push(SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: s.network.clone(),
                extra: None,
            });
            let addr = s.chain.settler().to_checksum(None);
            if !signers.contains(&addr) {
                signers.push(addr);
            }
        }
        SupportedResponse {
            kinds,
            extensions: Vec::new(),
            signers: BTreeMap::from([("eip155:*".to_string(), signers)]),
        }
    }

    fn chain(&self, network: &str) -> Option<&Arc<Chain>> {
        self.chains.get(network).map(|s| &s.chain)
    }

    /// Every check, the chain's included (nonce unused, balance sufficient).
    pub async fn verify(&self, req: &FacilitatorRequest) -> Result<Checked, Invalid> {
        let served = |n: &str| self.chains.contains_key(n);
        let c = check(req, &served, now_secs())?;
        let invalid = |r: Rejection| Invalid {
            rejection: r,
            payer: Some(c.payer()),
            network: c.network.clone(),
        };
        let chain = self.chain(&c.offer.network).ok_or_else(|| {
            invalid(Rejection::new(
                Reason::UnexpectedVerifyError,
                "no chain for a served network",
            ))
        })?;
        chain
            .verify_onchain(c.offer.asset, &c.auth)
            .await
            .map_err(invalid)?;
        Ok(c)
    }

    /// Verify, then submit `transferWithAuthorization` and wait for its receipt.
    pub async fn settle(&self, req: &FacilitatorRequest) -> (SettleResponse, &'static str) {
        let c = match self.verify(req).await {
            Ok(c) => c,
            Err(i) => return (refused_settle(&i), "invalid"),
        };
        let Some(chain) = self.chain(&c.offer.network) else {
            return (
                refused_settle(&Invalid {
                    rejection: Rejection::new(
                        Reason::UnexpectedSettleError,
                        "no chain for a served network",
                    ),
                    payer: Some(c.payer()),
                    network: c.network.clone(),
                }),
                "failed",
            );
        };
        let key = (c.offer.chain_id, c.offer.asset, c.auth.from, c.auth.nonce);
        let Some(_claim) = Claim::take(&self.settling, key) else {
            return (
                refused_settle(&Invalid {
                    rejection: Rejection::new(
                        Reason::NonceUsed,
                        format!(
                            "authorization nonce {} of {} is being settled by another request right now",
                            c.auth.nonce, c.auth.from
                        ),
                    ),
                    payer: Some(c.payer()),
                    network: c.network.clone(),
                }),
                "invalid",
            );
        };
        let outcome = chain.settle(c.offer.asset, &c.auth, &c.sig).await;
        self.record(&c, &outcome).await;
        let label = match &outcome {
            SettleOutcome::Settled { .. } => "settled",
            SettleOutcome::Failed { .. } => "failed",
            SettleOutcome::Pending { .. } | SettleOutcome::Unknown { .. } => "pending",
        };
        (settle_response(&c, &outcome), label)
    }

    async fn respond(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path().to_string();
        let method = s.req_header().method.clone();
        let endpoint = match path.as_str() {
            "/supported" => "supported",
            "/verify" => "verify",
            "/settle" => "settle",
            _ => {
                return json_reply(
                    404,
                    &json!({"error": "no_such_route", "message": "use GET /supported, POST /verify or POST /settle"}),
                    None,
                );
            }
        };
        let allowed = if endpoint == "supported" {
            http::Method::GET
        } else {
            http::Method::POST
        };
        if method != allowed {
            return json_reply(
                405,
                &json!({"error": "method_not_allowed", "message": format!("{path} takes {allowed}")}),
                Some(allowed.as_str()),
            );
        }
        if endpoint == "supported" {
            return json_reply(200, &self.supported(), None);
        }
        let body = read_body(s, MAX_BODY).await.map_err(|e| match e {
            BodyError::TooLarge => RequestError::TooLarge,
            BodyError::Unreadable => RequestError::Unreadable,
        });
        let req = match body.and_then(|b| parse_request(&b)) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, RequestError::TooLarge) {
                    s.set_keepalive(None);
                }
                telemetry::with(|m| {
                    m.facilitator_requests
                        .with_label_values(&[endpoint, "bad_request"])
                        .inc()
                });
                info!(endpoint, "facilitator request refused: {e}");
                return json_reply(
                    e.status(),
                    &json!({"error": e.code(), "message": e.to_string()}),
                    None,
                );
            }
        };
        if endpoint == "verify" {
            let v = self.verify(&req).await;
            let outcome = if v.is_ok() { "valid" } else { "invalid" };
            log_verdict(outcome, &v);
            telemetry::with(|m| {
                m.facilitator_requests
                    .with_label_values(&[endpoint, outcome])
                    .inc()
            });
            json_reply(200, &verify_response(&v), None)
        } else {
            let (r, outcome) = self.settle(&req).await;
            info!(
                endpoint,
                network = %r.network,
                payer = %r.payer.map(|a| format!("{a:#x}")).unwrap_or_default(),
                outcome,
                reason = r.error_reason.as_deref().unwrap_or(""),
                tx = %r.transaction,
                "facilitator settle: {}",
                r.error_message.as_deref().unwrap_or("settled")
            );
            telemetry::with(|m| {
                m.facilitator_requests
                    .with_label_values(&[endpoint, outcome])
                    .inc()
            });
            json_reply(200, &r, None)
        }
    }
}

fn log_verdict(outcome: &str, v: &Result<Checked, Invalid>) {
    let (network, payer, reason, message) = match v {
        Ok(c) => (c.network.as_str(), Some(c.payer()), "", "valid"),
        Err(i) => (
            i.network.as_str(),
            i.payer,
            i.rejection.reason.code(),
            i.rejection.message.as_str(),
        ),
    };
    info!(
        endpoint = "verify",
        network,
        payer = %payer.map(|a| format!("{a:#x}")).unwrap_or_default(),
        outcome,
        reason,
        "facilitator verify: {message}"
    );
}

/// An authorization being settled: chain id, token, payer, EIP-3009 nonce.
type SettlingKey = (u64, Address, Address, B256);

/// A claim on an authorization being settled; released when dropped.
struct Claim<'a> {
    set: &'a Mutex<HashSet<SettlingKey>>,
    key: SettlingKey,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<SettlingKey>>, key: SettlingKey) -> Option<Claim<'a>> {
        let fresh = set.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        // Built only when fresh: a Claim dropped here would lock the set again.
        fresh.then(|| Claim { set, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&self.key);
    }
}

fn json_reply(status: u16, body: &impl serde::Serialize, allow: Option<&str>) -> Response<Vec<u8>> {
    let r = Reply::json(status, body);
    match allow {
        Some(a) => r.with("Allow", a),
        None => r,
    }
    .into_response()
}

#[async_trait]
impl ServeHttp for FacilitatorApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        self.respond(s).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::U256;
    use alloy_signer_local::PrivateKeySigner;

    const NOW: u64 = 1_800_000_000;
    const NET: &str = "eip155:84532";

    fn requirements() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: NET.into(),
            amount: U256::from(10_000),
            asset: Address::repeat_byte(1),
            pay_to: Address::repeat_byte(2),
            max_timeout_seconds: 120,
            extra: Some(json!({"name": "USDC", "version": "2"})),
        }
    }

    fn signed(signer: &PrivateKeySigner, req: &PaymentRequirements) -> ExactEvmPayload {
        let mut auth = crate::buyer::client::authorization(signer, req, NOW);
        auth.valid_before = U256::from(NOW + 100);
        crate::buyer::client::sign(signer, req, auth).unwrap()
    }

    fn v2_request(signer: &PrivateKeySigner) -> FacilitatorRequest {
        let req = requirements();
        FacilitatorRequest {
            x402_version: 2,
            payment_payload: json!({"x402Version": 2, "accepted": req, "payload": signed(signer, &req)}),
            payment_requirements: serde_json::to_value(&req).unwrap(),
        }
    }

    type Edit = Box<dyn Fn(&mut FacilitatorRequest)>;

    fn served(n: &str) -> bool {
        n == NET
    }

    fn reason(r: &FacilitatorRequest) -> Reason {
        check(r, &served, NOW).unwrap_err().rejection.reason
    }

    #[test]
    fn a_valid_v2_payment_passes_and_names_its_payer() {
        let signer = PrivateKeySigner::random();
        let c = check(&v2_request(&signer), &served, NOW).unwrap();
        assert_eq!(c.payer(), signer.address());
        assert_eq!(c.network, NET);
        assert_eq!(c.offer.eip712_name, "USDC");
        let v = verify_response(&Ok(c));
        assert!(v.is_valid);
        assert_eq!(v.payer, Some(signer.address().to_checksum(None)));
    }

    #[test]
    fn each_disagreement_has_its_reason() {
        let signer = PrivateKeySigner::random();
        let cases: Vec<(Edit, Reason)> = vec![
            (Box::new(|r| r.x402_version = 3), Reason::InvalidX402Version),
            (
                Box::new(|r| r.payment_payload["x402Version"] = json!(1)),
                Reason::InvalidX402Version,
            ),
            (
                Box::new(|r| r.payment_payload["payload"]["signature"] = json!("nope")),
                Reason::InvalidPayload,
            ),
            (
                Box::new(|r| r.payment_requirements["amount"] = json!("ten")),
                Reason::RequirementsMismatch,
            ),
            (
                Box::new(|r| r.payment_requirements["scheme"] = json!("upto")),
                Reason::UnsupportedScheme,
            ),
            (
                Box::new(|r| r.payment_requirements["network"] = json!("eip155:8453")),
                Reason::NetworkMismatch,
            ),
            (
                Box::new(|r| r.payment_payload["accepted"]["network"] = json!("eip155:1")),
                Reason::NetworkMismatch,
            ),
            (
                Box::new(|r| r.payment_requirements["asset"] = json!(Address::repeat_byte(9))),
                Reason::AssetMismatch,
            ),
            (
                Box::new(|r| r.payment_requirements["payTo"] = json!(Address::repeat_byte(9))),
                Reason::RecipientMismatch,
            ),
            (
                Box::new(|r| r.payment_requirements["amount"] = json!("20000")),
                Reason::ValueMismatch,
            ),
            (
                Box::new(|r| r.payment_requirements["extra"] = json!({"name": "USDC"})),
                Reason::RequirementsMismatch,
            ),
            (
                Box::new(|r| r.payment_requirements["extra"]["name"] = json!("USD Coin")),
                Reason::Signature,
            ),
            (
                Box::new(|r| r.payment_requirements["maxTimeoutSeconds"] = json!(10)),
                Reason::ValidBeforeTooFar,
            ),
        ];
        for (edit, want) in cases {
            let mut r = v2_request(&signer);
            edit(&mut r);
            let got = check(&r, &served, NOW).unwrap_err();
            assert_eq!(got.rejection.reason, want, "{}", got.rejection.message);
            if want != Reason::InvalidPayload {
                assert_eq!(got.payer, Some(signer.address()), "{want:?}");
            }
        }
    }

    #[test]
    fn v1_requirements_are_converted() {
        let signer = PrivateKeySigner::random();
        let req = requirements();
        let v1 = crate::x402::matching::Offer {
            scheme: "exact".into(),
            network: NET.into(),
            chain_id: 84532,
            asset: req.asset,
            pay_to: req.pay_to,
            amount: req.amount,
            max_timeout_seconds: 120,
            decimals: 6,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            facilitator: String::new(),
        }
        .challenge_v1(&req, "http://x/x402", "advice");
        let mut r = FacilitatorRequest {
            x402_version: 1,
            payment_payload: json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": signed(&signer, &req)}),
            payment_requirements: serde_json::to_value(&v1).unwrap(),
        };
        let c = check(&r, &served, NOW).unwrap();
        assert_eq!(c.network, "base-sepolia");
        assert_eq!(c.offer.network, NET);
        r.payment_payload["network"] = json!("base");
        assert_eq!(reason(&r), Reason::NetworkMismatch);
    }

    #[test]
    fn settlement_outcomes_become_receipts() {
        let signer = PrivateKeySigner::random();
        let c = check(&v2_request(&signer), &served, NOW).unwrap();
        let tx = B256::repeat_byte(5);
        let ok = settle_response(&c, &SettleOutcome::Settled { tx });
        assert!(ok.success);
        assert_eq!(ok.amount.as_deref(), Some("10000"));
        assert_eq!(ok.transaction, format!("{tx:#x}"));
        let pending = settle_response(&c, &SettleOutcome::Pending { tx });
        assert!(!pending.success);
        assert_eq!(pending.error_reason.as_deref(), Some("settlement_pending"));
        assert_eq!(pending.transaction, format!("{tx:#x}"));
        let failed = settle_response(
            &c,
            &SettleOutcome::Failed {
                reason: Reason::NonceUsed,
                message: "used".into(),
                tx: None,
            },
        );
        assert_eq!(failed.transaction, "");
        assert_eq!(
            failed.error_reason.as_deref(),
            Some(Reason::NonceUsed.code())
        );
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["errorMessage"], "used");
        assert!(json.get("amount").is_none());
    }

    #[test]
    fn decode_errors_do_not_quote_signatures() {
        let sig = format!("0x{}", "ab".repeat(66));
        let signer = PrivateKeySigner::random();
        let mut r = v2_request(&signer);
        r.payment_payload["payload"]["signature"] = json!(sig);
        r.payment_payload["payload"]["authorization"]["value"] = json!(sig);
        let got = check(&r, &served, NOW).unwrap_err();
        assert_eq!(got.rejection.reason, Reason::InvalidPayload);
        assert!(!got.rejection.message.contains(&sig[2..]));
        let nonce = format!("0x{}", "cd".repeat(32));
        assert_eq!(
            redact_long_hex(&format!("nonce {nonce}, sig \"{sig}\"")),
            format!("nonce {nonce}, sig \"0xabababab…\"")
        );
    }

    #[test]
    fn one_claim_per_authorization_at_a_time() {
        let set = Mutex::new(HashSet::new());
        let key = (
            84532,
            Address::repeat_byte(1),
            Address::repeat_byte(3),
            B256::ZERO,
        );
        let first = Claim::take(&set, key).unwrap();
        assert!(Claim::take(&set, key).is_none());
        drop(first);
        assert!(Claim::take(&set, key).is_some());
    }

    #[test]
    fn bodies_that_are_not_requests_are_refused() {
        assert!(matches!(
            parse_request(b"{not json"),
            Err(RequestError::BadJson(_))
        ));
        assert!(matches!(
            parse_request(&vec![b' '; MAX_BODY + 1]),
            Err(RequestError::TooLarge)
        ));
    }
}
