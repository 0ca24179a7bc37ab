//! The differential-privacy budget of each project the person may see: what the committee granted, what was spent
//! and what remains (a gauge: `<meter>`, read out by screen readers), and every spend with its query and mechanism.

use axum::extract::State;
use maud::{Markup, html};
use serde_json::Value;
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::Viewer;
use crate::layout::page;
use crate::services::{PageError, authed};

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// `GET /budget`.
pub async fn show(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let doc = console
        .services
        .policy
        .clone()
        .show_budget(authed(viewer.token(), pb::BudgetQuery::default())?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .json;
    let budgets: Vec<Value> = serde_json::from_str(&doc).unwrap_or_default();
    Ok(page(
        &viewer,
        ("プライバシー予算", "Privacy budget"),
        html! {
            @if budgets.is_empty() { p.empty { (lang.t("予算が付与された統計の承認はありません。", "No statistics approval with a budget.")) } }
            @for b in &budgets {
                @let project = b.pointer("/project/project").and_then(Value::as_str).unwrap_or("");
                @let granted = number(b.pointer("/project/budget/epsilon")).unwrap_or(0.0);
                // A total that cannot be expressed within the budget's δ is infinite: shown as all spent.
                @let spent = number(b.pointer("/spent/epsilon")).unwrap_or(granted);
                @let delta = number(b.pointer("/spent/delta")).unwrap_or(0.0);
                section.budget aria-labelledby={ "b-" (project) } {
                    h2 id={ "b-" (project) } { (project) }
                    p {
                        label for={ "m-" (project) } { (lang.t("使用した ε", "ε spent")) }
                        " "
                        meter id={ "m-" (project) } min="0" max=(granted) low=(granted * 0.7) high=(granted * 0.9) value=(spent.min(granted)) {
                            (format!("{spent:.3} / {granted:.3}"))
                        }
                        " " strong.spent { (format!("{spent:.3}")) } " / " (format!("{granted:.3}"))
                        " (" (lang.t("残り", "remaining")) " " (format!("{:.3}", (granted - spent).max(0.0))) ", δ " (format!("{delta:.1e}")) ")"
                    }
                    @let entries = b.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
                    @if !entries.is_empty() {
                        table.list {
                            thead { tr {
                                th scope="col" { "#" }
                                th scope="col" { (lang.t("日時", "When")) }
                                th scope="col" { (lang.t("利用者", "By")) }
                                th scope="col" { (lang.t("問合せ", "Query")) }
                                th scope="col" { (lang.t("方式", "Mechanism")) }
                            } }
                            tbody {
                                @for e in &entries {
                                    tr {
                                        td { (e.get("seq").map(Value::to_string).unwrap_or_default()) }
                                        td { (e.get("at").and_then(Value::as_str).unwrap_or("")) }
                                        td { (e.get("actor").and_then(Value::as_str).unwrap_or("")) }
                                        td { code { (e.get("query").and_then(Value::as_str).unwrap_or("")) } }
                                        td { (e.get("mechanism").and_then(Value::as_str).unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}
