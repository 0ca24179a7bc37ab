//! Core operations as orders: an operator asks the policy service, the core carries them out.
//!
//! The core zone listens on nothing and holds the store's keys; the people who operate it hold none. So an
//! operation on the store (status, compaction, an erasure, a key rotation) is asked of the policy service,
//! which authorises it (`operate_core`), writes it to the ledger and queues an **order** signed with its key for
//! the purpose `tokumei/core-order/v1`. The core pulls orders over mutual TLS, checks the signature, the
//! expiry and that it has not carried the order out before (`tokumei_store::orders`), acts, and reports counts;
//! the policy service records the outcome as `core.<operation>` under the operator who asked. A row written into
//! the database by hand is not an order: it carries no valid signature.
//!
//! An erasure's order names linkage keys; its payload is emptied once the core reports, so the committee zone
//! keeps no key after the fact (the ledger records the request's reference and counts only).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};

/// How long a queued order stays valid: the core refuses it afterwards, and so does the queue.
pub const ORDER_TTL: Duration = Duration::minutes(10);

/// How long after its expiry a taken order without a report is given up as `ORDER_LOST`.
pub const LOST_AFTER: Duration = Duration::minutes(10);

/// Most linkage keys one erasure order may name.
pub const MAX_ERASE_KEYS: usize = 1_000;

/// Longest query an operator may send.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Largest report the core may send (JSON bytes): a statistics table of up to 1 MiB with its attacker's view, under
/// the transport's 4 MiB.
pub const MAX_RESULT_BYTES: usize = 3 * 1024 * 1024;

/// What the core is asked to do. The serialised form is the contract with the core (`tokumei_store::orders`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum CoreOperation {
    /// Tables, rows, files and the last batch applied.
    Status,
    /// Compact small files now.
    Compact,
    /// Erase one patient from every table and from disk (a request that reached the operator directly).
    Erase {
        /// Linkage keys, 64 lowercase hex digits each.
        linkage_keys: Vec<String>,
        /// A hospital pseudonym, 64 lowercase hex digits.
        hospital_pseudonym: Option<String>,
        /// The request's reference, recorded in the erasure certificate.
        request_id: String,
    },
    /// Rotate the key-encryption key (and optionally start a new data key).
    RotateKeys {
        /// Start a new data key for objects written from now on.
        new_data_key: bool,
    },
    /// What a release build of an application would do (generalisation, suppression, the attack it would face):
    /// aggregates only, nothing written.
    PlanRelease {
        /// The application's scope, fixed here when the plan was admitted (the core reads no committee data).
        scope: PlanScope,
        /// The model to try over the approval's.
        params: PlanParams,
    },
    /// An operator's read-only SQL query; the core seals its rows to the key the client made for it, so this zone
    /// never holds them. The query is emptied from the payload once the core reports, as every payload; the ledger
    /// keeps its shape (`query_shape`).
    Sql {
        /// The query (DataFusion SQL).
        query: String,
        /// Over the operator view (opted-out patients and the registry included) rather than the research view.
        all_rows: bool,
        /// The client's one-use X25519 public key, 64 hex digits.
        recipient_key: String,
    },
    /// A statistical table over the research view, its DP loss (if any) spent before the order was signed.
    Statistics(tokumei_catalogue::statistics::StatisticsOrder),
    /// The core's half of a release build: read the approved scope through the research view, anonymise and verify
    /// it, and hand the result sealed to the release zone's intake key (the release zone fingerprints, signs and
    /// serves the copies). The scope is fixed here, from the approval, when the build is admitted.
    BuildRelease {
        /// What to build, as admitted.
        scope: BuildScope,
        /// The release zone's intake key as the zone published it (64 hex digits): the core seals the package to
        /// this key, which the policy service vouches for by signing the order.
        intake_key: String,
    },
    /// The core store's figures for the regulator's report of a quarter: counts only.
    RegulatorFigures {
        /// The quarter, `YYYY-Qn` (Japanese fiscal calendar, as the report's).
        period: String,
        /// Its first instant (RFC 3339), computed here so the core and the report count the same window.
        from: String,
        /// The instant after its last (RFC 3339).
        to: String,
    },
    /// A request to the analysis workspace of an on-platform approval (`tokumei_analysis::workspace`): a query, an
    /// analysis, an upload, an output request, or the release of an approved output. The request's text is emptied
    /// from the payload once the core reports, as every payload; the ledger keeps its shape and hash.
    Analysis {
        /// The workspace's scope, fixed from the approval when the request was admitted.
        scope: WorkspaceScope,
        /// The request (`tokumei_analysis::workspace::WorkspaceRequest`, as JSON).
        request: serde_json::Value,
        /// The researcher's one-use X25519 public key (64 hex digits), for a query's rows or an analysis's values.
        recipient_key: Option<String>,
    },
}

impl CoreOperation {
    /// The operation's name in the ledger (`core.<name>`) and in the queue.
    pub fn name(&self) -> &'static str {
        match self {
            CoreOperation::Status => "status",
            CoreOperation::Compact => "compact",
            CoreOperation::Erase { .. } => "erase",
            CoreOperation::RotateKeys { .. } => "rotate_keys",
            CoreOperation::RegulatorFigures { .. } => "regulator_figures",
            CoreOperation::PlanRelease { .. } => "plan_release",
            CoreOperation::Statistics(_) => "statistics",
            CoreOperation::Sql { .. } => "sql",
            CoreOperation::BuildRelease { .. } => "build_release",
            CoreOperation::Analysis { .. } => "analysis",
        }
    }

    /// The approval the order is asked under (statistics, release plans): its result is read only while that
    /// approval stands.
    pub fn application(&self) -> Option<&str> {
        match self {
            CoreOperation::PlanRelease { scope, .. } => Some(&scope.application),
            CoreOperation::Statistics(order) => Some(&order.request.application),
            CoreOperation::BuildRelease { scope, .. } => Some(&scope.application),
            CoreOperation::Analysis { scope, .. } => Some(&scope.application),
            _ => None,
        }
    }

    /// What asking for it needs: operating the store (`operate_core`, operators); for the regulator's figures —
    /// counts a report publishes anyway — `report_regulator` (operators and auditors); for a release plan,
    /// `plan_release` on the application (operators, the chair, assigned members), checked when it is queued.
    pub fn action(&self) -> crate::authorization::Action {
        match self {
            CoreOperation::RegulatorFigures { .. } => crate::authorization::Action::ReportRegulator,
            CoreOperation::PlanRelease { .. } => crate::authorization::Action::PlanRelease,
            CoreOperation::Statistics(_) => crate::authorization::Action::RunStatistics,
            CoreOperation::Sql { .. } => crate::authorization::Action::RunOperatorSql,
            CoreOperation::BuildRelease { .. } => crate::authorization::Action::BuildRelease,
            CoreOperation::Analysis { request, .. } => match request.get("request").and_then(|r| r.as_str()) {
                Some("release_output") => crate::authorization::Action::CheckOutput,
                _ => crate::authorization::Action::UseWorkspace,
            },
            _ => crate::authorization::Action::OperateCore,
        }
    }

    /// The regulator's figures for `period` (`YYYY-Qn`), its window computed once, here.
    pub fn regulator_figures(period: &str) -> Result<CoreOperation> {
        let (from, to) = crate::transparency::quarter(period)?;
        Ok(CoreOperation::RegulatorFigures {
            period: period.to_owned(),
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
        })
    }

    /// Keys the order names (counted in the ledger, never listed).
    pub fn key_count(&self) -> usize {
        match self {
            CoreOperation::Erase {
                linkage_keys,
                hospital_pseudonym,
                ..
            } => linkage_keys.len() + usize::from(hospital_pseudonym.is_some()),
            _ => 0,
        }
    }

    /// Checks the arguments before anything is queued; the error names the field, never its value.
    pub fn validate(&self) -> Result<()> {
        if let CoreOperation::Sql {
            query, recipient_key, ..
        } = self
        {
            if query.trim().is_empty() || query.len() > MAX_QUERY_BYTES {
                return Err(PolicyError::Invalid(format!("a query is 1 to {MAX_QUERY_BYTES} bytes")));
            }
            if !is_key(recipient_key) {
                return Err(PolicyError::Invalid(
                    "the recipient key is 64 lowercase hex digits (an X25519 public key)".into(),
                ));
            }
            return Ok(());
        }
        let CoreOperation::Erase {
            linkage_keys,
            hospital_pseudonym,
            request_id,
        } = self
        else {
            return Ok(());
        };
        if linkage_keys.is_empty() && hospital_pseudonym.is_none() {
            return Err(PolicyError::Invalid(
                "an erasure names at least one linkage key or a hospital pseudonym".into(),
            ));
        }
        if linkage_keys.len() > MAX_ERASE_KEYS {
            return Err(PolicyError::Invalid(format!(
                "an erasure names at most {MAX_ERASE_KEYS} linkage keys"
            )));
        }
        let bad = linkage_keys.iter().filter(|k| !is_key(k)).count();
        if bad > 0 {
            return Err(PolicyError::Invalid(format!(
                "{bad} linkage key(s) are not 64 lowercase hex digits"
            )));
        }
        if hospital_pseudonym.as_deref().is_some_and(|p| !is_key(p)) {
            return Err(PolicyError::Invalid(
                "the hospital pseudonym is not 64 lowercase hex digits".into(),
            ));
        }
        let reference_ok = (1..=128).contains(&request_id.len())
            && request_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
        // A reference goes to the ledger and the certificate: it must not smuggle a key there.
        let looks_like_key =
            is_key(&request_id.to_ascii_lowercase()) || linkage_keys.iter().any(|k| request_id.contains(k.as_str()));
        if !reference_ok || looks_like_key {
            return Err(PolicyError::Invalid(
                "the request reference is 1-128 characters of letters, digits and -_.:/, and not a key".into(),
            ));
        }
        Ok(())
    }

    /// What the ledger records of the core's report: counts and references, chosen here (the committee zone
    /// decides what its ledger holds), never a key.
    pub fn audit_details(&self, report: &serde_json::Value) -> serde_json::Value {
        let pick = |fields: &[&str]| {
            let mut out = serde_json::Map::new();
            for f in fields {
                if let Some(v) = report.get(*f).filter(|v| v.is_number() || v.is_boolean()) {
                    out.insert((*f).to_owned(), v.clone());
                }
            }
            out
        };
        let mut details = match self {
            CoreOperation::Status => {
                let mut m = serde_json::Map::new();
                let tables = report.get("tables").and_then(|t| t.as_array()).map_or(0, Vec::len);
                m.insert("tables".into(), tables.into());
                m
            }
            CoreOperation::Compact => pick(&["tables_compacted"]),
            CoreOperation::Erase { request_id, .. } => {
                let mut m = pick(&["rows_removed", "files_destroyed"]);
                m.insert("request_id".into(), request_id.clone().into());
                m
            }
            CoreOperation::RotateKeys { .. } => pick(&["kek_version", "rewrapped", "new_data_key"]),
            CoreOperation::RegulatorFigures { period, .. } => {
                let mut m = pick(&[
                    "hospitals_providing",
                    "patient_records_received",
                    "clinical_rows_received",
                    "opt_outs_handled",
                    "erasure_requests_handled",
                    "erasures_completed",
                ]);
                m.insert("period".into(), period.clone().into());
                m
            }
            CoreOperation::PlanRelease { scope, .. } => {
                let mut m = pick(&["patients", "suppressed_patients", "release_loss"]);
                m.insert("application".into(), scope.application.clone().into());
                if let Some(model) = report.get("privacy_model") {
                    for f in ["k", "m", "max_suppression"] {
                        if let Some(v) = model.get(f).filter(|v| v.is_number()) {
                            m.insert(f.into(), v.clone());
                        }
                    }
                }
                m
            }
            CoreOperation::Sql { query, all_rows, .. } => {
                let mut m = pick(&["rows"]);
                m.insert("query".into(), crate::query_shape::redacted(query).into());
                m.insert(
                    "query_sha256".into(),
                    hex::encode(sha2::Sha256::digest(query.as_bytes())).into(),
                );
                m.insert("all_rows".into(), (*all_rows).into());
                m
            }
            CoreOperation::BuildRelease { scope, .. } => {
                let mut m = pick(&["patients", "suppressed_patients", "package_bytes"]);
                if let Some(sha) = report
                    .get("package_sha256")
                    .and_then(|v| v.as_str())
                    .filter(|s| is_key(s))
                {
                    m.insert("package_sha256".into(), sha.into());
                }
                m.insert("application".into(), scope.application.clone().into());
                m.insert("recipients".into(), scope.recipients.len().into());
                m.insert("approval_revision".into(), scope.approval_revision.into());
                m
            }
            CoreOperation::Analysis { scope, request, .. } => analysis_details(&scope.application, request, report),
            CoreOperation::Statistics(order) => {
                let mut m = pick(&["cells", "differentially_private"]);
                m.insert("application".into(), order.request.application.clone().into());
                m.insert("table".into(), order.request.table.clone().into());
                if let Some(paid) = &order.paid {
                    m.insert("epsilon".into(), paid.epsilon.into());
                    m.insert("rho".into(), paid.rho.into());
                    m.insert("delta".into(), paid.delta.into());
                }
                if let Some(sc) = report.get("small_cell") {
                    for f in ["primary_suppressed", "complementary_suppressed"] {
                        if let Some(v) = sc.get(f).filter(|v| v.is_number()) {
                            m.insert(f.into(), v.clone());
                        }
                    }
                }
                m
            }
        };
        if self.key_count() > 0 {
            details.insert("keys".into(), self.key_count().into());
        }
        serde_json::Value::Object(details)
    }
}

/// What the ledger keeps of a workspace request and its report: the kind; a query's shape and the SHA-256 of its
/// text; the tables it read, rows, rows scanned and duration; an analysis's result number and verdict; the rules of
/// the monitoring's alerts. Never a value of the data nor the text itself.
fn analysis_details(
    application: &str,
    request: &serde_json::Value,
    report: &serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("application".into(), application.into());
    let kind = request.get("request").and_then(|k| k.as_str()).unwrap_or("unknown");
    m.insert("request".into(), kind.into());
    let sql = request
        .get("sql")
        .or_else(|| request.get("spec").and_then(|s| s.get("sql")))
        .and_then(|q| q.as_str());
    if let Some(sql) = sql {
        m.insert("query".into(), crate::query_shape::redacted(sql).into());
        m.insert(
            "query_sha256".into(),
            hex::encode(sha2::Sha256::digest(sql.as_bytes())).into(),
        );
    }
    if let Some(a) = request
        .get("spec")
        .and_then(|s| s.get("analysis"))
        .and_then(|a| a.as_str())
    {
        m.insert("analysis".into(), a.into());
    }
    if let Some(n) = request.get("name").and_then(|n| n.as_str()) {
        m.insert("upload".into(), n.into());
    }
    for f in ["rows", "rows_scanned", "duration_ms", "result", "columns"] {
        if let Some(v) = report.get(f).filter(|v| v.is_number()) {
            m.insert(f.into(), v.clone());
        }
    }
    if let Some(v) = request.get("result").filter(|v| v.is_number()) {
        m.insert("result".into(), v.clone());
    }
    if let Some(v) = report.get("verdict").and_then(|v| v.as_str()) {
        m.insert("verdict".into(), v.into());
    }
    if let Some(tables) = report.get("tables").and_then(|t| t.as_array()) {
        let names: Vec<serde_json::Value> = tables.iter().filter(|t| t.is_string()).cloned().collect();
        m.insert("tables".into(), names.into());
    }
    if let Some(alerts) = report.get("alerts").and_then(|a| a.as_array()) {
        let rules: Vec<serde_json::Value> = alerts.iter().filter_map(|a| a.get("rule").cloned()).collect();
        m.insert("alerts".into(), rules.into());
    }
    m
}

/// Whether `s` is 64 lowercase hex digits (a linkage key, a SHA-256, an X25519 public key).
pub(crate) fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a release plan reads, taken from the application by the policy service when it admitted the plan: the
/// approved scope and model, or before approval the form's tables (its cohort text is not run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanScope {
    /// The application.
    pub application: String,
    /// How its data would reach the researcher (only files are planned).
    pub channel: crate::committee::Channel,
    /// Tables and columns.
    pub tables: Vec<crate::committee::TableRequest>,
    /// The approved cohort filter (empty before approval).
    pub cohort_filter: String,
    /// Whether scope and model come from an approval.
    pub approved: bool,
    /// The approved model, if any.
    pub privacy: Option<crate::committee::PrivacyModel>,
}

impl PlanScope {
    /// The scope of `app` as it stands.
    pub fn of(app: &crate::committee::store::ApplicationRecord) -> PlanScope {
        match &app.conditions {
            Some(c) => PlanScope {
                application: app.id.clone(),
                channel: c.channel,
                tables: c.tables.clone(),
                cohort_filter: c.cohort_filter.clone(),
                approved: true,
                privacy: c.privacy,
            },
            None => PlanScope {
                application: app.id.clone(),
                channel: app.form.channel,
                tables: app.form.tables.clone(),
                cohort_filter: String::new(),
                approved: false,
                privacy: None,
            },
        }
    }
}

/// What a workspace reads, fixed by the policy service from the approval when it admitted a request (the core
/// reads no committee data): the approved tables and columns, the cohort, and the detail — anonymised under the
/// approval's model, or pseudonymised for certified users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceScope {
    /// The approved application (the workspace's name).
    pub application: String,
    /// Tables and columns.
    pub tables: Vec<crate::committee::TableRequest>,
    /// The approved cohort filter.
    pub cohort_filter: String,
    /// The approved privacy model: the workspace's data are anonymised under it unless `pseudonymised`.
    pub privacy: Option<crate::committee::PrivacyModel>,
    /// Pseudonymised detail (仮名加工): no anonymisation, workspace pseudonyms only.
    pub pseudonymised: bool,
}

impl WorkspaceScope {
    /// The workspace of approved `app`.
    pub fn of(app: &crate::committee::store::ApplicationRecord) -> Result<WorkspaceScope> {
        let c = app
            .conditions
            .as_ref()
            .ok_or_else(|| PolicyError::InvalidState("the application has no approval conditions".into()))?;
        Ok(WorkspaceScope {
            application: app.id.clone(),
            tables: c.tables.clone(),
            cohort_filter: c.cohort_filter.clone(),
            privacy: c.privacy,
            pseudonymised: c.pseudonymised,
        })
    }
}

/// What a release build reads and for whom, fixed by the policy service when it admitted the build (the core
/// reads no committee data, and the release zone delivers only this scope): the approval's conditions at that
/// revision, narrowed to the tables and recipients the operator asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildScope {
    /// The approved application.
    pub application: String,
    /// The approval's revision the build was admitted under (a change request later makes the build stale).
    pub approval_revision: i64,
    /// Last day of use.
    pub expires_on: chrono::NaiveDate,
    /// How the data reaches the researchers (files only are built).
    pub channel: crate::committee::Channel,
    /// Tables and columns to build.
    pub tables: Vec<crate::committee::TableRequest>,
    /// Recipients to build a copy for.
    pub recipients: Vec<String>,
    /// The approved cohort filter.
    pub cohort_filter: String,
    /// The approved privacy model.
    pub privacy: Option<crate::committee::PrivacyModel>,
    /// Whether the approval lets the project's releases be linked (the project's pseudonym key).
    pub link_releases: bool,
}

impl BuildScope {
    /// The scope of approved `app` for `tables` and `recipients` (already admitted against its conditions).
    pub fn of(
        app: &crate::committee::store::ApplicationRecord,
        tables: &[crate::committee::TableRequest],
        recipients: &[String],
    ) -> Result<BuildScope> {
        let c = app
            .conditions
            .as_ref()
            .ok_or_else(|| PolicyError::InvalidState("the application has no approval conditions".into()))?;
        Ok(BuildScope {
            application: app.id.clone(),
            approval_revision: app.conditions_revision,
            expires_on: c.expires_on,
            channel: c.channel,
            tables: tables.to_vec(),
            recipients: recipients.to_vec(),
            cohort_filter: c.cohort_filter.clone(),
            privacy: c.privacy,
            link_releases: c.link_releases,
        })
    }
}

/// The privacy model a plan tries, over the approval's (or, before approval, the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanParams {
    /// k to try.
    pub k: Option<u32>,
    /// m to try.
    pub m: Option<u32>,
    /// Largest suppressed share to try.
    pub max_suppression: Option<f64>,
    /// Weight of the demographics in the release loss to try.
    pub demographic_weight: Option<f64>,
}

/// k a plan tries when neither the approval nor the request sets one.
pub const DEFAULT_PLAN_K: u32 = 5;
/// Largest suppressed share a plan tries when neither the approval nor the request sets one.
pub const DEFAULT_PLAN_MAX_SUPPRESSION: f64 = 0.05;

impl PlanParams {
    /// The model to plan for: the approval's (or the defaults), with these values over it; checked, so a plan
    /// the core could not run is refused before it is queued.
    pub fn model_over(
        &self,
        approved: Option<crate::committee::PrivacyModel>,
    ) -> std::result::Result<crate::committee::PrivacyModel, String> {
        let base = approved.unwrap_or(crate::committee::PrivacyModel {
            k: DEFAULT_PLAN_K,
            l: None,
            t: None,
            max_suppression: DEFAULT_PLAN_MAX_SUPPRESSION,
            m: crate::committee::conditions::DEFAULT_M,
            demographic_weight: None,
        });
        let model = crate::committee::PrivacyModel {
            k: self.k.unwrap_or(base.k),
            m: self.m.unwrap_or(base.m),
            max_suppression: self.max_suppression.unwrap_or(base.max_suppression),
            demographic_weight: self.demographic_weight.or(base.demographic_weight),
            ..base
        };
        model.validate()?;
        Ok(model)
    }
}

/// The signed body of an order (its JSON is what the signature covers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreOrder {
    /// The order's number (unique in this policy zone).
    pub id: u64,
    /// Who asked (the ledger entry of the outcome names them).
    pub requested_by: String,
    /// When it was issued (milliseconds since the epoch).
    pub issued_at_ms: i64,
    /// After this the core refuses it (milliseconds since the epoch).
    pub expires_at_ms: i64,
    /// What to do.
    #[serde(flatten)]
    pub operation: CoreOperation,
}

/// An order as handed to the core.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCoreOrder {
    /// The order's JSON.
    pub payload: String,
    /// Ed25519 over `tokumei/core-order/v1 ‖ 0 ‖ payload`, hex.
    pub signature: String,
}

impl std::fmt::Debug for SignedCoreOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The payload of an erasure names linkage keys.
        f.debug_struct("SignedCoreOrder")
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Waiting for the core.
    Queued,
    /// Handed to the core, not yet reported.
    Taken,
    /// Carried out; the result holds the core's report.
    Done,
    /// The core could not carry it out; the reason says why.
    Failed,
    /// Not taken before it expired.
    Expired,
}

impl OrderState {
    fn name(self) -> &'static str {
        match self {
            OrderState::Queued => "queued",
            OrderState::Taken => "taken",
            OrderState::Done => "done",
            OrderState::Failed => "failed",
            OrderState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<OrderState> {
        Ok(match s {
            "queued" => OrderState::Queued,
            "taken" => OrderState::Taken,
            "done" => OrderState::Done,
            "failed" => OrderState::Failed,
            "expired" => OrderState::Expired,
            // Reported, the service settling the report (a statistics table's audit): still the core's turn.
            "reporting" => OrderState::Taken,
            other => return Err(PolicyError::InvalidState(format!("unknown order state {other:?}"))),
        })
    }

    /// Whether the order will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, OrderState::Done | OrderState::Failed | OrderState::Expired)
    }
}

/// An order as its requester sees it (never the payload).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderStatus {
    /// The order's number.
    pub id: u64,
    /// `status`, `compact`, `erase` or `rotate_keys`.
    pub operation: String,
    /// Where it stands.
    pub state: OrderState,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// When the core reported.
    pub finished_at: Option<DateTime<Utc>>,
    /// The core's report (counts and references).
    pub result: Option<serde_json::Value>,
    /// A failure's reason code.
    pub reason: Option<String>,
    /// The approval it was asked under (statistics and release plans).
    pub application: Option<String>,
}

/// How the core's report ended.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderOutcome {
    /// Carried out, with the core's report (a JSON object).
    Done(serde_json::Value),
    /// Not carried out, with a reason code (`[A-Z_]`, at most 64 characters).
    Failed(String),
}

impl OrderOutcome {
    /// The columns it is stored in (result, reason, state), once checked: a report is a JSON object of at most
    /// [`MAX_RESULT_BYTES`], a failure's reason a code of `A-Z` and `_`.
    pub fn stored(&self) -> Result<(Option<String>, Option<String>, OrderState)> {
        match self {
            OrderOutcome::Done(value) => {
                let text = value.to_string();
                if !value.is_object() || text.len() > MAX_RESULT_BYTES {
                    return Err(PolicyError::Invalid(format!(
                        "a report is a JSON object of at most {MAX_RESULT_BYTES} bytes"
                    )));
                }
                Ok((Some(text), None, OrderState::Done))
            }
            OrderOutcome::Failed(code) => {
                let ok =
                    !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                if !ok {
                    return Err(PolicyError::Invalid("a failure's reason is a code of A-Z and _".into()));
                }
                Ok((None, Some(code.clone()), OrderState::Failed))
            }
        }
    }
}

const COLUMNS: &str = "id, operation, payload, state, requested_by, requested_at_ms, expires_at_ms, finished_at_ms, result, reason, \
     application";

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap_or_default()
}

fn status_of(row: &AnyRow, now: DateTime<Utc>) -> Result<OrderStatus> {
    let mut state = OrderState::parse(&row.try_get::<String, _>("state")?)?;
    if state == OrderState::Queued && row.try_get::<i64, _>("expires_at_ms")? <= now.timestamp_millis() {
        state = OrderState::Expired;
    }
    let result: Option<String> = row.try_get("result")?;
    Ok(OrderStatus {
        id: u64::try_from(row.try_get::<i64, _>("id")?).unwrap_or_default(),
        operation: row.try_get("operation")?,
        state,
        requested_by: row.try_get("requested_by")?,
        requested_at: ms(row.try_get("requested_at_ms")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at_ms")?.map(ms),
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        reason: row.try_get("reason")?,
        application: row.try_get("application")?,
    })
}

/// The queue of orders in the policy database.
#[derive(Debug, Clone)]
pub struct CoreOrders {
    db: PolicyDb,
}

impl CoreOrders {
    /// The queue over the zone's database.
    pub(crate) fn new(db: PolicyDb) -> CoreOrders {
        CoreOrders { db }
    }

    /// Queues `operation` for `requested_by`; `sign` signs the order's JSON. Returns the order's status.
    pub async fn queue(
        &self,
        operation: CoreOperation,
        requested_by: &str,
        now: DateTime<Utc>,
        sign: impl Fn(&[u8]) -> String,
    ) -> Result<OrderStatus> {
        operation.validate()?;
        let mut tx = self.db.begin_write().await?;
        // The counter row first: the transaction takes its write lock at once, and racing requests wait on it.
        let id: i64 = sqlx::query("UPDATE core_order_seq SET n = n + 1 WHERE one = 1 RETURNING n")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let order = CoreOrder {
            id: u64::try_from(id).unwrap_or_default(),
            requested_by: requested_by.to_owned(),
            issued_at_ms: now.timestamp_millis(),
            expires_at_ms: (now + ORDER_TTL).timestamp_millis(),
            operation: operation.clone(),
        };
        let payload = serde_json::to_string(&order)
            .map_err(|e| PolicyError::InvalidState(format!("order not serialisable: {e}")))?;
        sqlx::query(
            "INSERT INTO core_orders (id, operation, payload, signature, key_count, requested_by, requested_at_ms, \
             expires_at_ms, state, application, build_scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10)",
        )
        .bind(id)
        .bind(operation.name())
        .bind(&payload)
        .bind(sign(payload.as_bytes()))
        .bind(i64::try_from(operation.key_count()).unwrap_or(i64::MAX))
        .bind(requested_by)
        .bind(order.issued_at_ms)
        .bind(order.expires_at_ms)
        .bind(operation.application())
        .bind(match &operation {
            CoreOperation::BuildRelease { scope, .. } => Some(
                serde_json::to_string(scope)
                    .map_err(|e| PolicyError::InvalidState(format!("build scope not serialisable: {e}")))?,
            ),
            _ => None,
        })
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get(order.id, now).await
    }

    /// One order's status.
    pub async fn get(&self, id: u64, now: DateTime<Utc>) -> Result<OrderStatus> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM core_orders WHERE id = $1"))
            .bind(i64::try_from(id).unwrap_or(-1))
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| PolicyError::NotFound {
                kind: "core order",
                id: id.to_string(),
            })?;
        status_of(&row, now)
    }

    /// Keeps the latest time the core reports an opt-out or erasure changed its research view (never moved back).
    pub async fn note_exclusions(&self, at_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE core_state SET exclusions_changed_at_ms = $1 WHERE one = 1 AND exclusions_changed_at_ms < $1",
        )
        .bind(at_ms)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The latest time the core reported its research view changed by an opt-out or erasure (0: never).
    pub async fn exclusions_changed_at_ms(&self) -> Result<i64> {
        let row = sqlx::query("SELECT exclusions_changed_at_ms FROM core_state WHERE one = 1")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get("exclusions_changed_at_ms")?)
    }

    /// Hands the core every queued, unexpired order (oldest first) and marks them taken, in one transaction:
    /// an order is handed out once. Expired ones are marked expired.
    pub async fn take(&self, now: DateTime<Utc>) -> Result<Vec<(u64, String, SignedCoreOrder)>> {
        let now_ms = now.timestamp_millis();
        let mut tx = self.db.begin_write().await?;
        // Orders nobody took in time, and orders taken but never reported (a core that stopped half-way), end here:
        // their payloads (an erasure's keys) are emptied like those of finished orders.
        sqlx::query(
            "UPDATE core_orders SET state = 'expired', payload = '', signature = '' \
             WHERE state = 'queued' AND expires_at_ms <= $1",
        )
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE core_orders SET state = 'failed', reason = 'ORDER_LOST', finished_at_ms = $1, payload = '', \
             signature = '' WHERE state IN ('taken', 'reporting') AND expires_at_ms <= $2",
        )
        .bind(now_ms)
        .bind(now_ms - LOST_AFTER.num_milliseconds())
        .execute(&mut *tx)
        .await?;
        // One at a time: an order is taken when the core is ready to carry it out, never left to expire in a batch.
        let rows = sqlx::query(
            "SELECT id, operation, payload, signature FROM core_orders WHERE state = 'queued' ORDER BY id LIMIT 1",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let marked = sqlx::query(
                "UPDATE core_orders SET state = 'taken', taken_at_ms = $2 WHERE id = $1 AND state = 'queued'",
            )
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if marked.rows_affected() == 1 {
                out.push((
                    u64::try_from(id).unwrap_or_default(),
                    row.try_get("operation")?,
                    SignedCoreOrder {
                        payload: row.try_get("payload")?,
                        signature: row.try_get("signature")?,
                    },
                ));
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Claims a taken order for its report (`taken` → `reporting`): one report only, and nobody reads a result
    /// before the service has settled it. Returns the order's operation and who asked.
    pub async fn claim_report(&self, id: u64) -> Result<(CoreOperation, String)> {
        let key = i64::try_from(id).unwrap_or(-1);
        let mut tx = self.db.begin_write().await?;
        let marked = sqlx::query("UPDATE core_orders SET state = 'reporting' WHERE id = $1 AND state = 'taken'")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() != 1 {
            return Err(PolicyError::InvalidState(format!(
                "core order {id} is not waiting for a report"
            )));
        }
        let claimed = order_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records the core's report on a taken (or claimed) order and empties its payload. Returns the order (its operation,
    /// for the ledger) and who asked. A report on an order that is not taken is `INVALID_STATE`.
    pub async fn report(&self, id: u64, outcome: &OrderOutcome, now: DateTime<Utc>) -> Result<(CoreOperation, String)> {
        let (result, reason, state) = outcome.stored()?;
        let key = i64::try_from(id).unwrap_or(-1);
        let mut tx = self.db.begin_write().await?;
        // The state change first (a write takes SQLite's lock at once; on PostgreSQL the row lock makes a second,
        // racing report find the order no longer taken): a report is accepted once, on a taken order.
        let marked = sqlx::query(
            "UPDATE core_orders SET state = $2, finished_at_ms = $3, result = $4, reason = $5 \
             WHERE id = $1 AND state IN ('taken', 'reporting')",
        )
        .bind(key)
        .bind(state.name())
        .bind(now.timestamp_millis())
        .bind(result)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(PolicyError::InvalidState(format!(
                "core order {id} is not waiting for a report"
            )));
        }
        let (operation, requested_by) = order_in(&mut tx, id).await?;
        sqlx::query("UPDATE core_orders SET payload = '', signature = '' WHERE id = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((operation, requested_by))
    }
}

/// How long the release zone's claim on a build holds: a zone that claimed an order and never finished (it stopped,
/// or could not record) leaves it to be claimed again after this.
pub const DELIVERY_LEASE: Duration = Duration::minutes(30);

/// How long after the core's half a build may be delivered: a package waiting longer is refused, so a release never
/// carries data the store changed long since (erasures, opt-outs); the operator builds again.
pub const DELIVERY_WINDOW: Duration = Duration::hours(1);

/// A build order claimed for the release zone's half.
#[derive(Debug, Clone)]
pub struct ClaimedBuild {
    /// The scope the policy service fixed when it queued the order (never the core's word for it).
    pub scope: BuildScope,
    /// The core's report (the package's name, size, SHA-256 and counts).
    pub report: serde_json::Value,
    /// The operator who asked for the build.
    pub requested_by: String,
}

impl CoreOrders {
    /// Claims a done build order for the release zone's half: once, unless an earlier claim's lease ran out; only
    /// within [`DELIVERY_WINDOW`] of the core's report. Anything else is `BUILD_NOT_DELIVERABLE`.
    pub async fn claim_delivery(&self, id: u64, now: DateTime<Utc>) -> Result<ClaimedBuild> {
        let key = i64::try_from(id).unwrap_or(-1);
        let now_ms = now.timestamp_millis();
        let mut tx = self.db.begin_write().await?;
        let marked = sqlx::query(
            "UPDATE core_orders SET delivered = 'claimed', delivery_claimed_at_ms = $2 WHERE id = $1 \
             AND operation = 'build_release' AND state = 'done' AND finished_at_ms >= $3 \
             AND (delivered IS NULL OR (delivered = 'claimed' AND delivery_claimed_at_ms < $4))",
        )
        .bind(key)
        .bind(now_ms)
        .bind(now_ms - DELIVERY_WINDOW.num_milliseconds())
        .bind(now_ms - DELIVERY_LEASE.num_milliseconds())
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(PolicyError::ConditionViolated {
                code: "BUILD_NOT_DELIVERABLE",
                message: format!(
                    "core order {id} is not a finished build waiting for the release zone (delivered, being \
                     delivered, or older than {} minutes: build again)",
                    DELIVERY_WINDOW.num_minutes()
                ),
            });
        }
        let row = sqlx::query("SELECT result, requested_by, build_scope FROM core_orders WHERE id = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        let unreadable = |what: &str| PolicyError::InvalidState(format!("core order {id} has no readable {what}"));
        let result: Option<String> = row.try_get("result")?;
        let report = result
            .and_then(|r| serde_json::from_str(&r).ok())
            .ok_or_else(|| unreadable("report"))?;
        let scope: Option<String> = row.try_get("build_scope")?;
        let scope = scope
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| unreadable("scope"))?;
        let requested_by: String = row.try_get("requested_by")?;
        tx.commit().await?;
        Ok(ClaimedBuild {
            scope,
            report,
            requested_by,
        })
    }

    /// Ends a claim: `Delivery::Delivered(release)` once the release zone holds the release (never delivered
    /// again), `Delivery::Stale` when it can never be delivered (the approval changed), `Delivery::Again` when the
    /// zone's half failed and may be tried again.
    pub async fn settle_delivery(&self, id: u64, outcome: Delivery<'_>) -> Result<()> {
        let key = i64::try_from(id).unwrap_or(-1);
        let value = match outcome {
            Delivery::Delivered(release) => Some(release),
            Delivery::Stale => Some("stale"),
            Delivery::Again => None,
        };
        let mut tx = self.db.begin_write().await?;
        let marked = sqlx::query(
            "UPDATE core_orders SET delivered = $2, delivery_claimed_at_ms = NULL WHERE id = $1 AND delivered = 'claimed'",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(PolicyError::InvalidState(format!(
                "core order {id} is not claimed for delivery"
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The release zone's intake keys as it published them, the latest in force.
#[derive(Debug, Clone)]
pub struct IntakeKeys {
    db: PolicyDb,
}

impl IntakeKeys {
    /// The register over the zone's database.
    pub(crate) fn new(db: PolicyDb) -> IntakeKeys {
        IntakeKeys { db }
    }

    /// Records `public_key` (64 lower-case hex digits) as the key in force, unless it already is. Returns whether
    /// it changed.
    pub async fn publish(&self, public_key: &str, now: DateTime<Utc>) -> Result<bool> {
        if !is_key(public_key) {
            return Err(PolicyError::Invalid(
                "an intake key is 64 lower-case hex digits (an X25519 public key)".into(),
            ));
        }
        let mut tx = self.db.begin_write().await?;
        let last = sqlx::query("SELECT seq, public_key FROM release_intake_keys ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (seq, current): (i64, Option<String>) = match last {
            Some(row) => (row.try_get("seq")?, Some(row.try_get("public_key")?)),
            None => (0, None),
        };
        if current.as_deref() == Some(public_key) {
            return Ok(false);
        }
        sqlx::query("INSERT INTO release_intake_keys (seq, public_key, published_at_ms) VALUES ($1, $2, $3)")
            .bind(seq + 1)
            .bind(public_key)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The key in force, if the zone ever published one.
    pub async fn current(&self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT public_key FROM release_intake_keys ORDER BY seq DESC LIMIT 1")
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("public_key")?),
            None => None,
        })
    }
}

impl CoreOrders {
    /// The scope this service fixed for build order `id` when it queued it.
    pub async fn build_scope(&self, id: u64) -> Result<BuildScope> {
        let row = sqlx::query("SELECT build_scope FROM core_orders WHERE id = $1")
            .bind(i64::try_from(id).unwrap_or(-1))
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| PolicyError::NotFound {
                kind: "core order",
                id: id.to_string(),
            })?;
        let scope: Option<String> = row.try_get("build_scope")?;
        scope
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| PolicyError::InvalidState(format!("core order {id} has no build scope")))
    }
}

/// How a claim on a build ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// The release zone holds this release.
    Delivered(&'a str),
    /// It can never be delivered.
    Stale,
    /// The zone's half failed; it may be tried again.
    Again,
}

/// The operation of order `id` and who asked, read inside the transaction that is changing its state.
async fn order_in(tx: &mut sqlx::Transaction<'static, sqlx::Any>, id: u64) -> Result<(CoreOperation, String)> {
    let row = sqlx::query("SELECT payload, requested_by FROM core_orders WHERE id = $1")
        .bind(i64::try_from(id).unwrap_or(-1))
        .fetch_one(&mut **tx)
        .await?;
    let payload: String = row.try_get("payload")?;
    let order: CoreOrder = serde_json::from_str(&payload)
        .map_err(|e| PolicyError::InvalidState(format!("core order {id} is unreadable: {e}")))?;
    Ok((order.operation, row.try_get("requested_by")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        "0f".repeat(32)
    }

    #[test]
    fn erasures_are_checked_and_errors_name_no_key() {
        let erase = |keys: Vec<String>, p: Option<String>, r: &str| CoreOperation::Erase {
            linkage_keys: keys,
            hospital_pseudonym: p,
            request_id: r.into(),
        };
        assert!(erase(vec![key()], None, "req-1").validate().is_ok());
        assert!(erase(vec![], Some(key()), "req-1").validate().is_ok());
        let upper = key().to_uppercase();
        for bad in [
            erase(vec![], None, "req-1"),
            erase(vec![upper.clone()], None, "req-1"),
            erase(vec![key()[..62].to_owned()], None, "req-1"),
            erase(vec![], Some("zz".repeat(32)), "req-1"),
            erase(vec![key()], None, ""),
            erase(vec![key()], None, "req 1; DROP"),
            erase(vec![key(); MAX_ERASE_KEYS + 1], None, "r"),
            // A key smuggled into the reference (which the ledger and the certificate keep).
            erase(vec![key()], None, &key()),
            erase(vec![], Some(key()), &"ab".repeat(32)),
        ] {
            let e = bad.validate().expect_err("refused");
            assert_eq!(e.reason(), "INVALID_ARGUMENT");
            assert!(
                !e.to_string().contains(&upper) && !e.to_string().contains(&key()[..62]),
                "{e}"
            );
        }
    }

    #[test]
    fn the_ledger_gets_counts_and_the_reference_never_a_key() {
        let op = CoreOperation::Erase {
            linkage_keys: vec![key(), "1a".repeat(32)],
            hospital_pseudonym: None,
            request_id: "req-9".into(),
        };
        // A report that (wrongly) carried a key in a field is not copied.
        let report = serde_json::json!({"rows_removed": 6, "files_destroyed": 7, "linkage_key": key(), "tables": []});
        let d = op.audit_details(&report);
        assert_eq!(
            d,
            serde_json::json!({"rows_removed": 6, "files_destroyed": 7, "request_id": "req-9", "keys": 2})
        );
        let status = CoreOperation::Status.audit_details(&serde_json::json!({"tables": [{}, {}, {}]}));
        assert_eq!(status, serde_json::json!({"tables": 3}));
    }

    #[test]
    fn a_statistics_order_is_written_as_the_core_reads_it() {
        let order = CoreOrder {
            id: 4,
            requested_by: "rika".into(),
            issued_at_ms: 1,
            expires_at_ms: 2,
            operation: CoreOperation::Statistics(tokumei_catalogue::statistics::StatisticsOrder {
                request: tokumei_catalogue::statistics::StatisticsSpec {
                    application: "APP-1".into(),
                    table: "patients".into(),
                    group_by: vec!["sex".into()],
                    hierarchy: vec!["sex=value".into()],
                    measure: "count".into(),
                    max_contrib: 1,
                    epsilon: Some(0.3),
                    rho: None,
                    delta: None,
                    public_keys: None,
                    min_cell: None,
                    suppress_zeros: false,
                    subject: None,
                },
                paid: Some(tokumei_deid::dp::accounting::PrivacyLoss {
                    epsilon: 0.3,
                    rho: 0.0,
                    delta: 0.0,
                }),
            }),
        };
        // The same text `tokumei_store::statistics` tests that the core reads.
        assert_eq!(
            serde_json::to_string(&order).expect("json"),
            r#"{"id":4,"requested_by":"rika","issued_at_ms":1,"expires_at_ms":2,"operation":"statistics","request":{"application":"APP-1","table":"patients","group_by":["sex"],"hierarchy":["sex=value"],"measure":"count","max_contrib":1,"epsilon":0.3,"rho":null,"delta":null,"public_keys":null,"min_cell":null,"suppress_zeros":false},"paid":{"epsilon":0.3,"rho":0.0,"delta":0.0}}"#
        );
    }

    #[test]
    fn an_order_round_trips_as_the_core_reads_it() {
        let order = CoreOrder {
            id: 7,
            requested_by: "op".into(),
            issued_at_ms: 1,
            expires_at_ms: 2,
            operation: CoreOperation::RotateKeys { new_data_key: true },
        };
        let text = serde_json::to_string(&order).expect("json");
        assert_eq!(
            text,
            r#"{"id":7,"requested_by":"op","issued_at_ms":1,"expires_at_ms":2,"operation":"rotate_keys","new_data_key":true}"#
        );
        assert_eq!(serde_json::from_str::<CoreOrder>(&text).expect("parse"), order);
        assert!(
            format!(
                "{:?}",
                SignedCoreOrder {
                    payload: text,
                    signature: String::new()
                }
            )
            .contains("payload_bytes")
        );
    }
}
