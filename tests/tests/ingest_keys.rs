//! Pseudonyms are stable across restarts with the local keyring and with OpenBao transit (a real
//! `bao server -dev` started by scripts/test.sh; its address is in TOKUMEI_TEST_BAO_ADDR).

mod common;

use common::*;
use tokumei_ingest::client::push;
use tokumei_proto::ingest::v1::RecordBatch;

async fn linkage_key_after_push(
    home: &Home,
    env: &[(&str, &str)],
    batch_id: &str,
    local_id: &str,
) -> (Vec<u8>, Vec<u8>) {
    let gw = home.start_with(&[], env);
    let mut c = gw.client(home, HOSPITAL_A).await;
    let mut r = valid_record(local_id);
    r.insurance.as_mut().unwrap().number = "STABLE42".into();
    let receipt = push(
        &mut c,
        vec![RecordBatch {
            batch_id: batch_id.into(),
            records: vec![r],
        }],
    )
    .await
    .unwrap();
    assert_eq!(receipt.accepted, 1);
    if let Some((_, passphrase)) = env.iter().find(|(k, _)| *k == "TOKUMEI_KEYRING_PASSPHRASE") {
        // The keyring's passphrase is in the gateway's environment only: unwrap the spool key with it here.
        let ring = tokumei_ingest::keyservice::local::LocalKeyring::open_or_create(
            &home.path().join("keyring/gateway/keyring.json"),
            &tokumei_ingest::keyservice::local::Passphrase::Value(zeroize::Zeroizing::new(passphrase.to_string())),
        )
        .expect("keyring");
        tokumei_ingest::spool_seal::unlock_with(&home.spool(), &ring)
            .await
            .expect("spool key");
    }
    let spooled = spool_batches(&home.spool());
    let rec = spooled
        .iter()
        .find(|(_, id, _)| id == batch_id)
        .map(|(_, _, r)| r[0].clone())
        .unwrap();
    (rec.linkage_key, rec.hospital_pseudonym)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_keyring_is_stable_across_restarts_and_refuses_a_wrong_passphrase() {
    let home = Home::new();
    let env = [("TOKUMEI_KEYRING_PASSPHRASE", "test passphrase 1")];
    let (k1, h1) = linkage_key_after_push(&home, &env, "k-1", "LOC1").await;
    let (k2, h2) = linkage_key_after_push(&home, &env, "k-2", "LOC1").await;
    assert_eq!(k1, k2, "linkage key changed across a restart");
    assert_eq!(h1, h2, "hospital pseudonym changed across a restart");
    // Same person under another local id: same linkage key, other hospital pseudonym.
    let (k3, h3) = linkage_key_after_push(&home, &env, "k-3", "LOC2").await;
    assert_eq!(k1, k3);
    assert_ne!(h1, h3);

    let out = std::process::Command::new(tokumei_bin())
        .args(["ingest", "serve", "--config"])
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .env("TOKUMEI_KEYRING_PASSPHRASE", "wrong")
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be decrypted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_transit_is_stable_across_restarts() {
    let Some((addr, token)) = bao() else {
        return;
    };
    let prefix = format!("t{}-", std::process::id());
    let home = Home::with_config(&format!(
        "[keys]\nbackend = \"openbao\"\n[keys.openbao]\naddress = \"{addr}\"\ntoken_env = \"TOKUMEI_TEST_BAO_TOKEN\"\nmount = \"transit\"\nkey_prefix = \"{prefix}\"\n"
    ));
    // The token variable the test process has too, so it can unwrap the spool key as a same-host reader.
    let env = [("TOKUMEI_TEST_BAO_TOKEN", token.as_str())];
    let (k1, h1) = linkage_key_after_push(&home, &env, "o-1", "LOC1").await;
    let (k2, h2) = linkage_key_after_push(&home, &env, "o-2", "LOC1").await;
    assert_eq!(
        (k1.clone(), h1),
        (k2, h2),
        "OpenBao pseudonyms changed across a restart"
    );
    // The keys live in OpenBao: a local keyring gives different pseudonyms for the same person.
    let local = Home::new();
    let (kl, _) = linkage_key_after_push(&local, &[("TOKUMEI_KEYRING_PASSPHRASE", "x")], "l-1", "LOC1").await;
    assert_ne!(k1, kl);
    // The transit key exists and is not exportable.
    let body = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("X-Vault-Token: {token}"),
            &format!("{addr}/v1/transit/keys/{prefix}linkage"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&body.stdout);
    assert!(text.contains("\"exportable\":false"), "{text}");
    // A wrong token refuses to start rather than falling back.
    let out = std::process::Command::new(tokumei_bin())
        .args(["ingest", "serve", "--config"])
        .arg(home.path().join("tokumei.toml"))
        .env("TOKUMEI_HOME", home.path())
        .env("TOKUMEI_TEST_BAO_TOKEN", "not-a-token")
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
}
