//! `tokumei budget show|set`: a project's differential-privacy budget and what has been spent from
//! it (the ledger in the policy database).

use anyhow::Result;
use serde::Serialize;
use tokumei_deid::dp::accounting::Budget;
use tokumei_policy::budget_ledger::{BudgetLedger, BudgetStatus, ProjectBudget};
use tokumei_policy::database::PolicyDb;

use crate::output::{emit, runtime};

/// `tokumei budget ...`
#[derive(clap::Subcommand, Debug)]
pub enum BudgetCommand {
    /// A project's budget, spent and remaining, and its ledger entries (all projects without --project).
    Show {
        /// Project name.
        #[arg(long)]
        project: Option<String>,
        /// Policy database (default $TOKUMEI_HOME/policy/policy.db).
        #[arg(long, env = "TOKUMEI_POLICY_DB")]
        database: Option<String>,
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
        /// Who sets it (recorded).
        #[arg(long, env = "TOKUMEI_ACTOR", default_value = "operator")]
        actor: String,
        /// Policy database (default $TOKUMEI_HOME/policy/policy.db).
        #[arg(long, env = "TOKUMEI_POLICY_DB")]
        database: Option<String>,
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

async fn open(database: Option<String>) -> Result<BudgetLedger> {
    let home = tokumei_ingest::home::tokumei_home();
    let url = database.unwrap_or_else(|| tokumei_policy::database::default_url(&home));
    Ok(BudgetLedger::new(PolicyDb::open(&url).await?))
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
    for e in &s.entries {
        println!(
            "  #{} {} {} {}: ε={:.6} ρ={:.6} δ={:.2e} — {}",
            e.seq, e.at, e.actor, e.mechanism, e.loss.epsilon, e.loss.rho, e.loss.delta, e.query
        );
    }
}

/// Runs `tokumei budget ...`.
pub fn run(command: BudgetCommand, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        match command {
            BudgetCommand::Show {
                project: Some(project),
                database,
            } => {
                let ledger = open(database).await?;
                let status = ledger.status(&project).await.map_err(reason)?;
                emit(json, &status, print_status)
            }
            BudgetCommand::Show {
                project: None,
                database,
            } => {
                let ledger = open(database).await?;
                let mut lines = Vec::new();
                for p in ledger.projects().await? {
                    let s = ledger.status(&p.project).await?;
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
                actor,
                database,
            } => {
                let ledger = open(database).await?;
                ledger
                    .set_budget(&project, Budget { epsilon, delta }, &actor)
                    .await
                    .map_err(reason)?;
                let status = ledger.status(&project).await?;
                emit(json, &status, print_status)
            }
        }
    })
}

/// Prefixes a policy error with its machine-readable reason.
pub fn reason(e: tokumei_policy::error::PolicyError) -> anyhow::Error {
    anyhow::anyhow!("[{}] {e}", e.reason())
}
