//! `repro lock --check`: whether every floating input of a recipe still
//! resolves to the digest its lock file pins, and how each one moved.
//!
//! The folders are snapshotted (their blobs and tree objects go into the
//! store, as a build would put them) and the image archives and tags read
//! without registering the image; nothing else changes: not the lock file,
//! not any ref. What moved in a data or code folder is counted file by
//! file against the locked tree when the store still holds it.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use repro_recipes::{FloatingRef, Kind, Lock, Recipe};
use repro_store::{FileEntry, Hash, Store, TreeDigest};

use crate::build::resolve_floating;
use crate::engine::Engine;

/// Files added, removed and changed from one tree to another (a file whose
/// bytes, executable bit or symlink target differ is changed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeChanges {
    /// Paths only the new tree has.
    pub added: usize,
    /// Paths only the old tree has.
    pub removed: usize,
    /// Paths both have, with other contents.
    pub changed: usize,
}

/// How one floating input stands against the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputState {
    /// `data.NAME`, `code.NAME` or `toolchains.NAME`.
    pub key: String,
    /// What it is.
    pub kind: Kind,
    /// The reference as the recipe writes it.
    pub reference: FloatingRef,
    /// What the lock pins for it: `None` when the lock has no entry for it.
    pub locked: Option<Hash>,
    /// The reference the lock entry was made from, when it is not the
    /// recipe's (the recipe was edited since).
    pub locked_reference: Option<FloatingRef>,
    /// What it resolves to now.
    pub now: Hash,
    /// For a data or code tree that moved: what changed, when the store
    /// holds the locked tree (`None` when it does not, or for an image).
    pub changes: Option<TreeChanges>,
}

impl InputState {
    /// Whether the lock no longer gives what the recipe resolves to now:
    /// the digest moved, or the lock has no entry for this reference.
    pub fn moved(&self) -> bool {
        self.locked != Some(self.now) || self.locked_reference.is_some()
    }
}

/// Resolve every floating input of `recipe` now and compare it with what
/// `lock` pins, in the recipe's order (kind, then name). Errors are those
/// of resolving (a folder or archive that is gone: exit 3) and of reading
/// the store.
pub async fn check(engine: &Arc<Engine>, recipe: &Recipe, lock: &Lock) -> Result<Vec<InputState>> {
    let store = engine.store();
    let mut out = Vec::new();
    for f in recipe.floating() {
        let now = resolve_floating(engine, recipe, &f, false).await?;
        let entry = lock.get(f.kind, &f.name);
        let locked = entry.map(|e| e.digest);
        let locked_reference = entry
            .filter(|e| e.reference != f.reference)
            .map(|e| e.reference.clone());
        let changes = match (f.kind, locked) {
            (Kind::Data | Kind::Code, Some(was)) if was != now => {
                let store = Arc::clone(&store);
                tokio::task::spawn_blocking(move || tree_changes(&store, was, now)).await??
            }
            (Kind::Data | Kind::Code, Some(_)) => Some(TreeChanges::default()),
            _ => None,
        };
        let key = f
            .key
            .strip_suffix(&format!(".{}", f.reference.field()))
            .unwrap_or(&f.key)
            .to_string();
        out.push(InputState {
            key,
            kind: f.kind,
            reference: f.reference,
            locked,
            locked_reference,
            now,
            changes,
        });
    }
    Ok(out)
}

/// What changed from tree `was` to tree `now` (which the store holds: it
/// was just snapshotted); `None` when the store lacks `was` or part of it.
fn tree_changes(store: &Store, was: Hash, now: Hash) -> Result<Option<TreeChanges>> {
    let old = match store.flatten(&TreeDigest::from_hash(was)) {
        Ok(files) => files,
        Err(repro_store::Error::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let new = store.flatten(&TreeDigest::from_hash(now))?;
    Ok(Some(count(&old, &new)))
}

fn count(old: &BTreeMap<String, FileEntry>, new: &BTreeMap<String, FileEntry>) -> TreeChanges {
    let mut c = TreeChanges::default();
    for (path, entry) in new {
        match old.get(path) {
            None => c.added += 1,
            Some(e) if e != entry => c.changed += 1,
            Some(_) => {}
        }
    }
    c.removed = old.keys().filter(|p| !new.contains_key(*p)).count();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use repro_store::BlobDigest;

    fn file(bytes: &[u8], executable: bool) -> FileEntry {
        FileEntry::File {
            digest: BlobDigest::from_hash(Hash::of(bytes)),
            size: bytes.len() as u64,
            executable,
        }
    }

    #[test]
    fn files_are_counted_added_removed_and_changed() {
        let old = BTreeMap::from([
            ("a".to_string(), file(b"a", false)),
            ("b/c".to_string(), file(b"c", false)),
            ("d".to_string(), file(b"d", false)),
            ("e".to_string(), file(b"e", false)),
            ("l".to_string(), FileEntry::Symlink { target: "a".into() }),
        ]);
        let new = BTreeMap::from([
            ("a".to_string(), file(b"a", false)),
            ("b/c".to_string(), file(b"c2", false)),
            ("d".to_string(), file(b"d", true)),
            ("l".to_string(), FileEntry::Symlink { target: "d".into() }),
            ("f".to_string(), file(b"f", false)),
            ("g/h".to_string(), file(b"h", false)),
        ]);
        assert_eq!(
            count(&old, &new),
            TreeChanges {
                added: 2,
                removed: 1,
                changed: 3
            }
        );
        assert_eq!(count(&new, &new), TreeChanges::default());
    }
}
