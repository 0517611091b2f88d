//! `repro verify`: rebuild a recorded model from scratch, compare, and sign what was found.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use repro_evidence::{attest, audit, env_vars, exit, keys};
use tokio_util::sync::CancellationToken;

use super::{cores, key_path, on_ctrl_c, Ctx, SandboxArg, StoreUse};
use crate::reporter::{Console, Verbosity};

/// The store lock `repro verify` holds for its whole run.
pub const STORE: StoreUse = StoreUse::Shared;

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    sandbox: SandboxArg,
    #[command(flatten)]
    executor: super::ExecutorArgs,
    #[command(flatten)]
    registry: super::push::RegistryArgs,
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

/// Run `repro verify`.
pub async fn run(ctx: &Ctx, args: VerifyArgs) -> Result<u8> {
    let executor = args.executor.settle()?;
    let store = ctx.store()?;
    let verbosity = ctx.verbosity;
    let trust = args
        .trust
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read `{}`", p.display()))?;
            keys::parse_public(&text).with_context(|| format!("`{}`", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let opened = repro_evidence::record::open_record(&store, &args.record, &trust)?;
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
    let engine = Arc::new(
        executor
            .engine(
                Arc::clone(&store),
                args.sandbox.kind,
                &args.registry.options(),
                Arc::new(Console::new(verbosity)),
                cancel,
            )
            .await?
            .with_image_source(Some(args.registry.image_source())),
    );
    let record = opened.digest;
    let compare = repro_engine::compare::CompareOptions {
        diffoscope: args.diffoscope,
    };
    // Load the signing key and describe the machine while the steps run.
    let signing = {
        let key = args.key.clone();
        tokio::task::spawn_blocking(move || {
            let signer = key_path(key).and_then(|p| Ok((keys::load(&p)?, p)));
            (
                signer,
                repro_evidence::platform::Platform::detect(String::new()),
            )
        })
    };
    let v = repro_engine::verify::verify(&engine, opened, args.jobs.unwrap_or_else(cores), compare)
        .await?;
    // Sign what was found: the verification becomes evidence.
    let (signer, mut platform) = signing.await.context("loading the signing key panicked")?;
    let attestation = match signer {
        Ok((key, path)) => {
            let identity = attest::identity_of(&path, &key);
            platform.backend = engine.backend_description().await;
            let envelope =
                attest::sign_verification(&v.verified(), &record, identity, platform, &key)?;
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
            audit::log(&store, Some(&path), event)?;
            Some(a)
        }
        Err(e) => {
            eprintln!(
                "warning: the verification is not attested: {}",
                super::chain(&e)
            );
            audit::warn_unlogged("there is no signing key");
            None
        }
    };
    if args.json {
        let mut doc = serde_json::to_value(&v)?;
        doc["attestation"] = serde_json::json!(attestation.map(|a| a.to_string()));
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", repro_engine::verify::render(&v));
        if let Some(a) = attestation {
            println!("attestation {a} (list them: repro attest list {})", v.model);
        }
    }
    Ok(if v.reproduced { exit::OK } else { exit::FAILED })
}
