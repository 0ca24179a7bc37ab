//! What a researcher files (提供申出): the form, its kinds, and the checks every application passes before
//! it reaches the committee.
//!
//! The form states purpose, public interest, methods, the data asked for, the period and channel of use,
//! the receiving site's security measures and funding, and declares that the use is not advertising or
//! promotion — the law excludes those uses, so such applications are refused at filing rather than left
//! for the committee. A change request (変更申出) is the same form pointing at the approved application
//! it amends; an umbrella application (包括申出) lists several studies under one purpose.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};

/// How the approved data reach the researcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Anonymised files delivered to the researcher's site.
    File,
    /// Statistical tables only (differentially private or small-cell protected).
    Statistics,
    /// Analysis on the platform's own research environment; nothing leaves it.
    OnPlatform,
}

impl Channel {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::File => "file",
            Channel::Statistics => "statistics",
            Channel::OnPlatform => "on_platform",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Channel> {
        match s {
            "file" => Ok(Channel::File),
            "statistics" => Ok(Channel::Statistics),
            "on_platform" => Ok(Channel::OnPlatform),
            other => Err(PolicyError::Invalid(format!(
                "unknown channel {other:?}: expected file, statistics or on_platform"
            ))),
        }
    }
}

/// One table and the columns asked of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRequest {
    /// Core-store table name (e.g. `patients`, `lab_results`).
    pub table: String,
    /// Columns asked for; never empty (no "all columns" wildcard: data minimisation).
    pub columns: Vec<String>,
}

/// One study of an umbrella application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Study {
    /// Short title.
    pub title: String,
    /// Its analysis methods.
    pub methods: String,
}

/// The application form, as filed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationForm {
    /// Short title.
    pub title: String,
    /// Purpose of use.
    pub purpose: String,
    /// Why the use serves the public interest (公益性).
    pub public_interest: String,
    /// Analysis methods.
    pub methods: String,
    /// Tables and columns requested.
    pub tables: Vec<TableRequest>,
    /// Cohort filter in words or SQL (e.g. `diagnosis LIKE 'E11%'`); empty means everyone.
    #[serde(default)]
    pub cohort_filter: String,
    /// First day of the period of use.
    pub period_from: NaiveDate,
    /// Last day of the period of use.
    pub period_to: NaiveDate,
    /// Delivery channel.
    pub channel: Channel,
    /// Security measures of the receiving site (安全管理措置).
    pub security_measures: String,
    /// Funding source.
    pub funding: String,
    /// Persons who will handle the data (usernames); the applicant is added if missing.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Privacy budget asked for statistics (ε), if any.
    #[serde(default)]
    pub requested_epsilon: Option<f64>,
    /// Studies of an umbrella application (empty for an ordinary one).
    #[serde(default)]
    pub studies: Vec<Study>,
    /// The declaration that the data will not be used for advertising or promotion. Must be `true`.
    pub not_for_advertising: bool,
}

/// Words that show an advertising or promotional use. Kept short and specific: "health promotion"
/// (健康増進) is a legitimate public-health purpose and is deliberately not listed.
const ADVERTISING_TERMS: [&str; 8] = [
    "advertis",
    "marketing",
    "sales promotion",
    "product promotion",
    "広告",
    "宣伝",
    "販売促進",
    "販促",
];

/// Longest accepted free-text field (characters): a form, not an attachment store.
const MAX_TEXT_CHARS: usize = 20_000;

impl ApplicationForm {
    /// Checks the form before filing: every required statement present, a sensible period, named data,
    /// and no advertising or promotional use. Returns the first problem found.
    pub fn validate(&self) -> Result<()> {
        if !self.not_for_advertising {
            return Err(PolicyError::AdvertisingRefused(
                "the declaration that the data will not be used for advertising or promotion was not made".into(),
            ));
        }
        for (field, text) in [
            ("purpose", &self.purpose),
            ("title", &self.title),
            ("methods", &self.methods),
        ] {
            let lower = text.to_lowercase();
            if let Some(term) = ADVERTISING_TERMS.iter().find(|t| lower.contains(*t)) {
                return Err(PolicyError::AdvertisingRefused(format!(
                    "the {field} names an advertising use ({term:?})"
                )));
            }
        }
        for (field, text) in [
            ("title", &self.title),
            ("purpose", &self.purpose),
            ("public_interest", &self.public_interest),
            ("methods", &self.methods),
            ("security_measures", &self.security_measures),
            ("funding", &self.funding),
        ] {
            if text.trim().is_empty() {
                return Err(PolicyError::Invalid(format!("application field {field} is required")));
            }
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(PolicyError::Invalid(format!(
                    "application field {field} exceeds {MAX_TEXT_CHARS} characters"
                )));
            }
        }
        if self.period_to < self.period_from {
            return Err(PolicyError::Invalid(format!(
                "period of use ends ({}) before it starts ({})",
                self.period_to, self.period_from
            )));
        }
        if self.channel != Channel::Statistics && self.tables.is_empty() {
            return Err(PolicyError::Invalid("name at least one table and its columns".into()));
        }
        let mut seen = BTreeSet::new();
        for t in &self.tables {
            if !is_identifier(&t.table) {
                return Err(PolicyError::Invalid(format!(
                    "table name {:?} is not a plain identifier",
                    t.table
                )));
            }
            if !seen.insert(t.table.as_str()) {
                return Err(PolicyError::Invalid(format!("table {} is listed twice", t.table)));
            }
            if t.columns.is_empty() {
                return Err(PolicyError::Invalid(format!(
                    "table {}: list the columns needed",
                    t.table
                )));
            }
            if let Some(c) = t.columns.iter().find(|c| !is_identifier(c)) {
                return Err(PolicyError::Invalid(format!(
                    "table {}: column name {c:?} is not a plain identifier",
                    t.table
                )));
            }
        }
        if let Some(e) = self.requested_epsilon
            && !(e.is_finite() && e > 0.0)
        {
            return Err(PolicyError::Invalid(format!("requested ε must be positive, got {e}")));
        }
        for s in &self.studies {
            if s.title.trim().is_empty() || s.methods.trim().is_empty() {
                return Err(PolicyError::Invalid(
                    "every study of an umbrella application needs a title and methods".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether this is an umbrella application (several studies, one purpose).
    pub fn is_umbrella(&self) -> bool {
        !self.studies.is_empty()
    }

    /// Calendar months the period of use touches (fees for the research environment are monthly).
    pub fn months(&self) -> u32 {
        use chrono::Datelike;
        let (from, to) = (self.period_from, self.period_to);
        let months = (to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32 + 1;
        u32::try_from(months.max(0)).unwrap_or(0)
    }
}

/// Letters, digits, underscores and hyphens (`native-country`): names, never expressions, so a form cannot
/// smuggle SQL into a release query.
pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Kind of an application record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationKind {
    /// A new application.
    New,
    /// A change request (変更申出) amending an approved application.
    Change,
    /// An umbrella application (包括申出) covering several studies.
    Umbrella,
}

impl ApplicationKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationKind::New => "new",
            ApplicationKind::Change => "change",
            ApplicationKind::Umbrella => "umbrella",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Result<ApplicationKind> {
        match s {
            "new" => Ok(ApplicationKind::New),
            "change" => Ok(ApplicationKind::Change),
            "umbrella" => Ok(ApplicationKind::Umbrella),
            other => Err(PolicyError::Invalid(format!("unknown application kind {other:?}"))),
        }
    }
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationStatus {
    /// Filed, waiting for the chair to assign reviewers.
    Submitted,
    /// Reviewers assigned; votes being cast.
    UnderReview,
    /// Approved with conditions (and, for a change request, applied to the application it amends).
    Approved,
    /// Refused by the committee.
    Refused,
    /// Approval withdrawn; nothing more may be released under it.
    Revoked,
    /// Withdrawn by the applicant before a decision.
    Withdrawn,
}

impl ApplicationStatus {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationStatus::Submitted => "submitted",
            ApplicationStatus::UnderReview => "under_review",
            ApplicationStatus::Approved => "approved",
            ApplicationStatus::Refused => "refused",
            ApplicationStatus::Revoked => "revoked",
            ApplicationStatus::Withdrawn => "withdrawn",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Result<ApplicationStatus> {
        [
            ApplicationStatus::Submitted,
            ApplicationStatus::UnderReview,
            ApplicationStatus::Approved,
            ApplicationStatus::Refused,
            ApplicationStatus::Revoked,
            ApplicationStatus::Withdrawn,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
        .ok_or_else(|| PolicyError::Invalid(format!("unknown application status {s:?}")))
    }
}

impl fmt::Display for ApplicationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete, valid form for tests.
    pub(crate) fn form() -> ApplicationForm {
        ApplicationForm {
            title: "Diabetes care across prefectures".into(),
            purpose: "Compare HbA1c control by prefecture to inform regional care plans".into(),
            public_interest: "Evidence for the national diabetes strategy".into(),
            methods: "Multilevel regression of HbA1c on region, age band and sex".into(),
            tables: vec![TableRequest {
                table: "lab_results".into(),
                columns: vec!["jlac10".into(), "value".into()],
            }],
            cohort_filter: String::new(),
            period_from: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default(),
            period_to: NaiveDate::from_ymd_opt(2027, 11, 30).unwrap_or_default(),
            channel: Channel::File,
            security_measures: "Locked room, no network, encrypted disk".into(),
            funding: "JSPS KAKENHI".into(),
            recipients: vec![],
            requested_epsilon: None,
            studies: vec![],
            not_for_advertising: true,
        }
    }

    #[test]
    fn advertising_is_refused() {
        let mut f = form();
        f.not_for_advertising = false;
        assert_eq!(f.validate().err().map(|e| e.reason()), Some("ADVERTISING_REFUSED"));
        let mut f = form();
        f.purpose = "Target advertising of a new drug to doctors".into();
        assert_eq!(f.validate().err().map(|e| e.reason()), Some("ADVERTISING_REFUSED"));
        let mut f = form();
        f.purpose = "販売促進のための処方分析".into();
        assert_eq!(f.validate().err().map(|e| e.reason()), Some("ADVERTISING_REFUSED"));
        let mut f = form();
        f.purpose = "Health promotion (健康増進) programmes for older adults".into();
        assert!(f.validate().is_ok());
    }

    #[test]
    fn incomplete_forms_are_refused_with_the_field() {
        let mut f = form();
        f.security_measures = " ".into();
        assert!(
            f.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("security_measures")
        );
        let mut f = form();
        f.period_to = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
        assert!(f.validate().is_err());
        let mut f = form();
        f.tables[0].columns.clear();
        assert!(f.validate().is_err());
        let mut f = form();
        f.tables[0].columns.push("value; DROP TABLE x".into());
        assert!(f.validate().is_err());
        assert_eq!(form().months(), 12);
    }
}
