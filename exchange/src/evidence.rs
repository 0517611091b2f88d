//! The exam package: one file holding a version and everything an examiner
//! asks about it, checkable offline by `repro import` and readable without
//! `repro` at all.
//!
//! ```text
//! evidence.json                 manifest: format, model, record, every member with its SHA-256
//! EVIDENCE.md                   what it holds, in words: stage, approvals, decisions, policies, audit head
//! SHA256SUMS                    `sha256sum -c SHA256SUMS` checks every member
//! rebuild.tar                   the rebuild kit (`repro export`): record, attestations, keys, recipe, lock, code, data, images, outputs
//! audit/log.jsonl, audit/head   the store's signed, hash-chained audit log
//! audit/checkpoint.json         a signed checkpoint of its head (when exported with a key)
//! identities/<keyid hex>.json   every registered identity, each backed by the log
//! registry/history.jsonl        the model's stage history
//! approvals/<record hex>/<hex>  the signed approvals of every record of the version
//! policies/<hex>                every policy a decision about the model was made under, and the one in force
//! card/model-card.md            the model card, when one was written
//! keys/<hex>                    the public key of every audit entry's signer and every identity
//! ```
//!
//! Import checks every member against `SHA256SUMS` and the manifest, the
//! rebuild kit as `repro import` does, the audit log's chain and
//! signatures (and the checkpoint), that the identities are what the log
//! says, and every approval's signature, before anything becomes visible.
//! A store with no audit log of its own adopts the bundle's governance
//! (log, identities, history, stages, policy in force), so `repro registry
//! show`, `repro audit verify` and `repro verify` then answer as the
//! exporting store did; a store with its own log keeps it and takes the
//! approvals, the card and the policies.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use repro_evidence::attest::Identity;
use repro_evidence::exit::{Tampered, UserError};
use repro_evidence::{audit, keys, VersionRef};
use repro_store::{Hash, Ns, RecordDigest, Store};
use serde::{Deserialize, Serialize};

/// The format this version writes.
pub const FORMAT: u32 = 1;
/// The first member.
pub const MANIFEST: &str = "evidence.json";
/// The media type in the manifest.
pub const MEDIA_TYPE: &str = "application/vnd.repro.evidence.v1+json";

/// The manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MEDIA_TYPE`].
    pub media_type: String,
    /// [`FORMAT`].
    pub format: u32,
    /// `name@version`.
    pub model: String,
    /// The record (the staged one, else the latest).
    pub record: String,
    /// Every other member and its `sha256:`.
    pub members: BTreeMap<String, String>,
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// `name@version`.
    pub model: String,
    /// The record.
    pub record: String,
    /// How many members.
    pub members: usize,
    /// Whether a signed checkpoint of the audit head is included.
    pub checkpoint: bool,
}

/// What [`import`] did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `name@version`.
    pub model: String,
    /// The record.
    pub record: String,
    /// Approvals installed.
    pub approvals: usize,
    /// Whether this store adopted the bundle's governance (log, identities, stages).
    pub adopted: bool,
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", Hash::of(bytes).hex())
}

/// Write the exam package of `what` (`name@version`) to `out`. With `key`
/// (and the identity it signs as) the audit head is checkpointed.
pub fn export(
    store: &Store,
    what: &str,
    out: &Path,
    key: Option<(&SigningKey, &Identity)>,
) -> Result<Exported> {
    let m = VersionRef::parse(what)?;
    let _lock = store.lock_shared()?;
    let state = repro_governance::chain::checked(store)?;
    let verified = audit::verify(store)?;
    if !verified.intact {
        bail!(Tampered(
            "the audit log does not verify; an evidence bundle of it would carry tampered evidence\nhint: run `repro audit verify`".to_string()
        ));
    }
    let staged = state
        .stages
        .get(&(m.name.clone(), m.version.clone()))
        .map(|(_, r)| *r);
    let record = match staged {
        Some(r) => r,
        None => store.resolve_record(&m.name, &m.version)?,
    };
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    // The rebuild kit, through the store's scratch.
    let scratch = store.scratch("evidence-")?;
    let kit = scratch.path().join("rebuild.tar");
    crate::bundle::export(store, &record.to_string(), &kit)?;
    members.insert("rebuild.tar".into(), std::fs::read(&kit)?);
    drop(scratch);

    let log = audit::log_path(store);
    members.insert(
        "audit/log.jsonl".into(),
        std::fs::read(&log).with_context(|| format!("cannot read `{}`", log.display()))?,
    );
    if let Ok(head) = std::fs::read(audit::head_path(store)) {
        members.insert("audit/head".into(), head);
    }
    let checkpoint = match key {
        Some((k, who)) => {
            let env = audit::checkpoint(store, k, who)?;
            members.insert("audit/checkpoint.json".into(), env.to_vec_pretty()?);
            true
        }
        None => false,
    };
    for r in state.identities.values() {
        let hex = r.keyid.strip_prefix("sha256:").unwrap_or(&r.keyid);
        members.insert(
            format!("identities/{hex}.json"),
            serde_json::to_vec_pretty(r)?,
        );
    }
    // Every key a check of the log, the checkpoint or an approval needs.
    let mut keyids: std::collections::BTreeSet<String> = state.identities.keys().cloned().collect();
    for (_, e) in audit::entries(store)? {
        keyids.insert(e.actor.keyid);
    }
    if let Some((k, _)) = key {
        keyids.insert(keys::key_id(&k.verifying_key()).to_string());
    }
    for id in keyids {
        if let Some(k) = keys::lookup_in_store(store, &id) {
            members.insert(
                format!("keys/{}", keys::key_id(&k).hex()),
                k.as_bytes().to_vec(),
            );
        }
    }
    let history = repro_governance::registry::history_path(store, &m.name);
    if let Ok(bytes) = std::fs::read(&history) {
        members.insert("registry/history.jsonl".into(), bytes);
    }
    for r in store.records_of(&m.name, &m.version)? {
        let dir = store.ns_dir(Ns::Approvals).join(r.hex());
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            members.insert(
                format!("approvals/{}/{name}", r.hex()),
                std::fs::read(e.path())?,
            );
        }
    }
    let mut policies: Vec<String> = repro_governance::registry::history(store, &m.name)?
        .into_iter()
        .filter_map(|h| h.policy)
        .collect();
    policies.extend(state.policy.as_ref().map(|(d, _)| d.clone()));
    for p in policies {
        if let Ok(d) = p.parse::<repro_store::BlobDigest>() {
            members.insert(format!("policies/{}", d.hex()), store.read_blob(&d)?);
        }
    }
    if let Ok(text) = std::fs::read_to_string(store.ns_dir(Ns::Cards).join(record.hex())) {
        if let Ok(d) = text.trim().parse::<repro_store::BlobDigest>() {
            members.insert("card/model-card.md".into(), store.read_blob(&d)?);
        }
    }
    members.insert(
        "EVIDENCE.md".into(),
        summary(store, &m, &record, &state)?.into_bytes(),
    );

    let sums: String = members
        .iter()
        .map(|(n, b)| format!("{}  {n}\n", Hash::of(b).hex()))
        .collect();
    let manifest = Manifest {
        media_type: MEDIA_TYPE.into(),
        format: FORMAT,
        model: m.to_string(),
        record: record.to_string(),
        members: members.iter().map(|(n, b)| (n.clone(), sha(b))).collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    let count = members.len();
    repro_store::write_atomic_with(out, |w: &mut dyn Write| {
        let mut tar = tar::Builder::new(w);
        let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, bytes)
        };
        add(MANIFEST, &manifest_bytes)?;
        add("SHA256SUMS", sums.as_bytes())?;
        for (n, b) in &members {
            add(n, b)?;
        }
        tar.into_inner()?.flush()?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Exported {
        model: m.to_string(),
        record: record.to_string(),
        members: count,
        checkpoint,
    })
}

/// The bundle's summary for a reader without `repro`.
fn summary(
    store: &Store,
    m: &VersionRef,
    record: &RecordDigest,
    state: &repro_governance::chain::State,
) -> Result<String> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let stage = state
        .stages
        .get(&(m.name.clone(), m.version.clone()))
        .map_or("candidate".to_string(), |(st, _)| st.to_string());
    writeln!(s, "# Evidence of {m}\n")?;
    writeln!(s, "- Record: `{record}`")?;
    writeln!(s, "- Stage (by the signed audit log): {stage}")?;
    if let Some((d, v)) = &state.policy {
        writeln!(s, "- Policy in force: version {v}, `{d}` (in `policies/`)")?;
    }
    let v = audit::verify(store)?;
    writeln!(
        s,
        "- Audit log: {} entries, intact when exported",
        v.last_seq
    )?;
    writeln!(s, "\n## Approvals\n")?;
    let opened = repro_governance::registry::open(store, record)?;
    let judged = repro_governance::approvals::list(store, record, &opened.builder)?;
    if judged.is_empty() {
        writeln!(s, "none")?;
    }
    for j in &judged {
        if let Some(a) = &j.approval {
            writeln!(
                s,
                "- {} by {} at {}: {} ({})",
                a.role,
                a.approver,
                a.time,
                a.reason,
                match &j.why_not {
                    None => "counts".to_string(),
                    Some(w) => format!("DOES NOT COUNT: {w}"),
                }
            )?;
        }
    }
    writeln!(s, "\n## Decisions\n")?;
    for h in repro_governance::registry::history(store, &m.name)? {
        writeln!(
            s,
            "- {} {} {}@{} {} -> {} by {}{}{}",
            h.time,
            h.action,
            m.name,
            h.version,
            h.from,
            h.to,
            h.actor,
            h.policy
                .map(|p| format!(" under `{p}`"))
                .unwrap_or_default(),
            h.reason
                .map(|r| format!(", reason: {r}"))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        s,
        "\n## Checking it\n\n- Without repro: `tar xf <bundle> && sha256sum -c SHA256SUMS`; every member is plain JSON, TOML or Markdown, and `rebuild.tar` is an OCI image layout.\n- With repro, offline: `repro import <bundle>` checks every signature and the audit chain, then `repro verify {m}` rebuilds it byte for byte."
    )?;
    Ok(s)
}

/// Whether the file at `path` is an exam package (its first member is [`MANIFEST`]).
pub fn is_evidence_bundle(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut a = tar::Archive::new(f);
    let Ok(mut entries) = a.entries() else {
        return false;
    };
    matches!(
        entries.next(),
        Some(Ok(e)) if e.path().ok().and_then(|p| p.to_str().map(str::to_string)).as_deref() == Some(MANIFEST)
    )
}

/// Import the exam package at `path` into `store`: check everything, then
/// install (see the module docs).
pub fn import(store: &Store, path: &Path) -> Result<Imported> {
    let _lock = store.lock_shared()?;
    let tampered = |why: String| -> anyhow::Error {
        Tampered(format!("the evidence bundle `{}` {why}", path.display())).into()
    };
    let f =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut a = tar::Archive::new(f);
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in a
        .entries()
        .with_context(|| format!("cannot read `{}`", path.display()))?
    {
        let mut e = e.with_context(|| format!("cannot read `{}`", path.display()))?;
        let name = e
            .path()
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
            .ok_or_else(|| tampered("has a member whose name is not UTF-8".into()))?;
        if name
            .split('/')
            .any(|c| c.is_empty() || c == ".." || c == ".")
        {
            return Err(tampered(format!("has a member named `{name}`")));
        }
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)?;
        if members.insert(name.clone(), bytes).is_some() {
            return Err(tampered(format!("holds `{name}` twice")));
        }
    }
    let manifest: Manifest = serde_json::from_slice(
        members
            .get(MANIFEST)
            .ok_or_else(|| UserError(format!("`{}` is not an evidence bundle", path.display())))?,
    )
    .map_err(|e| tampered(format!("has a manifest that does not parse: {e}")))?;
    if manifest.media_type != MEDIA_TYPE || manifest.format != FORMAT {
        bail!(UserError(format!(
            "`{}` is an evidence bundle of format {} (`{}`); this repro reads format {FORMAT}",
            path.display(),
            manifest.format,
            manifest.media_type
        )));
    }
    // Every member is listed, with its digest, and nothing else is there.
    for (name, bytes) in &members {
        if name == MANIFEST || name == "SHA256SUMS" {
            continue;
        }
        match manifest.members.get(name) {
            None => {
                return Err(tampered(format!(
                    "holds `{name}`, which its manifest does not list"
                )))
            }
            Some(d) if *d != sha(bytes) => {
                return Err(tampered(format!(
                    "holds `{name}` with digest {}, and its manifest says {d}",
                    sha(bytes)
                )))
            }
            Some(_) => {}
        }
    }
    for name in manifest.members.keys() {
        if !members.contains_key(name) {
            return Err(tampered(format!(
                "lacks `{name}`, which its manifest lists"
            )));
        }
    }
    let record: RecordDigest = manifest
        .record
        .parse()
        .map_err(|e| tampered(format!("names a record that does not parse: {e}")))?;

    // The rebuild kit, as `repro import` checks it.
    let scratch = store.scratch("evidence-")?;
    let kit = scratch.path().join("rebuild.tar");
    std::fs::write(
        &kit,
        members
            .get("rebuild.tar")
            .ok_or_else(|| tampered("lacks `rebuild.tar`".into()))?,
    )?;
    let imported = crate::bundle::import(store, &kit)?;
    if imported.record != record {
        return Err(tampered(format!(
            "names record {record}, and its rebuild kit holds {}",
            imported.record
        )));
    }

    // Governance, checked in a scratch store: the log's chain and
    // signatures (and the checkpoint), and the identities against the log.
    let check = Store::open(&scratch.path().join("check"))?;
    for (name, bytes) in &members {
        if let Some(hex) = name.strip_prefix("keys/") {
            if Hash::of(bytes).hex() != hex {
                return Err(tampered(format!(
                    "holds `{name}`, whose bytes do not hash to its name"
                )));
            }
            check_put(&check, bytes)?;
        }
    }
    let log = members.get("audit/log.jsonl").cloned().unwrap_or_default();
    std::fs::create_dir_all(audit::dir(&check))?;
    std::fs::write(audit::log_path(&check), &log)?;
    if let Some(h) = members.get("audit/head") {
        std::fs::write(audit::head_path(&check), h)?;
    }
    let mut against = Vec::new();
    if let Some(cp) = members.get("audit/checkpoint.json") {
        let env = keys::Envelope::parse(cp)
            .map_err(|e| tampered(format!("has a checkpoint that does not parse: {e}")))?;
        against.push(audit::open_checkpoint(
            &env,
            "audit/checkpoint.json",
            |id| keys::lookup_in_store(&check, id),
        )?);
    }
    let v = audit::verify_against(&check, &against)?;
    if !v.intact {
        let first = v
            .problems
            .first()
            .map(|p| p.message.clone())
            .unwrap_or_default();
        return Err(tampered(format!(
            "carries an audit log that does not verify: {first}"
        )));
    }
    for (name, bytes) in &members {
        if name.starts_with("identities/") {
            let dest = check
                .ns_dir(Ns::Identities)
                .join(name.trim_start_matches("identities/"));
            check.write_atomic(&dest, bytes)?;
        }
    }
    let state = repro_governance::chain::replay(&check)?;
    let diffs: Vec<String> = repro_governance::chain::differences(&check, &state)?
        .into_iter()
        .filter(|d| d.contains("identit") || d.contains("without authority"))
        .collect();
    if !diffs.is_empty() {
        return Err(tampered(format!(
            "carries identities that disagree with its audit log:\n  {}",
            diffs.join("\n  ")
        )));
    }
    // Every approval is a signed envelope by a key the log registered.
    let mut approvals = Vec::new();
    for (name, bytes) in &members {
        let Some(rest) = name.strip_prefix("approvals/") else {
            continue;
        };
        let Some((rec, file)) = rest.split_once('/') else {
            return Err(tampered(format!("holds `{name}`")));
        };
        if Hash::of(bytes).hex() != file {
            return Err(tampered(format!(
                "holds `{name}`, whose bytes do not hash to its name"
            )));
        }
        let env =
            keys::Envelope::parse(bytes).map_err(|e| tampered(format!("holds `{name}`: {e}")))?;
        keys::open(&env, |id| {
            state
                .identities
                .get(id)
                .and_then(|r| keys::parse_public(&r.public_key).ok())
        })
        .map_err(|e| {
            tampered(format!(
                "holds `{name}`, whose signature does not check out: {e}"
            ))
        })?;
        approvals.push((rec.to_string(), file.to_string(), bytes.clone()));
    }

    // Install. Approvals, the card and the policies always.
    for (rec, file, bytes) in &approvals {
        let dest = store.ns_dir(Ns::Approvals).join(rec).join(file);
        store.write_atomic(&dest, bytes)?;
    }
    for (name, bytes) in &members {
        if name.starts_with("policies/") {
            store.put_bytes(bytes)?;
        }
    }
    if let Some(card) = members.get("card/model-card.md") {
        let d = store.put_bytes(card)?;
        store.write_atomic(
            &store.ns_dir(Ns::Cards).join(record.hex()),
            format!("{d}\n").as_bytes(),
        )?;
    }
    // Governance only into a store without a log of its own.
    let adopted =
        !audit::log_path(store).exists() && repro_governance::identities::list(store)?.is_empty();
    if adopted {
        for (name, bytes) in &members {
            if let Some(rest) = name.strip_prefix("identities/") {
                store.write_atomic(&store.ns_dir(Ns::Identities).join(rest), bytes)?;
                let r: repro_governance::identities::Registered = serde_json::from_slice(bytes)?;
                keys::publish(store, &keys::parse_public(&r.public_key)?)?;
            }
        }
        for (name, bytes) in &members {
            if name.starts_with("keys/") {
                check_put(store, bytes)?;
            }
        }
        if let Some(h) = members.get("registry/history.jsonl") {
            let m = VersionRef::parse(&manifest.model)?;
            store.write_atomic(&repro_governance::registry::history_path(store, &m.name), h)?;
        }
        for ((name, version), (stage, rec)) in &state.stages {
            let dest = store
                .ns_dir(Ns::Stages)
                .join(stage.as_str())
                .join(name)
                .join(version);
            store.write_atomic(&dest, format!("{rec}\n").as_bytes())?;
        }
        if let Some((d, _)) = &state.policy {
            let hex = d.strip_prefix("sha256:").unwrap_or(d);
            if let Some(bytes) = members.get(&format!("policies/{hex}")) {
                store.write_atomic(&store.ns_dir(Ns::Policy), bytes)?;
            }
        }
        store.write_atomic(&audit::log_path(store), &log)?;
        if let Some(h) = members.get("audit/head") {
            store.write_atomic(&audit::head_path(store), h)?;
        }
    }
    drop(scratch);
    Ok(Imported {
        model: manifest.model,
        record: record.to_string(),
        approvals: approvals.len(),
        adopted,
    })
}

/// Put a 32-byte public key blob into `s` if it parses as one.
fn check_put(s: &Store, bytes: &[u8]) -> Result<()> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(&raw) {
            keys::publish(s, &k)?;
        }
    }
    Ok(())
}
