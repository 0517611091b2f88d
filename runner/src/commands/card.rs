//! `repro card`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use repro_evidence::{audit, env_vars, exit};
use repro_governance::card;

use super::StoreUse;

/// `repro card` writes a card blob and a ref.
pub const STORE: StoreUse = StoreUse::Shared;

/// `repro card`.
#[derive(Args)]
pub struct CardArgs {
    /// The version: `name@version` or a record digest
    record: String,
    /// Where to write `model-card.md` and `model-card.html`
    #[arg(long, short = 'o', default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// The key that signs the audit log entry [default: as for `build`; without one the card is written but not logged]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// Run `repro card`.
pub fn run(ctx: &super::Ctx, args: CardArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    // A card never shows an approval as counting by an identity file the
    // signed log contradicts.
    repro_governance::chain::checked_if_governed(store).map_err(super::governance::lift)?;
    let quiet = ctx.quiet;
    let card = card::gather(store, &args.record)?;
    let written = card::write(store, &card, &args.out)?;
    audit::log(
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
