//! An operator traces a leaked file found outside the platform: the file is uploaded from the browser and handed,
//! as it came, to the release zone (`ReleaseService.TraceLeak`), which reads the marks with the release's
//! fingerprint key — a key that never leaves that zone — scores every recipient and has the policy service admit
//! and record the trace. The console keeps nothing of the file: it is dropped once the zone answered.

use axum::extract::State;
use axum::http::StatusCode;
use maud::{Markup, html};
use serde_json::Value;
use tokumei_proto::release::v1 as rpb;

use crate::AppState;
use crate::extract::{SignedUpload, Viewer};
use crate::i18n::Lang;
use crate::layout::{csrf, page, row};
use crate::services::{PageError, authed};

/// The bytes of one message of the upload stream (the service takes at most 1 MiB a chunk).
const CHUNK_BYTES: usize = 1024 * 1024;

/// `GET /trace`: the upload form.
pub async fn form(viewer: Viewer) -> Markup {
    let lang = viewer.lang;
    page(
        &viewer,
        ("流出ファイルの追跡", "Trace a leaked file"),
        html! {
            p { (lang.t("外部で見つかったファイルを提供データの指紋と照合し、どの受領者の写しかを判定します。判定は監査ログに記録されます。", "Matches a file found outside the platform against a release's fingerprints and finds whose copy it was. The trace is recorded on the audit ledger.")) }
            // The token is the form's first field: the console checks it before reading the file.
            form method="post" action="/trace" enctype="multipart/form-data" {
                (csrf(&viewer))
                div.field {
                    label for="trace-release" { (lang.t("提供データの番号", "Release")) }
                    p.hint id="trace-release-hint" { (lang.t("例: R-A-2026-0001-1", "e.g. R-A-2026-0001-1")) }
                    input type="text" id="trace-release" name="release" required aria-describedby="trace-release-hint";
                }
                div.field {
                    label for="trace-table" { (lang.t("テーブル（任意）", "Table (optional)")) }
                    p.hint id="trace-table-hint" { (lang.t("空欄: 指紋の入った列から判定します", "Empty: found from the marked columns present")) }
                    input type="text" id="trace-table" name="table" aria-describedby="trace-table-hint";
                }
                div.field {
                    label for="trace-file" { (lang.t("流出ファイル（CSV または Parquet）", "The leaked file (CSV or Parquet)")) }
                    input type="file" id="trace-file" name="file" required accept=".csv,.tsv,.txt,.parquet";
                }
                button type="submit" id="trace" { (lang.t("追跡する", "Trace")) }
            }
        },
    )
}

fn number(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).map(Value::to_string).unwrap_or_default()
}

/// The zone's report as an operator reads it: who is accused, on which carriers, and every candidate's score.
fn verdict(lang: Lang, report: &Value, audit_seq: i64) -> Markup {
    let accused: Vec<&str> = report
        .get("accused")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let candidates = report
        .pointer("/verdict/candidates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    html! {
        @if accused.is_empty() {
            p.notice role="status" id="accused" { (lang.t("誰も特定されませんでした。", "No one is accused.")) }
        } @else {
            p.notice.accused role="status" id="accused" { (lang.t("特定された受領者: ", "Accused: ")) strong { (accused.join(", ")) } }
        }
        dl {
            (row(lang.t("提供データ", "Release"), report.get("release").and_then(Value::as_str).unwrap_or("")))
            (row(lang.t("申請", "Application"), report.get("application").and_then(Value::as_str).unwrap_or("")))
            (row(lang.t("テーブル", "Table"), report.get("table").and_then(Value::as_str).unwrap_or("")))
            (row(lang.t("行数", "Rows"), number(report, "/rows")))
            (row(lang.t("読んだ指紋", "Carriers read"), report.get("carriers").and_then(Value::as_array).map(|c| c.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()))
            (row(lang.t("判定可能", "Decidable"), number(report, "/verdict/decidable")))
            (row(lang.t("無実の人を誤って特定する確率の上限", "Bound on accusing an innocent"), number(report, "/verdict/bound")))
            (row(lang.t("説明", "Explanation"), report.get("explanation").and_then(Value::as_str).unwrap_or("")))
            (row(lang.t("監査ログ番号", "Audit entry"), audit_seq))
        }
        table.list id="candidates" {
            caption { (lang.t("受領者ごとの得点", "Each recipient's score")) }
            thead { tr {
                th scope="col" { (lang.t("受領者", "Recipient")) }
                th scope="col" { (lang.t("得点", "Score")) }
                th scope="col" { "log10 p" }
                th scope="col" { (lang.t("特定", "Accused")) }
            } }
            tbody {
                @for c in &candidates {
                    tr {
                        td { (c.get("recipient").and_then(Value::as_str).unwrap_or("")) }
                        td { (c.get("score").and_then(Value::as_f64).map(|s| format!("{s:.2}")).unwrap_or_default()) }
                        td { (c.get("log10_p_innocent").and_then(Value::as_f64).map(|s| format!("{s:.1}")).unwrap_or_default()) }
                        td { @if c.get("accused").and_then(Value::as_bool) == Some(true) { (lang.t("はい", "yes")) } }
                    }
                }
            }
        }
    }
}

/// `POST /trace`: hands the uploaded file to the release zone and shows its verdict.
pub async fn trace(State(console): State<AppState>, upload: SignedUpload) -> Result<Markup, PageError> {
    let SignedUpload {
        viewer,
        fields,
        file_name,
        content,
    } = upload;
    let lang = viewer.lang;
    let release = fields.get("release").map(|r| r.trim().to_owned()).unwrap_or_default();
    if release.is_empty() || file_name.is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "FIELD_REQUIRED",
            "name the release and choose the file",
        ));
    }
    let mut chunks: Vec<rpb::TraceLeakChunk> = content
        .chunks(CHUNK_BYTES)
        .map(|part| rpb::TraceLeakChunk {
            content: part.to_vec(),
            ..Default::default()
        })
        .collect();
    drop(content);
    if chunks.is_empty() {
        chunks.push(rpb::TraceLeakChunk::default());
    }
    chunks[0].release_id = release;
    chunks[0].file_name = file_name;
    chunks[0].table = fields.get("table").map(|t| t.trim().to_owned()).unwrap_or_default();
    let answer = console
        .services
        .release_client()?
        .trace_leak(authed(viewer.token(), futures::stream::iter(chunks))?)
        .await
        .map_err(PageError::refused)?
        .into_inner();
    let report: Value = serde_json::from_str(&answer.report_json).unwrap_or(Value::Null);
    Ok(page(
        &viewer,
        ("追跡の結果", "Trace"),
        verdict(lang, &report, answer.audit_seq),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_the_accused_and_every_score() {
        let report = serde_json::json!({
            "release": "R-A-1", "application": "A-1", "table": "patients", "rows": 120,
            "carriers": ["values:patients"], "accused": ["hana"], "explanation": "values: 1 accused",
            "verdict": {"decidable": true, "bound": 1e-6, "candidates": [
                {"recipient": "hana", "score": 9.5, "log10_p_innocent": -12.0, "accused": true},
                {"recipient": "rin", "score": -0.3, "log10_p_innocent": 0.0, "accused": false}
            ]}
        });
        let page = verdict(Lang::En, &report, 42).into_string();
        assert!(page.contains("<strong>hana</strong>"), "{page}");
        assert!(page.contains("<td>rin</td><td>-0.30</td>"), "{page}");
        let nobody = serde_json::json!({"accused": [], "verdict": {"candidates": []}});
        assert!(
            verdict(Lang::En, &nobody, 1)
                .into_string()
                .contains("No one is accused.")
        );
    }
}
