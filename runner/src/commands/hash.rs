//! `repro hash`.

use std::path::PathBuf;

use anyhow::Result;
use repro_evidence::exit::{self, UserError};

use super::StoreUse;

/// `repro hash` stores nothing.
pub const STORE: StoreUse = StoreUse::None;

/// `repro hash`: digests computed from scratch (no stat cache, no store),
/// the files of a folder hashed in parallel.
/// `repro hash` arguments.
#[derive(clap::Args)]
pub struct HashArgs {
    /// Files or folders; with one, only its digest is printed, with several `<digest>  <path>` per line
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Print a JSON array of {path, kind, digest, size}
    #[arg(long)]
    json: bool,
}

/// Run `repro hash`.
pub fn run(_ctx: &super::Ctx, args: HashArgs) -> Result<u8> {
    let (paths, json) = (&args.paths, args.json);
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
