//! x402-sidecar: a pingora sidecar that sells roma-01 strategy advice behind an x402 paywall.
//!
//! Modules, one job each: [`x402`] (protocol, no I/O), [`evm`] (EIP-3009 signing, chain reads,
//! settlement), [`store`] (replay guard), [`config`] (sidecar.yaml), [`strategy`] (the request
//! contract), [`inbound`] (the paywall service), [`facilitator`] (the x402 facilitator API),
//! [`client`] (paying a 402), [`devnet`] (a local
//! chain with the project's own token), [`standin`] (a labelled stand-in strategy upstream).

pub mod audit;
pub mod client;
pub mod config;
pub mod devnet;
pub mod evm;
pub mod facilitator;
pub mod inbound;
pub mod otlp;
pub mod outbound;
pub mod settlement;
pub mod standin;
pub mod store;
pub mod strategy;
pub mod telemetry;
pub mod util;
pub mod x402;

/// Install the process-wide TLS crypto provider (ring) once; every HTTP client needs it.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
