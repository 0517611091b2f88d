//! The step graph of a recipe: ordering, cycle detection, scheduling state and
//! step keys. No I/O happens here; the runner feeds it facts and acts on what
//! it answers.

mod graph;
mod key;
mod schedule;

pub use graph::{Error, Graph, Result};
pub use key::{KeyMaterial, KeyMaterialRef};
pub use schedule::{Scheduler, StepState};
