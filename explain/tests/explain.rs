//! End-to-end tests of `explain` on real files: fixtures made with NumPy,
//! scikit-learn and joblib (see `fixtures/generate.py`), with PyTorch and
//! ONNX (see `fixtures/make_model_fixtures.py`; the tests only read the
//! committed files and need neither), and files the tests write themselves.

use std::io::Write;
use std::path::PathBuf;

use repro_explain::{explain, first_difference, Class, Explanation, Format};

mod common;

use common::fixture;

fn pair(a: &str, b: &str) -> Explanation {
    explain(b, &fixture(a), &fixture(b))
}

fn numeric(e: &Explanation) -> (f64, f64) {
    match e.class {
        Class::Numeric { max_abs, max_rel } => (max_abs, max_rel),
        other => panic!(
            "expected numeric, got {other}: {}\n{:#?}",
            e.summary, e.details
        ),
    }
}

#[test]
fn identical_files_are_identical() {
    let d = fixture("f8_a.npy");
    let e = explain("f8_a.npy", &d, &d);
    assert_eq!(e.class, Class::Identical);
    assert_eq!(e.summary, "identical");
    assert!(e.details.is_empty());
    assert_eq!(e.json["first_difference"], serde_json::Value::Null);
}

#[test]
fn npy_float64_reports_counts_magnitudes_and_ulps() {
    let e = pair("f8_a.npy", "f8_b.npy");
    assert_eq!(e.format, Format::Npy);
    let (abs, _) = numeric(&e);
    assert!((abs - 1e-9).abs() < 1e-12, "{abs}");
    assert!(
        e.summary
            .starts_with("numeric: 3 of 64 elements differ, max abs 1.0e-9, max rel "),
        "{}",
        e.summary
    );
    assert!(e.summary.contains("ULP"), "{}", e.summary);
    assert!(
        e.details.iter().any(|l| l.starts_with("[1, 2]: ")),
        "{:#?}",
        e.details
    );
    assert!(
        e.details.iter().any(|l| l == "dtype <f8, shape (8, 8)"),
        "{:#?}",
        e.details
    );
    assert_eq!(e.json["facts"]["elements"]["differing"], 3);
    assert!(e.json["first_difference"].as_u64().is_some());
}

#[test]
fn npy_big_endian_float32() {
    let e = pair("f4be_a.npy", "f4be_b.npy");
    let (abs, _) = numeric(&e);
    assert!((abs - 0.25).abs() < 1e-6, "{abs}");
    assert!(
        e.summary
            .starts_with("numeric: 1 of 64 elements differ, max abs 2.5e-1"),
        "{}",
        e.summary
    );
}

#[test]
fn npy_integers_have_no_ulps() {
    let e = pair("i8_a.npy", "i8_b.npy");
    let (abs, _) = numeric(&e);
    assert_eq!(abs, 9.0);
    assert_eq!(
        e.summary,
        "numeric: 10 of 10 elements differ, max abs 9, max rel 1.0e0"
    );
}

#[test]
fn npy_shape_change_is_unknown() {
    let e = pair("f8_a.npy", "shape_b.npy");
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(e.summary, "unknown: shape (8, 8) vs (4, 16)");
}

#[test]
fn npz_member_is_explained_as_npy() {
    let e = pair("arrays_a.npz", "arrays_b.npz");
    assert_eq!(e.format, Format::Npz);
    numeric(&e);
    assert!(
        e.summary
            .starts_with("numeric: entry `weights.npy`: 3 of 64 elements differ"),
        "{}",
        e.summary
    );
}

fn zip_of(entries: &[(&str, &[u8])], time: zip::DateTime, extra_mode: Option<u32>) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let mut opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(time);
        if let Some(m) = extra_mode {
            opts = opts.unix_permissions(m);
        }
        w.start_file(*name, opts).expect("start entry");
        w.write_all(data).expect("write entry");
    }
    w.finish().expect("finish zip").into_inner()
}

fn time(h: u8) -> zip::DateTime {
    zip::DateTime::from_date_and_time(2024, 5, 1, h, 0, 0).expect("valid time")
}

#[test]
fn zip_timestamps_only_is_metadata() {
    let entries: [(&str, &[u8]); 2] = [
        ("config.json", b"{\"a\": 1}"),
        ("weights.bin", b"\x01\x02\x03"),
    ];
    let a = zip_of(&entries, time(1), None);
    let b = zip_of(&entries, time(2), None);
    let e = explain("model.keras", &a, &b);
    assert_eq!(e.format, Format::Zip);
    assert_eq!(e.class, Class::MetadataOnly);
    assert_eq!(e.summary, "metadata only: zip entry timestamps");
}

#[test]
fn zip_permissions_only_is_metadata() {
    let entries: [(&str, &[u8]); 1] = [("a.txt", b"hello")];
    let a = zip_of(&entries, time(1), Some(0o644));
    let b = zip_of(&entries, time(1), Some(0o600));
    let e = explain("x.zip", &a, &b);
    assert_eq!(e.summary, "metadata only: zip permissions");
}

#[test]
fn zip_entry_order_only() {
    let a = zip_of(&[("a.txt", b"1"), ("b.txt", b"2")], time(1), None);
    let b = zip_of(&[("b.txt", b"2"), ("a.txt", b"1")], time(3), None);
    let e = explain("x.zip", &a, &b);
    assert_eq!(e.class, Class::OrderOnly);
    assert_eq!(e.summary, "order only: zip entry order");
    assert!(e
        .details
        .iter()
        .any(|l| l.starts_with("entry order: a.txt, b.txt vs b.txt, a.txt")));
}

#[test]
fn zip_added_removed_and_changed_entries() {
    let a = zip_of(&[("a.txt", b"1"), ("gone.txt", b"2")], time(1), None);
    let b = zip_of(&[("a.txt", b"one"), ("new.txt", b"2")], time(1), None);
    let e = explain("x.zip", &a, &b);
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(e.summary, "unknown: 1 entries differ, 1 added, 1 removed");
    assert!(
        e.details.iter().any(|l| l == "entry `gone.txt`: removed"),
        "{:#?}",
        e.details
    );
    assert!(e.details.iter().any(|l| l == "entry `new.txt`: added"));
    assert!(e.details.iter().any(|l| l.starts_with("entry `a.txt`: ")));
}

#[test]
fn zip_member_json_is_explained_recursively() {
    let a = zip_of(&[("m/metrics.json", br#"{"auc": 0.5}"#)], time(1), None);
    let b = zip_of(&[("m/metrics.json", br#"{"auc": 0.75}"#)], time(1), None);
    let e = explain("bundle.zip", &a, &b);
    let (abs, _) = numeric(&e);
    assert_eq!(abs, 0.25);
    assert!(
        e.summary
            .starts_with("numeric: entry `m/metrics.json`: 1 of 1 values differ"),
        "{}",
        e.summary
    );
}

#[test]
fn sklearn_pickle_differing_only_in_thread_count() {
    let e = pair("hgb_threads_1.pkl", "hgb_threads_2.pkl");
    assert_eq!(e.format, Format::Pickle);
    assert_eq!(
        e.class,
        Class::MetadataOnly,
        "{}\n{:#?}",
        e.summary,
        e.details
    );
    assert_eq!(
        e.summary,
        "metadata only: stored thread count (`_n_threads`: 1 vs 2)"
    );
    assert!(
        e.details
            .iter()
            .any(|l| l.starts_with("first differing opcode: BININT1 1 at byte ")),
        "{:#?}",
        e.details
    );
    assert!(
        e.details
            .iter()
            .any(|l| l == "  in `HistGradientBoostingClassifier._n_threads`"),
        "{:#?}",
        e.details
    );
}

#[test]
fn joblib_differing_only_in_thread_count() {
    for (a, b) in [
        ("hgb_threads_1.joblib", "hgb_threads_2.joblib"),
        ("hgb_threads_1_z.joblib", "hgb_threads_2_z.joblib"),
    ] {
        let e = pair(a, b);
        assert_eq!(
            e.summary, "metadata only: stored thread count (`_n_threads`: 1 vs 2)",
            "{a}: {:#?}",
            e.details
        );
    }
}

#[test]
fn sklearn_pickle_threshold_change_is_numeric_with_path() {
    let e = pair("hgb_a.pkl", "hgb_b.pkl");
    let (abs, rel) = numeric(&e);
    assert!(abs > 0.0 && abs < 1e-15, "{abs}");
    assert!(rel > 0.0 && rel < 1e-15, "{rel}");
    assert!(
        e.summary.starts_with("numeric: 1 of 1 values differ")
            || e.summary.starts_with("numeric: 1 of "),
        "{}",
        e.summary
    );
    assert!(
        e.summary.contains(
            "first at `HistGradientBoostingClassifier._predictors[1][0].nodes[\"num_threshold\"]`"
        ),
        "{}",
        e.summary
    );
    assert!(e.summary.contains("max 1 ULP"), "{}", e.summary);
}

#[test]
fn joblib_arrays_are_compared_as_numbers() {
    // hgb_b.joblib holds the moved threshold, hgb_threads_1.joblib the
    // original model plus a stored thread count.
    let e = pair("hgb_threads_1.joblib", "hgb_b.joblib");
    assert!(matches!(e.class, Class::Numeric { .. }), "{}", e.summary);
    assert!(
        e.details
            .iter()
            .any(|l| l.contains("nodes[\"num_threshold\"]")),
        "{:#?}",
        e.details
    );
    assert!(
        e.details
            .iter()
            .any(|l| l == "  in `HistGradientBoostingClassifier._predictors[1][0].nodes`"),
        "{:#?}",
        e.details
    );
    assert!(
        e.summary.ends_with("; stored thread count differs too"),
        "{}",
        e.summary
    );
}

#[test]
fn pickle_memo_renumbering_is_order_only() {
    let e = pair("memo_a.pkl", "memo_b.pkl");
    assert_eq!(
        e.summary, "order only: pickle memo order",
        "{:#?}",
        e.details
    );
}

#[test]
fn json_numbers_key_order_formatting_and_changes() {
    let e = explain(
        "metrics.json",
        br#"{"metrics": {"slices": [{"auc": 0.9}, {"auc": 0.8}, {"auc": 0.7}]}}"#,
        br#"{"metrics": {"slices": [{"auc": 0.9}, {"auc": 0.8}, {"auc": 0.7000001}]}}"#,
    );
    numeric(&e);
    assert!(
        e.details
            .iter()
            .any(|l| l == "`$.metrics.slices[2].auc`: 0.7 vs 0.7000001"),
        "{:#?}",
        e.details
    );
    assert!(
        e.summary
            .starts_with("numeric: 1 of 3 values differ, max abs 1.0e-7"),
        "{}",
        e.summary
    );

    let e = explain("m.json", br#"{"a": 1, "b": 2}"#, br#"{"b": 2, "a": 1}"#);
    assert_eq!(e.summary, "order only: JSON key order");
    let e = explain(
        "m.json",
        br#"{"a": 1, "b": 2}"#,
        b"{\n  \"a\": 1,\n  \"b\": 2\n}\n",
    );
    assert_eq!(e.summary, "metadata only: JSON formatting");
    let e = explain(
        "m.json",
        br#"{"a": 1, "name": "x"}"#,
        br#"{"a": 1, "name": "y", "new": true}"#,
    );
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(e.summary, "unknown: 2 values differ, first at `$.name`");
    let e = explain(
        "m.json",
        br#"{"created": "2024-05-01T10:00:00Z", "n": 3}"#,
        br#"{"created": "2024-06-02T11:30:00Z", "n": 3}"#,
    );
    assert_eq!(e.summary, "metadata only: likely embedded timestamp");
}

#[test]
fn csv_rows_columns_order_and_numbers() {
    let a = b"id,score,label\n1,0.5,a\n2,0.25,b\n3,0.125,c\n";
    let e = explain(
        "pred.csv",
        a,
        b"id,score,label\n3,0.125,c\n1,0.5,a\n2,0.25,b\n",
    );
    assert_eq!(e.summary, "order only: row order");
    let e = explain(
        "pred.csv",
        a,
        b"id,score,label\n1,0.5,a\n2,0.2500001,b\n3,0.125,c\n",
    );
    numeric(&e);
    assert!(
        e.summary
            .starts_with("numeric: 1 of 3 cells differ, max abs 1.0e-7"),
        "{}",
        e.summary
    );
    assert!(
        e.summary.ends_with("in 1 rows, columns score"),
        "{}",
        e.summary
    );
    assert!(
        e.details
            .iter()
            .any(|l| l == "row 3 changed: score: 0.25 vs 0.2500001"),
        "{:#?}",
        e.details
    );
    let e = explain(
        "pred.csv",
        a,
        b"id,score,label\n1,0.5,a\n3,0.125,c\n4,1,d\n",
    );
    assert_eq!(e.class, Class::Unknown);
    assert!(
        e.details.iter().any(|l| l == "row 3 removed: 2,0.25,b"),
        "{:#?}",
        e.details
    );
    assert!(
        e.details.iter().any(|l| l == "row 4 added: 4,1,d"),
        "{:#?}",
        e.details
    );
    let e = explain(
        "pred.csv",
        a,
        b"id,label,score\n1,a,0.5\n2,b,0.25\n3,c,0.125\n",
    );
    assert_eq!(e.summary, "order only: column order");
    let e = explain("pred.tsv", b"a\tb\n1\t2\n", b"a\tc\n1\t2\n");
    assert_eq!(e.class, Class::Unknown);
    assert!(
        e.details.iter().any(|l| l == "header: a,b vs a,c"),
        "{:#?}",
        e.details
    );
    let e = explain("pred.csv", b"a,b\r\n1,2\r\n", b"a,b\n1,2\n");
    assert_eq!(
        e.summary,
        "metadata only: CSV formatting (quoting or line endings)"
    );
}

#[test]
fn text_timestamps_numbers_and_diffs() {
    let e = explain(
        "log.txt",
        b"run at 2024-05-01 10:00:01\nloss 0.5\n",
        b"run at 2024-05-02 11:20:07\nloss 0.5\n",
    );
    assert_eq!(e.summary, "metadata only: likely embedded timestamp");
    let e = explain(
        "log.txt",
        b"loss 0.5\nacc 0.9\n",
        b"loss 0.5000002\nacc 0.9\n",
    );
    numeric(&e);
    assert!(
        e.summary
            .starts_with("numeric: 1 of 2 numbers differ, max abs 2.0e-7"),
        "{}",
        e.summary
    );
    let e = explain("out.txt", b"alpha\nbeta\ngamma\n", b"alpha\nBETA\ngamma\n");
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(e.format, Format::Text);
    assert!(e.details.contains(&"-beta".to_string()), "{:#?}", e.details);
    assert!(e.details.contains(&"+BETA".to_string()), "{:#?}", e.details);
    let e = explain("files.txt", b"a\nb\nc\n", b"c\na\nb\n");
    assert_eq!(e.summary, "order only: line order");
}

#[test]
fn binary_gets_a_hex_window() {
    let a: Vec<u8> = (0..200u8).map(|x| x.wrapping_mul(7) | 0x80).collect();
    let mut b = a.clone();
    b[150] ^= 1;
    let e = explain("model.bin", &a, &b);
    assert_eq!(e.format, Format::Binary);
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(e.summary, "unknown: 1 bytes differ, first at byte 150");
    assert!(
        e.details.iter().any(|l| l.starts_with("00000090 ")),
        "{:#?}",
        e.details
    );
    assert_eq!(first_difference(&a, &b), Some(150));
}

#[test]
fn details_and_json_are_bounded() {
    let a: String = (0..500).map(|i| format!("line {i} x\n")).collect();
    let b: String = (0..500).map(|i| format!("line {i} y\n")).collect();
    let e = explain("big.txt", a.as_bytes(), b.as_bytes());
    assert!(e.details.len() <= repro_explain::MAX_DETAILS);
    assert!(
        e.details.last().is_some_and(|l| l.starts_with("... ")),
        "{:#?}",
        e.details
    );
    assert_eq!(
        e.json["details"].as_array().map(Vec::len),
        Some(e.details.len())
    );
}

#[test]
fn malformed_inputs_fall_back_without_panicking() {
    // Garbage after a zip magic, a truncated npy, a truncated pickle.
    let e = explain(
        "x.zip",
        b"PK\x03\x04\xff garbage",
        b"PK\x03\x04\xff garbagf",
    );
    assert_eq!(e.format, Format::Binary);
    assert!(
        e.details
            .iter()
            .any(|l| l.starts_with("could not compare as zip: ")),
        "{:#?}",
        e.details
    );
    let npy = fixture("f8_a.npy");
    let e = explain("a.npy", &npy, &npy[..300]);
    assert_eq!(e.format, Format::Binary);
    assert!(
        e.details
            .iter()
            .any(|l| l.contains("data is 172 bytes, shape and dtype need 512")),
        "{:#?}",
        e.details
    );
    let p = fixture("hgb_threads_1.pkl");
    let e = explain("m.pkl", &p, &p[..p.len() / 2]);
    assert_eq!(e.class, Class::Unknown);
    assert!(
        e.details
            .iter()
            .any(|l| l.starts_with("could not compare as pickle: not a readable pickle (actual)")),
        "{:#?}",
        e.details
    );
    let e = explain("m.json", b"{\"a\": 1", b"{\"a\": 2");
    assert_eq!(e.format, Format::Text);
}

#[test]
fn every_truncation_of_every_fixture_is_survived() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.ends_with(".py"))
        .collect();
    names.sort();
    assert!(names.len() >= 10);
    for name in names {
        let d = fixture(&name);
        let step = (d.len() / 97).max(1);
        for cut in (0..d.len()).step_by(step) {
            let e = explain(&name, &d, &d[..cut]);
            assert_ne!(e.class, Class::Identical, "{name} cut at {cut}");
            let mut flipped = d.clone();
            flipped[cut] ^= 0x5a;
            let e = explain(&name, &d, &flipped);
            assert_ne!(e.class, Class::Identical, "{name} flipped at {cut}");
            assert!(!e.summary.is_empty());
        }
    }
}

#[test]
fn diffoscope_is_none_or_a_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, "one\n").expect("write");
    std::fs::write(&b, "two\n").expect("write");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("diffoscope").is_file()))
        .unwrap_or(false);
    match repro_explain::diffoscope(&a, &b) {
        None => assert!(!on_path, "diffoscope is on PATH but was not run"),
        Some(Ok(report)) => assert!(report.contains("two"), "{report}"),
        Some(Err(e)) => panic!("diffoscope failed: {e}"),
    }
}

// PyTorch, safetensors and ONNX: fixtures made with torch and onnx (see
// `fixtures/make_model_fixtures.py`).

fn detail<'a>(e: &'a Explanation, prefix: &str) -> &'a str {
    e.details
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no detail starting with {prefix:?}: {:#?}", e.details))
}

/// The entries of a zip fixture, in order.
fn unzip(name: &str) -> Vec<(String, Vec<u8>)> {
    common::unzip(&fixture(name))
}

fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let borrowed: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    zip_of(&borrowed, time(1), None)
}

#[test]
fn torch_state_dict_noise_is_numeric_and_names_the_tensors() {
    let e = pair("mlp_a.pt", "mlp_b.pt");
    assert_eq!(e.format, Format::Torch);
    let (abs, rel) = numeric(&e);
    assert!((abs - 2.98e-8).abs() < 1e-10, "{abs}");
    assert!((rel - 3.34e-7).abs() < 1e-9, "{rel}");
    assert_eq!(
        e.summary,
        "numeric: 2 of 9 tensors differ (fc1.weight, fc2.bias), max abs 3.0e-8, \
         max rel 3.3e-7, max 4 ULP"
    );
    assert_eq!(
        detail(&e, "fc1.weight "),
        "fc1.weight float32 (8, 4): 2 of 32 elements differ, max abs 3.0e-8, max rel 1.1e-7, \
         max 1 ULP; first at [0, 1]: 2.682218e-1 vs 2.6822183e-1"
    );
    assert_eq!(
        detail(&e, "fc2.bias "),
        "fc2.bias float32 (3,): 1 of 3 elements differ, max abs 1.5e-8, max rel 3.3e-7, \
         max 4 ULP; first at [1]: -4.462458e-2 vs -4.4624593e-2"
    );
    // No hex dump of the storages any more.
    assert!(
        !e.details.iter().any(|l| l.contains("expected:")),
        "{:#?}",
        e.details
    );
    let facts = &e.json["facts"]["tensors"];
    assert_eq!(facts["differing_count"], 2);
    assert_eq!(facts["differing"][0]["name"], "fc1.weight");
    assert_eq!(facts["differing"][1]["elements"]["max_ulp"], "4");
    assert_eq!(e.json["format"], "torch");
}

#[test]
fn torch_shape_change_is_structure() {
    let e = pair("mlp_a.pt", "mlp_shape.pt");
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(
        e.summary,
        "unknown: 2 of 9 tensors changed dtype or shape (fc2.weight, fc2.bias)"
    );
    assert_eq!(
        detail(&e, "fc2.weight"),
        "fc2.weight: dtype float32, shape (3, 8) vs (4, 8)"
    );
    assert_eq!(
        detail(&e, "fc2.bias"),
        "fc2.bias: dtype float32, shape (3,) vs (4,)"
    );
}

#[test]
fn torch_zip_timestamps_only_are_metadata() {
    let e = pair("mlp_a.pt", "mlp_time.pt");
    assert_eq!(e.format, Format::Torch);
    assert_eq!(e.summary, "metadata only: zip entry timestamps");
    assert!(
        e.details
            .iter()
            .any(|l| l == "entry `model/data/0`: time (none) vs 2024-05-01 12:00:00"),
        "{:#?}",
        e.details
    );
}

#[test]
fn torch_checkpoint_reads_every_dtype_views_and_plain_values() {
    let e = pair("ckpt_a.pt", "ckpt_b.pt");
    numeric(&e);
    assert_eq!(
        e.summary,
        "numeric: 5 of 11 tensors differ (model.w, model.w_t, model.half, +2 more), \
         max abs 2.0e-3, max rel 4.5e-3, max 1 ULP; other value `lr` differs"
    );
    // bfloat16 and float16, 1 ULP each.
    assert_eq!(
        detail(&e, "model.bf16 "),
        "model.bf16 bfloat16 (8,): 1 of 8 elements differ, max abs 2.0e-3, max rel 4.5e-3, \
         max 1 ULP; first at [5]: 4.2773438e-1 vs 4.296875e-1"
    );
    assert!(
        detail(&e, "model.half ")
            .ends_with("max 1 ULP; first at [3]: -2.8564453e-1 vs -2.8588867e-1"),
        "{:#?}",
        e.details
    );
    // One storage, read as a 4x6 matrix, its transpose and a slice at an offset.
    assert!(detail(&e, "model.w ").contains("first at [1, 3]: 1.1712008e0 vs 1.1712009e0"));
    assert!(detail(&e, "model.w_t float32 (6, 4)").contains("first at [3, 1]: "));
    assert!(detail(&e, "history[1] float32 (5,)").contains("first at [1]: "));
    assert_eq!(detail(&e, "`lr`"), "`lr`: 0.001 vs 0.0010000001");
    // The other dtypes were read and compared equal.
    let tensors = &e.json["facts"]["tensors"];
    assert_eq!(tensors["count"]["expected"], 11);
    assert_eq!(tensors["changed"].as_array().map(Vec::len), Some(0));
}

#[test]
fn torch_pickle_that_does_not_parse_falls_back_to_zip() {
    let mut entries = unzip("mlp_b.pt");
    for (name, data) in &mut entries {
        if name.ends_with("data.pkl") {
            data.truncate(data.len() / 2);
        }
    }
    let a = rezip(&unzip("mlp_a.pt"));
    let e = explain("model.pt", &a, &rezip(&entries));
    assert_eq!(e.format, Format::Zip);
    assert_eq!(e.class, Class::Unknown);
    assert!(
        detail(&e, "could not compare as torch: ")
            .starts_with("could not compare as torch: not a readable pickle (actual) at byte "),
        "{:#?}",
        e.details
    );
    assert!(
        e.summary.starts_with("unknown: 3 entries differ"),
        "{}",
        e.summary
    );
}

#[test]
fn torch_format_records_and_folder_name_are_metadata() {
    let with_id = |id: &str| {
        let mut entries = unzip("mlp_a.pt");
        entries.push((
            "model/.data/serialization_id".into(),
            id.as_bytes().to_vec(),
        ));
        rezip(&entries)
    };
    let e = explain("model.pt", &with_id("1234"), &with_id("5678"));
    assert_eq!(e.format, Format::Torch);
    assert_eq!(
        e.summary,
        "metadata only: format records (.data/serialization_id)"
    );
    assert!(e.details.iter().any(|l| {
        l
        == "entry `.data/serialization_id`: 1234 vs 5678 (records the format, not the saved object)"
    }));

    let renamed: Vec<(String, Vec<u8>)> = unzip("mlp_a.pt")
        .into_iter()
        .map(|(n, d)| (n.replacen("model/", "weights/", 1), d))
        .collect();
    let e = explain("model.pt", &rezip(&unzip("mlp_a.pt")), &rezip(&renamed));
    assert_eq!(
        e.summary,
        "metadata only: archive folder name (`model/` vs `weights/`)"
    );
    // With the noise, under another folder name: still per tensor.
    let renamed_b: Vec<(String, Vec<u8>)> = unzip("mlp_b.pt")
        .into_iter()
        .map(|(n, d)| (n.replacen("model/", "weights/", 1), d))
        .collect();
    let e = explain("model.pt", &fixture("mlp_a.pt"), &rezip(&renamed_b));
    assert!(
        e.summary
            .starts_with("numeric: 2 of 9 tensors differ (fc1.weight, fc2.bias)"),
        "{}",
        e.summary
    );
}

#[test]
fn torch_files_are_found_by_content_whatever_their_name() {
    let e = explain(
        "pytorch_model.bin",
        &fixture("mlp_a.pt"),
        &fixture("mlp_b.pt"),
    );
    assert_eq!(e.format, Format::Torch);
}

#[test]
fn safetensors_noise_shape_and_detection_by_header() {
    let e = pair("mlp_a.safetensors", "mlp_b.safetensors");
    assert_eq!(e.format, Format::Safetensors);
    numeric(&e);
    assert_eq!(
        e.summary,
        "numeric: 2 of 9 tensors differ (fc1.weight, fc2.bias), max abs 3.0e-8, \
         max rel 3.3e-7, max 4 ULP"
    );
    assert!(detail(&e, "fc2.bias float32 (3,): ").contains("max 4 ULP"));
    let e = pair("mlp_a.safetensors", "mlp_shape.safetensors");
    assert_eq!(
        e.summary,
        "unknown: 2 of 9 tensors changed dtype or shape (fc2.weight, fc2.bias)"
    );
    let e = explain(
        "weights.bin",
        &fixture("mlp_a.safetensors"),
        &fixture("mlp_b.safetensors"),
    );
    assert_eq!(e.format, Format::Safetensors);
}

#[test]
fn onnx_initializers_are_compared_by_name() {
    let e = pair("mlp_a.onnx", "mlp_b.onnx");
    assert_eq!(e.format, Format::Onnx);
    numeric(&e);
    assert_eq!(
        e.summary,
        "numeric: 1 of 4 initializers differ (fc1.weight), max abs 4.7e-10, max rel 1.2e-7, \
         max 2 ULP"
    );
    assert_eq!(
        detail(&e, "fc1.weight"),
        "fc1.weight float32 (8, 4): 1 of 32 elements differ, max abs 4.7e-10, max rel 1.2e-7, \
         max 2 ULP; first at [0, 0]: -3.74341e-3 vs -3.7434106e-3"
    );
    // Initializers stored as float_data and int64_data rather than raw_data.
    let e = pair("helper_a.onnx", "helper_b.onnx");
    assert_eq!(
        e.summary,
        "numeric: 1 of 2 initializers differ (w), max abs 1.5e-8, max rel 7.5e-8, max 1 ULP"
    );
    assert!(detail(&e, "w float32 (2, 3): ").contains("first at [1, 1]: 2e-1 vs 2.0000002e-1"));
}

#[test]
fn onnx_graph_change_is_structure() {
    let e = pair("mlp_a.onnx", "mlp_graph.onnx");
    assert_eq!(e.class, Class::Unknown);
    assert_eq!(
        e.summary,
        "unknown: graph differs (node 1 `/act/Relu` (Relu) vs `/act/Tanh` (Tanh))"
    );
    assert_eq!(
        detail(&e, "graph node"),
        "graph node 1: `/act/Relu` (Relu) vs `/act/Tanh` (Tanh)"
    );
}

#[test]
fn json_list_permutation_is_order_only() {
    let e = explain(
        "classes.json",
        br#"{"classes": ["cat", "dog", {"id": 3, "tags": ["a", "b"]}]}"#,
        br#"{"classes": [{"tags": ["b", "a"], "id": 3}, "cat", "dog"]}"#,
    );
    assert_eq!(e.class, Class::OrderOnly);
    assert_eq!(e.summary, "order only: JSON list order");
    assert!(
        e.details
            .iter()
            .any(|l| l == "`$.classes`: same elements, another order"),
        "{:#?}",
        e.details
    );
}

#[test]
fn hex_dump_says_where_a_side_ends_and_counts_what_it_cuts() {
    let a: Vec<u8> = (0..100u8).map(|x| x | 0x80).collect();
    let e = explain("model.bin", &a, &[]);
    assert_eq!(
        e.details.last().map(String::as_str),
        Some("actual: (empty, 0 bytes)")
    );
    assert!(
        !e.details.iter().any(|l| l == "actual:"),
        "{:#?}",
        e.details
    );
    let e = explain("model.bin", &a, &a[..70]);
    assert!(e.details.contains(&"actual: (ends at byte 70)".to_string()));

    // Four entries whose dumps are 11 lines of `expected:` and then
    // `actual:`: the per-entry cut used to leave `actual:` bare at the end.
    let x: Vec<u8> = (0..128u8).map(|v| v | 0x80).collect();
    let mut y = x.clone();
    for off in [48, 64, 80] {
        y[off] ^= 1;
    }
    let names = [
        "model/data/0",
        "model/data/1",
        "model/data/2",
        "model/data/3",
    ];
    let za = zip_of(&names.map(|n| (n, x.as_slice())), time(1), None);
    let zb = zip_of(&names.map(|n| (n, y.as_slice())), time(1), None);
    let e = explain("bundle.zip", &za, &zb);
    assert_eq!(e.summary, "unknown: 4 entries differ");
    for n in names {
        assert!(
            e.details
                .iter()
                .any(|l| l.starts_with(&format!("entry `{n}`: unknown: 3 bytes differ"))),
            "{:#?}",
            e.details
        );
    }
    assert!(
        !e.details.iter().any(|l| l.trim_end().ends_with("actual:")),
        "{:#?}",
        e.details
    );
    for l in e.details.iter().filter(|l| l.contains("... ")) {
        assert!(l.ends_with(" more lines"), "{l}");
    }
}

#[test]
fn torch_whole_module_names_tensors_as_its_state_dict_does() {
    let e = pair("whole_a.pt", "whole_b.pt");
    assert_eq!(e.format, Format::Torch);
    assert_eq!(
        e.summary,
        "numeric: 1 of 9 tensors differ (fc2.weight), max abs 2.2e-8, max rel 2.1e-7, max 3 ULP"
    );
    assert!(
        detail(&e, "fc2.weight float32 (3, 8): ").contains("first at [2, 7]: "),
        "{:#?}",
        e.details
    );
}

#[test]
fn torch_plain_values_are_compared_by_path() {
    // The same checkpoint with only `lr` (a pickled float) moved by 1 ULP.
    let mut entries = unzip("ckpt_a.pt");
    let (_, pkl) = entries
        .iter_mut()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .expect("data.pkl");
    let mut lr = vec![b'G'];
    lr.extend_from_slice(&0.001f64.to_be_bytes());
    let at = pkl
        .windows(9)
        .position(|w| w == lr.as_slice())
        .expect("lr as BINFLOAT");
    let bumped = f64::from_bits(0.001f64.to_bits() + 1);
    pkl[at + 1..at + 9].copy_from_slice(&bumped.to_be_bytes());
    let e = explain("ckpt.pt", &rezip(&unzip("ckpt_a.pt")), &rezip(&entries));
    assert_eq!(e.format, Format::Torch);
    numeric(&e);
    assert_eq!(
        e.summary,
        "numeric: other value `lr` differs, max abs 2.2e-19, max rel 2.2e-16, max 1 ULP"
    );
    assert_eq!(detail(&e, "`lr`"), format!("`lr`: 0.001 vs {bumped:?}"));
}

#[test]
fn torch_tensor_order_only() {
    let e = pair("mlp_a.pt", "mlp_order.pt");
    assert_eq!(e.class, Class::OrderOnly);
    assert_eq!(e.summary, "order only: tensor order (storages renumbered)");
    assert!(
        detail(&e, "tensor order: ").starts_with("tensor order: fc1.weight, fc1.bias, bn.weight"),
        "{:#?}",
        e.details
    );
}

#[test]
fn torch_pickle_differences_outside_values_are_named() {
    // fc1.weight saved with requires_grad=True: NEWFALSE becomes NEWTRUE.
    let mut entries = unzip("mlp_a.pt");
    let (_, pkl) = entries
        .iter_mut()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .expect("data.pkl");
    let at = pkl.iter().position(|&b| b == 0x89).expect("NEWFALSE");
    pkl[at] = 0x88;
    let e = explain("model.pt", &rezip(&unzip("mlp_a.pt")), &rezip(&entries));
    assert_eq!(e.format, Format::Torch);
    assert_eq!(
        e.summary,
        "unknown: data.pkl: 1 objects differ, first at `OrderedDict[\"fc1.weight\"].__args__[4]`: \
         False vs True (same tensors)"
    );
}
