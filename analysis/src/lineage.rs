//! Where an analysis's rows come from: the checks count patients by the frame's `patient` column, so that column
//! must be the patient each row's values belong to — not a label the researcher's query made up or moved.
//!
//! A frame's query is accepted only when its optimised plan keeps every row within one patient:
//!
//! - a column named `patient` anywhere in the plan is the bare `patient` column of its input (never an expression,
//!   a literal, an aggregate or another column renamed), so the label traces back, projection by projection, to
//!   the `patient` column of a scan of one of the approval's tables (uploads may not have one);
//! - the label is opaque: no computed column, aggregate, grouping or join condition reads it (a value made from it —
//!   `CASE WHEN patient = '…' THEN age ELSE 50 END` — would carry one patient's value under every label), only
//!   filters and sorts do;
//! - the inputs of a union agree on the `patient` position;
//! - a join of two inputs that both read the approval's tables matches `patient` with `patient`, null never equal
//!   to null (a cross join, a join on anything else, or `IS NOT DISTINCT FROM` between labels an outer join left
//!   null, would attach one patient's values to another's label — a scalar subquery over the cohort is such a join
//!   once decorrelated);
//! - no window function (it moves values between rows, hence between patients), no subquery expression left
//!   undecorrelated, no recursive query, unnest or extension node.
//!
//! What a row's values are is left to the checks: a weight or offset the researcher makes up moves a cell's
//! contributions, which the dominance rules read.

use std::collections::BTreeSet;

use datafusion::common::NullEquality;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// The label column.
pub const PATIENT: &str = "patient";

/// Why a plan was refused: the rule, in words (no value of the query).
pub type Refusal = String;

fn is_patient(expr: &Expr) -> bool {
    matches!(expr.clone().unalias(), Expr::Column(c) if c.name == PATIENT)
}

fn reads_scope(plan: &LogicalPlan, scope: &BTreeSet<String>) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(s) = node
            && scope.contains(s.table_name.table())
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether `expr` reads the label anywhere.
fn reads_label(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::Column(c) if c.name == PATIENT)))
        .unwrap_or(true)
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// Checks one node.
fn node(plan: &LogicalPlan, scope: &BTreeSet<String>) -> Result<(), Refusal> {
    if plan.expressions().iter().any(has_subquery) {
        return Err("a subquery expression that is not a join on patient".into());
    }
    match plan {
        LogicalPlan::Window(_) => Err("a window function (it moves values between patients' rows)".into()),
        LogicalPlan::Extension(_) | LogicalPlan::RecursiveQuery(_) | LogicalPlan::Unnest(_) => {
            Err("a recursive query, unnest or extension".into())
        }
        LogicalPlan::Projection(p) => {
            for (expr, field) in p.expr.iter().zip(p.schema.fields()) {
                if field.name() == PATIENT && !is_patient(expr) {
                    return Err("a `patient` column that is not the patient column of its input".into());
                }
                if field.name() != PATIENT && reads_label(expr) {
                    return Err("a computed column that reads the patient label".into());
                }
            }
            Ok(())
        }
        LogicalPlan::Aggregate(a) => {
            if a.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                return Err("grouping sets, rollups and cubes".into());
            }
            if a.aggr_expr.iter().any(reads_label) {
                return Err("an aggregate of the patient label".into());
            }
            if a.group_expr.iter().any(|e| reads_label(e) && !is_patient(e)) {
                return Err("a grouping computed from the patient label".into());
            }
            let exprs = a.group_expr.iter().chain(&a.aggr_expr);
            for (expr, field) in exprs.zip(a.schema.fields()) {
                if field.name() == PATIENT && !is_patient(expr) {
                    return Err("a `patient` column computed by an aggregate".into());
                }
            }
            Ok(())
        }
        LogicalPlan::Union(u) => {
            let Some(at) = u.schema.index_of_column_by_name(None, PATIENT) else {
                return Ok(());
            };
            for input in &u.inputs {
                if input.schema().fields().get(at).map(|f| f.name().as_str()) != Some(PATIENT) {
                    return Err("a union whose inputs do not all carry patient in the same place".into());
                }
            }
            Ok(())
        }
        LogicalPlan::Join(j) => {
            let computed_key =
                j.on.iter()
                    .any(|(l, r)| (reads_label(l) && !is_patient(l)) || (reads_label(r) && !is_patient(r)));
            if computed_key || j.filter.as_ref().is_some_and(reads_label) {
                return Err("a join condition computed from the patient label".into());
            }
            if reads_scope(&j.left, scope) && reads_scope(&j.right, scope) {
                let on_patient = j.on.iter().any(|(l, r)| is_patient(l) && is_patient(r));
                if !on_patient || j.null_equality == NullEquality::NullEqualsNull {
                    return Err("a join of the approval's tables that does not match patient with patient".into());
                }
            }
            Ok(())
        }
        LogicalPlan::TableScan(s) => {
            let name = s.table_name.table();
            if !scope.contains(name) && s.source.schema().index_of(PATIENT).is_ok() {
                return Err("a `patient` column from a table that is not one of the approval's".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks `plan` (optimised) against the rules of the module documentation; `scope` names the approval's tables.
pub fn check(plan: &LogicalPlan, scope: &BTreeSet<String>) -> Result<(), Refusal> {
    if plan.schema().index_of_column_by_name(None, PATIENT).is_none() {
        return Err("the frame has no `patient` column".into());
    }
    let mut refusal = None;
    let _ = plan.apply_with_subqueries(|n| match node(n, scope) {
        Ok(()) => Ok(TreeNodeRecursion::Continue),
        Err(r) => {
            refusal = Some(r);
            Ok(TreeNodeRecursion::Stop)
        }
    });
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}
