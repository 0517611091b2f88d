//! PyTorch `torch.save` files: a zip holding `<folder>/data.pkl` (a pickle
//! of the saved object, usually a state_dict), one raw storage per key under
//! `<folder>/data/<key>`, and small records (`version`, `byteorder`,
//! `.data/serialization_id`).
//!
//! The pickle is rebuilt (nothing is executed) and every tensor in it, a
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
//! call whose storage is the persistent id `('storage', torch.FloatStorage,
//! key, location, numel)`, is named by its path in the saved object
//! (`fc1.weight` in a state_dict, `model.fc1.weight` or `history[1]` in a
//! checkpoint dict; the `_modules`, `_parameters` and `_buffers` of a whole
//! saved `nn.Module` are left out of the path, so its tensors carry their
//! state_dict names). Tensors are read through their offset and strides and
//! compared element by element; the other values of the saved object
//! (`step`, `lr`) are compared by path; entries that only record the format
//! are metadata.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::rc::Rc;

use serde_json::json;
use zip::ZipArchive;

use crate::archive::{self, Archive};
use crate::common::{clip, sha256, show_text_pair, Budget, Class, ExplainEntry, Finding, Format};
use crate::error::{side, Error, Result};
use crate::numeric::Stats;
use crate::pickle::{self, Graph, Id, Object};
use crate::tensors::{self, name_list, Elem, Tensor};

/// Deepest nesting of the saved object followed.
const MAX_NESTING: usize = 64;
/// Bytes of object paths built per side (each object visited costs its
/// path's length and one), at most.
const PATH_BUDGET: usize = 256 << 20;
/// Bytes of object paths built per side and per byte of `data.pkl`. Each
/// object takes at least one opcode and its key is in the pickle too, so a
/// saved object that is a tree of short names costs far less; only objects
/// shared many times over (a pickle's memo makes a DAG whose paths grow
/// exponentially with its size, or shares one long key among many dicts)
/// cost more.
const PATH_BYTES_PER_BYTE: usize = 64;
/// Entries (relative to the folder) that only record the serialization
/// format, not the saved object.
const FORMAT_RECORDS: [&str; 4] = [
    "version",
    "byteorder",
    ".format_version",
    ".storage_alignment",
];
/// Attributes of a saved `nn.Module` left out of tensor names.
const MODULE_DICTS: [&str; 3] = ["_modules", "_parameters", "_buffers"];

/// Whether `d` is a zip with a `data.pkl` at its top or one folder down.
pub(crate) fn is_torch(d: &[u8]) -> bool {
    ZipArchive::new(Cursor::new(d)).is_ok_and(|z| folder(z.file_names()).is_some())
}

/// The folder holding `data.pkl` (`model/`, or `""` at the top).
fn folder<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter_map(|n| n.strip_suffix("data.pkl"))
        .filter(|p| p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1))
        .min_by_key(|p| p.len())
        .map(str::to_string)
}

fn bad(i: usize, reason: impl Into<String>) -> Error {
    Error::Torch {
        side: side(i),
        reason: reason.into(),
    }
}

/// The element type of a storage class (`FloatStorage`) or a dtype
/// (`float32`, `torch.half`).
fn elem_of(name: &str) -> Option<Elem> {
    let name = match name {
        "FloatStorage" | "float" => "float32",
        "DoubleStorage" | "double" => "float64",
        "HalfStorage" | "half" => "float16",
        "BFloat16Storage" => "bfloat16",
        "LongStorage" | "long" => "int64",
        "IntStorage" | "int" => "int32",
        "ShortStorage" | "short" => "int16",
        "CharStorage" => "int8",
        "ByteStorage" | "UntypedStorage" => "uint8",
        "BoolStorage" => "bool",
        "ComplexFloatStorage" | "cfloat" => "complex64",
        "ComplexDoubleStorage" | "cdouble" => "complex128",
        "QInt8Storage" => "qint8",
        "QUInt8Storage" => "quint8",
        "QInt32Storage" => "qint32",
        "QUInt4x2Storage" => "quint4x2",
        "QUInt2x4Storage" => "quint2x4",
        other => other,
    };
    Elem::named(name)
}

/// A tensor as the pickle describes it.
#[derive(Debug)]
struct TensorRef {
    name: String,
    elem: Elem,
    key: String,
    offset: u64,
    shape: Vec<u64>,
    stride: Vec<u64>,
}

/// A value of the saved object other than a tensor.
#[derive(Debug, Clone)]
enum Leaf {
    Float(f64),
    /// A value whose text shows all of it (numbers, names, short strings).
    Value(String),
    /// A string or bytes, compared by SHA-256 of all of it, whatever is
    /// shown; `text` is the string (shared by every path it is at).
    Blob {
        digest: [u8; 32],
        shown: String,
        text: Option<Rc<str>>,
    },
}

impl PartialEq for Leaf {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Leaf::Float(x), Leaf::Float(y)) => x.to_bits() == y.to_bits(),
            (Leaf::Value(x), Leaf::Value(y)) => x == y,
            (Leaf::Blob { digest: x, .. }, Leaf::Blob { digest: y, .. }) => x == y,
            _ => false,
        }
    }
}

impl Leaf {
    fn show(&self) -> String {
        match self {
            Leaf::Float(x) => format!("{x:?}"),
            Leaf::Value(s) => clip(s, 60),
            Leaf::Blob { shown, .. } => shown.clone(),
        }
    }
}

/// Differing texts shown around their first difference; this many at most
/// (each costs time in the texts' length).
const TEXT_PAIRS_SHOWN: usize = 100;

/// Finds the tensors and other values of a saved object.
struct Walker<'g> {
    g: &'g Graph,
    side: usize,
    tensors: Vec<TensorRef>,
    leaves: Vec<(String, Leaf)>,
    on_path: HashSet<Id>,
    /// The leaf of each string or bytes object, hashed once however many
    /// paths lead to it.
    blobs: HashMap<Id, Leaf>,
    /// Bytes of paths that may still be built.
    budget: usize,
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Walker<'_> {
    fn err(&self, reason: impl Into<String>) -> Error {
        bad(self.side, reason)
    }

    fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.g.get(id) {
            Object::Global(m, n) => Some((m, n)),
            _ => None,
        }
    }

    fn int(&self, id: Id) -> Option<u64> {
        match self.g.get(id) {
            Object::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    fn ints(&self, id: Id) -> Option<Vec<u64>> {
        match self.g.get(id) {
            Object::Tuple(v) | Object::List(v) => v.iter().map(|&x| self.int(x)).collect(),
            _ => None,
        }
    }

    fn leaf(&mut self, path: &str, leaf: Leaf) {
        self.leaves.push((path.to_string(), leaf));
    }

    /// A segment for a dict key: `.name` for strings, `[3]` otherwise.
    fn key_path(&self, path: &str, key: Id) -> String {
        match self.g.get(key) {
            Object::Str(s) => join_key(path, s),
            Object::Int(n) => format!("{path}[{n}]"),
            _ => format!("{path}[{}]", self.g.show(key)),
        }
    }

    fn walk(&mut self, id: Id, path: &str, depth: usize) -> Result<()> {
        if depth > MAX_NESTING {
            return Err(self.err("saved object nested too deeply"));
        }
        let cost = path.len().saturating_add(1);
        if cost > self.budget {
            return Err(self.err("saved object too large to compare"));
        }
        self.budget -= cost;
        if !self.on_path.insert(id) {
            // A cycle: the object contains itself.
            self.leaf(path, Leaf::Value("(cycle)".into()));
            return Ok(());
        }
        let res = self.walk_inner(id, path, depth);
        self.on_path.remove(&id);
        res
    }

    fn walk_inner(&mut self, id: Id, path: &str, depth: usize) -> Result<()> {
        match self.g.get(id) {
            Object::Float(x) => self.leaf(path, Leaf::Float(x)),
            Object::Int(_) | Object::Global(..) | Object::Other => {
                let shown = self.g.show(id);
                self.leaf(path, Leaf::Value(shown));
            }
            Object::Str(s) => {
                let leaf = self
                    .blobs
                    .entry(id)
                    .or_insert_with(|| Leaf::Blob {
                        digest: sha256(s.as_bytes()),
                        shown: self.g.show(id),
                        text: Some(Rc::from(s)),
                    })
                    .clone();
                self.leaf(path, leaf);
            }
            Object::Bytes(b) => {
                let leaf = self
                    .blobs
                    .entry(id)
                    .or_insert_with(|| {
                        let digest = sha256(b);
                        let hex: String = digest[..8].iter().map(|x| format!("{x:02x}")).collect();
                        Leaf::Blob {
                            digest,
                            shown: format!("<{} bytes, sha256 {hex}...>", b.len()),
                            text: None,
                        }
                    })
                    .clone();
                self.leaf(path, leaf);
            }
            Object::Persistent(pid) => {
                let shown = format!("storage {}", self.pid_text(pid));
                self.leaf(path, Leaf::Value(shown));
            }
            Object::List(v) | Object::Tuple(v) | Object::Set(v) => {
                if v.is_empty() {
                    let shown = self.g.show(id);
                    self.leaf(path, Leaf::Value(shown));
                }
                for (i, &c) in v.iter().enumerate() {
                    self.walk(c, &format!("{path}[{i}]"), depth + 1)?;
                }
            }
            Object::Dict(v) => {
                if v.is_empty() {
                    self.leaf(path, Leaf::Value("dict of 0".into()));
                }
                for &(k, c) in v {
                    let p = self.key_path(path, k);
                    self.walk(c, &p, depth + 1)?;
                }
            }
            Object::Call {
                callable,
                args,
                state,
                items,
                entries,
            } => self.call(path, depth, callable, args, state, items, entries)?,
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        path: &str,
        depth: usize,
        callable: Id,
        args: Option<Id>,
        state: Option<Id>,
        items: &[Id],
        entries: &[(Id, Id)],
    ) -> Result<()> {
        let func = self
            .global(callable)
            .map(|(m, n)| (m.to_string(), n.to_string()));
        let arg_list: Vec<Id> = match args.map(|a| self.g.get(a)) {
            Some(Object::Tuple(v)) => v.to_vec(),
            _ => Vec::new(),
        };
        match func.as_ref().map(|(m, n)| (m.as_str(), n.as_str())) {
            Some((
                "torch._utils",
                f @ ("_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3"),
            )) => return self.tensor(path, f, &arg_list),
            Some(("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")) => {
                let data = *arg_list
                    .first()
                    .ok_or_else(|| self.err(format!("`{path}`: parameter without data")))?;
                return self.walk(data, path, depth + 1);
            }
            Some(("torch._tensor" | "torch._utils", "_rebuild_from_type_v2")) => {
                // (func, type, args, state): a tensor subclass.
                if let (Some(&f), Some(&a)) = (arg_list.first(), arg_list.get(2)) {
                    let inner: Vec<Id> = match self.g.get(a) {
                        Object::Tuple(v) => v.to_vec(),
                        _ => Vec::new(),
                    };
                    if let Some(("torch._utils", name)) = self.global(f) {
                        if name.starts_with("_rebuild_tensor") {
                            let name = name.to_string();
                            return self.tensor(path, &name, &inner);
                        }
                    }
                }
            }
            _ => {}
        }
        // Any other object: its class, arguments, attributes and items.
        let class = match func {
            Some((m, n)) if m == "collections" && n == "OrderedDict" => None,
            Some((m, n)) => Some(format!("{m}.{n}")),
            None => Some(self.g.show(callable)),
        };
        if let Some(class) = class {
            self.leaf(path, Leaf::Value(format!("{class} object")));
        }
        let skip_args = arg_list.is_empty();
        if !skip_args {
            for (i, &a) in arg_list.iter().enumerate() {
                self.walk(a, &format!("{path}.__args__[{i}]"), depth + 1)?;
            }
        }
        if let Some(s) = state {
            let attrs: Vec<Id> = match self.g.get(s) {
                Object::Dict(_) => vec![s],
                Object::Tuple(t) if t.len() == 2 => t.to_vec(),
                _ => Vec::new(),
            };
            if attrs.is_empty() {
                self.walk(s, &format!("{path}.__state__"), depth + 1)?;
            }
            for a in attrs {
                let Object::Dict(pairs) = self.g.get(a) else {
                    continue;
                };
                for &(k, v) in pairs {
                    let p = match self.g.get(k) {
                        Object::Str(name) if MODULE_DICTS.contains(&name) => path.to_string(),
                        _ => self.key_path(path, k),
                    };
                    self.walk(v, &p, depth + 1)?;
                }
            }
        }
        for (i, &c) in items.iter().enumerate() {
            self.walk(c, &format!("{path}[{i}]"), depth + 1)?;
        }
        for &(k, v) in entries {
            let p = self.key_path(path, k);
            self.walk(v, &p, depth + 1)?;
        }
        Ok(())
    }

    fn pid_text(&self, pid: Id) -> String {
        match self.g.get(pid) {
            Object::Tuple(v) => v
                .iter()
                .map(|&x| self.g.show(x))
                .collect::<Vec<_>>()
                .join(", "),
            _ => self.g.show(pid),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    /// hooks[, metadata])`, `_rebuild_tensor(storage, offset, size, stride)`
    /// or `_rebuild_tensor_v3(..., hooks, dtype, metadata)`.
    fn tensor(&mut self, path: &str, func: &str, args: &[Id]) -> Result<()> {
        let name = if path.is_empty() { "(root)" } else { path };
        let fail = |w: &Self, what: &str| w.err(format!("tensor `{name}`: {what}"));
        if args.len() < 4 {
            return Err(fail(self, &format!("{func} with {} arguments", args.len())));
        }
        let Object::Persistent(pid) = self.g.get(args[0]) else {
            return Err(fail(self, "its storage is not a persistent id"));
        };
        let Object::Tuple(p) = self.g.get(pid) else {
            return Err(fail(self, "its storage id is not a tuple"));
        };
        let p = p.to_vec();
        if p.len() < 3 || !matches!(self.g.get(p[0]), Object::Str("storage")) {
            return Err(fail(
                self,
                "its storage id is not ('storage', type, key, ...)",
            ));
        }
        let storage_type = match self.g.get(p[1]) {
            Object::Global(_, n) => n.to_string(),
            _ => self.g.show(p[1]),
        };
        let key = match self.g.get(p[2]) {
            Object::Str(s) => s.to_string(),
            Object::Int(n) => n.to_string(),
            _ => return Err(fail(self, "its storage key is not a string")),
        };
        // v3 names the dtype, the storage is untyped.
        let dtype = if func == "_rebuild_tensor_v3" {
            args.get(6)
                .and_then(|&d| self.global(d))
                .map(|(_, n)| n.to_string())
        } else {
            None
        };
        let type_name = dtype.unwrap_or(storage_type);
        let elem =
            elem_of(&type_name).ok_or_else(|| fail(self, &format!("unknown type {type_name}")))?;
        let offset = self
            .int(args[1])
            .ok_or_else(|| fail(self, "storage offset is not an integer"))?;
        let shape = self
            .ints(args[2])
            .ok_or_else(|| fail(self, "size is not a tuple of integers"))?;
        let stride = self
            .ints(args[3])
            .ok_or_else(|| fail(self, "stride is not a tuple of integers"))?;
        if stride.len() != shape.len() {
            return Err(fail(self, "size and stride have different lengths"));
        }
        self.tensors.push(TensorRef {
            name: name.to_string(),
            elem,
            key,
            offset,
            shape,
            stride,
        });
        Ok(())
    }
}

/// One side: the archive, its folder, the saved object's tensors and values.
struct Saved<'a> {
    side: usize,
    /// Length of the file, which bounds what a stored entry can hold.
    len: usize,
    ar: Archive<'a>,
    /// Entry names in archive order.
    names: Vec<String>,
    folder: String,
    pkl: Vec<u8>,
    tensors: Vec<TensorRef>,
    leaves: Vec<(String, Leaf)>,
    storages: HashMap<String, Vec<u8>>,
}

impl<'a> Saved<'a> {
    /// Reads the entry `name` within `budget`.
    fn read(&mut self, name: &str, budget: &Budget) -> Result<Vec<u8>> {
        archive::read_entry(&mut self.ar, name, self.len, budget, self.side)
    }

    fn open(d: &'a [u8], i: usize, budget: &Budget) -> Result<Saved<'a>> {
        let read =
            |ar: &mut Archive<'a>, name: &str| archive::read_entry(ar, name, d.len(), budget, i);
        let mut ar = ZipArchive::new(Cursor::new(d)).map_err(|source| Error::Zip {
            side: side(i),
            source,
        })?;
        let names: Vec<String> = (0..ar.len())
            .filter_map(|k| ar.name_for_index(k).map(str::to_string))
            .collect();
        let name_set: HashSet<&str> = names.iter().map(String::as_str).collect();
        let folder = folder(names.iter().map(String::as_str))
            .ok_or_else(|| bad(i, "no data.pkl in the archive"))?;
        if name_set.contains(format!("{folder}byteorder").as_str()) {
            let order = read(&mut ar, &format!("{folder}byteorder"))?;
            if order.trim_ascii() != b"little" {
                return Err(bad(
                    i,
                    format!(
                        "byte order `{}` (only little-endian storages are compared)",
                        String::from_utf8_lossy(&order).trim()
                    ),
                ));
            }
        }
        let pkl = read(&mut ar, &format!("{folder}data.pkl"))?;
        let graph = Graph::parse(pkl.clone(), i)?;
        let mut w = Walker {
            g: &graph,
            side: i,
            tensors: Vec::new(),
            leaves: Vec::new(),
            on_path: HashSet::new(),
            blobs: HashMap::new(),
            budget: PATH_BUDGET.min(
                pkl.len()
                    .saturating_mul(PATH_BYTES_PER_BYTE)
                    .saturating_add(4096),
            ),
        };
        w.walk(graph.root(), "", 0)?;
        let (tensors, leaves) = (w.tensors, w.leaves);
        let mut storages = HashMap::new();
        for t in &tensors {
            if !storages.contains_key(&t.key) {
                let entry = format!("{folder}data/{}", t.key);
                if !name_set.contains(entry.as_str()) {
                    return Err(bad(
                        i,
                        format!("tensor `{}`: no storage entry `{entry}`", t.name),
                    ));
                }
                let data = read(&mut ar, &entry)?;
                storages.insert(t.key.clone(), data);
            }
        }
        Ok(Saved {
            side: i,
            len: d.len(),
            ar,
            names,
            folder,
            pkl,
            tensors,
            leaves,
            storages,
        })
    }

    /// Every tensor with its elements laid out contiguously; views that
    /// are not contiguous are copied, within `budget`.
    fn tensors(&self, budget: &Budget) -> Result<Vec<Tensor<'_>>> {
        self.tensors
            .iter()
            .map(|t| {
                let storage = self
                    .storages
                    .get(&t.key)
                    .ok_or_else(|| bad(self.side, format!("tensor `{}`: no storage", t.name)))?;
                let data = gather(storage, t, budget)
                    .map_err(|reason| bad(self.side, format!("tensor `{}`: {reason}", t.name)))?;
                Ok(Tensor {
                    name: t.name.clone(),
                    elem: t.elem,
                    shape: t.shape.clone(),
                    data,
                })
            })
            .collect()
    }

    /// Entry names relative to the folder, without data.pkl and the
    /// storages in `used`.
    fn others(&self, used: &HashSet<String>) -> Vec<String> {
        self.names
            .iter()
            .filter_map(|n| n.strip_prefix(&self.folder))
            .filter(|n| *n != "data.pkl" && !used.contains(*n) && !n.ends_with('/'))
            .map(str::to_string)
            .collect()
    }
}

/// The elements of a tensor, read from its storage through its offset and
/// strides, in C order. A view that is not contiguous is copied, and the
/// copy taken from `budget`: strides of 0 let a few bytes of storage stand
/// for any number of elements.
fn gather<'s>(
    storage: &'s [u8],
    t: &TensorRef,
    budget: &Budget,
) -> std::result::Result<Cow<'s, [u8]>, String> {
    let size = t.elem.size as u64;
    let count = t
        .shape
        .iter()
        .try_fold(1u64, |a, &n| a.checked_mul(n))
        .ok_or("size overflows")?;
    if count == 0 {
        return Ok(Cow::Borrowed(&[]));
    }
    // The last element read, in storage elements.
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
        })
        .ok_or("offset overflows")?;
    let end = last
        .checked_add(1)
        .and_then(|e| e.checked_mul(size))
        .ok_or("offset overflows")?;
    if end > storage.len() as u64 {
        return Err(format!(
            "reads up to byte {end} of a {}-byte storage",
            storage.len()
        ));
    }
    let mut expected = 1u64;
    let mut contiguous = true;
    for (&n, &s) in t.shape.iter().zip(&t.stride).rev() {
        if n != 1 && s != expected {
            contiguous = false;
        }
        expected *= n;
    }
    let start = (t.offset * size) as usize;
    if contiguous {
        return Ok(Cow::Borrowed(
            &storage[start..start + (count * size) as usize],
        ));
    }
    let bytes = count.checked_mul(size).ok_or("size overflows")?;
    if !budget.take(bytes) {
        return Err(format!(
            "a view of {count} elements whose copy would pass {} bytes, the most laid \
             out for inputs of this size",
            budget.limit()
        ));
    }
    let size = size as usize;
    let mut out = Vec::with_capacity(bytes as usize);
    let mut idx = vec![0u64; t.shape.len()];
    for _ in 0..count {
        let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        let at = at as usize * size;
        out.extend_from_slice(&storage[at..at + size]);
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < t.shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(Cow::Owned(out))
}

/// Values of the saved object other than tensors that differ.
#[derive(Default)]
struct LeafDiff {
    stats: Stats,
    numeric: usize,
    other: usize,
    paths: Vec<String>,
    details: Vec<String>,
}

fn shown_path(p: &str) -> &str {
    if p.is_empty() {
        "(root)"
    } else {
        p
    }
}

fn compare_leaves(a: &[(String, Leaf)], b: &[(String, Leaf)]) -> LeafDiff {
    let mut d = LeafDiff::default();
    let by_path: HashMap<&str, &Leaf> = b.iter().map(|(p, l)| (p.as_str(), l)).collect();
    let mine: HashSet<&str> = a.iter().map(|(p, _)| p.as_str()).collect();
    let mut texts_shown = 0;
    for (p, x) in a {
        let shown = shown_path(p);
        match by_path.get(p.as_str()) {
            None => {
                d.other += 1;
                d.paths.push(shown.to_string());
                d.details.push(format!("`{shown}`: removed ({})", x.show()));
            }
            Some(y) if x == *y => {}
            Some(Leaf::Float(q)) if matches!(x, Leaf::Float(_)) => {
                let Leaf::Float(p) = x else { continue };
                if p.to_bits() == q.to_bits() {
                    continue;
                }
                d.numeric += 1;
                d.stats.total += 1;
                let same_sign = p.is_sign_negative() == q.is_sign_negative();
                let ulp = same_sign.then(|| u128::from(p.to_bits().abs_diff(q.to_bits())));
                d.stats.add(d.numeric as u64, *p, *q, ulp);
                d.paths.push(shown.to_string());
                d.details.push(format!("`{shown}`: {p:?} vs {q:?}"));
            }
            Some(y) => {
                d.other += 1;
                d.paths.push(shown.to_string());
                let (sx, sy) = match (x, y) {
                    (Leaf::Blob { text: Some(p), .. }, Leaf::Blob { text: Some(q), .. })
                        if texts_shown < TEXT_PAIRS_SHOWN =>
                    {
                        texts_shown += 1;
                        show_text_pair(p, q, 40)
                    }
                    _ => (x.show(), y.show()),
                };
                d.details.push(format!("`{shown}`: {sx} vs {sy}"));
            }
        }
    }
    for (p, y) in b {
        if !mine.contains(p.as_str()) {
            let shown = shown_path(p);
            d.other += 1;
            d.paths.push(shown.to_string());
            d.details.push(format!("`{shown}`: added ({})", y.show()));
        }
    }
    d
}

/// Compares two `torch.save` files; `entry` explains two versions of an
/// archive entry that is neither the pickle nor a tensor's storage.
pub(crate) fn explain(
    path: &str,
    a: &[u8],
    b: &[u8],
    budget: &Budget,
    entry: &ExplainEntry<'_>,
) -> Result<Finding> {
    let mut x = Saved::open(a, 0, budget)?;
    let mut y = Saved::open(b, 1, budget)?;
    let tx = x.tensors(budget)?;
    let ty = y.tensors(budget)?;
    let t = tensors::compare("tensors", &tx, &ty);
    drop((tx, ty));
    let leaves = compare_leaves(&x.leaves, &y.leaves);

    // Entries besides data.pkl and the tensors' storages.
    let used: HashSet<String> = x
        .tensors
        .iter()
        .chain(&y.tensors)
        .map(|t| format!("data/{}", t.key))
        .collect();
    let (ox, oy) = (x.others(&used), y.others(&used));
    let (in_x, in_y): (HashSet<&String>, HashSet<&String>) =
        (ox.iter().collect(), oy.iter().collect());
    let mut entry_details = Vec::new();
    let mut entry_class = Class::Identical;
    let mut entries_differ = Vec::new();
    let mut records_differ = Vec::new();
    let record = |n: &str| FORMAT_RECORDS.contains(&n) || n.starts_with(".data/");
    for n in &ox {
        if !in_y.contains(n) {
            entry_details.push(format!("entry `{n}`: removed"));
            if record(n) {
                records_differ.push(n.clone());
            } else {
                entries_differ.push(n.clone());
            }
            continue;
        }
        let (ex, ey) = (
            x.read(&format!("{}{n}", x.folder), budget)?,
            y.read(&format!("{}{n}", y.folder), budget)?,
        );
        if ex == ey {
            continue;
        }
        if record(n) {
            records_differ.push(n.clone());
            let show = |d: &[u8]| clip(String::from_utf8_lossy(d).trim(), 40);
            entry_details.push(format!(
                "entry `{n}`: {} vs {} (records the format, not the saved object)",
                show(&ex),
                show(&ey)
            ));
        } else {
            let f = entry(n, &ex, &ey);
            entry_class = entry_class.combine(f.class);
            entries_differ.push(n.clone());
            entry_details.push(format!("entry `{n}`: {}", f.summary()));
            entry_details.extend(f.details.iter().take(8).map(|l| format!("  {l}")));
        }
    }
    for n in oy.iter().filter(|n| !in_x.contains(n)) {
        entry_details.push(format!("entry `{n}`: added"));
        if record(n) {
            records_differ.push(n.clone());
        } else {
            entries_differ.push(n.clone());
        }
    }
    if entries_differ
        .iter()
        .any(|n| !in_x.contains(n) || !in_y.contains(n))
    {
        entry_class = entry_class.combine(Class::Unknown);
    }

    let mut class = t.class;
    let mut parts = Vec::new();
    if !t.what.is_empty() {
        parts.push(t.what.clone());
    }
    if !leaves.paths.is_empty() {
        class = class.combine(if leaves.other > 0 {
            Class::Unknown
        } else {
            leaves.stats.class()
        });
        let mut part = if leaves.paths.len() == 1 {
            format!(
                "other value `{}` differs",
                leaves.paths.first().map(String::as_str).unwrap_or_default()
            )
        } else {
            let names: Vec<&str> = leaves.paths.iter().map(String::as_str).collect();
            format!(
                "{} other values differ ({})",
                names.len(),
                name_list(&names)
            )
        };
        // Magnitudes when no tensor's are in the summary already.
        if leaves.other == 0 && parts.is_empty() {
            part.push_str(&format!(", {}", leaves.stats.magnitudes()));
        }
        parts.push(part);
    }
    if !entries_differ.is_empty() {
        class = class.combine(entry_class);
        let names: Vec<&str> = entries_differ.iter().map(String::as_str).collect();
        parts.push(format!("entries differ: {}", name_list(&names)));
    }
    let mut details = t.details.clone();
    details.extend(leaves.details.iter().cloned());
    details.extend(entry_details);
    if x.folder != y.folder {
        details.push(format!("archive folder `{}` vs `{}`", x.folder, y.folder));
    }

    let what = if !parts.is_empty() {
        parts.join("; ")
    } else if t.reordered {
        class = Class::OrderOnly;
        let order = |s: &Saved<'_>| {
            let names: Vec<&str> = s.tensors.iter().map(|t| t.name.as_str()).collect();
            clip(&names.join(", "), 100)
        };
        details.push(format!("tensor order: {} vs {}", order(&x), order(&y)));
        "tensor order (storages renumbered)".to_string()
    } else if x.pkl != y.pkl {
        // Same tensors and values: the pickle says it differently.
        let f = pickle::explain(&x.pkl, &y.pkl, budget)?;
        class = f.class.combine(Class::MetadataOnly);
        details.extend(f.details.iter().take(8).map(|l| format!("data.pkl: {l}")));
        // Values the walk keeps as text (NumPy arrays, big integers) are
        // compared only here: say "values" only when nothing else differs.
        let same = if matches!(
            f.class,
            Class::Identical | Class::MetadataOnly | Class::OrderOnly
        ) {
            "same tensors and values"
        } else {
            "same tensors"
        };
        format!("data.pkl: {} ({same})", f.what)
    } else if !records_differ.is_empty() {
        class = Class::MetadataOnly;
        let names: Vec<&str> = records_differ.iter().map(String::as_str).collect();
        format!("format records ({})", name_list(&names))
    } else if x.folder != y.folder {
        class = Class::MetadataOnly;
        format!("archive folder name (`{}` vs `{}`)", x.folder, y.folder)
    } else {
        // The same content: what differs is in the zip headers.
        let f = archive::explain(path, a, b, budget, entry)?;
        class = f.class;
        details.extend(f.details);
        f.what
    };
    let mut f = Finding::new(Format::Torch, class, what);
    f.details = details;
    f.facts = json!({
        "folder": { "expected": x.folder, "actual": y.folder },
        "tensors": t.facts,
        "other_values": {
            "differing": leaves.paths.iter().take(50).collect::<Vec<_>>(),
            "differing_count": leaves.paths.len(),
            "numbers": (leaves.numeric > 0).then(|| leaves.stats.to_json()),
        },
        "entries_differ": entries_differ,
        "format_records_differ": records_differ,
    });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tref(shape: &[u64], stride: &[u64], offset: u64) -> TensorRef {
        TensorRef {
            name: "t".into(),
            elem: Elem::named("uint8").expect("uint8"),
            key: "0".into(),
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn gathers_views_through_offset_and_strides() {
        let budget = Budget::new(1 << 20);
        let storage: Vec<u8> = (0..12).collect();
        // A 3x4 matrix, contiguous: borrowed as is.
        let g = gather(&storage, &tref(&[3, 4], &[4, 1], 0), &budget).expect("gather");
        assert!(matches!(g, Cow::Borrowed(_)));
        assert_eq!(&*g, &storage[..]);
        // Its transpose.
        let g = gather(&storage, &tref(&[4, 3], &[1, 4], 0), &budget).expect("gather");
        assert_eq!(&*g, &[0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        // Column 1 of rows 1..3, at an offset.
        let g = gather(&storage, &tref(&[2], &[4], 5), &budget).expect("gather");
        assert_eq!(&*g, &[5, 9]);
        // A scalar and an empty tensor.
        assert_eq!(
            &*gather(&storage, &tref(&[], &[], 7), &budget).expect("gather"),
            &[7]
        );
        assert!(gather(&storage, &tref(&[0, 3], &[3, 1], 0), &budget)
            .expect("gather")
            .is_empty());
        let err = gather(&storage, &tref(&[4, 4], &[4, 1], 0), &budget).expect_err("past the end");
        assert_eq!(err, "reads up to byte 16 of a 12-byte storage");
    }

    #[test]
    fn copies_of_views_are_taken_from_the_budget() {
        let storage = [7u8; 4];
        // Stride 0: four bytes stand for 2^40 elements.
        let budget = Budget::new(1 << 20);
        let err = gather(&storage, &tref(&[1 << 20, 1 << 20], &[0, 0], 0), &budget)
            .expect_err("too large");
        assert!(err.contains("would pass 1048576 bytes"), "{err}");
        let budget = Budget::new(6);
        let g = gather(&storage, &tref(&[2, 3], &[0, 0], 0), &budget).expect("fits");
        assert_eq!(&*g, &[7; 6]);
        assert!(gather(&storage, &tref(&[2], &[0], 0), &budget).is_err());
    }

    #[test]
    fn finds_the_folder_of_data_pkl() {
        let f = |names: &[&str]| folder(names.iter().copied());
        assert_eq!(
            f(&["model/data.pkl", "model/data/0"]),
            Some("model/".into())
        );
        assert_eq!(f(&["data.pkl"]), Some(String::new()));
        assert_eq!(f(&["a/b/data.pkl"]), None);
        assert_eq!(f(&["model/mydata.pkl"]), None);
        assert_eq!(f(&["x.npy"]), None);
    }

    #[test]
    fn storage_classes_and_dtypes_name_element_types() {
        for (name, elem) in [
            ("FloatStorage", "float32"),
            ("BFloat16Storage", "bfloat16"),
            ("HalfStorage", "float16"),
            ("LongStorage", "int64"),
            ("BoolStorage", "bool"),
            ("ByteStorage", "uint8"),
            ("CharStorage", "int8"),
            ("float32", "float32"),
            ("half", "float16"),
            ("uint16", "uint16"),
        ] {
            assert_eq!(elem_of(name).map(|e| e.name), Some(elem), "{name}");
        }
        assert!(elem_of("MysteryStorage").is_none());
    }
}
