//! `tokumei analysis ...`: the remote analysis environment from the command line — a researcher's queries,
//! built-in analyses, uploads and output requests in the workspace of an on-platform approval; an output checker's
//! queue and decisions; the chair's register of certified users; the operators' usage report and alerts. Every
//! command holds a session and the CA only: the policy service authorises and audits, the core answers.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokumei_client::analysis::{self, Answer};
use tokumei_client::core_orders::WaitOptions;
use tokumei_client::policy::ServiceOptions;

use crate::output::runtime;

/// Subcommands of `tokumei analysis`.
#[derive(Subcommand, Debug)]
pub enum AnalysisCommand {
    /// A read-only SQL query in the workspace (its rows are shown here only).
    Query {
        /// The approval whose workspace to use.
        #[arg(long)]
        application: String,
        /// The query (DataFusion SQL over the workspace's tables and uploads `upload_<name>`).
        sql: String,
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
    },
    /// A built-in analysis over the rows of a query (which must return `patient`); kept for an output request.
    Run(RunArgs),
    /// Upload an auxiliary table (a CSV with a header) as `upload_<name>`.
    Upload {
        #[arg(long)]
        application: String,
        /// Its name in the workspace.
        #[arg(long)]
        name: String,
        /// The CSV file.
        file: std::path::PathBuf,
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
    },
    /// Ask for a kept result to leave the workspace: the automatic checks run, then an output checker decides.
    RequestOutput {
        #[arg(long)]
        application: String,
        /// The result's number (printed by `analysis run`).
        #[arg(long)]
        result: u64,
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
    },
    /// Output requests you may see (checkers: the queue).
    Outputs {
        #[arg(long)]
        application: Option<String>,
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// One output request with its content and the checks' findings.
    Output {
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// An output checker approves, asks for changes or refuses.
    Decide {
        #[arg(long)]
        id: u64,
        /// approve | changes | refuse
        #[arg(long)]
        decision: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// Download a released output, its signature checked.
    Fetch {
        #[arg(long)]
        id: u64,
        /// Where to write the signed output (JSON).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The platform's public key (hex) to check the signature against, if pinned.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// The chair registers a researcher as a certified user (認定利活用者).
    Certify {
        #[arg(long)]
        username: String,
        /// The certification's reference.
        #[arg(long)]
        reference: String,
        /// Last valid day, YYYY-MM-DD.
        #[arg(long)]
        expires_on: String,
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// Usage per workspace and user, and the monitoring's alerts (operators, auditors).
    Usage {
        #[arg(long)]
        application: Option<String>,
        #[command(flatten)]
        service: ServiceOptions,
    },
}

/// Arguments of `tokumei analysis run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    application: String,
    /// crosstab | describe | linear | logistic | kaplan-meier
    #[arg(long)]
    kind: String,
    /// The frame's query (must return the column `patient`).
    #[arg(long)]
    sql: String,
    /// crosstab: the row variable.
    #[arg(long)]
    rows: Option<String>,
    /// crosstab: the column variable.
    #[arg(long)]
    columns: Option<String>,
    /// describe: the measured column.
    #[arg(long)]
    value: Option<String>,
    /// describe, kaplan-meier: the grouping column.
    #[arg(long)]
    group: Option<String>,
    /// linear, logistic: the outcome.
    #[arg(long)]
    outcome: Option<String>,
    /// linear, logistic: the covariates, comma-separated.
    #[arg(long, value_delimiter = ',')]
    covariates: Vec<String>,
    /// kaplan-meier: time to event or censoring.
    #[arg(long)]
    time: Option<String>,
    /// kaplan-meier: 1 for an event, 0 for censoring.
    #[arg(long)]
    event: Option<String>,
    #[command(flatten)]
    service: ServiceOptions,
    #[command(flatten)]
    wait: WaitOptions,
}

impl RunArgs {
    /// The analysis as the workspace reads it.
    fn spec(&self) -> anyhow::Result<Value> {
        let need = |v: &Option<String>, flag: &str| {
            v.clone()
                .ok_or_else(|| anyhow::anyhow!("[INVALID_ARGUMENT] --kind {} needs --{flag}", self.kind))
        };
        Ok(match self.kind.as_str() {
            "crosstab" => {
                json!({"analysis": "crosstab", "sql": self.sql, "rows": need(&self.rows, "rows")?, "columns": self.columns})
            }
            "describe" => {
                json!({"analysis": "describe", "sql": self.sql, "value": need(&self.value, "value")?, "group": self.group})
            }
            "linear" | "logistic" => json!({
                "analysis": self.kind, "sql": self.sql, "outcome": need(&self.outcome, "outcome")?, "covariates": self.covariates,
            }),
            "kaplan-meier" => json!({
                "analysis": "kaplan_meier", "sql": self.sql, "time": need(&self.time, "time")?,
                "event": need(&self.event, "event")?, "group": self.group,
            }),
            other => anyhow::bail!(
                "[INVALID_ARGUMENT] unknown analysis {other:?}: crosstab, describe, linear, logistic or kaplan-meier"
            ),
        })
    }
}

/// Runs `tokumei analysis ...`.
pub fn run(command: AnalysisCommand, json_out: bool) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match command {
            AnalysisCommand::Query {
                application,
                sql,
                service,
                wait,
            } => {
                let a = analysis::ask(&service, &wait, &application, json!({"request": "query", "sql": sql}), !json_out).await?;
                print_answer(&a, json_out, "クエリ / query")
            }
            AnalysisCommand::Run(r) => {
                let request = json!({"request": "analyse", "spec": r.spec()?});
                let a = analysis::ask(&r.service, &r.wait, &r.application, request, !json_out).await?;
                print_answer(&a, json_out, "解析 / analysis")
            }
            AnalysisCommand::Upload {
                application,
                name,
                file,
                service,
                wait,
            } => {
                let csv = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                let request = json!({"request": "upload", "name": name, "csv": csv});
                let a = analysis::ask(&service, &wait, &application, request, !json_out).await?;
                print_answer(&a, json_out, "アップロード / upload")
            }
            AnalysisCommand::RequestOutput {
                application,
                result,
                service,
                wait,
            } => {
                let request = json!({"request": "prepare_output", "result": result});
                let a = analysis::ask(&service, &wait, &application, request, !json_out).await?;
                if json_out {
                    println!("{}", json!({"output": a.order, "report": a.report}));
                } else {
                    println!(
                        "出力申請 / output request {} (result {result}): 自動チェック / automatic checks: {}",
                        a.order,
                        a.report["verdict"].as_str().unwrap_or("?")
                    );
                    print_findings(&a.report);
                    println!("出力チェッカーの判断を待っています / waiting for an output checker");
                }
                anyhow::Ok(())
            }
            AnalysisCommand::Outputs { application, service } => {
                let list = analysis::outputs(&service, application.as_deref()).await?;
                if json_out {
                    println!("{list}");
                } else {
                    for o in list.as_array().into_iter().flatten() {
                        println!(
                            "{:>6}  {:<16} result {:<6} {:<12} checks {:<8} {}",
                            o["id"], o["application"].as_str().unwrap_or(""), o["result"],
                            o["analysis"].as_str().unwrap_or(""), o["verdict"].as_str().unwrap_or(""),
                            o["state"].as_str().unwrap_or("")
                        );
                    }
                }
                anyhow::Ok(())
            }
            AnalysisCommand::Output { id, service } => {
                let o = analysis::output(&service, id).await?;
                if json_out {
                    println!("{o}");
                } else {
                    println!(
                        "出力申請 / output request {id}: {} result {} ({}) by {} — {}",
                        o["application"].as_str().unwrap_or(""), o["result"], o["analysis"].as_str().unwrap_or(""),
                        o["requested_by"].as_str().unwrap_or(""), o["state"].as_str().unwrap_or("")
                    );
                    println!("自動チェック / automatic checks: {}", o["verdict"].as_str().unwrap_or("?"));
                    println!("解析 / analysis as asked:\n{}", serde_json::to_string_pretty(&o["spec"])?);
                    for check in o["checks"].as_array().into_iter().flatten() {
                        print_findings(&json!({"checks": [check]}));
                    }
                    println!("内容 / content:\n{}", serde_json::to_string_pretty(&o["content"])?);
                }
                anyhow::Ok(())
            }
            AnalysisCommand::Decide {
                id,
                decision,
                comment,
                service,
            } => {
                let o = analysis::decide(&service, id, &decision, &comment).await?;
                if json_out {
                    println!("{o}");
                } else {
                    println!("出力申請 / output request {id}: {}", o["state"].as_str().unwrap_or(""));
                }
                anyhow::Ok(())
            }
            AnalysisCommand::Fetch {
                id,
                out,
                public_key,
                service,
            } => {
                let signed = analysis::fetch(&service, id, public_key.as_deref()).await?;
                std::fs::write(&out, serde_json::to_vec_pretty(&signed)?)
                    .with_context(|| format!("writing {}", out.display()))?;
                if json_out {
                    println!("{}", json!({"output": id, "sha256": signed.sha256, "file": out}));
                } else {
                    println!(
                        "出力 / output {id}: 署名確認済み / signature verified, sha256 {} → {}",
                        signed.sha256,
                        out.display()
                    );
                }
                anyhow::Ok(())
            }
            AnalysisCommand::Certify {
                username,
                reference,
                expires_on,
                service,
            } => {
                let c = analysis::certify(&service, &username, &reference, &expires_on).await?;
                if json_out {
                    println!("{c}");
                } else {
                    println!("認定利活用者 / certified user {username} until {expires_on}");
                }
                anyhow::Ok(())
            }
            AnalysisCommand::Usage { application, service } => {
                let u = analysis::usage(&service, application.as_deref()).await?;
                if json_out {
                    println!("{u}");
                } else {
                    for w in u["workspaces"].as_array().into_iter().flatten() {
                        let n = &w["usage"];
                        println!(
                            "{:<16} {:<12} queries {} analyses {} uploads {} outputs {} failed {} rows scanned {} time {} ms alerts {}",
                            w["application"].as_str().unwrap_or(""), w["user"].as_str().unwrap_or(""),
                            n["queries"], n["analyses"], n["uploads"], n["output_requests"], n["failed"],
                            n["rows_scanned"], n["duration_ms"], n["alerts"]
                        );
                    }
                    for a in u["alerts"].as_array().into_iter().flatten() {
                        println!(
                            "警告 / alert: ledger {} {} {} {}",
                            a["seq"], a["user"].as_str().unwrap_or(""), a["application"].as_str().unwrap_or(""), a["rules"]
                        );
                    }
                }
                anyhow::Ok(())
            }
        }
    })
}

fn print_answer(a: &Answer, json_out: bool, what: &str) -> anyhow::Result<()> {
    if json_out {
        println!("{}", json!({"order": a.order, "report": a.report, "result": a.private}));
        return Ok(());
    }
    if let Some(result) = a.report["result"].as_u64() {
        println!(
            "{what} → 結果 / result {result}: 自動チェック / automatic checks: {}",
            a.report["verdict"].as_str().unwrap_or("?")
        );
        print_findings(&a.report);
    } else {
        println!(
            "{what} {}: {} row(s), {} ms, {} row(s) scanned",
            a.order, a.report["rows"], a.report["duration_ms"], a.report["rows_scanned"]
        );
    }
    for alert in a.report["alerts"].as_array().into_iter().flatten() {
        println!("警告 / alert: {}", alert["rule"].as_str().unwrap_or("?"));
    }
    if let Some(private) = &a.private {
        println!("{}", serde_json::to_string_pretty(private)?);
    }
    Ok(())
}

/// The checks' findings: rule, place and verdict (never a value).
fn print_findings(report: &Value) {
    for check in report["checks"].as_array().into_iter().flatten() {
        for f in check["findings"].as_array().into_iter().flatten() {
            println!(
                "  {:<8} {:<22} {} {}",
                f["verdict"].as_str().unwrap_or(""),
                f["rule"].as_str().unwrap_or(""),
                f["place"],
                f["message"].as_str().unwrap_or("")
            );
        }
    }
}
