//! Envelope encryption of store data keys against a real OpenBao transit engine (a `bao server -dev` started by
//! scripts/test.sh; its address is in TOKUMEI_TEST_BAO_ADDR): wrapped keys round-trip, are bound to their
//! context, refuse tampering, survive KEK rotation, and rewrap to the newest version without changing the key.

mod common;

use common::bao;
use tokumei_ingest::keyservice::local::{LocalKeyring, Passphrase};
use tokumei_ingest::keyservice::openbao::{OpenBaoSettings, OpenBaoTransit, STORE_KEK_NAME};
use tokumei_ingest::keyservice::{BACKEND_OPENBAO, KeyError, KeyPurpose, KeyService, KeyZone, WrappedKey, Zeroizing};

/// A key prefix unique to this test process and test, so tests never share transit keys.
fn prefix(test: &str) -> String {
    format!("t{}-{test}-", std::process::id())
}

/// The core's key service (store KEK).
async fn connect(addr: &str, token: &str, prefix: &str) -> OpenBaoTransit {
    connect_zone(addr, token, prefix, KeyZone::Core)
        .await
        .expect("connect to OpenBao")
}

async fn connect_zone(addr: &str, token: &str, prefix: &str, zone: KeyZone) -> Result<OpenBaoTransit, KeyError> {
    OpenBaoTransit::connect(
        OpenBaoSettings {
            address: addr.into(),
            token: Zeroizing::new(token.into()),
            mount: "transit".into(),
            key_prefix: prefix.into(),
            key_version: 1,
        },
        zone,
    )
    .await
}

fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

/// `GET /v1/<path>` with the token, as JSON.
fn bao_get(addr: &str, token: &str, path: &str) -> serde_json::Value {
    bao_call(addr, token, "GET", path, None)
}

fn bao_call(addr: &str, token: &str, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sf", "-X", method, "-H", &format!("X-Vault-Token: {token}")]);
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = cmd.arg(format!("{addr}/v1/{path}")).output().expect("curl");
    assert!(out.status.success(), "{method} {path} failed");
    if out.stdout.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test]
async fn wrap_unwrap_round_trip_bound_to_context_and_tamper_evident() {
    let Some((addr, token)) = bao() else { return };
    let p = prefix("wrap");
    let svc = connect(&addr, &token, &p).await;
    let key = random_key();
    let w = svc.wrap_key("store-a", &key).await.unwrap();
    assert_eq!(w.backend, BACKEND_OPENBAO);
    assert_eq!(w.kek_version, 1);
    assert!(w.ciphertext.starts_with("vault:v1:"), "{}", w.ciphertext);
    assert_eq!(*svc.unwrap_key("store-a", &w).await.unwrap(), key);
    let again = svc.wrap_key("store-a", &key).await.unwrap();
    assert_ne!(again.ciphertext, w.ciphertext, "random nonce");

    // Another store's context is refused by OpenBao itself.
    for ctx in ["store-b", "", "store-a "] {
        let err = svc.unwrap_key(ctx, &w).await.unwrap_err();
        assert!(matches!(err, KeyError::Unwrap(_)), "{ctx:?}: {err}");
    }
    // Tampering: a flipped ciphertext byte, a relabelled version, garbage.
    let body = w.ciphertext.strip_prefix("vault:v1:").unwrap();
    let mut raw = body.as_bytes().to_vec();
    raw[10] = if raw[10] == b'A' { b'B' } else { b'A' };
    let flipped = WrappedKey {
        ciphertext: format!("vault:v1:{}", String::from_utf8(raw).unwrap()),
        ..w.clone()
    };
    let relabelled = WrappedKey {
        ciphertext: format!("vault:v7:{body}"),
        kek_version: 7,
        ..w.clone()
    };
    let mismatched = WrappedKey {
        kek_version: 2,
        ..w.clone()
    };
    let truncated = WrappedKey {
        ciphertext: format!("vault:v1:{}", &body[..20]),
        ..w.clone()
    };
    let garbage = WrappedKey {
        ciphertext: "vault:v1:!!!".into(),
        ..w.clone()
    };
    for (what, bad) in [
        ("flipped", &flipped),
        ("relabelled", &relabelled),
        ("mismatched", &mismatched),
        ("truncated", &truncated),
        ("garbage", &garbage),
    ] {
        let err = svc.unwrap_key("store-a", bad).await.unwrap_err();
        assert!(matches!(err, KeyError::Unwrap(_)), "{what}: {err}");
        assert!(
            matches!(svc.rewrap_key("store-a", bad).await, Err(KeyError::Unwrap(_))),
            "{what}"
        );
    }

    // A key wrapped by the local keyring is refused with a clear error, and the reverse.
    let dir = tempfile::tempdir().unwrap();
    let ring = LocalKeyring::open_or_create(
        &dir.path().join("keyring.json"),
        &Passphrase::Value(Zeroizing::new("p".into())),
    )
    .unwrap();
    let local = ring.wrap_key("store-a", &key).await.unwrap();
    let err = svc.unwrap_key("store-a", &local).await.unwrap_err();
    assert!(matches!(err, KeyError::WrongBackend { .. }), "{err}");
    assert!(err.to_string().contains("local"), "{err}");
    assert!(matches!(
        ring.unwrap_key("store-a", &w).await,
        Err(KeyError::WrongBackend { .. })
    ));

    // Another deployment's KEK (other prefix) cannot unwrap it.
    let other = connect(&addr, &token, &prefix("wrap-other")).await;
    other.wrap_key("x", &key).await.unwrap();
    assert!(matches!(
        other.unwrap_key("store-a", &w).await,
        Err(KeyError::Unwrap(_))
    ));

    // A fresh connection (a restart) unwraps it.
    let restarted = connect(&addr, &token, &p).await;
    assert_eq!(*restarted.unwrap_key("store-a", &w).await.unwrap(), key);

    // The KEK is a separate, non-exportable aes256-gcm96 key; it never appears in a Debug of the wrapped key.
    let info = bao_get(&addr, &token, &format!("transit/keys/{p}{STORE_KEK_NAME}"));
    assert_eq!(info["data"]["type"], "aes256-gcm96", "{info}");
    assert_eq!(info["data"]["exportable"], false, "{info}");
    assert_eq!(info["data"]["derived"], true, "{info}");
    let hex_key: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!format!("{w:?}").contains(&hex_key));
}

#[tokio::test]
async fn rotation_keeps_old_versions_and_rewrap_moves_to_the_newest_without_touching_hmac() {
    let Some((addr, token)) = bao() else { return };
    let p = prefix("rotate");
    let svc = connect(&addr, &token, &p).await;
    let gateway = connect_zone(&addr, &token, &p, KeyZone::Gateway).await.unwrap();
    let linkage = gateway.hmac(KeyPurpose::Linkage, &[b"patient"]).await.unwrap();
    let key = random_key();
    let w1 = svc.wrap_key("store-a", &key).await.unwrap();
    assert_eq!(w1.kek_version, 1);

    assert_eq!(svc.rotate_kek().await.unwrap(), 2);
    assert_eq!(
        *svc.unwrap_key("store-a", &w1).await.unwrap(),
        key,
        "old version still unwraps"
    );
    let w2 = svc.rewrap_key("store-a", &w1).await.unwrap();
    assert_eq!(w2.kek_version, 2);
    assert!(w2.ciphertext.starts_with("vault:v2:"), "{}", w2.ciphertext);
    assert_eq!(*svc.unwrap_key("store-a", &w2).await.unwrap(), key, "same data key");
    // A wrong context is refused on rewrap too (the context is the transit derivation context).
    assert!(matches!(svc.rewrap_key("store-b", &w1).await, Err(KeyError::Unwrap(_))));
    // New wraps use the newest version even though HMACs are pinned to key_version 1.
    assert_eq!(svc.wrap_key("store-b", &key).await.unwrap().kek_version, 2);
    assert_eq!(svc.rotate_kek().await.unwrap(), 3);
    assert_eq!(svc.rewrap_key("store-a", &w2).await.unwrap().kek_version, 3);

    // The HMAC keys were not rotated and still give the same pseudonyms.
    assert_eq!(gateway.hmac(KeyPurpose::Linkage, &[b"patient"]).await.unwrap(), linkage);
    let hmac_key = bao_get(&addr, &token, &format!("transit/keys/{p}linkage"));
    assert_eq!(hmac_key["data"]["latest_version"], 1, "{hmac_key}");

    // Rotation is visible to another connection.
    let restarted = connect(&addr, &token, &p).await;
    assert_eq!(*restarted.unwrap_key("store-a", &w1).await.unwrap(), key);
    assert_eq!(restarted.wrap_key("store-c", &key).await.unwrap().kek_version, 3);
}

#[tokio::test]
async fn rotate_before_first_use_creates_the_kek_then_a_new_version() {
    let Some((addr, token)) = bao() else { return };
    let svc = connect(&addr, &token, &prefix("rotate-first")).await;
    assert_eq!(svc.rotate_kek().await.unwrap(), 2);
}

#[tokio::test]
async fn an_existing_kek_that_could_leak_or_not_bind_the_context_is_refused() {
    let Some((addr, token)) = bao() else { return };
    for (name, props) in [
        (
            "exportable",
            r#"{"type":"aes256-gcm96","derived":true,"exportable":true}"#,
        ),
        ("underived", r#"{"type":"aes256-gcm96"}"#),
        ("chacha", r#"{"type":"chacha20-poly1305","derived":true}"#),
    ] {
        let p = prefix(name);
        bao_call(
            &addr,
            &token,
            "POST",
            &format!("transit/keys/{p}{STORE_KEK_NAME}"),
            Some(props),
        );
        let svc = connect(&addr, &token, &p).await;
        let err = svc.wrap_key("store-a", &random_key()).await.unwrap_err();
        assert!(matches!(err, KeyError::Remote(_)), "{name}: {err}");
        assert!(err.to_string().contains("refusing"), "{name}: {err}");
        assert!(svc.rotate_kek().await.is_err(), "{name}");
    }
}

#[tokio::test]
async fn a_token_without_kek_access_is_unavailable_not_a_refused_key() {
    let Some((addr, token)) = bao() else { return };
    let p = prefix("denied");
    let root = connect(&addr, &token, &p).await;
    let key = random_key();
    let w = root.wrap_key("store-a", &key).await.unwrap();
    // The ingest gateway's least privilege: HMAC and key reads only, nothing on encrypt/decrypt/rewrap/rotate.
    let policy = format!(
        "path \"transit/keys/{p}*\" {{ capabilities = [\"read\"] }}\npath \"transit/hmac/{p}*\" {{ capabilities = [\"update\"] }}"
    );
    bao_call(
        &addr,
        &token,
        "PUT",
        &format!("sys/policies/acl/{p}gateway"),
        Some(&serde_json::json!({ "policy": policy }).to_string()),
    );
    let created = bao_call(
        &addr,
        &token,
        "POST",
        "auth/token/create",
        Some(&serde_json::json!({ "policies": [format!("{p}gateway")], "ttl": "10m" }).to_string()),
    );
    let limited = created["auth"]["client_token"]
        .as_str()
        .expect("client_token")
        .to_string();
    let gateway = connect(&addr, &limited, &p).await;
    // HMACs work with that token (the keys made first with the root token: this one only reads them)...
    let root_hmacs = connect_zone(&addr, &token, &p, KeyZone::Gateway).await.unwrap();
    let expected = root_hmacs.hmac(KeyPurpose::Linkage, &[b"x"]).await.unwrap();
    let hmacs = connect_zone(&addr, &limited, &p, KeyZone::Gateway).await.unwrap();
    assert_eq!(hmacs.hmac(KeyPurpose::Linkage, &[b"x"]).await.unwrap(), expected);
    // ...but every KEK operation is denied, and a denial is "unavailable" (Remote), never "refused key" (Unwrap).
    let errs = [
        gateway.wrap_key("store-a", &key).await.unwrap_err(),
        gateway.unwrap_key("store-a", &w).await.unwrap_err(),
        gateway.rewrap_key("store-a", &w).await.unwrap_err(),
        gateway.rotate_kek().await.unwrap_err(),
    ];
    for err in errs {
        assert!(matches!(err, KeyError::Remote(_)), "{err}");
    }
    assert_eq!(*root.unwrap_key("store-a", &w).await.unwrap(), key);
}

/// Whether `METHOD /v1/<path>` succeeds with the token (for requests a policy must refuse).
fn bao_allows(addr: &str, token: &str, method: &str, path: &str, body: &str) -> bool {
    std::process::Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-X",
            method,
            "-H",
            &format!("X-Vault-Token: {token}"),
            "-d",
            body,
        ])
        .arg(format!("{addr}/v1/{path}"))
        .status()
        .expect("curl")
        .success()
}

/// A token holding the policy of `infra/openbao/<file>`, its key names moved to this test's prefix.
fn zone_token(addr: &str, root: &str, file: &str, prefix: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/openbao")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("policy file");
    assert!(text.contains("tokumei-"), "{file} names no tokumei key");
    let policy = text.replace("tokumei-", prefix);
    let name = format!("{prefix}{file}");
    bao_call(
        addr,
        root,
        "PUT",
        &format!("sys/policies/acl/{name}"),
        Some(&serde_json::json!({ "policy": policy }).to_string()),
    );
    let created = bao_call(
        addr,
        root,
        "POST",
        "auth/token/create",
        Some(&serde_json::json!({ "policies": [name], "ttl": "10m" }).to_string()),
    );
    created["auth"]["client_token"]
        .as_str()
        .expect("client_token")
        .to_owned()
}

/// Keys per zone with the policies of `infra/openbao/` loaded unchanged (but for the key prefix): each zone's token
/// reaches its own keys only. The issue's measured problem — the release zone sharing the core's KEK — and its
/// must-show: the release zone's credentials cannot unwrap a core key, the gateway's cannot decrypt the store.
#[tokio::test]
async fn each_zone_token_reaches_only_its_own_keys() {
    let Some((addr, root)) = bao() else { return };
    let p = prefix("zones");
    let gw_token = zone_token(&addr, &root, "tokumei-gateway.hcl", &p);
    let core_token = zone_token(&addr, &root, "tokumei-core.hcl", &p);
    let release_token = zone_token(&addr, &root, "tokumei-release.hcl", &p);

    // Each zone does its own work with its own token.
    let gateway = connect_zone(&addr, &gw_token, &p, KeyZone::Gateway)
        .await
        .expect("gateway");
    assert_eq!(gateway.hmac(KeyPurpose::Linkage, &[b"patient"]).await.unwrap().len(), 1);
    let spool_key = random_key();
    let spool = gateway.wrap_key("spool-1", &spool_key).await.unwrap();
    assert_eq!(spool.kek, "gateway-kek");
    assert_eq!(*gateway.unwrap_key("spool-1", &spool).await.unwrap(), spool_key);
    let core = connect_zone(&addr, &core_token, &p, KeyZone::Core).await.expect("core");
    let store_key = random_key();
    let store = core.wrap_key("store-a", &store_key).await.unwrap();
    assert_eq!(store.kek, "store-kek");
    assert_eq!(*core.unwrap_key("store-a", &store).await.unwrap(), store_key);
    assert!(
        core.rotate_kek().await.is_ok(),
        "the operator's core token rotates the store KEK"
    );
    let release = connect_zone(&addr, &release_token, &p, KeyZone::Release)
        .await
        .expect("release");
    let warmup = release.wrap_key("R-0", &random_key()).await.unwrap();
    assert_eq!(warmup.kek, "release-kek");
    // The core makes no release key any more (a build's core half seals its package to the release zone's intake
    // key): its token can neither seal under the release KEK nor open what the release zone sealed.
    let builder = connect_zone(&addr, &core_token, &p, KeyZone::Release)
        .await
        .expect("connects");
    assert!(matches!(
        builder.wrap_key("R-1/data", &random_key()).await,
        Err(KeyError::Remote(_))
    ));
    let release_key = random_key();
    let sealed = release.wrap_key("R-1/data", &release_key).await.unwrap();
    assert!(matches!(
        builder.unwrap_key("R-1/data", &sealed).await,
        Err(KeyError::Remote(_))
    ));
    assert_eq!(*release.unwrap_key("R-1/data", &sealed).await.unwrap(), release_key);

    // The attacks: each zone's service opens only its own zone's keys, and OpenBao itself denies the other zones'
    // tokens the store KEK (asked directly, bypassing the service's own check).
    assert!(
        release.unwrap_key("store-a", &store).await.is_err(),
        "the release zone unwrapped a store key"
    );
    assert!(
        gateway.unwrap_key("store-a", &store).await.is_err(),
        "the gateway unwrapped a store key"
    );
    let decrypt = format!("transit/decrypt/{p}store-kek");
    let body = serde_json::json!({ "ciphertext": store.ciphertext, "context": "eA==" }).to_string();
    for (zone, token) in [("release", &release_token), ("gateway", &gw_token)] {
        assert!(
            !bao_allows(&addr, token, "POST", &decrypt, &body),
            "OpenBao let the {zone} token decrypt"
        );
    }
    let gateway_as_core = connect_zone(&addr, &gw_token, &p, KeyZone::Core)
        .await
        .expect("connects");
    assert!(gateway_as_core.wrap_key("store-b", &random_key()).await.is_err());
    assert!(gateway_as_core.rotate_kek().await.is_err());
    assert!(core.unwrap_key("spool-1", &spool).await.is_err());
    assert!(release.unwrap_key("spool-1", &spool).await.is_err());
    let decrypt = format!("transit/decrypt/{p}gateway-kek");
    let body = serde_json::json!({ "ciphertext": spool.ciphertext, "context": "eA==" }).to_string();
    for token in [&core_token, &release_token] {
        assert!(
            !bao_allows(&addr, token, "POST", &decrypt, &body),
            "another zone's token decrypted the spool key"
        );
    }
    // Neither the core nor the release zone can compute pseudonyms: they cannot even reach the HMAC keys.
    for token in [&core_token, &release_token] {
        let as_gateway = connect_zone(&addr, token, &p, KeyZone::Gateway)
            .await
            .expect("connects");
        assert!(as_gateway.hmac(KeyPurpose::Linkage, &[b"patient"]).await.is_err());
    }
    let hmac_path = format!("transit/hmac/{p}linkage/sha2-256");
    assert!(
        bao_allows(&addr, &gw_token, "POST", &hmac_path, r#"{"input":"eA=="}"#),
        "control: the gateway may"
    );
    for token in [&core_token, &release_token] {
        assert!(!bao_allows(&addr, token, "POST", &hmac_path, r#"{"input":"eA=="}"#));
    }
    // Nobody but the store KEK's own zone may reconfigure it (exportable, minimum version) — the gateway's old
    // policy allowed "update" on every tokumei key.
    for token in [&gw_token, &release_token, &core_token] {
        assert!(
            !bao_allows(
                &addr,
                token,
                "POST",
                &format!("transit/keys/{p}store-kek/config"),
                r#"{"exportable":true}"#
            ),
            "a zone token reconfigured the store KEK"
        );
    }
    // A key minted under one zone's KEK and slipped in as another's opens for nobody — not even for the root
    // token, which may decrypt with both: a key is opened only by the zone that made it.
    let root_gateway = connect_zone(&addr, &root, &p, KeyZone::Gateway).await.expect("root");
    let minted = root_gateway.wrap_key("store-a", &random_key()).await.unwrap();
    let root_core = connect_zone(&addr, &root, &p, KeyZone::Core).await.expect("root");
    assert!(matches!(
        root_core.unwrap_key("store-a", &minted).await,
        Err(KeyError::Unwrap(_))
    ));
    let relabelled = WrappedKey {
        kek: "store-kek".into(),
        ..minted.clone()
    };
    assert!(root_core.unwrap_key("store-a", &relabelled).await.is_err());
    assert!(
        root_gateway.unwrap_key("store-a", &minted).await.is_ok(),
        "control: its own zone opens it"
    );
    // The root token still sees the keys intact (the refusals above changed nothing).
    let admin = connect_zone(&addr, &root, &p, KeyZone::Core).await.expect("root");
    assert_eq!(*admin.unwrap_key("store-a", &store).await.unwrap(), store_key);
}
