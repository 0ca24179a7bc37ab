//! Fee estimates (手数料) from the processor's configured tariffs.
//!
//! A provision fee has four parts: a basic fee per application, coordination (reviewing and preparing the
//! application with the researcher), data (extraction and anonymisation per table), and the cloud research
//! environment (per month, on-platform use only). Processors charge either flat rates per unit or the
//! actual cost of the hours worked at an hourly rate; both modes are configured here, in yen, and the
//! estimate states which was used and how each part was computed, so a researcher can check it and the
//! public register can show it.

use serde::{Deserialize, Serialize};

use super::application::{ApplicationForm, Channel};
use crate::error::{PolicyError, Result};

/// How fees are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeMode {
    /// Fixed amounts per application, per table, per month.
    Flat,
    /// Estimated hours at the hourly rate, plus the cloud environment at cost.
    ActualCost,
}

/// The processor's tariffs, in yen. Loaded from `policy/tariffs.toml`; the defaults are placeholders to
/// be replaced by the processor's published fee schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tariff {
    /// Flat or actual-cost.
    pub mode: FeeMode,
    /// Basic fee per application (both modes).
    pub basic_yen: u64,
    /// Flat: coordination per application.
    pub coordination_flat_yen: u64,
    /// Flat: additional coordination per study of an umbrella application beyond the first.
    pub coordination_per_extra_study_yen: u64,
    /// Flat: data preparation per table.
    pub data_per_table_yen: u64,
    /// Flat: statistics channel, per application (no extraction, tables of results).
    pub statistics_flat_yen: u64,
    /// Flat or actual-cost: research environment per month (on-platform channel).
    pub cloud_per_month_yen: u64,
    /// Actual cost: hourly rate of the processor's staff.
    pub hourly_rate_yen: u64,
    /// Actual cost: coordination hours per application.
    pub coordination_hours: u64,
    /// Actual cost: extra coordination hours per study beyond the first.
    pub coordination_hours_per_extra_study: u64,
    /// Actual cost: extraction and anonymisation hours per table.
    pub data_hours_per_table: u64,
    /// Actual cost: hours to prepare a statistics application.
    pub statistics_hours: u64,
}

impl Default for Tariff {
    fn default() -> Self {
        Tariff {
            mode: FeeMode::Flat,
            basic_yen: 30_000,
            coordination_flat_yen: 60_000,
            coordination_per_extra_study_yen: 20_000,
            data_per_table_yen: 45_000,
            statistics_flat_yen: 40_000,
            cloud_per_month_yen: 50_000,
            hourly_rate_yen: 8_000,
            coordination_hours: 8,
            coordination_hours_per_extra_study: 2,
            data_hours_per_table: 6,
            statistics_hours: 5,
        }
    }
}

/// One part of an estimate and how it was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeePart {
    /// Amount in yen.
    pub yen: u64,
    /// The computation, for the researcher (e.g. `3 tables × 45,000`).
    pub basis: String,
}

/// A fee estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeEstimate {
    /// The mode used.
    pub mode: FeeMode,
    /// Basic fee.
    pub basic: FeePart,
    /// Coordination.
    pub coordination: FeePart,
    /// Data preparation.
    pub data: FeePart,
    /// Research environment.
    pub cloud: FeePart,
    /// Sum of the parts.
    pub total_yen: u64,
}

impl Tariff {
    /// Reads a tariff file (TOML); missing keys keep their defaults, unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<Tariff> {
        toml::from_str(text).map_err(|e| PolicyError::Invalid(format!("tariff file: {e}")))
    }

    /// Estimates the fee of an application.
    pub fn estimate(&self, form: &ApplicationForm) -> FeeEstimate {
        let tables = form.tables.len() as u64;
        let extra_studies = (form.studies.len() as u64).saturating_sub(1);
        let months = u64::from(form.months());
        let rate = self.hourly_rate_yen;
        let part = |yen: u64, basis: String| FeePart { yen, basis };
        let basic = part(self.basic_yen, format!("basic fee {}", yen(self.basic_yen)));
        let (coordination, data) = match self.mode {
            FeeMode::Flat => (
                part(
                    self.coordination_flat_yen + extra_studies * self.coordination_per_extra_study_yen,
                    format!(
                        "{} + {extra_studies} extra stud{} × {}",
                        yen(self.coordination_flat_yen),
                        if extra_studies == 1 { "y" } else { "ies" },
                        yen(self.coordination_per_extra_study_yen)
                    ),
                ),
                if form.channel == Channel::Statistics {
                    part(
                        self.statistics_flat_yen,
                        format!("statistics tables {}", yen(self.statistics_flat_yen)),
                    )
                } else {
                    part(
                        tables * self.data_per_table_yen,
                        format!("{tables} table(s) × {}", yen(self.data_per_table_yen)),
                    )
                },
            ),
            FeeMode::ActualCost => {
                let coord_hours = self.coordination_hours + extra_studies * self.coordination_hours_per_extra_study;
                let data_hours = if form.channel == Channel::Statistics {
                    self.statistics_hours
                } else {
                    tables * self.data_hours_per_table
                };
                (
                    part(coord_hours * rate, format!("{coord_hours} h × {}", yen(rate))),
                    part(data_hours * rate, format!("{data_hours} h × {}", yen(rate))),
                )
            }
        };
        let cloud = if form.channel == Channel::OnPlatform {
            part(
                months * self.cloud_per_month_yen,
                format!("{months} month(s) × {}", yen(self.cloud_per_month_yen)),
            )
        } else {
            part(0, "no research environment".into())
        };
        let total_yen = basic.yen + coordination.yen + data.yen + cloud.yen;
        FeeEstimate {
            mode: self.mode,
            basic,
            coordination,
            data,
            cloud,
            total_yen,
        }
    }
}

/// `¥12,345`.
fn yen(amount: u64) -> String {
    let digits = amount.to_string();
    let mut out = String::from("¥");
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::application::tests::form;
    use crate::committee::application::{Study, TableRequest};

    #[test]
    fn flat_mode_adds_the_parts() {
        let mut f = form();
        f.tables.push(TableRequest {
            table: "patients".into(),
            columns: vec!["sex".into()],
        });
        let e = Tariff::default().estimate(&f);
        assert_eq!(e.basic.yen, 30_000);
        assert_eq!(e.coordination.yen, 60_000);
        assert_eq!(e.data.yen, 2 * 45_000);
        assert_eq!(e.cloud.yen, 0);
        assert_eq!(e.total_yen, 180_000);
        assert_eq!(e.data.basis, "2 table(s) × ¥45,000");
    }

    #[test]
    fn actual_cost_mode_uses_hours_and_months() {
        let mut f = form();
        f.channel = Channel::OnPlatform;
        f.studies = vec![
            Study {
                title: "a".into(),
                methods: "m".into(),
            },
            Study {
                title: "b".into(),
                methods: "m".into(),
            },
            Study {
                title: "c".into(),
                methods: "m".into(),
            },
        ];
        let t = Tariff {
            mode: FeeMode::ActualCost,
            ..Tariff::default()
        };
        let e = t.estimate(&f);
        assert_eq!(e.coordination.yen, (8 + 2 * 2) * 8_000);
        assert_eq!(e.data.yen, 6 * 8_000);
        assert_eq!(e.cloud.yen, 12 * 50_000);
        assert_eq!(e.total_yen, 30_000 + 96_000 + 48_000 + 600_000);
        let mut s = form();
        s.channel = Channel::Statistics;
        assert_eq!(t.estimate(&s).data.yen, 5 * 8_000);
        assert_eq!(Tariff::default().estimate(&s).data.yen, 40_000);
    }

    #[test]
    fn tariff_files_are_strict() {
        let t = Tariff::from_toml("mode = \"actual_cost\"\nhourly_rate_yen = 10000\n").unwrap_or_default();
        assert_eq!(
            (t.mode, t.hourly_rate_yen, t.basic_yen),
            (FeeMode::ActualCost, 10_000, 30_000)
        );
        assert!(Tariff::from_toml("hourly_rate = 1").is_err());
        assert_eq!(yen(1_234_567), "¥1,234,567");
        assert_eq!(yen(999), "¥999");
    }
}
