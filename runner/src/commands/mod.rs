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

use crate::config::{self, ExecutorKind};
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
pub mod log;
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

/// Where steps run. Each flag overrides the configuration file's key (see
/// `crate::config`), and the defaults apply after both.
#[derive(Args)]
pub struct ExecutorArgs {
    /// Where steps run: `local` (this machine) or `slurm` (a batch job per step; the store must be on a filesystem the nodes share) [default: the config file's `executor.kind`, else local]
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorKind>,
    /// With `--executor slurm`: the partition jobs go to [default: the config file's `executor.slurm.partition`]
    #[arg(long, value_name = "PARTITION", value_parser = config::slurm_name)]
    pub partition: Option<String>,
    /// With `--executor slurm`: the account jobs are charged to [default: the config file's `executor.slurm.account`]
    #[arg(long, value_name = "ACCOUNT", value_parser = config::slurm_name)]
    pub account: Option<String>,
    /// With `--executor slurm`: how often a step whose node failed is submitted again [default: the config file's `executor.slurm.retries`, else 1]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// With `--executor slurm`, when the nodes do not share the store: move each step's image, inputs, outputs and log through this OCI registry repository (`host[:port]/repo`, reached with `--insecure`/`--ca-file`); each node keeps a store of its own ($REPRO_NODE_STORE)
    #[arg(long, value_name = "REPO")]
    pub slurm_registry: Option<String>,
}

impl ExecutorArgs {
    /// These flags over the configuration file (read now, so that a bad
    /// file stops the command before it does anything): the executor.
    pub fn settle(&self) -> Result<SettledExecutor> {
        let file = config::load()?;
        let flags = config::ExecutorConfig {
            kind: self.executor,
            partition: self.partition.clone(),
            account: self.account.clone(),
            retries: self.retries,
        };
        let from = file
            .path
            .filter(|_| file.executor != config::ExecutorConfig::default());
        Ok(SettledExecutor {
            settled: config::settle(flags, file.executor),
            from,
            slurm_registry: self.slurm_registry.clone(),
        })
    }
}

/// The executor a command runs steps on, flags and file settled.
pub struct SettledExecutor {
    settled: config::Executor,
    /// The configuration file that set some of it.
    from: Option<PathBuf>,
    /// `--slurm-registry`: the registry steps move through.
    slurm_registry: Option<String>,
}

impl SettledExecutor {
    /// The engine: steps in the local `sandbox`, or handed to Slurm to run
    /// in that sandbox on the nodes.
    pub async fn engine(
        self,
        store: Arc<Store>,
        sandbox: BackendKind,
        registry: &repro_exchange::registry::RegistryOptions,
        reporter: Arc<dyn repro_engine::events::Reporter>,
        cancel: CancellationToken,
    ) -> Result<repro_engine::Engine> {
        if let Some(path) = &self.from {
            reporter.event(&repro_engine::events::Event::Note(format!(
                "executor settings from `{}` (flags override them)",
                path.display()
            )));
        }
        if self.settled.kind == ExecutorKind::Local {
            if self.slurm_registry.is_some() {
                return Err(UserError(
                    "`--slurm-registry` moves steps to Slurm nodes\nhint: add `--executor slurm`, or drop `--slurm-registry`".into(),
                )
                .into());
            }
            return Ok(repro_engine::Engine::new(store, sandbox, reporter, cancel));
        }
        let exe = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find the running `repro` executable: {e}"))?;
        let dir = std::fs::canonicalize(store.dir()).map_err(|e| {
            anyhow::anyhow!("cannot resolve the store `{}`: {e}", store.dir().display())
        })?;
        let backend = repro_sandbox::SlurmBackend::new(self.settled.slurm, &dir, &exe, sandbox);
        let backend = match &self.slurm_registry {
            Some(target) => backend.with_courier(Arc::new(
                repro_exchange::courier::RegistryCourier::connect(
                    target,
                    registry,
                    Arc::clone(&store),
                )
                .await?,
            )),
            None => backend,
        };
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
        // SIGTERM too: what a CI runner, systemd or `kill` sends to stop a
        // build, which must stop its steps (and cancel its Slurm jobs)
        // as Ctrl-C does rather than leave them running.
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let what = tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_ok() { "interrupted" } else { return },
            _ = term => "terminated",
        };
        eprintln!("{what}: stopping running steps");
        cancel.cancel();
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
