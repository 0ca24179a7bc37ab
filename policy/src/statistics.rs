//! Statistics over the core store, asked of the policy service and computed by the core.
//!
//! A researcher asks for a table under a statistics approval. Before anything is spent or read, the service
//! checks the platform's rules and resolves the catalogue (`tokumei_catalogue::statistics`), admits the use on
//! the approval (recipient, channel, tables, columns, expiry, revocation, bans) and the committee's rules for it
//! (mechanism, groupings, the small-cell minimum). A differentially private table's loss is then spent from the
//! approval's budget, and an order signed for the core carries the request and the loss paid; the core recomputes
//! the plan and refuses one that costs more. Every refusal is audited with its reason code.
//!
//! When the core reports, a small-cell table is audited against every earlier small-cell table of its population
//! (differencing, below) and recorded with its definition; a refused table's report is withdrawn, so its requester
//! never reads it. The result of a statistics order is the requester's alone.
//!
//! Differencing *in time* (the same table before and after new patients arrive) is outside an audit of one
//! population: a project that published small-cell tables of a source may not publish another on changed data
//! (`SMALL_CELL_POPULATION_CHANGED`); differentially private tables remain available.

use tokumei_catalogue::statistics::{Population, StatisticsOrder, StatisticsSpec, StatsRefusal, columns_used};
use tokumei_deid::dp::plan::Plan;
use tokumei_deid::dp::request::{Measure, StatsRequest};
use tokumei_deid::linked_tables::{AuditLimits, LinkedTable, recoverable};
use tokumei_deid::small_cell::SmallCellRule;

use crate::audit_ledger::{AuditEvent, Outcome};
use crate::authorization::{Action, Actor};
use crate::budget_ledger::{BudgetLedger, LedgerEntry, SpendRequest};
use crate::committee::{SMALL_CELL_FLOOR, StatisticsUse, TableRequest, UseKind};
use crate::core_orders::{CoreOperation, OrderStatus};
use crate::error::{PolicyError, Result};
use crate::service::{Origin, Policy};
use crate::small_cell_tables::{SmallCellHistory, SmallCellPublication};

/// Differencing refusals an approval may receive before its small-cell tables close: each refusal depends on
/// which cells are small, so it answers a question about the data, and no answer may be had as often as asked.
/// Differentially private tables stay open; a new approval (a change request) starts afresh.
pub const MAX_DIFFERENCING_REFUSALS: usize = 3;

/// The audit of `new` against what the population already published (see the module documentation).
pub fn audit(new: &LinkedTable, history: &SmallCellHistory) -> std::result::Result<(), StatsRefusal> {
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
    let inconclusive = || StatsRefusal {
        code: "SMALL_CELL_AUDIT_INCONCLUSIVE",
        message: "the audit against earlier small-cell tables of this population could not be completed; the \
                  table is not published"
            .into(),
    };
    let mut tables = history
        .same_population
        .iter()
        .map(|t| serde_json::from_str::<LinkedTable>(&t.definition))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| inconclusive())?;
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
    let result = recoverable(&tables, &limits).map_err(|_| inconclusive())?;
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

/// Records a small-cell release and its table in one transaction, after the audit accepts it; the release is
/// counted as not differentially private (no loss figure). The inner error is the refusal.
pub async fn publish_small_cell(
    ledger: &BudgetLedger,
    project: &str,
    actor: &str,
    query: &str,
    rule: &SmallCellRule,
    table: &LinkedTable,
    population: &Population,
) -> Result<std::result::Result<LedgerEntry, StatsRefusal>> {
    let request = SpendRequest {
        actor: actor.to_string(),
        query: query.to_string(),
        mechanism: format!("small-cell<{} (not differentially private)", rule.threshold),
        loss: Default::default(),
        reported_epsilon: 0.0,
        reported_delta: 0.0,
        differentially_private: false,
    };
    let definition = serde_json::to_string(table)
        .map_err(|e| PolicyError::InvalidState(format!("a small-cell table could not be stored: {e}")))?;
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
}

/// A refusal as the error the caller gets: `INVALID_ARGUMENT` for a malformed request, else the rule's code.
pub fn refusal_error(r: StatsRefusal) -> PolicyError {
    if r.code == "INVALID_ARGUMENT" {
        PolicyError::Invalid(r.message)
    } else {
        PolicyError::ConditionViolated {
            code: r.code,
            message: r.message,
        }
    }
}

impl Policy {
    /// Writes a statistics refusal to the audit ledger (who, which application, the reason code; never the
    /// request's values) and returns it as the caller's error.
    pub async fn refuse_statistics(
        &self,
        who: &str,
        application: &str,
        refusal: StatsRefusal,
        origin: Origin<'_>,
    ) -> PolicyError {
        let event = AuditEvent::new(
            who,
            Action::RunStatistics.as_str(),
            format!("application {application}"),
            Outcome::Denied,
        )
        .reason(refusal.code)
        .source(origin.0);
        match self.audit(event).await {
            Ok(_) => refusal_error(refusal),
            Err(e) => e,
        }
    }

    /// A researcher asks the core for a statistical table over the research view (see the module documentation):
    /// checked, admitted on the approval, its DP loss spent, queued as an order for the core.
    pub async fn request_statistics(
        &self,
        actor: &Actor,
        mut spec: StatisticsSpec,
        origin: Origin<'_>,
    ) -> Result<OrderStatus> {
        self.check_role(actor, Action::RunStatistics, origin).await?;
        if !self.queues_core_orders() {
            // Before any budget is spent: only the service can sign the order that spending pays for.
            return Err(PolicyError::InvalidState(
                "statistics over the store are asked of the policy service (`tokumei policy serve`)".into(),
            ));
        }
        let application = spec.application.clone();
        let admitted = match spec.admit() {
            Ok(a) => a,
            Err(r) => return Err(self.refuse_statistics(&actor.username, &application, r, origin).await),
        };
        spec.min_cell = self
            .admit_statistics_use(actor, &spec, &admitted.request, admitted.private, origin)
            .await?;
        let paid = if admitted.private {
            let (plan, _) = self
                .spend_statistics(actor, &application, &spec.describe(), &admitted.request, origin)
                .await?;
            Some(plan.loss)
        } else {
            None
        };
        let order = StatisticsOrder { request: spec, paid };
        self.queue_core_order(actor, CoreOperation::Statistics(order), origin)
            .await
    }

    /// Admits a statistics use on its approval (recipient, channel, table and columns, expiry, revocation, bans)
    /// and the committee's rules for it (mechanism, groupings, small-cell minimum); refusals are audited. Returns
    /// the minimum cell size the table uses: a small-cell table without one of its own takes the approval's (never
    /// below the floor); a DP table keeps the caller's.
    pub async fn admit_statistics_use(
        &self,
        actor: &Actor,
        spec: &StatisticsSpec,
        request: &StatsRequest,
        private: bool,
        origin: Origin<'_>,
    ) -> Result<Option<u64>> {
        let used = [TableRequest {
            table: spec.table.clone(),
            columns: columns_used(request),
        }];
        let approved = self
            .admit_use(actor, &spec.application, UseKind::Statistics, &used, origin)
            .await?;
        let rules = approved.conditions.map(|c| c.statistics).unwrap_or_default();
        let min_cell = if private {
            spec.min_cell
        } else {
            Some(
                spec.min_cell
                    .unwrap_or_else(|| rules.small_cell_min.unwrap_or(SMALL_CELL_FLOOR).max(SMALL_CELL_FLOOR)),
            )
        };
        // A histogram's bins group by its column as surely as a group-by column does.
        let mut groupings = request.group_by.clone();
        if let Measure::Histogram { column, .. } = &request.measure {
            groupings.push(column.clone());
        }
        let this_use = StatisticsUse {
            table: &spec.table,
            group_by: &groupings,
            small_cell: (!private).then_some(min_cell).flatten(),
        };
        if let Err(e) = rules.check(&spec.application, &this_use) {
            let refusal = StatsRefusal {
                code: e.reason(),
                message: e.to_string(),
            };
            return Err(self
                .refuse_statistics(&actor.username, &spec.application, refusal, origin)
                .await);
        }
        Ok(min_cell)
    }

    /// Plans a DP table's loss from its request and spends it from the approval's budget, before any noise is
    /// drawn; a refusal (over budget, over the platform's ceiling) is audited.
    pub async fn spend_statistics(
        &self,
        actor: &Actor,
        application: &str,
        query: &str,
        request: &StatsRequest,
        origin: Origin<'_>,
    ) -> Result<(Plan, LedgerEntry)> {
        let plan = tokumei_deid::dp::plan::plan(request).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let spend = SpendRequest {
            actor: actor.username.clone(),
            query: query.to_owned(),
            mechanism: format!("{:?}", plan.mechanism).to_lowercase(),
            loss: plan.loss,
            reported_epsilon: plan.reported_epsilon,
            reported_delta: plan.reported_delta,
            differentially_private: true,
        };
        match self.budget().spend(application, spend).await {
            Ok(entry) => Ok((plan, entry)),
            Err(e) => {
                let event = AuditEvent::new(
                    &actor.username,
                    Action::RunStatistics.as_str(),
                    format!("application {application}"),
                    Outcome::Denied,
                )
                .reason(e.reason())
                .source(origin.0);
                self.audit(event).await?;
                Err(e)
            }
        }
    }

    /// Records a small-cell table after the differencing audit accepts it (see [`publish_small_cell`]); a refusal
    /// is audited and returned as the caller's error.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_small_cell_table(
        &self,
        actor: &Actor,
        application: &str,
        query: &str,
        rule: &SmallCellRule,
        table: &LinkedTable,
        population: &Population,
        origin: Origin<'_>,
    ) -> Result<LedgerEntry> {
        let published = publish_small_cell(
            self.budget(),
            application,
            &actor.username,
            query,
            rule,
            table,
            population,
        )
        .await?;
        match published {
            Ok(entry) => Ok(entry),
            Err(refusal) => Err(self
                .refuse_statistics(&actor.username, application, refusal, origin)
                .await),
        }
    }

    /// What the service does with the core's report of a statistics order before its requester may read it:
    /// a small-cell table is audited and recorded (`Ok(Some(code))`: refused, withdraw the report); every
    /// published table is entered in the provision register.
    pub(crate) async fn settle_statistics(
        &self,
        order: &StatisticsOrder,
        requested_by: &str,
        report: &serde_json::Value,
        origin: Origin<'_>,
    ) -> Result<Option<&'static str>> {
        let spec = &order.request;
        let query = spec.describe();
        if order.paid.is_none() {
            let linked: Option<LinkedTable> = report
                .get("linked")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            let population: Option<Population> = report
                .get("population")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            let rule: Option<SmallCellRule> = report
                .get("small_cell")
                .and_then(|s| s.get("rule"))
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            let (Some(linked), Some(population), Some(rule)) = (linked, population, rule) else {
                return Ok(Some("REPORT_INCOMPLETE"));
            };
            let published = publish_small_cell(
                self.budget(),
                &spec.application,
                requested_by,
                &query,
                &rule,
                &linked,
                &population,
            )
            .await?;
            if let Err(refusal) = published {
                let code = refusal.code;
                let _ = self
                    .refuse_statistics(requested_by, &spec.application, refusal, origin)
                    .await;
                return Ok(Some(code));
            }
        }
        let cells = report.get("cells").and_then(serde_json::Value::as_i64).unwrap_or(0);
        let who = self.actor_named(requested_by).await?;
        self.record_provision(&who, &spec.application, &query, cells, origin)
            .await?;
        Ok(None)
    }
}
