//! What each person sees, by route. Every `POST` takes a [`crate::extract::Signed`] form (CSRF-checked); every
//! page but sign-in, the stylesheet and the public registers needs a session.

pub mod application_form;
pub mod applications;
pub mod audit;
pub mod budget;
pub mod committee;
pub mod home;
pub mod hospitals;
pub mod orders;
pub mod outputs;
pub mod plan;
pub mod registers;
pub mod releases;
pub mod signin;
pub mod statistics;
pub mod trace;
pub mod violations;
pub mod workspace;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::AppState;

/// The console's stylesheet (the only resource besides pages; the CSP allows nothing else).
const STYLESHEET: &str = include_str!("../../static/console.css");

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

/// Every route of the console.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home::show))
        .route("/static/console.css", get(stylesheet))
        .route("/signin", get(signin::page).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/lang/{code}", get(signin::language))
        .route("/applications", get(applications::list))
        .route(
            "/applications/new",
            get(application_form::blank).post(application_form::file),
        )
        .route("/applications/{id}", get(applications::detail))
        .route("/applications/{id}/change", get(application_form::change))
        .route("/applications/{id}/withdraw", post(committee::withdraw))
        .route("/applications/{id}/assign", post(committee::assign))
        .route("/applications/{id}/vote", post(committee::vote))
        .route("/applications/{id}/recuse", post(committee::recuse))
        .route("/applications/{id}/decide", post(committee::decide))
        .route("/reviews", get(applications::reviews))
        .route("/budget", get(budget::show))
        .route("/releases", get(releases::list))
        .route("/releases/download", get(releases::ready).post(releases::download))
        .route("/releases/deletion", post(releases::declare_deletion))
        .route("/outputs", get(outputs::list))
        .route("/outputs/{id}", get(outputs::detail))
        .route("/outputs/{id}/decide", post(outputs::decide))
        .route("/operator", get(orders::desk))
        .route("/operator/status", post(orders::store_status))
        .route("/operator/build", post(orders::build))
        .route("/applications/{id}/plan", post(orders::plan))
        .route("/orders/{id}", get(orders::show))
        .route("/orders/{id}/complete", post(orders::complete))
        .route("/orders/{id}/built", get(orders::built))
        .route("/orders/{id}/table.csv", get(statistics::table_csv))
        .route("/statistics", get(statistics::blank).post(statistics::request))
        .route("/trace", get(trace::form).post(trace::trace))
        .route("/violations", get(violations::list).post(violations::record))
        .route("/violations/bans/export", post(violations::export))
        .route("/violations/bans/import", post(violations::import))
        .route("/hospitals", get(hospitals::list).post(hospitals::add))
        .route("/hospitals/directory", post(hospitals::directory))
        .route("/hospitals/directory.json", post(hospitals::directory_file))
        .route("/workspace", get(workspace::index))
        .route("/workspace/outputs/{id}/fetch", post(workspace::fetch))
        .route("/workspace/{application}", get(workspace::show))
        .route("/workspace/{application}/query", post(workspace::query))
        .route("/workspace/{application}/analyse", post(workspace::analyse))
        .route("/workspace/{application}/output", post(workspace::output))
        .route("/workspace/{application}/results/{order}", get(workspace::result))
        .route("/audit", get(audit::show))
        .route("/audit/export", post(audit::export))
        .route("/registers", get(registers::index))
        .route("/registers/{name}", get(registers::register).post(registers::publish))
}
