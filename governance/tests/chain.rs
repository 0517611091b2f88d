//! Governance against an insider: a trust root of administrators, changes
//! by quorum, the policy in force kept in the store, and state replayed
//! from the signed audit log so that a direct edit of a file is named.

mod common;

use common::{Build, Person, World};
use repro_evidence::audit;
use repro_governance::admin::{self, Outcome};
use repro_governance::chain::{self, Change};
use repro_governance::promote::Actor;
use repro_governance::{identities, registry, Stage};

fn actor(p: &Person) -> Actor<'_> {
    Actor {
        key: &p.key,
        identity: p.identity(),
    }
}

/// A store whose governance root names Ada (and, for a quorum of 2, Bea).
fn governed(quorum: u32) -> (World, Person, Person) {
    let w = World::new();
    let ada = Person::new("Ada", 10);
    let bea = Person::new("Bea", 11);
    let mut admins = vec![(ada.key.verifying_key(), ada.name.clone(), ada.email())];
    if quorum == 2 {
        admins.push((bea.key.verifying_key(), bea.name.clone(), bea.email()));
    }
    admin::init(&w.store, &actor(&ada), quorum, &admins).unwrap();
    (w, ada, bea)
}

fn add(w: &World, by: &Person, p: &Person, roles: &[&str]) -> Outcome {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let a = actor(by);
    let change =
        admin::add_identity(&a, &p.key.verifying_key(), &p.name, &p.email(), &roles).unwrap();
    admin::submit(&w.store, &a, change).unwrap()
}

fn kinds(w: &World) -> Vec<String> {
    audit::entries(&w.store)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect()
}

#[test]
fn a_key_that_is_not_an_administrator_cannot_register_a_sock_puppet() {
    let (w, ada, _) = governed(1);
    let mallory = Person::new("Mallory", 20);
    assert!(matches!(
        add(&w, &ada, &mallory, &["builder"]),
        Outcome::Applied(_)
    ));
    // Mallory registers a puppet validator, and revokes the real one.
    let puppet = Person::new("Puppet", 21);
    let m = actor(&mallory);
    let change = admin::add_identity(
        &m,
        &puppet.key.verifying_key(),
        "Puppet",
        "p@x",
        &["validator".to_string()],
    )
    .unwrap();
    let e = admin::submit(&w.store, &m, change).unwrap_err();
    assert!(e.is_user(), "{e}");
    assert!(e.to_string().contains("is not an administrator"), "{e}");
    assert!(identities::get(&w.store, &puppet.keyid())
        .unwrap()
        .is_none());
    let revoke = admin::revoke_identity(&w.store, &m, &ada.keyid(), "coup").unwrap();
    assert!(admin::submit(&w.store, &m, revoke).is_err());
    assert!(identities::get(&w.store, &ada.keyid())
        .unwrap()
        .unwrap()
        .revoked
        .is_none());
}

#[test]
fn with_a_quorum_of_two_one_administrator_proposes_and_another_person_confirms() {
    let (w, ada, bea) = governed(2);
    let val = Person::new("Val", 30);
    let id = match add(&w, &ada, &val, &["validator"]) {
        Outcome::Proposed(id) => id,
        other => panic!("applied by one administrator: {other:?}"),
    };
    assert!(identities::get(&w.store, &val.keyid()).unwrap().is_none());
    // Ada cannot confirm her own proposal.
    let e = admin::confirm(&w.store, &actor(&ada), &id).unwrap_err();
    assert!(e.to_string().contains("another administrator"), "{e}");
    // Nor with a second key of hers (same e-mail): one person.
    let ada2 = Person::new("Ada", 12); // same name, so the same e-mail
    assert_eq!(ada2.email(), ada.email());
    // Bea confirms: in force.
    match admin::confirm(&w.store, &actor(&bea), &id).unwrap() {
        Outcome::Applied(c) => assert!(matches!(*c, Change::IdentityAdd { .. }), "{c:?}"),
        other => panic!("not applied: {other:?}"),
    }
    assert!(identities::get(&w.store, &val.keyid()).unwrap().is_some());
    let state = chain::checked(&w.store).unwrap();
    assert!(state.identities.contains_key(&val.keyid()));
    assert!(state.pending.is_empty());
}

#[test]
fn an_identity_file_edited_in_the_store_is_named_as_tampering() {
    let (w, ada, _) = governed(1);
    let bob = Person::new("Bob", 40);
    add(&w, &ada, &bob, &["builder"]);
    assert!(chain::checked(&w.store).is_ok());
    // Bob gives himself the validator role by editing his file.
    let path = w.store.layout_dir().join("identities").join(format!(
        "{}.json",
        bob.keyid().strip_prefix("sha256:").unwrap()
    ));
    let mut reg = identities::get(&w.store, &bob.keyid()).unwrap().unwrap();
    reg.roles.push("validator".into());
    std::fs::write(&path, serde_json::to_vec_pretty(&reg).unwrap()).unwrap();
    let e = chain::checked(&w.store).unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("differs from the audit log"), "{text}");
    assert!(text.contains("validator"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    // A file for a key the log never registered is named too.
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&identities::get(&w.store, &bob.keyid()).unwrap().unwrap())
            .unwrap(),
    )
    .unwrap();
    let forged = w
        .store
        .layout_dir()
        .join("identities")
        .join(format!("{}.json", "ab".repeat(32)));
    std::fs::write(&forged, b"{}").unwrap();
    assert!(
        format!("{:#}", chain::checked(&w.store).unwrap_err()).contains("ab".repeat(32).as_str())
    );
}

#[test]
fn a_stage_file_moved_in_the_store_is_named_as_tampering() {
    let (w, ada, _) = governed(1);
    w.build("1", &Build::auc(0.95));
    let policy = w.policy("[stages.validated]\n");
    assert!(w.promote("1", Stage::Validated, &policy).promoted);
    assert!(
        chain::checked(&w.store).is_ok(),
        "{:?}",
        chain::checked(&w.store).err()
    );
    // Someone moves gov@1 to production by hand.
    let root = w.store.layout_dir().join("refs/stages");
    std::fs::create_dir_all(root.join("production/gov")).unwrap();
    std::fs::rename(root.join("validated/gov/1"), root.join("production/gov/1")).unwrap();
    assert_eq!(
        registry::stage_of(&w.store, &w.model("1")).unwrap().0,
        Stage::Production
    );
    let text = format!("{:#}", chain::checked(&w.store).unwrap_err());
    assert!(text.contains("refs/stages/production/gov/1"), "{text}");
    assert!(text.contains("puts gov@1 in `production`"), "{text}");
    assert!(text.contains("the audit log says `validated`"), "{text}");
    // A stage file for a version the log never staged is named too.
    w.build("2", &Build::auc(0.95));
    std::fs::create_dir_all(root.join("validated/gov")).unwrap();
    std::fs::write(root.join("validated/gov/2"), format!("{}\n", w.record("2"))).unwrap();
    let text = format!("{:#}", chain::checked(&w.store).unwrap_err());
    assert!(
        text.contains("the audit log never moved it there"),
        "{text}"
    );
    let _ = ada;
}

#[test]
fn the_policy_in_force_is_set_by_administrators_and_a_swapped_file_is_named() {
    let (w, ada, _) = governed(1);
    let path = w.work.join("strict.toml");
    let strict = b"[stages.validated]\napprovals = [\"validator\"]\n";
    std::fs::write(&path, strict).unwrap();
    let a = actor(&ada);
    let change = admin::set_policy(&w.store, &path, strict).unwrap();
    assert!(matches!(
        admin::submit(&w.store, &a, change).unwrap(),
        Outcome::Applied(_)
    ));
    let state = chain::checked(&w.store).unwrap();
    assert_eq!(state.policy.as_ref().map(|p| p.1), Some(1));
    // A builder may not set a policy.
    let bob = Person::new("Bob", 40);
    add(&w, &ada, &bob, &["builder"]);
    let lax = b"[stages.validated]\n[stages.production]\n";
    let change = admin::set_policy(&w.store, &path, lax).unwrap();
    assert!(admin::submit(&w.store, &actor(&bob), change).is_err());
    // Swapping the file in the store is tampering.
    std::fs::write(w.store.layout_dir().join("policy.toml"), lax).unwrap();
    let text = format!("{:#}", chain::checked(&w.store).unwrap_err());
    assert!(
        text.contains("is not the policy in force (version 1"),
        "{text}"
    );
}

#[test]
fn an_unauthorized_governance_entry_appended_to_the_log_is_named() {
    let (w, _, _) = governed(1);
    let mallory = Person::new("Mallory", 20);
    let reg = identities::registration(
        &mallory.key.verifying_key(),
        "Mallory",
        "m@x",
        &["admin".to_string()],
        "2026-01-01T00:00:00Z",
        &mallory.keyid(),
    )
    .unwrap();
    // Signed by Mallory herself, and the file written to match.
    audit::append(
        &w.store,
        &mallory.key,
        &mallory.identity(),
        audit::Event::new(
            "identity-add",
            reg.keyid.clone(),
            serde_json::to_value(chain::Applied {
                change: Change::IdentityAdd {
                    registered: reg.clone(),
                },
                proposal: None,
            })
            .unwrap(),
        ),
    )
    .unwrap();
    identities::write_file(&w.store, &reg).unwrap();
    let text = format!("{:#}", chain::checked(&w.store).unwrap_err());
    assert!(text.contains("without authority"), "{text}");
    assert!(text.contains("not a registered identity"), "{text}");
}

#[test]
fn governance_starts_once_and_only_by_one_of_its_administrators() {
    let w = World::new();
    let ada = Person::new("Ada", 10);
    let eve = Person::new("Eve", 13);
    let admins = vec![(ada.key.verifying_key(), ada.name.clone(), ada.email())];
    let e = admin::init(&w.store, &actor(&eve), 1, &admins).unwrap_err();
    assert!(
        e.to_string().contains("must be one of its administrators"),
        "{e}"
    );
    let e = admin::init(&w.store, &actor(&ada), 2, &admins).unwrap_err();
    assert!(e.to_string().contains("quorum of 2"), "{e}");
    admin::init(&w.store, &actor(&ada), 1, &admins).unwrap();
    let e = admin::init(&w.store, &actor(&ada), 1, &admins).unwrap_err();
    assert!(e.to_string().contains("already initialised"), "{e}");
    assert_eq!(kinds(&w), ["governance-init"]);
}

#[test]
fn as_of_a_past_time_the_registry_answers_from_the_log_not_from_the_files() {
    let (w, ada, _) = governed(1);
    let path = w.work.join("p.toml");
    let text = b"[stages.validated]\n[stages.production]\nfrom = \"validated\"\n";
    std::fs::write(&path, text).unwrap();
    let change = admin::set_policy(&w.store, &path, text).unwrap();
    admin::submit(&w.store, &actor(&ada), change).unwrap();
    let policy = repro_governance::policy::load(&w.store, None).unwrap();
    w.build("1", &Build::auc(0.9));
    w.build("2", &Build::auc(0.9));
    assert!(w.promote("1", Stage::Validated, &policy).promoted);
    assert!(w.promote("1", Stage::Production, &policy).promoted);
    let rita = Person::new("Rita", 3);
    audit::append(
        &w.store,
        &rita.key,
        &rita.identity(),
        audit::Event::new(
            "approve",
            "gov@2",
            serde_json::json!({"record": w.record("2").to_string(), "role": "model-risk", "reason": "ok"}),
        ),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let then = repro_evidence::clock::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(w.promote("2", Stage::Validated, &policy).promoted);
    assert!(w.promote("2", Stage::Production, &policy).promoted);

    // The files are edited afterwards: gov@1 put back in production by hand.
    let root = w.store.layout_dir().join("refs/stages");
    std::fs::rename(root.join("validated/gov/1"), root.join("production/gov/1")).unwrap();

    let a = repro_governance::asof::as_of(&w.store, "gov", &then).unwrap();
    let p = a.production.expect("gov@1 was in production then");
    assert_eq!(p.version, "1");
    assert_eq!(p.record, w.record("1").to_string());
    assert_eq!(a.policy.as_ref().map(|p| p.1), Some(1));
    assert_eq!(a.approvals.len(), 1, "{:?}", a.approvals);
    assert_eq!(a.approvals[0].version, "2");
    assert!(
        a.approvals[0].approver.contains("Rita"),
        "{:?}",
        a.approvals
    );
    assert_eq!(
        a.decisions
            .iter()
            .map(|d| d.version.as_str())
            .collect::<Vec<_>>(),
        ["1", "1"]
    );
    // Now: gov@2, whatever the edited files say.
    let now =
        repro_governance::asof::as_of(&w.store, "gov", &repro_evidence::clock::now()).unwrap();
    assert_eq!(now.production.map(|p| p.version).as_deref(), Some("2"));
    assert!(now
        .stages
        .iter()
        .any(|s| s.version == "1" && s.stage == Stage::Validated));
    assert!(repro_governance::asof::as_of(&w.store, "gov", "yesterday").is_err());
}

#[test]
fn the_production_models_trained_on_a_snapshot_come_from_the_log() {
    let (w, ada, _) = governed(1);
    let path = w.work.join("p.toml");
    let text = b"[stages.validated]\n[stages.production]\n";
    std::fs::write(&path, text).unwrap();
    let change = admin::set_policy(&w.store, &path, text).unwrap();
    admin::submit(&w.store, &actor(&ada), change).unwrap();
    let policy = repro_governance::policy::load(&w.store, None).unwrap();
    let dir = w.work.join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("train.csv"), b"a,b\n1,2\n").unwrap();
    let data = w
        .store
        .snapshot_dir(&dir, repro_store::Ingest::Copy)
        .unwrap();
    let with_data = Build {
        data: Some(data),
        ..Build::auc(0.9)
    };
    w.build("1", &with_data);
    w.build("2", &with_data);
    w.build("3", &Build::auc(0.9));
    assert!(w.promote("1", Stage::Production, &policy).promoted);
    assert!(w.promote("2", Stage::Validated, &policy).promoted);
    assert!(w.promote("3", Stage::Validated, &policy).promoted);
    let models = |u: &repro_governance::lineage::Uses| {
        u.versions
            .iter()
            .map(|v| v.model.clone())
            .collect::<Vec<_>>()
    };
    let (u, warnings) =
        repro_governance::lineage::uses_in_stage(&w.store, &data, Stage::Production).unwrap();
    assert_eq!(models(&u), ["gov@1"]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let all = repro_governance::lineage::uses(&w.store, &data).unwrap();
    assert_eq!(all.versions.len(), 2);
    // gov@2 moved to production by hand: the answer is still the log's.
    let root = w.store.layout_dir().join("refs/stages");
    std::fs::create_dir_all(root.join("production/gov")).unwrap();
    std::fs::rename(root.join("validated/gov/2"), root.join("production/gov/2")).unwrap();
    let (u, warnings) =
        repro_governance::lineage::uses_in_stage(&w.store, &data, Stage::Production).unwrap();
    assert_eq!(models(&u), ["gov@1"]);
    assert!(!warnings.is_empty());
}
