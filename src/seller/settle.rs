//! Who verifies and settles a payment for the paywall, behind one trait, [`Settlement`]:
//! [`LocalSettlement`] (this sidecar on chain with its settler key, `kind: local`) or
//! [`RemoteSettlement`] (a remote facilitator over HTTP, `kind: http`, the x402 facilitator
//! API). Both take the one [`VerifiedPayment`] and build what they need from it.
//!
//! A remote facilitator is trusted to do the work, not to report it: a claimed settlement is
//! accepted only once this sidecar's own RPC shows its receipt proving this payment (the
//! token's `AuthorizationUsed(payer, nonce)` and its `Transfer` to the seller, see
//! [`check_receipt`]), and when the facilitator gives no usable answer the chain decides (the token's
//! `authorizationState` and `AuthorizationUsed` log). Settling the same authorization twice
//! can never charge twice (the token accepts each EIP-3009 nonce once), so a settlement whose
//! answer was lost is asked for again only while the chain shows the authorization unused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use serde_json::Value;
use tracing::{info, warn};

use crate::evm::NonceLeases;
use crate::evm::chain::{Chain, SettleOutcome, check_receipt};
use crate::seller::BuildError;
use crate::seller::config::{BackendSpecs, RemoteFacilitator};
use crate::seller::payment::VerifiedPayment;
use crate::telemetry::Probe;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::{Authorization, FacilitatorRequest, IncomingPayment, VerifyResponse};

/// Largest remote facilitator answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The settlement backend of one network: the checks that need the chain, the settlement, and
/// the reconciliation of a settlement whose outcome was not known.
#[async_trait]
pub(crate) trait Settlement: Send + Sync {
    /// The chain reader this backend's outcomes are checked against (readiness, and a retry
    /// that asks whether its payment already settled).
    fn chain(&self) -> &Arc<Chain>;

    /// The span a payment's first verification runs in (`chain_verify`, or
    /// `facilitator_verify` naming the remote facilitator).
    fn verify_span(&self) -> tracing::Span;

    /// Verification beyond the local checks: nonce and balance on chain, or the remote
    /// facilitator's `/verify`.
    async fn verify(&self, p: &VerifiedPayment<'_>) -> Result<(), Rejection>;

    /// Settle the payment and wait for the chain to confirm it.
    async fn settle(&self, p: &VerifiedPayment<'_>) -> SettleOutcome;

    /// What the chain shows for authorization `auth` on `asset`, by the payment's own identity
    /// (`authorizationState`, then the `AuthorizationUsed(from, nonce)` log in a bounded block
    /// range and its receipt): `Ok(None)` while it is unused.
    async fn lookup(
        &self,
        asset: Address,
        auth: &Authorization,
    ) -> Result<Option<SettleOutcome>, String> {
        self.chain().settlement_of(asset, auth).await
    }

    /// A broadcast settlement, by its transaction hash: its receipt checked, or `Pending`.
    async fn by_tx(&self, asset: Address, auth: &Authorization, tx: B256) -> SettleOutcome {
        self.chain().reconcile(tx, asset, auth).await
    }
}

/// The settlement backend of every network of `facilitators:`, built once.
pub(crate) struct Backends {
    by_chain: HashMap<u64, Arc<dyn Settlement>>,
    /// The `kind: http` ones again, for `/readyz` (`facilitator:<network>`).
    remote: Vec<(u64, Arc<RemoteSettlement>)>,
}

impl Backends {
    /// Connect (lazily) to every chain and remote facilitator of the resolved section; the
    /// settler keys' nonces are shared with the other replicas through `leases` when given.
    pub(crate) fn new(
        specs: &BackendSpecs,
        leases: Option<Arc<dyn NonceLeases>>,
    ) -> Result<Self, BuildError> {
        let mut by_chain: HashMap<u64, Arc<dyn Settlement>> = HashMap::new();
        for spec in &specs.local {
            let chain =
                Chain::from_spec(spec, leases.clone()).map_err(|why| BuildError::Backend {
                    network: spec.network.clone(),
                    why,
                })?;
            let local = LocalSettlement {
                chain: Arc::new(chain),
            };
            by_chain.insert(spec.chain_id, Arc::new(local));
        }
        let remote_http = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let mut remote = Vec::new();
        for spec in &specs.remote {
            let r = RemoteSettlement::new(spec, remote_http.clone()).map_err(|why| {
                BuildError::Backend {
                    network: spec.network.clone(),
                    why,
                }
            })?;
            let r = Arc::new(r);
            by_chain.insert(spec.chain_id, r.clone());
            remote.push((spec.chain_id, r));
        }
        Ok(Backends { by_chain, remote })
    }

    /// The backend that settles on `chain_id`, if any.
    pub(crate) fn get(&self, chain_id: u64) -> Option<Arc<dyn Settlement>> {
        self.by_chain.get(&chain_id).cloned()
    }

    /// Each backend's chain reader, by network (`eip155:<id>`).
    pub(crate) fn chains(&self) -> Vec<(String, Arc<Chain>)> {
        self.by_chain
            .iter()
            .map(|(id, b)| (format!("eip155:{id}"), b.chain().clone()))
            .collect()
    }

    /// Each remote facilitator's readiness probe, by network (`eip155:<id>`).
    pub(crate) fn remote_probes(&self) -> Vec<(String, Arc<dyn Probe>)> {
        self.remote
            .iter()
            .map(|(id, r)| {
                let probe: Arc<dyn Probe> = r.clone();
                (format!("eip155:{id}"), probe)
            })
            .collect()
    }
}

/// This sidecar settles on chain with its own settler key (`kind: local`).
pub(crate) struct LocalSettlement {
    chain: Arc<Chain>,
}

#[async_trait]
impl Settlement for LocalSettlement {
    fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    fn verify_span(&self) -> tracing::Span {
        tracing::info_span!("chain_verify")
    }

    async fn verify(&self, p: &VerifiedPayment<'_>) -> Result<(), Rejection> {
        self.chain
            .verify_onchain(p.offer.asset, p.authorization())
            .await
    }

    async fn settle(&self, p: &VerifiedPayment<'_>) -> SettleOutcome {
        let v = &p.verified;
        self.chain
            .settle(p.offer.asset, &v.authorization, &v.signature)
            .await
    }

    /// By its hash; a transaction the node does not know (its broadcast was lost, or the node
    /// dropped it) is not pending: the payment's identity on chain decides, and the
    /// settlement is submitted again while it is unused (which cannot charge twice).
    async fn by_tx(&self, asset: Address, auth: &Authorization, tx: B256) -> SettleOutcome {
        self.chain.by_tx(tx, asset, auth).await
    }
}

/// A remote facilitator (`POST /verify`, `POST /settle`, `GET /supported`, `kind: http`)
/// plus read-only access to the chain it settles on.
pub(crate) struct RemoteSettlement {
    http: reqwest::Client,
    base: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    receipt_timeout: Duration,
    chain: Arc<Chain>,
    /// The base URL without credentials, for messages.
    shown: String,
}

#[async_trait]
impl Settlement for RemoteSettlement {
    fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    fn verify_span(&self) -> tracing::Span {
        tracing::info_span!("facilitator_verify", facilitator = %self.shown)
    }

    /// `POST /verify`. Refusals keep the facilitator's reason (mapped to ours); an unreachable
    /// or incoherent facilitator is our fault, not the payer's.
    async fn verify(&self, p: &VerifiedPayment<'_>) -> Result<(), Rejection> {
        let (status, body) = self
            .post("verify", &facilitator_request(p))
            .await
            .map_err(|e| {
                Rejection::new(
                    Reason::UnexpectedVerifyError,
                    format!("the facilitator {} could not be asked: {e}", self.shown),
                )
            })?;
        match serde_json::from_slice::<VerifyResponse>(&body) {
            Ok(v) if v.is_valid && status == 200 => Ok(()),
            Ok(v) if !v.is_valid => {
                let code = v.invalid_reason.unwrap_or_else(|| "invalid_payment".into());
                let why = v.invalid_message.unwrap_or_else(|| code.clone());
                Err(Rejection::new(
                    Reason::from_facilitator(&code),
                    format!("the facilitator refused the payment ({code}): {why}"),
                ))
            }
            _ => Err(Rejection::new(
                Reason::UnexpectedVerifyError,
                format!(
                    "the facilitator {} answered {status} without a verification result",
                    self.shown
                ),
            )),
        }
    }

    /// `POST /settle`, then the chain's confirmation of what it reports.
    async fn settle(&self, p: &VerifiedPayment<'_>) -> SettleOutcome {
        let (status, body) = match self.post("settle", &facilitator_request(p)).await {
            Ok(a) => a,
            Err(e) => {
                return self
                    .ask_chain(p, format!("no answer from the facilitator: {e}"))
                    .await;
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return self
                .ask_chain(
                    p,
                    format!("the facilitator answered {status} without a settlement result"),
                )
                .await;
        };
        let tx: Option<B256> = v["transaction"].as_str().and_then(|t| t.parse().ok());
        match (v["success"].as_bool(), tx) {
            (Some(true), Some(tx)) => self.confirm(tx, p).await,
            (Some(true), None) => {
                self.ask_chain(
                    p,
                    "the facilitator reported success without a transaction hash".into(),
                )
                .await
            }
            (Some(false), tx) => self.refused(p, &v, tx).await,
            (None, _) => {
                self.ask_chain(
                    p,
                    format!("the facilitator answered {status} without `success`"),
                )
                .await
            }
        }
    }
}

impl RemoteSettlement {
    pub(crate) fn new(f: &RemoteFacilitator, http: reqwest::Client) -> Result<Self, String> {
        let chain = Chain::read_only_with(&f.rpc_url, f.chain_id, f.receipt_timeout, f.rpc)
            .map_err(|e| e.to_string())?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &f.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            let mut value = reqwest::header::HeaderValue::from_str(v.expose())
                .map_err(|_| format!("the value of header `{k}` is not valid"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(RemoteSettlement {
            http,
            base: f.url.as_str().trim_end_matches('/').to_string(),
            headers,
            timeout: f.timeout,
            receipt_timeout: f.receipt_timeout,
            chain: Arc::new(chain),
            shown: crate::util::redact_url(f.url.as_str()),
        })
    }

    async fn post(&self, path: &str, body: &FacilitatorRequest) -> Result<(u16, Vec<u8>), String> {
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| crate::util::redact_url(&e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let bytes = crate::http::read_capped(resp, MAX_ANSWER)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::Http(e) => e.without_url().to_string(),
                too_large => too_large.to_string(),
            })?;
        Ok((status, bytes.to_vec()))
    }

    /// `success: false` from `/settle`: pending with a tx, an earlier settlement the chain
    /// shows, or a failure.
    async fn refused(&self, p: &VerifiedPayment<'_>, v: &Value, tx: Option<B256>) -> SettleOutcome {
        let code = v["errorReason"]
            .as_str()
            .unwrap_or("unexpected_settle_error")
            .to_string();
        let reason = Reason::from_facilitator(&code);
        if let (Reason::SettlementPending, Some(tx)) = (reason, tx) {
            return SettleOutcome::Pending { tx };
        }
        // A refusal may hide an earlier settlement of ours (a lost answer, a retry):
        // the chain says whether this authorization paid the seller.
        if let Ok(Some(o @ SettleOutcome::Settled { .. })) = self
            .chain
            .settlement_of(p.offer.asset, p.authorization())
            .await
        {
            info!(facilitator = %self.shown, %code, "the facilitator refused, but the chain shows this authorization settled");
            return o;
        }
        let why = v["errorMessage"].as_str().unwrap_or(&code).to_string();
        SettleOutcome::Failed {
            reason: if reason == Reason::InvalidPayment {
                Reason::TransactionFailed
            } else {
                reason
            },
            // The facilitator's words may quote the payment: no long hex in ours.
            message: crate::x402::redact::mask_hex(&format!(
                "the facilitator did not settle ({code}): {why}"
            )),
            tx,
        }
    }

    /// A reported settlement counts once its receipt proves this payment: status 1, the token's
    /// `AuthorizationUsed(payer, nonce)` and its `Transfer` to payTo of the amount
    /// ([`check_receipt`]). A receipt that does not (an older transfer of the same payer,
    /// another nonce, a reverted or foreign transaction) is not believed; the chain is then
    /// asked whether this authorization was used by another transaction that paid.
    async fn confirm(&self, tx: B256, p: &VerifiedPayment<'_>) -> SettleOutcome {
        let Some(r) = self.chain.wait_receipt(tx, self.receipt_timeout).await else {
            return SettleOutcome::Pending { tx };
        };
        let (asset, auth) = (p.offer.asset, p.authorization());
        let outcome = check_receipt(&r, asset, auth);
        if matches!(outcome, SettleOutcome::Settled { .. }) {
            return outcome;
        }
        if let Ok(Some(o @ SettleOutcome::Settled { .. })) =
            self.chain.settlement_of(asset, auth).await
        {
            warn!(facilitator = %self.shown, "the facilitator reported a transaction that is not this payment's settlement, but another one settled it");
            return o;
        }
        warn!(facilitator = %self.shown, "the facilitator reported a settlement the chain does not show for this payment");
        outcome
    }

    /// No usable answer: what the chain shows, else unknown (never a guess).
    async fn ask_chain(&self, p: &VerifiedPayment<'_>, why: String) -> SettleOutcome {
        warn!(facilitator = %self.shown, "settlement outcome not reported: {why}; asking the chain");
        match self
            .chain
            .settlement_of(p.offer.asset, p.authorization())
            .await
        {
            Ok(Some(o)) => o,
            Ok(None) => SettleOutcome::Unknown { message: why },
            Err(e) => SettleOutcome::Unknown {
                message: format!("{why}; the chain could not be read either: {e}"),
            },
        }
    }
}

/// `/readyz`: a remote facilitator answers `GET /supported` with 200. (A local backend is
/// checked by its chain's RPC instead.)
#[async_trait]
impl Probe for RemoteSettlement {
    async fn reachable(&self) -> bool {
        matches!(
            self.http
                .get(format!("{}/supported", self.base))
                .headers(self.headers.clone())
                .timeout(Duration::from_secs(2))
                .send()
                .await,
            Ok(r) if r.status().is_success()
        )
    }
}

/// The `/verify` and `/settle` body for a remote facilitator: the payment as received and the
/// requirement it was matched to (in the payment's version).
fn facilitator_request(p: &VerifiedPayment<'_>) -> FacilitatorRequest {
    match &p.received {
        IncomingPayment::V2(v2) => FacilitatorRequest {
            x402_version: 2,
            payment_payload: serde_json::to_value(v2).unwrap_or(Value::Null),
            payment_requirements: serde_json::to_value(&v2.accepted).unwrap_or(Value::Null),
        },
        IncomingPayment::V1(v1) => {
            let requirement = p.offer.base_requirement().to_v1("", p.description);
            FacilitatorRequest {
                x402_version: 1,
                payment_payload: serde_json::to_value(v1).unwrap_or(Value::Null),
                payment_requirements: serde_json::to_value(&requirement).unwrap_or(Value::Null),
            }
        }
    }
}
