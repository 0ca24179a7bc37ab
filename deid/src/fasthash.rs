//! A small, fast, deterministic hasher for integer keys.
//!
//! Class tables hash millions of packed integer keys per node; SipHash's DoS resistance buys
//! nothing here (keys come from our own encoding) and costs several times the time. The folded
//! 128-bit multiply mixes all input bits into the low bits hashbrown uses for bucket selection.
//! Being deterministic also keeps class order, and therefore output, reproducible.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-fold hasher.
#[derive(Default, Clone, Copy)]
pub struct FoldHasher {
    hash: u64,
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for FoldHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.hash = fold(self.hash ^ i ^ K, 0xA076_1D64_78BD_642F);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// `BuildHasher` for [`FoldHasher`].
pub type FastBuild = BuildHasherDefault<FoldHasher>;
/// `HashMap` with [`FoldHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;
