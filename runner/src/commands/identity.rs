//! `repro identity add|revoke|list`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::audit::{self, Event};
use repro_evidence::exit::{self, UserError};
use repro_evidence::{env_vars, keys};
use repro_governance::identities;

use super::governance::{actor_key, lift};
use super::{key_path, Ctx, StoreUse};

/// `repro identity` changes governance state in the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro approve`
#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Register a public key as a named person with roles
    Add {
        /// The public key file (`.pub`, 64 hex digits)
        pubkey: PathBuf,
        /// The person's name
        #[arg(long)]
        name: String,
        /// The person's e-mail
        #[arg(long)]
        email: String,
        /// A role the policy asks for, e.g. `validator` (repeatable)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Your signing key (signs the audit entry) [default: as for `build`]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Revoke a registered key: nothing it signed counts any more
    Revoke {
        /// The key id (`sha256:<hex>`)
        keyid: String,
        /// Why
        #[arg(long)]
        reason: String,
        /// Your signing key (signs the audit entry) [default: as for `build`]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// List the registered identities
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `repro identity`; `key_path` resolves `--key` as the runner does.
pub fn run(ctx: &Ctx, cmd: IdentityCommand) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    match cmd {
        IdentityCommand::Add {
            pubkey,
            name,
            email,
            roles,
            key,
        } => {
            let (key, actor) = actor_key(store, &key_path(key)?)?;
            let text = std::fs::read_to_string(&pubkey)
                .map_err(|e| UserError(format!("cannot read `{}`: {e}", pubkey.display())))?;
            let public = keys::parse_public(&text)
                .map_err(|e| UserError(format!("`{}`: {e}", pubkey.display())))?;
            let reg = identities::add(store, &public, &name, &email, &roles, &actor.keyid)
                .map_err(lift)?;
            audit::append(
                store,
                &key,
                &actor,
                Event::new(
                    "identity-add",
                    reg.keyid.clone(),
                    serde_json::json!({"name": reg.name, "email": reg.email, "roles": reg.roles}),
                ),
            )?;
            if !quiet {
                eprintln!(
                    "registered {} <{}> with roles: {}",
                    reg.name,
                    reg.email,
                    reg.roles.join(", ")
                );
            }
            println!("{}", reg.keyid);
            Ok(exit::OK)
        }
        IdentityCommand::Revoke { keyid, reason, key } => {
            let (key, actor) = actor_key(store, &key_path(key)?)?;
            let reg = identities::revoke(store, &keyid, &reason, &actor.keyid).map_err(lift)?;
            audit::append(
                store,
                &key,
                &actor,
                Event::new(
                    "identity-revoke",
                    reg.keyid.clone(),
                    serde_json::json!({"name": reg.name, "email": reg.email, "reason": reason}),
                ),
            )?;
            if !quiet {
                eprintln!("revoked {} <{}> ({})", reg.name, reg.email, reg.keyid);
            }
            Ok(exit::OK)
        }
        IdentityCommand::List { json } => {
            let all = identities::list(store).map_err(lift)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(exit::OK);
            }
            if all.is_empty() {
                println!("no registered identities");
            }
            for r in &all {
                let state = match &r.revoked {
                    Some(rv) => format!("REVOKED at {}: {}", rv.time, rv.reason),
                    None => "active".to_string(),
                };
                println!(
                    "{}  {} <{}>  roles: {}  {state}",
                    r.keyid,
                    r.name,
                    r.email,
                    r.roles.join(", ")
                );
            }
            Ok(exit::OK)
        }
    }
}
