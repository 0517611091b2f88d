//! Every `tests/fixtures/<case>.toml` is an invalid recipe whose diagnostics
//! must equal `tests/fixtures/<case>.stderr` exactly. Cases named
//! `locked-*` parse fine and are then pinned with `<case>.lock` (as
//! `repro build --locked` does). Set `REPRO_UPDATE_FIXTURES=1` to rewrite the
//! `.stderr` files, then review the diff.

use std::path::{Path, PathBuf};

use repro_recipes::{parse_str, Lock};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What a user would see for one case.
fn render(dir: &Path, case: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{case}.toml")))
        .unwrap_or_else(|e| panic!("cannot read fixture {case}: {e}"));
    // A relative display path, so messages do not depend on the checkout.
    let shown = PathBuf::from(format!("{case}.toml"));
    let result = parse_str(&shown, &text).and_then(|recipe| {
        if case.starts_with("locked-") {
            let lock_file = dir.join(format!("{case}.lock"));
            let lock_text = std::fs::read_to_string(&lock_file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", lock_file.display()));
            let lock = Lock::parse_str(&recipe.lock_path(), &lock_text)?;
            recipe.pins_from(Some(&lock)).map(|_| ())
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => "<no error>\n".to_string(),
        Err(e) => format!("{e}\n"),
    }
}

#[test]
fn invalid_fixtures_print_their_expected_diagnostics() {
    let dir = fixtures();
    let update = std::env::var_os("REPRO_UPDATE_FIXTURES").is_some_and(|v| v == "1");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .filter_map(|e| {
            let path = e.expect("fixture entry").path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 25,
        "expected at least 25 fixtures, found {}",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let actual = render(&dir, case);
        let expected_file = dir.join(format!("{case}.stderr"));
        if update {
            std::fs::write(&expected_file, &actual).expect("write .stderr");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "--- {case}.stderr (expected)\n{expected}+++ actual\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ (REPRO_UPDATE_FIXTURES=1 rewrites them):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
