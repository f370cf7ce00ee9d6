//! The dev kit: what the tests, the benches and `demo` share — a local chain with the project's
//! own token ([`devnet`]), a labelled stand-in strategy upstream ([`standin`]) and process
//! helpers ([`spawn`]).

pub mod devnet;
pub mod spawn;
pub mod standin;
