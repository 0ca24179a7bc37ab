//! The first page after sign-in: what waits for this person, by role.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::AppState;
use crate::extract::Viewer;
use crate::layout::page;
use crate::pages::applications::awaiting_vote;
use crate::services::PageError;

/// Home: the person's waiting work (reviews to vote, applications under review, releases), or the sign-in page.
pub async fn page_or_signin(console: &AppState, viewer: Option<Viewer>) -> Result<Response, PageError> {
    let Some(viewer) = viewer else {
        return Ok(crate::layout::see_other("/signin"));
    };
    let lang = viewer.lang;
    let apps = crate::pages::applications::all(console, &viewer).await?;
    let mine = apps.iter().filter(|a| a.applicant == viewer.session.username).count();
    let reviews = apps
        .iter()
        .filter(|a| awaiting_vote(a, &viewer.session.username))
        .count();
    let body = html! {
        section aria-labelledby="todo" {
            h2 id="todo" { (lang.t("あなたの作業", "Your work")) }
            ul.cards {
                @if viewer.has("researcher") {
                    li { a href="/applications" { (lang.t("自分の申請", "My applications")) ": " strong id="count-mine" { (mine) } } }
                    li { a href="/applications/new" { (lang.t("新しく申請する", "File a new application")) } }
                    li { a href="/releases" { (lang.t("提供されたデータ", "Data provided to me")) } }
                    li { a href="/budget" { (lang.t("プライバシー予算", "Privacy budget")) } }
                    li { a href="/statistics" { (lang.t("統計表の依頼", "Request a statistical table")) } }
                    li { a href="/workspace" { (lang.t("オンサイト解析の作業場所", "Analysis workspaces")) } }
                }
                @if viewer.has("committee_member") || viewer.has("committee_chair") {
                    li { a href="/reviews" { (lang.t("投票待ちの審査", "Reviews awaiting your vote")) ": " strong id="count-reviews" { (reviews) } } }
                }
                @if viewer.has("committee_chair") || viewer.has("operator") || viewer.has("auditor") {
                    li { a href="/applications" { (lang.t("すべての申請", "All applications")) ": " strong { (apps.len()) } } }
                }
                @if viewer.has("operator") {
                    li { a href="/operator" { (lang.t("運用（コアの状態・提供データの作成）", "Operations (core status, builds)")) } }
                    li { a href="/trace" { (lang.t("流出ファイルの追跡", "Trace a leaked file")) } }
                    li { a href="/hospitals" { (lang.t("医療機関と証明書", "Hospitals and their certificates")) } }
                }
                @if viewer.has("committee_chair") || viewer.has("auditor") || viewer.has("operator") {
                    li { a href="/violations" { (lang.t("違反と利用停止", "Violations and bans")) } }
                }
                @if (viewer.has("administrator") || viewer.has("auditor")) && !viewer.has("operator") {
                    li { a href="/hospitals" { (lang.t("医療機関と証明書", "Hospitals and their certificates")) } }
                }
                @if viewer.has("output_checker") {
                    li { a href="/outputs" { (lang.t("出力チェックの依頼", "Output requests to check")) } }
                }
                @if viewer.has("auditor") || viewer.has("operator") {
                    li { a href="/audit" { (lang.t("監査ログの検証と書き出し", "Verify and export the ledger")) } }
                }
                li { a href="/registers" { (lang.t("公表（決定・提供の記録）", "Public registers")) } }
            }
        }
    };
    Ok(page(&viewer, ("ホーム", "Home"), body).into_response())
}

/// `GET /`.
pub async fn show(State(console): State<AppState>, viewer: Option<Viewer>) -> Result<Response, PageError> {
    page_or_signin(&console, viewer).await
}
