//! Executes a planned build: computes step keys, consults the action cache,
//! runs missing steps in the sandbox, and moves their outputs into the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use repro_dag::{Graph, KeyMaterialRef, Scheduler};
use repro_recipes::{InputRef, Pins, Recipe};
use repro_sandbox::{
    Backend, BackendKind, DockerSandbox, Gpus, Limits, Mount, Sandbox, StepSpec, Termination,
    Variation,
};
use repro_store::{
    ActionResult, BlobDigest, FileEntry, ImageDigest, Ingest, StepKey, Store, TreeDigest,
};
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

/// A step taken from the scheduler, with its inputs and key.
struct Ready<'p> {
    step: &'p PlannedStep,
    inputs: BTreeMap<String, TreeDigest>,
    key: StepKey,
}

impl<'p> Ready<'p> {
    /// Step `name` of `plan`, the outputs of the steps it uses taken from
    /// `outputs` (they have all finished).
    fn new(plan: &'p Plan, name: &str, outputs: &BTreeMap<String, TreeDigest>) -> Result<Self> {
        let step = plan.steps.get(name).context("planned step missing")?;
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
        let key = step_key(step, &inputs);
        Ok(Ready { step, inputs, key })
    }
}

/// A local cache hit: the result and the output's files by path.
type LocalHit = (ActionResult, Arc<BTreeMap<String, FileEntry>>);

/// Lookups per thread below which a batch is not split among threads
/// (starting a thread costs about as much as a few dozen lookups).
const PARALLEL_LOOKUPS: usize = 64;

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
        anyhow::Error::new(repro_evidence::exit::UserError(out))
    })
}

impl Plan {
    /// Plan `recipe` with `pins`. Fails on a cycle, a missing pin or a bad substitution.
    pub fn new(recipe: &Recipe, pins: &Pins) -> Result<Plan> {
        Plan::with_graph(recipe, pins, check_graph(recipe)?)
    }

    /// [`Plan::new`] with the recipe's graph built already by
    /// [`check_graph`] (which need not run twice on a big recipe).
    pub fn with_graph(recipe: &Recipe, pins: &Pins, graph: Graph) -> Result<Plan> {
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
                        gpus: s.limits.gpus.as_ref().map(|g| Gpus {
                            kind: g.kind.clone(),
                            count: g.count,
                        }),
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
    /// The output's files by path, when the engine has read them already
    /// (local cache hits); see [`StepResult::files`].
    pub files: Option<Arc<BTreeMap<String, FileEntry>>>,
    /// Where it ran when the backend handed it elsewhere (a Slurm job and
    /// its node); `None` for a local run or a cache hit.
    pub ran_on: Option<String>,
    /// The ids of the jobs the step was handed to, oldest first (more than
    /// one when its node failed and it was submitted again); empty for a
    /// local run or a cache hit.
    pub job_ids: Vec<String>,
    /// Each earlier attempt's end, oldest first, as the backend told it
    /// (`slurm job 41 on node-3 ended NODE_FAIL: node failed; submitting
    /// again (attempt 2 of 2)`); empty when the first attempt was the last.
    pub retries: Vec<String>,
}

impl StepResult {
    /// The output's files by path (as [`Store::flatten`] gives them), or
    /// `None` without an output. Reads the tree objects only when the
    /// engine has not already.
    pub fn files(&self, store: &Store) -> Result<Option<Arc<BTreeMap<String, FileEntry>>>> {
        if let Some(f) = &self.files {
            return Ok(Some(Arc::clone(f)));
        }
        match self.output {
            Some(o) => Ok(Some(Arc::new(store.flatten(&o)?))),
            None => Ok(None),
        }
    }

    /// The wall time in the sandbox in milliseconds, to the microsecond
    /// (for JSON reports).
    pub fn duration_ms(&self) -> f64 {
        duration_ms(self.duration)
    }
}

/// `d` in milliseconds, to the microsecond.
pub fn duration_ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
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
    sandbox: OnceCell<Arc<dyn Backend>>,
    images: Mutex<HashMap<ImageDigest, Arc<OnceCell<()>>>>,
    cancel: CancellationToken,
    /// A remote action cache (`build --remote`), asked after a local miss.
    remote: Option<Arc<dyn crate::remote::RemoteCache>>,
    /// Where images named in a registry are pulled from.
    images_from: Option<Arc<dyn crate::remote::ImageSource>>,
    /// The steps already warned of running without the GPUs they ask for.
    gpus_warned: Mutex<BTreeSet<String>>,
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
            images_from: None,
            gpus_warned: Mutex::new(BTreeSet::new()),
        }
    }

    /// An engine running steps on `backend`, already connected (a test's
    /// fake, or a sandbox set up by the caller).
    pub fn with_backend(
        store: Arc<Store>,
        backend: Arc<dyn Backend>,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Self {
        let engine = Engine::new(store, backend.kind(), reporter, cancel);
        // A fresh cell: it cannot be full already.
        let _ = engine.sandbox.set(backend);
        engine
    }

    /// Also take cache hits from (and publish results to) `remote`.
    pub fn with_remote(mut self, remote: Option<Arc<dyn crate::remote::RemoteCache>>) -> Self {
        self.remote = remote;
        self
    }

    /// Pull images named `host/repo@sha256:...` from `source`.
    pub fn with_image_source(
        mut self,
        source: Option<Arc<dyn crate::remote::ImageSource>>,
    ) -> Self {
        self.images_from = source;
        self
    }

    /// Where images named in a registry are pulled from, if anywhere.
    pub fn image_source(&self) -> Option<&Arc<dyn crate::remote::ImageSource>> {
        self.images_from.as_ref()
    }

    /// The sandbox backend steps run on.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Report the steps of `report` (every one cached, in topological
    /// order, as the build memo gives them) as a build's.
    pub fn replay(&self, report: &BuildReport) {
        self.reporter.event(&Event::BuildStarted {
            steps: report.steps.len(),
        });
        for s in &report.steps {
            if let (Some(key), Some(output)) = (s.key, s.output) {
                self.reporter.event(&Event::StepCached {
                    step: s.name.clone(),
                    key,
                    output,
                });
            }
        }
    }

    /// The store.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// The reporter.
    pub fn reporter(&self) -> &dyn Reporter {
        &*self.reporter
    }

    /// The sandbox backend and its version, for the record; only the
    /// backend's name when it was never connected (a fully cached build).
    pub async fn backend_description(&self) -> String {
        let name = self.backend.name();
        match self.sandbox.get() {
            Some(s) => match s.describe().await {
                Ok(info) => format!(
                    "{} {} (API {})",
                    info.backend, info.server_version, info.api_version
                ),
                Err(_) => name.to_string(),
            },
            None => format!("{name} (not started: every step was cached)"),
        }
    }

    /// Export an image from the Docker daemon by tag and import it into the store.
    pub async fn import_tag(&self, tag: &str) -> Result<ImageDigest> {
        self.save_tag(tag, true).await
    }

    /// The manifest digest [`Engine::import_tag`] would give, without
    /// registering the image (see [`repro_toolchains::archive_digest`]).
    pub async fn tag_digest(&self, tag: &str) -> Result<ImageDigest> {
        self.save_tag(tag, false).await
    }

    async fn save_tag(&self, tag: &str, register: bool) -> Result<ImageDigest> {
        let sandbox = DockerSandbox::connect().await?;
        let scratch = self.store.scratch("docker-save-")?;
        let archive = scratch.path().join("image.tar");
        sandbox.save_image(tag, &archive).await?;
        let store = Arc::clone(&self.store);
        let d = tokio::task::spawn_blocking(move || {
            if register {
                repro_toolchains::import_archive(&store, &archive)
            } else {
                repro_toolchains::archive_digest(&store, &archive)
            }
        })
        .await??;
        drop(scratch);
        Ok(d)
    }

    /// The sandbox, connected on first use (a fully cached build never needs it).
    pub async fn sandbox(&self) -> Result<Arc<dyn Backend>> {
        let s = self
            .sandbox
            .get_or_try_init(|| async {
                let exe = std::env::current_exe()
                    .context("cannot find the running `repro` executable for the sandbox init")?;
                let s = Sandbox::connect(self.backend, &self.store, &exe).await?;
                anyhow::Ok(Arc::new(s) as Arc<dyn Backend>)
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
    ///
    /// When reading the cache, every step whose inputs are known is looked
    /// up in the local action cache at once, in the scheduling loop, not in
    /// a task of its own: a lookup is a few small file reads (the action
    /// cache entry, the output's tree objects, and an existence check of
    /// each blob, see [`Store::ac_lookup`]), far cheaper than handing each
    /// step to a task and back. A batch of many lookups (a wide level of
    /// the graph) is shared among up to `jobs` threads (see
    /// `Engine::lookup_all`). A hit finishes its step at once, which may
    /// make more steps ready for the next batch. Only steps that miss (or
    /// must ask a remote cache) become tasks, at most `jobs` at a time, in
    /// topological order.
    pub async fn run(self: &Arc<Self>, plan: &Plan, opts: BuildOptions) -> Result<BuildReport> {
        self.reporter.event(&Event::BuildStarted {
            steps: plan.steps.len(),
        });
        let mut sched = Scheduler::new(&plan.graph);
        let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
        let mut outputs: BTreeMap<String, TreeDigest> = BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        // Steps whose lookup missed, waiting for a free slot.
        let mut waiting: VecDeque<Ready> = VecDeque::new();
        let jobs = opts.jobs.max(1);
        loop {
            if opts.read_cache {
                loop {
                    let mut batch = Vec::new();
                    while !self.cancel.is_cancelled() {
                        let Some(name) = sched.take_ready() else {
                            break;
                        };
                        batch.push(Ready::new(plan, name, &outputs)?);
                    }
                    if batch.is_empty() {
                        break;
                    }
                    let keys: Vec<StepKey> = batch.iter().map(|r| r.key).collect();
                    let found = self.lookup_all(&keys, jobs);
                    for (ready, found) in batch.into_iter().zip(found) {
                        match found {
                            Ok(Some((hit, files))) => {
                                let r = self.cached(ready.step, ready.key, hit, Some(files));
                                // A success never skips anything.
                                sched.finish(&r.name, true);
                                if let Some(o) = r.output {
                                    outputs.insert(r.name.clone(), o);
                                }
                                results.insert(r.name.clone(), r);
                            }
                            Ok(None) => waiting.push_back(ready),
                            // A damaged output is never taken: the step runs
                            // again, and its output replaces the damaged blob
                            // if it gives the same bytes.
                            Err(e) if is_damage(&e) => {
                                self.reporter.event(&Event::Warning(format!(
                                    "the cached result of step `{}` is not used: {e:#}; running the step again",
                                    ready.step.name
                                )));
                                waiting.push_back(ready);
                            }
                            Err(e) => {
                                self.cancel.cancel();
                                while tasks.join_next().await.is_some() {}
                                return Err(e.context(format!("step `{}`", ready.step.name)));
                            }
                        }
                    }
                }
            }
            while tasks.len() < jobs && !self.cancel.is_cancelled() {
                let ready = match waiting.pop_front() {
                    Some(r) => r,
                    None if opts.read_cache => break,
                    None => match sched.take_ready() {
                        Some(name) => Ready::new(plan, name, &outputs)?,
                        None => break,
                    },
                };
                let Ready { step, inputs, key } = ready;
                let step = step.clone();
                let engine = Arc::clone(self);
                tasks.spawn(async move {
                    let r = engine.run_step(&step, inputs, key, opts).await;
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
                    if e.is::<repro_evidence::exit::Interrupted>() {
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
                        files: None,
                        ran_on: None,
                        job_ids: Vec::new(),
                        retries: Vec::new(),
                    },
                );
            }
            results.insert(name, r);
        }
        if self.cancel.is_cancelled() {
            return Err(repro_evidence::exit::Interrupted.into());
        }
        let steps = plan
            .graph
            .topo_order()
            .filter_map(|n| results.remove(n))
            .collect();
        Ok(BuildReport { steps })
    }

    /// Look up `keys` in the local action cache, the results in the same
    /// order. Fewer than [`PARALLEL_LOOKUPS`] keys are looked up right here;
    /// more are split into contiguous runs among up to `jobs` threads (at
    /// most the machine's cores): each lookup is independent and mostly
    /// waits on the kernel (opening and reading small files).
    fn lookup_all(&self, keys: &[StepKey], jobs: usize) -> Vec<Result<Option<LocalHit>>> {
        let lookup = |key: &StepKey| -> Result<Option<LocalHit>> {
            Ok(self
                .store
                .ac_lookup(key)?
                .map(|(hit, files)| (hit, Arc::new(files))))
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = jobs.min(cores).min(keys.len() / PARALLEL_LOOKUPS);
        if threads <= 1 {
            return keys.iter().map(lookup).collect();
        }
        let per_thread = keys.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut chunks = keys.chunks(per_thread);
            // This thread takes the first run itself.
            let first = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks
                .map(|chunk| scope.spawn(move || chunk.iter().map(lookup).collect::<Vec<_>>()))
                .collect();
            let mut all: Vec<_> = first.iter().map(lookup).collect();
            for handle in others {
                match handle.join() {
                    Ok(found) => all.extend(found),
                    // Only a bug panics here; carry it on.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            all
        })
    }

    fn cached(
        &self,
        step: &PlannedStep,
        key: StepKey,
        hit: ActionResult,
        files: Option<Arc<BTreeMap<String, FileEntry>>>,
    ) -> StepResult {
        self.reporter.event(&Event::StepCached {
            step: step.name.clone(),
            key,
            output: hit.output,
        });
        StepResult {
            name: step.name.clone(),
            status: StepStatus::Cached,
            key: Some(key),
            output: Some(hit.output),
            log: Some(hit.log),
            duration: Duration::ZERO,
            reason: None,
            files,
            ran_on: None,
            job_ids: Vec::new(),
            retries: Vec::new(),
        }
    }

    /// A step the local cache does not have: ask the remote cache (when
    /// reading the cache), else run it.
    async fn run_step(
        &self,
        step: &PlannedStep,
        inputs: BTreeMap<String, TreeDigest>,
        key: StepKey,
        opts: BuildOptions,
    ) -> Result<StepResult> {
        if let (true, Some(remote)) = (opts.read_cache, &self.remote) {
            let hit = remote
                .lookup(&key)
                .await
                .with_context(|| format!("remote cache lookup of step `{}`", step.name))?;
            if let Some(hit) = hit {
                return Ok(self.cached(step, key, hit, None));
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
        self.warn_without_gpus(step, &*sandbox);
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
                    tree: Some(*tree),
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
        // The jobs the backend handed the step to, as it tells of them.
        let job_ids = std::sync::Mutex::new(Vec::<String>::new());
        let retries = std::sync::Mutex::new(Vec::<String>::new());
        let progress = |p: repro_sandbox::JobProgress| {
            if let Ok(mut ids) = job_ids.lock() {
                if !ids.contains(&p.job) {
                    ids.push(p.job.clone());
                }
            }
            if p.state == repro_sandbox::JobState::Retrying {
                if let Ok(mut r) = retries.lock() {
                    r.push(p.detail.clone());
                }
            }
            self.reporter.event(&Event::StepPlacement {
                step: step.name.clone(),
                progress: p,
            });
        };
        let outcome = sandbox
            .run_observed(&spec, &variation, self.cancel.clone(), &progress)
            .await?;
        let job_ids = job_ids.into_inner().unwrap_or_default();
        let retries = retries.into_inner().unwrap_or_default();
        let duration = started.elapsed();
        if let Termination::Cancelled = outcome.termination {
            return Err(repro_evidence::exit::Interrupted.into());
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
            let output = if write_cache {
                store.snapshot_dir(&out, Ingest::Move)?
            } else {
                // Not cached (verify, check): an output the store holds
                // already needs no move. Hash it in place once; if the
                // store has that tree complete, the scratch copy goes
                // with the scratch directory. Moving it in would hash it
                // again, fsync it, and re-hash the stored copy.
                let d = repro_store::hash_dir(&out)?;
                if store.tree_is_complete(&d)? {
                    d
                } else {
                    store.snapshot_dir(&out, Ingest::Move)?
                }
            };
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
                    files: None,
                    ran_on: sandbox.placement(&step.name),
                    job_ids,
                    retries: retries.clone(),
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
                    files: None,
                    ran_on: sandbox.placement(&step.name),
                    job_ids,
                    retries: retries.clone(),
                })
            }
        }
    }

    /// A step that asks for GPUs runs on a backend that allocates none
    /// (the local sandboxes): not an error, the step runs without them
    /// (like its other limits, they are not part of its key), but the
    /// user hears of it, once per step, even with `--quiet` or `--json`.
    fn warn_without_gpus(&self, step: &PlannedStep, sandbox: &dyn Backend) {
        let Some(gpus) = &step.limits.gpus else {
            return;
        };
        if sandbox.allocates_gpus() {
            return;
        }
        let first = self
            .gpus_warned
            .lock()
            .map(|mut w| w.insert(step.name.clone()))
            .unwrap_or(true);
        if first {
            self.reporter.event(&Event::Warning(format!(
                "step `{}` asks for {} GPU{} (`gpus = {}`), but the local {} sandbox gives it no GPU: it runs without one (`--executor slurm` asks the cluster for them)",
                step.name,
                gpus.count,
                if gpus.count == 1 { "" } else { "s" },
                match &gpus.kind {
                    Some(_) => format!("\"{gpus}\""),
                    None => gpus.to_string(),
                },
                sandbox.kind().name(),
            )));
        }
    }
}

/// Whether `e` says that a store object is corrupt (as opposed to an
/// error of the machinery: a full disk, a permission).
fn is_damage(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<repro_store::Error>(),
        Some(repro_store::Error::Corrupt { .. })
    )
}

/// The key of `step` run on `inputs`.
pub fn step_key(step: &PlannedStep, inputs: &BTreeMap<String, TreeDigest>) -> StepKey {
    KeyMaterialRef {
        policy_version: repro_sandbox::POLICY_VERSION,
        image: &step.image,
        argv: &step.argv,
        env: &step.env,
        inputs,
        outputs: &step.outputs,
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

    struct Silent;
    impl Reporter for Silent {
        fn event(&self, _: &Event) {}
    }

    /// A one-step plan whose result is put in the action cache by hand.
    fn cached_plan(store: &Store) -> (Plan, TreeDigest) {
        let step = PlannedStep {
            name: "train".into(),
            image: ImageDigest::from_hash(repro_store::Hash::of(b"no such image")),
            argv: vec!["true".into()],
            env: BTreeMap::new(),
            inputs: BTreeMap::new(),
            outputs: vec!["model.bin".into()],
            limits: Limits {
                memory_bytes: None,
                cpus: None,
                timeout: Duration::from_secs(60),
                pids: 512,
                gpus: None,
            },
        };
        let out = store.scratch("out-").unwrap();
        std::fs::write(out.path().join("model.bin"), b"weights").unwrap();
        let output = store.snapshot_dir(out.path(), Ingest::Move).unwrap();
        let log = store.put_bytes(b"trained\n").unwrap();
        let key = step_key(&step, &BTreeMap::new());
        store
            .ac_put(
                &key,
                &ActionResult {
                    output,
                    log,
                    exit_code: 0,
                    duration_ms: 5,
                },
            )
            .unwrap();
        let graph = Graph::new([("train", Vec::<String>::new())]).unwrap();
        let plan = Plan {
            steps: BTreeMap::from([("train".to_string(), step)]),
            graph,
        };
        (plan, output)
    }

    /// A complete cached result is taken without the sandbox, with its
    /// files listed; once a blob of it is gone from the store it is not
    /// taken any more: the engine goes to run the step (which fails here,
    /// the image being absent) instead of accepting the hole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_step_with_a_missing_blob_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (plan, output) = cached_plan(&store);
        let engine = Arc::new(Engine::new(
            Arc::clone(&store),
            BackendKind::Native,
            Arc::new(Silent),
            CancellationToken::new(),
        ));
        let opts = BuildOptions {
            jobs: 2,
            read_cache: true,
            write_cache: true,
        };
        let report = engine.run(&plan, opts).await.unwrap();
        let step = &report.steps[0];
        assert_eq!(step.status, StepStatus::Cached);
        assert_eq!(step.output, Some(output));
        assert_eq!(step.duration_ms(), 0.0);
        let files = step.files(&store).unwrap().unwrap();
        assert_eq!(*files, store.flatten(&output).unwrap());
        assert!(engine.sandbox.get().is_none(), "the sandbox was started");

        let weights = repro_store::BlobDigest::from_hash(repro_store::Hash::of(b"weights"));
        std::fs::remove_file(store.blob_path(&weights)).unwrap();
        let engine = Arc::new(Engine::new(
            Arc::clone(&store),
            BackendKind::Native,
            Arc::new(Silent),
            CancellationToken::new(),
        ));
        match engine.run(&plan, opts).await {
            Ok(r) => assert_ne!(r.steps[0].status, StepStatus::Cached, "{:?}", r.steps),
            Err(e) => assert!(format!("{e:#}").contains("train"), "{e:#}"),
        }
    }

    /// A fully cached build never starts the sandbox; its record still
    /// names the backend it was built for, not another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unstarted_sandbox_is_described_by_its_own_backend() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        for (kind, name) in [
            (BackendKind::Native, "native"),
            (BackendKind::Docker, "docker"),
        ] {
            let engine = Engine::new(
                Arc::clone(&store),
                kind,
                Arc::new(Silent),
                CancellationToken::new(),
            );
            let d = engine.backend_description().await;
            assert_eq!(d, format!("{name} (not started: every step was cached)"));
        }
    }

    /// Keeps the warnings it is given.
    #[derive(Default)]
    struct Warnings(Mutex<Vec<String>>);
    impl Reporter for Warnings {
        fn event(&self, e: &Event) {
            if let Event::Warning(n) = e {
                self.0.lock().unwrap().push(n.clone());
            }
        }
    }

    /// A cached result whose output blob was altered in place (after an
    /// earlier hit stamped it) is not taken: the engine says so, naming
    /// the blob, and goes to run the step (which fails here, the image
    /// being absent) instead of vouching for the altered bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_step_with_a_corrupt_blob_is_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (plan, _) = cached_plan(&store);
        let opts = BuildOptions {
            jobs: 2,
            read_cache: true,
            write_cache: true,
        };
        let engine = |notes: Arc<Warnings>| {
            Arc::new(Engine::new(
                Arc::clone(&store),
                BackendKind::Native,
                notes,
                CancellationToken::new(),
            ))
        };
        let report = engine(Arc::default()).run(&plan, opts).await.unwrap();
        assert_eq!(report.steps[0].status, StepStatus::Cached);

        let weights = repro_store::BlobDigest::from_hash(repro_store::Hash::of(b"weights"));
        let path = store.blob_path(&weights);
        std::fs::set_permissions(
            &path,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(&path, b"weightz").unwrap();
        let notes = Arc::new(Warnings::default());
        match engine(Arc::clone(&notes)).run(&plan, opts).await {
            Ok(r) => assert_ne!(r.steps[0].status, StepStatus::Cached, "{:?}", r.steps),
            Err(e) => assert!(format!("{e:#}").contains("train"), "{e:#}"),
        }
        let notes = notes.0.lock().unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("`train` is not used") && n.contains(&weights.to_string())),
            "{notes:?}"
        );
    }

    /// A wide graph, all cached: 300 independent steps (looked up by
    /// several threads at once), then 300 steps each using one of them.
    /// Every step gets its own output and key, in topological order, with
    /// no sandbox; a step whose entry is gone is then not taken from the
    /// cache, and the others still are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wide_cached_graph_is_looked_up_in_parallel_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let limits = Limits {
            memory_bytes: None,
            cpus: None,
            timeout: Duration::from_secs(60),
            pids: 512,
            gpus: None,
        };
        let n = 300;
        let mut steps = BTreeMap::new();
        let mut deps = Vec::new();
        let mut want = BTreeMap::new();
        let mut outputs = BTreeMap::new();
        // First the roots, then their users: a user's key needs its root's output.
        for (i, name) in (0..2 * n).map(|i| (i, format!("s{i:04}"))) {
            let inputs: BTreeMap<String, InputSource> = if i < n {
                BTreeMap::new()
            } else {
                BTreeMap::from([(
                    "in".to_string(),
                    InputSource::Step(format!("s{:04}", i - n)),
                )])
            };
            let step = PlannedStep {
                name: name.clone(),
                image: ImageDigest::from_hash(repro_store::Hash::of(b"no such image")),
                argv: vec!["echo".into(), name.clone()],
                env: BTreeMap::new(),
                inputs: inputs.clone(),
                outputs: vec!["o".into()],
                limits: limits.clone(),
            };
            let resolved = inputs
                .values()
                .map(|src| match src {
                    InputSource::Step(s) => ("in".to_string(), outputs[s]),
                    InputSource::Tree(t) => ("in".to_string(), *t),
                })
                .collect();
            let out = store.scratch("out-").unwrap();
            std::fs::write(out.path().join("o"), name.as_bytes()).unwrap();
            let output = store.snapshot_dir(out.path(), Ingest::Move).unwrap();
            let log = store
                .put_bytes(format!("log of {name}").as_bytes())
                .unwrap();
            let key = step_key(&step, &resolved);
            let r = ActionResult {
                output,
                log,
                exit_code: 0,
                duration_ms: 1,
            };
            store.ac_put(&key, &r).unwrap();
            outputs.insert(name.clone(), output);
            want.insert(name.clone(), (key, output));
            let d: Vec<String> = match inputs.values().next() {
                Some(InputSource::Step(s)) => vec![s.clone()],
                _ => vec![],
            };
            deps.push((name.clone(), d));
            steps.insert(name, step);
        }
        let plan = Plan {
            steps,
            graph: Graph::new(deps).unwrap(),
        };
        let engine = Arc::new(Engine::new(
            Arc::clone(&store),
            BackendKind::Native,
            Arc::new(Silent),
            CancellationToken::new(),
        ));
        let opts = BuildOptions {
            jobs: 4,
            read_cache: true,
            write_cache: true,
        };
        let report = engine.run(&plan, opts).await.unwrap();
        assert!(engine.sandbox.get().is_none(), "the sandbox was started");
        let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
        let order: Vec<&str> = plan.graph.topo_order().collect();
        assert_eq!(names, order);
        assert_eq!(report.steps.len(), 2 * n);
        for s in &report.steps {
            let (key, output) = want[&s.name];
            assert_eq!(s.status, StepStatus::Cached, "{}", s.name);
            assert_eq!((s.key, s.output), (Some(key), Some(output)), "{}", s.name);
            let files = s.files(&store).unwrap().unwrap();
            assert_eq!(*files, store.flatten(&output).unwrap(), "{}", s.name);
        }

        // The entry of one user goes: that one step must run (and fails,
        // its image being absent); every other step is still a hit.
        let (gone, _) = want["s0450"];
        std::fs::remove_file(dir.path().join("v1/ac").join(gone.hex())).unwrap();
        let engine = Arc::new(Engine::new(
            Arc::clone(&store),
            BackendKind::Native,
            Arc::new(Silent),
            CancellationToken::new(),
        ));
        match engine.run(&plan, opts).await {
            Ok(r) => {
                for s in &r.steps {
                    assert_eq!(s.status == StepStatus::Cached, s.name != "s0450", "{s:?}");
                }
            }
            Err(e) => assert!(format!("{e:#}").contains("s0450"), "{e:#}"),
        }
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        assert_eq!(duration_ms(Duration::from_nanos(1_234_567_890)), 1234.567);
        assert_eq!(duration_ms(Duration::ZERO), 0.0);
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
