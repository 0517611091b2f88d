//! The toolchains error type.

use std::io;
use std::path::PathBuf;

/// A toolchains result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong getting an image into the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] repro_store::Error),

    /// Reading the archive failed.
    #[error("cannot {action} `{}`: {err}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The archive (or file inside a layout directory).
        path: PathBuf,
        /// The underlying error.
        err: io::Error,
    },

    /// Neither an OCI image layout nor a docker archive.
    #[error("`{}` is neither an OCI image layout nor a docker archive\nhint: pass a directory or tar holding `oci-layout` and `index.json`, or the output of `docker save`", path.display())]
    NotAnImage {
        /// The archive.
        path: PathBuf,
    },

    /// The archive's metadata is inconsistent or unreadable.
    #[error("`{}` is not a valid image archive: {why}", path.display())]
    Invalid {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },

    /// A blob in the archive does not hash to its digest.
    #[error("blob `{expected}` in `{}` is corrupt: its bytes hash to `{actual}`\nhint: the archive was damaged or tampered with; export it again from a trusted source", path.display())]
    BlobMismatch {
        /// The archive.
        path: PathBuf,
        /// The digest the archive claims.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },

    /// The archive holds more than one image (or none).
    #[error("`{}` holds {} images, expected exactly one:{}\nhint: export a single image (one platform) into the archive", path.display(), listed.len(), list(listed))]
    NotExactlyOne {
        /// The archive.
        path: PathBuf,
        /// One line per image found.
        listed: Vec<String>,
    },

    /// A feature of the archive this importer does not handle.
    #[error("cannot import `{}`: {why}", path.display())]
    Unsupported {
        /// The archive.
        path: PathBuf,
        /// What is not supported.
        why: String,
    },
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| format!("\n  {i}")).collect()
}
