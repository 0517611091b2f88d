//! The hermeticity suite (issue 3): end-to-end tests of `repro build` in
//! which a step tries to escape its sandbox, run against BOTH backends.
//!
//! Each test is written once, as a body taking the backend, and
//! [`hermetic_test!`] turns it into `<name>::docker` and `<name>::native`.
//! The Docker ones need a daemon (`repro_tests::require_docker`), the native
//! ones root and user namespaces (`repro_tests::require_namespaces`); both
//! are ignored in a plain `cargo test` and run in CI with
//! `--run-ignored all`, where a missing capability fails them loudly.
//!
//! A step runs the probe (`tests/probes/probe.c`, built by `build.rs` and
//! put into a busybox image at `/bin/probe` and, setuid root, at
//! `/bin/suid-probe`). The probe exits 0 when an attempt SUCCEEDED and 1
//! when it was refused; the step writes the probe's output and its exit
//! status into `/repro/out/result`, and the test reads that file back from
//! the store. A failing test here is a finding about the sandbox: do not
//! weaken it, fix the sandbox.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{statuses, stderr, stdout, Repro};
use serde_json::Value;

/// The two sandbox backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Docker,
    Native,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::Native => "native",
        }
    }

    /// Panic loudly when this machine cannot run the backend.
    fn require(self) {
        match self {
            Backend::Docker => repro_tests::require_docker(),
            Backend::Native => repro_tests::require_namespaces(),
        }
    }
}

/// One test body, run once per backend: `mod <name> { fn docker(); fn native(); }`.
macro_rules! hermetic_test {
    ($(#[doc = $doc:expr])* fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($backend: Backend) $body

            #[test]
            #[ignore = "needs Docker and busybox-static"]
            fn docker() {
                body(Backend::Docker)
            }

            #[test]
            #[ignore = "needs root and user namespaces, and busybox-static"]
            fn native() {
                body(Backend::Native)
            }
        }
    };
}

/// The start of every recipe: the probe image and a data folder.
const HEADER: &str = r#"
[model]
name = "hermetic"
version = "1"

[toolchains.bb]
archive = "image"

[data.raw]
path = "data"
"#;

/// A one-step recipe running `script` with `sh -c`; `extra` is appended to
/// the step's table (e.g. `limits = { ... }`).
fn recipe(script: &str, outputs: &[&str], extra: &str) -> String {
    let outputs: Vec<String> = outputs.iter().map(|o| format!("{o:?}")).collect();
    format!(
        "{HEADER}\n[[steps]]\nname = \"probe\"\ntoolchain = \"bb\"\nargv = [\"sh\", \"-c\", {script:?}]\noutputs = [{}]\n{extra}\n",
        outputs.join(", ")
    )
}

/// A work folder with the probe image, `data/input.txt` and `model.toml`,
/// building on `backend`.
fn setup(backend: Backend, model: &str) -> Repro {
    backend.require();
    let mut r = Repro::with_key();
    r.sandbox = Some(backend.name().to_string());
    repro_tests::probe_oci_layout(&r.work().join("image"));
    r.write("data/input.txt", "input\n");
    r.write("model.toml", model);
    r
}

/// The content of output `file` of step `step` in a `--json` document,
/// read from the store.
fn output_file(r: &Repro, doc: &Value, step: &str, file: &str) -> String {
    let steps = doc["steps"]
        .as_array()
        .expect("steps in the --json document");
    let s = steps
        .iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("no step `{step}` in {doc}"));
    let digest = s["files"][file]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no file `{file}` in step `{step}`: {s}"));
    std::fs::read_to_string(r.blob_path(digest))
        .unwrap_or_else(|e| panic!("cannot read `{file}` ({digest}) from the store: {e}"))
}

/// Build `model` on `backend`, require success, and return the repro and
/// the document.
fn build_ok(backend: Backend, model: &str) -> (Repro, Value) {
    let r = setup(backend, model);
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(
        out.status.success(),
        "[{}] the build failed:\n{}\n{}",
        backend.name(),
        stdout(&out),
        stderr(&out)
    );
    (r, doc)
}

/// One probe invocation and what it printed.
#[derive(Debug)]
struct Attempt {
    args: String,
    text: String,
    exit: i32,
}

impl Attempt {
    /// Assert that the probe reported a refusal (exit status 1).
    #[track_caller]
    fn assert_refused(&self, backend: Backend) {
        assert!(
            self.exit == 1 && !self.text.contains("SUCCEEDED"),
            "[{}] ESCAPE: `probe {}` was not refused (exit {}):\n{}",
            backend.name(),
            self.args,
            self.exit,
            self.text
        );
    }

    /// Assert that the probe succeeded (a positive control).
    #[track_caller]
    fn assert_succeeded(&self, backend: Backend) {
        assert!(
            self.exit == 0 && self.text.contains("SUCCEEDED"),
            "[{}] `probe {}` should have worked (exit {}):\n{}",
            backend.name(),
            self.args,
            self.exit,
            self.text
        );
    }
}

/// Run each of `probes` (the probe's arguments; `suid-probe ...` runs the
/// setuid copy) in one step on `backend`, with `extra` appended to the step
/// (inputs, outputs besides `result`, limits), and return each attempt.
fn attempts_with(
    backend: Backend,
    probes: &[String],
    outputs: &[&str],
    extra: &str,
) -> (Repro, Vec<Attempt>) {
    let mut script = String::new();
    for (i, p) in probes.iter().enumerate() {
        let program = if p.starts_with("suid-probe ") {
            ""
        } else {
            "probe "
        };
        script.push_str(&format!(
            "echo '=== {i}' >> /repro/out/result; {program}{p} >> /repro/out/result 2>&1; echo exit=$$? >> /repro/out/result; "
        ));
    }
    let mut all_outputs = vec!["result"];
    all_outputs.extend_from_slice(outputs);
    let (r, doc) = build_ok(backend, &recipe(&script, &all_outputs, extra));
    let result = output_file(&r, &doc, "probe", "result");
    // Shown when the test fails (or with --no-capture).
    eprintln!("[{}] the probe's report:\n{result}", backend.name());
    let sections: Vec<&str> = result.split("=== ").skip(1).collect();
    assert_eq!(sections.len(), probes.len(), "{result}");
    let attempts = probes
        .iter()
        .zip(sections)
        .map(|(args, section)| {
            let text = section.split_once('\n').map_or("", |(_, t)| t).to_string();
            let exit = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("exit="))
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or_else(|| panic!("no exit status for `{args}`: {section}"));
            Attempt {
                args: args.clone(),
                text,
                exit,
            }
        })
        .collect();
    (r, attempts)
}

fn attempts(backend: Backend, probes: &[&str]) -> Vec<Attempt> {
    let probes: Vec<String> = probes.iter().map(|p| p.to_string()).collect();
    attempts_with(backend, &probes, &[], "").1
}

/// The probe's FNV-1a 64 of `bytes`, as it prints it.
fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

hermetic_test! {
    /// A listener on the host's 127.0.0.1 is out of reach: the sandbox's
    /// loopback is its own, and the listener sees no connection.
    fn connect_to_the_hosts_loopback_is_refused(backend: Backend) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let a = attempts(backend, &[&format!("connect 127.0.0.1 {port}")]);
        a[0].assert_refused(backend);
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("[{}] ESCAPE: the host listener accepted a connection from {peer}", backend.name()),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

hermetic_test! {
    /// No route leads outside. The probe first asks the kernel for a route
    /// to a TEST-NET-1 address with a UDP connect, which sends no packet;
    /// only when there is no route does it try a TCP connect, which then
    /// fails locally with ENETUNREACH. So the test never sends real traffic
    /// out, even when a sandbox is broken.
    fn there_is_no_route_to_an_outside_address(backend: Backend) {
        let script = "if probe route 192.0.2.1 > /repro/out/result 2>&1; \
                      then echo exit=0 >> /repro/out/result; \
                      else probe connect 192.0.2.1 80 >> /repro/out/result 2>&1; \
                      echo exit=$$? >> /repro/out/result; fi";
        let (r, doc) = build_ok(backend, &recipe(script, &["result"], ""));
        let result = output_file(&r, &doc, "probe", "result");
        assert!(
            result.contains("refused: route") && result.trim_end().ends_with("exit=1"),
            "[{}] ESCAPE: the sandbox has a route out:\n{result}",
            backend.name()
        );
        assert_eq!(
            result.matches("Network is unreachable").count(),
            2,
            "[{}] {result}",
            backend.name()
        );
    }
}

/// A marker file in the host's `/root`, removed on drop.
struct RootMarker(std::path::PathBuf);

impl RootMarker {
    fn new() -> RootMarker {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::path::PathBuf::from(format!(
            "/root/.repro-hermetic-{}-{nanos}",
            std::process::id()
        ));
        std::fs::write(&path, "REPRO-HERMETIC-SECRET\n").unwrap_or_else(|e| {
            panic!(
                "cannot write the marker `{}`: {e}\nhint: the hermeticity tests run as root",
                path.display()
            )
        });
        RootMarker(path)
    }
}

impl Drop for RootMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

hermetic_test! {
    /// Host files are not readable at their host paths: the host's
    /// `/etc/shadow`, a marker file in a temp dir and one in the host's
    /// `/root`, the same through `/proc/1/root` (the sandbox's pid 1 must
    /// not lead back to the host's root), the store itself and `/root`.
    /// The image's own `/etc/passwd` is readable (a control), and it is
    /// the image's, not the host's.
    fn host_files_are_not_readable(backend: Backend) {
        let marker_dir = tempfile::tempdir().expect("temp dir");
        let marker = marker_dir.path().join("secret.txt");
        std::fs::write(&marker, "REPRO-HERMETIC-SECRET\n").expect("marker");
        // A second marker outside /tmp (which the sandbox hides behind its
        // private tmpfs anyway): in the host's /root.
        let root_marker = RootMarker::new();
        let image_passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        let probes = vec![
            "read /etc/shadow".to_string(),
            format!("read {}", marker.display()),
            format!("read {}", marker_dir.path().display()),
            format!("read {}", root_marker.0.display()),
            format!("read /proc/1/root{}", root_marker.0.display()),
            "read /proc/1/root/etc/shadow".to_string(),
            "read /root".to_string(),
            "read /etc/passwd".to_string(),
        ];
        let (r, a) = attempts_with(backend, &probes, &[], "");
        let (control, attacks) = a.split_last().expect("attempts");
        for attempt in attacks {
            attempt.assert_refused(backend);
        }
        control.assert_succeeded(backend);
        assert!(
            control.text.contains(&fnv1a(image_passwd.as_bytes())),
            "[{}] /etc/passwd is not the image's:\n{}",
            backend.name(),
            control.text
        );
        // Now the store of that build, by its host path (it exists: the
        // step's outputs are in it).
        let store = r.store();
        assert!(store.join("v1").is_dir(), "{}", store.display());
        let probes = vec![
            format!("read {}", store.display()),
            format!("read {}", store.join("v1/blobs/sha256").display()),
            format!("read {}", r.work().join("model.toml").display()),
        ];
        let (_, a) = attempts_with(backend, &probes, &[], "");
        for attempt in &a {
            attempt.assert_refused(backend);
        }
    }
}

hermetic_test! {
    /// Nothing outside `/repro/out` (and the private `/tmp`) is writable:
    /// not `/`, `/etc`, `/usr`, `/bin`, `/repro` nor an input; and the
    /// input's host folder is untouched.
    fn writes_outside_the_output_directory_are_refused(backend: Backend) {
        let probes: Vec<String> = [
            "write /x",
            "write /etc/x",
            "write /usr/x",
            "write /bin/x",
            "write /repro/x",
            "write /repro/in/raw/x",
            "write /repro/in/raw/input.txt",
            "write /tmp/x",
            "write /repro/out/ok",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (r, a) = attempts_with(backend, &probes, &["ok"], "inputs = { raw = \"data.raw\" }");
        for attempt in &a[..7] {
            attempt.assert_refused(backend);
        }
        a[7].assert_succeeded(backend);
        a[8].assert_succeeded(backend);
        assert!(!r.work().join("data/x").exists(), "an input's host folder was written");
        assert_eq!(
            std::fs::read_to_string(r.work().join("data/input.txt")).expect("input"),
            "input\n"
        );
    }
}

hermetic_test! {
    /// The root cannot be remounted read-write, and nothing can be mounted.
    fn nothing_can_be_mounted_or_remounted(backend: Backend) {
        let a = attempts(
            backend,
            &["remount-root", "mount-tmpfs /tmp", "mount-tmpfs /repro/out", "mount-tmpfs /usr"],
        );
        for attempt in &a {
            attempt.assert_refused(backend);
        }
    }
}

hermetic_test! {
    /// `/proc` shows only the step's own few processes: not the host's init,
    /// not this test process.
    fn host_processes_are_invisible(backend: Backend) {
        let me = std::process::id();
        let script = format!(
            "ls /proc | grep -c '^[0-9]' > /repro/out/count; \
             for p in /proc/[0-9]*; do tr '\\0' ' ' < $$p/cmdline; echo; done > /repro/out/cmdlines; \
             : > /repro/out/mine; tr '\\0' ' ' < /proc/{me}/cmdline >> /repro/out/mine 2>/dev/null; true"
        );
        let (r, doc) = build_ok(backend, &recipe(&script, &["count", "cmdlines", "mine"], ""));
        let count: u32 = output_file(&r, &doc, "probe", "count").trim().parse().expect("count");
        let cmdlines = output_file(&r, &doc, "probe", "cmdlines");
        let mine = output_file(&r, &doc, "probe", "mine");
        assert!(
            count < 10,
            "[{}] ESCAPE: the step sees {count} processes:\n{cmdlines}",
            backend.name()
        );
        let host_init = std::fs::read("/proc/1/cmdline").expect("host /proc/1/cmdline");
        let host_init = String::from_utf8_lossy(&host_init).replace('\0', " ");
        let me_exe = std::env::current_exe().expect("current exe");
        let me_name = me_exe.file_name().expect("name").to_string_lossy().into_owned();
        for line in cmdlines.lines().chain(mine.lines()) {
            assert!(
                !line.contains(&me_name) && line.trim() != host_init.trim(),
                "[{}] ESCAPE: the step sees a host process: `{line}`",
                backend.name()
            );
        }
    }
}

hermetic_test! {
    /// A host process (this test) cannot be traced: it is not even there.
    fn ptrace_of_a_host_process_is_refused(backend: Backend) {
        let me = std::process::id();
        let a = attempts(backend, &[&format!("ptrace-pid {me}")]);
        a[0].assert_refused(backend);
    }
}

hermetic_test! {
    /// Tracing a child of the step itself. The native sandbox's seccomp
    /// filter refuses `ptrace` outright. Docker's default seccomp profile
    /// allows `ptrace` on kernels from 4.8 on, so inside a container a step
    /// can trace its own child (same uid, in its own pid namespace): that is
    /// not an escape, and this test documents it rather than hiding it.
    fn ptrace_of_a_child(backend: Backend) {
        let a = attempts(backend, &["ptrace-child"]);
        match backend {
            Backend::Native => a[0].assert_refused(backend),
            Backend::Docker => a[0].assert_succeeded(backend),
        }
    }
}

hermetic_test! {
    /// Device nodes cannot be created, in `/tmp` or in the outputs.
    fn device_nodes_cannot_be_created(backend: Backend) {
        let a = attempts(backend, &["mknod /tmp/null", "mknod /repro/out/null"]);
        for attempt in &a {
            attempt.assert_refused(backend);
        }
    }
}

hermetic_test! {
    /// `setuid(0)` is refused, and a setuid-root binary in the image runs
    /// with the step's uid (no_new_privs, or a nosuid root).
    fn setuid_gains_nothing(backend: Backend) {
        let a = attempts(backend, &["setuid", "suid-probe euid", "suid-probe setuid"]);
        a[0].assert_refused(backend);
        assert!(
            a[1].exit == 0 && a[1].text.contains("uid=65534 euid=65534 gid=65534 egid=65534"),
            "[{}] ESCAPE: the setuid probe runs as:\n{}",
            backend.name(),
            a[1].text
        );
        a[2].assert_refused(backend);
    }
}

hermetic_test! {
    /// A symlink in the outputs that points outside (absolute, or climbing
    /// with `..`) is stored as a symlink, and its target is never read: the
    /// host's `/etc/passwd` does not end up in the store.
    fn a_symlink_output_pointing_outside_is_stored_as_a_symlink(backend: Backend) {
        let script = "ln -s /etc/passwd /repro/out/link && ln -s ../../etc/passwd /repro/out/rel";
        let (r, doc) = build_ok(backend, &recipe(script, &["link", "rel"], ""));
        let files = &doc["steps"][0]["files"];
        assert_eq!(files["link"], serde_json::json!({ "symlink": "/etc/passwd" }), "{doc}");
        assert_eq!(files["rel"], serde_json::json!({ "symlink": "../../etc/passwd" }), "{doc}");
        let host_passwd = std::fs::read("/etc/passwd").expect("host /etc/passwd");
        assert!(
            !r.blob_path(&format!("sha256:{}", sha256_hex(&host_passwd))).exists(),
            "[{}] the host's /etc/passwd was followed into the store",
            backend.name()
        );
    }
}

/// Host processes whose command line contains `token`, as (pid, cmdline).
fn host_processes_with(token: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(token) && pid != std::process::id() {
                found.push((pid, cmdline));
            }
        }
    }
    found
}

hermetic_test! {
    /// A fork bomb stops at the process limit (512), and the children it
    /// leaves sleeping are killed when the step ends: the build finishes
    /// long before they would wake, and none is left on the host.
    fn a_fork_bomb_is_contained(backend: Backend) {
        let token = format!(
            "bomb{}x{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let started = Instant::now();
        let (_, a) = attempts_with(
            backend,
            &[format!("forkbomb {token}")],
            &[],
            "limits = { timeout = \"50s\" }",
        );
        let elapsed = started.elapsed();
        let survivors = host_processes_with(&token);
        for (pid, _) in &survivors {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let forks: u32 = a[0]
            .text
            .lines()
            .find_map(|l| l.strip_prefix("forks="))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no fork count: {}", a[0].text));
        assert!(
            a[0].exit == 0 && a[0].text.contains("contained") && forks < 512,
            "[{}] ESCAPE: the fork bomb was not contained ({forks} forks):\n{}",
            backend.name(),
            a[0].text
        );
        assert!(forks > 0, "{}", a[0].text);
        assert!(
            survivors.is_empty(),
            "[{}] ESCAPE: {} fork bomb processes outlived the step, e.g. {:?}",
            backend.name(),
            survivors.len(),
            survivors.first()
        );
        assert!(elapsed < Duration::from_secs(45), "[{}] the step took {elapsed:?}", backend.name());
    }
}

hermetic_test! {
    /// A step that allocates past `limits.memory` is killed, and the build
    /// says "out of memory".
    fn a_memory_hog_is_killed_and_reported_as_out_of_memory(backend: Backend) {
        let model = recipe(
            "probe memhog 512 > /repro/out/result",
            &["result"],
            "limits = { memory = \"64MiB\" }",
        );
        let r = setup(backend, &model);
        let (out, doc) = r.build_json(&["model.toml"]);
        assert_eq!(out.status.code(), Some(1), "[{}] {}", backend.name(), stderr(&out));
        assert_eq!(statuses(&doc), ["probe=failed"], "{doc}");
        assert!(
            stderr(&out).contains("out of memory"),
            "[{}] not reported as out of memory:\n{}",
            backend.name(),
            stderr(&out)
        );
    }
}

hermetic_test! {
    /// An endless loop is killed at `limits.timeout`, and the build says
    /// "timed out".
    fn an_endless_loop_is_killed_at_the_time_limit(backend: Backend) {
        let token = format!("spin{}", std::process::id());
        let model = recipe(
            &format!("probe spin {token}"),
            &["result"],
            "limits = { timeout = \"2s\" }",
        );
        let r = setup(backend, &model);
        let started = Instant::now();
        let (out, doc) = r.build_json(&["model.toml"]);
        let elapsed = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "[{}] {}", backend.name(), stderr(&out));
        assert_eq!(statuses(&doc), ["probe=failed"], "{doc}");
        assert!(
            stderr(&out).contains("timed out"),
            "[{}] not reported as timed out:\n{}",
            backend.name(),
            stderr(&out)
        );
        assert!(elapsed < Duration::from_secs(20), "[{}] took {elapsed:?}", backend.name());
        let leftover = host_processes_with(&token);
        assert!(leftover.is_empty(), "[{}] the loop survived: {leftover:?}", backend.name());
    }
}

hermetic_test! {
    /// The step's environment (read from `/proc/<shell>/environ`, exactly
    /// what the sandbox handed over) is the allowlist: the base variables
    /// with the recipe's `[build]` values, then the toolchain's and the
    /// step's `env`; nothing from the host, the runner or the image's config.
    fn the_environment_is_exactly_the_allowlist(backend: Backend) {
        let model = format!(
            "{}\n[build]\nsource_date_epoch = 1700000000\npython_hash_seed = 7\nthreads = 2\n",
            recipe(
                "tr '\\0' '\\n' < /proc/$$$$/environ | sort > /repro/out/env",
                &["env"],
                "env = { STEP_VAR = \"from the step\" }",
            )
            .replace(
                "archive = \"image\"",
                "archive = \"image\"\nenv = { TOOL_VAR = \"from-toolchain\", MPLBACKEND = \"Agg\" }",
            )
        );
        let (r, doc) = build_ok(backend, &model);
        let env = output_file(&r, &doc, "probe", "env");
        let mut want: BTreeMap<&str, &str> = [
            ("PATH", repro_tests::IMAGE_PATH),
            ("HOME", "/tmp"),
            ("TZ", "UTC"),
            ("LC_ALL", "C.UTF-8"),
            ("LANG", "C.UTF-8"),
            ("SOURCE_DATE_EPOCH", "1700000000"),
            ("PYTHONHASHSEED", "7"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("OMP_NUM_THREADS", "2"),
            ("MKL_NUM_THREADS", "2"),
            ("OPENBLAS_NUM_THREADS", "2"),
            ("NUMEXPR_NUM_THREADS", "2"),
            ("VECLIB_MAXIMUM_THREADS", "2"),
        ]
        .into_iter()
        .collect();
        want.insert("TOOL_VAR", "from-toolchain");
        want.insert("MPLBACKEND", "Agg");
        want.insert("STEP_VAR", "from the step");
        let mut want: Vec<String> = want.iter().map(|(k, v)| format!("{k}={v}")).collect();
        want.sort();
        let got: Vec<&str> = env.lines().collect();
        assert_eq!(got, want, "[{}] the step's environment", backend.name());
    }
}

hermetic_test! {
    /// The hostname is `repro`, and the step runs as 65534:65534 with the
    /// supplementary groups exactly `[65534]` (none of the host's groups
    /// leaks in). The groups are what Docker gives a `65534:65534` user
    /// (its runtime always adds the primary group); the native backend must
    /// give the same, or a step that prints `id` differs between backends.
    fn hostname_and_ids_are_fixed(backend: Backend) {
        let script = "hostname > /repro/out/id; uname -n >> /repro/out/id; id -u >> /repro/out/id; \
                      id -g >> /repro/out/id; id -un >> /repro/out/id; id -G | tr ' ' '\\n' | sort -u >> /repro/out/id; \
                      id >> /repro/out/id";
        let (r, doc) = build_ok(backend, &recipe(script, &["id"], ""));
        let id = output_file(&r, &doc, "probe", "id");
        assert_eq!(
            id,
            "repro\nrepro\n65534\n65534\nnobody\n65534\nuid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n",
            "[{}] hostname, uname -n, id -u, id -g, id -un, id -G, id",
            backend.name()
        );
    }
}

/// A deterministic pipeline for the cross-backend test: inputs, a chain,
/// an executable file, a symlink, a directory output, and a record of the
/// step's view (environment, identity, working directory, umask).
const CROSS: &str = r#"
[model]
name = "cross"
version = "1"

[toolchains.bb]
archive = "image"
env = { TOOL = "bb" }

[data.raw]
path = "data"

[params]
greeting = "hello"

[[steps]]
name = "prepare"
toolchain = "bb"
argv = ["sh", "-c", "cat /repro/in/raw/input.txt > /repro/out/prepared.txt && echo ${params.greeting} >> /repro/out/prepared.txt"]
inputs = { raw = "data.raw" }
outputs = ["prepared.txt"]

[[steps]]
name = "derive"
toolchain = "bb"
argv = ["sh", "-c", "mkdir -p /repro/out/dir/sub && sort -r /repro/in/prep/prepared.txt > /repro/out/dir/sub/sorted.txt && printf '#!/bin/sh\\necho run\\n' > /repro/out/dir/tool.sh && chmod 755 /repro/out/dir/tool.sh && ln -s sub/sorted.txt /repro/out/dir/link && sha256sum /repro/in/prep/prepared.txt | cut -c1-64 > /repro/out/sum.txt"]
inputs = { prep = "steps.prepare" }
outputs = ["dir/sub/sorted.txt", "dir/tool.sh", "dir/link", "sum.txt"]
env = { STEP = "derive" }

[[steps]]
name = "view"
toolchain = "bb"
argv = ["sh", "-c", "tr '\\0' '\\n' < /proc/$$$$/environ | sort > /repro/out/view.txt; id >> /repro/out/view.txt; hostname >> /repro/out/view.txt; pwd >> /repro/out/view.txt; umask >> /repro/out/view.txt; ls /repro/in >> /repro/out/view.txt; ls -ln /repro/in/a | grep -v '^total' | cut -c1-10 >> /repro/out/view.txt; cat /proc/self/status | grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' >> /repro/out/view.txt"]
inputs = { a = "steps.derive", b = "data.raw" }
outputs = ["view.txt"]
"#;

/// Each step's (name, key, output tree, files) from a `--json` document.
fn step_results(doc: &Value) -> Vec<(String, Value, Value, Value)> {
    doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("?").to_string(),
                s["key"].clone(),
                s["output"].clone(),
                s["files"].clone(),
            )
        })
        .collect()
}

/// The same deterministic recipe built with `--sandbox docker` and with
/// `--sandbox native`, in two fresh stores, gives identical step keys and
/// identical output trees; and a Docker build verifies on the native
/// backend.
#[test]
#[ignore = "needs Docker, root and user namespaces, and busybox-static"]
fn both_backends_give_the_same_keys_and_outputs() {
    let setup_cross = |backend: Backend| {
        let r = setup(backend, CROSS);
        r.write("data/input.txt", "one\ntwo\nthree\n");
        r
    };
    let docker = setup_cross(Backend::Docker);
    let native = setup_cross(Backend::Native);
    let mut docs = Vec::new();
    for (backend, r) in [(Backend::Docker, &docker), (Backend::Native, &native)] {
        let (out, doc) = r.build_json(&["--sandbox", backend.name(), "model.toml"]);
        assert!(
            out.status.success(),
            "[{}] {}",
            backend.name(),
            stderr(&out)
        );
        assert_eq!(statuses(&doc).len(), 3, "{doc}");
        assert!(statuses(&doc).iter().all(|s| s.ends_with("=ran")), "{doc}");
        docs.push(doc);
    }
    let (d, n) = (step_results(&docs[0]), step_results(&docs[1]));
    for (d, n) in d.iter().zip(&n) {
        if d != n {
            let view = |r: &Repro, doc: &Value| {
                if d.0 == "view" {
                    output_file(r, doc, "view", "view.txt")
                } else {
                    String::new()
                }
            };
            panic!(
                "step `{}` differs between the backends:\ndocker: {}\nnative: {}\n--- docker view:\n{}--- native view:\n{}",
                d.0,
                serde_json::json!([d.1, d.2, d.3]),
                serde_json::json!([n.1, n.2, n.3]),
                view(&docker, &docs[0]),
                view(&native, &docs[1]),
            );
        }
    }
    assert_eq!(d.len(), 3);

    // The Docker build, rebuilt on the native backend, byte for byte.
    let out = docker.run(&["verify", "--sandbox", "native", "cross@1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("reproduced: cross@1 (3 steps, byte for byte)"),
        "{}",
        stdout(&out)
    );
}
