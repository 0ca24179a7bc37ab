//! Built-in hierarchy generators, declared in a TOML job spec instead of a CSV file.
//!
//! Each generator turns the distinct values found in the data into ARX-style rows and then goes
//! through the same validation as a CSV hierarchy, so a generator can never produce a hierarchy
//! that the search could not roll up. Line numbers in errors refer to the generated rows, which are
//! sorted (numerically when all values are numbers) so they are reproducible.

use serde::Deserialize;

use crate::error::{Error, HierarchyProblem, Result};
use crate::hierarchy::Hierarchy;

/// A built-in generator (the `generator = { type = "..." }` table of a job spec).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Generator {
    /// Integer intervals of growing width, e.g. `widths = [5, 10, 20]`: 1 → 0-4 → 0-9 → 0-19 → *.
    /// Each width must be a multiple of the previous one (otherwise a value would get two parents).
    Interval {
        /// Interval widths, one per level.
        widths: Vec<i64>,
        /// Lower bound the intervals are aligned to.
        #[serde(default)]
        origin: i64,
    },
    /// Dates `YYYY-MM-DD` (also `YYYY/MM/DD`, `YYYYMMDD`): day → month → quarter → year → 5 years → *.
    Date,
    /// Japanese local-government (municipality) codes (5 or 6 digits): code → prefecture →
    /// region (8 regions) → *.
    Municipality,
    /// JIS X 0401 prefecture codes (`01`–`47`): prefecture → region (8 regions) → *.
    Prefecture,
    /// Japanese postal codes (7 digits, hyphen optional) generalised by keeping a prefix:
    /// `prefixes = [5, 3, 1]` gives 1234567 → 12345** → 123**** → 1****** → *.
    Postal {
        /// Prefix lengths kept at each level, decreasing.
        #[serde(default = "default_postal")]
        prefixes: Vec<usize>,
    },
    /// ICD-10: code → 3-character category → block → chapter → *.
    Icd10,
    /// YJ drug codes (12 characters): 12 → 7 → 4 (therapeutic class) → 3 → *.
    Yj,
    /// JLAC10 laboratory codes (17 characters): code → 5-character analyte → *.
    Jlac10,
    /// Generic prefix truncation, e.g. `lengths = [4, 2]`: code → first 4 → first 2 → *.
    Prefix {
        /// Prefix lengths kept at each level, decreasing.
        lengths: Vec<usize>,
    },
    /// Masks the string's suffix `step` characters at a time: 12345 → 1234* → 123** → ... → *.
    Mask {
        /// Characters masked per level.
        #[serde(default = "one")]
        step: usize,
    },
    /// Flat: value → *.
    Flat,
}

fn default_postal() -> Vec<usize> {
    vec![5, 3, 1]
}
fn one() -> usize {
    1
}

impl Generator {
    /// Generates and validates a hierarchy covering `values` (distinct data values).
    pub fn generate(&self, values: &[&str]) -> Result<Hierarchy> {
        let mut sorted: Vec<&str> = values.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.iter().all(|v| v.trim().parse::<f64>().is_ok()) {
            sorted.sort_by(|a, b| {
                let (x, y) = (
                    a.trim().parse::<f64>().unwrap_or(0.0),
                    b.trim().parse::<f64>().unwrap_or(0.0),
                );
                x.total_cmp(&y).then(a.cmp(b))
            });
        }
        let source = format!("generator {self:?}");
        let mut rows = Vec::with_capacity(sorted.len());
        for (i, v) in sorted.iter().enumerate() {
            let line = i + 1;
            let cells = self.row(v).map_err(|msg| Error::Hierarchy {
                source_name: source.clone(),
                // Not the value's rank among the column's sorted values: that too would describe the data.
                line: 0,
                problem: HierarchyProblem::Generator(format!("a value of the column: {msg} (values are never named)")),
            })?;
            rows.push((line, cells));
        }
        if matches!(self, Self::Mask { .. }) {
            // Shorter values are fully masked earlier: repeat their fully masked label so every
            // row has the same number of levels (the longest value decides).
            let width = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
            for (_, r) in &mut rows {
                while r.len() < width {
                    let masked = r[r.len() - 2].clone();
                    r.insert(r.len() - 1, masked);
                }
            }
        }
        Hierarchy::from_rows(&source, rows)
    }

    /// Whether the generator can place `v` in its hierarchy (a value it cannot parse is left uncovered by
    /// callers that must not fail on, or name, one bad value).
    pub fn accepts(&self, v: &str) -> bool {
        self.row(v).is_ok()
    }

    /// The generalisation chain of one value, starting with the value itself and ending in `*`.
    fn row(&self, v: &str) -> std::result::Result<Vec<String>, String> {
        let mut out = vec![v.to_string()];
        match self {
            Self::Interval { widths, origin } => {
                let x: i64 = v.trim().parse().map_err(|_| "not an integer".to_string())?;
                for &w in widths {
                    if w <= 0 {
                        return Err("interval widths must be positive".into());
                    }
                    let lo = origin + (x - origin).div_euclid(w) * w;
                    out.push(format!("{lo}-{}", lo + w - 1));
                }
            }
            Self::Date => {
                let (y, m, _d) = parse_date(v).ok_or("not a date (YYYY-MM-DD)")?;
                out.push(format!("{y:04}-{m:02}"));
                out.push(format!("{y:04}-Q{}", (m - 1) / 3 + 1));
                out.push(format!("{y:04}"));
                let lo = y.div_euclid(5) * 5;
                out.push(format!("{lo:04}-{:04}", lo + 4));
            }
            Self::Municipality => {
                let digits = v.trim();
                if !(digits.len() == 5 || digits.len() == 6) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("not a 5/6-digit municipality code".into());
                }
                let pref: usize = digits[..2].parse().map_err(|_| "bad prefecture")?;
                let (name, region) = PREFECTURES
                    .get(pref.wrapping_sub(1))
                    .ok_or("prefecture code must be 01-47")?;
                out.push(format!("{pref:02} {name}"));
                out.push(REGIONS[*region].to_string());
            }
            Self::Prefecture => {
                let digits = v.trim();
                if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("not a 2-digit prefecture code".into());
                }
                let pref: usize = digits.parse().map_err(|_| "bad prefecture")?;
                let (_, region) = PREFECTURES
                    .get(pref.wrapping_sub(1))
                    .ok_or("prefecture code must be 01-47")?;
                out.push(REGIONS[*region].to_string());
            }
            Self::Postal { prefixes } => {
                let digits: String = v.chars().filter(|c| *c != '-').collect();
                if digits.chars().count() != 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("not a 7-digit postal code".into());
                }
                for &p in prefixes {
                    let p = p.min(7);
                    out.push(format!("{}{}", &digits[..p], "*".repeat(7 - p)));
                }
            }
            Self::Icd10 => {
                let code: String = v
                    .trim()
                    .chars()
                    .filter(|c| *c != '.')
                    .collect::<String>()
                    .to_uppercase();
                let b = code.as_bytes();
                if b.len() < 3 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_digit() || !b[2].is_ascii_digit() {
                    return Err("not an ICD-10 code (letter + 2 digits)".into());
                }
                let cat = &code[..3];
                let num = (b[1] - b'0') as u32 * 10 + (b[2] - b'0') as u32;
                let key = (b[0], num);
                let block = icd_block(key).unwrap_or_else(|| cat.to_string());
                out.push(cat.to_string());
                out.push(block);
                out.push(icd_chapter(key).to_string());
            }
            Self::Yj => push_prefixes(&mut out, v, &[7, 4, 3]),
            Self::Jlac10 => push_prefixes(&mut out, v, &[5]),
            Self::Prefix { lengths } => push_prefixes(&mut out, v, lengths),
            Self::Mask { step } => {
                let chars: Vec<char> = v.chars().collect();
                let step = (*step).max(1);
                let mut masked = 0;
                while masked < chars.len() {
                    masked = (masked + step).min(chars.len());
                    let keep: String = chars[..chars.len() - masked].iter().collect();
                    out.push(format!("{keep}{}", "*".repeat(masked)));
                }
            }
            Self::Flat => {}
        }
        out.push("*".to_string());
        Ok(out)
    }
}

fn push_prefixes(out: &mut Vec<String>, v: &str, lengths: &[usize]) {
    for &n in lengths {
        out.push(v.chars().take(n).collect());
    }
}

fn parse_date(v: &str) -> Option<(i64, u32, u32)> {
    let v = v.trim();
    let (y, m, d) = if v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()) {
        (&v[..4], &v[4..6], &v[6..8])
    } else {
        let mut parts = v.split(['-', '/']);
        let y = parts.next()?;
        let m = parts.next()?;
        let d = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        (y, m, d)
    };
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// The 47 prefectures in JIS X 0401 order with their region index into [`REGIONS`].
const PREFECTURES: [(&str, usize); 47] = [
    ("北海道", 0),
    ("青森県", 1),
    ("岩手県", 1),
    ("宮城県", 1),
    ("秋田県", 1),
    ("山形県", 1),
    ("福島県", 1),
    ("茨城県", 2),
    ("栃木県", 2),
    ("群馬県", 2),
    ("埼玉県", 2),
    ("千葉県", 2),
    ("東京都", 2),
    ("神奈川県", 2),
    ("新潟県", 3),
    ("富山県", 3),
    ("石川県", 3),
    ("福井県", 3),
    ("山梨県", 3),
    ("長野県", 3),
    ("岐阜県", 3),
    ("静岡県", 3),
    ("愛知県", 3),
    ("三重県", 4),
    ("滋賀県", 4),
    ("京都府", 4),
    ("大阪府", 4),
    ("兵庫県", 4),
    ("奈良県", 4),
    ("和歌山県", 4),
    ("鳥取県", 5),
    ("島根県", 5),
    ("岡山県", 5),
    ("広島県", 5),
    ("山口県", 5),
    ("徳島県", 6),
    ("香川県", 6),
    ("愛媛県", 6),
    ("高知県", 6),
    ("福岡県", 7),
    ("佐賀県", 7),
    ("長崎県", 7),
    ("熊本県", 7),
    ("大分県", 7),
    ("宮崎県", 7),
    ("鹿児島県", 7),
    ("沖縄県", 7),
];

/// The eight regions (八地方区分).
const REGIONS: [&str; 8] = [
    "北海道地方",
    "東北地方",
    "関東地方",
    "中部地方",
    "近畿地方",
    "中国地方",
    "四国地方",
    "九州・沖縄地方",
];

/// ICD-10 chapters as (first, last, label); codes are (letter, two-digit number).
const ICD_CHAPTERS: [(&str, &str, &str); 22] = [
    ("A00", "B99", "I A00-B99"),
    ("C00", "D48", "II C00-D48"),
    ("D50", "D89", "III D50-D89"),
    ("E00", "E90", "IV E00-E90"),
    ("F00", "F99", "V F00-F99"),
    ("G00", "G99", "VI G00-G99"),
    ("H00", "H59", "VII H00-H59"),
    ("H60", "H95", "VIII H60-H95"),
    ("I00", "I99", "IX I00-I99"),
    ("J00", "J99", "X J00-J99"),
    ("K00", "K93", "XI K00-K93"),
    ("L00", "L99", "XII L00-L99"),
    ("M00", "M99", "XIII M00-M99"),
    ("N00", "N99", "XIV N00-N99"),
    ("O00", "O99", "XV O00-O99"),
    ("P00", "P96", "XVI P00-P96"),
    ("Q00", "Q99", "XVII Q00-Q99"),
    ("R00", "R99", "XVIII R00-R99"),
    ("S00", "T98", "XIX S00-T98"),
    ("V01", "Y98", "XX V01-Y98"),
    ("Z00", "Z99", "XXI Z00-Z99"),
    ("U00", "U85", "XXII U00-U85"),
];

/// ICD-10 (WHO) blocks, as "first-last".
const ICD_BLOCKS: &str = "A00-A09 A15-A19 A20-A28 A30-A49 A50-A64 A65-A69 A70-A74 A75-A79 A80-A89 A90-A99 \
B00-B09 B15-B19 B20-B24 B25-B34 B35-B49 B50-B64 B65-B83 B85-B89 B90-B94 B95-B98 B99-B99 \
C00-C14 C15-C26 C30-C39 C40-C41 C43-C44 C45-C49 C50-C50 C51-C58 C60-C63 C64-C68 C69-C72 C73-C75 C76-C80 \
C81-C96 C97-C97 D00-D09 D10-D36 D37-D48 D50-D53 D55-D59 D60-D64 D65-D69 D70-D77 D80-D89 \
E00-E07 E10-E14 E15-E16 E20-E35 E40-E46 E50-E64 E65-E68 E70-E90 \
F00-F09 F10-F19 F20-F29 F30-F39 F40-F48 F50-F59 F60-F69 F70-F79 F80-F89 F90-F98 F99-F99 \
G00-G09 G10-G14 G20-G26 G30-G32 G35-G37 G40-G47 G50-G59 G60-G64 G70-G73 G80-G83 G90-G99 \
H00-H06 H10-H13 H15-H22 H25-H28 H30-H36 H40-H42 H43-H45 H46-H48 H49-H52 H53-H54 H55-H59 \
H60-H62 H65-H75 H80-H83 H90-H95 I00-I02 I05-I09 I10-I15 I20-I25 I26-I28 I30-I52 I60-I69 I70-I79 \
I80-I89 I95-I99 J00-J06 J09-J18 J20-J22 J30-J39 J40-J47 J60-J70 J80-J84 J85-J86 J90-J94 J95-J99 \
K00-K14 K20-K31 K35-K38 K40-K46 K50-K52 K55-K64 K65-K67 K70-K77 K80-K87 K90-K93 \
L00-L08 L10-L14 L20-L30 L40-L45 L50-L54 L55-L59 L60-L75 L80-L99 \
M00-M03 M05-M14 M15-M19 M20-M25 M30-M36 M40-M43 M45-M49 M50-M54 M60-M63 M65-M68 M70-M79 \
M80-M85 M86-M90 M91-M94 M95-M99 N00-N08 N10-N16 N17-N19 N20-N23 N25-N29 N30-N39 N40-N51 \
N60-N64 N70-N77 N80-N98 N99-N99 O00-O08 O10-O16 O20-O29 O30-O48 O60-O75 O80-O84 O85-O92 O94-O99 \
P00-P04 P05-P08 P10-P15 P20-P29 P35-P39 P50-P61 P70-P74 P75-P78 P80-P83 P90-P96 \
Q00-Q07 Q10-Q18 Q20-Q28 Q30-Q34 Q35-Q37 Q38-Q45 Q50-Q56 Q60-Q64 Q65-Q79 Q80-Q89 Q90-Q99 \
R00-R09 R10-R19 R20-R23 R25-R29 R30-R39 R40-R46 R47-R49 R50-R69 R70-R79 R80-R82 R83-R89 R90-R94 R95-R99 \
S00-S09 S10-S19 S20-S29 S30-S39 S40-S49 S50-S59 S60-S69 S70-S79 S80-S89 S90-S99 T00-T07 T08-T14 \
T15-T19 T20-T25 T26-T28 T29-T32 T33-T35 T36-T50 T51-T65 T66-T78 T79-T79 T80-T88 T90-T98 \
V01-V99 W00-X59 X60-X84 X85-Y09 Y10-Y34 Y35-Y36 Y40-Y84 Y85-Y89 Y90-Y98 \
Z00-Z13 Z20-Z29 Z30-Z39 Z40-Z54 Z55-Z65 Z70-Z76 Z80-Z99 U00-U49 U82-U85";

fn icd_key(s: &str) -> (u8, u32) {
    let b = s.as_bytes();
    (b[0], (b[1] - b'0') as u32 * 10 + (b[2] - b'0') as u32)
}

fn icd_block(key: (u8, u32)) -> Option<String> {
    ICD_BLOCKS.split_whitespace().find_map(|range| {
        let (a, b) = range.split_once('-')?;
        (icd_key(a) <= key && key <= icd_key(b)).then(|| range.to_string())
    })
}

fn icd_chapter(key: (u8, u32)) -> &'static str {
    ICD_CHAPTERS
        .iter()
        .find(|(a, b, _)| icd_key(a) <= key && key <= icd_key(b))
        .map_or("unclassified", |(_, _, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(g: &Generator, v: &str) -> Vec<String> {
        let h = g.generate(&[v]).unwrap();
        (0..h.height())
            .map(|l| h.label(l, h.level(l).of_leaf()[0]).to_string())
            .collect()
    }

    #[test]
    fn chains() {
        assert_eq!(
            chain(
                &Generator::Interval {
                    widths: vec![5, 10, 20],
                    origin: 0
                },
                "37"
            ),
            ["37", "35-39", "30-39", "20-39", "*"]
        );
        assert_eq!(
            chain(&Generator::Date, "2023-08-15"),
            ["2023-08-15", "2023-08", "2023-Q3", "2023", "2020-2024", "*"]
        );
        assert_eq!(
            chain(&Generator::Municipality, "131016"),
            ["131016", "13 東京都", "関東地方", "*"]
        );
        assert_eq!(
            chain(
                &Generator::Postal {
                    prefixes: vec![5, 3, 1]
                },
                "100-0001"
            ),
            ["100-0001", "10000**", "100****", "1******", "*"]
        );
        assert_eq!(
            chain(&Generator::Icd10, "E11.9"),
            ["E11.9", "E11", "E10-E14", "IV E00-E90", "*"]
        );
        assert_eq!(
            chain(&Generator::Yj, "2171014F1020"),
            ["2171014F1020", "2171014", "2171", "217", "*"]
        );
        assert_eq!(
            chain(&Generator::Jlac10, "3D010000001926101"),
            ["3D010000001926101", "3D010", "*"]
        );
        assert_eq!(
            chain(&Generator::Mask { step: 1 }, "123"),
            ["123", "12*", "1**", "***", "*"]
        );
        assert_eq!(chain(&Generator::Flat, "x"), ["x", "*"]);
    }

    #[test]
    fn ragged_mask_is_refused_or_padded() {
        // Values of different lengths get different numbers of mask levels: padded below.
        let h = Generator::Mask { step: 1 }.generate(&["1", "123"]);
        assert!(h.is_ok(), "{h:?}");
    }
}
