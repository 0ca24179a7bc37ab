//! Who is signed in to the console. The browser holds an opaque random identifier in a cookie; the console keeps,
//! under the identifier's SHA-256, the person's policy session (the bearer token the policy service issued after
//! password and TOTP), their roles and the CSRF token of their forms. A session ends when the policy session
//! expires, after [`IDLE`] without a request, or on sign-out — after which the cookie names nothing: a stolen
//! cookie is worth nothing once its owner signed out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A session unused this long ends (the policy session's own lifetime is shorter still by default).
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// A person signed in.
pub struct ConsoleSession {
    /// Their account.
    pub username: String,
    /// Their organisation (conflicts of interest are shown against it).
    pub organisation: String,
    /// Their roles, as the policy service reported them at sign-in (the service checks them on every call).
    pub roles: Vec<String>,
    /// The policy session (a bearer token; zeroed on drop, never logged).
    token: Zeroizing<String>,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When the policy session expires.
    expires: Instant,
    /// The last download the release service admitted for this person (shown after a redirect, so that reloading
    /// the page never asks for — and counts — another).
    pub download: Mutex<Option<GrantedDownload>>,
    /// The last release build this person completed, by its core order, with the release zone's outcome (shown
    /// after a redirect: reloading the page never asks the zone to complete it again).
    pub built: Mutex<Option<(u64, serde_json::Value)>>,
    /// The private halves of the one-use keys this person's workspace queries and analyses were sealed to (in
    /// memory only, bounded, gone with the session): only the session that asked opens the rows.
    pub workspace_keys: crate::pages::workspace::PendingKeys,
}

/// A download admitted by the release service: its one-time link (a secret: never logged) and what to check.
#[derive(Clone)]
pub struct GrantedDownload {
    /// The file's name.
    pub file: String,
    /// The one-time HTTPS link on the release zone.
    pub url: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Unix seconds after which the link is refused.
    pub expires_at: i64,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("username", &self.username)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl ConsoleSession {
    /// The policy session, for a request to a service.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the person holds `role`.
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

struct Entry {
    session: Arc<ConsoleSession>,
    last_seen: Instant,
}

/// The console's signed-in people, in memory: a restart signs everyone out.
#[derive(Default)]
pub struct SessionStore {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// How often the serving console drops ended sessions.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A fresh random token of 32 bytes, hex (cookie identifiers, CSRF tokens).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl SessionStore {
    /// Opens a session for a person the policy service signed in; returns the cookie's value.
    pub fn open(
        &self,
        username: String,
        organisation: String,
        roles: Vec<String>,
        token: Zeroizing<String>,
        lifetime: Duration,
    ) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let session = ConsoleSession {
            username,
            organisation,
            roles,
            token,
            csrf: random_token(),
            expires: now + lifetime,
            download: Mutex::new(None),
            built: Mutex::new(None),
            workspace_keys: Default::default(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| alive(e, now));
        entries.insert(
            key(&cookie),
            Entry {
                session: Arc::new(session),
                last_seen: now,
            },
        );
        cookie
    }

    /// Drops every session that ended, with what it held (its policy session, its workspace keys): the serving
    /// console calls it every [`SWEEP_EVERY`], so nothing of an ended session waits for the next sign-in.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| alive(e, now));
    }

    /// The session `cookie` names, if it is alive (and marks it used).
    pub fn get(&self, cookie: &str) -> Option<Arc<ConsoleSession>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(cookie);
        let entry = entries.get_mut(&k)?;
        if !alive(entry, now) {
            entries.remove(&k);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    /// Ends the session `cookie` names; returns it (to sign out of the policy service too).
    pub fn close(&self, cookie: &str) -> Option<Arc<ConsoleSession>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&key(cookie)).map(|e| e.session)
    }

    /// How many sessions are open (for the operator's view).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nobody is signed in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn alive(entry: &Entry, now: Instant) -> bool {
    now < entry.session.expires && now.duration_since(entry.last_seen) < IDLE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(store: &SessionStore, lifetime: Duration) -> String {
        store.open(
            "rika".into(),
            "univ-a".into(),
            vec!["researcher".into()],
            Zeroizing::new("tks1.token".into()),
            lifetime,
        )
    }

    #[test]
    fn a_cookie_names_its_session_until_closed() {
        let store = SessionStore::default();
        let cookie = open(&store, Duration::from_secs(60));
        let s = store.get(&cookie).expect("open");
        assert_eq!(s.username, "rika");
        assert_eq!(s.token(), "tks1.token");
        assert!(store.get("not a cookie").is_none());
        assert!(store.close(&cookie).is_some());
        assert!(store.get(&cookie).is_none(), "a closed session's cookie still worked");
    }

    #[test]
    fn an_expired_policy_session_ends_the_console_session() {
        let store = SessionStore::default();
        let cookie = open(&store, Duration::ZERO);
        assert!(store.get(&cookie).is_none());
        assert!(store.is_empty());
    }

    #[test]
    fn cookies_and_csrf_tokens_are_distinct_and_unguessable() {
        let store = SessionStore::default();
        let a = open(&store, Duration::from_secs(60));
        let b = open(&store, Duration::from_secs(60));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let (sa, sb) = (store.get(&a).unwrap(), store.get(&b).unwrap());
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(sa.csrf, a);
        assert!(!format!("{sa:?}").contains("tks1"), "the token reached Debug");
    }
}
