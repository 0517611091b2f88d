//! `repro approve`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use repro_evidence::audit::{self, Event};
use repro_evidence::exit::{self};
use repro_evidence::{env_vars, VersionRef};
use repro_governance::{approvals, registry};

use super::governance::{actor_key, lift};
use super::{key_path, Ctx, StoreUse};

/// `repro approve` adds an approval to the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro promote`
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
    /// Until when the approval counts (RFC 3339, e.g. `2027-06-30T00:00:00Z`); by default it does not expire
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// Your signing key [default: as for `build`]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// `repro approve`.
pub fn run(ctx: &Ctx, args: ApproveArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let key_path = &key_path(args.key.clone())?;
    let m = VersionRef::parse(&args.model)?;
    let (key, identity) = actor_key(store, key_path)?;
    repro_governance::chain::checked(store).map_err(lift)?;
    let record = registry::current_record(store, &m).map_err(lift)?;
    let opened = registry::open(store, &record).map_err(lift)?;
    let (digest, approval) = match approvals::approve_until(
        store,
        &key,
        &m,
        &record,
        &opened.builder,
        &args.role,
        &args.reason,
        args.expires.as_deref(),
    ) {
        Ok(x) => x,
        Err(e) => {
            if e.is_user() {
                super::governance::log_denied(
                    store,
                    &key,
                    &identity,
                    "approve",
                    &m.to_string(),
                    &format!("role {}: {e}", args.role),
                );
            }
            return Err(lift(e));
        }
    };
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
