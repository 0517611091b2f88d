//! `repro schema`: the JSON Schema of the recipe format.

use anyhow::Result;
use repro_evidence::exit;

use super::{Ctx, StoreUse};

/// `repro schema` needs no store.
pub const STORE: StoreUse = StoreUse::None;

/// Run `repro schema`.
pub fn run(_ctx: &Ctx) -> Result<u8> {
    println!(
        "{}",
        serde_json::to_string_pretty(&repro_recipes::json_schema())?
    );
    Ok(exit::OK)
}
