//! Misbehaving sellers for the buyer's tests: small HTTP servers that ask for a real x402 v2
//! payment and then do with the buyer's real signed authorization what a broken or malicious
//! seller would — answer 500 or 503 and settle it seconds later, hang and settle, answer with
//! a forged receipt, answer without settling at all. Their settlements are real
//! `transferWithAuthorization` transactions on the devnet, submitted with a key of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, Signature, U256};
use alloy_signer_local::PrivateKeySigner;
use serde_json::{Value, json};

use super::devnet::{self, Devnet};
use super::standin::{self, Handler, Request, Response};
use crate::evm::{Chain, SettleOutcome};
use crate::x402::codec;
use crate::x402::types::ExactEvmPayload;

/// What the seller does with a paid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer this status (500, 503, …) at once, settle the payment after the pause.
    FailThenSettle(u16, Duration),
    /// Never answer; settle the payment after the pause.
    HangThenSettle(Duration),
    /// Answer 200 with a strategy and a `PAYMENT-RESPONSE` naming a made-up transaction;
    /// never settle.
    ForgedReceipt,
    /// Answer 200 with a strategy and no receipt; never settle.
    NoSettlement,
    /// Answer 200 with a forged receipt at once, settle for real after the pause.
    AnswerThenSettle(Duration),
    /// Settle, then answer 200 with the true receipt (a well-behaved seller).
    Honest,
}

/// A running misbehaving seller.
pub struct Rogue {
    /// Its paid endpoint (`…/x402`).
    pub url: String,
    /// Payments received (paid requests).
    pub paid_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The 402 a rogue seller asks with: `price` of the devnet's USDC to `pay_to`.
fn challenge(pay_to: Address, price: u64) -> Value {
    json!({
        "x402Version": 2,
        "error": "payment required",
        "resource": {"url": "http://rogue/x402", "description": "strategy", "mimeType": "application/json"},
        "accepts": [{
            "scheme": "exact",
            "network": devnet::NETWORK,
            "amount": price.to_string(),
            "asset": devnet::USDC.to_string(),
            "payTo": pay_to.to_string(),
            "maxTimeoutSeconds": 120,
            "extra": {"name": "USDC", "version": "2"}
        }]
    })
}

/// An answer with `status`, `body` and extra `headers`, as raw bytes.
fn raw(status: u16, body: &str, headers: &[(&str, String)]) -> Response {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Response::Raw(bytes)
}

/// A strategy answer for `req` (the stand-in's body).
fn strategy(req: &Request) -> String {
    match standin::standin_answer(req) {
        Response::Body(_, b) => b,
        _ => "{}".into(),
    }
}

/// The payment of a paid request: the authorization and its signature.
fn payment(req: &Request) -> Option<ExactEvmPayload> {
    let h = req.header("payment-signature")?;
    let v: Value = codec::decode(h.as_bytes(), 64 * 1024).ok()?;
    serde_json::from_value(v["payload"].clone()).ok()
}

/// A receipt header value naming `tx`.
fn receipt(tx: &str, payer: Address) -> String {
    codec::encode(&json!({
        "success": true,
        "transaction": tx,
        "network": devnet::NETWORK,
        "payer": payer.to_string(),
    }))
}

impl Rogue {
    /// Start a seller on a free port that asks `price` to `net.pay_to` and behaves as `b`; its
    /// settlements are submitted with `settler` (a funded key: [`Devnet::gas_key`]).
    pub async fn start(net: &Devnet, settler: PrivateKeySigner, price: u64, b: Behaviour) -> Rogue {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("rogue seller: {e}"));
        let url = format!(
            "http://{}/x402",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let chain = Arc::new(
            Chain::new(
                &net.rpc_url,
                devnet::CHAIN_ID,
                settler,
                Duration::from_secs(10),
            )
            .unwrap_or_else(|e| panic!("rogue seller: {e}")),
        );
        let pay_to = net.pay_to;
        let paid_requests = Arc::new(AtomicUsize::new(0));
        let counter = paid_requests.clone();
        let handler: Handler = Arc::new(move |req: Request| {
            let chain = chain.clone();
            let counter = counter.clone();
            Box::pin(async move {
                let Some(p) = payment(&req) else {
                    let c = challenge(pay_to, price);
                    return raw(
                        402,
                        &c.to_string(),
                        &[("PAYMENT-REQUIRED", codec::encode(&c))],
                    );
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let settle = move |after: Duration| {
                    let chain = chain.clone();
                    async move {
                        tokio::time::sleep(after).await;
                        settle_now(&chain, &p).await
                    }
                };
                let body = strategy(&req);
                let forged = format!("0x{}", "ab".repeat(32));
                let payer = payment(&req)
                    .map(|p| p.authorization.from)
                    .unwrap_or_default();
                match b {
                    Behaviour::FailThenSettle(status, after) => {
                        tokio::spawn(settle(after));
                        Response::Body(status, r#"{"error":"internal"}"#.into())
                    }
                    Behaviour::HangThenSettle(after) => {
                        tokio::spawn(settle(after));
                        Response::After(
                            Duration::from_secs(3_600),
                            Box::new(Response::Body(200, body)),
                        )
                    }
                    Behaviour::ForgedReceipt => {
                        raw(200, &body, &[("PAYMENT-RESPONSE", receipt(&forged, payer))])
                    }
                    Behaviour::NoSettlement => raw(200, &body, &[]),
                    Behaviour::AnswerThenSettle(after) => {
                        tokio::spawn(settle(after));
                        raw(200, &body, &[("PAYMENT-RESPONSE", receipt(&forged, payer))])
                    }
                    Behaviour::Honest => match settle(Duration::ZERO).await {
                        Some(tx) => raw(200, &body, &[("PAYMENT-RESPONSE", receipt(&tx, payer))]),
                        None => Response::Body(402, r#"{"error":"settle_failed"}"#.into()),
                    },
                }
            })
        });
        let task = tokio::spawn(standin::serve(listener, handler));
        Rogue {
            url,
            paid_requests,
            task,
        }
    }

    /// Paid requests received so far.
    pub fn paid_requests(&self) -> usize {
        self.paid_requests.load(Ordering::SeqCst)
    }
}

/// Submit the payment's `transferWithAuthorization`; the transaction once settled.
async fn settle_now(chain: &Chain, p: &ExactEvmPayload) -> Option<String> {
    let sig = Signature::from_raw(&p.signature).ok()?;
    match chain.settle(devnet::USDC, &p.authorization, &sig).await {
        SettleOutcome::Settled { tx } => Some(format!("{tx:#x}")),
        _ => None,
    }
}

impl Devnet {
    /// A fresh key holding 1 ETH of gas and no token: a buyer's gas wallet, a rogue seller's
    /// settler.
    pub async fn gas_key(&self) -> Result<PrivateKeySigner, devnet::DevnetError> {
        use alloy_provider::ext::AnvilApi;
        let key = PrivateKeySigner::random();
        self.provider()
            .anvil_set_balance(key.address(), U256::from(10u64).pow(U256::from(18)))
            .await
            .map_err(|e| devnet::DevnetError::Rpc(e.to_string()))?;
        Ok(key)
    }
}
