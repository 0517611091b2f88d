//! `repro status`: one overview of every model in the store, for a person
//! and for a scheduled CI job.
//!
//! For each model: the version in each stage (as `repro registry list` has
//! it: the stage files, once [`crate::chain::checked_if_governed`] found
//! them to be what the signed audit log says), with the verification
//! attestations of each (newest first); whether a validated or production
//! version is due for revalidation (the policy's `revalidate_every`);
//! approvals that expire soon or have expired; emergency promotions whose
//! review is overdue (as `repro registry show` judges them); and, for a
//! model whose recipe is given, which inputs moved since its newest
//! version. What needs attention is also listed in words
//! ([`ModelStatus::attention`]), so that `repro status --strict` can fail.
//!
//! Everything is judged at one time, [`Options::now`], so that the same
//! store gives the same answer for the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use repro_evidence::attest::Identity;
use repro_evidence::record::Inputs;
use repro_recipes::Pins;
use repro_store::{Hash, RecordDigest, Store};
use serde::Serialize;
use time::OffsetDateTime;

use crate::approvals::{self, Judged};
use crate::base::{Error, Result, Stage};
use crate::identities;
use crate::policy::{self, EmergencyRule};
use crate::registry::{self, Row};

/// What `repro status` is asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time everything is judged at (RFC 3339 in [`Status::generated`]).
    pub now: OffsetDateTime,
    /// Approvals that expire within this long (or have expired) are listed.
    pub within: Duration,
    /// The recipes whose inputs are resolved now, one per model.
    pub recipes: Vec<RecipeInputs>,
}

/// What a recipe's inputs resolve to now (the caller resolves them:
/// snapshotting folders and importing images is the engine's).
#[derive(Debug, Clone)]
pub struct RecipeInputs {
    /// The recipe, as given (shown).
    pub recipe: String,
    /// Its `[model] name`.
    pub model: String,
    /// Every input as resolved now (the recipe's own pins included).
    pub pins: Pins,
    /// How the recipe names each floating input now, by input
    /// (`data.train` -> `path = "data"`).
    pub references: BTreeMap<String, String>,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When it was judged (RFC 3339).
    pub generated: String,
    /// The policy it was judged under, if the store has one.
    pub policy: Option<PolicyInForce>,
    /// The window for expiring approvals, as a duration (`14d`).
    pub within: String,
    /// How many things need attention, over every model.
    pub attention: usize,
    /// Every model with a record, by name.
    pub models: Vec<ModelStatus>,
}

/// The policy in force, as far as `repro status` reads it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInForce {
    /// `sha256:` of the policy file.
    pub digest: String,
    /// `revalidate_every`, as written, when the policy has one.
    pub revalidate_every: Option<String>,
}

/// One model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// The model's name.
    pub name: String,
    /// Its staged versions.
    pub stages: Stages,
    /// Every version with a record and no stage, oldest build first.
    pub candidates: Vec<VersionStatus>,
    /// Which inputs moved since the newest version, when its recipe was
    /// given (`None`: not asked).
    pub inputs_moved: Option<InputsMoved>,
    /// Per version and role, the approval that expires within the window
    /// or has expired, unless another approval in that role lasts beyond
    /// it (retired versions are left out).
    pub expiring_approvals: Vec<ExpiringApproval>,
    /// Emergency promotions not reviewed in time.
    pub overdue_reviews: Vec<OverdueReview>,
    /// What needs attention, one sentence each.
    pub attention: Vec<String>,
}

/// The staged versions of a model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    /// The production version (at most one).
    pub production: Option<VersionStatus>,
    /// The validated versions, oldest build first.
    pub validated: Vec<VersionStatus>,
    /// The retired versions, oldest build first.
    pub retired: Vec<VersionStatus>,
}

/// One version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    /// The version.
    pub version: String,
    /// Its record: the staged one, or a candidate's latest.
    pub record: String,
    /// Its newest verification, if any.
    pub last_verified: Option<Verification>,
    /// Every verification attestation of the record, newest first.
    pub verifications: Vec<Verification>,
    /// Whether it is due to be verified again: a validated or production
    /// version under a policy with `revalidate_every` whose newest
    /// reproduction is older than that, or which has none.
    pub revalidation_due: bool,
    /// When it is due (its newest reproduction plus `revalidate_every`);
    /// `None` without a reproduction or without the policy key.
    pub revalidate_by: Option<String>,
}

/// A verification attestation of a record.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// When (as the attestation says).
    pub time: String,
    /// `reproduced` or `not reproduced`.
    pub result: String,
    /// Whether every output was rebuilt byte for byte.
    pub reproduced: bool,
    /// The attestation's digest.
    pub attestation: String,
    /// Who signed it.
    pub signer: Signer,
}

/// The key that signed an attestation, with the identity registered for it.
#[derive(Debug, Clone, Serialize)]
pub struct Signer {
    /// The key id.
    pub keyid: String,
    /// Whether the key is a registered identity.
    pub registered: bool,
    /// The registered name.
    pub name: Option<String>,
    /// The registered e-mail.
    pub email: Option<String>,
    /// Whether the registered identity is revoked.
    pub revoked: bool,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = Identity {
            keyid: self.keyid.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
        };
        write!(f, "{id}")?;
        if !self.registered {
            f.write_str(", not a registered identity")?;
        } else if self.revoked {
            f.write_str(", revoked")?;
        }
        Ok(())
    }
}

/// The inputs of a model's recipe as they are now, against its newest version.
#[derive(Debug, Clone, Serialize)]
pub struct InputsMoved {
    /// The recipe, as given.
    pub recipe: String,
    /// The newest version (by its latest record's `finishedOn`).
    pub version: String,
    /// Its latest record, whose pins are compared.
    pub record: String,
    /// Every input whose digest differs; empty when none moved.
    pub moved: Vec<MovedInput>,
}

/// One input that moved.
#[derive(Debug, Clone, Serialize)]
pub struct MovedInput {
    /// `toolchains.NAME`, `data.NAME` or `code.NAME`.
    pub input: String,
    /// How the recipe names it now (`path = "data"`), when it floats.
    pub reference: Option<String>,
    /// The digest in the record (`None`: the recipe added it since).
    pub recorded: Option<String>,
    /// The digest now (`None`: the recipe no longer has it).
    pub now: Option<String>,
}

/// An approval that expires soon or has expired.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiringApproval {
    /// The version approved.
    pub version: String,
    /// Its stage.
    pub stage: Stage,
    /// The record approved.
    pub record: String,
    /// The role.
    pub role: String,
    /// Who approved.
    pub approver: Identity,
    /// The approval's digest.
    pub approval: String,
    /// When it was signed.
    pub time: String,
    /// When it stops counting.
    pub expires: String,
    /// Whether that time has passed.
    pub expired: bool,
}

/// An emergency promotion whose review is overdue.
#[derive(Debug, Clone, Serialize)]
pub struct OverdueReview {
    /// The version promoted.
    pub version: String,
    /// Its stage now.
    pub stage: Stage,
    /// When it was promoted.
    pub promoted_at: String,
    /// Why it was an emergency.
    pub reason: Option<String>,
    /// When the review was due.
    pub due_by: Option<String>,
    /// The role whose approval is the review.
    pub review_role: String,
}

/// A duration as `repro` writes them: days, hours, minutes, seconds
/// (`14d`, `1d12h`, `90s`; `0s` for zero), the milliseconds left out.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}ms", d.as_millis())
        };
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Judge every model of the store at `opts.now`. The caller has checked
/// governance (see the module docs); a verification attestation kept in
/// the store whose signature no longer checks out is tampering (exit 3),
/// as for `repro attest list`. A recipe whose model has no version in the
/// store, or two recipes of one model, are refused.
pub fn status(store: &Store, opts: &Options) -> Result<Status> {
    let rows = registry::list(store)?;
    let loaded = policy::in_force(store)?;
    let every = loaded
        .as_ref()
        .and_then(|l| l.policy.revalidation_interval());
    let emergency = loaded.as_ref().and_then(|l| l.policy.emergency.clone());
    let mut by_model: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in rows {
        by_model.entry(r.name.clone()).or_default().push(r);
    }
    let mut recipes: BTreeMap<&str, &RecipeInputs> = BTreeMap::new();
    for r in &opts.recipes {
        if let Some(first) = recipes.insert(&r.model, r) {
            return Err(Error::Invalid(format!(
                "`--recipe {}` and `--recipe {}` are both recipes of model `{}`\nhint: give one recipe per model",
                first.recipe, r.recipe, r.model
            )));
        }
        if !by_model.contains_key(&r.model) {
            return Err(Error::Invalid(format!(
                "the recipe `{}` is of model `{}`, which has no version in this store\nhint: build it first (`repro build {}`), or leave it out",
                r.recipe, r.model, r.recipe
            )));
        }
    }
    let judge = Judge {
        store,
        now: opts.now,
        within: opts.within,
        every,
        every_text: loaded
            .as_ref()
            .and_then(|l| l.policy.revalidate_every.as_ref())
            .map(|s| s.get_ref().to_string())
            .unwrap_or_default(),
        emergency,
    };
    let mut models = Vec::new();
    for (name, rows) in by_model {
        models.push(judge.model(&name, rows, recipes.get(name.as_str()).copied())?);
    }
    Ok(Status {
        generated: repro_evidence::clock::format(opts.now),
        policy: loaded.map(|l| PolicyInForce {
            digest: l.digest,
            revalidate_every: l.policy.revalidate_every.map(|s| s.get_ref().to_string()),
        }),
        within: format_duration(opts.within),
        attention: models.iter().map(|m| m.attention.len()).sum(),
        models,
    })
}

/// One version of a model as read from the store.
struct Read {
    row: Row,
    /// The row's record.
    record: RecordDigest,
    /// The key that signed the row's record.
    builder: String,
    /// The version's latest record and its `finishedOn` (for "newest").
    latest: RecordDigest,
    finished: Option<OffsetDateTime>,
}

/// The judgement's fixed parts.
struct Judge<'a> {
    store: &'a Store,
    now: OffsetDateTime,
    within: Duration,
    every: Option<Duration>,
    /// `revalidate_every` as the policy writes it.
    every_text: String,
    emergency: Option<EmergencyRule>,
}

impl Judge<'_> {
    fn model(
        &self,
        name: &str,
        rows: Vec<Row>,
        recipe: Option<&RecipeInputs>,
    ) -> Result<ModelStatus> {
        let mut read = Vec::new();
        for row in rows {
            let record: RecordDigest = row.record.parse().map_err(|e| {
                Error::Invalid(format!(
                    "{}@{}: record {}: {e}",
                    row.name, row.version, row.record
                ))
            })?;
            let builder = registry::open(self.store, &record)?.builder;
            let m = repro_evidence::VersionRef {
                name: row.name.clone(),
                version: row.version.clone(),
            };
            let latest = registry::current_record(self.store, &m)?;
            let finished = self
                .store
                .get_record(&latest)
                .ok()
                .and_then(|b| repro_evidence::record::statement_of(&b).ok())
                .and_then(|s| {
                    repro_evidence::clock::parse(&s.predicate.run_details.metadata.finished_on)
                });
            read.push(Read {
                row,
                record,
                builder,
                latest,
                finished,
            });
        }
        // Oldest build first (a record without a readable time last).
        read.sort_by(|a, b| {
            (a.finished.is_none(), a.finished, &a.row.version).cmp(&(
                b.finished.is_none(),
                b.finished,
                &b.row.version,
            ))
        });
        let history = registry::history(self.store, name)?;
        let mut out = ModelStatus {
            name: name.to_string(),
            stages: Stages::default(),
            candidates: Vec::new(),
            inputs_moved: None,
            expiring_approvals: Vec::new(),
            overdue_reviews: Vec::new(),
            attention: Vec::new(),
        };
        for r in &read {
            let record = &r.record;
            let stage = r.row.stage;
            let at = format!("{name}@{} ({stage})", r.row.version);
            let v = self.version(&r.row.version, record, stage)?;
            if v.revalidation_due {
                let every = &self.every_text;
                out.attention.push(match (&v.revalidate_by, newest_reproduction(&v)) {
                    (Some(by), Some(last)) => format!(
                        "{at}: revalidation due since {by}: last reproduced {} (revalidate_every = \"{every}\")",
                        last.time
                    ),
                    _ => format!(
                        "{at}: revalidation due: never reproduced (revalidate_every = \"{every}\")"
                    ),
                });
            }
            if matches!(stage, Stage::Production | Stage::Validated) {
                if let Some(last) = v.last_verified.as_ref().filter(|l| !l.reproduced) {
                    out.attention.push(format!(
                        "{at}: the newest verification, at {} by {}, did not reproduce",
                        last.time, last.signer
                    ));
                }
            }
            let judged = approvals::list_at(self.store, record, &r.builder, self.now)?;
            if stage != Stage::Retired {
                for e in self.expiring(&r.row, record, &r.builder, &judged)? {
                    out.attention.push(format!(
                        "{at}: the `{}` approval by {} {} at {}",
                        e.role,
                        e.approver,
                        if e.expired { "expired" } else { "expires" },
                        e.expires
                    ));
                    out.expiring_approvals.push(e);
                }
            }
            let mine: Vec<_> = history
                .iter()
                .filter(|h| h.version == r.row.version)
                .cloned()
                .collect();
            if let Some(rule) = &self.emergency {
                for review in registry::emergency_reviews_at(&mine, &judged, Some(rule), self.now)
                    .into_iter()
                    .filter(|e| e.overdue)
                {
                    out.attention.push(format!(
                        "{at}: the emergency promotion at {}{} was not reviewed by role `{}` by {}",
                        review.promoted_at,
                        review
                            .reason
                            .as_ref()
                            .map(|r| format!(" (reason: {r})"))
                            .unwrap_or_default(),
                        rule.review_role,
                        review.due_by.as_deref().unwrap_or("its due time")
                    ));
                    out.overdue_reviews.push(OverdueReview {
                        version: r.row.version.clone(),
                        stage,
                        promoted_at: review.promoted_at,
                        reason: review.reason,
                        due_by: review.due_by,
                        review_role: rule.review_role.clone(),
                    });
                }
            }
            match stage {
                Stage::Candidate => out.candidates.push(v),
                Stage::Validated => out.stages.validated.push(v),
                Stage::Production => out.stages.production = Some(v),
                Stage::Retired => out.stages.retired.push(v),
            }
        }
        if let Some(recipe) = recipe {
            let moved = self.inputs_moved(&read, recipe)?;
            if !moved.moved.is_empty() {
                let names: Vec<String> = moved.moved.iter().map(|m| m.input.clone()).collect();
                out.attention.push(format!(
                    "inputs moved since {name}@{} (per `{}`): {}",
                    moved.version,
                    moved.recipe,
                    names.join(", ")
                ));
            }
            out.inputs_moved = Some(moved);
        }
        Ok(out)
    }

    /// The verifications of `record` (of `version`, in `stage`) and whether
    /// it is due for revalidation.
    fn version(&self, version: &str, record: &RecordDigest, stage: Stage) -> Result<VersionStatus> {
        let mut verifications = Vec::new();
        let mut bad = Vec::new();
        for c in repro_evidence::attest::list(self.store, record)? {
            let keyid = match &c.signature {
                Ok(k) => k.clone(),
                Err(why) => {
                    bad.push(format!("attestation {} of {record}: {why}", c.digest));
                    continue;
                }
            };
            let reg = identities::get(self.store, &keyid)?;
            let p = &c.statement.predicate;
            // A PASSED attestation about another record reproduced that one.
            let reproduced =
                p.verification_result == "PASSED" && c.statement.record().as_ref() == Some(record);
            verifications.push(Verification {
                time: p.time_verified.clone(),
                result: if reproduced {
                    "reproduced"
                } else {
                    "not reproduced"
                }
                .into(),
                reproduced,
                attestation: c.digest.to_string(),
                signer: Signer {
                    keyid,
                    registered: reg.is_some(),
                    name: reg.as_ref().map(|r| r.name.clone()),
                    email: reg.as_ref().map(|r| r.email.clone()),
                    revoked: reg.as_ref().is_some_and(|r| r.revoked.is_some()),
                },
            });
        }
        if !bad.is_empty() {
            return Err(Error::Other(
                repro_evidence::exit::Tampered(format!(
                    "verification attestations kept in the store no longer check out (altered, or their key removed):\n  {}\nhint: `repro fsck` lists every damaged object; do not rely on these attestations",
                    bad.join("\n  ")
                ))
                .into(),
            ));
        }
        // Newest first; a time that does not parse last.
        verifications.sort_by(|a, b| {
            let t = |v: &Verification| repro_evidence::clock::parse(&v.time);
            (t(b).is_some(), t(b), &b.time).cmp(&(t(a).is_some(), t(a), &a.time))
        });
        let mut v = VersionStatus {
            version: version.to_string(),
            record: record.to_string(),
            last_verified: verifications.first().cloned(),
            verifications,
            revalidation_due: false,
            revalidate_by: None,
        };
        if let (Some(every), Stage::Production | Stage::Validated) = (self.every, stage) {
            let by = newest_reproduction(&v)
                .and_then(|r| repro_evidence::clock::parse(&r.time))
                .map(|t| t + every);
            v.revalidation_due = by.is_none_or(|by| by <= self.now);
            v.revalidate_by = by.map(repro_evidence::clock::format);
        }
        Ok(v)
    }

    /// The approvals of `record` (of `row`, built by `builder`; `judged`
    /// at now) that need renewing: per role, when no counting approval in
    /// it lasts beyond the window, the one that lasts longest of those
    /// that count and expire within it and those that counted until they
    /// expired.
    fn expiring(
        &self,
        row: &Row,
        record: &RecordDigest,
        builder: &str,
        judged: &[Judged],
    ) -> Result<Vec<ExpiringApproval>> {
        let horizon = self.now + self.within;
        let mut covered = BTreeSet::new();
        let mut ending: BTreeMap<String, (OffsetDateTime, &Judged)> = BTreeMap::new();
        for j in judged {
            let Some(a) = &j.approval else { continue };
            let expires = a.expires.as_deref().and_then(repro_evidence::clock::parse);
            let ends = if j.counts {
                match expires {
                    Some(t) if t <= horizon => t,
                    _ => {
                        covered.insert(a.role.clone());
                        continue;
                    }
                }
            } else {
                // Expired, and counted until then (judged just before).
                let Some(t) = expires.filter(|t| *t <= self.now) else {
                    continue;
                };
                let before = t - time::Duration::seconds(1);
                let counted = approvals::list_at(self.store, record, builder, before)?
                    .iter()
                    .any(|b| b.digest == j.digest && b.counts);
                if !counted {
                    continue;
                }
                t
            };
            let slot = ending.entry(a.role.clone()).or_insert((ends, j));
            if ends > slot.0 {
                *slot = (ends, j);
            }
        }
        Ok(ending
            .into_iter()
            .filter(|(role, _)| !covered.contains(role))
            .filter_map(|(role, (ends, j))| {
                let a = j.approval.as_ref()?;
                Some(ExpiringApproval {
                    version: row.version.clone(),
                    stage: row.stage,
                    record: record.to_string(),
                    role,
                    approver: a.approver.clone(),
                    approval: j.digest.clone(),
                    time: a.time.clone(),
                    expires: a.expires.clone().unwrap_or_default(),
                    expired: ends <= self.now,
                })
            })
            .collect())
    }

    /// The recipe's inputs now against the pins of the model's newest
    /// version's latest record.
    fn inputs_moved(&self, read: &[Read], recipe: &RecipeInputs) -> Result<InputsMoved> {
        let newest = read
            .iter()
            .max_by(|a, b| (a.finished, &a.row.version).cmp(&(b.finished, &b.row.version)))
            .ok_or_else(|| Error::Invalid(format!("model `{}` has no version", recipe.model)))?;
        let statement = registry::open(self.store, &newest.latest)?.statement;
        let recorded = Inputs::of_statement(&statement).pins;
        let now = pin_map(&recipe.pins);
        let names: BTreeSet<&String> = recorded.keys().chain(now.keys()).collect();
        let moved = names
            .into_iter()
            .filter(|n| recorded.get(*n) != now.get(*n))
            .map(|n| MovedInput {
                input: n.clone(),
                reference: recipe.references.get(n).cloned(),
                recorded: recorded.get(n).map(Hash::to_string),
                now: now.get(n).map(Hash::to_string),
            })
            .collect();
        Ok(InputsMoved {
            recipe: recipe.recipe.clone(),
            version: newest.row.version.clone(),
            record: newest.latest.to_string(),
            moved,
        })
    }
}

/// The newest verification of `v` that reproduced it.
fn newest_reproduction(v: &VersionStatus) -> Option<&Verification> {
    v.verifications
        .iter()
        .filter(|x| x.reproduced && repro_evidence::clock::parse(&x.time).is_some())
        .max_by_key(|x| repro_evidence::clock::parse(&x.time))
}

/// `pins` by input name, as records name them (`data.train`).
fn pin_map(pins: &Pins) -> BTreeMap<String, Hash> {
    let mut out = BTreeMap::new();
    for (n, d) in &pins.toolchains {
        out.insert(format!("toolchains.{n}"), d.hash());
    }
    for (n, d) in &pins.data {
        out.insert(format!("data.{n}"), d.hash());
    }
    for (n, d) in &pins.code {
        out.insert(format!("code.{n}"), d.hash());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_they_are_read() {
        for (secs, text) in [
            (0, "0s"),
            (90, "1m30s"),
            (14 * 86400, "14d"),
            (36 * 3600, "1d12h"),
            (90 * 86400, "90d"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format_duration(d), text);
            if secs > 0 {
                assert_eq!(repro_recipes::parse_duration(text), Ok(d));
            }
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
