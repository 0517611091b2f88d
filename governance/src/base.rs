//! What every part of governance shares: its error type, the stages, and
//! small file helpers.

use std::path::{Path, PathBuf};

use repro_store::Store;

/// What can go wrong in governance.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something that is refused (self-approval, unknown
    /// key, missing role, rollback to a version that never passed the gate, ...).
    #[error("{0}")]
    Refused(String),
    /// The user's input is malformed (model reference, stage, policy file).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A governance file in the store does not parse.
    #[error("`{path}` is malformed: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] repro_store::Error),
    /// Another part of the runner failed (keys, records, audit log).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// Whether this is the user's to fix (exit code 2).
    pub fn is_user(&self) -> bool {
        matches!(self, Error::Refused(_) | Error::Invalid(_))
    }
}

/// The result of a governance operation.
pub type Result<T> = std::result::Result<T, Error>;

/// A stage of a model version in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Built (has a record) and not yet promoted: the implicit stage.
    Candidate,
    /// Passed the `validated` gate.
    Validated,
    /// In production (at most one version of a model).
    Production,
    /// No longer in use.
    Retired,
}

impl Stage {
    /// All stages, in order.
    pub const ALL: [Stage; 4] = [
        Stage::Candidate,
        Stage::Validated,
        Stage::Production,
        Stage::Retired,
    ];

    /// The stage's name, as in paths and the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Candidate => "candidate",
            Stage::Validated => "validated",
            Stage::Production => "production",
            Stage::Retired => "retired",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown stage `{s}`\nhint: the stages are candidate, validated, production and retired"
                ))
            })
    }
}

/// Read a file; `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The sorted, non-hidden entry names of `dir` (empty when it is missing).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                action: "list",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| Error::Io {
            action: "list",
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(n) = entry.file_name().to_str() {
            if !n.starts_with('.') {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hold an exclusive lock on `v1/registry/<name>/lock` (serializes stage
/// changes of one model). Released on drop.
pub(crate) fn lock_model(store: &Store, name: &str) -> Result<std::fs::File> {
    let dir = store.ns_dir(repro_store::Ns::Registry).join(name);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.clone(),
        source,
    })?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| Error::Io {
            action: "open",
            path: path.clone(),
            source,
        })?;
    fs4::fs_std::FileExt::lock_exclusive(&f).map_err(|source| Error::Io {
        action: "lock",
        path,
        source,
    })?;
    Ok(f)
}

impl From<repro_evidence::exit::UserError> for Error {
    fn from(e: repro_evidence::exit::UserError) -> Error {
        Error::Invalid(e.0)
    }
}
