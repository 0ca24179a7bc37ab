//! The core's half of the remote analysis environment: a workspace request, answered over the approval's cohort.
//!
//! The policy service admitted the request on an `on_platform` approval and fixed the workspace's scope (tables,
//! columns, cohort, detail) from it; this reads that scope from the research view — opted-out and erased patients
//! are excluded there, in the store's one exclusion point — with linkage keys replaced by **workspace pseudonyms**
//! (a key of the workspace's own, kept wrapped in the core like a project's: stable for the workspace's life,
//! unlike any release's). Provenance and free-text columns are refused as for files. Unless the approval grants
//! pseudonymised data (to certified users, checked by the policy service), the tables are then anonymised under
//! the approval's model as a file would be, and verified, before the workspace sees them. The tables go into the workspace's
//! SQL engine (`tokumei_analysis::sql`: nothing else is reachable from it), with the researcher's uploads, and
//! `tokumei_analysis::workspace` answers. What only the researcher may read — a query's rows, an analysis's
//! values — is sealed to the key their client made for this one request, so the policy service that relays the
//! report never holds it. The workspace's state lives under `core/workspaces/<application>/`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Float64Array, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use tokumei_analysis::monitoring::MonitorRules;
use tokumei_analysis::output_check::Rules;
use tokumei_analysis::sql::{Limits, WorkspaceSql};
use tokumei_analysis::workspace::columns::{PATIENT, upload_batch};
use tokumei_analysis::workspace::{Context, WorkspaceRequest, WorkspaceState, answer};
use tokumei_keys::KeyService;
use tokumei_policy::core_orders::WorkspaceScope;
use tokumei_store::orders::AnalysisOrder;
use tokumei_store::{Store, StoreError, Table};

use crate::builder::{protect_and_check, read_scope, release_scope};
use crate::catalogue::{ColumnRole, role};
use crate::fingerprint::Sheet;
use crate::pseudonym::PseudonymKey;

fn declined(code: &str, message: impl Into<String>) -> StoreError {
    StoreError::Declined {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Answers `asked` for the core at `home` (see the module documentation).
pub async fn analyse(
    home: &std::path::Path,
    store: &Store,
    keys: &dyn KeyService,
    asked: AnalysisOrder<'_>,
) -> Result<serde_json::Value, StoreError> {
    let scope: WorkspaceScope =
        serde_json::from_value(asked.scope.clone()).map_err(|_| declined("ORDER_UNREADABLE", "the workspace scope"))?;
    let request: WorkspaceRequest = serde_json::from_value(asked.request.clone())
        .map_err(|_| declined("ORDER_UNREADABLE", "the workspace request"))?;
    request.validate().map_err(|e| declined("INVALID_ARGUMENT", e.0))?;
    let reads_data = matches!(
        request,
        WorkspaceRequest::Query { .. } | WorkspaceRequest::Analyse { .. }
    );
    let recipient = match (reads_data, asked.recipient_key) {
        (true, Some(k)) if tokumei_keys::sealed_result::is_recipient_key(k) => Some(k),
        (true, _) => {
            return Err(declined(
                "INVALID_ARGUMENT",
                "the recipient key is not an X25519 public key",
            ));
        }
        (false, _) => None,
    };
    let state = WorkspaceState::open(&workspace_dir(home, &scope.application)?)
        .map_err(|e| declined(e.code(), e.to_string()))?;
    let sql = WorkspaceSql::new(Limits::default()).map_err(|e| declined(e.code(), e.to_string()))?;
    let (mut tables, mut known) = (BTreeSet::new(), HashSet::new());
    if reads_data {
        let key = PseudonymKey::for_project(home, keys, &format!("{}-workspace", scope.application))
            .await
            .map_err(|e| declined(&e.reason(), e.to_string()))?;
        (tables, known) = fill(store, &sql, &scope, &key).await?;
        for (name, csv) in state.uploads().map_err(|e| declined(e.code(), e.to_string()))? {
            let batch = upload_batch(&csv).map_err(|e| declined(e.code(), e.to_string()))?;
            sql.register(&format!("upload_{name}"), vec![batch])
                .map_err(|e| declined(e.code(), e.to_string()))?;
        }
    }
    let cx = Context {
        state: &state,
        sql: &sql,
        scope: &tables,
        known: &known,
        rules: &Rules::default(),
        monitor: &MonitorRules::default(),
        order: asked.order,
        user: asked.user,
        now_ms: chrono::Utc::now().timestamp_millis(),
    };
    let answered = answer(&cx, &request).await.map_err(|e| {
        tracing::info!(target: "tokumei::audit", order = asked.order, code = e.code(), "workspace request refused");
        declined(e.code(), e.to_string())
    })?;
    let mut report = answered.report;
    if let (Some(private), Some(key)) = (answered.private, recipient) {
        let bytes =
            serde_json::to_vec(&private).map_err(|_| declined("SEAL_FAILED", "the result could not be written"))?;
        if bytes.len() > tokumei_store::sql::MAX_RESULT_BYTES {
            return Err(declined(
                "RESULT_TOO_LARGE",
                format!(
                    "the result is larger than {} bytes; select fewer rows or columns",
                    tokumei_store::sql::MAX_RESULT_BYTES
                ),
            ));
        }
        let sealed =
            tokumei_keys::sealed_result::seal(key, &bytes, &tokumei_keys::sealed_result::order_context(asked.order))
                .map_err(|_| declined("SEAL_FAILED", "the result could not be sealed"))?;
        report["sealed"] = serde_json::Value::String(hex::encode(sealed));
    }
    Ok(report)
}

/// Where a workspace's state lives: under the core's home, by application (its id checked a plain name).
fn workspace_dir(home: &std::path::Path, application: &str) -> Result<std::path::PathBuf, StoreError> {
    let plain = !application.is_empty()
        && application
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return Err(declined("ORDER_UNREADABLE", "the workspace's application id"));
    }
    Ok(home.join("core").join("workspaces").join(application))
}

/// Registers the scope's tables, read for the cohort, in the workspace's SQL: the pseudonym as `patient`, measured
/// values as numbers, everything else as text (as released: month dates, fixed precision). Returns the tables'
/// names and the workspace's patients (the only labels an analysis's rows may carry).
async fn fill(
    store: &Store,
    sql: &WorkspaceSql,
    scope: &WorkspaceScope,
    key: &PseudonymKey,
) -> Result<(BTreeSet<String>, HashSet<String>), StoreError> {
    let tables = release_scope(&scope.tables).map_err(|e| declined(&e.reason(), e.to_string()))?;
    let mut sheets = read_scope(store, &tables, &scope.cohort_filter, key)
        .await
        .map_err(|e| declined(&e.reason(), e.to_string()))?;
    if !scope.pseudonymised {
        // Anonymised detail: the sheets are protected under the approval's model exactly as a file's would be
        // (generalisation, suppression, the item and extreme-value rules) and recounted by the independent
        // verifier before any query sees them.
        let model = scope
            .privacy
            .filter(|m| m.l.is_none() && m.t.is_none())
            .ok_or_else(|| {
                declined(
                    "NOT_RELEASABLE",
                    "an anonymised workspace needs the approval's k-anonymity model (without l or t)",
                )
            })?;
        protect_and_check(&mut sheets, &model, &|_| {}).map_err(|e| declined(&e.reason(), e.to_string()))?;
    }
    let (mut names, mut patients) = (BTreeSet::new(), HashSet::new());
    for (table, sheet) in sheets {
        let batch = batch_of(table, &sheet).map_err(|_| declined("WORKSPACE_STATE", "a table could not be read"))?;
        sql.register(table.name(), vec![batch])
            .map_err(|e| declined(e.code(), e.to_string()))?;
        names.insert(table.name().to_owned());
        patients.extend(sheet.columns.first().into_iter().flatten().cloned());
    }
    Ok((names, patients))
}

fn batch_of(table: Table, sheet: &Sheet) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, (name, cells)) in sheet.header.iter().zip(&sheet.columns).enumerate() {
        let blank = |v: &String| v.is_empty();
        if i == 0 {
            fields.push(Field::new(PATIENT, DataType::Utf8, false));
            arrays.push(Arc::new(StringArray::from_iter_values(cells)));
        } else if matches!(role(table, name), ColumnRole::Measured { .. }) {
            fields.push(Field::new(name, DataType::Float64, true));
            let values: Float64Array = cells
                .iter()
                .map(|v| if blank(v) { None } else { v.trim().parse::<f64>().ok() })
                .collect();
            arrays.push(Arc::new(values));
        } else {
            fields.push(Field::new(name, DataType::Utf8, true));
            let values: StringArray = cells.iter().map(|v| (!blank(v)).then_some(v.as_str())).collect();
            arrays.push(Arc::new(values));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
}
