//! `repro card`: a model card written from the evidence in the store.
//!
//! The card of `name@version` is put together from:
//! - the recorded recipe's `[model]` table (name, version, owner, purpose,
//!   intended use, limitations);
//! - the data snapshots of the record (digest, description, source system);
//! - every output file named `metrics.json` (overall metrics, per-slice
//!   tables, gaps between slices, other values);
//! - the reproducibility evidence: the record's digest and signer, and each
//!   verification attestation (verifier identity, result, platform, time);
//! - the approvals under `v1/refs/approvals/<record hex>/`, each judged by
//!   the rule `repro promote` counts them by
//!   ([`crate::approvals::judge`]);
//! - the lineage graph (data -> steps -> output files).
//!
//! The card holds no time of its own making: the same evidence gives the
//! same Markdown and HTML, byte for byte. The Markdown is also kept in the
//! store as a blob, named by `v1/refs/cards/<record hex>` (which holds the
//! blob digest), so policy checks can see that a card exists.

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
        name: m.name.clone(),
        version: m.version.clone(),
        owner: m.owner.clone(),
        purpose: m.purpose.clone(),
        intended_use: m.intended_use.clone(),
        limitations: m.limitations.clone(),
    };
    let lineage = lineage::graph(store, &record)?;

    let mut metrics = Vec::new();
    for step in &lineage.steps {
        for f in &step.files {
            let base = f.path.rsplit('/').next().unwrap_or(&f.path);
            if base != "metrics.json" {
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
            let why_not = judged
                .get(&c.digest.to_string())
                .cloned()
                .unwrap_or_else(|| Some("it was not judged".to_string()));
            Reproduction {
                result: p.verification_result.clone(),
                verifier: p.repro.identity.to_string(),
                time: p.time_verified.clone(),
                platform: format!(
                    "{}, {} {}, kernel {}, {}",
                    p.repro.platform.cpu_model,
                    p.repro.platform.os,
                    p.repro.platform.arch,
                    p.repro.platform.kernel,
                    p.repro.platform.backend
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
    Ok(Card {
        model,
        record: record.to_string(),
        built_by: opened.signed_by,
        recipe: recipe_digest.to_string(),
        metrics,
        reproductions,
        approvals,
        approval_problems,
        lineage,
    })
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
}

fn blocks(card: &Card) -> Vec<Block> {
    let m = &card.model;
    let mut b = vec![
        Block::Heading(1, format!("Model card: {}@{}", m.name, m.version)),
        Block::Facts(vec![
            ("Model".into(), m.name.clone()),
            ("Version".into(), m.version.clone()),
            ("Owner".into(), or_none(&m.owner).to_string()),
            ("Record".into(), card.record.clone()),
        ]),
        Block::Heading(2, "Purpose".into()),
        Block::Para(or_none(&m.purpose).to_string()),
        Block::Heading(2, "Intended use".into()),
        Block::Para(or_none(&m.intended_use).to_string()),
        Block::Heading(2, "Limitations".into()),
        Block::Para(or_none(&m.limitations).to_string()),
        Block::Heading(2, "Training data".into()),
    ];
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
    b.push(Block::Heading(2, "Lineage".into()));
    let l = lineage::Lineage {
        file: None,
        produced_by: Vec::new(),
        graphs: vec![card.lineage.clone()],
    };
    b.push(Block::Pre(lineage::render_text(&l)));
    b
}

/// The card as Markdown.
pub fn render_markdown(card: &Card) -> String {
    let mut out = String::new();
    for block in blocks(card) {
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
        }
    }
    out
}

const CSS: &str =
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:left;vertical-align:top}\
th{background:#eee}td{font-variant-numeric:tabular-nums}\
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}\
code,pre{font-family:monospace}";

/// The card as one self-contained HTML page (inline style, no scripts, no
/// external assets).
pub fn render_html(card: &Card) -> String {
    let m = &card.model;
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!(
        "<title>Model card: {}</title>\n",
        html(&format!("{}@{}", m.name, m.version))
    ));
    out.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n"));
    for block in blocks(card) {
        match block {
            Block::Heading(level, text) => {
                out.push_str(&format!("<h{level}>{}</h{level}>\n", html(&text)))
            }
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", html(&text))),
            Block::Facts(pairs) => {
                out.push_str("<ul>\n");
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
                out.push_str("<table>\n<thead><tr>");
                for h in &t.header {
                    out.push_str(&format!("<th>{}</th>", html(h)));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for r in &t.rows {
                    out.push_str("<tr>");
                    for c in r {
                        out.push_str(&format!("<td>{}</td>", html(c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
            Block::Pre(text) => out.push_str(&format!("<pre>{}</pre>\n", html(&text))),
        }
    }
    out.push_str("</body>\n</html>\n");
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
