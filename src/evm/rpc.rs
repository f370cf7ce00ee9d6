//! The one way an RPC provider is built, with a deadline on every call: HTTP through a reqwest
//! client with a connect timeout and a whole-request timeout, so an RPC that accepts the
//! connection and never answers costs at most `timeout` per call, never a hung payment.
//! And what a failed call means for a broadcast: the node refused it (certain), or the answer
//! was lost (unknown: the transaction may be in the node's pool).

use std::time::Duration;

use alloy_network::Ethereum;
use alloy_provider::transport::TransportError;
use alloy_provider::{DynProvider, Provider, ProviderBuilder};

use super::chain::ChainError;

/// Longest wait for one RPC answer unless configured (`rpc_timeout_ms`).
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Deadlines of the RPC client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcOptions {
    /// One request, from sending it to its whole answer.
    pub timeout: Duration,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            timeout: DEFAULT_RPC_TIMEOUT,
        }
    }
}

impl RpcOptions {
    /// Connecting is bounded too: never longer than a request, and 2 s at most.
    pub fn connect_timeout(&self) -> Duration {
        self.timeout.min(Duration::from_secs(2))
    }
}

/// A provider for `rpc_url` (HTTP, none of alloy's recommended fillers: every field of our
/// transactions is set by hand, and they are signed here), whose every call ends within
/// `opts.timeout`. Lazy: no request is made until first use.
pub fn connect_with(rpc_url: &str, opts: RpcOptions) -> Result<DynProvider<Ethereum>, ChainError> {
    let (url, http) = client(rpc_url, opts)?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_reqwest(http, url)
        .erased())
}

/// The URL and the HTTP client (with `opts`' deadlines) of an RPC provider.
pub(crate) fn client(
    rpc_url: &str,
    opts: RpcOptions,
) -> Result<(reqwest::Url, reqwest::Client), ChainError> {
    let url: reqwest::Url = rpc_url
        .parse()
        .map_err(|_| ChainError::BadUrl(crate::util::redact_url(rpc_url)))?;
    let http = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout())
        .timeout(opts.timeout)
        .pool_max_idle_per_host(32)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ChainError::Rpc(e.to_string()))?;
    Ok((url, http))
}

/// What a failed `eth_sendRawTransaction` says about the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The node already holds this very transaction (same hash): it was accepted before.
    Known,
    /// The nonce is taken (`nonce too low`, `replacement transaction underpriced`): another
    /// transaction of this key got there first; read the pending nonce again and resend.
    Nonce(String),
    /// The node refused the transaction for another reason (e.g. gas): certainly not sent.
    Refused(String),
    /// No answer (timeout, connection lost, an answer that is not JSON-RPC): the node may
    /// hold the transaction.
    Lost(String),
}

/// Classify a send's failure by the node's error message.
pub(crate) fn send_error(e: &TransportError) -> SendError {
    let msg = e.to_string();
    let Some(resp) = e.as_error_resp() else {
        return SendError::Lost(msg);
    };
    let m = resp.message.to_ascii_lowercase();
    if m.contains("already known")
        || m.contains("already imported")
        || m.contains("known transaction")
    {
        SendError::Known
    } else if m.contains("nonce too low")
        || m.contains("replacement transaction underpriced")
        || m.contains("nonce too high")
        || m.contains("nonce has already been used")
        || m.contains("invalid nonce")
    {
        SendError::Nonce(msg)
    } else {
        SendError::Refused(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_says(message: &str) -> TransportError {
        TransportError::ErrorResp(
            serde_json::from_value(serde_json::json!({"code": -32000, "message": message}))
                .unwrap(),
        )
    }

    #[test]
    fn a_nodes_send_errors_are_told_apart() {
        assert_eq!(send_error(&node_says("already known")), SendError::Known);
        assert_eq!(
            send_error(&node_says("transaction already imported")),
            SendError::Known
        );
        for m in [
            "nonce too low",
            "replacement transaction underpriced",
            "nonce too low: next nonce 7, tx nonce 5",
        ] {
            assert!(
                matches!(send_error(&node_says(m)), SendError::Nonce(_)),
                "{m}"
            );
        }
        assert!(matches!(
            send_error(&node_says("insufficient funds for gas * price + value")),
            SendError::Refused(_)
        ));
        assert!(matches!(
            send_error(&alloy_provider::transport::TransportErrorKind::custom_str(
                "timed out"
            )),
            SendError::Lost(_)
        ));
    }
}
