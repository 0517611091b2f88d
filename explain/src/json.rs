//! JSON documents: the key paths and values that differ, and whether only
//! formatting or key order differs.

use serde_json::{json, Value};

use crate::common::{clip, Class, Finding, Format, STRUCTURE_LIMIT};
use crate::error::{side, Error, Result};
use crate::numeric::Stats;
use crate::text;

/// Differences kept (the rest are counted).
const KEEP: usize = 200;
/// Longest rendering of a value in the details.
const VALUE_CHARS: usize = 60;

#[derive(Debug)]
enum Change {
    Changed(Value, Value),
    Added(Value),
    Removed(Value),
}

#[derive(Default)]
struct Walk {
    kept: Vec<(String, Change)>,
    count: usize,
    numbers: Stats,
    /// Differences that are numbers on both sides.
    numeric: usize,
    /// Differences that are strings differing only in a timestamp.
    timestamps: usize,
}

impl Walk {
    fn push(&mut self, path: &str, change: Change) {
        self.count += 1;
        if self.kept.len() < KEEP {
            self.kept.push((path.to_string(), change));
        }
    }

    fn walk(&mut self, path: &mut String, a: &Value, b: &Value) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    let len = path.len();
                    push_key(path, k);
                    match y.get(k) {
                        Some(vb) => self.walk(path, va, vb),
                        None => self.push(path, Change::Removed(va.clone())),
                    }
                    path.truncate(len);
                }
                for (k, vb) in y {
                    if !x.contains_key(k) {
                        let len = path.len();
                        push_key(path, k);
                        self.push(path, Change::Added(vb.clone()));
                        path.truncate(len);
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                for i in 0..x.len().max(y.len()) {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    match (x.get(i), y.get(i)) {
                        (Some(va), Some(vb)) => self.walk(path, va, vb),
                        (Some(va), None) => self.push(path, Change::Removed(va.clone())),
                        (None, Some(vb)) => self.push(path, Change::Added(vb.clone())),
                        (None, None) => {}
                    }
                    path.truncate(len);
                }
            }
            (Value::Number(x), Value::Number(y)) => {
                self.numbers.total += 1;
                if x != y {
                    let (p, q) = (
                        x.as_f64().unwrap_or(f64::NAN),
                        y.as_f64().unwrap_or(f64::NAN),
                    );
                    self.numbers.add(self.numbers.total - 1, p, q, None);
                    self.numeric += 1;
                    self.push(path, Change::Changed(a.clone(), b.clone()));
                }
            }
            (Value::String(x), Value::String(y)) => {
                if x != y {
                    let (mx, nx) = text::mask_timestamps(x);
                    let (my, ny) = text::mask_timestamps(y);
                    if mx == my && nx + ny > 0 {
                        self.timestamps += 1;
                    }
                    self.push(path, Change::Changed(a.clone(), b.clone()));
                }
            }
            _ => {
                if a != b {
                    self.push(path, Change::Changed(a.clone(), b.clone()));
                }
            }
        }
    }
}

fn push_key(path: &mut String, k: &str) {
    let ident = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident {
        path.push('.');
        path.push_str(k);
    } else {
        path.push('[');
        path.push_str(&Value::String(k.to_string()).to_string());
        path.push(']');
    }
}

fn show(v: &Value) -> String {
    clip(&v.to_string(), VALUE_CHARS)
}

/// The object keys of a JSON text in document order (strings followed by a
/// colon), read without building a tree.
fn key_sequence(d: &[u8]) -> Vec<&[u8]> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < d.len() {
        if d[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < d.len() && d[j] != b'"' {
                j += if d[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(d.len());
            let mut k = end + 1;
            while k < d.len() && d[k].is_ascii_whitespace() {
                k += 1;
            }
            if d.get(k) == Some(&b':') {
                keys.push(&d[start..end]);
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    keys
}

/// A rendering of `v` in which every list is sorted (by the rendering of
/// its elements) and object keys are in sorted order: two values have the
/// same rendering when they hold the same elements at every depth, lists in
/// any order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let mut parts: Vec<String> = items.iter().map(canonical).collect();
            parts.sort_unstable();
            format!("[{}]", parts.join(","))
        }
        Value::Object(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            parts.sort_unstable();
            format!("{{{}}}", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// The paths of the lists whose elements are the same in another order
/// (`a` and `b` have the same [`canonical`] rendering). A list whose
/// elements differ only inside (each pair the same up to order) is not
/// itself reordered: its elements are visited instead.
fn permuted_lists(path: &mut String, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                if let Some(vb) = y.get(k) {
                    let len = path.len();
                    push_key(path, k);
                    permuted_lists(path, va, vb, out);
                    path.truncate(len);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let pairwise =
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| canonical(p) == canonical(q));
            if pairwise {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    permuted_lists(path, p, q, out);
                    path.truncate(len);
                }
            } else {
                out.push(path.clone());
            }
        }
        _ => {}
    }
}

/// Compares two JSON documents.
pub(crate) fn explain(a: &[u8], b: &[u8]) -> Result<Finding> {
    if a.len() > STRUCTURE_LIMIT || b.len() > STRUCTURE_LIMIT {
        return Err(Error::TooLarge {
            limit: STRUCTURE_LIMIT,
        });
    }
    let va: Value = serde_json::from_slice(a).map_err(|source| Error::Json {
        side: side(0),
        source,
    })?;
    let vb: Value = serde_json::from_slice(b).map_err(|source| Error::Json {
        side: side(1),
        source,
    })?;
    if va == vb {
        return Ok(if key_sequence(a) == key_sequence(b) {
            Finding::new(Format::Json, Class::MetadataOnly, "JSON formatting")
        } else {
            let mut f = Finding::new(Format::Json, Class::OrderOnly, "JSON key order");
            f.details
                .push("same keys and values, keys in another order".to_string());
            f
        });
    }
    if canonical(&va) == canonical(&vb) {
        let mut lists = Vec::new();
        permuted_lists(&mut "$".to_string(), &va, &vb, &mut lists);
        let mut f = Finding::new(Format::Json, Class::OrderOnly, "JSON list order");
        f.details.push(format!(
            "same elements in another order in {} lists",
            lists.len()
        ));
        f.details.extend(
            lists
                .iter()
                .take(KEEP)
                .map(|p| format!("`{p}`: same elements, another order")),
        );
        f.facts = json!({ "reordered_lists": lists.iter().take(50).collect::<Vec<_>>() });
        return Ok(f);
    }
    let mut w = Walk::default();
    w.walk(&mut "$".to_string(), &va, &vb);
    let first = w
        .kept
        .first()
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| "$".to_string());
    let (class, what) = if w.numeric == w.count {
        (w.numbers.class(), w.numbers.describe("values"))
    } else if w.timestamps == w.count {
        (Class::MetadataOnly, "likely embedded timestamp".to_string())
    } else if w.numeric + w.timestamps == w.count {
        (
            w.numbers.class(),
            format!("{} and embedded timestamps", w.numbers.describe("values")),
        )
    } else {
        (
            Class::Unknown,
            format!("{} values differ, first at `{first}`", w.count),
        )
    };
    let mut f = Finding::new(Format::Json, class, what);
    let mut changes = Vec::new();
    for (path, change) in &w.kept {
        let (line, entry) = match change {
            Change::Changed(x, y) => (
                format!("`{path}`: {} vs {}", show(x), show(y)),
                json!({ "path": path, "expected": x, "actual": y }),
            ),
            Change::Added(y) => (
                format!("`{path}`: added {}", show(y)),
                json!({ "path": path, "actual": y }),
            ),
            Change::Removed(x) => (
                format!("`{path}`: removed {}", show(x)),
                json!({ "path": path, "expected": x }),
            ),
        };
        f.details.push(line);
        if changes.len() < 50 {
            changes.push(entry);
        }
    }
    f.facts = json!({
        "differences": w.count,
        "changes": changes,
        "numbers": (w.numeric > 0).then(|| w.numbers.to_json()),
    });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_in_document_order() {
        let keys = key_sequence(br#"{"a": {"b\"c": 1}, "d": ["e", "f:"]}"#);
        assert_eq!(keys, vec![&b"a"[..], &br#"b\"c"#[..], &b"d"[..]]);
    }

    #[test]
    fn lists_that_are_permutations_at_any_depth_are_order_only() {
        let f = explain(
            br#"{"labels": ["cat", "dog", "emu"], "runs": [{"seeds": [1, 2]}, {"seeds": [3]}]}"#,
            br#"{"runs": [{"seeds": [3]}, {"seeds": [2, 1]}], "labels": ["emu", "cat", "dog"]}"#,
        )
        .expect("explain");
        assert_eq!(f.summary(), "order only: JSON list order");
        assert_eq!(
            f.details,
            vec![
                "same elements in another order in 2 lists",
                "`$.labels`: same elements, another order",
                "`$.runs`: same elements, another order",
            ]
        );
        // The same order outside, one list permuted inside.
        let f = explain(br#"[[1, 2], [3, 4]]"#, br#"[[2, 1], [3, 4]]"#).expect("explain");
        assert_eq!(f.details[1], "`$[0]`: same elements, another order");
        // A multiset, not a set: a repeated element must repeat as often.
        let f = explain(br#"[1, 1, 2]"#, br#"[1, 2, 2]"#).expect("explain");
        assert_ne!(f.class, Class::OrderOnly);
        let f = explain(br#"[1, 2]"#, br#"[2, 1, 1]"#).expect("explain");
        assert_eq!(f.class, Class::Unknown);
    }

    #[test]
    fn paths_quote_keys_that_are_not_identifiers() {
        let mut p = "$".to_string();
        push_key(&mut p, "metrics");
        push_key(&mut p, "f1 score");
        assert_eq!(p, r#"$.metrics["f1 score"]"#);
    }
}
