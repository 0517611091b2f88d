//! The content-addressed store of `repro`.

pub mod digest;

pub use digest::{BlobDigest, Hash, ImageDigest, ParseDigestError, RecordDigest, StepKey, TreeDigest};
