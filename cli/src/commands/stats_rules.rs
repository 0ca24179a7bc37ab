//! The platform's rules for a statistics request, which no request can widen: whatever the approval lists, a
//! table over the core store counts patients (the unit of privacy is fixed), never groups or measures a
//! pseudonym, linkage key, provenance or free-text column, and a small-cell table never uses a threshold below
//! the platform floor. The committee's own rules for an approval (mechanism, groupings) are checked after it,
//! by `tokumei_policy::committee::StatisticsRules`. One pure decision, tested exhaustively below; `tokumei stats` and the demo call it
//! before reading any data and audit a refusal with its reason code.
//!
//! The attack this closes (issue 16): a researcher approved for `patients` with `linkage_key` among the
//! columns (it is the unit of privacy) grouped by `sex,linkage_key` with `--min-cell 1` and got every
//! patient's sex under the core's stable key; with `--subject value` the unit became one row.

use tokumei_deid::dp::request::StatsRequest;
use tokumei_policy::audit_ledger::{AuditEvent, Outcome};
use tokumei_policy::authorization::Action;
use tokumei_policy::{Actor, Origin, Policy};
use tokumei_release::catalogue::{self, ColumnRole};
use tokumei_store::Table;

pub use tokumei_policy::committee::SMALL_CELL_FLOOR;

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
            let rule = match catalogue::role(table, column) {
                ColumnRole::Pseudonym => {
                    "it identifies the patient across the platform (the unit of privacy, never a key)"
                }
                ColumnRole::Withheld => "it is provenance that never leaves the core",
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

/// Writes a refusal to the audit ledger (who, which application, the reason code; never the request's values).
pub async fn audit_refusal(
    policy: &Policy,
    who: &Actor,
    application: &str,
    refusal: &StatsRefusal,
    origin: Origin<'_>,
) -> anyhow::Result<()> {
    policy
        .audit(
            AuditEvent::new(
                &who.username,
                Action::RunStatistics.as_str(),
                format!("application {application}"),
                Outcome::Denied,
            )
            .reason(refusal.code)
            .source(origin.0),
        )
        .await
        .map_err(super::access::reason)?;
    Ok(())
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
                let free_text_here = matches!(
                    (table, column),
                    (Table::Observations, "text_value") | (Table::Allergies, "substance")
                );
                let never = !matches!(column, "text_value" | "substance") || free_text_here;
                for r in [
                    request(&[column], Measure::Count),
                    request(&["sex", column], Measure::Count),
                    request(&[], Measure::parse(&format!("sum:{column}:0:1")).unwrap()),
                ] {
                    let outcome = check(&rules(Some(table), None, &r, None));
                    if never {
                        let e = outcome.unwrap_err();
                        assert_eq!(e.code, "COLUMN_NOT_GROUPABLE", "{table:?}.{column}");
                        assert!(e.message.contains(column));
                    } else {
                        assert!(outcome.is_ok(), "{table:?}.{column}");
                    }
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

    #[test]
    fn no_refusal_names_a_value() {
        let r = request(&["linkage_key"], Measure::Count);
        let e = check(&rules(Some(Table::Patients), None, &r, None)).unwrap_err();
        assert!(!e.to_string().chars().any(|c| c.is_ascii_digit()), "{e}");
    }
}
