//! Identity: organisations, users and roles, and how each proves who it is.
//!
//! People (researchers, committee members and chairs, operators, auditors) log in with a password hashed
//! with argon2id and a second factor: a TOTP code from an authenticator app (RFC 6238), or one of ten
//! single-use recovery codes when the phone is lost. Repeated failures lock the account with an
//! exponential back-off. A successful login yields a short-lived session token signed with the service's
//! ed25519 key, which any holder of the public key (the release service) can check offline.
//! Service identities (hospitals, whose username is their 10-digit institution code) have no password:
//! they are bound to the SHA-256 fingerprint of the client certificate that mutual TLS verified.
//!
//! The pure rules live in their own modules and never read the clock (every function takes `now`), so
//! tests run them with fixed clocks:
//! - [`password`]: argon2id PHC hashing and the minimum password policy.
//! - [`totp`]: RFC 6238 codes with ±1 step of skew, replay refusal, otpauth URI and terminal QR code.
//! - [`recovery_codes`]: ten 80-bit single-use codes, stored only as SHA-256 hashes.
//! - [`lockout`]: when repeated failures lock an account, and for how long.
//! - [`session_token`]: issuing and verifying the signed `tks1.` session tokens.
//!
//! [`directory`] stores all of it in the policy database ([`crate::database::PolicyDb`]) and is the API
//! the services and the CLI call.

use std::fmt;

use zeroize::Zeroizing;

pub mod directory;
pub mod grants;
pub mod lockout;
pub mod password;
pub mod recovery_codes;
pub mod seed_seal;
pub mod session_token;
pub mod totp;

pub use directory::{
    Directory, Enrolment, Invitation, Organisation, SecondFactor, Session, UserKind, UserRecord, UserStatus,
};
pub use lockout::{LockoutPolicy, LockoutState};
pub use recovery_codes::RecoveryCodes;
pub use session_token::{SessionClaims, SessionToken};
pub use totp::{Totp, TotpSecret};

/// A secret shown to a person once (invitation code, TOTP secret, recovery code...): it is zeroed when
/// dropped and its `Debug` output is redacted, so it cannot leak into logs or error reports by accident.
/// There is deliberately no `Display`: printing it takes an explicit [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps `value`.
    pub fn new(value: String) -> SecretString {
        SecretString(Zeroizing::new(value))
    }

    /// The secret itself, for the one place that must show or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `username` is acceptable: 1–64 characters of `[a-z0-9._-]`. Kept narrow so usernames are safe
/// in terminals, file names, otpauth labels (no `:`) and audit records, and cannot be confused by case.
pub fn check_username(username: &str) -> crate::Result<()> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(crate::PolicyError::Invalid(format!(
            "username {:?} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
            truncate_for_message(username)
        )))
    }
}

/// The start of a value for an error message: refused input can be arbitrarily long.
pub(crate) fn truncate_for_message(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["alice", "a", "dr.sato-2", "x_y", "1310000001", &"a".repeat(64)] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        for bad in ["", "Alice", "al ice", "a:b", "ユーザー", "a/b", &"a".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_strings_are_redacted() {
        let s = SecretString::new("hunter2-hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2-hunter2");
    }
}
