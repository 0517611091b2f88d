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
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_path(e.path());
        let inner = e.into_inner();
        let location = inner.span().map(|s| Location::of_span(text, s));
        let (message, key, hint) = explain(inner.message(), key);
        let mut d = Diagnostic::new(file, message).at(location);
        d.key = key;
        d.hint = hint;
        d.into()
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
