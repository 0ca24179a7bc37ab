//! Recipient fingerprints: a collusion-resistant (Tardos) code embedded in the last significant digit of
//! non-identifying measured values, in cells chosen by a keyed hash of what the row says — so the marks are
//! found again in a leaked file without row numbers, after shuffling, subsetting, dropping columns or
//! converting formats.
//!
//! Pure: no I/O. The builder embeds ([`embed`]) in each recipient's copy after anonymisation and re-verifies
//! the privacy model; [`crate::trace`] reads a leaked file and calls [`read_marks`] and [`accuse`].

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The secret a release's fingerprints are drawn from (one per release, wrapped by the key service).
pub struct FingerprintKey(Zeroizing<[u8; 32]>);

impl FingerprintKey {
    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> FingerprintKey {
        FingerprintKey(Zeroizing::new(bytes))
    }

    /// The key bytes (for keying the PRF only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// One column that carries marks: a measured value whose last significant digit may change by one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedColumn {
    /// Column name.
    pub column: String,
    /// Decimal places the value is written with; the tolerance is one unit of the last one (10^-decimals).
    pub decimals: u32,
    /// Columns whose values key the selection of some of this column's cells (besides the value itself),
    /// so that rows with equal values still carry different code positions. Cells keyed on an anchor that a
    /// leaker dropped are lost; cells keyed on the value alone survive any column drop.
    pub anchors: Vec<String>,
}

/// How one table of a release is marked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintPlan {
    /// The marked columns (never quasi-identifiers or the sensitive attribute).
    pub columns: Vec<MarkedColumn>,
    /// Probability that a markable cell is selected (set so that at most the cell budget is touched).
    pub rate: f64,
    /// Tardos cutoff t: position biases lie in [t, 1 - t].
    pub cutoff: f64,
}
