//! Deserialize TOML into the raw structs, turning serde errors into
//! diagnostics with a position and a dotted key.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::de::{DeTable, DeValue};

use crate::error::{list, Diagnostic, Location, Result};

/// The field name `serde_spanned` uses internally; it is not a real key.
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

/// Deserialize `text` (the contents of `file`) into `T`.
pub(crate) fn from_str<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T> {
    let diagnostic = |inner: toml::de::Error, key: Option<String>, syntax: bool| {
        let location = inner.span().map(|s| Location::of_span(text, s));
        let mut message = inner.message();
        if syntax {
            // The parser adds what it expected (`invalid basic string,
            // expected `"``); the position already shows it, and the
            // wording of syntax errors stays what it has always been.
            message = message
                .split_once(", expected ")
                .map_or(message, |(m, _)| m);
        }
        let (message, key, hint) = match inner.span() {
            Some(span) if syntax && message == "duplicate key" => duplicate(text, span),
            _ => explain(message, key),
        };
        let mut d = Diagnostic::new(file, message).at(location);
        d.key = key;
        d.hint = hint;
        d.into()
    };
    // A syntax error comes out of the parse, before any key is known.
    let parse = || toml::Deserializer::parse(text).map_err(|e| diagnostic(e, None, true));
    // Tracking the path of every value costs a third of a big recipe's
    // deserialization; only a failure needs it, so a failure is simply
    // deserialized again with tracking, which fails the same way.
    if let Ok(value) = T::deserialize(parse()?) {
        return Ok(value);
    }
    serde_path_to_error::deserialize(parse()?).map_err(|e| {
        let key = key_path(e.path());
        diagnostic(e.into_inner(), key, false)
    })
}

/// A key segment as written in TOML: bare when possible, quoted otherwise.
pub(crate) fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

fn key_path(path: &serde_path_to_error::Path) -> Option<String> {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key == SPANNED_VALUE => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&toml_key(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Rewrite serde's wording into the recipe's vocabulary (keys, not fields)
/// and add a hint where serde's message carries one.
fn explain(message: &str, key: Option<String>) -> (String, Option<String>, Option<String>) {
    let message = message.trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", ").unwrap_or((rest, ""));
        let parent = key
            .as_deref()
            .and_then(|k| k.rsplit_once('.'))
            .map(|(p, _)| p.to_string());
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = if valid.is_empty() {
            None
        } else {
            Some(match &parent {
                Some(p) => format!("valid keys in `{p}` are {}", list(&valid)),
                None => format!("valid top-level keys are {}", list(&valid)),
            })
        };
        return (format!("unknown key {field}"), key, hint);
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        let name = field.trim_matches('`');
        let full = match &key {
            Some(k) => format!("{k}.{}", toml_key(name)),
            None => toml_key(name),
        };
        let hint = match &key {
            Some(k) => format!("add `{name} = ...` to the `{k}` table"),
            None => format!("add a `[{name}]` table"),
        };
        return (format!("missing key {field}"), Some(full), Some(hint));
    }
    // `threads` is a `u32` that must also be at least 1 (checked after the
    // parse): the range it states must be the one it accepts.
    let u32_range = match key.as_deref() {
        Some("build.threads") => "expected an integer from 1 to 4294967295",
        _ => "expected an integer from 0 to 4294967295",
    };
    let quoted_number = message.starts_with("invalid type: string ")
        && ["expected u32", "expected u64", "expected f64"]
            .iter()
            .any(|e| message.ends_with(e));
    let message = message
        .replace("expected u32", u32_range)
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected f64", "expected a number");
    let hint = quoted_number.then(|| "write a number, without quotes".to_string());
    (message, key, hint)
}

/// One step of a key path: a table key or an index into an array of tables.
enum Part {
    Key(String),
    Index(usize),
}

/// A key path as the diagnostics write it: `model.name`, `steps[1].name`.
fn display_path(path: &[Part]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Part::Index(i) => out.push_str(&format!("[{i}]")),
            Part::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&toml_key(k));
            }
        }
    }
    out
}

/// A name no recipe uses, to find which table a line of a recipe is in.
const PROBE: &str = "__repro_probe_4f9c__";

/// Explain the parser's bare `duplicate key` at `span` (the second
/// occurrence of the key): name the key or table and where it was first
/// defined. The parser keeps neither, so they are found again here: the
/// line at `span` is a table header (`[a.b]`, `[[a]]`) or a `key = value`
/// in the table the headers above it open; the first definition is that
/// key in the text before the line (which parsed without error).
fn duplicate(text: &str, span: Range<usize>) -> (String, Option<String>, Option<String>) {
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = span.end.min(text.len()).max(line_start);
    let head = text[line_start..end].trim_start();
    let before = &text[..line_start];
    let header = head.strip_prefix('[').map(|h| {
        let array = h.starts_with('[');
        (h.trim_start_matches('['), array)
    });
    let path = match header {
        Some((keys, _)) => key_segments(keys),
        None => key_segments(head).and_then(|keys| {
            let mut path = table_at_end(before)?;
            path.extend(keys);
            Some(path)
        }),
    };
    let Some(path) = path else {
        // An inline table, or a line the tricks above do not understand:
        // name the key as written at the position.
        let key = text.get(span).unwrap_or_default().trim();
        return (format!("duplicate key `{key}`"), None, None);
    };
    let key = display_path(&path);
    let first = first_definition(before, &path)
        .map(|s| {
            format!(
                ", first defined at line {}",
                Location::of_span(text, s).line
            )
        })
        .unwrap_or_default();
    match header {
        Some((_, array)) => {
            let written = if array {
                format!("[[{key}]]")
            } else {
                format!("[{key}]")
            };
            let hint = if array {
                format!("`{key}` is already a table or a value, not an array of tables: rename one of them")
            } else {
                format!("a table is defined once: merge the two `{written}` tables into one")
            };
            (
                format!("duplicate table `{written}`{first}"),
                Some(key),
                Some(hint),
            )
        }
        None => (
            format!("duplicate key `{key}`{first}"),
            Some(key),
            Some("a key is set once: keep one of the two".to_string()),
        ),
    }
}

/// The segments of a dotted key as written (`a."b.c"`), parsed by the TOML
/// parser itself; `None` if it is not a key.
fn key_segments(written: &str) -> Option<Vec<Part>> {
    let doc = format!("{} = 0", written.trim());
    let mut table = DeTable::parse(&doc).ok()?.into_inner();
    let mut out = Vec::new();
    loop {
        let (k, v) = table.into_iter().next()?;
        out.push(Part::Key(k.into_inner().into_owned()));
        match v.into_inner() {
            DeValue::Table(t) => table = t,
            _ => return Some(out),
        }
    }
}

/// The path of the table that a `key = value` line appended to `before`
/// would go into (the last header's table, or the root).
fn table_at_end(before: &str) -> Option<Vec<Part>> {
    let doc = format!("{before}\n{PROBE} = 0\n");
    let root = DeTable::parse(&doc).ok()?.into_inner();
    let mut path = Vec::new();
    find_probe(&root, &mut path).then_some(path)
}

fn find_probe(table: &DeTable, path: &mut Vec<Part>) -> bool {
    for (k, v) in table.iter() {
        if k.get_ref() == PROBE {
            return true;
        }
        path.push(Part::Key(k.get_ref().to_string()));
        let found = match v.get_ref() {
            DeValue::Table(t) => find_probe(t, path),
            DeValue::Array(a) => a.iter().enumerate().any(|(i, item)| match item.get_ref() {
                DeValue::Table(t) => {
                    path.push(Part::Index(i));
                    find_probe(t, path) || {
                        path.pop();
                        false
                    }
                }
                _ => false,
            }),
            _ => false,
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

/// The span of the key at `path` in `before`; in an array of tables
/// without an index in the path, the last table.
fn first_definition(before: &str, path: &[Part]) -> Option<Range<usize>> {
    let root = DeTable::parse(before).ok()?.into_inner();
    let mut table = &root;
    let mut segments = path.iter().peekable();
    while let Some(segment) = segments.next() {
        let Part::Key(name) = segment else {
            return None;
        };
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        if segments.peek().is_none() {
            return Some(k.span());
        }
        table = match v.get_ref() {
            DeValue::Table(t) => t,
            DeValue::Array(a) => {
                let item = match segments.peek() {
                    Some(Part::Index(i)) => {
                        segments.next();
                        a.get(*i)?
                    }
                    _ => a.last()?,
                };
                match item.get_ref() {
                    DeValue::Table(t) => t,
                    _ => return None,
                }
            }
            _ => return None,
        };
    }
    None
}
