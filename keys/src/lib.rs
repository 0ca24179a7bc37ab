//! Keyed pseudonyms: the `KeyService` computes HMAC-SHA-256 under named keys that the gateway never sees in
//! clear when OpenBao is configured ([`openbao::OpenBaoTransit`]), or that live encrypted at rest in a local
//! keyring file for the embedded default ([`local::LocalKeyring`]).
//!
//! Both backends must give the same answer for the same key material and input across restarts: the linkage
//! key of a patient is only useful if it is stable.
//!
//! The key service also holds the key-encryption key (KEK) for envelope encryption of the store: each store's
//! random data keys are kept on disk only as [`WrappedKey`]s, bound to a caller-chosen context (the store's
//! identity) so that one store's wrapped key cannot be passed off as another's. Rotating the KEK re-wraps data
//! keys ([`KeyService::rewrap_key`]) without touching the data they encrypt.

pub mod configured;
pub mod local;
pub mod openbao;
pub mod pki;
pub mod sealed_result;

use async_trait::async_trait;
/// Re-exported because [`KeyService::unwrap_key`] returns it: callers need not depend on `zeroize` to hold a data
/// key that is wiped on drop.
pub use configured::open_configured;
use std::sync::Arc;
pub use zeroize::Zeroizing;

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
    /// A wrapped data key was refused: wrong context, unknown KEK version, another keyring or transit key, or a
    /// tampered ciphertext. Distinct from [`KeyError::Remote`] so callers can tell "this key is not yours or was
    /// altered" from "the key service is unavailable".
    #[error("wrapped data key refused: {0}")]
    Unwrap(String),
    /// A wrapped data key was produced by a different kind of key service than the one configured (for example
    /// a store wrapped under the local keyring opened with OpenBao configured).
    #[error("wrapped data key belongs to the {found:?} key service, but the {expected} key service is configured")]
    WrongBackend {
        /// The configured backend.
        expected: &'static str,
        /// The backend named in the wrapped key.
        found: String,
    },
}

/// Which zone a key service works for: it decides the key-encryption key new wraps go under, so that each zone's
/// OpenBao token can be limited to its own KEK (`infra/openbao/*.hcl`): the gateway seals its spool, the core its
/// store, the release zone its releases. A key wrapped under one zone's KEK unwraps only for a token allowed to
/// decrypt with it — the release zone's token cannot unwrap a store key, the gateway's cannot decrypt the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyZone {
    /// The ingest gateway: HMACs for pseudonyms, and the spool's sealing key.
    Gateway,
    /// The isolated core: the store's data keys.
    Core,
    /// The release zone: the keys sealing releases and drawing fingerprints.
    Release,
}

impl KeyZone {
    /// The zone's name, as its local keyring's file is named.
    pub fn name(self) -> &'static str {
        match self {
            KeyZone::Gateway => "gateway",
            KeyZone::Core => "core",
            KeyZone::Release => "release",
        }
    }

    /// The zone's KEK name (after the configured prefix).
    pub fn kek_name(self) -> &'static str {
        match self {
            KeyZone::Gateway => "gateway-kek",
            KeyZone::Core => openbao::STORE_KEK_NAME,
            KeyZone::Release => "release-kek",
        }
    }
}

/// A data key: 256 bits of AES key material, generated by the store and only ever persisted wrapped.
pub type DataKey = [u8; 32];

/// A data key wrapped by the key service's key-encryption key; safe to store next to the data.
///
/// Only the key service that wrapped it can unwrap it, and only under the same context.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// Which kind of key service wrapped it ([`BACKEND_LOCAL`] or [`BACKEND_OPENBAO`]), so that a store opened
    /// with the wrong backend fails with a clear error rather than an authentication failure.
    pub backend: String,
    /// The KEK version it is wrapped under, so operators can see which stores still need a rewrap after a
    /// rotation.
    pub kek_version: u32,
    /// Opaque, backend-specific ciphertext (base64 of nonce and AES-GCM output locally, `vault:vN:...` for
    /// OpenBao).
    pub ciphertext: String,
    /// The KEK it is wrapped under ([`KeyZone::kek_name`]; OpenBao only). Empty for keys wrapped before zones had
    /// KEKs of their own, which are under the store KEK.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kek: String,
}

/// [`WrappedKey::backend`] of keys wrapped by [`local::LocalKeyring`].
pub const BACKEND_LOCAL: &str = "local";
/// [`WrappedKey::backend`] of keys wrapped by [`openbao::OpenBaoTransit`].
pub const BACKEND_OPENBAO: &str = "openbao";

impl WrappedKey {
    /// Refuses a key wrapped by another kind of key service before any cryptography is attempted.
    fn check_backend(&self, expected: &'static str) -> Result<(), KeyError> {
        if self.backend == expected {
            Ok(())
        } else {
            Err(KeyError::WrongBackend {
                expected,
                found: self.backend.chars().take(32).collect(),
            })
        }
    }
}

/// Computes keyed digests. Implementations batch: one call per purpose per incoming batch.
#[async_trait]
pub trait KeyService: Send + Sync {
    /// HMAC-SHA-256 of every input under the key for `purpose`, in input order.
    async fn hmac(&self, purpose: KeyPurpose, inputs: &[&[u8]]) -> Result<Vec<Digest>, KeyError>;

    /// Wraps a data key under the newest KEK version, bound to `context` (the owning store's identity), so the
    /// data key can be stored next to the data it encrypts. Creates the KEK on first use.
    async fn wrap_key(&self, context: &str, key: &DataKey) -> Result<WrappedKey, KeyError>;

    /// Recovers a data key wrapped by [`KeyService::wrap_key`] under any KEK version still held. Fails with
    /// [`KeyError::Unwrap`] for another context, a tampered ciphertext or an unknown KEK version, and with
    /// [`KeyError::WrongBackend`] for a key wrapped by the other kind of key service.
    async fn unwrap_key(&self, context: &str, wrapped: &WrappedKey) -> Result<zeroize::Zeroizing<DataKey>, KeyError>;

    /// Re-encrypts under the newest KEK version without exposing the key to the caller, after
    /// [`KeyService::rotate_kek`]; the context must match, as for [`KeyService::unwrap_key`]. The data key
    /// itself is unchanged, so no data needs re-encrypting.
    async fn rewrap_key(&self, context: &str, wrapped: &WrappedKey) -> Result<WrappedKey, KeyError>;

    /// Creates a new KEK version (creating the KEK first if needed) and returns its number; older versions still
    /// unwrap, so existing stores keep working until they are rewrapped.
    async fn rotate_kek(&self) -> Result<u32, KeyError>;

    /// A short description of the backend for logs and `status` output (never key material).
    fn describe(&self) -> String;
}

/// A shared handle to whichever backend the configuration selected.
pub type SharedKeyService = Arc<dyn KeyService>;
