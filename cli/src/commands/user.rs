//! `tokumei user ...`: accounts, enrolment with TOTP, login and sessions.
//!
//! A new installation starts with `user bootstrap` (the first two administrators, allowed once, on the host).
//! A person to invite runs `user claim` on their own machine: it prints an invitation code, which they keep, and
//! its claim, which they send to an administrator; the administrator invites them with the claim (`user add
//! --claim`) and never sees the code. Committee, operator and administrator roles wait for a second
//! administrator (`user grants`, `user approve`). The invitee completes the invitation with their code (`user
//! enrol`: password, then the otpauth URI and QR code to scan) and confirms the authenticator with a first code
//! (`user confirm`), receiving ten recovery codes. `user login` needs the password and a TOTP or recovery code.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokumei_policy::Role;
use tokumei_policy::identity::SecondFactor;

use crate::commands::access::{
    CLI, PolicyOptions, actor, open_policy, read_password, reason, save_session, session_token,
};
use crate::output::{emit, runtime};

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

/// `tokumei user ...` with the policy options.
#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    policy: PolicyOptions,
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

fn change_out(change: tokumei_policy::UserChange, roles: &[Role]) -> ChangeOut {
    let names = roles.iter().map(|r| r.as_str().to_owned()).collect();
    match change {
        tokumei_policy::UserChange::Invited(i) => ChangeOut {
            username: i.username,
            state: "invited",
            grant: None,
            expires_at: Some(i.expires_at.to_rfc3339()),
            roles: names,
        },
        tokumei_policy::UserChange::RolesSet(u) => ChangeOut {
            username: u.username,
            state: "roles_set",
            grant: None,
            expires_at: None,
            roles: names,
        },
        tokumei_policy::UserChange::Disabled(username) => ChangeOut {
            username,
            state: "disabled",
            grant: None,
            expires_at: None,
            roles: names,
        },
        tokumei_policy::UserChange::Pending(g) => ChangeOut {
            username: g.username,
            state: "pending",
            grant: Some(g.id),
            expires_at: None,
            roles: names,
        },
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
    if let UserCommand::Claim = args.command {
        // The invitee's side: nothing is stored, no policy database is opened.
        let (code, claim) = tokumei_policy::identity::directory::invitation_claim().map_err(reason)?;
        let out = json!({"invitation_code": code.expose(), "claim": claim});
        return emit(json, &out, |_| {
            println!("your invitation code (keep it to yourself): {}", code.expose());
            println!("your claim (send it to an administrator): {claim}");
            println!("once invited: tokumei user enrol --username YOU --invitation CODE");
        });
    }
    runtime()?.block_on(async {
        let policy = open_policy(&args.policy).await?;
        match args.command {
            UserCommand::Claim => Ok(()),
            UserCommand::Bootstrap {
                username,
                name,
                claim,
                second_username,
                second_name,
                second_claim,
                organisation,
            } => {
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
            }
            UserCommand::Enrol {
                username,
                invitation,
                password_stdin,
                no_qr,
            } => {
                let password = read_password(password_stdin, "new password: ")?;
                let e = policy
                    .enrol(&username, &invitation, &password, CLI)
                    .await
                    .map_err(reason)?;
                let out = json!({
                    "username": username,
                    "otpauth_uri": e.otpauth_uri.expose(),
                    "secret_base32": e.secret_base32.expose(),
                });
                emit(json, &out, |_| {
                    println!("password set. Add this account to your authenticator app:");
                    if !no_qr {
                        println!("{}", e.qr_terminal.expose());
                    }
                    println!("  {}", e.otpauth_uri.expose());
                    println!("  (secret {})", e.secret_base32.expose());
                    println!("then: tokumei user confirm --username {username} --code CODE");
                })
            }
            UserCommand::Confirm {
                username,
                code,
                password_stdin,
            } => {
                let password = read_password(password_stdin, "password: ")?;
                let codes = policy
                    .confirm_totp(&username, &password, &code, CLI)
                    .await
                    .map_err(reason)?;
                let list: Vec<&str> = codes.codes().iter().map(|c| c.expose()).collect();
                emit(json, &json!({"username": username, "recovery_codes": list}), |_| {
                    println!("authenticator confirmed; {username} is active.");
                    println!("recovery codes (each works once; keep them offline):");
                    for c in &list {
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
                let factor = match (&code, &recovery_code) {
                    (Some(c), _) => SecondFactor::Totp(c),
                    (None, Some(r)) => SecondFactor::RecoveryCode(r),
                    (None, None) => anyhow::bail!("give --code or --recovery-code"),
                };
                let session = policy.login(&username, &password, factor, CLI).await.map_err(reason)?;
                let saved = if no_save {
                    None
                } else {
                    Some(save_session(session.token.expose())?)
                };
                let roles: Vec<&str> = session.actor.roles.iter().map(|r| r.as_str()).collect();
                let out = json!({
                    "username": session.actor.username,
                    "organisation": session.actor.organisation,
                    "roles": roles,
                    "expires_at": session.expires_at.to_rfc3339(),
                    "session_token": session.token.expose(),
                    "saved_to": saved,
                });
                emit(json, &out, |_| {
                    println!(
                        "logged in as {} ({}), session until {}",
                        session.actor.username,
                        roles.join(", "),
                        session.expires_at.to_rfc3339()
                    );
                    match &saved {
                        Some(p) => println!("session saved to {}", p.display()),
                        None => println!("TOKUMEI_SESSION={}", session.token.expose()),
                    }
                })
            }
            UserCommand::Logout => {
                let token = session_token(&args.policy)?;
                policy.logout(&token, CLI).await.map_err(reason)?;
                let _ = std::fs::remove_file(crate::commands::access::session_file());
                emit(json, &json!({"logged_out": true}), |_| println!("logged out"))
            }
            UserCommand::Whoami => {
                let a = actor(&policy, &args.policy).await?;
                emit(json, &a, |a| {
                    let roles: Vec<&str> = a.roles.iter().map(|r| r.as_str()).collect();
                    println!("{} of {} ({})", a.username, a.organisation, roles.join(", "));
                })
            }
            UserCommand::Add {
                username,
                name,
                organisation,
                roles,
                claim,
            } => {
                let a = actor(&policy, &args.policy).await?;
                let invitee = tokumei_policy::NewPerson {
                    username: &username,
                    display_name: &name,
                    organisation: &organisation,
                    claim: &claim,
                };
                let change = policy.add_user(&a, invitee, &roles, CLI).await.map_err(reason)?;
                emit(json, &change_out(change, &roles), print_change)
            }
            UserCommand::Grants => {
                let a = actor(&policy, &args.policy).await?;
                let grants = policy.pending_grants(&a, CLI).await.map_err(reason)?;
                emit(json, &grants, |grants| {
                    for g in grants {
                        let roles: Vec<&str> = g.roles.iter().map(|r| r.as_str()).collect();
                        println!(
                            "{}  {:?} {} → {}  asked by {} at {}",
                            g.id,
                            g.kind,
                            g.username,
                            roles.join(", "),
                            g.requested_by,
                            g.requested_at.to_rfc3339()
                        );
                    }
                    println!("{} grant(s) waiting for a second administrator", grants.len());
                })
            }
            UserCommand::Approve { grant, claim } => {
                let a = actor(&policy, &args.policy).await?;
                let g = policy
                    .approve_grant(&a, &grant, claim.as_deref(), CLI)
                    .await
                    .map_err(reason)?;
                emit(json, &g, |g| {
                    let roles: Vec<&str> = g.roles.iter().map(|r| r.as_str()).collect();
                    println!(
                        "grant {} applied: {} now {} (asked by {}, approved by {})",
                        g.id,
                        g.username,
                        roles.join(", "),
                        g.requested_by,
                        g.approved_by.as_deref().unwrap_or("-")
                    );
                })
            }
            UserCommand::AddOrg { id, name } => {
                let a = actor(&policy, &args.policy).await?;
                let org = policy.add_organisation(&a, &id, &name, CLI).await.map_err(reason)?;
                emit(json, &org, |o| println!("organisation {} ({}) created", o.id, o.name))
            }
            UserCommand::AddHospital {
                code,
                organisation,
                certificate,
            } => {
                let a = actor(&policy, &args.policy).await?;
                let fingerprint = certificate_sha256(&certificate)?;
                let u = policy
                    .add_hospital(&a, &code, &organisation, &fingerprint, CLI)
                    .await
                    .map_err(reason)?;
                emit(json, &u, |u| {
                    println!("hospital {} registered, certificate SHA-256 {fingerprint}", u.username)
                })
            }
            UserCommand::HospitalsPublish { out } => {
                let a = actor(&policy, &args.policy).await?;
                let d = policy.publish_hospital_directory(&a, CLI).await.map_err(reason)?;
                let tmp = out.with_extension("partial");
                std::fs::write(&tmp, serde_json::to_vec_pretty(&d)?)
                    .and_then(|()| std::fs::rename(&tmp, &out))
                    .with_context(|| format!("writing {}", out.display()))?;
                let summary = serde_json::json!({
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
                let a = actor(&policy, &args.policy).await?;
                let change = policy.set_roles(&a, &username, &roles, CLI).await.map_err(reason)?;
                emit(json, &change_out(change, &roles), print_change)
            }
            UserCommand::Disable { username } => {
                let a = actor(&policy, &args.policy).await?;
                let change = policy.disable_user(&a, &username, CLI).await.map_err(reason)?;
                emit(json, &change_out(change, &[]), print_change)
            }
            UserCommand::List => {
                let a = actor(&policy, &args.policy).await?;
                let users = policy.users(&a, CLI).await.map_err(reason)?;
                emit(json, &users, |users| {
                    for u in users {
                        let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
                        println!(
                            "{:<20} {:<16} {:<12} {}",
                            u.username,
                            u.organisation,
                            u.status.as_str(),
                            roles.join(", ")
                        );
                    }
                    println!("{} user(s)", users.len());
                })
            }
        }
    })
}

/// SHA-256 (hex) of the DER of the first certificate in a PEM file: what mutual TLS presents.
/// SHA-256 (hex) of the first certificate of a PEM file, as the directory pins it and the gateway sees it.
pub(crate) fn certificate_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    let pem = std::fs::read(path)?;
    let mut reader = std::io::BufReader::new(pem.as_slice());
    let der = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate found", path.display()))??;
    Ok(hex::encode(sha2::Sha256::digest(der.as_ref())))
}
