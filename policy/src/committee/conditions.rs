//! The conditions an approval carries, and the one check the release service and the statistics
//! command apply before anything leaves the platform.
//!
//! The committee approves a purpose, but what is enforced is the scope: which tables and columns, under
//! which privacy model or differential-privacy budget, by which channel, until when, how many downloads,
//! and to whom. [`check_use`] decides a concrete request against the approval's state; every refusal has
//! its own code (`APPROVAL_EXPIRED`, `COLUMN_NOT_APPROVED`, ...) so that a refused build or download is
//! audited with the exact condition it broke.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::application::{ApplicationForm, ApplicationStatus, Channel, TableRequest, is_identifier};
use crate::error::{PolicyError, Result};

/// The privacy model files must satisfy (the `deid` engine's parameters).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyModel {
    /// k of k-anonymity (≥ 2).
    pub k: u32,
    /// Distinct l of l-diversity on the sensitive attribute, if required.
    #[serde(default)]
    pub l: Option<u32>,
    /// t of t-closeness, if required.
    #[serde(default)]
    pub t: Option<f64>,
    /// Largest share of records that may be suppressed (0..1): patients by the demographic search, and
    /// event rows (rare items) by the item search.
    pub max_suppression: f64,
    /// Event items an adversary is assumed to know besides the demographics: a file release is
    /// (k, k^m)-anonymous over the whole patient record (1 ..= 4; 2 unless the committee sets it).
    #[serde(default = "default_m")]
    pub m: u32,
    /// Weight of the patient file's generalisation in the release loss the whole-record search minimises,
    /// against the event tables' item loss together (0 ..= 1; [`DEFAULT_DEMOGRAPHIC_WEIGHT`] unless set): a
    /// committee whose researchers need age bands raises it, one that needs exact codes lowers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demographic_weight: Option<f64>,
}

/// The weight of the demographics in the release loss when the committee sets none: as much as all event
/// tables together (age and sex are the first covariates of nearly every analysis).
pub const DEFAULT_DEMOGRAPHIC_WEIGHT: f64 = 0.5;

impl PrivacyModel {
    /// The weight of the demographics in the release loss.
    pub fn demographic_weight(&self) -> f64 {
        self.demographic_weight.unwrap_or(DEFAULT_DEMOGRAPHIC_WEIGHT)
    }

    /// Whether k, m and the suppression share are usable (k ≥ 2, 1 ≤ m ≤ 4, share in [0, 1)); the message
    /// says which values were given.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.k < 2 || !(0.0..1.0).contains(&self.max_suppression) || !(1..=4).contains(&self.m) {
            return Err(format!(
                "privacy model k={} m={} suppression={} is not valid (k ≥ 2, m in 1..=4, suppression in [0, 1))",
                self.k, self.m, self.max_suppression
            ));
        }
        if let Some(w) = self.demographic_weight
            && !(0.0..=1.0).contains(&w)
        {
            return Err(format!("demographic weight {w} is not in [0, 1]"));
        }
        Ok(())
    }
}

/// The m of (k, k^m) when the committee does not set one: two facts (a diagnosis and a visit month, say) are
/// what an acquaintance or a news report typically adds to someone's age and sex.
pub const DEFAULT_M: u32 = 2;

fn default_m() -> u32 {
    DEFAULT_M
}

/// A differential-privacy budget for the statistics channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpBudget {
    /// Total ε.
    pub epsilon: f64,
    /// Total δ.
    pub delta: f64,
}

/// The smallest minimum cell of a small-cell table anywhere on the platform (the national databases' rule
/// of 10): a committee may raise it for its approval, nobody may lower it. The catalogue's, which the core checks
/// too.
pub use tokumei_catalogue::statistics::SMALL_CELL_FLOOR;

/// How statistics under a statistics approval may be protected: the committee's decision, which no request
/// can widen. Differential privacy (under the approval's budget) is the default; the small-cell rule — a
/// convention, not a guarantee — only where the committee allows it, at its threshold or above.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatisticsRules {
    /// Minimum cell of small-cell tables, when the committee allows them at all (at least
    /// [`SMALL_CELL_FLOOR`]); `None`: differentially private tables only.
    #[serde(default)]
    pub small_cell_min: Option<u64>,
    /// Columns requests may group by, per table; empty: every approved column the platform allows.
    #[serde(default)]
    pub groupable: Vec<TableRequest>,
}

/// One statistics request as the approval sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticsUse<'a> {
    /// The table read.
    pub table: &'a str,
    /// Its group-by columns.
    pub group_by: &'a [String],
    /// The small-cell threshold, when the table is published under the small-cell rule (no DP).
    pub small_cell: Option<u64>,
}

impl StatisticsRules {
    /// Whether the committee's rules allow `request`; the first broken rule is reported with its code.
    pub fn check(&self, application: &str, request: &StatisticsUse<'_>) -> Result<()> {
        if let Some(threshold) = request.small_cell {
            let Some(min) = self.small_cell_min else {
                return Err(violated(
                    "SMALL_CELL_NOT_APPROVED",
                    format!(
                        "the approval of {application} allows differentially private tables only (the committee did \
                         not allow the small-cell rule)"
                    ),
                ));
            };
            if threshold < min {
                return Err(violated(
                    "SMALL_CELL_BELOW_APPROVAL",
                    format!("minimum cell {threshold} is below the {min} the approval of {application} sets"),
                ));
            }
        }
        if !self.groupable.is_empty() {
            let allowed = self.groupable.iter().find(|g| g.table == request.table);
            if let Some(c) = request
                .group_by
                .iter()
                .find(|c| allowed.is_none_or(|g| !g.columns.contains(c)))
            {
                return Err(violated(
                    "GROUPING_NOT_APPROVED",
                    format!(
                        "the approval of {application} does not allow grouping by {}.{c}",
                        request.table
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What an approval allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalConditions {
    /// Tables and the columns allowed of each.
    pub tables: Vec<TableRequest>,
    /// Cohort filter the release must apply (empty: everyone).
    #[serde(default)]
    pub cohort_filter: String,
    /// The privacy model for files (required for the file and on-platform channels).
    #[serde(default)]
    pub privacy: Option<PrivacyModel>,
    /// The differential-privacy budget (required for the statistics channel).
    #[serde(default)]
    pub dp_budget: Option<DpBudget>,
    /// The channel.
    pub channel: Channel,
    /// Last day the data may be used; nothing is released or downloaded after it.
    pub expires_on: NaiveDate,
    /// Downloads allowed in total under this approval.
    pub max_downloads: u32,
    /// Persons who may receive the data (usernames).
    pub recipients: BTreeSet<String>,
    /// Whether the project's releases may share one pseudonym key (linkable across releases).
    #[serde(default)]
    pub link_releases: bool,
    /// How statistics may be protected and grouped (statistics channel).
    #[serde(default)]
    pub statistics: StatisticsRules,
    /// On-platform channel: the workspace shows pseudonymised data (仮名加工医療情報: linkage keys replaced by
    /// workspace pseudonyms, no k) rather than data anonymised under `privacy`; only recipients the committee
    /// registered as certified users (認定利活用者) may open it.
    #[serde(default)]
    pub pseudonymised: bool,
}

impl ApprovalConditions {
    /// Checks the conditions make sense and stay within what was asked: the committee may narrow an
    /// application's scope, never widen it.
    pub fn validate_against(&self, form: &ApplicationForm) -> Result<()> {
        if self.recipients.is_empty() {
            return Err(PolicyError::Invalid(
                "an approval must name at least one recipient".into(),
            ));
        }
        if self.channel != form.channel {
            return Err(PolicyError::Invalid(format!(
                "the approval's channel {} differs from the channel applied for ({})",
                self.channel, form.channel
            )));
        }
        for t in &self.tables {
            let Some(asked) = form.tables.iter().find(|r| r.table == t.table) else {
                return Err(PolicyError::Invalid(format!("table {} was not applied for", t.table)));
            };
            if let Some(c) = t.columns.iter().find(|c| !asked.columns.contains(c)) {
                return Err(PolicyError::Invalid(format!(
                    "column {}.{c} was not applied for",
                    t.table
                )));
            }
            if t.columns.iter().any(|c| !is_identifier(c)) {
                return Err(PolicyError::Invalid(format!("table {}: bad column name", t.table)));
            }
        }
        if self.expires_on > form.period_to {
            return Err(PolicyError::Invalid(format!(
                "expiry {} is after the period of use applied for (ends {})",
                self.expires_on, form.period_to
            )));
        }
        match self.channel {
            Channel::Statistics => {
                let Some(b) = self.dp_budget else {
                    return Err(PolicyError::Invalid(
                        "the statistics channel needs a DP budget (ε, δ)".into(),
                    ));
                };
                if !(b.epsilon.is_finite() && b.epsilon > 0.0 && (0.0..1.0).contains(&b.delta)) {
                    return Err(PolicyError::Invalid(format!(
                        "DP budget ε={} δ={} is not valid",
                        b.epsilon, b.delta
                    )));
                }
                if let Some(min) = self.statistics.small_cell_min
                    && min < SMALL_CELL_FLOOR
                {
                    return Err(PolicyError::Invalid(format!(
                        "small-cell minimum {min} is below the platform floor of {SMALL_CELL_FLOOR}"
                    )));
                }
                for g in &self.statistics.groupable {
                    let granted = self.tables.iter().find(|t| t.table == g.table);
                    if let Some(c) = g
                        .columns
                        .iter()
                        .find(|c| granted.is_none_or(|t| !t.columns.contains(c)))
                    {
                        return Err(PolicyError::Invalid(format!(
                            "groupable column {}.{c} is not among the approved columns",
                            g.table
                        )));
                    }
                }
            }
            Channel::File | Channel::OnPlatform => {
                if self.tables.is_empty() {
                    return Err(PolicyError::Invalid(
                        "a file approval must allow at least one table".into(),
                    ));
                }
                let Some(p) = self.privacy else {
                    return Err(PolicyError::Invalid(
                        "file and on-platform approvals need a privacy model (k, l, t)".into(),
                    ));
                };
                p.validate().map_err(PolicyError::Invalid)?;
                if p.t.is_some_and(|t| !(t > 0.0 && t <= 1.0)) || p.l.is_some_and(|l| l < 2) {
                    return Err(PolicyError::Invalid("l must be ≥ 2 and t in (0, 1]".into()));
                }
            }
        }
        if self.pseudonymised && self.channel != Channel::OnPlatform {
            return Err(PolicyError::Invalid(
                "only an on-platform approval may grant pseudonymised data".into(),
            ));
        }
        if self.max_downloads == 0 && self.channel == Channel::File {
            return Err(PolicyError::Invalid(
                "a file approval must allow at least one download".into(),
            ));
        }
        Ok(())
    }
}

/// What is being asked under an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    /// Building a release (file channel).
    Build,
    /// Downloading a built release.
    Download,
    /// Running statistics against the approval's budget.
    Statistics,
    /// Working in the analysis workspace of an on-platform approval (queries, analyses, uploads, output requests).
    Analysis,
    /// Continuing a download already admitted (each HTTPS request of it): re-checked, never counted, so a
    /// revocation, ban or expiry stops a token that was issued before it.
    Transfer,
}

/// A concrete use to check.
#[derive(Debug, Clone, PartialEq)]
pub struct UseRequest<'a> {
    /// Build, download or statistics.
    pub kind: UseKind,
    /// The person receiving the result.
    pub recipient: &'a str,
    /// Tables and columns the use touches.
    pub tables: &'a [TableRequest],
    /// Today's date (in Japan: expiry dates are local dates).
    pub today: NaiveDate,
}

/// The approval's current state, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalState<'a> {
    /// The application's identifier.
    pub id: &'a str,
    /// Its status.
    pub status: ApplicationStatus,
    /// Its conditions (None unless approved).
    pub conditions: Option<&'a ApprovalConditions>,
    /// Downloads already made.
    pub downloads_used: u32,
}

fn violated(code: &'static str, message: String) -> PolicyError {
    PolicyError::ConditionViolated { code, message }
}

/// Decides whether `request` is allowed under `approval`. The first broken condition is reported.
pub fn check_use(approval: &ApprovalState<'_>, request: &UseRequest<'_>) -> Result<()> {
    let id = approval.id;
    match approval.status {
        ApplicationStatus::Approved => {}
        ApplicationStatus::Revoked => {
            return Err(violated(
                "APPROVAL_REVOKED",
                format!("the approval of {id} was revoked"),
            ));
        }
        other => {
            return Err(violated(
                "NOT_APPROVED",
                format!("application {id} is {other}, not approved"),
            ));
        }
    }
    let Some(c) = approval.conditions else {
        return Err(violated(
            "NOT_APPROVED",
            format!("application {id} has no approval conditions"),
        ));
    };
    if request.today > c.expires_on {
        return Err(violated(
            "APPROVAL_EXPIRED",
            format!("the approval of {id} expired on {}", c.expires_on),
        ));
    }
    if !c.recipients.contains(request.recipient) {
        return Err(violated(
            "RECIPIENT_NOT_APPROVED",
            format!("{} is not a recipient named by the approval of {id}", request.recipient),
        ));
    }
    let channel_ok = match request.kind {
        UseKind::Build | UseKind::Download | UseKind::Transfer => c.channel == Channel::File,
        UseKind::Statistics => c.channel == Channel::Statistics,
        UseKind::Analysis => c.channel == Channel::OnPlatform,
    };
    if !channel_ok {
        return Err(violated(
            "CHANNEL_NOT_APPROVED",
            format!("the approval of {id} is for the {} channel", c.channel),
        ));
    }
    for t in request.tables {
        let Some(grant) = c.tables.iter().find(|g| g.table == t.table) else {
            return Err(violated(
                "TABLE_NOT_APPROVED",
                format!("table {} is not approved for {id}", t.table),
            ));
        };
        if let Some(col) = t.columns.iter().find(|col| !grant.columns.contains(col)) {
            return Err(violated(
                "COLUMN_NOT_APPROVED",
                format!("column {}.{col} is not approved for {id}", t.table),
            ));
        }
    }
    if request.kind == UseKind::Download && approval.downloads_used >= c.max_downloads {
        return Err(violated(
            "DOWNLOAD_LIMIT_REACHED",
            format!("all {} downloads allowed under {id} were used", c.max_downloads),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::application::tests::form;

    fn conditions() -> ApprovalConditions {
        ApprovalConditions {
            tables: vec![TableRequest {
                table: "lab_results".into(),
                columns: vec!["jlac10".into()],
            }],
            cohort_filter: String::new(),
            privacy: Some(PrivacyModel {
                k: 5,
                l: None,
                t: None,
                max_suppression: 0.05,
                m: DEFAULT_M,
                demographic_weight: None,
            }),
            dp_budget: None,
            channel: Channel::File,
            expires_on: NaiveDate::from_ymd_opt(2027, 6, 30).unwrap_or_default(),
            max_downloads: 2,
            recipients: BTreeSet::from(["alice".to_owned()]),
            link_releases: false,
            pseudonymised: false,
            statistics: Default::default(),
        }
    }

    fn table(t: &str, cols: &[&str]) -> TableRequest {
        TableRequest {
            table: t.into(),
            columns: cols.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn the_committee_decides_mechanism_and_groupings() {
        fn dp(g: &[String]) -> StatisticsUse<'_> {
            StatisticsUse {
                table: "patients",
                group_by: g,
                small_cell: None,
            }
        }
        let by_sex = &["sex".to_owned()][..];
        let by_pref_sex = &["prefecture".to_owned(), "sex".to_owned()][..];
        let code = |r: Result<()>| r.err().map(|e| e.reason());
        // The default: DP only, any grouping.
        let dp_only = StatisticsRules::default();
        assert!(dp_only.check("A", &dp(by_pref_sex)).is_ok());
        let small = |t| StatisticsUse {
            small_cell: Some(t),
            ..dp(by_sex)
        };
        assert_eq!(code(dp_only.check("A", &small(10))), Some("SMALL_CELL_NOT_APPROVED"));
        assert_eq!(code(dp_only.check("A", &small(1000))), Some("SMALL_CELL_NOT_APPROVED"));
        // The committee allows small cells at 20: 19 is refused, 20 and more pass.
        let at_20 = StatisticsRules {
            small_cell_min: Some(20),
            groupable: vec![],
        };
        assert_eq!(code(at_20.check("A", &small(19))), Some("SMALL_CELL_BELOW_APPROVAL"));
        assert!(at_20.check("A", &small(20)).is_ok() && at_20.check("A", &small(50)).is_ok());
        // Groupings: only the listed columns of the listed tables.
        let sex_only = StatisticsRules {
            small_cell_min: None,
            groupable: vec![table("patients", &["sex"])],
        };
        assert!(sex_only.check("A", &dp(by_sex)).is_ok());
        assert_eq!(
            code(sex_only.check("A", &dp(by_pref_sex))),
            Some("GROUPING_NOT_APPROVED")
        );
        let other_table = StatisticsUse {
            table: "observations",
            ..dp(by_sex)
        };
        assert_eq!(code(sex_only.check("A", &other_table)), Some("GROUPING_NOT_APPROVED"));
        // No grouping at all (a total) is always within the list.
        assert!(sex_only.check("A", &dp(&[])).is_ok());
    }

    #[test]
    fn statistics_rules_cannot_go_below_the_floor_or_outside_the_approved_columns() {
        let mut c = conditions();
        c.channel = Channel::Statistics;
        c.privacy = None;
        c.dp_budget = Some(DpBudget {
            epsilon: 1.0,
            delta: 1e-6,
        });
        let mut f = form();
        f.channel = Channel::Statistics;
        f.tables = c.tables.clone();
        assert!(c.validate_against(&f).is_ok(), "{:?}", c.validate_against(&f));
        c.statistics.small_cell_min = Some(SMALL_CELL_FLOOR - 1);
        assert!(c.validate_against(&f).is_err());
        c.statistics.small_cell_min = Some(SMALL_CELL_FLOOR);
        assert!(c.validate_against(&f).is_ok());
        c.statistics.groupable = vec![table("lab_results", &["value"])];
        assert!(c.validate_against(&f).is_err(), "value is not an approved column");
        c.statistics.groupable = vec![table("lab_results", &["jlac10"])];
        assert!(c.validate_against(&f).is_ok());
    }

    #[test]
    fn conditions_narrow_never_widen() {
        let f = form();
        assert!(conditions().validate_against(&f).is_ok());
        let mut c = conditions();
        c.tables[0].columns.push("patient_name".into());
        assert!(c.validate_against(&f).is_err());
        let mut c = conditions();
        c.expires_on = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap_or_default();
        assert!(c.validate_against(&f).is_err());
        let mut c = conditions();
        c.privacy = None;
        assert!(c.validate_against(&f).is_err());
        let mut c = conditions();
        c.recipients.clear();
        assert!(c.validate_against(&f).is_err());
    }

    #[test]
    fn every_condition_refuses_with_its_code() {
        let c = conditions();
        let cols = [TableRequest {
            table: "lab_results".into(),
            columns: vec!["jlac10".into()],
        }];
        let today = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
        let ok = UseRequest {
            kind: UseKind::Download,
            recipient: "alice",
            tables: &cols,
            today,
        };
        let state = ApprovalState {
            id: "A-1",
            status: ApplicationStatus::Approved,
            conditions: Some(&c),
            downloads_used: 1,
        };
        assert!(check_use(&state, &ok).is_ok());
        let code = |s: &ApprovalState<'_>, r: &UseRequest<'_>| check_use(s, r).err().map(|e| e.reason());
        assert_eq!(
            code(
                &ApprovalState {
                    downloads_used: 2,
                    ..state.clone()
                },
                &ok
            ),
            Some("DOWNLOAD_LIMIT_REACHED")
        );
        assert_eq!(
            code(
                &ApprovalState {
                    status: ApplicationStatus::Revoked,
                    ..state.clone()
                },
                &ok
            ),
            Some("APPROVAL_REVOKED")
        );
        assert_eq!(
            code(
                &ApprovalState {
                    status: ApplicationStatus::UnderReview,
                    ..state.clone()
                },
                &ok
            ),
            Some("NOT_APPROVED")
        );
        let late = NaiveDate::from_ymd_opt(2027, 7, 1).unwrap_or_default();
        assert_eq!(
            code(
                &state,
                &UseRequest {
                    today: late,
                    ..ok.clone()
                }
            ),
            Some("APPROVAL_EXPIRED")
        );
        let last_day = NaiveDate::from_ymd_opt(2027, 6, 30).unwrap_or_default();
        assert_eq!(
            code(
                &state,
                &UseRequest {
                    today: last_day,
                    ..ok.clone()
                }
            ),
            None,
            "valid through its last day"
        );
        assert_eq!(
            code(
                &state,
                &UseRequest {
                    recipient: "mallory",
                    ..ok.clone()
                }
            ),
            Some("RECIPIENT_NOT_APPROVED")
        );
        assert_eq!(
            code(
                &state,
                &UseRequest {
                    kind: UseKind::Statistics,
                    ..ok.clone()
                }
            ),
            Some("CHANNEL_NOT_APPROVED")
        );
        let other = [TableRequest {
            table: "patients".into(),
            columns: vec!["sex".into()],
        }];
        assert_eq!(
            code(
                &state,
                &UseRequest {
                    tables: &other,
                    ..ok.clone()
                }
            ),
            Some("TABLE_NOT_APPROVED")
        );
        let wider = [TableRequest {
            table: "lab_results".into(),
            columns: vec!["jlac10".into(), "value".into()],
        }];
        assert_eq!(
            code(
                &state,
                &UseRequest {
                    tables: &wider,
                    ..ok.clone()
                }
            ),
            Some("COLUMN_NOT_APPROVED")
        );
    }
}
