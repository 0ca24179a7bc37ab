//! The user directory: organisations, users, roles, credentials and sessions in the policy database.
//!
//! Life of a person's account:
//! 1. An operator adds the user ([`Directory::add_user`]; on a new installation the first operator comes
//!    from [`Directory::bootstrap_operator`]). The user is `invited` and an [`Invitation`] code (80 bits,
//!    valid 72 hours, stored hashed) is handed to them out of band.
//! 2. The user enrols with the code and a password ([`Directory::enrol`]): the account is `pending_totp`
//!    and the [`Enrolment`] shows the TOTP secret as an otpauth URI and a terminal QR code.
//! 3. The user proves the app works with a first code ([`Directory::confirm_totp`]): the account is
//!    `active` and ten recovery codes are shown once.
//! 4. Logins ([`Directory::login`]) need the password and a TOTP or recovery code, and yield a signed
//!    session token that [`Directory::authenticate`] turns back into an [`Actor`] on every request.
//!
//! Hospitals are service identities: no password, bound to the fingerprint of their client certificate
//! ([`Directory::add_service_identity`], [`Directory::authenticate_certificate`]).
//!
//! Every credential check runs in one transaction that begins by updating the user's row, which takes
//! SQLite's write lock or PostgreSQL's row lock: two logins of the same user are serialised, so a TOTP code
//! cannot be accepted twice and no failure escapes the lockout counter. The slow argon2 verification runs
//! before that transaction (on a blocking thread), so the lock is held for milliseconds only; the lockout
//! state is checked again once the lock is held.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::lockout::{LockoutPolicy, LockoutState};
use super::recovery_codes::{self, RecoveryCodes};
use super::seed_seal::{SeedSeal, Seeds};
use super::session_token::{self, DEFAULT_SESSION_TTL, SessionClaims, SessionToken};
use super::totp::{self, Totp, TotpSecret};
use super::{SecretString, check_username, password, truncate_for_message};
use crate::authorization::{Actor, AuthMethod, Role};
use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};
use crate::service_key::{ServiceKey, ServicePublicKey};

/// Issuer shown by authenticator apps next to the account name.
pub const DEFAULT_TOTP_ISSUER: &str = "tokumei";

/// How long an invitation code stays valid: long enough to reach someone over a weekend, short enough
/// that a forgotten one does not stay usable.
pub const INVITATION_TTL: TimeDelta = TimeDelta::hours(72);

/// Longest session lifetime [`Directory::with_session_ttl`] accepts: tokens are meant to be short-lived.
pub const MAX_SESSION_TTL: TimeDelta = TimeDelta::hours(12);

/// Longest display name, organisation name or login source stored.
const MAX_TEXT_LEN: usize = 256;

/// Whether an account is a person or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// A person: password and second factor.
    Person,
    /// A service identity (a hospital): client certificate only.
    Service,
}

impl UserKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Person => "person",
            UserKind::Service => "service",
        }
    }

    fn parse(s: &str) -> Result<UserKind> {
        match s {
            "person" => Ok(UserKind::Person),
            "service" => Ok(UserKind::Service),
            other => Err(corrupt("user kind", other)),
        }
    }
}

/// Where an account stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Created by an operator; waiting for the person to enrol with the invitation code.
    Invited,
    /// Password set; waiting for the first TOTP code to prove the app works.
    PendingTotp,
    /// May log in.
    Active,
    /// Refused everything; its sessions were revoked.
    Disabled,
}

impl UserStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::PendingTotp => "pending_totp",
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Result<UserStatus> {
        match s {
            "invited" => Ok(UserStatus::Invited),
            "pending_totp" => Ok(UserStatus::PendingTotp),
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(corrupt("user status", other)),
        }
    }
}

/// An organisation users belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    /// Short identifier (`[a-z0-9._-]`, like usernames).
    pub id: String,
    /// Full name.
    pub name: String,
    /// When it was added (RFC 3339, UTC).
    pub created_at: String,
}

/// What may be shown about an account: never a secret, not even a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Username (a hospital's is its institution code).
    pub username: String,
    /// Name shown to people.
    pub display_name: String,
    /// Organisation identifier.
    pub organisation: String,
    /// Person or service.
    pub kind: UserKind,
    /// Where the account stands.
    pub status: UserStatus,
    /// Current roles.
    pub roles: BTreeSet<Role>,
    /// When the account was created (RFC 3339, UTC).
    pub created_at: String,
    /// Last successful login (RFC 3339, UTC), if any.
    pub last_login_at: Option<String>,
    /// Unused recovery codes left: an operator can remind someone who is running out.
    pub recovery_codes_left: i64,
    /// Fingerprint (SHA-256, hex) of a service identity's client certificate.
    pub certificate_sha256: Option<String>,
}

/// A one-time invitation code, shown once to the operator who hands it to the new user.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// Who is invited.
    pub username: String,
    /// The code (`xxxx-xxxx-xxxx-xxxx`); stored only hashed.
    pub code: SecretString,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A person invited with a code only they know (see [`Directory::add_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitedUser {
    /// Who is invited.
    pub username: String,
    /// When their code stops working.
    pub expires_at: DateTime<Utc>,
}

/// A fresh invitation code and its claim: the invitee keeps the code and hands the claim (its hash, all an
/// administrator needs) to the administrators. `tokumei user claim` calls this on the invitee's side.
pub fn invitation_claim() -> Result<(SecretString, String)> {
    let code = recovery_codes::random_code();
    let claim = recovery_codes::hash_code("invitation", code.expose())
        .ok_or_else(|| PolicyError::InvalidState("generated invitation code is malformed".to_owned()))?;
    Ok((code, claim))
}

/// A claim as stored: 64 lower-case hex digits (the SHA-256 an invitation code hashes to).
pub(super) fn check_claim(claim: &str) -> Result<String> {
    let claim = claim.trim().to_ascii_lowercase();
    if claim.len() != 64 || !claim.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PolicyError::Invalid(
            "the claim is the 64 hex digits `tokumei user claim` printed for the invitee".to_owned(),
        ));
    }
    Ok(claim)
}

/// What the enrolling person needs to set up their authenticator app. All three fields contain the TOTP
/// secret, so `Debug` shows none of them.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The enrolling user.
    pub username: String,
    /// `otpauth://totp/tokumei:USER?secret=...&issuer=tokumei`, for apps that import links.
    pub otpauth_uri: SecretString,
    /// The secret in base32, for typing into an app by hand.
    pub secret_base32: SecretString,
    /// The URI as a QR code drawn with Unicode blocks, to print in the terminal.
    pub qr_terminal: SecretString,
}

/// The second factor presented at login.
#[derive(Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A code from the authenticator app.
    Totp(&'a str),
    /// One of the recovery codes (consumed).
    RecoveryCode(&'a str),
}

impl fmt::Debug for SecondFactor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecondFactor::Totp(_) => f.write_str("Totp(<redacted>)"),
            SecondFactor::RecoveryCode(_) => f.write_str("RecoveryCode(<redacted>)"),
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Session {
    /// The bearer token to present on each request (redacted in `Debug`).
    pub token: SessionToken,
    /// The session's identifier (not secret: for audit records and revocation).
    pub session_id: String,
    /// Who logged in, with their roles at login.
    pub actor: Actor,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}

/// What this process can do with session tokens: the policy service issues and checks them with the session
/// key; any other process only checks them, with its public half.
#[derive(Debug, Clone)]
enum Sessions {
    Issuer(ServiceKey),
    Verifier(ServicePublicKey),
}

impl Sessions {
    fn public(&self) -> ServicePublicKey {
        match self {
            Sessions::Issuer(key) => key.public(),
            Sessions::Verifier(public) => *public,
        }
    }
}

/// The directory over the policy database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Directory {
    db: PolicyDb,
    sessions: Sessions,
    seeds: Seeds,
    lockout: LockoutPolicy,
    session_ttl: TimeDelta,
    totp_issuer: String,
}

/// The stored account, secrets included: never leaves this module (and has no `Debug`).
struct UserRow {
    username: String,
    display_name: String,
    organisation: String,
    kind: UserKind,
    status: UserStatus,
    password_hash: Option<String>,
    totp_secret: Option<Zeroizing<String>>,
    totp_last_step: Option<i64>,
    lockout: LockoutState,
    invitation_hash: Option<String>,
    invitation_expires_ms: Option<i64>,
    certificate_sha256: Option<String>,
    created_at: String,
    last_login_ms: Option<i64>,
}

const USER_COLUMNS: &str = "username, display_name, organisation, kind, status, password_hash, totp_secret, \
     totp_last_step, failed_attempts, locked_until_ms, invitation_hash, invitation_expires_ms, certificate_sha256, \
     created_at, last_login_ms";

impl Directory {
    /// A directory on `db` (migrated by [`PolicyDb::open`]) signing session tokens with `key`, with the
    /// default lockout policy, 15-minute sessions and the TOTP issuer "tokumei".
    pub(crate) fn new(db: PolicyDb, key: ServiceKey) -> Directory {
        Directory {
            seeds: Seeds::legacy(SeedSeal::legacy(key.derive_key(b"tokumei/totp-seed-seal/v1"))),
            db,
            sessions: Sessions::Issuer(key),
            lockout: LockoutPolicy::default(),
            session_ttl: DEFAULT_SESSION_TTL,
            totp_issuer: DEFAULT_TOTP_ISSUER.to_owned(),
        }
    }

    /// The same directory issuing and checking sessions with `key` (the policy service's session key).
    pub fn with_session_key(mut self, key: ServiceKey) -> Directory {
        self.sessions = Sessions::Issuer(key);
        self
    }

    /// The same directory sealing second-factor seeds under `key` (`policy/totp-seal.key`, the policy service's
    /// alone): a process holding the database and the general service key can no longer read them. Seeds sealed
    /// under the general key by earlier versions are re-sealed at their owner's next code.
    pub fn with_seed_key(mut self, key: &ServiceKey) -> Directory {
        self.seeds = self
            .seeds
            .with_dedicated(SeedSeal::dedicated(key.derive_key(b"tokumei/totp-seed-seal/v2")));
        self
    }

    /// The same directory only checking sessions, against `public`: it can log nobody in.
    pub fn with_session_verifier(mut self, public: ServicePublicKey) -> Directory {
        self.sessions = Sessions::Verifier(public);
        self
    }

    /// The same directory with another lockout policy (configuration).
    pub fn with_lockout_policy(mut self, policy: LockoutPolicy) -> Result<Directory> {
        policy.validate()?;
        self.lockout = policy;
        Ok(self)
    }

    /// The same directory with another session lifetime (1 second to [`MAX_SESSION_TTL`]).
    pub fn with_session_ttl(mut self, ttl: TimeDelta) -> Result<Directory> {
        if ttl < TimeDelta::seconds(1) || ttl > MAX_SESSION_TTL {
            return Err(PolicyError::Invalid(format!(
                "session lifetime must be between 1 second and {} hours",
                MAX_SESSION_TTL.num_hours()
            )));
        }
        self.session_ttl = ttl;
        Ok(self)
    }

    /// The same directory with another TOTP issuer name (what authenticator apps display), e.g. to tell
    /// two installations apart on one phone. Applies to enrolments from now on.
    pub fn with_totp_issuer(mut self, issuer: &str) -> Result<Directory> {
        check_text("TOTP issuer", issuer)?;
        if issuer.contains(':') || issuer.len() > 64 {
            return Err(PolicyError::Invalid(
                "TOTP issuer must be at most 64 bytes without ':'".to_owned(),
            ));
        }
        self.totp_issuer = issuer.to_owned();
        Ok(self)
    }

    /// The database, for callers that keep other records in it.
    pub fn db(&self) -> &PolicyDb {
        &self.db
    }

    /// The key that verifies session tokens, for services that check them offline.
    pub fn public_key(&self) -> ServicePublicKey {
        self.sessions.public()
    }

    /// The lockout policy in force.
    pub fn lockout_policy(&self) -> LockoutPolicy {
        self.lockout
    }

    /// The session lifetime in force.
    pub fn session_ttl(&self) -> TimeDelta {
        self.session_ttl
    }

    // -----------------------------------------------------------------------------------------------------
    // Organisations
    // -----------------------------------------------------------------------------------------------------

    /// Adds an organisation. `id` follows the username rules; a duplicate is `AlreadyExists`.
    pub async fn add_organisation(&self, id: &str, name: &str, now: DateTime<Utc>) -> Result<Organisation> {
        check_organisation_id(id)?;
        check_text("organisation name", name)?;
        let created_at = rfc3339(now);
        let inserted = sqlx::query(
            "INSERT INTO organisations (id, name, created_at_ms, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(now.timestamp_millis())
        .bind(&created_at)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(PolicyError::AlreadyExists {
                kind: "organisation",
                id: id.to_owned(),
            });
        }
        Ok(Organisation {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at,
        })
    }

    /// Every organisation, by identifier.
    pub async fn organisations(&self) -> Result<Vec<Organisation>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM organisations ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(organisation_from_row).collect()
    }

    /// One organisation, or `NotFound`.
    pub async fn organisation(&self, id: &str) -> Result<Organisation> {
        let row = sqlx::query("SELECT id, name, created_at FROM organisations WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| not_found("organisation", id))?;
        organisation_from_row(&row)
    }

    // -----------------------------------------------------------------------------------------------------
    // Accounts
    // -----------------------------------------------------------------------------------------------------

    /// How many second-factor seeds are still sealed as earlier versions sealed them (`tkw1:`, under a key derived
    /// from the ledger key): re-sealed at each owner's next code, and lost if the ledger key rotates first.
    pub async fn legacy_sealed_seeds(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM users WHERE totp_secret LIKE 'tkw1:%'")
                .fetch_one(self.db.pool())
                .await?
                .try_get("n")?,
        )
    }

    /// Whether the directory has no account at all: a new installation, where the first operator is
    /// created with [`Directory::bootstrap_operator`].
    pub async fn is_empty(&self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?;
        Ok(n == 0)
    }

    /// Creates the first two administrators of a new installation (and their organisation, named after its
    /// identifier, if missing). Two, because every grant of a committee, operator, auditor or administrator role
    /// needs a second administrator's approval; each by the claim of a code that administrator made for
    /// themself (`tokumei user claim`), so the installer who runs the bootstrap holds neither code. Refused with
    /// `InvalidState` as soon as any account exists, even under concurrent attempts.
    pub async fn bootstrap_administrators(
        &self,
        administrators: [(&str, &str, &str); 2],
        organisation: &str,
        now: DateTime<Utc>,
    ) -> Result<[InvitedUser; 2]> {
        let mut claims = Vec::with_capacity(2);
        for (username, display_name, claim) in administrators {
            check_username(username)?;
            check_text("display name", display_name)?;
            claims.push(check_claim(claim)?);
        }
        if administrators[0].0 == administrators[1].0 || claims[0] == claims[1] {
            return Err(PolicyError::Invalid(
                "the two first administrators are two different people, each with a claim of their own".to_owned(),
            ));
        }
        check_organisation_id(organisation)?;
        let refused = || {
            PolicyError::InvalidState(
                "the directory already has users: bootstrap only creates the first administrators of a new \
                 installation (ask two administrators to add you)"
                    .to_owned(),
            )
        };
        let mut tx = self.db.begin_write().await?;
        // A write first: takes the write lock (SQLite) or the key's lock (PostgreSQL) before looking.
        let first = sqlx::query(
            "INSERT INTO identity_meta (name, value) VALUES ('bootstrapped', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(administrators[0].0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if !first || users > 0 {
            tx.rollback().await?;
            return Err(refused());
        }
        sqlx::query(
            "INSERT INTO organisations (id, name, created_at_ms, created_at) VALUES ($1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(organisation)
        .bind(now.timestamp_millis())
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await?;
        let roles = BTreeSet::from([Role::Administrator]);
        let expires_at = now + INVITATION_TTL;
        let mut invited = Vec::with_capacity(2);
        for ((username, display_name, _), claim) in administrators.into_iter().zip(&claims) {
            insert_person(
                &mut tx,
                username,
                display_name,
                organisation,
                &roles,
                claim,
                expires_at,
                now,
            )
            .await?;
            invited.push(InvitedUser {
                username: username.to_owned(),
                expires_at,
            });
        }
        tx.commit().await?;
        let [a, b]: [InvitedUser; 2] = invited
            .try_into()
            .map_err(|_| PolicyError::InvalidState("bootstrap created no invitations".to_owned()))?;
        Ok([a, b])
    }

    /// Adds a person with human roles (not [`Role::Hospital`]: see [`Directory::add_service_identity`]) whose
    /// invitation code only they know: `claim` is the code's hash ([`invitation_claim`]), computed on the
    /// invitee's side (`tokumei user claim`) and passed on by the administrator, who never sees the code. The
    /// account is `invited` until the person enrols with the code. Roles that need four eyes go through
    /// [`Directory::request_grant`] instead (the policy façade decides which).
    pub async fn add_user(
        &self,
        username: &str,
        display_name: &str,
        organisation: &str,
        roles: &[Role],
        claim: &str,
        now: DateTime<Utc>,
    ) -> Result<InvitedUser> {
        check_username(username)?;
        check_text("display name", display_name)?;
        let roles = person_roles(roles)?;
        let claim = check_claim(claim)?;
        self.organisation(organisation).await?;
        let expires_at = now + INVITATION_TTL;
        let mut tx = self.db.begin_write().await?;
        if let Err(e) = ensure_claim_unused(&mut tx, &claim).await {
            tx.rollback().await?;
            return Err(e);
        }
        insert_person(
            &mut tx,
            username,
            display_name,
            organisation,
            &roles,
            &claim,
            expires_at,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(InvitedUser {
            username: username.to_owned(),
            expires_at,
        })
    }

    /// Registers a hospital's service identity: username = its 10-digit institution code, role hospital,
    /// bound to the SHA-256 fingerprint (64 hex digits; `:` separators and case ignored, as `openssl x509
    /// -fingerprint -sha256` prints it) of the client certificate its gateway presents over mutual TLS.
    /// No password or second factor: the private key of the certificate is the credential.
    pub async fn add_service_identity(
        &self,
        institution_code: &str,
        organisation: &str,
        certificate_sha256_hex: &str,
        now: DateTime<Utc>,
    ) -> Result<UserRecord> {
        check_institution_code(institution_code)?;
        let fingerprint = normalise_fingerprint(certificate_sha256_hex)?;
        let org = self.organisation(organisation).await?;
        self.refuse_registered_certificate(&fingerprint).await?;
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (username, display_name, organisation, kind, status, failed_attempts, \
             certificate_sha256, created_at_ms, created_at, updated_at_ms) \
             VALUES ($1, $2, $3, 'service', 'active', 0, $4, $5, $6, $5) ON CONFLICT (username) DO NOTHING",
        )
        .bind(institution_code)
        .bind(&org.name)
        .bind(&org.id)
        .bind(&fingerprint)
        .bind(now.timestamp_millis())
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Err(PolicyError::AlreadyExists {
                kind: "user",
                id: institution_code.to_owned(),
            });
        }
        insert_roles(&mut tx, institution_code, &BTreeSet::from([Role::Hospital])).await?;
        tx.commit().await?;
        self.user(institution_code).await
    }

    /// Binds a service identity to a new certificate (renewal): the old certificate stops working at once.
    pub async fn set_service_certificate(
        &self,
        institution_code: &str,
        certificate_sha256_hex: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let fingerprint = normalise_fingerprint(certificate_sha256_hex)?;
        self.refuse_registered_certificate(&fingerprint).await?;
        let updated = sqlx::query(
            "UPDATE users SET certificate_sha256 = $2, updated_at_ms = $3 WHERE username = $1 AND kind = 'service'",
        )
        .bind(institution_code)
        .bind(&fingerprint)
        .bind(now.timestamp_millis())
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_found("service identity", institution_code));
        }
        Ok(())
    }

    /// The service identity whose registered certificate is `certificate_der` (the DER bytes the TLS layer
    /// verified against the hospitals' CA), as an [`Actor`] authenticated by [`AuthMethod::Certificate`].
    /// An unknown or disabled certificate is `AuthenticationFailed`.
    pub async fn authenticate_certificate(&self, certificate_der: &[u8]) -> Result<Actor> {
        let fingerprint = hex::encode(Sha256::digest(certificate_der));
        let row = sqlx::query(
            "SELECT username, organisation FROM users \
             WHERE certificate_sha256 = $1 AND kind = 'service' AND status = 'active'",
        )
        .bind(&fingerprint)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(PolicyError::AuthenticationFailed)?;
        let username: String = row.try_get("username")?;
        let roles = fetch_roles(self.db.pool(), &username).await?;
        Ok(Actor {
            username,
            organisation: row.try_get("organisation")?,
            roles,
            auth: AuthMethod::Certificate,
        })
    }

    /// First step of enrolment: with the invitation code (one-time, 72 hours) the person sets a password
    /// (checked against [`password::check_password_policy`]) and receives a new TOTP secret to put in their
    /// app. The account becomes `pending_totp` until [`Directory::confirm_totp`]. A wrong code, an unknown
    /// user or a used code is `AuthenticationFailed`; an expired code is `InvalidState`.
    pub async fn enrol(
        &self,
        username: &str,
        invitation_code: &str,
        new_password: &str,
        now: DateTime<Utc>,
    ) -> Result<Enrolment> {
        if check_username(username).is_err() {
            return Err(PolicyError::AuthenticationFailed);
        }
        password::check_password_policy(username, new_password)?;
        let presented = recovery_codes::hash_code("invitation", invitation_code);
        // A cheap look before the slow hashing, so wrong codes cost the server nothing; checked again
        // under the row lock below.
        let before = fetch_user(self.db.pool(), username).await?;
        if !before
            .as_ref()
            .is_some_and(|row| invitation_matches(row, presented.as_deref()))
        {
            return Err(PolicyError::AuthenticationFailed);
        }
        let phc = hash_password_off_thread(new_password).await?;
        let secret = TotpSecret::generate();
        let totp = Totp::new(&secret, &self.totp_issuer, username)?;
        let uri = totp.otpauth_uri();
        let qr = totp::terminal_qr(&uri)?;
        let secret_base32 = secret.to_base32();

        let mut tx = self.db.begin_write().await?;
        let Some(row) = lock_and_fetch(&mut tx, username).await? else {
            tx.rollback().await?;
            return Err(PolicyError::AuthenticationFailed);
        };
        if !invitation_matches(&row, presented.as_deref()) {
            tx.rollback().await?;
            return Err(PolicyError::AuthenticationFailed);
        }
        if row
            .invitation_expires_ms
            .is_none_or(|expires| expires <= now.timestamp_millis())
        {
            tx.rollback().await?;
            return Err(PolicyError::InvalidState(
                "the invitation has expired; ask an operator for a new one".to_owned(),
            ));
        }
        sqlx::query(
            "UPDATE users SET status = 'pending_totp', password_hash = $2, totp_secret = $3, totp_last_step = NULL, \
             invitation_hash = NULL, invitation_expires_ms = NULL, failed_attempts = 0, locked_until_ms = NULL, \
             updated_at_ms = $4 WHERE username = $1",
        )
        .bind(username)
        .bind(&phc)
        .bind(self.seeds.seal(username, secret_base32.as_str())?)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Enrolment {
            username: username.to_owned(),
            otpauth_uri: SecretString::new(uri.to_string()),
            secret_base32: SecretString::new(secret_base32.to_string()),
            qr_terminal: SecretString::new(qr),
        })
    }

    /// Second step of enrolment: the password and a first TOTP code from the app activate the account and
    /// return the recovery codes, shown this once. Failures count towards the lockout like logins.
    pub async fn confirm_totp(
        &self,
        username: &str,
        password: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<RecoveryCodes> {
        let (mut tx, _, _) = self
            .verify_credentials(
                username,
                password,
                SecondFactor::Totp(code),
                UserStatus::PendingTotp,
                now,
            )
            .await?;
        sqlx::query("UPDATE users SET status = 'active', updated_at_ms = $2 WHERE username = $1")
            .bind(username)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        let codes = replace_recovery_codes(&mut tx, username, now).await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Replaces the user's recovery codes by a new set (the old ones stop working), after checking the
    /// password and a TOTP code.
    pub async fn regenerate_recovery_codes(
        &self,
        username: &str,
        password: &str,
        totp_code: &str,
        now: DateTime<Utc>,
    ) -> Result<RecoveryCodes> {
        let (mut tx, _, _) = self
            .verify_credentials(
                username,
                password,
                SecondFactor::Totp(totp_code),
                UserStatus::Active,
                now,
            )
            .await?;
        let codes = replace_recovery_codes(&mut tx, username, now).await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Starts a person's enrolment over: a new invitation, and the password, TOTP secret, recovery codes
    /// and sessions are dropped. For a lost phone without recovery codes, a forgotten password, an expired
    /// invitation or an enrolment abandoned before the QR code was scanned; the operator checks the person's
    /// identity out of band first. Refused for disabled accounts and service identities.
    pub async fn reset_credentials(&self, username: &str, now: DateTime<Utc>) -> Result<Invitation> {
        let (invitation, invitation_hash) = new_invitation(username, now)?;
        let mut tx = self.db.begin_write().await?;
        let Some(row) = lock_and_fetch(&mut tx, username).await? else {
            tx.rollback().await?;
            return Err(not_found("user", username));
        };
        if row.kind != UserKind::Person || row.status == UserStatus::Disabled {
            tx.rollback().await?;
            return Err(PolicyError::InvalidState(format!(
                "user {username:?} is {}: only enabled people can be re-invited",
                if row.kind == UserKind::Service {
                    "a service identity"
                } else {
                    "disabled"
                }
            )));
        }
        let now_ms = now.timestamp_millis();
        sqlx::query(
            "UPDATE users SET status = 'invited', password_hash = NULL, totp_secret = NULL, totp_last_step = NULL, \
             failed_attempts = 0, locked_until_ms = NULL, invitation_hash = $2, invitation_expires_ms = $3, \
             updated_at_ms = $4 WHERE username = $1",
        )
        .bind(username)
        .bind(&invitation_hash)
        .bind(invitation.expires_at.timestamp_millis())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        revoke_open_sessions(&mut tx, username, now_ms).await?;
        tx.commit().await?;
        Ok(invitation)
    }

    // -----------------------------------------------------------------------------------------------------
    // Sessions
    // -----------------------------------------------------------------------------------------------------

    /// Logs a person in with their password and second factor; `source` (client address, `cli`) is kept
    /// with the session. Every failure is the same `AuthenticationFailed` (unknown user, wrong password,
    /// wrong or replayed code, account not active) and counts towards the lockout of an existing account;
    /// a locked account gets `AccountLocked` without its password being checked. The caller records the
    /// attempt in the audit ledger under `username` with the error's reason.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        second_factor: SecondFactor<'_>,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<Session> {
        let (mut tx, row, auth) = self
            .verify_credentials(username, password, second_factor, UserStatus::Active, now)
            .await?;
        let roles = fetch_roles(&mut *tx, username).await?;
        let expires_at = now + self.session_ttl;
        let claims = SessionClaims {
            session_id: session_token::new_session_id(),
            username: row.username.clone(),
            organisation: row.organisation.clone(),
            roles: roles.clone(),
            auth,
            issued_at: now.timestamp(),
            expires_at: expires_at.timestamp(),
        };
        let Sessions::Issuer(key) = &self.sessions else {
            return Err(PolicyError::InvalidState(
                "sessions are issued by the policy service only: log in with `tokumei user login`".to_owned(),
            ));
        };
        let token = session_token::issue(key, &claims)?;
        sqlx::query(
            "INSERT INTO sessions (session_id, username, auth_method, source, issued_at_ms, issued_at, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&claims.session_id)
        .bind(username)
        .bind(auth_method_str(auth))
        .bind(clean_source(source))
        .bind(now.timestamp_millis())
        .bind(rfc3339(now))
        .bind(expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET last_login_ms = $2 WHERE username = $1")
            .bind(username)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Session {
            token,
            session_id: claims.session_id,
            actor: Actor {
                username: row.username,
                organisation: row.organisation,
                roles,
                auth,
            },
            expires_at,
        })
    }

    /// The actor behind a session token at `now`: the signature and expiry are checked, then that the
    /// session still exists unrevoked and its user is still active. The roles are the user's CURRENT roles
    /// (a role removed a minute ago is gone), the method is the one used at login. Any problem is
    /// `SessionInvalid` with a short reason.
    pub async fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<Actor> {
        let claims = session_token::verify(&self.sessions.public(), token, now)?;
        let row = sqlx::query(
            "SELECT s.username, s.auth_method, s.expires_at_ms, s.revoked_at_ms, u.organisation, u.status \
             FROM sessions s JOIN users u ON u.username = s.username WHERE s.session_id = $1",
        )
        .bind(&claims.session_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| PolicyError::SessionInvalid("unknown session".to_owned()))?;
        let username: String = row.try_get("username")?;
        if username != claims.username {
            return Err(PolicyError::SessionInvalid("malformed".to_owned()));
        }
        if row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some() {
            return Err(PolicyError::SessionInvalid("revoked".to_owned()));
        }
        if row.try_get::<i64, _>("expires_at_ms")? <= now.timestamp_millis() {
            return Err(PolicyError::SessionInvalid("expired".to_owned()));
        }
        if UserStatus::parse(&row.try_get::<String, _>("status")?)? != UserStatus::Active {
            return Err(PolicyError::SessionInvalid("account not active".to_owned()));
        }
        let auth = parse_auth_method(&row.try_get::<String, _>("auth_method")?)?;
        let roles = fetch_roles(self.db.pool(), &username).await?;
        Ok(Actor {
            username,
            organisation: row.try_get("organisation")?,
            roles,
            auth,
        })
    }

    /// Ends the session of `token` (signature checked; an expired token may still log out). Logging out
    /// twice is not an error.
    pub async fn logout(&self, token: &str, now: DateTime<Utc>) -> Result<()> {
        let claims = session_token::verify_signature(&self.sessions.public(), token)?;
        let exists = sqlx::query("SELECT username FROM sessions WHERE session_id = $1 AND username = $2")
            .bind(&claims.session_id)
            .bind(&claims.username)
            .fetch_optional(self.db.pool())
            .await?
            .is_some();
        if !exists {
            return Err(PolicyError::SessionInvalid("unknown session".to_owned()));
        }
        sqlx::query("UPDATE sessions SET revoked_at_ms = $2 WHERE session_id = $1 AND revoked_at_ms IS NULL")
            .bind(&claims.session_id)
            .bind(now.timestamp_millis())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Revokes every open session of `username` (suspected compromise, role change that must apply at once);
    /// returns how many were open.
    pub async fn revoke_sessions_of(&self, username: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.db.begin_write().await?;
        let revoked = revoke_open_sessions(&mut tx, username, now.timestamp_millis()).await?;
        let exists = sqlx::query("SELECT username FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            tx.rollback().await?;
            return Err(not_found("user", username));
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Deletes the rows of sessions that expired before `now` (their tokens are refused anyway); returns
    /// how many. Logins themselves are recorded in the audit ledger, not here.
    pub async fn prune_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
            .bind(now.timestamp_millis())
            .execute(self.db.pool())
            .await?
            .rows_affected())
    }

    // -----------------------------------------------------------------------------------------------------
    // Administration
    // -----------------------------------------------------------------------------------------------------

    /// Replaces a person's roles (at least one; never hospital). Open sessions see the new roles on their
    /// next request. Refused if it would leave the installation with fewer than two enabled administrators.
    pub async fn set_roles(&self, username: &str, roles: &[Role], now: DateTime<Utc>) -> Result<UserRecord> {
        let roles = person_roles(roles)?;
        let mut tx = self.db.begin_write().await?;
        if let Err(e) = set_roles_in(&mut tx, username, &roles, now).await {
            tx.rollback().await?;
            return Err(e);
        }
        tx.commit().await?;
        self.user(username).await
    }

    /// Disables an account (person or service identity) and revokes its sessions. Idempotent. Refused if
    /// it would leave the installation without an enabled operator.
    pub async fn disable_user(&self, username: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if let Err(e) = disable_in(&mut tx, username, now).await {
            tx.rollback().await?;
            return Err(e);
        }
        tx.commit().await?;
        Ok(())
    }

    /// One account, without secrets, or `NotFound`.
    pub async fn user(&self, username: &str) -> Result<UserRecord> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, {CODES_LEFT} AS codes_left FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| not_found("user", username))?;
        let roles = fetch_roles(self.db.pool(), username).await?;
        record_from_row(&row, roles)
    }

    /// Every account, by username, without secrets.
    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, {CODES_LEFT} AS codes_left FROM users ORDER BY username"
        ))
        .fetch_all(self.db.pool())
        .await?;
        let mut roles: BTreeMap<String, BTreeSet<Role>> = BTreeMap::new();
        for row in sqlx::query("SELECT username, role FROM user_roles")
            .fetch_all(self.db.pool())
            .await?
        {
            roles
                .entry(row.try_get("username")?)
                .or_default()
                .insert(parse_role(&row.try_get::<String, _>("role")?)?);
        }
        rows.iter()
            .map(|row| {
                let username: String = row.try_get("username")?;
                record_from_row(row, roles.remove(&username).unwrap_or_default())
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------------------
    // Credential check
    // -----------------------------------------------------------------------------------------------------

    /// Checks password and second factor of a person whose account is `expected`, applying the lockout.
    /// On success returns the open transaction (holding the user's row lock, with the failure count reset
    /// and the TOTP step or recovery code consumed) for the caller to complete and commit. On failure the
    /// failure is counted and committed.
    async fn verify_credentials(
        &self,
        username: &str,
        password: &str,
        second_factor: SecondFactor<'_>,
        expected: UserStatus,
        now: DateTime<Utc>,
    ) -> Result<(Transaction<'static, Any>, UserRow, AuthMethod)> {
        if check_username(username).is_err() {
            verify_password_off_thread(password, None).await;
            return Err(PolicyError::AuthenticationFailed);
        }
        // Without the lock: refuse a locked account before any slow work, then verify the password.
        let Some(before) = fetch_user(self.db.pool(), username).await? else {
            verify_password_off_thread(password, None).await;
            return Err(PolicyError::AuthenticationFailed);
        };
        self.lockout.check(&before.lockout, now)?;
        let password_ok = verify_password_off_thread(password, before.password_hash.clone()).await;

        let mut tx = self.db.begin_write().await?;
        let Some(row) = lock_and_fetch(&mut tx, username).await? else {
            tx.rollback().await?;
            return Err(PolicyError::AuthenticationFailed);
        };
        // Concurrent failures may have locked the account meanwhile.
        if let Err(locked) = self.lockout.check(&row.lockout, now) {
            tx.rollback().await?;
            return Err(locked);
        }
        let eligible = password_ok
            && row.password_hash == before.password_hash
            && row.kind == UserKind::Person
            && row.status == expected;
        let method = if eligible {
            match second_factor {
                SecondFactor::Totp(code) => self.accept_totp(&mut tx, &row, code, now).await?,
                SecondFactor::RecoveryCode(code) => accept_recovery_code(&mut tx, username, code, now).await?,
            }
        } else {
            None
        };
        let state = match method {
            Some(_) => self.lockout.after_success(),
            None => self.lockout.after_failure(&row.lockout, now),
        };
        sqlx::query("UPDATE users SET failed_attempts = $2, locked_until_ms = $3 WHERE username = $1")
            .bind(username)
            .bind(state.failed_attempts)
            .bind(state.locked_until_ms)
            .execute(&mut *tx)
            .await?;
        match method {
            Some(method) => Ok((tx, row, method)),
            None => {
                tx.commit().await?;
                Err(PolicyError::AuthenticationFailed)
            }
        }
    }

    /// Accepts a TOTP code for the locked row if it is valid now and newer than the last accepted step,
    /// recording its step (replay refusal).
    async fn accept_totp(
        &self,
        tx: &mut Transaction<'static, Any>,
        row: &UserRow,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AuthMethod>> {
        let Some(stored) = &row.totp_secret else {
            return Ok(None);
        };
        let (seed, in_clear) = self.seeds.open(&row.username, stored)?;
        let secret = TotpSecret::from_base32(&seed)?;
        let totp = Totp::new(&secret, &self.totp_issuer, &row.username)?;
        let Some(step) = totp.verify(code, now, row.totp_last_step) else {
            return Ok(None);
        };
        sqlx::query("UPDATE users SET totp_last_step = $2 WHERE username = $1")
            .bind(&row.username)
            .bind(step)
            .execute(&mut **tx)
            .await?;
        if in_clear {
            // Stored in the clear or under the general key by an earlier version: sealed now that the owner proved it.
            sqlx::query("UPDATE users SET totp_secret = $2 WHERE username = $1")
                .bind(&row.username)
                .bind(self.seeds.seal(&row.username, &seed)?)
                .execute(&mut **tx)
                .await?;
        }
        Ok(Some(AuthMethod::PasswordTotp))
    }

    /// Fails with `AlreadyExists` if another service identity holds this certificate.
    async fn refuse_registered_certificate(&self, fingerprint: &str) -> Result<()> {
        let holder = sqlx::query("SELECT username FROM users WHERE certificate_sha256 = $1")
            .bind(fingerprint)
            .fetch_optional(self.db.pool())
            .await?;
        if holder.is_some() {
            return Err(PolicyError::AlreadyExists {
                kind: "certificate",
                id: fingerprint.to_owned(),
            });
        }
        Ok(())
    }
}

/// Unused recovery codes of the row's user, as an SQL expression over `users`.
const CODES_LEFT: &str =
    "(SELECT COUNT(*) FROM recovery_codes rc WHERE rc.username = users.username AND rc.used_at_ms IS NULL)";

/// Consumes the recovery code if it is one of the user's unused ones.
async fn accept_recovery_code(
    tx: &mut Transaction<'static, Any>,
    username: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Option<AuthMethod>> {
    let Some(hash) = recovery_codes::hash_recovery_code(code) else {
        return Ok(None);
    };
    let used = sqlx::query(
        "UPDATE recovery_codes SET used_at_ms = $3 WHERE username = $1 AND code_hash = $2 AND used_at_ms IS NULL",
    )
    .bind(username)
    .bind(&hash)
    .bind(now.timestamp_millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok((used == 1).then_some(AuthMethod::PasswordRecoveryCode))
}

/// Replaces the user's recovery codes by a fresh set and returns it.
async fn replace_recovery_codes(
    tx: &mut Transaction<'static, Any>,
    username: &str,
    now: DateTime<Utc>,
) -> Result<RecoveryCodes> {
    sqlx::query("DELETE FROM recovery_codes WHERE username = $1")
        .bind(username)
        .execute(&mut **tx)
        .await?;
    let codes = RecoveryCodes::generate();
    for hash in codes.hashes() {
        sqlx::query("INSERT INTO recovery_codes (username, code_hash, created_at_ms) VALUES ($1, $2, $3)")
            .bind(username)
            .bind(&hash)
            .bind(now.timestamp_millis())
            .execute(&mut **tx)
            .await?;
    }
    Ok(codes)
}

/// Inserts an invited person and their roles; `AlreadyExists` for a taken username. The statement is the
/// transaction's first, so it takes SQLite's write lock before anything is read.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_person(
    tx: &mut Transaction<'static, Any>,
    username: &str,
    display_name: &str,
    organisation: &str,
    roles: &BTreeSet<Role>,
    invitation_hash: &str,
    invitation_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO users (username, display_name, organisation, kind, status, failed_attempts, invitation_hash, \
         invitation_expires_ms, created_at_ms, created_at, updated_at_ms) \
         VALUES ($1, $2, $3, 'person', 'invited', 0, $4, $5, $6, $7, $6) ON CONFLICT (username) DO NOTHING",
    )
    .bind(username)
    .bind(display_name)
    .bind(organisation)
    .bind(invitation_hash)
    .bind(invitation_expires_at.timestamp_millis())
    .bind(now.timestamp_millis())
    .bind(rfc3339(now))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(PolicyError::AlreadyExists {
            kind: "user",
            id: username.to_owned(),
        });
    }
    // Remembered for good: the code behind it must never open a second account.
    let remembered = sqlx::query("INSERT INTO used_claims (claim) VALUES ($1) ON CONFLICT (claim) DO NOTHING")
        .bind(invitation_hash)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if remembered == 0 {
        return Err(PolicyError::Invalid(
            "this claim is already in use: each invitee makes a code of their own".to_owned(),
        ));
    }
    insert_roles(tx, username, roles).await
}

async fn insert_roles(tx: &mut Transaction<'static, Any>, username: &str, roles: &BTreeSet<Role>) -> Result<()> {
    for role in roles {
        sqlx::query("INSERT INTO user_roles (username, role) VALUES ($1, $2)")
            .bind(username)
            .bind(role.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Refuses a claim that an invitation or a pending grant already carries: a claim names one person's code.
pub(super) async fn ensure_claim_unused(tx: &mut Transaction<'static, Any>, claim: &str) -> Result<()> {
    let used: i64 = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM used_claims WHERE claim = $1) \
         + (SELECT COUNT(*) FROM role_grants WHERE claim = $1 AND state = 'pending') AS n",
    )
    .bind(claim)
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    if used > 0 {
        return Err(PolicyError::Invalid(
            "this claim is already in use: each invitee makes a code of their own".to_owned(),
        ));
    }
    Ok(())
}

/// Replaces `username`'s roles inside `tx` (a person, not a service identity).
pub(super) async fn set_roles_in(
    tx: &mut Transaction<'static, Any>,
    username: &str,
    roles: &BTreeSet<Role>,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(row) = lock_and_fetch(tx, username).await? else {
        return Err(not_found("user", username));
    };
    if row.kind == UserKind::Service {
        return Err(PolicyError::InvalidState(format!(
            "{username:?} is a service identity: it holds the hospital role only"
        )));
    }
    if !roles.contains(&Role::Administrator) && row.status != UserStatus::Disabled {
        ensure_administrators_remain(tx, username).await?;
    }
    sqlx::query("DELETE FROM user_roles WHERE username = $1")
        .bind(username)
        .execute(&mut **tx)
        .await?;
    insert_roles(tx, username, roles).await?;
    sqlx::query("UPDATE users SET updated_at_ms = $2 WHERE username = $1")
        .bind(username)
        .bind(now.timestamp_millis())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Disables `username` inside `tx` and revokes their sessions (idempotent).
pub(super) async fn disable_in(tx: &mut Transaction<'static, Any>, username: &str, now: DateTime<Utc>) -> Result<()> {
    let Some(row) = lock_and_fetch(tx, username).await? else {
        return Err(not_found("user", username));
    };
    if row.status == UserStatus::Disabled {
        return Ok(());
    }
    ensure_administrators_remain(tx, username).await?;
    let now_ms = now.timestamp_millis();
    sqlx::query(
        "UPDATE users SET status = 'disabled', invitation_hash = NULL, invitation_expires_ms = NULL, \
         updated_at_ms = $2 WHERE username = $1",
    )
    .bind(username)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    revoke_open_sessions(tx, username, now_ms).await?;
    Ok(())
}

/// Refuses (InvalidState) if taking `username` out of the administrators would leave fewer than two enabled
/// ones: with one, no grant that needs four eyes could ever be approved again.
async fn ensure_administrators_remain(tx: &mut Transaction<'static, Any>, username: &str) -> Result<()> {
    let holds: i64 = sqlx::query("SELECT COUNT(*) AS n FROM user_roles WHERE username = $1 AND role = 'administrator'")
        .bind(username)
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    if holds == 0 {
        return Ok(());
    }
    let others: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM user_roles r JOIN users u ON u.username = r.username \
         WHERE r.role = 'administrator' AND u.status <> 'disabled' AND u.username <> $1",
    )
    .bind(username)
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    if others < 2 {
        return Err(PolicyError::InvalidState(format!(
            "{username:?} is one of the last two enabled administrators: add another administrator first \
             (grants need two)"
        )));
    }
    Ok(())
}

/// Revokes the user's sessions that are neither revoked nor expired; returns how many.
async fn revoke_open_sessions(tx: &mut Transaction<'static, Any>, username: &str, now_ms: i64) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at_ms = $2 WHERE username = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
    )
    .bind(username)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Takes the user's row lock (a no-op `UPDATE`, the transaction's first statement) and reads the row.
async fn lock_and_fetch(tx: &mut Transaction<'static, Any>, username: &str) -> Result<Option<UserRow>> {
    let locked = sqlx::query("UPDATE users SET failed_attempts = failed_attempts WHERE username = $1")
        .bind(username)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if locked == 0 {
        return Ok(None);
    }
    fetch_user(&mut **tx, username).await
}

async fn fetch_user<'e, E>(executor: E, username: &str) -> Result<Option<UserRow>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"))
        .bind(username)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

async fn fetch_roles<'e, E>(executor: E, username: &str) -> Result<BTreeSet<Role>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = sqlx::query("SELECT role FROM user_roles WHERE username = $1")
        .bind(username)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| parse_role(&row.try_get::<String, _>("role")?))
        .collect()
}

fn user_from_row(row: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        organisation: row.try_get("organisation")?,
        kind: UserKind::parse(&row.try_get::<String, _>("kind")?)?,
        status: UserStatus::parse(&row.try_get::<String, _>("status")?)?,
        password_hash: row.try_get("password_hash")?,
        totp_secret: row.try_get::<Option<String>, _>("totp_secret")?.map(Zeroizing::new),
        totp_last_step: row.try_get("totp_last_step")?,
        lockout: LockoutState {
            failed_attempts: row.try_get("failed_attempts")?,
            locked_until_ms: row.try_get("locked_until_ms")?,
        },
        invitation_hash: row.try_get("invitation_hash")?,
        invitation_expires_ms: row.try_get("invitation_expires_ms")?,
        certificate_sha256: row.try_get("certificate_sha256")?,
        created_at: row.try_get("created_at")?,
        last_login_ms: row.try_get("last_login_ms")?,
    })
}

fn record_from_row(row: &AnyRow, roles: BTreeSet<Role>) -> Result<UserRecord> {
    let user = user_from_row(row)?;
    Ok(UserRecord {
        username: user.username,
        display_name: user.display_name,
        organisation: user.organisation,
        kind: user.kind,
        status: user.status,
        roles,
        created_at: user.created_at,
        last_login_at: user
            .last_login_ms
            .and_then(DateTime::from_timestamp_millis)
            .map(rfc3339),
        recovery_codes_left: row.try_get("codes_left")?,
        certificate_sha256: user.certificate_sha256,
    })
}

fn organisation_from_row(row: &AnyRow) -> Result<Organisation> {
    Ok(Organisation {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Whether `row` is an invited person whose pending invitation has the hash `presented` (compared in
/// constant time). Expiry is checked separately, to tell the holder of a valid code that it expired.
fn invitation_matches(row: &UserRow, presented: Option<&str>) -> bool {
    let code_matches = match (&row.invitation_hash, presented) {
        (Some(stored), Some(presented)) => bool::from(stored.as_bytes().ct_eq(presented.as_bytes())),
        _ => false,
    };
    row.kind == UserKind::Person && row.status == UserStatus::Invited && code_matches
}

/// A new invitation for `username` and the hash to store.
fn new_invitation(username: &str, now: DateTime<Utc>) -> Result<(Invitation, String)> {
    let code = recovery_codes::random_code();
    let hash = recovery_codes::hash_code("invitation", code.expose())
        .ok_or_else(|| PolicyError::InvalidState("generated invitation code is malformed".to_owned()))?;
    Ok((
        Invitation {
            username: username.to_owned(),
            code,
            expires_at: now + INVITATION_TTL,
        },
        hash,
    ))
}

/// The roles of a person: at least one, no hospital, and an administrator holds no operator or committee role.
pub(super) fn person_roles(roles: &[Role]) -> Result<BTreeSet<Role>> {
    if roles.contains(&Role::Administrator) && roles.iter().any(|r| Role::NOT_WITH_ADMINISTRATOR.contains(r)) {
        return Err(PolicyError::Invalid(
            "an administrator holds no operator, committee or auditor role (separation of duties: who grants \
             roles neither uses nor inspects them)"
                .to_owned(),
        ));
    }
    if roles.contains(&Role::Auditor) && roles.contains(&Role::Operator) {
        return Err(PolicyError::Invalid(
            "an operator cannot be their own auditor (separation of duties)".to_owned(),
        ));
    }
    if roles.is_empty() {
        return Err(PolicyError::Invalid("a user needs at least one role".to_owned()));
    }
    if roles.contains(&Role::Hospital) {
        return Err(PolicyError::Invalid(
            "the hospital role belongs to service identities bound to a certificate (add_service_identity), \
             not to people"
                .to_owned(),
        ));
    }
    Ok(roles.iter().copied().collect())
}

async fn hash_password_off_thread(password: &str) -> Result<String> {
    let typed = Zeroizing::new(password.to_owned());
    tokio::task::spawn_blocking(move || password::hash_password(&typed))
        .await
        .map_err(|_| PolicyError::InvalidState("password hashing was interrupted".to_owned()))?
}

/// Verifies on a blocking thread (argon2 takes tens of milliseconds of CPU); with no hash, spends the same
/// time and fails, so unknown users answer as slowly as known ones.
async fn verify_password_off_thread(password: &str, phc: Option<String>) -> bool {
    let typed = Zeroizing::new(password.to_owned());
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password::verify_password(&typed, &phc),
        None => {
            password::burn_verification(&typed);
            false
        }
    })
    .await
    .unwrap_or(false)
}

fn auth_method_str(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::PasswordTotp => "password_totp",
        AuthMethod::PasswordRecoveryCode => "password_recovery_code",
        AuthMethod::Certificate => "certificate",
    }
}

fn parse_auth_method(s: &str) -> Result<AuthMethod> {
    match s {
        "password_totp" => Ok(AuthMethod::PasswordTotp),
        "password_recovery_code" => Ok(AuthMethod::PasswordRecoveryCode),
        "certificate" => Ok(AuthMethod::Certificate),
        other => Err(corrupt("auth method", other)),
    }
}

fn parse_role(s: &str) -> Result<Role> {
    s.parse().map_err(|_| corrupt("role", s))
}

fn corrupt(what: &str, value: &str) -> PolicyError {
    PolicyError::InvalidState(format!(
        "the directory holds an unknown {what} {:?}",
        truncate_for_message(value)
    ))
}

fn not_found(kind: &'static str, id: &str) -> PolicyError {
    PolicyError::NotFound {
        kind,
        id: truncate_for_message(id),
    }
}

fn check_organisation_id(id: &str) -> Result<()> {
    check_username(id).map_err(|_| {
        PolicyError::Invalid(format!(
            "organisation id {:?} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
            truncate_for_message(id)
        ))
    })
}

/// A hospital's username: its 10-digit medical institution code (医療機関コード).
fn check_institution_code(code: &str) -> Result<()> {
    if code.len() == 10 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(PolicyError::Invalid(format!(
            "institution code {:?} must be exactly 10 digits",
            truncate_for_message(code)
        )))
    }
}

/// Lower-case hex of a SHA-256 fingerprint typed with or without `:` separators.
fn normalise_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(PolicyError::Invalid(
            "certificate fingerprint must be a SHA-256 digest: 64 hex digits".to_owned(),
        ))
    }
}

/// Refuses empty, over-long or control-character text: it ends up in terminals and audit records.
pub(super) fn check_text(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(PolicyError::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(PolicyError::Invalid(format!(
            "{what} is longer than {MAX_TEXT_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PolicyError::Invalid(format!("{what} contains control characters")));
    }
    Ok(())
}

/// The login source as stored: control characters dropped, at most 256 characters; never refuses a login.
fn clean_source(source: &str) -> String {
    let cleaned: String = source.chars().filter(|c| !c.is_control()).take(MAX_TEXT_LEN).collect();
    if cleaned.trim().is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_and_codes() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(normalise_fingerprint(&colons).ok(), Some("ab".repeat(32)));
        assert!(normalise_fingerprint("abcd").is_err());
        assert!(normalise_fingerprint(&"zz".repeat(32)).is_err());
        assert!(check_institution_code("1310000001").is_ok());
        assert!(check_institution_code("131000000").is_err());
        assert!(check_institution_code("13100000a1").is_err());
    }

    #[test]
    fn roles_and_sources() {
        assert!(person_roles(&[]).is_err());
        assert!(person_roles(&[Role::Researcher, Role::Hospital]).is_err());
        assert_eq!(
            person_roles(&[Role::Researcher, Role::Researcher]).ok(),
            Some(BTreeSet::from([Role::Researcher]))
        );
        assert_eq!(clean_source("10.0.0.1\n"), "10.0.0.1");
        assert_eq!(clean_source("\u{7}"), "unknown");
        for method in [
            AuthMethod::PasswordTotp,
            AuthMethod::PasswordRecoveryCode,
            AuthMethod::Certificate,
        ] {
            assert_eq!(parse_auth_method(auth_method_str(method)).ok(), Some(method));
        }
    }

    #[test]
    fn second_factor_debug_is_redacted() {
        assert_eq!(format!("{:?}", SecondFactor::Totp("123456")), "Totp(<redacted>)");
        assert_eq!(
            format!("{:?}", SecondFactor::RecoveryCode("abcd")),
            "RecoveryCode(<redacted>)"
        );
    }
}
