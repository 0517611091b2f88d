//! Explains, in terms an ML engineer can act on, why two versions of one
//! output file differ.
//!
//! [`explain`] picks the file's [`Format`] from its name and magic bytes,
//! compares the structure both versions hold (zip entries, NumPy arrays,
//! pickle object graphs, JSON values, CSV rows, text lines, or raw bytes) and
//! sorts the difference into a [`Class`]: metadata only, order only, numeric
//! (with magnitudes) or unknown. It never fails: input it cannot parse is
//! explained as text or bytes, and the reason is kept in the details.
//!
//! ```
//! let e = repro_explain::explain("metrics.json", br#"{"auc": 0.91}"#, br#"{"auc": 0.92}"#);
//! assert_eq!(e.summary, "numeric: 1 of 1 values differ, max abs 1.0e-2, max rel 1.1e-2");
//! ```
//!
//! Memory stays within a few times the inputs: zip entries are read one pair
//! at a time, arrays are compared in place, and formats that build a tree
//! (JSON, CSV, text) are only parsed below [`STRUCTURE_LIMIT`] bytes.

mod archive;
mod binary;
mod error;
mod json;
mod npy;
mod numeric;
mod pickle;
mod table;
mod text;

use std::fmt;
use std::path::Path;

pub use error::Error;
use serde_json::json;

/// Largest input (per side) parsed into a tree for JSON, CSV and text; larger
/// files of these formats are compared as bytes.
pub const STRUCTURE_LIMIT: usize = 64 << 20;

/// Most detail lines an [`Explanation`] carries; the last one says how many
/// were left out.
pub const MAX_DETAILS: usize = 40;

/// How deep zip archives nested in zip archives are opened.
const MAX_DEPTH: usize = 4;

/// The file format an explanation was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A zip archive (`.zip`, `.keras`, or anything starting with `PK\x03\x04`).
    Zip,
    /// A NumPy array file (`.npy`).
    Npy,
    /// A zip of NumPy arrays (`.npz`).
    Npz,
    /// A Python pickle or a joblib file, possibly zlib or gzip compressed.
    Pickle,
    /// A JSON document.
    Json,
    /// A CSV or TSV table.
    Csv,
    /// UTF-8 text without NUL bytes.
    Text,
    /// Anything else.
    Binary,
}

impl Format {
    /// The lowercase name used in summaries and JSON (`"npz"`, `"pickle"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Pickle => "pickle",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Text => "text",
            Format::Binary => "binary",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of difference separates the two versions, from harmless to
/// unexplained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Class {
    /// The bytes are the same.
    Identical,
    /// Only metadata differs (timestamps, formatting, a stored thread count);
    /// the content a model or a metric is made of is the same.
    MetadataOnly,
    /// The same content in another order (zip entries, JSON keys, CSV rows,
    /// pickle memo numbering).
    OrderOnly,
    /// Numbers differ; `max_abs` and `max_rel` are the largest absolute and
    /// relative (to the larger magnitude of the pair) differences seen.
    Numeric {
        /// Largest absolute difference.
        max_abs: f64,
        /// Largest relative difference, `|a - b| / max(|a|, |b|)`.
        max_rel: f64,
    },
    /// Anything else: content changed in a way the explainer cannot bound.
    Unknown,
}

impl Class {
    /// Orders classes from harmless (0, identical) to unexplained (4).
    pub fn severity(&self) -> u8 {
        match self {
            Class::Identical => 0,
            Class::MetadataOnly => 1,
            Class::OrderOnly => 2,
            Class::Numeric { .. } => 3,
            Class::Unknown => 4,
        }
    }

    /// The more severe of two classes; two numeric classes keep the larger
    /// magnitudes of both.
    pub fn combine(self, other: Class) -> Class {
        match (self, other) {
            (
                Class::Numeric {
                    max_abs: a1,
                    max_rel: r1,
                },
                Class::Numeric {
                    max_abs: a2,
                    max_rel: r2,
                },
            ) => Class::Numeric {
                max_abs: fmax(a1, a2),
                max_rel: fmax(r1, r2),
            },
            (a, b) if b.severity() > a.severity() => b,
            (a, _) => a,
        }
    }

    fn to_json(self) -> serde_json::Value {
        match self {
            Class::Numeric { max_abs, max_rel } => json!({
                "kind": "numeric",
                "max_abs": finite_or_null(max_abs),
                "max_rel": finite_or_null(max_rel),
            }),
            other => json!({ "kind": other.to_string().replace(' ', "_") }),
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Identical => "identical",
            Class::MetadataOnly => "metadata only",
            Class::OrderOnly => "order only",
            Class::Numeric { .. } => "numeric",
            Class::Unknown => "unknown",
        })
    }
}

/// Why two versions of one file differ.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The format the files were compared as.
    pub format: Format,
    /// The kind of difference.
    pub class: Class,
    /// One line, `<class>: <what>`, e.g. `metadata only: zip entry timestamps`
    /// or `numeric: 12 of 4096 elements differ, max abs 3.1e-7, max rel 2.4e-6, max 3 ULP`.
    pub summary: String,
    /// Lines for a human, unindented (the caller indents them); at most
    /// [`MAX_DETAILS`] lines, the last saying how many more there were.
    pub details: Vec<String>,
    /// The same facts, structured, for `--json` output. Always has the keys
    /// `format`, `class`, `summary`, `details`, `expected_size`,
    /// `actual_size` and `first_difference` (byte offset or null), plus
    /// format-specific facts under `facts`.
    pub json: serde_json::Value,
}

/// What a format-specific comparison found, before the common facts (sizes,
/// first differing offset) are added.
#[derive(Debug)]
pub(crate) struct Finding {
    pub(crate) format: Format,
    pub(crate) class: Class,
    /// The part of the summary after `<class>: `.
    pub(crate) what: String,
    pub(crate) details: Vec<String>,
    pub(crate) facts: serde_json::Value,
}

impl Finding {
    pub(crate) fn new(format: Format, class: Class, what: impl Into<String>) -> Self {
        Finding {
            format,
            class,
            what: what.into(),
            details: Vec::new(),
            facts: serde_json::Value::Null,
        }
    }

    pub(crate) fn summary(&self) -> String {
        if self.what.is_empty() {
            self.class.to_string()
        } else {
            format!("{}: {}", self.class, self.what)
        }
    }
}

/// Explains why `expected` and `actual`, two versions of the file at `path`
/// (used only for its extension and in messages), differ.
///
/// The format is chosen by extension first and magic bytes second; input
/// that does not parse as its format is explained as text or bytes and the
/// parse error is kept in the details. Never panics.
pub fn explain(path: &str, expected: &[u8], actual: &[u8]) -> Explanation {
    let finding = explain_finding(path, expected, actual, 0);
    let first = first_difference(expected, actual);
    let summary = finding.summary();
    let mut details = Vec::new();
    if finding.class != Class::Identical {
        details.push(format!(
            "sizes: {} vs {} bytes",
            expected.len(),
            actual.len()
        ));
        if let Some(off) = first {
            details.push(format!("first difference at byte {off} (0x{off:x})"));
        }
    }
    details.extend(finding.details);
    let details = bound_lines(details, MAX_DETAILS);
    let json = json!({
        "format": finding.format.as_str(),
        "class": finding.class.to_json(),
        "summary": summary,
        "details": details,
        "expected_size": expected.len(),
        "actual_size": actual.len(),
        "first_difference": first,
        "facts": finding.facts,
    });
    Explanation {
        format: finding.format,
        class: finding.class,
        summary,
        details,
        json,
    }
}

/// The format-specific part of [`explain`]; also used for zip entries.
pub(crate) fn explain_finding(path: &str, a: &[u8], b: &[u8], depth: usize) -> Finding {
    let format = detect(path, a, b);
    if a == b {
        return Finding::new(format, Class::Identical, "");
    }
    let parsed = match format {
        Format::Zip | Format::Npz if depth < MAX_DEPTH => archive::explain(path, a, b, depth),
        Format::Zip | Format::Npz => Err(Error::TooDeep),
        Format::Npy => npy::explain(a, b),
        Format::Pickle => pickle::explain(a, b),
        Format::Json => json::explain(a, b),
        Format::Csv => table::explain(path, a, b),
        Format::Text => text::explain(a, b),
        Format::Binary => return binary::explain(a, b),
    };
    match parsed {
        Ok(finding) => finding,
        Err(err) => {
            let mut fallback = if format != Format::Text && is_text(a) && is_text(b) && small(a, b)
            {
                text::explain(a, b).unwrap_or_else(|_| binary::explain(a, b))
            } else {
                binary::explain(a, b)
            };
            fallback.details.insert(
                0,
                format!(
                    "could not compare as {format}: {err}; compared as {}",
                    fallback.format
                ),
            );
            fallback
        }
    }
}

fn small(a: &[u8], b: &[u8]) -> bool {
    a.len() <= STRUCTURE_LIMIT && b.len() <= STRUCTURE_LIMIT
}

/// Chooses the format by extension, then by magic bytes of either side.
fn detect(path: &str, a: &[u8], b: &[u8]) -> Format {
    let name = path
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "npz" => return Format::Npz,
        "zip" | "keras" | "pt" | "pth" | "mar" | "nemo" if is_zip(a) || is_zip(b) => {
            return Format::Zip
        }
        "npy" => return Format::Npy,
        "pkl" | "pickle" | "joblib" | "sav" => return Format::Pickle,
        "json" | "ipynb" => return Format::Json,
        "csv" | "tsv" => return Format::Csv,
        _ => {}
    }
    let magic = |f: fn(&[u8]) -> bool| f(a) || f(b);
    if magic(is_zip) {
        Format::Zip
    } else if magic(npy::is_npy) {
        Format::Npy
    } else if magic(pickle::is_pickle) {
        Format::Pickle
    } else if is_text(a) && is_text(b) {
        let starts_json = |d: &[u8]| {
            matches!(
                d.iter().find(|c| !c.is_ascii_whitespace()),
                Some(b'{' | b'[')
            )
        };
        if starts_json(a)
            && starts_json(b)
            && small(a, b)
            && serde_json::from_slice::<serde_json::Value>(a).is_ok()
            && serde_json::from_slice::<serde_json::Value>(b).is_ok()
        {
            Format::Json
        } else {
            Format::Text
        }
    } else {
        Format::Binary
    }
}

fn is_zip(d: &[u8]) -> bool {
    d.starts_with(b"PK\x03\x04") || d.starts_with(b"PK\x05\x06")
}

/// Valid UTF-8 without NUL bytes.
pub(crate) fn is_text(d: &[u8]) -> bool {
    !d.contains(&0) && std::str::from_utf8(d).is_ok()
}

/// The offset of the first byte at which `a` and `b` differ; when one is a
/// prefix of the other, the length of the shorter. `None` when equal.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    const CHUNK: usize = 4096;
    let n = a.len().min(b.len());
    let mut off = 0;
    while off < n {
        let end = (off + CHUNK).min(n);
        if a[off..end] != b[off..end] {
            let i = a[off..end]
                .iter()
                .zip(&b[off..end])
                .position(|(x, y)| x != y)?;
            return Some((off + i) as u64);
        }
        off = end;
    }
    (a.len() != b.len()).then_some(n as u64)
}

/// Runs `diffoscope --text - <expected> <actual>` when `diffoscope` is on
/// `PATH` and returns its report; `None` when it is not installed.
///
/// diffoscope exits 1 when the files differ, which is not an error here; an
/// error is a failure to run it or an exit status above 1 (its stderr).
pub fn diffoscope(expected: &Path, actual: &Path) -> Option<Result<String, String>> {
    let program = find_on_path("diffoscope")?;
    let out = std::process::Command::new(program)
        .arg("--text")
        .arg("-")
        .arg(expected)
        .arg(actual)
        .stdin(std::process::Stdio::null())
        .output();
    Some(match out {
        Err(e) => Err(format!("could not run `diffoscope`: {e}")),
        Ok(out) if matches!(out.status.code(), Some(0 | 1)) => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(out) => Err(format!(
            "`diffoscope` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    })
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Keeps at most `max` lines; the last kept line says how many were dropped.
pub(crate) fn bound_lines(mut lines: Vec<String>, max: usize) -> Vec<String> {
    if lines.len() > max {
        let more = lines.len() - (max - 1);
        lines.truncate(max - 1);
        lines.push(format!("... {more} more"));
    }
    lines
}

/// Shortens `s` to about `max` characters, marking the cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}

fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_finds_offset_and_prefix() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
        let a = vec![7u8; 10_000];
        let mut b = a.clone();
        b[9_000] = 8;
        assert_eq!(first_difference(&a, &b), Some(9_000));
    }

    #[test]
    fn combine_keeps_the_worse_class_and_larger_magnitudes() {
        let n1 = Class::Numeric {
            max_abs: 1.0,
            max_rel: 0.5,
        };
        let n2 = Class::Numeric {
            max_abs: 2.0,
            max_rel: 0.1,
        };
        assert_eq!(
            n1.combine(n2),
            Class::Numeric {
                max_abs: 2.0,
                max_rel: 0.5
            }
        );
        assert_eq!(
            Class::MetadataOnly.combine(Class::OrderOnly),
            Class::OrderOnly
        );
        assert_eq!(n1.combine(Class::Unknown), Class::Unknown);
        assert_eq!(
            Class::Identical.combine(Class::MetadataOnly),
            Class::MetadataOnly
        );
    }

    #[test]
    fn details_are_bounded() {
        let lines: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let b = bound_lines(lines, 10);
        assert_eq!(b.len(), 10);
        assert_eq!(b[9], "... 91 more");
    }
}
