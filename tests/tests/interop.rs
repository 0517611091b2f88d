//! Interop: what `repro` signs is accepted by the in-toto and SLSA
//! libraries other tools use, parsed strictly (unknown fields refused).
//!
//! A small model is built and verified on the native sandbox; then
//! `tests/interop/check_attestations.py`, run with the Python of
//! `.ci-tools/venv` (ci/setup installs the pinned packages of
//! `ci/python-tools.txt` there: in-toto-attestation, protobuf,
//! securesystemslib), checks the record and the attestation: the DSSE
//! signatures with securesystemslib (repro's public key converted), the
//! statements with in-toto's Statement proto, the record's predicate with
//! the SLSA provenance v1 proto and no URI a path of the build machine, the
//! attestation's with the SLSA VSA v1 proto, and that the attestation's
//! subjects are the record and the model files. The same script refuses the
//! record and attestation of the format 1 bundle fixture, written in the
//! shape before: the checks are real.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{repo, stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "interop"
version = "1"

[toolchains.bb]
archive = "image"

[data.rows]
path = "data"
source = "the interop test"

[code.src]
path = "src"

[[steps]]
name = "prep"
toolchain = "bb"
argv = ["sh", "-c", "sort /repro/in/data/rows.csv > /repro/out/features.txt"]
inputs = { data = "data.rows" }
outputs = ["features.txt"]

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "/repro/in/code/train.sh"]
inputs = { code = "code.src", feat = "steps.prep" }
outputs = ["model.bin", "metrics/"]
"#;

const TRAIN: &str = "set -e
wc -l < /repro/in/feat/features.txt > /repro/out/model.bin
mkdir /repro/out/metrics
echo '{\"auc\": 0.5}' > /repro/out/metrics/eval.json
";

/// The interpreter of the virtual environment ci/setup makes.
fn python() -> PathBuf {
    repo().join(".ci-tools/venv/bin/python3")
}

fn script() -> PathBuf {
    repo().join("tests/interop/check_attestations.py")
}

/// Panic, loudly and with the fix, when the environment or its packages
/// are missing.
fn require_python_packages() {
    let py = python();
    assert!(
        py.is_file(),
        "this test needs the Python environment `.ci-tools/venv` and `{}` is missing\nhint: run ci/setup (it installs ci/python-tools.txt from PyPI there)",
        py.display()
    );
    let out = Command::new(&py)
        .args([
            "-c",
            "import in_toto_attestation.predicates.vsa.v1.vsa_pb2, in_toto_attestation.predicates.provenance.v1.provenance_pb2, securesystemslib.dsse, google.protobuf.json_format",
        ])
        .output()
        .expect("run the venv's python3");
    assert!(
        out.status.success(),
        "this test needs in-toto-attestation, protobuf and securesystemslib in `.ci-tools/venv`, and importing them fails:\n{}\nhint: run ci/setup (it installs ci/python-tools.txt from PyPI there)",
        stderr(&out)
    );
}

fn check(args: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(python());
    c.arg(script());
    for (flag, path) in args {
        c.arg(flag).arg(path);
    }
    c.output().expect("run check_attestations.py")
}

/// The one attestation of `record` in `r`'s store.
fn attestation_of(r: &Repro, record: &str) -> PathBuf {
    let hex = record.strip_prefix("sha256:").unwrap();
    let dir = r.store().join("v1/refs/attestations").join(hex);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    r.blob_path(&format!("sha256:{}", names[0]))
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox) and the Python packages ci/setup installs into .ci-tools/venv"]
fn the_record_and_attestation_parse_strictly_under_the_in_toto_and_slsa_libraries() {
    require_python_packages();
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    r.write("data/rows.csv", "b,2\na,1\n");
    r.write("src/train.sh", TRAIN);
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let record = doc["record"].as_str().unwrap().to_string();
    let out = r.run(&["verify", "interop@1"]);
    assert_eq!(out.status.code(), Some(0), "verify: {}", stderr(&out));

    let key = r.tmp.path().join("signing.key.pub");
    let record_file = r.blob_path(&record);
    let attestation = attestation_of(&r, &record);
    let out = check(&[
        ("--public-key", &key),
        ("--record", &record_file),
        ("--attestation", &attestation),
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the libraries refuse what repro signed:\n{text}{}",
        stderr(&out)
    );
    for line in [
        "ok: record: DSSE signature verifies with securesystemslib",
        "ok: record: a payload changed by one byte does not verify",
        "ok: record: in-toto Statement v1 parses strictly and validates",
        "ok: record: SLSA provenance v1 parses strictly",
        "ok: record: none of the 3 resource URIs is a build machine's path",
        "ok: attestation: DSSE signature verifies with securesystemslib",
        "ok: attestation: in-toto Statement v1 parses strictly and validates",
        "ok: attestation: SLSA VSA v1 parses strictly",
        "ok: attestation: PASSED by urn:repro:verifier of repro:interop@1",
        "ok: attestation: subjects are the record and its 3 files: ['prep/features.txt', 'train/metrics/eval.json', 'train/model.bin']",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }

    // The same checks refuse the old shapes (the format 1 fixture: `file:`
    // URIs in the record, repro's fields in the VSA predicate).
    let old = Repro::new();
    let fixture = repo().join("tests/fixtures/bundles/busybox-format1.tar.gz");
    let out = old.run(&["import", fixture.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    let old_record = stdout(&out).trim().to_string();
    let old_record = old_record.lines().last().unwrap().to_string();
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(old.blob_path(&old_record)).unwrap()).unwrap();
    let keyid = env["signatures"][0]["keyid"].as_str().unwrap();
    let old_key = old.work().join("old.pub");
    let raw = std::fs::read(old.blob_path(keyid)).unwrap();
    std::fs::write(&old_key, format!("{}\n", hex::encode(raw))).unwrap();

    let out = check(&[
        ("--public-key", &old_key),
        ("--record", &old.blob_path(&old_record)),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("ok: record: SLSA provenance v1 parses strictly"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("uri 'file:image' is a path on the build machine"),
        "{}",
        stderr(&out)
    );

    let out = check(&[
        ("--public-key", &old_key),
        ("--attestation", &attestation_of(&old, &old_record)),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("the predicate does not parse strictly")
            && stderr(&out).contains("no field named \"version\""),
        "{}",
        stderr(&out)
    );
}
