//! Passwords: argon2id hashes in PHC strings, and the minimum policy a new password must meet.
//!
//! argon2id (RFC 9106) is memory-hard, so a stolen user table cannot be brute-forced cheaply. The crate's
//! defaults (argon2id, version 0x13, m = 19 MiB, t = 2, p = 1: OWASP's recommended minimum) are used; the
//! parameters are recorded in every PHC string, so raising them later only affects new hashes and old ones
//! still verify.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::{PolicyError, Result};

/// Fewest characters a password may have: with the second factor, length is the rule that matters most
/// (NIST SP 800-63B), and 12 leaves room for passphrases.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Most bytes a password may have: bounds the work a request can cause, and is far above any real
/// passphrase.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password against the minimum policy: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes, and not the username itself. The message says which rule failed and never
/// repeats the password.
pub fn check_password_policy(username: &str, password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PolicyError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PolicyError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.trim().eq_ignore_ascii_case(username.trim()) {
        return Err(PolicyError::Invalid("the password must not be the username".to_owned()));
    }
    Ok(())
}

/// Hashes `password` with argon2id and a fresh random 128-bit salt; returns the PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) to store. Slow on purpose (tens of milliseconds): call it
/// off the async executor.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| PolicyError::Invalid(format!("cannot encode the password salt: {e}")))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| PolicyError::Invalid(format!("cannot hash the password: {e}")))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string (with the parameters recorded in it). A malformed
/// string never matches. The comparison inside argon2 is constant-time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Spends the time of one verification without anything to verify against (unknown user, account
/// without a password), so that the response time does not tell a guesser whether the username exists.
pub fn burn_verification(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        let mut random = [0u8; 24];
        rand::rng().fill_bytes(&mut random);
        let filler = Zeroizing::new(hex::encode(random));
        hash_password(&filler).ok()
    });
    if let Some(phc) = dummy {
        let _ = verify_password(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("correct horse battery staple").unwrap_or_else(|e| panic!("{e}"));
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("correct horse battery staple", "not a phc string"));
        // A fresh salt each time.
        let again = hash_password("correct horse battery staple").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(phc, again);
        burn_verification("anything");
    }

    #[test]
    fn policy() {
        assert!(check_password_policy("alice", "twelve chars").is_ok());
        let short = check_password_policy("alice", "elevenchars").map_err(|e| e.to_string());
        assert_eq!(
            short,
            Err("invalid request: the password must have at least 12 characters".to_owned())
        );
        assert!(check_password_policy("alice.tanaka", "alice.tanaka").is_err());
        assert!(check_password_policy("alice.tanaka", "ALICE.TANAKA").is_err());
        assert!(check_password_policy("alice", &"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        // Characters, not bytes: twelve kana are enough.
        assert!(check_password_policy("alice", "あいうえおかきくけこさし").is_ok());
        let message = check_password_policy("alice", "secret")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!message.contains("secret"));
    }
}
