//! `repro registry list|show`.

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::exit::{self};
use repro_evidence::VersionRef;
use repro_governance::registry;

use super::governance::lift;
use super::{Ctx, StoreUse};

/// `repro registry` only reads.
pub const STORE: StoreUse = StoreUse::Open;

/// `repro identity ...`
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
        /// `name@version`; with `--at`, the model's `name`
        model: String,
        /// What was in which stage at this time (RFC 3339), who had approved it and under which policy, from the signed audit log
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `repro registry`.
pub fn run(ctx: &Ctx, cmd: RegistryCommand) -> Result<u8> {
    let store = &*ctx.store()?;
    let as_of = matches!(cmd, RegistryCommand::Show { at: Some(_), .. });
    if !as_of {
        // Stages and approvals are shown only as the signed log backs them
        // (`--at` answers from the log alone).
        repro_governance::chain::checked_if_governed(store).map_err(lift)?;
    }
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
        RegistryCommand::Show {
            model,
            at: Some(at),
            json,
        } => {
            let name = model.split('@').next().unwrap_or(&model);
            let a = repro_governance::asof::as_of(store, name, &at).map_err(lift)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
                return Ok(exit::OK);
            }
            println!("{name} at {at} (from the signed audit log)");
            match &a.production {
                Some(p) => println!("  production: {name}@{} (record {})", p.version, p.record),
                None => println!("  production: none"),
            }
            for s in &a.stages {
                println!("  {}: {name}@{} (record {})", s.stage, s.version, s.record);
            }
            match &a.policy {
                Some((d, v)) => println!("  policy in force: version {v}, {d}"),
                None => println!("  policy in force: none"),
            }
            println!("  approvals logged by then:");
            for ap in &a.approvals {
                println!(
                    "    {}  {name}@{} role {} by {} (record {}): {}",
                    ap.time, ap.version, ap.role, ap.approver, ap.record, ap.reason
                );
            }
            println!("  decisions logged by then:");
            for d in &a.decisions {
                println!(
                    "    {}  {} {name}@{} -> {} by {}{}{}",
                    d.time,
                    d.action,
                    d.version,
                    d.to,
                    d.actor,
                    d.policy
                        .as_ref()
                        .map(|p| format!(" (policy {p})"))
                        .unwrap_or_default(),
                    d.reason
                        .as_ref()
                        .map(|r| format!(" reason: {r}"))
                        .unwrap_or_default()
                );
            }
            Ok(exit::OK)
        }
        RegistryCommand::Show {
            model,
            at: None,
            json,
        } => {
            let m = VersionRef::parse(&model)?;
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
                    "    {}  {} {} -> {} by {}{}{}",
                    h.time,
                    h.action,
                    h.from,
                    h.to,
                    h.actor,
                    h.policy
                        .as_ref()
                        .map(|p| format!(" (policy {p})"))
                        .unwrap_or_default(),
                    h.reason
                        .as_ref()
                        .map(|r| format!(" reason: {r}"))
                        .unwrap_or_default()
                );
            }
            if !s.emergency_reviews.is_empty() {
                println!("  emergency reviews:");
                for r in &s.emergency_reviews {
                    println!("    promoted {}: {}", r.promoted_at, r.status);
                }
            }
            Ok(exit::OK)
        }
    }
}
