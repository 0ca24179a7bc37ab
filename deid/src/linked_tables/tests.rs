//! The audit against a brute-force oracle: tiny populations, every alternative data set enumerated.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::small_cell::{CountTable, SmallCellRule, protect};

/// A tiny population: `counts[point]` over the grid of `domains` (one size per column).
#[derive(Debug, Clone)]
struct Population {
    domains: Vec<usize>,
    counts: Vec<u64>,
}

impl Population {
    fn points(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new()];
        for &d in &self.domains {
            out = out
                .into_iter()
                .flat_map(|p| {
                    (0..d).map(move |v| {
                        let mut q = p.clone();
                        q.push(v);
                        q
                    })
                })
                .collect();
        }
        out
    }

    /// Values of column `c` that occur (what the tables' dimensions list).
    fn present(&self, c: usize) -> BTreeSet<usize> {
        self.points()
            .iter()
            .zip(&self.counts)
            .filter(|(_, n)| **n > 0)
            .map(|(p, _)| p[c])
            .collect()
    }
}

/// A table definition: grouped columns and, per column, each raw value's label (`None`: not counted).
#[derive(Debug, Clone)]
struct Grouping {
    columns: Vec<usize>,
    labels: Vec<Vec<Option<usize>>>,
    /// Keys declared (every label of every column, as with hierarchy levels or public key lists)
    /// rather than the combinations present in the data.
    declared: bool,
    /// `--suppress-zeros`.
    suppress_zeros: bool,
}

impl Grouping {
    /// Keys as present in the data, zeros published.
    fn as_present(columns: Vec<usize>, labels: Vec<Vec<Option<usize>>>) -> Grouping {
        Grouping {
            columns,
            labels,
            declared: false,
            suppress_zeros: false,
        }
    }

    fn key(&self, point: &[usize]) -> Option<Vec<String>> {
        self.columns
            .iter()
            .zip(&self.labels)
            .map(|(&c, l)| l[point[c]].map(|g| format!("c{c}g{g}")))
            .collect()
    }

    /// The table as the CLI builds it: keys present in the data, absent 2-D combinations as zeros.
    fn count_table(&self, pop: &Population) -> Option<CountTable> {
        let mut cells: BTreeMap<Vec<String>, u64> = BTreeMap::new();
        for (p, &n) in pop.points().iter().zip(&pop.counts) {
            if n == 0 {
                continue;
            }
            if let Some(k) = self.key(p) {
                *cells.entry(k).or_default() += n;
            }
        }
        if self.declared {
            let mut keys: Vec<Vec<String>> = vec![Vec::new()];
            for (&c, l) in self.columns.iter().zip(&self.labels) {
                let labels: BTreeSet<String> = l.iter().flatten().map(|g| format!("c{c}g{g}")).collect();
                keys = keys
                    .into_iter()
                    .flat_map(|k| {
                        labels.iter().map(move |g| {
                            let mut k = k.clone();
                            k.push(g.clone());
                            k
                        })
                    })
                    .collect();
            }
            for k in keys {
                cells.entry(k).or_default();
            }
        }
        let dims = self.columns.len().max(1);
        let cells: Vec<(Vec<String>, u64)> = if self.columns.is_empty() {
            vec![(vec!["(all)".into()], cells.values().sum())]
        } else {
            cells.into_iter().collect()
        };
        CountTable::from_cells(&cells, dims).ok()
    }

    fn linked(&self, pop: &Population, threshold: u64) -> Option<(LinkedTable, crate::small_cell::ProtectedTable)> {
        let table = self.count_table(pop)?;
        let protected = protect(
            &table,
            &SmallCellRule {
                threshold,
                suppress_zeros: self.suppress_zeros,
            },
        )
        .ok()?;
        let dimensions = self
            .columns
            .iter()
            .zip(&self.labels)
            .map(|(&c, l)| Dimension {
                column: format!("c{c}"),
                labels: pop
                    .present(c)
                    .into_iter()
                    .map(|v| l[v].map(|g| format!("c{c}g{g}")).into())
                    .collect(),
            })
            .collect();
        let t = protected.table().clone();
        let columns = self.columns.len();
        let linked = LinkedTable::from_protected(&protected, dimensions, self.declared, |i, j| match columns {
            0 => vec![],
            1 => vec![t.row_labels[i].clone()],
            _ => vec![t.row_labels[i].clone(), t.col_labels.as_ref().expect("2-D")[j].clone()],
        })
        .ok()?;
        Some((linked, protected))
    }
}

/// The oracle: every data set over the present values with the population's total (which a table
/// counting every row publishes), kept when it reproduces every published entry; an entry is
/// recoverable when all kept data sets agree on it.
fn oracle(pop: &Population, groupings: &[Grouping], tables: &[LinkedTable]) -> BTreeSet<Recovered> {
    let total: u64 = pop.counts.iter().sum();
    let present: Vec<BTreeSet<usize>> = (0..pop.domains.len()).map(|c| pop.present(c)).collect();
    let support: Vec<Vec<usize>> = pop
        .points()
        .into_iter()
        .filter(|p| p.iter().enumerate().all(|(c, v)| present[c].contains(v)))
        .collect();
    let entry_value = |g: &Grouping, t: &LinkedTable, e: &LinkedEntry, data: &[u64]| -> u64 {
        e.cells
            .iter()
            .map(|&cell| {
                let labels = &t.cells[cell as usize];
                support
                    .iter()
                    .zip(data)
                    .filter(|(p, _)| g.key(p).is_some_and(|k| g.columns.is_empty() || &k == labels))
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum()
    };
    // What an as-present table shows besides its counts: which labels of each dimension hold rows.
    let shown = |g: &Grouping, data: &[u64]| -> Vec<BTreeSet<String>> {
        let mut sets = vec![BTreeSet::new(); g.columns.len()];
        for (p, &n) in support.iter().zip(data) {
            if let (true, Some(k)) = (n > 0, g.key(p)) {
                for (d, l) in k.into_iter().enumerate() {
                    sets[d].insert(l);
                }
            }
        }
        sets
    };
    let truth: Vec<Vec<BTreeSet<String>>> = tables
        .iter()
        .map(|t| {
            (0..t.dimensions.len())
                .map(|d| t.cells.iter().map(|c| c[d].clone()).collect())
                .collect()
        })
        .collect();
    let mut seen: BTreeMap<Recovered, BTreeSet<u64>> = BTreeMap::new();
    let mut data = vec![0u64; support.len()];
    compositions(total, &mut data, 0, &mut |data| {
        let consistent = groupings.iter().zip(tables).zip(&truth).all(|((g, t), labels)| {
            t.entries
                .iter()
                .all(|e| e.count.is_none_or(|c| entry_value(g, t, e, data) == c))
                && (g.declared || &shown(g, data) == labels)
        });
        if consistent {
            for (ti, (g, t)) in groupings.iter().zip(tables).enumerate() {
                for (ei, e) in t.entries.iter().enumerate() {
                    // An entry no present value can fall in is not reported (the audit's rule: reporting
                    // it would say which values do not occur).
                    let reachable = e.cells.iter().any(|&cell| {
                        support.iter().any(|p| {
                            g.key(p)
                                .is_some_and(|k| g.columns.is_empty() || k == t.cells[cell as usize])
                        })
                    });
                    if e.count.is_none() && reachable {
                        seen.entry(Recovered { table: ti, entry: ei })
                            .or_default()
                            .insert(entry_value(g, t, e, data));
                    }
                }
            }
        }
    });
    seen.into_iter().filter(|(_, v)| v.len() == 1).map(|(k, _)| k).collect()
}

/// Calls `f` on every vector of non-negative integers summing to `left` (filled from `at`).
fn compositions(left: u64, data: &mut [u64], at: usize, f: &mut impl FnMut(&[u64])) {
    if at + 1 == data.len() {
        data[at] = left;
        f(data);
        return;
    }
    if at == data.len() {
        if left == 0 {
            f(data);
        }
        return;
    }
    for v in 0..=left {
        data[at] = v;
        compositions(left - v, data, at + 1, f);
    }
    data[at] = 0;
}

fn grouping(domains: Vec<usize>) -> impl Strategy<Value = Grouping> {
    let n = domains.len();
    (
        proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 1..=2),
        any::<u64>(),
        0u8..9,
    )
        .prop_map(move |(columns, seed, flags)| {
            let mut s = seed;
            let mut next = |m: u64| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 33) % m
            };
            let labels = columns
                .iter()
                .map(|&c| {
                    (0..domains[c])
                        .map(|_| {
                            // Mostly covered; now and then a value the table does not count.
                            if next(8) == 0 {
                                None
                            } else {
                                Some(next(domains[c] as u64) as usize)
                            }
                        })
                        .collect()
                })
                .collect();
            Grouping {
                columns,
                labels,
                declared: flags % 3 == 0,
                suppress_zeros: flags / 3 == 0,
            }
        })
}

fn population() -> impl Strategy<Value = Population> {
    prop_oneof![
        Just(vec![2usize, 2, 2]),
        Just(vec![3usize, 2]),
        Just(vec![3usize, 3]),
        Just(vec![4usize, 2])
    ]
    .prop_flat_map(|domains| {
        let size: usize = domains.iter().product();
        (
            Just(domains),
            proptest::collection::vec(prop_oneof![3 => 0u64..=1, 1 => 2u64..=4], size),
        )
            .prop_map(|(domains, counts)| Population { domains, counts })
            .prop_filter("a small population the oracle can enumerate", |p| {
                let total: u64 = p.counts.iter().sum();
                (4..=9).contains(&total)
            })
    })
}

fn tables_of_one_population() -> impl Strategy<Value = ((Population, Vec<Grouping>), u64)> {
    (
        population().prop_flat_map(|p| {
            let d = p.domains.clone();
            (Just(p), proptest::collection::vec(grouping(d), 2..=3))
        }),
        2u64..=4,
    )
}

/// Audit and oracle on one generated case; `None` when the case is outside what the oracle enumerates.
fn compare(
    ((pop, groupings), threshold): &((Population, Vec<Grouping>), u64),
) -> Option<(BTreeSet<Recovered>, BTreeSet<Recovered>)> {
    let built: Vec<_> = groupings.iter().filter_map(|g| g.linked(pop, *threshold)).collect();
    if built.len() != groupings.len() {
        return None;
    }
    let tables: Vec<LinkedTable> = built.into_iter().map(|(l, _)| l).collect();
    // The oracle enumerates data sets of a known total: some table must count every row and publish it.
    let counts_all = |(g, t): (&Grouping, &LinkedTable)| {
        g.columns
            .iter()
            .zip(&g.labels)
            .all(|(&c, l)| pop.present(c).iter().all(|&v| l[v].is_some()))
            && t.entries.last().is_some_and(|e| e.count.is_some())
    };
    if !groupings.iter().zip(&tables).any(counts_all) {
        return None;
    }
    let expected = oracle(pop, groupings, &tables);
    let audit = recoverable(&tables, &AuditLimits::default()).expect("audit");
    Some((audit.recovered.into_iter().collect(), expected))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, .. ProptestConfig::default() })]

    /// Two or three tables of one population: the audit finds exactly the entries the oracle finds.
    #[test]
    fn audit_equals_brute_force_oracle(case in tables_of_one_population()) {
        let compared = compare(&case);
        prop_assume!(compared.is_some());
        let (found, expected) = compared.expect("compared");
        prop_assert_eq!(found, expected);
    }
}

/// The property above is only worth something if its cases include recoveries: on a fixed sample,
/// both outcomes occur often, and audit and oracle agree on every case.
#[test]
fn the_generated_cases_include_recoveries_and_safe_sets() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = tables_of_one_population();
    let (mut compared, mut with_recovery) = (0, 0);
    for _ in 0..300 {
        let case = strategy.new_tree(&mut runner).expect("case").current();
        if let Some((found, expected)) = compare(&case) {
            assert_eq!(found, expected, "case {case:?}");
            compared += 1;
            with_recovery += usize::from(!expected.is_empty());
        }
    }
    assert!(compared >= 150, "only {compared} cases compared");
    assert!(
        with_recovery * 10 >= compared && with_recovery * 10 <= compared * 9,
        "{with_recovery} of {compared} cases had a recovery"
    );
    eprintln!("{with_recovery} of {compared} compared cases had a recovery");
}

/// The differencing the module exists for: a table by prefecture suppresses A (3) and, to protect it,
/// B (20); a second table that groups A with C publishes B and A+C, and the first table's total then
/// gives A back. Each table alone is safe.
#[test]
fn a_regrouped_table_gives_back_a_suppressed_cell() {
    let pop = Population {
        domains: vec![3],
        counts: vec![3, 20, 30],
    };
    let by_prefecture = Grouping::as_present(vec![0], vec![vec![Some(0), Some(1), Some(2)]]);
    let a_with_c = Grouping::as_present(vec![0], vec![vec![Some(0), Some(1), Some(0)]]);
    let (first, protected) = by_prefecture.linked(&pop, 10).expect("first");
    assert!(crate::small_cell::recoverable(&protected).is_empty());
    assert_eq!(first.entries.iter().filter(|e| e.count.is_none()).count(), 2);
    let (second, _) = a_with_c.linked(&pop, 10).expect("second");
    assert!(
        second.entries.iter().all(|e| e.count.is_some()),
        "alone it suppresses nothing"
    );

    let alone = recoverable(std::slice::from_ref(&first), &AuditLimits::default()).expect("audit");
    assert!(alone.recovered.is_empty());
    let both = recoverable(&[first.clone(), second.clone()], &AuditLimits::default()).expect("audit");
    assert_eq!(
        both.recovered,
        vec![Recovered { table: 0, entry: 0 }, Recovered { table: 0, entry: 1 }],
        "A and B of the first table"
    );
    assert_eq!(
        oracle(&pop, &[by_prefecture.clone(), a_with_c], &[first.clone(), second]).len(),
        2
    );

    // Grouping A with B instead publishes only their sum: nothing is given back.
    let a_with_b = Grouping::as_present(vec![0], vec![vec![Some(0), Some(0), Some(1)]]);
    let (third, _) = a_with_b.linked(&pop, 10).expect("third");
    let safe = recoverable(&[first, third], &AuditLimits::default()).expect("audit");
    assert!(safe.recovered.is_empty());
}

/// Three two-way tables over three columns are not totally unimodular: the check must still be exact
/// (here against the oracle on a fixed population where the relaxation alone would not decide).
#[test]
fn three_two_way_tables_agree_with_the_oracle() {
    let pop = Population {
        domains: vec![2, 2, 2],
        counts: vec![1, 0, 0, 1, 0, 1, 1, 2],
    };
    let identity = vec![Some(0), Some(1)];
    let groupings: Vec<Grouping> = [(0, 1), (0, 2), (1, 2)]
        .into_iter()
        .map(|(a, b)| Grouping::as_present(vec![a, b], vec![identity.clone(), identity.clone()]))
        .collect();
    let tables: Vec<LinkedTable> = groupings.iter().map(|g| g.linked(&pop, 2).expect("table").0).collect();
    let expected = oracle(&pop, &groupings, &tables);
    let audit = recoverable(&tables, &AuditLimits::default()).expect("audit");
    assert_eq!(audit.recovered.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn too_many_combinations_is_an_error_not_a_pass() {
    let dim = |c: &str, n: usize| Dimension {
        column: c.into(),
        labels: (0..n).map(|v| ValueLabel::Shown(format!("{v}"))).collect(),
    };
    let table = LinkedTable {
        dimensions: vec![dim("a", 50), dim("b", 50)],
        cells: vec![vec!["0".into(), "0".into()]],
        entries: vec![LinkedEntry {
            cells: vec![0],
            count: None,
            at_least_one: false,
        }],
        keys_declared: true,
        threshold: 10,
    };
    let limits = AuditLimits {
        max_atoms: 100,
        ..AuditLimits::default()
    };
    assert!(matches!(recoverable(&[table], &limits), Err(Error::Config(_))));
}

#[test]
fn contradicting_tables_are_an_error() {
    let dim = Dimension {
        column: "a".into(),
        labels: vec![ValueLabel::Shown("x".into())],
    };
    let table = |n| LinkedTable {
        dimensions: vec![dim.clone()],
        cells: vec![vec!["x".into()]],
        entries: vec![
            LinkedEntry {
                cells: vec![0],
                count: None,
                at_least_one: false,
            },
            LinkedEntry {
                cells: vec![0],
                count: Some(n),
                at_least_one: false,
            },
        ],
        keys_declared: true,
        threshold: 10,
    };
    assert!(matches!(
        recoverable(&[table(12), table(13)], &AuditLimits::default()),
        Err(Error::Input(_))
    ));
}

/// What an as-present table does not show is information too (found in review): T2 (sex × a diagnosis
/// hierarchy covering d1 and d3) shows no row F, so F has no d1 or d3; with T3 by diagnosis that gives
/// d1 = 10 and then d2 = 3, suppressed in T3 and in T1.
#[test]
fn a_row_an_as_present_table_does_not_show_is_zero() {
    let pop = Population {
        domains: vec![2, 3],
        counts: vec![10, 0, 10, 0, 3, 0],
    };
    let groupings = vec![
        Grouping::as_present(vec![0], vec![vec![Some(0), Some(1)]]),
        Grouping::as_present(vec![0, 1], vec![vec![Some(0), Some(1)], vec![Some(0), None, Some(2)]]),
        Grouping::as_present(vec![1], vec![vec![Some(0), Some(1), Some(2)]]),
    ];
    let tables: Vec<LinkedTable> = groupings.iter().map(|g| g.linked(&pop, 10).expect("table").0).collect();
    let expected = oracle(&pop, &groupings, &tables);
    assert!(!expected.is_empty(), "the oracle recovers d2");
    let audit = recoverable(&tables, &AuditLimits::default()).expect("audit");
    assert_eq!(audit.recovered.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// The stored definition holds what the researcher received and ranks, never a value the table does not
/// show: a present value outside the declared keys keeps no label.
#[test]
fn a_definition_names_no_value_the_table_does_not_show() {
    let table = CountTable::from_cells(&[(vec!["shown".into()], 12)], 1).expect("table");
    let protected = protect(&table, &SmallCellRule::default()).expect("protect");
    let dimension = Dimension {
        column: "prefecture".into(),
        labels: vec![
            ValueLabel::Shown("hidden-marker".into()),
            ValueLabel::Shown("shown".into()),
        ],
    };
    let linked =
        LinkedTable::from_protected(&protected, vec![dimension], true, |_, _| vec!["shown".into()]).expect("linked");
    assert_eq!(
        linked.dimensions[0].labels,
        [ValueLabel::Unshown, ValueLabel::Shown("shown".to_owned())]
    );
    assert!(!serde_json::to_string(&linked).expect("json").contains("hidden-marker"));
}

#[test]
fn tables_listing_different_values_are_not_one_population() {
    let table = |n: usize| LinkedTable {
        dimensions: vec![Dimension {
            column: "a".into(),
            labels: (0..n).map(|v| ValueLabel::Shown(format!("{v}"))).collect(),
        }],
        cells: vec![vec!["0".into()]],
        entries: vec![LinkedEntry {
            cells: vec![0],
            count: Some(12),
            at_least_one: false,
        }],
        keys_declared: true,
        threshold: 10,
    };
    assert!(matches!(
        recoverable(&[table(2), table(3)], &AuditLimits::default()),
        Err(Error::Input(_))
    ));
}
