//! `repro`: a reproducible training orchestrator and hermetic runner.
//!
//! This file only maps the command line onto the library modules.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use repro_store::{Ingest, Store};
use tokio_util::sync::CancellationToken;

mod attest;
mod audit;
mod audit_cmd;
mod build;
mod bundle;
mod card;
mod check;
mod compare;
mod diff;
mod engine;
mod env_vars;
mod events;
mod exit;
mod fsck;
mod gc;
mod governance;
mod keys;
mod lineage;
mod platform;
mod record;
mod remote;
mod reporter;
mod syslog;
mod verify;

use engine::{BuildOptions, Engine, StepResult};
use events::Reporter;
use exit::UserError;
use reporter::{Console, Verbosity};
use repro_sandbox::BackendKind;

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
    Registry(governance::cli::RegistryCommand),
    /// Registered identities: keys bound to a name, an e-mail and roles
    #[command(subcommand)]
    Identity(governance::cli::IdentityCommand),
    /// Sign an approval of a version in a role (you must be a registered identity holding it)
    Approve(governance::cli::ApproveArgs),
    /// Move a version to a stage if the policy's gate is met; lists every unmet requirement otherwise
    Promote(governance::cli::PromoteArgs),
    /// Make a version that once passed the production gate production again (no rebuild)
    Rollback(governance::cli::RollbackArgs),
    /// Build a recipe: run every step in the sandbox and sign a record
    Build(BuildArgs),
    /// Rebuild a recorded model from scratch and compare it byte for byte
    Verify(VerifyArgs),
    /// Run each step several times under controlled variations and name what its output depends on
    Check(CheckArgs),
    /// Explain what differs between two files, two output trees (`sha256:...`) or two records (`name@version`)
    Diff {
        /// The first: a file, a tree or record digest, or `name@version`
        a: String,
        /// The second, of the same kind
        b: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
        /// Also hand each differing file to diffoscope (when installed) and attach its report
        #[arg(long)]
        diffoscope: bool,
    },
    /// Pin every floating reference of a recipe (image archives and tags, data and code folders) in `model.lock`
    Lock {
        /// The recipe
        recipe: PathBuf,
    },
    /// Data snapshots
    #[command(subcommand)]
    Data(DataCommand),
    /// Print the digest of a file (blob) or folder (tree) exactly as the store would record it, storing nothing
    Hash {
        /// Files or folders; with one, only its digest is printed, with several `<digest>  <path>` per line
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Print a JSON array of {path, kind, digest, size}
        #[arg(long)]
        json: bool,
    },
    /// Toolchain images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Signing keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Verification attestations: signed results of `repro verify`, yours and others'
    #[command(subcommand)]
    Attest(AttestCommand),
    /// Print the JSON Schema of the recipe format
    Schema,
    /// Check the whole store: follow every ref and record to what it names, re-hash every object, check every signature; name each problem
    Fsck(fsck::FsckArgs),
    /// Remove what no retained version, pinned object or running build needs
    Gc(gc::GcArgs),
    /// Keep a version or an object through every `repro gc`, whatever the retention rules say
    Pin {
        /// `name@version`, or a digest `sha256:<hex>` (a blob, tree, image or record)
        target: String,
    },
    /// Undo `repro pin`
    Unpin {
        /// `name@version` or `sha256:<hex>`, as pinned
        target: String,
    },
    /// Push a model version (record, attestations, trees, blobs, images) to an OCI registry
    Push(remote::PushArgs),
    /// Pull a model version from an OCI registry into the store, re-hashing everything
    Pull(remote::PullArgs),
    /// Export a version (record, attestations, keys, recipe, lock, code, data, images, outputs) as one bundle that verifies offline
    Export(bundle::ExportArgs),
    /// Import a bundle written by `repro export`, checking every object's digest first
    Import(bundle::ImportArgs),
    /// Trace a model file (by digest) or a version back to its steps, data snapshots, code and image; `--uses` lists the versions built on a snapshot
    Lineage(LineageArgs),
    /// Write the model card of a version (Markdown and HTML) from the evidence in the store
    Card(CardArgs),
    /// The audit log: verify its chain and signatures, export it as JSON lines or syslog
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
}

/// Which sandbox runs the steps.
#[derive(Args)]
struct SandboxArg {
    /// The sandbox backend: `native` (Linux namespaces, no daemon) or `docker`
    #[arg(long = "sandbox", env = env_vars::REPRO_SANDBOX, default_value = "native", value_name = "BACKEND")]
    kind: BackendKind,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    sandbox: SandboxArg,
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
    /// The signing key [default: $XDG_CONFIG_HOME/repro/signing.key or ~/.config/repro/signing.key]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Take step results from, and publish new ones to, an OCI registry repository (`host[:port]/repo`)
    #[arg(long, value_name = "REGISTRY/REPO")]
    remote: Option<String>,
    #[command(flatten)]
    registry: remote::RegistryArgs,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    sandbox: SandboxArg,
    #[command(flatten)]
    registry: remote::RegistryArgs,
    /// The recipe
    recipe: PathBuf,
    /// Refuse any input that the recipe or its lock file does not pin by digest
    #[arg(long)]
    locked: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    sandbox: SandboxArg,
    #[command(flatten)]
    registry: remote::RegistryArgs,
    /// A record: `name@version`, a record digest `sha256:...`, or a record file
    record: String,
    /// Accept only records signed by this public key file (repeatable); by default the keys kept in the store
    #[arg(long, value_name = "PUBKEY")]
    trust: Vec<PathBuf>,
    /// Steps to run at once [default: the number of CPUs]
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    /// Also hand each differing file to diffoscope (when installed) and attach its report
    #[arg(long)]
    diffoscope: bool,
    /// The key that signs the verification attestation [default: as for `build`]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AttestCommand {
    /// List the attestations of a record, checking each signature against the store's keys
    List {
        /// `name@version` or a record digest
        record: String,
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Import another party's attestation: its signature must check out and it must be about a record in this store
    Import {
        /// The attestation (a DSSE envelope, as `repro verify` writes)
        file: PathBuf,
        /// The signer's public key (`.pub` file); without it the key must already be in the store
        #[arg(long, value_name = "PUBKEY")]
        key: Option<PathBuf>,
        /// Refuse it unless it is about this record (`name@version` or a record digest)
        #[arg(long = "for", value_name = "RECORD")]
        for_record: Option<String>,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Snapshot a folder into the store and print its tree digest
    Add {
        /// The folder
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout (folder or tar) or a `docker save` archive and print its digest
    Import {
        /// The archive
        archive: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a new ed25519 signing key
    Generate {
        /// Where [default: $XDG_CONFIG_HOME/repro/signing.key or ~/.config/repro/signing.key]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Your name, written into every attestation you sign
        #[arg(long)]
        name: Option<String>,
        /// Your e-mail, written into every attestation you sign
        #[arg(long)]
        email: Option<String>,
    },
    /// Print the public key and its id
    Show {
        /// Which key [default: as for generate]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
    },
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
            let text = chain(&e);
            if text.starts_with("error:") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(exit::classify(&e))
        }
    }
}

/// The error and its causes, one per line, without repeating a cause whose
/// text is already contained in the line above.
fn chain(e: &anyhow::Error) -> String {
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

fn open_store(dir: Option<PathBuf>) -> Result<Arc<Store>> {
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

fn key_path(given: Option<PathBuf>) -> Result<PathBuf> {
    given.or_else(keys::default_key_path).ok_or_else(|| {
        UserError(
            "cannot find a home for the signing key\nhint: pass `--key <file>` or set REPRO_KEY"
                .into(),
        )
        .into()
    })
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Cancel the token on Ctrl-C, so the sandbox removes running containers.
fn on_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping running steps");
            cancel.cancel();
        }
    });
}

async fn run(cli: Cli) -> Result<u8> {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    match cli.command {
        Command::Registry(c) => governance::cli::registry_cmd(&*open_store(cli.store)?, c),
        Command::Identity(c) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            governance::cli::identity_cmd(&store, cli.quiet, c, key_path)
        }
        Command::Approve(a) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            governance::cli::approve_cmd(&store, cli.quiet, &a, &key_path(a.key.clone())?)
        }
        Command::Promote(a) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            governance::cli::promote_cmd(&store, cli.quiet, &a, &key_path(a.key.clone())?)
        }
        Command::Rollback(a) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            governance::cli::rollback_cmd(&store, cli.quiet, &a, &key_path(a.key.clone())?)
        }
        Command::Build(args) => build_cmd(cli.store, verbosity, args).await,
        Command::Verify(args) => verify_cmd(cli.store, verbosity, args).await,
        Command::Check(args) => check_cmd(cli.store, verbosity, args).await,
        Command::Lock { recipe } => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            let recipe = repro_recipes::parse_file(&recipe)?;
            let cancel = CancellationToken::new();
            let engine = Arc::new(Engine::new(
                store,
                BackendKind::Native,
                Arc::new(Console::new(verbosity)),
                cancel,
            ));
            let (_, lock) = build::resolve(&engine, &recipe).await?;
            let path = recipe.lock_path();
            lock.write(&path)?;
            if !cli.quiet {
                eprintln!("wrote `{}`", path.display());
            }
            print!("{}", lock.to_toml_string());
            Ok(exit::OK)
        }
        Command::Hash { paths, json } => hash_cmd(&paths, json),
        Command::Data(DataCommand::Add { dir }) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            if !dir.is_dir() {
                return Err(UserError(format!("`{}` is not a folder", dir.display())).into());
            }
            let d = store.snapshot_dir(&dir, Ingest::Copy)?;
            println!("{d}");
            Ok(exit::OK)
        }
        Command::Image(ImageCommand::Import { archive }) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            let d = repro_toolchains::import_archive(&store, &archive)?;
            println!("{d}");
            Ok(exit::OK)
        }
        Command::Key(KeyCommand::Generate { key, name, email }) => {
            let path = key_path(key)?;
            let k = keys::generate(&path)?;
            if name.is_some() || email.is_some() {
                attest::write_identity(&path, name, email)?;
            }
            eprintln!(
                "wrote `{}` and `{}`",
                path.display(),
                keys::pub_path(&path).display()
            );
            let keyid = keys::key_id(&k.verifying_key()).to_string();
            println!("{keyid}");
            let who = attest::identity_of(&path, &k);
            match open_store(cli.store) {
                Ok(store) => {
                    let event = audit::Event::new(
                        "key",
                        keyid,
                        serde_json::json!({"action": "generate", "name": who.name, "email": who.email}),
                    );
                    audit_cmd::log(&store, Some(&path), event)?;
                }
                Err(e) => audit_cmd::warn_unlogged(&chain(&e)),
            }
            Ok(exit::OK)
        }
        Command::Key(KeyCommand::Show { key }) => {
            let path = key_path(key)?;
            let k = keys::load(&path)?;
            println!("id:     {}", keys::key_id(&k.verifying_key()));
            println!("public: {}", hex::encode(k.verifying_key().as_bytes()));
            Ok(exit::OK)
        }
        Command::Diff {
            a,
            b,
            json,
            diffoscope,
        } => {
            let store = open_store(cli.store)?;
            let d = diff::diff(&store, &a, &b, compare::CompareOptions { diffoscope })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", diff::render(&d));
            }
            Ok(if d.identical { exit::OK } else { exit::FAILED })
        }
        Command::Fsck(args) => fsck::fsck_cmd(&*open_store(cli.store)?, cli.quiet, &args),
        Command::Attest(AttestCommand::List { record, json }) => {
            let store = open_store(cli.store)?;
            let d = verify::resolve_record_ref(&store, &record)?;
            let found = attest::list(&store, &d)?;
            if json {
                let docs: Vec<serde_json::Value> = found
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "attestation": c.digest.to_string(),
                            "signature": match &c.signature { Ok(k) => serde_json::json!({"ok": true, "keyid": k}), Err(e) => serde_json::json!({"ok": false, "error": e}) },
                            "statement": c.statement,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&docs)?);
                return Ok(attest::unverified_is_tampering(&found, &record));
            }
            if found.is_empty() {
                println!("no attestations of {record} ({d})");
            }
            for c in &found {
                let p = &c.statement.predicate;
                let sig = match &c.signature {
                    Ok(_) => "signature ok".to_string(),
                    Err(e) => format!("SIGNATURE NOT VERIFIED: {e}"),
                };
                println!(
                    "{}  {}  by {}  on {} ({}, {})  [{sig}]  {}",
                    p.verification_result,
                    p.time_verified,
                    p.repro.identity,
                    p.repro.platform.cpu_model,
                    p.repro.platform.kernel,
                    p.repro.platform.backend,
                    c.digest.short(),
                );
            }
            Ok(attest::unverified_is_tampering(&found, &record))
        }
        Command::Attest(AttestCommand::Import {
            file,
            key,
            for_record,
        }) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            let key = key
                .map(|p| {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read `{}`", p.display()))?;
                    keys::parse_public(&text).with_context(|| format!("`{}`", p.display()))
                })
                .transpose()?;
            let expect = for_record
                .map(|r| verify::resolve_record_ref(&store, &r))
                .transpose()?;
            let (d, st) = attest::import(&store, &bytes, key, expect)?;
            let event = audit::Event::new(
                "attest-import",
                st.predicate.repro.model.clone(),
                serde_json::json!({
                    "attestation": d.to_string(),
                    "record": st.record().map(|r| r.to_string()),
                    "result": st.predicate.verification_result,
                    "by": st.predicate.repro.identity,
                }),
            );
            audit_cmd::log(&store, None, event)?;
            println!(
                "imported {d}: {} of {} by {}",
                st.predicate.verification_result,
                st.predicate.repro.model,
                st.predicate.repro.identity
            );
            Ok(exit::OK)
        }
        Command::Export(args) => bundle::export_cmd(&*open_store(cli.store)?, cli.quiet, &args),
        Command::Import(args) => bundle::import_cmd(&*open_store(cli.store)?, cli.quiet, &args),
        Command::Lineage(args) => lineage_cmd(&*open_store(cli.store)?, &args),
        Command::Card(args) => card_cmd(&*open_store(cli.store)?, cli.quiet, args),
        Command::Push(a) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            remote::push_cmd(&store, cli.quiet, &a).await
        }
        Command::Pull(a) => {
            let store = open_store(cli.store)?;
            let _lock = store.lock_shared()?; // `repro gc` waits for it
            remote::pull_cmd(&store, cli.quiet, &a).await
        }
        Command::Gc(args) => gc::gc_cmd(&*open_store(cli.store)?, cli.quiet, &args),
        Command::Pin { target } => gc::pin_cmd(&*open_store(cli.store)?, cli.quiet, &target, true),
        Command::Unpin { target } => {
            gc::pin_cmd(&*open_store(cli.store)?, cli.quiet, &target, false)
        }
        Command::Audit(c) => audit_cmd::audit_cmd(&*open_store(cli.store)?, cli.quiet, &c),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&repro_recipes::json_schema())?
            );
            Ok(exit::OK)
        }
    }
}

async fn build_cmd(store: Option<PathBuf>, verbosity: Verbosity, args: BuildArgs) -> Result<u8> {
    let store = open_store(store)?;
    // Held for the whole run: `repro gc` waits for it.
    let _lock = store.lock_shared()?;
    let key_file = key_path(args.key)?;
    let key = keys::load(&key_file)?;
    let recipe = repro_recipes::parse_file(&args.recipe)?;
    let graph = engine::check_graph(&recipe)?;
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
        Some(t) => Some(remote::cache(t, &args.registry, Arc::clone(&store)).await?),
        None => None,
    };
    let engine = Arc::new(
        Engine::new(Arc::clone(&store), args.sandbox.kind, console, cancel)
            .with_remote(remote_cache),
    );
    let (pins, lock_bytes) = if args.locked {
        let pins = build::resolve_locked(&engine, &recipe).await?;
        let bytes = std::fs::read(&lock_path).ok();
        (pins, bytes)
    } else {
        let (pins, lock) = build::resolve(&engine, &recipe).await?;
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
    build::fetch_registry_images(&engine, &recipe, &args.registry).await?;
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
    audit_cmd::log(&store, Some(&key_file), build_event(&recipe, &built))?;
    if args.json {
        let doc = serde_json::json!({
            "model": format!("{}@{}", recipe.model.name, recipe.model.version),
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
            "recipe": ext.map(|e| e.recipe_digest.clone()),
            "lock": ext.and_then(|e| e.lock_digest.clone()),
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
        "files": files,
    })
}

/// `repro hash`: digests computed from scratch (no stat cache, no store),
/// the files of a folder hashed in parallel.
fn hash_cmd(paths: &[PathBuf], json: bool) -> Result<u8> {
    let mut docs = Vec::new();
    let mut lines = String::new();
    for p in paths {
        // What the user named is followed if it is a symlink (as `data add` does).
        let meta = std::fs::metadata(p)
            .map_err(|e| UserError(format!("cannot hash `{}`: {e}", p.display())))?;
        let (kind, digest, size) = if meta.is_dir() {
            let d = repro_store::hash_dir(p)?;
            ("tree", d.to_string(), None)
        } else {
            let (d, n) = repro_store::hash_file(p)?;
            ("file", d.to_string(), Some(n))
        };
        if paths.len() == 1 {
            lines.push_str(&format!("{digest}\n"));
        } else {
            lines.push_str(&format!("{digest}  {}\n", p.display()));
        }
        docs.push(serde_json::json!({
            "path": p.display().to_string(),
            "kind": kind,
            "digest": digest,
            "size": size,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    } else {
        print!("{lines}");
    }
    Ok(exit::OK)
}

async fn check_cmd(store: Option<PathBuf>, verbosity: Verbosity, args: CheckArgs) -> Result<u8> {
    let store = open_store(store)?;
    // Held for the whole run: `repro gc` waits for it.
    let _lock = store.lock_shared()?;
    let recipe = repro_recipes::parse_file(&args.recipe)?;
    engine::check_graph(&recipe)?;
    let verbosity = if args.json {
        Verbosity::Quiet
    } else {
        verbosity
    };
    let cancel = CancellationToken::new();
    on_ctrl_c(cancel.clone());
    let engine = Arc::new(Engine::new(
        Arc::clone(&store),
        args.sandbox.kind,
        Arc::new(Console::new(verbosity)),
        cancel,
    ));
    let pins = if args.locked {
        build::resolve_locked(&engine, &recipe).await?
    } else {
        build::resolve(&engine, &recipe).await?.0
    };
    build::fetch_registry_images(&engine, &recipe, &args.registry).await?;
    let plan = engine::Plan::new(&recipe, &pins)?;
    let model = format!("{}@{}", recipe.model.name, recipe.model.version);
    let report = check::check(&engine, &plan, model).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", check::render(&report));
    }
    Ok(if report.stable {
        exit::OK
    } else {
        exit::FAILED
    })
}

async fn verify_cmd(store: Option<PathBuf>, verbosity: Verbosity, args: VerifyArgs) -> Result<u8> {
    let store = open_store(store)?;
    // Held for the whole run: `repro gc` waits for it.
    let _lock = store.lock_shared()?;
    let trust = args
        .trust
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read `{}`", p.display()))?;
            keys::parse_public(&text).with_context(|| format!("`{}`", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let opened = verify::open_record(&store, &args.record, &trust)?;
    let verbosity = if args.json {
        Verbosity::Quiet
    } else {
        verbosity
    };
    if verbosity == Verbosity::Normal {
        eprintln!(
            "record of {}@{} signed by {} checks out; rebuilding from scratch with the cache off",
            opened
                .statement
                .predicate
                .build_definition
                .external_parameters
                .name,
            opened
                .statement
                .predicate
                .build_definition
                .external_parameters
                .version,
            opened.signed_by
        );
    }
    let cancel = CancellationToken::new();
    on_ctrl_c(cancel.clone());
    let engine = Arc::new(Engine::new(
        Arc::clone(&store),
        args.sandbox.kind,
        Arc::new(Console::new(verbosity)),
        cancel,
    ));
    let record = opened.digest;
    let compare = compare::CompareOptions {
        diffoscope: args.diffoscope,
    };
    // Load the signing key and describe the machine while the steps run.
    let signing = {
        let key = args.key.clone();
        tokio::task::spawn_blocking(move || {
            let signer = key_path(key).and_then(|p| Ok((keys::load(&p)?, p)));
            (signer, platform::Platform::detect(String::new()))
        })
    };
    let v = verify::verify(
        &engine,
        opened,
        args.jobs.unwrap_or_else(cores),
        compare,
        &args.registry,
    )
    .await?;
    // Sign what was found: the verification becomes evidence.
    let (signer, mut platform) = signing.await.context("loading the signing key panicked")?;
    let attestation = match signer {
        Ok((key, path)) => {
            let identity = attest::identity_of(&path, &key);
            platform.backend = engine.backend_description().await;
            let envelope = attest::sign_verification(&v, &record, identity, platform, &key)?;
            keys::publish(&store, &key.verifying_key())?;
            let a = store.put_attestation(&record, &serde_json::to_vec_pretty(&envelope)?)?;
            let event = audit::Event::new(
                "verify",
                v.model.clone(),
                serde_json::json!({
                    "result": if v.reproduced { "reproduced" } else { "not reproduced" },
                    "record": v.record,
                    "attestation": a.to_string(),
                }),
            );
            audit_cmd::log(&store, Some(&path), event)?;
            Some(a)
        }
        Err(e) => {
            eprintln!("warning: the verification is not attested: {}", chain(&e));
            audit_cmd::warn_unlogged("there is no signing key");
            None
        }
    };
    if args.json {
        let mut doc = serde_json::to_value(&v)?;
        doc["attestation"] = serde_json::json!(attestation.map(|a| a.to_string()));
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", verify::render(&v));
        if let Some(a) = attestation {
            println!("attestation {a} (list them: repro attest list {})", v.model);
        }
    }
    Ok(if v.reproduced { exit::OK } else { exit::FAILED })
}

/// `repro lineage`.
#[derive(Args)]
struct LineageArgs {
    /// An output file's digest (`sha256:...`, e.g. of `model.pkl`), or `name@version`
    #[arg(required_unless_present = "uses", conflicts_with = "uses")]
    target: Option<String>,
    /// List every version whose record used this data snapshot or code tree (`sha256:...`)
    #[arg(long, value_name = "TREE DIGEST")]
    uses: Option<String>,
    /// Print the result as JSON
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Output format: `text` (an indented tree) or `dot` (Graphviz)
    #[arg(long, default_value = "text", value_parser = ["text", "dot"])]
    format: String,
}

fn lineage_cmd(store: &Store, args: &LineageArgs) -> Result<u8> {
    if let Some(tree) = &args.uses {
        let d: repro_store::TreeDigest = tree.parse().map_err(|e| UserError(format!("{e}")))?;
        let u = lineage::uses(store, &d)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&u)?);
        } else {
            print!("{}", lineage::render_uses(&u));
        }
        return Ok(exit::OK);
    }
    let target = args.target.as_deref().ok_or_else(|| {
        UserError("name a file digest or `name@version`, or pass `--uses`".into())
    })?;
    let l = lineage::lineage(store, target)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&l)?);
    } else if args.format == "dot" {
        print!("{}", lineage::render_dot(&l));
    } else {
        print!("{}", lineage::render_text(&l));
    }
    Ok(exit::OK)
}

/// `repro card`.
#[derive(Args)]
struct CardArgs {
    /// The version: `name@version` or a record digest
    record: String,
    /// Where to write `model-card.md` and `model-card.html`
    #[arg(long, short = 'o', default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// The key that signs the audit log entry [default: as for `build`; without one the card is written but not logged]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    key: Option<PathBuf>,
}

fn card_cmd(store: &Store, quiet: bool, args: CardArgs) -> Result<u8> {
    let _lock = store.lock_shared()?; // `repro gc` waits for it
    let card = card::gather(store, &args.record)?;
    let written = card::write(store, &card, &args.out)?;
    audit_cmd::log(
        store,
        args.key.as_deref(),
        audit::Event::new(
            "card",
            format!("{}@{}", card.model.name, card.model.version),
            serde_json::json!({"record": written.record, "card": written.blob}),
        ),
    )?;
    if !quiet {
        eprintln!(
            "wrote `{}` and `{}` (card {})",
            written.markdown.display(),
            written.html.display(),
            written.blob
        );
    }
    Ok(exit::OK)
}
