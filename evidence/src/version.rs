//! `name@version`: the one parser of a version reference.

use crate::exit::UserError;

/// A model version, `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionRef {
    /// The model's name.
    pub name: String,
    /// The version.
    pub version: String,
}

impl VersionRef {
    /// Parse `name@version`; both parts must be usable as a path component
    /// of the store (letters, digits and `._-+@`, not starting with `.`, at
    /// most 200 bytes).
    pub fn parse(s: &str) -> Result<VersionRef, UserError> {
        match s.split_once('@') {
            Some((n, v)) if valid_name(n) && valid_name(v) => Ok(VersionRef {
                name: n.to_string(),
                version: v.to_string(),
            }),
            _ => Err(UserError(format!(
                "`{s}` is not `name@version`\nhint: for example `breast-cancer-classifier@1.0.0`"
            ))),
        }
    }

    /// Whether `s` looks like `name@version` rather than a digest or a path
    /// (it has an `@` and no `/`); [`VersionRef::parse`] still decides.
    pub fn looks_like(s: &str) -> bool {
        s.contains('@') && !s.contains('/') && !s.starts_with("sha256:")
    }
}

impl std::str::FromStr for VersionRef {
    type Err = UserError;
    fn from_str(s: &str) -> Result<VersionRef, UserError> {
        VersionRef::parse(s)
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Whether `s` can be a name or version: a path component of the store.
pub fn valid_name(s: &str) -> bool {
    name_problem(s).is_none()
}

/// Why `s` cannot be a name or version ([`valid_name`]), if it cannot.
pub fn name_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("it is empty")
    } else if s.starts_with('.') {
        Some("it starts with `.`")
    } else if s.len() > 200 {
        Some("it is longer than 200 bytes")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b))
    {
        Some("it contains a character other than letters, digits and `._-+@`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_at_version_and_refuses_the_rest() {
        let v = VersionRef::parse("iris@1.0.0").unwrap();
        assert_eq!((v.name.as_str(), v.version.as_str()), ("iris", "1.0.0"));
        assert_eq!(v.to_string(), "iris@1.0.0");
        for bad in ["iris", "@1", "iris@", "../x@1", "a/b@1", "iris@.hidden", ""] {
            let e = VersionRef::parse(bad).unwrap_err();
            assert!(e.0.contains("is not `name@version`"), "{bad}: {e}");
        }
    }
}
