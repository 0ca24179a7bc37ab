//! The differential-privacy budget ledger: what each project may spend, and every spend, durably.
//!
//! A differentially private release is only as private as the sum of everything released about the same
//! people, so the budget a committee approves must be enforced across processes and restarts: the ledger
//! is that record. It stores and serialises; it never composes on its own — admission is
//! [`accounting::admit`], the one rule every part of tokumei applies, fed with the stored running total.
//!
//! Spends of a project are serialised by a lock on its row: [`BudgetLedger::spend`] starts its transaction
//! with an `UPDATE` of the project row, which takes SQLite's database write lock or PostgreSQL's row lock,
//! so a second spender waits, then reads the total the first one committed. A refused request writes
//! nothing. The running total is updated with exactly the additions [`PrivacyLoss::total`] performs over
//! the entries in sequence order, so [`BudgetLedger::verify_totals`] can demand bit-for-bit equality.

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokumei_deid::dp::accounting::{self, Budget, PrivacyLoss, Spent};

use crate::database::PolicyDb;
use crate::error::{PolicyError, Result};

/// Longest accepted project, actor or mechanism name: they are identifiers, not documents.
const MAX_NAME_LEN: usize = 256;

/// A project's approved budget, as the committee last set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectBudget {
    /// The project's identifier.
    pub project: String,
    /// The approved (ε, δ).
    pub budget: Budget,
    /// How many times the budget was set (1 = never changed since creation), so a reader can tell a
    /// raised budget from the original approval.
    pub revision: i64,
    /// When the project's budget was first set (RFC 3339, UTC).
    pub created_at: String,
    /// Who first set it.
    pub created_by: String,
    /// When the budget was last set (RFC 3339, UTC).
    pub updated_at: String,
    /// Who last set it.
    pub updated_by: String,
}

/// One admitted spend: enough to show a researcher what consumed their budget and an auditor who did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The project charged.
    pub project: String,
    /// Position in the project's ledger, 1, 2, ... with no gaps: the order totals are summed in.
    pub seq: i64,
    /// When it was admitted, unix milliseconds (for sorting and arithmetic).
    pub at_ms: i64,
    /// The same instant as RFC 3339 UTC (for people).
    pub at: String,
    /// Who ran the query.
    pub actor: String,
    /// The query or release it paid for, as the caller described it.
    pub query: String,
    /// The mechanism (e.g. `laplace`, `gaussian`), for the reader of the ledger.
    pub mechanism: String,
    /// The loss charged, in mechanism units.
    pub loss: PrivacyLoss,
    /// The ε the release reported on its own, kept for the researcher; accounting uses `loss`.
    pub reported_epsilon: f64,
    /// The δ the release reported on its own.
    pub reported_delta: f64,
    /// Whether the entry paid for a differentially private release; `false` records a small-cell table,
    /// which carries no privacy loss figure at all (not "ε = 0") and is counted apart.
    #[serde(default = "yes")]
    pub differentially_private: bool,
}

fn yes() -> bool {
    true
}

/// A project's budget, ledger and what it adds up to: everything a `budget status` command shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The approved budget.
    pub project: ProjectBudget,
    /// Every admitted spend in sequence order.
    pub entries: Vec<LedgerEntry>,
    /// The stored running total (what admission uses).
    pub total: PrivacyLoss,
    /// That total expressed as (ε, δ) against the budget, with what remains.
    pub spent: Spent,
}

/// The platform's ceiling for one period and what every approval spent in it together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformCeiling {
    /// The period (`YYYY-Qn`).
    pub period: String,
    /// The ceiling, when the operator set one.
    pub ceiling: Option<Budget>,
    /// When it was set.
    pub set_at: Option<String>,
    /// Who set it.
    pub set_by: Option<String>,
    /// The loss of every differentially private release of every approval in the period (small-cell tables
    /// carry none and are counted apart).
    pub spent: PrivacyLoss,
}

/// A request to charge a project's budget, recorded as one [`LedgerEntry`] if admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendRequest {
    /// Who runs the query.
    pub actor: String,
    /// The query or release being paid for.
    pub query: String,
    /// The mechanism name.
    pub mechanism: String,
    /// The loss to charge, in mechanism units.
    pub loss: PrivacyLoss,
    /// The ε the release reports on its own (not used for admission).
    pub reported_epsilon: f64,
    /// The δ the release reports on its own (not used for admission).
    pub reported_delta: f64,
    /// Whether it is a differentially private release (`false`: a small-cell table, recorded with no loss).
    #[serde(default = "yes")]
    pub differentially_private: bool,
}

/// One setting of a project's budget, kept forever: who approved which budget, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetChange {
    /// The project.
    pub project: String,
    /// 1 for the creation, then 2, 3, ...
    pub revision: i64,
    /// When, unix milliseconds.
    pub at_ms: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Who set it.
    pub actor: String,
    /// The budget set.
    pub budget: Budget,
}

/// The outcome of [`BudgetLedger::verify_totals`]: whether the stored running total is exactly the sum
/// of the entries, which detects a lost update or a hand-edited ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotalsCheck {
    /// The project.
    pub project: String,
    /// Number of entries.
    pub entries: usize,
    /// The running total stored with the project.
    pub stored: PrivacyLoss,
    /// `PrivacyLoss::total` of the entries in sequence order.
    pub recomputed: PrivacyLoss,
    /// Whether the sequence numbers are exactly 1..=entries.
    pub seqs_contiguous: bool,
}

impl TotalsCheck {
    /// Whether the ledger is consistent: exact f64 equality (the same additions in the same order give
    /// the same bits) and no missing or duplicated sequence number.
    pub fn is_consistent(&self) -> bool {
        self.seqs_contiguous && self.stored == self.recomputed
    }
}

/// The budget ledger over the policy database; cheap to clone.
#[derive(Debug, Clone)]
pub struct BudgetLedger {
    db: PolicyDb,
}

const PROJECT_COLUMNS: &str = "project, budget_epsilon, budget_delta, spent_epsilon, spent_rho, spent_delta, revision, \
     created_at, created_by, updated_at, updated_by";

const ENTRY_COLUMNS: &str = "project, seq, at_ms, at, actor, query, mechanism, epsilon, rho, delta, reported_epsilon, \
     reported_delta, differentially_private";

impl BudgetLedger {
    /// A ledger on `db` (whose migrations [`PolicyDb::open`] has already run).
    pub(crate) fn new(db: PolicyDb) -> BudgetLedger {
        BudgetLedger { db }
    }

    /// The database, for callers that also keep other records in it.
    pub fn db(&self) -> &PolicyDb {
        &self.db
    }

    /// Creates a project's budget or changes it. A change may raise the budget or lower it down to what
    /// is already spent, never below: that would make past releases retroactively over budget.
    pub async fn set_budget(&self, project: &str, budget: Budget, actor: &str) -> Result<ProjectBudget> {
        check_name("project", project)?;
        check_name("actor", actor)?;
        budget.validate()?;
        let (at_ms, at) = now();
        let mut tx = self.db.begin_write().await?;
        let created = sqlx::query(
            "INSERT INTO dp_projects (project, budget_epsilon, budget_delta, spent_epsilon, spent_rho, spent_delta, \
             revision, created_at_ms, created_at, created_by, updated_at_ms, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $4, $4, 1, $5, $6, $7, $5, $6, $7) ON CONFLICT (project) DO NOTHING",
        )
        .bind(project)
        .bind(budget.epsilon)
        .bind(budget.delta)
        .bind(0.0f64)
        .bind(at_ms)
        .bind(&at)
        .bind(actor)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !created {
            lock_project(&mut tx, project).await?;
            let (current, total) = fetch_project(&mut tx, project).await?;
            let spent = accounting::spent(&total, &budget)?;
            if !spent.fits(&budget) {
                tx.rollback().await?;
                return Err(PolicyError::BudgetBelowSpent {
                    project: current.project,
                    budget,
                    spent: Box::new(spent),
                });
            }
            sqlx::query(
                "UPDATE dp_projects SET budget_epsilon = $2, budget_delta = $3, revision = revision + 1, \
                 updated_at_ms = $4, updated_at = $5, updated_by = $6 WHERE project = $1",
            )
            .bind(project)
            .bind(budget.epsilon)
            .bind(budget.delta)
            .bind(at_ms)
            .bind(&at)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
        }
        let (stored, _) = fetch_project(&mut tx, project).await?;
        sqlx::query(
            "INSERT INTO dp_budget_changes (project, revision, at_ms, at, actor, budget_epsilon, budget_delta) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(project)
        .bind(stored.revision)
        .bind(at_ms)
        .bind(&at)
        .bind(actor)
        .bind(budget.epsilon)
        .bind(budget.delta)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The project's budget, entries and totals, read from one snapshot so they agree with each other.
    pub async fn status(&self, project: &str) -> Result<BudgetStatus> {
        let mut tx = self.db.begin_read().await?;
        let (budget, total) = fetch_project(&mut tx, project).await?;
        let entries = fetch_entries(&mut tx, project).await?;
        tx.commit().await?;
        let spent = accounting::spent(&total, &budget.budget)?;
        Ok(BudgetStatus {
            project: budget,
            entries,
            total,
            spent,
        })
    }

    /// Charges `request` to the project if it fits ([`accounting::admit`] on the stored total), in one
    /// transaction that concurrent spenders of the same project wait for. A refused request
    /// ([`PolicyError::BudgetExceeded`], stating the remaining budget) writes nothing.
    pub async fn spend(&self, project: &str, request: SpendRequest) -> Result<LedgerEntry> {
        let request = validated(project, request)?;
        let mut tx = self.db.begin_write().await?;
        // Dropping the transaction on an error rolls it back: a refused request writes nothing.
        let entry = spend_in(&mut tx, project, request).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Every entry of every project admitted in [`from_ms`, `to_ms`), in time order: what the regulator's
    /// report counts.
    pub async fn entries_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM dp_ledger WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms, project, seq"
        ))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Sets the platform's ceiling for `period` (`YYYY-Qn`, Japanese calendar quarter [`from_ms`, `to_ms`)):
    /// the total loss all differentially private releases of every approval may reach in it. A ceiling below
    /// what is already spent in the period admits nothing more.
    pub async fn set_platform_ceiling(
        &self,
        period: &str,
        (from_ms, to_ms): (i64, i64),
        ceiling: Budget,
        actor: &str,
    ) -> Result<PlatformCeiling> {
        check_name("period", period)?;
        check_name("actor", actor)?;
        ceiling.validate()?;
        if from_ms >= to_ms {
            return Err(PolicyError::Invalid(format!("period {period} is empty")));
        }
        let (_, at) = now();
        sqlx::query(
            "INSERT INTO dp_platform_ceilings (period, from_ms, to_ms, epsilon, delta, set_at, set_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (period) DO UPDATE SET epsilon = $4, delta = $5, \
             set_at = $6, set_by = $7",
        )
        .bind(period)
        .bind(from_ms)
        .bind(to_ms)
        .bind(ceiling.epsilon)
        .bind(ceiling.delta)
        .bind(&at)
        .bind(actor)
        .execute(self.db.pool())
        .await?;
        self.platform_status(period, (from_ms, to_ms)).await
    }

    /// The period's ceiling, if the operator set one, and what all approvals' differentially private releases
    /// spent in it together (basic composition over every entry of every project).
    pub async fn platform_status(&self, period: &str, (from_ms, to_ms): (i64, i64)) -> Result<PlatformCeiling> {
        let mut tx = self.db.begin_read().await?;
        let row = sqlx::query("SELECT epsilon, delta, set_at, set_by FROM dp_platform_ceilings WHERE period = $1")
            .bind(period)
            .fetch_optional(&mut *tx)
            .await?;
        let ceiling = match row {
            Some(r) => Some((
                Budget {
                    epsilon: r.try_get("epsilon")?,
                    delta: r.try_get("delta")?,
                },
                r.try_get::<String, _>("set_at")?,
                r.try_get::<String, _>("set_by")?,
            )),
            None => None,
        };
        let spent = period_loss(&mut tx, from_ms, to_ms).await?;
        tx.commit().await?;
        Ok(PlatformCeiling {
            period: period.to_owned(),
            ceiling: ceiling.as_ref().map(|c| c.0),
            set_at: ceiling.as_ref().map(|c| c.1.clone()),
            set_by: ceiling.map(|c| c.2),
            spent,
        })
    }

    /// Every project with a budget, by name.
    pub async fn projects(&self) -> Result<Vec<ProjectBudget>> {
        let rows = sqlx::query(&format!("SELECT {PROJECT_COLUMNS} FROM dp_projects ORDER BY project"))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|row| project_from_row(row).map(|(p, _)| p)).collect()
    }

    /// Every setting of the project's budget, oldest first.
    pub async fn budget_history(&self, project: &str) -> Result<Vec<BudgetChange>> {
        let mut tx = self.db.begin_read().await?;
        fetch_project(&mut tx, project).await?;
        let rows = sqlx::query(
            "SELECT project, revision, at_ms, at, actor, budget_epsilon, budget_delta FROM dp_budget_changes \
             WHERE project = $1 ORDER BY revision",
        )
        .bind(project)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(BudgetChange {
                    project: row.try_get("project")?,
                    revision: row.try_get("revision")?,
                    at_ms: row.try_get("at_ms")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    budget: Budget {
                        epsilon: row.try_get("budget_epsilon")?,
                        delta: row.try_get("budget_delta")?,
                    },
                })
            })
            .collect()
    }

    /// Recomputes the project's total from its entries and compares it with the stored running total.
    pub async fn verify_totals(&self, project: &str) -> Result<TotalsCheck> {
        let mut tx = self.db.begin_read().await?;
        let (_, stored) = fetch_project(&mut tx, project).await?;
        let entries = fetch_entries(&mut tx, project).await?;
        tx.commit().await?;
        let recomputed = PrivacyLoss::total(entries.iter().map(|e| &e.loss));
        let seqs_contiguous = entries.iter().zip(1i64..).all(|(e, expected)| e.seq == expected);
        Ok(TotalsCheck {
            project: project.to_owned(),
            entries: entries.len(),
            stored,
            recomputed,
            seqs_contiguous,
        })
    }
}

/// Refuses a malformed spend before any transaction; normalises the loss so the stored bits are stable.
pub(crate) fn validated(project: &str, request: SpendRequest) -> Result<SpendRequest> {
    check_name("project", project)?;
    check_name("actor", &request.actor)?;
    check_name("mechanism", &request.mechanism)?;
    request.loss.validate()?;
    if !request.differentially_private && request.loss != PrivacyLoss::default() {
        return Err(PolicyError::Invalid(
            "a small-cell (not differentially private) entry carries no privacy loss".into(),
        ));
    }
    if !request.reported_epsilon.is_finite() || request.reported_epsilon < 0.0 {
        return Err(PolicyError::Invalid(format!(
            "reported epsilon must be finite and >= 0, got {}",
            request.reported_epsilon
        )));
    }
    if !(0.0..=1.0).contains(&request.reported_delta) {
        return Err(PolicyError::Invalid(format!(
            "reported delta must be in [0, 1], got {}",
            request.reported_delta
        )));
    }
    // -0.0 passes validation; store +0.0 so the entry and the running total hold the same bits.
    let loss = PrivacyLoss {
        epsilon: request.loss.epsilon + 0.0,
        rho: request.loss.rho + 0.0,
        delta: request.loss.delta + 0.0,
    };
    Ok(SpendRequest { loss, ..request })
}

/// Admits and records `request` inside `tx` (the caller commits): locks the project, applies
/// [`accounting::admit`] and the platform ceiling, appends the entry and updates the running total.
pub(crate) async fn spend_in(
    tx: &mut Transaction<'static, Any>,
    project: &str,
    request: SpendRequest,
) -> Result<LedgerEntry> {
    let loss = request.loss;
    // Lock first, read second: the total read below is then the one every earlier spender committed.
    lock_project(tx, project).await?;
    let (current, already) = fetch_project(tx, project).await?;
    let new_total = match accounting::admit(&current.budget, &already, &loss)? {
        Ok(with_request) => with_request.loss,
        Err(exceeded) => return Err(exceeded.into()),
    };
    let (at_ms, at) = now();
    if request.differentially_private {
        check_platform_ceiling(tx, at_ms, &loss).await?;
    }
    let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM dp_ledger WHERE project = $1")
        .bind(project)
        .fetch_one(&mut **tx)
        .await?
        .try_get("next")?;
    let entry = LedgerEntry {
        project: current.project,
        seq,
        at_ms,
        at,
        actor: request.actor,
        query: request.query,
        mechanism: request.mechanism,
        loss,
        reported_epsilon: request.reported_epsilon,
        reported_delta: request.reported_delta,
        differentially_private: request.differentially_private,
    };
    sqlx::query(
        "INSERT INTO dp_ledger (project, seq, at_ms, at, actor, query, mechanism, epsilon, rho, delta, \
         reported_epsilon, reported_delta, differentially_private) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&entry.project)
    .bind(entry.seq)
    .bind(entry.at_ms)
    .bind(&entry.at)
    .bind(&entry.actor)
    .bind(&entry.query)
    .bind(&entry.mechanism)
    .bind(entry.loss.epsilon)
    .bind(entry.loss.rho)
    .bind(entry.loss.delta)
    .bind(entry.reported_epsilon)
    .bind(entry.reported_delta)
    .bind(i64::from(entry.differentially_private))
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE dp_projects SET spent_epsilon = $2, spent_rho = $3, spent_delta = $4 WHERE project = $1")
        .bind(project)
        .bind(new_total.epsilon)
        .bind(new_total.rho)
        .bind(new_total.delta)
        .execute(&mut **tx)
        .await?;
    Ok(entry)
}

/// Takes the project's write lock (a no-op `UPDATE`) so concurrent writers of the project queue here;
/// an unknown project is reported before anything else happens.
pub(crate) async fn lock_project(tx: &mut Transaction<'static, Any>, project: &str) -> Result<()> {
    let locked = sqlx::query("UPDATE dp_projects SET revision = revision WHERE project = $1")
        .bind(project)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if locked == 0 {
        return Err(PolicyError::UnknownProject(project.to_owned()));
    }
    Ok(())
}

/// The project's row: its budget and its stored running total.
async fn fetch_project(tx: &mut Transaction<'static, Any>, project: &str) -> Result<(ProjectBudget, PrivacyLoss)> {
    let row = sqlx::query(&format!("SELECT {PROJECT_COLUMNS} FROM dp_projects WHERE project = $1"))
        .bind(project)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| PolicyError::UnknownProject(project.to_owned()))?;
    project_from_row(&row)
}

/// The loss of every differentially private entry of every project admitted in [`from_ms`, `to_ms`).
async fn period_loss(tx: &mut Transaction<'static, Any>, from_ms: i64, to_ms: i64) -> Result<PrivacyLoss> {
    let rows = sqlx::query(
        "SELECT epsilon, rho, delta FROM dp_ledger WHERE at_ms >= $1 AND at_ms < $2 AND differentially_private = 1",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&mut **tx)
    .await?;
    let mut total = PrivacyLoss::default();
    for r in &rows {
        total = total.plus(&PrivacyLoss {
            epsilon: r.try_get("epsilon")?,
            rho: r.try_get("rho")?,
            delta: r.try_get("delta")?,
        });
    }
    Ok(total)
}

/// Refuses `loss` at `at_ms` if the platform ceiling of that instant's period would be exceeded. Locks the
/// ceiling row first, so spends of different projects in the period are serialised against it.
async fn check_platform_ceiling(tx: &mut Transaction<'static, Any>, at_ms: i64, loss: &PrivacyLoss) -> Result<()> {
    let row = sqlx::query(
        "SELECT period, from_ms, to_ms, epsilon, delta FROM dp_platform_ceilings WHERE from_ms <= $1 AND $1 < to_ms",
    )
    .bind(at_ms)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let period: String = row.try_get("period")?;
    sqlx::query("UPDATE dp_platform_ceilings SET period = period WHERE period = $1")
        .bind(&period)
        .execute(&mut **tx)
        .await?;
    let ceiling = Budget {
        epsilon: row.try_get("epsilon")?,
        delta: row.try_get("delta")?,
    };
    let already = period_loss(tx, row.try_get("from_ms")?, row.try_get("to_ms")?).await?;
    match accounting::admit(&ceiling, &already, loss)? {
        Ok(_) => Ok(()),
        Err(exceeded) => Err(PolicyError::PlatformCeilingExceeded {
            period,
            exceeded: Box::new(exceeded),
        }),
    }
}

/// The project's entries in sequence order.
async fn fetch_entries(tx: &mut Transaction<'static, Any>, project: &str) -> Result<Vec<LedgerEntry>> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM dp_ledger WHERE project = $1 ORDER BY seq"
    ))
    .bind(project)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

fn project_from_row(row: &AnyRow) -> Result<(ProjectBudget, PrivacyLoss)> {
    let project = ProjectBudget {
        project: row.try_get("project")?,
        budget: Budget {
            epsilon: row.try_get("budget_epsilon")?,
            delta: row.try_get("budget_delta")?,
        },
        revision: row.try_get("revision")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    };
    let total = PrivacyLoss {
        epsilon: row.try_get("spent_epsilon")?,
        rho: row.try_get("spent_rho")?,
        delta: row.try_get("spent_delta")?,
    };
    Ok((project, total))
}

fn entry_from_row(row: &AnyRow) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        project: row.try_get("project")?,
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        query: row.try_get("query")?,
        mechanism: row.try_get("mechanism")?,
        loss: PrivacyLoss {
            epsilon: row.try_get("epsilon")?,
            rho: row.try_get("rho")?,
            delta: row.try_get("delta")?,
        },
        reported_epsilon: row.try_get("reported_epsilon")?,
        reported_delta: row.try_get("reported_delta")?,
        differentially_private: row.try_get::<i64, _>("differentially_private")? != 0,
    })
}

/// Refuses empty, over-long or control-character names: they end up in audit output and terminals.
fn check_name(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(PolicyError::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(PolicyError::Invalid(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PolicyError::Invalid(format!(
            "{what} {value:?} contains control characters"
        )));
    }
    Ok(())
}

/// The current instant as unix milliseconds and RFC 3339 UTC with millisecond precision (the same instant).
fn now() -> (i64, String) {
    let now = Utc::now();
    (now.timestamp_millis(), now.to_rfc3339_opts(SecondsFormat::Millis, true))
}
