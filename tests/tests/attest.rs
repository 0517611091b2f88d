//! Verification attestations: `repro verify` signs what it found; another
//! party's attestation is imported only when its signature checks out and
//! it is about a record of this store. Runs on the native sandbox.

mod common;

use std::path::Path;

use common::{stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "attested"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "write"
toolchain = "bb"
argv = ["sh", "-c", "echo hello > /repro/out/hello.txt"]
outputs = ["hello.txt"]
"#;

fn party(name: &str) -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::new();
    let out = r.run(&[
        "key",
        "generate",
        "--name",
        name,
        "--email",
        &format!("{}@example.com", name.to_lowercase()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    r
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The attestation blobs of the store, newest last.
fn attestation_files(r: &Repro) -> Vec<std::path::PathBuf> {
    let refs = r.store().join("v1/refs/attestations");
    let mut out = Vec::new();
    for rec in std::fs::read_dir(refs).unwrap() {
        for a in std::fs::read_dir(rec.unwrap().path()).unwrap() {
            let name = a.unwrap().file_name().into_string().unwrap();
            out.push(r.blob_path(&format!("sha256:{name}")));
        }
    }
    out
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn verify_signs_an_attestation_that_lists_the_verifier_and_result() {
    let a = party("Alice");
    let out = a.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.run(&["verify", "attested@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("attestation sha256:"),
        "{}",
        stdout(&out)
    );

    let out = a.run(&["attest", "list", "attested@1"]);
    let text = stdout(&out);
    assert!(text.starts_with("PASSED"), "{text}");
    assert!(text.contains("by Alice <alice@example.com>"), "{text}");
    assert!(text.contains("[signature ok]"), "{text}");

    let out = a.run(&["attest", "list", "--json", "attested@1"]);
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &docs[0]["statement"];
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        st["predicateType"],
        "https://slsa.dev/verification_summary/v1"
    );
    assert_eq!(st["predicate"]["verificationResult"], "PASSED");
    // What repro adds to the VSA rides on the record's subject (first);
    // the model file follows it.
    assert_eq!(st["subject"][0]["name"], "record:attested@1");
    let details = &st["subject"][0]["annotations"]["repro"];
    assert_eq!(details["steps"][0]["reproduced"], true);
    assert!(details["platform"]["backend"]
        .as_str()
        .unwrap()
        .starts_with("native"));
    assert_eq!(details["identity"]["name"], "Alice");
    assert_eq!(
        details["verifiedLevels"],
        serde_json::json!(["REPRO_REBUILT_BYTE_FOR_BYTE"])
    );
    assert_eq!(st["subject"][1]["name"], "write/hello.txt");
    assert_eq!(
        st["subject"][1]["digest"]["sha256"],
        sha256_hex(b"hello\n").as_str()
    );
    assert_eq!(st["subject"].as_array().unwrap().len(), 2);
    assert!(st["predicate"].get("repro").is_none(), "{st}");
    assert_eq!(docs[0]["signature"]["ok"], true);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn another_partys_attestation_is_imported_only_if_signed_by_a_trusted_key_and_about_our_record() {
    let a = party("Alice");
    let out = a.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The validation team rebuilds from a copy of the evidence, with its own key.
    let b = party("Bob");
    std::fs::remove_dir_all(b.store()).ok();
    copy_tree(&a.store(), &b.store());
    let out = b.run(&["verify", "attested@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bobs = attestation_files(&b);
    assert_eq!(bobs.len(), 1);
    let bobs_pub = b.tmp.path().join("signing.key.pub");

    // Bob's key is unknown to Alice's store: refused.
    let out = a.run(&["attest", "import", bobs[0].to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signed by unknown key"),
        "{}",
        stderr(&out)
    );

    // With Bob's public key: imported, listed with his name.
    let out = a.run(&[
        "attest",
        "import",
        bobs[0].to_str().unwrap(),
        "--key",
        bobs_pub.to_str().unwrap(),
        "--for",
        "attested@1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("PASSED of attested@1 by Bob <bob@example.com>"),
        "{}",
        stdout(&out)
    );
    let list = stdout(&a.run(&["attest", "list", "attested@1"]));
    assert!(
        list.contains("by Bob <bob@example.com>") && list.contains("[signature ok]"),
        "{list}"
    );

    // An attestation of another record (Bob builds a different model): refused.
    b.write(
        "model.toml",
        &RECIPE
            .replace("echo hello", "echo bonjour")
            .replace("version = \"1\"", "version = \"2\""),
    );
    assert!(b.run(&["build", "model.toml"]).status.success());
    assert!(b.run(&["verify", "attested@2"]).status.success());
    let other = attestation_files(&b)
        .into_iter()
        .find(|p| p != &bobs[0])
        .unwrap();
    let out = a.run(&[
        "attest",
        "import",
        other.to_str().unwrap(),
        "--key",
        bobs_pub.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("which is not in this store"),
        "{}",
        stderr(&out)
    );

    // A forged attestation (payload changed after signing): refused as
    // tampered evidence (exit 3), named by its digest.
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bobs[0]).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    env["payload"] = b64
        .encode(payload.replace("\"PASSED\"", "\"FAILED\""))
        .into();
    let forged = a.write("forged.json", &env.to_string());
    let out = a.run(&[
        "attest",
        "import",
        forged.to_str().unwrap(),
        "--key",
        bobs_pub.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fails its signature check")
            && stderr(&out).contains("the attestation was changed after it was signed"),
        "{}",
        stderr(&out)
    );
}
