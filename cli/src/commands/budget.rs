//! `tokumei budget show|set`: a project's differential-privacy budget and what has been spent from
//! it (the ledger in the policy database).

use anyhow::Result;
use serde::Serialize;
use tokumei_deid::dp::accounting::Budget;
use tokumei_policy::budget_ledger::{BudgetStatus, ProjectBudget};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};

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
        policy: PolicyOptions,
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
        policy: PolicyOptions,
    },
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

/// Runs `tokumei budget ...`.
pub fn run(command: BudgetCommand, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        match command {
            BudgetCommand::Show {
                project: Some(project),
                policy: options,
            } => {
                let policy = open_policy(&options).await?;
                let who = actor(&policy, &options).await?;
                let status = policy.budget_status(&who, &project, CLI).await.map_err(reason)?;
                emit(json, &status, print_status)
            }
            BudgetCommand::Show {
                project: None,
                policy: options,
            } => {
                let policy = open_policy(&options).await?;
                let who = actor(&policy, &options).await?;
                let mut lines = Vec::new();
                for p in policy.budget().projects().await? {
                    // Only the projects this person may see.
                    let Ok(s) = policy.budget_status(&who, &p.project, CLI).await else {
                        continue;
                    };
                    lines.push(ProjectLine {
                        spent_epsilon: s.spent.epsilon,
                        remaining_epsilon: s.spent.remaining_epsilon(&p.budget),
                        remaining_delta: s.spent.remaining_delta(&p.budget),
                        entries: s.entries.len(),
                        project: p,
                    });
                }
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
                policy: options,
            } => {
                let policy = open_policy(&options).await?;
                let who = actor(&policy, &options).await?;
                policy
                    .set_budget(&who, &project, Budget { epsilon, delta }, CLI)
                    .await
                    .map_err(reason)?;
                let status = policy.budget().status(&project).await.map_err(reason)?;
                emit(json, &status, print_status)
            }
        }
    })
}
