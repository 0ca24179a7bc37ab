//! The researcher's analysis workspace of an on-platform approval, in the browser: a read-only SQL query, a built-in
//! analysis, an output request from a kept result, and the workspace's output requests — the released ones fetched
//! with the platform's signature checked. Each act is `AnalysisService.Submit` under the person's own session: the
//! policy service admits it on the approval and queues a core order, which the result's page follows (a link asks
//! again; the page never reloads itself).
//!
//! A query's rows and an analysis's values are sealed by the core to a one-use key made here for the one request,
//! as `tokumei analysis query` does in a terminal. Its private half stays in this person's console session, in
//! memory, for the last [`MAX_PENDING_KEYS`] requests — never written, never logged, gone at sign-out — so the policy
//! service that relays the report never reads the rows, and only the session that asked opens them. Opened rows go
//! into the page and nowhere else.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use tokumei_keys::sealed_result::{RecipientKey, order_context};
use tokumei_policy::analysis::SignedOutput;
use tokumei_policy::service_key::ServicePublicKey;
use tokumei_proto::analysis::v1 as apb;
use tokumei_proto::policy::v1 as pb;

use crate::AppState;
use crate::extract::{Signed, Viewer};
use crate::i18n::Lang;
use crate::layout::{csrf, page, row};
use crate::pages::orders::state as order_state;
use crate::pages::outputs::{findings, state as output_state, text, verdict};
use crate::pages::signin::Nothing;
use crate::services::{PageError, authed};

/// How many requests' keys a session keeps (the oldest is dropped beyond): enough for a researcher's work in
/// flight, bounded so that a session cannot pile keys up in the console's memory.
pub const MAX_PENDING_KEYS: usize = 16;

/// Longest SQL text (bytes): the workspace's own limit, checked here first so that the form keeps what was typed.
const MAX_SQL_BYTES: usize = 64 * 1024;

/// Longest application number in a workspace's address.
const MAX_APPLICATION_CHARS: usize = 64;

/// The built-in analyses (`tokumei_analysis::workspace::AnalysisSpec`).
const KINDS: [&str; 5] = ["crosstab", "describe", "linear", "logistic", "kaplan_meier"];

/// The example shown beside the analysis field.
const SPEC_EXAMPLE: &str = r#"{"analysis": "crosstab", "sql": "SELECT patient, sex FROM patients", "rows": "sex"}"#;

/// What a request sealed to this session reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Query,
    Analysis,
}

struct Pending {
    order: u64,
    application: String,
    reads: Reads,
    /// Boxed, so that the queue's moves leave no copies of the secret behind (it is wiped where it lies on drop;
    /// the stack temporary it was generated in is not).
    key: Box<RecipientKey>,
}

/// The private halves of the one-use keys this session's queries and analyses were sealed to, by order: in memory
/// only, at most [`MAX_PENDING_KEYS`], gone with the session.
pub struct PendingKeys {
    keys: Mutex<VecDeque<Pending>>,
}

impl Default for PendingKeys {
    fn default() -> PendingKeys {
        PendingKeys {
            keys: Mutex::new(VecDeque::with_capacity(MAX_PENDING_KEYS)),
        }
    }
}

/// What became of a done order's sealed part in this session.
enum Opened {
    /// Nothing was sealed (an upload, an output request).
    Nothing,
    /// The core sealed a result, but this session holds no key for the order.
    NoKey,
    /// A key is held, but the result did not open (the reason code).
    Unreadable(&'static str),
    /// The result, opened.
    Read(Reads, Value),
}

impl PendingKeys {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, pending: Pending) {
        let mut keys = self.lock();
        keys.retain(|p| p.order != pending.order);
        while keys.len() >= MAX_PENDING_KEYS {
            keys.pop_front();
        }
        keys.push_back(pending);
    }

    fn forget(&self, order: u64) {
        self.lock().retain(|p| p.order != order);
    }

    fn reads(&self, application: &str, order: u64) -> Option<Reads> {
        self.lock()
            .iter()
            .find(|p| p.order == order && p.application == application)
            .map(|p| p.reads)
    }

    /// Opens the sealed part of `report` (order `order` in `application`'s workspace) with the key kept for it.
    fn open(&self, application: &str, order: u64, report: &Value) -> Opened {
        let sealed = report.get("sealed").and_then(Value::as_str);
        let keys = self.lock();
        let pending = keys.iter().find(|p| p.order == order && p.application == application);
        match (pending, sealed) {
            (None, None) => Opened::Nothing,
            (None, Some(_)) => Opened::NoKey,
            (Some(_), None) => Opened::Unreadable("REPORT_INCOMPLETE"),
            (Some(p), Some(sealed)) => {
                let Ok(bytes) = hex::decode(sealed) else {
                    return Opened::Unreadable("REPORT_INCOMPLETE");
                };
                let Ok(plain) = p.key.open(&bytes, &order_context(order)) else {
                    return Opened::Unreadable("RESULT_UNREADABLE");
                };
                match serde_json::from_slice::<Value>(&plain) {
                    Ok(v) => Opened::Read(p.reads, v),
                    Err(_) => Opened::Unreadable("RESULT_UNREADABLE"),
                }
            }
        }
    }
}

/// An application number as it may appear in an address (and so in a redirect's `Location`).
fn plain(application: &str) -> Result<(), PageError> {
    let ok = !application.is_empty()
        && application.chars().count() <= MAX_APPLICATION_CHARS
        && application
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::NOT_FOUND,
            "APPLICATION_INVALID",
            "an application number is letters, digits, - and _ (at most 64)",
        ))
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => cell(other),
    }
}

fn alert_label(lang: Lang, rule: &str) -> &'static str {
    match rule {
        "FEW_PATIENTS" => lang.t("ごく少数の患者についての結果", "A result about very few patients"),
        "NARROWING" => lang.t(
            "問い合わせごとに対象が絞り込まれています",
            "Results narrowing down, query after query",
        ),
        "REPEATED" => lang.t("同じ形の問い合わせの繰り返し", "One query shape asked many times"),
        _ => "",
    }
}

/// What was typed in the workspace's forms, and the one field with a problem (its name and what to mend).
#[derive(Default)]
struct Draft {
    sql: String,
    spec: String,
    result: String,
    problem: Option<(&'static str, &'static str)>,
}

impl Draft {
    fn problem(&self, field: &str) -> Option<&'static str> {
        self.problem.filter(|(f, _)| *f == field).map(|(_, m)| m)
    }
}

fn described(id: &str, problem: Option<&str>) -> String {
    match problem {
        Some(_) => format!("{id}-hint {id}-error"),
        None => format!("{id}-hint"),
    }
}

/// A labelled field with its hint and its problem (the input names them in `aria-describedby`).
fn field(id: &str, label: &str, hint: Markup, problem: Option<&str>, input: Markup) -> Markup {
    html! {
        div.field.invalid[problem.is_some()] {
            label for=(id) { (label) }
            p.hint id={ (id) "-hint" } { (hint) }
            (input)
            @if let Some(m) = problem { p.problem id={ (id) "-error" } role="alert" { (m) } }
        }
    }
}

fn query_form(viewer: &Viewer, application: &str, draft: &Draft) -> Markup {
    let lang = viewer.lang;
    let problem = draft.problem("sql");
    let input = html! {
        textarea id="workspace-sql" name="sql" rows="6" spellcheck="false" required
            aria-invalid=[problem.map(|_| "true")] aria-describedby=(described("workspace-sql", problem)) { (draft.sql) }
    };
    let hint = html! { (lang.t(
        "ワークスペースのテーブルとアップロード（upload_名前）に対する読み取り専用のSQL文を1つ。結果は最初の100行までこの画面にだけ表示され、監査ログには問い合わせの形と件数が残ります。",
        "One read-only SQL statement over the workspace's tables and uploads (upload_<name>). Up to 100 rows are shown on this screen only; the audit ledger keeps the query's shape and counts.",
    )) };
    html! {
        section aria-labelledby="query-h" {
            h2 id="query-h" { (lang.t("クエリ（読み取り専用のSQL）", "Query (read-only SQL)")) }
            form method="post" action={ "/workspace/" (application) "/query" } {
                (csrf(viewer))
                (field("workspace-sql", "SQL", hint, problem, input))
                button type="submit" id="run-query" { (lang.t("クエリを実行する", "Run the query")) }
            }
        }
    }
}

fn analysis_form(viewer: &Viewer, application: &str, draft: &Draft) -> Markup {
    let lang = viewer.lang;
    let problem = draft.problem("spec");
    let input = html! {
        textarea id="workspace-spec" name="spec" rows="6" spellcheck="false" required
            aria-invalid=[problem.map(|_| "true")] aria-describedby=(described("workspace-spec", problem)) { (draft.spec) }
    };
    let hint = html! {
        (lang.t(
            "analysis は crosstab（rows, columns）・describe（value, group）・linear / logistic（outcome, covariates）・kaplan_meier（time, event, group）。sql は列 patient を返すこと。結果は番号付きでワークスペースに保存されます。例：",
            "analysis is crosstab (rows, columns), describe (value, group), linear / logistic (outcome, covariates) or kaplan_meier (time, event, group); sql must return the column patient. The result is kept in the workspace under a number. For example: ",
        ))
        code { (SPEC_EXAMPLE) }
    };
    html! {
        section aria-labelledby="analysis-h" {
            h2 id="analysis-h" { (lang.t("解析", "Analysis")) }
            form method="post" action={ "/workspace/" (application) "/analyse" } {
                (csrf(viewer))
                (field("workspace-spec", lang.t("解析の指定（JSON）", "The analysis (JSON)"), hint, problem, input))
                button type="submit" id="run-analysis" { (lang.t("解析を実行する", "Run the analysis")) }
            }
        }
    }
}

fn output_form(viewer: &Viewer, application: &str, draft: &Draft) -> Markup {
    let lang = viewer.lang;
    let problem = draft.problem("result");
    let input = html! {
        input type="text" id="workspace-result" name="result" inputmode="numeric" value=(draft.result) required
            aria-invalid=[problem.map(|_| "true")] aria-describedby=(described("workspace-result", problem));
    };
    let hint = html! { (lang.t(
        "解析を実行したときの結果番号。自動チェックの後、出力チェック担当が判断します。同じ結果の申請は1回だけです。",
        "The number an analysis reported. The automatic checks run, then an output checker decides; a result is asked for once.",
    )) };
    html! {
        section aria-labelledby="output-h" {
            h2 id="output-h" { (lang.t("出力申請（結果の持ち出し）", "Output request (taking a result out)")) }
            form method="post" action={ "/workspace/" (application) "/output" } {
                (csrf(viewer))
                (field("workspace-result", lang.t("結果番号", "Result number"), hint, problem, input))
                button type="submit" id="prepare-output" { (lang.t("出力を申請する", "Request the output")) }
            }
        }
    }
}

fn outputs_table(viewer: &Viewer, outputs: &[Value]) -> Markup {
    let lang = viewer.lang;
    html! {
        section aria-labelledby="outputs-h" {
            h2 id="outputs-h" { (lang.t("このワークスペースの出力申請", "This workspace's output requests")) }
            @if outputs.is_empty() { p.empty { (lang.t("出力の申請はありません。", "No output requests.")) } }
            @else {
                table.list id="workspace-outputs" {
                    thead { tr {
                        th scope="col" { (lang.t("番号", "No.")) }
                        th scope="col" { (lang.t("結果番号", "Result")) }
                        th scope="col" { (lang.t("解析", "Analysis")) }
                        th scope="col" { (lang.t("依頼者", "Requested by")) }
                        th scope="col" { (lang.t("自動チェック", "Automatic checks")) }
                        th scope="col" { (lang.t("状態", "State")) }
                        th scope="col" { (lang.t("コメント", "Comment")) }
                        th scope="col" { (lang.t("取得", "Fetch")) }
                    } }
                    tbody {
                        @for o in outputs {
                            @let id = o.get("id").and_then(Value::as_u64);
                            @let state = text(o, "state");
                            tr {
                                td { a href={ "/outputs/" (text(o, "id")) } { (text(o, "id")) } }
                                td { (text(o, "result")) }
                                td { (text(o, "analysis")) }
                                td { (text(o, "requested_by")) }
                                td { span class={ "verdict " (text(o, "verdict")) } { (verdict(lang, &text(o, "verdict"))) } }
                                td { span class={ "status " (state) } { (output_state(lang, &state)) } }
                                td { (text(o, "comment")) }
                                td {
                                    @if let (Some(n), "released") = (id, state.as_str()) {
                                        form method="post" action={ "/workspace/outputs/" (n) "/fetch" } {
                                            (csrf(viewer))
                                            button type="submit" id={ "fetch-" (n) } aria-label={ (lang.t("出力を取得（署名確認つき）：", "Fetch output (signature checked): ")) (n) } {
                                                (lang.t("取得", "Fetch"))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The workspace's page: its forms (with `draft` refilled) and its output requests.
async fn workspace_page(
    console: &AppState,
    viewer: &Viewer,
    application: &str,
    draft: &Draft,
) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let filter = apb::OutputFilter {
        application_id: application.to_owned(),
    };
    let doc = console
        .services
        .analysis
        .clone()
        .list_outputs(authed(viewer.token(), filter)?)
        .await
        .map_err(PageError::refused)?
        .into_inner()
        .json;
    let outputs: Vec<Value> = serde_json::from_str(&doc).unwrap_or_default();
    Ok(page(
        viewer,
        ("解析環境", "Analysis workspace"),
        html! {
            dl { (row(lang.t("申請番号", "Application"), html! { a href={ "/applications/" (application) } id="workspace-application" { (application) } })) }
            p.hint { (lang.t(
                "依頼のたびに、承認（期限・取消・利用停止）と利用者の資格をサービスが確認し、監査ログに記録します。",
                "Every request is admitted on the approval (expiry, revocation, bans) and your standing, and recorded on the audit ledger.",
            )) }
            (query_form(viewer, application, draft))
            (analysis_form(viewer, application, draft))
            (output_form(viewer, application, draft))
            (outputs_table(viewer, &outputs))
        },
    ))
}

fn workspace_of(app: &pb::Application, me: &str) -> bool {
    app.status == "approved"
        && app
            .conditions
            .as_ref()
            .is_some_and(|c| c.channel == "on_platform" && c.recipients.iter().any(|r| r == me))
}

/// `GET /workspace`: the on-platform approvals the person receives, each a way into its workspace.
pub async fn index(State(console): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let lang = viewer.lang;
    let apps = crate::pages::applications::all(&console, &viewer).await?;
    let me = viewer.session.username.as_str();
    let open: Vec<&pb::Application> = apps.iter().filter(|a| workspace_of(a, me)).collect();
    Ok(page(
        &viewer,
        ("解析環境", "Analysis workspaces"),
        html! {
            p.hint { (lang.t(
                "オンサイト解析で承認され、あなたが利用者に含まれる申請です。",
                "Approvals on the on-platform channel that name you as a recipient.",
            )) }
            @if open.is_empty() { p.empty { (lang.t("利用できる解析環境はありません。", "No workspace is open to you.")) } }
            @else {
                table.list id="workspaces" {
                    thead { tr {
                        th scope="col" { (lang.t("申請番号", "Application")) }
                        th scope="col" { (lang.t("題名", "Title")) }
                        th scope="col" { (lang.t("仮名加工情報", "Pseudonymised")) }
                        th scope="col" { (lang.t("有効期限", "Expires on")) }
                    } }
                    tbody {
                        @for a in &open {
                            @let c = a.conditions.clone().unwrap_or_default();
                            tr {
                                td { a href={ "/workspace/" (a.id) } { (a.id) } }
                                td { (a.form.as_ref().map(|f| f.title.as_str()).unwrap_or_default()) }
                                td { (if c.pseudonymised { lang.t("はい（認定利活用者のみ）", "Yes (certified users only)") } else { lang.t("いいえ", "No") }) }
                                td { (c.expires_on) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `GET /workspace/{application}`: the workspace's forms and its output requests.
pub async fn show(
    State(console): State<AppState>,
    viewer: Viewer,
    Path(application): Path<String>,
) -> Result<Markup, PageError> {
    plain(&application)?;
    workspace_page(&console, &viewer, &application, &Draft::default()).await
}

/// The workspace's page again with what was typed and the problem beside its field (nothing was sent).
async fn refill(console: &AppState, viewer: &Viewer, application: &str, draft: &Draft) -> Result<Response, PageError> {
    let markup = workspace_page(console, viewer, application, draft).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, markup).into_response())
}

/// Sends `request` to the workspace; for a query or an analysis, with a fresh key whose private half this session
/// keeps for the order. Then the order's page.
async fn submit(
    console: &AppState,
    viewer: &Viewer,
    application: &str,
    request: Value,
    reads: Option<Reads>,
) -> Result<Response, PageError> {
    let key = reads.map(|_| Box::new(RecipientKey::generate()));
    let message = apb::WorkspaceRequest {
        application_id: application.to_owned(),
        request_json: request.to_string(),
        recipient_key: key.as_ref().map(|k| k.public_hex().to_owned()).unwrap_or_default(),
    };
    let status = console
        .services
        .analysis
        .clone()
        .submit(authed(viewer.token(), message)?)
        .await
        .map_err(PageError::refused)?
        .into_inner();
    if let (Some(key), Some(reads)) = (key, reads) {
        viewer.session.workspace_keys.keep(Pending {
            order: status.id,
            application: application.to_owned(),
            reads,
            key,
        });
    }
    Ok(crate::layout::see_other(&format!(
        "/workspace/{application}/results/{}",
        status.id
    )))
}

fn sql_problem(lang: Lang, sql: &str) -> Option<&'static str> {
    if sql.trim().is_empty() {
        Some(lang.t("SQLを入力してください。", "Write a query in the SQL field."))
    } else if sql.len() > MAX_SQL_BYTES {
        Some(lang.t("SQLは64 KiBまでです。", "The SQL field holds at most 64 KiB."))
    } else {
        None
    }
}

/// The analysis spec typed, as the workspace reads it (its own checks follow in the service and the core).
fn spec_of(lang: Lang, typed: &str) -> Result<Value, &'static str> {
    let invalid = lang.t(
        "解析の指定は、文字列の「analysis」と「sql」を持つJSONオブジェクトにしてください。",
        "The analysis field must be a JSON object with the strings \"analysis\" and \"sql\".",
    );
    let spec: Value = serde_json::from_str(typed.trim()).map_err(|_| invalid)?;
    let kind = spec.get("analysis").and_then(Value::as_str).unwrap_or_default();
    let sql = spec.get("sql").and_then(Value::as_str).unwrap_or_default();
    if !spec.is_object() || kind.is_empty() || sql.trim().is_empty() {
        return Err(invalid);
    }
    if !KINDS.contains(&kind) {
        return Err(lang.t(
            "analysis は crosstab、describe、linear、logistic、kaplan_meier のいずれかです。",
            "In the analysis field, analysis is one of crosstab, describe, linear, logistic, kaplan_meier.",
        ));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(lang.t(
            "解析の sql は64 KiBまでです。",
            "The analysis field's sql holds at most 64 KiB.",
        ));
    }
    Ok(spec)
}

fn result_of(lang: Lang, typed: &str) -> Result<u64, &'static str> {
    typed.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or(lang.t(
        "結果番号は1以上の整数です（解析を実行したときに示された番号）。",
        "The result number is a whole number from 1 (the number an analysis reported).",
    ))
}

/// A query typed in the workspace.
#[derive(Deserialize)]
pub struct QueryForm {
    #[serde(default)]
    sql: String,
}

/// `POST /workspace/{application}/query`: a read-only query; its rows come back sealed to this session.
pub async fn query(
    State(console): State<AppState>,
    Path(application): Path<String>,
    signed: Signed<QueryForm>,
) -> Result<Response, PageError> {
    plain(&application)?;
    let Signed { viewer, form } = signed;
    if let Some(problem) = sql_problem(viewer.lang, &form.sql) {
        let draft = Draft {
            sql: form.sql,
            problem: Some(("sql", problem)),
            ..Draft::default()
        };
        return refill(&console, &viewer, &application, &draft).await;
    }
    let request = json!({"request": "query", "sql": form.sql.trim()});
    submit(&console, &viewer, &application, request, Some(Reads::Query)).await
}

/// An analysis typed in the workspace (its spec, as JSON).
#[derive(Deserialize)]
pub struct AnalysisForm {
    #[serde(default)]
    spec: String,
}

/// `POST /workspace/{application}/analyse`: a built-in analysis; its values come back sealed to this session, and
/// the result stays in the workspace under the order's number.
pub async fn analyse(
    State(console): State<AppState>,
    Path(application): Path<String>,
    signed: Signed<AnalysisForm>,
) -> Result<Response, PageError> {
    plain(&application)?;
    let Signed { viewer, form } = signed;
    match spec_of(viewer.lang, &form.spec) {
        Ok(spec) => {
            let request = json!({"request": "analyse", "spec": spec});
            submit(&console, &viewer, &application, request, Some(Reads::Analysis)).await
        }
        Err(problem) => {
            let draft = Draft {
                spec: form.spec,
                problem: Some(("spec", problem)),
                ..Draft::default()
            };
            refill(&console, &viewer, &application, &draft).await
        }
    }
}

/// A kept result to ask to leave.
#[derive(Deserialize)]
pub struct OutputForm {
    #[serde(default)]
    result: String,
}

/// `POST /workspace/{application}/output`: an output request; the order's number becomes the request's.
pub async fn output(
    State(console): State<AppState>,
    Path(application): Path<String>,
    signed: Signed<OutputForm>,
) -> Result<Response, PageError> {
    plain(&application)?;
    let Signed { viewer, form } = signed;
    match result_of(viewer.lang, &form.result) {
        Ok(result) => {
            let request = json!({"request": "prepare_output", "result": result});
            submit(&console, &viewer, &application, request, None).await
        }
        Err(problem) => {
            let draft = Draft {
                result: form.result,
                problem: Some(("result", problem)),
                ..Draft::default()
            };
            refill(&console, &viewer, &application, &draft).await
        }
    }
}

fn what(lang: Lang, reads: Option<Reads>, report: &Value) -> &'static str {
    match reads {
        Some(Reads::Query) => lang.t("クエリ", "Query"),
        Some(Reads::Analysis) => lang.t("解析", "Analysis"),
        None if report.get("content").is_some() => lang.t("出力申請", "Output request"),
        None if report.get("upload").is_some() => lang.t("アップロード", "Upload"),
        None if report.get("result").is_some() => lang.t("解析", "Analysis"),
        None if report.get("rows").is_some() => lang.t("クエリ", "Query"),
        None => lang.t("ワークスペースへの依頼", "Workspace request"),
    }
}

/// The clear part's fields shown as they are (label ja, en).
const FIELDS: [(&str, &str, &str); 9] = [
    ("analysis", "解析", "Analysis"),
    ("computed_by", "計算した人", "Computed by"),
    ("upload", "アップロード", "Upload"),
    ("rows", "行数", "Rows"),
    ("rows_shown", "表示した行数", "Rows shown"),
    ("columns", "列数", "Columns"),
    ("tables", "読んだテーブル", "Tables read"),
    ("rows_scanned", "走査した行数", "Rows scanned"),
    ("duration_ms", "所要時間（ミリ秒）", "Time (ms)"),
];

fn alerts(lang: Lang, report: &Value) -> Markup {
    let rules: Vec<String> = report
        .get("alerts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| text(a, "rule"))
        .collect();
    html! {
        @if !rules.is_empty() {
            h2 { (lang.t("監視の警告", "The monitoring's alerts")) }
            p.hint { (lang.t("警告は監査ログに記録され、運用担当と監査担当が確認します。", "Alerts are on the audit ledger, for operators and auditors.")) }
            ul id="alerts" {
                @for rule in &rules { li { code.reason { (rule) } " " (alert_label(lang, rule)) } }
            }
        }
    }
}

/// The report's clear part: numbers, counts, codes and the checks' findings — never a value of the data.
fn clear_report(viewer: &Viewer, application: &str, order: u64, report: &Value) -> Markup {
    let lang = viewer.lang;
    let is_output = report.get("content").is_some();
    let result = report.get("result").and_then(Value::as_u64);
    html! {
        h2 { (lang.t("報告", "The report")) }
        dl id="report" {
            @if is_output {
                (row(lang.t("出力申請番号", "Output request"), html! { a href={ "/outputs/" (order) } id="output-link" { (order) } }))
            }
            @if let Some(n) = result {
                (row(lang.t("結果番号", "Result number"), html! { span id="result-number" { (n) } }))
            }
            @for (key, ja, en) in FIELDS {
                @if let Some(v) = report.get(key).filter(|v| !v.is_null()) { (row(lang.t(ja, en), shown(v))) }
            }
            @if let Some(v) = report.get("verdict").and_then(Value::as_str) {
                (row(lang.t("自動チェック", "Automatic checks"), html! { span id="verdict" class={ "verdict " (v) } { (verdict(lang, v)) } }))
            }
        }
        (findings(lang, report))
        (alerts(lang, report))
        @if let (Some(n), false) = (result, is_output) {
            form method="post" action={ "/workspace/" (application) "/output" } {
                (csrf(viewer))
                input type="hidden" name="result" value=(n);
                button type="submit" id="prepare-this-output" class="secondary" {
                    (lang.t("この結果の持ち出しを申請する（出力チェックへ）", "Ask for this result to leave (to output checking)"))
                }
            }
        }
    }
}

fn rows_table(lang: Lang, v: &Value) -> Markup {
    let none = Vec::new();
    let columns = v.get("columns").and_then(Value::as_array).unwrap_or(&none);
    let rows = v.get("rows").and_then(Value::as_array).unwrap_or(&none);
    html! {
        h2 { (lang.t("クエリの結果", "The query's rows")) }
        p.hint { (lang.t(
            "この画面にだけ表示されます（最大100行）。結果を持ち出すには、解析を実行して出力申請をしてください。",
            "Shown on this screen only (at most 100 rows). To take a result out, run an analysis and request its output.",
        )) }
        @if rows.is_empty() { p.empty id="result-empty" { (lang.t("該当する行はありません。", "No rows.")) } }
        table.list id="result-table" {
            caption { (lang.t("クエリの結果", "The query's rows")) }
            thead { tr { @for c in columns { th scope="col" { (cell(c)) } } } }
            tbody {
                @for r in rows {
                    tr { @for c in r.as_array().unwrap_or(&none) { td { (cell(c)) } } }
                }
            }
        }
    }
}

/// A crosstab's counts as a table (`rows`: [name, values], `columns`: [name, values], `counts[row][column]`).
fn crosstab(v: &Value) -> Option<Markup> {
    let rows = v.get("rows")?.as_array()?;
    let columns = v.get("columns")?.as_array()?;
    let counts = v.get("counts")?.as_array()?;
    let (row_name, row_values) = (rows.first()?, rows.get(1)?.as_array()?);
    let (column_name, column_values) = (columns.first()?, columns.get(1)?.as_array()?);
    Some(html! {
        table.list id="result-table" {
            caption { (cell(row_name)) " × " (cell(column_name)) }
            thead { tr {
                th scope="col" { (cell(row_name)) " / " (cell(column_name)) }
                @for c in column_values { th scope="col" { (cell(c)) } }
            } }
            tbody {
                @for (i, label) in row_values.iter().enumerate() {
                    tr {
                        th scope="row" { (cell(label)) }
                        @for n in counts.get(i).and_then(Value::as_array).into_iter().flatten() { td { (cell(n)) } }
                    }
                }
            }
        }
    })
}

fn values(lang: Lang, v: &Value) -> Markup {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let tree = match v.as_object() {
        None => html! { pre id="result-values" { (pretty(v)) } },
        Some(map) => html! {
            dl id="result-values" {
                @for (k, value) in map {
                    dt { (k) }
                    dd {
                        @match value {
                            Value::Object(_) | Value::Array(_) => pre { (pretty(value)) },
                            other => (cell(other)),
                        }
                    }
                }
            }
        },
    };
    html! {
        h2 { (lang.t("解析の結果", "The analysis's result")) }
        p.hint { (lang.t(
            "この値はワークスペースに留め置かれています。持ち出すには出力申請をしてください。",
            "These values stay in the workspace; to take them out, request an output.",
        )) }
        @if let Some(table) = crosstab(v) { (table) } @else { (tree) }
    }
}

fn opened_part(lang: Lang, opened: Opened) -> Markup {
    match opened {
        Opened::Nothing => html! {},
        Opened::NoKey => html! {
            p.notice role="status" id="result-sealed" {
                code.reason { "RESULT_KEY_NOT_IN_SESSION" } " "
                (lang.t(
                    "この結果は、依頼したセッションだけが開けます（鍵はそのセッションのメモリにだけあり、サインアウトで消えます）。もう一度実行してください。",
                    "This result can only be read by the session that asked (its key lives in that session's memory alone and is gone at sign-out). Run the request again.",
                ))
            }
        },
        Opened::Unreadable(code) => html! {
            p.error role="alert" id="result-unreadable" {
                code.reason { (code) } " "
                (lang.t("封をされた結果を開けませんでした。", "The sealed result could not be opened."))
            }
        },
        Opened::Read(Reads::Query, v) => rows_table(lang, &v),
        Opened::Read(Reads::Analysis, v) => values(lang, &v),
    }
}

/// `GET /workspace/{application}/results/{order}`: a workspace order and, once done, its report — the sealed part
/// opened with the key this session kept for it.
pub async fn result(
    State(console): State<AppState>,
    viewer: Viewer,
    Path((application, order)): Path<(String, u64)>,
) -> Result<Markup, PageError> {
    plain(&application)?;
    let lang = viewer.lang;
    let status = crate::pages::orders::status_of(&console, &viewer, order).await?;
    if status.operation != "analysis" {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "NOT_A_WORKSPACE_ORDER",
            "this order is not a request to a workspace",
        ));
    }
    let keys = &viewer.session.workspace_keys;
    let finished = matches!(status.state.as_str(), "done" | "failed" | "expired");
    if finished && status.state != "done" {
        keys.forget(order);
    }
    let report: Value = serde_json::from_str(&status.result_json).unwrap_or(Value::Null);
    let reads = keys.reads(&application, order);
    let opened = if status.state == "done" {
        keys.open(&application, order, &report)
    } else {
        Opened::Nothing
    };
    let here = format!("/workspace/{application}/results/{order}");
    let body = html! {
        dl {
            (row(lang.t("注文番号", "Order"), status.id))
            (row(lang.t("依頼", "Request"), what(lang, reads, &report)))
            (row(lang.t("状態", "State"), html! { span id="order-state" class={ "status " (status.state) } { (order_state(lang, &status.state)) } }))
            @if !status.reason.is_empty() { (row(lang.t("理由", "Reason"), html! { code.reason { (status.reason) } })) }
        }
        @if !finished {
            p.hint { (lang.t("コアの報告を待っています。", "Waiting for the core's report.")) " "
                a.refresh id="refresh" href=(here) { (lang.t("最新の状態を見る", "See the latest state")) } }
        }
        @if status.state == "done" {
            @if report.is_null() {
                p { (lang.t("報告は依頼者だけが読めます。", "Only the requester may read the report.")) }
            } @else {
                (clear_report(&viewer, &application, order, &report))
                (opened_part(lang, opened))
            }
        }
        p { a href={ "/workspace/" (application) } id="back" { (lang.t("ワークスペースに戻る", "Back to the workspace")) } }
    };
    // No self-refreshing page (it would reset a screen reader every few seconds): a link asks again.
    Ok(page(&viewer, ("ワークスペースの結果", "Workspace result"), body))
}

/// Whether a released output holds: its hash and signature under the key it names, and its own number.
/// With `pinned` (the console's `--platform-key`), the output must name that key and verify under it; without, it
/// verifies under the key it names (consistent, but only as trustworthy as the service that answered).
fn verified(signed: &SignedOutput, id: u64, pinned: Option<&ServicePublicKey>) -> Result<(), &'static str> {
    let named = ServicePublicKey::from_hex(&signed.public_key).map_err(|_| "SIGNATURE_INVALID")?;
    if pinned.is_some_and(|p| p.to_hex() != named.to_hex()) {
        return Err("KEY_NOT_PINNED");
    }
    if !signed.verify(pinned.unwrap_or(&named)) {
        return Err("SIGNATURE_INVALID");
    }
    let document: Value = serde_json::from_str(&signed.document).map_err(|_| "OUTPUT_MISMATCH")?;
    if document.get("output").and_then(Value::as_u64) != Some(id) {
        return Err("OUTPUT_MISMATCH");
    }
    Ok(())
}

/// `POST /workspace/outputs/{id}/fetch`: a released output as a file (the signed document with its hash, signature
/// and key, as `tokumei analysis fetch` writes it), delivered only if it verifies. A form, not a link: every fetch is
/// on the audit ledger, and a link may be prefetched.
pub async fn fetch(
    State(console): State<AppState>,
    Path(id): Path<u64>,
    signed: Signed<Nothing>,
) -> Result<Response, PageError> {
    let viewer = signed.viewer;
    let s = console
        .services
        .analysis
        .clone()
        .fetch_output(authed(viewer.token(), apb::OutputRef { id })?)
        .await
        .map_err(PageError::refused)?
        .into_inner();
    let output = SignedOutput {
        document: s.document,
        sha256: s.sha256,
        signature: s.signature,
        public_key: s.public_key,
    };
    if let Err(reason) = verified(&output, id, console.platform_key.as_ref()) {
        tracing::warn!(output = id, %reason, "a released output did not verify; it was not delivered");
        return Err(PageError::new(
            StatusCode::BAD_GATEWAY,
            reason,
            "the output did not verify under the platform's key (signature, hash or number); it was not delivered",
        ));
    }
    let body = serde_json::to_vec_pretty(&output).map_err(|_| {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "OUTPUT_UNWRITABLE",
            "the output could not be written",
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"output-{id}.json\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokumei_policy::service_key::{ServiceKey, SignaturePurpose};

    fn signed_by(key: &ServiceKey, output: u64) -> SignedOutput {
        let document = format!("{{\"output\":{output}}}");
        SignedOutput {
            sha256: hex::encode(Sha256::digest(document.as_bytes())),
            signature: hex::encode(key.sign(SignaturePurpose::AnalysisOutput, document.as_bytes())),
            public_key: key.public().to_hex(),
            document,
        }
    }

    #[test]
    fn an_output_is_delivered_only_under_the_pinned_key_and_its_own_number() {
        let platform = ServiceKey::from_seed(&[1; 32]);
        let impostor = ServiceKey::from_seed(&[2; 32]);
        let pinned = platform.public();
        assert_eq!(verified(&signed_by(&platform, 7), 7, Some(&pinned)), Ok(()));
        // Signed by someone else, naming their own key: consistent, and refused once a key is pinned.
        let forged = signed_by(&impostor, 7);
        assert_eq!(verified(&forged, 7, None), Ok(()));
        assert_eq!(verified(&forged, 7, Some(&pinned)), Err("KEY_NOT_PINNED"));
        // Naming the platform's key without its signature.
        let mut relabelled = forged.clone();
        relabelled.public_key = pinned.to_hex();
        assert_eq!(verified(&relabelled, 7, Some(&pinned)), Err("SIGNATURE_INVALID"));
        // Another output's document.
        assert_eq!(
            verified(&signed_by(&platform, 8), 7, Some(&pinned)),
            Err("OUTPUT_MISMATCH")
        );
    }
}
