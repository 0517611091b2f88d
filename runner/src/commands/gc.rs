//! `repro gc`, `repro pin`, `repro unpin`.

use std::time::SystemTime;

use anyhow::Result;
use clap::Args;
use repro_evidence::exit::UserError;
use repro_governance::gc::{self, PinTarget, Retention};

use super::{Ctx, StoreUse};

/// `repro gc` takes the exclusive lock itself (and waits for builds).
pub const STORE: StoreUse = StoreUse::Open;

/// `repro pin` and `unpin` take the shared lock themselves.
pub const PIN_STORE: StoreUse = StoreUse::Open;

/// `repro pin` and `repro unpin` arguments.
#[derive(Args)]
pub struct PinArgs {
    /// `name@version`, or a digest `sha256:<hex>` (a blob, tree, image or record)
    target: String,
}

/// `repro gc`'s arguments.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// List what would be removed and how many bytes would return; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also list every removed object's digest and every version's fate
    #[arg(long, short)]
    pub verbose: bool,
    /// Print the result as one JSON document
    #[arg(long)]
    pub json: bool,
    /// Fail at once instead of waiting when a build holds the store
    #[arg(long)]
    pub no_wait: bool,
    /// Retain versions whose record finished less than N days ago (overrides `keep_days`)
    #[arg(long, value_name = "N")]
    pub keep_days: Option<u64>,
    /// Retain the latest K versions of each model (overrides `keep_latest`)
    #[arg(long, value_name = "K")]
    pub keep_latest: Option<usize>,
    /// Retain versions in this registry stage (repeatable; replaces `stages`)
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
}

/// `repro gc`: lock, collect, print. Returns the exit code.
/// Run `repro gc`.
pub fn run(ctx: &Ctx, args: GcArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let flags = Retention {
        keep_days: args.keep_days,
        keep_latest: args.keep_latest,
        stages: args.stages.clone(),
    };
    let retention = Retention::load(store)?.with_flags(&flags);
    for stage in &retention.stages {
        if stage.is_empty() || stage.contains('/') || stage.starts_with('.') {
            return Err(UserError(format!(
                "invalid stage `{stage}`\nhint: a stage is a name such as `production`"
            ))
            .into());
        }
    }
    let _lock = gc::lock(store, args.no_wait, || {
        if !quiet {
            eprintln!("waiting for running builds to finish (the store is locked by a build, verification or check)");
        }
    })?;
    let report = gc::collect(
        store,
        &retention,
        args.dry_run,
        args.verbose,
        SystemTime::now(),
    )?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !args.dry_run {
        let event = repro_evidence::audit::Event::new(
            "gc",
            "store",
            serde_json::json!({
                "removed": report.removed,
                "freed_bytes": report.freed_bytes,
                "kept_blobs": report.kept_blobs,
                "retention": report.retention,
            }),
        );
        repro_evidence::audit::log(store, None, event)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !quiet || !report.missing.is_empty() {
        print!("{}", gc::render(&report, args.verbose));
    }
    Ok(repro_evidence::exit::OK)
}

/// `repro pin` (`pin = true`) and `repro unpin`. Returns the exit code.
/// Run `repro pin` (`pin_it`) or `repro unpin`.
pub fn pin(ctx: &Ctx, args: PinArgs, pin_it: bool) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let subject = args.target.clone();
    let target = PinTarget::parse(&args.target)?;
    // A pin must not race a collection that has already decided what to keep.
    let _lock = store.lock_shared()?;
    let line = if pin_it {
        gc::pin(store, &target)?
    } else {
        gc::unpin(store, &target)?
    };
    let kind = if pin_it { "pin" } else { "unpin" };
    let event =
        repro_evidence::audit::Event::new(kind, subject, serde_json::json!({ "result": line }));
    repro_evidence::audit::log(store, None, event)?;
    if !quiet {
        eprintln!("{line}");
    }
    Ok(repro_evidence::exit::OK)
}
