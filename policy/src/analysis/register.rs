//! The analysis environment's two registers in the policy database: certified users (認定利活用者) and output
//! requests. Writes are single statements or guarded updates (`WHERE state = ...`), so two checkers deciding one
//! request at once cannot both succeed.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};

/// A researcher the committee registered as a certified user: they alone may open a workspace of pseudonymised
/// data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedUser {
    /// The researcher.
    pub username: String,
    /// The certification's reference (the competent minister's certification number).
    pub reference: String,
    /// The chair who registered it.
    pub certified_by: String,
    /// When.
    pub certified_at: DateTime<Utc>,
    /// Last day it is valid (Japan).
    pub expires_on: NaiveDate,
}

/// Where an output request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    /// Waiting for an output checker.
    AwaitingCheck,
    /// The checker asked for changes: the researcher requests a changed output.
    ChangesRequested,
    /// The checker refused it.
    Refused,
    /// Approved; the core is checking it again and recording it.
    Releasing,
    /// Released: signed, recorded as a provision, downloadable by the approval's recipients.
    Released,
    /// Approved, but the core's final check refused it (an output released since broke it).
    ReleaseRefused,
}

impl OutputState {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputState::AwaitingCheck => "awaiting_check",
            OutputState::ChangesRequested => "changes_requested",
            OutputState::Refused => "refused",
            OutputState::Releasing => "releasing",
            OutputState::Released => "released",
            OutputState::ReleaseRefused => "release_refused",
        }
    }

    fn parse(s: &str) -> Result<OutputState> {
        [
            OutputState::AwaitingCheck,
            OutputState::ChangesRequested,
            OutputState::Refused,
            OutputState::Releasing,
            OutputState::Released,
            OutputState::ReleaseRefused,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| PolicyError::InvalidState("an output request has an unknown state".into()))
    }
}

/// One output request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRequest {
    /// Its number (the core order that prepared it).
    pub id: u64,
    /// The approval whose workspace it comes from.
    pub application: String,
    /// The workspace result it would release.
    pub result: u64,
    /// The analysis (`crosstab`, `logistic`...).
    pub analysis: String,
    /// Who computed the result (a co-recipient may ask for it to leave: the checker is independent of both).
    pub computed_by: String,
    /// The analysis as asked, its query included (null in lists): the checker reads how the result was made.
    pub spec: serde_json::Value,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// The automatic checks' verdict: `safe`, `review` or `refused`.
    pub verdict: String,
    /// The checks' findings (rules and places, no values).
    pub checks: serde_json::Value,
    /// What would leave (null in lists, and withheld when the automatic checks refused it: the checker reads the
    /// findings, the values stay in the workspace).
    pub content: serde_json::Value,
    /// Where it stands.
    pub state: OutputState,
    /// The output checker who decided.
    pub checker: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// The checker's comment (or the code of a refusal at release).
    pub comment: Option<String>,
    /// The core order that released it.
    pub release_order: Option<u64>,
    /// SHA-256 of the signed document, hex.
    pub content_sha256: Option<String>,
    /// The platform's ed25519 signature of the signed document, hex.
    pub signature: Option<String>,
    /// When it was released.
    pub released_at: Option<DateTime<Utc>>,
}

/// The registers.
#[derive(Debug, Clone)]
pub struct AnalysisRegisters {
    db: PolicyDb,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| PolicyError::InvalidState("a time in the analysis registers is out of range".into()))
}

/// A number as the database stores it (BIGINT); numbers past i64 never occur and saturate.
fn db_number(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn number(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const COLUMNS: &str = "id, application, result, analysis, computed_by, spec, requested_by, requested_at_ms, verdict, checks, content, \
                       state, checker, decided_at_ms, comment, release_order, content_sha256, signature, released_at_ms";

fn output_of(r: &AnyRow) -> Result<OutputRequest> {
    let json = |name: &str| -> Result<serde_json::Value> {
        let text: String = r.try_get(name)?;
        serde_json::from_str(&text)
            .map_err(|_| PolicyError::InvalidState("an output request's stored JSON is not readable".into()))
    };
    let opt_at = |name: &str| -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = r.try_get(name)?;
        v.map(at).transpose()
    };
    let state: String = r.try_get("state")?;
    Ok(OutputRequest {
        id: number(r.try_get("id")?),
        application: r.try_get("application")?,
        result: number(r.try_get("result")?),
        analysis: r.try_get("analysis")?,
        computed_by: r.try_get("computed_by")?,
        spec: json("spec")?,
        requested_by: r.try_get("requested_by")?,
        requested_at: at(r.try_get("requested_at_ms")?)?,
        verdict: r.try_get("verdict")?,
        checks: json("checks")?,
        content: json("content")?,
        state: OutputState::parse(&state)?,
        checker: r.try_get("checker")?,
        decided_at: opt_at("decided_at_ms")?,
        comment: r.try_get("comment")?,
        release_order: r.try_get::<Option<i64>, _>("release_order")?.map(number),
        content_sha256: r.try_get("content_sha256")?,
        signature: r.try_get("signature")?,
        released_at: opt_at("released_at_ms")?,
    })
}

impl AnalysisRegisters {
    /// The registers in `db`.
    pub fn new(db: PolicyDb) -> AnalysisRegisters {
        AnalysisRegisters { db }
    }

    /// Registers (or renews) a certified user.
    pub async fn certify(&self, user: &CertifiedUser) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM certified_users WHERE username = $1")
            .bind(&user.username)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO certified_users (username, reference, certified_by, certified_at_ms, expires_on) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.username)
        .bind(&user.reference)
        .bind(&user.certified_by)
        .bind(ms(user.certified_at))
        .bind(user.expires_on.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The certification of `username`, if any (expired ones included: the caller compares the date).
    pub async fn certified(&self, username: &str) -> Result<Option<CertifiedUser>> {
        let row = sqlx::query(
            "SELECT username, reference, certified_by, certified_at_ms, expires_on FROM certified_users \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| {
            let expires: String = r.try_get("expires_on")?;
            Ok(CertifiedUser {
                username: r.try_get("username")?,
                reference: r.try_get("reference")?,
                certified_by: r.try_get("certified_by")?,
                certified_at: at(r.try_get("certified_at_ms")?)?,
                expires_on: expires
                    .parse()
                    .map_err(|_| PolicyError::InvalidState("a certification's date is not readable".into()))?,
            })
        })
        .transpose()
    }

    /// Files an output request the core prepared.
    pub async fn file(&self, o: &OutputRequest) -> Result<()> {
        let text = |v: &serde_json::Value| v.to_string();
        sqlx::query(
            "INSERT INTO analysis_outputs (id, application, result, analysis, computed_by, spec, requested_by, \
             requested_at_ms, verdict, checks, content, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(db_number(o.id))
        .bind(&o.application)
        .bind(db_number(o.result))
        .bind(&o.analysis)
        .bind(&o.computed_by)
        .bind(text(&o.spec))
        .bind(&o.requested_by)
        .bind(ms(o.requested_at))
        .bind(&o.verdict)
        .bind(text(&o.checks))
        .bind(text(&o.content))
        .bind(o.state.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// One output request.
    pub async fn get(&self, id: u64) -> Result<OutputRequest> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM analysis_outputs WHERE id = $1"))
            .bind(db_number(id))
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| PolicyError::NotFound {
                kind: "output request",
                id: id.to_string(),
            })?;
        output_of(&row)
    }

    /// Every output request, newest first (of one application if given).
    pub async fn list(&self, application: Option<&str>) -> Result<Vec<OutputRequest>> {
        let rows = match application {
            Some(a) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM analysis_outputs WHERE application = $1 ORDER BY id DESC"
                ))
                .bind(a)
                .fetch_all(self.db.pool())
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM analysis_outputs ORDER BY id DESC"))
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        rows.iter().map(output_of).collect()
    }

    /// Records a checker's decision on a request still awaiting one; `false` if it was decided meanwhile.
    pub async fn decide(
        &self,
        id: u64,
        state: OutputState,
        checker: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE analysis_outputs SET state = $1, checker = $2, comment = $3, decided_at_ms = $4 \
             WHERE id = $5 AND state = 'awaiting_check'",
        )
        .bind(state.as_str())
        .bind(checker)
        .bind(comment)
        .bind(ms(now))
        .bind(db_number(id))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts back an approved request whose release order could not be queued (nothing left the workspace).
    pub async fn undo_releasing(&self, id: u64) -> Result<()> {
        sqlx::query(
            "UPDATE analysis_outputs SET state = 'awaiting_check', checker = NULL, comment = NULL, decided_at_ms = NULL \
             WHERE id = $1 AND state = 'releasing' AND release_order IS NULL",
        )
        .bind(db_number(id))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Whether a request for result `result` of `application` exists (in any state).
    pub async fn requested(&self, application: &str, result: u64) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM analysis_outputs WHERE application = $1 AND result = $2")
            .bind(application)
            .bind(db_number(result))
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    /// The approved request releasing result `result` of `application`.
    pub async fn releasing_result(&self, application: &str, result: u64) -> Result<OutputRequest> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM analysis_outputs WHERE application = $1 AND result = $2 AND state = 'releasing'"
        ))
        .bind(application)
        .bind(db_number(result))
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| PolicyError::NotFound {
            kind: "output request",
            id: format!("releasing result {result}"),
        })?;
        output_of(&row)
    }

    /// Notes the core order releasing an approved request.
    pub async fn releasing(&self, id: u64, order: u64) -> Result<()> {
        sqlx::query("UPDATE analysis_outputs SET release_order = $1 WHERE id = $2 AND state = 'releasing'")
            .bind(db_number(order))
            .bind(db_number(id))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// The request the core order `order` releases.
    pub async fn by_release_order(&self, order: u64) -> Result<OutputRequest> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM analysis_outputs WHERE release_order = $1"
        ))
        .bind(db_number(order))
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| PolicyError::NotFound {
            kind: "output request",
            id: format!("released by order {order}"),
        })?;
        output_of(&row)
    }

    /// Records the release: the signed document's hash and signature.
    pub async fn released(&self, id: u64, sha256: &str, signature: &str, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query(
            "UPDATE analysis_outputs SET state = 'released', content_sha256 = $1, signature = $2, released_at_ms = $3 \
             WHERE id = $4 AND state = 'releasing'",
        )
        .bind(sha256)
        .bind(signature)
        .bind(ms(now))
        .bind(db_number(id))
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Err(PolicyError::InvalidState(format!(
                "output request {id} was not being released"
            )));
        }
        Ok(())
    }

    /// Records that the core refused an approved request at release, with its code.
    pub async fn release_refused(&self, id: u64, code: &str) -> Result<()> {
        sqlx::query(
            "UPDATE analysis_outputs SET state = 'release_refused', comment = $1 WHERE id = $2 AND state = 'releasing'",
        )
        .bind(code)
        .bind(db_number(id))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}
