//! The output checkers' queue: each request to take a result out of an analysis workspace, with the automatic
//! checks' findings cell by cell (rule, place, reason — never a value), the analysis as asked (its query
//! included), what would leave (withheld when the checks refused it), and the checker's decision: approve, ask
//! for changes, refuse. The policy service refuses a checker of the researcher's or author's organisation and an
//! approval of what the checks refused; the console shows the refusal's reason.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use tokumei_proto::analysis::v1 as apb;

use crate::AppState;
use crate::extract::{Notice, Signed, Viewer};
use crate::i18n::Lang;
use crate::layout::{csrf, notice, page, row};
use crate::services::{PageError, authed};

/// A field of a service document as text (empty when absent).
pub(crate) fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// An automatic check's verdict, as people read it.
pub(crate) fn verdict(lang: Lang, v: &str) -> &'static str {
    match v {
        "safe" => lang.t("安全", "Safe"),
        "review" => lang.t("要確認", "Review"),
        "refused" => lang.t("不可", "Refused"),
        _ => lang.t("不明", "Unknown"),
    }
}

/// An output request's state, as people read it.
pub(crate) fn state(lang: Lang, s: &str) -> &'static str {
    match s {
        "awaiting_check" => lang.t("チェック待ち", "Awaiting check"),
        "changes_requested" => lang.t("修正依頼", "Changes requested"),
        "refused" => lang.t("不許可", "Refused"),
        "releasing" => lang.t("公開処理中", "Releasing"),
        "released" => lang.t("公開済み", "Released"),
        "release_refused" => lang.t("公開時に不可", "Refused at release"),
        _ => lang.t("不明", "Unknown"),
    }
}

fn place(lang: Lang, p: &Value) -> String {
    let index = p.get("index").and_then(Value::as_u64);
    match (p.get("at").and_then(Value::as_str), index) {
        (Some("cell"), Some(i)) => format!("{} {i}", lang.t("セル", "cell")),
        (Some("step"), Some(i)) => format!("{} {i}", lang.t("段階", "step")),
        _ => lang.t("全体", "whole").to_owned(),
    }
}

/// Every finding of every automatic check of an output request or a workspace report (`checks` is a list of
/// check reports, each with its findings), as a table: the rule, the cell or step, the verdict and the reason.
pub(crate) fn findings(lang: Lang, report: &Value) -> Markup {
    let all: Vec<&Value> = report
        .get("checks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("findings").and_then(Value::as_array).into_iter().flatten())
        .collect();
    html! {
        h2 { (lang.t("自動チェックの所見", "Findings of the automatic checks")) }
        @if all.is_empty() { p { (lang.t("所見はありません。", "No findings.")) } }
        @else {
            table.list id="findings" {
                thead { tr {
                    th scope="col" { (lang.t("規則", "Rule")) }
                    th scope="col" { (lang.t("場所", "Place")) }
                    th scope="col" { (lang.t("判定", "Verdict")) }
                    th scope="col" { (lang.t("理由", "Reason")) }
                } }
                tbody {
                    @for f in &all {
                        tr {
                            td { code { (text(f, "rule")) } }
                            td { (f.get("place").map(|p| place(lang, p)).unwrap_or_else(|| lang.t("全体", "whole").to_owned())) }
                            td { (verdict(lang, &text(f, "verdict"))) }
                            td { (text(f, "message")) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /outputs`.
pub async fn list(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let doc = console
        .services
        .analysis
        .clone()
        .list_outputs(authed(viewer.token(), apb::OutputFilter::default())?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .json;
    let outputs: Vec<Value> = serde_json::from_str(&doc).unwrap_or_default();
    Ok(page(
        &viewer,
        ("出力チェック", "Output checking"),
        html! {
            @if outputs.is_empty() { p.empty { (lang.t("出力の申請はありません。", "No output requests.")) } }
            @else {
                table.list id="outputs" {
                    thead { tr {
                        th scope="col" { (lang.t("番号", "No.")) }
                        th scope="col" { (lang.t("申請", "Application")) }
                        th scope="col" { (lang.t("解析", "Analysis")) }
                        th scope="col" { (lang.t("依頼者", "Requested by")) }
                        th scope="col" { (lang.t("自動チェック", "Automatic checks")) }
                        th scope="col" { (lang.t("状態", "State")) }
                    } }
                    tbody {
                        @for o in &outputs {
                            tr {
                                td { a href={ "/outputs/" (text(o, "id")) } { (text(o, "id")) } }
                                td { (text(o, "application")) }
                                td { (text(o, "analysis")) }
                                td { (text(o, "requested_by")) }
                                td { span class={ "verdict " (text(o, "verdict")) } { (verdict(lang, &text(o, "verdict"))) } }
                                td { (state(lang, &text(o, "state"))) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `GET /outputs/{id}`.
pub async fn detail(
    State(console): State<AppState>,
    viewer: Viewer,
    Path(id): Path<u64>,
    Notice(done): Notice,
) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let doc = console
        .services
        .analysis
        .clone()
        .get_output(authed(viewer.token(), apb::OutputRef { id })?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .json;
    let o: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
    let pretty = |v: Option<&Value>| v.and_then(|v| serde_json::to_string_pretty(v).ok()).unwrap_or_default();
    let open = text(&o, "state") == "awaiting_check" && viewer.has("output_checker");
    Ok(page(
        &viewer,
        ("出力の申請", "Output request"),
        html! {
            @if done == "decided" { (notice(lang.t("判断を記録しました。", "Your decision was recorded."))) }
            dl {
                (row(lang.t("番号", "No."), text(&o, "id")))
                (row(lang.t("申請", "Application"), text(&o, "application")))
                (row(lang.t("解析", "Analysis"), text(&o, "analysis")))
                (row(lang.t("計算した人", "Computed by"), text(&o, "computed_by")))
                (row(lang.t("依頼者", "Requested by"), text(&o, "requested_by")))
                (row(lang.t("自動チェック", "Automatic checks"), html! { span id="verdict" class={ "verdict " (text(&o, "verdict")) } { (verdict(lang, &text(&o, "verdict"))) } }))
                (row(lang.t("状態", "State"), html! { span id="output-state" { (state(lang, &text(&o, "state"))) } }))
                @if !text(&o, "checker").is_empty() { (row(lang.t("チェック担当", "Checker"), text(&o, "checker"))) }
                @if !text(&o, "comment").is_empty() { (row(lang.t("コメント", "Comment"), text(&o, "comment"))) }
            }
            (findings(lang, &o))
            h2 { (lang.t("依頼された解析（クエリを含む）", "The analysis as asked (with its query)")) }
            pre.spec { (pretty(o.get("spec"))) }
            h2 { (lang.t("持ち出す内容", "What would leave")) }
            @if o.get("content").is_none_or(Value::is_null) {
                p { (lang.t("自動チェックで不可のため、値は解析環境に留め置かれています。", "Withheld: the automatic checks refused it; the values stay in the workspace.")) }
            } @else {
                pre.content { (pretty(o.get("content"))) }
            }
            @if open {
                form method="post" action={ "/outputs/" (id) "/decide" } {
                    (csrf(&viewer))
                    fieldset {
                        legend { (lang.t("判断", "Decision")) }
                        @for (value, ja, en) in [("approve", "承認（公開する）", "Approve (release)"), ("changes", "修正を依頼", "Ask for changes"), ("refuse", "不許可", "Refuse")] {
                            div.check {
                                input type="radio" id={ "d-" (value) } name="decision" value=(value) required;
                                label for={ "d-" (value) } { (lang.t(ja, en)) }
                            }
                        }
                        div.field {
                            label for="o-comment" { (lang.t("コメント（要確認の承認・修正依頼では必須）", "Comment (required to approve a review or ask for changes)")) }
                            textarea id="o-comment" name="comment" rows="3" {}
                        }
                        button type="submit" id="decide-output" { (lang.t("判断を記録する", "Record the decision")) }
                    }
                }
            }
        },
    ))
}

/// A checker's decision.
#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
}

/// `POST /outputs/{id}/decide`.
pub async fn decide(State(console): State<AppState>, Path(id): Path<u64>, signed: Signed<DecisionForm>) -> Response {
    let Signed { viewer, form } = signed;
    let request = match authed(
        viewer.token(),
        apb::OutputDecision {
            id,
            decision: form.decision,
            comment: form.comment.trim().to_owned(),
        },
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.analysis.clone().decide_output(request).await {
        Ok(_) => crate::layout::see_other(&format!("/outputs/{id}?done=decided")),
        Err(status) => PageError::refused(status).into_response(),
    }
}
