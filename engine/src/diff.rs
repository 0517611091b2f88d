//! `repro diff <a> <b>`: explain what differs between two files, two output
//! trees or two records.

use std::path::Path;

use anyhow::Result;
use repro_store::{BlobDigest, Hash, Store, TreeDigest};
use serde::Serialize;

use crate::compare::{diff_trees, explain_blobs, explained, CompareOptions, FileDiff, Side};
use crate::engine::{InputSource, Plan};
use crate::verify::render_explanation;
use repro_evidence::exit::UserError;
use repro_evidence::record::{open_record, pins_of, RecordedStep, Statement};

/// One side of a diff.
enum Operand {
    File(std::path::PathBuf),
    Blob(BlobDigest),
    Tree(TreeDigest),
    Record {
        model: String,
        steps: Vec<(String, TreeDigest)>,
        detail: Box<RecordDetail>,
    },
}

/// What a record's steps were made of, to say why two step keys differ.
struct RecordDetail {
    recorded: Vec<RecordedStep>,
    /// The recipe and its plan, rebuilt from the stored recipe and the
    /// record's pins; why not, when they cannot be.
    plan: std::result::Result<(repro_recipes::Recipe, Plan), String>,
}

/// The recipe (from the store) and the plan of the record `st`.
fn plan_of(store: &Store, st: &Statement) -> Result<(repro_recipes::Recipe, Plan)> {
    let ext = &st.predicate.build_definition.external_parameters;
    let bytes = store.read_blob(&ext.recipe_digest)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the recipe {} is not UTF-8", ext.recipe_digest))?;
    let recipe = repro_recipes::parse_str(Path::new(&ext.recipe), &text)?;
    let plan = Plan::new(&recipe, &pins_of(st)?)?;
    Ok((recipe, plan))
}

fn operand(store: &Store, what: &str) -> Result<Operand> {
    if Path::new(what).is_file() {
        return Ok(Operand::File(what.into()));
    }
    if let Some(hex) = what.strip_prefix("sha256:") {
        let hash = Hash::from_hex(hex).map_err(|e| UserError(e.to_string()))?;
        if store.get_tree(&TreeDigest::from_hash(hash)).is_ok() {
            return Ok(Operand::Tree(TreeDigest::from_hash(hash)));
        }
        if let Ok(r) = open_record(store, what, &[]) {
            return record_operand(store, r);
        }
        if store.has_blob(&BlobDigest::from_hash(hash)) {
            return Ok(Operand::Blob(BlobDigest::from_hash(hash)));
        }
        return Err(UserError(format!("`{what}` is not in the store")).into());
    }
    if what.contains('@') {
        return record_operand(store, open_record(store, what, &[])?);
    }
    Err(UserError(format!(
        "`{what}` is not a file, a digest in the store or `name@version`\nhint: compare two files, two output trees (`sha256:...`) or two records"
    ))
    .into())
}

fn record_operand(store: &Store, r: repro_evidence::record::OpenedRecord) -> Result<Operand> {
    let ext = &r.statement.predicate.build_definition.external_parameters;
    let model = format!("{}@{}", ext.name, ext.version);
    let recorded = r.statement.steps()?;
    let steps = recorded
        .iter()
        .map(|s| (s.name.clone(), s.output))
        .collect();
    let plan = plan_of(store, &r.statement).map_err(|e| format!("{e:#}"));
    Ok(Operand::Record {
        model,
        steps,
        detail: Box::new(RecordDetail { recorded, plan }),
    })
}

/// Why the keys of step `name` differ between `a` and `b`: each part of
/// the key (image, command, environment, inputs, declared outputs) that
/// is not the same, in words.
fn why_keys_differ(name: &str, a: &RecordDetail, b: &RecordDetail) -> Vec<String> {
    let (pa, pb) = match (&a.plan, &b.plan) {
        (Ok((_, pa)), Ok((_, pb))) => (pa, pb),
        (Err(e), _) | (_, Err(e)) => return vec![format!("cannot tell why: {e}")],
    };
    let (Some(sa), Some(sb)) = (pa.steps.get(name), pb.steps.get(name)) else {
        return vec!["cannot tell why: the recipe has no such step".into()];
    };
    let mut why = Vec::new();
    if sa.image != sb.image {
        why.push(format!(
            "image {} -> {}",
            short(&sa.image),
            short(&sb.image)
        ));
    }
    if sa.argv != sb.argv {
        if sa.argv.len() != sb.argv.len() {
            why.push(format!(
                "argv has {} -> {} elements",
                sa.argv.len(),
                sb.argv.len()
            ));
        }
        for (i, (x, y)) in sa.argv.iter().zip(&sb.argv).enumerate() {
            if x != y {
                why.push(format!("argv[{i}]: {x:?} -> {y:?}"));
            }
        }
    }
    let keys: std::collections::BTreeSet<&String> = sa.env.keys().chain(sb.env.keys()).collect();
    for k in keys {
        let (x, y) = (sa.env.get(k), sb.env.get(k));
        if x != y {
            let show = |v: Option<&String>| v.map_or("(unset)".to_string(), |v| format!("{v:?}"));
            why.push(format!("env {k}: {} -> {}", show(x), show(y)));
        }
    }
    let output_of =
        |d: &RecordDetail, step: &str| d.recorded.iter().find(|r| r.name == step).map(|r| r.output);
    let mounts: std::collections::BTreeSet<&String> =
        sa.inputs.keys().chain(sb.inputs.keys()).collect();
    for m in mounts {
        let tree = |d: &RecordDetail, src: Option<&InputSource>| match src {
            Some(InputSource::Tree(t)) => Some((*t, None)),
            Some(InputSource::Step(s)) => output_of(d, s).map(|t| (t, Some(s.clone()))),
            None => None,
        };
        let (x, y) = (tree(a, sa.inputs.get(m)), tree(b, sb.inputs.get(m)));
        if x.as_ref().map(|t| t.0) == y.as_ref().map(|t| t.0) {
            continue;
        }
        let show = |t: &Option<(TreeDigest, Option<String>)>| match t {
            Some((d, _)) => short(d),
            None => "(none)".to_string(),
        };
        let from = match (&x, &y) {
            (Some((_, Some(s))), _) | (_, Some((_, Some(s)))) => {
                format!(" (the output of step `{s}`)")
            }
            _ => String::new(),
        };
        why.push(format!("input `{m}`: {} -> {}{from}", show(&x), show(&y)));
    }
    if sa.outputs != sb.outputs {
        why.push(format!(
            "declared outputs {:?} -> {:?}",
            sa.outputs, sb.outputs
        ));
    }
    if why.is_empty() {
        why.push(
            "the same image, command, environment, inputs and outputs: the key's format or the sandbox's policy version differs"
                .into(),
        );
    }
    why
}

/// The parameters that differ between the recipes of `a` and `b`.
fn params_differ(a: &RecordDetail, b: &RecordDetail) -> Vec<String> {
    let (Ok((ra, _)), Ok((rb, _))) = (&a.plan, &b.plan) else {
        return Vec::new();
    };
    let keys: std::collections::BTreeSet<&String> =
        ra.params.keys().chain(rb.params.keys()).collect();
    keys.into_iter()
        .filter(|k| ra.params.get(*k) != rb.params.get(*k))
        .map(|k| {
            let show = |v: Option<&repro_recipes::ParamValue>| {
                v.map_or("(unset)".to_string(), |v| {
                    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
                })
            };
            format!(
                "params.{k}: {} -> {}",
                show(ra.params.get(k)),
                show(rb.params.get(k))
            )
        })
        .collect()
}

/// `sha256:` and the first 12 hex digits.
fn short(d: &impl std::fmt::Display) -> String {
    let s = d.to_string();
    s.chars().take("sha256:".len() + 12).collect()
}

/// The result of a diff, per step (one unnamed step for trees and files).
#[derive(Debug, Serialize)]
pub struct Diff {
    /// For two records: the recipe parameters that differ (`params.seed:
    /// 42 -> 7`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// The steps compared (`""` when comparing trees or files).
    pub steps: Vec<StepDiff>,
    /// Whether everything is identical.
    pub identical: bool,
}

/// One step's differences.
#[derive(Debug, Serialize)]
pub struct StepDiff {
    /// The step's name, or `""`.
    pub step: String,
    /// Set when the step exists on one side only.
    pub only_in: Option<String>,
    /// For two records whose step keys differ: both keys and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyChange>,
    /// The differing files.
    pub files: Vec<FileDiff>,
}

/// A step key that differs between two records, and why.
#[derive(Debug, Serialize)]
pub struct KeyChange {
    /// The key in the first record.
    pub a: repro_store::StepKey,
    /// The key in the second.
    pub b: repro_store::StepKey,
    /// Each part of the key that differs, in words (`argv[3]: "42" -> "7"`,
    /// `input `data`: sha256:... -> sha256:...`).
    pub why: Vec<String>,
}

/// Compare `a` with `b`.
pub fn diff(store: &Store, a: &str, b: &str, opts: CompareOptions) -> Result<Diff> {
    let mut params = Vec::new();
    let steps = match (operand(store, a)?, operand(store, b)?) {
        (Operand::File(x), Operand::File(y)) => {
            let (bx, by) = (std::fs::read(&x)?, std::fs::read(&y)?);
            let name = y.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut files = Vec::new();
            if bx != by {
                let mut e = explained(&name, &bx, &by);
                if opts.diffoscope {
                    e.diffoscope = crate::compare::run_diffoscope(&x, &y);
                }
                files.push(FileDiff {
                    path: name,
                    expected: Some(file_side(&bx)),
                    actual: Some(file_side(&by)),
                    first_difference: repro_explain::first_difference(&bx, &by),
                    explanation: Some(e),
                });
            }
            vec![StepDiff { step: String::new(), only_in: None, key: None, files }]
        }
        (Operand::Blob(x), Operand::Blob(y)) => {
            let mut files = Vec::new();
            if x != y {
                let (sx, sy) = (store.verify_blob(&x)?, store.verify_blob(&y)?);
                files.push(FileDiff {
                    path: String::new(),
                    expected: Some(Side::File { digest: x, size: sx, executable: false }),
                    actual: Some(Side::File { digest: y, size: sy, executable: false }),
                    first_difference: crate::compare::first_difference(store, &x, &y)?,
                    explanation: Some(explain_blobs(store, "", &x, &y, opts)?),
                });
            }
            vec![StepDiff { step: String::new(), only_in: None, key: None, files }]
        }
        (Operand::Tree(x), Operand::Tree(y)) => {
            vec![StepDiff { step: String::new(), only_in: None, key: None, files: diff_trees(store, &x, &y, opts)? }]
        }
        (
            Operand::Record { model: ma, steps: sa, detail: da },
            Operand::Record { model: mb, steps: sb, detail: db },
        ) => {
            params = params_differ(&da, &db);
            let key_of = |d: &RecordDetail, name: &str| {
                d.recorded.iter().find(|r| r.name == name).map(|r| r.key)
            };
            let mut out = Vec::new();
            for (name, ta) in &sa {
                match sb.iter().find(|(n, _)| n == name) {
                    Some((_, tb)) => {
                        let key = match (key_of(&da, name), key_of(&db, name)) {
                            (Some(ka), Some(kb)) if ka != kb => Some(KeyChange {
                                a: ka,
                                b: kb,
                                why: why_keys_differ(name, &da, &db),
                            }),
                            _ => None,
                        };
                        out.push(StepDiff {
                            step: name.clone(),
                            only_in: None,
                            key,
                            files: diff_trees(store, ta, tb, opts)?,
                        })
                    }
                    None => out.push(StepDiff { step: name.clone(), only_in: Some(ma.clone()), key: None, files: vec![] }),
                }
            }
            for (name, _) in sb.iter().filter(|(n, _)| !sa.iter().any(|(m, _)| m == n)) {
                out.push(StepDiff { step: name.clone(), only_in: Some(mb.clone()), key: None, files: vec![] });
            }
            out
        }
        _ => {
            return Err(UserError(format!(
                "`{a}` and `{b}` are not of one kind\nhint: compare two files, two output trees or two records"
            ))
            .into())
        }
    };
    let identical = steps
        .iter()
        .all(|s| s.files.is_empty() && s.only_in.is_none());
    Ok(Diff {
        params,
        steps,
        identical,
    })
}

fn file_side(bytes: &[u8]) -> Side {
    Side::File {
        digest: BlobDigest::from_hash(Hash::of(bytes)),
        size: bytes.len() as u64,
        executable: false,
    }
}

/// The human-readable report of a diff.
pub fn render(d: &Diff) -> String {
    let mut out = String::new();
    if !d.params.is_empty() {
        out.push_str("recipe parameters differ:\n");
        for p in &d.params {
            out.push_str(&format!("  {p}\n"));
        }
    }
    for s in &d.steps {
        let label = if s.step.is_empty() {
            String::new()
        } else {
            format!("step `{}`: ", s.step)
        };
        if let Some(side) = &s.only_in {
            out.push_str(&format!("{label}only in {side}\n"));
            continue;
        }
        if let Some(k) = &s.key {
            out.push_str(&format!(
                "{label}key differs ({} -> {}) because:\n",
                short(&k.a),
                short(&k.b)
            ));
            for w in &k.why {
                out.push_str(&format!("  {w}\n"));
            }
        }
        for f in &s.files {
            let path = if f.path.is_empty() {
                "(blob)".to_string()
            } else {
                format!("`{}`", f.path)
            };
            out.push_str(&format!("{label}{path} differs\n"));
            match &f.expected {
                Some(e) => out.push_str(&format!("  a: {e}\n")),
                None => out.push_str("  a: (absent)\n"),
            }
            match &f.actual {
                Some(a) => out.push_str(&format!("  b: {a}\n")),
                None => out.push_str("  b: (absent)\n"),
            }
            if let Some(o) = f.first_difference {
                out.push_str(&format!("  first differing byte at offset {o}\n"));
            }
            if let Some(e) = &f.explanation {
                render_explanation(&mut out, e, "  ");
            }
        }
    }
    if d.identical {
        out.push_str("identical\n");
    }
    out
}
