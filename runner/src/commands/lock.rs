//! `repro lock`: pin every floating reference of a recipe; `repro lock
//! --check`: tell whether they still resolve to what the lock pins.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use repro_engine::drift::{self, InputState};
use repro_engine::{build, Engine};
use repro_evidence::exit;
use repro_recipes::{Kind, Lock, Recipe};
use repro_sandbox::BackendKind;
use tokio_util::sync::CancellationToken;

use super::{Ctx, StoreUse};
use crate::reporter::Console;

/// `repro lock` snapshots folders into the store.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro lock` arguments.
#[derive(Args)]
pub struct LockArgs {
    /// The recipe
    recipe: PathBuf,
    /// Do not write the lock file: exit 0 when every floating input still resolves to what it pins, 1 naming each one that moved
    #[arg(long)]
    check: bool,
    /// With `--check`: print one JSON document
    #[arg(long, requires = "check")]
    json: bool,
}

/// Run `repro lock`.
pub async fn run(ctx: &Ctx, args: LockArgs) -> Result<u8> {
    let recipe = repro_recipes::parse_file(&args.recipe)?;
    let engine = Arc::new(Engine::new(
        ctx.store()?,
        BackendKind::Native,
        Arc::new(Console::new(ctx.verbosity)),
        CancellationToken::new(),
    ));
    if args.check {
        return check(&engine, &recipe, args.json).await;
    }
    let (_, lock) = build::resolve(&engine, &recipe).await?;
    let path = recipe.lock_path();
    lock.write(&path)?;
    if !ctx.quiet {
        eprintln!("wrote `{}`", path.display());
    }
    print!("{}", lock.to_toml_string());
    Ok(exit::OK)
}

/// `repro lock --check`: resolve every floating input again (folders are
/// snapshotted into the store, images read without being registered) and
/// compare with the lock file, which is not written. Exit 0 when nothing
/// moved (or nothing floats), 1 when anything moved or there is no lock
/// file; a recipe or lock that does not parse is exit 2 (its diagnostic).
async fn check(engine: &Arc<Engine>, recipe: &Recipe, json: bool) -> Result<u8> {
    let lock_path = recipe.lock_path();
    let floating = recipe.floating().len();
    let lock = Lock::read(&lock_path)?;
    let states = match &lock {
        Some(lock) => drift::check(engine, recipe, lock).await?,
        None => Vec::new(),
    };
    let moved = states.iter().filter(|s| s.moved()).count();
    // Without a lock file nothing is locked, unless nothing floats.
    let any_moved = moved > 0 || (lock.is_none() && floating > 0);
    if json {
        let doc = serde_json::json!({
            "recipe": recipe.path.display().to_string(),
            "lock": lock_path.display().to_string(),
            "lock_found": lock.is_some(),
            "moved": any_moved,
            "inputs": states.iter().map(state_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for s in states.iter().filter(|s| s.moved()) {
            println!("{}", moved_line(s));
        }
        let lock_name = lock_path.display();
        let relock = format!("`repro lock {}`", recipe.path.display());
        let summary = if lock.is_none() && floating > 0 {
            format!("no lock file: nothing is locked yet (`{lock_name}` does not exist; {relock} writes it)")
        } else if floating == 0 {
            format!(
                "nothing floats: `{}` pins every input itself",
                recipe.path.display()
            )
        } else if moved > 0 {
            format!(
                "{moved} of {floating} floating input{} moved since `{lock_name}` was written; {relock} locks them as they are now",
                plural(floating)
            )
        } else if floating == 1 {
            format!("the floating input still resolves to what `{lock_name}` pins")
        } else {
            format!("all {floating} floating inputs still resolve to what `{lock_name}` pins")
        };
        println!("{summary}");
    }
    Ok(if any_moved { exit::FAILED } else { exit::OK })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One line about an input that moved, e.g. `data.train moved: 3 files
/// added, 1 removed, 2 changed (sha256:... -> sha256:...)`.
fn moved_line(s: &InputState) -> String {
    let digests = match s.locked {
        Some(was) => format!("{was} -> {}", s.now),
        None => format!("now {}", s.now),
    };
    let how = if let Some(was_ref) = &s.locked_reference {
        format!(
            "the lock pins `{was_ref}`, the recipe says `{}`",
            s.reference
        )
    } else if s.locked.is_none() {
        "the lock has no entry for it".to_string()
    } else if s.kind == Kind::Toolchain {
        "another image".to_string()
    } else {
        match s.changes {
            Some(c) => format!(
                "{} file{} added, {} removed, {} changed",
                c.added,
                plural(c.added),
                c.removed,
                c.changed
            ),
            None => "the locked tree is not in this store, so which files changed is unknown"
                .to_string(),
        }
    };
    format!("{} moved: {how} ({digests})", s.key)
}

fn state_json(s: &InputState) -> serde_json::Value {
    let count = |f: fn(&drift::TreeChanges) -> usize| s.changes.as_ref().map(f);
    serde_json::json!({
        "key": s.key,
        "kind": s.kind.to_string(),
        "reference": s.reference.to_string(),
        "locked_reference": s.locked_reference.as_ref().map(|r| r.to_string()),
        "locked": s.locked.map(|d| d.to_string()),
        "now": s.now.to_string(),
        "moved": s.moved(),
        "added": count(|c| c.added),
        "removed": count(|c| c.removed),
        "changed": count(|c| c.changed),
    })
}
