//! `repro push` and `repro pull`, and the registry options they share with `build --remote`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use repro_evidence::env_vars;
use repro_exchange::registry::{self, RegistryOptions};

use super::{Ctx, StoreUse};

/// `repro push` and `repro pull` hold the shared lock.
pub const STORE: StoreUse = StoreUse::Shared;

/// How to reach a registry (shared by push, pull and `build --remote`).
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (e.g. one on 127.0.0.1)
    #[arg(long)]
    pub insecure: bool,
    /// A PEM file of CA certificates to trust for the registry's TLS
    #[arg(long, env = env_vars::REPRO_REGISTRY_CA_FILE, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// Where the engine pulls images named in a registry from.
    pub fn image_source(&self) -> std::sync::Arc<dyn repro_engine::remote::ImageSource> {
        std::sync::Arc::new(registry::RegistryImages {
            options: self.options(),
        })
    }

    /// The options of the exchange crate.
    pub fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        }
    }
}

/// `repro push` arguments.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The version, `name@version`
    pub version: String,
    /// The registry repository, `host[:port]/repo`
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub to: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `repro pull` arguments.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// The version, `name@version`
    pub version: String,
    /// The registry repository, `host[:port]/repo`
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub from: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `repro push <name@version> --to <registry/repo>`.
/// Run `repro push`.
pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let what = a.version.as_str();
    let remote = registry::connect(&a.to, &a.registry.options()).await?;
    let s = registry::push(store, what, &remote).await?;
    if !quiet {
        eprintln!(
            "pushed {what} (record {}, {} blobs, {} uploaded, {} images) to `{}` as tag `{}`",
            s.record,
            s.blobs,
            s.uploaded,
            s.images,
            remote.target(),
            s.tag
        );
    }
    println!("{}", s.record);
    Ok(repro_evidence::exit::OK)
}

/// `repro pull <name@version> --from <registry/repo>`.
/// Run `repro pull`.
pub async fn pull(ctx: &Ctx, a: PullArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let what = a.version.as_str();
    let remote = registry::connect(&a.from, &a.registry.options()).await?;
    let s = registry::pull(store, what, &remote).await?;
    if !quiet {
        eprintln!(
            "pulled {what} (record {}, {} blobs, {} downloaded and verified) from `{}`",
            s.record,
            s.blobs,
            s.downloaded,
            remote.target()
        );
    }
    println!("{}", s.record);
    Ok(repro_evidence::exit::OK)
}
