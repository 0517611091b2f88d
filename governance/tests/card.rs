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
