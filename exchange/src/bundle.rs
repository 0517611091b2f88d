//! Bundles: one model version as a single self-contained tar, verifiable
//! offline (`repro export`, `repro import`).
//!
//! # Format 1
//!
//! A bundle is a plain (ustar) tar whose members come in this fixed order:
//!
//! ```text
//! bundle.json             the manifest (below); first, so a reader checks every object as it streams
//! oci-layout              {"imageLayoutVersion":"1.0.0"}
//! index.json              OCI index of the bundle's images: the bundle is also an OCI image layout
//! blobs/sha256/<hex>      every object, sorted by digest (records, attestations, public keys,
//!                         recipe, lock, tree objects, files, logs, image manifests, configs, layers)
//! bundle.json.sha256      `<hex of bundle.json>  bundle.json`, last (`sha256sum -c` reads it)
//! ```
//!
//! `bundle.json` holds the format version (`"format": 1`), the model
//! (`name@version`), the record, the refs to register (records,
//! attestations, images, public keys) and every object with its digest, size
//! and kind. Its SHA-256 is the bundle's digest: `repro export` prints it,
//! and because it names every object by digest, it pins the whole bundle.
//!
//! Every member has mtime 0, uid and gid 0, no user or group names and mode
//! 0644, and nothing in the manifest depends on time or on the machine, so
//! one version always exports to the same bytes.
//!
//! # Bounded memory
//!
//! Objects are never held in memory: each is streamed from its blob file
//! into the tar (export) or from the tar into a staging file (import) through
//! one 64 KiB buffer, hashing on the way. What is held is the manifest (about
//! 200 bytes per object), the small JSON members (`index.json`, records and
//! attestations, capped at 64 MiB each) and the tree objects while they are
//! walked.
//!
//! # Import
//!
//! Every object is streamed into a staging directory inside the store's
//! `v1/tmp` and re-hashed against the digest the manifest gives; a member
//! whose size or hash differs is refused with its digest and kind. Only when
//! the whole bundle has checked out (every listed object present, nothing
//! unlisted, `index.json` as expected, `bundle.json.sha256` matching, the
//! record's and every attestation's signature valid with the bundle's keys,
//! the record naming the model the manifest claims) are the objects moved
//! into the store (by rename) and the refs written. A refused bundle leaves
//! nothing behind.
//!
//! # Versions
//!
//! [`import`] reads `bundle.json` first and dispatches on its `format`: a
//! later format adds a reader beside [`v1`] and keeps this one, so bundles
//! written today still import.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use repro_store::{BlobDigest, EntryKind, Hash, ImageDigest, RecordDigest, Store, TreeDigest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use repro_evidence::keys::{self, Envelope};
use repro_evidence::record::Statement;

/// The bundle format this version of repro writes.
pub const FORMAT: u32 = 1;
/// The media type of a format 1 manifest.
pub const MEDIA_TYPE_V1: &str = "application/vnd.repro.bundle.v1+json";
/// The manifest member.
pub const MANIFEST_NAME: &str = "bundle.json";
/// The last member: the manifest's digest in `sha256sum` format.
pub const MANIFEST_DIGEST_NAME: &str = "bundle.json.sha256";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const BLOB_PREFIX: &str = "blobs/sha256/";
const BUF: usize = 64 * 1024;
/// The largest manifest, record, attestation or index read into memory.
const MAX_SMALL: u64 = 64 * 1024 * 1024;

/// A bundle result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong exporting or importing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (missing or corrupt object, I/O).
    #[error(transparent)]
    Store(#[from] repro_store::Error),

    /// A file operation on the bundle failed.
    #[error("cannot {action} `{}`: {err}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        err: io::Error,
    },

    /// The version cannot be exported as it is.
    #[error("cannot export `{what}`: {why}")]
    Export {
        /// What was asked for.
        what: String,
        /// Why not.
        why: String,
    },

    /// The file is not a bundle at all.
    #[error("`{}` is not a repro bundle: {why}\nhint: bundles are written by `repro export`", path.display())]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },

    /// The bundle was written by a newer format.
    #[error("the bundle `{}` has format {found}, which this version of repro cannot read (it reads formats 1 to {FORMAT})\nhint: import it with a newer release of repro", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u64,
    },

    /// An object in the bundle does not match its digest.
    #[error("refused the bundle `{}`: {what} is tampered or corrupt: {why}\nhint: nothing was imported; get an intact copy of the bundle from its source", path.display())]
    Tampered {
        /// The file.
        path: PathBuf,
        /// The object's digest.
        digest: String,
        /// What the object is, with its digest, e.g. "image layer `sha256:...` of `toolchains.bb`".
        what: String,
        /// What is wrong.
        why: String,
    },

    /// The bundle's record is of a version this store has recorded from
    /// other inputs: a version keeps naming the inputs it was first built
    /// from.
    #[error("refused the bundle `{}`: {why}\nhint: nothing was imported; a version keeps naming the inputs it was first built from, so import the bundle into another store (`--store`)", path.display())]
    VersionConflict {
        /// The file.
        path: PathBuf,
        /// Which record, which version, what differs.
        why: String,
    },

    /// The bundle is inconsistent, incomplete or its signatures do not check out.
    #[error("refused the bundle `{}`: {why}\nhint: nothing was imported; get an intact copy of the bundle from its source", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |err| Error::Io {
        action,
        path: path.to_path_buf(),
        err,
    }
}

/// What an object in a bundle is (the first role it was found in, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// A signed build record (DSSE envelope).
    Record,
    /// A signed verification attestation (DSSE envelope).
    Attestation,
    /// An ed25519 public key (32 bytes) that signed a record or attestation.
    PublicKey,
    /// The recipe's bytes.
    Recipe,
    /// The lock file's bytes.
    Lock,
    /// An OCI image manifest.
    ImageManifest,
    /// An OCI image config.
    ImageConfig,
    /// An OCI image layer.
    ImageLayer,
    /// A tree object (the Merkle manifest of a directory).
    Tree,
    /// A file of a data snapshot, code tree or step output.
    File,
    /// A step's log.
    Log,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Record => "record",
            ObjectKind::Attestation => "attestation",
            ObjectKind::PublicKey => "public key",
            ObjectKind::Recipe => "recipe",
            ObjectKind::Lock => "lock file",
            ObjectKind::ImageManifest => "image manifest",
            ObjectKind::ImageConfig => "image config",
            ObjectKind::ImageLayer => "image layer",
            ObjectKind::Tree => "tree object",
            ObjectKind::File => "file",
            ObjectKind::Log => "step log",
        })
    }
}

/// One object of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    /// Its digest: the member is `blobs/sha256/<hex>`.
    pub digest: BlobDigest,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: ObjectKind,
    /// Which part of the record it belongs to (`toolchains.bb`, `steps.train`,
    /// `record`...).
    pub of: String,
}

impl Object {
    fn describe(&self) -> String {
        format!("{} `{}` of `{}`", self.kind, self.digest, self.of)
    }
}

/// A record ref to register: `name@version` -> record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// The model name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The record.
    pub record: RecordDigest,
}

/// An attestation to register beside its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationRef {
    /// The record it is about.
    pub record: RecordDigest,
    /// The attestation's blob.
    pub attestation: BlobDigest,
}

/// `bundle.json` of format 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestV1 {
    /// Always 1.
    pub format: u32,
    /// Always [`MEDIA_TYPE_V1`].
    pub media_type: String,
    /// `name@version`.
    pub model: String,
    /// The record the bundle is about.
    pub record: RecordDigest,
    /// Record refs to register.
    pub records: Vec<RecordRef>,
    /// Attestations to register.
    pub attestations: Vec<AttestationRef>,
    /// Images to register.
    pub images: Vec<ImageDigest>,
    /// Public keys that signed the record and the attestations.
    pub keys: Vec<BlobDigest>,
    /// Every object, sorted by digest.
    pub objects: Vec<Object>,
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// `name@version`.
    pub model: String,
    /// The record.
    pub record: RecordDigest,
    /// The digest of `bundle.json`: the bundle's digest.
    pub manifest: Hash,
    /// The digest of the whole tar file.
    pub file: Hash,
    /// How many objects.
    pub objects: usize,
    /// Their total size.
    pub bytes: u64,
}

/// What [`import`] registered.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The bundle's format.
    pub format: u32,
    /// `name@version`.
    pub model: String,
    /// The record.
    pub record: RecordDigest,
    /// The digest of `bundle.json`.
    pub manifest: Hash,
    /// How many objects.
    pub objects: usize,
    /// Their total size.
    pub bytes: u64,
}

// ---------------------------------------------------------------- export

/// Export one version (`name@version` or a record digest) of `store` as a
/// format [`FORMAT`] bundle at `out` (written atomically: a temp file beside
/// it, renamed into place when complete).
pub fn export(store: &Store, what: &str, out: &Path) -> Result<Exported> {
    let _lock = store.lock_shared()?;
    let fail = |why: String| Error::Export {
        what: what.to_string(),
        why,
    };
    let record: RecordDigest = if what.starts_with("sha256:") {
        what.parse().map_err(|e| fail(format!("{e}")))?
    } else {
        let v = repro_evidence::VersionRef::parse(what).map_err(|_| {
            fail("expected `name@version` or a record digest `sha256:...`".to_string())
        })?;
        store.resolve_record(&v.name, &v.version)?
    };
    let envelope_bytes = store.get_record(&record)?;
    let envelope: Envelope = serde_json::from_slice(&envelope_bytes)
        .map_err(|e| fail(format!("record `{record}` is not a DSSE envelope: {e}")))?;
    let (payload, _) =
        keys::open(&envelope, |id| keys::lookup_in_store(store, id)).map_err(|e| {
            fail(format!(
                "the signature of record `{record}` does not check out: {e}"
            ))
        })?;
    let statement: Statement = serde_json::from_slice(&payload).map_err(|e| {
        fail(format!(
            "the statement of record `{record}` does not parse: {e}"
        ))
    })?;
    statement.check_types().map_err(fail)?;
    let ext = &statement.predicate.build_definition.external_parameters;
    let model = format!("{}@{}", ext.name, ext.version);

    let mut c = Collector {
        store,
        objects: BTreeMap::new(),
        trees: BTreeSet::new(),
    };
    c.add(
        BlobDigest::from_hash(record.hash()),
        ObjectKind::Record,
        "record",
    )?;
    let mut key_ids = BTreeSet::new();
    key_ids.extend(signers(store, &envelope));

    // Attestations whose signature checks out with a key of the store.
    let mut attestations = Vec::new();
    for a in store.attestations_of(&record)? {
        let bytes = store.read_blob(&a)?;
        let Ok(env) = serde_json::from_slice::<Envelope>(&bytes) else {
            continue;
        };
        if keys::open(&env, |id| keys::lookup_in_store(store, id)).is_err() {
            continue;
        }
        c.add(a, ObjectKind::Attestation, "attestations")?;
        key_ids.extend(signers(store, &env));
        attestations.push(AttestationRef {
            record,
            attestation: a,
        });
    }
    for k in &key_ids {
        c.add(*k, ObjectKind::PublicKey, "keys")?;
    }

    c.add(ext.recipe_digest, ObjectKind::Recipe, "recipe")?;
    if let Some(lock) = ext.lock_digest {
        c.add(lock, ObjectKind::Lock, "lock")?;
    }

    let pins = repro_evidence::record::pins_of(&statement).map_err(|e| fail(format!("{e:#}")))?;
    let mut images = BTreeSet::new();
    for (name, image) in &pins.toolchains {
        let of = format!("toolchains.{name}");
        let info = store.get_image(image)?;
        c.add(
            BlobDigest::from_hash(image.hash()),
            ObjectKind::ImageManifest,
            &of,
        )?;
        c.add(info.config, ObjectKind::ImageConfig, &of)?;
        for l in &info.layers {
            c.add(l.digest, ObjectKind::ImageLayer, &of)?;
        }
        images.insert(*image);
    }
    for (name, tree) in &pins.data {
        c.add_tree(tree, &format!("data.{name}"))?;
    }
    for (name, tree) in &pins.code {
        c.add_tree(tree, &format!("code.{name}"))?;
    }
    for b in &statement.predicate.run_details.byproducts {
        if !b.name.starts_with("steps.") {
            continue;
        }
        if let Some(tree) = b.sha256_text() {
            let tree: TreeDigest = tree
                .parse()
                .map_err(|e| fail(format!("output of `{}`: {e}", b.name)))?;
            c.add_tree(&tree, &b.name)?;
        }
        if let Some(log) = b.annotations.get("log").and_then(|l| l.as_str()) {
            let log: BlobDigest = log
                .parse()
                .map_err(|e| fail(format!("log of `{}`: {e}", b.name)))?;
            c.add(log, ObjectKind::Log, &b.name)?;
        }
    }

    let objects: Vec<Object> = c.objects.into_values().collect();
    let images: Vec<ImageDigest> = images.into_iter().collect();
    let manifest = ManifestV1 {
        format: FORMAT,
        media_type: MEDIA_TYPE_V1.to_string(),
        model: model.clone(),
        record,
        records: vec![RecordRef {
            name: ext.name.clone(),
            version: ext.version.clone(),
            record,
        }],
        attestations,
        images: images.clone(),
        keys: key_ids.into_iter().collect(),
        objects,
    };
    let mut manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| fail(e.to_string()))?;
    manifest_bytes.push(b'\n');
    let manifest_digest = Hash::of(&manifest_bytes);
    let index = image_index(&images, |d| {
        store
            .read_blob(&BlobDigest::from_hash(d.hash()))
            .map_err(Error::from)
    })?;

    // Written through the one durable atomic write: a temp file beside
    // `out`, fsynced, renamed, and the folder fsynced.
    let (file_digest, bytes) = repro_store::write_atomic_with(out, |w: &mut dyn Write| {
        let writer = HashingWriter {
            inner: w,
            hasher: Sha256::new(),
        };
        let mut tar = tar::Builder::new(writer);
        let werr = |e: io::Error| Error::Io {
            action: "write",
            path: out.to_path_buf(),
            err: e,
        };
        append(&mut tar, MANIFEST_NAME, &manifest_bytes).map_err(werr)?;
        append(&mut tar, "oci-layout", OCI_LAYOUT).map_err(werr)?;
        append(&mut tar, "index.json", &index).map_err(werr)?;
        let mut bytes = 0u64;
        for o in &manifest.objects {
            let path = store.blob_path(&o.digest);
            let f = store.open_blob(&o.digest)?;
            let mut h = header(o.size);
            let mut r = HashingReader::new(BufReader::with_capacity(BUF, f).take(o.size));
            tar.append_data(&mut h, format!("{BLOB_PREFIX}{}", o.digest.hex()), &mut r)
                .map_err(|e| {
                    if r.failed {
                        io_err("read", &path)(e)
                    } else {
                        werr(e)
                    }
                })?;
            let (actual, n) = r.finish();
            if actual != o.digest.hash() || n != o.size {
                return Err(repro_store::Error::Corrupt {
                    digest: o.digest.to_string(),
                    actual: actual.to_string(),
                    path,
                }
                .into());
            }
            bytes += n;
        }
        let sums = format!("{}  {MANIFEST_NAME}\n", manifest_digest.hex());
        append(&mut tar, MANIFEST_DIGEST_NAME, sums.as_bytes()).map_err(werr)?;
        let mut writer = tar.into_inner().map_err(werr)?;
        writer.flush().map_err(werr)?;
        Ok::<_, Error>((Hash(writer.hasher.finalize().into()), bytes))
    })?;
    Ok(Exported {
        model,
        record,
        manifest: manifest_digest,
        file: file_digest,
        objects: manifest.objects.len(),
        bytes,
    })
}

/// Gathers the objects of a bundle, each with the first role it was met in.
struct Collector<'a> {
    store: &'a Store,
    objects: BTreeMap<BlobDigest, Object>,
    trees: BTreeSet<TreeDigest>,
}

impl Collector<'_> {
    fn add(&mut self, d: BlobDigest, kind: ObjectKind, of: &str) -> Result<()> {
        if let Some(o) = self.objects.get_mut(&d) {
            if (kind, of) < (o.kind, o.of.as_str()) {
                o.kind = kind;
                o.of = of.to_string();
            }
            return Ok(());
        }
        let path = self.store.blob_path(&d);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(repro_store::Error::Missing {
                    what: "blob",
                    digest: format!("{d} ({kind} of `{of}`)"),
                    path,
                }
                .into())
            }
            Err(e) => return Err(io_err("inspect", &path)(e)),
        };
        self.objects.insert(
            d,
            Object {
                digest: d,
                size,
                kind,
                of: of.to_string(),
            },
        );
        Ok(())
    }

    /// Add a tree object, its subtrees and every file in them.
    fn add_tree(&mut self, t: &TreeDigest, of: &str) -> Result<()> {
        self.add(BlobDigest::from_hash(t.hash()), ObjectKind::Tree, of)?;
        if !self.trees.insert(*t) {
            return Ok(());
        }
        let tree = self.store.get_tree(t)?;
        for e in &tree.entries {
            match &e.kind {
                EntryKind::File { digest, .. } => self.add(*digest, ObjectKind::File, of)?,
                EntryKind::Dir { tree } => self.add_tree(tree, of)?,
                EntryKind::Symlink { .. } => {}
            }
        }
        Ok(())
    }
}

/// The key ids of an envelope's signatures whose public key is in the store.
fn signers(store: &Store, env: &Envelope) -> Vec<BlobDigest> {
    env.signatures
        .iter()
        .filter_map(|s| s.keyid.parse::<BlobDigest>().ok())
        .filter(|d| store.has_blob(d))
        .collect()
}

/// The bundle's `index.json`: an OCI index of `images`, in digest order.
fn image_index(
    images: &[ImageDigest],
    read: impl Fn(&ImageDigest) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    repro_store::image::oci_index_bytes(images, read)
}

/// A tar header with nothing machine- or time-dependent in it.
fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what it yields and remembers whether the inner reader failed.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
    failed: bool,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            n: 0,
            failed: false,
        }
    }
    fn finish(self) -> (Hash, u64) {
        (Hash(self.hasher.finalize().into()), self.n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf).inspect_err(|_| self.failed = true)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

// ---------------------------------------------------------------- import

/// The first member, read to find the format.
#[derive(Deserialize)]
struct Head {
    format: u64,
}

/// Import the bundle at `path` into `store`: check everything, then make it
/// visible (see the module docs).
pub fn import(store: &Store, path: &Path) -> Result<Imported> {
    let file = fs::File::open(path).map_err(io_err("open", path))?;
    let mut buffered = BufReader::with_capacity(BUF, file);
    let gzip = buffered
        .fill_buf()
        .map_err(io_err("read", path))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(io_err("read", path))?;
    let not_bundle = |why: String| Error::NotABundle {
        path: path.to_path_buf(),
        why,
    };
    let first = entries
        .next()
        .ok_or_else(|| not_bundle("it is empty".to_string()))?
        .map_err(|e| not_bundle(format!("not a tar archive ({e})")))?;
    let name = member_name(&first);
    if name.as_deref() != Some(MANIFEST_NAME) {
        return Err(not_bundle(format!(
            "its first member is `{}`, not `{MANIFEST_NAME}`",
            name.unwrap_or_default()
        )));
    }
    let manifest_bytes = read_small(first, path, MANIFEST_NAME)?;
    let head: Head = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| not_bundle(format!("`{MANIFEST_NAME}` has no format version: {e}")))?;
    match head.format {
        1 => v1::import(store, path, &manifest_bytes, entries),
        found => Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
        }),
    }
}

fn member_name<R: Read>(e: &tar::Entry<R>) -> Option<String> {
    e.path().ok().and_then(|p| p.to_str().map(str::to_string))
}

/// Read a small member whole, refusing one over [`MAX_SMALL`].
fn read_small<R: Read>(mut e: tar::Entry<R>, path: &Path, name: &str) -> Result<Vec<u8>> {
    let size = e.header().size().unwrap_or(u64::MAX);
    if size > MAX_SMALL {
        return Err(Error::Refused {
            path: path.to_path_buf(),
            why: format!("member `{name}` is {size} bytes, more than such a member can be"),
        });
    }
    let mut out = Vec::with_capacity(size as usize);
    e.read_to_end(&mut out).map_err(io_err("read", path))?;
    Ok(out)
}

/// The reader of format 1.
pub mod v1 {
    use super::*;

    /// Import the rest of a format 1 bundle whose `bundle.json` was `manifest_bytes`.
    pub(super) fn import<R: Read>(
        store: &Store,
        path: &Path,
        manifest_bytes: &[u8],
        entries: tar::Entries<'_, R>,
    ) -> Result<Imported> {
        let refused = |why: String| Error::Refused {
            path: path.to_path_buf(),
            why,
        };
        let manifest: ManifestV1 = serde_json::from_slice(manifest_bytes)
            .map_err(|e| refused(format!("`{MANIFEST_NAME}` does not parse: {e}")))?;
        if manifest.media_type != MEDIA_TYPE_V1 {
            return Err(refused(format!(
                "`{MANIFEST_NAME}` has media type `{}`, expected `{MEDIA_TYPE_V1}`",
                manifest.media_type
            )));
        }
        let manifest_digest = Hash::of(manifest_bytes);
        let mut expected: HashMap<BlobDigest, &Object> = HashMap::new();
        for o in &manifest.objects {
            if expected.insert(o.digest, o).is_some() {
                return Err(refused(format!("object `{}` is listed twice", o.digest)));
            }
        }
        let listed = |d: &BlobDigest, what: &str| {
            if expected.contains_key(d) {
                Ok(())
            } else {
                Err(refused(format!(
                    "{what} `{d}` is named in `{MANIFEST_NAME}` but not listed as an object"
                )))
            }
        };
        listed(&BlobDigest::from_hash(manifest.record.hash()), "record")?;
        for r in &manifest.records {
            listed(&BlobDigest::from_hash(r.record.hash()), "record")?;
        }
        for a in &manifest.attestations {
            listed(&a.attestation, "attestation")?;
        }
        for i in &manifest.images {
            listed(&BlobDigest::from_hash(i.hash()), "image")?;
        }
        for k in &manifest.keys {
            listed(k, "public key")?;
        }

        let _lock = store.lock_shared()?;
        let staging = store.scratch("import-")?;
        let mut staged: HashMap<BlobDigest, PathBuf> = HashMap::new();
        let mut index_bytes = None;
        let mut layout_seen = false;
        let mut sums = None;
        for entry in entries {
            let entry = entry.map_err(|e| refused(format!("the tar is damaged: {e}")))?;
            let Some(name) = member_name(&entry) else {
                return Err(refused("a member's name is not UTF-8".to_string()));
            };
            if sums.is_some() {
                return Err(refused(format!(
                    "member `{name}` comes after `{MANIFEST_DIGEST_NAME}`, which must be last"
                )));
            }
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(refused(format!("member `{name}` is not a regular file")));
            }
            match name.as_str() {
                "oci-layout" if !layout_seen => {
                    if read_small(entry, path, &name)? != OCI_LAYOUT {
                        return Err(refused("`oci-layout` is not the expected one".to_string()));
                    }
                    layout_seen = true;
                }
                "index.json" if index_bytes.is_none() => {
                    index_bytes = Some(read_small(entry, path, &name)?);
                }
                MANIFEST_DIGEST_NAME => sums = Some(read_small(entry, path, &name)?),
                _ => {
                    let d = name
                        .strip_prefix(BLOB_PREFIX)
                        .and_then(|hex| Hash::from_hex(hex).ok())
                        .map(BlobDigest::from_hash)
                        .ok_or_else(|| refused(format!("unexpected member `{name}`")))?;
                    let o = *expected.get(&d).ok_or_else(|| {
                        refused(format!(
                            "member `{name}` is not listed in `{MANIFEST_NAME}`"
                        ))
                    })?;
                    if staged.contains_key(&d) {
                        return Err(refused(format!("member `{name}` appears twice")));
                    }
                    let dest = staging.path().join(d.hex());
                    stage(entry, o, &dest, path)?;
                    staged.insert(d, dest);
                }
            }
        }

        let Some(sums) = sums else {
            return Err(refused(format!(
                "it has no `{MANIFEST_DIGEST_NAME}`: the bundle is truncated"
            )));
        };
        let want = format!("{}  {MANIFEST_NAME}\n", manifest_digest.hex());
        if sums != want.as_bytes() {
            return Err(Error::Tampered {
                path: path.to_path_buf(),
                digest: manifest_digest.to_string(),
                what: format!("manifest `{MANIFEST_NAME}` (`{manifest_digest}`)"),
                why: format!(
                    "`{MANIFEST_DIGEST_NAME}` says `{}`",
                    String::from_utf8_lossy(&sums).trim()
                ),
            });
        }
        if !layout_seen {
            return Err(refused("it has no `oci-layout`".to_string()));
        }
        for o in &manifest.objects {
            if !staged.contains_key(&o.digest) {
                return Err(refused(format!(
                    "it is incomplete: {} is missing",
                    o.describe()
                )));
            }
        }
        let read_staged = |d: &BlobDigest| -> Result<Vec<u8>> {
            let p = &staged[d];
            fs::read(p).map_err(io_err("read", p))
        };
        let index = image_index(&manifest.images, |d| {
            read_staged(&BlobDigest::from_hash(d.hash()))
        })?;
        if index_bytes.as_deref() != Some(index.as_slice()) {
            return Err(refused(
                "`index.json` does not list exactly the bundle's images".to_string(),
            ));
        }

        // Signatures, with the bundle's keys (and the store's).
        let bundle_keys: HashMap<String, ed25519_dalek::VerifyingKey> = manifest
            .keys
            .iter()
            .filter_map(|k| {
                let raw: [u8; 32] = read_staged(k).ok()?.try_into().ok()?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw).ok()?;
                (keys::key_id(&vk) == *k).then(|| (k.to_string(), vk))
            })
            .collect();
        let lookup = |id: &str| {
            bundle_keys
                .get(id)
                .copied()
                .or_else(|| keys::lookup_in_store(store, id))
        };
        for r in &manifest.records {
            let bytes = read_staged(&BlobDigest::from_hash(r.record.hash()))?;
            let bad = |why: String| Error::Tampered {
                path: path.to_path_buf(),
                digest: r.record.to_string(),
                what: format!("record `{}` of `{}@{}`", r.record, r.name, r.version),
                why,
            };
            let env: Envelope = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("not a DSSE envelope: {e}")))?;
            let (payload, _) = keys::open(&env, lookup).map_err(|e| bad(e.to_string()))?;
            let st: Statement = serde_json::from_slice(&payload)
                .map_err(|e| bad(format!("its statement does not parse: {e}")))?;
            st.check_types().map_err(bad)?;
            let ext = &st.predicate.build_definition.external_parameters;
            if ext.name != r.name || ext.version != r.version {
                return Err(bad(format!(
                    "it is a record of `{}@{}`, not of `{}@{}`",
                    ext.name, ext.version, r.name, r.version
                )));
            }
        }
        if !manifest.records.iter().any(|r| {
            r.record == manifest.record && format!("{}@{}", r.name, r.version) == manifest.model
        }) {
            return Err(refused(format!(
                "`{MANIFEST_NAME}` registers no record `{}` as `{}`",
                manifest.record, manifest.model
            )));
        }
        for a in &manifest.attestations {
            let bytes = read_staged(&a.attestation)?;
            let bad = |why: String| Error::Tampered {
                path: path.to_path_buf(),
                digest: a.attestation.to_string(),
                what: format!("attestation `{}`", a.attestation),
                why,
            };
            let checked =
                repro_evidence::attest::check(&bytes, lookup).map_err(|e| bad(format!("{e:#}")))?;
            checked.signature.map_err(bad)?;
            if checked.statement.record() != Some(a.record)
                || !manifest.records.iter().any(|r| r.record == a.record)
            {
                return Err(bad(format!(
                    "it is not about record `{}` of this bundle",
                    a.record
                )));
            }
        }

        // A version keeps naming the inputs it was first built from: a
        // record of other inputs than the store's records of its version is
        // refused before anything becomes visible (and again, race-free,
        // by `put_record`).
        for r in &manifest.records {
            let st = repro_evidence::record::statement_of(&read_staged(&BlobDigest::from_hash(
                r.record.hash(),
            ))?)
            .map_err(|e| refused(format!("record `{}`: {e:#}", r.record)))?;
            let now = repro_evidence::record::Inputs::of_statement(&st);
            let recipe = &st.predicate.build_definition.external_parameters.recipe;
            let conflict = repro_evidence::record::conflict(
                store,
                &r.name,
                &r.version,
                &now,
                recipe,
                ("in this store's record", "in the bundle's"),
            )
            .map_err(|e| refused(format!("{e:#}")))?;
            if let Some((existing, diffs)) = conflict {
                return Err(Error::VersionConflict {
                    path: path.to_path_buf(),
                    why: format!(
                        "its record `{}` of `{}@{}` was built from other inputs than this store's record `{existing}` of that version:{}",
                        r.record,
                        r.name,
                        r.version,
                        diffs.iter().map(|d| format!("\n  - {d}")).collect::<String>()
                    ),
                });
            }
        }

        // Everything checked out: make it visible.
        let mut bytes = 0u64;
        for o in &manifest.objects {
            let (d, n) = store.put_file_move(&staged[&o.digest])?;
            if d != o.digest {
                return Err(repro_store::Error::Mismatch {
                    expected: o.digest.to_string(),
                    actual: d.to_string(),
                }
                .into());
            }
            bytes += n;
        }
        for i in &manifest.images {
            store.put_image(&store.read_blob(&BlobDigest::from_hash(i.hash()))?)?;
        }
        for r in &manifest.records {
            store.put_record(
                &store.get_record(&r.record)?,
                &r.name,
                &r.version,
                &repro_evidence::record::inputs_of,
            )?;
        }
        for a in &manifest.attestations {
            store.put_attestation(&a.record, &store.read_blob(&a.attestation)?)?;
        }
        Ok(Imported {
            format: 1,
            model: manifest.model.clone(),
            record: manifest.record,
            manifest: manifest_digest,
            objects: manifest.objects.len(),
            bytes,
        })
    }

    /// Stream one object into `dest`, refusing it unless its size and hash
    /// are what the manifest says.
    fn stage<R: Read>(entry: tar::Entry<R>, o: &Object, dest: &Path, path: &Path) -> Result<()> {
        let tampered = |why: String| Error::Tampered {
            path: path.to_path_buf(),
            digest: o.digest.to_string(),
            what: o.describe(),
            why,
        };
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size != o.size {
            return Err(tampered(format!(
                "the member is {size} bytes, `{MANIFEST_NAME}` says {}",
                o.size
            )));
        }
        let file = fs::File::create(dest).map_err(io_err("create", dest))?;
        let mut w = io::BufWriter::with_capacity(BUF, file);
        let mut r = HashingReader::new(entry);
        io::copy(&mut r, &mut w).map_err(|e| {
            if r.failed {
                Error::Refused {
                    path: path.to_path_buf(),
                    why: format!("the tar is damaged: {e}"),
                }
            } else {
                io_err("write", dest)(e)
            }
        })?;
        let file = w
            .into_inner()
            .map_err(|e| io_err("write", dest)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", dest))?;
        let (actual, n) = r.finish();
        if actual != o.digest.hash() || n != o.size {
            return Err(tampered(format!("its bytes hash to `{actual}`")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_nothing_of_the_machine() {
        let mut tar = tar::Builder::new(Vec::new());
        append(&mut tar, "a", b"xyz").unwrap();
        let bytes = tar.into_inner().unwrap();
        let h = tar::Header::from_byte_slice(&bytes[..512]);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.username().unwrap(), Some(""));
        assert_eq!(h.groupname().unwrap(), Some(""));
    }

    fn bundle_with_manifest(json: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.tar");
        let mut tar = tar::Builder::new(fs::File::create(&p).unwrap());
        append(&mut tar, MANIFEST_NAME, json.as_bytes()).unwrap();
        tar.finish().unwrap();
        (t, p)
    }

    #[test]
    fn a_newer_format_is_refused_with_a_hint() {
        let (t, p) = bundle_with_manifest(r#"{"format": 2}"#);
        let store = Store::open(&t.path().join("store")).unwrap();
        let err = import(&store, &p).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFormat { found: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("hint: import it with a newer"),
            "{err}"
        );
    }

    #[test]
    fn a_tar_without_a_manifest_first_is_not_a_bundle() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.tar");
        let mut tar = tar::Builder::new(fs::File::create(&p).unwrap());
        append(&mut tar, "oci-layout", OCI_LAYOUT).unwrap();
        tar.finish().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let err = import(&store, &p).unwrap_err();
        assert!(matches!(err, Error::NotABundle { .. }), "{err}");
        assert!(err.to_string().contains("`oci-layout`"), "{err}");
    }

    #[test]
    fn a_truncated_bundle_is_refused_and_leaves_nothing() {
        let manifest = ManifestV1 {
            format: 1,
            media_type: MEDIA_TYPE_V1.to_string(),
            model: "m@1".to_string(),
            record: RecordDigest::from_hash(Hash::of(b"r")),
            records: vec![],
            attestations: vec![],
            images: vec![],
            keys: vec![],
            objects: vec![Object {
                digest: BlobDigest::from_hash(Hash::of(b"r")),
                size: 1,
                kind: ObjectKind::Record,
                of: "record".to_string(),
            }],
        };
        let (t, p) = bundle_with_manifest(&serde_json::to_string(&manifest).unwrap());
        let store = Store::open(&t.path().join("store")).unwrap();
        let err = import(&store, &p).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(store.list_blobs().unwrap().is_empty());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
}
