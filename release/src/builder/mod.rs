//! Building a release from an approval: admission → selection → pseudonyms → anonymisation → verification →
//! one fingerprinted, re-verified, signed copy per recipient → sealed into the release zone.
//!
//! Nothing is written to the zone before every check has passed for every recipient; the release's record is
//! written last, so an interrupted build leaves no release anyone can download.

pub mod anonymise;
pub mod counts;
pub mod extremes;
pub mod files;
pub mod items;
pub mod package;
pub mod plan;
pub mod protect;
pub mod record_check;
pub mod select;
pub mod verified;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokumei_policy::audit_ledger::{AuditEvent, Outcome};
use tokumei_policy::committee::{PrivacyModel, TableRequest};
use tokumei_policy::core_orders::BuildScope;
use tokumei_policy::{Actor, Origin, Policy, ServiceKey};
use tokumei_store::{Store, Table};

use crate::catalogue;
use crate::error::{ReleaseError, Result};
use crate::fingerprint::{self, FingerprintPlan, Sheet};
use crate::manifest::{self, Manifest, ManifestFile, RecordProtection, TableProtection};
use crate::pseudonym::PseudonymKey;
use crate::sealed_file;
use crate::zone::{CopyFile, PseudonymScope, ReleaseRecord, ReleaseZone};
use package::ProtectionSummary;
use verified::VerifiedCopy;

/// Largest share of a file's cells a fingerprint may change.
pub const MAX_MARKED_FRACTION: f64 = 0.01;

/// Everything a build needs: the policy service (admission, audit), the core store (read through the research
/// view only), the release zone it hands copies to, and the platform key that signs manifests.
pub struct BuildContext<'a> {
    /// The policy façade.
    pub policy: &'a Policy,
    /// The operator building.
    pub actor: &'a Actor,
    /// Where the request came from (for the audit ledger).
    pub origin: Origin<'a>,
    /// The core store.
    pub store: &'a Store,
    /// The release zone.
    pub zone: &'a ReleaseZone,
    /// The platform's signing key.
    pub service_key: &'a ServiceKey,
    /// `$TOKUMEI_HOME` (project pseudonym keys live under its core directory).
    pub home: &'a Path,
    /// The core's key service (wraps the project pseudonym keys the core's half reads with).
    pub core_keys: &'a dyn tokumei_keys::KeyService,
}

/// What a build produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildOutcome {
    /// The release as recorded in the zone.
    pub release: String,
    /// Approved application.
    pub application: String,
    /// Recipients holding a copy.
    pub recipients: Vec<String>,
    /// Per table protection (of the first recipient's copy; every copy is verified the same way).
    pub protection: Vec<TableProtection>,
    /// Patients in the cohort before suppression (0 without a patients table).
    pub patients: u64,
    /// Patients withheld by suppression.
    pub suppressed_patients: u64,
    /// The whole-record model as verified on the first recipient's copy, with the attack measured on it.
    pub record: Option<RecordProtection>,
    /// Files per copy.
    pub files: Vec<String>,
    /// Pseudonym scope.
    pub pseudonym_scope: PseudonymScope,
}

/// What to build: for whom and which part of the approved scope.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// Only these recipients (default: every recipient the approval names).
    pub recipients: Option<Vec<String>>,
    /// Only these tables and columns (default: everything approved); anything outside the approval is refused.
    pub tables: Option<Vec<TableRequest>>,
}

/// Builds a release of approval `application` in one process (the demo's and the benchmarks' path): the policy
/// façade admits it, [`package::prepare`] runs the core's half and [`deliver`] the release zone's. A deployed
/// platform runs the same two halves in their zones (`build_release` core order, `ReleaseService.CompleteBuild`).
pub async fn build(
    cx: &BuildContext<'_>,
    application: &str,
    request: &BuildRequest,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BuildOutcome> {
    let app = cx.policy.application(cx.actor, application, cx.origin).await?;
    let tables: Vec<TableRequest> = match &request.tables {
        Some(t) => t.clone(),
        None => app.conditions.as_ref().map(|c| c.tables.clone()).unwrap_or_default(),
    };
    let only = request.recipients.as_deref();
    let recipients: Vec<String> = match (only, &app.conditions) {
        (Some(names), _) => names.to_vec(),
        (None, Some(c)) => c.recipients.iter().cloned().collect(),
        (None, None) => Vec::new(),
    };
    // Refusals (not approved, revoked, expired, channel, tables, columns, recipients, bans) are audited here.
    let app = cx
        .policy
        .admit_build(cx.actor, application, &recipients, &tables, cx.origin)
        .await?;
    let result = async {
        let scope = BuildScope::of(&app, &tables, &recipients)?;
        let package = package::prepare(cx.store, cx.core_keys, cx.home, 0, &scope, progress).await?;
        let desk = DeliverContext {
            zone: cx.zone,
            service_key: cx.service_key,
            built_by: &cx.actor.username,
        };
        deliver(&desk, package, progress).await
    }
    .await;
    match &result {
        Ok(outcome) => {
            cx.policy
                .record_release(cx.actor, application, outcome.ledger_details(), cx.origin)
                .await?;
        }
        Err(e) => audit_failure(cx.policy, cx.actor, "release.build", application, cx.origin, e).await?,
    }
    result
}

impl BuildOutcome {
    /// What the ledger's `release.build` entry records: identifiers and counts.
    pub fn ledger_details(&self) -> serde_json::Value {
        serde_json::json!({
            "release": self.release,
            "recipients": self.recipients,
            "files": self.files,
            "patients": self.patients,
            "suppressed_patients": self.suppressed_patients,
        })
    }
}

/// Records in the audit ledger that an admitted release-zone act on `application` failed, with the error's
/// reason code (never its text, which may name a file or a column).
pub(crate) async fn audit_failure(
    policy: &Policy,
    actor: &Actor,
    action: &str,
    application: &str,
    origin: Origin<'_>,
    error: &ReleaseError,
) -> Result<()> {
    policy
        .audit(
            AuditEvent::new(
                &actor.username,
                action,
                format!("application {application}"),
                Outcome::Failed,
            )
            .reason(error.reason())
            .source(origin.0),
        )
        .await?;
    Ok(())
}

/// The tables and columns of a release, checked releasable before any data is read, patients first (its
/// suppression applies to every other table).
pub(crate) fn release_scope(tables: &[TableRequest]) -> Result<Vec<(Table, Vec<String>)>> {
    let mut scope = Vec::new();
    for t in tables {
        let table = Table::from_name(&t.table)
            .filter(|t| t.is_clinical())
            .ok_or_else(|| ReleaseError::NotReleasable(format!("unknown table {}", t.table)))?;
        scope.push((table, select::released_columns(table, &t.columns)?));
    }
    scope.sort_by_key(|(t, _)| *t);
    Ok(scope)
}

/// Reads the scope's tables for the cohort through the store's research view, pseudonymised with `key`.
/// Protects the sheets under `model` (as of today in Japan) and recounts the whole record with the independent
/// verifier: what the core's half of a build and a release plan both run before anything leaves the core.
pub(crate) fn protect_and_check(
    sheets: &mut Vec<(Table, Sheet)>,
    model: &PrivacyModel,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(protect::Protected, record_check::RecordCheck)> {
    let protected = protect::protect(
        sheets,
        model,
        tokumei_policy::committee::japan_date(Utc::now()),
        progress,
    )?;
    let unmarked: Vec<(Table, &Sheet)> = sheets.iter().map(|(t, s)| (*t, s)).collect();
    let check = record_check::check(&unmarked, model.k, model.m as usize)?;
    Ok((protected, check))
}

pub(crate) async fn read_scope(
    store: &Store,
    scope: &[(Table, Vec<String>)],
    cohort_filter: &str,
    key: &PseudonymKey,
) -> Result<Vec<(Table, Sheet)>> {
    let ctx = store.research_session().await?;
    let mut sheets = Vec::new();
    for (table, columns) in scope {
        let selected = select::read(&ctx, *table, columns, cohort_filter, key).await?;
        sheets.push((selected.table, selected.sheet));
    }
    if sheets.iter().all(|(_, s)| s.columns[0].is_empty()) {
        return Err(ReleaseError::NotReleasable(
            "the cohort is empty: nothing to release".into(),
        ));
    }
    Ok(sheets)
}

/// The release zone's part of a build: what it needs and holds — the zone (its key service wraps each release's
/// keys), the manifest key, and who is building. No store, no policy database.
pub struct DeliverContext<'a> {
    /// The release zone.
    pub zone: &'a ReleaseZone,
    /// The zone's manifest key.
    pub service_key: &'a ServiceKey,
    /// The operator building (recorded in the release's record).
    pub built_by: &'a str,
}

/// The release zone's half of a build: from the core's verified package, one fingerprinted, re-verified, signed
/// and sealed copy per recipient of the package's scope, then the release's record (written last).
pub async fn deliver(
    cx: &DeliverContext<'_>,
    mut package: package::BuildPackage,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BuildOutcome> {
    let model = package.model()?;
    let mut sheets = package.take_sheets()?;
    let anonymised = package.anonymisation_by_table();
    let scope = &package.scope;
    let recipients = &scope.recipients;
    let pseudonym_scope = package.pseudonym_scope;
    let ProtectionSummary {
        items: items_outcome,
        extremes: extremes_reports,
        count_caps,
        top_coded_birth_dates,
        merged_patient_rows,
        release_loss,
        demographic_candidates,
    } = package.protection.clone();
    let patients = package.patients;
    let suppressed_patients = package.suppressed_patients;
    let release = next_release_id(cx.zone, &scope.application)?;
    // Row order is the store's; each release gets its own (a key of this shuffle alone).
    let order_key = PseudonymKey::fresh();
    for (table, sheet) in &mut sheets {
        select::shuffle(sheet, &order_key, &format!("{release}/{}", table.name()));
    }
    let unmarked: Vec<(Table, &Sheet)> = sheets.iter().map(|(t, s)| (*t, s)).collect();
    record_check::check(&unmarked, model.k, model.m as usize)?;

    let (fingerprint_key, wrapped_fingerprint) = cx.zone.new_fingerprint_key(&release).await?;
    let mut plans = BTreeMap::new();
    for (table, sheet) in &sheets {
        let marked = catalogue::marked_columns(*table, &sheet.header);
        if !marked.is_empty() && !sheet.columns[0].is_empty() {
            let plan = fingerprint::plan(marked, sheet, MAX_MARKED_FRACTION);
            let plan = fingerprint::fit_plan(&fingerprint_key, &plan, sheet, MAX_MARKED_FRACTION)
                .map_err(|e| ReleaseError::VerificationFailed(format!("fingerprint plan for {}: {e}", table.name())))?;
            plans.insert(table.name().to_owned(), plan);
        }
    }
    let codebook: Vec<_> = sheets
        .iter()
        .map(|(t, s)| {
            let mut levels = anonymised.get(t).map(|a| a.generalisation.clone()).unwrap_or_default();
            if let Some(items) = items_outcome
                .as_ref()
                .and_then(|i| i.tables.iter().find(|x| x.table == t.name()))
            {
                levels.extend(items.levels.iter().cloned());
            }
            files::codebook(*t, s, &levels)
        })
        .collect();
    let codebook_bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "release": release,
        "application": scope.application,
        "pseudonyms": match pseudonym_scope {
            PseudonymScope::Release => "specific to this release: they join with no other release",
            PseudonymScope::Recipient => {
                "specific to this release and to this copy: they join with no other release and no other recipient's copy"
            }
            PseudonymScope::Project => "shared by this project's releases (the approval allows linking them)",
        },
        "tables": codebook,
    }))?;

    let (data_key, wrapped_data) = cx.zone.new_data_key(&release).await?;
    let mut copies = BTreeMap::new();
    let mut first_protection = Vec::new();
    let mut first_record = None;
    let built_at = Utc::now();
    for (n, recipient) in recipients.iter().enumerate() {
        progress(&format!(
            "copy {}/{} for {recipient}: fingerprint, re-verify, write, sign, seal",
            n + 1,
            recipients.len()
        ));
        let pseudonyms = (pseudonym_scope == PseudonymScope::Recipient)
            .then(|| fingerprint::RecipientPseudonyms::new(&fingerprint_key, recipient));
        let copy = make_copy(
            &sheets,
            &plans,
            &fingerprint_key,
            (recipient, pseudonyms.as_ref()),
            &model,
            &anonymised,
        )?;
        let record = RecordProtection {
            check: copy.record.clone(),
            items: items_outcome.clone(),
            extremes: extremes_reports.clone(),
            count_caps: count_caps.clone(),
            top_coded_birth_dates,
            merged_patient_rows,
            release_loss,
            demographic_candidates,
        };
        let mut contents: Vec<files::FileBytes> = copy.files;
        contents.push(("codebook.json".into(), codebook_bytes.clone(), None));
        let manifest = Manifest {
            format: 2,
            release: release.clone(),
            application: scope.application.clone(),
            approval_revision: scope.approval_revision,
            recipient: recipient.clone(),
            built_at,
            expires_on: scope.expires_on,
            privacy_model: model,
            protection: copy.protection.clone(),
            record: Some(record.clone()),
            pseudonym_scope,
            files: contents
                .iter()
                .map(|(name, bytes, rows)| ManifestFile::of(name, bytes, *rows))
                .collect(),
            signer_key_id: cx.service_key.public().key_id(),
        };
        let (manifest_bytes, signature) = manifest::sign(&manifest, cx.service_key)?;
        contents.push((manifest::MANIFEST.into(), manifest_bytes, None));
        contents.push((manifest::SIGNATURE.into(), signature, None));
        let dir = cx.zone.copy_dir(&release, recipient)?;
        std::fs::create_dir_all(&dir).map_err(|e| ReleaseError::io(format!("creating {}", dir.display()), e))?;
        let mut listed = Vec::new();
        for (name, bytes, _) in &contents {
            sealed_file::write(&data_key, bytes, &cx.zone.copy_path(&release, recipient, name)?)?;
            listed.push(CopyFile {
                name: name.clone(),
                sha256: manifest::sha256_hex(bytes),
                bytes: bytes.len() as u64,
            });
        }
        copies.insert(recipient.clone(), listed);
        if first_record.is_none() {
            first_record = Some(record);
        }
        if first_protection.is_empty() {
            first_protection = copy.protection;
        }
    }
    let record = ReleaseRecord {
        id: release.clone(),
        application: scope.application.clone(),
        approval_revision: scope.approval_revision,
        built_at,
        built_by: cx.built_by.to_owned(),
        expires_on: scope.expires_on,
        tables: scope.tables.clone(),
        copies,
        data_key: wrapped_data,
        fingerprint_key: wrapped_fingerprint,
        fingerprint: plans,
        pseudonym_scope,
    };
    cx.zone.commit(&record)?;
    Ok(BuildOutcome {
        release,
        application: scope.application.clone(),
        recipients: recipients.to_vec(),
        files: record
            .copies
            .values()
            .next()
            .map(|f| f.iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default(),
        protection: first_protection,
        record: first_record,
        patients,
        suppressed_patients,
        pseudonym_scope,
    })
}

struct Copy {
    files: Vec<files::FileBytes>,
    protection: Vec<TableProtection>,
    record: record_check::RecordCheck,
}

/// One recipient's copy: marks embedded, the privacy model re-verified on the marked data, files written.
fn make_copy(
    sheets: &[(Table, Sheet)],
    plans: &BTreeMap<String, FingerprintPlan>,
    key: &fingerprint::FingerprintKey,
    (recipient, pseudonyms): (&str, Option<&fingerprint::RecipientPseudonyms>),
    model: &PrivacyModel,
    anonymised: &BTreeMap<Table, package::TableAnonymisation>,
) -> Result<Copy> {
    let mut protection = Vec::new();
    let mut marked_sheets = Vec::new();
    let mut marks = Vec::new();
    for (table, sheet) in sheets {
        let mut marked = sheet.clone();
        // The pseudonym carrier: this copy's own pseudonyms (the first column of every file).
        let column = marked.index_of(fingerprint::PSEUDONYM_COLUMN);
        if let (Some(p), Some(column)) = (pseudonyms, column) {
            p.rewrite(&mut marked.columns[column]).map_err(|e| {
                ReleaseError::VerificationFailed(format!("recipient pseudonyms of {}: {e}", table.name()))
            })?;
        }
        let mut fraction = 0.0;
        let mut marked_columns = Vec::new();
        if let Some(plan) = plans.get(table.name()) {
            let report = fingerprint::embed(key, recipient, plan, &mut marked, MAX_MARKED_FRACTION)
                .map_err(|e| ReleaseError::VerificationFailed(format!("fingerprint: {e}")))?;
            fraction = report.marked as f64 / report.total_cells.max(1) as f64;
            if fraction > MAX_MARKED_FRACTION {
                return Err(ReleaseError::VerificationFailed(format!(
                    "fingerprint touched {:.3} % of {}'s cells, above {} %",
                    fraction * 100.0,
                    table.name(),
                    MAX_MARKED_FRACTION * 100.0
                )));
            }
            marked_columns = plan.columns.iter().map(|c| c.column.clone()).collect();
        }
        marks.push((a_of(anonymised, *table), marked_columns, fraction));
        marked_sheets.push((*table, marked));
    }
    // The whole copy, as written, verified by the independent counters — each file's demographic classes and the
    // whole record (marks live in measured values, which are not items, but the check is on what the recipient
    // receives). Only a verified copy can be written.
    let copy = VerifiedCopy::verify(marked_sheets, model)?;
    for (verified, (a, marked_columns, fraction)) in copy.tables().iter().zip(marks) {
        let (table, marked) = (verified.table(), verified.sheet());
        let rows = marked.columns[0].len() as u64;
        // The verifier counts a row whose quasi-identifiers are all `*` as suppressed (ARX's convention), so a
        // file generalised to the top node shows no class at all: it is one class of every patient in it.
        let (classes, min_class_size) = match verified.classes() {
            Some(v) if v.classes == 0 && rows > 0 => (1, distinct_patients(marked)),
            Some(v) => (v.classes, v.min_class_size),
            None => (0, 0),
        };
        protection.push(TableProtection {
            table: table.name().to_owned(),
            generalisation: a.map(|a| a.generalisation.clone()).unwrap_or_default(),
            rows,
            suppressed_patients: a.map_or(0, |a| a.suppressed_patients),
            classes,
            min_class_size,
            risk: a.and_then(|a| a.risk.clone()),
            marked_columns,
            marked_cell_fraction: fraction,
        });
    }
    Ok(Copy {
        files: files::copy_files(&copy)?,
        protection,
        record: copy.record().clone(),
    })
}

fn a_of(
    anonymised: &BTreeMap<Table, package::TableAnonymisation>,
    table: Table,
) -> Option<&package::TableAnonymisation> {
    anonymised.get(&table)
}

/// Distinct pseudonyms of a sheet (its first column).
fn distinct_patients(sheet: &Sheet) -> u64 {
    sheet.columns[0].iter().collect::<std::collections::HashSet<_>>().len() as u64
}

/// The next free release identifier of an application (`R-<application>-<n>`).
fn next_release_id(zone: &ReleaseZone, application: &str) -> Result<String> {
    let mut n = 1u64;
    loop {
        let id = format!("R-{application}-{n}");
        let dir = zone.release_dir(&id)?;
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| ReleaseError::io(format!("creating release {id}"), e))?;
            return Ok(id);
        }
        n += 1;
    }
}
