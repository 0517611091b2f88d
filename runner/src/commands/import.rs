//! `repro import`.

use std::path::PathBuf;

use clap::Args;
use repro_exchange::bundle;

use super::StoreUse;

/// `repro import` makes nothing visible until every object checks out.
pub const STORE: StoreUse = StoreUse::Open;

/// The arguments of `repro import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle (`repro export` output; gzip-compressed is accepted too)
    pub bundle: PathBuf,
}

/// `repro import`: print the record digest on stdout, a summary on stderr.
/// Run `repro import`.
pub fn run(ctx: &super::Ctx, args: ImportArgs) -> anyhow::Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    if repro_exchange::evidence::is_evidence_bundle(&args.bundle) {
        let i = repro_exchange::evidence::import(store, &args.bundle)?;
        let event = repro_evidence::audit::Event::new(
            "import-evidence",
            i.model.clone(),
            serde_json::json!({"record": i.record, "approvals": i.approvals, "adopted": i.adopted}),
        );
        // A store that adopted the bundle's log logs onto it.
        repro_evidence::audit::log(store, None, event)?;
        if !quiet {
            eprintln!(
                "imported the evidence of {} (record {}, {} approvals){}; verify it with `repro verify {}`",
                i.model,
                i.record,
                i.approvals,
                if i.adopted {
                    ", and this store adopted its governance and audit log"
                } else {
                    "; this store keeps its own governance and audit log"
                },
                i.model
            );
        }
        println!("{}", i.record);
        return Ok(repro_evidence::exit::OK);
    }
    let i = bundle::import(store, &args.bundle)?;
    let event = repro_evidence::audit::Event::new(
        "import",
        i.model.clone(),
        serde_json::json!({
            "record": i.record.to_string(),
            "bundle": i.manifest.to_string(),
            "format": i.format,
            "objects": i.objects,
            "bytes": i.bytes,
        }),
    );
    repro_evidence::audit::log(store, None, event)?;
    if !quiet {
        eprintln!(
            "imported {} (bundle {}, format {}, {} objects, {} bytes); verify it with `repro verify {}`",
            i.model, i.manifest, i.format, i.objects, i.bytes, i.model
        );
    }
    println!("{}", i.record);
    Ok(repro_evidence::exit::OK)
}
