//! Version labels are immutable: `name@version` keeps naming the inputs
//! it was first built from. A rebuild from the same inputs adds a record
//! of the version; other inputs are refused (exit 2) before any step runs;
//! every record of a version stays listed (`registry show`), traceable
//! (`lineage --uses`) and kept (`gc`); an import of a record of other
//! inputs is refused (exit 3). Runs on the native sandbox.

mod common;

use std::path::{Path, PathBuf};

use common::{stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "versioned"
version = "VERSION"

[toolchains.bb]
archive = "image"

[data.train]
path = "data"

[[steps]]
name = "fit"
toolchain = "bb"
argv = ["sh", "-c", "sort /repro/in/data/rows.txt > /repro/out/model.txt"]
inputs = { data = "data.train" }
outputs = ["model.txt"]
"#;

fn recipe(version: &str) -> String {
    RECIPE.replace("VERSION", version)
}

/// A party with a key, the busybox image, the recipe at `version` and its data.
fn project(version: &str, rows: &str) -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", &recipe(version));
    r.write("data/rows.txt", rows);
    r
}

/// Build; the record digest.
fn build(r: &Repro, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.push("model.toml");
    let (out, doc) = r.build_json(&a);
    assert!(out.status.success(), "build {args:?}: {}", stderr(&out));
    doc["record"]
        .as_str()
        .unwrap_or_else(|| panic!("no record in {doc}"))
        .to_string()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The record the version's ref names.
fn latest(r: &Repro, name: &str, version: &str) -> String {
    let path = r.store().join("v1/refs/records").join(name).join(version);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("`{}`: {e}", path.display()))
        .trim()
        .to_string()
}

/// The records `registry show --json` lists: `(record, latest)`, in its order.
fn shown_records(r: &Repro, model: &str) -> Vec<(String, bool)> {
    let doc = json(&r.run(&["registry", "show", "--json", model]));
    doc["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no `records` in {doc}"))
        .iter()
        .map(|x| {
            (
                x["record"].as_str().unwrap().to_string(),
                x["latest"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The entries of `v1/ac` (one per step result ever recorded).
fn action_cache(r: &Repro) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(r.store().join("v1/ac"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn tree_of(r: &Repro, dir: &str) -> String {
    let out = r.run(&["hash", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

fn users(r: &Repro, tree: &str) -> Vec<(String, String)> {
    let doc = json(&r.run(&["lineage", "--uses", tree, "--json"]));
    let mut v: Vec<(String, String)> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["model"].as_str().unwrap().to_string(),
                u["record"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn rebinding_a_version_to_changed_data_is_refused_before_any_step_runs() {
    let r = project("1.0.0", "b\na\n");
    let old_data = tree_of(&r, "data");
    let first = build(&r, &[]);
    let cache = action_cache(&r);
    let lock = std::fs::read(r.work().join("model.lock")).unwrap();

    // The data changes; the version does not.
    r.write("data/rows.txt", "b\na\nc\n");
    let new_data = tree_of(&r, "data");
    assert_ne!(old_data, new_data);
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`versioned@1.0.0`"), "{err}");
    assert!(err.contains(&first), "names the version's record: {err}");
    assert!(err.contains("data `train`"), "names the input: {err}");
    assert!(
        err.contains(&old_data) && err.contains(&new_data),
        "old and new digests: {err}"
    );
    assert!(
        !err.contains("the recipe"),
        "the recipe did not change: {err}"
    );
    assert!(
        err.contains("hint:") && err.contains("`version` in `[model]`"),
        "{err}"
    );
    // Nothing ran, nothing moved, not even the lock file.
    assert_eq!(action_cache(&r), cache, "a step ran");
    assert_eq!(latest(&r, "versioned", "1.0.0"), first);
    assert_eq!(
        shown_records(&r, "versioned@1.0.0"),
        [(first.clone(), true)]
    );
    assert_eq!(std::fs::read(r.work().join("model.lock")).unwrap(), lock);
    // The new data locked, then built `--locked`: refused the same way.
    let out = r.run(&["lock", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["build", "--locked", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("data `train`"), "{}", stderr(&out));
    assert_eq!(action_cache(&r), cache, "a step ran");
    assert_eq!(latest(&r, "versioned", "1.0.0"), first);

    // The old data still leads to the version.
    assert_eq!(
        users(&r, &old_data),
        [("versioned@1.0.0".to_string(), first.clone())]
    );
    assert!(users(&r, &new_data).is_empty());

    // A change of the recipe alone (a comment) is a change of inputs too.
    r.write("data/rows.txt", "b\na\n");
    r.write("model.toml", &format!("# retrained\n{}", recipe("1.0.0")));
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the recipe `model.toml`"), "{err}");
    assert!(
        !err.contains("data `train`"),
        "the data is as it was: {err}"
    );

    // Bumping the version is the way.
    r.write("data/rows.txt", "b\na\nc\n");
    r.write("model.toml", &recipe("1.0.1"));
    let bumped = build(&r, &[]);
    assert_eq!(latest(&r, "versioned", "1.0.1"), bumped);
    assert_eq!(latest(&r, "versioned", "1.0.0"), first);
    assert_eq!(
        users(&r, &new_data),
        [("versioned@1.0.1".to_string(), bumped)]
    );
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_rebuild_from_the_same_inputs_adds_a_record_and_every_record_is_listed() {
    let r = project("1.0.0", "b\na\n");
    let data = tree_of(&r, "data");
    let first = build(&r, &[]);
    // `--no-cache` runs the step again: a new record (new times) of the same inputs.
    let second = build(&r, &["--no-cache"]);
    assert_ne!(first, second, "records carry their times");
    // With `--locked`, and from the cache: a third.
    let third = build(&r, &["--locked"]);
    assert_eq!(latest(&r, "versioned", "1.0.0"), third);

    let shown = shown_records(&r, "versioned@1.0.0");
    assert_eq!(
        shown,
        [
            (first.clone(), false),
            (second.clone(), false),
            (third.clone(), true)
        ],
        "oldest first, the latest marked"
    );
    let text = stdout(&r.run(&["registry", "show", "versioned@1.0.0"]));
    for d in [&first, &second, &third] {
        assert!(text.contains(d.as_str()), "{text}");
    }
    assert!(text.contains("latest"), "{text}");

    // Every record of the version used the data.
    let mut want = vec![
        ("versioned@1.0.0".to_string(), first),
        ("versioned@1.0.0".to_string(), second),
        ("versioned@1.0.0".to_string(), third),
    ];
    want.sort();
    assert_eq!(users(&r, &data), want);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn gc_keeps_every_record_of_a_retained_version_and_drops_every_record_of_another() {
    let r = project("1", "b\na\n");
    let one_a = build(&r, &[]);
    let one_b = build(&r, &["--no-cache"]);
    let out = r.run(&["pin", "versioned@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    r.write("model.toml", &recipe("2"));
    let two_a = build(&r, &[]);
    let two_b = build(&r, &["--no-cache"]);
    r.write("data/rows.txt", "z\n");
    r.write("model.toml", &recipe("3"));
    let three = build(&r, &[]);

    // Version 3 is the latest; 1 is pinned; 2 goes, both its records.
    let out = r.run(&["gc", "--json", "--keep-latest", "1"]);
    let doc = json(&out);
    let fate = |m: &str| {
        doc["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["model"] == m)
            .unwrap_or_else(|| panic!("no {m} in {doc}"))
            .clone()
    };
    assert_eq!(fate("versioned@1")["retained"], true, "{doc}");
    assert_eq!(fate("versioned@2")["retained"], false, "{doc}");
    assert_eq!(fate("versioned@3")["retained"], true, "{doc}");
    assert_eq!(doc["removed"]["record"]["count"], 1, "one version: {doc}");

    for kept in [&one_a, &one_b, &three] {
        assert!(r.blob_path(kept).exists(), "record {kept} went");
    }
    for gone in [&two_a, &two_b] {
        assert!(!r.blob_path(gone).exists(), "record {gone} stayed");
    }
    assert_eq!(
        shown_records(&r, "versioned@1"),
        [(one_a.clone(), false), (one_b.clone(), true)]
    );
    assert!(!r
        .store()
        .join("v1/refs/record-history/versioned/2")
        .exists());
    // The older record of the retained version still verifies.
    let out = r.run(&["verify", &one_a]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Nothing more to collect.
    let again = json(&r.run(&["gc", "--json", "--keep-latest", "1"]));
    assert_eq!(again["freed_bytes"], 0, "{again}");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn two_first_builds_of_one_version_from_different_data_exactly_one_wins() {
    let r = project("7", "unused\n");
    for (dir, rows) in [("left", "l\n"), ("right", "r\n")] {
        r.write(&format!("{dir}/model.toml"), &recipe("7"));
        r.write(&format!("{dir}/data/rows.txt"), rows);
        let image = r.work().join(dir).join("image");
        repro_tests::busybox_oci_layout(&image);
    }
    let spawn = |dir: &str| {
        r.std_cmd()
            .args(["build", "--json", &format!("{dir}/model.toml")])
            .spawn()
            .unwrap()
    };
    let (left, right) = (spawn("left"), spawn("right"));
    let outs = [
        left.wait_with_output().unwrap(),
        right.wait_with_output().unwrap(),
    ];
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    let won: Vec<&std::process::Output> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(
        won.len(),
        1,
        "{codes:?}: {}",
        outs.iter().map(stderr).collect::<String>()
    );
    let lost = outs.iter().find(|o| !o.status.success()).unwrap();
    assert_eq!(lost.status.code(), Some(2), "{}", stderr(lost));
    assert!(stderr(lost).contains("`versioned@7`"), "{}", stderr(lost));
    let doc: serde_json::Value = serde_json::from_slice(&won[0].stdout).unwrap();
    let winner = doc["record"].as_str().unwrap().to_string();
    assert_eq!(latest(&r, "versioned", "7"), winner);
    assert_eq!(shown_records(&r, "versioned@7"), [(winner, true)]);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn an_imported_record_of_other_inputs_is_refused_and_one_of_the_same_joins_the_version() {
    let a = project("1", "b\na\n");
    let a_record = build(&a, &[]);
    let bundle = a.work().join("v1.tar");
    let out = a.run(&["export", "versioned@1", "-o", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Another party built `versioned@1` from other data: the bundle is refused.
    let b = project("1", "other\n");
    let b_record = build(&b, &[]);
    let before = store_refs(&b.store());
    let out = b.run(&["import", bundle.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`versioned@1`"), "{err}");
    assert!(err.contains(&b_record), "names the store's record: {err}");
    assert!(err.contains("data `train`"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(store_refs(&b.store()), before, "a ref changed");
    assert_eq!(latest(&b, "versioned", "1"), b_record);

    // A third party built it from the same inputs: the bundle's record joins.
    let c = project("1", "b\na\n");
    let c_record = build(&c, &[]);
    assert_ne!(a_record, c_record);
    let out = c.run(&["import", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut records: Vec<String> = shown_records(&c, "versioned@1")
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    records.sort();
    let mut want = vec![a_record, c_record];
    want.sort();
    assert_eq!(records, want);
}

/// Every file under `v1/refs` with its contents.
fn store_refs(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![store.join("v1/refs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs docker-registry and root (native sandbox)"]
fn a_pulled_record_of_other_inputs_is_refused_and_one_of_the_same_joins_the_version() {
    let reg = repro_tests::Registry::start(false);
    let to = format!("{}/team/models", reg.host());
    let a = project("1", "b\na\n");
    let a_record = build(&a, &[]);
    let out = a.run(&["push", "versioned@1", "--to", &to, "--insecure"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), reg.log());
    // An attestation travels with the version: it must not land either.
    let out = a.run(&["verify", "versioned@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = a.run(&["push", "versioned@1", "--to", &to, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let b = project("1", "other\n");
    let b_record = build(&b, &[]);
    let before = store_refs(&b.store());
    let out = b.run(&["pull", "versioned@1", "--from", &to, "--insecure"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`versioned@1`"), "{err}");
    assert!(err.contains(&a_record) && err.contains(&b_record), "{err}");
    assert!(
        err.contains("data `train`") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(store_refs(&b.store()), before, "a ref changed");

    let c = project("1", "b\na\n");
    let c_record = build(&c, &[]);
    let out = c.run(&["pull", "versioned@1", "--from", &to, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut records: Vec<String> = shown_records(&c, "versioned@1")
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    records.sort();
    let mut want = vec![a_record, c_record];
    want.sort();
    assert_eq!(records, want);
}

/// The first 12 hex digits of `{data}` for one data snapshot `train`:
/// SHA-256 of `{"train":"<tree digest>"}`.
fn data_prefix(tree: &str) -> String {
    let digest = common::sha256(format!("{{\"train\":\"{tree}\"}}").as_bytes());
    digest.strip_prefix("sha256:").unwrap()[..12].to_string()
}

/// `repro verify name@version`: its exit code and stderr.
fn verify(r: &Repro, model: &str) -> (Option<i32>, String) {
    let out = r.run(&["verify", model]);
    (out.status.code(), stderr(&out))
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_version_template_names_the_data_and_its_builds_verify() {
    let r = project("1.0.0", "b\na\n");
    let tree = tree_of(&r, "data");
    let version = format!("2.0.0+data.{}", data_prefix(&tree));
    let model = format!("versioned@{version}");

    let out = r.run(&["build", "--version", "2.0.0+data.{data}", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("version: {version}\n")), "{err}");
    assert!(err.contains(&format!("built {model}:")), "{err}");
    let first = latest(&r, "versioned", &version);
    // Nothing of the recipe's own version.
    assert!(!r.store().join("v1/refs/records/versioned/1.0.0").exists());
    // The record, `registry show` and the card carry the expanded version.
    let shown = shown_records(&r, &model);
    assert_eq!(shown, [(first.clone(), true)]);
    let cards = r.tmp.path().join("card");
    let out = r.run(&["card", &model, "-o", cards.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let card = std::fs::read_to_string(cards.join("model-card.md")).unwrap();
    assert!(card.contains(&version), "{card}");
    assert!(!card.contains("1.0.0"), "the recipe's version: {card}");
    // Verify rebuilds it from the stored recipe and reproduces it.
    let (code, err) = verify(&r, &model);
    assert_eq!(code, Some(0), "{err}");

    // The same template and inputs again: the same version, every step
    // from the cache, a record added to the version.
    let (out, doc) = r.build_json(&["--version", "2.0.0+data.{data}", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["version"], version.as_str(), "{doc}");
    assert_eq!(doc["model"], model.as_str(), "{doc}");
    assert_eq!(common::statuses(&doc), ["fit=cached"]);
    assert!(stderr(&out).contains(&format!("version: {version}")));
    let second = doc["record"].as_str().unwrap().to_string();
    assert_eq!(
        shown_records(&r, &model),
        [(first.clone(), false), (second.clone(), true)]
    );

    // New data: a new version of its own, no refusal, and it verifies too.
    r.write("data/rows.txt", "b\na\nc\n");
    let new_tree = tree_of(&r, "data");
    let new_version = format!("2.0.0+data.{}", data_prefix(&new_tree));
    assert_ne!(new_version, version);
    let (out, doc) = r.build_json(&["--version", "2.0.0+data.{data}", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["version"], new_version.as_str(), "{doc}");
    assert_eq!(common::statuses(&doc), ["fit=ran"]);
    let (code, err) = verify(&r, &format!("versioned@{new_version}"));
    assert_eq!(code, Some(0), "{err}");
    // The first version still names the first data.
    assert_eq!(latest(&r, "versioned", &version), second);
    let mut want = vec![(model.clone(), first), (model, second)];
    want.sort();
    assert_eq!(users(&r, &tree), want);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_fixed_version_reused_on_other_data_is_refused() {
    let r = project("1.0.0", "b\na\n");
    let first = build(&r, &["--version", "3.0.0"]);
    assert_eq!(latest(&r, "versioned", "3.0.0"), first);
    let cache = action_cache(&r);
    let lock = std::fs::read(r.work().join("model.lock")).unwrap();
    r.write("data/rows.txt", "b\na\nc\n");
    let out = r.run(&["build", "--version", "3.0.0", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`versioned@3.0.0`"), "{err}");
    assert!(err.contains("data `train`"), "{err}");
    assert!(err.contains("--version"), "the hint names the flag: {err}");
    assert_eq!(action_cache(&r), cache, "a step ran");
    assert_eq!(std::fs::read(r.work().join("model.lock")).unwrap(), lock);
    assert_eq!(latest(&r, "versioned", "3.0.0"), first);
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_recipe_template_takes_the_date_from_source_date_epoch_and_inputs_from_the_record() {
    let r = project("1.1.{date}", "b\na\n");
    // 2026-03-05T00:00:00Z.
    let out = r
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1772668800")
        .args(["build", "model.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("version: 1.1.20260305\n"),
        "{}",
        stderr(&out)
    );
    let record = latest(&r, "versioned", "1.1.20260305");
    // Verify parses the stored recipe (template and all) and reproduces.
    let (code, err) = verify(&r, "versioned@1.1.20260305");
    assert_eq!(code, Some(0), "{err}");
    // The record's external parameters hold the expanded version.
    let out = r.run(&["lineage", "versioned@1.1.20260305", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&record));

    // A value that is not a time is refused, naming the variable.
    let out = r
        .cmd()
        .env("SOURCE_DATE_EPOCH", "last tuesday")
        .args(["build", "model.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`SOURCE_DATE_EPOCH`"),
        "{}",
        stderr(&out)
    );

    // `{inputs}` is the inputs digest the version's history keeps.
    r.write("model.toml", &recipe("4.0.0+in.{inputs}"));
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version = doc["version"].as_str().unwrap().to_string();
    let prefix = version.strip_prefix("4.0.0+in.").unwrap();
    let history = r
        .store()
        .join("v1/refs/record-history/versioned")
        .join(&version);
    let entry = std::fs::read_dir(&history)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let kept = std::fs::read_to_string(entry.path()).unwrap();
    assert!(
        kept.contains(&format!("sha256:{prefix}")),
        "{prefix} is not the start of the inputs digest in {kept}"
    );
}

/// Refused before anything is resolved or built: no sandbox needed.
#[test]
fn unknown_placeholders_and_invalid_versions_are_refused_with_exit_2() {
    let r = Repro::with_key();
    r.write("model.toml", &recipe("1.0.0"));
    r.write("data/rows.txt", "b\na\n");
    for (flag, why) in [
        (
            "1.{time}",
            "is not a valid template: unknown placeholder `{time}`",
        ),
        (
            "1.{date",
            "is not a valid template: a `{` without its closing `}`",
        ),
        (
            "1~{data}",
            "does not give valid versions (`1~000000000000` for instance): it contains `~`",
        ),
        (
            ".{date}",
            "does not give valid versions (`.00000000` for instance): it starts with `.`",
        ),
        ("a@b", "is not a valid version: it contains `@`"),
    ] {
        let out = r.run(&["build", "--version", flag, "model.toml"]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("`--version {flag}` {why}")), "{err}");
        assert!(
            err.contains("`{date}`") && err.contains("`{inputs}`") && err.contains("`{data}`"),
            "lists the placeholders: {err}"
        );
    }
    // In the recipe: at its file, line, column and key.
    r.write("model.toml", &recipe("1.{when}"));
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: model version `1.{when}` is not a valid template: unknown placeholder `{when}`\n  --> model.toml:4:11\n  = key: model.version\n  = hint: the placeholders are `{date}`"),
        "{err}"
    );
    r.write("model.toml", &recipe("1~{data}"));
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: model version `1~{data}` does not give valid versions (`1~000000000000` for instance)"),
        "{err}"
    );
    assert!(
        err.contains("--> model.toml:4:11\n  = key: model.version"),
        "{err}"
    );
    // Nothing was resolved: no lock, no snapshot.
    assert!(!r.work().join("model.lock").exists());
}
