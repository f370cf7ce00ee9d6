//! Keys: from an environment variable or an encrypted keystore file (Web3 Secret Storage).
//! A key is never printed: errors name the variable or file, never the value.

use std::path::PathBuf;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use serde::Deserialize;

/// Where a private key comes from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// Name of the environment variable holding the hex private key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Path of an encrypted keystore file.
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    /// Environment variable holding the keystore password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the keystore password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no key configured: set `key_env` (an environment variable) or `keystore` (an encrypted keystore file)"
    )]
    Missing,
    #[error("environment variable {0} is not set or empty")]
    EnvUnset(String),
    #[error("environment variable {0} does not hold a 32-byte hex private key")]
    EnvMalformed(String),
    #[error("the keystore {0} needs a password: set `password_env` or `password_file`")]
    NoPassword(PathBuf),
    #[error("cannot read the keystore password: {0}")]
    Password(String),
    #[error("cannot decrypt the keystore {path}: {why} (wrong password or not a keystore file)")]
    Keystore { path: PathBuf, why: String },
    #[error(
        "the key for {0} is one of anvil's public development keys; it is refused on chain id {1}, only the local devnet (84532 or 31337) may use it"
    )]
    DevKeyOffDevnet(Address, u64),
}

impl KeySource {
    pub fn is_configured(&self) -> bool {
        self.key_env.is_some() || self.keystore.is_some()
    }

    /// Load the signer. `chain_id` decides whether anvil's public keys may be used.
    pub fn load(&self, chain_id: u64) -> Result<PrivateKeySigner, KeyError> {
        let signer = if let Some(var) = &self.key_env {
            let raw = std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| KeyError::EnvUnset(var.clone()))?;
            raw.trim()
                .parse::<PrivateKeySigner>()
                .map_err(|_| KeyError::EnvMalformed(var.clone()))?
        } else if let Some(path) = &self.keystore {
            let password = if let Some(var) = &self.password_env {
                std::env::var(var).map_err(|_| {
                    KeyError::Password(format!("environment variable {var} is not set"))
                })?
            } else if let Some(file) = &self.password_file {
                std::fs::read_to_string(file)
                    .map_err(|e| KeyError::Password(format!("{}: {e}", file.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            } else {
                return Err(KeyError::NoPassword(path.clone()));
            };
            PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| KeyError::Keystore {
                path: path.clone(),
                why: e.to_string(),
            })?
        } else {
            return Err(KeyError::Missing);
        };
        check_dev_key(signer.address(), chain_id)?;
        Ok(signer)
    }
}

/// Chain ids of the local devnet, where anvil's public keys are fine.
pub const DEVNET_CHAIN_IDS: [u64; 2] = [84532, 31337];

/// Refuse anvil's public development keys anywhere but the devnet.
pub fn check_dev_key(address: Address, chain_id: u64) -> Result<(), KeyError> {
    if is_dev_address(address) && !DEVNET_CHAIN_IDS.contains(&chain_id) {
        return Err(KeyError::DevKeyOffDevnet(address, chain_id));
    }
    Ok(())
}

/// True for the addresses of anvil's default mnemonic (public knowledge: anyone can spend).
pub fn is_dev_address(address: Address) -> bool {
    DEV_KEYS.iter().any(|k| {
        k.parse::<PrivateKeySigner>()
            .map(|s| s.address() == address)
            .unwrap_or(false)
    })
}

/// anvil's ten default development keys ("test test … junk"). Public; devnet only.
pub const DEV_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_only_on_the_devnet() {
        let dev: PrivateKeySigner = DEV_KEYS[0].parse().unwrap();
        assert!(check_dev_key(dev.address(), 84532).is_ok());
        assert!(matches!(
            check_dev_key(dev.address(), 8453),
            Err(KeyError::DevKeyOffDevnet(..))
        ));
        let fresh = PrivateKeySigner::random();
        assert!(check_dev_key(fresh.address(), 8453).is_ok());
    }

    #[test]
    fn errors_never_carry_the_key() {
        // SAFETY: single-threaded use of a test-only variable name.
        unsafe { std::env::set_var("X402_TEST_BAD_KEY", "0xdeadbeefnotakey-secret-material") };
        let src = KeySource {
            key_env: Some("X402_TEST_BAD_KEY".into()),
            ..Default::default()
        };
        let msg = src.load(84532).unwrap_err().to_string();
        assert!(msg.contains("X402_TEST_BAD_KEY"));
        assert!(!msg.contains("secret-material"));
    }

    #[test]
    fn an_encrypted_keystore_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand08::thread_rng();
        let (signer, name) =
            PrivateKeySigner::new_keystore(dir.path(), &mut rng, "pw", None).unwrap();
        let pwfile = dir.path().join("pw.txt");
        std::fs::write(&pwfile, "pw\n").unwrap();
        let src = KeySource {
            keystore: Some(dir.path().join(name)),
            password_file: Some(pwfile),
            ..Default::default()
        };
        assert_eq!(src.load(8453).unwrap().address(), signer.address());
        let wrong = KeySource {
            password_env: Some("X402_TEST_NO_SUCH_VAR".into()),
            password_file: None,
            ..src
        };
        assert!(wrong.load(8453).is_err());
    }
}
