//! x402-sidecar: a pingora sidecar that sells roma-01 strategy advice behind an x402 paywall and
//! pays other sellers for roma-01.
//!
//! The parts, lowest first (README, "Architecture", has the rules; `tests/architecture.rs`
//! enforces them):
//!
//! - [`x402`]: the protocol core, its own crate (`x402-proto`): wire types, codec, money,
//!   networks, reasons, the server challenge, EIP-3009 typed data, payment matching. No I/O.
//! - [`evm`]: the token bindings, client signing, keys, the chain reader and settler.
//! - [`store`] (replay claims and budgets), [`audit`] (the hash-chained journal),
//!   [`telemetry`] (metrics, readiness, logs, OTLP), [`http`] (bodies, replies, a small
//!   server), [`breaker`], [`util`]: shared lower parts.
//! - [`advisor`]: the strategy contract and the built-in advisor.
//! - Roles: [`seller`] (the inbound paywall), [`buyer`] (the outbound paying proxy),
//!   [`facilitator`] (the x402 facilitator API).
//! - [`config`]: the aggregate `sidecar.yaml`, composed of the roles' own sections.
//! - [`cli`]: one file per command; [`devkit`]: the devnet, the stand-in and the process helpers
//!   that the tests, the benches and `demo` share.

pub use x402_proto as x402;

pub mod advisor;
pub mod audit;
pub mod breaker;
pub mod buyer;
pub mod cli;
pub mod config;
pub mod devkit;
pub mod evm;
pub mod facilitator;
pub mod http;
pub mod seller;
pub mod store;
pub mod telemetry;
pub mod util;

/// Install the process-wide TLS crypto provider (ring) once; every HTTP client needs it.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
