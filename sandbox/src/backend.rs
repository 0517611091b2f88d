//! The seam between the engine and the sandbox: the [`Backend`] trait,
//! what it speaks of ([`BackendKind`], [`BackendInfo`]), and the contract
//! every backend keeps. The `Sandbox` enum (in `sandbox.rs`, above the
//! backends) implements it for the native and the Docker backend; an
//! engine's tests can implement it with a fake that needs neither root nor
//! Docker.

use futures_util::future::BoxFuture;
use repro_store::{ImageDigest, Store};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::outcome::Outcome;
use crate::spec::{StepSpec, Variation};

/// Runs steps under the sandbox contract (see the crate docs), usable as
/// `Arc<dyn Backend>`. `Sandbox` implements it for both real backends.
///
/// # The contract
///
/// What the native and the Docker backend do, and what the engine relies
/// on; a fake backend keeps the parts its tests depend on.
///
/// - **Sharing.** Every method takes `&self` and may be called from
///   several tasks at once (the engine runs independent steps
///   concurrently), so a backend is `Send + Sync` and its futures are
///   `Send`.
/// - **Images.** [`ensure_image`](Self::ensure_image) makes an image
///   (kept in the store by its manifest digest) ready to run steps in. It
///   must be called for an image before any run on it; a run on an image
///   that was not ensured is an `Err`. Calling it again for an image is
///   cheap, also concurrently.
/// - **`Ok` and `Err`.** [`run_varied`](Self::run_varied) returns `Ok`
///   with the [`Outcome`] whenever the step ran, whatever its exit code: a
///   step that fails is `Ok` with
///   [`Termination::Exited`](crate::Termination::Exited) and its code
///   (128 + n for signal n), [`TimedOut`](crate::Termination::TimedOut)
///   when `spec.limits.timeout` passed and it was killed, or
///   [`OutOfMemory`](crate::Termination::OutOfMemory). `Err` is only for
///   problems of the sandbox itself: a spec the sandbox cannot express
///   ([`Error::InvalidSpec`](crate::Error::InvalidSpec), found before
///   anything is touched), an image not ensured, an output directory that
///   is not empty ([`Error::OutputNotEmpty`](crate::Error::OutputNotEmpty)),
///   host files that cannot be prepared ([`Error::Io`](crate::Error::Io)),
///   the backend or its daemon failing. These variants have public fields,
///   so a backend outside this crate can return them too.
/// - **Files.** The host side of a step is two paths of the spec. The
///   backend creates the directory [`StepSpec::output`] if it is missing
///   (it must be empty; it is made mode `0777`) and mounts it as the
///   step's `/repro/out`, where the step writes its outputs; it creates or
///   truncates the file [`StepSpec::log`] and streams the step's stdout
///   and stderr into it, interleaved as they arrive. The caller reads both
///   after an `Ok`. A fake stands in for the step: it writes whatever log
///   and outputs the step it pretends to run would write.
/// - **Cancellation.** When `cancel` fires, the step is killed and the
///   result is `Ok` with
///   [`Termination::Cancelled`](crate::Termination::Cancelled). A run
///   whose token has already fired returns that at once, with a zero
///   duration, without starting the step (and possibly before creating
///   the log or the output directory).
/// - **Cleanup.** Nothing of the step (processes, containers, mounts,
///   cgroups) is left behind once the future completes, whatever
///   happened, and also when the future is dropped.
/// - **Variations.** With `Variation::default()`, `run_varied` is exactly
///   a plain run ([`run`](Self::run)). A variation the backend cannot
///   apply is [`Error::InvalidSpec`](crate::Error::InvalidSpec): the
///   Docker backend applies none, the native one all (within the limits
///   [`Variation`] states).
pub trait Backend: Send + Sync {
    /// Which backend this is (a fake picks the kind it stands in for).
    fn kind(&self) -> BackendKind;

    /// How many runs are coming, so that a backend can prepare for them
    /// (the native one starts its pool of pre-warmed inits only when it
    /// pays). A hint only: the default ignores it.
    fn expect_runs(&self, _runs: usize) {}

    /// Make `image`, kept in `store`, ready to run steps in (see the trait
    /// docs).
    fn ensure_image<'a>(
        &'a self,
        store: &'a Store,
        image: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>>;

    /// Run one step under the contract, changed by `variation` (for
    /// `repro check`; `Variation::default()` changes nothing). See the
    /// trait docs for what `Ok` and `Err` mean.
    fn run_varied<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>>;

    /// [`run_varied`](Self::run_varied), telling `progress` where the step
    /// stands while a backend that hands steps to a scheduler waits for
    /// it (the Slurm executor: the job was submitted and is pending, it
    /// runs on a node, its node failed and it is submitted again). The
    /// default, for the backends that run steps here, tells nothing and is
    /// exactly `run_varied`.
    fn run_observed<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
        progress: &'a ProgressSink<'a>,
    ) -> BoxFuture<'a, Result<Outcome>> {
        let _ = progress;
        self.run_varied(spec, variation, cancel)
    }

    /// Run one step under the contract: [`run_varied`](Self::run_varied)
    /// with `Variation::default()`.
    fn run<'a>(
        &'a self,
        spec: &'a StepSpec,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move { self.run_varied(spec, &Variation::default(), cancel).await })
    }

    /// Where the last run of `step` ran, when the backend hands steps
    /// elsewhere (the Slurm executor: `slurm job 12 on node-3`); recorded
    /// as a byproduct, never part of the step key.
    fn placement(&self, _step: &str) -> Option<String> {
        None
    }

    /// Whether a step that asks for GPUs (`spec.limits.gpus`) gets them
    /// allocated: `false` by default, as for the local sandboxes, which
    /// expose no GPU device, so the step runs without one and the engine
    /// warns; a backend that hands the request to a scheduler says `true`
    /// (the Slurm executor asks for them with `--gres`). Never an error,
    /// and never part of the step key.
    fn allocates_gpus(&self) -> bool {
        false
    }

    /// The backend's name and versions, for the build record.
    fn describe(&self) -> BoxFuture<'_, Result<BackendInfo>>;
}

/// Where [`Backend::run_observed`] tells how a step stands. Called from
/// the backend's tasks: it must be cheap.
pub type ProgressSink<'a> = dyn Fn(JobProgress) + Send + Sync + 'a;

/// How a step handed to a scheduler stands (see [`JobProgress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// The job was submitted and waits in the queue.
    Pending,
    /// The job was given a node and runs there.
    Running,
    /// The job ended before the step reported (its node failed) and the
    /// step is submitted again.
    Retrying,
}

/// One change in where a step handed to a scheduler stands, as
/// [`Backend::run_observed`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    /// What changed.
    pub state: JobState,
    /// The scheduler's id of the job it is about (`42`); with
    /// [`JobState::Retrying`], the job that ended.
    pub job: String,
    /// What happened, in words, naming the scheduler: `submitted as slurm
    /// job 42, pending (Resources)`, `running as slurm job 42 on node-3`.
    pub detail: String,
}

/// Which backend runs the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Linux namespaces, no daemon (the default).
    Native,
    /// A Docker daemon.
    Docker,
}

impl BackendKind {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::Docker => "docker",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "native" => Ok(BackendKind::Native),
            "docker" => Ok(BackendKind::Docker),
            other => Err(format!(
                "`{other}` is not a sandbox backend: use `native` or `docker`"
            )),
        }
    }
}

/// The backend a build ran on, for the record's platform section (see
/// [`Backend::describe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// The backend's name, as [`BackendKind::name`] gives it: `docker` or
    /// `native`.
    pub backend: String,
    /// The engine's version, e.g. `20.10.24+dfsg1` (native: this crate's
    /// version).
    pub server_version: String,
    /// The API version in use (negotiated), e.g. `1.41` (native: how limits
    /// are enforced, `cgroup-v1`, `cgroup-v2` or `rlimits`).
    pub api_version: String,
    /// The engine's operating system, e.g. `linux`.
    pub os: String,
    /// The engine's architecture, e.g. `amd64`.
    pub arch: String,
    /// The kernel version of the engine's host.
    pub kernel_version: String,
}
