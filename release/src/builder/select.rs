//! Reading an approval's scope from the core store: the approved tables and columns of the cohort, through
//! the research view (opted-out and erased patients are excluded there, in the store's one exclusion point).

use std::collections::HashSet;

use deltalake::datafusion::common::JoinType;
use deltalake::datafusion::execution::context::SessionContext;
use deltalake::datafusion::prelude::SQLOptions;
use tokumei_deid::datafusion::table_from_dataframe;
use tokumei_store::Table;

use crate::catalogue::{self, ColumnRole, PSEUDONYM};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;
use crate::pseudonym::PseudonymKey;

/// One approved table as read: text cells, the pseudonym first.
pub struct Selected {
    /// The store table.
    pub table: Table,
    /// The approved columns after the pseudonym, as released (withheld columns refused earlier).
    pub sheet: Sheet,
}

/// Checks every approved column can be released and returns the columns to read (without `linkage_key`).
pub fn released_columns(table: Table, approved: &[String]) -> Result<Vec<String>> {
    let known: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
    let mut out = Vec::new();
    for c in approved {
        if !known.contains(&c.as_str()) {
            return Err(ReleaseError::NotReleasable(format!(
                "table {} has no column {c}",
                table.name()
            )));
        }
        match catalogue::role(table, c) {
            ColumnRole::Pseudonym => {}
            ColumnRole::Withheld => {
                return Err(ReleaseError::NotReleasable(format!(
                    "column {}.{c} is provenance and never leaves the core",
                    table.name()
                )));
            }
            ColumnRole::FreeText => {
                return Err(ReleaseError::NotReleasable(format!(
                    "column {}.{c} is free text, never released verbatim (release its coded columns instead)",
                    table.name()
                )));
            }
            _ => out.push(c.clone()),
        }
    }
    Ok(out)
}

/// Reads `columns` of `table` for the cohort, with pseudonyms in place of linkage keys.
pub async fn read(
    view: &tokumei_store::ResearchSession,
    table: Table,
    columns: &[String],
    cohort_filter: &str,
    key: &PseudonymKey,
) -> Result<Selected> {
    let ctx = view.context();
    let mut df = ctx.table(table.name()).await?;
    if !cohort_filter.trim().is_empty() {
        df = df.join(
            cohort(ctx, cohort_filter).await?,
            JoinType::LeftSemi,
            &["linkage_key"],
            &["cohort_key"],
            None,
        )?;
    }
    let mut names: Vec<&str> = vec!["linkage_key"];
    names.extend(columns.iter().map(String::as_str));
    let read = table_from_dataframe(df.select_columns(&names)?).await?;
    let rows = read.rows();
    let mut header = vec![PSEUDONYM.to_owned()];
    let mut out: Vec<Vec<String>> = Vec::with_capacity(names.len());
    let linkage = read.column("linkage_key")?;
    out.push((0..rows).map(|r| key.pseudonym(linkage.value(r))).collect());
    for c in columns {
        let col = read.column(c)?;
        let role = catalogue::role(table, c);
        out.push((0..rows).map(|r| render(&role, col.value(r))).collect());
        header.push(c.clone());
    }
    Ok(Selected {
        table,
        sheet: Sheet { header, columns: out },
    })
}

/// A stored value as released: month dates, fixed-precision measurements, everything else as stored.
fn render(role: &ColumnRole, value: &str) -> String {
    match role {
        ColumnRole::MonthDate if value.len() >= 7 => value[..7].to_owned(),
        ColumnRole::Measured { decimals, .. } => match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => format!("{v:.prec$}", prec = *decimals as usize),
            _ => String::new(),
        },
        _ => value.to_owned(),
    }
}

/// The cohort: linkage keys of the research view's patients matching the approval's filter (a SQL boolean
/// expression over `patients`, written by the committee). Read-only: no DDL, DML or statements.
async fn cohort(ctx: &SessionContext, filter: &str) -> Result<deltalake::datafusion::dataframe::DataFrame> {
    if filter.contains(';') || filter.contains("--") {
        return Err(ReleaseError::NotReleasable(
            "the cohort filter must be one boolean expression over patients".into(),
        ));
    }
    let sql = format!("SELECT DISTINCT linkage_key AS cohort_key FROM patients WHERE ({filter})");
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    ctx.sql_with_options(&sql, options)
        .await
        .map_err(|e| ReleaseError::NotReleasable(format!("cohort filter {filter:?}: {e}")))
}

/// Removes the rows of the patients in `withheld` (suppressed by the anonymisation) from a sheet.
pub fn withhold(sheet: &mut Sheet, withheld: &HashSet<String>) {
    if withheld.is_empty() {
        return;
    }
    let drop: Vec<bool> = sheet.columns[0].iter().map(|p| withheld.contains(p)).collect();
    drop_rows(sheet, &drop);
}

/// Keeps one row per patient in the patient file, and returns how many rows were dropped. A person sent by
/// several hospitals has a patient row from each, and they may disagree (a move, a typing error); released
/// side by side they would tie one pseudonym to two demographic descriptions, and every guarantee counted per
/// demographic class would be counted twice. The kept row is the most complete one (fewest empty cells), ties
/// to the smallest row, so the choice depends on the data only.
pub fn one_row_per_patient(sheet: &mut Sheet) -> u64 {
    let rows = sheet.columns.first().map_or(0, Vec::len);
    let mut best: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let key = |r: usize| {
        let empty = sheet.columns[1..].iter().filter(|c| c[r].is_empty()).count();
        (
            empty,
            sheet.columns[1..].iter().map(|c| c[r].as_str()).collect::<Vec<_>>(),
        )
    };
    for r in 0..rows {
        let p = sheet.columns[0][r].as_str();
        match best.get(p) {
            Some(&b) if key(b) <= key(r) => {}
            _ => {
                best.insert(p, r);
            }
        }
    }
    let keep: HashSet<usize> = best.into_values().collect();
    let drop: Vec<bool> = (0..rows).map(|r| !keep.contains(&r)).collect();
    let dropped = drop.iter().filter(|d| **d).count() as u64;
    drop_rows(sheet, &drop);
    dropped
}

/// Keeps only the rows of the patients in `keep`.
pub fn retain_patients(sheet: &mut Sheet, keep: &HashSet<String>) {
    let drop: Vec<bool> = sheet.columns[0].iter().map(|p| !keep.contains(p)).collect();
    drop_rows(sheet, &drop);
}

/// Removes the rows flagged in `drop` (one flag per row).
pub fn drop_rows(sheet: &mut Sheet, drop: &[bool]) {
    for col in &mut sheet.columns {
        let mut i = 0;
        col.retain(|_| {
            let d = drop[i];
            i += 1;
            !d
        });
    }
}

/// Puts the rows in an order drawn under the release's pseudonym key: the store's order follows ingestion,
/// which says which hospital sent what and when; the drawn order says nothing.
pub fn shuffle(sheet: &mut Sheet, key: &PseudonymKey, scope: &str) {
    let rows = sheet.columns.first().map_or(0, Vec::len);
    let mut order: Vec<(u64, usize)> = (0..rows).map(|r| (key.order_key(scope, r as u64), r)).collect();
    order.sort_unstable();
    for col in &mut sheet.columns {
        let mut old = std::mem::take(col);
        *col = order.iter().map(|(_, r)| std::mem::take(&mut old[*r])).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_linkage_keys_and_provenance_are_refused_even_when_approved() {
        // The attack: `id4_key` was catalogued by default as "as recorded"; an approval listing it would have
        // released one stable key per insured patient, the same in every release and for every recipient.
        for column in ["id4_key", "hospital_pseudonym", "batch_id", "source_hospital"] {
            let approved = vec!["sex".to_owned(), column.to_owned()];
            assert!(
                matches!(
                    released_columns(Table::Patients, &approved),
                    Err(ReleaseError::NotReleasable(_))
                ),
                "{column} was released"
            );
        }
        assert!(released_columns(Table::Patients, &["sex".to_owned(), "linkage_key".to_owned()]).is_ok());
    }
}
