//! `tokumei committee ...`: the review (assign, recuse, vote, decide), revocation, violations and the ban
//! lists processors exchange.
//!
//! Every subcommand is a client of the policy service (`--policy-url`), which authorises, acts and records: the
//! command holds the member's session and the service's CA, never the policy database or a key.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use serde_json::json;
use tokumei_policy::committee::{ApprovalConditions, BanList};
use tokumei_policy::grpc::convert::conditions_to_proto;
use tokumei_proto::policy::v1 as pb;

use crate::commands::apply::{print_application, read_document};
use crate::output::{emit, runtime};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

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

/// `tokumei committee ...` with the service options.
#[derive(clap::Args, Debug)]
pub struct CommitteeArgs {
    #[command(subcommand)]
    command: CommitteeCommand,
    #[command(flatten)]
    service: ServiceOptions,
}

/// Runs `tokumei committee ...`.
pub fn run(args: CommitteeArgs, json: bool) -> Result<()> {
    runtime()?.block_on(async {
        let service = PolicyClient::connect(&args.service).await?;
        let mut client = service.client.clone();
        match args.command {
            CommitteeCommand::Assign { id, members } => {
                let request = service.request(pb::AssignReviewersRequest {
                    id,
                    members: members.clone(),
                })?;
                let r = client.assign_reviewers(request).await.map_err(refused)?.into_inner();
                emit(json, &r, |r| println!("{}: reviewers {}", r.id, members.join(", ")))
            }
            CommitteeCommand::Recuse { id, reason } => {
                let r = client
                    .recuse(service.request(pb::RecuseRequest { id, reason })?)
                    .await
                    .map_err(refused)?
                    .into_inner();
                emit(json, &r, |r| println!("recused from {}", r.id))
            }
            CommitteeCommand::Vote {
                id,
                approve,
                reject: _,
                comment,
            } => {
                let request = service.request(pb::CastVoteRequest {
                    id,
                    in_favour: approve,
                    comment,
                })?;
                let r = client.cast_vote(request).await.map_err(refused)?.into_inner();
                emit(json, &r, |r| {
                    let cast = r.votes.len();
                    let active = r.reviewers.iter().filter(|x| !x.recused).count();
                    println!("vote recorded on {} ({cast} of {active} active reviewers voted)", r.id);
                })
            }
            CommitteeCommand::Decide { id, conditions } => {
                // Parsed here so a malformed file is named before anything is sent; the service checks the rest.
                let conditions: Option<ApprovalConditions> = conditions.map(|p| read_document(&p)).transpose()?;
                let request = service.request(pb::DecideRequest {
                    id,
                    conditions: conditions.as_ref().map(conditions_to_proto),
                })?;
                let r = client.decide(request).await.map_err(refused)?.into_inner();
                emit(json, &r, print_application)
            }
            CommitteeCommand::Revoke { id, reason } => {
                let r = client
                    .revoke(service.request(pb::RevokeRequest { id, reason })?)
                    .await
                    .map_err(refused)?
                    .into_inner();
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
                let (subject_kind, subject) = match (person, organisation) {
                    (Some(p), _) => ("person", p),
                    (None, Some(o)) => ("organisation", o),
                    (None, None) => anyhow::bail!("give --person or --organisation"),
                };
                let request = service.request(pb::RecordViolationRequest {
                    subject_kind: subject_kind.to_owned(),
                    subject,
                    kind,
                    description,
                    application: application.unwrap_or_default(),
                    banned_until: until.map(|d| d.to_string()).unwrap_or_default(),
                })?;
                let v = client.record_violation(request).await.map_err(refused)?.into_inner();
                emit(json, &v, |v| {
                    let until = if v.banned_until.is_empty() {
                        "indefinitely"
                    } else {
                        v.banned_until.as_str()
                    };
                    println!("violation {} recorded; {} banned until {until}", v.id, v.subject);
                })
            }
            CommitteeCommand::Violations => {
                let list = client
                    .list_violations(service.request(pb::Empty {})?)
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .violations;
                emit(json, &list, |list| {
                    for v in list {
                        let until = if v.banned_until.is_empty() {
                            "indefinite"
                        } else {
                            v.banned_until.as_str()
                        };
                        println!(
                            "{} {}:{} {} until {} ({}) — {}",
                            v.id, v.subject_kind, v.subject, v.kind, until, v.source, v.description
                        );
                    }
                    println!("{} violation(s)", list.len());
                })
            }
            CommitteeCommand::ExportBans { out } => {
                let text = client
                    .export_bans(service.request(pb::Empty {})?)
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .json;
                let list: BanList = serde_json::from_str(&text).context("the service's ban list is not JSON")?;
                std::fs::write(&out, serde_json::to_vec_pretty(&list)?)?;
                emit(
                    json,
                    &json!({"file": out, "bans": list.bans.len(), "issuer_key": list.issuer_key}),
                    |_| {
                        println!(
                            "{} ban(s) written to {}, signed by key {}",
                            list.bans.len(),
                            out.display(),
                            list.issuer_key
                        );
                    },
                )
            }
            CommitteeCommand::ImportBans { file, issuer_key } => {
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let list: BanList = serde_json::from_str(&text).context("not a ban list")?;
                let trusted_key = match std::fs::read_to_string(&issuer_key) {
                    Ok(t) => t.trim().to_owned(),
                    Err(_) => issuer_key.trim().to_owned(),
                };
                let request = service.request(pb::ImportBansRequest {
                    json: text,
                    trusted_key,
                })?;
                let n = client
                    .import_bans(request)
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .imported;
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
