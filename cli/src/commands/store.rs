//! `tokumei store ...`: operators' commands on the core store, as orders through the policy service.
//!
//! The command holds no key and opens no database: it asks the policy service (with the operator's session),
//! which authorises the operation, records it and queues a signed order; the core, which listens on nothing,
//! takes the order, carries it out and reports; the command waits for that report and prints it. Without a
//! running core (`tokumei core run` with `[core.orders]`) the order waits, and the command says so.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;
use tokumei_proto::policy::v1 as pb;

use crate::output::{emit, runtime};
use tokumei_client::core_orders::{WaitOptions, order};
use tokumei_client::policy::{PolicyClient, ServiceOptions};
use tokumei_client::refused;

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Tables, row counts, files, bytes and the last batch applied.
    Status {
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
    },
    /// Compact small files now (the running core also does this on a schedule).
    Compact {
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
    },
    /// Erase one patient from every table and from disk, and write an erasure certificate. Hospitals normally
    /// send erasures through the gateway; this is for requests that reach the operator directly.
    Erase {
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
        /// Linkage key (64 hex characters); repeatable.
        #[arg(long = "linkage-key", required_unless_present = "hospital_pseudonym")]
        linkage_keys: Vec<String>,
        /// Hospital pseudonym (64 hex characters).
        #[arg(long)]
        hospital_pseudonym: Option<String>,
        /// The request's reference, recorded in the certificate.
        #[arg(long)]
        request_id: String,
    },
    /// Rotate the key-encryption key and re-wrap the data keys (no data is rewritten).
    RotateKeys {
        #[command(flatten)]
        service: ServiceOptions,
        #[command(flatten)]
        wait: WaitOptions,
        /// Also start a new data key for objects written from the core's next start.
        #[arg(long)]
        new_data_key: bool,
    },
    /// An order's state and, once carried out, the core's report.
    Order {
        #[command(flatten)]
        service: ServiceOptions,
        /// The order's number.
        #[arg(long)]
        id: u64,
    },
}

fn hex_key(s: &str, what: &str) -> Result<String> {
    let lower = s.trim().to_ascii_lowercase();
    anyhow::ensure!(
        lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()),
        "{what} must be 64 hex characters"
    );
    Ok(lower)
}

fn report(status: &pb::CoreOrderStatus) -> Value {
    serde_json::from_str(&status.result_json).unwrap_or(Value::Null)
}

fn print_status(s: &Value) {
    println!(
        "store {} ({} data key(s))",
        s["location"].as_str().unwrap_or("-"),
        s["data_keys"]
    );
    println!(
        "  {:<13} {:>8} {:>12} {:>6} {:>12}  {:<22} last batch",
        "table", "version", "rows", "files", "bytes", "applied through"
    );
    for t in s["tables"].as_array().into_iter().flatten() {
        println!(
            "  {:<13} {:>8} {:>12} {:>6} {:>12}  {:<22} {}",
            t["table"].as_str().unwrap_or("-"),
            t["version"],
            t["rows"],
            t["files"],
            t["bytes"],
            t["applied_through"].as_str().unwrap_or("-"),
            t["last_batch"].as_str().unwrap_or("-")
        );
    }
    if let Some(b) = s["bytes_on_disk"].as_u64() {
        println!("  {b} bytes on disk (encrypted)");
    }
}

pub fn run(cmd: StoreCommand, json: bool) -> Result<()> {
    use pb::core_operation_request::Operation;
    let rt = runtime()?;
    let (service, wait, operation) = match cmd {
        StoreCommand::Order { service, id } => {
            let status = rt.block_on(async {
                let mut policy = PolicyClient::connect(&service).await?;
                let request = policy.request(pb::CoreOrderRef { id })?;
                Ok::<_, anyhow::Error>(
                    policy
                        .client
                        .get_core_order(request)
                        .await
                        .map_err(refused)?
                        .into_inner(),
                )
            })?;
            let v = serde_json::json!({
                "order": status.id, "operation": status.operation, "state": status.state,
                "requested_by": status.requested_by, "reason": status.reason, "result": report(&status),
            });
            return emit(json, &v, |v| {
                println!(
                    "order {} ({}) by {}: {}{}",
                    v["order"],
                    v["operation"].as_str().unwrap_or("-"),
                    v["requested_by"].as_str().unwrap_or("-"),
                    v["state"].as_str().unwrap_or("-"),
                    v["reason"]
                        .as_str()
                        .filter(|r| !r.is_empty())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            });
        }
        StoreCommand::Status { service, wait } => (service, wait, Operation::Status(pb::Empty {})),
        StoreCommand::Compact { service, wait } => (service, wait, Operation::Compact(pb::Empty {})),
        StoreCommand::Erase {
            service,
            wait,
            linkage_keys,
            hospital_pseudonym,
            request_id,
        } => {
            let keys = linkage_keys
                .iter()
                .map(|k| hex_key(k, "--linkage-key"))
                .collect::<Result<Vec<_>>>()?;
            let pseudonym = hospital_pseudonym
                .as_deref()
                .map(|p| hex_key(p, "--hospital-pseudonym"))
                .transpose()?
                .unwrap_or_default();
            let erase = pb::EraseOperation {
                linkage_keys: keys,
                hospital_pseudonym: pseudonym,
                request_id,
            };
            (service, wait, Operation::Erase(erase))
        }
        StoreCommand::RotateKeys {
            service,
            wait,
            new_data_key,
        } => (
            service,
            wait,
            Operation::RotateKeys(pb::RotateKeysOperation { new_data_key }),
        ),
    };
    let status = rt.block_on(order(&service, &wait, operation, !json))?;
    if wait.wait_secs == 0 {
        return emit(
            json,
            &serde_json::json!({"order": status.id, "operation": status.operation, "state": status.state}),
            |v| {
                println!(
                    "order {} ({}) queued for the core",
                    v["order"],
                    v["operation"].as_str().unwrap_or("-")
                )
            },
        );
    }
    let r = report(&status);
    emit(json, &r, |r| match status.operation.as_str() {
        "status" => print_status(r),
        "compact" => {
            let tables = r["tables"].as_array().cloned().unwrap_or_default();
            if tables.is_empty() {
                println!("nothing to compact");
            }
            for t in tables {
                println!(
                    "{}: {} small files → {} file(s); {} replaced files deleted",
                    t["table"].as_str().unwrap_or("-"),
                    t["small_files"],
                    t["files_added"],
                    t["files_deleted"]
                );
            }
        }
        "erase" => {
            println!(
                "erased request {}: {} rows removed, {} files destroyed; certificate appended to {} (on the core)",
                r["request_id"].as_str().unwrap_or("-"),
                r["rows_removed"],
                r["files_destroyed"],
                r["certificate_log"].as_str().unwrap_or("-")
            );
            for t in r["tables"].as_array().into_iter().flatten() {
                println!(
                    "  {:<13} {:>8} rows {:>4} files",
                    t["table"].as_str().unwrap_or("-"),
                    t["rows_removed"],
                    t["files_destroyed"]
                );
            }
        }
        _ => println!(
            "key-encryption key now at version {}; {} data key(s) re-wrapped, no data rewritten{}",
            r["kek_version"],
            r["rewrapped"],
            r["new_data_key_id"]
                .as_u64()
                .map(|k| format!("; new objects use data key {k} from the core's next start"))
                .unwrap_or_default()
        ),
    })
}
