//! The dev kit: what the tests, the benches and `demo` share — a local chain with the project's
//! own token ([`devnet`]), a labelled stand-in strategy upstream ([`standin`]), sidecar
//! processes on a free port ([`spawn`]), typed builders for the seller's, buyer's and
//! facilitator's `sidecar.yaml` ([`nodes`]), the money checks of a scenario, read from the
//! chain ([`world`]), misbehaving sellers that use real payments ([`rogue`]), and the official
//! x402 SDKs' sellers and facilitator as peers ([`peers`]).

pub mod devnet;
pub mod nodes;
pub mod peers;
pub mod rogue;
pub mod spawn;
pub mod standin;
pub mod world;
