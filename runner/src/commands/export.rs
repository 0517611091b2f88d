//! `repro export`.

use std::path::PathBuf;

use clap::Args;
use repro_exchange::bundle;

use super::StoreUse;

/// `repro export` takes the shared lock itself.
pub const STORE: StoreUse = StoreUse::Open;

/// The arguments of `repro export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The version: `name@version` or a record digest `sha256:...`
    pub record: String,
    /// The bundle file to write
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
}

/// `repro export`: print the bundle's digest on stdout, a summary on stderr.
/// Run `repro export`.
pub fn run(ctx: &super::Ctx, args: ExportArgs) -> anyhow::Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let e = bundle::export(store, &args.record, &args.output)?;
    if !quiet {
        eprintln!(
            "exported {} (record {}, {} objects, {} bytes) to `{}`; file sha256 {}",
            e.model,
            e.record,
            e.objects,
            e.bytes,
            args.output.display(),
            e.file.hex()
        );
    }
    println!("{}", e.manifest);
    Ok(repro_evidence::exit::OK)
}
