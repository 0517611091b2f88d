//! Python pickles and joblib files: both opcode streams are disassembled
//! (protocols 0 to 5) and run on a small stack machine that rebuilds the
//! object graph without executing anything. The graphs are compared by
//! object path (`HistGradientBoostingClassifier._predictors[1][0].nodes['num_threshold']`),
//! so the explanation can tell a stored thread count, renumbered memo
//! entries or moved floats apart from real changes.
//!
//! joblib writes NumPy arrays as raw bytes right after the pickled
//! `NumpyArrayWrapper` (or, for object arrays, as a nested pickle); the
//! machine reads them the way joblib's unpickler does. zlib- and
//! gzip-compressed joblib files are decompressed first.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::common::{clip, show_text_pair, Budget, Class, Finding, Format};
use crate::error::{side, Error, Result};
use crate::npy;
use crate::numeric::{self, Dtype, Stats};

/// Most opcodes (and objects) read per stream.
const MAX_OPS: usize = 8_000_000;
/// Largest decompressed joblib stream (less when the budget of the
/// comparison is smaller).
const MAX_INFLATED: u64 = 1 << 30;
/// Objects visited by the comparison: each pair of objects compared, and
/// each child either of them has, counts once.
const VISIT_BUDGET: usize = 8_000_000;
/// Deepest object compared, and deepest object whose path is searched: an
/// attacker can nest a tuple a million deep in a megabyte, and neither the
/// stack nor paths that long can follow.
const MAX_NESTING: usize = 200;
/// Steps of work (dict entries searched, shape and state elements read,
/// bytes of field names kept) spent reading NumPy dtypes and shapes, per
/// byte of the stream: objects shared through the memo are read again
/// each time an array uses them, and must not cost more than the stream's
/// size allows.
const WORK_PER_BYTE: u64 = 16;
/// Fields of a structured dtype read at most.
const MAX_FIELDS: usize = 1024;
/// Longest module or class name kept from a GLOBAL (an attacker's
/// megabyte-long name, shared through the memo, would be copied and
/// compared wherever the class is met).
const NAME_CHARS: usize = 256;
/// Most pickle streams nested in one another (joblib writes an object
/// array as a stream inside the stream; one within another is not written
/// by joblib, only by hand).
const MAX_STREAMS: usize = 8;
/// Differences kept for the details.
const KEEP: usize = 200;

/// Whether `d` starts like a pickle of protocol 2 or later.
pub(crate) fn is_pickle(d: &[u8]) -> bool {
    d.len() >= 2 && d[0] == 0x80 && (2..=5).contains(&d[1])
}

/// An opcode's argument.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    None,
    Int(i64),
    Big(String),
    Float(f64),
    Text(String),
    /// A byte string, as (start, length) in the stream.
    Bytes(usize, usize),
    Pair(String, String),
}

impl Arg {
    fn show(&self, d: &[u8]) -> String {
        match self {
            Arg::None => String::new(),
            Arg::Int(n) => n.to_string(),
            Arg::Big(s) => s.clone(),
            Arg::Float(x) => format!("{x:?}"),
            Arg::Text(s) => format!("{:?}", clip(s, 40)),
            Arg::Bytes(s, n) => {
                let head: String = d[*s..s + (*n).min(8)]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("<{n} bytes {head}{}>", if *n > 8 { ".." } else { "" })
            }
            Arg::Pair(m, n) => format!("{m} {n}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Op {
    offset: usize,
    code: u8,
    arg: Arg,
}

fn op_name(code: u8) -> &'static str {
    match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "raw data",
    }
}

fn is_memo_put(code: u8) -> bool {
    matches!(code, b'p' | b'q' | b'r' | 0x94)
}

fn is_memo_get(code: u8) -> bool {
    matches!(code, b'g' | b'h' | b'j')
}

pub(crate) type Id = usize;

/// A NumPy dtype read from a pickled `numpy.dtype`.
#[derive(Debug, Clone, PartialEq)]
struct DtypeInfo {
    /// `<f8`, `|V48`, `|O8`.
    descr: String,
    itemsize: usize,
    /// Fields of a structured dtype: name, type, offset.
    fields: Vec<(String, String, usize)>,
    object: bool,
}

#[derive(Debug, Clone)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    Big(String),
    Float(f64),
    Str(String),
    Bytes(usize, usize),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    Global(String, String),
    Obj {
        callable: Id,
        args: Option<Id>,
        state: Option<Id>,
        items: Vec<Id>,
        entries: Vec<(Id, Id)>,
    },
    Array {
        dtype: DtypeInfo,
        shape: Vec<u64>,
        fortran: bool,
        data: (usize, usize),
    },
    Opaque(String),
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Mark,
    Node(Id),
}

/// One pickle stream, disassembled and rebuilt.
struct Machine {
    d: Vec<u8>,
    ops: Vec<Op>,
    /// Objects and the index of the opcode that made each one.
    nodes: Vec<(Node, usize)>,
    /// Opcodes holding an array's data, and the array they became.
    array_ops: HashMap<usize, Id>,
    root: Id,
    /// Work left for reading dtypes and shapes ([`WORK_PER_BYTE`]).
    work: Cell<u64>,
}

struct Runner<'m> {
    m: &'m mut Machine,
    pos: usize,
    side: usize,
    /// Streams being run: 1 in the outermost one.
    streams: usize,
}

impl Runner<'_> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Pickle {
            side: side(self.side),
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<(usize, usize)> {
        let start = self.pos;
        let end = start.checked_add(n).filter(|&e| e <= self.m.d.len());
        match end {
            Some(end) => {
                self.pos = end;
                Ok((start, n))
            }
            None => Err(self.err(format!("truncated: {n} bytes wanted"))),
        }
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let (s, _) = self.take(n)?;
        Ok(self.m.d[s..s + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> Result<usize> {
        let v = self.uint(n)?;
        usize::try_from(v).map_err(|_| self.err("length out of range"))
    }

    fn line(&mut self) -> Result<String> {
        let start = self.pos;
        let nl = self.m.d[start..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("truncated: no end of line"))?;
        self.pos = start + nl + 1;
        Ok(String::from_utf8_lossy(&self.m.d[start..start + nl]).into_owned())
    }

    fn text(&mut self, n: usize) -> Result<String> {
        let (s, n) = self.take(n)?;
        Ok(String::from_utf8_lossy(&self.m.d[s..s + n]).into_owned())
    }

    /// A little-endian two's complement integer of `n` bytes.
    fn long(&mut self, n: usize) -> Result<Arg> {
        let (s, n) = self.take(n)?;
        let b = &self.m.d[s..s + n];
        if n <= 8 {
            let mut v: i64 = 0;
            for (k, &x) in b.iter().enumerate() {
                v |= i64::from(x) << (8 * k);
            }
            if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                v -= 1i64 << (8 * n);
            }
            Ok(Arg::Int(v))
        } else {
            let hex: String = b.iter().rev().map(|x| format!("{x:02x}")).collect();
            Ok(Arg::Big(format!("0x{hex}")))
        }
    }

    fn read_arg(&mut self, code: u8) -> Result<Arg> {
        Ok(match code {
            b'F' => {
                let l = self.line()?;
                Arg::Float(
                    l.trim()
                        .parse()
                        .map_err(|_| self.err(format!("bad float {l:?}")))?,
                )
            }
            b'I' | b'L' => {
                let l = self.line()?;
                let t = l.trim().trim_end_matches('L');
                match t.parse::<i64>() {
                    Ok(v) => Arg::Int(v),
                    Err(_) if !t.is_empty() => Arg::Big(t.to_string()),
                    Err(_) => return Err(self.err(format!("bad integer {l:?}"))),
                }
            }
            b'J' => Arg::Int(i64::from(self.uint(4)? as u32 as i32)),
            b'K' => Arg::Int(self.uint(1)? as i64),
            b'M' => Arg::Int(self.uint(2)? as i64),
            b'P' | b'S' | b'V' | b'g' | b'p' => Arg::Text(self.line()?),
            b'T' => {
                let n = self.uint(4)? as u32 as i32;
                let n = usize::try_from(n).map_err(|_| self.err("negative length"))?;
                let (s, n) = self.take(n)?;
                Arg::Bytes(s, n)
            }
            b'U' | b'C' => {
                let n = self.len(1)?;
                let (s, n) = self.take(n)?;
                Arg::Bytes(s, n)
            }
            b'B' => {
                let n = self.len(4)?;
                let (s, n) = self.take(n)?;
                Arg::Bytes(s, n)
            }
            0x8e | 0x96 => {
                let n = self.len(8)?;
                let (s, n) = self.take(n)?;
                Arg::Bytes(s, n)
            }
            b'X' => {
                let n = self.len(4)?;
                Arg::Text(self.text(n)?)
            }
            0x8c => {
                let n = self.len(1)?;
                Arg::Text(self.text(n)?)
            }
            0x8d => {
                let n = self.len(8)?;
                Arg::Text(self.text(n)?)
            }
            b'c' | b'i' => Arg::Pair(self.line()?, self.line()?),
            b'h' | b'q' | 0x80 | 0x82 => Arg::Int(self.uint(1)? as i64),
            b'j' | b'r' => Arg::Int(self.uint(4)? as i64),
            0x83 => Arg::Int(self.uint(2)? as i64),
            0x84 => Arg::Int(i64::from(self.uint(4)? as u32 as i32)),
            0x8a => {
                let n = self.len(1)?;
                self.long(n)?
            }
            0x8b => {
                let n = self.uint(4)? as u32 as i32;
                let n = usize::try_from(n).map_err(|_| self.err("negative length"))?;
                self.long(n)?
            }
            0x95 => Arg::Int(self.uint(8)? as i64),
            b'G' => {
                let (s, _) = self.take(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.m.d[s..s + 8]);
                Arg::Float(f64::from_be_bytes(b))
            }
            b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}'
            | b'e' | b'l' | b']' | b'o' | b's' | b't' | b')' | b'u' | 0x81 | 0x85 | 0x86 | 0x87
            | 0x88 | 0x89 | 0x8f | 0x90 | 0x91 | 0x92 | 0x93 | 0x94 | 0x97 | 0x98 => Arg::None,
            other => {
                self.pos -= 1;
                return Err(self.err(format!("unknown opcode 0x{other:02x}")));
            }
        })
    }

    fn node(&mut self, n: Node) -> Result<Id> {
        if self.m.nodes.len() >= MAX_OPS {
            return Err(self.err("too many objects to compare"));
        }
        self.m.nodes.push((n, self.m.ops.len().saturating_sub(1)));
        Ok(self.m.nodes.len() - 1)
    }

    /// Runs one pickle stream from the current position to its STOP and
    /// returns the object it builds.
    fn run(&mut self) -> Result<Id> {
        if self.streams >= MAX_STREAMS {
            return Err(self.err(format!(
                "pickle streams nested more than {MAX_STREAMS} deep"
            )));
        }
        self.streams += 1;
        let res = self.run_stream();
        self.streams -= 1;
        res
    }

    fn run_stream(&mut self) -> Result<Id> {
        let mut stack: Vec<Item> = Vec::new();
        let mut memo: HashMap<u64, Id> = HashMap::new();
        loop {
            if self.m.ops.len() >= MAX_OPS {
                return Err(self.err("too many opcodes to compare"));
            }
            let offset = self.pos;
            let code = *self
                .m
                .d
                .get(self.pos)
                .ok_or_else(|| self.err("truncated: no STOP"))?;
            self.pos += 1;
            let arg = self.read_arg(code)?;
            self.m.ops.push(Op {
                offset,
                code,
                arg: arg.clone(),
            });
            match code {
                b'.' => return self.pop(&mut stack),
                0x80 | 0x95 | 0x98 => {}
                b'(' => stack.push(Item::Mark),
                b'0' => {
                    stack
                        .pop()
                        .ok_or_else(|| self.err("POP on an empty stack"))?;
                }
                b'1' => {
                    self.pop_mark(&mut stack)?;
                }
                b'2' => {
                    let top = *stack
                        .last()
                        .ok_or_else(|| self.err("DUP on an empty stack"))?;
                    stack.push(top);
                }
                b'N' => self.push(&mut stack, Node::None)?,
                0x88 => self.push(&mut stack, Node::Bool(true))?,
                0x89 => self.push(&mut stack, Node::Bool(false))?,
                b'F' | b'G' | b'I' | b'J' | b'K' | b'L' | b'M' | 0x8a | 0x8b => {
                    let n = match arg {
                        Arg::Float(x) => Node::Float(x),
                        Arg::Int(v) => Node::Int(v),
                        Arg::Big(s) => Node::Big(s),
                        _ => Node::None,
                    };
                    self.push(&mut stack, n)?;
                }
                b'S' | b'V' | b'X' | 0x8c | 0x8d => {
                    let s = match arg {
                        Arg::Text(s) if code == b'S' => {
                            s.trim().trim_matches(|c| c == '\'' || c == '"').to_string()
                        }
                        Arg::Text(s) => s,
                        _ => String::new(),
                    };
                    self.push(&mut stack, Node::Str(s))?;
                }
                b'T' | b'U' => {
                    // Python 2 `str`: text when it decodes, bytes otherwise.
                    let Arg::Bytes(s, n) = arg else { continue };
                    let node = match std::str::from_utf8(&self.m.d[s..s + n]) {
                        Ok(t) if n < 1024 => Node::Str(t.to_string()),
                        _ => Node::Bytes(s, n),
                    };
                    self.push(&mut stack, node)?;
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let Arg::Bytes(s, n) = arg else { continue };
                    self.push(&mut stack, Node::Bytes(s, n))?;
                }
                b']' => self.push(&mut stack, Node::List(Vec::new()))?,
                b'}' => self.push(&mut stack, Node::Dict(Vec::new()))?,
                b')' => self.push(&mut stack, Node::Tuple(Vec::new()))?,
                0x8f => self.push(&mut stack, Node::Set(Vec::new()))?,
                b'l' => {
                    let v = self.pop_mark(&mut stack)?;
                    self.push(&mut stack, Node::List(v))?;
                }
                b't' => {
                    let v = self.pop_mark(&mut stack)?;
                    self.push(&mut stack, Node::Tuple(v))?;
                }
                0x91 => {
                    let v = self.pop_mark(&mut stack)?;
                    self.push(&mut stack, Node::Set(v))?;
                }
                b'd' => {
                    let v = self.pop_mark(&mut stack)?;
                    let pairs = v
                        .chunks(2)
                        .filter(|c| c.len() == 2)
                        .map(|c| (c[0], c[1]))
                        .collect();
                    self.push(&mut stack, Node::Dict(pairs))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(code - 0x84);
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(self.pop(&mut stack)?);
                    }
                    v.reverse();
                    self.push(&mut stack, Node::Tuple(v))?;
                }
                b'a' => {
                    let v = self.pop(&mut stack)?;
                    let top = self.top(&stack)?;
                    self.extend(top, vec![v]);
                }
                b'e' | 0x90 => {
                    let v = self.pop_mark(&mut stack)?;
                    let top = self.top(&stack)?;
                    self.extend(top, v);
                }
                b's' => {
                    let v = self.pop(&mut stack)?;
                    let k = self.pop(&mut stack)?;
                    let top = self.top(&stack)?;
                    self.set_items(top, vec![(k, v)]);
                }
                b'u' => {
                    let v = self.pop_mark(&mut stack)?;
                    let pairs = v
                        .chunks(2)
                        .filter(|c| c.len() == 2)
                        .map(|c| (c[0], c[1]))
                        .collect();
                    let top = self.top(&stack)?;
                    self.set_items(top, pairs);
                }
                b'c' => {
                    let Arg::Pair(m, n) = arg else { continue };
                    self.push(&mut stack, global(&m, &n))?;
                }
                0x93 => {
                    let name = self.pop(&mut stack)?;
                    let module = self.pop(&mut stack)?;
                    let s = |id: Id| match &self.m.nodes[id].0 {
                        Node::Str(s) => clip(s, NAME_CHARS),
                        _ => "?".to_string(),
                    };
                    let g = Node::Global(s(module), s(name));
                    self.push(&mut stack, g)?;
                }
                b'i' => {
                    let Arg::Pair(m, n) = arg else { continue };
                    let v = self.pop_mark(&mut stack)?;
                    let callable = self.node(global(&m, &n))?;
                    let args = self.node(Node::Tuple(v))?;
                    self.push_obj(&mut stack, callable, Some(args))?;
                }
                b'o' => {
                    let v = self.pop_mark(&mut stack)?;
                    let (&callable, rest) = v
                        .split_first()
                        .ok_or_else(|| self.err("OBJ without a class"))?;
                    let args = self.node(Node::Tuple(rest.to_vec()))?;
                    self.push_obj(&mut stack, callable, Some(args))?;
                }
                b'R' | 0x81 => {
                    let args = self.pop(&mut stack)?;
                    let callable = self.pop(&mut stack)?;
                    self.push_obj(&mut stack, callable, Some(args))?;
                    let top = self.top(&stack)?;
                    self.frombuffer(top);
                }
                0x92 => {
                    let kwargs = self.pop(&mut stack)?;
                    let args = self.pop(&mut stack)?;
                    let callable = self.pop(&mut stack)?;
                    let both = self.node(Node::Tuple(vec![args, kwargs]))?;
                    self.push_obj(&mut stack, callable, Some(both))?;
                }
                b'b' => {
                    let state = self.pop(&mut stack)?;
                    let top = self.top(&stack)?;
                    if let Node::Obj { state: s, .. } = &mut self.m.nodes[top].0 {
                        *s = Some(state);
                    }
                    self.build(top)?;
                }
                b'p' | b'q' | b'r' | 0x94 => {
                    let top = self.top(&stack)?;
                    let idx = match (&arg, code) {
                        (_, 0x94) => memo.len() as u64,
                        (Arg::Int(i), _) => *i as u64,
                        (Arg::Text(t), _) => t
                            .trim()
                            .parse()
                            .map_err(|_| self.err(format!("bad memo index {t:?}")))?,
                        _ => 0,
                    };
                    memo.insert(idx, top);
                }
                b'g' | b'h' | b'j' => {
                    let idx = match &arg {
                        Arg::Int(i) => *i as u64,
                        Arg::Text(t) => t
                            .trim()
                            .parse()
                            .map_err(|_| self.err(format!("bad memo index {t:?}")))?,
                        _ => 0,
                    };
                    let id = *memo
                        .get(&idx)
                        .ok_or_else(|| self.err(format!("memo {idx} not set")))?;
                    stack.push(Item::Node(id));
                }
                b'P' => {
                    let Arg::Text(t) = arg else { continue };
                    self.push(&mut stack, Node::Opaque(format!("persistent id {t}")))?;
                }
                b'Q' => {
                    let pid = self.pop(&mut stack)?;
                    let callable = self.node(Node::Opaque("persistent_load".into()))?;
                    self.push_obj(&mut stack, callable, Some(pid))?;
                }
                0x82..=0x84 => {
                    let Arg::Int(n) = arg else { continue };
                    self.push(&mut stack, Node::Opaque(format!("extension {n}")))?;
                }
                0x97 => self.push(&mut stack, Node::Opaque("out-of-band buffer".into()))?,
                _ => return Err(self.err(format!("unknown opcode 0x{code:02x}"))),
            }
        }
    }

    fn push(&mut self, stack: &mut Vec<Item>, n: Node) -> Result<()> {
        let id = self.node(n)?;
        stack.push(Item::Node(id));
        Ok(())
    }

    fn push_obj(&mut self, stack: &mut Vec<Item>, callable: Id, args: Option<Id>) -> Result<()> {
        self.push(
            stack,
            Node::Obj {
                callable,
                args,
                state: None,
                items: Vec::new(),
                entries: Vec::new(),
            },
        )
    }

    fn pop(&self, stack: &mut Vec<Item>) -> Result<Id> {
        match stack.pop() {
            Some(Item::Node(id)) => Ok(id),
            Some(Item::Mark) => Err(self.err("unexpected MARK on the stack")),
            None => Err(self.err("pop from an empty stack")),
        }
    }

    fn top(&self, stack: &[Item]) -> Result<Id> {
        match stack.last() {
            Some(Item::Node(id)) => Ok(*id),
            Some(Item::Mark) => Err(self.err("unexpected MARK on the stack")),
            None => Err(self.err("empty stack")),
        }
    }

    fn pop_mark(&self, stack: &mut Vec<Item>) -> Result<Vec<Id>> {
        let k = stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        let items = stack
            .drain(k..)
            .filter_map(|i| match i {
                Item::Node(id) => Some(id),
                Item::Mark => None,
            })
            .collect();
        Ok(items)
    }

    fn extend(&mut self, target: Id, v: Vec<Id>) {
        match &mut self.m.nodes[target].0 {
            Node::List(l) | Node::Set(l) => l.extend(v),
            Node::Obj { items, .. } => items.extend(v),
            _ => {}
        }
    }

    fn set_items(&mut self, target: Id, pairs: Vec<(Id, Id)>) {
        match &mut self.m.nodes[target].0 {
            Node::Dict(d) => d.extend(pairs),
            Node::Obj { entries, .. } => entries.extend(pairs),
            _ => {}
        }
    }

    /// After BUILD: turns NumPy arrays into `Array` nodes, reading joblib's
    /// raw array data that follows a `NumpyArrayWrapper`.
    fn build(&mut self, id: Id) -> Result<()> {
        let Node::Obj {
            callable,
            state: Some(state),
            ..
        } = &self.m.nodes[id].0
        else {
            return Ok(());
        };
        let (callable, state) = (*callable, *state);
        let Node::Global(module, name) = &self.m.nodes[callable].0 else {
            return Ok(());
        };
        if module.contains("joblib") && name == "NumpyArrayWrapper" {
            let get = |k: &str| self.m.dict_get(state, k);
            let dtype = get("dtype")
                .and_then(|d| self.m.dtype(d))
                .ok_or_else(|| self.err("NumpyArrayWrapper without a readable dtype"))?;
            let shape = get("shape")
                .and_then(|s| self.m.shape(s))
                .unwrap_or_default();
            let fortran = get("order")
                .is_some_and(|o| matches!(&self.m.nodes[o].0, Node::Str(s) if s == "F"));
            let aligned = get("numpy_array_alignment_bytes")
                .is_some_and(|a| !matches!(self.m.nodes[a].0, Node::None));
            if dtype.object {
                // Object arrays are a nested pickle stream.
                let inner = self.run()?;
                self.m.nodes[id].0 = self.m.nodes[inner].0.clone();
                return Ok(());
            }
            if aligned {
                let pad = self.len(1)?;
                self.take(pad)?;
            }
            let count = shape.iter().try_fold(1u64, |a, &n| a.checked_mul(n));
            let bytes = count
                .and_then(|c| c.checked_mul(dtype.itemsize as u64))
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| self.err("array too large"))?;
            let data = self.take(bytes)?;
            self.m.ops.push(Op {
                offset: data.0,
                code: 0,
                arg: Arg::Bytes(data.0, data.1),
            });
            self.m.array_ops.insert(self.m.ops.len() - 1, id);
            self.m.nodes[id].0 = Node::Array {
                dtype,
                shape,
                fortran,
                data,
            };
        } else if name == "_reconstruct" && module.contains("numpy") {
            let Node::Tuple(t) = &self.m.nodes[state].0 else {
                return Ok(());
            };
            if t.len() != 5 {
                return Ok(());
            }
            let (shape, dtype, fortran, raw) = (t[1], t[2], t[3], t[4]);
            let (Some(shape), Some(dtype), Node::Bytes(s, n)) = (
                self.m.shape(shape),
                self.m.dtype(dtype),
                &self.m.nodes[raw].0,
            ) else {
                return Ok(());
            };
            let data = (*s, *n);
            let fortran = matches!(self.m.nodes[fortran].0, Node::Bool(true) | Node::Int(1));
            self.m.array_ops.insert(self.m.nodes[raw].1, id);
            self.m.nodes[id].0 = Node::Array {
                dtype,
                shape,
                fortran,
                data,
            };
        }
        Ok(())
    }

    /// After REDUCE: `numpy._frombuffer(buffer, dtype, shape, order)`, used
    /// by protocol 5.
    fn frombuffer(&mut self, id: Id) {
        let Node::Obj {
            callable,
            args: Some(args),
            ..
        } = &self.m.nodes[id].0
        else {
            return;
        };
        let Node::Global(module, name) = &self.m.nodes[*callable].0 else {
            return;
        };
        if name != "_frombuffer" || !module.contains("numpy") {
            return;
        }
        let Node::Tuple(t) = &self.m.nodes[*args].0 else {
            return;
        };
        if t.len() != 4 {
            return;
        }
        let (buf, dtype, shape, order) = (t[0], t[1], t[2], t[3]);
        let (Node::Bytes(s, n), Some(dtype), Some(shape)) = (
            &self.m.nodes[buf].0,
            self.m.dtype(dtype),
            self.m.shape(shape),
        ) else {
            return;
        };
        let data = (*s, *n);
        let fortran = matches!(&self.m.nodes[order].0, Node::Str(o) if o == "F");
        self.m.array_ops.insert(self.m.nodes[buf].1, id);
        self.m.nodes[id].0 = Node::Array {
            dtype,
            shape,
            fortran,
            data,
        };
    }
}

/// A GLOBAL's `module.name`, both clipped to [`NAME_CHARS`].
fn global(module: &str, name: &str) -> Node {
    Node::Global(clip(module, NAME_CHARS), clip(name, NAME_CHARS))
}

impl Machine {
    fn parse(d: Vec<u8>, side: usize) -> Result<Machine> {
        let mut m = Machine {
            d,
            ops: Vec::new(),
            nodes: Vec::new(),
            array_ops: HashMap::new(),
            root: 0,
            work: Cell::new(0),
        };
        m.work.set(
            (m.d.len() as u64)
                .saturating_mul(WORK_PER_BYTE)
                .saturating_add(1 << 20),
        );
        let mut r = Runner {
            m: &mut m,
            pos: 0,
            side,
            streams: 0,
        };
        let root = r.run()?;
        m.root = root;
        Ok(m)
    }

    /// Spends `n` steps of work; false when there are not that many left.
    fn charge(&self, n: usize) -> bool {
        match self.work.get().checked_sub(n as u64) {
            Some(left) => {
                self.work.set(left);
                true
            }
            None => {
                self.work.set(0);
                false
            }
        }
    }

    fn dict_get(&self, dict: Id, key: &str) -> Option<Id> {
        let Node::Dict(items) = &self.nodes[dict].0 else {
            return None;
        };
        if !self.charge(items.len()) {
            return None;
        }
        items
            .iter()
            .find(|(k, _)| matches!(&self.nodes[*k].0, Node::Str(s) if s == key))
            .map(|(_, v)| *v)
    }

    fn shape(&self, id: Id) -> Option<Vec<u64>> {
        match &self.nodes[id].0 {
            Node::Tuple(t) | Node::List(t) if self.charge(t.len()) => t
                .iter()
                .map(|&x| match self.nodes[x].0 {
                    Node::Int(n) => u64::try_from(n).ok(),
                    _ => None,
                })
                .collect(),
            Node::Int(n) => u64::try_from(*n).ok().map(|n| vec![n]),
            _ => None,
        }
    }

    /// Reads a pickled `numpy.dtype(typestr, ...)` with its BUILD state
    /// `(version, byteorder, subarray, names, fields, elsize, alignment, flags)`.
    fn dtype(&self, id: Id) -> Option<DtypeInfo> {
        self.dtype_depth(id, 0)
    }

    fn dtype_depth(&self, id: Id, depth: usize) -> Option<DtypeInfo> {
        if depth > 8 || !self.charge(1) {
            return None;
        }
        let Node::Obj {
            callable,
            args: Some(args),
            state,
            ..
        } = &self.nodes[id].0
        else {
            return None;
        };
        let Node::Global(_, name) = &self.nodes[*callable].0 else {
            return None;
        };
        if name != "dtype" {
            return None;
        }
        let Node::Tuple(a) = &self.nodes[*args].0 else {
            return None;
        };
        let Node::Str(typestr) = &self.nodes[*a.first()?].0 else {
            return None;
        };
        let st: &[Id] = match state.map(|s| &self.nodes[s].0) {
            Some(Node::Tuple(t)) => t,
            _ => &[],
        };
        let node_str = |k: usize| match st.get(k).map(|&i| &self.nodes[i].0) {
            Some(Node::Str(s)) => Some(clip(s, 8)),
            _ => None,
        };
        let order = node_str(1).unwrap_or_else(|| "|".to_string());
        let order = if order == "=" { "<".to_string() } else { order };
        let letter = typestr.chars().next()?;
        // A size has at most 20 digits; more do not parse anyway.
        let digits: String = typestr
            .chars()
            .skip(1)
            .take(21)
            .take_while(char::is_ascii_digit)
            .collect();
        let elsize = match st.get(5).map(|&i| &self.nodes[i].0) {
            Some(Node::Int(n)) if *n > 0 => Some(*n as usize),
            _ => None,
        };
        let itemsize = elsize.or_else(|| digits.parse().ok())?;
        let mut fields = Vec::new();
        let mut object = letter == 'O';
        if let (Some(&names), Some(&fmap)) = (st.get(3), st.get(4)) {
            if let Node::Tuple(names) = &self.nodes[names].0 {
                if names.len() > MAX_FIELDS || !self.charge(names.len()) {
                    return None;
                }
                for &n in names {
                    let Node::Str(fname) = &self.nodes[n].0 else {
                        continue;
                    };
                    if !self.charge(fname.len()) {
                        return None;
                    }
                    let Some(spec) = self.dict_get(fmap, fname) else {
                        continue;
                    };
                    let Node::Tuple(spec) = &self.nodes[spec].0 else {
                        continue;
                    };
                    let (Some(&fd), Some(&off)) = (spec.first(), spec.get(1)) else {
                        continue;
                    };
                    let Some(fdt) = self.dtype_depth(fd, depth + 1) else {
                        continue;
                    };
                    // A negative offset makes no field.
                    let Some(off) = (match self.nodes[off].0 {
                        Node::Int(off) => usize::try_from(off).ok(),
                        _ => None,
                    }) else {
                        continue;
                    };
                    object |= fdt.object;
                    fields.push((fname.clone(), fdt.descr, off));
                }
            }
        }
        // Out of work half way through the fields: no partial dtype.
        if self.work.get() == 0 {
            return None;
        }
        Some(DtypeInfo {
            descr: format!("{order}{letter}{digits}"),
            itemsize,
            fields,
            object,
        })
    }

    /// The class name of an object, for the root of paths.
    fn class_name(&self, id: Id) -> Option<String> {
        let Node::Obj { callable, args, .. } = &self.nodes[id].0 else {
            return None;
        };
        match &self.nodes[*callable].0 {
            Node::Global(m, n)
                if n == "_reconstructor" || (m == "copyreg" && n == "__newobj__") =>
            {
                let Node::Tuple(a) = &self.nodes[(*args)?].0 else {
                    return None;
                };
                match &self.nodes[*a.first()?].0 {
                    Node::Global(_, n) => Some(n.clone()),
                    _ => None,
                }
            }
            Node::Global(_, n) => Some(n.clone()),
            _ => None,
        }
    }

    fn show(&self, id: Id) -> String {
        match &self.nodes[id].0 {
            Node::None => "None".into(),
            Node::Bool(b) => if *b { "True" } else { "False" }.into(),
            Node::Int(n) => n.to_string(),
            Node::Big(s) if s.len() > 40 => format!("{} ({} digits)", clip(s, 40), s.len()),
            Node::Big(s) => s.clone(),
            Node::Float(x) => format!("{x:?}"),
            Node::Str(s) => format!("{:?}", clip(s, 40)),
            Node::Bytes(_, n) => format!("<{n} bytes>"),
            Node::List(v) => format!("list of {}", v.len()),
            Node::Tuple(v) => format!("tuple of {}", v.len()),
            Node::Set(v) => format!("set of {}", v.len()),
            Node::Dict(v) => format!("dict of {}", v.len()),
            Node::Global(m, n) => format!("{m}.{n}"),
            Node::Obj { .. } => {
                format!(
                    "{} object",
                    self.class_name(id).unwrap_or_else(|| "an".into())
                )
            }
            Node::Array { dtype, shape, .. } if shape.len() > 8 => {
                let head = npy::fmt_shape(&shape[..8]);
                let head = head.trim_end_matches(')');
                format!("array {} {head}, ... {} dims)", dtype.descr, shape.len())
            }
            Node::Array { dtype, shape, .. } => {
                format!("array {} {}", dtype.descr, npy::fmt_shape(shape))
            }
            Node::Opaque(s) => clip(s, 60),
        }
    }

    /// A dict key or attribute name: the string itself (borrowed, however
    /// long: a key shared through the memo may be met a million times), or
    /// how the object is shown.
    fn key(&self, id: Id) -> Cow<'_, str> {
        match &self.nodes[id].0 {
            Node::Str(s) => Cow::Borrowed(s),
            _ => Cow::Owned(self.show(id)),
        }
    }

    fn bytes(&self, (s, n): (usize, usize)) -> &[u8] {
        &self.d[s..s + n]
    }

    /// The children of a node with the path segment leading to each.
    fn children(&self, id: Id) -> Vec<(Seg<'_>, Id)> {
        let mut out = Vec::new();
        match &self.nodes[id].0 {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) => {
                out.extend(v.iter().enumerate().map(|(i, &c)| (Seg::Index(i), c)));
            }
            Node::Dict(d) => out.extend(d.iter().map(|&(k, v)| (Seg::Key(self.key(k)), v))),
            Node::Obj {
                args,
                state,
                items,
                entries,
                ..
            } => {
                if let Some(a) = args {
                    out.push((Seg::Other("__args__"), *a));
                }
                if let Some(s) = state {
                    let attrs = match &self.nodes[*s].0 {
                        Node::Dict(_) => Some(*s),
                        Node::Tuple(t) if t.len() == 2 => Some(t[0]),
                        _ => None,
                    };
                    match attrs.map(|a| &self.nodes[a].0) {
                        Some(Node::Dict(d)) => {
                            out.extend(d.iter().map(|&(k, v)| (Seg::Attr(self.key(k)), v)))
                        }
                        _ => out.push((Seg::Other("__state__"), *s)),
                    }
                }
                out.extend(items.iter().enumerate().map(|(i, &c)| (Seg::Index(i), c)));
                out.extend(entries.iter().map(|&(k, v)| (Seg::Key(self.key(k)), v)));
            }
            _ => {}
        }
        out
    }

    /// The path of the first object reachable from the root that was made by
    /// opcode `op` or the nearest opcode before it.
    fn path_of_op(&self, op: usize) -> Option<String> {
        let made = self.nodes.partition_point(|(_, o)| *o <= op);
        let mut targets: HashSet<Id> = HashSet::new();
        match self.array_ops.get(&op) {
            Some(&array) => {
                targets.insert(array);
            }
            // The nearest few objects made at or before the opcode.
            None => targets.extend(made.saturating_sub(3)..made),
        }
        // Paths are kept as steps pointing at their parent's step, and only
        // the one found is written out: a node deep down with a million
        // children must not make a million copies of its path.
        let mut steps: Vec<(usize, Option<Seg<'_>>)> = Vec::new();
        let mut best: Option<(Id, usize)> = None;
        let mut seen = HashSet::new();
        let mut stack = vec![(self.root, usize::MAX, None, 0)];
        let mut budget = VISIT_BUDGET;
        while let Some((id, parent, seg, depth)) = stack.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if !seen.insert(id) {
                continue;
            }
            steps.push((parent, seg));
            let step = steps.len() - 1;
            if targets.contains(&id) && best.is_none_or(|(b, _)| id > b) {
                best = Some((id, step));
            }
            if depth >= MAX_NESTING {
                continue;
            }
            let children = self.children(id);
            budget = budget.saturating_sub(children.len());
            for (seg, c) in children.into_iter().rev() {
                stack.push((c, step, Some(seg), depth + 1));
            }
        }
        let (_, mut step) = best?;
        let mut segs = Vec::new();
        while let Some((parent, seg)) = steps.get(step) {
            segs.extend(seg.as_ref());
            step = *parent;
        }
        let root = self.class_name(self.root).unwrap_or_else(|| "obj".into());
        let rendered: String = segs.iter().rev().map(|s| s.to_string()).collect();
        Some(format!("{root}{rendered}"))
    }
}

/// A pickle's rebuilt object graph, read-only, for formats that embed a
/// pickle (PyTorch's `data.pkl`). Nothing is executed: calls are kept as
/// [`Object::Call`] with their arguments.
pub(crate) struct Graph(Machine);

/// One object of a [`Graph`].
#[derive(Debug)]
pub(crate) enum Object<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    List(&'a [Id]),
    Tuple(&'a [Id]),
    Set(&'a [Id]),
    Dict(&'a [(Id, Id)]),
    /// `module.name`.
    Global(&'a str, &'a str),
    /// `callable(*args)` (REDUCE, NEWOBJ, INST, OBJ), then `items` appended,
    /// `entries` set and `state` applied (BUILD).
    Call {
        callable: Id,
        args: Option<Id>,
        state: Option<Id>,
        items: &'a [Id],
        entries: &'a [(Id, Id)],
    },
    /// `persistent_load(pid)` (BINPERSID).
    Persistent(Id),
    /// Anything else: `None`, booleans, integers too large for `i64`, NumPy
    /// arrays, extension codes; [`Graph::show`] renders them.
    Other,
}

impl Graph {
    /// Runs the pickle stream `d` (uncompressed) and keeps its objects.
    pub(crate) fn parse(d: Vec<u8>, side: usize) -> Result<Graph> {
        Machine::parse(d, side).map(Graph)
    }

    /// The object the stream returns.
    pub(crate) fn root(&self) -> Id {
        self.0.root
    }

    /// The object `id`.
    pub(crate) fn get(&self, id: Id) -> Object<'_> {
        let m = &self.0;
        match &m.nodes[id].0 {
            Node::Int(n) => Object::Int(*n),
            Node::Float(x) => Object::Float(*x),
            Node::Str(s) => Object::Str(s),
            Node::Bytes(s, n) => Object::Bytes(m.bytes((*s, *n))),
            Node::List(v) => Object::List(v),
            Node::Tuple(v) => Object::Tuple(v),
            Node::Set(v) => Object::Set(v),
            Node::Dict(v) => Object::Dict(v),
            Node::Global(a, b) => Object::Global(a, b),
            Node::Obj {
                callable,
                args: Some(pid),
                ..
            } if matches!(&m.nodes[*callable].0, Node::Opaque(o) if o == "persistent_load") => {
                Object::Persistent(*pid)
            }
            Node::Obj {
                callable,
                args,
                state,
                items,
                entries,
            } => Object::Call {
                callable: *callable,
                args: *args,
                state: *state,
                items,
                entries,
            },
            Node::None | Node::Bool(_) | Node::Big(_) | Node::Array { .. } | Node::Opaque(_) => {
                Object::Other
            }
        }
    }

    /// The object as shown in messages: `1200`, `"cpu"`, `dict of 3`,
    /// `torch.FloatStorage`, `OrderedDict object`.
    pub(crate) fn show(&self, id: Id) -> String {
        self.0.show(id)
    }
}

/// One step of an object path; keys and attribute names borrow the
/// machine's strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg<'a> {
    Attr(Cow<'a, str>),
    Key(Cow<'a, str>),
    Index(usize),
    Field(String),
    Other(&'static str),
}

/// Longest key or attribute name shown in a path.
const SEG_CHARS: usize = 80;

impl Seg<'_> {
    /// Bytes of key or name the step carries (hashed when steps are paired).
    fn key_len(&self) -> usize {
        match self {
            Seg::Attr(k) | Seg::Key(k) => k.len(),
            Seg::Field(k) => k.len(),
            Seg::Index(_) | Seg::Other(_) => 0,
        }
    }

    /// Whether the step names a stored thread count.
    fn is_thread(&self) -> bool {
        match self {
            Seg::Attr(k) | Seg::Key(k) => is_thread_key(k),
            _ => false,
        }
    }
}

impl std::fmt::Display for Seg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Attr(a) => write!(f, ".{}", clip(a, SEG_CHARS)),
            Seg::Key(k) => write!(f, "[{:?}]", clip(k, SEG_CHARS)),
            Seg::Field(k) => write!(f, "[{:?}]", clip(k, SEG_CHARS)),
            Seg::Index(i) => write!(f, "[{i}]"),
            Seg::Other(o) => write!(f, ".{o}"),
        }
    }
}

fn is_thread_key(s: &str) -> bool {
    // Thread count keys are short; a long key is not lowercased in full.
    if s.len() > 64 {
        return false;
    }
    let l = s.to_ascii_lowercase();
    l.contains("thread") || l == "n_jobs" || l == "_n_jobs"
}

#[derive(Debug)]
enum Kind {
    Float(f64, f64),
    Array(Stats),
    Value(String, String),
}

#[derive(Debug)]
struct Diff {
    path: String,
    /// The last attribute or key on the path.
    key: Option<String>,
    thread: bool,
    kind: Kind,
}

struct Compare<'a> {
    a: &'a Machine,
    b: &'a Machine,
    seen: HashSet<(Id, Id)>,
    budget: usize,
    /// Steps of the current path that name a thread count.
    thread_steps: usize,
    /// Pairs not compared for being nested deeper than [`MAX_NESTING`].
    too_deep: usize,
    diffs: Vec<Diff>,
    count: usize,
    thread: usize,
    numeric: usize,
    stats: Stats,
}

impl<'a> Compare<'a> {
    fn push(&mut self, path: &mut Vec<Seg<'a>>, seg: Seg<'a>) {
        self.thread_steps += usize::from(seg.is_thread());
        path.push(seg);
    }

    fn pop(&mut self, path: &mut Vec<Seg<'a>>) {
        if let Some(seg) = path.pop() {
            self.thread_steps -= usize::from(seg.is_thread());
        }
    }

    fn add(&mut self, path: &[Seg<'a>], kind: Kind) {
        let thread = self.thread_steps > 0;
        self.count += 1;
        if thread {
            self.thread += 1;
        } else {
            match &kind {
                Kind::Float(x, y) => {
                    self.numeric += 1;
                    self.stats.total += 1;
                    let ulp = x.to_bits().abs_diff(y.to_bits());
                    let same_sign = x.is_sign_negative() == y.is_sign_negative();
                    self.stats.add(
                        self.count as u64,
                        *x,
                        *y,
                        same_sign.then_some(u128::from(ulp)),
                    );
                }
                Kind::Array(s) => {
                    self.numeric += 1;
                    self.stats.merge(s);
                }
                Kind::Value(..) => {}
            }
        }
        if self.diffs.len() < KEEP {
            let root = self
                .a
                .class_name(self.a.root)
                .unwrap_or_else(|| "obj".into());
            let rendered: String = path.iter().map(Seg::to_string).collect();
            let key = path.iter().rev().find_map(|s| match s {
                Seg::Attr(k) | Seg::Key(k) => Some(clip(k, SEG_CHARS)),
                _ => None,
            });
            self.diffs.push(Diff {
                path: format!("{root}{rendered}"),
                key,
                thread,
                kind,
            });
        }
    }

    fn walk(&mut self, path: &mut Vec<Seg<'a>>, x: Id, y: Id) {
        if self.budget == 0 || !self.seen.insert((x, y)) {
            return;
        }
        self.budget -= 1;
        if path.len() >= MAX_NESTING {
            self.too_deep += 1;
            self.add(
                path,
                Kind::Value(
                    format!("nested deeper than {MAX_NESTING} levels, not compared"),
                    String::new(),
                ),
            );
            return;
        }
        let (a, b) = (self.a, self.b);
        let (nx, ny) = (&a.nodes[x].0, &b.nodes[y].0);
        match (nx, ny) {
            (Node::Float(p), Node::Float(q)) => {
                if p.to_bits() != q.to_bits() {
                    self.add(path, Kind::Float(*p, *q));
                }
            }
            (Node::Bytes(..), Node::Bytes(..)) | (Node::Str(_), Node::Str(_)) => {
                let same = match (nx, ny) {
                    (Node::Bytes(s, n), Node::Bytes(t, m)) => {
                        a.bytes((*s, *n)) == b.bytes((*t, *m))
                    }
                    (Node::Str(s), Node::Str(t)) => s == t,
                    _ => false,
                };
                if !same {
                    let (sx, sy) = match (nx, ny) {
                        (Node::Str(s), Node::Str(t)) => show_text_pair(s, t, 40),
                        _ => (a.show(x), b.show(y)),
                    };
                    self.add(path, Kind::Value(sx, sy));
                }
            }
            (Node::Array { .. }, Node::Array { .. }) => self.arrays(path, x, y),
            (Node::Obj { callable: cx, .. }, Node::Obj { callable: cy, .. }) => {
                if a.show(*cx) != b.show(*cy) || a.class_name(x) != b.class_name(y) {
                    self.add(path, Kind::Value(a.show(x), b.show(y)));
                    return;
                }
                self.children(path, x, y);
            }
            (Node::List(p), Node::List(q))
            | (Node::Tuple(p), Node::Tuple(q))
            | (Node::Set(p), Node::Set(q)) => {
                if p.len() != q.len() {
                    self.add(path, Kind::Value(a.show(x), b.show(y)));
                }
                self.children(path, x, y);
            }
            (Node::Dict(_), Node::Dict(_)) => self.children(path, x, y),
            _ => {
                let same = match (nx, ny) {
                    (Node::None, Node::None) => true,
                    (Node::Bool(p), Node::Bool(q)) => p == q,
                    (Node::Int(p), Node::Int(q)) => p == q,
                    (Node::Big(p), Node::Big(q)) => p == q,
                    (Node::Global(m, n), Node::Global(o, p)) => m == o && n == p,
                    (Node::Opaque(p), Node::Opaque(q)) => p == q,
                    _ => false,
                };
                if !same {
                    self.add(path, Kind::Value(a.show(x), b.show(y)));
                }
            }
        }
    }

    /// Walks children paired by path segment (index, key or attribute).
    /// Every child of either side counts against the budget: a big list
    /// shared through the memo is paired with many objects, and each time
    /// its children are listed.
    fn children(&mut self, path: &mut Vec<Seg<'a>>, x: Id, y: Id) {
        let (a, b) = (self.a, self.b);
        // Sequences pair by position, without listing and hashing steps.
        if let (
            Node::List(p) | Node::Tuple(p) | Node::Set(p),
            Node::List(q) | Node::Tuple(q) | Node::Set(q),
        ) = (&a.nodes[x].0, &b.nodes[y].0)
        {
            self.budget = self.budget.saturating_sub(p.len().max(q.len()));
            if self.budget == 0 {
                return;
            }
            for (i, (&c, &d)) in p.iter().zip(q).enumerate() {
                path.push(Seg::Index(i));
                self.walk(path, c, d);
                path.pop();
            }
            return;
        }
        let cx = a.children(x);
        let cy = b.children(y);
        // Keys are hashed to pair the children: one long key shared through
        // the memo by many dict entries costs its length each time.
        let key_bytes: usize = cx.iter().chain(&cy).map(|(s, _)| s.key_len()).sum();
        self.budget = self
            .budget
            .saturating_sub(cx.len() + cy.len() + key_bytes / 64);
        if self.budget == 0 {
            return;
        }
        let by_seg: HashMap<&Seg<'a>, Id> = cy.iter().map(|(s, c)| (s, *c)).collect();
        let mine: HashSet<&Seg<'a>> = cx.iter().map(|(s, _)| s).collect();
        for (seg, c) in &cx {
            let other = by_seg.get(seg).copied();
            self.push(path, seg.clone());
            match other {
                Some(d) => self.walk(path, *c, d),
                None if !matches!(seg, Seg::Index(_)) => {
                    self.add(path, Kind::Value(a.show(*c), "missing".into()));
                }
                None => {}
            }
            self.pop(path);
        }
        for (seg, d) in &cy {
            if !mine.contains(seg) && !matches!(seg, Seg::Index(_)) {
                self.push(path, seg.clone());
                self.add(path, Kind::Value("missing".into(), b.show(*d)));
                self.pop(path);
            }
        }
    }

    fn arrays(&mut self, path: &mut Vec<Seg<'a>>, x: Id, y: Id) {
        let (
            Node::Array {
                dtype: dx,
                shape: sx,
                data: ddx,
                fortran: fx,
            },
            Node::Array {
                dtype: dy,
                shape: sy,
                data: ddy,
                fortran: fy,
            },
        ) = (&self.a.nodes[x].0, &self.b.nodes[y].0)
        else {
            return;
        };
        let (bx, by) = (self.a.bytes(*ddx), self.b.bytes(*ddy));
        // An array's data may be shared through the memo by many arrays,
        // and each field reads every record: what comparing them costs is
        // taken from the budget (in units of 64 bytes).
        let records = bx.len().min(by.len()) / dx.itemsize.max(1);
        let cost = dx.fields.len().min(dy.fields.len())
            + sx.len().min(sy.len())
            + (bx.len().min(by.len()) + records.saturating_mul(dx.fields.len())) / 64;
        if cost > self.budget {
            self.budget = 0;
            return;
        }
        self.budget -= cost;
        if dx.descr != dy.descr || dx.fields != dy.fields || sx != sy || fx != fy {
            self.add(path, Kind::Value(self.a.show(x), self.b.show(y)));
            return;
        }
        if bx == by {
            return;
        }
        if let Some(dt) = Dtype::parse(&dx.descr) {
            let s = numeric::compare(dt, bx, by, 0, dt.size);
            if s.differing > 0 {
                self.add(path, Kind::Array(s));
            }
            return;
        }
        let mut explained = false;
        for (fname, fdescr, off) in dx.fields.clone() {
            path.push(Seg::Field(fname));
            match Dtype::parse(&fdescr) {
                Some(dt) => {
                    let s = numeric::compare(dt, bx, by, off, dx.itemsize);
                    if s.differing > 0 {
                        explained = true;
                        self.add(path, Kind::Array(s));
                    }
                }
                None => {
                    let size = npy::itemsize(&fdescr).unwrap_or(0);
                    let differ = (0..bx.len().min(by.len()))
                        .step_by(dx.itemsize.max(1))
                        .filter(|&r| field_bytes(bx, r, off, size) != field_bytes(by, r, off, size))
                        .count();
                    if differ > 0 {
                        explained = true;
                        self.add(
                            path,
                            Kind::Value(format!("{differ} elements differ"), String::new()),
                        );
                    }
                }
            }
            path.pop();
        }
        if !explained {
            let size = dx.itemsize.max(1);
            let differ = bx
                .chunks(size)
                .zip(by.chunks(size))
                .filter(|(p, q)| p != q)
                .count();
            self.add(
                path,
                Kind::Value(
                    format!("{differ} elements differ ({} compared as bytes)", dx.descr),
                    String::new(),
                ),
            );
        }
    }
}

/// The `size` bytes of a field at `off` in the record at `r`; `None` when
/// they are not all in `d`.
fn field_bytes(d: &[u8], r: usize, off: usize, size: usize) -> Option<&[u8]> {
    let start = r.checked_add(off)?;
    d.get(start..start.checked_add(size)?)
}

/// Undoes zlib or gzip compression of a joblib file, within `budget`.
fn inflate(d: &[u8], i: usize, budget: &Budget) -> Result<Vec<u8>> {
    let err = |reason: String| Error::Pickle {
        side: side(i),
        offset: 0,
        reason,
    };
    if d.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || d.starts_with(b"BZh")
        || d.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        return Err(err(
            "xz, bz2 and zstd compressed joblib files are not supported".into(),
        ));
    }
    let zlib =
        d.len() >= 2 && d[0] & 0x0f == 8 && (u16::from(d[0]) << 8 | u16::from(d[1])) % 31 == 0;
    let gzip = d.starts_with(&[0x1f, 0x8b]);
    if !zlib && !gzip {
        return Ok(d.to_vec());
    }
    let len = d.len() as u64;
    let res = if gzip {
        budget.read_to_end(flate2::read::MultiGzDecoder::new(d), MAX_INFLATED, len, len)
    } else {
        budget.read_to_end(flate2::read::ZlibDecoder::new(d), MAX_INFLATED, len, len)
    };
    res.map_err(|e| err(format!("cannot decompress: {e}")))?
        .ok_or(Error::Expansion {
            limit: budget.limit(),
        })
}

/// The opcodes compared for "first differing opcode": FRAME is left out, as
/// frame lengths change whenever anything inside changes.
fn significant(ops: &[Op]) -> Vec<usize> {
    (0..ops.len()).filter(|&i| ops[i].code != 0x95).collect()
}

fn describe_op(m: &Machine, op: &Op) -> String {
    let arg = op.arg.show(&m.d);
    if arg.is_empty() {
        format!("{} at byte {}", op_name(op.code), op.offset)
    } else {
        format!("{} {arg} at byte {}", op_name(op.code), op.offset)
    }
}

/// Compares two pickle or joblib files; decompressing them takes from
/// `budget`.
pub(crate) fn explain(a: &[u8], b: &[u8], budget: &Budget) -> Result<Finding> {
    let ma = Machine::parse(inflate(a, 0, budget)?, 0)?;
    let mb = Machine::parse(inflate(b, 1, budget)?, 1)?;

    let sa = significant(&ma.ops);
    let sb = significant(&mb.ops);
    let first_op = sa
        .iter()
        .zip(&sb)
        .position(|(&i, &j)| {
            ma.ops[i].code != mb.ops[j].code || !same_arg(&ma, &mb, &ma.ops[i], &mb.ops[j])
        })
        .or_else(|| (sa.len() != sb.len()).then_some(sa.len().min(sb.len())));

    let mut cmp = Compare {
        a: &ma,
        b: &mb,
        seen: HashSet::new(),
        budget: VISIT_BUDGET,
        thread_steps: 0,
        too_deep: 0,
        diffs: Vec::new(),
        count: 0,
        thread: 0,
        numeric: 0,
        stats: Stats::default(),
    };
    cmp.walk(&mut Vec::new(), ma.root, mb.root);

    let mut details = Vec::new();
    if let Some(k) = first_op {
        let at = |m: &Machine, s: &[usize]| s.get(k).map(|&i| describe_op(m, &m.ops[i]));
        details.push(format!(
            "first differing opcode: {} vs {}",
            at(&ma, &sa).unwrap_or_else(|| "end of stream".into()),
            at(&mb, &sb).unwrap_or_else(|| "end of stream".into()),
        ));
        if let Some(p) = sa.get(k).and_then(|&i| ma.path_of_op(i)) {
            details.push(format!("  in `{p}`"));
        }
    }
    details.push(format!("opcodes: {} vs {}", ma.ops.len(), mb.ops.len()));
    for d in &cmp.diffs {
        details.push(match &d.kind {
            Kind::Float(x, y) => format!("`{}`: {x:?} vs {y:?}", d.path),
            Kind::Array(s) => format!("`{}`: {}", d.path, s.describe("elements")),
            Kind::Value(x, y) if y.is_empty() => format!("`{}`: {x}", d.path),
            Kind::Value(x, y) => format!("`{}`: {x} vs {y}", d.path),
        });
    }
    if cmp.budget == 0 {
        details.push("object graph too large: comparison stopped early".into());
    }
    if cmp.too_deep > 0 {
        details.push(format!(
            "{} objects nested deeper than {MAX_NESTING} levels were not compared",
            cmp.too_deep
        ));
    }

    let (class, what) = if cmp.count == 0 {
        let strip = |m: &Machine| -> Vec<(u8, Arg)> {
            m.ops
                .iter()
                .filter(|o| !is_memo_put(o.code) && o.code != 0x95)
                .map(|o| {
                    if is_memo_get(o.code) {
                        (b'g', Arg::None)
                    } else {
                        (o.code, normalized(m, &o.arg))
                    }
                })
                .collect()
        };
        if strip(&ma) == strip(&mb) {
            (Class::OrderOnly, "pickle memo order".to_string())
        } else {
            (
                Class::MetadataOnly,
                "pickle encoding (same object graph)".to_string(),
            )
        }
    } else if cmp.thread == cmp.count {
        let d = cmp.diffs.iter().find(|d| d.thread);
        let (key, vals) = match d {
            Some(Diff {
                key,
                kind: Kind::Value(x, y),
                ..
            }) => (key.clone().unwrap_or_default(), format!("{x} vs {y}")),
            Some(Diff {
                key,
                kind: Kind::Float(x, y),
                ..
            }) => (key.clone().unwrap_or_default(), format!("{x} vs {y}")),
            Some(Diff { key, .. }) => (key.clone().unwrap_or_default(), "differs".into()),
            None => (String::new(), String::new()),
        };
        (
            Class::MetadataOnly,
            format!("stored thread count (`{key}`: {vals})"),
        )
    } else if cmp.numeric + cmp.thread == cmp.count {
        let first = cmp
            .diffs
            .iter()
            .find(|d| !d.thread)
            .map(|d| d.path.clone())
            .unwrap_or_default();
        let mut what = format!("{}, first at `{first}`", cmp.stats.describe("values"));
        if cmp.thread > 0 {
            what.push_str("; stored thread count differs too");
        }
        (cmp.stats.class(), what)
    } else {
        let d = cmp
            .diffs
            .iter()
            .find(|d| matches!(d.kind, Kind::Value(..)) && !d.thread);
        let what = match d {
            Some(Diff {
                path,
                kind: Kind::Value(x, y),
                ..
            }) if y.is_empty() => {
                format!("{} objects differ, first at `{path}`: {x}", cmp.count)
            }
            Some(Diff {
                path,
                kind: Kind::Value(x, y),
                ..
            }) => {
                format!(
                    "{} objects differ, first at `{path}`: {x} vs {y}",
                    cmp.count
                )
            }
            _ => format!("{} objects differ", cmp.count),
        };
        (Class::Unknown, what)
    };
    // What was not compared may differ in any way.
    let (class, what) = match (cmp.budget, cmp.count) {
        (0, 0) => (
            Class::Unknown,
            "object graph too large to compare".to_string(),
        ),
        (0, _) => (
            class.combine(Class::Unknown),
            format!("{what}; object graph too large to compare in full"),
        ),
        _ => (class, what),
    };
    let mut f = Finding::new(Format::Pickle, class, what);
    f.details = details;
    f.facts = json!({
        "opcodes": { "expected": ma.ops.len(), "actual": mb.ops.len() },
        "first_differing_opcode": first_op.map(|k| json!({
            "expected": sa.get(k).map(|&i| describe_op(&ma, &ma.ops[i])),
            "actual": sb.get(k).map(|&i| describe_op(&mb, &mb.ops[i])),
        })),
        "differences": cmp.count,
        "thread_count_differences": cmp.thread,
        "changes": cmp.diffs.iter().take(50).map(|d| json!({
            "path": d.path,
            "thread_count": d.thread,
            "change": match &d.kind {
                Kind::Float(x, y) => json!({ "expected": x, "actual": y }),
                Kind::Array(s) => s.to_json(),
                Kind::Value(x, y) => json!({ "expected": x, "actual": y }),
            },
        })).collect::<Vec<_>>(),
    });
    Ok(f)
}

/// Byte-string arguments compared by content, not position.
fn normalized(m: &Machine, a: &Arg) -> Arg {
    match a {
        Arg::Bytes(s, n) => Arg::Text(format!("{:x?}", &m.d[*s..s + n])),
        other => other.clone(),
    }
}

fn same_arg(ma: &Machine, mb: &Machine, x: &Op, y: &Op) -> bool {
    match (&x.arg, &y.arg) {
        (Arg::Bytes(s, n), Arg::Bytes(t, k)) => ma.d[*s..s + n] == mb.d[*t..t + k],
        (Arg::Float(p), Arg::Float(q)) => p.to_bits() == q.to_bits(),
        (p, q) => p == q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &[u8]) -> Result<Machine> {
        Machine::parse(d.to_vec(), 0)
    }

    #[test]
    fn rebuilds_a_protocol_0_dict() {
        // pickle.dumps({'a': [1, 2.5]}, protocol=0)
        let m = run(b"(dp0\nVa\np1\n(lp2\nI1\naF2.5\nas.").expect("parse");
        assert_eq!(m.show(m.root), "dict of 1");
        let kids = m.children(m.root);
        assert_eq!(kids[0].0.to_string(), "[\"a\"]");
        assert_eq!(m.show(kids[0].1), "list of 2");
    }

    #[test]
    fn long1_decodes_negative_numbers() {
        // pickle.dumps(-129, protocol=2) == b'\x80\x02J\x7f\xff\xff\xff.', LONG1 for big ones
        let m = run(b"\x80\x02\x8a\x02\x7f\xff.").expect("parse");
        assert_eq!(m.show(m.root), "-129");
        let m = run(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").expect("parse");
        assert_eq!(m.show(m.root), "0x010000000000000000");
    }

    #[test]
    fn truncated_and_unknown_opcodes_are_errors() {
        let err = run(b"\x80\x04\x95").err().expect("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = run(b"\x80\x04\xff.").err().expect("unknown");
        assert!(err.to_string().contains("unknown opcode 0xff"), "{err}");
        let err = run(b"\x80\x02h\x05.").err().expect("memo");
        assert!(err.to_string().contains("memo 5 not set"), "{err}");
    }

    #[test]
    fn thread_keys_are_recognized() {
        for k in [
            "n_threads",
            "_n_threads",
            "num_threads",
            "n_jobs",
            "OMP_THREADS",
        ] {
            assert!(is_thread_key(k), "{k}");
        }
        assert!(!is_thread_key("n_estimators"));
    }
}
