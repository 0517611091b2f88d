//! `repro gc`: keeps everything a retained version needs (verify still
//! passes), frees the rest, `--dry-run` deletes nothing and reports the same
//! figures, pins beat retention rules, and a collection waits for builds.
//! The tests that build need root and user namespaces (native sandbox).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{stderr, stdout, Repro};

/// Version `version` writes a file unique to it and one shared by all versions.
fn recipe(version: &str, extra_step: &str) -> String {
    format!(
        r#"
[model]
name = "kept"
version = "{version}"

[toolchains.bb]
archive = "image"

[[steps]]
name = "write"
toolchain = "bb"
argv = ["sh", "-c", "{extra_step}echo only in {version} > /repro/out/unique.txt; echo same everywhere > /repro/out/shared.txt"]
outputs = ["unique.txt", "shared.txt"]
"#
    )
}

fn builder() -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r
}

fn build(r: &Repro, version: &str) -> serde_json::Value {
    r.write("model.toml", &recipe(version, ""));
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "build {version}: {}", stderr(&out));
    doc
}

/// The digest of `file` among the outputs of the build document's first step.
fn output_digest(doc: &serde_json::Value, file: &str) -> String {
    doc["steps"][0]["files"][file]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no `{file}` in {doc}"))
        .to_string()
}

fn gc_json(r: &Repro, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["gc", "--json"];
    a.extend_from_slice(args);
    let out = r.run(&a);
    assert!(out.status.success(), "gc {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("gc --json: {e}: {}", stdout(&out)))
}

/// Every file under the store, relative, for before/after comparisons.
fn store_files(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// The figures of a report, without what differs between a dry run and a real one.
fn figures(doc: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "versions": doc["versions"],
        "removed": doc["removed"],
        "freed_bytes": doc["freed_bytes"],
        "kept_blobs": doc["kept_blobs"],
        "kept_bytes": doc["kept_bytes"],
        "items": doc["items"],
    })
}

fn fate<'a>(doc: &'a serde_json::Value, model: &str) -> &'a serde_json::Value {
    doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["model"] == model)
        .unwrap_or_else(|| panic!("no `{model}` in {doc}"))
}

fn assert_fsck_clean(r: &Repro) {
    let out = r.run(&["fsck"]);
    assert!(out.status.success(), "fsck: {}", stderr(&out));
    assert!(stderr(&out).contains("all intact"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn gc_keeps_what_a_retained_version_needs_and_frees_the_rest() {
    let r = builder();
    let one = build(&r, "1");
    let two = build(&r, "2");
    let unique1 = output_digest(&one, "unique.txt");
    let unique2 = output_digest(&two, "unique.txt");
    let shared = output_digest(&one, "shared.txt");
    assert_eq!(shared, output_digest(&two, "shared.txt"));
    let tree1 = one["steps"][0]["output"].as_str().unwrap().to_string();
    let out = r.run(&["verify", "kept@2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Without rules everything that has a record stays.
    let doc = gc_json(&r, &["--dry-run"]);
    assert_eq!(fate(&doc, "kept@1")["retained"], true, "{doc}");
    assert_eq!(fate(&doc, "kept@2")["retained"], true, "{doc}");
    assert!(doc["removed"].get("blob").is_none(), "{doc}");

    // Only the latest version is retained: a dry run lists, deletes nothing.
    let before = store_files(&r.store());
    let dry = gc_json(&r, &["--dry-run", "--verbose", "--keep-latest", "1"]);
    assert_eq!(
        store_files(&r.store()),
        before,
        "--dry-run deleted something"
    );
    assert_eq!(fate(&dry, "kept@1")["retained"], false, "{dry}");
    assert_eq!(fate(&dry, "kept@2")["reasons"][0], "latest 1", "{dry}");
    assert_eq!(dry["removed"]["record"]["count"], 1, "{dry}");
    assert!(dry["freed_bytes"].as_u64().unwrap() > 0, "{dry}");
    let listed: Vec<&str> = dry["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&unique1.as_str()), "{listed:?}");
    assert!(listed.contains(&tree1.as_str()), "{listed:?}");
    assert!(!listed.contains(&shared.as_str()), "{listed:?}");
    let text = r.run(&["gc", "--dry-run", "--keep-latest", "1"]);
    assert!(
        stdout(&text).contains("would drop kept@1"),
        "{}",
        stdout(&text)
    );
    assert!(stdout(&text).contains("would free"), "{}", stdout(&text));

    // The real run removes exactly that and reports the same figures.
    let real = gc_json(&r, &["--verbose", "--keep-latest", "1"]);
    assert_eq!(real["dry_run"], false);
    assert_eq!(figures(&real), figures(&dry));
    assert!(!r.blob_path(&unique1).exists(), "v1's own output stayed");
    assert!(!r.blob_path(&tree1).exists(), "v1's output tree stayed");
    assert!(r.blob_path(&shared).exists(), "a blob v2 shares went");
    assert!(r.blob_path(&unique2).exists());
    let out = r.run(&["verify", "kept@1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no record of `kept` version `1`"),
        "{}",
        stderr(&out)
    );
    assert_fsck_clean(&r);

    // Nothing is left to collect, and v2 still verifies, attestations and all.
    let again = gc_json(&r, &["--keep-latest", "1"]);
    assert_eq!(again["freed_bytes"], 0, "{again}");
    let out = r.run(&["verify", "kept@2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = r.run(&["attest", "list", "--json", "kept@2"]);
    let atts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(atts.as_array().unwrap().len(), 2, "{atts}");
    // A rebuild hits the cache: the action cache entry of v2 survived.
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(common::statuses(&doc), ["write=cached"]);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_pinned_version_survives_an_age_rule() {
    let r = builder();
    let one = build(&r, "1");
    build(&r, "2");
    let out = r.run(&["pin", "kept@1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The retention file drops everything older than 0 days: all but the pin.
    std::fs::write(r.store().join("v1/retention.toml"), "keep_days = 0\n").unwrap();
    let doc = gc_json(&r, &[]);
    assert_eq!(fate(&doc, "kept@1")["reasons"][0], "pinned", "{doc}");
    assert_eq!(fate(&doc, "kept@2")["retained"], false, "{doc}");
    assert!(r.blob_path(&output_digest(&one, "unique.txt")).exists());
    let out = r.run(&["verify", "kept@2"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = r.run(&["verify", "kept@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_fsck_clean(&r);

    // Unpinned, it goes too: only the image, which nothing needs now, remains
    // to drop; the builder's public key stays, as the audit log's entries
    // are signed with it.
    let out = r.run(&["unpin", "kept@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["unpin", "kept@1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not pinned"), "{}", stderr(&out));
    let doc = gc_json(&r, &[]);
    assert_eq!(fate(&doc, "kept@1")["retained"], false, "{doc}");
    assert_eq!(doc["removed"]["image"]["count"], 1, "{doc}");
    assert_eq!(doc["kept_blobs"], 1, "{doc}");
    assert_eq!(doc["kept_bytes"], 32, "an ed25519 public key: {doc}");
    let out = r.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!r.store().join("v1/refs/records/kept").exists());
    assert_fsck_clean(&r);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn gc_waits_for_a_running_build() {
    let r = builder();
    r.write("model.toml", &recipe("1", "sleep 4; "));
    let mut build = r.std_cmd().args(["build", "model.toml"]).spawn().unwrap();
    // Wait until the build holds the store lock.
    let store = repro_store::Store::open(&r.store()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.try_lock_exclusive().unwrap() {
            None => break,
            Some(l) => drop(l),
        }
        assert!(
            build.try_wait().unwrap().is_none(),
            "the build ended before it was seen holding the lock"
        );
        assert!(Instant::now() < deadline, "the build never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = r.run(&["gc", "--no-wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is in use by a running build"),
        "{}",
        stderr(&out)
    );

    let out = r.run(&["gc", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for running builds to finish"),
        "{}",
        stderr(&out)
    );
    // The collection ended only after the build had.
    let status = build
        .try_wait()
        .unwrap()
        .expect("gc finished while the build was still running");
    assert!(status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fate(&doc, "kept@1")["retained"], true, "{doc}");
    let out = r.run(&["verify", "kept@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn gc_frees_unreferenced_snapshots_and_keeps_pinned_ones() {
    let r = Repro::new();
    std::fs::create_dir_all(r.work().join("a")).unwrap();
    std::fs::create_dir_all(r.work().join("b")).unwrap();
    r.write("a/file.txt", "only in a\n");
    r.write("b/file.txt", "only in b\n");
    r.write("a/common.txt", "in both\n");
    r.write("b/common.txt", "in both\n");
    let snap = |dir: &str| {
        let out = r.run(&["data", "add", dir]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let a = snap("a");
    let b = snap("b");
    let out = r.run(&["pin", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A stale temp file from a killed process, and a fresh one that may be in use.
    let old = r.store().join("v1/tmp/.w-stale");
    std::fs::write(&old, b"half written").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let fresh = r.store().join("v1/tmp/.w-fresh");
    std::fs::write(&fresh, b"being written").unwrap();

    let before = store_files(&r.store());
    let dry = gc_json(&r, &["--dry-run"]);
    assert_eq!(
        store_files(&r.store()),
        before,
        "--dry-run deleted something"
    );
    // b's tree and its own file go; the common file is a's too.
    assert_eq!(dry["removed"]["blob"]["count"], 2, "{dry}");
    assert_eq!(dry["removed"]["tmp"]["count"], 1, "{dry}");
    let only_b = "only in b\n".len() as u64;
    let tree_b = std::fs::metadata(r.blob_path(&b)).unwrap().len();
    assert_eq!(
        dry["removed"]["blob"]["bytes"].as_u64(),
        Some(only_b + tree_b),
        "{dry}"
    );

    let text = r.run(&["gc", "--verbose"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    assert!(text.contains("removed 2 blobs"), "{text}");
    assert!(text.contains(&format!("blob {b}")), "{text}");
    assert!(!r.blob_path(&b).exists());
    assert!(r.blob_path(&a).exists());
    assert!(!old.exists());
    assert!(fresh.exists());
    let out = r.run(&["fsck"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Unpinned, a goes as well.
    let out = r.run(&["unpin", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = gc_json(&r, &[]);
    assert_eq!(doc["removed"]["blob"]["count"], 3, "{doc}");
    assert!(!r.blob_path(&a).exists());
}

#[test]
fn gc_no_wait_fails_and_gc_waits_while_the_store_is_held_shared() {
    let r = Repro::new();
    let store = repro_store::Store::open(&r.store()).unwrap();
    let held = store.lock_shared().unwrap();

    let out = r.run(&["gc", "--no-wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is in use by a running build"), "{err}");
    assert!(err.contains("hint:"), "{err}");

    let mut gc = r.std_cmd().args(["gc"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        gc.try_wait().unwrap().is_none(),
        "gc did not wait for the shared lock"
    );
    drop(held);
    let out = gc.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for running builds to finish"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("nothing to remove"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bad_retention_file_is_refused_naming_it() {
    let r = Repro::new();
    std::fs::create_dir_all(r.store().join("v1")).unwrap();
    std::fs::write(r.store().join("v1/retention.toml"), "keep_lastest = 2\n").unwrap();
    let out = r.run(&["gc", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("retention.toml`"), "{err}");
    assert!(err.contains("keep_lastest"), "{err}");
}
