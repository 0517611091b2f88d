//! Getting container images into the store.
//!
//! [`import_archive`] takes an OCI image layout (a directory, or a tar of
//! one, optionally gzipped) or a `docker save` archive and stores the image
//! as OCI blobs, returning its manifest digest. Every blob is re-hashed on
//! the way in. [`registry`] moves blobs, artifacts and images to and from an
//! OCI registry (the shared store).

mod error;
mod import;
pub mod registry;

pub use error::{Error, Result};
pub use import::{archive_digest, import_archive};
