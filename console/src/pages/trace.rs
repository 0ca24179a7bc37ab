//! An operator traces a leaked file found outside the platform: the file is uploaded from the browser and handed,
//! as it came, to the release zone (`ReleaseService.TraceLeak`), which reads the marks with the release's
//! fingerprint key — a key that never leaves that zone — scores every recipient and has the policy service admit
//! and record the trace. The console keeps nothing of the file: it is dropped once the zone answered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tokumei_release::trace::TraceReport;

use crate::AppState;
use crate::extract::{SignedUpload, Viewer};
use crate::fields::{Problems, described, field, invalid, text_named};
use crate::i18n::Lang;
use crate::layout::{csrf, page, row};
use crate::services::{PageError, authed};

/// The upload form, with `problems` beside their fields (a browser never refills a file input: it is chosen again).
fn form_page(viewer: &Viewer, problems: &Problems) -> Markup {
    let lang = viewer.lang;
    page(
        viewer,
        ("流出ファイルの追跡", "Trace a leaked file"),
        html! {
            p { (lang.t("外部で見つかったファイルを提供データの指紋と照合し、どの受領者の写しかを判定します。判定は監査ログに記録されます。", "Matches a file found outside the platform against a release's fingerprints and finds whose copy it was. The trace is recorded on the audit ledger.")) }
            // The token is the form's first field: the console checks it before reading the file.
            form method="post" action="/trace" enctype="multipart/form-data" novalidate {
                (csrf(viewer))
                (field("trace-release", lang.t("提供データの番号", "Release"), Some(lang.t("例: R-A-2026-0001-1", "e.g. R-A-2026-0001-1")), problems,
                    text_named("trace-release", "release", "", problems, true)))
                (field("trace-table", lang.t("テーブル（任意）", "Table (optional)"), Some(lang.t("空欄: 指紋の入った列から判定します", "Empty: found from the marked columns present")), problems,
                    text_named("trace-table", "table", "", problems, true)))
                (field("trace-file", lang.t("流出ファイル（CSV または Parquet、64 MiB まで）", "The leaked file (CSV or Parquet, at most 64 MiB)"), None, problems, html! {
                    input type="file" id="trace-file" name="file" accept=".csv,.tsv,.txt,.parquet"
                        aria-invalid=[invalid("trace-file", problems)] aria-describedby=[described("trace-file", false, problems)];
                }))
                button type="submit" id="trace" { (lang.t("追跡する", "Trace")) }
            }
        },
    )
}

/// `GET /trace`: the upload form.
pub async fn form(viewer: Viewer) -> Markup {
    form_page(&viewer, &Problems::new())
}

fn yes(lang: Lang, accused: bool) -> &'static str {
    if accused { lang.t("はい", "yes") } else { "" }
}

/// The zone's report as an operator reads it: who is accused, on which carriers, the bound on accusing an innocent
/// (the carriers' shares summed), and every candidate's evidence on each carrier.
fn verdict(lang: Lang, report: &TraceReport, audit_seq: i64) -> Markup {
    let t = &report.traced;
    let bound = t.verdict.bound + t.pseudonyms.as_ref().map_or(0.0, |p| p.bound);
    html! {
        @if t.accused.is_empty() {
            p.notice role="status" id="accused" { (lang.t("誰も特定されませんでした。", "No one is accused.")) }
        } @else {
            p.notice.accused role="status" id="accused" { (lang.t("特定された受領者: ", "Accused: ")) strong { (t.accused.join(", ")) } }
        }
        dl {
            (row(lang.t("提供データ", "Release"), report.release.as_str()))
            (row(lang.t("申請", "Application"), report.application.as_str()))
            (row(lang.t("テーブル", "Table"), report.table.as_str()))
            (row(lang.t("行数", "Rows"), report.rows))
            (row(lang.t("読んだ指紋", "Carriers read"), t.carriers.join(", ")))
            (row(lang.t("無実の人を誤って特定する確率の上限", "Bound on accusing an innocent"), format!("{bound:e}")))
            (row(lang.t("説明", "Explanation"), t.explanation.as_str()))
            (row(lang.t("監査ログ番号", "Audit entry"), audit_seq))
        }
        @if t.verdict.positions > 0 {
            table.list id="candidates" {
                caption { (lang.t("値の指紋：受領者ごとの得点", "Value marks: each recipient's score")) " (" (t.verdict.positions) " " (lang.t("箇所", "positions")) ")" }
                thead { tr {
                    th scope="col" { (lang.t("受領者", "Recipient")) }
                    th scope="col" { (lang.t("得点", "Score")) }
                    th scope="col" { "log10 p" }
                    th scope="col" { (lang.t("特定", "Accused")) }
                } }
                tbody {
                    @for c in &t.verdict.candidates {
                        tr { td { (c.recipient) } td { (format!("{:.2}", c.score)) } td { (format!("{:.1}", c.log10_p_innocent)) } td { (yes(lang, c.accused)) } }
                    }
                }
            }
        }
        @if let Some(p) = &t.pseudonyms {
            table.list id="pseudonym-candidates" {
                caption { (lang.t("受領者ごとの仮名：一致した数", "Recipient pseudonyms: matches")) " (" (p.distinct_read) " " (lang.t("種類を読み、", "read, ")) (p.unmatched) " " (lang.t("は誰のものでもない", "no one's")) ")" }
                thead { tr {
                    th scope="col" { (lang.t("受領者", "Recipient")) }
                    th scope="col" { (lang.t("一致", "Matches")) }
                    th scope="col" { "log10 p" }
                    th scope="col" { (lang.t("特定", "Accused")) }
                } }
                tbody {
                    @for c in &p.candidates {
                        tr { td { (c.recipient) } td { (c.matches) } td { (format!("{:.1}", c.log10_p_innocent)) } td { (yes(lang, c.accused)) } }
                    }
                }
            }
        }
    }
}

/// `POST /trace`: hands the uploaded file to the release zone and shows its verdict.
pub async fn trace(State(console): State<AppState>, upload: SignedUpload) -> Result<Response, PageError> {
    let SignedUpload {
        viewer,
        fields,
        file_name,
        content,
        permit,
    } = upload;
    let lang = viewer.lang;
    let release = fields.get("release").map(|r| r.trim().to_owned()).unwrap_or_default();
    let mut problems = Problems::new();
    if release.is_empty() {
        problems.insert(
            "trace-release",
            lang.t("提供データの番号を入力してください。", "Name the release."),
        );
    }
    if file_name.is_empty() {
        problems.insert("trace-file", lang.t("ファイルを選んでください。", "Choose the file."));
    }
    if !problems.is_empty() {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, form_page(&viewer, &problems)).into_response());
    }
    let table = fields.get("table").map(|t| t.trim().to_owned()).unwrap_or_default();
    let chunks = tokumei_client::release::leak_chunks(content, &release, &file_name, &table);
    let answer = console
        .services
        .release_client()?
        .trace_leak(authed(viewer.token(), futures::stream::iter(chunks))?)
        .await
        .map_err(PageError::refused)?
        .into_inner();
    // The bytes are gone: the slot is free for another upload.
    drop(permit);
    let report: TraceReport = serde_json::from_str(&answer.report_json).map_err(|_| {
        PageError::new(
            StatusCode::BAD_GATEWAY,
            "REPORT_INCOMPLETE",
            "the release zone's trace report could not be read",
        )
    })?;
    Ok(page(
        &viewer,
        ("追跡の結果", "Trace"),
        verdict(lang, &report, answer.audit_seq),
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_the_accused_every_score_and_the_whole_bound() {
        let report: TraceReport = serde_json::from_value(serde_json::json!({
            "release": "R-A-1", "application": "A-1", "table": "patients", "rows": 120,
            "carriers": ["values:patients", "pseudonyms"], "accused": ["hana"], "explanation": "values: 1 accused",
            "verdict": {"positions": 40, "erased_positions": 0, "decidable": true, "bound": 5e-7, "max_score": 12.0,
                "explanation": "", "accused": ["hana"], "candidates": [
                {"recipient": "hana", "score": 9.5, "p_innocent": 1e-12, "log10_p_innocent": -12.0, "accused": true},
                {"recipient": "rin", "score": -0.3, "p_innocent": 1.0, "log10_p_innocent": 0.0, "accused": false}
            ]},
            "pseudonyms": {"column_present": true, "distinct_read": 30, "well_formed": 30, "unmatched": 2,
                "accused": ["hana"], "bound": 5e-7, "candidates": [
                {"recipient": "hana", "matches": 28, "log10_p_innocent": -40.0, "accused": true}
            ]}
        }))
        .unwrap();
        let page = verdict(Lang::En, &report, 42).into_string();
        assert!(page.contains("<strong>hana</strong>"), "{page}");
        assert!(page.contains("<td>rin</td><td>-0.30</td>"), "{page}");
        assert!(
            page.contains("<td>hana</td><td>28</td>"),
            "the pseudonym carrier is missing: {page}"
        );
        assert!(page.contains("1e-6"), "the bound is not the carriers' sum: {page}");
    }
}
