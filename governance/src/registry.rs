//! The model registry: the stage and owner of each model version, and the
//! history of every stage change.
//!
//! A version with a record and no stage ref is a `candidate`. Stage
//! membership is the file `v1/refs/stages/<stage>/<name>/<version>` holding
//! the record digest that was promoted (so `repro gc --stage <stage>` keeps
//! it). A version is in at most one stage; a model has at most one
//! `production` version. The history of a model is
//! `v1/registry/<name>/history.jsonl`: one [`HistoryEntry`] a line, oldest
//! first.
//!
//! A version may have several records, each a build from the same inputs
//! (see [`Store::records_of`]); its ref names the latest, which is the one
//! approvals, promotions and `repro registry list` go by. `repro registry
//! show` lists them all ([`Shown::records`]).

use repro_evidence::VersionRef;
use repro_store::Ns;
use repro_store::{RecordDigest, Store};
use serde::{Deserialize, Serialize};

use super::approvals::{self, Judged};
use super::identities;
use crate::base::{list_dir, read_optional, Error, Result, Stage};
use repro_evidence::attest::Identity;
use repro_evidence::record::Statement;

/// One check of a policy requirement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// What is required, e.g. `approval by role \`validator\``.
    pub requirement: String,
    /// Whether it is met.
    pub met: bool,
    /// What was found.
    pub detail: String,
}

/// One stage change of a model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// RFC 3339.
    pub time: String,
    /// `promote`, `emergency-promote`, `demote` (the previous production
    /// version, moved aside by a promotion or rollback) or `rollback`.
    pub action: String,
    /// The version.
    pub version: String,
    /// The record digest.
    pub record: String,
    /// The stage before.
    pub from: String,
    /// The stage after.
    pub to: String,
    /// `sha256:` of the policy file applied (promotions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The requirements checked (promotions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<Check>,
    /// Who.
    pub actor: Identity,
    /// Why (emergency promotions and rollbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn stage_path(store: &Store, stage: Stage, m: &VersionRef) -> std::path::PathBuf {
    store
        .ns_dir(Ns::Stages)
        .join(stage.as_str())
        .join(&m.name)
        .join(&m.version)
}

/// Where the decisions about model `name` are kept.
pub fn history_path(store: &Store, name: &str) -> std::path::PathBuf {
    store.ns_dir(Ns::Registry).join(name).join("history.jsonl")
}

/// The stage of `m` and the record digest its stage ref holds (`None` for a
/// candidate, which has no stage ref).
pub fn stage_of(store: &Store, m: &VersionRef) -> Result<(Stage, Option<RecordDigest>)> {
    for stage in [Stage::Production, Stage::Validated, Stage::Retired] {
        let path = stage_path(store, stage, m);
        if let Some(bytes) = read_optional(&path)? {
            let text = String::from_utf8_lossy(&bytes);
            let d = text.trim().parse().map_err(|e| Error::Malformed {
                path: path.clone(),
                why: format!("{e}"),
            })?;
            return Ok((stage, Some(d)));
        }
    }
    Ok((Stage::Candidate, None))
}

/// Put `m` (record `record`) in `stage`, out of every other stage.
pub fn set_stage(store: &Store, m: &VersionRef, stage: Stage, record: &RecordDigest) -> Result<()> {
    if stage != Stage::Candidate {
        store.write_atomic(
            &stage_path(store, stage, m),
            format!("{record}\n").as_bytes(),
        )?;
    }
    for other in [Stage::Production, Stage::Validated, Stage::Retired] {
        if other == stage {
            continue;
        }
        let path = stage_path(store, other, m);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    let _ = std::fs::remove_dir(parent); // tidy: only when empty
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "remove",
                    path,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// The production version of `name`, if any.
pub fn production_of(store: &Store, name: &str) -> Result<Option<String>> {
    let dir = store
        .ns_dir(Ns::Stages)
        .join(Stage::Production.as_str())
        .join(name);
    Ok(list_dir(&dir)?.into_iter().next())
}

/// Append to the history of `name`.
pub fn append_history(store: &Store, name: &str, entry: &HistoryEntry) -> Result<()> {
    use std::io::Write as _;
    let path = history_path(store, name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut line = serde_json::to_vec(entry).map_err(anyhow::Error::from)?;
    line.push(b'\n');
    let io = |source| Error::Io {
        action: "append to",
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    f.write_all(&line).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// The history of `name`, oldest first.
pub fn history(store: &Store, name: &str) -> Result<Vec<HistoryEntry>> {
    let path = history_path(store, name);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Malformed {
                path: path.clone(),
                why: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// A record, opened (its signature checked against the store's keys).
pub struct Opened {
    /// The record digest.
    pub digest: RecordDigest,
    /// The statement.
    pub statement: Statement,
    /// The builder: the key id that signed the record.
    pub builder: String,
}

/// Open the record `digest`.
pub fn open(store: &Store, digest: &RecordDigest) -> Result<Opened> {
    let o = repro_evidence::record::open_record(store, &digest.to_string(), &[])?;
    Ok(Opened {
        digest: o.digest,
        statement: o.statement,
        builder: o.signed_by,
    })
}

/// The current record of `m` (its latest build).
pub fn current_record(store: &Store, m: &VersionRef) -> Result<RecordDigest> {
    Ok(store.resolve_record(&m.name, &m.version)?)
}

/// The owner named by the record's recipe (`model.owner`), if any.
pub fn owner(store: &Store, statement: &Statement) -> Option<String> {
    let d = statement
        .predicate
        .build_definition
        .external_parameters
        .recipe_digest;
    let text = String::from_utf8(store.read_blob(&d).ok()?).ok()?;
    let doc: toml::Value = toml::from_str(&text).ok()?;
    let owner = doc.get("model")?.get("owner")?.as_str()?.trim().to_string();
    (!owner.is_empty()).then_some(owner)
}

/// A verification attestation, judged as an independent reproduction.
#[derive(Debug, Clone, Serialize)]
pub struct Reproduction {
    /// The attestation's digest.
    pub attestation: String,
    /// `PASSED` or `FAILED`.
    pub result: String,
    /// Who verified (as the attestation says).
    pub verifier: Identity,
    /// When.
    pub time: String,
    /// The key that signed it, when the signature checks out.
    pub signed_by: Option<String>,
    /// Whether it counts as an independent reproduction.
    pub counts: bool,
    /// Why not.
    pub why_not: Option<String>,
}

/// The attestations of `record` (built by `builder`), judged.
pub fn reproductions(
    store: &Store,
    record: &RecordDigest,
    builder: &str,
) -> Result<Vec<Reproduction>> {
    let mut out = Vec::new();
    for c in repro_evidence::attest::list(store, record)? {
        let p = &c.statement.predicate;
        let signed_by = c.signature.as_ref().ok().cloned();
        let why_not = match &c.signature {
            Err(e) => Some(format!("its signature does not check out: {e}")),
            Ok(k) if k == builder => Some(format!("key `{k}` built the record: not independent")),
            Ok(_) if p.verification_result != "PASSED" => {
                Some(format!("the result is {}", p.verification_result))
            }
            Ok(_) if c.statement.record().as_ref() != Some(record) => {
                Some("it is about another record".to_string())
            }
            Ok(k) => match identities::get(store, k)? {
                None => Some(format!("key `{k}` is not a registered identity")),
                Some(r) => r.revoked.as_ref().map(|rv| {
                    format!(
                        "key `{k}` ({}) was revoked at {}: {}",
                        r.name, rv.time, rv.reason
                    )
                }),
            },
        };
        out.push(Reproduction {
            attestation: c.digest.to_string(),
            result: p.verification_result.clone(),
            verifier: c.details.identity.clone(),
            time: p.time_verified.clone(),
            signed_by,
            counts: why_not.is_none(),
            why_not,
        });
    }
    Ok(out)
}

/// One row of `repro registry list`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The model.
    pub name: String,
    /// The version.
    pub version: String,
    /// Its stage.
    pub stage: Stage,
    /// The owner, when the recipe names one.
    pub owner: Option<String>,
    /// The record: the staged one, or the current one of a candidate.
    pub record: String,
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Every version of every model in the store.
pub fn list(store: &Store) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for name in store.record_names()? {
        for version in store.record_versions(&name)? {
            let m = VersionRef {
                name: name.clone(),
                version,
            };
            let (stage, staged) = stage_of(store, &m)?;
            let record = match staged {
                Some(d) => d,
                None => current_record(store, &m)?,
            };
            let owner = open(store, &record)
                .ok()
                .and_then(|o| owner(store, &o.statement));
            out.push(Row {
                name: m.name,
                version: m.version,
                stage,
                owner,
                record: record.to_string(),
            });
        }
    }
    Ok(out)
}

/// Everything `repro registry show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// `name@version`.
    pub model: String,
    /// The stage.
    pub stage: Stage,
    /// The owner.
    pub owner: Option<String>,
    /// The record shown: the staged one, else the current one.
    pub record: String,
    /// The current record when it differs from the staged one (rebuilt since).
    pub current_record: Option<String>,
    /// Every record of the version, oldest first (by `finishedOn`; an
    /// unreadable one last).
    pub records: Vec<RecordOfVersion>,
    /// The key that signed the record.
    pub builder: String,
    /// The approvals, judged.
    pub approvals: Vec<Judged>,
    /// The verification attestations, judged as independent reproductions.
    pub reproductions: Vec<Reproduction>,
    /// Whether a model card is stored.
    pub model_card: bool,
    /// This version's history.
    pub history: Vec<HistoryEntry>,
    /// The post-hoc review of each emergency promotion of this version.
    pub emergency_reviews: Vec<EmergencyReview>,
}

/// Whether an emergency promotion was reviewed afterwards, as the policy
/// in force's `[emergency]` asks.
#[derive(Debug, Clone, Serialize)]
pub struct EmergencyReview {
    /// When the emergency promotion happened.
    pub promoted_at: String,
    /// Why it was an emergency.
    pub reason: Option<String>,
    /// When the review is due, when the policy sets a window.
    pub due_by: Option<String>,
    /// Who reviewed it (a counting approval in the review role, made after the promotion).
    pub reviewed_by: Option<String>,
    /// Whether it is past due and not reviewed.
    pub overdue: bool,
    /// One line: `reviewed by ...`, `due by ...`, `OVERDUE since ...`.
    pub status: String,
}

/// The review status of every emergency promotion in `history` (of one
/// version, whose approvals are `approvals`), under the policy in force.
pub fn emergency_reviews(
    store: &Store,
    history: &[HistoryEntry],
    approvals: &[Judged],
) -> Vec<EmergencyReview> {
    let rule = crate::policy::load(store, None)
        .ok()
        .and_then(|p| p.policy.emergency);
    emergency_reviews_at(
        history,
        approvals,
        rule.as_ref(),
        time::OffsetDateTime::now_utc(),
    )
}

/// As [`emergency_reviews`], under the policy's `[emergency]` rule `rule`
/// (none: no review asked) and at the time `now` (which decides what is
/// overdue).
pub fn emergency_reviews_at(
    history: &[HistoryEntry],
    approvals: &[Judged],
    rule: Option<&crate::policy::EmergencyRule>,
    now: time::OffsetDateTime,
) -> Vec<EmergencyReview> {
    history
        .iter()
        .filter(|h| h.action == "emergency-promote")
        .map(|h| {
            let Some(rule) = rule else {
                return EmergencyReview {
                    promoted_at: h.time.clone(),
                    reason: h.reason.clone(),
                    due_by: None,
                    reviewed_by: None,
                    overdue: false,
                    status: "no review asked (the policy in force has no `[emergency]`)".into(),
                };
            };
            let at = repro_evidence::clock::parse(&h.time);
            let due = at.map(|t| t + time::Duration::hours(rule.review_within_hours as i64));
            let reviewed_by = approvals
                .iter()
                .filter(|j| j.counts)
                .filter_map(|j| j.approval.as_ref())
                .filter(|a| a.role == rule.review_role)
                .find(|a| match (repro_evidence::clock::parse(&a.time), at) {
                    (Some(t), Some(p)) => t > p,
                    _ => false,
                })
                .map(|a| format!("{} at {}", a.approver, a.time));
            let due_by = due.map(repro_evidence::clock::format);
            let overdue = reviewed_by.is_none() && due.is_some_and(|d| now > d);
            let status = match (&reviewed_by, &due_by) {
                (Some(r), _) => format!("reviewed by {r}"),
                (None, Some(d)) if overdue => format!(
                    "OVERDUE since {d}: no `{}` review after the promotion",
                    rule.review_role
                ),
                (None, Some(d)) => format!("review by role `{}` due by {d}", rule.review_role),
                (None, None) => "the promotion time does not parse".into(),
            };
            EmergencyReview {
                promoted_at: h.time.clone(),
                reason: h.reason.clone(),
                due_by,
                reviewed_by,
                overdue,
                status,
            }
        })
        .collect()
}

/// One record of a version, as `repro registry show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordOfVersion {
    /// The record digest.
    pub record: String,
    /// Its `finishedOn`, when it can be read.
    pub finished_on: Option<String>,
    /// Whether it is the latest (the one the version's ref names).
    pub latest: bool,
    /// Whether it is the one the version's stage ref names.
    pub staged: bool,
}

/// Every record of `m`, oldest first (see [`Shown::records`]).
pub fn records(
    store: &Store,
    m: &VersionRef,
    latest: &RecordDigest,
    staged: Option<&RecordDigest>,
) -> Result<Vec<RecordOfVersion>> {
    let mut out: Vec<(Option<time::OffsetDateTime>, RecordOfVersion)> = Vec::new();
    for d in store.records_of(&m.name, &m.version)? {
        let finished_on = store
            .get_record(&d)
            .ok()
            .and_then(|b| repro_evidence::record::statement_of(&b).ok())
            .map(|s| s.predicate.run_details.metadata.finished_on);
        let at = finished_on
            .as_deref()
            .and_then(repro_evidence::clock::parse);
        out.push((
            at,
            RecordOfVersion {
                record: d.to_string(),
                finished_on,
                latest: d == *latest,
                staged: staged == Some(&d),
            },
        ));
    }
    out.sort_by(|(a, x), (b, y)| match (a, b) {
        (Some(a), Some(b)) => a.cmp(b).then_with(|| x.record.cmp(&y.record)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => x.record.cmp(&y.record),
    });
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// Whether a model card is stored for `record` (`v1/refs/cards/<record hex>`).
pub fn has_card(store: &Store, record: &RecordDigest) -> bool {
    store.ns_dir(Ns::Cards).join(record.hex()).is_file()
}

/// Show one version.
pub fn show(store: &Store, m: &VersionRef) -> Result<Shown> {
    let current = current_record(store, m)?;
    let (stage, staged) = stage_of(store, m)?;
    let record = staged.unwrap_or(current);
    let opened = open(store, &record)?;
    let history: Vec<HistoryEntry> = history(store, &m.name)?
        .into_iter()
        .filter(|h| h.version == m.version)
        .collect();
    let approvals = approvals::list(store, &record, &opened.builder)?;
    Ok(Shown {
        model: m.to_string(),
        stage,
        owner: owner(store, &opened.statement),
        record: record.to_string(),
        current_record: (current != record).then(|| current.to_string()),
        records: records(store, m, &current, staged.as_ref())?,
        emergency_reviews: emergency_reviews(store, &history, &approvals),
        approvals,
        reproductions: reproductions(store, &record, &opened.builder)?,
        model_card: has_card(store, &record),
        history,
        builder: opened.builder,
    })
}
