//! Promotion and rollback.
//!
//! `promote` checks every requirement of the policy's gate for the target
//! stage and moves the version only when all are met; there is no way to
//! skip a requirement. When a version enters `production`, the previous
//! production version moves to `validated` (still vetted, so it stays a
//! rollback target and `repro gc --stage validated` keeps it). An emergency
//! promotion bypasses the gate but needs a counting approval in the role
//! `emergency` for this record, and is logged as `emergency-promote`.
//!
//! `rollback` makes a version that once passed the production gate (a
//! `promote` to `production` in its history) production again, with the
//! record it was promoted with: no rebuild.

use ed25519_dalek::SigningKey;
use repro_evidence::VersionRef;
use repro_store::{BlobDigest, RecordDigest, Store};
use serde::Serialize;

use super::approvals::{self, EMERGENCY_ROLE};
use super::policy::{self, Gate, Loaded};
use super::registry::{self, Check, HistoryEntry, Opened};
use crate::base::{Error, Result, Stage};
use repro_evidence::attest::Identity;
use repro_evidence::audit::{self, Event};

/// Check every requirement of `gate` for `opened` (the record of `m`, now in `stage`).
pub fn evaluate(
    store: &Store,
    m: &VersionRef,
    opened: &Opened,
    stage: Stage,
    gate: &Gate,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    if let Some(from) = &gate.from {
        checks.push(Check {
            requirement: format!("in stage `{from}`"),
            met: stage.as_str() == from,
            detail: format!("{m} is {stage}"),
        });
    }
    let approvals = approvals::list(store, &opened.digest, &opened.builder)?;
    for role in &gate.approvals {
        let counting: Vec<String> = approvals
            .iter()
            .filter(|j| j.counts)
            .filter_map(|j| j.approval.as_ref())
            .filter(|a| &a.role == role)
            .map(|a| a.approver.to_string())
            .collect();
        let ignored = approvals
            .iter()
            .filter(|j| !j.counts && j.approval.as_ref().is_some_and(|a| &a.role == role))
            .count();
        checks.push(Check {
            requirement: format!("approval by role `{role}`"),
            met: !counting.is_empty(),
            detail: if counting.is_empty() {
                format!("no counting approval ({ignored} ignored)")
            } else {
                format!("approved by {}", counting.join(", "))
            },
        });
    }
    if gate.approvals.len() >= 2 && !gate.allow_same_person {
        // Only once every role has a counting approval: a role with none
        // is already its own unmet requirement.
        if let Some(c) = distinct_people(store, &approvals, &gate.approvals)? {
            checks.push(c);
        }
    }
    if gate.reproductions > 0 {
        let repros = registry::reproductions(store, &opened.digest, &opened.builder)?;
        let n = repros
            .iter()
            .filter(|r| r.counts)
            .filter_map(|r| r.signed_by.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        checks.push(Check {
            requirement: format!(
                "{} independent reproduction{}",
                gate.reproductions,
                if gate.reproductions == 1 { "" } else { "s" }
            ),
            met: n >= gate.reproductions as usize,
            detail: format!("{n} found (PASSED, by registered keys other than the builder's)"),
        });
    }
    let steps = opened
        .statement
        .steps()
        .map_err(|e| Error::Other(e.into()))?;
    if let Some(step) = &gate.data_validation {
        let found = steps.iter().find(|s| &s.name == step);
        checks.push(Check {
            requirement: format!("data validation step `{step}` passed"),
            met: found.is_some(),
            detail: match found {
                Some(s) => format!("output {}", s.output),
                None => "the record has no such step".to_string(),
            },
        });
    }
    if gate.owner {
        let owner = registry::owner(store, &opened.statement);
        checks.push(Check {
            requirement: "owner named".to_string(),
            met: owner.is_some(),
            detail: owner.unwrap_or_else(|| "the recipe has no `model.owner`".to_string()),
        });
    }
    if gate.model_card {
        let found = registry::has_card(store, &opened.digest);
        checks.push(Check {
            requirement: "model card present".to_string(),
            met: found,
            detail: if found {
                "found".to_string()
            } else {
                format!("none (write it with `repro card {m}`)")
            },
        });
    }
    for t in &gate.thresholds {
        let bound = match (t.min, t.max) {
            (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => "any".to_string(),
        };
        let (met, detail) = match metric(store, &steps, &t.step, &t.file, &t.path)? {
            Ok(v) => (
                t.min.is_none_or(|lo| v >= lo) && t.max.is_none_or(|hi| v <= hi),
                format!("{v}"),
            ),
            Err(why) => (false, why),
        };
        checks.push(Check {
            requirement: format!("`{}` in {}/{} {bound}", t.path, t.step, t.file),
            met,
            detail,
        });
    }
    Ok(checks)
}

/// Whether the roles of a gate can be filled by as many different people
/// (by e-mail) from the counting approvals: one person may not fill two
/// required roles of the same gate.
fn distinct_people(
    store: &Store,
    approvals: &[approvals::Judged],
    roles: &[String],
) -> Result<Option<Check>> {
    // role -> people (e-mails) with a counting approval in it
    let mut people: Vec<Vec<String>> = Vec::new();
    for role in roles {
        let mut p = Vec::new();
        for a in approvals.iter().filter(|j| j.counts) {
            let Some(ap) = a.approval.as_ref().filter(|ap| &ap.role == role) else {
                continue;
            };
            let email = crate::identities::get(store, &ap.approver.keyid)?
                .map(|r| r.email.trim().to_lowercase())
                .unwrap_or_else(|| ap.approver.keyid.clone());
            if !p.contains(&email) {
                p.push(email);
            }
        }
        people.push(p);
    }
    fn assign(i: usize, people: &[Vec<String>], used: &mut Vec<String>) -> bool {
        if i == people.len() {
            return true;
        }
        for p in &people[i] {
            if !used.contains(p) {
                used.push(p.clone());
                if assign(i + 1, people, used) {
                    return true;
                }
                used.pop();
            }
        }
        false
    }
    if people.iter().any(Vec::is_empty) {
        return Ok(None);
    }
    let met = assign(0, &people, &mut Vec::new());
    Ok(Some(Check {
        requirement: format!(
            "the {} roles approved by {} different people",
            roles.len(),
            roles.len()
        ),
        met,
        detail: if met {
            "per person (by e-mail), whatever their keys".to_string()
        } else {
            "one person holds approvals in several of these roles and no one else approved them (`allow_same_person` is off)".to_string()
        },
    }))
}

/// The number at `path` in the JSON file `file` of step `step`'s outputs,
/// or why there is none (an unmet requirement). A recorded output that the
/// store holds altered or has lost is no reason to refuse but tampering:
/// the error (exit 3, naming the blob), so that no gate is ever decided on
/// bytes that are not the recorded ones.
fn metric(
    store: &Store,
    steps: &[repro_evidence::record::RecordedStep],
    step: &str,
    file: &str,
    path: &str,
) -> Result<std::result::Result<f64, String>> {
    let Some(s) = steps.iter().find(|s| s.name == step) else {
        return Ok(Err(format!("the record has no step `{step}`")));
    };
    let tree = s.output;
    let files = store.flatten(&tree)?;
    let digest: BlobDigest = match files.get(file) {
        Some(repro_store::FileEntry::File { digest, .. }) => *digest,
        _ => return Ok(Err(format!("step `{step}` has no file `{file}`"))),
    };
    let bytes = store.read_blob(&digest)?;
    let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("`{file}` is not JSON: {e}"))),
    };
    Ok(policy::lookup(&doc, path).and_then(|v| {
        v.as_f64()
            .ok_or_else(|| format!("`{path}` is {v}, not a number"))
    }))
}

/// What `promote` decided.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// `name@version`.
    pub model: String,
    /// The record promoted.
    pub record: String,
    /// The stage before.
    pub from: Stage,
    /// The target stage.
    pub to: Stage,
    /// `sha256:` of the policy.
    pub policy: String,
    /// Every requirement checked.
    pub checked: Vec<Check>,
    /// Whether the version moved.
    pub promoted: bool,
    /// Whether it was an emergency promotion.
    pub emergency: bool,
    /// The production version moved to `validated`, if any.
    pub displaced: Option<String>,
}

impl Decision {
    /// The unmet requirements.
    pub fn unmet(&self) -> impl Iterator<Item = &Check> {
        self.checked.iter().filter(|c| !c.met)
    }
}

/// Who acts: the key and the identity written into logs.
pub struct Actor<'a> {
    /// The signing key.
    pub key: &'a SigningKey,
    /// Its identity.
    pub identity: Identity,
}

/// An emergency promotion's reason.
pub struct Emergency<'a> {
    /// Why.
    pub reason: &'a str,
}

/// Promote `m` to `to` under `policy` (or as an emergency).
pub fn promote(
    store: &Store,
    actor: &Actor<'_>,
    m: &VersionRef,
    to: Stage,
    policy: &Loaded,
    emergency: Option<Emergency<'_>>,
) -> Result<Decision> {
    decide(store, Some(actor), m, to, policy, emergency)
}

/// What promoting `m` to `to` under `policy` would decide, changing
/// nothing (`repro promote --policy FILE` previews a policy this way).
pub fn preview(store: &Store, m: &VersionRef, to: Stage, policy: &Loaded) -> Result<Decision> {
    decide(store, None, m, to, policy, None)
}

/// Decide, and when there is an actor and every requirement is met, move.
fn decide(
    store: &Store,
    actor: Option<&Actor<'_>>,
    m: &VersionRef,
    to: Stage,
    policy: &Loaded,
    emergency: Option<Emergency<'_>>,
) -> Result<Decision> {
    if to == Stage::Candidate {
        return Err(Error::Invalid(
            "a version cannot be promoted to `candidate`\nhint: promote it to `retired`, or roll back to another version".into(),
        ));
    }
    let _lock = crate::base::lock_model(store, &m.name)?;
    let (stage, _) = registry::stage_of(store, m)?;
    if stage == to {
        return Err(Error::Refused(format!("{m} is already {to}")));
    }
    let record = registry::current_record(store, m)?;
    let opened = registry::open(store, &record)?;
    let mut decision = Decision {
        model: m.to_string(),
        record: record.to_string(),
        from: stage,
        to,
        policy: policy.digest.clone(),
        checked: Vec::new(),
        promoted: false,
        emergency: emergency.is_some(),
        displaced: None,
    };
    match &emergency {
        Some(e) => {
            if e.reason.trim().is_empty() {
                return Err(Error::Invalid(
                    "an emergency promotion needs a reason\nhint: pass `--reason \"...\"`".into(),
                ));
            }
            let approvals = approvals::list(store, &record, &opened.builder)?;
            let named: Vec<String> = approvals
                .iter()
                .filter(|j| j.counts)
                .filter_map(|j| j.approval.as_ref())
                .filter(|a| a.role == EMERGENCY_ROLE)
                .map(|a| a.approver.to_string())
                .collect();
            decision.checked.push(Check {
                requirement: format!("approval by role `{EMERGENCY_ROLE}`"),
                met: !named.is_empty(),
                detail: if named.is_empty() {
                    "no counting approval".to_string()
                } else {
                    format!("approved by {}", named.join(", "))
                },
            });
        }
        None => {
            let gate = match policy.policy.stages.get(to.as_str()) {
                Some(g) => g.clone(),
                None if to == Stage::Retired => Gate::default(),
                None => {
                    return Err(Error::Invalid(format!(
                    "the policy `{}` has no gate for `{to}`\nhint: add a `[stages.{to}]` section",
                    policy.path.display()
                )))
                }
            };
            decision.checked = evaluate(store, m, &opened, stage, &gate)?;
        }
    }
    let Some(actor) = actor.filter(|_| decision.unmet().next().is_none()) else {
        return Ok(decision);
    };
    let mut displaced_to = None;
    if to == Stage::Production {
        if let Some((v, stage)) = displace(store, actor, &m.name, Some(&m.version))? {
            decision.displaced = Some(v);
            displaced_to = Some(stage);
        }
    }
    registry::set_stage(store, m, to, &record)?;
    let action = if emergency.is_some() {
        "emergency-promote"
    } else {
        "promote"
    };
    let reason = emergency.as_ref().map(|e| e.reason.to_string());
    registry::append_history(
        store,
        &m.name,
        &HistoryEntry {
            time: repro_evidence::clock::now(),
            action: action.to_string(),
            version: m.version.clone(),
            record: record.to_string(),
            from: stage.to_string(),
            to: to.to_string(),
            policy: Some(policy.digest.clone()),
            checked: decision.checked.clone(),
            actor: actor.identity.clone(),
            reason: reason.clone(),
        },
    )?;
    audit::append(
        store,
        actor.key,
        &actor.identity,
        Event::new(
            action,
            m.to_string(),
            serde_json::json!({
                "record": record.to_string(),
                "from": stage.as_str(),
                "to": to.as_str(),
                "policy": policy.digest,
                "checked": decision.checked,
                "reason": reason,
                "displaced": decision.displaced,
                "displaced_to": displaced_to.map(|s| s.as_str()),
            }),
        ),
    )?;
    decision.promoted = true;
    Ok(decision)
}

/// Move the production version of `name` (other than `keep`) out of
/// production: to `validated`, or, when it got there by an emergency
/// promotion, back to the stage it came from; returns its version and
/// where it went.
fn displace(
    store: &Store,
    actor: &Actor<'_>,
    name: &str,
    keep: Option<&str>,
) -> Result<Option<(String, Stage)>> {
    let Some(version) = registry::production_of(store, name)? else {
        return Ok(None);
    };
    if Some(version.as_str()) == keep {
        return Ok(None);
    }
    // A version that reached production by an emergency promotion never
    // passed the production gate: it goes back to where it came from, not
    // to `validated`.
    let back_to = registry::history(store, name)?
        .iter()
        .rev()
        .find(|h| h.version == version && h.to == Stage::Production.as_str())
        .filter(|h| h.action == "emergency-promote")
        .map(|h| h.from.parse::<Stage>())
        .transpose()?
        .unwrap_or(Stage::Validated);
    let old = VersionRef {
        name: name.to_string(),
        version: version.clone(),
    };
    let (_, staged) = registry::stage_of(store, &old)?;
    let record = match staged {
        Some(d) => d,
        None => registry::current_record(store, &old)?,
    };
    registry::set_stage(store, &old, back_to, &record)?;
    registry::append_history(
        store,
        name,
        &HistoryEntry {
            time: repro_evidence::clock::now(),
            action: "demote".to_string(),
            version: version.clone(),
            record: record.to_string(),
            from: Stage::Production.to_string(),
            to: back_to.to_string(),
            policy: None,
            checked: Vec::new(),
            actor: actor.identity.clone(),
            reason: None,
        },
    )?;
    Ok(Some((version, back_to)))
}

/// What `rollback` did.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// `name@version` now in production.
    pub model: String,
    /// Its record (as promoted then).
    pub record: String,
    /// The production version moved to `validated`, if any.
    pub displaced: Option<String>,
    /// When it passed the production gate.
    pub gate_passed: String,
    /// `sha256:` of the policy it passed.
    pub policy: Option<String>,
}

/// Make `name@version` production again: it must have passed the production
/// gate before (a `promote` to `production` in the history), the policy in
/// force must name the roles a rollback needs (`[rollback] approvals`),
/// each of which must have approved the target's record, and the target's
/// approvals must still meet the production gate in force (an approver
/// revoked since, or who lost the role, no longer counts): everything that
/// no longer holds is listed.
pub fn rollback(
    store: &Store,
    actor: &Actor<'_>,
    name: &str,
    version: &str,
    reason: Option<&str>,
    policy: &Loaded,
) -> Result<Rollback> {
    let m = VersionRef::parse(&format!("{name}@{version}"))?;
    let _lock = crate::base::lock_model(store, name)?;
    let history = registry::history(store, name)?;
    let Some(passed) = history
        .iter()
        .rev()
        .find(|h| h.version == version && h.action == "promote" && h.to == "production")
        .cloned()
    else {
        return Err(Error::Refused(format!(
            "refused: {m} never passed the production gate\nhint: only a version promoted to production before can be rolled back to; promote it with `repro promote {m} --to production`"
        )));
    };
    let (stage, _) = registry::stage_of(store, &m)?;
    if stage == Stage::Production {
        return Err(Error::Refused(format!("{m} is already production")));
    }
    let record: RecordDigest = passed.record.parse().map_err(|e| Error::Malformed {
        path: registry::history_path(store, name),
        why: format!("{e}"),
    })?;
    // The record must still be in the store: rollback does not rebuild.
    store.get_record(&record)?;
    let opened = registry::open(store, &record)?;
    let Some(rule) = &policy.policy.rollback else {
        return Err(Error::Refused(format!(
            "refused: the policy in force ({}) allows no rollback\nhint: an administrator adds `[rollback] approvals = [\"<role>\"]` to the policy (`repro policy set`)",
            policy.digest
        )));
    };
    let judged = approvals::list(store, &record, &opened.builder)?;
    let mut no_longer = Vec::new();
    for role in &rule.approvals {
        let ok = judged
            .iter()
            .any(|j| j.counts && j.approval.as_ref().is_some_and(|a| &a.role == role));
        if !ok {
            no_longer.push(format!(
                "rollback approval by role `{role}`: no counting approval of record {record}"
            ));
        }
    }
    let gate = policy
        .policy
        .stages
        .get(Stage::Production.as_str())
        .cloned()
        .unwrap_or_default();
    let approvals_only = Gate {
        approvals: gate.approvals.clone(),
        allow_same_person: gate.allow_same_person,
        ..Gate::default()
    };
    for c in evaluate(store, &m, &opened, Stage::Production, &approvals_only)? {
        if !c.met {
            no_longer.push(format!("{}: {} (no longer holds)", c.requirement, c.detail));
        }
    }
    if !no_longer.is_empty() {
        // Why each approval of the target that no longer counts does not.
        for j in &judged {
            if let (Some(a), Some(why)) = (&j.approval, &j.why_not) {
                no_longer.push(format!(
                    "the approval by {} in role `{}` ({}) no longer counts: {why}",
                    a.approver, a.role, a.time
                ));
            }
        }
        return Err(Error::Refused(format!(
            "refused: {m} cannot be rolled back to:\n  - {}",
            no_longer.join("\n  - ")
        )));
    }
    let (displaced, displaced_to) = match displace(store, actor, name, Some(version))? {
        Some((v, s)) => (Some(v), Some(s)),
        None => (None, None),
    };
    registry::set_stage(store, &m, Stage::Production, &record)?;
    registry::append_history(
        store,
        name,
        &HistoryEntry {
            time: repro_evidence::clock::now(),
            action: "rollback".to_string(),
            version: version.to_string(),
            record: record.to_string(),
            from: stage.to_string(),
            to: Stage::Production.to_string(),
            policy: passed.policy.clone(),
            checked: Vec::new(),
            actor: actor.identity.clone(),
            reason: reason.map(str::to_string),
        },
    )?;
    audit::append(
        store,
        actor.key,
        &actor.identity,
        Event::new(
            "rollback",
            m.to_string(),
            serde_json::json!({
                "record": record.to_string(),
                "from": stage.as_str(),
                "displaced": displaced,
                "displaced_to": displaced_to.map(|s| s.as_str()),
                "gate_passed": passed.time,
                "policy": passed.policy,
                "reason": reason,
            }),
        ),
    )?;
    Ok(Rollback {
        model: m.to_string(),
        record: record.to_string(),
        displaced,
        gate_passed: passed.time,
        policy: passed.policy,
    })
}
