//! The build memo: a no-op build of an unchanged recipe without looking up
//! every step in the action cache again.
//!
//! After every successful build, the step results (step key, output tree,
//! log, and the output's files and nested tree objects) are written to
//! `v1/memo/<sha256 of the recipe path>`, under a memo key. A later build of
//! the same recipe file takes them as they are, every step cached, when
//!
//! - the memo key is the same: the hash of the memo format, the `repro`
//!   version, the sandbox policy version, the sandbox backend, the recipe's
//!   path and the SHA-256 of its exact bytes, and every resolved input
//!   (toolchain images, data snapshots, code trees, as pinned for this
//!   build); any change to one of these misses;
//! - the steps are exactly the recipe's, in the graph's order;
//! - the build reads the cache (not `--no-cache`);
//! - everything the results name is still in the store and intact: every
//!   log blob, output tree object (nested ones included) and file blob
//!   exists and hashes to its name ([`Store::check_intact`]: re-hashed
//!   unless its stamp from the last check under this memo key vouches for
//!   it; see [`repro_store::intact`]).
//!
//! Given the same recipe bytes and inputs, the plan and so every step key
//! is what the memoised build computed (a step's key depends only on the
//! recipe, the pins and the outputs of the steps before it, which are the
//! memo's own). A memo hit is thus a build in which every step was an
//! action cache hit, with one difference: the action cache entries
//! themselves are not read again, so a result that a later `--no-cache`
//! build replaced in the action cache is still taken from the memo until the
//! memo is rewritten (both results are outputs of the same step key). The
//! tree objects are checked for presence, not re-hashed (as file blobs are
//! not on an action cache hit); whoever reads them re-hashes them.
//!
//! The memo lives in the store: whoever can write it can write the action
//! cache too, so it trusts nothing the action cache does not. A memo that
//! cannot be read or parsed is a miss, never an error; one file per recipe
//! path bounds how much they take (`repro gc` leaves them; a stale one just
//! misses).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use repro_recipes::{Pins, Recipe};
use repro_store::{BlobDigest, FileEntry, Hash, StepKey, Store, TreeDigest};
use serde::{Deserialize, Serialize};

use crate::engine::{BuildReport, StepResult, StepStatus};

/// Bumped whenever what a memo holds or how it is keyed changes.
const FORMAT: u32 = 1;

/// Everything a memo is keyed on (see the module's documentation).
#[derive(Serialize)]
struct KeyMaterial<'a> {
    format: u32,
    repro: &'a str,
    policy_version: u32,
    backend: &'a str,
    /// The recipe's path, as bytes in hex (a path need not be UTF-8).
    recipe_path: String,
    recipe_digest: String,
    pins: &'a Pins,
}

/// The memo key of building `recipe` with `pins` on `backend`.
pub fn key(recipe: &Recipe, pins: &Pins, backend: &str) -> Result<Hash> {
    let m = KeyMaterial {
        format: FORMAT,
        repro: env!("CARGO_PKG_VERSION"),
        policy_version: repro_sandbox::POLICY_VERSION,
        backend,
        recipe_path: hex::encode(recipe.path.as_os_str().as_bytes()),
        recipe_digest: recipe.digest.to_string(),
        pins,
    };
    Ok(Hash::of(&serde_json::to_vec(&m)?))
}

#[derive(Serialize, Deserialize)]
struct MemoFile {
    key: Hash,
    steps: Vec<MemoStep>,
}

#[derive(Serialize, Deserialize)]
struct MemoStep {
    name: String,
    key: StepKey,
    output: TreeDigest,
    log: BlobDigest,
    /// The output's nested tree objects (not the output's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    trees: Vec<TreeDigest>,
    files: BTreeMap<String, FileEntry>,
}

/// Where the memo of `recipe` lives.
fn path(store: &Store, recipe: &Recipe) -> PathBuf {
    store
        .ns_dir(repro_store::Ns::Memo)
        .join(Hash::of(recipe.path.as_os_str().as_bytes()).hex())
}

/// A memo that matches a build, not yet checked against the store.
pub struct Memoised {
    /// The steps, every one cached, in topological order.
    pub steps: Vec<StepResult>,
    /// Every blob they name (logs, tree objects, files), sorted and
    /// deduplicated: the memo holds only if the store has them all, intact
    /// ([`Store::check_intact`], under the memo key).
    pub blobs: Vec<BlobDigest>,
}

/// The memoised build of `recipe` under `key`, its steps in `order` (the
/// graph's topological order, of `len` steps); `None` on any miss.
pub fn load<'a>(
    store: &Store,
    recipe: &Recipe,
    key: &Hash,
    len: usize,
    order: impl Iterator<Item = &'a str>,
) -> Option<Memoised> {
    let bytes = std::fs::read(path(store, recipe)).ok()?;
    let memo: MemoFile = serde_json::from_slice(&bytes).ok()?;
    if memo.key != *key || memo.steps.len() != len {
        return None;
    }
    if !memo.steps.iter().map(|s| s.name.as_str()).eq(order) {
        return None;
    }
    let mut blobs: Vec<BlobDigest> = Vec::new();
    for s in &memo.steps {
        blobs.push(s.log);
        blobs.push(BlobDigest::from_hash(s.output.hash()));
        blobs.extend(s.trees.iter().map(|t| BlobDigest::from_hash(t.hash())));
        for e in s.files.values() {
            if let FileEntry::File { digest, .. } = e {
                blobs.push(*digest);
            }
        }
    }
    blobs.sort_unstable();
    blobs.dedup();
    let steps = memo
        .steps
        .into_iter()
        .map(|s| StepResult {
            name: s.name,
            status: StepStatus::Cached,
            key: Some(s.key),
            output: Some(s.output),
            log: Some(s.log),
            duration: Duration::ZERO,
            reason: None,
            files: Some(Arc::new(s.files)),
            ran_on: None,
            job_ids: Vec::new(),
            retries: Vec::new(),
        })
        .collect();
    Some(Memoised { steps, blobs })
}

/// Remember the results of the successful build `report` of `recipe` under
/// `key`, replacing the recipe's previous memo.
pub fn save(store: &Store, recipe: &Recipe, key: &Hash, report: &BuildReport) -> Result<()> {
    let mut steps = Vec::with_capacity(report.steps.len());
    for s in &report.steps {
        let (Some(key), Some(output), Some(log)) = (s.key, s.output, s.log) else {
            anyhow::bail!("step `{}` has no result to remember", s.name);
        };
        let files = s.files(store)?.context("a finished step has no output")?;
        steps.push(MemoStep {
            name: s.name.clone(),
            key,
            output,
            log,
            trees: store.subtrees(&output)?,
            files: (*files).clone(),
        });
    }
    let bytes = serde_json::to_vec(&MemoFile { key: *key, steps })?;
    let dest = path(store, recipe);
    // Renamed into place, so a reader sees a whole memo or the previous one.
    store.write_atomic(&dest, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use repro_store::{ImageDigest, Ingest};
    use std::path::Path;

    fn recipe(path: &str, text: &str) -> Recipe {
        repro_recipes::parse_str(Path::new(path), text).unwrap()
    }

    const TEXT: &str = r#"
[model]
name = "m"
version = "1"

[toolchains.bb]
image = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

[[steps]]
name = "train"
toolchain = "bb"
argv = ["true"]
outputs = ["out/"]
"#;

    fn pins(image: &[u8]) -> Pins {
        let mut p = Pins::default();
        p.toolchains
            .insert("bb".into(), ImageDigest::from_hash(Hash::of(image)));
        p
    }

    /// Everything the memo is keyed on changes the key.
    #[test]
    fn any_change_to_what_is_built_changes_the_key() {
        let r = recipe("/w/model.toml", TEXT);
        let k = key(&r, &pins(b"a"), "native").unwrap();
        assert_eq!(k, key(&r, &pins(b"a"), "native").unwrap());
        assert_ne!(k, key(&r, &pins(b"b"), "native").unwrap());
        assert_ne!(k, key(&r, &pins(b"a"), "docker").unwrap());
        let mut more = pins(b"a");
        more.data
            .insert("d".into(), TreeDigest::from_hash(Hash::of(b"d")));
        assert_ne!(k, key(&r, &more, "native").unwrap());
        let edited = recipe(
            "/w/model.toml",
            &TEXT.replace("argv = [\"true\"]", "argv = [ \"true\"]"),
        );
        assert_ne!(k, key(&edited, &pins(b"a"), "native").unwrap());
        let moved = recipe("/v/model.toml", TEXT);
        assert_ne!(k, key(&moved, &pins(b"a"), "native").unwrap());
    }

    /// A saved build comes back every step cached, with its files, under
    /// the same key and steps only; it holds only while the store has every
    /// blob it names (nested tree objects included).
    #[test]
    fn a_memo_comes_back_only_for_the_same_build_and_a_complete_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let out = store.scratch("out-").unwrap();
        std::fs::create_dir_all(out.path().join("out/deep/empty")).unwrap();
        std::fs::write(out.path().join("out/model.bin"), b"weights").unwrap();
        let output = store.snapshot_dir(out.path(), Ingest::Move).unwrap();
        let log = store.put_bytes(b"trained\n").unwrap();
        let step_key = StepKey::from_hash(Hash::of(b"step"));
        let report = BuildReport {
            steps: vec![StepResult {
                name: "train".into(),
                status: StepStatus::Ran,
                key: Some(step_key),
                output: Some(output),
                log: Some(log),
                duration: Duration::from_secs(5),
                reason: None,
                files: None,
                ran_on: None,
                job_ids: Vec::new(),
                retries: Vec::new(),
            }],
        };
        let r = recipe("/w/model.toml", TEXT);
        let k = key(&r, &pins(b"a"), "native").unwrap();
        assert!(load(&store, &r, &k, 1, ["train"].into_iter()).is_none());
        save(&store, &r, &k, &report).unwrap();

        let m = load(&store, &r, &k, 1, ["train"].into_iter()).unwrap();
        assert!(store.check_intact(&k, &m.blobs).is_ok());
        let s = &m.steps[0];
        assert_eq!(s.status, StepStatus::Cached);
        assert_eq!(
            (s.key, s.output, s.log),
            (Some(step_key), Some(output), Some(log))
        );
        assert_eq!(s.duration, Duration::ZERO);
        assert_eq!(
            *s.files(&store).unwrap().unwrap(),
            store.flatten(&output).unwrap()
        );
        // log, output tree, `out`, `out/deep`, `out/deep/empty`, model.bin
        assert_eq!(m.blobs.len(), 6, "{:?}", m.blobs);

        let other = key(&r, &pins(b"b"), "native").unwrap();
        assert!(load(&store, &r, &other, 1, ["train"].into_iter()).is_none());
        assert!(load(&store, &r, &k, 1, ["eval"].into_iter()).is_none());
        assert!(load(&store, &r, &k, 2, ["train", "eval"].into_iter()).is_none());
        let elsewhere = recipe("/v/model.toml", TEXT);
        assert!(load(&store, &elsewhere, &k, 1, ["train"].into_iter()).is_none());

        // The empty directory's tree object goes: the memo no longer holds.
        let empty = store.subtrees(&output).unwrap();
        assert_eq!(empty.len(), 3);
        let gone = BlobDigest::from_hash(
            empty
                .iter()
                .find(|t| store.get_tree(t).unwrap().entries.is_empty())
                .unwrap()
                .hash(),
        );
        let bytes = store.read_blob(&gone).unwrap();
        std::fs::remove_file(store.blob_path(&gone)).unwrap();
        let m = load(&store, &r, &k, 1, ["train"].into_iter()).unwrap();
        assert!(store.check_intact(&k, &m.blobs).is_err());
        store.put_bytes(&bytes).unwrap();
        assert!(store.check_intact(&k, &m.blobs).is_ok());

        // So does the log; and an altered model file.
        std::fs::remove_file(store.blob_path(&log)).unwrap();
        assert!(store.check_intact(&k, &m.blobs).is_err());
        store.put_bytes(b"trained\n").unwrap();
        assert!(store.check_intact(&k, &m.blobs).is_ok());
        let model = store.blob_path(&BlobDigest::from_hash(Hash::of(b"weights")));
        std::fs::set_permissions(&model, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(&model, b"weightz").unwrap();
        let err = store.check_intact(&k, &m.blobs).unwrap_err();
        assert!(matches!(err, repro_store::Error::Corrupt { .. }), "{err}");

        // A damaged memo is a miss, not an error.
        std::fs::write(path(&store, &r), b"{\"key\":").unwrap();
        assert!(load(&store, &r, &k, 1, ["train"].into_iter()).is_none());
    }
}
