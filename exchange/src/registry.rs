//! `repro push`, `repro pull` and the remote action cache of `repro build
//! --remote`: a shared store on an OCI registry.
//!
//! A model version travels as one artifact tagged `<name>-<version>`
//! (sanitized), of type [`RECORD_ARTIFACT`]: its config is a [`RecordIndex`]
//! (record, attestations, images, steps) and its layers are every blob the
//! version needs: the record and attestation envelopes, signing public keys,
//! recipe and lock bytes, every tree object and file of the data, code and
//! step output trees, and the step logs. Images go as real image manifests
//! by digest. A step result travels as an artifact tagged `ac-<key hex>` of
//! type [`ACTION_ARTIFACT`] whose config is the action result and whose
//! layers are the output tree's blobs and the log.
//!
//! Pulling re-hashes every blob before it enters the store, and makes the
//! record visible (`refs/records`) only after everything it needs is in.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use repro_engine::remote::{ImageSource, RemoteCache};
use repro_store::{
    ActionResult, BlobDigest, EntryKind, ImageDigest, RecordDigest, StepKey, Store, TreeDigest,
};
use repro_toolchains::registry::{
    sanitize_tag, Artifact, Credentials, Remote, RemoteOptions, RemoteRef,
};
use serde::{Deserialize, Serialize};

use repro_evidence::env_vars;
use repro_evidence::exit::UserError;
use repro_evidence::keys::Envelope;
use repro_evidence::record::Statement;

/// The artifact type of a pushed model version.
pub const RECORD_ARTIFACT: &str = "application/vnd.repro.record.v1+json";
/// The artifact type of a remote action-cache entry.
pub const ACTION_ARTIFACT: &str = "application/vnd.repro.action.v1+json";

/// How to reach a registry (shared by push, pull and `build --remote`).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Talk plain HTTP to the registry (e.g. one on 127.0.0.1).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust for the registry's TLS.
    pub ca_file: Option<PathBuf>,
}

/// The config of a record artifact: what the version consists of.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordIndex {
    /// The model name.
    pub name: String,
    /// The model version.
    pub version: String,
    /// The record envelope's digest.
    pub record: RecordDigest,
    /// The attestation envelopes about it.
    pub attestations: Vec<BlobDigest>,
    /// The toolchain images.
    pub images: Vec<ImageDigest>,
}

/// Connect to `target` (`host[:port]/repo`) with credentials from
/// `REPRO_REGISTRY_USERNAME`/`REPRO_REGISTRY_PASSWORD`, else the Docker
/// config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
pub async fn connect(target: &str, args: &RegistryOptions) -> Result<Remote> {
    let target = RemoteRef::parse(target).map_err(|e| UserError(e.to_string()))?;
    let credentials = match (
        std::env::var(env_vars::REPRO_REGISTRY_USERNAME),
        std::env::var(env_vars::REPRO_REGISTRY_PASSWORD),
    ) {
        (Ok(u), Ok(p)) => Some(Credentials::new(u, p)),
        _ => {
            let dir = std::env::var_os(env_vars::DOCKER_CONFIG)
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os(env_vars::HOME).map(|h| PathBuf::from(h).join(".docker"))
                });
            match dir {
                Some(d) => {
                    Credentials::from_docker_config(&d.join("config.json"), &target.registry)?
                }
                None => None,
            }
        }
    };
    let opts = RemoteOptions {
        insecure: args.insecure,
        ca_file: args.ca_file.clone(),
        credentials,
    };
    Ok(Remote::connect(&target, &opts).await?)
}

fn envelope_keys(store: &Store, bytes: &[u8], out: &mut BTreeSet<BlobDigest>) {
    if let Ok(env) = serde_json::from_slice::<Envelope>(bytes) {
        for s in env.signatures {
            if let Ok(k) = s.keyid.parse::<BlobDigest>() {
                if store.has_blob(&k) {
                    out.insert(k);
                }
            }
        }
    }
}

/// Add tree `t`'s object, subtrees and files to `out`.
pub(crate) fn tree_closure(
    store: &Store,
    t: &TreeDigest,
    out: &mut BTreeSet<BlobDigest>,
) -> Result<()> {
    if !out.insert(BlobDigest::from_hash(t.hash())) {
        return Ok(());
    }
    let tree = store.get_tree(t)?;
    for e in tree.entries {
        match e.kind {
            EntryKind::File { digest, .. } => {
                out.insert(digest);
            }
            EntryKind::Dir { tree } => tree_closure(store, &tree, out)?,
            EntryKind::Symlink { .. } => {}
        }
    }
    Ok(())
}

fn statement_of(bytes: &[u8]) -> Result<Statement> {
    repro_evidence::record::statement_of(bytes).context("the record")
}

fn digest_of<T: std::str::FromStr>(text: Option<String>) -> Option<T> {
    text.and_then(|t| t.parse().ok())
}

/// What `repro push` did.
#[derive(Debug)]
pub struct PushSummary {
    /// The record pushed.
    pub record: RecordDigest,
    /// Blobs in the artifact.
    pub blobs: usize,
    /// Of which uploaded now (the rest were there).
    pub uploaded: usize,
    /// Images pushed.
    pub images: usize,
    /// The tag.
    pub tag: String,
}

/// The tag of `name@version`'s record artifact.
pub fn record_tag(name: &str, version: &str) -> String {
    sanitize_tag(&format!("{name}-{version}"))
}

fn split_version(what: &str) -> Result<(String, String)> {
    let v = repro_evidence::VersionRef::parse(what)?;
    Ok((v.name, v.version))
}

/// Push `name@version` (record, attestations, everything they need) to `remote`.
pub async fn push(store: &Store, what: &str, remote: &Remote) -> Result<PushSummary> {
    let (name, version) = split_version(what)?;
    let (name, version) = (name.as_str(), version.as_str());
    let record = store.resolve_record(name, version)?;
    let bytes = store.get_record(&record)?;
    let statement = statement_of(&bytes)?;
    let mut blobs = BTreeSet::new();
    blobs.insert(BlobDigest::from_hash(record.hash()));
    envelope_keys(store, &bytes, &mut blobs);
    let attestations = store.attestations_of(&record)?;
    for a in &attestations {
        blobs.insert(*a);
        envelope_keys(store, &store.read_blob(a)?, &mut blobs);
    }
    let mut images = Vec::new();
    for dep in &statement.predicate.build_definition.resolved_dependencies {
        let n = dep.name.as_str();
        if n == "recipe" || n == "lock" {
            if let Some(d) = digest_of::<BlobDigest>(dep.sha256_text()) {
                blobs.insert(d);
            }
        } else if n.starts_with("toolchains.") {
            if let Some(d) = digest_of::<ImageDigest>(dep.sha256_text()) {
                images.push(d);
            }
        } else if n.starts_with("data.") || n.starts_with("code.") {
            if let Some(d) = digest_of::<TreeDigest>(dep.sha256_text()) {
                tree_closure(store, &d, &mut blobs)?;
            }
        }
    }
    for b in &statement.predicate.run_details.byproducts {
        if let Some(t) = digest_of::<TreeDigest>(b.sha256_text()) {
            tree_closure(store, &t, &mut blobs)?;
        }
        if let Some(log) = b.annotations.get("log").and_then(|v| v.as_str()) {
            if let Ok(d) = log.parse::<BlobDigest>() {
                blobs.insert(d);
            }
        }
    }
    for i in &images {
        remote.push_image(store, i).await?;
    }
    let mut uploaded = 0;
    for b in &blobs {
        if remote.push_blob(store, b).await? {
            uploaded += 1;
        }
    }
    let index = RecordIndex {
        name: name.to_string(),
        version: version.to_string(),
        record,
        attestations,
        images: images.clone(),
    };
    let tag = record_tag(name, version);
    let artifact = Artifact {
        artifact_type: RECORD_ARTIFACT.to_string(),
        config: serde_json::to_vec(&index)?,
        blobs: blobs.iter().copied().collect(),
    };
    remote.push_artifact(store, &tag, &artifact).await?;
    Ok(PushSummary {
        record,
        blobs: blobs.len(),
        uploaded,
        images: images.len(),
        tag,
    })
}

/// What `repro pull` did.
#[derive(Debug)]
pub struct PullSummary {
    /// The record pulled.
    pub record: RecordDigest,
    /// Blobs in the artifact.
    pub blobs: usize,
    /// Of which downloaded now.
    pub downloaded: usize,
}

/// Pull `name@version` from `remote` into `store`: every blob re-hashed,
/// images registered, then the attestations and finally the record ref.
pub async fn pull(store: &Store, what: &str, remote: &Remote) -> Result<PullSummary> {
    let (name, version) = split_version(what)?;
    let (name, version) = (name.as_str(), version.as_str());
    let tag = record_tag(name, version);
    let Some(artifact) = remote.pull_artifact(&tag, RECORD_ARTIFACT).await? else {
        return Err(UserError(format!(
            "`{}` has no `{what}` (tag `{tag}`)\nhint: push it first: `repro push {what} --to {}`",
            remote.target(),
            remote.target()
        ))
        .into());
    };
    let index: RecordIndex = serde_json::from_slice(&artifact.config).with_context(|| {
        format!(
            "the record artifact `{tag}` at `{}` is malformed",
            remote.target()
        )
    })?;
    if index.name != name || index.version != version {
        anyhow::bail!(
            "the artifact `{tag}` at `{}` is about `{}@{}`, not `{what}`",
            remote.target(),
            index.name,
            index.version
        );
    }
    let mut downloaded = 0;
    for b in &artifact.blobs {
        if remote.pull_blob(store, b).await? {
            downloaded += 1;
        }
    }
    for i in &index.images {
        remote.pull_image(store, i).await?;
    }
    let bytes = store.get_record(&index.record)?;
    // A version keeps naming the inputs it was first built from: a record
    // of other inputs than this store's records of the version is refused
    // (exit 3) before its attestations or ref are written.
    let statement = repro_evidence::record::statement_of(&bytes)
        .with_context(|| format!("the record `{}` of `{what}` is malformed", index.record))?;
    let now = repro_evidence::record::Inputs::of_statement(&statement);
    let recipe = &statement
        .predicate
        .build_definition
        .external_parameters
        .recipe;
    if let Some((existing, diffs)) = repro_evidence::record::conflict(
        store,
        name,
        version,
        &now,
        recipe,
        ("in this store's record", "in the pulled one"),
    )? {
        anyhow::bail!(
            "cannot pull `{what}` from `{}`: its record `{}` was built from other inputs than this store's record `{existing}` of that version:{}\nhint: a version keeps naming the inputs it was first built from; pull it into another store (`--store`)",
            remote.target(),
            index.record,
            diffs.iter().map(|d| format!("\n  - {d}")).collect::<String>()
        );
    }
    for a in &index.attestations {
        let env = store.read_blob(a)?;
        store.put_attestation(&index.record, &env)?;
    }
    let stored = store.put_record(&bytes, name, version, &repro_evidence::record::inputs_of)?;
    anyhow::ensure!(
        stored == index.record,
        "the record `{}` stored as `{stored}`",
        index.record
    );
    Ok(PullSummary {
        record: index.record,
        blobs: artifact.blobs.len(),
        downloaded,
    })
}

/// [`RemoteCache`] on a registry repository.
pub struct RegistryCache {
    remote: Remote,
    store: Arc<Store>,
}

impl RegistryCache {
    /// A cache on `remote` filling `store`.
    pub fn new(remote: Remote, store: Arc<Store>) -> Self {
        RegistryCache { remote, store }
    }
}

fn ac_tag(key: &StepKey) -> String {
    format!("ac-{}", key.hex())
}

impl RemoteCache for RegistryCache {
    fn lookup<'a>(&'a self, key: &'a StepKey) -> BoxFuture<'a, Result<Option<ActionResult>>> {
        Box::pin(async move {
            let Some(a) = self
                .remote
                .pull_artifact(&ac_tag(key), ACTION_ARTIFACT)
                .await?
            else {
                return Ok(None);
            };
            let result: ActionResult = serde_json::from_slice(&a.config)
                .with_context(|| format!("the remote cache entry of `{key}` is malformed"))?;
            for b in &a.blobs {
                self.remote.pull_blob(&self.store, b).await?;
            }
            anyhow::ensure!(
                self.store.tree_is_complete(&result.output)?,
                "the remote cache entry of `{key}` does not hold all of its output tree `{}`",
                result.output
            );
            self.store.verify_blob(&result.log)?;
            self.store.ac_put(key, &result)?;
            Ok(Some(result))
        })
    }

    fn publish<'a>(
        &'a self,
        key: &'a StepKey,
        result: &'a ActionResult,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut blobs = BTreeSet::new();
            tree_closure(&self.store, &result.output, &mut blobs)?;
            blobs.insert(result.log);
            for b in &blobs {
                self.remote.push_blob(&self.store, b).await?;
            }
            let a = Artifact {
                artifact_type: ACTION_ARTIFACT.to_string(),
                config: serde_json::to_vec(result)?,
                blobs: blobs.into_iter().collect(),
            };
            self.remote
                .push_artifact(&self.store, &ac_tag(key), &a)
                .await?;
            Ok(())
        })
    }
}

/// The remote cache of `repro build --remote <target>`.
pub async fn cache(
    target: &str,
    args: &RegistryOptions,
    store: Arc<Store>,
) -> Result<Arc<dyn RemoteCache>> {
    let remote = connect(target, args).await?;
    Ok(Arc::new(RegistryCache::new(remote, store)))
}

/// Pulls images named `host/repo@sha256:...` for the engine, connecting to
/// each repository with the same options.
#[derive(Debug, Clone, Default)]
pub struct RegistryImages {
    /// How to reach the registries.
    pub options: RegistryOptions,
}

impl ImageSource for RegistryImages {
    fn pull_image<'a>(
        &'a self,
        store: &'a Store,
        repository: &'a str,
        digest: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let remote = connect(repository, &self.options).await?;
            remote.pull_image(store, digest).await?;
            Ok(())
        })
    }
}
