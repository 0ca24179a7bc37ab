//! A statistical table (`tokumei stats`) over a CSV/Parquet file or a core-store table, either
//! differentially private (OpenDP noise, spent from a project's budget in the ledger) or protected
//! by the minimum-cell rule with complementary suppression (the national databases' rule; not DP).
//!
//! The command is a client of the policy service either way and holds a session only. Over the store it asks for
//! an order the core computes ([`store`]). Over a researcher's own file ([`file`]), so that a refused request has no side
//! effect: check the request's shape → the service admits it and spends a DP table's loss (refusal stops here,
//! before the file is read) → read and group the file → draw the noise, or apply the small-cell rule at the
//! threshold the service admitted → the service audits and records the table → write the table and report
//! atomically.

pub mod file;
pub mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// Arguments of `tokumei stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Input table: CSV, or Parquet if the name ends in .parquet.
    #[arg(long, conflicts_with = "table", required_unless_present = "table")]
    pub input: Option<PathBuf>,
    /// A table of the core store's research view (opted-out and erased patients excluded).
    #[arg(long)]
    pub table: Option<String>,
    /// Group-by columns, comma-separated.
    #[arg(long = "group-by", value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// count | sum:COL:LO:HI | mean:COL:LO:HI | hist:COL:LO:HI:BINS | quantile:COL:LO:HI:Q.
    #[arg(long, default_value = "count")]
    pub measure: String,
    /// Column identifying the patient: the unit of privacy (default for --table: linkage_key).
    #[arg(long)]
    pub subject: Option<String>,
    /// Rows kept per patient; enters the sensitivity.
    #[arg(long = "max-contrib", default_value_t = 1)]
    pub max_contrib: u32,
    /// Pure differential privacy with Laplace noise at this ε.
    #[arg(long, conflicts_with = "rho")]
    pub epsilon: Option<f64>,
    /// Zero-concentrated DP with Gaussian noise at this ρ (reported as (ε, δ)).
    #[arg(long)]
    pub rho: Option<f64>,
    /// δ for partition selection (keys not public) and for reporting ρ as (ε, δ).
    #[arg(long)]
    pub delta: Option<f64>,
    /// CSV whose header names the group-by columns, one public key per line. Over the store every key must
    /// be a value of the column's code list or code system in the platform catalogue.
    #[arg(long = "public-keys", conflicts_with = "hierarchy")]
    pub public_keys: Option<PathBuf>,
    /// Generalise a group-by column first. Over the store: COL=LEVEL of the platform's hierarchy
    /// (prefecture=region, municipality_code=prefecture, icd10=category|block|chapter, birth_date=month|year|5years,
    /// yj_code=class4, jlac10=analyte, sex=value, ...; docs/statistics.md). Over a file: COL=HIERARCHY.csv:LEVEL
    /// (ARX format). When every group-by column has one whose level has a fixed list, the list is the public keys.
    #[arg(long, value_name = "COL=FILE:LEVEL")]
    pub hierarchy: Vec<String>,
    /// Delimiter of hierarchy files.
    #[arg(long = "hierarchy-delimiter", default_value = ";")]
    pub hierarchy_delimiter: String,
    /// Minimum cell size. Without --epsilon/--rho: the small-cell rule with complementary
    /// suppression (default 10). With DP: released cells whose noisy count is below it are blanked.
    #[arg(long = "min-cell")]
    pub min_cell: Option<u64>,
    /// Small-cell rule: treat zero cells as small too.
    #[arg(long = "suppress-zeros")]
    pub suppress_zeros: bool,
    /// The approved application (statistics channel) the table is made under; its DP budget pays for
    /// it. The request is checked against the approval's conditions first (recipient, channel, tables
    /// and columns — for --input the table name is the file's stem —, expiry, revocation, bans).
    #[arg(long, visible_alias = "application")]
    pub project: String,
    /// Output CSV.
    #[arg(long)]
    pub output: PathBuf,
    /// JSON report (mechanism, noise scale, loss, remaining budget, expected error per cell).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Plan only: print the mechanism, loss and expected error; spend nothing, draw nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Delimiter of the CSV input.
    #[arg(long, default_value = ",")]
    pub delimiter: String,
    /// The policy service and the session: the command is its client and holds nothing else.
    #[command(flatten)]
    pub service: crate::policy::ServiceOptions,
    /// How long to wait for the core (--table).
    #[command(flatten)]
    pub wait: crate::core_orders::WaitOptions,
}

/// The table a request reads, as approvals name it: the store table, or the input file's stem.
pub fn table_name(a: &StatsArgs) -> Result<String> {
    match (&a.table, &a.input) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(p)) => p
            .file_stem()
            .map(|s| s.to_string_lossy().split('.').next().unwrap_or_default().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("{}: cannot name the input table", p.display())),
        (None, None) => bail!("give --input FILE or --table NAME"),
    }
}

/// Reads a public-key CSV; its header must name exactly the group-by columns (in any order).
pub fn read_public_keys(path: &Path, group_by: &[String]) -> Result<Vec<Vec<String>>> {
    let mut reader = csv::ReaderBuilder::new()
        .from_path(path)
        .with_context(|| format!("reading public keys {}", path.display()))?;
    let header: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_string()).collect();
    let wanted: BTreeSet<&String> = group_by.iter().collect();
    let got: BTreeSet<&String> = header.iter().collect();
    if wanted != got || header.len() != group_by.len() {
        bail!(
            "the header of {} ({header:?}) must name the group-by columns {group_by:?}",
            path.display()
        );
    }
    let order: Vec<usize> = group_by
        .iter()
        .map(|g| header.iter().position(|h| h == g).unwrap_or_default())
        .collect();
    let mut keys = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{} line {}", path.display(), line + 2))?;
        keys.push(
            order
                .iter()
                .map(|&i| record.get(i).unwrap_or_default().to_string())
                .collect(),
        );
    }
    Ok(keys)
}
