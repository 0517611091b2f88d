//! End-to-end cost of one sandboxed step that runs `/bin/true`, measured side
//! by side in one run: the native backend (through the same API the runner
//! uses), `bwrap --unshare-all` and `docker run --rm --network none`, all on
//! the same image (the busybox test image). Prints the medians, the ratios
//! and a Markdown table for the benchmark notes.
//!
//! The native backend is measured twice, interleaved in blocks of
//! [`BLOCK`] runs so that both see the same load: as the runner uses it,
//! with the pool of pre-warmed inits (`native (pooled)`), and with a fresh
//! init per step (`NativeSandbox::with_pool(false)`, the path without a
//! pool and the fallback when the pool cannot serve a run).
//!
//! Run as root: `cargo bench -p repro-sandbox --bench step_overhead`
//! (`REPRO_BENCH_RUNS` sets the number of runs of each, default 100;
//! `REPRO_BENCH_INIT` the init executable, default the small
//! `repro-sandbox-init`: point it at a built `target/release/repro` to
//! measure the production binary, which runs the same init as
//! `repro __sandbox-init`). A bare `/bin/true` (fork and exec, no sandbox)
//! is measured too, as the floor, and the native sandbox a second time
//! with a pause of [`SPACED_GAP`] before each step
//! ([`SPACED_RUNS`] runs): steps of a real build are seconds apart, and some
//! kernel costs (an RCU grace period taken by a cgroup move, for one) show
//! only when the previous step is not a few milliseconds old.
//! `bwrap` (Debian's `bubblewrap`) and a Docker daemon are measured when
//! present and reported as missing otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use repro_sandbox::{base_env, Limits, NativeSandbox, Sandbox, StepSpec};
use repro_store::Store;
use tokio_util::sync::CancellationToken;

/// `docker run` costs hundreds of milliseconds; 60 runs are enough for its median.
const DOCKER_RUNS: usize = 60;

/// The pause before each step of the spaced native runs.
const SPACED_GAP: Duration = Duration::from_millis(50);
/// How many spaced native runs.
const SPACED_RUNS: usize = 30;
/// Pooled and fresh native runs alternate in blocks of this many.
const BLOCK: usize = 10;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn time_command(runs: usize, mut make: impl FnMut() -> Command) -> Option<Vec<Duration>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut cmd = make();
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        let status = cmd.status().ok()?;
        let elapsed = t.elapsed();
        if !status.success() {
            return None;
        }
        times.push(elapsed);
    }
    Some(times)
}

fn main() {
    let runs: usize = std::env::var("REPRO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&tmp.path().join("store")).expect("store");
    let image = repro_tests::busybox_image(&store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let init = std::env::var_os("REPRO_BENCH_INIT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_repro-sandbox-init").into());
    let init = init.as_path();

    // Native, through the API the runner uses: a fresh output directory and
    // log per run, as a build does.
    let native = |pool: bool| {
        let n = NativeSandbox::new(store.clone(), init.to_path_buf())
            .expect("native sandbox (run as root)")
            .with_pool(pool);
        let s = Sandbox::Native(n);
        runtime
            .block_on(s.ensure_image(&store, &image))
            .expect("ensure image");
        s
    };
    let sandbox = native(true);
    let fresh = native(false);
    let spec = |i: usize| StepSpec {
        step: "true".into(),
        image,
        argv: vec!["/bin/true".into()],
        env: base_env(0, 0, 1),
        inputs: vec![],
        output: tmp.path().join(format!("out/{i}")),
        log: tmp.path().join(format!("log/{i}")),
        limits: Limits::default(),
    };
    // Warm up (page cache, first cgroup creation, the pool's zygote).
    for i in 0..5 {
        for (k, s) in [&sandbox, &fresh].into_iter().enumerate() {
            runtime
                .block_on(s.run(&spec(1_000_000 + 10 * i + k), CancellationToken::new()))
                .expect("warm-up run");
        }
    }
    let mut native_times = Vec::with_capacity(runs);
    let mut fresh_times = Vec::with_capacity(runs);
    // Blocks of BLOCK pooled runs, then BLOCK fresh ones, and so on, until
    // each has `runs`.
    for i in 0..2 * runs.div_ceil(BLOCK) * BLOCK {
        let (s, times) = if (i / BLOCK) % 2 == 0 {
            (&sandbox, &mut native_times)
        } else {
            (&fresh, &mut fresh_times)
        };
        if times.len() == runs {
            continue;
        }
        let s_spec = spec(i);
        let t = Instant::now();
        let outcome = runtime
            .block_on(s.run(&s_spec, CancellationToken::new()))
            .expect("native run");
        times.push(t.elapsed());
        assert!(outcome.success(), "/bin/true failed in the native sandbox");
    }
    let mut spaced_times = Vec::with_capacity(SPACED_RUNS);
    for i in 0..SPACED_RUNS {
        std::thread::sleep(SPACED_GAP);
        let s = spec(2_000_000 + i);
        let t = Instant::now();
        let outcome = runtime
            .block_on(sandbox.run(&s, CancellationToken::new()))
            .expect("native run");
        spaced_times.push(t.elapsed());
        assert!(outcome.success(), "/bin/true failed in the native sandbox");
    }

    // The same root for bwrap: the native backend's unpacked copy.
    let root = repro_sandbox::prepare_rootfs(&store, &image)
        .expect("rootfs")
        .path;
    // bwrap needs mount points for /proc, /dev and /tmp; the image has none,
    // so (like the native backend) it builds the root on a tmpfs and binds
    // each top-level entry of the image read-only.
    let tops: Vec<String> = std::fs::read_dir(&root)
        .expect("read the unpacked root")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !matches!(n.as_str(), "proc" | "dev" | "tmp"))
        .collect();
    let bwrap = which("bwrap").and_then(|bwrap| {
        time_command(runs, || {
            let mut c = Command::new(&bwrap);
            c.args(["--unshare-all", "--die-with-parent", "--tmpfs", "/"]);
            for t in &tops {
                c.arg("--ro-bind").arg(root.join(t)).arg(format!("/{t}"));
            }
            c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
            c.args(["--remount-ro", "/", "/bin/true"]);
            c
        })
    });

    // Docker on the same image (loaded from the store; referenced by its ID).
    let docker = runtime.block_on(async {
        let d = Sandbox::connect(repro_sandbox::BackendKind::Docker, &store, init)
            .await
            .ok()?;
        d.ensure_image(&store, &image).await.ok()?;
        let id = store.get_image(&image).ok()?.config.to_string();
        Some(id)
    });
    let docker = docker.and_then(|id| {
        time_command(DOCKER_RUNS, || {
            let mut c = Command::new("docker");
            c.args(["run", "--rm", "--network", "none", &id, "/bin/true"]);
            c
        })
    });

    let bare = time_command(runs, || Command::new("/bin/true"));

    let n = median(native_times);
    println!("runs of each: {runs} (docker: {DOCKER_RUNS})");
    println!("init executable: {}", init.display());
    println!("native sandbox (pooled)         median {}", ms(n));
    let mut table = format!(
        "| what | median | native (pooled) / it |\n| --- | --- | --- |\n| repro native sandbox, pooled ({runs} runs) | {} | 1 |\n",
        ms(n)
    );
    let spaced_name = format!(
        "native (pooled), {} ms apart ({SPACED_RUNS} runs)",
        SPACED_GAP.as_millis()
    );
    let fresh_name = format!("native (fresh init per step) ({runs} runs)");
    for (name, times) in [
        (fresh_name.as_str(), Some(fresh_times)),
        (spaced_name.as_str(), Some(spaced_times)),
        ("/bin/true (no sandbox)", bare),
        ("bwrap --unshare-all", bwrap),
        ("docker run --rm --network none", docker),
    ] {
        match times {
            Some(t) => {
                let m = median(t);
                let ratio = n.as_secs_f64() / m.as_secs_f64();
                println!("{name:<32}median {}   native/{name} = {ratio:.3}", ms(m));
                table.push_str(&format!("| `{name}` | {} | {ratio:.3} |\n", ms(m)));
            }
            None => {
                println!("{name:<32}not measured (not installed or not running)");
                table.push_str(&format!("| `{name}` | not measured | |\n"));
            }
        }
    }
    println!("\n{table}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
