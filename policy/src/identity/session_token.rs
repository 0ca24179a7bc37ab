//! Session tokens: what a client presents after logging in, until it expires (15 minutes by default).
//!
//! A token is `tks1.<claims>.<signature>`: the claims as JSON, base64url without padding, then the
//! service key's ed25519 signature over those JSON bytes (purpose [`SignaturePurpose::SessionToken`],
//! so no other signature of the service can pass for a token). Because the claims are signed, a service
//! holding only the public key (the release service) can check a token offline with [`verify`]; the
//! policy service additionally checks that the session was not revoked and the user is still active.
//! Tokens are short-lived so that a stolen one is useful briefly, and bearer secrets: [`SessionToken`]
//! never shows itself in `Debug` output.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::authorization::{AuthMethod, Role};
use crate::error::{PolicyError, Result};
use crate::service_key::{ServiceKey, ServicePublicKey, SignaturePurpose};

/// Format tag at the start of every token: a later format gets a new tag instead of being misparsed.
pub const TOKEN_PREFIX: &str = "tks1";

/// Default lifetime of a session: long enough for a review sitting, short enough that a leaked token
/// soon stops working.
pub const DEFAULT_SESSION_TTL: TimeDelta = TimeDelta::minutes(15);

/// Longest accepted token: bounds the work an unauthenticated request can cause.
const MAX_TOKEN_LEN: usize = 8192;

/// How far in the future `issued_at` may lie (clock differences between front-ends).
const MAX_CLOCK_AHEAD_SECS: i64 = 60;

/// What a token asserts, signed by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Random 128-bit identifier (hex) of the session row, so the session can be revoked.
    pub session_id: String,
    /// Who logged in.
    pub username: String,
    /// Their organisation at login.
    pub organisation: String,
    /// Their roles at login. The policy service re-reads the current roles on every request; a verifier
    /// holding only the public key sees these, at most one token lifetime old.
    pub roles: BTreeSet<Role>,
    /// How they authenticated.
    pub auth: AuthMethod,
    /// Issue time, unix seconds.
    pub issued_at: i64,
    /// End of validity, unix seconds (exclusive).
    pub expires_at: i64,
}

/// A signed session token: a bearer secret, so `Debug` is redacted and the text is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(Zeroizing<String>);

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl SessionToken {
    /// The token text, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SessionToken {
    fn from(text: String) -> Self {
        SessionToken(Zeroizing::new(text))
    }
}

/// A fresh random 128-bit session identifier (32 hex digits).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Signs `claims` into a token.
pub fn issue(key: &ServiceKey, claims: &SessionClaims) -> Result<SessionToken> {
    let json =
        serde_json::to_vec(claims).map_err(|e| PolicyError::Invalid(format!("cannot encode session claims: {e}")))?;
    let signature = key.sign(SignaturePurpose::SessionToken, &json);
    Ok(SessionToken::from(format!(
        "{TOKEN_PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

/// Checks the token's format and signature and returns its claims, without looking at the time (logout
/// of an expired session, inspection). Errors: `SessionInvalid("malformed")` or `("bad signature")`.
pub fn verify_signature(public: &ServicePublicKey, token: &str) -> Result<SessionClaims> {
    let malformed = || PolicyError::SessionInvalid("malformed".to_owned());
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed());
    }
    let mut parts = token.trim().split('.');
    let (Some(prefix), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if prefix != TOKEN_PREFIX {
        return Err(malformed());
    }
    let json = URL_SAFE_NO_PAD.decode(claims).map_err(|_| malformed())?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
    if json.is_empty() || signature.len() != 64 {
        return Err(malformed());
    }
    if !public.verify(SignaturePurpose::SessionToken, &json, &signature) {
        return Err(PolicyError::SessionInvalid("bad signature".to_owned()));
    }
    // Parsed only once the signature proved the service wrote it.
    serde_json::from_slice(&json).map_err(|_| malformed())
}

/// Checks a token completely as far as possible without the database: format, signature and validity at
/// `now`. Errors are `SessionInvalid` with `malformed`, `bad signature`, `expired` or `not yet valid`.
pub fn verify(public: &ServicePublicKey, token: &str, now: DateTime<Utc>) -> Result<SessionClaims> {
    let claims = verify_signature(public, token)?;
    let now = now.timestamp();
    if now >= claims.expires_at {
        return Err(PolicyError::SessionInvalid("expired".to_owned()));
    }
    if claims.issued_at > now.saturating_add(MAX_CLOCK_AHEAD_SECS) {
        return Err(PolicyError::SessionInvalid("not yet valid".to_owned()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> SessionClaims {
        SessionClaims {
            session_id: new_session_id(),
            username: "alice".to_owned(),
            organisation: "univ-a".to_owned(),
            roles: [Role::Researcher, Role::CommitteeMember].into_iter().collect(),
            auth: AuthMethod::PasswordTotp,
            issued_at: now,
            expires_at: now + DEFAULT_SESSION_TTL.num_seconds(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn reason(result: Result<SessionClaims>) -> String {
        match result {
            Err(PolicyError::SessionInvalid(reason)) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn issue_and_verify() {
        let key = ServiceKey::from_seed(&[1; 32]);
        let c = claims(1_700_000_000);
        let token = issue(&key, &c).unwrap_or_else(|e| panic!("{e}"));
        assert!(token.expose().starts_with("tks1."));
        assert_eq!(format!("{token:?}"), "SessionToken(<redacted>)");
        let got = verify(&key.public(), token.expose(), at(1_700_000_000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, c);
        assert!(verify(&key.public(), token.expose(), at(1_700_000_000 + 899)).is_ok());
        assert_eq!(
            reason(verify(&key.public(), token.expose(), at(1_700_000_000 + 900))),
            "expired"
        );
        assert_eq!(
            reason(verify(&key.public(), token.expose(), at(1_700_000_000 - 61))),
            "not yet valid"
        );
        assert!(verify_signature(&key.public(), token.expose()).is_ok());
    }

    #[test]
    fn forgeries_and_garbage_are_refused() {
        let key = ServiceKey::from_seed(&[1; 32]);
        let other = ServiceKey::from_seed(&[2; 32]);
        let now = at(1_700_000_000);
        let c = claims(1_700_000_000);
        let token = issue(&key, &c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reason(verify(&other.public(), token.expose(), now)), "bad signature");

        // Claims changed (roles escalated) but signature kept.
        let mut escalated = c.clone();
        escalated.roles.insert(Role::Operator);
        let forged_json = serde_json::to_vec(&escalated).unwrap_or_default();
        let signature = token.expose().rsplit('.').next().unwrap_or_default();
        let forged = format!("tks1.{}.{signature}", URL_SAFE_NO_PAD.encode(forged_json));
        assert_eq!(reason(verify(&key.public(), &forged, now)), "bad signature");

        // A signature for another purpose over the same bytes.
        let json = serde_json::to_vec(&c).unwrap_or_default();
        let audit_sig = key.sign(SignaturePurpose::AuditEntry, &json);
        let cross = format!(
            "tks1.{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(audit_sig)
        );
        assert_eq!(reason(verify(&key.public(), &cross, now)), "bad signature");

        for garbage in [
            "",
            "tks1",
            "tks1..",
            "tks2.a.b",
            "tks1.!!.b",
            "tks1.a.b.c",
            &"x".repeat(9000),
        ] {
            assert_eq!(
                reason(verify(&key.public(), garbage, now)),
                "malformed",
                "{garbage:.20}"
            );
        }
        // Validly signed bytes that are not claims.
        let junk = b"not json";
        let sig = key.sign(SignaturePurpose::SessionToken, junk);
        let signed_junk = format!("tks1.{}.{}", URL_SAFE_NO_PAD.encode(junk), URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(reason(verify(&key.public(), &signed_junk, now)), "malformed");
    }
}
