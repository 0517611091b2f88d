//! Scratch left by a killed build (issue 13): a build killed with `kill -9`
//! while its step runs leaves its step's scratch in `v1/tmp`; the next
//! command that takes the store lock removes it, and never the scratch of
//! a build that is still running. Needs root and user namespaces (native
//! sandbox).

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{stderr, Repro};

const RECIPE: &str = r#"
[model]
name = "sleeper"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "nap"
toolchain = "bb"
argv = ["sh", "-c", "echo started > /repro/out/started.txt; head -c 1048576 /dev/zero > /repro/out/partial.bin; sleep 120"]
outputs = ["started.txt", "partial.bin"]
"#;

/// The step scratch directories (`step-nap-*`) anywhere under `v1/tmp`.
fn step_scratch(tmp: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![tmp.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if e.file_name().to_string_lossy().starts_with("step-nap-") {
                out.push(e.path());
            } else if is_dir && dir == tmp {
                stack.push(e.path());
            }
        }
    }
    out
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The processes descending from `pid` (by parent process id).
fn descendants(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            all.push((p, ppid));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &all {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A build of [`RECIPE`] in the background, once its step runs.
fn start_sleeping_build(r: &Repro) -> (Child, PathBuf) {
    r.write("model.toml", RECIPE);
    let mut build = r
        .std_cmd()
        .args(["build", "model.toml"])
        .spawn()
        .expect("start repro build");
    let tmp = r.store().join("v1/tmp");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = step_scratch(&tmp)
            .into_iter()
            .find(|s| s.join("out/partial.bin").is_file());
        if let Some(s) = started {
            // The step wrote its first file: it now sleeps.
            std::thread::sleep(Duration::from_millis(300));
            return (build, s);
        }
        if let Some(status) = build.try_wait().unwrap() {
            let out = build.wait_with_output().unwrap();
            panic!(
                "the build ended ({status}) before its step ran: {}",
                stderr(&out)
            );
        }
        assert!(Instant::now() < deadline, "the step did not start in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn data_add(r: &Repro) {
    r.write("tiny/a.txt", "a\n");
    let out = r.run(&["data", "add", "tiny"]);
    assert!(out.status.success(), "data add: {}", stderr(&out));
}

#[test]
#[ignore = "needs root and user namespaces: builds with the native sandbox"]
fn the_next_command_removes_the_scratch_of_a_killed_build_and_never_a_running_ones() {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    let tmp = r.store().join("v1/tmp");
    let (mut build, scratch) = start_sleeping_build(&r);
    let pid = build.id();

    // Another command that takes the lock while the build runs: the
    // build's scratch stays.
    data_add(&r);
    assert!(
        scratch.join("out/partial.bin").is_file(),
        "a running build's scratch went"
    );
    assert!(build.try_wait().unwrap().is_none(), "the build ended");

    // kill -9 of the build alone, as a person or an OOM killer would: its
    // sandbox processes are not signalled.
    let sandbox = descendants(pid);
    assert!(!sandbox.is_empty(), "the build has sandbox processes");
    build.kill().unwrap();
    build.wait().unwrap();
    // They follow it (the init sees its socket close; the step dies with the init).
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandbox.iter().any(|&p| running(p)) {
        let left: Vec<_> = sandbox.iter().filter(|&&p| running(p)).collect();
        assert!(
            Instant::now() < deadline,
            "sandbox processes {left:?} outlived the killed build by 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        scratch.exists(),
        "nothing removes it before the next command"
    );

    // The next command that takes the lock removes it all.
    data_add(&r);
    assert!(!scratch.exists(), "the killed build's step scratch is left");
    assert_eq!(entries(&tmp), Vec::<String>::new(), "v1/tmp is not empty");
    // It was in a directory of the build's own, named after its process.
    let owner = scratch.parent().unwrap();
    assert_eq!(owner.parent(), Some(tmp.as_path()), "{}", scratch.display());
    let owner_name = owner.file_name().unwrap().to_string_lossy();
    assert!(owner_name.starts_with(&format!("{pid}-")), "{owner_name}");
}
