//! TOTP seeds at rest: sealed with AES-256-GCM under a key derived from the service key for this purpose only,
//! bound to the account by the associated data.
//!
//! Verifying a code needs the seed itself (a hash would not do), so before this the seeds sat in the clear in
//! the policy database: a database dump, a backup or a replica was enough to mint every user's second factor.
//! Sealed, the database alone yields nothing; the seal key is derived (HKDF-SHA-256, its own context) from the
//! service key, which lives in the committee zone's key file, not in the database. Stored form:
//! `tkw1:` + base64(nonce ‖ ciphertext ‖ tag), 96-bit random nonce, AAD = `tokumei/totp-seed/v1 ‖ 0 ‖ username`
//! (a sealed seed copied onto another account does not open). Seeds stored in the clear by an earlier version
//! are still read, and sealed at the user's next successful code.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::error::{PolicyError, Result};

const PREFIX: &str = "tkw1:";
const AAD_DOMAIN: &[u8] = b"tokumei/totp-seed/v1";

/// The key that seals TOTP seeds (zeroed on drop, never printed).
#[derive(Clone)]
pub struct SeedSeal(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SeedSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedSeal(<redacted>)")
    }
}

fn aad(username: &str) -> Vec<u8> {
    let mut a = AAD_DOMAIN.to_vec();
    a.push(0);
    a.extend_from_slice(username.as_bytes());
    a
}

fn corrupt() -> PolicyError {
    PolicyError::InvalidState("a stored second-factor seed cannot be opened with this service key".to_owned())
}

impl SeedSeal {
    /// A seal under `key`.
    pub fn new(key: Zeroizing<[u8; 32]>) -> SeedSeal {
        SeedSeal(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }

    /// The stored form of `seed_base32` for `username`.
    pub fn seal(&self, username: &str, seed_base32: &str) -> Result<String> {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: seed_base32.as_bytes(),
                    aad: &aad(username),
                },
            )
            .map_err(|_| corrupt())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// The seed (base32) of a stored value, and whether it was stored in the clear (to be sealed now).
    pub fn open(&self, username: &str, stored: &str) -> Result<(Zeroizing<String>, bool)> {
        let Some(body) = stored.strip_prefix(PREFIX) else {
            return Ok((Zeroizing::new(stored.to_owned()), true));
        };
        let bytes = Zeroizing::new(STANDARD.decode(body).map_err(|_| corrupt())?);
        if bytes.len() < 12 + 16 {
            return Err(corrupt());
        }
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    Nonce::from_slice(&bytes[..12]),
                    Payload {
                        msg: &bytes[12..],
                        aad: &aad(username),
                    },
                )
                .map_err(|_| corrupt())?,
        );
        let seed = String::from_utf8(plain.to_vec()).map_err(|_| corrupt())?;
        Ok((Zeroizing::new(seed), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_seeds_open_only_for_their_account_and_key() {
        let seal = SeedSeal::new(Zeroizing::new([5u8; 32]));
        let stored = seal.seal("alice", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(stored.starts_with(PREFIX) && !stored.contains("JBSWY3DPEHPK3PXP"));
        let (seed, legacy) = seal.open("alice", &stored).unwrap();
        assert_eq!((seed.as_str(), legacy), ("JBSWY3DPEHPK3PXP", false));
        assert!(seal.open("bob", &stored).is_err(), "copied onto another account");
        let other = SeedSeal::new(Zeroizing::new([6u8; 32]));
        assert!(other.open("alice", &stored).is_err(), "another service key");
        assert_ne!(
            stored,
            seal.seal("alice", "JBSWY3DPEHPK3PXP").unwrap(),
            "fresh nonce each time"
        );
        let (seed, legacy) = seal.open("alice", "JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!((seed.as_str(), legacy), ("JBSWY3DPEHPK3PXP", true));
        assert!(!format!("{seal:?}").contains('5'));
    }
}
