//! `repro fsck`: walks from every root of the store (record refs and what
//! the records name, attestations, approvals, the action cache, pins,
//! identities, cards, stages) and names every missing object (with what
//! needs it), corrupt blob, record, attestation or approval whose signature
//! does not check out, and unparseable ref; exit 3 when anything is wrong.
//! The tests that build need root and user namespaces (native sandbox).

mod common;

use std::path::{Path, PathBuf};

use common::{forge, put_blob, sha256, stderr, Repro};

const MODEL: &str = "fraud";

fn recipe(version: &str) -> String {
    format!(
        r#"
[model]
name = "{MODEL}"
version = "{version}"

[toolchains.bb]
archive = "image"

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "echo weights of {version} > /repro/out/model.pkl; echo '{{\"auc\": 0.9}}' > /repro/out/metrics.json; echo training"]
outputs = ["model.pkl", "metrics.json"]
"#
    )
}

fn builder() -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r
}

/// Build `fraud@<version>`; returns the `--json` build document.
fn build(r: &Repro, version: &str) -> serde_json::Value {
    r.write("model.toml", &recipe(version));
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "build {version}: {}", stderr(&out));
    doc
}

fn output_digest(doc: &serde_json::Value, file: &str) -> String {
    doc["steps"][0]["files"][file]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no `{file}` in {doc}"))
        .to_string()
}

fn record_of(doc: &serde_json::Value) -> String {
    doc["record"].as_str().unwrap().to_string()
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// `repro fsck`: the exit code and stderr.
fn fsck(r: &Repro) -> (Option<i32>, String) {
    let out = r.run(&["fsck"]);
    (out.status.code(), stderr(&out))
}

/// `repro fsck --json`: the exit code and the document.
fn fsck_json(r: &Repro) -> (Option<i32>, serde_json::Value) {
    let out = r.run(&["fsck", "--json"]);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck --json: {e}: {}", stderr(&out)));
    (out.status.code(), doc)
}

fn problems(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list in {doc}"))
}

/// The problems of `doc` about `digest`.
fn about<'a>(doc: &'a serde_json::Value, digest: &str) -> Vec<&'a serde_json::Value> {
    problems(doc)
        .iter()
        .filter(|p| p["digest"] == digest)
        .collect()
}

fn assert_clean(r: &Repro) {
    let (code, err) = fsck(r);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("objects ("), "{err}");
    assert!(err.contains("bytes): all intact"), "{err}");
    let (code, doc) = fsck_json(r);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["ok"], true, "{doc}");
    assert!(problems(&doc).is_empty(), "{doc}");
    assert!(doc["objects"].as_u64().unwrap() > 0, "{doc}");
}

/// Re-sign nothing: change the payload of the DSSE envelope `bytes` with
/// `edit` and keep its signatures, as a forger without the key would.
fn remove_blob(r: &Repro, digest: &str) {
    std::fs::remove_file(r.blob_path(digest)).unwrap();
}

fn approvals_dir(r: &Repro, record: &str) -> PathBuf {
    r.store().join("v1/refs/approvals").join(hex(record))
}

/// A new key for `name`, registered with the role `validator`.
fn validator(r: &Repro, name: &str) -> PathBuf {
    let key = r.tmp.path().join(format!("{name}.key"));
    let out = r.run(&["key", "generate", "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pubkey = format!("{}.pub", key.display());
    let email = format!("{name}@example.com");
    if !r.admin_key().exists() {
        r.govern(None);
    }
    let admin = r.admin_key();
    let out = r.run(&[
        "identity",
        "add",
        &pubkey,
        "--name",
        name,
        "--email",
        &email,
        "--role",
        "validator",
        "--key",
        admin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    key
}

fn approve(r: &Repro, key: &Path, model: &str) {
    let out = r.run(&[
        "approve",
        model,
        "--role",
        "validator",
        "--reason",
        "reviewed",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_store_after_a_build_a_verification_and_an_approval_is_all_intact() {
    let r = builder();
    build(&r, "1.0.0");
    assert_clean(&r);
    let out = r.run(&["verify", "fraud@1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bob = validator(&r, "bob");
    approve(&r, &bob, "fraud@1.0.0");
    let out = r.run(&["card", "fraud@1.0.0", "-o", "card"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["pin", "fraud@1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&r);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_deleted_blob_that_a_record_names_is_reported_missing_with_who_needs_it() {
    let r = builder();
    let doc = build(&r, "1.0.0");
    let model = output_digest(&doc, "model.pkl");
    let log = doc["steps"][0]["log"].as_str().unwrap().to_string();
    remove_blob(&r, &model);
    remove_blob(&r, &log);

    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "blob {model} (file `model.pkl` of step `train` of fraud@1.0.0) is missing"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "blob {log} (log of step `train` of fraud@1.0.0) is missing"
        )),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains("all intact"), "{err}");

    let (code, doc) = fsck_json(&r);
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(doc["ok"], false, "{doc}");
    let found = about(&doc, &model);
    assert_eq!(found.len(), 1, "{doc}");
    assert_eq!(found[0]["kind"], "missing", "{doc}");
    assert_eq!(
        found[0]["referenced_by"], "file `model.pkl` of step `train` of fraud@1.0.0",
        "{doc}"
    );
    assert_eq!(about(&doc, &log)[0]["kind"], "missing", "{doc}");
    // Nothing else is wrong.
    assert_eq!(problems(&doc).len(), 2, "{doc}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_deleted_record_blob_is_reported_missing_naming_the_version() {
    let r = builder();
    let record = record_of(&build(&r, "1.0.0"));
    remove_blob(&r, &record);
    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "record {record} (record of fraud@1.0.0) is missing"
        )),
        "{err}"
    );
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_ref_to_a_stored_record_whose_signature_does_not_check_out_is_reported() {
    let r = builder();
    let record = record_of(&build(&r, "1.0.0"));
    let bytes = std::fs::read(r.blob_path(&record)).unwrap();
    // Claim another finish time, keeping the old signature: the blob is
    // stored intact under its own digest, only the signature gives it away.
    let forged = forge(&bytes, |s| {
        s["predicate"]["runDetails"]["metadata"]["finishedOn"] = "2020-01-01T00:00:00Z".into();
    });
    let forged_digest = put_blob(&r, &forged);
    assert_eq!(forged_digest, sha256(&forged));
    std::fs::write(
        r.store().join("v1/refs/records/fraud/1.0.0"),
        format!("{forged_digest}\n"),
    )
    .unwrap();

    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "record {forged_digest} (record of fraud@1.0.0) does not check out"
        )),
        "{err}"
    );
    assert!(err.contains("signature"), "{err}");
    let (code, doc) = fsck_json(&r);
    assert_eq!(code, Some(3), "{doc}");
    let found = about(&doc, &forged_digest);
    assert_eq!(found.len(), 1, "{doc}");
    assert_eq!(found[0]["kind"], "bad-signature", "{doc}");
    assert_eq!(found[0]["referenced_by"], "record of fraud@1.0.0", "{doc}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_ref_to_a_record_of_another_version_is_reported() {
    let r = builder();
    let one = record_of(&build(&r, "1.0.0"));
    build(&r, "2.0.0");
    // The ref of 2.0.0 names 1.0.0's record: signed, intact, and wrong.
    std::fs::write(
        r.store().join("v1/refs/records/fraud/2.0.0"),
        format!("{one}\n"),
    )
    .unwrap();
    let (code, doc) = fsck_json(&r);
    assert_eq!(code, Some(3), "{doc}");
    let found = about(&doc, &one);
    assert_eq!(found.len(), 1, "{doc}");
    assert_eq!(found[0]["kind"], "mismatch", "{doc}");
    let message = found[0]["message"].as_str().unwrap();
    assert!(message.contains("fraud@2.0.0"), "{message}");
    assert!(message.contains("fraud@1.0.0"), "{message}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_corrupt_blob_is_named_with_who_needs_it() {
    let r = builder();
    let doc = build(&r, "1.0.0");
    let model = output_digest(&doc, "model.pkl");
    common::flip_byte(&r.blob_path(&model), 0);
    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "blob {model} (file `model.pkl` of step `train` of fraud@1.0.0) is corrupt"
        )),
        "{err}"
    );
    assert!(err.contains("hash to"), "{err}");
    let (_, doc) = fsck_json(&r);
    let found = about(&doc, &model);
    assert_eq!(found.len(), 1, "{doc}");
    assert_eq!(found[0]["kind"], "corrupt", "{doc}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_forged_attestation_is_reported() {
    let r = builder();
    let record = record_of(&build(&r, "1.0.0"));
    let out = r.run(&["verify", "fraud@1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = r.store().join("v1/refs/attestations").join(hex(&record));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let genuine = format!("sha256:{}", names[0]);
    let bytes = std::fs::read(r.blob_path(&genuine)).unwrap();
    let forged = forge(&bytes, |s| {
        s["predicate"]["timeVerified"] = "2020-01-01T00:00:00Z".into();
    });
    let forged_digest = put_blob(&r, &forged);
    std::fs::write(dir.join(hex(&forged_digest)), b"").unwrap();

    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!("attestation {forged_digest}")) && err.contains("does not check out"),
        "{err}"
    );
    assert!(!err.contains(&genuine), "the genuine one is fine: {err}");
    let (_, doc) = fsck_json(&r);
    let found = about(&doc, &forged_digest);
    assert_eq!(found.len(), 1, "{doc}");
    assert_eq!(found[0]["kind"], "bad-signature", "{doc}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_forged_approval_is_reported() {
    let r = builder();
    let record = record_of(&build(&r, "1.0.0"));
    let bob = validator(&r, "bob");
    approve(&r, &bob, "fraud@1.0.0");
    let dir = approvals_dir(&r, &record);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let bytes = std::fs::read(dir.join(&names[0])).unwrap();
    // Bob approved as a validator; the forger makes it say more. The file
    // is named after its new content, as a genuine one is.
    let forged = forge(&bytes, |s| {
        s["predicate"]["role"] = "model-risk".into();
    });
    let forged_digest = sha256(&forged);
    std::fs::write(dir.join(hex(&forged_digest)), &forged).unwrap();

    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!("approval {forged_digest}")) && err.contains("does not check out"),
        "{err}"
    );
    assert!(!err.contains(&names[0]), "the genuine one is fine: {err}");
    let (_, doc) = fsck_json(&r);
    let found = about(&doc, &forged_digest);
    assert_eq!(found.len(), 1, "{doc}");
    assert_eq!(found[0]["kind"], "bad-signature", "{doc}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_collection_that_drops_an_approved_version_leaves_fsck_clean() {
    let r = builder();
    build(&r, "1.0.0");
    let bob = validator(&r, "bob");
    approve(&r, &bob, "fraud@1.0.0");
    let out = r.run(&["card", "fraud@1.0.0", "-o", "card"]);
    assert!(out.status.success(), "{}", stderr(&out));
    build(&r, "2.0.0");
    let out = r.run(&["gc", "--keep-latest", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // 1.0.0's approval and card ref stay (gc does not remove them) but its
    // record went: worth a note, not an error. Bob's public key stays (gc
    // keeps the keys of registered identities and audit signers).
    let (code, err) = fsck(&r);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("all intact"), "{err}");
    assert!(err.contains("note: the approvals in"), "{err}");
    assert!(!err.contains("of identity bob <bob@example.com>"), "{err}");
}

/// Refs that do not parse are named, with their file; no build needed.
#[test]
fn unparseable_refs_are_named() {
    let r = Repro::new();
    let v1 = r.store().join("v1");
    std::fs::create_dir_all(v1.join("refs/records/fraud")).unwrap();
    std::fs::write(v1.join("refs/records/fraud/1.0.0"), "not a digest\n").unwrap();
    std::fs::create_dir_all(v1.join("ac")).unwrap();
    let key = "ab".repeat(32);
    std::fs::write(v1.join("ac").join(&key), "{half an entry").unwrap();
    std::fs::create_dir_all(v1.join("refs/pins/objects")).unwrap();
    std::fs::write(v1.join("refs/pins/objects/not-a-digest"), "").unwrap();

    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    for path in [
        "refs/records/fraud/1.0.0",
        &format!("ac/{key}"),
        "refs/pins/objects/not-a-digest",
    ] {
        assert!(err.contains(path), "`{path}` not named: {err}");
    }
    assert!(err.contains("hint:"), "{err}");
    let (code, doc) = fsck_json(&r);
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(problems(&doc).len(), 3, "{doc}");
    assert!(
        problems(&doc).iter().all(|p| p["kind"] == "malformed"),
        "{doc}"
    );
}

/// An empty store is intact; a store whose only blob is corrupt is not,
/// even when nothing refers to the blob.
#[test]
fn an_unreferenced_corrupt_blob_is_still_found() {
    let r = Repro::new();
    let (code, err) = fsck(&r);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("checked 0 objects (0 bytes): all intact"),
        "{err}"
    );
    let d = put_blob(&r, b"some bytes");
    common::flip_byte(&r.blob_path(&d), 0);
    let (code, err) = fsck(&r);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&format!("blob {d}")), "{err}");
    assert!(err.contains("is corrupt"), "{err}");
}
