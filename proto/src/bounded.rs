//! Decoding with a bound on memory, for the hospital-facing `IngestService`.
//!
//! Protobuf lets a few bytes on the wire become a large struct: an empty `PatientRecord` is 2 bytes on the wire
//! and several hundred in memory, so 8 MB of empty records once took the gateway to 2.9 GiB. gRPC's message
//! size limit bounds the wire bytes only. Here the wire bytes of a request are walked once, without allocating,
//! adding up what the decoded message would occupy (each nested struct, each repeated element with `Vec`
//! growth, each string's heap bytes); a message over the budget is refused before prost allocates anything.
//! The budget is set by the gateway from its configured message limit ([`set_decoded_budget`]).
//!
//! Errors carry `google.rpc.ErrorInfo` (domain [`INGEST_ERROR_DOMAIN`]) for unary and streaming calls alike:
//! `INVALID_ARGUMENT` / `MALFORMED_MESSAGE` for bytes that are not the request type, `RESOURCE_EXHAUSTED` /
//! `MESSAGE_TOO_LARGE` for a message over the budget. Neither quotes the message.

use crate::ingest::v1::{
    Allergy, Condition, Encounter, Insurance, Medication, Observation, PatientRecord, PatientRequest, PushReceipt,
    RecordBatch, RequestReceipt,
};
use prost::Message;
use prost::bytes::Buf;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo` domain of every ingest error.
pub const INGEST_ERROR_DOMAIN: &str = "ingest.tokumei.jp";

/// Default decoded-memory budget per message: three times the default 16 MiB message limit.
pub const DEFAULT_DECODED_BUDGET: usize = 48 * 1024 * 1024;

static DECODED_BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_DECODED_BUDGET);

/// Sets how many bytes one decoded request may occupy (process-wide: one gateway per process).
pub fn set_decoded_budget(bytes: usize) {
    DECODED_BUDGET.store(bytes.max(1024), Ordering::Relaxed);
}

/// The budget in force.
pub fn decoded_budget() -> usize {
    DECODED_BUDGET.load(Ordering::Relaxed)
}

/// How a message type's fields cost memory once decoded.
#[derive(Debug)]
pub struct Shape {
    /// `size_of` the generated struct.
    pub size: usize,
    /// Fields that are messages: (field number, their shape, repeated).
    pub nested: &'static [(u32, &'static Shape, bool)],
}

const fn leaf(size: usize) -> Shape {
    Shape { size, nested: &[] }
}

static INSURANCE: Shape = leaf(size_of::<Insurance>());
static ENCOUNTER: Shape = leaf(size_of::<Encounter>());
static CONDITION: Shape = leaf(size_of::<Condition>());
static MEDICATION: Shape = leaf(size_of::<Medication>());
static OBSERVATION: Shape = leaf(size_of::<Observation>());
static ALLERGY: Shape = leaf(size_of::<Allergy>());
static PATIENT_RECORD: Shape = Shape {
    size: size_of::<PatientRecord>(),
    nested: &[
        (2, &INSURANCE, false),
        (10, &ENCOUNTER, true),
        (11, &CONDITION, true),
        (12, &MEDICATION, true),
        (13, &OBSERVATION, true),
        (14, &ALLERGY, true),
    ],
};
static RECORD_BATCH: Shape = Shape {
    size: size_of::<RecordBatch>(),
    nested: &[(2, &PATIENT_RECORD, true)],
};
static PATIENT_REQUEST: Shape = Shape {
    size: size_of::<PatientRequest>(),
    nested: &[(2, &INSURANCE, false)],
};

/// A request type whose decoded size is checked before decoding (`None`: decoded as is, e.g. receipts a
/// client reads from its own gateway).
pub trait Bounded {
    /// The type's shape.
    fn shape() -> Option<&'static Shape>;
}

impl Bounded for RecordBatch {
    fn shape() -> Option<&'static Shape> {
        Some(&RECORD_BATCH)
    }
}

impl Bounded for PatientRequest {
    fn shape() -> Option<&'static Shape> {
        Some(&PATIENT_REQUEST)
    }
}

impl Bounded for PushReceipt {
    fn shape() -> Option<&'static Shape> {
        None
    }
}

impl Bounded for RequestReceipt {
    fn shape() -> Option<&'static Shape> {
        None
    }
}

/// Why a walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The bytes are not a valid encoding.
    Malformed,
    /// The decoded message would exceed the budget.
    OverBudget,
}

/// Heap bytes of a string or bytes field of `len` bytes (allocators round small blocks up).
fn heap(len: usize) -> usize {
    if len == 0 { 0 } else { len.max(16) }
}

fn varint(buf: &mut &[u8]) -> Result<u64, Refused> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(Refused::Malformed)?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Refused::Malformed)
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], Refused> {
    let n = usize::try_from(n).map_err(|_| Refused::Malformed)?;
    if n > buf.len() {
        return Err(Refused::Malformed);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Same limit as prost's decoder.
const MAX_DEPTH: u32 = 100;

/// What a message of `shape` encoded as `wire` occupies once decoded, excluding its own struct (counted by
/// whoever holds it); stops as soon as `budget` is exceeded.
pub fn decoded_cost(wire: &[u8], shape: &Shape, budget: usize) -> Result<usize, Refused> {
    let mut total = 0usize;
    walk(wire, shape, &mut total, budget, 0)?;
    Ok(total)
}

fn walk(mut buf: &[u8], shape: &Shape, total: &mut usize, budget: usize, depth: u32) -> Result<(), Refused> {
    if depth > MAX_DEPTH {
        return Err(Refused::Malformed);
    }
    // Repeated fields already started in this message (bit = index in `shape.nested`).
    let mut started = 0u64;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = u32::try_from(key >> 3).map_err(|_| Refused::Malformed)?;
        if field == 0 {
            return Err(Refused::Malformed);
        }
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            1 => {
                take(&mut buf, 8)?;
            }
            5 => {
                take(&mut buf, 4)?;
            }
            2 => {
                let len = varint(&mut buf)?;
                let body = take(&mut buf, len)?;
                match shape.nested.iter().enumerate().find(|(_, (f, _, _))| *f == field) {
                    Some((i, (_, child, repeated))) => {
                        // A Vec's capacity is at least 4 elements once one is pushed, and at most twice its
                        // length after that: 2 per element plus 2 for the first covers both.
                        if *repeated {
                            let first = started & (1 << i) == 0;
                            started |= 1 << i;
                            let slots = if first { 4 } else { 2 };
                            *total = total.saturating_add(slots * child.size);
                        }
                        walk(body, child, total, budget, depth + 1)?;
                    }
                    None => *total = total.saturating_add(heap(body.len())),
                }
            }
            3 => skip_group(&mut buf, field, depth + 1)?,
            _ => return Err(Refused::Malformed),
        }
        if *total > budget {
            return Err(Refused::OverBudget);
        }
    }
    Ok(())
}

/// Skips a (deprecated) group up to its end tag, as prost does for unknown fields; groups allocate nothing.
fn skip_group(buf: &mut &[u8], field: u32, depth: u32) -> Result<(), Refused> {
    if depth > MAX_DEPTH {
        return Err(Refused::Malformed);
    }
    loop {
        let key = varint(buf)?;
        let inner = u32::try_from(key >> 3).map_err(|_| Refused::Malformed)?;
        match key & 7 {
            0 => {
                varint(buf)?;
            }
            1 => {
                take(buf, 8)?;
            }
            5 => {
                take(buf, 4)?;
            }
            2 => {
                let len = varint(buf)?;
                take(buf, len)?;
            }
            3 => skip_group(buf, inner, depth + 1)?,
            4 if inner == field => return Ok(()),
            _ => return Err(Refused::Malformed),
        }
    }
}

/// `ErrorInfo` metadata key marking a refusal made while decoding (already counted by the refusal hook).
pub const STAGE_KEY: &str = "stage";
/// Its value.
pub const STAGE_DECODE: &str = "decode";

type RefusalHook = Box<dyn Fn(&'static str, Code) + Send + Sync>;
static REFUSAL_HOOK: OnceLock<RefusalHook> = OnceLock::new();

/// Registers what to do with every refusal made while decoding (the gateway counts and logs it): a unary
/// request refused here never reaches a handler that could. First registration wins (one gateway per process).
pub fn on_refusal(hook: impl Fn(&'static str, Code) + Send + Sync + 'static) {
    let _ = REFUSAL_HOOK.set(Box::new(hook));
}

fn error(code: Code, reason: &'static str, message: String) -> Status {
    if let Some(hook) = REFUSAL_HOOK.get() {
        hook(reason, code);
    }
    let metadata = HashMap::from([(STAGE_KEY.to_string(), STAGE_DECODE.to_string())]);
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, INGEST_ERROR_DOMAIN, metadata),
    )
}

/// The status for bytes that are not the request type.
pub fn malformed() -> Status {
    error(
        Code::InvalidArgument,
        "MALFORMED_MESSAGE",
        "the message is not a valid encoding of the request type (bad bytes, a string that is not UTF-8, or \
         nesting too deep)"
            .into(),
    )
}

fn over_budget(budget: usize) -> Status {
    error(
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        format!(
            "the message would take more than the gateway's limit of {budget} bytes in memory once decoded \
             (three times its message size limit); split it into smaller batches"
        ),
    )
}

fn check(wire: &[u8], shape: &Shape, budget: usize) -> Result<(), Status> {
    match decoded_cost(wire, shape, budget.saturating_sub(shape.size)) {
        Ok(_) => Ok(()),
        Err(Refused::Malformed) => Err(malformed()),
        Err(Refused::OverBudget) => Err(over_budget(budget)),
    }
}

/// The `IngestService` codec: prost's encoder, and a decoder that checks the decoded size first.
#[derive(Debug)]
pub struct BoundedCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Bounded + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

/// Decoder of [`BoundedCodec`].
#[derive(Debug)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + Bounded> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if let Some(shape) = U::shape() {
            let budget = decoded_budget();
            // tonic hands a whole message in one contiguous buffer; anything else is gathered into one first,
            // and the very bytes checked are the ones decoded.
            if buf.chunk().len() != buf.remaining() {
                let whole = buf.copy_to_bytes(buf.remaining());
                check(&whole, shape, budget)?;
                return U::decode(whole).map(Some).map_err(|_| malformed());
            }
            check(buf.chunk(), shape, budget)?;
        }
        U::decode(buf).map(Some).map_err(|_| malformed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::v1::{Encounter, PatientRecord, RecordBatch};

    fn heap_of(r: &RecordBatch) -> usize {
        // What the records hold on the heap, roughly as the walk counts it.
        r.records.capacity() * size_of::<PatientRecord>()
            + r.records
                .iter()
                .map(|p| {
                    [&p.local_patient_id, &p.kana_name, &p.birth_date]
                        .iter()
                        .map(|s| heap(s.len()))
                        .sum::<usize>()
                        + p.encounters.capacity() * size_of::<Encounter>()
                })
                .sum::<usize>()
    }

    #[test]
    fn the_walk_covers_what_decoding_allocates() {
        let batch = RecordBatch {
            batch_id: "b".into(),
            records: (0..100)
                .map(|i| PatientRecord {
                    local_patient_id: format!("L{i}"),
                    kana_name: "ヤマダ".into(),
                    birth_date: "1950-01-01".into(),
                    encounters: vec![Encounter::default(); 3],
                    ..Default::default()
                })
                .collect(),
        };
        let wire = batch.encode_to_vec();
        let cost = decoded_cost(&wire, &RECORD_BATCH, usize::MAX).unwrap();
        let decoded = RecordBatch::decode(&wire[..]).unwrap();
        assert!(cost >= heap_of(&decoded), "{cost} < {}", heap_of(&decoded));
        assert!(cost <= 3 * heap_of(&decoded), "{cost} far above {}", heap_of(&decoded));
    }

    #[test]
    fn empty_records_cost_their_structs_and_stop_at_the_budget() {
        // The attack: 2 wire bytes per empty record.
        let wire: Vec<u8> = [0x12u8, 0x00].repeat(1_000_000);
        assert_eq!(
            decoded_cost(&wire, &RECORD_BATCH, 64 << 20),
            Err(Refused::OverBudget),
            "1M empty records take {} MB decoded",
            (1_000_000 * size_of::<PatientRecord>()) >> 20
        );
        assert_eq!(
            decoded_cost(&wire[..2000], &RECORD_BATCH, usize::MAX),
            // 1,000 records: 2 slots each, and 2 more for the Vec's first allocation of 4.
            Ok((2 * 1000 + 2) * size_of::<PatientRecord>())
        );
    }

    #[test]
    fn malformed_bytes_are_refused_like_prost_refuses_them() {
        for wire in [
            vec![0x12, 0x05, 0x00],       // length past the end
            vec![0x0a, 0x01],             // truncated
            vec![0x07],                   // wire type 7
            vec![0x00, 0x00],             // field 0
            vec![0xff; 11],               // varint too long
            vec![0x1b, 0x08, 0x01, 0x24], // group ended by another field's end tag
        ] {
            assert_eq!(
                decoded_cost(&wire, &RECORD_BATCH, usize::MAX),
                Err(Refused::Malformed),
                "{wire:?}"
            );
            assert!(RecordBatch::decode(&wire[..]).is_err(), "prost accepts {wire:?}");
        }
        // An unknown group is skipped by both.
        let wire = vec![0x1b, 0x08, 0x01, 0x1c];
        assert!(decoded_cost(&wire, &RECORD_BATCH, usize::MAX).is_ok());
        assert!(RecordBatch::decode(&wire[..]).is_ok());
    }
}
