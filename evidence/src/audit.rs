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
//!
//! The head file lives in the store, so whoever can truncate the log can
//! rewrite the head too. What catches that is a [`Checkpoint`] kept
//! outside the store: a signed statement of the head (sequence number and
//! hash of the last entry, the time, the signer), as transparency logs
//! publish theirs. [`checkpoint`] signs one as a DSSE envelope of type
//! [`CHECKPOINT_PAYLOAD_TYPE`]; its compact text form is `<seq>:<hex>`.
//! [`verify_against`] checks that the log still holds every entry the
//! checkpoints name (it may have grown since), and [`verify`] treats an
//! empty or missing log in a store that holds records, attestations,
//! approvals or identities as tampering.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use repro_store::{Hash, Store};
use serde::{Deserialize, Serialize};

use crate::attest::Identity;
use crate::keys::{self, Envelope};

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
        Event {
            kind: kind.to_string(),
            subject: subject.into(),
            details,
        }
    }
}

/// The audit directory of a store.
pub fn dir(store: &Store) -> PathBuf {
    store.ns_dir(repro_store::Ns::Audit)
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
        time: crate::clock::now(),
        prev,
        kind: event.kind,
        subject: event.subject,
        actor: Identity {
            keyid: keys::key_id(&key.verifying_key()).to_string(),
            ..actor.clone()
        },
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
    f.write_all(&line)
        .with_context(|| format!("cannot append to `{}`", path.display()))?;
    f.sync_all()?;
    keys::publish(store, &key.verifying_key())?;
    let hash = Hash::of(&line[..line.len() - 1]).hex();
    let head = head_path(store);
    store.write_atomic(&head, format!("{} {hash}\n", entry.seq).as_bytes())?;
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
            Ok((
                seq.parse().context("the audit head's sequence number")?,
                hash.to_string(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, GENESIS.to_string())),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", head_path(store).display())),
    }
}

/// The lines of the log (without their newlines); empty when there is no log.
fn read_lines(store: &Store) -> Result<Vec<Vec<u8>>> {
    let path = log_path(store);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok(lines)
}

/// Every entry with its line as written, in file order. Fails on a line
/// that is not an entry (`repro audit verify` names it).
pub fn entries(store: &Store) -> Result<Vec<(String, Entry)>> {
    read_lines(store)?
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let text = String::from_utf8(line).ok();
            let entry = text.as_deref().and_then(|t| serde_json::from_str::<Entry>(t).ok());
            match (text, entry) {
                (Some(t), Some(e)) => Ok((t, e)),
                _ => Err(anyhow::anyhow!(
                    "line {} of `{}` is not an audit entry\nhint: run `repro audit verify` to see what is wrong with the log",
                    i + 1,
                    log_path(store).display()
                )),
            }
        })
        .collect()
}

/// What is wrong with one place in the log.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A line that is not an entry.
    Malformed,
    /// An entry whose content changed after it was written.
    Edited,
    /// An entry signed by a key the store does not know.
    UnknownKey,
    /// Entries absent from the middle of the log.
    Missing,
    /// An entry that occurs more than once.
    Duplicate,
    /// An entry that comes after a later one.
    OutOfOrder,
    /// Entries removed from the end.
    Truncated,
    /// The head file and the log disagree in another way (missing head, entries after the head).
    Head,
    /// The log does not hold an entry that a checkpoint (or `--expect-head`)
    /// names: entries were removed from the end, or the history was rewritten.
    Checkpoint,
    /// The log is empty or missing in a store that holds records,
    /// attestations, approvals or identities: it was deleted or emptied.
    Emptied,
}

/// One finding of [`verify`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The entry it is about, when known.
    pub seq: Option<u64>,
    /// The line of the log (1-based), when it is about one line.
    pub line: Option<usize>,
    /// What kind of damage.
    pub kind: ProblemKind,
    /// The finding in words, naming the entry.
    pub message: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The log file.
    pub log: String,
    /// How many lines it has.
    pub lines: usize,
    /// The sequence number of its last entry (0 when empty).
    pub last_seq: u64,
    /// The head's sequence number, when there is a head.
    pub head_seq: Option<u64>,
    /// How many checkpoints the log was checked against.
    pub checkpoints: usize,
    /// Whether nothing is wrong.
    pub intact: bool,
    /// Everything that is wrong, in log order.
    pub problems: Vec<Problem>,
}

/// Check the whole log: every line is an entry, the sequence numbers run
/// 1, 2, 3, ..., each `prev` is the hash of the entry before, every
/// signature checks out with its key (looked up in the store), and the head
/// matches the last line. Each problem names the entry it is about. An
/// empty or missing log in a store that holds records, attestations,
/// approvals or identities is a problem of kind [`ProblemKind::Emptied`].
///
/// The head file is kept in the store beside the log: a log truncated
/// together with its head passes. [`verify_against`] checkpoints kept
/// elsewhere to catch that.
pub fn verify(store: &Store) -> Result<Verified> {
    verify_against(store, &[])
}

/// [`verify`], and check that the log holds, at each checkpoint's sequence
/// number, the entry whose line hashes to the checkpoint's hash: a log that
/// grew after a checkpoint passes it; a truncated log (whatever its head
/// file says), a deleted log or a rewritten history does not, and each such
/// checkpoint is a problem of kind [`ProblemKind::Checkpoint`] naming what
/// is missing. The checkpoints must have been checked already (see
/// [`open_checkpoint`]); this only compares.
pub fn verify_against(store: &Store, checkpoints: &[Checkpoint]) -> Result<Verified> {
    let lines = read_lines(store)?;
    let parsed: Vec<(String, Option<Entry>, Option<String>)> = lines
        .iter()
        .map(|l| {
            let hash = Hash::of(l).hex();
            match serde_json::from_slice::<Entry>(l) {
                Ok(e) => (hash, Some(e), None),
                Err(err) => (hash, None, Some(err.to_string())),
            }
        })
        .collect();
    let all: std::collections::HashSet<u64> = parsed
        .iter()
        .filter_map(|(_, e, _)| e.as_ref().map(|e| e.seq))
        .collect();
    let mut problems = Vec::new();
    let mut first_line: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut max_seen = 0u64;
    let mut prev_parsed: Option<(u64, &str)> = None;
    for (i, (hash, entry, err)) in parsed.iter().enumerate() {
        let line = i + 1;
        let Some(e) = entry else {
            problems.push(Problem {
                seq: None,
                line: Some(line),
                kind: ProblemKind::Malformed,
                message: format!(
                    "line {line} (after entry {max_seen}) is not an audit entry: {}",
                    err.as_deref().unwrap_or("unreadable")
                ),
            });
            continue;
        };
        let seq = e.seq;
        // Order: duplicates, reordering, gaps.
        if let Some(first) = first_line.get(&seq) {
            problems.push(Problem {
                seq: Some(seq),
                line: Some(line),
                kind: ProblemKind::Duplicate,
                message: format!(
                    "entry {seq} appears twice (lines {first} and {line}): an entry was inserted"
                ),
            });
        } else if seq <= max_seen {
            problems.push(Problem {
                seq: Some(seq),
                line: Some(line),
                kind: ProblemKind::OutOfOrder,
                message: format!(
                    "entry {seq} is out of order: it comes after entry {max_seen} (line {line})"
                ),
            });
        } else if seq > max_seen + 1 {
            let gone: Vec<u64> = (max_seen + 1..seq).filter(|k| !all.contains(k)).collect();
            if let (Some(a), Some(b)) = (gone.first(), gone.last()) {
                let which = if a == b {
                    format!("entry {a} is")
                } else {
                    format!("entries {a} to {b} are")
                };
                problems.push(Problem {
                    seq: Some(*a),
                    line: Some(line),
                    kind: ProblemKind::Missing,
                    message: format!("{which} missing (entry {seq} follows entry {max_seen})"),
                });
            }
        }
        // The chain: this entry's `prev` is the hash of the one before.
        match prev_parsed {
            Some((p, p_hash)) if p + 1 == seq && e.prev != p_hash => problems.push(Problem {
                seq: Some(p),
                line: Some(line - 1),
                kind: ProblemKind::Edited,
                message: format!(
                    "entry {p} was edited: its hash does not match entry {seq}'s prev"
                ),
            }),
            None if seq == 1 && e.prev != GENESIS => problems.push(Problem {
                seq: Some(1),
                line: Some(line),
                kind: ProblemKind::Edited,
                message: "entry 1 was edited: its prev is not the start of a log".to_string(),
            }),
            _ => {}
        }
        // The signature.
        match keys::lookup_in_store(store, &e.actor.keyid) {
            None => problems.push(Problem {
                seq: Some(seq),
                line: Some(line),
                kind: ProblemKind::UnknownKey,
                message: format!(
                    "entry {seq} is signed by key `{}`, which is not in the store",
                    e.actor.keyid
                ),
            }),
            Some(vk) => {
                let ok = B64
                    .decode(&e.sig)
                    .ok()
                    .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                    .is_some_and(|s| vk.verify_strict(&e.signed_bytes(), &s).is_ok());
                if !ok {
                    problems.push(Problem {
                        seq: Some(seq),
                        line: Some(line),
                        kind: ProblemKind::Edited,
                        message: format!(
                            "entry {seq} was edited: its signature does not check out"
                        ),
                    });
                }
            }
        }
        first_line.entry(seq).or_insert(line);
        max_seen = max_seen.max(seq);
        prev_parsed = Some((seq, hash));
    }
    // The end of the log against the head.
    let last = parsed
        .last()
        .map(|(h, e, _)| (e.as_ref().map(|e| e.seq), h.as_str()));
    let head = read_head_file(store);
    let head_seq = head.as_ref().ok().and_then(|h| h.as_ref().map(|(s, _)| *s));
    match (head, last) {
        (Err(msg), _) => problems.push(Problem {
            seq: None,
            line: None,
            kind: ProblemKind::Head,
            message: msg,
        }),
        (Ok(None), None) => {}
        (Ok(None), Some(_)) => problems.push(Problem {
            seq: None,
            line: None,
            kind: ProblemKind::Head,
            message: format!(
                "the head file `{}` is missing: the end of the log cannot be checked",
                head_path(store).display()
            ),
        }),
        (Ok(Some((hs, _))), None) => problems.push(Problem {
            seq: Some(hs),
            line: None,
            kind: ProblemKind::Truncated,
            message: format!(
                "the log is empty but the head says {hs}: entries were removed from the end"
            ),
        }),
        (Ok(Some((hs, hh))), Some((last_seq, last_hash))) => {
            let ls = last_seq.unwrap_or(max_seen);
            if ls < hs {
                problems.push(Problem {
                    seq: Some(ls + 1),
                    line: None,
                    kind: ProblemKind::Truncated,
                    message: format!(
                        "the log ends at entry {ls} but the head says {hs}: entries were removed from the end"
                    ),
                });
            } else if ls > hs {
                problems.push(Problem {
                    seq: Some(hs + 1),
                    line: None,
                    kind: ProblemKind::Head,
                    message: format!(
                        "the log goes on to entry {ls} but the head says {hs}: entries were added at the end without the head"
                    ),
                });
            } else if last_hash != hh {
                problems.push(Problem {
                    seq: Some(hs),
                    line: Some(parsed.len()),
                    kind: ProblemKind::Edited,
                    message: format!("entry {hs} was edited: its hash does not match the head"),
                });
            }
        }
    }
    // A log that is gone while what it records is still there.
    if parsed.is_empty() {
        let held = state_held(store)?;
        if !held.is_empty() {
            problems.push(Problem {
                seq: None,
                line: None,
                kind: ProblemKind::Emptied,
                message: format!(
                    "the audit log `{}` is {} but the store holds {}: the log was deleted or emptied",
                    log_path(store).display(),
                    if log_path(store).exists() { "empty" } else { "missing" },
                    held.join(", ")
                ),
            });
        }
    }
    // The checkpoints: each names an entry the log must still hold.
    for cp in checkpoints {
        let at: Vec<(usize, &str)> = parsed
            .iter()
            .enumerate()
            .filter(|(_, (_, e, _))| e.as_ref().is_some_and(|e| e.seq == cp.seq))
            .map(|(i, (h, _, _))| (i + 1, h.as_str()))
            .collect();
        if at.iter().any(|(_, h)| h.eq_ignore_ascii_case(&cp.sha256)) {
            continue;
        }
        let (seq, line, message) = match at.first() {
            Some((line, h)) => (
                Some(cp.seq),
                Some(*line),
                format!(
                    "entry {} (line {line}) is not the entry {} names: its hash is sha256:{h}, not sha256:{}: the history was rewritten",
                    cp.seq,
                    cp.describe(),
                    cp.sha256
                ),
            ),
            None if parsed.is_empty() => (
                Some(cp.seq),
                None,
                format!(
                    "the log is empty, {} names entry {} (sha256:{}): the log was deleted or emptied",
                    cp.describe(),
                    cp.seq,
                    cp.sha256
                ),
            ),
            None if max_seen < cp.seq => (
                Some(cp.seq),
                None,
                format!(
                    "the log ends at entry {max_seen}, {} names entry {} (sha256:{}): entries were removed from the end",
                    cp.describe(),
                    cp.seq,
                    cp.sha256
                ),
            ),
            None => (
                Some(cp.seq),
                None,
                format!(
                    "entry {}, which {} names (sha256:{}), is not in the log",
                    cp.seq,
                    cp.describe(),
                    cp.sha256
                ),
            ),
        };
        problems.push(Problem {
            seq,
            line,
            kind: ProblemKind::Checkpoint,
            message,
        });
    }
    Ok(Verified {
        log: log_path(store).display().to_string(),
        lines: parsed.len(),
        last_seq: max_seen,
        head_seq,
        checkpoints: checkpoints.len(),
        intact: problems.is_empty(),
        problems,
    })
}

/// What the store holds that only logged commands make, in words (`2
/// records`, `1 attestation`, ...); empty for a store with none.
fn state_held(store: &Store) -> Result<Vec<String>> {
    use repro_store::Ns;
    /// The non-hidden entries of `dir` (none when it is missing).
    fn names(dir: &Path) -> Result<Vec<PathBuf>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list `{}`", dir.display())),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.with_context(|| format!("cannot list `{}`", dir.display()))?;
            if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path());
            }
        }
        Ok(out)
    }
    /// The entries two levels down (`<record>/<hex>`).
    fn nested(dir: &Path) -> Result<usize> {
        let mut n = 0;
        for d in names(dir)? {
            if d.is_dir() {
                n += names(&d)?.len();
            }
        }
        Ok(n)
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut held = Vec::new();
    let models = store
        .record_names()
        .context("cannot list the store's records")?
        .len();
    if models > 0 {
        held.push(plural(models, "model") + " with records");
    }
    for (ns, what) in [
        (Ns::Attestations, "attestation"),
        (Ns::Approvals, "approval"),
    ] {
        let n = nested(&store.ns_dir(ns))?;
        if n > 0 {
            held.push(plural(n, what));
        }
    }
    let ids = names(&store.ns_dir(Ns::Identities))?.len();
    if ids > 0 {
        held.push(plural(ids, "registered identity").replace("identitys", "identities"));
    }
    Ok(held)
}

/// The head as written, `None` when there is none; `Err` names a broken head.
fn read_head_file(store: &Store) -> std::result::Result<Option<(u64, String)>, String> {
    let path = head_path(store);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .split_once(' ')
            .and_then(|(s, h)| Some((s.parse().ok()?, h.to_string())))
            .map(Some)
            .ok_or_else(|| format!("the head file `{}` is malformed", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the head file `{}`: {e}",
            path.display()
        )),
    }
}

/// The DSSE payload type of a signed [`Checkpoint`].
pub const CHECKPOINT_PAYLOAD_TYPE: &str = "application/vnd.repro.audit-checkpoint+json";

/// The `type` of the line that ends a JSON-lines export: `{"type":
/// "audit-checkpoint", "envelope": <the signed checkpoint>}`. Entries have
/// no `type`, so a consumer tells the two apart by it.
pub const CHECKPOINT_LINE_TYPE: &str = "audit-checkpoint";

/// A statement of the log's head: the entry at sequence number `seq`
/// hashes (its line, without the newline) to `sha256`.
///
/// Signed, it is the payload of a DSSE envelope of type
/// [`CHECKPOINT_PAYLOAD_TYPE`], compact JSON with every field:
/// `{"seq":12,"sha256":"<64 hex>","time":"<RFC 3339>","signer":{"keyid":"sha256:<hex>","name":...,"email":...}}`.
/// Unsigned (`--expect-head`), it has no time and no signer; its text form
/// is `<seq>:<hex>` ([`Checkpoint::compact`], parsed by [`str::parse`],
/// which also takes `<seq>:sha256:<hex>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence number of the entry (1, 2, 3, ...).
    pub seq: u64,
    /// The hex SHA-256 of that entry's line, as in the head file.
    pub sha256: String,
    /// When it was signed (RFC 3339, UTC); `None` when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Who signed it; `None` when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Identity>,
    /// Where it was read from (a file), for messages; not signed.
    #[serde(skip)]
    pub source: Option<String>,
}

impl Checkpoint {
    /// The text form `<seq>:<hex>` that `--expect-head` takes.
    pub fn compact(&self) -> String {
        format!("{}:{}", self.seq, self.sha256)
    }

    /// The checkpoint in words, for messages: `the checkpoint `cp.json` of
    /// <time> by <signer>`, or `the expected head` when it is unsigned.
    pub fn describe(&self) -> String {
        let from = self
            .source
            .as_deref()
            .map(|s| format!(" `{s}`"))
            .unwrap_or_default();
        match (&self.time, &self.signer) {
            (Some(t), Some(who)) => format!("the checkpoint{from} of {t} by {who}"),
            _ => format!("the expected head{from}"),
        }
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = String;
    /// `<seq>:<hex>` or `<seq>:sha256:<hex>`.
    fn from_str(s: &str) -> std::result::Result<Checkpoint, String> {
        let bad = || {
            format!("`{s}` is not a head: expected `<seq>:<sha256 hex>`, e.g. `12:` and 64 hex digits (`repro audit checkpoint` prints one)")
        };
        let (seq, hex) = s.trim().split_once(':').ok_or_else(bad)?;
        let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if seq == 0 || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checkpoint {
            seq,
            sha256: hex.to_ascii_lowercase(),
            time: None,
            signer: None,
            source: None,
        })
    }
}

/// The head of the log as it is: the last line's entry and hash, unsigned;
/// `None` for an empty or missing log. Fails on a last line that is not an
/// entry.
pub fn head_of(store: &Store) -> Result<Option<Checkpoint>> {
    let lines = read_lines(store)?;
    let Some(last) = lines.last() else {
        return Ok(None);
    };
    let entry: Entry = serde_json::from_slice(last).map_err(|_| {
        anyhow::anyhow!(
            "line {} of `{}` is not an audit entry\nhint: run `repro audit verify` to see what is wrong with the log",
            lines.len(),
            log_path(store).display()
        )
    })?;
    Ok(Some(Checkpoint {
        seq: entry.seq,
        sha256: Hash::of(last).hex(),
        time: None,
        signer: None,
        source: None,
    }))
}

/// Sign `head` (its `seq` and `sha256`) as of now with `key` as `signer`:
/// a DSSE envelope of type [`CHECKPOINT_PAYLOAD_TYPE`].
pub fn sign_checkpoint(head: &Checkpoint, key: &SigningKey, signer: &Identity) -> Envelope {
    let statement = Checkpoint {
        seq: head.seq,
        sha256: head.sha256.clone(),
        time: Some(crate::clock::now()),
        signer: Some(Identity {
            keyid: keys::key_id(&key.verifying_key()).to_string(),
            ..signer.clone()
        }),
        source: None,
    };
    let payload = serde_json::to_vec(&statement).unwrap_or_default();
    keys::sign(key, CHECKPOINT_PAYLOAD_TYPE, &payload)
}

/// A signed checkpoint of the log's head, by `key` as `signer`; its public
/// key is put in the store so that [`open_checkpoint`] finds it. Refuses a
/// log that does not verify (a checkpoint would vouch for the damage: the
/// error is [`Tampered`](crate::exit::Tampered)) and an empty log (nothing
/// to vouch for).
pub fn checkpoint(store: &Store, key: &SigningKey, signer: &Identity) -> Result<Envelope> {
    let v = verify(store)?;
    if !v.intact {
        return Err(crate::exit::Tampered(format!(
            "the audit log `{}` was tampered with, so no checkpoint of it is signed: {}\nhint: run `repro audit verify`",
            v.log,
            v.problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))
        .into());
    }
    let head = head_of(store)?.ok_or_else(|| {
        crate::exit::UserError(format!(
            "the audit log `{}` is empty: there is no head to checkpoint",
            log_path(store).display()
        ))
    })?;
    keys::publish(store, &key.verifying_key())?;
    Ok(sign_checkpoint(&head, key, signer))
}

/// Check a signed checkpoint: its payload type, its signature (by a key
/// `lookup` finds, e.g. [`keys::lookup_in_store`]) and that the payload is
/// a checkpoint whose signer is the key that signed it. Every failure is a
/// [`Tampered`](crate::exit::Tampered) error (exit 3) that names `source`.
pub fn open_checkpoint(
    envelope: &Envelope,
    source: &str,
    lookup: impl Fn(&str) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<Checkpoint> {
    let refuse = |why: String| -> anyhow::Error {
        crate::exit::Tampered(format!("the checkpoint `{source}` is refused: {why}")).into()
    };
    if envelope.payload_type != CHECKPOINT_PAYLOAD_TYPE {
        return Err(refuse(format!(
            "its payload type is `{}`, not `{CHECKPOINT_PAYLOAD_TYPE}`",
            envelope.payload_type
        )));
    }
    let (payload, keyid) = keys::open(envelope, lookup).map_err(|e| refuse(e.to_string()))?;
    let mut cp: Checkpoint = serde_json::from_slice(&payload)
        .map_err(|e| refuse(format!("its payload is not a checkpoint: {e}")))?;
    let (Some(time), Some(signer)) = (&cp.time, &cp.signer) else {
        return Err(refuse("its payload has no time or no signer".into()));
    };
    if signer.keyid != keyid {
        return Err(refuse(format!(
            "it names `{}` as its signer but is signed by `{keyid}`",
            signer.keyid
        )));
    }
    if crate::clock::parse(time).is_none() {
        return Err(refuse(format!("its time `{time}` is not RFC 3339")));
    }
    let check: Checkpoint = cp
        .compact()
        .parse()
        .map_err(|e: String| refuse(format!("it names no entry: {e}")))?;
    cp.sha256 = check.sha256;
    cp.source = Some(source.to_string());
    Ok(cp)
}

/// The line that ends a JSON-lines export: `{"type":"audit-checkpoint","envelope":{...}}`
/// (compact, no newline).
pub fn checkpoint_line(envelope: &Envelope) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        envelope: &'a Envelope,
    }
    let line = Line {
        kind: CHECKPOINT_LINE_TYPE,
        envelope,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The envelope of a checkpoint line ([`checkpoint_line`]); `None` for any
/// other line (an entry, say). The envelope is not checked.
pub fn parse_checkpoint_line(line: &str) -> Option<Envelope> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "type")]
        kind: String,
        envelope: Envelope,
    }
    serde_json::from_str::<Line>(line)
        .ok()
        .filter(|l| l.kind == CHECKPOINT_LINE_TYPE)
        .map(|l| l.envelope)
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The signing key for commands without a `--key` option: `REPRO_KEY`, else
/// the default location.
pub fn env_key() -> Option<PathBuf> {
    std::env::var_os(crate::env_vars::REPRO_KEY)
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .or_else(keys::default_key_path)
}

/// Warn (once per process) that an event goes unlogged.
pub fn warn_unlogged(why: &str) {
    if !WARNED.swap(true, Ordering::SeqCst) {
        eprintln!("warning: not written to the audit log: {why}\nhint: create a signing key with `repro key generate --name <name> --email <email>`");
    }
}

/// Append `event` to the audit log, signed with the key at `key` (the
/// default key when `None`). Without a usable key nothing is appended and a
/// warning is printed once.
pub fn log(store: &Store, key: Option<&Path>, event: Event) -> Result<()> {
    let path = match key.map(Path::to_path_buf).or_else(env_key) {
        Some(p) => p,
        None => {
            warn_unlogged("no signing key location (set REPRO_KEY)");
            return Ok(());
        }
    };
    if !path.exists() {
        warn_unlogged(&format!("there is no signing key at `{}`", path.display()));
        return Ok(());
    }
    let k = match keys::load(&path) {
        Ok(k) => k,
        Err(e) => {
            warn_unlogged(&format!("{e:#}"));
            return Ok(());
        }
    };
    let who = crate::attest::identity_of(&path, &k);
    append(store, &k, &who, event).context("cannot write the audit log")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with `n` entries signed by one key; returns the store, its
    /// folder and the log's lines.
    fn log_of(n: u64) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let who = Identity {
            keyid: String::new(),
            name: Some("Ann".into()),
            email: None,
        };
        for i in 0..n {
            let event = Event::new("build", format!("m@{i}"), serde_json::json!({ "i": i }));
            append(&store, &key, &who, event).expect("append");
        }
        (store, dir)
    }

    fn lines(store: &Store) -> Vec<String> {
        let text = std::fs::read_to_string(log_path(store)).expect("log");
        text.lines().map(str::to_string).collect()
    }

    fn write(store: &Store, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(log_path(store), text).expect("write log");
    }

    fn messages(store: &Store) -> Vec<String> {
        let v = verify(store).expect("verify");
        assert_eq!(v.intact, v.problems.is_empty());
        v.problems.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (store, _d) = log_of(5);
        let v = verify(&store).expect("verify");
        assert!(v.intact, "{:?}", v.problems);
        assert_eq!((v.last_seq, v.head_seq), (5, Some(5)));
        assert!(messages(&log_of(0).0).is_empty());
    }

    #[test]
    fn an_edited_entry_is_named() {
        let (store, _d) = log_of(5);
        let mut l = lines(&store);
        l[2] = l[2].replace("m@2", "m@9");
        write(&store, &l);
        let m = messages(&store);
        assert!(
            m.contains(&"entry 3 was edited: its signature does not check out".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"entry 3 was edited: its hash does not match entry 4's prev".to_string()),
            "{m:?}"
        );
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let (store, _d) = log_of(6);
        let mut l = lines(&store);
        l.remove(4);
        write(&store, &l);
        assert_eq!(
            messages(&store),
            vec!["entry 5 is missing (entry 6 follows entry 4)"]
        );
    }

    #[test]
    fn an_inserted_copy_is_named() {
        let (store, _d) = log_of(5);
        let mut l = lines(&store);
        let copy = l[2].clone();
        l.insert(4, copy);
        write(&store, &l);
        let m = messages(&store);
        assert!(
            m.iter()
                .any(|m| m.starts_with("entry 3 appears twice (lines 3 and 5)")),
            "{m:?}"
        );
    }

    #[test]
    fn reordered_entries_are_named() {
        let (store, _d) = log_of(5);
        let mut l = lines(&store);
        l.swap(2, 3);
        write(&store, &l);
        assert_eq!(
            messages(&store),
            vec!["entry 3 is out of order: it comes after entry 4 (line 4)"]
        );
    }

    #[test]
    fn truncation_is_caught_by_the_head() {
        let (store, _d) = log_of(11);
        let mut l = lines(&store);
        l.truncate(9);
        write(&store, &l);
        assert_eq!(
            messages(&store),
            vec!["the log ends at entry 9 but the head says 11: entries were removed from the end"]
        );
        std::fs::remove_file(head_path(&store)).expect("rm head");
        assert!(messages(&store)[0].contains("head file"));
    }

    #[test]
    fn an_edited_last_entry_and_a_garbage_line_are_named() {
        let (store, _d) = log_of(3);
        let mut l = lines(&store);
        l[2] = l[2].replace("m@2", "m@7");
        l.insert(1, "not json".into());
        write(&store, &l);
        let m = messages(&store);
        assert!(
            m.iter()
                .any(|m| m.starts_with("line 2 (after entry 1) is not an audit entry")),
            "{m:?}"
        );
        assert!(
            m.contains(&"entry 3 was edited: its hash does not match the head".to_string()),
            "{m:?}"
        );
    }

    #[test]
    fn an_entry_signed_by_an_unknown_key_is_named() {
        let (store, _d) = log_of(2);
        let mut l = lines(&store);
        let mut e: Entry = serde_json::from_str(&l[1]).expect("entry");
        e.actor.keyid = format!("sha256:{}", "1".repeat(64));
        l[1] = serde_json::to_string(&e).expect("json");
        write(&store, &l);
        let m = messages(&store);
        assert!(
            m.iter().any(|m| m.starts_with("entry 2 is signed by key")),
            "{m:?}"
        );
    }
}
