//! Parsing, validating and pinning `model.toml` recipes.
//!
//! The format is described in `FORMAT.md` beside this crate. Parsing is
//! pure: [`parse_str`] takes the text, [`parse_file`] reads it first. The
//! runner resolves floating references (paths, archives, tags) and hands the
//! digests back through [`Recipe::lock_with`] and [`Recipe::pins_from`].
//!
//! Errors are [`Diagnostic`]s with file, line, column, key and hint.
//! Syntax and type errors stop at the first one (the TOML parser cannot go
//! on); every other problem in a recipe is collected and reported together.
//!
//! # Module order
//!
//! The modules form layers: each uses items defined only in the modules
//! before it in this list, never one after it (re-exports aside), so there
//! are no circles between files.
//!
//! 1. Leaves, using nothing of the crate: `units` (durations, sizes),
//!    `output_path`, `error` (diagnostics), `raw` (the serde structs of the
//!    file), `subst` (parameter values and their substitution), `version`
//!    (version templates).
//! 2. `de`: TOML to `raw` with located errors (uses `error`).
//! 3. `recipe`: the checked recipe (uses all of the above).
//! 4. `lock`: the lock file, and pinning a recipe with it (uses `recipe`).
//! 5. This file: re-exports and the JSON Schema (uses `raw`).

mod de;
mod error;
mod lock;
mod output_path;
mod raw;
mod recipe;
mod subst;
mod units;
mod version;

pub use error::{Diagnostic, Diagnostics, Error, Location, Result};
pub use lock::{Floating, FloatingRef, Kind, Lock, LockEntry, Pins, Resolved, LOCK_VERSION};
pub use output_path::OutputPath;
pub use recipe::{
    parse_file, parse_str, BuildSettings, CodeTree, DataSnapshot, Gpus, ImageRef, InputRef, Limits,
    Model, Recipe, Step, StepSpans, Toolchain, TreeRef, DEFAULT_TIMEOUT, SANDBOX_FIXED_ENV,
    THREAD_ENV,
};
pub use subst::ParamValue;
pub use units::{parse_duration, parse_memory};
pub use version::{placeholders_help, Placeholder, VersionTemplate};

/// The JSON Schema of `model.toml` (draft 7, generated from the serde
/// structs the parser uses). The checked-in copy is `model.schema.json`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::RawRecipe);
    serde_json::to_value(schema).unwrap_or_default()
}
