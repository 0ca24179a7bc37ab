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

/// Seeds sealed under the general service key (derived for this purpose): opened, re-sealed when the dedicated
/// key is present.
const LEGACY_PREFIX: &str = "tkw1:";
/// Seeds sealed under the TOTP seal key, which only the policy service loads.
const PREFIX: &str = "tkw2:";
const AAD_DOMAIN: &[u8] = b"tokumei/totp-seed/v1";

/// The key that seals TOTP seeds (zeroed on drop, never printed), with the prefix of what it seals.
#[derive(Clone)]
pub struct SeedSeal(Zeroizing<[u8; 32]>, &'static str);

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
    /// The seal derived from the general service key (`tkw1:`): what earlier versions wrote.
    pub fn legacy(key: Zeroizing<[u8; 32]>) -> SeedSeal {
        SeedSeal(key, LEGACY_PREFIX)
    }

    /// The seal of the dedicated TOTP seal key (`tkw2:`).
    pub fn dedicated(key: Zeroizing<[u8; 32]>) -> SeedSeal {
        SeedSeal(key, PREFIX)
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
        Ok(format!("{}{}", self.1, STANDARD.encode(out)))
    }

    /// The seed (base32) of a stored value, and whether it was stored in the clear (to be sealed now).
    pub fn open(&self, username: &str, stored: &str) -> Result<(Zeroizing<String>, bool)> {
        if !stored.starts_with("tkw") {
            return Ok((Zeroizing::new(stored.to_owned()), true));
        }
        let Some(body) = stored.strip_prefix(self.1) else {
            return Err(corrupt());
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

/// The seals a directory holds: the dedicated one if this process is the policy service, and the legacy one.
#[derive(Clone, Debug)]
pub struct Seeds {
    dedicated: Option<SeedSeal>,
    legacy: SeedSeal,
}

impl Seeds {
    /// Only the legacy seal (every process but the policy service): it cannot open what the service sealed.
    pub fn legacy(legacy: SeedSeal) -> Seeds {
        Seeds {
            dedicated: None,
            legacy,
        }
    }

    /// With the dedicated seal: new seeds are sealed under it, older ones opened and re-sealed.
    pub fn with_dedicated(mut self, dedicated: SeedSeal) -> Seeds {
        self.dedicated = Some(dedicated);
        self
    }

    /// The stored form of a new seed: under the dedicated seal when present.
    pub fn seal(&self, username: &str, seed_base32: &str) -> Result<String> {
        self.dedicated
            .as_ref()
            .unwrap_or(&self.legacy)
            .seal(username, seed_base32)
    }

    /// The seed of a stored value, and whether to store it anew (in the clear, or under the legacy seal while the
    /// dedicated one is present).
    pub fn open(&self, username: &str, stored: &str) -> Result<(Zeroizing<String>, bool)> {
        if stored.starts_with(PREFIX) {
            let dedicated = self.dedicated.as_ref().ok_or_else(|| {
                PolicyError::InvalidState(
                    "second factors are sealed under the TOTP seal key, which only the policy service holds".into(),
                )
            })?;
            return dedicated.open(username, stored);
        }
        let (seed, in_clear) = self.legacy.open(username, stored)?;
        Ok((seed, in_clear || self.dedicated.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_seeds_open_only_for_their_account_and_key() {
        let seal = SeedSeal::dedicated(Zeroizing::new([5u8; 32]));
        let stored = seal.seal("alice", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(stored.starts_with(PREFIX) && !stored.contains("JBSWY3DPEHPK3PXP"));
        let (seed, legacy) = seal.open("alice", &stored).unwrap();
        assert_eq!((seed.as_str(), legacy), ("JBSWY3DPEHPK3PXP", false));
        assert!(seal.open("bob", &stored).is_err(), "copied onto another account");
        let other = SeedSeal::dedicated(Zeroizing::new([6u8; 32]));
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

    #[test]
    fn what_the_service_seals_only_the_service_opens() {
        let general = SeedSeal::legacy(Zeroizing::new([1u8; 32]));
        let dedicated = SeedSeal::dedicated(Zeroizing::new([2u8; 32]));
        let service = Seeds::legacy(general.clone()).with_dedicated(dedicated);
        let beside = Seeds::legacy(general.clone());
        // New seeds: under the dedicated key, which a process holding only the general key cannot use.
        let stored = service.seal("alice", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(stored.starts_with(PREFIX), "{stored}");
        assert_eq!(service.open("alice", &stored).unwrap().0.as_str(), "JBSWY3DPEHPK3PXP");
        assert!(beside.open("alice", &stored).is_err());
        // A tkw2 value relabelled tkw1 does not open under the general key either (another key, another AAD check).
        let relabelled = stored.replacen(PREFIX, LEGACY_PREFIX, 1);
        assert!(beside.open("alice", &relabelled).is_err());
        // An older seed (general key) opens on the service and is to be sealed anew; beside, it opens as before.
        let old = general.seal("alice", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(old.starts_with(LEGACY_PREFIX));
        assert!(
            service.open("alice", &old).unwrap().1,
            "re-sealed under the dedicated key"
        );
        assert!(!beside.open("alice", &old).unwrap().1);
    }
}
