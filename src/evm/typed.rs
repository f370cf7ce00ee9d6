//! The EVM side of EIP-3009: the token's contract bindings and client signing. The typed data
//! itself (domain, signing hash, payer recovery) is protocol and lives in [`x402_proto::typed`],
//! re-exported here.

use alloy_primitives::Signature;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, sol};

pub use x402_proto::typed::*;

use crate::x402::types::Authorization;

sol! {
    /// The token calls the sidecar makes.
    interface IEip3009Token {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 value) external returns (bool);
        function mint(address to, uint256 amount) external;
        function name() external view returns (string);
        function version() external view returns (string);
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }
}

/// Sign an authorization (client side: `pay`, the outbound proxy, tests).
pub fn sign(
    signer: &PrivateKeySigner,
    a: &Authorization,
    domain: &Eip712Domain,
) -> Result<Signature, alloy_signer::Error> {
    signer.sign_hash_sync(&signing_hash(a, domain))
}
