//! A fake sandbox backend and a recording reporter, so that the engine's
//! run, fail, skip, cancel and cache paths can be tested without root or
//! Docker; built only from the public APIs of `repro-sandbox` and
//! `repro-engine`.
//!
//! The fake follows a [`Script`] per step name: optionally wait (for the
//! build's cancellation, at a barrier, or for a while), then write the
//! script's output files and log line, and exit with the script's code. It
//! counts its calls per step, keeps every [`StepSpec`] it was given, and
//! records how many steps it was running at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use repro_engine::engine::{BuildOptions, BuildReport, Engine, Plan};
use repro_engine::events::{Event, Reporter};
use repro_recipes::Pins;
use repro_sandbox::{
    Backend, BackendInfo, BackendKind, Error, JobProgress, JobState, Outcome, ProgressSink, Result,
    StepSpec, Termination, Variation,
};
use repro_store::{BlobDigest, FileEntry, Hash, ImageDigest, Store, TreeDigest};
use tokio::sync::{Barrier, Notify};
use tokio_util::sync::CancellationToken;

/// What a script does before it writes its outputs.
#[derive(Clone, Default)]
pub enum Wait {
    /// Nothing: write and exit at once.
    #[default]
    Nothing,
    /// Signal `started`, then wait until the build's token fires and
    /// return [`Termination::Cancelled`] (writing nothing).
    ForCancel {
        /// Notified (one permit) once the step is running.
        started: Arc<Notify>,
    },
    /// Wait at this barrier, then go on.
    Barrier(Arc<Barrier>),
    /// Sleep this long, then go on.
    Sleep(Duration),
}

/// What the fake does for one step.
#[derive(Clone, Default)]
pub struct Script {
    /// Files written into `spec.output`: relative path, bytes.
    pub files: Vec<(String, Vec<u8>)>,
    /// Files copied from an input into `spec.output`: (mount, file in the
    /// input, destination in the output), the bytes prefixed by the
    /// step's name (so the output differs from the input).
    pub copies: Vec<(String, String, String)>,
    /// The line written to `spec.log`.
    pub log: String,
    /// The exit code.
    pub code: i32,
    /// What happens first.
    pub wait: Wait,
    /// What the fake tells of where the step stands, as a backend that
    /// hands steps to a scheduler does, before it runs the script.
    pub progress: Vec<JobProgress>,
}

impl Script {
    /// Exit with `code`, writing nothing but a log line.
    pub fn exit(code: i32) -> Script {
        Script {
            code,
            log: format!("exiting with {code}"),
            ..Script::default()
        }
    }

    /// Exit 0 after writing `files`.
    pub fn ok(files: &[(&str, &[u8])]) -> Script {
        let mut s = Script::exit(0);
        for (path, bytes) in files {
            s = s.file(path, bytes);
        }
        s
    }

    /// Also write `bytes` to `path` in the output.
    pub fn file(mut self, path: &str, bytes: &[u8]) -> Script {
        self.files.push((path.to_string(), bytes.to_vec()));
        self
    }

    /// Also copy `file` of input `mount` to `dest` in the output.
    pub fn copy(mut self, mount: &str, file: &str, dest: &str) -> Script {
        self.copies
            .push((mount.to_string(), file.to_string(), dest.to_string()));
        self
    }

    /// Write `line` to the log.
    pub fn log(mut self, line: &str) -> Script {
        self.log = line.to_string();
        self
    }

    /// Do `wait` first.
    pub fn wait(mut self, wait: Wait) -> Script {
        self.wait = wait;
        self
    }

    /// Tell `state` of job `job` first (after any earlier ones).
    pub fn progress(mut self, state: JobState, job: &str) -> Script {
        self.progress.push(JobProgress {
            state,
            job: job.to_string(),
            detail: format!("{state:?} as job {job}"),
        });
        self
    }
}

/// The fake backend (see the module docs).
#[derive(Default)]
pub struct FakeBackend {
    scripts: Mutex<HashMap<String, Script>>,
    ensured: Mutex<HashSet<ImageDigest>>,
    calls: Mutex<BTreeMap<String, usize>>,
    specs: Mutex<Vec<StepSpec>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// What [`Backend::allocates_gpus`] says: `false` (a local sandbox)
    /// unless set.
    allocates_gpus: AtomicBool,
}

/// Counts a run as running until it is dropped (also when the engine drops
/// the run's future).
struct Running<'a>(&'a FakeBackend);

impl<'a> Running<'a> {
    fn start(fake: &'a FakeBackend) -> Self {
        let now = fake.running.fetch_add(1, Ordering::SeqCst) + 1;
        fake.max_running.fetch_max(now, Ordering::SeqCst);
        Running(fake)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

impl FakeBackend {
    /// A fake with no scripts.
    pub fn new() -> Arc<FakeBackend> {
        Arc::new(FakeBackend::default())
    }

    /// Step `step` follows `script` from now on.
    pub fn script(&self, step: &str, script: Script) {
        self.scripts
            .lock()
            .unwrap()
            .insert(step.to_string(), script);
    }

    /// Stand in for a backend that allocates the GPUs a step asks for (a
    /// cluster), or, with `false` (the default), for a local sandbox.
    pub fn set_allocates_gpus(&self, allocates: bool) {
        self.allocates_gpus.store(allocates, Ordering::SeqCst);
    }

    /// How many times step `step` was run.
    pub fn calls(&self, step: &str) -> usize {
        self.calls.lock().unwrap().get(step).copied().unwrap_or(0)
    }

    /// How many runs of any step.
    pub fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }

    /// The specs step `step` was run with, oldest first.
    pub fn specs(&self, step: &str) -> Vec<StepSpec> {
        self.specs
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.step == step)
            .cloned()
            .collect()
    }

    /// The most steps that were running at once.
    pub fn max_concurrency(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    async fn run_script(&self, spec: &StepSpec, cancel: CancellationToken) -> Result<Outcome> {
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&spec.step)
            .cloned()
            .ok_or_else(|| Error::InvalidSpec {
                step: spec.step.clone(),
                why: "the fake backend has no script for this step".to_string(),
            })?;
        let started = Instant::now();
        let cancelled = || Outcome {
            termination: Termination::Cancelled,
            duration: started.elapsed(),
        };
        match &script.wait {
            Wait::Nothing => {}
            Wait::ForCancel { started } => {
                started.notify_one();
                cancel.cancelled().await;
                return Ok(cancelled());
            }
            Wait::Barrier(barrier) => {
                tokio::select! {
                    _ = barrier.wait() => {}
                    _ = cancel.cancelled() => return Ok(cancelled()),
                }
            }
            Wait::Sleep(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(*d) => {}
                    _ = cancel.cancelled() => return Ok(cancelled()),
                }
            }
        }
        std::fs::create_dir_all(&spec.output).map_err(io("create", &spec.output))?;
        std::fs::write(&spec.log, format!("{}\n", script.log)).map_err(io("write", &spec.log))?;
        for (path, bytes) in &script.files {
            let dest = spec.output.join(path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            std::fs::write(&dest, bytes).map_err(io("write", &dest))?;
        }
        for (mount, file, dest) in &script.copies {
            let host: PathBuf = spec
                .inputs
                .iter()
                .find(|m| &m.name == mount)
                .map(|m| m.host.join(file))
                .ok_or_else(|| Error::InvalidSpec {
                    step: spec.step.clone(),
                    why: format!("input `{mount}` is not mounted"),
                })?;
            let mut bytes = format!("{}:", spec.step).into_bytes();
            bytes.extend(std::fs::read(&host).map_err(io("read", &host))?);
            let dest = spec.output.join(dest);
            std::fs::write(&dest, bytes).map_err(io("write", &dest))?;
        }
        Ok(Outcome {
            termination: Termination::Exited(script.code),
            duration: started.elapsed(),
        })
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn ensure_image<'a>(
        &'a self,
        _store: &'a Store,
        image: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.ensured.lock().unwrap().insert(*image);
            Ok(())
        })
    }

    fn run_varied<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            if !variation.is_none() {
                return Err(Error::InvalidSpec {
                    step: spec.step.clone(),
                    why: "the fake backend cannot vary the sandbox".to_string(),
                });
            }
            if !self.ensured.lock().unwrap().contains(&spec.image) {
                return Err(Error::ImageNotEnsured { image: spec.image });
            }
            *self
                .calls
                .lock()
                .unwrap()
                .entry(spec.step.clone())
                .or_default() += 1;
            self.specs.lock().unwrap().push(spec.clone());
            if cancel.is_cancelled() {
                return Ok(Outcome {
                    termination: Termination::Cancelled,
                    duration: Duration::ZERO,
                });
            }
            let _running = Running::start(self);
            self.run_script(spec, cancel).await
        })
    }

    fn allocates_gpus(&self) -> bool {
        self.allocates_gpus.load(Ordering::SeqCst)
    }

    fn run_observed<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
        progress: &'a ProgressSink<'a>,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            let told = self
                .scripts
                .lock()
                .unwrap()
                .get(&spec.step)
                .map(|s| s.progress.clone())
                .unwrap_or_default();
            for p in told {
                progress(p);
            }
            self.run_varied(spec, variation, cancel).await
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<BackendInfo>> {
        Box::pin(async {
            Ok(BackendInfo {
                backend: "fake".to_string(),
                server_version: "0".to_string(),
                api_version: "none".to_string(),
                os: "linux".to_string(),
                arch: "amd64".to_string(),
                kernel_version: "0".to_string(),
            })
        })
    }
}

/// Keeps every event it is given.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Reporter for Recorder {
    fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Recorder {
    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// The text of every [`Event::Warning`].
    pub fn warnings(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Warning(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    /// The steps of the events `pick` recognises, in order.
    pub fn steps(&self, pick: impl Fn(&Event) -> Option<&str>) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| pick(e).map(str::to_string))
            .collect()
    }
}

/// The image every test step runs in (the fake ensures any image).
pub fn image() -> ImageDigest {
    ImageDigest::from_hash(Hash::of(b"fake image"))
}

/// A recipe with toolchain `py` pinned to [`image`], then `steps` (TOML
/// `[[steps]]` tables, each with `toolchain = "py"` added).
pub fn plan(steps: &str) -> Plan {
    let text = format!(
        "[model]\nname = \"m\"\nversion = \"1\"\n\n[toolchains.py]\nimage = \"{}\"\n\n{}",
        image(),
        steps.replace("[[steps]]", "[[steps]]\ntoolchain = \"py\""),
    );
    let recipe = repro_recipes::parse_str(Path::new("/nonexistent/model.toml"), &text)
        .unwrap_or_else(|e| panic!("recipe does not parse: {e}\n{text}"));
    let pins = Pins {
        toolchains: BTreeMap::from([("py".to_string(), image())]),
        ..Pins::default()
    };
    Plan::new(&recipe, &pins).expect("plan")
}

/// Build options.
pub fn opts(jobs: usize, read_cache: bool, write_cache: bool) -> BuildOptions {
    BuildOptions {
        jobs,
        read_cache,
        write_cache,
    }
}

/// A store in a temporary directory and a fake backend.
pub struct Harness {
    /// Keeps the store's directory (removed when the harness goes).
    _dir: tempfile::TempDir,
    /// The store.
    pub store: Arc<Store>,
    /// The fake, shared by every engine of the harness.
    pub fake: Arc<FakeBackend>,
}

impl Harness {
    /// A fresh store and a fake with no scripts.
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("store")).expect("store"));
        Harness {
            _dir: dir,
            store,
            fake: FakeBackend::new(),
        }
    }

    /// An engine on the fake, reporting to `reporter`, stopped by `cancel`.
    pub fn engine(&self, reporter: Arc<Recorder>, cancel: CancellationToken) -> Arc<Engine> {
        Arc::new(Engine::with_backend(
            Arc::clone(&self.store),
            Arc::clone(&self.fake) as Arc<dyn Backend>,
            reporter,
            cancel,
        ))
    }

    /// Run `plan` on a fresh engine; the report and what was reported.
    pub async fn run(
        &self,
        plan: &Plan,
        opts: BuildOptions,
    ) -> (anyhow::Result<BuildReport>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let engine = self.engine(Arc::clone(&recorder), CancellationToken::new());
        let report = tokio::time::timeout(Duration::from_secs(30), engine.run(plan, opts))
            .await
            .expect("the build did not finish within 30 s");
        (report, recorder)
    }

    /// The bytes of file `path` of output tree `tree`, read back from the
    /// store.
    pub fn read(&self, tree: &TreeDigest, path: &str) -> Vec<u8> {
        let files = self.store.flatten(tree).expect("flatten");
        match files.get(path) {
            Some(FileEntry::File { digest, .. }) => self.store.read_blob(digest).expect("blob"),
            other => panic!("`{path}` in {tree}: {other:?} (files: {files:?})"),
        }
    }

    /// The digest of file `path` of output tree `tree`.
    pub fn blob(&self, tree: &TreeDigest, path: &str) -> BlobDigest {
        match self.store.flatten(tree).expect("flatten").get(path) {
            Some(FileEntry::File { digest, .. }) => *digest,
            other => panic!("`{path}` in {tree}: {other:?}"),
        }
    }
}
