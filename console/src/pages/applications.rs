//! Applications as each person may see them (the policy service decides which): the list, the reviews waiting for
//! a member's vote, and one application in full — its form, the committee's conditions, the review with its
//! quorum and conflicts of interest, and the acts open to the person looking at it.

use axum::extract::{Path, State};
use maud::{Markup, html};
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Notice, Viewer};
use crate::i18n::Lang;
use crate::layout::{notice, page, row};
use crate::pages::committee;
use crate::services::{PageError, authed};

/// Whether `member` is assigned to `app`, has neither voted nor recused, and the review is open.
pub fn awaiting_vote(app: &pb::Application, member: &str) -> bool {
    app.status == "under_review"
        && app.reviewers.iter().any(|r| r.member == member && !r.recused)
        && !app.votes.iter().any(|v| v.member == member)
}

/// Every application the service shows to `viewer`.
pub async fn all(console: &AppState, viewer: &Viewer) -> Result<Vec<pb::Application>, PageError> {
    Ok(console
        .services
        .policy
        .clone()
        .list_applications(authed(viewer.token(), pb::Empty {})?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .applications)
}

/// The application `id`, as the service shows it to `viewer`.
pub async fn one(console: &AppState, viewer: &Viewer, id: &str) -> Result<pb::Application, PageError> {
    Ok(console
        .services
        .policy
        .clone()
        .get_application(authed(viewer.token(), pb::ApplicationRef { id: id.to_owned() })?)
        .await
        .map_err(PageError::refused)?
        .into_inner())
}

fn table(lang: Lang, apps: &[&pb::Application], empty: &str) -> Markup {
    html! {
        @if apps.is_empty() {
            p.empty { (empty) }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { (lang.t("申請番号", "Application")) }
                    th scope="col" { (lang.t("題名", "Title")) }
                    th scope="col" { (lang.t("申請者", "Applicant")) }
                    th scope="col" { (lang.t("提供方法", "Channel")) }
                    th scope="col" { (lang.t("状態", "Status")) }
                    th scope="col" { (lang.t("受付日時", "Filed")) }
                } }
                tbody {
                    @for a in apps {
                        @let form = a.form.clone().unwrap_or_default();
                        tr {
                            td { a href={ "/applications/" (a.id) } { (a.id) } }
                            td { (form.title) }
                            td { (a.applicant) " (" (a.organisation) ")" }
                            td { (lang.channel(&form.channel)) }
                            td { span class={ "status " (a.status) } { (lang.status(&a.status)) } }
                            td { (a.filed_at) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /applications`: every application the person may see.
pub async fn list(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let apps = all(&console, &viewer).await?;
    let refs: Vec<&pb::Application> = apps.iter().collect();
    Ok(page(
        &viewer,
        ("申請", "Applications"),
        table(lang, &refs, lang.t("申請はありません。", "No applications.")),
    ))
}

/// `GET /reviews`: the applications waiting for the member's vote.
pub async fn reviews(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let apps = all(&console, &viewer).await?;
    let me = viewer.session.username.clone();
    let waiting: Vec<&pb::Application> = apps.iter().filter(|a| awaiting_vote(a, &me)).collect();
    let chair: Vec<&pb::Application> = if viewer.has("committee_chair") {
        apps.iter()
            .filter(|a| a.status == "submitted" || (a.status == "under_review" && !awaiting_vote(a, &me)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(page(
        &viewer,
        ("担当審査", "My reviews"),
        html! {
            h2 { (lang.t("投票待ち", "Awaiting your vote")) }
            (table(lang, &waiting, lang.t("投票待ちの審査はありません。", "No review awaits your vote.")))
            @if viewer.has("committee_chair") {
                h2 { (lang.t("委員長：割当・決定待ち", "Chair: to assign or decide")) }
                (table(lang, &chair, lang.t("ありません。", "None.")))
            }
        },
    ))
}

fn done_notice(lang: Lang, done: &str) -> Option<Markup> {
    let text = match done {
        "filed" => lang.t("申請を受け付けました。", "Your application was filed."),
        "voted" => lang.t("投票を記録しました。", "Your vote was recorded."),
        "recused" => lang.t("審査を回避しました。", "You recused yourself."),
        "assigned" => lang.t("審査委員を割り当てました。", "Reviewers were assigned."),
        "decided" => lang.t("決定を記録しました。", "The decision was recorded."),
        "withdrawn" => lang.t("申請を取り下げました。", "The application was withdrawn."),
        _ => return None,
    };
    Some(notice(text))
}

/// `GET /applications/{id}`.
pub async fn detail(
    State(console): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Notice(done): Notice,
) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let app = one(&console, &viewer, &id).await?;
    let form = app.form.clone().unwrap_or_default();
    let body = html! {
        @if let Some(n) = done_notice(lang, &done) { (n) }
        (summary(lang, &viewer, &app))
        (form_section(lang, &form))
        @if let Some(c) = &app.conditions { (conditions(lang, c)) }
        (review(lang, &viewer, &app))
        (committee::actions(&viewer, &app))
    };
    Ok(page(&viewer, ("申請の詳細", "Application"), body))
}

fn summary(lang: Lang, viewer: &Viewer, app: &pb::Application) -> Markup {
    let committee = viewer.has("committee_member") || viewer.has("committee_chair");
    let conflict = committee && viewer.session.organisation == app.organisation;
    html! {
        @if conflict {
            div.conflict role="alert" id="conflict" {
                strong { (lang.t("利益相反の可能性", "Possible conflict of interest")) }
                " — "
                (lang.t("申請者はあなたと同じ組織に属しています。審査を回避してください。",
                        "The applicant belongs to your organisation. Please recuse yourself."))
            }
        }
        dl.summary {
            (row(lang.t("申請番号", "Application"), html! { span id="app-id" { (app.id) } }))
            (row(lang.t("状態", "Status"), html! { span id="status" class={ "status " (app.status) } { (lang.status(&app.status)) } }))
            (row(lang.t("種別", "Kind"), app.kind.as_str()))
            @if !app.amends.is_empty() {
                (row(lang.t("変更元の申請", "Amends"), html! { a href={ "/applications/" (app.amends) } { (app.amends) } }))
            }
            (row(lang.t("申請者", "Applicant"), app.applicant.as_str()))
            (row(lang.t("所属組織", "Organisation"), html! {
                @if conflict { mark { (app.organisation) } } @else { (app.organisation) }
            }))
            (row(lang.t("受付日時", "Filed"), app.filed_at.as_str()))
            @if !app.decided_at.is_empty() { (row(lang.t("決定日時", "Decided"), app.decided_at.as_str())) }
            (row(lang.t("ダウンロード回数", "Downloads used"), app.downloads_used))
            @if let Some(fee) = &app.fee { (row(lang.t("手数料（見込み）", "Fee (estimate)"), format!("{} 円", fee.total_yen))) }
        }
    }
}

fn tables_list(tables: &[pb::TableColumns]) -> Markup {
    html! {
        ul.tables {
            @for t in tables {
                li { code { (t.table) } ": " (t.columns.join(", ")) }
            }
        }
    }
}

fn form_section(lang: Lang, f: &pb::ApplicationForm) -> Markup {
    html! {
        section aria-labelledby="form-h" {
            h2 id="form-h" { (lang.t("申出の内容", "The application")) }
            dl {
                (row(lang.t("題名", "Title"), html! { span id="title" { (f.title) } }))
                (row(lang.t("利用目的", "Purpose"), f.purpose.as_str()))
                (row(lang.t("公益性", "Public interest"), f.public_interest.as_str()))
                (row(lang.t("方法", "Methods"), f.methods.as_str()))
                (row(lang.t("提供方法", "Channel"), lang.channel(&f.channel)))
                (row(lang.t("利用期間", "Period"), format!("{} – {}", f.period_from, f.period_to)))
                (row(lang.t("安全管理措置", "Security measures"), f.security_measures.as_str()))
                (row(lang.t("資金", "Funding"), f.funding.as_str()))
                (row(lang.t("受領者", "Recipients"), f.recipients.join(", ")))
                (row(lang.t("求めるデータ", "Data asked for"), tables_list(&f.tables)))
                @if !f.cohort_filter.is_empty() { (row(lang.t("対象集団の条件", "Cohort"), html! { code { (f.cohort_filter) } })) }
                @if let Some(e) = f.requested_epsilon { (row(lang.t("求めるプライバシー予算 ε", "Requested ε"), e)) }
                @for s in &f.studies { (row(lang.t("研究", "Study"), format!("{} — {}", s.title, s.methods))) }
                (row(lang.t("広告目的でない", "Not for advertising"), if f.not_for_advertising { lang.t("はい", "Yes") } else { lang.t("いいえ", "No") }))
            }
        }
    }
}

fn conditions(lang: Lang, c: &pb::ApprovalConditions) -> Markup {
    html! {
        section aria-labelledby="cond-h" {
            h2 id="cond-h" { (lang.t("承認の条件", "Conditions of approval")) }
            dl id="conditions" {
                (row(lang.t("提供方法", "Channel"), lang.channel(&c.channel)))
                (row(lang.t("有効期限", "Expires on"), c.expires_on.as_str()))
                (row(lang.t("ダウンロード上限", "Download limit"), c.max_downloads))
                (row(lang.t("受領者", "Recipients"), c.recipients.join(", ")))
                (row(lang.t("提供するデータ", "Data provided"), tables_list(&c.tables)))
                @if let Some(p) = &c.privacy {
                    (row(lang.t("匿名化の基準", "Privacy model"), format!("k = {}, m = {}, {} {:.0} %", p.k, p.m.unwrap_or(2), lang.t("削除上限", "suppression ≤"), p.max_suppression * 100.0)))
                }
                @if let Some(b) = &c.dp_budget { (row(lang.t("プライバシー予算", "Privacy budget"), format!("ε = {}, δ = {}", b.epsilon, b.delta))) }
                @if c.pseudonymised { (row(lang.t("仮名加工情報", "Pseudonymised"), lang.t("はい（認定利活用者のみ）", "Yes (certified users only)"))) }
            }
        }
    }
}

fn review(lang: Lang, viewer: &Viewer, app: &pb::Application) -> Markup {
    if app.reviewers.is_empty() && app.votes.is_empty() {
        return html! {};
    }
    let voting = app.reviewers.iter().filter(|r| !r.recused).count();
    let favour = app.votes.iter().filter(|v| v.in_favour).count();
    let against = app.votes.len() - favour;
    html! {
        section aria-labelledby="review-h" {
            h2 id="review-h" { (lang.t("審査", "Review")) }
            p id="quorum" {
                (lang.t("賛成", "In favour")) " " strong { (favour) } "・"
                (lang.t("反対", "Against")) " " strong { (against) } "・"
                (lang.t("未投票", "Not yet voted")) " " strong { (voting.saturating_sub(app.votes.len())) }
                " / " (lang.t("投票する委員", "voting members")) " " (voting)
                @if let Some(q) = &app.quorum {
                    " (" (lang.t("定足数：", "quorum: at least ")) (q.min_voting) (lang.t("名以上、賛成", " members, in favour at least "))
                    (q.approve_numerator) "/" (q.approve_denominator) (lang.t("以上", "")) ")"
                }
            }
            table.list {
                thead { tr {
                    th scope="col" { (lang.t("委員", "Member")) }
                    th scope="col" { (lang.t("投票", "Vote")) }
                    th scope="col" { (lang.t("コメント", "Comment")) }
                } }
                tbody {
                    @for r in &app.reviewers {
                        @let vote = app.votes.iter().find(|v| v.member == r.member);
                        tr class=[(r.member == viewer.session.username).then_some("me")] {
                            td { (r.member) }
                            td {
                                @if r.recused { (lang.t("回避", "Recused")) }
                                @else if let Some(v) = vote { @if v.in_favour { (lang.t("賛成", "In favour")) } @else { (lang.t("反対", "Against")) } }
                                @else { (lang.t("未投票", "Not yet")) }
                            }
                            td {
                                @if r.recused { (r.recusal_reason) }
                                @else if let Some(v) = vote { (v.comment) }
                            }
                        }
                    }
                }
            }
        }
    }
}
