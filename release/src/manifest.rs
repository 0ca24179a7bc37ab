//! The signed manifest that travels with every copy: what the files are, how they were protected, for whom
//! and until when — checkable by anyone holding the platform's public key.
//!
//! `manifest.json` is signed as bytes (ed25519, purpose `tokumei/release/v1`); the signature and the signer's
//! public key are in `manifest.sig`. [`verify_dir`] recomputes every file's SHA-256 and checks the signature,
//! against a trusted public key when one is given.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokumei_deid::report::RiskReport;
use tokumei_policy::committee::PrivacyModel;
use tokumei_policy::{ServiceKey, ServicePublicKey, SignaturePurpose};

use crate::builder::counts::CountCap;
use crate::builder::extremes::ExtremesReport;
use crate::builder::items::ItemsOutcome;
use crate::builder::record_check::RecordCheck;
use crate::error::{ReleaseError, Result};
use crate::zone::PseudonymScope;

/// File name of the manifest.
pub const MANIFEST: &str = "manifest.json";

/// The release zone's manifest key (ed25519, purpose `tokumei/release/v1`; its public half beside it, `.pub`,
/// is what recipients and `tokumei release verify` trust). The zone's own key, not the committee's: whoever
/// signs manifests cannot sign a session, a ledger entry or a ban list, and the committee's keys cannot sign a
/// manifest.
pub fn manifest_key_path(home: &Path) -> std::path::PathBuf {
    home.join("release").join("manifest.key")
}
/// File name of its signature.
pub const SIGNATURE: &str = "manifest.sig";

/// One released file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name.
    pub name: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Data rows (tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// How one table was protected, as verified independently after fingerprinting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableProtection {
    /// Table name (file stem).
    pub table: String,
    /// Quasi-identifiers and the generalisation level applied to each (0 = as recorded).
    pub generalisation: Vec<(String, u32)>,
    /// Rows released.
    pub rows: u64,
    /// Patients whose rows were withheld by suppression.
    pub suppressed_patients: u64,
    /// Equivalence classes (0 when the table has no quasi-identifier).
    pub classes: u64,
    /// Smallest class, in distinct patients.
    pub min_class_size: u64,
    /// Re-identification risk before and after (tables with quasi-identifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskReport>,
    /// Columns that carry the recipient's fingerprint, and the share of cells marked.
    pub marked_columns: Vec<String>,
    /// Share of this file's cells selected to carry a mark (about half of them differ from the unmarked data).
    pub marked_cell_fraction: f64,
}

/// The privacy model of the whole copy — demographics and event items together — as verified on the files
/// written for this recipient, with what was generalised, suppressed and top-coded to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordProtection {
    /// (k, k^m) as recounted by the independent verifier, and the linkage attack measured on this copy.
    pub check: RecordCheck,
    /// What the item search chose (levels per item column, suppressed rare items, loss), when event tables
    /// are released.
    pub items: Option<ItemsOutcome>,
    /// Extreme measured values top- and bottom-coded, per column.
    pub extremes: Vec<ExtremesReport>,
    /// Rows-per-patient counts capped so every released count is shared by k patients, per event table.
    #[serde(default)]
    pub count_caps: Vec<CountCap>,
    /// Birth dates top-coded (patients aged 90 or more).
    pub top_coded_birth_dates: u64,
    /// Patient rows not released because the patient had another, more complete row (one row per patient).
    #[serde(default)]
    pub merged_patient_rows: u64,
    /// Release loss of the chosen protection: the mean over released tables of each table's information loss.
    #[serde(default)]
    pub release_loss: f64,
    /// Demographic nodes the whole-record search tried (the optimum and coarser ones).
    #[serde(default)]
    pub demographic_candidates: usize,
}

/// The manifest of one recipient's copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// Release identifier.
    pub release: String,
    /// Approved application.
    pub application: String,
    /// Approval revision the release was built under.
    pub approval_revision: i64,
    /// The recipient this copy is for (it carries their fingerprint).
    pub recipient: String,
    /// When it was built.
    pub built_at: DateTime<Utc>,
    /// Last day of use; the data must be deleted and the deletion declared after it.
    pub expires_on: NaiveDate,
    /// The approved privacy model.
    pub privacy_model: PrivacyModel,
    /// Per table: generalisation, classes, risk and marks, as verified.
    pub protection: Vec<TableProtection>,
    /// The model verified over the whole copy (format 2 on; absent from format-1 manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordProtection>,
    /// Whether pseudonyms are specific to this release or shared by the project's releases.
    pub pseudonym_scope: PseudonymScope,
    /// The data files (everything except the manifest and its signature).
    pub files: Vec<ManifestFile>,
    /// The signing key's identifier.
    pub signer_key_id: String,
}

/// The detached signature file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureFile {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, hex.
    pub public_key: String,
    /// The key identifier.
    pub key_id: String,
    /// Signature over the exact bytes of `manifest.json`, hex.
    pub signature: String,
}

/// A file's SHA-256, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ManifestFile {
    /// Describes a file's bytes.
    pub fn of(name: &str, bytes: &[u8], rows: Option<u64>) -> ManifestFile {
        ManifestFile {
            name: name.to_owned(),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
            rows,
        }
    }
}

/// Serialises and signs a manifest: returns the bytes of `manifest.json` and `manifest.sig`.
pub fn sign(manifest: &Manifest, key: &ServiceKey) -> Result<(Vec<u8>, Vec<u8>)> {
    let bytes = serde_json::to_vec_pretty(manifest)?;
    let public = key.public();
    let signature = SignatureFile {
        algorithm: "ed25519".into(),
        public_key: public.to_hex(),
        key_id: public.key_id(),
        signature: hex::encode(key.sign(SignaturePurpose::Release, &bytes)),
    };
    Ok((bytes, serde_json::to_vec_pretty(&signature)?))
}

/// Result of checking a copy on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The manifest read.
    pub manifest: Manifest,
    /// The key that signed it.
    pub key_id: String,
    /// Whether the signer is the key the caller trusts (false: only self-consistent).
    pub trusted_key: bool,
    /// Files checked.
    pub files_checked: usize,
}

/// Checks a manifest's bytes against its signature file (and, with `trusted`, that the signer is that key);
/// returns the manifest and the signer.
pub fn verify_signed(
    manifest: &[u8],
    signature_file: &[u8],
    trusted: Option<&[ServicePublicKey]>,
) -> Result<(Manifest, ServicePublicKey)> {
    let sig: SignatureFile =
        serde_json::from_slice(signature_file).map_err(|e| ReleaseError::Integrity(format!("{SIGNATURE}: {e}")))?;
    let public = ServicePublicKey::from_hex(&sig.public_key)
        .map_err(|e| ReleaseError::Integrity(format!("{SIGNATURE}: bad public key: {e}")))?;
    if let Some(keys) = trusted
        && !keys.iter().any(|t| t.to_hex() == public.to_hex())
    {
        return Err(ReleaseError::Integrity(format!(
            "signed by key {}, not by the trusted platform key (the release zone's manifest keys: {})",
            public.key_id(),
            keys.iter().map(ServicePublicKey::key_id).collect::<Vec<_>>().join(", ")
        )));
    }
    let signature = hex::decode(&sig.signature).map_err(|_| ReleaseError::Integrity("signature is not hex".into()))?;
    if !public.verify(SignaturePurpose::Release, manifest, &signature) {
        return Err(ReleaseError::Integrity(
            "the manifest's signature does not verify".into(),
        ));
    }
    Ok((serde_json::from_slice(manifest)?, public))
}

/// Checks the signature and every file's hash and size in `dir`. With `trusted`, the signer must be that key.
pub fn verify_dir(dir: &Path, trusted: Option<&[ServicePublicKey]>) -> Result<Verification> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| ReleaseError::io(format!("reading {}", dir.join(name).display()), e))
    };
    let (manifest, public) = verify_signed(&read(MANIFEST)?, &read(SIGNATURE)?, trusted)?;
    for f in &manifest.files {
        let data = read(&f.name)?;
        if data.len() as u64 != f.bytes || sha256_hex(&data) != f.sha256 {
            return Err(ReleaseError::Integrity(format!(
                "{}: content differs from the manifest (SHA-256 or size)",
                f.name
            )));
        }
    }
    Ok(Verification {
        files_checked: manifest.files.len(),
        key_id: public.key_id(),
        trusted_key: trusted.is_some(),
        manifest,
    })
}
