//! Version templates: `model.version`, and `repro build --version`, may
//! hold placeholders that each build fills in, so that a scheduled
//! retraining gets a version of its own without an edit of the recipe.
//! A leaf: it uses nothing else of the crate.
//!
//! | placeholder | becomes |
//! | --- | --- |
//! | `{date}` | the build's UTC date, `YYYYMMDD` |
//! | `{inputs}` | the first 12 hex digits of the build's inputs digest (the recipe and every resolved input) |
//! | `{data}` | the first 12 hex digits of the digest of the data snapshots alone |
//!
//! What the values are is the runner's to say; this module only reads and
//! fills in templates. Every placeholder becomes a fixed number of digits,
//! so whether every expansion of a template is a valid version can be told
//! from the template alone ([`VersionTemplate::sample`]).

use std::fmt;

/// A placeholder of a version template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// `{date}`: the build's UTC date as `YYYYMMDD`.
    Date,
    /// `{inputs}`: 12 hex digits of the inputs digest.
    Inputs,
    /// `{data}`: 12 hex digits of the digest of the data snapshots.
    Data,
}

impl Placeholder {
    /// Every placeholder, in the order they are documented.
    pub const ALL: [Placeholder; 3] = [Placeholder::Date, Placeholder::Inputs, Placeholder::Data];

    /// Its name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Date => "date",
            Placeholder::Inputs => "inputs",
            Placeholder::Data => "data",
        }
    }

    /// How many characters (all ASCII digits or lowercase hex digits) it
    /// becomes.
    pub fn width(self) -> usize {
        match self {
            Placeholder::Date => 8,
            Placeholder::Inputs | Placeholder::Data => 12,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Placeholder::Date => "the build's UTC date, YYYYMMDD",
            Placeholder::Inputs => "12 hex digits of the inputs digest",
            Placeholder::Data => "12 hex digits of the data snapshots' digest",
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// The placeholders with what each becomes, for messages:
/// `` `{date}` (the build's UTC date, YYYYMMDD), `{inputs}` (...), `{data}` (...) ``.
pub fn placeholders_help() -> String {
    Placeholder::ALL
        .iter()
        .map(|p| format!("`{p}` ({})", p.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(Placeholder),
}

/// A version that may hold placeholders: text with `{date}`, `{inputs}`
/// or `{data}` anywhere in it. A version without braces is a template
/// without placeholders that expands to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTemplate {
    parts: Vec<Part>,
}

impl VersionTemplate {
    /// Read a template. Every `{` must start one of the placeholders and
    /// be closed by `}`; a `}` must close one. The error says what is
    /// wrong (without the list of placeholders: see [`placeholders_help`]).
    pub fn parse(text: &str) -> Result<VersionTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(i) = rest.find(['{', '}']) else {
                parts.push(Part::Text(rest.to_string()));
                break;
            };
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            if rest[i..].starts_with('}') {
                return Err("a `}` that closes no placeholder".to_string());
            }
            let after = &rest[i + 1..];
            let Some(end) = after
                .find(['{', '}'])
                .filter(|&e| after[e..].starts_with('}'))
            else {
                return Err("a `{` without its closing `}`".to_string());
            };
            let name = &after[..end];
            let Some(p) = Placeholder::ALL.into_iter().find(|p| p.name() == name) else {
                return Err(format!("unknown placeholder `{{{name}}}`"));
            };
            parts.push(Part::Placeholder(p));
            rest = &after[end + 1..];
        }
        Ok(VersionTemplate { parts })
    }

    /// Whether it has no placeholder (it is the version itself).
    pub fn is_plain(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, Part::Placeholder(_)))
    }

    /// Whether it holds placeholder `p`.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.parts.contains(&Part::Placeholder(p))
    }

    /// The version: every placeholder replaced by `value` of it.
    pub fn expand(&self, mut value: impl FnMut(Placeholder) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Placeholder(p) => out.push_str(&value(*p)),
            }
        }
        out
    }

    /// The template with every placeholder replaced by as many `0`s as it
    /// becomes digits: a valid version exactly when every expansion is
    /// (for rules on length, characters and the first character).
    pub fn sample(&self) -> String {
        self.expand(|p| "0".repeat(p.width()))
    }
}

impl fmt::Display for VersionTemplate {
    /// As written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Placeholder(p) => write!(f, "{p}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_read_and_filled_in() {
        let t = VersionTemplate::parse("1.1.{date}+data.{data}").unwrap();
        assert!(!t.is_plain());
        assert!(t.uses(Placeholder::Date) && t.uses(Placeholder::Data));
        assert!(!t.uses(Placeholder::Inputs));
        assert_eq!(t.to_string(), "1.1.{date}+data.{data}");
        assert_eq!(
            t.expand(|p| match p {
                Placeholder::Date => "20260102".into(),
                _ => "ab12cd34ef56".into(),
            }),
            "1.1.20260102+data.ab12cd34ef56"
        );
        assert_eq!(t.sample(), "1.1.00000000+data.000000000000");
        let whole = VersionTemplate::parse("{inputs}").unwrap();
        assert_eq!(whole.sample(), "0".repeat(12));
        let plain = VersionTemplate::parse("3.0.0").unwrap();
        assert!(plain.is_plain());
        assert_eq!(plain.expand(|_| unreachable!()), "3.0.0");
        assert_eq!(
            VersionTemplate::parse("").unwrap().expand(|_| "x".into()),
            ""
        );
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        for (text, why) in [
            ("1.{time}", "unknown placeholder `{time}`"),
            ("1.{}", "unknown placeholder `{}`"),
            ("1.{DATE}", "unknown placeholder `{DATE}`"),
            ("1.{date", "a `{` without its closing `}`"),
            ("1.{da{te}", "a `{` without its closing `}`"),
            ("1.date}", "a `}` that closes no placeholder"),
            ("{date}}", "a `}` that closes no placeholder"),
        ] {
            assert_eq!(VersionTemplate::parse(text).unwrap_err(), why, "{text}");
        }
        let help = placeholders_help();
        for p in Placeholder::ALL {
            assert!(help.contains(&format!("`{p}`")), "{help}");
        }
    }
}
