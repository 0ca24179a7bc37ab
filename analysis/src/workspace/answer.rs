//! Answering one request in a workspace: a query, an analysis, an upload, the checks of an output request, the
//! release of an approved output. What the answer reports in clear carries counts, codes and the checks' findings,
//! never a value of the data; what only the researcher may read is returned apart, for the caller to seal to them.
//! The one exception is an output request: its content is what the researcher asks to take out, and the output
//! checker must read it.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::json;

use crate::analyses::{self, Analysed, Frame};
use crate::monitoring::{Alert, Monitor, MonitorRules, Query};
use crate::output_check::{self, CheckReport, History, Output, PatientId, Patients, Rules, Verdict};
use crate::sql::WorkspaceSql;

use super::WorkspaceError;
use super::columns::{PATIENT, frame_of, rows_json, upload_batch};
use super::request::{AnalysisSpec, WorkspaceRequest};
use super::state::{QueryRecord, Released, StoredResult, WorkspaceState};

/// What a request is answered with.
pub struct Context<'a> {
    /// The workspace's directory.
    pub state: &'a WorkspaceState,
    /// Its SQL, its tables registered.
    pub sql: &'a WorkspaceSql,
    /// The approval's tables among them (an analysis's `patient` must come from one of them).
    pub scope: &'a BTreeSet<String>,
    /// The workspace's patients (their workspace pseudonyms): the only labels an analysis's rows may carry.
    pub known: &'a HashSet<String>,
    /// The output checks' parameters.
    pub rules: &'a Rules,
    /// The monitoring's thresholds.
    pub monitor: &'a MonitorRules,
    /// The order's number: the query's or the result's number in the workspace.
    pub order: u64,
    /// Who asked.
    pub user: &'a str,
    /// Now, milliseconds since the epoch.
    pub now_ms: i64,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// What may be reported in clear.
    pub report: serde_json::Value,
    /// What only the researcher may read (rows, a result's values), if anything.
    pub private: Option<serde_json::Value>,
}

/// Answers `request` (validated first).
pub async fn answer(cx: &Context<'_>, request: &WorkspaceRequest) -> Result<Answer, WorkspaceError> {
    request.validate().map_err(|e| WorkspaceError::Invalid(e.0))?;
    match request {
        WorkspaceRequest::Query { sql, shape } => query(cx, sql, shape).await,
        WorkspaceRequest::Analyse { spec, shape } => analyse(cx, spec, shape).await,
        WorkspaceRequest::Upload { name, csv } => {
            let batch = upload_batch(csv)?;
            cx.state.save_upload(name, csv)?;
            Ok(Answer {
                report: json!({"upload": format!("upload_{name}"), "rows": batch.num_rows(), "columns": batch.num_columns()}),
                private: None,
            })
        }
        WorkspaceRequest::PrepareOutput { result } => prepare(cx, *result),
        WorkspaceRequest::ReleaseOutput { result } => release(cx, *result),
    }
}

async fn query(cx: &Context<'_>, sql: &str, shape: &str) -> Result<Answer, WorkspaceError> {
    let started = Instant::now();
    let traced = cx.sql.query_traced(sql).await?;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let rows: usize = traced.batches.iter().map(|b| b.num_rows()).sum();
    let columns = traced.batches.first().map_or(0, |b| b.num_columns());
    let patients = patients_of(cx, &traced.batches)?;
    let alerts = observe(cx, shape, patients)?;
    Ok(Answer {
        report: json!({
            "rows": rows,
            "rows_shown": rows.min(super::columns::PREVIEW_ROWS),
            "columns": columns,
            "tables": traced.tables,
            "rows_scanned": traced.rows_scanned,
            "duration_ms": duration_ms,
            "alerts": alerts,
        }),
        private: Some(rows_json(&traced.batches)?),
    })
}

/// The workspace's patients a query's result names in a `patient` column, for the monitoring (other labels are
/// not numbered: numbers are for the workspace's patients only).
fn patients_of(cx: &Context<'_>, batches: &[RecordBatch]) -> Result<Patients, WorkspaceError> {
    let mut numbers = cx.state.numbers()?;
    let mut patients = Vec::new();
    for b in batches {
        let Some(column) = b.column_by_name(PATIENT) else {
            continue;
        };
        let Ok(text) = cast(column, &DataType::Utf8) else {
            continue;
        };
        let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        for i in (0..text.len()).filter(|i| text.is_valid(*i)) {
            if cx.known.contains(text.value(i)) {
                patients.push(numbers.number(text.value(i))?);
            }
        }
    }
    cx.state.save_numbers(&numbers)?;
    Ok(Patients::new(patients))
}

/// Replays the workspace's recent queries through a monitor, then observes this one.
fn observe(cx: &Context<'_>, shape: &str, patients: Patients) -> Result<Vec<Alert>, WorkspaceError> {
    let mut kept = cx.state.queries()?;
    let mut monitor = Monitor::new(cx.monitor.clone());
    let as_query = |r: &QueryRecord| Query {
        number: r.number,
        at_ms: r.at_ms,
        user: r.user.clone(),
        shape: r.shape.clone(),
        patients: Patients::new(r.patients.iter().map(|p| PatientId(*p)).collect()),
    };
    for past in &kept {
        monitor.observe(&as_query(past));
    }
    let record = QueryRecord {
        number: cx.order,
        at_ms: cx.now_ms,
        user: cx.user.to_owned(),
        shape: shape.to_owned(),
        patients: patients.ids().iter().map(|p| p.0).collect(),
    };
    let alerts = monitor.observe(&as_query(&record));
    kept.push(record);
    cx.state.save_queries(&kept)?;
    Ok(alerts)
}

async fn analyse(cx: &Context<'_>, spec: &AnalysisSpec, shape: &str) -> Result<Answer, WorkspaceError> {
    let started = Instant::now();
    let traced = cx.sql.query_frame(spec.sql(), cx.scope).await?;
    let mut numbers = cx.state.numbers()?;
    let frame = frame_of(&traced.batches, &mut numbers, cx.known)?;
    cx.state.save_numbers(&numbers)?;
    let alerts = observe(cx, shape, Patients::new(frame.patients().to_vec()))?;
    let (result, outputs) = run(spec, &frame)?;
    let checks = checks(cx, &outputs)?;
    let stored = StoredResult {
        number: cx.order,
        user: cx.user.to_owned(),
        kind: spec.kind().to_owned(),
        spec: serde_json::to_value(spec).unwrap_or_default(),
        result: result.clone(),
        outputs,
        released: false,
    };
    cx.state.save_result(&stored)?;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(Answer {
        report: json!({
            "result": cx.order,
            "analysis": spec.kind(),
            "verdict": worst(&checks),
            "checks": checks,
            "tables": traced.tables,
            "rows_scanned": traced.rows_scanned,
            "duration_ms": duration_ms,
            "alerts": alerts,
        }),
        private: Some(result),
    })
}

/// Runs the analysis `spec` names over `frame`: the result the researcher sees and the outputs the checks read.
fn run(spec: &AnalysisSpec, frame: &Frame) -> Result<(serde_json::Value, Vec<Output>), WorkspaceError> {
    fn one<T: serde::Serialize>(a: Analysed<T>) -> Result<(serde_json::Value, Vec<Output>), WorkspaceError> {
        let value = serde_json::to_value(&a.result)
            .map_err(|_| WorkspaceError::Analysis("the result could not be kept".into()))?;
        Ok((value, vec![a.output]))
    }
    let failed = |e: analyses::AnalysisError| WorkspaceError::Analysis(e.to_string());
    match spec {
        AnalysisSpec::Crosstab { rows, columns, .. } => {
            one(analyses::crosstab::crosstab(frame, rows, columns.as_deref()).map_err(failed)?)
        }
        AnalysisSpec::Describe { value, group, .. } => {
            one(analyses::describe::describe(frame, value, group.as_deref()).map_err(failed)?)
        }
        AnalysisSpec::Linear {
            outcome, covariates, ..
        } => {
            let covariates: Vec<&str> = covariates.iter().map(String::as_str).collect();
            one(analyses::regression::linear(frame, outcome, &covariates).map_err(failed)?)
        }
        AnalysisSpec::Logistic {
            outcome, covariates, ..
        } => {
            let covariates: Vec<&str> = covariates.iter().map(String::as_str).collect();
            one(analyses::regression::logistic(frame, outcome, &covariates).map_err(failed)?)
        }
        AnalysisSpec::KaplanMeier { time, event, group, .. } => {
            let curves = analyses::survival::kaplan_meier(frame, time, event, group.as_deref()).map_err(failed)?;
            let (results, outputs): (Vec<_>, Vec<_>) = curves.into_iter().map(|c| (c.result, c.output)).unzip();
            let value = serde_json::to_value(&results)
                .map_err(|_| WorkspaceError::Analysis("the result could not be kept".into()))?;
            Ok((value, outputs))
        }
    }
}

/// The automatic checks of `outputs` against every output the workspace released.
fn checks(cx: &Context<'_>, outputs: &[Output]) -> Result<Vec<CheckReport>, WorkspaceError> {
    let mut history = History::new();
    for released in cx.state.released()? {
        for output in &released.outputs {
            history.record(released.number, output).map_err(|_| {
                WorkspaceError::State("the workspace's history names a patient beyond its index".into())
            })?;
        }
    }
    Ok(outputs
        .iter()
        .map(|o| output_check::check(o, &history, cx.rules))
        .collect())
}

fn worst(checks: &[CheckReport]) -> Verdict {
    checks.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Safe)
}

fn unreleased(cx: &Context<'_>, number: u64) -> Result<StoredResult, WorkspaceError> {
    let stored = cx.state.result(number)?;
    if stored.released {
        return Err(WorkspaceError::AlreadyReleased(number));
    }
    Ok(stored)
}

/// An output request: the checks against the history as it stands, and the content for the output checker.
fn prepare(cx: &Context<'_>, number: u64) -> Result<Answer, WorkspaceError> {
    let stored = unreleased(cx, number)?;
    let checks = checks(cx, &stored.outputs)?;
    Ok(Answer {
        report: json!({
            "result": number,
            "analysis": stored.kind,
            "computed_by": stored.user,
            "spec": stored.spec,
            "verdict": worst(&checks),
            "checks": checks,
            "content": stored.result,
        }),
        private: None,
    })
}

/// An approved output leaves: checked again (outputs released since the request count), refused if any rule
/// refuses, else recorded in the history every later output is checked against.
fn release(cx: &Context<'_>, number: u64) -> Result<Answer, WorkspaceError> {
    let mut stored = unreleased(cx, number)?;
    let checks = checks(cx, &stored.outputs)?;
    if worst(&checks) == Verdict::Refused {
        let mut codes: Vec<&str> = checks
            .iter()
            .flat_map(|c| c.findings.iter())
            .filter(|f| f.verdict == Verdict::Refused)
            .map(|f| f.rule.code())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        return Err(WorkspaceError::OutputRefused(codes.join(",")));
    }
    let mut released = cx.state.released()?;
    released.push(Released {
        number,
        outputs: stored.outputs.clone(),
    });
    cx.state.save_released(&released)?;
    stored.released = true;
    cx.state.save_result(&stored)?;
    Ok(Answer {
        report: json!({
            "result": number,
            "analysis": stored.kind,
            "verdict": worst(&checks),
            "checks": checks,
            "content": stored.result,
        }),
        private: None,
    })
}
