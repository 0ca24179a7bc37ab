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
