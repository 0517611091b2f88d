//! Steps on Slurm: a one-node cluster of this machine's own, started by
//! `ci/slurm-cluster` with a config of the test's own. The store is local,
//! which the one node shares. A model built on the cluster verifies locally
//! byte for byte; a cancelled build cancels its jobs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{copy_dir, repo, stderr, Repro};

/// A one-node cluster, stopped when dropped.
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
            "the one-node Slurm cluster does not start (ci/setup installs slurm-wlm and munge):\n{}{}",
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
        let out = Command::new("squeue")
            .env("SLURM_CONF", &self.conf)
            .args(["-h", "-o", "%i %j %T"])
            .output()
            .unwrap();
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
    // Where each step ran is in the JSON and in the record, as byproducts.
    assert!(
        steps.iter().all(|s| s["ran_on"]
            .as_str()
            .is_some_and(|o| o.starts_with("slurm job "))),
        "{doc:#}"
    );
    let record = doc["record"].as_str().unwrap();
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.blob_path(record)).unwrap()).unwrap();
    use base64::Engine as _;
    let statement: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
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
    let c = Cluster::start();
    let r = project();
    r.write(
        "model.toml",
        &FAN_OUT.replace(
            "for i in 1 2 3; do echo part $$i > /repro/out/p$$i.txt; done",
            "sleep 300",
        ),
    );
    let mut child = r
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
    nix_kill(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted");
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

fn nix_kill(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
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
