//! `repro __slurm-step --sandbox <kind> <store> <spec.json> <result.json>`:
//! what a Slurm job runs on its node. It runs the step in the node's
//! sandbox, exactly as a local build would, and writes the outcome for the
//! controller. SIGTERM (Slurm's `scancel`, a time limit) cancels the step.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use repro_sandbox::{Backend, BackendKind, Sandbox, StepSpec};
use repro_store::Store;
use tokio_util::sync::CancellationToken;

/// Run the hidden command with `args` (after the subcommand name).
pub fn main(args: Vec<String>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let [flag, kind, store, spec, result] = <[String; 5]>::try_from(args).map_err(|a| {
        anyhow::anyhow!(
            "usage: repro __slurm-step --sandbox <kind> <store> <spec> <result> (got {a:?})"
        )
    })?;
    anyhow::ensure!(flag == "--sandbox", "expected `--sandbox`, got `{flag}`");
    let kind: BackendKind = kind.parse().map_err(anyhow::Error::msg)?;
    let store = Arc::new(Store::open(&PathBuf::from(&store))?);
    let spec: StepSpec = serde_json::from_slice(
        &std::fs::read(&spec).with_context(|| format!("cannot read `{spec}`"))?,
    )
    .with_context(|| format!("`{spec}` is not a step spec"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let cancel = CancellationToken::new();
        {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                    cancel.cancel();
                }
            });
        }
        let exe = std::env::current_exe().context("cannot find the running `repro` executable")?;
        let sandbox = Sandbox::connect(kind, &store, &exe).await?;
        sandbox.ensure_image(&store, &spec.image).await?;
        anyhow::Ok(Backend::run(&sandbox, &spec, cancel).await?)
    })?;
    repro_store::write_atomic(&PathBuf::from(&result), &serde_json::to_vec(&outcome)?)?;
    Ok(())
}
