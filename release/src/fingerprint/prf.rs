//! The keyed pseudo-random function every choice of the scheme is drawn from, and those choices.
//!
//! HMAC-SHA256 under the release's [`FingerprintKey`]; every use is domain-separated by a label and the
//! inputs are length-prefixed, so no two uses (or two different inputs of one use) can collide except by a
//! SHA-256 collision. Without the key, positions, selections, biases and recipients' bits are unpredictable.

use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::FingerprintKey;

const ANCHOR: &[u8] = b"tokumei/fingerprint/v1/anchor";
const POSITION: &[u8] = b"tokumei/fingerprint/v1/position";
const SELECT: &[u8] = b"tokumei/fingerprint/v1/select";
const BIAS: &[u8] = b"tokumei/fingerprint/v1/bias";
const BIT: &[u8] = b"tokumei/fingerprint/v1/bit";

/// HMAC-SHA256 keyed once; each evaluation clones the keyed state (two compressions, no re-keying).
#[derive(Clone)]
pub(crate) struct Prf {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prf(<redacted>)")
    }
}

impl Prf {
    pub(crate) fn new(key: &FingerprintKey) -> Prf {
        // HMAC pads a short key with zeros to the block size; doing it here makes keying infallible and
        // gives exactly HMAC-SHA256(key, ·).
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(key.as_bytes());
        Prf {
            mac: <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(&block[..])),
        }
    }

    fn eval(&self, label: &[u8], parts: &[&[u8]]) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(&(label.len() as u32).to_le_bytes());
        mac.update(label);
        for part in parts {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_le_bytes(first)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    fn unit(&self, label: &[u8], parts: &[&[u8]]) -> f64 {
        (self.eval(label, parts) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Which key a cell's position is drawn from: 0 = the value alone, i = the value and `anchors[i - 1]`.
    pub(crate) fn anchor_choice(&self, column: &str, coarse: i64, anchors: usize) -> usize {
        (self.eval(ANCHOR, &[column.as_bytes(), &coarse.to_le_bytes()]) % (anchors as u64 + 1)) as usize
    }

    /// The code position a cell carries (a 64-bit id).
    pub(crate) fn position(&self, column: &str, coarse: i64, anchor: Option<(&str, &str)>) -> u64 {
        let coarse = coarse.to_le_bytes();
        match anchor {
            None => self.eval(POSITION, &[column.as_bytes(), &coarse, &[0]]),
            Some((name, value)) => self.eval(
                POSITION,
                &[column.as_bytes(), &coarse, &[1], name.as_bytes(), value.as_bytes()],
            ),
        }
    }

    /// Whether cells at `position` carry a mark.
    pub(crate) fn selected(&self, position: u64, rate: f64) -> bool {
        self.selector(position) < rate
    }

    /// The uniform value a position's selection compares with the rate.
    pub(crate) fn selector(&self, position: u64) -> f64 {
        self.unit(SELECT, &[&position.to_le_bytes()])
    }

    /// The Tardos bias of `position`: sin²(r), r uniform in [r_t, π/2 − r_t], r_t = asin(√cutoff).
    pub(crate) fn bias(&self, position: u64, cutoff: f64) -> f64 {
        let rt = sanitize_cutoff(cutoff).sqrt().asin();
        let r = rt + self.unit(BIAS, &[&position.to_le_bytes()]) * (std::f64::consts::FRAC_PI_2 - 2.0 * rt);
        let s = r.sin();
        (s * s).clamp(cutoff_floor(cutoff), 1.0 - cutoff_floor(cutoff))
    }

    /// Recipient's code bit at `position`: 1 with probability [`bit_probability`]`(bias)`.
    pub(crate) fn bit(&self, recipient: &str, position: u64, bias: f64) -> bool {
        self.unit(BIT, &[recipient.as_bytes(), &position.to_le_bytes()]) < bias
    }
}

/// The exact probability that [`Prf::bit`] is 1 for `bias`: the unit value is k·2^-53 with k uniform in
/// [0, 2^53), and k·2^-53 < bias ⇔ k < ⌈bias·2^53⌉, so it is ⌈bias·2^53⌉/2^53 (exact in an `f64`) — within
/// 2^-53 of `bias`, but the accusation bound uses the exact value so that it stays a true upper bound.
pub(crate) fn bit_probability(bias: f64) -> f64 {
    const SCALE: f64 = (1u64 << 53) as f64;
    ((bias * SCALE).ceil() / SCALE).clamp(0.0, 1.0)
}

/// A usable cutoff: the plan's if it lies in (0, 1/2), else the default (only reachable with a hand-made
/// plan; [`super::embed`] rejects such plans, so marks are never written with it).
pub(crate) fn sanitize_cutoff(cutoff: f64) -> f64 {
    if cutoff.is_finite() && cutoff > 0.0 && cutoff < 0.5 {
        cutoff
    } else {
        super::DEFAULT_CUTOFF
    }
}

/// Biases never reach 0 or 1 (scores stay finite) even with float rounding of sin².
fn cutoff_floor(cutoff: f64) -> f64 {
    sanitize_cutoff(cutoff) * 0.5
}
