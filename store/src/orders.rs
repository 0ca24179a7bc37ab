//! Operators' orders, as the core takes and carries them out.
//!
//! The core listens on nothing, so it connects out to the policy service (mutual TLS with its own certificate)
//! and takes the orders operators asked for there. It acts on an order only if:
//! - the order is signed by the policy service key pinned in the core's configuration, for the purpose
//!   `tokumei/core-order/v1` (a row slipped into the policy database, or an order signed for another purpose,
//!   is refused);
//! - it has not expired (the core's clock);
//! - the core has not carried out the same order before ([`ExecutedOrders`]: a replayed order is refused).
//!
//! The check is written here, apart from the policy zone's code that signs, so the two cannot share a mistake.
//! The report sent back holds counts and references, never a key; the policy service chooses what of it goes
//! to the ledger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;
use serde_json::json;
use tokumei_keys::{KeyService, SharedKeyService};
use tokumei_platform::config::{Config, CoreOrdersConfig, resolve};
use tokumei_proto::policy::v1 as pb;
use tokumei_proto::policy::v1::core_order_service_client::CoreOrderServiceClient;
use tokumei_proto::spool::v1::{PatientRequestEntry, RequestKind};
use tonic::transport::{Channel, Endpoint};

use crate::erasure::ErasureCertificate;
use crate::error::StoreError;
use crate::store::Store;
use crate::{compaction, encryption, regulator, status};

/// How far the policy service's clock may run ahead of the core's before an order counts as issued in the future.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The domain every order's signature is made in (must equal the policy service's purpose string).
pub const DOMAIN: &[u8] = b"tokumei/core-order/v1";

/// Why the core refused an order (reported to the policy service as the failure's reason code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signature does not verify under the pinned key (or is not 64 bytes of hex).
    #[error("the order's signature does not verify under the pinned policy service key")]
    BadSignature,
    /// The signed payload is not an order this core understands.
    #[error("the order is not readable")]
    Unreadable,
    /// Past its expiry.
    #[error("the order has expired")]
    Expired,
    /// Already carried out by this core.
    #[error("the order was already carried out")]
    Replayed,
    /// Issued later than the core's clock allows (a clock set back must not revive an expired order).
    #[error("the order is issued in the future by the core's clock")]
    NotYetValid,
    /// The record of carried-out orders could not be written, so the order is not run (it could not be refused
    /// as a replay later).
    #[error("the record of carried-out orders could not be written")]
    RecordUnwritable,
}

impl Refusal {
    /// The reason code sent back.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadSignature => "ORDER_SIGNATURE_INVALID",
            Refusal::Unreadable => "ORDER_UNREADABLE",
            Refusal::Expired => "ORDER_EXPIRED",
            Refusal::Replayed => "ORDER_REPLAYED",
            Refusal::NotYetValid => "ORDER_NOT_YET_VALID",
            Refusal::RecordUnwritable => "ORDER_RECORD_UNWRITABLE",
        }
    }
}

/// What an order asks, as the core reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Operation {
    /// Report the tables.
    Status,
    /// Compact now.
    Compact,
    /// Erase one patient.
    Erase {
        /// Linkage keys (hex).
        linkage_keys: Vec<String>,
        /// A hospital pseudonym (hex).
        hospital_pseudonym: Option<String>,
        /// The request's reference.
        request_id: String,
    },
    /// Rotate the key-encryption key.
    RotateKeys {
        /// Also start a new data key.
        new_data_key: bool,
    },
    /// Plan a release (aggregates only) with the [`Planner`] the core runs with.
    PlanRelease {
        /// The application's scope as the policy service fixed it (read by the planner).
        scope: serde_json::Value,
        /// The model to try (read by the planner).
        params: serde_json::Value,
    },
    /// An operator's read-only SQL query; its rows are sealed to the client's key.
    Sql {
        /// The query.
        query: String,
        /// Over the operator view (opted-out patients and the registry included).
        all_rows: bool,
        /// The client's one-use X25519 public key, hex.
        recipient_key: String,
    },
    /// The core's half of a release build with the [`Planner`] the core runs with: the result goes sealed to the
    /// release zone, never back through the policy service.
    BuildRelease {
        /// The scope the policy service fixed (read by the planner).
        scope: serde_json::Value,
        /// The release zone's intake key the policy service signed into the order (64 hex digits).
        intake_key: String,
    },
    /// A statistical table over the research view (`statistics`), its loss paid before the order was signed.
    Statistics(tokumei_catalogue::statistics::StatisticsOrder),
    /// A request to an analysis workspace (`tokumei_analysis::workspace`), answered by the [`Planner`] over the
    /// approval's cohort; what only the researcher may read is sealed to their key.
    Analysis {
        /// The workspace's scope as the policy service fixed it from the approval (read by the planner).
        scope: serde_json::Value,
        /// The request (read by the planner).
        request: serde_json::Value,
        /// The researcher's one-use X25519 public key, hex, for a query's rows or an analysis's result.
        recipient_key: Option<String>,
    },
    /// Count what the regulator's report needs, in the window the order gives.
    RegulatorFigures {
        /// The quarter (for the report; the window is `from`, `to`).
        period: String,
        /// First instant, RFC 3339.
        from: String,
        /// The instant after the last, RFC 3339.
        to: String,
    },
}

/// A verified order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Order {
    /// The order's number.
    pub id: u64,
    /// When it was issued (milliseconds since the epoch, the policy service's clock).
    pub issued_at_ms: i64,
    /// SHA-256 of the signed payload, hex: what the replay record keeps (numbers can repeat if the policy
    /// database is ever restored; a signed payload cannot).
    #[serde(skip)]
    pub digest: String,
    /// Who asked.
    pub requested_by: String,
    /// When it expires (milliseconds since the epoch).
    pub expires_at_ms: i64,
    /// What to do.
    #[serde(flatten)]
    pub operation: Operation,
}

/// Checks an order's signature under `key` and reads it; nothing else (see [`ExecutedOrders::admit`]).
pub fn verify(key: &VerifyingKey, payload: &str, signature_hex: &str) -> Result<Order, Refusal> {
    let bytes = hex::decode(signature_hex).map_err(|_| Refusal::BadSignature)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| Refusal::BadSignature)?;
    let mut message = Vec::with_capacity(DOMAIN.len() + 1 + payload.len());
    message.extend_from_slice(DOMAIN);
    message.push(0);
    message.extend_from_slice(payload.as_bytes());
    key.verify(&message, &signature).map_err(|_| Refusal::BadSignature)?;
    let mut order: Order = serde_json::from_str(payload).map_err(|_| Refusal::Unreadable)?;
    order.digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload.as_bytes()));
    Ok(order)
}

/// The pinned key from its hex form.
pub fn verifying_key(hex_key: &str) -> Result<VerifyingKey, StoreError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Orders("core.orders.public_key is not 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| StoreError::Orders("core.orders.public_key is not a valid key".into()))
}

/// The orders this core has carried out, kept until they expire (after which their signature no longer admits
/// them anyway), in a file under the core's home written atomically: a replay is refused across restarts.
#[derive(Debug)]
pub struct ExecutedOrders {
    path: PathBuf,
    done: BTreeMap<String, i64>,
}

impl ExecutedOrders {
    /// Opens (or starts) the record at `path`.
    pub fn open(path: PathBuf) -> Result<ExecutedOrders, StoreError> {
        let done = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|_| StoreError::Orders(format!("{} is not readable", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StoreError::Io(path.display().to_string(), e)),
        };
        Ok(ExecutedOrders { path, done })
    }

    /// Admits `order` at `now_ms` and records it as carried out *before* it runs (at most once: an order
    /// interrupted half-way is not run again; the operator asks anew).
    pub fn admit(&mut self, order: &Order, now_ms: i64) -> Result<(), Refusal> {
        if order.expires_at_ms <= now_ms {
            return Err(Refusal::Expired);
        }
        if order.issued_at_ms > now_ms + MAX_CLOCK_SKEW_MS {
            return Err(Refusal::NotYetValid);
        }
        if self.done.contains_key(&order.digest) {
            return Err(Refusal::Replayed);
        }
        // Kept past expiry by the clock skew allowed, so a core clock set back within it cannot re-admit one.
        self.done.retain(|_, expires| *expires + MAX_CLOCK_SKEW_MS > now_ms);
        self.done.insert(order.digest.clone(), order.expires_at_ms);
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "the record of carried-out orders could not be written; order refused");
            self.done.remove(&order.digest);
            return Err(Refusal::RecordUnwritable);
        }
        Ok(())
    }

    fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec(&self.done).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

fn hex32(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok().filter(|b| b.len() == 32)
}

/// A future the planner returns.
pub type PlanFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, StoreError>> + Send + 'a>>;

/// Work an order asks that needs code outside this crate: a release plan runs the release builder, which depends
/// on the store. The core's runner provides it; a core without one refuses plan orders.
pub trait Planner: Send + Sync {
    /// Plans a release of `scope` under `params` (as the order carries them), reading `store`: the report, counts
    /// and levels only.
    fn plan<'a>(
        &'a self,
        store: &'a Store,
        scope: &'a serde_json::Value,
        params: &'a serde_json::Value,
    ) -> PlanFuture<'a>;

    /// The core's half of release build `order`, `ordered` being its scope and the release zone's intake key as
    /// the order carries them: reads `store`, unwraps project keys with `keys`, seals the package to that key and
    /// hands it to the release zone; the report holds its reference, size, SHA-256 and counts.
    fn build<'a>(
        &'a self,
        store: &'a Store,
        keys: &'a dyn KeyService,
        order: u64,
        ordered: (&'a serde_json::Value, &'a str),
    ) -> PlanFuture<'a>;

    /// Answers a request to an analysis workspace: reads the approval's cohort from `store` (pseudonyms under the
    /// workspace's key, unwrapped with `keys`), answers in the workspace and seals what only the researcher may read.
    fn analyse<'a>(&'a self, store: &'a Store, keys: &'a dyn KeyService, asked: AnalysisOrder<'a>) -> PlanFuture<'a>;
}

/// A workspace request as an order carries it, for [`Planner::analyse`].
#[derive(Debug, Clone, Copy)]
pub struct AnalysisOrder<'a> {
    /// The order's number (the query's or the result's number in the workspace).
    pub order: u64,
    /// The workspace's scope, as the policy service fixed it.
    pub scope: &'a serde_json::Value,
    /// The request.
    pub request: &'a serde_json::Value,
    /// Who asked.
    pub user: &'a str,
    /// The researcher's one-use key, hex.
    pub recipient_key: Option<&'a str>,
}

/// An erasure handed to the core's main loop, which carries it out between chunks ([`Applier::carry_out_order`])
/// so that the person's records still in the spool are refused from then on.
///
/// [`Applier::carry_out_order`]: crate::apply::Applier::carry_out_order
#[derive(Debug)]
pub struct ErasureJob {
    /// The request, as a hospital's would be.
    pub request: PatientRequestEntry,
    /// Where the outcome goes (the error as text: the report carries a code only).
    pub done: tokio::sync::oneshot::Sender<Result<Option<ErasureCertificate>, String>>,
}

/// Carries out a verified operation; the report holds counts and references only. Status, compaction and key
/// rotation run here (compaction and rotation under the maintenance lock); an erasure goes to the main loop.
pub async fn carry_out(
    store: &Store,
    keys: &dyn KeyService,
    order: &Order,
    maintenance: &tokio::sync::Mutex<()>,
    erasures: &tokio::sync::mpsc::Sender<ErasureJob>,
    planner: Option<&dyn Planner>,
) -> Result<serde_json::Value, StoreError> {
    match &order.operation {
        Operation::Sql {
            query,
            all_rows,
            recipient_key,
        } => crate::sql::run(store, order.id, query, *all_rows, recipient_key).await,
        Operation::PlanRelease { scope, params } => match planner {
            Some(p) => p.plan(store, scope, params).await,
            None => Err(StoreError::Orders("this core runs without a release planner".into())),
        },
        Operation::Analysis {
            scope,
            request,
            recipient_key,
        } => match planner {
            Some(p) => {
                let asked = AnalysisOrder {
                    order: order.id,
                    scope,
                    request,
                    user: &order.requested_by,
                    recipient_key: recipient_key.as_deref(),
                };
                p.analyse(store, keys, asked).await
            }
            None => Err(StoreError::Orders(
                "this core runs without an analysis environment".into(),
            )),
        },
        Operation::BuildRelease { scope, intake_key } => match planner {
            Some(p) => p.build(store, keys, order.id, (scope, intake_key)).await,
            None => Err(StoreError::Orders("this core runs without a release builder".into())),
        },
        Operation::Statistics(order) => serde_json::to_value(crate::statistics::compute(store, order).await?)
            .map_err(|e| StoreError::Orders(format!("statistics report: {e}"))),
        Operation::Status => Ok(serde_json::to_value(status::status(store).await?)
            .map_err(|e| StoreError::Orders(format!("status report: {e}")))?),
        Operation::Compact => {
            let done = {
                let _guard = maintenance.lock().await;
                compaction::compact(store, 0).await?
            };
            let tables: Vec<_> = done
                .iter()
                .map(|t| json!({"table": t.table, "small_files": t.small_files, "files_added": t.files_added, "files_deleted": t.files_deleted}))
                .collect();
            Ok(json!({"tables_compacted": done.len(), "tables": tables}))
        }
        Operation::Erase {
            linkage_keys,
            hospital_pseudonym,
            request_id,
        } => {
            let keys: Option<Vec<Vec<u8>>> = linkage_keys.iter().map(|k| hex32(k)).collect();
            let keys = keys.ok_or_else(|| StoreError::Orders("a linkage key is not 64 hex digits".into()))?;
            let pseudonym = match hospital_pseudonym {
                Some(p) => {
                    hex32(p).ok_or_else(|| StoreError::Orders("the hospital pseudonym is not 64 hex digits".into()))?
                }
                None => Vec::new(),
            };
            let entry = PatientRequestEntry {
                hospital_code: "operator".into(),
                request_id: request_id.clone(),
                kind: RequestKind::Erase as i32,
                linkage_keys: keys,
                hospital_pseudonym: pseudonym,
                matched_by: "operator".into(),
                id4_keys: Vec::new(),
            };
            let (done, outcome) = tokio::sync::oneshot::channel();
            erasures
                .send(ErasureJob { request: entry, done })
                .await
                .map_err(|_| StoreError::Orders("the core's main loop has stopped".into()))?;
            let cert = outcome
                .await
                .map_err(|_| StoreError::Orders("the core's main loop has stopped".into()))?
                .map_err(StoreError::Orders)?
                .ok_or_else(|| StoreError::Orders("an erasure produced no certificate".into()))?;
            Ok(json!({
                "request_id": cert.request_id,
                "rows_removed": cert.rows_removed,
                "files_destroyed": cert.files_destroyed,
                "tables": cert.tables.iter().map(|t| json!({"table": t.table, "rows_removed": t.rows_removed, "files_destroyed": t.files_destroyed})).collect::<Vec<_>>(),
                "certificate_log": store.erasure_log_path().display().to_string(),
            }))
        }
        Operation::RegulatorFigures { period, from, to } => {
            let instant = |s: &str| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| StoreError::Orders("the order's window is not RFC 3339".into()))
            };
            let figures = regulator::figures(store, instant(from)?, instant(to)?).await?;
            let mut value = serde_json::to_value(figures)
                .map_err(|e| StoreError::Orders(format!("regulator figures report: {e}")))?;
            value["period"] = json!(period);
            Ok(value)
        }
        Operation::RotateKeys { new_data_key } => {
            let r = {
                let _guard = maintenance.lock().await;
                encryption::data_keys::rotate(store.raw_store().as_ref(), keys, *new_data_key).await?
            };
            Ok(json!({
                "kek_version": r.kek_version,
                "rewrapped": r.rewrapped,
                "new_data_key": r.new_data_key.is_some(),
                "new_data_key_id": r.new_data_key,
                // The running core keeps its unwrapped keys; a new data key is used from its next start.
                "new_data_key_from": r.new_data_key.map(|_| "the core's next start"),
            }))
        }
    }
}

/// The core's connection to the policy service's order queue.
pub struct OrderSource {
    client: CoreOrderServiceClient<Channel>,
    key: VerifyingKey,
    keys: SharedKeyService,
    executed: ExecutedOrders,
    planner: Option<Arc<dyn Planner>>,
    /// How often to ask.
    pub poll: Duration,
}

impl std::fmt::Debug for OrderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderSource").finish_non_exhaustive()
    }
}

impl OrderSource {
    /// Connects (lazily: the policy service may start later) with the core's certificate.
    pub fn connect(
        config: &Config,
        orders: &CoreOrdersConfig,
        home: &Path,
        keys: SharedKeyService,
    ) -> Result<OrderSource, StoreError> {
        tokumei_platform::tls::install_crypto_provider();
        let ca = resolve(home, orders.ca.as_deref().unwrap_or(&config.core.ca));
        let tls = tokumei_platform::client::mutual_tls(
            &ca,
            &resolve(home, &config.core.cert),
            &resolve(home, &config.core.key),
        )
        .map_err(|(p, e)| StoreError::Io(p.display().to_string(), e))?;
        let channel = Endpoint::from_shared(orders.policy_url.clone())
            .map_err(|e| StoreError::Orders(format!("core.orders.policy_url: {e}")))?
            .tls_config(tls)
            .map_err(|e| StoreError::Orders(format!("core.orders TLS: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        Ok(OrderSource {
            client: CoreOrderServiceClient::new(channel),
            key: verifying_key(&orders.public_key)?,
            keys,
            executed: ExecutedOrders::open(home.join("core").join("executed-orders.json"))?,
            planner: None,
            poll: Duration::from_millis(orders.poll_ms.max(50)),
        })
    }

    /// Lets the core carry out release plans with `planner`.
    pub fn with_planner(mut self, planner: Arc<dyn Planner>) -> OrderSource {
        self.planner = Some(planner);
        self
    }

    /// Takes the queued orders, carries out those that pass, and reports on each. Returns how many ran.
    pub async fn serve_once(
        &mut self,
        store: &Store,
        maintenance: &tokio::sync::Mutex<()>,
        erasures: &tokio::sync::mpsc::Sender<ErasureJob>,
    ) -> Result<usize, StoreError> {
        let taken = self
            .client
            .take_core_orders(pb::CoreState {
                exclusions_changed_at_ms: store.exclusions_changed_at_ms(),
            })
            .await
            .map_err(|s| StoreError::Orders(format!("take orders: {:?} {}", s.code(), s.message())))?
            .into_inner();
        let mut ran = 0;
        for signed in taken.orders {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let admitted = verify(&self.key, &signed.payload, &signed.signature)
                .and_then(|o| {
                    if o.id == signed.id {
                        Ok(o)
                    } else {
                        Err(Refusal::Unreadable)
                    }
                })
                .and_then(|o| self.executed.admit(&o, now_ms).map(|()| o));
            let order = match admitted {
                Ok(order) => order,
                Err(refusal) => {
                    tracing::warn!(order = signed.id, reason = refusal.code(), "core order refused");
                    self.report(
                        signed.id,
                        Err(refusal.code().to_owned()),
                        store.exclusions_changed_at_ms(),
                    )
                    .await;
                    continue;
                }
            };
            let result = carry_out(
                store,
                self.keys.as_ref(),
                &order,
                maintenance,
                erasures,
                self.planner.as_deref(),
            )
            .await;
            ran += 1;
            let report = match &result {
                Ok(value) => {
                    tracing::info!(order = order.id, "core order carried out");
                    Ok(value.clone())
                }
                Err(StoreError::Declined { code, message }) => {
                    tracing::warn!(order = order.id, reason = %code, %message, "core order declined");
                    Err(code.clone())
                }
                Err(e) => {
                    tracing::error!(order = order.id, error = %e, "core order failed");
                    Err("CORE_OPERATION_FAILED".to_owned())
                }
            };
            self.report(order.id, report, store.exclusions_changed_at_ms()).await;
        }
        Ok(ran)
    }

    async fn report(&mut self, id: u64, outcome: Result<serde_json::Value, String>, exclusions_changed_at_ms: i64) {
        let message = match outcome {
            Ok(v) => pb::CoreOrderReport {
                id,
                ok: true,
                result_json: v.to_string(),
                reason: String::new(),
                exclusions_changed_at_ms,
            },
            Err(code) => pb::CoreOrderReport {
                id,
                ok: false,
                result_json: String::new(),
                reason: code,
                exclusions_changed_at_ms,
            },
        };
        if let Err(s) = self.client.report_core_order(message).await {
            tracing::warn!(order = id, code = ?s.code(), "the report on a core order was not accepted");
        }
    }
}

/// Runs [`OrderSource::serve_once`] every poll until the task is dropped; connection failures are logged and
/// retried (the core's main work, applying the spool, does not depend on the policy service).
pub async fn serve(
    mut source: OrderSource,
    store: Arc<Store>,
    maintenance: Arc<tokio::sync::Mutex<()>>,
    erasures: tokio::sync::mpsc::Sender<ErasureJob>,
) {
    let mut failing = false;
    loop {
        match source.serve_once(&store, &maintenance, &erasures).await {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot take core orders; retrying");
                }
                failing = true;
            }
        }
        tokio::time::sleep(source.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn sign(key: &SigningKey, domain: &[u8], payload: &str) -> String {
        let mut m = domain.to_vec();
        m.push(0);
        m.extend_from_slice(payload.as_bytes());
        hex::encode(key.sign(&m).to_bytes())
    }

    fn payload(id: u64, expires: i64) -> String {
        format!(r#"{{"id":{id},"requested_by":"op","issued_at_ms":0,"expires_at_ms":{expires},"operation":"compact"}}"#)
    }

    #[test]
    fn only_signed_fresh_unseen_orders_pass() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let pinned = key.verifying_key();
        let good = payload(1, 10_000);
        let order = verify(&pinned, &good, &sign(&key, DOMAIN, &good)).expect("verifies");
        assert_eq!(order.operation, Operation::Compact);
        // Another key, another purpose, a changed payload, garbage: refused.
        assert_eq!(
            verify(&pinned, &good, &sign(&other, DOMAIN, &good)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(&pinned, &good, &sign(&key, b"tokumei/hospital-directory/v1", &good)),
            Err(Refusal::BadSignature)
        );
        let tampered = good.replace("compact", "status");
        assert_eq!(
            verify(&pinned, &tampered, &sign(&key, DOMAIN, &good)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(verify(&pinned, &good, "zz"), Err(Refusal::BadSignature));
        let nonsense = r#"{"id":1,"operation":"drop_tables"}"#;
        assert_eq!(
            verify(&pinned, nonsense, &sign(&key, DOMAIN, nonsense)),
            Err(Refusal::Unreadable)
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("executed.json");
        let mut executed = ExecutedOrders::open(path.clone()).expect("open");
        assert_eq!(executed.admit(&order, 5_000), Ok(()));
        assert_eq!(executed.admit(&order, 5_001), Err(Refusal::Replayed));
        // Across a restart too.
        let mut reopened = ExecutedOrders::open(path).expect("reopen");
        assert_eq!(reopened.admit(&order, 5_002), Err(Refusal::Replayed));
        let late = verify(&pinned, &payload(2, 10_000), &sign(&key, DOMAIN, &payload(2, 10_000))).expect("verifies");
        assert_eq!(reopened.admit(&late, 10_000), Err(Refusal::Expired));
        // Issued in the future by the core's clock (a clock set back): refused.
        let early =
            r#"{"id":3,"requested_by":"op","issued_at_ms":900000,"expires_at_ms":2000000,"operation":"compact"}"#;
        let early = verify(&pinned, early, &sign(&key, DOMAIN, early)).expect("verifies");
        assert_eq!(reopened.admit(&early, 10_000), Err(Refusal::NotYetValid));
        // The same number with another payload (a restored policy database reusing numbers) is not a replay.
        let renumbered = payload(1, 20_000);
        let again = verify(&pinned, &renumbered, &sign(&key, DOMAIN, &renumbered)).expect("verifies");
        assert_eq!(reopened.admit(&again, 6_000), Ok(()));
    }

    #[test]
    fn the_domain_is_the_policy_services() {
        // The policy zone signs with `SignaturePurpose::CoreOrder`; the strings must stay equal.
        assert_eq!(DOMAIN, b"tokumei/core-order/v1");
    }
}
