//! A workspace's SQL: DataFusion over the workspace's own tables and nothing else.
//!
//! The session knows only the tables registered into it (the approval's cohort and columns, the researcher's
//! uploads): no catalogue of the store, no `information_schema`, no URL tables, no disk for spilling. Each query
//! is a single read-only statement — DDL (`CREATE EXTERNAL TABLE`), DML (`INSERT`, `COPY`) and statements
//! (`SET`) are refused once planned, before anything runs — under a time limit; its operators hold memory from a
//! bounded pool, and its result is cut one row past the row limit (the collected rows are not counted by the pool:
//! the row limit bounds them). A refusal or a failure reports a code and never DataFusion's message, which may
//! quote the query's values.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;

/// The Arrow types a workspace's tables are registered in.
pub use datafusion::arrow;

/// What a query may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a query may run.
    pub time: Duration,
    /// Most memory its operators may hold (no spilling to disk: past it, the query fails).
    pub memory_bytes: usize,
    /// Most rows a result may have.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            time: Duration::from_secs(60),
            memory_bytes: 2 << 30,
            max_rows: 1_000_000,
        }
    }
}

/// Why a query did not run. The codes are what the researcher, the ledger and the monitoring see.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SqlError {
    /// Not a single read-only query (DDL, DML, `COPY`, `SET`, several statements).
    #[error("[SQL_REFUSED] only one read-only query is allowed in a workspace")]
    Refused,
    /// The query could not be planned or run (an unknown table or column, a type error...).
    #[error("[SQL_ERROR] the query could not be planned or run over the workspace's tables")]
    Failed,
    /// It ran longer than the limit.
    #[error("[SQL_TIMEOUT] the query ran longer than {0} s")]
    Timeout(u64),
    /// It needed more memory than the limit.
    #[error("[SQL_MEMORY] the query needed more than {0} bytes of memory")]
    Memory(usize),
    /// Its result has more rows than the limit.
    #[error("[RESULT_TOO_LARGE] the result has more than {0} rows")]
    TooManyRows(usize),
    /// A table could not be registered (a bad name, a repeated one).
    #[error("[INVALID_TABLE] table {0} cannot be registered")]
    InvalidTable(String),
    /// An analysis's frame whose `patient` labels are not the rows' own patients (`crate::lineage`).
    #[error("[FRAME_LINEAGE] the analysis's query is refused: {0}")]
    Lineage(String),
}

impl SqlError {
    /// The machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Refused => "SQL_REFUSED",
            SqlError::Failed => "SQL_ERROR",
            SqlError::Timeout(_) => "SQL_TIMEOUT",
            SqlError::Memory(_) => "SQL_MEMORY",
            SqlError::TooManyRows(_) => "RESULT_TOO_LARGE",
            SqlError::InvalidTable(_) => "INVALID_TABLE",
            SqlError::Lineage(_) => "FRAME_LINEAGE",
        }
    }
}

/// The SQL engine of one workspace.
pub struct WorkspaceSql {
    ctx: SessionContext,
    limits: Limits,
    rows: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

/// A query's rows and what it read, for the ledger and the usage report.
#[derive(Debug)]
pub struct Traced {
    /// The result.
    pub batches: Vec<RecordBatch>,
    /// The workspace tables the plan scans (subqueries included), sorted.
    pub tables: Vec<String>,
    /// Rows of those tables (each scanned whole: the tables are in memory).
    pub rows_scanned: u64,
}

impl WorkspaceSql {
    /// A session with no table, under `limits`.
    pub fn new(limits: Limits) -> Result<WorkspaceSql, SqlError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(|_| SqlError::Failed)?;
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(true);
        Ok(WorkspaceSql {
            ctx: SessionContext::new_with_config_rt(config, runtime),
            limits,
            rows: Default::default(),
        })
    }

    /// Registers `batches` as table `name` (letters, digits and `_`, starting with a letter).
    pub fn register(&self, name: &str, batches: Vec<RecordBatch>) -> Result<(), SqlError> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let schema = batches.first().map(RecordBatch::schema);
        let (true, Some(schema)) = (valid, schema) else {
            return Err(SqlError::InvalidTable(name.to_owned()));
        };
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let table = MemTable::try_new(schema, vec![batches]).map_err(|_| SqlError::InvalidTable(name.to_owned()))?;
        match self.ctx.register_table(name, Arc::new(table)) {
            Ok(None) => {
                if let Ok(mut known) = self.rows.lock() {
                    known.insert(name.to_owned(), rows);
                }
                Ok(())
            }
            _ => Err(SqlError::InvalidTable(name.to_owned())),
        }
    }

    /// Runs `query` (one read-only statement) under the limits: planned, checked read-only, then executed with
    /// its result cut at one row past the limit, so that a query that would return more never holds more.
    pub async fn query(&self, query: &str) -> Result<Vec<RecordBatch>, SqlError> {
        Ok(self.query_traced(query).await?.batches)
    }

    /// Runs `query` as [`Self::query`] does, and names the tables its plan scans.
    pub async fn query_traced(&self, query: &str) -> Result<Traced, SqlError> {
        self.run(query, None).await
    }

    /// Runs an analysis's frame query: as [`Self::query_traced`], once its optimised plan passes the lineage rules
    /// (`crate::lineage`) over the approval's tables `scope`.
    pub async fn query_frame(
        &self,
        query: &str,
        scope: &std::collections::BTreeSet<String>,
    ) -> Result<Traced, SqlError> {
        self.run(query, Some(scope)).await
    }

    async fn run(&self, query: &str, lineage: Option<&std::collections::BTreeSet<String>>) -> Result<Traced, SqlError> {
        let statements = DFParser::parse_sql(query).map_err(|_| SqlError::Failed)?;
        if statements.len() != 1 {
            return Err(SqlError::Refused);
        }
        let run = async {
            let plan = self
                .ctx
                .state()
                .create_logical_plan(query)
                .await
                .map_err(|_| SqlError::Failed)?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(|_| SqlError::Refused)?;
            if let Some(scope) = lineage {
                let optimised = self.ctx.state().optimize(&plan).map_err(|_| SqlError::Failed)?;
                crate::lineage::check(&optimised, scope).map_err(SqlError::Lineage)?;
            }
            let tables = scanned_tables(&plan);
            let frame = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|_| SqlError::Failed)?
                .limit(0, Some(self.limits.max_rows.saturating_add(1)))
                .map_err(|_| SqlError::Failed)?;
            let batches = frame.collect().await.map_err(|e| {
                if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
                    SqlError::Memory(self.limits.memory_bytes)
                } else {
                    SqlError::Failed
                }
            })?;
            Ok::<_, SqlError>((batches, tables))
        };
        let (batches, tables) = tokio::time::timeout(self.limits.time, run)
            .await
            .map_err(|_| SqlError::Timeout(self.limits.time.as_secs()))??;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > self.limits.max_rows {
            return Err(SqlError::TooManyRows(self.limits.max_rows));
        }
        let rows_scanned = match self.rows.lock() {
            Ok(known) => tables.iter().filter_map(|t| known.get(t)).map(|r| *r as u64).sum(),
            Err(_) => 0,
        };
        Ok(Traced {
            batches,
            tables,
            rows_scanned,
        })
    }
}

/// The tables a plan scans, subqueries included, sorted and once each.
fn scanned_tables(plan: &datafusion::logical_expr::LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut tables = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn patients(n: usize) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("patient", DataType::Int64, false),
            Field::new("sex", DataType::Utf8, false),
            Field::new("hba1c", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| if i % 2 == 0 { "F" } else { "M" }),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| 5.0 + (i % 30) as f64 / 10.0),
                )),
            ],
        )
        .unwrap();
        vec![batch]
    }

    fn workspace(limits: Limits) -> WorkspaceSql {
        let w = WorkspaceSql::new(limits).unwrap();
        w.register("patients", patients(1000)).unwrap();
        w
    }

    #[tokio::test]
    async fn a_grouped_query_over_the_workspace_table_runs() {
        let w = workspace(Limits::default());
        let batches = w
            .query("SELECT sex, count(*) AS n, avg(hba1c) AS mean FROM patients GROUP BY sex ORDER BY sex")
            .await
            .unwrap();
        let n = batches[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!((n.value(0), n.value(1)), (500, 500));
    }

    #[tokio::test]
    async fn files_catalogues_and_writes_are_out_of_reach() {
        let w = workspace(Limits::default());
        for refused in [
            "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/passwd'",
            "COPY patients TO '/tmp/tokumei-workspace-leak.csv'",
            "COPY (SELECT * FROM patients) TO '/tmp/tokumei-workspace-leak.parquet'",
            "INSERT INTO patients VALUES (1, 'F', 5.0)",
            "CREATE TABLE copy AS SELECT * FROM patients",
            "DROP TABLE patients",
            "SET datafusion.catalog.information_schema = true",
            "CREATE VIEW v AS SELECT * FROM patients",
            "SELECT 1; SELECT * FROM patients",
        ] {
            assert_eq!(w.query(refused).await.unwrap_err(), SqlError::Refused, "{refused}");
        }
        for unknown in [
            // The store's tables, another approval's, the opt-out registry: not in this session.
            "SELECT * FROM opt_outs",
            "SELECT * FROM observations",
            "SELECT * FROM other_workspace.patients",
            // Path tricks: a quoted path as a table, file-reading table functions, the catalogue.
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM \"../../store/patients\"",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_parquet('/root/.tokumei/demo/store')",
            "SELECT * FROM information_schema.tables",
            "SHOW TABLES",
        ] {
            assert!(
                matches!(
                    w.query(unknown).await.unwrap_err(),
                    SqlError::Failed | SqlError::Refused
                ),
                "{unknown}"
            );
        }
        assert!(!std::path::Path::new("/tmp/tokumei-workspace-leak.csv").exists());
        assert!(!std::path::Path::new("/tmp/tokumei-workspace-leak.parquet").exists());
    }

    #[tokio::test]
    async fn errors_say_a_code_and_never_the_query() {
        let w = workspace(Limits::default());
        // An ordinary error whose message says "not allowed" is an error, not a refusal.
        assert_eq!(
            w.query("SELECT * FROM patients WHERE count(*) > 1").await.unwrap_err(),
            SqlError::Failed
        );
        let e = w
            .query("SELECT * FROM patients WHERE sex = 'Tanaka Taro 1950-01-01' AND nonexistent = 1")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("[SQL_ERROR]") && !e.contains("Tanaka") && !e.contains("nonexistent"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn memory_and_rows_are_limited_and_nothing_spills_to_disk() {
        let w = WorkspaceSql::new(Limits {
            memory_bytes: 256 * 1024,
            ..Limits::default()
        })
        .unwrap();
        w.register("patients", patients(200_000)).unwrap();
        // Sorting 200,000 rows needs more than 256 KiB, and with the disk disabled nothing may spill.
        let e = w
            .query("SELECT * FROM patients ORDER BY hba1c DESC, patient")
            .await
            .unwrap_err();
        assert_eq!(e, SqlError::Memory(256 * 1024));
        let w = WorkspaceSql::new(Limits {
            max_rows: 10,
            ..Limits::default()
        })
        .unwrap();
        w.register("patients", patients(100)).unwrap();
        assert_eq!(
            w.query("SELECT * FROM patients").await.unwrap_err(),
            SqlError::TooManyRows(10)
        );
        assert_eq!(
            w.query("SELECT * FROM patients LIMIT 10").await.unwrap()[0].num_rows(),
            10
        );
    }

    #[test]
    fn table_names_are_plain_identifiers_registered_once() {
        let w = WorkspaceSql::new(Limits::default()).unwrap();
        for bad in ["", "1x", "../etc", "a.b", "x y"] {
            assert!(w.register(bad, patients(1)).is_err(), "{bad}");
        }
        w.register("codes", patients(1)).unwrap();
        assert_eq!(
            w.register("codes", patients(1)).unwrap_err(),
            SqlError::InvalidTable("codes".into())
        );
    }
}
