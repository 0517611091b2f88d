//! safetensors files: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets}, "__metadata__": {...}}` and the raw
//! little-endian tensor data. Tensors are compared by name; the
//! `__metadata__` strings, the order of the tensors in the file and the
//! header's formatting are metadata.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::common::{clip, Class, Finding, Format};
use crate::error::{side, Error, Result};
use crate::tensors::{self, Elem, Tensor};

/// The largest header the format allows.
const HEADER_LIMIT: u64 = 100 << 20;

/// Whether `d` starts with a safetensors header: a length that fits the
/// file, then a JSON object whose entries are tensors.
pub(crate) fn is_safetensors(d: &[u8]) -> bool {
    let Some(header) = header_bytes(d) else {
        return false;
    };
    if header.first() != Some(&b'{') {
        return false;
    }
    match serde_json::from_slice::<Map<String, Value>>(header) {
        Ok(m) => m.iter().all(|(k, v)| {
            k == "__metadata__"
                || ["dtype", "shape", "data_offsets"]
                    .iter()
                    .all(|f| v.get(f).is_some())
        }),
        Err(_) => false,
    }
}

fn header_bytes(d: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(d.get(..8)?.try_into().ok()?);
    if len > HEADER_LIMIT {
        return None;
    }
    d.get(8..8 + len as usize)
}

/// The element type of a safetensors dtype (`F32`, `BF16`, `BOOL`).
fn elem_of(dtype: &str) -> Option<Elem> {
    Elem::named(match dtype {
        "F64" => "float64",
        "F32" => "float32",
        "F16" => "float16",
        "BF16" => "bfloat16",
        "C64" => "complex64",
        "I64" => "int64",
        "I32" => "int32",
        "I16" => "int16",
        "I8" => "int8",
        "U64" => "uint64",
        "U32" => "uint32",
        "U16" => "uint16",
        "U8" => "uint8",
        "BOOL" => "bool",
        "F8_E4M3" => "float8_e4m3fn",
        "F8_E5M2" => "float8_e5m2",
        _ => return None,
    })
}

struct Parsed<'a> {
    /// In the order of their data in the file.
    tensors: Vec<Tensor<'a>>,
    offsets: Vec<(String, u64, u64)>,
    metadata: Option<Value>,
}

fn parse(d: &[u8], i: usize) -> Result<Parsed<'_>> {
    let bad = |reason: String| Error::Safetensors {
        side: side(i),
        reason,
    };
    let header = header_bytes(d).ok_or_else(|| {
        bad("the header length does not fit the file (or exceeds 100 MiB)".into())
    })?;
    let data = &d[8 + header.len()..];
    let map: Map<String, Value> =
        serde_json::from_slice(header).map_err(|e| bad(format!("header: {e}")))?;
    let mut tensors = Vec::new();
    let mut offsets = Vec::new();
    let mut metadata = None;
    for (name, v) in map {
        if name == "__metadata__" {
            metadata = Some(v);
            continue;
        }
        let dtype = v["dtype"]
            .as_str()
            .ok_or_else(|| bad(format!("tensor `{name}`: no dtype")))?;
        let elem =
            elem_of(dtype).ok_or_else(|| bad(format!("tensor `{name}`: unknown dtype {dtype}")))?;
        let shape = v["shape"]
            .as_array()
            .and_then(|s| s.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| bad(format!("tensor `{name}`: shape is not a list of integers")))?;
        let (begin, end) = match v["data_offsets"].as_array().map(Vec::as_slice) {
            Some([b, e]) => (b.as_u64(), e.as_u64()),
            _ => (None, None),
        };
        let (Some(begin), Some(end)) = (begin, end) else {
            return Err(bad(format!(
                "tensor `{name}`: data_offsets is not [begin, end]"
            )));
        };
        let want = shape
            .iter()
            .try_fold(elem.size as u64, |a, &n| a.checked_mul(n));
        if begin > end || end > data.len() as u64 || want != Some(end - begin) {
            return Err(bad(format!(
                "tensor `{name}`: bytes {begin}..{end} do not hold {dtype} {shape:?} in {} bytes of data",
                data.len()
            )));
        }
        offsets.push((name.clone(), begin, end));
        tensors.push(Tensor {
            name,
            elem,
            shape,
            data: Cow::Borrowed(&data[begin as usize..end as usize]),
        });
    }
    tensors.sort_by_key(|t| {
        offsets
            .iter()
            .find(|(n, _, _)| *n == t.name)
            .map(|(_, b, _)| *b)
    });
    offsets.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(Parsed {
        tensors,
        offsets,
        metadata,
    })
}

/// The `__metadata__` keys whose values differ, as detail lines.
fn metadata_changes(a: Option<&Value>, b: Option<&Value>) -> Vec<String> {
    let empty = Map::new();
    let obj = |v: Option<&Value>| v.and_then(Value::as_object).cloned();
    let (x, y) = (
        obj(a).unwrap_or_else(|| empty.clone()),
        obj(b).unwrap_or_else(|| empty.clone()),
    );
    let show = |v: Option<&Value>| v.map_or("missing".to_string(), |v| clip(&v.to_string(), 60));
    let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| x.get(*k) != y.get(*k))
        .map(|k| {
            format!(
                "`__metadata__.{k}`: {} vs {}",
                show(x.get(k)),
                show(y.get(k))
            )
        })
        .collect()
}

/// Compares two safetensors files.
pub(crate) fn explain(a: &[u8], b: &[u8]) -> Result<Finding> {
    let x = parse(a, 0)?;
    let y = parse(b, 1)?;
    let t = tensors::compare("tensors", &x.tensors, &y.tensors);
    let meta = metadata_changes(x.metadata.as_ref(), y.metadata.as_ref());
    let mut details = t.details.clone();
    details.extend(meta.iter().cloned());
    let (class, what) = if !t.what.is_empty() {
        (t.class, t.what.clone())
    } else if t.reordered {
        (Class::OrderOnly, "tensor order in the file".to_string())
    } else if !meta.is_empty() {
        (Class::MetadataOnly, "header `__metadata__`".to_string())
    } else if x.offsets != y.offsets {
        (
            Class::MetadataOnly,
            "tensor layout (data offsets, same tensors)".to_string(),
        )
    } else {
        (
            Class::MetadataOnly,
            "header formatting (same tensors and metadata)".to_string(),
        )
    };
    let mut f = Finding::new(Format::Safetensors, class, what);
    f.details = details;
    f.facts = json!({
        "tensors": t.facts,
        "metadata": { "expected": x.metadata, "actual": y.metadata },
    });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn recognizes_the_header_shape() {
        let d = file(
            r#"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            &[1, 2],
        );
        assert!(is_safetensors(&d));
        assert!(!is_safetensors(
            b"\x05\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"
        ));
        assert!(!is_safetensors(b"\xff\xff\xff\xff\x00\x00\x00\x00{}"));
        assert!(!is_safetensors(b"abc"));
    }

    #[test]
    fn metadata_layout_and_order_are_told_apart() {
        let one = r#""a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#;
        let two = r#""b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}"#;
        let x = file(
            &format!(r#"{{{one},{two},"__metadata__":{{"format":"pt"}}}}"#),
            &[1, 2],
        );
        let y = file(
            &format!(r#"{{{one},{two},"__metadata__":{{"format":"np"}}}}"#),
            &[1, 2],
        );
        let f = explain(&x, &y).expect("explain");
        assert_eq!(f.summary(), "metadata only: header `__metadata__`");
        assert_eq!(f.details, vec![r#"`__metadata__.format`: "pt" vs "np""#]);
        let swapped = file(
            r#"{"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"__metadata__":{"format":"pt"}}"#,
            &[2, 1],
        );
        let f = explain(&x, &swapped).expect("explain");
        assert_eq!(f.summary(), "order only: tensor order in the file");
        let spaced = file(
            &format!(r#"{{{one}, {two}, "__metadata__":{{"format":"pt"}}}}   "#),
            &[1, 2],
        );
        let f = explain(&x, &spaced).expect("explain");
        assert_eq!(
            f.summary(),
            "metadata only: header formatting (same tensors and metadata)"
        );
    }

    #[test]
    fn data_that_does_not_fit_is_an_error() {
        let d = file(
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            &[0; 4],
        );
        let err = explain(&d, &d).expect_err("error");
        assert!(
            err.to_string()
                .contains("tensor `x`: bytes 0..4 do not hold F32 [2]"),
            "{err}"
        );
    }
}
