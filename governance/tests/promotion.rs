//! Promotion moves stages (and only when the gate is met), production has
//! one version, emergencies, and rollback.

mod common;

use common::{unmet, Build, Person, World};
use repro_evidence::audit;
use repro_governance::promote::{self, Emergency};
use repro_governance::{registry, Stage};

/// Production needs a model-risk approval, from `validated`; so does a
/// rollback.
const POLICY: &str = r#"
[stages.validated]
[stages.production]
from = "validated"
approvals = ["model-risk"]
[rollback]
approvals = ["model-risk"]
"#;

/// A world with Rita (model-risk) and Erin (emergency) registered.
fn world() -> (World, Person, Person) {
    let w = World::new();
    let rita = Person::new("Rita", 3);
    w.register(&rita, &["model-risk"]);
    let erin = Person::new("Erin", 4);
    w.register(&erin, &["emergency"]);
    (w, rita, erin)
}

/// Build `gov@<version>`, validate it, have Rita approve it, and promote it to production.
fn to_production(w: &World, rita: &Person, version: &str) -> promote::Decision {
    w.build(version, &Build::auc(0.95));
    let p = w.policy(POLICY);
    assert!(w.promote(version, Stage::Validated, &p).promoted);
    w.approve(rita, version, "model-risk");
    let d = w.promote(version, Stage::Production, &p);
    assert!(d.promoted, "{:?}", d.checked);
    d
}

fn audit_kinds(w: &World) -> Vec<String> {
    audit::entries(&w.store)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect()
}

/// Every stage ref, as `(stage, name, version)`.
fn stage_refs(w: &World) -> Vec<(String, String, String)> {
    ["validated", "production", "retired"]
        .iter()
        .flat_map(|s| {
            w.store
                .stage_members(s)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (s.to_string(), n, v))
        })
        .collect()
}

#[test]
fn promotion_to_production_moves_the_previous_production_version_to_validated() {
    let (w, rita, _) = world();
    let first = to_production(&w, &rita, "1");
    assert_eq!(first.displaced, None);
    let second = to_production(&w, &rita, "2");
    assert_eq!(second.displaced.as_deref(), Some("1"));
    assert_eq!(w.stage("2"), Stage::Production);
    assert_eq!(w.stage("1"), Stage::Validated);
    assert_eq!(
        registry::production_of(&w.store, "gov").unwrap().as_deref(),
        Some("2")
    );
    // The demoted version keeps the record it was promoted with.
    let (_, staged) = registry::stage_of(&w.store, &w.model("1")).unwrap();
    assert_eq!(staged, Some(w.record("1")));
    let h = w.history();
    let last_two: Vec<_> = h[h.len() - 2..]
        .iter()
        .map(|(a, v, f, t)| format!("{a} {v} {f}->{t}"))
        .collect();
    assert_eq!(
        last_two,
        [
            "demote 1 production->validated",
            "promote 2 validated->production"
        ]
    );
}

#[test]
fn a_refused_promotion_changes_no_stage_history_or_audit_log() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    w.build("2", &Build::auc(0.95));
    let p = w.policy(POLICY);
    assert!(w.promote("2", Stage::Validated, &p).promoted);
    let (refs, history, log) = (stage_refs(&w), w.history(), audit_kinds(&w));
    // No model-risk approval for gov@2.
    let d = w.promote("2", Stage::Production, &p);
    assert!(!d.promoted);
    assert_eq!(d.displaced, None);
    assert_eq!(unmet(&d.checked), ["approval by role `model-risk`"]);
    assert_eq!(stage_refs(&w), refs);
    assert_eq!(w.history(), history);
    assert_eq!(audit_kinds(&w), log);
    assert_eq!(w.stage("1"), Stage::Production);
    assert_eq!(w.stage("2"), Stage::Validated);
}

#[test]
fn a_promotion_is_recorded_in_the_history_and_the_audit_log_with_its_policy() {
    let (w, rita, _) = world();
    let d = to_production(&w, &rita, "1");
    let h = registry::history(&w.store, "gov").unwrap();
    let last = h.last().unwrap();
    assert_eq!(last.action, "promote");
    assert_eq!(last.record, w.record("1").to_string());
    assert_eq!(last.policy.as_deref(), Some(d.policy.as_str()));
    assert_eq!(last.checked, d.checked);
    assert_eq!(last.actor, w.alice.identity());
    assert_eq!(audit_kinds(&w), ["promote", "promote"]);
    let verified = audit::verify(&w.store).unwrap();
    assert!(verified.intact, "{:?}", verified.problems);
}

#[test]
fn an_emergency_promotion_bypasses_the_gate_only_with_a_counting_emergency_approval() {
    let (w, _, erin) = world();
    w.build("1", &Build::auc(0.95));
    let p = w.policy(POLICY);
    let emergency = |w: &World| {
        promote::promote(
            &w.store,
            &w.actor(),
            &w.model("1"),
            Stage::Production,
            &p,
            Some(Emergency { reason: "outage" }),
        )
        .unwrap()
    };
    // No emergency approval: refused, though the reason is given.
    let d = emergency(&w);
    assert!(!d.promoted && d.emergency);
    assert_eq!(unmet(&d.checked), ["approval by role `emergency`"]);
    assert_eq!(w.stage("1"), Stage::Candidate);
    // Erin's approval counts: the version goes straight from candidate to production.
    w.approve(&erin, "1", "emergency");
    let d = emergency(&w);
    assert!(d.promoted, "{:?}", d.checked);
    assert_eq!(w.stage("1"), Stage::Production);
    let h = w.history();
    assert_eq!(h.last().unwrap().0, "emergency-promote");
    assert_eq!(audit_kinds(&w).last().unwrap(), "emergency-promote");
}

#[test]
fn an_emergency_approval_by_a_revoked_approver_does_not_allow_an_emergency_promotion() {
    let (w, _, erin) = world();
    w.build("1", &Build::auc(0.95));
    w.approve(&erin, "1", "emergency");
    w.revoke(&erin, "left");
    let d = promote::promote(
        &w.store,
        &w.actor(),
        &w.model("1"),
        Stage::Production,
        &w.policy(POLICY),
        Some(Emergency { reason: "outage" }),
    )
    .unwrap();
    assert!(!d.promoted);
    assert_eq!(w.stage("1"), Stage::Candidate);
}

// --- rollback -------------------------------------------------------------

#[test]
fn rollback_to_a_version_that_passed_the_production_gate_makes_it_production_again() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    to_production(&w, &rita, "2");
    let r = promote::rollback(
        &w.store,
        &w.actor(),
        "gov",
        "1",
        Some("bad 2"),
        &w.policy(POLICY),
    )
    .unwrap();
    assert_eq!(r.model, "gov@1");
    assert_eq!(r.record, w.record("1").to_string());
    assert_eq!(r.displaced.as_deref(), Some("2"));
    assert!(r.policy.is_some());
    assert_eq!(w.stage("1"), Stage::Production);
    // The displaced version goes to validated (still a rollback target).
    assert_eq!(w.stage("2"), Stage::Validated);
    let h = w.history();
    let last_two: Vec<_> = h[h.len() - 2..]
        .iter()
        .map(|(a, v, f, t)| format!("{a} {v} {f}->{t}"))
        .collect();
    assert_eq!(
        last_two,
        [
            "demote 2 production->validated",
            "rollback 1 validated->production"
        ]
    );
    assert_eq!(audit_kinds(&w).last().unwrap(), "rollback");
    // And back again.
    let r = promote::rollback(&w.store, &w.actor(), "gov", "2", None, &w.policy(POLICY)).unwrap();
    assert_eq!(r.displaced.as_deref(), Some("1"));
    assert_eq!(w.stage("2"), Stage::Production);
}

#[test]
fn rollback_is_refused_for_a_version_that_never_passed_the_production_gate() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    // gov@2 is validated, never production.
    w.build("2", &Build::auc(0.95));
    assert!(w.promote("2", Stage::Validated, &w.policy(POLICY)).promoted);
    let (refs, history) = (stage_refs(&w), w.history());
    let e =
        promote::rollback(&w.store, &w.actor(), "gov", "2", None, &w.policy(POLICY)).unwrap_err();
    assert!(e.is_user(), "{e}");
    assert!(
        e.to_string()
            .contains("gov@2 never passed the production gate"),
        "{e}"
    );
    assert_eq!(stage_refs(&w), refs);
    assert_eq!(w.history(), history);
    assert_eq!(w.stage("1"), Stage::Production);
}

#[test]
fn rollback_is_refused_for_a_version_that_was_only_emergency_promoted() {
    let (w, rita, erin) = world();
    w.build("1", &Build::auc(0.95));
    w.approve(&erin, "1", "emergency");
    let d = promote::promote(
        &w.store,
        &w.actor(),
        &w.model("1"),
        Stage::Production,
        &w.policy(POLICY),
        Some(Emergency { reason: "outage" }),
    )
    .unwrap();
    assert!(d.promoted);
    to_production(&w, &rita, "2");
    // It never passed a gate: it goes back to where it came from, not to
    // `validated`.
    assert_eq!(w.stage("1"), Stage::Candidate);
    let e =
        promote::rollback(&w.store, &w.actor(), "gov", "1", None, &w.policy(POLICY)).unwrap_err();
    assert!(
        e.to_string().contains("never passed the production gate"),
        "{e}"
    );
    assert_eq!(w.stage("2"), Stage::Production);
}

#[test]
fn rollback_to_the_current_production_version_is_refused() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    let history = w.history();
    let e =
        promote::rollback(&w.store, &w.actor(), "gov", "1", None, &w.policy(POLICY)).unwrap_err();
    assert!(e.to_string().contains("gov@1 is already production"), "{e}");
    assert_eq!(w.history(), history);
}

#[test]
fn rollback_restores_the_record_the_version_was_promoted_with_not_a_later_rebuild() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    let promoted = w.record("1");
    // gov@1 is built again from the same inputs (another invocation): its
    // latest record changes.
    let rebuilt = w.build(
        "1",
        &Build {
            invocation: "2".into(),
            ..Build::auc(0.95)
        },
    );
    assert_ne!(rebuilt, promoted);
    assert_eq!(w.record("1"), rebuilt);
    to_production(&w, &rita, "2");
    let r = promote::rollback(&w.store, &w.actor(), "gov", "1", None, &w.policy(POLICY)).unwrap();
    assert_eq!(r.record, promoted.to_string());
    let (_, staged) = registry::stage_of(&w.store, &w.model("1")).unwrap();
    assert_eq!(staged, Some(promoted));
}

#[test]
fn an_approval_counts_for_the_record_it_names_not_for_a_later_rebuild_of_the_version() {
    let (w, rita, _) = world();
    w.build("1", &Build::auc(0.95));
    let p = w.policy(POLICY);
    assert!(w.promote("1", Stage::Validated, &p).promoted);
    w.approve(&rita, "1", "model-risk");
    // Rebuilt (same inputs): promotion goes by the latest record, which
    // nobody approved.
    w.build(
        "1",
        &Build {
            invocation: "2".into(),
            ..Build::auc(0.95)
        },
    );
    let d = w.promote("1", Stage::Production, &p);
    assert!(!d.promoted);
    assert_eq!(unmet(&d.checked), ["approval by role `model-risk`"]);
    assert_eq!(d.record, w.record("1").to_string());
}

#[test]
fn rollback_rechecks_the_targets_approvals_and_lists_what_no_longer_holds() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    let victor = Person::new("Victor", 5);
    w.register(&victor, &["model-risk"]);
    w.build("2", &Build::auc(0.95));
    let p = w.policy(POLICY);
    assert!(w.promote("2", Stage::Validated, &p).promoted);
    w.approve(&victor, "2", "model-risk");
    assert!(w.promote("2", Stage::Production, &p).promoted);
    // Rita, whose approval put gov@1 in production, is revoked.
    w.revoke(&rita, "approved without looking");
    let (refs, history) = (stage_refs(&w), w.history());
    let e = promote::rollback(&w.store, &w.actor(), "gov", "1", None, &p).unwrap_err();
    assert!(e.is_user(), "{e}");
    let text = e.to_string();
    assert!(text.contains("cannot be rolled back to"), "{text}");
    assert!(text.contains("approval by role `model-risk`"), "{text}");
    assert!(text.contains("revoked"), "{text}");
    assert!(text.contains("no longer holds"), "{text}");
    assert_eq!(stage_refs(&w), refs);
    assert_eq!(w.history(), history);
    // A fresh approval by someone who still counts makes it possible again.
    w.approve(&victor, "1", "model-risk");
    let r = promote::rollback(&w.store, &w.actor(), "gov", "1", None, &p).unwrap();
    assert_eq!(r.model, "gov@1");
}

#[test]
fn rollback_needs_a_policy_that_allows_it() {
    let (w, rita, _) = world();
    to_production(&w, &rita, "1");
    to_production(&w, &rita, "2");
    let no_rollback =
        w.policy("[stages.validated]\n[stages.production]\napprovals = [\"model-risk\"]\n");
    let e = promote::rollback(&w.store, &w.actor(), "gov", "1", None, &no_rollback).unwrap_err();
    assert!(e.to_string().contains("allows no rollback"), "{e}");
    assert_eq!(w.stage("2"), Stage::Production);
}

#[test]
fn an_emergency_then_rollback_does_not_make_the_emergency_version_validated() {
    let (w, rita, erin) = world();
    to_production(&w, &rita, "1");
    w.build("2", &Build::auc(0.5));
    w.approve(&erin, "2", "emergency");
    let d = promote::promote(
        &w.store,
        &w.actor(),
        &w.model("2"),
        Stage::Production,
        &w.policy(POLICY),
        Some(Emergency { reason: "outage" }),
    )
    .unwrap();
    assert!(d.promoted);
    assert_eq!(w.stage("1"), Stage::Validated);
    promote::rollback(
        &w.store,
        &w.actor(),
        "gov",
        "1",
        Some("emergency over"),
        &w.policy(POLICY),
    )
    .unwrap();
    assert_eq!(w.stage("1"), Stage::Production);
    assert_eq!(
        w.stage("2"),
        Stage::Candidate,
        "an emergency version passed no gate: it must not become validated"
    );
}

#[test]
fn an_emergency_promotion_shows_its_review_as_due_overdue_or_done() {
    let (w, rita, erin) = world();
    let with_review = |hours: u64| {
        format!(
            "{POLICY}\n[emergency]\nreview_within_hours = {hours}\nreview_role = \"model-risk\"\n"
        )
    };
    w.build("1", &Build::auc(0.5));
    w.approve(&erin, "1", "emergency");
    let policy = w.policy(&with_review(0));
    let d = promote::promote(
        &w.store,
        &w.actor(),
        &w.model("1"),
        Stage::Production,
        &policy,
        Some(Emergency {
            reason: "fraud spike",
        }),
    )
    .unwrap();
    assert!(d.promoted);
    let in_force = w.store.layout_dir().join("policy.toml");
    let show = |text: &str| {
        std::fs::write(&in_force, text).unwrap();
        registry::show(&w.store, &w.model("1")).unwrap()
    };
    // Due within 0 hours: overdue at once.
    let s = show(&with_review(0));
    assert_eq!(s.emergency_reviews.len(), 1, "{:?}", s.emergency_reviews);
    let r = &s.emergency_reviews[0];
    assert!(r.overdue, "{r:?}");
    assert!(r.status.starts_with("OVERDUE"), "{r:?}");
    assert_eq!(r.reason.as_deref(), Some("fraud spike"));
    // Within 48 hours: due, not overdue.
    let r = &show(&with_review(48)).emergency_reviews[0];
    assert!(!r.overdue && r.status.contains("due by"), "{r:?}");
    // The model-risk approval after the promotion is the review.
    w.approve(&rita, "1", "model-risk");
    let r = &show(&with_review(0)).emergency_reviews[0];
    assert!(!r.overdue, "{r:?}");
    assert!(
        r.status.starts_with("reviewed by") && r.status.contains("Rita"),
        "{r:?}"
    );
}
