//! Steps on Slurm: a two-node cluster of this machine's own (two slurmd
//! daemons, `repro-a` and `repro-b`, one CPU each on a 2-core machine),
//! started by `ci/slurm-cluster` with a config of the test's own. The store
//! is local, which both nodes share. A model built on the cluster verifies
//! locally byte for byte, its fan-out spread over both nodes; the console
//! shows each job pending and running; a cancelled build cancels its jobs;
//! a step whose node fails is submitted again, and nothing the failed
//! attempt wrote reaches the store.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{copy_dir, repo, stderr, Repro};

/// A two-node cluster, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        repro_tests::require_namespaces();
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/slurm-cluster");
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run ci/slurm-cluster");
        assert!(
            out.status.success(),
            "the two-node Slurm cluster does not start (ci/setup installs slurm-wlm and munge):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.path().join("slurm.conf");
        Cluster { dir, conf }
    }

    /// `r`'s `repro <args>` talking to this cluster.
    fn run(&self, r: &Repro, args: &[&str]) -> std::process::Output {
        let mut c = r.std_cmd();
        c.env("SLURM_CONF", &self.conf).args(args).output().unwrap()
    }

    fn jobs(&self) -> String {
        self.slurm("squeue", &["-h", "-o", "%i %j %T %N"])
    }

    /// What Slurm's command `cmd` prints with `args` on this cluster.
    fn slurm(&self, cmd: &str, args: &[&str]) -> String {
        let out = Command::new(cmd)
            .env("SLURM_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/slurm-cluster");
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

const FAN_OUT: &str = r#"
[model]
name = "fan"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "split"
toolchain = "bb"
argv = ["sh", "-c", "for i in 1 2 3; do echo part $$i > /repro/out/p$$i.txt; done"]
outputs = ["p1.txt", "p2.txt", "p3.txt"]

[[steps]]
name = "a"
toolchain = "bb"
argv = ["sh", "-c", "wc -c < /repro/in/split/p1.txt > /repro/out/a.txt"]
inputs = { split = "steps.split" }
outputs = ["a.txt"]

[[steps]]
name = "b"
toolchain = "bb"
argv = ["sh", "-c", "wc -c < /repro/in/split/p2.txt > /repro/out/b.txt"]
inputs = { split = "steps.split" }
outputs = ["b.txt"]

[[steps]]
name = "join"
toolchain = "bb"
argv = ["sh", "-c", "cat /repro/in/a/a.txt /repro/in/b/b.txt > /repro/out/model.txt"]
inputs = { a = "steps.a", b = "steps.b" }
outputs = ["model.txt"]
"#;

fn project() -> Repro {
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", FAN_OUT);
    r
}

#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn a_fan_out_built_on_slurm_verifies_locally_byte_for_byte() {
    let c = Cluster::start();
    let r = project();
    let out = c.run(
        &r,
        &["build", "--json", "--executor", "slurm", "model.toml"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s["status"] == "ran"), "{doc:#}");
    // Each step really was a Slurm job.
    let out = Command::new("scontrol")
        .env("SLURM_CONF", &c.conf)
        .args(["show", "jobs", "--oneliner"])
        .output()
        .unwrap();
    let jobs = String::from_utf8_lossy(&out.stdout);
    for s in ["split", "a", "b", "join"] {
        assert!(jobs.contains(&format!("JobName=repro-{s} ")), "{jobs}");
    }
    assert!(jobs.matches("JobState=COMPLETED").count() >= 4, "{jobs}");
    // Where each step ran is in the JSON (its one job, and the job and the
    // node) and in the record, as byproducts.
    for s in steps {
        let [id] = &job_ids(s)[..] else {
            panic!("not one job: {s:#}")
        };
        let on = s["ran_on"].as_str().unwrap_or_default();
        assert!(on.starts_with(&format!("slurm job {id} on ")), "{s:#}");
        assert!(
            jobs.contains(&format!(
                "JobId={id} JobName=repro-{} ",
                s["name"].as_str().unwrap()
            )),
            "{jobs}"
        );
    }
    // The two branches of the fan-out ran at once, one on each node.
    let nodes: std::collections::BTreeSet<&str> = steps
        .iter()
        .filter(|s| s["name"] == "a" || s["name"] == "b")
        .map(node_of)
        .collect();
    assert_eq!(nodes, ["repro-a", "repro-b"].into(), "{doc:#}");
    let statement = record_statement(&r, doc["record"].as_str().unwrap());
    let byproducts = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    assert!(
        byproducts.iter().all(|b| b["annotations"]["ranOn"]
            .as_str()
            .is_some_and(|o| o.contains("slurm job"))),
        "{byproducts:#?}"
    );
    // The same record verifies on this machine, with no cluster.
    let out = r.run(&["verify", "fan@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // And the cluster rebuilds a locally built model identically.
    let r2 = project();
    let out = r2.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.run(&r2, &["verify", "--executor", "slurm", "fan@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn cancelling_a_slurm_build_cancels_its_jobs() {
    cancel_with("INT");
}

/// SIGTERM (a CI runner cancelling the job, systemd, `kill`) stops a
/// build as Ctrl-C does: its Slurm jobs are cancelled, not left running.
#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn terminating_a_slurm_build_cancels_its_jobs() {
    cancel_with("TERM");
}

fn cancel_with(signal: &str) {
    let c = Cluster::start();
    let r = project();
    r.write(
        "model.toml",
        &FAN_OUT.replace(
            "for i in 1 2 3; do echo part $$i > /repro/out/p$$i.txt; done",
            "sleep 300",
        ),
    );
    let child = r
        .std_cmd()
        .env("SLURM_CONF", &c.conf)
        .args(["build", "--executor", "slurm", "model.toml"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the job to run.
    let started = std::time::Instant::now();
    while !c.jobs().contains("RUNNING") {
        assert!(started.elapsed().as_secs() < 60, "no job ran: {}", c.jobs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    nix_kill(child.id(), signal);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let started = std::time::Instant::now();
    while c.jobs().contains("repro-split") && !c.jobs().contains("CANCELLED") {
        assert!(
            started.elapsed().as_secs() < 30,
            "the job was not cancelled: {}",
            c.jobs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The `job_ids` of step `s` in `build --json`.
fn job_ids(s: &serde_json::Value) -> Vec<String> {
    s["job_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no job_ids: {s:#}"))
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect()
}

/// The node step `s` ran on, from its `ran_on` (`slurm job 12 on repro-a`).
fn node_of(s: &serde_json::Value) -> &str {
    s["ran_on"]
        .as_str()
        .and_then(|o| o.rsplit_once(" on "))
        .map(|(_, node)| node)
        .unwrap_or_else(|| panic!("no node in ran_on: {s:#}"))
}

fn nix_kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// A job that Slurm ends itself (an operator's `scancel`, a node going
/// away) is reported naming the step, Slurm's state and the job, and the
/// build records nothing.
#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn a_job_slurm_kills_is_reported_with_slurms_reason() {
    let c = Cluster::start();
    let r = project();
    r.write(
        "model.toml",
        &FAN_OUT.replace(
            "for i in 1 2 3; do echo part $$i > /repro/out/p$$i.txt; done",
            "sleep 300",
        ),
    );
    let child = r
        .std_cmd()
        .env("SLURM_CONF", &c.conf)
        .args(["build", "--executor", "slurm", "model.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let id = loop {
        let jobs = c.jobs();
        if let Some(line) = jobs
            .lines()
            .find(|l| l.contains("repro-split") && l.contains("RUNNING"))
        {
            break line.split_whitespace().next().unwrap().to_string();
        }
        assert!(started.elapsed().as_secs() < 60, "no job ran: {jobs}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let out = Command::new("scancel")
        .env("SLURM_CONF", &c.conf)
        .arg(&id)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`split`"), "{err}");
    assert!(err.contains(&format!("job {id}")), "{err}");
    assert!(err.contains("CANCELLED"), "{err}");
    assert!(
        !r.store().join("v1/refs/records/fan").exists(),
        "a record was made"
    );
}

/// The example (scikit-learn in its Debian image) built on the cluster
/// verifies on this machine byte for byte.
#[test]
#[ignore = "needs root, user namespaces, Slurm and the example image (REPRO_TEST_IMAGE_ARCHIVE, built by ci/setup)"]
fn the_example_built_on_slurm_verifies_locally_byte_for_byte() {
    let c = Cluster::start();
    let archive = std::env::var_os("REPRO_TEST_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .expect("REPRO_TEST_IMAGE_ARCHIVE is not set: run examples/images/debian-sklearn/build and point it at the OCI tar");
    let r = Repro::with_key();
    let example = r.work().join("breast-cancer");
    copy_dir(&repo().join("examples/breast-cancer"), &example);
    let _ = std::fs::remove_file(example.join("model.lock"));
    let images = r.work().join("images/build");
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&archive, images.join("debian-sklearn.oci.tar")).unwrap();
    let out = c.run(
        &r,
        &[
            "build",
            "--json",
            "--executor",
            "slurm",
            "breast-cancer/model.toml",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ran"),
        "{doc:#}"
    );
    let out = r.run(&["verify", "breast-cancer-classifier@1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Three independent steps on two one-CPU nodes, all submitted at once
/// (`--jobs 3`): the console shows each job running with its node, and
/// the one that waits for a CPU as pending first (with Slurm's reason once
/// Slurm has given one), each with its job id.
#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn the_console_shows_each_job_pending_and_running_on_its_node() {
    let c = Cluster::start();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    let mut recipe =
        "[model]\nname = \"three\"\nversion = \"1\"\n\n[toolchains.bb]\narchive = \"image\"\n"
            .to_string();
    for p in ["p1", "p2", "p3"] {
        recipe.push_str(&format!(
            "\n[[steps]]\nname = \"{p}\"\ntoolchain = \"bb\"\n\
             argv = [\"sh\", \"-c\", \"sleep 2; echo {p} > /repro/out/{p}.txt\"]\n\
             outputs = [\"{p}.txt\"]\n"
        ));
    }
    r.write("model.toml", &recipe);
    let out = c.run(
        &r,
        &["build", "--executor", "slurm", "--jobs", "3", "model.toml"],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let placed: Vec<&str> = err.lines().filter(|l| l.contains("placed ")).collect();
    for p in ["p1", "p2", "p3"] {
        let line = placed
            .iter()
            .find(|l| l.contains(&format!("placed {p}: running as slurm job ")))
            .unwrap_or_else(|| panic!("no line says where `{p}` runs:\n{err}"));
        let (_, rest) = line.split_once("slurm job ").unwrap();
        let (id, node) = rest.split_once(" on ").unwrap();
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{line}");
        assert!(["repro-a", "repro-b"].contains(&node), "{line}");
        assert!(
            c.slurm("scontrol", &["show", "job", "--oneliner", id])
                .contains(&format!("JobName=repro-{p} ")),
            "job {id} is not {p}'s"
        );
    }
    // Two CPUs for three jobs: the one that ran last waited for a CPU, and
    // was shown pending, with its job, before it was shown running.
    let pos = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("no `{needle}` in:\n{err}"))
    };
    let last = ["p1", "p2", "p3"]
        .into_iter()
        .max_by_key(|p| pos(&format!("placed {p}: ")))
        .unwrap();
    let queued = pos(&format!("queued {last}: submitted as slurm job "));
    assert!(queued < pos(&format!("placed {last}: ")), "{err}");
    for line in err.lines().filter(|l| l.contains("queued ")) {
        let (_, rest) = line.split_once(": submitted as slurm job ").unwrap();
        let (id, how) = rest.split_once(", ").unwrap();
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{line}");
        // Slurm's reason, when it has given one yet.
        assert!(
            how == "pending" || (how.starts_with("pending (") && how.ends_with(')')),
            "{line}"
        );
    }
}

/// The retry test's step: writes half its output, then (4 s later) the
/// whole of it. A node failing in between leaves the half behind.
const HALF_THEN_WHOLE: &str = r#"
[model]
name = "flaky"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "echo half > /repro/out/model.txt; sleep 4; echo whole > /repro/out/model.txt"]
outputs = ["model.txt"]
"#;

/// The in-toto statement of the record `digest` (a DSSE envelope in the
/// store).
fn record_statement(r: &Repro, digest: &str) -> serde_json::Value {
    use base64::Engine as _;
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.blob_path(digest)).unwrap()).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Run `repro <args>` on the `HALF_THEN_WHOLE` project `r`, and fail the
/// node of the step's first job once the step has written half its
/// output: set it DOWN (Slurm ends the job NODE_FAIL), then back in
/// service. The output, the id of the job and its node.
fn build_with_a_node_failure(
    c: &Cluster,
    r: &Repro,
    args: &[&str],
) -> (std::process::Output, String, String) {
    let child = r
        .std_cmd()
        .env("SLURM_CONF", &c.conf)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while find_file(&r.store().join("v1/tmp"), "model.txt", "half\n").is_none() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the step did not start: {}",
            c.jobs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let line = c
        .jobs()
        .lines()
        .find(|l| l.contains("repro-train") && l.contains("RUNNING"))
        .unwrap_or_else(|| panic!("no running job: {}", c.jobs()))
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    let (id, node) = (f[0].to_string(), f[3].to_string());
    let out = Command::new("scontrol")
        .env("SLURM_CONF", &c.conf)
        .args([
            "update",
            &format!("NodeName={node}"),
            "State=DOWN",
            "Reason=test",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // What Slurm makes of a running job whose node goes down (with
    // `--no-requeue`: not PENDING again, requeued by Slurm itself).
    let started = std::time::Instant::now();
    loop {
        let job = c.slurm("scontrol", &["show", "job", "--oneliner", &id]);
        if job.contains("JobState=NODE_FAIL ") {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "job {id} did not fail: {job}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Back in service (the cluster's `ReturnToService=2` may have done it
    // already, when the node's slurmd registered again).
    let started = std::time::Instant::now();
    loop {
        let state = c.slurm("sinfo", &["-h", "-n", &node, "-o", "%t"]);
        if ["idle", "mix", "alloc"].contains(&state.trim()) {
            break;
        }
        let _ = Command::new("scontrol")
            .env("SLURM_CONF", &c.conf)
            .args(["update", &format!("NodeName={node}"), "State=RESUME"])
            .output();
        assert!(started.elapsed().as_secs() < 30, "{node} stays {state}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    (child.wait_with_output().unwrap(), id, node)
}

/// The file named `name` holding `text` under `dir`, at any depth.
fn find_file(dir: &std::path::Path, name: &str, text: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find_file(&p, name, text) {
                return Some(found);
            }
        } else if e.file_name() == name && std::fs::read_to_string(&p).is_ok_and(|t| t == text) {
            return Some(p);
        }
    }
    None
}

/// A step whose node fails while it runs is submitted again (`--retries
/// 1`), says so even under `--json`, and succeeds on the second attempt;
/// the JSON lists both jobs, and only the second attempt's output is in
/// the store, never the half the first one wrote.
#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn a_step_whose_node_fails_is_submitted_again_and_the_json_lists_both_jobs() {
    let c = Cluster::start();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", HALF_THEN_WHOLE);
    let (out, first, node) = build_with_a_node_failure(
        &c,
        &r,
        &[
            "build",
            "--json",
            "--executor",
            "slurm",
            "--retries",
            "1",
            "model.toml",
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "retry train: slurm job {first} on {node} ended NODE_FAIL: node failed; submitting again (attempt 2 of 2)"
        )),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = &doc["steps"][0];
    assert_eq!(step["status"], "ran", "{doc:#}");
    let ids = job_ids(step);
    assert_eq!(ids.len(), 2, "{doc:#}");
    assert_eq!(ids[0], first, "{doc:#}");
    assert_ne!(ids[1], first, "{doc:#}");
    assert!(
        step["ran_on"]
            .as_str()
            .is_some_and(|o| o.starts_with(&format!("slurm job {} on ", ids[1]))),
        "{doc:#}"
    );
    let whole = common::sha256(b"whole\n");
    assert_eq!(
        step["files"]["model.txt"]["digest"],
        whole.as_str(),
        "{doc:#}"
    );
    assert!(r.blob_path(&whole).exists());
    assert!(
        !r.blob_path(&common::sha256(b"half\n")).exists(),
        "the failed attempt's output reached the store"
    );
    // The failed attempt is in the JSON and in the signed record.
    let retry = format!("slurm job {first} on {node} ended NODE_FAIL: node failed");
    assert!(
        step["retries"]
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0].as_str().is_some_and(|t| t.starts_with(&retry))),
        "{doc:#}"
    );
    let statement = record_statement(&r, doc["record"].as_str().unwrap());
    let byproduct = &statement["predicate"]["runDetails"]["byproducts"][0]["annotations"];
    assert_eq!(
        byproduct["earlierAttempts"], step["retries"],
        "{statement:#}"
    );
    // The record verifies like any other.
    let out = r.run(&["verify", "flaky@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Without retries, a step whose node fails ends the build (exit 3, like
/// any job that Slurm ends) naming the step, NODE_FAIL and the job; no
/// record is made and nothing the step wrote reaches the store.
#[test]
#[ignore = "needs root, user namespaces and Slurm (ci/setup installs slurm-wlm and munge)"]
fn without_retries_a_node_failure_fails_the_build_naming_node_fail_and_the_job() {
    let c = Cluster::start();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", HALF_THEN_WHOLE);
    let (out, id, node) = build_with_a_node_failure(
        &c,
        &r,
        &[
            "build",
            "--executor",
            "slurm",
            "--retries",
            "0",
            "model.toml",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("`train`"), "{err}");
    assert!(
        err.contains(&format!("job {id} on {node} ended NODE_FAIL")),
        "{err}"
    );
    assert!(!err.contains("submitting again"), "{err}");
    // The job log the error quotes does not blame repro for the kill.
    assert!(!err.contains("hint: this is a bug of `repro`"), "{err}");
    assert!(
        !r.store().join("v1/refs/records/flaky").exists(),
        "a record was made"
    );
    assert!(
        !r.blob_path(&common::sha256(b"half\n")).exists(),
        "the failed attempt's output reached the store"
    );
    assert_eq!(
        find_file(&r.store().join("v1/tmp"), "model.txt", "half\n"),
        None,
        "the failed attempt's output was left behind"
    );
}

/// Without a shared filesystem: each step's image and inputs go to the
/// node through a registry, the node runs it over a store of its own and
/// sends the output and log back; the controller re-hashes them, and the
/// model verifies on this machine byte for byte.
#[test]
#[ignore = "needs root, user namespaces, Slurm (ci/setup installs slurm-wlm and munge) and docker-registry"]
fn a_fan_out_moved_through_a_registry_verifies_locally_byte_for_byte() {
    let c = Cluster::start();
    let reg = repro_tests::Registry::start(false);
    let r = project();
    let node_store = tempfile::tempdir().unwrap();
    let repo = format!("{}/repro/slurm", reg.host());
    let out = r
        .std_cmd()
        .env("SLURM_CONF", &c.conf)
        .env("REPRO_NODE_STORE", node_store.path())
        .args([
            "build",
            "--json",
            "--executor",
            "slurm",
            "--slurm-registry",
            &repo,
            "--insecure",
            "model.toml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4, "{doc:#}");
    assert!(steps.iter().all(|s| s["status"] == "ran"), "{doc:#}");
    // Every step ran from the node's own store: its output blobs are there.
    for s in steps {
        let tree = s["output"].as_str().unwrap();
        let hex = tree.strip_prefix("sha256:").unwrap();
        let blob = node_store.path().join("v1/blobs/sha256").join(hex);
        assert!(blob.exists(), "the node never held {tree}: {doc:#}");
    }
    // And each job left its result in the registry, by tag.
    let tags = reg
        .storage()
        .join("docker/registry/v2/repositories/repro/slurm/_manifests/tags");
    let names: Vec<String> = std::fs::read_dir(&tags)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("done-")).count(),
        4,
        "{names:?}"
    );
    // The same record verifies on this machine, with no cluster.
    let out = r.run(&["verify", "fan@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A node that cannot run the step says why, and the build names it.
#[test]
#[ignore = "needs root, user namespaces, Slurm (ci/setup installs slurm-wlm and munge) and docker-registry"]
fn a_node_that_cannot_reach_its_inputs_is_reported() {
    let c = Cluster::start();
    let reg = repro_tests::Registry::start(false);
    let r = project();
    let node_store = tempfile::tempdir().unwrap();
    // The node's store cannot be opened: a file stands where it would be.
    let blocked = node_store.path().join("store");
    std::fs::write(&blocked, b"not a store").unwrap();
    let repo = format!("{}/repro/slurm", reg.host());
    let out = r
        .std_cmd()
        .env("SLURM_CONF", &c.conf)
        .env("REPRO_NODE_STORE", &blocked)
        .args([
            "build",
            "--executor",
            "slurm",
            "--slurm-registry",
            &repo,
            "--insecure",
            "model.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`split`"), "{err}");
    assert!(err.contains("node's store"), "{err}");
}
