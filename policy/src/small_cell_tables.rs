//! Published small-cell tables, kept so that tables of one population are audited together.
//!
//! A small-cell table is not differentially private: its protection holds only as long as no other
//! publication gives a suppressed cell back by subtraction. The ledger therefore keeps, beside the
//! release's ledger entry, the table's definition (each grouped column's values by rank with the labels
//! the researcher received, cells, counts shown, which entries are suppressed — never a suppressed
//! count, never a value the table does not show), under the name of the population it was
//! computed on. [`BudgetLedger::publish_small_cell`] hands every earlier table of that population to
//! the caller's audit and records the new one in the same transaction, after locking the population:
//! two tables of one population are audited one after the other, never both against the same earlier
//! set. The audit itself (`tokumei_deid::linked_tables`) is the caller's, so this crate stores and
//! serialises without knowing the model.

use serde::Serialize;
use sqlx::Row;

use crate::budget_ledger::{BudgetLedger, LedgerEntry, SpendRequest, lock_project, spend_in, validated};
use crate::error::Result;

/// Every table of one population, oldest first.
const TABLES_OF_POPULATION: &str =
    "SELECT project, seq, source, definition FROM small_cell_tables WHERE population = $1 ORDER BY at_ms, project, seq";

/// One published small-cell table as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredSmallCellTable {
    /// Project (approval) it was published under.
    pub project: String,
    /// Its entry in the project's ledger.
    pub seq: i64,
    /// What it was computed from (a store table or an input file's stem).
    pub source: String,
    /// The published table as the audit reads it (JSON of `tokumei_deid::linked_tables::LinkedTable`).
    pub definition: String,
}

/// What is known before a new small-cell table is published: the audit's input.
#[derive(Debug, Clone, Default)]
pub struct SmallCellHistory {
    /// Every table already published on the same population, by any project.
    pub same_population: Vec<StoredSmallCellTable>,
    /// How many tables this project published on the same source when it held other data: comparing
    /// them with a new one differences populations in time, which no audit of one population covers.
    pub project_other_populations: usize,
    /// How many of this project's small-cell tables were refused earlier on answers that depend on the data
    /// (counted by [`BudgetLedger::publish_small_cell`]).
    pub project_refusals: usize,
}

/// The table to publish: where it comes from and what the researcher receives.
#[derive(Debug, Clone, Copy)]
pub struct SmallCellPublication<'a> {
    /// Names the data the table counts (the store's research snapshot, or a file's digest).
    pub population: &'a str,
    /// What it was computed from (a store table or an input file's stem).
    pub source: &'a str,
    /// JSON of the published table.
    pub definition: &'a str,
}

impl BudgetLedger {
    /// Records a small-cell release: locks the population, gives `audit` every earlier table of it
    /// (and the count of the project's tables of the same source on other data), and only when the
    /// audit accepts appends the ledger entry of `request` and the table, in one transaction. The
    /// audit's refusal is returned as the inner error with nothing written.
    /// A refusal for which `is_probe` holds (one that depends on the data) is counted in the same transaction,
    /// under the project's lock, so concurrent requests cannot each get an answer before the count moves.
    pub async fn publish_small_cell<E>(
        &self,
        project: &str,
        request: SpendRequest,
        table: SmallCellPublication<'_>,
        audit: impl FnOnce(&SmallCellHistory) -> std::result::Result<(), E>,
        is_probe: impl FnOnce(&E) -> bool,
    ) -> Result<std::result::Result<LedgerEntry, E>> {
        let request = validated(project, request)?;
        let mut tx = self.db().begin_write().await?;
        // The project first: two of its tables on different populations must not both count zero earlier ones.
        lock_project(&mut tx, project).await?;
        // The lock: insert the population's row if new, then write it (SQLite's write lock, PostgreSQL's row lock).
        sqlx::query("INSERT INTO small_cell_populations (population, tables) VALUES ($1, 0) ON CONFLICT (population) DO NOTHING")
            .bind(table.population)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE small_cell_populations SET tables = tables + 1 WHERE population = $1")
            .bind(table.population)
            .execute(&mut *tx)
            .await?;
        let same_population = sqlx::query(TABLES_OF_POPULATION)
            .bind(table.population)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(stored)
            .collect::<Result<Vec<_>>>()?;
        let other: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM small_cell_tables WHERE project = $1 AND source = $2 AND population <> $3",
        )
        .bind(project)
        .bind(table.source)
        .bind(table.population)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let refusals: i64 = sqlx::query("SELECT COUNT(*) AS n FROM small_cell_refusals WHERE project = $1")
            .bind(project)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let history = SmallCellHistory {
            same_population,
            project_other_populations: usize::try_from(other).unwrap_or(usize::MAX),
            project_refusals: usize::try_from(refusals).unwrap_or(usize::MAX),
        };
        if let Err(refusal) = audit(&history) {
            if !is_probe(&refusal) {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
            // Nothing published: undo the population's counter, keep the refusal, commit both.
            sqlx::query("UPDATE small_cell_populations SET tables = tables - 1 WHERE population = $1")
                .bind(table.population)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO small_cell_refusals (project, population, at_ms) VALUES ($1, $2, $3)")
                .bind(project)
                .bind(table.population)
                .bind(chrono::Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Err(refusal));
        }
        let entry = spend_in(&mut tx, project, request).await?;
        sqlx::query(
            "INSERT INTO small_cell_tables (project, seq, population, source, definition, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&entry.project)
        .bind(entry.seq)
        .bind(table.population)
        .bind(table.source)
        .bind(table.definition)
        .bind(entry.at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(entry))
    }

    /// Every small-cell table published on `population`, oldest first (for auditors and tests).
    pub async fn small_cell_tables(&self, population: &str) -> Result<Vec<StoredSmallCellTable>> {
        sqlx::query(TABLES_OF_POPULATION)
            .bind(population)
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(stored)
            .collect()
    }
}

fn stored(row: &sqlx::any::AnyRow) -> Result<StoredSmallCellTable> {
    Ok(StoredSmallCellTable {
        project: row.try_get("project")?,
        seq: row.try_get("seq")?,
        source: row.try_get("source")?,
        definition: row.try_get("definition")?,
    })
}
