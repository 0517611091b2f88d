//! The vocabulary every format module writes its result in ([`Format`],
//! [`Class`], [`Finding`]) and the small helpers they share. A leaf: it uses
//! no other module of the crate.

use std::cell::Cell;
use std::fmt;
use std::io::Read;

use serde_json::json;

/// Largest input (per side) parsed into a tree for JSON, CSV and text; larger
/// files of these formats are compared as bytes.
pub const STRUCTURE_LIMIT: usize = 64 << 20;

/// Bytes that one explanation may decompress or lay out beyond its inputs:
/// a fixed allowance plus [`EXPANSION_RATIO`] times the inputs' length.
const EXPANSION_FLOOR: u64 = 64 << 20;
/// See [`EXPANSION_FLOOR`].
const EXPANSION_RATIO: u64 = 16;

/// How many bytes one explanation may still produce from its inputs:
/// decompressed zip entries and joblib streams, PyTorch views laid out
/// contiguously. Shared by every nested archive of one comparison, so that
/// a zip bomb, however deeply nested, costs at most
/// `64 MiB + 16 * (expected + actual)` bytes of work and memory.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    left: Cell<u64>,
}

impl Budget {
    /// The budget for comparing `a` with `b`.
    pub(crate) fn for_inputs(a: &[u8], b: &[u8]) -> Budget {
        let inputs = (a.len() as u64).saturating_add(b.len() as u64);
        Budget::new(EXPANSION_FLOOR.saturating_add(inputs.saturating_mul(EXPANSION_RATIO)))
    }

    pub(crate) fn new(limit: u64) -> Budget {
        Budget {
            limit,
            left: Cell::new(limit),
        }
    }

    /// The whole budget, for messages.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes `n` bytes from the budget; false (and nothing taken) when
    /// fewer are left.
    pub(crate) fn take(&self, n: u64) -> bool {
        match self.left.get().checked_sub(n) {
            Some(rest) => {
                self.left.set(rest);
                true
            }
            None => false,
        }
    }

    /// Reads `r` to its end, or to `max` bytes (what is past `max` is left
    /// unread, as a per-entry cap). `hint` is the size the input claims and
    /// `real` a bound the real size cannot exceed for a stored input (the
    /// length of the file it comes from): the first allocation is the
    /// smaller of the two. `None` when the budget runs out first.
    pub(crate) fn read_to_end(
        &self,
        r: impl Read,
        max: u64,
        hint: u64,
        real: u64,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let left = self.left.get();
        let cap = max.min(left);
        let mut out = Vec::with_capacity(usize::try_from(hint.min(real).min(cap)).unwrap_or(0));
        // One byte more than the budget allows tells a stream that does not
        // fit from one that fits exactly.
        let extra = u64::from(cap < max);
        r.take(cap + extra).read_to_end(&mut out)?;
        let n = out.len() as u64;
        if n > cap {
            self.left.set(0);
            return Ok(None);
        }
        self.left.set(left - n);
        Ok(Some(out))
    }
}

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

/// Two texts that differ, each shown as at most about `max` characters: the
/// whole text when both are that short, otherwise the part from shortly
/// before the first difference, with each text's length and where the
/// first difference is, so two long texts never look the same.
pub(crate) fn show_text_pair(a: &str, b: &str, max: usize) -> (String, String) {
    let (na, nb) = (a.chars().count(), b.chars().count());
    if na <= max && nb <= max {
        return (format!("{a:?}"), format!("{b:?}"));
    }
    let first = a
        .chars()
        .zip(b.chars())
        .position(|(x, y)| x != y)
        .unwrap_or(na.min(nb));
    let start = first.saturating_sub(max / 4);
    let show = |s: &str, n: usize| {
        let tail = s.char_indices().nth(start).map_or("", |(i, _)| &s[i..]);
        let cut = clip(tail, max);
        let lead = if start > 0 { "..." } else { "" };
        format!("{lead}{cut:?} ({n} chars, differs from char {})", first + 1)
    };
    (show(a, na), show(b, nb))
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Shortens `s` to about `max` characters, marking the cut.
/// Takes time in `max`, not in the length of `s`.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}...", &s[..end]),
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
