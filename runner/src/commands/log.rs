//! `repro log`: print what a step wrote to stdout and stderr, as the store
//! keeps it (re-hashed before it is printed).

use std::io::Write;

use anyhow::Result;
use clap::Args;
use repro_evidence::exit::{self, CannotVerify, UserError};
use repro_evidence::record::open_record;
use repro_store::{BlobDigest, Hash, StepKey, Store};

use super::{Ctx, StoreUse};

/// `repro log` only reads.
pub const STORE: StoreUse = StoreUse::Open;

/// `repro log` arguments.
#[derive(Args)]
pub struct LogArgs {
    /// A version (`name@version`), a record digest, a step key or a log's digest (`sha256:...`)
    what: String,
    /// With a version or a record: the step whose log to print [default: every step's, each under a header]
    step: Option<String>,
}

/// Run `repro log`.
pub fn run(ctx: &Ctx, args: LogArgs) -> Result<u8> {
    let store = ctx.store()?;
    let mut out = std::io::stdout().lock();
    if let Some(hex) = args.what.strip_prefix("sha256:") {
        let hash = Hash::from_hex(hex).map_err(|e| UserError(format!("`{}`: {e}", args.what)))?;
        // A step key names its cached result's log; any other digest must
        // be a record or the log itself.
        if let Some(r) = store.ac_get(&StepKey::from_hash(hash))? {
            anyhow::ensure!(
                args.step.is_none(),
                UserError(format!(
                    "`{}` is a step key: it names one step already\nhint: drop `{}`",
                    args.what,
                    args.step.unwrap_or_default()
                ))
            );
            out.write_all(&read_log(&store, &r.log)?)?;
            return Ok(exit::OK);
        }
        if open_record(&store, &args.what, &[]).is_err() {
            anyhow::ensure!(
                args.step.is_none(),
                UserError(format!(
                    "`{}` is not a record: only a record has steps",
                    args.what
                ))
            );
            let d = BlobDigest::from_hash(hash);
            if !store.has_blob(&d) {
                return Err(UserError(format!(
                    "`{}` is neither a record, a step key nor a log in this store",
                    args.what
                ))
                .into());
            }
            out.write_all(&read_log(&store, &d)?)?;
            return Ok(exit::OK);
        }
    }
    let record = open_record(&store, &args.what, &[])?;
    let steps = record.statement.steps()?;
    let chosen: Vec<_> = match &args.step {
        Some(name) => {
            let s = steps.iter().find(|s| &s.name == name).ok_or_else(|| {
                UserError(format!(
                    "`{}` has no step `{name}`\nhint: its steps are {}",
                    args.what,
                    steps
                        .iter()
                        .map(|s| format!("`{}`", s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            vec![s]
        }
        None => steps.iter().collect(),
    };
    let headers = args.step.is_none();
    for s in chosen {
        let log = s.log.ok_or_else(|| {
            CannotVerify(format!(
                "the record of `{}` names no log for step `{}`",
                args.what, s.name
            ))
        })?;
        if headers {
            writeln!(out, "==> step {} ({log}) <==", s.name)?;
        }
        out.write_all(&read_log(&store, &log)?)?;
    }
    Ok(exit::OK)
}

/// The log `d`, re-hashed: a missing or altered log is an error naming it
/// (exit 3), never printed.
fn read_log(store: &Store, d: &BlobDigest) -> Result<Vec<u8>> {
    store.read_blob(d).map_err(|e| {
        anyhow::Error::new(e).context(CannotVerify(format!("the log {d} cannot be read intact")))
    })
}
