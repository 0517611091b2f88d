//! `repro status`: one overview of every model in the store (stages,
//! verifications, revalidation, expiring approvals, overdue emergency
//! reviews, moved inputs), for a person and for a scheduled CI job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use repro_engine::{build, Engine};
use repro_evidence::exit;
use repro_governance::status::{self, ModelStatus, RecipeInputs, Status, VersionStatus};
use repro_recipes::Kind;
use repro_sandbox::BackendKind;
use tokio_util::sync::CancellationToken;

use super::governance::lift;
use super::{Ctx, StoreUse};
use crate::reporter::{Console, Verbosity};

/// `repro status` only reads, unless `--recipe` is given: resolving a
/// recipe's inputs snapshots its folders and imports its image archives
/// into the store, as `repro lock` does.
pub fn store_use(args: &StatusArgs) -> StoreUse {
    if args.recipes.is_empty() {
        StoreUse::Open
    } else {
        StoreUse::Shared
    }
}

/// `repro status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    /// Print one JSON document
    #[arg(long)]
    json: bool,
    /// A model's recipe: resolve its floating inputs now (the lock file is not written) and say which moved since the model's newest version (repeatable, one per model)
    #[arg(long = "recipe", value_name = "RECIPE")]
    recipes: Vec<PathBuf>,
    /// List approvals that expire within this long (or have expired): a number and a unit, `s`, `m`, `h` or `d`
    #[arg(long, default_value = "14d", value_name = "DURATION", value_parser = parse_within)]
    within: Duration,
    /// Exit 1 when anything needs attention: a revalidation due, a newest verification that did not reproduce, an approval expiring or expired, an emergency review overdue, inputs moved
    #[arg(long)]
    strict: bool,
}

fn parse_within(text: &str) -> std::result::Result<Duration, String> {
    repro_recipes::parse_duration(text).map_err(|_| {
        format!("`{text}` is not a duration greater than zero (for example `14d`, `36h`)")
    })
}

/// Run `repro status`.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<u8> {
    let store = ctx.store()?;
    // Stages, identities and the policy are shown only as the signed log
    // backs them (as `repro registry list`).
    repro_governance::chain::checked_if_governed(&store).map_err(lift)?;
    let mut recipes = Vec::new();
    if !args.recipes.is_empty() {
        // Notes ("snapshotting ...") go to stderr; never onto a JSON stdout.
        let verbosity = if args.json {
            Verbosity::Quiet
        } else {
            ctx.verbosity
        };
        let engine = Arc::new(Engine::new(
            Arc::clone(&store),
            BackendKind::Native,
            Arc::new(Console::new(verbosity)),
            CancellationToken::new(),
        ));
        for path in &args.recipes {
            let recipe = repro_recipes::parse_file(path)?;
            let (pins, _lock) = build::resolve(&engine, &recipe).await?;
            let references: BTreeMap<String, String> = recipe
                .floating()
                .into_iter()
                .map(|f| {
                    let kind = match f.kind {
                        Kind::Toolchain => "toolchains",
                        Kind::Data => "data",
                        Kind::Code => "code",
                    };
                    (format!("{kind}.{}", f.name), f.reference.to_string())
                })
                .collect();
            recipes.push(RecipeInputs {
                recipe: path.display().to_string(),
                model: recipe.model.name.clone(),
                pins,
                references,
            });
        }
    }
    let opts = status::Options {
        now: time::OffsetDateTime::now_utc(),
        within: args.within,
        recipes,
    };
    let s = status::status(&store, &opts).map_err(lift)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", text(&s));
    }
    Ok(if args.strict && s.attention > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// The text report: a header, one block per model, what needs attention.
fn text(s: &Status) -> String {
    let mut out = String::new();
    let policy = match &s.policy {
        None => "no policy".to_string(),
        Some(p) => match &p.revalidate_every {
            Some(e) => format!("policy {}: revalidate every {e}", p.digest),
            None => format!("policy {}: no `revalidate_every`", p.digest),
        },
    };
    out.push_str(&format!(
        "status at {} ({policy}; approvals expiring within {})\n",
        s.generated, s.within
    ));
    if s.models.is_empty() {
        out.push_str("\nno model versions\n");
    }
    for m in &s.models {
        out.push('\n');
        model(&mut out, m);
    }
    out.push('\n');
    if s.attention == 0 {
        out.push_str("nothing needs attention\n");
    } else {
        out.push_str(&format!(
            "{} thing{} need{} attention\n",
            s.attention,
            if s.attention == 1 { "" } else { "s" },
            if s.attention == 1 { "s" } else { "" }
        ));
    }
    out
}

/// A model's block: each version by stage with its verifications, the
/// inputs, and what needs attention (expiring approvals and overdue
/// reviews are there, with everything `--json` says of them but digests).
fn model(out: &mut String, m: &ModelStatus) {
    out.push_str(&format!("{}\n", m.name));
    match &m.stages.production {
        Some(v) => version(out, &m.name, "production", v),
        None => out.push_str("  production  none\n"),
    }
    for v in &m.stages.validated {
        version(out, &m.name, "validated", v);
    }
    for v in &m.candidates {
        version(out, &m.name, "candidate", v);
    }
    for v in &m.stages.retired {
        version(out, &m.name, "retired", v);
    }
    if let Some(i) = &m.inputs_moved {
        if i.moved.is_empty() {
            out.push_str(&format!(
                "  inputs: none moved since {}@{} (per {})\n",
                m.name, i.version, i.recipe
            ));
        } else {
            out.push_str(&format!(
                "  inputs: MOVED since {}@{} (record {}, per {}):\n",
                m.name, i.version, i.record, i.recipe
            ));
            for x in &i.moved {
                out.push_str(&format!(
                    "    {}{}: {} in the record, {} now\n",
                    x.input,
                    x.reference
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                    x.recorded.as_deref().unwrap_or("none"),
                    x.now.as_deref().unwrap_or("none"),
                ));
            }
        }
    }
    if !m.attention.is_empty() {
        out.push_str("  needs attention:\n");
        for a in &m.attention {
            out.push_str(&format!("    - {a}\n"));
        }
    }
}

/// How many verifications of a version the text lists (`--json` has all).
const SHOWN_VERIFICATIONS: usize = 3;

fn version(out: &mut String, name: &str, stage: &str, v: &VersionStatus) {
    out.push_str(&format!(
        "  {stage:<10}  {name}@{}  record {}\n",
        v.version, v.record
    ));
    if v.verifications.is_empty() {
        out.push_str("    never verified\n");
    }
    for x in v.verifications.iter().take(SHOWN_VERIFICATIONS) {
        out.push_str(&format!(
            "    verified {}: {} by {}\n",
            x.time, x.result, x.signer
        ));
    }
    if v.verifications.len() > SHOWN_VERIFICATIONS {
        out.push_str(&format!(
            "    ... and {} earlier (see --json)\n",
            v.verifications.len() - SHOWN_VERIFICATIONS
        ));
    }
    match (&v.revalidate_by, v.revalidation_due) {
        (Some(by), true) => out.push_str(&format!("    REVALIDATION DUE since {by}\n")),
        (None, true) => out.push_str("    REVALIDATION DUE: never reproduced\n"),
        (Some(by), false) => out.push_str(&format!("    revalidate by {by}\n")),
        (None, false) => {}
    }
}
