//! Scratch ownership: which leftovers in `v1/tmp` belong to a process that
//! is gone, so that the next command can remove them at once.
//!
//! ```text
//! <root>/v1/tmp/<pid>-<start>-<n>/   the scratch of one Store of a running (or killed) process
//! <root>/v1/tmp/.owner-XXXXXX/       such a directory being made (renamed at once)
//! <root>/v1/tmp/<anything else>      not owned: left by an older version, or by the sandbox's
//!                                    rootfs unpacking; `repro gc` removes it after an hour
//! ```
//!
//! **Ownership.** A [`Store`](crate::Store) keeps its temp files (those of the atomic
//! writers, `.w-*`, `.blob-*`, `.statcache-*`) and its scratch directories
//! ([`Store::scratch`](crate::Store::scratch), e.g. a step's `step-<name>-XXXXXX`) in a directory
//! of its own, [`Store::tmp_dir`](crate::Store::tmp_dir), made on first use (by a write as much
//! as by a lock: [`Store::open`](crate::Store::open) may write before any lock is taken). It
//! is named after the process, its id and its start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot), and a number counting
//! the stores this process opened, so that no two processes, even one
//! that got a recycled process id, and no two stores of one process share
//! a name. The process holds an exclusive `flock` on the directory itself
//! for as long as it may use it. The directory is made as `.owner-XXXXXX`,
//! locked, then renamed: a directory with an owner's name is locked from
//! the moment it has that name.
//!
//! **Who is gone.** A lock proves it, not the process id: the kernel drops a
//! `flock` when the last descriptor of it closes, however the process
//! ended (`kill -9` included), and a process that still runs (in another
//! pid namespace too) still holds it. The descriptor is close-on-exec,
//! so a step's sandbox does not inherit it. Every function that takes the
//! store lock ([`Store::lock_shared`](crate::Store::lock_shared), [`Store::lock_exclusive`](crate::Store::lock_exclusive),
//! [`Store::try_lock_exclusive`](crate::Store::try_lock_exclusive)), once it holds it, calls
//! [`Store::remove_dead_scratch`](crate::Store::remove_dead_scratch): one `readdir` of `v1/tmp`, and for each
//! other owner directory a non-blocking exclusive `flock`. Refused: its
//! owner runs, it stays. Granted: its owner is gone; its contents are
//! removed, then the directory itself (still locked by the cleaner, so two
//! cleaners never work on one directory at once). A cleaner killed half-way
//! leaves the directory unlocked, and the next one finishes the job. With
//! nothing to clean that is the `readdir` alone (plus an `open` and a
//! `flock` for each other process that has a directory there). Cleaning runs under the store lock, so never while `repro gc`
//! (which holds it exclusively) sweeps; `gc` itself removes a dead
//! owner's directory at any age and a live owner's never (see [`crate::gc`]).
//!
//! **End.** When the last clone of a [`Store`](crate::Store) is dropped, its directory is
//! removed if it is empty. If a scratch directory outlives the store, the
//! lock is kept (its descriptor left open) until the process ends, and the
//! next command after that removes what is left.
//!
//! If the directory cannot be made or locked (a file system without
//! `flock`), temp files go to `v1/tmp` itself, unowned, as before owners
//! existed.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::io_err;
use crate::error::Result;

/// One [`Store`](crate::Store)'s claim on its scratch directory in `v1/tmp`: made on
/// first use, shared by the store's clones, given up when the last one is
/// dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    /// `v1/tmp`.
    root: PathBuf,
    /// The directory and the locked descriptor of it, once made.
    owned: OnceLock<Owned>,
    /// Held while the directory is made, so that it is made once.
    making: Mutex<()>,
}

#[derive(Debug)]
struct Owned {
    dir: PathBuf,
    lock: fs::File,
}

/// How many owner directories this process has made: the `<n>` of their names.
static MADE: AtomicU64 = AtomicU64::new(0);

impl Lease {
    pub(crate) fn new(root: PathBuf) -> Lease {
        Lease {
            root,
            owned: OnceLock::new(),
            making: Mutex::new(()),
        }
    }

    /// The directory to put scratch in: this lease's, made now if need be;
    /// `v1/tmp` itself if it cannot be made.
    pub(crate) fn dir(&self) -> PathBuf {
        if let Some(o) = self.owned.get() {
            return o.dir.clone();
        }
        let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = self.owned.get() {
            return o.dir.clone();
        }
        match make(&self.root) {
            Ok(o) => {
                let dir = o.dir.clone();
                let _ = self.owned.set(o);
                dir
            }
            Err(_) => self.root.clone(),
        }
    }

    /// The name of this lease's directory, if made.
    pub(crate) fn name(&self) -> Option<&OsStr> {
        self.owned.get().and_then(|o| o.dir.file_name())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(o) = self.owned.take() else {
            return;
        };
        match fs::remove_dir(&o.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not empty: scratch outlives the store. Keep the claim until
            // the process ends.
            Err(_) => std::mem::forget(o.lock),
        }
    }
}

/// Make, lock and name an owner directory in `root`.
fn make(root: &Path) -> io::Result<Owned> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let start = start_time(&stat).ok_or_else(|| io::Error::other("no start time"))?;
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{start}-{n}", std::process::id());
    let staging = tempfile::Builder::new()
        .prefix(".owner-")
        .tempdir_in(root)?;
    // Close-on-exec (as std opens every file): no child inherits the claim.
    let lock = fs::File::open(staging.path())?;
    fs4::fs_std::FileExt::try_lock_exclusive(&lock)?;
    let dir = root.join(name);
    // The name is this process's alone. (Were it taken all the same, an
    // empty directory would be replaced and anything else make this fail.)
    fs::rename(staging.path(), &dir)?;
    let _ = staging.keep();
    Ok(Owned { dir, lock })
}

/// Whether `name` is an owner directory's: `<pid>-<start>-<n>`, digits.
pub(crate) fn is_owner_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let mut parts = 0;
    for part in name.split('-') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        parts += 1;
    }
    parts == 3
}

/// Whether the owner of the directory at `path` is gone: `Some` with the
/// lock on it, now the caller's, if so.
pub(crate) fn claim_if_dead(path: &Path) -> Result<Option<fs::File>> {
    let dir = match fs::File::open(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    match fs4::fs_std::FileExt::try_lock_exclusive(&dir) {
        Ok(()) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(io_err("lock", path)(e)),
    }
}

/// Remove the owner directory at `path` if its owner is gone: its
/// contents, then itself. `true` if it was removed.
pub(crate) fn remove_if_dead(path: &Path) -> Result<bool> {
    let Some(lock) = claim_if_dead(path)? else {
        return Ok(false);
    };
    // remove_tree removes the directory last: cut short, it stays for the
    // next cleaner, unlocked.
    crate::fsutil::remove_tree(path)?;
    drop(lock);
    Ok(true)
}

/// Remove the owner directories in `root` (`v1/tmp`) whose owner is gone,
/// except `own`; returns how many. Goes on past a directory it cannot
/// remove, and returns the first such error at the end.
pub(crate) fn remove_dead(root: &Path, own: Option<&OsStr>) -> Result<usize> {
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("list", root)(e)),
    };
    let mut removed = 0;
    let mut first_error = None;
    for entry in rd {
        let entry = entry.map_err(io_err("list", root))?;
        let name = entry.file_name();
        if Some(name.as_os_str()) == own || !is_owner_name(&name) {
            continue;
        }
        match remove_if_dead(&entry.path()) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Field 22 of a `/proc/<pid>/stat` line: the process's start time, in
/// clock ticks since boot. The second field (the command name, in
/// parentheses) may hold spaces and parentheses: fields are counted from
/// the last `)`.
pub(crate) fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after it.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests;
