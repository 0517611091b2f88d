//! The audit log: append-only, hash-chained, signed entries for every state
//! change (build, verify, approval, promotion, rollback, gc, key change, ...).
//!
//! The log is `v1/audit/log.jsonl` in the store: one JSON object per line.
//! Each entry carries its sequence number, the time, the SHA-256 of the
//! previous entry's line (`prev`; the first entry's is 64 zeros), what
//! happened (`kind`, `subject`, `details`), who did it (the signing key's
//! identity) and an ed25519 signature over the entry without its
//! signature. Editing, deleting, inserting or reordering an entry breaks the
//! chain or a signature; truncating the end is caught by the head file
//! `v1/audit/head` (the last sequence number and entry hash, rewritten
//! atomically after every append). Appends are serialized by an exclusive
//! lock on `v1/audit/lock`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use repro_store::{Hash, Store};
use serde::{Deserialize, Serialize};

use crate::attest::Identity;
use crate::keys;

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the log, as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// 1, 2, 3, ...
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// Hex SHA-256 of the previous entry's line ([`GENESIS`] for the first).
    pub prev: String,
    /// What happened: `build`, `verify`, `approve`, `promote`, `rollback`, `gc`, `key`, ...
    pub kind: String,
    /// What it happened to, e.g. `name@version` or a digest.
    pub subject: String,
    /// Who: the signing key's identity.
    pub actor: Identity,
    /// Everything else worth keeping (digests, stages, reasons).
    pub details: serde_json::Value,
    /// Base64 ed25519 signature over the entry serialized without this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
}

impl Entry {
    /// The bytes the signature covers: the entry without `sig`, compact JSON.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.sig.clear();
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }
}

/// What to append.
#[derive(Debug, Clone)]
pub struct Event {
    /// `build`, `verify`, `approve`, ...
    pub kind: String,
    /// `name@version`, a digest, ...
    pub subject: String,
    /// Anything else.
    pub details: serde_json::Value,
}

impl Event {
    /// An event of `kind` about `subject` with `details`.
    pub fn new(kind: &str, subject: impl Into<String>, details: serde_json::Value) -> Event {
        Event { kind: kind.to_string(), subject: subject.into(), details }
    }
}

/// The audit directory of a store.
pub fn dir(store: &Store) -> PathBuf {
    store.layout_dir().join("audit")
}

/// The log file.
pub fn log_path(store: &Store) -> PathBuf {
    dir(store).join("log.jsonl")
}

/// The head file: `<seq> <hex hash of the last line>`.
pub fn head_path(store: &Store) -> PathBuf {
    dir(store).join("head")
}

/// Append `event`, signed by `key` as `actor`. Returns the entry written.
pub fn append(store: &Store, key: &SigningKey, actor: &Identity, event: Event) -> Result<Entry> {
    let d = dir(store);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create `{}`", d.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("lock"))
        .with_context(|| format!("cannot open `{}`", d.join("lock").display()))?;
    fs4::fs_std::FileExt::lock_exclusive(&lock).context("cannot lock the audit log")?;
    let (seq, prev) = read_head(store)?;
    let mut entry = Entry {
        seq: seq + 1,
        time: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        prev,
        kind: event.kind,
        subject: event.subject,
        actor: Identity { keyid: keys::key_id(&key.verifying_key()).to_string(), ..actor.clone() },
        details: event.details,
        sig: String::new(),
    };
    entry.sig = B64.encode(key.sign(&entry.signed_bytes()).to_bytes());
    let mut line = serde_json::to_vec(&entry)?;
    line.push(b'\n');
    let path = log_path(store);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    f.write_all(&line).with_context(|| format!("cannot append to `{}`", path.display()))?;
    f.sync_all()?;
    keys::publish(store, &key.verifying_key())?;
    let hash = Hash::of(&line[..line.len() - 1]).hex();
    let head = head_path(store);
    let tmp = d.join(format!(".head.{}", std::process::id()));
    std::fs::write(&tmp, format!("{} {hash}\n", entry.seq))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &head)?;
    Ok(entry)
}

/// The head: the last sequence number and the hash of the last line
/// (`(0, GENESIS)` for an empty log).
pub fn read_head(store: &Store) -> Result<(u64, String)> {
    match std::fs::read_to_string(head_path(store)) {
        Ok(text) => {
            let (seq, hash) = text
                .trim()
                .split_once(' ')
                .with_context(|| format!("`{}` is malformed", head_path(store).display()))?;
            Ok((seq.parse().context("the audit head's sequence number")?, hash.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, GENESIS.to_string())),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", head_path(store).display())),
    }
}
