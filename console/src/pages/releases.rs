//! A recipient's releases: the files of their copy with size and SHA-256, a download of each — admitted and
//! counted by the release service under the approval's conditions, then fetched by the browser straight from the
//! release zone's one-time HTTPS link (which serves `Range`, so an interrupted download resumes while the link
//! lives) — and the deletion declaration the approval requires after use.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokumei_proto::release::v1 as rpb;

use crate::AppState;
use crate::extract::{Notice, Signed, Viewer};
use crate::layout::{csrf, notice, page};
use crate::services::{PageError, authed};
use crate::sessions::GrantedDownload;

/// `GET /releases`.
pub async fn list(State(console): State<AppState>, viewer: Viewer, Notice(done): Notice) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let mut release = console.services.release_client()?;
    let releases = release
        .list_releases(authed(viewer.token(), rpb::ListReleasesRequest::default())?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .releases;
    let mine: Vec<&rpb::Release> = releases.iter().filter(|r| r.standing != "NOT_RECIPIENT").collect();
    let mut applications: Vec<&str> = mine.iter().map(|r| r.application.as_str()).collect();
    applications.sort_unstable();
    applications.dedup();
    Ok(page(
        &viewer,
        ("提供データ", "Releases"),
        html! {
            @if done == "deleted" { (notice(lang.t("削除の申告を記録しました。", "Your deletion declaration was recorded."))) }
            @if mine.is_empty() { p.empty { (lang.t("受領できるデータはありません。", "No release was provided to you.")) } }
            @for r in &mine {
                section.release aria-labelledby={ "r-" (r.id) } {
                    h2 id={ "r-" (r.id) } { (r.id) }
                    dl {
                        dt { (lang.t("申請", "Application")) } dd { a href={ "/applications/" (r.application) } { (r.application) } }
                        dt { (lang.t("作成日時", "Built")) } dd { (r.built_at) }
                        dt { (lang.t("利用期限", "Use until")) } dd { (r.expires_on) }
                        dt { (lang.t("状態", "Standing")) } dd { span.standing {
                            @if r.standing == "AVAILABLE" { (lang.t("利用可能", "Available")) } @else { code.reason { (r.standing) } " " (lang.t("（受領したデータを削除してください）", "(delete what you received)")) }
                        } }
                    }
                    @if !r.files.is_empty() {
                        table.list {
                            thead { tr {
                                th scope="col" { (lang.t("ファイル", "File")) }
                                th scope="col" { (lang.t("大きさ", "Size")) }
                                th scope="col" { "SHA-256" }
                                th scope="col" { span.visually-hidden { (lang.t("操作", "Action")) } }
                            } }
                            tbody {
                                @for f in &r.files {
                                    tr {
                                        td { (f.name) }
                                        td { (f.bytes) " B" }
                                        td { code.hash { (f.sha256) } }
                                        td {
                                            form method="post" action="/releases/download" {
                                                (csrf(&viewer))
                                                input type="hidden" name="release" value=(r.id);
                                                input type="hidden" name="file" value=(f.name);
                                                button type="submit" class="download" data-file=(f.name) aria-label={ (lang.t("ダウンロード：", "Download: ")) (f.name) } { (lang.t("ダウンロード", "Download")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @for app in &applications {
                section.deletion {
                    h2 { (lang.t("削除の申告", "Deletion declaration")) " — " (app) }
                    form method="post" action="/releases/deletion" {
                        (csrf(&viewer))
                        input type="hidden" name="application" value=(app);
                        div.field {
                            label for={ "statement-" (app) } { (lang.t("削除したもの・場所・方法", "What was deleted, where and how")) }
                            textarea id={ "statement-" (app) } name="statement" rows="3" required {}
                        }
                        button type="submit" class="declare" { (lang.t("削除を申告する", "Declare the deletion")) }
                    }
                }
            }
        },
    ))
}

/// A file to download.
#[derive(Deserialize)]
pub struct DownloadForm {
    release: String,
    file: String,
}

/// `POST /releases/download`: admits one download (counted), then shows it by a redirect — a reload of the page
/// shows the same link and never asks for another.
pub async fn download(State(console): State<AppState>, signed: Signed<DownloadForm>) -> Result<Response, PageError> {
    let Signed { viewer, form } = signed;
    let mut release = console.services.release_client()?;
    let granted = release
        .request_download(authed(
            viewer.token(),
            rpb::RequestDownloadRequest {
                release_id: form.release.clone(),
                file: form.file.clone(),
            },
        )?)
        .await
        .map_err(PageError::refused)?
        .into_inner();
    *viewer.session.download.lock().unwrap_or_else(|p| p.into_inner()) = Some(GrantedDownload {
        file: form.file,
        url: granted.url,
        bytes: granted.bytes,
        sha256: granted.sha256,
        expires_at: granted.expires_at,
    });
    Ok(crate::layout::see_other("/releases/download"))
}

/// `GET /releases/download`: the download last admitted, its one-time link and the hash to check.
pub async fn ready(viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let granted = viewer
        .session
        .download
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| {
            PageError::new(
                axum::http::StatusCode::NOT_FOUND,
                "NO_DOWNLOAD",
                "no download was asked for",
            )
        })?;
    let expires = chrono::DateTime::from_timestamp(granted.expires_at, 0)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_default();
    Ok(page(
        &viewer,
        ("ダウンロード", "Download"),
        html! {
            (notice(lang.t("ダウンロードが認められました（回数に数えられました）。", "The download was admitted (and counted).")))
            p { a id="download-link" href=(granted.url) download=(granted.file) { (lang.t("ファイルを保存：", "Save the file: ")) (granted.file) } }
            dl {
                dt { (lang.t("大きさ", "Size")) } dd { (granted.bytes) " B" }
                dt { "SHA-256" } dd { code.hash id="sha256" { (granted.sha256) } }
                dt { (lang.t("リンクの期限", "Link valid until")) } dd { (expires) }
            }
            p.hint { (lang.t(
                "リンクは一度だけ有効です。途中で切れた場合は、期限内ならブラウザの「再開」で続きから受信できます。保存後、SHA-256 が一致することを確認してください。",
                "The link works once. If the transfer breaks, the browser's “resume” continues it while the link is valid. Check the SHA-256 of the saved file."
            )) }
            p { a href="/releases" { (lang.t("提供データに戻る", "Back to releases")) } }
        },
    ))
}

/// A deletion declaration.
#[derive(Deserialize)]
pub struct DeletionForm {
    application: String,
    #[serde(default)]
    statement: String,
}

/// `POST /releases/deletion`.
pub async fn declare_deletion(State(console): State<AppState>, signed: Signed<DeletionForm>) -> Response {
    let Signed { viewer, form } = signed;
    if form.statement.trim().is_empty() {
        return PageError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "STATEMENT_REQUIRED",
            "say what was deleted, where and how",
        )
        .into_response();
    }
    let mut release = match console.services.release_client() {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let request = match authed(
        viewer.token(),
        rpb::DeclareDeletionRequest {
            application_id: form.application,
            statement: form.statement.trim().to_owned(),
        },
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match release.declare_deletion(request).await {
        Ok(_) => crate::layout::see_other("/releases?done=deleted"),
        Err(status) => PageError::refused(status).into_response(),
    }
}
