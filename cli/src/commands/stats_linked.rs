//! Publishing a small-cell table after auditing it against every earlier table of its population.
//!
//! One table protected by complementary suppression is safe alone; two tables of the same patients can
//! give a suppressed cell back by subtraction (a regrouped prefecture, a finer age band beside a coarser
//! one). The policy database keeps every published small-cell table with its definition; before a new
//! one is written, [`tokumei_deid::linked_tables::recoverable`] decides exactly, over the tables of the
//! same population together, whether any suppressed entry — of the new table or of an earlier one —
//! becomes determined. If so the request is refused (`SMALL_CELL_DIFFERENCING`) and audited, and nothing
//! is written. The audit runs inside the ledger's transaction, after the population is locked.
//!
//! Differencing *in time* (the same table before and after new patients arrive) is outside an audit of
//! one population: a project that published small-cell tables of a source may not publish another on
//! changed data (`SMALL_CELL_POPULATION_CHANGED`); differentially private tables remain available.
//! Tables of other projects on earlier snapshots are not compared (stated in docs/statistics.md).

use anyhow::Result;
use std::collections::HashMap;
use tokumei_deid::dp::grouping::Grouped;
use tokumei_deid::linked_tables::{AuditLimits, LinkedTable, recoverable};
use tokumei_deid::small_cell::{ProtectedTable, SmallCellRule};
use tokumei_policy::budget_ledger::{BudgetLedger, LedgerEntry, SpendRequest};
use tokumei_policy::small_cell_tables::{SmallCellHistory, SmallCellPublication};

use super::stats_rules::StatsRefusal;

/// Where a table's counts come from: the population the audit groups tables by.
#[derive(Debug, Clone)]
pub struct Population {
    /// The store's research snapshot, or the input file's digest.
    pub name: String,
    /// The table's name (a store table, or an input file's stem): one namespace, so the same data read
    /// both ways is the same source.
    pub source: String,
}

/// The attacker's view of a protected table: the grouping of every key column and what each entry shows.
pub fn linked_table(grouped: &Grouped, protected: &ProtectedTable) -> Result<LinkedTable> {
    let t = protected.table();
    // A 2-D table of three or more key columns joins the 2nd.. labels into one column label.
    // `stats::count_table` has refused labels whose joined forms collide, so this is one-to-one.
    let tails: HashMap<String, Vec<String>> = grouped
        .keys
        .iter()
        .filter(|k| k.len() >= 2)
        .map(|k| (k[1..].join(" | "), k[1..].to_vec()))
        .collect();
    let parts = grouped.key_columns.len();
    let key = |i: usize, j: usize| -> Vec<String> {
        match parts {
            0 => Vec::new(),
            1 => vec![t.row_labels[i].clone()],
            _ => {
                let col = t
                    .col_labels
                    .as_ref()
                    .and_then(|c| c.get(j))
                    .cloned()
                    .unwrap_or_default();
                let mut key = vec![t.row_labels[i].clone()];
                key.extend(tails.get(&col).cloned().unwrap_or_else(|| vec![col]));
                key
            }
        }
    };
    Ok(LinkedTable::from_protected(
        protected,
        grouped.dimensions.clone(),
        grouped.public,
        key,
    )?)
}

/// Differencing refusals an approval may receive before its small-cell tables close: each refusal depends on
/// which cells are small, so it answers a question about the data, and no answer may be had as often as asked.
/// Differentially private tables stay open; a new approval (a change request) starts afresh.
pub const MAX_DIFFERENCING_REFUSALS: usize = 3;

/// The audit of `new` against what the population already published (see the module documentation).
pub fn audit(new: &LinkedTable, history: &SmallCellHistory) -> Result<(), StatsRefusal> {
    if history.project_refusals >= MAX_DIFFERENCING_REFUSALS {
        return Err(StatsRefusal {
            code: "SMALL_CELL_PROBING_LIMIT",
            message: format!(
                "this application has had {} small-cell tables refused for differencing (limit \
                 {MAX_DIFFERENCING_REFUSALS}); its small-cell tables are closed — use differential privacy, or \
                 ask the committee for a change",
                history.project_refusals
            ),
        });
    }
    if history.project_other_populations > 0 {
        return Err(StatsRefusal {
            code: "SMALL_CELL_POPULATION_CHANGED",
            message: format!(
                "this application published {} small-cell table(s) of this source when it held other data; \
                 comparing them with a new one would difference the change, so further tables of this source \
                 must be differentially private",
                history.project_other_populations
            ),
        });
    }
    if history.same_population.is_empty() {
        return Ok(());
    }
    // Fixed too: why the audit stopped (its size, a timeout, contradicting tables) depends on the data.
    let inconclusive = |_why: String| StatsRefusal {
        code: "SMALL_CELL_AUDIT_INCONCLUSIVE",
        message: "the audit against earlier small-cell tables of this population could not be completed; the \
                  table is not published"
            .into(),
    };
    let mut tables = history
        .same_population
        .iter()
        .map(|t| serde_json::from_str::<LinkedTable>(&t.definition))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| inconclusive("a stored table could not be read".into()))?;
    // One threshold per population: otherwise raising --min-cell until a refused table is accepted reads
    // the count that decided it.
    if tables.iter().any(|t| t.threshold != new.threshold) {
        return Err(StatsRefusal {
            code: "SMALL_CELL_THRESHOLD_FIXED",
            message: "small-cell tables of this population were published at another minimum cell; \
                      use the same one"
                .into(),
        });
    }
    tables.push(new.clone());
    // Short enough that the policy database's other writers (waiting at most 10 s) are not starved.
    let limits = AuditLimits {
        max_atoms: 500_000,
        time_limit: std::time::Duration::from_secs(8),
    };
    let result = recoverable(&tables, &limits).map_err(|e| inconclusive(e.to_string()))?;
    if result.recovered.is_empty() {
        return Ok(());
    }
    // A fixed message: how many entries would come back, and whose, depends on the data.
    Err(StatsRefusal {
        code: "SMALL_CELL_DIFFERENCING",
        message: "together with earlier small-cell tables of this population, this table would let suppressed \
                  entries be recomputed; publish it with differential privacy, or with a grouping that does not cut \
                  across the earlier ones"
            .into(),
    })
}

/// Records a small-cell release and its table in one transaction, after the audit accepts it; the
/// release is counted as not differentially private (no loss figure). The inner error is the refusal.
pub async fn publish(
    ledger: &BudgetLedger,
    project: &str,
    actor: &str,
    query: &str,
    rule: &SmallCellRule,
    table: &LinkedTable,
    population: &Population,
) -> Result<Result<LedgerEntry, StatsRefusal>> {
    let request = SpendRequest {
        actor: actor.to_string(),
        query: query.to_string(),
        mechanism: format!("small-cell<{} (not differentially private)", rule.threshold),
        loss: Default::default(),
        reported_epsilon: 0.0,
        reported_delta: 0.0,
        differentially_private: false,
    };
    let definition = serde_json::to_string(table)?;
    let publication = SmallCellPublication {
        population: &population.name,
        source: &population.source,
        definition: &definition,
    };
    ledger
        .publish_small_cell(
            project,
            request,
            publication,
            |history| audit(table, history),
            |refusal| {
                matches!(
                    refusal.code,
                    "SMALL_CELL_DIFFERENCING" | "SMALL_CELL_AUDIT_INCONCLUSIVE"
                )
            },
        )
        .await
        .map_err(super::access::reason)
}
