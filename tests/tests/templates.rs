//! The CI templates of `ci/templates/`: the workflow files pass the JSON
//! schemas of their formats (GitHub Actions, GitLab CI) with a real
//! validator, every shell script of the project passes shellcheck, and the script, run end
//! to end on the example, retrains only when the data moved: it builds a
//! new version, verifies it independently from the registry, and the
//! version shows as a candidate in `repro status`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_dir, repo, stderr, Repro};

fn templates() -> PathBuf {
    repo().join("ci/templates")
}

fn script() -> PathBuf {
    templates().join("repro-ci.sh")
}

/// `tool` from PATH, or a loud failure naming what installs it.
fn require(tool: &str, installs: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}` on PATH and it is missing\nhint: {installs}"
    );
}

fn check_jsonschema(schema: &str, file: &Path) -> std::process::Output {
    Command::new("check-jsonschema")
        .args(["--builtin-schema", schema])
        .arg(file)
        .output()
        .expect("run check-jsonschema")
}

#[test]
#[ignore = "needs check-jsonschema (ci/setup installs it from PyPI into .ci-tools)"]
fn the_workflow_templates_pass_the_published_schemas_of_their_formats() {
    require(
        "check-jsonschema",
        "ci/setup installs it from PyPI into .ci-tools/bin (ci/test puts that on PATH)",
    );
    let cases = [
        ("vendor.github-workflows", "github/retrain.yml"),
        ("vendor.github-workflows", "github/revalidate.yml"),
        ("vendor.gitlab-ci", "gitlab/gitlab-ci.yml"),
    ];
    for (schema, rel) in cases {
        let file = templates().join(rel);
        let out = check_jsonschema(schema, &file);
        assert!(
            out.status.success(),
            "{rel} does not pass {schema}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        // The validator really validates: a misspelt key is refused.
        let broken = tempfile::NamedTempFile::with_suffix(".yml").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let bad = if rel.starts_with("github") {
            text.replacen("runs-on:", "run-on:", 1)
        } else {
            text.replacen("stage: build", "stage: [build]\n  scripts: []", 1)
        };
        assert_ne!(bad, text);
        std::fs::write(broken.path(), bad).unwrap();
        let out = check_jsonschema(schema, broken.path());
        assert!(
            !out.status.success(),
            "{schema} accepted a broken {rel}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
#[ignore = "needs shellcheck (ci/setup installs Debian's shellcheck)"]
fn every_shell_script_of_the_project_passes_shellcheck() {
    require(
        "shellcheck",
        "apt-get install shellcheck (ci/setup does it)",
    );
    let scripts = shell_scripts();
    for expected in [
        script(),
        repo().join("ci/setup"),
        repo().join("ci/slurm-cluster"),
    ] {
        assert!(
            scripts.contains(&expected),
            "{expected:?} not found among {scripts:?}"
        );
    }
    let out = Command::new("shellcheck").args(&scripts).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The shell scripts people and CI run: `ci/*`, `ci/templates/*.sh`,
/// `.ci/run` and the image builders, each recognised by its `#!` line.
fn shell_scripts() -> Vec<PathBuf> {
    let mut candidates = vec![repo().join(".ci/run")];
    for dir in ["ci", "ci/templates"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            candidates.push(e.unwrap().path());
        }
    }
    for e in std::fs::read_dir(repo().join("examples/images")).unwrap() {
        candidates.push(e.unwrap().path().join("build"));
    }
    let mut scripts: Vec<PathBuf> = candidates
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| {
                let first = t.lines().next().unwrap_or("");
                first.starts_with("#!") && (first.ends_with("bash") || first.ends_with("/sh"))
            })
        })
        .collect();
    scripts.sort();
    scripts
}

/// The script's subcommands, from its `case` dispatch.
fn subcommands() -> Vec<String> {
    let text = std::fs::read_to_string(script()).unwrap();
    let dispatch = text.split("case \"$cmd\" in").nth(1).expect("a dispatch");
    dispatch
        .lines()
        .filter_map(|l| l.trim().split_once(") "))
        .map(|(w, _)| w.to_string())
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .collect()
}

#[test]
fn every_subcommand_the_workflow_templates_call_exists() {
    let known = subcommands();
    assert!(known.contains(&"retrain".to_string()), "{known:?}");
    let mut called = 0;
    for rel in [
        "github/retrain.yml",
        "github/revalidate.yml",
        "gitlab/gitlab-ci.yml",
    ] {
        let text = std::fs::read_to_string(templates().join(rel)).unwrap();
        // Calls, not the comments that say where to copy the script.
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in text.match_indices("repro-ci.sh ") {
            let word: String = text[i + "repro-ci.sh ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            assert!(
                known.contains(&word),
                "{rel} calls `repro-ci.sh {word}`, which the script does not have ({known:?})"
            );
            called += 1;
        }
    }
    assert!(called >= 5, "the templates call the script {called} times");
}

/// Run the script with `args` for `r` (builder key), the verifier's key
/// `verifier`, the registry `registry` and outputs in `out`.
fn run_script(
    r: &Repro,
    verifier: &Path,
    registry: &str,
    out: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut c = Command::new(script());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", r.tmp.path())
        .env("NO_COLOR", "1")
        .env("REPRO", repro_tests::repro_bin())
        .env("REPRO_STORE", r.store())
        .env("REPRO_KEY", r.key())
        .env("REPRO_CI_VERIFY_KEY", verifier)
        .env("REPRO_CI_REGISTRY", registry)
        .env("REPRO_CI_INSECURE", "1")
        .env("REPRO_CI_OUT", out)
        .current_dir(r.work())
        .args(args);
    c.output().unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root, user namespaces, docker-registry and the example image (REPRO_TEST_IMAGE_ARCHIVE, built by ci/setup)"]
fn the_retrain_script_builds_only_when_the_data_moved_and_verifies_independently() {
    repro_tests::require_namespaces();
    let archive = std::env::var_os("REPRO_TEST_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .expect("REPRO_TEST_IMAGE_ARCHIVE is not set: run ci/setup and point it at the OCI tar");
    let reg = repro_tests::Registry::start(false);
    let registry = format!("{}/models/breast-cancer", reg.host());
    let r = Repro::with_key();
    // The verifier's own key, in its own place.
    let verifier = r.tmp.path().join("verifier.key");
    let out = r
        .std_cmd()
        .env("REPRO_KEY", &verifier)
        .args(["key", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let example = r.work().join("breast-cancer");
    copy_dir(&repo().join("examples/breast-cancer"), &example);
    let images = r.work().join("images/build");
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&archive, images.join("debian-sklearn.oci.tar")).unwrap();
    let recipe = "breast-cancer/model.toml";
    let template = "1.1.0+data.{data}";

    // The lock as the team commits it (the image built on this machine may
    // differ from the example's, whose Debian archive state has moved on).
    let out = r.run(&["lock", recipe]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing moved since the lock: nothing is built.
    let first = r.tmp.path().join("ci-1");
    let o = run_script(
        &r,
        &verifier,
        &registry,
        &first,
        &["retrain", recipe, template],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(summary(&first)["outcome"], "unchanged", "{}", stderr(&o));
    let env = std::fs::read_to_string(first.join("outputs.env")).unwrap();
    assert!(env.contains("changed=false"), "{env}");
    let list = r.run(&["registry", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(0), "{rows:#}");

    // New data lands (the last case is withdrawn): a new version is built,
    // pushed, rebuilt independently from the registry, and attested.
    let csv = example.join("data/breast_cancer.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.pop();
    // The header counts the cases (`569,30,malignant,benign`).
    let rest = lines[0].split_once(',').unwrap().1.to_string();
    lines[0] = format!("{},{rest}", lines.len() - 1);
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let second = r.tmp.path().join("ci-2");
    let o = run_script(
        &r,
        &verifier,
        &registry,
        &second,
        &["retrain", recipe, template],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = summary(&second);
    assert_eq!(s["outcome"], "built", "{s:#}");
    assert_eq!(s["verification"], "reproduced", "{s:#}");
    let model = s["model"].as_str().unwrap().to_string();
    let version = model.split_once('@').unwrap().1.to_string();
    let prefix = "1.1.0+data.";
    assert!(
        version.starts_with(prefix)
            && version.len() == prefix.len() + 12
            && version[prefix.len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
    assert!(second.join("card/model-card.html").exists());
    assert!(second.join("verifier/verify.json").exists());
    // The registry holds the version.
    let tags = reg
        .storage()
        .join("docker/registry/v2/repositories/models/breast-cancer/_manifests/tags");
    assert!(
        std::fs::read_dir(&tags).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("1.1.0")),
        "no tag for {model}"
    );
    // The verifier's attestation came back into the builder's store, and
    // status shows the new version as a candidate, verified.
    let st = r.run(&["status", "--json"]);
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let doc: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let m = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "breast-cancer-classifier")
        .unwrap_or_else(|| panic!("{doc:#}"));
    let candidates = m["candidates"].as_array().unwrap();
    let c = candidates
        .iter()
        .find(|c| c["version"] == version.as_str())
        .unwrap_or_else(|| panic!("{version} is not a candidate: {doc:#}"));
    assert!(!c["last_verified"].is_null(), "{doc:#}");

    // The next scheduled run finds nothing new.
    let third = r.tmp.path().join("ci-3");
    let o = run_script(
        &r,
        &verifier,
        &registry,
        &third,
        &["retrain", recipe, template],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(summary(&third)["outcome"], "unchanged", "{}", stderr(&o));
}

const POLICY: &str = "[stages.validated]\n[stages.production]\nfrom = \"validated\"\n";

fn model(name: &str, command: &str) -> String {
    format!(
        r#"
[model]
name = "{name}"
version = "1"

[toolchains.bb]
archive = "../image"

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "{command}"]
outputs = ["model.txt"]
"#
    )
}

/// The scheduled revalidation: every production version is rebuilt; one
/// that no longer reproduces makes the run fail (exit 1) and is named in
/// the summary, and the audit log is exported.
#[test]
#[ignore = "needs root and user namespaces (native sandbox) and busybox-static"]
fn the_revalidate_script_fails_when_a_production_model_no_longer_reproduces() {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    let admin = r.govern(Some(POLICY));
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    for (name, command) in [
        ("steady", "echo 42 > /repro/out/model.txt"),
        ("clock", "cat /proc/uptime > /repro/out/model.txt"),
    ] {
        r.write(&format!("{name}/model.toml"), &model(name, command));
        let out = r.run(&["build", &format!("{name}/model.toml")]);
        assert!(out.status.success(), "{}", stderr(&out));
        for stage in ["validated", "production"] {
            let out = r.run(&[
                "promote",
                &format!("{name}@1"),
                "--to",
                stage,
                "--key",
                admin.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
    }
    let out_dir = r.tmp.path().join("ci");
    let o = run_script(&r, &r.key(), "unused", &out_dir, &["revalidate"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s = summary(&out_dir);
    assert_eq!(s["outcome"], "failed", "{s:#}");
    let rows = s["production"].as_array().unwrap();
    let exit_of = |m: &str| {
        rows.iter()
            .find(|r| r["model"] == m)
            .unwrap_or_else(|| panic!("{m} not revalidated: {s:#}"))["exit"]
            .clone()
    };
    assert_eq!(exit_of("steady@1"), 0, "{s:#}");
    assert_eq!(exit_of("clock@1"), 1, "{s:#}");
    let audit = std::fs::read_to_string(out_dir.join("audit.jsonl")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"verify\"")), "{audit}");
}
