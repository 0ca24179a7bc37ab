//! `tokumei demo`: the story so far, on loopback with development certificates and the local keyring — a workflow
//! of its own, outside the command line (which only parses its arguments). The gateway, the core's pull, and in
//! chapter 8 the policy, core and release services run as processes of their own; chapters 2–7 still read the core
//! store and drive the policy façade inside the demo's process.
//!
//! Chapter 1 — hospitals push: three hospitals stream synthetic records over mutual TLS to the gateway, a process of
//! its own (`tokumei ingest serve`); it destroys
//! a planted My Number, rejects bad records with reasons, pseudonymises the rest and makes them durable before
//! acknowledging; a resent batch is answered from the spool, a reused batch id is refused, a certificate from
//! another CA never gets in, and a patient's opt-out stops their next record.
//! Chapter 2 — the isolated core (a process of its own, `tokumei core run --until-drained`) pulls the spool into
//! encrypted Delta tables, filters the opt-out and erases.
//! Chapter 3 — the data-access committee: people enrol with TOTP, a locked account, an advertising
//! application refused, an application reviewed with a recusal and the quorum rule and approved with
//! conditions and a DP budget, a non-recipient refused, a violation banning an organisation.
//! Chapter 4 — statistics under that approval: each table admitted against the conditions, DP tables charged
//! to the approval's budget in the ledger, a small-cell table, a request over budget refused before any noise.
//! Chapter 5 — an anonymised release: a file-channel approval built into one fingerprinted, verified, signed copy
//! per recipient, sealed in the release zone. Chapter 6 — a leaked subset traced to its recipient, the violation
//! recorded, the leaker refused; deletion declared. Chapter 7 — transparency: the public registers, the
//! regulator's report, the audit ledger verified and a tampered copy caught.

#![warn(missing_docs)]

pub mod committee;
mod directory;
pub mod local_policy;
pub mod process;
mod release;
mod services;
pub mod staff;

use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use tokumei_client::output::{emit, runtime};
use tokumei_keys::pki::{PkiLayout, init};
use tokumei_platform::client::status_reason;
use tokumei_platform::client::{HospitalCredentials, connect, push};
use tokumei_platform::config::Config;
use tokumei_platform::home::tokumei_home;
use tokumei_proto::ingest::v1::{PatientRecord, PatientRequest, RecordBatch};
use tokumei_synth::{Synth, hospital_codes};

/// Arguments of `tokumei demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Synthetic patients per hospital.
    #[arg(long, default_value_t = 2000)]
    pub patients: u64,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

#[derive(Serialize, Default)]
struct HospitalResult {
    hospital: String,
    sent: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct DemoReport {
    home: String,
    gateway: String,
    operator: String,
    hospitals: Vec<HospitalResult>,
    replayed_batch: Option<String>,
    reused_batch_id: Option<String>,
    foreign_ca: Option<String>,
    opt_out: Option<String>,
    record_after_opt_out: Option<String>,
    erase: Option<String>,
    spool_records: u64,
    spool_bytes: u64,
    identifiers_found_in_spool: u64,
    identifiers_checked: u64,
    core: Option<tokumei_store::core::CoreTotals>,
    research_patients: i64,
    operator_patients: i64,
    erasure_certificates: Vec<tokumei_store::erasure::ErasureCertificate>,
    store_bytes_on_disk: u64,
    plaintext_parquet_files_on_disk: u64,
    top_prefectures_by_conditions: Vec<(String, i64)>,
    committee: Option<crate::committee::CommitteeChapter>,
    directory: Option<crate::directory::DirectoryStep>,
    statistics: Option<StatsChapter>,
    release: Option<crate::release::ReleaseChapter>,
    services: Option<crate::services::ServicesStep>,
    transparency: Option<crate::committee::TransparencyChapter>,
    regulator_core_figures: Option<tokumei_store::regulator::CoreFigures>,
}

/// Chapter 3: statistics from the research view, under differential privacy or the small-cell rule.
#[derive(Serialize, Default)]
struct StatsChapter {
    project: String,
    budget_epsilon: f64,
    /// Patients per prefecture, Laplace, all 47 prefecture codes declared public.
    patients_by_prefecture: StatsSummary,
    /// Mean lab value per JLAC10 analyte, Gaussian noise, analytes chosen by DP partition selection.
    mean_lab_value_by_analyte: StatsSummary,
    /// Patients per prefecture × sex under the small-cell rule (not DP).
    small_cell_prefecture_by_sex: SmallCellDemo,
    /// The refusal of a request that would exceed the budget.
    refused_over_budget: String,
    /// The refusal of a request grouping by the linkage key (the platform's rule, whatever the approval lists).
    refused_linkage_key: String,
    ledger_entries: usize,
    spent_epsilon: f64,
    remaining_epsilon: f64,
}

#[derive(Serialize, Default)]
struct StatsSummary {
    output: String,
    cells: usize,
    protection: String,
    epsilon: f64,
    rho: f64,
    delta: f64,
    expected_abs_error: Option<f64>,
    sample: Vec<(Vec<String>, f64)>,
}

#[derive(Serialize, Default)]
struct SmallCellDemo {
    output: String,
    cells: usize,
    primary_suppressed: usize,
    complementary_suppressed: usize,
}

async fn count(ctx: &deltalake::datafusion::prelude::SessionContext, q: &str) -> anyhow::Result<i64> {
    use deltalake::arrow::array::Int64Array;
    let batches = ctx.sql(q).await?.collect().await?;
    Ok(batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0))
}

fn count_parquet_magic(dir: &Path) -> u64 {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_parquet_magic(&p);
        } else if std::fs::read(&p).is_ok_and(|b| b.starts_with(b"PAR1")) {
            n += 1;
        }
    }
    n
}

fn creds(pki: &PkiLayout, code: &str) -> HospitalCredentials {
    HospitalCredentials {
        ca: pki.ca_cert(),
        cert: pki.hospital_cert(code),
        key: pki.hospital_key(code),
    }
}

/// Records that a careful hospital system would never send, each with the reason it must get.
fn bad_records(synth: &Synth, code: &str) -> Vec<PatientRecord> {
    let base = |i: u64| synth.record(code, 900_000 + i);
    let mut my_number = base(0);
    my_number.local_patient_id = "123456789018".into(); // passes the My Number check digit
    let mut bad_icd = base(1);
    if let Some(c) = bad_icd.conditions.first_mut() {
        c.icd10 = "E1".into();
    } else {
        bad_icd.conditions.push(tokumei_proto::ingest::v1::Condition {
            icd10: "E1".into(),
            ..Default::default()
        });
    }
    let mut future = base(2);
    future.birth_date = "2099-01-01".into();
    let mut no_identity = base(3);
    no_identity.insurance = None;
    no_identity.kana_name.clear();
    vec![my_number, bad_icd, future, no_identity]
}

fn planted_identifiers(records: &[PatientRecord]) -> Vec<String> {
    let mut out = Vec::new();
    for r in records {
        if r.kana_name.chars().count() >= 4 {
            out.push(r.kana_name.clone());
        }
        if let Some(i) = &r.insurance
            && i.number.len() >= 6
        {
            out.push(format!("{}{}", i.insurer_number, i.number));
        }
        if r.local_patient_id.len() >= 6 {
            out.push(r.local_patient_id.clone());
        }
    }
    out.push("123456789018".into());
    out
}

fn count_in_spool(dir: &Path, needles: &[String]) -> anyhow::Result<u64> {
    let mut hay = Vec::new();
    for e in std::fs::read_dir(dir)? {
        hay.extend(std::fs::read(e?.path())?);
    }
    // The files are sealed, so their bytes alone prove little: the entries as unsealed are searched too.
    tokumei_spool::spool::read_all(dir, |_, e| hay.extend(prost::Message::encode_to_vec(&e)))?;
    // One pass over the spool for all needles.
    let ac = aho_corasick::AhoCorasick::new(needles)?;
    let found: std::collections::BTreeSet<usize> =
        ac.find_overlapping_iter(&hay).map(|m| m.pattern().as_usize()).collect();
    Ok(found.len() as u64)
}

/// Runs the demo in a fresh `$TOKUMEI_HOME/demo`, telling the story (or, with `json`, printing only the report).
pub fn run(a: DemoArgs, json: bool) -> anyhow::Result<()> {
    let home = tokumei_home().join("demo");
    if home.exists() {
        std::fs::remove_dir_all(&home)?;
    }
    std::fs::create_dir_all(&home)?;
    let say = |s: &str| {
        if !json {
            println!("{s}");
        }
    };
    let codes = hospital_codes(3);
    let pki = PkiLayout::new(home.join("pki"));
    init(&pki, &codes, &["localhost".into()])?;
    let foreign = PkiLayout::new(home.join("foreign-pki"));
    init(&foreign, &codes[..1], &[])?;
    let mut cfg = Config::default();
    cfg.gateway.listen = "127.0.0.1:0".parse()?;
    cfg.gateway.operator_listen = "127.0.0.1:0".parse()?;
    let synth = Synth::new(a.seed);
    let mut report = DemoReport {
        home: home.display().to_string(),
        ..Default::default()
    };
    let rt = runtime()?;
    rt.block_on(async {
        let gw = crate::process::gateway(&home, &cfg, "gateway.toml")?;
        let endpoint = format!("https://{}", gw.addr);
        report.gateway = endpoint.clone();
        report.operator = format!("http://{}/metrics", gw.operator_addr);
        say("tokumei demo — chapter 1: hospitals push records to the gateway");
        say(&format!("  state in {} (development PKI, local keyring, spool)", home.display()));
        say(&format!("  gateway {endpoint} (TLS 1.3, client certificates required), metrics {}", report.operator));

        // Three hospitals push concurrently.
        let mut tasks = Vec::new();
        let mut sent_identifiers = Vec::new();
        let mut first_batch_of_a = None;
        for code in &codes {
            let mut records = synth.records(code, 0, a.patients);
            records.extend(bad_records(&synth, code));
            sent_identifiers.extend(planted_identifiers(&records[..records.len().min(200)]));
            let batches: Vec<RecordBatch> = records
                .chunks(500)
                .enumerate()
                .map(|(i, c)| RecordBatch { batch_id: format!("demo-{i:04}"), records: c.to_vec() })
                .collect();
            if first_batch_of_a.is_none() {
                first_batch_of_a = batches.first().cloned();
            }
            let creds = creds(&pki, code);
            let endpoint = endpoint.clone();
            let code = code.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = connect(&endpoint, &creds, 16 << 20).await?;
                let sent = batches.iter().map(|b| b.records.len() as u64).sum();
                let receipt = push(&mut client, batches).await?;
                let mut r = HospitalResult { hospital: code, sent, accepted: receipt.accepted, ..Default::default() };
                for rej in receipt.rejected_by_reason {
                    *r.rejected.entry(rej.reason).or_default() += rej.count;
                }
                anyhow::Ok(r)
            }));
        }
        for t in tasks {
            report.hospitals.push(t.await??);
        }
        say("\n1. three hospitals pushed over mutual TLS; receipts came back after the spool's fsync:");
        for h in &report.hospitals {
            let rej: Vec<String> = h.rejected.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            say(&format!("   {}  sent {:>6}  accepted {:>6}  rejected: {}", h.hospital, h.sent, h.accepted, rej.join(", ")));
        }

        // Idempotency: the same batch again, and a reused id with different content.
        let a_code = &codes[0];
        let mut client = connect(&endpoint, &creds(&pki, a_code), 16 << 20).await?;
        let first = first_batch_of_a.clone().unwrap_or_default();
        let receipt = push(&mut client, vec![first]).await?;
        report.replayed_batch = Some(format!(
            "batch demo-0000 sent again: replayed={} accepted={} (nothing stored twice)",
            receipt.batches.first().is_some_and(|b| b.replayed),
            receipt.accepted
        ));
        let other = synth.records(a_code, 50_000, 3);
        let reused = push(&mut client, vec![RecordBatch { batch_id: "demo-0000".into(), records: other }]).await;
        report.reused_batch_id = Some(match reused {
            Err(tokumei_platform::client::ClientError::Status(s)) => {
                format!("batch id demo-0000 reused for other content: {:?} {}", s.code(), status_reason(&s).unwrap_or_default())
            }
            Ok(_) => "UNEXPECTED: reused batch id was accepted".into(),
            Err(e) => format!("UNEXPECTED: {e}"),
        });
        say("\n2. idempotency:");
        say(&format!("   {}", report.replayed_batch.as_deref().unwrap_or_default()));
        say(&format!("   {}", report.reused_batch_id.as_deref().unwrap_or_default()));

        // A certificate for hospital A's code, but from another CA.
        let foreign_creds = HospitalCredentials { ca: pki.ca_cert(), cert: foreign.hospital_cert(a_code), key: foreign.hospital_key(a_code) };
        let attempt = async {
            let mut c = connect(&endpoint, &foreign_creds, 1 << 20).await?;
            push(&mut c, vec![RecordBatch { batch_id: "intruder".into(), records: synth.records(a_code, 0, 1) }]).await
        };
        report.foreign_ca = Some(match attempt.await {
            Ok(_) => "UNEXPECTED: a certificate from another CA was accepted".into(),
            Err(_) => format!("a certificate naming {a_code} but signed by another CA was refused at the TLS handshake"),
        });
        say("\n3. identity comes from the certificate:");
        say(&format!("   {}", report.foreign_ca.as_deref().unwrap_or_default()));

        // Opt-out (提供停止) then a new record for that patient; erasure (破棄) of another.
        let c_code = &codes[2];
        let mut client_c = connect(&endpoint, &creds(&pki, c_code), 16 << 20).await?;
        let patient = synth.record(c_code, 7);
        let req = PatientRequest {
            request_id: "demo-optout-1".into(),
            insurance: patient.insurance.clone(),
            kana_name: patient.kana_name.clone(),
            birth_date: patient.birth_date.clone(),
            sex: patient.sex,
            local_patient_id: patient.local_patient_id.clone(),
        };
        let r = client_c.opt_out(req).await?.into_inner();
        report.opt_out = Some(format!("opt-out {} {} (matched by {})", r.request_id, r.status, r.matched_by));
        let mut again = patient.clone();
        again.encounters.clear();
        let receipt = push(&mut client_c, vec![RecordBatch { batch_id: "demo-after-optout".into(), records: vec![again] }]).await?;
        report.record_after_opt_out = Some(format!(
            "new record for that patient: accepted {}, rejected {}",
            receipt.accepted,
            receipt.rejected.iter().map(|r| r.reason.clone()).collect::<Vec<_>>().join(",")
        ));
        let erased = synth.record(c_code, 8);
        let r = client_c
            .erase(PatientRequest {
                request_id: "demo-erase-1".into(),
                insurance: erased.insurance.clone(),
                local_patient_id: erased.local_patient_id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        report.erase = Some(format!("erase {} {} (matched by {}); the core store acts on it", r.request_id, r.status, r.matched_by));
        say("\n4. patients' rights:");
        for s in [&report.opt_out, &report.record_after_opt_out, &report.erase].into_iter().flatten() {
            say(&format!("   {s}"));
        }
        gw.stop()?;
        let spool_dir = home.join("spool");
        // The spool is sealed at rest by the gateway's process: this one reads it as a same-host core would.
        tokumei_spool::spool_feed::unlock_local_spool(&cfg, &home, &spool_dir).await?;
        let status = tokumei_spool::status::status(&spool_dir)?;
        report.spool_records = status.records;
        report.spool_bytes = status.bytes;
        report.identifiers_checked = sent_identifiers.len() as u64;
        report.identifiers_found_in_spool = count_in_spool(&spool_dir, &sent_identifiers)?;
        say("\n5. what crossed into the spool (what the core store will pull):");
        say(&format!(
            "   {} pseudonymised records, {} bytes; {} of {} sampled names, insured numbers, local ids and the My Number found in it",
            report.spool_records, report.spool_bytes, report.identifiers_found_in_spool, report.identifiers_checked
        ));
        say("\ntokumei demo — chapter 2: the isolated core pulls the spool into encrypted Delta tables");
        // The core is a process of its own (`tokumei core run --until-drained`): it pulls, applies and acknowledges,
        // and prints its totals. The demo then reads the store, as the chapters that follow need.
        let core_toml = home.join("core.toml");
        std::fs::write(&core_toml, toml::to_string(&cfg)?)?;
        let printed = crate::process::run_to_end(
            &home,
            &["--json", "core", "run", "--config", &core_toml.display().to_string(), "--until-drained"],
        )?;
        let totals: tokumei_store::core::CoreTotals = printed
            .find('{')
            .and_then(|at| serde_json::from_str(&printed[at..]).ok())
            .ok_or_else(|| anyhow::anyhow!("the core printed no totals"))?;
        let core_keys = tokumei_keys::open_configured(&cfg, &home, tokumei_keys::KeyZone::Core).await?;
        let store = std::sync::Arc::new(tokumei_store::Store::open(&cfg.store, &home, core_keys.as_ref()).await?);
        say(&format!(
            "   pulled {} spool entries: {} records → {} rows in 6 tables in {:.1}s; {} opt-out(s), {} erasure(s); acknowledged through {}",
            totals.entries, totals.records, totals.rows, totals.seconds, totals.opt_outs, totals.erasures,
            totals.acknowledged_through.as_deref().unwrap_or("-")
        ));
        let research_view = store.research_session().await?;
        let research = research_view.context();
        let operator = store.operator_session().await?;
        report.research_patients = count(research, "SELECT count(*) FROM patients").await?;
        report.operator_patients = count(operator.context(), "SELECT count(*) FROM patients").await?;
        say(&format!(
            "   patients visible to anonymisation and release: {} (operators see {}: the opted-out patient is filtered in one place)",
            report.research_patients, report.operator_patients
        ));
        report.erasure_certificates = tokumei_store::erasure::certificates(&store.erasure_log_path())?;
        for c in &report.erasure_certificates {
            say(&format!(
                "   erasure certificate {}: {} rows removed, {} files destroyed, old table versions dropped ({})",
                c.request_id, c.rows_removed, c.files_destroyed, c.completed_at
            ));
        }
        let batches = research
            .sql("SELECT p.prefecture, count(*) AS n FROM conditions c JOIN patients p ON c.hospital_pseudonym = p.hospital_pseudonym AND c.batch_id = p.batch_id GROUP BY p.prefecture ORDER BY n DESC, p.prefecture LIMIT 5")
            .await?
            .collect()
            .await?;
        for b in &batches {
            let b = deltalake::arrow::compute::cast(b.column(0), &deltalake::arrow::datatypes::DataType::Utf8)
                .map(|pref| (pref, b.column(1).clone()));
            if let Ok((pref, n)) = b {
                let pref = pref.as_any().downcast_ref::<deltalake::arrow::array::StringArray>().cloned();
                let n = n.as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().cloned();
                if let (Some(pref), Some(n)) = (pref, n) {
                    for i in 0..deltalake::arrow::array::Array::len(&pref) {
                        report.top_prefectures_by_conditions.push((pref.value(i).to_string(), n.value(i)));
                    }
                }
            }
        }
        say(&format!("   diagnoses by prefecture code (DataFusion over the research view): {:?}", report.top_prefectures_by_conditions));
        let store_dir = home.join("store");
        report.store_bytes_on_disk = tokumei_store::status::dir_bytes(&store_dir);
        report.plaintext_parquet_files_on_disk = count_parquet_magic(&store_dir);
        say(&format!(
            "   {} bytes on disk, every object sealed with AES-256-GCM under data keys wrapped by the key service; plaintext Parquet files: {}",
            report.store_bytes_on_disk, report.plaintext_parquet_files_on_disk
        ));
        report.core = Some(totals);
        say("\ntokumei demo — chapter 3: the data-access committee");
        let (cast, committee) = crate::committee::chapter(&home, &say).await?;
        report.committee = Some(committee);
        say("\n   the platform's directory decides which hospitals may still send:");
        report.directory = Some(crate::directory::step(&home, &cfg, &pki, &codes, &cast, &say).await?);
        say("\ntokumei demo — chapter 4: statistics under the approval: differential privacy (OpenDP) and the small-cell rule");
        let patients = tokumei_catalogue::statistics::Population {
            name: format!("store:{}", store.research_snapshot(tokumei_store::Table::Patients).await?),
            source: "patients".into(),
        };
        report.statistics = Some(statistics_chapter(&home, &cast, (&research_view, &patients), &say).await?);
        say("\ntokumei demo — chapter 5: an anonymised release, fingerprinted for each recipient");
        let keys = tokumei_keys::open_configured(&cfg, &home, tokumei_keys::KeyZone::Release).await?;
        // The core's half reads and pseudonymises under the core zone's keys; the release zone's wraps its own.
        let core_keys = tokumei_keys::open_configured(&cfg, &home, tokumei_keys::KeyZone::Core).await?;
        let zones = crate::release::ZoneKeys { release: keys, core: core_keys };
        report.release = Some(crate::release::chapter(&home, zones, &cast, &store, &say).await?);
        say("\ntokumei demo — chapter 7: transparency and the audit ledger");
        report.transparency = Some(crate::committee::closing(&home, &cast, &say).await?);
        let period = tokumei_policy::transparency::current_quarter(chrono::Utc::now());
        let (from, to) = tokumei_policy::transparency::quarter(&period).map_err(tokumei_client::reason)?;
        let figures = tokumei_store::regulator::figures(&store, from, to).await?;
        say(&format!(
            "   the report's core figures for {period}: {} hospitals provided {} patient records ({} clinical rows); {} opt-out(s), {} erasure request(s), {} erasure(s) completed",
            figures.hospitals_providing,
            figures.patient_records_received,
            figures.clinical_rows_received,
            figures.opt_outs_handled,
            figures.erasure_requests_handled,
            figures.erasures_completed
        ));
        report.regulator_core_figures = Some(figures);
        // Last, as it compacts the tables the chapters above read.
        say("\ntokumei demo — chapter 8: the operator holds no key: core operations are orders the core takes");
        let file_application = report.release.as_ref().map(|r| r.application.clone());
        report.services =
            Some(crate::services::step(&home, &cfg, &pki, &cast, file_application.as_deref(), &say).await?);
        anyhow::Ok(())
    })?;
    if report.identifiers_found_in_spool > 0 {
        anyhow::bail!(
            "{} identifiers were found in the spool",
            report.identifiers_found_in_spool
        );
    }
    if report.plaintext_parquet_files_on_disk > 0 {
        anyhow::bail!(
            "{} unencrypted Parquet files under the store",
            report.plaintext_parquet_files_on_disk
        );
    }
    emit(json, &report, |_| {})
}

async fn statistics_chapter(
    home: &Path,
    cast: &crate::committee::Committee,
    (research_view, patients_population): (
        &tokumei_store::ResearchSession,
        &tokumei_catalogue::statistics::Population,
    ),
    say: &impl Fn(&str),
) -> anyhow::Result<StatsChapter> {
    let research = research_view.context();
    use tokumei_deid::dp::{grouping::group, request::*};
    let project = cast.application.clone();
    let demo = tokumei_policy::Origin("demo");
    let budget = cast
        .policy
        .budget_status(&cast.researcher, &project, demo)
        .await
        .map_err(tokumei_client::reason)?
        .project
        .budget;
    say(&format!(
        "   the approval of {project} gave it a budget of ε={}, δ={:e} in the ledger; every table is first admitted against the approval's conditions",
        budget.epsilon, budget.delta
    ));
    let out_dir = home.join("statistics");
    let mut chapter = StatsChapter {
        project: project.clone(),
        budget_epsilon: budget.epsilon,
        ..Default::default()
    };

    // 1. Patients per prefecture: 47 public keys, one row per patient, Laplace at ε = 0.5.
    let by_prefecture = StatsRequest {
        group_by: vec!["prefecture".into()],
        generalise: vec![],
        measure: Measure::Count,
        subject: Some("linkage_key".into()),
        max_contrib: 1,
        privacy: Privacy::Epsilon(0.5),
        delta: None,
        // The 47 prefecture codes, from the platform catalogue (never from the data).
        keys: Keys::Public(
            tokumei_store::catalogue::public_keys(tokumei_store::Table::Patients, "prefecture", 0)
                .unwrap_or_default()
                .into_iter()
                .map(|p| vec![p])
                .collect(),
        ),
    };
    let patients =
        tokumei_deid::datafusion::table_from_context(research, "patients", &["prefecture", "linkage_key"]).await?;
    chapter.patients_by_prefecture = dp_release(
        cast,
        &project,
        &by_prefecture,
        &patients,
        &out_dir.join("patients_by_prefecture.csv"),
    )
    .await?;
    let s = &chapter.patients_by_prefecture;
    say(&format!(
        "   patients by prefecture, ε=0.5 Laplace, all 47 prefectures declared: {} cells, expected |error| {:.2} per cell; e.g. {:?}",
        s.cells,
        s.expected_abs_error.unwrap_or_default(),
        &s.sample[..s.sample.len().min(3)]
    ));

    // 2. Mean lab value per analyte: keys by DP partition selection, ≤ 5 results per patient, zCDP.
    let request = StatsRequest {
        group_by: vec!["jlac10".into()],
        generalise: vec![],
        measure: Measure::Mean {
            column: "value".into(),
            bounds: Bounds::new(0.0, 500.0)?,
        },
        subject: Some("linkage_key".into()),
        max_contrib: 5,
        privacy: Privacy::Rho(0.005),
        delta: Some(1e-6),
        keys: Keys::Select,
    };
    let labs =
        tokumei_deid::datafusion::table_from_context(research, "observations", &["jlac10", "value", "linkage_key"])
            .await?;
    chapter.mean_lab_value_by_analyte = dp_release(
        cast,
        &project,
        &request,
        &labs,
        &out_dir.join("mean_lab_value_by_analyte.csv"),
    )
    .await?;
    let s = &chapter.mean_lab_value_by_analyte;
    say(&format!(
        "   mean lab value by JLAC10 analyte, ρ=0.005 Gaussian, ≤5 results per patient, analytes chosen by DP partition selection: {} released ({})",
        s.cells, s.protection
    ));

    // 3. The national databases' rule, for a table published without DP.
    let request = StatsRequest {
        group_by: vec!["prefecture".into(), "sex".into()],
        generalise: vec![],
        measure: Measure::Count,
        subject: None,
        max_contrib: 1,
        privacy: Privacy::Epsilon(f64::INFINITY),
        delta: None,
        keys: Keys::Select,
    };
    let by_sex = tokumei_deid::datafusion::table_from_context(research, "patients", &["prefecture", "sex"]).await?;
    let grouped = group(&by_sex, &request)?;
    let (counts, dims) = tokumei_deid::published_table::count_table(&grouped)?;
    let rule = tokumei_deid::small_cell::SmallCellRule::default();
    let protected = tokumei_deid::small_cell::protect(&counts, &rule)?;
    let (primary, complementary) = protected.suppressed_count();
    let path = out_dir.join("patients_by_prefecture_and_sex.csv");
    let protection = format!(
        "small-cell: counts below {} suppressed, plus complementary suppression",
        rule.threshold
    );
    admit(cast, &["prefecture", "sex"], &request.group_by, Some(rule.threshold)).await?;
    let linked = tokumei_deid::published_table::linked_table(&grouped, &protected)?;
    cast.policy
        .publish_small_cell_table(
            &cast.researcher,
            &project,
            "patients by prefecture × sex (demo)",
            &rule,
            &linked,
            patients_population,
            demo,
        )
        .await
        .map_err(tokumei_client::reason)?;
    let bytes = tokumei_deid::published_table::small_cell_csv(&grouped, &protected, dims, &protection)?;
    tokumei_client::output::write_atomically(&path, &bytes)?;
    cast.policy
        .record_provision(
            &cast.researcher,
            &project,
            "patients by prefecture × sex (small-cell rule)",
            i64::try_from(protected.refs().len()).unwrap_or(i64::MAX),
            tokumei_policy::Origin("demo"),
        )
        .await
        .map_err(tokumei_client::reason)?;
    chapter.small_cell_prefecture_by_sex = SmallCellDemo {
        output: path.display().to_string(),
        cells: protected.refs().len(),
        primary_suppressed: primary,
        complementary_suppressed: complementary,
    };
    say(&format!(
        "   patients by prefecture × sex without DP (minimum cell 10): {primary} small cells suppressed, {complementary} more so none can be recomputed from the totals"
    ));

    // 4. The same request once more: over budget, refused before any noise is drawn.
    match dp_release(cast, &project, &by_prefecture, &patients, &out_dir.join("refused.csv")).await {
        Ok(_) => anyhow::bail!("a request over budget was admitted"),
        Err(e) => chapter.refused_over_budget = format!("{e:#}"),
    }
    say(&format!("   another ε=0.5 request: {}", chapter.refused_over_budget));

    // 5. Every patient's sex under the core's linkage key, with a minimum cell of 1: refused by the platform's
    // rules before the approval is even consulted, and audited.
    let linkage = StatsRequest {
        group_by: vec!["sex".into(), "linkage_key".into()],
        ..by_prefecture.clone()
    };
    let rules = tokumei_catalogue::statistics::StatsRules {
        table: Some(tokumei_store::Table::Patients),
        from_store: true,
        subject_given: None,
        request: &linkage,
        small_cell_threshold: None,
    };
    match tokumei_catalogue::statistics::check(&rules) {
        Ok(()) => anyhow::bail!("a table grouped by the linkage key was admitted"),
        Err(refusal) => {
            chapter.refused_linkage_key = refusal.to_string();
            cast.policy
                .refuse_statistics(
                    &cast.researcher.username,
                    &project,
                    refusal,
                    tokumei_policy::Origin("demo"),
                )
                .await;
        }
    }
    say(&format!(
        "   sato asks for patients by sex × linkage_key: {} (audited)",
        chapter.refused_linkage_key
    ));
    let status = cast
        .policy
        .budget_status(&cast.researcher, &project, demo)
        .await
        .map_err(tokumei_client::reason)?;
    chapter.ledger_entries = status.entries.len();
    chapter.spent_epsilon = status.spent.epsilon;
    chapter.remaining_epsilon = status.spent.remaining_epsilon(&budget);
    say(&format!(
        "   ledger: {} releases, spent ε={:.4} of 1 (pure ε + ρ converted once at δ), remaining ε={:.4}",
        chapter.ledger_entries, chapter.spent_epsilon, chapter.remaining_epsilon
    ));
    Ok(chapter)
}

/// Checks a statistics use of `columns` against the approval (as the researcher), audited.
/// Admits a statistics request against the approval's conditions and then the committee's statistics rules
/// (mechanism, groupings), as `tokumei stats` does.
async fn admit(
    cast: &crate::committee::Committee,
    columns: &[&str],
    group_by: &[String],
    small_cell: Option<u64>,
) -> anyhow::Result<()> {
    let table = if columns.contains(&"jlac10") {
        "observations"
    } else {
        "patients"
    };
    let tables = [tokumei_policy::committee::TableRequest {
        table: table.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
    }];
    let approved = cast
        .policy
        .admit_use(
            &cast.researcher,
            &cast.application,
            tokumei_policy::committee::UseKind::Statistics,
            &tables,
            tokumei_policy::Origin("demo"),
        )
        .await
        .map_err(tokumei_client::reason)?;
    let rules = approved.conditions.map(|c| c.statistics).unwrap_or_default();
    rules
        .check(
            &cast.application,
            &tokumei_policy::committee::StatisticsUse {
                table,
                group_by,
                small_cell,
            },
        )
        .map_err(tokumei_client::reason)?;
    Ok(())
}

/// Admit against the approval → plan → charge the ledger → draw → write → record the provision: the same
/// order as `tokumei stats`.
async fn dp_release(
    cast: &crate::committee::Committee,
    project: &str,
    request: &tokumei_deid::dp::request::StatsRequest,
    table: &tokumei_deid::table::Table,
    output: &Path,
) -> anyhow::Result<StatsSummary> {
    let mut columns: Vec<&str> = request.group_by.iter().map(String::as_str).collect();
    if let Some(c) = request.measure.column() {
        columns.push(c);
    }
    if let Some(s) = request.subject.as_deref() {
        columns.push(s);
    }
    admit(cast, &columns, &request.group_by, None).await?;
    let grouped = tokumei_deid::dp::grouping::group(table, request)?;
    let query = format!("{} by {} (demo)", request.measure.name(), request.group_by.join(","));
    // Planned and paid by the façade, as the policy service does for a table over the store.
    let (plan, _) = cast
        .policy
        .spend_statistics(
            &cast.researcher,
            project,
            &query,
            request,
            tokumei_policy::Origin("demo"),
        )
        .await
        .map_err(tokumei_client::reason)?;
    let table = tokumei_deid::dp::release::release(&plan, request, &grouped)?;
    let bytes = tokumei_deid::published_table::private_table_csv(&table, None)?;
    tokumei_client::output::write_atomically(output, &bytes)?;
    cast.policy
        .record_provision(
            &cast.researcher,
            project,
            &query,
            i64::try_from(table.cells.len()).unwrap_or(i64::MAX),
            tokumei_policy::Origin("demo"),
        )
        .await
        .map_err(tokumei_client::reason)?;
    Ok(StatsSummary {
        output: output.display().to_string(),
        cells: table.cells.len(),
        protection: table.protection.clone(),
        epsilon: plan.loss.epsilon,
        rho: plan.loss.rho,
        delta: plan.loss.delta,
        expected_abs_error: table.cells.first().and_then(|c| c.expected_abs_error),
        sample: table.cells.iter().take(5).map(|c| (c.key.clone(), c.value)).collect(),
    })
}
