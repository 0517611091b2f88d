//! The engine's run, fail, skip, cancel and cache paths, driven through
//! `Engine::with_backend` by a fake backend (see `common`): plain
//! `cargo test`, no root, no Docker, no image.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{image, opts, plan, Harness, Recorder, Script, Wait};
use repro_engine::engine::{step_key, StepResult, StepStatus};
use repro_engine::events::Event;
use repro_evidence::exit::Interrupted;
use repro_store::TreeDigest;
use tokio::sync::{Barrier, Notify};
use tokio_util::sync::CancellationToken;

/// `a` writes `a.txt`; `b` mounts `a`'s output as `prev` and writes
/// `b.txt`, derived from `prev/a.txt`.
const CHAIN: &str = r#"
[[steps]]
name = "a"
argv = ["make", "a"]
env = { GREETING = "hello" }
outputs = ["a.txt"]

[[steps]]
name = "b"
argv = ["make", "b"]
inputs = { prev = "steps.a" }
outputs = ["b.txt"]
"#;

fn chain(h: &Harness) -> repro_engine::Plan {
    h.fake
        .script("a", Script::ok(&[("a.txt", b"alpha")]).log("a ran"));
    h.fake.script(
        "b",
        Script::exit(0).copy("prev", "a.txt", "b.txt").log("b ran"),
    );
    plan(CHAIN)
}

/// The result of step `name` in `steps`.
fn step<'r>(steps: &'r [StepResult], name: &str) -> &'r StepResult {
    steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {steps:?}"))
}

fn output(steps: &[StepResult], name: &str) -> TreeDigest {
    step(steps, name)
        .output
        .unwrap_or_else(|| panic!("`{name}` has no output: {steps:?}"))
}

fn started(e: &Event) -> Option<&str> {
    match e {
        Event::StepStarted { step, .. } => Some(step),
        _ => None,
    }
}

fn succeeded(e: &Event) -> Option<&str> {
    match e {
        Event::StepSucceeded { step, .. } => Some(step),
        _ => None,
    }
}

fn cached(e: &Event) -> Option<&str> {
    match e {
        Event::StepCached { step, .. } => Some(step),
        _ => None,
    }
}

/// Both steps of a chain run, in order; each output is in the store with
/// the bytes the step wrote (`b`'s derived from `a`'s, so `b` really had
/// `a`'s output mounted), each log is stored, each result is in the action
/// cache under the key the plan gives, and the reporter heard every step
/// start and succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_both_steps_and_stores_their_outputs_and_logs() {
    let h = Harness::new();
    let plan = chain(&h);
    let (report, events) = h.run(&plan, opts(2, true, true)).await;
    let report = report.expect("build");
    assert!(report.ok(), "{:?}", report.steps);
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    for s in &report.steps {
        assert_eq!(s.status, StepStatus::Ran, "{s:?}");
        assert_eq!(s.reason, None, "{s:?}");
        assert_eq!(h.fake.calls(&s.name), 1, "{}", s.name);
    }

    let (a, b) = (output(&report.steps, "a"), output(&report.steps, "b"));
    let files: Vec<String> = h.store.flatten(&a).unwrap().into_keys().collect();
    assert_eq!(files, ["a.txt"]);
    assert_eq!(h.read(&a, "a.txt"), b"alpha");
    assert_eq!(h.read(&b, "b.txt"), b"b:alpha");
    for (name, line) in [("a", "a ran\n"), ("b", "b ran\n")] {
        let log = step(&report.steps, name).log.expect("log");
        assert_eq!(h.store.read_blob(&log).unwrap(), line.as_bytes(), "{name}");
    }

    // What the sandbox was asked to run.
    let [spec_a] = &h.fake.specs("a")[..] else {
        panic!("{:?}", h.fake.specs("a"))
    };
    let [spec_b] = &h.fake.specs("b")[..] else {
        panic!("{:?}", h.fake.specs("b"))
    };
    assert_eq!(spec_a.image, image());
    assert_eq!(spec_a.argv, ["make", "a"]);
    assert_eq!(
        spec_a.env.get("GREETING").map(String::as_str),
        Some("hello")
    );
    assert_eq!(spec_a.env, plan.steps["a"].env);
    assert!(
        spec_a.env.contains_key("SOURCE_DATE_EPOCH"),
        "{:?}",
        spec_a.env
    );
    assert!(spec_a.inputs.is_empty(), "{:?}", spec_a.inputs);
    let mounts: Vec<&str> = spec_b.inputs.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(mounts, ["prev"]);
    assert!(!spec_b.env.contains_key("GREETING"), "{:?}", spec_b.env);
    assert_eq!(spec_b.limits, plan.steps["b"].limits);
    assert_ne!(
        spec_a.output, spec_b.output,
        "two steps share a scratch area"
    );

    // The keys and the action cache.
    let key_a = step_key(&plan.steps["a"], &BTreeMap::new());
    let key_b = step_key(&plan.steps["b"], &BTreeMap::from([("prev".to_string(), a)]));
    assert_eq!(step(&report.steps, "a").key, Some(key_a));
    assert_eq!(step(&report.steps, "b").key, Some(key_b));
    for (key, out) in [(key_a, a), (key_b, b)] {
        let hit = h.store.ac_get(&key).unwrap().expect("cached");
        assert_eq!(hit.output, out);
        assert_eq!(hit.exit_code, 0);
    }

    let all = events.events();
    assert!(
        matches!(all.first(), Some(Event::BuildStarted { steps: 2 })),
        "{all:?}"
    );
    let order: Vec<String> = all
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(format!("start {step}")),
            Event::StepSucceeded { step, output, .. } => {
                assert_eq!(
                    *output,
                    report
                        .steps
                        .iter()
                        .find(|s| &s.name == step)
                        .unwrap()
                        .output
                        .unwrap()
                );
                Some(format!("ok {step}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(order, ["start a", "ok a", "start b", "ok b"]);
}

/// A step exiting 3 fails with a reason naming the status; its dependents
/// (direct and transitive) are skipped naming it, and never reach the
/// sandbox; an independent step still runs; the failure is not cached, so
/// the next build runs the step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_skips_its_dependents_but_not_its_siblings_and_is_not_cached() {
    let h = Harness::new();
    let plan = plan(
        r#"
[[steps]]
name = "a"
argv = ["fail"]
outputs = ["a.txt"]

[[steps]]
name = "b"
argv = ["b"]
inputs = { prev = "steps.a" }
outputs = ["b.txt"]

[[steps]]
name = "c"
argv = ["c"]
inputs = { prev = "steps.b" }
outputs = ["c.txt"]

[[steps]]
name = "d"
argv = ["d"]
outputs = ["d.txt"]
"#,
    );
    h.fake
        .script("a", Script::exit(3).file("a.txt", b"half").log("boom"));
    h.fake.script("b", Script::ok(&[("b.txt", b"b")]));
    h.fake.script("c", Script::ok(&[("c.txt", b"c")]));
    h.fake.script("d", Script::ok(&[("d.txt", b"delta")]));

    let (report, events) = h.run(&plan, opts(2, true, true)).await;
    let report = report.expect("a failing step is not an error of the build");
    assert!(!report.ok());
    assert_eq!(report.steps.len(), 4, "{:?}", report.steps);

    let a = step(&report.steps, "a");
    assert_eq!(a.status, StepStatus::Failed);
    let reason = a.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("exited with status 3"), "{reason}");
    assert_eq!(a.output, None);
    let log = a.log.expect("a failed step's log is kept");
    assert_eq!(h.store.read_blob(&log).unwrap(), b"boom\n");

    for name in ["b", "c"] {
        let s = step(&report.steps, name);
        assert_eq!(s.status, StepStatus::Skipped, "{s:?}");
        let reason = s.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("`a`") && reason.contains("failed"),
            "{name}: {reason}"
        );
        assert_eq!((s.output, s.key, s.log), (None, None, None), "{s:?}");
        assert_eq!(h.fake.calls(name), 0, "{name} reached the sandbox");
    }
    let d = step(&report.steps, "d");
    assert_eq!(d.status, StepStatus::Ran, "{d:?}");
    assert_eq!(h.read(&d.output.unwrap(), "d.txt"), b"delta");

    let all = events.events();
    let failed: Vec<(&str, &str)> = all
        .iter()
        .filter_map(|e| match e {
            Event::StepFailed { step, reason, .. } => Some((step.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&failed[..], [("a", r)] if r.contains("exited with status 3")),
        "{failed:?}"
    );
    let mut skipped: Vec<(&str, &str)> = all
        .iter()
        .filter_map(|e| match e {
            Event::StepSkipped { step, because } => Some((step.as_str(), because.as_str())),
            _ => None,
        })
        .collect();
    skipped.sort();
    assert_eq!(skipped, [("b", "a"), ("c", "a")]);

    // Nothing cached for the failure: the next build runs it again (and
    // takes the sibling from the cache).
    let key_a = step_key(&plan.steps["a"], &BTreeMap::new());
    assert_eq!(a.key, Some(key_a));
    assert_eq!(h.store.ac_get(&key_a).unwrap(), None);
    let (again, _) = h.run(&plan, opts(2, true, true)).await;
    let again = again.expect("build");
    assert_eq!(step(&again.steps, "a").status, StepStatus::Failed);
    assert_eq!(step(&again.steps, "d").status, StepStatus::Cached);
    assert_eq!((h.fake.calls("a"), h.fake.calls("d")), (2, 1));
}

/// Steps exiting 0 are still failed when their output directory does not
/// match the declaration: a declared file not written, or an undeclared
/// file written; the reason names the file, and nothing is cached. A
/// declared directory may hold anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_undeclared_outputs_fail_the_step_naming_the_file() {
    let h = Harness::new();
    let plan = plan(
        r#"
[[steps]]
name = "missing"
argv = ["m"]
outputs = ["model.bin", "metrics.json"]

[[steps]]
name = "stray"
argv = ["s"]
outputs = ["model.bin"]

[[steps]]
name = "dir"
argv = ["d"]
outputs = ["reports/", "model.bin"]
"#,
    );
    h.fake.script("missing", Script::ok(&[("model.bin", b"w")]));
    h.fake.script(
        "stray",
        Script::ok(&[
            ("model.bin", b"w"),
            ("stray.tmp", b"x"),
            ("notes/n.txt", b"y"),
        ]),
    );
    h.fake.script(
        "dir",
        Script::ok(&[("model.bin", b"w"), ("reports/deep/r.json", b"{}")]),
    );
    let (report, _) = h.run(&plan, opts(2, true, true)).await;
    let report = report.expect("build");
    assert!(!report.ok());

    let missing = step(&report.steps, "missing");
    assert_eq!(missing.status, StepStatus::Failed, "{missing:?}");
    let reason = missing.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("did not write") && reason.contains("`metrics.json`"),
        "{reason}"
    );
    assert!(!reason.contains("model.bin"), "{reason}");

    let stray = step(&report.steps, "stray");
    assert_eq!(stray.status, StepStatus::Failed, "{stray:?}");
    let reason = stray.reason.as_deref().unwrap_or_default();
    assert!(
        // An undeclared directory is named as a whole.
        reason.contains("undeclared outputs `notes`, `stray.tmp`"),
        "{reason}"
    );

    for s in [missing, stray] {
        assert_eq!(s.output, None, "{s:?}");
        assert_eq!(h.store.ac_get(&s.key.unwrap()).unwrap(), None, "{s:?}");
    }

    let dir = step(&report.steps, "dir");
    assert_eq!(dir.status, StepStatus::Ran, "{dir:?}");
    assert_eq!(h.read(&dir.output.unwrap(), "reports/deep/r.json"), b"{}");
}

/// Cancelling the build while a step runs ends it with `Interrupted` (the
/// exit code of Ctrl-C), its dependent never starts, and nothing is cached
/// for the step: the next build runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_step_interrupts_the_build_and_caches_nothing() {
    let h = Harness::new();
    let plan = plan(
        r#"
[[steps]]
name = "slow"
argv = ["slow"]
outputs = ["out.txt"]

[[steps]]
name = "after"
argv = ["after"]
inputs = { prev = "steps.slow" }
outputs = ["after.txt"]
"#,
    );
    let running = Arc::new(Notify::new());
    h.fake.script(
        "slow",
        Script::ok(&[("out.txt", b"never")]).wait(Wait::ForCancel {
            started: Arc::clone(&running),
        }),
    );
    h.fake
        .script("after", Script::ok(&[("after.txt", b"never")]));

    let cancel = CancellationToken::new();
    let recorder = Arc::new(Recorder::default());
    let engine = h.engine(Arc::clone(&recorder), cancel.clone());
    let build = tokio::spawn({
        let plan = plan.clone();
        async move { engine.run(&plan, opts(2, true, true)).await }
    });
    tokio::time::timeout(Duration::from_secs(10), running.notified())
        .await
        .expect("the step never started");
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(10), build)
        .await
        .expect("the build did not stop after the cancellation")
        .expect("join")
        .expect_err("a cancelled build is an error");
    assert!(
        err.chain().any(|c| c.is::<Interrupted>()),
        "not Interrupted: {err:#}"
    );
    assert_eq!(h.fake.calls("slow"), 1);
    assert_eq!(h.fake.calls("after"), 0);
    // An interrupted step neither succeeded nor failed, and stopped
    // nothing: the build as a whole was stopped.
    let heard: Vec<Event> = recorder
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::StepSucceeded { .. } | Event::StepFailed { .. } | Event::StepSkipped { .. }
            )
        })
        .collect();
    assert!(heard.is_empty(), "{heard:?}");

    let key = step_key(&plan.steps["slow"], &BTreeMap::new());
    assert_eq!(h.store.ac_get(&key).unwrap(), None);
    h.fake.script("slow", Script::ok(&[("out.txt", b"done")]));
    let (report, _) = h.run(&plan, opts(2, true, true)).await;
    let report = report.expect("build");
    assert!(report.ok(), "{:?}", report.steps);
    assert_eq!(step(&report.steps, "slow").status, StepStatus::Ran);
    assert_eq!(h.fake.calls("slow"), 2);
    assert_eq!(h.read(&output(&report.steps, "slow"), "out.txt"), b"done");
}

/// A build whose token fired before it began runs nothing and is
/// `Interrupted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_cancelled_before_it_starts_runs_nothing() {
    let h = Harness::new();
    let plan = chain(&h);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let engine = h.engine(Arc::default(), cancel);
    let err = engine
        .run(&plan, opts(2, true, true))
        .await
        .expect_err("cancelled");
    assert!(err.chain().any(|c| c.is::<Interrupted>()), "{err:#}");
    assert_eq!(h.fake.total_calls(), 0);
}

/// A second build with `read_cache` takes every step from the action
/// cache without calling the backend, with the first build's outputs,
/// logs and keys; with `read_cache: false` every step runs again (to the
/// same outputs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_build_takes_every_step_from_the_cache_unless_told_not_to_read_it() {
    let h = Harness::new();
    let plan = chain(&h);
    let (first, _) = h.run(&plan, opts(2, true, true)).await;
    let first = first.expect("first build");
    assert!(first.ok());
    assert_eq!(h.fake.total_calls(), 2);

    let (second, events) = h.run(&plan, opts(2, true, true)).await;
    let second = second.expect("second build");
    assert_eq!(h.fake.total_calls(), 2, "a cache hit called the backend");
    assert!(second.ok());
    assert_eq!(second.steps.len(), first.steps.len());
    for (a, b) in first.steps.iter().zip(&second.steps) {
        assert_eq!(a.name, b.name);
        assert_eq!(b.status, StepStatus::Cached, "{b:?}");
        assert_eq!(
            (a.key, a.output, a.log),
            (b.key, b.output, b.log),
            "{}",
            a.name
        );
        assert_eq!(b.duration, Duration::ZERO);
        let files = b.files(&h.store).unwrap().unwrap();
        assert_eq!(*files, h.store.flatten(&a.output.unwrap()).unwrap());
    }
    assert_eq!(events.steps(cached), ["a", "b"]);
    assert!(events.steps(started).is_empty(), "{:?}", events.events());

    let (third, events) = h.run(&plan, opts(2, false, true)).await;
    let third = third.expect("third build");
    assert_eq!((h.fake.calls("a"), h.fake.calls("b")), (2, 2));
    for (a, c) in first.steps.iter().zip(&third.steps) {
        assert_eq!(c.status, StepStatus::Ran, "{c:?}");
        assert_eq!((a.key, a.output), (c.key, c.output), "{}", a.name);
    }
    assert!(events.steps(cached).is_empty(), "{:?}", events.events());
}

/// With `write_cache: false` a build leaves the action cache empty: the
/// next build (reading the cache) runs every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_does_not_write_the_cache_caches_nothing() {
    let h = Harness::new();
    let plan = chain(&h);
    let (first, _) = h.run(&plan, opts(2, true, false)).await;
    let first = first.expect("first build");
    assert!(first.ok());
    for s in &first.steps {
        assert_eq!(s.status, StepStatus::Ran, "{s:?}");
        assert_eq!(h.store.ac_get(&s.key.unwrap()).unwrap(), None, "{}", s.name);
    }
    // The outputs are in the store all the same.
    assert_eq!(h.read(&output(&first.steps, "b"), "b.txt"), b"b:alpha");

    let (second, _) = h.run(&plan, opts(2, true, true)).await;
    let second = second.expect("second build");
    assert_eq!((h.fake.calls("a"), h.fake.calls("b")), (2, 2));
    for (a, b) in first.steps.iter().zip(&second.steps) {
        assert_eq!(b.status, StepStatus::Ran, "{b:?}");
        assert_eq!(a.output, b.output, "{}", a.name);
    }
}

/// Changing a step's command misses the cache for that step; when its
/// output stays the same, the step using it keeps its key and is still a
/// hit. When the output changes, the dependent runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_step_runs_again_and_its_dependent_only_if_its_output_changed() {
    let h = Harness::new();
    let plan1 = chain(&h);
    let (first, _) = h.run(&plan1, opts(2, true, true)).await;
    assert!(first.expect("first build").ok());

    let plan2 = plan(&CHAIN.replace(r#"["make", "a"]"#, r#"["make", "a", "--again"]"#));
    let (second, _) = h.run(&plan2, opts(2, true, true)).await;
    let second = second.expect("second build");
    assert_eq!(step(&second.steps, "a").status, StepStatus::Ran);
    assert_eq!(step(&second.steps, "b").status, StepStatus::Cached);
    assert_eq!((h.fake.calls("a"), h.fake.calls("b")), (2, 1));

    h.fake
        .script("a", Script::ok(&[("a.txt", b"beta")]).log("a ran"));
    let plan3 = plan(&CHAIN.replace(r#"["make", "a"]"#, r#"["make", "a", "--beta"]"#));
    let (third, _) = h.run(&plan3, opts(2, true, true)).await;
    let third = third.expect("third build");
    assert_eq!(step(&third.steps, "b").status, StepStatus::Ran);
    assert_eq!((h.fake.calls("a"), h.fake.calls("b")), (3, 2));
    assert_eq!(h.read(&output(&third.steps, "b"), "b.txt"), b"b:beta");
}

/// A cached output whose blob was deleted from the store is a miss: the
/// step runs again (its dependent, whose input is unchanged, stays a hit)
/// and puts the blob back; the build after that is fully cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_output_with_a_deleted_blob_is_run_again_and_restored() {
    let h = Harness::new();
    let plan = chain(&h);
    let (first, _) = h.run(&plan, opts(2, true, true)).await;
    let first = first.expect("first build");
    let a = output(&first.steps, "a");
    let blob = h.blob(&a, "a.txt");
    std::fs::remove_file(h.store.blob_path(&blob)).unwrap();

    let (second, _) = h.run(&plan, opts(2, true, true)).await;
    let second = second.expect("second build");
    assert!(second.ok(), "{:?}", second.steps);
    assert_eq!(step(&second.steps, "a").status, StepStatus::Ran);
    assert_eq!(step(&second.steps, "b").status, StepStatus::Cached);
    assert_eq!((h.fake.calls("a"), h.fake.calls("b")), (2, 1));
    assert_eq!(output(&second.steps, "a"), a);
    assert_eq!(h.read(&a, "a.txt"), b"alpha");

    let (third, _) = h.run(&plan, opts(2, true, true)).await;
    let third = third.expect("third build");
    assert!(
        third.steps.iter().all(|s| s.status == StepStatus::Cached),
        "{:?}",
        third.steps
    );
    assert_eq!(h.fake.total_calls(), 3);
}

/// A cached output whose blob was altered in place is not taken: the
/// engine warns, naming the step and the blob, runs the step again, and
/// its output replaces the damaged blob; the build after that is fully
/// cached and silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_output_with_a_corrupt_blob_is_reported_run_again_and_repaired() {
    let h = Harness::new();
    let plan = chain(&h);
    let (first, _) = h.run(&plan, opts(2, true, true)).await;
    let first = first.expect("first build");
    let a = output(&first.steps, "a");
    let blob = h.blob(&a, "a.txt");
    // A hit first, so that the blob's stamp is recorded: the alteration
    // must be seen through it.
    let (hit, events) = h.run(&plan, opts(2, true, true)).await;
    assert_eq!(
        step(&hit.expect("hit").steps, "a").status,
        StepStatus::Cached
    );
    assert!(events.warnings().is_empty(), "{:?}", events.warnings());

    let path = h.store.blob_path(&blob);
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(&path, b"alphz").unwrap();

    let (second, events) = h.run(&plan, opts(2, true, true)).await;
    let second = second.expect("second build");
    assert!(second.ok(), "{:?}", second.steps);
    assert_eq!(step(&second.steps, "a").status, StepStatus::Ran);
    assert_eq!(step(&second.steps, "b").status, StepStatus::Cached);
    assert_eq!((h.fake.calls("a"), h.fake.calls("b")), (2, 1));
    let warnings = events.warnings();
    assert!(
        matches!(&warnings[..], [w] if w.contains("`a`") && w.contains(&blob.to_string())),
        "{warnings:?}"
    );
    assert_eq!(output(&second.steps, "a"), a);
    assert_eq!(
        h.read(&a, "a.txt"),
        b"alpha",
        "the damaged blob was not replaced"
    );

    let (third, events) = h.run(&plan, opts(2, true, true)).await;
    let third = third.expect("third build");
    assert!(
        third.steps.iter().all(|s| s.status == StepStatus::Cached),
        "{:?}",
        third.steps
    );
    assert!(events.warnings().is_empty(), "{:?}", events.warnings());
    assert_eq!(h.fake.total_calls(), 3);
}

const TWO_INDEPENDENT: &str = r#"
[[steps]]
name = "left"
argv = ["left"]
outputs = ["l.txt"]

[[steps]]
name = "right"
argv = ["right"]
outputs = ["r.txt"]
"#;

/// With two jobs, two independent steps run at the same time: each waits
/// at a barrier of two, which only opens if both are running (one at a
/// time, the build would hang; the harness's timeout fails it instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_run_two_independent_steps_at_once() {
    let h = Harness::new();
    let plan = plan(TWO_INDEPENDENT);
    let barrier = Arc::new(Barrier::new(2));
    for (name, file) in [("left", "l.txt"), ("right", "r.txt")] {
        h.fake.script(
            name,
            Script::ok(&[(file, name.as_bytes())]).wait(Wait::Barrier(Arc::clone(&barrier))),
        );
    }
    let engine = h.engine(Arc::default(), CancellationToken::new());
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        engine.run(&plan, opts(2, true, true)),
    )
    .await
    .expect("the steps did not run at the same time (the barrier never opened)")
    .expect("build");
    assert!(report.ok(), "{:?}", report.steps);
    assert_eq!(h.fake.max_concurrency(), 2);
}

/// With one job, independent steps never overlap (each takes a while, so
/// an overlap would be seen); with three jobs, they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_runs_one_step_at_a_time() {
    let steps = format!(
        "{TWO_INDEPENDENT}\n[[steps]]\nname = \"third\"\nargv = [\"third\"]\noutputs = [\"t.txt\"]\n"
    );
    for (jobs, want) in [(1, 1), (3, 3)] {
        let h = Harness::new();
        let plan = plan(&steps);
        for (name, file) in [("left", "l.txt"), ("right", "r.txt"), ("third", "t.txt")] {
            h.fake.script(
                name,
                Script::ok(&[(file, name.as_bytes())])
                    .wait(Wait::Sleep(Duration::from_millis(300))),
            );
        }
        let (report, _) = h.run(&plan, opts(jobs, true, true)).await;
        let report = report.expect("build");
        assert!(report.ok(), "{:?}", report.steps);
        assert_eq!(h.fake.total_calls(), 3);
        assert_eq!(h.fake.max_concurrency(), want, "jobs = {jobs}");
    }
}

/// An error of the backend itself (here: a step the fake has no script
/// for) is not a step failure: the build ends with an error naming the
/// step (not `Interrupted`), and the steps running beside it are stopped
/// rather than waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_error_ends_the_build_naming_the_step_and_stops_the_others() {
    let h = Harness::new();
    let plan = plan(TWO_INDEPENDENT);
    let running = Arc::new(Notify::new());
    h.fake.script(
        "left",
        Script::ok(&[("l.txt", b"l")]).wait(Wait::ForCancel {
            started: Arc::clone(&running),
        }),
    );
    // `right` has no script: the fake answers `Err(InvalidSpec)`.
    let (report, events) = h.run(&plan, opts(2, true, true)).await;
    let err = report.expect_err("a backend error is an error of the build");
    let text = format!("{err:#}");
    assert!(
        text.contains("step `right`") && text.contains("no script"),
        "{text}"
    );
    assert!(!err.chain().any(|c| c.is::<Interrupted>()), "{text}");
    assert_eq!((h.fake.calls("left"), h.fake.calls("right")), (1, 1));
    assert!(events.steps(succeeded).is_empty(), "{:?}", events.events());
    for s in &plan.steps {
        let key = step_key(s.1, &BTreeMap::new());
        assert_eq!(h.store.ac_get(&key).unwrap(), None, "{}", s.0);
    }
}

/// A step run again without writing the cache (as `verify` and `check`
/// do) never replaces what the store holds, even when its output is the
/// same as a damaged stored one: `verify` re-hashes the recorded outputs
/// while the steps run, and must find the damage whatever the timing
/// (an altered stored file is tampering, exit 3, not something a rebuild
/// quietly repairs). The damaged blob stays as it was, and reading it is an
/// error naming it. Writing the cache, the rerun repairs it (the
/// corrupt-blob test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_without_writing_the_cache_leaves_a_damaged_blob_for_verify_to_find() {
    let h = Harness::new();
    let plan = chain(&h);
    let (first, _) = h.run(&plan, opts(2, true, true)).await;
    let a = output(&first.expect("first build").steps, "a");
    let blob = h.blob(&a, "a.txt");
    let path = h.store.blob_path(&blob);
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(&path, b"alphz").unwrap();

    // `a` runs again to the same output; `b` reads that output from the
    // store, where it is damaged: the build stops, naming the blob, rather
    // than hand `b` altered bytes.
    let (second, _) = h.run(&plan, opts(2, false, false)).await;
    let e = second.expect_err("a build over a damaged input must not succeed");
    assert!(
        e.chain().any(|c| matches!(
            c.downcast_ref::<repro_store::Error>(),
            Some(repro_store::Error::Corrupt { .. })
        )),
        "{e:#}"
    );
    assert!(format!("{e:#}").contains(&blob.hex()), "{e:#}");
    assert_eq!(std::fs::read(&path).unwrap(), b"alphz");
    let e = h.store.read_blob(&blob).unwrap_err();
    assert!(matches!(e, repro_store::Error::Corrupt { .. }), "{e}");
}

/// `train` asks for two `a100` GPUs, `eval` for none.
const GPUS: &str = r#"
[[steps]]
name = "train"
argv = ["train"]
outputs = ["m.bin"]
limits = { gpus = "a100:2" }

[[steps]]
name = "eval"
argv = ["eval"]
outputs = ["e.txt"]
"#;

/// A step that asks for GPUs on a backend that allocates none (a local
/// sandbox) still runs and succeeds, with the request in its spec; the
/// build warns, naming the step and saying the sandbox gives it no GPU,
/// once per step however often the engine runs it, and not for the step
/// without GPUs. The request is not part of the step key. On a backend
/// that allocates GPUs (a cluster), nothing is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_asking_for_gpus_runs_locally_with_one_warning_and_the_same_key() {
    let h = Harness::new();
    h.fake.script("train", Script::ok(&[("m.bin", b"weights")]));
    h.fake.script("eval", Script::ok(&[("e.txt", b"0.9")]));
    let plan = plan(GPUS);

    let recorder = Arc::new(Recorder::default());
    let engine = h.engine(Arc::clone(&recorder), CancellationToken::new());
    for _ in 0..2 {
        let report = engine
            .run(&plan, opts(2, false, false))
            .await
            .expect("build");
        assert!(report.ok(), "{:?}", report.steps);
    }
    assert_eq!(h.fake.calls("train"), 2);
    let warnings = recorder.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    for part in [
        "step `train`",
        "2 GPUs",
        "`gpus = \"a100:2\"`",
        "gives it no GPU",
        "runs without one",
    ] {
        assert!(w.contains(part), "{part:?} not in {w:?}");
    }
    assert!(!w.contains("eval"), "{w}");

    let specs = h.fake.specs("train");
    let gpus = specs[0]
        .limits
        .gpus
        .clone()
        .expect("the spec carries the request");
    assert_eq!((gpus.kind.as_deref(), gpus.count), (Some("a100"), 2));
    assert_eq!(h.fake.specs("eval")[0].limits.gpus, None);

    let mut without = plan.steps["train"].clone();
    without.limits.gpus = None;
    assert_eq!(
        step_key(&plan.steps["train"], &BTreeMap::new()),
        step_key(&without, &BTreeMap::new()),
        "GPUs changed the step key"
    );

    h.fake.set_allocates_gpus(true);
    let (report, events) = h.run(&plan, opts(2, false, false)).await;
    assert!(report.expect("build").ok());
    assert_eq!(events.warnings(), Vec::<String>::new());
}

/// What a backend tells of where a step stands (a Slurm job pending, on a
/// node, submitted again) reaches the reporter, in order, between the
/// step's start and its end, and the result lists each job once, oldest
/// first; a step whose backend tells nothing lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_job_progress_reaches_the_reporter_and_its_jobs_the_result() {
    use repro_sandbox::JobState::{Pending, Retrying, Running};
    let h = Harness::new();
    h.fake.script(
        "a",
        Script::ok(&[("a.txt", b"alpha")])
            .progress(Pending, "41")
            .progress(Running, "41")
            .progress(Retrying, "41")
            .progress(Pending, "42")
            .progress(Running, "42"),
    );
    h.fake
        .script("b", Script::exit(0).copy("prev", "a.txt", "b.txt"));
    let (report, events) = h.run(&plan(CHAIN), opts(2, true, true)).await;
    let report = report.expect("build");
    assert!(report.ok(), "{:?}", report.steps);
    assert_eq!(step(&report.steps, "a").job_ids, ["41", "42"]);
    assert!(step(&report.steps, "b").job_ids.is_empty());
    let told: Vec<String> = events
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(format!("{step} started")),
            Event::StepPlacement { step, progress } => Some(format!("{step}: {}", progress.detail)),
            Event::StepSucceeded { step, .. } => Some(format!("{step} ran")),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [
            "a started",
            "a: Pending as job 41",
            "a: Running as job 41",
            "a: Retrying as job 41",
            "a: Pending as job 42",
            "a: Running as job 42",
            "a ran",
            "b started",
            "b ran",
        ]
    );
}
