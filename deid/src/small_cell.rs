//! Small-cell rule with complementary suppression: the classic, non-DP way national health databases
//! publish count tables.
//!
//! A count between 1 and `threshold - 1` (10 by default, as for many national claims databases) could
//! point at a handful of identifiable patients, so it is *primary*-suppressed. Hiding it alone is not
//! enough: the published margins and the other cells of its row or column give it back by
//! subtraction. *Complementary* suppression hides further cells until no suppressed value can be
//! recovered exactly.
//!
//! The criterion is exact. Write the table with its margins as an `(R+1) × (C+1)` augmented table (the
//! column totals are an extra row, the row totals an extra column, the grand total their corner);
//! every row and column of it says "the first entries sum to the last one". Take rows and columns as
//! the two sides of a bipartite graph and every suppressed entry as an edge. Moving `+1, -1, +1, …`
//! around a cycle of that graph keeps every relation true (an entry in the margin row or column takes
//! the opposite sign), so an entry on a cycle is not determined by the linear relations, and one on no
//! cycle (a bridge) is. Counts cannot be negative, so a cycle can only be followed in a direction that
//! never lowers a zero: [`recoverable`] searches for such a cycle through each suppressed entry in the
//! residual graph of allowed `±1` moves. Because the constraint matrix is totally unimodular, a real
//! feasible move implies a second *integer* solution, so the test is exact for integer counts. A 1-D
//! table is the same picture with a single line (the cells and the grand total).
//!
//! Finding the fewest cells to hide is NP-hard (the cell suppression problem), so [`protect`] uses a
//! heuristic and lets the exact test decide when it is done: first, any line with a single suppressed
//! entry gets its smallest non-zero entry suppressed too; then every entry the test still finds
//! determined is put on a usable cycle by suppressing the cheapest path that closes one (a shortest
//! path weighted by the values hidden). Suppression only ever grows, so the loop ends, and a table is
//! returned only once [`recoverable`] finds nothing.
//!
//! What this does not protect against: an attacker who narrows a suppressed value to a short interval
//! (no minimum protection interval is enforced), who assumes suppressed cells are below the threshold,
//! or who combines this table with other published tables of the same data.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The minimum-cell rule a publication must follow; configurable because the threshold differs
/// between data holders (10 is the common choice for national health databases, some use 5 or 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmallCellRule {
    /// Counts from 1 to `threshold - 1` are suppressed. Must be at least 1.
    pub threshold: u64,
    /// Also treat a zero as small. Off by default: a zero names nobody, but some data holders hide
    /// zeros too because "nobody in this group had X" can itself be disclosive.
    pub suppress_zeros: bool,
}

impl Default for SmallCellRule {
    fn default() -> Self {
        Self {
            threshold: 10,
            suppress_zeros: false,
        }
    }
}

impl SmallCellRule {
    /// Whether a count must be primary-suppressed, so callers and tests apply the rule exactly as
    /// [`protect`] does.
    pub fn is_small(&self, count: u64) -> bool {
        count < self.threshold && (count > 0 || self.suppress_zeros)
    }
}

/// A 1-D or 2-D table of counts to publish; the margins are derived, never supplied, so they cannot
/// disagree with the cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountTable {
    /// One label per row (the first grouping column).
    pub row_labels: Vec<String>,
    /// Column labels of a 2-D table (the second grouping column); `None` for a 1-D table.
    pub col_labels: Option<Vec<String>>,
    /// `counts[row][col]`; a 1-D table has exactly one count per row.
    pub counts: Vec<Vec<u64>>,
}

impl CountTable {
    /// Builds a table from sparse `(key, count)` pairs as a `GROUP BY` returns them, because absent
    /// combinations are real zeros that the suppression must account for. `dims` is 1 or 2 and every
    /// key has that many parts (callers with more grouping columns join the 2nd..nth parts into one
    /// column label). Labels are sorted so the layout does not depend on the query's row order; a key
    /// given twice is an error rather than silently summed, since it means the aggregation is wrong.
    pub fn from_cells(cells: &[(Vec<String>, u64)], dims: usize) -> Result<CountTable> {
        if !(1..=2).contains(&dims) {
            return Err(Error::Config(format!(
                "small-cell tables have 1 or 2 dimensions, not {dims}"
            )));
        }
        if cells.is_empty() {
            return Err(Error::Input("count table has no cells".into()));
        }
        if let Some((key, _)) = cells.iter().find(|(key, _)| key.len() != dims) {
            return Err(Error::Input(format!(
                "cell key {key:?} has {} parts, expected {dims}",
                key.len()
            )));
        }
        let index = |part: usize| -> BTreeMap<&str, usize> {
            let set: BTreeSet<&str> = cells.iter().map(|(key, _)| key[part].as_str()).collect();
            set.into_iter().enumerate().map(|(i, label)| (label, i)).collect()
        };
        let rows = index(0);
        let cols = (dims == 2).then(|| index(1));
        let width = cols.as_ref().map_or(1, BTreeMap::len);
        let mut counts = vec![vec![0u64; width]; rows.len()];
        let mut seen = vec![vec![false; width]; rows.len()];
        for (key, count) in cells {
            let i = rows[key[0].as_str()];
            let j = cols.as_ref().map_or(0, |c| c[key[1].as_str()]);
            if std::mem::replace(&mut seen[i][j], true) {
                return Err(Error::Input(format!("cell key {key:?} appears twice")));
            }
            counts[i][j] = *count;
        }
        let labels = |map: BTreeMap<&str, usize>| map.into_keys().map(str::to_owned).collect::<Vec<_>>();
        Ok(CountTable {
            row_labels: labels(rows),
            col_labels: cols.map(labels),
            counts,
        })
    }

    /// Number of columns of the interior (1 for a 1-D table).
    fn width(&self) -> usize {
        self.col_labels.as_ref().map_or(1, Vec::len)
    }

    /// Refuses shapes the suppression cannot reason about (ragged rows, labels that do not match).
    fn validate(&self) -> Result<()> {
        if self.counts.is_empty() {
            return Err(Error::Input("count table has no rows".into()));
        }
        if self.row_labels.len() != self.counts.len() {
            return Err(Error::Input(format!(
                "count table has {} row labels for {} rows",
                self.row_labels.len(),
                self.counts.len()
            )));
        }
        if self.col_labels.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::Input("count table has no columns".into()));
        }
        let width = self.width();
        if let Some((i, row)) = self.counts.iter().enumerate().find(|(_, row)| row.len() != width) {
            return Err(Error::Input(format!(
                "row {i} ({:?}) has {} counts, expected {width}",
                self.row_labels[i],
                row.len()
            )));
        }
        Ok(())
    }
}

/// Why an entry is (not) shown, so a publication can mark primary and complementary suppressions
/// differently (many data holders print them with different symbols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Shown as is.
    Published,
    /// Hidden because it is itself a small count.
    Primary,
    /// Hidden only so that a primary suppression cannot be recovered by subtraction.
    Complementary,
}

impl CellStatus {
    /// Whether the entry is hidden (for either reason).
    pub fn is_suppressed(self) -> bool {
        self != Self::Published
    }
}

/// Names one entry of the published table, margins included, because margins are suppressed and
/// checked exactly like interior cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellRef {
    /// Interior cell `(row, col)`; a 1-D table uses column 0.
    Cell(usize, usize),
    /// Total of a row (2-D tables only; in a 1-D table it would just repeat the cell).
    RowTotal(usize),
    /// Total of a column (2-D tables only).
    ColTotal(usize),
    /// Total of the whole table.
    GrandTotal,
}

/// A table with the suppression decided. It keeps the true counts for the publisher's own checks, so
/// it deliberately does not implement `Serialize`: [`ProtectedTable::publish`] is the only view meant
/// to leave the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedTable {
    table: CountTable,
    rule: SmallCellRule,
    /// True values of the augmented table, indexed like `status` (see [`ProtectedTable::index`]).
    values: Vec<u64>,
    status: Vec<CellStatus>,
}

impl ProtectedTable {
    /// The input table, so the caller keeps labels and counts together with the decision.
    pub fn table(&self) -> &CountTable {
        &self.table
    }

    /// The rule the suppression was decided under (to document it next to the publication).
    pub fn rule(&self) -> SmallCellRule {
        self.rule
    }

    /// Every entry of the published table in a fixed order (cells row by row, row totals, column
    /// totals, grand total), so callers can iterate without knowing the shape rules.
    pub fn refs(&self) -> Vec<CellRef> {
        (0..self.values.len()).map(|k| self.cell_ref(k)).collect()
    }

    /// Status of an entry. Panics if `c` is not an entry of this table (like slice indexing).
    pub fn status(&self, c: CellRef) -> CellStatus {
        self.status[self.index(c)]
    }

    /// True count of an entry, suppressed or not: for audits by the data holder, never for
    /// publication. Panics if `c` is not an entry of this table.
    pub fn value(&self, c: CellRef) -> u64 {
        self.values[self.index(c)]
    }

    /// The count as it may be published: `None` when suppressed. Panics if `c` is not an entry of
    /// this table.
    pub fn published(&self, c: CellRef) -> Option<u64> {
        let k = self.index(c);
        (!self.status[k].is_suppressed()).then_some(self.values[k])
    }

    /// `(primary, complementary)` suppressions over all entries, margins included, to report the
    /// information lost.
    pub fn suppressed_count(&self) -> (usize, usize) {
        let count = |s| self.status.iter().filter(|&&x| x == s).count();
        (count(CellStatus::Primary), count(CellStatus::Complementary))
    }

    /// The publishable view: labels, shown counts and statuses, without any suppressed value.
    pub fn publish(&self) -> PublishedTable {
        let entry = |c| PublishedEntry {
            count: self.published(c),
            status: self.status(c),
        };
        let rows = self.table.counts.len();
        let width = self.table.width();
        let two_d = self.table.col_labels.is_some();
        PublishedTable {
            rule: self.rule,
            row_labels: self.table.row_labels.clone(),
            col_labels: self.table.col_labels.clone(),
            cells: (0..rows)
                .map(|i| (0..width).map(|j| entry(CellRef::Cell(i, j))).collect())
                .collect(),
            row_totals: two_d.then(|| (0..rows).map(|i| entry(CellRef::RowTotal(i))).collect()),
            col_totals: two_d.then(|| (0..width).map(|j| entry(CellRef::ColTotal(j))).collect()),
            grand_total: entry(CellRef::GrandTotal),
        }
    }

    /// Position of an entry in the augmented table: `(R+1) × (C+1)` row-major for 2-D (margins in the
    /// last row and column), cells then grand total for 1-D.
    fn index(&self, c: CellRef) -> usize {
        let rows = self.table.counts.len();
        match (self.table.col_labels.as_ref().map(Vec::len), c) {
            (Some(cols), CellRef::Cell(i, j)) if i < rows && j < cols => i * (cols + 1) + j,
            (Some(cols), CellRef::RowTotal(i)) if i < rows => i * (cols + 1) + cols,
            (Some(cols), CellRef::ColTotal(j)) if j < cols => rows * (cols + 1) + j,
            (Some(cols), CellRef::GrandTotal) => rows * (cols + 1) + cols,
            (None, CellRef::Cell(i, 0)) if i < rows => i,
            (None, CellRef::GrandTotal) => rows,
            _ => panic!("{c:?} is not an entry of this {rows}-row table"),
        }
    }

    /// Inverse of [`ProtectedTable::index`].
    fn cell_ref(&self, k: usize) -> CellRef {
        let rows = self.table.counts.len();
        match self.table.col_labels.as_ref().map(Vec::len) {
            Some(cols) => match (k / (cols + 1), k % (cols + 1)) {
                (i, j) if i == rows && j == cols => CellRef::GrandTotal,
                (i, j) if i == rows => CellRef::ColTotal(j),
                (i, j) if j == cols => CellRef::RowTotal(i),
                (i, j) => CellRef::Cell(i, j),
            },
            None if k == rows => CellRef::GrandTotal,
            None => CellRef::Cell(k, 0),
        }
    }

    /// The bipartite graph of the augmented table, for the heuristic and the exact check.
    fn graph(&self) -> Graph {
        Graph::new(
            self.table.counts.len(),
            self.table.col_labels.as_ref().map(Vec::len),
            &self.values,
        )
    }
}

/// One published entry: the count if shown, and why it is hidden otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedEntry {
    /// The count, `None` when suppressed.
    pub count: Option<u64>,
    /// Published, primary or complementary.
    pub status: CellStatus,
}

/// What may leave the process: the table as printed, with suppressed counts absent rather than
/// masked, so no serialisation can leak them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedTable {
    /// The rule applied, printed with the table so readers know what a blank means.
    pub rule: SmallCellRule,
    /// Row labels.
    pub row_labels: Vec<String>,
    /// Column labels (`None` for a 1-D table).
    pub col_labels: Option<Vec<String>>,
    /// `cells[row][col]` (one column for a 1-D table).
    pub cells: Vec<Vec<PublishedEntry>>,
    /// Row totals (2-D only).
    pub row_totals: Option<Vec<PublishedEntry>>,
    /// Column totals (2-D only).
    pub col_totals: Option<Vec<PublishedEntry>>,
    /// Grand total.
    pub grand_total: PublishedEntry,
}

/// Applies the small-cell rule to `table` and adds complementary suppressions until no suppressed
/// entry (cell or margin) can be recovered exactly from what is published. Fails on a threshold of 0
/// ([`Error::Config`]), on an empty or ragged table, or on totals that overflow `u64`
/// ([`Error::Input`]).
pub fn protect(table: &CountTable, rule: &SmallCellRule) -> Result<ProtectedTable> {
    if rule.threshold == 0 {
        return Err(Error::Config("small-cell threshold must be at least 1".into()));
    }
    table.validate()?;
    let values = augmented_values(table)?;
    let status = values
        .iter()
        .map(|&v| {
            if rule.is_small(v) {
                CellStatus::Primary
            } else {
                CellStatus::Published
            }
        })
        .collect();
    let mut protected = ProtectedTable {
        table: table.clone(),
        rule: *rule,
        values,
        status,
    };
    let graph = protected.graph();
    complete(&graph, &mut protected.status);
    debug_assert!(recoverable(&protected).is_empty());
    Ok(protected)
}

/// Every suppressed entry whose true value is the only one consistent with the published entries,
/// the additive relations and non-negative integer counts. Empty for any result of [`protect`];
/// exposed so a table suppressed by hand or by another tool can be audited.
pub fn recoverable(table: &ProtectedTable) -> Vec<CellRef> {
    let graph = table.graph();
    determined(&graph, &table.status)
        .into_iter()
        .map(|k| table.cell_ref(k))
        .collect()
}

/// The augmented table's values (cells, row totals, column totals, grand total) in
/// [`ProtectedTable::index`] order, refusing totals that do not fit in `u64`.
fn augmented_values(table: &CountTable) -> Result<Vec<u64>> {
    fn sum(mut it: impl Iterator<Item = u64>) -> Result<u64> {
        it.try_fold(0u64, u64::checked_add)
            .ok_or_else(|| Error::Input("count table totals overflow u64".into()))
    }
    if table.col_labels.is_none() {
        let mut values: Vec<u64> = table.counts.iter().map(|row| row[0]).collect();
        values.push(sum(values.iter().copied())?);
        return Ok(values);
    }
    let cols = table.width();
    let mut values = Vec::with_capacity((table.counts.len() + 1) * (cols + 1));
    for row in &table.counts {
        values.extend_from_slice(row);
        values.push(sum(row.iter().copied())?);
    }
    for j in 0..cols {
        values.push(sum(table.counts.iter().map(|row| row[j]))?);
    }
    let row_totals = (0..table.counts.len())
        .map(|i| values[i * (cols + 1) + cols])
        .collect::<Vec<_>>();
    values.push(sum(row_totals.into_iter())?);
    Ok(values)
}

/// One entry of the augmented table as an edge between its row node `u` and column node `v`.
#[derive(Debug, Clone, Copy)]
struct Item {
    u: usize,
    v: usize,
    /// Exactly one of its row and column is a margin, so a `+1` step around a cycle changes the
    /// count by `-1`.
    negative: bool,
    value: u64,
}

impl Item {
    /// The step along the arc `u → v` is allowed: it raises the count, or lowers a positive one.
    fn forward(self) -> bool {
        !self.negative || self.value > 0
    }

    /// The step along the arc `v → u` is allowed.
    fn backward(self) -> bool {
        self.negative || self.value > 0
    }
}

/// The augmented table as a bipartite graph (rows vs columns, margins included); a 1-D table is two
/// nodes joined by every cell and by the grand total.
struct Graph {
    nodes: usize,
    items: Vec<Item>,
    /// Entries of each line that must add up (the heuristic's unit of work).
    lines: Vec<Vec<usize>>,
    two_d: bool,
}

impl Graph {
    fn new(rows: usize, cols: Option<usize>, values: &[u64]) -> Graph {
        match cols {
            Some(cols) => {
                let nodes = rows + 1 + cols + 1;
                let mut items = Vec::with_capacity(values.len());
                for i in 0..=rows {
                    for j in 0..=cols {
                        items.push(Item {
                            u: i,
                            v: rows + 1 + j,
                            negative: (i == rows) != (j == cols),
                            value: values[i * (cols + 1) + j],
                        });
                    }
                }
                let mut lines = vec![Vec::new(); nodes];
                for (k, item) in items.iter().enumerate() {
                    lines[item.u].push(k);
                    lines[item.v].push(k);
                }
                Graph {
                    nodes,
                    items,
                    lines,
                    two_d: true,
                }
            }
            None => Graph {
                nodes: 2,
                items: values
                    .iter()
                    .enumerate()
                    .map(|(k, &value)| Item {
                        u: 0,
                        v: 1,
                        negative: k == rows,
                        value,
                    })
                    .collect(),
                lines: vec![(0..=rows).collect()],
                two_d: false,
            },
        }
    }

    /// The second line an entry belongs to besides `line` (none in a 1-D table).
    fn other_line(&self, k: usize, line: usize) -> Option<usize> {
        let item = self.items[k];
        self.two_d.then_some(if item.u == line { item.v } else { item.u })
    }

    /// Arcs `(from, to, entry)` of the allowed unit steps of the entries `include` selects.
    fn arcs(&self, include: impl Fn(usize) -> bool) -> Vec<Vec<(usize, usize)>> {
        let mut adj = vec![Vec::new(); self.nodes];
        for (k, item) in self.items.iter().enumerate().filter(|&(k, _)| include(k)) {
            if item.forward() {
                adj[item.u].push((item.v, k));
            }
            if item.backward() {
                adj[item.v].push((item.u, k));
            }
        }
        adj
    }
}

/// Indices of the suppressed entries that no feasible cycle of suppressed entries passes through.
fn determined(graph: &Graph, status: &[CellStatus]) -> Vec<usize> {
    let adj = graph.arcs(|k| status[k].is_suppressed());
    (0..graph.items.len())
        .filter(|&k| status[k].is_suppressed() && !movable(graph, &adj, k))
        .collect()
}

/// Whether entry `k` lies on a directed cycle of allowed steps: an arc of `k` plus a path back that
/// does not use `k` (parallel entries of a 1-D table are distinct entries and may be used).
fn movable(graph: &Graph, adj: &[Vec<(usize, usize)>], k: usize) -> bool {
    let item = graph.items[k];
    (item.forward() && reaches(adj, item.v, item.u, k)) || (item.backward() && reaches(adj, item.u, item.v, k))
}

/// Breadth-first reachability from `from` to `to` avoiding the arcs of entry `skip`.
fn reaches(adj: &[Vec<(usize, usize)>], from: usize, to: usize, skip: usize) -> bool {
    let mut seen = vec![false; adj.len()];
    let mut queue = VecDeque::from([from]);
    seen[from] = true;
    while let Some(n) = queue.pop_front() {
        if n == to {
            return true;
        }
        for &(next, k) in &adj[n] {
            if k != skip && !std::mem::replace(&mut seen[next], true) {
                queue.push_back(next);
            }
        }
    }
    false
}

/// Adds complementary suppressions to `status` until [`determined`] finds nothing.
fn complete(graph: &Graph, status: &mut [CellStatus]) {
    loop {
        line_rule(graph, status);
        let open = determined(graph, status);
        if open.is_empty() {
            return;
        }
        for k in open {
            let adj = graph.arcs(|m| status[m].is_suppressed());
            if !movable(graph, &adj, k) && !close_cycle(graph, status, k) {
                // Unreachable in theory (the margins always close a cycle); hiding everything is safe.
                for s in status.iter_mut().filter(|s| !s.is_suppressed()) {
                    *s = CellStatus::Complementary;
                }
            }
        }
    }
}

/// A line with exactly one suppressed entry gives it away by subtraction: suppress the line's
/// smallest non-zero published entry, preferring one whose other line already has a suppression
/// (it then adds no new exposed line), ties broken by position.
fn line_rule(graph: &Graph, status: &mut [CellStatus]) {
    loop {
        let mut changed = false;
        for (line, members) in graph.lines.iter().enumerate() {
            if members.iter().filter(|&&k| status[k].is_suppressed()).count() != 1 {
                continue;
            }
            let pick = members
                .iter()
                .copied()
                .filter(|&k| !status[k].is_suppressed())
                .min_by_key(|&k| {
                    let other_hidden = graph
                        .other_line(k, line)
                        .is_some_and(|o| graph.lines[o].iter().any(|&m| status[m].is_suppressed()));
                    let value = graph.items[k].value;
                    (value == 0, !other_hidden, value, k)
                });
            if let Some(k) = pick {
                status[k] = CellStatus::Complementary;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// Puts the determined entry `k` on a feasible cycle by suppressing the cheapest path that closes
/// one (cost = value + 1 per newly hidden entry, zeros only if no other path exists). Every entry of
/// that cycle becomes movable and nothing movable becomes determined, so progress is strict. Returns
/// false if no entry was added.
fn close_cycle(graph: &Graph, status: &mut [CellStatus], k: usize) -> bool {
    let zero_cost: u128 = graph.items.iter().map(|i| u128::from(i.value) + 1).sum::<u128>() + 1;
    let cost = |m: usize| match (status[m].is_suppressed(), graph.items[m].value) {
        (true, _) => 0,
        (false, 0) => zero_cost,
        (false, v) => u128::from(v) + 1,
    };
    let adj = graph.arcs(|m| m != k);
    let item = graph.items[k];
    let mut best: Option<(u128, Vec<usize>)> = None;
    for (allowed, from, to) in [(item.forward(), item.v, item.u), (item.backward(), item.u, item.v)] {
        if !allowed {
            continue;
        }
        if let Some(found) = cheapest_path(&adj, from, to, &cost)
            && best.as_ref().is_none_or(|b| found.0 < b.0)
        {
            best = Some(found);
        }
    }
    let mut added = false;
    for m in best.map(|b| b.1).unwrap_or_default() {
        if !status[m].is_suppressed() {
            status[m] = CellStatus::Complementary;
            added = true;
        }
    }
    added
}

/// Dijkstra from `from` to `to`; returns the cost and the entries on the path.
fn cheapest_path(
    adj: &[Vec<(usize, usize)>],
    from: usize,
    to: usize,
    cost: &dyn Fn(usize) -> u128,
) -> Option<(u128, Vec<usize>)> {
    let mut dist = vec![u128::MAX; adj.len()];
    let mut pred: Vec<Option<(usize, usize)>> = vec![None; adj.len()];
    let mut heap = BinaryHeap::from([Reverse((0u128, from))]);
    dist[from] = 0;
    while let Some(Reverse((d, n))) = heap.pop() {
        if d > dist[n] {
            continue;
        }
        if n == to {
            let mut path = Vec::new();
            let mut at = to;
            while let Some((prev, k)) = pred[at] {
                path.push(k);
                at = prev;
            }
            return Some((d, path));
        }
        for &(next, k) in &adj[n] {
            let nd = d + cost(k);
            if nd < dist[next] {
                dist[next] = nd;
                pred[next] = Some((n, k));
                heap.push(Reverse((nd, next)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn two_d(counts: &[&[u64]]) -> CountTable {
        CountTable {
            row_labels: labels("r", counts.len()),
            col_labels: Some(labels("c", counts[0].len())),
            counts: counts.iter().map(|r| r.to_vec()).collect(),
        }
    }

    fn one_d(counts: &[u64]) -> CountTable {
        CountTable {
            row_labels: labels("r", counts.len()),
            col_labels: None,
            counts: counts.iter().map(|&c| vec![c]).collect(),
        }
    }

    fn rule(threshold: u64, suppress_zeros: bool) -> SmallCellRule {
        SmallCellRule {
            threshold,
            suppress_zeros,
        }
    }

    /// A table with a hand-chosen suppression pattern, to test the checker on bad patterns.
    fn with_pattern(table: CountTable, hidden: &[CellRef]) -> ProtectedTable {
        let values = augmented_values(&table).unwrap();
        let mut pt = ProtectedTable {
            table,
            rule: SmallCellRule::default(),
            status: vec![CellStatus::Published; values.len()],
            values,
        };
        for &c in hidden {
            let k = pt.index(c);
            pt.status[k] = CellStatus::Primary;
        }
        pt
    }

    fn hidden(pt: &ProtectedTable) -> BTreeSet<CellRef> {
        pt.refs()
            .into_iter()
            .filter(|&c| pt.status(c).is_suppressed())
            .collect()
    }

    // ---- brute-force oracle, independent of the graph code ----

    /// The additive relations as `(parts, total)`, written from the definition of the table.
    fn relations(pt: &ProtectedTable) -> Vec<(Vec<CellRef>, CellRef)> {
        let rows = pt.table().counts.len();
        match &pt.table().col_labels {
            None => vec![((0..rows).map(|i| CellRef::Cell(i, 0)).collect(), CellRef::GrandTotal)],
            Some(cols) => {
                let cols = cols.len();
                let mut eqs = Vec::new();
                for i in 0..rows {
                    eqs.push(((0..cols).map(|j| CellRef::Cell(i, j)).collect(), CellRef::RowTotal(i)));
                }
                for j in 0..cols {
                    eqs.push(((0..rows).map(|i| CellRef::Cell(i, j)).collect(), CellRef::ColTotal(j)));
                }
                eqs.push(((0..rows).map(CellRef::RowTotal).collect(), CellRef::GrandTotal));
                eqs.push(((0..cols).map(CellRef::ColTotal).collect(), CellRef::GrandTotal));
                eqs
            }
        }
    }

    struct Oracle {
        eqs: Vec<(Vec<usize>, usize)>,
        bound: u64,
        budget: u64,
    }

    impl Oracle {
        /// Propagates forced values and checks partial sums; false on a contradiction.
        fn propagate(&self, vals: &mut [Option<u64>]) -> bool {
            loop {
                let mut changed = false;
                for (parts, total) in &self.eqs {
                    let known: u64 = parts.iter().filter_map(|&p| vals[p]).sum();
                    let open: Vec<usize> = parts.iter().copied().filter(|&p| vals[p].is_none()).collect();
                    match (vals[*total], open.as_slice()) {
                        (Some(t), _) if known > t => return false,
                        (Some(t), []) if known != t => return false,
                        (Some(t), [p]) => {
                            if t - known > self.bound {
                                return false;
                            }
                            vals[*p] = Some(t - known);
                            changed = true;
                        }
                        (None, []) => {
                            if known > self.bound {
                                return false;
                            }
                            vals[*total] = Some(known);
                            changed = true;
                        }
                        (None, _) if known > self.bound => return false,
                        _ => {}
                    }
                }
                if !changed {
                    return true;
                }
            }
        }

        /// Whether the partial assignment extends to a full solution (exhaustive search).
        fn solvable(&mut self, mut vals: Vec<Option<u64>>) -> bool {
            self.budget = self.budget.checked_sub(1).expect("oracle search too large for a test");
            if !self.propagate(&mut vals) {
                return false;
            }
            let Some(free) = vals.iter().position(Option::is_none) else {
                return true;
            };
            (0..=self.bound).any(|w| {
                let mut next = vals.clone();
                next[free] = Some(w);
                self.solvable(next)
            })
        }
    }

    /// Suppressed entries whose set of values over all non-negative integer solutions has one
    /// element: for each one, search for any solution where it takes another value. Values are capped
    /// at grand total + 1; with the grand total published that is no cap at all, and otherwise a
    /// second value, if any, is reachable by a ±1 step (integral transportation polytope).
    fn oracle(pt: &ProtectedTable) -> BTreeSet<CellRef> {
        let refs = pt.refs();
        let at: HashMap<CellRef, usize> = refs.iter().enumerate().map(|(k, &c)| (c, k)).collect();
        let mut oracle = Oracle {
            eqs: relations(pt)
                .into_iter()
                .map(|(parts, total)| (parts.iter().map(|p| at[p]).collect(), at[&total]))
                .collect(),
            bound: pt.value(CellRef::GrandTotal) + 1,
            budget: 20_000_000,
        };
        let known: Vec<Option<u64>> = refs.iter().map(|&c| pt.published(c)).collect();
        let mut fixed = BTreeSet::new();
        for (k, &c) in refs.iter().enumerate() {
            if known[k].is_some() {
                continue;
            }
            let x = pt.value(c);
            let mut tries: Vec<u64> = vec![x + 1];
            tries.extend(x.checked_sub(1));
            tries.extend((0..=oracle.bound).filter(|&w| w + 1 < x || w > x + 1));
            let other = tries.into_iter().any(|w| {
                let mut vals = known.clone();
                vals[k] = Some(w);
                oracle.solvable(vals)
            });
            if !other {
                fixed.insert(c);
            }
        }
        fixed
    }

    /// Tiny deterministic generator (splitmix64) so property runs are reproducible without extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Counts skewed towards small values and zeros, where suppression is interesting.
        fn count(&mut self, max: u64) -> u64 {
            match self.below(4) {
                0 => 0,
                1 => self.below(max.min(4) + 1),
                _ => self.below(max + 1),
            }
        }

        fn table(&mut self, max: u64, max_rows: u64, max_cols: u64) -> CountTable {
            let rows = 1 + self.below(max_rows) as usize;
            if self.below(4) == 0 {
                let counts: Vec<u64> = (0..rows + 1).map(|_| self.count(max)).collect();
                one_d(&counts)
            } else {
                let cols = 1 + self.below(max_cols) as usize;
                let counts: Vec<Vec<u64>> = (0..rows)
                    .map(|_| (0..cols).map(|_| self.count(max)).collect())
                    .collect();
                let refs: Vec<&[u64]> = counts.iter().map(Vec::as_slice).collect();
                two_d(&refs)
            }
        }
    }

    /// Independent recomputation of an entry's true value from the input counts.
    fn true_value(t: &CountTable, c: CellRef) -> u64 {
        match c {
            CellRef::Cell(i, j) => t.counts[i][j],
            CellRef::RowTotal(i) => t.counts[i].iter().sum(),
            CellRef::ColTotal(j) => t.counts.iter().map(|r| r[j]).sum(),
            CellRef::GrandTotal => t.counts.iter().flatten().sum(),
        }
    }

    fn check_protected(t: &CountTable, r: &SmallCellRule) -> ProtectedTable {
        let pt = protect(t, r).unwrap();
        for c in pt.refs() {
            let v = true_value(t, c);
            assert_eq!(pt.value(c), v, "{c:?} of {t:?}");
            assert_eq!(pt.status(c) == CellStatus::Primary, r.is_small(v), "{c:?} of {t:?}");
            match pt.status(c) {
                CellStatus::Published => assert_eq!(pt.published(c), Some(v)),
                _ => assert_eq!(pt.published(c), None),
            }
        }
        assert_eq!(recoverable(&pt), Vec::<CellRef>::new(), "{t:?} {r:?}");
        assert_eq!(
            oracle(&pt),
            BTreeSet::new(),
            "oracle disagrees on {t:?} {r:?}: {:?}",
            hidden(&pt)
        );
        pt
    }

    // ---- the oracle itself must be able to say "recoverable" ----

    #[test]
    fn small_cell_oracle_finds_single_suppression() {
        let pt = with_pattern(two_d(&[&[3, 20], &[15, 30]]), &[CellRef::Cell(0, 0)]);
        let expect = BTreeSet::from([CellRef::Cell(0, 0)]);
        assert_eq!(oracle(&pt), expect);
        assert_eq!(recoverable(&pt), vec![CellRef::Cell(0, 0)]);
    }

    #[test]
    fn small_cell_rectangle_is_safe_and_bridge_is_not() {
        let rect = [
            CellRef::Cell(0, 0),
            CellRef::Cell(0, 1),
            CellRef::Cell(1, 0),
            CellRef::Cell(1, 1),
        ];
        let pt = with_pattern(two_d(&[&[3, 20], &[15, 30]]), &rect);
        assert!(oracle(&pt).is_empty());
        assert!(recoverable(&pt).is_empty());

        // Two rectangles joined by one cell: the joining cell is a bridge, the rectangles are safe.
        let t = two_d(&[&[2, 3, 4, 1], &[1, 5, 2, 3], &[4, 1, 2, 2], &[3, 3, 1, 5]]);
        let mut pattern: Vec<CellRef> = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (1, 2)]
            .iter()
            .map(|&(i, j)| CellRef::Cell(i, j))
            .collect();
        let pt = with_pattern(t.clone(), &pattern);
        assert_eq!(oracle(&pt), BTreeSet::from([CellRef::Cell(1, 2)]));
        assert_eq!(recoverable(&pt), vec![CellRef::Cell(1, 2)]);

        // protect's completion starting from that pattern repairs it.
        let mut status = pt.status.clone();
        complete(&pt.graph(), &mut status);
        let fixed = ProtectedTable { status, ..pt };
        assert!(recoverable(&fixed).is_empty());
        assert!(oracle(&fixed).is_empty());

        // A margin on its own in its line is recoverable too.
        pattern = vec![CellRef::RowTotal(1)];
        let pt = with_pattern(t, &pattern);
        assert_eq!(oracle(&pt), BTreeSet::from([CellRef::RowTotal(1)]));
        assert_eq!(recoverable(&pt), vec![CellRef::RowTotal(1)]);
    }

    #[test]
    fn small_cell_zeros_block_a_cycle() {
        // A full rectangle, but row 0 is all zeros with a published zero total: non-negativity pins
        // every cell, although the graph without signs has a cycle.
        let t = two_d(&[&[0, 0], &[4, 6]]);
        let rect = [
            CellRef::Cell(0, 0),
            CellRef::Cell(0, 1),
            CellRef::Cell(1, 0),
            CellRef::Cell(1, 1),
        ];
        let pt = with_pattern(t.clone(), &rect);
        let all: BTreeSet<CellRef> = rect.into_iter().collect();
        assert_eq!(oracle(&pt), all);
        assert_eq!(recoverable(&pt).into_iter().collect::<BTreeSet<_>>(), all);

        // Zeros that can only rise still make a usable cycle when the other direction is free.
        let pt = with_pattern(two_d(&[&[3, 0], &[0, 5]]), &rect);
        assert!(oracle(&pt).is_empty());
        assert!(recoverable(&pt).is_empty());
    }

    #[test]
    fn small_cell_classic_two_by_two() {
        let pt = check_protected(&two_d(&[&[3, 20], &[15, 30]]), &SmallCellRule::default());
        let rect = BTreeSet::from([
            CellRef::Cell(0, 0),
            CellRef::Cell(0, 1),
            CellRef::Cell(1, 0),
            CellRef::Cell(1, 1),
        ]);
        assert_eq!(hidden(&pt), rect);
        assert_eq!(pt.suppressed_count(), (1, 3));
        assert_eq!(pt.status(CellRef::Cell(0, 0)), CellStatus::Primary);
        assert_eq!(pt.published(CellRef::GrandTotal), Some(68));
    }

    #[test]
    fn small_cell_one_dimensional() {
        let pt = check_protected(&one_d(&[12, 3, 25, 0, 40]), &SmallCellRule::default());
        assert_eq!(hidden(&pt), BTreeSet::from([CellRef::Cell(1, 0), CellRef::Cell(0, 0)]));
        assert_eq!(pt.published(CellRef::GrandTotal), Some(80));
        assert_eq!(pt.published(CellRef::Cell(3, 0)), Some(0));

        // The zero is not a usable complement; the next non-zero is.
        let pt = check_protected(&one_d(&[3, 0, 25]), &SmallCellRule::default());
        assert_eq!(hidden(&pt), BTreeSet::from([CellRef::Cell(0, 0), CellRef::Cell(2, 0)]));

        // A single small non-zero cell: the total equals it and is small, so it is hidden too.
        let pt = check_protected(&one_d(&[0, 4, 0]), &SmallCellRule::default());
        assert_eq!(hidden(&pt), BTreeSet::from([CellRef::Cell(1, 0), CellRef::GrandTotal]));
        assert_eq!(pt.suppressed_count(), (2, 0));

        // A single large cell and a small one: the large one is the only complement.
        let pt = check_protected(&one_d(&[7, 500]), &SmallCellRule::default());
        assert_eq!(hidden(&pt), BTreeSet::from([CellRef::Cell(0, 0), CellRef::Cell(1, 0)]));
        assert_eq!(pt.published(CellRef::GrandTotal), Some(507));
    }

    #[test]
    fn small_cell_all_large_publishes_everything() {
        let pt = check_protected(&two_d(&[&[10, 20, 30], &[40, 50, 60]]), &SmallCellRule::default());
        assert_eq!(pt.suppressed_count(), (0, 0));
        assert!(pt.refs().iter().all(|&c| pt.published(c).is_some()));
        let pt = check_protected(&one_d(&[10, 11]), &SmallCellRule::default());
        assert_eq!(pt.suppressed_count(), (0, 0));
    }

    #[test]
    fn small_cell_zeros_by_rule() {
        let t = two_d(&[&[0, 20], &[15, 30]]);
        let pt = check_protected(&t, &SmallCellRule::default());
        assert_eq!(pt.suppressed_count(), (0, 0));
        assert_eq!(pt.published(CellRef::Cell(0, 0)), Some(0));

        let pt = check_protected(&t, &rule(10, true));
        assert_eq!(pt.status(CellRef::Cell(0, 0)), CellStatus::Primary);
        assert_eq!(hidden(&pt).len(), 4);

        // Zeros that can only rise: protect must still find cycles the checker accepts.
        check_protected(&two_d(&[&[0, 0], &[4, 6]]), &rule(10, true));
        check_protected(&one_d(&[0, 0, 0]), &rule(10, true));
    }

    #[test]
    fn small_cell_margins_and_degenerate_shapes() {
        // Small margins are primary too: row 0 totals 9.
        let pt = check_protected(&two_d(&[&[4, 5], &[30, 40]]), &SmallCellRule::default());
        assert_eq!(pt.status(CellRef::RowTotal(0)), CellStatus::Primary);
        // One row: row total = grand total and column totals = cells; duplicates must agree.
        let pt = check_protected(&two_d(&[&[3, 40, 25]]), &SmallCellRule::default());
        assert_eq!(pt.status(CellRef::ColTotal(0)), CellStatus::Primary);
        check_protected(&two_d(&[&[3], &[40], &[25]]), &SmallCellRule::default());
        check_protected(&two_d(&[&[3]]), &SmallCellRule::default());
        check_protected(&one_d(&[3]), &SmallCellRule::default());
    }

    #[test]
    fn small_cell_random_tables_are_protected() {
        let mut rng = Rng(7);
        let mut stats = (0, 0);
        for _ in 0..400 {
            let t = rng.table(15, 3, 4);
            let r = rule([1, 3, 5, 10, 10][rng.below(5) as usize], rng.below(4) == 0);
            let pt = check_protected(&t, &r);
            let (p, c) = pt.suppressed_count();
            stats.0 += p;
            stats.1 += c;
        }
        // The run must actually exercise suppression.
        assert!(stats.0 > 300 && stats.1 > 300, "{stats:?}");
    }

    #[test]
    fn small_cell_checker_agrees_with_oracle() {
        let mut rng = Rng(11);
        let mut found = 0;
        for round in 0..400 {
            let t = rng.table(4, 3, 3);
            let pt = if round % 2 == 0 {
                // Random suppression patterns, mostly unsafe.
                let pt = with_pattern(t, &[]);
                let refs = pt.refs();
                let pick: Vec<CellRef> = refs.into_iter().filter(|_| rng.below(5) < 2).collect();
                with_pattern(pt.table.clone(), &pick)
            } else {
                // A protected table with one complementary suppression undone.
                let mut pt = protect(&t, &rule(3, rng.below(3) == 0)).unwrap();
                let comp: Vec<usize> = (0..pt.status.len())
                    .filter(|&k| pt.status[k] == CellStatus::Complementary)
                    .collect();
                if !comp.is_empty() {
                    pt.status[comp[rng.below(comp.len() as u64) as usize]] = CellStatus::Published;
                }
                pt
            };
            let exact: BTreeSet<CellRef> = recoverable(&pt).into_iter().collect();
            let brute = oracle(&pt);
            assert_eq!(exact, brute, "{:?} hidden {:?}", pt.table, hidden(&pt));
            found += exact.len();
        }
        assert!(found > 100, "too few recoverable cells to be a test: {found}");
    }

    #[test]
    fn small_cell_errors() {
        let t = two_d(&[&[1, 2]]);
        assert!(matches!(protect(&t, &rule(0, false)), Err(Error::Config(_))));
        let mut ragged = two_d(&[&[1, 2], &[3, 4]]);
        ragged.counts[1].pop();
        assert!(matches!(
            protect(&ragged, &SmallCellRule::default()),
            Err(Error::Input(_))
        ));
        let empty = CountTable {
            row_labels: vec![],
            col_labels: None,
            counts: vec![],
        };
        assert!(matches!(
            protect(&empty, &SmallCellRule::default()),
            Err(Error::Input(_))
        ));
        let no_cols = CountTable {
            row_labels: labels("r", 1),
            col_labels: Some(vec![]),
            counts: vec![vec![]],
        };
        assert!(matches!(
            protect(&no_cols, &SmallCellRule::default()),
            Err(Error::Input(_))
        ));
        let overflow = one_d(&[u64::MAX, 1]);
        assert!(matches!(
            protect(&overflow, &SmallCellRule::default()),
            Err(Error::Input(_))
        ));
    }

    #[test]
    fn small_cell_from_cells() {
        let key = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        let t = CountTable::from_cells(&[(key("b", "y"), 5), (key("a", "x"), 7), (key("b", "x"), 2)], 2).unwrap();
        assert_eq!(t.row_labels, ["a", "b"]);
        assert_eq!(t.col_labels.as_deref(), Some(&["x".to_owned(), "y".to_owned()][..]));
        assert_eq!(t.counts, [[7, 0], [2, 5]]);

        let t = CountTable::from_cells(&[(vec!["z".into()], 3), (vec!["m".into()], 1)], 1).unwrap();
        assert_eq!(t.row_labels, ["m", "z"]);
        assert_eq!(t.col_labels, None);
        assert_eq!(t.counts, [[1], [3]]);

        assert!(matches!(
            CountTable::from_cells(&[(key("a", "x"), 1)], 3),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            CountTable::from_cells(&[(key("a", "x"), 1)], 1),
            Err(Error::Input(_))
        ));
        assert!(matches!(CountTable::from_cells(&[], 1), Err(Error::Input(_))));
        let dup = [(key("a", "x"), 1), (key("a", "x"), 2)];
        assert!(matches!(CountTable::from_cells(&dup, 2), Err(Error::Input(_))));
    }

    #[test]
    fn small_cell_publish_hides_values() {
        let pt = protect(&two_d(&[&[3, 20], &[15, 30]]), &SmallCellRule::default()).unwrap();
        let json = serde_json::to_value(pt.publish()).unwrap();
        assert_eq!(
            json["cells"][0][0],
            serde_json::json!({"count": null, "status": "primary"})
        );
        assert_eq!(json["cells"][1][1]["status"], "complementary");
        assert_eq!(json["row_totals"][0]["count"], 23);
        assert_eq!(json["grand_total"]["count"], 68);
        assert!(!json.to_string().contains("\"count\":3,"));
    }
}
