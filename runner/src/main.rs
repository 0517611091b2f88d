//! `repro`: a reproducible training orchestrator and hermetic runner.
//!
//! This crate only maps the command line onto the library crates
//! (`repro-engine`, `repro-governance`, `repro-exchange`, `repro-evidence`):
//! [`Cli`] lists the commands, and each command is one file in
//! [`commands`] with its arguments, the store lock it declares
//! (`STORE`), and a call.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use repro_evidence::env_vars;

mod commands;
mod config;
mod exit;
mod reporter;
mod slurm_step;

use commands::{Ctx, StoreUse};
use reporter::Verbosity;

/// Reproducible training orchestrator and hermetic runner.
#[derive(Parser)]
#[command(name = "repro", version, about, long_about = None)]
struct Cli {
    /// The store directory [default: $XDG_DATA_HOME/repro/store or ~/.local/share/repro/store]
    #[arg(long, global = true, env = env_vars::REPRO_STORE, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Print only failures
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The model registry: stages (candidate, validated, production, retired) and owners
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// One overview of every model: the version in each stage, when each was verified and by whom, revalidations due, approvals expiring, emergency reviews overdue, inputs moved (`--recipe`)
    Status(commands::status::StatusArgs),
    /// The governance root: administrators, quorum, pending changes
    #[command(subcommand)]
    Governance(commands::admin::GovernanceCommand),
    /// The promotion policy in force (kept in the store, changed by administrators)
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Registered identities: keys bound to a name, an e-mail and roles
    #[command(subcommand)]
    Identity(commands::identity::IdentityCommand),
    /// Sign an approval of a version in a role (you must be a registered identity holding it)
    Approve(commands::approve::ApproveArgs),
    /// Move a version to a stage if the policy's gate is met; lists every unmet requirement otherwise
    Promote(commands::promote::PromoteArgs),
    /// Make a version that once passed the production gate production again (no rebuild)
    Rollback(commands::promote::RollbackArgs),
    /// Build a recipe: run every step in the sandbox and sign a record
    #[command(after_help = config::HELP)]
    Build(commands::build::BuildArgs),
    /// Rebuild a recorded model from scratch and compare it byte for byte
    #[command(after_help = config::HELP)]
    Verify(commands::verify::VerifyArgs),
    /// Run each step several times under controlled variations and name what its output depends on
    Check(commands::check::CheckArgs),
    /// Explain what differs between two files, two output trees (`sha256:...`) or two records (`name@version`)
    Diff(commands::diff::DiffArgs),
    /// Print a step's log (stdout and stderr) as the store keeps it: of a step of `name@version`, or by step key or log digest
    Log(commands::log::LogArgs),
    /// Pin every floating reference of a recipe (image archives and tags, data and code folders) in `model.lock`
    Lock(commands::lock::LockArgs),
    /// Data snapshots
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Print the digest of a file (blob) or folder (tree) exactly as the store would record it, storing nothing
    Hash(commands::hash::HashArgs),
    /// Toolchain images
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Signing keys
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
    /// Verification attestations: signed results of `repro verify`, yours and others'
    #[command(subcommand)]
    Attest(commands::attest::AttestCommand),
    /// Print the JSON Schema of the recipe format
    Schema,
    /// Check the whole store: follow every ref and record to what it names, re-hash every object, check every signature; name each problem
    Fsck(commands::fsck::FsckArgs),
    /// Remove what no retained version, pinned object or running build needs
    Gc(commands::gc::GcArgs),
    /// Keep a version or an object through every `repro gc`, whatever the retention rules say
    Pin(commands::gc::PinArgs),
    /// Undo `repro pin`
    Unpin(commands::gc::PinArgs),
    /// Push a model version (record, attestations, trees, blobs, images) to an OCI registry
    Push(commands::push::PushArgs),
    /// Pull a model version from an OCI registry into the store, re-hashing everything
    Pull(commands::push::PullArgs),
    /// Export a version (record, attestations, keys, recipe, lock, code, data, images, outputs) as one bundle that verifies offline
    Export(commands::export::ExportArgs),
    /// Import a bundle written by `repro export`, checking every object's digest first
    Import(commands::import::ImportArgs),
    /// Trace a model file (by digest) or a version back to its steps, data snapshots, code and image; `--uses` lists the versions built on a snapshot
    Lineage(commands::lineage::LineageArgs),
    /// Write the model card of a version (Markdown and HTML) from the evidence in the store
    Card(commands::card::CardArgs),
    /// The audit log: verify its chain and signatures, export it as JSON lines or syslog
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
}

impl Command {
    /// What the command needs of the store, as its file declares.
    fn store_use(&self) -> StoreUse {
        use commands::*;
        match self {
            Command::Registry(_) => registry::STORE,
            Command::Status(a) => status::store_use(a),
            Command::Governance(_) => admin::STORE,
            Command::Policy(_) => policy::STORE,
            Command::Identity(_) => identity::STORE,
            Command::Approve(_) => approve::STORE,
            Command::Promote(_) | Command::Rollback(_) => promote::STORE,
            Command::Build(_) => build::STORE,
            Command::Verify(_) => verify::STORE,
            Command::Check(_) => check::STORE,
            Command::Diff(_) => diff::STORE,
            Command::Log(_) => log::STORE,
            Command::Lock(_) => lock::STORE,
            Command::Data(_) => data::STORE,
            Command::Hash(_) => hash::STORE,
            Command::Image(_) => image::STORE,
            Command::Key(_) => key::STORE,
            Command::Attest(c) => attest::store_use(c),
            Command::Schema => schema::STORE,
            Command::Fsck(_) => fsck::STORE,
            Command::Gc(_) => gc::STORE,
            Command::Pin(_) | Command::Unpin(_) => gc::PIN_STORE,
            Command::Push(_) | Command::Pull(_) => push::STORE,
            Command::Export(_) => export::STORE,
            Command::Import(_) => import::STORE,
            Command::Lineage(_) => lineage::STORE,
            Command::Card(_) => card::STORE,
            Command::Audit(c) => audit::store_use(c),
        }
    }

    async fn run(self, ctx: &Ctx) -> Result<u8> {
        use commands::*;
        match self {
            Command::Registry(c) => registry::run(ctx, c),
            Command::Status(a) => status::run(ctx, a).await,
            Command::Governance(c) => admin::run(ctx, c),
            Command::Policy(c) => policy::run(ctx, c),
            Command::Identity(c) => identity::run(ctx, c),
            Command::Approve(a) => approve::run(ctx, a),
            Command::Promote(a) => promote::run(ctx, a),
            Command::Rollback(a) => promote::rollback(ctx, a),
            Command::Build(a) => build::run(ctx, a).await,
            Command::Verify(a) => verify::run(ctx, a).await,
            Command::Check(a) => check::run(ctx, a).await,
            Command::Diff(a) => diff::run(ctx, a),
            Command::Log(a) => log::run(ctx, a),
            Command::Lock(a) => lock::run(ctx, a).await,
            Command::Data(c) => data::run(ctx, c),
            Command::Hash(a) => hash::run(ctx, a),
            Command::Image(c) => image::run(ctx, c),
            Command::Key(c) => key::run(ctx, c),
            Command::Attest(c) => attest::run(ctx, c),
            Command::Schema => schema::run(ctx),
            Command::Fsck(a) => fsck::run(ctx, a),
            Command::Gc(a) => gc::run(ctx, a),
            Command::Pin(a) => gc::pin(ctx, a, true),
            Command::Unpin(a) => gc::pin(ctx, a, false),
            Command::Push(a) => push::push(ctx, a).await,
            Command::Pull(a) => push::pull(ctx, a).await,
            Command::Export(a) => export::run(ctx, a),
            Command::Import(a) => import::run(ctx, a),
            Command::Lineage(a) => lineage::run(ctx, a),
            Command::Card(a) => card::run(ctx, a),
            Command::Audit(c) => audit::run(ctx, c),
        }
    }
}

/// mimalloc instead of the system allocator: a build of thousands of steps
/// makes millions of small allocations (parsing, keys, the record), and
/// glibc's malloc and free were about 40 % of a no-op build's profile (a
/// no-op build of 10,000 steps: 405 ms with glibc, 357 ms with this).
/// Version 2 (the `v2` feature), as it starts with fewer page faults than
/// version 3: this binary is also every sandbox's init, so start-up counts
/// (version 3 added 2 to 5 ms to a one-step verification, version 2 about
/// 1 ms). Without transparent huge pages (`no_thp`): a short-lived process
/// paid for zeroing 2 MiB pages it barely used.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The native sandbox re-executes this binary to set up a step's
    // namespaces in a fresh, single-threaded process (never inside the
    // async runtime).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(repro_sandbox::native::INIT_ARG))
    {
        repro_sandbox::native::init_main();
    }
    // A Slurm job runs one step on its node.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(repro_sandbox::slurm::STEP_ARG))
    {
        return slurm_step::main(std::env::args().skip(2).collect());
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = commands::chain(&e);
            if text.starts_with("error:") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(exit::classify(&e))
        }
    }
}

/// Open the store and take the lock the command declares, then run it.
async fn run(cli: Cli) -> Result<u8> {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    let needs = cli.command.store_use();
    let store = match needs {
        StoreUse::None => None,
        StoreUse::Open | StoreUse::Shared => Some(commands::open_store(cli.store.clone())?),
    };
    // Held until the command returns: `repro gc` waits for it.
    let _lock = match (&store, needs) {
        (Some(s), StoreUse::Shared) => Some(s.lock_shared()?),
        _ => None,
    };
    let ctx = Ctx {
        store_dir: cli.store,
        store,
        quiet: cli.quiet,
        verbosity,
    };
    cli.command.run(&ctx).await
}
