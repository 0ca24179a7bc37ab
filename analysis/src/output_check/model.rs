//! What an output request asks to release, with the evidence the environment computed beside it from the microdata.
//!
//! The evidence — which patients stand behind each cell and how much each contributed — is what the rules need and
//! what must never leave: a checker sees the verdicts, not the evidence. Patients are the workspace's dense numbers
//! ([`PatientId`]), never pseudonyms or linkage keys.

use serde::{Deserialize, Serialize};

/// A patient as the workspace numbers them (dense, per workspace; not a pseudonym).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PatientId(pub u32);

/// The distinct patients behind a cell or an analysis, sorted and without repeats (deserialised through
/// [`Patients::new`], so a list with repeats cannot pass for more patients than it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<PatientId>")]
pub struct Patients(Vec<PatientId>);

impl From<Vec<PatientId>> for Patients {
    fn from(ids: Vec<PatientId>) -> Patients {
        Patients::new(ids)
    }
}

impl Patients {
    /// The set of `ids` (any order, repeats allowed).
    pub fn new(mut ids: Vec<PatientId>) -> Patients {
        ids.sort_unstable();
        ids.dedup();
        Patients(ids)
    }

    /// How many distinct patients.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no patient is behind it.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patients, ascending.
    pub fn ids(&self) -> &[PatientId] {
        &self.0
    }
}

/// The statistic a table cell reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Number of patients (or of rows, with the patients behind them as evidence).
    Count,
    /// Total of a measured value.
    Sum,
    /// Mean of a measured value.
    Mean,
    /// Median or another quantile: an order statistic, close to one patient's own value.
    Quantile,
    /// Standard deviation or variance.
    Spread,
    /// Smallest value: one patient's own value.
    Minimum,
    /// Largest value: one patient's own value.
    Maximum,
}

impl Statistic {
    /// Whether the cell is a magnitude (a total or its mean), to which the dominance rules apply.
    pub fn is_magnitude(self) -> bool {
        matches!(self, Statistic::Sum | Statistic::Mean)
    }
}

/// One cell of a table and its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The statistic it reports.
    pub statistic: Statistic,
    /// The patients behind it.
    pub patients: Patients,
    /// For magnitudes: each patient's contribution to the cell's total (one value per patient, any order). The
    /// dominance rules read it; empty for counts and order statistics.
    pub contributions: Vec<f64>,
}

/// A cross-tabulation or a table of descriptive statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Table {
    /// Its cells, in the order the researcher sees them.
    pub cells: Vec<Cell>,
}

/// A fitted model (linear or logistic regression).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    /// Observations the model was fitted on.
    pub observations: u64,
    /// Parameters estimated (coefficients and intercept).
    pub parameters: u64,
    /// The patients behind the observations.
    pub patients: Patients,
    /// The largest leverage of one patient (the sum of their rows' hat values, 0–1): near 1 when the fit
    /// reproduces that patient, as a covariate that is non-zero for them alone does.
    pub largest_patient_leverage: f64,
    /// The largest shift one patient's rows make to a coefficient, in that coefficient's standard errors (DFBETAS,
    /// summed over the patient's rows; one-step for the logistic model): near or above 1 when the fit's answer is
    /// one patient's own outcome — a value the query set for one patient and nobody else.
    #[serde(default)]
    pub largest_patient_dfbetas: f64,
}

impl Model {
    /// Residual degrees of freedom, counted on patients as well as rows: many rows of few patients (repeated
    /// measures) leave no more freedom than the patients do.
    pub fn residual_dof(&self) -> u64 {
        self.observations
            .min(self.patients.len() as u64)
            .saturating_sub(self.parameters)
    }
}

/// One published step of a survival curve (Kaplan–Meier).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SurvivalStep {
    /// Patients at risk just before the step.
    pub at_risk: u64,
    /// Events at the step.
    pub events: u64,
    /// Patients censored since the previous step.
    pub censored: u64,
}

/// A survival curve with its risk table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Survival {
    /// Its steps, in time order.
    pub steps: Vec<SurvivalStep>,
    /// The patients of the curve.
    pub patients: Patients,
}

/// What an output request asks to release.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// A table (counts, magnitudes or descriptive statistics).
    Table(Table),
    /// A regression's coefficients and standard errors.
    Model(Model),
    /// A survival curve.
    Survival(Survival),
}

impl Output {
    /// Every patient behind the output (the analysis population).
    pub fn population(&self) -> Patients {
        match self {
            Output::Table(t) => Patients::new(t.cells.iter().flat_map(|c| c.patients.ids().iter().copied()).collect()),
            Output::Model(m) => m.patients.clone(),
            Output::Survival(s) => s.patients.clone(),
        }
    }
}
