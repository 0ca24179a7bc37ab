//! The platform's rules for a statistics request, which no request can widen: whatever the approval lists, a
//! table over the core store counts patients (the unit of privacy is fixed), never groups or measures a
//! pseudonym, linkage key, provenance or free-text column, and a small-cell table never uses a threshold below
//! the platform floor. The committee's own rules for an approval (mechanism, groupings) are checked after it,
//! by `tokumei_policy::committee::StatisticsRules`. One pure decision, tested exhaustively below: the policy service
//! calls it before any budget is spent and audits a refusal with its reason code; the core calls it again on the
//! order it receives (it is the same crate's code, so the two cannot drift).
//!
//! The attack this closes (issue 16): a researcher approved for `patients` with `linkage_key` among the
//! columns (it is the unit of privacy) grouped by `sex,linkage_key` with `--min-cell 1` and got every
//! patient's sex under the core's stable key; with `--subject value` the unit became one row.

use serde::{Deserialize, Serialize};
use tokumei_deid::dp::request::{Keys, Measure, Privacy, StatsRequest};

use crate::catalogue::{self, ColumnRole, PlatformHierarchy};
use crate::schema::Table;

/// The smallest minimum cell of a small-cell table anywhere on the platform (the national databases' rule of 10):
/// a committee may raise it for its approval, nobody may lower it.
pub const SMALL_CELL_FLOOR: u64 = 10;

/// The unit of privacy of every statistic over a core-store table.
pub const STORE_SUBJECT: &str = "linkage_key";

/// Why a request was refused: a stable code and a message naming columns and rules, never a data value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRefusal {
    /// Stable, machine-readable reason.
    pub code: &'static str,
    /// What was refused and which rule says so.
    pub message: String,
}

impl std::fmt::Display for StatsRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

/// What the decision looks at.
pub struct StatsRules<'a> {
    /// The platform table the request reads (a store table, or an input file named like one), if any.
    pub table: Option<Table>,
    /// Whether it reads the core store (`--table`) rather than a file.
    pub from_store: bool,
    /// The `--subject` the caller gave, if any.
    pub subject_given: Option<&'a str>,
    /// The request.
    pub request: &'a StatsRequest,
    /// The small-cell threshold, when the table is published under the small-cell rule (no DP).
    pub small_cell_threshold: Option<u64>,
}

/// Refuses what the platform never allows, whatever the approval says.
pub fn check(r: &StatsRules<'_>) -> Result<(), StatsRefusal> {
    if r.from_store && r.table.is_none() {
        // Only the store's own tables, by their exact names: SQL engines fold `Patients` to `patients`, and a
        // name the platform does not know would escape every column rule below.
        return Err(StatsRefusal {
            code: "TABLE_NOT_IN_STORE",
            message: "--table must name one of the core store's tables exactly (patients, encounters, conditions, \
                      medications, observations, allergies)"
                .into(),
        });
    }
    if r.from_store && r.subject_given.is_some() {
        return Err(StatsRefusal {
            code: "SUBJECT_FIXED",
            message: format!(
                "--subject is not accepted on core-store tables: the unit of privacy is always the patient \
                 ({STORE_SUBJECT})"
            ),
        });
    }
    if let Some(threshold) = r.small_cell_threshold
        && threshold < SMALL_CELL_FLOOR
    {
        return Err(StatsRefusal {
            code: "SMALL_CELL_BELOW_FLOOR",
            message: format!(
                "minimum cell {threshold} is below the platform floor of {SMALL_CELL_FLOOR} for small-cell tables"
            ),
        });
    }
    if let Some(table) = r.table {
        let measured = r.request.measure.column();
        for (column, how) in r
            .request
            .group_by
            .iter()
            .map(|c| (c.as_str(), "grouped by"))
            .chain(measured.map(|c| (c, "measured")))
        {
            // Over the store every column is the catalogue's (unknown = withheld); a researcher's own file named
            // like a platform table may add columns of its own, but never frees the platform's identifying ones.
            let role = if r.from_store {
                catalogue::role(table, column)
            } else {
                catalogue::catalogued_role(table, column).unwrap_or(ColumnRole::Plain)
            };
            let rule = match role {
                ColumnRole::Pseudonym => {
                    "it identifies the patient across the platform (the unit of privacy, never a key)"
                }
                ColumnRole::Withheld => "it is provenance or a linkage key, which never leaves the core",
                ColumnRole::FreeText => "free text can say anything, names included",
                _ => continue,
            };
            return Err(StatsRefusal {
                code: "COLUMN_NOT_GROUPABLE",
                message: format!("column {}.{column} cannot be {how}: {rule}", table.name()),
            });
        }
    }
    Ok(())
}

/// Most public keys a table over the store may declare (the cross product of its columns' lists): beyond it a
/// table is mostly noise and its output would not fit a reviewer's screen.
pub const MAX_PUBLIC_KEYS: usize = 100_000;

/// A level of a platform hierarchy a store-table request groups by (`--hierarchy COL=LEVEL`).
#[derive(Debug, Clone)]
pub struct CatalogueLevel {
    /// The group-by column.
    pub column: String,
    /// Its platform hierarchy.
    pub hierarchy: PlatformHierarchy,
    /// The level asked for.
    pub level: usize,
}

/// What the catalogue makes of a store-table request's hierarchies and keys.
#[derive(Debug, Clone)]
pub struct CatalogueResolution {
    /// The levels asked for.
    pub levels: Vec<CatalogueLevel>,
    /// The public keys: declared ones (checked against the catalogue), or the catalogue's lists when every
    /// group-by column names a level that has one; `None` = DP partition selection.
    pub keys: Option<Vec<Vec<String>>>,
}

fn refusal(code: &'static str, message: String) -> StatsRefusal {
    StatsRefusal { code, message }
}

/// Resolves a store-table request against the platform catalogue: hierarchies are the platform's, named by
/// column and level (`prefecture=region`, `icd10=chapter`, `birth_date=year`), never a file; declared keys must
/// be values of the column's code list or code system; keys of a hierarchy level come from the code system,
/// never from the data. Refusals name the column and the rule, never a key.
pub fn resolve_catalogue(
    table: Table,
    hierarchy_args: &[String],
    group_by: &[String],
    declared: Option<&[Vec<String>]>,
) -> Result<CatalogueResolution, StatsRefusal> {
    let mut levels: Vec<CatalogueLevel> = Vec::new();
    for arg in hierarchy_args {
        let (column, level) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        let column = column.trim();
        if level.contains(':') || level.contains('/') || level.contains('.') {
            return Err(refusal(
                "HIERARCHY_NOT_IN_CATALOGUE",
                format!(
                    "hierarchy for column {}.{column}: store tables use the platform's hierarchies, named as \
                     COL=LEVEL (no hierarchy files)",
                    table.name()
                ),
            ));
        }
        let Some(h) = catalogue::hierarchy(table, column) else {
            return Err(refusal(
                "HIERARCHY_NOT_IN_CATALOGUE",
                format!("column {}.{column} has no platform hierarchy", table.name()),
            ));
        };
        let Some(level) = h.level(level) else {
            return Err(refusal(
                "HIERARCHY_NOT_IN_CATALOGUE",
                format!(
                    "column {}.{column}: the platform hierarchy's levels are {}",
                    table.name(),
                    h.levels.join(", ")
                ),
            ));
        };
        if !group_by.iter().any(|g| g == column) || levels.iter().any(|l| l.column == column) {
            return Err(refusal(
                "HIERARCHY_NOT_IN_CATALOGUE",
                format!("column {}.{column}: one level per group-by column", table.name()),
            ));
        }
        levels.push(CatalogueLevel {
            column: column.to_owned(),
            hierarchy: h,
            level,
        });
    }
    if let Some(keys) = declared {
        check_declared_keys(table, group_by, keys)?;
        return Ok(CatalogueResolution {
            levels,
            keys: Some(keys.to_vec()),
        });
    }
    // The catalogue's lists, when every group-by column names a level that has one.
    let mut keys: Vec<Vec<String>> = vec![Vec::new()];
    for column in group_by {
        let Some(list) = levels
            .iter()
            .find(|l| &l.column == column)
            .and_then(|l| catalogue::public_keys(table, column, l.level))
        else {
            return Ok(CatalogueResolution { levels, keys: None });
        };
        if keys.len().saturating_mul(list.len()) > MAX_PUBLIC_KEYS {
            return Err(refusal(
                "PUBLIC_KEYS_TOO_MANY",
                format!(
                    "the levels asked for give more than {MAX_PUBLIC_KEYS} public keys; choose coarser levels or \
                     DP partition selection (--delta)"
                ),
            ));
        }
        keys = keys
            .into_iter()
            .flat_map(|k| {
                list.iter().map(move |l| {
                    let mut k = k.clone();
                    k.push(l.clone());
                    k
                })
            })
            .collect();
    }
    Ok(CatalogueResolution {
        levels,
        keys: Some(keys),
    })
}

/// Declared keys of a store table are values of each column's code list or code system; a column without
/// either cannot take declared keys (the platform could not tell a public list from one copied out of data).
fn check_declared_keys(table: Table, group_by: &[String], keys: &[Vec<String>]) -> Result<(), StatsRefusal> {
    for (i, column) in group_by.iter().enumerate() {
        let mut outside = 0usize;
        for key in keys {
            match key.get(i).map(|v| catalogue::is_known_value(table, column, v)) {
                Some(Some(true)) => {}
                Some(Some(false)) | None => outside += 1,
                Some(None) => {
                    return Err(refusal(
                        "KEYS_NOT_DECLARABLE",
                        format!(
                            "column {}.{column} has no code list in the platform catalogue: its keys cannot be \
                             declared; use DP partition selection (--delta)",
                            table.name()
                        ),
                    ));
                }
            }
        }
        if outside > 0 {
            return Err(refusal(
                "KEY_NOT_IN_CATALOGUE",
                format!(
                    "{outside} declared key(s) of column {}.{column} are not values of its code system in the \
                     platform catalogue",
                    table.name()
                ),
            ));
        }
    }
    if keys.len() > MAX_PUBLIC_KEYS {
        return Err(refusal(
            "PUBLIC_KEYS_TOO_MANY",
            format!("more than {MAX_PUBLIC_KEYS} declared keys"),
        ));
    }
    Ok(())
}

/// Where a table's counts come from: the population the small-cell audit groups tables by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    /// The store's research snapshot, or the input file's digest.
    pub name: String,
    /// The table's name (a store table, or an input file's stem): one namespace, so the same data read
    /// both ways is the same source.
    pub source: String,
}

/// A statistics request in the researcher's words. Over the core store ([`StatisticsSpec::admit`]) it is what
/// the policy service admits and the core computes: the payload of the core's order; the measure and the hierarchy
/// levels are parsed on both sides by the same function, so the two cannot read one request two ways. Over a
/// researcher's own file ([`StatisticsSpec::admit_file`]) it is what the policy service admits and spends for
/// before the researcher's command computes the table: `table` is the file's stem, `hierarchy` names the
/// generalised columns (`COL=LEVEL`; the hierarchy files stay with the researcher) and the keys the hierarchies
/// give come as declared public keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticsSpec {
    /// The approval it is made under (statistics channel); its budget pays for it.
    pub application: String,
    /// The store table, by its exact name.
    pub table: String,
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// Platform hierarchy levels, `COL=LEVEL`.
    pub hierarchy: Vec<String>,
    /// `count` | `sum:COL:LO:HI` | `mean:COL:LO:HI` | `hist:COL:LO:HI:BINS` | `quantile:COL:LO:HI:Q`.
    pub measure: String,
    /// Rows kept per patient; enters the sensitivity.
    pub max_contrib: u32,
    /// Pure differential privacy at this ε.
    pub epsilon: Option<f64>,
    /// Zero-concentrated DP at this ρ.
    pub rho: Option<f64>,
    /// δ for partition selection and for reporting ρ as (ε, δ).
    pub delta: Option<f64>,
    /// Declared public keys, one row per key, in group-by order (checked against the catalogue).
    pub public_keys: Option<Vec<Vec<String>>>,
    /// With DP: released cells whose noisy count is below it are blanked. Without: the small-cell minimum, which
    /// the policy service sets to the approval's before the order leaves it.
    pub min_cell: Option<u64>,
    /// Small-cell rule: zero cells are small too.
    pub suppress_zeros: bool,
    /// A unit of privacy the caller named: always refused over the store (`SUBJECT_FIXED`), carried so that the
    /// refusal is the service's, and audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// A statistics order as the policy service signs it and the core reads it: the request, and the loss the
/// approval's budget paid for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticsOrder {
    /// The request.
    pub request: StatisticsSpec,
    /// The loss spent before the order was signed (DP tables only).
    pub paid: Option<tokumei_deid::dp::accounting::PrivacyLoss>,
}

/// A store statistics request that passed the platform's rules and catalogue.
#[derive(Debug, Clone)]
pub struct AdmittedStatistics {
    /// The store table.
    pub table: Table,
    /// The engine's request; its generalisations are built by the core over the values it reads.
    pub request: StatsRequest,
    /// The platform hierarchies' levels asked for.
    pub levels: Vec<CatalogueLevel>,
    /// Whether the table is differentially private (else: small-cell rule).
    pub private: bool,
}

impl StatisticsSpec {
    /// The DP parameter, if any (`INVALID_ARGUMENT` with both).
    pub fn privacy(&self) -> Result<Option<Privacy>, StatsRefusal> {
        match (self.epsilon, self.rho) {
            (Some(e), None) => Ok(Some(Privacy::Epsilon(e))),
            (None, Some(r)) => Ok(Some(Privacy::Rho(r))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(refusal("INVALID_ARGUMENT", "give ε or ρ, not both".into())),
        }
    }

    /// The request as the budget ledger and the provision register describe it: the query, never a key's value
    /// (declared keys are counted).
    pub fn describe(&self) -> String {
        self.described(
            &format!("store:{}", self.table),
            Some(STORE_SUBJECT),
            "keys=catalogue_or_selected",
        )
    }

    /// Checks the request against what the platform never allows and resolves its hierarchies and keys in the
    /// catalogue. The refusal's code is stable; its message names columns and rules, never a value.
    pub fn admit(&self) -> Result<AdmittedStatistics, StatsRefusal> {
        let invalid = |m: String| refusal("INVALID_ARGUMENT", m);
        let measure = Measure::parse(&self.measure).map_err(|e| invalid(e.to_string()))?;
        let privacy = self.privacy()?;
        let table = Table::from_name(&self.table);
        let resolved =
            table.map(|t| resolve_catalogue(t, &self.hierarchy, &self.group_by, self.public_keys.as_deref()));
        let (levels, keys, catalogue_refusal) = match resolved {
            Some(Ok(r)) => (r.levels, r.keys.map_or(Keys::Select, Keys::Public), None),
            Some(Err(e)) => (Vec::new(), Keys::Select, Some(e)),
            None => (Vec::new(), Keys::Select, None),
        };
        let request = StatsRequest {
            group_by: self.group_by.clone(),
            generalise: Vec::new(),
            measure,
            subject: Some(STORE_SUBJECT.to_owned()),
            max_contrib: self.max_contrib,
            // Not a DP release when absent; the value is then never used (only `validate_shape` runs).
            privacy: privacy.unwrap_or(Privacy::Epsilon(f64::INFINITY)),
            delta: self.delta,
            keys,
        };
        check(&StatsRules {
            table,
            from_store: true,
            subject_given: self.subject.as_deref(),
            request: &request,
            small_cell_threshold: privacy.is_none().then(|| self.min_cell.unwrap_or(SMALL_CELL_FLOOR)),
        })?;
        if let Some(e) = catalogue_refusal {
            return Err(e);
        }
        let table = table.ok_or_else(|| refusal("TABLE_NOT_IN_STORE", "no store table of that name".into()))?;
        validate_mechanism(&request, privacy.is_some())?;
        Ok(AdmittedStatistics {
            table,
            request,
            levels,
            private: privacy.is_some(),
        })
    }

    /// Checks a request over a researcher's own file against what the platform never allows (a file named like a
    /// store table is held to that table's rules) and builds the engine's request without its generalisations
    /// (which the researcher's command applies with its own hierarchy files): enough to plan the loss.
    pub fn admit_file(&self) -> Result<AdmittedFileStatistics, StatsRefusal> {
        let measure = Measure::parse(&self.measure).map_err(|e| refusal("INVALID_ARGUMENT", e.to_string()))?;
        // Each generalised column is a group-by column with a level number: the text enters the ledger and the
        // provision register, so nothing else may.
        for h in &self.hierarchy {
            let named = h.split_once('=').filter(|(column, level)| {
                self.group_by.contains(&(*column).to_owned()) && level.parse::<u32>().is_ok()
            });
            if named.is_none() {
                return Err(refusal(
                    "INVALID_ARGUMENT",
                    "a generalised column is named as COL=LEVEL, COL a group-by column and LEVEL a number".into(),
                ));
            }
        }
        let privacy = self.privacy()?;
        let request = StatsRequest {
            group_by: self.group_by.clone(),
            generalise: Vec::new(),
            measure,
            subject: self.subject.clone(),
            max_contrib: self.max_contrib,
            // Not a DP release when absent; the value is then never used (only `validate_shape` runs).
            privacy: privacy.unwrap_or(Privacy::Epsilon(f64::INFINITY)),
            delta: self.delta,
            keys: self.public_keys.clone().map_or(Keys::Select, Keys::Public),
        };
        check(&StatsRules {
            table: Table::from_name(&self.table),
            from_store: false,
            subject_given: self.subject.as_deref(),
            request: &request,
            small_cell_threshold: privacy.is_none().then(|| self.min_cell.unwrap_or(SMALL_CELL_FLOOR)),
        })?;
        validate_mechanism(&request, privacy.is_some())?;
        Ok(AdmittedFileStatistics {
            request,
            private: privacy.is_some(),
        })
    }

    /// A file request as the budget ledger and the provision register describe it: the file's stem, never its
    /// path or a key's value.
    pub fn describe_file(&self) -> String {
        self.described(
            &format!("file:{}", self.table),
            self.subject.as_deref(),
            "keys=selected",
        )
    }

    /// The one text both descriptions are: source, grouping, measure, unit of privacy, generalisations, keys
    /// (counted, never listed), parameters.
    fn described(&self, source: &str, subject: Option<&str>, undeclared_keys: &str) -> String {
        let mut q = format!(
            "stats source={source} group_by={} measure={}",
            self.group_by.join(","),
            self.measure
        );
        if let Some(s) = subject {
            q.push_str(&format!(" subject={s} max_contrib={}", self.max_contrib));
        }
        for h in &self.hierarchy {
            q.push_str(&format!(" hierarchy={h}"));
        }
        match &self.public_keys {
            Some(k) => q.push_str(&format!(" public_keys=declared({})", k.len())),
            None => q.push_str(&format!(" {undeclared_keys}")),
        }
        for (name, v) in [("epsilon", self.epsilon), ("rho", self.rho), ("delta", self.delta)] {
            if let Some(v) = v {
                q.push_str(&format!(" {name}={v}"));
            }
        }
        if let Some(m) = self.min_cell {
            q.push_str(&format!(" min_cell={m}"));
        }
        q
    }
}

/// A file statistics request that passed the platform's rules.
#[derive(Debug, Clone)]
pub struct AdmittedFileStatistics {
    /// The engine's request, without generalisations: what the loss is planned from.
    pub request: StatsRequest,
    /// Whether the table is differentially private (else: small-cell rule).
    pub private: bool,
}

/// What every statistical table must be, whatever it reads: a DP request valid for its mechanism; without DP a
/// count under the small-cell rule, with no δ.
fn validate_mechanism(request: &StatsRequest, private: bool) -> Result<(), StatsRefusal> {
    let invalid = |m: String| refusal("INVALID_ARGUMENT", m);
    if private {
        return request.validate().map_err(|e| invalid(e.to_string()));
    }
    request.validate_shape().map_err(|e| invalid(e.to_string()))?;
    if !matches!(request.measure, Measure::Count | Measure::Histogram { .. }) {
        return Err(invalid(
            "without ε or ρ only counts (count, hist) can be published, under the small-cell rule".into(),
        ));
    }
    if request.delta.is_some() {
        return Err(invalid(
            "δ only applies to differentially private tables (ε or ρ)".into(),
        ));
    }
    Ok(())
}

/// Every column a request reads: group-by columns, the measured column and the subject column (what an approval
/// must list).
pub fn columns_used(request: &StatsRequest) -> Vec<String> {
    let mut cols: Vec<String> = request.group_by.clone();
    cols.extend(request.measure.column().map(str::to_owned));
    cols.extend(request.subject.clone());
    cols.sort();
    cols.dedup();
    cols
}

#[cfg(test)]
mod tests {
    use tokumei_deid::dp::request::{Keys, Measure, Privacy};

    use super::*;

    fn request(group_by: &[&str], measure: Measure) -> StatsRequest {
        StatsRequest {
            group_by: group_by.iter().map(|c| (*c).to_owned()).collect(),
            generalise: vec![],
            measure,
            subject: Some(STORE_SUBJECT.into()),
            max_contrib: 1,
            privacy: Privacy::Epsilon(1.0),
            delta: None,
            keys: Keys::Select,
        }
    }

    fn rules<'a>(
        table: Option<Table>,
        subject: Option<&'a str>,
        r: &'a StatsRequest,
        t: Option<u64>,
    ) -> StatsRules<'a> {
        StatsRules {
            table,
            from_store: table.is_some(),
            subject_given: subject,
            request: r,
            small_cell_threshold: t,
        }
    }

    #[test]
    fn the_measured_attacks_are_refused_with_their_codes() {
        // sex × linkage_key at minimum cell 1: every patient's sex under the core's key.
        let r = request(&["sex", "linkage_key"], Measure::Count);
        let e = check(&rules(Some(Table::Patients), None, &r, Some(1))).unwrap_err();
        assert_eq!(e.code, "SMALL_CELL_BELOW_FLOOR");
        let e = check(&rules(Some(Table::Patients), None, &r, Some(10))).unwrap_err();
        assert_eq!(e.code, "COLUMN_NOT_GROUPABLE");
        let e = check(&rules(Some(Table::Patients), None, &r, None)).unwrap_err();
        assert_eq!(e.code, "COLUMN_NOT_GROUPABLE", "with DP too");
        // --subject value: one row as the unit of privacy.
        let r = request(&["jlac10"], Measure::Count);
        let e = check(&rules(Some(Table::Observations), Some("value"), &r, None)).unwrap_err();
        assert_eq!(e.code, "SUBJECT_FIXED");
        // Even naming the platform's own subject is refused: the flag has no meaning on the store.
        assert_eq!(
            check(&rules(Some(Table::Observations), Some(STORE_SUBJECT), &r, None))
                .unwrap_err()
                .code,
            "SUBJECT_FIXED"
        );
    }

    #[test]
    fn every_identifying_provenance_and_free_text_column_is_refused_in_every_table_and_position() {
        for table in Table::ALL {
            for column in [
                "linkage_key",
                "hospital_pseudonym",
                "source_hospital",
                "batch_id",
                "ingested_at",
                "linkage_quality",
                "text_value",
                "substance",
            ] {
                for r in [
                    request(&[column], Measure::Count),
                    request(&[column, "sex"], Measure::Count),
                    request(&[], Measure::parse(&format!("sum:{column}:0:1")).unwrap()),
                ] {
                    // Free text where it exists, and a column the catalogue does not know where it does not.
                    let e = check(&rules(Some(table), None, &r, None)).unwrap_err();
                    assert_eq!(e.code, "COLUMN_NOT_GROUPABLE", "{table:?}.{column}");
                    assert!(e.message.contains(column));
                }
            }
        }
    }

    #[test]
    fn ordinary_requests_pass_and_files_keep_their_subject() {
        let r = request(&["prefecture", "sex"], Measure::Count);
        assert!(check(&rules(Some(Table::Patients), None, &r, Some(10))).is_ok());
        assert!(check(&rules(Some(Table::Patients), None, &r, Some(25))).is_ok());
        let r = request(&["jlac10"], Measure::parse("mean:value:0:500").unwrap());
        assert!(check(&rules(Some(Table::Observations), None, &r, None)).is_ok());
        // A researcher's own file (not a platform table) chooses its subject; the floor still holds.
        let r = request(&["education"], Measure::Count);
        let file = StatsRules {
            table: None,
            from_store: false,
            subject_given: Some("workclass"),
            request: &r,
            small_cell_threshold: Some(10),
        };
        assert!(check(&file).is_ok());
        let below = StatsRules {
            small_cell_threshold: Some(9),
            ..file
        };
        assert_eq!(check(&below).unwrap_err().code, "SMALL_CELL_BELOW_FLOOR");
    }

    #[test]
    fn store_tables_are_named_exactly() {
        let r = request(&["linkage_key"], Measure::Count);
        let folded = StatsRules {
            table: None,
            from_store: true,
            subject_given: None,
            request: &r,
            small_cell_threshold: None,
        };
        assert_eq!(check(&folded).unwrap_err().code, "TABLE_NOT_IN_STORE");
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_second_linkage_key_is_refused_like_the_first() {
        let r = request(&["sex", "id4_key"], Measure::Count);
        let e = check(&rules(Some(Table::Patients), None, &r, Some(10))).unwrap_err();
        assert_eq!(e.code, "COLUMN_NOT_GROUPABLE");
    }

    #[test]
    fn store_hierarchies_come_from_the_catalogue_never_a_file() {
        let by = args(&["prefecture"]);
        // The attack of issue 16: a researcher's hierarchy file over a store column.
        for h in [
            "prefecture=/tmp/h.csv:1",
            "prefecture=h.csv:1",
            "department=1",
            "prefecture=decade",
        ] {
            let group = if h.starts_with("department") {
                args(&["department"])
            } else {
                by.clone()
            };
            let e = resolve_catalogue(Table::Patients, &args(&[h]), &group, None).unwrap_err();
            assert_eq!(e.code, "HIERARCHY_NOT_IN_CATALOGUE", "{h}");
            assert!(!e.message.contains("h.csv") && !e.message.contains("decade"), "{e}");
        }
        // A level of a column that is not grouped by, or two levels of one column.
        let e = resolve_catalogue(Table::Patients, &args(&["sex=value"]), &by, None).unwrap_err();
        assert_eq!(e.code, "HIERARCHY_NOT_IN_CATALOGUE");
        let two = args(&["prefecture=region", "prefecture=1"]);
        assert_eq!(
            resolve_catalogue(Table::Patients, &two, &by, None).unwrap_err().code,
            "HIERARCHY_NOT_IN_CATALOGUE"
        );
        // By name or number; the keys are the code system's, not the data's.
        for level in ["region", "1"] {
            let r = resolve_catalogue(Table::Patients, &args(&[&format!("prefecture={level}")]), &by, None).unwrap();
            assert_eq!(r.levels[0].level, 1);
            assert_eq!(r.keys.map(|k| k.len()), Some(8));
        }
        // Two columns: the cross product of their lists.
        let r = resolve_catalogue(
            Table::Patients,
            &args(&["prefecture=prefecture", "sex=value"]),
            &args(&["prefecture", "sex"]),
            None,
        )
        .unwrap();
        assert_eq!(r.keys.map(|k| k.len()), Some(47 * 3));
        // A level without a list, or a column without a level: DP partition selection.
        let r = resolve_catalogue(Table::Conditions, &args(&["icd10=code"]), &args(&["icd10"]), None).unwrap();
        assert!(r.keys.is_none());
        let r = resolve_catalogue(
            Table::Patients,
            &args(&["sex=value"]),
            &args(&["sex", "prefecture"]),
            None,
        )
        .unwrap();
        assert!(r.keys.is_none());
        // Too many keys for one table.
        let e = resolve_catalogue(
            Table::Conditions,
            &args(&["icd10=category", "onset_date=month"]),
            &args(&["icd10", "onset_date"]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, "PUBLIC_KEYS_TOO_MANY");
    }

    #[test]
    fn declared_keys_are_checked_against_the_catalogue_and_never_named() {
        let by = args(&["prefecture", "sex"]);
        let ok = vec![args(&["13", "F"]), args(&["27", "M"])];
        assert!(resolve_catalogue(Table::Patients, &[], &by, Some(&ok)).is_ok());
        let marker = vec![args(&["13", "F"]), args(&["ZZMARK4242", "M"])];
        let e = resolve_catalogue(Table::Patients, &[], &by, Some(&marker)).unwrap_err();
        assert_eq!(e.code, "KEY_NOT_IN_CATALOGUE");
        assert!(
            e.message.contains("1 declared key") && !e.message.contains("ZZMARK"),
            "{e}"
        );
        // A column with no code list: its keys cannot be declared at all.
        let e =
            resolve_catalogue(Table::Encounters, &[], &args(&["department"]), Some(&[args(&["内科"])])).unwrap_err();
        assert_eq!(e.code, "KEYS_NOT_DECLARABLE");
        assert!(!e.message.contains("内科"));
        // Well-formed codes of an open code system are accepted.
        let codes = vec![args(&["E11.9"]), args(&["I10"])];
        assert!(resolve_catalogue(Table::Conditions, &[], &args(&["icd10"]), Some(&codes)).is_ok());
    }

    #[test]
    fn no_refusal_names_a_value() {
        let r = request(&["linkage_key"], Measure::Count);
        let e = check(&rules(Some(Table::Patients), None, &r, None)).unwrap_err();
        assert!(!e.to_string().chars().any(|c| c.is_ascii_digit()), "{e}");
    }

    fn store_request(table: &str, group_by: &[&str], measure: &str) -> StatisticsSpec {
        StatisticsSpec {
            application: "APP-1".into(),
            table: table.into(),
            group_by: group_by.iter().map(|c| (*c).to_owned()).collect(),
            hierarchy: vec![],
            measure: measure.into(),
            max_contrib: 1,
            epsilon: None,
            rho: None,
            delta: None,
            public_keys: None,
            min_cell: None,
            suppress_zeros: false,
            subject: None,
        }
    }

    #[test]
    fn a_store_request_is_admitted_once_and_refused_with_its_code() {
        let code = |s: &StatisticsSpec| s.admit().map(|_| ()).map_err(|e| e.code);
        let mut dp = store_request("patients", &["sex"], "count");
        dp.epsilon = Some(0.5);
        dp.hierarchy = vec!["sex=value".into()];
        let admitted = dp.admit().expect("admitted");
        assert!(admitted.private);
        assert_eq!(admitted.request.subject.as_deref(), Some(STORE_SUBJECT));
        assert!(matches!(admitted.request.keys, Keys::Public(ref k) if k.len() == 3));
        assert_eq!(columns_used(&admitted.request), ["linkage_key", "sex"]);
        let small = store_request("patients", &["sex"], "count");
        assert!(!small.admit().expect("small-cell").private);

        let mut both = dp.clone();
        both.rho = Some(0.1);
        assert_eq!(code(&both), Err("INVALID_ARGUMENT"));
        assert_eq!(
            code(&store_request("Patients", &["sex"], "count")),
            Err("TABLE_NOT_IN_STORE")
        );
        let mut subject = small.clone();
        subject.subject = Some("value".into());
        assert_eq!(code(&subject), Err("SUBJECT_FIXED"));
        assert_eq!(
            code(&store_request("observations", &["jlac10"], "sum:value:0:100")),
            Err("INVALID_ARGUMENT"),
            "only counts without DP"
        );
        let mut below = small.clone();
        below.min_cell = Some(3);
        assert_eq!(code(&below), Err("SMALL_CELL_BELOW_FLOOR"));
        let mut declared = dp.clone();
        declared.hierarchy.clear();
        declared.public_keys = Some(vec![vec!["F".into()], vec!["x-not-a-code".into()]]);
        let refused = declared.admit().expect_err("refused");
        assert_eq!(refused.code, "KEY_NOT_IN_CATALOGUE");
        assert!(!refused.message.contains("x-not-a-code"), "{}", refused.message);
        // The platform's rules come before the catalogue's, whatever else is wrong.
        let mut linkage = store_request("patients", &["sex", "linkage_key"], "count");
        linkage.hierarchy = vec!["prefecture=nowhere".into()];
        assert_eq!(code(&linkage), Err("COLUMN_NOT_GROUPABLE"));
    }

    #[test]
    fn the_description_counts_declared_keys_and_never_lists_them() {
        let mut s = store_request("patients", &["sex"], "count");
        s.public_keys = Some(vec![vec!["F".into()], vec!["M".into()]]);
        s.epsilon = Some(0.5);
        let d = s.describe();
        assert!(
            d.contains("public_keys=declared(2)") && d.contains("epsilon=0.5"),
            "{d}"
        );
        assert!(!d.contains("\"F\""), "{d}");
    }

    /// A file is held to the rules of the store table it is named like, and to the mechanism's: what the service
    /// admits before it spends for a file, with the same codes as over the store.
    #[test]
    fn file_requests_meet_the_platforms_rules_under_their_stem() {
        let code = |s: &StatisticsSpec| s.admit_file().map(|_| ()).map_err(|e| e.code);
        let mut dp = store_request("adult", &["sex"], "count");
        dp.epsilon = Some(0.1);
        assert_eq!(code(&dp), Err("INVALID_ARGUMENT"), "keys chosen from the data need δ");
        dp.delta = Some(1e-6);
        let admitted = dp.admit_file().expect("a DP count by sex over a file");
        assert!(admitted.private);
        assert_eq!(admitted.request.keys, Keys::Select);
        assert!(tokumei_deid::dp::plan::plan(&admitted.request).is_ok());
        let mut declared = dp.clone();
        declared.delta = None;
        declared.public_keys = Some(vec![vec!["F".into()], vec!["M".into()]]);
        let keys = declared.admit_file().expect("declared keys need no δ").request.keys;
        assert_eq!(keys, Keys::Public(vec![vec!["F".into()], vec!["M".into()]]));
        // A file's own unit of privacy is allowed (the store's is fixed).
        let mut subject = dp.clone();
        subject.subject = Some("person".into());
        assert_eq!(code(&subject), Ok(()));
        // Named like the store's patients table: its linkage key is not a grouping, in a file either.
        let mut linkage = store_request("patients", &["sex", "linkage_key"], "count");
        linkage.min_cell = Some(10);
        assert_eq!(code(&linkage), Err("COLUMN_NOT_GROUPABLE"));
        // Without DP: counts only, at the floor or above, and no δ.
        let mut small = store_request("adult", &["sex"], "mean:age:0:100");
        assert_eq!(code(&small), Err("INVALID_ARGUMENT"));
        small.measure = "count".into();
        small.min_cell = Some(3);
        assert_eq!(code(&small), Err("SMALL_CELL_BELOW_FLOOR"));
        small.min_cell = None;
        small.delta = Some(1e-6);
        assert_eq!(code(&small), Err("INVALID_ARGUMENT"));
        small.delta = None;
        assert_eq!(code(&small), Ok(()));
        // The ledger's description names the file's stem, never a path.
        assert!(small.describe_file().starts_with("stats source=file:adult "));
        // Generalisations are a group-by column and a level number, nothing else (the text enters the registers).
        for bad in ["race=2", "sex=level", "sex", "sex=1;DROP"] {
            let mut h = small.clone();
            h.hierarchy = vec![bad.into()];
            assert_eq!(code(&h), Err("INVALID_ARGUMENT"), "{bad}");
        }
        small.hierarchy = vec!["sex=1".into()];
        assert_eq!(code(&small), Ok(()));
    }
}
