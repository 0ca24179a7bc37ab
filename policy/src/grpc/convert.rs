//! Conversions between the `tokumei.policy.v1` messages and the policy zone's types.
//!
//! Conventions of the wire format: dates are `YYYY-MM-DD` (Japan's calendar dates, as the domain keeps
//! them), instants RFC 3339, enumerations their stable snake_case names (`file`, `statistics`,
//! `on_platform`; `researcher`, `committee_member`...), and an empty string is "absent" for optional text
//! (proto3 has no null strings). Anything that does not parse is a [`PolicyError::Invalid`], which the
//! service reports as `INVALID_ARGUMENT`.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::NaiveDate;
use tokumei_proto::policy::v1 as pb;

use crate::audit_ledger::VerifyReport;
use crate::authorization::{Actor, AuthMethod, Role};
use crate::committee::fees::FeePart;
use crate::committee::{
    ApplicationForm, ApplicationRecord, ApprovalConditions, BanSubject, Channel, DpBudget, FeeEstimate, FeeMode,
    PrivacyModel, Study, TableRequest, UseKind, Violation,
};
use crate::core_orders::{CoreOperation, OrderStatus};
use crate::error::{PolicyError, Result};
use crate::identity::UserRecord;

// ------------------------------------------------------------------------------------------------ scalars

/// `None` for the empty string (proto3's "absent"), else the text.
pub fn optional_text(text: &str) -> Option<&str> {
    if text.is_empty() { None } else { Some(text) }
}

/// A required `YYYY-MM-DD` date; `field` names it in the error.
pub fn date(field: &str, text: &str) -> Result<NaiveDate> {
    if text.is_empty() {
        return Err(PolicyError::Invalid(format!("{field} is required (YYYY-MM-DD)")));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| PolicyError::Invalid(format!("{field} {:?} is not a date (YYYY-MM-DD)", shorten(text))))
}

/// An optional `YYYY-MM-DD` date: the empty string is `None`.
pub fn optional_date(field: &str, text: &str) -> Result<Option<NaiveDate>> {
    optional_text(text).map(|t| date(field, t)).transpose()
}

/// A delivery channel by its stable name.
pub fn channel(text: &str) -> Result<Channel> {
    Channel::from_str(text)
}

/// Roles by their stable names; an unknown name is refused.
pub fn roles(names: &[String]) -> Result<Vec<Role>> {
    names
        .iter()
        .map(|n| Role::from_str(n).map_err(PolicyError::Invalid))
        .collect()
}

/// `build`, `download` or `statistics`.
pub fn use_kind(text: &str) -> Result<UseKind> {
    match text {
        "build" => Ok(UseKind::Build),
        "download" => Ok(UseKind::Download),
        "statistics" => Ok(UseKind::Statistics),
        other => Err(PolicyError::Invalid(format!(
            "unknown use kind {:?}: expected build, download or statistics",
            shorten(other)
        ))),
    }
}

/// A ban's subject from `person`/`organisation` and the identifier.
pub fn ban_subject(kind: &str, id: &str) -> Result<BanSubject> {
    if id.trim().is_empty() {
        return Err(PolicyError::Invalid("the subject of a violation is required".into()));
    }
    BanSubject::from_parts(kind, id)
}

/// The stable name of an authentication method.
pub fn auth_method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::PasswordTotp => "password_totp",
        AuthMethod::PasswordRecoveryCode => "password_recovery_code",
        AuthMethod::Certificate => "certificate",
    }
}

/// The stable name of a fee mode.
pub fn fee_mode_name(mode: FeeMode) -> &'static str {
    match mode {
        FeeMode::Flat => "flat",
        FeeMode::ActualCost => "actual_cost",
    }
}

/// The start of refused input, for an error message (input can be arbitrarily long).
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

// ------------------------------------------------------------------------------------------------ proto → domain

/// Tables and their columns.
pub fn tables_from_proto(tables: &[pb::TableColumns]) -> Vec<TableRequest> {
    tables
        .iter()
        .map(|t| TableRequest {
            table: t.table.clone(),
            columns: t.columns.clone(),
        })
        .collect()
}

/// The application form; `None` (the field was not sent) is refused.
pub fn form_from_proto(form: Option<pb::ApplicationForm>) -> Result<ApplicationForm> {
    let f = form.ok_or_else(|| PolicyError::Invalid("the application form is required".into()))?;
    Ok(ApplicationForm {
        period_from: date("period_from", &f.period_from)?,
        period_to: date("period_to", &f.period_to)?,
        channel: channel(&f.channel)?,
        tables: tables_from_proto(&f.tables),
        title: f.title,
        purpose: f.purpose,
        public_interest: f.public_interest,
        methods: f.methods,
        cohort_filter: f.cohort_filter,
        security_measures: f.security_measures,
        funding: f.funding,
        recipients: f.recipients,
        requested_epsilon: f.requested_epsilon,
        studies: f
            .studies
            .into_iter()
            .map(|s| Study {
                title: s.title,
                methods: s.methods,
            })
            .collect(),
        not_for_advertising: f.not_for_advertising,
    })
}

/// Approval conditions (their consistency with the application is checked by the committee store).
pub fn conditions_from_proto(c: pb::ApprovalConditions) -> Result<ApprovalConditions> {
    Ok(ApprovalConditions {
        tables: tables_from_proto(&c.tables),
        cohort_filter: c.cohort_filter,
        privacy: c.privacy.map(|p| PrivacyModel {
            k: p.k,
            l: p.l,
            t: p.t,
            max_suppression: p.max_suppression,
            m: p.m.unwrap_or(crate::committee::conditions::DEFAULT_M),
            demographic_weight: p.demographic_weight,
        }),
        dp_budget: c.dp_budget.map(|b| DpBudget {
            epsilon: b.epsilon,
            delta: b.delta,
        }),
        channel: channel(&c.channel)?,
        expires_on: date("expires_on", &c.expires_on)?,
        max_downloads: c.max_downloads,
        recipients: c.recipients.into_iter().collect::<BTreeSet<_>>(),
        link_releases: c.link_releases,
        pseudonymised: c.pseudonymised,
        statistics: c
            .statistics
            .map(|s| crate::committee::conditions::StatisticsRules {
                small_cell_min: s.small_cell_min,
                groupable: tables_from_proto(&s.groupable),
            })
            .unwrap_or_default(),
    })
}

// ------------------------------------------------------------------------------------------------ domain → proto

/// The authenticated party.
pub fn actor_to_proto(a: &Actor) -> pb::Actor {
    pb::Actor {
        username: a.username.clone(),
        organisation: a.organisation.clone(),
        roles: a.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        auth_method: auth_method_name(a.auth).to_owned(),
    }
}

/// An account (never a secret: [`UserRecord`] holds none).
pub fn user_to_proto(u: &UserRecord) -> pb::User {
    pb::User {
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        organisation: u.organisation.clone(),
        roles: u.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        status: u.status.as_str().to_owned(),
        kind: u.kind.as_str().to_owned(),
        certificate_sha256: u.certificate_sha256.clone().unwrap_or_default(),
    }
}

/// Tables and columns as the contract carries them (the policy service's messages and its clients').
pub fn tables_to_proto(tables: &[TableRequest]) -> Vec<pb::TableColumns> {
    tables
        .iter()
        .map(|t| pb::TableColumns {
            table: t.table.clone(),
            columns: t.columns.clone(),
        })
        .collect()
}

/// The application form as filed.
pub fn form_to_proto(f: &ApplicationForm) -> pb::ApplicationForm {
    pb::ApplicationForm {
        title: f.title.clone(),
        purpose: f.purpose.clone(),
        public_interest: f.public_interest.clone(),
        methods: f.methods.clone(),
        tables: tables_to_proto(&f.tables),
        cohort_filter: f.cohort_filter.clone(),
        period_from: f.period_from.to_string(),
        period_to: f.period_to.to_string(),
        channel: f.channel.as_str().to_owned(),
        security_measures: f.security_measures.clone(),
        funding: f.funding.clone(),
        recipients: f.recipients.clone(),
        requested_epsilon: f.requested_epsilon,
        studies: f
            .studies
            .iter()
            .map(|s| pb::Study {
                title: s.title.clone(),
                methods: s.methods.clone(),
            })
            .collect(),
        not_for_advertising: f.not_for_advertising,
    }
}

/// Approval conditions.
pub fn conditions_to_proto(c: &ApprovalConditions) -> pb::ApprovalConditions {
    pb::ApprovalConditions {
        tables: tables_to_proto(&c.tables),
        cohort_filter: c.cohort_filter.clone(),
        privacy: c.privacy.map(|p| pb::PrivacyModel {
            k: p.k,
            l: p.l,
            t: p.t,
            max_suppression: p.max_suppression,
            m: Some(p.m),
            demographic_weight: p.demographic_weight,
        }),
        dp_budget: c.dp_budget.map(|b| pb::DpBudget {
            epsilon: b.epsilon,
            delta: b.delta,
        }),
        channel: c.channel.as_str().to_owned(),
        expires_on: c.expires_on.to_string(),
        max_downloads: c.max_downloads,
        recipients: c.recipients.iter().cloned().collect(),
        link_releases: c.link_releases,
        pseudonymised: c.pseudonymised,
        // Absent when the committee set nothing (DP only, any approved column): what was sent comes back.
        statistics: (c.statistics != Default::default()).then(|| pb::StatisticsRules {
            small_cell_min: c.statistics.small_cell_min,
            groupable: tables_to_proto(&c.statistics.groupable),
        }),
    }
}

fn fee_part(p: &FeePart) -> pb::FeePart {
    pb::FeePart {
        yen: p.yen,
        basis: p.basis.clone(),
    }
}

/// A fee estimate.
pub fn fee_to_proto(e: &FeeEstimate) -> pb::FeeEstimate {
    pb::FeeEstimate {
        mode: fee_mode_name(e.mode).to_owned(),
        basic: Some(fee_part(&e.basic)),
        coordination: Some(fee_part(&e.coordination)),
        data: Some(fee_part(&e.data)),
        cloud: Some(fee_part(&e.cloud)),
        total_yen: e.total_yen,
    }
}

/// An application with its review and decision.
/// Without the quorum rule, which only the service holds: callers go through `PolicyGrpc::application`.
pub(crate) fn application_to_proto(a: &ApplicationRecord) -> pb::Application {
    pb::Application {
        id: a.id.clone(),
        kind: a.kind.as_str().to_owned(),
        amends: a.amends.clone().unwrap_or_default(),
        applicant: a.applicant.clone(),
        organisation: a.organisation.clone(),
        form: Some(form_to_proto(&a.form)),
        status: a.status.as_str().to_owned(),
        filed_at: a.filed_at.clone(),
        decided_at: a.decided_at.clone().unwrap_or_default(),
        conditions: a.conditions.as_ref().map(conditions_to_proto),
        reviewers: a
            .reviewers
            .iter()
            .map(|r| pb::Reviewer {
                member: r.member.clone(),
                recused: r.recused,
                recusal_reason: r.recusal_reason.clone().unwrap_or_default(),
            })
            .collect(),
        votes: a
            .votes
            .iter()
            .map(|v| pb::VoteRecord {
                member: v.member.clone(),
                in_favour: v.in_favour,
                comment: v.comment.clone(),
            })
            .collect(),
        fee: Some(fee_to_proto(&a.fee)),
        downloads_used: a.downloads_used,
        // Filled by the service, which holds the rule.
        quorum: None,
    }
}

/// What an account change did: `invited`, `pending` (with the grant a second administrator must approve),
/// `roles_set` or `disabled`. Never an invitation code.
pub fn change_to_proto(change: crate::service::UserChange) -> pb::AddUserResponse {
    match change {
        crate::service::UserChange::Invited(i) => pb::AddUserResponse {
            username: i.username,
            invitation_expires_at: i.expires_at.to_rfc3339(),
            state: "invited".into(),
            ..Default::default()
        },
        crate::service::UserChange::Pending(g) => pb::AddUserResponse {
            username: g.username,
            state: "pending".into(),
            grant_id: g.id,
            ..Default::default()
        },
        crate::service::UserChange::RolesSet(u) => pb::AddUserResponse {
            username: u.username,
            state: "roles_set".into(),
            ..Default::default()
        },
        crate::service::UserChange::Disabled(username) => pb::AddUserResponse {
            username,
            state: "disabled".into(),
            ..Default::default()
        },
    }
}

/// A grant waiting for a second administrator.
pub fn grant_to_proto(g: &crate::identity::grants::RoleGrant) -> pb::Grant {
    use crate::identity::grants::GrantKind;
    pb::Grant {
        id: g.id.clone(),
        kind: match g.kind {
            GrantKind::Invite => "invite",
            GrantKind::Roles => "roles",
            GrantKind::Disable => "disable",
        }
        .to_owned(),
        username: g.username.clone(),
        roles: g.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        requested_by: g.requested_by.clone(),
        requested_at: g.requested_at.to_rfc3339(),
    }
}

/// A recorded violation.
pub fn violation_to_proto(v: &Violation) -> pb::Violation {
    pb::Violation {
        id: v.id.clone(),
        subject_kind: v.subject.kind().to_owned(),
        subject: v.subject.id().to_owned(),
        kind: v.kind.clone(),
        description: v.description.clone(),
        banned_until: v.banned_until.map(|d| d.to_string()).unwrap_or_default(),
        recorded_at: v.recorded_at.clone(),
        source: v.source.clone(),
    }
}

/// The outcome of an audit-ledger verification.
pub fn verification_to_proto(r: &VerifyReport) -> pb::AuditVerification {
    let to_u64 = |n: i64| u64::try_from(n).unwrap_or(0);
    pb::AuditVerification {
        ok: r.is_ok(),
        entries_checked: r.entries_checked,
        first_bad_seq: r.first_bad.as_ref().and_then(|b| b.seq).map(to_u64).unwrap_or(0),
        problem: r.first_bad.as_ref().map(|b| b.to_string()).unwrap_or_default(),
        head_seq: to_u64(r.head.seq),
        head_hash: r.head.hash.clone(),
    }
}

/// A core operation from its request (`INVALID_ARGUMENT` without one).
pub fn core_operation_from_proto(r: pb::CoreOperationRequest) -> Result<CoreOperation> {
    use pb::core_operation_request::Operation;
    Ok(match r.operation {
        Some(Operation::Status(_)) => CoreOperation::Status,
        Some(Operation::Compact(_)) => CoreOperation::Compact,
        Some(Operation::Erase(e)) => CoreOperation::Erase {
            linkage_keys: e.linkage_keys,
            hospital_pseudonym: Some(e.hospital_pseudonym).filter(|p| !p.is_empty()),
            request_id: e.request_id,
        },
        Some(Operation::RotateKeys(r)) => CoreOperation::RotateKeys {
            new_data_key: r.new_data_key,
        },
        Some(Operation::RegulatorFigures(r)) => CoreOperation::regulator_figures(&r.period)?,
        Some(Operation::PlanRelease(_)) => {
            return Err(PolicyError::Invalid(
                "a release plan is asked with request_release_plan".into(),
            ));
        }
        Some(Operation::BuildRelease(_)) => {
            return Err(PolicyError::Invalid(
                "a release build is asked with request_release_build".into(),
            ));
        }
        Some(Operation::Sql(q)) => CoreOperation::Sql {
            query: q.query,
            all_rows: q.all_rows,
            recipient_key: q.recipient_key,
        },
        Some(Operation::Statistics(_)) => {
            return Err(PolicyError::Invalid(
                "statistics are asked with request_statistics".into(),
            ));
        }
        None => return Err(PolicyError::Invalid("name the core operation".into())),
    })
}

/// A statistics request in the researcher's words, from its request.
pub fn statistics_from_proto(p: pb::StatisticsOperation) -> tokumei_catalogue::statistics::StatisticsSpec {
    tokumei_catalogue::statistics::StatisticsSpec {
        application: p.application_id,
        table: p.table,
        group_by: p.group_by,
        hierarchy: p.hierarchy,
        measure: p.measure,
        max_contrib: p.max_contrib,
        epsilon: p.epsilon,
        rho: p.rho,
        delta: p.delta,
        public_keys: p
            .keys_declared
            .then(|| p.public_keys.into_iter().map(|k| k.values).collect()),
        min_cell: p.min_cell,
        suppress_zeros: p.suppress_zeros,
        subject: p.subject,
    }
}

/// The model a plan tries, from its request.
pub fn plan_params_from_proto(p: &pb::PlanReleaseOperation) -> crate::core_orders::PlanParams {
    crate::core_orders::PlanParams {
        k: p.k,
        m: p.m,
        max_suppression: p.max_suppression,
        demographic_weight: p.demographic_weight,
    }
}

/// An order's status for its requester (the core's report as JSON text).
pub fn order_status_to_proto(s: &OrderStatus) -> pb::CoreOrderStatus {
    pb::CoreOrderStatus {
        id: s.id,
        operation: s.operation.clone(),
        state: serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        requested_by: s.requested_by.clone(),
        result_json: s.result.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        reason: s.reason.clone().unwrap_or_default(),
        requested_at: s.requested_at.timestamp(),
        finished_at: s.finished_at.map(|t| t.timestamp()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_form() -> pb::ApplicationForm {
        pb::ApplicationForm {
            title: "Diabetes care".into(),
            purpose: "Compare HbA1c control".into(),
            public_interest: "National strategy".into(),
            methods: "Regression".into(),
            tables: vec![pb::TableColumns {
                table: "lab_results".into(),
                columns: vec!["jlac10".into()],
            }],
            cohort_filter: String::new(),
            period_from: "2026-12-01".into(),
            period_to: "2027-11-30".into(),
            channel: "file".into(),
            security_measures: "Locked room".into(),
            funding: "JSPS".into(),
            recipients: vec!["alice".into()],
            requested_epsilon: None,
            studies: vec![],
            not_for_advertising: true,
        }
    }

    #[test]
    fn forms_round_trip() {
        let form = form_from_proto(Some(proto_form())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(form.channel, Channel::File);
        assert_eq!(
            form.period_to,
            NaiveDate::from_ymd_opt(2027, 11, 30).unwrap_or_default()
        );
        assert_eq!(form_to_proto(&form), proto_form());
    }

    #[test]
    fn bad_input_is_invalid_argument() {
        let code = |r: Result<ApplicationForm>| r.err().map(|e| e.reason());
        assert_eq!(code(form_from_proto(None)), Some("INVALID_ARGUMENT"));
        for (field, value) in [("period_from", "2026-13-01"), ("period_to", ""), ("channel", "fax")] {
            let mut f = proto_form();
            match field {
                "period_from" => f.period_from = value.into(),
                "period_to" => f.period_to = value.into(),
                _ => f.channel = value.into(),
            }
            assert_eq!(
                code(form_from_proto(Some(f))),
                Some("INVALID_ARGUMENT"),
                "{field}={value:?}"
            );
        }
        assert!(roles(&["researcher".into(), "committee_chair".into()]).is_ok());
        assert_eq!(
            roles(&["root".into()]).err().map(|e| e.reason()),
            Some("INVALID_ARGUMENT")
        );
        assert_eq!(use_kind("upload").err().map(|e| e.reason()), Some("INVALID_ARGUMENT"));
        assert_eq!(
            ban_subject("company", "x").err().map(|e| e.reason()),
            Some("INVALID_ARGUMENT")
        );
        assert_eq!(optional_date("banned_until", "").ok(), Some(None));
        assert!(optional_date("banned_until", "tomorrow").is_err());
    }

    #[test]
    fn conditions_round_trip() {
        let c = pb::ApprovalConditions {
            tables: vec![pb::TableColumns {
                table: "lab_results".into(),
                columns: vec!["jlac10".into()],
            }],
            cohort_filter: String::new(),
            privacy: Some(pb::PrivacyModel {
                k: 5,
                l: Some(2),
                t: None,
                max_suppression: 0.05,
                m: Some(2),
                demographic_weight: Some(0.7),
            }),
            dp_budget: None,
            channel: "file".into(),
            expires_on: "2027-06-30".into(),
            max_downloads: 2,
            recipients: vec!["alice".into(), "bob".into()],
            link_releases: false,
            pseudonymised: false,
            statistics: Some(pb::StatisticsRules {
                small_cell_min: Some(12),
                groupable: vec![],
            }),
        };
        let domain = conditions_from_proto(c.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conditions_to_proto(&domain), c);
    }
}
