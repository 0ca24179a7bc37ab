//! Keyed pseudonyms: the `KeyService` computes HMAC-SHA-256 under named keys that the gateway never sees in
//! clear when OpenBao is configured ([`openbao::OpenBaoTransit`]), or that live encrypted at rest in a local
//! keyring file for the embedded default ([`local::LocalKeyring`]).
//!
//! Both backends must give the same answer for the same key material and input across restarts: the linkage
//! key of a patient is only useful if it is stable.

pub mod local;
pub mod openbao;

use async_trait::async_trait;
use std::sync::Arc;

/// A 32-byte HMAC-SHA-256 output.
pub type Digest = [u8; 32];

/// What a key is for. One key per purpose, so a leaked hospital pseudonym key does not expose linkage keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPurpose {
    /// `linkage_key`: joins a patient's records across hospitals.
    Linkage,
    /// Per-hospital patient pseudonym over (hospital code, local patient id).
    HospitalPseudonym,
    /// Keyed digest of a batch's content, to detect reuse of a batch id without storing the batch.
    BatchDigest,
}

impl KeyPurpose {
    /// Every purpose, for key creation.
    pub const ALL: [KeyPurpose; 3] = [
        KeyPurpose::Linkage,
        KeyPurpose::HospitalPseudonym,
        KeyPurpose::BatchDigest,
    ];

    /// The key's name in the keyring or in OpenBao (after the configured prefix).
    pub fn key_name(self) -> &'static str {
        match self {
            KeyPurpose::Linkage => "linkage",
            KeyPurpose::HospitalPseudonym => "hospital-pseudonym",
            KeyPurpose::BatchDigest => "batch-digest",
        }
    }
}

/// Why a key operation failed. Messages never include inputs.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The keyring file could not be read or written.
    #[error("keyring file {path}: {source}")]
    Io {
        /// The keyring path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The keyring could not be decrypted: wrong passphrase or a damaged file.
    #[error("keyring {path} cannot be decrypted (wrong passphrase or damaged file)")]
    Decrypt {
        /// The keyring path.
        path: String,
    },
    /// The keyring file is not in the expected format.
    #[error("keyring {path} is malformed: {detail}")]
    Format {
        /// The keyring path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// No passphrase was provided for the local keyring.
    #[error("no keyring passphrase: set TOKUMEI_KEYRING_PASSPHRASE or create {0}")]
    NoPassphrase(String),
    /// OpenBao/Vault refused or failed the request.
    #[error("OpenBao transit: {0}")]
    Remote(String),
    /// The key service returned something other than a 32-byte HMAC.
    #[error("key service returned a malformed HMAC")]
    Malformed,
}

/// Computes keyed digests. Implementations batch: one call per purpose per incoming batch.
#[async_trait]
pub trait KeyService: Send + Sync {
    /// HMAC-SHA-256 of every input under the key for `purpose`, in input order.
    async fn hmac(&self, purpose: KeyPurpose, inputs: &[&[u8]]) -> Result<Vec<Digest>, KeyError>;

    /// A short description of the backend for logs and `status` output (never key material).
    fn describe(&self) -> String;
}

/// A shared handle to whichever backend the configuration selected.
pub type SharedKeyService = Arc<dyn KeyService>;
