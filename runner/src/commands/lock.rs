//! `repro lock`: pin every floating reference of a recipe.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use repro_engine::{build, Engine};
use repro_evidence::exit;
use repro_sandbox::BackendKind;
use tokio_util::sync::CancellationToken;

use super::{Ctx, StoreUse};
use crate::reporter::Console;

/// `repro lock` snapshots folders into the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro lock` arguments.
#[derive(Args)]
pub struct LockArgs {
    /// The recipe
    recipe: PathBuf,
}

/// Run `repro lock`.
pub async fn run(ctx: &Ctx, args: LockArgs) -> Result<u8> {
    let recipe = repro_recipes::parse_file(&args.recipe)?;
    let engine = Arc::new(Engine::new(
        ctx.store()?,
        BackendKind::Native,
        Arc::new(Console::new(ctx.verbosity)),
        CancellationToken::new(),
    ));
    let (_, lock) = build::resolve(&engine, &recipe).await?;
    let path = recipe.lock_path();
    lock.write(&path)?;
    if !ctx.quiet {
        eprintln!("wrote `{}`", path.display());
    }
    print!("{}", lock.to_toml_string());
    Ok(exit::OK)
}
