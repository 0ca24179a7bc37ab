//! `tokumei release plan`: what a build of an application would generalise and suppress, and the attack the
//! result would face, computed on the real cohort before any file exists — so that the committee sets k and m
//! knowingly, and can try other values before approving.
//!
//! The plan runs the build's own protection ([`super::protect`]) and the copy check ([`super::record_check`])
//! on the scope of the approval (or, before approval, of the application form), and writes nothing: the
//! pseudonyms come from a fresh key that is dropped, no fingerprint is embedded, no release id is taken. Only
//! aggregate figures leave it (levels, counts, shares); it is authorised as [`Action::PlanRelease`] and
//! audited with those figures.

use chrono::Utc;
use serde::Serialize;
use tokumei_policy::authorization::Action;
use tokumei_policy::committee::conditions::DEFAULT_M;
use tokumei_policy::committee::store::ApplicationRecord;
use tokumei_policy::committee::{Channel, PrivacyModel, japan_date};
use tokumei_policy::{Actor, Origin, Policy};
use tokumei_store::{Store, Table};

use super::counts::CountCap;
use super::extremes::ExtremesReport;
use super::items::ItemsOutcome;
use super::protect::{self, Protected};
use super::record_check::{self, RecordCheck};
use super::{audit_failure, read_scope, release_scope};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;
use crate::pseudonym::PseudonymKey;

/// k when neither the approval nor the request sets one.
pub const DEFAULT_K: u32 = 5;
/// Largest share of records suppressed when neither the approval nor the request sets one.
pub const DEFAULT_MAX_SUPPRESSION: f64 = 0.05;

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

/// The privacy model to try, over the approval's (or, before approval, the defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanRequest {
    /// k to try.
    pub k: Option<u32>,
    /// m to try.
    pub m: Option<u32>,
    /// Largest suppressed share to try.
    pub max_suppression: Option<f64>,
    /// Weight of the demographics in the release loss to try.
    pub demographic_weight: Option<f64>,
}

/// A quasi-identifier of the patient file and the level the plan generalises it to.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedLevel {
    /// Column.
    pub column: String,
    /// Level chosen (0 = as recorded).
    pub level: u32,
    /// Top of its hierarchy.
    pub max_level: u32,
}

/// What a build would do.
#[derive(Debug, Clone, Serialize)]
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
    let result = plan_admitted(cx.store, &app, request, progress).await;
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
    let base = approved.unwrap_or(PrivacyModel {
        k: DEFAULT_K,
        l: None,
        t: None,
        max_suppression: DEFAULT_MAX_SUPPRESSION,
        m: DEFAULT_M,
        demographic_weight: None,
    });
    let model = PrivacyModel {
        k: request.k.unwrap_or(base.k),
        m: request.m.unwrap_or(base.m),
        max_suppression: request.max_suppression.unwrap_or(base.max_suppression),
        demographic_weight: request.demographic_weight.or(base.demographic_weight),
        ..base
    };
    model.validate().map_err(ReleaseError::BadInput)?;
    Ok(model)
}

async fn plan_admitted(
    store: &Store,
    app: &ApplicationRecord,
    request: &PlanRequest,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PlanOutcome> {
    let channel = app.conditions.as_ref().map_or(app.form.channel, |c| c.channel);
    if channel != Channel::File {
        return Err(ReleaseError::NotReleasable(format!(
            "application {} is for the {channel} channel; only file releases are planned",
            app.id
        )));
    }
    // Before approval the applicant's cohort filter is text nobody has vetted (words or SQL): it is not run,
    // and the plan covers everyone in the research view.
    let (tables, cohort_filter, approved) = match &app.conditions {
        Some(c) => (c.tables.clone(), c.cohort_filter.clone(), c.privacy),
        None => (app.form.tables.clone(), String::new(), None),
    };
    if approved.is_some_and(|p| p.l.is_some() || p.t.is_some()) {
        return Err(ReleaseError::NotReleasable(
            "l-diversity and t-closeness are not enforced by the release builder; a build of this approval would be \
             refused"
                .into(),
        ));
    }
    let model = planned_model(approved, request)?;
    let scope = release_scope(&tables)?;
    progress("reading the tables in scope from the core (research view)");
    let mut sheets: Vec<(Table, Sheet)> = read_scope(store, &scope, &cohort_filter, &PseudonymKey::fresh()).await?;
    let Protected {
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
    } = protect::protect(&mut sheets, &model, japan_date(Utc::now()), progress)?;
    let unmarked: Vec<(Table, &Sheet)> = sheets.iter().map(|(t, s)| (*t, s)).collect();
    let check = record_check::check(&unmarked, model.k, model.m as usize)?;
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
        application: app.id.clone(),
        approved: app.conditions.is_some(),
        privacy_model: model,
        tables: sheets.iter().map(|(t, _)| t.name().to_owned()).collect(),
        cohort: match (&app.conditions, cohort_filter.is_empty()) {
            (Some(_), false) => "the approved cohort filter".into(),
            (Some(_), true) => "everyone in the research view (the approval sets no filter)".into(),
            (None, _) => "everyone in the research view (the form's filter is not run before approval)".into(),
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
