//! Core orders from the browser: the store's status (operators), a release plan before the chair decides (the
//! chair, assigned members, operators) and a release build (operators). The core listens on nothing: the console
//! asks the policy service, which authorises, records and queues a signed order; the order's page follows it
//! (a link asks again while the core has not reported; the page never reloads itself) and shows the core's
//! report: counts and references, never a data value. A finished build order is completed by the release service
//! (`CompleteBuild`), which fingerprints, signs and seals each recipient's copy.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use tokumei_proto::policy::v1 as pb;
use tokumei_proto::release::v1 as rpb;

use crate::AppState;
use crate::extract::{Signed, Viewer};
use crate::i18n::Lang;
use crate::layout::{csrf, page, row};
use crate::pages::signin::Nothing;
use crate::services::{PageError, authed};

async fn ask(console: &AppState, viewer: &Viewer, operation: pb::core_operation_request::Operation) -> Response {
    let request = match authed(
        viewer.token(),
        pb::CoreOperationRequest {
            operation: Some(operation),
        },
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().request_core_operation(request).await {
        Ok(status) => crate::layout::see_other(&format!("/orders/{}", status.into_inner().id)),
        Err(status) => PageError::refused(status).into_response(),
    }
}

/// `POST /operator/status`: the store's status.
pub async fn store_status(State(console): State<AppState>, signed: Signed<Nothing>) -> Response {
    ask(
        &console,
        &signed.viewer,
        pb::core_operation_request::Operation::Status(pb::Empty {}),
    )
    .await
}

/// `POST /applications/{id}/plan`: what a release build of the application would do, before deciding.
pub async fn plan(State(console): State<AppState>, Path(id): Path<String>, signed: Signed<Nothing>) -> Response {
    let operation = pb::core_operation_request::Operation::PlanRelease(pb::PlanReleaseOperation {
        application_id: id,
        ..Default::default()
    });
    ask(&console, &signed.viewer, operation).await
}

/// An application to build.
#[derive(Deserialize)]
pub struct BuildForm {
    #[serde(default)]
    application: String,
}

/// `POST /operator/build`: the core's half of a release build.
pub async fn build(State(console): State<AppState>, signed: Signed<BuildForm>) -> Response {
    let operation = pb::core_operation_request::Operation::BuildRelease(pb::BuildReleaseOperation {
        application_id: signed.form.application.trim().to_owned(),
        ..Default::default()
    });
    ask(&console, &signed.viewer, operation).await
}

/// A core order's state, as people read it.
pub(crate) fn state(lang: Lang, s: &str) -> &'static str {
    match s {
        "queued" => lang.t("待機中", "Queued"),
        "taken" => lang.t("実行中", "Running"),
        "done" => lang.t("完了", "Done"),
        "failed" => lang.t("失敗", "Failed"),
        "expired" => lang.t("期限切れ", "Expired"),
        _ => lang.t("不明", "Unknown"),
    }
}

/// The core's report as rows: scalars as they are, nested values as indented JSON.
fn report(v: &Value) -> Markup {
    let Some(map) = v.as_object() else {
        return html! { pre { (serde_json::to_string_pretty(v).unwrap_or_default()) } };
    };
    html! {
        dl id="report" {
            @for (k, value) in map {
                dt { (k) }
                dd {
                    @match value {
                        Value::Object(_) | Value::Array(_) => pre { (serde_json::to_string_pretty(value).unwrap_or_default()) },
                        Value::String(s) => (s),
                        other => (other.to_string()),
                    }
                }
            }
        }
    }
}

/// An order's operation, as people read it (its code is shown beside it, as the ledger names it).
fn operation(lang: Lang, op: &str) -> &'static str {
    match op {
        "status" => lang.t("コアの状態", "The store's status"),
        "compact" => lang.t("コンパクション", "Compaction"),
        "erase" => lang.t("消去", "Erasure"),
        "rotate_keys" => lang.t("鍵の更新", "Key rotation"),
        "regulator_figures" => lang.t("報告用の集計", "Figures for the regulator"),
        "plan_release" => lang.t("提供計画", "Release plan"),
        "statistics" => lang.t("統計表", "Statistical table"),
        "sql" => lang.t("運用の問い合わせ", "Operator query"),
        "build_release" => lang.t("提供データの作成", "Release build"),
        "analysis" => lang.t("解析環境への依頼", "Workspace request"),
        _ => lang.t("その他", "Other"),
    }
}

fn megabytes(v: Option<&Value>) -> String {
    v.and_then(Value::as_u64)
        .map(|b| format!("{:.1} MB", b as f64 / 1_000_000.0))
        .unwrap_or_default()
}

/// The store's status as an operator's dashboard: each table's rows, files (many small files call for compaction),
/// size, last batch and commit, and how far it has read the spool.
fn status_dashboard(lang: Lang, v: &Value) -> Markup {
    let field = |t: &Value, key: &str| match t.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "—".to_owned(),
        Some(other) => other.to_string(),
    };
    let tables = v.get("tables").and_then(Value::as_array).cloned().unwrap_or_default();
    html! {
        dl id="report" {
            (row(lang.t("保存場所", "Location"), field(v, "location")))
            (row(lang.t("使用中のデータ鍵", "Data keys in use"), field(v, "data_keys")))
            (row(lang.t("ディスク使用量（暗号化後）", "On disk (sealed)"), megabytes(v.get("bytes_on_disk"))))
        }
        table.list id="store-tables" {
            caption { (lang.t("テーブル", "Tables")) }
            thead { tr {
                th scope="col" { (lang.t("テーブル", "Table")) }
                th scope="col" { (lang.t("行数", "Rows")) }
                th scope="col" { (lang.t("ファイル数", "Files")) }
                th scope="col" { (lang.t("サイズ", "Size")) }
                th scope="col" { (lang.t("版", "Version")) }
                th scope="col" { (lang.t("最後の取り込み", "Last batch")) }
                th scope="col" { (lang.t("最後の書き込み", "Last commit")) }
                th scope="col" { (lang.t("スプールの読み取り位置", "Spool read through")) }
            } }
            tbody {
                @for t in &tables {
                    tr {
                        th scope="row" { (field(t, "table")) }
                        td { (field(t, "rows")) }
                        td { (field(t, "files")) }
                        td { (megabytes(t.get("bytes"))) }
                        td { (field(t, "version")) }
                        td { (field(t, "last_batch")) }
                        td { (field(t, "last_commit")) }
                        td { (field(t, "applied_through")) }
                    }
                }
            }
        }
    }
}

/// Where core order `id` stands, as the policy service shows it to `viewer` (a report to its requester alone).
pub(crate) async fn status_of(console: &AppState, viewer: &Viewer, id: u64) -> Result<pb::CoreOrderStatus, PageError> {
    Ok(console
        .services
        .policy
        .clone()
        .get_core_order(authed(viewer.token(), pb::CoreOrderRef { id })?)
        .await
        .map_err(PageError::refused)?
        .into_inner())
}

/// `GET /orders/{id}`: an order and, once done, the core's report.
pub async fn show(State(console): State<AppState>, viewer: Viewer, Path(id): Path<u64>) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let status = status_of(&console, &viewer, id).await?;
    let finished = matches!(status.state.as_str(), "done" | "failed" | "expired");
    let result: Value = serde_json::from_str(&status.result_json).unwrap_or(Value::Null);
    let body = html! {
        dl {
            (row(lang.t("注文番号", "Order"), status.id))
            (row(lang.t("操作", "Operation"), html! { (operation(lang, &status.operation)) " " code { (status.operation) } }))
            (row(lang.t("状態", "State"), html! { span id="order-state" class={ "status " (status.state) } { (state(lang, &status.state)) } }))
            (row(lang.t("依頼者", "Requested by"), status.requested_by.as_str()))
            @if !status.reason.is_empty() { (row(lang.t("理由", "Reason"), html! { code.reason { (status.reason) } })) }
        }
        @if !finished {
            p.hint { (lang.t("コアの報告を待っています。", "Waiting for the core's report.")) " "
                a.refresh id="refresh" href={ "/orders/" (status.id) } { (lang.t("最新の状態を見る", "See the latest state")) } }
        }
        @if status.state == "done" {
            h2 { (lang.t("コアの報告", "The core's report")) }
            @if result.is_null() {
                p { (lang.t("報告は依頼者だけが読めます。", "Only the requester may read the report.")) }
            } @else if status.operation == "statistics" {
                (crate::pages::statistics::report(lang, status.id, &result))
            } @else if let (true, Ok(plan)) = (status.operation == "plan_release", serde_json::from_value::<tokumei_release::builder::plan::PlanOutcome>(result.clone())) {
                (crate::pages::plan::report(lang, &plan))
            } @else if status.operation == "status" {
                (status_dashboard(lang, &result))
            } @else {
                (report(&result))
            }
            @if status.operation == "build_release" && console.services.release.is_some() {
                form method="post" action={ "/orders/" (status.id) "/complete" } {
                    (csrf(&viewer))
                    button type="submit" id="complete-build" { (lang.t("提供データを作成する（指紋付け・署名・封緘）", "Complete the release (fingerprint, sign, seal)")) }
                }
            }
        }
    };
    // No self-refreshing page (it would reset a screen reader every few seconds): a link asks again.
    Ok(page(&viewer, ("コアへの注文", "Core order"), body).into_response())
}

/// `POST /orders/{id}/complete`: the release service finishes a build whose core half is done; then the outcome's
/// page.
pub async fn complete(
    State(console): State<AppState>,
    Path(id): Path<u64>,
    signed: Signed<Nothing>,
) -> Result<Response, PageError> {
    let viewer = signed.viewer;
    let mut release = console.services.release_client()?;
    let outcome = release
        .complete_build(authed(viewer.token(), rpb::CompleteBuildRequest { order_id: id })?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .outcome_json;
    let outcome: Value = serde_json::from_str(&outcome).unwrap_or(Value::Null);
    *viewer.session.built.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, outcome));
    Ok(crate::layout::see_other(&format!("/orders/{id}/built")))
}

/// `GET /orders/{id}/built`: the outcome of the build this session completed (nothing is asked again).
pub async fn built(viewer: Viewer, Path(id): Path<u64>) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let outcome = viewer
        .session
        .built
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(order, _)| *order == id)
        .map(|(_, o)| o.clone())
        .ok_or_else(|| {
            PageError::new(
                axum::http::StatusCode::NOT_FOUND,
                "NO_BUILD_OUTCOME",
                "this session completed no such build; the releases are listed by the release service",
            )
        })?;
    Ok(page(
        &viewer,
        ("提供データの作成", "Release built"),
        html! {
            p.notice role="status" id="built" { (lang.t("提供データを作成しました。", "The release was built.")) }
            (report(&outcome))
        },
    ))
}

/// `GET /operator`: the operators' desk.
pub async fn desk(viewer: Viewer) -> Markup {
    let lang = viewer.lang;
    page(
        &viewer,
        ("運用", "Operations"),
        html! {
            section {
                h2 { (lang.t("コアの状態", "The core store")) }
                p { (lang.t("テーブルと件数、最後の取り込み、コンパクション、スプールの滞留をコアに問い合わせます。", "Asks the core for its tables and rows, the last batch, compaction and the spool backlog.")) }
                form method="post" action="/operator/status" {
                    (csrf(&viewer))
                    button type="submit" id="store-status" { (lang.t("状態を問い合わせる", "Ask for the status")) }
                }
            }
            section {
                h2 { (lang.t("提供データの作成", "Build a release")) }
                form method="post" action="/operator/build" {
                    (csrf(&viewer))
                    div.field {
                        label for="build-application" { (lang.t("承認された申請の番号", "Approved application")) }
                        input type="text" id="build-application" name="application" required;
                    }
                    button type="submit" id="build" { (lang.t("作成を注文する", "Order the build")) }
                }
            }
            section {
                h2 { (lang.t("監査と公表", "Audit and registers")) }
                ul {
                    li { a href="/audit" { (lang.t("監査ログの検証", "Verify the ledger")) } }
                    li { a href="/registers" { (lang.t("公表の更新", "Publish the registers")) } }
                }
            }
        },
    )
}
