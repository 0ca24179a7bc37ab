//! `tokumei anonymize`: optimal k-anonymity / l-diversity / t-closeness anonymisation of a CSV or
//! Parquet file, writing the anonymised CSV and a JSON report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use tokumei_deid::dataset::{Dataset, QiInput, SensitiveInput};
use tokumei_deid::hierarchy::Hierarchy;
use tokumei_deid::job::{self, JobConfig};
use tokumei_deid::model::{LDiversity, PrivacyModel, TCloseness};
use tokumei_deid::spec::{self, JobSpec};
use tokumei_deid::table::Table;
use tokumei_deid::transform::write_csv_file;

/// Arguments of `tokumei anonymize`. Flags override values from `--spec`.
#[derive(clap::Args, Debug)]
pub struct AnonymizeArgs {
    /// Input table (CSV, or Parquet if the name ends in .parquet).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Field delimiter of the CSV input (and output), e.g. ';' or '\t'.
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Quasi-identifier with its ARX CSV hierarchy, repeatable.
    #[arg(long = "qi", value_name = "NAME=HIERARCHY.csv")]
    pub qi: Vec<String>,
    /// l-diversity and t-closeness, read the same way by `anonymize` and `verify`.
    #[command(flatten)]
    pub diversity: super::model_flags::DiversityFlags,
    /// TOML job spec (QIs with hierarchy files or built-in generators, model, metric).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Delimiter of hierarchy files (default ';').
    #[arg(long = "hierarchy-delimiter")]
    pub hierarchy_delimiter: Option<String>,
    /// Sensitive attribute, optionally with a hierarchy (needed for hierarchical t-closeness).
    #[arg(long = "sensitive", value_name = "NAME[=HIERARCHY.csv]")]
    pub sensitive: Vec<String>,
    /// Insensitive attribute (copied unchanged), repeatable.
    #[arg(long = "insensitive", value_name = "NAME")]
    pub insensitive: Vec<String>,
    /// Subject (patient) column: classes count distinct subjects; a subject's rows are suppressed together.
    #[arg(long)]
    pub subject: Option<String>,
    /// k of k-anonymity.
    #[arg(long)]
    pub k: Option<u32>,
    /// Threshold on the average re-identification risk.
    #[arg(long = "average-risk")]
    pub average_risk: Option<f64>,
    /// Fraction of records that may be suppressed (default 0).
    #[arg(long)]
    pub suppression: Option<f64>,
    /// Utility metric: loss, discernibility, precision, aecs or entropy (default loss).
    #[arg(long)]
    pub metric: Option<String>,
    /// Prosecutor-risk threshold for the "records above threshold" figure (default 0.2).
    #[arg(long = "risk-threshold")]
    pub risk_threshold: Option<f64>,
    /// Sampling fraction assumed for the population-uniqueness estimate (default 0.01).
    #[arg(long = "sampling-fraction")]
    pub sampling_fraction: Option<f64>,
    /// Anonymised CSV to write.
    #[arg(long)]
    pub output: PathBuf,
    /// JSON report to write.
    #[arg(long)]
    pub report: PathBuf,
}

/// Runs `tokumei anonymize`; prints the JSON report if `json`, else a short human summary.
pub fn run(args: AnonymizeArgs, json: bool) -> Result<()> {
    let spec = match &args.spec {
        Some(path) => JobSpec::read(path).with_context(|| format!("reading spec {}", path.display()))?,
        None => JobSpec::default(),
    };
    let input = match (&args.input, &spec.input) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) if p.is_relative() => spec.base_dir.join(p),
        (None, Some(p)) => p.clone(),
        (None, None) => bail!("--input is required (or `input` in the spec)"),
    };
    let delimiter = spec::parse_delimiter(args.delimiter.as_deref().or(spec.delimiter.as_deref()).unwrap_or(","))?;
    let hierarchy_delimiter = spec::parse_delimiter(
        args.hierarchy_delimiter
            .as_deref()
            .or(spec.hierarchy_delimiter.as_deref())
            .unwrap_or(";"),
    )?;
    let is_parquet = input.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let table = if is_parquet {
        Table::read_parquet(&input)
    } else {
        Table::read_csv(&input, delimiter)
    }
    .with_context(|| format!("reading {}", input.display()))?;

    let qis: Vec<QiInput> = if args.qi.is_empty() {
        spec.qi_inputs(&table)?
    } else {
        args.qi
            .iter()
            .map(|arg| {
                let (name, file) = spec::split_assignment(arg);
                let file = file.ok_or_else(|| anyhow!("--qi expects NAME=HIERARCHY.csv, got {arg:?}"))?;
                Ok(QiInput {
                    name: name.to_string(),
                    hierarchy: read_hierarchy(Path::new(file), hierarchy_delimiter)?,
                })
            })
            .collect::<Result<_>>()?
    };
    if qis.is_empty() {
        bail!("name at least one quasi-identifier (--qi NAME=HIERARCHY.csv or --spec)");
    }
    let sensitive: Vec<SensitiveInput> = if args.sensitive.is_empty() {
        spec.sensitive_inputs(&table)?
    } else {
        args.sensitive
            .iter()
            .map(|arg| {
                let (name, file) = spec::split_assignment(arg);
                let hierarchy = file
                    .map(|f| read_hierarchy(Path::new(f), hierarchy_delimiter))
                    .transpose()?;
                Ok(SensitiveInput {
                    name: name.to_string(),
                    hierarchy,
                })
            })
            .collect::<Result<_>>()?
    };
    for name in args.insensitive.iter().chain(&spec.insensitive) {
        table.index_of(name)?;
    }
    let subject = args.subject.clone().or(spec.subject.clone());

    let k = args
        .k
        .or(spec.k)
        .ok_or_else(|| anyhow!("--k is required (or `k` in the spec)"))?;
    let l_diversity = match args.diversity.l {
        Some(l) => Some(LDiversity {
            l,
            variant: spec::parse_l_variant(&args.diversity.l_variant)?,
        }),
        None => spec.l_diversity()?,
    };
    let t_closeness = match args.diversity.t {
        Some(t) => Some(TCloseness {
            t,
            distance: spec::parse_t_distance(&args.diversity.t_distance)?,
        }),
        None => spec.t_closeness()?,
    };
    let metric = match &args.metric {
        Some(m) => spec::parse_metric(m)?,
        None => spec.metric()?.unwrap_or_default(),
    };
    let cfg = JobConfig {
        model: PrivacyModel {
            k,
            l_diversity,
            t_closeness,
            average_risk: args.average_risk.or(spec.average_risk),
            suppression_limit: args.suppression.or(spec.suppression).unwrap_or(0.0),
        },
        metric,
        risk_threshold: args.risk_threshold.or(spec.risk_threshold).unwrap_or(0.2),
        sampling_fraction: args.sampling_fraction.or(spec.sampling_fraction).unwrap_or(0.01),
    };

    let ds = Dataset::encode(&table, qis, sensitive, subject.as_deref())?;
    let out = job::run(&ds, &cfg)?;
    let out_delimiter = if is_parquet { b',' } else { delimiter };
    write_csv_file(&table, &ds, &out.anonymized, &args.output, out_delimiter)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let report_json = out.report.to_json();
    std::fs::write(&args.report, &report_json).with_context(|| format!("writing {}", args.report.display()))?;
    if json {
        println!("{report_json}");
    } else {
        print!("{}", out.report.human_summary());
        println!("wrote {} and {}", args.output.display(), args.report.display());
    }
    Ok(())
}

fn read_hierarchy(path: &Path, delimiter: u8) -> Result<Hierarchy> {
    Ok(Hierarchy::read_arx_csv(path, delimiter)?)
}
