//! A researcher's statistical tables over the core store, under a statistics approval: the request in the
//! researcher's words (table, grouping, measure, privacy), checked field by field before it is sent; the policy
//! service checks it against the platform's rules and the approval and spends a DP table's loss; the core computes
//! it; the order's page shows the table to the requester alone, with its protection and figures, and hands the
//! CSV over once its digest matches. Nothing is computed or kept by the console.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Signed, Viewer};
use crate::fields::{Problems, area, described, field, invalid, text};
use crate::i18n::Lang;
use crate::layout::{csrf, page, row};
use crate::pages::applications;
use crate::services::{PageError, authed};

/// The request as typed (all text, so that what was typed comes back when something is wrong).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Fields {
    application: String,
    table: String,
    group_by: String,
    hierarchy: String,
    measure: String,
    max_contrib: String,
    epsilon: String,
    delta: String,
    min_cell: String,
    suppress_zeros: String,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            application: String::new(),
            table: String::new(),
            group_by: String::new(),
            hierarchy: String::new(),
            measure: "count".into(),
            max_contrib: "1".into(),
            epsilon: String::new(),
            delta: String::new(),
            min_cell: String::new(),
            suppress_zeros: String::new(),
        }
    }
}

fn identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A positive, finite number, or nothing when the field is empty.
fn positive(s: &str) -> Result<Option<f64>, ()> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
        _ => Err(()),
    }
}

/// A whole number, or nothing when the field is empty.
fn whole(s: &str) -> Result<Option<u64>, ()> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<u64>().map(Some).map_err(|_| ())
}

impl Fields {
    /// The service's request, or each field's problem.
    pub fn check(&self, lang: Lang) -> Result<pb::StatisticsOperation, Problems> {
        let mut p = Problems::new();
        if self.application.trim().is_empty() {
            p.insert("application", lang.t("承認を選んでください。", "Choose an approval."));
        }
        if !identifier(self.table.trim()) {
            p.insert(
                "table",
                lang.t(
                    "テーブル名（英数字と _）を入力してください。",
                    "Enter a table name (letters, digits, _).",
                ),
            );
        }
        let group_by: Vec<String> = self
            .group_by
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if group_by.iter().any(|c| !identifier(c)) {
            p.insert(
                "group_by",
                lang.t(
                    "列名をカンマで区切って入力してください。",
                    "List column names separated by commas.",
                ),
            );
        }
        let hierarchy: Vec<String> = self
            .hierarchy
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if hierarchy.iter().any(|h| {
            !h.split_once('=')
                .is_some_and(|(c, l)| identifier(c.trim()) && identifier(l.trim()))
        }) {
            p.insert(
                "hierarchy",
                lang.t("1行に「列=階層」の形で入力してください。", "One COLUMN=LEVEL per line."),
            );
        }
        let measure = self.measure.trim();
        let kind = measure.split(':').next().unwrap_or("");
        if !["count", "sum", "mean", "hist", "quantile"].contains(&kind) {
            p.insert(
                "measure",
                lang.t(
                    "count、sum:列:下限:上限 などの形で入力してください。",
                    "Enter count, sum:COL:LO:HI, mean:COL:LO:HI, hist:COL:LO:HI:BINS or quantile:COL:LO:HI:Q.",
                ),
            );
        }
        let max_contrib = match whole(&self.max_contrib) {
            Ok(Some(n)) if (1..=u64::from(u32::MAX)).contains(&n) => n as u32,
            _ => {
                p.insert(
                    "max_contrib",
                    lang.t("1以上の整数を入力してください。", "Enter a whole number of at least 1."),
                );
                1
            }
        };
        let epsilon = positive(&self.epsilon).unwrap_or_else(|()| {
            p.insert(
                "epsilon",
                lang.t(
                    "正の数を入力してください（空欄: 小セル抑制）。",
                    "Enter a positive number (empty: the small-cell rule).",
                ),
            );
            None
        });
        let delta = match positive(&self.delta) {
            Ok(d) if d.is_none_or(|d| d < 1.0) => d,
            _ => {
                p.insert(
                    "delta",
                    lang.t(
                        "0より大きく1より小さい数を入力してください。",
                        "Enter a number between 0 and 1.",
                    ),
                );
                None
            }
        };
        let min_cell = whole(&self.min_cell).unwrap_or_else(|()| {
            p.insert("min_cell", lang.t("整数を入力してください。", "Enter a whole number."));
            None
        });
        if !p.is_empty() {
            return Err(p);
        }
        Ok(pb::StatisticsOperation {
            application_id: self.application.trim().to_owned(),
            table: self.table.trim().to_owned(),
            group_by,
            hierarchy,
            measure: measure.to_owned(),
            max_contrib,
            epsilon,
            rho: None,
            delta,
            public_keys: Vec::new(),
            keys_declared: false,
            min_cell,
            suppress_zeros: !self.suppress_zeros.is_empty(),
            subject: None,
        })
    }
}

/// The viewer's approvals on the statistics channel.
async fn approvals(console: &AppState, viewer: &Viewer) -> Result<Vec<pb::Application>, PageError> {
    Ok(applications::all(console, viewer)
        .await?
        .into_iter()
        .filter(|a| a.status == "approved" && a.form.as_ref().is_some_and(|f| f.channel == "statistics"))
        .collect())
}

fn form_page(
    viewer: &Viewer,
    approved: &[pb::Application],
    v: &Fields,
    problems: &Problems,
    refusal: Option<&PageError>,
) -> Markup {
    let lang = viewer.lang;
    page(
        viewer,
        ("統計表の依頼", "Statistical tables"),
        html! {
            @if let Some(e) = refusal {
                div.error role="alert" id="refusal" { p { strong.reason { (e.reason) } " " (e.message) } }
            }
            p { (lang.t("表はコアで計算され、依頼者だけに返ります。差分プライバシーの表は予算から差し引かれます。", "The core computes the table and returns it to you alone. A differentially private table is spent from the approval's budget.")) " "
                a href="/budget" { (lang.t("予算を見る", "See the budget")) } }
            @if approved.is_empty() {
                p.empty { (lang.t("統計の承認がありません。", "You have no statistics approval.")) }
            } @else {
                form method="post" action="/statistics" novalidate {
                    (csrf(viewer))
                    (field("application", lang.t("承認", "Approval"), None, problems, html! {
                        select id="application" name="application" aria-invalid=[invalid("application", problems)] aria-describedby=[described("application", false, problems)] {
                            @for a in approved {
                                option value=(a.id) selected[v.application == a.id] { (a.id) " " (a.form.as_ref().map(|f| f.title.as_str()).unwrap_or("")) }
                            }
                        }
                    }))
                    (field("table", lang.t("テーブル", "Table"), Some(lang.t("例: patients", "e.g. patients")), problems, text("table", &v.table, problems, true)))
                    (field("group_by", lang.t("集計の軸（列、カンマ区切り）", "Group by (columns, comma-separated)"), Some(lang.t("例: sex, prefecture", "e.g. sex, prefecture")), problems, text("group_by", &v.group_by, problems, true)))
                    (field("hierarchy", lang.t("一般化（1行に 列=階層）", "Generalise (one COLUMN=LEVEL per line)"), Some(lang.t("例: prefecture=region", "e.g. prefecture=region")), problems, area("hierarchy", &v.hierarchy, problems, true)))
                    (field("measure", lang.t("集計値", "Measure"), Some("count | sum:COL:LO:HI | mean:COL:LO:HI | hist:COL:LO:HI:BINS | quantile:COL:LO:HI:Q"), problems, text("measure", &v.measure, problems, true)))
                    (field("max_contrib", lang.t("1人あたりの行数の上限", "Rows kept per patient"), None, problems, text("max_contrib", &v.max_contrib, problems, false)))
                    (field("epsilon", "ε", Some(lang.t("空欄のときは最小セル数による抑制（差分プライバシーではありません）", "Empty: the minimum-cell rule (not differential privacy)")), problems, text("epsilon", &v.epsilon, problems, true)))
                    (field("delta", "δ", Some(lang.t("公開キーがないときの区分選択に使います", "For partition selection when the keys are not public")), problems, text("delta", &v.delta, problems, true)))
                    (field("min_cell", lang.t("最小セル数", "Minimum cell"), None, problems, text("min_cell", &v.min_cell, problems, false)))
                    div.field {
                        input type="checkbox" id="suppress_zeros" name="suppress_zeros" value="on" checked[!v.suppress_zeros.is_empty()];
                        " " label for="suppress_zeros" { (lang.t("0のセルも小セルとして扱う", "Treat zero cells as small too")) }
                    }
                    button type="submit" id="request-statistics" { (lang.t("表を依頼する", "Request the table")) }
                }
            }
        },
    )
}

/// `GET /statistics`: the request form.
pub async fn blank(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let approved = approvals(&console, &viewer).await?;
    Ok(form_page(
        &viewer,
        &approved,
        &Fields::default(),
        &Problems::new(),
        None,
    ))
}

/// The form again with what was typed, its problems or the service's refusal.
async fn refill(
    console: &AppState,
    viewer: &Viewer,
    fields: &Fields,
    status: StatusCode,
    problems: &Problems,
    refusal: Option<&PageError>,
) -> Response {
    match approvals(console, viewer).await {
        Ok(approved) => (status, form_page(viewer, &approved, fields, problems, refusal)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /statistics`: checks the fields, asks the policy service for the table; the order's page follows it.
pub async fn request(State(console): State<AppState>, signed: Signed<Fields>) -> Response {
    let Signed { viewer, form: fields } = signed;
    let operation = match fields.check(viewer.lang) {
        Ok(op) => op,
        Err(problems) => {
            return refill(
                &console,
                &viewer,
                &fields,
                StatusCode::UNPROCESSABLE_ENTITY,
                &problems,
                None,
            )
            .await;
        }
    };
    let request = match authed(
        viewer.token(),
        pb::CoreOperationRequest {
            operation: Some(pb::core_operation_request::Operation::Statistics(operation)),
        },
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().request_core_operation(request).await {
        Ok(status) => crate::layout::see_other(&format!("/orders/{}", status.into_inner().id)),
        Err(status) => {
            let e = PageError::refused(status);
            refill(&console, &viewer, &fields, e.status, &Problems::new(), Some(&e)).await
        }
    }
}

/// The table of a statistics report whose CSV matches its digest.
fn checked_csv(report: &Value) -> Result<&str, PageError> {
    let csv = report.get("csv").and_then(Value::as_str).ok_or_else(|| {
        PageError::new(
            StatusCode::BAD_GATEWAY,
            "REPORT_INCOMPLETE",
            "the core's report carries no table",
        )
    })?;
    let digest = hex::encode(Sha256::digest(csv.as_bytes()));
    if report.get("csv_sha256").and_then(Value::as_str) != Some(digest.as_str()) {
        return Err(PageError::new(
            StatusCode::BAD_GATEWAY,
            "REPORT_CORRUPT",
            "the table does not match its digest",
        ));
    }
    Ok(csv)
}

/// Cells shown on the page; the CSV carries them all.
const SHOWN_ROWS: usize = 500;

/// A finished statistics order's report: the protection and its figures, then the table (the first
/// [`SHOWN_ROWS`] rows) and the CSV to take away.
pub fn report(lang: Lang, order: u64, report: &Value) -> Markup {
    let csv = match checked_csv(report) {
        Ok(csv) => csv,
        Err(e) => return html! { div.error role="alert" { p { strong.reason { (e.reason) } " " (e.message) } } },
    };
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map(|h| h.iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = reader
        .records()
        .filter_map(Result::ok)
        .take(SHOWN_ROWS)
        .map(|r| r.iter().map(str::to_owned).collect())
        .collect();
    let loss = report.pointer("/plan/loss");
    let small = report.get("small_cell");
    html! {
        dl id="statistics" {
            (row(lang.t("保護", "Protection"), html! { span id="protection" { (report.get("protection").and_then(Value::as_str).unwrap_or("")) } }))
            (row(lang.t("公表セル数", "Cells released"), html! { span id="cells" { (report.get("cells").map(Value::to_string).unwrap_or_default()) } }))
            @if let Some(loss) = loss {
                (row(lang.t("使用した ε", "ε spent"), html! { span id="epsilon-spent" { (loss.get("epsilon").map(Value::to_string).unwrap_or_default()) } }))
                (row("δ", loss.get("delta").map(Value::to_string).unwrap_or_default()))
            }
            @if let Some(mechanism) = report.pointer("/plan/mechanism").and_then(Value::as_str) {
                (row(lang.t("方式", "Mechanism"), mechanism))
            }
            @if let Some(small) = small {
                (row(lang.t("一次秘匿", "Primary suppressions"), small.get("primary_suppressed").map(Value::to_string).unwrap_or_default()))
                (row(lang.t("二次秘匿", "Complementary suppressions"), small.get("complementary_suppressed").map(Value::to_string).unwrap_or_default()))
            }
            (row("SHA-256", html! { code id="table-sha256" { (report.get("csv_sha256").and_then(Value::as_str).unwrap_or("")) } }))
        }
        table.list id="result-table" {
            caption { (lang.t("統計表", "The table")) }
            thead { tr { @for h in &headers { th scope="col" { (h) } } } }
            tbody { @for r in &rows { tr { @for cell in r { td { (cell) } } } } }
        }
        p { a id="table-csv" href={ "/orders/" (order) "/table.csv" } download={ "statistics-" (order) ".csv" } { (lang.t("CSVで保存する", "Save as CSV")) } }
    }
}

/// `GET /orders/{id}/table.csv`: a finished statistics order's table, for its requester, once its digest matches.
pub async fn table_csv(
    State(console): State<AppState>,
    viewer: Viewer,
    Path(id): Path<u64>,
) -> Result<Response, PageError> {
    let status = crate::pages::orders::status_of(&console, &viewer, id).await?;
    if status.operation != "statistics" || status.state != "done" {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "NO_TABLE",
            "the order holds no finished table",
        ));
    }
    let report: Value = serde_json::from_str(&status.result_json).map_err(|_| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "NO_TABLE",
            "only the requester may read the table",
        )
    })?;
    let csv = checked_csv(&report)?.to_owned();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"statistics-{id}.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Fields {
        Fields {
            application: "A-1".into(),
            table: "patients".into(),
            group_by: "sex, prefecture".into(),
            hierarchy: "prefecture=region\n".into(),
            epsilon: "0.5".into(),
            ..Fields::default()
        }
    }

    #[test]
    fn a_complete_request_becomes_the_services() {
        let op = good().check(Lang::En).unwrap();
        assert_eq!(op.group_by, ["sex", "prefecture"]);
        assert_eq!(op.hierarchy, ["prefecture=region"]);
        assert_eq!(op.epsilon, Some(0.5));
        assert_eq!(op.max_contrib, 1);
        assert!(!op.keys_declared);
    }

    #[test]
    fn each_bad_field_is_named() {
        let f = Fields {
            table: "patients; drop".into(),
            group_by: "sex,".into(),
            hierarchy: "prefecture".into(),
            measure: "median".into(),
            max_contrib: "2.5".into(),
            epsilon: "-1".into(),
            delta: "1".into(),
            min_cell: "ten".into(),
            ..Fields::default()
        };
        let problems = f.check(Lang::En).unwrap_err();
        let named: Vec<&str> = problems.keys().copied().collect();
        assert_eq!(
            named,
            [
                "application",
                "delta",
                "epsilon",
                "hierarchy",
                "max_contrib",
                "measure",
                "min_cell",
                "table"
            ]
        );
        for e in ["NaN", "inf", "0"] {
            let f = Fields {
                epsilon: e.into(),
                ..good()
            };
            assert!(f.check(Lang::En).unwrap_err().contains_key("epsilon"), "{e}");
        }
    }

    #[test]
    fn a_table_that_does_not_match_its_digest_is_not_shown() {
        let csv = "sex,count\nF,12\n";
        let good = serde_json::json!({"csv": csv, "csv_sha256": hex::encode(Sha256::digest(csv)), "cells": 1});
        assert!(checked_csv(&good).is_ok());
        let bad = serde_json::json!({"csv": "sex,count\nF,13\n", "csv_sha256": hex::encode(Sha256::digest(csv))});
        assert_eq!(checked_csv(&bad).unwrap_err().reason, "REPORT_CORRUPT");
        let page = report(Lang::En, 7, &good).into_string();
        assert!(page.contains("<td>F</td><td>12</td>"), "{page}");
    }
}
