//! Recovery codes: the way back in when the phone with the authenticator app is lost.
//!
//! Confirming TOTP enrolment hands out [`RECOVERY_CODE_COUNT`] codes, each usable once in place of a
//! TOTP code; regenerating them replaces the whole set. A code is 16 characters of Crockford's base32
//! (`0-9` and `a-z` without `i`, `l`, `o`, `u`: 80 random bits), written `xxxx-xxxx-xxxx-xxxx`. Input is
//! forgiving: case, dashes and spaces are ignored, and the look-alikes `o`, `i`, `l` read as `0`, `1`, `1`.
//!
//! Only the SHA-256 of the normalised code is stored. A fast hash is enough here, unlike for passwords:
//! the codes are 80-bit random values, so there is no dictionary to try and a brute force of 2^80 hashes is
//! out of reach whatever the hash costs. The same format serves the one-time invitation codes.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SecretString;

/// How many codes a set holds.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// Characters in a code (5 bits each: 80 bits).
pub const CODE_CHARS: usize = 16;

/// Crockford's base32 alphabet, lower case: no `i`, `l`, `o` or `u` to misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A fresh random code in the human format `xxxx-xxxx-xxxx-xxxx` (80 bits of entropy).
pub fn random_code() -> SecretString {
    let mut random = Zeroizing::new([0u8; CODE_CHARS]);
    rand::rng().fill_bytes(random.as_mut());
    let mut code = String::with_capacity(CODE_CHARS + 3);
    for (i, byte) in random.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        // 256 is a multiple of 32, so the low five bits are uniform.
        code.push(char::from(ALPHABET[usize::from(byte & 31)]));
    }
    SecretString::new(code)
}

/// The canonical form of a typed code (16 alphabet characters, no separators), or `None` if it cannot be
/// a code at all.
pub fn normalise(code: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_CHARS));
    for c in code.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' | '\t' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if out.len() == CODE_CHARS {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_CHARS).then_some(out)
}

/// The stored form of a code: hex SHA-256 over a domain tag (`purpose`, e.g. `recovery` or `invitation`)
/// and the normalised code, or `None` for input that cannot be a code. The tag keeps an invitation code
/// from ever matching a recovery code hash.
pub fn hash_code(purpose: &str, code: &str) -> Option<String> {
    let normal = normalise(code)?;
    let mut hasher = Sha256::new();
    hasher.update(b"tokumei/");
    hasher.update(purpose.as_bytes());
    hasher.update(b"-code/v1\0");
    hasher.update(normal.as_bytes());
    Some(hex::encode(hasher.finalize()))
}

/// The hash stored for a recovery code.
pub fn hash_recovery_code(code: &str) -> Option<String> {
    hash_code("recovery", code)
}

/// A fresh set of recovery codes, shown to the person once. `Debug` shows only how many there are.
#[derive(Clone)]
pub struct RecoveryCodes {
    codes: Vec<SecretString>,
}

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryCodes")
            .field("count", &self.codes.len())
            .finish_non_exhaustive()
    }
}

impl RecoveryCodes {
    /// [`RECOVERY_CODE_COUNT`] new random codes.
    pub fn generate() -> RecoveryCodes {
        RecoveryCodes {
            codes: (0..RECOVERY_CODE_COUNT).map(|_| random_code()).collect(),
        }
    }

    /// The codes in their human format, to show once.
    pub fn codes(&self) -> &[SecretString] {
        &self.codes
    }

    /// Their hashes, the only form stored.
    pub fn hashes(&self) -> Vec<String> {
        self.codes
            .iter()
            .filter_map(|c| hash_recovery_code(c.expose()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn codes_are_formatted_and_distinct() {
        let set = RecoveryCodes::generate();
        assert_eq!(set.codes().len(), RECOVERY_CODE_COUNT);
        let distinct: BTreeSet<&str> = set.codes().iter().map(|c| c.expose()).collect();
        assert_eq!(distinct.len(), RECOVERY_CODE_COUNT);
        for code in set.codes() {
            let code = code.expose();
            assert_eq!(code.len(), 19, "{code}");
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 4);
            assert!(
                groups
                    .iter()
                    .all(|g| g.len() == 4 && g.bytes().all(|b| ALPHABET.contains(&b)))
            );
            assert!(!code.contains(['i', 'l', 'o', 'u']));
        }
        let hashes = set.hashes();
        assert_eq!(hashes.len(), RECOVERY_CODE_COUNT);
        assert!(hashes.iter().all(|h| h.len() == 64));
        let debug = format!("{set:?}");
        assert!(set.codes().iter().all(|c| !debug.contains(c.expose())), "{debug}");
    }

    #[test]
    fn typing_is_forgiving() {
        let canonical = hash_recovery_code("0a1b-2c3d-4e5f-6g7h");
        assert!(canonical.is_some());
        assert_eq!(hash_recovery_code("0A1B2C3D4E5F6G7H"), canonical);
        assert_eq!(hash_recovery_code(" oa1b 2c3d-4e5f-6g7h "), canonical);
        assert_eq!(hash_recovery_code("0aIb-2c3d-4e5f-6g7h"), canonical);
        assert_eq!(hash_recovery_code("0alb-2c3d-4e5f-6g7h"), canonical);
        assert_ne!(hash_recovery_code("0a1b-2c3d-4e5f-6g7j"), canonical);
        assert_eq!(hash_recovery_code("0a1b-2c3d-4e5f-6g7"), None, "too short");
        assert_eq!(hash_recovery_code("0a1b-2c3d-4e5f-6g7h8"), None, "too long");
        assert_eq!(
            hash_recovery_code("0a1b-2c3d-4e5f-6g7u"),
            None,
            "u is not in the alphabet"
        );
        assert_eq!(hash_recovery_code("0a1b-2c3d-4e5f-6g7ü"), None);
        assert_ne!(
            hash_code("invitation", "0a1b-2c3d-4e5f-6g7h"),
            canonical,
            "domain separated"
        );
    }
}
