//! The native backend: Linux namespaces, no daemon. The same contract as
//! the Docker backend (see the crate docs), so a step's key and output do
//! not depend on the backend.
//!
//! # How a step runs
//!
//! [`NativeSandbox::run`] never forks inside the async runtime: it spawns
//! the init executable (`repro __sandbox-init`, see [`init_main`]) with
//! `tokio::process::Command`, its stdin a Unix socket to the runner and
//! its stdout and stderr the step's log file. The runner sends the step's
//! resolved spec; the init (a fresh single-threaded process) joins the
//! run's cgroups, creates the namespaces, forks the step's process, which
//! builds the new root and execs the step as PID 1 of a new pid namespace.
//! The init reports how the step ended, or why the sandbox could not be
//! built, over the socket.
//!
//! # The pool of pre-warmed inits
//!
//! By default ([`NativeSandbox::with_pool`]) a run does not start an init
//! of its own: the first run starts a zygote (`repro __sandbox-init
//! --zygote`, single-threaded, no async runtime), which always keeps one
//! spare init ready that has already created the pid, network, IPC and
//! UTS namespaces, brought up loopback and forked the step's process
//! (which has entered its own mount namespace), the part of the sandbox
//! that does not depend on the step. A run passes the spare its socket
//! and log; the step's process joins the run's cgroups, creates the
//! cgroup namespace and goes on exactly as in a fresh init, while the
//! zygote forks the next spare on another core. A spare serves one run only, so every step still gets
//! namespaces of its own, never seen by another step. Whenever the pool
//! cannot serve a run (the zygote died or is stuck, or too many runs wait)
//! nothing of the step has started, and the run starts its own init.
//! A caller that knows how many steps will run says so
//! ([`NativeSandbox::expect_runs`]): for one or two, no zygote is started
//! at all (it would cost more than it saves); for more, it starts at once.
//!
//! # Checks before the first step
//!
//! [`NativeSandbox::new`] starts the namespace probe and does not wait for
//! it; [`NativeSandbox::ensure_image`] checks the image's root meanwhile
//! and then waits for the probe's answer. Both results are remembered
//! until the next boot in a root-only runtime directory
//! ([`DEFAULT_RUNTIME_CACHE_DIR`]): the probe per init executable, the
//! root's check by `lstat` of its entries (see
//! [`check_rootfs_remembered`](crate::check_rootfs_remembered)).
//!
//! # What the step gets
//!
//! - A root that is the image's unpacked root filesystem
//!   ([`prepare_rootfs`](crate::prepare_rootfs)), bind-mounted read-only,
//!   `nosuid`, `nodev`. When the image lacks a mount point (`/dev`,
//!   `/proc`, `/tmp`, `/repro/out`, `/repro/in` with inputs), a throwaway
//!   overlay on a private tmpfs is laid over the root first, and the
//!   directories are created in it (the cached root is never written).
//!   Otherwise `/repro/in` is a small read-only tmpfs holding the input
//!   mount points (hiding anything the image has there).
//! - Inputs bound read-only at `/repro/in/<name>`, the output directory
//!   bound read-write at `/repro/out`, a private tmpfs at `/tmp` (mode
//!   `1777`, `nosuid`, `nodev`, its size the memory limit or 1 GiB), a
//!   `/dev` tmpfs with the host's `null`, `zero`, `full`, `random` and
//!   `urandom`, the `fd`, `stdin`, `stdout`, `stderr` links and a 64 MiB
//!   `/dev/shm`, a new `/proc` of the sandbox's pid namespace (with
//!   `kcore`, `keys`, `timer_list`, `sched_debug`, `acpi` and `scsi`
//!   masked), and no `/sys`.
//! - New mount, pid, network (only `lo`, up), IPC, UTS (hostname `repro`)
//!   and cgroup namespaces, and a user namespace in which only `65534` is
//!   mapped (to host `65534`; `setgroups` denied). Files of the root and
//!   the inputs belong to host root, which is not mapped, so the step sees
//!   them owned by `65534` (the overflow id), where Docker shows `0`.
//! - User and group `65534`, no supplementary groups, every capability
//!   dropped (bounding, ambient, inheritable, effective, permitted),
//!   no_new_privs, and a seccomp filter refusing mount, ptrace, bpf,
//!   keyctl, kernel modules, clock setting, namespaces and the like (see
//!   the `seccomp` module), working directory `/tmp`, stdin `/dev/null`,
//!   default signal dispositions, exactly [`StepSpec::env`] as its
//!   environment (`argv[0]` searched on its `PATH`; a missing program
//!   exits 127 with a message in the log).
//! - Limits: a cgroup per run (v1 or v2: memory with no swap, pids, CPU
//!   quota) under a `repro` parent, removed afterwards; without writable
//!   cgroups, rlimits (`RLIMIT_AS`, `RLIMIT_NPROC`, `RLIMIT_CPU` as CPUs
//!   times the timeout), and running out of memory then shows as a failed
//!   allocation, not as [`Termination::OutOfMemory`]. The wall-time limit
//!   and cancellation kill the step's PID 1, which takes every process of
//!   the sandbox with it.
//!
//! # Variations
//!
//! [`NativeSandbox::run_varied`] applies a [`Variation`] (for `repro
//! check`) in the init: another hostname; another uid and gid, mapped in
//! the user namespace instead of `65534`; a umask set right before the
//! exec; an affinity mask of the first N allowed CPUs; the inputs and the
//! output under another directory (created in the throwaway overlay); and
//! each input copied into a private read-only tmpfs whose directories list
//! in the reverse of the bind mount's order (see the `listing` module).
//! With `Variation::default()` nothing of this happens.
//!
//! Needs root (the init mounts as host root before entering the user
//! namespace) and Linux 5.3 or later.

mod cgroup;
mod entry;
mod init;
mod listing;
mod pool;
mod probe;
mod protocol;
mod seccomp;
mod zygote;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use repro_store::{ImageDigest, Store};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub use crate::error::native::{Error, Result};
pub use entry::init_main;
pub use probe::DEFAULT_CACHE_DIR as DEFAULT_RUNTIME_CACHE_DIR;
pub use protocol::INIT_ARG;

use crate::backend::BackendInfo;
use crate::outcome::{Outcome, Termination};
use crate::spec::{StepSpec, Variation};
use cgroup::{Cgroup, CgroupMode};
use pool::{Pool, PooledInit};
use probe::Probe;
use protocol::{FromInit, InitSpec, InitVariation, Rlimits, ToInit};

/// Runs expected (see [`NativeSandbox::expect_runs`]) from which the pool
/// of pre-warmed inits is used.
pub const POOL_MIN_RUNS: usize = 3;
/// The size of `/tmp` when the step has no memory limit (as in Docker).
const DEFAULT_TMP_BYTES: u64 = 1 << 30;
/// How long a killed step may take to report before its init is killed.
const KILL_WAIT: Duration = Duration::from_secs(10);

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| {
        Error::Sandbox(crate::Error::Io {
            action,
            path,
            source,
        })
    }
}

/// Runs steps in Linux namespaces under the sandbox contract (see the
/// crate docs and the module docs).
#[derive(Debug)]
pub struct NativeSandbox {
    /// The pre-warmed inits (first, so that the zygote is gone before the
    /// staging directory it uses).
    pool: Pool,
    store: Store,
    init_exe: PathBuf,
    /// Whether this machine can create a step's namespaces (see the
    /// `probe` module): started by `new`, waited for before a root is
    /// used or a step runs.
    probe: Arc<Probe>,
    cgroups: CgroupMode,
    /// An empty directory each init mounts its private staging tmpfs on.
    staging: tempfile::TempDir,
    /// Where the checks of images' roots that passed are remembered (see
    /// [`crate::check_rootfs_remembered`]), if anywhere.
    rootfs_checks: Option<PathBuf>,
    /// Prepared roots, by image (each prepared once, also when asked for
    /// by several tasks at the same time).
    roots: Mutex<HashMap<ImageDigest, Arc<tokio::sync::OnceCell<PathBuf>>>>,
    /// Makes cgroup names unique within this process.
    runs: AtomicU64,
}

impl NativeSandbox {
    /// Set up native sandboxes: checks that this is root, finds the cgroup
    /// interface (v1, v2 or none), and starts the check that every
    /// namespace can be created (the init executable `init_exe`, run with
    /// [`INIT_ARG`]` --probe`, creates them as a step would) without
    /// waiting for it: [`ensure_image`](Self::ensure_image) and the runs
    /// wait for its answer, and a refused namespace is then
    /// [`Error::Namespaces`], naming it and the setting to change. A probe
    /// that passed is remembered until the next boot in
    /// [`DEFAULT_RUNTIME_CACHE_DIR`], as is the check of each image's root
    /// (see [`new_with_runtime_cache`](Self::new_with_runtime_cache)).
    ///
    /// `init_exe` is normally the `repro` binary itself
    /// (`std::env::current_exe()`), which must call [`init_main`] when its
    /// first argument is [`INIT_ARG`].
    pub fn new(store: Store, init_exe: PathBuf) -> Result<Self> {
        Self::new_with_runtime_cache(store, init_exe, Some(Path::new(probe::DEFAULT_CACHE_DIR)))
    }

    /// [`new`](Self::new), remembering passed checks in `cache` instead, or
    /// never (`None`: every sandbox probes and re-hashes each image's root
    /// in full). In `cache`, `native-probe` and `rootfs-check` are created
    /// with mode `0700` and used only when they belong to this user and no
    /// one else may write to them.
    ///
    /// A passed namespace probe is keyed by the kernel's boot id and
    /// release, the effective uid and the init executable's path, device,
    /// inode, size and times. Should namespaces have been refused since it
    /// was remembered, the steps fail with the probe's message (naming the
    /// setting) and the pass is forgotten. A passed check of an image's
    /// root holds while the boot is the same and nothing in the root has
    /// changed by `lstat` (see [`crate::check_rootfs_remembered`]).
    pub fn new_with_runtime_cache(
        store: Store,
        init_exe: PathBuf,
        cache: Option<&Path>,
    ) -> Result<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(Error::NotRoot);
        }
        let probe = Arc::new(Probe::start(&init_exe, cache)?);
        let rootfs_checks = cache.and_then(|c| probe::private_dir(&c.join("rootfs-check")));
        let cgroups = CgroupMode::detect();
        let staging = store.scratch("native-staging-").map_err(|e| {
            Error::Sandbox(crate::Error::Io {
                action: "create the staging directory in",
                path: store.dir().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        Ok(NativeSandbox {
            pool: Pool::new(init_exe.clone(), staging.path().to_path_buf(), true),
            store,
            init_exe,
            probe,
            rootfs_checks,
            cgroups,
            staging,
            roots: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(0),
        })
    }

    /// Whether steps take a pre-warmed init from the pool (the default,
    /// see the module docs) or each start an init of their own (`false`;
    /// slower by about the start of a process and the creation of a
    /// network namespace, for comparison and as a way around a problem of
    /// the pool). The contract is the same either way.
    pub fn with_pool(self, pool: bool) -> Self {
        NativeSandbox {
            pool: Pool::new(
                self.init_exe.clone(),
                self.staging.path().to_path_buf(),
                pool,
            ),
            ..self
        }
    }

    /// The pid of the pool's zygote, while one runs (it is started by the
    /// first run, and again by a run after it died): for diagnostics and
    /// tests.
    pub fn zygote_pid(&self) -> Option<u32> {
        self.pool.zygote_pid()
    }

    /// Tell the sandbox how many runs are coming (the steps a build or a
    /// verification will run), so that the pool is used only when it pays:
    /// for fewer than [`POOL_MIN_RUNS`] each run starts an init of its
    /// own and no zygote is started (a zygote and its spares cost more than
    /// they save for one or two steps); for more, the zygote starts now, so
    /// that a spare is ready when the first step runs. Without this hint
    /// the first run starts the zygote. A pool turned off by
    /// [`with_pool`](Self::with_pool)`(false)` stays off.
    pub fn expect_runs(&self, runs: usize) {
        self.pool.expect_runs(runs >= POOL_MIN_RUNS);
    }

    /// Whether the namespace probe's pass was remembered from an earlier
    /// sandbox in this boot (waits for the probe): for tests.
    #[doc(hidden)]
    pub async fn probe_was_cached(&self) -> Result<bool> {
        self.probe_checked().await?;
        Ok(self.probe.was_cached())
    }

    /// Wait for the namespace probe's answer.
    async fn probe_checked(&self) -> Result<()> {
        if self.probe.is_done() {
            return self.probe.check();
        }
        let probe = Arc::clone(&self.probe);
        tokio::task::spawn_blocking(move || probe.check())
            .await
            .map_err(|e| Error::Setup {
                step: String::new(),
                why: format!("waiting for the namespace probe panicked: {e}"),
            })?
    }

    /// The backend's name and the machine's kernel, for the build record:
    /// `backend` is `native`, `server_version` this crate's version,
    /// `api_version` how limits are enforced (`cgroup-v1`, `cgroup-v2` or
    /// `rlimits`).
    pub async fn describe(&self) -> Result<BackendInfo> {
        let release = Path::new("/proc/sys/kernel/osrelease");
        let kernel = std::fs::read_to_string(release).map_err(io_err("read", release))?;
        Ok(BackendInfo {
            backend: "native".to_string(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: self.cgroups.name().to_string(),
            os: std::env::consts::OS.to_string(),
            arch: oci_arch().to_string(),
            kernel_version: kernel.trim().to_string(),
        })
    }

    /// Unpack (or find in the store's cache) the root filesystem of
    /// `image` and check it, once per image in this process. Must be
    /// called before [`run`](Self::run) for each image.
    ///
    /// Also waits for the namespace probe (see [`new`](Self::new)), which
    /// runs meanwhile. Concurrent calls for one image prepare it once.
    pub async fn ensure_image(&self, image: &ImageDigest) -> Result<()> {
        let cell = {
            let mut roots = self.roots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(roots.entry(*image).or_default())
        };
        cell.get_or_try_init(|| async {
            let store = self.store.clone();
            let probe = Arc::clone(&self.probe);
            let checks = self.rootfs_checks.clone();
            let digest = *image;
            tokio::task::spawn_blocking(move || {
                let root = crate::prepare_rootfs(&store, &digest).and_then(|root| {
                    match &checks {
                        Some(dir) => crate::check_rootfs_remembered(&root, dir),
                        None => crate::check_rootfs(&root),
                    }
                    .map(|()| root)
                });
                // A refused namespace says more than a damaged root.
                probe.check()?;
                Ok::<_, Error>(root?.path)
            })
            .await
            .map_err(|e| Error::Setup {
                step: String::new(),
                why: format!("preparing the root of `{image}` panicked: {e}"),
            })?
        })
        .await?;
        Ok(())
    }

    fn root_of(&self, image: &ImageDigest) -> Option<PathBuf> {
        let roots = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        roots.get(image).and_then(|c| c.get().cloned())
    }

    /// Run one step in a fresh sandbox on the image's prepared root.
    ///
    /// Returns `Ok` with the outcome whenever the step ran, whatever its
    /// exit code; `Err` only when the sandbox failed. When `cancel` fires,
    /// the step is killed and the outcome is [`Termination::Cancelled`].
    /// Nothing is left behind (processes, cgroups, mounts), also when the
    /// future is dropped.
    pub async fn run(&self, spec: &StepSpec, cancel: CancellationToken) -> Result<Outcome> {
        self.run_varied(spec, &Variation::default(), cancel).await
    }

    /// [`run`](Self::run) with deliberate changes to the contract, for
    /// `repro check` (see [`Variation`] for what each one does here).
    /// `Variation::default()` is exactly [`run`](Self::run). A variation
    /// the sandbox cannot apply (uid `0`, a umask over `0777`, zero CPUs,
    /// a mount root that is not an absolute plain path or lies under
    /// `/tmp`, `/dev` or `/proc`, an empty or over-long hostname) is
    /// [`crate::Error::InvalidSpec`].
    pub async fn run_varied(
        &self,
        spec: &StepSpec,
        variation: &Variation,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        let root = self
            .root_of(&spec.image)
            .ok_or(Error::ImageNotEnsured { image: spec.image })?;
        self.run_in_root_varied(&root, spec, variation, cancel)
            .await
    }

    /// [`run`](Self::run) with `root` as the image root, whatever
    /// `spec.image` says: for tests and for roots prepared elsewhere.
    pub async fn run_in_root(
        &self,
        root: &Path,
        spec: &StepSpec,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        self.run_in_root_varied(root, spec, &Variation::default(), cancel)
            .await
    }

    async fn run_in_root_varied(
        &self,
        root: &Path,
        spec: &StepSpec,
        variation: &Variation,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        spec.validate()?;
        let variation = init_variation(spec, variation)?;
        self.probe_checked().await?;
        if cancel.is_cancelled() {
            return Ok(Outcome {
                termination: Termination::Cancelled,
                duration: Duration::ZERO,
            });
        }
        let root = std::fs::canonicalize(root).map_err(io_err("use the image root", root))?;
        let inputs = prepare_inputs(spec)?;
        let output = prepare_output(spec)?;
        let log = open_log(&spec.log)?;

        let name = format!(
            "{}-{}-{}",
            path_safe(&spec.step),
            std::process::id(),
            self.runs.fetch_add(1, Ordering::Relaxed)
        );
        let cgroup =
            Cgroup::create(&self.cgroups, &name, &spec.limits).map_err(|source| Error::Cgroup {
                action: "create",
                step: spec.step.clone(),
                source,
            })?;
        let limits = &spec.limits;
        let rlimits = if cgroup.is_none() {
            Rlimits {
                address_space: limits.memory_bytes,
                cpu_seconds: limits
                    .cpus
                    .map(|c| (c * limits.timeout.as_secs_f64()).ceil().max(1.0) as u64),
                processes: Some(limits.pids),
            }
        } else {
            Rlimits::default()
        };
        let init_spec = InitSpec {
            root,
            staging: self.staging.path().to_path_buf(),
            inputs,
            output,
            argv: spec.argv.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tmp_bytes: limits.memory_bytes.unwrap_or(DEFAULT_TMP_BYTES),
            cgroup_join: cgroup.as_ref().map(Cgroup::join_files).unwrap_or_default(),
            rlimits,
            variation,
        };
        let mut cgroup = cgroup;
        let result = self
            .drive(spec, &init_spec, log, cgroup.as_ref(), cancel)
            .await;
        if let Err(Error::Setup { .. }) = &result {
            // Perhaps namespaces are refused since the probe's pass was
            // remembered: the next sandbox probes again.
            self.probe.forget();
        }
        if let Some(cg) = cgroup.as_mut() {
            cg.remove().map_err(|source| Error::Cgroup {
                action: "remove",
                step: spec.step.clone(),
                source,
            })?;
        }
        result
    }

    /// Start the init (from the pool, or a fresh one), send the spec, wait
    /// with the timeout and the cancellation, and turn the report into an
    /// outcome.
    async fn drive(
        &self,
        spec: &StepSpec,
        init_spec: &InitSpec,
        log: std::fs::File,
        cgroup: Option<&Cgroup>,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        let step = spec.step.as_str();
        let init_err = |action| {
            move |source| Error::Init {
                action,
                step: step.to_string(),
                source,
            }
        };
        let started = Instant::now();
        let pooled = match self.start_pooled(&log, &cancel).await {
            Pooled::Started(init, sock) => Some((init, sock)),
            Pooled::Cancelled => {
                return Ok(Outcome {
                    termination: Termination::Cancelled,
                    duration: started.elapsed(),
                })
            }
            Pooled::Unavailable => None,
        };
        let (mut init, sock) = match pooled {
            Some((init, sock)) => (Init::Pooled(init), sock),
            None => {
                let (init, sock) = self.start_fresh(spec, log)?;
                (Init::Fresh(init), sock)
            }
        };
        let (mut rd, mut wr) = sock.into_split();
        let frame = protocol::encode(&ToInit::Run(Box::new(init_spec.clone())));
        // A failed send shows as a missing report below.
        let _ = wr.write_all(&frame).await;

        let mut report = Box::pin(async move {
            let mut first_error = None;
            let mut status = None;
            while let Ok(Some(msg)) = protocol::read_frame_async::<FromInit>(&mut rd).await {
                match msg {
                    FromInit::Error(e) => {
                        first_error.get_or_insert(e);
                    }
                    other => status = Some(other),
                }
            }
            (first_error, status)
        });
        let finished = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Termination::Cancelled),
            () = tokio::time::sleep(spec.limits.timeout) => Err(Termination::TimedOut),
            r = &mut report => Ok(r),
        };
        let duration = started.elapsed();
        let (stopped, (first_error, status)) = match finished {
            Ok(r) => (None, r),
            Err(t) => {
                let _ = wr.write_all(&protocol::encode(&ToInit::Kill)).await;
                let r = match tokio::time::timeout(KILL_WAIT, &mut report).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The init does not answer: kill it; the step's
                        // PID 1 dies with it (PR_SET_PDEATHSIG).
                        init.kill();
                        report.await
                    }
                };
                (Some(t), r)
            }
        };
        drop(wr);
        let exit = init.wait().await.map_err(init_err("wait for"))?;
        if let Some(t) = stopped {
            return Ok(Outcome {
                termination: t,
                duration,
            });
        }
        if let Some(why) = first_error {
            return Err(Error::Setup {
                step: step.to_string(),
                why,
            });
        }
        let oom = cgroup.is_some_and(Cgroup::oom_killed);
        let termination = match status {
            _ if oom => Termination::OutOfMemory,
            Some(FromInit::Exited(code)) => Termination::Exited(code),
            Some(FromInit::Signaled(sig)) => Termination::Exited(128 + sig),
            _ => {
                return Err(Error::InitDied {
                    step: step.to_string(),
                    status: exit,
                })
            }
        };
        Ok(Outcome {
            termination,
            duration,
        })
    }

    /// Hand the run to a spare of the pool and wait for it to take it.
    async fn start_pooled(&self, log: &std::fs::File, cancel: &CancellationToken) -> Pooled {
        if !self.pool.is_on() {
            return Pooled::Unavailable;
        }
        let Ok((ours, theirs)) = std::os::unix::net::UnixStream::pair() else {
            return Pooled::Unavailable;
        };
        let theirs = OwnedFd::from(theirs);
        if !self.pool.request(&theirs, log) {
            return Pooled::Unavailable;
        }
        // The spare holds its own copy now; without ours, the socket ends
        // when the spare does (or when no spare takes the request).
        drop(theirs);
        let sock = match ours
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ours))
        {
            Ok(s) => s,
            Err(_) => return Pooled::Unavailable,
        };
        let ack = tokio::select! {
            biased;
            () = cancel.cancelled() => return Pooled::Cancelled,
            r = tokio::time::timeout(pool::ACK_WAIT, pool::recv_ack(&sock)) => r,
        };
        match ack {
            Ok(Ok(Some(pidfd))) => match PooledInit::new(pidfd) {
                Ok(init) => {
                    self.pool.acked();
                    Pooled::Started(init, sock)
                }
                // Without `sock`, the spare reads the end of the stream
                // instead of a spec, and ends without running anything.
                Err(_) => Pooled::Unavailable,
            },
            Ok(Ok(None) | Err(_)) => {
                self.pool.no_ack(false);
                Pooled::Unavailable
            }
            Err(_elapsed) => {
                // Dropping `sock` makes a spare that takes the request
                // later read the end of the stream instead of a spec.
                self.pool.no_ack(true);
                Pooled::Unavailable
            }
        }
    }

    /// Start an init of this run's own.
    fn start_fresh(
        &self,
        spec: &StepSpec,
        log: std::fs::File,
    ) -> Result<(tokio::process::Child, tokio::net::UnixStream)> {
        let step = spec.step.as_str();
        let init_err = |action| {
            move |source| Error::Init {
                action,
                step: step.to_string(),
                source,
            }
        };
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(init_err("connect to"))?;
        let log_err = log.try_clone().map_err(io_err("use the log", &spec.log))?;
        let mut cmd = tokio::process::Command::new(&self.init_exe);
        cmd.arg(INIT_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| Error::InitExe {
            path: self.init_exe.clone(),
            source,
        })?;
        // The command holds the init's ends of the socket and the log:
        // close them here, so the socket ends when the init does.
        drop(cmd);
        ours.set_nonblocking(true).map_err(init_err("connect to"))?;
        let sock = tokio::net::UnixStream::from_std(ours).map_err(init_err("connect to"))?;
        Ok((child, sock))
    }
}

/// What became of a run offered to the pool.
enum Pooled {
    /// A spare took it.
    Started(PooledInit, tokio::net::UnixStream),
    /// It was cancelled while waiting for a spare (nothing started).
    Cancelled,
    /// No spare took it (nothing started): start a fresh init.
    Unavailable,
}

/// The init of one run.
enum Init {
    /// Started for this run (killed when dropped).
    Fresh(tokio::process::Child),
    /// Taken from the pool (killed when dropped).
    Pooled(PooledInit),
}

impl Init {
    fn kill(&mut self) {
        match self {
            Init::Fresh(c) => {
                let _ = c.start_kill();
            }
            Init::Pooled(p) => p.kill(),
        }
    }

    /// Wait for the init to end; how it ended, for messages.
    async fn wait(&mut self) -> std::io::Result<String> {
        match self {
            Init::Fresh(c) => Ok(c.wait().await?.to_string()),
            Init::Pooled(p) => {
                p.wait().await?;
                Ok("a pooled init, whose exit status is not kept".to_string())
            }
        }
    }
}

/// `name` with anything but `[A-Za-z0-9_-]` replaced, at most 64 bytes.
fn path_safe(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The OCI name of this machine's architecture (as Docker reports it).
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Check `v` and turn it into what the init receives; what the sandbox
/// cannot apply is [`crate::Error::InvalidSpec`].
fn init_variation(spec: &StepSpec, v: &Variation) -> Result<InitVariation> {
    let bad = |why: String| {
        Err(Error::Sandbox(crate::Error::InvalidSpec {
            step: spec.step.clone(),
            why,
        }))
    };
    if let Some(h) = &v.hostname {
        if h.is_empty() || h.len() > 64 || h.contains('\0') {
            return bad(format!(
                "the varied hostname `{h}` must be 1 to 64 bytes without NUL"
            ));
        }
    }
    if v.uid == Some(0) {
        return bad(
            "the varied uid cannot be 0 (host root is never mapped into the sandbox)".into(),
        );
    }
    if let Some(m) = v.umask {
        if m > 0o777 {
            return bad(format!("the varied umask `{m:o}` is larger than `777`"));
        }
    }
    if v.cpus == Some(0) {
        return bad("the varied number of CPUs is 0".into());
    }
    if let Some(r) = &v.mount_root {
        if let Err(why) = check_mount_root(r) {
            return bad(why);
        }
    }
    Ok(InitVariation {
        hostname: v.hostname.clone(),
        uid: v.uid,
        umask: v.umask,
        cpus: v.cpus,
        mount_root: v
            .mount_root
            .as_ref()
            .map(|r| r.trim_end_matches('/').to_string()),
        reverse_listing: v.reverse_listing,
    })
}

/// Whether `root` can hold the inputs and the output: absolute, plain
/// components only, not `/`, and not under a directory the sandbox mounts
/// itself.
fn check_mount_root(root: &str) -> std::result::Result<(), String> {
    use std::path::Component;
    let path = Path::new(root);
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p),
            _ => {
                return Err(format!(
                    "the mount root `{root}` must be an absolute path without `.` or `..`"
                ))
            }
        }
    }
    if !path.is_absolute() || parts.is_empty() || root.contains('\0') {
        return Err(format!(
            "the mount root `{root}` must be an absolute directory other than `/`"
        ));
    }
    if ["tmp", "dev", "proc"].iter().any(|d| parts[0] == *d) {
        return Err(format!(
            "the mount root `{root}` lies under a directory the sandbox mounts itself (`/tmp`, `/dev`, `/proc`)"
        ));
    }
    Ok(())
}

/// Canonical host paths of the inputs, each checked to be a directory.
fn prepare_inputs(spec: &StepSpec) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::with_capacity(spec.inputs.len());
    for m in &spec.inputs {
        let host =
            std::fs::canonicalize(&m.host).map_err(io_err("use input directory", &m.host))?;
        let meta = std::fs::metadata(&host).map_err(io_err("use input directory", &m.host))?;
        if !meta.is_dir() {
            return Err(io_err("use input directory", &m.host)(
                std::io::Error::other("not a directory"),
            ));
        }
        out.push((m.name.clone(), host));
    }
    Ok(out)
}

/// Create the output directory if needed, check that it is empty, and
/// make it writable by the step's user.
fn prepare_output(spec: &StepSpec) -> Result<PathBuf> {
    let path = &spec.output;
    std::fs::create_dir_all(path).map_err(io_err("create output directory", path))?;
    let host = std::fs::canonicalize(path).map_err(io_err("use output directory", path))?;
    let mut entries = std::fs::read_dir(&host).map_err(io_err("read output directory", path))?;
    if entries.next().is_some() {
        return Err(Error::Sandbox(crate::Error::OutputNotEmpty {
            step: spec.step.clone(),
            path: path.clone(),
        }));
    }
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777))
        .map_err(io_err("make writable output directory", path))?;
    Ok(host)
}

/// Create (or truncate) the log file, and its directory.
fn open_log(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create the log directory", path))?;
    }
    std::fs::File::create(path).map_err(io_err("create the log file", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> StepSpec {
        StepSpec {
            step: "s".into(),
            image: ImageDigest::from_hash(repro_store::Hash::of(b"x")),
            argv: vec!["true".into()],
            env: Default::default(),
            inputs: vec![],
            output: "/o".into(),
            log: "/l".into(),
            limits: Default::default(),
        }
    }

    fn refused(v: Variation) -> String {
        match init_variation(&step(), &v) {
            Err(Error::Sandbox(crate::Error::InvalidSpec { why, .. })) => why,
            other => panic!("expected InvalidSpec for {v:?}, got {other:?}"),
        }
    }

    #[test]
    fn variations_the_sandbox_cannot_apply_are_refused() {
        assert!(refused(Variation {
            uid: Some(0),
            ..Variation::default()
        })
        .contains("uid cannot be 0"));
        assert!(refused(Variation {
            umask: Some(0o1000),
            ..Variation::default()
        })
        .contains("umask `1000`"));
        assert!(refused(Variation {
            cpus: Some(0),
            ..Variation::default()
        })
        .contains("CPUs is 0"));
        assert!(refused(Variation {
            hostname: Some(String::new()),
            ..Variation::default()
        })
        .contains("hostname"));
        for root in ["relative", "/", "/a/../b", "/tmp/x", "/proc", "/dev/in"] {
            let why = refused(Variation {
                mount_root: Some(root.into()),
                ..Variation::default()
            });
            assert!(why.contains(&format!("`{root}`")), "{root}: {why}");
        }
    }

    #[test]
    fn a_valid_variation_reaches_the_init_unchanged() {
        let v = Variation {
            hostname: Some("elsewhere".into()),
            uid: Some(1000),
            umask: Some(0o077),
            cpus: Some(1),
            mount_root: Some("/repro-check/".into()),
            reverse_listing: true,
        };
        let got = init_variation(&step(), &v).expect("valid");
        assert_eq!(got.hostname.as_deref(), Some("elsewhere"));
        assert_eq!(got.uid, Some(1000));
        assert_eq!(got.umask, Some(0o077));
        assert_eq!(got.cpus, Some(1));
        assert_eq!(got.mount_root.as_deref(), Some("/repro-check"));
        assert!(got.reverse_listing);
        assert_eq!(
            init_variation(&step(), &Variation::default()).expect("none"),
            InitVariation::default()
        );
    }

    #[test]
    fn cgroup_names_are_path_safe() {
        assert_eq!(path_safe("train/../x y"), "train____x_y");
        assert_eq!(path_safe(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn namespace_errors_name_the_setting_and_the_docker_hint() {
        use nix::errno::Errno;
        let m = init::namespace_message("user", Errno::ENOSPC);
        assert!(m.contains("`user.max_user_namespaces`"), "{m}");
        assert!(m.contains("hint: use `--sandbox docker`"), "{m}");
        let m = init::namespace_message("user", Errno::EPERM);
        assert!(m.contains("`kernel.unprivileged_userns_clone`"), "{m}");
        assert!(
            m.contains("`kernel.apparmor_restrict_unprivileged_userns`"),
            "{m}"
        );
        let m = init::namespace_message("network", Errno::ENOSPC);
        assert!(m.contains("`user.max_network_namespaces`"), "{m}");
    }
}
