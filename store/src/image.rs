//! OCI images kept in the store.
//!
//! Manifests, configs and layers are ordinary blobs, and `v1/index.json`
//! lists every image registered (the markers in `v1/refs/images/<hex>`), so
//! `<root>/v1` is a valid OCI image layout other tools can read. Docker v2
//! schema 2 manifests are accepted as well as OCI ones.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::blob::HashingReader;
use crate::error::io_err;
use crate::layout::Ns;
use crate::record::list_names;
use crate::{BlobDigest, Error, Hash, ImageDigest, Result, Store};

/// Media types this crate reads or writes.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer, plain tar.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer, gzip-compressed tar.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd-compressed tar.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, gzip-compressed tar.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker layer, plain tar.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
}

const LAYER_TYPES: &[&str] = &[
    media_type::OCI_LAYER_TAR,
    media_type::OCI_LAYER_GZIP,
    media_type::OCI_LAYER_ZSTD,
    media_type::DOCKER_LAYER_GZIP,
    media_type::DOCKER_LAYER_TAR,
];

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// Its digest (only `sha256` is supported).
    pub digest: Hash,
    /// Its size in bytes.
    pub size: u64,
    /// The platform, in image indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The platform of an image (in an index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI (or Docker v2 schema 2) image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An OCI image index (or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes) it lists.
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config the store reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture, e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// The layer diff IDs.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, base first.
    pub diff_ids: Vec<Hash>,
}

impl Manifest {
    /// Parse and check a manifest: schema version 2, a manifest (not an
    /// index) media type, and supported config and layer media types.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if v.get("manifests").is_some() {
            return Err("this is an image index, not an image manifest\nhint: pick the manifest of one platform".to_string());
        }
        let m: Manifest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        if m.schema_version != 2 {
            return Err(format!("schemaVersion is {}, expected 2", m.schema_version));
        }
        if let Some(mt) = &m.media_type {
            if mt != media_type::OCI_MANIFEST && mt != media_type::DOCKER_MANIFEST {
                return Err(format!("mediaType `{mt}` is not an image manifest"));
            }
        }
        let ct = &m.config.media_type;
        if ct != media_type::OCI_CONFIG && ct != media_type::DOCKER_CONFIG {
            return Err(format!("config mediaType `{ct}` is not an image config"));
        }
        for l in &m.layers {
            if !LAYER_TYPES.contains(&l.media_type.as_str()) {
                return Err(format!(
                    "layer `{}` has unsupported mediaType `{}`",
                    l.digest, l.media_type
                ));
            }
        }
        Ok(m)
    }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The digest of the layer blob as stored (compressed if it is).
    pub digest: BlobDigest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type (tells plain tar from gzip or zstd).
    pub media_type: String,
}

/// What the store knows about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The manifest's digest.
    pub manifest: ImageDigest,
    /// The config blob's digest (the Docker image ID).
    pub config: BlobDigest,
    /// The layers, base first.
    pub layers: Vec<Layer>,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<Hash>,
    /// The config's `os`.
    pub os: String,
    /// The config's `architecture`.
    pub architecture: String,
}

impl Store {
    /// Register an image whose config and layers are already in the store.
    ///
    /// Checks that `manifest_json` is an OCI (or Docker v2) image manifest,
    /// that the config and every layer blob are present, verify and have the
    /// declared size, and that the config has one diff ID per layer. Stores
    /// the manifest blob and writes `refs/images/<hex>`.
    pub fn put_image(&self, manifest_json: &[u8]) -> Result<ImageDigest> {
        let d = ImageDigest::from_hash(Hash::of(manifest_json));
        let malformed = |why: String| Error::Malformed {
            what: "image manifest",
            digest: d.to_string(),
            why,
        };
        let m = Manifest::parse(manifest_json).map_err(malformed)?;
        for desc in std::iter::once(&m.config).chain(&m.layers) {
            let blob = BlobDigest::from_hash(desc.digest);
            let size = self.verify_blob(&blob)?;
            if size != desc.size {
                return Err(malformed(format!(
                    "blob `{blob}` is {size} bytes but the manifest says {}",
                    desc.size
                )));
            }
        }
        self.read_config(&m, &d)?;
        let stored = self.put_bytes(manifest_json)?;
        debug_assert_eq!(stored.hash(), d.hash());
        let marker = self.ns_dir(Ns::Images).join(d.hex());
        if !marker.exists() {
            self.write_atomic(&marker, b"")?;
            self.rewrite_index()?;
        }
        Ok(d)
    }

    /// Rewrite `v1/index.json` to list every registered image, so that `v1/`
    /// is a complete OCI image layout other tools can read. Serialized by
    /// its own lock file (`v1/index.json.lock`, held only here), so it never
    /// interferes with [`Store::lock_shared`] / [`Store::lock_exclusive`].
    pub(crate) fn rewrite_index(&self) -> Result<()> {
        let lock_path = self.layout_dir().join("index.json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lock_path)
            .map_err(io_err("create", &lock_path))?;
        fs4::fs_std::FileExt::lock_exclusive(&lock).map_err(io_err("lock", &lock_path))?;
        let images = self.list_images()?;
        let bytes = oci_index_bytes(&images, |d| {
            self.read_blob(&BlobDigest::from_hash(d.hash()))
        })?;
        self.write_atomic(&self.layout_dir().join("index.json"), &bytes)
    }

    fn read_config(&self, m: &Manifest, d: &ImageDigest) -> Result<ImageConfig> {
        let config_digest = BlobDigest::from_hash(m.config.digest);
        let bytes = self.read_blob(&config_digest)?;
        let config: ImageConfig = serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            what: "image config",
            digest: config_digest.to_string(),
            why: e.to_string(),
        })?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Error::Malformed {
                what: "image manifest",
                digest: d.to_string(),
                why: format!(
                    "it has {} layers but its config `{config_digest}` lists {} diff_ids",
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        Ok(config)
    }

    /// Describe image `d`, re-hashing its manifest and config (not the layers:
    /// use [`Store::verify_blob`] or [`Store::write_docker_archive`]).
    pub fn get_image(&self, d: &ImageDigest) -> Result<ImageInfo> {
        let bytes = self
            .read_blob(&BlobDigest::from_hash(d.hash()))
            .map_err(|e| match e {
                Error::Missing { digest, path, .. } => Error::Missing {
                    what: "image",
                    digest,
                    path,
                },
                e => e,
            })?;
        let m = Manifest::parse(&bytes).map_err(|why| Error::Malformed {
            what: "image manifest",
            digest: d.to_string(),
            why,
        })?;
        let config = self.read_config(&m, d)?;
        Ok(ImageInfo {
            manifest: *d,
            config: BlobDigest::from_hash(m.config.digest),
            layers: m
                .layers
                .iter()
                .map(|l| Layer {
                    digest: BlobDigest::from_hash(l.digest),
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
                .collect(),
            diff_ids: config.rootfs.diff_ids,
            os: config.os,
            architecture: config.architecture,
        })
    }

    /// The images registered in the store, sorted by digest.
    pub fn list_images(&self) -> Result<Vec<ImageDigest>> {
        let names = list_names(&self.ns_dir(Ns::Images))?;
        Ok(names
            .iter()
            .filter_map(|n| Hash::from_hex(n).ok())
            .map(ImageDigest::from_hash)
            .collect())
    }

    /// Write image `d` as a `docker save` style tar to `out`:
    /// `manifest.json` (`Config`, `RepoTags: []`, `Layers`), `<config hex>.json`
    /// and `<layer hex>/layer.tar`. `docker load` of it gives an image whose
    /// ID is the config digest. Streams with bounded memory and re-hashes
    /// every blob as it goes; on a mismatch the output is incomplete and the
    /// error names the blob.
    pub fn write_docker_archive(&self, d: &ImageDigest, out: impl Write) -> Result<()> {
        let info = self.get_image(d)?;
        let out_path = std::path::PathBuf::from("<docker archive output>");
        let mut tar = tar::Builder::new(out);
        let config = self.read_blob(&info.config)?;
        let config_name = format!("{}.json", info.config.hex());
        append(
            &mut tar,
            &config_name,
            config.len() as u64,
            &mut &config[..],
        )
        .map_err(io_err("write", &out_path))?;
        let mut written = HashSet::new();
        let mut layer_names = Vec::new();
        for layer in &info.layers {
            let dir = layer.digest.hex();
            let name = format!("{dir}/layer.tar");
            layer_names.push(name.clone());
            if !written.insert(layer.digest) {
                continue;
            }
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, format!("{dir}/"), io::empty())
                .map_err(io_err("write", &out_path))?;
            let path = self.blob_path(&layer.digest);
            let file = self.open_blob(&layer.digest)?;
            let len = file.metadata().map_err(io_err("inspect", &path))?.len();
            if len != layer.size {
                return Err(Error::Malformed {
                    what: "image manifest",
                    digest: d.to_string(),
                    why: format!(
                        "layer `{}` is {len} bytes but the manifest says {}",
                        layer.digest, layer.size
                    ),
                });
            }
            let mut reader = ErrTrackingReader {
                inner: HashingReader::new(file),
                failed: false,
            };
            let res = append(&mut tar, &name, len, &mut reader);
            if let Err(e) = res {
                return Err(if reader.failed {
                    io_err("read", &path)(e)
                } else {
                    io_err("write", &out_path)(e)
                });
            }
            let (actual, n) = reader.inner.finish();
            if actual != layer.digest.hash() || n != len {
                return Err(Error::Corrupt {
                    digest: layer.digest.to_string(),
                    actual: actual.to_string(),
                    path,
                });
            }
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [],
            "Layers": layer_names,
        }]);
        let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Malformed {
            what: "image manifest",
            digest: d.to_string(),
            why: e.to_string(),
        })?;
        append(
            &mut tar,
            "manifest.json",
            manifest.len() as u64,
            &mut &manifest[..],
        )
        .map_err(io_err("write", &out_path))?;
        tar.into_inner()
            .map_err(io_err("write", &out_path))?
            .flush()
            .map_err(io_err("write", &out_path))
    }
}

/// Remembers whether an error came from the reader (the blob) rather than
/// from the writer (the archive).
struct ErrTrackingReader<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for ErrTrackingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    r: &mut impl Read,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    // Never write more or fewer bytes than the header promises.
    let mut limited = r.take(size);
    tar.append_data(&mut h, name, &mut limited)?;
    if limited.limit() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob shorter than its size",
        ));
    }
    Ok(())
}

/// An OCI image index (`index.json`) listing `images` in the given order;
/// `read` fetches each manifest's bytes (for its media type and size).
pub fn oci_index_bytes<E: From<Error>>(
    images: &[ImageDigest],
    read: impl Fn(&ImageDigest) -> std::result::Result<Vec<u8>, E>,
) -> std::result::Result<Vec<u8>, E> {
    let mut manifests = Vec::new();
    for d in images {
        let bytes = read(d)?;
        let m = Manifest::parse(&bytes).map_err(|why| Error::Malformed {
            what: "image manifest",
            digest: d.to_string(),
            why,
        })?;
        manifests.push(Descriptor {
            media_type: m
                .media_type
                .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string()),
            digest: d.hash(),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        });
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_string()),
        manifests,
    };
    // Plain structs of strings and integers always serialize.
    Ok(serde_json::to_vec(&index).unwrap_or_default())
}

/// Build the bytes of a deterministic OCI image manifest.
pub fn oci_manifest_bytes(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let m = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_string()),
        config: config.clone(),
        layers: layers.to_vec(),
        annotations: None,
    };
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small layer tar with a couple of files.
    pub(crate) fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Put a one- or two-layer image into the store; returns its digest.
    pub(crate) fn put_sample_image(s: &Store) -> ImageDigest {
        let l1 = layer_tar(&[("etc/hello.txt", b"hello\n"), ("bin/tool", b"#!/bin/sh\n")]);
        let l2 = layer_tar(&[("data/x", b"x")]);
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for l in [&l1, &l2] {
            let d = s.put_bytes(l).unwrap();
            diff_ids.push(d.hash().to_string());
            layers.push(Descriptor {
                media_type: media_type::OCI_LAYER_TAR.into(),
                digest: d.hash(),
                size: l.len() as u64,
                platform: None,
                annotations: None,
            });
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let cd = s.put_bytes(&config).unwrap();
        let cdesc = Descriptor {
            media_type: media_type::OCI_CONFIG.into(),
            digest: cd.hash(),
            size: config.len() as u64,
            platform: None,
            annotations: None,
        };
        s.put_image(&oci_manifest_bytes(&cdesc, &layers)).unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        (t, s)
    }

    #[test]
    fn image_round_trip() {
        let (_t, s) = store();
        let d = put_sample_image(&s);
        let info = s.get_image(&d).unwrap();
        assert_eq!(info.manifest, d);
        assert_eq!(info.layers.len(), 2);
        assert_eq!(
            info.diff_ids,
            info.layers
                .iter()
                .map(|l| l.digest.hash())
                .collect::<Vec<_>>()
        );
        assert_eq!(info.os, "linux");
        assert_eq!(s.list_images().unwrap(), [d]);
        assert_eq!(put_sample_image(&s), d, "deterministic");
        // v1/ is an OCI image layout listing the image.
        let index: Index =
            serde_json::from_slice(&std::fs::read(s.layout_dir().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(index.manifests[0].digest, d.hash());
        assert_eq!(index.manifests[0].media_type, media_type::OCI_MANIFEST);
    }

    #[test]
    fn put_image_refuses_missing_or_bad_parts() {
        let (_t, s) = store();
        let layer = layer_tar(&[("a", b"a")]);
        let ld = BlobDigest::from_hash(Hash::of(&layer));
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{ld}"]}}}}"#
        );
        let cd = s.put_bytes(config.as_bytes()).unwrap();
        let desc = |mt: &str, d: Hash, size: usize| Descriptor {
            media_type: mt.into(),
            digest: d,
            size: size as u64,
            platform: None,
            annotations: None,
        };
        let cdesc = desc(media_type::OCI_CONFIG, cd.hash(), config.len());
        let ldesc = desc(media_type::OCI_LAYER_TAR, ld.hash(), layer.len());
        let m = oci_manifest_bytes(&cdesc, std::slice::from_ref(&ldesc));
        // Layer not stored yet.
        let err = s.put_image(&m).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains(&ld.to_string()));
        s.put_bytes(&layer).unwrap();
        let d = s.put_image(&m).unwrap();
        // Wrong size.
        let wrong = desc(media_type::OCI_LAYER_TAR, ld.hash(), layer.len() + 1);
        let err = s
            .put_image(&oci_manifest_bytes(&cdesc, &[wrong]))
            .unwrap_err();
        assert!(
            err.to_string().contains("bytes but the manifest says"),
            "{err}"
        );
        // Diff ID count mismatch.
        let err = s
            .put_image(&oci_manifest_bytes(&cdesc, &[ldesc.clone(), ldesc.clone()]))
            .unwrap_err();
        assert!(err.to_string().contains("diff_ids"), "{err}");
        // An index is not a manifest.
        let err = s
            .put_image(br#"{"schemaVersion":2,"manifests":[]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("image index"), "{err}");
        // A corrupt layer is caught by put_image and by write_docker_archive.
        crate::blob::tests::corrupt(&s.blob_path(&ld));
        let err = s.put_image(&m).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }) && err.to_string().contains(&ld.to_string()));
        let err = s.write_docker_archive(&d, io::sink()).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. }) && err.to_string().contains(&ld.to_string()),
            "{err}"
        );
    }

    #[test]
    #[ignore = "needs Docker: loads an image into the local engine"]
    fn docker_load_of_written_archive_gives_the_config_digest_as_image_id() {
        use std::process::Command;
        let (t, s) = store();
        let d = put_sample_image(&s);
        let info = s.get_image(&d).unwrap();
        let out = t.path().join("image.tar");
        s.write_docker_archive(&d, std::fs::File::create(&out).unwrap())
            .unwrap();
        let id = info.config.to_string();
        let run = |args: &[&str]| {
            let o = Command::new("docker")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("needs Docker: cannot run `docker`: {e}"));
            assert!(
                o.status.success(),
                "needs Docker: `docker {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let loaded = run(&["load", "-i", out.to_str().unwrap()]);
        let inspected = run(&["image", "inspect", "--format", "{{.Id}}", &id]);
        let _ = Command::new("docker")
            .args(["rmi", "--force", &id])
            .output();
        assert!(loaded.contains(&id), "{loaded}");
        assert_eq!(inspected, id);
    }

    #[test]
    fn docker_archive_has_the_docker_save_shape() {
        let (_t, s) = store();
        let d = put_sample_image(&s);
        let info = s.get_image(&d).unwrap();
        let mut buf = Vec::new();
        s.write_docker_archive(&d, &mut buf).unwrap();
        let mut again = Vec::new();
        s.write_docker_archive(&d, &mut again).unwrap();
        assert_eq!(buf, again, "deterministic");

        let mut files = BTreeMap::new();
        let mut ar = tar::Archive::new(&buf[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config_name = format!("{}.json", info.config.hex());
        assert_eq!(manifest[0]["Config"], config_name.as_str());
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!([]));
        assert_eq!(Hash::of(&files[&config_name]), info.config.hash());
        for (i, l) in info.layers.iter().enumerate() {
            let name = format!("{}/layer.tar", l.digest.hex());
            assert_eq!(manifest[0]["Layers"][i], name.as_str());
            assert_eq!(Hash::of(&files[&name]), l.digest.hash());
        }
    }
}
