//! One type for "a sandbox", whichever backend runs it: the top of the
//! crate's modules, above both backends.

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use repro_store::{ImageDigest, Store};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendInfo, BackendKind};
use crate::docker::DockerSandbox;
use crate::error::{native, Error, Result};
use crate::native::NativeSandbox;
use crate::outcome::Outcome;
use crate::spec::{StepSpec, Variation};

/// A connected sandbox of either kind. Both keep the same contract, so a
/// step's key and output do not depend on which one runs it. Implements
/// [`Backend`] with the same behaviour as its inherent methods, for an
/// engine that holds an `Arc<dyn Backend>`.
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
            Sandbox::Docker(_) => Err(Error::InvalidSpec {
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

/// The inherent methods, boxed: the same behaviour through the trait.
impl Backend for Sandbox {
    fn kind(&self) -> BackendKind {
        Sandbox::kind(self)
    }

    fn expect_runs(&self, runs: usize) {
        Sandbox::expect_runs(self, runs);
    }

    fn ensure_image<'a>(
        &'a self,
        store: &'a Store,
        image: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Sandbox::ensure_image(self, store, image))
    }

    fn run_varied<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(Sandbox::run_varied(self, spec, variation, cancel))
    }

    fn run<'a>(
        &'a self,
        spec: &'a StepSpec,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(Sandbox::run(self, spec, cancel))
    }

    /// Neither backend gives a step a GPU: the native `/dev` holds only
    /// `null`, `zero`, `full`, `random` and `urandom`, and the Docker
    /// container is created without device requests.
    fn allocates_gpus(&self) -> bool {
        false
    }

    fn describe(&self) -> BoxFuture<'_, Result<BackendInfo>> {
        Box::pin(Sandbox::describe(self))
    }
}

fn boxed(e: native::Error) -> Error {
    Error::Native(Box::new(e))
}
