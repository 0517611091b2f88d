//! The benchmark cases: each runs `repro` and its reference side by side
//! and yields a row of the results table.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::gen;
use crate::measure::{median, side_by_side, walls, Cmd};

/// Options of `repro-bench run`.
#[derive(clap::Args)]
pub struct Options {
    /// The `repro` binary to measure (build it with `--release` first)
    #[arg(long, default_value = "target/release/repro")]
    repro: PathBuf,
    /// Where fixtures and stores go (kept between runs; about 30 GiB for
    /// the full set with the 20 GiB file)
    #[arg(long, default_value = "target/bench-work")]
    work: PathBuf,
    /// Timed runs per command; medians are taken over them
    #[arg(long, default_value_t = 11)]
    runs: usize,
    /// Only these cases (comma-separated): version, hash-file,
    /// hash-dataset, recheck, noop, verify, memory
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Small fixtures, for trying the harness (the figures are then not
    /// comparable with the goals)
    #[arg(long)]
    quick: bool,
    /// The size of the huge file of the memory case, in GiB
    #[arg(long, default_value_t = 20)]
    huge_gib: u64,
    /// Also write the rows as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One line of the results table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The goal's number in BENCHMARKS.md.
    pub goal: u32,
    pub what: String,
    /// repro's median (or peak memory).
    pub repro: String,
    /// The reference and its median.
    pub reference: String,
    /// The figure the goal is about.
    pub figure: String,
    pub target: String,
    /// Whether the goal is met (`None`: informational).
    pub met: Option<bool>,
}

struct Ctx {
    repro: PathBuf,
    work: PathBuf,
    runs: usize,
    quick: bool,
    huge_gib: u64,
    cores: usize,
    /// `openssl dgst -sha256` throughput in bytes per second, once measured.
    openssl_rate: Option<f64>,
    rows: Vec<Row>,
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Run the selected cases and print the table.
pub fn run(opts: Options) -> Result<()> {
    let repro = fs::canonicalize(&opts.repro).with_context(|| {
        format!(
            "no repro binary at `{}`; build it with `cargo build --release -p repro-runner`",
            opts.repro.display()
        )
    })?;
    fs::create_dir_all(&opts.work)?;
    let work = fs::canonicalize(&opts.work)?;
    let mut ctx = Ctx {
        repro,
        work,
        runs: opts.runs.max(1),
        quick: opts.quick,
        huge_gib: opts.huge_gib,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        openssl_rate: None,
        rows: Vec::new(),
    };
    let all = [
        "version",
        "hash-file",
        "hash-dataset",
        "recheck",
        "noop",
        "verify",
        "memory",
        "slurm",
    ];
    for o in &opts.only {
        if !all.contains(&o.as_str()) {
            bail!("unknown case `{o}`; the cases are {}", all.join(", "));
        }
    }
    let selected = |c: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == c);
    eprintln!("{}", machine_summary(&ctx));
    ctx.repro_cmd(&["key", "generate"]).output().ok(); // an existing key is fine
    for case in all {
        if !selected(case) {
            continue;
        }
        eprintln!("== {case}");
        match case {
            "version" => version(&mut ctx)?,
            "hash-file" => hash_file(&mut ctx)?,
            "hash-dataset" => hash_dataset(&mut ctx)?,
            "recheck" => recheck(&mut ctx)?,
            "noop" => {
                let sizes: &[(usize, u64)] = if ctx.quick {
                    &[(100, 50), (1_000, 300)]
                } else {
                    &[(1_000, 50), (10_000, 300)]
                };
                for &(n, ms) in sizes {
                    noop(&mut ctx, n, Duration::from_millis(ms))?;
                }
            }
            "verify" => verify(&mut ctx)?,
            "memory" => memory(&mut ctx)?,
            "slurm" => slurm(&mut ctx)?,
            _ => unreachable!("checked above"),
        }
    }
    let table = render(&ctx.rows);
    println!("{}\n\n{table}", machine_summary(&ctx));
    if let Some(p) = opts.json {
        fs::write(&p, serde_json::to_vec_pretty(&ctx.rows)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

fn machine_summary(ctx: &Ctx) -> String {
    let sh = |c: &str| {
        Cmd::new("sh", &["-c", c])
            .output()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "machine: {} cores, kernel {}, {}, {}; load average {}; repro {}{}",
        ctx.cores,
        sh("uname -r"),
        sh("openssl version | cut -d' ' -f1-2"),
        sh("ninja --version 2>/dev/null | sed 's/^/ninja /' || echo 'no ninja'"),
        sh("cut -d' ' -f1-3 /proc/loadavg"),
        sh(&format!("{} --version", ctx.repro.display())),
        if ctx.quick {
            " (QUICK: small fixtures, not comparable with the goals)"
        } else {
            ""
        }
    )
}

fn render(rows: &[Row]) -> String {
    let mut s = String::from(
        "| goal | what | repro | reference | figure | target | met |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**MISSED**",
            None => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.goal, r.what, r.repro, r.reference, r.figure, r.target, met
        );
    }
    s
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64()
}

fn gbps(r: f64) -> String {
    format!("{:.2} GB/s", r / 1e9)
}

impl Ctx {
    fn store(&self) -> PathBuf {
        self.work.join("store")
    }

    /// `repro` with the benchmark's own store and key, quiet.
    fn repro_cmd(&self, args: &[&str]) -> Cmd {
        self.repro_in(&self.store(), args)
    }

    fn repro_in(&self, store: &Path, args: &[&str]) -> Cmd {
        Cmd::new(&self.repro, args)
            .env("REPRO_STORE", store)
            .env("REPRO_KEY", self.work.join("signing.key"))
            .env("NO_COLOR", "1")
    }

    fn push(&mut self, row: Row) {
        eprintln!(
            "   {}: repro {} | {} | {} (target {}){}",
            row.what,
            row.repro,
            row.reference,
            row.figure,
            row.target,
            match row.met {
                Some(false) => " MISSED",
                _ => "",
            }
        );
        self.rows.push(row);
    }

    /// The 2 GiB file (256 MiB when quick), generated once, read once so
    /// that it is in the page cache.
    fn big_file(&self) -> Result<(PathBuf, u64)> {
        let size = if self.quick { 256 * MIB } else { 2 * GIB };
        let p = self.work.join(format!("big-{}m.bin", size / MIB));
        if fs::metadata(&p).map(|m| m.len()).ok() != Some(size) {
            eprintln!("   writing {}", p.display());
            gen::write_file(&p, size, 7)?;
        }
        warm(&p)?;
        Ok((p, size))
    }

    /// The 10,000-file 2 GiB dataset (1,000 files, 256 MiB when quick).
    fn dataset(&self) -> Result<(PathBuf, u64, u64)> {
        let (files, bytes) = if self.quick {
            (1_000, 256 * MIB)
        } else {
            (10_000, 2 * GIB)
        };
        let p = self.work.join(format!("dataset-{files}"));
        let marker = p.join(".complete");
        if !marker.exists() {
            let _ = fs::remove_dir_all(&p);
            eprintln!("   writing {}", p.display());
            gen::write_dataset(&p, files, bytes)?;
            // The marker must not count as data: keep it out of the folder.
            fs::write(self.work.join(format!("dataset-{files}.complete")), b"")?;
        }
        warm(&p)?;
        Ok((p, files, bytes))
    }

    fn openssl_rate(&mut self) -> Result<f64> {
        if let Some(r) = self.openssl_rate {
            return Ok(r);
        }
        let (big, size) = self.big_file()?;
        let c = Cmd::new("openssl", &["dgst", "-sha256", path_str(&big)?]);
        let mut w = Vec::new();
        for _ in 0..3 {
            w.push(c.time()?.wall);
        }
        let r = rate(size, median(&w));
        self.openssl_rate = Some(r);
        Ok(r)
    }

    /// The busybox image, imported into `store`; its manifest digest.
    fn busybox_image(&self, store: &Path) -> Result<String> {
        let layout = self.work.join("busybox-oci");
        if !layout.join("index.json").exists() {
            repro_tests::busybox_oci_layout(&layout);
        }
        let out = self
            .repro_in(store, &["image", "import", path_str(&layout)?])
            .output()?;
        Ok(out.trim().to_string())
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("`{}` is not UTF-8", p.display()))
}

/// Read every file under `p` once, so that it is in the page cache.
fn warm(p: &Path) -> Result<()> {
    let meta = fs::metadata(p)?;
    if meta.is_dir() {
        for e in fs::read_dir(p)? {
            warm(&e?.path())?;
        }
    } else {
        let mut f = fs::File::open(p)?;
        std::io::copy(&mut f, &mut std::io::sink())?;
    }
    Ok(())
}

fn version(ctx: &mut Ctx) -> Result<()> {
    let a = Cmd::new(&ctx.repro, &["--version"]);
    let b = Cmd::new("true", &[]);
    let (ra, rb) = side_by_side(&a, &b, ctx.runs * 3)?;
    let (ma, mb) = (median(&walls(&ra)), median(&walls(&rb)));
    ctx.push(Row {
        goal: 7,
        what: "`repro --version`".into(),
        repro: ms(ma),
        reference: format!("`true`: {}", ms(mb)),
        figure: ms(ma),
        target: "≤ 5 ms".into(),
        met: Some(ma <= Duration::from_millis(5)),
    });
    Ok(())
}

/// The digest `openssl dgst -sha256` prints for `file`.
fn openssl_digest(file: &Path) -> Result<String> {
    let out = Cmd::new("openssl", &["dgst", "-sha256", path_str(file)?]).output()?;
    out.rsplit("= ")
        .next()
        .map(|h| format!("sha256:{}", h.trim()))
        .context("openssl printed no digest")
}

fn hash_file(ctx: &mut Ctx) -> Result<()> {
    let (big, size) = ctx.big_file()?;
    let a = Cmd::new(&ctx.repro, &["hash", path_str(&big)?]);
    let b = Cmd::new("openssl", &["dgst", "-sha256", path_str(&big)?]);
    let ours = a.output()?.trim().to_string();
    let theirs = openssl_digest(&big)?;
    if ours != theirs {
        bail!("`repro hash` printed {ours}, openssl {theirs}");
    }
    let runs = ctx.runs.min(7);
    let (ra, rb) = side_by_side(&a, &b, runs)?;
    let (ma, mb) = (median(&walls(&ra)), median(&walls(&rb)));
    ctx.openssl_rate = Some(rate(size, mb));
    let ratio = mb.as_secs_f64() / ma.as_secs_f64();
    ctx.push(Row {
        goal: 1,
        what: format!("hash one {} MiB file (page cache)", size / MIB),
        repro: format!("{} ({})", ms(ma), gbps(rate(size, ma))),
        reference: format!(
            "`openssl dgst -sha256`: {} ({})",
            ms(mb),
            gbps(rate(size, mb))
        ),
        figure: format!("{ratio:.2} × openssl"),
        target: "≥ 0.9 × openssl".into(),
        met: Some(ratio >= 0.9),
    });
    Ok(())
}

fn hash_dataset(ctx: &mut Ctx) -> Result<()> {
    let (big, size) = ctx.big_file()?;
    let (ds, files, bytes) = ctx.dataset()?;
    let a = Cmd::new(&ctx.repro, &["hash", path_str(&ds)?]);
    let b = Cmd::new("openssl", &["dgst", "-sha256", path_str(&big)?]);
    let runs = ctx.runs.min(7);
    let (ra, rb) = side_by_side(&a, &b, runs)?;
    let (ma, mb) = (median(&walls(&ra)), median(&walls(&rb)));
    let ours = rate(bytes, ma);
    let single = rate(size, mb);
    let figure = ours / (ctx.cores as f64 * single);
    ctx.push(Row {
        goal: 2,
        what: format!("hash a dataset: {files} files, {} MiB", bytes / MIB),
        repro: format!("{} ({})", ms(ma), gbps(ours)),
        reference: format!(
            "`openssl dgst -sha256`, one stream: {} ({})",
            ms(mb),
            gbps(single)
        ),
        figure: format!("{figure:.2} × {} cores × openssl", ctx.cores),
        target: "≥ 0.8 × cores × openssl".into(),
        met: Some(figure >= 0.8),
    });
    Ok(())
}

fn recheck(ctx: &mut Ctx) -> Result<()> {
    let (ds, files, bytes) = ctx.dataset()?;
    let store = ctx.work.join("store-recheck");
    let _ = fs::remove_dir_all(&store);
    let add = ctx.repro_in(&store, &["data", "add", path_str(&ds)?]);
    // The first ingest: copies every file into the store (informational).
    let first = add.time()?;
    ctx.push(Row {
        goal: 3,
        what: format!(
            "first `repro data add` of the dataset ({files} files, {} MiB)",
            bytes / MIB
        ),
        repro: format!("{} ({})", ms(first.wall), gbps(rate(bytes, first.wall))),
        reference: String::new(),
        figure: "copies into the store, durable".into(),
        target: "(informational)".into(),
        met: None,
    });
    let tree = add.output()?.trim().to_string();
    let hashed = Cmd::new(&ctx.repro, &["hash", path_str(&ds)?])
        .output()?
        .trim()
        .to_string();
    if tree != hashed {
        bail!("`repro data add` gave {tree} but `repro hash` {hashed}");
    }
    // Two floors: starting `repro` at all, and a `stat` of every entry
    // (`du` does one per entry on one thread, with the directory reads).
    let floor = Cmd::new(&ctx.repro, &["--version"]);
    let du = Cmd::new("du", &["-s", "--apparent-size", path_str(&ds)?]);
    let (mut ra, rb) = side_by_side(&add, &floor, ctx.runs)?;
    let (ra2, rc) = side_by_side(&add, &du, ctx.runs)?;
    ra.extend(ra2);
    let (ma, mb, mc) = (
        median(&walls(&ra)),
        median(&walls(&rb)),
        median(&walls(&rc)),
    );
    ctx.push(Row {
        goal: 3,
        what: format!("re-check the unchanged dataset (`repro data add` again, {files} files)"),
        repro: ms(ma),
        reference: format!("`repro --version`: {}; `du -s`: {}", ms(mb), ms(mc)),
        figure: ms(ma),
        target: "≤ 10 ms".into(),
        met: Some(ma <= Duration::from_millis(10)),
    });
    let _ = fs::remove_dir_all(&store);
    Ok(())
}

fn noop(ctx: &mut Ctx, steps: usize, target: Duration) -> Result<()> {
    let image = ctx.busybox_image(&ctx.store())?;
    let dir = ctx.work.join(format!("noop-{steps}"));
    gen::write_recipe(&dir, steps, &image)?;
    let recipe = dir.join("model.toml");
    let jobs = ctx.cores.to_string();
    eprintln!("   first build of {steps} steps (untimed)");
    ctx.repro_cmd(&["build", "--quiet", "--jobs", &jobs, path_str(&recipe)?])
        .time()?;
    Cmd::new("ninja", &["-C", path_str(&dir)?]).time()?;
    let a = ctx.repro_cmd(&["build", "--quiet", path_str(&recipe)?]);
    let b = Cmd::new("ninja", &["-C", path_str(&dir)?]);
    let (ra, rb) = side_by_side(&a, &b, ctx.runs)?;
    let (ma, mb) = (median(&walls(&ra)), median(&walls(&rb)));
    ctx.push(Row {
        goal: 4,
        what: format!("no-op build of {steps} steps"),
        repro: ms(ma),
        reference: format!("`ninja`, same graph: {}", ms(mb)),
        figure: format!(
            "{} ({:.1} × ninja)",
            ms(ma),
            ma.as_secs_f64() / mb.as_secs_f64()
        ),
        target: format!("≤ {}", ms(target)),
        met: Some(ma <= target),
    });
    Ok(())
}

fn verify(ctx: &mut Ctx) -> Result<()> {
    let openssl = ctx.openssl_rate()?;
    let image = ctx.busybox_image(&ctx.store())?;
    let out_bytes = if ctx.quick { 64 * MIB } else { GIB };
    let cases = [
        ("small", 3u64, "echo hello > /repro/out/o".to_string()),
        (
            "big",
            out_bytes,
            format!("yes 0123456789abcdef | head -c {out_bytes} > /repro/out/o"),
        ),
    ];
    for (name, bytes, script) in cases {
        let dir = ctx.work.join(format!("verify-{name}"));
        fs::create_dir_all(&dir)?;
        let model = format!("bench-verify-{name}");
        fs::write(
            dir.join("model.toml"),
            format!(
                "[model]\nname = \"{model}\"\nversion = \"1\"\n\n[toolchains.bb]\nimage = \"{image}\"\n\n\
                 [[steps]]\nname = \"write\"\ntoolchain = \"bb\"\nargv = [\"sh\", \"-c\", {script:?}]\noutputs = [\"o\"]\n"
            ),
        )?;
        ctx.repro_cmd(&["build", "--quiet", path_str(&dir.join("model.toml"))?])
            .time()?;
        let spec = format!("{model}@1");
        let cmd = ctx.repro_cmd(&["verify", "--json", &spec]);
        let mut overheads = Vec::new();
        let mut walls_ = Vec::new();
        cmd.time()?; // warm-up
        for _ in 0..ctx.runs.min(7) {
            let (run, out) = cmd.time_output()?;
            let doc: serde_json::Value = serde_json::from_str(&out)
                .with_context(|| format!("`repro verify --json` printed no JSON: {out}"))?;
            if doc["reproduced"] != serde_json::Value::Bool(true) {
                bail!("{spec} did not reproduce: {out}");
            }
            let step_ms: f64 = doc["steps"]
                .as_array()
                .context("no steps in the verify JSON")?
                .iter()
                .map(|s| s["duration_ms"].as_f64().unwrap_or(f64::NAN))
                .sum();
            if step_ms.is_nan() {
                bail!("`repro verify --json` gives no `duration_ms` per step: {out}");
            }
            overheads.push(
                run.wall
                    .saturating_sub(Duration::from_secs_f64(step_ms / 1e3)),
            );
            walls_.push(run.wall);
        }
        let o = median(&overheads);
        let budget =
            Duration::from_millis(5) + Duration::from_secs_f64(bytes as f64 / (0.9 * openssl));
        ctx.push(Row {
            goal: 6,
            what: format!("verify overhead, one step writing {bytes} bytes"),
            repro: format!("wall {}, overhead {}", ms(median(&walls_)), ms(o)),
            reference: format!("openssl rate {}", gbps(openssl)),
            figure: ms(o),
            target: format!("≤ 5 ms + bytes / (0.9 × openssl) = {}", ms(budget)),
            met: Some(o <= budget),
        });
    }
    Ok(())
}

/// A Slurm cluster of the benchmark's own (`ci/slurm-cluster`: two nodes on this machine),
/// stopped when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/slurm-cluster")
    }

    fn start(dir: PathBuf) -> Result<Cluster> {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let out = std::process::Command::new(Self::script())
            .arg("start")
            .arg(&dir)
            .output()
            .context("run ci/slurm-cluster")?;
        if !out.status.success() {
            bail!(
                "the Slurm test cluster does not start (run ci/setup, as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let conf = dir.join("slurm.conf");
        Ok(Cluster { dir, conf })
    }

    fn with(&self, c: Cmd) -> Cmd {
        c.env("SLURM_CONF", &self.conf)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// The Slurm executor's overhead per step, against `sbatch --wait --wrap
/// true` and `srun true` in the same run, and a 100-step fan-out against
/// the same build on this machine.
fn slurm(ctx: &mut Ctx) -> Result<()> {
    let cluster = Cluster::start(ctx.work.join("slurm-cluster"))?;
    let image = ctx.busybox_image(&ctx.store())?;
    let one = ctx.work.join("slurm-one");
    fs::create_dir_all(&one)?;
    fs::write(
        one.join("model.toml"),
        format!(
            "[model]\nname = \"bench-slurm-one\"\nversion = \"1\"\n\n[toolchains.bb]\nimage = \"{image}\"\n\n\
             [[steps]]\nname = \"one\"\ntoolchain = \"bb\"\nargv = [\"sh\", \"-c\", \"echo 1 > /repro/out/o\"]\noutputs = [\"o\"]\n"
        ),
    )?;
    let recipe = one.join("model.toml");
    let build = |executor: &str| {
        cluster.with(ctx.repro_cmd(&[
            "build",
            "--quiet",
            "--no-cache",
            "--executor",
            executor,
            path_str(&recipe).unwrap_or_default(),
        ]))
    };
    let runs = ctx.runs.min(5);
    let sbatch = cluster.with(Cmd::new(
        "sbatch",
        &["--wait", "--quiet", "--output=/dev/null", "--wrap", "true"],
    ));
    let srun = cluster.with(Cmd::new("srun", &["true"]));
    let (on_slurm, by_sbatch) = side_by_side(&build("slurm"), &sbatch, runs)?;
    let (local, by_srun) = side_by_side(&build("local"), &srun, runs)?;
    let (s, b, l, r) = (
        median(&walls(&on_slurm)),
        median(&walls(&by_sbatch)),
        median(&walls(&local)),
        median(&walls(&by_srun)),
    );
    ctx.push(Row {
        goal: 9,
        what: "one step on Slurm (build --no-cache --executor slurm)".into(),
        repro: ms(s),
        reference: format!(
            "`sbatch --wait --wrap true`: {}; `srun true`: {}; the same build locally: {}",
            ms(b),
            ms(r),
            ms(l)
        ),
        figure: format!(
            "{} over sbatch --wait ({:.2} ×), {} over the local build",
            ms(s.saturating_sub(b)),
            s.as_secs_f64() / b.as_secs_f64(),
            ms(s.saturating_sub(l))
        ),
        target: "none set (measured)".into(),
        met: None,
    });

    let fan = ctx.work.join("slurm-fan-100");
    fs::create_dir_all(&fan)?;
    let mut toml = format!(
        "[model]\nname = \"bench-slurm-fan\"\nversion = \"1\"\n\n[toolchains.bb]\nimage = \"{image}\"\n"
    );
    for i in 0..100 {
        toml.push_str(&format!(
            "\n[[steps]]\nname = \"s{i:03}\"\ntoolchain = \"bb\"\nargv = [\"sh\", \"-c\", \"echo {i} > /repro/out/o\"]\noutputs = [\"o\"]\n"
        ));
    }
    fs::write(fan.join("model.toml"), toml)?;
    let fan_recipe = fan.join("model.toml");
    let jobs = ctx.cores.to_string();
    let fan_build = |executor: &str| {
        cluster.with(ctx.repro_cmd(&[
            "build",
            "--quiet",
            "--no-cache",
            "--jobs",
            &jobs,
            "--executor",
            executor,
            path_str(&fan_recipe).unwrap_or_default(),
        ]))
    };
    let (fs_, fl) = side_by_side(&fan_build("slurm"), &fan_build("local"), 1)?;
    let (fs_, fl) = (median(&walls(&fs_)), median(&walls(&fl)));
    ctx.push(Row {
        goal: 9,
        what: "100 independent steps on Slurm".into(),
        repro: format!("{} ({} per step)", ms(fs_), ms(fs_ / 100)),
        reference: format!(
            "the same build locally: {} ({} per step)",
            ms(fl),
            ms(fl / 100)
        ),
        figure: format!(
            "{:.1} × the local build",
            fs_.as_secs_f64() / fl.as_secs_f64()
        ),
        target: "none set (measured)".into(),
        met: None,
    });
    drop(cluster);
    Ok(())
}

/// Peak memory stays within this many MiB plus `PER_FILE` bytes per file.
const MEM_BASE_MIB: u64 = 64;
const MEM_PER_FILE: u64 = 1024;

fn memory(ctx: &mut Ctx) -> Result<()> {
    let files: u64 = if ctx.quick { 10_000 } else { 100_000 };
    let huge = if ctx.quick { GIB } else { ctx.huge_gib * GIB };
    let store = ctx.work.join("store-memory");
    let _ = fs::remove_dir_all(&store);
    let image = ctx.busybox_image(&store)?;
    let many = ctx.work.join(format!("many-{files}"));
    if !ctx.work.join(format!("many-{files}.complete")).exists() {
        let _ = fs::remove_dir_all(&many);
        eprintln!("   writing {}", many.display());
        gen::write_dataset(&many.join("data"), files, files * 1024)?;
        fs::write(ctx.work.join(format!("many-{files}.complete")), b"")?;
    }
    let big = ctx.work.join("huge");
    fs::create_dir_all(big.join("data"))?;
    let hf = big.join("data/huge.bin");
    if fs::metadata(&hf).map(|m| m.len()).ok() != Some(huge) {
        gen::write_sparse(&hf, huge)?;
    }
    let cases = [
        (
            format!("{files} files of 1 KiB"),
            many,
            files,
            "find /repro/in/d -type f | wc -l > /repro/out/o",
        ),
        (
            format!("one {} GiB file", huge / GIB),
            big,
            1,
            "wc -c < /repro/in/d/huge.bin > /repro/out/o",
        ),
    ];
    for (i, (what, dir, n, script)) in cases.into_iter().enumerate() {
        let model = format!("bench-memory-{i}");
        fs::write(
            dir.join("model.toml"),
            format!(
                "[model]\nname = \"{model}\"\nversion = \"1\"\n\n[toolchains.bb]\nimage = \"{image}\"\n\n\
                 [data.d]\npath = \"data\"\n\n\
                 [[steps]]\nname = \"read\"\ntoolchain = \"bb\"\nargv = [\"sh\", \"-c\", {script:?}]\ninputs = {{ d = \"data.d\" }}\noutputs = [\"o\"]\n"
            ),
        )?;
        let bound = MEM_BASE_MIB * 1024 + n * MEM_PER_FILE / 1024;
        let build = ctx
            .repro_in(
                &store,
                &["build", "--quiet", path_str(&dir.join("model.toml"))?],
            )
            .time()?;
        let verify = ctx
            .repro_in(&store, &["verify", "--quiet", &format!("{model}@1")])
            .time()?;
        for (verb, r) in [("build", build), ("verify", verify)] {
            ctx.push(Row {
                goal: 8,
                what: format!("peak memory, `repro {verb}` of {what}"),
                repro: format!("{} MiB ({})", r.max_rss_kib / 1024, ms(r.wall)),
                reference: String::new(),
                figure: format!("{} MiB", r.max_rss_kib / 1024),
                target: format!(
                    "≤ {MEM_BASE_MIB} MiB + {MEM_PER_FILE} B per file = {} MiB",
                    bound / 1024
                ),
                met: Some(r.max_rss_kib <= bound),
            });
        }
    }
    let _ = fs::remove_dir_all(&store);
    Ok(())
}
