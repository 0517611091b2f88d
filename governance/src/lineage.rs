//! `repro lineage`: from a model file back to the data it was trained on.
//!
//! Everything comes from signed records in the store: a record's subjects
//! name every output file (`<step>/<path>` with its SHA-256), its byproducts
//! give each step's key and output tree, and its resolved dependencies give
//! the pinned images, data snapshots (with their description and source
//! system) and code trees (with their git commit). The step graph (which
//! step mounts which data, code or other step) comes from the recorded
//! recipe, whose bytes are in the store under the record's recipe digest.
//!
//! Three questions are answered:
//! - a file digest: which versions and steps produced it, and everything
//!   upstream of that step ([`of_file`]);
//! - `name@version`: the whole graph of that version ([`of_version`]);
//! - a data or code tree digest: every version whose record used it
//!   ([`uses`]), which is what a deletion request needs.
//!
//! A version may have several records (rebuilds from the same inputs, see
//! [`Store::records_of`]); the searches by file and by tree go through every
//! record of every version, not only the latest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result};
use repro_recipes::InputRef;
use repro_store::{BlobDigest, RecordDigest, Store, TreeDigest};
use serde::Serialize;

use repro_evidence::exit::CannotVerify;
use repro_evidence::exit::UserError;
use repro_evidence::record::Statement;
use repro_evidence::record::{open_record, resolve_record_ref};

/// A data snapshot as a record holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DataNode {
    /// The name in the recipe (`data.<name>`).
    pub name: String,
    /// The snapshot's tree digest.
    pub digest: String,
    /// What the data is, as the recipe describes it.
    pub description: Option<String>,
    /// The source system it came from.
    pub source: Option<String>,
    /// Where it was snapshotted from (`file:<path>`, the path as the
    /// recipe gave it), when floating: see
    /// [`repro_evidence::record::ResourceDescriptor::origin`].
    pub uri: Option<String>,
}

/// A code tree as a record holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CodeNode {
    /// The name in the recipe (`code.<name>`).
    pub name: String,
    /// The tree digest.
    pub digest: String,
    /// The git commit, when the recipe gave one.
    pub git_commit: Option<String>,
    /// Where it was snapshotted from (`file:<path>`), when floating.
    pub uri: Option<String>,
}

/// A toolchain image as a record holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageNode {
    /// The toolchain's name (`toolchains.<name>`).
    pub name: String,
    /// The image manifest digest.
    pub digest: String,
    /// Where it came from (`file:`, `docker:`, `oci://`), when known.
    pub uri: Option<String>,
}

/// One input of a step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InputEdge {
    /// The mount name (`/repro/in/<mount>`).
    pub mount: String,
    /// What is mounted: `data.NAME`, `code.NAME` or `steps.NAME`.
    pub from: String,
    /// Its digest (a tree digest; for a step, its output tree).
    pub digest: Option<String>,
}

/// One output file of a step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileNode {
    /// The path inside the step's outputs.
    pub path: String,
    /// The file's blob digest.
    pub digest: String,
}

/// One step of a version.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepNode {
    /// The step's name.
    pub name: String,
    /// Its step key.
    pub key: String,
    /// Its output tree.
    pub output: String,
    /// The toolchain it ran in.
    pub toolchain: String,
    /// Its inputs, by mount name.
    pub inputs: Vec<InputEdge>,
    /// Steps it waits for without mounting them (`needs`).
    pub needs: Vec<String>,
    /// Its output files, sorted by path.
    pub files: Vec<FileNode>,
}

/// The lineage graph of one recorded version.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionGraph {
    /// `name@version`.
    pub model: String,
    /// The record's digest.
    pub record: String,
    /// The key that signed the record.
    pub signed_by: String,
    /// The recipe's digest.
    pub recipe: String,
    /// The steps, in recipe order.
    pub steps: Vec<StepNode>,
    /// The data snapshots the steps use, by name.
    pub data: Vec<DataNode>,
    /// The code trees the steps use, by name.
    pub code: Vec<CodeNode>,
    /// The images the steps run in, by name.
    pub images: Vec<ImageNode>,
}

/// Where a file came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Production {
    /// The version.
    pub model: String,
    /// The record.
    pub record: String,
    /// The step that wrote it.
    pub step: String,
    /// Its path inside the step's outputs.
    pub path: String,
}

/// The answer to `repro lineage <file digest | name@version>`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Lineage {
    /// The file digest asked about, if the question was a file.
    pub file: Option<String>,
    /// Every (version, step, path) that produced the file (empty for a version).
    pub produced_by: Vec<Production>,
    /// The graphs: for a file, each producing version cut down to the
    /// producing step and everything upstream of it; for a version, all of it.
    pub graphs: Vec<VersionGraph>,
}

/// One version that used a snapshot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Use {
    /// `name@version`.
    pub model: String,
    /// The record's digest.
    pub record: String,
    /// Whether it is the version's latest record (else an earlier build of
    /// the same inputs).
    pub latest: bool,
    /// How the recipe named it: `data.NAME` or `code.NAME`.
    pub as_input: String,
    /// The steps that mount it.
    pub steps: Vec<String>,
}

/// The answer to `repro lineage --uses <tree digest>`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Uses {
    /// The tree digest asked about.
    pub digest: String,
    /// Every record that used it (each record of each version), by model
    /// name, version, record and input name.
    pub versions: Vec<Use>,
}

fn annotation(r: &repro_evidence::record::ResourceDescriptor, key: &str) -> Option<String> {
    r.annotations
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Build the graph of the record `record` (its signature is checked
/// against the keys kept in the store).
pub fn graph(store: &Store, record: &RecordDigest) -> Result<VersionGraph> {
    let opened = open_record(store, &record.to_string(), &[])?;
    graph_of(store, record, &opened.statement, opened.signed_by)
}

fn graph_of(
    store: &Store,
    record: &RecordDigest,
    st: &Statement,
    signed_by: String,
) -> Result<VersionGraph> {
    let ext = &st.predicate.build_definition.external_parameters;
    let recipe_digest: BlobDigest = ext.recipe_digest;
    let text = store.read_blob(&recipe_digest).map_err(|e| {
        anyhow::Error::new(e).context(CannotVerify(format!(
            "the recipe {recipe_digest} of record {record} is unusable"
        )))
    })?;
    let text = String::from_utf8(text)
        .map_err(|_| CannotVerify(format!("the recipe {recipe_digest} is not UTF-8")))?;
    let recipe = repro_recipes::parse_str(&PathBuf::from(&ext.recipe), &text).map_err(|e| {
        CannotVerify(format!(
            "the recorded recipe of record {record} does not parse any more: {e}"
        ))
    })?;

    let mut data = Vec::new();
    let mut code = Vec::new();
    let mut images = Vec::new();
    let mut digest_of: BTreeMap<String, String> = BTreeMap::new();
    for d in &st.predicate.build_definition.resolved_dependencies {
        let Some(digest) = d.sha256_text() else {
            continue;
        };
        digest_of.insert(d.name.clone(), digest.clone());
        if let Some(n) = d.name.strip_prefix("data.") {
            data.push(DataNode {
                name: n.to_string(),
                digest,
                description: annotation(d, "description"),
                source: annotation(d, "source"),
                uri: d.origin(),
            });
        } else if let Some(n) = d.name.strip_prefix("code.") {
            code.push(CodeNode {
                name: n.to_string(),
                digest,
                git_commit: annotation(d, "gitCommit"),
                uri: d.origin(),
            });
        } else if let Some(n) = d.name.strip_prefix("toolchains.") {
            images.push(ImageNode {
                name: n.to_string(),
                digest,
                uri: d.origin(),
            });
        }
    }
    data.sort_by(|a, b| a.name.cmp(&b.name));
    code.sort_by(|a, b| a.name.cmp(&b.name));
    images.sort_by(|a, b| a.name.cmp(&b.name));

    let recorded: BTreeMap<String, repro_evidence::record::RecordedStep> = st
        .steps()?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut files: BTreeMap<String, Vec<FileNode>> = BTreeMap::new();
    for s in &st.subject {
        let (Some((step, path)), Some(digest)) = (s.name.split_once('/'), s.sha256_text()) else {
            continue;
        };
        files.entry(step.to_string()).or_default().push(FileNode {
            path: path.to_string(),
            digest,
        });
    }
    let mut steps = Vec::new();
    for step in &recipe.steps {
        let Some(rec) = recorded.get(&step.name) else {
            return Err(CannotVerify(format!(
                "record {record} has no result for step `{}` of its recipe",
                step.name
            ))
            .into());
        };
        let inputs = step
            .inputs
            .iter()
            .map(|(mount, from)| {
                let digest = match from {
                    InputRef::Step(n) => recorded.get(n).map(|r| r.output.to_string()),
                    other => digest_of.get(&other.to_string()).cloned(),
                };
                InputEdge {
                    mount: mount.clone(),
                    from: from.to_string(),
                    digest,
                }
            })
            .collect();
        let mut fs = files.remove(&step.name).unwrap_or_default();
        fs.sort_by(|a, b| a.path.cmp(&b.path));
        steps.push(StepNode {
            name: step.name.clone(),
            key: rec.key.to_string(),
            output: rec.output.to_string(),
            toolchain: step.toolchain.clone(),
            inputs,
            needs: step.needs.clone(),
            files: fs,
        });
    }
    Ok(VersionGraph {
        model: format!("{}@{}", ext.name, ext.version),
        record: record.to_string(),
        signed_by,
        recipe: recipe_digest.to_string(),
        steps,
        data,
        code,
        images,
    })
}

impl VersionGraph {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepNode> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The graph cut down to `step` and every step, snapshot, code tree and
    /// image upstream of it.
    pub fn upstream_of(&self, step: &str) -> VersionGraph {
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut todo = vec![step.to_string()];
        while let Some(n) = todo.pop() {
            if !keep.insert(n.clone()) {
                continue;
            }
            if let Some(s) = self.step(&n) {
                for i in &s.inputs {
                    if let Some(up) = i.from.strip_prefix("steps.") {
                        todo.push(up.to_string());
                    }
                }
                todo.extend(s.needs.iter().cloned());
            }
        }
        let steps: Vec<StepNode> = self
            .steps
            .iter()
            .filter(|s| keep.contains(&s.name))
            .cloned()
            .collect();
        let used = |prefix: &str, name: &str| {
            let want = format!("{prefix}.{name}");
            steps
                .iter()
                .any(|s| s.inputs.iter().any(|i| i.from == want))
        };
        VersionGraph {
            model: self.model.clone(),
            record: self.record.clone(),
            signed_by: self.signed_by.clone(),
            recipe: self.recipe.clone(),
            data: self
                .data
                .iter()
                .filter(|d| used("data", &d.name))
                .cloned()
                .collect(),
            code: self
                .code
                .iter()
                .filter(|c| used("code", &c.name))
                .cloned()
                .collect(),
            images: self
                .images
                .iter()
                .filter(|i| steps.iter().any(|s| s.toolchain == i.name))
                .cloned()
                .collect(),
            steps,
        }
    }
}

/// One record of a recorded version.
pub struct VersionRecord {
    /// The model name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The record.
    pub record: RecordDigest,
    /// Whether it is the version's latest record.
    pub latest: bool,
}

/// Every record of every recorded version in the store, sorted by name,
/// version and record digest.
pub fn all_records(store: &Store) -> Result<Vec<VersionRecord>> {
    let mut out = Vec::new();
    for name in store.record_names()? {
        for version in store.record_versions(&name)? {
            let latest = store.resolve_record(&name, &version)?;
            for record in store.records_of(&name, &version)? {
                out.push(VersionRecord {
                    name: name.clone(),
                    version: version.clone(),
                    record,
                    latest: record == latest,
                });
            }
        }
    }
    Ok(out)
}

/// The lineage of a file: every version and step whose outputs hold a file
/// with digest `file`, each with everything upstream of that step.
pub fn of_file(store: &Store, file: &BlobDigest) -> Result<Lineage> {
    let want = file.to_string();
    let mut produced_by = Vec::new();
    let mut graphs = Vec::new();
    for VersionRecord { record, .. } in all_records(store)? {
        let opened = open_record(store, &record.to_string(), &[])
            .with_context(|| format!("reading record {record}"))?;
        let hits: Vec<(String, String)> = opened
            .statement
            .subject
            .iter()
            .filter(|s| s.sha256_text().as_deref() == Some(want.as_str()))
            .filter_map(|s| {
                let (step, path) = s.name.split_once('/')?;
                Some((step.to_string(), path.to_string()))
            })
            .collect();
        if hits.is_empty() {
            continue;
        }
        let g = graph_of(store, &record, &opened.statement, opened.signed_by)?;
        let mut steps = BTreeSet::new();
        for (step, path) in hits {
            produced_by.push(Production {
                model: g.model.clone(),
                record: g.record.clone(),
                step: step.clone(),
                path,
            });
            steps.insert(step);
        }
        for step in steps {
            graphs.push(g.upstream_of(&step));
        }
    }
    if produced_by.is_empty() {
        return Err(UserError(format!(
            "no recorded version has an output file with digest {file}\nhint: `repro build --json` lists each output file's digest; `sha256sum <file>` gives a file's"
        ))
        .into());
    }
    Ok(Lineage {
        file: Some(want),
        produced_by,
        graphs,
    })
}

/// The whole lineage graph of `what` (`name@version` or a record digest).
pub fn of_version(store: &Store, what: &str) -> Result<Lineage> {
    let record = resolve_record_ref(store, what)?;
    Ok(Lineage {
        file: None,
        produced_by: Vec::new(),
        graphs: vec![graph(store, &record)?],
    })
}

/// `repro lineage <what>`: a file digest (`sha256:...` of an output file),
/// a record digest, or `name@version`.
pub fn lineage(store: &Store, what: &str) -> Result<Lineage> {
    if what.starts_with("sha256:") {
        let d: BlobDigest = what.parse().map_err(|e| UserError(format!("{e}")))?;
        // The record digest of a version names that version; anything
        // else is a file.
        let record = RecordDigest::from_hash(d.hash());
        if all_records(store)?.iter().any(|r| r.record == record) {
            return of_version(store, what);
        }
        return of_file(store, &d);
    }
    if what.contains('@') {
        return of_version(store, what);
    }
    Err(UserError(format!(
        "`{what}` is not a file digest or `name@version`\nhint: for example `repro lineage sha256:<hex of model.pkl>` or `repro lineage breast-cancer-classifier@1.0.0`"
    ))
    .into())
}

/// The versions in `stage` now, as the signed audit log says (never the
/// stage files), whose staged record used `tree`: `repro lineage --uses
/// <digest> --stage production`. Files that disagree with the log are
/// returned as warnings; the answer is the log's.
pub fn uses_in_stage(
    store: &Store,
    tree: &TreeDigest,
    stage: crate::Stage,
) -> Result<(Uses, Vec<String>)> {
    let mut u = uses(store, tree)?;
    let state = crate::chain::replay(store)?;
    let warnings = crate::chain::differences(store, &state)?;
    u.versions.retain(|v| {
        let Some((n, ver)) = v.model.split_once('@') else {
            return false;
        };
        state
            .stages
            .get(&(n.to_string(), ver.to_string()))
            .is_some_and(|(s, r)| *s == stage && r.to_string() == v.record)
    });
    Ok((u, warnings))
}

/// Every version whose record used the data snapshot or code tree `tree`.
pub fn uses(store: &Store, tree: &TreeDigest) -> Result<Uses> {
    let want = tree.to_string();
    let mut versions = Vec::new();
    for VersionRecord {
        name,
        version,
        record,
        latest,
    } in all_records(store)?
    {
        let opened = open_record(store, &record.to_string(), &[])
            .with_context(|| format!("reading record {record}"))?;
        for d in &opened
            .statement
            .predicate
            .build_definition
            .resolved_dependencies
        {
            if !(d.name.starts_with("data.") || d.name.starts_with("code.")) {
                continue;
            }
            if d.sha256_text().as_deref() != Some(want.as_str()) {
                continue;
            }
            // Which steps mount it: from the recorded recipe, when it reads.
            let steps = graph_of(store, &record, &opened.statement, String::new())
                .map(|g| {
                    g.steps
                        .iter()
                        .filter(|s| s.inputs.iter().any(|i| i.from == d.name))
                        .map(|s| s.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            versions.push(Use {
                model: format!("{name}@{version}"),
                record: record.to_string(),
                latest,
                as_input: d.name.clone(),
                steps,
            });
        }
    }
    Ok(Uses {
        digest: want,
        versions,
    })
}

/// The text report of `repro lineage --uses`.
pub fn render_uses(u: &Uses) -> String {
    if u.versions.is_empty() {
        return format!("no recorded version used {}\n", u.digest);
    }
    let mut out = format!("{} was used by:\n", u.digest);
    for v in &u.versions {
        out.push_str(&format!(
            "  {}  as {}  (record {}{})",
            v.model,
            v.as_input,
            v.record,
            if v.latest { "" } else { ", an earlier build" }
        ));
        if !v.steps.is_empty() {
            out.push_str(&format!("  steps: {}", v.steps.join(", ")));
        }
        out.push('\n');
    }
    out
}

/// The text report: an indented tree from each output back to its inputs.
pub fn render_text(l: &Lineage) -> String {
    let mut out = String::new();
    if let Some(f) = &l.file {
        out.push_str(&format!("file {f}\n"));
        for p in &l.produced_by {
            out.push_str(&format!(
                "  produced as `{}/{}` by {} (record {})\n",
                p.step, p.path, p.model, p.record
            ));
        }
    }
    for g in &l.graphs {
        let roots: Vec<&StepNode> = match l.file.as_deref() {
            // The producing step: the one whose outputs hold the file.
            Some(f) => g
                .steps
                .iter()
                .filter(|s| s.files.iter().any(|x| x.digest == f))
                .collect(),
            None => sinks(g),
        };
        out.push_str(&format!("{} (record {})\n", g.model, g.record));
        let mut shown = BTreeSet::new();
        for r in roots {
            render_step(&mut out, g, r, 1, l.file.as_deref(), &mut shown);
        }
    }
    out
}

/// Steps no other step depends on.
fn sinks(g: &VersionGraph) -> Vec<&StepNode> {
    g.steps
        .iter()
        .filter(|s| {
            !g.steps.iter().any(|o| {
                o.inputs
                    .iter()
                    .any(|i| i.from.strip_prefix("steps.") == Some(s.name.as_str()))
                    || o.needs.contains(&s.name)
            })
        })
        .collect()
}

fn render_step(
    out: &mut String,
    g: &VersionGraph,
    s: &StepNode,
    depth: usize,
    file: Option<&str>,
    shown: &mut BTreeSet<String>,
) {
    let pad = "  ".repeat(depth);
    if !shown.insert(s.name.clone()) {
        out.push_str(&format!("{pad}step `{}` (shown above)\n", s.name));
        return;
    }
    out.push_str(&format!(
        "{pad}step `{}`  key {}  output {}\n",
        s.name, s.key, s.output
    ));
    for f in &s.files {
        if file.is_none_or(|d| d == f.digest) {
            out.push_str(&format!("{pad}  file `{}` {}\n", f.path, f.digest));
        }
    }
    if let Some(img) = g.images.iter().find(|i| i.name == s.toolchain) {
        out.push_str(&format!(
            "{pad}  image toolchains.{} {}{}\n",
            img.name,
            img.digest,
            img.uri
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ));
    }
    for i in &s.inputs {
        let digest = i.digest.as_deref().unwrap_or("(unknown)");
        if let Some(n) = i.from.strip_prefix("data.") {
            out.push_str(&format!(
                "{pad}  input `{}` <- data.{n} {digest}\n",
                i.mount
            ));
            if let Some(d) = g.data.iter().find(|d| d.name == n) {
                if let Some(desc) = &d.description {
                    out.push_str(&format!("{pad}    description: {desc}\n"));
                }
                if let Some(src) = &d.source {
                    out.push_str(&format!("{pad}    source: {src}\n"));
                }
                if let Some(uri) = &d.uri {
                    out.push_str(&format!("{pad}    snapshot of: {uri}\n"));
                }
            }
        } else if let Some(n) = i.from.strip_prefix("code.") {
            out.push_str(&format!(
                "{pad}  input `{}` <- code.{n} {digest}\n",
                i.mount
            ));
            if let Some(c) = g.code.iter().find(|c| c.name == n) {
                if let Some(commit) = &c.git_commit {
                    out.push_str(&format!("{pad}    git commit: {commit}\n"));
                }
                if let Some(uri) = &c.uri {
                    out.push_str(&format!("{pad}    snapshot of: {uri}\n"));
                }
            }
        } else if let Some(n) = i.from.strip_prefix("steps.") {
            out.push_str(&format!("{pad}  input `{}` <- steps.{n}\n", i.mount));
            if let Some(up) = g.step(n) {
                render_step(out, g, up, depth + 2, None, shown);
            }
        }
    }
    for n in &s.needs {
        out.push_str(&format!("{pad}  after step `{n}`\n"));
    }
}

/// Quote a string for Graphviz: `"..."` with `"` and `\` escaped.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

/// The lineage as a Graphviz digraph: data, code and images feed steps,
/// steps feed steps and write files. One cluster per version; the output
/// depends only on the evidence (nodes and edges in a fixed order).
pub fn render_dot(l: &Lineage) -> String {
    let mut out =
        String::from("digraph lineage {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n");
    for (gi, g) in l.graphs.iter().enumerate() {
        let p = format!("g{gi}");
        let id = |kind: &str, name: &str| dot_quote(&format!("{p}:{kind}:{name}"));
        out.push_str(&format!(
            "  subgraph {} {{\n    label={};\n",
            dot_quote(&format!("cluster_{gi}")),
            dot_quote(&format!("{} (record {})", g.model, short(&g.record)))
        ));
        for d in &g.data {
            let mut label = format!("data.{}\n{}", d.name, short(&d.digest));
            if let Some(src) = &d.source {
                label.push_str(&format!("\nsource: {src}"));
            }
            out.push_str(&format!(
                "    {} [shape=cylinder, label={}];\n",
                id("data", &d.name),
                dot_quote(&label)
            ));
        }
        for c in &g.code {
            let mut label = format!("code.{}\n{}", c.name, short(&c.digest));
            if let Some(commit) = &c.git_commit {
                label.push_str(&format!("\ngit {commit}"));
            }
            out.push_str(&format!(
                "    {} [shape=folder, label={}];\n",
                id("code", &c.name),
                dot_quote(&label)
            ));
        }
        for i in &g.images {
            out.push_str(&format!(
                "    {} [shape=component, label={}];\n",
                id("image", &i.name),
                dot_quote(&format!("toolchains.{}\n{}", i.name, short(&i.digest)))
            ));
        }
        for s in &g.steps {
            out.push_str(&format!(
                "    {} [shape=box, style=bold, label={}];\n",
                id("step", &s.name),
                dot_quote(&format!("step {}\n{}", s.name, short(&s.key)))
            ));
            for f in &s.files {
                out.push_str(&format!(
                    "    {} [shape=note, label={}];\n",
                    id("file", &format!("{}/{}", s.name, f.path)),
                    dot_quote(&format!("{}\n{}", f.path, short(&f.digest)))
                ));
            }
        }
        for s in &g.steps {
            let to = id("step", &s.name);
            if g.images.iter().any(|i| i.name == s.toolchain) {
                out.push_str(&format!("    {} -> {to};\n", id("image", &s.toolchain)));
            }
            for i in &s.inputs {
                let from = match i.from.split_once('.') {
                    Some(("data", n)) => id("data", n),
                    Some(("code", n)) => id("code", n),
                    Some(("steps", n)) => id("step", n),
                    _ => continue,
                };
                out.push_str(&format!(
                    "    {from} -> {to} [label={}];\n",
                    dot_quote(&i.mount)
                ));
            }
            for n in &s.needs {
                out.push_str(&format!("    {} -> {to} [style=dashed];\n", id("step", n)));
            }
            for f in &s.files {
                out.push_str(&format!(
                    "    {to} -> {};\n",
                    id("file", &format!("{}/{}", s.name, f.path))
                ));
            }
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VersionGraph {
        VersionGraph {
            model: "m@1".into(),
            record: "sha256:aa".into(),
            signed_by: "k".into(),
            recipe: "sha256:bb".into(),
            steps: vec![
                StepNode {
                    name: "prep".into(),
                    key: "sha256:01".into(),
                    output: "sha256:02".into(),
                    toolchain: "bb".into(),
                    inputs: vec![InputEdge {
                        mount: "data".into(),
                        from: "data.raw".into(),
                        digest: Some("sha256:d1".into()),
                    }],
                    needs: vec![],
                    files: vec![],
                },
                StepNode {
                    name: "train".into(),
                    key: "sha256:03".into(),
                    output: "sha256:04".into(),
                    toolchain: "bb".into(),
                    inputs: vec![
                        InputEdge {
                            mount: "code".into(),
                            from: "code.src".into(),
                            digest: Some("sha256:c1".into()),
                        },
                        InputEdge {
                            mount: "feat".into(),
                            from: "steps.prep".into(),
                            digest: Some("sha256:02".into()),
                        },
                    ],
                    needs: vec![],
                    files: vec![FileNode {
                        path: "model \"x\".pkl".into(),
                        digest: "sha256:f1".into(),
                    }],
                },
                StepNode {
                    name: "other".into(),
                    key: "sha256:05".into(),
                    output: "sha256:06".into(),
                    toolchain: "py".into(),
                    inputs: vec![InputEdge {
                        mount: "d".into(),
                        from: "data.unrelated".into(),
                        digest: Some("sha256:d2".into()),
                    }],
                    needs: vec![],
                    files: vec![],
                },
            ],
            data: vec![
                DataNode {
                    name: "raw".into(),
                    digest: "sha256:d1".into(),
                    description: Some("rows".into()),
                    source: Some("warehouse".into()),
                    uri: None,
                },
                DataNode {
                    name: "unrelated".into(),
                    digest: "sha256:d2".into(),
                    description: None,
                    source: None,
                    uri: None,
                },
            ],
            code: vec![CodeNode {
                name: "src".into(),
                digest: "sha256:c1".into(),
                git_commit: Some("abc123".into()),
                uri: None,
            }],
            images: vec![
                ImageNode {
                    name: "bb".into(),
                    digest: "sha256:i1".into(),
                    uri: None,
                },
                ImageNode {
                    name: "py".into(),
                    digest: "sha256:i2".into(),
                    uri: None,
                },
            ],
        }
    }

    #[test]
    fn upstream_keeps_the_step_its_ancestors_and_only_their_inputs() {
        let g = sample().upstream_of("train");
        let names: Vec<&str> = g.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["prep", "train"]);
        assert_eq!(g.data.len(), 1);
        assert_eq!(g.data[0].name, "raw");
        assert_eq!(g.code.len(), 1);
        assert_eq!(g.images.len(), 1);
        assert_eq!(g.images[0].name, "bb");
    }

    #[test]
    fn text_tree_walks_from_the_file_to_the_data_source() {
        let l = Lineage {
            file: Some("sha256:f1".into()),
            produced_by: vec![],
            graphs: vec![sample().upstream_of("train")],
        };
        let text = render_text(&l);
        let train = text.find("step `train`").unwrap();
        let prep = text.find("step `prep`").unwrap();
        let source = text.find("source: warehouse").unwrap();
        assert!(train < prep && prep < source, "{text}");
        assert!(text.contains("git commit: abc123"), "{text}");
    }

    #[test]
    fn dot_escapes_quotes_and_links_data_to_steps_to_files() {
        let l = Lineage {
            file: None,
            produced_by: vec![],
            graphs: vec![sample()],
        };
        let dot = render_dot(&l);
        assert!(dot.starts_with("digraph lineage {\n"), "{dot}");
        assert!(dot.ends_with("}\n"), "{dot}");
        assert!(
            dot.contains(r#""g0:data:raw" -> "g0:step:prep" [label="data"];"#),
            "{dot}"
        );
        assert!(
            dot.contains(r#""g0:step:prep" -> "g0:step:train" [label="feat"];"#),
            "{dot}"
        );
        assert!(dot.contains(r#"model \"x\".pkl"#), "{dot}");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
    }
}
