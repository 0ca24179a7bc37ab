//! Rotating the policy service's purpose keys, tried as its operators would after a suspected leak: the old key's
//! signatures stop counting, the service signs with the new ones after a restart, the old public halves stay for
//! verifiers, and each rotation is on the ledger.

mod common;

use std::process::Command;

use common::BoundedOutput;
use common::people::{self, PolicyService, run_json};

#[test]
fn a_rotated_key_ends_what_the_old_one_signed() {
    let home = common::Home::new();
    let h = home.path();
    let db: &[(&str, &str)] = &[];
    let op = people::operator(h, db);
    let (admin, _) = people::administrators(h);
    let before = {
        let service = PolicyService::start(h, db);
        let me = service.run(h, db, &op, &["user", "whoami"]);
        assert_eq!(me["username"], "op", "{me}");
        let list = h.join("bans-before.json");
        let exported = service.run(
            h,
            db,
            &op,
            &["committee", "export-bans", "--out", list.to_str().expect("utf-8")],
        );
        let published = service.run(
            h,
            db,
            &admin,
            &[
                "user",
                "hospitals-publish",
                "--out",
                h.join("hospitals.json").to_str().expect("utf-8"),
            ],
        );
        (
            exported["issuer_key"].as_str().expect("issuer key").to_owned(),
            published["public_key"].as_str().expect("directory key").to_owned(),
        )
    };

    // The service is stopped; its account rotates every purpose key.
    let mut rotated = std::collections::BTreeMap::new();
    for purpose in ["session", "bans", "directory", "core-order"] {
        let r = run_json(h, &["policy", "rotate-key", "--purpose", purpose], db, None);
        assert_ne!(r["old_key_id"], r["new_key_id"], "{r}");
        let old = r["old_key_id"].as_str().expect("old id");
        assert!(
            h.join("policy/retired").join(format!("{purpose}-{old}.pub")).exists(),
            "the retired public half of {purpose} is kept"
        );
        assert!(
            !std::fs::read_to_string(h.join(format!("policy/{purpose}.key")))
                .expect("key file")
                .is_empty()
        );
        rotated.insert(purpose, r["public_key"].as_str().expect("new key").to_owned());
    }

    let service = PolicyService::start(h, db);
    // Every session signed with the old session key has ended, the operator's and the administrator's alike.
    for who in [&op, &admin] {
        let mut command = Command::new(common::tokumei_bin());
        command.env("TOKUMEI_HOME", h);
        for (k, v) in service.env(db, who) {
            command.env(k, v);
        }
        let out = command
            .args(["--json", "user", "whoami"])
            .bounded_output()
            .expect("whoami");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("SESSION_INVALID"),
            "{} still signed in after the rotation: {stderr}",
            who.username
        );
    }
    // What the service signs now carries the new keys.
    let session_public = std::fs::read_to_string(h.join("policy/session.pub")).expect("session.pub");
    assert_eq!(session_public.trim(), rotated["session"]);
    assert_ne!(before.0, rotated["bans"]);
    assert_ne!(before.1, rotated["directory"]);
    drop(service);

    // Each rotation is on the ledger with both key ids.
    let ledger = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(people::ledger(h));
    let rotations: Vec<_> = ledger.iter().filter(|e| e.action == "key.rotated").collect();
    assert_eq!(rotations.len(), 4, "one ledger entry per rotation");
    for e in rotations {
        let details = e.details.to_string();
        assert!(
            details.contains("old_key_id") && details.contains("new_key_id"),
            "{details}"
        );
    }
}

/// The ledger key rotates like the others, without losing the ledger: after the rotation the service signs new
/// entries with the new key and still verifies the old ones (the retired public half); the rotation's entry is
/// signed by the old key and names the new one; an inspection bundle across the rotation verifies offline with both
/// keys and not with the new one alone (an entry signed by a key the inspector does not trust is named).
#[test]
fn the_ledger_key_rotates_and_the_ledger_still_verifies() {
    let home = common::Home::new();
    let h = home.path();
    let db: &[(&str, &str)] = &[];
    let op = people::operator(h, db);
    let auditor = people::invite(h, db, "audra", "audit-o", "auditor");
    let old_public = std::fs::read_to_string(h.join("policy/service.pub")).expect("service.pub");
    {
        let service = PolicyService::start(h, db);
        let report = service.run(h, db, &auditor, &["audit", "verify"]);
        assert_eq!(report["ok"], true, "{report}");
    }

    let r = run_json(h, &["policy", "rotate-key", "--purpose", "ledger"], db, None);
    let (old_id, new_id) = (
        r["old_key_id"].as_str().expect("old id").to_owned(),
        r["new_key_id"].as_str().expect("new id").to_owned(),
    );
    assert_ne!(old_id, new_id);
    let new_public = r["public_key"].as_str().expect("new key").to_owned();
    assert!(
        h.join("policy/retired").join(format!("service-{old_id}.pub")).exists(),
        "the retired public half of the ledger key is kept"
    );
    assert_eq!(
        std::fs::read_to_string(h.join("policy/service.pub"))
            .expect("service.pub")
            .trim(),
        new_public
    );

    let service = PolicyService::start(h, db);
    let me = service.run(h, db, &op, &["user", "whoami"]);
    assert_eq!(me["username"], "op", "sessions are not the ledger's key: {me}");
    let report = service.run(h, db, &auditor, &["audit", "verify"]);
    assert_eq!(report["ok"], true, "the ledger across the rotation: {report}");

    let ledger = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(people::ledger(h));
    let rotation = ledger
        .iter()
        .find(|e| e.action == "key.rotated")
        .expect("the rotation's entry");
    assert_eq!(rotation.key_id, old_id, "the old key vouches for the new");
    assert!(rotation.details.contains(&new_public), "{}", rotation.details);
    let last = ledger.last().expect("entries");
    assert_eq!(last.key_id, new_id, "entries after the rotation carry the new key");
    assert!(ledger.iter().any(|e| e.key_id == old_id && e.seq < rotation.seq));

    // An inspector's bundle of the whole day, signed by the new key, holds entries of both.
    let bundle = h.join("bundle.json");
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today.to_string(), (today + chrono::Duration::days(2)).to_string());
    service.run(
        h,
        db,
        &auditor,
        &[
            "audit",
            "export",
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            bundle.to_str().expect("utf-8"),
        ],
    );
    let verify = |keys: &[&str]| {
        let mut args = vec!["--json", "audit", "verify-bundle", bundle.to_str().expect("utf-8")];
        for k in keys {
            args.extend(["--public-key", k]);
        }
        Command::new(common::tokumei_bin())
            .env("TOKUMEI_HOME", h)
            .args(&args)
            .bounded_output()
            .expect("verify-bundle")
    };
    let both = verify(&[old_public.trim(), &new_public]);
    assert!(both.status.success(), "{}", String::from_utf8_lossy(&both.stderr));
    let new_only = verify(&[&new_public]);
    let out = String::from_utf8_lossy(&new_only.stdout);
    assert!(
        !new_only.status.success() && out.contains(&old_id),
        "a bundle with entries of the old key verified without it: {out}"
    );
}

/// A key rotated under a running service would leave it signing with the key the ledger just retired (its next
/// entries named `KEY_NOT_IN_FORCE` by every verifier): the rotation is refused while services hold the keys,
/// changes no key and writes no entry, and goes through once the service has stopped.
#[test]
fn no_key_rotates_under_a_running_service() {
    let home = common::Home::new();
    let h = home.path();
    let db: &[(&str, &str)] = &[];
    let _op = people::operator(h, db);
    let key = || std::fs::read_to_string(h.join("policy/service.pub")).expect("service.pub");
    let session_key = || std::fs::read_to_string(h.join("policy/session.pub")).expect("session.pub");
    let before = key();
    let ledger = || {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(people::ledger(h))
            .len()
    };
    {
        // Two services of one home hold the keys together (the lock is shared among services).
        let _service = PolicyService::start(h, db);
        let _second = PolicyService::start(h, db);
        let session_before = session_key();
        let entries = ledger();
        for purpose in ["ledger", "session"] {
            let out = Command::new(common::tokumei_bin())
                .env("TOKUMEI_HOME", h)
                .args(["--json", "policy", "rotate-key", "--purpose", purpose])
                .bounded_output()
                .expect("rotate-key");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("[SERVICE_RUNNING]"),
                "{purpose} rotated under a running service: {stderr}"
            );
        }
        assert_eq!(key(), before, "the ledger key is unchanged");
        assert_eq!(session_key(), session_before, "the session key is unchanged");
        assert_eq!(ledger(), entries, "a refused rotation writes no entry");
    }
    let r = run_json(h, &["policy", "rotate-key", "--purpose", "ledger"], db, None);
    assert_ne!(r["old_key_id"], r["new_key_id"], "{r}");
    assert_ne!(key(), before, "rotated once the service stopped");
}

/// The other way round: while a rotation holds the keys, no policy service starts on the home (it would load a key
/// about to be retired).
#[test]
fn no_service_starts_during_a_rotation() {
    let home = common::Home::new();
    let h = home.path();
    let _op = people::operator(h, &[]);
    let rotation = tokumei_policy::service_key::KeysInUse::rotating(h).expect("the rotation's hold");
    let out = Command::new(common::tokumei_bin())
        .env("TOKUMEI_HOME", h)
        .args(["policy", "serve", "--listen", "127.0.0.1:0", "--insecure-dev"])
        .bounded_output()
        .expect("policy serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("[SERVICE_RUNNING]"),
        "a service started during a rotation: {stderr}"
    );
    drop(rotation);
    let service = PolicyService::start(h, &[]);
    drop(service);
}
