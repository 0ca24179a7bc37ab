//! `tokumei sql "<query>"`: operator queries over the core store through DataFusion.
//!
//! By default the query sees the research view (opted-out and erased patients removed, no registry) — what
//! every downstream consumer sees. `--all-rows` shows the raw tables including the opt-out registry, for
//! operators investigating the store itself. Only an operator's two-factor session may run it, and every
//! query — its text, the view, and whether it succeeded — is appended to the audit ledger before the
//! result is shown.

use crate::commands::access::{CLI, PolicyOptions, actor, open_policy, reason};
use crate::commands::store::open_store;
use crate::output::runtime;
use clap::Args;
use deltalake::arrow::util::pretty::pretty_format_batches;
use sha2::Digest as _;
use std::path::PathBuf;
use tokumei_ingest::config::Config;
use tokumei_ingest::home::tokumei_home;
use tokumei_policy::audit_ledger::{AuditEvent, Outcome};
use tokumei_policy::{Action, Resource};
use tokumei_store::View;

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The query (DataFusion SQL). Tables: patients, encounters, conditions, medications, observations,
    /// allergies (and opt_outs with --all-rows).
    pub query: String,
    /// Configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Include opted-out patients and the registry (operator investigation only).
    #[arg(long)]
    pub all_rows: bool,
    /// The operator's session and the policy database.
    #[command(flatten)]
    pub policy: PolicyOptions,
}

pub fn run(a: SqlArgs, json: bool) -> anyhow::Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let home = tokumei_home();
    let rt = runtime()?;
    rt.block_on(async {
        let policy = open_policy(&a.policy).await?;
        let who = actor(&policy, &a.policy).await?;
        policy
            .check(&who, Action::RunOperatorSql, &Resource::Platform, CLI)
            .await
            .map_err(reason)?;
        let store = open_store(&cfg, &home).await?;
        let view = if a.all_rows { View::Operator } else { View::Research };
        tracing::info!(target: "tokumei::audit", query = %a.query, all_rows = a.all_rows, "operator sql");
        let ctx = store.session(view).await?;
        let result = match ctx.sql(&a.query).await {
            Ok(df) => df.collect().await,
            Err(e) => Err(e),
        };
        let (outcome, reason_code) = match &result {
            Ok(_) => (Outcome::Ok, None),
            Err(_) => (Outcome::Failed, Some("SQL_ERROR")),
        };
        let rows: usize = result
            .as_ref()
            .map(|b| b.iter().map(|b| b.num_rows()).sum())
            .unwrap_or(0);
        let mut event = AuditEvent::new(
            &who.username,
            "sql",
            if a.all_rows {
                "core store (all rows)"
            } else {
                "core store (research view)"
            },
            outcome,
        )
        .source(CLI.0)
        // The query's shape (tables, columns, operators) with every literal replaced by `?`, and the SHA-256 of
        // the whole text: a query naming a linkage key or a value would otherwise put it in the ledger.
        .details(serde_json::json!({
            "query": redacted(&a.query),
            "query_sha256": hex::encode(sha2::Sha256::digest(a.query.as_bytes())),
            "all_rows": a.all_rows,
            "rows": rows,
        }));
        if let Some(code) = reason_code {
            event = event.reason(code);
        }
        policy.audit(event).await.map_err(reason)?;
        let batches = result?;
        if json {
            let mut buf = Vec::new();
            {
                let mut w = deltalake::arrow::json::ArrayWriter::new(&mut buf);
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            println!("{}", String::from_utf8_lossy(&buf));
        } else {
            println!("{}", pretty_format_batches(&batches)?);
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{rows} row(s)");
        }
        anyhow::Ok(())
    })
}

/// `query` with its string and numeric literals replaced by `?` (quoted identifiers kept): what the ledger
/// records of an operator's query, so that it shows what was looked at without holding the values asked for.
fn redacted(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    let mut prev_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // A string literal, with '' as an escaped quote inside.
                while let Some(d) = chars.next() {
                    if d == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push('?');
                prev_word = false;
            }
            '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '"' {
                        break;
                    }
                }
                prev_word = true;
            }
            d if d.is_ascii_digit() && !prev_word => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.' || *n == '_')
                {
                    chars.next();
                }
                out.push('?');
                prev_word = false;
            }
            other => {
                out.push(other);
                prev_word = other.is_alphanumeric() || other == '_';
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn literals_leave_the_ledger_and_the_shape_stays() {
        assert_eq!(
            redacted("SELECT count(*) AS n FROM opt_outs WHERE linkage_key = 'c23afe84ed66' AND x > 42"),
            "SELECT count(*) AS n FROM opt_outs WHERE linkage_key = ? AND x > ?"
        );
        assert_eq!(
            redacted("SELECT 'it''s', 3.5e2, col2 FROM t2"),
            "SELECT ?, ?, col2 FROM t2"
        );
        assert_eq!(
            redacted(r#"SELECT "Weird 42" FROM patients"#),
            r#"SELECT "Weird 42" FROM patients"#
        );
        assert_eq!(
            redacted("WHERE name = '山田"),
            "WHERE name = ?",
            "an unterminated literal is still hidden"
        );
    }
}
