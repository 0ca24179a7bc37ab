//! `tokumei verify`: independent re-check of an anonymised CSV. Recounts classes from the file
//! alone and fails (non-zero exit) on any violation.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::model::{LDiversity, TCloseness};
use tokumei_deid::spec;
use tokumei_deid::verify::{VerifyConfig, verify_csv};

/// Arguments of `tokumei verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Anonymised CSV to check.
    #[arg(long)]
    pub input: PathBuf,
    /// Field delimiter (guessed from the header if omitted).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Quasi-identifier column (a `=HIERARCHY.csv` suffix is accepted and ignored), repeatable.
    #[arg(long = "qi", value_name = "NAME[=HIERARCHY.csv]", required = true)]
    pub qi: Vec<String>,
    /// l-diversity and t-closeness, read the same way by `anonymize` and `verify`.
    #[command(flatten)]
    pub diversity: super::model_flags::DiversityFlags,
    /// Minimal class size (distinct subjects with --subject).
    #[arg(long)]
    pub k: u32,
    /// Sensitive column, optionally with a hierarchy (for hierarchical t-closeness / value order).
    #[arg(long = "sensitive", value_name = "NAME[=HIERARCHY.csv]")]
    pub sensitive: Vec<String>,
    /// Delimiter of hierarchy files (default ';').
    #[arg(long = "hierarchy-delimiter")]
    pub hierarchy_delimiter: Option<String>,
    /// Subject (patient) column for patient-level counting.
    #[arg(long)]
    pub subject: Option<String>,
    /// Maximal fraction of suppressed (all-`*`) records.
    #[arg(long)]
    pub suppression: Option<f64>,
    /// Maximal average re-identification risk.
    #[arg(long = "average-risk")]
    pub average_risk: Option<f64>,
}

/// Runs `tokumei verify`; prints the JSON result if `json`, else a one-line summary.
pub fn run(args: VerifyArgs, json: bool) -> Result<()> {
    let hierarchy_delimiter = spec::parse_delimiter(args.hierarchy_delimiter.as_deref().unwrap_or(";"))?;
    let delimiter = args.delimiter.as_deref().map(spec::parse_delimiter).transpose()?;
    let sensitive = args
        .sensitive
        .iter()
        .map(|arg| {
            let (name, file) = spec::split_assignment(arg);
            let h = file
                .map(|f| Hierarchy::read_arx_csv(Path::new(f), hierarchy_delimiter))
                .transpose()?;
            Ok((name.to_string(), h))
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = VerifyConfig {
        qis: args
            .qi
            .iter()
            .map(|q| spec::split_assignment(q).0.to_string())
            .collect(),
        k: args.k,
        l_diversity: args
            .diversity
            .l
            .map(|l| {
                Ok::<_, anyhow::Error>(LDiversity {
                    l,
                    variant: spec::parse_l_variant(&args.diversity.l_variant)?,
                })
            })
            .transpose()?,
        t_closeness: args
            .diversity
            .t
            .map(|t| {
                Ok::<_, anyhow::Error>(TCloseness {
                    t,
                    distance: spec::parse_t_distance(&args.diversity.t_distance)?,
                })
            })
            .transpose()?,
        sensitive,
        subject: args.subject.clone(),
        suppression_limit: args.suppression,
        average_risk: args.average_risk,
    };
    let report = verify_csv(&args.input, delimiter, &cfg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} records, {} suppressed ({:.2}%), {} classes, smallest {}",
            if report.ok { "OK" } else { "VIOLATIONS" },
            report.records,
            report.suppressed,
            100.0 * report.suppressed_fraction,
            report.classes,
            report.min_class_size
        );
        for v in &report.violations {
            println!("  {v}");
        }
    }
    if !report.ok {
        bail!(
            "verification failed: {} violation(s); first: {}",
            report.violation_count,
            report.violations.first().map_or("", String::as_str)
        );
    }
    Ok(())
}
