//! `repro attest list|import`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use repro_evidence::record::resolve_record_ref;
use repro_evidence::{attest, audit, exit, keys};

use super::{Ctx, StoreUse};

/// `list` only reads; `import` adds to the store.
pub fn store_use(cmd: &AttestCommand) -> StoreUse {
    match cmd {
        AttestCommand::List { .. } => StoreUse::Open,
        AttestCommand::Import { .. } => StoreUse::Shared,
    }
}

/// `repro attest` subcommands.
#[derive(Subcommand)]
pub enum AttestCommand {
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

/// Run `repro attest`.
pub fn run(ctx: &Ctx, cmd: AttestCommand) -> Result<u8> {
    match cmd {
        AttestCommand::List { record, json } => list(ctx, record, json),
        AttestCommand::Import {
            file,
            key,
            for_record,
        } => import(ctx, file, key, for_record),
    }
}

fn list(ctx: &Ctx, record: String, json: bool) -> Result<u8> {
    let store = ctx.store()?;
    let d = resolve_record_ref(&store, &record)?;
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
        let d = &c.details;
        let sig = match &c.signature {
            Ok(_) => "signature ok".to_string(),
            Err(e) => format!("SIGNATURE NOT VERIFIED: {e}"),
        };
        println!(
            "{}  {}  by {}  on {} ({}, {})  [{sig}]  {}",
            p.verification_result,
            p.time_verified,
            d.identity,
            d.platform.cpu_model,
            d.platform.kernel,
            d.platform.backend,
            c.digest.short(),
        );
    }
    Ok(attest::unverified_is_tampering(&found, &record))
}

fn import(
    ctx: &Ctx,
    file: PathBuf,
    key: Option<PathBuf>,
    for_record: Option<String>,
) -> Result<u8> {
    let store = ctx.store()?;
    let bytes =
        std::fs::read(&file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let key = key
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read `{}`", p.display()))?;
            keys::parse_public(&text).with_context(|| format!("`{}`", p.display()))
        })
        .transpose()?;
    let expect = for_record
        .map(|r| resolve_record_ref(&store, &r))
        .transpose()?;
    let c = attest::import(&store, &bytes, key, expect)?;
    let (st, details) = (&c.statement, &c.details);
    let event = audit::Event::new(
        "attest-import",
        details.model.clone(),
        serde_json::json!({
            "attestation": c.digest.to_string(),
            "record": st.record().map(|r| r.to_string()),
            "result": st.predicate.verification_result,
            "by": details.identity,
        }),
    );
    audit::log(&store, None, event)?;
    println!(
        "imported {}: {} of {} by {}",
        c.digest, st.predicate.verification_result, details.model, details.identity
    );
    Ok(exit::OK)
}
