//! Violations and bans (違反と利用停止): the chair records a violation — a person or an organisation, what they
//! did, until when they are barred from applying — so that the committee's decision is in the ledger and every
//! later application of theirs is refused; the platform's bans in force leave as a list signed by the policy
//! service, and the lists other platforms published come in under the key the operator trusts for them. Each act
//! is a call to the policy service, which checks the role and audits it; the console checks the fields first so
//! that a problem is shown beside its field, and never repeats in a message what was typed.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Notice, Signed, Viewer};
use crate::fields::{Problems, area_named, described, field, invalid, text_named};
use crate::i18n::Lang;
use crate::layout::{csrf, notice, page};
use crate::pages::signin::Nothing;
use crate::services::{PageError, authed};

// Which forms to show, as the policy service's role table has it today (the service decides; these only spare
// people forms that would be refused).
/// Who records violations.
const RECORDERS: &[&str] = &["committee_chair"];
/// Who exports the signed list.
const EXPORTERS: &[&str] = &["operator", "auditor"];
/// Who imports another platform's list.
const IMPORTERS: &[&str] = &["operator"];

/// The kinds of subject a ban names, by the service's names.
const SUBJECT_KINDS: [&str; 2] = ["person", "organisation"];

fn holds(viewer: &Viewer, roles: &[&str]) -> bool {
    roles.iter().any(|r| viewer.has(r))
}

fn date(text: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// A violation as typed (all text, so that what was typed comes back when something is wrong).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecordForm {
    subject_kind: String,
    subject: String,
    kind: String,
    description: String,
    application: String,
    banned_until: String,
}

impl RecordForm {
    /// The service's request, or each field's problem (in the page's language, naming the rule, not the value).
    fn check(&self, lang: Lang) -> Result<pb::RecordViolationRequest, Problems> {
        let mut p = Problems::new();
        let required = lang.t("入力してください。", "Required.");
        if !SUBJECT_KINDS.contains(&self.subject_kind.as_str()) {
            p.insert(
                "violation-subject-kind",
                lang.t("個人か組織かを選んでください。", "Choose a person or an organisation."),
            );
        }
        for (id, value) in [
            ("violation-subject", &self.subject),
            ("violation-kind", &self.kind),
            ("violation-description", &self.description),
        ] {
            if value.trim().is_empty() {
                p.insert(id, required);
            }
        }
        let until = match self.banned_until.trim() {
            "" => Some(String::new()),
            text => date(text).map(|d| d.to_string()),
        };
        if until.is_none() {
            p.insert(
                "violation-until",
                lang.t(
                    "日付を YYYY-MM-DD で入力してください（無期限なら空欄）。",
                    "A date as YYYY-MM-DD (empty: indefinite).",
                ),
            );
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(pb::RecordViolationRequest {
            subject_kind: self.subject_kind.clone(),
            subject: self.subject.trim().to_owned(),
            kind: self.kind.trim().to_owned(),
            description: self.description.trim().to_owned(),
            application: self.application.trim().to_owned(),
            banned_until: until.unwrap_or_default(),
        })
    }
}

/// Another platform's signed ban list, and the key its issuer is trusted under.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImportForm {
    json: String,
    trusted_key: String,
}

impl ImportForm {
    /// The service's request, or each field's problem.
    fn check(&self, lang: Lang) -> Result<pb::ImportBansRequest, Problems> {
        let mut p = Problems::new();
        let is_object = serde_json::from_str::<serde_json::Value>(&self.json).is_ok_and(|v| v.is_object());
        if !is_object {
            p.insert(
                "bans-json",
                lang.t(
                    "公開された署名付き処分リスト（JSON）をそのまま貼り付けてください。",
                    "Paste the signed ban list (JSON) exactly as it was published.",
                ),
            );
        }
        let key = self.trusted_key.trim().to_ascii_lowercase();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.insert(
                "bans-trusted-key",
                lang.t(
                    "公開鍵は16進数64桁で入力してください。",
                    "The public key is 64 hexadecimal digits.",
                ),
            );
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(pb::ImportBansRequest {
            json: self.json.clone(),
            trusted_key: key,
        })
    }
}

/// What the page shows besides the list: the forms as typed, their problems, a refusal, a notice.
#[derive(Default)]
struct Draft {
    record: RecordForm,
    import: ImportForm,
    problems: Problems,
    refusal: Option<PageError>,
    done: String,
}

fn subject_kind(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "person" => lang.t("個人", "Person"),
        "organisation" => lang.t("組織", "Organisation"),
        _ => lang.t("不明", "Unknown"),
    }
}

fn table(lang: Lang, violations: &[pb::Violation]) -> Markup {
    html! {
        @if violations.is_empty() {
            p.empty { (lang.t("記録された違反はありません。", "No violations recorded.")) }
        } @else {
            table.list id="violations" {
                thead { tr {
                    th scope="col" { (lang.t("番号", "No.")) }
                    th scope="col" { (lang.t("対象の種別", "Subject kind")) }
                    th scope="col" { (lang.t("対象", "Subject")) }
                    th scope="col" { (lang.t("違反の種類", "Kind")) }
                    th scope="col" { (lang.t("内容", "Description")) }
                    th scope="col" { (lang.t("利用停止の期限", "Banned until")) }
                    th scope="col" { (lang.t("記録日時", "Recorded at")) }
                    th scope="col" { (lang.t("出所", "Source")) }
                } }
                tbody {
                    @for v in violations {
                        tr {
                            td { (v.id) }
                            td { (subject_kind(lang, &v.subject_kind)) }
                            td { (v.subject) }
                            td { code { (v.kind) } }
                            td { (v.description) }
                            td {
                                @if v.banned_until.is_empty() { (lang.t("無期限", "Indefinite")) }
                                @else { (v.banned_until) }
                            }
                            td { (v.recorded_at) }
                            td {
                                @if v.source == "local" { (lang.t("この基盤", "This platform")) }
                                @else { (lang.t("取込み：", "Imported: ")) code.hash { (v.source) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn record_form(viewer: &Viewer, v: &RecordForm, problems: &Problems) -> Markup {
    let lang = viewer.lang;
    html! {
        section aria-labelledby="record-h" {
            h2 id="record-h" { (lang.t("違反の記録（委員長）", "Record a violation (chair)")) }
            form method="post" action="/violations" novalidate {
                (csrf(viewer))
                (field("violation-subject-kind", lang.t("対象の種別", "Subject kind"), None, problems, html! {
                    select id="violation-subject-kind" name="subject_kind"
                        aria-invalid=[invalid("violation-subject-kind", problems)]
                        aria-describedby=[described("violation-subject-kind", false, problems)] {
                        option value="" { (lang.t("選択してください", "Choose")) }
                        @for k in SUBJECT_KINDS { option value=(k) selected[v.subject_kind == k] { (subject_kind(lang, k)) } }
                    }
                }))
                (field("violation-subject", lang.t("対象（ユーザー名または組織ID）", "Subject (username or organisation id)"), None, problems,
                    text_named("violation-subject", "subject", &v.subject, problems, false)))
                (field("violation-kind", lang.t("違反の種類", "Kind of violation"),
                    Some(lang.t("例：re_identification_attempt、leak、use_beyond_approval", "e.g. re_identification_attempt, leak, use_beyond_approval")),
                    problems, text_named("violation-kind", "kind", &v.kind, problems, true)))
                (field("violation-description", lang.t("内容", "Description"), None, problems,
                    area_named("violation-description", "description", &v.description, problems, false, 4)))
                (field("violation-application", lang.t("関係する申請の番号（任意）", "Application concerned (optional)"), None, problems,
                    text_named("violation-application", "application", &v.application, problems, false)))
                (field("violation-until", lang.t("利用停止の期限（任意）", "Banned until (optional)"),
                    Some(lang.t("YYYY-MM-DD（この日まで。空欄は無期限）", "YYYY-MM-DD, inclusive (empty: indefinite)")),
                    problems, text_named("violation-until", "banned_until", &v.banned_until, problems, true)))
                button type="submit" id="record-violation" { (lang.t("違反を記録する", "Record the violation")) }
            }
        }
    }
}

fn ban_forms(viewer: &Viewer, v: &ImportForm, problems: &Problems) -> Markup {
    let lang = viewer.lang;
    html! {
        @if holds(viewer, EXPORTERS) {
            section aria-labelledby="export-h" {
                h2 id="export-h" { (lang.t("利用停止リストの書き出し", "Export the ban list")) }
                p.hint { (lang.t("この基盤で有効な利用停止を、ポリシーサービスの署名付きで他の基盤に渡すファイルです。", "This platform's bans in force, signed by the policy service, as a file for other platforms.")) }
                form method="post" action="/violations/bans/export" {
                    (csrf(viewer))
                    button type="submit" id="export-bans" { (lang.t("書き出す", "Export")) }
                }
            }
        }
        @if holds(viewer, IMPORTERS) {
            section aria-labelledby="import-h" {
                h2 id="import-h" { (lang.t("他の基盤の利用停止リストの取込み", "Import another platform's ban list")) }
                form method="post" action="/violations/bans/import" novalidate {
                    (csrf(viewer))
                    (field("bans-json", lang.t("署名付き利用停止リスト（JSON）", "Signed ban list (JSON)"),
                        Some(lang.t("相手の基盤が公開したファイルの内容をそのまま貼り付けます。", "The content of the file the other platform published, as it is.")),
                        problems, area_named("bans-json", "json", &v.json, problems, true, 8)))
                    (field("bans-trusted-key", lang.t("信頼する発行者の公開鍵", "The issuer's trusted public key"),
                        Some(lang.t("16進数64桁。相手の基盤から別の経路で受け取った鍵です。", "64 hexadecimal digits, received from the other platform by another channel.")),
                        problems, text_named("bans-trusted-key", "trusted_key", &v.trusted_key, problems, true)))
                    button type="submit" id="import-bans" { (lang.t("取り込む", "Import")) }
                }
            }
        }
    }
}

/// The page: the notice or the problems, the list where the service shows it, the forms the viewer's roles open.
async fn render(console: &AppState, viewer: &Viewer, draft: &Draft) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    // Everyone is asked: a person with no business here sees the service's own refusal.
    let violations = console
        .services
        .policy
        .clone()
        .list_violations(authed(viewer.token(), pb::Empty {})?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .violations;
    Ok(page(
        viewer,
        ("違反と利用停止", "Violations and bans"),
        html! {
            @if draft.done == "recorded" { (notice(lang.t("違反を記録しました。", "The violation was recorded."))) }
            @if let Some(e) = &draft.refusal {
                div.error role="alert" id="refusal" { p { strong.reason { (e.reason) } " " (e.message) } }
            }
            @if !draft.problems.is_empty() {
                div.error role="alert" id="problems" {
                    p { (lang.t("入力内容を確認してください：", "Please check the fields:")) " " (draft.problems.len()) }
                }
            }
            (table(lang, &violations))
            @if holds(viewer, RECORDERS) { (record_form(viewer, &draft.record, &draft.problems)) }
            (ban_forms(viewer, &draft.import, &draft.problems))
        },
    ))
}

/// The page again after a POST, with `status` (what was typed kept, and its problems or the refusal).
async fn again(console: &AppState, viewer: &Viewer, draft: Draft, status: StatusCode) -> Response {
    match render(console, viewer, &draft).await {
        Ok(markup) => (status, markup).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /violations`: the list and the forms.
pub async fn list(State(console): State<AppState>, viewer: Viewer, Notice(done): Notice) -> Result<Markup, PageError> {
    let draft = Draft {
        done,
        ..Draft::default()
    };
    render(&console, &viewer, &draft).await
}

/// `POST /violations`: checks the fields, records through the policy service.
pub async fn record(State(console): State<AppState>, signed: Signed<RecordForm>) -> Response {
    let Signed { viewer, form } = signed;
    let message = match form.check(viewer.lang) {
        Ok(m) => m,
        Err(problems) => {
            let draft = Draft {
                record: form,
                problems,
                ..Draft::default()
            };
            return again(&console, &viewer, draft, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let request = match authed(viewer.token(), message) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().record_violation(request).await {
        Ok(_) => crate::layout::see_other("/violations?done=recorded"),
        Err(status) => {
            let e = PageError::refused(status);
            let code = e.status;
            let draft = Draft {
                record: form,
                refusal: Some(e),
                ..Draft::default()
            };
            again(&console, &viewer, draft, code).await
        }
    }
}

/// `POST /violations/bans/export`: the signed list of this platform's bans in force, as a file.
pub async fn export(State(console): State<AppState>, signed: Signed<Nothing>) -> Response {
    let request = match authed(signed.viewer.token(), pb::Empty {}) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().export_bans(request).await {
        // The service's text as it is: the signature was made over the list it serialised.
        Ok(list) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"tokumei-bans.json\"",
                ),
            ],
            list.into_inner().json,
        )
            .into_response(),
        Err(status) => PageError::refused(status).into_response(),
    }
}

/// `POST /violations/bans/import`: another platform's signed list, taken under the key the operator trusts.
pub async fn import(State(console): State<AppState>, signed: Signed<ImportForm>) -> Response {
    let Signed { viewer, form } = signed;
    let lang = viewer.lang;
    let message = match form.check(lang) {
        Ok(m) => m,
        Err(problems) => {
            let draft = Draft {
                import: form,
                problems,
                ..Draft::default()
            };
            return again(&console, &viewer, draft, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let request = match authed(viewer.token(), message) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().import_bans(request).await {
        Ok(r) => page(
            &viewer,
            ("利用停止リストの取込み", "Ban list imported"),
            html! {
                p.notice role="status" id="imported" {
                    (lang.t("新たに取り込んだ利用停止：", "New bans imported: ")) (r.into_inner().imported)
                }
                p { a href="/violations" { (lang.t("違反と利用停止に戻る", "Back to violations and bans")) } }
            },
        )
        .into_response(),
        Err(status) => {
            let e = PageError::refused(status);
            let code = e.status;
            let draft = Draft {
                import: form,
                refusal: Some(e),
                ..Draft::default()
            };
            again(&console, &viewer, draft, code).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> RecordForm {
        RecordForm {
            subject_kind: "person".into(),
            subject: " rika ".into(),
            kind: "leak".into(),
            description: "shared the file".into(),
            banned_until: " 2028-03-31 ".into(),
            ..RecordForm::default()
        }
    }

    #[test]
    fn a_complete_violation_becomes_the_request() {
        let r = good().check(Lang::En).expect("valid");
        assert_eq!(r.subject, "rika");
        assert_eq!(r.banned_until, "2028-03-31");
        assert_eq!(r.application, "");
    }

    #[test]
    fn an_empty_date_is_indefinite() {
        let mut f = good();
        f.banned_until = "  ".into();
        assert_eq!(f.check(Lang::Ja).expect("valid").banned_until, "");
    }

    #[test]
    fn each_problem_names_its_field_and_never_the_value() {
        let f = RecordForm {
            subject_kind: "robot".into(),
            banned_until: "next-year-secret".into(),
            ..RecordForm::default()
        };
        let p = f.check(Lang::En).expect_err("invalid");
        let ids: Vec<&str> = p.keys().copied().collect();
        assert_eq!(
            ids,
            [
                "violation-description",
                "violation-kind",
                "violation-subject",
                "violation-subject-kind",
                "violation-until"
            ]
        );
        assert!(p.values().all(|m| !m.contains("secret") && !m.contains("robot")));
    }

    #[test]
    fn a_trusted_key_is_64_hex_digits() {
        let list = r#"{"issuer":"x","bans":[]}"#;
        let mut f = ImportForm {
            json: list.into(),
            trusted_key: format!(" {} ", "AB".repeat(32)),
        };
        assert_eq!(f.check(Lang::En).expect("valid").trusted_key, "ab".repeat(32));
        f.trusted_key = "ab".repeat(31);
        f.json = "not json".into();
        let p = f.check(Lang::En).expect_err("invalid");
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), ["bans-json", "bans-trusted-key"]);
    }
}
