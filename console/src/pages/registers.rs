//! The public registers (公表): the committee's decisions and what was provided to whom, readable by anyone
//! without signing in. Publishing is a privileged act — an operator asks the policy service, which authorises
//! and audits it, and the console writes the document it returned to its published directory; reading what was
//! published needs nothing. (The documents name organisations, purposes, scopes and counts — never a patient.)

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Language, Signed, Viewer};
use crate::i18n::Lang;
use crate::layout::{csrf, page, public_page};
use crate::pages::signin::Nothing;
use crate::services::{PageError, authed};

/// The registers, by the name the policy service knows them.
const REGISTERS: [(&str, &str, &str); 2] = [
    ("decisions", "承認の決定", "Decisions"),
    ("provisions", "提供の記録", "Provisions"),
];

fn title(lang: Lang, name: &str) -> Option<&'static str> {
    REGISTERS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, ja, en)| lang.t(ja, en))
}

fn published(console: &AppState, name: &str) -> Option<PathBuf> {
    console.published.as_ref().map(|dir| dir.join(format!("{name}.json")))
}

/// `GET /registers`: the registers, and for an operator the publishing buttons.
pub async fn index(Language(lang): Language, viewer: Option<Viewer>) -> Markup {
    let operator = viewer.as_ref().is_some_and(|v| v.has("operator"));
    let body = html! {
        ul {
            @for (name, ja, en) in REGISTERS {
                li { a href={ "/registers/" (name) } { (lang.t(ja, en)) } }
            }
        }
        @if operator {
            @if let Some(v) = &viewer {
                section {
                    h2 { (lang.t("公表の更新（運用担当）", "Publish (operators)")) }
                    @for (name, ja, en) in REGISTERS {
                        form method="post" action={ "/registers/" (name) } {
                            (csrf(v))
                            button type="submit" id={ "publish-" (name) } { (lang.t("公表する：", "Publish: ")) (lang.t(ja, en)) }
                        }
                    }
                }
            }
        }
    };
    framed(viewer.as_ref(), lang, body)
}

/// The page in the signed-in frame for a person signed in, the public one otherwise.
fn framed(viewer: Option<&Viewer>, lang: Lang, body: Markup) -> Markup {
    match viewer {
        Some(v) => page(v, ("公表", "Public registers"), body),
        None => public_page(lang, ("公表", "Public registers"), body),
    }
}

fn label(lang: Lang, key: &str) -> String {
    let known = match key {
        "application" => lang.t("申請番号", "Application"),
        "kind" => lang.t("種別", "Kind"),
        "amends" => lang.t("変更元", "Amends"),
        "title" => lang.t("題名", "Title"),
        "purpose" => lang.t("利用目的", "Purpose"),
        "organisation" => lang.t("組織", "Organisation"),
        "scope" => lang.t("提供範囲", "Scope"),
        "channel" => lang.t("提供方法", "Channel"),
        "status" => lang.t("状態", "Status"),
        "decided_at" => lang.t("決定日時", "Decided"),
        "expires_on" => lang.t("有効期限", "Expires"),
        "fee_yen" => lang.t("手数料（円）", "Fee (yen)"),
        "description" => lang.t("提供したもの", "What"),
        "rows" => lang.t("件数", "Rows"),
        "at" => lang.t("日時", "When"),
        "seq" => lang.t("番号", "No."),
        _ => return key.to_owned(),
    };
    known.to_owned()
}

fn cell(lang: Lang, key: &str, value: &serde_json::Value) -> String {
    let text = value.as_str().unwrap_or("");
    match key {
        "status" => return lang.status(text).to_owned(),
        "channel" => return lang.channel(text).to_owned(),
        _ => {}
    }
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `GET /registers/{name}`: the last published document, as a table.
pub async fn register(
    State(console): State<AppState>,
    Language(lang): Language,
    viewer: Option<Viewer>,
    Path(name): Path<String>,
) -> Result<Markup, PageError> {
    let heading =
        title(lang, &name).ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such register"))?;
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = match published(&console, &name) {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(&path).map_err(|_| {
                PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "REGISTER_UNREADABLE",
                    "the published register cannot be read",
                )
            })?;
            serde_json::from_str(&text).map_err(|_| {
                PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "REGISTER_UNREADABLE",
                    "the published register is not a list",
                )
            })?
        }
        _ => Vec::new(),
    };
    let keys: Vec<String> = rows.first().map(|r| r.keys().cloned().collect()).unwrap_or_default();
    let body = html! {
        h2 { (heading) }
        @if rows.is_empty() {
            p.empty id="register-empty" { (lang.t("公表されている記録はありません。", "Nothing has been published.")) }
        } @else {
            table.list id="register" {
                thead { tr { @for k in &keys { th scope="col" { (label(lang, k)) } } } }
                tbody {
                    @for r in &rows {
                        tr { @for k in &keys { td { (r.get(k).map(|v| cell(lang, k, v)).unwrap_or_default()) } } }
                    }
                }
            }
        }
    };
    Ok(framed(viewer.as_ref(), lang, body))
}

/// `POST /registers/{name}`: an operator publishes the register (the policy service authorises and audits it).
pub async fn publish(State(console): State<AppState>, Path(name): Path<String>, signed: Signed<Nothing>) -> Response {
    if title(Lang::En, &name).is_none() {
        return PageError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such register").into_response();
    }
    let Some(path) = published(&console, &name) else {
        return PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PUBLISHING_NOT_CONFIGURED",
            "this console was started without --published",
        )
        .into_response();
    };
    let request = match authed(signed.viewer.token(), pb::RegisterRef { register: name.clone() }) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let document = match console.services.policy.clone().publish_register(request).await {
        Ok(d) => d.into_inner().json,
        Err(status) => return PageError::refused(status).into_response(),
    };
    // A name of this request's own: two operators publishing at once never write one file.
    let tmp = path.with_extension(format!("json.{}.partial", crate::sessions::random_token()));
    if std::fs::write(&tmp, document)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        return PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "PUBLISH_FAILED",
            "the register could not be written",
        )
        .into_response();
    }
    crate::layout::see_other(&format!("/registers/{name}"))
}
