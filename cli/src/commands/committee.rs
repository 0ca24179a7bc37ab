//! `tokumei committee ...`: the review (assign, recuse, vote, decide), revocation, violations and the ban
//! lists processors exchange.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use serde_json::json;
use tokumei_policy::ServicePublicKey;
use tokumei_policy::committee::{ApprovalConditions, BanList, BanSubject};

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::commands::apply::{print_application, read_document};
use crate::output::{emit, runtime};

/// `tokumei committee ...`
#[derive(clap::Subcommand, Debug)]
pub enum CommitteeCommand {
    /// Assign members to an application's review (chair).
    Assign {
        /// Application id.
        id: String,
        /// Members, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Step out of a review for a conflict of interest (member).
    Recuse {
        /// Application id.
        id: String,
        /// The conflict.
        #[arg(long)]
        reason: String,
    },
    /// Vote on an application you review (member), with a comment.
    Vote {
        /// Application id.
        id: String,
        /// In favour.
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        /// Against.
        #[arg(long)]
        reject: bool,
        /// Your comment (part of the committee's record).
        #[arg(long)]
        comment: String,
    },
    /// Close the review (chair): the quorum rule decides; an approval needs its conditions (TOML or JSON).
    Decide {
        /// Application id.
        id: String,
        /// The approval's conditions.
        #[arg(long)]
        conditions: Option<PathBuf>,
    },
    /// Revoke an approval (chair): nothing more is built or downloaded under it.
    Revoke {
        /// Application id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Record a violation, banning the person or organisation (chair).
    Violation {
        /// A person (username / researcher number).
        #[arg(long, conflicts_with = "organisation", required_unless_present = "organisation")]
        person: Option<String>,
        /// An organisation.
        #[arg(long)]
        organisation: Option<String>,
        /// Kind (e.g. re_identification_attempt, leak, use_beyond_approval).
        #[arg(long)]
        kind: String,
        /// What happened.
        #[arg(long)]
        description: String,
        /// The application concerned.
        #[arg(long)]
        application: Option<String>,
        /// Last day of the ban (YYYY-MM-DD); indefinite when omitted.
        #[arg(long)]
        until: Option<NaiveDate>,
    },
    /// Violations recorded here and imported.
    Violations,
    /// Write the signed list of this processor's bans in force.
    ExportBans {
        /// Output file (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Import another processor's signed ban list.
    ImportBans {
        /// The list (JSON).
        file: PathBuf,
        /// The issuer's public key you trust (64 hex digits, or a file holding them).
        #[arg(long)]
        issuer_key: String,
    },
}

/// `tokumei committee ...` with the policy options.
#[derive(clap::Args, Debug)]
pub struct CommitteeArgs {
    #[command(subcommand)]
    command: CommitteeCommand,
    #[command(flatten)]
    policy: PolicyOptions,
}

/// Runs `tokumei committee ...`.
pub fn run(args: CommitteeArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let policy = open_policy(&args.policy).await?;
        let a = actor(&policy, &args.policy).await?;
        match args.command {
            CommitteeCommand::Assign { id, members } => {
                let r = policy.assign(&a, &id, &members, CLI).await.map_err(reason)?;
                emit(json, &r, |r| println!("{}: reviewers {}", r.id, members.join(", ")))
            }
            CommitteeCommand::Recuse { id, reason: why } => {
                let r = policy.recuse(&a, &id, &why, CLI).await.map_err(reason)?;
                emit(json, &r, |r| println!("{} recused from {}", a.username, r.id))
            }
            CommitteeCommand::Vote {
                id,
                approve,
                reject: _,
                comment,
            } => {
                let r = policy.vote(&a, &id, approve, &comment, CLI).await.map_err(reason)?;
                emit(json, &r, |r| {
                    let cast = r.votes.len();
                    let active = r.reviewers.iter().filter(|x| !x.recused).count();
                    println!(
                        "vote recorded on {} ({} of {} active reviewers voted)",
                        r.id, cast, active
                    );
                })
            }
            CommitteeCommand::Decide { id, conditions } => {
                let conditions: Option<ApprovalConditions> = conditions.map(|p| read_document(&p)).transpose()?;
                let r = policy.decide(&a, &id, conditions, CLI).await.map_err(reason)?;
                emit(json, &r, print_application)
            }
            CommitteeCommand::Revoke { id, reason: why } => {
                let r = policy.revoke(&a, &id, &why, CLI).await.map_err(reason)?;
                emit(json, &r, |r| println!("approval of {} revoked", r.id))
            }
            CommitteeCommand::Violation {
                person,
                organisation,
                kind,
                description,
                application,
                until,
            } => {
                let subject = match (person, organisation) {
                    (Some(p), _) => BanSubject::Person(p),
                    (None, Some(o)) => BanSubject::Organisation(o),
                    (None, None) => anyhow::bail!("give --person or --organisation"),
                };
                let v = policy
                    .record_violation(&a, subject, &kind, &description, application.as_deref(), until, CLI)
                    .await
                    .map_err(reason)?;
                emit(json, &v, |v| {
                    let until = v
                        .banned_until
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "indefinitely".into());
                    println!("violation {} recorded; {} banned until {until}", v.id, v.subject);
                })
            }
            CommitteeCommand::Violations => {
                let list = policy.violations(&a, CLI).await.map_err(reason)?;
                emit(json, &list, |list| {
                    for v in list {
                        let until = v
                            .banned_until
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "indefinite".into());
                        println!(
                            "{} {} {} until {} ({}) — {}",
                            v.id, v.subject, v.kind, until, v.source, v.description
                        );
                    }
                    println!("{} violation(s)", list.len());
                })
            }
            CommitteeCommand::ExportBans { out } => {
                let list = policy.export_bans(&a, CLI).await.map_err(reason)?;
                std::fs::write(&out, serde_json::to_vec_pretty(&list)?)?;
                emit(
                    json,
                    &json!({"file": out, "bans": list.bans.len(), "issuer_key": list.issuer_key}),
                    |_| {
                        println!(
                            "{} ban(s) written to {}, signed by key {}",
                            list.bans.len(),
                            out.display(),
                            policy.public_key().key_id()
                        );
                    },
                )
            }
            CommitteeCommand::ImportBans { file, issuer_key } => {
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let list: BanList = serde_json::from_str(&text).context("not a ban list")?;
                let key_text = match std::fs::read_to_string(&issuer_key) {
                    Ok(t) => t,
                    Err(_) => issuer_key.clone(),
                };
                let trusted = ServicePublicKey::from_hex(&key_text).map_err(reason)?;
                let n = policy.import_bans(&a, &list, &trusted, CLI).await.map_err(reason)?;
                emit(
                    json,
                    &json!({"issuer": list.issuer, "bans": list.bans.len(), "imported": n}),
                    |_| {
                        println!(
                            "{n} new ban(s) imported from {} ({} in the list)",
                            list.issuer,
                            list.bans.len()
                        );
                    },
                )
            }
        }
    })
}
