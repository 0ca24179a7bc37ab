//! The on-disk format of one encrypted object: a header, then fixed-size AES-256-GCM chunks.
//!
//! Chunking lets a reader decrypt any byte range (Parquet footers, column chunks) by fetching and opening only
//! the chunks that cover it, while every chunk stays authenticated:
//!
//! ```text
//! header (24 B) = magic "TKENC\x02\0\0" | data-key id (u32 LE) | salt (12 random bytes)
//! object key    = HKDF-SHA-256(data key, salt, "tokumei sealed object v2" | key id)
//! chunk i       = AES-256-GCM under the object key (plaintext[i*C .. (i+1)*C]) | tag (16 B)
//! nonce_i       = 0 (8 B) | i (u32 BE)            AAD_i = header | last-chunk flag (1 B)
//! ```
//!
//! Every object has a key of its own, derived from the long-lived data key and a 96-bit random salt, so a
//! (key, nonce) pair can only repeat if two objects drew the same salt (about 2^48 objects before that becomes
//! likely, against 2^32 for the first format's 64-bit random nonce prefix under the data key itself), and no
//! data key ever encrypts more than the HKDF calls. Objects of the first format (magic `TKENC\x01`: nonce =
//! 8-byte random prefix | i, chunks under the data key) are still opened; new objects are always of this one.
//!
//! The last-chunk flag in the AAD makes truncation at a chunk boundary detectable; the header in the AAD binds
//! every chunk to its key id and salt. The object path is deliberately *not* bound: Delta commits are
//! written and renamed, and a renamed object must still open. The plaintext length follows from the stored
//! length alone, so `head` and `list` can report it without reading the object.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use std::ops::Range;
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// AES-GCM tag length.
pub const TAG: u64 = 16;
/// Header length.
pub const HEADER: u64 = 24;
const MAGIC_V1: &[u8; 8] = b"TKENC\x01\0\0";
const MAGIC_V2: &[u8; 8] = b"TKENC\x02\0\0";
/// Context of the per-object key derivation (with the key id appended).
const KDF_INFO: &[u8] = b"tokumei sealed object v2";

/// The format of an object, from its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Chunks under the data key itself, nonce = 8-byte random prefix | chunk index (read only).
    V1,
    /// Chunks under a per-object key derived with HKDF from the data key and a 96-bit salt.
    V2,
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Not an object written by this format (or truncated inside the header).
    #[error("not a tokumei encrypted object (bad header)")]
    BadHeader,
    /// The stored length cannot be a header plus whole chunks.
    #[error("encrypted object has an impossible length {0}")]
    BadLength(u64),
    /// A chunk failed authentication: wrong key, tampering or truncation.
    #[error("encrypted chunk {0} failed authentication")]
    Tampered(u64),
    /// The object names a data key this store does not hold.
    #[error("encrypted object uses unknown data key {0}")]
    UnknownKey(u32),
    /// Encryption itself failed (only on absurd lengths).
    #[error("encryption failed")]
    Encrypt,
}

/// The parsed header of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The object's format.
    pub format: Format,
    /// Which data key sealed the object.
    pub key_id: u32,
    /// Random per object: the key derivation's salt (V2), or the nonce prefix in its first 8 bytes (V1).
    pub salt: [u8; 12],
}

impl Header {
    /// A header of the current format with a fresh random salt.
    pub fn fresh(key_id: u32) -> Header {
        Header {
            format: Format::V2,
            key_id,
            salt: rand::random(),
        }
    }

    /// Serialises the header.
    pub fn to_bytes(self) -> [u8; HEADER as usize] {
        let mut out = [0u8; HEADER as usize];
        out[..8].copy_from_slice(match self.format {
            Format::V1 => MAGIC_V1,
            Format::V2 => MAGIC_V2,
        });
        out[8..12].copy_from_slice(&self.key_id.to_le_bytes());
        out[12..24].copy_from_slice(&self.salt);
        out
    }

    /// Parses a header.
    pub fn parse(bytes: &[u8]) -> Result<Header, SealError> {
        if bytes.len() < HEADER as usize {
            return Err(SealError::BadHeader);
        }
        let format = match &bytes[..8] {
            m if m == MAGIC_V2 => Format::V2,
            m if m == MAGIC_V1 => Format::V1,
            _ => return Err(SealError::BadHeader),
        };
        let mut id = [0u8; 4];
        id.copy_from_slice(&bytes[8..12]);
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&bytes[12..24]);
        Ok(Header {
            format,
            key_id: u32::from_le_bytes(id),
            salt,
        })
    }
}

/// Number of chunks in an object whose stored length is `sealed_len`.
pub fn chunk_count(sealed_len: u64) -> Result<u64, SealError> {
    if sealed_len < HEADER + TAG {
        return Err(SealError::BadLength(sealed_len));
    }
    Ok((sealed_len - HEADER).div_ceil(CHUNK + TAG))
}

/// Plaintext length of an object whose stored length is `sealed_len`.
pub fn plain_len(sealed_len: u64) -> Result<u64, SealError> {
    let n = chunk_count(sealed_len)?;
    let body = sealed_len - HEADER;
    // Every chunk but the last is full; the last holds at least its tag.
    let last = body - (n - 1) * (CHUNK + TAG);
    if last < TAG {
        return Err(SealError::BadLength(sealed_len));
    }
    Ok(body - n * TAG)
}

/// Stored length of an object holding `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    let n = plain.div_ceil(CHUNK).max(1);
    HEADER + plain + n * TAG
}

/// Stored byte range holding chunks `chunks` of an object of stored length `total`.
pub fn sealed_range(chunks: Range<u64>, total: u64) -> Range<u64> {
    let start = HEADER + chunks.start * (CHUNK + TAG);
    let end = (HEADER + chunks.end * (CHUNK + TAG)).min(total);
    start..end
}

fn nonce(header: &Header, index: u64) -> Result<[u8; 12], SealError> {
    let index = u32::try_from(index).map_err(|_| SealError::Encrypt)?;
    let mut n = [0u8; 12];
    if header.format == Format::V1 {
        n[..8].copy_from_slice(&header.salt[..8]);
    }
    n[8..].copy_from_slice(&index.to_be_bytes());
    Ok(n)
}

fn aad(header: &Header, last: bool) -> [u8; HEADER as usize + 1] {
    let mut a = [0u8; HEADER as usize + 1];
    a[..HEADER as usize].copy_from_slice(&header.to_bytes());
    a[HEADER as usize] = u8::from(last);
    a
}

/// Seals chunk `index` of an object.
pub fn seal_chunk(
    cipher: &Aes256Gcm,
    header: &Header,
    index: u64,
    last: bool,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SealError> {
    let n = nonce(header, index)?;
    let a = aad(header, last);
    let ct = cipher
        .encrypt(Nonce::from_slice(&n), Payload { msg: plain, aad: &a })
        .map_err(|_| SealError::Encrypt)?;
    out.extend_from_slice(&ct);
    Ok(())
}

/// Seals a whole object in memory.
pub fn seal(cipher: &Aes256Gcm, header: Header, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    out.extend_from_slice(&header.to_bytes());
    let n = (plain.len() as u64).div_ceil(CHUNK).max(1);
    for i in 0..n {
        let start = (i * CHUNK) as usize;
        let end = ((i + 1) * CHUNK).min(plain.len() as u64) as usize;
        seal_chunk(cipher, &header, i, i + 1 == n, &plain[start..end], &mut out)?;
    }
    Ok(out)
}

/// Opens consecutive chunks starting at `first` from their stored bytes; `total_chunks` identifies the last.
pub fn open_chunks(
    cipher: &Aes256Gcm,
    header: &Header,
    first: u64,
    total_chunks: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(sealed.len());
    for (index, chunk) in (first..).zip(sealed.chunks((CHUNK + TAG) as usize)) {
        if (chunk.len() as u64) < TAG {
            return Err(SealError::Tampered(index));
        }
        let n = nonce(header, index)?;
        let a = aad(header, index + 1 == total_chunks);
        let plain = cipher
            .decrypt(Nonce::from_slice(&n), Payload { msg: chunk, aad: &a })
            .map_err(|_| SealError::Tampered(index))?;
        out.extend_from_slice(&plain);
    }
    Ok(out)
}

/// The cipher that seals or opens the object with `header`, from the data key the header names: the
/// per-object key derived from `data_key` and the header's salt (V2), or the data key itself (V1 objects).
pub fn object_cipher(data_key: &[u8; 32], header: &Header) -> Aes256Gcm {
    match header.format {
        Format::V1 => Aes256Gcm::new(data_key.into()),
        Format::V2 => {
            let mut info = KDF_INFO.to_vec();
            info.extend_from_slice(&header.key_id.to_le_bytes());
            let mut key = Zeroizing::new([0u8; 32]);
            // 32 bytes are far below HKDF-SHA-256's 8,160-byte limit: expand cannot fail.
            let expanded = Hkdf::<Sha256>::new(Some(&header.salt), data_key).expand(&info, &mut key[..]);
            debug_assert!(expanded.is_ok());
            Aes256Gcm::new((&*key).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA_KEY: [u8; 32] = [7u8; 32];

    fn key(h: &Header) -> Aes256Gcm {
        object_cipher(&DATA_KEY, h)
    }

    #[test]
    fn lengths_round_trip_for_every_interesting_size() {
        for plain in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let h = Header::fresh(1);
            let sealed = seal(&key(&h), h, &vec![9u8; plain as usize]).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(plain));
            assert_eq!(plain_len(sealed.len() as u64).unwrap(), plain, "plain {plain}");
        }
    }

    #[test]
    fn whole_and_partial_opening() {
        let data: Vec<u8> = (0..(3 * CHUNK + 100)).map(|i| (i % 251) as u8).collect();
        let h = Header::fresh(3);
        let sealed = seal(&key(&h), h, &data).unwrap();
        let parsed = Header::parse(&sealed).unwrap();
        assert_eq!(parsed, h);
        let total = chunk_count(sealed.len() as u64).unwrap();
        assert_eq!(total, 4);
        let r = sealed_range(1..3, sealed.len() as u64);
        let plain = open_chunks(
            &key(&parsed),
            &parsed,
            1,
            total,
            &sealed[r.start as usize..r.end as usize],
        )
        .unwrap();
        assert_eq!(plain, &data[CHUNK as usize..3 * CHUNK as usize]);
        let r = sealed_range(0..total, sealed.len() as u64);
        let all = open_chunks(
            &key(&parsed),
            &parsed,
            0,
            total,
            &sealed[r.start as usize..r.end as usize],
        )
        .unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn tampering_truncation_and_wrong_key_fail() {
        let data = vec![1u8; (2 * CHUNK) as usize];
        let h = Header::fresh(1);
        let mut sealed = seal(&key(&h), h, &data).unwrap();
        let total = chunk_count(sealed.len() as u64).unwrap();
        // Truncating the whole last chunk turns chunk 0 into the "last" one: its AAD no longer matches.
        let cut = &sealed[HEADER as usize..(HEADER + CHUNK + TAG) as usize];
        assert!(matches!(
            open_chunks(&key(&h), &h, 0, 1, cut),
            Err(SealError::Tampered(0))
        ));
        let wrong = object_cipher(&[8u8; 32], &h);
        let body = &sealed[HEADER as usize..];
        assert!(open_chunks(&wrong, &h, 0, total, body).is_err());
        sealed[HEADER as usize + 5] ^= 1;
        assert!(open_chunks(&key(&h), &h, 0, total, &sealed[HEADER as usize..]).is_err());
        assert!(Header::parse(b"PAR1....................").is_err());
        assert!(plain_len(3).is_err());
    }

    #[test]
    fn every_object_has_its_own_key_and_first_format_objects_still_open() {
        let data = vec![5u8; (CHUNK + 10) as usize];
        let (a, b) = (Header::fresh(1), Header::fresh(1));
        assert_ne!(a.salt, b.salt);
        let (sa, sb) = (seal(&key(&a), a, &data).unwrap(), seal(&key(&b), b, &data).unwrap());
        assert_ne!(
            sa[HEADER as usize..],
            sb[HEADER as usize..],
            "same data, same data key, other ciphertext"
        );
        // Object A's chunks under B's header (B's derived key and nonces) do not open, nor under the data key
        // used directly, nor with A's salt but another key id.
        let body = &sa[HEADER as usize..];
        assert!(open_chunks(&key(&b), &b, 0, 2, body).is_err());
        assert!(open_chunks(&Aes256Gcm::new((&DATA_KEY).into()), &a, 0, 2, body).is_err());
        let other_id = Header { key_id: 2, ..a };
        assert!(open_chunks(&key(&other_id), &a, 0, 2, body).is_err());
        // A first-format object (chunks under the data key, nonce = random prefix | index) written by an
        // earlier version opens with the same data key.
        let old = Header {
            format: Format::V1,
            key_id: 1,
            salt: [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0],
        };
        let sealed = seal(&Aes256Gcm::new((&DATA_KEY).into()), old, &data).unwrap();
        assert_eq!(&sealed[..8], MAGIC_V1);
        let parsed = Header::parse(&sealed).unwrap();
        assert_eq!(parsed, old);
        assert_eq!(
            open_chunks(&key(&parsed), &parsed, 0, 2, &sealed[HEADER as usize..]).unwrap(),
            data
        );
        assert_eq!(
            &seal(&key(&a), a, &data).unwrap()[..8],
            MAGIC_V2,
            "new objects use the second format"
        );
    }
}
