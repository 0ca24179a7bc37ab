//! `tokumei apply ...`: a researcher's applications (提供申出), change requests (変更申出) and umbrella
//! applications, and their fee estimates.
//!
//! The form is a TOML (or JSON) file; `docs/committee.md` shows a complete one. Filing checks it at once
//! (required statements, period, named columns, no advertising use, no ban) and prints the fee estimate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokumei_policy::committee::{ApplicationForm, ApplicationRecord, FeeEstimate};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::output::{emit, runtime};

/// `tokumei apply ...`
#[derive(clap::Subcommand, Debug)]
pub enum ApplyCommand {
    /// File an application from a form (TOML or JSON); `--amends ID` files a change request.
    File {
        /// The form.
        #[arg(long)]
        form: PathBuf,
        /// The approved application this change request amends.
        #[arg(long)]
        amends: Option<String>,
    },
    /// One application with its review, decision and conditions.
    Show {
        /// Application id.
        id: String,
    },
    /// The applications you may see.
    List,
    /// Withdraw an application not yet decided.
    Withdraw {
        /// Application id.
        id: String,
    },
    /// The fee estimate under the current tariffs.
    Fees {
        /// Application id.
        id: String,
    },
}

/// `tokumei apply ...` with the policy options.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(subcommand)]
    command: ApplyCommand,
    #[command(flatten)]
    policy: PolicyOptions,
}

/// Reads a TOML or JSON document by extension.
pub fn read_document<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid form", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not a valid form", path.display()))
    }
}

/// A one-paragraph summary of an application.
pub fn print_application(a: &ApplicationRecord) {
    println!("{} [{}] {} — {}", a.id, a.kind.as_str(), a.form.title, a.status);
    println!(
        "  applicant {} ({}), filed {}, channel {}",
        a.applicant, a.organisation, a.filed_at, a.form.channel
    );
    if let Some(p) = &a.amends {
        println!("  amends {p}");
    }
    if !a.form.studies.is_empty() {
        println!("  umbrella of {} studies", a.form.studies.len());
    }
    for r in &a.reviewers {
        let vote = a.votes.iter().find(|v| v.member == r.member);
        match (r.recused, vote) {
            (true, _) => println!(
                "  reviewer {}: recused ({})",
                r.member,
                r.recusal_reason.as_deref().unwrap_or("")
            ),
            (false, Some(v)) => println!(
                "  reviewer {}: {} — {}",
                r.member,
                if v.in_favour { "in favour" } else { "against" },
                v.comment
            ),
            (false, None) => println!("  reviewer {}: not voted", r.member),
        }
    }
    if let Some(t) = a.tally {
        println!(
            "  decided {} by {}: {} in favour, {} against",
            a.decided_at.as_deref().unwrap_or(""),
            a.decided_by.as_deref().unwrap_or(""),
            t.in_favour,
            t.against
        );
    }
    if let Some(c) = &a.conditions {
        let recipients: Vec<&str> = c.recipients.iter().map(String::as_str).collect();
        println!(
            "  conditions (revision {}): channel {}, expires {}, {} download(s) (used {}), recipients {}",
            a.conditions_revision,
            c.channel,
            c.expires_on,
            c.max_downloads,
            a.downloads_used,
            recipients.join(", ")
        );
        for t in &c.tables {
            println!("    {}: {}", t.table, t.columns.join(", "));
        }
        if let Some(p) = c.privacy {
            println!(
                "    privacy model k={} m={} l={:?} t={:?} suppression ≤ {}",
                p.k, p.m, p.l, p.t, p.max_suppression
            );
        }
        if let Some(b) = c.dp_budget {
            println!("    DP budget ε={} δ={:e}", b.epsilon, b.delta);
        }
    }
    if let Some((at, why)) = &a.revoked {
        println!("  REVOKED {at}: {why}");
    }
    println!("  fee estimate ¥{}", a.fee.total_yen);
}

/// Prints a fee estimate part by part.
pub fn print_fees(f: &FeeEstimate) {
    println!("fee estimate ({:?} mode):", f.mode);
    for (name, p) in [
        ("basic", &f.basic),
        ("coordination", &f.coordination),
        ("data", &f.data),
        ("cloud", &f.cloud),
    ] {
        println!("  {name:<13} ¥{:>10}  {}", p.yen, p.basis);
    }
    println!("  {:<13} ¥{:>10}", "total", f.total_yen);
}

/// Runs `tokumei apply ...`.
pub fn run(args: ApplyArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let policy = open_policy(&args.policy).await?;
        let a = actor(&policy, &args.policy).await?;
        match args.command {
            ApplyCommand::File { form, amends } => {
                let form: ApplicationForm = read_document(&form)?;
                let r = policy
                    .file_application(&a, form, amends.as_deref(), CLI)
                    .await
                    .map_err(reason)?;
                emit(json, &r, |r| {
                    println!("filed {} ({}), waiting for the committee", r.id, r.kind.as_str());
                    print_fees(&r.fee);
                })
            }
            ApplyCommand::Show { id } => {
                let r = policy.application(&a, &id, CLI).await.map_err(reason)?;
                emit(json, &r, print_application)
            }
            ApplyCommand::List => {
                let list = policy.applications(&a).await.map_err(reason)?;
                emit(json, &list, |list| {
                    for r in list {
                        println!(
                            "{:<14} {:<12} {:<9} {:<14} {}",
                            r.id,
                            r.status.as_str(),
                            r.kind.as_str(),
                            r.applicant,
                            r.form.title
                        );
                    }
                    println!("{} application(s)", list.len());
                })
            }
            ApplyCommand::Withdraw { id } => {
                let r = policy.withdraw(&a, &id, CLI).await.map_err(reason)?;
                emit(json, &r, |r| println!("{} withdrawn", r.id))
            }
            ApplyCommand::Fees { id } => {
                let f = policy.estimate_fees(&a, &id, CLI).await.map_err(reason)?;
                emit(json, &f, print_fees)
            }
        }
    })
}
