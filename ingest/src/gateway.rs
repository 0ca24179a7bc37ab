//! The `IngestService` gRPC implementation: strings identity, guard, validation, pseudonymisation and the spool
//! together, and makes batches idempotent.
//!
//! Order of work for a batch: check the batch id → rate limit → keyed digest of the content (idempotency) →
//! per record: My Number guard, validation, canonical identities → one key-service call per purpose →
//! opt-out check → one spool commit (group-committed with other streams) → outcome recorded → receipt.
//! Batches of one stream are pipelined: the next is processed while the previous waits for its fsync.

use crate::directory::Admission as Listed;
use crate::identified::{Identified, IdentifiedBatch};
use crate::keyservice::{KeyPurpose, SharedKeyService};
use crate::limits::RateLimits;
use crate::metrics::{HospitalLabel, Metrics, OutcomeLabel};
use crate::my_number;
use crate::pseudonymise::{self, IdentityInputs};
use crate::reason::{ERROR_DOMAIN, Reason, Refusal, request as why};
use crate::record_fields::zeroize_request;
use crate::registry::{Admission, BatchKey, BatchOutcome, InFlight, Registry};
use crate::spool::Spool;
use crate::tls::HospitalIdentity;
use crate::{normalise, validate};
use chrono::NaiveDate;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;
use tokumei_proto::bounded::{STAGE_DECODE, STAGE_KEY};
use tokumei_proto::ingest::v1::ingest_service_server::IngestService;
use tokumei_proto::ingest::v1::{
    BatchReceipt, PatientRequest, PushReceipt, ReasonCount, RecordBatch, Rejection, RequestReceipt, Sex,
};
use tokumei_proto::spool::v1::{BatchCommit, PatientRequestEntry, RequestKind, SpoolEntry, spool_entry::Entry};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use zeroize::Zeroize;

/// A gRPC status with a machine-readable `ErrorInfo` reason.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// The machine-readable reason of a status produced by [`status`], as a hospital's client reads it.
pub use tokumei_platform::client::status_reason;

/// Settings the gateway needs at run time.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Messages larger than this are refused with RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// Sustained records per second per hospital.
    pub records_per_second: u32,
    /// Longest one RPC may run; past it the client gets `DEADLINE_EXCEEDED` with its reason.
    pub request_timeout: std::time::Duration,
    /// Opt-out and erase requests per hospital per minute.
    pub patient_requests_per_minute: u32,
    /// The policy service's hospital directory, if configured: consulted at every request.
    pub directory: Option<Arc<crate::directory::DirectoryWatch>>,
}

/// The gateway service; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    keys: SharedKeyService,
    spool: Spool,
    registry: Arc<Mutex<Registry>>,
    metrics: Arc<Metrics>,
    limits: RateLimits,
    patient_limits: RateLimits,
    settings: GatewaySettings,
    shutting_down: AtomicBool,
}

/// A batch on its way to durability.
enum Pending {
    Ready {
        batch_id: String,
        outcome: BatchOutcome,
        replayed: bool,
    },
    Waiting {
        batch_id: String,
        done: watch::Receiver<Option<Result<BatchOutcome, String>>>,
        replayed: bool,
    },
}

fn lock(m: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A panic while holding the lock cannot leave the registry half-updated (every update is one insert),
    // so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Gateway {
    /// Builds the service over an opened spool and its rebuilt registry.
    pub fn new(
        keys: SharedKeyService,
        spool: Spool,
        registry: Arc<Mutex<Registry>>,
        metrics: Arc<Metrics>,
        settings: GatewaySettings,
    ) -> Self {
        let limits = RateLimits::new(settings.records_per_second);
        let patient_limits = RateLimits::patient_requests(settings.patient_requests_per_minute);
        Gateway {
            inner: Arc::new(Inner {
                keys,
                spool,
                registry,
                metrics,
                limits,
                patient_limits,
                settings,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// Refuse new streams from now on (in-flight ones finish).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The hospital behind a request: the code its certificate names, admitted by the directory when one is
    /// configured (listed, and with the certificate the directory pins).
    fn hospital_of<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let code = HospitalIdentity::from_request(req).map(|h| h.code).map_err(|e| {
            status(
                Code::PermissionDenied,
                why::NOT_A_HOSPITAL,
                format!("client identity rejected: {e}"),
            )
        })?;
        let Some(watch) = &self.inner.settings.directory else {
            return Ok(code);
        };
        let fingerprint = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|leaf| hex::encode(Sha256::digest(leaf.as_ref()))));
        match watch.current().admit(&code, fingerprint.as_deref()) {
            Listed::Enabled => Ok(code),
            Listed::NotListed => Err(status(
                Code::PermissionDenied,
                why::HOSPITAL_NOT_ENABLED,
                "this hospital is not enabled in the platform's directory; ask the platform operator",
            )),
            Listed::OtherCertificate => Err(status(
                Code::PermissionDenied,
                why::CERTIFICATE_NOT_PINNED,
                "the platform's directory pins another certificate for this hospital; use the current one",
            )),
        }
    }
}

/// Records of a batch after the per-record checks.
struct Screened {
    accepted: Vec<(u32, Identified, IdentityInputs)>,
    rejections: Vec<Rejection>,
}

fn reject(batch_id: &str, index: u32, r: Refusal) -> Rejection {
    Rejection {
        batch_id: batch_id.to_string(),
        index,
        reason: r.reason.code().to_string(),
        detail: r.detail,
    }
}

/// Per-record guard, validation and identity derivation. Rejected records are wiped at once (dropped).
fn screen(batch_id: &str, records: Vec<Identified>, hospital: &str, today: NaiveDate) -> Screened {
    let mut accepted = Vec::with_capacity(records.len());
    let mut rejections = Vec::new();
    for (i, mut record) in records.into_iter().enumerate() {
        let index = i as u32;
        let fields = my_number::fields_with_my_number(record.record_mut());
        if !fields.is_empty() {
            drop(record);
            let detail = format!(
                "a My Number was found in {}; the record was destroyed",
                fields.join(", ")
            );
            rejections.push(reject(batch_id, index, Refusal::new(Reason::MyNumberPresent, detail)));
            continue;
        }
        let checked = validate::validate_record(record.record(), today)
            .and_then(|()| pseudonymise::identity_inputs(record.record(), hospital));
        match checked {
            Ok(inputs) => accepted.push((index, record, inputs)),
            Err(r) => {
                drop(record);
                rejections.push(reject(batch_id, index, r));
            }
        }
    }
    Screened { accepted, rejections }
}

impl Inner {
    /// Takes one batch from a stream and returns a handle that resolves once it is durable.
    async fn submit(self: &Arc<Self>, hospital: &str, batch: RecordBatch) -> Result<Pending, Status> {
        // From here every record is wiped whichever way the batch ends: dropping the batch does it.
        let mut batch = IdentifiedBatch::new(batch);
        if !valid_token(batch.batch_id()) {
            return Err(status(
                Code::InvalidArgument,
                why::INVALID_BATCH_ID,
                "batch_id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        // A batch id is logged and kept in the spool's index: it may not carry a My Number either.
        if my_number::contains_my_number(batch.batch_id()) {
            batch.wipe_batch_id();
            return Err(status(
                Code::InvalidArgument,
                why::MY_NUMBER_PRESENT,
                "batch_id holds a My Number; the batch was discarded and nothing was logged",
            ));
        }
        let batch_id = batch.batch_id().to_owned();
        let key: BatchKey = (hospital.to_string(), batch_id.clone());
        // Keyed digest of the content as sent: SHA-256 locally, then HMAC under the batch-digest key, so the
        // digest of a batch of identifiers cannot be confirmed by anyone without the key.
        let mut encoded = batch.encode_to_vec();
        let sha: [u8; 32] = Sha256::digest(&encoded).into();
        encoded.zeroize();
        let digest = self
            .keys
            .hmac(KeyPurpose::BatchDigest, &[&sha])
            .await
            .map_err(|e| self.key_unavailable(&e))?
            .pop()
            .ok_or_else(|| status(Code::Internal, why::KEY_SERVICE_UNAVAILABLE, "empty digest"))?;
        match lock(&self.registry).admit(&key, &digest) {
            Admission::New => {}
            Admission::Replay(outcome) => {
                self.metrics.batch("replayed");
                return Ok(Pending::Ready {
                    batch_id,
                    outcome,
                    replayed: true,
                });
            }
            Admission::Wait(done) => {
                self.metrics.batch("replayed");
                return Ok(Pending::Waiting {
                    batch_id,
                    done,
                    replayed: true,
                });
            }
            Admission::Conflict => {
                self.metrics.batch("conflict");
                return Err(status(
                    Code::AlreadyExists,
                    why::BATCH_ID_REUSED,
                    format!("batch_id {batch_id} was already used for different content"),
                ));
            }
        }
        // Only new work counts against the rate: replays are free.
        if let Err(msg) = self.limits.check(hospital, batch.len()) {
            return Err(status(Code::ResourceExhausted, why::RATE_LIMITED, msg));
        }
        let records = batch.take_records();
        let Screened {
            accepted,
            mut rejections,
        } = screen(&batch_id, records, hospital, validate::today_in_japan());
        let (kept, identities): (Vec<(u32, Identified)>, Vec<IdentityInputs>) =
            accepted.into_iter().map(|(i, r, id)| ((i, r), id)).unzip();
        let pseudonyms = match pseudonymise::key_identities(self.keys.as_ref(), &identities).await {
            Ok(p) => p,
            // The kept records are wiped as they are dropped.
            Err(e) => return Err(self.key_unavailable(&e)),
        };
        let mut spooled = Vec::with_capacity(kept.len());
        {
            let registry = lock(&self.registry);
            for (((index, record), identity), p) in kept.into_iter().zip(&identities).zip(&pseudonyms) {
                if registry.is_opted_out(hospital, &p.linkage_key, p.id4_key.as_ref(), &p.hospital_pseudonym) {
                    drop(record);
                    rejections.push(reject(
                        &batch_id,
                        index,
                        Refusal::new(
                            Reason::OptedOut,
                            "the patient has opted out of provision (提供停止) or asked for erasure",
                        ),
                    ));
                } else {
                    spooled.push(pseudonymise::into_pseudonymised(record, p, identity.quality));
                }
            }
        }
        drop(identities);
        rejections.sort_by_key(|r| r.index);
        let accepted_count = spooled.len() as u64;
        let entry = SpoolEntry {
            entry: Some(Entry::Batch(BatchCommit {
                hospital_code: hospital.to_string(),
                batch_id: batch_id.clone(),
                content_digest: digest.to_vec(),
                records: spooled,
                rejections: rejections.clone(),
            })),
            committed_at_ms: now_ms(),
        };
        // Re-check and reserve atomically: another stream may have committed the same batch meanwhile.
        let (tx, rx) = watch::channel(None);
        {
            let mut registry = lock(&self.registry);
            match registry.admit(&key, &digest) {
                Admission::New => registry.begin(
                    key.clone(),
                    InFlight {
                        digest,
                        done: rx.clone(),
                    },
                ),
                Admission::Replay(outcome) => {
                    return Ok(Pending::Ready {
                        batch_id,
                        outcome,
                        replayed: true,
                    });
                }
                Admission::Wait(done) => {
                    return Ok(Pending::Waiting {
                        batch_id,
                        done,
                        replayed: true,
                    });
                }
                Admission::Conflict => {
                    return Err(status(
                        Code::AlreadyExists,
                        why::BATCH_ID_REUSED,
                        format!("batch_id {batch_id} was already used for different content"),
                    ));
                }
            }
        }
        // The commit runs in its own task: if the hospital disconnects now, the batch still becomes durable and
        // recorded, so a retry is answered from the registry instead of being stored twice.
        let this = Arc::clone(self);
        let hospital = hospital.to_string();
        tokio::spawn(async move {
            let result = this.spool.commit(&entry).await;
            let outcome = match result {
                Ok(position) => {
                    lock(&this.registry).apply(position, &entry);
                    this.metrics.batch("committed");
                    this.metrics
                        .accepted
                        .get_or_create(&HospitalLabel { hospital })
                        .inc_by(accepted_count);
                    for r in &rejections {
                        this.metrics.reject(&r.reason);
                    }
                    Ok(BatchOutcome::new(
                        digest,
                        accepted_count,
                        rejections,
                        position,
                        entry.committed_at_ms,
                    ))
                }
                Err(e) => {
                    lock(&this.registry).abandon(&key);
                    Err(e.to_string())
                }
            };
            let _ = tx.send(Some(outcome));
        });
        Ok(Pending::Waiting {
            batch_id,
            done: rx,
            replayed: false,
        })
    }

    fn key_unavailable(&self, e: &crate::keyservice::KeyError) -> Status {
        tracing::error!(error = %e, "key service failed");
        status(
            Code::Unavailable,
            why::KEY_SERVICE_UNAVAILABLE,
            "the key service is unavailable; nothing was stored, retry later",
        )
    }
}

async fn resolve(p: Pending) -> Result<(String, BatchOutcome, bool), Status> {
    match p {
        Pending::Ready {
            batch_id,
            outcome,
            replayed,
        } => Ok((batch_id, outcome, replayed)),
        Pending::Waiting {
            batch_id,
            mut done,
            replayed,
        } => {
            let result = done
                .wait_for(Option::is_some)
                .await
                .map_err(|_| {
                    status(
                        Code::Unavailable,
                        why::SPOOL_UNAVAILABLE,
                        "spool commit was interrupted; retry",
                    )
                })?
                .clone();
            match result {
                Some(Ok(outcome)) => Ok((batch_id, outcome, replayed)),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "spool commit failed");
                    Err(status(
                        Code::Unavailable,
                        why::SPOOL_UNAVAILABLE,
                        "the spool could not make the batch durable; nothing was acknowledged, retry",
                    ))
                }
                None => Err(status(
                    Code::Internal,
                    why::SPOOL_UNAVAILABLE,
                    "commit finished without an outcome",
                )),
            }
        }
    }
}

/// Maps transport-level stream errors to the gateway's documented statuses.
fn stream_error(s: Status, max: usize) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("too large") {
        status(
            Code::ResourceExhausted,
            why::MESSAGE_TOO_LARGE,
            format!(
                "a RecordBatch exceeded the gateway's maximum message size of {max} bytes; split it into smaller batches"
            ),
        )
    } else if status_reason(&s).as_deref() == Some(why::MALFORMED_MESSAGE) {
        // Said for a stream; still marked as refused while decoding (counted there, not again).
        Status::with_error_details(
            Code::InvalidArgument,
            "a message of the stream is not a tokumei.ingest.v1.RecordBatch (bad bytes, a string that is not UTF-8, \
             or nesting too deep); batches before it were handled, nothing after it was read",
            ErrorDetails::with_error_info(
                why::MALFORMED_MESSAGE,
                ERROR_DOMAIN,
                HashMap::from([(STAGE_KEY.to_string(), STAGE_DECODE.to_string())]),
            ),
        )
    } else {
        s
    }
}

/// True for a refusal the codec made (and counted and logged through its hook).
fn refused_while_decoding(s: &Status) -> bool {
    s.get_details_error_info()
        .is_some_and(|i| i.metadata.get(STAGE_KEY).map(String::as_str) == Some(STAGE_DECODE))
}

/// Runs an RPC under the gateway's request timeout, answering `DEADLINE_EXCEEDED` with its reason (a server
/// timeout layer would answer `CANCELLED` without one).
async fn within_deadline<T>(
    limit: std::time::Duration,
    rpc: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(limit, rpc).await.unwrap_or_else(|_| {
        Err(status(
            Code::DeadlineExceeded,
            why::DEADLINE_EXCEEDED,
            format!(
                "the request ran longer than the gateway's limit of {} s; batches already acknowledged stay committed \
                 and resending them is a replay",
                limit.as_secs()
            ),
        ))
    })
}

struct StreamGauge<'a>(&'a Metrics);
impl Drop for StreamGauge<'_> {
    fn drop(&mut self) {
        self.0.open_streams.dec();
    }
}

/// Rejected records listed in full in one receipt; the rest are counted per reason (a receipt for 60,000
/// rejections was 6 MB, over common clients' 4 MiB receive limit, so the client failed on a committed batch).
pub const RECEIPT_REJECTIONS_LISTED: usize = crate::registry::REJECTIONS_KEPT;

#[tonic::async_trait]
impl IngestService for Gateway {
    #[tracing::instrument(name = "ingest.push", skip_all, fields(hospital, batches, accepted, rejected))]
    async fn push(&self, request: Request<Streaming<RecordBatch>>) -> Result<Response<PushReceipt>, Status> {
        let result = within_deadline(self.inner.settings.request_timeout, self.push_stream(request)).await;
        self.observe("push", result)
    }

    #[tracing::instrument(name = "ingest.opt_out", skip_all, fields(hospital))]
    async fn opt_out(&self, request: Request<PatientRequest>) -> Result<Response<RequestReceipt>, Status> {
        let result = within_deadline(
            self.inner.settings.request_timeout,
            self.patient_request(request, RequestKind::OptOut),
        )
        .await;
        self.observe("opt_out", result)
    }

    #[tracing::instrument(name = "ingest.erase", skip_all, fields(hospital))]
    async fn erase(&self, request: Request<PatientRequest>) -> Result<Response<RequestReceipt>, Status> {
        let result = within_deadline(
            self.inner.settings.request_timeout,
            self.patient_request(request, RequestKind::Erase),
        )
        .await;
        self.observe("erase", result)
    }
}

impl Gateway {
    /// Counts and logs a refused request by its reason, so the operator on call sees refusals (the status
    /// code and reason only: a message may name a field, and a log line never needs more).
    fn observe<T>(&self, rpc: &'static str, result: Result<T, Status>) -> Result<T, Status> {
        if let Err(s) = &result
            && !refused_while_decoding(s)
        {
            let reason = status_reason(s).unwrap_or_else(|| "UNCLASSIFIED".to_owned());
            self.inner.metrics.refuse(&reason);
            tracing::warn!(rpc, code = ?s.code(), reason = reason.as_str(), "request refused");
        }
        result
    }

    /// One Push stream: every batch submitted as it arrives, the receipt once all are durable.
    async fn push_stream(&self, request: Request<Streaming<RecordBatch>>) -> Result<Response<PushReceipt>, Status> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            return Err(status(
                Code::Unavailable,
                why::SHUTTING_DOWN,
                "the gateway is shutting down; retry shortly",
            ));
        }
        let hospital = self.hospital_of(&request)?;
        tracing::Span::current().record("hospital", hospital.as_str());
        inner.metrics.open_streams.inc();
        let _gauge = StreamGauge(&inner.metrics);
        let started = Instant::now();
        let mut stream = request.into_inner();
        let mut pending = Vec::new();
        while let Some(batch) = stream
            .message()
            .await
            .map_err(|s| stream_error(s, inner.settings.max_message_bytes))?
        {
            pending.push(inner.submit(&hospital, batch).await?);
        }
        let mut receipt = PushReceipt::default();
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for p in pending {
            let (batch_id, outcome, replayed) = resolve(p).await?;
            receipt.accepted += outcome.accepted;
            receipt.batches.push(BatchReceipt {
                batch_id,
                accepted: outcome.accepted,
                rejected: u32::try_from(outcome.rejected_total).unwrap_or(u32::MAX),
                replayed,
                spool_position: outcome.position.to_string(),
            });
            receipt.rejected_total += outcome.rejected_total;
            for (reason, count) in &outcome.rejected_by_reason {
                *by_reason.entry(reason.clone()).or_default() += count;
            }
            let room = RECEIPT_REJECTIONS_LISTED.saturating_sub(receipt.rejected.len());
            receipt.rejected.extend(outcome.rejections.iter().take(room).cloned());
        }
        receipt.rejected_by_reason = by_reason
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect();
        inner.metrics.receipt_latency.observe(started.elapsed().as_secs_f64());
        let span = tracing::Span::current();
        span.record("batches", receipt.batches.len());
        span.record("accepted", receipt.accepted);
        span.record("rejected", receipt.rejected_total);
        Ok(Response::new(receipt))
    }

    async fn patient_request(
        &self,
        request: Request<PatientRequest>,
        kind: RequestKind,
    ) -> Result<Response<RequestReceipt>, Status> {
        let hospital = self.hospital_of(&request)?;
        tracing::Span::current().record("hospital", hospital.as_str());
        let mut req = request.into_inner();
        let result = self.patient_request_inner(&hospital, &mut req, kind).await;
        zeroize_request(&mut req);
        result.map(Response::new)
    }

    async fn patient_request_inner(
        &self,
        hospital: &str,
        req: &mut PatientRequest,
        kind: RequestKind,
    ) -> Result<RequestReceipt, Status> {
        let inner = &self.inner;
        // Before any key is derived: each request names a person by keys that can be guessed.
        if let Err(msg) = inner.patient_limits.check(hospital, 1) {
            return Err(status(Code::ResourceExhausted, why::RATE_LIMITED, msg));
        }
        if !valid_token(&req.request_id) {
            return Err(status(
                Code::InvalidArgument,
                why::INVALID_REQUEST_ID,
                "request_id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let fields = my_number::request_fields_with_my_number(req);
        if !fields.is_empty() {
            return Err(status(
                Code::InvalidArgument,
                why::MY_NUMBER_PRESENT,
                format!(
                    "a My Number was found in {}; the request was destroyed, send it without",
                    fields.join(", ")
                ),
            ));
        }
        let invalid = |r: Refusal| {
            status(
                Code::InvalidArgument,
                why::INVALID_IDENTITY,
                format!("{}: {}", r.reason, r.detail),
            )
        };
        let mut linkage_inputs = Vec::new();
        let mut id4_input = None;
        let mut matched = Vec::new();
        if normalise::insurance_present(req.insurance.as_ref())
            && let Some(ins) = req.insurance.as_ref()
        {
            linkage_inputs.push(normalise::insured_identity(ins).map_err(invalid)?);
            matched.push("INSURED");
        }
        let sex = Sex::try_from(req.sex).unwrap_or(Sex::Unspecified);
        if !req.kana_name.trim().is_empty() && !req.birth_date.is_empty() && sex != Sex::Unspecified {
            if validate::parse_date(&req.birth_date).is_none() {
                return Err(status(
                    Code::InvalidArgument,
                    why::INVALID_IDENTITY,
                    "birth_date must be YYYY-MM-DD",
                ));
            }
            id4_input = Some(normalise::id4_identity(&req.kana_name, &req.birth_date, sex).map_err(invalid)?);
            matched.push("ID4");
        }
        let local = if req.local_patient_id.trim().is_empty() {
            None
        } else {
            matched.push("LOCAL_ID");
            Some(normalise::local_identity(hospital, &req.local_patient_id).map_err(invalid)?)
        };
        if matched.is_empty() {
            return Err(status(
                Code::InvalidArgument,
                why::MISSING_IDENTITY,
                "give insurance, kana_name + birth_date + sex, or local_patient_id",
            ));
        }
        let refs: Vec<&[u8]> = linkage_inputs
            .iter()
            .chain(id4_input.as_ref())
            .map(|s| s.as_bytes())
            .collect();
        let mut linkage_keys = inner
            .keys
            .hmac(KeyPurpose::Linkage, &refs)
            .await
            .map_err(|e| inner.key_unavailable(&e))?;
        let id4_keys = if id4_input.is_some() {
            linkage_keys.pop().map(|k| vec![k.to_vec()]).unwrap_or_default()
        } else {
            Vec::new()
        };
        let hospital_pseudonym = match &local {
            Some(l) => inner
                .keys
                .hmac(KeyPurpose::HospitalPseudonym, &[l.as_bytes()])
                .await
                .map_err(|e| inner.key_unavailable(&e))?
                .pop()
                .map(|d| d.to_vec())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        drop(linkage_inputs);
        drop(id4_input);
        drop(local);
        let entry = PatientRequestEntry {
            hospital_code: hospital.to_string(),
            request_id: req.request_id.clone(),
            kind: kind as i32,
            linkage_keys: linkage_keys.iter().map(|k| k.to_vec()).collect(),
            hospital_pseudonym,
            matched_by: matched.join(","),
            id4_keys,
        };
        if let Some(previous) = lock(&inner.registry).request(hospital, &req.request_id) {
            // Requests recorded before ID4 keys had their own field carried them among the linkage keys.
            let all =
                |a: &[Vec<u8>], b: &[Vec<u8>]| a.iter().chain(b).cloned().collect::<std::collections::BTreeSet<_>>();
            let same = previous.kind == entry.kind
                && all(&previous.linkage_keys, &previous.id4_keys) == all(&entry.linkage_keys, &entry.id4_keys)
                && previous.hospital_pseudonym == entry.hospital_pseudonym;
            return if same {
                Ok(RequestReceipt {
                    request_id: req.request_id.clone(),
                    status: "ALREADY_RECORDED".into(),
                    matched_by: previous.matched_by.clone(),
                })
            } else {
                Err(status(
                    Code::AlreadyExists,
                    why::REQUEST_ID_REUSED,
                    "request_id was already used for a different request",
                ))
            };
        }
        let matched_by = entry.matched_by.clone();
        let spool_entry = SpoolEntry {
            entry: Some(Entry::Request(entry)),
            committed_at_ms: now_ms(),
        };
        let position = inner.spool.commit(&spool_entry).await.map_err(|e| {
            tracing::error!(error = %e, "spool commit of a patient request failed");
            status(
                Code::Unavailable,
                why::SPOOL_UNAVAILABLE,
                "the request could not be made durable; retry",
            )
        })?;
        lock(&inner.registry).apply(position, &spool_entry);
        let label = if kind == RequestKind::Erase { "erase" } else { "opt_out" };
        inner
            .metrics
            .requests
            .get_or_create(&OutcomeLabel { outcome: label.into() })
            .inc();
        tracing::info!(kind = label, matched_by = %matched_by, "patient request recorded");
        Ok(RequestReceipt {
            request_id: req.request_id.clone(),
            status: "RECORDED".into(),
            matched_by,
        })
    }
}
