//! `repro check`: run each step under controlled variations.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use repro_engine::{build, engine, Engine};
use repro_evidence::exit;
use tokio_util::sync::CancellationToken;

use super::{on_ctrl_c, Ctx, SandboxArg, StoreUse};
use crate::reporter::{Console, Verbosity};

/// The store lock `repro check` holds for its whole run.
pub const STORE: StoreUse = StoreUse::Shared;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    sandbox: SandboxArg,
    #[command(flatten)]
    registry: super::push::RegistryArgs,
    /// The recipe
    recipe: PathBuf,
    /// Refuse any input that the recipe or its lock file does not pin by digest
    #[arg(long)]
    locked: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// Run `repro check`.
pub async fn run(ctx: &Ctx, args: CheckArgs) -> Result<u8> {
    let store = ctx.store()?;
    let verbosity = ctx.verbosity;
    let recipe = repro_recipes::parse_file(&args.recipe)?;
    engine::check_graph(&recipe)?;
    // A template (`1.1.{date}`) is named as a build would fill it in.
    let version = build::version_of(&recipe, None)?;
    let verbosity = if args.json {
        Verbosity::Quiet
    } else {
        verbosity
    };
    let cancel = CancellationToken::new();
    on_ctrl_c(cancel.clone());
    let engine = Arc::new(
        Engine::new(
            Arc::clone(&store),
            args.sandbox.kind,
            Arc::new(Console::new(verbosity)),
            cancel,
        )
        .with_image_source(Some(args.registry.image_source())),
    );
    let pins = if args.locked {
        build::resolve_locked(&engine, &recipe).await?
    } else {
        build::resolve(&engine, &recipe).await?.0
    };
    build::fetch_registry_images(&engine, &recipe).await?;
    let plan = engine::Plan::new(&recipe, &pins)?;
    let model = format!("{}@{}", recipe.model.name, version.expand(&recipe, &pins));
    let report = repro_engine::check::check(&engine, &plan, model).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", repro_engine::check::render(&report));
    }
    Ok(if report.stable {
        exit::OK
    } else {
        exit::FAILED
    })
}
