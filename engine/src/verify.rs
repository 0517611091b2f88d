//! `repro verify`: check a record's signature, rebuild everything from its
//! pinned inputs with the cache off, and compare every output file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use repro_store::{Store, TreeDigest};
use serde::Serialize;

use crate::compare::{diff_trees, CompareOptions, FileDiff};
use crate::engine::{BuildOptions, Engine, Plan, StepStatus};
use repro_evidence::exit::CannotVerify;
use repro_evidence::record::{pins_of, OpenedRecord};

/// The outcome for one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepCheck {
    /// The step.
    pub step: String,
    /// The output tree in the record.
    pub expected: String,
    /// The rebuilt output tree (absent if the step failed).
    pub actual: Option<String>,
    /// Whether they are equal.
    pub reproduced: bool,
    /// When the recomputed step key differs from the recorded one.
    pub key_changed: Option<(String, String)>,
    /// Why the rebuild of this step failed, if it did.
    pub failure: Option<String>,
    /// The differing files.
    pub files: Vec<FileDiff>,
    /// The rebuild's wall time in the sandbox, in milliseconds to the
    /// microsecond (zero if the step did not run); the rest of a
    /// verification's wall time is the tool's own overhead.
    pub duration_ms: f64,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// `name@version`.
    pub model: String,
    /// The record's digest.
    pub record: String,
    /// The key id that signed it.
    pub signed_by: String,
    /// Every step.
    pub steps: Vec<StepCheck>,
    /// Whether everything reproduced.
    pub reproduced: bool,
    /// The output files the record names (its subjects), which the
    /// attestation names too.
    #[serde(skip)]
    pub outputs: Vec<repro_evidence::record::ResourceDescriptor>,
}

impl Verification {
    /// What the attestation of this verification states.
    pub fn verified(&self) -> repro_evidence::attest::Verified {
        use repro_evidence::attest::{FileSummary, StepSummary};
        repro_evidence::attest::Verified {
            model: self.model.clone(),
            reproduced: self.reproduced,
            outputs: self.outputs.clone(),
            steps: self
                .steps
                .iter()
                .map(|s| StepSummary {
                    step: s.step.clone(),
                    expected: s.expected.clone(),
                    actual: s.actual.clone(),
                    reproduced: s.reproduced,
                    files: s
                        .files
                        .iter()
                        .map(|f| FileSummary {
                            path: f.path.clone(),
                            expected: f.expected.as_ref().map(|e| e.to_string()),
                            actual: f.actual.as_ref().map(|a| a.to_string()),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Rebuild the record's model from scratch and compare.
pub async fn verify(
    engine: &Arc<Engine>,
    opened: OpenedRecord,
    jobs: usize,
    compare: CompareOptions,
) -> Result<Verification> {
    let store = engine.store();
    let st = &opened.statement;
    let ext = &st.predicate.build_definition.external_parameters;
    let pins = pins_of(st)?;
    let prewarm = prewarm_sandbox(engine, &pins, st.steps()?.len());
    let recipe_digest = ext.recipe_digest;
    let text = store.read_blob(&recipe_digest).map_err(|e| {
        anyhow::Error::new(e).context(CannotVerify(format!(
            "the recipe {recipe_digest} is unusable"
        )))
    })?;
    let text =
        String::from_utf8(text).map_err(|_| CannotVerify("the recipe is not UTF-8".into()))?;
    let recipe = repro_recipes::parse_str(&PathBuf::from(&ext.recipe), &text)
        .map_err(|e| CannotVerify(format!("the recorded recipe does not parse any more: {e}")))?;
    // Images the recipe names in a registry are pulled by digest if missing.
    crate::build::fetch_registry_images(engine, &recipe).await?;
    // Check every pinned input before spending time on steps.
    for d in pins.toolchains.values() {
        store
            .get_image(d)
            .map_err(|e| anyhow!(e).context(CannotVerify(format!("image {d}"))))?;
    }
    for d in pins.data.values().chain(pins.code.values()) {
        check_tree(&store, d)?;
    }
    let plan = Plan::new(&recipe, &pins)?;
    let recorded = st.steps()?;
    if recorded.len() != plan.steps.len() {
        bail!(CannotVerify(format!(
            "the record lists {} steps but its recipe has {}",
            recorded.len(),
            plan.steps.len()
        )));
    }
    let stored = check_recorded_outputs(&store, &recorded)?;
    // Its errors are the engine's to report (they recur there).
    let _ = prewarm.await;
    let report = engine
        .run(
            &plan,
            BuildOptions {
                jobs,
                read_cache: false,
                write_cache: false,
            },
        )
        .await;
    // Damage to the recorded outputs first: a rebuilt step that mounts a
    // damaged one fails on it too, less precisely.
    stored
        .await
        .context("the check of the recorded outputs panicked")??;
    let report = report?;
    let mut steps = Vec::new();
    for r in &recorded {
        let expected: TreeDigest = r.output;
        let got = report.steps.iter().find(|s| s.name == r.name);
        let actual = got.and_then(|s| s.output);
        let key_changed = got
            .and_then(|s| s.key)
            .filter(|k| *k != r.key)
            .map(|k| (r.key.to_string(), k.to_string()));
        let failure = got.and_then(|s| match s.status {
            StepStatus::Failed | StepStatus::Skipped => s.reason.clone(),
            _ => None,
        });
        let files = match actual {
            Some(a) => diff_trees(&store, &expected, &a, compare)?,
            None => Vec::new(),
        };
        steps.push(StepCheck {
            step: r.name.clone(),
            expected: expected.to_string(),
            actual: actual.map(|a| a.to_string()),
            reproduced: actual == Some(expected),
            key_changed,
            failure,
            files,
            duration_ms: got.map_or(0.0, |s| s.duration_ms()),
        });
    }
    let reproduced = steps.iter().all(|s| s.reproduced);
    Ok(Verification {
        model: format!("{}@{}", ext.name, ext.version),
        record: opened.digest.to_string(),
        signed_by: opened.signed_by,
        steps,
        reproduced,
        outputs: st.subject.clone(),
    })
}

/// Check the outputs the record names as the store holds them, which the
/// rebuild is compared with (and which the model card, the promotion gate,
/// lineage, export and push read): every tree object and file blob must be
/// present now, before the rebuild runs (a rebuilt step could put a missing
/// one back), and every one is re-hashed, no stamp trusted, on a blocking
/// thread while the steps run (the returned task). A rebuild that gives the
/// recorded digests does not make an altered stored copy good: that is
/// tampering, reported as such (exit 3, naming the blob), and no
/// attestation is signed.
fn check_recorded_outputs(
    store: &Arc<Store>,
    recorded: &[repro_evidence::record::RecordedStep],
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let mut sets = Vec::new();
    for r in recorded {
        let tree: TreeDigest = r.output;
        let blobs = store
            .tree_blobs(&tree)
            .map_err(|e| damaged(store, &r.name, &tree, e))?;
        if let Some(gone) = blobs.iter().find(|b| !store.has_blob(b)) {
            let path = store.blob_path(gone);
            let e = repro_store::Error::Missing {
                what: "blob",
                digest: gone.to_string(),
                path,
            };
            return Err(damaged(store, &r.name, &tree, e));
        }
        sets.push((r.name.clone(), tree, blobs));
    }
    let store = Arc::clone(store);
    Ok(tokio::task::spawn_blocking(move || {
        for (step, tree, blobs) in sets {
            store
                .verify_blobs(&blobs)
                .map_err(|e| damaged(&store, &step, &tree, e))?;
        }
        Ok(())
    }))
}

/// The error of a recorded output that the store holds damaged (exit 3).
fn damaged(store: &Store, step: &str, tree: &TreeDigest, e: repro_store::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(CannotVerify(format!(
        "the recorded output of step `{step}` ({tree}) is damaged in the store `{}`\nhint: `repro fsck` lists every damaged object; restore the version with `repro pull` or `repro import` of its bundle",
        store.dir().display()
    )))
}

/// Set up the sandbox while the record's recipe and inputs are checked:
/// connect it (the native backend starts its namespace probe), tell it how
/// many steps will run (so that a one- or two-step verification does not
/// start a pool of pre-warmed inits, see `NativeSandbox::expect_runs`),
/// and prepare and check the root of every pinned image the store already
/// holds. The engine's own calls later find this work done (or wait for
/// it); an error here is left for them to meet and report.
fn prewarm_sandbox(
    engine: &Arc<Engine>,
    pins: &repro_recipes::Pins,
    steps: usize,
) -> tokio::task::JoinHandle<()> {
    let engine = Arc::clone(engine);
    let images: Vec<_> = pins.toolchains.values().copied().collect();
    tokio::spawn(async move {
        let Ok(sandbox) = engine.sandbox().await else {
            return;
        };
        sandbox.expect_runs(steps);
        if sandbox.kind() != repro_sandbox::BackendKind::Native {
            return;
        }
        let store = engine.store();
        for image in images {
            if store.get_image(&image).is_ok() {
                let _ = sandbox.ensure_image(&store, &image).await;
            }
        }
    })
}

/// Check, before any step runs, that pinned input tree `d` is whole: its
/// tree objects are present and re-hashed, and every blob it names is
/// present. The blobs' contents are re-hashed once, when a step's inputs are
/// laid out ([`Store::materialize`] verifies every blob it uses), not here
/// as well: hashing a big dataset twice doubled what verify costs beyond
/// the steps themselves. A corrupt blob still stops the verification
/// (exit 3, naming the blob).
fn check_tree(store: &Store, d: &TreeDigest) -> Result<()> {
    let complete = store
        .tree_is_complete(d)
        .map_err(|e| anyhow!(e).context(CannotVerify(format!("input tree {d}"))))?;
    if !complete {
        bail!(CannotVerify(format!(
            "input tree {d} is not complete in the store `{}` (a tree object or file is missing)\nhint: restore it, e.g. with `repro pull` or `repro import` of the version, or `repro data add` of the original folder",
            store.dir().display()
        )));
    }
    Ok(())
}

/// The human-readable report of a verification.
pub fn render(v: &Verification) -> String {
    let mut out = String::new();
    for s in &v.steps {
        if s.reproduced {
            out.push_str(&format!("  ok       {} -> {}\n", s.step, s.expected));
            continue;
        }
        out.push_str(&format!("  DIFFERS  {}\n", s.step));
        if let Some((old, new)) = &s.key_changed {
            out.push_str(&format!(
                "           step key changed: recorded {old}, now {new} (the runner or its sandbox contract changed)\n"
            ));
        }
        if let Some(f) = &s.failure {
            out.push_str(&format!("           the rebuild failed: {f}\n"));
        }
        for f in &s.files {
            out.push_str(&format!("           file `{}`\n", f.path));
            match &f.expected {
                Some(e) => out.push_str(&format!("             recorded: {e}\n")),
                None => out.push_str("             recorded: (absent)\n"),
            }
            match &f.actual {
                Some(a) => out.push_str(&format!("             rebuilt:  {a}\n")),
                None => out.push_str("             rebuilt:  (absent)\n"),
            }
            if let Some(o) = f.first_difference {
                out.push_str(&format!(
                    "             first differing byte at offset {o}\n"
                ));
            }
            if let Some(e) = &f.explanation {
                render_explanation(&mut out, e, "             ");
            }
        }
    }
    if v.reproduced {
        out.push_str(&format!(
            "reproduced: {} ({} steps, byte for byte)\n",
            v.model,
            v.steps.len()
        ));
    } else {
        let n = v.steps.iter().filter(|s| !s.reproduced).count();
        out.push_str(&format!(
            "not reproduced: {} ({n} of {} steps differ)\n",
            v.model,
            v.steps.len()
        ));
    }
    out
}

/// Append an explanation: its summary, then its details indented.
pub fn render_explanation(out: &mut String, e: &crate::compare::Explained, indent: &str) {
    out.push_str(&format!("{indent}{}\n", e.summary));
    for d in &e.details {
        out.push_str(&format!("{indent}  {d}\n"));
    }
    if let Some(report) = &e.diffoscope {
        out.push_str(&format!("{indent}diffoscope:\n"));
        for line in report.lines() {
            out.push_str(&format!("{indent}  {line}\n"));
        }
    }
}
