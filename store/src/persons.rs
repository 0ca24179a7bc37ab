//! One person under several keys.
//!
//! A patient sent with insurance and kana name + birth date + sex carries two keys: the insured linkage key and
//! the ID4 key (`patients.id4_key`). The same person sent again under another insurance (a job change), or
//! without insurance (ID4 only), shares the ID4 key. The keys of one person are the connected component of the
//! graph whose edges are the (linkage_key, id4_key) pairs of the `patients` table. Opt-out and erasure reach
//! the whole component; research views show every row under one key per component (the smallest), so that
//! k-anonymity counts and DP contribution caps see one person.
//!
//! ID4 keys are guessable and can collide for namesakes born the same day; a collision merges two people into
//! one. That errs on the safe side for every guarantee here (more rows excluded, fewer distinct people counted
//! for k, a tighter cap on contributions) at a cost in utility.

use crate::error::StoreError;
use crate::schema::Table;
use crate::store::Store;
use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::JoinType;
use deltalake::datafusion::functions::expr_fn::coalesce;
use deltalake::datafusion::prelude::{SessionContext, col, lit};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The components of the key graph.
#[derive(Debug, Default)]
pub struct Persons {
    index: HashMap<String, usize>,
    keys: Vec<String>,
    parent: Vec<usize>,
    /// Component size at each root (union by size keeps every tree O(log n) deep).
    size: Vec<usize>,
}

impl Persons {
    /// From (linkage key, ID4 key) pairs.
    pub fn from_links<'a>(links: impl IntoIterator<Item = (&'a str, &'a str)>) -> Persons {
        let mut p = Persons::default();
        for (a, b) in links {
            let (a, b) = (p.node(a), p.node(b));
            p.union(a, b);
        }
        p
    }

    /// Reads every link from the raw `patients` table (opted-out rows included: a link is a fact about keys).
    pub async fn load(store: &Store) -> Result<Persons, StoreError> {
        Self::load_sent_by(store, None).await
    }

    /// As [`Persons::load`], from the rows one hospital sent only (`None`: every hospital's): what that
    /// hospital's own records say about who is who.
    pub async fn load_sent_by(store: &Store, hospital: Option<&str>) -> Result<Persons, StoreError> {
        let ctx = store.bare_session()?;
        let patients = store.table(Table::Patients).await?;
        let mut links = ctx
            .read_table(patients.table_provider().await?)?
            .filter(col("id4_key").is_not_null())?;
        if let Some(h) = hospital {
            links = links.filter(col("source_hospital").eq(lit(h.to_string())))?;
        }
        let batches = links
            .select(vec![col("linkage_key"), col("id4_key")])?
            .distinct()?
            .collect()
            .await?;
        let mut pairs = Vec::new();
        for b in &batches {
            let (a, c) = (utf8(b.column(0))?, utf8(b.column(1))?);
            for i in 0..a.len() {
                if a.is_valid(i) && c.is_valid(i) {
                    pairs.push((a.value(i).to_string(), c.value(i).to_string()));
                }
            }
        }
        Ok(Persons::from_links(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str()))))
    }

    fn node(&mut self, key: &str) -> usize {
        if let Some(i) = self.index.get(key) {
            return *i;
        }
        let i = self.keys.len();
        self.index.insert(key.to_string(), i);
        self.keys.push(key.to_string());
        self.parent.push(i);
        self.size.push(1);
        i
    }

    fn find(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (root, child) = if self.size[ra] >= self.size[rb] {
                (ra, rb)
            } else {
                (rb, ra)
            };
            self.parent[child] = root;
            self.size[root] += self.size[child];
        }
    }

    fn components(&self) -> BTreeMap<usize, BTreeSet<&str>> {
        let mut out: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            out.entry(self.find(i)).or_default().insert(k.as_str());
        }
        out
    }

    /// Every key of the persons that hold any of `keys` (a key seen in no link stands for itself).
    pub fn reach<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut roots: BTreeSet<usize> = BTreeSet::new();
        for k in keys {
            match self.index.get(k) {
                Some(i) => {
                    roots.insert(self.find(*i));
                }
                None => {
                    out.insert(k.to_string());
                }
            }
        }
        for (i, k) in self.keys.iter().enumerate() {
            if roots.contains(&self.find(i)) {
                out.insert(k.clone());
            }
        }
        out
    }

    /// Persons known under more than one key.
    pub fn merged(&self) -> usize {
        self.components().values().filter(|c| c.len() > 1).count()
    }

    /// (key, the person's key) for every key of a person known under several keys; the person's key is the
    /// smallest of them, so it does not depend on the order records arrived in.
    pub fn person_keys(&self) -> Result<RecordBatch, StoreError> {
        let mut keys = Vec::new();
        let mut persons = Vec::new();
        for members in self.components().values().filter(|c| c.len() > 1) {
            let Some(first) = members.first() else { continue };
            for k in members {
                keys.push(*k);
                persons.push(*first);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new(PERSON_LINKAGE_KEY, DataType::Utf8, false),
            Field::new(PERSON_KEY, DataType::Utf8, false),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(keys)), Arc::new(StringArray::from(persons))],
        )?)
    }
}

/// `view` with `linkage_key` replaced by the person's key, and without `id4_key`: what research reads.
pub fn keyed_by_person(
    ctx: &SessionContext,
    view: Arc<dyn TableProvider>,
    person_keys: Option<Arc<dyn TableProvider>>,
) -> Result<Arc<dyn TableProvider>, StoreError> {
    let mut df = ctx.read_table(view)?;
    let has_id4 = df.schema().fields().iter().any(|f| f.name() == "id4_key");
    if let Some(persons) = person_keys {
        df = df
            .join(
                ctx.read_table(persons)?,
                JoinType::Left,
                &["linkage_key"],
                &[PERSON_LINKAGE_KEY],
                None,
            )?
            .with_column("linkage_key", coalesce(vec![col(PERSON_KEY), col("linkage_key")]))?
            .drop_columns(&[PERSON_LINKAGE_KEY, PERSON_KEY])?;
    }
    if has_id4 {
        df = df.drop_columns(&["id4_key"])?;
    }
    Ok(df.into_view())
}

/// Column of [`Persons::person_keys`] joined with a table's `linkage_key`.
pub const PERSON_LINKAGE_KEY: &str = "person_linkage_key";
/// Column of [`Persons::person_keys`] that replaces `linkage_key` in research views.
pub const PERSON_KEY: &str = "person_key";

fn utf8(a: &Arc<dyn Array>) -> Result<StringArray, StoreError> {
    // Delta may hand back Utf8View; a cast to Utf8 covers both.
    let c = cast(a, &DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| StoreError::Invalid("a key column is not text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insurance_change_is_one_person() {
        // Insured A with ID4 X, later insured B with the same ID4: one person {A, B, X}; C alone.
        let p = Persons::from_links([("a", "x"), ("b", "x"), ("c", "y")]);
        assert_eq!(p.reach(["a"]), BTreeSet::from(["a".into(), "b".into(), "x".into()]));
        assert_eq!(p.reach(["x"]), p.reach(["b"]));
        assert_eq!(p.reach(["z"]), BTreeSet::from(["z".into()]));
        assert_eq!(p.merged(), 2);
        let t = p.person_keys().unwrap();
        assert_eq!(t.num_rows(), 5);
    }

    #[test]
    fn components_match_a_brute_force_closure() {
        // Every graph on 5 keys with up to 4 edges drawn from a fixed list: union-find against repeated
        // relaxation.
        let all: Vec<(usize, usize)> = (0..5).flat_map(|a| (a + 1..5).map(move |b| (a, b))).collect();
        let names = ["k0", "k1", "k2", "k3", "k4"];
        for mask in 0u32..(1 << all.len()) {
            if mask.count_ones() > 4 {
                continue;
            }
            let edges: Vec<(usize, usize)> = (0..all.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i])
                .collect();
            let p = Persons::from_links(edges.iter().map(|(a, b)| (names[*a], names[*b])));
            let mut label: Vec<usize> = (0..5).collect();
            loop {
                let mut changed = false;
                for (a, b) in &edges {
                    let m = label[*a].min(label[*b]);
                    for x in [*a, *b] {
                        if label[x] != m {
                            label[x] = m;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
            for s in 0..5 {
                let linked = edges.iter().any(|(a, b)| *a == s || *b == s);
                let expected: BTreeSet<String> = if linked {
                    (0..5)
                        .filter(|x| label[*x] == label[s])
                        .map(|x| names[x].to_string())
                        .collect()
                } else {
                    BTreeSet::from([names[s].to_string()])
                };
                assert_eq!(p.reach([names[s]]), expected, "edges {edges:?} from {s}");
            }
        }
    }
}
