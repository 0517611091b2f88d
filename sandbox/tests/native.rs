//! The native backend (Linux namespaces) against the real kernel, with the
//! busybox test image: the hermeticity suite.
//!
//! All ignored in a plain `cargo test` (they need root and user
//! namespaces); CI runs them with `--run-ignored all`, and then a machine
//! that cannot run them fails them loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use repro_sandbox::native::Error;
use repro_sandbox::{base_env, Limits, Mount, NativeSandbox, StepSpec, Termination, Variation};
use repro_store::{ImageDigest, Store};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const NEEDS: &str = "needs root and user namespaces";

struct Fixture {
    dir: TempDir,
    image: ImageDigest,
    sandbox: NativeSandbox,
}

/// Panics loudly when this machine cannot run native sandboxes.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let image = repro_tests::busybox_image(&store);
    let init = PathBuf::from(env!("CARGO_BIN_EXE_repro-sandbox-init"));
    let sandbox = NativeSandbox::new(store, init).unwrap_or_else(|e| {
        panic!("this test {NEEDS}, and the native sandbox is unavailable: {e}\nhint: run without `--run-ignored` to skip")
    });
    sandbox.ensure_image(&image).await.expect("ensure_image");
    Fixture {
        dir,
        image,
        sandbox,
    }
}

/// A token no other test (or test run) uses, to find leftover processes.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

impl Fixture {
    fn spec(&self, step: &str, script: &str) -> StepSpec {
        let step = unique(step);
        StepSpec {
            image: self.image,
            // `$0` of the script is the unique step name: it shows in the
            // command line of every process of the step.
            argv: vec!["sh".into(), "-c".into(), script.into(), step.clone()],
            env: base_env(0, 0, 1),
            inputs: vec![],
            output: self.dir.path().join(format!("{step}-out")),
            log: self.dir.path().join("logs").join(format!("{step}.log")),
            limits: Limits {
                timeout: Duration::from_secs(60),
                ..Limits::default()
            },
            step,
        }
    }

    async fn run(&self, spec: &StepSpec) -> (Termination, String) {
        let outcome = self
            .sandbox
            .run(spec, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("run `{}`: {e}", spec.step));
        let log = std::fs::read_to_string(&spec.log).expect("read log");
        (outcome.termination, log)
    }

    /// Run `spec` under `variation` (a fresh output directory and log, so
    /// the same spec can run again); exit 0 expected, returns the log.
    async fn run_varied(&self, spec: &StepSpec, variation: &Variation) -> String {
        let mut spec = spec.clone();
        let tag = unique("varied");
        spec.output = self.dir.path().join(format!("{tag}-out"));
        spec.log = self.dir.path().join("logs").join(format!("{tag}.log"));
        let outcome = self
            .sandbox
            .run_varied(&spec, variation, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("run `{}` with {variation:?}: {e}", spec.step));
        let log = std::fs::read_to_string(&spec.log).expect("read log");
        assert_eq!(
            outcome.termination,
            Termination::Exited(0),
            "{variation:?}:\n{log}"
        );
        log
    }
}

/// The host processes whose command line contains `token`.
fn processes_with(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(token) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// The cgroup directories (v1 or v2) whose name starts with the step's.
fn cgroups_of(step: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for parent in [
        "/sys/fs/cgroup/repro",
        "/sys/fs/cgroup/pids/repro",
        "/sys/fs/cgroup/memory/repro",
        "/sys/fs/cgroup/cpu/repro",
    ] {
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(step) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

fn line_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{key}` in:\n{text}"))
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn exit_code_and_interleaved_log() {
    let f = fixture().await;
    let spec = f.spec("exit", "echo out; echo err >&2; echo out2; exit 3");
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(3));
    assert_eq!(log, "out\nerr\nout2\n");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_environment_is_exactly_the_spec() {
    let f = fixture().await;
    let mut spec = f.spec("env", "");
    // Not through `sh`, which adds `SHLVL` and `PWD`.
    spec.argv = vec!["env".into()];
    spec.env.insert("EXTRA".into(), "a b=c".into());
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    let got: BTreeMap<String, String> = log
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, spec.env, "{log}");
    assert!(!log.contains("IMAGE_ONLY"), "{log}");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn identity_hostname_cwd_and_privileges_are_fixed() {
    let f = fixture().await;
    let spec = f.spec(
        "identity",
        "hostname; id -u; id -g; id -G; pwd; echo \"$HOME\"; cat /proc/self/status",
    );
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("repro"));
    assert_eq!(lines.next(), Some("65534"));
    assert_eq!(lines.next(), Some("65534"));
    assert_eq!(
        lines.next(),
        Some("65534"),
        "no supplementary groups:\n{log}"
    );
    assert_eq!(lines.next(), Some("/tmp"));
    assert_eq!(lines.next(), Some("/tmp"));
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(line_value(&log, cap), "0000000000000000", "{cap}\n{log}");
    }
    assert_eq!(line_value(&log, "NoNewPrivs:"), "1");
    assert_eq!(line_value(&log, "Seccomp:"), "2");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn only_the_output_and_tmp_are_writable() {
    let f = fixture().await;
    let input = f.dir.path().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    std::fs::write(input.join("data.txt"), "in\n").expect("write");
    std::fs::set_permissions(&input, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let mut spec = f.spec(
        "writes",
        "for p in /x /etc/x /bin/x /repro/in/data/x /repro/x /dev/x /proc/x; do \
           if touch $p 2>/dev/null; then echo \"WROTE $p\"; fi; done; \
         cat /repro/in/data/data.txt; \
         echo ok > /repro/out/result && echo ok > /tmp/t && cat /tmp/t",
    );
    spec.inputs = vec![Mount {
        name: "data".into(),
        host: input.clone(),
        tree: None,
    }];
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    assert_eq!(log, "in\nok\n");
    assert_eq!(
        std::fs::read_to_string(spec.output.join("result")).expect("output"),
        "ok\n"
    );
    assert!(!input.join("x").exists());
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_network_is_loopback_only_and_the_host_is_unreachable() {
    let f = fixture().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let spec = f.spec(
        "net",
        &format!(
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
             if echo hi | nc -w 2 127.0.0.1 {port}; then echo CONNECTED; else echo refused; fi"
        ),
    );
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    assert_eq!(log.lines().next(), Some("lo"), "{log}");
    assert!(log.contains("refused"), "{log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn proc_shows_only_the_sandbox() {
    let f = fixture().await;
    let spec = f.spec(
        "proc",
        "ls /proc | grep -c '^[0-9]'; tr '\\0' ' ' < /proc/1/cmdline; echo; \
         ls /sys 2>/dev/null | wc -l; cat /proc/keys /proc/timer_list 2>/dev/null | wc -c",
    );
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    let mut lines = log.lines();
    let count: usize = lines.next().expect("count").parse().expect("number");
    // sh (PID 1), ls and grep at most.
    assert!(count <= 3, "{log}");
    assert!(lines.next().expect("cmdline").starts_with("sh -c"), "{log}");
    assert_eq!(lines.next(), Some("0"), "no /sys:\n{log}");
    assert_eq!(
        lines.next(),
        Some("0"),
        "keys and timer_list masked:\n{log}"
    );
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn mount_mknod_namespaces_and_ptrace_are_refused() {
    let f = fixture().await;
    let spec = f.spec(
        "refused",
        "busybox mount -t tmpfs x /tmp && echo MOUNTED; \
         busybox mount -o remount,rw / && echo REMOUNTED; \
         busybox mknod /tmp/null c 1 3 && echo MKNOD; \
         busybox unshare -n true && echo UNSHARED; \
         busybox unshare -r true && echo USERNS; \
         sleep 5 & busybox nsenter -t $! -m true && echo NSENTER; \
         kill $!; echo done",
    );
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    for bad in [
        "MOUNTED",
        "REMOUNTED",
        "MKNOD",
        "UNSHARED",
        "USERNS",
        "NSENTER",
    ] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
    assert!(log.contains("Operation not permitted"), "{log}");
    assert!(log.ends_with("done\n"), "{log}");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_missing_program_exits_127_with_a_message() {
    let f = fixture().await;
    let mut spec = f.spec("missing", "");
    spec.argv = vec!["no-such-program".into()];
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(127));
    assert!(log.contains("`no-such-program`"), "{log}");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_pids_limit_contains_a_fork_bomb() {
    let f = fixture().await;
    let mut spec = f.spec(
        "forks",
        "i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done; echo spawned",
    );
    spec.limits.pids = 16;
    let (t, log) = f.run(&spec).await;
    // The shell gives up at the first failed fork.
    assert!(matches!(t, Termination::Exited(_)), "{t:?}");
    assert!(log.contains("can't fork"), "{log}");
    assert!(!log.contains("spawned"), "{log}");
    assert!(processes_with(&spec.step).is_empty(), "leftovers");

    let mut bomb = f.spec("bomb", "b() { b | b & }; b; sleep 100");
    bomb.limits.pids = 32;
    bomb.limits.timeout = Duration::from_secs(3);
    let (t, _) = f.run(&bomb).await;
    assert_eq!(t, Termination::TimedOut);
    assert_eq!(processes_with(&bomb.step), Vec::<String>::new());
    assert_eq!(cgroups_of(&bomb.step), Vec::<PathBuf>::new());
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_memory_hog_is_out_of_memory() {
    let f = fixture().await;
    let mut spec = f.spec(
        "hog",
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}",
    );
    spec.limits.memory_bytes = Some(32 << 20);
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::OutOfMemory, "{log}");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn an_endless_loop_times_out_and_leaves_nothing() {
    let f = fixture().await;
    let mut spec = f.spec("loop", "sleep 1000 & while :; do :; done");
    spec.limits.timeout = Duration::from_secs(1);
    let start = Instant::now();
    let (t, _) = f.run(&spec).await;
    assert_eq!(t, Termination::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(processes_with(&spec.step), Vec::<String>::new());
    assert_eq!(cgroups_of(&spec.step), Vec::<PathBuf>::new());
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn cancel_kills_and_cleans_up() {
    let f = fixture().await;
    let spec = f.spec("cancel", "sleep 1000 & sleep 1000");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let step = spec.step.clone();
    tokio::spawn(async move {
        // Cancel once the step is running.
        for _ in 0..500 {
            if processes_with(&step).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.cancel();
    });
    let outcome = f.sandbox.run(&spec, cancel).await.expect("run");
    assert_eq!(outcome.termination, Termination::Cancelled);
    assert_eq!(processes_with(&spec.step), Vec::<String>::new());
    assert_eq!(cgroups_of(&spec.step), Vec::<PathBuf>::new());
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_dropped_run_leaves_nothing() {
    let f = fixture().await;
    let spec = f.spec("dropped", "sleep 1000");
    let run = f.sandbox.run(&spec, CancellationToken::new());
    assert!(tokio::time::timeout(Duration::from_millis(500), run)
        .await
        .is_err());
    // The init is killed on drop and the step with it, asynchronously.
    let start = Instant::now();
    while !processes_with(&spec.step).is_empty() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(processes_with(&spec.step), Vec::<String>::new());
    assert_eq!(cgroups_of(&spec.step), Vec::<PathBuf>::new());
}

/// A root with every mount point, a setuid-root copy of busybox, and a
/// `/tmp` symlink variant.
fn hand_made_root(dir: &Path, tmp_is_symlink: bool) -> PathBuf {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let root = dir.join(if tmp_is_symlink { "bad-root" } else { "root" });
    for d in ["bin", "dev", "proc", "repro/in", "repro/out", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    if tmp_is_symlink {
        symlink("/etc", root.join("tmp")).expect("symlink");
    } else {
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
    }
    std::fs::copy(repro_tests::BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    // busybox picks the applet by its name: one setuid copy per applet.
    std::fs::create_dir_all(root.join("suid")).expect("mkdir");
    for a in ["id", "cat"] {
        let p = root.join("suid").join(a);
        std::fs::copy(repro_tests::BUSYBOX, &p).expect("copy busybox");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    }
    for a in ["sh", "id", "cat", "true", "ls"] {
        symlink("busybox", root.join("bin").join(a)).expect("symlink");
    }
    root
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_setuid_root_binary_gives_no_root() {
    let f = fixture().await;
    let root = hand_made_root(f.dir.path(), false);
    let mut spec = f.spec("setuid", "/suid/id -u; /suid/cat /proc/self/status");
    spec.inputs = vec![Mount {
        name: "code".into(),
        host: f.dir.path().to_path_buf(),
        tree: None,
    }];
    let outcome = f
        .sandbox
        .run_in_root(&root, &spec, CancellationToken::new())
        .await
        .expect("run");
    let log = std::fs::read_to_string(&spec.log).expect("log");
    assert_eq!(outcome.termination, Termination::Exited(0), "{log}");
    assert_eq!(log.lines().next(), Some("65534"), "{log}");
    assert_eq!(line_value(&log, "Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(line_value(&log, "CapEff:"), "0000000000000000");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_mount_point_that_is_a_symlink_is_a_clear_error() {
    let f = fixture().await;
    let root = hand_made_root(f.dir.path(), true);
    let spec = f.spec("symlink", "true");
    let err = f
        .sandbox
        .run_in_root(&root, &spec, CancellationToken::new())
        .await
        .expect_err("a symlinked /tmp");
    assert!(matches!(err, Error::Setup { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`/tmp`") && msg.contains("not a directory"),
        "{msg}"
    );
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn describe_names_the_backend_and_kernel() {
    let f = fixture().await;
    let info = f.sandbox.describe().await.expect("describe");
    assert_eq!(info.backend, "native");
    assert!(!info.kernel_version.is_empty());
    assert!(
        ["cgroup-v1", "cgroup-v2", "rlimits"].contains(&info.api_version.as_str()),
        "{info:?}"
    );
}

/// Not a timed test: measures the end-to-end cost of a `/bin/true` step
/// (median of 60) on both root paths and prints it, and checks that every
/// run succeeds.
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn overhead_of_a_true_step() {
    let f = fixture().await;
    let plain_root = hand_made_root(f.dir.path(), false);
    for (label, root) in [
        ("plain root", Some(plain_root)),
        ("overlay (busybox image)", None),
    ] {
        let mut times = Vec::new();
        for i in 0..60 {
            let mut spec = f.spec("true", "");
            spec.argv = vec!["/bin/true".into()];
            spec.output = f.dir.path().join(format!("true-{label}-{i}"));
            let start = Instant::now();
            let outcome = match &root {
                Some(r) => {
                    f.sandbox
                        .run_in_root(r, &spec, CancellationToken::new())
                        .await
                }
                None => f.sandbox.run(&spec, CancellationToken::new()).await,
            }
            .expect("run");
            times.push(start.elapsed());
            assert_eq!(outcome.termination, Termination::Exited(0));
        }
        times.sort();
        eprintln!(
            "native /bin/true, {label}: median {:?}, min {:?}, max {:?}",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
}

/// A script printing what the identity variations change, one per line:
/// hostname, uid, gid, groups, umask, visible CPUs, the CPUs of the
/// affinity mask, and the mode of a file the step creates.
const IDENTITY: &str = "hostname; id -u; id -g; id -G; umask; nproc; \
    grep Cpus_allowed_list /proc/self/status; \
    touch /repro/out/f; stat -c %a /repro/out/f";

/// The CPUs of this process's affinity mask (what a sandbox sees without
/// the CPU variation).
fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .expect("available_parallelism")
        .get()
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_default_variation_changes_nothing() {
    let f = fixture().await;
    let input = f.dir.path().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    for i in 0..12 {
        std::fs::write(input.join(format!("f{i:02}")), format!("{i}\n")).expect("write");
    }
    let mut spec = f.spec(
        "novariation",
        &format!("{IDENTITY}; find /repro/in/data; cat /repro/in/data/f07"),
    );
    spec.inputs = vec![Mount {
        name: "data".into(),
        host: input,
        tree: None,
    }];
    let (t, plain) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{plain}");
    let varied = f.run_varied(&spec, &Variation::default()).await;
    assert_eq!(varied, plain);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines[..5], ["repro", "65534", "65534", "65534", "0022"]);
    assert_eq!(lines[5], host_cpus().to_string(), "{plain}");
    assert_eq!(lines[7], "644", "{plain}");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn hostname_uid_umask_and_cpus_variations_take_effect() {
    let f = fixture().await;
    let spec = f.spec("identityvaried", IDENTITY);
    let variation = Variation {
        hostname: Some("elsewhere".into()),
        uid: Some(1000),
        umask: Some(0o077),
        cpus: Some(1),
        ..Variation::default()
    };
    let log = f.run_varied(&spec, &variation).await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[..6],
        ["elsewhere", "1000", "1000", "1000", "0077", "1"],
        "{log}"
    );
    assert_eq!(lines[7], "600", "umask 077 gives a file mode 600:\n{log}");
    // One CPU: a single number, no range or list.
    let cpus = line_value(&log, "Cpus_allowed_list:");
    assert!(cpus.parse::<u32>().is_ok(), "{log}");

    // Each alone changes only its own line.
    let single = [
        (
            Variation {
                hostname: Some("other".into()),
                ..Variation::default()
            },
            0,
            "other",
        ),
        (
            Variation {
                uid: Some(4242),
                ..Variation::default()
            },
            1,
            "4242",
        ),
        (
            Variation {
                umask: Some(0o027),
                ..Variation::default()
            },
            4,
            "0027",
        ),
    ];
    let (_, plain) = f.run(&spec).await;
    let plain: Vec<&str> = plain.lines().collect();
    for (v, line, want) in single {
        let log = f.run_varied(&spec, &v).await;
        let got: Vec<&str> = log.lines().collect();
        assert_eq!(got[line], want, "{v:?}:\n{log}");
        for (i, (a, b)) in got.iter().zip(&plain).enumerate() {
            let changed_too =
                (v.uid.is_some() && (i == 2 || i == 3)) || (v.umask.is_some() && i == 7);
            if i != line && !changed_too {
                assert_eq!(a, b, "{v:?} changed line {i}:\n{log}");
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_listing_variation_reverses_input_listings_and_keeps_the_bytes() {
    let f = fixture().await;
    let input = f.dir.path().join("listing-input");
    std::fs::create_dir_all(input.join("sub")).expect("mkdir");
    for i in 0..12 {
        let name = format!("part-{i:02}-{}.csv", ["q", "b", "x", "m"][i % 4]);
        std::fs::write(input.join(&name), format!("a,b\n{i},2\n")).expect("write");
        std::fs::write(input.join("sub").join(&name), "nested\n").expect("write");
    }
    std::fs::set_permissions(
        input.join("part-03-m.csv"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("part-00-q.csv", input.join("link")).expect("symlink");
    let mut spec = f.spec(
        "listing",
        "find /repro/in/data -mindepth 1 -maxdepth 1 > /repro/out/top; \
         find /repro/in/data/sub -mindepth 1 > /repro/out/sub; \
         cd /repro/in/data && for p in $(find . | sort); do \
           if [ -L $p ]; then echo \"$p -> $(readlink $p)\"; \
           elif [ -f $p ]; then echo \"$p $(stat -c '%a %s' $p) $(md5sum < $p)\"; \
           else echo \"$p $(stat -c %a $p)\"; fi; \
         done > /repro/out/content; \
         touch /repro/in/data/new 2>/dev/null && echo WROTE; true",
    );
    spec.inputs = vec![Mount {
        name: "data".into(),
        host: input.clone(),
        tree: None,
    }];
    let read = |out: &Path, f: &str| std::fs::read_to_string(out.join(f)).expect("read");
    let (t, log) = f.run(&spec).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    let plain_out = spec.output.clone();

    let mut varied_spec = spec.clone();
    varied_spec.output = f.dir.path().join(format!("{}-varied-out", spec.step));
    let variation = Variation {
        reverse_listing: true,
        ..Variation::default()
    };
    let outcome = f
        .sandbox
        .run_varied(&varied_spec, &variation, CancellationToken::new())
        .await
        .expect("run varied");
    let log = std::fs::read_to_string(&varied_spec.log).expect("log");
    assert_eq!(outcome.termination, Termination::Exited(0), "{log}");
    assert!(!log.contains("WROTE"), "the copy is writable:\n{log}");
    assert!(!input.join("new").exists());

    for listing in ["top", "sub"] {
        let plain = read(&plain_out, listing);
        let varied = read(&varied_spec.output, listing);
        let plain: Vec<&str> = plain.lines().collect();
        let mut varied: Vec<&str> = varied.lines().collect();
        assert!(plain.len() >= 12, "{plain:?}");
        assert_ne!(varied, plain, "`{listing}` lists in the same order");
        varied.reverse();
        assert_eq!(varied, plain, "`{listing}` is not the reverse");
    }
    let content = read(&plain_out, "content");
    assert!(content.contains("./part-03-m.csv 755 8"), "{content}");
    assert!(content.contains("./link -> part-00-q.csv"), "{content}");
    assert_eq!(read(&varied_spec.output, "content"), content);
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_mount_root_variation_moves_inputs_and_output() {
    let f = fixture().await;
    let input = f.dir.path().join("moved-input");
    std::fs::create_dir_all(&input).expect("mkdir");
    std::fs::write(input.join("a.txt"), "moved\n").expect("write");
    let mut spec = f.spec(
        "mountroot",
        "cat /elsewhere/in/data/a.txt; echo out > /elsewhere/out/o; \
         ls /repro/in/data 2>/dev/null || echo 'no /repro/in/data'; \
         touch /elsewhere/in/data/x 2>/dev/null && echo WROTE; true",
    );
    spec.inputs = vec![Mount {
        name: "data".into(),
        host: input.clone(),
        tree: None,
    }];
    let variation = Variation {
        mount_root: Some("/elsewhere".into()),
        ..Variation::default()
    };
    let mut varied = spec.clone();
    varied.output = f.dir.path().join(format!("{}-varied-out", spec.step));
    let outcome = f
        .sandbox
        .run_varied(&varied, &variation, CancellationToken::new())
        .await
        .expect("run varied");
    let log = std::fs::read_to_string(&varied.log).expect("log");
    assert_eq!(outcome.termination, Termination::Exited(0), "{log}");
    assert_eq!(log, "moved\nno /repro/in/data\n");
    assert_eq!(
        std::fs::read_to_string(varied.output.join("o")).expect("output"),
        "out\n"
    );
    assert!(!input.join("x").exists());

    // Together with the listing variation, the copies go to the new place.
    let both = Variation {
        reverse_listing: true,
        ..variation
    };
    let mut again = spec.clone();
    again.output = f.dir.path().join(format!("{}-both-out", spec.step));
    let log = f.run_varied(&again, &both).await;
    assert_eq!(log, "moved\nno /repro/in/data\n");
}

#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_variation_the_sandbox_cannot_apply_is_refused_before_running() {
    let f = fixture().await;
    let spec = f.spec("refused", "echo ran > /repro/out/ran");
    let err = f
        .sandbox
        .run_varied(
            &spec,
            &Variation {
                mount_root: Some("/tmp/x".into()),
                ..Variation::default()
            },
            CancellationToken::new(),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("`/tmp/x`"), "{err}");
    assert!(!spec.output.join("ran").exists());
}

/// The kinds of namespace a step has.
const NS_KINDS: [&str; 7] = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user"];

/// Run `spec` (whose script waits for `/repro/out/go`) and, while it
/// runs, read its namespaces from the host and keep them open, so that
/// their numbers cannot be given to a later namespace.
async fn run_pinned(f: &Fixture, spec: &StepSpec) -> (Vec<String>, Vec<std::fs::File>) {
    let pin = async {
        let start = Instant::now();
        let pid = loop {
            if spec.output.join("ready").exists() {
                if let Some(p) = processes_with(&spec.step).first() {
                    break p.split(':').next().expect("pid").to_string();
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut names = Vec::new();
        let mut pins = Vec::new();
        for kind in NS_KINDS {
            let path = format!("/proc/{pid}/ns/{kind}");
            let link = std::fs::read_link(&path).expect("read a namespace link");
            names.push(link.to_string_lossy().into_owned());
            pins.push(std::fs::File::open(&path).expect("open a namespace"));
        }
        std::fs::write(spec.output.join("go"), "").expect("write go");
        (names, pins)
    };
    let ((t, log), pinned) = tokio::join!(f.run(spec), pin);
    assert_eq!(t, Termination::Exited(0), "{log}");
    pinned
}

/// A script that waits until the host has pinned its namespaces.
const WAIT_FOR_GO: &str = "touch /repro/out/ready; \
    while [ ! -e /repro/out/go ]; do sleep 0.01; done; true";

/// The pool of pre-warmed inits never hands a step namespaces another
/// step had: consecutive steps and concurrent ones (as with `--jobs`) all
/// differ from each other and from the host, in every kind of namespace.
/// (Every step's namespaces are kept open until the end, as the kernel
/// may give a number to a new namespace once the old one is gone.)
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn every_step_gets_namespaces_of_its_own() {
    let f = fixture().await;
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    let mut pins = Vec::new();
    for _ in 0..3 {
        let spec = f.spec("ns", WAIT_FOR_GO);
        let (names, pinned) = run_pinned(&f, &spec).await;
        seen.push((spec.step.clone(), names));
        pins.push(pinned);
    }
    assert!(
        f.sandbox.zygote_pid().is_some(),
        "the steps did not go through the pool"
    );
    let specs: Vec<StepSpec> = (0..4).map(|_| f.spec("ns-jobs", WAIT_FOR_GO)).collect();
    let runs = futures_util::future::join_all(specs.iter().map(|s| run_pinned(&f, s))).await;
    for (spec, (names, pinned)) in specs.iter().zip(runs) {
        seen.push((spec.step.clone(), names));
        pins.push(pinned);
    }
    let host: Vec<String> = NS_KINDS
        .iter()
        .map(|n| {
            let link = std::fs::read_link(format!("/proc/self/ns/{n}")).expect("host ns");
            link.to_string_lossy().into_owned()
        })
        .collect();
    seen.push(("the host".into(), host));
    for (i, (a, ns_a)) in seen.iter().enumerate() {
        for (b, ns_b) in &seen[i + 1..] {
            for (x, y) in ns_a.iter().zip(ns_b) {
                assert_ne!(x, y, "`{a}` and `{b}` share a namespace");
            }
        }
    }
}

/// A step sees no process of another step, running or past, and cannot
/// signal one: `kill -9 -1` in one step leaves a concurrent step running,
/// and a previous step's background process is gone with it.
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_step_cannot_see_or_signal_another_steps_processes() {
    let f = fixture().await;
    // A previous step leaves a process in the background.
    let before = f.spec("before", "sleep 1000 & echo started");
    let (t, log) = f.run(&before).await;
    assert_eq!(t, Termination::Exited(0), "{log}");
    assert_eq!(processes_with(&before.step), Vec::<String>::new());

    // A step that runs until cancelled, next to the one under test.
    // (`; true`: the shell, whose command line names the step, stays.)
    let running = f.spec("running", "touch /repro/out/ready; sleep 1000; true");
    let cancel = CancellationToken::new();
    let long = f.sandbox.run(&running, cancel.clone());
    let probe = async {
        let ready = running.output.join("ready");
        let start = Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let probe = f.spec(
            "probe",
            "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; kill -9 -1; echo kill=$?",
        );
        let (t, log) = f.run(&probe).await;
        assert_eq!(t, Termination::Exited(0), "{log}");
        for other in [&before.step, &running.step] {
            assert!(!log.contains(other.as_str()), "sees `{other}`:\n{log}");
        }
        // Nothing to signal: busybox `kill -1` fails when it finds none.
        assert!(log.contains("kill="), "{log}");
        // The concurrent step survived.
        assert_eq!(processes_with(&running.step).len(), 1, "{log}");
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(long, probe);
    assert_eq!(outcome.expect("run").termination, Termination::Cancelled);
    assert_eq!(processes_with(&running.step), Vec::<String>::new());
}

/// The state of process `pid` (`/proc/<pid>/stat`), `None` once reaped.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

/// Killing the pool's zygote fails no step: the next ones start their own
/// init, and a later one starts a new zygote. Without a pool there is no
/// zygote at all.
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn steps_fall_back_when_the_zygote_is_gone() {
    let f = fixture().await;
    let first = f.spec("first", "echo one");
    let (t, log) = f.run(&first).await;
    assert_eq!((t, log.as_str()), (Termination::Exited(0), "one\n"));
    let zygote = f.sandbox.zygote_pid().expect("a zygote after a run");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the zygote");
    let start = Instant::now();
    while process_state(zygote).is_some_and(|s| s != 'Z') {
        assert!(start.elapsed() < Duration::from_secs(5), "zygote alive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut new_zygote = None;
    for i in 0..5 {
        let spec = f.spec("after", &format!("echo run {i}"));
        let (t, log) = f.run(&spec).await;
        assert_eq!(t, Termination::Exited(0), "{log}");
        assert_eq!(log, format!("run {i}\n"));
        new_zygote = f.sandbox.zygote_pid().filter(|&p| p != zygote);
        if new_zygote.is_some() {
            break;
        }
    }
    let new_zygote = new_zygote.expect("a new zygote within five runs");
    assert_eq!(process_state(new_zygote).map(|s| s != 'Z'), Some(true));

    let store = Store::open(&f.dir.path().join("store")).expect("store");
    let init = PathBuf::from(env!("CARGO_BIN_EXE_repro-sandbox-init"));
    let fresh = NativeSandbox::new(store, init)
        .expect("sandbox")
        .with_pool(false);
    fresh.ensure_image(&f.image).await.expect("ensure_image");
    let spec = f.spec("fresh", "echo fresh");
    let outcome = fresh
        .run(&spec, CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(fresh.zygote_pid(), None);
}

/// A namespace probe that passed is remembered for the boot: the next
/// sandbox (same init executable) does not probe again, and steps run as
/// before; without a cache every sandbox probes.
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_passed_probe_is_remembered_for_the_next_sandbox() {
    let f = fixture().await;
    let init = PathBuf::from(env!("CARGO_BIN_EXE_repro-sandbox-init"));
    let cache = f.dir.path().join("runtime");
    let open = |cache: Option<&Path>| {
        let store = Store::open(&f.dir.path().join("store")).expect("store");
        NativeSandbox::new_with_runtime_cache(store, init.clone(), cache).expect("sandbox")
    };
    let first = open(Some(&cache));
    assert!(!first.probe_was_cached().await.expect("probe"));
    let second = open(Some(&cache));
    assert!(second.probe_was_cached().await.expect("probe"));
    let none = open(None);
    assert!(!none.probe_was_cached().await.expect("probe"));
    for sandbox in [&first, &second, &none] {
        sandbox.ensure_image(&f.image).await.expect("ensure_image");
        let spec = f.spec("cached-probe", "echo ran");
        let outcome = sandbox
            .run(&spec, CancellationToken::new())
            .await
            .expect("run");
        assert_eq!(outcome.termination, Termination::Exited(0));
        assert_eq!(std::fs::read_to_string(&spec.log).expect("log"), "ran\n");
    }
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    };
    assert_eq!(mode(&cache.join("native-probe")), 0o700);
    assert_eq!(mode(&cache.join("rootfs-check")), 0o700);
}

/// A probe whose executable is not an init fails at `ensure_image` (not at
/// `new`, which does not wait for it), and is never remembered.
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn a_failed_probe_is_reported_when_the_sandbox_is_used() {
    let f = fixture().await;
    let cache = f.dir.path().join("runtime-bad");
    let store = Store::open(&f.dir.path().join("store")).expect("store");
    let sandbox = NativeSandbox::new_with_runtime_cache(store, "/bin/true".into(), Some(&cache))
        .expect("new does not wait for the probe");
    let err = sandbox
        .ensure_image(&f.image)
        .await
        .expect_err("a failed probe");
    assert!(matches!(err, Error::InitExe { .. }), "{err}");
    assert!(err.to_string().contains("probe"), "{err}");
    let spec = f.spec("bad-probe", "echo never");
    let err = sandbox
        .run_in_root(f.dir.path(), &spec, CancellationToken::new())
        .await
        .expect_err("no run after a failed probe");
    assert!(matches!(err, Error::InitExe { .. }), "{err}");
    let remembered = std::fs::read_dir(cache.join("native-probe"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(remembered, 0);
}

/// Told that only one or two runs are coming, the sandbox starts no zygote
/// (each run starts its own init); told more, it starts the zygote at once,
/// before the first run.
#[tokio::test]
#[ignore = "needs root and user namespaces"]
async fn the_pool_is_started_only_when_enough_runs_are_expected() {
    let f = fixture().await;
    f.sandbox.expect_runs(1);
    for i in 0..2 {
        let spec = f.spec("few", &format!("echo few {i}"));
        let (t, log) = f.run(&spec).await;
        assert_eq!((t, log), (Termination::Exited(0), format!("few {i}\n")));
        assert_eq!(f.sandbox.zygote_pid(), None);
    }
    f.sandbox.expect_runs(repro_sandbox::native::POOL_MIN_RUNS);
    let zygote = f.sandbox.zygote_pid().expect("a zygote before any run");
    for i in 0..3 {
        let spec = f.spec("many", &format!("echo many {i}"));
        let (t, log) = f.run(&spec).await;
        assert_eq!((t, log), (Termination::Exited(0), format!("many {i}\n")));
    }
    assert_eq!(f.sandbox.zygote_pid(), Some(zygote));
}
