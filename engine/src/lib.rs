//! The engine of `repro`: turn a recipe and its pins into a plan, run the
//! plan's steps in the sandbox with the action cache, and build, check and
//! verify models.
//!
//! - [`engine`]: the plan, step keys, the scheduler and the cache paths;
//! - [`build`]: resolve floating inputs, run, and sign the record;
//! - [`drift`]: whether the floating inputs still resolve to what the lock pins;
//! - [`verify`]: rebuild a record from scratch and compare byte for byte;
//! - [`check`]: run each step under controlled variations;
//! - [`compare`] and [`diff`]: what differs between two outputs;
//! - [`events`]: what the engine reports while it works;
//! - [`remote`]: what it asks of a registry (remote cache, image source),
//!   implemented in `repro-exchange`.
//!
//! Module order (a module uses only those before it): `events`, `remote`,
//! `compare`, `engine`, `build`, `drift`, `check`, `verify`, `diff`.

pub mod build;
pub mod check;
pub mod compare;
pub mod diff;
pub mod drift;
#[allow(clippy::module_inception)]
pub mod engine;
pub mod events;
pub mod remote;
pub mod verify;

pub use engine::{BuildOptions, BuildReport, Engine, Plan, StepResult, StepStatus};
