//! How evidence leaves one machine and enters another:
//!
//! - [`bundle`]: one file holding a version and everything its verification
//!   needs, for an air-gapped machine (`repro export`, `repro import`);
//! - [`registry`]: versions, images and action-cache entries through an OCI
//!   registry (`repro push`, `repro pull`, `repro build --remote`).
//!
//! Both re-hash every object before it enters the store.

pub mod bundle;
pub mod courier;
pub mod evidence;
pub mod registry;
