//! `repro status`: the overview a scheduled CI job and a person read. The
//! end-to-end scenario builds with the native sandbox; the argument, policy
//! and tampering checks need no build.

mod common;

use std::path::{Path, PathBuf};

use common::{stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "gov"
version = "1"
owner = "Olivia Owner <olivia@example.com>"

[toolchains.bb]
archive = "image"

[data.train]
path = "data"

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "cat /repro/in/data/rows.csv > /repro/out/model.txt"]
inputs = { data = "data.train" }
outputs = ["model.txt"]
"#;

const POLICY: &str = r#"revalidate_every = "90d"

[stages.validated]
approvals = ["validator"]

[stages.production]
from = "validated"
"#;

/// `repro status <args> --json`: the exit code and the document.
fn status(r: &Repro, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut a = vec!["status", "--json"];
    a.extend_from_slice(args);
    let out = r.run(&a);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code(), doc)
}

/// The one model of a status document.
fn gov(doc: &serde_json::Value) -> &serde_json::Value {
    let models = doc["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{doc:#}");
    assert_eq!(models[0]["name"], "gov");
    &models[0]
}

/// A new key for `name` in the temp folder; returns its path.
fn person(r: &Repro, name: &str) -> PathBuf {
    let key = r.tmp.path().join(format!("{}.key", name.to_lowercase()));
    let out = r.run(&[
        "key",
        "generate",
        "--key",
        key.to_str().unwrap(),
        "--name",
        name,
        "--email",
        &format!("{}@example.com", name.to_lowercase()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    key
}

/// Register the key at `key` with `roles` (the administrator registers them).
fn register(r: &Repro, key: &Path, name: &str, roles: &[&str]) {
    let pubkey = format!("{}.pub", key.display());
    let email = format!("{}@example.com", name.to_lowercase());
    let mut args = vec![
        "identity", "add", &pubkey, "--name", name, "--email", &email,
    ];
    for role in roles {
        args.extend(["--role", role]);
    }
    let admin = r.admin_key();
    args.extend(["--key", admin.to_str().unwrap()]);
    let out = r.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// RFC 3339 time `secs` seconds from now (negative: ago).
fn time_from_now(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    repro_evidence::clock::format(time::OffsetDateTime::from_unix_timestamp(now + secs).unwrap())
}

/// Bob's PASSED attestation of `record` (of `gov@1`), signed with his key
/// as `repro verify` signs but saying it was made at `time`: another
/// party's verification of long ago, to be imported.
fn attestation_at(key: &Path, record: &str, time: &str) -> Vec<u8> {
    use repro_evidence::attest::{self, AttestationStatement, Identity, Verified};
    use repro_evidence::keys;
    let signing = keys::load(key).unwrap();
    let identity = Identity {
        keyid: keys::key_id(&signing.verifying_key()).to_string(),
        name: Some("Bob".into()),
        email: Some("bob@example.com".into()),
    };
    let v = Verified {
        model: "gov@1".into(),
        reproduced: true,
        outputs: Vec::new(),
        steps: Vec::new(),
    };
    let platform = repro_evidence::platform::Platform {
        arch: "x86_64".into(),
        os: "linux".into(),
        kernel: "6".into(),
        cpu_model: "cpu".into(),
        cpu_flags: Vec::new(),
        cpus: 1,
        backend: "native".into(),
    };
    let env = attest::sign_verification(&v, &record.parse().unwrap(), identity, platform, &signing)
        .unwrap();
    let mut statement: AttestationStatement =
        serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
    statement.predicate.time_verified = time.to_string();
    let payload = serde_json::to_vec(&statement).unwrap();
    keys::sign(&signing, keys::IN_TOTO_PAYLOAD_TYPE, &payload)
        .to_vec_pretty()
        .unwrap()
}

fn build(r: &Repro, version: &str, rows: &str) -> String {
    r.write("data/rows.csv", rows);
    r.write(
        "model.toml",
        &RECIPE.replace("version = \"1\"", &format!("version = \"{version}\"")),
    );
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    doc["record"].as_str().unwrap().to_string()
}

/// The scenario a scheduled job meets: a production version verified long
/// ago is due (and `--strict` fails), an approval expiring in 3 days is
/// listed within 14 days and not within 1; a fresh verification clears the
/// revalidation; a new build is a candidate; the data folder changing is
/// named with `--recipe` (and the lock file is left alone); a stage file
/// moved by hand is tampering.
#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn status_shows_stages_verifications_revalidation_expiring_approvals_and_moved_inputs() {
    repro_tests::require_namespaces();
    let r = Repro::new();
    let out = r.run(&[
        "key",
        "generate",
        "--name",
        "Alice",
        "--email",
        "alice@example.com",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.govern(Some(POLICY));
    let bob = person(&r, "Bob");
    register(&r, &bob, "Bob", &["validator"]);

    let record = build(&r, "1", "a,b\n1,2\n");
    let expires = time_from_now(3 * 86400);
    let out = r.run(&[
        "approve",
        "gov@1",
        "--role",
        "validator",
        "--reason",
        "reviewed",
        "--expires",
        &expires,
        "--key",
        bob.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for to in ["validated", "production"] {
        let out = r.run(&["promote", "gov@1", "--to", to]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Verified 200 days ago by Bob (his attestation, imported).
    let long_ago = time_from_now(-200 * 86400);
    let file = r.write("old.json", "");
    std::fs::write(&file, attestation_at(&bob, &record, &long_ago)).unwrap();
    let bob_pub = format!("{}.pub", bob.display());
    let out = r.run(&[
        "attest",
        "import",
        file.to_str().unwrap(),
        "--key",
        &bob_pub,
        "--for",
        "gov@1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (code, doc) = status(&r, &[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert!(
        time::OffsetDateTime::parse(
            doc["generated"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{doc:#}"
    );
    assert_eq!(doc["policy"]["revalidate_every"], "90d");
    let m = gov(&doc);
    let p = &m["stages"]["production"];
    assert_eq!(p["version"], "1");
    assert_eq!(p["record"], record.as_str());
    assert_eq!(p["revalidation_due"], true, "{p:#}");
    assert_eq!(p["last_verified"]["time"], long_ago.as_str());
    assert_eq!(p["last_verified"]["result"], "reproduced");
    assert_eq!(p["last_verified"]["signer"]["name"], "Bob");
    assert_eq!(p["last_verified"]["signer"]["email"], "bob@example.com");
    assert!(p["revalidate_by"].is_string(), "{p:#}");
    assert_eq!(m["candidates"], serde_json::json!([]));
    assert_eq!(m["inputs_moved"], serde_json::Value::Null);
    assert_eq!(m["overdue_reviews"], serde_json::json!([]));
    let approvals = m["expiring_approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{m:#}");
    assert_eq!(approvals[0]["role"], "validator");
    assert_eq!(approvals[0]["approver"]["name"], "Bob");
    assert_eq!(approvals[0]["expires"], expires.as_str());
    assert_eq!(approvals[0]["expired"], false);
    let (_, doc) = status(&r, &["--within", "1d"]);
    assert_eq!(gov(&doc)["expiring_approvals"], serde_json::json!([]));
    // `--strict` fails while anything needs attention; the text names it.
    let out = r.run(&["status", "--strict", "--within", "1d"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("REVALIDATION DUE since")
            && text.contains(&format!(
                "verified {long_ago}: reproduced by Bob <bob@example.com>"
            )),
        "{text}"
    );
    let out = r.run(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out)
            .contains("- gov@1 (production): the `validator` approval by Bob <bob@example.com> (")
            && stdout(&out).contains(&format!(") expires at {expires}\n")),
        "{}",
        stdout(&out)
    );

    // Bob verifies now: not due any more, nothing needs attention (the
    // approval's 3 days are beyond a 1-day window).
    let out = r.run(&["verify", "gov@1", "--key", bob.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, doc) = status(&r, &["--strict", "--within", "1d"]);
    assert_eq!(code, Some(0), "{doc:#}");
    let p = &gov(&doc)["stages"]["production"];
    assert_eq!(p["revalidation_due"], false, "{p:#}");
    let verifications = p["verifications"].as_array().unwrap();
    assert_eq!(verifications.len(), 2);
    assert_eq!(verifications[1]["time"], long_ago.as_str(), "newest first");
    assert_eq!(p["last_verified"], verifications[0]);
    assert_eq!(doc["attention"], 0);

    // A new build from other data is a candidate.
    let record2 = build(&r, "2", "a,b\n3,4\n");
    let (_, doc) = status(&r, &[]);
    let candidates = gov(&doc)["candidates"].as_array().unwrap().clone();
    assert_eq!(candidates.len(), 1, "{doc:#}");
    assert_eq!(candidates[0]["version"], "2");
    assert_eq!(candidates[0]["record"], record2.as_str());
    assert_eq!(gov(&doc)["stages"]["production"]["version"], "1");

    // The data folder changes: `--recipe` names the input; no lock is written.
    let lock = r.work().join("model.lock");
    let lock_before = std::fs::read(&lock).ok();
    let (_, doc) = status(&r, &["--recipe", "model.toml", "--within", "1d"]);
    let i = &gov(&doc)["inputs_moved"];
    assert_eq!(i["version"], "2", "{i:#}");
    assert_eq!(i["moved"], serde_json::json!([]), "{i:#}");
    r.write("data/rows.csv", "a,b\n5,6\n");
    let (code, doc) = status(
        &r,
        &["--recipe", "model.toml", "--within", "1d", "--strict"],
    );
    assert_eq!(code, Some(1), "{doc:#}");
    let i = &gov(&doc)["inputs_moved"];
    assert_eq!(i["recipe"], "model.toml");
    assert_eq!(i["record"], record2.as_str());
    let moved = i["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{i:#}");
    assert_eq!(moved[0]["input"], "data.train");
    assert_eq!(moved[0]["reference"], "path = \"data\"");
    assert_ne!(moved[0]["recorded"], moved[0]["now"]);
    assert_eq!(
        std::fs::read(&lock).ok(),
        lock_before,
        "the lock was written"
    );
    let out = r.run(&["status", "--recipe", "model.toml", "--within", "1d"]);
    assert!(
        stdout(&out).contains("inputs: MOVED since gov@2") && stdout(&out).contains("data.train"),
        "{}",
        stdout(&out)
    );

    // A stage file moved by hand: refused as tampering, as `registry list`.
    let prod = r.store().join("v1/refs/stages/production/gov/1");
    let retired = r.store().join("v1/refs/stages/retired/gov/1");
    std::fs::create_dir_all(retired.parent().unwrap()).unwrap();
    std::fs::rename(&prod, &retired).unwrap();
    let out = r.run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("disagree with the signed audit log"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_of_a_store_without_models_and_bad_arguments() {
    let r = Repro::new();
    let (code, doc) = status(&r, &["--strict"]);
    assert_eq!(code, Some(0));
    assert_eq!(doc["models"], serde_json::json!([]));
    assert_eq!(doc["within"], "14d");
    assert_eq!(doc["attention"], 0);
    assert_eq!(doc["policy"], serde_json::Value::Null);
    for bad in [
        &["status", "--within", "2 weeks"][..],
        &["status", "--within", "0d"],
        &["status", "--recipe", "missing.toml"],
    ] {
        let out = r.run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    let out = r.run(&["status", "--within", "2 weeks"]);
    assert!(
        stderr(&out).contains("`2 weeks` is not a duration"),
        "{}",
        stderr(&out)
    );
}

/// `revalidate_every` is a policy key like the others: a bad one is
/// refused by `repro policy set` naming the file, line and column; a good
/// one is in force and `repro status` says so.
#[test]
fn revalidate_every_is_checked_when_the_policy_is_set() {
    let r = Repro::new();
    let admin = r.govern(None);
    let bad = r.write(
        "bad.toml",
        "# every quarter\nrevalidate_every = \"90 days\"\n\n[stages.validated]\n",
    );
    let out = r.run(&[
        "policy",
        "set",
        bad.to_str().unwrap(),
        "--key",
        admin.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:2:20`", bad.display()))
            && err.contains("`revalidate_every = \"90 days\"` is not a duration")
            && err.contains("hint: "),
        "{err}"
    );
    let good = r.write("good.toml", POLICY);
    let out = r.run(&[
        "policy",
        "set",
        good.to_str().unwrap(),
        "--key",
        admin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, doc) = status(&r, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(doc["policy"]["revalidate_every"], "90d");
    let out = r.run(&["status"]);
    assert!(
        stdout(&out).contains("revalidate every 90d"),
        "{}",
        stdout(&out)
    );
}

/// Governance files that disagree with the signed log: `repro status`
/// refuses (exit 3), as `repro registry list` does.
#[test]
fn status_refuses_a_store_whose_governance_was_tampered_with() {
    let r = Repro::new();
    r.govern(Some(POLICY));
    std::fs::write(r.store().join("v1/policy.toml"), "[stages.validated]\n").unwrap();
    let out = r.run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not the policy in force"),
        "{}",
        stderr(&out)
    );
}
