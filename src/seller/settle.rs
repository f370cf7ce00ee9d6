//! Who verifies and settles a payment for the paywall: this sidecar on chain (`kind: local`)
//! or a facilitator server over HTTP (`kind: http`, the x402 facilitator API).
//!
//! A remote facilitator is trusted to do the work, not to report it: a claimed settlement is
//! accepted only once this sidecar's own RPC shows its receipt with the `Transfer` to the
//! seller, and when the facilitator gives no usable answer the chain decides (the token's
//! `authorizationState` and `AuthorizationUsed` log). Settling the same authorization twice
//! can never charge twice (the token accepts each EIP-3009 nonce once), so a settlement whose
//! answer was lost is asked for again only while the chain shows the authorization unused.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, Signature};
use serde_json::Value;
use tracing::{info, warn};

use crate::evm::chain::{Chain, SettleOutcome, check_receipt};
use crate::seller::config::RemoteFacilitator;
use crate::x402::reason::{Reason, Rejection};
use crate::x402::types::{Authorization, FacilitatorRequest, VerifyResponse};

/// Largest facilitator answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The settlement backend of one network.
pub enum Settler {
    Local(Arc<Chain>),
    Remote(Remote),
}

impl Settler {
    /// Chain reads (the RPC): readiness, reconciliation by tx hash.
    pub fn chain(&self) -> &Arc<Chain> {
        match self {
            Settler::Local(c) => c,
            Settler::Remote(r) => &r.chain,
        }
    }

    /// The remote facilitator, if this network has one.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Settler::Local(_) => None,
            Settler::Remote(r) => Some(r),
        }
    }

    /// Verification beyond the local checks: nonce and balance on chain, or the facilitator.
    pub async fn verify(
        &self,
        asset: Address,
        auth: &Authorization,
        req: &FacilitatorRequest,
    ) -> Result<(), Rejection> {
        match self {
            Settler::Local(c) => c.verify_onchain(asset, auth).await,
            Settler::Remote(r) => r.verify(req).await,
        }
    }

    pub async fn settle(
        &self,
        asset: Address,
        auth: &Authorization,
        sig: &Signature,
        req: &FacilitatorRequest,
    ) -> SettleOutcome {
        match self {
            Settler::Local(c) => c.settle(asset, auth, sig).await,
            Settler::Remote(r) => r.settle(req, asset, auth).await,
        }
    }

    /// What became of a settlement whose outcome was not known: by its tx hash when there is
    /// one, else from the authorization on chain (and, for a remote facilitator whose
    /// authorization is still unused, by asking it to settle again).
    pub async fn reconcile(
        &self,
        tx: Option<B256>,
        asset: Address,
        auth: &Authorization,
        req: &FacilitatorRequest,
    ) -> SettleOutcome {
        if let Some(tx) = tx {
            return self.chain().reconcile(tx, asset, auth).await;
        }
        match self {
            Settler::Remote(r) => r.reconcile(req, asset, auth).await,
            Settler::Local(c) => match c.settlement_of(asset, auth).await {
                Ok(Some(o)) => o,
                Ok(None) => SettleOutcome::Unknown {
                    message: "no settlement of this authorization is on chain".into(),
                },
                Err(e) => SettleOutcome::Unknown {
                    message: format!("the chain could not be read: {e}"),
                },
            },
        }
    }
}

/// `/readyz`: a remote facilitator answers `GET /supported`; this sidecar's own chain is
/// checked by its RPC instead.
#[async_trait::async_trait]
impl crate::telemetry::Probe for Settler {
    async fn reachable(&self) -> bool {
        match self {
            Settler::Local(_) => true,
            Settler::Remote(r) => r.reachable().await,
        }
    }
}

/// A facilitator server (`POST /verify`, `POST /settle`, `GET /supported`) plus read-only
/// access to the chain it settles on.
pub struct Remote {
    http: reqwest::Client,
    base: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    receipt_timeout: Duration,
    chain: Arc<Chain>,
    /// The base URL without credentials, for messages.
    shown: String,
}

impl Remote {
    pub fn new(f: &RemoteFacilitator, http: reqwest::Client) -> Result<Self, String> {
        let chain = Chain::read_only(&f.rpc_url, f.chain_id, f.receipt_timeout)
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
        Ok(Remote {
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

    /// `POST /verify`. Refusals keep the facilitator's reason (mapped to ours); an unreachable
    /// or incoherent facilitator is our fault, not the payer's.
    pub async fn verify(&self, req: &FacilitatorRequest) -> Result<(), Rejection> {
        let (status, body) = self.post("verify", req).await.map_err(|e| {
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
    pub async fn settle(
        &self,
        req: &FacilitatorRequest,
        asset: Address,
        auth: &Authorization,
    ) -> SettleOutcome {
        let (status, body) = match self.post("settle", req).await {
            Ok(a) => a,
            Err(e) => {
                return self
                    .ask_chain(asset, auth, format!("no answer from the facilitator: {e}"))
                    .await;
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return self
                .ask_chain(
                    asset,
                    auth,
                    format!("the facilitator answered {status} without a settlement result"),
                )
                .await;
        };
        let tx: Option<B256> = v["transaction"].as_str().and_then(|t| t.parse().ok());
        match (v["success"].as_bool(), tx) {
            (Some(true), Some(tx)) => self.confirm(tx, asset, auth).await,
            (Some(true), None) => {
                self.ask_chain(
                    asset,
                    auth,
                    "the facilitator reported success without a transaction hash".into(),
                )
                .await
            }
            (Some(false), tx) => {
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
                if let Ok(Some(o @ SettleOutcome::Settled { .. })) =
                    self.chain.settlement_of(asset, auth).await
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
                    message: format!("the facilitator did not settle ({code}): {why}"),
                    tx,
                }
            }
            (None, _) => {
                self.ask_chain(
                    asset,
                    auth,
                    format!("the facilitator answered {status} without `success`"),
                )
                .await
            }
        }
    }

    /// A reported settlement counts once its receipt shows the transfer to the seller.
    async fn confirm(&self, tx: B256, asset: Address, auth: &Authorization) -> SettleOutcome {
        match self.chain.wait_receipt(tx, self.receipt_timeout).await {
            Some(r) => check_receipt(&r, asset, auth),
            None => SettleOutcome::Pending { tx },
        }
    }

    /// No usable answer: what the chain shows, else unknown (never a guess).
    async fn ask_chain(&self, asset: Address, auth: &Authorization, why: String) -> SettleOutcome {
        warn!(facilitator = %self.shown, "settlement outcome not reported: {why}; asking the chain");
        match self.chain.settlement_of(asset, auth).await {
            Ok(Some(o)) => o,
            Ok(None) => SettleOutcome::Unknown { message: why },
            Err(e) => SettleOutcome::Unknown {
                message: format!("{why}; the chain could not be read either: {e}"),
            },
        }
    }

    /// A settlement whose outcome was unknown: the chain first; still unused, settle again.
    pub async fn reconcile(
        &self,
        req: &FacilitatorRequest,
        asset: Address,
        auth: &Authorization,
    ) -> SettleOutcome {
        match self.chain.settlement_of(asset, auth).await {
            Ok(Some(o)) => o,
            Ok(None) => self.settle(req, asset, auth).await,
            Err(e) => SettleOutcome::Unknown {
                message: format!("the chain could not be read: {e}"),
            },
        }
    }

    /// `GET /supported` answers 200 (readiness).
    pub async fn reachable(&self) -> bool {
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

    pub fn shown(&self) -> &str {
        &self.shown
    }
}
