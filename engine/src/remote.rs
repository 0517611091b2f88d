//! What the engine asks of a registry, without knowing one: a remote action
//! cache (`build --remote`) and a source of toolchain images named by
//! digest in a registry. The implementations live in `repro-exchange`.

use anyhow::Result;
use futures_util::future::BoxFuture;
use repro_store::{ActionResult, ImageDigest, StepKey, Store};

/// A remote action cache the engine asks before running a step and tells
/// after a step ran.
pub trait RemoteCache: Send + Sync {
    /// The result of `key` if the remote has it, with every blob of it
    /// downloaded (and verified) into the local store.
    fn lookup<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Option<ActionResult>>>;
    /// Publish `key`'s result (its output tree and log must be in the store).
    fn publish<'a>(
        &'a self,
        key: &'a StepKey,
        result: &'a ActionResult,
    ) -> BoxFuture<'a, Result<()>>;
}

/// Where images named `host/repo@sha256:...` are pulled from.
pub trait ImageSource: Send + Sync {
    /// Pull `digest` from `repository` (`host[:port]/repo`) into `store`,
    /// re-hashing every blob before it becomes visible.
    fn pull_image<'a>(
        &'a self,
        store: &'a Store,
        repository: &'a str,
        digest: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>>;
}
