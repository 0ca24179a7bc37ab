//! The columnar, dictionary-encoded input table.
//!
//! Every column is stored as a dictionary of distinct strings plus one `u32` code per row. This is
//! what lets the engine map a column onto hierarchy codes with one lookup per *distinct* value
//! instead of per row, and it is the shape a DataFusion adapter can build from `RecordBatch`es.
//! Only [`Table::read_csv`] and [`Table::read_parquet`] touch the file system.

use std::io::Read;
use std::path::Path;

use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};

/// One dictionary-encoded column.
#[derive(Debug, Clone, Default)]
pub struct Column {
    name: String,
    dict: Vec<String>,
    codes: Vec<u32>,
    /// First row index (0-based) at which each dictionary value appears, for error messages.
    first_row: Vec<u32>,
    index: crate::fasthash::FastMap<String, u32>,
}

impl Column {
    /// Creates an empty column.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }
    /// Appends a value, interning it in the dictionary.
    pub fn push(&mut self, value: &str) {
        let code = self.intern(value, self.codes.len());
        self.codes.push(code);
    }
    /// The code of `value`, added to the dictionary (first seen at `row`) if new. For readers
    /// that intern a block's distinct values themselves and then append codes.
    pub(crate) fn intern(&mut self, value: &str, row: usize) -> u32 {
        match self.index.get(value) {
            Some(&c) => c,
            None => {
                let c = self.dict.len() as u32;
                self.dict.push(value.to_string());
                self.first_row.push(row as u32);
                self.index.insert(value.to_string(), c);
                c
            }
        }
    }
    /// Appends rows by code (codes [`Column::intern`] returned).
    pub(crate) fn extend_codes(&mut self, codes: impl Iterator<Item = u32>) {
        self.codes.extend(codes);
    }
    /// Column name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Distinct values, in order of first appearance.
    pub fn dict(&self) -> &[String] {
        &self.dict
    }
    /// Dictionary code of every row.
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }
    /// Row (0-based) where dictionary entry `code` first appears.
    pub fn first_row(&self, code: u32) -> usize {
        self.first_row[code as usize] as usize
    }
    /// Value of row `row`.
    pub fn value(&self, row: usize) -> &str {
        &self.dict[self.codes[row] as usize]
    }
}

/// An in-memory table of dictionary-encoded string columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<Column>,
    rows: usize,
}

impl Table {
    /// Builds a table from complete columns; all must have the same length.
    pub fn from_columns(columns: Vec<Column>) -> Result<Self> {
        let rows = columns.first().map_or(0, |c| c.codes.len());
        if let Some(c) = columns.iter().find(|c| c.codes.len() != rows) {
            return Err(Error::Input(format!(
                "column {:?} has {} rows, expected {rows}",
                c.name,
                c.codes.len()
            )));
        }
        Ok(Self { columns, rows })
    }

    /// Builds a table from string rows (convenient for tests and small inputs).
    pub fn from_rows<S: AsRef<str>>(header: &[S], rows: &[Vec<S>]) -> Result<Self> {
        let mut columns: Vec<Column> = header.iter().map(|h| Column::new(h.as_ref())).collect();
        for (i, row) in rows.iter().enumerate() {
            if row.len() != columns.len() {
                return Err(Error::Input(format!(
                    "row {} has {} fields, expected {}",
                    i + 1,
                    row.len(),
                    columns.len()
                )));
            }
            for (c, v) in columns.iter_mut().zip(row) {
                c.push(v.as_ref());
            }
        }
        Self::from_columns(columns)
    }

    /// Reads delimited text with a header line, in parallel blocks (the `csv_input` module).
    pub fn from_csv_reader<R: Read>(reader: R, delimiter: u8) -> Result<Self> {
        crate::csv_input::read(reader, delimiter)
    }

    /// Reads a CSV file (I/O).
    pub fn read_csv(path: &Path, delimiter: u8) -> Result<Self> {
        Self::from_csv_reader(std::fs::File::open(path)?, delimiter)
    }

    /// Builds a table from Arrow record batches (all with the same schema). Every value is
    /// rendered with Arrow's display formatter, nulls as the empty string, so the engine sees the
    /// same strings a CSV export would contain. See [`BatchTableBuilder`] to feed batches one by
    /// one without holding them all.
    pub fn from_record_batches(batches: &[RecordBatch]) -> Result<Self> {
        let Some(first) = batches.first() else {
            return Err(Error::Input("no record batches".into()));
        };
        let mut builder = BatchTableBuilder::new(first.schema().as_ref());
        for batch in batches {
            builder.push(batch)?;
        }
        builder.finish()
    }

    /// Reads a Parquet file through its Arrow reader (I/O).
    pub fn read_parquet(path: &Path) -> Result<Self> {
        Self::from_parquet(std::fs::File::open(path)?)
    }

    /// Reads Parquet from anything its reader can seek in: a file, or bytes received over the network (a file
    /// handed to a service is read where it arrived, never written out first).
    pub fn from_parquet<R: parquet::file::reader::ChunkReader + 'static>(source: R) -> Result<Self> {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(source)?
            .with_batch_size(64 * 1024)
            .build()?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        if batches.is_empty() {
            return Err(Error::Input("parquet file has no rows".into()));
        }
        Self::from_record_batches(&batches)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// All columns in input order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }
    /// Column names in input order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
    /// Index of the column called `name`.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Error::UnknownColumn(name.to_string()))
    }
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Result<&Column> {
        Ok(&self.columns[self.index_of(name)?])
    }
}

/// Builds a [`Table`] from a stream of Arrow record batches, one batch at a time.
///
/// A batch can be dropped as soon as it has been pushed, so a caller streaming a query result
/// (see `crate::datafusion`) never holds the Arrow copy of the whole table next to the
/// dictionary-encoded one.
#[derive(Debug)]
pub struct BatchTableBuilder {
    columns: Vec<Column>,
    options: FormatOptions<'static>,
}

impl BatchTableBuilder {
    /// Starts an empty table with the columns of `schema`.
    pub fn new(schema: &arrow_schema::Schema) -> Self {
        Self {
            columns: schema.fields().iter().map(|f| Column::new(f.name())).collect(),
            options: FormatOptions::default().with_null(""),
        }
    }

    /// Appends the rows of `batch`, which must have the builder's columns in the same order.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        if batch.num_columns() != self.columns.len()
            || schema
                .fields()
                .iter()
                .zip(&self.columns)
                .any(|(f, c)| f.name() != c.name())
        {
            return Err(Error::Input("record batches disagree on their columns".into()));
        }
        for (col, array) in self.columns.iter_mut().zip(batch.columns()) {
            push_array(col, array.as_ref(), &self.options)?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.codes.len())
    }

    /// The finished table (possibly with no rows).
    pub fn finish(self) -> Result<Table> {
        Table::from_columns(self.columns)
    }
}

fn push_array(col: &mut Column, array: &dyn Array, options: &FormatOptions<'_>) -> Result<()> {
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType;
    match array.data_type() {
        DataType::Utf8 => {
            for v in array.as_string::<i32>() {
                col.push(v.unwrap_or(""));
            }
        }
        DataType::LargeUtf8 => {
            for v in array.as_string::<i64>() {
                col.push(v.unwrap_or(""));
            }
        }
        DataType::Utf8View => {
            for v in array.as_string_view() {
                col.push(v.unwrap_or(""));
            }
        }
        _ => {
            let fmt = ArrayFormatter::try_new(array, options)?;
            let mut buf = String::new();
            for i in 0..array.len() {
                buf.clear();
                if array.is_valid(i) {
                    use std::fmt::Write;
                    write!(buf, "{}", fmt.value(i)).map_err(|e| Error::Input(e.to_string()))?;
                }
                col.push(&buf);
            }
        }
    }
    Ok(())
}
