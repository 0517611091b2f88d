//! The store's error type.

use std::io;
use std::path::PathBuf;

use crate::digest::{Hash, RecordDigest};

/// A store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
///
/// Messages are self-contained (an I/O error's cause is part of the message)
/// so that printing only the top-level error still tells the whole story.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {action} `{}`: {err}", path.display())]
    Io {
        /// What was being done, e.g. "read" or "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        err: io::Error,
    },

    /// The store directory was written by a different format version.
    #[error(
        "the store at `{}` holds format `{found}`, which this version of repro cannot read\nhint: use the repro release that wrote it, or point `--store` at another directory",
        root.display()
    )]
    UnsupportedVersion {
        /// The store root.
        root: PathBuf,
        /// The version directory found (e.g. `v2`).
        found: String,
    },

    /// An object is not in the store.
    #[error("{what} `{digest}` is not in the store (looked for `{}`)\nhint: rebuild or re-import whatever produced it", path.display())]
    Missing {
        /// What kind of object (blob, tree, record, image).
        what: &'static str,
        /// Its digest, `sha256:<hex>`.
        digest: String,
        /// Where it should have been.
        path: PathBuf,
    },

    /// A stored blob does not hash to its name.
    #[error("blob `{digest}` is corrupt: its bytes hash to `{actual}`\nhint: delete `{}` and rebuild or re-import whatever produced it", path.display())]
    Corrupt {
        /// The digest the blob is stored under.
        digest: String,
        /// What its bytes actually hash to.
        actual: String,
        /// The blob's file.
        path: PathBuf,
    },

    /// Bytes offered with an expected digest hash to something else.
    #[error("content expected to be `{expected}` hashes to `{actual}`")]
    Mismatch {
        /// The digest that was promised.
        expected: String,
        /// The digest of the bytes actually read.
        actual: String,
    },

    /// An object's bytes hash correctly but do not parse as what they should be.
    #[error("{what} `{digest}` is malformed: {why}")]
    Malformed {
        /// What kind of object (tree, action cache entry, image manifest...).
        what: &'static str,
        /// Its digest or key.
        digest: String,
        /// What is wrong.
        why: String,
    },

    /// A directory entry of a kind the store cannot hold.
    #[error("cannot store `{}`: it is a {kind}\nhint: only regular files, directories and symlinks can be stored; remove it from the directory", path.display())]
    UnsupportedFile {
        /// The offending path.
        path: PathBuf,
        /// What it is (socket, fifo, device...).
        kind: &'static str,
    },

    /// A file name or symlink target that is not UTF-8.
    #[error("cannot store `{}`: its {what} is not valid UTF-8\nhint: rename it (or retarget the symlink) using UTF-8", path.display())]
    NotUtf8 {
        /// The offending path.
        path: PathBuf,
        /// "name" or "symlink target".
        what: &'static str,
    },

    /// A file to move into the store lives on another filesystem.
    #[error("cannot move `{}` into the store: it is on another filesystem\nhint: write step outputs under a directory from `Store::scratch`, which is on the store's filesystem", path.display())]
    CrossDevice {
        /// The file that could not be renamed.
        path: PathBuf,
    },

    /// The destination of a materialization already exists.
    #[error("cannot lay out a tree at `{}`: it already exists\nhint: materialize into a path that does not exist yet", path.display())]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },

    /// A path given to a [`Store`](crate::Store) method for paths inside
    /// the store is not inside its format directory.
    #[error("cannot write `{}` through the store at `{}`: it is not inside the store's `{}`\nhint: use `repro_store::write_atomic` for a path outside the store", path.display(), layout.display(), layout.display())]
    NotInStore {
        /// The path given.
        path: PathBuf,
        /// The store's format directory, `<root>/v1`.
        layout: PathBuf,
    },

    /// A name given to [`Store::ns_path`](crate::Store::ns_path) that could
    /// leave its namespace (or is not a name at all).
    #[error("invalid name `{}` in `{}`: {why}\nhint: a name in a store namespace is one path segment: not empty, no `/`, not starting with `.`", segment.escape_debug(), dir.display())]
    InvalidSegment {
        /// The namespace (or the directory in it) the name was to go in.
        dir: PathBuf,
        /// The name given.
        segment: String,
        /// What is wrong.
        why: &'static str,
    },

    /// A record or ref name that cannot be used.
    #[error("invalid {what} `{name}`: {why}\nhint: use letters, digits and `.`, `_`, `-`, `+`, `@`, not starting with `.`")]
    InvalidName {
        /// "record name" or "version".
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },

    /// A record offered for `name@version` was built from other inputs than
    /// the version's records: a version keeps naming the inputs it was
    /// first built from.
    #[error(transparent)]
    VersionInputsDiffer(Box<VersionInputsDiffer>),

    /// No record is known for `name@version`.
    #[error(
        "no record of `{name}` version `{version}` in the store\nhint: {}",
        known_versions_hint(name, known)
    )]
    UnknownVersion {
        /// The model name.
        name: String,
        /// The version asked for.
        version: String,
        /// The versions of `name` that are known, sorted.
        known: Vec<String>,
    },
}

/// [`Error::VersionInputsDiffer`]: a record offered for `name@version` was
/// built from other inputs than the version's records.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot record `{record}` as `{name}@{version}`: it was built from other inputs (`{inputs}`) than the version's record `{existing}` (`{existing_inputs}`)\nhint: a version keeps naming the inputs it was first built from; give these inputs a new version (bump `version` in `[model]`)"
)]
pub struct VersionInputsDiffer {
    /// The model name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The record refused.
    pub record: RecordDigest,
    /// The digest of its inputs, as the caller's [`InputsOf`](crate::InputsOf) gave it.
    pub inputs: Hash,
    /// The version's record it was compared with (its latest readable one).
    pub existing: RecordDigest,
    /// The digest of that record's inputs.
    pub existing_inputs: Hash,
}

fn known_versions_hint(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no version of `{name}` has been built into this store")
    } else {
        let list: Vec<String> = known.iter().map(|v| format!("`{v}`")).collect();
        format!("known versions of `{name}`: {}", list.join(", "))
    }
}

/// Build a closure turning an `io::Error` into [`Error::Io`].
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |err| Error::Io { action, path, err }
}
