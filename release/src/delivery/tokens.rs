//! One-time, resumable download tokens.
//!
//! A token is 256 random bits, base64url without padding (43 characters). It is handed to the recipient once
//! (in `RequestDownload`'s reply) and the zone keeps only its SHA-256, in memory: a copy of the server's
//! memory or logs never yields a usable token, and a restart invalidates every token (the recipient asks
//! for a new one, which is admitted and counted again).
//!
//! A token stands for **one download of one file** of one recipient's copy of one release, and is refused
//! once either of these happens first:
//! - **the whole file has been sent once** (`TOKEN_USED`): any number of HTTP requests, each for any byte
//!   range, may use the token until every byte of the file has been sent at least once — so an interrupted
//!   transfer resumes with `Range: bytes=N-` on the same token, yet the file cannot be fetched twice;
//! - **it expires** (`TOKEN_EXPIRED`), a few minutes after issue (default [`DEFAULT_TTL`]). A transfer
//!   already under way when the token expires runs to its end.
//!
//! Anything else (malformed, never issued, forgotten after a restart or long after expiry) is
//! `TOKEN_INVALID`. The token is not bound to the client's address: a laptop that changes networks halfway
//! through resumes. "Sent" means handed to the TLS connection; a byte lost in flight after that can only be
//! fetched again with a new token.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How long a token lives unless configured otherwise: long enough to start a transfer, short enough that
/// a leaked URL is soon worthless.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The longest a token may live: a download URL is not a standing credential.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a used or expired token is remembered after its expiry, so that it is reported as
/// `TOKEN_USED`/`TOKEN_EXPIRED` (an honest client learns why) before becoming `TOKEN_INVALID`.
const REMEMBER_AFTER_EXPIRY: Duration = Duration::from_secs(3600);

/// What a token gives access to: one file of one recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadGrant {
    /// The release.
    pub release: String,
    /// The approval the release was built under (for the audit ledger).
    pub application: String,
    /// The recipient whose copy it is (the token's holder, as authenticated when it was issued).
    pub recipient: String,
    /// The file's name in the copy.
    pub file: String,
    /// Plaintext length.
    pub bytes: u64,
    /// SHA-256 of the plaintext, hex (served as the `ETag`).
    pub sha256: String,
}

/// A freshly issued token. The token itself is a secret: it is zeroed on drop and not shown by `Debug`.
pub struct IssuedToken {
    /// The token (base64url), to put in the download URL.
    pub token: Zeroizing<String>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token was refused; [`TokenError::reason`] is the stable code sent to the client and audited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, never issued, or forgotten.
    #[error("unknown download token: request a new download")]
    Invalid,
    /// The whole file was already sent once under this token.
    #[error("this download token was already used for the whole file: request a new download")]
    Used(Box<DownloadGrant>),
    /// The token is past its expiry.
    #[error("this download token has expired: request a new download")]
    Expired(Box<DownloadGrant>),
}

impl TokenError {
    /// `TOKEN_INVALID`, `TOKEN_USED` or `TOKEN_EXPIRED`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Invalid => "TOKEN_INVALID",
            TokenError::Used(_) => "TOKEN_USED",
            TokenError::Expired(_) => "TOKEN_EXPIRED",
        }
    }

    /// The grant behind a known token (for auditing a refusal against its holder).
    pub fn grant(&self) -> Option<&DownloadGrant> {
        match self {
            TokenError::Invalid => None,
            TokenError::Used(g) | TokenError::Expired(g) => Some(g),
        }
    }
}

/// The SHA-256 of a token: how the table knows it, and how a transfer refers to it without holding it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; 32]);

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenId(..)")
    }
}

impl TokenId {
    /// The identifier of `token`, or `None` if it is not a well-formed token.
    fn of(token: &str) -> Option<TokenId> {
        let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?);
        if raw.len() != 32 {
            return None;
        }
        Some(TokenId(Sha256::digest(token.as_bytes()).into()))
    }
}

struct Entry {
    grant: DownloadGrant,
    expires: Instant,
    /// Byte ranges already sent, sorted and merged.
    sent: Vec<Range<u64>>,
    used: bool,
}

impl Entry {
    fn record(&mut self, range: Range<u64>) {
        if range.start < range.end {
            self.sent.push(range);
            self.sent.sort_by_key(|r| r.start);
            let mut merged: Vec<Range<u64>> = Vec::with_capacity(self.sent.len());
            for r in self.sent.drain(..) {
                match merged.last_mut() {
                    Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                    _ => merged.push(r),
                }
            }
            self.sent = merged;
        }
        let whole = self.grant.bytes == 0
            || self
                .sent
                .first()
                .is_some_and(|r| r.start == 0 && r.end >= self.grant.bytes);
        if whole {
            self.used = true;
        }
    }
}

/// The tokens in force, by their SHA-256. Shared by the gRPC service (which issues) and the HTTPS endpoint
/// (which redeems).
pub struct TokenTable {
    ttl: Duration,
    entries: Mutex<HashMap<TokenId, Entry>>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenTable {
    /// An empty table issuing tokens that live `ttl` (at most [`MAX_TTL`]).
    pub fn new(ttl: Duration) -> TokenTable {
        TokenTable {
            ttl: ttl.min(MAX_TTL),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long tokens live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenId, Entry>> {
        // A panic while holding the lock cannot leave an entry half-updated in a way that grants more than
        // it should (every update is a single assignment or a merge), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a token for `grant`; forgets tokens long past their expiry.
    pub fn issue(&self, grant: DownloadGrant) -> IssuedToken {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut raw[..]);
        let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(&raw[..]));
        let now = Instant::now();
        let id = TokenId(Sha256::digest(token.as_bytes()).into());
        let mut entries = self.lock();
        entries.retain(|_, e| now.saturating_duration_since(e.expires) < REMEMBER_AFTER_EXPIRY);
        entries.insert(
            id,
            Entry {
                grant,
                expires: now.checked_add(self.ttl).unwrap_or(now + MAX_TTL),
                sent: Vec::new(),
                used: false,
            },
        );
        let expires_at = chrono::Duration::from_std(self.ttl)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        IssuedToken { token, expires_at }
    }

    /// Checks a token presented by a client: its identifier and grant if it may still be used.
    pub fn redeem(&self, token: &str) -> Result<(TokenId, DownloadGrant), TokenError> {
        let id = TokenId::of(token).ok_or(TokenError::Invalid)?;
        let entries = self.lock();
        let entry = entries.get(&id).ok_or(TokenError::Invalid)?;
        if entry.used {
            return Err(TokenError::Used(Box::new(entry.grant.clone())));
        }
        if Instant::now() >= entry.expires {
            return Err(TokenError::Expired(Box::new(entry.grant.clone())));
        }
        Ok((id, entry.grant.clone()))
    }

    /// Records that `range` of the token's file was sent; the token is used up once the whole file was.
    pub fn record_sent(&self, id: TokenId, range: Range<u64>) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.record(range);
        }
    }

    /// Forgets a token whose approval no longer stands: it is `TOKEN_INVALID` from now on.
    pub fn forget(&self, id: TokenId) {
        self.lock().remove(&id);
    }

    /// Whether the token's whole file has been sent (false for an unknown token).
    pub fn is_used(&self, id: TokenId) -> bool {
        self.lock().get(&id).is_some_and(|e| e.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(bytes: u64) -> DownloadGrant {
        DownloadGrant {
            release: "R-A-1".into(),
            application: "A-1".into(),
            recipient: "rika".into(),
            file: "observations.csv".into(),
            bytes,
            sha256: "00".into(),
        }
    }

    #[test]
    fn resumable_until_every_byte_was_sent_once() {
        let table = TokenTable::new(Duration::from_secs(60));
        let issued = table.issue(grant(100));
        assert_eq!(issued.token.len(), 43);
        let (id, g) = table.redeem(&issued.token).expect("fresh token");
        assert_eq!(g.file, "observations.csv");
        table.record_sent(id, 0..40);
        table.record_sent(id, 60..100);
        assert!(table.redeem(&issued.token).is_ok(), "a gap remains: resumable");
        table.record_sent(id, 30..61);
        assert_eq!(
            table.redeem(&issued.token).map(|_| ()).map_err(|e| e.reason()),
            Err("TOKEN_USED")
        );
        assert!(table.is_used(id));
    }

    #[test]
    fn unknown_malformed_and_expired_tokens_are_refused() {
        let table = TokenTable::new(Duration::from_millis(1));
        let reason = |t: &str| table.redeem(t).map(|_| ()).map_err(|e| e.reason());
        assert_eq!(reason("nope"), Err("TOKEN_INVALID"));
        assert_eq!(reason(&URL_SAFE_NO_PAD.encode([7u8; 32])), Err("TOKEN_INVALID"));
        let issued = table.issue(grant(10));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(reason(&issued.token), Err("TOKEN_EXPIRED"));
        assert!(!format!("{issued:?}").contains(issued.token.as_str()));
    }

    #[test]
    fn an_empty_file_is_used_by_one_full_request() {
        let table = TokenTable::new(Duration::from_secs(60));
        let issued = table.issue(grant(0));
        let (id, _) = table.redeem(&issued.token).expect("fresh");
        table.record_sent(id, 0..0);
        assert!(table.is_used(id));
    }
}
