//! `tokumei bench km`: the whole-record engine at scale — synthetic patients in demographic classes with about
//! 20 events each (diagnoses with onset months, visits with department and months, lab tests with months),
//! (k, k^m) item search and the independent verifier timed separately, peak RSS reported.
//!
//! The data are drawn from skewed (Zipf-like) code frequencies over real code shapes — ICD-10 codes under their
//! real chapters and blocks, JLAC10-shaped lab codes, a handful of departments — so that the search meets rare
//! and common items as a release does; the demographic classes (age band × sex × region) stand for the
//! relational engine's output.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokumei_deid::generators::Generator;
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::transaction::search::SearchConfig;
use tokumei_deid::transaction::{Component, Event, ItemKind, ItemNode, KmParams, MAX_FIELDS, RtData, evaluate, search};
use tokumei_deid::verify_km::{WrittenRecords, verify_km};

use crate::host::peak_rss_mib;
use tokumei_client::output::emit;

/// Arguments of `tokumei bench km`.
#[derive(Args, Debug)]
pub struct KmBench {
    /// Patients.
    #[arg(long, default_value_t = 100_000)]
    pub patients: u32,
    /// Mean events per patient.
    #[arg(long, default_value_t = 20)]
    pub events: u32,
    /// k.
    #[arg(long, default_value_t = 5)]
    pub k: u32,
    /// m.
    #[arg(long, default_value_t = 2)]
    pub m: usize,
    /// Largest share of events that may be suppressed.
    #[arg(long, default_value_t = 0.05)]
    pub max_suppression: f64,
    /// Demographic classes (age band × sex × region stand-ins).
    #[arg(long, default_value_t = 240)]
    pub classes: u32,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Serialize)]
struct Report {
    patients: u32,
    events: u64,
    classes: u32,
    k: u32,
    m: usize,
    seconds_generate: f64,
    seconds_search: f64,
    recodings_evaluated: usize,
    strategy: String,
    levels: Vec<Vec<u8>>,
    suppressed_events: u64,
    item_loss: f64,
    suppressed_share: f64,
    seconds_verify: f64,
    verified: bool,
    /// The crude alternative a careful analyst might apply by hand: every code at its coarsest named level
    /// (ICD-10 chapter, JLAC10 analyte group) and every date at year, other components as recorded, then
    /// whatever class-local suppression (k, k^m) still needs.
    crude: CrudeComparison,
    fewest_candidates: u64,
    peak_rss_mib: f64,
}

#[derive(Serialize)]
struct CrudeComparison {
    levels: Vec<Vec<u8>>,
    suppressed_events: u64,
    suppressed_share: f64,
    within_suppression_limit: bool,
    item_loss: f64,
}

/// The crude recoding: code components one level below `*` (chapter, analyte group), date components at year
/// (two levels up: month → quarter → year), everything else as recorded.
fn crude_node(kinds: &[ItemKind]) -> ItemNode {
    ItemNode {
        levels: kinds
            .iter()
            .map(|k| {
                k.components
                    .iter()
                    .map(|c| {
                        let top = c.hierarchy.height().saturating_sub(1) as u8;
                        if c.name.contains("date") {
                            2.min(top)
                        } else if c.name == "icd10" || c.name == "jlac10" {
                            top.saturating_sub(1)
                        } else {
                            0
                        }
                    })
                    .collect()
            })
            .collect(),
    }
}

/// ICD-10 codes (3-character categories with a subcode) over several chapters.
const ICD: &[&str] = &[
    "I10", "E11.9", "E78.5", "N18.3", "I25.1", "I48.9", "I50.9", "J45.9", "M81.0", "M17.9", "M54.5", "K21.9", "F32.9",
    "C16.9", "J06.9", "A09.9", "J18.9", "E11.2", "I63.9", "K29.7", "H25.9", "L20.9", "G47.0", "N39.0", "C34.9",
    "C50.9", "K74.6", "E03.9", "D50.9", "R51",
];
const DEPARTMENTS: &[&str] = &[
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15",
];
const KINDS: &[&str] = &["outpatient", "inpatient"];

fn months() -> Vec<String> {
    (2020..2026)
        .flat_map(|y| (1..=12).map(move |m| format!("{y}-{m:02}")))
        .collect()
}

fn jlac10() -> Vec<String> {
    (0..40)
        .map(|i| format!("{:05}000002327{:03}", 3000 + i * 7, i % 5))
        .collect()
}

/// `YYYY-MM` → `YYYY-Qn` → `YYYY` → `*`.
fn period_hierarchy(months: &[String]) -> Result<Hierarchy> {
    let rows = months
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let month: u32 = m[5..7].parse().unwrap_or(1);
            (
                n + 1,
                vec![
                    m.clone(),
                    format!("{}-Q{}", &m[..4], (month - 1) / 3 + 1),
                    m[..4].to_owned(),
                    "*".into(),
                ],
            )
        })
        .collect();
    Ok(Hierarchy::from_rows("period", rows)?)
}

fn flat(values: &[&str]) -> Result<Hierarchy> {
    Ok(Generator::Flat.generate(values)?)
}

/// A Zipf-like pick among `n` (rank r with weight 1/(r+1)).
fn zipf(rng: &mut impl Rng, n: usize) -> u32 {
    let h: f64 = (1..=n).map(|r| 1.0 / r as f64).sum();
    let mut x = rng.random::<f64>() * h;
    for r in 0..n {
        x -= 1.0 / (r + 1) as f64;
        if x <= 0.0 {
            return r as u32;
        }
    }
    (n - 1) as u32
}

fn generate(a: &KmBench) -> Result<(RtData, Vec<u32>, Vec<Event>)> {
    let months = months();
    let month_refs: Vec<&str> = months.iter().map(String::as_str).collect();
    let jlac = jlac10();
    let jlac_refs: Vec<&str> = jlac.iter().map(String::as_str).collect();
    let period = period_hierarchy(&months)?;
    let kinds = vec![
        ItemKind {
            name: "conditions".into(),
            components: vec![
                Component {
                    name: "icd10".into(),
                    hierarchy: Generator::Icd10.generate(ICD)?,
                    fields: 1,
                },
                Component {
                    name: "onset_date".into(),
                    hierarchy: period.clone(),
                    fields: 1,
                },
            ],
        },
        ItemKind {
            name: "encounters".into(),
            components: vec![
                Component {
                    name: "kind".into(),
                    hierarchy: flat(KINDS)?,
                    fields: 1,
                },
                Component {
                    name: "department".into(),
                    hierarchy: flat(DEPARTMENTS)?,
                    fields: 1,
                },
                Component {
                    name: "admission_date+discharge_date".into(),
                    hierarchy: period.clone(),
                    fields: 2,
                },
            ],
        },
        ItemKind {
            name: "observations".into(),
            components: vec![
                Component {
                    name: "jlac10".into(),
                    hierarchy: Generator::Jlac10.generate(&jlac_refs)?,
                    fields: 1,
                },
                Component {
                    name: "date".into(),
                    hierarchy: period,
                    fields: 1,
                },
            ],
        },
    ];
    let leaf = |h: &Hierarchy, v: &str| h.leaf_code(v).unwrap_or(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let class_of: Vec<u32> = (0..a.patients).map(|p| p % a.classes.max(1)).collect();
    let mut events = Vec::new();
    for p in 0..a.patients {
        let n = rng.random_range(a.events / 2..=a.events * 3 / 2);
        let home_month = rng.random_range(0..months.len() as u32);
        for _ in 0..n {
            let kind = match rng.random_range(0..10) {
                0..=1 => 0u16,
                2..=4 => 1,
                _ => 2,
            };
            let month = ((home_month + zipf(&mut rng, 24)) as usize).min(months.len() - 1);
            let mut leaves = [0u32; MAX_FIELDS];
            let comps = &kinds[kind as usize].components;
            match kind {
                0 => {
                    leaves[0] = leaf(&comps[0].hierarchy, ICD[zipf(&mut rng, ICD.len()) as usize]);
                    leaves[1] = leaf(&comps[1].hierarchy, month_refs[month]);
                }
                1 => {
                    leaves[0] = zipf(&mut rng, KINDS.len());
                    leaves[1] = leaf(
                        &comps[1].hierarchy,
                        DEPARTMENTS[zipf(&mut rng, DEPARTMENTS.len()) as usize],
                    );
                    leaves[2] = leaf(&comps[2].hierarchy, month_refs[month]);
                    leaves[3] = leaf(
                        &comps[2].hierarchy,
                        month_refs[(month + zipf(&mut rng, 2) as usize).min(months.len() - 1)],
                    );
                }
                _ => {
                    leaves[0] = leaf(&comps[0].hierarchy, jlac_refs[zipf(&mut rng, jlac_refs.len()) as usize]);
                    leaves[1] = leaf(&comps[1].hierarchy, month_refs[month]);
                }
            }
            events.push(Event {
                patient: p,
                kind,
                leaves,
            });
        }
    }
    let data = RtData::new(kinds, class_of.clone(), events.clone())?;
    Ok((data, class_of, events))
}

/// Runs `tokumei bench km`.
pub fn run(a: KmBench, json: bool) -> Result<()> {
    let t = Instant::now();
    let (data, class_of, events) = generate(&a)?;
    let seconds_generate = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let params = KmParams { k: a.k, m: a.m };
    let found = search(&data, &SearchConfig::new(params, a.max_suppression))?;
    let seconds_search = t.elapsed().as_secs_f64();
    let e = &found.evaluation;
    // What the files would say, then the independent count.
    let detail = e
        .detail
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the search returned no recoding"))?;
    let t = Instant::now();
    let mut written = WrittenRecords {
        demographics: Some(
            class_of
                .iter()
                .enumerate()
                .map(|(p, c)| (format!("p{p}"), vec![format!("c{c}")]))
                .collect(),
        ),
        items: Vec::with_capacity(events.len()),
    };
    for (i, ev) in events.iter().enumerate() {
        if let Some(item) = detail.item_of_event[i] {
            let (kind, codes) = detail.items[item as usize];
            written
                .items
                .push((format!("p{}", ev.patient), format!("{kind}|{codes:?}")));
        }
    }
    let report = verify_km(&written, a.k, a.m)?;
    let seconds_verify = t.elapsed().as_secs_f64();
    let crude = evaluate(&data, &crude_node(data.kinds()), &params, false)?;
    let share = |n: u64| n as f64 / data.event_count().max(1) as f64;
    let crude = CrudeComparison {
        levels: crude.node.levels.clone(),
        suppressed_events: crude.suppressed,
        suppressed_share: share(crude.suppressed),
        within_suppression_limit: crude.within(&data, a.max_suppression),
        item_loss: crude.loss.value(),
    };
    let r = Report {
        patients: a.patients,
        events: data.event_count(),
        classes: a.classes,
        k: a.k,
        m: a.m,
        seconds_generate,
        seconds_search,
        recodings_evaluated: found.evaluated,
        strategy: format!("{:?}", found.strategy),
        levels: e.node.levels.clone(),
        suppressed_events: e.suppressed,
        suppressed_share: share(e.suppressed),
        item_loss: e.loss.value(),
        crude,
        seconds_verify,
        verified: report.ok,
        fewest_candidates: report.smallest_support,
        peak_rss_mib: peak_rss_mib(None),
    };
    emit(json, &r, |r| {
        println!(
            "k^m benchmark: {} patients, {} events, {} classes, k={} m={}",
            r.patients, r.events, r.classes, r.k, r.m
        );
        println!(
            "  search {:.2}s ({} recodings, {}), levels {:?}, {} events suppressed, item loss {:.3}",
            r.seconds_search, r.recodings_evaluated, r.strategy, r.levels, r.suppressed_events, r.item_loss
        );
        println!(
            "  crude alternative (codes at chapter / analyte group, dates at year): levels {:?}, {} events suppressed ({:.2} %{}), item loss {:.3}",
            r.crude.levels,
            r.crude.suppressed_events,
            r.crude.suppressed_share * 100.0,
            if r.crude.within_suppression_limit {
                ""
            } else {
                ", over the limit"
            },
            r.crude.item_loss
        );
        println!(
            "  independent verification {:.2}s: {} (fewest candidates {}); generation {:.2}s; peak RSS {:.0} MiB",
            r.seconds_verify,
            if r.verified { "ok" } else { "FAILED" },
            r.fewest_candidates,
            r.seconds_generate,
            r.peak_rss_mib
        );
    })
}
