//! `repro policy set|show`: the promotion policy in force, kept in the
//! store and changed only by administrators.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::{env_vars, exit};
use repro_governance::{admin, chain};

use super::governance::{administer, lift};
use super::{Ctx, StoreUse};

/// `repro policy set` changes governance state in the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro policy` subcommands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Put a policy file in force (administrators only; with a quorum of 2, another confirms)
    Set {
        /// The policy file (TOML)
        file: PathBuf,
        /// Your signing key (an administrator's) [default: as for `build`]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Print the policy in force, its version and digest
    Show,
}

/// Run `repro policy`.
pub fn run(ctx: &Ctx, cmd: PolicyCommand) -> Result<u8> {
    let store = &*ctx.store()?;
    match cmd {
        PolicyCommand::Set { file, key } => {
            let bytes = std::fs::read(&file).map_err(|e| {
                repro_evidence::exit::UserError(format!("cannot read `{}`: {e}", file.display()))
            })?;
            let subject = file.display().to_string();
            administer(store, ctx.quiet, key, "policy-set", &subject, |_| {
                admin::set_policy(store, &file, &bytes)
            })
        }
        PolicyCommand::Show => {
            let state = chain::checked(store).map_err(lift)?;
            let Some((digest, version)) = &state.policy else {
                println!("no policy in force: an administrator runs `repro policy set <file>`");
                return Ok(exit::OK);
            };
            let d: repro_store::BlobDigest = digest.parse()?;
            eprintln!("policy in force: version {version}, {digest}");
            print!("{}", String::from_utf8_lossy(&store.read_blob(&d)?));
            Ok(exit::OK)
        }
    }
}
