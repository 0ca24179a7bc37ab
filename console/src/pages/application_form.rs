//! The application form (利用申出) with every field of the service's form, checked field by field before it is
//! sent — each message beside its field, tied to it for screen readers — and filed through the policy service,
//! whose own refusal (an unknown column, a recipient who is not a researcher...) is shown above the form with the
//! values kept. A change request (変更申出) is the same form, filled from the approved application.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Signed, Viewer};
use crate::fields::{DATE_HINT, Problems, area, described, field, text, valid_date};
use crate::i18n::Lang;
use crate::layout::{csrf, page};
use crate::pages::applications::one;
use crate::services::{PageError, authed};

/// The form's fields as typed (all text, so that what was typed comes back when something is wrong).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Fields {
    title: String,
    purpose: String,
    public_interest: String,
    methods: String,
    channel: String,
    period_from: String,
    period_to: String,
    tables: String,
    cohort_filter: String,
    security_measures: String,
    funding: String,
    recipients: String,
    requested_epsilon: String,
    studies: String,
    not_for_advertising: String,
    amends: String,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// `table: column, column` per line.
fn parse_tables(text: &str) -> Option<Vec<pb::TableColumns>> {
    let mut tables = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (table, columns) = line.split_once(':')?;
        let columns: Vec<String> = columns
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if !valid_name(table.trim()) || columns.is_empty() || !columns.iter().all(|c| valid_name(c)) {
            return None;
        }
        tables.push(pb::TableColumns {
            table: table.trim().to_owned(),
            columns,
        });
    }
    (!tables.is_empty()).then_some(tables)
}

/// `title | methods` per line.
fn parse_studies(text: &str) -> Option<Vec<pb::Study>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (title, methods) = l.split_once('|')?;
            let (title, methods) = (title.trim(), methods.trim());
            (!title.is_empty() && !methods.is_empty()).then(|| pb::Study {
                title: title.to_owned(),
                methods: methods.to_owned(),
            })
        })
        .collect()
}

impl Fields {
    /// The service's form, or the problems of each field (in the page's language).
    pub fn check(&self, lang: Lang) -> Result<pb::ApplicationForm, Problems> {
        let mut p = Problems::new();
        let required = lang.t("入力してください。", "Required.");
        for (name, value) in [
            ("title", &self.title),
            ("purpose", &self.purpose),
            ("public_interest", &self.public_interest),
            ("methods", &self.methods),
            ("security_measures", &self.security_measures),
            ("funding", &self.funding),
        ] {
            if value.trim().is_empty() {
                p.insert(name, required);
            }
        }
        if self.title.chars().count() > 200 {
            p.insert(
                "title",
                lang.t("200文字以内で入力してください。", "At most 200 characters."),
            );
        }
        if !["file", "statistics", "on_platform"].contains(&self.channel.as_str()) {
            p.insert("channel", lang.t("提供方法を選んでください。", "Choose a channel."));
        }
        let date = lang.t("日付を YYYY-MM-DD で入力してください。", "A date as YYYY-MM-DD.");
        if !valid_date(&self.period_from) {
            p.insert("period_from", date);
        }
        if !valid_date(&self.period_to) {
            p.insert("period_to", date);
        } else if valid_date(&self.period_from) && self.period_to < self.period_from {
            p.insert(
                "period_to",
                lang.t("開始日より後の日付にしてください。", "Must not be before the start."),
            );
        }
        let tables = parse_tables(&self.tables);
        if tables.is_none() {
            p.insert(
                "tables",
                lang.t(
                    "1行に「テーブル: 列, 列」の形で、1つ以上入力してください。",
                    "One or more lines of the form “table: column, column”.",
                ),
            );
        }
        let recipients: Vec<String> = self
            .recipients
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        if recipients.is_empty() || !recipients.iter().all(|r| valid_name(r)) {
            p.insert(
                "recipients",
                lang.t(
                    "受領者のユーザー名をカンマ区切りで入力してください。",
                    "Recipients' usernames, separated by commas.",
                ),
            );
        }
        let epsilon = match self.requested_epsilon.trim() {
            "" => None,
            e => match e.parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => Some(v),
                _ => {
                    p.insert(
                        "requested_epsilon",
                        lang.t("正の数を入力してください。", "A positive number."),
                    );
                    None
                }
            },
        };
        let studies = parse_studies(&self.studies);
        if studies.is_none() {
            p.insert(
                "studies",
                lang.t(
                    "1行に「題名 | 方法」の形で入力してください。",
                    "Lines of the form “title | methods”.",
                ),
            );
        }
        if self.not_for_advertising != "on" {
            p.insert(
                "not_for_advertising",
                lang.t("広告目的でないことの確認が必要です。", "You must confirm this."),
            );
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(pb::ApplicationForm {
            title: self.title.trim().to_owned(),
            purpose: self.purpose.trim().to_owned(),
            public_interest: self.public_interest.trim().to_owned(),
            methods: self.methods.trim().to_owned(),
            tables: tables.unwrap_or_default(),
            cohort_filter: self.cohort_filter.trim().to_owned(),
            period_from: self.period_from.clone(),
            period_to: self.period_to.clone(),
            channel: self.channel.clone(),
            security_measures: self.security_measures.trim().to_owned(),
            funding: self.funding.trim().to_owned(),
            recipients,
            requested_epsilon: epsilon,
            studies: studies.unwrap_or_default(),
            not_for_advertising: true,
        })
    }

    fn from_application(app: &pb::Application) -> Fields {
        let f = app.form.clone().unwrap_or_default();
        Fields {
            title: f.title,
            purpose: f.purpose,
            public_interest: f.public_interest,
            methods: f.methods,
            channel: f.channel,
            period_from: f.period_from,
            period_to: f.period_to,
            tables: f
                .tables
                .iter()
                .map(|t| format!("{}: {}", t.table, t.columns.join(", ")))
                .collect::<Vec<_>>()
                .join("\n"),
            cohort_filter: f.cohort_filter,
            security_measures: f.security_measures,
            funding: f.funding,
            recipients: f.recipients.join(", "),
            requested_epsilon: f.requested_epsilon.map(|e| e.to_string()).unwrap_or_default(),
            studies: f
                .studies
                .iter()
                .map(|s| format!("{} | {}", s.title, s.methods))
                .collect::<Vec<_>>()
                .join("\n"),
            not_for_advertising: String::new(),
            amends: app.id.clone(),
        }
    }
}

fn form_page(viewer: &Viewer, v: &Fields, problems: &Problems, refusal: Option<&PageError>) -> Markup {
    let lang = viewer.lang;
    let title = if v.amends.is_empty() {
        ("新規申請", "New application")
    } else {
        ("変更申出", "Change request")
    };
    page(
        viewer,
        title,
        html! {
            @if let Some(e) = refusal {
                div.error role="alert" id="refusal" {
                    p { strong.reason { (e.reason) } " " (e.message) }
                }
            }
            @if !problems.is_empty() {
                div.error role="alert" id="problems" {
                    p { (lang.t("入力内容を確認してください：", "Please check the fields:")) " " (problems.len()) }
                }
            }
            form method="post" action="/applications/new" novalidate {
                (csrf(viewer))
                input type="hidden" name="amends" value=(v.amends);
                @if !v.amends.is_empty() { p { (lang.t("変更元の申請：", "Amends: ")) code { (v.amends) } } }
                (field("title", lang.t("題名", "Title"), None, problems, text("title", &v.title, problems, false)))
                (field("purpose", lang.t("利用目的", "Purpose"), None, problems, area("purpose", &v.purpose, problems, false)))
                (field("public_interest", lang.t("公益性（研究の意義）", "Public interest"), None, problems, area("public_interest", &v.public_interest, problems, false)))
                (field("methods", lang.t("方法", "Methods"), None, problems, area("methods", &v.methods, problems, false)))
                (field("channel", lang.t("提供方法", "Channel"), None, problems, html! {
                    select id="channel" name="channel" aria-invalid=[problems.contains_key("channel").then_some("true")] aria-describedby=[described("channel", false, problems)] {
                        option value="" { (lang.t("選択してください", "Choose")) }
                        @for c in ["file", "statistics", "on_platform"] {
                            option value=(c) selected[v.channel == c] { (lang.channel(c)) }
                        }
                    }
                }))
                (field("period_from", lang.t("利用期間（開始）", "Period from"), Some(DATE_HINT), problems, text("period_from", &v.period_from, problems, true)))
                (field("period_to", lang.t("利用期間（終了）", "Period to"), Some(DATE_HINT), problems, text("period_to", &v.period_to, problems, true)))
                (field("tables", lang.t("求めるデータ", "Data asked for"), Some(lang.t("1行に「テーブル: 列, 列」（例：patients: linkage_key, sex, birth_date）", "One line per table: “table: column, column” (e.g. patients: linkage_key, sex, birth_date)")), problems, area("tables", &v.tables, problems, true)))
                (field("cohort_filter", lang.t("対象集団の条件（任意）", "Cohort filter (optional)"), None, problems, text("cohort_filter", &v.cohort_filter, problems, false)))
                (field("security_measures", lang.t("安全管理措置", "Security measures"), None, problems, area("security_measures", &v.security_measures, problems, false)))
                (field("funding", lang.t("資金", "Funding"), None, problems, text("funding", &v.funding, problems, false)))
                (field("recipients", lang.t("受領者", "Recipients"), Some(lang.t("ユーザー名をカンマ区切りで", "Usernames, separated by commas")), problems, text("recipients", &v.recipients, problems, true)))
                (field("requested_epsilon", lang.t("求めるプライバシー予算 ε（統計表のみ・任意）", "Requested ε (statistics only, optional)"), None, problems, text("requested_epsilon", &v.requested_epsilon, problems, false)))
                (field("studies", lang.t("研究（包括申出・任意）", "Studies (umbrella, optional)"), Some(lang.t("1行に「題名 | 方法」", "One line each: “title | methods”")), problems, area("studies", &v.studies, problems, true)))
                div class={ "field check" @if problems.contains_key("not_for_advertising") { " invalid" } } {
                    input type="checkbox" id="not_for_advertising" name="not_for_advertising" checked[v.not_for_advertising == "on"]
                        aria-describedby=[described("not_for_advertising", false, problems)];
                    label for="not_for_advertising" { (lang.t("広告・営業目的には利用しません。", "The data will not be used for advertising.")) }
                    @if let Some(msg) = problems.get("not_for_advertising") { p.problem id="not_for_advertising-error" role="alert" { (msg) } }
                }
                button type="submit" id="file" { (lang.t("申請する", "File the application")) }
            }
        },
    )
}

/// `GET /applications/new`: an empty form.
pub async fn blank(viewer: Viewer) -> Markup {
    form_page(&viewer, &Fields::default(), &Problems::new(), None)
}

/// `GET /applications/{id}/change`: the form filled from the approved application, as a change request.
pub async fn change(
    State(console): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let app = one(&console, &viewer, &id).await?;
    Ok(form_page(
        &viewer,
        &Fields::from_application(&app),
        &Problems::new(),
        None,
    ))
}

/// `POST /applications/new`: checks the fields, files through the policy service.
pub async fn file(State(console): State<AppState>, signed: Signed<Fields>) -> Response {
    let Signed { viewer, form: fields } = signed;
    let form = match fields.check(viewer.lang) {
        Ok(form) => form,
        Err(problems) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                form_page(&viewer, &fields, &problems, None),
            )
                .into_response();
        }
    };
    let request = match authed(
        viewer.token(),
        pb::FileApplicationRequest {
            form: Some(form),
            amends: fields.amends.trim().to_owned(),
        },
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match console.services.policy.clone().file_application(request).await {
        Ok(app) => crate::layout::see_other(&format!("/applications/{}?done=filed", app.into_inner().id)),
        Err(status) => {
            let e = PageError::refused(status);
            (e.status, form_page(&viewer, &fields, &Problems::new(), Some(&e))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Fields {
        Fields {
            title: "Diabetes".into(),
            purpose: "p".into(),
            public_interest: "q".into(),
            methods: "m".into(),
            channel: "file".into(),
            period_from: "2027-01-01".into(),
            period_to: "2027-12-31".into(),
            tables: "patients: linkage_key, sex\nobservations: jlac10, value".into(),
            security_measures: "s".into(),
            funding: "f".into(),
            recipients: "rika, yui".into(),
            not_for_advertising: "on".into(),
            ..Fields::default()
        }
    }

    #[test]
    fn a_complete_form_becomes_the_services_form() {
        let f = good().check(Lang::En).expect("valid");
        assert_eq!(f.tables.len(), 2);
        assert_eq!(f.tables[1].columns, ["jlac10", "value"]);
        assert_eq!(f.recipients, ["rika", "yui"]);
        assert!(f.not_for_advertising);
    }

    #[test]
    fn each_field_is_named_in_its_problem() {
        let mut f = good();
        f.title.clear();
        f.channel = "email".into();
        f.period_to = "2026-01-01".into();
        f.tables = "patients".into();
        f.recipients = "rika; drop table".into();
        f.requested_epsilon = "-1".into();
        f.studies = "no separator".into();
        f.not_for_advertising.clear();
        let p = f.check(Lang::Ja).expect_err("invalid");
        let names: Vec<&str> = p.keys().copied().collect();
        assert_eq!(
            names,
            [
                "channel",
                "not_for_advertising",
                "period_to",
                "recipients",
                "requested_epsilon",
                "studies",
                "tables",
                "title"
            ]
        );
    }
}
