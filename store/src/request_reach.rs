//! Whom a patient's opt-out or erasure reaches: the one decision of which keys a request stops.
//!
//! - An insured key is a strong identity: it reaches its person platform-wide.
//! - A local patient id (hospital pseudonym) names a patient the requesting hospital sent: it reaches the
//!   person behind that hospital's rows.
//! - An ID4 key (kana name + birth date + sex) is guessable, so it is scoped: it reaches a person only through
//!   a row the requesting hospital itself sent under that key. An ID4 key that reaches none stops that
//!   hospital's future records only (scope `HOSPITAL`).
//! - Whatever is reached is widened to the whole person ([`crate::persons`]): every key of the component is
//!   registered platform-wide, so the person's rows under any insurance leave every research view and no later
//!   record under any of those keys is stored.
//! - An erasure destroys less than it excludes when it came by a weak identity: the rows of the keys the
//!   requesting hospital's own rows link (see [`Reach::erase_keys`]); an insured identity erases the person.

use crate::error::StoreError;
use crate::persons::Persons;
use crate::schema::Table;
use crate::store::Store;
use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::{Expr, col, lit};
use std::collections::BTreeSet;
use tokumei_proto::spool::v1::PatientRequestEntry;

/// The keys a request stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Every key of every person reached (hex): stopped everywhere and out of every research read.
    pub platform_keys: BTreeSet<String>,
    /// For an erasure, the keys whose rows are destroyed (a subset of `platform_keys`): the whole person for an
    /// insured identity; for an ID4 key or a local id only what the requesting hospital's own rows link.
    /// Destruction cannot be undone, and a guessable name — or a record a hospital made up under someone's
    /// name — must not destroy another hospital's data; the rest of the person is excluded, not destroyed.
    pub erase_keys: BTreeSet<String>,
    /// ID4 keys (hex) that reached none of the requesting hospital's patients: they stop that hospital's
    /// records only.
    pub hospital_keys: BTreeSet<String>,
    /// The hospital pseudonym (hex) the request named, if any.
    pub hospital_pseudonym: Option<String>,
}

/// Works out the reach of `request` on the store as it is now (call after every earlier record is written).
pub async fn reach(store: &Store, request: &PatientRequestEntry) -> Result<Reach, StoreError> {
    // Strong seeds name the person themselves; weak ones only through the requesting hospital's rows.
    let strong: BTreeSet<String> = request.linkage_keys.iter().map(hex::encode).collect();
    let mut seeds = BTreeSet::new();
    let pseudonym = (!request.hospital_pseudonym.is_empty()).then(|| hex::encode(&request.hospital_pseudonym));
    if let Some(p) = &pseudonym {
        seeds.extend(linkage_keys_where(store, col("hospital_pseudonym").eq(lit(p.clone()))).await?);
    }
    let mut hospital_keys = BTreeSet::new();
    for id4 in request.id4_keys.iter().map(hex::encode) {
        let sent_here = col("source_hospital").eq(lit(request.hospital_code.clone())).and(
            col("linkage_key")
                .eq(lit(id4.clone()))
                .or(col("id4_key").eq(lit(id4.clone()))),
        );
        let found = linkage_keys_where(store, sent_here).await?;
        if found.is_empty() {
            hospital_keys.insert(id4);
        } else {
            seeds.insert(id4);
            seeds.extend(found);
        }
    }
    let everyone = if seeds.is_empty() && strong.is_empty() {
        Persons::default()
    } else {
        Persons::load(store).await?
    };
    let own = if seeds.is_empty() {
        Persons::default()
    } else {
        Persons::load_sent_by(store, Some(&request.hospital_code)).await?
    };
    let mut erase_keys = everyone.reach(strong.iter().map(String::as_str));
    erase_keys.extend(own.reach(seeds.iter().map(String::as_str)));
    Ok(Reach {
        platform_keys: everyone.reach(strong.iter().chain(&seeds).map(String::as_str)),
        erase_keys,
        hospital_keys,
        hospital_pseudonym: pseudonym,
    })
}

/// Distinct linkage keys of the raw `patients` rows matching `filter`.
async fn linkage_keys_where(store: &Store, filter: Expr) -> Result<Vec<String>, StoreError> {
    let ctx = store.bare_session()?;
    let patients = store.table(Table::Patients).await?;
    let batches = ctx
        .read_table(patients.table_provider().await?)?
        .filter(filter)?
        .select(vec![col("linkage_key")])?
        .distinct()?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let c = cast(b.column(0), &DataType::Utf8)?;
        if let Some(a) = c.as_any().downcast_ref::<StringArray>() {
            out.extend((0..a.len()).filter(|i| a.is_valid(*i)).map(|i| a.value(i).to_string()));
        }
    }
    Ok(out)
}
