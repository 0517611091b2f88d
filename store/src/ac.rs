//! The action cache: step key -> [`ActionResult`], in `v1/ac/<hex>`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::layout::Ns;
use crate::{BlobDigest, EntryKind, Error, FileEntry, Result, StepKey, Store, TreeDigest};

/// Read a file expected to be small (an action cache entry is about 300
/// bytes) into memory. Unlike [`fs::read`] it does not ask the file's size
/// first: a no-op build of 10,000 steps reads 10,000 entries, and the
/// extra `statx` was a tenth of its lookups' system calls.
fn read_small(path: &std::path::Path) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(1024);
    io::Read::read_to_end(&mut f, &mut bytes)?;
    Ok(bytes)
}

/// What running a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The tree of the step's output directory.
    pub output: TreeDigest,
    /// The step's combined log.
    pub log: BlobDigest,
    /// The process exit code.
    pub exit_code: i32,
    /// Wall-clock duration of the run that produced this result.
    pub duration_ms: u64,
}

impl Store {
    fn ac_path(&self, key: &StepKey) -> PathBuf {
        self.ns_dir(Ns::ActionCache).join(key.hex())
    }

    /// Look up a step key. A hit whose output tree (or anything in it) or
    /// log blob is missing counts as a miss.
    pub fn ac_get(&self, key: &StepKey) -> Result<Option<ActionResult>> {
        Ok(self.ac_lookup(key)?.map(|(r, _)| r))
    }

    /// Like [`Store::ac_get`], and on a hit also every file and symlink of
    /// the output tree by relative path (as [`Store::flatten`] gives it), so
    /// that the caller need not read the tree objects a second time.
    ///
    /// What a hit has checked: the log blob and every blob the output tree
    /// names exist, every tree object of the output is present and
    /// re-hashed, and the log and every file blob is intact: re-hashed
    /// unless its stamp from an earlier lookup of this key vouches for it
    /// (see [`crate::intact`]). A missing object is a miss; a corrupt one
    /// is the error ([`Error::Corrupt`], naming it), so that the caller can
    /// say so before it runs the step again (which replaces the damaged
    /// blob with a good copy when the step gives the same bytes).
    pub fn ac_lookup(
        &self,
        key: &StepKey,
    ) -> Result<Option<(ActionResult, BTreeMap<String, FileEntry>)>> {
        let path = self.ac_path(key);
        let bytes = match read_small(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let r: ActionResult = serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            what: "action cache entry",
            digest: key.to_string(),
            why: format!(
                "{e} (in `{}`; delete it to rebuild the step)",
                path.display()
            ),
        })?;
        if !self.has_blob(&r.log) {
            return Ok(None);
        }
        let mut files = BTreeMap::new();
        if !self.complete_listing(&r.output, "", &mut files)? {
            return Ok(None);
        }
        let mut blobs: Vec<BlobDigest> = files
            .values()
            .filter_map(|e| match e {
                FileEntry::File { digest, .. } => Some(*digest),
                FileEntry::Symlink { .. } => None,
            })
            .collect();
        blobs.push(r.log);
        match self.check_intact(&key.hash(), &blobs) {
            Ok(_) => Ok(Some((r, files))),
            // Removed since the listing looked.
            Err(Error::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Add the files of tree `t` (under `prefix`) to `out`; `false` as soon
    /// as a tree object or a file blob is missing.
    fn complete_listing(
        &self,
        t: &TreeDigest,
        prefix: &str,
        out: &mut BTreeMap<String, FileEntry>,
    ) -> Result<bool> {
        let tree = match self.get_tree(t) {
            Ok(tree) => tree,
            Err(Error::Missing { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        for e in tree.entries {
            let path = format!("{prefix}{}", e.name);
            match e.kind {
                EntryKind::File {
                    digest,
                    size,
                    executable,
                } => {
                    if !self.has_blob(&digest) {
                        return Ok(false);
                    }
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
                EntryKind::Dir { tree } => {
                    if !self.complete_listing(&tree, &format!("{path}/"), out)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Every tree object below tree `t` (its subdirectories', at any depth;
    /// not `t` itself), each re-hashed as it is read.
    pub fn subtrees(&self, t: &TreeDigest) -> Result<Vec<TreeDigest>> {
        let mut out = Vec::new();
        let mut todo = vec![*t];
        while let Some(t) = todo.pop() {
            for e in self.get_tree(&t)?.entries {
                if let EntryKind::Dir { tree } = e.kind {
                    out.push(tree);
                    todo.push(tree);
                }
            }
        }
        Ok(out)
    }

    /// Record the result of a step (replacing any previous entry).
    pub fn ac_put(&self, key: &StepKey, r: &ActionResult) -> Result<()> {
        let bytes = serde_json::to_vec(r).map_err(|e| Error::Malformed {
            what: "action cache entry",
            digest: key.to_string(),
            why: e.to_string(),
        })?;
        self.write_atomic(&self.ac_path(key), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hash, Ingest};

    #[test]
    fn ac_round_trip_and_missing_output_is_a_miss() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let key = StepKey::from_hash(Hash::of(b"step"));
        assert_eq!(s.ac_get(&key).unwrap(), None);

        let out = s.scratch("out-").unwrap();
        fs::create_dir(out.path().join("d")).unwrap();
        fs::write(out.path().join("d/model.bin"), b"weights").unwrap();
        let output = s.snapshot_dir(out.path(), Ingest::Move).unwrap();
        let log = s.put_bytes(b"training...\n").unwrap();
        let r = ActionResult {
            output,
            log,
            exit_code: 0,
            duration_ms: 1234,
        };
        s.ac_put(&key, &r).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), Some(r.clone()));
        assert_eq!(
            s.ac_get(&StepKey::from_hash(Hash::of(b"other"))).unwrap(),
            None
        );

        // Overwrite is last-writer-wins.
        let r2 = ActionResult {
            duration_ms: 99,
            ..r.clone()
        };
        s.ac_put(&key, &r2).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), Some(r2.clone()));

        // A file deep inside the output tree goes missing: miss.
        let model = BlobDigest::from_hash(Hash::of(b"weights"));
        fs::remove_file(s.blob_path(&model)).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), None);
        s.put_bytes(b"weights").unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), Some(r2.clone()));

        // The log goes missing: miss.
        fs::remove_file(s.blob_path(&log)).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), None);
        s.put_bytes(b"training...\n").unwrap();

        // The top tree object goes missing: miss.
        fs::remove_file(s.blob_path(&BlobDigest::from_hash(output.hash()))).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), None);
    }

    /// Move the folder `out` into the store as the output of `key`, with
    /// `log`, and put the result in the action cache.
    fn cache(s: &Store, key: &StepKey, out: &std::path::Path, log: &[u8]) -> ActionResult {
        let r = ActionResult {
            output: s.snapshot_dir(out, Ingest::Move).unwrap(),
            log: s.put_bytes(log).unwrap(),
            exit_code: 0,
            duration_ms: 1,
        };
        s.ac_put(key, &r).unwrap();
        r
    }

    /// A hit never vouches for a damaged output: a file blob or the log
    /// altered in place, even after earlier lookups stamped them, is the
    /// error naming it; putting the good bytes back makes it a hit again.
    #[test]
    fn a_corrupt_output_or_log_is_an_error_not_a_hit() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let out = s.scratch("out-").unwrap();
        fs::write(out.path().join("metrics.json"), br#"{"auc":0.97}"#).unwrap();
        let key = StepKey::from_hash(Hash::of(b"evaluate"));
        let r = cache(&s, &key, out.path(), b"evaluating\n");
        let log = r.log;
        assert!(s.ac_lookup(&key).unwrap().is_some());
        assert!(s.ac_lookup(&key).unwrap().is_some());
        let metrics = BlobDigest::from_hash(Hash::of(br#"{"auc":0.97}"#));
        for damaged in [metrics, log] {
            crate::blob::tests::corrupt(&s.blob_path(&damaged));
            let err = s.ac_lookup(&key).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&damaged.to_string()), "{err}");
        }
        s.put_bytes(br#"{"auc":0.97}"#).unwrap();
        s.put_bytes(b"evaluating\n").unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), Some(r));
    }

    /// The listing of a hit is exactly what `flatten` gives, nested
    /// directories and symlinks included.
    #[test]
    fn lookup_lists_the_output_like_flatten() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let out = s.scratch("out-").unwrap();
        fs::create_dir_all(out.path().join("a/b")).unwrap();
        fs::write(out.path().join("a/b/deep.txt"), b"deep").unwrap();
        fs::write(out.path().join("top.bin"), b"top").unwrap();
        std::os::unix::fs::symlink("top.bin", out.path().join("link")).unwrap();
        let key = StepKey::from_hash(Hash::of(b"k"));
        let r = cache(&s, &key, out.path(), b"log");
        let output = r.output;
        let (got, files) = s.ac_lookup(&key).unwrap().unwrap();
        assert_eq!(got, r);
        assert_eq!(files, s.flatten(&output).unwrap());
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a/b/deep.txt", "link", "top.bin"]
        );
        // A nested subtree object goes missing: a miss, not an error.
        let sub = s.get_tree(&output).unwrap();
        let EntryKind::Dir { tree: a } = &sub.entries[0].kind else {
            panic!("{sub:?}")
        };
        fs::remove_file(s.blob_path(&BlobDigest::from_hash(a.hash()))).unwrap();
        assert_eq!(s.ac_lookup(&key).unwrap(), None);
    }

    #[test]
    fn subtrees_lists_every_nested_tree_object() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let out = s.scratch("out-").unwrap();
        fs::create_dir_all(out.path().join("a/b")).unwrap();
        fs::create_dir_all(out.path().join("empty")).unwrap();
        fs::write(out.path().join("a/b/deep.txt"), b"deep").unwrap();
        fs::write(out.path().join("top.bin"), b"top").unwrap();
        let output = s.snapshot_dir(out.path(), Ingest::Move).unwrap();
        let mut got = s.subtrees(&output).unwrap();
        got.sort();
        let top = s.get_tree(&output).unwrap();
        let mut want = Vec::new();
        for e in &top.entries {
            if let EntryKind::Dir { tree } = &e.kind {
                want.push(*tree);
                for e in s.get_tree(tree).unwrap().entries {
                    if let EntryKind::Dir { tree } = e.kind {
                        want.push(tree);
                    }
                }
            }
        }
        want.sort();
        assert_eq!(want.len(), 3, "{top:?}");
        assert_eq!(got, want);
    }

    #[test]
    fn garbage_ac_entry_is_an_error_naming_the_key() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let key = StepKey::from_hash(Hash::of(b"step"));
        fs::write(s.ac_path(&key), b"{not json").unwrap();
        let err = s.ac_get(&key).unwrap_err();
        assert!(err.to_string().contains(&key.to_string()), "{err}");
    }
}
