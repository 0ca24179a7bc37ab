//! A statistical table over the research view, computed in the core for an order of the policy service.
//!
//! The policy service has checked the request against the platform's rules and the approval, fixed the
//! small-cell minimum and, for a differentially private table, spent its loss from the approval's budget before
//! the order was signed. The core checks the request again with the same code (`tokumei_catalogue::statistics`),
//! recomputes the DP plan and refuses an order whose plan costs more than was paid (`PLAN_NOT_PAID`), reads only
//! the columns asked from the research view (opt-outs and erasures excluded), draws the noise or applies the
//! small-cell rule, and reports the table. A small-cell table's report also carries its attacker's view (a
//! [`LinkedTable`]) and its population, which the policy service audits against every earlier table of the
//! population before the requester may read it.

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokumei_catalogue::statistics::{AdmittedStatistics, CatalogueLevel, Population, StatisticsOrder, StatisticsSpec};
use tokumei_deid::dp::accounting::PrivacyLoss;
use tokumei_deid::dp::grouping::{Grouped, group};
use tokumei_deid::dp::plan::{Plan, plan};
use tokumei_deid::dp::release::release;
use tokumei_deid::dp::request::{Generalisation, StatsRequest};
use tokumei_deid::linked_tables::LinkedTable;
use tokumei_deid::published_table::{SmallCellSummary, count_table, linked_table, private_table_csv, small_cell_csv};
use tokumei_deid::small_cell::{SmallCellRule, protect};
use tokumei_deid::table::Table as DataTable;

use crate::error::StoreError;
use crate::store::Store;

/// Largest table a report may carry (CSV bytes); the policy service keeps reports of up to 3 MiB, and a small-cell
/// table's report carries its attacker's view too.
pub const MAX_TABLE_BYTES: usize = 1024 * 1024;

/// What the core reports of a statistics order.
#[derive(Debug, Serialize)]
pub struct StatisticsReport {
    /// The application.
    pub application: String,
    /// The columns of the key, as written.
    pub key_columns: Vec<String>,
    /// Whether differentially private.
    pub differentially_private: bool,
    /// How the cells are protected.
    pub protection: String,
    /// The DP plan (mechanism, noise scales, expected error, loss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Suppressions of a small-cell table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub small_cell: Option<SmallCellSummary>,
    /// Released cells.
    pub cells: usize,
    /// The table, CSV.
    pub csv: String,
    /// SHA-256 of the CSV.
    pub csv_sha256: String,
    /// A small-cell table's attacker's view, for the policy service's differencing audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked: Option<LinkedTable>,
    /// A small-cell table's population (the research snapshot it was read from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub population: Option<Population>,
}

fn declined(code: &str, message: impl Into<String>) -> StoreError {
    StoreError::Declined {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Carries out a statistics order over `store` (see the module documentation).
pub async fn compute(store: &Store, order: &StatisticsOrder) -> Result<StatisticsReport, StoreError> {
    let spec = &order.request;
    let admitted = spec.admit().map_err(|r| declined(r.code, r.message))?;
    let AdmittedStatistics {
        table: source,
        mut request,
        levels,
        private,
    } = admitted;
    let plan = if private {
        let plan = plan(&request).map_err(|e| declined("INVALID_ARGUMENT", e.to_string()))?;
        if !order.paid.is_some_and(|paid| covers(&paid, &plan.loss)) {
            return Err(declined(
                "PLAN_NOT_PAID",
                "the order's paid loss does not cover the plan's: nothing drawn",
            ));
        }
        Some(plan)
    } else {
        None
    };
    let (data, population) = read(store, source, &request).await?;
    request.generalise.extend(generalisations(&data, &levels)?);
    let grouped = group(&data, &request).map_err(|e| declined("INVALID_ARGUMENT", e.to_string()))?;
    drop(data);
    let report = match plan {
        Some(plan) => private_report(&plan, &request, &grouped, spec.min_cell)?,
        None => small_cell_report(spec, &grouped)?,
    };
    Ok(StatisticsReport {
        application: spec.application.clone(),
        // A small-cell table is audited against the others of its population: it needs the population's name.
        population: report.linked.is_some().then_some(population),
        ..report
    })
}

/// Whether `paid` is at least `cost` in every unit (within rounding of the JSON round trip).
fn covers(paid: &PrivacyLoss, cost: &PrivacyLoss) -> bool {
    let ok = |p: f64, c: f64| p + 1e-12 * p.abs().max(1.0) >= c;
    ok(paid.epsilon, cost.epsilon) && ok(paid.rho, cost.rho) && ok(paid.delta, cost.delta)
}

/// Reads the request's columns from the research view and names the population they come from.
async fn read(
    store: &Store,
    source: crate::Table,
    request: &StatsRequest,
) -> Result<(DataTable, Population), StoreError> {
    let mut columns: Vec<&str> = request.group_by.iter().map(String::as_str).collect();
    columns.extend(request.measure.column());
    columns.extend(request.subject.as_deref());
    columns.sort();
    columns.dedup();
    // Named before and after the read: a write in between would leave the table's population unknown.
    let before = store.research_snapshot(source).await?;
    let view = store.research_session().await?;
    let data = tokumei_deid::datafusion::table_from_context(view.context(), source.name(), &columns)
        .await
        .map_err(|e| declined("READ_FAILED", e.to_string()))?;
    if store.research_snapshot(source).await? != before {
        return Err(declined(
            "TABLE_CHANGED",
            "the table changed while it was read; ask again",
        ));
    }
    Ok((
        data,
        Population {
            name: format!("store:{before}"),
            source: source.name().to_owned(),
        },
    ))
}

/// The platform hierarchies of a request, applied to the values read: each a fixed function of the value, so
/// building it over the values present maps them and reveals nothing (the keys come from the catalogue). A value
/// the code system does not parse is left out, so its rows are not counted.
pub fn generalisations(table: &DataTable, levels: &[CatalogueLevel]) -> Result<Vec<Generalisation>, StoreError> {
    let mut out = Vec::new();
    for l in levels {
        let generator = &l.hierarchy.generator;
        // Always a generalisation, even when no value parses (the sample keeps the hierarchy buildable): without
        // one the grouping would fall back to the raw values, finer than the level asked for.
        let column = table
            .column(&l.column)
            .map_err(|e| declined("INVALID_ARGUMENT", e.to_string()))?;
        let values: Vec<&str> = column
            .dict()
            .iter()
            .map(String::as_str)
            .filter(|v| generator.accepts(v))
            .chain([l.hierarchy.sample()])
            .collect();
        out.push(Generalisation {
            column: l.column.clone(),
            hierarchy: generator
                .generate(&values)
                .map_err(|e| declined("INVALID_ARGUMENT", e.to_string()))?,
            level: l.level,
        });
    }
    Ok(out)
}

fn private_report(
    plan: &Plan,
    request: &StatsRequest,
    grouped: &Grouped,
    min_cell: Option<u64>,
) -> Result<StatisticsReport, StoreError> {
    let table = release(plan, request, grouped).map_err(|e| declined("RELEASE_FAILED", e.to_string()))?;
    let csv = private_table_csv(&table, min_cell).map_err(|e| declined("RELEASE_FAILED", e.to_string()))?;
    let report = StatisticsReport {
        application: String::new(),
        key_columns: grouped.key_columns.clone(),
        differentially_private: true,
        protection: table.protection.clone(),
        plan: Some(plan.clone()),
        small_cell: None,
        cells: table.cells.len(),
        csv_sha256: hex::encode(Sha256::digest(&csv)),
        csv: into_text(csv)?,
        linked: None,
        population: None,
    };
    Ok(report)
}

fn small_cell_report(spec: &StatisticsSpec, grouped: &Grouped) -> Result<StatisticsReport, StoreError> {
    let rule = SmallCellRule {
        threshold: spec.min_cell.unwrap_or(tokumei_catalogue::statistics::SMALL_CELL_FLOOR),
        suppress_zeros: spec.suppress_zeros,
    };
    let invalid = |e: &dyn std::fmt::Display| declined("INVALID_ARGUMENT", e.to_string());
    let (counts, dims) = count_table(grouped).map_err(|e| invalid(&e))?;
    let protected = protect(&counts, &rule).map_err(|e| invalid(&e))?;
    let protection = format!(
        "small-cell: counts below {} suppressed, plus complementary suppression",
        rule.threshold
    );
    let linked = linked_table(grouped, &protected).map_err(|e| invalid(&e))?;
    let csv = small_cell_csv(grouped, &protected, dims, &protection).map_err(|e| invalid(&e))?;
    let report = StatisticsReport {
        application: String::new(),
        key_columns: grouped.key_columns.clone(),
        differentially_private: false,
        protection,
        plan: None,
        small_cell: Some(SmallCellSummary::of(rule, &protected, dims)),
        cells: protected.refs().len(),
        csv_sha256: hex::encode(Sha256::digest(&csv)),
        csv: into_text(csv)?,
        linked: Some(linked),
        population: None,
    };
    Ok(report)
}

fn into_text(csv: Vec<u8>) -> Result<String, StoreError> {
    if csv.len() > MAX_TABLE_BYTES {
        return Err(declined(
            "RESULT_TOO_LARGE",
            format!("the table is larger than {MAX_TABLE_BYTES} bytes; group more coarsely"),
        ));
    }
    String::from_utf8(csv).map_err(|_| declined("RELEASE_FAILED", "the table is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(epsilon: f64, rho: f64, delta: f64) -> PrivacyLoss {
        PrivacyLoss { epsilon, rho, delta }
    }

    #[test]
    fn a_plan_is_drawn_only_when_every_unit_of_its_loss_was_paid() {
        let cost = loss(0.3, 0.0, 1e-6);
        assert!(covers(&cost, &cost));
        assert!(covers(&loss(0.5, 0.0, 1e-5), &cost));
        // JSON round trips may move the last digit; a real shortfall is refused.
        assert!(covers(&loss(0.3 * (1.0 - 1e-15), 0.0, 1e-6), &cost));
        assert!(!covers(&loss(0.29, 0.0, 1e-6), &cost));
        assert!(!covers(&loss(0.3, 0.0, 0.0), &cost), "δ unpaid");
        assert!(!covers(&loss(0.3, 0.0, 1e-6), &loss(0.3, 0.01, 1e-6)), "ρ unpaid");
    }

    #[test]
    fn the_policy_services_order_reads_as_a_statistics_operation() {
        // The payload as `tokumei_policy::core_orders::CoreOrder` writes it (tested there to produce this text).
        let text = r#"{"id":4,"requested_by":"rika","issued_at_ms":1,"expires_at_ms":2,"operation":"statistics","request":{"application":"APP-1","table":"patients","group_by":["sex"],"hierarchy":["sex=value"],"measure":"count","max_contrib":1,"epsilon":0.3,"rho":null,"delta":null,"public_keys":null,"min_cell":null,"suppress_zeros":false},"paid":{"epsilon":0.3,"rho":0.0,"delta":0.0}}"#;
        let order: crate::orders::Order = serde_json::from_str(text).expect("order");
        let crate::orders::Operation::Statistics(s) = order.operation else {
            panic!("not a statistics order");
        };
        assert_eq!(s.request.table, "patients");
        assert_eq!(s.paid, Some(loss(0.3, 0.0, 0.0)));
        let admitted = s.request.admit().expect("admitted");
        assert!(admitted.private);
    }
}
