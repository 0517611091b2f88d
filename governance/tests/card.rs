//! The model card judges approvals by the rule promotion counts them by.

mod common;

use common::{check, time_from_now, Build, Person, World};
use repro_governance::{card, Stage};

#[test]
fn card_and_promotion_agree_on_every_approval() {
    let w = World::new();
    w.build("1", &Build::auc(0.95));
    let record = w.record("1");

    // Each approval in its own role, so that the gate's check of a role
    // says whether promotion counts that one approval.
    let val = Person::new("Val", 2); // valid
    w.register(&val, &["validator"]);
    w.approve(&val, "1", "validator");
    let rita = Person::new("Rita", 3); // revoked after approving
    w.register(&rita, &["model-risk"]);
    w.approve(&rita, "1", "model-risk");
    w.revoke(&rita, "left the bank");
    let bob = Person::new("Bob", 4); // re-roled: lost the role after approving
    w.register(&bob, &["business-owner", "auditor"]);
    w.approve(&bob, "1", "business-owner");
    w.set_roles(&bob, &["auditor"]);
    w.register(&w.alice, &["qa"]); // the builder, approving her own record
    let own = w.forge_approval(
        &w.alice.key,
        "1",
        &record,
        w.approval(&w.alice, "1", "qa", &time_from_now(1)),
    );
    w.file_approval(&record, &own);

    // (role, approver, counts, why it does not)
    let expected = [
        ("validator", &val, true, ""),
        ("model-risk", &rita, false, "was revoked"),
        (
            "business-owner",
            &bob,
            false,
            "does not hold the role `business-owner`",
        ),
        ("qa", &w.alice, false, "self-approval"),
    ];

    let c = card::gather(&w.store, "gov@1").unwrap();
    assert_eq!(c.record, record.to_string());
    // The card reads the metrics from the step's outputs, as the gate does.
    assert_eq!(c.metrics.len(), 1, "{:?}", c.metrics);
    assert_eq!(c.metrics[0].step, "evaluate");
    assert_eq!(c.metrics[0].value["overall"]["auc"], 0.95);
    assert!(c.approval_problems.is_empty(), "{:?}", c.approval_problems);
    assert_eq!(c.approvals.len(), expected.len(), "{:#?}", c.approvals);
    let judged = w.judged("1");
    let policy = r#"
[stages.validated]
approvals = ["validator", "model-risk", "business-owner", "qa"]
"#;
    let checks = w.evaluate("1", policy, Stage::Validated);

    for (role, who, counts, why) in expected {
        let shown = c
            .approvals
            .iter()
            .find(|a| a.role == role)
            .unwrap_or_else(|| panic!("no `{role}` approval on the card"));
        assert_eq!(shown.approver, who.identity().to_string(), "{role}");
        let j = judged
            .iter()
            .find(|j| j.approval.as_ref().is_some_and(|a| a.role == role))
            .unwrap();
        let gate = check(&checks, &format!("approval by role `{role}`"));
        // The three agree with each other...
        assert_eq!(shown.valid, j.counts, "{role}: card vs judge");
        assert_eq!(gate.met, j.counts, "{role}: gate vs judge");
        // ...and with what the rule says of this approval.
        assert_eq!(j.counts, counts, "{role}: {j:?}");
        if counts {
            assert_eq!(shown.status, "counts", "{role}");
        } else {
            let why_not = j.why_not.as_deref().unwrap();
            assert!(why_not.contains(why), "{role}: {why_not}");
            assert_eq!(shown.status, format!("DOES NOT COUNT: {why_not}"), "{role}");
            assert_eq!(gate.detail, "no counting approval (1 ignored)", "{role}");
        }
    }

    // The rendered card says the same.
    let md = card::render_markdown(&c);
    assert_eq!(md.matches("DOES NOT COUNT").count(), 3, "{md}");
}

/// The card says of each reproduction whether promotion counts it, by the
/// same rule: a PASSED rebuild by the builder, by an unregistered key, a
/// FAILED one and one by a revoked verifier are shown, and do not count.
#[test]
fn card_and_promotion_agree_on_every_reproduction() {
    let w = World::new();
    w.build("1", &Build::auc(0.95));
    let vera = Person::new("Vera", 2); // registered: counts
    w.register(&vera, &["verifier"]);
    w.attest(&vera, "1", true);
    w.attest(&w.alice, "1", true); // the builder herself
    let stranger = Person::new("Stranger", 3); // not a registered identity
    w.attest(&stranger, "1", true);
    let fay = Person::new("Fay", 4); // registered, but her rebuild failed
    w.register(&fay, &["verifier"]);
    w.attest(&fay, "1", false);
    let rex = Person::new("Rex", 5); // revoked after verifying
    w.register(&rex, &["verifier"]);
    w.attest(&rex, "1", true);
    w.revoke(&rex, "left");

    let c = card::gather(&w.store, "gov@1").unwrap();
    assert_eq!(c.reproductions.len(), 5, "{:#?}", c.reproductions);
    let judged =
        repro_governance::registry::reproductions(&w.store, &w.record("1"), &w.alice.keyid())
            .unwrap();
    for r in &c.reproductions {
        let j = judged
            .iter()
            .find(|j| j.attestation == r.attestation)
            .expect("promotion judged the same attestations");
        assert_eq!(r.counts, j.counts, "{r:#?} vs {j:#?}");
        match &j.why_not {
            None => assert_eq!(r.status, "counts"),
            Some(w) => assert_eq!(r.status, format!("DOES NOT COUNT: {w}")),
        }
    }
    assert_eq!(c.reproductions.iter().filter(|r| r.counts).count(), 1);
    let checks = w.evaluate(
        "1",
        "[stages.validated]\nreproductions = 1\n",
        Stage::Validated,
    );
    assert!(
        check(&checks, "1 independent reproduction").met,
        "{checks:#?}"
    );
    let checks = w.evaluate(
        "1",
        "[stages.validated]\nreproductions = 2\n",
        Stage::Validated,
    );
    assert!(
        !check(&checks, "2 independent reproductions").met,
        "{checks:#?}"
    );
    // The rendered card shows why each one does not count.
    let md = card::render_markdown(&c);
    assert_eq!(md.matches("DOES NOT COUNT").count(), 4, "{md}");
}
