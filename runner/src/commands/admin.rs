//! `repro governance init|confirm|show`: the governance root.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::{env_vars, exit};
use repro_governance::admin::{self, Outcome};
use repro_governance::chain;
use repro_governance::promote::Actor;

use super::governance::{actor_key, describe, lift, log_denied};
use super::{key_path, Ctx, StoreUse};

/// `repro governance` changes governance state in the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro governance` subcommands.
#[derive(Subcommand)]
pub enum GovernanceCommand {
    /// Start governance once: register the administrators and the quorum of `admins.toml` (you must be one of them)
    Init {
        /// The admins file: `quorum = 1|2` and `[[admin]]` tables with `name`, `email` and `key` (a `.pub` file)
        admins: PathBuf,
        /// Your signing key (one of the administrators') [default: as for `build`]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Confirm another administrator's proposed change (quorum of 2)
    Confirm {
        /// The proposal id that `repro identity` or `repro policy set` printed
        id: String,
        /// Your signing key (an administrator's) [default: as for `build`]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Show the administrators, the quorum, the policy in force and the pending proposals, from the audit log
    Show {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Run `repro governance`.
pub fn run(ctx: &Ctx, cmd: GovernanceCommand) -> Result<u8> {
    let store = &*ctx.store()?;
    match cmd {
        GovernanceCommand::Init { admins, key } => {
            let (key, identity) = actor_key(store, &key_path(key)?)?;
            let actor = Actor {
                key: &key,
                identity: identity.clone(),
            };
            let (quorum, list) = admin::read_admins(&admins).map_err(lift)?;
            let root = match admin::init(store, &actor, quorum, &list) {
                Ok(r) => r,
                Err(e) => {
                    if e.is_user() {
                        log_denied(
                            store,
                            &key,
                            &identity,
                            "governance-init",
                            "governance",
                            &e.to_string(),
                        );
                    }
                    return Err(lift(e));
                }
            };
            if !ctx.quiet {
                eprintln!(
                    "governance started: {} administrator{}, quorum {}",
                    root.admins.len(),
                    if root.admins.len() == 1 { "" } else { "s" },
                    root.quorum
                );
            }
            Ok(exit::OK)
        }
        GovernanceCommand::Confirm { id, key } => {
            let (key, identity) = actor_key(store, &key_path(key)?)?;
            let actor = Actor {
                key: &key,
                identity: identity.clone(),
            };
            match admin::confirm(store, &actor, &id) {
                Ok(Outcome::Applied(c)) => {
                    if !ctx.quiet {
                        eprintln!("{}", describe(&c));
                    }
                    Ok(exit::OK)
                }
                Ok(Outcome::Proposed(id)) => {
                    println!("{id}");
                    Ok(exit::OK)
                }
                Err(e) => {
                    if e.is_user() {
                        log_denied(
                            store,
                            &key,
                            &identity,
                            "governance-confirm",
                            &id,
                            &e.to_string(),
                        );
                    }
                    Err(lift(e))
                }
            }
        }
        GovernanceCommand::Show { json } => {
            let state = chain::checked(store).map_err(lift)?;
            let admins: Vec<_> = state
                .identities
                .values()
                .filter(|r| state.admin(&r.keyid).is_some())
                .collect();
            let pending: Vec<_> = state
                .pending
                .values()
                .map(|p| {
                    serde_json::json!({"id": p.id, "by": p.by, "time": p.time, "change": p.change})
                })
                .collect();
            if json {
                let doc = serde_json::json!({
                    "initialised": state.root.is_some(),
                    "quorum": state.quorum(),
                    "admins": admins,
                    "policy": state.policy.as_ref().map(|(d, v)| serde_json::json!({"digest": d, "version": v})),
                    "pending": pending,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(exit::OK);
            }
            if state.root.is_none() {
                println!("no governance root: run `repro governance init <admins.toml>`");
                return Ok(exit::OK);
            }
            println!("quorum: {}", state.quorum());
            for a in admins {
                println!("admin: {} <{}> ({})", a.name, a.email, a.keyid);
            }
            match &state.policy {
                Some((d, v)) => println!("policy in force: version {v}, {d}"),
                None => {
                    println!("policy in force: none (an administrator runs `repro policy set`)")
                }
            }
            for p in state.pending.values() {
                println!(
                    "pending: {} {} by {} at {}",
                    p.id,
                    p.change.kind(),
                    p.by,
                    p.time
                );
            }
            Ok(exit::OK)
        }
    }
}
