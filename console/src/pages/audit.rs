//! The auditors' desk: the audit ledger's chain verified by the policy service (every entry's hash and link), and
//! an inspection bundle of a period exported as a file — the bundle `tokumei audit verify-bundle` checks offline.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Signed, Viewer};
use crate::layout::{csrf, page, row};
use crate::services::{PageError, authed};

/// `GET /audit`: the ledger verified now.
pub async fn show(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let v = console
        .services
        .policy
        .clone()
        .verify_audit(authed(viewer.token(), pb::Empty {})?)
        .await
        .map_err(PageError::refused)?
        .into_inner();
    let today = chrono::Utc::now().date_naive();
    Ok(page(
        &viewer,
        ("監査", "Audit"),
        html! {
            section {
                h2 { (lang.t("監査ログの検証", "Ledger verification")) }
                dl {
                    (row(lang.t("結果", "Result"), html! {
                        @if v.ok { strong.status.approved id="ledger-ok" { (lang.t("改ざんは検出されませんでした", "No tampering found")) } }
                        @else { strong.status.refused id="ledger-bad" { (lang.t("不整合があります", "The chain is broken")) } }
                    }))
                    (row(lang.t("検証した記録", "Entries checked"), v.entries_checked))
                    (row(lang.t("最新の記録番号", "Head"), v.head_seq))
                    (row(lang.t("最新のハッシュ", "Head hash"), html! { code.hash { (v.head_hash) } }))
                    @if !v.ok {
                        (row(lang.t("最初の不整合", "First bad entry"), v.first_bad_seq))
                        (row(lang.t("内容", "Problem"), v.problem.as_str()))
                    }
                }
            }
            section {
                h2 { (lang.t("検査用バンドルの書き出し", "Export an inspection bundle")) }
                form method="post" action="/audit/export" {
                    (csrf(&viewer))
                    div.field {
                        label for="from" { (lang.t("開始日（YYYY-MM-DD、含む）", "From (YYYY-MM-DD, inclusive)")) }
                        input type="text" id="from" name="from" value=((today - chrono::Duration::days(30)).to_string()) required;
                    }
                    div.field {
                        label for="to" { (lang.t("終了日（YYYY-MM-DD、含まない）", "To (YYYY-MM-DD, exclusive)")) }
                        input type="text" id="to" name="to" value=((today + chrono::Duration::days(1)).to_string()) required;
                    }
                    button type="submit" id="export" { (lang.t("書き出す", "Export")) }
                }
            }
        },
    ))
}

/// A period to export.
#[derive(Deserialize)]
pub struct Window {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

fn date(text: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// `POST /audit/export`: the bundle as a file.
pub async fn export(State(console): State<AppState>, signed: Signed<Window>) -> Response {
    let Signed { viewer, form } = signed;
    let (Some(from), Some(to)) = (date(&form.from), date(&form.to)) else {
        return PageError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "WINDOW_INVALID",
            "give both dates as YYYY-MM-DD",
        )
        .into_response();
    };
    // The file name is made of the parsed dates, never of what was typed.
    let filename = format!("inspection-bundle-{from}-{to}.json");
    let window = pb::AuditWindow {
        from: format!("{from}T00:00:00Z"),
        to: format!("{to}T00:00:00Z"),
    };
    let request = match authed(viewer.token(), window) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().export_audit(request).await {
        Ok(doc) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            doc.into_inner().json,
        )
            .into_response(),
        Err(status) => PageError::refused(status).into_response(),
    }
}
