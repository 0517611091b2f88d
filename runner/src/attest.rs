//! Verification attestations: every `repro verify` signs what it found, so
//! an independent rebuild (a validation team's, an auditor's) is evidence.
//!
//! An attestation is an in-toto Statement v1 in a DSSE envelope, signed with
//! ed25519, whose predicate is a SLSA Verification Summary (v1):
//! `verificationResult` is `PASSED` when every output was rebuilt byte for
//! byte, `FAILED` otherwise. Its subject is the record it checked. Beyond the
//! SLSA fields, the predicate's `repro` section holds the verifier's identity
//! (key id, and the name and e-mail given at `repro key generate`), the
//! verifier's platform and the result of every step and differing file.
//!
//! Attestations live in the store as blobs, listed under
//! `v1/refs/attestations/<record>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use repro_store::{BlobDigest, RecordDigest, Store};
use serde::{Deserialize, Serialize};

use crate::exit::UserError;
use crate::keys::{self, Envelope};
use crate::platform::Platform;
use crate::record::{ResourceDescriptor, STATEMENT_TYPE};
use crate::verify::{CannotVerify, Verification};

/// SLSA Verification Summary Attestation v1.
pub const VSA_PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";
/// The verifier id of `repro verify`.
pub const VERIFIER_ID: &str = "urn:repro:verifier";
/// The policy a `repro verify` applies: rebuild from the pinned inputs with
/// the cache off and compare every output byte for byte.
pub const POLICY_URI: &str = "urn:repro:policy:rebuild-byte-for-byte:v1";
/// The level an attestation claims when everything reproduced.
pub const LEVEL_REPRODUCED: &str = "REPRO_REBUILT_BYTE_FOR_BYTE";

/// Who signs: written by `repro key generate --name --email` beside the key
/// (`<key>.identity.json`). Self-asserted; it is bound to the key by the
/// signature, not vouched for by anyone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The key id (`sha256:` of the public key).
    pub keyid: String,
    /// The person's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The person's e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, &self.email) {
            (Some(n), Some(e)) => write!(f, "{n} <{e}> ({})", short(&self.keyid)),
            (Some(n), None) => write!(f, "{n} ({})", short(&self.keyid)),
            (None, Some(e)) => write!(f, "<{e}> ({})", short(&self.keyid)),
            (None, None) => write!(f, "key {}", short(&self.keyid)),
        }
    }
}

fn short(keyid: &str) -> &str {
    let hex = keyid.strip_prefix("sha256:").unwrap_or(keyid);
    &hex[..hex.len().min(12)]
}

/// The file holding the identity of the key at `key_path`.
pub fn identity_path(key_path: &Path) -> PathBuf {
    let mut s = key_path.as_os_str().to_owned();
    s.push(".identity.json");
    PathBuf::from(s)
}

/// Write the identity of a key.
pub fn write_identity(key_path: &Path, name: Option<String>, email: Option<String>) -> Result<()> {
    let key = keys::load(key_path)?;
    let id = Identity {
        keyid: keys::key_id(&key.verifying_key()).to_string(),
        name,
        email,
    };
    let path = identity_path(key_path);
    std::fs::write(&path, serde_json::to_vec_pretty(&id)?)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// The identity of the key at `key_path` (just the key id when none was written).
pub fn identity_of(key_path: &Path, key: &SigningKey) -> Identity {
    let keyid = keys::key_id(&key.verifying_key()).to_string();
    let written: Option<Identity> = std::fs::read(identity_path(key_path))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match written {
        Some(id) if id.keyid == keyid => id,
        _ => Identity {
            keyid,
            name: None,
            email: None,
        },
    }
}

/// The predicate of a verification attestation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSummary {
    /// Who verified.
    pub verifier: Verifier,
    /// RFC 3339.
    pub time_verified: String,
    /// `repro:<name>@<version>`.
    pub resource_uri: String,
    /// [`POLICY_URI`].
    pub policy: Policy,
    /// The record checked.
    pub input_attestations: Vec<ResourceDescriptor>,
    /// `PASSED` or `FAILED`.
    pub verification_result: String,
    /// [`LEVEL_REPRODUCED`] when passed.
    pub verified_levels: Vec<String>,
    /// What `repro` adds: identity, platform, per-step results.
    pub repro: ReproDetails,
}

/// The verifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verifier {
    /// [`VERIFIER_ID`].
    pub id: String,
    /// `{"repro": "<version>"}`.
    pub version: BTreeMap<String, String>,
}

/// The policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// [`POLICY_URI`].
    pub uri: String,
}

/// `repro`'s section of the predicate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReproDetails {
    /// Who signed.
    pub identity: Identity,
    /// Where the rebuild ran.
    pub platform: Platform,
    /// The model.
    pub model: String,
    /// Every step's result.
    pub steps: Vec<StepSummary>,
}

/// One step's result in an attestation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepSummary {
    /// The step.
    pub step: String,
    /// The recorded output tree.
    pub expected: String,
    /// The rebuilt output tree (absent if the rebuild failed).
    pub actual: Option<String>,
    /// Whether they are equal.
    pub reproduced: bool,
    /// The differing files: path, recorded and rebuilt digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSummary>,
}

/// One differing file in an attestation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSummary {
    /// The path inside the step's outputs.
    pub path: String,
    /// What the record says.
    pub expected: Option<String>,
    /// What the rebuild produced.
    pub actual: Option<String>,
}

/// An attestation statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestationStatement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The record.
    pub subject: Vec<ResourceDescriptor>,
    /// [`VSA_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The summary.
    pub predicate: VerificationSummary,
}

impl AttestationStatement {
    /// The record this attestation is about.
    pub fn record(&self) -> Option<RecordDigest> {
        self.subject.first()?.sha256_text()?.parse().ok()
    }
}

/// Build and sign the attestation of `v`, which checked `record`.
pub fn sign_verification(
    v: &Verification,
    record: &RecordDigest,
    identity: Identity,
    platform: Platform,
    key: &SigningKey,
) -> Result<Envelope> {
    let steps = v
        .steps
        .iter()
        .map(|s| StepSummary {
            step: s.step.clone(),
            expected: s.expected.clone(),
            actual: s.actual.clone(),
            reproduced: s.reproduced,
            files: s
                .files
                .iter()
                .map(|f| FileSummary {
                    path: f.path.clone(),
                    expected: f.expected.as_ref().map(|e| e.to_string()),
                    actual: f.actual.as_ref().map(|a| a.to_string()),
                })
                .collect(),
        })
        .collect();
    let record_desc = ResourceDescriptor::sha256(format!("record:{}", v.model), record);
    let statement = AttestationStatement {
        type_: STATEMENT_TYPE.to_string(),
        subject: vec![record_desc.clone()],
        predicate_type: VSA_PREDICATE_TYPE.to_string(),
        predicate: VerificationSummary {
            verifier: Verifier {
                id: VERIFIER_ID.to_string(),
                version: BTreeMap::from([(
                    "repro".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                )]),
            },
            time_verified: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            resource_uri: format!("repro:{}", v.model),
            policy: Policy {
                uri: POLICY_URI.to_string(),
            },
            input_attestations: vec![record_desc],
            verification_result: if v.reproduced { "PASSED" } else { "FAILED" }.to_string(),
            verified_levels: if v.reproduced {
                vec![LEVEL_REPRODUCED.to_string()]
            } else {
                Vec::new()
            },
            repro: ReproDetails {
                identity,
                platform,
                model: v.model.clone(),
                steps,
            },
        },
    };
    let payload = serde_json::to_vec(&statement)?;
    Ok(keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload))
}

/// An attestation read back and checked.
pub struct Checked {
    /// Its digest in the store (or of the file's bytes).
    pub digest: BlobDigest,
    /// The statement.
    pub statement: AttestationStatement,
    /// Whether its signature checks out with a key we know.
    pub signature: std::result::Result<String, String>,
}

/// Parse and check an attestation envelope. `lookup` finds public keys by id.
pub fn check(
    bytes: &[u8],
    lookup: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<(AttestationStatement, std::result::Result<String, String>)> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| CannotVerify(format!("not a signed attestation (DSSE envelope): {e}")))?;
    let signature = keys::open(&envelope, lookup)
        .map(|(_, k)| k)
        .map_err(|e| e.to_string());
    let payload = base64_payload(&envelope)?;
    let statement: AttestationStatement = serde_json::from_slice(&payload)
        .map_err(|e| CannotVerify(format!("the attestation's statement does not parse: {e}")))?;
    if statement.type_ != STATEMENT_TYPE || statement.predicate_type != VSA_PREDICATE_TYPE {
        return Err(CannotVerify(format!(
            "not a verification attestation (statement `{}`, predicate `{}`)",
            statement.type_, statement.predicate_type
        ))
        .into());
    }
    Ok((statement, signature))
}

fn base64_payload(envelope: &Envelope) -> Result<Vec<u8>> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD
        .decode(&envelope.payload)
        .map_err(|e| CannotVerify(format!("the payload is not base64: {e}")))?)
}

/// Every attestation of `record` in the store, checked against the store's keys.
pub fn list(store: &Store, record: &RecordDigest) -> Result<Vec<Checked>> {
    let mut out = Vec::new();
    for d in store.attestations_of(record)? {
        let bytes = store.read_blob(&d)?;
        let (statement, signature) = check(&bytes, |id| keys::lookup_in_store(store, id))?;
        out.push(Checked {
            digest: d,
            statement,
            signature,
        });
    }
    out.sort_by(|a, b| {
        a.statement
            .predicate
            .time_verified
            .cmp(&b.statement.predicate.time_verified)
    });
    Ok(out)
}

/// Import another party's attestation: its signature must check out with
/// `key` (or a key already in the store), and it must be about a record in
/// this store (`expect`, when given, must be that record).
pub fn import(
    store: &Store,
    bytes: &[u8],
    key: Option<VerifyingKey>,
    expect: Option<RecordDigest>,
) -> Result<(BlobDigest, AttestationStatement)> {
    let (statement, signature) = check(bytes, |id| match key {
        Some(k) => (keys::key_id(&k).to_string() == id).then_some(k),
        None => keys::lookup_in_store(store, id),
    })?;
    if let Err(why) = signature {
        return Err(UserError(format!(
            "refused: {why}\nhint: pass the signer's public key with `--key <file.pub>` if you trust it"
        ))
        .into());
    }
    let record = statement
        .record()
        .ok_or_else(|| UserError("refused: the attestation names no record".into()))?;
    if let Some(want) = expect {
        if want != record {
            return Err(UserError(format!(
                "refused: the attestation is about record {record}, not {want}"
            ))
            .into());
        }
    }
    if store.get_record(&record).is_err() {
        return Err(UserError(format!(
            "refused: the attestation is about record {record}, which is not in this store\nhint: it attests another build; import the record's bundle first"
        ))
        .into());
    }
    if let Some(k) = key {
        keys::publish(store, &k)?;
    }
    let d = store.put_attestation(&record, bytes)?;
    Ok((d, statement))
}
