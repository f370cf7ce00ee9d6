//! The EVM side of EIP-3009: the token's contract bindings, the `transferWithAuthorization` call
//! for a signed authorization, and client signing. The typed data itself (domain, signing hash,
//! payer recovery) is protocol and lives in [`x402_proto::typed`], re-exported here.

use alloy_primitives::{B256, Signature, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, sol};
use serde_json::Value;

pub use x402_proto::typed::*;

use crate::x402::networks;
use crate::x402::types::{Authorization, ExactEvmPayload, PaymentRequirements};

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
        function decimals() external view returns (uint8);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
        event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);
    }

    /// The EIP-3009 cancellation the payer signs: once submitted, the nonce can never transfer.
    struct CancelAuthorization {
        address authorizer;
        bytes32 nonce;
    }
}

/// Sign the cancellation of `authorizer`'s authorization `nonce` in `domain` (the buyer, to take
/// an authorization whose outcome is unknown out of play before paying anyone else).
pub fn sign_cancel(
    signer: &PrivateKeySigner,
    nonce: B256,
    domain: &Eip712Domain,
) -> Result<Signature, alloy_signer::Error> {
    use alloy_sol_types::SolStruct;
    let msg = CancelAuthorization {
        authorizer: signer.address(),
        nonce,
    };
    signer.sign_hash_sync(&msg.eip712_signing_hash(domain))
}

/// The `cancelAuthorization` call for a signed cancellation.
pub fn cancel_call(
    authorizer: alloy_primitives::Address,
    nonce: B256,
    sig: &Signature,
) -> IEip3009Token::cancelAuthorizationCall {
    IEip3009Token::cancelAuthorizationCall {
        authorizer,
        nonce,
        v: 27 + sig.v() as u8,
        r: sig.r().into(),
        s: sig.s().into(),
    }
}

/// The EIP-712 domain a requirement names (`extra.name`/`extra.version`, USDC / 2 when it names
/// none) on the requirement's chain.
pub fn requirement_domain(req: &PaymentRequirements) -> Result<Eip712Domain, SignError> {
    let extra = req.extra.as_ref();
    let field = |name: &str| extra.and_then(|e| e.get(name)).and_then(Value::as_str);
    let chain_id =
        networks::chain_id(&req.network).ok_or_else(|| SignError::Network(req.network.clone()))?;
    Ok(domain(
        field("name").unwrap_or("USDC"),
        field("version").unwrap_or("2"),
        chain_id,
        req.asset,
    ))
}

/// The `transferWithAuthorization` call that settles `a`: the signed message's fields
/// ([`message`]) and the signature split into `v` (27/28), `r`, `s`.
pub fn transfer_call(
    a: &Authorization,
    sig: &Signature,
) -> IEip3009Token::transferWithAuthorizationCall {
    let TransferWithAuthorization {
        from,
        to,
        value,
        validAfter,
        validBefore,
        nonce,
    } = message(a);
    IEip3009Token::transferWithAuthorizationCall {
        from,
        to,
        value,
        validAfter,
        validBefore,
        nonce,
        v: 27 + sig.v() as u8,
        r: sig.r().into(),
        s: sig.s().into(),
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

/// The authorization a buyer signs for `req`: exact price, to payTo, valid from 0 until
/// now + maxTimeoutSeconds, fresh random nonce.
pub fn authorization(
    signer: &PrivateKeySigner,
    req: &PaymentRequirements,
    now: u64,
) -> Authorization {
    Authorization {
        from: signer.address(),
        to: req.pay_to,
        value: req.amount,
        valid_after: U256::ZERO,
        valid_before: U256::from(now.saturating_add(req.max_timeout_seconds)),
        nonce: B256::random(),
    }
}

/// Why a payment could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("network {0}")]
    Network(String),
    #[error("{0}")]
    Signer(#[from] alloy_signer::Error),
}

/// Sign `auth` in the EIP-712 domain the requirement names (`extra.name`/`extra.version`,
/// USDC / 2 when it names none) on the requirement's chain.
pub fn sign_payment(
    signer: &PrivateKeySigner,
    req: &PaymentRequirements,
    auth: Authorization,
) -> Result<ExactEvmPayload, SignError> {
    let domain = requirement_domain(req)?;
    let sig = sign(signer, &auth, &domain)?;
    Ok(ExactEvmPayload {
        signature: sig.as_bytes().to_vec().into(),
        authorization: auth,
    })
}
