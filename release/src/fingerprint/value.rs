//! Exact decimal arithmetic on marked cells: a cell's text becomes an integer number of units of its last
//! decimal (`q`), and a changed `q` is written back with integer arithmetic only — so embedding never
//! introduces float formatting drift, and reading sees the same `q` whether a converter wrote `0.10`, `0.1`
//! or `0.09999999999999999`.

/// The largest number of decimals a marked column may declare (keeps every `q` exact in an `f64` and an
/// `i64`).
pub const MAX_DECIMALS: u32 = 15;

/// Largest |q| handled: 2^53, so a value read through an `f64` converter still maps to the same integer.
const MAX_Q: u64 = 1 << 53;

/// A cell's value in units of its last decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scaled {
    /// round(value × 10^decimals), half away from zero.
    pub q: i64,
    /// Whether the text was exactly on the grid (no non-zero digit beyond `decimals`). Only such cells are
    /// marked, so that a mark moves the value by at most one unit of the last decimal.
    pub on_grid: bool,
}

/// Parses a cell (surrounding whitespace ignored) as a decimal number in units of 10^-`decimals`.
///
/// Plain decimal text (`-12.30`, `+.5`, `7.`) is parsed exactly, rounding half away from zero on the digit
/// after the last kept one; anything else Rust parses as a finite `f64` (`1e-3`) goes through the float.
/// `None` for empty, unparseable, non-finite or out-of-range (|q| > 2^53) cells: those are not markable.
pub fn parse_scaled(text: &str, decimals: u32) -> Option<Scaled> {
    if decimals > MAX_DECIMALS {
        return None;
    }
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    match parse_plain(s.as_bytes(), decimals) {
        Plain::Parsed(scaled) => Some(scaled),
        Plain::OutOfRange => None,
        Plain::Other => parse_float(s, decimals),
    }
}

enum Plain {
    Parsed(Scaled),
    OutOfRange,
    Other,
}

fn parse_plain(b: &[u8], decimals: u32) -> Plain {
    let (negative, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let dot = digits.iter().position(|&c| c == b'.');
    let (int, frac) = match dot {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return Plain::Other;
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Plain::Other;
    }
    let mut q: u64 = 0;
    let push = |q: u64, d: u8| -> Option<u64> {
        let q = q.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        (q <= MAX_Q).then_some(q)
    };
    for &d in int {
        match push(q, d) {
            Some(v) => q = v,
            None => return Plain::OutOfRange,
        }
    }
    let kept = decimals as usize;
    for i in 0..kept {
        match push(q, frac.get(i).copied().unwrap_or(b'0')) {
            Some(v) => q = v,
            None => return Plain::OutOfRange,
        }
    }
    let rest = frac.get(kept..).unwrap_or(&[]);
    let on_grid = rest.iter().all(|&d| d == b'0');
    if rest.first().is_some_and(|&d| d >= b'5') {
        q += 1;
        if q > MAX_Q {
            return Plain::OutOfRange;
        }
    }
    // |q| <= 2^53 < i64::MAX.
    let q = q as i64;
    Plain::Parsed(Scaled {
        q: if negative { -q } else { q },
        on_grid,
    })
}

fn parse_float(s: &str, decimals: u32) -> Option<Scaled> {
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let x = v * 10f64.powi(decimals as i32);
    if x.abs() > MAX_Q as f64 {
        return None;
    }
    let r = x.round();
    Some(Scaled {
        q: r as i64,
        on_grid: (x - r).abs() <= 1e-9 * x.abs().max(1.0),
    })
}

/// Appends `q` × 10^-`decimals` to `out` with exactly `decimals` places, using integer arithmetic only:
/// sign, integer part, zero-padded fraction. Zero is never written with a sign. Appending to a cleared
/// cell reuses its allocation, so marking allocates nothing per cell.
pub fn render_scaled(q: i64, decimals: u32, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut a = q.unsigned_abs();
    loop {
        digits[n] = b'0' + (a % 10) as u8;
        n += 1;
        a /= 10;
        if a == 0 {
            break;
        }
    }
    let d = decimals as usize;
    if q < 0 {
        out.push('-');
    }
    for pos in (0..n.max(d + 1)).rev() {
        out.push(char::from(if pos < n { digits[pos] } else { b'0' }));
        if d > 0 && pos == d {
            out.push('.');
        }
    }
}

/// [`render_scaled`] into a new string (for tests, codebooks and messages).
pub fn format_scaled(q: i64, decimals: u32) -> String {
    let mut s = String::with_capacity(24);
    render_scaled(q, decimals, &mut s);
    s
}
