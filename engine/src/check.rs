//! `repro check`: run each step several times under controlled variations
//! and name the setting a step secretly depends on, before an auditor finds
//! out.
//!
//! For each step, in dependency order, on the inputs its dependencies
//! produced in their baseline run:
//!
//! 1. the baseline twice, over two seconds apart: if the two differ, the
//!    step depends on the wall-clock time (or on randomness nobody seeded),
//!    and no other variation can be judged against it;
//! 2. bisection over the variations: each half of them applied at once; a
//!    half that changes the output is split again until single causes
//!    remain (a half that changes nothing is cleared whole). If no half
//!    changes anything, the step is stable.
//!
//! The halves are not all knobs at once on purpose: some variations mask
//! others (one visible CPU caps the thread count that the thread knob
//! raises), so the thread and CPU knobs sit in different halves.
//!
//! Nothing of these runs enters the action cache or a record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use repro_sandbox::{StepSpec, Variation};
use repro_store::{StepKey, TreeDigest};
use serde::Serialize;

use crate::compare::{diff_trees, CompareOptions};
use crate::engine::{Engine, InputSource, Plan, PlannedStep, StepStatus};

/// One thing `repro check` changes on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    /// `PYTHONHASHSEED`.
    HashSeed,
    /// OMP / MKL / OpenBLAS / NumExpr / VecLib thread counts.
    Threads,
    /// `LC_ALL` and `LANG`.
    Locale,
    /// `TZ`.
    TimeZone,
    /// The hostname.
    Hostname,
    /// The uid and gid.
    Uid,
    /// The umask.
    Umask,
    /// Where inputs and outputs are mounted.
    MountPath,
    /// The order in which directory entries of the inputs are listed.
    ListingOrder,
    /// How many CPUs the step may use.
    Cpus,
}

/// Every knob, in the order they are reported.
pub const KNOBS: [Knob; 10] = [
    Knob::HashSeed,
    Knob::Threads,
    Knob::Locale,
    Knob::TimeZone,
    Knob::Hostname,
    Knob::Uid,
    Knob::Umask,
    Knob::MountPath,
    Knob::ListingOrder,
    Knob::Cpus,
];

impl Knob {
    /// What a person reads.
    pub fn describe(self) -> &'static str {
        match self {
            Knob::HashSeed => "PYTHONHASHSEED",
            Knob::Threads => "thread count (OMP/MKL/OpenBLAS)",
            Knob::Locale => "locale (LC_ALL, LANG)",
            Knob::TimeZone => "time zone (TZ)",
            Knob::Hostname => "hostname",
            Knob::Uid => "uid",
            Knob::Umask => "umask",
            Knob::MountPath => "mount path of inputs and outputs",
            Knob::ListingOrder => "directory listing order of the inputs",
            Knob::Cpus => "number of visible CPUs",
        }
    }
}

/// The name of the wall-clock cause (found by running the baseline twice).
pub const WALL_CLOCK: &str = "wall-clock time (or unseeded randomness)";

const ALT_ROOT: &str = "/repro-check";

/// The pause between the end of the first baseline and the start of the
/// second.
const BASELINE_GAP: Duration = Duration::from_millis(2100);

/// Apply `knobs` to a step's spec and sandbox variation.
fn apply(knobs: &BTreeSet<Knob>, spec: &mut StepSpec, variation: &mut Variation) {
    let bump = |spec: &mut StepSpec, name: &str, default: u64| {
        let now: u64 = spec
            .env
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        spec.env.insert(name.to_string(), (now + 1).to_string());
    };
    for k in knobs {
        match k {
            Knob::HashSeed => bump(spec, "PYTHONHASHSEED", 0),
            Knob::Threads => {
                for v in [
                    "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS",
                ] {
                    bump(spec, v, 1);
                }
            }
            Knob::Locale => {
                spec.env.insert("LC_ALL".into(), "C".into());
                spec.env.insert("LANG".into(), "C".into());
            }
            Knob::TimeZone => {
                spec.env.insert("TZ".into(), "EST5EDT".into());
            }
            Knob::Hostname => variation.hostname = Some("repro-check".into()),
            Knob::Uid => variation.uid = Some(1000),
            Knob::Umask => variation.umask = Some(0o077),
            Knob::MountPath => {
                variation.mount_root = Some(ALT_ROOT.into());
                let swap = |s: &str| {
                    s.replace("/repro/in", "/repro-check/in")
                        .replace("/repro/out", "/repro-check/out")
                };
                spec.argv = spec.argv.iter().map(|a| swap(a)).collect();
                for v in spec.env.values_mut() {
                    *v = swap(v);
                }
            }
            Knob::ListingOrder => variation.reverse_listing = true,
            Knob::Cpus => variation.cpus = Some(1),
        }
    }
}

/// What a check found for one output file.
#[derive(Debug, Clone, Serialize)]
pub struct UnstableFile {
    /// The path inside the step's outputs.
    pub path: String,
    /// `metadata only`, `order only`, `numeric`, `unknown`, or `absent`.
    pub class: String,
    /// One line on what differs.
    pub summary: String,
    /// Lines for a person on what differs inside the file (for a model
    /// file, one per tensor that differs); empty when the format says no
    /// more than the summary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// What a check found for one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepCheck {
    /// The step.
    pub step: String,
    /// Whether every output came out the same under every variation.
    pub stable: bool,
    /// What the output depends on (empty when stable).
    pub causes: Vec<String>,
    /// The outputs that changed, and how.
    pub files: Vec<UnstableFile>,
    /// Sandbox runs spent on the step.
    pub runs: usize,
    /// Set when the step could not be checked (its baseline failed, or a
    /// dependency's did).
    pub error: Option<String>,
}

/// The report of `repro check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `name@version`.
    pub model: String,
    /// Every step.
    pub steps: Vec<StepCheck>,
    /// Whether every step is stable.
    pub stable: bool,
}

struct Runner<'a> {
    engine: &'a Arc<Engine>,
    step: &'a PlannedStep,
    inputs: BTreeMap<String, TreeDigest>,
    key: StepKey,
    runs: usize,
}

impl Runner<'_> {
    /// Run with `knobs` changed; the output tree, or why the step failed.
    async fn run(
        &mut self,
        knobs: &BTreeSet<Knob>,
    ) -> Result<std::result::Result<TreeDigest, String>> {
        self.runs += 1;
        let knobs = knobs.clone();
        let adjust =
            move |spec: &mut StepSpec, variation: &mut Variation| apply(&knobs, spec, variation);
        let r = self
            .engine
            .execute(self.step, self.inputs.clone(), self.key, false, &adjust)
            .await?;
        Ok(match (r.status, r.output) {
            (StepStatus::Ran, Some(o)) => Ok(o),
            _ => Err(r.reason.unwrap_or_else(|| "failed".into())),
        })
    }
}

/// Check every step of `plan`.
pub async fn check(engine: &Arc<Engine>, plan: &Plan, model: String) -> Result<CheckReport> {
    let store = engine.store();
    let mut outputs: BTreeMap<String, TreeDigest> = BTreeMap::new();
    let mut steps = Vec::new();
    for name in plan.graph.topo_order() {
        let step = &plan.steps[name];
        let mut inputs = BTreeMap::new();
        let mut missing = None;
        for (mount, src) in &step.inputs {
            match src {
                InputSource::Tree(t) => {
                    inputs.insert(mount.clone(), *t);
                }
                InputSource::Step(s) => match outputs.get(s) {
                    Some(t) => {
                        inputs.insert(mount.clone(), *t);
                    }
                    None => missing = Some(s.clone()),
                },
            }
        }
        if let Some(dep) = missing {
            steps.push(StepCheck {
                step: name.to_string(),
                stable: false,
                causes: vec![],
                files: vec![],
                runs: 0,
                error: Some(format!("not checked: `{dep}` failed")),
            });
            continue;
        }
        let key = crate::engine::step_key(step, &inputs);
        let mut r = Runner {
            engine,
            step,
            inputs,
            key,
            runs: 0,
        };
        let none = BTreeSet::new();
        let base = match r.run(&none).await? {
            Ok(t) => t,
            Err(why) => {
                steps.push(StepCheck {
                    step: name.to_string(),
                    stable: false,
                    causes: vec![],
                    files: vec![],
                    runs: r.runs,
                    error: Some(format!("the step fails without any variation: {why}")),
                });
                continue;
            }
        };
        outputs.insert(name.to_string(), base);
        // The second baseline starts over two seconds after the first one
        // ended (zip entries store times in two-second steps), so whatever
        // either run read from the clock, at any point of the run, differs
        // by more than two seconds. Counting from the first run's start is
        // not enough: its time may go to preparing the image's root before
        // the step reads the clock at its very end.
        tokio::time::sleep(BASELINE_GAP).await;
        let mut causes = Vec::new();
        let changed = match r.run(&none).await? {
            Ok(t) if t == base => {
                let all: BTreeSet<Knob> = KNOBS.into_iter().collect();
                let (groups, example) = bisect(&mut r, base, all).await?;
                for group in &groups {
                    causes.push(
                        group
                            .iter()
                            .map(|k| k.describe())
                            .collect::<Vec<_>>()
                            .join(" + "),
                    );
                }
                example
            }
            other => {
                causes.push(WALL_CLOCK.to_string());
                Some(other)
            }
        };
        let files = match &changed {
            None => vec![],
            Some(Ok(t)) => diff_trees(&store, &base, t, CompareOptions::default())?
                .into_iter()
                .map(|f| {
                    let (class, summary, details) = match f.explanation {
                        Some(e) => (e.class, e.summary, e.details),
                        None if f.actual.is_none() => (
                            "absent".into(),
                            "not written in the varied run".into(),
                            vec![],
                        ),
                        None if f.expected.is_none() => (
                            "absent".into(),
                            "written only in the varied run".into(),
                            vec![],
                        ),
                        None => ("unknown".into(), "differs".into(), vec![]),
                    };
                    UnstableFile {
                        path: f.path,
                        class,
                        summary,
                        details,
                    }
                })
                .collect(),
            Some(Err(why)) => vec![UnstableFile {
                path: String::new(),
                class: "failure".into(),
                summary: format!("the step failed under the variation: {why}"),
                details: vec![],
            }],
        };
        steps.push(StepCheck {
            step: name.to_string(),
            stable: changed.is_none(),
            causes,
            files,
            runs: r.runs,
            error: None,
        });
    }
    let stable = steps.iter().all(|s| s.stable);
    Ok(CheckReport {
        model,
        steps,
        stable,
    })
}

/// Group testing over `knobs`: returns the smallest groups that change the
/// output (none when it is stable), and one varied result that differs.
async fn bisect(
    r: &mut Runner<'_>,
    base: TreeDigest,
    knobs: BTreeSet<Knob>,
) -> Result<(
    Vec<Vec<Knob>>,
    Option<std::result::Result<TreeDigest, String>>,
)> {
    let mut found = Vec::new();
    let mut example = None;
    // The top level is split without a run of the whole set: a whole set
    // that changes nothing does not prove its halves change nothing.
    let mut queue = vec![(knobs, true)];
    while let Some((set, top)) = queue.pop() {
        if set.len() == 1 {
            found.push(set.into_iter().collect());
            continue;
        }
        let all: Vec<Knob> = set.iter().copied().collect();
        let (a, b) = all.split_at(all.len() / 2);
        let (a, b): (BTreeSet<Knob>, BTreeSet<Knob>) =
            (a.iter().copied().collect(), b.iter().copied().collect());
        let ra = r.run(&a).await?;
        let rb = r.run(&b).await?;
        let (da, db) = (ra != Ok(base), rb != Ok(base));
        if da {
            example.get_or_insert(ra);
            queue.push((a, false));
        }
        if db {
            example.get_or_insert(rb);
            queue.push((b, false));
        }
        if !da && !db && !top {
            // Only together do they change the output.
            found.push(set.into_iter().collect());
        }
    }
    found.sort();
    Ok((found, example))
}

/// The report as a table.
pub fn render(report: &CheckReport) -> String {
    let mut rows = vec![[
        "step".to_string(),
        "result".into(),
        "depends on".into(),
        "what changes".into(),
    ]];
    for s in &report.steps {
        let result = if let Some(e) = &s.error {
            rows.push([s.step.clone(), "ERROR".into(), String::new(), e.clone()]);
            continue;
        } else if s.stable {
            "stable"
        } else {
            "UNSTABLE"
        };
        let cause = s.causes.join("; ");
        if s.files.is_empty() {
            rows.push([s.step.clone(), result.into(), cause.clone(), String::new()]);
        }
        for (i, f) in s.files.iter().enumerate() {
            let what = if f.path.is_empty() {
                f.summary.clone()
            } else {
                format!("`{}`: {}", f.path, f.summary)
            };
            if i == 0 {
                rows.push([s.step.clone(), result.into(), cause.clone(), what]);
            } else {
                rows.push([String::new(), String::new(), String::new(), what]);
            }
            for d in &f.details {
                rows.push([
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("  {d}"),
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    let unstable = report.steps.iter().filter(|s| !s.stable).count();
    if report.stable {
        out.push_str(&format!(
            "{}: every step is stable under every variation\n",
            report.model
        ));
    } else {
        out.push_str(&format!(
            "{}: {unstable} of {} steps are unstable\n",
            report.model,
            report.steps.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(details: Vec<String>) -> CheckReport {
        CheckReport {
            model: "digits@1.0.0".into(),
            steps: vec![StepCheck {
                step: "train".into(),
                stable: false,
                causes: vec!["CPU count".into()],
                files: vec![UnstableFile {
                    path: "model.pt".into(),
                    class: "numeric".into(),
                    summary: "numeric: 1 of 9 tensors differ (fc2.weight)".into(),
                    details,
                }],
                runs: 2,
                error: None,
            }],
            stable: false,
        }
    }

    #[test]
    fn the_table_lists_each_detail_under_its_file() {
        let text = render(&report(vec![
            "fc2.weight: float32 [10, 32]: 3 of 320 values differ".into(),
        ]));
        let lines: Vec<&str> = text.lines().collect();
        let file = lines
            .iter()
            .position(|l| l.contains("`model.pt`: numeric"))
            .expect(&text);
        assert!(
            lines[file + 1].ends_with("  fc2.weight: float32 [10, 32]: 3 of 320 values differ"),
            "{text}"
        );
        assert!(lines[file + 1].starts_with(' '), "{text}");
    }

    #[test]
    fn json_carries_details_only_when_there_are_some() {
        let with = serde_json::to_value(report(vec!["fc2.weight: differs".into()])).unwrap();
        assert_eq!(
            with["steps"][0]["files"][0]["details"],
            serde_json::json!(["fc2.weight: differs"])
        );
        let without = serde_json::to_value(report(vec![])).unwrap();
        assert!(without["steps"][0]["files"][0].get("details").is_none());
    }
}
