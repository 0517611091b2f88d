//! One file per command: its arguments, the store lock it takes, and a call
//! into the library crates. What every command shares is here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use repro_evidence::env_vars;
use repro_evidence::exit::UserError;
use repro_sandbox::BackendKind;
use repro_store::Store;
use tokio_util::sync::CancellationToken;

use crate::reporter::Verbosity;

pub mod admin;
pub mod approve;
pub mod attest;
pub mod audit;
pub mod build;
pub mod card;
pub mod check;
pub mod data;
pub mod diff;
pub mod export;
pub mod fsck;
pub mod gc;
pub mod governance;
pub mod hash;
pub mod identity;
pub mod image;
pub mod import;
pub mod key;
pub mod lineage;
pub mod lock;
pub mod policy;
pub mod promote;
pub mod push;
pub mod registry;
pub mod schema;
pub mod status;
pub mod verify;

/// What a command needs of the store, declared once per command (each
/// command file's `STORE`); the dispatcher opens the store and takes the
/// lock before the command runs and holds it until it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUse {
    /// No store (or the command opens one itself, optionally).
    None,
    /// The store, without a lock: the command only reads, or takes the
    /// lock it needs itself (`gc` the exclusive one, `fsck` and `pin` a
    /// shared one around their walk).
    Open,
    /// The store under the shared lock: the command adds to it, and `repro
    /// gc` waits until it is done.
    Shared,
}

/// What every command is given.
pub struct Ctx {
    /// `--store`, as given.
    pub store_dir: Option<PathBuf>,
    /// The store, opened as the command's [`StoreUse`] asked.
    pub store: Option<Arc<Store>>,
    /// `--quiet`.
    pub quiet: bool,
    /// How much to print.
    pub verbosity: Verbosity,
}

impl Ctx {
    /// The store this command was given.
    pub fn store(&self) -> Result<Arc<Store>> {
        self.store.clone().ok_or_else(|| {
            anyhow::anyhow!("internal error: this command declared that it needs no store")
        })
    }
}

/// Which sandbox runs the steps.
#[derive(Args)]
pub struct SandboxArg {
    /// The sandbox backend: `native` (Linux namespaces, no daemon) or `docker`
    #[arg(long = "sandbox", env = env_vars::REPRO_SANDBOX, default_value = "native", value_name = "BACKEND")]
    pub kind: BackendKind,
}

/// Where steps run.
#[derive(Args)]
pub struct ExecutorArgs {
    /// Where steps run: `local` (this machine) or `slurm` (a batch job per step; the store must be on a filesystem the nodes share)
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"], value_name = "EXECUTOR")]
    pub executor: String,
    /// With `--executor slurm`: the partition jobs go to
    #[arg(long, value_name = "PARTITION")]
    pub partition: Option<String>,
    /// With `--executor slurm`: the account jobs are charged to
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// With `--executor slurm`: how often a step whose node failed is submitted again
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub retries: u32,
}

impl ExecutorArgs {
    /// The engine for these arguments: steps in the local `sandbox`, or
    /// handed to Slurm to run in that sandbox on the nodes.
    pub fn engine(
        &self,
        store: Arc<Store>,
        sandbox: BackendKind,
        reporter: Arc<dyn repro_engine::events::Reporter>,
        cancel: CancellationToken,
    ) -> Result<repro_engine::Engine> {
        if self.executor != "slurm" {
            return Ok(repro_engine::Engine::new(store, sandbox, reporter, cancel));
        }
        let exe = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find the running `repro` executable: {e}"))?;
        let dir = std::fs::canonicalize(store.dir()).map_err(|e| {
            anyhow::anyhow!("cannot resolve the store `{}`: {e}", store.dir().display())
        })?;
        let backend = repro_sandbox::SlurmBackend::new(
            repro_sandbox::SlurmOptions {
                partition: self.partition.clone(),
                account: self.account.clone(),
                retries: self.retries,
            },
            &dir,
            &exe,
            sandbox,
        );
        Ok(repro_engine::Engine::with_backend(
            store,
            Arc::new(backend),
            reporter,
            cancel,
        ))
    }
}

/// Open the store at `dir`, or at the default place.
pub fn open_store(dir: Option<PathBuf>) -> Result<Arc<Store>> {
    let dir = match dir {
        Some(d) => d,
        None => Store::default_dir().ok_or_else(|| {
            UserError(
                "cannot find a home for the store\nhint: pass `--store <dir>` or set REPRO_STORE"
                    .into(),
            )
        })?,
    };
    Ok(Arc::new(Store::open(&dir)?))
}

/// The signing key's path: `given`, else the default place.
pub fn key_path(given: Option<PathBuf>) -> Result<PathBuf> {
    given
        .or_else(repro_evidence::keys::default_key_path)
        .ok_or_else(|| {
            UserError(
                "cannot find a home for the signing key\nhint: pass `--key <file>` or set REPRO_KEY"
                    .into(),
            )
            .into()
        })
}

/// The number of CPUs.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Cancel the token on Ctrl-C, so the sandbox removes running containers.
pub fn on_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping running steps");
            cancel.cancel();
        }
    });
}

/// The error and its causes, one per line, without repeating a cause whose
/// text is already contained in the line above.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n  caused by: ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}
