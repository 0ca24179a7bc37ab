//! DataFusion adapter (feature `datafusion`): the engine over a DataFusion table.
//!
//! The core store keeps its clinical tables in Delta/Parquet and queries them with DataFusion. The
//! release service must be able to anonymise a cohort straight from there, without exporting a CSV
//! first: an export would put one more plaintext copy of pseudonymised clinical data on disk and
//! would have to be tracked and destroyed like any other copy.
//!
//! The adapter only turns a query result into a [`Table`]; everything after that — encoding,
//! search, transformation, risk, verification — is the unchanged engine, so a DataFusion job and
//! a CSV job over the same rows give the same result. Values are rendered exactly as
//! [`Table::from_record_batches`] renders them (Arrow's display format, null as the empty string).
//!
//! Row order: a DataFusion plan with several partitions yields rows in no fixed order, unless the
//! query sorts. The optimal transformation, its metric and the suppressed records do not depend on
//! row order; only the order of the written output does. Add `.sort(...)` to the `DataFrame` when a
//! reproducible output order matters.

use ::datafusion::dataframe::DataFrame;
use ::datafusion::execution::context::SessionContext;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::table::{BatchTableBuilder, Table};

/// Executes `df` and builds a [`Table`] from its result.
///
/// The result is streamed: each record batch is dictionary-encoded into the table and dropped, so
/// at no point does the process hold the Arrow form of the whole result next to the encoded one
/// (the encoded form is one `u32` per value plus one copy of each distinct value).
///
/// An empty result gives a table with the result's columns and no rows (which
/// [`crate::dataset::Dataset::encode`] then refuses with "the input has no records").
pub async fn table_from_dataframe(df: DataFrame) -> Result<Table> {
    let mut stream = df.execute_stream().await?;
    let mut builder = BatchTableBuilder::new(stream.schema().as_ref());
    while let Some(batch) = stream.next().await {
        builder.push(&batch?)?;
    }
    builder.finish()
}

/// Reads the columns `columns` of the table `table` registered in `ctx` and builds a [`Table`].
///
/// Only the named columns — the job's quasi-identifiers, sensitive, subject and insensitive
/// attributes — are projected, so the scan never reads (and the engine never holds) the other
/// clinical columns of the table: data minimisation, and less I/O and memory. The projection is
/// pushed down into the scan by DataFusion, so Parquet/Delta files only decode those columns.
///
/// For a cohort (a filter, a join), build the `DataFrame` yourself and call
/// [`table_from_dataframe`], e.g. `ctx.table("t").await?.filter(col("age").gt_eq(lit(40)))?.select_columns(&[...])?`.
pub async fn table_from_context(ctx: &SessionContext, table: &str, columns: &[&str]) -> Result<Table> {
    if columns.is_empty() {
        return Err(Error::Config("name at least one column to read".into()));
    }
    let df = ctx.table(table).await?;
    let fields = df.schema().fields();
    if let Some(missing) = columns.iter().find(|c| !fields.iter().any(|f| f.name() == **c)) {
        return Err(Error::UnknownColumn((*missing).to_string()));
    }
    table_from_dataframe(df.select_columns(columns)?).await
}
