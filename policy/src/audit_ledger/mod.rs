//! The audit ledger: every action of the policy zone — logins that succeed and fail, votes, decisions,
//! release builds, downloads, traces, key uses, erasures, operators' SQL — appended to one hash-chained,
//! ed25519-signed record that nobody, operators included, can change without it showing.
//!
//! # Why a chain and a signature
//! Each entry carries the SHA-256 of the previous entry, so removing, inserting or reordering entries
//! breaks a link; each entry's hash is signed with the service's ed25519 key ([`ServiceKey`]), so
//! someone with write access to the database but not to the key cannot re-hash a changed entry and
//! re-sign it. [`AuditLedger::verify`] walks the whole chain and names the first bad entry;
//! [`AuditLedger::export`] cuts an [`InspectionBundle`] that an inspector checks offline with
//! [`verify_bundle`] and the published public key alone.
//!
//! Truncation (removing the newest entries) leaves a valid shorter chain. Two things catch it: the
//! `audit_head` row, which every append updates in the same transaction and which verification compares
//! with the last entry, and — against someone who edits that row too — the head `(seq, hash)` that
//! verification prints, which is meant to be **published outside the database** (in the regulator's
//! periodic report, in each inspection bundle). A later ledger whose chain does not pass through a
//! published head has been rewritten.
//!
//! Operators cannot rewrite the ledger through any command: the library offers no update or delete,
//! and [`install_append_only_guards`] (run by [`PolicyDb::open`](crate::database::PolicyDb::open))
//! installs triggers that abort `UPDATE`/`DELETE` (and `TRUNCATE` on PostgreSQL) of entries and any
//! move of the head backwards. A database superuser can drop the triggers; the chain and the signatures
//! are what still catch that.
//!
//! # Entry format (what an inspector reimplements)
//! An entry's **canonical bytes** are the concatenation, in this order, of:
//!
//! | # | field | encoding |
//! |---|-------|----------|
//! | 1 | the tag `tokumei/audit-entry/v1` | text |
//! | 2 | `seq` | int |
//! | 3 | `at_ms` | int |
//! | 4 | `at` | text |
//! | 5 | `actor` | text |
//! | 6 | `action` | text |
//! | 7 | `resource` | text |
//! | 8 | `outcome` (`ok`, `denied` or `failed`) | text |
//! | 9 | `reason` | optional text |
//! | 10 | `source` | optional text |
//! | 11 | `details` (the stored JSON text, byte for byte) | text |
//! | 12 | `prev_hash` (64 lower-case hex digits) | text |
//! | 13 | `key_id` (16 lower-case hex digits) | text |
//!
//! where *text* is the UTF-8 byte length as an unsigned 64-bit big-endian integer followed by the UTF-8
//! bytes, *int* is the value as a signed 64-bit big-endian two's-complement integer, and *optional text*
//! is a single byte `0x00` when absent, or `0x01` followed by the text.
//!
//! - `hash` = lower-case hex of SHA-256(canonical bytes).
//! - `prev_hash` of entry 1 is 64 `0` digits ([`GENESIS_HASH`]); of entry n > 1 it is entry n−1's `hash`.
//! - `signature` = lower-case hex of the 64-byte ed25519 signature (RFC 8032) of the message
//!   `tokumei/audit-entry/v1` ‖ `0x00` ‖ the 32 raw bytes of the hash (the service key's domain
//!   separation, [`SignaturePurpose::AuditEntry`]); `key_id` = first 16 hex digits of SHA-256 of the
//!   32-byte public key.
//! - `details` is written once, at append, as RFC 8785 canonical JSON ([`canonical_json`]) and is hashed
//!   exactly as stored; verifiers never re-serialise it, so JSON parsers' float rounding cannot produce
//!   false alarms. It is a JSON string in bundles for the same reason.
//! - `seq` is 1, 2, 3, ... without gaps; `at_ms` never decreases along the chain (append uses the
//!   larger of the clock and the previous entry's time, so a clock stepping back cannot reorder
//!   entries); `at` is `at_ms` as RFC 3339 UTC with milliseconds (`2026-04-01T09:30:00.000Z`).
//!
//! [`canonical_bytes`] and [`entry_hash`] expose the encoding; a unit test pins a known hash so any
//! accidental change of the format fails the build.

mod bundle;
mod canonical;
mod guards;
mod verify;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};
use crate::service_key::{ServiceKey, ServicePublicKey, SignaturePurpose};

pub use bundle::{InspectionBundle, bundle_summary_bytes};
pub use canonical::{BUNDLE_TAG, ENTRY_TAG, canonical_json};
pub use guards::install_append_only_guards;
pub(crate) use guards::install_guards;
pub use verify::{BadEntry, Problem, VerifyReport, verify_bundle, verify_bundle_with_keys, verify_database};

/// `prev_hash` of the first entry (and the hash of the empty ledger's head): 64 zero digits, so the
/// first entry is chained to a known value instead of to nothing.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many entries verification and export read per query by default ([`AuditLedger::with_page_size`]):
/// bounded memory whatever the ledger's size.
pub const PAGE_SIZE: i64 = 10_000;

/// Longest accepted `actor`, `resource` or `source`: generous for hostile input (a login attempt with an
/// absurd user name must still be recorded), bounded so one entry cannot bloat the ledger.
const MAX_TEXT_LEN: usize = 4096;
/// Longest accepted `action` or `reason` code: these are constants in the code, not input.
const MAX_CODE_LEN: usize = 128;
/// Longest accepted canonical `details` text (an operator's SQL statement fits comfortably).
const MAX_DETAILS_LEN: usize = 256 * 1024;

/// How an action ended: part of every entry so that refusals and failures are recorded as faithfully as
/// successes (a run of denied logins is exactly what an auditor looks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was performed.
    Ok,
    /// The action was refused (authorisation, wrong password, condition not met); `reason` says why.
    Denied,
    /// The action was attempted and failed (I/O, a bug, a server down); `reason` says how.
    Failed,
}

impl Outcome {
    /// The stored and hashed spelling (`ok`, `denied`, `failed`): fixed forever, since hashes depend on it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Parses the stored spelling; `None` for anything else (only a tampered entry holds anything else).
    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "ok" => Some(Outcome::Ok),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// What a caller appends: who did what to what, and how it ended. The ledger adds the sequence number,
/// the time, the chain and the signature.
///
/// **Never put secrets in any field** — passwords (even wrong ones: they are often a typo of the right
/// one), TOTP codes, session tokens, keys, clinical data. The ledger is append-only: a secret written
/// here can never be removed, and every inspection bundle carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who acted: a user name, or `system` for the service itself. For a failed login, the name that was
    /// tried (recorded as is; displays must escape it).
    pub actor: String,
    /// What was done, a stable lower-case code (`login.success`, `login.failure`, `vote`, `decision`,
    /// `release.build`, `download`, `trace`, `key.use`, `erasure`, `sql`): reports group by it, so it
    /// must not change with wording.
    pub action: String,
    /// What it was done to (`application A-2026-0001`, `release R-17`, `user alice`).
    pub resource: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Machine-readable code of a denial or failure (e.g. `AUTHENTICATION_FAILED`), so denials can be
    /// counted by cause; `None` for successes.
    pub reason: Option<String>,
    /// Where the request came from: a client address, or `cli` for the local command line.
    pub source: Option<String>,
    /// Further structured facts (vote cast, columns released, the SQL an operator ran), as a JSON object.
    /// Stored as RFC 8785 canonical JSON; integers beyond ±2^53 are refused (write them as strings).
    /// No secrets (see the type's documentation).
    #[serde(default = "empty_object")]
    pub details: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl AuditEvent {
    /// An event without reason, source or details; add them with the builder methods.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
        outcome: Outcome,
    ) -> AuditEvent {
        AuditEvent {
            actor: actor.into(),
            action: action.into(),
            resource: resource.into(),
            outcome,
            reason: None,
            source: None,
            details: empty_object(),
        }
    }

    /// Sets the denial or failure code.
    pub fn reason(mut self, reason: impl Into<String>) -> AuditEvent {
        self.reason = Some(reason.into());
        self
    }

    /// Sets where the request came from.
    pub fn source(mut self, source: impl Into<String>) -> AuditEvent {
        self.source = Some(source.into());
        self
    }

    /// Sets the details object (no secrets).
    pub fn details(mut self, details: serde_json::Value) -> AuditEvent {
        self.details = details;
        self
    }
}

/// One stored entry: the event plus its place in the chain and its signature. Every field is exactly
/// what is hashed (see the module documentation), which is why `outcome` and `details` are kept as text
/// here: a verifier must hash what is stored, even when what is stored has been tampered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the ledger: 1, 2, 3, ... with no gaps.
    pub seq: i64,
    /// When it was appended, unix milliseconds; never decreases along the chain.
    pub at_ms: i64,
    /// The same instant as RFC 3339 UTC with milliseconds, for people.
    pub at: String,
    /// Who acted.
    pub actor: String,
    /// What was done (stable code).
    pub action: String,
    /// What it was done to.
    pub resource: String,
    /// `ok`, `denied` or `failed` ([`Outcome::as_str`]); [`AuditEntry::outcome_kind`] parses it.
    pub outcome: String,
    /// Denial or failure code.
    pub reason: Option<String>,
    /// Client address or `cli`.
    pub source: Option<String>,
    /// The details object as RFC 8785 canonical JSON text, exactly as hashed; [`AuditEntry::details_value`]
    /// parses it.
    pub details: String,
    /// `hash` of the previous entry ([`GENESIS_HASH`] for entry 1).
    pub prev_hash: String,
    /// SHA-256 of this entry's canonical bytes, lower-case hex.
    pub hash: String,
    /// Which service key signed ([`ServicePublicKey::key_id`]), so keys can be rotated.
    pub key_id: String,
    /// ed25519 signature of the hash ([`SignaturePurpose::AuditEntry`]), lower-case hex.
    pub signature: String,
}

impl AuditEntry {
    /// The outcome, or `None` if the stored text is not one of the three spellings (a tampered entry).
    pub fn outcome_kind(&self) -> Option<Outcome> {
        Outcome::parse(&self.outcome)
    }

    /// The details parsed as JSON, for display and filtering (never for hashing: see the module
    /// documentation).
    pub fn details_value(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.details)
            .map_err(|e| PolicyError::Invalid(format!("audit entry {}: details are not JSON: {e}", self.seq)))
    }
}

/// The entry's canonical bytes, as laid out in the module documentation (the `hash` and `signature`
/// fields are not part of them). Public so that tools and tests can check entries independently.
pub fn canonical_bytes(entry: &AuditEntry) -> Vec<u8> {
    let mut e = canonical::Encoder::new(ENTRY_TAG);
    e.int(entry.seq);
    e.int(entry.at_ms);
    e.text(&entry.at);
    e.text(&entry.actor);
    e.text(&entry.action);
    e.text(&entry.resource);
    e.text(&entry.outcome);
    e.optional(entry.reason.as_deref());
    e.optional(entry.source.as_deref());
    e.text(&entry.details);
    e.text(&entry.prev_hash);
    e.text(&entry.key_id);
    e.finish()
}

/// What `hash` must be for this entry: lower-case hex SHA-256 of [`canonical_bytes`].
pub fn entry_hash(entry: &AuditEntry) -> String {
    canonical::sha256_hex(&canonical_bytes(entry))
}

/// Fills in `key_id`, `hash` and `signature` of an entry whose other fields are set: the one place an
/// entry is sealed, used by [`AuditLedger::append`].
fn seal(entry: &mut AuditEntry, key: &ServiceKey) -> Result<()> {
    entry.key_id = key.public().key_id();
    entry.hash = entry_hash(entry);
    let digest = hex::decode(&entry.hash).map_err(|e| PolicyError::InvalidState(format!("entry hash: {e}")))?;
    entry.signature = hex::encode(key.sign(SignaturePurpose::AuditEntry, &digest));
    Ok(())
}

/// A point of the chain: a sequence number and the hash of the entry there. The ledger's head is the one
/// to publish (regulator report, bundles): it pins everything before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LedgerHead {
    /// Sequence number of the entry (0 for the empty ledger).
    pub seq: i64,
    /// Its hash ([`GENESIS_HASH`] for the empty ledger).
    pub hash: String,
}

impl LedgerHead {
    /// The head of the empty ledger.
    pub fn genesis() -> LedgerHead {
        LedgerHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// The audit ledger over the policy database, holding the service key that signs its entries; cheap to
/// clone (share one per process).
#[derive(Debug, Clone)]
pub struct AuditLedger {
    db: PolicyDb,
    key: ServiceKey,
    page_size: i64,
}

const ENTRY_COLUMNS: &str = "seq, at_ms, at, actor, action, resource, outcome, reason, source, details, prev_hash, \
     hash, key_id, signature";

impl AuditLedger {
    /// A ledger on `db` (migrated by [`PolicyDb::open`], which also installed the append-only guards),
    /// signing with `key`.
    pub(crate) fn new(db: PolicyDb, key: ServiceKey) -> AuditLedger {
        AuditLedger {
            db,
            key,
            page_size: PAGE_SIZE,
        }
    }

    /// The same ledger reading `rows` entries per query (at least 1) when verifying or exporting, instead
    /// of [`PAGE_SIZE`]: smaller pages bound memory more tightly, larger ones mean fewer round trips.
    pub fn with_page_size(mut self, rows: i64) -> AuditLedger {
        self.page_size = rows.max(1);
        self
    }

    /// The database, for callers that keep other records in it.
    pub fn db(&self) -> &PolicyDb {
        &self.db
    }

    /// The public half of the signing key: what `verify` and inspectors need.
    pub fn public_key(&self) -> ServicePublicKey {
        self.key.public()
    }

    /// Appends `event` at time `now` (the caller's clock, so tests and replays control it) and returns the
    /// sealed entry.
    ///
    /// One transaction: the `audit_head` row is `UPDATE`d first, which takes SQLite's write lock or
    /// PostgreSQL's row lock, so concurrent appenders — tasks or processes — queue there and each reads
    /// the head the previous one committed: the chain stays gapless and linked. The entry's time is the
    /// larger of `now` and the previous entry's, so a clock stepping backwards cannot reorder the ledger.
    ///
    /// Callers should treat a failed append as a failed action: an action that cannot be recorded should
    /// not happen.
    pub async fn append(&self, event: &AuditEvent, now: DateTime<Utc>) -> Result<AuditEntry> {
        let details = validate(event)?;
        let mut tx = self.db.begin_write().await?;
        let locked = sqlx::query("UPDATE audit_head SET last_seq = last_seq WHERE id = 1")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if locked != 1 {
            return Err(PolicyError::InvalidState(
                "the audit ledger's head row is missing: the database was altered outside tokumei".to_owned(),
            ));
        }
        let (head, last_at_ms) = fetch_head(&mut tx).await?;
        let at_ms = now.timestamp_millis().max(last_at_ms);
        let seq = head
            .seq
            .checked_add(1)
            .ok_or_else(|| PolicyError::InvalidState("audit ledger sequence overflow".to_owned()))?;
        let mut entry = AuditEntry {
            seq,
            at_ms,
            at: format_ms(at_ms)?,
            actor: event.actor.clone(),
            action: event.action.clone(),
            resource: event.resource.clone(),
            outcome: event.outcome.as_str().to_owned(),
            reason: event.reason.clone(),
            source: event.source.clone(),
            details,
            prev_hash: head.hash,
            hash: String::new(),
            key_id: String::new(),
            signature: String::new(),
        };
        seal(&mut entry, &self.key)?;
        sqlx::query(&format!(
            "INSERT INTO audit_entries ({ENTRY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(entry.seq)
        .bind(entry.at_ms)
        .bind(&entry.at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.resource)
        .bind(&entry.outcome)
        .bind(entry.reason.as_deref())
        .bind(entry.source.as_deref())
        .bind(&entry.details)
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .bind(&entry.key_id)
        .bind(&entry.signature)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE audit_head SET last_seq = $1, last_hash = $2, last_at_ms = $3 WHERE id = 1")
            .bind(entry.seq)
            .bind(&entry.hash)
            .bind(entry.at_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// The newest entry's `(seq, hash)` as the head row records it: the value to publish.
    pub async fn head(&self) -> Result<LedgerHead> {
        let mut tx = self.db.begin_read().await?;
        let (head, _) = fetch_head(&mut tx).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// Entries appended in `[from, to)` (millisecond precision), in sequence order. Times never decrease
    /// along the chain, so this is a contiguous run of sequence numbers. Loads them all: keep windows
    /// reasonable, or page with [`AuditLedger::entries_by_seq`].
    pub async fn entries(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE at_ms >= $1 AND at_ms < $2 ORDER BY seq"
        ))
        .bind(from.timestamp_millis())
        .bind(to.timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Entries with `first <= seq <= last`, in sequence order.
    pub async fn entries_by_seq(&self, first: i64, last: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
        ))
        .bind(first)
        .bind(last)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }
}

/// The head row: `(last_seq, last_hash)` and the last entry's time.
async fn fetch_head(tx: &mut Transaction<'static, Any>) -> Result<(LedgerHead, i64)> {
    let row = sqlx::query("SELECT last_seq, last_hash, last_at_ms FROM audit_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| {
            PolicyError::InvalidState(
                "the audit ledger's head row is missing: the database was altered outside tokumei".to_owned(),
            )
        })?;
    Ok((
        LedgerHead {
            seq: row.try_get("last_seq")?,
            hash: row.try_get("last_hash")?,
        },
        row.try_get("last_at_ms")?,
    ))
}

/// Up to `limit` entries with `seq > after` and `seq <= through`, in order.
async fn fetch_page(tx: &mut Transaction<'static, Any>, after: i64, through: i64, limit: i64) -> Result<Vec<AnyRow>> {
    Ok(sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
    ))
    .bind(after)
    .bind(through)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        source: row.try_get("source")?,
        details: row.try_get("details")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        key_id: row.try_get("key_id")?,
        signature: row.try_get("signature")?,
    })
}

/// `ms` as RFC 3339 UTC with milliseconds: the `at` field (and bundle times).
fn format_ms(ms: i64) -> Result<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or_else(|| PolicyError::Invalid(format!("time {ms} ms is out of range")))
}

/// Checks the event and returns its canonical details text. Codes (`action`, `reason`) must be clean
/// identifiers — they are constants in the code; free text (`actor`, `resource`, `source`) is recorded as
/// given, hostile input included, except NUL (PostgreSQL's TEXT cannot hold it) and absurd lengths.
fn validate(event: &AuditEvent) -> Result<String> {
    check_code("action", &event.action)?;
    if let Some(reason) = &event.reason {
        check_code("reason", reason)?;
    }
    if event.actor.is_empty() {
        return Err(PolicyError::Invalid("audit event: actor must not be empty".to_owned()));
    }
    check_text("actor", &event.actor)?;
    check_text("resource", &event.resource)?;
    if let Some(source) = &event.source {
        check_text("source", source)?;
    }
    let details = match &event.details {
        serde_json::Value::Null => "{}".to_owned(),
        v @ serde_json::Value::Object(_) => canonical_json(v)?,
        _ => {
            return Err(PolicyError::Invalid(
                "audit event: details must be a JSON object".to_owned(),
            ));
        }
    };
    if details.len() > MAX_DETAILS_LEN {
        return Err(PolicyError::Invalid(format!(
            "audit event: details exceed {MAX_DETAILS_LEN} bytes"
        )));
    }
    Ok(details)
}

fn check_code(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_CODE_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Invalid(format!(
            "audit event: {what} {value:?} must be 1 to {MAX_CODE_LEN} characters of [A-Za-z0-9_.:-]"
        )))
    }
}

fn check_text(what: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_LEN {
        return Err(PolicyError::Invalid(format!(
            "audit event: {what} is longer than {MAX_TEXT_LEN} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(PolicyError::Invalid(format!("audit event: {what} contains NUL")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fixed_entry() -> AuditEntry {
        let mut entry = AuditEntry {
            seq: 42,
            at_ms: 1_775_035_800_123,
            at: "2026-04-01T09:30:00.123Z".to_owned(),
            actor: "alice".to_owned(),
            action: "vote".to_owned(),
            resource: "application A-2026-0001".to_owned(),
            outcome: Outcome::Ok.as_str().to_owned(),
            reason: None,
            source: Some("192.0.2.7".to_owned()),
            details: canonical_json(&json!({"vote": "approve", "ε": 0.5, "conditions": ["no-linkage"]}))
                .unwrap_or_else(|e| panic!("{e}")),
            prev_hash: "ab".repeat(32),
            hash: String::new(),
            key_id: String::new(),
            signature: String::new(),
        };
        seal(&mut entry, &ServiceKey::from_seed(&[7; 32])).unwrap_or_else(|e| panic!("{e}"));
        entry
    }

    /// Pins the format: if this hash changes, every stored ledger stops verifying. Change the tag
    /// (`v2`) instead of the encoding.
    #[test]
    fn canonical_encoding_is_stable() {
        let entry = fixed_entry();
        assert_eq!(
            entry.details,
            r#"{"conditions":["no-linkage"],"vote":"approve","ε":0.5}"#
        );
        assert_eq!(format_ms(entry.at_ms).ok().as_deref(), Some(entry.at.as_str()));
        let bytes = canonical_bytes(&entry);
        assert!(
            bytes.starts_with(
                &[
                    &[0, 0, 0, 0, 0, 0, 0, 22][..],
                    ENTRY_TAG.as_bytes(),
                    &42i64.to_be_bytes()
                ]
                .concat()
            )
        );
        assert_eq!(entry.key_id, ServiceKey::from_seed(&[7; 32]).public().key_id());
        // Cross-checked with an independent implementation of the documented layout (Python: hashlib,
        // struct.pack(">Q"/">q"), and the `cryptography` package's Ed25519 for the signature).
        assert_eq!(
            entry.hash,
            "ccb5d4c6df13f765faeade4be834b94c8984b39f21e5fa20b42786a514866d22"
        );
        assert_eq!(
            entry.signature,
            "529716346ac9fcc923a5488d72c1209ce730754cd1d1dc016591a012fed24a6d0be57323f5a40c55c8c2ca230ce777d06ff313d1f06da3d94789eaeda018ca02"
        );
        let digest = hex::decode(&entry.hash).unwrap_or_default();
        let signature = hex::decode(&entry.signature).unwrap_or_default();
        assert!(
            ServiceKey::from_seed(&[7; 32])
                .public()
                .verify(SignaturePurpose::AuditEntry, &digest, &signature)
        );
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let entry = fixed_entry();
        let variants: Vec<fn(&mut AuditEntry)> = vec![
            |e| e.seq += 1,
            |e| e.at_ms += 1,
            |e| e.at.push(' '),
            |e| e.actor.push('x'),
            |e| e.action.push('x'),
            |e| e.resource.push('x'),
            |e| e.outcome = "denied".to_owned(),
            |e| e.reason = Some(String::new()),
            |e| e.source = None,
            |e| e.details = "{}".to_owned(),
            |e| e.prev_hash = GENESIS_HASH.to_owned(),
            |e| e.key_id = "0".repeat(16),
            // Moving bytes between adjacent fields changes the length prefixes.
            |e| {
                e.actor = "alicevote".to_owned();
                e.action = String::new();
            },
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut changed = entry.clone();
            change(&mut changed);
            assert_ne!(entry_hash(&changed), entry.hash, "variant {i}");
        }
    }

    #[test]
    fn events_are_validated() {
        let ok = AuditEvent::new("alice", "login.failure", "user alice", Outcome::Denied)
            .reason("AUTHENTICATION_FAILED")
            .source("cli");
        assert!(validate(&ok).is_ok());
        assert_eq!(
            validate(&ok.clone().details(serde_json::Value::Null)).ok().as_deref(),
            Some("{}")
        );
        // Hostile free text is recorded as is...
        assert!(
            validate(&AuditEvent {
                actor: "evil\n\u{1b}[2J".to_owned(),
                ..ok.clone()
            })
            .is_ok()
        );
        // ...but codes must be codes, and NUL or non-objects are refused.
        assert!(
            validate(&AuditEvent {
                action: "login failure".to_owned(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(validate(&ok.clone().reason("")).is_err());
        assert!(
            validate(&AuditEvent {
                actor: String::new(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&AuditEvent {
                resource: "a\0b".to_owned(),
                ..ok.clone()
            })
            .is_err()
        );
        assert!(validate(&ok.clone().details(json!([1]))).is_err());
        assert!(validate(&ok.clone().details(json!({"n": u64::MAX}))).is_err());
        assert!(validate(&ok.details(json!({"sql": "x".repeat(MAX_DETAILS_LEN)}))).is_err());
    }

    #[test]
    fn event_json_round_trips_with_snake_case_outcome() {
        let event = AuditEvent::new("system", "release.build", "release R-1", Outcome::Failed).reason("IO");
        let json = serde_json::to_value(&event).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["outcome"], "failed");
        let back: AuditEvent = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, event);
        for o in [Outcome::Ok, Outcome::Denied, Outcome::Failed] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).ok(), Some(json!(o.as_str())));
        }
    }
}
