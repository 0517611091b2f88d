//! Errors and diagnostics.
//!
//! Everything wrong with a recipe or a lock file is reported as a
//! [`Diagnostic`]: a message, the file, the line and column, the dotted key
//! and a hint. Validation collects every diagnostic it can find, so one run
//! shows all the problems of a recipe (syntax and type errors stop the
//! parse, so those come one at a time).

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while reading, validating or pinning a recipe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe or lock file is invalid. The diagnostics already carry the
    /// `error:` prefix, the position, the key and the hint: print them as is.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The diagnostics of an [`Error::Invalid`], or an empty slice.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Invalid(d) => &d.0,
            _ => &[],
        }
    }
}

/// A 1-based line and column (the column counts characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text).
    pub fn from_offset(text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }

    /// The location of the start of a byte span.
    pub fn of_span(text: &str, span: Range<usize>) -> Location {
        Location::from_offset(text, span.start)
    }
}

/// The start of every line of a text, so that many offsets can be turned
/// into [`Location`]s in logarithmic time each (a recipe of 10,000 steps asks
/// for tens of thousands; [`Location::from_offset`] scans from the start).
pub(crate) struct LineIndex {
    /// Byte offset of the first byte of each line; `starts[0] == 0`.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// The same as [`Location::from_offset`] on the indexed `text`.
    pub(crate) fn locate(&self, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line starting at or before `offset`.
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts[line - 1];
        let column = text[line_start..offset].chars().count() + 1;
        Location { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a file, with where it is and how to fix it.
///
/// Displays as:
///
/// ```text
/// error: <message>
///   --> <file>:<line>:<column>
///   = key: <dotted key path>
///   = hint: <hint>
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// What is wrong: lowercase, no trailing period.
    pub message: String,
    /// The file, as given by the caller.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// The dotted key path, e.g. `steps[2].outputs[0]`, when known.
    pub key: Option<String>,
    /// How to fix it, when there is a fix.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic about `file` with no position, key or hint yet.
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            file: file.to_path_buf(),
            location: None,
            key: None,
            hint: None,
        }
    }

    /// Set the position.
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// Set the key path.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Set the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}\n  --> {}", self.message, self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{loc}")?;
        }
        if let Some(key) = &self.key {
            write!(f, "\n  = key: {key}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// One or more diagnostics, sorted by position. Displays them separated by a
/// blank line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// `Ok(())` when empty, otherwise an [`Error::Invalid`] with the
    /// diagnostics sorted by file and position (stable for equal positions).
    pub fn into_result(mut self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        self.0
            .sort_by(|a, b| (&a.file, a.location).cmp(&(&b.file, b.location)));
        Err(Error::Invalid(self))
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Invalid(Diagnostics(vec![d]))
    }
}

/// Collects diagnostics about one file while walking it.
pub(crate) struct Collector<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) diags: Vec<Diagnostic>,
    lines: LineIndex,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Collector {
            file,
            text,
            diags: Vec::new(),
            lines: LineIndex::new(text),
        }
    }

    pub(crate) fn loc(&self, span: Range<usize>) -> Location {
        self.lines.locate(self.text, span.start)
    }

    /// Record a diagnostic at `span` for `key`.
    pub(crate) fn push(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = Diagnostic::new(self.file, message)
            .at(Some(self.loc(span)))
            .key(key);
        d.hint = hint;
        self.diags.push(d);
    }

    pub(crate) fn finish(self) -> Result<()> {
        Diagnostics(self.diags).into_result()
    }
}

/// `a`, `b`, `c` in backticks, for hints.
pub(crate) fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_character_columns() {
        let text = "ab\nçé = 1\n";
        assert_eq!(
            Location::from_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::from_offset(text, 3),
            Location { line: 2, column: 1 }
        );
        // `=` is after two two-byte characters and a space: byte 8, column 4.
        assert_eq!(
            Location::from_offset(text, 8),
            Location { line: 2, column: 4 }
        );
        // Inside a multi-byte character and past the end are clamped.
        assert_eq!(
            Location::from_offset(text, 4),
            Location { line: 2, column: 1 }
        );
        assert_eq!(
            Location::from_offset(text, 999),
            Location { line: 3, column: 1 }
        );
    }

    #[test]
    fn line_index_agrees_with_from_offset_everywhere() {
        for text in [
            "",
            "\n",
            "ab\nçé = 1\n",
            "x\n\n\ny = \"日本\"\nlast",
            "no newline at all",
        ] {
            let index = LineIndex::new(text);
            for offset in 0..=text.len() + 2 {
                assert_eq!(
                    index.locate(text, offset),
                    Location::from_offset(text, offset),
                    "{text:?} at {offset}"
                );
            }
        }
    }

    #[test]
    fn diagnostic_prints_only_known_lines() {
        let d = Diagnostic::new(Path::new("m.toml"), "bad thing");
        assert_eq!(d.to_string(), "error: bad thing\n  --> m.toml");
        let d = d
            .at(Some(Location { line: 3, column: 7 }))
            .key("steps[0].name")
            .hint("fix it");
        assert_eq!(
            d.to_string(),
            "error: bad thing\n  --> m.toml:3:7\n  = key: steps[0].name\n  = hint: fix it"
        );
    }
}
