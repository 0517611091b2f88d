//! One type for "a sandbox", whichever backend runs it.

use std::path::{Path, PathBuf};

use repro_store::{ImageDigest, Store};
use tokio_util::sync::CancellationToken;

use crate::{BackendInfo, DockerSandbox, NativeSandbox, Outcome, Result, StepSpec, Variation};

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

/// A connected sandbox of either kind. Both keep the same contract, so a
/// step's key and output do not depend on which one runs it.
#[derive(Debug)]
pub enum Sandbox {
    /// Linux namespaces.
    Native(NativeSandbox),
    /// Docker.
    Docker(DockerSandbox),
}

impl Sandbox {
    /// Set up a backend. `init_exe` is the executable that runs the native
    /// sandbox's init (`<exe> __sandbox-init`): the `repro` binary itself.
    pub async fn connect(kind: BackendKind, store: &Store, init_exe: &Path) -> Result<Sandbox> {
        Ok(match kind {
            BackendKind::Native => Sandbox::Native(
                NativeSandbox::new(store.clone(), PathBuf::from(init_exe)).map_err(boxed)?,
            ),
            BackendKind::Docker => Sandbox::Docker(DockerSandbox::connect().await?),
        })
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Sandbox::Native(_) => BackendKind::Native,
            Sandbox::Docker(_) => BackendKind::Docker,
        }
    }

    /// How many runs are coming, so that the native backend uses its pool
    /// of pre-warmed inits only when it pays (see
    /// [`NativeSandbox::expect_runs`]); Docker ignores it.
    pub fn expect_runs(&self, runs: usize) {
        if let Sandbox::Native(s) = self {
            s.expect_runs(runs);
        }
    }

    /// Make `image` (kept in `store`) ready to run steps in.
    pub async fn ensure_image(&self, store: &Store, image: &ImageDigest) -> Result<()> {
        match self {
            Sandbox::Native(s) => s.ensure_image(image).await.map_err(boxed),
            Sandbox::Docker(s) => s.ensure_image(store, image).await,
        }
    }

    /// Run one step; see [`DockerSandbox::run`] for what `Ok` and `Err` mean.
    pub async fn run(&self, spec: &StepSpec, cancel: CancellationToken) -> Result<Outcome> {
        match self {
            Sandbox::Native(s) => s.run(spec, cancel).await.map_err(boxed),
            Sandbox::Docker(s) => s.run(spec, cancel).await,
        }
    }

    /// Run one step with deliberate changes to the contract (`repro check`).
    /// Only the native backend can vary the sandbox; Docker refuses any
    /// variation other than none.
    pub async fn run_varied(
        &self,
        spec: &StepSpec,
        variation: &Variation,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        if variation.is_none() {
            return self.run(spec, cancel).await;
        }
        match self {
            Sandbox::Native(s) => s.run_varied(spec, variation, cancel).await.map_err(boxed),
            Sandbox::Docker(_) => Err(crate::Error::InvalidSpec {
                step: spec.step.clone(),
                why: "the Docker backend cannot vary the sandbox; run `repro check` with `--sandbox native`".to_string(),
            }),
        }
    }

    /// The backend's name and versions, for the record.
    pub async fn describe(&self) -> Result<BackendInfo> {
        match self {
            Sandbox::Native(s) => s.describe().await.map_err(boxed),
            Sandbox::Docker(s) => s.describe().await,
        }
    }
}

fn boxed(e: crate::native::Error) -> crate::Error {
    crate::Error::Native(Box::new(e))
}
