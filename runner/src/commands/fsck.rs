//! `repro fsck`.

use anyhow::Result;
use clap::Args;
use repro_governance::fsck::{check, render};

use super::StoreUse;

/// `repro fsck` takes the shared lock itself around its walk.
pub const STORE: StoreUse = StoreUse::Open;

/// `repro fsck`'s arguments.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Print the result as one JSON document: every problem with its kind, digest and what refers to it
    #[arg(long)]
    pub json: bool,
}

/// `repro fsck`: check, print, and exit 3 when anything is wrong.
/// Run `repro fsck`.
pub fn run(ctx: &super::Ctx, args: FsckArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    // `repro gc` must not remove objects under the walk.
    let _lock = store.lock_shared()?;
    let report = check(store)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprint!("{}", render(&report, quiet));
    }
    Ok(if report.ok {
        repro_evidence::exit::OK
    } else {
        repro_evidence::exit::CANNOT
    })
}
