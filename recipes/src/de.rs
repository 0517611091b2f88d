//! Deserialize TOML into the raw structs, turning serde errors into
//! diagnostics with a position and a dotted key.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

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
        let (message, key, hint) = explain(message, key);
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
    let message = message
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected f64", "expected a number");
    (message, key, None)
}
