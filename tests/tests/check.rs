//! `repro check` names the variation each fixture step depends on, passes
//! a deterministic one, and the explanation classifies what changed.
//! Fixture steps: tests/fixtures/check/steps.py, run in the example's
//! Debian scikit-learn image on the native sandbox.

mod common;

use std::path::{Path, PathBuf};

use common::{stderr, stdout, Repro};

fn image() -> PathBuf {
    let archive = std::env::var_os("REPRO_TEST_IMAGE_ARCHIVE").map(PathBuf::from).expect(
        "REPRO_TEST_IMAGE_ARCHIVE is not set: run examples/images/debian-sklearn/build and point it at the OCI tar",
    );
    assert!(
        archive.is_file(),
        "REPRO_TEST_IMAGE_ARCHIVE `{}` is not a file",
        archive.display()
    );
    archive
}

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/check"))
}

fn step(name: &str, output: &str) -> String {
    format!(
        r#"
[[steps]]
name = "{name}"
toolchain = "py"
argv = ["python3", "/repro/in/code/steps.py", "{name}", "/repro/out", "/repro/in/data"]
inputs = {{ code = "code.fixtures", data = "data.files" }}
outputs = ["{output}"]
"#
    )
}

fn setup(steps: &[(&str, &str)]) -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    std::os::unix::fs::symlink(image(), r.work().join("image.tar")).unwrap();
    std::fs::create_dir_all(r.work().join("code")).unwrap();
    std::fs::copy(
        fixture_dir().join("steps.py"),
        r.work().join("code/steps.py"),
    )
    .unwrap();
    for i in 0..12 {
        r.write(
            &format!("data/part-{i:02}-{}.csv", ["q", "b", "x", "m"][i % 4]),
            "a,b\n1,2\n",
        );
    }
    let mut recipe = String::from(
        r#"
[model]
name = "fixtures"
version = "1"

[toolchains.py]
archive = "image.tar"

[data.files]
path = "data"

[code.fixtures]
path = "code"
"#,
    );
    for (name, output) in steps {
        recipe.push_str(&step(name, output));
    }
    r.write("model.toml", &recipe);
    r
}

#[test]
#[ignore = "needs root, user namespaces and the example image (REPRO_TEST_IMAGE_ARCHIVE)"]
fn check_attributes_each_nondeterministic_step_to_its_variation() {
    let r = setup(&[
        ("zipstamp", "bundle.zip"),
        ("hashseed", "vocab.txt"),
        ("threads", "model.pkl"),
        ("listing", "manifest.txt"),
        ("hostname", "provenance.json"),
        ("steady", "summary.json"),
    ]);
    let out = r.run(&["check", "--json", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |name: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .unwrap()
            .clone()
    };
    let causes = |name: &str| -> Vec<String> {
        get(name)["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    let summary = |name: &str| {
        get(name)["files"][0]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    assert_eq!(
        causes("zipstamp"),
        ["wall-clock time (or unseeded randomness)"]
    );
    assert_eq!(summary("zipstamp"), "metadata only: zip entry timestamps");
    assert_eq!(causes("hashseed"), ["PYTHONHASHSEED"]);
    assert!(
        summary("hashseed").starts_with("order only"),
        "{}",
        summary("hashseed")
    );
    assert_eq!(causes("threads"), ["thread count (OMP/MKL/OpenBLAS)"]);
    assert!(
        summary("threads").starts_with("metadata only: stored thread count"),
        "{}",
        summary("threads")
    );
    assert_eq!(causes("listing"), ["directory listing order of the inputs"]);
    assert!(
        summary("listing").starts_with("order only"),
        "{}",
        summary("listing")
    );
    assert_eq!(causes("hostname"), ["hostname"]);
    assert_eq!(get("steady")["stable"], true, "{report}");
    assert!(causes("steady").is_empty());
    assert_eq!(report["stable"], false);

    // The table says the same for a person.
    let out = r.run(&["check", "model.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let table = stdout(&out);
    assert!(
        table.contains("steady") && table.contains("stable"),
        "{table}"
    );
    assert!(
        table.contains("fixtures@1: 5 of 6 steps are unstable"),
        "{table}"
    );
}

#[test]
#[ignore = "needs root, user namespaces and the example image (REPRO_TEST_IMAGE_ARCHIVE)"]
fn check_passes_a_deterministic_recipe_and_verify_classifies_a_zip_timestamp() {
    let r = setup(&[("steady", "summary.json")]);
    let out = r.run(&["check", "model.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("every step is stable under every variation"),
        "{}",
        stdout(&out)
    );

    // A version template is named as the build fills it in, not as written.
    let recipe = std::fs::read_to_string(r.work().join("model.toml")).unwrap();
    r.write(
        "model.toml",
        &recipe.replace("version = \"1\"", "version = \"1.{inputs}\""),
    );
    let out = r.run(&["check", "--json", "model.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = r.run(&["build", "--json", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = built["version"].as_str().unwrap();
    assert!(
        version.starts_with("1.") && !version.contains('{'),
        "{built}"
    );
    assert_eq!(checked["model"], format!("fixtures@{version}"), "{checked}");

    let r = setup(&[("zipstamp", "bundle.zip")]);
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = r.run(&["verify", "fixtures@1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("metadata only: zip entry timestamps"),
        "{}",
        stdout(&out)
    );
}
