//! `repro diff` of two files: the explanation is made by the file's format.
//! The PyTorch fixtures are the explain crate's (made with torch by
//! `explain/tests/fixtures/make_model_fixtures.py`); no build, no root.

mod common;

use std::path::PathBuf;

use common::{stderr, stdout, Repro};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("explain/tests/fixtures").join(name)
}

fn diff(r: &Repro, args: &[&str]) -> std::process::Output {
    let mut a = vec!["diff"];
    a.extend_from_slice(args);
    r.run(&a)
}

#[test]
fn diff_of_two_torch_files_names_the_tensors_that_differ() {
    let r = Repro::new();
    let (a, b) = (fixture("mlp_a.pt"), fixture("mlp_b.pt"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = diff(&r, &[a, b]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("`mlp_b.pt` differs\n"), "{text}");
    assert!(
        text.contains(
            "\n  numeric: 2 of 9 tensors differ (fc1.weight, fc2.bias), max abs 3.0e-8, max rel 3.3e-7, max 4 ULP\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n    fc1.weight float32 (8, 4): 2 of 32 elements differ, max abs 3.0e-8"),
        "{text}"
    );
    assert!(
        text.contains("\n    fc2.bias float32 (3,): 1 of 3 elements differ, max abs 1.5e-8"),
        "{text}"
    );
    assert!(
        !text.contains("model/data/"),
        "no hex dump of storages: {text}"
    );

    let out = diff(&r, &["--json", a, b]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let e = &doc["steps"][0]["files"][0]["explanation"];
    assert_eq!(e["format"], "torch");
    assert_eq!(e["class"], "numeric");
    assert_eq!(
        e["facts"]["facts"]["tensors"]["differing"][0]["name"],
        "fc1.weight"
    );
    assert_eq!(
        e["facts"]["facts"]["tensors"]["differing"][1]["name"],
        "fc2.bias"
    );
}

#[test]
fn diff_of_a_torch_file_with_itself_is_identical() {
    let r = Repro::new();
    let a = fixture("mlp_a.pt");
    let a = a.to_str().unwrap();
    let out = diff(&r, &[a, a]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "identical\n");
}
