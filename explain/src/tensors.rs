//! Collections of named tensors (a PyTorch state_dict, a safetensors file,
//! an ONNX model's initializers): tensors are paired by name and compared
//! element by element as `.npy` arrays are, and the result names every
//! tensor that differs with its dtype, shape and magnitudes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::common::Class;
use crate::npy::{fmt_shape, unravel};
use crate::numeric::{self, Dtype, Kind, Stats};

/// Names of tensors listed in a summary before `+N more`.
const NAMED: usize = 3;
/// Tensors described in the facts.
const FACTS: usize = 50;
/// Largest tensor whose values are read to tell whether a tensor whose dtype
/// or shape changed still holds the same values.
const SAME_VALUES_LIMIT: u64 = 1 << 24;

/// Element types by the name PyTorch gives them, their size, and the NumPy
/// type string they are read as (`""`: compared as bytes).
const ELEMS: &[(&str, usize, &str)] = &[
    ("float32", 4, "<f4"),
    ("float64", 8, "<f8"),
    ("float16", 2, "<f2"),
    ("bfloat16", 2, "bf16"),
    ("complex64", 8, "<c8"),
    ("complex128", 16, "<c16"),
    ("int8", 1, "|i1"),
    ("int16", 2, "<i2"),
    ("int32", 4, "<i4"),
    ("int64", 8, "<i8"),
    ("uint8", 1, "|u1"),
    ("uint16", 2, "<u2"),
    ("uint32", 4, "<u4"),
    ("uint64", 8, "<u8"),
    ("bool", 1, "|b1"),
    ("qint8", 1, ""),
    ("quint8", 1, ""),
    ("qint32", 4, ""),
    ("quint4x2", 1, ""),
    ("quint2x4", 1, ""),
    ("float8_e4m3fn", 1, ""),
    ("float8_e4m3fnuz", 1, ""),
    ("float8_e5m2", 1, ""),
    ("float8_e5m2fnuz", 1, ""),
    // Variable-length strings (ONNX) and types this crate does not know
    // (4-bit types, external data): compared as one blob.
    ("string", 0, ""),
    ("bytes", 0, ""),
];

/// An element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elem {
    /// The PyTorch name: `float32`, `bfloat16`, `int64`, `bool`.
    pub(crate) name: &'static str,
    /// Bytes per element (0: variable length).
    pub(crate) size: usize,
    /// How the numbers are read; `None` for types compared as bytes.
    pub(crate) dtype: Option<Dtype>,
}

impl Elem {
    /// The element type PyTorch calls `name` (`float32`, `uint8`, ...).
    pub(crate) fn named(name: &str) -> Option<Elem> {
        let &(name, size, descr) = ELEMS.iter().find(|(n, _, _)| *n == name)?;
        let dtype = match descr {
            "" => None,
            "bf16" => Some(Dtype::BFLOAT16),
            d => Dtype::parse(d),
        };
        Some(Elem { name, size, dtype })
    }

    fn complex(&self) -> bool {
        self.name.starts_with("complex")
    }
}

/// One named tensor with its data laid out contiguously (C order,
/// little-endian).
#[derive(Debug)]
pub(crate) struct Tensor<'a> {
    pub(crate) name: String,
    pub(crate) elem: Elem,
    pub(crate) shape: Vec<u64>,
    pub(crate) data: Cow<'a, [u8]>,
}

impl Tensor<'_> {
    /// The number of elements; `None` when the shape multiplies past 2^64
    /// (an ONNX string tensor's dims are not checked against its data).
    fn count(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &n| a.checked_mul(n))
    }

    /// `fc1.weight float32 (8, 4)`.
    fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.name,
            self.elem.name,
            fmt_shape(&self.shape)
        )
    }

    /// The values as numbers, when the type is numeric and the tensor small
    /// enough.
    fn values(&self) -> Option<Vec<f64>> {
        let dt = self.elem.dtype?;
        if self.count()? > SAME_VALUES_LIMIT {
            return None;
        }
        Some(
            self.data
                .chunks_exact(dt.size)
                .map(|c| dt.number(c))
                .collect(),
        )
    }
}

/// What comparing two collections of tensors found.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// `Identical`, `Numeric` (values only) or `Unknown` (dtype, shape,
    /// tensors added or removed, values of types compared as bytes).
    pub(crate) class: Class,
    /// The summary part, e.g. `2 of 6 tensors differ (fc1.weight, fc2.bias),
    /// max abs 3.1e-7, max rel 2.4e-6, max 4 ULP`; empty when identical.
    pub(crate) what: String,
    /// One line per differing tensor.
    pub(crate) details: Vec<String>,
    pub(crate) facts: serde_json::Value,
    /// The tensors of both sides have the same names in another order.
    pub(crate) reordered: bool,
}

/// `a, b, c, +2 more`.
pub(crate) fn name_list(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED {
        s.push_str(&format!(", +{} more", names.len() - NAMED));
    }
    s
}

fn show(elem: Elem, x: f64) -> String {
    match elem.dtype.map(|d| d.kind) {
        Some(Kind::Float | Kind::BFloat) if elem.size <= 4 || elem.name == "complex64" => {
            format!("{:e}", x as f32)
        }
        Some(Kind::Float) => format!("{x:e}"),
        _ => format!("{x}"),
    }
}

/// Compares the tensors of two versions by name; `noun` names them in the
/// summary (`tensors`, `initializers`).
pub(crate) fn compare(noun: &str, a: &[Tensor<'_>], b: &[Tensor<'_>]) -> Outcome {
    let by_name: HashMap<&str, &Tensor<'_>> = b.iter().map(|t| (t.name.as_str(), t)).collect();
    let in_a: HashSet<&str> = a.iter().map(|t| t.name.as_str()).collect();
    let mut details = Vec::new();
    let mut stats = Stats::default();
    let mut numeric_names: Vec<&str> = Vec::new();
    let mut bytes_names: Vec<&str> = Vec::new();
    let mut changed: Vec<&str> = Vec::new();
    let mut removed: Vec<&str> = Vec::new();
    let mut differing_facts = Vec::new();
    let mut changed_facts = Vec::new();
    for x in a {
        let Some(y) = by_name.get(x.name.as_str()) else {
            removed.push(&x.name);
            details.push(format!("{}: removed", x.label()));
            continue;
        };
        if x.elem != y.elem || x.shape != y.shape {
            changed.push(&x.name);
            details.push(structure_line(x, y));
            if changed_facts.len() < FACTS {
                changed_facts.push(json!({
                    "name": x.name,
                    "expected": { "dtype": x.elem.name, "shape": x.shape },
                    "actual": { "dtype": y.elem.name, "shape": y.shape },
                }));
            }
            continue;
        }
        if x.data == y.data {
            continue;
        }
        match x.elem.dtype {
            Some(dt) => {
                let s = numeric::compare(dt, &x.data, &y.data, 0, dt.size);
                if s.differing == 0 {
                    continue;
                }
                let noun = if x.elem.complex() {
                    "components"
                } else {
                    "elements"
                };
                let mut line = format!("{}: {}", x.label(), s.describe(noun));
                if let Some(first) = s.samples.first() {
                    let at = if x.elem.complex() {
                        format!("component {}", first.index)
                    } else {
                        unravel(first.index, &x.shape, false)
                    };
                    line.push_str(&format!(
                        "; first at {at}: {} vs {}",
                        show(x.elem, first.a),
                        show(x.elem, first.b)
                    ));
                }
                details.push(line);
                if differing_facts.len() < FACTS {
                    differing_facts.push(json!({
                        "name": x.name,
                        "dtype": x.elem.name,
                        "shape": x.shape,
                        "elements": s.to_json(),
                    }));
                }
                stats.merge(&s);
                numeric_names.push(&x.name);
            }
            None => {
                let what = if x.elem.size == 0 {
                    "values differ (compared as bytes)".to_string()
                } else {
                    let n = x
                        .data
                        .chunks(x.elem.size)
                        .zip(y.data.chunks(x.elem.size))
                        .filter(|(p, q)| p != q)
                        .count();
                    let total = x.count().map_or("?".to_string(), |c| c.to_string());
                    format!("{n} of {total} elements differ (compared as bytes)")
                };
                details.push(format!("{}: {what}", x.label()));
                bytes_names.push(&x.name);
            }
        }
    }
    let added: Vec<&Tensor<'_>> = b
        .iter()
        .filter(|t| !in_a.contains(t.name.as_str()))
        .collect();
    for t in &added {
        details.push(format!("{}: added", t.label()));
    }
    let common_a: Vec<&str> = a
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| by_name.contains_key(n))
        .collect();
    let common_b: Vec<&str> = b
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| in_a.contains(n))
        .collect();
    let reordered = common_a != common_b;

    let mut parts = Vec::new();
    if !changed.is_empty() {
        parts.push(format!(
            "{} of {} {noun} changed dtype or shape ({})",
            changed.len(),
            a.len(),
            name_list(&changed)
        ));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", name_list(&removed)));
    }
    if !added.is_empty() {
        let names: Vec<&str> = added.iter().map(|t| t.name.as_str()).collect();
        parts.push(format!("added {}", name_list(&names)));
    }
    let valued: Vec<&str> = numeric_names.iter().chain(&bytes_names).copied().collect();
    if !valued.is_empty() {
        let mut s = format!(
            "{} of {} {noun} differ ({})",
            valued.len(),
            a.len(),
            name_list(&valued)
        );
        if !numeric_names.is_empty() {
            s.push_str(&format!(", {}", stats.magnitudes()));
        }
        if !bytes_names.is_empty() {
            s.push_str(&format!(", {} compared as bytes", bytes_names.len()));
        }
        parts.push(s);
    }
    let class = if !changed.is_empty()
        || !removed.is_empty()
        || !added.is_empty()
        || !bytes_names.is_empty()
    {
        Class::Unknown
    } else {
        stats.class()
    };
    let facts = json!({
        "count": { "expected": a.len(), "actual": b.len() },
        "differing": differing_facts,
        "differing_count": valued.len(),
        "changed": changed_facts,
        "removed": removed,
        "added": added.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "reordered": reordered,
        "elements": (!numeric_names.is_empty()).then(|| stats.to_json()),
    });
    Outcome {
        class,
        what: parts.join("; "),
        details,
        facts,
        reordered,
    }
}

/// `fc2.weight: shape (3, 8) vs (4, 8), dtype float32` and whether the
/// values are the same.
fn structure_line(x: &Tensor<'_>, y: &Tensor<'_>) -> String {
    let mut what = Vec::new();
    if x.elem != y.elem {
        what.push(format!("dtype {} vs {}", x.elem.name, y.elem.name));
    } else {
        what.push(format!("dtype {}", x.elem.name));
    }
    if x.shape != y.shape {
        what.push(format!(
            "shape {} vs {}",
            fmt_shape(&x.shape),
            fmt_shape(&y.shape)
        ));
    } else {
        what.push(format!("shape {}", fmt_shape(&x.shape)));
    }
    if x.elem.dtype.is_some() && x.count() == y.count() {
        if let (Some(p), Some(q)) = (x.values(), y.values()) {
            let same = p
                .iter()
                .zip(&q)
                .all(|(u, v)| u == v || (u.is_nan() && v.is_nan()));
            what.push(if same { "same values" } else { "values differ" }.to_string());
        }
    }
    format!("{}: {}", x.name, what.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(name: &str, shape: &[u64], v: &[f32]) -> Tensor<'static> {
        Tensor {
            name: name.into(),
            elem: Elem::named("float32").expect("float32"),
            shape: shape.to_vec(),
            data: Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }

    #[test]
    fn names_each_differing_tensor_with_magnitudes() {
        let bumped = f32::from_bits(0.5f32.to_bits() + 3);
        let a = [
            f32s("w", &[2, 2], &[0.5, 1.0, 2.0, 3.0]),
            f32s("b", &[2], &[1.0, 2.0]),
        ];
        let b = [
            f32s("w", &[2, 2], &[0.5, 1.0, 2.0, 3.0]),
            f32s("b", &[2], &[1.0, 2.0]),
        ];
        let o = compare("tensors", &a, &b);
        assert_eq!((o.class, o.what.as_str()), (Class::Identical, ""));
        let b = [
            f32s("w", &[2, 2], &[bumped, 1.0, 2.0, 3.0]),
            f32s("b", &[2], &[1.0, 2.0]),
        ];
        let o = compare("tensors", &a, &b);
        assert!(matches!(o.class, Class::Numeric { .. }), "{:?}", o.class);
        assert_eq!(
            o.what,
            "1 of 2 tensors differ (w), max abs 1.8e-7, max rel 3.6e-7, max 3 ULP"
        );
        assert_eq!(
            o.details,
            vec![
                "w float32 (2, 2): 1 of 4 elements differ, max abs 1.8e-7, max rel 3.6e-7, \
                 max 3 ULP; first at [0, 0]: 5e-1 vs 5.000002e-1"
            ]
        );
    }

    #[test]
    fn dtype_and_shape_changes_are_structure_and_say_whether_values_match() {
        let a = [f32s("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])];
        let b = [f32s("w", &[4], &[1.0, 2.0, 3.0, 4.0])];
        let o = compare("tensors", &a, &b);
        assert_eq!(o.class, Class::Unknown);
        assert_eq!(o.what, "1 of 1 tensors changed dtype or shape (w)");
        assert_eq!(
            o.details,
            vec!["w: dtype float32, shape (2, 2) vs (4,), same values"]
        );
        let f64s: Vec<u8> = [1.0f64, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b = [Tensor {
            name: "w".into(),
            elem: Elem::named("float64").expect("float64"),
            shape: vec![2, 2],
            data: Cow::Owned(f64s),
        }];
        let o = compare("tensors", &a, &b);
        assert_eq!(
            o.details,
            vec!["w: dtype float32 vs float64, shape (2, 2), same values"]
        );
    }

    #[test]
    fn added_removed_and_reordered() {
        let a = [f32s("x", &[1], &[1.0]), f32s("y", &[1], &[2.0])];
        let b = [f32s("y", &[1], &[2.0]), f32s("x", &[1], &[1.0])];
        let o = compare("tensors", &a, &b);
        assert_eq!(o.class, Class::Identical);
        assert!(o.reordered);
        let b = [f32s("x", &[1], &[1.0]), f32s("z", &[1], &[2.0])];
        let o = compare("tensors", &a, &b);
        assert_eq!(o.what, "removed y; added z");
        assert_eq!(
            o.details,
            vec!["y float32 (1,): removed", "z float32 (1,): added"]
        );
    }

    #[test]
    fn shapes_that_multiply_past_2_pow_64_are_compared_without_overflow() {
        let a = [f32s("w", &[1], &[1.0])];
        let b = [Tensor {
            name: "w".into(),
            elem: Elem::named("string").expect("string"),
            shape: vec![1 << 40, 1 << 40],
            data: Cow::Owned(b"x".to_vec()),
        }];
        let o = compare("initializers", &a, &b);
        assert_eq!(
            o.details,
            vec!["w: dtype float32 vs string, shape (1,) vs (1099511627776, 1099511627776)"]
        );
    }

    #[test]
    fn summary_names_at_most_three() {
        assert_eq!(name_list(&["a", "b"]), "a, b");
        assert_eq!(name_list(&["a", "b", "c", "d", "e"]), "a, b, c, +2 more");
    }
}
