//! Comparing two output trees file by file.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Result;
use repro_store::{BlobDigest, FileEntry, Store, TreeDigest};
use serde::Serialize;

/// One file that differs between the recorded and the rebuilt tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileDiff {
    /// The path inside the step's outputs.
    pub path: String,
    /// What the record says (`None`: the file was not in the record).
    pub expected: Option<Side>,
    /// What the rebuild produced (`None`: the rebuild did not write it).
    pub actual: Option<Side>,
    /// The first byte offset at which the contents differ (both regular files).
    pub first_difference: Option<u64>,
    /// What differs, in terms of the file's format (both regular files).
    pub explanation: Option<Explained>,
}

/// A [`repro_explain::Explanation`] as a verification reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    /// The format the file was compared as.
    pub format: String,
    /// `metadata only`, `order only`, `numeric`, `unknown`.
    pub class: String,
    /// One line, e.g. `metadata only: zip entry timestamps`.
    pub summary: String,
    /// Lines for a person.
    pub details: Vec<String>,
    /// The same facts, structured.
    pub facts: serde_json::Value,
    /// The report of diffoscope, when asked for and installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<String>,
}

/// Files larger than this are compared byte by byte only (no format-aware
/// explanation), to keep memory bounded.
pub const EXPLAIN_LIMIT: u64 = 256 << 20;

/// Options of a comparison.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompareOptions {
    /// Hand each differing pair to diffoscope too, when it is installed.
    pub diffoscope: bool,
}

/// One side of a differing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Side {
    /// A regular file.
    File {
        /// Its digest.
        digest: BlobDigest,
        /// Its size.
        size: u64,
        /// Its executable bit.
        executable: bool,
    },
    /// A symbolic link.
    Symlink {
        /// Its target.
        target: String,
    },
}

impl From<&FileEntry> for Side {
    fn from(e: &FileEntry) -> Self {
        match e {
            FileEntry::File {
                digest,
                size,
                executable,
            } => Side::File {
                digest: *digest,
                size: *size,
                executable: *executable,
            },
            FileEntry::Symlink { target } => Side::Symlink {
                target: target.clone(),
            },
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Side::File {
                digest,
                size,
                executable,
            } => {
                write!(
                    f,
                    "{digest}, {size} bytes{}",
                    if *executable { ", executable" } else { "" }
                )
            }
            Side::Symlink { target } => write!(f, "symlink to `{target}`"),
        }
    }
}

/// Every file that differs between two trees, sorted by path.
pub fn diff_trees(
    store: &Store,
    expected: &TreeDigest,
    actual: &TreeDigest,
    opts: CompareOptions,
) -> Result<Vec<FileDiff>> {
    if expected == actual {
        return Ok(Vec::new());
    }
    let a: BTreeMap<String, FileEntry> = store.flatten(expected)?;
    let b: BTreeMap<String, FileEntry> = store.flatten(actual)?;
    let mut out = Vec::new();
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let (ea, eb) = (a.get(p), b.get(p));
        if ea == eb {
            continue;
        }
        let (first_difference, explanation) = match (ea, eb) {
            (
                Some(FileEntry::File {
                    digest: da,
                    size: sa,
                    ..
                }),
                Some(FileEntry::File {
                    digest: db,
                    size: sb,
                    ..
                }),
            ) if da != db => {
                let first = first_difference(store, da, db)?;
                let explained = if *sa <= EXPLAIN_LIMIT && *sb <= EXPLAIN_LIMIT {
                    Some(explain_blobs(store, p, da, db, opts)?)
                } else {
                    None
                };
                (first, explained)
            }
            _ => (None, None),
        };
        out.push(FileDiff {
            path: p.clone(),
            expected: ea.map(Side::from),
            actual: eb.map(Side::from),
            first_difference,
            explanation,
        });
    }
    Ok(out)
}

/// Explain why two versions of the file at `path` differ.
pub fn explain_blobs(
    store: &Store,
    path: &str,
    a: &BlobDigest,
    b: &BlobDigest,
    opts: CompareOptions,
) -> Result<Explained> {
    let (ba, bb) = (store.read_blob(a)?, store.read_blob(b)?);
    let mut explained = explained(path, &ba, &bb);
    if opts.diffoscope {
        explained.diffoscope = run_diffoscope(&store.blob_path(a), &store.blob_path(b));
    }
    Ok(explained)
}

/// Explain two byte strings (two versions of the file at `path`).
pub fn explained(path: &str, a: &[u8], b: &[u8]) -> Explained {
    let e = repro_explain::explain(path, a, b);
    Explained {
        format: e.format.to_string(),
        class: e.class.to_string(),
        summary: e.summary,
        details: e.details,
        facts: e.json,
        diffoscope: None,
    }
}

/// diffoscope's report on two files, or a line saying why there is none.
pub fn run_diffoscope(a: &std::path::Path, b: &std::path::Path) -> Option<String> {
    Some(match repro_explain::diffoscope(a, b) {
        Some(Ok(report)) => report,
        Some(Err(e)) => format!("diffoscope failed: {e}"),
        None => "diffoscope is not installed (hint: apt-get install diffoscope)".to_string(),
    })
}

/// The first offset at which two blobs differ (both are re-hashed first).
pub fn first_difference(store: &Store, a: &BlobDigest, b: &BlobDigest) -> Result<Option<u64>> {
    store.verify_blob(a)?;
    store.verify_blob(b)?;
    let mut fa = std::io::BufReader::new(std::fs::File::open(store.blob_path(a))?);
    let mut fb = std::io::BufReader::new(std::fs::File::open(store.blob_path(b))?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
