//! How a statistics table is published: the same bytes and the same summary whether the core computed it over the
//! store or a researcher's client over their own file — a DP table as CSV with its expected error and interval, a
//! small-cell table with every suppressed cell marked, and the linked view of it an attacker would audit.

use std::collections::HashMap;

use serde::Serialize;

use crate::dp::grouping::Grouped;
use crate::dp::release::PrivateTable;
use crate::linked_tables::LinkedTable;
use crate::small_cell::{CellRef, CellStatus, CountTable, ProtectedTable, SmallCellRule};

/// What the small-cell rule did.
#[derive(Debug, Clone, Serialize)]
pub struct SmallCellSummary {
    /// The rule.
    pub rule: SmallCellRule,
    /// Cells below the minimum.
    pub primary_suppressed: usize,
    /// Cells suppressed so the small ones cannot be recomputed from the margins.
    pub complementary_suppressed: usize,
    /// Which margins are published.
    pub margins: &'static str,
}

impl SmallCellSummary {
    /// What `rule` did to the `dims`-dimensional table `protected`.
    pub fn of(rule: SmallCellRule, protected: &ProtectedTable, dims: usize) -> SmallCellSummary {
        let (primary_suppressed, complementary_suppressed) = protected.suppressed_count();
        SmallCellSummary {
            rule,
            primary_suppressed,
            complementary_suppressed,
            margins: if dims == 1 {
                "grand total"
            } else {
                "row, column and grand totals"
            },
        }
    }
}

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The engine refused the table.
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// The CSV writer failed.
    #[error("csv: {0}")]
    Csv(String),
    /// Labels that would print alike.
    #[error("labels of the 2nd.. grouping columns contain the separator \" | \"; group by fewer columns")]
    AmbiguousLabels,
}

impl From<csv::Error> for TableError {
    fn from(e: csv::Error) -> Self {
        TableError::Csv(e.to_string())
    }
}

/// A DP table as CSV: keys, the value, the noisy count (for means), expected error, 95 % interval, protection;
/// cells whose noisy count is below `min_cell` are blanked.
pub fn private_table_csv(table: &PrivateTable, min_cell: Option<u64>) -> Result<Vec<u8>, TableError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = table.key_columns.clone();
    header.push(table.measure.clone());
    let with_count = table.cells.iter().any(|c| c.count.is_some());
    if with_count {
        header.push("noisy_count".into());
    }
    header.extend([
        "expected_abs_error".into(),
        "ci95_half_width".into(),
        "protection".into(),
    ]);
    w.write_record(&header)?;
    for cell in &table.cells {
        let noisy_count = cell.count.unwrap_or(cell.value as i64);
        let blank = min_cell.is_some_and(|m| noisy_count < m as i64);
        let mut row = cell.key.clone();
        row.push(if blank { String::new() } else { format_value(cell.value) });
        if with_count {
            row.push(if blank {
                String::new()
            } else {
                cell.count.map(|c| c.to_string()).unwrap_or_default()
            });
        }
        row.push(cell.expected_abs_error.map(format_value).unwrap_or_default());
        row.push(cell.ci95_half_width.map(format_value).unwrap_or_default());
        row.push(match (blank, min_cell) {
            (true, Some(m)) => format!("{}; noisy count below {m}: blanked", table.protection),
            _ => table.protection.clone(),
        });
        w.write_record(&row)?;
    }
    w.into_inner().map_err(|e| TableError::Csv(e.to_string()))
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.6}")
    }
}

/// Turns group counts into a 1-D or 2-D count table (3+ key parts: the 2nd.. are joined into the column label).
pub fn count_table(grouped: &Grouped) -> Result<(CountTable, usize), TableError> {
    let dims = if grouped.key_columns.len() <= 1 { 1 } else { 2 };
    // Two combinations that print alike would make the table ambiguous (and its error would name them).
    let mut joined: HashMap<String, &[String]> = HashMap::new();
    for k in grouped.keys.iter().filter(|k| k.len() > 2) {
        if *joined.entry(k[1..].join(" | ")).or_insert(&k[1..]) != &k[1..] {
            return Err(TableError::AmbiguousLabels);
        }
    }
    let cells: Vec<(Vec<String>, u64)> = grouped
        .keys
        .iter()
        .zip(&grouped.counts)
        .map(|(k, &c)| {
            let key = match dims {
                1 => vec![k.first().cloned().unwrap_or_else(|| "(all)".into())],
                _ => vec![k[0].clone(), k[1..].join(" | ")],
            };
            (key, c.max(0) as u64)
        })
        .collect();
    Ok((CountTable::from_cells(&cells, dims)?, dims))
}

const TOTAL: &str = "(total)";

/// A small-cell table as CSV: keys, the published count (blank when suppressed), its status, the protection.
pub fn small_cell_csv(
    grouped: &Grouped,
    protected: &ProtectedTable,
    dims: usize,
    protection: &str,
) -> Result<Vec<u8>, TableError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let key_header: Vec<String> = match dims {
        1 => vec![grouped.key_columns.first().cloned().unwrap_or_else(|| "group".into())],
        _ => vec![grouped.key_columns[0].clone(), grouped.key_columns[1..].join(" | ")],
    };
    let mut header = key_header;
    header.extend(["count".into(), "status".into(), "protection".into()]);
    w.write_record(&header)?;
    let t = protected.table();
    let cols = t.col_labels.clone().unwrap_or_default();
    for r in protected.refs() {
        let key: Vec<String> = match (dims, r) {
            (1, CellRef::Cell(i, _)) => vec![t.row_labels[i].clone()],
            (1, _) => vec![TOTAL.into()],
            (_, CellRef::Cell(i, j)) => vec![t.row_labels[i].clone(), cols[j].clone()],
            (_, CellRef::RowTotal(i)) => vec![t.row_labels[i].clone(), TOTAL.into()],
            (_, CellRef::ColTotal(j)) => vec![TOTAL.into(), cols[j].clone()],
            (_, CellRef::GrandTotal) => vec![TOTAL.into(), TOTAL.into()],
        };
        let mut row = key;
        row.push(protected.published(r).map(|v| v.to_string()).unwrap_or_default());
        row.push(
            match protected.status(r) {
                CellStatus::Published => "published",
                CellStatus::Primary => "suppressed (small cell)",
                CellStatus::Complementary => "suppressed (complementary)",
            }
            .into(),
        );
        row.push(protection.to_string());
        w.write_record(&row)?;
    }
    w.into_inner().map_err(|e| TableError::Csv(e.to_string()))
}

/// The attacker's view of a protected table: the grouping of every key column and what each entry shows.
pub fn linked_table(grouped: &Grouped, protected: &ProtectedTable) -> Result<LinkedTable, TableError> {
    let t = protected.table();
    // A 2-D table of three or more key columns joins the 2nd.. labels into one column label; `count_table` has
    // refused labels whose joined forms collide, so this is one-to-one.
    let tails: HashMap<String, Vec<String>> = grouped
        .keys
        .iter()
        .filter(|k| k.len() >= 2)
        .map(|k| (k[1..].join(" | "), k[1..].to_vec()))
        .collect();
    let parts = grouped.key_columns.len();
    let key = |i: usize, j: usize| -> Vec<String> {
        match parts {
            0 => Vec::new(),
            1 => vec![t.row_labels[i].clone()],
            _ => {
                let col = t
                    .col_labels
                    .as_ref()
                    .and_then(|c| c.get(j))
                    .cloned()
                    .unwrap_or_default();
                let mut key = vec![t.row_labels[i].clone()];
                key.extend(tails.get(&col).cloned().unwrap_or_else(|| vec![col]));
                key
            }
        }
    };
    Ok(LinkedTable::from_protected(
        protected,
        grouped.dimensions.clone(),
        grouped.public,
        key,
    )?)
}
