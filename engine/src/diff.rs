//! `repro diff <a> <b>`: explain what differs between two files, two output
//! trees or two records.

use std::path::Path;

use anyhow::Result;
use repro_store::{BlobDigest, Hash, Store, TreeDigest};
use serde::Serialize;

use crate::compare::{diff_trees, explain_blobs, explained, CompareOptions, FileDiff, Side};
use crate::verify::render_explanation;
use repro_evidence::exit::UserError;
use repro_evidence::record::open_record;

/// One side of a diff.
enum Operand {
    File(std::path::PathBuf),
    Blob(BlobDigest),
    Tree(TreeDigest),
    Record {
        model: String,
        steps: Vec<(String, TreeDigest)>,
    },
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
            return record_operand(r);
        }
        if store.has_blob(&BlobDigest::from_hash(hash)) {
            return Ok(Operand::Blob(BlobDigest::from_hash(hash)));
        }
        return Err(UserError(format!("`{what}` is not in the store")).into());
    }
    if what.contains('@') {
        return record_operand(open_record(store, what, &[])?);
    }
    Err(UserError(format!(
        "`{what}` is not a file, a digest in the store or `name@version`\nhint: compare two files, two output trees (`sha256:...`) or two records"
    ))
    .into())
}

fn record_operand(r: repro_evidence::record::OpenedRecord) -> Result<Operand> {
    let ext = &r.statement.predicate.build_definition.external_parameters;
    let model = format!("{}@{}", ext.name, ext.version);
    let steps = r
        .statement
        .steps()?
        .into_iter()
        .map(|s| (s.name, s.output))
        .collect();
    Ok(Operand::Record { model, steps })
}

/// The result of a diff, per step (one unnamed step for trees and files).
#[derive(Debug, Serialize)]
pub struct Diff {
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
    /// The differing files.
    pub files: Vec<FileDiff>,
}

/// Compare `a` with `b`.
pub fn diff(store: &Store, a: &str, b: &str, opts: CompareOptions) -> Result<Diff> {
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
            vec![StepDiff { step: String::new(), only_in: None, files }]
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
            vec![StepDiff { step: String::new(), only_in: None, files }]
        }
        (Operand::Tree(x), Operand::Tree(y)) => {
            vec![StepDiff { step: String::new(), only_in: None, files: diff_trees(store, &x, &y, opts)? }]
        }
        (Operand::Record { model: ma, steps: sa }, Operand::Record { model: mb, steps: sb }) => {
            let mut out = Vec::new();
            for (name, ta) in &sa {
                match sb.iter().find(|(n, _)| n == name) {
                    Some((_, tb)) => out.push(StepDiff {
                        step: name.clone(),
                        only_in: None,
                        files: diff_trees(store, ta, tb, opts)?,
                    }),
                    None => out.push(StepDiff { step: name.clone(), only_in: Some(ma.clone()), files: vec![] }),
                }
            }
            for (name, _) in sb.iter().filter(|(n, _)| !sa.iter().any(|(m, _)| m == n)) {
                out.push(StepDiff { step: name.clone(), only_in: Some(mb.clone()), files: vec![] });
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
    Ok(Diff { steps, identical })
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
