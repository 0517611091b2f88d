//! When a signed approval counts (`approvals::judge` / `approvals::list`).

mod common;

use common::{time_from_now, Build, Person, World};
use repro_evidence::keys::{self, Envelope};
use repro_governance::approvals;

fn world_with_v1() -> World {
    let w = World::new();
    w.build("1", &Build::auc(0.95));
    w
}

fn why_not(j: &approvals::Judged) -> String {
    j.why_not.clone().unwrap_or_default()
}

#[test]
fn an_approval_by_a_registered_identity_holding_the_role_counts() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    let d = w.approve(&val, "1", "validator");
    let all = w.judged("1");
    assert_eq!(all.len(), 1);
    let j = &all[0];
    assert_eq!(j.digest, d);
    assert!(j.counts, "{j:?}");
    assert_eq!(j.why_not, None);
    assert_eq!(j.signed_by.as_deref(), Some(val.keyid().as_str()));
    let a = j.approval.as_ref().unwrap();
    assert_eq!((a.role.as_str(), a.model.as_str()), ("validator", "gov@1"));
    assert_eq!(a.approver, val.identity());
}

#[test]
fn an_approval_stops_counting_once_its_approver_is_revoked_even_if_made_before() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    let d = w.approve(&val, "1", "validator");
    assert!(w.judged_one("1", &d).counts);
    // The rule is not "revoked after the approval's time still counts":
    // a revocation withdraws everything the key signed.
    w.revoke(&val, "key leaked");
    let j = w.judged_one("1", &d);
    assert!(!j.counts);
    let why = why_not(&j);
    assert!(
        why.contains("was revoked") && why.contains("key leaked"),
        "{why}"
    );
    // And a revoked key cannot approve any more.
    let e = approvals::approve(
        &w.store,
        &val.key,
        &w.model("1"),
        &w.record("1"),
        &w.alice.keyid(),
        "validator",
        "again",
    )
    .unwrap_err();
    assert!(e.is_user() && e.to_string().contains("was revoked"), "{e}");
}

#[test]
fn an_approval_dated_before_its_approver_was_registered_does_not_count() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    let record = w.record("1");
    // Signed by a registered key, but dated an hour before the registration.
    let early = w.forge_approval(
        &val.key,
        "1",
        &record,
        w.approval(&val, "1", "validator", &time_from_now(-3600)),
    );
    let early = w.file_approval(&record, &early);
    // The same approval dated after the registration counts.
    let later = w.forge_approval(
        &val.key,
        "1",
        &record,
        w.approval(&val, "1", "validator", &time_from_now(60)),
    );
    let later = w.file_approval(&record, &later);
    let j = w.judged_one("1", &early);
    assert!(!j.counts);
    assert!(why_not(&j).contains("was not registered at"), "{j:?}");
    assert!(w.judged_one("1", &later).counts);
}

#[test]
fn an_approval_in_a_role_the_approver_does_not_hold_does_not_count() {
    let w = world_with_v1();
    let bob = Person::new("Bob", 3);
    w.register(&bob, &["business-owner"]);
    // `approve` refuses it...
    let e = approvals::approve(
        &w.store,
        &bob.key,
        &w.model("1"),
        &w.record("1"),
        &w.alice.keyid(),
        "validator",
        "looks good",
    )
    .unwrap_err();
    assert!(
        e.is_user() && e.to_string().contains("does not hold the role `validator`"),
        "{e}"
    );
    // ...and one made without `approve` does not count.
    let record = w.record("1");
    let bytes = w.forge_approval(
        &bob.key,
        "1",
        &record,
        w.approval(&bob, "1", "validator", &time_from_now(1)),
    );
    let d = w.file_approval(&record, &bytes);
    let j = w.judged_one("1", &d);
    assert!(!j.counts);
    assert!(
        why_not(&j).contains("does not hold the role `validator`"),
        "{j:?}"
    );
}

#[test]
fn an_approval_stops_counting_when_its_approver_no_longer_holds_the_role() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    w.register(&val, &["validator", "model-risk"]);
    let d = w.approve(&val, "1", "validator");
    assert!(w.judged_one("1", &d).counts);
    // Re-roled: the roles are read when the approval is judged, not when it was made.
    w.set_roles(&val, &["model-risk"]);
    let j = w.judged_one("1", &d);
    assert!(!j.counts);
    let why = why_not(&j);
    assert!(
        why.contains("does not hold the role `validator`") && why.contains("model-risk"),
        "{why}"
    );
    // Given the role back, it counts again.
    w.set_roles(&val, &["model-risk", "validator"]);
    assert!(w.judged_one("1", &d).counts);
}

#[test]
fn the_builder_approving_their_own_record_does_not_count() {
    let w = world_with_v1();
    // Alice built gov@1 and registers herself as a validator.
    w.register(&w.alice, &["validator"]);
    let e = approvals::approve(
        &w.store,
        &w.alice.key,
        &w.model("1"),
        &w.record("1"),
        &w.alice.keyid(),
        "validator",
        "mine is fine",
    )
    .unwrap_err();
    assert!(
        e.is_user() && e.to_string().contains("self-approval"),
        "{e}"
    );
    let record = w.record("1");
    let bytes = w.forge_approval(
        &w.alice.key,
        "1",
        &record,
        w.approval(&w.alice, "1", "validator", &time_from_now(1)),
    );
    let d = w.file_approval(&record, &bytes);
    let j = w.judged_one("1", &d);
    assert!(!j.counts);
    assert!(why_not(&j).contains("self-approval"), "{j:?}");
    // The same approval judged for a record someone else built counts.
    let other_builder = Person::new("Other", 9).keyid();
    let j = approvals::judge(&w.store, &record, &other_builder, d, &bytes).unwrap();
    assert!(j.counts, "{j:?}");
}

#[test]
fn an_approval_of_another_record_does_not_count() {
    let w = world_with_v1();
    w.build("2", &Build::auc(0.96));
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    let d = w.approve(&val, "1", "validator");
    // The approval of gov@1, copied next to the record of gov@2.
    let bytes = w.approval_bytes(&w.record("1"), &d);
    let copied = w.file_approval(&w.record("2"), &bytes);
    assert_eq!(copied, d);
    let j = w.judged_one("2", &d);
    assert!(!j.counts);
    assert!(why_not(&j).contains("bound to another record"), "{j:?}");
    assert!(w.judged_one("1", &d).counts);
}

#[test]
fn an_approval_whose_signed_bytes_were_altered_does_not_count() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    let record = w.record("1");
    let d = w.approve(&val, "1", "validator");
    let bytes = w.approval_bytes(&record, &d);
    // Change the reason inside the signed payload, keep the signature, and
    // file it under its new digest (so the file itself checks out).
    let mut env: Envelope = serde_json::from_slice(&bytes).unwrap();
    let mut statement: approvals::ApprovalStatement = env.unverified_payload().unwrap();
    statement.predicate.reason = "rubber stamp".into();
    let payload = serde_json::to_vec(&statement).unwrap();
    use base64::Engine as _;
    env.payload = base64::engine::general_purpose::STANDARD.encode(payload);
    let altered = w.file_approval(&record, &serde_json::to_vec_pretty(&env).unwrap());
    let j = w.judged_one("1", &altered);
    assert!(!j.counts);
    assert_eq!(j.signed_by, None);
    assert!(why_not(&j).contains("does not match the payload"), "{j:?}");
    // The original next to it still counts.
    assert!(w.judged_one("1", &d).counts);
}

#[test]
fn an_approval_file_changed_in_place_does_not_count() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    let record = w.record("1");
    let d = w.approve(&val, "1", "validator");
    let path = w
        .approvals_dir(&record)
        .join(d.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&path, &bytes).unwrap();
    let all = w.judged("1");
    assert_eq!(all.len(), 1);
    assert!(!all[0].counts);
    assert!(why_not(&all[0]).contains("was altered"), "{:?}", all[0]);
}

#[test]
fn an_approval_signed_by_a_key_that_is_not_a_registered_identity_does_not_count() {
    let w = world_with_v1();
    let mallory = Person::new("Mallory", 4);
    // Her public key is even in the store (as after she built something):
    // only registered identities' keys are trusted for approvals.
    keys::publish(&w.store, &mallory.key.verifying_key()).unwrap();
    let e = approvals::approve(
        &w.store,
        &mallory.key,
        &w.model("1"),
        &w.record("1"),
        &w.alice.keyid(),
        "validator",
        "looks good",
    )
    .unwrap_err();
    assert!(
        e.is_user() && e.to_string().contains("is not a registered identity"),
        "{e}"
    );
    let record = w.record("1");
    let bytes = w.forge_approval(
        &mallory.key,
        "1",
        &record,
        w.approval(&mallory, "1", "validator", &time_from_now(1)),
    );
    let d = w.file_approval(&record, &bytes);
    let j = w.judged_one("1", &d);
    assert!(!j.counts);
    assert_eq!(j.signed_by, None);
    assert!(why_not(&j).contains("unknown key"), "{j:?}");
}

#[test]
fn an_approval_naming_another_approver_than_its_signer_does_not_count() {
    let w = world_with_v1();
    let val = Person::new("Val", 2);
    let bob = Person::new("Bob", 3);
    w.register(&val, &["validator"]);
    w.register(&bob, &["business-owner"]);
    let record = w.record("1");
    // Bob signs an approval that says Val approved.
    let bytes = w.forge_approval(
        &bob.key,
        "1",
        &record,
        w.approval(&val, "1", "validator", &time_from_now(1)),
    );
    let d = w.file_approval(&record, &bytes);
    let j = w.judged_one("1", &d);
    assert!(!j.counts);
    assert!(why_not(&j).contains("but was signed by key"), "{j:?}");
}
