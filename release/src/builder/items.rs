//! The event tables of a release as the items of (k, k^m)-anonymity: every released column of an event row
//! except the pseudonym and measured values is part of the item an adversary may know — the code, the period,
//! the department, a flag — and is generalised along its hierarchy by the `deid` transactional engine, which
//! also suppresses the items that stay rare inside a demographic class. Rows of suppressed items leave the file.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tokumei_deid::generators::Generator;
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::transaction::search::{SearchConfig, Strategy};
use tokumei_deid::transaction::{Component, Event, ItemKind, KmParams, MAX_FIELDS, RtData, search};
use tokumei_store::Table;

use crate::catalogue::{self, ColumnRole};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;

/// What the item anonymisation did to one event table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TableItems {
    /// Table.
    pub table: String,
    /// Item columns and the level each was released at (0 = as recorded; the top is `*`).
    pub levels: Vec<(String, u32)>,
    /// Rows before.
    pub rows_before: u64,
    /// Rows suppressed as rare items.
    pub suppressed_rows: u64,
    /// Information loss of this table's items (0 = as recorded; a suppressed row counts 1).
    pub loss: f64,
}

/// What the item anonymisation did to the release.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ItemsOutcome {
    /// Per event table.
    pub tables: Vec<TableItems>,
    /// Information loss of the events (0 = as recorded, 1 = everything at `*` or suppressed).
    pub loss: f64,
    /// Exact (proven optimal) or greedy.
    pub strategy: Strategy,
    /// Recodings evaluated.
    pub evaluated: usize,
    /// Event rows withheld because their patient has no row in the released patient file.
    pub without_patient_row: u64,
}

/// The columns of an event sheet that form its item, with the component each belongs to.
fn item_columns(table: Table, sheet: &Sheet) -> Vec<(usize, ColumnRole)> {
    sheet
        .header
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, c)| (i, catalogue::role(table, c)))
        .filter(|(_, role)| {
            !matches!(
                role,
                ColumnRole::Measured { .. } | ColumnRole::Withheld | ColumnRole::FreeText
            )
        })
        .collect()
}

/// `YYYY-MM` → `YYYY-Qn` → `YYYY` → `*`; empty stays empty up to `*`; anything else is refused.
fn period_hierarchy(column: &str, values: &[&str]) -> Result<Hierarchy> {
    let mut rows = Vec::new();
    for (n, v) in values.iter().enumerate() {
        let chain = if v.is_empty() {
            vec![String::new(), String::new(), String::new(), "*".into()]
        } else {
            let month: u32 = v
                .get(5..7)
                .and_then(|m| m.parse().ok())
                .filter(|m| (1..=12).contains(m) && v.len() == 7)
                .ok_or_else(|| ReleaseError::NotReleasable(format!("column {column}: a date is not YYYY-MM")))?;
            let year = &v[..4];
            vec![
                (*v).to_owned(),
                format!("{year}-Q{}", (month - 1) / 3 + 1),
                year.to_owned(),
                "*".into(),
            ]
        };
        rows.push((n + 1, chain));
    }
    Ok(Hierarchy::from_rows(
        &format!("{column} (month → quarter → year → *)"),
        rows,
    )?)
}

/// The hierarchy of a coded or plain item column over its distinct values (empty values chain to `*`).
fn code_hierarchy(column: &str, generator: Option<Generator>, values: &[&str]) -> Result<Hierarchy> {
    let present: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    let generated = match generator {
        Some(g) if !present.is_empty() => Some(
            g.generate(&present)
                // The generator's own message quotes the offending value: name the column only.
                .map_err(|_| {
                    ReleaseError::NotReleasable(format!("column {column}: a value does not fit its code system"))
                })?,
        ),
        _ => None,
    };
    let height = generated.as_ref().map_or(2, Hierarchy::height);
    let mut rows = Vec::new();
    for (n, v) in values.iter().enumerate() {
        let chain: Vec<String> = match (&generated, v.is_empty()) {
            (Some(h), false) => {
                let leaf = h
                    .leaf_code(v)
                    .ok_or_else(|| ReleaseError::NotReleasable(format!("column {column}: a code has no parent")))?;
                (0..height)
                    .map(|l| h.label(l, h.level(l).of_leaf()[leaf as usize]).to_owned())
                    .collect()
            }
            (None, false) => vec![(*v).to_owned(), "*".into()],
            (_, true) => {
                let mut c = vec![String::new(); height - 1];
                c.push("*".into());
                c
            }
        };
        rows.push((n + 1, chain));
    }
    Ok(Hierarchy::from_rows(column, rows)?)
}

/// The generator of an item column: code systems along their catalogue hierarchies, everything else flat (dates
/// have their own rule above).
fn generator_of(table: Table, column: &str) -> Option<Generator> {
    catalogue::hierarchy(table, column)
        .map(|h| h.generator)
        .filter(|g| matches!(g, Generator::Icd10 | Generator::Yj | Generator::Jlac10))
}

struct KindLayout {
    /// Per field: the sheet column it reads.
    field_columns: Vec<usize>,
    /// Per component: the sheet columns it covers (names for the report).
    component_columns: Vec<Vec<usize>>,
    /// Per field: value → leaf code.
    leaf_of: Vec<HashMap<String, u32>>,
}

fn layout(table: Table, sheet: &Sheet) -> Result<(ItemKind, KindLayout)> {
    let columns = item_columns(table, sheet);
    let dates: Vec<usize> = columns
        .iter()
        .filter(|(_, r)| matches!(r, ColumnRole::MonthDate))
        .map(|(i, _)| *i)
        .collect();
    let others: Vec<usize> = columns
        .iter()
        .filter(|(_, r)| !matches!(r, ColumnRole::MonthDate))
        .map(|(i, _)| *i)
        .collect();
    let mut groups: Vec<Vec<usize>> = others.into_iter().map(|i| vec![i]).collect();
    if !dates.is_empty() {
        groups.push(dates);
    }
    if groups.is_empty() {
        // A table released with its pseudonym (and measured values) only: the item is "has a row".
        return Err(ReleaseError::NotReleasable(format!(
            "table {} needs at least one coded, dated or categorical column to be released",
            table.name()
        )));
    }
    let fields: usize = groups.iter().map(Vec::len).sum();
    if fields > MAX_FIELDS {
        return Err(ReleaseError::NotReleasable(format!(
            "table {}: at most {MAX_FIELDS} item columns per table",
            table.name()
        )));
    }
    let mut components = Vec::new();
    let mut leaf_of = Vec::new();
    let mut field_columns = Vec::new();
    for group in &groups {
        let mut distinct: Vec<&str> = group
            .iter()
            .flat_map(|&c| sheet.columns[c].iter().map(String::as_str))
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let name = group
            .iter()
            .map(|&c| sheet.header[c].as_str())
            .collect::<Vec<_>>()
            .join("+");
        let hierarchy = if matches!(catalogue::role(table, &sheet.header[group[0]]), ColumnRole::MonthDate) {
            period_hierarchy(&name, &distinct)?
        } else {
            code_hierarchy(&name, generator_of(table, &sheet.header[group[0]]), &distinct)?
        };
        let codes: HashMap<String, u32> = distinct
            .iter()
            .map(|v| {
                Ok((
                    (*v).to_owned(),
                    hierarchy.leaf_code(v).ok_or_else(|| {
                        ReleaseError::NotReleasable(format!("column {name}: a value is missing from its hierarchy"))
                    })?,
                ))
            })
            .collect::<Result<_>>()?;
        for &c in group {
            field_columns.push(c);
            leaf_of.push(codes.clone());
        }
        components.push(Component {
            name,
            hierarchy,
            fields: group.len(),
        });
    }
    Ok((
        ItemKind {
            name: table.name().to_owned(),
            components,
        },
        KindLayout {
            field_columns,
            component_columns: groups,
            leaf_of,
        },
    ))
}

/// Anonymises the event sheets' items in place under (k, k^m) within each demographic class of `patients`
/// (the generalised patient sheet, if released), suppressing at most `max_share` of the event rows.
pub fn anonymise_items(
    patients: Option<&Sheet>,
    events: &mut [(Table, &mut Sheet)],
    params: KmParams,
    max_share: f64,
) -> Result<Option<ItemsOutcome>> {
    if events.is_empty() {
        return Ok(None);
    }
    // Demographic classes: the whole written patient row but the pseudonym.
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut class_of: Vec<u32> = Vec::new();
    let mut class_ids: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    if let Some(p) = patients {
        let rows = p.columns[0].len();
        for r in 0..rows {
            let row: Vec<String> = p.columns[1..].iter().map(|c| c[r].clone()).collect();
            let next = class_ids.len() as u32;
            let class = *class_ids.entry(row).or_insert(next);
            if index.insert(p.columns[0][r].clone(), class_of.len() as u32).is_none() {
                class_of.push(class);
            }
        }
    }
    let mut without_patient_row = 0u64;
    let mut kinds = Vec::new();
    let mut layouts = Vec::new();
    let mut all_events = Vec::new();
    let mut positions = Vec::new(); // (event table, row) of each event
    for (t, (table, sheet)) in events.iter_mut().enumerate() {
        if patients.is_some() {
            let before = sheet.columns[0].len();
            let keep: std::collections::HashSet<String> = sheet.columns[0]
                .iter()
                .filter(|p| index.contains_key(*p))
                .cloned()
                .collect();
            super::select::retain_patients(sheet, &keep);
            without_patient_row += (before - sheet.columns[0].len()) as u64;
        }
        let (kind, lay) = layout(*table, sheet)?;
        for r in 0..sheet.columns[0].len() {
            let pseudonym = &sheet.columns[0][r];
            let patient = match index.get(pseudonym) {
                Some(&p) => p,
                None => {
                    // No patient file: everyone shares the empty demographic row.
                    let p = class_of.len() as u32;
                    index.insert(pseudonym.clone(), p);
                    class_of.push(0);
                    p
                }
            };
            let mut leaves = [0u32; MAX_FIELDS];
            for (f, &c) in lay.field_columns.iter().enumerate() {
                leaves[f] = lay.leaf_of[f][&sheet.columns[c][r]];
            }
            all_events.push(Event {
                patient,
                kind: t as u16,
                leaves,
            });
            positions.push((t, r));
        }
        kinds.push(kind);
        layouts.push(lay);
    }
    let data = RtData::new(kinds, class_of, all_events)?;
    let found = search(&data, &SearchConfig::new(params, max_share))?;
    let evaluation = &found.evaluation;
    let detail = evaluation
        .detail
        .as_ref()
        .ok_or_else(|| ReleaseError::VerificationFailed("the item search returned no recoding".into()))?;
    // Rewrite the kept cells at the chosen levels; mark suppressed rows.
    let mut drop: Vec<Vec<bool>> = events.iter().map(|(_, s)| vec![false; s.columns[0].len()]).collect();
    for (e, &(t, r)) in positions.iter().enumerate() {
        match detail.item_of_event[e] {
            None => drop[t][r] = true,
            Some(_) => {
                let kind = &data.kinds()[t];
                let lay = &layouts[t];
                let mut f = 0;
                for (c, comp) in kind.components.iter().enumerate() {
                    let level = evaluation.node.levels[t][c] as usize;
                    for _ in 0..comp.fields {
                        let col = lay.field_columns[f];
                        let leaf = lay.leaf_of[f][&events[t].1.columns[col][r]];
                        let code = comp.hierarchy.level(level).of_leaf()[leaf as usize];
                        events[t].1.columns[col][r] = comp.hierarchy.label(level, code).to_owned();
                        f += 1;
                    }
                }
            }
        }
    }
    let mut tables = Vec::new();
    for (t, (table, sheet)) in events.iter_mut().enumerate() {
        let rows_before = sheet.columns[0].len() as u64;
        super::select::drop_rows(sheet, &drop[t]);
        let lay = &layouts[t];
        let comps = &data.kinds()[t].components;
        let generalised = comps
            .iter()
            .zip(&evaluation.node.levels[t])
            .map(|(c, &l)| l as f64 / (c.hierarchy.height().saturating_sub(1).max(1)) as f64)
            .sum::<f64>()
            / comps.len().max(1) as f64;
        let suppressed = evaluation.suppressed_per_kind[t];
        let loss = if rows_before == 0 {
            0.0
        } else {
            ((rows_before - suppressed) as f64 * generalised + suppressed as f64) / rows_before as f64
        };
        let mut levels = Vec::new();
        for (c, cols) in lay.component_columns.iter().enumerate() {
            for &col in cols {
                levels.push((sheet.header[col].clone(), evaluation.node.levels[t][c] as u32));
            }
        }
        tables.push(TableItems {
            table: table.name().to_owned(),
            levels,
            rows_before,
            suppressed_rows: suppressed,
            loss,
        });
    }
    Ok(Some(ItemsOutcome {
        tables,
        loss: evaluation.loss.value(),
        strategy: found.strategy,
        evaluated: found.evaluated,
        without_patient_row,
    }))
}
