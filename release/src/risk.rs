//! The re-identification attack measured on a release already built, from the files its recipients received
//! (`tokumei risk attack`): an inspector or a committee re-measures what the manifest claims, on the sealed
//! copies themselves, without trusting the build that wrote them.
//!
//! Every copy is read back (decrypted from the release zone), its CSV files parsed as the recipient gets them,
//! and the linkage adversary of [`crate::builder::record_check`] — the patient's released demographic row plus
//! m of their released event items — is run for every requested m, with the one-value adversary as
//! information. The counting is `deid::verify_km`'s, which shares no code with the engine that chose the
//! generalisation.

use serde::Serialize;
use tokumei_deid::verify_km::AttackFigure;
use tokumei_store::Table;

use crate::builder::record_check;
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;
use crate::manifest::{MANIFEST, Manifest};
use crate::zone::{ReleaseRecord, ReleaseZone};

/// Largest m the attack is measured for: the verifier enumerates every m-subset of a patient's items.
pub const MAX_M: usize = 4;

/// The attack on one recipient's copy.
#[derive(Debug, Clone, Serialize)]
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
    /// Whether the figures equal those the manifest of this copy records for the same m.
    pub agrees_with_manifest: bool,
}

/// The attack on every copy of a release.
#[derive(Debug, Clone, Serialize)]
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
    /// True when no copy leaves any patient with fewer than k candidates for any measured m ≤ the approved m.
    pub holds: bool,
}

/// Measures the attack on every copy of `record` for the adversaries `ms` (default 1 … m + 2, at most
/// [`MAX_M`]).
pub async fn measure(zone: &ReleaseZone, record: &ReleaseRecord, ms: Option<&[usize]>) -> Result<ReleaseRisk> {
    if let Some(bad) = ms.and_then(|ms| ms.iter().find(|&&m| m == 0 || m > MAX_M)) {
        return Err(ReleaseError::BadInput(format!(
            "m = {bad}: the attack is measured for 1 ≤ m ≤ {MAX_M}"
        )));
    }
    let mut copies = Vec::new();
    let (mut k, mut m) = (0, 0);
    for recipient in record.recipients() {
        let manifest: Manifest = serde_json::from_slice(&read_file(zone, record, &recipient, MANIFEST).await?)?;
        k = manifest.privacy_model.k;
        m = manifest.privacy_model.m as usize;
        let wanted: Vec<usize> = match ms {
            Some(ms) => ms.to_vec(),
            None => (1..=(m + 2).min(MAX_M)).collect(),
        };
        let mut sheets = Vec::new();
        for file in record.copies.get(&recipient).into_iter().flatten() {
            let Some(stem) = file.name.strip_suffix(".csv") else {
                continue;
            };
            let table = Table::from_name(stem).ok_or_else(|| {
                ReleaseError::VerificationFailed(format!("copy file {} names no platform table", file.name))
            })?;
            let bytes = read_file(zone, record, &recipient, &file.name).await?;
            sheets.push((table, parse_csv(&bytes, &file.name)?));
        }
        let refs: Vec<(Table, &Sheet)> = sheets.iter().map(|(t, s)| (*t, s)).collect();
        let (attack, one_value) = record_check::measure(&refs, k, &wanted)?;
        let recorded = manifest.record.as_ref().map(|r| &r.check.attack);
        let agrees_with_manifest = recorded.is_some_and(|recorded| {
            attack
                .iter()
                .all(|a| recorded.iter().find(|r| r.m == a.m).is_none_or(|r| r == a))
        });
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
        .all(|c| c.attack.iter().filter(|a| a.m <= m).all(|a| a.below_k == 0));
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
