//! `repro status`: what each model has in each stage, when each version
//! was last verified, whether a revalidation is due, which approvals
//! expire, which emergency reviews are overdue and which inputs moved;
//! everything judged at one time (`Options::now`).

mod common;

use std::time::Duration;

use common::{time_from_now, Build, Person, World};
use repro_governance::promote::{self, Emergency};
use repro_governance::status::{self, ModelStatus, Options, RecipeInputs, Status};
use repro_governance::Stage;
use repro_store::{Hash, TreeDigest};

const DAY: i64 = 86400;

/// Validated and production need nothing; revalidate every 90 days.
const POLICY: &str = r#"revalidate_every = "90d"

[stages.validated]
[stages.production]
from = "validated"
"#;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Status at `now`, approvals expiring within `within_days`.
fn status_at(w: &World, now: time::OffsetDateTime, within_days: u64) -> Status {
    status::status(
        &w.store,
        &Options {
            now,
            within: Duration::from_secs(within_days * 86400),
            recipes: Vec::new(),
        },
    )
    .unwrap()
}

fn gov(s: &Status) -> &ModelStatus {
    assert_eq!(s.models.len(), 1, "{s:#?}");
    assert_eq!(s.models[0].name, "gov");
    &s.models[0]
}

/// A world with Bob (validator) registered and the policy in force.
fn world() -> (World, Person) {
    let w = World::new();
    let bob = Person::new("Bob", 2);
    w.register(&bob, &["validator"]);
    w.policy_in_force(POLICY);
    (w, bob)
}

/// Build `gov@<version>` and promote it through validated to production.
fn to_production(w: &World, version: &str) {
    w.build(version, &Build::auc(0.95));
    let p = w.policy_in_force(POLICY);
    assert!(w.promote(version, Stage::Validated, &p).promoted);
    assert!(w.promote(version, Stage::Production, &p).promoted);
}

#[test]
fn a_production_version_verified_long_ago_is_due_for_revalidation() {
    let (w, bob) = world();
    to_production(&w, "1");
    let long_ago = time_from_now(-200 * DAY);
    w.attest_at(&bob, "1", true, &long_ago);
    let s = status_at(&w, now(), 14);
    let m = gov(&s);
    let p = m.stages.production.as_ref().expect("a production version");
    assert_eq!(p.version, "1");
    assert_eq!(p.record, w.record("1").to_string());
    let last = p.last_verified.as_ref().unwrap();
    assert_eq!(last.time, long_ago);
    assert!(last.reproduced);
    assert_eq!(last.result, "reproduced");
    assert_eq!(last.signer.keyid, bob.keyid());
    assert_eq!(last.signer.name.as_deref(), Some("Bob"));
    assert_eq!(last.signer.email.as_deref(), Some("bob@example.com"));
    assert!(p.revalidation_due);
    let by = repro_evidence::clock::parse(p.revalidate_by.as_deref().unwrap()).unwrap();
    let was = repro_evidence::clock::parse(&long_ago).unwrap();
    assert_eq!(by - was, time::Duration::days(90));
    assert_eq!(s.attention, 1, "{:?}", m.attention);
    assert!(
        m.attention[0].starts_with("gov@1 (production): revalidation due since ")
            && m.attention[0].contains(&format!("last reproduced {long_ago}"))
            && m.attention[0].contains("revalidate_every = \"90d\""),
        "{:?}",
        m.attention
    );
    let policy = s.policy.as_ref().unwrap();
    assert_eq!(policy.revalidate_every.as_deref(), Some("90d"));
}

#[test]
fn a_freshly_verified_version_is_not_due_until_the_interval_has_passed() {
    let (w, bob) = world();
    to_production(&w, "1");
    w.attest(&bob, "1", true);
    let s = status_at(&w, now(), 14);
    let p = gov(&s).stages.production.clone().unwrap();
    assert!(!p.revalidation_due, "{p:?}");
    let verified = repro_evidence::clock::parse(&p.last_verified.unwrap().time).unwrap();
    let by = repro_evidence::clock::parse(p.revalidate_by.as_deref().unwrap()).unwrap();
    assert_eq!(by - verified, time::Duration::days(90));
    assert_eq!(s.attention, 0, "{:?}", gov(&s).attention);
    // The same store judged 91 days on: due.
    let later = status_at(&w, now() + time::Duration::days(91), 14);
    assert!(
        gov(&later)
            .stages
            .production
            .as_ref()
            .unwrap()
            .revalidation_due
    );
    assert_eq!(later.attention, 1);
}

#[test]
fn a_validated_version_never_reproduced_is_due_and_only_reproductions_count() {
    let (w, bob) = world();
    let carol = Person::new("Carol", 5); // not registered
    w.build("1", &Build::auc(0.95));
    let p = w.policy_in_force(POLICY);
    assert!(w.promote("1", Stage::Validated, &p).promoted);
    let s = status_at(&w, now(), 14);
    let v = &gov(&s).stages.validated[0];
    assert!(v.last_verified.is_none() && v.verifications.is_empty());
    assert!(v.revalidation_due && v.revalidate_by.is_none());
    assert!(
        gov(&s).attention[0].contains("never reproduced"),
        "{:?}",
        gov(&s).attention
    );
    // Reproduced 10 days ago, then a newer rebuild by an unregistered key
    // that did not reproduce: listed newest first, the newest named as not
    // reproducing, and revalidation goes by the reproduction.
    w.attest_at(&bob, "1", true, &time_from_now(-10 * DAY));
    w.attest_at(&carol, "1", false, &time_from_now(-DAY));
    let s = status_at(&w, now(), 14);
    let m = gov(&s);
    let v = &m.stages.validated[0];
    let results: Vec<_> = v.verifications.iter().map(|x| x.result.as_str()).collect();
    assert_eq!(results, ["not reproduced", "reproduced"]);
    let last = v.last_verified.as_ref().unwrap();
    assert_eq!(last.signer.keyid, carol.keyid());
    assert!(!last.signer.registered && last.signer.name.is_none());
    assert!(!v.revalidation_due);
    assert_eq!(m.attention.len(), 1, "{:?}", m.attention);
    assert!(
        m.attention[0].starts_with("gov@1 (validated): the newest verification, at ")
            && m.attention[0].ends_with("not a registered identity, did not reproduce"),
        "{:?}",
        m.attention
    );
}

#[test]
fn without_revalidate_every_nothing_is_due() {
    let (w, _) = world();
    to_production_under(
        &w,
        "1",
        "[stages.validated]\n[stages.production]\nfrom = \"validated\"\n",
    );
    let s = status_at(&w, now(), 14);
    let p = gov(&s).stages.production.clone().unwrap();
    assert!(!p.revalidation_due && p.revalidate_by.is_none());
    assert_eq!(s.attention, 0);
    assert_eq!(s.policy.unwrap().revalidate_every, None);
}

fn to_production_under(w: &World, version: &str, policy: &str) {
    w.build(version, &Build::auc(0.95));
    let p = w.policy_in_force(policy);
    assert!(w.promote(version, Stage::Validated, &p).promoted);
    assert!(w.promote(version, Stage::Production, &p).promoted);
}

#[test]
fn an_approval_expiring_in_3_days_is_listed_within_14_days_not_within_1() {
    let (w, bob) = world();
    w.build("1", &Build::auc(0.95));
    let expires = time_from_now(3 * DAY);
    let digest = w.approve_until(&bob, "1", "validator", &expires);
    let s = status_at(&w, now(), 14);
    let m = gov(&s);
    assert_eq!(m.candidates.len(), 1);
    assert_eq!(m.expiring_approvals.len(), 1, "{m:#?}");
    let a = &m.expiring_approvals[0];
    assert_eq!(
        (a.version.as_str(), a.stage, a.role.as_str()),
        ("1", Stage::Candidate, "validator")
    );
    assert_eq!(a.approver.keyid, bob.keyid());
    assert_eq!(a.approval, digest);
    assert_eq!(a.expires, expires);
    assert!(!a.expired);
    assert!(
        m.attention.iter().any(|x| x
            .starts_with("gov@1 (candidate): the `validator` approval by Bob")
            && x.ends_with(&format!("expires at {expires}"))),
        "{:?}",
        m.attention
    );
    assert!(gov(&status_at(&w, now(), 1)).expiring_approvals.is_empty());
    // Four days on it has expired (it counted until then): still listed.
    let later = status_at(&w, now() + time::Duration::days(4), 1);
    let a = &gov(&later).expiring_approvals[0];
    assert!(a.expired, "{a:?}");
    assert!(gov(&later)
        .attention
        .iter()
        .any(|x| x.contains("expired at")));
    // A new approval in the role that lasts: nothing to renew.
    w.approve(&bob, "1", "validator");
    assert!(gov(&status_at(&w, now(), 14)).expiring_approvals.is_empty());
    let later = status_at(&w, now() + time::Duration::days(4), 14);
    assert!(gov(&later).expiring_approvals.is_empty());
}

#[test]
fn an_approval_that_never_counted_is_not_listed_as_expiring() {
    let (w, bob) = world();
    w.build("1", &Build::auc(0.95));
    w.approve_until(&bob, "1", "validator", &time_from_now(3 * DAY));
    w.revoke(&bob, "left");
    // It does not count now (revoked), nor did it just before it expires.
    assert!(gov(&status_at(&w, now(), 14)).expiring_approvals.is_empty());
    let later = status_at(&w, now() + time::Duration::days(4), 14);
    assert!(gov(&later).expiring_approvals.is_empty());
}

#[test]
fn a_new_candidate_appears_under_candidates_beside_production() {
    let (w, bob) = world();
    to_production(&w, "1");
    w.attest(&bob, "1", true);
    w.build("2", &Build::auc(0.96));
    let s = status_at(&w, now(), 14);
    let m = gov(&s);
    assert_eq!(m.stages.production.as_ref().unwrap().version, "1");
    let candidates: Vec<_> = m.candidates.iter().map(|c| c.version.as_str()).collect();
    assert_eq!(candidates, ["2"]);
    assert_eq!(m.candidates[0].record, w.record("2").to_string());
    // A candidate is not due for revalidation, whatever the policy says.
    assert!(!m.candidates[0].revalidation_due);
    assert!(m.stages.validated.is_empty() && m.stages.retired.is_empty());
    assert_eq!(s.attention, 0, "{:?}", m.attention);
    // Promoting 2 moves 1 to validated.
    let p = w.policy_in_force(POLICY);
    assert!(w.promote("2", Stage::Validated, &p).promoted);
    assert!(w.promote("2", Stage::Production, &p).promoted);
    let s = status_at(&w, now(), 14);
    let m = gov(&s);
    assert_eq!(m.stages.production.as_ref().unwrap().version, "2");
    assert_eq!(m.stages.validated[0].version, "1");
    assert!(m.candidates.is_empty());
}

fn tree(text: &str) -> TreeDigest {
    TreeDigest::from_hash(Hash::of(text.as_bytes()))
}

fn recipe_now(data: TreeDigest) -> RecipeInputs {
    let mut pins = repro_recipes::Pins::default();
    pins.data.insert("train".into(), data);
    RecipeInputs {
        recipe: "model.toml".into(),
        model: "gov".into(),
        pins,
        references: [("data.train".to_string(), "path = \"data\"".to_string())].into(),
    }
}

fn with_recipe(w: &World, r: RecipeInputs) -> repro_governance::Result<Status> {
    status::status(
        &w.store,
        &Options {
            now: now(),
            within: Duration::from_secs(14 * 86400),
            recipes: vec![r],
        },
    )
}

#[test]
fn inputs_moved_since_the_newest_version_are_named() {
    let (w, _) = world();
    let b = |data| Build {
        data: Some(data),
        ..Build::auc(0.95)
    };
    w.build("1", &b(tree("rows v1")));
    w.build("2", &b(tree("rows v2")));
    // Nothing moved since gov@2 (the newest).
    let s = with_recipe(&w, recipe_now(tree("rows v2"))).unwrap();
    let i = gov(&s).inputs_moved.clone().unwrap();
    assert_eq!(i.version, "2");
    assert_eq!(i.record, w.record("2").to_string());
    assert!(i.moved.is_empty(), "{i:?}");
    assert_eq!(s.attention, 0);
    // The data folder changed.
    let s = with_recipe(&w, recipe_now(tree("rows v3"))).unwrap();
    let m = gov(&s);
    let i = m.inputs_moved.as_ref().unwrap();
    assert_eq!(i.moved.len(), 1, "{i:?}");
    let moved = &i.moved[0];
    assert_eq!(moved.input, "data.train");
    assert_eq!(moved.reference.as_deref(), Some("path = \"data\""));
    assert_eq!(moved.recorded, Some(tree("rows v2").to_string()));
    assert_eq!(moved.now, Some(tree("rows v3").to_string()));
    assert_eq!(
        m.attention,
        ["inputs moved since gov@2 (per `model.toml`): data.train"]
    );
    // Without `--recipe` nothing is said about inputs.
    assert!(gov(&status_at(&w, now(), 14)).inputs_moved.is_none());
}

#[test]
fn a_recipe_of_a_model_without_versions_or_two_of_one_model_are_refused() {
    let (w, _) = world();
    w.build("1", &Build::auc(0.95));
    let mut other = recipe_now(tree("rows"));
    other.model = "other".into();
    let e = with_recipe(&w, other).unwrap_err();
    assert!(e.is_user(), "{e}");
    assert!(
        e.to_string()
            .contains("model `other`, which has no version in this store"),
        "{e}"
    );
    let e = status::status(
        &w.store,
        &Options {
            now: now(),
            within: Duration::from_secs(86400),
            recipes: vec![recipe_now(tree("a")), recipe_now(tree("b"))],
        },
    )
    .unwrap_err();
    assert!(
        e.is_user() && e.to_string().contains("both recipes of model `gov`"),
        "{e}"
    );
}

#[test]
fn an_emergency_promotion_not_reviewed_in_time_is_overdue() {
    let (w, _) = world();
    let erin = Person::new("Erin", 4);
    w.register(&erin, &["emergency"]);
    let rita = Person::new("Rita", 3);
    w.register(&rita, &["model-risk"]);
    let policy =
        format!("{POLICY}\n[emergency]\nreview_within_hours = 72\nreview_role = \"model-risk\"\n");
    let p = w.policy_in_force(&policy);
    w.build("1", &Build::auc(0.95));
    w.approve(&erin, "1", "emergency");
    let d = promote::promote(
        &w.store,
        &w.actor(),
        &w.model("1"),
        Stage::Production,
        &p,
        Some(Emergency { reason: "outage" }),
    )
    .unwrap();
    assert!(d.promoted, "{:?}", d.checked);
    // Due in 72 hours: not overdue now, overdue in 4 days.
    assert!(gov(&status_at(&w, now(), 14)).overdue_reviews.is_empty());
    let later = status_at(&w, now() + time::Duration::days(4), 14);
    let m = gov(&later);
    assert_eq!(m.overdue_reviews.len(), 1, "{m:#?}");
    let r = &m.overdue_reviews[0];
    assert_eq!(
        (r.version.as_str(), r.stage, r.review_role.as_str()),
        ("1", Stage::Production, "model-risk")
    );
    assert_eq!(r.reason.as_deref(), Some("outage"));
    assert!(
        m.attention.iter().any(|a| a
            .starts_with("gov@1 (production): the emergency promotion at ")
            && a.contains("(reason: outage) was not reviewed by role `model-risk` by ")),
        "{:?}",
        m.attention
    );
    // Rita's review clears it.
    w.approve(&rita, "1", "model-risk");
    let later = status_at(&w, now() + time::Duration::days(4), 14);
    assert!(gov(&later).overdue_reviews.is_empty());
}

#[test]
fn a_forged_attestation_in_the_store_is_tampering() {
    let (w, bob) = world();
    to_production(&w, "1");
    w.attest(&bob, "1", true);
    // Bob's attestation with its result changed, the signature kept.
    let record = w.record("1");
    let stored = repro_evidence::attest::list(&w.store, &record).unwrap();
    let bytes = w.store.read_blob(&stored[0].digest).unwrap();
    let mut env: repro_evidence::keys::Envelope = serde_json::from_slice(&bytes).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(&env.payload).unwrap()).unwrap();
    env.payload = b64.encode(payload.replace("\"PASSED\"", "\"FAILED\""));
    w.store
        .put_attestation(&record, &serde_json::to_vec_pretty(&env).unwrap())
        .unwrap();
    let e = status::status(
        &w.store,
        &Options {
            now: now(),
            within: Duration::from_secs(86400),
            recipes: Vec::new(),
        },
    )
    .unwrap_err();
    let repro_governance::Error::Other(e) = e else {
        panic!("not tampering: {e}")
    };
    assert_eq!(
        repro_evidence::exit::classify(&e),
        repro_evidence::exit::CANNOT,
        "{e:#}"
    );
    assert!(e.to_string().contains("no longer check out"), "{e}");
}
