//! `repro log` (a step's log as the store keeps it, re-hashed first) and
//! `repro diff` of two records saying why their step keys differ.

mod common;

use common::{stderr, Repro};

fn recipe(version: &str, seed: i64) -> String {
    format!(
        r#"
[model]
name = "m"
version = "{version}"

[toolchains.bb]
archive = "image"

[params]
seed = {seed}

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "echo training with seed ${{params.seed}}; echo ${{params.seed}} > /repro/out/model.txt"]
outputs = ["model.txt"]

[[steps]]
name = "eval"
toolchain = "bb"
argv = ["sh", "-c", "echo evaluating >&2; cat /repro/in/model/model.txt > /repro/out/eval.txt"]
inputs = {{ model = "steps.train" }}
outputs = ["eval.txt"]
"#
    )
}

fn project() -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox) and busybox-static"]
fn log_prints_a_steps_log_by_version_step_key_or_digest_and_never_an_altered_one() {
    let r = project();
    r.write("model.toml", &recipe("1", 7));
    let (o, doc) = r.build_json(&["model.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = r.run(&["log", "m@1", "train"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(out(&o), "training with seed 7\n");
    // stderr is in the log too.
    let o = r.run(&["log", "m@1", "eval"]);
    assert_eq!(out(&o), "evaluating\n");
    // Every step, each under a header.
    let o = r.run(&["log", "m@1"]);
    let text = out(&o);
    assert!(text.contains("==> step train (sha256:"), "{text}");
    assert!(text.contains("==> step eval (sha256:"), "{text}");
    assert!(text.contains("training with seed 7\n"), "{text}");
    // By step key, and by the log's own digest.
    let train = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train")
        .unwrap();
    let key = train["key"].as_str().unwrap();
    let log = train["log"].as_str().unwrap();
    assert_eq!(out(&r.run(&["log", key])), "training with seed 7\n");
    assert_eq!(out(&r.run(&["log", log])), "training with seed 7\n");
    // A step the version does not have: exit 2, naming the ones it has.
    let o = r.run(&["log", "m@1", "nosuch"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("`train`, `eval`") || stderr(&o).contains("`eval`, `train`"));
    // An altered log is never printed: exit 3, naming it.
    let path = r.blob_path(log);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, "training with seed 8\n").unwrap();
    let o = r.run(&["log", "m@1", "train"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(out(&o), "");
    assert!(stderr(&o).contains(log), "{}", stderr(&o));
}

#[test]
#[ignore = "needs root and user namespaces (native sandbox) and busybox-static"]
fn diff_of_two_records_says_which_step_keys_differ_and_why() {
    let r = project();
    r.write("model.toml", &recipe("1", 7));
    let o = r.run(&["build", "model.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    r.write("model.toml", &recipe("2", 8));
    let o = r.run(&["build", "model.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = r.run(&["diff", "m@1", "m@2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = out(&o);
    assert!(text.contains("params.seed: 7 -> 8"), "{text}");
    assert!(text.contains("step `train`: key differs"), "{text}");
    assert!(
        text.contains(r#"argv[2]: "echo training with seed 7; echo 7 > /repro/out/model.txt" -> "echo training with seed 8; echo 8 > /repro/out/model.txt""#),
        "{text}"
    );
    // The downstream step's command is the same: its input moved.
    assert!(text.contains("step `eval`: key differs"), "{text}");
    assert!(
        text.contains("input `model`: sha256:") && text.contains("(the output of step `train`)"),
        "{text}"
    );
    assert!(!text.contains("argv[2]: \"echo evaluating"), "{text}");
    let o = r.run(&["diff", "--json", "m@1", "m@2"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let eval = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "eval")
        .unwrap();
    let why = eval["key"]["why"].as_array().unwrap();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].as_str().unwrap().starts_with("input `model`"),
        "{why:?}"
    );
    // The same version against itself: identical, no key change.
    let o = r.run(&["diff", "--json", "m@1", "m@1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s.get("key").is_none()));
}
