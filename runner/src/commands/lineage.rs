//! `repro lineage`.

use anyhow::Result;
use clap::Args;
use repro_evidence::exit::{self, UserError};
use repro_governance::lineage;

use super::StoreUse;

/// `repro lineage` only reads.
pub const STORE: StoreUse = StoreUse::Open;

/// `repro lineage`.
#[derive(Args)]
pub struct LineageArgs {
    /// An output file's digest (`sha256:...`, e.g. of `model.pkl`), or `name@version`
    #[arg(required_unless_present = "uses", conflicts_with = "uses")]
    target: Option<String>,
    /// List every version whose record used this data snapshot or code tree (`sha256:...`)
    #[arg(long, value_name = "TREE DIGEST")]
    uses: Option<String>,
    /// With `--uses`: only the versions in this stage now (by the signed audit log), e.g. `production`
    #[arg(long, requires = "uses", value_name = "STAGE")]
    stage: Option<String>,
    /// Print the result as JSON
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Output format: `text` (an indented tree) or `dot` (Graphviz)
    #[arg(long, default_value = "text", value_parser = ["text", "dot"])]
    format: String,
}

/// Run `repro lineage`.
pub fn run(ctx: &super::Ctx, args: LineageArgs) -> Result<u8> {
    let store = &*ctx.store()?;
    if let Some(tree) = &args.uses {
        let d: repro_store::TreeDigest = tree.parse().map_err(|e| UserError(format!("{e}")))?;
        let u = match &args.stage {
            None => lineage::uses(store, &d)?,
            Some(stage) => {
                let stage: repro_governance::Stage =
                    stage.parse().map_err(super::governance::lift)?;
                // From the chain, not the stage files: a moved file changes nothing here.
                let (u, diffs) = lineage::uses_in_stage(store, &d, stage)?;
                if !diffs.is_empty() {
                    eprintln!(
                        "warning: governance files disagree with the audit log (answering from the log):\n  {}",
                        diffs.join("\n  ")
                    );
                }
                u
            }
        };
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
