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
    /// Write the exam package instead: the rebuild kit plus approvals, identities, stage history, policies, the card and the signed audit log (`name@version` only)
    #[arg(long)]
    pub evidence: bool,
    /// With `--evidence`: the key that signs a checkpoint of the audit log's head [default: as for `build`; without one there is no checkpoint; ignored otherwise]
    #[arg(long, env = repro_evidence::env_vars::REPRO_KEY, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// `repro export`: print the bundle's digest on stdout, a summary on stderr.
/// Run `repro export`.
pub fn run(ctx: &super::Ctx, args: ExportArgs) -> anyhow::Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    if args.evidence {
        let signer = args
            .key
            .clone()
            .or_else(repro_evidence::keys::default_key_path)
            .filter(|p| p.exists())
            .map(|p| -> anyhow::Result<_> {
                let k = repro_evidence::keys::load(&p)?;
                let who = repro_evidence::attest::identity_of(&p, &k);
                Ok((k, who))
            })
            .transpose()?;
        let e = repro_exchange::evidence::export(
            store,
            &args.record,
            &args.output,
            signer.as_ref().map(|(k, w)| (k, w)),
        )?;
        if !quiet {
            eprintln!(
                "exported the evidence of {} (record {}, {} members{}) to `{}`",
                e.model,
                e.record,
                e.members,
                if e.checkpoint {
                    ", with a signed checkpoint of the audit log"
                } else {
                    "; no signing key, so no checkpoint"
                },
                args.output.display()
            );
        }
        println!("{}", e.record);
        return Ok(repro_evidence::exit::OK);
    }
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
