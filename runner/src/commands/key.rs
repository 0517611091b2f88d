//! `repro key generate|show`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use repro_evidence::{attest, audit, env_vars, exit, keys};

use super::{chain, key_path, open_store, Ctx, StoreUse};

/// `repro key` needs no store; `generate` logs to one if it can open it.
pub const STORE: StoreUse = StoreUse::None;

/// `repro key` subcommands.
#[derive(Subcommand)]
pub enum KeyCommand {
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

/// Run `repro key`.
pub fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<u8> {
    match cmd {
        KeyCommand::Generate { key, name, email } => {
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
            match open_store(ctx.store_dir.clone()) {
                Ok(store) => {
                    let event = audit::Event::new(
                        "key",
                        keyid,
                        serde_json::json!({"action": "generate", "name": who.name, "email": who.email}),
                    );
                    audit::log(&store, Some(&path), event)?;
                }
                Err(e) => audit::warn_unlogged(&chain(&e)),
            }
            Ok(exit::OK)
        }
        KeyCommand::Show { key } => {
            let path = key_path(key)?;
            let k = keys::load(&path)?;
            println!("id:     {}", keys::key_id(&k.verifying_key()));
            println!("public: {}", hex::encode(k.verifying_key().as_bytes()));
            Ok(exit::OK)
        }
    }
}
