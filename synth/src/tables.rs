//! Static reference data: population pyramid, prefectures and their municipalities, and common names.
//!
//! Figures are rounded from the 2020 census and public code lists; they only need to be "roughly right"
//! so that synthetic cohorts have a realistic shape (older skew, Tokyo/Kanagawa/Osaka heavy).

use std::sync::LazyLock;

/// One prefecture: JIS code, population (thousands, 2020), major municipalities (5-digit 全国地方公共団体コード
/// without check digit; the capital first), and the range of 3-digit postal prefixes used there.
pub struct Prefecture {
    pub code: u8,
    pub population_k: u32,
    pub cities: &'static [&'static str],
    pub postal: (u16, u16),
}

const fn p(code: u8, population_k: u32, cities: &'static [&'static str], postal: (u16, u16)) -> Prefecture {
    Prefecture {
        code,
        population_k,
        cities,
        postal,
    }
}

/// All 47 prefectures in JIS order (index = code - 1).
pub static PREFECTURES: [Prefecture; 47] = [
    p(1, 5225, &["01100", "01202", "01204"], (40, 99)),
    p(2, 1238, &["02201", "02202", "02203"], (30, 39)),
    p(3, 1211, &["03201", "03202"], (20, 29)),
    p(4, 2302, &["04100", "04202"], (980, 989)),
    p(5, 960, &["05201"], (10, 19)),
    p(6, 1068, &["06201", "06202"], (990, 999)),
    p(7, 1833, &["07201", "07203", "07204"], (960, 979)),
    p(8, 2867, &["08201", "08220", "08202"], (300, 319)),
    p(9, 1933, &["09201", "09203"], (320, 329)),
    p(10, 1939, &["10201", "10202"], (370, 379)),
    p(11, 7345, &["11100", "11203", "11201", "11222"], (330, 369)),
    p(12, 6284, &["12100", "12204", "12217", "12207"], (260, 299)),
    p(
        13,
        14048,
        &["13101", "13104", "13112", "13111", "13120", "13201"],
        (100, 208),
    ),
    p(14, 9237, &["14100", "14130", "14150", "14205"], (210, 259)),
    p(15, 2201, &["15100", "15202"], (940, 959)),
    p(16, 1035, &["16201", "16202"], (930, 939)),
    p(17, 1133, &["17201", "17206"], (920, 929)),
    p(18, 767, &["18201"], (910, 919)),
    p(19, 810, &["19201"], (400, 409)),
    p(20, 2048, &["20201", "20202"], (380, 399)),
    p(21, 1979, &["21201", "21202"], (500, 509)),
    p(22, 3633, &["22100", "22130", "22203"], (410, 439)),
    p(23, 7542, &["23100", "23211", "23202", "23201"], (440, 499)),
    p(24, 1770, &["24201", "24202"], (510, 519)),
    p(25, 1414, &["25201", "25202"], (520, 529)),
    p(26, 2578, &["26100", "26204"], (600, 629)),
    p(27, 8838, &["27100", "27140", "27227", "27203"], (530, 599)),
    p(28, 5465, &["28100", "28201", "28202", "28204"], (650, 679)),
    p(29, 1324, &["29201", "29202"], (630, 639)),
    p(30, 923, &["30201"], (640, 649)),
    p(31, 553, &["31201", "31202"], (680, 689)),
    p(32, 671, &["32201", "32203"], (690, 699)),
    p(33, 1888, &["33100", "33202"], (700, 719)),
    p(34, 2800, &["34100", "34207", "34202"], (720, 739)),
    p(35, 1342, &["35203", "35201"], (740, 759)),
    p(36, 720, &["36201"], (770, 779)),
    p(37, 950, &["37201", "37202"], (760, 769)),
    p(38, 1335, &["38201", "38202"], (790, 799)),
    p(39, 692, &["39201"], (780, 789)),
    p(40, 5135, &["40130", "40100", "40203"], (800, 839)),
    p(41, 811, &["41201"], (840, 849)),
    p(42, 1312, &["42201", "42202"], (850, 859)),
    p(43, 1738, &["43100", "43202"], (860, 869)),
    p(44, 1124, &["44201", "44202"], (870, 879)),
    p(45, 1070, &["45201", "45202"], (880, 889)),
    p(46, 1588, &["46201", "46203"], (890, 899)),
    p(47, 1467, &["47201", "47211"], (900, 909)),
];

/// Check digit of a 全国地方公共団体コード: weights 6..2 over the five digits, modulus 11.
pub fn municipality_check_digit(code5: &[u8; 5]) -> u8 {
    let sum: u32 = code5
        .iter()
        .zip([6u32, 5, 4, 3, 2])
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    ((11 - sum % 11) % 10) as u8
}

/// Six-digit municipality codes (with check digit) per prefecture, computed once.
pub static MUNICIPALITIES: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
    PREFECTURES
        .iter()
        .map(|pref| {
            pref.cities
                .iter()
                .map(|c| {
                    let b: [u8; 5] = c.as_bytes().try_into().unwrap_or(*b"00000");
                    let mut s = String::with_capacity(6);
                    s.push_str(c);
                    s.push(char::from(b'0' + municipality_check_digit(&b)));
                    s
                })
                .collect()
        })
        .collect()
});

/// Cumulative population weights for choosing a prefecture of residence.
pub static PREFECTURE_CUMULATIVE: LazyLock<Vec<u32>> = LazyLock::new(|| {
    let mut acc = 0;
    PREFECTURES
        .iter()
        .map(|p| {
            acc += p.population_k;
            acc
        })
        .collect()
});

/// Population in thousands per 5-year band (0-4, 5-9, …, 95-99, 100+), (male, female), 2020 census.
pub const PYRAMID_K: [(u32, u32); 21] = [
    (2325, 2216),
    (2618, 2496),
    (2753, 2623),
    (2932, 2774),
    (3252, 3068),
    (3269, 3115),
    (3417, 3297),
    (3803, 3695),
    (4293, 4183),
    (4946, 4841),
    (4389, 4348),
    (3959, 3981),
    (3689, 3753),
    (3997, 4239),
    (4373, 4816),
    (3206, 3858),
    (2296, 3116),
    (1402, 2390),
    (530, 1312),
    (106, 414),
    (11, 69),
];

/// Relative rate of being a hospital patient per band (percent; 患者調査-shaped: small children and the
/// elderly use hospitals most), which turns the census pyramid into a patient pyramid.
pub const UTILISATION_PCT: [u32; 21] = [
    160, 100, 70, 50, 50, 60, 65, 70, 75, 85, 100, 120, 145, 180, 220, 260, 280, 280, 260, 240, 220,
];

/// Cumulative (weight, band, is_female) table of the patient pyramid.
pub static PATIENT_PYRAMID: LazyLock<Vec<(u64, u8, bool)>> = LazyLock::new(|| {
    let mut acc = 0u64;
    let mut out = Vec::with_capacity(42);
    for (band, ((m, f), u)) in PYRAMID_K.iter().zip(UTILISATION_PCT).enumerate() {
        for (count, female) in [(*m, false), (*f, true)] {
            acc += u64::from(count) * u64::from(u);
            out.push((acc, band as u8, female));
        }
    }
    out
});

/// Common surnames in katakana, most frequent first (frequency weight falls off with rank).
pub const SURNAMES: [&str; 50] = [
    "サトウ",
    "スズキ",
    "タカハシ",
    "タナカ",
    "ワタナベ",
    "イトウ",
    "ヤマモト",
    "ナカムラ",
    "コバヤシ",
    "カトウ",
    "ヨシダ",
    "ヤマダ",
    "ササキ",
    "ヤマグチ",
    "マツモト",
    "イノウエ",
    "キムラ",
    "ハヤシ",
    "サイトウ",
    "シミズ",
    "ヤマザキ",
    "モリ",
    "イケダ",
    "ハシモト",
    "アベ",
    "イシカワ",
    "ヤマシタ",
    "ナカジマ",
    "イシイ",
    "オガワ",
    "マエダ",
    "オカダ",
    "ハセガワ",
    "フジタ",
    "ゴトウ",
    "コンドウ",
    "ムラカミ",
    "エンドウ",
    "アオキ",
    "サカモト",
    "フクダ",
    "オオタ",
    "ニシムラ",
    "フジイ",
    "カネコ",
    "オカモト",
    "フジワラ",
    "ナカノ",
    "ミウラ",
    "マツダ",
];

/// Cumulative Zipf-like weights for [`SURNAMES`].
pub static SURNAME_CUMULATIVE: LazyLock<Vec<u32>> = LazyLock::new(|| {
    let mut acc = 0;
    (0..SURNAMES.len() as u32)
        .map(|rank| {
            acc += 10_000 / (rank + 4);
            acc
        })
        .collect()
});

/// Given names by sex and birth era (before 1960, 1960–1989, 1990 on): names are strongly generational,
/// so a 90-year-old "ハルト" would look synthetic.
pub const MALE_GIVEN: [[&str; 16]; 3] = [
    [
        "ヒロシ",
        "ススム",
        "キヨシ",
        "イサム",
        "ミノル",
        "マサオ",
        "タケシ",
        "シゲル",
        "カズオ",
        "ヨシオ",
        "アキラ",
        "ツトム",
        "サトル",
        "テツオ",
        "トシオ",
        "ヒデオ",
    ],
    [
        "マコト",
        "ヒロユキ",
        "テツヤ",
        "ナオキ",
        "ダイスケ",
        "タクヤ",
        "ケンジ",
        "カズヤ",
        "ヒデキ",
        "マサヒロ",
        "シンジ",
        "ユウジ",
        "タカシ",
        "コウジ",
        "ツヨシ",
        "ジュン",
    ],
    [
        "ショウタ",
        "ショウ",
        "ダイキ",
        "ユウト",
        "ハルト",
        "ソウタ",
        "レン",
        "ユウキ",
        "タクミ",
        "リク",
        "ハヤト",
        "カイト",
        "ミナト",
        "ユウマ",
        "コウキ",
        "ハルキ",
    ],
];

/// See [`MALE_GIVEN`].
pub const FEMALE_GIVEN: [[&str; 16]; 3] = [
    [
        "カズコ",
        "ヨシコ",
        "ケイコ",
        "ヒロコ",
        "フミコ",
        "サチコ",
        "ミチコ",
        "ノブコ",
        "トシコ",
        "ヤスコ",
        "ハルエ",
        "キヨコ",
        "セツコ",
        "テルコ",
        "チヨ",
        "ハナ",
    ],
    [
        "ユミ",
        "マユミ",
        "ヨウコ",
        "クミコ",
        "トモミ",
        "ユカリ",
        "アケミ",
        "エミ",
        "ナオミ",
        "メグミ",
        "カオリ",
        "ユウコ",
        "ミホ",
        "アヤ",
        "マイ",
        "ナオコ",
    ],
    [
        "ミサキ",
        "ユイ",
        "アオイ",
        "ヒナタ",
        "サクラ",
        "ハルカ",
        "ナナミ",
        "リン",
        "ミユ",
        "アカリ",
        "モエ",
        "ホノカ",
        "ユナ",
        "メイ",
        "ツムギ",
        "カエデ",
    ],
];

/// Index of the first cumulative weight exceeding `draw` (weighted choice without floating point).
pub fn pick_cumulative(cumulative: &[u32], draw: u32) -> usize {
    cumulative
        .partition_point(|&c| c <= draw)
        .min(cumulative.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn municipality_check_digits_match_published_examples() {
        assert_eq!(municipality_check_digit(b"13101"), 6);
        assert_eq!(municipality_check_digit(b"01100"), 2);
        assert_eq!(MUNICIPALITIES[12][0], "131016");
        assert_eq!(MUNICIPALITIES[0][0], "011002");
    }

    #[test]
    fn tables_are_consistent() {
        for (i, pref) in PREFECTURES.iter().enumerate() {
            assert_eq!(usize::from(pref.code), i + 1);
            assert!(pref.postal.0 <= pref.postal.1 && pref.postal.1 <= 999);
            for c in pref.cities {
                assert_eq!(&c[..2], format!("{:02}", pref.code), "city {c} outside its prefecture");
            }
        }
        let total: u32 = PREFECTURES.iter().map(|p| p.population_k).sum();
        assert!((120_000..130_000).contains(&total), "{total}");
    }
}
