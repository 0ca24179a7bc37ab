//! Everything that makes the selected tables releasable, in order: one row per patient, ages 90+ top-coded, the
//! demographics generalised (k-anonymity by patient, suppressed patients withheld from every file), rare
//! rows-per-patient counts capped ([`super::counts`]), the event items recoded and rare items suppressed until
//! the whole record is (k, k^m)-anonymous, counts capped again (repeats only), and extreme measured values top-
//! and bottom-coded on the rows that remain. The result is checked again on every recipient's copy
//! ([`super::record_check`]).
//!
//! The demographic node and the item recoding are chosen together: the demographic optimum makes the smallest
//! classes, inside which rare item combinations are hardest to protect, so coarser demographic nodes (every node
//! between the optimum and the top, up to [`MAX_DEMOGRAPHIC_CANDIDATES`], in ascending generalisation) are tried
//! too, and the protection with the least **release loss** wins ([`release_loss`]): the committee's weight w
//! (`PrivacyModel::demographic_weight`, 0.5 by default) times the patient file's loss (the mean normalised level
//! of its quasi-identifiers, a suppressed patient counting 1) plus (1 − w) times the mean item loss of the event
//! tables ([`super::items`]). Ties go to the less generalised demographics.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use tokumei_deid::transaction::KmParams;
use tokumei_policy::committee::PrivacyModel;
use tokumei_store::Table;

use super::counts::{self, CountCap};
use super::extremes::{self, ExtremesReport};
use super::items::{self, ItemsOutcome};
use super::{anonymise, select};
use crate::error::{ReleaseError, Result};
use crate::fingerprint::Sheet;

/// Most demographic nodes coarser than the optimum that the whole-record search tries.
pub const MAX_DEMOGRAPHIC_CANDIDATES: usize = 8;

/// What protecting the sheets did.
pub struct Protected {
    /// Per table: what the demographic anonymisation did.
    pub anonymised: BTreeMap<Table, anonymise::Anonymised>,
    /// Pseudonyms of patients suppressed by the demographic search (withheld from every file).
    pub withheld: HashSet<String>,
    /// Patients before suppression.
    pub patients: u64,
    /// Birth dates top-coded.
    pub top_coded_birth_dates: u64,
    /// Patient rows dropped so that each patient has one row in the patient file.
    pub merged_patient_rows: u64,
    /// Extreme measured values coded, per column.
    pub extremes: Vec<ExtremesReport>,
    /// The item search's outcome (event tables released).
    pub items: Option<ItemsOutcome>,
    /// Rows-per-patient counts capped, per event table.
    pub count_caps: Vec<CountCap>,
    /// Release loss of the chosen protection (see the module documentation).
    pub release_loss: f64,
    /// Demographic nodes tried by the whole-record search.
    pub demographic_candidates: usize,
}

/// The approval's (k, m) for the item engine.
pub fn km_params(model: &PrivacyModel) -> Result<KmParams> {
    let params = KmParams {
        k: model.k,
        m: model.m as usize,
    };
    params
        .validate()
        .map_err(|e| ReleaseError::NotReleasable(format!("privacy model: {e}")))?;
    Ok(params)
}

/// Protects `sheets` (patients first) in place under `model`.
pub fn protect(
    sheets: &mut Vec<(Table, Sheet)>,
    model: &PrivacyModel,
    today: NaiveDate,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Protected> {
    let params = km_params(model)?;
    let mut merged_patient_rows = 0;
    let mut top_coded_birth_dates = 0;
    for (table, sheet) in sheets.iter_mut() {
        if *table == Table::Patients {
            merged_patient_rows = select::one_row_per_patient(sheet);
            if let Some(c) = sheet.header.iter().position(|h| h == "birth_date") {
                top_coded_birth_dates = extremes::top_code_birth_dates(&mut sheet.columns[c], today);
            }
        }
    }
    progress(&format!(
        "demographics (k={}) and event items (k^m with m={}) over the whole patient record",
        model.k, model.m
    ));
    let original = sheets.clone();
    let first = stage(sheets, model, params, None);
    // The demographic optimum and the hierarchy heights: from the first stage, or — when its items did not
    // fit — from the demographic search alone.
    let demographics = match &first {
        Ok(s) => s
            .anonymised
            .get(&Table::Patients)
            .map(|a| (a.levels.clone(), a.max_levels.clone())),
        Err(_) => demographic_optimum(&original, model)?,
    }
    .filter(|(levels, _)| !levels.is_empty());
    let mut best: Option<(Stage, Vec<(Table, Sheet)>)> = first.ok().map(|s| (s, std::mem::take(sheets)));
    let mut first_error = None;
    let mut tried = 1;
    if let Some((levels, max_levels)) = demographics {
        for candidate in coarser_nodes(&levels, &max_levels) {
            tried += 1;
            progress(&format!("whole-record search: demographic node {candidate:?}"));
            let mut trial = original.clone();
            match stage(&mut trial, model, params, Some(&candidate)) {
                Ok(s) => {
                    if best.as_ref().is_none_or(|(b, _)| s.loss < b.loss) {
                        best = Some((s, trial));
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let Some((chosen, chosen_sheets)) = best else {
        return Err(first_error.unwrap_or_else(|| {
            ReleaseError::NotReleasable("no demographic generalisation leaves the event items releasable".into())
        }));
    };
    *sheets = chosen_sheets;
    Ok(Protected {
        anonymised: chosen.anonymised,
        withheld: chosen.withheld,
        patients: chosen.patients,
        top_coded_birth_dates,
        merged_patient_rows,
        extremes: chosen.extremes,
        items: chosen.items,
        count_caps: chosen.count_caps,
        release_loss: chosen.loss,
        demographic_candidates: tried,
    })
}

/// One complete protection of the sheets at one demographic node.
struct Stage {
    anonymised: BTreeMap<Table, anonymise::Anonymised>,
    withheld: HashSet<String>,
    patients: u64,
    extremes: Vec<ExtremesReport>,
    items: Option<ItemsOutcome>,
    count_caps: Vec<CountCap>,
    loss: f64,
}

/// The demographic optimum's levels and the hierarchies' heights, when the first stage failed after it (its
/// items did not fit).
fn demographic_optimum(original: &[(Table, Sheet)], model: &PrivacyModel) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
    let Some((_, sheet)) = original.iter().find(|(t, _)| *t == Table::Patients) else {
        return Ok(None);
    };
    let a = anonymise::anonymise(Table::Patients, &mut sheet.clone(), model, None)?;
    Ok(Some((a.levels, a.max_levels)))
}

/// Nodes strictly coarser than `levels` (componentwise ≥, not equal), in ascending order of their summed
/// normalised level, then lexicographically; at most [`MAX_DEMOGRAPHIC_CANDIDATES`].
fn coarser_nodes(levels: &[u32], max_levels: &[u32]) -> Vec<Vec<u32>> {
    if levels.len() != max_levels.len() {
        return Vec::new();
    }
    let mut nodes = vec![levels.to_vec()];
    for (i, &top) in max_levels.iter().enumerate() {
        let mut next = Vec::new();
        for n in &nodes {
            for l in levels[i]..=top {
                let mut m = n.clone();
                m[i] = l;
                next.push(m);
            }
        }
        nodes = next;
        if nodes.len() > 10_000 {
            break;
        }
    }
    nodes.retain(|n| n.as_slice() != levels);
    let weight = |n: &Vec<u32>| -> f64 {
        n.iter()
            .zip(max_levels)
            .map(|(&l, &m)| l as f64 / m.max(1) as f64)
            .sum()
    };
    nodes.sort_by(|a, b| weight(a).total_cmp(&weight(b)).then(a.cmp(b)));
    nodes.truncate(MAX_DEMOGRAPHIC_CANDIDATES);
    nodes
}

/// Protects `sheets` in place at the demographic optimum (`levels` = `None`) or at `levels`.
fn stage(
    sheets: &mut [(Table, Sheet)],
    model: &PrivacyModel,
    params: KmParams,
    levels: Option<&[u32]>,
) -> Result<Stage> {
    let mut anonymised = BTreeMap::new();
    let mut withheld = HashSet::new();
    let mut patients = 0;
    for (table, sheet) in sheets.iter_mut() {
        select::withhold(sheet, &withheld);
        let a = anonymise::anonymise(
            *table,
            sheet,
            model,
            if *table == Table::Patients { levels } else { None },
        )?;
        withheld.extend(a.withheld.iter().cloned());
        if *table == Table::Patients {
            patients = a.patients;
        }
        anonymised.insert(*table, a);
    }
    if patients > 0 && withheld.len() as f64 > model.max_suppression * patients as f64 + 1e-9 {
        return Err(ReleaseError::VerificationFailed(format!(
            "{} of {patients} patients suppressed, above the approved {:.1} %",
            withheld.len(),
            model.max_suppression * 100.0
        )));
    }
    for (table, sheet) in sheets.iter_mut() {
        select::withhold(sheet, &withheld);
        anonymise::verify(*table, sheet, model)?;
    }
    // Counts capped on the rows as recorded, so the item search sees (and protects) the capped rows.
    let mut count_caps: Vec<CountCap> = sheets
        .iter_mut()
        .filter(|(t, _)| *t != Table::Patients)
        .map(|(t, sheet)| counts::cap_counts(*t, sheet, model.k, counts::Drop::Items))
        .collect();
    let items_outcome = {
        let (mut patient_sheets, event_sheets): (Vec<_>, Vec<_>) =
            sheets.iter_mut().partition(|(t, _)| *t == Table::Patients);
        let patient_sheet = patient_sheets.first_mut().map(|e| &e.1);
        let mut events: Vec<(Table, &mut Sheet)> = event_sheets.into_iter().map(|e| (e.0, &mut e.1)).collect();
        items::anonymise_items(patient_sheet, &mut events, params, model.max_suppression)?
    };
    // Suppressed rare items removed rows: cap again, dropping repeats only (item sets, and so the model, stay).
    for ((t, sheet), cap) in sheets
        .iter_mut()
        .filter(|(t, _)| *t != Table::Patients)
        .zip(&mut count_caps)
    {
        cap.absorb(counts::cap_counts(*t, sheet, model.k, counts::Drop::RepeatsOnly));
    }
    // Extremes last, on the rows that will be released: capping and rare-item suppression remove rows, and
    // an extreme bucket must hold k patients in what is written. Measured values are not items, so this
    // changes nothing the item search decided.
    let mut extremes_reports = Vec::new();
    for (table, sheet) in sheets.iter_mut() {
        extremes_reports.extend(extremes::winsorise(*table, sheet, model.k));
    }
    // Release loss: the demographics' loss weighted against the mean of the event tables' item losses.
    let mut demographic = None;
    if let Some(a) = anonymised.get(&Table::Patients)
        && !a.levels.is_empty()
        && patients > 0
    {
        let generalised = a
            .levels
            .iter()
            .zip(&a.max_levels)
            .map(|(&l, &m)| l as f64 / m.max(1) as f64)
            .sum::<f64>()
            / a.levels.len() as f64;
        let kept = patients - withheld.len() as u64;
        demographic = Some((kept as f64 * generalised + withheld.len() as f64) / patients as f64);
    }
    let events: Vec<f64> = items_outcome
        .as_ref()
        .map(|items| items.tables.iter().map(|t| t.loss).collect())
        .unwrap_or_default();
    let loss = release_loss(demographic, &events, model.demographic_weight());
    Ok(Stage {
        anonymised,
        withheld,
        patients,
        extremes: extremes_reports,
        items: items_outcome,
        count_caps,
        loss,
    })
}

/// The release loss: `weight` × the demographics' loss + (1 − `weight`) × the mean event-table loss; the one
/// present when only one kind of table is released; 0 when neither is.
pub fn release_loss(demographic: Option<f64>, events: &[f64], weight: f64) -> f64 {
    let event = (!events.is_empty()).then(|| events.iter().sum::<f64>() / events.len() as f64);
    match (demographic, event) {
        (Some(d), Some(e)) => weight * d + (1.0 - weight) * e,
        (Some(d), None) => d,
        (None, Some(e)) => e,
        (None, None) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_loss_weighs_demographics_against_all_event_tables() {
        assert_eq!(release_loss(Some(1.0), &[0.0, 0.0, 0.0], 0.5), 0.5);
        assert_eq!(release_loss(Some(1.0), &[0.0, 0.0, 0.0], 0.9), 0.9);
        assert_eq!(release_loss(Some(0.2), &[0.4, 0.6], 0.25), 0.25 * 0.2 + 0.75 * 0.5);
        assert_eq!(release_loss(Some(0.3), &[], 0.5), 0.3);
        assert_eq!(release_loss(None, &[0.4, 0.6], 0.5), 0.5);
        assert_eq!(release_loss(None, &[], 0.5), 0.0);
    }

    #[test]
    fn coarser_nodes_are_every_node_above_the_optimum_cheapest_first() {
        let nodes = coarser_nodes(&[1, 0], &[2, 1]);
        // [2, 0] costs 2/2 + 0/1 = 1.0, [1, 1] costs 1/2 + 1/1 = 1.5.
        assert_eq!(nodes, vec![vec![2, 0], vec![1, 1], vec![2, 1]]);
        assert!(coarser_nodes(&[2, 1], &[2, 1]).is_empty());
    }
}
