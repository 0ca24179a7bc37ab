//! The re-identification attack measured on a release already built, from the files its recipients received
//! (`tokumei risk attack`): an inspector or a committee re-measures what the manifest claims, on the sealed
//! copies themselves, without trusting the build that wrote them.
//!
//! Every copy is read back (decrypted from the release zone), its CSV files parsed as the recipient gets them,
//! and the linkage adversary of [`crate::builder::record_check`] — the patient's released demographic row plus
//! m of their released event items — is run for every requested m, with the one-value adversary as
//! information; k and m come from the approval, and every copy's manifest must be signed by the release zone's
//! manifest key and list the files read with their SHA-256. The counting is `deid::verify_km`'s, which shares no
//! code with the engine that chose the generalisation.
//!
//! It runs in the release zone (`ReleaseService.AssessRisk`), which holds the sealed copies' keys; the policy
//! service admits each measurement and records its figures.

use serde::{Deserialize, Serialize};
use tokumei_deid::verify_km::AttackFigure;
use tokumei_policy::ServicePublicKey;
use tokumei_store::Table;

use crate::builder::record_check;
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;
use crate::manifest::{self, MANIFEST, SIGNATURE};
use crate::zone::{ReleaseRecord, ReleaseZone};

/// Largest m the attack is measured for: the verifier enumerates every m-subset of a patient's items.
pub const MAX_M: usize = 4;

/// The attack on one recipient's copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRisk {
    /// The recipient holding the copy.
    pub recipient: String,
    /// Tables the copy releases.
    pub tables: Vec<String>,
    /// Patients in the copy.
    pub patients: u64,
    /// One figure per adversary (m items known).
    pub attack: Vec<AttackFigure>,
    /// The one-value adversary (one event with its measured value as released), as information.
    pub one_value: Option<AttackFigure>,
    /// Whether the copy's signed manifest states a figure for every promised m and every figure it states
    /// equals the one measured here.
    pub agrees_with_manifest: bool,
}

/// The attack on every copy of a release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRisk {
    /// The release.
    pub release: String,
    /// Its application.
    pub application: String,
    /// k of the approval.
    pub k: u32,
    /// m of the approval: adversaries up to this m are promised nothing below k.
    pub m: usize,
    /// Every copy.
    pub copies: Vec<CopyRisk>,
    /// True when, on every copy, every promised m (1 … m) was measured and leaves no patient below k.
    pub holds: bool,
}

/// Checks the adversary strengths asked beyond the promise (1 ≤ m ≤ [`MAX_M`]), before anything is asked or read.
pub fn check_extra(extra: &[usize]) -> Result<()> {
    match extra.iter().find(|&&m| m == 0 || m > MAX_M) {
        Some(bad) => Err(ReleaseError::BadInput(format!(
            "m = {bad}: the attack is measured for 1 ≤ m ≤ {MAX_M}"
        ))),
        None => Ok(()),
    }
}

/// What the audit ledger keeps of a measurement: counts per copy, never a cell.
pub fn ledger_details(r: &ReleaseRisk) -> serde_json::Value {
    serde_json::json!({
        "release": r.release,
        "k": r.k,
        "m": r.m,
        "holds": r.holds,
        "copies": r.copies.iter().map(|c| serde_json::json!({
            "recipient": c.recipient,
            "patients": c.patients,
            "attack": c.attack,
            "agrees_with_manifest": c.agrees_with_manifest,
        })).collect::<Vec<_>>(),
    })
}

/// Measures the attack on every copy of an admitted release: `promise` is the approval's (k, m) as the policy
/// service returned it (`None`: the approval sets no privacy model), and each copy's manifest must be signed by
/// the trusted key, state the same model, and list every file read with its SHA-256. The adversaries are 1 … m
/// (always: the promise) plus `extra` (default: up to m + 2, at most [`MAX_M`]).
pub async fn measure(
    zone: &ReleaseZone,
    record: &ReleaseRecord,
    promise: Option<(u32, u32)>,
    extra: &[usize],
    trusted: &[ServicePublicKey],
) -> Result<ReleaseRisk> {
    check_extra(extra)?;
    let (k, m) = promise.ok_or_else(|| ReleaseError::NotReleasable("the approval sets no privacy model".into()))?;
    let m = m as usize;
    let mut ms: Vec<usize> = (1..=m).collect();
    if extra.is_empty() {
        ms.extend(m + 1..=(m + 2).min(MAX_M));
    } else {
        ms.extend_from_slice(extra);
    }
    ms.sort_unstable();
    ms.dedup();
    if record.copies.is_empty() {
        return Err(ReleaseError::VerificationFailed(format!(
            "release {} holds no copy to measure",
            record.id
        )));
    }
    let mut copies = Vec::new();
    for recipient in record.recipients() {
        let (manifest, _) = manifest::verify_signed(
            &read_file(zone, record, &recipient, MANIFEST).await?,
            &read_file(zone, record, &recipient, SIGNATURE).await?,
            Some(trusted),
        )?;
        if manifest.privacy_model.k != k || manifest.privacy_model.m as usize != m {
            return Err(ReleaseError::VerificationFailed(format!(
                "the manifest of {recipient}'s copy states k={}, m={}; the approval says k={k}, m={m}",
                manifest.privacy_model.k, manifest.privacy_model.m
            )));
        }
        let mut sheets = Vec::new();
        for file in record.copies.get(&recipient).into_iter().flatten() {
            let Some(stem) = file.name.strip_suffix(".csv") else {
                continue;
            };
            let table = Table::from_name(stem).ok_or_else(|| {
                ReleaseError::VerificationFailed(format!("copy file {} names no platform table", file.name))
            })?;
            let bytes = read_file(zone, record, &recipient, &file.name).await?;
            let listed = manifest.files.iter().find(|f| f.name == file.name);
            if listed.is_none_or(|f| f.bytes != bytes.len() as u64 || f.sha256 != manifest::sha256_hex(&bytes)) {
                return Err(ReleaseError::Integrity(format!(
                    "{}: content differs from the signed manifest (SHA-256 or size)",
                    file.name
                )));
            }
            sheets.push((table, parse_csv(&bytes, &file.name)?));
        }
        let refs: Vec<(Table, &Sheet)> = sheets.iter().map(|(t, s)| (*t, s)).collect();
        let (attack, one_value) = record_check::measure(&refs, k, &ms)?;
        let recorded = manifest
            .record
            .as_ref()
            .map(|r| r.check.attack.as_slice())
            .unwrap_or_default();
        let stated = |m: usize| recorded.iter().find(|r| r.m == m);
        // Counts, not the derived shares: a share read back from the manifest's JSON may differ in its last
        // bit from the one computed here (serde_json's default float parsing is not round-trip exact).
        let same = |a: &AttackFigure, r: &AttackFigure| {
            (a.m, a.patients, a.below_k, a.unique) == (r.m, r.patients, r.below_k, r.unique)
        };
        let agrees_with_manifest =
            (1..=m).all(|p| stated(p).is_some()) && attack.iter().all(|a| stated(a.m).is_none_or(|r| same(a, r)));
        if !agrees_with_manifest {
            tracing::warn!(
                recipient = %recipient,
                measured = ?attack,
                stated = ?recorded,
                "the attack measured on a copy differs from its signed manifest"
            );
        }
        copies.push(CopyRisk {
            recipient,
            tables: sheets.iter().map(|(t, _)| t.name().to_owned()).collect(),
            patients: attack.first().map_or(0, |a| a.patients),
            attack,
            one_value,
            agrees_with_manifest,
        });
    }
    let holds = copies
        .iter()
        .all(|c| (1..=m).all(|p| c.attack.iter().find(|a| a.m == p).is_some_and(|a| a.below_k == 0)));
    Ok(ReleaseRisk {
        release: record.id.clone(),
        application: record.application.clone(),
        k,
        m,
        copies,
        holds,
    })
}

async fn read_file(zone: &ReleaseZone, record: &ReleaseRecord, recipient: &str, name: &str) -> Result<Vec<u8>> {
    let mut file = zone.open_copy_file(record, recipient, name).await?;
    file.read_all()
}

/// A released CSV file as text cells; the first column is the pseudonym, as written.
fn parse_csv(bytes: &[u8], name: &str) -> Result<Sheet> {
    let bad = |e: csv::Error| ReleaseError::VerificationFailed(format!("copy file {name} is not valid CSV: {e}"));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header: Vec<String> = reader.headers().map_err(bad)?.iter().map(str::to_owned).collect();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for row in reader.records() {
        let row = row.map_err(bad)?;
        for (c, cell) in row.iter().enumerate() {
            columns[c].push(cell.to_owned());
        }
    }
    Sheet::new(header, columns).map_err(|e| ReleaseError::VerificationFailed(format!("copy file {name}: {e}")))
}
