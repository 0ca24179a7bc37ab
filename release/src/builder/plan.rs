//! `tokumei release plan`: what a build of an application would generalise and suppress, and the attack the
//! result would face, computed on the real cohort before any file exists — so that the committee sets k and m
//! knowingly, and can try other values before approving.
//!
//! The plan runs the build's own protection ([`super::protect`]) and the copy check ([`super::record_check`])
//! on the scope of the approval (or, before approval, of the application form), and writes nothing: the
//! pseudonyms come from a fresh key that is dropped, no fingerprint is embedded, no release id is taken. Only
//! aggregate figures leave it (levels, counts, shares); it is authorised as [`Action::PlanRelease`] and
//! audited with those figures.

use std::path::Path;

use serde::Serialize;
use tokumei_policy::authorization::Action;
use tokumei_policy::committee::{Channel, PrivacyModel};
use tokumei_policy::core_orders::PlanScope;
use tokumei_policy::{Actor, Origin, Policy};
use tokumei_store::{Store, Table};

use super::counts::CountCap;
use super::extremes::ExtremesReport;
use super::items::ItemsOutcome;
use super::protect::Protected;
use super::record_check::RecordCheck;
use super::{audit_failure, protect_and_check, read_scope, release_scope};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;
use crate::pseudonym::PseudonymKey;

/// k when neither the approval nor the request sets one.
pub const DEFAULT_K: u32 = tokumei_policy::core_orders::DEFAULT_PLAN_K;
/// Largest share of records suppressed when neither the approval nor the request sets one.
pub const DEFAULT_MAX_SUPPRESSION: f64 = tokumei_policy::core_orders::DEFAULT_PLAN_MAX_SUPPRESSION;

/// Who plans, against which store.
pub struct PlanContext<'a> {
    /// The policy façade (authorisation, audit).
    pub policy: &'a Policy,
    /// The person planning (operator, chair, or an assigned committee member).
    pub actor: &'a Actor,
    /// Where the request came from.
    pub origin: Origin<'a>,
    /// The core store, read through its research view.
    pub store: &'a Store,
}

/// The privacy model to try, over the approval's (or, before approval, the defaults): the policy service's
/// order carries it to the core as is.
pub type PlanRequest = tokumei_policy::core_orders::PlanParams;

/// A quasi-identifier of the patient file and the level the plan generalises it to.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlannedLevel {
    /// Column.
    pub column: String,
    /// Level chosen (0 = as recorded).
    pub level: u32,
    /// Top of its hierarchy.
    pub max_level: u32,
}

/// What a build would do.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlanOutcome {
    /// The application.
    pub application: String,
    /// Whether the scope and model came from an approval (else from the form and the request).
    pub approved: bool,
    /// The model planned for.
    pub privacy_model: PrivacyModel,
    /// Tables in scope.
    pub tables: Vec<String>,
    /// The cohort planned for: the approved filter, or everyone before approval (the form's filter is not run).
    pub cohort: String,
    /// Patients in the cohort.
    pub patients: u64,
    /// Patients the demographic search would withhold from every file.
    pub suppressed_patients: u64,
    /// Birth dates that would be top-coded (90 or older).
    pub top_coded_birth_dates: u64,
    /// Patient rows merged (one row per patient).
    pub merged_patient_rows: u64,
    /// The patient file's generalisation.
    pub demographics: Vec<PlannedLevel>,
    /// The event items' recoding and rare-item suppression.
    pub items: Option<ItemsOutcome>,
    /// Extreme measured values that would be coded.
    pub extremes: Vec<ExtremesReport>,
    /// Rows-per-patient counts that would be capped.
    pub count_caps: Vec<CountCap>,
    /// Release loss (0 = as recorded, 1 = nothing left).
    pub release_loss: f64,
    /// The check and the attack the planned release would face.
    pub check: RecordCheck,
}

/// Plans a build of `application` under `request`'s model.
pub async fn plan(
    cx: &PlanContext<'_>,
    application: &str,
    request: &PlanRequest,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PlanOutcome> {
    let app = cx
        .policy
        .admit_release_review(cx.actor, application, Action::PlanRelease, cx.origin)
        .await?;
    let result = plan_scope(cx.store, &PlanScope::of(&app), request, progress).await;
    match &result {
        Ok(p) => {
            cx.policy
                .record_release_review(
                    cx.actor,
                    application,
                    Action::PlanRelease,
                    serde_json::json!({
                        "k": p.privacy_model.k,
                        "m": p.privacy_model.m,
                        "max_suppression": p.privacy_model.max_suppression,
                        "tables": p.tables,
                        "patients": p.patients,
                        "suppressed_patients": p.suppressed_patients,
                        "release_loss": p.release_loss,
                    }),
                    cx.origin,
                )
                .await?;
        }
        Err(e) => {
            audit_failure(
                cx.policy,
                cx.actor,
                Action::PlanRelease.as_str(),
                application,
                cx.origin,
                e,
            )
            .await?
        }
    }
    result
}

/// The model to plan for: the approval's (or the defaults), with the request's values over it.
pub fn planned_model(approved: Option<PrivacyModel>, request: &PlanRequest) -> Result<PrivacyModel> {
    request.model_over(approved).map_err(ReleaseError::BadInput)
}

/// Plans a build of an admitted application's `scope` (as the policy service fixed it) under `request`'s model:
/// what the core runs for a `plan_release` order. Nothing is written.
pub async fn plan_scope(
    store: &Store,
    scope: &PlanScope,
    request: &PlanRequest,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PlanOutcome> {
    if scope.channel != Channel::File {
        return Err(ReleaseError::NotReleasable(format!(
            "application {} is for the {} channel; only file releases are planned",
            scope.application, scope.channel
        )));
    }
    // Before approval the applicant's cohort filter is text nobody has vetted (words or SQL): the scope carries
    // none, and the plan covers everyone in the research view.
    let (tables, cohort_filter, approved) = (scope.tables.clone(), scope.cohort_filter.clone(), scope.privacy);
    if approved.is_some_and(|p| p.l.is_some() || p.t.is_some()) {
        return Err(ReleaseError::NotReleasable(
            "l-diversity and t-closeness are not enforced by the release builder; a build of this approval would be \
             refused"
                .into(),
        ));
    }
    let model = planned_model(approved, request)?;
    let columns = release_scope(&tables)?;
    progress("reading the tables in scope from the core (research view)");
    let mut sheets: Vec<(Table, Sheet)> = read_scope(store, &columns, &cohort_filter, &PseudonymKey::fresh()).await?;
    let (
        Protected {
            anonymised,
            withheld,
            patients,
            top_coded_birth_dates,
            merged_patient_rows,
            extremes,
            items,
            count_caps,
            release_loss,
            ..
        },
        check,
    ) = protect_and_check(&mut sheets, &model, progress)?;
    let demographics = anonymised
        .get(&Table::Patients)
        .map(|a| {
            a.generalisation
                .iter()
                .zip(&a.max_levels)
                .map(|((column, level), max)| PlannedLevel {
                    column: column.clone(),
                    level: *level,
                    max_level: *max,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PlanOutcome {
        application: scope.application.clone(),
        approved: scope.approved,
        privacy_model: model,
        tables: sheets.iter().map(|(t, _)| t.name().to_owned()).collect(),
        cohort: match (scope.approved, cohort_filter.is_empty()) {
            (true, false) => "the approved cohort filter".into(),
            (true, true) => "everyone in the research view (the approval sets no filter)".into(),
            (false, _) => "everyone in the research view (the form's filter is not run before approval)".into(),
        },
        patients,
        suppressed_patients: withheld.len() as u64,
        top_coded_birth_dates,
        merged_patient_rows,
        demographics,
        items,
        extremes,
        count_caps,
        release_loss,
        check,
    })
}

/// The core's release work: what `tokumei core run` carries out for a `plan_release` order (the plan's
/// aggregates, reported) and for a `build_release` order (the core's half of the build, sealed to the release
/// zone's intake key and written to the outbox; the report pins it). The scope and model come in the order, fixed
/// and checked by the policy service.
#[derive(Debug, Clone)]
pub struct CorePlanner {
    /// The core's home (project pseudonym keys live under its `core/` directory).
    pub home: std::path::PathBuf,
    /// The release zone's intake key, 64 hex digits, if the core's configuration pins it: an order signed for
    /// another key is then refused. Without a pin the core seals to the key the policy service signed into the
    /// order (the one the zone published over its pinned certificate) — never to a file.
    pub intake_key: Option<String>,
    /// Where packages are written.
    pub outbox: std::path::PathBuf,
}

impl CorePlanner {
    /// The planner of a core at `home` with its `[core.orders]` settings.
    pub fn new(home: &Path, orders: &tokumei_platform::config::CoreOrdersConfig) -> CorePlanner {
        CorePlanner {
            home: home.to_path_buf(),
            intake_key: orders.release_key.clone(),
            outbox: orders
                .outbox
                .as_ref()
                .map(|p| tokumei_platform::config::resolve(home, p))
                .unwrap_or_else(|| crate::intake::default_outbox(home)),
        }
    }

    /// The key to seal order's package to: the order's, which must equal the pinned one if there is a pin.
    fn intake_key(&self, ordered: &str) -> std::result::Result<String, tokumei_store::StoreError> {
        let refused = |code: &str, message: &str| tokumei_store::StoreError::Declined {
            code: code.into(),
            message: message.into(),
        };
        let ordered = ordered.trim();
        if !tokumei_keys::sealed_result::is_recipient_key(ordered) {
            return Err(refused(
                "INTAKE_KEY_INVALID",
                "the order's intake key is not an X25519 public key",
            ));
        }
        match &self.intake_key {
            Some(pinned) if pinned.trim() != ordered => Err(refused(
                "INTAKE_KEY_MISMATCH",
                "the order names another intake key than the one pinned in [core.orders] release_key",
            )),
            _ => Ok(ordered.to_owned()),
        }
    }
}

fn declined(e: &ReleaseError) -> tokumei_store::StoreError {
    tokumei_store::StoreError::Declined {
        code: e.reason(),
        message: e.to_string(),
    }
}

fn unreadable(what: &str) -> tokumei_store::StoreError {
    tokumei_store::StoreError::Declined {
        code: "ORDER_UNREADABLE".into(),
        message: format!("the order's {what} is not readable"),
    }
}

impl tokumei_store::orders::Planner for CorePlanner {
    fn analyse<'a>(
        &'a self,
        store: &'a Store,
        keys: &'a dyn tokumei_keys::KeyService,
        asked: tokumei_store::orders::AnalysisOrder<'a>,
    ) -> tokumei_store::orders::PlanFuture<'a> {
        Box::pin(crate::workspace::analyse(&self.home, store, keys, asked))
    }

    fn plan<'a>(
        &'a self,
        store: &'a Store,
        scope: &'a serde_json::Value,
        params: &'a serde_json::Value,
    ) -> tokumei_store::orders::PlanFuture<'a> {
        Box::pin(async move {
            let scope: PlanScope = serde_json::from_value(scope.clone()).map_err(|_| unreadable("scope"))?;
            let params: PlanRequest = serde_json::from_value(params.clone()).map_err(|_| unreadable("model"))?;
            let outcome = plan_scope(store, &scope, &params, &|_| {})
                .await
                .map_err(|e| declined(&e))?;
            serde_json::to_value(outcome).map_err(|e| tokumei_store::StoreError::Orders(format!("plan report: {e}")))
        })
    }

    fn build<'a>(
        &'a self,
        store: &'a Store,
        keys: &'a dyn tokumei_keys::KeyService,
        order: u64,
        (scope, intake_key): (&'a serde_json::Value, &'a str),
    ) -> tokumei_store::orders::PlanFuture<'a> {
        Box::pin(async move {
            let scope: tokumei_policy::core_orders::BuildScope =
                serde_json::from_value(scope.clone()).map_err(|_| unreadable("scope"))?;
            // The key is checked before any data is read: a core that cannot seal reads nothing.
            let intake = self.intake_key(intake_key)?;
            // Before the research view is read: an opt-out or erasure the core notes after this time stops the
            // package's delivery (the policy service compares the two on the core's clock).
            let read_at_ms = chrono::Utc::now().timestamp_millis();
            let package = super::package::prepare(store, keys, &self.home, order, &scope, &|_| {})
                .await
                .map_err(|e| declined(&e))?;
            let reference =
                super::package::seal_to_outbox(&package, &intake, &self.outbox).map_err(|e| declined(&e))?;
            Ok(serde_json::json!({
                "package": reference.package,
                "package_sha256": reference.package_sha256,
                "package_bytes": reference.package_bytes,
                "patients": package.patients,
                "suppressed_patients": package.suppressed_patients,
                "tables": package.sheets.iter().map(|s| serde_json::json!({
                    "table": s.table,
                    "rows": s.columns.first().map_or(0, Vec::len),
                })).collect::<Vec<_>>(),
                "scope": scope,
                "read_at_ms": read_at_ms,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner(pinned: Option<&str>) -> CorePlanner {
        CorePlanner {
            home: std::path::PathBuf::from("/nonexistent"),
            intake_key: pinned.map(str::to_owned),
            outbox: std::path::PathBuf::from("/nonexistent/outbox"),
        }
    }

    fn code(e: tokumei_store::StoreError) -> String {
        match e {
            tokumei_store::StoreError::Declined { code, .. } => code,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn the_core_seals_to_the_ordered_key_and_a_pin_refuses_another() {
        let zone = tokumei_keys::sealed_result::RecipientKey::generate();
        let other = tokumei_keys::sealed_result::RecipientKey::generate();
        // No pin: the key the policy service signed into the order.
        assert_eq!(
            planner(None).intake_key(zone.public_hex()).expect("taken"),
            zone.public_hex()
        );
        // A pin: the same key passes, another is refused before any data is read.
        let pinned = planner(Some(zone.public_hex()));
        assert_eq!(pinned.intake_key(zone.public_hex()).expect("taken"), zone.public_hex());
        assert_eq!(
            code(pinned.intake_key(other.public_hex()).unwrap_err()),
            "INTAKE_KEY_MISMATCH"
        );
        // Not an X25519 key at all.
        assert_eq!(code(planner(None).intake_key("zz").unwrap_err()), "INTAKE_KEY_INVALID");
    }
}
