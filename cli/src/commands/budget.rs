//! `tokumei budget show|set|ceiling|platform`: a project's differential-privacy budget and what has been
//! spent from it (the ledger in the policy database), and the platform's ceiling over all approvals per period.

use anyhow::Result;
use serde::Serialize;
use tokumei_deid::dp::accounting::Budget;
use tokumei_policy::budget_ledger::{BudgetStatus, PlatformCeiling, ProjectBudget};

use tokumei_proto::policy::v1 as pb;

use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

use crate::output::{emit, runtime};

/// `tokumei budget ...`
#[derive(clap::Subcommand, Debug)]
pub enum BudgetCommand {
    /// A project's budget, spent and remaining, and its ledger entries (all projects without --project).
    Show {
        /// Project name (an application id for approved statistics).
        #[arg(long)]
        project: Option<String>,
        /// Session and policy database.
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// Create a project's budget or change it (never below what is spent).
    Set {
        /// Project name.
        #[arg(long)]
        project: String,
        /// Total ε the project may spend.
        #[arg(long)]
        epsilon: f64,
        /// Total δ (needed for partition selection and zCDP releases).
        #[arg(long, default_value_t = 1e-6)]
        delta: f64,
        /// Session (a committee chair's) and policy database.
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// Set the platform's ceiling for a period (operators): the privacy loss every approval's differentially
    /// private releases may reach together in it; a spend that fits its project but not the ceiling is
    /// refused (PLATFORM_CEILING_EXCEEDED).
    Ceiling {
        /// Japanese calendar quarter, e.g. 2026-Q4.
        #[arg(long)]
        period: String,
        /// Total ε over all approvals in the period.
        #[arg(long)]
        epsilon: f64,
        /// Total δ over all approvals in the period.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Session (an operator's) and policy database.
        #[command(flatten)]
        service: ServiceOptions,
    },
    /// The platform's total privacy loss over all approvals in a period, and its ceiling (operators, auditors).
    Platform {
        /// Japanese calendar quarter, e.g. 2026-Q4.
        #[arg(long)]
        period: String,
        /// Session and policy database.
        #[command(flatten)]
        service: ServiceOptions,
    },
}

fn print_platform(p: &PlatformCeiling) {
    println!(
        "platform {}: all approvals together spent ε={:.6} ρ={:.6} δ={:.2e} (pure ε, zCDP ρ, δ; small-cell tables carry none)",
        p.period, p.spent.epsilon, p.spent.rho, p.spent.delta
    );
    match (&p.ceiling, &p.set_by) {
        (Some(c), Some(by)) => println!("  上限 / ceiling ε={} δ={:.2e}, set by {by}", c.epsilon, c.delta),
        _ => println!("  no ceiling set for this period (tokumei budget ceiling --period ... --epsilon ...)"),
    }
}

#[derive(Serialize)]
struct ProjectLine {
    project: ProjectBudget,
    spent_epsilon: f64,
    remaining_epsilon: f64,
    remaining_delta: f64,
    entries: usize,
}

fn print_status(s: &BudgetStatus) {
    let b = &s.project.budget;
    println!(
        "project {}: budget ε={} δ={:.2e}; spent ε={:.6} (pure ε {:.6}, ρ {:.6}, δ {:.2e}); remaining ε={:.6} δ={:.2e}",
        s.project.project,
        b.epsilon,
        b.delta,
        s.spent.epsilon,
        s.total.epsilon,
        s.total.rho,
        s.total.delta,
        s.spent.remaining_epsilon(b),
        s.spent.remaining_delta(b),
    );
    let small_cell = s.entries.iter().filter(|e| !e.differentially_private).count();
    if small_cell > 0 {
        println!("  小セル表 / small-cell tables (not differentially private, no privacy loss figure): {small_cell}");
    }
    for e in &s.entries {
        if e.differentially_private {
            println!(
                "  #{} {} {} {}: ε={:.6} ρ={:.6} δ={:.2e} — {}",
                e.seq, e.at, e.actor, e.mechanism, e.loss.epsilon, e.loss.rho, e.loss.delta, e.query
            );
        } else {
            println!(
                "  #{} {} {} {}: not differentially private — {}",
                e.seq, e.at, e.actor, e.mechanism, e.query
            );
        }
    }
}

/// Runs `tokumei budget ...`: a client of the policy service, which authorises, acts and records.
pub fn run(command: BudgetCommand, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        match command {
            BudgetCommand::Show {
                project: Some(project),
                service,
            } => {
                let status: BudgetStatus = ask(&service, Ask::Show(project)).await?;
                emit(json, &status, print_status)
            }
            BudgetCommand::Show { project: None, service } => {
                // Only the projects this person may see (no refusal recorded for the others).
                let all: Vec<BudgetStatus> = ask(&service, Ask::Show(String::new())).await?;
                let lines: Vec<ProjectLine> = all
                    .into_iter()
                    .map(|s| ProjectLine {
                        spent_epsilon: s.spent.epsilon,
                        remaining_epsilon: s.spent.remaining_epsilon(&s.project.budget),
                        remaining_delta: s.spent.remaining_delta(&s.project.budget),
                        entries: s.entries.len(),
                        project: s.project,
                    })
                    .collect();
                emit(json, &lines, |lines| {
                    if lines.is_empty() {
                        println!("no projects (tokumei budget set --project NAME --epsilon E)");
                    }
                    for l in lines {
                        println!(
                            "{}: budget ε={} δ={:.2e}, spent ε={:.6}, remaining ε={:.6}, {} release(s)",
                            l.project.project,
                            l.project.budget.epsilon,
                            l.project.budget.delta,
                            l.spent_epsilon,
                            l.remaining_epsilon,
                            l.entries
                        );
                    }
                })
            }
            BudgetCommand::Set {
                project,
                epsilon,
                delta,
                service,
            } => {
                let status: BudgetStatus = ask(&service, Ask::Set(project, Budget { epsilon, delta })).await?;
                emit(json, &status, print_status)
            }
            BudgetCommand::Ceiling {
                period,
                epsilon,
                delta,
                service,
            } => {
                let status: PlatformCeiling = ask(&service, Ask::Ceiling(period, Budget { epsilon, delta })).await?;
                emit(json, &status, print_platform)
            }
            BudgetCommand::Platform { period, service } => {
                let status: PlatformCeiling = ask(&service, Ask::Platform(period)).await?;
                emit(json, &status, print_platform)
            }
        }
    })
}

/// One question to the policy service about budgets.
enum Ask {
    Show(String),
    Set(String, Budget),
    Ceiling(String, Budget),
    Platform(String),
}

/// Asks `question` and reads the answer's JSON document as `T`.
async fn ask<T: serde::de::DeserializeOwned>(service: &ServiceOptions, question: Ask) -> Result<T> {
    let service = PolicyClient::connect(service).await?;
    let mut client = service.client.clone();
    let reply = match question {
        Ask::Show(project) => client.show_budget(service.request(pb::BudgetQuery { project })?).await,
        Ask::Set(project, b) => {
            let request = pb::SetBudgetRequest {
                project,
                epsilon: b.epsilon,
                delta: b.delta,
            };
            client.set_budget(service.request(request)?).await
        }
        Ask::Ceiling(period, b) => {
            let request = pb::CeilingRequest {
                period,
                epsilon: b.epsilon,
                delta: b.delta,
            };
            client.set_platform_ceiling(service.request(request)?).await
        }
        Ask::Platform(period) => client.platform_budget(service.request(pb::PeriodRef { period })?).await,
    };
    let text = reply.map_err(refused)?.into_inner().json;
    Ok(serde_json::from_str(&text)?)
}
