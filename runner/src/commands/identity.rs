//! `repro identity add|revoke|roles|list`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::exit::{self, UserError};
use repro_evidence::{env_vars, keys};
use repro_governance::{admin, identities};

use super::governance::{administer, lift};
use super::{Ctx, StoreUse};

/// `repro identity` changes governance state in the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro approve`
#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Register a public key as a named person with roles (administrators only)
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
    /// Revoke a registered key: nothing it signed counts any more (administrators only)
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
    /// Give a registered key exactly these roles (administrators only)
    Roles {
        /// The key id (`sha256:<hex>`)
        keyid: String,
        /// A role (repeatable); none takes every role away
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Your signing key (an administrator's) [default: as for `build`]
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

/// `repro identity`. Adding, revoking and changing roles are changes only
/// administrators make (see `repro governance`).
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
            let text = std::fs::read_to_string(&pubkey)
                .map_err(|e| UserError(format!("cannot read `{}`: {e}", pubkey.display())))?;
            let public = keys::parse_public(&text)
                .map_err(|e| UserError(format!("`{}`: {e}", pubkey.display())))?;
            let subject = keys::key_id(&public).to_string();
            administer(store, quiet, key, "identity-add", &subject, |actor| {
                admin::add_identity(actor, &public, &name, &email, &roles)
            })
        }
        IdentityCommand::Revoke { keyid, reason, key } => {
            administer(store, quiet, key, "identity-revoke", &keyid, |actor| {
                admin::revoke_identity(store, actor, &keyid, &reason)
            })
        }
        IdentityCommand::Roles { keyid, roles, key } => {
            administer(store, quiet, key, "identity-roles", &keyid, |_| {
                admin::set_roles(store, &keyid, &roles)
            })
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
