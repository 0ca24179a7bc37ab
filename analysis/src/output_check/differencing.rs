//! Differencing across outputs: two results whose populations are nested and differ by a few patients reveal those
//! patients by subtraction — "count of diabetics in the cohort" and "the same, born before 1950", or a regression
//! refitted without one patient. Rule-based checkers judge each output alone (ACRO leaves this to the human checker);
//! the environment computed every output itself, so it knows the patients behind each cell of each earlier output
//! of the workspace and finds every pair of nested sets whose difference is below the threshold.
//!
//! Pairs, not every linear combination: a difference of two cells of one earlier table against a third is not
//! searched (the small-cell rule's complementary suppression covers that within a table; the human checker beyond).

use super::Rules;
use super::model::{Output, PatientId, Patients};
use super::report::{Counterpart, Finding, Place, Rule, Verdict};

/// The sets of patients an output discloses something about: each cell of a table, or a model's or a curve's
/// population.
fn sets_of(output: &Output) -> Vec<(Place, Patients)> {
    match output {
        Output::Table(t) => {
            let mut sets: Vec<(Place, Patients)> = t
                .cells
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.patients.is_empty())
                .map(|(i, c)| (Place::Cell(i), c.patients.clone()))
                .collect();
            // The table's whole population is released too (its cells add up to it): a later table of the same
            // cohort but a few patients differs from it by them, though no two cells are nested.
            if sets.len() > 1 {
                sets.insert(0, (Place::Whole, output.population()));
            }
            sets
        }
        Output::Model(m) => vec![(Place::Whole, m.patients.clone())],
        Output::Survival(s) => vec![(Place::Whole, s.patients.clone())],
    }
}

/// One set an earlier output released.
#[derive(Debug, Clone, Copy)]
struct Slot {
    output: u64,
    place: Place,
    size: u32,
}

/// The patient sets of every output the workspace released, indexed by patient so that a new set's overlaps are
/// counted in one pass over its own patients. Patients are the workspace's dense numbers, so the index is a vector
/// by patient number; it is split by the sets' size class (powers of two), because only sets of about the same size
/// can be nested and differ by fewer patients than the threshold — a table's cells are never compared with whole
/// populations, nor small cells with large ones.
#[derive(Debug, Default)]
pub struct History {
    slots: Vec<Slot>,
    /// Each slot's size again, packed, for the size filter of the counting loop.
    sizes: Vec<u32>,
    /// `by_class[size_class(size)][patient]`: the slots of that size class holding the patient.
    by_class: Vec<Vec<Vec<u32>>>,
}

/// The size class of a set of `size` patients: 0 for none, then one class per power of two.
fn size_class(size: u32) -> usize {
    (u32::BITS - size.leading_zeros()) as usize
}

impl History {
    /// An empty history (a new workspace).
    pub fn new() -> History {
        History::default()
    }

    /// Records `output`, released as the workspace's output number `number`; refused (nothing recorded) when a
    /// patient number is beyond [`MAX_PATIENT_NUMBER`].
    pub fn record(&mut self, number: u64, output: &Output) -> Result<(), OutOfRange> {
        let sets = sets_of(output);
        in_range(&sets)?;
        for (place, set) in sets {
            self.add(number, place, &set);
        }
        Ok(())
    }

    fn add(&mut self, output: u64, place: Place, set: &Patients) {
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let size = u32::try_from(set.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot { output, place, size });
        self.sizes.push(size);
        let class = size_class(size);
        if self.by_class.len() <= class {
            self.by_class.resize_with(class + 1, Vec::new);
        }
        let by_patient = &mut self.by_class[class];
        if let Some(last) = set.ids().last() {
            let needed = last.0 as usize + 1;
            if by_patient.len() < needed {
                by_patient.resize_with(needed, Vec::new);
            }
        }
        for p in set.ids() {
            by_patient[p.0 as usize].push(slot);
        }
    }

    /// The slots of size class `class` holding `patient`.
    fn postings(&self, class: usize, patient: PatientId) -> &[u32] {
        self.by_class
            .get(class)
            .and_then(|by_patient| by_patient.get(patient.0 as usize))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// How many sets are recorded.
    pub fn sets(&self) -> usize {
        self.slots.len()
    }
}

/// The largest patient number the index takes. A workspace numbers its cohort's patients densely from 0, so the
/// index is a vector by number; a number beyond any cohort is a caller's error, refused rather than allowed to size
/// the index (2²⁵ numbers: 33 million patients).
pub const MAX_PATIENT_NUMBER: u32 = 1 << 25;

/// A patient number beyond [`MAX_PATIENT_NUMBER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a patient number is beyond the largest a workspace assigns ({MAX_PATIENT_NUMBER})")]
pub struct OutOfRange;

fn in_range(sets: &[(Place, Patients)]) -> Result<(), OutOfRange> {
    let largest = sets.iter().filter_map(|(_, s)| s.ids().last()).max();
    match largest {
        Some(p) if p.0 > MAX_PATIENT_NUMBER => Err(OutOfRange),
        _ => Ok(()),
    }
}

/// The differencing findings of `output` against `history` and among its own sets. An output with a patient number
/// beyond [`MAX_PATIENT_NUMBER`] is refused whole: it cannot have come from a workspace.
pub fn check(output: &Output, history: &History, rules: &Rules) -> Vec<Finding> {
    let own = sets_of(output);
    if in_range(&own).is_err() {
        return vec![Finding {
            rule: Rule::Differencing,
            verdict: Verdict::Refused,
            place: Place::Whole,
            counterpart: None,
            message: OutOfRange.to_string(),
        }];
    }
    let mut inner = History::new();
    for (place, set) in &own {
        inner.add(u64::MAX, *place, set);
    }
    let mut out = Vec::new();
    let mut counts = Overlaps::default();
    for (place, set) in &own {
        for (index, is_own) in [(history, false), (&inner, true)] {
            // Only sets whose size is within the threshold of this one's can be nested with it and differ by
            // fewer patients than the threshold: the others are not counted at all.
            let reach = rules.threshold.saturating_sub(1);
            let n = set.len() as u64;
            counts.count(index, set, (n.saturating_sub(reach), n.saturating_add(reach)));
            for &slot in &counts.touched {
                let shared = counts.counts[slot as usize];
                let other = index.slots[slot as usize];
                if is_own && other.place <= *place {
                    continue; // each pair of its own sets once, and never a set with itself
                }
                let (mine, theirs) = (set.len() as u64, u64::from(other.size));
                let nested = u64::from(shared) == mine.min(theirs);
                let difference = mine.abs_diff(theirs);
                if nested && difference > 0 && difference < rules.threshold {
                    out.push(finding(*place, other, is_own, rules));
                }
            }
            counts.reset();
        }
    }
    out
}

fn finding(place: Place, other: Slot, is_own: bool, rules: &Rules) -> Finding {
    Finding {
        rule: Rule::Differencing,
        verdict: Verdict::Refused,
        place,
        counterpart: Some(Counterpart {
            output: (!is_own).then_some(other.output),
            place: other.place,
        }),
        message: format!(
            "nested with {} and differing by fewer than {} patients: subtracting one from the other discloses them",
            if is_own {
                "another place of this output".to_owned()
            } else {
                format!("earlier output {}", other.output)
            },
            rules.threshold
        ),
    }
}

/// Per-set overlap counts, reused between sets (only the slots touched are reset).
#[derive(Default)]
struct Overlaps {
    counts: Vec<u32>,
    touched: Vec<u32>,
}

impl Overlaps {
    /// Counts, for every set of `index`, the patients it shares with `set`; `touched` lists the sets that share any.
    /// Only sets whose size is within `sizes` (inclusive) are counted.
    fn count(&mut self, index: &History, set: &Patients, sizes: (u64, u64)) {
        if self.counts.len() < index.slots.len() {
            self.counts.resize(index.slots.len(), 0);
        }
        let (lo, hi) = (
            u32::try_from(sizes.0).unwrap_or(u32::MAX),
            u32::try_from(sizes.1).unwrap_or(u32::MAX),
        );
        for class in size_class(lo)..=size_class(hi) {
            self.count_class(index, set, class, (lo, hi));
        }
    }

    fn count_class(&mut self, index: &History, set: &Patients, class: usize, (lo, hi): (u32, u32)) {
        if index.by_class.get(class).is_none_or(Vec::is_empty) {
            return;
        }
        for p in set.ids() {
            for &slot in index.postings(class, *p) {
                let size = index.sizes[slot as usize];
                if size < lo || size > hi {
                    continue;
                }
                let c = &mut self.counts[slot as usize];
                if *c == 0 {
                    self.touched.push(slot);
                }
                *c += 1;
            }
        }
    }

    fn reset(&mut self) {
        for &slot in &self.touched {
            self.counts[slot as usize] = 0;
        }
        self.touched.clear();
    }
}
