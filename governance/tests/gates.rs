//! Each requirement of a policy gate (`promote::evaluate` / `promote::promote`),
//! met and unmet.

mod common;

use common::{check, unmet, Build, Person, World};
use repro_governance::Stage;

/// A world with `gov@1` built (AUC 0.95) and Val, a registered validator.
fn world() -> (World, Person) {
    let w = World::new();
    w.build("1", &Build::auc(0.95));
    let val = Person::new("Val", 2);
    w.register(&val, &["validator"]);
    (w, val)
}

// --- stage order (`from`) -------------------------------------------------

const FROM_VALIDATED: &str = "[stages.production]\nfrom = \"validated\"\n";

#[test]
fn gate_from_is_met_when_the_version_is_in_that_stage() {
    let (w, _) = world();
    let p = w.policy("[stages.validated]\n[stages.production]\nfrom = \"validated\"\n");
    assert!(w.promote("1", Stage::Validated, &p).promoted);
    let checks = w.evaluate("1", FROM_VALIDATED, Stage::Production);
    let c = check(&checks, "in stage `validated`");
    assert!(c.met, "{c:?}");
    assert!(w.promote("1", Stage::Production, &p).promoted);
    assert_eq!(w.stage("1"), Stage::Production);
}

#[test]
fn gate_from_is_unmet_when_the_version_skips_a_stage() {
    let (w, _) = world();
    let p = w.policy(FROM_VALIDATED);
    let d = w.promote("1", Stage::Production, &p);
    assert!(!d.promoted);
    assert_eq!(unmet(&d.checked), ["in stage `validated`"]);
    assert_eq!(check(&d.checked, "in stage").detail, "gov@1 is candidate");
    assert_eq!(w.stage("1"), Stage::Candidate);
}

// --- approvals per role ---------------------------------------------------

const APPROVALS: &str = "[stages.validated]\napprovals = [\"validator\", \"model-risk\"]\n";

#[test]
fn gate_approvals_are_met_by_one_counting_approval_per_role() {
    let (w, val) = world();
    let rita = Person::new("Rita", 3);
    w.register(&rita, &["model-risk"]);
    w.approve(&val, "1", "validator");
    w.approve(&rita, "1", "model-risk");
    let checks = w.evaluate("1", APPROVALS, Stage::Validated);
    assert_eq!(unmet(&checks), Vec::<String>::new());
    assert!(check(&checks, "approval by role `validator`")
        .detail
        .contains("Val"));
    assert!(check(&checks, "approval by role `model-risk`")
        .detail
        .contains("Rita"));
    let d = w.promote("1", Stage::Validated, &w.policy(APPROVALS));
    assert!(d.promoted);
    assert_eq!(w.stage("1"), Stage::Validated);
}

#[test]
fn gate_approvals_are_unmet_for_a_role_with_no_counting_approval() {
    let (w, val) = world();
    let rita = Person::new("Rita", 3);
    w.register(&rita, &["model-risk"]);
    w.approve(&val, "1", "validator");
    w.approve(&rita, "1", "model-risk");
    // Rita is revoked: her approval is ignored, and the role is unmet;
    // Val's approval in another role does not fill it.
    w.revoke(&rita, "left");
    let checks = w.evaluate("1", APPROVALS, Stage::Validated);
    assert_eq!(unmet(&checks), ["approval by role `model-risk`"]);
    assert_eq!(
        check(&checks, "approval by role `model-risk`").detail,
        "no counting approval (1 ignored)"
    );
    let d = w.promote("1", Stage::Validated, &w.policy(APPROVALS));
    assert!(!d.promoted);
    assert_eq!(
        d.unmet().map(|c| c.requirement.clone()).collect::<Vec<_>>(),
        ["approval by role `model-risk`"]
    );
}

// --- reproductions --------------------------------------------------------

/// Why each reproduction of `gov@1` does not count (those that count left out).
fn reproductions_why_not(w: &World) -> Vec<String> {
    repro_governance::registry::reproductions(&w.store, &w.record("1"), &w.alice.keyid())
        .unwrap()
        .into_iter()
        .filter_map(|r| r.why_not)
        .collect()
}

const ONE_REPRO: &str = "[stages.validated]\nreproductions = 1\n";
const TWO_REPROS: &str = "[stages.validated]\nreproductions = 2\n";

#[test]
fn gate_reproductions_are_met_by_passed_verifications_of_registered_other_keys() {
    let (w, val) = world();
    let vic = Person::new("Vic", 5);
    w.register(&vic, &[]);
    w.attest(&val, "1", true);
    w.attest(&vic, "1", true);
    let checks = w.evaluate("1", TWO_REPROS, Stage::Validated);
    let c = check(&checks, "2 independent reproductions");
    assert!(c.met, "{c:?}");
    assert!(c.detail.starts_with("2 found"), "{c:?}");
}

#[test]
fn gate_reproductions_are_unmet_by_the_builder_a_failure_or_an_unregistered_key() {
    let (w, _) = world();
    // Alice (the builder, registered), a FAILED verification by Vic
    // (registered) and a PASSED one by Mallory (not registered).
    w.register(&w.alice, &["validator"]);
    w.attest(&w.alice, "1", true);
    let vic = Person::new("Vic", 5);
    w.register(&vic, &[]);
    w.attest(&vic, "1", false);
    w.attest(&Person::new("Mallory", 6), "1", true);
    let checks = w.evaluate("1", ONE_REPRO, Stage::Validated);
    assert_eq!(unmet(&checks), ["1 independent reproduction"]);
    assert!(check(&checks, "1 independent")
        .detail
        .starts_with("0 found"));
    let mut why = reproductions_why_not(&w);
    why.sort();
    assert!(
        why[0].contains("built the record: not independent"),
        "{why:?}"
    );
    assert!(why[1].contains("is not a registered identity"), "{why:?}");
    assert_eq!(why[2], "the result is FAILED", "{why:?}");
    // One more, by Vic and PASSED, meets it.
    w.attest(&vic, "1", true);
    assert_eq!(
        unmet(&w.evaluate("1", ONE_REPRO, Stage::Validated)),
        Vec::<String>::new()
    );
}

#[test]
fn gate_reproductions_count_each_key_once_and_not_a_revoked_one() {
    let (w, val) = world();
    w.attest(&val, "1", true);
    w.attest(&val, "1", true);
    let checks = w.evaluate("1", TWO_REPROS, Stage::Validated);
    assert_eq!(unmet(&checks), ["2 independent reproductions"]);
    assert!(check(&checks, "2 independent")
        .detail
        .starts_with("1 found"));
    w.revoke(&val, "left");
    let checks = w.evaluate("1", ONE_REPRO, Stage::Validated);
    assert_eq!(unmet(&checks), ["1 independent reproduction"]);
    assert!(reproductions_why_not(&w)
        .iter()
        .all(|why| why.contains("was revoked")));
}

#[test]
fn gate_reproductions_do_not_count_an_attestation_about_another_record() {
    let (w, val) = world();
    w.build("2", &Build::auc(0.96));
    // Val's attestation of gov@2's record, filed with gov@1's record.
    w.attest_record(&val, "1", &w.record("2"), true);
    let checks = w.evaluate("1", ONE_REPRO, Stage::Validated);
    assert_eq!(unmet(&checks), ["1 independent reproduction"]);
    assert_eq!(reproductions_why_not(&w), ["it is about another record"]);
}

// --- data validation ------------------------------------------------------

const DATA_VALIDATION: &str = "[stages.validated]\ndata_validation = \"validate\"\n";

#[test]
fn gate_data_validation_is_met_when_the_record_holds_the_step() {
    let (w, _) = world();
    let checks = w.evaluate("1", DATA_VALIDATION, Stage::Validated);
    let c = check(&checks, "data validation step `validate` passed");
    assert!(c.met, "{c:?}");
}

#[test]
fn gate_data_validation_is_unmet_when_the_record_lacks_the_step() {
    let w = World::new();
    w.build(
        "1",
        &Build {
            validate: false,
            ..Build::auc(0.95)
        },
    );
    let d = w.promote("1", Stage::Validated, &w.policy(DATA_VALIDATION));
    assert!(!d.promoted);
    assert_eq!(
        unmet(&d.checked),
        ["data validation step `validate` passed"]
    );
    assert_eq!(w.stage("1"), Stage::Candidate);
}

// --- owner ----------------------------------------------------------------

const OWNER: &str = "[stages.validated]\nowner = true\n";

#[test]
fn gate_owner_is_met_when_the_recipe_names_model_owner() {
    let (w, _) = world();
    let checks = w.evaluate("1", OWNER, Stage::Validated);
    let c = check(&checks, "owner named");
    assert!(c.met, "{c:?}");
    assert_eq!(c.detail, "Olivia Owner <olivia@example.com>");
}

#[test]
fn gate_owner_is_unmet_when_the_recipe_names_no_owner() {
    let w = World::new();
    w.build(
        "1",
        &Build {
            owner: None,
            ..Build::auc(0.95)
        },
    );
    let checks = w.evaluate("1", OWNER, Stage::Validated);
    assert_eq!(unmet(&checks), ["owner named"]);
}

// --- model card -----------------------------------------------------------

const CARD: &str = "[stages.validated]\nmodel_card = true\n";

#[test]
fn gate_model_card_is_met_when_a_card_is_stored_for_the_record() {
    let (w, _) = world();
    w.write_card("1");
    let checks = w.evaluate("1", CARD, Stage::Validated);
    assert!(check(&checks, "model card present").met);
}

#[test]
fn gate_model_card_is_unmet_without_a_card_for_this_record() {
    let (w, _) = world();
    // A card of another version does not do.
    w.build("2", &Build::auc(0.95));
    w.write_card("2");
    let checks = w.evaluate("1", CARD, Stage::Validated);
    assert_eq!(unmet(&checks), ["model card present"]);
}

// --- thresholds -----------------------------------------------------------

fn threshold(path: &str, bound: &str) -> String {
    format!(
        "[stages.validated]\nthresholds = [{{ step = \"evaluate\", file = \"metrics.json\", path = \"{path}\", {bound} }}]\n"
    )
}

#[test]
fn gate_threshold_min_is_met_at_or_above_and_unmet_below() {
    let (w, _) = world(); // AUC 0.95
    let at = w.evaluate(
        "1",
        &threshold("overall.auc", "min = 0.95"),
        Stage::Validated,
    );
    let c = check(&at, "`overall.auc` in evaluate/metrics.json >= 0.95");
    assert!(c.met, "{c:?}");
    assert_eq!(c.detail, "0.95");
    let below = w.evaluate(
        "1",
        &threshold("overall.auc", "min = 0.96"),
        Stage::Validated,
    );
    assert_eq!(
        unmet(&below),
        ["`overall.auc` in evaluate/metrics.json >= 0.96"]
    );
}

#[test]
fn gate_threshold_max_is_met_at_or_below_and_unmet_above() {
    let (w, _) = world(); // gap 0.02
    let path = "slices.gaps.auc.gap";
    let ok = w.evaluate("1", &threshold(path, "max = 0.05"), Stage::Validated);
    assert_eq!(unmet(&ok), Vec::<String>::new());
    let too_big = w.evaluate("1", &threshold(path, "max = 0.01"), Stage::Validated);
    assert_eq!(
        unmet(&too_big),
        [format!("`{path}` in evaluate/metrics.json <= 0.01")]
    );
    let both = w.evaluate(
        "1",
        &threshold(path, "min = 0.03, max = 0.05"),
        Stage::Validated,
    );
    assert_eq!(
        unmet(&both),
        [format!(
            "`{path}` in evaluate/metrics.json between 0.03 and 0.05"
        )]
    );
}

#[test]
fn gate_threshold_is_unmet_when_the_metric_is_missing_or_not_a_number() {
    let w = World::new();
    w.build(
        "1",
        &Build {
            metrics: r#"{"overall": {"auc": null, "name": "x"}, "list": [1]}"#.into(),
            ..Build::auc(0.0)
        },
    );
    for (path, why) in [
        ("overall.auc", "`overall.auc` is null, not a number"),
        ("overall.name", "`overall.name` is \"x\", not a number"),
        ("overall.f1", "no key `f1`"),
        ("list[3]", "no element [3]"),
    ] {
        let checks = w.evaluate("1", &threshold(path, "min = 0"), Stage::Validated);
        assert_eq!(unmet(&checks).len(), 1, "{path}: {checks:?}");
        assert_eq!(checks[0].detail, why, "{path}");
    }
    // An index that is there is followed.
    let checks = w.evaluate("1", &threshold("list[0]", "min = 1"), Stage::Validated);
    assert!(checks[0].met, "{checks:?}");
}

#[test]
fn gate_threshold_is_unmet_when_the_step_or_file_is_missing_or_not_json() {
    let w = World::new();
    w.build(
        "1",
        &Build {
            metrics: "auc = 0.99".into(),
            ..Build::auc(0.0)
        },
    );
    let on = |step: &str, file: &str| {
        format!(
            "[stages.validated]\nthresholds = [{{ step = \"{step}\", file = \"{file}\", path = \"auc\", min = 0 }}]\n"
        )
    };
    let detail = |text: &str| w.evaluate("1", text, Stage::Validated)[0].clone();
    let c = detail(&on("train", "metrics.json"));
    assert!(!c.met);
    assert_eq!(c.detail, "the record has no step `train`");
    let c = detail(&on("evaluate", "scores.json"));
    assert!(!c.met);
    assert_eq!(c.detail, "step `evaluate` has no file `scores.json`");
    let c = detail(&on("evaluate", "metrics.json"));
    assert!(!c.met);
    assert!(c.detail.starts_with("`metrics.json` is not JSON"), "{c:?}");
}

#[test]
fn gate_threshold_on_a_metrics_file_altered_in_the_store_is_an_error_not_a_decision() {
    let (w, _) = world();
    // The recorded metrics blob is changed in the store to claim a better AUC.
    let metrics = Build::auc(0.95).metrics;
    let blob = w
        .store
        .blob_path(&repro_store::BlobDigest::from_hash(repro_store::Hash::of(
            metrics.as_bytes(),
        )));
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, metrics.replace("0.95", "0.99")).unwrap();
    let p = w.policy(&threshold("overall.auc", "min = 0.9"));
    let e = repro_governance::promote::promote(
        &w.store,
        &w.actor(),
        &w.model("1"),
        Stage::Validated,
        &p,
        None,
    )
    .unwrap_err();
    assert!(!e.is_user(), "{e}");
    assert!(matches!(e, repro_governance::Error::Store(_)), "{e:?}");
    assert_eq!(w.stage("1"), Stage::Candidate);
}

// --- targets with no gate -------------------------------------------------

#[test]
fn promotion_to_a_stage_the_policy_has_no_gate_for_is_refused_except_retired() {
    let (w, _) = world();
    let p = w.policy("[stages.validated]\n");
    let e = repro_governance::promote::promote(
        &w.store,
        &w.actor(),
        &w.model("1"),
        Stage::Production,
        &p,
        None,
    )
    .unwrap_err();
    assert!(
        e.is_user() && e.to_string().contains("has no gate for `production`"),
        "{e}"
    );
    assert_eq!(w.stage("1"), Stage::Candidate);
    // Retiring needs no gate.
    let d = w.promote("1", Stage::Retired, &p);
    assert!(d.promoted && d.checked.is_empty(), "{d:?}");
    assert_eq!(w.stage("1"), Stage::Retired);
}

#[test]
fn promotion_to_candidate_or_to_the_current_stage_is_refused() {
    let (w, _) = world();
    let p = w.policy("[stages.validated]\n");
    let promote =
        |to| repro_governance::promote::promote(&w.store, &w.actor(), &w.model("1"), to, &p, None);
    let e = promote(Stage::Candidate).unwrap_err();
    assert!(e.is_user(), "{e}");
    assert!(promote(Stage::Validated).unwrap().promoted);
    let e = promote(Stage::Validated).unwrap_err();
    assert!(e.to_string().contains("already validated"), "{e}");
    assert_eq!(w.history().len(), 1);
}
