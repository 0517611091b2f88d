//! Lineage and model cards: from a model file's digest back to the data
//! snapshot and its source system; every version built on a snapshot; a
//! model card written from the evidence, the same bytes each time. Runs on
//! the native sandbox.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, repo, stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "scorer"
version = "1"
owner = "Jane Doe <jane@example.com>"
purpose = "Score loan applications <for tests> & nothing else"
intended_use = "Ranking applications for manual review"
limitations = "Trained on ten rows"

[toolchains.bb]
archive = "image"

[data.rows]
path = "data"
description = "Loan applications, ten rows"
source = "warehouse.loans snapshot 2024-01-01"

[code.src]
path = "src"
git_commit = "0123456789abcdef0123456789abcdef01234567"

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
outputs = ["model.bin", "metrics.json"]
"#;

const TRAIN: &str = r#"set -e
wc -l < /repro/in/feat/features.txt > /repro/out/model.bin
cat /repro/in/feat/features.txt >> /repro/out/model.bin
cat > /repro/out/metrics.json <<'EOF'
{"overall": {"auc": 0.9731, "recall": null, "n": 10},
 "slices": {"small": {"auc": 0.9512, "n": 4}, "large": {"auc": 0.9904, "n": 6}},
 "gaps": {"auc": {"gap": 0.0392, "max": "large", "min": "small"}},
 "threshold": 0.5}
EOF
"#;

fn party(name: &str) -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::new();
    let out = r.run(&[
        "key",
        "generate",
        "--name",
        name,
        "--email",
        &format!("{}@example.com", name.to_lowercase()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    r.write("data/rows.csv", "b,2\na,1\nc,3\n");
    r.write("src/train.sh", TRAIN);
    r
}

/// Build and return the `--json` document.
fn build(r: &Repro, recipe: &str) -> serde_json::Value {
    let (out, doc) = r.build_json(&[recipe]);
    assert!(out.status.success(), "{}", stderr(&out));
    doc
}

fn file_digest(doc: &serde_json::Value, step: &str, file: &str) -> String {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("no step `{step}` in {doc}"))["files"][file]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no file `{file}` in step `{step}`: {doc}"))
        .to_string()
}

fn tree_digest(r: &Repro, dir: &str) -> String {
    let out = r.run(&["data", "add", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The statement of the record `digest` in `r`'s store.
fn record_statement(r: &Repro, digest: &str) -> serde_json::Value {
    use base64::Engine as _;
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.blob_path(digest)).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn lineage_of_the_model_file_reaches_the_data_snapshot_its_source_and_the_code() {
    let r = party("Alice");
    let doc = build(&r, "model.toml");
    let model = file_digest(&doc, "train", "model.bin");
    let data = tree_digest(&r, "data");
    let code = tree_digest(&r, "src");

    let out = r.run(&["lineage", &model]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("produced as `train/model.bin` by scorer@1"),
        "{text}"
    );
    let train = text.find("step `train`").expect(&text);
    let prep = text.find("step `prep`").expect(&text);
    let rows = text.find(&format!("data.rows {data}")).expect(&text);
    assert!(train < prep && prep < rows, "{text}");
    assert!(
        text.contains("source: warehouse.loans snapshot 2024-01-01"),
        "{text}"
    );
    assert!(text.contains(&format!("code.src {code}")), "{text}");
    assert!(
        text.contains("git commit: 0123456789abcdef0123456789abcdef01234567"),
        "{text}"
    );
    assert!(text.contains("image toolchains.bb sha256:"), "{text}");
    // Where the inputs came from on the build machine: shown from the
    // record's `path` annotations.
    assert!(text.contains("snapshot of: file:data"), "{text}");
    assert!(text.contains("snapshot of: file:src"), "{text}");
    assert!(text.contains(" (file:image)"), "{text}");

    // The record's inputs are named by URIs that mean the same anywhere:
    // their content addresses; the paths are annotations only.
    let record = doc["record"].as_str().unwrap();
    let deps = record_statement(&r, record)["predicate"]["buildDefinition"]["resolvedDependencies"]
        .clone();
    let dep = |name: &str| {
        deps.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {deps}"))
            .clone()
    };
    let rows = dep("data.rows");
    assert_eq!(rows["uri"], format!("urn:repro:tree:{data}").as_str());
    assert_eq!(rows["annotations"]["path"], "data");
    let src = dep("code.src");
    assert_eq!(src["uri"], format!("urn:repro:tree:{code}").as_str());
    assert_eq!(src["annotations"]["path"], "src");
    let bb = dep("toolchains.bb");
    assert_eq!(
        bb["uri"],
        format!(
            "urn:repro:image:sha256:{}",
            bb["digest"]["sha256"].as_str().unwrap()
        )
        .as_str()
    );
    assert_eq!(bb["annotations"]["path"], "image");

    let l = json(&r.run(&["lineage", "--json", &model]));
    assert_eq!(l["file"], model.as_str());
    assert_eq!(l["produced_by"][0]["step"], "train");
    assert_eq!(l["produced_by"][0]["path"], "model.bin");
    assert_eq!(l["produced_by"][0]["model"], "scorer@1");
    let g = &l["graphs"][0];
    assert_eq!(g["data"][0]["digest"], data.as_str());
    assert_eq!(
        g["data"][0]["source"],
        "warehouse.loans snapshot 2024-01-01"
    );
    assert_eq!(g["data"][0]["description"], "Loan applications, ten rows");
    assert_eq!(g["data"][0]["uri"], "file:data");
    assert_eq!(g["code"][0]["digest"], code.as_str());
    assert_eq!(g["code"][0]["uri"], "file:src");
    let steps: Vec<&str> = g["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["prep", "train"]);

    // The features file comes from `prep` only: its lineage has no code tree.
    let features = file_digest(&doc, "prep", "features.txt");
    let l = json(&r.run(&["lineage", "--json", &features]));
    assert_eq!(l["produced_by"][0]["step"], "prep");
    assert_eq!(l["graphs"][0]["code"].as_array().unwrap().len(), 0);
    assert_eq!(l["graphs"][0]["data"][0]["digest"], data.as_str());

    // A digest no version produced: a user error that says so.
    let unknown = format!("sha256:{}", "ab".repeat(32));
    let out = r.run(&["lineage", &unknown]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no recorded version has an output file"),
        "{}",
        stderr(&out)
    );

    // The whole graph of a version, and the same graph as Graphviz.
    let v = stdout(&r.run(&["lineage", "scorer@1"]));
    assert!(
        v.contains("step `train`") && v.contains("file `metrics.json`"),
        "{v}"
    );
    let dot = r.run(&["lineage", "--format", "dot", "scorer@1"]);
    assert!(dot.status.success(), "{}", stderr(&dot));
    let dot = stdout(&dot);
    assert!(
        dot.starts_with("digraph lineage {\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    assert!(
        dot.contains(r#""g0:data:rows" -> "g0:step:prep" [label="data"];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r#""g0:step:prep" -> "g0:step:train" [label="feat"];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r#""g0:step:train" -> "g0:file:train/model.bin";"#),
        "{dot}"
    );
    assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
    let again = stdout(&r.run(&["lineage", "--format", "dot", "scorer@1"]));
    assert_eq!(dot, again, "the picture depends only on the evidence");
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn uses_finds_every_version_built_on_a_snapshot_and_no_other() {
    let r = party("Alice");
    build(&r, "model.toml");
    r.write(
        "v2.toml",
        &RECIPE.replace("version = \"1\"", "version = \"2\""),
    );
    build(&r, "v2.toml");
    r.write(
        "v3.toml",
        &RECIPE
            .replace("version = \"1\"", "version = \"3\"")
            .replace("path = \"data\"", "path = \"other\""),
    );
    r.write("other/rows.csv", "z,9\n");
    build(&r, "v3.toml");
    let data = tree_digest(&r, "data");
    let other = tree_digest(&r, "other");
    let code = tree_digest(&r, "src");

    let models = |digest: &str| -> Vec<String> {
        let u = json(&r.run(&["lineage", "--uses", digest, "--json"]));
        assert_eq!(u["digest"], digest);
        u["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                assert!(v["record"].as_str().unwrap().starts_with("sha256:"), "{v}");
                format!(
                    "{} {} {}",
                    v["model"].as_str().unwrap(),
                    v["as_input"].as_str().unwrap(),
                    v["steps"]
                )
            })
            .collect()
    };
    assert_eq!(
        models(&data),
        [
            r#"scorer@1 data.rows ["prep"]"#,
            r#"scorer@2 data.rows ["prep"]"#
        ]
    );
    assert_eq!(models(&other), [r#"scorer@3 data.rows ["prep"]"#]);
    assert_eq!(models(&code).len(), 3, "a code tree is found the same way");

    let text = stdout(&r.run(&["lineage", "--uses", &other]));
    assert!(text.contains("scorer@3  as data.rows"), "{text}");
    assert!(!text.contains("scorer@1"), "{text}");
    let unused = format!("sha256:{}", "cd".repeat(32));
    let text = stdout(&r.run(&["lineage", "--uses", &unused]));
    assert!(text.contains("no recorded version used"), "{text}");
}

/// Register Bob as a validator (signed by Alice, who builds) and have him
/// approve; returns Bob's key file.
fn approve_as_bob(a: &Repro) -> PathBuf {
    let bob = a.tmp.path().join("bob.key");
    let out = a.run(&[
        "key",
        "generate",
        "--key",
        bob.to_str().unwrap(),
        "--name",
        "Bob",
        "--email",
        "bob@example.com",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let admin = a.govern(None);
    let out = a.run(&[
        "identity",
        "add",
        &format!("{}.pub", bob.display()),
        "--name",
        "Bob",
        "--email",
        "bob@example.com",
        "--role",
        "validator",
        "--key",
        admin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.run(&[
        "approve",
        "scorer@1",
        "--role",
        "validator",
        "--reason",
        "independent rebuild matched | metrics <ok>",
        "--key",
        bob.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    bob
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn the_card_shows_metadata_data_metrics_evidence_and_approvals_and_is_stable() {
    let a = party("Alice");
    build(&a, "model.toml");

    // Before any approval: the card says so.
    let out = a.run(&["card", "scorer@1", "-o", "bare"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = read(&a.work().join("bare"), "model-card.md");
    assert!(md.contains("## Approvals\n\nno approvals\n"), "{md}");
    assert!(md.contains("no independent rebuilds attested"), "{md}");

    let out = a.run(&["verify", "scorer@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    approve_as_bob(&a);

    let out = a.run(&["card", "scorer@1", "-o", "one"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.run(&["card", "scorer@1", "-o", "two"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let one = a.work().join("one");
    let two = a.work().join("two");
    let md = read(&one, "model-card.md");
    let html = read(&one, "model-card.html");
    assert_eq!(md, read(&two, "model-card.md"), "same evidence, same card");
    assert_eq!(html, read(&two, "model-card.html"));

    // Metadata, escaped for Markdown and HTML.
    assert!(md.starts_with("# Model card: scorer@1\n"), "{md}");
    assert!(md.contains("Jane Doe &lt;jane@example.com&gt;"), "{md}");
    assert!(
        html.contains("Score loan applications &lt;for tests&gt; &amp; nothing else"),
        "{html}"
    );
    assert!(!html.contains("<for tests>"), "{html}");
    // Data with its source system.
    assert!(md.contains("warehouse.loans snapshot 2024-01-01"), "{md}");
    // Metrics: overall and per slice, and the gap.
    assert!(md.contains("| auc | 0.9731 |"), "{md}");
    assert!(md.contains("| recall | n/a |"), "{md}");
    assert!(md.contains("| small | 0.9512 | 4 |"), "{md}");
    assert!(md.contains("| large | 0.9904 | 6 |"), "{md}");
    assert!(md.contains("| auc | 0.0392 | large | small |"), "{md}");
    assert!(html.contains("<td>0.9731</td>"), "{html}");
    // Reproducibility evidence: Alice's passed rebuild.
    let record = stdout(&a.run(&["lineage", "--json", "scorer@1"]));
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let record = record["graphs"][0]["record"].as_str().unwrap().to_string();
    assert!(md.contains(&record), "{md}");
    assert!(
        md.contains("| PASSED | Alice &lt;alice@example.com&gt;"),
        "{md}"
    );
    // The approval, its pipe and brackets escaped.
    assert!(
        md.contains("| validator | Bob &lt;bob@example.com&gt;"),
        "{md}"
    );
    assert!(
        md.contains(r"independent rebuild matched \| metrics &lt;ok&gt; | counts |"),
        "{md}"
    );
    assert!(html.contains("<td>validator</td>"), "{html}");
    // Lineage.
    assert!(md.contains("step `prep`"), "{md}");
    // Self-contained HTML.
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for external in ["<script", "<link", "src=", "href=", "http"] {
        assert!(!html.contains(external), "`{external}` in {html}");
    }

    // The card is in the store: `v1/refs/cards/<record hex>` names its blob.
    let hex = record.strip_prefix("sha256:").unwrap();
    let blob = std::fs::read_to_string(a.store().join("v1/refs/cards").join(hex)).unwrap();
    let stored = std::fs::read_to_string(a.blob_path(blob.trim())).unwrap();
    assert_eq!(stored, md);
    // `repro gc` keeps a retained version's card.
    let out = a.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        a.blob_path(blob.trim()).is_file(),
        "gc removed the model card"
    );
    // Writing a card is logged.
    let log = std::fs::read_to_string(a.store().join("v1/audit/log.jsonl")).unwrap();
    let cards: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "card")
        .collect();
    assert_eq!(cards.len(), 3, "{log}");
    assert_eq!(cards[2]["subject"], "scorer@1");
    assert_eq!(cards[2]["details"]["card"], blob.trim());
    assert_eq!(cards[2]["details"]["record"], record.as_str());
}

#[test]
#[ignore = "needs root, user namespaces and the example image (REPRO_TEST_IMAGE_ARCHIVE, built by ci/setup)"]
fn the_example_card_shows_its_auc_and_slices_and_lineage_reaches_the_dataset() {
    repro_tests::require_namespaces();
    let archive = std::env::var_os("REPRO_TEST_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .expect("REPRO_TEST_IMAGE_ARCHIVE is not set: run examples/images/debian-sklearn/build and point it at the OCI tar");
    assert!(archive.is_file(), "`{}` is not a file", archive.display());
    let r = Repro::with_key();
    let example = r.work().join("breast-cancer");
    copy_dir(&repo().join("examples/breast-cancer"), &example);
    let _ = std::fs::remove_file(example.join("model.lock"));
    let images = r.work().join("images/build");
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&archive, images.join("debian-sklearn.oci.tar")).unwrap();
    let doc = build(&r, "breast-cancer/model.toml");
    let model = file_digest(&doc, "train", "model.pkl");

    let l = json(&r.run(&["lineage", "--json", &model]));
    let data = &l["graphs"][0]["data"][0];
    assert!(
        data["source"]
            .as_str()
            .unwrap()
            .contains("breast_cancer.csv"),
        "{l}"
    );

    // A model-risk reviewer approves the candidate; the card shows it.
    let reviewer = r.tmp.path().join("reviewer.key");
    let key = reviewer.to_str().unwrap();
    let out = r.run(&[
        "key",
        "generate",
        "--key",
        key,
        "--name",
        "Rita Reviewer",
        "--email",
        "rita@example.com",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pubkey = format!("{key}.pub");
    let admin = r.govern(None);
    let out = r.run(&[
        "identity",
        "add",
        &pubkey,
        "--name",
        "Rita Reviewer",
        "--email",
        "rita@example.com",
        "--role",
        "model-risk",
        "--key",
        admin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&[
        "approve",
        "breast-cancer-classifier@1.0.0",
        "--role",
        "model-risk",
        "--reason",
        "validation report MR-17 accepted",
        "--key",
        key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = r.run(&["card", "breast-cancer-classifier@1.0.0", "-o", "card"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = read(&r.work().join("card"), "model-card.md");
    assert!(md.contains("Rita Reviewer"), "{md}");
    assert!(md.contains("validation report MR-17 accepted"), "{md}");
    let metrics = file_digest(&doc, "evaluate", "metrics.json");
    let bytes = std::fs::read(r.blob_path(&metrics)).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let auc = &m["overall"]["auc"];
    assert!(auc.is_number(), "{m}");
    assert!(md.contains(&format!("| auc | {auc} |")), "{md}");
    for slice in ["small", "medium", "large"] {
        let row = format!("| {slice} | ");
        assert!(md.contains(&row), "no slice `{slice}` in {md}");
    }
    assert!(md.contains("#### Gaps between slices"), "{md}");
    assert!(md.contains("| feature | mean radius |"), "{md}");
    assert!(md.contains("Model Risk Example"), "{md}");
}

/// The card judges approvals by the rule promotion counts them by: once
/// the approver is revoked, the card no longer calls the approval good.
#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn the_card_does_not_count_an_approval_that_promotion_would_not() {
    let a = party("Alice");
    build(&a, "model.toml");
    let bob = approve_as_bob(&a);
    let out = a.run(&["card", "scorer@1", "-o", "before"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = read(&a.work().join("before"), "model-card.md");
    assert!(md.contains("| counts |"), "{md}");

    let keyid = stdout(&a.run(&["key", "show", "--key", bob.to_str().unwrap()]));
    let keyid = keyid
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_string();
    let admin = a.admin_key();
    let out = a.run(&[
        "identity",
        "revoke",
        &keyid,
        "--reason",
        "left the bank",
        "--key",
        admin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.run(&["card", "scorer@1", "-o", "after"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = read(&a.work().join("after"), "model-card.md");
    assert!(!md.contains("| counts |"), "{md}");
    assert!(md.contains("DOES NOT COUNT"), "{md}");
    assert!(md.contains("revoked"), "{md}");
}
