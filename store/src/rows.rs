//! Turns pseudonymised spool records into Arrow rows of the core's tables.
//!
//! This is the only place that knows how a `PseudonymisedRecord` maps onto the tables in [`crate::schema`].

use crate::schema::{Kind, PhysicalSchema, Table};
use chrono::NaiveDate;
use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use std::sync::Arc;
use tokumei_proto::ingest::v1::Sex;
use tokumei_proto::spool::v1::{BatchCommit, LinkageQuality, PseudonymisedRecord};

/// One cell value, in column order.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Text or null.
    Text(Option<&'a str>),
    /// Days since 1970-01-01, or null.
    Date(Option<i32>),
    /// Microseconds since the epoch.
    Timestamp(i64),
    /// Integer or null.
    Int(Option<i32>),
    /// Float or null.
    Float(Option<f64>),
    /// Boolean.
    Bool(bool),
}

enum ColumnBuilder {
    Text(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Int(Int32Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl ColumnBuilder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text => ColumnBuilder::Text(StringBuilder::new()),
            Kind::Date => ColumnBuilder::Date(Date32Builder::new()),
            Kind::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            Kind::Int => ColumnBuilder::Int(Int32Builder::new()),
            Kind::Float => ColumnBuilder::Float(Float64Builder::new()),
            Kind::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
        }
    }

    fn push(&mut self, v: Value<'_>) -> bool {
        match (self, v) {
            (ColumnBuilder::Text(b), Value::Text(x)) => b.append_option(x),
            (ColumnBuilder::Date(b), Value::Date(x)) => b.append_option(x),
            (ColumnBuilder::Timestamp(b), Value::Timestamp(x)) => b.append_value(x),
            (ColumnBuilder::Int(b), Value::Int(x)) => b.append_option(x),
            (ColumnBuilder::Float(b), Value::Float(x)) => b.append_option(x),
            (ColumnBuilder::Bool(b), Value::Bool(x)) => b.append_value(x),
            _ => return false,
        }
        true
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Accumulates rows of one table.
pub struct TableRows {
    table: Table,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl TableRows {
    /// An empty accumulator.
    pub fn new(table: Table) -> Self {
        TableRows {
            table,
            columns: table.columns().iter().map(|c| ColumnBuilder::new(c.kind)).collect(),
            rows: 0,
        }
    }

    /// Appends a row; the values must follow the table's columns in kind and number.
    pub fn push(&mut self, values: &[Value<'_>]) {
        debug_assert_eq!(values.len(), self.columns.len(), "{}", self.table.name());
        for (c, v) in self.columns.iter_mut().zip(values) {
            let ok = c.push(*v);
            debug_assert!(ok, "{}: value kind does not match column", self.table.name());
        }
        self.rows += 1;
    }

    /// Rows accumulated so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the rows as a record batch and starts over.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.table.arrow_schema(), arrays)
    }
}

/// Days since the epoch for `YYYY-MM-DD`; empty or unparsable dates are null (the gateway validated them).
pub fn date(s: &str) -> Option<i32> {
    if s.is_empty() {
        return None;
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

fn text(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

fn sex(v: i32) -> Option<&'static str> {
    match Sex::try_from(v).ok()? {
        Sex::Male => Some("M"),
        Sex::Female => Some("F"),
        Sex::Other => Some("O"),
        Sex::Unspecified => None,
    }
}

/// The linkage quality as stored.
pub fn quality(v: i32) -> &'static str {
    match LinkageQuality::try_from(v) {
        Ok(LinkageQuality::Insured) => "INSURED",
        Ok(LinkageQuality::Id4) => "ID4",
        _ => "UNSPECIFIED",
    }
}

/// The provenance of one record, rendered once and reused for each of its rows.
pub struct Provenance {
    /// Linkage key, lowercase hex.
    pub linkage_key: String,
    /// `INSURED` or `ID4`.
    pub linkage_quality: &'static str,
    /// Hospital pseudonym, lowercase hex.
    pub hospital_pseudonym: String,
    /// The record's ID4 key when it is keyed on insurance and also carried kana + birth date + sex.
    pub id4_key: Option<String>,
}

impl Provenance {
    /// From a record.
    pub fn of(r: &PseudonymisedRecord) -> Self {
        Provenance {
            linkage_key: hex::encode(&r.linkage_key),
            linkage_quality: quality(r.linkage_quality),
            hospital_pseudonym: hex::encode(&r.hospital_pseudonym),
            id4_key: (!r.id4_key.is_empty()).then(|| hex::encode(&r.id4_key)),
        }
    }
}

/// Rows for every table, filled from batches.
pub struct Rows {
    /// One accumulator per clinical table, in [`Table::CLINICAL`] order.
    pub tables: Vec<TableRows>,
}

impl Default for Rows {
    fn default() -> Self {
        Rows {
            tables: Table::CLINICAL.iter().map(|t| TableRows::new(*t)).collect(),
        }
    }
}

impl Rows {
    /// Total rows over all tables.
    pub fn total(&self) -> usize {
        self.tables.iter().map(TableRows::len).sum()
    }

    /// Adds one record to the tables in `wanted` (a table that already holds this entry is skipped).
    pub fn add_record(
        &mut self,
        batch: &BatchCommit,
        ingested_at_us: i64,
        r: &PseudonymisedRecord,
        wanted: &[bool; 6],
    ) {
        let p = Provenance::of(r);
        let base = [
            Value::Text(Some(p.linkage_key.as_str())),
            Value::Text(Some(p.linkage_quality)),
            Value::Text(Some(p.hospital_pseudonym.as_str())),
            Value::Text(Some(batch.hospital_code.as_str())),
            Value::Text(Some(batch.batch_id.as_str())),
            Value::Timestamp(ingested_at_us),
        ];
        macro_rules! emit {
            ($t:expr, [$($v:expr),* $(,)?] $(,)?) => {{
                let row = [base[0], base[1], base[2], base[3], base[4], base[5], $($v),*];
                $t.push(&row);
            }};
        }
        let [patients, encounters, conditions, medications, observations, allergies] = &mut self.tables[..] else {
            return;
        };
        if wanted[0] {
            let prefecture = r.municipality_code.get(..2);
            emit!(
                patients,
                [
                    Value::Date(date(&r.birth_date)),
                    Value::Text(sex(r.sex)),
                    Value::Text(text(&r.postal_prefix)),
                    Value::Text(text(&r.municipality_code)),
                    Value::Text(prefecture),
                    Value::Date(date(&r.death_date)),
                    Value::Bool(r.long_term_storage),
                    Value::Text(p.id4_key.as_deref()),
                ],
            );
        }
        if wanted[1] {
            for e in &r.encounters {
                emit!(
                    encounters,
                    [
                        Value::Date(date(&e.admission_date)),
                        Value::Date(date(&e.discharge_date)),
                        Value::Text(text(&e.kind)),
                        Value::Text(text(&e.department)),
                    ]
                );
            }
        }
        if wanted[2] {
            for c in &r.conditions {
                emit!(
                    conditions,
                    [
                        Value::Text(text(&c.icd10)),
                        Value::Text(text(&c.disease_master_id)),
                        Value::Date(date(&c.onset_date)),
                        Value::Bool(c.suspected),
                        Value::Bool(c.not_told),
                    ]
                );
            }
        }
        if wanted[3] {
            for m in &r.medications {
                emit!(
                    medications,
                    [
                        Value::Text(text(&m.yj_code)),
                        Value::Date(date(&m.start_date)),
                        Value::Int(i32::try_from(m.days).ok()),
                        Value::Float(Some(m.daily_dose)),
                        Value::Text(text(&m.dose_unit)),
                    ]
                );
            }
        }
        if wanted[4] {
            for o in &r.observations {
                let qualitative = !o.text_value.is_empty() && o.unit.is_empty();
                emit!(
                    observations,
                    [
                        Value::Text(text(&o.jlac10)),
                        Value::Text(text(&o.jlac11)),
                        Value::Date(date(&o.date)),
                        Value::Float(if qualitative { None } else { Some(o.value) }),
                        Value::Text(text(&o.unit)),
                        Value::Text(text(&o.text_value)),
                    ]
                );
            }
        }
        if wanted[5] {
            for a in &r.allergies {
                emit!(
                    allergies,
                    [
                        Value::Text(text(&a.yj_code)),
                        Value::Text(text(&a.substance)),
                        Value::Date(date(&a.recorded_date)),
                    ]
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date("1970-01-02"), Some(1));
        assert_eq!(date(""), None);
        assert_eq!(date("1969-12-31"), Some(-1));
    }
}
