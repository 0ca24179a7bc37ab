//! The single place where opted-out and erased patients are removed from every research read path.
//!
//! A research session ([`crate::View::Research`]) never registers a raw table: each clinical table name is
//! bound to a view that anti-joins the table with the opt-out registry on `linkage_key` and on
//! `hospital_pseudonym` (a request matched only by the hospital's own patient id binds the pseudonym); a key of
//! scope `HOSPITAL` (an ID4 key that reached none of the requesting hospital's patients) removes only that
//! hospital's rows under it. The
//! anonymisation engine, DP statistics and the release builder all read through such a session, so none of
//! them repeats the filter — and none of them can forget it.

use crate::apply::SCOPE_HOSPITAL;
use crate::error::StoreError;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::JoinType;
use deltalake::datafusion::prelude::{SessionContext, col, lit};
use std::sync::Arc;

/// `table` minus every row whose linkage key or hospital pseudonym is in the registry.
pub fn filtered(
    ctx: &SessionContext,
    table: Arc<dyn TableProvider>,
    registry: Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>, StoreError> {
    let hospital_scope = col("scope").eq(lit(SCOPE_HOSPITAL));
    let keys = ctx
        .read_table(registry.clone())?
        .filter(
            col("linkage_key")
                .is_not_null()
                .and(hospital_scope.clone().is_not_true()),
        )?
        .select(vec![col("linkage_key").alias("excluded_linkage_key")])?;
    let scoped = ctx
        .read_table(registry.clone())?
        .filter(col("linkage_key").is_not_null().and(hospital_scope))?
        .select(vec![
            col("source_hospital").alias("excluded_source_hospital"),
            col("linkage_key").alias("excluded_scoped_key"),
        ])?;
    let local = ctx
        .read_table(registry)?
        .filter(col("hospital_pseudonym").is_not_null())?
        .select(vec![col("hospital_pseudonym").alias("excluded_hospital_pseudonym")])?;
    let view = ctx
        .read_table(table)?
        .join(
            keys,
            JoinType::LeftAnti,
            &["linkage_key"],
            &["excluded_linkage_key"],
            None,
        )?
        .join(
            scoped,
            JoinType::LeftAnti,
            &["source_hospital", "linkage_key"],
            &["excluded_source_hospital", "excluded_scoped_key"],
            None,
        )?
        .join(
            local,
            JoinType::LeftAnti,
            &["hospital_pseudonym"],
            &["excluded_hospital_pseudonym"],
            None,
        )?;
    Ok(view.into_view())
}
