//! `repro image import`: take an image archive into the store.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::exit;

use super::{Ctx, StoreUse};

/// `repro image` adds to the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro image` subcommands.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import an OCI image layout (folder or tar) or a `docker save` archive and print its digest
    Import {
        /// The archive
        archive: PathBuf,
    },
}

/// Run `repro image`.
pub fn run(ctx: &Ctx, cmd: ImageCommand) -> Result<u8> {
    let ImageCommand::Import { archive } = cmd;
    let d = repro_toolchains::import_archive(&*ctx.store()?, &archive)?;
    println!("{d}");
    Ok(exit::OK)
}
