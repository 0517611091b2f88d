//! The executor's configuration file and a step's GPUs, end to end. A fake
//! `sbatch`, first on `PATH` for the one command, records its arguments and
//! refuses the job, so what a build would submit is seen without a cluster,
//! root or namespaces; those tests are not ignored. Only the local build of
//! a step asking for GPUs needs the native sandbox.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{stderr, stdout, Repro};

/// What the fake `sbatch` says when it refuses a job.
const REFUSAL: &str = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified";

/// One step asking for two `a100` GPUs, in an empty image: the step never
/// runs on this machine (a node would run it).
const RECIPE: &str = r#"
[model]
name = "m"
version = "1"

[toolchains.empty]
archive = "image"

[[steps]]
name = "train"
toolchain = "empty"
argv = ["true"]
outputs = []
limits = { cpus = 2, gpus = "a100:2" }
"#;

const CONFIG: &str = r#"# the team's cluster
[executor]
kind = "slurm"

[executor.slurm]
partition = "gpu-test"
account = "ml-risk"
retries = 2
"#;

/// A project with a key and [`RECIPE`], and a fake `sbatch` in its own
/// folder.
struct Project {
    r: Repro,
    bin: PathBuf,
}

impl Project {
    fn new() -> Project {
        let r = Repro::with_key();
        r.write("model.toml", RECIPE);
        repro_tests::write_oci_layout(&repro_tests::empty_image_blobs(), &r.work().join("image"));
        let bin = r.tmp.path().join("fake-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("sbatch");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\necho '{REFUSAL}' >&2\nexit 1\n",
                bin.join("args").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Project { r, bin }
    }

    /// `repro <args>` with the fake `sbatch` first on `PATH`, the
    /// configuration file looked up as usual (not `/dev/null` as for the
    /// other tests) and `env` set.
    fn run(&self, env: &[(&str, &Path)], args: &[&str]) -> Output {
        let path = std::env::join_paths(std::iter::once(self.bin.clone()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        let mut c = self.r.std_cmd();
        c.env("PATH", path).env_remove("REPRO_CONFIG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().expect("run repro")
    }

    /// The arguments `sbatch` was called with, one per line; empty if never.
    fn sbatch_args(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin.join("args"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The user's configuration file (`HOME` is the test's folder).
    fn user_config(&self, text: &str) -> PathBuf {
        let p = self.r.tmp.path().join(".config/repro/config.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// With `kind = "slurm"` in the user's configuration file and no flag,
/// `repro build` submits the step to Slurm with the file's partition and
/// account and the step's CPUs and GPUs; `sbatch`'s refusal is the error
/// (the environment's, exit 3), quoting what `sbatch` said.
#[test]
fn the_config_file_sends_steps_to_slurm_with_its_partition_and_account() {
    let p = Project::new();
    let file = p.user_config(CONFIG);
    let out = p.run(&[], &["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let args = p.sbatch_args();
    for want in [
        "--partition=gpu-test",
        "--account=ml-risk",
        "--gres=gpu:a100:2",
        "--cpus-per-task=2",
        "--job-name=repro-train",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    let err = stderr(&out);
    assert!(err.contains("`sbatch` refused the job"), "{err}");
    assert!(err.contains(REFUSAL), "{err}");
    assert!(err.contains("step `train`"), "{err}");
    assert!(
        err.contains(&format!("executor settings from `{}`", file.display())),
        "{err}"
    );
}

/// `$REPRO_CONFIG` is read instead of the user's file, and a flag
/// overrides its key only: `--partition` replaces the file's partition and
/// the file's account stays.
#[test]
fn repro_config_is_read_first_and_a_flag_overrides_its_key_only() {
    let p = Project::new();
    p.user_config("[executor]\nkind = \"local\"\n");
    let named = p.r.write("team.toml", CONFIG);
    let out = p.run(
        &[("REPRO_CONFIG", &named)],
        &["build", "--partition", "from-flag", "model.toml"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let args = p.sbatch_args();
    assert!(
        args.iter().any(|a| a == "--partition=from-flag"),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a == "--partition=gpu-test"),
        "{args:?}"
    );
    assert!(args.iter().any(|a| a == "--account=ml-risk"), "{args:?}");
}

/// A configuration file with an unknown key stops `build` and `verify`
/// before anything runs, naming the file, line, column and key with the
/// valid keys (exit 2, the user's input); so does a `$REPRO_CONFIG` that
/// names no file.
#[test]
fn a_bad_config_file_is_refused_naming_file_line_and_key() {
    let p = Project::new();
    let file = p.user_config(&CONFIG.replace("account =", "acount ="));
    for args in [&["build", "model.toml"][..], &["verify", "m@1"]] {
        let out = p.run(&[], args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "error: unknown key `acount`\n  --> {}:7:1\n  = key: executor.slurm.acount\n  = hint: valid keys in `executor.slurm` are `partition`, `account`, `retries`\n",
                file.display()
            ),
            "{args:?}"
        );
    }
    assert_eq!(p.sbatch_args(), Vec::<String>::new(), "sbatch was called");

    let missing = p.r.tmp.path().join("no-such.toml");
    let out = p.run(&[("REPRO_CONFIG", &missing)], &["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("REPRO_CONFIG"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}

/// `build --help` and `verify --help` say where the file is looked for.
#[test]
fn help_names_the_config_file_and_its_lookup_order() {
    let r = Repro::new();
    for cmd in ["build", "verify"] {
        let out = r.run(&[cmd, "--help"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let help = stdout(&out);
        for part in [
            "$REPRO_CONFIG",
            "$XDG_CONFIG_HOME/repro/config.toml",
            "~/.config/repro/config.toml",
            "/etc/repro/config.toml",
            "[executor.slurm]",
            "overrides the file, key by key",
        ] {
            assert!(
                help.contains(part),
                "`{cmd} --help` lacks {part:?}:\n{help}"
            );
        }
    }
}

/// A local build of a step asking for GPUs runs it (the native sandbox
/// gives it none) and succeeds, warning about it by name even with
/// `--quiet`, and with `--json` on stderr beside the document; so does a
/// local verification.
#[test]
#[ignore = "needs root and user namespaces (native sandbox)"]
fn a_local_build_of_a_step_asking_for_gpus_warns_even_when_quiet() {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write(
        "model.toml",
        r#"
[model]
name = "g"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "ls /dev > /repro/out/dev.txt"]
outputs = ["dev.txt"]
limits = { gpus = 1 }
"#,
    );
    let warning = "warning: step `train` asks for 1 GPU (`gpus = 1`), but the local native sandbox gives it no GPU";
    let out = r.run(&["--quiet", "build", "--no-cache", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
    let (out, doc) = r.build_json(&["--no-cache", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["steps"][0]["status"], "ran", "{doc}");
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
    let out = r.run(&["--quiet", "verify", "g@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
}

/// A job Slurm has already forgotten (purged after `MinJobAge`, or lost
/// by a controller that restarted without its state) ends the wait: the
/// build fails naming the job and why, rather than polling forever.
#[test]
fn a_job_slurm_no_longer_knows_ends_the_build_instead_of_a_wait_forever() {
    let p = Project::new();
    use std::os::unix::fs::PermissionsExt;
    for (name, text) in [
        ("sbatch", "#!/bin/sh\necho 7\n"),
        (
            "scontrol",
            "#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n",
        ),
    ] {
        let f = p.bin.join(name);
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = std::env::join_paths(std::iter::once(p.bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut child =
        p.r.std_cmd()
            .env("PATH", path)
            .args(["build", "--executor", "slurm", "model.toml"])
            .spawn()
            .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed().as_secs() > 60 {
            let _ = child.kill();
            panic!("the build still waits for a job Slurm does not know");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("job 7"), "{err}");
    assert!(err.contains("Slurm no longer knows the job"), "{err}");
}
