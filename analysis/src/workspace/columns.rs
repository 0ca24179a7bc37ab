//! Between the workspace's SQL (Arrow record batches) and what the analyses, the uploads and the researcher's
//! screen need: a [`Frame`] numbered by patient, a table from an uploaded CSV, and a result's rows as JSON.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::analyses::{Column, Frame};

use super::WorkspaceError;
use super::request::{MAX_UPLOAD_COLUMNS, check_name};
use super::state::PatientNumbers;

/// The column every frame of an analysis carries: the workspace pseudonym of the row's patient.
pub use crate::lineage::PATIENT;

/// Most rows of a query's result shown to the researcher: the workspace's screen. The rest stays in the workspace;
/// what leaves in full is an output, checked.
pub const PREVIEW_ROWS: usize = 100;

/// The frame of `batches`, its rows numbered by their `patient` column. A row without one, or with a label that is
/// not one of the workspace's patients (`known`), is refused: an analysis counts patients, and a row of nobody or of
/// a made-up patient would escape every check. Numeric and boolean columns become numeric, the rest categorical.
pub fn frame_of(
    batches: &[RecordBatch],
    numbers: &mut PatientNumbers,
    known: &HashSet<String>,
) -> Result<Frame, WorkspaceError> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(WorkspaceError::Analysis("the frame's query returned no rows".into()));
    };
    if schema.index_of(PATIENT).is_err() {
        return Err(WorkspaceError::NoPatientColumn);
    }
    let mut patients = Vec::new();
    for b in batches {
        let column = text(b.column_by_name(PATIENT).ok_or(WorkspaceError::NoPatientColumn)?)?;
        for i in 0..column.len() {
            if column.is_null(i) {
                return Err(WorkspaceError::Analysis("a row of the frame has no patient".into()));
            }
            if !known.contains(column.value(i)) {
                return Err(WorkspaceError::Analysis(
                    "a row's patient is not one of the workspace's patients".into(),
                ));
            }
            patients.push(numbers.number(column.value(i))?);
        }
    }
    let mut frame = Frame::new(patients);
    for field in schema.fields().iter().filter(|f| f.name() != PATIENT) {
        let parts: Vec<&ArrayRef> = batches.iter().filter_map(|b| b.column_by_name(field.name())).collect();
        let column = if field.data_type().is_numeric() || field.data_type() == &DataType::Boolean {
            let mut values = Vec::new();
            for part in parts {
                let numbers = numeric(part)?;
                values.extend((0..numbers.len()).map(|i| numbers.is_valid(i).then(|| numbers.value(i))));
            }
            Column::Numeric(values)
        } else {
            let mut values = Vec::new();
            for part in parts {
                let strings = text(part)?;
                values.extend((0..strings.len()).map(|i| strings.is_valid(i).then(|| strings.value(i).to_owned())));
            }
            Column::Categorical(values)
        };
        frame = frame
            .with(field.name(), column)
            .map_err(|e| WorkspaceError::Analysis(e.to_string()))?;
    }
    Ok(frame)
}

fn numeric(array: &ArrayRef) -> Result<Float64Array, WorkspaceError> {
    let cast =
        cast(array, &DataType::Float64).map_err(|_| WorkspaceError::Analysis("a column is not numeric".into()))?;
    cast.as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| WorkspaceError::Analysis("a column is not numeric".into()))
}

fn text(array: &ArrayRef) -> Result<StringArray, WorkspaceError> {
    let cast = cast(array, &DataType::Utf8).map_err(|_| WorkspaceError::Analysis("a column is not text".into()))?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| WorkspaceError::Analysis("a column is not text".into()))
}

/// An uploaded CSV as one batch of text columns (a header line, then rows of as many fields).
pub fn upload_batch(csv_text: &str) -> Result<RecordBatch, WorkspaceError> {
    let bad = |what: &str| WorkspaceError::Upload(what.to_owned());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|_| bad("the header line is not CSV"))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if header.is_empty() || header.len() > MAX_UPLOAD_COLUMNS {
        return Err(bad(&format!("an upload has 1 to {MAX_UPLOAD_COLUMNS} columns")));
    }
    for (i, h) in header.iter().enumerate() {
        check_name(h).map_err(|_| bad(&format!("column {} of the header is not a valid name", i + 1)))?;
        if h == PATIENT {
            return Err(bad(
                "`patient` names the workspace's own patients: an upload may not have that column",
            ));
        }
        if header[..i].contains(h) {
            return Err(bad(&format!("column {} of the header repeats an earlier name", i + 1)));
        }
    }
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); header.len()];
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|_| bad(&format!("row {} is not CSV", line + 1)))?;
        if record.len() != header.len() {
            return Err(bad(&format!(
                "row {} has {} fields for {} columns",
                line + 1,
                record.len(),
                header.len()
            )));
        }
        for (c, field) in record.iter().enumerate() {
            columns[c].push((!field.is_empty()).then(|| field.to_owned()));
        }
    }
    let fields: Vec<Field> = header.iter().map(|h| Field::new(h, DataType::Utf8, true)).collect();
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|_| bad("the upload could not be read"))
}

/// A query's result as the researcher's screen shows it: the column names and the first [`PREVIEW_ROWS`] rows,
/// numbers as numbers.
pub fn rows_json(batches: &[RecordBatch]) -> Result<serde_json::Value, WorkspaceError> {
    let columns: Vec<String> = batches
        .first()
        .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect())
        .unwrap_or_default();
    let mut rows: Vec<Vec<serde_json::Value>> = Vec::new();
    for b in batches {
        let rendered: Vec<Vec<serde_json::Value>> = b.columns().iter().map(cells_json).collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            if rows.len() == PREVIEW_ROWS {
                break;
            }
            rows.push(rendered.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(serde_json::json!({"columns": columns, "rows": rows}))
}

fn cells_json(array: &ArrayRef) -> Result<Vec<serde_json::Value>, WorkspaceError> {
    use serde_json::Value;
    if array.data_type() == &DataType::Boolean {
        let b = array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| WorkspaceError::Analysis("a column could not be shown".into()))?;
        return Ok((0..b.len())
            .map(|i| {
                if b.is_valid(i) {
                    Value::Bool(b.value(i))
                } else {
                    Value::Null
                }
            })
            .collect());
    }
    if array.data_type().is_numeric() {
        let n = numeric(array)?;
        return Ok((0..n.len())
            .map(|i| {
                n.is_valid(i)
                    .then(|| serde_json::Number::from_f64(n.value(i)).map(Value::Number))
                    .flatten()
                    .unwrap_or(Value::Null)
            })
            .collect());
    }
    let t = text(array)?;
    Ok((0..t.len())
        .map(|i| {
            if t.is_valid(i) {
                Value::String(t.value(i).to_owned())
            } else {
                Value::Null
            }
        })
        .collect())
}
