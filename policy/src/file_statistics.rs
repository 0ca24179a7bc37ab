//! Statistics over a researcher's own file (`tokumei stats --input`), admitted and paid for by the policy service.
//!
//! The file is the researcher's already: nothing of the platform's data is read, and the table is computed by the
//! researcher's command. What the platform keeps is the approval's word on it: the service checks the platform's
//! rules (a file named like a store table is held to that table's rules), the approval and the committee's rules
//! as for a table over the store, and spends a DP table's loss — planned here from the request, not taken from the
//! command — before the command draws any noise. When the table is made, a small-cell table is audited against the
//! earlier ones of its population (the file's digest) and recorded, and every table enters the provision register.
//! The command holds a session only; every refusal is audited with its code, as over the store.

use serde::{Deserialize, Serialize};
use tokumei_catalogue::statistics::{AdmittedFileStatistics, Population, StatisticsSpec};
use tokumei_deid::dp::request::Measure;
use tokumei_deid::linked_tables::LinkedTable;
use tokumei_deid::small_cell::SmallCellRule;

use crate::authorization::{Action, Actor};
use crate::budget_ledger::LedgerEntry;
use crate::committee::SMALL_CELL_FLOOR;
use crate::error::{PolicyError, Result};
use crate::service::{Origin, Policy};

/// What the service made of a file statistics request, before any data is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileAdmission {
    /// Whether the table is differentially private (else: small-cell rule).
    pub differentially_private: bool,
    /// The minimum cell size: the small-cell rule's threshold (the caller's, else the approval's, never below the
    /// floor), or the DP table's blanking minimum if the caller gave one.
    pub min_cell: Option<u64>,
    /// The spend of a DP table's loss, made before the command draws any noise.
    pub ledger_entry: Option<LedgerEntry>,
    /// ε left in the approval's budget after this table.
    pub remaining_epsilon: f64,
    /// δ left in the approval's budget after this table.
    pub remaining_delta: f64,
}

/// A small-cell table over a file as its command reports it: the cells the differencing audit reads, and the
/// population they were counted from.
#[derive(Debug, Clone)]
pub struct SmallCellMade {
    /// The table's cells and their linear relations.
    pub linked: LinkedTable,
    /// The file's digest and stem.
    pub population: Population,
}

impl Policy {
    /// Admits a file statistics request (see the module documentation). A DP table's loss is spent and the table
    /// entered in the provision register here, once, before the command draws any noise: nothing about a DP table
    /// is recorded later, so no table is recorded that was not paid for. A small-cell table gets its threshold.
    pub async fn admit_file_statistics(
        &self,
        actor: &Actor,
        spec: &StatisticsSpec,
        origin: Origin<'_>,
    ) -> Result<FileAdmission> {
        let (admitted, min_cell) = self.admit_file_use(actor, spec, origin).await?;
        let ledger_entry = if admitted.private {
            let query = spec.describe_file();
            let (_, entry) = self
                .spend_statistics(actor, &spec.application, &query, &admitted.request, origin)
                .await?;
            // Declared keys are every cell the table shows; with keys chosen by DP the count is the command's
            // to know (0 here).
            let cells = spec.public_keys.as_ref().map_or(0, Vec::len);
            let cells = i64::try_from(cells).unwrap_or(i64::MAX);
            self.record_provision(actor, &spec.application, &query, cells, origin)
                .await?;
            Some(entry)
        } else {
            None
        };
        let status = self.budget().status(&spec.application).await?;
        Ok(FileAdmission {
            differentially_private: admitted.private,
            min_cell,
            ledger_entry,
            remaining_epsilon: status.spent.remaining_epsilon(&status.project.budget),
            remaining_delta: status.spent.remaining_delta(&status.project.budget),
        })
    }

    /// Records a small-cell table made over a file: admitted again as the approval stands now; the table must be
    /// the one admitted (its threshold, every published count allowed by that rule, its grouped columns) and its
    /// population the file's digest, kept apart per approval; then it is audited against the earlier ones of that
    /// population and recorded, or refused and the refusal audited; then the provision register. Returns the
    /// ledger entry.
    pub async fn record_file_statistics(
        &self,
        actor: &Actor,
        spec: &StatisticsSpec,
        cells: u64,
        made: SmallCellMade,
        origin: Origin<'_>,
    ) -> Result<LedgerEntry> {
        let (admitted, min_cell) = self.admit_file_use(actor, spec, origin).await?;
        if admitted.private {
            return Err(PolicyError::Invalid(
                "a differentially private table is recorded when its loss is spent, not afterwards".into(),
            ));
        }
        // The rule is the one admitted, not one the command names.
        let rule = SmallCellRule {
            threshold: min_cell.unwrap_or(SMALL_CELL_FLOOR),
            suppress_zeros: spec.suppress_zeros,
        };
        check_made(spec, &admitted, &rule, &made.linked)?;
        let population = file_population(spec, &made.population)?;
        let query = spec.describe_file();
        let entry = self
            .publish_small_cell_table(
                actor,
                &spec.application,
                &query,
                &rule,
                &made.linked,
                &population,
                origin,
            )
            .await?;
        let cells = i64::try_from(cells).unwrap_or(i64::MAX);
        self.record_provision(actor, &spec.application, &query, cells, origin)
            .await?;
        Ok(entry)
    }

    /// The role, the platform's rules and the approval's, for a request over a file.
    async fn admit_file_use(
        &self,
        actor: &Actor,
        spec: &StatisticsSpec,
        origin: Origin<'_>,
    ) -> Result<(AdmittedFileStatistics, Option<u64>)> {
        self.check_role(actor, Action::RunStatistics, origin).await?;
        let admitted = match spec.admit_file() {
            Ok(a) => a,
            Err(r) => {
                return Err(self
                    .refuse_statistics(&actor.username, &spec.application, r, origin)
                    .await);
            }
        };
        let min_cell = self
            .admit_statistics_use(actor, spec, &admitted.request, admitted.private, origin)
            .await?;
        Ok((admitted, min_cell))
    }
}

/// Refuses a small-cell table that is not the one admitted: another minimum cell, a published count the admitted
/// rule would have suppressed, other grouped columns, or keys said to be declared when none were.
fn check_made(
    spec: &StatisticsSpec,
    admitted: &AdmittedFileStatistics,
    rule: &SmallCellRule,
    linked: &LinkedTable,
) -> Result<()> {
    let refuse = |what: &str| {
        Err(PolicyError::Invalid(format!(
            "the small-cell table is not the one admitted: {what}"
        )))
    };
    if linked.threshold != rule.threshold {
        return refuse("it was protected at another minimum cell");
    }
    if linked.entries.iter().any(|e| e.count.is_some_and(|c| rule.is_small(c))) {
        return refuse("it publishes a count the admitted rule suppresses");
    }
    let mut groupings = admitted.request.group_by.clone();
    let histogram = matches!(admitted.request.measure, Measure::Histogram { .. });
    if let Measure::Histogram { column, .. } = &admitted.request.measure {
        groupings.push(column.clone());
    }
    let columns: Vec<&String> = linked.dimensions.iter().map(|d| &d.column).collect();
    if columns != groupings.iter().collect::<Vec<_>>() {
        return refuse("it groups other columns than the request");
    }
    if linked.keys_declared && spec.public_keys.is_none() && !histogram {
        return refuse("it says its keys were declared, and the request declared none");
    }
    Ok(())
}

/// The population a file's table is audited in: the file's SHA-256 as the command read it, kept apart per
/// approval — a name of the store's or another approval's population would let one researcher's made-up tables
/// enter another's audit.
fn file_population(spec: &StatisticsSpec, given: &Population) -> Result<Population> {
    let digest = given
        .name
        .strip_prefix("file:")
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let Some(digest) = digest else {
        return Err(PolicyError::Invalid(
            "a file's population is named by the file's SHA-256 (file:<64 hex digits>)".into(),
        ));
    };
    if given.source != spec.table {
        return Err(PolicyError::Invalid(
            "the table's population is not the file the request names".into(),
        ));
    }
    Ok(Population {
        name: format!("file:{}:{digest}", spec.application),
        source: spec.table.clone(),
    })
}
