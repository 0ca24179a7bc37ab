//! The gateway over real mutual TLS on 127.0.0.1: identity, validation, idempotency, limits, patients' rights.

mod common;

use common::*;
use std::sync::Arc;
use tokumei_ingest::client::{ClientError, HospitalCredentials, connect, push};
use tokumei_ingest::gateway::status_reason;
use tokumei_proto::ingest::v1::*;
use tonic::Code;

fn batch(id: &str, records: Vec<PatientRecord>) -> RecordBatch {
    RecordBatch {
        batch_id: id.into(),
        records,
    }
}

fn status_of(r: Result<PushReceipt, ClientError>) -> tonic::Status {
    match r {
        Err(ClientError::Status(s)) => s,
        Err(e) => panic!("expected a gRPC status, got {e}"),
        Ok(r) => panic!("expected an error, got a receipt accepting {}", r.accepted),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_decide_identity() {
    let home = Home::new();
    let gw = home.start();

    // No client certificate: the handshake or the first call fails.
    let no_cert = async {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(home.pki.ca_cert()).unwrap(),
        ));
        let ch = tonic::transport::Endpoint::from_shared(gw.endpoint())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await?;
        let mut c = ingest_service_client::IngestServiceClient::new(ch);
        c.push(tokio_stream::iter(vec![batch("x", vec![valid_record("L1")])]))
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(no_cert.await.is_err(), "a client without a certificate got through");

    // A certificate for hospital A's code from another CA.
    let other = tempfile::tempdir().unwrap();
    let other_pki = tokumei_ingest::pki::PkiLayout::new(other.path());
    tokumei_ingest::pki::init(&other_pki, &[HOSPITAL_A.into()], &[]).unwrap();
    let foreign = HospitalCredentials {
        ca: home.pki.ca_cert(),
        cert: other_pki.hospital_cert(HOSPITAL_A),
        key: other_pki.hospital_key(HOSPITAL_A),
    };
    let attempt = async {
        let mut c = connect(&gw.endpoint(), &foreign, 1 << 20).await?;
        push(&mut c, vec![batch("x", vec![valid_record("L1")])]).await
    };
    assert!(attempt.await.is_err(), "a certificate from another CA got through");
    // Both refusals are on the operator's metrics (the handshake never reached gRPC).
    let metrics = operator_metrics(&gw).await;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tokumei_ingest_requests_refused_total{reason=\"TLS_HANDSHAKE_REFUSED\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(refused.is_some_and(|n| n >= 2), "{metrics}");

    // A certificate from our CA that is not a hospital's (the core's) cannot push.
    let core = HospitalCredentials {
        ca: home.pki.ca_cert(),
        cert: home.pki.core_cert(),
        key: home.pki.core_key(),
    };
    let mut c = connect(&gw.endpoint(), &core, 1 << 20).await.unwrap();
    let s = status_of(push(&mut c, vec![batch("x", vec![valid_record("L1")])]).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(status_reason(&s).as_deref(), Some("NOT_A_HOSPITAL"));

    // TLS 1.2 is refused even with a valid certificate.
    let tls12 = {
        let mut roots = rustls::RootCertStore::empty();
        for c in tokumei_ingest::tls::load_certs(&home.pki.ca_cert()).unwrap() {
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                tokumei_ingest::tls::load_certs(&home.pki.hospital_cert(HOSPITAL_A)).unwrap(),
                tokumei_ingest::tls::load_key(&home.pki.hospital_key(HOSPITAL_A)).unwrap(),
            )
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap().to_owned();
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await
    };
    assert!(tls12.is_err(), "TLS 1.2 handshake succeeded");

    // The same batch id and local id from A and B are different batches and different patients: identity
    // comes from the certificate, and the payload cannot name another hospital.
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut b = gw.client(&home, HOSPITAL_B).await;
    let ra = push(&mut a, vec![batch("same-id", vec![valid_record("L1")])])
        .await
        .unwrap();
    let mut other_content = valid_record("L1");
    other_content.birth_date = "1960-01-01".into();
    let rb = push(&mut b, vec![batch("same-id", vec![other_content])]).await.unwrap();
    assert_eq!((ra.accepted, rb.accepted), (1, 1));
    assert!(!rb.batches[0].replayed);
    let spooled = spool_batches(&home.spool());
    let from_a: Vec<_> = spooled
        .iter()
        .filter(|(h, id, _)| h == HOSPITAL_A && id == "same-id")
        .collect();
    let from_b: Vec<_> = spooled
        .iter()
        .filter(|(h, id, _)| h == HOSPITAL_B && id == "same-id")
        .collect();
    assert_eq!((from_a.len(), from_b.len()), (1, 1));
    assert_ne!(
        from_a[0].2[0].hospital_pseudonym, from_b[0].2[0].hospital_pseudonym,
        "hospital pseudonyms must differ per hospital"
    );
    assert_eq!(from_a[0].2[0].linkage_key.len(), 32);
}

/// Each entry: (what to break, expected reason).
fn corpus() -> Vec<(PatientRecord, &'static str)> {
    let r = || valid_record("C1");
    let mut v: Vec<(PatientRecord, &'static str)> = Vec::new();
    let mut push = |f: &dyn Fn(&mut PatientRecord), reason| {
        let mut x = r();
        f(&mut x);
        v.push((x, reason));
    };
    push(&|x| x.local_patient_id = "123456789018".into(), "MY_NUMBER_PRESENT");
    push(&|x| x.local_patient_id.clear(), "MISSING_LOCAL_ID");
    push(&|x| x.local_patient_id = "x".repeat(65), "FIELD_TOO_LONG");
    push(&|x| x.birth_date.clear(), "MISSING_BIRTH_DATE");
    push(&|x| x.birth_date = "1950/04/01".into(), "INVALID_DATE");
    push(&|x| x.birth_date = "1950-02-30".into(), "INVALID_DATE");
    push(&|x| x.birth_date = "1899-12-31".into(), "DATE_OUT_OF_RANGE");
    push(&|x| x.birth_date = "2999-01-01".into(), "DATE_OUT_OF_RANGE");
    push(&|x| x.death_date = "1940-01-01".into(), "DATE_OUTSIDE_LIFE");
    push(&|x| x.sex = 9, "INVALID_SEX");
    push(
        &|x| {
            x.insurance = None;
            x.kana_name.clear();
        },
        "MISSING_IDENTITY",
    );
    push(
        &|x| {
            x.insurance = None;
            x.sex = Sex::Unspecified as i32;
        },
        "MISSING_IDENTITY",
    );
    push(
        &|x| {
            x.insurance = None;
            x.kana_name = "山田花子".into();
        },
        "INVALID_KANA_NAME",
    );
    push(
        &|x| x.insurance.as_mut().unwrap().insurer_number = "1234".into(),
        "INVALID_INSURANCE",
    );
    push(
        &|x| x.insurance.as_mut().unwrap().branch = "1".into(),
        "INVALID_INSURANCE",
    );
    push(&|x| x.insurance.as_mut().unwrap().number.clear(), "INVALID_INSURANCE");
    push(&|x| x.postal_code = "12345".into(), "INVALID_POSTAL_CODE");
    push(&|x| x.municipality_code = "131017".into(), "INVALID_MUNICIPALITY_CODE");
    push(&|x| x.municipality_code = "991007".into(), "INVALID_MUNICIPALITY_CODE");
    push(
        &|x| x.encounters[0].admission_date = "2024-13-01".into(),
        "INVALID_DATE",
    );
    push(
        &|x| x.encounters[0].discharge_date = "2024-04-01".into(),
        "DISCHARGE_BEFORE_ADMISSION",
    );
    push(
        &|x| x.encounters[0].admission_date = "1940-01-01".into(),
        "DATE_OUTSIDE_LIFE",
    );
    push(&|x| x.encounters[0].kind = "spa".into(), "INVALID_ENCOUNTER_KIND");
    push(&|x| x.encounters[0].department = "科".repeat(65), "FIELD_TOO_LONG");
    push(&|x| x.conditions[0].icd10 = "E1".into(), "INVALID_ICD10");
    push(&|x| x.conditions[0].icd10 = "e11.9".into(), "INVALID_ICD10");
    push(
        &|x| x.conditions[0].disease_master_id = "12AB5".into(),
        "INVALID_DISEASE_MASTER_ID",
    );
    push(
        &|x| x.conditions[0].onset_date = "2099-01-01".into(),
        "DATE_OUT_OF_RANGE",
    );
    push(&|x| x.medications[0].yj_code = "3962002F102".into(), "INVALID_YJ_CODE");
    push(&|x| x.medications[0].days = 400, "VALUE_OUT_OF_RANGE");
    push(&|x| x.medications[0].daily_dose = f64::NAN, "VALUE_OUT_OF_RANGE");
    push(&|x| x.medications[0].daily_dose = -1.0, "VALUE_OUT_OF_RANGE");
    push(&|x| x.medications[0].dose_unit = "buckets".into(), "INVALID_UNIT");
    push(
        &|x| x.observations[0].jlac10 = "3D04600000192040".into(),
        "INVALID_JLAC10",
    );
    push(
        &|x| {
            x.observations[0].jlac10.clear();
            x.observations[0].jlac11 = "short".into();
        },
        "INVALID_JLAC11",
    );
    push(&|x| x.observations[0].jlac10.clear(), "MISSING_LAB_CODE");
    push(&|x| x.observations[0].unit = "furlongs".into(), "INVALID_UNIT");
    push(&|x| x.observations[0].value = 72.0, "VALUE_OUT_OF_RANGE"); // HbA1c 72 %
    push(&|x| x.observations[0].value = f64::INFINITY, "VALUE_OUT_OF_RANGE");
    push(&|x| x.observations[0].date = "2024-05-01T10:00".into(), "INVALID_DATE");
    push(&|x| x.allergies[0].yj_code = "ABC".into(), "INVALID_YJ_CODE");
    push(
        &|x| {
            x.allergies[0].yj_code.clear();
            x.allergies[0].substance.clear();
        },
        "INVALID_YJ_CODE",
    );
    push(&|x| x.allergies[0].recorded_date = "20200101".into(), "INVALID_DATE");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_rejected_one_by_one_with_their_reason() {
    let home = Home::new();
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let corpus = corpus();
    assert!(corpus.len() >= 30, "corpus has {}", corpus.len());
    let mut records: Vec<PatientRecord> = corpus.iter().map(|(r, _)| r.clone()).collect();
    // Good records interleaved: the accepted part of a batch is committed atomically with the rejections.
    records.push(valid_record("GOOD1"));
    records.push(valid_record("GOOD2"));
    let n_bad = corpus.len();
    let receipt = push(&mut c, vec![batch("corpus", records)]).await.unwrap();
    assert_eq!(receipt.accepted, 2);
    assert_eq!(receipt.rejected.len(), n_bad);
    for (rej, (_, expected)) in receipt.rejected.iter().zip(&corpus) {
        assert_eq!(
            &rej.reason, expected,
            "record {} ({}) got {}: {}",
            rej.index, expected, rej.reason, rej.detail
        );
        assert_eq!(rej.batch_id, "corpus");
        assert!(!rej.detail.is_empty());
        for planted in ["123456789018", "山田花子", "ヤマダ", "06135018"] {
            assert!(
                !rej.detail.contains(planted),
                "detail echoes a submitted value: {}",
                rej.detail
            );
        }
    }
    let spooled = spool_batches(&home.spool());
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].2.len(), 2);

    // Invalid batch ids are refused as a whole.
    let s = status_of(push(&mut c, vec![batch("bad id with spaces", vec![valid_record("L9")])]).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(status_reason(&s).as_deref(), Some("INVALID_BATCH_ID"));

    // A My Number as a batch id (it would be logged and kept in the spool's index): refused, named nowhere.
    let s = status_of(push(&mut c, vec![batch("1234.5678.9018", vec![valid_record("L10")])]).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(status_reason(&s).as_deref(), Some("MY_NUMBER_PRESENT"));
    assert!(!s.message().contains("9018"));
    assert_eq!(spool_batches(&home.spool()).len(), 1, "nothing more was spooled");
    let index = std::fs::read_dir(home.spool())
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .any(|bytes| bytes.windows(4).any(|w| w == b"9018"));
    assert!(!index, "the spool holds the batch id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_idempotent_and_ids_cannot_be_reused() {
    let home = Home::new();
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let records: Vec<PatientRecord> = (0..20).map(|i| valid_record(&format!("P{i}"))).collect();
    let first = push(&mut c, vec![batch("b-1", records.clone())]).await.unwrap();
    assert_eq!(first.accepted, 20);
    assert!(!first.batches[0].replayed);
    let again = push(&mut c, vec![batch("b-1", records.clone())]).await.unwrap();
    assert_eq!(again.accepted, 20);
    assert!(again.batches[0].replayed);
    assert_eq!(again.batches[0].spool_position, first.batches[0].spool_position);

    // Different content under the same id.
    let mut changed = records.clone();
    changed[3].conditions[0].icd10 = "I10".into();
    let s = status_of(push(&mut c, vec![batch("b-1", changed)]).await);
    assert_eq!(s.code(), Code::AlreadyExists);
    assert_eq!(status_reason(&s).as_deref(), Some("BATCH_ID_REUSED"));

    // The same new batch on several concurrent streams is stored once.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = gw.client(&home, HOSPITAL_A).await;
        let records = records.clone();
        tasks.push(tokio::spawn(
            async move { push(&mut c, vec![batch("b-2", records)]).await },
        ));
    }
    let mut fresh = 0;
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.accepted, 20);
        if !r.batches[0].replayed {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one stream commits, the others replay");

    // Restart: the outcome survives.
    drop(gw);
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let after = push(&mut c, vec![batch("b-1", records)]).await.unwrap();
    assert!(after.batches[0].replayed);
    let spooled = spool_batches(&home.spool());
    assert_eq!(spooled.iter().filter(|(_, id, _)| id == "b-1").count(), 1);
    assert_eq!(spooled.iter().filter(|(_, id, _)| id == "b-2").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_number_anywhere_destroys_the_record_and_never_reaches_disk_or_logs() {
    let home = Home::new();
    let log = home.path().join("gateway.log");
    let gw = home.start_logging(&[], &[("RUST_LOG", "trace")], Some(&log));
    let mut c = gw.client(&home, HOSPITAL_A).await;
    type Plant = (&'static str, Box<dyn Fn(&mut PatientRecord)>);
    let plants: Vec<Plant> = vec![
        (
            "local_patient_id",
            Box::new(|r| r.local_patient_id = "ID123456789018".into()),
        ),
        ("kana_name", Box::new(|r| r.kana_name = "ヤマダ 1234 5678 9018".into())),
        (
            "insurance.number",
            Box::new(|r| r.insurance.as_mut().unwrap().number = "123456789018".into()),
        ),
        (
            "insurance.symbol",
            Box::new(|r| r.insurance.as_mut().unwrap().symbol = "１２３４５６７８９０１８".into()),
        ),
        ("postal_code", Box::new(|r| r.postal_code = "1234-5678-9018".into())),
        (
            "encounters.department",
            Box::new(|r| r.encounters[0].department = "マイナンバー123456789018".into()),
        ),
        (
            "allergies.substance",
            Box::new(|r| r.allergies[0].substance = "123456789018".into()),
        ),
        (
            "observations.text_value",
            Box::new(|r| {
                r.observations[0].text_value = "番号 123456789018".into();
            }),
        ),
    ];
    let mut records = Vec::new();
    for (_, f) in &plants {
        let mut r = valid_record("MN");
        f(&mut r);
        records.push(r);
    }
    let receipt = push(&mut c, vec![batch("mn", records)]).await.unwrap();
    assert_eq!(receipt.accepted, 0);
    assert_eq!(receipt.rejected.len(), plants.len());
    for (rej, (field, _)) in receipt.rejected.iter().zip(&plants) {
        assert_eq!(rej.reason, "MY_NUMBER_PRESENT");
        assert!(
            rej.detail.contains(field),
            "detail {:?} should name {field}",
            rej.detail
        );
        assert!(!rej.detail.contains("9018"));
    }
    // An opt-out request carrying a My Number is refused as a whole.
    let s = c
        .opt_out(PatientRequest {
            request_id: "r-mn".into(),
            local_patient_id: "123456789018".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(status_reason(&s).as_deref(), Some("MY_NUMBER_PRESENT"));
    drop(c);
    let mut gw = gw;
    gw.terminate();
    let bytes = all_bytes(home.path());
    for needle in [
        "123456789018",
        "１２３４５６７８９０１８",
        "1234 5678 9018",
        "1234-5678-9018",
    ] {
        assert!(!contains(&bytes, needle), "{needle} found under TOKUMEI_HOME");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_identifiers_never_reach_the_spool_or_logs() {
    let home = Home::new();
    let log = home.path().join("gateway.log");
    let gw = home.start_logging(&[], &[("RUST_LOG", "trace")], Some(&log));
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let mut insured = valid_record("LOCALZZ7781");
    insured.kana_name = "ヨミガエリ　サブロウ".into();
    insured.insurance = Some(Insurance {
        insurer_number: "39131234".into(),
        symbol: "キゴウQX".into(),
        number: "BANGO7781".into(),
        branch: "02".into(),
    });
    insured.postal_code = "987-6543".into();
    let mut id4 = valid_record("LOCALZZ7782");
    id4.insurance = None;
    id4.kana_name = "ワスレナグサ　ハナ".into();
    id4.postal_code = "9876544".into();
    let receipt = push(&mut c, vec![batch("pii", vec![insured, id4])]).await.unwrap();
    assert_eq!(receipt.accepted, 2);
    let spooled = spool_batches(&home.spool());
    let recs = &spooled[0].2;
    assert_eq!(
        recs[0].linkage_quality,
        tokumei_proto::spool::v1::LinkageQuality::Insured as i32
    );
    assert_eq!(
        recs[1].linkage_quality,
        tokumei_proto::spool::v1::LinkageQuality::Id4 as i32
    );
    assert_eq!(recs[0].postal_prefix, "987");
    assert_eq!(recs[0].birth_date, "1950-04-01");
    assert_eq!(recs[0].municipality_code, "131016");
    drop(c);
    let mut gw = gw;
    gw.terminate();
    let bytes = all_bytes(home.path());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.len() > 100, "trace log should not be empty");
    for needle in [
        "ヨミガエリ",
        "サブロウ",
        "ワスレナグサ",
        "キゴウQX",
        "BANGO7781",
        "39131234",
        "LOCALZZ7781",
        "LOCALZZ7782",
        "987-6543",
        "9876543",
        "9876544",
    ] {
        assert!(!contains(&bytes, needle), "{needle} found under TOKUMEI_HOME");
        assert!(!log_text.contains(needle), "{needle} found in the gateway's trace log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_rate_limits_are_resource_exhausted() {
    let home = Home::with_config("max_message_bytes = 65536\nrecords_per_second = 50\n");
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let big: Vec<PatientRecord> = (0..1000).map(|i| valid_record(&format!("B{i}"))).collect();
    let s = status_of(push(&mut c, vec![batch("big", big)]).await);
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert_eq!(status_reason(&s).as_deref(), Some("MESSAGE_TOO_LARGE"));
    assert!(s.message().contains("65536"), "{}", s.message());

    let mut c = gw.client(&home, HOSPITAL_A).await;
    let ok: Vec<PatientRecord> = (0..40).map(|i| valid_record(&format!("R{i}"))).collect();
    assert_eq!(push(&mut c, vec![batch("r-1", ok.clone())]).await.unwrap().accepted, 40);
    let s = status_of(push(&mut c, vec![batch("r-2", ok.clone())]).await);
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert_eq!(status_reason(&s).as_deref(), Some("RATE_LIMITED"));
    // Another hospital has its own bucket; a replay costs nothing.
    let mut b = gw.client(&home, HOSPITAL_B).await;
    assert_eq!(push(&mut b, vec![batch("r-1", ok.clone())]).await.unwrap().accepted, 40);
    assert!(push(&mut c, vec![batch("r-1", ok)]).await.unwrap().batches[0].replayed);
    assert!(
        spool_batches(&home.spool())
            .iter()
            .all(|(_, id, _)| id != "big" && id != "r-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_and_erase_are_durable_and_stop_new_records() {
    let home = Home::new();
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut b = gw.client(&home, HOSPITAL_B).await;
    let patient = valid_record("OPT1");
    assert_eq!(
        push(&mut a, vec![batch("before", vec![patient.clone()])])
            .await
            .unwrap()
            .accepted,
        1
    );

    // Opt-out at hospital B by insured identity only: hospital A's next record for the person is refused.
    let req = PatientRequest {
        request_id: "req-1".into(),
        insurance: patient.insurance.clone(),
        ..Default::default()
    };
    let r = b.opt_out(req.clone()).await.unwrap().into_inner();
    assert_eq!((r.status.as_str(), r.matched_by.as_str()), ("RECORDED", "INSURED"));
    let again = b.opt_out(req.clone()).await.unwrap().into_inner();
    assert_eq!(again.status, "ALREADY_RECORDED");
    let mut reused = req.clone();
    reused.insurance.as_mut().unwrap().number = "OTHER".into();
    let s = b.opt_out(reused).await.unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
    assert_eq!(status_reason(&s).as_deref(), Some("REQUEST_ID_REUSED"));
    let receipt = push(
        &mut a,
        vec![batch("after", vec![patient.clone(), valid_record("OTHER1")])],
    )
    .await
    .unwrap();
    assert_eq!(receipt.accepted, 1);
    assert_eq!(receipt.rejected[0].reason, "OPTED_OUT");
    assert_eq!(receipt.rejected[0].index, 0);

    // Opt-out by ID4 (kana + birth date + sex) also catches a later record that carries insurance.
    let mut p2 = valid_record("OPT2");
    p2.kana_name = "スズキ　イチロウ".into();
    p2.sex = Sex::Male as i32;
    let r = a
        .opt_out(PatientRequest {
            request_id: "req-2".into(),
            kana_name: "ｽｽﾞｷ ｲﾁﾛｳ".into(),
            birth_date: p2.birth_date.clone(),
            sex: p2.sex,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matched_by, "ID4");
    assert_eq!(
        push(&mut a, vec![batch("after-2", vec![p2])]).await.unwrap().rejected[0].reason,
        "OPTED_OUT"
    );

    // Erase by local id at hospital A: that hospital's later records for the patient are refused.
    let p3 = valid_record("ERASE3");
    let r = a
        .erase(PatientRequest {
            request_id: "req-3".into(),
            local_patient_id: "ERASE3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.status.as_str(), r.matched_by.as_str()), ("RECORDED", "LOCAL_ID"));
    assert_eq!(
        push(&mut a, vec![batch("after-3", vec![p3.clone()])])
            .await
            .unwrap()
            .rejected[0]
            .reason,
        "OPTED_OUT"
    );

    // Requests that identify nobody or have no id.
    let s = a
        .opt_out(PatientRequest {
            request_id: "req-4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status_reason(&s).as_deref(), Some("MISSING_IDENTITY"));
    let s = a
        .opt_out(PatientRequest {
            request_id: String::new(),
            local_patient_id: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status_reason(&s).as_deref(), Some("INVALID_REQUEST_ID"));

    // After a restart the registry is rebuilt from the spool.
    drop((a, b));
    drop(gw);
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let receipt = push(&mut a, vec![batch("after-restart", vec![patient, p3])])
        .await
        .unwrap();
    assert_eq!(receipt.accepted, 0);
    assert!(receipt.rejected.iter().all(|r| r.reason == "OPTED_OUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_streams_and_metrics_are_exposed() {
    let home = Home::new();
    let mut gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    assert_eq!(
        push(&mut c, vec![batch("m-1", vec![valid_record("M1")])])
            .await
            .unwrap()
            .accepted,
        1
    );

    // Prometheus text on the operator port.
    let get = |path: &'static str| {
        let operator = gw.operator.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&operator).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let metrics = get("/metrics").await;
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(
        metrics.contains("tokumei_ingest_records_accepted_total{hospital=\"1310000017\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tokumei_ingest_receipt_latency_seconds"));

    // A slow stream is open when SIGTERM arrives; it still gets its receipt.
    let (tx, rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let mut c2 = gw.client(&home, HOSPITAL_A).await;
    let call = tokio::spawn(async move { c2.push(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    tx.send(batch("slow-1", vec![valid_record("S1")])).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = gw.child.id();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.send(batch("slow-2", vec![valid_record("S2")])).await.unwrap();
    drop(tx);
    let receipt = call.await.unwrap().unwrap().into_inner();
    assert_eq!(receipt.accepted, 2);
    let status = gw.terminate();
    assert!(status.success(), "gateway exit status {status:?}");
    let ids: Vec<String> = spool_batches(&home.spool()).into_iter().map(|(_, id, _)| id).collect();
    assert!(ids.contains(&"slow-2".to_string()));
}

/// 60,000 refused records in one stream (the vendor's receipt of 6 MB broke common clients' 4 MiB receive
/// limit on a committed batch): the receipt lists the first 1,000 in full and counts every one by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_sixty_thousand_rejections_stays_small() {
    use prost::Message;
    let home = Home::new();
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let mut bad = valid_record("BAD");
    bad.observations[0].unit = "furlongs".into();
    let batches: Vec<RecordBatch> = (0..20)
        .map(|b| {
            let mut records: Vec<PatientRecord> = (0..3_000)
                .map(|i| {
                    let mut r = bad.clone();
                    r.local_patient_id = format!("B{b}-{i}");
                    r
                })
                .collect();
            records.push(valid_record(&format!("GOOD{b}")));
            batch(&format!("many-{b}"), records)
        })
        .collect();
    let receipt = push(&mut c, batches).await.expect("receipt");
    assert_eq!(receipt.accepted, 20);
    assert_eq!(receipt.rejected_total, 60_000);
    assert_eq!(
        receipt.rejected.len(),
        tokumei_ingest::gateway::RECEIPT_REJECTIONS_LISTED
    );
    assert_eq!(
        receipt
            .rejected_by_reason
            .iter()
            .map(|r| (r.reason.as_str(), r.count))
            .collect::<Vec<_>>(),
        [("INVALID_UNIT", 60_000)]
    );
    assert_eq!(
        receipt.batches.iter().map(|b| u64::from(b.rejected)).sum::<u64>(),
        60_000
    );
    assert!(
        receipt.encoded_len() < 1 << 20,
        "receipt of {} bytes",
        receipt.encoded_len()
    );
}

/// A message that is not a RecordBatch (here a batch id that is not UTF-8): `INVALID_ARGUMENT` with
/// `MALFORMED_MESSAGE`, not `INTERNAL` without a reason; the decoder's text is not passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_invalid_argument_with_its_reason() {
    /// The wire shape of RecordBatch's field 1, with bytes where a string belongs.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawBatch {
        #[prost(bytes = "vec", tag = "1")]
        batch_id: Vec<u8>,
    }
    let home = Home::new();
    let gw = home.start();
    let mut grpc = raw_client(&home, &gw).await;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tokumei.ingest.v1.IngestService/Push");
    let codec = tonic_prost::ProstCodec::<RawBatch, PushReceipt>::default();
    let request = tonic::Request::new(tokio_stream::iter(vec![RawBatch {
        batch_id: vec![0xff, 0xfe, 0x00],
    }]));
    let s = grpc
        .client_streaming(request, path, codec)
        .await
        .expect_err("a malformed message is refused");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(status_reason(&s).as_deref(), Some("MALFORMED_MESSAGE"));
    assert!(
        !s.message().contains("failed to decode"),
        "the decoder's text is not passed on: {}",
        s.message()
    );
    // The operator sees the refusal by its reason.
    let metrics = operator_metrics(&gw).await;
    assert!(
        metrics.contains("tokumei_ingest_requests_refused_total{reason=\"MALFORMED_MESSAGE\"} 1"),
        "{metrics}"
    );
    // A unary request that is not a PatientRequest (request_id not UTF-8): the same status and reason, from the
    // gateway's codec (gRPC's own answered INTERNAL without a reason).
    let mut grpc = grpc;
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tokumei.ingest.v1.IngestService/OptOut");
    let codec = tonic_prost::ProstCodec::<RawBatch, RequestReceipt>::default();
    let s = grpc
        .unary(
            tonic::Request::new(RawBatch {
                batch_id: vec![0xff, 0xfe],
            }),
            path,
            codec,
        )
        .await
        .expect_err("a malformed request is refused");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(status_reason(&s).as_deref(), Some("MALFORMED_MESSAGE"));
    // Counted although no handler ran, and the stream refusal was not counted twice.
    let metrics = operator_metrics(&gw).await;
    assert!(
        metrics.contains("tokumei_ingest_requests_refused_total{reason=\"MALFORMED_MESSAGE\"} 2"),
        "{metrics}"
    );
}

/// A stream that outlives `request_timeout_secs`: `DEADLINE_EXCEEDED` with its reason (the server-wide
/// timeout layer answered `CANCELLED` "Timeout expired" without one), and the batch it had sent committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_request_timeout_is_deadline_exceeded_with_its_reason() {
    use tokio_stream::StreamExt;
    let home = Home::with_config("request_timeout_secs = 1\n");
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let stalled = tokio_stream::iter(vec![batch("slow-1", vec![valid_record("S1")])]).chain(tokio_stream::pending());
    let s = c.push(stalled).await.expect_err("the stream outlives the limit");
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert_eq!(status_reason(&s).as_deref(), Some("DEADLINE_EXCEEDED"));
    // Sending the batch again is a replay of what was committed, not a second copy.
    let again = push(&mut c, vec![batch("slow-1", vec![valid_record("S1")])])
        .await
        .expect("receipt");
    assert_eq!(again.accepted, 1);
    assert!(again.batches[0].replayed, "the first stream's batch was committed");
}

/// Patients' requests are rate-limited per hospital (any hospital could otherwise try names and birth
/// dates by the thousand): past `patient_requests_per_minute`, `RESOURCE_EXHAUSTED` / `RATE_LIMITED`,
/// counted by reason; another hospital is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_requests_are_rate_limited_per_hospital() {
    let home = Home::with_config("patient_requests_per_minute = 2\n");
    let gw = home.start();
    let mut a = gw.client(&home, HOSPITAL_A).await;
    let mut b = gw.client(&home, HOSPITAL_B).await;
    let request = |i: usize| PatientRequest {
        request_id: format!("guess-{i}"),
        local_patient_id: format!("L{i}"),
        ..Default::default()
    };
    for i in 0..2 {
        a.erase(request(i)).await.expect("within the limit");
    }
    let s = a.erase(request(2)).await.expect_err("the third in a minute");
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert_eq!(status_reason(&s).as_deref(), Some("RATE_LIMITED"));
    assert!(s.message().contains("patient requests/min"), "{}", s.message());
    b.opt_out(request(3))
        .await
        .expect("another hospital has its own budget");
}

/// Bytes sent as they are: a message prost would never produce from a struct, without building the struct.
#[derive(Debug, Default, Clone, PartialEq)]
struct PreEncoded(Vec<u8>);

impl prost::Message for PreEncoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The attack from issue 18: 8 MB of empty records (2 wire bytes each, several hundred once decoded) took the
/// gateway to 2.9 GiB. The decoded size is now added up on the wire bytes before anything is allocated: the
/// message is refused `RESOURCE_EXHAUSTED` / `MESSAGE_TOO_LARGE` and the gateway's peak memory grows by less
/// than four times its message limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_empty_records_is_refused_before_it_is_decoded() {
    let limit = 16usize << 20;
    let home = Home::new();
    let gw = home.start();
    // A realistic batch first, so the baseline includes a decoded batch's working set.
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let ok: Vec<PatientRecord> = (0..200).map(|i| valid_record(&format!("W{i}"))).collect();
    assert_eq!(push(&mut c, vec![batch("warm", ok)]).await.unwrap().accepted, 200);
    let before = process_memory(gw.child.id(), "VmHWM");

    let mut wire = Vec::with_capacity(8 << 20);
    wire.extend_from_slice(&[0x0a, 0x05]);
    wire.extend_from_slice(b"empty");
    for _ in 0..4_000_000 {
        wire.extend_from_slice(&[0x12, 0x00]);
    }
    assert!(wire.len() < limit);
    let mut grpc = raw_client(&home, &gw).await;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tokumei.ingest.v1.IngestService/Push");
    let codec = tonic_prost::ProstCodec::<PreEncoded, PushReceipt>::default();
    let request = tonic::Request::new(tokio_stream::iter(vec![PreEncoded(wire)]));
    let s = grpc.client_streaming(request, path, codec).await.expect_err("refused");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(status_reason(&s).as_deref(), Some("MESSAGE_TOO_LARGE"));
    let after = process_memory(gw.child.id(), "VmHWM");
    let grown = after.saturating_sub(before);
    assert!(
        grown < 4 * limit as u64,
        "peak RSS grew by {} MiB (from {} MiB)",
        grown >> 20,
        before >> 20
    );
    eprintln!("peak RSS {} MiB → {} MiB", before >> 20, after >> 20);
    // Nothing of it reached the spool, and the gateway still serves.
    assert!(spool_batches(&home.spool()).iter().all(|(_, id, _)| id != "empty"));
    let mut c = gw.client(&home, HOSPITAL_A).await;
    assert_eq!(
        push(&mut c, vec![batch("after", vec![valid_record("AFTER")])])
            .await
            .unwrap()
            .accepted,
        1
    );
}

/// The spool in the DMZ was plaintext until the core acknowledged it (issue 18): a stolen disk or backup of the
/// gateway held every clinical value. Now each frame is sealed under a key the key service wraps: the clinical
/// content is readable through the key and absent from the bytes on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_is_sealed_at_rest() {
    const PLANTED: &str = "SEALEDDEPTQX";
    let home = Home::new();
    let gw = home.start();
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let mut r = valid_record("SEAL1");
    r.encounters[0].department = PLANTED.into();
    assert_eq!(push(&mut c, vec![batch("sealed", vec![r])]).await.unwrap().accepted, 1);
    let spooled = spool_batches(&home.spool());
    assert_eq!(
        spooled[0].2[0].encounters[0].department, PLANTED,
        "readable through the key"
    );
    let bytes = all_bytes(&home.spool());
    assert!(!contains(&bytes, PLANTED), "a clinical value is in the clear on disk");
    assert!(!contains(&bytes, "sealed"), "a batch id is in the clear on disk");
    let key_file = std::fs::read_to_string(home.spool().join("spool-key.json")).expect("key file");
    assert!(key_file.contains("wrapped"), "{key_file}");
}

/// The gateway's `/metrics` text from its operator port.
async fn operator_metrics(gw: &Gateway) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&gw.operator)
        .await
        .expect("operator port");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    conn.read_to_string(&mut text).await.expect("metrics");
    text
}

/// A gRPC client of hospital A that sends whatever messages it is given (for bytes no generated client makes).
async fn raw_client(home: &Home, gw: &Gateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let creds = home.creds(HOSPITAL_A);
    let tls = tokumei_ingest::client::mutual_tls(&creds.ca, &creds.cert, &creds.key).expect("tls");
    let channel = tonic::transport::Endpoint::from_shared(gw.endpoint())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready().await.expect("ready");
    grpc
}

/// The gateway consults the platform's directory: only hospitals the policy service lists, with the certificate
/// it pins, may push. Disabling a hospital there and publishing shuts it out at its next request while its
/// certificate is still valid; a directory file that does not verify is refused and the last good one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hospitals_the_directory_enables_may_push() {
    let home = Home::new();
    let db: &[(&str, &str)] = &[];
    // Hospitals are accounts: an administrator registers, publishes and disables them.
    common::people::operator(home.path(), db);
    let (admin, _) = common::people::administrators(home.path());
    let policy_service = common::people::PolicyService::start(home.path(), db);
    let env = policy_service.env(db, &admin);
    let run = |args: &[&str]| common::people::run_json(home.path(), args, &env, None);
    run(&["user", "add-org", "--id", "hosp-a", "--name", "Hospital A"]);
    let cert_a = home.pki.hospital_cert(HOSPITAL_A);
    run(&[
        "user",
        "add-hospital",
        "--code",
        HOSPITAL_A,
        "--organisation",
        "hosp-a",
        "--certificate",
        cert_a.to_str().unwrap(),
    ]);
    let list = home.path().join("hospitals.json");
    let published = run(&["user", "hospitals-publish", "--out", list.to_str().unwrap()]);
    assert_eq!(published["hospitals"], 1, "{published}");
    let key = published["public_key"].as_str().unwrap().to_owned();
    let config = home.path().join("tokumei.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[gateway.directory]\npath = {:?}\npublic_key = \"{key}\"\n",
        list.to_str().unwrap()
    ));
    std::fs::write(&config, text).unwrap();
    let gw = home.start();

    // A is listed with its certificate; B has a valid certificate from the same CA but is not listed.
    let mut a = gw.client(&home, HOSPITAL_A).await;
    push(&mut a, vec![batch("dir-1", vec![valid_record("D1")])])
        .await
        .unwrap();
    let mut b = gw.client(&home, HOSPITAL_B).await;
    let s = status_of(push(&mut b, vec![batch("dir-b", vec![valid_record("D2")])]).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(status_reason(&s).as_deref(), Some("HOSPITAL_NOT_ENABLED"));
    let s = b
        .opt_out(PatientRequest {
            request_id: "dir-opt".into(),
            ..Default::default()
        })
        .await
        .expect_err("B may not send requests either");
    assert_eq!(status_reason(&s).as_deref(), Some("HOSPITAL_NOT_ENABLED"));

    // A forged directory (enabling B, signed by another key) is refused; A still pushes, B still cannot.
    let good = std::fs::read(&list).unwrap();
    let forged_payload = format!(
        r#"{{"issued_at":"2099-01-01T00:00:00Z","hospitals":[{{"institution_code":"{HOSPITAL_B}","certificate_sha256":"00"}}]}}"#
    );
    std::fs::write(
        &list,
        serde_json::json!({"payload": forged_payload, "signature": "00".repeat(64)}).to_string(),
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    push(&mut a, vec![batch("dir-2", vec![valid_record("D3")])])
        .await
        .unwrap();
    let s = status_of(push(&mut b, vec![batch("dir-b2", vec![valid_record("D4")])]).await);
    assert_eq!(status_reason(&s).as_deref(), Some("HOSPITAL_NOT_ENABLED"));
    std::fs::write(&list, &good).unwrap();

    // An administrator disables A and publishes: A's next request is refused, its certificate unchanged.
    run(&["user", "disable", "--username", HOSPITAL_A]);
    let published = run(&["user", "hospitals-publish", "--out", list.to_str().unwrap()]);
    assert_eq!(published["hospitals"], 0);
    let mut refused = None;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        match push(&mut a, vec![batch("dir-3", vec![valid_record("D5")])]).await {
            Ok(_) => continue,
            Err(e) => {
                refused = Some(status_of(Err(e)));
                break;
            }
        }
    }
    let s = refused.expect("A was still admitted 10 s after the directory disabled it");
    assert_eq!(status_reason(&s).as_deref(), Some("HOSPITAL_NOT_ENABLED"));
    drop(gw);
}
