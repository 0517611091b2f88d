//! Bundles: `repro export` writes one version as a deterministic tar,
//! `repro import` checks every object before anything becomes visible, and
//! an imported version verifies offline (no network, no daemon).
//!
//! `tests/fixtures/bundles/busybox-format1.tar.gz` is a format 1 bundle of
//! [`RECIPE`] built on the busybox test image, kept so that bundles written
//! by format 1 keep importing. Regenerate it (only when the format changes
//! on purpose, as a new fixture beside the old one) by running
//! `export_delete_import_and_verify_offline_in_a_network_namespace` with
//! `REPRO_WRITE_BUNDLE_FIXTURE=<path>`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "bundled"
version = "1"

[toolchains.bb]
archive = "image"

[data.words]
path = "data"

[code.scripts]
path = "src"

[[steps]]
name = "count"
toolchain = "bb"
argv = ["sh", "/repro/in/code/count.sh"]
inputs = { code = "code.scripts", data = "data.words" }
outputs = ["counts.txt", "reports/"]

[[steps]]
name = "summarize"
toolchain = "bb"
argv = ["sh", "-c", "wc -l < /repro/in/counts/reports/sorted.txt > /repro/out/summary.txt"]
inputs = { counts = "steps.count" }
outputs = ["summary.txt"]
"#;

const COUNT_SH: &str = "set -e
wc -w < /repro/in/data/words.txt > /repro/out/counts.txt
mkdir /repro/out/reports
sort /repro/in/data/nested/more.txt > /repro/out/reports/sorted.txt
";

const FIXTURE: &str = "fixtures/bundles/busybox-format1.tar.gz";

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

/// The fixture bundle, decompressed, written into `r`'s work folder.
fn fixture_tar(r: &Repro) -> PathBuf {
    let gz = std::fs::read(fixture_path()).expect("the fixture bundle is committed");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar)
        .expect("the fixture bundle is gzip");
    let p = r.work().join("fixture.tar");
    std::fs::write(&p, tar).unwrap();
    p
}

/// A party with a key, the busybox image, the recipe, its data and code.
fn project() -> Repro {
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    r.write("data/words.txt", "the quick brown fox jumps\n");
    r.write("data/nested/more.txt", "pear\napple\nfig\n");
    r.write("src/count.sh", COUNT_SH);
    r
}

/// `repro <args>` for `r`, run inside a new network namespace: no
/// interface but a loopback that is down.
fn run_offline(r: &Repro, args: &[&str]) -> Output {
    let base = r.std_cmd();
    let mut c = Command::new("unshare");
    c.arg("--net").arg("--").arg(base.get_program()).args(args);
    c.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.current_dir(r.work());
    c.output().expect("run unshare (util-linux)")
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// What a bundle left visible in a store: blobs, refs, the action cache.
fn visible(r: &Repro) -> Vec<String> {
    let v1 = r.store().join("v1");
    let mut out = Vec::new();
    for sub in ["blobs", "refs", "ac", "rootfs"] {
        out.extend(
            files_under(&v1.join(sub))
                .into_iter()
                .map(|f| format!("{sub}/{f}")),
        );
    }
    out.extend(
        files_under(&v1.join("tmp"))
            .into_iter()
            .map(|f| format!("tmp/{f}")),
    );
    out
}

/// The member `name` of the tar at `path`: its data offset and size.
fn member(path: &Path, pred: impl Fn(&str) -> bool) -> (String, u64, u64) {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut best: Option<(String, u64, u64)> = None;
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if pred(&name) && best.as_ref().is_none_or(|b| e.size() > b.2) {
            best = Some((name, e.raw_file_position(), e.size()));
        }
    }
    best.expect("no such member")
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn export_delete_import_and_verify_offline_in_a_network_namespace() {
    repro_tests::require_namespaces();
    let a = project();
    let out = a.run(&["build", "model.toml"]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let out = a.run(&["verify", "bundled@1"]);
    assert_eq!(out.status.code(), Some(0), "verify: {}", stderr(&out));

    // The same version exports to the same bytes, and the digest printed is
    // the digest of the manifest inside.
    let out = a.run(&["export", "bundled@1", "-o", "one.tar"]);
    assert!(out.status.success(), "export: {}", stderr(&out));
    let digest = stdout(&out).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let out = a.run(&["export", "bundled@1", "--output", "two.tar"]);
    assert!(out.status.success(), "export: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), digest);
    let one = std::fs::read(a.work().join("one.tar")).unwrap();
    assert_eq!(one, std::fs::read(a.work().join("two.tar")).unwrap());
    let (_, off, size) = member(&a.work().join("one.tar"), |n| n == "bundle.json");
    let manifest = &one[off as usize..(off + size) as usize];
    assert_eq!(repro_store::Hash::of(manifest).to_string(), digest);
    let doc: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["model"], "bundled@1");
    let kinds: std::collections::BTreeSet<&str> = doc["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for k in [
        "record",
        "attestation",
        "public-key",
        "recipe",
        "lock",
        "image-manifest",
        "image-config",
        "image-layer",
        "tree",
        "file",
        "log",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }

    if let Some(dest) = std::env::var_os("REPRO_WRITE_BUNDLE_FIXTURE") {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&one).unwrap();
        std::fs::write(dest, gz.finish().unwrap()).unwrap();
    }

    // The building machine is gone: its store and its image.
    let bundle = std::env::temp_dir().join(format!("repro-bundle-{}.tar", std::process::id()));
    std::fs::write(&bundle, &one).unwrap();
    drop(a);

    // The auditor's machine: a fresh store, no network at all.
    let b = Repro::with_key();
    let out = run_offline(&b, &["import", bundle.to_str().unwrap()]);
    std::fs::remove_file(&bundle).ok();
    assert!(out.status.success(), "import: {}", stderr(&out));
    let out = run_offline(&b, &["verify", "bundled@1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify offline: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("reproduced: bundled@1 (2 steps, byte for byte)"),
        "{}",
        stdout(&out)
    );
    // The builder's attestation came along, its signature checks out.
    let list = stdout(&b.run(&["attest", "list", "bundled@1"]));
    assert_eq!(list.matches("[signature ok]").count(), 2, "{list}");
}

#[test]
fn the_format_1_fixture_imports_and_exports_again_byte_for_byte() {
    let r = Repro::new();
    let tar = fixture_tar(&r);
    let out = r.run(&["import", tar.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    assert!(
        stdout(&out).trim().starts_with("sha256:"),
        "{}",
        stdout(&out)
    );

    // Refs are registered: the record resolves, the image is known, the
    // attestation is listed and checks out with the key from the bundle.
    let list = stdout(&r.run(&["attest", "list", "bundled@1"]));
    assert!(list.starts_with("PASSED"), "{list}");
    assert!(list.contains("[signature ok]"), "{list}");
    assert_eq!(files_under(&r.store().join("v1/refs/images")).len(), 1);

    // Everything the bundle held is back: exporting gives the same bytes.
    let out = r.run(&["export", "bundled@1", "-o", "again.tar"]);
    assert!(out.status.success(), "export: {}", stderr(&out));
    let again = std::fs::read(r.work().join("again.tar")).unwrap();
    assert!(
        again == std::fs::read(&tar).unwrap(),
        "the re-exported bundle differs from the fixture"
    );

    // Importing twice is harmless.
    let out = r.run(&["import", fixture_path().to_str().unwrap()]);
    assert!(out.status.success(), "import .tar.gz: {}", stderr(&out));
}

/// The fixture was written before attestations kept repro's details on the
/// record's subject and before records named their inputs by content
/// address: its record has `file:data`, `file:src` and `file:image` URIs and
/// its attestation `predicate.repro`. Both read as they did.
#[test]
fn the_format_1_fixtures_old_record_and_attestation_read_as_before() {
    let r = Repro::new();
    let out = r.run(&["import", fixture_path().to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", stderr(&out));

    // The old attestation: its verifier, platform and steps still show.
    let list = stdout(&r.run(&["attest", "list", "bundled@1"]));
    assert!(list.starts_with("PASSED"), "{list}");
    assert!(list.contains(" on AMD EPYC ("), "{list}");
    assert!(list.contains("[signature ok]"), "{list}");
    let out = r.run(&["attest", "list", "--json", "bundled@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &docs[0]["statement"];
    assert_eq!(st["predicate"]["repro"]["model"], "bundled@1", "{st}");
    assert_eq!(
        st["predicate"]["verifiedLevels"][0],
        "REPRO_REBUILT_BYTE_FOR_BYTE"
    );

    // The old record's `file:` URIs: lineage shows them as the origins.
    let out = r.run(&["lineage", "bundled@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("snapshot of: file:data"), "{text}");
    assert!(text.contains("snapshot of: file:src"), "{text}");
    assert!(text.contains(" (file:image)"), "{text}");

    // Garbage collection and fsck read both (the old attestation's steps
    // name output trees gc keeps): a kept version loses nothing, nothing is
    // flagged.
    let out = r.run(&["pin", "bundled@1"]);
    assert!(out.status.success(), "pin: {}", stderr(&out));
    let out = r.run(&["gc", "--keep-days", "0"]);
    assert!(out.status.success(), "gc: {}", stderr(&out));
    let out = r.run(&["fsck"]);
    assert!(
        out.status.success(),
        "fsck: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = r.run(&["export", "bundled@1", "-o", "again.tar"]);
    assert!(out.status.success(), "export after gc: {}", stderr(&out));
    let again = std::fs::read(r.work().join("again.tar")).unwrap();
    assert!(
        again == std::fs::read(fixture_tar(&r)).unwrap(),
        "the bundle exported after gc differs from the fixture"
    );
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn the_format_1_fixture_verifies_after_import() {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    let out = r.run(&["import", fixture_path().to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    let out = r.run(&["verify", "bundled@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("reproduced: bundled@1"),
        "{}",
        stdout(&out)
    );

    // The record written with `file:` URIs verified; its old attestation
    // and the new one (the new shape, naming the model files) are listed
    // side by side, and lineage still reads the record.
    let out = r.run(&["attest", "list", "--json", "bundled@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let docs = docs.as_array().unwrap();
    assert_eq!(docs.len(), 2, "{docs:?}");
    let old = &docs[0]["statement"];
    assert!(old["predicate"]["repro"].is_object(), "{old}");
    let new = &docs[1]["statement"];
    assert!(new["predicate"].get("repro").is_none(), "{new}");
    assert_eq!(new["predicate"]["verificationResult"], "PASSED");
    assert!(
        new["subject"][0]["annotations"]["repro"]["steps"].is_array(),
        "{new}"
    );
    let names: Vec<&str> = new["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "record:bundled@1",
            "count/counts.txt",
            "count/reports/sorted.txt",
            "summarize/summary.txt"
        ]
    );
    let list = stdout(&r.run(&["attest", "list", "bundled@1"]));
    assert_eq!(list.matches("PASSED").count(), 2, "{list}");
    let out = r.run(&["lineage", "bundled@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("snapshot of: file:data"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bundle_with_one_flipped_byte_is_refused_naming_the_object_and_leaves_nothing() {
    let r = Repro::new();
    let tar = fixture_tar(&r);
    // The image layer: the largest blob member.
    let (name, off, size) = member(&tar, |n| n.starts_with("blobs/sha256/"));
    common::flip_byte(&tar, off + size / 2);
    let digest = format!("sha256:{}", name.trim_start_matches("blobs/sha256/"));
    let out = r.run(&["import", tar.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "image layer `{digest}` of `toolchains.bb` is tampered"
        )),
        "{err}"
    );
    assert!(err.contains("hint: nothing was imported"), "{err}");
    assert_eq!(visible(&r), Vec::<String>::new());
}

#[test]
fn a_tampered_manifest_or_a_truncated_bundle_is_refused() {
    let r = Repro::new();
    let tar = fixture_tar(&r);
    let bytes = std::fs::read(&tar).unwrap();

    // A changed byte in bundle.json: its digest no longer matches the last member.
    let (_, off, _) = member(&tar, |n| n == "bundle.json");
    let pos = bytes[off as usize..]
        .windows(9)
        .position(|w| w == b"bundled@1")
        .unwrap() as u64
        + off;
    let edited = r.work().join("edited.tar");
    std::fs::write(&edited, &bytes).unwrap();
    common::flip_byte(&edited, pos + 8); // "bundled@0"
    let out = r.run(&["import", edited.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("manifest `bundle.json`"),
        "{}",
        stderr(&out)
    );

    // Cut after the layer: incomplete.
    let (_, off, size) = member(&tar, |n| n.starts_with("blobs/sha256/"));
    let cut = r.work().join("cut.tar");
    std::fs::write(&cut, &bytes[..(off + size) as usize]).unwrap();
    let out = r.run(&["import", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the bundle"),
        "{}",
        stderr(&out)
    );
    assert_eq!(visible(&r), Vec::<String>::new());
}
