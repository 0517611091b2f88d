//! End-to-end tests of `explain` on real files: fixtures made with NumPy,
//! scikit-learn and joblib (see `fixtures/generate.py`), and files the tests
//! write themselves.

use std::io::Write;
use std::path::PathBuf;

use repro_explain::{explain, first_difference, Class, Explanation, Format};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture `{}`: {e}", p.display()))
}

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
