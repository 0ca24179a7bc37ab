//! The core's tables as Arrow and Delta see them; the tables and their columns themselves are the catalogue's
//! (`tokumei_catalogue::schema`), re-exported here.
//!
//! Every clinical table carries the same provenance columns — who the patient is under pseudonyms
//! (`linkage_key`, `hospital_pseudonym`), how good the linkage is, which hospital sent the row, in which batch
//! and when — so that opt-out, erasure and audits work the same way on all of them.

use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{DataType, PrimitiveType, StructField};
use std::sync::Arc;

pub use tokumei_catalogue::schema::*;

/// The physical schemas of a table: Arrow for record batches, Delta for the table's log. Here, not in the
/// catalogue, because only the core writes tables (the catalogue is shared with zones that never link Delta).
pub trait PhysicalSchema {
    /// The Arrow schema record batches are built with.
    fn arrow_schema(self) -> SchemaRef;
    /// The Delta schema the table is created with.
    fn delta_columns(self) -> Vec<StructField>;
}

impl PhysicalSchema for Table {
    fn arrow_schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns()
            .iter()
            .map(|c| Field::new(c.name, arrow_type(c.kind), c.nullable))
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn delta_columns(self) -> Vec<StructField> {
        self.columns()
            .iter()
            .map(|c| StructField::new(c.name, DataType::Primitive(delta_type(c.kind)), c.nullable))
            .collect()
    }
}

fn arrow_type(kind: Kind) -> ArrowType {
    match kind {
        Kind::Text => ArrowType::Utf8,
        Kind::Date => ArrowType::Date32,
        Kind::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::Int => ArrowType::Int32,
        Kind::Float => ArrowType::Float64,
        Kind::Bool => ArrowType::Boolean,
    }
}

fn delta_type(kind: Kind) -> PrimitiveType {
    match kind {
        Kind::Text => PrimitiveType::String,
        Kind::Date => PrimitiveType::Date,
        Kind::Timestamp => PrimitiveType::Timestamp,
        Kind::Int => PrimitiveType::Integer,
        Kind::Float => PrimitiveType::Double,
        Kind::Bool => PrimitiveType::Boolean,
    }
}
