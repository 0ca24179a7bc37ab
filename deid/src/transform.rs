//! Applying a transformation: which rows are suppressed, generalised values, and writing the
//! anonymised table. The output has exactly the input's columns; suppressed records show `*` in
//! every QI.

use std::io::Write;

use rayon::prelude::*;
use std::path::Path;

use crate::classes::{Layout, PackedKey};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::evaluate::Engine;
use crate::metric::{Metric, MetricValue};
use crate::model::PrivacyModel;
use crate::search::{WithKey, dispatch};
use crate::table::Table;

/// A transformation applied to a dataset.
#[derive(Debug, Clone)]
pub struct Anonymized {
    /// Level per QI.
    pub levels: Vec<u32>,
    /// Per row: suppressed?
    pub row_suppressed: Vec<bool>,
    /// Suppressed rows.
    pub suppressed: u64,
    /// Per kept class: (size in counting units — subjects with patient-level counting, else
    /// records — and number of records).
    pub class_sizes: Vec<(u64, u64)>,
    /// Metric value of the transformation.
    pub metric: MetricValue,
    /// Whether the transformation satisfies the model within the suppression limit.
    pub feasible: bool,
}

/// Applies `levels` under `model`: classes violating the model are suppressed.
pub fn apply(ds: &Dataset, model: &PrivacyModel, metric: Metric, levels: &[u32]) -> Result<Anonymized> {
    model.validate(ds)?;
    if levels.len() != ds.qis.len() || levels.iter().zip(&ds.qis).any(|(&l, q)| l as usize > q.max_level()) {
        return Err(Error::Config(format!(
            "transformation {levels:?} does not fit the hierarchies"
        )));
    }
    struct Run<'a> {
        ds: &'a Dataset,
        model: &'a PrivacyModel,
        metric: Metric,
        levels: &'a [u32],
    }
    impl WithKey for Run<'_> {
        type Out = Anonymized;
        fn run<K: PackedKey>(self, layout: Layout) -> Anonymized {
            let engine = Engine::<K>::new(self.ds, self.model, self.metric, layout);
            applied(&engine, self.levels)
        }
    }
    dispatch(
        ds,
        Run {
            ds,
            model,
            metric,
            levels,
        },
    )
}

/// `levels` applied by `engine` (built for the dataset, model and metric at hand): which rows it suppresses and the
/// classes it keeps.
pub(crate) fn applied<K: PackedKey>(engine: &Engine<'_, K>, levels: &[u32]) -> Anonymized {
    let d = engine.detail(levels);
    Anonymized {
        levels: levels.to_vec(),
        row_suppressed: d.row_suppressed,
        suppressed: d.eval.suppressed,
        class_sizes: d.class_sizes,
        metric: d.eval.metric,
        feasible: d.eval.feasible,
    }
}

/// Class sizes of the untransformed data (for the "before" risk).
pub fn original_class_sizes(ds: &Dataset) -> Result<Vec<(u64, u64)>> {
    let trivial = PrivacyModel {
        k: 1,
        suppression_limit: 0.0,
        ..Default::default()
    };
    let levels = vec![0; ds.qis.len()];
    let mut plain = ds.clone();
    plain.sensitive.clear();
    Ok(apply(&plain, &trivial, Metric::Loss, &levels)?.class_sizes)
}

/// Rows formatted per block when writing; blocks are formatted in parallel and written in order.
const WRITE_BLOCK: usize = 1 << 16;

/// Writes the anonymised table as CSV: same columns, QIs generalised, suppressed QIs as `*`.
/// Blocks of rows are formatted in parallel from values escaped once each, and written in order:
/// the bytes are those one `csv` writer would produce (a test holds them to it).
pub fn write_csv<W: Write>(table: &Table, ds: &Dataset, a: &Anonymized, mut out: W, delimiter: u8) -> Result<()> {
    let mut builder = csv::WriterBuilder::new();
    builder.delimiter(delimiter);
    {
        let mut w = builder.from_writer(&mut out);
        w.write_record(table.names())?;
        w.flush()?;
    }
    // For each column: Some(qi index) if it is a QI.
    let qi_of: Vec<Option<usize>> = table
        .columns()
        .iter()
        .map(|c| ds.qis.iter().position(|q| q.name == c.name()))
        .collect();
    // Per QI: generalised label of every leaf at the chosen level.
    let labels: Vec<Vec<&str>> = ds
        .qis
        .iter()
        .zip(&a.levels)
        .map(|(q, &l)| {
            let level = q.hierarchy.level(l as usize);
            level
                .of_leaf()
                .iter()
                .map(|&g| level.labels()[g as usize].as_str())
                .collect()
        })
        .collect();
    // Every distinct output value escaped once; a row is then its fields' bytes side by side.
    // Within a record of two or more fields the csv writer escapes each field on its own content
    // (a lone empty field, the one exception, needs a one-column table, which keeps the writer).
    let rendered: Option<Vec<RenderedColumn>> = (table.columns().len() >= 2).then(|| {
        table
            .columns()
            .iter()
            .zip(&qi_of)
            .map(|(col, qi)| match qi {
                Some(j) => RenderedColumn::Qi {
                    labels: labels[*j].iter().map(|l| escape_field(l, delimiter)).collect(),
                    codes: &ds.qis[*j].codes,
                },
                None => RenderedColumn::Plain {
                    values: col.dict().iter().map(|v| escape_field(v, delimiter)).collect(),
                    codes: col.codes(),
                },
            })
            .collect()
    });
    let format = |rows: std::ops::Range<usize>| -> Result<Vec<u8>> {
        if let Some(columns) = &rendered {
            let mut out = Vec::with_capacity(rows.len() * 64);
            for row in rows {
                for (c, column) in columns.iter().enumerate() {
                    if c > 0 {
                        out.push(delimiter);
                    }
                    out.extend_from_slice(column.field(row, a.row_suppressed[row]));
                }
                out.push(b'\n');
            }
            return Ok(out);
        }
        let mut w = builder.from_writer(Vec::with_capacity(rows.len() * 64));
        let mut record: Vec<&str> = Vec::with_capacity(table.columns().len());
        for row in rows {
            record.clear();
            for (c, col) in table.columns().iter().enumerate() {
                record.push(match qi_of[c] {
                    Some(_) if a.row_suppressed[row] => "*",
                    Some(j) => labels[j][ds.qis[j].codes[row] as usize],
                    None => col.value(row),
                });
            }
            w.write_record(&record)?;
        }
        w.into_inner().map_err(|e| Error::Io(e.into_error()))
    };
    let blocks: Vec<std::ops::Range<usize>> = (0..table.rows())
        .step_by(WRITE_BLOCK)
        .map(|start| start..(start + WRITE_BLOCK).min(table.rows()))
        .collect();
    // A few blocks per thread at a time, so memory stays at a few blocks' text.
    for group in blocks.chunks(2 * rayon::current_num_threads().max(1)) {
        let texts: Vec<Result<Vec<u8>>> = group.par_iter().cloned().map(&format).collect();
        for text in texts {
            out.write_all(&text?)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One output column with its values already escaped.
enum RenderedColumn<'a> {
    /// A QI: the label of every leaf code at the chosen level; suppressed rows show `*`.
    Qi { labels: Vec<Vec<u8>>, codes: &'a [u32] },
    /// Any other column: its dictionary.
    Plain { values: Vec<Vec<u8>>, codes: &'a [u32] },
}

impl RenderedColumn<'_> {
    #[inline]
    fn field(&self, row: usize, suppressed: bool) -> &[u8] {
        match self {
            Self::Qi { .. } if suppressed => b"*",
            Self::Qi { labels, codes } => &labels[codes[row] as usize],
            Self::Plain { values, codes } => &values[codes[row] as usize],
        }
    }
}

/// A field as the csv writer (default settings, this delimiter) writes it inside a record of two
/// or more fields: quoted, with quotes doubled, if it holds the delimiter, a quote, `\r` or `\n`.
fn escape_field(value: &str, delimiter: u8) -> Vec<u8> {
    let bytes = value.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == delimiter || matches!(b, b'"' | b'\r' | b'\n'))
    {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// Writes the anonymised table to a CSV file (I/O).
pub fn write_csv_file(table: &Table, ds: &Dataset, a: &Anonymized, path: &Path, delimiter: u8) -> Result<()> {
    let file = std::fs::File::create(path)?;
    write_csv(
        table,
        ds,
        a,
        std::io::BufWriter::with_capacity(1 << 20, file),
        delimiter,
    )
}
