//! `tokumei demo`: the story so far, on loopback with development certificates and the local keyring — a workflow
//! of its own, outside the command line (which only parses its arguments). Every zone runs as a process of its own:
//! the gateway, the core's pull, and from chapter 3 the policy service, the core taking orders and the release
//! service. After the installer's bootstrap (`tokumei user bootstrap`, once, on the host, a process too) the demo
//! holds no key, no database and no store: it plays people at their desks, each with a session and the CA
//! ([`desk`]), and hospitals at theirs, each with its own certificate. One act reads the home's files with a zone's
//! key, as the host's administrator could: chapter 1 searches the spool for identifiers with the gateway zone's key,
//! after the gateway stopped, and forgets the key before the services start.
//!
//! Chapter 1 — hospitals push: three hospitals stream synthetic records over mutual TLS to the gateway (`tokumei
//! ingest serve`); it destroys a planted My Number, rejects bad records with reasons, pseudonymises the rest and
//! makes them durable before acknowledging; a resent batch is answered from the spool, a reused batch id is refused,
//! a certificate from another CA never gets in, and a patient's opt-out stops their next record.
//! Chapter 2 — the isolated core (`tokumei core run --until-drained`) pulls the spool into encrypted Delta tables,
//! filters the opt-out and erases.
//! Chapter 3 — the data-access committee, through the policy service: people enrol with TOTP (four eyes on
//! privileged grants), a locked account, an advertising application refused, an application reviewed with a recusal
//! and the quorum rule and approved with conditions and a DP budget, a non-recipient refused, a violation banning an
//! organisation; the signed hospital directory the gateway obeys.
//! Chapter 4 — statistics under that approval, asked by the researcher: each table checked against the platform's
//! rules and the approval, DP tables charged to the approval's budget, computed by the core as orders; a small-cell
//! table; a request over budget and one grouped by the linkage key refused before anything is computed.
//! Chapter 5 — an anonymised release: the core plans it for the chair, the operator builds it through the policy
//! service, the core and the release service, one fingerprinted, verified, signed copy per recipient, downloaded and
//! checked; the auditor has the attack re-measured. Chapter 6 — a leaked subset traced to its recipient by the
//! release service, the violation recorded, the leaker's next download refused; deletion declared.
//! Chapter 7 — transparency: the public registers, the regulator's report (the core's figures an order), the audit
//! ledger verified by the service, an exported inspection bundle verified and an edited copy caught.
//! Chapter 8 — the operator holds no key: `tokumei store status` and `store compact` from a desk holding the CA only
//! are orders the core carries out; the researcher's table and a second release asked with the `tokumei` command.
//! Chapter 9 — the remote analysis environment: an on-platform approval with pseudonymised detail, the researcher
//! certified, a query and a regression in her workspace, a disclosive output flagged by the automatic checks and
//! refused by the output checker, the fixed output approved, released signed and fetched.

#![warn(missing_docs)]

mod analysis;
pub mod committee;
mod console;
pub mod desk;
mod directory;
pub mod platform;
pub mod process;
mod release;
mod services;
mod statistics;

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
    /// Keep the platform and the web console running at the end, until Ctrl-C (to try the console in a browser).
    #[arg(long)]
    pub console: bool,
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
    /// Distinct patients of the research view (the core's plan of the file release): what the DP counts count.
    research_patients: u64,
    /// Rows of the research view's patient table (one per hospital record: distinct patients plus the rows merged).
    research_patient_rows: u64,
    /// Rows of the store's patient table as the core reports it to operators (opted-out patients' rows included).
    store_patient_rows: u64,
    erasure_certificates: Vec<tokumei_store::erasure::ErasureCertificate>,
    store_bytes_on_disk: u64,
    plaintext_parquet_files_on_disk: u64,
    committee: Option<crate::committee::CommitteeChapter>,
    directory: Option<crate::directory::DirectoryStep>,
    statistics: Option<crate::statistics::StatsChapter>,
    release: Option<crate::release::ReleaseChapter>,
    services: Option<crate::services::ServicesStep>,
    transparency: Option<crate::committee::TransparencyChapter>,
    analysis: Option<crate::analysis::AnalysisChapter>,
    console: Option<crate::console::ConsoleChapter>,
    regulator_core_figures: Option<tokumei_store::regulator::CoreFigures>,
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
    let keep_console = a.console;
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
        // Done with the spool: the gateway zone's key leaves this process before the services start.
        tokumei_spool::spool_seal::forget(&spool_dir);
        say("\n5. what crossed into the spool (what the core store will pull):");
        say(&format!(
            "   {} pseudonymised records, {} bytes; {} of {} sampled names, insured numbers, local ids and the My Number found in it",
            report.spool_records, report.spool_bytes, report.identifiers_found_in_spool, report.identifiers_checked
        ));
        say("\ntokumei demo — chapter 2: the isolated core pulls the spool into encrypted Delta tables");
        // The core is a process of its own (`tokumei core run --until-drained`): it pulls, applies and acknowledges,
        // and prints its totals; the demo reads them and looks at the store's files (sealed), never into them.
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
        say(&format!(
            "   pulled {} spool entries: {} records → {} rows in 6 tables in {:.1}s; {} opt-out(s), {} erasure(s); acknowledged through {}",
            totals.entries, totals.records, totals.rows, totals.seconds, totals.opt_outs, totals.erasures,
            totals.acknowledged_through.as_deref().unwrap_or("-")
        ));
        let store_dir = home.join("store");
        // The certificates the core wrote for the hospitals (no patient data in them).
        report.erasure_certificates = tokumei_store::erasure::certificates(&tokumei_platform::config::resolve(&home, &cfg.store.erasure_log))?;
        for c in &report.erasure_certificates {
            say(&format!(
                "   erasure certificate {}: {} rows removed, {} files destroyed, old table versions dropped ({})",
                c.request_id, c.rows_removed, c.files_destroyed, c.completed_at
            ));
        }
        report.store_bytes_on_disk = tokumei_store::status::dir_bytes(&store_dir);
        report.plaintext_parquet_files_on_disk = count_parquet_magic(&store_dir);
        say(&format!(
            "   {} bytes on disk, every object sealed with AES-256-GCM under data keys wrapped by the key service; plaintext Parquet files: {}",
            report.store_bytes_on_disk, report.plaintext_parquet_files_on_disk
        ));
        report.core = Some(totals);
        say("\ntokumei demo — chapter 3: the data-access committee");
        // The installer's one act on the host; from here on the demo is a client of the services, as people are.
        let administrators = crate::platform::bootstrap(&home)?;
        let mut platform = crate::platform::start_services(&home, &cfg, &pki)?;
        say(&format!(
            "   the policy service ({}), the core (taking orders, listening on nothing) and the release service ({}) start as processes of their own; every act below is a request to them from a person's desk",
            platform.desk.url, platform.release_url
        ));
        let (cast, committee) = crate::committee::chapter(&platform.desk, &administrators, &say).await?;
        report.committee = Some(committee);
        say("\n   the platform's directory decides which hospitals may still send:");
        report.directory = Some(crate::directory::step(&home, &cfg, &pki, &codes, &cast, &say).await?);
        say("\ntokumei demo — chapter 4: statistics under the approval: differential privacy (OpenDP) and the small-cell rule");
        report.statistics = Some(crate::statistics::chapter(&home, &cast, &say).await?);
        say("\ntokumei demo — chapter 5: an anonymised release, fingerprinted for each recipient");
        let release_service = crate::release::ReleaseService { url: &platform.release_url, home: &home };
        let released = crate::release::chapter(&release_service, &cast, &say).await?;
        if let Some(plan) = &released.plan {
            report.research_patients = plan.patients;
            report.research_patient_rows = plan.patients + plan.merged_patient_rows;
        }
        report.release = Some(released);
        say("\ntokumei demo — chapter 7: transparency and the audit ledger");
        let (transparency, figures) = crate::committee::closing(&home, &cast, &say).await?;
        report.transparency = Some(transparency);
        report.regulator_core_figures = Some(figures);
        // Last, as it compacts the tables the chapters above read.
        say("\ntokumei demo — chapter 8: the operator holds no key: core operations are orders the core takes");
        let file_application = report.release.as_ref().map(|r| r.application.clone());
        let services = crate::services::step(&platform, &home, &pki, &cast, file_application.as_deref(), &say).await?;
        report.store_patient_rows = services.patient_rows;
        say(&format!(
            "   the store's patient table holds {} rows (one per hospital record), the research view that builds and statistics read {} (the core's plan: {} patients, {} rows of patients seen at several hospitals merged): the opted-out patient's rows are filtered in one place",
            report.store_patient_rows,
            report.research_patient_rows,
            report.research_patients,
            report.research_patient_rows.saturating_sub(report.research_patients)
        ));
        report.services = Some(services);
        say("\ntokumei demo — chapter 9: the remote analysis environment: analyse where the data lie, take out only checked results");
        report.analysis = Some(crate::analysis::chapter(&cast, &say).await?);
        say("\ntokumei demo — chapter 10: the web console, in Japanese, for the people who are not command-line users");
        report.console = Some(crate::console::chapter(&mut platform, &home, &pki, &cast.chair, &say).await?);
        if keep_console {
            say("\n   the platform and the console keep running: Ctrl-C stops them");
            tokio::signal::ctrl_c().await?;
        }
        platform.stop()?;
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
