//! What `repro gc` keeps of governance: every key a check will need later,
//! whatever the retention rules, and every version in a governed stage.

mod common;

use std::time::{Duration, SystemTime};

use common::{Build, Person, World};
use repro_evidence::audit::{self, Event};
use repro_governance::gc::{self, Retention};
use repro_governance::Stage;
use repro_store::{BlobDigest, Hash};

/// Collect with rules that retain no version by age: every version older
/// than a day goes unless something else keeps it.
fn collect_a_year_later(w: &World) -> gc::GcReport {
    let rules = Retention {
        keep_days: Some(1),
        ..Retention::default()
    };
    let later = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
    let _lock = w.store.lock_exclusive().unwrap();
    gc::collect(&w.store, &rules, false, false, later).unwrap()
}

fn key_blob(p: &Person) -> BlobDigest {
    BlobDigest::from_hash(Hash::of(p.key.verifying_key().as_bytes()))
}

/// An approver's key is in no record: only the registry of identities and
/// the audit log name it. After a collection that drops every version,
/// the key is still there and the audit log still verifies; the same holds
/// for the key of someone who only signed an audit entry (a card, a pin).
#[test]
fn gc_keeps_the_keys_of_approvers_and_audit_signers_and_the_log_still_verifies() {
    let w = World::new();
    w.build("1.0.0", &Build::auc(0.9));
    let bob = Person::new("Bob", 2);
    w.register(&bob, &["risk"]);
    w.approve(&bob, "1.0.0", "risk");
    audit::append(
        &w.store,
        &bob.key,
        &bob.identity(),
        Event::new("approve", "gov@1.0.0", serde_json::json!({"role": "risk"})),
    )
    .unwrap();
    // Carol is no registered identity: she only signs an audit entry.
    let carol = Person::new("Carol", 3);
    audit::append(
        &w.store,
        &carol.key,
        &carol.identity(),
        Event::new("card", "gov@1.0.0", serde_json::json!({})),
    )
    .unwrap();
    assert!(w.store.has_blob(&key_blob(&bob)));
    assert!(w.store.has_blob(&key_blob(&carol)));

    let report = collect_a_year_later(&w);
    assert!(
        report.versions.iter().all(|v| !v.retained),
        "the rules were meant to drop every version: {:?}",
        report.versions
    );
    assert!(
        w.store.has_blob(&key_blob(&bob)),
        "the approver's public key was collected"
    );
    assert!(
        w.store.has_blob(&key_blob(&carol)),
        "an audit signer's public key was collected"
    );
    let v = audit::verify(&w.store).unwrap();
    assert!(v.intact, "{:?}", v.problems);
    assert_eq!(v.lines, 2);
}

/// A version in production (or validated) stays, with its record, whatever
/// the rules say; a candidate of the same age goes.
#[test]
fn gc_always_keeps_validated_and_production_versions() {
    let w = World::new();
    w.build("1.0.0", &Build::auc(0.9));
    w.build("2.0.0", &Build::auc(0.9));
    let record = w.record("1.0.0");
    repro_governance::registry::set_stage(&w.store, &w.model("1.0.0"), Stage::Production, &record)
        .unwrap();
    let report = collect_a_year_later(&w);
    let fate = |version: &str| {
        report
            .versions
            .iter()
            .find(|v| v.model == format!("gov@{version}"))
            .unwrap_or_else(|| panic!("no fate for {version}: {:?}", report.versions))
    };
    assert!(fate("1.0.0").retained, "{:?}", fate("1.0.0"));
    assert!(
        fate("1.0.0")
            .reasons
            .iter()
            .any(|r| r.contains("production")),
        "{:?}",
        fate("1.0.0")
    );
    assert!(!fate("2.0.0").retained, "{:?}", fate("2.0.0"));
    assert!(w.store.get_record(&record).is_ok());
}
