//! A shared store on an OCI registry (the only place that speaks the OCI
//! distribution protocol, through `oci-client`).
//!
//! Every store blob travels as a registry blob under its own digest. Groups
//! of blobs are tied together by *artifacts*: OCI image manifests whose
//! config is a small JSON document of `repro`'s (its media type names what
//! the artifact is, e.g. a record or an action-cache entry) and whose layers
//! list every blob the artifact needs, so the registry keeps them and a
//! reader knows what to fetch. Artifacts are found by tag. Images are pushed
//! as the real image manifests they are, by digest, so `docker pull
//! <registry>/<repo>@sha256:...` works on them.
//!
//! Nothing downloaded becomes visible before it is re-hashed: blobs are
//! written to a scratch file and enter the store through
//! [`Store::put_reader_expecting`]. Credentials are kept out of every
//! message this module produces (and out of `Debug`).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use repro_store::image::{media_type, Manifest};
use repro_store::{BlobDigest, Hash, ImageDigest, Store};
use serde::{Deserialize, Serialize};

/// A registry result.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The target is not `host[:port]/repository`.
    #[error("`{0}` is not a registry repository\nhint: write it as `host[:port]/repository`, e.g. `127.0.0.1:5000/models`")]
    BadTarget(String),

    /// The registry refused the credentials (or asked for some).
    #[error("the registry `{registry}` refused access to `{repository}`: {why}\nhint: set `REPRO_REGISTRY_USERNAME` and `REPRO_REGISTRY_PASSWORD`, or log in with `docker login {registry}`")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry said (never the credentials).
        why: String,
    },

    /// A blob the registry should hold is not there.
    #[error("the registry `{remote}` is missing blob `{digest}`\nhint: push it again from a store that has it (`repro push`)")]
    MissingBlob {
        /// `host/repository`.
        remote: String,
        /// The blob.
        digest: String,
    },

    /// Talking to the registry failed.
    #[error("cannot {action} `{what}` at `{remote}`: {why}")]
    Transfer {
        /// What was being done.
        action: &'static str,
        /// The blob, manifest or tag.
        what: String,
        /// `host/repository`.
        remote: String,
        /// The cause (never the credentials).
        why: String,
    },

    /// The registry sent bytes that do not hash to what was asked for.
    #[error("the registry `{remote}` sent corrupt data for `{expected}`: it hashes to `{actual}`\nhint: the registry's copy is damaged or was tampered with; push it again from a trusted store")]
    Corrupt {
        /// `host/repository`.
        remote: String,
        /// What was asked for.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },

    /// A manifest or artifact config from the registry does not parse.
    #[error("the registry `{remote}` holds a malformed {what} `{name}`: {why}")]
    Malformed {
        /// `host/repository`.
        remote: String,
        /// What kind of object.
        what: &'static str,
        /// Its tag or digest.
        name: String,
        /// What is wrong.
        why: String,
    },

    /// The CA file or Docker config file cannot be used.
    #[error("cannot use `{}`: {why}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },

    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] repro_store::Error),

    /// Local scratch I/O failed.
    #[error("cannot {action} `{}`: {err}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        err: std::io::Error,
    },
}

/// A user name and password for HTTP basic auth. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The host part of a Docker config `auths` key (`https://host:port/v1/` -> `host:port`).
fn auth_key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The credentials for `registry` (`host[:port]`) in a Docker config
    /// file (`config.json`, its `auths` map: a base64 `user:password` in
    /// `auth`, or `username` and `password`). `None` when the file does not
    /// exist or has no entry for the registry. Credential helpers
    /// (`credsStore`, `credHelpers`) are not consulted.
    pub fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Credentials>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(RegistryError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    err,
                })
            }
        };
        let bad = |why: String| RegistryError::Config {
            path: path.to_path_buf(),
            why,
        };
        let config: DockerConfig = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not a Docker config file: {e}")))?;
        let Some(entry) = config
            .auths
            .iter()
            .find(|(k, _)| auth_key_host(k) == registry)
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| {
                    bad(format!(
                        "the `auth` of `{registry}` is not base64\nhint: log in again with `docker login {registry}`"
                    ))
                })?;
            let text = String::from_utf8(decoded)
                .map_err(|_| bad(format!("the `auth` of `{registry}` is not UTF-8 text")))?;
            let Some((u, p)) = text.split_once(':') else {
                return Err(bad(format!(
                    "the `auth` of `{registry}` is not `user:password`"
                )));
            };
            return Ok(Some(Credentials::new(u, p)));
        }
        match (&entry.username, &entry.password) {
            (Some(u), Some(p)) => Ok(Some(Credentials::new(u, p))),
            _ => Ok(None),
        }
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Plain HTTP instead of HTTPS (for a registry on `127.0.0.1`, say).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Basic-auth credentials; anonymous when `None`.
    pub credentials: Option<Credentials>,
}

/// A repository on a registry: `host[:port]/path/of/repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path.
    pub repository: String,
}

impl RemoteRef {
    /// Parse `host[:port]/repository` (no tag, no digest).
    pub fn parse(s: &str) -> Result<RemoteRef> {
        let bad = || RegistryError::BadTarget(s.to_string());
        let (registry, repository) = s.split_once('/').ok_or_else(bad)?;
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|p| {
                !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        let host_ok = !registry.is_empty()
            && registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !repo_ok || !host_ok {
            return Err(bad());
        }
        Ok(RemoteRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
        })
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// A group of blobs under a tag: what an artifact manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The artifact's type (also the media type of its config).
    pub artifact_type: String,
    /// The config document (JSON of the caller's).
    pub config: Vec<u8>,
    /// Every blob it needs, in the order given.
    pub blobs: Vec<BlobDigest>,
}

/// The media type of every plain store blob inside an artifact.
pub const BLOB_MEDIA_TYPE: &str = "application/vnd.repro.blob.v1";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    schema_version: u32,
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Desc,
    layers: Vec<Desc>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: u64,
}

/// Make `s` a valid OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`; other
/// characters become `_`.
pub fn sanitize_tag(s: &str) -> String {
    let mut t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.starts_with(['.', '-']) || t.is_empty() {
        t.insert(0, '_');
    }
    t.truncate(128);
    t
}

/// A connection to one repository of a registry.
pub struct Remote {
    client: Client,
    auth: RegistryAuth,
    target: RemoteRef,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Does the error say "not found"?
fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            let c = format!("{:?}", e.code).to_ascii_uppercase();
            c.contains("UNKNOWN") || c.contains("NOTFOUND")
        }),
        OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()) == Some(404),
        _ => false,
    }
}

fn is_unauthorized(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            let c = format!("{:?}", e.code).to_ascii_uppercase();
            c.contains("UNAUTHORIZED") || c.contains("DENIED")
        }),
        OciDistributionError::RequestError(r) => {
            matches!(r.status().map(|s| s.as_u16()), Some(401 | 403))
        }
        _ => false,
    }
}

impl Remote {
    /// Connect to `target`: checks that the registry answers and accepts the
    /// credentials (or anonymous access).
    pub async fn connect(target: &RemoteRef, opts: &RemoteOptions) -> Result<Remote> {
        let mut config = ClientConfig {
            protocol: if opts.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        };
        if let Some(ca) = &opts.ca_file {
            let data = std::fs::read(ca).map_err(|err| RegistryError::Io {
                action: "read the CA file",
                path: ca.clone(),
                err,
            })?;
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let client = Client::try_from(config).map_err(|e| RegistryError::Transfer {
            action: "set up a client for",
            what: target.registry.clone(),
            remote: target.to_string(),
            why: e.to_string(),
        })?;
        let auth = match &opts.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let remote = Remote {
            client,
            auth,
            target: target.clone(),
        };
        let probe = remote.reference_tag("repro-probe");
        remote
            .client
            .auth(&probe, &remote.auth, RegistryOperation::Push)
            .await
            .map_err(|e| remote.err("connect to", &target.registry, e))?;
        Ok(remote)
    }

    /// The repository this connects to.
    pub fn target(&self) -> &RemoteRef {
        &self.target
    }

    fn reference_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.target.registry.clone(),
            self.target.repository.clone(),
            tag.to_string(),
        )
    }

    fn reference_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.target.registry.clone(),
            self.target.repository.clone(),
            digest.to_string(),
        )
    }

    fn err(&self, action: &'static str, what: &str, e: OciDistributionError) -> RegistryError {
        if is_unauthorized(&e) {
            return RegistryError::Unauthorized {
                registry: self.target.registry.clone(),
                repository: self.target.repository.clone(),
                why: "401 unauthorized".to_string(),
            };
        }
        let mut why = e.to_string();
        if let Some(c) = &self.auth_password() {
            why = why.replace(c.as_str(), "<hidden>");
        }
        RegistryError::Transfer {
            action,
            what: what.to_string(),
            remote: self.target.to_string(),
            why,
        }
    }

    fn auth_password(&self) -> Option<String> {
        match &self.auth {
            RegistryAuth::Basic(_, p) if !p.is_empty() => Some(p.clone()),
            _ => None,
        }
    }

    /// Whether the registry holds blob `d`.
    pub async fn has_blob(&self, d: &BlobDigest) -> Result<bool> {
        let r = self.reference_tag("latest");
        self.client
            .blob_exists(&r, &d.to_string())
            .await
            .map_err(|e| self.err("look up blob", &d.to_string(), e))
    }

    /// Upload store blob `d` unless the registry has it; returns whether it
    /// was uploaded. The blob is re-hashed as it is read from the store.
    pub async fn push_blob(&self, store: &Store, d: &BlobDigest) -> Result<bool> {
        if self.has_blob(d).await? {
            return Ok(false);
        }
        let bytes = store.read_blob(d)?;
        let r = self.reference_tag("latest");
        self.client
            .push_blob(&r, bytes, &d.to_string())
            .await
            .map_err(|e| self.err("upload blob", &d.to_string(), e))?;
        Ok(true)
    }

    /// Download blob `d` into the store unless it is there; returns whether
    /// it was downloaded. The bytes go to a scratch file first and enter the
    /// store only if they hash to `d`.
    pub async fn pull_blob(&self, store: &Store, d: &BlobDigest) -> Result<bool> {
        if store.has_blob(d) {
            return Ok(false);
        }
        let scratch = store.scratch("pull-")?;
        let path = scratch.path().join("blob");
        self.download(d, &path).await?;
        let file = std::fs::File::open(&path).map_err(|err| RegistryError::Io {
            action: "open",
            path: path.clone(),
            err,
        })?;
        store
            .put_reader_expecting(std::io::BufReader::new(file), d)
            .map_err(|e| match e {
                repro_store::Error::Corrupt { actual, .. } => RegistryError::Corrupt {
                    remote: self.target.to_string(),
                    expected: d.to_string(),
                    actual: actual.to_string(),
                },
                e => e.into(),
            })?;
        Ok(true)
    }

    async fn download(&self, d: &BlobDigest, path: &Path) -> Result<()> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|err| RegistryError::Io {
                action: "create",
                path: path.to_path_buf(),
                err,
            })?;
        let r = self.reference_tag("latest");
        let desc = OciDescriptor {
            digest: d.to_string(),
            ..Default::default()
        };
        match self.client.pull_blob(&r, &desc, file).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Err(RegistryError::MissingBlob {
                remote: self.target.to_string(),
                digest: d.to_string(),
            }),
            Err(OciDistributionError::DigestError(_)) => {
                let actual = std::fs::File::open(path)
                    .and_then(Hash::of_reader)
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_else(|_| "unknown".to_string());
                Err(RegistryError::Corrupt {
                    remote: self.target.to_string(),
                    expected: d.to_string(),
                    actual,
                })
            }
            Err(e) => Err(self.err("download blob", &d.to_string(), e)),
        }
    }

    /// Download a small blob into memory, checking its digest.
    async fn small_blob(&self, d: &str) -> Result<Vec<u8>> {
        let r = self.reference_tag("latest");
        let desc = OciDescriptor {
            digest: d.to_string(),
            ..Default::default()
        };
        let mut out = Vec::new();
        match self.client.pull_blob(&r, &desc, &mut out).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {
                return Err(RegistryError::MissingBlob {
                    remote: self.target.to_string(),
                    digest: d.to_string(),
                })
            }
            Err(e) => return Err(self.err("download blob", d, e)),
        }
        let actual = Hash::of(&out).to_string();
        if actual != d {
            return Err(RegistryError::Corrupt {
                remote: self.target.to_string(),
                expected: d.to_string(),
                actual,
            });
        }
        Ok(out)
    }

    /// Push `artifact` under `tag`: its blobs must already be on the
    /// registry ([`Remote::push_blob`]) and in `store` (for their sizes).
    /// Returns the digest of the artifact manifest.
    pub async fn push_artifact(&self, store: &Store, tag: &str, a: &Artifact) -> Result<Hash> {
        let config_digest = Hash::of(&a.config);
        let r = self.reference_tag(tag);
        self.client
            .push_blob(&r, a.config.clone(), &config_digest.to_string())
            .await
            .map_err(|e| self.err("upload artifact config", tag, e))?;
        let mut layers = Vec::with_capacity(a.blobs.len());
        for b in &a.blobs {
            let path = store.blob_path(b);
            let size = std::fs::metadata(&path)
                .map_err(|err| RegistryError::Io {
                    action: "inspect",
                    path,
                    err,
                })?
                .len();
            layers.push(Desc {
                media_type: BLOB_MEDIA_TYPE.to_string(),
                digest: b.to_string(),
                size,
            });
        }
        let m = ArtifactManifest {
            schema_version: 2,
            media_type: media_type::OCI_MANIFEST.to_string(),
            artifact_type: Some(a.artifact_type.clone()),
            config: Desc {
                media_type: a.artifact_type.clone(),
                digest: config_digest.to_string(),
                size: a.config.len() as u64,
            },
            layers,
        };
        let body = serde_json::to_vec(&m).map_err(|e| RegistryError::Malformed {
            remote: self.target.to_string(),
            what: "artifact manifest",
            name: tag.to_string(),
            why: e.to_string(),
        })?;
        let digest = Hash::of(&body);
        self.client
            .push_manifest_raw(
                &r,
                body,
                http::HeaderValue::from_static(media_type::OCI_MANIFEST),
            )
            .await
            .map_err(|e| self.err("upload artifact manifest", tag, e))?;
        Ok(digest)
    }

    /// The artifact tagged `tag`, if the registry has one of `artifact_type`.
    /// Its config is checked against its digest; its blobs are not fetched
    /// ([`Remote::pull_blob`] each).
    pub async fn pull_artifact(&self, tag: &str, artifact_type: &str) -> Result<Option<Artifact>> {
        let r = self.reference_tag(tag);
        let (body, _) = match self
            .client
            .pull_manifest_raw(&r, &self.auth, &[media_type::OCI_MANIFEST])
            .await
        {
            Ok(x) => x,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.err("download artifact manifest", tag, e)),
        };
        let malformed = |why: String| RegistryError::Malformed {
            remote: self.target.to_string(),
            what: "artifact manifest",
            name: tag.to_string(),
            why,
        };
        let m: ArtifactManifest =
            serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        if m.config.media_type != artifact_type {
            return Err(malformed(format!(
                "it is a `{}`, expected `{artifact_type}`",
                m.config.media_type
            )));
        }
        let config = self.small_blob(&m.config.digest).await?;
        let mut blobs = Vec::with_capacity(m.layers.len());
        for l in &m.layers {
            blobs.push(
                l.digest
                    .parse::<BlobDigest>()
                    .map_err(|e| malformed(e.to_string()))?,
            );
        }
        Ok(Some(Artifact {
            artifact_type: artifact_type.to_string(),
            config,
            blobs,
        }))
    }

    /// Push image `d` from the store as a real image manifest (by digest),
    /// with its config and layers.
    pub async fn push_image(&self, store: &Store, d: &ImageDigest) -> Result<()> {
        let info = store.get_image(d)?;
        self.push_blob(store, &info.config).await?;
        for l in &info.layers {
            self.push_blob(store, &l.digest).await?;
        }
        let body = store.read_blob(&BlobDigest::from_hash(d.hash()))?;
        let m = Manifest::parse(&body).map_err(|why| RegistryError::Malformed {
            remote: self.target.to_string(),
            what: "image manifest",
            name: d.to_string(),
            why,
        })?;
        let mt = m
            .media_type
            .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string());
        let ct = http::HeaderValue::from_str(&mt).map_err(|e| RegistryError::Malformed {
            remote: self.target.to_string(),
            what: "image manifest",
            name: d.to_string(),
            why: e.to_string(),
        })?;
        self.client
            .push_manifest_raw(&self.reference_digest(&d.to_string()), body, ct)
            .await
            .map_err(|e| self.err("upload image manifest", &d.to_string(), e))?;
        Ok(())
    }

    /// Pull image `d` by digest into the store (manifest, config, layers,
    /// each re-hashed) and register it. Does nothing if the store has it.
    pub async fn pull_image(&self, store: &Store, d: &ImageDigest) -> Result<()> {
        if store.get_image(d).is_ok() {
            return Ok(());
        }
        let r = self.reference_digest(&d.to_string());
        let (body, _) = match self
            .client
            .pull_manifest_raw(
                &r,
                &self.auth,
                &[media_type::OCI_MANIFEST, media_type::DOCKER_MANIFEST],
            )
            .await
        {
            Ok(x) => x,
            Err(e) if is_not_found(&e) => {
                return Err(RegistryError::MissingBlob {
                    remote: self.target.to_string(),
                    digest: d.to_string(),
                })
            }
            Err(e) => return Err(self.err("download image manifest", &d.to_string(), e)),
        };
        let actual = Hash::of(&body);
        if actual != d.hash() {
            return Err(RegistryError::Corrupt {
                remote: self.target.to_string(),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        let m = Manifest::parse(&body).map_err(|why| RegistryError::Malformed {
            remote: self.target.to_string(),
            what: "image manifest",
            name: d.to_string(),
            why,
        })?;
        self.pull_blob(store, &BlobDigest::from_hash(m.config.digest))
            .await?;
        for l in &m.layers {
            self.pull_blob(store, &BlobDigest::from_hash(l.digest))
                .await?;
        }
        store.put_image(&body)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ref_parses_host_port_and_nested_repo() {
        let r = RemoteRef::parse("127.0.0.1:5000/team/models").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/models");
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/models");
        for bad in [
            "noslash",
            "host/",
            "/repo",
            "host/Repo",
            "host//x",
            "h st/r",
        ] {
            assert!(RemoteRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_sanitized() {
        assert_eq!(
            sanitize_tag("breast-cancer-1.0.0+b1"),
            "breast-cancer-1.0.0_b1"
        );
        assert_eq!(sanitize_tag(".x"), "_.x");
        assert_eq!(sanitize_tag(&"a".repeat(300)).len(), 128);
    }

    #[test]
    fn docker_config_auth_is_decoded_and_matched_by_host() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{auth}"}},"other:1":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let c = Credentials::from_docker_config(&p, "reg.example:5000")
            .unwrap()
            .unwrap();
        assert_eq!(c, Credentials::new("alice", "s3cr:et"));
        assert!(!format!("{c:?}").contains("s3cr"));
        let c = Credentials::from_docker_config(&p, "other:1")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "bob");
        assert!(Credentials::from_docker_config(&p, "nowhere:1")
            .unwrap()
            .is_none());
        assert!(
            Credentials::from_docker_config(&t.path().join("missing"), "x")
                .unwrap()
                .is_none()
        );
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"!!!"}}}"#).unwrap();
        let e = Credentials::from_docker_config(&p, "x").unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
    }
}
