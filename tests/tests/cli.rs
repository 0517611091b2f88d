//! Command-line behaviour that needs no Docker: recipe errors end to end,
//! exit codes, keys, data snapshots, the schema.

mod common;

use std::path::Path;

use common::{stderr, stdout, Repro};

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../recipes/tests/fixtures"
    ))
}

/// `repro build` on each recipe fixture prints exactly the diagnostic the
/// recipes crate promises, and exits 2 (the user's input is wrong).
#[test]
fn recipe_errors_reach_the_user_exactly_with_exit_code_2() {
    let r = Repro::with_key();
    for case in [
        "syntax-error",
        "unknown-key-top",
        "unknown-key-step",
        "duplicate-step",
        "escaping-outputs",
        "missing-step-needs",
        "missing-step-input",
        "locked-unpinned",
        "no-steps",
        "cycle",
        "duplicate-table",
        "duplicate-key",
        "threads-not-a-number",
        "version-placeholder",
    ] {
        let toml = std::fs::read_to_string(fixtures().join(format!("{case}.toml"))).unwrap();
        let expected = std::fs::read_to_string(fixtures().join(format!("{case}.stderr"))).unwrap();
        r.write(&format!("{case}.toml"), &toml);
        let mut args = vec!["build"];
        if let Ok(lock) = std::fs::read_to_string(fixtures().join(format!("{case}.lock"))) {
            r.write(&format!("{case}.lock"), &lock);
            args.push("--locked");
        }
        let file = format!("{case}.toml");
        args.push(&file);
        let out = r.run(&args);
        assert_eq!(out.status.code(), Some(2), "{case}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim_end(), expected.trim_end(), "{case}");
    }
}

#[test]
fn a_cycle_names_its_steps() {
    let r = Repro::with_key();
    r.write(
        "model.toml",
        r#"
[model]
name = "cyclic"
version = "1"

[toolchains.t]
image = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

[[steps]]
name = "a"
toolchain = "t"
argv = ["true"]
needs = ["c"]

[[steps]]
name = "b"
toolchain = "t"
argv = ["true"]
inputs = { from_a = "steps.a" }

[[steps]]
name = "c"
toolchain = "t"
argv = ["true"]
needs = ["b"]
"#,
    );
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: steps form a cycle: `c` needs `b`, which needs `a`, which needs `c`\n  --> model.toml:25:10\n  = key: steps[2].needs[0]\n  = hint: a step runs after the steps it needs; remove one of these dependencies: `steps[0].needs[0]` (line 13), `steps[1].inputs.from_a` (line 19), `steps[2].needs[0]` (line 25)\n"
    );
    // Refused before anything is resolved or built: no record.
    let records = std::fs::read_dir(r.store().join("v1/refs/records"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0);
}

/// A recipe of a pinned image and data in a folder, for the resolution errors.
const ONE_STEP: &str = r#"
[model]
name = "m"
version = "1"

[toolchains.t]
image = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

[data.x]
path = "inputs/x"

[[steps]]
name = "s"
toolchain = "t"
argv = ["true"]
inputs = { x = "data.x" }
"#;

#[test]
fn a_missing_data_folder_is_named_at_its_key_with_the_path_resolved() {
    let r = Repro::with_key();
    r.write("recipes/model.toml", ONE_STEP);
    let folder = r.work().canonicalize().unwrap().join("recipes");
    for command in ["lock", "build"] {
        let out = r.run(&[command, "recipes/model.toml"]);
        assert_eq!(out.status.code(), Some(3), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        let expected = format!(
            "error: data folder `{}/inputs/x` does not exist\n  --> recipes/model.toml:10:8\n  = key: data.x.path\n  = hint: `path` is relative to the recipe's folder `{}`; correct it, or put the data there\n",
            folder.display(),
            folder.display()
        );
        assert!(err.ends_with(&expected), "{command}: {err}");
    }
}

#[test]
fn an_archive_that_is_no_image_is_named_at_its_key() {
    let r = Repro::with_key();
    r.write(
        "model.toml",
        &ONE_STEP
            .replace(
                "image = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"",
                "archive = \"images/notes.txt\"",
            )
            .replace("path = \"inputs/x\"", "digest = \"sha256:2222222222222222222222222222222222222222222222222222222222222222\""),
    );
    r.write("images/notes.txt", "not an image\n");
    let archive = r.work().canonicalize().unwrap().join("images/notes.txt");
    for command in ["lock", "build"] {
        let out = r.run(&[command, "model.toml"]);
        assert_eq!(out.status.code(), Some(3), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        let expected = format!(
            "error: `{}` is neither an OCI image layout nor a docker archive\n  --> model.toml:7:11\n  = key: toolchains.t.archive\n  = hint: pass a directory or tar holding `oci-layout` and `index.json`, or the output of `docker save`\n",
            archive.display()
        );
        assert!(err.ends_with(&expected), "{command}: {err}");
    }
}

/// An attestation whose signature does not match its statement is
/// tampered evidence (exit 3), named by its digest, not a wrong argument;
/// one signed by a key nobody gave is the user's to settle (exit 2).
#[test]
fn a_forged_attestation_is_refused_as_tampered_with_exit_3() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let r = Repro::with_key();
    let show = stdout(&r.run(&["key", "show"]));
    let keyid = show
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_string();
    // A statement with a signature of that key that was never made for it.
    let b64 = base64::engine::general_purpose::STANDARD;
    let envelope = serde_json::json!({
        "payload": b64.encode(br#"{"_type":"https://in-toto.io/Statement/v1"}"#),
        "payloadType": "application/vnd.in-toto+json",
        "signatures": [{ "keyid": keyid, "sig": b64.encode([7u8; 64]) }],
    });
    let bytes = serde_json::to_vec(&envelope).unwrap();
    let file = r.write("forged.json", std::str::from_utf8(&bytes).unwrap());
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let public = r.tmp.path().join("signing.key.pub");
    // With the key given, and with the key the store holds already.
    for key in [vec!["--key", public.to_str().unwrap()], vec![]] {
        let mut args = vec!["attest", "import", file.to_str().unwrap()];
        args.extend(&key);
        let out = r.run(&args);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "error: refused: attestation {digest} fails its signature check: the signature of key `{keyid}` does not match the attestation's statement: the attestation was changed after it was signed\n"
            )),
            "{err}"
        );
        assert!(!err.contains("record"), "{err}");
    }

    // Signed by a key nobody gave: exit 2, as before.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let file = r.write(
        "unknown.json",
        &String::from_utf8(bytes).unwrap().replace(&keyid, &unknown),
    );
    let out = r.run(&["attest", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signed by unknown key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unpinned_inputs_are_refused_under_locked_without_a_lock() {
    let r = Repro::with_key();
    r.write(
        "model.toml",
        r#"
[model]
name = "m"
version = "1"

[toolchains.t]
archive = "image.tar"

[data.d]
path = "data"

[[steps]]
name = "s"
toolchain = "t"
argv = ["true"]
inputs = { d = "data.d" }
"#,
    );
    let out = r.run(&["build", "--locked", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("toolchains.t.archive"), "{err}");
    assert!(err.contains("data.d.path"), "{err}");
    assert!(err.contains("repro lock"), "{err}");
}

#[test]
fn data_add_prints_a_stable_digest_that_follows_the_content() {
    let r = Repro::new();
    r.write("d1/a.csv", "x,y\n1,2\n");
    r.write("d1/sub/b.txt", "b");
    r.write("d2/sub/b.txt", "b");
    r.write("d2/a.csv", "x,y\n1,2\n");
    let a = r.run(&["data", "add", "d1"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = r.run(&["data", "add", "d2"]);
    assert_eq!(stdout(&a), stdout(&b));
    assert!(
        stdout(&a).starts_with("sha256:") && stdout(&a).trim().len() == 71,
        "{}",
        stdout(&a)
    );
    r.write("d2/a.csv", "x,y\n1,3\n");
    let c = r.run(&["data", "add", "d2"]);
    assert_ne!(stdout(&a), stdout(&c));
    let missing = r.run(&["data", "add", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("`nope` is not a folder"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn hash_prints_what_the_store_would_record_without_storing_anything() {
    use sha2::{Digest, Sha256};
    let r = Repro::new();
    r.write("d/a.csv", "x,y\n1,2\n");
    r.write("d/sub/b.txt", "b");
    std::os::unix::fs::symlink("a.csv", r.work().join("d/link")).unwrap();
    let file = r.run(&["hash", "d/a.csv"]);
    assert!(file.status.success(), "{}", stderr(&file));
    let want = format!("sha256:{}\n", hex::encode(Sha256::digest(b"x,y\n1,2\n")));
    assert_eq!(stdout(&file), want);
    let tree = r.run(&["hash", "d"]);
    assert!(tree.status.success(), "{}", stderr(&tree));
    assert!(
        !r.store().exists(),
        "`repro hash` must not create or write a store"
    );
    let added = r.run(&["data", "add", "d"]);
    assert_eq!(stdout(&tree), stdout(&added));
    // Several paths: one `<digest>  <path>` line each, in order.
    let both = r.run(&["hash", "d", "d/a.csv"]);
    assert_eq!(
        stdout(&both),
        format!("{}  d\n{}  d/a.csv\n", stdout(&tree).trim(), want.trim())
    );
    let json = r.run(&["hash", "--json", "d/a.csv"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(doc[0]["kind"], "file");
    assert_eq!(doc[0]["size"], 8);
    let missing = r.run(&["hash", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot hash `nope`"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn key_generate_refuses_to_overwrite_and_show_prints_the_id() {
    let r = Repro::new();
    let out = r.run(&["key", "generate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("sha256:"));
    let again = r.run(&["key", "generate"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let show = r.run(&["key", "show"]);
    assert!(stdout(&show).contains(&id), "{}", stdout(&show));
}

#[test]
fn build_without_a_key_says_how_to_make_one() {
    let r = Repro::new();
    r.write("model.toml", "[model]\nname = \"m\"\nversion = \"1\"\n");
    let out = r.run(&["build", "model.toml"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("repro key generate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_of_an_unknown_version_cannot_verify() {
    let r = Repro::with_key();
    let out = r.run(&["verify", "nothing@1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing"), "{}", stderr(&out));
}

#[test]
fn the_schema_command_prints_the_committed_schema() {
    let r = Repro::new();
    let out = r.run(&["schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../recipes/model.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
}
