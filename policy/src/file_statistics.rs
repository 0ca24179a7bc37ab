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
use tokumei_deid::linked_tables::LinkedTable;
use tokumei_deid::small_cell::SmallCellRule;

use crate::authorization::{Action, Actor};
use crate::budget_ledger::LedgerEntry;
use crate::committee::SMALL_CELL_FLOOR;
use crate::error::{PolicyError, Result};
use crate::service::{Origin, Policy};
use crate::statistics::publish_small_cell;

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
    /// Admits a file statistics request and, for a DP table, spends its loss (see the module documentation).
    pub async fn admit_file_statistics(
        &self,
        actor: &Actor,
        spec: &StatisticsSpec,
        origin: Origin<'_>,
    ) -> Result<FileAdmission> {
        let (admitted, min_cell) = self.admit_file_use(actor, spec, origin).await?;
        let ledger_entry = if admitted.private {
            let (_, entry) = self
                .spend_statistics(
                    actor,
                    &spec.application,
                    &spec.describe_file(),
                    &admitted.request,
                    origin,
                )
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

    /// Records a table made over a file: admitted again as the approval stands now; a small-cell table (which must
    /// come with its cells) is audited against the earlier ones of its population and recorded, or refused and the
    /// refusal audited; then the provision register. Returns the small-cell table's ledger entry.
    pub async fn record_file_statistics(
        &self,
        actor: &Actor,
        spec: &StatisticsSpec,
        cells: u64,
        small_cell: Option<SmallCellMade>,
        origin: Origin<'_>,
    ) -> Result<Option<LedgerEntry>> {
        let (admitted, min_cell) = self.admit_file_use(actor, spec, origin).await?;
        let query = spec.describe_file();
        let entry = match (admitted.private, small_cell) {
            (true, _) => None,
            (false, None) => {
                return Err(PolicyError::Invalid(
                    "a small-cell table is recorded with its cells, for the differencing audit".into(),
                ));
            }
            (false, Some(made)) => {
                // The rule is the one admitted, not one the command names.
                let rule = SmallCellRule {
                    threshold: min_cell.unwrap_or(SMALL_CELL_FLOOR),
                    suppress_zeros: spec.suppress_zeros,
                };
                if made.population.source != spec.table {
                    return Err(PolicyError::Invalid(
                        "the table's population is not the file the request names".into(),
                    ));
                }
                let published = publish_small_cell(
                    self.budget(),
                    &spec.application,
                    &actor.username,
                    &query,
                    &rule,
                    &made.linked,
                    &made.population,
                )
                .await?;
                match published {
                    Ok(entry) => Some(entry),
                    Err(refusal) => {
                        return Err(self
                            .refuse_statistics(&actor.username, &spec.application, refusal, origin)
                            .await);
                    }
                }
            }
        };
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
