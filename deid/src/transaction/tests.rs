//! Properties of the transactional engine on random small records: every output passes the independent
//! verifier, and the search finds exactly the exhaustive optimum.

use proptest::prelude::*;

use super::data::{Component, Event, ItemKind, MAX_FIELDS, RtData};
use super::evaluate::{Evaluation, KmParams, evaluate};
use super::exhaustive;
use super::loss::ItemNode;
use super::search::{SearchConfig, Strategy as Found, search};
use crate::hierarchy::Hierarchy;
use crate::verify_km::{WrittenRecords, verify_km};

/// A hierarchy over `n` leaves `v0..`: leaf → pair → quad → `*`, cut to `height` levels (the last is `*`).
fn hierarchy(n: usize, height: usize) -> Hierarchy {
    let rows = (0..n)
        .map(|i| {
            let mut cells = vec![format!("v{i}")];
            for l in 1..height - 1 {
                cells.push(format!("g{l}-{}", i >> l));
            }
            cells.push("*".into());
            (i + 1, cells)
        })
        .collect();
    Hierarchy::from_rows("test", rows).unwrap()
}

/// What the release would write: demographic class as the patient row, each kept event as its labels.
fn written(data: &RtData, class_of: &[u32], events: &[Event], e: &Evaluation) -> WrittenRecords {
    let detail = e.detail.as_ref().unwrap();
    let mut items = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let Some(item) = detail.item_of_event[i] else { continue };
        let kind = &data.kinds()[ev.kind as usize];
        // Labels re-derived from the hierarchies and the node, not from the engine's item table.
        let mut text = kind.name.clone();
        let mut f = 0;
        for (c, comp) in kind.components.iter().enumerate() {
            let level = e.node.levels[ev.kind as usize][c] as usize;
            for _ in 0..comp.fields {
                let code = comp.hierarchy.level(level).of_leaf()[ev.leaves[f] as usize];
                text.push_str(&format!("|{}", comp.hierarchy.label(level, code)));
                f += 1;
            }
        }
        assert_eq!(detail.items[item as usize].0, ev.kind);
        items.push((format!("p{}", ev.patient), text));
    }
    WrittenRecords {
        demographics: Some(
            class_of
                .iter()
                .enumerate()
                .map(|(p, c)| (format!("p{p}"), vec![format!("class {c}")]))
                .collect(),
        ),
        items,
    }
}

/// A generated component: (leaves, hierarchy height, fields).
type Component3 = (usize, usize, usize);

#[derive(Debug, Clone)]
struct Case {
    /// Per kind, its components as (leaves, hierarchy height, fields).
    kinds: Vec<Vec<Component3>>,
    class_sizes: Vec<usize>,
    events: Vec<(usize, usize, [usize; MAX_FIELDS])>,
    k: u32,
    m: usize,
    share: f64,
}

fn case() -> impl Strategy<Value = Case> {
    let kinds = prop::collection::vec(prop::collection::vec((2usize..6, 2usize..4, 1usize..3), 1..3), 1..3)
        .prop_filter("at most MAX_FIELDS fields", |ks| {
            ks.iter().all(|cs| cs.iter().map(|c| c.2).sum::<usize>() <= MAX_FIELDS)
        });
    (
        kinds,
        2u32..4,
        1usize..3,
        prop::sample::select(vec![0.0, 0.1, 0.25, 1.0]),
    )
        .prop_flat_map(|(kinds, k, m, share)| {
            let sizes = prop::collection::vec((k as usize)..(k as usize + 3), 1..3);
            let nk = kinds.len();
            (Just(kinds), sizes, Just(k), Just(m), Just(share), Just(nk))
        })
        .prop_flat_map(|(kinds, sizes, k, m, share, nk)| {
            let patients: usize = sizes.iter().sum();
            let events = prop::collection::vec(
                (0..patients, 0..nk, prop::array::uniform8(0usize..6)),
                0..(patients * 3),
            );
            (Just(kinds), Just(sizes), events, Just(k), Just(m), Just(share))
        })
        .prop_map(|(kinds, class_sizes, events, k, m, share)| Case {
            kinds,
            class_sizes,
            events,
            k,
            m,
            share,
        })
}

fn build(c: &Case) -> (RtData, Vec<u32>, Vec<Event>) {
    let kinds: Vec<ItemKind> = c
        .kinds
        .iter()
        .enumerate()
        .map(|(i, comps)| ItemKind {
            name: format!("t{i}"),
            components: comps
                .iter()
                .enumerate()
                .map(|(j, &(leaves, height, fields))| Component {
                    name: format!("c{j}"),
                    hierarchy: hierarchy(leaves, height),
                    fields,
                })
                .collect(),
        })
        .collect();
    let class_of: Vec<u32> = c
        .class_sizes
        .iter()
        .enumerate()
        .flat_map(|(class, &n)| std::iter::repeat_n(class as u32, n))
        .collect();
    let events: Vec<Event> = c
        .events
        .iter()
        .map(|&(patient, kind, raw)| {
            let kd = &kinds[kind];
            let comps = kd.field_components();
            let mut leaves = [0u32; MAX_FIELDS];
            for (f, &comp) in comps.iter().enumerate() {
                leaves[f] = (raw[f] % kd.components[comp].hierarchy.domain_size()) as u32;
            }
            Event {
                patient: patient as u32,
                kind: kind as u16,
                leaves,
            }
        })
        .collect();
    (
        RtData::new(kinds, class_of.clone(), events.clone()).unwrap(),
        class_of,
        events,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn search_equals_exhaustive_and_every_output_verifies(c in case()) {
        let (data, class_of, events) = build(&c);
        let params = KmParams { k: c.k, m: c.m };
        let cfg = SearchConfig::new(params, c.share);
        let reference = exhaustive::optimum(&data, &cfg).unwrap();
        match (search(&data, &cfg), reference) {
            (Ok(found), Some(best)) => {
                prop_assert_eq!(found.strategy, Found::Exact);
                prop_assert_eq!(&found.evaluation.node, &best.node);
                prop_assert_eq!(found.evaluation.loss, best.loss);
                prop_assert!(found.evaluation.within(&data, c.share));
                let report = verify_km(&written(&data, &class_of, &events, &found.evaluation), c.k, c.m).unwrap();
                prop_assert!(report.ok, "{:?}", report);
            }
            (Err(crate::Error::Infeasible(_)), None) => {}
            (found, best) => prop_assert!(false, "search {:?} vs exhaustive {:?}", found.map(|f| f.evaluation.node), best.map(|b| b.node)),
        }
    }

    #[test]
    fn greedy_outputs_verify_too(c in case()) {
        let (data, class_of, events) = build(&c);
        let params = KmParams { k: c.k, m: c.m };
        let cfg = SearchConfig { max_lattice: 1, ..SearchConfig::new(params, c.share) };
        if let Ok(found) = search(&data, &cfg) {
            prop_assert_eq!(found.strategy, Found::Greedy);
            prop_assert!(found.evaluation.within(&data, c.share));
            let report = verify_km(&written(&data, &class_of, &events, &found.evaluation), c.k, c.m).unwrap();
            prop_assert!(report.ok, "{:?}", report);
        }
    }

    #[test]
    fn every_recoding_repairs_to_a_verified_release(c in case()) {
        // Whatever the levels, the per-class repair alone must leave no exposed patient.
        let (data, class_of, events) = build(&c);
        let params = KmParams { k: c.k, m: c.m };
        for node in ItemNode::all(data.kinds(), 10_000).unwrap() {
            let e = evaluate(&data, &node, &params, true).unwrap();
            let report = verify_km(&written(&data, &class_of, &events, &e), c.k, c.m).unwrap();
            prop_assert!(report.ok, "{:?} at {:?}", report, node);
        }
    }
}

#[test]
fn raw_items_are_exposed_and_the_release_is_not() {
    // Ten patients in one class; each has a distinct diagnosis under a shared chapter.
    let kinds = vec![ItemKind {
        name: "conditions".into(),
        components: vec![Component {
            name: "code".into(),
            hierarchy: hierarchy(16, 3),
            fields: 1,
        }],
    }];
    let class_of = vec![0; 10];
    let events: Vec<Event> = (0..10)
        .map(|p| Event {
            patient: p,
            kind: 0,
            leaves: [p, 0, 0, 0, 0, 0, 0, 0],
        })
        .collect();
    let data = RtData::new(kinds, class_of.clone(), events.clone()).unwrap();
    let params = KmParams { k: 2, m: 1 };
    let raw = evaluate(&data, &ItemNode::bottom(data.kinds()), &params, false).unwrap();
    assert_eq!(
        raw.suppressed, 10,
        "at the leaves every diagnosis is unique and must go"
    );
    let found = search(&data, &SearchConfig::new(params, 0.0)).unwrap();
    assert_eq!(
        found.evaluation.node.levels,
        vec![vec![1]],
        "pairs of codes are shared by two patients"
    );
    assert_eq!(found.evaluation.suppressed, 0);
    let report = verify_km(&written(&data, &class_of, &events, &found.evaluation), 2, 1).unwrap();
    assert!(report.ok);
}
