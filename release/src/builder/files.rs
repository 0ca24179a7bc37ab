//! Writing a released table: CSV (text exactly as fingerprinted) and Parquet (typed where the value kept its
//! type), plus the codebook that says what every column is.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use serde::Serialize;
use tokumei_store::Table;
use tokumei_store::schema::Kind;

use super::verified::VerifiedCopy;
use crate::catalogue::{self, ColumnRole};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;

/// One file of a copy: its name, its bytes and (for data files) its rows.
pub type FileBytes = (String, Vec<u8>, Option<u64>);

/// The data files of a verified copy — Parquet and CSV of every table, with their row counts: the only way the
/// release zone turns cells into files.
pub fn copy_files(copy: &VerifiedCopy) -> Result<Vec<FileBytes>> {
    let mut files = Vec::new();
    for t in copy.tables() {
        let rows = t.sheet().columns.first().map_or(0, Vec::len) as u64;
        files.push((
            format!("{}.parquet", t.table().name()),
            parquet_bytes(t.table(), t.sheet())?,
            Some(rows),
        ));
        files.push((format!("{}.csv", t.table().name()), csv_bytes(t.sheet())?, Some(rows)));
    }
    Ok(files)
}

/// A file as a leaker re-saves it (the attack suite and the trace benchmark play the leaker): the formats the zone
/// writes, for cells that are *not* a release. The release zone never calls it; it writes [`copy_files`] only.
pub fn leaked_file_bytes(table: Table, sheet: &Sheet, parquet: bool) -> Result<Vec<u8>> {
    if parquet {
        parquet_bytes(table, sheet)
    } else {
        csv_bytes(sheet)
    }
}

/// The CSV bytes of a sheet (header, then rows; RFC 4180 quoting).
fn csv_bytes(sheet: &Sheet) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&sheet.header)
        .map_err(|e| ReleaseError::Arrow(e.to_string()))?;
    let rows = sheet.columns.first().map_or(0, Vec::len);
    let mut record: Vec<&str> = Vec::with_capacity(sheet.header.len());
    for r in 0..rows {
        record.clear();
        record.extend(sheet.columns.iter().map(|c| c[r].as_str()));
        w.write_record(&record)
            .map_err(|e| ReleaseError::Arrow(e.to_string()))?;
    }
    w.into_inner().map_err(|e| ReleaseError::Arrow(e.to_string()))
}

/// The Arrow type a released column is written with.
fn arrow_type(table: Table, column: &str) -> DataType {
    match catalogue::role(table, column) {
        ColumnRole::Measured { .. } => DataType::Float64,
        ColumnRole::Plain => match table.columns().iter().find(|c| c.name == column).map(|c| c.kind) {
            Some(Kind::Int) => DataType::Int32,
            Some(Kind::Float) => DataType::Float64,
            Some(Kind::Bool) => DataType::Boolean,
            _ => DataType::Utf8,
        },
        _ => DataType::Utf8,
    }
}

/// The Parquet bytes of a sheet (zstd; empty cells are nulls).
fn parquet_bytes(table: Table, sheet: &Sheet) -> Result<Vec<u8>> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, values) in sheet.header.iter().zip(&sheet.columns) {
        let ty = arrow_type(table, name);
        let bad = |v: &str| ReleaseError::Arrow(format!("column {name}: {v:?} is not a {ty}"));
        let array: ArrayRef = match ty {
            DataType::Float64 => Arc::new(Float64Array::from(typed::<f64>(values, &bad)?)),
            DataType::Int32 => Arc::new(Int32Array::from(typed::<i32>(values, &bad)?)),
            DataType::Boolean => Arc::new(BooleanArray::from(typed::<bool>(values, &bad)?)),
            _ => Arc::new(
                values
                    .iter()
                    .map(|v| if v.is_empty() { None } else { Some(v.as_str()) })
                    .collect::<StringArray>(),
            ),
        };
        fields.push(Field::new(name, ty, true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| ReleaseError::Arrow(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(|e| ReleaseError::Arrow(e.to_string()))?;
    writer.write(&batch).map_err(|e| ReleaseError::Arrow(e.to_string()))?;
    writer.close().map_err(|e| ReleaseError::Arrow(e.to_string()))?;
    Ok(out)
}

/// One column in the codebook.
#[derive(Debug, Clone, Serialize)]
pub struct CodebookColumn {
    /// Column name.
    pub name: String,
    /// Parquet type.
    pub parquet_type: String,
    /// What it is and how it was protected.
    pub description: String,
    /// Code system, for coded columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_system: Option<&'static str>,
    /// Generalisation level applied (quasi-identifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generalisation_level: Option<u32>,
}

/// One table in the codebook.
#[derive(Debug, Clone, Serialize)]
pub struct CodebookTable {
    /// Table (file stem).
    pub table: String,
    /// Files holding it.
    pub files: Vec<String>,
    /// Rows.
    pub rows: u64,
    /// Columns in order.
    pub columns: Vec<CodebookColumn>,
}

/// Parses a column's cells (empty = null), naming the first cell that is not a `T`.
fn typed<T: std::str::FromStr>(values: &[String], bad: &dyn Fn(&str) -> ReleaseError) -> Result<Vec<Option<T>>> {
    values
        .iter()
        .map(|v| {
            if v.is_empty() {
                Ok(None)
            } else {
                v.parse::<T>().map(Some).map_err(|_| bad(v))
            }
        })
        .collect()
}

/// The codebook entry of a released table.
pub fn codebook(table: Table, sheet: &Sheet, generalisation: &[(String, u32)]) -> CodebookTable {
    CodebookTable {
        table: table.name().to_owned(),
        files: vec![format!("{}.parquet", table.name()), format!("{}.csv", table.name())],
        rows: sheet.columns.first().map_or(0, Vec::len) as u64,
        columns: sheet
            .header
            .iter()
            .map(|c| {
                let role = if c == catalogue::PSEUDONYM {
                    ColumnRole::Pseudonym
                } else {
                    catalogue::role(table, c)
                };
                CodebookColumn {
                    name: c.clone(),
                    parquet_type: arrow_type(table, c).to_string(),
                    description: catalogue::describe(&role),
                    code_system: catalogue::code_system(table, c),
                    generalisation_level: generalisation.iter().find(|(q, _)| q == c).map(|(_, l)| *l),
                }
            })
            .collect(),
    }
}
