//! The governance commands: `registry`, `identity`, `approve`, `promote`,
//! `rollback`. Thin: they map arguments onto the library and print.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use repro_store::Store;

use super::promote::{self, Actor, Emergency};
use super::{approvals, identities, policy, registry, Error, ModelRef, Stage};
use crate::attest::{self, Identity};
use crate::audit::{self, Event};
use crate::env_vars;
use crate::exit::{self, UserError};
use crate::keys;

/// `repro registry ...`
#[derive(Subcommand)]
pub enum RegistryCommand {
    /// List every model version with its stage, owner and record
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a version: stage, owner, record, every record of the version, approvals (and whether each counts), reproductions, history
    Show {
        /// `name@version`
        model: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `repro identity ...`
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

/// `repro approve`
#[derive(Args)]
pub struct ApproveArgs {
    /// `name@version`
    pub model: String,
    /// The role you approve in (you must be registered with it)
    #[arg(long)]
    pub role: String,
    /// Why you approve
    #[arg(long)]
    pub reason: String,
    /// Your signing key [default: as for `build`]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// `repro promote`
#[derive(Args)]
pub struct PromoteArgs {
    /// `name@version`
    pub model: String,
    /// The target stage: `validated`, `production` or `retired`
    #[arg(long, value_name = "STAGE")]
    pub to: String,
    /// The policy file [default: `v1/policy.toml` in the store]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Bypass the gate; needs an approval in the role `emergency` for this record, and `--reason`
    #[arg(long, requires = "reason")]
    pub emergency: bool,
    /// Why (required with `--emergency`)
    #[arg(long)]
    pub reason: Option<String>,
    /// Print the decision as JSON
    #[arg(long)]
    pub json: bool,
    /// Your signing key (signs the audit entry) [default: as for `build`]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// `repro rollback`
#[derive(Args)]
pub struct RollbackArgs {
    /// The model name
    pub name: String,
    /// The version to make production again
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// Why
    #[arg(long)]
    pub reason: Option<String>,
    /// Your signing key (signs the audit entry) [default: as for `build`]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// Map a governance error onto the runner's exit codes.
fn lift(e: Error) -> anyhow::Error {
    match e {
        e if e.is_user() => UserError(e.to_string()).into(),
        Error::Other(e) => e,
        Error::Store(e) => e.into(),
        e => e.into(),
    }
}

/// The key at `path` and the identity it acts as (registered, else the one
/// written by `repro key generate`).
fn actor_key(store: &Store, path: &Path) -> anyhow::Result<(SigningKey, Identity)> {
    let key = keys::load(path)?;
    let keyid = keys::key_id(&key.verifying_key()).to_string();
    let identity = match identities::get(store, &keyid).map_err(lift)? {
        Some(r) => r.identity(),
        None => attest::identity_of(path, &key),
    };
    Ok((key, identity))
}

/// `repro registry`.
pub fn registry_cmd(store: &Store, cmd: RegistryCommand) -> anyhow::Result<u8> {
    match cmd {
        RegistryCommand::List { json } => {
            let rows = registry::list(store).map_err(lift)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(exit::OK);
            }
            if rows.is_empty() {
                println!("no model versions");
            }
            for r in &rows {
                println!(
                    "{}@{}  {}  owner: {}  record {}",
                    r.name,
                    r.version,
                    r.stage,
                    r.owner.as_deref().unwrap_or("(none)"),
                    r.record
                );
            }
            Ok(exit::OK)
        }
        RegistryCommand::Show { model, json } => {
            let m = ModelRef::parse(&model).map_err(lift)?;
            let s = registry::show(store, &m).map_err(lift)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(exit::OK);
            }
            println!("{}", s.model);
            println!("  stage:   {}", s.stage);
            println!("  owner:   {}", s.owner.as_deref().unwrap_or("(none)"));
            println!("  record:  {}", s.record);
            if let Some(c) = &s.current_record {
                println!("  rebuilt since: the current record is {c}");
            }
            println!(
                "  records: {} (every build of the version, oldest first)",
                s.records.len()
            );
            for r in &s.records {
                let mut marks = Vec::new();
                if r.latest {
                    marks.push("latest");
                }
                if r.staged {
                    marks.push("staged");
                }
                println!(
                    "    {}  finished {}{}",
                    r.record,
                    r.finished_on.as_deref().unwrap_or("(unreadable)"),
                    if marks.is_empty() {
                        String::new()
                    } else {
                        format!("  {}", marks.join(", "))
                    }
                );
            }
            println!("  builder: key {}", s.builder);
            println!(
                "  model card: {}",
                if s.model_card { "present" } else { "none" }
            );
            println!("  approvals:");
            if s.approvals.is_empty() {
                println!("    none");
            }
            for j in &s.approvals {
                let what = match &j.approval {
                    Some(a) => format!("{} by {} at {}: {}", a.role, a.approver, a.time, a.reason),
                    None => "(unreadable)".to_string(),
                };
                match &j.why_not {
                    None => println!("    counts          {what}"),
                    Some(why) => println!("    does not count  {what} [{why}]"),
                }
            }
            println!("  reproductions:");
            if s.reproductions.is_empty() {
                println!("    none");
            }
            for r in &s.reproductions {
                let what = format!("{} by {} at {}", r.result, r.verifier, r.time);
                match &r.why_not {
                    None => println!("    counts          {what}"),
                    Some(why) => println!("    does not count  {what} [{why}]"),
                }
            }
            println!("  history:");
            if s.history.is_empty() {
                println!("    none");
            }
            for h in &s.history {
                println!(
                    "    {}  {} {} -> {} by {}{}",
                    h.time,
                    h.action,
                    h.from,
                    h.to,
                    h.actor,
                    h.policy
                        .as_ref()
                        .map(|p| format!(" (policy {p})"))
                        .unwrap_or_default()
                );
            }
            Ok(exit::OK)
        }
    }
}

/// `repro identity`; `key_path` resolves `--key` as the runner does.
pub fn identity_cmd(
    store: &Store,
    quiet: bool,
    cmd: IdentityCommand,
    key_path: impl Fn(Option<PathBuf>) -> anyhow::Result<PathBuf>,
) -> anyhow::Result<u8> {
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

/// `repro approve`.
pub fn approve_cmd(
    store: &Store,
    quiet: bool,
    args: &ApproveArgs,
    key_path: &Path,
) -> anyhow::Result<u8> {
    let m = ModelRef::parse(&args.model).map_err(lift)?;
    let (key, _) = actor_key(store, key_path)?;
    let record = registry::current_record(store, &m).map_err(lift)?;
    let opened = registry::open(store, &record).map_err(lift)?;
    let (digest, approval) = approvals::approve(
        store,
        &key,
        &m,
        &record,
        &opened.builder,
        &args.role,
        &args.reason,
    )
    .map_err(lift)?;
    audit::append(
        store,
        &key,
        &approval.approver,
        Event::new(
            "approve",
            m.to_string(),
            serde_json::json!({
                "record": record.to_string(),
                "approval": digest,
                "role": approval.role,
                "reason": approval.reason,
            }),
        ),
    )?;
    if !quiet {
        eprintln!(
            "{} approved {m} as `{}` (record {record})",
            approval.approver, approval.role
        );
    }
    println!("{digest}");
    Ok(exit::OK)
}

/// `repro promote`: exit 1 with every unmet requirement when refused.
pub fn promote_cmd(
    store: &Store,
    quiet: bool,
    args: &PromoteArgs,
    key_path: &Path,
) -> anyhow::Result<u8> {
    let m = ModelRef::parse(&args.model).map_err(lift)?;
    let to: Stage = args.to.parse().map_err(lift)?;
    let (key, identity) = actor_key(store, key_path)?;
    let loaded = policy::load(store, args.policy.as_deref()).map_err(lift)?;
    let emergency = if args.emergency {
        Some(Emergency {
            reason: args.reason.as_deref().unwrap_or_default(),
        })
    } else {
        None
    };
    let actor = Actor {
        key: &key,
        identity,
    };
    let d = promote::promote(store, &actor, &m, to, &loaded, emergency).map_err(lift)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    }
    if !d.promoted {
        let unmet: Vec<_> = d.unmet().collect();
        eprintln!(
            "error: {m} cannot be promoted to {to}: {} requirement{} unmet (policy {})",
            unmet.len(),
            if unmet.len() == 1 { "" } else { "s" },
            d.policy
        );
        for c in unmet {
            eprintln!("  - {}: {}", c.requirement, c.detail);
        }
        return Ok(exit::FAILED);
    }
    if !quiet && !args.json {
        for c in &d.checked {
            eprintln!("  ok {}: {}", c.requirement, c.detail);
        }
        if let Some(v) = &d.displaced {
            eprintln!("{}@{v} moved from production to validated", m.name);
        }
        eprintln!(
            "{}{m}: {} -> {to} (policy {})",
            if d.emergency { "EMERGENCY " } else { "" },
            d.from,
            d.policy
        );
    }
    Ok(exit::OK)
}

/// `repro rollback`.
pub fn rollback_cmd(
    store: &Store,
    quiet: bool,
    args: &RollbackArgs,
    key_path: &Path,
) -> anyhow::Result<u8> {
    let (key, identity) = actor_key(store, key_path)?;
    let actor = Actor {
        key: &key,
        identity,
    };
    let r = promote::rollback(store, &actor, &args.name, &args.to, args.reason.as_deref())
        .map_err(lift)?;
    if !quiet {
        if let Some(v) = &r.displaced {
            eprintln!("{}@{v} moved from production to validated", args.name);
        }
        eprintln!(
            "{} is production again (record {}, passed the gate at {})",
            r.model, r.record, r.gate_passed
        );
    }
    Ok(exit::OK)
}
