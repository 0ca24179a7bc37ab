//! Identified data as a type: a patient record with its direct identifiers exists in the gateway only as an
//! [`Identified`] (or inside an [`IdentifiedBatch`]), and dropping one overwrites every string it holds.
//!
//! Before this type the gateway wiped records by hand on each path that ended a batch early — an invalid id, a
//! replay, a conflict, a rate limit, a rejected record, an opted-out patient, a key service failure — nine calls,
//! and a new early return would have had to remember a tenth. Now wiping is what dropping does, on every path
//! (an error, a `?`, a panic unwinding), and pseudonymising consumes the record: [`Identified::into_clinical`]
//! moves the clinical content out and the identifiers are wiped as the rest is dropped. Neither type is `Clone`,
//! and their `Debug` shows nothing.

use tokumei_proto::ingest::v1::{PatientRecord, RecordBatch};
use zeroize::Zeroize;

use crate::record_fields::zeroize_record;

/// One patient record as a hospital sent it.
pub struct Identified(PatientRecord);

impl Identified {
    /// Takes ownership of a received record.
    pub fn new(record: PatientRecord) -> Identified {
        Identified(record)
    }

    /// The record, to validate it or derive its identities.
    pub fn record(&self) -> &PatientRecord {
        &self.0
    }

    /// The record, for a guard that overwrites what it finds (the My Number guard).
    pub(crate) fn record_mut(&mut self) -> &mut PatientRecord {
        &mut self.0
    }

    /// Moves the clinical content out with `take` (which receives the record and must leave the direct
    /// identifiers in it); whatever remains is wiped when `self` is dropped here.
    pub fn into_clinical<T>(mut self, take: impl FnOnce(&mut PatientRecord) -> T) -> T {
        take(&mut self.0)
    }
}

impl Drop for Identified {
    fn drop(&mut self) {
        zeroize_record(&mut self.0);
    }
}

impl std::fmt::Debug for Identified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identified(<redacted>)")
    }
}

/// A batch as received: its records identified until [`IdentifiedBatch::take_records`] hands them out one by one.
pub struct IdentifiedBatch(RecordBatch);

impl IdentifiedBatch {
    /// Takes ownership of a received batch.
    pub fn new(batch: RecordBatch) -> IdentifiedBatch {
        IdentifiedBatch(batch)
    }

    /// The batch's identifier, as sent.
    pub fn batch_id(&self) -> &str {
        &self.0.batch_id
    }

    /// Records in the batch (not yet taken).
    pub fn len(&self) -> usize {
        self.0.records.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.0.records.is_empty()
    }

    /// The batch's encoding, as sent (for its content digest; the caller wipes it).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&self.0)
    }

    /// Overwrites the batch's identifier (one that held a My Number).
    pub fn wipe_batch_id(&mut self) {
        self.0.batch_id.zeroize();
    }

    /// The records, each identified.
    pub fn take_records(&mut self) -> Vec<Identified> {
        std::mem::take(&mut self.0.records)
            .into_iter()
            .map(Identified::new)
            .collect()
    }
}

impl Drop for IdentifiedBatch {
    fn drop(&mut self) {
        self.0.records.iter_mut().for_each(zeroize_record);
    }
}

impl std::fmt::Debug for IdentifiedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifiedBatch")
            .field("records", &self.0.records.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokumei_proto::ingest::v1::Insurance;

    fn record() -> PatientRecord {
        PatientRecord {
            local_patient_id: "L-000123".into(),
            kana_name: "ヤマダ タロウ".into(),
            birth_date: "1960-04-01".into(),
            postal_code: "1000001".into(),
            insurance: Some(Insurance {
                insurer_number: "06130001".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn taking_the_clinical_part_leaves_no_identifier_and_nothing_shows_in_debug() {
        let identified = Identified::new(record());
        assert_eq!(format!("{identified:?}"), "Identified(<redacted>)");
        // What `into_clinical` gives back is only what `take` moved out; the record it saw is wiped afterwards,
        // which `take` can observe through a copy of a field it leaves in place.
        let birth_date = identified.into_clinical(|r| std::mem::take(&mut r.birth_date));
        assert_eq!(birth_date, "1960-04-01");
        let mut batch = IdentifiedBatch::new(RecordBatch {
            batch_id: "b1".into(),
            records: vec![record(), record()],
        });
        assert_eq!(batch.len(), 2);
        assert!(format!("{batch:?}").contains("records: 2"));
        assert!(!format!("{batch:?}").contains("ヤマダ"));
        let taken = batch.take_records();
        assert_eq!((taken.len(), batch.len()), (2, 0));
        assert!(!format!("{taken:?}").contains("ヤマダ"));
    }

    #[test]
    fn the_wipe_overwrites_every_string_of_the_record() {
        // The drop runs `zeroize_record`, the walk over every string field: checked on a record it is applied to.
        let mut r = record();
        zeroize_record(&mut r);
        let mut strings = Vec::new();
        crate::record_fields::for_each_string_mut(&mut r, |_, s| strings.push(s.clone()));
        assert!(strings.iter().all(String::is_empty), "{strings:?}");
    }
}
