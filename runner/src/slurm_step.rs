//! What a Slurm job runs on its node, in one of two forms:
//!
//! - `repro __slurm-step --sandbox <kind> <store> <spec.json> <result.json>`
//!   over the shared store: runs the step in the node's sandbox, exactly as
//!   a local build would, and writes the outcome for the controller;
//! - `repro __slurm-step --sandbox <kind> --registry <repo> [--insecure]
//!   [--ca-file F] --job <token>` without one: pulls the step from the
//!   registry into the node's own store ($REPRO_NODE_STORE), runs it, and
//!   pushes its output and log back (`repro_exchange::courier`).
//!
//! SIGTERM (Slurm's `scancel`, a time limit) cancels the step.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use repro_exchange::registry::RegistryOptions;
use repro_sandbox::{Backend, BackendKind, Sandbox, StepSpec};
use repro_store::Store;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: repro __slurm-step --sandbox <kind> <store> <spec> <result>\n   or: repro __slurm-step --sandbox <kind> --registry <repo> [--insecure] [--ca-file <file>] --job <token>";

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

/// A cancellation token fired by SIGTERM.
fn on_sigterm() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            c.cancel();
        }
    });
    cancel
}

fn run(args: Vec<String>) -> Result<()> {
    let mut args = args.into_iter();
    let (Some(flag), Some(kind)) = (args.next(), args.next()) else {
        anyhow::bail!("{USAGE}");
    };
    anyhow::ensure!(
        flag == "--sandbox",
        "expected `--sandbox`, got `{flag}`\n{USAGE}"
    );
    let kind: BackendKind = kind.parse().map_err(anyhow::Error::msg)?;
    let rest: Vec<String> = args.collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let exe = std::env::current_exe().context("cannot find the running `repro` executable")?;
    if rest.first().map(String::as_str) == Some("--registry") {
        return runtime.block_on(via_registry(kind, &exe, rest));
    }
    let [store, spec, result] =
        <[String; 3]>::try_from(rest).map_err(|a| anyhow::anyhow!("{USAGE} (got {a:?})"))?;
    let store = Arc::new(Store::open(&PathBuf::from(&store))?);
    let spec: StepSpec = serde_json::from_slice(
        &std::fs::read(&spec).with_context(|| format!("cannot read `{spec}`"))?,
    )
    .with_context(|| format!("`{spec}` is not a step spec"))?;
    let outcome = runtime.block_on(async {
        let cancel = on_sigterm();
        let sandbox = Sandbox::connect(kind, &store, &exe).await?;
        sandbox.ensure_image(&store, &spec.image).await?;
        anyhow::Ok(Backend::run(&sandbox, &spec, cancel).await?)
    })?;
    repro_store::write_atomic(&PathBuf::from(&result), &serde_json::to_vec(&outcome)?)?;
    Ok(())
}

async fn via_registry(kind: BackendKind, exe: &std::path::Path, rest: Vec<String>) -> Result<()> {
    let mut target = None;
    let mut token = None;
    let mut options = RegistryOptions::default();
    let mut it = rest.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--registry" => target = it.next(),
            "--job" => token = it.next(),
            "--insecure" => options.insecure = true,
            "--ca-file" => options.ca_file = it.next().map(PathBuf::from),
            other => anyhow::bail!("unexpected `{other}`\n{USAGE}"),
        }
    }
    let (Some(target), Some(token)) = (target, token) else {
        anyhow::bail!("{USAGE}");
    };
    let remote = repro_exchange::registry::connect(&target, &options).await?;
    let dir = repro_exchange::courier::node_store_dir();
    let store = match Store::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot open the node's store `{}`: {e}", dir.display());
            repro_exchange::courier::report_failure(&remote, &token, &why).await?;
            anyhow::bail!("{why}");
        }
    };
    let cancel = on_sigterm();
    let done =
        repro_exchange::courier::run_on_node(&store, &remote, &token, kind, exe, cancel).await?;
    if let Some(e) = done.error {
        anyhow::bail!("{e}");
    }
    Ok(())
}
