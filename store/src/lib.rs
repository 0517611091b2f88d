//! The content-addressed store of `repro`: a local directory.
//!
//! What `<root>` holds (namespaces are [`layout::Ns`]; the retention
//! classes in brackets are [`layout::Keep`]):
//!
#![doc = include_str!("layout.md")]
//!
//! The folder name carries the format version: a future incompatible layout
//! goes to `v2/` and this code refuses to touch it.
//!
//! # Safety of concurrent use
//!
//! Two processes may use one store at once. Every write is a temp file in
//! `v1/tmp` (random name), fsync, rename, then an fsync of the parent
//! directory, so a kill at any moment leaves either the old state or the new
//! one, never a partial object; leftovers in `v1/tmp` are never read as
//! objects ([`Store::write_atomic`] does this for any path in the store,
//! and [`write_atomic`] for a path outside it). Content-addressed writes
//! are idempotent. Refs and action cache entries are last-writer-wins,
//! except that adding a record holds `v1/records.lock` (see
//! [`Store::put_record`]: a version keeps the inputs of its first record). [`Store::lock_shared`] and
//! [`Store::lock_exclusive`] exist for whole-store operations (the garbage
//! collector, [`gc`], takes the exclusive lock; builds take the shared one).
//!
//! Each process keeps its temp files and scratch directories in a directory
//! of its own in `v1/tmp` ([`Store::tmp_dir`]), which it holds an `flock`
//! on while it runs. Whoever takes the store lock next removes the
//! directories of processes that are gone (a build killed with `kill -9`),
//! and never one of a process that runs: see [`scratch`].
//!
//! # Integrity
//!
//! Every read that matters re-hashes: [`Store::read_blob`],
//! [`Store::verify_blob`], [`Store::get_tree`], [`Store::materialize`],
//! [`Store::get_record`], [`Store::get_image`]. A mismatch is
//! [`Error::Corrupt`] naming the digest and the actual hash.
//!
//! # Speed and memory
//!
//! [`Store::snapshot_dir`], [`hash_dir`] and [`hash_file`] give the same
//! digests; the first two walk the tree and read its files on every core
//! (see [`snapshot`] for the phases), streaming each file through a fixed
//! 256 KiB buffer per thread. Their memory is bounded by a few MiB plus a
//! fixed amount per file of the tree, whatever the files' sizes (see
//! [`snapshot`] for what it holds). Measured maximum resident set sizes:
//! [`hash_dir`] about 3 MiB + 0.3 KiB per file (6 MiB for 10,000 files,
//! 33 MiB for 100,000); [`Store::snapshot_dir`] about 5 MiB + 0.6 KiB per
//! file (10 MiB for 10,000 files, 62 MiB for 100,000; an unchanged
//! re-check of 100,000 files 40 MiB); one file of 20 GiB, hashed or taken
//! in, under 3 MiB.
//! Re-snapshotting an unchanged directory with [`Ingest::Copy`] reads no
//! file: the stat cache ([`statcache`]) says which files are unchanged and
//! when a file is read again.
//!
//! # Module order
//!
//! The files of this crate form a strict order: a file uses items (through
//! `crate::...`, `super::...` or `use`) and `Store` methods defined only in
//! the files before it, never in one after it, so no two files depend on
//! each other. Bottom first:
//!
//! 1. `digest`: digests and hashes; uses nothing of the crate.
//! 2. `error`: [`Error`] (with [`VersionInputsDiffer`]) and `io_err`.
//! 3. `fsutil`: atomic writes ([`write_atomic`]), durable directory
//!    creation, directory fsyncs, removal, naming a file's type.
//! 4. `walk`: the stat of a file and what a directory walk finds; opening,
//!    checking and hashing a walked file.
//! 5. `layout`: the namespaces of `v1/` ([`Ns`]) and stray entries.
//! 6. `scratch`: the scratch directories in `v1/tmp`.
//! 7. `lib.rs`: [`Store`] itself (open, locks, atomic writes).
//! 8. The files that add methods to [`Store`], each using only the ones
//!    before it: `statcache`, `blob`, `tree`, `snapshot`, `intact`,
//!    `record`, `ac`, `image`, `gc`.
//!
//! Test modules follow the order in what they name; they may call any
//! [`Store`] method. Tests that drive a module through a later one live in
//! a file of their own above both (`scratch/tests.rs`, `statcache/tests.rs`).

mod ac;
mod blob;
pub mod digest;
mod error;
mod fsutil;
pub mod gc;
pub mod image;
pub mod intact;
pub mod layout;
mod record;
pub mod scratch;
pub mod snapshot;
pub mod statcache;
mod tree;
mod walk;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ac::ActionResult;
pub use digest::{
    BlobDigest, Hash, ImageDigest, ParseDigestError, RecordDigest, StepKey, TreeDigest,
};
pub use error::{Error, Result, VersionInputsDiffer};
pub use fsutil::{write_atomic, write_atomic_with};
pub use gc::{GcItem, GcKind, GcOptions, GcPlan, GcRoots};
pub use image::{ImageInfo, Layer};
pub use intact::Checked;
pub use layout::{Keep, Ns};
pub use record::InputsOf;
pub use snapshot::{hash_dir, hash_file};
pub use tree::{EntryKind, FileEntry, Ingest, Tree, TreeEntry};

use error::io_err;

/// The name of the current format version directory.
pub const FORMAT_DIR: &str = "v1";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A content-addressed store in a local directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    v1: PathBuf,
    /// The owner (uid, gid) of the layout directory: every blob is handed to it.
    owner: (u32, u32),
    scratch: Arc<scratch::Lease>,
}

/// A held lock on the whole store; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    file: fs::File,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Closing the file releases the flock anyway; unlocking first is tidy.
        let _ = fs4::fs_std::FileExt::unlock(&self.file);
    }
}

impl Store {
    /// Open the store at `dir`, creating its layout if missing (like `mkdir -p`).
    ///
    /// Refuses a store that holds only an unknown format version (e.g. `v2/`
    /// written by a newer release).
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let v1 = dir.join(FORMAT_DIR);
        if !v1.exists() {
            let entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
            for entry in entries {
                let entry = entry.map_err(io_err("list", dir))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if is_version_dir(name) {
                    return Err(Error::UnsupportedVersion {
                        root: dir.to_path_buf(),
                        found: name.to_string(),
                    });
                }
            }
        }
        for sub in [
            "blobs/sha256",
            Ns::ActionCache.rel_path(),
            Ns::Records.rel_path(),
            Ns::Images.rel_path(),
            Ns::Tmp.rel_path(),
        ] {
            let p = v1.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        let owner = {
            use std::os::unix::fs::MetadataExt;
            let m = fs::metadata(&v1).map_err(io_err("inspect", &v1))?;
            (m.uid(), m.gid())
        };
        let store = Store {
            root: dir.to_path_buf(),
            scratch: Arc::new(scratch::Lease::new(v1.join(Ns::Tmp.rel_path()))),
            v1,
            owner,
        };
        let layout = store.v1.join("oci-layout");
        match fs::read(&layout) {
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
                        what: "store file",
                        digest: layout.display().to_string(),
                        why: e.to_string(),
                    })?;
                if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                    return Err(Error::Malformed {
                        what: "store file",
                        digest: layout.display().to_string(),
                        why: "expected imageLayoutVersion 1.0.0".to_string(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                store.write_atomic(&layout, OCI_LAYOUT)?;
            }
            Err(e) => return Err(io_err("read", &layout)(e)),
        }
        let lock = store.v1.join("lock");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lock)
            .map_err(io_err("create", &lock))?;
        Ok(store)
    }

    /// The default store location: `$XDG_DATA_HOME/repro/store`, else
    /// `$HOME/.local/share/repro/store`. `None` if neither variable is set
    /// to an absolute path. (`--store` / `REPRO_STORE` are the runner's.)
    pub fn default_dir() -> Option<PathBuf> {
        let abs = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        if let Some(data) = abs("XDG_DATA_HOME") {
            return Some(data.join("repro").join("store"));
        }
        abs("HOME").map(|home| home.join(".local/share/repro/store"))
    }

    /// The root directory given to [`Store::open`].
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The format directory, `<root>/v1` (a valid OCI image layout).
    pub fn layout_dir(&self) -> &Path {
        &self.v1
    }

    /// The path of namespace `ns`: `v1/<ns.rel_path()>` (a directory, or
    /// the file for [`Ns::is_file`] namespaces). It may not exist yet.
    pub fn ns_dir(&self, ns: Ns) -> PathBuf {
        self.v1.join(ns.rel_path())
    }

    /// The path of `segments` below namespace `ns`, e.g.
    /// `ns_path(Ns::Stages, &["production", name, version])`. Each segment
    /// is one name: an empty one, one with `/` or NUL, or one starting
    /// with `.` (`.`, `..`, temp files) is [`Error::InvalidSegment`] naming
    /// the directory, so no name can leave its namespace. A file namespace
    /// ([`Ns::is_file`]) takes no segments. Nothing is created.
    pub fn ns_path(&self, ns: Ns, segments: &[&str]) -> Result<PathBuf> {
        let mut path = self.ns_dir(ns);
        if ns.is_file() && !segments.is_empty() {
            return Err(Error::InvalidSegment {
                dir: path,
                segment: segments[0].to_string(),
                why: "this namespace is a single file",
            });
        }
        for segment in segments {
            layout::check_segment(&path, segment)?;
            path.push(segment);
        }
        Ok(path)
    }

    /// The entries of `v1/` (and of `v1/refs/`, `v1/refs/pins/`,
    /// `v1/cache/`) that no namespace and no store file accounts for,
    /// sorted: see [`layout::stray_entries`].
    pub fn stray_entries(&self) -> Result<Vec<PathBuf>> {
        layout::stray_entries(&self.v1)
    }

    pub(crate) fn owner_uid(&self) -> u32 {
        self.owner.0
    }

    pub(crate) fn owner_gid(&self) -> u32 {
        self.owner.1
    }

    /// A fresh, empty directory in this process's scratch directory
    /// ([`Store::tmp_dir`], in `v1/tmp`: the same filesystem as the blobs, so
    /// files written there can be moved into the store). Removed on drop;
    /// if the process is killed first, by the next command that takes the
    /// store lock (see [`scratch`]).
    pub fn scratch(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(io_err("create a scratch directory in", tmp))
    }

    /// Take the store lock shared (many holders), blocking until available;
    /// then remove the scratch of processes that are gone
    /// ([`Store::remove_dead_scratch`], best effort).
    pub fn lock_shared(&self) -> Result<StoreLock> {
        let path = self.v1.join("lock");
        let file = fs::File::open(&path).map_err(io_err("open", &path))?;
        fs4::fs_std::FileExt::lock_shared(&file).map_err(io_err("lock", &path))?;
        self.after_lock();
        Ok(StoreLock { file })
    }

    /// Take the store lock exclusively, blocking until available; then
    /// remove the scratch of processes that are gone
    /// ([`Store::remove_dead_scratch`], best effort).
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        let path = self.v1.join("lock");
        let file = fs::File::open(&path).map_err(io_err("open", &path))?;
        fs4::fs_std::FileExt::lock_exclusive(&file).map_err(io_err("lock", &path))?;
        self.after_lock();
        Ok(StoreLock { file })
    }

    /// What every function that takes the store lock does once it holds it.
    pub(crate) fn after_lock(&self) {
        // Best effort: leftovers that cannot be removed now must not stop
        // the command; the next lock, or `repro gc`, tries again.
        let _ = self.remove_dead_scratch();
    }

    /// Remove the scratch directories in `v1/tmp` of processes that are gone
    /// (whose `flock` no one holds), and never one of a process that runs;
    /// returns how many went. Cheap when there is nothing to remove: one
    /// `readdir` of `v1/tmp`. Entries no process owns (left by older
    /// versions) are left to [`gc`]. The functions that take the store lock
    /// call it; see [`scratch`].
    pub fn remove_dead_scratch(&self) -> Result<usize> {
        scratch::remove_dead(&self.ns_dir(Ns::Tmp), self.scratch.name())
    }

    /// Where this store (and its clones) keeps its temp files and scratch
    /// directories: `v1/tmp/<pid>-<start>-<n>/`, this process's, made on
    /// first use, locked while the process runs and removed when the last
    /// clone is dropped, if empty (see [`scratch`]). `v1/tmp` itself if it
    /// cannot be made.
    pub fn tmp_dir(&self) -> PathBuf {
        self.scratch.dir()
    }

    /// Write `bytes` to `dest`, a path inside the store, atomically and
    /// durably, replacing what was there; needs no lock.
    ///
    /// The bytes go to a temp file in [`Store::tmp_dir`] (on the store's
    /// filesystem), which is fsynced, renamed to `dest`, and followed by an
    /// fsync of `dest`'s directory: after a crash `dest` holds its old
    /// content or the new one, never a part. Missing parent directories of
    /// `dest` are created, each made durable the same way. The file is
    /// private to the store's owner (mode `0600`).
    ///
    /// `dest` must be inside [`Store::layout_dir`] (without `..`), else
    /// [`Error::NotInStore`]; for other paths use the free function
    /// [`crate::write_atomic`]. Other errors are
    /// [`Error::Io`] naming the action and the path; on any error `dest`
    /// is untouched and no temp file is left.
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        self.write_atomic_with(dest, |w| -> Result<()> {
            w.write_all(bytes)
                .map_err(io_err("write a temporary file for", dest))
        })
    }

    /// [`Store::write_atomic`] with the content streamed by `write`, for
    /// large outputs: `write` is given a buffered writer to the temp file,
    /// and its `Ok` value is returned once the file is in place. If `write`
    /// fails, its error is returned, the temp file is removed and `dest`
    /// keeps its old content (or stays missing). `E` is any error type a
    /// store [`Error`] converts into (`anyhow::Error`, or [`Error`] itself).
    pub fn write_atomic_with<T, E>(
        &self,
        dest: &Path,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<Error>,
    {
        self.check_inside(dest)?;
        if let Some(parent) = dest.parent() {
            fsutil::create_dir_durable(parent)?;
        }
        fsutil::write_atomic_in(&self.tmp_dir(), dest, None, write)
    }

    /// [`Error::NotInStore`] unless `path` is below `v1/`, with no `..`
    /// (nor `.`) in the part below.
    fn check_inside(&self, path: &Path) -> Result<()> {
        let inside = path.strip_prefix(&self.v1).is_ok_and(|rel| {
            rel.components().next().is_some()
                && rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        });
        if inside {
            Ok(())
        } else {
            Err(Error::NotInStore {
                path: path.to_path_buf(),
                layout: self.v1.clone(),
            })
        }
    }
}

fn is_version_dir(name: &str) -> bool {
    name.len() > 1
        && name.starts_with('v')
        && name[1..].bytes().all(|b| b.is_ascii_digit())
        && name != FORMAT_DIR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_layout_and_is_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("a/b/store");
        let s = Store::open(&root).unwrap();
        assert_eq!(s.dir(), root);
        for p in [
            "v1/blobs/sha256",
            "v1/ac",
            "v1/refs/records",
            "v1/refs/images",
            "v1/tmp",
        ] {
            assert!(root.join(p).is_dir(), "{p}");
        }
        assert_eq!(fs::read(root.join("v1/oci-layout")).unwrap(), OCI_LAYOUT);
        assert!(root.join("v1/lock").is_file());
        let d = s.put_bytes(b"x").unwrap();
        let s2 = Store::open(&root).unwrap();
        assert!(s2.has_blob(&d));
    }

    #[test]
    fn open_refuses_unknown_format_version() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("v2/blobs")).unwrap();
        let err = Store::open(t.path()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { ref found, .. } if found == "v2"));
        assert!(err.to_string().contains("`v2`"), "{err}");
        // Nothing was created next to it.
        assert!(!t.path().join("v1").exists());
    }

    #[test]
    fn open_refuses_a_broken_oci_layout_file() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("v1")).unwrap();
        fs::write(
            t.path().join("v1/oci-layout"),
            b"{\"imageLayoutVersion\":\"9\"}",
        )
        .unwrap();
        assert!(matches!(
            Store::open(t.path()),
            Err(Error::Malformed { .. })
        ));
    }

    /// The entries of `dir` whose names start with `.w-` (atomic writes' temp files).
    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".w-"))
            .collect()
    }

    #[test]
    fn store_write_atomic_writes_creates_parents_and_leaves_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let dest = s.layout_dir().join("refs/new-ns/a/b");
        s.write_atomic(&dest, b"one").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        s.write_atomic(&dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(temp_files(&s.tmp_dir()), Vec::<PathBuf>::new());
        assert_eq!(temp_files(dest.parent().unwrap()), Vec::<PathBuf>::new());
    }

    #[test]
    fn store_write_atomic_with_a_failing_callback_keeps_the_old_content() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let dest = s.layout_dir().join("refs/x");
        s.write_atomic(&dest, b"old").unwrap();
        let err = s
            .write_atomic_with(&dest, |w| -> Result<()> {
                w.write_all(b"partial").unwrap();
                Err(Error::InvalidName {
                    what: "test",
                    name: "x".to_string(),
                    why: "the callback failed",
                })
            })
            .unwrap_err();
        assert!(err.to_string().contains("the callback failed"), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(temp_files(&s.tmp_dir()), Vec::<PathBuf>::new());
        let big = s
            .write_atomic_with(&s.layout_dir().join("refs/big"), |w| -> Result<u8> {
                w.write_all(&[1; 200_000]).unwrap();
                Ok(9)
            })
            .unwrap();
        assert_eq!(big, 9);
        assert_eq!(
            fs::read(s.layout_dir().join("refs/big")).unwrap().len(),
            200_000
        );
    }

    #[test]
    fn store_write_atomic_refuses_a_path_outside_the_store() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("store")).unwrap();
        let outside = t.path().join("elsewhere");
        let escaping = s.layout_dir().join("refs/../../escaped");
        for dest in [&outside, &escaping, &s.layout_dir().to_path_buf()] {
            let err = s.write_atomic(dest, b"x").unwrap_err();
            assert!(matches!(err, Error::NotInStore { .. }), "{err}");
            assert!(
                err.to_string().contains(&dest.display().to_string()),
                "{err}"
            );
        }
        assert!(!outside.exists());
        assert!(!t.path().join("store/escaped").exists());
    }

    #[test]
    fn ns_paths_stay_in_their_namespace() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        assert_eq!(s.ns_dir(Ns::Stages), s.layout_dir().join("refs/stages"));
        assert_eq!(s.ns_dir(Ns::Tmp), s.layout_dir().join("tmp"));
        assert_eq!(
            s.ns_path(Ns::Stages, &["production", "m", "1.0"]).unwrap(),
            s.layout_dir().join("refs/stages/production/m/1.0")
        );
        assert_eq!(
            s.ns_path(Ns::Policy, &[]).unwrap(),
            s.layout_dir().join("policy.toml")
        );
        for bad in [&["..", "x"][..], &["a/b"], &[""], &["ok", ".."]] {
            let err = s.ns_path(Ns::Approvals, bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSegment { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(s.ns_path(Ns::Retention, &["x"]).is_err());
        // A fresh store has no strays; a file of no namespace is one.
        assert_eq!(s.stray_entries().unwrap(), Vec::<PathBuf>::new());
        fs::write(s.layout_dir().join("stray.tmp"), b"").unwrap();
        assert_eq!(
            s.stray_entries().unwrap(),
            [s.layout_dir().join("stray.tmp")]
        );
    }

    #[test]
    fn locks_can_be_taken() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let a = s.lock_shared().unwrap();
        let b = s.lock_shared().unwrap();
        drop((a, b));
        let _c = s.lock_exclusive().unwrap();
    }
}
