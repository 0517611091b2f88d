//! Slurm steps without a shared filesystem: a [`Courier`] over an OCI
//! registry repository.
//!
//! The controller pushes the step's image and the closure of its input
//! trees, then an artifact tagged with the job's token (`job-<hex>`, of
//! type [`JOB_ARTIFACT`]) whose config is the step spec and whose layers
//! are those blobs. On the node, `repro __slurm-step --registry <repo>
//! --job <token>` ([`run_on_node`]) pulls that artifact into a store of
//! its own, re-hashing every blob, lays the inputs out, runs the step in
//! its sandbox, and pushes the output tree and the log under
//! `done-<hex>` ([`DONE_ARTIFACT`], config [`Done`]). The controller pulls
//! that, re-hashes every blob, and lays the output out where a local run
//! would have left it; from there the engine hashes it as it hashes every
//! step's output, so the step key, the output tree and the record are
//! those of a local build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use repro_sandbox::slurm::Courier;
use repro_sandbox::{Backend, BackendKind, Outcome, Sandbox, StepSpec, Termination};
use repro_store::{BlobDigest, Ingest, Store, TreeDigest};
use repro_toolchains::registry::{Artifact, Remote};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::registry::{connect, tree_closure, RegistryOptions};

/// The artifact type of a step left for a node.
pub const JOB_ARTIFACT: &str = "application/vnd.repro.slurm-job.v1+json";
/// The artifact type of what a node left after running a step.
pub const DONE_ARTIFACT: &str = "application/vnd.repro.slurm-done.v1+json";

/// What a node reports for one job (the config of a [`DONE_ARTIFACT`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {
    /// How the step ended, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Its output tree, when it exited 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<TreeDigest>,
    /// Its log, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<BlobDigest>,
    /// Why the node could not run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The tag of what the node leaves for the job `token` (`job-<hex>`).
fn done_tag(token: &str) -> String {
    format!("done-{}", token.strip_prefix("job-").unwrap_or(token))
}

/// A [`Courier`] over the registry repository `target`.
pub struct RegistryCourier {
    remote: Remote,
    store: Arc<Store>,
    target: String,
    options: RegistryOptions,
}

impl std::fmt::Debug for RegistryCourier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCourier")
            .field("target", &self.target)
            .finish()
    }
}

impl RegistryCourier {
    /// Connect to `target` (`host[:port]/repo`) for steps of `store`.
    pub async fn connect(
        target: &str,
        options: &RegistryOptions,
        store: Arc<Store>,
    ) -> Result<RegistryCourier> {
        Ok(RegistryCourier {
            remote: connect(target, options).await?,
            store,
            target: target.to_string(),
            options: options.clone(),
        })
    }

    async fn send_job(&self, spec: &StepSpec, token: &str) -> Result<()> {
        let mut blobs = BTreeSet::new();
        for m in &spec.inputs {
            let tree = m.tree.with_context(|| {
                format!("input `{}` is a directory, not a tree of the store", m.name)
            })?;
            tree_closure(&self.store, &tree, &mut blobs)?;
        }
        self.remote.push_image(&self.store, &spec.image).await?;
        for b in &blobs {
            self.remote.push_blob(&self.store, b).await?;
        }
        let artifact = Artifact {
            artifact_type: JOB_ARTIFACT.to_string(),
            config: serde_json::to_vec(spec)?,
            blobs: blobs.into_iter().collect(),
        };
        self.remote
            .push_artifact(&self.store, token, &artifact)
            .await?;
        Ok(())
    }

    async fn receive_done(&self, spec: &StepSpec, token: &str) -> Result<Option<Outcome>> {
        let tag = done_tag(token);
        let Some(a) = self.remote.pull_artifact(&tag, DONE_ARTIFACT).await? else {
            return Ok(None);
        };
        let done: Done = serde_json::from_slice(&a.config)
            .with_context(|| format!("`{tag}` is not a node's report"))?;
        if let Some(e) = done.error {
            anyhow::bail!("the node could not run the step: {e}");
        }
        for b in &a.blobs {
            self.remote.pull_blob(&self.store, b).await?;
        }
        if let Some(log) = &done.log {
            self.store.verify_blob(log)?;
            if let Some(parent) = spec.log.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&spec.log, self.store.read_blob(log)?)
                .with_context(|| format!("cannot write `{}`", spec.log.display()))?;
        }
        if let Some(tree) = &done.output {
            anyhow::ensure!(
                self.store.tree_is_complete(tree)?,
                "`{tag}` does not hold all of the output tree `{tree}`"
            );
            // The output folder (the engine's, or a retry's) is empty or
            // not made yet; the tree takes its place and is hashed by the
            // engine like any step's output.
            if spec.output.exists() {
                std::fs::remove_dir(&spec.output).with_context(|| {
                    format!("cannot replace `{}` (not empty?)", spec.output.display())
                })?;
            }
            self.store.materialize(tree, &spec.output)?;
        }
        Ok(done.outcome)
    }
}

impl Courier for RegistryCourier {
    fn send<'a>(
        &'a self,
        spec: &'a StepSpec,
        token: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            self.send_job(spec, token)
                .await
                .map_err(|e| format!("{} ({e:#})", self.target))
        })
    }

    fn receive<'a>(
        &'a self,
        spec: &'a StepSpec,
        token: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<Outcome>, String>> {
        Box::pin(async move {
            self.receive_done(spec, token)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    }

    fn node_args(&self) -> Vec<String> {
        let mut a = vec!["--registry".to_string(), self.target.clone()];
        if self.options.insecure {
            a.push("--insecure".into());
        }
        if let Some(ca) = &self.options.ca_file {
            a.push("--ca-file".into());
            a.push(ca.display().to_string());
        }
        a
    }
}

/// On a node: run the job `token` left on `remote`, with `store` (the
/// node's own) and the sandbox `kind` (whose init is `exe`), and leave
/// what it did for the controller. An error here is left as the job's
/// [`Done::error`] too, so the controller can name it.
pub async fn run_on_node(
    store: &Store,
    remote: &Remote,
    token: &str,
    kind: BackendKind,
    exe: &Path,
    cancel: CancellationToken,
) -> Result<Done> {
    let done = match run_job(store, remote, token, kind, exe, cancel).await {
        Ok(d) => d,
        Err(e) => Done {
            error: Some(format!("{e:#}")),
            ..Done::default()
        },
    };
    let mut blobs = BTreeSet::new();
    if let Some(t) = &done.output {
        tree_closure(store, t, &mut blobs)?;
    }
    blobs.extend(done.log);
    for b in &blobs {
        remote.push_blob(store, b).await?;
    }
    let artifact = Artifact {
        artifact_type: DONE_ARTIFACT.to_string(),
        config: serde_json::to_vec(&done)?,
        blobs: blobs.into_iter().collect(),
    };
    remote
        .push_artifact(store, &done_tag(token), &artifact)
        .await?;
    Ok(done)
}

/// On a node that cannot use its own store: leave `error` for the job
/// `token` on `remote` (through a throwaway store), so the controller can
/// name it.
pub async fn report_failure(remote: &Remote, token: &str, error: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let done = Done {
        error: Some(error.to_string()),
        ..Done::default()
    };
    let artifact = Artifact {
        artifact_type: DONE_ARTIFACT.to_string(),
        config: serde_json::to_vec(&done)?,
        blobs: Vec::new(),
    };
    remote
        .push_artifact(&store, &done_tag(token), &artifact)
        .await?;
    Ok(())
}

async fn run_job(
    store: &Store,
    remote: &Remote,
    token: &str,
    kind: BackendKind,
    exe: &Path,
    cancel: CancellationToken,
) -> Result<Done> {
    let a = remote
        .pull_artifact(token, JOB_ARTIFACT)
        .await?
        .with_context(|| format!("the registry holds no job `{token}`"))?;
    let mut spec: StepSpec =
        serde_json::from_slice(&a.config).with_context(|| format!("`{token}` is not a step"))?;
    for b in &a.blobs {
        remote.pull_blob(store, b).await?;
    }
    remote.pull_image(store, &spec.image).await?;
    let scratch = store.scratch("slurm-job-")?;
    for m in &mut spec.inputs {
        let tree = m
            .tree
            .with_context(|| format!("input `{}` names no tree", m.name))?;
        let dest = scratch.path().join("in").join(&m.name);
        store.materialize(&tree, &dest)?;
        m.host = dest;
    }
    let out = scratch.path().join("out");
    std::fs::create_dir(&out)?;
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    spec.output = out.clone();
    spec.log = scratch.path().join("log");
    let sandbox = Sandbox::connect(kind, store, exe).await?;
    sandbox.ensure_image(store, &spec.image).await?;
    let outcome = Backend::run(&sandbox, &spec, cancel).await?;
    if !spec.log.exists() {
        std::fs::write(&spec.log, b"")?;
    }
    let (log, _) = store.put_file_move(&spec.log)?;
    let output = match outcome.termination {
        Termination::Exited(0) => Some(store.snapshot_dir(&out, Ingest::Move)?),
        _ => None,
    };
    Ok(Done {
        outcome: Some(outcome),
        output,
        log: Some(log),
        error: None,
    })
}

/// The node's own store: `$REPRO_NODE_STORE`, else `repro-node-store` in
/// the node's temporary directory (kept between jobs, so blobs already
/// there are not fetched again).
pub fn node_store_dir() -> PathBuf {
    std::env::var_os(repro_evidence::env_vars::REPRO_NODE_STORE)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("repro-node-store"))
}
