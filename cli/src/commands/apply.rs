//! `tokumei apply ...`: a researcher's applications (提供申出), change requests (変更申出) and umbrella
//! applications, and their fee estimates.
//!
//! The form is a TOML (or JSON) file; `docs/committee.md` shows a complete one. Filing checks it at once
//! (required statements, period, named columns, no advertising use, no ban) and prints the fee estimate.
//!
//! Every subcommand is a client of the policy service (`--policy-url`): it holds the researcher's session and the
//! service's CA, never the policy database or a key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokumei_policy::committee::ApplicationForm;
use tokumei_policy::grpc::convert::form_to_proto;
use tokumei_proto::policy::v1 as pb;

use crate::output::{emit, runtime};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

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

/// `tokumei apply ...` with the service options.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(subcommand)]
    command: ApplyCommand,
    #[command(flatten)]
    service: ServiceOptions,
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

/// A one-paragraph summary of an application, as the policy service described it.
pub fn print_application(a: &pb::Application) {
    let form = a.form.clone().unwrap_or_default();
    println!("{} [{}] {} — {}", a.id, a.kind, form.title, a.status);
    println!(
        "  applicant {} ({}), filed {}, channel {}",
        a.applicant, a.organisation, a.filed_at, form.channel
    );
    if !a.amends.is_empty() {
        println!("  amends {}", a.amends);
    }
    if !form.studies.is_empty() {
        println!("  umbrella of {} studies", form.studies.len());
    }
    for r in &a.reviewers {
        let vote = a.votes.iter().find(|v| v.member == r.member);
        match (r.recused, vote) {
            (true, _) => println!("  reviewer {}: recused ({})", r.member, r.recusal_reason),
            (false, Some(v)) => println!(
                "  reviewer {}: {} — {}",
                r.member,
                if v.in_favour { "in favour" } else { "against" },
                v.comment
            ),
            (false, None) => println!("  reviewer {}: not voted", r.member),
        }
    }
    if !a.decided_at.is_empty() {
        println!("  decided {}", a.decided_at);
    }
    if let Some(c) = &a.conditions {
        println!(
            "  conditions: channel {}, expires {}, {} download(s) (used {}), recipients {}",
            c.channel,
            c.expires_on,
            c.max_downloads,
            a.downloads_used,
            c.recipients.join(", ")
        );
        for t in &c.tables {
            println!("    {}: {}", t.table, t.columns.join(", "));
        }
        if let Some(p) = &c.privacy {
            println!(
                "    privacy model k={} m={:?} l={:?} t={:?} suppression ≤ {}",
                p.k, p.m, p.l, p.t, p.max_suppression
            );
        }
        if let Some(b) = &c.dp_budget {
            println!("    DP budget ε={} δ={:e}", b.epsilon, b.delta);
        }
    }
    if let Some(f) = &a.fee {
        println!("  fee estimate ¥{}", f.total_yen);
    }
}

/// Prints a fee estimate part by part.
pub fn print_fees(f: &pb::FeeEstimate) {
    println!("fee estimate ({} mode):", f.mode);
    for (name, p) in [
        ("basic", &f.basic),
        ("coordination", &f.coordination),
        ("data", &f.data),
        ("cloud", &f.cloud),
    ] {
        let p = p.clone().unwrap_or_default();
        println!("  {name:<13} ¥{:>10}  {}", p.yen, p.basis);
    }
    println!("  {:<13} ¥{:>10}", "total", f.total_yen);
}

/// Runs `tokumei apply ...`.
pub fn run(args: ApplyArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let service = PolicyClient::connect(&args.service).await?;
        let mut client = service.client.clone();
        let by_id = |id: String| service.request(pb::ApplicationRef { id });
        match args.command {
            ApplyCommand::File { form, amends } => {
                // Parsed here so a malformed form is named before anything is sent; the service checks the rest.
                let form: ApplicationForm = read_document(&form)?;
                let request = service.request(pb::FileApplicationRequest {
                    form: Some(form_to_proto(&form)),
                    amends: amends.unwrap_or_default(),
                })?;
                let r = client.file_application(request).await.map_err(refused)?.into_inner();
                emit(json, &r, |r| {
                    println!("filed {} ({}), waiting for the committee", r.id, r.kind);
                    if let Some(f) = &r.fee {
                        print_fees(f);
                    }
                })
            }
            ApplyCommand::Show { id } => {
                let r = client.get_application(by_id(id)?).await.map_err(refused)?.into_inner();
                emit(json, &r, print_application)
            }
            ApplyCommand::List => {
                let list = client
                    .list_applications(service.request(pb::Empty {})?)
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .applications;
                emit(json, &list, |list| {
                    for r in list {
                        let title = r.form.as_ref().map(|f| f.title.as_str()).unwrap_or("");
                        println!(
                            "{:<14} {:<12} {:<9} {:<14} {}",
                            r.id, r.status, r.kind, r.applicant, title
                        );
                    }
                    println!("{} application(s)", list.len());
                })
            }
            ApplyCommand::Withdraw { id } => {
                let r = client
                    .withdraw_application(by_id(id)?)
                    .await
                    .map_err(refused)?
                    .into_inner();
                emit(json, &r, |r| println!("{} withdrawn", r.id))
            }
            ApplyCommand::Fees { id } => {
                let f = client.estimate_fees(by_id(id)?).await.map_err(refused)?.into_inner();
                emit(json, &f, print_fees)
            }
        }
    })
}
