//! The transactional engine's input: item kinds with their generalisable components, the demographic class of
//! every patient, and every event as leaf codes — integers only, so a search never touches a string.

use crate::error::{Error, Result};
use crate::hierarchy::Hierarchy;

/// Most fields one event may carry (code, department, two dates...).
pub const MAX_FIELDS: usize = 8;

/// One generalisable part of an item, e.g. the ICD-10 code of a diagnosis or the months of a stay.
#[derive(Debug, Clone)]
pub struct Component {
    /// Name for reports (the column, or columns, it covers).
    pub name: String,
    /// The hierarchy every field of this component is generalised along.
    pub hierarchy: Hierarchy,
    /// Consecutive event fields generalised together to one level (admission and discharge month share a
    /// period level: releasing one at month and the other at year would gain nothing and confuse readers).
    pub fields: usize,
}

/// A kind of event item — one released table — and its components in field order.
#[derive(Debug, Clone)]
pub struct ItemKind {
    /// Name for reports (the table).
    pub name: String,
    /// Components; their fields are the event's fields in this order.
    pub components: Vec<Component>,
}

impl ItemKind {
    /// Number of fields an event of this kind carries.
    pub fn field_count(&self) -> usize {
        self.components.iter().map(|c| c.fields).sum()
    }

    /// The component of each field, in field order.
    pub fn field_components(&self) -> Vec<usize> {
        self.components
            .iter()
            .enumerate()
            .flat_map(|(c, comp)| std::iter::repeat_n(c, comp.fields))
            .collect()
    }
}

/// One event of one patient: the leaf code of each field along its component's hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Patient index (into the class assignment).
    pub patient: u32,
    /// Item kind index.
    pub kind: u16,
    /// Leaf codes per field; unused fields are 0.
    pub leaves: [u32; MAX_FIELDS],
}

/// Patients (by demographic class) and their events, validated and grouped for the evaluator.
#[derive(Debug, Clone)]
pub struct RtData {
    kinds: Vec<ItemKind>,
    /// Members of each demographic class.
    classes: Vec<Vec<u32>>,
    /// Events sorted by patient (input order kept within a patient).
    events: Vec<Event>,
    /// Input position of each sorted event.
    original: Vec<u32>,
    /// `events[starts[p]..starts[p + 1]]` are patient `p`'s.
    starts: Vec<usize>,
    /// Events per kind.
    per_kind: Vec<u64>,
}

impl RtData {
    /// Validates and groups the input. `class_of[p]` is patient `p`'s demographic class (after the relational
    /// anonymisation, suppressed patients already removed); classes are numbered densely from 0.
    pub fn new(kinds: Vec<ItemKind>, class_of: Vec<u32>, events: Vec<Event>) -> Result<Self> {
        if kinds.len() > u16::MAX as usize {
            return Err(Error::Input("too many item kinds".into()));
        }
        for kind in &kinds {
            if kind.components.is_empty() {
                return Err(Error::Input(format!("item kind {} has no component", kind.name)));
            }
            if kind.field_count() > MAX_FIELDS || kind.components.iter().any(|c| c.fields == 0) {
                return Err(Error::Input(format!(
                    "item kind {}: every component needs at least one field and an item at most {MAX_FIELDS}",
                    kind.name
                )));
            }
            if kind.components.iter().any(|c| c.hierarchy.height() > u8::MAX as usize) {
                return Err(Error::Input(format!("item kind {}: hierarchy too tall", kind.name)));
            }
        }
        let patients = class_of.len();
        let class_count = class_of.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        let mut classes = vec![Vec::new(); class_count];
        for (p, &c) in class_of.iter().enumerate() {
            classes[c as usize].push(p as u32);
        }
        if classes.iter().any(Vec::is_empty) {
            return Err(Error::Input(
                "demographic classes must be numbered densely from 0".into(),
            ));
        }
        let mut per_kind = vec![0u64; kinds.len()];
        let mut bad_patient = 0usize;
        let mut bad_leaf: Vec<u64> = vec![0; kinds.len()];
        for e in &events {
            let Some(kind) = kinds.get(e.kind as usize) else {
                return Err(Error::Input("an event names an unknown item kind".into()));
            };
            if e.patient as usize >= patients {
                bad_patient += 1;
                continue;
            }
            let comps = kind.field_components();
            if comps
                .iter()
                .enumerate()
                .any(|(f, &c)| e.leaves[f] as usize >= kind.components[c].hierarchy.domain_size())
            {
                bad_leaf[e.kind as usize] += 1;
            }
            per_kind[e.kind as usize] += 1;
        }
        if bad_patient > 0 {
            return Err(Error::Input(format!(
                "{bad_patient} event(s) name a patient outside the class assignment"
            )));
        }
        if let Some((k, n)) = bad_leaf.iter().enumerate().find(|(_, n)| **n > 0) {
            return Err(Error::Input(format!(
                "{n} event(s) of {} carry a code outside their hierarchy",
                kinds[k].name
            )));
        }
        let mut order: Vec<u32> = (0..events.len() as u32).collect();
        order.sort_by_key(|&i| events[i as usize].patient);
        let sorted: Vec<Event> = order.iter().map(|&i| events[i as usize]).collect();
        let mut starts = vec![0usize; patients + 1];
        for e in &sorted {
            starts[e.patient as usize + 1] += 1;
        }
        for p in 0..patients {
            starts[p + 1] += starts[p];
        }
        Ok(RtData {
            kinds,
            classes,
            events: sorted,
            original: order,
            starts,
            per_kind,
        })
    }

    /// The item kinds.
    pub fn kinds(&self) -> &[ItemKind] {
        &self.kinds
    }
    /// Members of each demographic class.
    pub fn classes(&self) -> &[Vec<u32>] {
        &self.classes
    }
    /// Number of patients.
    pub fn patients(&self) -> usize {
        self.starts.len() - 1
    }
    /// Number of events.
    pub fn event_count(&self) -> u64 {
        self.events.len() as u64
    }
    /// Events per kind.
    pub fn per_kind(&self) -> &[u64] {
        &self.per_kind
    }
    /// The events of patient `p` with their positions in the sorted order.
    pub(crate) fn events_of(&self, p: u32) -> std::ops::Range<usize> {
        self.starts[p as usize]..self.starts[p as usize + 1]
    }
    /// The sorted events.
    pub(crate) fn sorted_events(&self) -> &[Event] {
        &self.events
    }
    /// Input position of sorted event `i`.
    pub(crate) fn original_index(&self, i: usize) -> usize {
        self.original[i] as usize
    }
}
