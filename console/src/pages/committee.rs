//! The committee's acts on an application, and the applicant's withdrawal: each a form on the application's page,
//! posted with its CSRF token and sent to the policy service, which checks the role, the assignment, conflicts of
//! interest and the quorum — the console shows a form only where it would be admitted, and the service refuses
//! what is not.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Signed, Viewer};
use crate::i18n::Lang;
use crate::layout::csrf;
use crate::pages::applications::awaiting_vote;
use crate::services::{PageError, authed};

fn open(app: &pb::Application) -> bool {
    app.status == "submitted" || app.status == "under_review"
}

/// The forms open to `viewer` on `app`.
pub fn actions(viewer: &Viewer, app: &pb::Application) -> Markup {
    let lang = viewer.lang;
    let me = viewer.session.username.as_str();
    let applicant = app.applicant == me;
    html! {
        section.actions aria-labelledby="actions-h" {
            h2 id="actions-h" { (lang.t("手続き", "Actions")) }
            @if awaiting_vote(app, me) { (vote_form(viewer, app)) (recuse_form(viewer, app)) }
            @if viewer.has("committee_chair") && open(app) { (assign_form(viewer, app)) }
            @if viewer.has("committee_chair") && app.status == "under_review" {
                form method="post" action={ "/applications/" (app.id) "/plan" } {
                    (csrf(viewer))
                    button type="submit" id="plan" class="secondary" { (lang.t("提供計画を見る（決定の前に：件数・削除・一般化）", "See the release plan (before deciding: rows, suppression, generalisation)")) }
                }
                (decide_form(viewer, app))
            }
            @if applicant && app.status == "approved" {
                p { a href={ "/applications/" (app.id) "/change" } id="change" { (lang.t("変更申出をする", "File a change request")) } }
            }
            @if applicant && open(app) {
                form method="post" action={ "/applications/" (app.id) "/withdraw" } {
                    (csrf(viewer))
                    button type="submit" id="withdraw" class="secondary" { (lang.t("申請を取り下げる", "Withdraw the application")) }
                }
            }
        }
    }
}

fn vote_form(viewer: &Viewer, app: &pb::Application) -> Markup {
    let lang = viewer.lang;
    html! {
        form method="post" action={ "/applications/" (app.id) "/vote" } id="vote-form" {
            (csrf(viewer))
            fieldset {
                legend { (lang.t("投票", "Vote")) }
                div.check {
                    input type="radio" id="vote-approve" name="decision" value="approve" required;
                    label for="vote-approve" { (lang.t("承認に賛成", "In favour of approval")) }
                }
                div.check {
                    input type="radio" id="vote-refuse" name="decision" value="refuse";
                    label for="vote-refuse" { (lang.t("承認に反対", "Against approval")) }
                }
                div.field {
                    label for="vote-comment" { (lang.t("コメント", "Comment")) }
                    textarea id="vote-comment" name="comment" rows="3" required {}
                }
                button type="submit" id="vote" { (lang.t("投票する", "Cast the vote")) }
            }
        }
    }
}

fn recuse_form(viewer: &Viewer, app: &pb::Application) -> Markup {
    let lang = viewer.lang;
    html! {
        form method="post" action={ "/applications/" (app.id) "/recuse" } {
            (csrf(viewer))
            fieldset {
                legend { (lang.t("審査の回避（利益相反）", "Recuse (conflict of interest)")) }
                div.field {
                    label for="recuse-reason" { (lang.t("理由", "Reason")) }
                    input type="text" id="recuse-reason" name="reason" required;
                }
                button type="submit" id="recuse" class="secondary" { (lang.t("回避する", "Recuse")) }
            }
        }
    }
}

fn assign_form(viewer: &Viewer, app: &pb::Application) -> Markup {
    let lang = viewer.lang;
    let current: Vec<&str> = app.reviewers.iter().map(|r| r.member.as_str()).collect();
    html! {
        form method="post" action={ "/applications/" (app.id) "/assign" } {
            (csrf(viewer))
            fieldset {
                legend { (lang.t("審査委員の割当（委員長）", "Assign reviewers (chair)")) }
                div.field {
                    label for="members" { (lang.t("委員のユーザー名（カンマ区切り）", "Members' usernames (comma-separated)")) }
                    input type="text" id="members" name="members" value=(current.join(", ")) required;
                }
                button type="submit" id="assign" { (lang.t("割り当てる", "Assign")) }
            }
        }
    }
}

fn decide_form(viewer: &Viewer, app: &pb::Application) -> Markup {
    let lang = viewer.lang;
    let f = app.form.clone().unwrap_or_default();
    let tables = f
        .tables
        .iter()
        .map(|t| format!("{}: {}", t.table, t.columns.join(", ")))
        .collect::<Vec<_>>()
        .join("\n");
    let input = |id: &'static str, label: &'static str, value: String| {
        html! { div.field { label for=(id) { (label) } input type="text" id=(id) name=(id) value=(value); } }
    };
    html! {
        form method="post" action={ "/applications/" (app.id) "/decide" } id="decide-form" {
            (csrf(viewer))
            fieldset {
                legend { (lang.t("決定と承認の条件（委員長）", "Decision and conditions (chair)")) }
                p.hint { (lang.t("決定は投票の結果に従います。承認の場合、以下の条件が付されます。", "The decision follows the votes; an approval carries these conditions.")) }
                div.field {
                    label for="d-channel" { (lang.t("提供方法", "Channel")) }
                    select id="d-channel" name="channel" {
                        @for c in ["file", "statistics", "on_platform"] { option value=(c) selected[f.channel == c] { (lang.channel(c)) } }
                    }
                }
                (input("expires_on", lang.t("有効期限（YYYY-MM-DD）", "Expires on (YYYY-MM-DD)"), f.period_to.clone()))
                (input("max_downloads", lang.t("ダウンロード上限", "Download limit"), "3".into()))
                (input("d-recipients", lang.t("受領者（カンマ区切り）", "Recipients (comma-separated)"), f.recipients.join(", ")))
                div.field {
                    label for="d-tables" { (lang.t("提供するデータ（1行に「テーブル: 列, 列」）", "Data provided (“table: column, column” per line)")) }
                    textarea id="d-tables" name="tables" rows="4" { (tables) }
                }
                (input("k", "k", "5".into()))
                (input("m", "m", "2".into()))
                (input("max_suppression", lang.t("削除上限（0〜1）", "Suppression limit (0–1)"), "0.05".into()))
                (input("epsilon", lang.t("プライバシー予算 ε（統計表）", "Privacy budget ε (statistics)"), String::new()))
                (input("delta", lang.t("δ（統計表）", "δ (statistics)"), String::new()))
                div.check {
                    input type="checkbox" id="pseudonymised" name="pseudonymised";
                    label for="pseudonymised" { (lang.t("仮名加工情報で提供（オンサイト・認定利活用者のみ）", "Pseudonymised (on-platform, certified users only)")) }
                }
                button type="submit" id="decide" { (lang.t("決定する", "Decide")) }
            }
        }
    }
}

async fn acted(
    console: &AppState,
    viewer: &Viewer,
    id: &str,
    done: &str,
    call: impl AsyncFnOnce(
        tokumei_proto::policy::v1::policy_service_client::PolicyServiceClient<tonic::transport::Channel>,
        &str,
    ) -> Result<(), tonic::Status>,
) -> Response {
    match call(console.services.policy.clone(), viewer.token()).await {
        Ok(()) => crate::layout::see_other(&format!("/applications/{id}?done={done}")),
        Err(status) => PageError::refused(status).into_response(),
    }
}

fn request<T>(token: &str, message: T) -> Result<tonic::Request<T>, tonic::Status> {
    authed(token, message).map_err(|e| tonic::Status::unauthenticated(e.message))
}

/// A vote.
#[derive(Deserialize)]
pub struct VoteForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
}

/// `POST /applications/{id}/vote`.
pub async fn vote(State(console): State<AppState>, Path(id): Path<String>, signed: Signed<VoteForm>) -> Response {
    let Signed { viewer, form } = signed;
    if !["approve", "refuse"].contains(&form.decision.as_str()) || form.comment.trim().is_empty() {
        return PageError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "VOTE_INCOMPLETE",
            "choose in favour or against and write a comment",
        )
        .into_response();
    }
    let message = pb::CastVoteRequest {
        id: id.clone(),
        in_favour: form.decision == "approve",
        comment: form.comment.trim().to_owned(),
    };
    acted(&console, &viewer, &id, "voted", async |mut c, t| {
        c.cast_vote(request(t, message)?).await.map(|_| ())
    })
    .await
}

/// A recusal.
#[derive(Deserialize)]
pub struct RecuseForm {
    #[serde(default)]
    reason: String,
}

/// `POST /applications/{id}/recuse`.
pub async fn recuse(State(console): State<AppState>, Path(id): Path<String>, signed: Signed<RecuseForm>) -> Response {
    let Signed { viewer, form } = signed;
    let message = pb::RecuseRequest {
        id: id.clone(),
        reason: form.reason.trim().to_owned(),
    };
    acted(&console, &viewer, &id, "recused", async |mut c, t| {
        c.recuse(request(t, message)?).await.map(|_| ())
    })
    .await
}

/// An assignment.
#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    members: String,
}

/// `POST /applications/{id}/assign`.
pub async fn assign(State(console): State<AppState>, Path(id): Path<String>, signed: Signed<AssignForm>) -> Response {
    let Signed { viewer, form } = signed;
    let message = pb::AssignReviewersRequest {
        id: id.clone(),
        members: split_list(&form.members),
    };
    acted(&console, &viewer, &id, "assigned", async |mut c, t| {
        c.assign_reviewers(request(t, message)?).await.map(|_| ())
    })
    .await
}

/// `POST /applications/{id}/withdraw`.
pub async fn withdraw(
    State(console): State<AppState>,
    Path(id): Path<String>,
    signed: Signed<crate::pages::signin::Nothing>,
) -> Response {
    let message = pb::ApplicationRef { id: id.clone() };
    acted(&console, &signed.viewer, &id, "withdrawn", async |mut c, t| {
        c.withdraw_application(request(t, message)?).await.map(|_| ())
    })
    .await
}

/// The chair's decision form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DecideForm {
    channel: String,
    expires_on: String,
    max_downloads: String,
    #[serde(rename = "d-recipients")]
    recipients: String,
    tables: String,
    k: String,
    m: String,
    max_suppression: String,
    epsilon: String,
    delta: String,
    pseudonymised: String,
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

impl DecideForm {
    /// The conditions, or which field is wrong.
    fn conditions(&self, lang: Lang) -> Result<pb::ApprovalConditions, String> {
        let number = |name: &str, value: &str| -> Result<f64, String> {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{}: {name}", lang.t("数値ではありません", "not a number")))
        };
        let whole = |name: &str, value: &str| -> Result<u32, String> {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("{}: {name}", lang.t("整数ではありません", "not a whole number")))
        };
        let tables = self
            .tables
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (t, cols) = l
                    .split_once(':')
                    .ok_or_else(|| format!("{}: tables", lang.t("形式が違います", "wrong form")))?;
                Ok(pb::TableColumns {
                    table: t.trim().to_owned(),
                    columns: split_list(cols),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dp_budget = if self.epsilon.trim().is_empty() {
            None
        } else {
            Some(pb::DpBudget {
                epsilon: number("epsilon", &self.epsilon)?,
                delta: if self.delta.trim().is_empty() {
                    0.0
                } else {
                    number("delta", &self.delta)?
                },
            })
        };
        let privacy = if self.channel == "statistics" {
            None
        } else {
            Some(pb::PrivacyModel {
                k: whole("k", &self.k)?,
                m: Some(whole("m", &self.m)?),
                max_suppression: number("max_suppression", &self.max_suppression)?,
                ..Default::default()
            })
        };
        Ok(pb::ApprovalConditions {
            tables,
            privacy,
            dp_budget,
            channel: self.channel.clone(),
            expires_on: self.expires_on.trim().to_owned(),
            max_downloads: whole("max_downloads", &self.max_downloads)?,
            recipients: split_list(&self.recipients),
            pseudonymised: self.pseudonymised == "on",
            ..Default::default()
        })
    }
}

/// `POST /applications/{id}/decide`.
pub async fn decide(State(console): State<AppState>, Path(id): Path<String>, signed: Signed<DecideForm>) -> Response {
    let Signed { viewer, form } = signed;
    let conditions = match form.conditions(viewer.lang) {
        Ok(c) => c,
        Err(problem) => {
            return PageError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "CONDITIONS_INVALID",
                &problem,
            )
            .into_response();
        }
    };
    let message = pb::DecideRequest {
        id: id.clone(),
        conditions: Some(conditions),
    };
    acted(&console, &viewer, &id, "decided", async |mut c, t| {
        c.decide(request(t, message)?).await.map(|_| ())
    })
    .await
}
