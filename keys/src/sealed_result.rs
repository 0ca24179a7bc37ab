//! Results sealed to the person who asked for them (HPKE, RFC 9180: X25519, HKDF-SHA-256, AES-256-GCM).
//!
//! An operator's SQL query runs in the core and its rows travel back through the policy service, whose database
//! keeps an order's result until it is read. The rows are pseudonymised patient data that the committee zone must
//! never hold, so the client makes a key pair for the one query, sends the public half with it, and the core seals
//! the rows to that key: the policy database, its backups and anyone reading the order see ciphertext only, and only
//! the process that asked (it never writes the private half anywhere) can open it.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

/// The HPKE `info` of every sealed result: binds the ciphertext to this use.
const INFO: &[u8] = b"tokumei/sealed-result/v1";

/// Why a result could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The recipient's public key is not 32 bytes of X25519.
    #[error("the recipient key is not an X25519 public key (64 hex digits)")]
    BadKey,
    /// The sealed bytes are too short or do not open under this key (tampered, or sealed to someone else).
    #[error("the sealed result does not open with this key")]
    DoesNotOpen,
    /// The encryption failed.
    #[error("the result could not be sealed")]
    Seal,
}

/// The private half of a one-use recipient key; zeroized on drop, never written anywhere.
pub struct RecipientKey {
    secret: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: String,
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl RecipientKey {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> RecipientKey {
        let ikm = Zeroizing::new(rand::random::<[u8; 32]>());
        let (secret, public) = X25519HkdfSha256::derive_keypair(ikm.as_slice());
        RecipientKey {
            secret,
            public: hex::encode(public.to_bytes()),
        }
    }

    /// The key pair derived from a 32-byte secret seed (RFC 9180 `DeriveKeyPair`): for a zone's long-lived key,
    /// whose seed is kept wrapped by the key service.
    pub fn from_seed(seed: &[u8; 32]) -> RecipientKey {
        let (secret, public) = X25519HkdfSha256::derive_keypair(seed);
        RecipientKey {
            secret,
            public: hex::encode(public.to_bytes()),
        }
    }

    /// The public half, 64 hex digits: what the request carries.
    pub fn public_hex(&self) -> &str {
        &self.public
    }

    /// Opens a result sealed to this key with `context` (the order it answers).
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        const ENC: usize = 32;
        if sealed.len() < ENC {
            return Err(SealError::DoesNotOpen);
        }
        let (enc, ct) = sealed.split_at(ENC);
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| SealError::DoesNotOpen)?;
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            INFO,
            ct,
            context,
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::DoesNotOpen)
    }
}

/// What a sealed result answering core order `id` is bound to: a result cannot be passed off as another order's.
pub fn order_context(id: u64) -> Vec<u8> {
    format!("core-order {id}").into_bytes()
}

/// Whether `hex_key` is an X25519 public key a result can be sealed to.
pub fn is_recipient_key(hex_key: &str) -> bool {
    recipient(hex_key).is_ok()
}

fn recipient(hex_key: &str) -> Result<<X25519HkdfSha256 as hpke::Kem>::PublicKey, SealError> {
    let bytes = hex::decode(hex_key).map_err(|_| SealError::BadKey)?;
    if bytes.len() != 32 {
        return Err(SealError::BadKey);
    }
    <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&bytes).map_err(|_| SealError::BadKey)
}

/// Seals `plaintext` to the recipient key `hex_key` (64 hex digits) for `context`: the encapsulated key (32 bytes)
/// followed by the ciphertext and its tag.
pub fn seal(hex_key: &str, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
    let public = recipient(hex_key)?;
    // rand's thread generator: a CSPRNG seeded from the operating system and reseeded periodically.
    let mut rng = rand::rng();
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &public,
        INFO,
        plaintext,
        context,
        &mut rng,
    )
    .map_err(|_| SealError::Seal)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_that_asked_opens_the_result_for_its_order() {
        let asker = RecipientKey::generate();
        let sealed = seal(asker.public_hex(), b"rows", b"order 7").expect("sealed");
        assert_eq!(asker.open(&sealed, b"order 7").expect("opens").as_slice(), b"rows");
        // Another key, another order's context, a flipped bit: nothing opens.
        let other = RecipientKey::generate();
        assert!(other.open(&sealed, b"order 7").is_err());
        assert!(asker.open(&sealed, b"order 8").is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(asker.open(&tampered, b"order 7").is_err());
        assert!(asker.open(&sealed[..20], b"order 7").is_err());
        // Two seals of the same rows differ (a fresh ephemeral key each time).
        assert_ne!(sealed, seal(asker.public_hex(), b"rows", b"order 7").expect("sealed"));
        assert!(!format!("{asker:?}").contains("secret"));
    }

    #[test]
    fn a_malformed_recipient_key_is_refused() {
        for bad in ["", "zz", &"ab".repeat(31), &"ab".repeat(33)] {
            assert!(!is_recipient_key(bad), "{bad}");
            assert!(matches!(seal(bad, b"x", b""), Err(SealError::BadKey)));
        }
        assert!(is_recipient_key(RecipientKey::generate().public_hex()));
    }
}
