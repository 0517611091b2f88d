//! What an examiner asks about a past date: which version of a model was in
//! which stage, who had approved it, under which policy. Answered from the
//! signed audit log alone ([`crate::chain`]), never from the files in the
//! store that say what is true now.

use repro_evidence::audit;
use repro_store::Store;
use serde::Serialize;

use crate::base::{Error, Result, Stage};
use crate::chain;

/// A version's stage at the time asked about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StagedThen {
    /// The version.
    pub version: String,
    /// Its stage.
    pub stage: Stage,
    /// The record in that stage.
    pub record: String,
}

/// An approval logged by then.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApprovedThen {
    /// The version.
    pub version: String,
    /// The record approved.
    pub record: String,
    /// The role.
    pub role: String,
    /// Who (`Name <email> (keyid)`).
    pub approver: String,
    /// When.
    pub time: String,
    /// Why.
    pub reason: String,
}

/// A stage decision logged by then.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DecidedThen {
    /// When.
    pub time: String,
    /// `promote`, `emergency-promote` or `rollback`.
    pub action: String,
    /// The version.
    pub version: String,
    /// The stage it went to.
    pub to: String,
    /// Who.
    pub actor: String,
    /// The policy it was decided under (`sha256:`), when logged.
    pub policy: Option<String>,
    /// The reason (emergencies and rollbacks).
    pub reason: Option<String>,
}

/// The answer to `repro registry show <name> --at <time>`.
#[derive(Debug, Clone, Serialize)]
pub struct AsOf {
    /// The model.
    pub name: String,
    /// The time asked about (RFC 3339).
    pub at: String,
    /// The production version then, if any.
    pub production: Option<StagedThen>,
    /// Every staged version then.
    pub stages: Vec<StagedThen>,
    /// The policy in force then: digest and version.
    pub policy: Option<(String, u32)>,
    /// Every approval of a version of the model logged by then.
    pub approvals: Vec<ApprovedThen>,
    /// Every stage decision about the model logged by then.
    pub decisions: Vec<DecidedThen>,
}

/// The state of model `name` at `at` (RFC 3339), from the audit log.
pub fn as_of(store: &Store, name: &str, at: &str) -> Result<AsOf> {
    let t = repro_evidence::clock::parse(at).ok_or_else(|| {
        Error::Invalid(format!(
            "`{at}` is not an RFC 3339 time\nhint: for example `2026-06-30T12:00:00Z`"
        ))
    })?;
    let state = chain::replay_until(store, Some(t))?;
    let mut stages: Vec<StagedThen> = state
        .stages
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, v), (s, r))| StagedThen {
            version: v.clone(),
            stage: *s,
            record: r.to_string(),
        })
        .collect();
    stages.sort_by(|a, b| (a.stage, &a.version).cmp(&(b.stage, &b.version)));
    let production = stages
        .iter()
        .find(|s| s.stage == Stage::Production)
        .cloned();
    let mut approvals = Vec::new();
    let mut decisions = Vec::new();
    let prefix = format!("{name}@");
    for (_, e) in audit::entries(store)? {
        if repro_evidence::clock::parse(&e.time).is_some_and(|et| et > t) {
            break;
        }
        let Some(version) = e.subject.strip_prefix(&prefix) else {
            continue;
        };
        let d = &e.details;
        let text = |k: &str| d[k].as_str().map(str::to_string);
        match e.kind.as_str() {
            "approve" => approvals.push(ApprovedThen {
                version: version.to_string(),
                record: text("record").unwrap_or_default(),
                role: text("role").unwrap_or_default(),
                approver: e.actor.to_string(),
                time: e.time.clone(),
                reason: text("reason").unwrap_or_default(),
            }),
            "promote" | "emergency-promote" | "rollback" => decisions.push(DecidedThen {
                time: e.time.clone(),
                action: e.kind.clone(),
                version: version.to_string(),
                to: text("to").unwrap_or_else(|| "production".into()),
                actor: e.actor.to_string(),
                policy: text("policy"),
                reason: text("reason"),
            }),
            _ => {}
        }
    }
    Ok(AsOf {
        name: name.to_string(),
        at: at.to_string(),
        production,
        stages,
        policy: state.policy,
        approvals,
        decisions,
    })
}
