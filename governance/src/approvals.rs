//! Signed approvals: a named person, in a role, approves one record.
//!
//! An approval is a DSSE envelope (payload type
//! `application/vnd.in-toto+json`, ed25519, as records and attestations)
//! around an in-toto Statement v1:
//!
//! ```json
//! { "_type": "https://in-toto.io/Statement/v1",
//!   "subject": [{"name": "record:<name>@<version>", "digest": {"sha256": "<record hex>"}}],
//!   "predicateType": "urn:repro:approval:v1",
//!   "predicate": { "model": "<name>@<version>", "role": "validator",
//!                  "reason": "...", "time": "<RFC 3339>",
//!                  "approver": {"keyid": "sha256:...", "name": "...", "email": "..."} } }
//! ```
//!
//! It is stored as the file `v1/refs/approvals/<record hex>/<approval hex>`
//! whose content is the envelope itself and whose name is the SHA-256 of
//! that content (so the file checks itself and `repro gc` cannot sweep it
//! away from its ref).
//!
//! An approval counts only if its signature checks out with the key it
//! names, that key is a registered identity holding the role (registered
//! before the approval, not revoked), it is not the builder's key (the key
//! that signed the record) and its subject is this record.

use ed25519_dalek::SigningKey;
use repro_evidence::VersionRef;
use repro_store::Ns;
use repro_store::{Hash, RecordDigest, Store};
use serde::{Deserialize, Serialize};

use super::identities;
use crate::base::{list_dir, read_optional, Error, Result};
use repro_evidence::attest::Identity;
use repro_evidence::keys::{self, Envelope};
use repro_evidence::record::{ResourceDescriptor, STATEMENT_TYPE};

/// The predicate type of an approval.
pub const APPROVAL_PREDICATE_TYPE: &str = "urn:repro:approval:v1";

/// The role of an emergency promotion's approval.
pub const EMERGENCY_ROLE: &str = "emergency";

/// An approval statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalStatement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The record approved.
    pub subject: Vec<ResourceDescriptor>,
    /// [`APPROVAL_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What was approved, by whom, why.
    pub predicate: Approval,
}

/// The predicate of an approval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    /// `name@version`.
    pub model: String,
    /// The role the approver acts in.
    pub role: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub time: String,
    /// Who (from the identity registry).
    pub approver: Identity,
    /// Until when it counts (RFC 3339), if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// An approval read back and judged.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// The approval file's digest (`sha256:` of the envelope).
    pub digest: String,
    /// The approval, when its statement parses.
    pub approval: Option<Approval>,
    /// The key that signed it, when the signature checks out.
    pub signed_by: Option<String>,
    /// Whether it counts.
    pub counts: bool,
    /// Why it does not count.
    pub why_not: Option<String>,
}

fn dir(store: &Store, record: &RecordDigest) -> std::path::PathBuf {
    store.ns_dir(Ns::Approvals).join(record.hex())
}

/// Sign and store an approval of `record` (which is `model`, built and
/// signed by key `builder`) in `role` for `reason`. Refused when the
/// approver is the builder, or is not a registered identity holding `role`
/// (or is revoked).
pub fn approve(
    store: &Store,
    key: &SigningKey,
    model: &VersionRef,
    record: &RecordDigest,
    builder: &str,
    role: &str,
    reason: &str,
) -> Result<(String, Approval)> {
    approve_until(store, key, model, record, builder, role, reason, None)
}

/// As [`approve`], counting only until `expires` (RFC 3339) when given.
#[allow(clippy::too_many_arguments)]
pub fn approve_until(
    store: &Store,
    key: &SigningKey,
    model: &VersionRef,
    record: &RecordDigest,
    builder: &str,
    role: &str,
    reason: &str,
    expires: Option<&str>,
) -> Result<(String, Approval)> {
    let keyid = keys::key_id(&key.verifying_key()).to_string();
    if let Some(e) = expires {
        if repro_evidence::clock::parse(e).is_none() {
            return Err(Error::Invalid(format!(
                "`{e}` is not an RFC 3339 time\nhint: for example `2027-06-30T00:00:00Z`"
            )));
        }
    }
    if role.trim().is_empty() {
        return Err(Error::Invalid("the role cannot be empty".into()));
    }
    if reason.trim().is_empty() {
        return Err(Error::Invalid(
            "an approval needs a reason\nhint: pass `--reason \"...\"`".into(),
        ));
    }
    if keyid == builder {
        return Err(Error::Refused(format!(
            "refused: self-approval: key `{keyid}` signed the record of {model}; the builder cannot approve their own model\nhint: someone else, registered with the role `{role}`, must approve it"
        )));
    }
    if let Some(person) = same_person(store, &keyid, builder)? {
        return Err(Error::Refused(format!(
            "refused: self-approval: {person} built the record of {model} with another key; separation of duties is per person\nhint: someone else, registered with the role `{role}`, must approve it"
        )));
    }
    if let Some(why) = identities::cannot_act(store, &keyid, role, None)? {
        return Err(Error::Refused(format!(
            "refused: {why}\nhint: only a registered identity holding the role `{role}` can approve in it (`repro identity list` shows who holds which role)"
        )));
    }
    let reg = identities::get(store, &keyid)?
        .ok_or_else(|| Error::Refused(format!("key `{keyid}` is not a registered identity")))?;
    let approval = Approval {
        model: model.to_string(),
        role: role.to_string(),
        reason: reason.to_string(),
        time: repro_evidence::clock::now(),
        approver: reg.identity(),
        expires: expires.map(str::to_string),
    };
    let statement = ApprovalStatement {
        type_: STATEMENT_TYPE.to_string(),
        subject: vec![ResourceDescriptor::sha256(
            format!("record:{model}"),
            record,
        )],
        predicate_type: APPROVAL_PREDICATE_TYPE.to_string(),
        predicate: approval.clone(),
    };
    let payload = serde_json::to_vec(&statement).map_err(anyhow::Error::from)?;
    let envelope = keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
    let bytes = serde_json::to_vec_pretty(&envelope).map_err(anyhow::Error::from)?;
    let hash = Hash::of(&bytes);
    store.write_atomic(&dir(store, record).join(hash.hex()), &bytes)?;
    Ok((format!("sha256:{}", hash.hex()), approval))
}

/// Judge one approval envelope about `record` (built by key `builder`).
pub fn judge(
    store: &Store,
    record: &RecordDigest,
    builder: &str,
    digest: String,
    bytes: &[u8],
) -> Result<Judged> {
    judge_at(
        store,
        record,
        builder,
        digest,
        bytes,
        time::OffsetDateTime::now_utc(),
    )
}

/// As [`judge`], at the time `now` (which decides whether it has expired).
pub fn judge_at(
    store: &Store,
    record: &RecordDigest,
    builder: &str,
    digest: String,
    bytes: &[u8],
    now: time::OffsetDateTime,
) -> Result<Judged> {
    let mut j = Judged {
        digest,
        approval: None,
        signed_by: None,
        counts: false,
        why_not: None,
    };
    let envelope: Envelope = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            j.why_not = Some(format!("not a DSSE envelope: {e}"));
            return Ok(j);
        }
    };
    let statement = envelope.unverified_payload::<ApprovalStatement>().ok();
    let Some(statement) = statement else {
        j.why_not = Some("its statement is not an approval".into());
        return Ok(j);
    };
    j.approval = Some(statement.predicate.clone());
    if statement.type_ != STATEMENT_TYPE || statement.predicate_type != APPROVAL_PREDICATE_TYPE {
        j.why_not = Some(format!(
            "not an approval (predicate type `{}`)",
            statement.predicate_type
        ));
        return Ok(j);
    }
    // Only a registered identity's key is looked up: an unknown key does not count.
    let signer = match keys::open(&envelope, |id| {
        let reg = identities::get(store, id).ok().flatten()?;
        keys::parse_public(&reg.public_key).ok()
    }) {
        Ok((_, k)) => k,
        Err(e) => {
            j.why_not = Some(e.to_string().lines().next().unwrap_or_default().to_string());
            return Ok(j);
        }
    };
    j.signed_by = Some(signer.clone());
    let bound = statement
        .subject
        .first()
        .and_then(|s| s.sha256_text())
        .is_some_and(|d| d == record.to_string());
    let p = &statement.predicate;
    j.why_not = if !bound {
        Some(format!("it is bound to another record, not {record}"))
    } else if p.approver.keyid != signer {
        Some(format!(
            "it names approver `{}` but was signed by key `{signer}`",
            p.approver.keyid
        ))
    } else if signer == builder {
        Some(format!("self-approval: key `{signer}` built the record"))
    } else if let Some(expired) = p
        .expires
        .as_deref()
        .filter(|e| repro_evidence::clock::parse(e).is_none_or(|t| t <= now))
    {
        Some(format!("it expired at {expired}"))
    } else if let Some(person) = same_person(store, &signer, builder)? {
        Some(format!(
            "self-approval: key `{signer}` belongs to {person}, who built the record with another key"
        ))
    } else {
        identities::cannot_act(store, &signer, &p.role, Some(&p.time))?
    };
    j.counts = j.why_not.is_none();
    Ok(j)
}

/// The person (`name <email>`) when keys `a` and `b` are registered to the
/// same e-mail address: separation of duties is per person, not per key.
pub fn same_person(store: &Store, a: &str, b: &str) -> Result<Option<String>> {
    let (Some(x), Some(y)) = (identities::get(store, a)?, identities::get(store, b)?) else {
        return Ok(None);
    };
    Ok((x.email.trim().eq_ignore_ascii_case(y.email.trim()))
        .then(|| format!("{} <{}>", x.name, x.email)))
}

/// Every approval stored about `record` (built by key `builder`), judged,
/// oldest first.
pub fn list(store: &Store, record: &RecordDigest, builder: &str) -> Result<Vec<Judged>> {
    list_at(store, record, builder, time::OffsetDateTime::now_utc())
}

/// As [`list`], judged at the time `now` (see [`judge_at`]).
pub fn list_at(
    store: &Store,
    record: &RecordDigest,
    builder: &str,
    now: time::OffsetDateTime,
) -> Result<Vec<Judged>> {
    let d = dir(store, record);
    let mut out = Vec::new();
    for name in list_dir(&d)? {
        let path = d.join(&name);
        let Some(bytes) = read_optional(&path)? else {
            continue;
        };
        let actual = Hash::of(&bytes).hex();
        let digest = format!("sha256:{actual}");
        if actual != name {
            out.push(Judged {
                digest,
                approval: None,
                signed_by: None,
                counts: false,
                why_not: Some(format!(
                    "the file `{}` was altered: its content hashes to {actual}",
                    path.display()
                )),
            });
            continue;
        }
        out.push(judge_at(store, record, builder, digest, &bytes, now)?);
    }
    out.sort_by(|a, b| {
        let t = |j: &Judged| j.approval.as_ref().map(|a| a.time.clone());
        t(a).cmp(&t(b)).then(a.digest.cmp(&b.digest))
    });
    Ok(out)
}
