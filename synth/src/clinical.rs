//! Clinical content of a synthetic record: conditions with age/sex-dependent prevalence and comorbidity,
//! prescriptions that treat them (YJ), labs that reflect them (JLAC10), encounters, allergies.
//!
//! Everything is drawn from the record's own RNG, so the same person seen at two hospitals has the same
//! identity but independently drawn (and therefore different) clinical histories, as in reality.

use super::date::{self, Day};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokumei_proto::ingest::v1::{Allergy, Condition, Encounter, Medication, Observation};

/// The demographic facts clinical generation depends on.
pub struct Patient {
    pub female: bool,
    pub birth: Day,
    /// Last day anything can happen: the death date, or the generation "today".
    pub end: Day,
}

/// The clinical parts of one record.
#[derive(Default)]
pub struct Clinical {
    pub encounters: Vec<Encounter>,
    pub conditions: Vec<Condition>,
    pub medications: Vec<Medication>,
    pub observations: Vec<Observation>,
    pub allergies: Vec<Allergy>,
    /// Whether anything warrants long-term storage (cancer makes it likelier).
    pub has_cancer: bool,
}

/// A prescribable product: YJ code (7 digits + dosage-form letter + 4 digits; the first 4 digits are the
/// 薬効分類), the usual daily dose and its unit.
#[derive(Clone, Copy)]
pub struct Drug {
    pub yj: &'static str,
    /// Generic name; documents the table (and is what a clinician would recognise), not emitted.
    #[allow(dead_code)]
    pub name: &'static str,
    pub dose: f64,
    pub unit: &'static str,
}

const fn d(yj: &'static str, name: &'static str, dose: f64, unit: &'static str) -> Drug {
    Drug { yj, name, dose, unit }
}

/// Conditions the generator knows, in dependency order: comorbidity multipliers only look at earlier ones.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Cond {
    Hypertension,
    Diabetes,
    Dyslipidaemia,
    Ckd,
    Ihd,
    Af,
    HeartFailure,
    Asthma,
    Osteoporosis,
    KneeOa,
    LowBackPain,
    Gerd,
    Depression,
    GastricCancer,
    Uri,
    Gastroenteritis,
    Pneumonia,
}

/// Number of [`Cond`] variants.
pub const N_COND: usize = 17;

const ALL_CONDS: [Cond; N_COND] = [
    Cond::Hypertension,
    Cond::Diabetes,
    Cond::Dyslipidaemia,
    Cond::Ckd,
    Cond::Ihd,
    Cond::Af,
    Cond::HeartFailure,
    Cond::Asthma,
    Cond::Osteoporosis,
    Cond::KneeOa,
    Cond::LowBackPain,
    Cond::Gerd,
    Cond::Depression,
    Cond::GastricCancer,
    Cond::Uri,
    Cond::Gastroenteritis,
    Cond::Pneumonia,
];

/// Static facts about a condition: ICD-10, a (synthetic) 8-digit 標準病名マスター id, whether it is acute,
/// the earliest plausible onset age, the treating departments and the drugs used for it.
pub struct CondSpec {
    pub icd10: &'static str,
    pub master_id: &'static str,
    pub acute: bool,
    pub min_onset_age: i32,
    pub depts: &'static [&'static str],
    pub drugs: &'static [Drug],
    /// Paediatric formulations (under 15); falls back to `drugs` when empty.
    pub kid_drugs: &'static [Drug],
    pub treat_rate: f64,
}

const ACETAMINOPHEN: Drug = d("1141007F1020", "アセトアミノフェン", 1200.0, "mg");
const LOXOPROFEN: Drug = d("1149019F1020", "ロキソプロフェン", 180.0, "mg");
const PPI_LANSO: Drug = d("2329023F2024", "ランソプラゾール", 15.0, "mg");

/// Indexed by `Cond as usize`.
pub static SPECS: [CondSpec; N_COND] = [
    CondSpec {
        icd10: "I10",
        master_id: "20064580",
        acute: false,
        min_onset_age: 25,
        depts: &["内科", "循環器内科"],
        drugs: &[
            d("2171022F1022", "アムロジピン", 5.0, "mg"),
            d("2171014G1020", "ニフェジピン", 20.0, "mg"),
            d("2149044F1021", "オルメサルタン", 20.0, "mg"),
            d("2149040F1025", "カンデサルタン", 8.0, "mg"),
            d("2149048F1027", "アジルサルタン", 1.0, "錠"),
        ],
        kid_drugs: &[],
        treat_rate: 0.85,
    },
    CondSpec {
        icd10: "E11.9",
        master_id: "20051324",
        acute: false,
        min_onset_age: 25,
        depts: &["糖尿病内科", "内科"],
        drugs: &[
            d("3962002F1024", "メトホルミン", 1000.0, "mg"),
            d("3969010F1026", "シタグリプチン", 50.0, "mg"),
            d("3969019F1020", "リナグリプチン", 1.0, "錠"),
            d("3969024F1027", "エンパグリフロジン", 10.0, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.8,
    },
    CondSpec {
        icd10: "E78.5",
        master_id: "20057211",
        acute: false,
        min_onset_age: 25,
        depts: &["内科", "循環器内科"],
        drugs: &[
            d("2189017F1025", "ロスバスタチン", 2.5, "mg"),
            d("2189015F1020", "アトルバスタチン", 10.0, "mg"),
            d("2189016F1029", "ピタバスタチン", 1.0, "錠"),
        ],
        kid_drugs: &[],
        treat_rate: 0.7,
    },
    CondSpec {
        icd10: "N18.3",
        master_id: "20089617",
        acute: false,
        min_onset_age: 35,
        depts: &["腎臓内科", "内科"],
        drugs: &[
            d("3929003C1020", "球形吸着炭", 3.0, "包"),
            d("2149040F1025", "カンデサルタン", 4.0, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.45,
    },
    CondSpec {
        icd10: "I25.1",
        master_id: "20066372",
        acute: false,
        min_onset_age: 40,
        depts: &["循環器内科"],
        drugs: &[
            d("3399007H1021", "アスピリン", 100.0, "mg"),
            d("3399008F1020", "クロピドグレル", 75.0, "mg"),
            d("2189017F1025", "ロスバスタチン", 2.5, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.9,
    },
    CondSpec {
        icd10: "I48.9",
        master_id: "20062455",
        acute: false,
        min_onset_age: 45,
        depts: &["循環器内科"],
        drugs: &[
            d("3339004F1020", "アピキサバン", 10.0, "mg"),
            d("3339002F1024", "エドキサバン", 30.0, "mg"),
            d("3339003F1029", "リバーロキサバン", 15.0, "mg"),
            d("2123016F1024", "ビソプロロール", 2.5, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.85,
    },
    CondSpec {
        icd10: "I50.9",
        master_id: "20063174",
        acute: false,
        min_onset_age: 50,
        depts: &["循環器内科"],
        drugs: &[
            d("2139005F1024", "フロセミド", 20.0, "mg"),
            d("2139008F1023", "アゾセミド", 60.0, "mg"),
            d("2133001F1027", "スピロノラクトン", 25.0, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.9,
    },
    CondSpec {
        icd10: "J45.9",
        master_id: "20075542",
        acute: false,
        min_onset_age: 1,
        depts: &["呼吸器内科", "内科"],
        drugs: &[
            d("2290801G1027", "ブデソニド・ホルモテロール", 4.0, "吸入"),
            d("2290800G1021", "フルチカゾン・サルメテロール", 2.0, "吸入"),
            d("2259004F1022", "プロカテロール", 50.0, "μg"),
            d("4490026F1023", "モンテルカスト", 10.0, "mg"),
        ],
        kid_drugs: &[
            d("4490026F2020", "モンテルカスト", 5.0, "mg"),
            d("2259004Q1026", "プロカテロール", 5.0, "mL"),
        ],
        treat_rate: 0.85,
    },
    CondSpec {
        icd10: "M81.0",
        master_id: "20082197",
        acute: false,
        min_onset_age: 50,
        depts: &["整形外科"],
        drugs: &[
            d("3999018F1020", "アレンドロン酸", 5.0, "mg"),
            d("3999019F1025", "リセドロン酸", 2.5, "mg"),
            d("3112004M1028", "エルデカルシトール", 0.75, "μg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.6,
    },
    CondSpec {
        icd10: "M17.9",
        master_id: "20083356",
        acute: false,
        min_onset_age: 45,
        depts: &["整形外科"],
        drugs: &[
            LOXOPROFEN,
            d("1149037F1024", "セレコキシブ", 200.0, "mg"),
            ACETAMINOPHEN,
        ],
        kid_drugs: &[],
        treat_rate: 0.6,
    },
    CondSpec {
        icd10: "M54.5",
        master_id: "20084418",
        acute: false,
        min_onset_age: 18,
        depts: &["整形外科"],
        drugs: &[LOXOPROFEN, ACETAMINOPHEN, d("2329021F1023", "レバミピド", 300.0, "mg")],
        kid_drugs: &[],
        treat_rate: 0.7,
    },
    CondSpec {
        icd10: "K21.9",
        master_id: "20076813",
        acute: false,
        min_onset_age: 18,
        depts: &["消化器内科", "内科"],
        drugs: &[
            PPI_LANSO,
            d("2329029M1021", "エソメプラゾール", 1.0, "カプセル"),
            d("2329030F1027", "ボノプラザン", 20.0, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.8,
    },
    CondSpec {
        icd10: "F32.9",
        master_id: "20059036",
        acute: false,
        min_onset_age: 13,
        depts: &["精神科", "心療内科"],
        drugs: &[
            d("1179046F1021", "セルトラリン", 50.0, "mg"),
            d("1179054F1026", "エスシタロプラム", 10.0, "mg"),
            d("1179051F1024", "ミルタザピン", 15.0, "mg"),
        ],
        kid_drugs: &[],
        treat_rate: 0.8,
    },
    CondSpec {
        icd10: "C16.9",
        master_id: "20047720",
        acute: false,
        min_onset_age: 35,
        depts: &["消化器内科", "外科"],
        drugs: &[
            d("4229101M1024", "テガフール・ギメラシル・オテラシル", 100.0, "mg"),
            PPI_LANSO,
        ],
        kid_drugs: &[],
        treat_rate: 0.5,
    },
    CondSpec {
        icd10: "J06.9",
        master_id: "20072903",
        acute: true,
        min_onset_age: 0,
        depts: &["内科", "耳鼻咽喉科"],
        drugs: &[
            ACETAMINOPHEN,
            d("6132016F1026", "セフカペン", 300.0, "mg"),
            d("2233002F1026", "カルボシステイン", 1500.0, "mg"),
        ],
        kid_drugs: &[
            d("1141007C1026", "アセトアミノフェン", 1.0, "g"),
            d("2233002R1024", "カルボシステイン", 1.5, "g"),
        ],
        treat_rate: 0.8,
    },
    CondSpec {
        icd10: "A09.9",
        master_id: "20040131",
        acute: true,
        min_onset_age: 0,
        depts: &["内科", "消化器内科"],
        drugs: &[d("2316004B1036", "ビフィズス菌製剤", 3.0, "g")],
        kid_drugs: &[d("2316004B1036", "ビフィズス菌製剤", 1.5, "g")],
        treat_rate: 0.6,
    },
    CondSpec {
        icd10: "J18.9",
        master_id: "20073415",
        acute: true,
        min_onset_age: 0,
        depts: &["呼吸器内科", "内科"],
        drugs: &[
            d("6241013F1022", "レボフロキサシン", 500.0, "mg"),
            d("6132013F1021", "セフジトレン", 300.0, "mg"),
        ],
        kid_drugs: &[d("6131001C1023", "アモキシシリン", 1.0, "g")],
        treat_rate: 0.95,
    },
];

/// Probability of having `c`, given age, sex and the conditions decided so far (comorbidity).
pub fn prevalence(c: Cond, age: u32, female: bool, has: &[bool; N_COND]) -> f64 {
    let a = age;
    let h = |x: Cond| has[x as usize];
    let band = |table: &[(u32, f64)]| table.iter().rev().find(|(from, _)| a >= *from).map_or(0.0, |(_, p)| *p);
    let sexf = |m: f64, f: f64| if female { f } else { m };
    let p = match c {
        Cond::Hypertension => {
            band(&[
                (0, 0.002),
                (20, 0.01),
                (30, 0.04),
                (40, 0.12),
                (50, 0.25),
                (60, 0.40),
                (70, 0.55),
                (80, 0.6),
            ]) * if a < 60 { sexf(1.3, 0.7) } else { 1.0 }
        }
        Cond::Diabetes => {
            band(&[(0, 0.001), (20, 0.02), (40, 0.06), (50, 0.12), (60, 0.18), (70, 0.22)])
                * sexf(1.35, 0.7)
                * if h(Cond::Hypertension) { 1.4 } else { 1.0 }
        }
        Cond::Dyslipidaemia => {
            band(&[(0, 0.001), (20, 0.03), (40, 0.10), (50, 0.2), (60, 0.3)])
                * if female && a >= 55 { 1.3 } else { 1.0 }
                * if h(Cond::Diabetes) { 1.6 } else { 1.0 }
        }
        Cond::Ckd => {
            band(&[(0, 0.001), (40, 0.015), (60, 0.05), (70, 0.1), (80, 0.15)])
                * if h(Cond::Diabetes) { 2.2 } else { 1.0 }
                * if h(Cond::Hypertension) { 1.6 } else { 1.0 }
        }
        Cond::Ihd => {
            band(&[(40, 0.01), (50, 0.03), (70, 0.08)])
                * sexf(1.8, 0.7)
                * if h(Cond::Diabetes) { 1.6 } else { 1.0 }
                * if h(Cond::Hypertension) || h(Cond::Dyslipidaemia) {
                    1.4
                } else {
                    1.0
                }
        }
        Cond::Af => band(&[(45, 0.01), (60, 0.03), (70, 0.06), (80, 0.1)]) * sexf(1.5, 0.8),
        Cond::HeartFailure => {
            band(&[(50, 0.01), (70, 0.04), (80, 0.09)])
                * if h(Cond::Af) || h(Cond::Ihd) { 2.5 } else { 1.0 }
                * if h(Cond::Hypertension) { 1.3 } else { 1.0 }
        }
        Cond::Asthma => band(&[(1, 0.08), (15, 0.04), (65, 0.05)]),
        Cond::Osteoporosis => {
            if female {
                band(&[(50, 0.08), (60, 0.15), (70, 0.25), (80, 0.35)])
            } else {
                band(&[(70, 0.04), (80, 0.07)])
            }
        }
        Cond::KneeOa => band(&[(45, 0.03), (60, 0.08), (70, 0.14)]) * sexf(0.6, 1.5),
        Cond::LowBackPain => band(&[(18, 0.05), (40, 0.08), (65, 0.1)]),
        Cond::Gerd => band(&[(18, 0.06), (50, 0.09), (65, 0.12)]),
        Cond::Depression => band(&[(13, 0.02), (15, 0.05), (65, 0.03)]) * sexf(0.8, 1.4),
        Cond::GastricCancer => band(&[(35, 0.001), (50, 0.005), (70, 0.012)]) * sexf(2.0, 0.8),
        Cond::Uri => band(&[(0, 0.4), (15, 0.15), (65, 0.08)]),
        Cond::Gastroenteritis => band(&[(0, 0.15), (15, 0.04)]),
        Cond::Pneumonia => band(&[(0, 0.02), (15, 0.005), (65, 0.02), (80, 0.05)]),
    };
    p.min(0.95)
}

/// A JLAC10 test the generator reports: 17 characters = analyte (5) + identification ("0000") +
/// material (3) + method (3) + result id (2). The method codes were chosen so that no 12-digit window of
/// the code passes the My Number check digit (which the gateway would reject); a test guards this.
#[derive(Clone, Copy)]
pub struct Lab {
    pub jlac10: &'static str,
    pub unit: &'static str,
}

/// HbA1c (NGSP), whole blood.
pub const HBA1C: Lab = Lab {
    jlac10: "3D046000001920402",
    unit: "%",
};
/// Fasting/random plasma glucose.
pub const GLUCOSE: Lab = Lab {
    jlac10: "3D010000002227101",
    unit: "mg/dL",
};
/// LDL cholesterol (direct).
pub const LDL: Lab = Lab {
    jlac10: "3F077000002327001",
    unit: "mg/dL",
};
/// HDL cholesterol.
pub const HDL: Lab = Lab {
    jlac10: "3F070000002327101",
    unit: "mg/dL",
};
/// Triglycerides.
pub const TG: Lab = Lab {
    jlac10: "3F015000002327001",
    unit: "mg/dL",
};
/// Serum creatinine (enzymatic).
pub const CREATININE: Lab = Lab {
    jlac10: "3C015000002327001",
    unit: "mg/dL",
};
/// eGFR (calculated).
pub const EGFR: Lab = Lab {
    jlac10: "8A065000002396101",
    unit: "mL/min/1.73m2",
};
/// AST.
pub const AST: Lab = Lab {
    jlac10: "3B035000002327001",
    unit: "U/L",
};
/// ALT.
pub const ALT: Lab = Lab {
    jlac10: "3B045000002327001",
    unit: "U/L",
};
/// Urine protein, test strip, qualitative.
pub const URINE_PROTEIN: Lab = Lab {
    jlac10: "1A010000000119111",
    unit: "",
};

/// Every JLAC10 code the generator can emit (for format tests).
#[cfg(test)]
pub const ALL_LABS: [Lab; 10] = [HBA1C, GLUCOSE, LDL, HDL, TG, CREATININE, EGFR, AST, ALT, URINE_PROTEIN];

/// Drug and non-drug allergens: (YJ code or "", substance).
const ALLERGENS: [(&str, &str); 14] = [
    ("6131001C1023", "アモキシシリン"),
    ("6111400A1031", "ベンジルペニシリン"),
    ("6132002M1023", "セファクロル"),
    ("1149019F1020", "ロキソプロフェン"),
    ("3399007H1021", "アスピリン"),
    ("6241013F1022", "レボフロキサシン"),
    ("", "卵"),
    ("", "牛乳"),
    ("", "小麦"),
    ("", "そば"),
    ("", "えび"),
    ("", "ピーナッツ"),
    ("", "造影剤"),
    ("", "ラテックス"),
];

/// Approximately normal deviate (Irwin–Hall of 4 uniforms, rescaled to unit variance): cheap, bounded
/// at ±3.5 σ, and good enough for lab values.
fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    let s: f64 = (0..4).map(|_| rng.random::<f64>()).sum();
    mean + (s - 2.0) * 3f64.sqrt() * sd
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Generates the clinical parts of a record for `patient`.
pub fn generate(rng: &mut ChaCha8Rng, patient: &Patient) -> Clinical {
    let age = date::age_on(patient.birth, patient.end);
    let has = draw_conditions(rng, age, patient.female);
    let dates = encounter_dates(rng, patient, &has);
    let mut out = Clinical {
        has_cancer: has[Cond::GastricCancer as usize],
        ..Clinical::default()
    };
    let active: Vec<Cond> = ALL_CONDS.into_iter().filter(|c| has[*c as usize]).collect();
    out.encounters = encounters(rng, patient, age, &dates, &active);
    for &c in &active {
        add_condition(rng, patient, age, c, &dates, &mut out);
    }
    labs(rng, patient, age, &has, &dates, &mut out.observations);
    if rng.random_bool(0.08) {
        let (yj, substance) = *pick(rng, &ALLERGENS);
        out.allergies.push(Allergy {
            yj_code: yj.to_owned(),
            substance: substance.to_owned(),
            recorded_date: date::format(*pick(rng, &dates)),
        });
    }
    out
}

fn draw_conditions(rng: &mut ChaCha8Rng, age: u32, female: bool) -> [bool; N_COND] {
    let mut has = [false; N_COND];
    for c in ALL_CONDS {
        has[c as usize] = rng.random_bool(prevalence(c, age, female, &has));
    }
    has
}

/// 1–6 visit dates inside a window of up to three years ending at the patient's last day, sorted.
fn encounter_dates(rng: &mut ChaCha8Rng, patient: &Patient, has: &[bool; N_COND]) -> Vec<Day> {
    let chronic = ALL_CONDS
        .iter()
        .filter(|c| has[**c as usize] && !SPECS[**c as usize].acute)
        .count();
    let n = (1 + rng.random_range(0..=2) + chronic / 2).min(6);
    let start = (patient.end - rng.random_range(30..=1095)).max(patient.birth);
    let mut dates: Vec<Day> = (0..n).map(|_| rng.random_range(start..=patient.end)).collect();
    dates.sort_unstable();
    dates
}

fn encounters(rng: &mut ChaCha8Rng, patient: &Patient, age: u32, dates: &[Day], active: &[Cond]) -> Vec<Encounter> {
    dates
        .iter()
        .enumerate()
        .map(|(i, &day)| {
            let cond = (!active.is_empty()).then(|| active[i % active.len()]);
            let severe = matches!(cond, Some(Cond::Pneumonia | Cond::HeartFailure | Cond::GastricCancer));
            let p_in = if severe {
                0.45
            } else {
                0.04 + if age >= 75 { 0.06 } else { 0.0 }
            };
            let roll: f64 = rng.random();
            let (kind, department, stay) = if roll < p_in {
                let dept = match cond {
                    Some(Cond::GastricCancer) => "外科",
                    Some(c) => pick::<&str>(rng, SPECS[c as usize].depts),
                    None => "内科",
                };
                ("inpatient", dept, Some(rng.random_range(3..=21)))
            } else if roll < p_in + 0.05 {
                ("emergency", "救急科", None)
            } else {
                ("outpatient", outpatient_department(rng, age, cond), None)
            };
            let discharge = stay.map(|los| day + los).and_then(|d| {
                // Past the patient's last day: died in hospital (discharge = death) or still admitted (empty).
                if d <= patient.end {
                    Some(d)
                } else if patient.end < date::TODAY {
                    Some(patient.end)
                } else {
                    None
                }
            });
            Encounter {
                admission_date: date::format(day),
                discharge_date: discharge.map(date::format).unwrap_or_default(),
                kind: kind.to_owned(),
                department: department.to_owned(),
            }
        })
        .collect()
}

fn outpatient_department(rng: &mut ChaCha8Rng, age: u32, cond: Option<Cond>) -> &'static str {
    if age < 15 {
        return "小児科";
    }
    match cond {
        Some(c) => pick::<&str>(rng, SPECS[c as usize].depts),
        None => pick::<&str>(rng, &["内科", "整形外科", "皮膚科", "眼科", "耳鼻咽喉科"]),
    }
}

fn add_condition(rng: &mut ChaCha8Rng, patient: &Patient, age: u32, c: Cond, dates: &[Day], out: &mut Clinical) {
    let spec = &SPECS[c as usize];
    let first = dates[0];
    // Acute illnesses start a few days before the visit they bring the patient to; chronic ones were
    // diagnosed at or before the first visit in the window, never before a plausible onset age.
    let (onset, visit) = if spec.acute {
        let visit = *pick(rng, dates);
        ((visit - rng.random_range(0..=4)).max(patient.birth), visit)
    } else {
        let earliest = date::years_before(first, 15)
            .max(date::years_before(patient.birth, -spec.min_onset_age))
            .max(patient.birth);
        let earliest = if earliest > first { patient.birth } else { earliest };
        (rng.random_range(earliest..=first), *pick(rng, dates))
    };
    let cancer = c == Cond::GastricCancer;
    let suspected = rng.random_bool(if cancer { 0.15 } else { 0.04 });
    let not_told = cancer && rng.random_bool(0.2);
    out.conditions.push(Condition {
        icd10: spec.icd10.to_owned(),
        disease_master_id: spec.master_id.to_owned(),
        onset_date: date::format(onset),
        suspected,
        not_told,
    });
    if !suspected && rng.random_bool(spec.treat_rate) {
        prescribe(rng, age, spec, visit, &mut out.medications);
    }
}

fn prescribe(rng: &mut ChaCha8Rng, age: u32, spec: &CondSpec, start: Day, meds: &mut Vec<Medication>) {
    let list = if age < 15 && !spec.kid_drugs.is_empty() {
        spec.kid_drugs
    } else {
        spec.drugs
    };
    let first = rng.random_range(0..list.len());
    let count = if list.len() > 1 && rng.random_bool(0.35) { 2 } else { 1 };
    for k in 0..count {
        let drug = list[(first + k) % list.len()];
        let days = if spec.acute {
            7
        } else {
            *pick(rng, &[14u32, 28, 28, 30, 56, 84, 90])
        };
        meds.push(Medication {
            yj_code: drug.yj.to_owned(),
            start_date: date::format(start),
            days,
            daily_dose: drug.dose,
            dose_unit: drug.unit.to_owned(),
        });
    }
}

/// A patient's underlying lab levels, so repeated panels in one record agree with each other.
struct LabBaseline {
    hba1c: f64,
    glucose: f64,
    ldl: f64,
    hdl: f64,
    tg: f64,
    creatinine: f64,
    ast: f64,
    alt: f64,
}

fn baseline(rng: &mut ChaCha8Rng, age: u32, female: bool, has: &[bool; N_COND]) -> LabBaseline {
    let dm = has[Cond::Diabetes as usize];
    let dys = has[Cond::Dyslipidaemia as usize];
    let hba1c = if dm {
        normal(rng, 7.2, 0.9)
    } else {
        normal(rng, 5.5, 0.3)
    }
    .clamp(4.5, 13.0);
    let glucose = if dm {
        normal(rng, 150.0, 35.0)
    } else {
        normal(rng, 95.0, 9.0)
    }
    .clamp(60.0, 400.0);
    LabBaseline {
        hba1c,
        glucose,
        ldl: if dys {
            normal(rng, 145.0, 30.0)
        } else {
            normal(rng, 112.0, 25.0)
        }
        .clamp(40.0, 260.0),
        hdl: if female {
            normal(rng, 64.0, 12.0)
        } else {
            normal(rng, 54.0, 11.0)
        }
        .clamp(25.0, 120.0),
        tg: if dys || dm {
            normal(rng, 180.0, 50.0)
        } else {
            normal(rng, 105.0, 30.0)
        }
        .clamp(30.0, 600.0),
        creatinine: creatinine_for(rng, age, female, has[Cond::Ckd as usize]),
        ast: normal(rng, 22.0, 5.0).max(8.0),
        alt: normal(rng, 20.0, 7.0).max(5.0),
    }
}

/// Japanese eGFR equation (JSN 2009): 194 × Cr^-1.094 × age^-0.287 (× 0.739 for women).
fn egfr(creatinine: f64, age: u32, female: bool) -> f64 {
    194.0 * creatinine.powf(-1.094) * f64::from(age).powf(-0.287) * if female { 0.739 } else { 1.0 }
}

/// Chooses a target eGFR (30–59 with CKD, age-declining ≥ 60 without) and inverts the equation, so that
/// creatinine and eGFR are mutually consistent.
fn creatinine_for(rng: &mut ChaCha8Rng, age: u32, female: bool, ckd: bool) -> f64 {
    if age < 18 {
        return (0.2 + 0.03 * f64::from(age) + normal(rng, 0.0, 0.04)).max(0.15);
    }
    let target = if ckd {
        rng.random_range(31.0..58.0)
    } else {
        normal(rng, 102.0 - 0.55 * f64::from(age), 12.0).clamp(62.0, 130.0)
    };
    let at_one = egfr(1.0, age, female);
    (target / at_one).powf(-1.0 / 1.094)
}

fn labs(
    rng: &mut ChaCha8Rng,
    patient: &Patient,
    age: u32,
    has: &[bool; N_COND],
    dates: &[Day],
    obs: &mut Vec<Observation>,
) {
    let adult = age >= 15;
    let any_chronic = ALL_CONDS.iter().any(|c| has[*c as usize] && !SPECS[*c as usize].acute);
    let panels = match (adult, any_chronic) {
        (false, _) => usize::from(rng.random_bool(0.25)),
        (true, true) => 1 + usize::from(dates.len() >= 3),
        (true, false) => usize::from(rng.random_bool(0.7)),
    };
    if panels == 0 {
        return;
    }
    let base = baseline(rng, age, patient.female, has);
    let dm = has[Cond::Diabetes as usize];
    let lipids = age >= 20 && (dm || has[Cond::Dyslipidaemia as usize] || rng.random_bool(0.5));
    let a1c = age >= 20 && (dm || rng.random_bool(0.4));
    let urine = rng.random_bool(if dm || has[Cond::Ckd as usize] { 0.5 } else { 0.15 });
    let mut used = [false; 6];
    for _ in 0..panels {
        let k = rng.random_range(0..dates.len());
        if std::mem::replace(&mut used[k], true) {
            continue; // one panel per visit
        }
        let day = dates[k];
        let mut push = |lab: Lab, value: f64| obs.push(quantity(lab, day, value));
        push(AST, normal(rng, base.ast, 2.0).max(5.0).round());
        push(ALT, normal(rng, base.alt, 3.0).max(3.0).round());
        let cr = round_to(normal(rng, base.creatinine, 0.03).max(0.1), 2);
        push(CREATININE, cr);
        if age >= 18 {
            push(EGFR, round_to(egfr(cr, age, patient.female), 1));
        }
        if adult {
            push(GLUCOSE, normal(rng, base.glucose, 6.0).max(50.0).round());
        }
        if lipids {
            push(LDL, normal(rng, base.ldl, 6.0).max(30.0).round());
            push(HDL, normal(rng, base.hdl, 3.0).max(20.0).round());
            push(TG, normal(rng, base.tg, 15.0).max(25.0).round());
        }
        if a1c {
            push(HBA1C, round_to(normal(rng, base.hba1c, 0.15).clamp(4.5, 13.0), 1));
        }
        if urine {
            let positive = rng.random_bool(if has[Cond::Ckd as usize] { 0.6 } else { 0.08 });
            obs.push(Observation {
                jlac10: URINE_PROTEIN.jlac10.to_owned(),
                jlac11: String::new(),
                date: date::format(day),
                value: 0.0,
                unit: String::new(),
                text_value: if positive { "+" } else { "-" }.to_owned(),
            });
        }
    }
}

fn quantity(lab: Lab, day: Day, value: f64) -> Observation {
    Observation {
        jlac10: lab.jlac10.to_owned(),
        jlac11: String::new(),
        date: date::format(day),
        value,
        unit: lab.unit.to_owned(),
        text_value: String::new(),
    }
}
