//! The store's layout: every namespace of `v1/`, as a type.
//!
//! Each namespace ([`Ns`]) has its path relative to the format directory
//! ([`Ns::rel_path`]), a description ([`Ns::about`]) and a retention class
//! ([`Keep`]). [`Store::ns_dir`](crate::Store::ns_dir) and
//! [`Store::ns_path`](crate::Store::ns_path) turn them into paths;
//! `ns_path` refuses a name that could leave its namespace. Besides the
//! namespaces, `v1/` holds the store's own files ([`INTERNAL`]); anything
//! else is stray ([`stray_entries`]).
//!
//! The table in the crate docs is [`LAYOUT_TABLE`]; a test checks it names
//! every namespace. Uses only `error` (see the module order in the crate
//! docs).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Error, Result};

/// The layout table of the crate docs (a Markdown code block), one line
/// per store file and namespace, with its retention class.
pub const LAYOUT_TABLE: &str = include_str!("layout.md");

/// The entries of `v1/` that are the store's own, not a namespace: the
/// blobs, the OCI layout files and the lock files.
pub const INTERNAL: [&str; 6] = [
    "blobs",
    "oci-layout",
    "index.json",
    "index.json.lock",
    "lock",
    "records.lock",
];

/// How long what a namespace holds is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Never collected by `gc`: governance and pins. What it names is a
    /// root of `gc` and `fsck`.
    Evidence,
    /// Settings written by the user or the runner; never collected.
    Config,
    /// Refs kept as long as the retention rules of `gc` keep what they name
    /// (records, their history and attestations, image markers).
    Retained,
    /// May be dropped at any time: rebuilt or re-checked on demand.
    Cache,
    /// Temp files and scratch directories of running processes.
    Scratch,
}

impl Keep {
    /// Its tag in [`LAYOUT_TABLE`]: `evidence`, `config`, `retained`, `cache`
    /// or `scratch`.
    pub fn label(self) -> &'static str {
        match self {
            Keep::Evidence => "evidence",
            Keep::Config => "config",
            Keep::Retained => "retained",
            Keep::Cache => "cache",
            Keep::Scratch => "scratch",
        }
    }
}

/// A namespace of the store: a directory (or, for [`Ns::Policy`],
/// [`Ns::Retention`] and [`Ns::StatGeneration`], a file) in `v1/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ns {
    /// `refs/records/<name>/<version>`: the latest record of a version.
    Records,
    /// `refs/record-history/<name>/<version>/<hex>`: every record of a version.
    RecordHistory,
    /// `refs/attestations/<record>/<hex>`: a record's attestations.
    Attestations,
    /// `refs/images/<hex>`: markers of the images known to the store.
    Images,
    /// `refs/pins/versions/<name>/<version>`: pinned versions.
    PinnedVersions,
    /// `refs/pins/objects/<hex>`: pinned objects.
    PinnedObjects,
    /// `refs/stages/<stage>/<name>/<version>`: registry stages.
    Stages,
    /// `refs/approvals/<record>/<hex>`: approvals of a record.
    Approvals,
    /// `refs/cards/<record>`: model cards.
    Cards,
    /// `registry/<name>/`: a model's registry history and lock.
    Registry,
    /// `identities/<keyid hex>`: registered identities.
    Identities,
    /// `audit/`: the signed audit log.
    Audit,
    /// `policy.toml`: the promotion policy (a file).
    Policy,
    /// `retention.toml`: the retention rules of `repro gc` (a file).
    Retention,
    /// `ac/<hex>`: the action cache.
    ActionCache,
    /// `memo/<hex>`: build memos.
    Memo,
    /// `cache/stat/<hex>`: stat caches.
    StatCache,
    /// `cache/stat-generation`: the stat caches' generation (a file).
    StatGeneration,
    /// `cache/intact/<hex>`: blob stamps.
    Intact,
    /// `rootfs/<hex>/`: unpacked image roots.
    Rootfs,
    /// `tmp/`: scratch of running processes.
    Tmp,
}

impl Ns {
    /// Every namespace, in the order of [`LAYOUT_TABLE`].
    pub const ALL: [Ns; 21] = [
        Ns::Records,
        Ns::RecordHistory,
        Ns::Attestations,
        Ns::Images,
        Ns::PinnedVersions,
        Ns::PinnedObjects,
        Ns::Stages,
        Ns::Approvals,
        Ns::Cards,
        Ns::Registry,
        Ns::Identities,
        Ns::Audit,
        Ns::Policy,
        Ns::Retention,
        Ns::ActionCache,
        Ns::Memo,
        Ns::StatCache,
        Ns::StatGeneration,
        Ns::Intact,
        Ns::Rootfs,
        Ns::Tmp,
    ];

    /// Its path relative to `v1/`, `/`-separated, e.g. `refs/stages`.
    pub fn rel_path(self) -> &'static str {
        match self {
            Ns::Records => "refs/records",
            Ns::RecordHistory => "refs/record-history",
            Ns::Attestations => "refs/attestations",
            Ns::Images => "refs/images",
            Ns::PinnedVersions => "refs/pins/versions",
            Ns::PinnedObjects => "refs/pins/objects",
            Ns::Stages => "refs/stages",
            Ns::Approvals => "refs/approvals",
            Ns::Cards => "refs/cards",
            Ns::Registry => "registry",
            Ns::Identities => "identities",
            Ns::Audit => "audit",
            Ns::Policy => "policy.toml",
            Ns::Retention => "retention.toml",
            Ns::ActionCache => "ac",
            Ns::Memo => "memo",
            Ns::StatCache => "cache/stat",
            Ns::StatGeneration => "cache/stat-generation",
            Ns::Intact => "cache/intact",
            Ns::Rootfs => "rootfs",
            Ns::Tmp => "tmp",
        }
    }

    /// What it holds, in a few words.
    pub fn about(self) -> &'static str {
        match self {
            Ns::Records => "the latest record of each name@version",
            Ns::RecordHistory => "every record ever made of each name@version",
            Ns::Attestations => "the attestations of each record",
            Ns::Images => "markers of the image manifests known to the store",
            Ns::PinnedVersions => "versions pinned against gc",
            Ns::PinnedObjects => "objects pinned against gc",
            Ns::Stages => "the record promoted to each registry stage",
            Ns::Approvals => "signed approvals of each record",
            Ns::Cards => "the model card of each record",
            Ns::Registry => "each model's registry history and lock",
            Ns::Identities => "registered identities: keys and roles",
            Ns::Audit => "the signed audit log",
            Ns::Policy => "the promotion policy",
            Ns::Retention => "the retention rules of repro gc",
            Ns::ActionCache => "the action cache: step key -> result",
            Ns::Memo => "build memos, one per recipe path",
            Ns::StatCache => "stat caches of snapshotted directories",
            Ns::StatGeneration => "the generation of the stat caches",
            Ns::Intact => "stamps of blobs checked intact",
            Ns::Rootfs => "unpacked roots of images",
            Ns::Tmp => "scratch of running processes",
        }
    }

    /// Its retention class.
    pub fn keep(self) -> Keep {
        match self {
            Ns::Records | Ns::RecordHistory | Ns::Attestations | Ns::Images => Keep::Retained,
            Ns::PinnedVersions
            | Ns::PinnedObjects
            | Ns::Stages
            | Ns::Approvals
            | Ns::Cards
            | Ns::Registry
            | Ns::Identities
            | Ns::Audit => Keep::Evidence,
            Ns::Policy | Ns::Retention => Keep::Config,
            Ns::ActionCache
            | Ns::Memo
            | Ns::StatCache
            | Ns::StatGeneration
            | Ns::Intact
            | Ns::Rootfs => Keep::Cache,
            Ns::Tmp => Keep::Scratch,
        }
    }

    /// Whether it is one file rather than a directory of names
    /// ([`Ns::Policy`], [`Ns::Retention`], [`Ns::StatGeneration`]).
    pub fn is_file(self) -> bool {
        matches!(self, Ns::Policy | Ns::Retention | Ns::StatGeneration)
    }
}

/// Check one name to go below a namespace directory: not empty, not `.`
/// or `..`, not starting with `.` (temp files do), no `/` and no NUL.
/// `ns_dir` is only for the message.
pub(crate) fn check_segment(ns_dir: &Path, segment: &str) -> Result<()> {
    let why = if segment.is_empty() {
        "it is empty"
    } else if segment.contains('/') {
        "it contains `/`"
    } else if segment.contains('\0') {
        "it contains a NUL byte"
    } else if segment.starts_with('.') {
        "it starts with `.` (`.`, `..` and temp files do)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidSegment {
        dir: ns_dir.to_path_buf(),
        segment: segment.to_string(),
        why,
    })
}

/// Whether `rel` (a path below `v1/`, `/`-separated) is a namespace, a
/// store file of [`INTERNAL`], or a directory holding namespaces (`refs`,
/// `cache`, `refs/pins`).
fn accounted_for(rel: &str) -> bool {
    INTERNAL.contains(&rel)
        || Ns::ALL.iter().any(|ns| {
            let p = ns.rel_path();
            p == rel || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
        })
}

/// The entries of `layout_dir` (a store's `v1/`), and of its directories
/// holding namespaces (`refs/`, `refs/pins/`, `cache/`), that no namespace
/// and no store file accounts for: strays for `fsck` to report (leftover
/// temp files of writers that died, files of an older release, typos).
/// Sorted; the namespaces' own contents are not looked at. A directory
/// that does not exist has no strays.
pub fn stray_entries(layout_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut parents: Vec<&str> = vec![""];
    for ns in Ns::ALL {
        let p = ns.rel_path();
        for (i, _) in p.match_indices('/') {
            if !parents.contains(&&p[..i]) {
                parents.push(&p[..i]);
            }
        }
    }
    let mut out = Vec::new();
    for parent in parents {
        let dir = if parent.is_empty() {
            layout_dir.to_path_buf()
        } else {
            layout_dir.join(parent)
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let rel = match name.to_str() {
                Some(n) if parent.is_empty() => n.to_string(),
                Some(n) => format!("{parent}/{n}"),
                None => {
                    out.push(entry.path());
                    continue;
                }
            };
            if !accounted_for(&rel) {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doc_table_lists_every_namespace_with_its_class() {
        for ns in Ns::ALL {
            let line = LAYOUT_TABLE
                .lines()
                .find(|l| {
                    l.strip_prefix("<root>/v1/")
                        .and_then(|r| r.strip_prefix(ns.rel_path()))
                        .is_some_and(|r| r.starts_with([' ', '/']))
                })
                .unwrap_or_else(|| panic!("{ns:?} (`{}`) is not in the table", ns.rel_path()));
            let tag = format!("[{}]", ns.keep().label());
            assert!(line.contains(&tag), "{ns:?}: `{line}` lacks {tag}");
        }
        for name in INTERNAL {
            assert!(
                LAYOUT_TABLE.contains(&format!("<root>/v1/{name}")),
                "{name} is not in the table"
            );
        }
    }

    #[test]
    fn every_table_line_is_a_namespace_or_a_store_file() {
        for line in LAYOUT_TABLE.lines() {
            let Some(rest) = line.strip_prefix("<root>/v1/") else {
                continue;
            };
            let path = rest.split(' ').next().unwrap().trim_end_matches('/');
            let known = INTERNAL
                .iter()
                .any(|i| path == *i || path.starts_with(&format!("{i}/")))
                || Ns::ALL.iter().any(|ns| {
                    path == ns.rel_path() || path.starts_with(&format!("{}/", ns.rel_path()))
                });
            assert!(known, "`{line}` names no namespace");
        }
    }

    #[test]
    fn paths_are_distinct_and_not_nested() {
        let mut paths: Vec<&str> = Ns::ALL.iter().map(|n| n.rel_path()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), Ns::ALL.len());
        for ns in Ns::ALL {
            assert!(!ns.about().is_empty());
            // No namespace is inside another (names below one never collide).
            for other in Ns::ALL {
                assert!(
                    other == ns || !other.rel_path().starts_with(&format!("{}/", ns.rel_path())),
                    "{other:?} is inside {ns:?}"
                );
            }
        }
    }

    #[test]
    fn segments_that_could_leave_a_namespace_are_refused() {
        let dir = Path::new("/s/v1/refs/stages");
        for ok in ["production", "m", "1.2.0", "abc@x+y", "sha256:ab"] {
            check_segment(dir, ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "/", ".hidden", "a\0b"] {
            let err = check_segment(dir, bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSegment { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("/s/v1/refs/stages"), "{err}");
        }
    }

    #[test]
    fn strays_are_what_no_namespace_accounts_for() {
        let t = tempfile::tempdir().unwrap();
        let v1 = t.path();
        assert_eq!(stray_entries(v1).unwrap(), Vec::<PathBuf>::new());
        for d in [
            "blobs/sha256",
            "refs/stages/production",
            "refs/pins/objects",
            "cache/stat",
            "audit",
        ] {
            fs::create_dir_all(v1.join(d)).unwrap();
        }
        for f in [
            "lock",
            "policy.toml",
            "cache/stat-generation",
            "refs/stages/production/x",
        ] {
            fs::write(v1.join(f), b"").unwrap();
        }
        assert_eq!(stray_entries(v1).unwrap(), Vec::<PathBuf>::new());
        for d in ["refs/bogus", "cache/old", "refs/pins/other"] {
            fs::create_dir_all(v1.join(d)).unwrap();
        }
        for f in [".tmp123", "policy.toml.bak", "refs/stages2"] {
            fs::write(v1.join(f), b"").unwrap();
        }
        let want: Vec<PathBuf> = [
            ".tmp123",
            "cache/old",
            "policy.toml.bak",
            "refs/bogus",
            "refs/pins/other",
            "refs/stages2",
        ]
        .iter()
        .map(|r| v1.join(r))
        .collect();
        assert_eq!(stray_entries(v1).unwrap(), want);
    }
}
