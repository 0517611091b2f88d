//! Importing image archives: OCI image layouts and `docker save` output.
//!
//! A tar is read once, sequentially: every blob-sized entry is streamed
//! straight into the store (temp file in `v1/tmp`, hashed as it goes), so
//! memory stays bounded whatever the layer sizes; only small metadata files
//! are held in memory. Entries under `blobs/sha256/<hex>` must hash to their
//! name or the import fails naming the digest. A docker archive is converted
//! to an OCI manifest deterministically, keeping the config bytes as they
//! are, so the Docker image ID (the config digest) does not change.
//!
//! Large entries of a tar that turn out to be unused (an OCI layout's
//! unreferenced blobs) stay in the store as unreferenced blobs.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use repro_store::image::{
    media_type, oci_manifest_bytes, Descriptor, ImageConfig, Index, Manifest,
};
use repro_store::{BlobDigest, Hash, ImageDigest, Store};
use serde::Deserialize;

use crate::{Error, Result};

/// Tar entries outside `blobs/` up to this size are kept in memory.
const SMALL: u64 = 1 << 20;
/// The most bytes of JSON metadata read into memory.
const MAX_JSON: u64 = 64 << 20;
/// The most image indexes nested in one another that are followed.
const MAX_NESTING: usize = 8;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Import an image archive into `store`; returns the image's manifest digest.
///
/// `path` is an OCI image layout (a directory, or a tar of one, plain or
/// gzipped) whose `index.json` names exactly one image, or a docker archive
/// (`docker save` output, as a tar or unpacked). Importing the same archive
/// twice gives the same digest.
pub fn import_archive(store: &Store, path: &Path) -> Result<ImageDigest> {
    read_archive(store, path, true)
}

/// The manifest digest [`import_archive`] would give for the archive at
/// `path`, without registering the image: its blobs (and the manifest's)
/// go into the store as unreferenced blobs, but no image ref is written
/// and the store's `index.json` is not rewritten. For telling whether an
/// archive still holds the image a lock pins (`repro lock --check`).
pub fn archive_digest(store: &Store, path: &Path) -> Result<ImageDigest> {
    read_archive(store, path, false)
}

fn read_archive(store: &Store, path: &Path, register: bool) -> Result<ImageDigest> {
    let meta = fs::metadata(path).map_err(io_err("inspect", path))?;
    let layout = if meta.is_dir() {
        Layout::Dir(path.to_path_buf())
    } else {
        Layout::Tar(read_tar(store, path)?)
    };
    let src = Source {
        store,
        path,
        layout,
        register,
    };
    if src.exists("oci-layout") {
        src.import_oci()
    } else if src.exists("manifest.json") {
        src.import_docker()
    } else {
        Err(Error::NotAnImage {
            path: path.to_path_buf(),
        })
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |err| Error::Io { action, path, err }
}

/// Where the archive's files are.
enum Layout {
    /// An unpacked layout: files are read on demand.
    Dir(PathBuf),
    /// A tar, already read: small files in memory, the rest in the store.
    Tar(TarFiles),
}

enum Content {
    Bytes(Vec<u8>),
    Blob(BlobDigest, u64),
}

#[derive(Default)]
struct TarFiles {
    files: HashMap<String, Content>,
    /// Symlinks and hard links: name -> normalized target.
    links: HashMap<String, String>,
}

impl TarFiles {
    fn get(&self, name: &str) -> Option<&Content> {
        let mut name = name;
        for _ in 0..16 {
            if let Some(c) = self.files.get(name) {
                return Some(c);
            }
            name = self.links.get(name)?;
        }
        None
    }
}

/// Normalize an archive path: no leading `/` or `./`, `..` resolved; `None`
/// if it climbs out of the archive or is empty.
fn normalize(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A reader that remembers whether it failed, to tell archive read errors
/// from store write errors.
struct Tracked<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Stream `r` into the store, checking it against `expected` if given.
fn put_tracked(
    store: &Store,
    r: impl Read,
    expected: Option<&BlobDigest>,
    read_path: &Path,
    archive: &Path,
) -> Result<(BlobDigest, u64)> {
    let mut t = Tracked {
        inner: r,
        failed: false,
    };
    let res = match expected {
        Some(e) => store.put_reader_expecting(&mut t, e).map(|n| (*e, n)),
        None => store.put_reader(&mut t),
    };
    res.map_err(|e| match e {
        repro_store::Error::Io { err, .. } if t.failed => Error::Io {
            action: "read",
            path: read_path.to_path_buf(),
            err,
        },
        repro_store::Error::Mismatch { expected, actual } => Error::BlobMismatch {
            path: archive.to_path_buf(),
            expected,
            actual,
        },
        e => e.into(),
    })
}

fn blob_name_digest(name: &str) -> Option<BlobDigest> {
    name.strip_prefix("blobs/sha256/")
        .and_then(|hex| Hash::from_hex(hex).ok())
        .map(BlobDigest::from_hash)
}

/// Read a tar (plain or gzipped) in one sequential pass.
fn read_tar(store: &Store, path: &Path) -> Result<TarFiles> {
    let mut f = fs::File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut f, &mut magic).map_err(io_err("read", path))?;
    f.seek(SeekFrom::Start(0)).map_err(io_err("read", path))?;
    let gzipped = magic[..n] == *GZIP_MAGIC;
    let inner: Box<dyn Read> = if gzipped {
        Box::new(GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let mut ar = tar::Archive::new(inner);
    let not_tar = |e: io::Error| Error::Invalid {
        path: path.to_path_buf(),
        why: format!("cannot read it as a tar: {e}"),
    };
    // A plain file whose very first tar header does not read is no tar at
    // all (a text file, a zip): not an image, rather than a damaged one.
    let mut first = !gzipped;
    let mut out = TarFiles::default();
    for entry in ar.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(|e| match first {
            true => Error::NotAnImage {
                path: path.to_path_buf(),
            },
            false => not_tar(e),
        })?;
        first = false;
        let raw = entry.path().map_err(not_tar)?;
        let Some(name) = raw.to_str().and_then(normalize) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let content = if let Some(expected) = blob_name_digest(&name) {
                    let (d, n) = put_tracked(store, &mut entry, Some(&expected), path, path)?;
                    Content::Blob(d, n)
                } else if size <= SMALL {
                    let mut buf = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut buf).map_err(io_err("read", path))?;
                    Content::Bytes(buf)
                } else {
                    let (d, n) = put_tracked(store, &mut entry, None, path, path)?;
                    Content::Blob(d, n)
                };
                out.files.insert(name, content);
            }
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let Some(target) = entry.link_name().map_err(not_tar)? else {
                    continue;
                };
                let Some(target) = target.to_str() else {
                    continue;
                };
                let joined = if kind == tar::EntryType::Symlink && !target.starts_with('/') {
                    match name.rsplit_once('/') {
                        Some((parent, _)) => format!("{parent}/{target}"),
                        None => target.to_string(),
                    }
                } else {
                    target.to_string()
                };
                if let Some(target) = normalize(&joined) {
                    out.links.insert(name, target);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One entry of a docker archive's `manifest.json`.
#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

struct Source<'a> {
    store: &'a Store,
    path: &'a Path,
    layout: Layout,
    /// Register the image (else only tell its digest).
    register: bool,
}

impl Source<'_> {
    /// The image of `manifest` (every blob it names already stored):
    /// registered, or only its digest.
    fn finish(&self, manifest: &[u8]) -> Result<ImageDigest> {
        if self.register {
            return Ok(self.store.put_image(manifest)?);
        }
        Ok(ImageDigest::from_hash(
            self.store.put_bytes(manifest)?.hash(),
        ))
    }

    fn invalid(&self, why: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.to_path_buf(),
            why: why.into(),
        }
    }

    fn exists(&self, name: &str) -> bool {
        match &self.layout {
            Layout::Dir(dir) => dir.join(name).is_file(),
            Layout::Tar(t) => t.get(name).is_some(),
        }
    }

    /// Read a small metadata file and parse it as JSON.
    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let bytes = match &self.layout {
            Layout::Dir(dir) => {
                let p = dir.join(name);
                let f = fs::File::open(&p).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        self.invalid(format!("`{name}` is missing"))
                    } else {
                        io_err("open", &p)(e)
                    }
                })?;
                let mut buf = Vec::new();
                f.take(MAX_JSON + 1)
                    .read_to_end(&mut buf)
                    .map_err(io_err("read", &p))?;
                buf
            }
            Layout::Tar(t) => match t.get(name) {
                None => return Err(self.invalid(format!("`{name}` is missing"))),
                Some(Content::Bytes(b)) => b.clone(),
                Some(Content::Blob(_, n)) if *n > MAX_JSON => Vec::new(),
                Some(Content::Blob(d, _)) => self.store.read_blob(d)?,
            },
        };
        if bytes.len() as u64 > MAX_JSON {
            return Err(self.invalid(format!("`{name}` is larger than {MAX_JSON} bytes")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("cannot parse `{name}`: {e}")))
    }

    /// Get the file `name` into the store, checking it against `expected`.
    fn store_blob(&self, name: &str, expected: Option<BlobDigest>) -> Result<(BlobDigest, u64)> {
        let mismatch = |actual: Hash, expected: BlobDigest| Error::BlobMismatch {
            path: self.path.to_path_buf(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        };
        match &self.layout {
            Layout::Dir(dir) => {
                let p = dir.join(name);
                let f = fs::File::open(&p).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        self.invalid(format!("`{name}` is missing"))
                    } else {
                        io_err("open", &p)(e)
                    }
                })?;
                put_tracked(
                    self.store,
                    BufReader::new(f),
                    expected.as_ref(),
                    &p,
                    self.path,
                )
            }
            Layout::Tar(t) => match t.get(name) {
                None => Err(self.invalid(format!("`{name}` is missing"))),
                Some(Content::Bytes(b)) => {
                    let actual = Hash::of(b);
                    match expected {
                        Some(e) if e.hash() != actual => Err(mismatch(actual, e)),
                        _ => Ok((self.store.put_bytes(b)?, b.len() as u64)),
                    }
                }
                Some(Content::Blob(d, n)) => match expected {
                    Some(e) if e != *d => Err(mismatch(d.hash(), e)),
                    _ => Ok((*d, *n)),
                },
            },
        }
    }

    /// Get the blob a descriptor names into the store, verified.
    fn fetch(&self, desc: &Descriptor) -> Result<BlobDigest> {
        let expected = BlobDigest::from_hash(desc.digest);
        let name = format!("blobs/sha256/{}", expected.hex());
        if !self.exists(&name) {
            return Err(self.invalid(format!("blob `{expected}` is listed but not in the layout")));
        }
        let (d, n) = self.store_blob(&name, Some(expected))?;
        if n != desc.size {
            return Err(self.invalid(format!(
                "blob `{d}` is {n} bytes but its descriptor says {}",
                desc.size
            )));
        }
        Ok(d)
    }

    /// The one image an index lists (attestation manifests aside).
    fn pick_one(&self, list: &[Descriptor]) -> Result<Descriptor> {
        let images: Vec<&Descriptor> = list.iter().filter(|d| !is_attestation(d)).collect();
        if let [one] = images[..] {
            return Ok(one.clone());
        }
        Err(Error::NotExactlyOne {
            path: self.path.to_path_buf(),
            listed: images.iter().map(|d| describe(d)).collect(),
        })
    }

    fn import_oci(&self) -> Result<ImageDigest> {
        let layout: serde_json::Value = self.json("oci-layout")?;
        match layout.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some(v) if v.starts_with("1.") => {}
            _ => return Err(self.invalid("`oci-layout` does not declare imageLayoutVersion 1.x")),
        }
        let index: Index = self.json("index.json")?;
        let mut desc = self.pick_one(&index.manifests)?;
        let mut depth = 0;
        while is_index(&desc.media_type) {
            depth += 1;
            if depth > MAX_NESTING {
                return Err(self.invalid("image indexes are nested too deeply"));
            }
            let d = self.fetch(&desc)?;
            let bytes = self.store.read_blob(&d)?;
            let nested: Index = serde_json::from_slice(&bytes)
                .map_err(|e| self.invalid(format!("cannot parse image index `{d}`: {e}")))?;
            desc = self.pick_one(&nested.manifests)?;
        }
        let md = self.fetch(&desc)?;
        let bytes = self.store.read_blob(&md)?;
        let m = Manifest::parse(&bytes)
            .map_err(|why| self.invalid(format!("image manifest `{md}`: {why}")))?;
        self.fetch(&m.config)?;
        for layer in &m.layers {
            self.fetch(layer)?;
        }
        self.finish(&bytes)
    }

    fn import_docker(&self) -> Result<ImageDigest> {
        let entries: Vec<DockerEntry> = self.json("manifest.json")?;
        let [entry] = &entries[..] else {
            return Err(Error::NotExactlyOne {
                path: self.path.to_path_buf(),
                listed: entries
                    .iter()
                    .map(|e| match &e.repo_tags {
                        Some(tags) if !tags.is_empty() => {
                            format!("`{}` ({})", e.config, tags.join(", "))
                        }
                        _ => format!("`{}`", e.config),
                    })
                    .collect(),
            });
        };
        let config_name = normalize(&entry.config)
            .ok_or_else(|| self.invalid(format!("bad config path `{}`", entry.config)))?;
        let (cd, csize) = self.store_blob(&config_name, docker_name_digest(&config_name))?;
        let config_bytes = self.store.read_blob(&cd)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| self.invalid(format!("cannot parse config `{config_name}`: {e}")))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(self.invalid(format!(
                "`manifest.json` lists {} layers but config `{config_name}` has {} diff_ids",
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let name = normalize(layer)
                .ok_or_else(|| self.invalid(format!("bad layer path `{layer}`")))?;
            let (ld, size) = self.store_blob(&name, docker_name_digest(&name))?;
            let media_type = self.check_layer(&name, &ld, diff_id)?;
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest: ld.hash(),
                size,
                platform: None,
                annotations: None,
            });
        }
        let config = Descriptor {
            media_type: media_type::OCI_CONFIG.to_string(),
            digest: cd.hash(),
            size: csize,
            platform: None,
            annotations: None,
        };
        self.finish(&oci_manifest_bytes(&config, &layers))
    }

    /// Sniff a stored layer's compression and check it against its diff ID
    /// (the digest of the uncompressed tar); returns its OCI media type.
    fn check_layer(&self, name: &str, ld: &BlobDigest, diff_id: &Hash) -> Result<&'static str> {
        let blob_path = self.store.blob_path(ld);
        let mut f = self.store.open_blob(ld)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut f, &mut magic).map_err(io_err("read", &blob_path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io_err("read", &blob_path))?;
        let (uncompressed, media_type) = if magic[..n].starts_with(GZIP_MAGIC) {
            let (h, _) = Hash::of_reader(GzDecoder::new(BufReader::new(f)))
                .map_err(|e| self.invalid(format!("layer `{name}` is not valid gzip: {e}")))?;
            (h, media_type::OCI_LAYER_GZIP)
        } else if magic[..n] == *ZSTD_MAGIC {
            return Err(Error::Unsupported {
                path: self.path.to_path_buf(),
                why: format!("layer `{name}` is zstd-compressed, which docker archives are not expected to hold"),
            });
        } else {
            (ld.hash(), media_type::OCI_LAYER_TAR)
        };
        if uncompressed != *diff_id {
            return Err(self.invalid(format!(
                "layer `{name}` unpacks to `{uncompressed}` but the config's diff_id is `{diff_id}`"
            )));
        }
        Ok(media_type)
    }
}

/// The digest a docker archive file name promises, if any: `<hex>.json`
/// configs and `blobs/sha256/<hex>` files (newer Docker).
fn docker_name_digest(name: &str) -> Option<BlobDigest> {
    blob_name_digest(name).or_else(|| {
        let stem = name.strip_suffix(".json")?;
        Hash::from_hex(stem).ok().map(BlobDigest::from_hash)
    })
}

fn is_index(media_type: &str) -> bool {
    media_type == media_type::OCI_INDEX || media_type == media_type::DOCKER_MANIFEST_LIST
}

/// Attestation manifests (BuildKit provenance) are not images.
fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d
        .annotations
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest");
    let unknown_platform = d.platform.as_ref().is_some_and(|p| p.os == "unknown");
    annotated || unknown_platform
}

fn describe(d: &Descriptor) -> String {
    let mut s = format!("`{}` {}", d.digest, d.media_type);
    if let Some(p) = &d.platform {
        s.push_str(&format!(" {}/{}", p.os, p.architecture));
        if let Some(v) = &p.variant {
            s.push_str(&format!("/{v}"));
        }
    }
    if let Some(name) = d
        .annotations
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
    {
        s.push_str(&format!(" ({name})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_archive_paths() {
        assert_eq!(normalize("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalize("/a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../etc/passwd"), None);
        assert_eq!(normalize("."), None);
    }

    #[test]
    fn docker_names_promise_digests() {
        let h = Hash::of(b"x");
        assert_eq!(
            docker_name_digest(&format!("{}.json", h.hex())),
            Some(BlobDigest::from_hash(h))
        );
        assert_eq!(
            docker_name_digest(&format!("blobs/sha256/{}", h.hex())),
            Some(BlobDigest::from_hash(h))
        );
        assert_eq!(docker_name_digest("abc/layer.tar"), None);
        assert_eq!(docker_name_digest("manifest.json"), None);
    }
}
