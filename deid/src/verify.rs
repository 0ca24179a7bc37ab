//! Independent verifier of an anonymised table.
//!
//! Written separately from the engine on purpose — string-keyed `BTreeMap`s, no class tables, no
//! encoding, no lattice — so that a bug in the engine's counting cannot hide itself. It reads the
//! output only: rows whose QIs are all `*` are suppressed (counted and checked against the limit
//! if one is given), the others are grouped by their QI tuple and each group is checked for k
//! (distinct subjects with a subject column), l-diversity and t-closeness. Records generalised to
//! the top of every hierarchy also read `*` everywhere; such rows exceed the suppression limit only
//! if, taken together, they would not satisfy the model as a class of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hierarchy::Hierarchy;
use crate::model::{LDiversity, LVariant, TCloseness, TDistance};
use crate::table::Table;

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyConfig {
    /// QI column names.
    pub qis: Vec<String>,
    /// Minimal class size (distinct subjects if `subject` is set).
    pub k: u32,
    /// l-diversity to check on every sensitive attribute.
    pub l_diversity: Option<LDiversity>,
    /// t-closeness to check on every sensitive attribute.
    pub t_closeness: Option<TCloseness>,
    /// Sensitive columns, with a hierarchy where hierarchical distance or value order needs one.
    pub sensitive: Vec<(String, Option<Hierarchy>)>,
    /// Subject column for patient-level counting.
    pub subject: Option<String>,
    /// Maximal suppressed fraction, if it should be checked.
    pub suppression_limit: Option<f64>,
    /// Maximal average re-identification risk, if it should be checked.
    pub average_risk: Option<f64>,
}

/// Verification result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    /// Rows read.
    pub records: u64,
    /// Rows with `*` in every QI.
    pub suppressed: u64,
    /// Suppressed fraction.
    pub suppressed_fraction: f64,
    /// Groups of non-suppressed rows.
    pub classes: u64,
    /// Smallest group (distinct subjects with a subject column).
    pub min_class_size: u64,
    /// Number of violations found.
    pub violation_count: u64,
    /// The first violations, described.
    pub violations: Vec<String>,
    /// True if no violation was found.
    pub ok: bool,
}

const SLACK: f64 = 1e-9;
const MAX_LISTED: usize = 20;

#[derive(Default)]
struct Group {
    rows: u64,
    subjects: BTreeSet<String>,
    sensitive: Vec<BTreeMap<String, u64>>,
}

/// Reads an output CSV (I/O) and verifies it. The delimiter is guessed from the header line
/// (`,`, `;`, tab or `|`, whichever occurs most) unless given.
pub fn verify_csv(path: &Path, delimiter: Option<u8>, cfg: &VerifyConfig) -> Result<VerifyReport> {
    let delimiter = match delimiter {
        Some(d) => d,
        None => {
            let text = std::fs::read_to_string(path)?;
            let header = text.lines().next().unwrap_or_default();
            *[b',', b';', b'\t', b'|']
                .iter()
                .max_by_key(|&&d| header.bytes().filter(|&b| b == d).count())
                .unwrap_or(&b',')
        }
    };
    verify_table(&Table::read_csv(path, delimiter)?, cfg)
}

/// Verifies an already loaded output table.
pub fn verify_table(table: &Table, cfg: &VerifyConfig) -> Result<VerifyReport> {
    let col = |name: &str| table.index_of(name);
    let qi_cols: Vec<usize> = cfg.qis.iter().map(|q| col(q)).collect::<Result<_>>()?;
    if qi_cols.is_empty() {
        return Err(Error::Config("name at least one QI to verify".into()));
    }
    let sens_cols: Vec<usize> = cfg.sensitive.iter().map(|(s, _)| col(s)).collect::<Result<_>>()?;
    if (cfg.l_diversity.is_some() || cfg.t_closeness.is_some()) && sens_cols.is_empty() {
        return Err(Error::Config(
            "l-diversity and t-closeness need a sensitive column".into(),
        ));
    }
    let subject_col = cfg.subject.as_deref().map(col).transpose()?;
    let columns = table.columns();
    let n = table.rows() as u64;

    let mut groups: BTreeMap<Vec<&str>, Group> = BTreeMap::new();
    let mut suppressed = 0u64;
    // All-`*` rows: suppressed, or generalised to the top of every hierarchy — indistinguishable.
    let mut starred = Group::default();
    let mut overall: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); sens_cols.len()];
    // subject -> (has suppressed row, has kept row)
    let mut subject_rows: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for row in 0..table.rows() {
        let tuple: Vec<&str> = qi_cols.iter().map(|&c| columns[c].value(row)).collect();
        for (i, &c) in sens_cols.iter().enumerate() {
            *overall[i].entry(columns[c].value(row).to_string()).or_default() += 1;
        }
        let is_suppressed = tuple.iter().all(|v| *v == "*");
        if let Some(sc) = subject_col {
            let e = subject_rows.entry(columns[sc].value(row)).or_default();
            if is_suppressed { e.0 = true } else { e.1 = true }
        }
        if is_suppressed {
            suppressed += 1;
            starred.rows += 1;
            if let Some(sc) = subject_col {
                starred.subjects.insert(columns[sc].value(row).to_string());
            }
            if starred.sensitive.is_empty() {
                starred.sensitive = vec![BTreeMap::new(); sens_cols.len()];
            }
            for (i, &c) in sens_cols.iter().enumerate() {
                *starred.sensitive[i]
                    .entry(columns[c].value(row).to_string())
                    .or_default() += 1;
            }
            continue;
        }
        let g = groups.entry(tuple).or_default();
        g.rows += 1;
        if let Some(sc) = subject_col {
            g.subjects.insert(columns[sc].value(row).to_string());
        }
        if g.sensitive.is_empty() {
            g.sensitive = vec![BTreeMap::new(); sens_cols.len()];
        }
        for (i, &c) in sens_cols.iter().enumerate() {
            *g.sensitive[i].entry(columns[c].value(row).to_string()).or_default() += 1;
        }
    }

    let mut violations: Vec<String> = Vec::new();
    let mut count = 0u64;
    let mut report = |msg: String| {
        count += 1;
        if violations.len() < MAX_LISTED {
            violations.push(msg);
        }
    };
    let orders: Vec<Vec<String>> = cfg
        .sensitive
        .iter()
        .zip(&overall)
        .map(|((_, h), dist)| value_order(dist.keys().cloned().collect(), h.as_ref()))
        .collect();
    let mut min_size = u64::MAX;
    let mut kept_units = 0u64;
    for (tuple, g) in &groups {
        let size = if subject_col.is_some() {
            g.subjects.len() as u64
        } else {
            g.rows
        };
        min_size = min_size.min(size);
        kept_units += size;
        if size < cfg.k as u64 {
            report(format!(
                "class {tuple:?} has {size} {} < k={}",
                if subject_col.is_some() { "subjects" } else { "records" },
                cfg.k
            ));
        }
        for (i, (name, h)) in cfg.sensitive.iter().enumerate() {
            let hist = &g.sensitive[i];
            if let Some(l) = &cfg.l_diversity
                && !l_diverse(hist, l)
            {
                report(format!(
                    "class {tuple:?} is not {:?} {}-diverse in {name:?}",
                    l.variant, l.l
                ));
            }
            if let Some(t) = &cfg.t_closeness {
                let d = distance(hist, &overall[i], &orders[i], h.as_ref(), t.distance);
                if d > t.t + SLACK {
                    report(format!(
                        "class {tuple:?}: distance {d:.6} in {name:?} exceeds t={}",
                        t.t
                    ));
                }
            }
        }
    }
    // Rows generalised to `*` everywhere look like suppressed ones; they are only over the limit
    // if they could not stand as one class of their own.
    let starred_is_valid_class = starred.rows > 0 && {
        let size = if subject_col.is_some() {
            starred.subjects.len() as u64
        } else {
            starred.rows
        };
        size >= cfg.k as u64
            && cfg.sensitive.iter().enumerate().all(|(i, (_, h))| {
                cfg.l_diversity
                    .as_ref()
                    .is_none_or(|l| l_diverse(&starred.sensitive[i], l))
                    && cfg.t_closeness.as_ref().is_none_or(|t| {
                        distance(&starred.sensitive[i], &overall[i], &orders[i], h.as_ref(), t.distance) <= t.t + SLACK
                    })
            })
    };
    if let Some(limit) = cfg.suppression_limit
        && suppressed as f64 > limit * n as f64 + SLACK
        && !starred_is_valid_class
    {
        report(format!(
            "{suppressed} of {n} records suppressed, above the limit {limit}"
        ));
    }
    if let Some(r) = cfg.average_risk
        && kept_units > 0
        && groups.len() as f64 / kept_units as f64 > r + SLACK
    {
        report(format!(
            "average re-identification risk {} exceeds {r}",
            groups.len() as f64 / kept_units as f64
        ));
    }
    for (subject, (s, k)) in &subject_rows {
        if *s && *k {
            report(format!(
                "subject {subject:?} is suppressed in some rows but not in others"
            ));
        }
    }
    Ok(VerifyReport {
        records: n,
        suppressed,
        suppressed_fraction: if n == 0 { 0.0 } else { suppressed as f64 / n as f64 },
        classes: groups.len() as u64,
        min_class_size: if groups.is_empty() { 0 } else { min_size },
        violation_count: count,
        ok: count == 0,
        violations,
    })
}

fn l_diverse(hist: &BTreeMap<String, u64>, l: &LDiversity) -> bool {
    let total: u64 = hist.values().sum();
    match l.variant {
        LVariant::Distinct => hist.len() >= l.l as usize,
        LVariant::Entropy => {
            let h: f64 = hist
                .values()
                .map(|&c| {
                    let p = c as f64 / total as f64;
                    -p * p.ln()
                })
                .sum();
            h + SLACK >= (l.l as f64).ln()
        }
        LVariant::Recursive { c } => {
            let mut counts: Vec<u64> = hist.values().copied().collect();
            counts.sort_by(|a, b| b.cmp(a));
            let l = l.l as usize;
            counts.len() >= l && (counts[0] as f64) < c * counts[l - 1..].iter().sum::<u64>() as f64
        }
    }
}

/// Order of sensitive values for the ordered distance: hierarchy lines, else numeric, else text.
fn value_order(mut values: Vec<String>, h: Option<&Hierarchy>) -> Vec<String> {
    if let Some(h) = h {
        values.sort_by_key(|v| h.leaf_code(v).unwrap_or(u32::MAX));
    } else if values.iter().all(|v| v.trim().parse::<f64>().is_ok()) {
        values.sort_by(|a, b| {
            let (x, y) = (
                a.trim().parse::<f64>().unwrap_or(0.0),
                b.trim().parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y).then(a.cmp(b))
        });
    } else {
        values.sort();
    }
    values
}

fn distance(
    hist: &BTreeMap<String, u64>,
    overall: &BTreeMap<String, u64>,
    order: &[String],
    h: Option<&Hierarchy>,
    kind: TDistance,
) -> f64 {
    let class_total: u64 = hist.values().sum();
    let all_total: u64 = overall.values().sum();
    // p - q per value, in order.
    let diff: Vec<f64> = order
        .iter()
        .map(|v| {
            hist.get(v).copied().unwrap_or(0) as f64 / class_total as f64
                - overall.get(v).copied().unwrap_or(0) as f64 / all_total as f64
        })
        .collect();
    match kind {
        TDistance::Equal => diff.iter().map(|d| d.abs()).sum::<f64>() / 2.0,
        TDistance::Ordered => {
            if order.len() < 2 {
                return 0.0;
            }
            let mut running = 0.0;
            let mut total = 0.0;
            for d in &diff[..diff.len() - 1] {
                running += d;
                total += running.abs();
            }
            total / (order.len() - 1) as f64
        }
        TDistance::Hierarchical => {
            let Some(h) = h else { return f64::INFINITY };
            // Node of each value at each level above the leaves (plus a root if the top has
            // several labels).
            let leaf = |v: &String| h.leaf_code(v).unwrap_or(0) as usize;
            let mut levels: Vec<Vec<String>> = (1..h.height())
                .map(|l| {
                    order
                        .iter()
                        .map(|v| h.label(l, h.level(l).of_leaf()[leaf(v)]).to_string())
                        .collect()
                })
                .collect();
            let single_top = levels.last().is_some_and(|top| top.iter().all(|x| *x == top[0]));
            if !single_top {
                levels.push(vec!["<root>".to_string(); order.len()]);
            }
            let height = levels.len() as f64;
            // Extra mass of each node at the previous level, keyed by that node's identity.
            let mut below: Vec<String> = order.to_vec();
            let mut extra: BTreeMap<String, f64> = order.iter().cloned().zip(diff.iter().copied()).collect();
            let mut cost = 0.0;
            for (li, level) in levels.iter().enumerate() {
                let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
                for (child, parent) in below.iter().zip(level) {
                    children.entry(parent).or_default().insert(child);
                }
                let mut next: BTreeMap<String, f64> = BTreeMap::new();
                for (parent, kids) in &children {
                    let (mut pos, mut neg, mut sum) = (0.0, 0.0, 0.0);
                    for kid in kids {
                        let e = extra.get(*kid).copied().unwrap_or(0.0);
                        if e > 0.0 {
                            pos += e
                        } else {
                            neg -= e
                        }
                        sum += e;
                    }
                    cost += (li + 1) as f64 / height * f64::min(pos, neg);
                    next.insert(parent.to_string(), sum);
                }
                extra = next;
                below = level.clone();
            }
            cost
        }
    }
}
