//! `repro card`: a model card written from the evidence in the store.
//!
//! The card of `name@version` is put together from:
//! - the recorded recipe's `[model]` table (name, version, owner, purpose,
//!   intended use, limitations);
//! - the data snapshots of the record (digest, description, source system);
//! - the data-validation report: every output file named `validation.json`
//!   (overall result, each check, the other values it states);
//! - the training configuration as recorded: the recipe's `[params]` (and
//!   which steps they are passed to), its `[build]` settings, each step's
//!   command and environment with the parameters substituted, and what the
//!   steps' JSON reports say of the algorithm (`estimator` or `algorithm`),
//!   the `hyperparameters` and the `split` ([`Training`]); what none of them
//!   holds is shown as "not recorded";
//! - every output file named `metrics.json` (overall metrics, per-slice
//!   tables, gaps between slices, other values, and the confidence
//!   intervals it holds: [`Interval`]);
//! - the reproducibility evidence: the record's digest and signer, and each
//!   verification attestation (verifier identity, result, platform, time);
//! - the registry: the version's stage ([`crate::registry::stage_of`]) and
//!   its promotion history ([`crate::registry::history`]) with the checks
//!   each promotion's gate made;
//! - the approvals under `v1/refs/approvals/<record hex>/`, each judged by
//!   the rule `repro promote` counts them by
//!   ([`crate::approvals::judge`]), and a sign-off block listing the ones
//!   that count;
//! - the lineage graph (data -> steps -> output files).
//!
//! The card holds no time of its own making: its date is the latest time
//! in the evidence it shows and its revision counts that evidence
//! ([`DocumentInfo`]), so the same evidence gives the same Markdown and
//! HTML, byte for byte. The Markdown is also kept in the store as a blob,
//! named by `v1/refs/cards/<record hex>` (which holds the blob digest), so
//! policy checks can see that a card exists.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use repro_store::{BlobDigest, RecordDigest, Store};
use serde::Serialize;

use crate::lineage::{self, VersionGraph};
use repro_evidence::exit::CannotVerify;
use repro_evidence::record::{open_record, resolve_record_ref};

/// The file name of the Markdown card.
pub const MARKDOWN_FILE: &str = "model-card.md";
/// The file name of the HTML card.
pub const HTML_FILE: &str = "model-card.html";

/// The `[model]` table of the recorded recipe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name.
    pub name: String,
    /// The version.
    pub version: String,
    /// Who answers for it.
    pub owner: Option<String>,
    /// What it is for.
    pub purpose: Option<String>,
    /// The uses it is validated for.
    pub intended_use: Option<String>,
    /// Known limitations.
    pub limitations: Option<String>,
}

/// One `metrics.json` output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricsFile {
    /// The step that wrote it.
    pub step: String,
    /// Its path in the step's outputs.
    pub path: String,
    /// Its blob digest.
    pub digest: String,
    /// Its content.
    pub value: serde_json::Value,
    /// The confidence intervals it holds ([`intervals`]).
    pub intervals: Vec<Interval>,
}

/// A confidence interval as a metrics file states it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Interval {
    /// Where in the file: the dotted path of the interval.
    pub key: String,
    /// The lower bound, as written (`n/a` for `null`).
    pub lower: String,
    /// The upper bound, as written.
    pub upper: String,
    /// The other scalar values beside the bounds (level, method, ...), as
    /// `key=value` joined by `, `; empty when there are none.
    pub about: String,
}

/// A value and where in the evidence it was read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recorded {
    /// The name of the value (a dotted path in a JSON report, or a
    /// parameter or setting name).
    pub key: String,
    /// The value, as written.
    pub value: String,
    /// Where it is recorded: `recipe [params] (passed to ...)`, `recipe
    /// [build]`, or `<step>/<file>`.
    pub source: String,
}

/// One `[params]` entry of the recorded recipe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its value, as substituted into commands.
    pub value: String,
    /// The steps whose `argv` or `env` use it (`${params.NAME}`).
    pub used_by: Vec<String>,
}

/// One step's command as the recorded recipe gives it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepCommand {
    /// The step.
    pub step: String,
    /// Its toolchain.
    pub toolchain: String,
    /// `argv` with the parameters substituted.
    pub argv: Vec<String>,
    /// `env` with the parameters substituted, by name.
    pub env: Vec<(String, String)>,
}

/// How the model was trained, as far as the evidence says.
///
/// The algorithm, hyperparameters and split are read from the steps' JSON
/// output files (every `*.json` output other than `metrics.json` and
/// `validation.json`, up to [`MAX_REPORT_BYTES`]): a string `estimator` or
/// `algorithm` at the top level, a `hyperparameters` object, a `split`
/// object. Seeds are the parameters whose name contains `seed` and the
/// report values named `seed`, `*_seed` or `random_state`. The split also
/// takes the parameters named like a held-out share (`split`, `holdout`,
/// `test_*`, `*_test`, `validation_fraction`, ...). Nothing is inferred
/// beyond that: an empty list is shown as "not recorded".
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Training {
    /// The algorithm (estimator), when a report names it.
    pub algorithm: Option<Recorded>,
    /// The hyperparameters the reports state.
    pub hyperparameters: Vec<Recorded>,
    /// How the data was split.
    pub split: Vec<Recorded>,
    /// The seeds.
    pub seed: Vec<Recorded>,
    /// Every recipe parameter.
    pub params: Vec<Param>,
    /// The recipe's `[build]` settings; the source says whether the recipe
    /// wrote them or they are repro's defaults.
    pub build: Vec<Recorded>,
    /// Each step's command.
    pub steps: Vec<StepCommand>,
}

/// Output JSON reports larger than this are not read for [`Training`].
pub const MAX_REPORT_BYTES: u64 = 1 << 20;

/// One check of a data-validation report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ValidationCheck {
    /// The check's name.
    pub name: String,
    /// `passed`, `FAILED`, or `not stated`.
    pub result: String,
    /// What it found.
    pub detail: String,
}

/// A data-validation report (an output file named `validation.json`).
///
/// Read as `validate.py` of the example writes it: `passed` (a boolean),
/// `checks` (a list of `{name, passed, detail}`) and other values, whose
/// scalar leaves are listed except those under an object of more than
/// [`MAX_SUMMARY_ENTRIES`] entries (named in [`Validation::omitted`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Validation {
    /// The step that wrote it.
    pub step: String,
    /// Its path in the step's outputs.
    pub path: String,
    /// Its blob digest.
    pub digest: String,
    /// The overall result: `passed`, `FAILED`, or `not stated`.
    pub result: String,
    /// Each check.
    pub checks: Vec<ValidationCheck>,
    /// The other scalar values, `(dotted key, value)`.
    pub values: Vec<(String, String)>,
    /// Objects left out of [`Validation::values`], with their entry count.
    pub omitted: Vec<String>,
    /// Why the file could not be read as a report (not JSON), if so.
    pub problem: Option<String>,
}

/// Objects of a validation report with more entries than this are
/// summarised by their size.
pub const MAX_SUMMARY_ENTRIES: usize = 12;

/// The document header: when and which revision, derived from the evidence.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct DocumentInfo {
    /// The latest time in the evidence shown (RFC 3339): the record's
    /// `finishedOn`, the attestations, the approvals, and the version's
    /// history entries. `None` when none of them parses as a time.
    pub date: Option<String>,
    /// What that latest time is the time of.
    pub date_of: String,
    /// How many pieces of evidence the card shows: 1 (the record) + the
    /// attestations + the approval files + the version's history entries.
    /// New evidence raises it; the same evidence keeps it.
    pub revision: usize,
    /// `sha256:` of the card's content (everything but this header) as
    /// JSON: two cards with the same revision and a different fingerprint
    /// differ in what they show (e.g. an approver revoked since).
    pub fingerprint: String,
}

/// A verification attestation, as the card shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reproduction {
    /// `PASSED` or `FAILED`.
    pub result: String,
    /// Who verified.
    pub verifier: String,
    /// When (RFC 3339, as the attestation says).
    pub time: String,
    /// CPU model, kernel and backend of the verifier's machine.
    pub platform: String,
    /// Whether the signature checks out with a key in the store.
    pub signature_ok: bool,
    /// `counts`, or why the reproduction does not count.
    pub status: String,
    /// Whether it counts as an independent reproduction (as `repro
    /// promote` would count it: [`crate::registry::reproductions`]).
    pub counts: bool,
    /// The attestation's digest.
    pub attestation: String,
}

/// An approval, as the card shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Approval {
    /// The role.
    pub role: String,
    /// Who, as `Name <email> (keyid)`.
    pub approver: String,
    /// The approver's name as the approval states it (the e-mail or the
    /// key id when it states none).
    pub name: String,
    /// The approver's key id.
    pub keyid: String,
    /// When.
    pub time: String,
    /// Why.
    pub reason: String,
    /// `counts`, or why the approval does not count.
    pub status: String,
    /// Whether it counts (as `repro promote` would count it).
    pub valid: bool,
}

/// Everything a card shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Card {
    /// The model metadata.
    pub model: ModelInfo,
    /// The record's digest.
    pub record: String,
    /// The key that signed the record.
    pub built_by: String,
    /// The recipe digest.
    pub recipe: String,
    /// Evaluation outputs.
    pub metrics: Vec<MetricsFile>,
    /// Verification attestations.
    pub reproductions: Vec<Reproduction>,
    /// Approvals (empty when there are none).
    pub approvals: Vec<Approval>,
    /// Problems met while reading approvals (unreadable files, wrong types).
    pub approval_problems: Vec<String>,
    /// The lineage graph of the version.
    pub lineage: VersionGraph,
    /// The data-validation reports.
    pub validation: Vec<Validation>,
    /// The training configuration as recorded.
    pub training: Training,
    /// The version's stage in the registry (`candidate` when it has none).
    pub stage: String,
    /// The record the stage ref holds (`None` for a candidate).
    pub stage_record: Option<String>,
    /// The registry history of this version, oldest first.
    pub history: Vec<crate::registry::HistoryEntry>,
    /// Date, revision and fingerprint.
    pub document: DocumentInfo,
}

/// Gather the evidence of `what` (`name@version` or a record digest).
pub fn gather(store: &Store, what: &str) -> Result<Card> {
    let record = resolve_record_ref(store, what)?;
    let opened = open_record(store, &record.to_string(), &[])?;
    let st = &opened.statement;
    let ext = &st.predicate.build_definition.external_parameters;
    let recipe_digest: BlobDigest = ext.recipe_digest;
    let text = String::from_utf8(store.read_blob(&recipe_digest)?)
        .map_err(|_| CannotVerify(format!("the recipe {recipe_digest} is not UTF-8")))?;
    let recipe = repro_recipes::parse_str(&PathBuf::from(&ext.recipe), &text)
        .map_err(|e| CannotVerify(format!("the recorded recipe does not parse any more: {e}")))?;
    let m = &recipe.model;
    let model = ModelInfo {
        // The record's: a build may have been given its version
        // (`--version`) or filled in a template of the recipe's.
        name: ext.name.clone(),
        version: ext.version.clone(),
        owner: m.owner.clone(),
        purpose: m.purpose.clone(),
        intended_use: m.intended_use.clone(),
        limitations: m.limitations.clone(),
    };
    let lineage = lineage::graph(store, &record)?;

    let mut metrics = Vec::new();
    let mut validation = Vec::new();
    let mut reports = Vec::new();
    for step in &lineage.steps {
        for f in &step.files {
            let base = f.path.rsplit('/').next().unwrap_or(&f.path);
            if base == "validation.json" {
                validation.push(read_validation(store, &step.name, &f.path, &f.digest)?);
                continue;
            }
            if base != "metrics.json" {
                if base.ends_with(".json") {
                    if let Some(v) = read_report(store, &step.name, &f.path, &f.digest)? {
                        reports.push((format!("{}/{}", step.name, f.path), v));
                    }
                }
                continue;
            }
            let d: BlobDigest = f.digest.parse()?;
            let bytes = store
                .read_blob(&d)
                .with_context(|| format!("reading `{}/{}`", step.name, f.path))?;
            let value = serde_json::from_slice(&bytes).map_err(|e| {
                CannotVerify(format!("`{}/{}` ({d}) is not JSON: {e}", step.name, f.path))
            })?;
            metrics.push(MetricsFile {
                step: step.name.clone(),
                path: f.path.clone(),
                digest: f.digest.clone(),
                intervals: intervals(&value),
                value,
            });
        }
    }

    // Each judged by the one rule promotion counts reproductions by.
    let judged: std::collections::BTreeMap<String, Option<String>> =
        crate::registry::reproductions(store, &record, &opened.signed_by)?
            .into_iter()
            .map(|r| (r.attestation, r.why_not))
            .collect();
    let mut reproductions: Vec<Reproduction> = repro_evidence::attest::list(store, &record)?
        .into_iter()
        .map(|c| {
            let p = &c.statement.predicate;
            let d = &c.details;
            let why_not = judged
                .get(&c.digest.to_string())
                .cloned()
                .unwrap_or_else(|| Some("it was not judged".to_string()));
            Reproduction {
                result: p.verification_result.clone(),
                verifier: d.identity.to_string(),
                time: p.time_verified.clone(),
                platform: format!(
                    "{}, {} {}, kernel {}, {}",
                    d.platform.cpu_model,
                    d.platform.os,
                    d.platform.arch,
                    d.platform.kernel,
                    d.platform.backend
                ),
                signature_ok: c.signature.is_ok(),
                status: match &why_not {
                    None => "counts".to_string(),
                    Some(w) => format!("DOES NOT COUNT: {w}"),
                },
                counts: why_not.is_none(),
                attestation: c.digest.to_string(),
            }
        })
        .collect();
    reproductions.sort_by(|a, b| (&a.time, &a.attestation).cmp(&(&b.time, &b.attestation)));

    let (approvals, approval_problems) = approvals(store, &record, &opened.signed_by)?;
    let training = training(&recipe, &text, &reports);

    let version = repro_evidence::VersionRef {
        name: model.name.clone(),
        version: model.version.clone(),
    };
    let (stage, stage_record) = crate::registry::stage_of(store, &version)?;
    let history: Vec<crate::registry::HistoryEntry> = crate::registry::history(store, &model.name)?
        .into_iter()
        .filter(|h| h.version == model.version)
        .collect();

    let mut card = Card {
        model,
        record: record.to_string(),
        built_by: opened.signed_by,
        recipe: recipe_digest.to_string(),
        metrics,
        reproductions,
        approvals,
        approval_problems,
        lineage,
        validation,
        training,
        stage: stage.as_str().to_string(),
        stage_record: stage_record.map(|r| r.to_string()),
        history,
        document: DocumentInfo::default(),
    };
    card.document = document_info(&card, &st.predicate.run_details.metadata.finished_on)?;
    Ok(card)
}

/// The document header of `card` (whose `document` is ignored): the
/// latest evidence time, the evidence count and the content fingerprint.
fn document_info(card: &Card, finished_on: &str) -> Result<DocumentInfo> {
    let mut times: Vec<(&str, String)> =
        vec![(finished_on, "the build (record finishedOn)".into())];
    for r in &card.reproductions {
        times.push((&r.time, format!("the verification by {}", r.verifier)));
    }
    for a in &card.approvals {
        times.push((
            &a.time,
            format!("the `{}` approval by {}", a.role, a.approver),
        ));
    }
    for h in &card.history {
        times.push((&h.time, format!("the registry `{}` to {}", h.action, h.to)));
    }
    let latest = times
        .into_iter()
        .filter_map(|(t, what)| repro_evidence::clock::parse(t).map(|p| (p, what)))
        // The first of equal times: max_by_key keeps the last, so reverse.
        .rev()
        .max_by_key(|(p, _)| *p);
    let mut content = card.clone();
    content.document = DocumentInfo::default();
    let json = serde_json::to_vec(&content).context("serializing the card")?;
    Ok(DocumentInfo {
        date: latest
            .as_ref()
            .map(|(p, _)| repro_evidence::clock::format(*p)),
        date_of: latest.map(|(_, what)| what).unwrap_or_default(),
        revision: 1
            + card.reproductions.len()
            + card.approvals.len()
            + card.approval_problems.len()
            + card.history.len(),
        fingerprint: repro_store::Hash::of(&json).to_string(),
    })
}

/// Read output `step/path` (blob `digest`) as a JSON object for
/// [`Training`]: `None` when it is larger than [`MAX_REPORT_BYTES`] or not
/// a JSON object. A damaged blob is an error, as for the metrics.
fn read_report(
    store: &Store,
    step: &str,
    path: &str,
    digest: &str,
) -> Result<Option<serde_json::Value>> {
    let d: BlobDigest = digest.parse()?;
    if let Ok(meta) = std::fs::metadata(store.blob_path(&d)) {
        if meta.len() > MAX_REPORT_BYTES {
            return Ok(None);
        }
    }
    let bytes = store
        .read_blob(&d)
        .with_context(|| format!("reading `{step}/{path}`"))?;
    Ok(serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(|v| v.is_object()))
}

/// Read the validation report `step/path` (blob `digest`).
fn read_validation(store: &Store, step: &str, path: &str, digest: &str) -> Result<Validation> {
    let d: BlobDigest = digest.parse()?;
    let bytes = store
        .read_blob(&d)
        .with_context(|| format!("reading `{step}/{path}`"))?;
    let mut out = Validation {
        step: step.to_string(),
        path: path.to_string(),
        digest: digest.to_string(),
        result: "not stated".into(),
        checks: Vec::new(),
        values: Vec::new(),
        omitted: Vec::new(),
        problem: None,
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            out.problem = Some(format!("not JSON: {e}"));
            return Ok(out);
        }
    };
    let Some(obj) = value.as_object() else {
        out.problem = Some("not a JSON object".into());
        return Ok(out);
    };
    let verdict = |v: Option<&serde_json::Value>| match v.and_then(|v| v.as_bool()) {
        Some(true) => "passed".to_string(),
        Some(false) => "FAILED".to_string(),
        None => "not stated".to_string(),
    };
    out.result = verdict(obj.get("passed"));
    if let Some(serde_json::Value::Array(checks)) = obj.get("checks") {
        for (i, c) in checks.iter().enumerate() {
            out.checks.push(ValidationCheck {
                name: c
                    .get("name")
                    .map(cell)
                    .unwrap_or_else(|| format!("check {}", i + 1)),
                result: verdict(c.get("passed")),
                detail: c.get("detail").map(cell).unwrap_or_default(),
            });
        }
    }
    for (k, x) in obj {
        if k == "passed" || k == "checks" {
            continue;
        }
        summary_leaves(k, x, &mut out.values, &mut out.omitted);
    }
    Ok(out)
}

/// Like [`leaves`], but an object of more than [`MAX_SUMMARY_ENTRIES`]
/// entries is named in `omitted` instead of listed.
fn summary_leaves(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut Vec<(String, String)>,
    omitted: &mut Vec<String>,
) {
    match v {
        serde_json::Value::Object(m) if m.len() > MAX_SUMMARY_ENTRIES => {
            omitted.push(format!("{prefix} ({} entries)", m.len()));
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                summary_leaves(&format!("{prefix}.{k}"), x, out, omitted);
            }
        }
        serde_json::Value::Array(a) => omitted.push(format!("{prefix} (a list of {})", a.len())),
        other => out.push((prefix.to_string(), cell(other))),
    }
}

/// Whether parameter `name` says how the data is split.
fn is_split_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("split")
        || n.contains("holdout")
        || n.starts_with("test_")
        || n.ends_with("_test")
        || n.starts_with("validation_")
        || n.starts_with("val_")
        || n.starts_with("train_")
}

/// Whether a report value named `key` (its last dotted part) is a seed.
fn is_seed_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    last == "seed" || last.ends_with("_seed") || last == "random_state"
}

/// The training configuration from the recorded recipe (`recipe`, whose
/// text is `text`) and the steps' JSON reports (`(step/path, content)`).
fn training(
    recipe: &repro_recipes::Recipe,
    text: &str,
    reports: &[(String, serde_json::Value)],
) -> Training {
    let mut t = Training::default();
    for (name, value) in &recipe.params {
        let reference = format!("${{params.{name}}}");
        let used_by: Vec<String> = recipe
            .steps
            .iter()
            .filter(|s| {
                s.argv.iter().any(|a| a.contains(&reference))
                    || s.env.values().any(|v| v.contains(&reference))
            })
            .map(|s| s.name.clone())
            .collect();
        let source = if used_by.is_empty() {
            "recipe [params] (passed to no step)".to_string()
        } else {
            format!("recipe [params], passed to {}", used_by.join(", "))
        };
        let value = value.to_string();
        if name.to_ascii_lowercase().contains("seed") {
            t.seed.push(Recorded {
                key: name.clone(),
                value: value.clone(),
                source: source.clone(),
            });
        } else if is_split_param(name) {
            t.split.push(Recorded {
                key: name.clone(),
                value: value.clone(),
                source,
            });
        }
        t.params.push(Param {
            name: name.clone(),
            value,
            used_by,
        });
    }
    // Which `[build]` keys the recipe wrote (the others are defaults).
    let written: std::collections::BTreeSet<String> = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("build").and_then(|b| b.as_table()).cloned())
        .map(|b| b.keys().cloned().collect())
        .unwrap_or_default();
    let b = &recipe.build;
    for (key, value) in [
        ("source_date_epoch", b.source_date_epoch.to_string()),
        ("python_hash_seed", b.python_hash_seed.to_string()),
        ("threads", b.threads.to_string()),
    ] {
        t.build.push(Recorded {
            key: key.into(),
            value,
            source: if written.contains(key) {
                "recipe [build]".into()
            } else {
                "repro's default (not written in the recipe)".into()
            },
        });
    }
    for s in &recipe.steps {
        let (argv, env) = s
            .expand(recipe)
            .unwrap_or_else(|_| (s.argv.clone(), s.env.clone()));
        t.steps.push(StepCommand {
            step: s.name.clone(),
            toolchain: s.toolchain.clone(),
            argv,
            env: env.into_iter().collect(),
        });
    }
    for (source, v) in reports {
        let rec = |key: String, value: String| Recorded {
            key,
            value,
            source: source.clone(),
        };
        if t.algorithm.is_none() {
            for key in ["estimator", "algorithm"] {
                if let Some(serde_json::Value::String(a)) = v.get(key) {
                    t.algorithm = Some(rec(key.into(), a.clone()));
                    break;
                }
            }
        }
        if let Some(h) = v.get("hyperparameters") {
            let mut ls = Vec::new();
            leaves("", h, &mut ls);
            for (k, x) in ls {
                if is_seed_key(&k) {
                    t.seed.push(rec(format!("hyperparameters.{k}"), x.clone()));
                }
                t.hyperparameters.push(rec(k, x));
            }
        }
        if let Some(sp) = v.get("split") {
            let mut ls = Vec::new();
            leaves("split", sp, &mut ls);
            for (k, x) in ls {
                if is_seed_key(&k) {
                    t.seed.push(rec(k.clone(), x.clone()));
                }
                t.split.push(rec(k, x));
            }
        }
    }
    t
}

/// The confidence intervals in a metrics file: every object holding
/// `lower` and `upper` (or `low` and `high`, or `ci_lower` and `ci_upper`)
/// as numbers or `null`, and every list of two numbers (or `null`s) named
/// `ci`, `*_ci`, `ci_*` or containing `interval` or `confidence`, or lying
/// anywhere under such a key. Nothing is computed: a file without them has
/// none.
pub fn intervals(v: &serde_json::Value) -> Vec<Interval> {
    fn bound(v: Option<&serde_json::Value>) -> Option<String> {
        match v {
            Some(x @ (serde_json::Value::Number(_) | serde_json::Value::Null)) => Some(cell(x)),
            _ => None,
        }
    }
    fn ci_name(key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        k == "ci"
            || k.ends_with("_ci")
            || k.starts_with("ci_")
            || k.contains("interval")
            || k.contains("confidence")
    }
    // `in_ci`: under a key named as intervals (`"confidence_intervals":
    // {"auc": [lo, hi]}`), where any list of two bounds is one.
    fn walk(prefix: &str, v: &serde_json::Value, in_ci: bool, out: &mut Vec<Interval>) {
        let serde_json::Value::Object(m) = v else {
            return;
        };
        for (lo, hi) in [
            ("lower", "upper"),
            ("low", "high"),
            ("ci_lower", "ci_upper"),
        ] {
            if let (Some(l), Some(u)) = (bound(m.get(lo)), bound(m.get(hi))) {
                let about: Vec<String> = m
                    .iter()
                    .filter(|(k, x)| *k != lo && *k != hi && !x.is_object() && !x.is_array())
                    .map(|(k, x)| format!("{k}={}", cell(x)))
                    .collect();
                out.push(Interval {
                    key: prefix.to_string(),
                    lower: l,
                    upper: u,
                    about: about.join(", "),
                });
                return;
            }
        }
        for (k, x) in m {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if let serde_json::Value::Array(a) = x {
                if (in_ci || ci_name(k)) && a.len() == 2 {
                    if let (Some(l), Some(u)) = (bound(a.first()), bound(a.get(1))) {
                        out.push(Interval {
                            key,
                            lower: l,
                            upper: u,
                            about: String::new(),
                        });
                        continue;
                    }
                }
            }
            walk(&key, x, in_ci || ci_name(k), out);
        }
    }
    let mut out = Vec::new();
    walk("", v, false, &mut out);
    out
}

/// The approvals of `record` (built by key `builder`), each judged by the
/// one rule that `repro promote` applies
/// ([`crate::approvals::judge`]: signature by a registered
/// identity's key, that identity holding the role and not revoked, not the
/// builder, bound to this record): a card never calls an approval valid
/// that a promotion would not count. Files that are not approvals at all
/// are reported as problems, not errors.
pub fn approvals(
    store: &Store,
    record: &RecordDigest,
    builder: &str,
) -> Result<(Vec<Approval>, Vec<String>)> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for j in crate::approvals::list(store, record, builder)? {
        let Some(p) = j.approval else {
            problems.push(format!(
                "{}: {}",
                j.digest,
                j.why_not.as_deref().unwrap_or("unreadable")
            ));
            continue;
        };
        let status = match &j.why_not {
            None => "counts".to_string(),
            Some(why) => format!("DOES NOT COUNT: {why}"),
        };
        out.push(Approval {
            role: p.role,
            approver: p.approver.to_string(),
            name: p
                .approver
                .name
                .clone()
                .or_else(|| p.approver.email.clone())
                .unwrap_or_else(|| p.approver.keyid.clone()),
            keyid: p.approver.keyid.clone(),
            time: p.time,
            reason: p.reason,
            status,
            valid: j.counts,
        });
    }
    out.sort_by(|a, b| (&a.time, &a.role, &a.approver).cmp(&(&b.time, &b.role, &b.approver)));
    Ok((out, problems))
}

fn or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(not stated)")
}

/// A JSON value as a table cell.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "n/a".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The scalar leaves of a JSON object as `(dotted key, value)`, in key order.
/// Arrays are left out.
fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, x, out);
            }
        }
        serde_json::Value::Array(_) => {}
        other => out.push((prefix.to_string(), cell(other))),
    }
}

/// A table: header row and rows of cells.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// One section of a metrics file.
struct MetricsSection {
    title: String,
    table: Table,
}

fn key_value_table(first: &str, pairs: Vec<(String, String)>) -> Table {
    Table {
        header: vec![first.to_string(), "value".to_string()],
        rows: pairs.into_iter().map(|(k, v)| vec![k, v]).collect(),
    }
}

/// A table with one row per entry of an object of objects (slices, gaps).
fn per_entry_table(first: &str, m: &serde_json::Map<String, serde_json::Value>) -> Table {
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (name, v) in m {
        let mut ls = Vec::new();
        if v.is_object() {
            leaves("", v, &mut ls);
        } else {
            ls.push(("value".to_string(), cell(v)));
        }
        for (k, _) in &ls {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        rows.push((name.clone(), ls));
    }
    columns.sort();
    let header = std::iter::once(first.to_string())
        .chain(columns.iter().cloned())
        .collect();
    let rows = rows
        .into_iter()
        .map(|(name, ls)| {
            std::iter::once(name)
                .chain(columns.iter().map(|c| {
                    ls.iter()
                        .find(|(k, _)| k == c)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                }))
                .collect()
        })
        .collect();
    Table { header, rows }
}

/// The sections of a metrics file: overall values, the slice definition,
/// one row per slice, the gaps between slices, then any other values.
///
/// Slices are read as `evaluate.py` of the example writes them
/// (`"slices": {"feature": ..., "definition": ..., "groups": {name: metrics},
/// "gaps": {metric: {...}}}`) or as a plain `"slices": {name: metrics}`;
/// gaps may also sit at the top level (`"gaps"`).
fn metrics_sections(v: &serde_json::Value) -> Vec<MetricsSection> {
    let mut out = Vec::new();
    let Some(obj) = v.as_object() else {
        return vec![MetricsSection {
            title: "Value".into(),
            table: key_value_table("metric", vec![("value".into(), cell(v))]),
        }];
    };
    if let Some(overall) = obj.get("overall") {
        let mut ls = Vec::new();
        leaves("", overall, &mut ls);
        out.push(MetricsSection {
            title: "Overall".into(),
            table: key_value_table("metric", ls),
        });
    }
    let mut gaps = obj.get("gaps").and_then(|g| g.as_object());
    if let Some(serde_json::Value::Object(slices)) = obj.get("slices") {
        let mut groups = serde_json::Map::new();
        let mut definition = Vec::new();
        match slices.get("groups") {
            Some(serde_json::Value::Object(g)) => groups = g.clone(),
            _ => {
                for (k, x) in slices {
                    if x.is_object() && k != "gaps" {
                        groups.insert(k.clone(), x.clone());
                    }
                }
            }
        }
        for (k, x) in slices {
            if k != "groups" && k != "gaps" && !x.is_object() {
                leaves(k, x, &mut definition);
            }
        }
        if let Some(serde_json::Value::Object(g)) = slices.get("gaps") {
            gaps = Some(g);
        }
        if !definition.is_empty() {
            out.push(MetricsSection {
                title: "Slice definition".into(),
                table: key_value_table("key", definition),
            });
        }
        if !groups.is_empty() {
            out.push(MetricsSection {
                title: "Slices".into(),
                table: per_entry_table("slice", &groups),
            });
        }
    }
    if let Some(g) = gaps {
        out.push(MetricsSection {
            title: "Gaps between slices".into(),
            table: per_entry_table("metric", g),
        });
    }
    let mut other = Vec::new();
    for (k, x) in obj {
        if ["overall", "slices", "gaps"].contains(&k.as_str()) {
            continue;
        }
        leaves(k, x, &mut other);
    }
    if !other.is_empty() {
        out.push(MetricsSection {
            title: if out.is_empty() {
                "Metrics"
            } else {
                "Other values"
            }
            .into(),
            table: key_value_table("key", other),
        });
    }
    out
}

/// Escape a Markdown table cell or inline text: pipes, backslashes,
/// emphasis and link characters, HTML angle brackets, and line breaks.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escape text for HTML element content and attribute values.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A neutral document model rendered both as Markdown and as HTML.
enum Block {
    Heading(u8, String),
    Para(String),
    /// `(label, value)` pairs.
    Facts(Vec<(String, String)>),
    Table(Table),
    /// Preformatted text.
    Pre(String),
    /// The sign-off block: the approvals that count.
    SignOff(Vec<Approval>),
    /// Shown in the Markdown only.
    MarkdownOnly(Box<Block>),
}

fn recorded_table(first: &str, rows: &[Recorded]) -> Table {
    Table {
        header: vec![first.to_string(), "value".into(), "recorded in".into()],
        rows: rows
            .iter()
            .map(|r| vec![r.key.clone(), r.value.clone(), r.source.clone()])
            .collect(),
    }
}

/// A command line as one string, each argument quoted for a POSIX shell
/// when it needs it.
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn document_blocks(card: &Card, b: &mut Vec<Block>) {
    let m = &card.model;
    let d = &card.document;
    let date = match &d.date {
        Some(t) => format!(
            "{} (the latest evidence: {}, {})",
            t.get(..10).unwrap_or(t),
            d.date_of,
            t
        ),
        None => "not recorded (no evidence carries a readable time)".into(),
    };
    b.push(Block::Facts(vec![
        ("Model".into(), m.name.clone()),
        ("Version".into(), m.version.clone()),
        ("Owner".into(), or_none(&m.owner).to_string()),
        ("Record".into(), card.record.clone()),
        ("Stage".into(), card.stage.clone()),
        (
            "Revision".into(),
            format!(
                "{} (pieces of evidence: the record, {} attestation(s), {} approval file(s), {} registry event(s))",
                d.revision,
                card.reproductions.len(),
                card.approvals.len() + card.approval_problems.len(),
                card.history.len()
            ),
        ),
        ("Date".into(), date),
        ("Content fingerprint".into(), d.fingerprint.clone()),
    ]));
}

fn training_blocks(card: &Card, b: &mut Vec<Block>) {
    let t = &card.training;
    b.push(Block::Heading(2, "Training".into()));
    b.push(Block::Heading(3, "Algorithm and hyperparameters".into()));
    b.push(Block::Facts(vec![(
        "Algorithm".into(),
        match &t.algorithm {
            Some(a) => format!("{} (`{}` in {})", a.value, a.key, a.source),
            None => {
                "not recorded (no step's JSON report names an `estimator` or `algorithm`)".into()
            }
        },
    )]));
    if t.hyperparameters.is_empty() {
        b.push(Block::Para(
            "Hyperparameters: not recorded (no step's JSON report holds a `hyperparameters` object; the recipe parameters below are what the steps were given)".into(),
        ));
    } else {
        b.push(Block::Table(recorded_table(
            "hyperparameter",
            &t.hyperparameters,
        )));
    }
    b.push(Block::Heading(3, "Split and seed".into()));
    if t.split.is_empty() {
        b.push(Block::Para("Split: not recorded".into()));
    } else {
        b.push(Block::Table(recorded_table("split", &t.split)));
    }
    if t.seed.is_empty() {
        b.push(Block::Para("Seed: not recorded".into()));
    } else {
        b.push(Block::Table(recorded_table("seed", &t.seed)));
    }
    b.push(Block::Heading(3, "Recipe parameters".into()));
    if t.params.is_empty() {
        b.push(Block::Para(
            "not recorded: the recipe declares no `[params]`".into(),
        ));
    } else {
        b.push(Block::Table(Table {
            header: ["parameter", "value", "passed to steps"]
                .map(String::from)
                .to_vec(),
            rows: t
                .params
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.value.clone(),
                        if p.used_by.is_empty() {
                            "(none)".into()
                        } else {
                            p.used_by.join(", ")
                        },
                    ]
                })
                .collect(),
        }));
    }
    b.push(Block::Heading(3, "Build settings".into()));
    b.push(Block::Table(recorded_table("setting", &t.build)));
    b.push(Block::Heading(3, "Step commands".into()));
    b.push(Block::Para(
        "As the recorded recipe gives them, parameters substituted.".into(),
    ));
    b.push(Block::Table(Table {
        header: ["step", "toolchain", "command", "environment"]
            .map(String::from)
            .to_vec(),
        rows: t
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.step.clone(),
                    s.toolchain.clone(),
                    shell_line(&s.argv),
                    s.env
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect(),
    }));
}

fn validation_blocks(card: &Card, b: &mut Vec<Block>) {
    b.push(Block::Heading(2, "Data validation".into()));
    if card.validation.is_empty() {
        b.push(Block::Para(
            "not recorded: no step wrote a `validation.json`".into(),
        ));
    }
    for v in &card.validation {
        b.push(Block::Heading(3, format!("{}/{}", v.step, v.path)));
        b.push(Block::Facts(vec![
            ("Result".into(), v.result.clone()),
            ("File digest".into(), v.digest.clone()),
        ]));
        if let Some(p) = &v.problem {
            b.push(Block::Para(format!("cannot summarise the report: {p}")));
            continue;
        }
        if !v.checks.is_empty() {
            let failed = v.checks.iter().filter(|c| c.result == "FAILED").count();
            b.push(Block::Para(format!(
                "{} check(s), {} failed",
                v.checks.len(),
                failed
            )));
            b.push(Block::Table(Table {
                header: ["check", "result", "detail"].map(String::from).to_vec(),
                rows: v
                    .checks
                    .iter()
                    .map(|c| vec![c.name.clone(), c.result.clone(), c.detail.clone()])
                    .collect(),
            }));
        }
        if !v.values.is_empty() {
            b.push(Block::Table(key_value_table("key", v.values.clone())));
        }
        if !v.omitted.is_empty() {
            b.push(Block::Para(format!(
                "not shown here (see the file): {}",
                v.omitted.join(", ")
            )));
        }
    }
}

fn registry_blocks(card: &Card, b: &mut Vec<Block>) {
    b.push(Block::Heading(
        2,
        "Registry stage and promotion history".into(),
    ));
    let held = match &card.stage_record {
        None => "none (a candidate has no stage ref)".to_string(),
        Some(r) if *r == card.record => format!("{r} (this record)"),
        Some(r) => format!("{r} (another record of this version, not this one)"),
    };
    b.push(Block::Facts(vec![
        ("Current stage".into(), card.stage.clone()),
        ("Record in the stage".into(), held),
    ]));
    if card.history.is_empty() {
        b.push(Block::Para(
            "no promotion history: this version was never promoted".into(),
        ));
        return;
    }
    b.push(Block::Table(Table {
        header: [
            "time",
            "action",
            "from → to",
            "actor",
            "policy",
            "checks",
            "reason",
            "record",
        ]
        .map(String::from)
        .to_vec(),
        rows: card
            .history
            .iter()
            .map(|h| {
                let met = h.checked.iter().filter(|c| c.met).count();
                vec![
                    h.time.clone(),
                    h.action.clone(),
                    format!("{} → {}", h.from, h.to),
                    h.actor.to_string(),
                    h.policy.clone().unwrap_or_else(|| "(none)".into()),
                    if h.checked.is_empty() {
                        "none recorded".into()
                    } else {
                        format!("{met} of {} met", h.checked.len())
                    },
                    h.reason.clone().unwrap_or_default(),
                    h.record.clone(),
                ]
            })
            .collect(),
    }));
    for h in card.history.iter().filter(|h| !h.checked.is_empty()) {
        b.push(Block::Heading(
            3,
            format!(
                "Gate checks: {} {} → {} at {}",
                h.action, h.from, h.to, h.time
            ),
        ));
        b.push(Block::Table(Table {
            header: ["requirement", "result", "found"]
                .map(String::from)
                .to_vec(),
            rows: h
                .checked
                .iter()
                .map(|c| {
                    vec![
                        c.requirement.clone(),
                        if c.met { "met" } else { "UNMET" }.into(),
                        c.detail.clone(),
                    ]
                })
                .collect(),
        }));
    }
}

fn lineage_blocks(card: &Card, b: &mut Vec<Block>) {
    let g = &card.lineage;
    b.push(Block::Heading(2, "Lineage".into()));
    let mut inputs = Vec::new();
    for d in &g.data {
        inputs.push(vec![
            format!("data.{}", d.name),
            d.digest.clone(),
            or_none(&d.source).to_string(),
        ]);
    }
    for c in &g.code {
        inputs.push(vec![
            format!("code.{}", c.name),
            c.digest.clone(),
            match &c.git_commit {
                Some(commit) => format!("git commit {commit}"),
                None => "(no git commit recorded)".into(),
            },
        ]);
    }
    for i in &g.images {
        inputs.push(vec![
            format!("toolchains.{}", i.name),
            i.digest.clone(),
            i.uri.clone().unwrap_or_default(),
        ]);
    }
    if !inputs.is_empty() {
        b.push(Block::Table(Table {
            header: ["input", "digest", "origin"].map(String::from).to_vec(),
            rows: inputs,
        }));
    }
    b.push(Block::Table(Table {
        header: ["step", "reads", "toolchain", "writes"]
            .map(String::from)
            .to_vec(),
        rows: g
            .steps
            .iter()
            .map(|s| {
                let mut reads: Vec<String> = s
                    .inputs
                    .iter()
                    .map(|i| format!("{} ← {}", i.mount, i.from))
                    .collect();
                reads.extend(s.needs.iter().map(|n| format!("after steps.{n}")));
                vec![
                    s.name.clone(),
                    reads.join("; "),
                    s.toolchain.clone(),
                    s.files
                        .iter()
                        .map(|f| f.path.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect(),
    }));
    let l = lineage::Lineage {
        file: None,
        produced_by: Vec::new(),
        graphs: vec![card.lineage.clone()],
    };
    b.push(Block::MarkdownOnly(Box::new(Block::Pre(
        lineage::render_text(&l),
    ))));
}

fn blocks(card: &Card) -> Vec<Block> {
    let m = &card.model;
    let mut b = vec![Block::Heading(
        1,
        format!("Model card: {}@{}", m.name, m.version),
    )];
    document_blocks(card, &mut b);
    b.extend([
        Block::Heading(2, "Purpose".into()),
        Block::Para(or_none(&m.purpose).to_string()),
        Block::Heading(2, "Intended use".into()),
        Block::Para(or_none(&m.intended_use).to_string()),
        Block::Heading(2, "Limitations".into()),
        Block::Para(or_none(&m.limitations).to_string()),
        Block::Heading(2, "Training data".into()),
    ]);
    if card.lineage.data.is_empty() {
        b.push(Block::Para("no data snapshots recorded".into()));
    } else {
        b.push(Block::Table(Table {
            header: ["snapshot", "digest", "description", "source"]
                .map(String::from)
                .to_vec(),
            rows: card
                .lineage
                .data
                .iter()
                .map(|d| {
                    vec![
                        format!("data.{}", d.name),
                        d.digest.clone(),
                        or_none(&d.description).to_string(),
                        or_none(&d.source).to_string(),
                    ]
                })
                .collect(),
        }));
    }
    validation_blocks(card, &mut b);
    training_blocks(card, &mut b);
    b.push(Block::Heading(2, "Evaluation".into()));
    if card.metrics.is_empty() {
        b.push(Block::Para(
            "no evaluation metrics: no step wrote a `metrics.json`".into(),
        ));
    }
    for f in &card.metrics {
        b.push(Block::Heading(3, format!("{}/{}", f.step, f.path)));
        b.push(Block::Para(format!("file digest {}", f.digest)));
        for s in metrics_sections(&f.value) {
            b.push(Block::Heading(4, s.title));
            b.push(Block::Table(s.table));
        }
        b.push(Block::Heading(4, "Confidence intervals".into()));
        if f.intervals.is_empty() {
            b.push(Block::Para(format!(
                "not recorded: `{}` holds no confidence intervals",
                f.path
            )));
        } else {
            b.push(Block::Table(Table {
                header: ["metric", "lower", "upper", "as stated"]
                    .map(String::from)
                    .to_vec(),
                rows: f
                    .intervals
                    .iter()
                    .map(|i| {
                        vec![
                            i.key.clone(),
                            i.lower.clone(),
                            i.upper.clone(),
                            i.about.clone(),
                        ]
                    })
                    .collect(),
            }));
        }
    }
    b.push(Block::Heading(2, "Reproducibility".into()));
    b.push(Block::Facts(vec![
        ("Record".into(), card.record.clone()),
        ("Signed by key".into(), card.built_by.clone()),
        ("Recipe".into(), card.recipe.clone()),
    ]));
    if card.reproductions.is_empty() {
        b.push(Block::Para("no independent rebuilds attested".into()));
    } else {
        b.push(Block::Table(Table {
            header: [
                "result",
                "verifier",
                "time",
                "platform",
                "status",
                "attestation",
            ]
            .map(String::from)
            .to_vec(),
            rows: card
                .reproductions
                .iter()
                .map(|r| {
                    vec![
                        r.result.clone(),
                        r.verifier.clone(),
                        r.time.clone(),
                        r.platform.clone(),
                        r.status.clone(),
                        r.attestation.clone(),
                    ]
                })
                .collect(),
        }));
    }
    registry_blocks(card, &mut b);
    b.push(Block::Heading(2, "Approvals".into()));
    if card.approvals.is_empty() {
        b.push(Block::Para("no approvals".into()));
    } else {
        b.push(Block::Table(Table {
            header: ["role", "approver", "time", "reason", "status"]
                .map(String::from)
                .to_vec(),
            rows: card
                .approvals
                .iter()
                .map(|a| {
                    vec![
                        a.role.clone(),
                        a.approver.clone(),
                        a.time.clone(),
                        a.reason.clone(),
                        a.status.clone(),
                    ]
                })
                .collect(),
        }));
    }
    for p in &card.approval_problems {
        b.push(Block::Para(format!("unreadable approval {p}")));
    }
    b.push(Block::Heading(2, "Sign-off".into()));
    b.push(Block::SignOff(
        card.approvals.iter().filter(|a| a.valid).cloned().collect(),
    ));
    lineage_blocks(card, &mut b);
    b
}

/// What the sign-off block says before its entries.
const SIGN_OFF_NONE: &str = "no counting approvals: nobody has signed off this version";
const SIGN_OFF_INTRO: &str =
    "The approvals that count (as `repro promote` counts them), one per signatory:";

fn render_markdown_block(out: &mut String, block: Block) {
    match block {
        Block::Heading(level, text) => {
            out.push_str(&format!("{} {}\n\n", "#".repeat(level as usize), md(&text)))
        }
        Block::Para(text) => out.push_str(&format!("{}\n\n", md(&text))),
        Block::Facts(pairs) => {
            for (k, v) in pairs {
                out.push_str(&format!("- **{}**: {}\n", md(&k), md(&v)));
            }
            out.push('\n');
        }
        Block::Table(t) => {
            let row = |cells: &[String]| {
                let cells: Vec<String> = cells.iter().map(|c| md(c)).collect();
                format!("| {} |\n", cells.join(" | "))
            };
            out.push_str(&row(&t.header));
            out.push_str(&format!("|{}\n", " --- |".repeat(t.header.len())));
            for r in &t.rows {
                out.push_str(&row(r));
            }
            out.push('\n');
        }
        Block::Pre(text) => {
            // A fence longer than any run of backticks in the text.
            let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
            let fence = "`".repeat(longest.max(2) + 1);
            out.push_str(&format!("{fence}text\n{text}"));
            if !text.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{fence}\n\n"));
        }
        Block::SignOff(approvals) => {
            if approvals.is_empty() {
                out.push_str(&format!("{}\n\n", md(SIGN_OFF_NONE)));
                return;
            }
            out.push_str(&format!("{}\n\n", md(SIGN_OFF_INTRO)));
            for a in approvals {
                out.push_str(&format!(
                    "- **{}**: {} (key {}), approved {}\n\n  Signature: ______________________________  Date: ______________\n\n",
                    md(&a.role),
                    md(&a.name),
                    md(&a.keyid),
                    md(&a.time)
                ));
            }
        }
        Block::MarkdownOnly(inner) => render_markdown_block(out, *inner),
    }
}

/// The card as Markdown.
pub fn render_markdown(card: &Card) -> String {
    let mut out = String::new();
    for block in blocks(card) {
        render_markdown_block(&mut out, block);
    }
    out
}

/// The page's style: a readable screen column, tables that wrap within it
/// (fixed layout, long values broken anywhere, digests shortened with the
/// full value in `title`), and an A4 print layout (margins, page numbers,
/// rows and signature blocks never split, full digests printed).
const CSS: &str = "\
*{box-sizing:border-box}\
html{-webkit-text-size-adjust:100%}\
body{font-family:sans-serif;line-height:1.4;max-width:60em;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.7em;border-bottom:2px solid #333;padding-bottom:0.2em}\
h2{font-size:1.35em;margin-top:1.8em;border-bottom:1px solid #bbb}\
h3{font-size:1.12em}h4{font-size:1em}\
ul.facts{list-style:none;padding:0;margin:0.5em 0 1em}\
ul.facts li{margin:0.15em 0;overflow-wrap:anywhere}\
header.doc{border:1px solid #999;padding:0.4em 1em;margin-bottom:1.5em;background:#fafafa}\
p{overflow-wrap:anywhere}\
table{border-collapse:collapse;margin:0.5em 0 1.5em;width:100%;max-width:100%;table-layout:fixed}\
th,td{border:1px solid #bbb;padding:0.25em 0.5em;text-align:left;vertical-align:top;\
overflow-wrap:anywhere;word-break:break-word}\
th{background:#eee}td{font-variant-numeric:tabular-nums}\
table.wide{font-size:0.78em}table.wide th,table.wide td{padding:0.2em 0.25em}\
.digest{font-family:monospace;word-break:break-all;overflow-wrap:anywhere}\
pre{background:#f6f6f6;padding:0.8em;white-space:pre-wrap;overflow-wrap:anywhere}\
code,pre{font-family:monospace}\
.signature{border:1px solid #999;padding:0.5em 1em;margin:0.8em 0}\
.signature .line{border-bottom:1px solid #000;height:2.4em;margin:0.3em 0 0;color:#555;font-size:0.85em;\
display:flex;align-items:flex-end}\
@page{size:A4;margin:18mm 15mm 20mm 15mm;@bottom-right{content:counter(page) \" / \" counter(pages)}}\
@media print{\
body{max-width:none;margin:0;padding:0;font-size:9.5pt;color:#000}\
header.doc{background:none}\
h1,h2,h3,h4{break-after:avoid;page-break-after:avoid}\
table{font-size:8.5pt}\
thead{display:table-header-group}\
tr,.signature,ul.facts li{break-inside:avoid;page-break-inside:avoid}\
th{background:#eee;-webkit-print-color-adjust:exact;print-color-adjust:exact}\
.digest .short{display:none}\
.digest::after{content:attr(title)}\
}";

/// Whether `s` is `sha256:` and 64 lowercase hex digits.
fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// A table cell's text as HTML: escaped, every `sha256:` digest in it
/// shortened to 12 hex digits with the full value in `title` (printed in
/// full).
fn html_cell(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("sha256:") {
        let candidate = rest.get(i..i + 71).unwrap_or("");
        if is_digest(candidate) {
            out.push_str(&html(&rest[..i]));
            out.push_str(&format!(
                "<span class=\"digest\" title=\"{c}\"><span class=\"short\">{}…</span></span>",
                &candidate[..19],
                c = html(candidate)
            ));
            rest = &rest[i + 71..];
        } else {
            out.push_str(&html(&rest[..i + 7]));
            rest = &rest[i + 7..];
        }
    }
    out.push_str(&html(rest));
    out
}

fn render_html_block(out: &mut String, block: Block) {
    match block {
        Block::Heading(level, text) => {
            out.push_str(&format!("<h{level}>{}</h{level}>\n", html(&text)))
        }
        Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", html(&text))),
        Block::Facts(pairs) => {
            out.push_str("<ul class=\"facts\">\n");
            for (k, v) in pairs {
                out.push_str(&format!(
                    "<li><strong>{}</strong>: {}</li>\n",
                    html(&k),
                    html(&v)
                ));
            }
            out.push_str("</ul>\n");
        }
        Block::Table(t) => {
            if t.header.len() > 6 {
                out.push_str("<table class=\"wide\">\n<thead><tr>");
            } else {
                out.push_str("<table>\n<thead><tr>");
            }
            for h in &t.header {
                out.push_str(&format!("<th>{}</th>", html(h)));
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for r in &t.rows {
                out.push_str("<tr>");
                for c in r {
                    out.push_str(&format!("<td>{}</td>", html_cell(c)));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody>\n</table>\n");
        }
        Block::Pre(text) => out.push_str(&format!("<pre>{}</pre>\n", html(&text))),
        Block::SignOff(approvals) => {
            if approvals.is_empty() {
                out.push_str(&format!("<p>{}</p>\n", html(SIGN_OFF_NONE)));
                return;
            }
            out.push_str(&format!("<p>{}</p>\n", html(SIGN_OFF_INTRO)));
            for a in approvals {
                out.push_str(&format!(
                    "<div class=\"signature\">\n<p><strong>{}</strong>: {} (key {}), approved {}</p>\n\
<div class=\"line\">Signature</div>\n<div class=\"line\">Date</div>\n</div>\n",
                    html(&a.role),
                    html(&a.name),
                    html_cell(&a.keyid),
                    html(&a.time)
                ));
            }
        }
        Block::MarkdownOnly(_) => {}
    }
}

/// The card as one self-contained HTML document (inline style with screen
/// and print rules, no scripts, no external assets).
pub fn render_html(card: &Card) -> String {
    let m = &card.model;
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>Model card: {}</title>\n",
        html(&format!("{}@{}", m.name, m.version))
    ));
    out.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n"));
    let mut blocks = blocks(card).into_iter();
    // The title and the document facts form the header.
    out.push_str("<header class=\"doc\">\n");
    for block in blocks.by_ref().take(2) {
        render_html_block(&mut out, block);
    }
    out.push_str("</header>\n<main>\n");
    for block in blocks {
        render_html_block(&mut out, block);
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// Where a card was written.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The Markdown file.
    pub markdown: PathBuf,
    /// The HTML file.
    pub html: PathBuf,
    /// The Markdown's blob digest in the store.
    pub blob: String,
    /// The record.
    pub record: String,
}

/// Render `card`, write both files into `dir` and keep the Markdown in the
/// store under `v1/refs/cards/<record hex>`.
pub fn write(store: &Store, card: &Card, dir: &Path) -> Result<Written> {
    let markdown = render_markdown(card);
    let page = render_html(card);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let md_path = dir.join(MARKDOWN_FILE);
    let html_path = dir.join(HTML_FILE);
    repro_store::write_atomic(&md_path, markdown.as_bytes())?;
    repro_store::write_atomic(&html_path, page.as_bytes())?;
    let blob = store.put_bytes(markdown.as_bytes())?;
    let record: RecordDigest = card.record.parse()?;
    let dest = store.ns_path(repro_store::Ns::Cards, &[&record.hex()])?;
    store.write_atomic(&dest, format!("{blob}\n").as_bytes())?;
    Ok(Written {
        markdown: md_path,
        html: html_path,
        blob: blob.to_string(),
        record: card.record.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            html(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn markdown_escapes_table_pipes_and_newlines() {
        assert_eq!(md("a|b\nc *d*"), r"a\|b c \*d\*");
    }

    #[test]
    fn metrics_become_overall_slice_and_gap_tables() {
        let v: serde_json::Value = serde_json::json!({
            "threshold": 0.5,
            "overall": {"auc": 0.99, "confusion": {"tp": 3}, "recall": null},
            "slices": {
                "small": {"auc": 0.98, "n": 10},
                "large": {"auc": 0.91, "n": 12, "extra": 1}
            },
            "gaps": {"auc": {"gap": 0.07, "max": "small", "min": "large"}},
            "reliability": {"bins": 2, "table": [{"bin": 0}]}
        });
        let s = metrics_sections(&v);
        let titles: Vec<&str> = s.iter().map(|x| x.title.as_str()).collect();
        assert_eq!(
            titles,
            ["Overall", "Slices", "Gaps between slices", "Other values"]
        );
        let overall = &s[0].table.rows;
        assert!(overall.contains(&vec!["auc".to_string(), "0.99".to_string()]));
        assert!(overall.contains(&vec!["confusion.tp".to_string(), "3".to_string()]));
        assert!(overall.contains(&vec!["recall".to_string(), "n/a".to_string()]));
        let slices = &s[1].table;
        assert_eq!(slices.header, ["slice", "auc", "extra", "n"]);
        assert_eq!(slices.rows.len(), 2);
        let small = slices.rows.iter().find(|r| r[0] == "small").unwrap();
        assert_eq!(small[1], "0.98");
        assert_eq!(small[2], "", "a missing column is empty");
        let gaps = &s[2].table;
        assert_eq!(gaps.rows[0], ["auc", "0.07", "small", "large"]);
        let other = &s[3].table.rows;
        assert!(other.contains(&vec!["threshold".to_string(), "0.5".to_string()]));
        assert!(other.contains(&vec!["reliability.bins".to_string(), "2".to_string()]));
    }

    #[test]
    fn slices_as_the_example_writes_them_become_definition_slice_and_gap_tables() {
        let v: serde_json::Value = serde_json::json!({
            "overall": {"auc": 0.99},
            "slices": {
                "feature": "mean radius",
                "definition": "terciles",
                "groups": {
                    "small": {"auc": null, "n": 49, "range": {"min_inclusive": null, "max_exclusive": 12.3}},
                    "large": {"auc": 1.0, "n": 43, "range": {"min_inclusive": 14.8, "max_exclusive": null}}
                },
                "gaps": {"auc": {"gap": 0.01, "max": "large", "min": "medium"}, "recall": null}
            }
        });
        let s = metrics_sections(&v);
        let titles: Vec<&str> = s.iter().map(|x| x.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Overall",
                "Slice definition",
                "Slices",
                "Gaps between slices"
            ]
        );
        assert!(s[1]
            .table
            .rows
            .contains(&vec!["feature".to_string(), "mean radius".to_string()]));
        let slices = &s[2].table;
        assert_eq!(
            slices.header,
            [
                "slice",
                "auc",
                "n",
                "range.max_exclusive",
                "range.min_inclusive"
            ]
        );
        let small = slices.rows.iter().find(|r| r[0] == "small").unwrap();
        assert_eq!(small[1..], ["n/a", "49", "12.3", "n/a"]);
        let gaps = &s[3].table;
        assert_eq!(gaps.rows[0], ["auc", "0.01", "large", "medium", ""]);
        assert_eq!(gaps.rows[1], ["recall", "", "", "", "n/a"]);
    }
}
