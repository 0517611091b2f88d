//! ONNX models (`.onnx`, a protobuf `ModelProto`), read with a small
//! hand-written protobuf wire reader that knows just the fields compared:
//! the graph's initializers (`TensorProto`: dims, data_type, name and the
//! data in raw_data, float_data, int32_data, int64_data, double_data,
//! uint64_data or string_data) are compared by name as tensors; any other
//! difference inside the graph (nodes, inputs, outputs) is structural ("graph
//! differs"); the producer, version, domain and doc fields are metadata.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::common::{clip, Class, Finding, Format};
use crate::error::{side, Error, Result};
use crate::tensors::{self, name_list, Elem, Tensor};

/// A field value as the wire format carries it.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// One field of a message: its number, value and the bytes encoding it.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    num: u64,
    value: Wire<'a>,
    raw: &'a [u8],
}

struct Reader<'a> {
    d: &'a [u8],
    pos: usize,
    /// Offset of `d` in the file, for messages.
    base: usize,
    side: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Onnx {
            side: side(self.side),
            offset: self.base + self.pos,
            reason: reason.into(),
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self
                .d
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.d.len())
            .ok_or_else(|| self.err(format!("truncated: {n} bytes wanted")))?;
        let s = &self.d[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn field(&mut self) -> Result<Field<'a>> {
        let start = self.pos;
        let key = self.varint()?;
        let num = key >> 3;
        if num == 0 {
            return Err(self.err("field number 0"));
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| self.err("length out of range"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            w => return Err(self.err(format!("unsupported wire type {w}"))),
        };
        Ok(Field {
            num,
            value,
            raw: &self.d[start..self.pos],
        })
    }
}

/// The fields of the message `d`, which starts at `base` in the file.
fn fields(d: &[u8], base: usize, side: usize) -> Result<Vec<Field<'_>>> {
    let mut r = Reader {
        d,
        pos: 0,
        base,
        side,
    };
    let mut out = Vec::new();
    while r.pos < d.len() {
        out.push(r.field()?);
    }
    Ok(out)
}

/// The offset of `inner` in `outer` (a sub-slice of it).
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// Repeated scalars: packed (one length-delimited field) or not.
fn varints(f: &Field<'_>, side: usize) -> Result<Vec<u64>> {
    match f.value {
        Wire::Varint(v) => Ok(vec![v]),
        Wire::Bytes(b) => {
            let mut r = Reader {
                d: b,
                pos: 0,
                base: 0,
                side,
            };
            let mut out = Vec::new();
            while r.pos < b.len() {
                out.push(r.varint()?);
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Packed fixed-size scalars as their little-endian bytes.
fn fixed(f: &Field<'_>, out: &mut Vec<u8>) {
    match f.value {
        Wire::Bytes(b) => out.extend_from_slice(b),
        Wire::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Wire::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Wire::Varint(_) => {}
    }
}

fn text(f: &Field<'_>) -> String {
    match f.value {
        Wire::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Wire::Varint(v) | Wire::Fixed64(v) => v.to_string(),
        Wire::Fixed32(v) => v.to_string(),
    }
}

/// The element type of an ONNX `TensorProto.DataType`.
fn elem_of(data_type: u64) -> Elem {
    let name = match data_type {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17 => "float8_e4m3fn",
        18 => "float8_e4m3fnuz",
        19 => "float8_e5m2",
        20 => "float8_e5m2fnuz",
        _ => "bytes",
    };
    Elem::named(name).unwrap_or(Elem {
        name: "bytes",
        size: 0,
        dtype: None,
    })
}

/// An initializer (`TensorProto`) as a tensor with little-endian data.
fn tensor<'a>(msg: &'a [u8], base: usize, side: usize) -> Result<Tensor<'a>> {
    let fs = fields(msg, base, side)?;
    let bad = |reason: String| Error::Onnx {
        side: crate::error::side(side),
        offset: base,
        reason,
    };
    let mut shape = Vec::new();
    let mut data_type = 0;
    let mut name = String::new();
    let mut raw: Option<&[u8]> = None;
    let mut external = false;
    let mut external_ref = Vec::new();
    for f in &fs {
        match (f.num, f.value) {
            (1, _) => shape.extend(varints(f, side)?),
            (2, Wire::Varint(v)) => data_type = v,
            (8, Wire::Bytes(_)) => name = text(f),
            (9, Wire::Bytes(b)) => raw = Some(b),
            (13, _) => external_ref.extend_from_slice(f.raw),
            (14, Wire::Varint(1)) => external = true,
            _ => {}
        }
    }
    let mut elem = elem_of(data_type);
    if external {
        // The data lives in another file: compare the reference.
        return Ok(Tensor {
            name,
            elem: Elem::named("bytes").unwrap_or(elem),
            shape,
            data: Cow::Owned(external_ref),
        });
    }
    let data: Cow<'a, [u8]> = match raw {
        Some(b) => Cow::Borrowed(b),
        None => {
            let mut out = Vec::new();
            for f in &fs {
                match (f.num, elem.name) {
                    (4, "float32" | "complex64") | (10, "float64" | "complex128") => {
                        fixed(f, &mut out)
                    }
                    (5, _) | (7, _) | (11, _) if elem.size > 0 => {
                        for v in varints(f, side)? {
                            out.extend_from_slice(&v.to_le_bytes()[..elem.size.min(8)]);
                        }
                    }
                    (6, "string") => {
                        if let Wire::Bytes(b) = f.value {
                            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                            out.extend_from_slice(b);
                        }
                    }
                    _ => {}
                }
            }
            Cow::Owned(out)
        }
    };
    if elem.size > 0 {
        let want = shape
            .iter()
            .try_fold(elem.size as u64, |a, &n| a.checked_mul(n));
        if want != Some(data.len() as u64) {
            if elem.dtype.is_none() {
                elem = Elem::named("bytes").unwrap_or(elem);
            } else {
                return Err(bad(format!(
                    "initializer `{name}`: {} bytes of data, dims {shape:?} of {} need {}",
                    data.len(),
                    elem.name,
                    want.unwrap_or(0)
                )));
            }
        }
    }
    Ok(Tensor {
        name,
        elem,
        shape,
        data,
    })
}

/// A node's name and op type, for messages.
fn node_label(msg: &[u8], side: usize) -> String {
    let fs = fields(msg, 0, side).unwrap_or_default();
    let get = |n: u64| fs.iter().find(|f| f.num == n).map(text).unwrap_or_default();
    format!("`{}` ({})", get(3), get(4))
}

/// A node without its doc string.
fn node_key(msg: &[u8], side: usize) -> Vec<u8> {
    match fields(msg, 0, side) {
        Ok(fs) => fs
            .iter()
            .filter(|f| f.num != 6)
            .flat_map(|f| f.raw.iter().copied())
            .collect(),
        Err(_) => msg.to_vec(),
    }
}

/// Each node message with its key ([`node_key`]).
fn node_keys<'a>(v: &[&Field<'a>], side: usize) -> Vec<(Vec<u8>, &'a [u8])> {
    v.iter()
        .map(|f| match f.value {
            Wire::Bytes(m) => (node_key(m, side), m),
            _ => (f.raw.to_vec(), f.raw),
        })
        .collect()
}

struct Model<'a> {
    top: Vec<Field<'a>>,
    graph: Vec<Field<'a>>,
    initializers: Vec<Tensor<'a>>,
}

fn parse(d: &[u8], i: usize) -> Result<Model<'_>> {
    let top = fields(d, 0, i)?;
    let graph_bytes = top
        .iter()
        .rev()
        .find_map(|f| match (f.num, f.value) {
            (7, Wire::Bytes(b)) => Some(b),
            _ => None,
        })
        .ok_or_else(|| Error::Onnx {
            side: side(i),
            offset: 0,
            reason: "no graph (ModelProto field 7)".into(),
        })?;
    let graph = fields(graph_bytes, offset_in(d, graph_bytes), i)?;
    let mut initializers = Vec::new();
    for f in &graph {
        if let (5, Wire::Bytes(b)) = (f.num, f.value) {
            initializers.push(tensor(b, offset_in(d, b), i)?);
        }
    }
    Ok(Model {
        top,
        graph,
        initializers,
    })
}

/// ModelProto fields that describe the model rather than define it.
fn model_metadata(num: u64) -> Option<&'static str> {
    Some(match num {
        1 => "ir_version",
        2 => "producer_name",
        3 => "producer_version",
        4 => "domain",
        5 => "model_version",
        6 => "doc_string",
        14 => "metadata_props",
        _ => return None,
    })
}

fn model_field(num: u64) -> String {
    match num {
        8 => "opset_import".into(),
        20 => "training_info".into(),
        25 => "functions".into(),
        n => format!("field {n}"),
    }
}

fn graph_field(num: u64) -> String {
    match num {
        1 => "nodes".into(),
        2 => "name".into(),
        10 => "doc_string".into(),
        11 => "inputs".into(),
        12 => "outputs".into(),
        13 => "value_info".into(),
        14 => "quantization_annotation".into(),
        15 => "sparse_initializer".into(),
        n => format!("field {n}"),
    }
}

/// The fields grouped by number, in their order within each group: one
/// pass, however many distinct numbers a hostile message uses.
fn by_num<'f, 'a>(fs: &'f [Field<'a>]) -> BTreeMap<u64, Vec<&'f Field<'a>>> {
    let mut out: BTreeMap<u64, Vec<&'f Field<'a>>> = BTreeMap::new();
    for f in fs {
        out.entry(f.num).or_default().push(f);
    }
    out
}

/// The fields numbered `num` on either side.
fn pair<'m, 'f, 'a>(
    x: &'m BTreeMap<u64, Vec<&'f Field<'a>>>,
    y: &'m BTreeMap<u64, Vec<&'f Field<'a>>>,
    num: u64,
) -> (&'m [&'f Field<'a>], &'m [&'f Field<'a>]) {
    let get = |m: &'m BTreeMap<u64, Vec<&'f Field<'a>>>| m.get(&num).map_or(&[][..], Vec::as_slice);
    (get(x), get(y))
}

fn shown(fs: &[&Field<'_>]) -> String {
    let parts: Vec<String> = fs.iter().map(|f| clip(&text(f), 40)).collect();
    match parts.len() {
        0 => "missing".into(),
        _ => format!("{:?}", parts.join(", ")),
    }
}

/// Compares two ONNX models.
pub(crate) fn explain(a: &[u8], b: &[u8]) -> Result<Finding> {
    let x = parse(a, 0)?;
    let y = parse(b, 1)?;
    let t = tensors::compare("initializers", &x.initializers, &y.initializers);

    let mut meta = Vec::new();
    let mut meta_details = Vec::new();
    let mut structure = Vec::new();
    let mut structure_details = Vec::new();

    let (xt, yt) = (by_num(&x.top), by_num(&y.top));
    let nums: BTreeSet<u64> = xt.keys().chain(yt.keys()).copied().collect();
    for num in &nums {
        if *num == 7 {
            continue;
        }
        let (p, q) = pair(&xt, &yt, *num);
        let same = p.len() == q.len() && p.iter().zip(q).all(|(f, g)| f.raw == g.raw);
        if same {
            continue;
        }
        match model_metadata(*num) {
            Some(name) => {
                meta.push(name.to_string());
                meta_details.push(format!("{name}: {} vs {}", shown(p), shown(q)));
            }
            None => {
                let name = model_field(*num);
                structure.push(name.clone());
                structure_details.push(format!("model {name} differs"));
            }
        }
    }
    let (xg, yg) = (by_num(&x.graph), by_num(&y.graph));
    let nums: BTreeSet<u64> = xg.keys().chain(yg.keys()).copied().collect();
    for num in &nums {
        let (p, q) = pair(&xg, &yg, *num);
        match num {
            5 => continue,
            1 => {
                let (kp, kq) = (node_keys(p, 0), node_keys(q, 1));
                let first = kp.iter().zip(&kq).position(|(u, v)| u.0 != v.0);
                match first {
                    Some(i) => {
                        structure.push(format!(
                            "node {i} {} vs {}",
                            node_label(kp[i].1, 0),
                            node_label(kq[i].1, 1)
                        ));
                        structure_details.push(format!(
                            "graph node {i}: {} vs {}",
                            node_label(kp[i].1, 0),
                            node_label(kq[i].1, 1)
                        ));
                    }
                    None if kp.len() != kq.len() => {
                        structure.push(format!("{} vs {} nodes", kp.len(), kq.len()));
                        structure_details.push(format!(
                            "graph nodes: {} vs {}",
                            kp.len(),
                            kq.len()
                        ));
                    }
                    None if p.iter().zip(q).any(|(f, g)| f.raw != g.raw) => {
                        meta.push("node doc strings".into());
                        meta_details.push("graph nodes differ only in doc_string".into());
                    }
                    None => {}
                }
            }
            2 | 10 => {
                if p.len() != q.len() || p.iter().zip(q).any(|(f, g)| f.raw != g.raw) {
                    let name = format!("graph {}", graph_field(*num));
                    meta_details.push(format!("{name}: {} vs {}", shown(p), shown(q)));
                    meta.push(name);
                }
            }
            n => {
                if p.len() != q.len() || p.iter().zip(q).any(|(f, g)| f.raw != g.raw) {
                    let name = graph_field(*n);
                    structure.push(format!("{name} differ"));
                    structure_details.push(format!(
                        "graph {name}: {} vs {} entries differ",
                        p.len(),
                        q.len()
                    ));
                }
            }
        }
    }

    let mut parts = Vec::new();
    let mut class = t.class;
    if !structure.is_empty() {
        class = class.combine(Class::Unknown);
        parts.push(format!(
            "graph differs ({})",
            clip(&structure.join(", "), 120)
        ));
    }
    if !t.what.is_empty() {
        parts.push(t.what.clone());
    }
    let mut details = structure_details;
    details.extend(t.details.iter().cloned());
    details.extend(meta_details);
    let what = if !parts.is_empty() {
        parts.join("; ")
    } else if t.reordered {
        class = Class::OrderOnly;
        "initializer order".to_string()
    } else if !meta.is_empty() {
        class = Class::MetadataOnly;
        let names: Vec<&str> = meta.iter().map(String::as_str).collect();
        name_list(&names)
    } else {
        class = Class::MetadataOnly;
        "protobuf encoding (same graph and initializers)".to_string()
    };
    let mut f = Finding::new(Format::Onnx, class, what);
    f.details = details;
    f.facts = json!({
        "initializers": t.facts,
        "graph_differs": structure,
        "metadata_differs": meta,
    });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(num: u64, wire: u64) -> Vec<u8> {
        varint(num << 3 | wire)
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes(num: u64, b: &[u8]) -> Vec<u8> {
        let mut out = key(num, 2);
        out.extend(varint(b.len() as u64));
        out.extend_from_slice(b);
        out
    }

    fn vint(num: u64, v: u64) -> Vec<u8> {
        let mut out = key(num, 0);
        out.extend(varint(v));
        out
    }

    /// A model with one graph holding `inits` and one node.
    fn model(producer: &str, inits: &[Vec<u8>], op: &str) -> Vec<u8> {
        let node = [bytes(3, b"n0"), bytes(4, op.as_bytes())].concat();
        let mut graph = bytes(1, &node);
        for i in inits {
            graph.extend(bytes(5, i));
        }
        [vint(1, 8), bytes(2, producer.as_bytes()), bytes(7, &graph)].concat()
    }

    fn int64_init(name: &str, v: &[i64]) -> Vec<u8> {
        let packed: Vec<u8> = v.iter().flat_map(|&x| varint(x as u64)).collect();
        [
            vint(1, v.len() as u64),
            vint(2, 7),
            bytes(7, &packed),
            bytes(8, name.as_bytes()),
        ]
        .concat()
    }

    fn int8_init(name: &str, v: &[i32]) -> Vec<u8> {
        // int8 values travel as int32_data, one unpacked varint each.
        let mut out = [vint(1, v.len() as u64), vint(2, 3)].concat();
        for &x in v {
            out.extend(vint(5, i64::from(x) as u64));
        }
        out.extend(bytes(8, name.as_bytes()));
        out
    }

    #[test]
    fn reads_int64_and_int32_data_including_negative_values() {
        let a = model(
            "p",
            &[int64_init("s", &[3, -2]), int8_init("q", &[-1, 5])],
            "Relu",
        );
        let b = model(
            "p",
            &[int64_init("s", &[3, -4]), int8_init("q", &[-1, 6])],
            "Relu",
        );
        let f = explain(&a, &b).expect("explain");
        assert!(matches!(f.class, Class::Numeric { .. }), "{}", f.summary());
        assert_eq!(
            f.summary(),
            "numeric: 2 of 2 initializers differ (s, q), max abs 2, max rel 5.0e-1"
        );
        assert!(
            f.details.contains(&"s int64 (2,): 1 of 2 elements differ, max abs 2, max rel 5.0e-1; first at [1]: -2 vs -4".to_string()),
            "{:#?}",
            f.details
        );
    }

    #[test]
    fn producer_is_metadata_and_nodes_are_structure() {
        let inits = [int64_init("s", &[1])];
        let a = model("exporter 1", &inits, "Relu");
        let f = explain(&a, &model("exporter 2", &inits, "Relu")).expect("explain");
        assert_eq!(f.summary(), "metadata only: producer_name");
        assert_eq!(
            f.details,
            vec![r#"producer_name: "exporter 1" vs "exporter 2""#]
        );
        let f = explain(&a, &model("exporter 1", &inits, "Tanh")).expect("explain");
        assert_eq!(f.class, Class::Unknown);
        assert_eq!(
            f.summary(),
            "unknown: graph differs (node 0 `n0` (Relu) vs `n0` (Tanh))"
        );
    }

    #[test]
    fn truncated_messages_are_errors_with_offsets() {
        let a = model("p", &[int64_init("s", &[1])], "Relu");
        let err = explain(&a, &a[..a.len() - 3]).expect_err("truncated");
        assert!(
            err.to_string()
                .starts_with("not a readable ONNX model (actual) at byte "),
            "{err}"
        );
        assert!(explain(b"", b"").is_err());
    }
}
