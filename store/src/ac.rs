//! The action cache: step key -> [`ActionResult`], in `v1/ac/<hex>`.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::{BlobDigest, Error, Result, StepKey, Store, TreeDigest};

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
        self.layout_dir().join("ac").join(key.hex())
    }

    /// Look up a step key. A hit whose output tree (or anything in it) or
    /// log blob is missing counts as a miss.
    pub fn ac_get(&self, key: &StepKey) -> Result<Option<ActionResult>> {
        let path = self.ac_path(key);
        let bytes = match fs::read(&path) {
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
        if !self.has_blob(&r.log) || !self.tree_is_complete(&r.output)? {
            return Ok(None);
        }
        Ok(Some(r))
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
        let key = StepKey(Hash::of(b"step"));
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
        assert_eq!(s.ac_get(&StepKey(Hash::of(b"other"))).unwrap(), None);

        // Overwrite is last-writer-wins.
        let r2 = ActionResult {
            duration_ms: 99,
            ..r.clone()
        };
        s.ac_put(&key, &r2).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), Some(r2.clone()));

        // A file deep inside the output tree goes missing: miss.
        let model = BlobDigest(Hash::of(b"weights"));
        fs::remove_file(s.blob_path(&model)).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), None);
        s.put_bytes(b"weights").unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), Some(r2.clone()));

        // The log goes missing: miss.
        fs::remove_file(s.blob_path(&log)).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), None);
        s.put_bytes(b"training...\n").unwrap();

        // The top tree object goes missing: miss.
        fs::remove_file(s.blob_path(&BlobDigest(output.0))).unwrap();
        assert_eq!(s.ac_get(&key).unwrap(), None);
    }

    #[test]
    fn garbage_ac_entry_is_an_error_naming_the_key() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let key = StepKey(Hash::of(b"step"));
        fs::write(s.ac_path(&key), b"{not json").unwrap();
        let err = s.ac_get(&key).unwrap_err();
        assert!(err.to_string().contains(&key.to_string()), "{err}");
    }
}
