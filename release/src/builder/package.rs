//! The core's half of a build and what it hands to the release zone.
//!
//! A build is split at the one point where the data is already safe to leave the core: after the approved scope
//! has been read through the research view, pseudonymised, anonymised and verified (k, k^m) by the independent
//! counter, and before any recipient's copy exists. [`prepare`] does the core's half (it runs in the core, as the
//! `build_release` order); the result, a [`BuildPackage`], is sealed to the release zone's intake key
//! ([`crate::intake`]) and written to the outbox; the zone's half ([`super::deliver`]) fingerprints, re-verifies,
//! signs and seals each recipient's copy. Neither zone holds the other's keys: the core never sees a fingerprint
//! key or the manifest key, the release zone never sees the store, its keys or a linkage key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokumei_deid::report::RiskReport;
use tokumei_keys::KeyService;
use tokumei_policy::committee::{Channel, PrivacyModel};
use tokumei_policy::core_orders::BuildScope;
use tokumei_store::{Store, Table};

use super::counts::CountCap;
use super::extremes::ExtremesReport;
use super::items::ItemsOutcome;
use super::protect::Protected;
use super::{protect_and_check, read_scope, release_scope};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;
use crate::intake;
use crate::pseudonym::PseudonymKey;
use crate::zone::PseudonymScope;

/// Format of [`BuildPackage`] (a zone refuses a package of another format).
pub const PACKAGE_FORMAT: u32 = 1;

/// One anonymised table, column-major as the fingerprint marks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackagedSheet {
    /// Table name.
    pub table: String,
    /// Column names.
    pub header: Vec<String>,
    /// One vector of cells per column.
    pub columns: Vec<Vec<String>>,
}

/// What the demographic anonymisation did to one table (what each copy's manifest reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableAnonymisation {
    /// Table name.
    pub table: String,
    /// Quasi-identifiers and the level applied.
    pub generalisation: Vec<(String, u32)>,
    /// Patients suppressed by this table's anonymisation.
    pub suppressed_patients: u64,
    /// Risk before and after.
    pub risk: Option<RiskReport>,
}

/// What protecting the whole record did (each copy's manifest carries it with its own re-verification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectionSummary {
    /// The item search's outcome.
    pub items: Option<ItemsOutcome>,
    /// Extreme values coded, per column.
    pub extremes: Vec<ExtremesReport>,
    /// Rows-per-patient counts capped, per event table.
    pub count_caps: Vec<CountCap>,
    /// Birth dates top-coded.
    pub top_coded_birth_dates: u64,
    /// Patient rows merged (one row per patient).
    pub merged_patient_rows: u64,
    /// Release loss of the chosen protection.
    pub release_loss: f64,
    /// Demographic nodes the whole-record search tried.
    pub demographic_candidates: usize,
}

/// The core's half of a build, verified, for the release zone: the tables and what protecting them did. Holds
/// release pseudonyms, never a linkage key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildPackage {
    /// [`PACKAGE_FORMAT`].
    pub format: u32,
    /// The order it answers (0 for a build run in one process).
    pub order: u64,
    /// The scope the policy service admitted.
    pub scope: BuildScope,
    /// Whose pseudonym key the tables carry.
    pub pseudonym_scope: PseudonymScope,
    /// The anonymised tables, patients first.
    pub sheets: Vec<PackagedSheet>,
    /// Per table: what the demographic anonymisation did.
    pub anonymisation: Vec<TableAnonymisation>,
    /// What protecting the whole record did.
    pub protection: ProtectionSummary,
    /// Patients in the cohort before suppression.
    pub patients: u64,
    /// Patients withheld by suppression.
    pub suppressed_patients: u64,
}

impl BuildPackage {
    /// The model the scope was admitted with (a package is built only under one).
    pub fn model(&self) -> Result<PrivacyModel> {
        self.scope
            .privacy
            .ok_or_else(|| ReleaseError::NotReleasable("the approval sets no privacy model".into()))
    }

    /// The tables as sheets, in the package's order (moved out of the package).
    pub(crate) fn take_sheets(&mut self) -> Result<Vec<(Table, Sheet)>> {
        std::mem::take(&mut self.sheets)
            .into_iter()
            .map(|s| {
                let table = Table::from_name(&s.table)
                    .filter(|t| t.is_clinical())
                    .ok_or_else(|| ReleaseError::BadInput(format!("the package holds an unknown table {}", s.table)))?;
                let sheet = Sheet::new(s.header, s.columns)
                    .map_err(|e| ReleaseError::BadInput(format!("the package's table {}: {e}", s.table)))?;
                Ok((table, sheet))
            })
            .collect()
    }

    /// What the anonymisation did to each table, by table.
    pub(crate) fn anonymisation_by_table(&self) -> BTreeMap<Table, TableAnonymisation> {
        self.anonymisation
            .iter()
            .filter_map(|a| Table::from_name(&a.table).map(|t| (t, a.clone())))
            .collect()
    }
}

/// The core's half of a build of `scope` for order `order`: reads the approved tables through the research view,
/// pseudonymises them (the project's key, wrapped under `core_home` by `keys`, when the approval links releases;
/// else a key of this build alone), protects and verifies them. Nothing is written.
pub async fn prepare(
    store: &Store,
    keys: &dyn KeyService,
    core_home: &Path,
    order: u64,
    scope: &BuildScope,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BuildPackage> {
    if scope.channel != Channel::File {
        return Err(ReleaseError::NotReleasable(format!(
            "approval {} is for the {} channel; files are built for the file channel only (statistics: `tokumei stats`)",
            scope.application, scope.channel
        )));
    }
    let model = scope
        .privacy
        .ok_or_else(|| ReleaseError::NotReleasable("the approval sets no privacy model".into()))?;
    if model.l.is_some() || model.t.is_some() {
        return Err(ReleaseError::NotReleasable(
            "l-diversity and t-closeness need a sensitive attribute in the patient file; this release builder \
             enforces k-anonymity with suppression on the demographics only"
                .into(),
        ));
    }
    let tables = release_scope(&scope.tables)?;
    let (key, pseudonym_scope) = if scope.link_releases {
        (
            PseudonymKey::for_project(core_home, keys, &scope.application).await?,
            PseudonymScope::Project,
        )
    } else {
        (PseudonymKey::fresh(), PseudonymScope::Recipient)
    };
    progress("reading the approved tables from the core (research view)");
    let mut sheets = read_scope(store, &tables, &scope.cohort_filter, &key).await?;
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
            demographic_candidates,
        },
        _verified,
    ) = protect_and_check(&mut sheets, &model, progress)?;
    Ok(BuildPackage {
        format: PACKAGE_FORMAT,
        order,
        scope: scope.clone(),
        pseudonym_scope,
        anonymisation: anonymised
            .iter()
            .map(|(t, a)| TableAnonymisation {
                table: t.name().to_owned(),
                generalisation: a.generalisation.clone(),
                suppressed_patients: a.withheld.len() as u64,
                risk: a.risk.clone(),
            })
            .collect(),
        sheets: sheets
            .into_iter()
            .map(|(t, s)| PackagedSheet {
                table: t.name().to_owned(),
                header: s.header,
                columns: s.columns,
            })
            .collect(),
        protection: ProtectionSummary {
            items,
            extremes,
            count_caps,
            top_coded_birth_dates,
            merged_patient_rows,
            release_loss,
            demographic_candidates,
        },
        patients,
        suppressed_patients: withheld.len() as u64,
    })
}

/// Where a sealed package was written, and what pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// File name in the outbox.
    pub package: String,
    /// SHA-256 of the sealed bytes, hex.
    pub package_sha256: String,
    /// Size of the sealed bytes.
    pub package_bytes: u64,
}

/// Seals `package` to the intake key `intake_public` (64 hex digits) for its order and writes it to `outbox`.
pub fn seal_to_outbox(package: &BuildPackage, intake_public: &str, outbox: &Path) -> Result<PackageRef> {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(package)?);
    let sealed =
        tokumei_keys::sealed_result::seal(intake_public.trim(), &plain, &intake::package_context(package.order))
            .map_err(|e| ReleaseError::Keys(format!("sealing the package to the release zone's intake key: {e}")))?;
    let name = intake::package_name(package.order);
    intake::write_atomically(&outbox.join(&name), &sealed)?;
    Ok(PackageRef {
        package: name,
        package_sha256: hex::encode(Sha256::digest(&sealed)),
        package_bytes: sealed.len() as u64,
    })
}

/// Reads order `order`'s package from `outbox`, checks it against the SHA-256 the policy service holds, opens it
/// with the zone's intake key and checks that it answers that order with that scope.
pub fn open_from_outbox(
    outbox: &Path,
    order: u64,
    expected_sha256: &str,
    scope: &BuildScope,
    intake_key: &tokumei_keys::sealed_result::RecipientKey,
) -> Result<BuildPackage> {
    let path = outbox.join(intake::package_name(order));
    let sealed = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReleaseError::NotFound(format!("the package of core order {order}")),
        _ => ReleaseError::io(format!("reading {}", path.display()), e),
    })?;
    if hex::encode(Sha256::digest(&sealed)) != expected_sha256 {
        return Err(ReleaseError::Integrity(format!(
            "the package of core order {order} is not the one the core reported"
        )));
    }
    let plain = intake_key
        .open(&sealed, &intake::package_context(order))
        .map_err(|_| ReleaseError::Integrity(format!("the package of core order {order} does not open")))?;
    let package: BuildPackage = serde_json::from_slice(&plain)?;
    if package.format != PACKAGE_FORMAT || package.order != order || &package.scope != scope {
        return Err(ReleaseError::Integrity(format!(
            "the package of core order {order} does not answer that order's scope"
        )));
    }
    // Exactly the scope's tables, each with the pseudonym and the scope's releasable columns: nothing the approval
    // did not name can ride in a package, whoever sealed it.
    let expected = release_scope(&scope.tables)?;
    let matches = package.sheets.len() == expected.len()
        && package.sheets.iter().zip(&expected).all(|(sheet, (table, columns))| {
            sheet.table == table.name()
                && sheet.header.first().map(String::as_str) == Some(crate::catalogue::PSEUDONYM)
                && sheet.header[1..] == columns[..]
        });
    if !matches {
        return Err(ReleaseError::Integrity(format!(
            "the package of core order {order} holds other tables or columns than its scope"
        )));
    }
    Ok(package)
}

/// Removes a delivered package from the outbox (a failure is logged: the package opens only in this zone).
pub fn remove_from_outbox(outbox: &Path, order: u64) {
    let path = outbox.join(intake::package_name(order));
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(order, error = %e, "a delivered package could not be removed from the outbox");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokumei_keys::sealed_result::RecipientKey;
    use tokumei_policy::committee::TableRequest;

    fn scope() -> BuildScope {
        BuildScope {
            application: "A-1".into(),
            approval_revision: 2,
            expires_on: chrono::NaiveDate::from_ymd_opt(2030, 1, 1).expect("date"),
            channel: Channel::File,
            tables: vec![TableRequest {
                table: "patients".into(),
                columns: vec!["linkage_key".into(), "sex".into()],
            }],
            recipients: vec!["rika".into()],
            cohort_filter: String::new(),
            privacy: None,
            link_releases: false,
        }
    }

    fn package(order: u64, header: &[&str]) -> BuildPackage {
        BuildPackage {
            format: PACKAGE_FORMAT,
            order,
            scope: scope(),
            pseudonym_scope: PseudonymScope::Recipient,
            sheets: vec![PackagedSheet {
                table: "patients".into(),
                header: header.iter().map(|h| (*h).to_owned()).collect(),
                columns: header.iter().map(|_| vec!["x".to_owned()]).collect(),
            }],
            anonymisation: vec![],
            protection: ProtectionSummary {
                items: None,
                extremes: vec![],
                count_caps: vec![],
                top_coded_birth_dates: 0,
                merged_patient_rows: 0,
                release_loss: 0.0,
                demographic_candidates: 0,
            },
            patients: 1,
            suppressed_patients: 0,
        }
    }

    #[test]
    fn a_package_opens_only_for_its_order_scope_and_columns() {
        let outbox = tempfile::tempdir().expect("outbox");
        let intake = RecipientKey::generate();
        let good = package(7, &["patient_pseudonym", "sex"]);
        let r = seal_to_outbox(&good, intake.public_hex(), outbox.path()).expect("sealed");
        assert_eq!(r.package, "build-7.sealed");
        let opened = open_from_outbox(outbox.path(), 7, &r.package_sha256, &scope(), &intake).expect("opens");
        assert_eq!(opened, good);
        // Another SHA-256 than the core reported, another scope, another zone's key: refused.
        let reason = |e: ReleaseError| e.reason();
        assert_eq!(
            reason(open_from_outbox(outbox.path(), 7, &"00".repeat(32), &scope(), &intake).unwrap_err()),
            "INTEGRITY"
        );
        let mut other_scope = scope();
        other_scope.recipients.push("yui".into());
        assert_eq!(
            reason(open_from_outbox(outbox.path(), 7, &r.package_sha256, &other_scope, &intake).unwrap_err()),
            "INTEGRITY"
        );
        let other_zone = RecipientKey::generate();
        assert_eq!(
            reason(open_from_outbox(outbox.path(), 7, &r.package_sha256, &scope(), &other_zone).unwrap_err()),
            "INTEGRITY"
        );
        // A package that claims the scope but carries a column the approval did not name (birth date), sealed to
        // the right key and pinned by its own SHA-256 (a compromised core): refused before anything is built.
        let wider = package(8, &["patient_pseudonym", "sex", "birth_date"]);
        let r = seal_to_outbox(&wider, intake.public_hex(), outbox.path()).expect("sealed");
        assert_eq!(
            reason(open_from_outbox(outbox.path(), 8, &r.package_sha256, &scope(), &intake).unwrap_err()),
            "INTEGRITY"
        );
        // Nothing in the outbox reads in clear.
        let bytes = std::fs::read(outbox.path().join("build-8.sealed")).expect("read");
        assert!(!bytes.windows(10).any(|w| w == b"birth_date"));
    }
}
