use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use super::columns::upload_batch;
use super::*;
use crate::monitoring::MonitorRules;
use crate::output_check::{Rules, Verdict};
use crate::sql::{Limits, WorkspaceSql};

/// 200 patients: sex alternating, 3 of them in ward `Z` (a small group), age 20–79, an outcome that rises with age.
fn cohort() -> RecordBatch {
    let n = 200;
    let patient: Vec<String> = (0..n).map(|i| format!("p{i:03}")).collect();
    let sex: Vec<&str> = (0..n).map(|i| if i % 2 == 0 { "F" } else { "M" }).collect();
    let ward: Vec<&str> = (0..n)
        .map(|i| {
            if i < 3 {
                "Z"
            } else if i % 3 == 0 {
                "A"
            } else {
                "B"
            }
        })
        .collect();
    let age: Vec<f64> = (0..n).map(|i| 20.0 + (i % 60) as f64).collect();
    let outcome: Vec<f64> = (0..n)
        .map(|i| if (i * 7919) % 100 < 20 + (i % 60) { 1.0 } else { 0.0 })
        .collect();
    let schema = Schema::new(vec![
        Field::new("patient", DataType::Utf8, false),
        Field::new("sex", DataType::Utf8, false),
        Field::new("ward", DataType::Utf8, false),
        Field::new("age", DataType::Float64, false),
        Field::new("outcome", DataType::Float64, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(patient)),
        Arc::new(StringArray::from(sex)),
        Arc::new(StringArray::from(ward)),
        Arc::new(Float64Array::from(age)),
        Arc::new(Float64Array::from(outcome)),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

struct Bench {
    _dir: tempfile::TempDir,
    state: WorkspaceState,
    sql: WorkspaceSql,
    scope: std::collections::BTreeSet<String>,
    known: std::collections::HashSet<String>,
    rules: Rules,
    monitor: MonitorRules,
    next: u64,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let state = WorkspaceState::open(&dir.path().join("ws")).unwrap();
        let sql = WorkspaceSql::new(Limits::default()).unwrap();
        sql.register("patients", vec![cohort()]).unwrap();
        Bench {
            _dir: dir,
            state,
            sql,
            scope: ["patients".to_owned()].into(),
            known: (0..200).map(|i| format!("p{i:03}")).collect(),
            rules: Rules::default(),
            monitor: MonitorRules::default(),
            next: 1,
        }
    }

    async fn ask(&mut self, request: WorkspaceRequest) -> Result<Answer, WorkspaceError> {
        let order = self.next;
        self.next += 1;
        let cx = Context {
            state: &self.state,
            sql: &self.sql,
            scope: &self.scope,
            known: &self.known,
            rules: &self.rules,
            monitor: &self.monitor,
            order,
            user: "r1",
            now_ms: 1_000 * order as i64,
        };
        answer(&cx, &request).await
    }
}

fn crosstab(sql: &str) -> WorkspaceRequest {
    WorkspaceRequest::Analyse {
        shape: String::new(),
        spec: AnalysisSpec::Crosstab {
            sql: sql.into(),
            rows: "ward".into(),
            columns: Some("sex".into()),
        },
    }
}

#[tokio::test]
async fn a_query_reports_counts_in_clear_and_rows_apart_and_a_tiny_result_raises_an_alert() {
    let mut b = Bench::new();
    let sql = "SELECT patient, age FROM patients WHERE ward = 'Z'";
    let a = b
        .ask(WorkspaceRequest::Query {
            sql: sql.into(),
            shape: "SELECT patient, age FROM patients WHERE ward = ?".into(),
        })
        .await
        .unwrap();
    assert_eq!(a.report["rows"], 3);
    assert_eq!(a.report["rows_scanned"], 200);
    assert_eq!(a.report["tables"], serde_json::json!(["patients"]));
    assert_eq!(a.report["alerts"][0]["rule"], "FEW_PATIENTS");
    // The report in clear holds no pseudonym nor value; the rows travel apart.
    let clear = a.report.to_string();
    assert!(!clear.contains("p00") && !clear.contains("Z"), "{clear}");
    let rows = a.private.unwrap();
    assert_eq!(rows["columns"], serde_json::json!(["patient", "age"]));
    assert_eq!(rows["rows"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_disclosive_cell_is_refused_fixed_released_and_a_differencing_attempt_after_it_refused() {
    let mut b = Bench::new();
    // Ward Z holds 3 patients: the cross-tabulation has cells under the threshold.
    let first = b
        .ask(crosstab("SELECT patient, ward, sex FROM patients"))
        .await
        .unwrap();
    assert_eq!(first.report["verdict"], "refused");
    let findings = first.report["checks"][0]["findings"].to_string();
    assert!(findings.contains("THRESHOLD"), "{findings}");
    let refused = first.report["result"].as_u64().unwrap();
    let prepared = b
        .ask(WorkspaceRequest::PrepareOutput { result: refused })
        .await
        .unwrap();
    assert_eq!(prepared.report["verdict"], "refused");
    assert!(
        prepared.report["content"]["counts"].is_array(),
        "the checker reads the content"
    );
    let err = b
        .ask(WorkspaceRequest::ReleaseOutput { result: refused })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "OUTPUT_REFUSED");

    // Fixed: ward Z left out.
    let fixed = b
        .ask(crosstab("SELECT patient, ward, sex FROM patients WHERE ward <> 'Z'"))
        .await
        .unwrap();
    assert_ne!(fixed.report["verdict"], "refused", "{}", fixed.report);
    let number = fixed.report["result"].as_u64().unwrap();
    b.ask(WorkspaceRequest::ReleaseOutput { result: number }).await.unwrap();
    let again = b
        .ask(WorkspaceRequest::ReleaseOutput { result: number })
        .await
        .unwrap_err();
    assert_eq!(again.code(), "ALREADY_RELEASED");

    // Now the whole cohort by sex alone: each cell differs from the released margins by ward Z's patients.
    let margins = b
        .ask(WorkspaceRequest::Analyse {
            shape: String::new(),
            spec: AnalysisSpec::Crosstab {
                sql: "SELECT patient, sex FROM patients".into(),
                rows: "sex".into(),
                columns: None,
            },
        })
        .await
        .unwrap();
    assert_eq!(margins.report["verdict"], "refused", "{}", margins.report);
    assert!(margins.report.to_string().contains("DIFFERENCING"));
}

#[tokio::test]
async fn a_regression_is_kept_checked_and_an_analysis_without_patients_refused() {
    let mut b = Bench::new();
    let fit = b
        .ask(WorkspaceRequest::Analyse {
            shape: String::new(),
            spec: AnalysisSpec::Logistic {
                sql: "SELECT patient, age, outcome FROM patients".into(),
                outcome: "outcome".into(),
                covariates: vec!["age".into()],
            },
        })
        .await
        .unwrap();
    assert_eq!(fit.report["verdict"], "safe", "{}", fit.report);
    assert_eq!(fit.private.unwrap()["coefficients"].as_array().unwrap().len(), 2);
    let number = fit.report["result"].as_u64().unwrap();
    assert_eq!(b.state.result(number).unwrap().kind, "logistic");

    let err = b
        .ask(WorkspaceRequest::Analyse {
            shape: String::new(),
            spec: AnalysisSpec::Describe {
                sql: "SELECT age FROM patients".into(),
                value: "age".into(),
                group: None,
            },
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "FRAME_LINEAGE", "{err}");
    assert!(err.to_string().contains("no `patient` column"), "{err}");
    let err = b
        .ask(WorkspaceRequest::PrepareOutput { result: 999 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "UNKNOWN_RESULT");
}

#[tokio::test]
async fn uploads_are_checked_and_kept() {
    let mut b = Bench::new();
    let ok = b
        .ask(WorkspaceRequest::Upload {
            name: "wards".into(),
            csv: "ward,label\nA,surgery\nB,medicine\n".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.report["rows"], 2);
    assert_eq!(b.state.uploads().unwrap()[0].0, "wards");
    for (csv, what) in [
        ("ward,ward\nA,B\n", "repeated"),
        ("ward,1x\nA,B\n", "name"),
        ("ward,label\nA\n", "fields"),
    ] {
        let err = upload_batch(csv).unwrap_err();
        assert_eq!(err.code(), "UPLOAD_INVALID", "{what}");
    }
    let err = b
        .ask(WorkspaceRequest::Upload {
            name: "../etc".into(),
            csv: "a\n1\n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
}

#[tokio::test]
async fn refused_findings_name_rules_and_places_never_values() {
    let mut b = Bench::new();
    let a = b
        .ask(crosstab("SELECT patient, ward, sex FROM patients"))
        .await
        .unwrap();
    assert_eq!(a.report["verdict"], "refused");
    let clear = a.report.to_string();
    for value in ["\"Z\"", "p000", "p001"] {
        assert!(!clear.contains(value), "{value} in {clear}");
    }
    assert!(matches!(
        serde_json::from_value::<Verdict>(a.report["verdict"].clone()).unwrap(),
        Verdict::Refused
    ));
}

fn describe(sql: &str) -> WorkspaceRequest {
    WorkspaceRequest::Analyse {
        shape: String::new(),
        spec: AnalysisSpec::Describe {
            sql: sql.into(),
            value: "age".into(),
            group: None,
        },
    }
}

#[tokio::test]
async fn an_analysis_counts_only_rows_labelled_with_their_own_patient() {
    let mut b = Bench::new();
    b.sql
        .register(
            "upload_codes",
            vec![upload_batch("ward,weight\nA,1\nB,0\nZ,0\n").unwrap()],
        )
        .unwrap();
    // Every attempt to relabel one patient's rows as others', or to bring labels from elsewhere.
    for (sql, what) in [
        (
            "SELECT q.patient, p.age FROM patients p CROSS JOIN patients q WHERE p.patient = 'p000'",
            "a cross join attaching p000's age to every label",
        ),
        (
            "SELECT q.patient, p.age FROM patients p JOIN patients q ON p.sex = q.sex",
            "a join on something else than patient",
        ),
        ("SELECT ward AS patient, age FROM patients", "another column renamed"),
        ("SELECT 'p001' AS patient, age FROM patients", "a literal label"),
        (
            "SELECT patient, age FROM patients UNION ALL SELECT column1, column2 FROM (VALUES ('p001', 99.0))",
            "made-up rows in a union",
        ),
        (
            "SELECT patient, lag(age) OVER (ORDER BY patient) AS age FROM patients",
            "a window moving a value to the next patient",
        ),
        (
            "SELECT patient, (SELECT max(age) FROM patients WHERE patient = 'p000') AS age FROM patients",
            "a scalar subquery of one patient's value",
        ),
        (
            "SELECT max(patient) AS patient, avg(age) AS age FROM patients GROUP BY ward",
            "an aggregated label",
        ),
        (
            "SELECT c.patient, y.age FROM patients c \
             LEFT JOIN patients d ON c.patient = d.patient AND d.age > 1000 \
             JOIN (SELECT b.patient, a.age FROM patients a \
                   LEFT JOIN patients b ON a.patient = b.patient AND b.age > 1000 WHERE a.patient = 'p000') y \
             ON d.patient IS NOT DISTINCT FROM y.patient",
            "null labels matched with IS NOT DISTINCT FROM",
        ),
        (
            "SELECT patient, CASE WHEN patient = 'p000' THEN age ELSE 50 END AS age FROM patients",
            "a value made from the label",
        ),
        (
            "SELECT patient, patient AS age FROM patients",
            "the label copied into a value",
        ),
        (
            "SELECT patient, avg(age) AS age FROM patients GROUP BY ROLLUP(patient, ward)",
            "a rollup",
        ),
    ] {
        let err = b.ask(describe(sql)).await.unwrap_err();
        assert_eq!(err.code(), "FRAME_LINEAGE", "{what}: {err}");
    }
    // Uploads cannot carry the label; a label that is no patient of the workspace is refused.
    assert_eq!(
        upload_batch("patient,x\np000,1\n").unwrap_err().code(),
        "UPLOAD_INVALID"
    );
    b.known.remove("p199");
    let err = b.ask(describe("SELECT patient, age FROM patients")).await.unwrap_err();
    assert_eq!(err.code(), "ANALYSIS_FAILED", "{err}");
    b.known.insert("p199".into());
    // What stays within each patient is accepted: a join on patient, a lookup in an upload, a semi-join.
    for sql in [
        "SELECT p.patient, q.age FROM patients p JOIN patients q ON p.patient = q.patient",
        "SELECT p.patient, p.age * CAST(u.weight AS DOUBLE) AS age FROM patients p JOIN upload_codes u ON p.ward = u.ward",
        "SELECT patient, age FROM patients WHERE patient IN (SELECT patient FROM patients WHERE sex = 'F')",
        "SELECT patient, avg(age) AS age FROM patients GROUP BY patient",
    ] {
        let ok = b.ask(describe(sql)).await;
        assert!(ok.is_ok(), "{sql}: {:?}", ok.err());
    }
}

#[tokio::test]
async fn a_query_shows_a_screen_of_rows_and_counts_the_rest() {
    let mut b = Bench::new();
    let a = b
        .ask(WorkspaceRequest::Query {
            sql: "SELECT patient FROM patients".into(),
            shape: "SELECT patient FROM patients".into(),
        })
        .await
        .unwrap();
    assert_eq!(a.report["rows"], 200);
    assert_eq!(a.report["rows_shown"], super::columns::PREVIEW_ROWS.min(200));
    assert!(a.private.unwrap()["rows"].as_array().unwrap().len() <= super::columns::PREVIEW_ROWS);
}

#[tokio::test]
async fn an_outcome_set_for_one_patient_alone_sends_the_model_to_review() {
    let mut b = Bench::new();
    // p000 alone is in ward Z, female and 20: the outcome is their age and 0 for everyone else, so the coefficient
    // of `female` is their age over the number of women. Every label is honest; the outcome is not.
    let singled = "SELECT patient, CASE WHEN ward = 'Z' AND sex = 'F' AND age = 20.0 THEN age ELSE 0.0 END AS y, \
                   CASE WHEN sex = 'F' THEN 1.0 ELSE 0.0 END AS female FROM patients";
    let a = b
        .ask(WorkspaceRequest::Analyse {
            shape: String::new(),
            spec: AnalysisSpec::Linear {
                sql: singled.into(),
                outcome: "y".into(),
                covariates: vec!["female".into()],
            },
        })
        .await
        .unwrap();
    assert_eq!(a.report["verdict"], "review", "{}", a.report);
    assert!(a.report.to_string().contains("INFLUENTIAL_PATIENT"), "{}", a.report);
    // The same model on an outcome every patient contributes to stays safe.
    let honest = b
        .ask(WorkspaceRequest::Analyse {
            shape: String::new(),
            spec: AnalysisSpec::Linear {
                sql: "SELECT patient, age AS y, CASE WHEN sex = 'F' THEN 1.0 ELSE 0.0 END AS female FROM patients"
                    .into(),
                outcome: "y".into(),
                covariates: vec!["female".into()],
            },
        })
        .await
        .unwrap();
    assert_eq!(honest.report["verdict"], "safe", "{}", honest.report);
}
