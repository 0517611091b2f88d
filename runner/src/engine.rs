//! Executes a planned build: computes step keys, consults the action cache,
//! runs missing steps in the sandbox, and moves their outputs into the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use repro_dag::{Graph, KeyMaterial, Scheduler};
use repro_recipes::{InputRef, Pins, Recipe};
use repro_sandbox::{
    BackendKind, DockerSandbox, Limits, Mount, Sandbox, StepSpec, Termination, Variation,
};
use repro_store::{ActionResult, BlobDigest, ImageDigest, Ingest, StepKey, Store, TreeDigest};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Reporter};

/// One step, fully resolved except for the outputs of the steps it uses.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// The step's name.
    pub name: String,
    /// The image it runs in.
    pub image: ImageDigest,
    /// The command after substitution.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: BTreeMap<String, String>,
    /// Mount name -> where the tree comes from.
    pub inputs: BTreeMap<String, InputSource>,
    /// Declared outputs as written (`dir/` for directories).
    pub outputs: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
}

/// Where an input tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// A pinned tree (data snapshot or code tree).
    Tree(TreeDigest),
    /// The output tree of another step.
    Step(String),
}

/// A recipe with every reference pinned: what the engine executes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The steps by name.
    pub steps: BTreeMap<String, PlannedStep>,
    /// Their dependency graph.
    pub graph: Graph,
}

/// The step graph of a recipe; a cycle is an error naming the recipe and the steps.
pub fn check_graph(recipe: &Recipe) -> Result<Graph> {
    Graph::new(recipe.steps.iter().map(|s| {
        (
            s.name.clone(),
            s.deps().into_iter().map(str::to_string).collect::<Vec<_>>(),
        )
    }))
    .map_err(|e| {
        let text = e.to_string();
        let (msg, hint) = text.split_once("\nhint: ").unwrap_or((&text, ""));
        let mut out = format!("error: {msg}\n  --> {}", recipe.path.display());
        if !hint.is_empty() {
            out.push_str(&format!("\n  = hint: {hint}"));
        }
        anyhow::Error::new(crate::exit::UserError(out))
    })
}

impl Plan {
    /// Plan `recipe` with `pins`. Fails on a cycle, a missing pin or a bad substitution.
    pub fn new(recipe: &Recipe, pins: &Pins) -> Result<Plan> {
        let graph = check_graph(recipe)?;
        let base = repro_sandbox::base_env(
            recipe.build.source_date_epoch,
            recipe.build.python_hash_seed,
            recipe.build.threads,
        );
        let mut steps = BTreeMap::new();
        for s in &recipe.steps {
            let toolchain = recipe.toolchains.get(&s.toolchain).ok_or_else(|| {
                anyhow!("step `{}` uses unknown toolchain `{}`", s.name, s.toolchain)
            })?;
            let image = *pins.toolchains.get(&s.toolchain).ok_or_else(|| {
                anyhow!(
                    "toolchain `{}` is not pinned\nhint: run `repro lock`",
                    s.toolchain
                )
            })?;
            let (argv, step_env) = s.expand(recipe)?;
            let mut env = base.clone();
            env.extend(toolchain.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            env.extend(step_env);
            let mut inputs = BTreeMap::new();
            for (mount, r) in &s.inputs {
                let src = match r {
                    InputRef::Data(n) => InputSource::Tree(*pins.data.get(n).ok_or_else(|| {
                        anyhow!("data `{n}` is not pinned\nhint: run `repro lock`")
                    })?),
                    InputRef::Code(n) => InputSource::Tree(*pins.code.get(n).ok_or_else(|| {
                        anyhow!("code `{n}` is not pinned\nhint: run `repro lock`")
                    })?),
                    InputRef::Step(n) => InputSource::Step(n.clone()),
                };
                inputs.insert(mount.clone(), src);
            }
            steps.insert(
                s.name.clone(),
                PlannedStep {
                    name: s.name.clone(),
                    image,
                    argv,
                    env,
                    inputs,
                    // Display keeps the trailing `/` of a directory output.
                    outputs: s.outputs.iter().map(|o| o.to_string()).collect(),
                    limits: Limits {
                        memory_bytes: s.limits.memory_bytes,
                        cpus: s.limits.cpus,
                        timeout: s.limits.timeout,
                        pids: 512,
                    },
                },
            );
        }
        Ok(Plan { steps, graph })
    }
}

/// How a build uses the cache.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Parallel steps at most.
    pub jobs: usize,
    /// Take results from the action cache.
    pub read_cache: bool,
    /// Put results into the action cache.
    pub write_cache: bool,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Ran in the sandbox and succeeded.
    Ran,
    /// Taken from the action cache.
    Cached,
    /// Ran and failed.
    Failed,
    /// Not run because a dependency failed.
    Skipped,
}

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// How it ended.
    pub status: StepStatus,
    /// Its key (absent when skipped).
    pub key: Option<StepKey>,
    /// Its output tree (when it succeeded).
    pub output: Option<TreeDigest>,
    /// Its log in the store (when it ran).
    pub log: Option<BlobDigest>,
    /// Wall time in the sandbox (zero for cache hits).
    pub duration: Duration,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// Every step, in topological order.
    pub steps: Vec<StepResult>,
}

impl BuildReport {
    /// Whether every step succeeded.
    pub fn ok(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.status, StepStatus::Ran | StepStatus::Cached))
    }
}

/// The shared state of one build.
pub struct Engine {
    store: Arc<Store>,
    reporter: Arc<dyn Reporter>,
    backend: BackendKind,
    sandbox: OnceCell<Arc<Sandbox>>,
    images: Mutex<HashMap<ImageDigest, Arc<OnceCell<()>>>>,
    cancel: CancellationToken,
    /// A remote action cache (`build --remote`), asked after a local miss.
    remote: Option<Arc<dyn crate::remote::RemoteCache>>,
}

impl Engine {
    /// An engine over `store` running steps on `backend`, reporting to
    /// `reporter`, stopped by `cancel`.
    pub fn new(
        store: Arc<Store>,
        backend: BackendKind,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Self {
        Engine {
            store,
            reporter,
            backend,
            sandbox: OnceCell::new(),
            images: Mutex::new(HashMap::new()),
            cancel,
            remote: None,
        }
    }

    /// Also take cache hits from (and publish results to) `remote`.
    pub fn with_remote(mut self, remote: Option<Arc<dyn crate::remote::RemoteCache>>) -> Self {
        self.remote = remote;
        self
    }

    /// The store.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// The reporter.
    pub fn reporter(&self) -> &dyn Reporter {
        &*self.reporter
    }

    /// The sandbox backend and its version, for the record; `docker` when it
    /// was never connected (a fully cached build).
    pub async fn backend_description(&self) -> String {
        match self.sandbox.get() {
            Some(s) => match s.describe().await {
                Ok(info) => format!(
                    "{} {} (API {})",
                    info.backend, info.server_version, info.api_version
                ),
                Err(_) => "docker".to_string(),
            },
            None => "docker (not started: every step was cached)".to_string(),
        }
    }

    /// Export an image from the Docker daemon by tag and import it into the store.
    pub async fn import_tag(&self, tag: &str) -> Result<ImageDigest> {
        let sandbox = DockerSandbox::connect().await?;
        let scratch = self.store.scratch("docker-save-")?;
        let archive = scratch.path().join("image.tar");
        sandbox.save_image(tag, &archive).await?;
        let store = Arc::clone(&self.store);
        let d =
            tokio::task::spawn_blocking(move || repro_toolchains::import_archive(&store, &archive))
                .await??;
        drop(scratch);
        Ok(d)
    }

    /// The sandbox, connected on first use (a fully cached build never needs it).
    pub async fn sandbox(&self) -> Result<Arc<Sandbox>> {
        let s = self
            .sandbox
            .get_or_try_init(|| async {
                let exe = std::env::current_exe()
                    .context("cannot find the running `repro` executable for the sandbox init")?;
                let s = Sandbox::connect(self.backend, &self.store, &exe).await?;
                anyhow::Ok(Arc::new(s))
            })
            .await?;
        Ok(s.clone())
    }

    async fn ensure_image(&self, image: ImageDigest) -> Result<()> {
        let cell = {
            let mut map = self
                .images
                .lock()
                .map_err(|_| anyhow!("image table poisoned"))?;
            map.entry(image).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let sandbox = self.sandbox().await?;
            self.reporter.event(&Event::Note(format!(
                "image {image}: loading it into the sandbox if needed"
            )));
            sandbox
                .ensure_image(&self.store, &image)
                .await
                .map_err(anyhow::Error::from)
        })
        .await?;
        Ok(())
    }

    /// Run every step of `plan`.
    ///
    /// A step that fails stops its dependents; the others go on. An error of
    /// the machinery itself (store, daemon) ends the build with `Err`.
    pub async fn run(self: &Arc<Self>, plan: &Plan, opts: BuildOptions) -> Result<BuildReport> {
        self.reporter.event(&Event::BuildStarted {
            steps: plan.steps.len(),
        });
        let mut sched = Scheduler::new(&plan.graph);
        let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
        let mut outputs: BTreeMap<String, TreeDigest> = BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        let jobs = opts.jobs.max(1);
        loop {
            while tasks.len() < jobs && !self.cancel.is_cancelled() {
                let Some(name) = sched.take_ready() else {
                    break;
                };
                let step = plan
                    .steps
                    .get(name)
                    .cloned()
                    .context("planned step missing")?;
                let mut inputs = BTreeMap::new();
                for (mount, src) in &step.inputs {
                    let tree = match src {
                        InputSource::Tree(t) => *t,
                        InputSource::Step(s) => *outputs
                            .get(s)
                            .with_context(|| format!("output of `{s}` missing"))?,
                    };
                    inputs.insert(mount.clone(), tree);
                }
                let engine = Arc::clone(self);
                tasks.spawn(async move {
                    let r = engine.run_step(&step, inputs, opts).await;
                    (step.name.clone(), r)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (name, r) = joined.context("a step task panicked")?;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    self.cancel.cancel();
                    while tasks.join_next().await.is_some() {}
                    if e.is::<crate::exit::Interrupted>() {
                        return Err(e);
                    }
                    return Err(e.context(format!("step `{name}`")));
                }
            };
            let ok = matches!(r.status, StepStatus::Ran | StepStatus::Cached);
            if let Some(o) = r.output {
                outputs.insert(name.clone(), o);
            }
            for skipped in sched.finish(&name, ok) {
                self.reporter.event(&Event::StepSkipped {
                    step: skipped.to_string(),
                    because: name.clone(),
                });
                results.insert(
                    skipped.to_string(),
                    StepResult {
                        name: skipped.to_string(),
                        status: StepStatus::Skipped,
                        key: None,
                        output: None,
                        log: None,
                        duration: Duration::ZERO,
                        reason: Some(format!("`{name}` failed")),
                    },
                );
            }
            results.insert(name, r);
        }
        if self.cancel.is_cancelled() {
            return Err(crate::exit::Interrupted.into());
        }
        let steps = plan
            .graph
            .topo_order()
            .filter_map(|n| results.remove(n))
            .collect();
        Ok(BuildReport { steps })
    }

    async fn run_step(
        &self,
        step: &PlannedStep,
        inputs: BTreeMap<String, TreeDigest>,
        opts: BuildOptions,
    ) -> Result<StepResult> {
        let key = step_key(step, &inputs);
        let store = Arc::clone(&self.store);
        if opts.read_cache {
            let mut hit = blocking(move || Ok(store.ac_get(&key)?)).await?;
            if let (None, Some(remote)) = (&hit, &self.remote) {
                hit = remote
                    .lookup(&key)
                    .await
                    .with_context(|| format!("remote cache lookup of step `{}`", step.name))?;
            }
            if let Some(hit) = hit {
                self.reporter.event(&Event::StepCached {
                    step: step.name.clone(),
                    key,
                    output: hit.output,
                });
                return Ok(StepResult {
                    name: step.name.clone(),
                    status: StepStatus::Cached,
                    key: Some(key),
                    output: Some(hit.output),
                    log: Some(hit.log),
                    duration: Duration::ZERO,
                    reason: None,
                });
            }
        }
        let result = self
            .execute(step, inputs, key, opts.write_cache, &|_, _| {})
            .await?;
        if let (Some(remote), StepStatus::Ran, Some(output), Some(log)) =
            (&self.remote, &result.status, result.output, result.log)
        {
            let ac = ActionResult {
                output,
                log,
                exit_code: 0,
                duration_ms: result.duration.as_millis() as u64,
            };
            remote
                .publish(&key, &ac)
                .await
                .with_context(|| format!("publishing step `{}` to the remote cache", step.name))?;
        }
        Ok(result)
    }

    /// Run `step` in the sandbox on `inputs` (no cache lookup), move its
    /// outputs into the store, and, if `write_cache`, remember the result
    /// under `key`. `adjust` may change the sandbox spec first (`repro
    /// check` uses it to vary the environment on purpose).
    pub async fn execute(
        &self,
        step: &PlannedStep,
        inputs: BTreeMap<String, TreeDigest>,
        key: StepKey,
        write_cache: bool,
        adjust: &(dyn Fn(&mut StepSpec, &mut Variation) + Send + Sync),
    ) -> Result<StepResult> {
        self.ensure_image(step.image).await?;
        let sandbox = self.sandbox().await?;
        self.reporter.event(&Event::StepStarted {
            step: step.name.clone(),
            key,
        });

        // Lay out a fresh scratch area inside the store (same filesystem, so
        // outputs enter the store by rename).
        let store = Arc::clone(&self.store);
        let name = step.name.clone();
        let (scratch, mounts) = blocking(move || {
            let scratch = store.scratch(&format!("step-{name}-"))?;
            let mut mounts = Vec::new();
            std::fs::create_dir(scratch.path().join("in"))?;
            for (mount, tree) in &inputs {
                let dest = scratch.path().join("in").join(mount);
                store.materialize(tree, &dest)?;
                mounts.push(Mount {
                    name: mount.clone(),
                    host: dest,
                });
            }
            let out = scratch.path().join("out");
            std::fs::create_dir(&out)?;
            set_mode(&out, 0o777)?;
            Ok((scratch, mounts))
        })
        .await?;
        let out = scratch.path().join("out");
        let log_path = scratch.path().join("log");
        let mut spec = StepSpec {
            step: step.name.clone(),
            image: step.image,
            argv: step.argv.clone(),
            env: step.env.clone(),
            inputs: mounts,
            output: out.clone(),
            log: log_path.clone(),
            limits: step.limits.clone(),
        };
        let mut variation = Variation::default();
        adjust(&mut spec, &mut variation);
        let started = Instant::now();
        let outcome = sandbox
            .run_varied(&spec, &variation, self.cancel.clone())
            .await?;
        let duration = started.elapsed();
        if let Termination::Cancelled = outcome.termination {
            return Err(crate::exit::Interrupted.into());
        }
        let failure = match outcome.termination {
            Termination::Exited(0) => None,
            Termination::Exited(code) => Some(format!("exited with status {code}")),
            Termination::TimedOut => {
                Some(format!("timed out after {}", humanize(step.limits.timeout)))
            }
            Termination::OutOfMemory => Some("killed: out of memory".to_string()),
            Termination::Cancelled => Some("interrupted".to_string()),
        };
        let failure = match failure {
            Some(f) => Some(f),
            None => check_outputs(&out, &step.outputs).err(),
        };
        let store = Arc::clone(&self.store);
        let tail = log_tail(&log_path, 20);
        let exit_code = match outcome.termination {
            Termination::Exited(c) => c,
            _ => -1,
        };
        let failed = failure.is_some();
        let (log, output) = blocking(move || {
            if !log_path.exists() {
                std::fs::write(&log_path, b"")?;
            }
            let (log, _) = store.put_file_move(&log_path)?;
            if failed {
                return Ok((log, None));
            }
            let output = store.snapshot_dir(&out, Ingest::Move)?;
            if write_cache {
                store.ac_put(
                    &key,
                    &ActionResult {
                        output,
                        log,
                        exit_code,
                        duration_ms: duration.as_millis() as u64,
                    },
                )?;
            }
            drop(scratch);
            Ok((log, Some(output)))
        })
        .await?;
        match (failure, output) {
            (None, Some(output)) => {
                self.reporter.event(&Event::StepSucceeded {
                    step: step.name.clone(),
                    key,
                    output,
                    duration,
                });
                Ok(StepResult {
                    name: step.name.clone(),
                    status: StepStatus::Ran,
                    key: Some(key),
                    output: Some(output),
                    log: Some(log),
                    duration,
                    reason: None,
                })
            }
            (reason, _) => {
                let reason = reason.unwrap_or_else(|| "failed".into());
                self.reporter.event(&Event::StepFailed {
                    step: step.name.clone(),
                    reason: format!("{reason} (full log: {log})"),
                    log_tail: tail,
                });
                Ok(StepResult {
                    name: step.name.clone(),
                    status: StepStatus::Failed,
                    key: Some(key),
                    output: None,
                    log: Some(log),
                    duration,
                    reason: Some(reason),
                })
            }
        }
    }
}

/// The key of `step` run on `inputs`.
pub fn step_key(step: &PlannedStep, inputs: &BTreeMap<String, TreeDigest>) -> StepKey {
    KeyMaterial {
        policy_version: repro_sandbox::POLICY_VERSION,
        image: step.image,
        argv: step.argv.clone(),
        env: step.env.clone(),
        inputs: inputs.clone(),
        outputs: step.outputs.clone(),
    }
    .key()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a store task panicked")?
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The last `n` lines of a log file (lossy UTF-8).
pub fn log_tail(path: &Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Check that `out` holds exactly the declared outputs: every declared path
/// exists (a directory when written with a trailing `/`), and nothing else
/// is there.
pub fn check_outputs(out: &Path, declared: &[String]) -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    let mut dirs = BTreeSet::new();
    let mut files = BTreeSet::new();
    for d in declared {
        let (path, is_dir) = match d.strip_suffix('/') {
            Some(p) => (p, true),
            None => (d.as_str(), false),
        };
        let full = out.join(path);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if is_dir && !m.is_dir() => {
                return Err(format!("declared output `{d}` is not a directory"));
            }
            Ok(m) if !is_dir && m.is_dir() => {
                return Err(format!(
                    "declared output `{d}` is a directory\nhint: declare it as `{d}/`"
                ));
            }
            Ok(_) => {}
            Err(_) => missing.push(format!("`{d}`")),
        }
        if is_dir {
            dirs.insert(PathBuf::from(path));
        } else {
            files.insert(PathBuf::from(path));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the step did not write its declared output{} {}",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        ));
    }
    let mut extra = Vec::new();
    walk_undeclared(out, Path::new(""), &dirs, &files, &mut extra);
    if !extra.is_empty() {
        extra.sort();
        return Err(format!(
            "the step wrote undeclared output{} {}\nhint: add {} to the step's `outputs`, or write scratch files to /tmp",
            if extra.len() > 1 { "s" } else { "" },
            extra.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "),
            if extra.len() > 1 { "them" } else { "it" },
        ));
    }
    Ok(())
}

fn walk_undeclared(
    root: &Path,
    rel: &Path,
    dirs: &BTreeSet<PathBuf>,
    files: &BTreeSet<PathBuf>,
    extra: &mut Vec<String>,
) {
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in rd.flatten() {
        let p = rel.join(entry.file_name());
        if dirs.contains(&p) || files.contains(&p) {
            continue;
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        // A directory on the way to a declared output is fine.
        let leads_somewhere = is_dir && dirs.iter().chain(files.iter()).any(|d| d.starts_with(&p));
        if leads_somewhere {
            walk_undeclared(root, &p, dirs, files, extra);
        } else {
            extra.push(p.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_must_match_the_declaration() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("model.pkl"), b"m").unwrap();
        std::fs::create_dir_all(out.join("reports/deep")).unwrap();
        std::fs::write(out.join("reports/deep/a.json"), b"{}").unwrap();
        std::fs::create_dir_all(out.join("nested/x")).unwrap();
        std::fs::write(out.join("nested/x/y.txt"), b"y").unwrap();
        let declared = vec![
            "model.pkl".to_string(),
            "reports/".into(),
            "nested/x/y.txt".into(),
        ];
        assert_eq!(check_outputs(out, &declared), Ok(()));

        std::fs::write(out.join("stray.tmp"), b"").unwrap();
        std::fs::write(out.join("nested/z.txt"), b"").unwrap();
        let err = check_outputs(out, &declared).unwrap_err();
        assert!(
            err.starts_with("the step wrote undeclared outputs `nested/z.txt`, `stray.tmp`"),
            "{err}"
        );

        let err = check_outputs(out, &["missing.bin".to_string()]).unwrap_err();
        assert_eq!(
            err,
            "the step did not write its declared output `missing.bin`"
        );
        let err = check_outputs(out, &["reports".to_string()]).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
    }

    /// The recipe format refuses exactly the variables the sandbox fixes
    /// (the two crates cannot share the list: neither depends on the other).
    #[test]
    fn recipes_refuse_exactly_the_variables_the_sandbox_fixes() {
        let recipes: BTreeSet<&str> = repro_recipes::SANDBOX_FIXED_ENV.iter().copied().collect();
        let sandbox: BTreeSet<&str> = repro_sandbox::FIXED_ENV_NAMES.iter().copied().collect();
        assert_eq!(recipes, sandbox);
        let base = repro_sandbox::base_env(0, 0, 1);
        assert_eq!(
            base.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            sandbox
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(
            &p,
            (1..=30).map(|i| format!("line {i}\n")).collect::<String>(),
        )
        .unwrap();
        let tail = log_tail(&p, 3);
        assert_eq!(tail, "line 28\nline 29\nline 30");
    }
}
