//! `repro build`: run every step of a recipe in the sandbox and sign a record.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use repro_engine::{build, engine, BuildOptions};
use repro_evidence::{audit, env_vars, exit, keys};
use repro_store::Store;
use tokio_util::sync::CancellationToken;

use super::{cores, key_path, on_ctrl_c, Ctx, SandboxArg, StoreUse};
use crate::reporter::{Console, Verbosity};
use repro_engine::events::Reporter;
use repro_engine::StepResult;
use repro_exchange::registry;

/// The store lock `repro build` holds for its whole run (`repro gc` waits).
pub const STORE: StoreUse = StoreUse::Shared;

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    sandbox: SandboxArg,
    #[command(flatten)]
    executor: super::ExecutorArgs,
    /// The recipe
    recipe: PathBuf,
    /// Refuse any input that the recipe or its lock file does not pin by digest
    #[arg(long)]
    locked: bool,
    /// Run every step even if the action cache has its result
    #[arg(long)]
    no_cache: bool,
    /// Steps to run at once [default: the number of CPUs]
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Print one JSON document with each step's key, status, timing and outputs
    #[arg(long)]
    json: bool,
    /// The version to build, instead of the recipe's `model.version`; it (and the recipe's) may hold `{date}`, `{inputs}` and `{data}`, e.g. `1.1.0+data.{data}`
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// The signing key [default: $XDG_CONFIG_HOME/repro/signing.key or ~/.config/repro/signing.key]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Take step results from, and publish new ones to, an OCI registry repository (`host[:port]/repo`)
    #[arg(long, value_name = "REGISTRY/REPO")]
    remote: Option<String>,
    #[command(flatten)]
    registry: super::push::RegistryArgs,
}

/// Run `repro build`.
pub async fn run(ctx: &Ctx, args: BuildArgs) -> Result<u8> {
    let executor = args.executor.settle()?;
    let store = ctx.store()?;
    let verbosity = ctx.verbosity;
    let key_file = key_path(args.key)?;
    let key = keys::load(&key_file)?;
    let mut recipe = repro_recipes::parse_file(&args.recipe)?;
    let graph = engine::check_graph(&recipe)?;
    // Refused before anything is resolved; filled in once it is.
    let version = build::version_of(&recipe, args.version.as_deref())?;
    let lock_path = recipe.lock_path();
    let verbosity = if args.json {
        Verbosity::Quiet
    } else {
        verbosity
    };
    let console: Arc<dyn Reporter> = Arc::new(Console::new(verbosity));
    let cancel = CancellationToken::new();
    on_ctrl_c(cancel.clone());
    let remote_cache = match &args.remote {
        Some(t) => Some(registry::cache(t, &args.registry.options(), Arc::clone(&store)).await?),
        None => None,
    };
    let engine = Arc::new(
        executor
            .engine(
                Arc::clone(&store),
                args.sandbox.kind,
                &args.registry.options(),
                console,
                cancel,
            )
            .await?
            .with_remote(remote_cache)
            .with_image_source(Some(args.registry.image_source())),
    );
    let (pins, lock_bytes) = if args.locked {
        let pins = build::resolve_locked(&engine, &recipe).await?;
        recipe.model.version = version.expand(&recipe, &pins);
        let bytes = std::fs::read(&lock_path).ok();
        (pins, bytes)
    } else {
        let (pins, lock) = build::resolve(&engine, &recipe).await?;
        // The version every record, ref, message and audit entry uses.
        recipe.model.version = version.expand(&recipe, &pins);
        let text = lock.to_toml_string();
        let bytes = (!recipe.floating().is_empty()).then(|| text.clone().into_bytes());
        // A version keeps naming the inputs it was first built from: other
        // inputs are refused before the lock file moves to them.
        build::check_version(&store, &recipe, bytes.as_deref(), &pins)?;
        if bytes.is_some()
            && std::fs::read_to_string(&lock_path).ok().as_deref() != Some(text.as_str())
        {
            lock.write(&lock_path)?;
            engine.note(format!("updated `{}`", lock_path.display()));
        }
        (pins, bytes)
    };
    // Shown on every build's progress, and also beside `--json` when it
    // is not the recipe's as written.
    if !ctx.quiet && (!args.json || version.is_derived()) {
        eprintln!("version: {}", recipe.model.version);
    }
    build::fetch_registry_images(&engine, &recipe).await?;
    let opts = BuildOptions {
        jobs: args.jobs.unwrap_or_else(cores),
        read_cache: !args.no_cache,
        write_cache: true,
    };
    let built = build::build(
        &engine,
        &recipe,
        graph,
        lock_bytes.as_deref(),
        &pins,
        opts,
        &key,
    )
    .await?;
    audit::log(&store, Some(&key_file), build_event(&recipe, &built))?;
    if args.json {
        let doc = serde_json::json!({
            "model": format!("{}@{}", recipe.model.name, recipe.model.version),
            "version": recipe.model.version,
            "ok": built.report.ok(),
            "record": built.record.as_ref().map(|(d, _)| d.to_string()),
            "steps": built.report.steps.iter().map(|s| step_json(&store, s)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    let code = match &built.record {
        Some((digest, _)) => {
            if !args.json && verbosity == Verbosity::Normal {
                let ran = built
                    .report
                    .steps
                    .iter()
                    .filter(|s| s.status == engine::StepStatus::Ran)
                    .count();
                eprintln!(
                    "built {}@{}: {} steps ({ran} ran, {} cached)",
                    recipe.model.name,
                    recipe.model.version,
                    built.report.steps.len(),
                    built.report.steps.len() - ran
                );
                eprintln!("record {digest}");
            }
            Ok(exit::OK)
        }
        None => {
            let failed: Vec<&str> = built
                .report
                .steps
                .iter()
                .filter(|s| s.status == engine::StepStatus::Failed)
                .map(|s| s.name.as_str())
                .collect();
            eprintln!(
                "error: the build failed: step{} {} failed",
                if failed.len() > 1 { "s" } else { "" },
                failed.join(", ")
            );
            Ok(exit::FAILED)
        }
    };
    // The process ends right after this command: freeing the recipe, the
    // plan, the report and the record piece by piece (hundreds of
    // thousands of small allocations for 10,000 steps) is wasted time that
    // the exit does at once.
    std::mem::forget((recipe, built));
    code
}

/// The audit entry of a build.
fn build_event(recipe: &repro_recipes::Recipe, built: &build::Built) -> audit::Event {
    let count = |status: engine::StepStatus| {
        built
            .report
            .steps
            .iter()
            .filter(|s| s.status == status)
            .count()
    };
    let ext = built
        .record
        .as_ref()
        .map(|(_, st)| &st.predicate.build_definition.external_parameters);
    audit::Event::new(
        "build",
        format!("{}@{}", recipe.model.name, recipe.model.version),
        serde_json::json!({
            "result": if built.report.ok() { "ok" } else { "failed" },
            "record": built.record.as_ref().map(|(d, _)| d.to_string()),
            "recipe": ext.map(|e| e.recipe_digest),
            "lock": ext.and_then(|e| e.lock_digest),
            "steps": built.report.steps.len(),
            "ran": count(engine::StepStatus::Ran),
            "cached": count(engine::StepStatus::Cached),
            "failed": count(engine::StepStatus::Failed),
        }),
    )
}

fn step_json(store: &Store, s: &StepResult) -> serde_json::Value {
    let files = s.files(store).ok().flatten().map(|m| {
        m.iter()
            .map(|(path, e)| {
                let v = match e {
                    repro_store::FileEntry::File { digest, size, executable } => {
                        serde_json::json!({"digest": digest, "size": size, "executable": executable})
                    }
                    repro_store::FileEntry::Symlink { target } => serde_json::json!({"symlink": target}),
                };
                (path.clone(), v)
            })
            .collect::<serde_json::Map<_, _>>()
    });
    serde_json::json!({
        "name": s.name,
        "status": s.status,
        "key": s.key.map(|k| k.to_string()),
        "output": s.output.map(|o| o.to_string()),
        "log": s.log.map(|l| l.to_string()),
        "duration_ms": s.duration_ms(),
        "reason": s.reason,
        "ran_on": s.ran_on,
        "job_ids": s.job_ids,
        "retries": s.retries,
        "files": files,
    })
}
