//! `repro diff`: what differs between two files, trees or records.

use anyhow::Result;
use clap::Args;
use repro_engine::{compare, diff};
use repro_evidence::exit;

use super::{Ctx, StoreUse};

/// `repro diff` only reads.
pub const STORE: StoreUse = StoreUse::Open;

/// `repro diff` arguments.
#[derive(Args)]
pub struct DiffArgs {
    /// The first: a file, a tree or record digest, or `name@version`
    a: String,
    /// The second, of the same kind
    b: String,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    /// Also hand each differing file to diffoscope (when installed) and attach its report
    #[arg(long)]
    diffoscope: bool,
}

/// Run `repro diff`.
pub fn run(ctx: &Ctx, args: DiffArgs) -> Result<u8> {
    let store = ctx.store()?;
    let d = diff::diff(
        &store,
        &args.a,
        &args.b,
        compare::CompareOptions {
            diffoscope: args.diffoscope,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", diff::render(&d));
    }
    Ok(if d.identical { exit::OK } else { exit::FAILED })
}
