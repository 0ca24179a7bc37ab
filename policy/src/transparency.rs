//! Transparency: the public registers and the periodic report to the regulator.
//!
//! The law asks processors to publish what the committee approved (purpose, recipient organisation,
//! scope, date, fees) and what was provided to whom, and to report periodically to the regulator. The
//! registers are built only from the committee's record — never from clinical data — and carry no
//! personal names beyond the recipient organisation. The regulator report adds the audit ledger's head
//! (sequence and hash): publishing it fixes the ledger's history at that point, so a later truncation or
//! rewrite of the ledger cannot go unnoticed.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::audit_ledger::{AuditEntry, InspectionBundle, LedgerHead, VerifyReport};
use crate::authorization::{Action, Actor, Resource};
use crate::committee::{ApplicationStatus, Provision};
use crate::error::{PolicyError, Result};
use crate::service::{Origin, Policy};

/// One line of the public provisions register: what was provided under which approval to which organisation —
/// never the recipient's account (a person's name; and usernames are what a password-guessing attacker needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionEntry {
    /// The approval.
    pub application: String,
    /// 1, 2, ... per application.
    pub seq: i64,
    /// The recipient's organisation.
    pub organisation: String,
    /// The channel.
    pub channel: String,
    /// What was provided (release id and file, statistics query).
    pub description: String,
    /// Rows or cells provided.
    pub rows: i64,
    /// When (RFC 3339 UTC).
    pub at: String,
}

impl From<Provision> for ProvisionEntry {
    fn from(p: Provision) -> ProvisionEntry {
        ProvisionEntry {
            application: p.application,
            seq: p.seq,
            organisation: p.organisation,
            channel: p.channel,
            description: p.description,
            rows: p.rows,
            at: p.at,
        }
    }
}

/// One line of the decisions register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEntry {
    /// Application identifier.
    pub application: String,
    /// New, change request or umbrella.
    pub kind: String,
    /// The application it amends (change requests).
    pub amends: Option<String>,
    /// Title.
    pub title: String,
    /// Purpose of use.
    pub purpose: String,
    /// Recipient organisation.
    pub organisation: String,
    /// Data scope: `table(col, col); table(col)`.
    pub scope: String,
    /// Channel.
    pub channel: String,
    /// Status now (`approved`, `revoked`).
    pub status: String,
    /// Date of the decision (RFC 3339).
    pub decided_at: String,
    /// Expiry of the approval.
    pub expires_on: String,
    /// Fee in yen.
    pub fee_yen: u64,
}

/// The regulator's periodic report (the policy zone's part; the core's figures are added by the caller
/// that can read the core store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegulatorReport {
    /// `YYYY-Qn`.
    pub period: String,
    /// First instant of the period (UTC).
    pub from: String,
    /// First instant after the period (UTC).
    pub to: String,
    /// Applications filed in the period.
    pub applications_received: u64,
    /// Of all applications, decided in the period: approved.
    pub applications_approved: u64,
    /// Decided in the period: refused.
    pub applications_refused: u64,
    /// Approvals revoked in the period.
    pub approvals_revoked: u64,
    /// Applications refused at filing in the period (advertising, bans, incomplete forms), from the ledger.
    pub applications_refused_at_filing: u64,
    /// Provisions (releases and statistics) in the period.
    pub provisions: u64,
    /// Differentially private statistical releases in the period (budget ledger).
    #[serde(default)]
    pub dp_releases: u64,
    /// Small-cell tables in the period: published under the minimum-cell convention, not differentially
    /// private, so counted apart and never as a loss of zero.
    #[serde(default)]
    pub small_cell_tables: u64,
    /// Releases built in the period (audit ledger).
    pub releases_built: u64,
    /// Downloads in the period (audit ledger).
    pub downloads: u64,
    /// Violations recorded in the period.
    pub violations: u64,
    /// Denied actions in the period (authorisation, conditions, logins), from the audit ledger.
    pub denied_actions: u64,
    /// Approvals past expiry whose recipients have not declared deletion (release zone; counted from the
    /// audit ledger's `deletion.declare` entries).
    pub deletion_declarations_overdue: u64,
    /// The audit ledger's head when the report was made: publish it to anchor the ledger.
    pub audit_head: LedgerHead,
}

impl Policy {}

/// Parses `YYYY-Qn` into [from, to) in Japan time (quarters are Japanese calendar quarters).
pub fn quarter(period: &str) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let bad = || PolicyError::Invalid(format!("period {period:?} must look like 2026-Q4"));
    let (year, q) = period.split_once("-Q").ok_or_else(bad)?;
    let year: i32 = year.parse().map_err(|_| bad())?;
    let q: u32 = q.parse().map_err(|_| bad())?;
    if !(1..=4).contains(&q) || !(2000..=2999).contains(&year) {
        return Err(bad());
    }
    let start = NaiveDate::from_ymd_opt(year, 3 * (q - 1) + 1, 1).ok_or_else(bad)?;
    let end = if q == 4 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, 3 * q + 1, 1)
    }
    .ok_or_else(bad)?;
    Ok((jst_midnight(start)?, jst_midnight(end)?))
}

fn jst_midnight(d: NaiveDate) -> Result<DateTime<Utc>> {
    let jst = chrono::FixedOffset::east_opt(9 * 3600).ok_or_else(|| PolicyError::Invalid("time zone".into()))?;
    let local = d
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| PolicyError::Invalid("date".into()))?;
    jst.from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| PolicyError::Invalid(format!("no JST midnight on {d}")))
}

fn in_window(rfc3339: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t >= from && t < to)
        .unwrap_or(false)
}

impl Policy {
    /// The decisions register: approved (and later revoked) applications, oldest first.
    pub async fn decisions_register(&self, actor: &Actor, origin: Origin<'_>) -> Result<Vec<DecisionEntry>> {
        self.check(actor, Action::PublishRegister, &Resource::Platform, origin)
            .await?;
        let mut out = Vec::new();
        for a in self.committee().list().await? {
            if !matches!(a.status, ApplicationStatus::Approved | ApplicationStatus::Revoked) {
                continue;
            }
            let Some(c) = a.conditions.as_ref() else { continue };
            let scope = c
                .tables
                .iter()
                .map(|t| format!("{}({})", t.table, t.columns.join(", ")))
                .collect::<Vec<_>>()
                .join("; ");
            out.push(DecisionEntry {
                application: a.id.clone(),
                kind: a.kind.as_str().into(),
                amends: a.amends.clone(),
                title: a.form.title.clone(),
                purpose: a.form.purpose.clone(),
                organisation: a.organisation.clone(),
                scope: if scope.is_empty() {
                    "statistics only".into()
                } else {
                    scope
                },
                channel: c.channel.as_str().into(),
                status: a.status.as_str().into(),
                decided_at: a.decided_at.clone().unwrap_or_default(),
                expires_on: c.expires_on.to_string(),
                fee_yen: a.fee.total_yen,
            });
        }
        self.audit_ok(
            actor,
            "publish.decisions",
            "register",
            origin,
            serde_json::json!({"entries": out.len()}),
        )
        .await?;
        Ok(out)
    }

    /// The provisions register: what was provided to which organisation under which approval.
    pub async fn provisions_register(&self, actor: &Actor, origin: Origin<'_>) -> Result<Vec<ProvisionEntry>> {
        self.check(actor, Action::PublishRegister, &Resource::Platform, origin)
            .await?;
        let out: Vec<ProvisionEntry> = self
            .committee()
            .provisions()
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        self.audit_ok(
            actor,
            "publish.provisions",
            "register",
            origin,
            serde_json::json!({"entries": out.len()}),
        )
        .await?;
        Ok(out)
    }

    /// The policy zone's figures for the regulator's report of `period` (`YYYY-Qn`).
    pub async fn regulator_report(&self, actor: &Actor, period: &str, origin: Origin<'_>) -> Result<RegulatorReport> {
        let (from, to) = quarter(period)?;
        self.check(actor, Action::ReportRegulator, &Resource::Platform, origin)
            .await?;
        let apps = self.committee().list().await?;
        let decided = |status: ApplicationStatus| {
            apps.iter()
                .filter(|a| a.decided_at.as_deref().is_some_and(|d| in_window(d, from, to)))
                .filter(|a| {
                    a.status == status
                        || status == ApplicationStatus::Approved && a.status == ApplicationStatus::Revoked
                })
                .count() as u64
        };
        let entries = self.audit_ledger().entries(from, to).await?;
        let count = |action: &str, outcome: Option<&str>| {
            entries
                .iter()
                .filter(|e: &&AuditEntry| e.action == action && outcome.is_none_or(|o| e.outcome == o))
                .count() as u64
        };
        let statistics = self
            .budget()
            .entries_between(from.timestamp_millis(), to.timestamp_millis())
            .await?;
        let dp_releases = statistics.iter().filter(|e| e.differentially_private).count() as u64;
        let small_cell_tables = statistics.len() as u64 - dp_releases;
        let today = crate::committee::japan_date(self.now());
        let declared: std::collections::BTreeSet<String> = self
            .audit_ledger()
            .entries(DateTime::<Utc>::MIN_UTC, self.now() + chrono::Duration::seconds(1))
            .await?
            .into_iter()
            .filter(|e| e.action == "deletion.declare" && e.outcome == "ok")
            .map(|e| e.resource)
            .collect();
        let overdue = apps
            .iter()
            .filter(|a| matches!(a.status, ApplicationStatus::Approved | ApplicationStatus::Revoked))
            .filter(|a| a.conditions.as_ref().is_some_and(|c| c.expires_on < today))
            .filter(|a| !declared.contains(&format!("application {}", a.id)))
            .count() as u64;
        let report = RegulatorReport {
            period: period.to_owned(),
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            applications_received: apps.iter().filter(|a| in_window(&a.filed_at, from, to)).count() as u64,
            applications_approved: decided(ApplicationStatus::Approved),
            applications_refused: decided(ApplicationStatus::Refused),
            approvals_revoked: apps
                .iter()
                .filter(|a| a.revoked.as_ref().is_some_and(|(at, _)| in_window(at, from, to)))
                .count() as u64,
            applications_refused_at_filing: count("application.file", Some("denied")),
            provisions: self
                .committee()
                .provisions()
                .await?
                .iter()
                .filter(|p| in_window(&p.at, from, to))
                .count() as u64,
            dp_releases,
            small_cell_tables,
            releases_built: count("release.build", Some("ok")),
            downloads: count("download_release", Some("ok")),
            violations: count("violation.record", Some("ok")),
            denied_actions: entries.iter().filter(|e| e.outcome == "denied").count() as u64,
            deletion_declarations_overdue: overdue,
            audit_head: self.audit_ledger().head().await?,
        };
        self.audit_ok(actor, "report.regulator", period, origin, serde_json::json!({}))
            .await?;
        Ok(report)
    }

    /// Verifies the whole audit ledger under the service's ledger key and the ones rotation retired (operators and
    /// auditors).
    pub async fn verify_audit(&self, actor: &Actor, origin: Origin<'_>) -> Result<VerifyReport> {
        self.check(actor, Action::VerifyAudit, &Resource::Platform, origin)
            .await?;
        let report = self.audit_ledger().verify_with_keys(&self.ledger_keys()).await?;
        self.audit_ok(
            actor,
            "audit.verify",
            "audit ledger",
            origin,
            serde_json::json!({"entries_checked": report.entries_checked, "ok": report.is_ok()}),
        )
        .await?;
        Ok(report)
    }

    /// The inspection bundle of [from, to) (auditors).
    pub async fn export_audit(
        &self,
        actor: &Actor,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        origin: Origin<'_>,
    ) -> Result<InspectionBundle> {
        self.check(actor, Action::ExportAudit, &Resource::Platform, origin)
            .await?;
        let bundle = self.audit_ledger().export(from, to).await?;
        let details =
            serde_json::json!({"from": from.to_rfc3339(), "to": to.to_rfc3339(), "entries": bundle.entries.len()});
        self.audit_ok(actor, "audit.export", "audit ledger", origin, details)
            .await?;
        Ok(bundle)
    }
}

/// The year of a date, for callers building periods.
pub fn current_quarter(now: DateTime<Utc>) -> String {
    let d = crate::committee::japan_date(now);
    format!("{}-Q{}", d.year(), (d.month() - 1) / 3 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_are_japanese_calendar_quarters() {
        let (from, to) = quarter("2026-Q4").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from.to_rfc3339(), "2026-09-30T15:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-12-31T15:00:00+00:00");
        assert!(quarter("2026-Q5").is_err());
        assert!(quarter("2026Q1").is_err());
        let now = Utc
            .with_ymd_and_hms(2026, 12, 31, 16, 0, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(current_quarter(now), "2027-Q1");
    }
}
