//! `repro promote` and `repro rollback`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use repro_evidence::exit::{self, UserError};
use repro_evidence::{env_vars, VersionRef};
use repro_governance::promote::{self, Actor, Emergency};
use repro_governance::{chain, policy, Stage};

use super::governance::{actor_key, lift, log_denied};
use super::{key_path, Ctx, StoreUse};

/// `repro promote` and `repro rollback` change stages in the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro rollback`
#[derive(Args)]
pub struct PromoteArgs {
    /// `name@version`
    pub model: String,
    /// The target stage: `validated`, `production` or `retired`
    #[arg(long, value_name = "STAGE")]
    pub to: String,
    /// Preview the decision under this policy file instead of the one in force; changes nothing
    #[arg(long, value_name = "FILE", conflicts_with = "emergency")]
    pub policy: Option<PathBuf>,
    /// Preview the decision under the policy in force; changes nothing
    #[arg(long)]
    pub dry_run: bool,
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

/// `repro promote`: exit 1 with every unmet requirement when refused.
pub fn run(ctx: &Ctx, args: PromoteArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let key_path = &key_path(args.key.clone())?;
    let m = VersionRef::parse(&args.model)?;
    let to: Stage = args.to.parse().map_err(lift)?;
    let (key, identity) = actor_key(store, key_path)?;
    let state = chain::checked(store).map_err(lift)?;
    let preview = args.policy.is_some() || args.dry_run;
    if args.policy.is_none() && state.policy.is_none() {
        let why = "no policy is in force\nhint: an administrator puts one in force with `repro policy set <file>`; `--policy <file>` only previews";
        log_denied(store, &key, &identity, "promote", &m.to_string(), why);
        return Err(UserError(format!("refused: {why}")).into());
    }
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
    let d = if preview {
        promote::preview(store, &m, to, &loaded).map_err(lift)?
    } else {
        match promote::promote(store, &actor, &m, to, &loaded, emergency) {
            Ok(d) => d,
            Err(e) => {
                if e.is_user() {
                    log_denied(
                        store,
                        &key,
                        &actor.identity,
                        "promote",
                        &m.to_string(),
                        &e.to_string(),
                    );
                }
                return Err(lift(e));
            }
        }
    };
    if preview {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        let unmet: Vec<_> = d.unmet().collect();
        eprintln!(
            "preview under policy {}: {m} {} be promoted to {to}; nothing changed",
            d.policy,
            if unmet.is_empty() {
                "would"
            } else {
                "would not"
            }
        );
        for c in &d.checked {
            eprintln!(
                "  {} {}: {}",
                if c.met { "ok" } else { "UNMET" },
                c.requirement,
                c.detail
            );
        }
        return Ok(if unmet.is_empty() {
            exit::OK
        } else {
            exit::FAILED
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    }
    if !d.promoted {
        let unmet: Vec<_> = d.unmet().collect();
        let why = unmet
            .iter()
            .map(|c| format!("{}: {}", c.requirement, c.detail))
            .collect::<Vec<_>>()
            .join("; ");
        log_denied(
            store,
            &key,
            &actor.identity,
            "promote",
            &m.to_string(),
            &format!("to {to}: unmet: {why}"),
        );
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
pub fn rollback(ctx: &Ctx, args: RollbackArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let key_path = &key_path(args.key.clone())?;
    let (key, identity) = actor_key(store, key_path)?;
    let state = chain::checked(store).map_err(lift)?;
    let subject = format!("{}@{}", args.name, args.to);
    if state.policy.is_none() {
        let why = "no policy is in force, so no rollback is allowed\nhint: an administrator puts one in force with `repro policy set <file>`";
        log_denied(store, &key, &identity, "rollback", &subject, why);
        return Err(UserError(format!("refused: {why}")).into());
    }
    let loaded = policy::load(store, None).map_err(lift)?;
    let actor = Actor {
        key: &key,
        identity,
    };
    let r = match promote::rollback(
        store,
        &actor,
        &args.name,
        &args.to,
        args.reason.as_deref(),
        &loaded,
    ) {
        Ok(r) => r,
        Err(e) => {
            if e.is_user() {
                log_denied(
                    store,
                    &key,
                    &actor.identity,
                    "rollback",
                    &subject,
                    &e.to_string(),
                );
            }
            return Err(lift(e));
        }
    };
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
