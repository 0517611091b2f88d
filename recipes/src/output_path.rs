//! Declared output paths.

use std::fmt;

use serde::{Serialize, Serializer};

/// A validated output path, relative to `/repro/out`.
///
/// Not absolute, no `..`, `.` or empty components, no backslash or NUL.
/// A path written with a trailing `/` declares a directory; otherwise a
/// file or symlink. [`OutputPath::as_str`] returns the path without the
/// trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutputPath {
    path: String,
    dir: bool,
}

impl OutputPath {
    /// Validate `text` as written in a recipe.
    pub fn parse(text: &str) -> Result<OutputPath, String> {
        if text.is_empty() {
            return Err("output path is empty".to_string());
        }
        if text.starts_with('/') {
            return Err(format!("output path `{text}` is absolute"));
        }
        if text.contains('\\') || text.contains('\0') {
            return Err(format!("output path `{text}` contains a backslash or NUL"));
        }
        let (body, dir) = match text.strip_suffix('/') {
            Some(body) => (body, true),
            None => (text, false),
        };
        for component in body.split('/') {
            match component {
                "" => return Err(format!("output path `{text}` has an empty component")),
                "." => return Err(format!("output path `{text}` has a `.` component")),
                ".." => return Err(format!("output path `{text}` escapes the output directory")),
                _ => {}
            }
        }
        Ok(OutputPath {
            path: body.to_string(),
            dir,
        })
    }

    /// The path without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Whether this declares a directory (written with a trailing `/`).
    pub fn is_dir(&self) -> bool {
        self.dir
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.path.split('/')
    }

    /// Whether `other` lies inside this path (or is the same path).
    pub fn contains(&self, other: &OutputPath) -> bool {
        other.path == self.path
            || other
                .path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for OutputPath {
    /// As written: with a trailing `/` for a directory.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if self.dir {
            f.write_str("/")?;
        }
        Ok(())
    }
}

impl Serialize for OutputPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_files_and_dirs() {
        let f = OutputPath::parse("reports/model.pkl").unwrap();
        assert_eq!((f.as_str(), f.is_dir()), ("reports/model.pkl", false));
        let d = OutputPath::parse("reports/").unwrap();
        assert_eq!((d.as_str(), d.is_dir()), ("reports", true));
        assert_eq!(d.to_string(), "reports/");
        assert!(OutputPath::parse("..x/y.z").is_ok());
    }

    #[test]
    fn refuses_escapes_and_odd_forms() {
        for bad in [
            "",
            "/",
            "/etc/x",
            "../x",
            "a/../../b",
            "a/..",
            "a//b",
            "./a",
            "a/.",
            "a//",
            "a\\b",
        ] {
            assert!(OutputPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn containment_is_by_component() {
        let reports = OutputPath::parse("reports/").unwrap();
        assert!(reports.contains(&OutputPath::parse("reports/a.txt").unwrap()));
        assert!(reports.contains(&OutputPath::parse("reports").unwrap()));
        assert!(!reports.contains(&OutputPath::parse("reports2").unwrap()));
    }
}
