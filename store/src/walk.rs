//! What a walk of a directory finds, and how a walked file is opened,
//! checked and hashed: the types shared by the walk ([`crate::snapshot`]),
//! the stat cache ([`crate::statcache`]), the blob writers and the intact
//! stamps. The walk itself is in `snapshot`; this module depends on neither
//! (see the module order in the crate docs).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::digest::{BlobDigest, Hash};
use crate::error::{io_err, Error, Result};
use crate::fsutil::kind_of;

/// The stat fields the stat cache compares (see [`crate::statcache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    /// Seconds and nanoseconds since the epoch.
    pub(crate) mtime: (i64, u32),
    /// Seconds and nanoseconds since the epoch.
    pub(crate) ctime: (i64, u32),
    /// Whether any execute bit is set.
    pub(crate) executable: bool,
}

impl FileStat {
    pub(crate) fn of(m: &fs::Metadata) -> FileStat {
        FileStat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec().clamp(0, 999_999_999) as u32),
            ctime: (m.ctime(), m.ctime_nsec().clamp(0, 999_999_999) as u32),
            executable: m.mode() & 0o111 != 0,
        }
    }

    /// From a `stat` of the walk (the same fields as [`FileStat::of`]).
    pub(crate) fn of_stat(st: &libc::stat) -> FileStat {
        FileStat {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec.clamp(0, 999_999_999) as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec.clamp(0, 999_999_999) as u32),
            executable: st.st_mode & 0o111 != 0,
        }
    }
}

/// One directory found by the walk.
pub(crate) struct WalkDir {
    /// Its path (the root as given, joined with the relative path).
    pub(crate) path: PathBuf,
    /// Its path relative to the root, `/`-separated; empty for the root.
    pub(crate) rel: String,
    /// Its entries, sorted by name in byte order.
    pub(crate) entries: Vec<WalkEntry>,
    /// Its record in the stat cache, if any.
    pub(crate) cached: Option<usize>,
    /// Whether its listing equals the cached one exactly (same names and
    /// kinds, every file a trusted hit, same symlink targets) and the
    /// cached tree object is in the store. Subdirectories are compared on
    /// their own.
    pub(crate) same_as_cache: bool,
    /// Its own stat, taken before it was listed.
    pub(crate) stat: Option<FileStat>,
    /// Whether its listing was read, not taken from the stat cache.
    pub(crate) listed: bool,
}

/// One entry of a [`WalkDir`].
pub(crate) struct WalkEntry {
    pub(crate) name: String,
    pub(crate) kind: WalkKind,
}

/// What a [`WalkEntry`] is.
pub(crate) enum WalkKind {
    File(WalkFile),
    /// The index of the subdirectory in the walk's list.
    Dir(usize),
    Symlink(String),
}

/// A regular file found by the walk.
pub(crate) struct WalkFile {
    /// Its stat: from the walk, or for a file that was read, from `fstat`
    /// of the opened file before reading it.
    pub(crate) stat: FileStat,
    /// Its digest: from the cache, or once read.
    pub(crate) digest: Option<BlobDigest>,
    /// Its size: the bytes read (or the cached size).
    pub(crate) size: u64,
    /// Whether it may go into the stat cache: not if it changed size while
    /// it was being read.
    pub(crate) cacheable: bool,
}

impl WalkFile {
    /// A file the walk found with `stat` (of `fstatat`), not read yet.
    pub(crate) fn found(st: &libc::stat) -> WalkFile {
        let stat = FileStat::of_stat(st);
        WalkFile {
            stat,
            digest: None,
            size: stat.size,
            cacheable: false,
        }
    }
}

/// Open a file found by the walk for reading: never following a symlink
/// and never blocking (should it have been replaced by a fifo since).
pub(crate) fn open_walked(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))
}

/// `fstat` an opened file, refusing anything but a regular file.
pub(crate) fn stat_opened(f: &fs::File, path: &Path) -> Result<FileStat> {
    let meta = f.metadata().map_err(io_err("inspect", path))?;
    if !meta.is_file() {
        return Err(Error::UnsupportedFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    Ok(FileStat::of(&meta))
}

/// Hash everything `r` yields through `buf`.
pub(crate) fn hash_with(r: &mut impl Read, buf: &mut [u8]) -> io::Result<(Hash, u64)> {
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok((Hash(hasher.finalize().into()), n))
}

/// A `(seconds, nanoseconds)` time as nanoseconds since the epoch.
pub(crate) fn nanos(t: (i64, u32)) -> i128 {
    i128::from(t.0) * 1_000_000_000 + i128::from(t.1)
}

/// `t` as `(seconds, nanoseconds)` since the epoch; `None` before it or out of range.
pub(crate) fn epoch_time(t: SystemTime) -> Option<(i64, u32)> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some((i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()))
}
