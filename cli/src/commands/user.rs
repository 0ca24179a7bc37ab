//! `tokumei user ...`: accounts, enrolment with TOTP, login and sessions.
//!
//! A new installation starts with `user bootstrap` (the first two administrators, allowed once, on the host).
//! A person to invite runs `user claim` on their own machine: it prints an invitation code, which they keep, and
//! its claim, which they send to an administrator; the administrator invites them with the claim (`user add
//! --claim`) and never sees the code. Committee, operator and administrator roles wait for a second
//! administrator (`user grants`, `user approve`). The invitee completes the invitation with their code (`user
//! enrol`: password, then the otpauth URI and QR code to scan) and confirms the authenticator with a first code
//! (`user confirm`), receiving ten recovery codes. `user login` needs the password and a TOTP or recovery code.
//!
//! Every subcommand but `claim` (the invitee's machine, nothing stored) and `bootstrap` (the installer, once, on
//! the committee zone's host, beside the policy service's database) is a client of the policy service
//! (`--policy-url`): it holds a session (or, before login, nothing) and the service's CA, never the database or a
//! key.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokumei_policy::Role;
use tokumei_proto::policy::v1 as pb;

use crate::commands::access::{CLI, PolicyOptions, open_policy, read_password, reason, save_session};
use crate::output::{emit, runtime};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

/// `tokumei user ...`
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create the first two administrators of a new installation (only while there are no users), each by the
    /// claim of a code they made themselves with `tokumei user claim`: whoever runs this holds neither code.
    Bootstrap {
        /// Username of the first administrator.
        #[arg(long)]
        username: String,
        /// Full name of the first administrator.
        #[arg(long)]
        name: String,
        /// The first administrator's claim.
        #[arg(long)]
        claim: String,
        /// Username of the second administrator (grants of committee, operator, auditor and administrator roles
        /// need two).
        #[arg(long)]
        second_username: String,
        /// Full name of the second administrator.
        #[arg(long)]
        second_name: String,
        /// The second administrator's claim.
        #[arg(long)]
        second_claim: String,
        /// Organisation id (created if missing).
        #[arg(long, default_value = "platform")]
        organisation: String,
        /// Policy database (default $TOKUMEI_HOME/policy/policy.db; or postgres://...): the installer runs this
        /// on the committee zone's host.
        #[arg(long, env = "TOKUMEI_POLICY_DB")]
        database: Option<String>,
    },
    /// Complete an invitation: set the password and get the authenticator's otpauth URI and QR code.
    Enrol {
        /// Username.
        #[arg(long)]
        username: String,
        /// The invitation code you made yourself with `tokumei user claim` (its claim is what the administrators got).
        #[arg(long, env = "TOKUMEI_INVITATION", hide_env_values = true)]
        invitation: String,
        /// Read the new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Confirm the authenticator with its current code; prints the recovery codes (once).
    Confirm {
        /// Username.
        #[arg(long)]
        username: String,
        /// The 6-digit code the authenticator shows.
        #[arg(long)]
        code: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in with password and a TOTP code (or a recovery code); saves the session.
    Login {
        /// Username.
        #[arg(long)]
        username: String,
        /// The 6-digit code the authenticator shows.
        #[arg(long, conflicts_with = "recovery_code", required_unless_present = "recovery_code")]
        code: Option<String>,
        /// A recovery code instead (each works once).
        #[arg(long, hide_env_values = true)]
        recovery_code: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print the token but do not save it as the current session.
        #[arg(long)]
        no_save: bool,
    },
    /// End the current session.
    Logout,
    /// Who the current session belongs to.
    Whoami,
    /// On the invitee's machine, no session needed: make an invitation code (keep it) and its claim (send it
    /// to an administrator, who invites you with it and never sees the code).
    Claim,
    /// Invite a person (administrators) by the claim they sent; committee, operator and administrator roles
    /// wait for a second administrator's approval.
    Add {
        /// Username (a-z, 0-9, `.`, `_`, `-`).
        #[arg(long)]
        username: String,
        /// Full name.
        #[arg(long)]
        name: String,
        /// Organisation id.
        #[arg(long)]
        organisation: String,
        /// Roles, comma-separated: researcher, committee_member, committee_chair, operator, auditor,
        /// administrator.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<Role>,
        /// The claim `tokumei user claim` printed for the invitee.
        #[arg(long)]
        claim: String,
    },
    /// Grants waiting for a second administrator (administrators, operators, auditors).
    Grants,
    /// Approve a grant another administrator asked for (never one's own request, never a grant to oneself).
    Approve {
        /// The grant's id (`G-...`).
        #[arg(long)]
        grant: String,
        /// For an invitation: the claim the invitee gave you directly (it must match the one the requesting
        /// administrator entered).
        #[arg(long)]
        claim: Option<String>,
    },
    /// Create an organisation (administrators).
    AddOrg {
        /// Identifier (e.g. the corporate number).
        #[arg(long)]
        id: String,
        /// Name.
        #[arg(long)]
        name: String,
    },
    /// Register a hospital's service identity, bound to its client certificate (administrators).
    AddHospital {
        /// 10-digit institution code (the certificate's CN).
        #[arg(long)]
        code: String,
        /// Organisation id.
        #[arg(long)]
        organisation: String,
        /// The client certificate (PEM).
        #[arg(long)]
        certificate: std::path::PathBuf,
    },
    /// Publish the signed directory of enabled hospitals for the gateway's `[gateway.directory]` (administrators):
    /// written atomically to `--out`, which the gateway re-reads when it changes.
    HospitalsPublish {
        /// The directory file the gateway reads.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Replace a user's roles (administrators; adding a committee, operator or administrator role waits for a
    /// second administrator).
    Roles {
        /// Username.
        #[arg(long)]
        username: String,
        /// New roles, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<Role>,
    },
    /// Disable an account and end its sessions (administrators).
    Disable {
        /// Username.
        #[arg(long)]
        username: String,
    },
    /// Users and their roles (administrators, operators, auditors).
    List,
}

/// `tokumei user ...` with the service options.
#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    service: ServiceOptions,
}

/// What `user add` and `user roles` report: no code ever (the invitee holds it).
#[derive(Serialize)]
struct ChangeOut {
    username: String,
    /// `invited`, `roles_set` or `pending`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    roles: Vec<String>,
}

fn change_out(change: pb::AddUserResponse, roles: &[Role]) -> ChangeOut {
    let state = match change.state.as_str() {
        "invited" => "invited",
        "pending" => "pending",
        "disabled" => "disabled",
        _ => "roles_set",
    };
    ChangeOut {
        username: change.username,
        state,
        grant: (!change.grant_id.is_empty()).then_some(change.grant_id),
        expires_at: (!change.invitation_expires_at.is_empty()).then_some(change.invitation_expires_at),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
    }
}

fn print_change(o: &ChangeOut) {
    match o.state {
        "invited" => println!(
            "invited {} as {} (their own code works until {})",
            o.username,
            o.roles.join(", "),
            o.expires_at.as_deref().unwrap_or("-")
        ),
        "roles_set" => println!("{}: {}", o.username, o.roles.join(", ")),
        "disabled" => println!("{} disabled; its sessions are revoked", o.username),
        _ => println!(
            "grant {} for {} ({}) waits for a second administrator: tokumei user approve --grant {}",
            o.grant.as_deref().unwrap_or("-"),
            o.username,
            o.roles.join(", "),
            o.grant.as_deref().unwrap_or("-")
        ),
    }
}

/// Runs `tokumei user ...`.
pub fn run(args: UserArgs, json: bool) -> Result<()> {
    match args.command {
        UserCommand::Claim => claim(json),
        UserCommand::Bootstrap {
            username,
            name,
            claim,
            second_username,
            second_name,
            second_claim,
            organisation,
            database,
        } => runtime()?.block_on(async {
            let policy = open_policy(&PolicyOptions {
                database,
                session: None,
            })
            .await?;
            let invited = policy
                .bootstrap(
                    [
                        (&username, &name, &claim),
                        (&second_username, &second_name, &second_claim),
                    ],
                    &organisation,
                    CLI,
                )
                .await
                .map_err(reason)?;
            let out: Vec<serde_json::Value> = invited
                .iter()
                .map(|i| json!({"username": i.username, "expires_at": i.expires_at.to_rfc3339()}))
                .collect();
            emit(json, &out, |_| {
                for i in &invited {
                    println!(
                        "administrator {} created; they enrol with their own code until {}",
                        i.username,
                        i.expires_at.to_rfc3339()
                    );
                }
                println!("next, each: tokumei user enrol --username NAME --invitation CODE");
            })
        }),
        command @ (UserCommand::Enrol { .. } | UserCommand::Confirm { .. } | UserCommand::Login { .. }) => runtime()?
            .block_on(async {
                let service = PolicyClient::connect_anonymous(&args.service).await?;
                before_login(&service, command, json).await
            }),
        command => runtime()?.block_on(async {
            let service = PolicyClient::connect(&args.service).await?;
            signed_in(&service, command, json).await
        }),
    }
}

/// `user claim`: the invitee's side; nothing is stored, no service is asked.
fn claim(json: bool) -> Result<()> {
    let (code, claim) = tokumei_policy::identity::directory::invitation_claim().map_err(reason)?;
    let out = json!({"invitation_code": code.expose(), "claim": claim});
    emit(json, &out, |_| {
        println!("your invitation code (keep it to yourself): {}", code.expose());
        println!("your claim (send it to an administrator): {claim}");
        println!("once invited: tokumei user enrol --username YOU --invitation CODE");
    })
}

/// Enrolment, confirmation and login: calls that carry a password or a code instead of a session.
async fn before_login(service: &PolicyClient, command: UserCommand, json: bool) -> Result<()> {
    let mut client = service.client.clone();
    match command {
        UserCommand::Enrol {
            username,
            invitation,
            password_stdin,
            no_qr,
        } => {
            let password = read_password(password_stdin, "new password: ")?;
            let e = client
                .enrol(service.request(pb::EnrolRequest {
                    username: username.clone(),
                    invitation_code: invitation,
                    password: password.to_string(),
                })?)
                .await
                .map_err(refused)?
                .into_inner();
            let uri = zeroize::Zeroizing::new(e.otpauth_uri);
            let secret = zeroize::Zeroizing::new(e.secret_base32);
            let out = json!({
                "username": username,
                "otpauth_uri": uri.as_str(),
                "secret_base32": secret.as_str(),
            });
            emit(json, &out, |_| {
                println!("password set. Add this account to your authenticator app:");
                if !no_qr && let Ok(qr) = tokumei_policy::identity::totp::terminal_qr(&uri) {
                    println!("{qr}");
                }
                println!("  {}", uri.as_str());
                println!("  (secret {})", secret.as_str());
                println!("then: tokumei user confirm --username {username} --code CODE");
            })
        }
        UserCommand::Confirm {
            username,
            code,
            password_stdin,
        } => {
            let password = read_password(password_stdin, "password: ")?;
            let codes = client
                .confirm_totp(service.request(pb::ConfirmTotpRequest {
                    username: username.clone(),
                    password: password.to_string(),
                    totp_code: code,
                })?)
                .await
                .map_err(refused)?
                .into_inner();
            let codes = zeroize::Zeroizing::new(codes.recovery_codes);
            emit(json, &json!({"username": username, "recovery_codes": *codes}), |_| {
                println!("authenticator confirmed; {username} is active.");
                println!("recovery codes (each works once; keep them offline):");
                for c in codes.iter() {
                    println!("  {c}");
                }
            })
        }
        UserCommand::Login {
            username,
            code,
            recovery_code,
            password_stdin,
            no_save,
        } => {
            let password = read_password(password_stdin, "password: ")?;
            let second_factor = match (code, recovery_code) {
                (Some(c), _) => pb::login_request::SecondFactor::TotpCode(c),
                (None, Some(r)) => pb::login_request::SecondFactor::RecoveryCode(r),
                (None, None) => anyhow::bail!("give --code or --recovery-code"),
            };
            let session = client
                .login(service.request(pb::LoginRequest {
                    username,
                    password: password.to_string(),
                    second_factor: Some(second_factor),
                })?)
                .await
                .map_err(refused)?
                .into_inner();
            let token = zeroize::Zeroizing::new(session.session_token.clone());
            let saved = if no_save { None } else { Some(save_session(&token)?) };
            let actor = session.actor.clone().unwrap_or_default();
            let expires_at = chrono::DateTime::from_timestamp(session.expires_at, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let out = json!({
                "username": actor.username,
                "organisation": actor.organisation,
                "roles": actor.roles,
                "expires_at": expires_at,
                "session_token": token.as_str(),
                "saved_to": saved,
            });
            emit(json, &out, |_| {
                println!(
                    "logged in as {} ({}), session until {expires_at}",
                    actor.username,
                    actor.roles.join(", ")
                );
                match &saved {
                    Some(p) => println!("session saved to {}", p.display()),
                    None => println!("TOKUMEI_SESSION={}", token.as_str()),
                }
            })
        }
        _ => Ok(()),
    }
}

/// Every command made with a session.
async fn signed_in(service: &PolicyClient, command: UserCommand, json: bool) -> Result<()> {
    let mut client = service.client.clone();
    match command {
        UserCommand::Logout => {
            client.logout(service.request(pb::Empty {})?).await.map_err(refused)?;
            let _ = std::fs::remove_file(crate::commands::access::session_file());
            emit(json, &json!({"logged_out": true}), |_| println!("logged out"))
        }
        UserCommand::Whoami => {
            let a = client
                .who_am_i(service.request(pb::Empty {})?)
                .await
                .map_err(refused)?
                .into_inner();
            emit(json, &a, |a| {
                println!("{} of {} ({})", a.username, a.organisation, a.roles.join(", "))
            })
        }
        UserCommand::Add {
            username,
            name,
            organisation,
            roles,
            claim,
        } => {
            let request = service.request(pb::AddUserRequest {
                username,
                display_name: name,
                organisation,
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
                claim,
            })?;
            let change = client.add_user(request).await.map_err(refused)?.into_inner();
            emit(json, &change_out(change, &roles), print_change)
        }
        UserCommand::Grants => {
            let grants = client
                .list_grants(service.request(pb::Empty {})?)
                .await
                .map_err(refused)?
                .into_inner()
                .grants;
            emit(json, &grants, |grants| {
                for g in grants {
                    println!(
                        "{}  {} {} → {}  asked by {} at {}",
                        g.id,
                        g.kind,
                        g.username,
                        g.roles.join(", "),
                        g.requested_by,
                        g.requested_at
                    );
                }
                println!("{} grant(s) waiting for a second administrator", grants.len());
            })
        }
        UserCommand::Approve { grant, claim } => {
            let request = service.request(pb::ApproveGrantRequest {
                grant_id: grant,
                claim: claim.unwrap_or_default(),
            })?;
            let g = client.approve_grant(request).await.map_err(refused)?.into_inner();
            let out = json!({"grant": g.grant_id, "username": g.username, "state": g.state});
            emit(json, &out, |_| {
                println!("grant {} applied to {}", g.grant_id, g.username)
            })
        }
        UserCommand::AddOrg { id, name } => {
            let org = client
                .add_organisation(service.request(pb::AddOrganisationRequest { id, name })?)
                .await
                .map_err(refused)?
                .into_inner();
            emit(json, &org, |o| println!("organisation {} ({}) created", o.id, o.name))
        }
        UserCommand::AddHospital {
            code,
            organisation,
            certificate,
        } => {
            let certificate_sha256 = tokumei_ingest::tls::certificate_sha256(&certificate)?;
            let request = service.request(pb::AddHospitalRequest {
                code,
                organisation,
                certificate_sha256: certificate_sha256.clone(),
            })?;
            let u = client.add_hospital(request).await.map_err(refused)?.into_inner();
            emit(json, &u, |u| {
                println!(
                    "hospital {} registered, certificate SHA-256 {certificate_sha256}",
                    u.username
                )
            })
        }
        UserCommand::HospitalsPublish { out } => {
            let d = client
                .publish_hospital_directory(service.request(pb::Empty {})?)
                .await
                .map_err(refused)?
                .into_inner();
            let document: serde_json::Value =
                serde_json::from_str(&d.json).context("the service's directory is not JSON")?;
            let tmp = out.with_extension("partial");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&document)?)
                .and_then(|()| std::fs::rename(&tmp, &out))
                .with_context(|| format!("writing {}", out.display()))?;
            let summary = json!({
                "hospitals": d.hospitals, "out": out.display().to_string(), "public_key": d.public_key,
            });
            emit(json, &summary, |_| {
                println!(
                    "{} hospital(s) enabled, written to {}; pin this key in [gateway.directory] public_key: {}",
                    d.hospitals,
                    out.display(),
                    d.public_key
                )
            })
        }
        UserCommand::Roles { username, roles } => {
            let request = service.request(pb::SetRolesRequest {
                username,
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            })?;
            let change = client.set_roles(request).await.map_err(refused)?.into_inner();
            emit(json, &change_out(change, &roles), print_change)
        }
        UserCommand::Disable { username } => {
            let change = client
                .disable_user(service.request(pb::UserRef { username })?)
                .await
                .map_err(refused)?
                .into_inner();
            emit(json, &change_out(change, &[]), print_change)
        }
        UserCommand::List => {
            let users = client
                .list_users(service.request(pb::Empty {})?)
                .await
                .map_err(refused)?
                .into_inner()
                .users;
            emit(json, &users, |users| {
                for u in users {
                    println!(
                        "{:<20} {:<16} {:<12} {}",
                        u.username,
                        u.organisation,
                        u.status,
                        u.roles.join(", ")
                    );
                }
                println!("{} user(s)", users.len());
            })
        }
        _ => Ok(()),
    }
}
