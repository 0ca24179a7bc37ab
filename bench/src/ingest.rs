//! `tokumei bench ingest`: synthetic records over mTLS on loopback with durable receipts.
//!
//! The gateway runs as a child process (`tokumei ingest serve`) so that its peak RSS is measured alone; this
//! process pre-generates the records and drives concurrent push streams of one batch each, so each stream's
//! receipt latency is one batch's time to durability.

use anyhow::Context;

use crate::host::{machine, peak_rss_mib};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tokumei_client::output::{emit, runtime};
use tokumei_keys::pki::{PkiLayout, init};
use tokumei_platform::client::{HospitalCredentials, connect, push};
use tokumei_platform::home::tokumei_home;
use tokumei_proto::ingest::v1::RecordBatch;
use tokumei_synth::{Synth, hospital_codes};

/// Arguments of `tokumei bench ingest`.
#[derive(Args, Debug)]
pub struct IngestBench {
    /// Records pushed per batch size.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub batch_sizes: Vec<usize>,
    /// Concurrent push streams (4: the load at which docs/benchmarks.md checks the p99 target).
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
}

#[derive(Serialize)]
struct Row {
    batch_size: usize,
    records: u64,
    seconds: f64,
    records_per_second: f64,
    receipt_p50_ms: f64,
    receipt_p99_ms: f64,
    receipt_max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    streams: usize,
    rows: Vec<Row>,
    gateway_peak_rss_mib: f64,
    record_bytes_avg: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the ingest benchmark and prints its report.
pub fn run(a: IngestBench, json: bool) -> anyhow::Result<()> {
    let home = tokumei_home().join("bench-ingest");
    if home.exists() {
        std::fs::remove_dir_all(&home)?;
    }
    std::fs::create_dir_all(&home)?;
    let code = hospital_codes(1).into_iter().next().context("hospital code")?;
    let pki = PkiLayout::new(home.join("pki"));
    init(&pki, std::slice::from_ref(&code), &["localhost".into()])?;
    let mut config = tokumei_platform::config::Config::default();
    config.gateway.listen = "127.0.0.1:0".parse()?;
    config.gateway.operator_listen = "127.0.0.1:0".parse()?;
    config.gateway.records_per_second = 10_000_000;
    let gateway = tokumei_demo::process::gateway(&home, &config, "tokumei.toml")?;
    let (addr, pid) = (gateway.addr, gateway.pid());
    let endpoint = format!("https://{addr}");
    let creds = HospitalCredentials {
        ca: pki.ca_cert(),
        cert: pki.hospital_cert(&code),
        key: pki.hospital_key(&code),
    };

    if !json {
        eprintln!("generating {} synthetic records…", a.records);
    }
    let records = Synth::new(7).records(&code, 0, a.records);
    let record_bytes_avg = records
        .iter()
        .map(|r| prost::Message::encoded_len(r) as f64)
        .sum::<f64>()
        / records.len().max(1) as f64;
    let records = Arc::new(records);
    let mut rows = Vec::new();
    let rt = runtime()?;
    for &size in &a.batch_sizes {
        let batches: Vec<RecordBatch> = records
            .chunks(size.max(1))
            .enumerate()
            .map(|(i, c)| RecordBatch {
                batch_id: format!("bench-{size}-{i:07}"),
                records: c.to_vec(),
            })
            .collect();
        let n_batches = batches.len();
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(a.records)
        };
        bar.set_style(ProgressStyle::with_template(&format!(
            "batch {size:>6} {{bar:40}} {{pos}}/{{len}} {{per_sec}}"
        ))?);
        let queue = Arc::new(std::sync::Mutex::new(batches));
        let (seconds, mut latencies) = rt.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..a.streams.max(1) {
                clients.push(connect(&endpoint, &creds, 64 << 20).await?);
            }
            let started = Instant::now();
            let mut tasks = Vec::new();
            for mut client in clients {
                let queue = queue.clone();
                let bar = bar.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let next = queue.lock().map_err(|_| anyhow::anyhow!("queue poisoned"))?.pop();
                        let Some(batch) = next else { break };
                        let n = batch.records.len() as u64;
                        let t = Instant::now();
                        let receipt = push(&mut client, vec![batch]).await?;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        anyhow::ensure!(receipt.accepted == n, "only {} of {n} accepted", receipt.accepted);
                        bar.inc(n);
                    }
                    anyhow::Ok(lat)
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            anyhow::Ok((started.elapsed().as_secs_f64(), all))
        })?;
        bar.finish_and_clear();
        anyhow::ensure!(latencies.len() == n_batches, "lost receipts");
        latencies.sort_by(f64::total_cmp);
        rows.push(Row {
            batch_size: size,
            records: a.records,
            seconds,
            records_per_second: a.records as f64 / seconds,
            receipt_p50_ms: percentile(&latencies, 0.50),
            receipt_p99_ms: percentile(&latencies, 0.99),
            receipt_max_ms: latencies.last().copied().unwrap_or(0.0),
        });
    }
    let rss = peak_rss_mib(Some(pid));
    gateway.stop()?;
    let report = Report {
        machine: machine(),
        streams: a.streams,
        rows,
        gateway_peak_rss_mib: rss,
        record_bytes_avg,
    };
    emit(json, &report, |r| {
        println!(
            "ingest benchmark — {} ({} concurrent streams, {:.0} bytes/record on the wire)",
            r.machine, r.streams, r.record_bytes_avg
        );
        println!(
            "{:>8} {:>10} {:>12} {:>10} {:>10} {:>10}",
            "batch", "records", "records/s", "p50 ms", "p99 ms", "max ms"
        );
        for row in &r.rows {
            println!(
                "{:>8} {:>10} {:>12.0} {:>10.2} {:>10.2} {:>10.2}",
                row.batch_size,
                row.records,
                row.records_per_second,
                row.receipt_p50_ms,
                row.receipt_p99_ms,
                row.receipt_max_ms
            );
        }
        println!("gateway peak RSS {:.1} MiB", r.gateway_peak_rss_mib);
    })
}
