//! The real example: a scikit-learn model trained on the Wisconsin breast
//! cancer data in a Debian toolchain image, built and verified byte for byte.
//!
//! The build runs on the native sandbox and the verification on Docker, so
//! this is also the test that both backends give identical output trees.
//!
//! Needs root (namespaces), Docker and the example image, built by `examples/images/debian-sklearn/build`
//! (`ci/setup` does it) and named by `REPRO_TEST_IMAGE_ARCHIVE`.

mod common;

use std::path::PathBuf;

use common::{copy_dir, repo, stderr, stdout, Repro};

#[test]
#[ignore = "needs root, Docker and the example image (REPRO_TEST_IMAGE_ARCHIVE, built by ci/setup)"]
fn the_example_builds_and_verifies_byte_for_byte() {
    repro_tests::require_docker();
    let archive = std::env::var_os("REPRO_TEST_IMAGE_ARCHIVE").map(PathBuf::from).expect(
        "REPRO_TEST_IMAGE_ARCHIVE is not set: run examples/images/debian-sklearn/build and point it at the OCI tar",
    );
    assert!(
        archive.is_file(),
        "REPRO_TEST_IMAGE_ARCHIVE `{}` is not a file",
        archive.display()
    );
    let r = Repro::with_key();
    let example = r.work().join("breast-cancer");
    copy_dir(&repo().join("examples/breast-cancer"), &example);
    let _ = std::fs::remove_file(example.join("model.lock"));
    // The recipe names the archive relative to itself.
    let images = r.work().join("images/build");
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&archive, images.join("debian-sklearn.oci.tar")).unwrap();

    let out = r.run(&["lock", "breast-cancer/model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, doc) = r.build_json(&["--locked", "breast-cancer/model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["validate", "featurize", "train", "evaluate"]);
    let eval = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "evaluate")
        .unwrap();
    let metrics = eval["files"]["metrics.json"]["digest"]
        .as_str()
        .expect("metrics.json");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.blob_path(metrics)).unwrap()).unwrap();
    let auc = metrics["auc"]
        .as_f64()
        .or_else(|| metrics["overall"]["auc"].as_f64())
        .expect("an AUC");
    assert!(auc > 0.9 && auc <= 1.0, "AUC {auc}");

    let name = doc["model"].as_str().unwrap().to_string();
    // Built on the native sandbox (the default), verified on Docker: the
    // two backends keep one contract, so keys and bytes are the same.
    assert!(doc["steps"][0]["key"].is_string(), "{doc}");
    let out = r.run(&["verify", "--sandbox", "docker", &name]);
    assert!(
        !stdout(&out).contains("step key changed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("reproduced: {name} (4 steps, byte for byte)")),
        "{}",
        stdout(&out)
    );
}
