//! The committee's record in the policy database, and the state machine of an application.
//!
//! Every transition runs in one transaction that first locks the application's row (an `UPDATE` that
//! changes nothing but takes SQLite's write lock or PostgreSQL's row lock), so two chairs cannot decide
//! the same application twice, and a vote cannot slip in after the decision.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::application::{ApplicationForm, ApplicationKind, ApplicationStatus};
use super::bans::{BanList, BanSubject, Violation};
use super::conditions::{ApprovalConditions, ApprovalState, UseKind, UseRequest, check_use};
use super::fees::{FeeEstimate, Tariff};
use super::review::{Outcome, QuorumRule, Tally, Vote, tally};
use crate::authorization::ApplicationFacts;
use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};
use crate::service_key::ServicePublicKey;

/// Today's date in Japan (UTC+9, no daylight saving): approval expiry dates and bans are local dates.
pub fn japan_date(now: DateTime<Utc>) -> NaiveDate {
    match FixedOffset::east_opt(9 * 3600) {
        Some(jst) => now.with_timezone(&jst).date_naive(),
        None => now.date_naive(),
    }
}

/// A member assigned to a review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The member.
    pub member: String,
    /// Who assigned them.
    pub assigned_by: String,
    /// Whether they recused.
    pub recused: bool,
    /// The reason they gave.
    pub recusal_reason: Option<String>,
}

/// An application with its review and decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationRecord {
    /// `A-YYYY-NNNN`.
    pub id: String,
    /// New, change request or umbrella.
    pub kind: ApplicationKind,
    /// For a change request, the application it amends.
    pub amends: Option<String>,
    /// The researcher who filed it.
    pub applicant: String,
    /// Their organisation.
    pub organisation: String,
    /// The form as filed.
    pub form: ApplicationForm,
    /// The fee estimate.
    pub fee: FeeEstimate,
    /// Where it stands.
    pub status: ApplicationStatus,
    /// When it was filed (RFC 3339 UTC).
    pub filed_at: String,
    /// When it was decided.
    pub decided_at: Option<String>,
    /// Who closed the review.
    pub decided_by: Option<String>,
    /// The tally at the decision.
    pub tally: Option<Tally>,
    /// The effective approval conditions.
    pub conditions: Option<ApprovalConditions>,
    /// How many times the conditions were set (a change request's approval increments it).
    pub conditions_revision: i64,
    /// When and why the approval was revoked.
    pub revoked: Option<(String, String)>,
    /// Downloads made under the approval.
    pub downloads_used: u32,
    /// Assigned members.
    pub reviewers: Vec<Assignment>,
    /// Votes cast (recused members' votes are withdrawn).
    pub votes: Vec<Vote>,
}

impl ApplicationRecord {
    /// The facts `authorize` needs about this application.
    pub fn facts(&self) -> ApplicationFacts {
        ApplicationFacts {
            id: self.id.clone(),
            applicant: self.applicant.clone(),
            organisation: self.organisation.clone(),
            reviewers: self.reviewers.iter().map(|a| a.member.clone()).collect(),
            recused: self
                .reviewers
                .iter()
                .filter(|a| a.recused)
                .map(|a| a.member.clone())
                .collect(),
            recipients: self
                .conditions
                .as_ref()
                .map(|c| c.recipients.clone())
                .unwrap_or_default(),
        }
    }

    /// The approval's state for [`check_use`].
    pub fn approval_state(&self) -> ApprovalState<'_> {
        ApprovalState {
            id: &self.id,
            status: self.status,
            conditions: self.conditions.as_ref(),
            downloads_used: self.downloads_used,
        }
    }
}

/// One provision: data or statistics given to a recipient under an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provision {
    /// The approval.
    pub application: String,
    /// 1, 2, ... per application.
    pub seq: i64,
    /// Who received it.
    pub recipient: String,
    /// Their organisation.
    pub organisation: String,
    /// The channel.
    pub channel: String,
    /// What was provided (release id, statistics query).
    pub description: String,
    /// Rows or cells provided.
    pub rows: i64,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// The committee's record; cheap to clone.
#[derive(Debug, Clone)]
pub struct Committee {
    db: PolicyDb,
    rule: QuorumRule,
    tariff: Tariff,
}

fn stamp(now: DateTime<Utc>) -> (i64, String) {
    (now.timestamp_millis(), now.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| PolicyError::Invalid(format!("cannot encode record: {e}")))
}

fn parse_json<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| PolicyError::Invalid(format!("stored {what} is unreadable: {e}")))
}

impl Committee {
    /// The quorum rule reviews are decided by (shown to members beside the votes).
    pub fn quorum_rule(&self) -> QuorumRule {
        self.rule
    }

    /// The committee over `db` with its quorum rule and tariffs.
    pub(crate) fn new(db: PolicyDb, rule: QuorumRule, tariff: Tariff) -> Result<Committee> {
        rule.validate()?;
        Ok(Committee { db, rule, tariff })
    }

    /// The quorum rule in force.
    pub fn rule(&self) -> QuorumRule {
        self.rule
    }

    /// The tariffs in force.
    pub fn tariff(&self) -> &Tariff {
        &self.tariff
    }

    /// Files an application (or, with `amends`, a change request to an approved one). Refused when the
    /// form fails its checks (advertising included) or the applicant or their organisation is banned.
    pub async fn file(
        &self,
        applicant: &str,
        organisation: &str,
        mut form: ApplicationForm,
        amends: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ApplicationRecord> {
        form.validate()?;
        if !form.recipients.iter().any(|r| r == applicant) {
            form.recipients.insert(0, applicant.to_owned());
        }
        let today = japan_date(now);
        let mut subjects = vec![
            BanSubject::Person(applicant.to_owned()),
            BanSubject::Organisation(organisation.to_owned()),
        ];
        subjects.extend(form.recipients.iter().map(|r| BanSubject::Person(r.clone())));
        if let Some(v) = self.ban_of(&subjects, today).await? {
            return Err(banned(&v));
        }
        let kind = if amends.is_some() {
            ApplicationKind::Change
        } else if form.is_umbrella() {
            ApplicationKind::Umbrella
        } else {
            ApplicationKind::New
        };
        let fee = self.tariff.estimate(&form);
        let (at_ms, at) = stamp(now);
        let mut tx = self.db.begin_write().await?;
        if let Some(parent) = amends {
            let p = fetch(&mut tx, parent).await?;
            if p.status != ApplicationStatus::Approved {
                return Err(PolicyError::InvalidState(format!(
                    "a change request amends an approved application; {parent} is {}",
                    p.status
                )));
            }
            if p.applicant != applicant {
                return Err(PolicyError::InvalidState(format!(
                    "{parent} was filed by another researcher"
                )));
            }
        }
        let id = next_id(&mut tx, "A", now).await?;
        sqlx::query(
            "INSERT INTO applications (id, kind, amends, applicant, organisation, title, channel, form_json, fee_json, \
             fee_total_yen, status, filed_at_ms, filed_at, conditions_revision, downloads_used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, 0)",
        )
        .bind(&id)
        .bind(kind.as_str())
        .bind(amends.map(str::to_owned))
        .bind(applicant)
        .bind(organisation)
        .bind(&form.title)
        .bind(form.channel.as_str())
        .bind(json(&form)?)
        .bind(json(&fee)?)
        .bind(i64::try_from(fee.total_yen).unwrap_or(i64::MAX))
        .bind(ApplicationStatus::Submitted.as_str())
        .bind(at_ms)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        let record = fetch(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// One application with its review.
    pub async fn get(&self, id: &str) -> Result<ApplicationRecord> {
        let mut tx = self.db.begin_write().await?;
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Every application, oldest first.
    pub async fn list(&self) -> Result<Vec<ApplicationRecord>> {
        let mut tx = self.db.begin_write().await?;
        let ids: Vec<String> = sqlx::query("SELECT id FROM applications ORDER BY filed_at_ms, id")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(fetch(&mut tx, &id).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The chair assigns members to the review (status becomes under review). Assigning someone again
    /// changes nothing; a member who recused stays recused.
    pub async fn assign(
        &self,
        id: &str,
        members: &[String],
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<ApplicationRecord> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        if !matches!(
            app.status,
            ApplicationStatus::Submitted | ApplicationStatus::UnderReview
        ) {
            return Err(PolicyError::InvalidState(format!(
                "{id} is {}; reviewers can no longer be assigned",
                app.status
            )));
        }
        for m in members {
            if *m == app.applicant {
                return Err(PolicyError::InvalidState(format!(
                    "{m} filed {id} and cannot review it"
                )));
            }
            sqlx::query(
                "INSERT INTO review_assignments (application, member, assigned_by, assigned_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (application, member) DO NOTHING",
            )
            .bind(id)
            .bind(m)
            .bind(by)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        }
        set_status(&mut tx, id, ApplicationStatus::UnderReview).await?;
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// A member declares a conflict of interest and steps out; a vote already cast is withdrawn.
    pub async fn recuse(&self, id: &str, member: &str, reason: &str, now: DateTime<Utc>) -> Result<ApplicationRecord> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        open_for_review(&app)?;
        let changed = sqlx::query(
            "UPDATE review_assignments SET recused_at_ms = $3, recusal_reason = $4 \
             WHERE application = $1 AND member = $2 AND recused_at_ms IS NULL",
        )
        .bind(id)
        .bind(member)
        .bind(now.timestamp_millis())
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(PolicyError::InvalidState(format!(
                "{member} is not an active reviewer of {id}"
            )));
        }
        sqlx::query("DELETE FROM review_votes WHERE application = $1 AND member = $2")
            .bind(id)
            .bind(member)
            .execute(&mut *tx)
            .await?;
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// A member votes, once, with a comment.
    pub async fn vote(&self, id: &str, vote: Vote, now: DateTime<Utc>) -> Result<ApplicationRecord> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        open_for_review(&app)?;
        if app.status != ApplicationStatus::UnderReview {
            return Err(PolicyError::InvalidState(format!("{id} has no reviewers assigned yet")));
        }
        if !app.reviewers.iter().any(|a| a.member == vote.member && !a.recused) {
            return Err(PolicyError::InvalidState(format!(
                "{} is not an active reviewer of {id}",
                vote.member
            )));
        }
        if app.votes.iter().any(|v| v.member == vote.member) {
            return Err(PolicyError::InvalidState(format!(
                "{} has already voted on {id}",
                vote.member
            )));
        }
        sqlx::query(
            "INSERT INTO review_votes (application, member, in_favour, comment, at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&vote.member)
        .bind(i64::from(vote.in_favour))
        .bind(&vote.comment)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// The chair closes the review: the quorum rule decides. An approval needs `conditions` within what
    /// was applied for, and no banned recipient; a change request's conditions replace those of the
    /// application it amends. Too few votes leave the review open ([`PolicyError::QuorumNotMet`]).
    pub async fn decide(
        &self,
        id: &str,
        by: &str,
        conditions: Option<ApprovalConditions>,
        now: DateTime<Utc>,
    ) -> Result<(Outcome, ApplicationRecord)> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        if app.status != ApplicationStatus::UnderReview {
            return Err(PolicyError::InvalidState(format!(
                "{id} is {}, not under review",
                app.status
            )));
        }
        let t = tally(&app.votes);
        let outcome = self.rule.decide(t)?;
        let (at_ms, at) = stamp(now);
        let conditions_json = match outcome {
            Outcome::Approved => {
                let Some(c) = conditions.as_ref() else {
                    return Err(PolicyError::Invalid(format!(
                        "{id} is approved by the vote; the approval needs its conditions"
                    )));
                };
                c.validate_against(&app.form)?;
                let subjects: Vec<BanSubject> = c.recipients.iter().map(|r| BanSubject::Person(r.clone())).collect();
                if let Some(v) = ban_in(&mut tx, &subjects, japan_date(now)).await? {
                    return Err(banned(&v));
                }
                Some(json(c)?)
            }
            Outcome::Refused => None,
        };
        let status = match outcome {
            Outcome::Approved => ApplicationStatus::Approved,
            Outcome::Refused => ApplicationStatus::Refused,
        };
        let fee = self.tariff.estimate(&app.form);
        sqlx::query(
            "UPDATE applications SET status = $2, decided_at_ms = $3, decided_at = $4, decided_by = $5, \
             votes_in_favour = $6, votes_against = $7, conditions_json = $8, \
             conditions_revision = conditions_revision + $9, fee_json = $10, fee_total_yen = $11 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(at_ms)
        .bind(&at)
        .bind(by)
        .bind(i64::from(t.in_favour))
        .bind(i64::from(t.against))
        .bind(conditions_json.clone())
        .bind(i64::from(conditions_json.is_some()))
        .bind(json(&fee)?)
        .bind(i64::try_from(fee.total_yen).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if let (Some(parent), Some(c)) = (app.amends.as_deref(), conditions_json.as_ref()) {
            let p = lock(&mut tx, parent).await?;
            if p.status != ApplicationStatus::Approved {
                return Err(PolicyError::InvalidState(format!(
                    "{parent}, which {id} amends, is {} and can no longer be changed",
                    p.status
                )));
            }
            sqlx::query(
                "UPDATE applications SET conditions_json = $2, conditions_revision = conditions_revision + 1 WHERE id = $1",
            )
            .bind(parent)
            .bind(c)
            .execute(&mut *tx)
            .await?;
        }
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok((outcome, r))
    }

    /// Withdraws an approval: nothing more is built or downloaded under it (the release service checks the
    /// status at every use, so pending download tokens die with it). The approved change requests that amend
    /// it, and theirs in turn, are revoked in the same transaction: a change request is no approval of its
    /// own once its parent is gone. Returns the record and the change requests revoked with it.
    pub async fn revoke(&self, id: &str, reason: &str, now: DateTime<Utc>) -> Result<(ApplicationRecord, Vec<String>)> {
        if reason.trim().is_empty() {
            return Err(PolicyError::Invalid("a revocation needs a reason".into()));
        }
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        if app.status != ApplicationStatus::Approved {
            return Err(PolicyError::InvalidState(format!(
                "{id} is {}, not approved",
                app.status
            )));
        }
        set_revoked(&mut tx, id, reason, now).await?;
        let cascaded = revoke_change_requests(&mut tx, id, now).await?;
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok((r, cascaded))
    }

    /// The applicant withdraws an application that was not decided yet.
    pub async fn withdraw(&self, id: &str) -> Result<ApplicationRecord> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        open_for_review(&app)?;
        set_status(&mut tx, id, ApplicationStatus::Withdrawn).await?;
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Checks a use against the approval and, for a download, counts it — atomically, so concurrent
    /// downloads cannot exceed the limit.
    pub async fn admit_use(&self, request: &UseRequest<'_>, id: &str) -> Result<ApplicationRecord> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        standing(&mut tx, &app, request).await?;
        if request.kind == UseKind::Download {
            sqlx::query("UPDATE applications SET downloads_used = downloads_used + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let r = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Re-checks a use already admitted (each HTTPS request of a download): the same conditions as
    /// [`Self::admit_use`], read without a lock and counting nothing.
    pub async fn check_standing(&self, request: &UseRequest<'_>, id: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let app = fetch(&mut tx, id).await?;
        standing(&mut tx, &app, request).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records what was provided under an approval (the provisions register).
    pub async fn record_provision(
        &self,
        id: &str,
        recipient: &str,
        organisation: &str,
        description: &str,
        rows: i64,
        now: DateTime<Utc>,
    ) -> Result<Provision> {
        let mut tx = self.db.begin_write().await?;
        let app = lock(&mut tx, id).await?;
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM provisions WHERE application = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("next")?;
        let (at_ms, at) = stamp(now);
        let channel = app.conditions.as_ref().map(|c| c.channel).unwrap_or(app.form.channel);
        sqlx::query(
            "INSERT INTO provisions (application, seq, recipient, organisation, channel, description, rows_provided, at_ms, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(seq)
        .bind(recipient)
        .bind(organisation)
        .bind(channel.as_str())
        .bind(description)
        .bind(rows)
        .bind(at_ms)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Provision {
            application: id.to_owned(),
            seq,
            recipient: recipient.to_owned(),
            organisation: organisation.to_owned(),
            channel: channel.as_str().to_owned(),
            description: description.to_owned(),
            rows,
            at,
        })
    }

    /// Every provision, oldest first.
    pub async fn provisions(&self) -> Result<Vec<Provision>> {
        let rows = sqlx::query(
            "SELECT application, seq, recipient, organisation, channel, description, rows_provided, at \
             FROM provisions ORDER BY at_ms, application, seq",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Provision {
                    application: r.try_get("application")?,
                    seq: r.try_get("seq")?,
                    recipient: r.try_get("recipient")?,
                    organisation: r.try_get("organisation")?,
                    channel: r.try_get("channel")?,
                    description: r.try_get("description")?,
                    rows: r.try_get("rows_provided")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Records a violation and the ban it carries.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_violation(
        &self,
        subject: BanSubject,
        kind: &str,
        description: &str,
        application: Option<&str>,
        banned_until: Option<NaiveDate>,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Violation> {
        if subject.id().trim().is_empty() || kind.trim().is_empty() || description.trim().is_empty() {
            return Err(PolicyError::Invalid(
                "a violation needs a subject, a kind and a description".into(),
            ));
        }
        let mut tx = self.db.begin_write().await?;
        if let Some(a) = application {
            fetch(&mut tx, a).await?;
        }
        let id = next_id(&mut tx, "V", now).await?;
        let (_, at) = stamp(now);
        let v = Violation {
            id,
            subject,
            kind: kind.to_owned(),
            description: description.to_owned(),
            application: application.map(str::to_owned),
            banned_until,
            recorded_at: at,
            recorded_by: by.to_owned(),
            source: "local".to_owned(),
        };
        insert_violation(&mut tx, &v, now.timestamp_millis()).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Every violation (local and imported), oldest first.
    pub async fn violations(&self) -> Result<Vec<Violation>> {
        let rows = sqlx::query(&format!(
            "SELECT {VIOLATION_COLUMNS} FROM violations ORDER BY recorded_at_ms, source, id"
        ))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(violation_from_row).collect()
    }

    /// The first ban in force against any of `subjects`.
    pub async fn ban_of(&self, subjects: &[BanSubject], today: NaiveDate) -> Result<Option<Violation>> {
        let mut tx = self.db.begin_write().await?;
        let v = ban_in(&mut tx, subjects, today).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Bans issued here and in force (what [`BanList`] exports: imported bans are the other processors'
    /// to publish).
    pub async fn local_bans_in_force(&self, today: NaiveDate) -> Result<Vec<Violation>> {
        Ok(self
            .violations()
            .await?
            .into_iter()
            .filter(|v| v.source == "local" && v.in_force(today))
            .collect())
    }

    /// Imports another processor's signed list; returns how many bans were new. Re-importing the same list
    /// changes nothing.
    pub async fn import_bans(&self, list: &BanList, trusted: &ServicePublicKey, now: DateTime<Utc>) -> Result<usize> {
        let bans = list.verify(trusted)?;
        let source = trusted.key_id();
        let mut tx = self.db.begin_write().await?;
        let mut added = 0;
        for b in bans {
            let v = Violation {
                source: source.clone(),
                recorded_by: list.issuer.clone(),
                ..b.clone()
            };
            let exists = sqlx::query("SELECT 1 AS x FROM violations WHERE source = $1 AND id = $2")
                .bind(&v.source)
                .bind(&v.id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                insert_violation(&mut tx, &v, now.timestamp_millis()).await?;
                added += 1;
            }
        }
        tx.commit().await?;
        Ok(added)
    }
}

const VIOLATION_COLUMNS: &str =
    "id, source, subject_kind, subject, kind, description, application, banned_until, recorded_at, recorded_by";

fn banned(v: &Violation) -> PolicyError {
    PolicyError::Banned {
        subject: v.subject.to_string(),
        until: v
            .banned_until
            .map(|d| d.to_string())
            .unwrap_or_else(|| "indefinite".into()),
        violation: v.id.clone(),
        reason: v.kind.clone(),
    }
}

async fn insert_violation(tx: &mut Transaction<'_, Any>, v: &Violation, at_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO violations (id, source, subject_kind, subject, kind, description, application, banned_until, \
         recorded_at_ms, recorded_at, recorded_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&v.id)
    .bind(&v.source)
    .bind(v.subject.kind())
    .bind(v.subject.id())
    .bind(&v.kind)
    .bind(&v.description)
    .bind(v.application.clone())
    .bind(v.banned_until.map(|d| d.to_string()))
    .bind(at_ms)
    .bind(&v.recorded_at)
    .bind(&v.recorded_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn violation_from_row(r: &AnyRow) -> Result<Violation> {
    let kind: String = r.try_get("subject_kind")?;
    let subject: String = r.try_get("subject")?;
    let until: Option<String> = r.try_get("banned_until")?;
    Ok(Violation {
        id: r.try_get("id")?,
        subject: BanSubject::from_parts(&kind, &subject)?,
        kind: r.try_get("kind")?,
        description: r.try_get("description")?,
        application: r.try_get("application")?,
        banned_until: until
            .map(|d| {
                d.parse::<NaiveDate>()
                    .map_err(|e| PolicyError::Invalid(format!("stored ban date {d:?}: {e}")))
            })
            .transpose()?,
        recorded_at: r.try_get("recorded_at")?,
        recorded_by: r.try_get("recorded_by")?,
        source: r.try_get("source")?,
    })
}

async fn ban_in(tx: &mut Transaction<'_, Any>, subjects: &[BanSubject], today: NaiveDate) -> Result<Option<Violation>> {
    for s in subjects {
        let rows = sqlx::query(&format!(
            "SELECT {VIOLATION_COLUMNS} FROM violations WHERE subject_kind = $1 AND subject = $2 ORDER BY recorded_at_ms"
        ))
        .bind(s.kind())
        .bind(s.id())
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let v = violation_from_row(r)?;
            if v.in_force(today) {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

fn open_for_review(app: &ApplicationRecord) -> Result<()> {
    match app.status {
        ApplicationStatus::Submitted | ApplicationStatus::UnderReview => Ok(()),
        other => Err(PolicyError::InvalidState(format!(
            "{} is {other}; its review is closed",
            app.id
        ))),
    }
}

async fn set_status(tx: &mut Transaction<'_, Any>, id: &str, status: ApplicationStatus) -> Result<()> {
    sqlx::query("UPDATE applications SET status = $2 WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks the application's row for the rest of the transaction, then reads it.
async fn lock(tx: &mut Transaction<'_, Any>, id: &str) -> Result<ApplicationRecord> {
    sqlx::query("UPDATE applications SET downloads_used = downloads_used WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    fetch(tx, id).await
}

async fn set_revoked(tx: &mut Transaction<'_, Any>, id: &str, reason: &str, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE applications SET status = $2, revoked_at_ms = $3, revoked_reason = $4 WHERE id = $1")
        .bind(id)
        .bind(ApplicationStatus::Revoked.as_str())
        .bind(now.timestamp_millis())
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Revokes every approved change request below `root` (breadth first), each with a reason naming the
/// approval whose revocation took it.
async fn revoke_change_requests(tx: &mut Transaction<'_, Any>, root: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
    let mut revoked = Vec::new();
    let mut frontier = vec![root.to_owned()];
    while let Some(parent) = frontier.pop() {
        let children: Vec<String> =
            sqlx::query("SELECT id FROM applications WHERE amends = $1 AND status = $2 ORDER BY id")
                .bind(&parent)
                .bind(ApplicationStatus::Approved.as_str())
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<std::result::Result<_, _>>()?;
        for child in children {
            set_revoked(tx, &child, &format!("the approval of {root} was revoked"), now).await?;
            revoked.push(child.clone());
            frontier.push(child);
        }
    }
    Ok(revoked)
}

/// Whether `request` may happen under `app` now: the recipient (person or organisation) not banned, the
/// approval's conditions met, and every application it amends still approved.
async fn standing(tx: &mut Transaction<'_, Any>, app: &ApplicationRecord, request: &UseRequest<'_>) -> Result<()> {
    // A ban on the recipient's organisation stops the recipient too (receiving data, not only filing).
    let organisation: Option<String> = sqlx::query("SELECT organisation FROM users WHERE username = $1")
        .bind(request.recipient)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get("organisation"))
        .transpose()?;
    let mut subjects = vec![BanSubject::Person(request.recipient.to_owned())];
    subjects.extend(organisation.map(BanSubject::Organisation));
    if let Some(v) = ban_in(tx, &subjects, request.today).await? {
        return Err(banned(&v));
    }
    check_use(&app.approval_state(), request)?;
    check_parents(tx, app).await
}

/// Checks that every application a change request amends, up to the original, is still approved: a use
/// under a change request stands on its parents' approvals.
async fn check_parents(tx: &mut Transaction<'_, Any>, app: &ApplicationRecord) -> Result<()> {
    let mut next = app.amends.clone();
    let mut seen = 0;
    while let Some(parent) = next {
        seen += 1;
        if seen > 64 {
            return Err(PolicyError::InvalidState(format!(
                "{} amends a chain longer than 64",
                app.id
            )));
        }
        let p = fetch(tx, &parent).await?;
        if p.status != ApplicationStatus::Approved {
            let code = if p.status == ApplicationStatus::Revoked {
                "APPROVAL_REVOKED"
            } else {
                "NOT_APPROVED"
            };
            return Err(PolicyError::ConditionViolated {
                code,
                message: format!("{}, which {} amends, is {}", p.id, app.id, p.status),
            });
        }
        next = p.amends;
    }
    Ok(())
}

/// Allocates `PREFIX-YYYY-NNNN` from the year's counter (locked by the update).
async fn next_id(tx: &mut Transaction<'_, Any>, prefix: &str, now: DateTime<Utc>) -> Result<String> {
    let year = japan_date(now).year();
    let name = format!("{prefix}-{year}");
    sqlx::query("INSERT INTO committee_counters (name, last_value) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
        .bind(&name)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE committee_counters SET last_value = last_value + 1 WHERE name = $1")
        .bind(&name)
        .execute(&mut **tx)
        .await?;
    let n: i64 = sqlx::query("SELECT last_value FROM committee_counters WHERE name = $1")
        .bind(&name)
        .fetch_one(&mut **tx)
        .await?
        .try_get("last_value")?;
    Ok(format!("{name}-{n:04}"))
}

async fn fetch(tx: &mut Transaction<'_, Any>, id: &str) -> Result<ApplicationRecord> {
    let row = sqlx::query(
        "SELECT id, kind, amends, applicant, organisation, form_json, fee_json, status, filed_at, decided_at, \
         decided_by, votes_in_favour, votes_against, conditions_json, conditions_revision, revoked_at_ms, \
         revoked_reason, downloads_used FROM applications WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| PolicyError::NotFound {
        kind: "application",
        id: id.to_owned(),
    })?;
    let reviewers = sqlx::query(
        "SELECT member, assigned_by, recused_at_ms, recusal_reason FROM review_assignments \
         WHERE application = $1 ORDER BY assigned_at_ms, member",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        Ok(Assignment {
            member: r.try_get("member")?,
            assigned_by: r.try_get("assigned_by")?,
            recused: r.try_get::<Option<i64>, _>("recused_at_ms")?.is_some(),
            recusal_reason: r.try_get("recusal_reason")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let votes = sqlx::query(
        "SELECT member, in_favour, comment FROM review_votes WHERE application = $1 ORDER BY at_ms, member",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        Ok(Vote {
            member: r.try_get("member")?,
            in_favour: r.try_get::<i64, _>("in_favour")? != 0,
            comment: r.try_get("comment")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let tally = match (
        row.try_get::<Option<i64>, _>("votes_in_favour")?,
        row.try_get::<Option<i64>, _>("votes_against")?,
    ) {
        (Some(f), Some(a)) => {
            let (f, a) = (u32::try_from(f).unwrap_or(0), u32::try_from(a).unwrap_or(0));
            Some(Tally {
                voting: f + a,
                in_favour: f,
                against: a,
            })
        }
        _ => None,
    };
    let revoked = match (
        row.try_get::<Option<i64>, _>("revoked_at_ms")?,
        row.try_get::<Option<String>, _>("revoked_reason")?,
    ) {
        (Some(ms), Some(reason)) => Some((
            DateTime::<Utc>::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                .unwrap_or_default(),
            reason,
        )),
        _ => None,
    };
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let form: String = row.try_get("form_json")?;
    let fee: String = row.try_get("fee_json")?;
    let conditions: Option<String> = row.try_get("conditions_json")?;
    Ok(ApplicationRecord {
        id: row.try_get("id")?,
        kind: ApplicationKind::parse(&kind)?,
        amends: row.try_get("amends")?,
        applicant: row.try_get("applicant")?,
        organisation: row.try_get("organisation")?,
        form: parse_json(&form, "application form")?,
        fee: parse_json(&fee, "fee estimate")?,
        status: ApplicationStatus::parse(&status)?,
        filed_at: row.try_get("filed_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        tally,
        conditions: conditions.map(|c| parse_json(&c, "approval conditions")).transpose()?,
        conditions_revision: row.try_get("conditions_revision")?,
        revoked,
        downloads_used: u32::try_from(row.try_get::<i64, _>("downloads_used")?).unwrap_or(u32::MAX),
        reviewers,
        votes,
    })
}
