//! The second factor: time-based one-time passwords (RFC 6238) as authenticator apps compute them.
//!
//! Codes are 6 digits, HMAC-SHA1, 30-second steps: the parameters every authenticator app supports.
//! A code is accepted for its own step and one step either side (clock skew and typing time), and only if
//! its step is later than the last step accepted for the user, so a code seen over a shoulder or in a
//! proxy log cannot be used a second time.
//!
//! Enrolment shows the secret as an `otpauth://` URI, which [`terminal_qr`] draws as a QR code in the
//! terminal for the phone to scan.

use std::fmt;

use chrono::{DateTime, Utc};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use rand::RngCore;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{PolicyError, Result};

/// Length of a step in seconds (RFC 6238's recommended value; the only one all apps support).
pub const STEP_SECS: u64 = 30;

/// Digits of a code.
pub const DIGITS: usize = 6;

/// Steps accepted on either side of the current one: RFC 6238 recommends at most one.
pub const SKEW_STEPS: u8 = 1;

/// Bytes of a new secret: 160 bits, the size RFC 4226 recommends for HMAC-SHA1.
pub const SECRET_BYTES: usize = 20;

/// A TOTP shared secret. Zeroed on drop; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// A fresh random 160-bit secret.
    pub fn generate() -> TotpSecret {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rng().fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    /// Parses the base32 form (RFC 4648, padding and case ignored) that apps show and the database stores.
    pub fn from_base32(text: &str) -> Result<TotpSecret> {
        let cleaned = Zeroizing::new(text.trim().trim_end_matches('=').to_ascii_uppercase());
        let bytes =
            base32_decode(&cleaned).ok_or_else(|| PolicyError::Invalid("TOTP secret is not base32".to_owned()))?;
        if bytes.len() < 16 {
            return Err(PolicyError::Invalid(
                "TOTP secret must have at least 128 bits".to_owned(),
            ));
        }
        Ok(TotpSecret(bytes))
    }

    /// The base32 form without padding (what the otpauth URI carries and a person can type).
    pub fn to_base32(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(self.0.len().div_ceil(5) * 8));
        let mut buffer = 0u32;
        let mut bits = 0u32;
        for &byte in self.0.iter() {
            buffer = (buffer << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(char::from(BASE32_ALPHABET[((buffer >> bits) & 31) as usize]));
            }
        }
        if bits > 0 {
            out.push(char::from(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
        }
        buffer.zeroize();
        out
    }
}

/// RFC 4648 base32 alphabet (the one otpauth URIs use).
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Decodes unpadded upper-case RFC 4648 base32; `None` on any other character. Written here rather than
/// borrowed so that every intermediate buffer holding the secret is zeroed.
fn base32_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let value = BASE32_ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = ((buffer << 5) | value) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    buffer.zeroize();
    Some(out)
}

/// A user's TOTP generator: the secret with the issuer ("tokumei") and account name the app displays.
/// `Debug` is redacted and the secret is zeroed on drop.
pub struct Totp {
    inner: TOTP,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Totp")
            .field("issuer", &self.inner.issuer)
            .field("account", &self.inner.account_name)
            .finish_non_exhaustive()
    }
}

impl Drop for Totp {
    fn drop(&mut self) {
        self.inner.secret.zeroize();
    }
}

impl Totp {
    /// The standard generator (SHA-1, 6 digits, 30 s, ±1 step) for `secret`. The issuer and account name
    /// must not contain `:` (the otpauth label separator).
    pub fn new(secret: &TotpSecret, issuer: &str, account: &str) -> Result<Totp> {
        let inner = TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            SKEW_STEPS,
            STEP_SECS,
            secret.0.to_vec(),
            Some(issuer.to_owned()),
            account.to_owned(),
        )
        .map_err(|e| match e {
            // The error may carry the label, never the secret; still, say only what is wrong.
            totp_rs::TotpUrlError::Issuer(_) => PolicyError::Invalid("TOTP issuer must not contain ':'".to_owned()),
            totp_rs::TotpUrlError::AccountName(_) => {
                PolicyError::Invalid("TOTP account name must not contain ':'".to_owned())
            }
            _ => PolicyError::Invalid("invalid TOTP parameters".to_owned()),
        })?;
        Ok(Totp { inner })
    }

    /// The step number containing `now` (seconds since the epoch / 30), or `None` before 1970.
    pub fn step_at(now: DateTime<Utc>) -> Option<i64> {
        u64::try_from(now.timestamp()).ok().map(|s| (s / STEP_SECS) as i64)
    }

    /// The code an authenticator app shows at `now` (tests, and a person's own tooling).
    pub fn code_at(&self, now: DateTime<Utc>) -> Zeroizing<String> {
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        Zeroizing::new(self.inner.generate(secs))
    }

    /// Checks `code` at `now`: returns the step it was generated for when it matches the current step or
    /// one either side AND that step is later than `last_accepted_step` (replay refusal). The caller stores
    /// the returned step as the new last accepted one. Spaces in the code are ignored; every candidate step
    /// is compared in constant time.
    pub fn verify(&self, code: &str, now: DateTime<Utc>, last_accepted_step: Option<i64>) -> Option<i64> {
        let code = Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect::<String>());
        if code.len() != self.inner.digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = Self::step_at(now)?;
        let skew = i64::from(self.inner.skew);
        let mut accepted = None;
        for step in current - skew..=current + skew {
            let Ok(time) = u64::try_from(step).map(|s| s * self.inner.step) else {
                continue;
            };
            let expected = Zeroizing::new(self.inner.generate(time));
            let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
            let fresh = last_accepted_step.is_none_or(|last| step > last);
            if matches && fresh && accepted.is_none() {
                accepted = Some(step);
            }
        }
        accepted
    }

    /// The `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER` URI authenticator apps import. It
    /// contains the secret.
    pub fn otpauth_uri(&self) -> Zeroizing<String> {
        Zeroizing::new(self.inner.get_url())
    }
}

/// Draws `uri` as a QR code with Unicode half blocks (two modules per character cell), quiet zone
/// included, for the enrolling person to scan from the terminal.
///
/// The colours are inverted with respect to printing: light modules and the quiet zone are drawn as full
/// blocks (the terminal's foreground colour) and dark modules as spaces (its background). Most terminals
/// are light text on a dark background, where this gives a normal dark-on-light code; on a light terminal
/// the code appears inverted, which phone scanners read as well.
pub fn terminal_qr(uri: &str) -> Result<String> {
    let code = QrCode::new(uri.as_bytes())
        .map_err(|_| PolicyError::Invalid("the otpauth URI is too long for a QR code".to_owned()))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_else(|| panic!("bad time {secs}"))
    }

    /// RFC 6238 Appendix B, SHA-1 column (secret "12345678901234567890", 8 digits).
    #[test]
    fn rfc6238_appendix_b_sha1() {
        let rfc = TOTP::new_unchecked(
            Algorithm::SHA1,
            8,
            1,
            30,
            b"12345678901234567890".to_vec(),
            None,
            String::new(),
        );
        let totp = Totp { inner: rfc };
        for (t, expected) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(totp.code_at(at(t)).as_str(), expected, "t={t}");
            assert_eq!(totp.verify(expected, at(t), None), Totp::step_at(at(t)), "t={t}");
        }
    }

    fn sample() -> (TotpSecret, Totp) {
        let secret = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap_or_else(|e| panic!("{e}"));
        let totp = Totp::new(&secret, "tokumei", "alice").unwrap_or_else(|e| panic!("{e}"));
        (secret, totp)
    }

    #[test]
    fn skew_and_replay() {
        let (_, totp) = sample();
        let now = at(1_700_000_000);
        let step = Totp::step_at(now).unwrap_or_default();
        let current = totp.code_at(now);
        let previous = totp.code_at(at(1_700_000_000 - 30));
        let next = totp.code_at(at(1_700_000_000 + 30));
        let stale = totp.code_at(at(1_700_000_000 - 60));
        assert_eq!(totp.verify(&current, now, None), Some(step));
        assert_eq!(totp.verify(&previous, now, None), Some(step - 1));
        assert_eq!(totp.verify(&next, now, None), Some(step + 1));
        assert_eq!(
            totp.verify(&stale, now, None),
            None,
            "two steps ago is outside the window"
        );
        // Replay: a step at or before the last accepted one is refused.
        assert_eq!(totp.verify(&current, now, Some(step)), None);
        assert_eq!(totp.verify(&previous, now, Some(step - 1)), None);
        assert_eq!(totp.verify(&next, now, Some(step)), Some(step + 1));
        // Formatting: spaces tolerated, anything else not.
        let spaced = format!("{} {}", &current[..3], &current[3..]);
        assert_eq!(totp.verify(&spaced, now, None), Some(step));
        assert_eq!(totp.verify("12345", now, None), None);
        assert_eq!(totp.verify("abcdef", now, None), None);
        assert_eq!(totp.verify(&current, at(-100), None), None);
    }

    #[test]
    fn uri_and_secret_forms() {
        let (secret, totp) = sample();
        let uri = totp.otpauth_uri();
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/tokumei:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=tokumei"
        );
        assert_eq!(secret.to_base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let lower = TotpSecret::from_base32("gezdgnbvgy3tqojqgezdgnbvgy3tqojq").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lower, secret);
        assert!(TotpSecret::from_base32("not base32!").is_err());
        assert!(TotpSecret::from_base32("GEZDGNBV").is_err(), "too short");
        let fresh = TotpSecret::generate();
        assert_eq!(fresh.0.len(), SECRET_BYTES);
        assert_ne!(fresh, TotpSecret::generate());
        assert!(!format!("{secret:?} {totp:?}").contains("GEZDGNBV"));
        assert!(Totp::new(&secret, "tok:umei", "alice").is_err());
    }

    #[test]
    fn qr_has_a_light_quiet_zone() {
        let (_, totp) = sample();
        let qr = terminal_qr(&totp.otpauth_uri()).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0].chars().count();
        assert!(width >= 25 + 8, "version ≥ 1 plus a 4-module quiet zone on each side");
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // The quiet zone (light) is drawn as full blocks so that it shows light on a dark terminal.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'), "{}", lines[0]);
        assert!(qr.contains(' '), "dark modules are spaces");
        assert!(terminal_qr(&"x".repeat(8000)).is_err());
    }
}
