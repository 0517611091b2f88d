//! `repro data add`: snapshot a folder into the store.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::exit::{self, UserError};
use repro_store::Ingest;

use super::{Ctx, StoreUse};

/// `repro data` adds to the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro data` subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Snapshot a folder into the store and print its tree digest
    Add {
        /// The folder
        dir: PathBuf,
    },
}

/// Run `repro data`.
pub fn run(ctx: &Ctx, cmd: DataCommand) -> Result<u8> {
    let DataCommand::Add { dir } = cmd;
    let store = ctx.store()?;
    if !dir.is_dir() {
        return Err(UserError(format!("`{}` is not a folder", dir.display())).into());
    }
    let d = store.snapshot_dir(&dir, Ingest::Copy)?;
    println!("{d}");
    Ok(exit::OK)
}
