//! The server challenge: a nonce and a deadline in each requirement's `extra`, MAC'd with the
//! sidecar's secret so that a v2 client's echo is checked without any server-side state.
//!
//! Token form: `<16-byte nonce hex>.<HMAC-SHA256, unpadded base64url>` (no 64-digit hex run, so
//! the long-hex guard of [`crate::redact`] never mistakes it for a secret); the MAC covers the route, every
//! requirement field that sets the price and the deadline, so nothing in the echo can be
//! changed without the check failing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hex;
use super::reason::{Reason, Rejection};
use super::types::PaymentRequirements;

type HmacSha256 = Hmac<Sha256>;

/// The secret that signs challenges. Replicas behind one load balancer must share it.
#[derive(Clone)]
pub struct ChallengeKey(Vec<u8>);

impl ChallengeKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        ChallengeKey(secret.into())
    }

    /// A fresh random key, for a single node that was given none.
    pub fn random() -> Self {
        ChallengeKey(rand::random::<[u8; 32]>().to_vec())
    }

    fn mac(
        &self,
        route: &str,
        req: &PaymentRequirements,
        expires_at: u64,
        nonce: &str,
    ) -> HmacSha256 {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any size"),
        };
        let msg = format!(
            "x402-sidecar/challenge/1|{route}|{}|{}|{:#x}|{:#x}|{}|{}|{expires_at}|{nonce}",
            req.scheme, req.network, req.asset, req.pay_to, req.amount, req.max_timeout_seconds
        );
        mac.update(msg.as_bytes());
        mac
    }

    /// Issue a challenge token for `req` on `route` (e.g. `"POST /x402"`), valid until `expires_at`.
    pub fn issue(&self, route: &str, req: &PaymentRequirements, expires_at: u64) -> String {
        let nonce = hex(&rand::random::<[u8; 16]>());
        let tag = self
            .mac(route, req, expires_at, &nonce)
            .finalize()
            .into_bytes();
        format!("{nonce}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Check an echoed challenge: issued by us for exactly this route and requirement, not stale.
    pub fn check(
        &self,
        route: &str,
        req: &PaymentRequirements,
        token: Option<&str>,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<(), Rejection> {
        let (Some(token), Some(expires_at)) = (token, expires_at) else {
            return Err(Rejection::new(
                Reason::InvalidChallenge,
                "the accepted requirements carry no server challenge; copy `accepted` verbatim from a fresh 402",
            ));
        };
        let forged = || {
            Rejection::new(
                Reason::InvalidChallenge,
                "the server challenge was not issued by this seller for this route and price",
            )
        };
        let (nonce, tag_b64) = token.split_once('.').ok_or_else(forged)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(forged());
        }
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).map_err(|_| forged())?;
        self.mac(route, req, expires_at, nonce)
            .verify_slice(&tag)
            .map_err(|_| forged())?;
        if now > expires_at {
            return Err(Rejection::new(
                Reason::ChallengeExpired,
                format!(
                    "the server challenge expired {}s ago; ask again for a fresh 402",
                    now - expires_at
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::requirement as req;
    use alloy_primitives::U256;

    #[test]
    fn accepts_its_own_fresh_challenge() {
        let k = ChallengeKey::new(b"secret".to_vec());
        let t = k.issue("POST /x402", &req(), 1_000);
        assert_eq!(
            k.check("POST /x402", &req(), Some(&t), Some(1_000), 999),
            Ok(())
        );
    }

    #[test]
    fn refuses_stale_forged_or_moved_challenges() {
        let k = ChallengeKey::new(b"secret".to_vec());
        let t = k.issue("POST /x402", &req(), 1_000);
        let stale = k
            .check("POST /x402", &req(), Some(&t), Some(1_000), 1_001)
            .unwrap_err();
        assert_eq!(stale.reason, Reason::ChallengeExpired);
        // Deadline pushed forward by the client.
        let moved = k
            .check("POST /x402", &req(), Some(&t), Some(5_000), 999)
            .unwrap_err();
        assert_eq!(moved.reason, Reason::InvalidChallenge);
        // Another route, another price, another key, a missing token.
        assert!(
            k.check("POST /other", &req(), Some(&t), Some(1_000), 999)
                .is_err()
        );
        let mut cheaper = req();
        cheaper.amount = U256::from(1);
        assert!(
            k.check("POST /x402", &cheaper, Some(&t), Some(1_000), 999)
                .is_err()
        );
        let other = ChallengeKey::new(b"other".to_vec());
        assert!(
            other
                .check("POST /x402", &req(), Some(&t), Some(1_000), 999)
                .is_err()
        );
        assert!(
            k.check("POST /x402", &req(), None, Some(1_000), 999)
                .is_err()
        );
        assert!(
            k.check("POST /x402", &req(), Some("zz.zz"), Some(1_000), 999)
                .is_err()
        );
    }

    #[test]
    fn a_token_carries_no_long_hex_run() {
        let t = ChallengeKey::new(b"secret".to_vec()).issue("POST /x402", &req(), 1_000);
        assert!(!crate::redact::has_long_hex(&t), "{t}");
    }
}
