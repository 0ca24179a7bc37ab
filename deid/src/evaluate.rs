//! Evaluation of one lattice node: which classes violate the model, what gets suppressed, whether
//! the node is feasible, and its utility.
//!
//! Row-level counting works on class tables (see [`crate::classes`]). Patient-level counting works
//! on *units* — distinct (leaf tuple, subject, sensitive values) combinations — because a class
//! there counts distinct subjects and suppressing a subject removes all of its rows, which can in
//! turn push other classes below k; that cascade is iterated to its fixpoint.

use crate::classes::{ClassTable, Layout, PackedKey, RollUp, SlotPool, bottom_table, roll_up};
use crate::dataset::Dataset;
use crate::fasthash::FastMap;
use crate::metric::{Metric, MetricCtx, MetricValue, NodeSums, Score};
use crate::model::{EPS, Hist, PrivacyModel};

/// Outcome of evaluating a node.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    /// The model holds after suppressing at most the allowed number of records.
    pub feasible: bool,
    /// The monotone part of the model already fails: all specialisations fail too.
    pub mono_infeasible: bool,
    /// Records suppressed by the suppression strategy.
    pub suppressed: u64,
    /// Whether the average-risk threshold (if any) holds after suppression.
    pub avg_risk_ok: bool,
    /// Metric value (computed for every node; meaningful as a solution only if feasible).
    pub metric: MetricValue,
    /// Generalisation-only value: lower bound for this node's generalisations (DM/AECS).
    pub gen_bound: Option<Score>,
}

/// Extra per-node facts needed for the output and the risk report.
#[derive(Debug, Clone)]
pub(crate) struct NodeDetail {
    pub eval: Evaluation,
    /// Per kept class: (size in counting units, rows).
    pub class_sizes: Vec<(u64, u64)>,
    /// Per row: suppressed?
    pub row_suppressed: Vec<bool>,
    /// Records violating each named constraint (before suppression).
    pub violations: Vec<(&'static str, u64)>,
}

/// Patient-level units.
#[derive(Debug, Clone, Default)]
pub(crate) struct Units<K> {
    keys: Vec<K>,
    subjects: Vec<u32>,
    rows: Vec<u32>,
    sens: Vec<Vec<u32>>,
    subject_rows: Vec<u64>,
}

/// Class status codes.
const OK: u8 = 0;
const FAIL_REST: u8 = 1;
const FAIL_MONO: u8 = 2;

/// Everything needed to evaluate nodes of one job. Shared immutably between threads.
pub(crate) struct Engine<'a, K> {
    pub ds: &'a Dataset,
    pub model: &'a PrivacyModel,
    pub mctx: MetricCtx,
    pub layout: Layout,
    pub bottom: ClassTable<K>,
    pub units: Option<Units<K>>,
    pub limit: u64,
    /// Slot arrays reused by roll-ups.
    pub slots: SlotPool,
}

impl<'a, K: PackedKey> Engine<'a, K> {
    pub fn new(ds: &'a Dataset, model: &'a PrivacyModel, metric: Metric, layout: Layout) -> Self {
        let mctx = MetricCtx::new(ds, metric);
        let slots = SlotPool::default();
        let bottom = bottom_table::<K>(ds, &layout, &slots);
        let units = ds.subjects.as_ref().map(|subjects| {
            let mut index: FastMap<(K, u32, Vec<u32>), u32> = FastMap::default();
            let mut u = Units::<K> {
                sens: vec![Vec::new(); ds.sensitive.len()],
                ..Default::default()
            };
            u.subject_rows = vec![0; ds.n_subjects];
            for row in 0..ds.n {
                let key: K = layout.pack(ds.qis.iter().map(|q| q.codes[row]));
                let sens: Vec<u32> = ds.sensitive.iter().map(|s| s.codes[row]).collect();
                let subject = subjects[row];
                u.subject_rows[subject as usize] += 1;
                let next = u.keys.len() as u32;
                let slot = *index.entry((key, subject, sens.clone())).or_insert(next);
                if slot == next {
                    u.keys.push(key);
                    u.subjects.push(subject);
                    u.rows.push(0);
                    for (a, r) in sens.iter().enumerate() {
                        u.sens[a].push(*r);
                    }
                }
                u.rows[slot as usize] += 1;
            }
            u
        });
        let limit = model.max_suppressed(ds.n);
        Self {
            ds,
            model,
            mctx,
            layout,
            bottom,
            units,
            limit,
            slots,
        }
    }

    /// Class sizes of the untransformed data with row-level counting: the bottom table's, in its
    /// order — what applying the bottom node with k = 1 gives. None with patient-level counting,
    /// where a class counts distinct subjects.
    pub fn original_class_sizes(&self) -> Option<Vec<(u64, u64)>> {
        self.units
            .is_none()
            .then(|| self.bottom.counts.iter().map(|&c| (c as u64, c as u64)).collect())
    }

    /// Class table of a node, rolled up from `src` (which must be finer).
    pub fn table_from(&self, src: &ClassTable<K>, levels: &[u32]) -> ClassTable<K> {
        roll_up(self.ds, &self.layout, &self.slots, src, levels)
    }

    /// Evaluates a node; row mode needs its class table, patient mode works from units.
    pub fn evaluate(&self, levels: &[u32], table: Option<&ClassTable<K>>) -> Evaluation {
        match (&self.units, table) {
            (Some(units), _) => self.evaluate_subjects(units, levels, false).0,
            (None, Some(t)) => self.evaluate_rows(t, false).0,
            (None, None) => {
                let t = self.table_from(&self.bottom, levels);
                self.evaluate_rows(&t, false).0
            }
        }
    }

    /// Evaluates a node and also returns row-level suppression and class sizes.
    pub fn detail(&self, levels: &[u32]) -> NodeDetail {
        match &self.units {
            Some(units) => {
                let (eval, extra) = self.evaluate_subjects(units, levels, true);
                let extra = extra.unwrap_or_default();
                let subjects = self.ds.subjects.as_deref().unwrap_or(&[]);
                let row_suppressed = subjects.iter().map(|&s| extra.removed[s as usize]).collect();
                NodeDetail {
                    eval,
                    class_sizes: extra.class_sizes,
                    row_suppressed,
                    violations: extra.violations,
                }
            }
            None => {
                let t = self.table_from(&self.bottom, levels);
                let (eval, status) = self.evaluate_rows(&t, true);
                let status = status.unwrap_or_default();
                let mut suppressed_keys: FastMap<K, ()> = FastMap::default();
                let mut class_sizes = Vec::new();
                for (i, &s) in status.iter().enumerate() {
                    if s == OK {
                        class_sizes.push((t.counts[i] as u64, t.counts[i] as u64));
                    } else {
                        suppressed_keys.insert(t.keys[i], ());
                    }
                }
                let roll = RollUp::new(self.ds, &self.layout, &self.bottom.levels, levels);
                let row_suppressed = if suppressed_keys.is_empty() {
                    vec![false; self.ds.n]
                } else {
                    (0..self.ds.n)
                        .map(|row| {
                            let key: K = self.layout.pack(self.ds.qis.iter().map(|q| q.codes[row]));
                            suppressed_keys.contains_key(&roll.map(key))
                        })
                        .collect()
                };
                let violations = self.row_violations(&t);
                NodeDetail {
                    eval,
                    class_sizes,
                    row_suppressed,
                    violations,
                }
            }
        }
    }

    fn hists_of(t: &ClassTable<K>, i: usize) -> Vec<&Hist> {
        t.hists.iter().map(|h| &h[i]).collect()
    }

    fn row_violations(&self, t: &ClassTable<K>) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        for i in 0..t.len() {
            let hists = Self::hists_of(t, i);
            for name in self
                .model
                .class_violations(t.counts[i] as u64, &self.ds.sensitive, &hists)
            {
                match out.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => *c += t.counts[i] as u64,
                    None => out.push((name, t.counts[i] as u64)),
                }
            }
        }
        out
    }

    fn class_status(&self, units: u64, hists: &[&Hist]) -> u8 {
        if !self.model.class_ok_superset_closed(units, hists) {
            FAIL_MONO
        } else if !self.model.class_ok_rest(&self.ds.sensitive, hists) {
            FAIL_REST
        } else {
            OK
        }
    }

    fn avg_risk_ok(&self, kept_classes: u64, kept_units: u64) -> bool {
        match self.model.average_risk {
            Some(thr) if kept_units > 0 => kept_classes as f64 / kept_units as f64 <= thr + EPS,
            _ => true,
        }
    }

    fn finish(&self, feasible_supp: bool, supp_mono: u64, avg_ok: bool) -> (bool, bool) {
        let feasible = feasible_supp && avg_ok;
        let mono_infeasible = if self.model.fully_monotone() {
            !feasible
        } else {
            supp_mono > self.limit
        };
        (feasible, mono_infeasible)
    }

    fn evaluate_rows(&self, t: &ClassTable<K>, keep_status: bool) -> (Evaluation, Option<Vec<u8>>) {
        let d = self.ds.qis.len();
        let levels = &t.levels;
        let mut status = Vec::with_capacity(if keep_status { t.len() } else { 0 });
        let (mut supp, mut supp_mono, mut kept_classes) = (0u64, 0u64, 0u64);
        let mut sums = NodeSums {
            suppressed_lines: vec![0; d],
            ..Default::default()
        };
        let mut all_sq: u128 = 0;
        let need_lines = self.mctx.metric == Metric::Loss;
        let mut suppressed_keys: Vec<K> = Vec::new();
        for i in 0..t.len() {
            let c = t.counts[i] as u64;
            all_sq += (c as u128) * (c as u128);
            let s = if t.hists.is_empty() {
                if c < self.model.k as u64 { FAIL_MONO } else { OK }
            } else {
                self.class_status(c, &Self::hists_of(t, i))
            };
            if keep_status {
                status.push(s);
            }
            if s == OK {
                kept_classes += 1;
                sums.kept_sq += (c as u128) * (c as u128);
            } else {
                supp += c;
                if s == FAIL_MONO {
                    supp_mono += c;
                }
                if need_lines {
                    for j in 0..d {
                        let code = t.keys[i].field(self.layout.shifts[j], self.layout.masks[j]);
                        let lines = self.ds.qis[j].hierarchy.level(levels[j] as usize).lines()[code as usize];
                        sums.suppressed_lines[j] += c * lines as u64;
                    }
                }
                if self.mctx.metric == Metric::Entropy {
                    suppressed_keys.push(t.keys[i]);
                }
            }
        }
        sums.suppressed = supp;
        sums.kept_classes = kept_classes;
        if !suppressed_keys.is_empty() {
            sums.entropy_extra = self.entropy_extra_rows(levels, &suppressed_keys);
        }
        let avg_ok = self.avg_risk_ok(kept_classes, self.ds.n as u64 - supp);
        let (feasible, mono_infeasible) = self.finish(supp <= self.limit, supp_mono, avg_ok);
        let eval = Evaluation {
            feasible,
            mono_infeasible,
            suppressed: supp,
            avg_risk_ok: avg_ok,
            metric: self.mctx.value(levels, &sums),
            gen_bound: self.mctx.generalisation_bound(all_sq, t.len() as u64),
        };
        (eval, keep_status.then_some(status))
    }

    /// Non-uniform entropy added by suppressing the classes with the given keys; needs the
    /// original leaf values, so it walks the bottom table (in its fixed order, for determinism).
    fn entropy_extra_rows(&self, levels: &[u32], suppressed: &[K]) -> f64 {
        let set: FastMap<K, ()> = suppressed.iter().map(|&k| (k, ())).collect();
        let roll = RollUp::new(self.ds, &self.layout, &self.bottom.levels, levels);
        let mut extra = 0.0;
        for i in 0..self.bottom.len() {
            let key = self.bottom.keys[i];
            if set.contains_key(&roll.map(key)) {
                extra += self.bottom.counts[i] as f64 * self.leaf_entropy_extra(levels, key);
            }
        }
        extra
    }

    fn leaf_entropy_extra(&self, levels: &[u32], leaf_key: K) -> f64 {
        (0..levels.len())
            .map(|j| {
                let leaf = leaf_key.field(self.layout.shifts[j], self.layout.masks[j]);
                self.mctx.entropy_suppression_extra(j, levels[j] as usize, leaf)
            })
            .sum()
    }

    fn evaluate_subjects(
        &self,
        u: &Units<K>,
        levels: &[u32],
        want_detail: bool,
    ) -> (Evaluation, Option<SubjectDetail>) {
        let d = levels.len();
        let roll = RollUp::new(self.ds, &self.layout, &vec![0; d], levels);
        // Group units into classes; order units by (class, subject) for distinct counting.
        let mut index: FastMap<K, u32> = FastMap::default();
        let mut class_keys: Vec<K> = Vec::new();
        let class_of: Vec<u32> = u
            .keys
            .iter()
            .map(|&k| {
                let g = roll.map(k);
                let next = class_keys.len() as u32;
                let c = *index.entry(g).or_insert(next);
                if c == next {
                    class_keys.push(g);
                }
                c
            })
            .collect();
        let classes = class_keys.len();
        let mut order: Vec<u32> = (0..u.keys.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (class_of[i as usize], u.subjects[i as usize], i));
        let mut starts = vec![0usize; classes + 1];
        for &i in &order {
            starts[class_of[i as usize] as usize + 1] += 1;
        }
        for c in 0..classes {
            starts[c + 1] += starts[c];
        }
        let attrs = self.ds.sensitive.len();
        // Stats of one class over the units of subjects not removed.
        let class_stats = |c: usize, removed: &[bool]| -> (u64, u64, Vec<Hist>) {
            let mut subjects = 0u64;
            let mut rows = 0u64;
            let mut last = u32::MAX;
            let mut hists: Vec<Hist> = vec![Vec::new(); attrs];
            for &i in &order[starts[c]..starts[c + 1]] {
                let i = i as usize;
                let s = u.subjects[i];
                if removed[s as usize] {
                    continue;
                }
                if s != last {
                    subjects += 1;
                    last = s;
                }
                rows += u.rows[i] as u64;
                for (a, h) in hists.iter_mut().enumerate() {
                    h.push((u.sens[a][i], u.rows[i]));
                }
            }
            for h in &mut hists {
                h.sort_unstable_by_key(|&(r, _)| r);
                let mut merged: Hist = Vec::with_capacity(h.len());
                for &(r, n) in h.iter() {
                    match merged.last_mut() {
                        Some(last) if last.0 == r => last.1 += n,
                        _ => merged.push((r, n)),
                    }
                }
                *h = merged;
            }
            (subjects, rows, hists)
        };
        let fixpoint = |mono_only: bool| -> Vec<bool> {
            let mut removed = vec![false; self.ds.n_subjects];
            loop {
                let mut changed = false;
                for c in 0..classes {
                    let (subjects, _, hists) = class_stats(c, &removed);
                    if subjects == 0 {
                        continue;
                    }
                    let refs: Vec<&Hist> = hists.iter().collect();
                    let st = self.class_status(subjects, &refs);
                    let bad = if mono_only { st == FAIL_MONO } else { st != OK };
                    if bad {
                        for &i in &order[starts[c]..starts[c + 1]] {
                            removed[u.subjects[i as usize] as usize] = true;
                        }
                        changed = true;
                    }
                }
                if !changed {
                    return removed;
                }
            }
        };
        let removed = fixpoint(false);
        let suppressed_rows = |removed: &[bool]| -> u64 {
            removed
                .iter()
                .zip(&u.subject_rows)
                .filter(|(r, _)| **r)
                .map(|(_, n)| *n)
                .sum()
        };
        let supp = suppressed_rows(&removed);
        let supp_mono = if self.model.has_non_superset_closed() {
            suppressed_rows(&fixpoint(true))
        } else {
            supp
        };
        let mut sums = NodeSums {
            suppressed: supp,
            suppressed_lines: vec![0; d],
            ..Default::default()
        };
        let (mut kept_classes, mut kept_units, mut all_sq) = (0u64, 0u64, 0u128);
        let mut class_sizes = Vec::new();
        let none_removed = vec![false; self.ds.n_subjects];
        for c in 0..classes {
            let (_, all_rows, _) = class_stats(c, &none_removed);
            all_sq += (all_rows as u128) * (all_rows as u128);
            let (subjects, rows, _) = class_stats(c, &removed);
            if subjects > 0 {
                kept_classes += 1;
                kept_units += subjects;
                sums.kept_sq += (rows as u128) * (rows as u128);
                if want_detail {
                    class_sizes.push((subjects, rows));
                }
            }
        }
        for i in 0..u.keys.len() {
            if !removed[u.subjects[i] as usize] {
                continue;
            }
            let g = class_keys[class_of[i] as usize];
            for j in 0..d {
                let code = g.field(self.layout.shifts[j], self.layout.masks[j]);
                let lines = self.ds.qis[j].hierarchy.level(levels[j] as usize).lines()[code as usize];
                sums.suppressed_lines[j] += u.rows[i] as u64 * lines as u64;
            }
            if self.mctx.metric == Metric::Entropy {
                sums.entropy_extra += u.rows[i] as f64 * self.leaf_entropy_extra(levels, u.keys[i]);
            }
        }
        sums.kept_classes = kept_classes;
        let avg_ok = self.avg_risk_ok(kept_classes, kept_units);
        let (feasible, mono_infeasible) = self.finish(supp <= self.limit, supp_mono, avg_ok);
        let eval = Evaluation {
            feasible,
            mono_infeasible,
            suppressed: supp,
            avg_risk_ok: avg_ok,
            metric: self.mctx.value(levels, &sums),
            gen_bound: self.mctx.generalisation_bound(all_sq, classes as u64),
        };
        let detail = want_detail.then(|| {
            let mut violations: Vec<(&'static str, u64)> = Vec::new();
            for c in 0..classes {
                let (subjects, rows, hists) = class_stats(c, &none_removed);
                let refs: Vec<&Hist> = hists.iter().collect();
                for name in self.model.class_violations(subjects, &self.ds.sensitive, &refs) {
                    match violations.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, x)) => *x += rows,
                        None => violations.push((name, rows)),
                    }
                }
            }
            SubjectDetail {
                removed,
                class_sizes,
                violations,
            }
        });
        (eval, detail)
    }
}

#[derive(Debug, Default)]
struct SubjectDetail {
    removed: Vec<bool>,
    class_sizes: Vec<(u64, u64)>,
    violations: Vec<(&'static str, u64)>,
}
