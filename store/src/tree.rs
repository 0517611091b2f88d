//! Trees: Merkle manifests of directories.
//!
//! A tree object is a blob holding the canonical JSON of a [`Tree`]:
//! `serde_json` compact output of the struct as declared, entries sorted by
//! name in byte order. Only names, file digests and sizes, the executable bit
//! and symlink targets are recorded: no mtimes, owners or other mode bits,
//! so the same contents give the same [`TreeDigest`] on any machine.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blob::{copy_hashing, CopyError, BLOB_MODE};
use crate::error::io_err;
use crate::{BlobDigest, Error, Hash, Result, Store, TreeDigest};

/// A directory listing: the content of a tree object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name (byte order), names unique.
    pub entries: Vec<TreeEntry>,
}

/// One named entry of a [`Tree`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// The file name: never empty, `.`, `..`, and never containing `/` or NUL.
    pub name: String,
    /// What the name refers to.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What a [`TreeEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Digest of its bytes.
        digest: BlobDigest,
        /// Its size in bytes.
        size: u64,
        /// Whether any execute bit was set.
        executable: bool,
    },
    /// A subdirectory.
    Dir {
        /// The subdirectory's tree.
        tree: TreeDigest,
    },
    /// A symbolic link, stored as its target text (never followed).
    Symlink {
        /// The link target, as written.
        target: String,
    },
}

/// A leaf of a flattened tree (see [`Store::flatten`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FileEntry {
    /// A regular file.
    File {
        /// Digest of its bytes.
        digest: BlobDigest,
        /// Its size in bytes.
        size: u64,
        /// Whether any execute bit was set.
        executable: bool,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as written.
        target: String,
    },
}

/// How [`Store::snapshot_dir`] takes files in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// Copy files (user data: the source is left alone).
    Copy,
    /// Rename files into the store, never copying (step outputs in
    /// [`Store::scratch`]). Regular files are gone from the source
    /// afterwards; directories and symlinks stay for the caller to remove.
    Move,
}

impl Tree {
    /// Check the invariants: sorted by name, names unique and valid,
    /// symlink targets non-empty and NUL-free.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for e in &self.entries {
            check_name(&e.name)?;
            if let EntryKind::Symlink { target } = &e.kind {
                if target.is_empty() || target.contains('\0') {
                    return Err(format!("symlink `{}` has an empty or NUL target", e.name));
                }
            }
        }
        for w in self.entries.windows(2) {
            match w[0].name.as_bytes().cmp(w[1].name.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(format!("duplicate name `{}`", w[0].name));
                }
                std::cmp::Ordering::Greater => {
                    return Err(format!(
                        "entries are not sorted: `{}` comes before `{}`",
                        w[0].name, w[1].name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The canonical bytes of this tree object.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain structs, strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The digest this tree gets when stored.
    pub fn digest(&self) -> TreeDigest {
        TreeDigest::from_hash(Hash::of(&self.canonical_bytes()))
    }
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("invalid entry name `{name}`"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(format!(
            "entry name `{}` contains `/` or NUL",
            name.escape_debug()
        ));
    }
    Ok(())
}

impl Store {
    /// Store a tree object. Refuses a tree that breaks the invariants or
    /// refers to blobs or subtrees that are not in the store.
    pub fn put_tree(&self, t: &Tree) -> Result<TreeDigest> {
        let (digest, bytes) = self.check_tree(t)?;
        let stored = self.put_bytes(&bytes)?;
        debug_assert_eq!(stored.hash(), digest.hash());
        Ok(digest)
    }

    /// What [`Store::put_tree`] checks: the invariants, and that every blob
    /// and subtree named is in the store. Returns the digest and canonical
    /// bytes.
    pub(crate) fn check_tree(&self, t: &Tree) -> Result<(TreeDigest, Vec<u8>)> {
        let bytes = t.canonical_bytes();
        let digest = TreeDigest::from_hash(Hash::of(&bytes));
        t.validate().map_err(|why| Error::Malformed {
            what: "tree",
            digest: digest.to_string(),
            why,
        })?;
        for e in &t.entries {
            let (what, d) = match &e.kind {
                EntryKind::File { digest, .. } => ("blob", *digest),
                EntryKind::Dir { tree } => ("tree", BlobDigest::from_hash(tree.hash())),
                EntryKind::Symlink { .. } => continue,
            };
            if !self.has_blob(&d) {
                // A blob removed by hand: make the next snapshots re-read.
                self.invalidate_stat_caches_quietly();
                return Err(Error::Missing {
                    what,
                    digest: d.to_string(),
                    path: self.blob_path(&d),
                });
            }
        }
        Ok((digest, bytes))
    }

    /// Read a tree object, re-hashing it and refusing a non-canonical one.
    pub fn get_tree(&self, d: &TreeDigest) -> Result<Tree> {
        let bytes = self
            .read_blob(&BlobDigest::from_hash(d.hash()))
            .map_err(|e| match e {
                Error::Missing { digest, path, .. } => Error::Missing {
                    what: "tree",
                    digest,
                    path,
                },
                e => e,
            })?;
        let malformed = |why: String| Error::Malformed {
            what: "tree",
            digest: d.to_string(),
            why,
        };
        let tree: Tree = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        tree.validate().map_err(malformed)?;
        if tree.canonical_bytes() != bytes {
            return Err(malformed("not in canonical form".to_string()));
        }
        Ok(tree)
    }

    /// Lay out tree `t` at `dest`, which must not exist (its parent is
    /// created if needed).
    ///
    /// Every blob used is re-hashed first. Non-executable files are hard
    /// links to the blob (mode 0444; a copy if `dest` is on another
    /// filesystem), so whoever uses them must not be able to write them:
    /// mount them read-only. Executable files are copies with mode 0555,
    /// directories get 0755, symlinks are recreated as they were. On error,
    /// `dest` is removed again.
    pub fn materialize(&self, t: &TreeDigest, dest: &Path) -> Result<()> {
        if fs::symlink_metadata(dest).is_ok() {
            return Err(Error::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        fs::create_dir(dest).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::DestinationExists {
                    path: dest.to_path_buf(),
                }
            } else {
                io_err("create directory", dest)(e)
            }
        })?;
        let mut verified = HashSet::new();
        let res = self.materialize_into(t, dest, &mut verified);
        if res.is_err() {
            let _ = fs::remove_dir_all(dest);
        }
        res
    }

    fn materialize_into(
        &self,
        t: &TreeDigest,
        dir: &Path,
        verified: &mut HashSet<BlobDigest>,
    ) -> Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err("set permissions of", dir))?;
        let tree = self.get_tree(t)?;
        for e in &tree.entries {
            let path = dir.join(&e.name);
            match &e.kind {
                EntryKind::File {
                    digest,
                    executable: false,
                    ..
                } => {
                    if !verified.contains(digest) {
                        self.verify_blob(digest).inspect_err(|e| {
                            if matches!(e, Error::Missing { .. }) {
                                // A blob removed by hand: make the next
                                // snapshots re-read their files.
                                self.invalidate_stat_caches_quietly();
                            }
                        })?;
                        verified.insert(*digest);
                    }
                    let blob = self.blob_path(digest);
                    match fs::hard_link(&blob, &path) {
                        Ok(()) => {}
                        // EXDEV (another filesystem) or EMLINK (too many links).
                        Err(e) if matches!(e.raw_os_error(), Some(18) | Some(31)) => {
                            self.copy_blob_verified(digest, &path, BLOB_MODE)?;
                        }
                        Err(e) => return Err(io_err("hard-link a blob to", &path)(e)),
                    }
                }
                EntryKind::File {
                    digest,
                    executable: true,
                    ..
                } => {
                    self.copy_blob_verified(digest, &path, 0o555)?;
                }
                EntryKind::Dir { tree } => {
                    fs::create_dir(&path).map_err(io_err("create directory", &path))?;
                    self.materialize_into(tree, &path, verified)?;
                }
                EntryKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(io_err("create symlink", &path))?;
                }
            }
        }
        Ok(())
    }

    /// Copy blob `d` to a new file at `path`, re-hashing as it goes.
    fn copy_blob_verified(&self, d: &BlobDigest, path: &Path, mode: u32) -> Result<()> {
        let mut src = self.open_blob(d).inspect_err(|e| {
            if matches!(e, Error::Missing { .. }) {
                self.invalidate_stat_caches_quietly();
            }
        })?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err("create", path))?;
        let (actual, _) = copy_hashing(&mut src, &mut out).map_err(|e| match e {
            CopyError::Read(err) => io_err("read", self.blob_path(d))(err),
            CopyError::Write(err) => io_err("write", path)(err),
        })?;
        if actual != d.hash() {
            let _ = fs::remove_file(path);
            self.invalidate_stat_caches_quietly();
            return Err(Error::Corrupt {
                digest: d.to_string(),
                actual: actual.to_string(),
                path: self.blob_path(d),
            });
        }
        out.sync_all().map_err(io_err("fsync", path))?;
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("set permissions of", path))
    }

    /// Every file and symlink of tree `t` by relative path (`a/b/c.txt`),
    /// reading verified tree objects. Empty directories do not appear.
    pub fn flatten(&self, t: &TreeDigest) -> Result<BTreeMap<String, FileEntry>> {
        let mut out = BTreeMap::new();
        self.flatten_into(t, "", &mut out)?;
        Ok(out)
    }

    fn flatten_into(
        &self,
        t: &TreeDigest,
        prefix: &str,
        out: &mut BTreeMap<String, FileEntry>,
    ) -> Result<()> {
        for e in self.get_tree(t)?.entries {
            let path = format!("{prefix}{}", e.name);
            match e.kind {
                EntryKind::File {
                    digest,
                    size,
                    executable,
                } => {
                    out.insert(
                        path,
                        FileEntry::File {
                            digest,
                            size,
                            executable,
                        },
                    );
                }
                EntryKind::Symlink { target } => {
                    out.insert(path, FileEntry::Symlink { target });
                }
                EntryKind::Dir { tree } => self.flatten_into(&tree, &format!("{path}/"), out)?,
            }
        }
        Ok(())
    }

    /// Whether tree `t`, every subtree and every file blob it names are
    /// present. Tree objects are verified; file blobs only checked to exist.
    pub fn tree_is_complete(&self, t: &TreeDigest) -> Result<bool> {
        let tree = match self.get_tree(t) {
            Ok(tree) => tree,
            Err(Error::Missing { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        for e in &tree.entries {
            match &e.kind {
                EntryKind::File { digest, .. } => {
                    if !self.has_blob(digest) {
                        // A tree naming a blob that is gone: removed by
                        // hand. Make the next snapshots re-read their files.
                        self.invalidate_stat_caches_quietly();
                        return Ok(false);
                    }
                }
                EntryKind::Dir { tree } => {
                    if !self.tree_is_complete(tree)? {
                        return Ok(false);
                    }
                }
                EntryKind::Symlink { .. } => {}
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::blob::tests::corrupt;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("store")).unwrap();
        (t, s)
    }

    fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A sample directory: nested dirs, an empty dir, an empty file, an
    /// executable, a symlink out of the tree and a relative one.
    fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        fs::create_dir(dir.join("empty")).unwrap();
        write_mode(&dir.join("data.csv"), b"a,b\n1,2\n", 0o644);
        write_mode(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o700);
        write_mode(&dir.join("sub/empty.txt"), b"", 0o600);
        write_mode(&dir.join("sub/deeper/x.bin"), &[0, 1, 2, 255], 0o644);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../data.csv", dir.join("sub/link")).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn snapshot_and_materialize_round_trip() {
        let (t, s) = store();
        let src = t.path().join("src");
        sample(&src);
        let d = s.snapshot_dir(&src, Ingest::Copy).unwrap();
        assert!(
            src.join("data.csv").exists(),
            "copy leaves the source alone"
        );

        let flat = s.flatten(&d).unwrap();
        let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "data.csv",
                "passwd",
                "run.sh",
                "sub/deeper/x.bin",
                "sub/empty.txt",
                "sub/link"
            ]
        );
        assert_eq!(
            flat["passwd"],
            FileEntry::Symlink {
                target: "/etc/passwd".into()
            }
        );
        assert!(matches!(
            flat["run.sh"],
            FileEntry::File {
                executable: true,
                size: 18,
                ..
            }
        ));
        assert!(matches!(
            flat["data.csv"],
            FileEntry::File {
                executable: false,
                size: 8,
                ..
            }
        ));

        let out = t.path().join("out/inputs");
        s.materialize(&d, &out).unwrap();
        assert_eq!(fs::read(out.join("data.csv")).unwrap(), b"a,b\n1,2\n");
        assert_eq!(
            fs::read(out.join("sub/deeper/x.bin")).unwrap(),
            [0, 1, 2, 255]
        );
        assert_eq!(fs::read(out.join("sub/empty.txt")).unwrap(), b"");
        assert_eq!(
            fs::read(out.join("run.sh")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert!(out.join("empty").is_dir());
        assert_eq!(mode(&out.join("run.sh")), 0o555);
        assert_eq!(mode(&out.join("data.csv")), 0o444);
        assert_eq!(mode(&out), 0o755);
        assert_eq!(mode(&out.join("sub/deeper")), 0o755);
        assert_eq!(
            fs::read_link(out.join("passwd")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::read_link(out.join("sub/link")).unwrap(),
            Path::new("../data.csv")
        );
        // Non-executable files are hard links to the blob.
        let FileEntry::File { digest, .. } = &flat["data.csv"] else {
            unreachable!()
        };
        assert_eq!(
            fs::metadata(out.join("data.csv")).unwrap().ino(),
            fs::metadata(s.blob_path(digest)).unwrap().ino()
        );
        // Snapshotting the materialized tree gives the same digest.
        assert_eq!(s.snapshot_dir(&out, Ingest::Copy).unwrap(), d);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let (t, s) = store();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let secret = t.path().join("secret");
        fs::write(&secret, b"outside").unwrap();
        std::os::unix::fs::symlink(&secret, src.join("leak")).unwrap();
        std::os::unix::fs::symlink(t.path(), src.join("dirlink")).unwrap();
        let d = s.snapshot_dir(&src, Ingest::Copy).unwrap();
        let flat = s.flatten(&d).unwrap();
        assert_eq!(flat.len(), 2);
        assert!(matches!(flat["leak"], FileEntry::Symlink { .. }));
        assert!(matches!(flat["dirlink"], FileEntry::Symlink { .. }));
        assert!(!s.has_blob(&BlobDigest::from_hash(Hash::of(b"outside"))));
        // The root itself must be a real directory.
        let err = s
            .snapshot_dir(&src.join("dirlink"), Ingest::Copy)
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn digest_ignores_mtimes_modes_and_creation_order() {
        let (t, s) = store();
        let a = t.path().join("a");
        let b = t.path().join("b");
        fs::create_dir_all(a.join("d")).unwrap();
        write_mode(&a.join("one"), b"1", 0o644);
        write_mode(&a.join("d/two"), b"2", 0o755);
        write_mode(&a.join("Z"), b"z", 0o600);
        // Reverse order, other non-x modes, other mtimes.
        fs::create_dir_all(b.join("d")).unwrap();
        write_mode(&b.join("Z"), b"z", 0o644);
        write_mode(&b.join("d/two"), b"2", 0o100);
        write_mode(&b.join("one"), b"1", 0o400);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for p in ["one", "d/two", "Z"] {
            fs::File::options()
                .write(true)
                .open(b.join(p))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let da = s.snapshot_dir(&a, Ingest::Copy).unwrap();
        assert_eq!(da, s.snapshot_dir(&b, Ingest::Copy).unwrap());
        // Names sort in byte order: "Z" < "d" < "one".
        let names: Vec<String> = s
            .get_tree(&da)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["Z", "d", "one"]);
        // The executable bit does count, and so does content.
        fs::set_permissions(b.join("one"), fs::Permissions::from_mode(0o500)).unwrap();
        assert_ne!(s.snapshot_dir(&b, Ingest::Copy).unwrap(), da);
    }

    #[test]
    fn move_ingest_renames_files_into_the_store() {
        let (_t, s) = store();
        let scratch = s.scratch("out-").unwrap();
        let out = scratch.path();
        fs::create_dir(out.join("sub")).unwrap();
        write_mode(&out.join("model.bin"), b"weights", 0o644);
        write_mode(&out.join("sub/tool"), b"#!/bin/sh\n", 0o755);
        std::os::unix::fs::symlink("model.bin", out.join("latest")).unwrap();
        let ino_model = fs::metadata(out.join("model.bin")).unwrap().ino();
        let ino_tool = fs::metadata(out.join("sub/tool")).unwrap().ino();
        let d = s.snapshot_dir(out, Ingest::Move).unwrap();
        assert!(!out.join("model.bin").exists());
        assert!(!out.join("sub/tool").exists());
        let flat = s.flatten(&d).unwrap();
        let FileEntry::File {
            digest,
            executable: false,
            ..
        } = flat["model.bin"]
        else {
            panic!("{flat:?}")
        };
        assert_eq!(fs::metadata(s.blob_path(&digest)).unwrap().ino(), ino_model);
        let FileEntry::File {
            digest,
            executable: true,
            ..
        } = flat["sub/tool"]
        else {
            panic!("{flat:?}")
        };
        assert_eq!(fs::metadata(s.blob_path(&digest)).unwrap().ino(), ino_tool);
        assert_eq!(
            flat["latest"],
            FileEntry::Symlink {
                target: "model.bin".into()
            }
        );
    }

    #[test]
    fn corrupt_blobs_are_caught_by_get_tree_and_materialize() {
        let (t, s) = store();
        let src = t.path().join("src");
        sample(&src);
        let d = s.snapshot_dir(&src, Ingest::Copy).unwrap();
        let flat = s.flatten(&d).unwrap();

        // A corrupt file blob (hard-linked kind).
        let FileEntry::File { digest, .. } = flat["sub/deeper/x.bin"] else {
            unreachable!()
        };
        corrupt(&s.blob_path(&digest));
        let out = t.path().join("out");
        let err = s.materialize(&d, &out).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&digest.to_string()), "{err}");
        assert!(!out.exists(), "a failed materialize leaves nothing behind");
        s.put_bytes(&[0, 1, 2, 255]).unwrap();

        // A corrupt executable blob (copied kind).
        let FileEntry::File { digest, .. } = flat["run.sh"] else {
            unreachable!()
        };
        corrupt(&s.blob_path(&digest));
        let err = s.materialize(&d, &out).unwrap_err();
        assert!(err.to_string().contains(&digest.to_string()), "{err}");
        assert!(!out.exists());
        s.put_bytes(b"#!/bin/sh\necho hi\n").unwrap();
        s.materialize(&d, &out).unwrap();

        // A corrupt tree object.
        corrupt(&s.blob_path(&BlobDigest::from_hash(d.hash())));
        for err in [
            s.get_tree(&d).unwrap_err(),
            s.materialize(&d, &t.path().join("out2")).unwrap_err(),
            s.flatten(&d).unwrap_err(),
        ] {
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&d.to_string()), "{err}");
        }
    }

    #[test]
    fn materialize_refuses_existing_destination() {
        let (t, s) = store();
        let d = s.put_tree(&Tree::default()).unwrap();
        let err = s.materialize(&d, t.path()).unwrap_err();
        assert!(matches!(err, Error::DestinationExists { .. }));
        std::os::unix::fs::symlink("/nonexistent", t.path().join("dangling")).unwrap();
        let err = s.materialize(&d, &t.path().join("dangling")).unwrap_err();
        assert!(matches!(err, Error::DestinationExists { .. }));
    }

    fn raw_tree(s: &Store, json: &str) -> TreeDigest {
        TreeDigest::from_hash(s.put_bytes(json.as_bytes()).unwrap().hash())
    }

    #[test]
    fn non_canonical_tree_objects_are_refused() {
        let (_t, s) = store();
        let f = s.put_bytes(b"x").unwrap();
        let file = |name: &str| {
            format!(
                r#"{{"name":"{name}","type":"file","digest":"{f}","size":1,"executable":false}}"#
            )
        };
        let good = format!(r#"{{"entries":[{},{}]}}"#, file("a"), file("b"));
        let d = raw_tree(&s, &good);
        assert_eq!(s.get_tree(&d).unwrap().entries.len(), 2);
        assert_eq!(s.get_tree(&d).unwrap().digest(), d);

        let bad = [
            (
                format!(r#"{{"entries":[{},{}]}}"#, file("b"), file("a")),
                "not sorted",
            ),
            (
                format!(r#"{{"entries":[{},{}]}}"#, file("a"), file("a")),
                "duplicate",
            ),
            (
                format!(r#"{{"entries":[{}]}}"#, file("..")),
                "invalid entry name",
            ),
            (
                format!(r#"{{"entries":[{}]}}"#, file("")),
                "invalid entry name",
            ),
            (
                format!(r#"{{"entries":[{}]}}"#, file("a/b")),
                "contains `/`",
            ),
            (format!(r#"{{"entries": [{}]}}"#, file("a")), "canonical"),
            (
                format!(r#"{{"entries":[{}],"extra":1}}"#, file("a")),
                "canonical",
            ),
            (
                format!(
                    r#"{{"entries":[{{"type":"file","name":"a","digest":"{f}","size":1,"executable":false}}]}}"#
                ),
                "canonical",
            ),
            (
                r#"{"entries":[{"name":"a","type":"fifo"}]}"#.to_string(),
                "fifo",
            ),
        ];
        for (json, why) in bad {
            let d = raw_tree(&s, &json);
            let err = s.get_tree(&d).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{json}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&d.to_string()) && msg.contains(why),
                "{json}: {msg}"
            );
        }
    }

    #[test]
    fn put_tree_refuses_invalid_trees() {
        let (_t, s) = store();
        let f = s.put_bytes(b"x").unwrap();
        let entry = |name: &str| TreeEntry {
            name: name.into(),
            kind: EntryKind::File {
                digest: f,
                size: 1,
                executable: false,
            },
        };
        let unsorted = Tree {
            entries: vec![entry("b"), entry("a")],
        };
        assert!(matches!(
            s.put_tree(&unsorted),
            Err(Error::Malformed { .. })
        ));
        let missing = Tree {
            entries: vec![TreeEntry {
                name: "gone".into(),
                kind: EntryKind::File {
                    digest: BlobDigest::from_hash(Hash::of(b"nope")),
                    size: 4,
                    executable: false,
                },
            }],
        };
        assert!(matches!(s.put_tree(&missing), Err(Error::Missing { .. })));
    }

    #[test]
    fn unsupported_entries_are_named() {
        let (t, s) = store();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let sock = src.join("control.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = s.snapshot_dir(&src, Ingest::Copy).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFile { kind: "socket", .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("`{}`", sock.display())),
            "{err}"
        );

        let src = t.path().join("src2");
        fs::create_dir(&src).unwrap();
        let bad = src.join(OsStr::from_bytes(b"caf\xe9.txt"));
        fs::write(&bad, b"x").unwrap();
        let err = s.snapshot_dir(&src, Ingest::Copy).unwrap_err();
        assert!(matches!(err, Error::NotUtf8 { what: "name", .. }), "{err}");
        assert!(err.to_string().contains("caf"), "{err}");
    }
}
