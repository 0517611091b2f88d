//! The vocabulary every format module writes its result in ([`Format`],
//! [`Class`], [`Finding`]) and the small helpers they share. A leaf: it uses
//! no other module of the crate.

use std::fmt;

use serde_json::json;

/// Largest input (per side) parsed into a tree for JSON, CSV and text; larger
/// files of these formats are compared as bytes.
pub const STRUCTURE_LIMIT: usize = 64 << 20;

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
    /// A PyTorch `torch.save` file: a zip holding `<folder>/data.pkl` and
    /// one raw storage per tensor under `<folder>/data/`.
    Torch,
    /// A safetensors file: a JSON header naming each tensor's dtype, shape
    /// and byte range, then the raw data.
    Safetensors,
    /// An ONNX model (a protobuf `ModelProto`).
    Onnx,
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
            Format::Torch => "torch",
            Format::Safetensors => "safetensors",
            Format::Onnx => "onnx",
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

    /// The class as JSON: `{"kind": ...}`, with the magnitudes for a
    /// numeric class.
    pub(crate) fn to_json(self) -> serde_json::Value {
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

/// Explains two versions of an archive entry, given its name: the
/// dispatcher, handed down to the archive formats.
pub(crate) type ExplainEntry<'a> = dyn Fn(&str, &[u8], &[u8]) -> Finding + 'a;

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

/// Shortens `s` to about `max` characters, marking the cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}

/// The larger of two numbers, ignoring a NaN unless both are.
pub(crate) fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

/// `x` as a JSON number, or as a string (`"NaN"`, `"inf"`) when not finite.
pub(crate) fn finite_or_null(x: f64) -> serde_json::Value {
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
}
