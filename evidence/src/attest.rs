//! Verification attestations: every `repro verify` signs what it found, so
//! an independent rebuild (a validation team's, an auditor's) is evidence.
//!
//! An attestation is an in-toto Statement v1 in a DSSE envelope, signed with
//! ed25519, whose predicate is a SLSA Verification Summary (v1):
//! `verificationResult` is `PASSED` when every output was rebuilt byte for
//! byte, `FAILED` otherwise. Its subjects are the record it checked (first)
//! and every output file the record names (`<step>/<path>` with its
//! SHA-256).
//!
//! The predicate holds only the fields of the VSA v1 schema as the
//! in-toto-attestation library defines it, so that a strict parser (one that
//! refuses unknown fields) accepts it. What `repro` adds — the verifier's
//! identity (key id, and the name and e-mail given at `repro key generate`),
//! its version, the verifier's platform, the levels verified and the result
//! of every step and differing file ([`ReproDetails`]) — is the annotation
//! `repro` of the record's subject, the one place of the statement that
//! such a parser leaves open.
//!
//! Attestations written before this shape kept those details in the
//! predicate itself (`predicate.repro`, `verifier.version`,
//! `verifiedLevels`, `inputAttestations[].name`); they are read as they were
//! ([`AttestationStatement::details`] finds them in either place).
//!
//! Attestations live in the store as blobs, listed under
//! `v1/refs/attestations/<record>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use repro_store::{BlobDigest, RecordDigest, Store};
use serde::{Deserialize, Serialize};

use crate::exit::{CannotVerify, Tampered, UserError};
use crate::keys::{self, Envelope, EnvelopeError};
use crate::platform::Platform;
use crate::record::{ResourceDescriptor, STATEMENT_TYPE};

/// SLSA Verification Summary Attestation v1.
pub const VSA_PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";
/// The verifier id of `repro verify`.
pub const VERIFIER_ID: &str = "urn:repro:verifier";
/// The policy a `repro verify` applies: rebuild from the pinned inputs with
/// the cache off and compare every output byte for byte.
pub const POLICY_URI: &str = "urn:repro:policy:rebuild-byte-for-byte:v1";
/// The level an attestation claims when everything reproduced.
pub const LEVEL_REPRODUCED: &str = "REPRO_REBUILT_BYTE_FOR_BYTE";
/// What an attestation's `inputAttestations` entry calls the record it
/// checked: this prefix and `<name>@<version>` (with the record's digest).
pub const RECORD_URI_PREFIX: &str = "urn:repro:record:";

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

/// The predicate of a verification attestation: the fields of the SLSA VSA
/// v1 schema, and (read only) the ones attestations of the old shape had.
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
    pub input_attestations: Vec<InputAttestation>,
    /// `PASSED` or `FAILED`.
    pub verification_result: String,
    /// The old shape's levels (now [`ReproDetails::verified_levels`]): the
    /// library's VSA v1 schema has this field as one string where SLSA's
    /// has a list, so it is no longer written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified_levels: Vec<String>,
    /// The old shape's `repro` section (now the record subject's
    /// annotation `repro`); never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repro: Option<ReproDetails>,
}

/// The verifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verifier {
    /// [`VERIFIER_ID`].
    pub id: String,
    /// The old shape's `{"repro": "<version>"}` (now
    /// [`ReproDetails::verifier_version`]): the library's VSA v1 schema has
    /// no `verifier.version`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// The policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// [`POLICY_URI`].
    pub uri: String,
}

/// An attestation the verifier relied on: the record it checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputAttestation {
    /// `urn:repro:record:<name>@<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The old shape's `record:<name>@<version>` (the schema has no `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `{"sha256": "<hex>"}` of the record's envelope.
    pub digest: BTreeMap<String, String>,
}

/// The annotation of the record's subject that holds [`ReproDetails`].
pub const DETAILS_ANNOTATION: &str = "repro";

/// What `repro` states beyond the VSA fields: the record subject's
/// annotation `repro` (in the old shape, the predicate's `repro` section,
/// with the version and levels in the predicate).
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
    /// `{"repro": "<version>"}`: SLSA's `verifier.version`.
    #[serde(
        rename = "verifierVersion",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub verifier_version: BTreeMap<String, String>,
    /// [`LEVEL_REPRODUCED`] when passed, else empty: SLSA's `verifiedLevels`.
    #[serde(rename = "verifiedLevels", default)]
    pub verified_levels: Vec<String>,
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
    /// The record this attestation is about: its first subject.
    pub fn record(&self) -> Option<RecordDigest> {
        self.subject.first()?.sha256_text()?.parse().ok()
    }

    /// What `repro` states beyond the VSA fields, from wherever this
    /// attestation's shape keeps it: the record subject's annotation
    /// `repro`, or (the old shape) the predicate's `repro` section with
    /// `verifier.version` and `verifiedLevels`.
    pub fn details(&self) -> std::result::Result<ReproDetails, String> {
        if let Some(old) = &self.predicate.repro {
            let mut d = old.clone();
            if d.verifier_version.is_empty() {
                d.verifier_version = self.predicate.verifier.version.clone();
            }
            if d.verified_levels.is_empty() {
                d.verified_levels = self.predicate.verified_levels.clone();
            }
            return Ok(d);
        }
        let annotation = self
            .subject
            .first()
            .and_then(|s| s.annotations.get(DETAILS_ANNOTATION))
            .ok_or_else(|| {
                format!("its record subject has no annotation `{DETAILS_ANNOTATION}` (the verifier, platform and steps)")
            })?;
        serde_json::from_value(annotation.clone()).map_err(|e| {
            format!(
                "the annotation `{DETAILS_ANNOTATION}` of its record subject does not parse: {e}"
            )
        })
    }
}

/// What a verification found, as the attestation states it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `name@version`.
    pub model: String,
    /// Whether every step reproduced.
    pub reproduced: bool,
    /// Each step's outcome.
    pub steps: Vec<StepSummary>,
    /// The output files the record names (its subjects: `<step>/<path>`
    /// with their SHA-256), each a subject of the attestation too.
    pub outputs: Vec<ResourceDescriptor>,
}

/// Build and sign the attestation of `v`, which checked `record`.
pub fn sign_verification(
    v: &Verified,
    record: &RecordDigest,
    identity: Identity,
    platform: Platform,
    key: &SigningKey,
) -> Result<Envelope> {
    let details = ReproDetails {
        identity,
        platform,
        model: v.model.clone(),
        steps: v.steps.clone(),
        verifier_version: BTreeMap::from([(
            "repro".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
        verified_levels: if v.reproduced {
            vec![LEVEL_REPRODUCED.to_string()]
        } else {
            Vec::new()
        },
    };
    let record_desc = ResourceDescriptor::sha256(format!("record:{}", v.model), record)
        .with(DETAILS_ANNOTATION, &details);
    let mut subject = vec![record_desc];
    // The files, as the record names them: name and digest only.
    subject.extend(v.outputs.iter().map(|o| ResourceDescriptor {
        name: o.name.clone(),
        digest: o.digest.clone(),
        uri: None,
        annotations: serde_json::Map::new(),
    }));
    let statement = AttestationStatement {
        type_: STATEMENT_TYPE.to_string(),
        subject,
        predicate_type: VSA_PREDICATE_TYPE.to_string(),
        predicate: VerificationSummary {
            verifier: Verifier {
                id: VERIFIER_ID.to_string(),
                version: BTreeMap::new(),
            },
            time_verified: crate::clock::now(),
            resource_uri: format!("repro:{}", v.model),
            policy: Policy {
                uri: POLICY_URI.to_string(),
            },
            input_attestations: vec![InputAttestation {
                uri: Some(format!("{RECORD_URI_PREFIX}{}", v.model)),
                name: None,
                digest: BTreeMap::from([("sha256".to_string(), record.hex())]),
            }],
            verification_result: if v.reproduced { "PASSED" } else { "FAILED" }.to_string(),
            verified_levels: Vec::new(),
            repro: None,
        },
    };
    let payload = serde_json::to_vec(&statement)?;
    Ok(keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload))
}

/// An attestation read back and checked.
#[derive(Debug)]
pub struct Checked {
    /// Its digest in the store (or of the file's bytes).
    pub digest: BlobDigest,
    /// The statement.
    pub statement: AttestationStatement,
    /// What `repro` states beyond the VSA fields (from either shape).
    pub details: ReproDetails,
    /// Whether its signature checks out with a key we know.
    pub signature: std::result::Result<String, String>,
}

/// Parse and check an attestation envelope. `lookup` finds public keys by id.
/// The signature's verdict is `Ok(key id)` or why it does not check out.
pub fn check(bytes: &[u8], lookup: impl Fn(&str) -> Option<VerifyingKey>) -> Result<Checked> {
    let (envelope, signature) = open(bytes, lookup)?;
    let (statement, details) = statement_of(&envelope)?;
    Ok(Checked {
        digest: BlobDigest::from_hash(repro_store::Hash::of(bytes)),
        statement,
        details,
        signature: signature.map_err(|e| signature_problem(&e)),
    })
}

/// The envelope in `bytes` and whether its signature checks out.
fn open(
    bytes: &[u8],
    lookup: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<(Envelope, std::result::Result<String, EnvelopeError>)> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| CannotVerify(format!("not a signed attestation (DSSE envelope): {e}")))?;
    let signature = keys::open(&envelope, lookup).map(|(_, k)| k);
    Ok((envelope, signature))
}

/// Why an attestation's signature does not check out, in words about the
/// attestation (the envelope's own words speak of a record).
fn signature_problem(e: &EnvelopeError) -> String {
    match e {
        EnvelopeError::BadSignature(k) => format!(
            "the signature of key `{k}` does not match the attestation's statement: the attestation was changed after it was signed"
        ),
        e => e.to_string(),
    }
}

/// The statement of an attestation envelope, which must be a verification
/// summary, and its details (from either shape).
fn statement_of(envelope: &Envelope) -> Result<(AttestationStatement, ReproDetails)> {
    let payload = base64_payload(envelope)?;
    let statement: AttestationStatement = serde_json::from_slice(&payload)
        .map_err(|e| CannotVerify(format!("the attestation's statement does not parse: {e}")))?;
    if statement.type_ != STATEMENT_TYPE || statement.predicate_type != VSA_PREDICATE_TYPE {
        return Err(CannotVerify(format!(
            "not a verification attestation (statement `{}`, predicate `{}`)",
            statement.type_, statement.predicate_type
        ))
        .into());
    }
    let details = statement
        .details()
        .map_err(|e| CannotVerify(format!("the attestation's statement does not parse: {e}")))?;
    Ok((statement, details))
}

fn base64_payload(envelope: &Envelope) -> Result<Vec<u8>> {
    Ok(envelope
        .payload_bytes()
        .map_err(|e| CannotVerify(format!("the payload: {e}")))?)
}

/// Every attestation of `record` in the store, checked against the store's keys.
pub fn list(store: &Store, record: &RecordDigest) -> Result<Vec<Checked>> {
    let mut out = Vec::new();
    for d in store.attestations_of(record)? {
        let bytes = store
            .read_blob(&d)
            .with_context(|| format!("attestation {d} of record {record} cannot be read"))?;
        let checked = check(&bytes, |id| keys::lookup_in_store(store, id))?;
        out.push(Checked {
            digest: d,
            ..checked
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

/// The exit code of `repro attest list` over `found`: every attestation the
/// store keeps went through `verify` or `attest import`, so one whose
/// signature does not check out now was altered in the store, or its key
/// removed: tampering (exit 3), each named on stderr after the listing.
pub fn unverified_is_tampering(found: &[Checked], record: &str) -> u8 {
    let mut bad = 0;
    for c in found {
        if let Err(e) = &c.signature {
            eprintln!(
                "error: attestation {} of {record} does not check out: {e}",
                c.digest
            );
            bad += 1;
        }
    }
    if bad == 0 {
        return crate::exit::OK;
    }
    eprintln!("hint: `repro fsck` lists every damaged object; do not rely on these attestations");
    crate::exit::CANNOT
}

/// Import another party's attestation: its signature must check out with
/// `key` (or a key already in the store), and it must be about a record in
/// this store (`expect`, when given, must be that record).
pub fn import(
    store: &Store,
    bytes: &[u8],
    key: Option<VerifyingKey>,
    expect: Option<RecordDigest>,
) -> Result<Checked> {
    let (envelope, signature) = open(bytes, |id| match key {
        Some(k) => (keys::key_id(&k).to_string() == id).then_some(k),
        None => keys::lookup_in_store(store, id),
    })?;
    let signed_by = match signature {
        Ok(k) => k,
        // Forged or edited: evidence tampered with, not a wrong argument.
        Err(e @ EnvelopeError::BadSignature(_)) => {
            return Err(Tampered(format!(
                "refused: attestation {} fails its signature check: {}\nhint: do not rely on it; ask its signer for the attestation as they signed it",
                BlobDigest::from_hash(repro_store::Hash::of(bytes)),
                signature_problem(&e)
            ))
            .into());
        }
        Err(why) => {
            return Err(UserError(format!(
                "refused: {why}\nhint: pass the signer's public key with `--key <file.pub>` if you trust it"
            ))
            .into());
        }
    };
    let (statement, details) = statement_of(&envelope)?;
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
    let digest = store.put_attestation(&record, bytes)?;
    Ok(Checked {
        digest,
        statement,
        details,
        signature: Ok(signed_by),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    fn platform() -> Platform {
        Platform {
            arch: "x86_64".into(),
            os: "linux".into(),
            kernel: "6.1".into(),
            cpu_model: "cpu".into(),
            cpu_flags: Vec::new(),
            cpus: 1,
            backend: "native".into(),
        }
    }

    fn verified(reproduced: bool) -> Verified {
        Verified {
            model: "m@1".into(),
            reproduced,
            steps: vec![StepSummary {
                step: "train".into(),
                expected: format!("sha256:{}", "cd".repeat(32)),
                actual: Some(format!("sha256:{}", "ef".repeat(32))),
                reproduced,
                files: vec![FileSummary {
                    path: "model.bin".into(),
                    expected: Some(format!("sha256:{}", "01".repeat(32))),
                    actual: Some(format!("sha256:{}", "02".repeat(32))),
                }],
            }],
            outputs: vec![
                ResourceDescriptor::sha256("train/model.bin", "01".repeat(32)),
                ResourceDescriptor::sha256("train/metrics/loss.json", "03".repeat(32)),
            ],
        }
    }

    /// An attestation of `record` signed by `key`, as `repro verify` writes it.
    fn signed(key: &SigningKey, record: &RecordDigest) -> Vec<u8> {
        let identity = Identity {
            keyid: keys::key_id(&key.verifying_key()).to_string(),
            name: Some("Alice".into()),
            email: None,
        };
        let envelope =
            sign_verification(&verified(true), record, identity, platform(), key).unwrap();
        serde_json::to_vec_pretty(&envelope).unwrap()
    }

    /// An attestation of `record` in the shape `repro verify` wrote before
    /// the details moved to the record subject's annotation: `repro` in the
    /// predicate, `verifier.version`, `verifiedLevels` and a named
    /// `inputAttestations` entry.
    fn signed_old_shape(key: &SigningKey, record: &RecordDigest) -> Vec<u8> {
        let hex = record.hex();
        let statement = serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "record:m@1", "digest": {"sha256": hex}}],
            "predicateType": VSA_PREDICATE_TYPE,
            "predicate": {
                "verifier": {"id": VERIFIER_ID, "version": {"repro": "0.0.9"}},
                "timeVerified": "2026-01-01T00:00:00.5Z",
                "resourceUri": "repro:m@1",
                "policy": {"uri": POLICY_URI},
                "inputAttestations": [{"name": "record:m@1", "digest": {"sha256": hex}}],
                "verificationResult": "PASSED",
                "verifiedLevels": [LEVEL_REPRODUCED],
                "repro": {
                    "identity": {"keyid": keys::key_id(&key.verifying_key()).to_string(), "name": "Olga"},
                    "platform": {"arch": "x86_64", "os": "linux", "kernel": "5.10", "cpuModel": "old cpu",
                                 "cpuFlags": [], "cpus": 2, "backend": "native 0.0.9"},
                    "model": "m@1",
                    "steps": [{"step": "train", "expected": format!("sha256:{}", "cd".repeat(32)),
                               "actual": format!("sha256:{}", "cd".repeat(32)), "reproduced": true}]
                }
            }
        });
        let payload = serde_json::to_vec(&statement).unwrap();
        let envelope = keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
        serde_json::to_vec_pretty(&envelope).unwrap()
    }

    /// The statement of an envelope, as JSON.
    fn statement_json(bytes: &[u8]) -> serde_json::Value {
        let env: Envelope = serde_json::from_slice(bytes).unwrap();
        serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap()
    }

    /// The keys of a JSON object.
    fn keys_of(v: &serde_json::Value) -> Vec<&str> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn the_predicate_holds_only_fields_of_the_vsa_v1_schema_and_the_details_ride_on_the_record_subject(
    ) {
        let key = SigningKey::from_bytes(&[5; 32]);
        for reproduced in [true, false] {
            let identity = Identity {
                keyid: keys::key_id(&key.verifying_key()).to_string(),
                name: Some("Alice".into()),
                email: Some("alice@example.com".into()),
            };
            let env =
                sign_verification(&verified(reproduced), &record(), identity, platform(), &key)
                    .unwrap();
            let st = statement_json(&env.to_vec_pretty().unwrap());
            let p = &st["predicate"];
            // The fields of the in-toto-attestation library's VSA v1 proto
            // (a strict parser refuses any other), less the two it types
            // otherwise than SLSA does or repro has nothing for.
            let schema = [
                "verifier",
                "timeVerified",
                "resourceUri",
                "policy",
                "inputAttestations",
                "verificationResult",
            ];
            assert_eq!(keys_of(p), {
                let mut k = schema.to_vec();
                k.sort();
                k
            });
            assert_eq!(keys_of(&p["verifier"]), ["id"]);
            assert_eq!(keys_of(&p["policy"]), ["uri"]);
            let inputs = p["inputAttestations"].as_array().unwrap();
            assert_eq!(inputs.len(), 1);
            assert_eq!(keys_of(&inputs[0]), ["digest", "uri"]);
            assert_eq!(inputs[0]["uri"], "urn:repro:record:m@1");
            assert_eq!(inputs[0]["digest"]["sha256"], "ab".repeat(32));
            let want = if reproduced { "PASSED" } else { "FAILED" };
            assert_eq!(p["verificationResult"], want);

            // Subjects: the record (first), then every output file.
            let names: Vec<&str> = st["subject"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                ["record:m@1", "train/model.bin", "train/metrics/loss.json"]
            );
            assert_eq!(st["subject"][1]["digest"]["sha256"], "01".repeat(32));
            assert_eq!(keys_of(&st["subject"][1]), ["digest", "name"]);

            // The details: the record subject's annotation `repro`.
            let d = &st["subject"][0]["annotations"]["repro"];
            assert_eq!(d["identity"]["name"], "Alice");
            assert_eq!(d["platform"]["cpuModel"], "cpu");
            assert_eq!(d["model"], "m@1");
            assert_eq!(d["steps"][0]["files"][0]["path"], "model.bin");
            assert_eq!(d["verifierVersion"]["repro"], env!("CARGO_PKG_VERSION"));
            let levels: &[&str] = if reproduced { &[LEVEL_REPRODUCED] } else { &[] };
            assert_eq!(d["verifiedLevels"], serde_json::json!(levels));

            // And read back as they were written.
            let c = check(&env.to_vec_pretty().unwrap(), |_| Some(key.verifying_key())).unwrap();
            assert_eq!(
                c.signature,
                Ok(keys::key_id(&key.verifying_key()).to_string())
            );
            assert_eq!(c.statement.record(), Some(record()));
            assert_eq!(
                c.details.identity.email.as_deref(),
                Some("alice@example.com")
            );
            assert_eq!(c.details.steps, verified(reproduced).steps);
            assert_eq!(c.details.verified_levels, levels);
        }
    }

    #[test]
    fn an_attestation_of_the_old_shape_reads_with_its_details() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        keys::publish(&store, &key.verifying_key()).unwrap();
        let r = record();
        let old = store
            .put_attestation(&r, &signed_old_shape(&key, &r))
            .unwrap();
        let new = store.put_attestation(&r, &signed(&key, &r)).unwrap();
        let listed = list(&store, &r).unwrap();
        assert_eq!(listed.len(), 2);
        // Sorted by time: the old one first.
        assert_eq!(listed[0].digest, old);
        assert_eq!(listed[1].digest, new);
        let o = &listed[0];
        assert!(o.signature.is_ok(), "{:?}", o.signature);
        assert_eq!(o.statement.record(), Some(r));
        assert_eq!(o.statement.predicate.verification_result, "PASSED");
        assert_eq!(o.details.identity.name.as_deref(), Some("Olga"));
        assert_eq!(o.details.platform.cpu_model, "old cpu");
        assert_eq!(o.details.model, "m@1");
        assert_eq!(o.details.steps.len(), 1);
        assert!(o.details.steps[0].reproduced);
        assert_eq!(o.details.verifier_version["repro"], "0.0.9");
        assert_eq!(o.details.verified_levels, [LEVEL_REPRODUCED]);
        assert_eq!(listed[1].details.identity.name.as_deref(), Some("Alice"));

        // Re-serialized (as `attest list --json` shows it), the old shape
        // stays the old shape.
        let shown = serde_json::to_value(&o.statement).unwrap();
        assert_eq!(shown["predicate"]["repro"]["identity"]["name"], "Olga");
        assert_eq!(
            shown["predicate"]["inputAttestations"][0]["name"],
            "record:m@1"
        );
    }

    #[test]
    fn an_attestation_without_its_details_is_refused_as_not_parsing() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut st = statement_json(&signed(&key, &record()));
        st["subject"][0]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let env = keys::sign(
            &key,
            keys::IN_TOTO_PAYLOAD_TYPE,
            &serde_json::to_vec(&st).unwrap(),
        );
        let err = check(&env.to_vec_pretty().unwrap(), |_| Some(key.verifying_key()))
            .err()
            .unwrap();
        assert_eq!(exit::classify(&err), exit::CANNOT, "{err:#}");
        assert!(
            err.to_string()
                .contains("its record subject has no annotation `repro`"),
            "{err:#}"
        );
    }

    /// `bytes` with its result turned from `PASSED` to `FAILED`, the
    /// signature kept.
    fn forged(bytes: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut env: Envelope = serde_json::from_slice(bytes).unwrap();
        let payload = String::from_utf8(b64.decode(&env.payload).unwrap()).unwrap();
        env.payload = b64.encode(payload.replace("\"PASSED\"", "\"FAILED\""));
        serde_json::to_vec_pretty(&env).unwrap()
    }

    fn record() -> RecordDigest {
        format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
    }

    #[test]
    fn a_forged_attestation_is_refused_as_tampered_with_exit_3_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let bytes = forged(&signed(&key, &record()));
        let err = import(&store, &bytes, Some(key.verifying_key()), None).unwrap_err();
        assert_eq!(exit::classify(&err), exit::CANNOT, "{err:#}");
        let text = err.to_string();
        let digest = BlobDigest::from_hash(repro_store::Hash::of(&bytes));
        assert!(
            text.starts_with(&format!(
                "refused: attestation {digest} fails its signature check: the signature of key `{}` does not match the attestation's statement: the attestation was changed after it was signed\nhint: ",
                keys::key_id(&key.verifying_key())
            )),
            "{text}"
        );
        assert!(!text.contains("record"), "{text}");
        // The same attestation unsigned by a key we know is the user's to
        // settle (pass the key), not tampering.
        let err = import(&store, &bytes, None, None).unwrap_err();
        assert_eq!(exit::classify(&err), exit::USER, "{err:#}");
        assert!(err.to_string().contains("signed by unknown key"), "{err}");
    }

    #[test]
    fn a_forged_attestation_in_the_store_is_listed_as_the_attestation_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        keys::publish(&store, &key.verifying_key()).unwrap();
        let r = record();
        let good = store.put_attestation(&r, &signed(&key, &r)).unwrap();
        let bad = store
            .put_attestation(&r, &forged(&signed(&key, &r)))
            .unwrap();
        let listed = list(&store, &r).unwrap();
        let verdict = |d: &BlobDigest| {
            listed
                .iter()
                .find(|c| c.digest == *d)
                .map(|c| c.signature.clone())
                .unwrap()
        };
        assert!(verdict(&good).is_ok());
        let why = verdict(&bad).unwrap_err();
        assert!(
            why.ends_with("does not match the attestation's statement: the attestation was changed after it was signed"),
            "{why}"
        );
    }

    #[test]
    fn an_attestation_edited_in_place_in_the_store_is_named_when_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let r = record();
        let d = store.put_attestation(&r, &signed(&key, &r)).unwrap();
        let path = store.blob_path(&d);
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, forged(&std::fs::read(&path).unwrap())).unwrap();
        let err = list(&store, &r).err().unwrap();
        assert_eq!(exit::classify(&err), exit::CANNOT, "{err:#}");
        assert!(
            err.to_string()
                .starts_with(&format!("attestation {d} of record {r} cannot be read")),
            "{err:#}"
        );
    }
}
