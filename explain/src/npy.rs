//! NumPy `.npy` files: header (dtype, memory order, shape) and element-wise
//! comparison of the data.

use serde_json::json;

use crate::common::{clip, Class, Finding, Format};
use crate::error::{side, Error, Result};
use crate::numeric::{self, Dtype};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Whether `d` starts with the `.npy` magic.
pub(crate) fn is_npy(d: &[u8]) -> bool {
    d.starts_with(MAGIC)
}

/// A parsed `.npy` file; `data` borrows the array bytes.
#[derive(Debug)]
pub(crate) struct Npy<'a> {
    pub(crate) descr: String,
    pub(crate) fortran: bool,
    pub(crate) shape: Vec<u64>,
    pub(crate) data: &'a [u8],
}

fn bad(i: usize, reason: impl Into<String>) -> Error {
    Error::Npy {
        side: side(i),
        reason: reason.into(),
    }
}

/// Parses the header of a `.npy` file (versions 1 to 3).
pub(crate) fn parse(d: &[u8], i: usize) -> Result<Npy<'_>> {
    if !is_npy(d) {
        return Err(bad(i, "no `\\x93NUMPY` magic"));
    }
    let major = *d.get(6).ok_or_else(|| bad(i, "truncated header"))?;
    let (len, start) = match major {
        1 => (
            d.get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
            10,
        ),
        2 | 3 => (
            d.get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            12,
        ),
        v => return Err(bad(i, format!("unknown format version {v}"))),
    };
    let len = len.ok_or_else(|| bad(i, "truncated header"))?;
    let header = d
        .get(start..start + len)
        .ok_or_else(|| bad(i, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(i, "header is not text"))?;
    let dict = Literal::parse(header).ok_or_else(|| bad(i, "header is not a Python dict"))?;
    let Literal::Dict(items) = dict else {
        return Err(bad(i, "header is not a Python dict"));
    };
    let get = |k: &str| items.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Literal::Str(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => return Err(bad(i, "header has no `descr`")),
    };
    let fortran = matches!(get("fortran_order"), Some(Literal::Bool(true)));
    let shape = match get("shape") {
        Some(Literal::Tuple(dims)) => dims
            .iter()
            .map(|d| match d {
                Literal::Int(n) => Ok(*n),
                _ => Err(bad(i, "shape is not a tuple of integers")),
            })
            .collect::<Result<Vec<u64>>>()?,
        _ => return Err(bad(i, "header has no `shape` tuple")),
    };
    let data = &d[start + len..];
    // No array holds 2^64 elements: a shape that multiplies past it is a lie
    // whatever the dtype (object arrays included, whose size is not checked).
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| {
            bad(
                i,
                format!("shape {} overflows", clip(&fmt_shape(&shape), 100)),
            )
        })?;
    if let Some(size) = itemsize(&descr) {
        let want = count.checked_mul(size as u64);
        if want != Some(data.len() as u64) && !descr.contains('O') {
            return Err(bad(
                i,
                format!(
                    "data is {} bytes, shape and dtype need {}",
                    data.len(),
                    want.unwrap_or(0)
                ),
            ));
        }
    }
    Ok(Npy {
        descr,
        fortran,
        shape,
        data,
    })
}

/// Bytes per element of a simple type string (`<f8` 8, `<U5` 20, `|V48` 48).
pub(crate) fn itemsize(descr: &str) -> Option<usize> {
    let rest = descr.trim_start_matches(['<', '>', '|', '=', '!']);
    let code = rest.chars().next()?;
    let digits: String = rest[code.len_utf8()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let n: usize = digits.parse().ok()?;
    if code == 'U' {
        n.checked_mul(4)
    } else {
        Some(n)
    }
}

/// Renders a shape like Python does: `(3,)`, `(8, 8)`, `()`.
pub(crate) fn fmt_shape(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Turns a flat element index into `[i, j, ...]` for the given shape.
pub(crate) fn unravel(mut index: u64, shape: &[u64], fortran: bool) -> String {
    let mut idx = vec![0u64; shape.len()];
    let order: Vec<usize> = if fortran {
        (0..shape.len()).collect()
    } else {
        (0..shape.len()).rev().collect()
    };
    for k in order {
        let n = shape[k].max(1);
        idx[k] = index % n;
        index /= n;
    }
    format!(
        "[{}]",
        idx.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Compares two `.npy` files.
pub(crate) fn explain(a: &[u8], b: &[u8]) -> Result<Finding> {
    let x = parse(a, 0)?;
    let y = parse(b, 1)?;
    Ok(compare_arrays(&x, &y, Format::Npy))
}

/// Compares two parsed arrays (also used for `.npz` members).
pub(crate) fn compare_arrays(x: &Npy<'_>, y: &Npy<'_>, format: Format) -> Finding {
    let mut changes = Vec::new();
    if x.descr != y.descr {
        changes.push(format!("dtype {} vs {}", x.descr, y.descr));
    }
    if x.shape != y.shape {
        changes.push(format!(
            "shape {} vs {}",
            fmt_shape(&x.shape),
            fmt_shape(&y.shape)
        ));
    }
    if x.fortran != y.fortran {
        let order = |f: bool| if f { "Fortran" } else { "C" };
        changes.push(format!(
            "memory order {} vs {}",
            order(x.fortran),
            order(y.fortran)
        ));
    }
    let header = json!({
        "expected": { "dtype": x.descr, "shape": x.shape, "fortran_order": x.fortran },
        "actual": { "dtype": y.descr, "shape": y.shape, "fortran_order": y.fortran },
    });
    if !changes.is_empty() {
        let mut f = Finding::new(format, Class::Unknown, changes.join(", "));
        f.facts = json!({ "array": header });
        return f;
    }
    let shape = fmt_shape(&x.shape);
    if x.data == y.data {
        let mut f = Finding::new(format, Class::MetadataOnly, "npy header encoding");
        f.details
            .push(format!("same dtype {}, shape {shape} and data", x.descr));
        f.facts = json!({ "array": header });
        return f;
    }
    let mut details = vec![format!("dtype {}, shape {shape}", x.descr)];
    let (class, what, stats) = match Dtype::parse(&x.descr) {
        Some(dtype) => {
            let stats = numeric::compare(dtype, x.data, y.data, 0, dtype.size);
            // Complex numbers are compared component by component.
            let noun = if x.descr.contains('c') {
                "components"
            } else {
                "elements"
            };
            for s in &stats.samples {
                let at = if x.descr.contains('c') {
                    format!("component {}", s.index)
                } else {
                    unravel(s.index, &x.shape, x.fortran)
                };
                details.push(format!("{at}: {:e} vs {:e}", s.a, s.b));
            }
            (stats.class(), stats.describe(noun), Some(stats))
        }
        None => {
            let count = x
                .shape
                .iter()
                .try_fold(1u64, |acc, &n| acc.checked_mul(n))
                .and_then(|c| usize::try_from(c).ok())
                .unwrap_or(1)
                .max(1);
            let size = itemsize(&x.descr)
                .filter(|s| *s > 0)
                .unwrap_or_else(|| (x.data.len() / count).max(1));
            let total = x.data.len() / size;
            let differing = x
                .data
                .chunks(size)
                .zip(y.data.chunks(size))
                .filter(|(p, q)| p != q)
                .count();
            let what = format!(
                "{differing} of {total} elements differ (dtype {} compared as bytes)",
                x.descr
            );
            (Class::Unknown, what, None)
        }
    };
    let mut f = Finding::new(format, class, what);
    f.details = details;
    f.facts = json!({ "array": header, "elements": stats.map(|s| s.to_json()) });
    f
}

/// A Python literal as found in `.npy` headers.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Int(u64),
    Bool(bool),
    None,
    Tuple(Vec<Literal>),
    List(Vec<Literal>),
    Dict(Vec<(String, Literal)>),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "'{s}'"),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Literal::None => f.write_str("None"),
            Literal::Tuple(v) | Literal::List(v) => {
                let (open, close) = if matches!(self, Literal::Tuple(_)) {
                    ('(', ')')
                } else {
                    ('[', ']')
                };
                let inner: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "{open}{}{close}", inner.join(", "))
            }
            Literal::Dict(items) => {
                let inner: Vec<String> = items.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
                write!(f, "{{{}}}", inner.join(", "))
            }
        }
    }
}

impl Literal {
    fn parse(s: &str) -> Option<Literal> {
        let mut p = LiteralParser {
            s: s.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let v = p.value()?;
        p.ws();
        (p.pos == p.s.len()).then_some(v)
    }
}

struct LiteralParser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl LiteralParser<'_> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Literal> {
        self.depth += 1;
        if self.depth > 32 {
            return None;
        }
        let v = match self.peek()? {
            b'\'' | b'"' => Literal::Str(self.string()?),
            b'(' => {
                self.pos += 1;
                Literal::Tuple(self.seq(b')')?)
            }
            b'[' => {
                self.pos += 1;
                Literal::List(self.seq(b']')?)
            }
            b'{' => {
                self.pos += 1;
                let mut items = Vec::new();
                while !self.eat(b'}') {
                    let Literal::Str(k) = self.value()? else {
                        return None;
                    };
                    if !self.eat(b':') {
                        return None;
                    }
                    items.push((k, self.value()?));
                    if !self.eat(b',') && self.peek() != Some(b'}') {
                        return None;
                    }
                }
                Literal::Dict(items)
            }
            c if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                // Python 2 wrote long integers as `3L`.
                let n = std::str::from_utf8(&self.s[start..self.pos])
                    .ok()?
                    .parse()
                    .ok()?;
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                Literal::Int(n)
            }
            _ => {
                let rest = &self.s[self.pos..];
                let (lit, len) = if rest.starts_with(b"True") {
                    (Literal::Bool(true), 4)
                } else if rest.starts_with(b"False") {
                    (Literal::Bool(false), 5)
                } else if rest.starts_with(b"None") {
                    (Literal::None, 4)
                } else {
                    return None;
                };
                self.pos += len;
                lit
            }
        };
        self.depth -= 1;
        Some(v)
    }

    fn seq(&mut self, close: u8) -> Option<Vec<Literal>> {
        let mut v = Vec::new();
        while !self.eat(close) {
            v.push(self.value()?);
            if !self.eat(b',') && self.peek() != Some(close) {
                return None;
            }
        }
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.s[self.pos];
        let start = self.pos + 1;
        let end = start + self.s[start..].iter().position(|&c| c == quote)?;
        self.pos = end + 1;
        Some(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_header_literal() {
        let d = npy(
            "{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3), }",
            &[0; 12],
        );
        let p = parse(&d, 0).expect("parse");
        assert_eq!(
            (p.descr.as_str(), p.fortran, p.shape.clone()),
            ("<i2", true, vec![2, 3])
        );
        assert_eq!(p.data.len(), 12);
        assert_eq!(unravel(1, &p.shape, true), "[1, 0]");
        assert_eq!(unravel(1, &p.shape, false), "[0, 1]");
    }

    #[test]
    fn rejects_data_that_does_not_fit_the_shape() {
        let d = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
            &[0; 16],
        );
        let err = parse(&d, 1).expect_err("short data");
        assert!(
            err.to_string()
                .contains("data is 16 bytes, shape and dtype need 24"),
            "{err}"
        );
    }

    #[test]
    fn structured_dtype_compares_as_bytes() {
        let h = "{'descr': [('a', '<f8'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,), }";
        let a = npy(h, &[0; 24]);
        let mut b = a.clone();
        let last = b.len() - 1;
        b[last] = 1;
        let f = explain(&a, &b).expect("explain");
        assert_eq!(f.class, Class::Unknown);
        assert!(f.what.starts_with("1 of 2 elements differ"), "{}", f.what);
    }
}
