//! Garbage collection (mark and sweep), pins and registry stages.
//!
//! The store does not know what a record means: the caller (the runner)
//! decides which versions are retained and hands [`Store::gc_plan`] the
//! roots those versions reach ([`GcRoots`]: blobs, trees, images and
//! records) and the versions whose refs go ([`GcOptions::drop_versions`]).
//! The mark phase walks every root tree (subtrees and file blobs) and every
//! root image (manifest, config and layers); the sweep removes
//!
//! - every blob nothing marked reaches ([`GcKind::Blob`]);
//! - the record refs of the dropped versions ([`GcKind::Record`], one item
//!   per version: its ref and its record history
//!   `v1/refs/record-history/<name>/<version>/`), and record histories
//!   whose version has no ref;
//! - attestation refs about records that are not kept ([`GcKind::Attestation`]);
//! - image refs (`v1/refs/images/<hex>`) of images not kept ([`GcKind::Image`]),
//!   rewriting `v1/index.json` to match;
//! - action cache entries whose output tree or log is not kept, and
//!   unreadable ones ([`GcKind::ActionCache`]);
//! - unpacked roots `v1/rootfs/<manifest>` of images not kept ([`GcKind::Rootfs`]);
//! - in `v1/tmp` ([`GcKind::Tmp`]): the scratch directory of every process
//!   that is gone, whatever its age, and never that of a process that runs
//!   (see [`crate::scratch`]); other leftovers (no process owns them) once
//!   older than [`GcOptions::tmp_max_age`].
//!
//! [`Store::gc_plan`] only reads; [`Store::gc_sweep`] removes exactly what a
//! plan lists, refs first and blobs last, so an interrupted sweep leaves no
//! ref naming a missing object (the next run finishes the job). A sweep
//! that removes blobs first invalidates every stat cache
//! ([`Store::invalidate_stat_caches`]; see [`crate::statcache`]). The caller
//! must hold [`Store::lock_exclusive`] from planning to the end of the sweep.
//!
//! A tree or image manifest that a root reaches but that is corrupt stops
//! the plan with an error: what it names cannot be known, so nothing is
//! removed. Roots naming absent objects are listed in [`GcPlan::missing`].
//!
//! [`Store::walk`] runs the same mark phase for `repro fsck`: it re-hashes
//! every object it reaches and, instead of stopping, names each missing,
//! corrupt or malformed one with the root that led to it ([`Broken`]).
//!
//! Pins live in `v1/refs/pins/versions/<name>/<version>` (holding the record
//! digest at the time of pinning, informational) and
//! `v1/refs/pins/objects/<hex>`. Registry stages (issue 6) are read from
//! `v1/refs/stages/<stage>/<name>/<version>`; nothing writes them yet.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::io_err;
use crate::fsutil::{remove_file_if_present, remove_tree, sync_dir};
use crate::image::Manifest;
use crate::layout::Ns;
use crate::record::{check_name, list_names};
use crate::scratch;
use crate::{
    ActionResult, BlobDigest, EntryKind, Error, Hash, ImageDigest, RecordDigest, Result, Store,
    StoreLock, TreeDigest,
};

/// What a collection keeps: the roots of the mark phase.
#[derive(Debug, Clone, Default)]
pub struct GcRoots {
    /// Blobs kept as they are (recipes, locks, logs, keys, attestations).
    pub blobs: BTreeSet<BlobDigest>,
    /// Trees kept with every subtree and file blob.
    pub trees: BTreeSet<TreeDigest>,
    /// Images kept with their manifest, config and layers (and their ref
    /// and unpacked root).
    pub images: BTreeSet<ImageDigest>,
    /// Records kept: their blob and their attestation refs.
    pub records: BTreeSet<RecordDigest>,
}

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// `(name, version)` whose record refs are removed.
    pub drop_versions: Vec<(String, String)>,
    /// Entries of `v1/tmp` that no process owns (see [`crate::scratch`])
    /// last modified longer ago than this are removed.
    pub tmp_max_age: Duration,
    /// The time the ages are measured from.
    pub now: SystemTime,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            drop_versions: Vec::new(),
            tmp_max_age: Duration::from_secs(3600),
            now: SystemTime::now(),
        }
    }
}

/// The kind of thing a collection removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GcKind {
    /// The record refs of a version no longer retained:
    /// `v1/refs/records/<name>/<version>` and every entry of
    /// `v1/refs/record-history/<name>/<version>/`.
    Record,
    /// An attestation ref `v1/refs/attestations/<record>/<attestation>`.
    Attestation,
    /// An image ref `v1/refs/images/<hex>`.
    Image,
    /// An action cache entry `v1/ac/<key>`.
    ActionCache,
    /// An unpacked root `v1/rootfs/<manifest>`.
    Rootfs,
    /// A blob `v1/blobs/sha256/<hex>`.
    Blob,
    /// A leftover in `v1/tmp`.
    Tmp,
}

impl GcKind {
    /// Every kind, in sweep order.
    pub const ALL: [GcKind; 7] = [
        GcKind::Record,
        GcKind::Attestation,
        GcKind::Image,
        GcKind::ActionCache,
        GcKind::Rootfs,
        GcKind::Blob,
        GcKind::Tmp,
    ];

    /// A short plural label: `records`, `blobs`, `action cache entries`...
    pub fn label(self) -> &'static str {
        match self {
            GcKind::Record => "record refs",
            GcKind::Attestation => "attestation refs",
            GcKind::Image => "image refs",
            GcKind::ActionCache => "action cache entries",
            GcKind::Rootfs => "unpacked roots",
            GcKind::Blob => "blobs",
            GcKind::Tmp => "tmp leftovers",
        }
    }
}

/// One thing a collection removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcItem {
    /// What it is.
    pub kind: GcKind,
    /// Its name: a digest (`sha256:<hex>`), `name@version`, or a file name in `v1/tmp`.
    pub id: String,
    /// The bytes its files take (apparent size; 0 for refs).
    pub bytes: u64,
    /// Files removed before `path` (a version's record history).
    #[serde(skip)]
    before: Vec<PathBuf>,
    #[serde(skip)]
    path: PathBuf,
}

/// What a collection would remove and keep; see [`Store::gc_plan`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcPlan {
    /// Everything to remove, in sweep order (kind, then id).
    pub items: Vec<GcItem>,
    /// Objects that a root reaches but that are not in the store
    /// (`kind digest`, e.g. `blob sha256:...`), sorted.
    pub missing: Vec<String>,
    /// How many blobs stay.
    pub kept_blobs: usize,
    /// How many bytes the blobs that stay take.
    pub kept_bytes: u64,
}

impl GcPlan {
    /// How many items of `kind` go.
    pub fn count(&self, kind: GcKind) -> usize {
        self.items.iter().filter(|i| i.kind == kind).count()
    }

    /// How many bytes the items of `kind` take.
    pub fn bytes(&self, kind: GcKind) -> u64 {
        self.items
            .iter()
            .filter(|i| i.kind == kind)
            .map(|i| i.bytes)
            .sum()
    }

    /// How many bytes return in all.
    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }

    /// The items grouped by kind: `(kind, count, bytes)` for each kind
    /// present, in sweep order.
    pub fn summary(&self) -> Vec<(GcKind, usize, u64)> {
        let mut by: BTreeMap<GcKind, (usize, u64)> = BTreeMap::new();
        for i in &self.items {
            let e = by.entry(i.kind).or_default();
            e.0 += 1;
            e.1 += i.bytes;
        }
        by.into_iter().map(|(k, (n, b))| (k, n, b)).collect()
    }

    /// Whether nothing goes.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Where, below a root, a walk met an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The root itself.
    Root,
    /// A file of a root tree, by its path in the tree (`sub/model.pkl`).
    File(String),
    /// A folder of a root tree, by its path in the tree (`sub`).
    Folder(String),
    /// The config of a root image.
    Config,
    /// A layer of a root image, counted from 0.
    Layer(usize),
}

/// An object that [`Store::walk`] reached but could not use.
#[derive(Debug)]
pub struct Broken {
    /// What the walk expected: `blob`, `tree`, `image` or `record`.
    pub kind: &'static str,
    /// Its digest.
    pub digest: Hash,
    /// The root the walk came from (the first one, when several reach it):
    /// a digest of [`GcRoots`].
    pub root: Hash,
    /// Where below that root.
    pub via: Via,
    /// What is wrong: [`Error::Missing`], [`Error::Corrupt`],
    /// [`Error::Malformed`] (a tree or image manifest that does not parse),
    /// or [`Error::Io`] (it cannot be read).
    pub error: Error,
}

/// What [`Store::walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    reached: HashSet<Hash>,
    /// How many objects it re-hashed (corrupt ones included).
    pub objects: usize,
    /// How many bytes the intact ones hold.
    pub bytes: u64,
    /// Every object reached that is missing, corrupt, malformed or
    /// unreadable, once each, in the order met.
    pub broken: Vec<Broken>,
}

impl Walk {
    /// Whether the walk reached `digest` (whether or not it is intact).
    pub fn reaches(&self, digest: &Hash) -> bool {
        self.reached.contains(digest)
    }
}

/// How the mark phase treats what it reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    /// For a collection: whether each object is there; stop at a corrupt
    /// or malformed tree or image manifest.
    #[default]
    Collect,
    /// For a check: re-hash each object once; note what is wrong and go on.
    Check,
}

/// The mark phase's state.
#[derive(Default)]
struct Marks {
    mode: Mode,
    blobs: HashSet<Hash>,
    trees_done: HashSet<Hash>,
    images: HashSet<Hash>,
    missing: BTreeSet<String>,
    objects: usize,
    bytes: u64,
    broken: Vec<Broken>,
}

impl Marks {
    fn hashed(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }

    fn broken(&mut self, kind: &'static str, digest: Hash, root: Hash, via: Via, error: Error) {
        if matches!(error, Error::Corrupt { .. }) {
            // Re-hashed too, and found wanting.
            self.objects += 1;
        }
        self.broken.push(Broken {
            kind,
            digest,
            root,
            via,
            error,
        });
    }
}

impl Store {
    fn gc_dir(&self, rel: &str) -> PathBuf {
        self.layout_dir().join(rel)
    }

    /// Take the store lock exclusively if no one holds it; `None` if another
    /// process holds it (shared or exclusive). Once taken, removes the
    /// scratch of processes that are gone, like [`Store::lock_exclusive`].
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>> {
        let path = self.gc_dir("lock");
        let file = fs::File::open(&path).map_err(io_err("open", &path))?;
        match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
            Ok(()) => {
                self.after_lock();
                Ok(Some(StoreLock { file }))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(io_err("lock", &path)(e)),
        }
    }

    // ---- pins -------------------------------------------------------------

    /// Pin `name@version`: collections keep it whatever the retention rules
    /// say. The version must have a record. Idempotent.
    pub fn pin_version(&self, name: &str, version: &str) -> Result<RecordDigest> {
        let record = self.resolve_record(name, version)?;
        let dir = self.ns_dir(Ns::PinnedVersions).join(name);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&dir.join(version), format!("{record}\n").as_bytes())?;
        Ok(record)
    }

    /// Unpin `name@version`; `false` if it was not pinned.
    pub fn unpin_version(&self, name: &str, version: &str) -> Result<bool> {
        check_name("record name", name)?;
        check_name("version", version)?;
        let dir = self.ns_dir(Ns::PinnedVersions).join(name);
        let removed = remove_file_if_present(&dir.join(version))?;
        // Tidy: a name without pins leaves no directory behind.
        let _ = fs::remove_dir(&dir);
        Ok(removed)
    }

    /// The pinned versions `(name, version)`, sorted.
    pub fn pinned_versions(&self) -> Result<Vec<(String, String)>> {
        let root = self.ns_dir(Ns::PinnedVersions);
        let mut out = Vec::new();
        for name in list_names(&root)? {
            for version in list_names(&root.join(&name))? {
                out.push((name.clone(), version));
            }
        }
        Ok(out)
    }

    /// Pin an object by digest (a blob, tree, image or record): collections
    /// keep it and, for a tree or an image, everything it names. Idempotent.
    pub fn pin_object(&self, digest: &Hash) -> Result<()> {
        let dir = self.ns_dir(Ns::PinnedObjects);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&dir.join(digest.hex()), b"")
    }

    /// Unpin an object; `false` if it was not pinned.
    pub fn unpin_object(&self, digest: &Hash) -> Result<bool> {
        remove_file_if_present(&self.ns_dir(Ns::PinnedObjects).join(digest.hex()))
    }

    /// The pinned objects, sorted.
    pub fn pinned_objects(&self) -> Result<Vec<Hash>> {
        let dir = self.ns_dir(Ns::PinnedObjects);
        Ok(list_names(&dir)?
            .iter()
            .filter_map(|n| Hash::from_hex(n).ok())
            .collect())
    }

    /// The versions `(name, version)` in registry stage `stage`, sorted:
    /// the files `v1/refs/stages/<stage>/<name>/<version>`. Empty when the
    /// stage does not exist (nothing writes stages before the registry).
    pub fn stage_members(&self, stage: &str) -> Result<Vec<(String, String)>> {
        check_name("stage", stage)?;
        let root = self.ns_dir(Ns::Stages).join(stage);
        let mut out = Vec::new();
        for name in list_names(&root)? {
            for version in list_names(&root.join(&name))? {
                out.push((name.clone(), version));
            }
        }
        Ok(out)
    }

    // ---- mark and sweep ---------------------------------------------------

    /// Work out what a collection keeping `roots` removes. Only reads.
    pub fn gc_plan(&self, roots: &GcRoots, opts: &GcOptions) -> Result<GcPlan> {
        let m = self.mark(roots, Mode::Collect)?;

        let mut items = Vec::new();
        let drop: BTreeSet<&(String, String)> = opts.drop_versions.iter().collect();
        for (name, version) in &drop {
            check_name("record name", name)?;
            check_name("version", version)?;
            let path = self.ns_dir(Ns::Records).join(name).join(version);
            let history = self.history_entries(name, version)?;
            if path.exists() || !history.is_empty() {
                let mut i = item(GcKind::Record, format!("{name}@{version}"), 0, path);
                i.before = history;
                items.push(i);
            }
        }
        // A history whose version has no ref (left by hand): not a version.
        let history_root = self.ns_dir(Ns::RecordHistory);
        for name in list_names(&history_root)? {
            for version in list_names(&history_root.join(&name))? {
                let key = (name.clone(), version.clone());
                if drop.contains(&key)
                    || check_name("version", &version).is_err()
                    || check_name("record name", &name).is_err()
                {
                    continue;
                }
                let path = self.ns_dir(Ns::Records).join(&name).join(&version);
                if !path.exists() {
                    let mut i = item(GcKind::Record, format!("{name}@{version}"), 0, path);
                    i.before = self.history_entries(&name, &version)?;
                    items.push(i);
                }
            }
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));

        let att_root = self.ns_dir(Ns::Attestations);
        let kept_records: HashSet<Hash> = roots.records.iter().map(|r| r.hash()).collect();
        for rec in list_names(&att_root)? {
            let keep = Hash::from_hex(&rec).is_ok_and(|h| kept_records.contains(&h));
            if keep {
                continue;
            }
            for att in list_names(&att_root.join(&rec))? {
                let id = Hash::from_hex(&att)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|_| att.clone());
                items.push(item(
                    GcKind::Attestation,
                    id,
                    0,
                    att_root.join(&rec).join(&att),
                ));
            }
        }

        for image in self.list_images()? {
            if !m.images.contains(&image.hash()) {
                let path = self.ns_dir(Ns::Images).join(image.hex());
                items.push(item(GcKind::Image, image.to_string(), 0, path));
            }
        }

        let ac_dir = self.ns_dir(Ns::ActionCache);
        for name in list_names(&ac_dir)? {
            let path = ac_dir.join(&name);
            let keep = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ActionResult>(&b).ok())
                .is_some_and(|r| {
                    m.blobs.contains(&r.output.hash()) && m.blobs.contains(&r.log.hash())
                });
            if !keep {
                let id = Hash::from_hex(&name)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|_| name.clone());
                let bytes = file_size(&path)?;
                items.push(item(GcKind::ActionCache, id, bytes, path));
            }
        }

        let rootfs_dir = self.ns_dir(Ns::Rootfs);
        for name in list_names(&rootfs_dir)? {
            // Only entries named by a digest are the cache's; leave anything else.
            let Ok(hash) = Hash::from_hex(&name) else {
                continue;
            };
            if !m.images.contains(&hash) {
                let path = rootfs_dir.join(&name);
                let bytes = tree_size(&path)?;
                items.push(item(GcKind::Rootfs, hash.to_string(), bytes, path));
            }
        }

        let mut kept_blobs = 0;
        let mut kept_bytes = 0;
        for b in self.list_blobs()? {
            let path = self.blob_path(&b);
            let bytes = file_size(&path)?;
            if m.blobs.contains(&b.hash()) {
                kept_blobs += 1;
                kept_bytes += bytes;
            } else {
                items.push(item(GcKind::Blob, b.to_string(), bytes, path));
            }
        }

        let tmp = self.ns_dir(Ns::Tmp);
        let rd = fs::read_dir(&tmp).map_err(io_err("list", &tmp))?;
        let mut tmp_items = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("list", &tmp))?;
            let path = entry.path();
            if scratch::is_owner_name(&entry.file_name()) {
                // A process's scratch: it goes once the process is gone,
                // whatever its age, and never while it runs (nor when
                // that cannot be told).
                if !matches!(scratch::claim_if_dead(&path), Ok(Some(_))) {
                    continue;
                }
            } else {
                let meta = match fs::symlink_metadata(&path) {
                    Ok(meta) => meta,
                    // Removed since it was listed: someone else's temp file.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("inspect", &path)(e)),
                };
                let modified = meta.modified().map_err(io_err("inspect", &path))?;
                let age = opts.now.duration_since(modified).unwrap_or_default();
                if age <= opts.tmp_max_age {
                    continue;
                }
            }
            let bytes = tree_size(&path)?;
            let id = entry.file_name().to_string_lossy().into_owned();
            tmp_items.push(item(GcKind::Tmp, id, bytes, path));
        }
        tmp_items.sort_by(|a, b| a.id.cmp(&b.id));
        items.extend(tmp_items);

        Ok(GcPlan {
            items,
            missing: m.missing.into_iter().collect(),
            kept_blobs,
            kept_bytes,
        })
    }

    /// Walk everything `roots` reach, as a collection's mark phase does
    /// (every subtree and file of a tree, the manifest, config and layers
    /// of an image), re-hashing every object once on the way. Unlike
    /// [`Store::gc_plan`] it does not stop at a corrupt or malformed tree or
    /// image manifest: each object it cannot use is in [`Walk::broken`],
    /// with the root that led to it and where below that root. Only reads.
    pub fn walk(&self, roots: &GcRoots) -> Result<Walk> {
        let m = self.mark(roots, Mode::Check)?;
        Ok(Walk {
            reached: m.blobs,
            objects: m.objects,
            bytes: m.bytes,
            broken: m.broken,
        })
    }

    /// Remove what `plan` lists, in its order (refs first, blobs last).
    /// Something already gone is not an error. Rewrites `v1/index.json`
    /// when image refs go.
    pub fn gc_sweep(&self, plan: &GcPlan) -> Result<()> {
        if plan.items.iter().any(|i| i.kind == GcKind::Blob) {
            // A stat cache may name any blob; none may outlive its removal.
            self.invalidate_stat_caches()?;
            // Blob stamps describe sets that may be going: a check after
            // this re-hashes its set once.
            self.clear_blob_stamps()?;
        }
        let mut items: Vec<&GcItem> = plan.items.iter().collect();
        items.sort_by_key(|i| i.kind);
        let mut index_dirty = false;
        let mut parents = BTreeSet::new();
        for i in items {
            if index_dirty && i.kind != GcKind::Image {
                // Before any blob goes, the index must stop naming removed images.
                self.rewrite_index()?;
                index_dirty = false;
            }
            // A version's history goes before its ref: an interrupted
            // sweep leaves the ref, and the next collection finishes.
            for p in &i.before {
                remove_file_if_present(p)?;
            }
            if let Some(dir) = i.before.first().and_then(|p| p.parent()) {
                let _ = fs::remove_dir(dir);
                if let Some(name_dir) = dir.parent() {
                    let _ = fs::remove_dir(name_dir); // tidy: only when empty
                }
            }
            match i.kind {
                GcKind::Tmp if i.path.file_name().is_some_and(scratch::is_owner_name) => {
                    // Checked again: its owner is gone, and the lock is ours while it goes.
                    scratch::remove_if_dead(&i.path)?;
                }
                GcKind::Rootfs | GcKind::Tmp => remove_tree(&i.path)?,
                _ => {
                    remove_file_if_present(&i.path)?;
                }
            }
            match i.kind {
                GcKind::Image => index_dirty = true,
                GcKind::Record | GcKind::Attestation => {
                    if let Some(p) = i.path.parent() {
                        parents.insert(p.to_path_buf());
                    }
                }
                _ => {}
            }
        }
        if index_dirty {
            self.rewrite_index()?;
        }
        // Tidy: a model or record whose last ref went leaves no directory.
        for p in parents {
            let _ = fs::remove_dir(&p);
        }
        let dirs = [
            self.gc_dir("blobs/sha256"),
            self.ns_dir(Ns::ActionCache),
            self.ns_dir(Ns::Images),
            self.ns_dir(Ns::Rootfs),
            self.ns_dir(Ns::Tmp),
        ];
        for d in dirs {
            if d.is_dir() {
                sync_dir(&d)?;
            }
        }
        Ok(())
    }

    /// The files of the record history of `name@version`, sorted.
    fn history_entries(&self, name: &str, version: &str) -> Result<Vec<PathBuf>> {
        let dir = self.record_history_dir(name, version);
        Ok(list_names(&dir)?.into_iter().map(|n| dir.join(n)).collect())
    }

    /// The mark phase: everything `roots` reach. In [`Mode::Collect`] it
    /// only asks whether each object is there (and reads trees and image
    /// manifests, stopping at a corrupt or malformed one); in
    /// [`Mode::Check`] it re-hashes every object once and notes each one it
    /// cannot use in [`Marks::broken`] instead of stopping.
    fn mark(&self, roots: &GcRoots, mode: Mode) -> Result<Marks> {
        let mut m = Marks {
            mode,
            ..Marks::default()
        };
        for r in &roots.records {
            self.mark_blob(
                &mut m,
                "record",
                &BlobDigest::from_hash(r.hash()),
                r.hash(),
                || Via::Root,
            );
        }
        for b in &roots.blobs {
            self.mark_blob(&mut m, "blob", b, b.hash(), || Via::Root);
        }
        for t in &roots.trees {
            self.mark_tree(&mut m, t)?;
        }
        for i in &roots.images {
            self.mark_image(&mut m, i)?;
        }
        Ok(m)
    }

    fn mark_blob(
        &self,
        m: &mut Marks,
        what: &'static str,
        d: &BlobDigest,
        root: Hash,
        via: impl FnOnce() -> Via,
    ) {
        if m.mode == Mode::Collect {
            if !self.has_blob(d) {
                m.missing.insert(format!("{what} {d}"));
            }
            m.blobs.insert(d.hash());
            return;
        }
        if !m.blobs.insert(d.hash()) {
            return;
        }
        match self.verify_blob(d) {
            Ok(n) => m.hashed(n),
            Err(error) => m.broken(what, d.hash(), root, via(), error),
        }
    }

    fn mark_tree(&self, m: &mut Marks, t: &TreeDigest) -> Result<()> {
        let root = t.hash();
        // Each tree with its path below the root (`None`: the root itself).
        let mut stack: Vec<(TreeDigest, Option<String>)> = vec![(*t, None)];
        while let Some((t, path)) = stack.pop() {
            if !m.trees_done.insert(t.hash()) {
                continue;
            }
            let first = m.blobs.insert(t.hash());
            let tree = match self.get_tree(&t) {
                Ok(tree) => tree,
                Err(Error::Missing { .. }) if m.mode == Mode::Collect => {
                    m.missing.insert(format!("tree {t}"));
                    continue;
                }
                Err(e) if m.mode == Mode::Collect => return Err(e),
                // Reached before as a blob: a missing or corrupt one is
                // noted already.
                Err(error) if !first && !matches!(error, Error::Malformed { .. }) => continue,
                Err(error) => {
                    let via = path.map_or(Via::Root, Via::Folder);
                    m.broken("tree", t.hash(), root, via, error);
                    continue;
                }
            };
            let check = m.mode == Mode::Check;
            if check && first {
                m.hashed(file_size(
                    &self.blob_path(&BlobDigest::from_hash(t.hash())),
                )?);
            }
            // Paths are only for messages: a collection makes none.
            let prefix = match &path {
                Some(p) if check => format!("{p}/"),
                _ => String::new(),
            };
            for e in tree.entries {
                match e.kind {
                    EntryKind::File { digest, .. } => {
                        self.mark_blob(m, "blob", &digest, root, || {
                            Via::File(format!("{prefix}{}", e.name))
                        })
                    }
                    EntryKind::Dir { tree } => {
                        let sub = if check {
                            format!("{prefix}{}", e.name)
                        } else {
                            String::new()
                        };
                        stack.push((tree, Some(sub)));
                    }
                    EntryKind::Symlink { .. } => {}
                }
            }
        }
        Ok(())
    }

    fn mark_image(&self, m: &mut Marks, d: &ImageDigest) -> Result<()> {
        if !m.images.insert(d.hash()) {
            return Ok(());
        }
        let first = m.blobs.insert(d.hash());
        let bytes = match self.read_blob(&BlobDigest::from_hash(d.hash())) {
            Ok(b) => b,
            Err(Error::Missing { .. }) if m.mode == Mode::Collect => {
                m.missing.insert(format!("image {d}"));
                return Ok(());
            }
            Err(e) if m.mode == Mode::Collect => return Err(e),
            Err(error) => {
                m.broken("image", d.hash(), d.hash(), Via::Root, error);
                return Ok(());
            }
        };
        if m.mode == Mode::Check && first {
            m.hashed(bytes.len() as u64);
        }
        let manifest = match Manifest::parse(&bytes) {
            Ok(manifest) => manifest,
            Err(why) => {
                let error = Error::Malformed {
                    what: "image manifest",
                    digest: d.to_string(),
                    why,
                };
                if m.mode == Mode::Collect {
                    return Err(error);
                }
                m.broken("image", d.hash(), d.hash(), Via::Root, error);
                return Ok(());
            }
        };
        self.mark_blob(
            m,
            "blob",
            &BlobDigest::from_hash(manifest.config.digest),
            d.hash(),
            || Via::Config,
        );
        for (i, layer) in manifest.layers.iter().enumerate() {
            self.mark_blob(
                m,
                "blob",
                &BlobDigest::from_hash(layer.digest),
                d.hash(),
                || Via::Layer(i),
            );
        }
        Ok(())
    }
}

fn item(kind: GcKind, id: String, bytes: u64, path: PathBuf) -> GcItem {
    GcItem {
        kind,
        id,
        bytes,
        before: Vec::new(),
        path,
    }
}

fn file_size(path: &Path) -> Result<u64> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

/// The apparent size of the regular files under `path` (or of `path`).
fn tree_size(path: &Path) -> Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.is_dir() {
        return Ok(if meta.is_file() { meta.len() } else { 0 });
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in rd {
            let entry = entry.map_err(io_err("list", &dir))?;
            let ft = entry.file_type().map_err(io_err("inspect", entry.path()))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                total += entry
                    .metadata()
                    .map_err(io_err("inspect", entry.path()))?
                    .len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::image::tests::layer_tar;
    use crate::image::{media_type, oci_manifest_bytes, Descriptor};
    use crate::record::tests::inputs;
    use crate::{Ingest, StepKey};

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        (t, s)
    }

    /// A one-layer image whose layer holds `file`.
    fn image(s: &Store, file: &[u8]) -> ImageDigest {
        let layer = layer_tar(&[("f", file)]);
        let l = s.put_bytes(&layer).unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [l.to_string()]},
        }))
        .unwrap();
        let c = s.put_bytes(&config).unwrap();
        let desc = |media: &str, d: BlobDigest, size: usize| Descriptor {
            media_type: media.into(),
            digest: d.hash(),
            size: size as u64,
            platform: None,
            annotations: None,
        };
        s.put_image(&oci_manifest_bytes(
            &desc(media_type::OCI_CONFIG, c, config.len()),
            &[desc(media_type::OCI_LAYER_TAR, l, layer.len())],
        ))
        .unwrap()
    }

    /// A tree `{sub/<name>: <content>, shared.txt: "shared"}`.
    fn tree(s: &Store, name: &str, content: &[u8]) -> TreeDigest {
        let dir = s.scratch("t-").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub").join(name), content).unwrap();
        fs::write(dir.path().join("shared.txt"), b"shared").unwrap();
        s.snapshot_dir(dir.path(), Ingest::Copy).unwrap()
    }

    fn make_old(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        fs::File::open(path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(old))
            .unwrap();
    }

    fn ids(plan: &GcPlan, kind: GcKind) -> Vec<String> {
        plan.items
            .iter()
            .filter(|i| i.kind == kind)
            .map(|i| i.id.clone())
            .collect()
    }

    #[test]
    fn sweep_removes_exactly_what_the_plan_lists_and_keeps_what_roots_reach() {
        let (_t, s) = store();
        let kept_tree = tree(&s, "a.bin", b"kept weights");
        let gone_tree = tree(&s, "b.bin", b"dropped weights");
        let kept_image = image(&s, b"kept layer");
        let gone_image = image(&s, b"dropped layer");
        let kept_log = s.put_bytes(b"kept log").unwrap();
        let gone_log = s.put_bytes(b"dropped log").unwrap();
        let kept_rec = s.put_record(b"record 1", "m", "1", &inputs).unwrap();
        let gone_rec = s.put_record(b"record 2", "m", "2", &inputs).unwrap();
        let kept_att = s.put_attestation(&kept_rec, b"att 1").unwrap();
        let gone_att = s.put_attestation(&gone_rec, b"att 2").unwrap();
        let unreferenced = s.put_bytes(b"nobody").unwrap();
        let ac = |n: &[u8], output, log| {
            let key = StepKey::from_hash(Hash::of(n));
            let r = ActionResult {
                output,
                log,
                exit_code: 0,
                duration_ms: 1,
            };
            s.ac_put(&key, &r).unwrap();
            key
        };
        let kept_key = ac(b"k1", kept_tree, kept_log);
        let gone_key = ac(b"k2", gone_tree, gone_log);
        // An entry whose output tree is kept but whose log is not: it goes.
        let half_key = ac(b"k3", kept_tree, gone_log);
        fs::write(s.layout_dir().join("ac/garbage"), b"{not json").unwrap();
        let rootfs = s.layout_dir().join("rootfs");
        for img in [kept_image, gone_image] {
            let dir = rootfs.join(img.hex()).join("root/etc");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("passwd"), b"root:x:0:0\n").unwrap();
        }
        // A read-only directory in the unpacked root must not stop the removal.
        fs::set_permissions(
            rootfs.join(gone_image.hex()).join("root/etc"),
            fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        let old_tmp = s.layout_dir().join("tmp/step-old");
        fs::create_dir(&old_tmp).unwrap();
        fs::write(old_tmp.join("partial"), b"12345").unwrap();
        make_old(&old_tmp);
        let young_tmp = s.layout_dir().join("tmp/step-running");
        fs::create_dir(&young_tmp).unwrap();

        let roots = GcRoots {
            blobs: BTreeSet::from([kept_log, kept_att]),
            trees: BTreeSet::from([kept_tree]),
            images: BTreeSet::from([kept_image]),
            records: BTreeSet::from([kept_rec]),
        };
        let opts = GcOptions {
            drop_versions: vec![("m".into(), "2".into())],
            ..GcOptions::default()
        };
        let plan = s.gc_plan(&roots, &opts).unwrap();
        assert!(plan.missing.is_empty(), "{:?}", plan.missing);
        assert_eq!(ids(&plan, GcKind::Record), ["m@2"]);
        assert_eq!(ids(&plan, GcKind::Attestation), [gone_att.to_string()]);
        assert_eq!(ids(&plan, GcKind::Image), [gone_image.to_string()]);
        let mut ac_ids = ids(&plan, GcKind::ActionCache);
        ac_ids.sort();
        let mut want = vec![
            gone_key.to_string(),
            half_key.to_string(),
            "garbage".to_string(),
        ];
        want.sort();
        assert_eq!(ac_ids, want);
        assert_eq!(ids(&plan, GcKind::Rootfs), [gone_image.to_string()]);
        assert_eq!(ids(&plan, GcKind::Tmp), ["step-old"]);
        assert_eq!(plan.bytes(GcKind::Tmp), 5);
        let blobs = ids(&plan, GcKind::Blob);
        for d in [
            unreferenced.to_string(),
            gone_log.to_string(),
            gone_rec.to_string(),
            gone_att.to_string(),
            gone_tree.to_string(),
            gone_image.to_string(),
            BlobDigest::from_hash(Hash::of(b"dropped weights")).to_string(),
        ] {
            assert!(blobs.contains(&d), "{d} should go: {blobs:?}");
        }
        let shared = BlobDigest::from_hash(Hash::of(b"shared"));
        assert!(!blobs.contains(&shared.to_string()), "shared blob kept");
        let total: u64 = plan.summary().iter().map(|(_, _, b)| b).sum();
        assert_eq!(total, plan.total_bytes());

        // Planning changed nothing.
        assert!(s.has_blob(&unreferenced));
        assert!(old_tmp.exists());

        s.gc_sweep(&plan).unwrap();
        // Nothing is left to collect, and what was kept is whole.
        let again = s.gc_plan(&roots, &GcOptions::default()).unwrap();
        assert!(again.is_empty(), "{:?}", again.items);
        assert_eq!(again.kept_blobs, plan.kept_blobs);
        assert_eq!(again.kept_bytes, plan.kept_bytes);
        assert!(s.tree_is_complete(&kept_tree).unwrap());
        assert!(!s.has_blob(&BlobDigest::from_hash(gone_tree.hash())));
        s.get_image(&kept_image).unwrap();
        assert_eq!(s.list_images().unwrap(), [kept_image]);
        let index = fs::read_to_string(s.layout_dir().join("index.json")).unwrap();
        assert!(index.contains(&kept_image.hex()), "{index}");
        assert!(!index.contains(&gone_image.hex()), "{index}");
        assert!(s.ac_get(&kept_key).unwrap().is_some());
        assert!(!s.layout_dir().join("ac").join(gone_key.hex()).exists());
        assert_eq!(s.record_versions("m").unwrap(), ["1"]);
        assert_eq!(s.attestations_of(&kept_rec).unwrap(), [kept_att]);
        assert!(!s
            .layout_dir()
            .join("refs/attestations")
            .join(gone_rec.hex())
            .exists());
        assert!(rootfs.join(kept_image.hex()).exists());
        assert!(!rootfs.join(gone_image.hex()).exists());
        assert!(!old_tmp.exists());
        assert!(young_tmp.exists());
    }

    #[test]
    fn a_dropped_version_loses_every_record_ref_and_a_kept_one_none() {
        let (_t, s) = store();
        let d1 = s.put_record(b"a;1", "m", "1", &inputs).unwrap();
        let d2 = s.put_record(b"a;2", "m", "1", &inputs).unwrap();
        let kept1 = s.put_record(b"b;1", "m", "2", &inputs).unwrap();
        let kept2 = s.put_record(b"b;2", "m", "2", &inputs).unwrap();
        // History left without its ref (by hand): not a version, it goes too.
        let orphan = s.layout_dir().join("refs/record-history/gone/3");
        fs::create_dir_all(&orphan).unwrap();
        fs::write(orphan.join(d1.hex()), b"").unwrap();

        let roots = GcRoots {
            records: BTreeSet::from([kept1, kept2]),
            ..GcRoots::default()
        };
        let opts = GcOptions {
            drop_versions: vec![("m".into(), "1".into())],
            ..GcOptions::default()
        };
        let plan = s.gc_plan(&roots, &opts).unwrap();
        // One item per version, whatever the number of its records.
        assert_eq!(ids(&plan, GcKind::Record), ["gone@3", "m@1"]);
        let blobs = ids(&plan, GcKind::Blob);
        for d in [d1, d2] {
            assert!(blobs.contains(&d.to_string()), "{d}: {blobs:?}");
        }
        for d in [kept1, kept2] {
            assert!(!blobs.contains(&d.to_string()), "{d}: {blobs:?}");
        }
        s.gc_sweep(&plan).unwrap();
        assert_eq!(s.record_versions("m").unwrap(), ["2"]);
        assert!(s.records_of("m", "1").unwrap().is_empty());
        assert!(s.records_of("gone", "3").unwrap().is_empty());
        let history = s.layout_dir().join("refs/record-history");
        assert!(!history.join("m/1").exists());
        assert!(!history.join("gone").exists());
        let mut kept = vec![kept1, kept2];
        kept.sort();
        assert_eq!(s.records_of("m", "2").unwrap(), kept);
        assert!(s.gc_plan(&roots, &GcOptions::default()).unwrap().is_empty());
    }

    #[test]
    fn gc_removes_a_dead_processs_scratch_at_any_age_and_a_live_ones_never() {
        let (_t, s) = store();
        let tmp = s.layout_dir().join("tmp");
        // A killed process's directory (its process id never runs), young.
        let dead = tmp.join("4294967295-1-0");
        fs::create_dir_all(dead.join("step-a-xyz")).unwrap();
        fs::write(dead.join("step-a-xyz/partial"), b"12345").unwrap();
        // A running process's scratch, untouched for two hours.
        let live = Store::open(s.dir()).unwrap();
        let long = live.scratch("step-long-").unwrap();
        fs::write(long.path().join("partial"), b"in use").unwrap();
        make_old(&long.path().join("partial"));
        make_old(long.path());
        make_old(&live.tmp_dir());

        let plan = s
            .gc_plan(&GcRoots::default(), &GcOptions::default())
            .unwrap();
        assert_eq!(ids(&plan, GcKind::Tmp), ["4294967295-1-0"]);
        assert_eq!(plan.bytes(GcKind::Tmp), 5);
        s.gc_sweep(&plan).unwrap();
        assert!(!dead.exists());
        assert!(long.path().join("partial").exists());
    }

    #[test]
    fn a_corrupt_root_tree_stops_the_plan_and_missing_roots_are_listed() {
        let (_t, s) = store();
        let t = tree(&s, "a", b"a");
        let absent = TreeDigest::from_hash(Hash::of(b"never stored"));
        let roots = GcRoots {
            trees: BTreeSet::from([absent]),
            ..GcRoots::default()
        };
        let plan = s.gc_plan(&roots, &GcOptions::default()).unwrap();
        assert_eq!(plan.missing, [format!("tree {absent}")]);

        crate::blob::tests::corrupt(&s.blob_path(&BlobDigest::from_hash(t.hash())));
        let roots = GcRoots {
            trees: BTreeSet::from([t]),
            ..GcRoots::default()
        };
        let err = s.gc_plan(&roots, &GcOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    /// The subtree `name` of tree `t`.
    fn subtree(s: &Store, t: &TreeDigest, name: &str) -> TreeDigest {
        s.get_tree(t)
            .unwrap()
            .entries
            .into_iter()
            .find_map(|e| match e.kind {
                EntryKind::Dir { tree } if e.name == name => Some(tree),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn a_walk_names_each_broken_object_with_its_root_and_path_and_goes_on() {
        let (_t, s) = store();
        let weights = tree(&s, "model.pkl", b"weights");
        let data = tree(&s, "rows.csv", b"rows");
        let img = image(&s, b"layer file");
        let log = s.put_bytes(b"log").unwrap();
        let rec = s.put_bytes(b"a record").unwrap();
        let absent = RecordDigest::from_hash(Hash::of(b"never stored"));
        let garbage = s.put_bytes(b"nothing names me").unwrap();
        // A file deep in one tree goes, a subtree of another is damaged, the
        // image's layer is damaged.
        let model = BlobDigest::from_hash(Hash::of(b"weights"));
        fs::remove_file(s.blob_path(&model)).unwrap();
        let data_sub = subtree(&s, &data, "sub");
        crate::blob::tests::corrupt(&s.blob_path(&BlobDigest::from_hash(data_sub.hash())));
        let info = s.get_image(&img).unwrap();
        crate::blob::tests::corrupt(&s.blob_path(&info.layers[0].digest));
        let roots = GcRoots {
            blobs: BTreeSet::from([log]),
            trees: BTreeSet::from([weights, data]),
            images: BTreeSet::from([img]),
            records: BTreeSet::from([RecordDigest::from_hash(rec.hash()), absent]),
        };

        let walk = s.walk(&roots).unwrap();
        let found: Vec<(&str, Hash, Hash, Via, &str)> = walk
            .broken
            .iter()
            .map(|b| {
                let what = match b.error {
                    Error::Missing { .. } => "missing",
                    Error::Corrupt { .. } => "corrupt",
                    Error::Malformed { .. } => "malformed",
                    _ => "other",
                };
                (b.kind, b.digest, b.root, b.via.clone(), what)
            })
            .collect();
        let want = [
            ("record", absent.hash(), absent.hash(), Via::Root, "missing"),
            (
                "blob",
                model.hash(),
                weights.hash(),
                Via::File("sub/model.pkl".into()),
                "missing",
            ),
            (
                "tree",
                data_sub.hash(),
                data.hash(),
                Via::Folder("sub".into()),
                "corrupt",
            ),
            (
                "blob",
                info.layers[0].digest.hash(),
                img.hash(),
                Via::Layer(0),
                "corrupt",
            ),
        ];
        for w in &want {
            assert!(found.contains(w), "{w:?} not in {found:?}");
        }
        assert_eq!(found.len(), want.len(), "{found:?}");
        // What it reached, broken or not; not what nothing names.
        for h in [
            absent.hash(),
            model.hash(),
            data_sub.hash(),
            log.hash(),
            info.config.hash(),
            rec.hash(),
        ] {
            assert!(walk.reaches(&h), "{h}");
        }
        assert!(!walk.reaches(&garbage.hash()));
        // Every object re-hashed is counted once, the shared file too:
        // record, log, 2 root trees, weights' subtree, shared.txt, image
        // manifest and config, and the 2 corrupt ones.
        assert_eq!(walk.objects, 10);
        assert!(walk.bytes > 0);

        // A collection stops at the corrupt subtree instead.
        let err = s.gc_plan(&roots, &GcOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn exclusive_lock_is_refused_while_a_shared_one_is_held() {
        let (_t, s) = store();
        let shared = s.lock_shared().unwrap();
        assert!(s.try_lock_exclusive().unwrap().is_none());
        drop(shared);
        let held = s.try_lock_exclusive().unwrap();
        assert!(held.is_some());
        assert!(s.try_lock_exclusive().unwrap().is_none());
    }

    #[test]
    fn pins_round_trip() {
        let (_t, s) = store();
        let err = s.pin_version("m", "1").unwrap_err();
        assert!(matches!(err, Error::UnknownVersion { .. }), "{err}");
        let rec = s.put_record(b"r", "m", "1", &inputs).unwrap();
        assert_eq!(s.pin_version("m", "1").unwrap(), rec);
        assert_eq!(s.pin_version("m", "1").unwrap(), rec, "idempotent");
        assert_eq!(s.pinned_versions().unwrap(), [("m".into(), "1".into())]);
        assert!(s.unpin_version("m", "1").unwrap());
        assert!(!s.unpin_version("m", "1").unwrap());
        assert!(s.pinned_versions().unwrap().is_empty());
        assert!(s.unpin_version("../x", "1").is_err());

        let h = Hash::of(b"object");
        s.pin_object(&h).unwrap();
        assert_eq!(s.pinned_objects().unwrap(), [h]);
        assert!(s.unpin_object(&h).unwrap());
        assert!(!s.unpin_object(&h).unwrap());

        assert!(s.stage_members("production").unwrap().is_empty());
        let dir = s.layout_dir().join("refs/stages/production/m");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1"), b"").unwrap();
        assert_eq!(
            s.stage_members("production").unwrap(),
            [("m".into(), "1".into())]
        );
    }
}
