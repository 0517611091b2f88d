//! Comparing two output trees file by file.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Result;
use repro_store::{BlobDigest, FileEntry, Store, TreeDigest};
use serde::Serialize;

/// One file that differs between the recorded and the rebuilt tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    /// The path inside the step's outputs.
    pub path: String,
    /// What the record says (`None`: the file was not in the record).
    pub expected: Option<Side>,
    /// What the rebuild produced (`None`: the rebuild did not write it).
    pub actual: Option<Side>,
    /// The first byte offset at which the contents differ (both regular files).
    pub first_difference: Option<u64>,
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
        let first_difference = match (ea, eb) {
            (
                Some(FileEntry::File { digest: da, .. }),
                Some(FileEntry::File { digest: db, .. }),
            ) if da != db => first_difference(store, da, db)?,
            _ => None,
        };
        out.push(FileDiff {
            path: p.clone(),
            expected: ea.map(Side::from),
            actual: eb.map(Side::from),
            first_difference,
        });
    }
    Ok(out)
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
