//! The engine behind [`Store::snapshot_dir`], [`hash_dir`] and [`hash_file`]:
//! a parallel walk, parallel hashing (or ingesting) of the files, then the
//! tree objects bottom-up.
//!
//! # Phases
//!
//! 1. **Walk** (as many threads as cores): every directory is opened
//!    (relative to the open root) and listed, its entries sorted by name;
//!    each regular file gets one `fstatat` by its bare name relative to the
//!    open directory, each symlink a `readlink`. Names and targets that are
//!    not UTF-8 and files of other kinds (sockets, fifos, devices) stop the
//!    walk with an error naming the path, before anything is read or
//!    stored. With a stat cache ([`crate::statcache`]), a directory whose
//!    own stat is as recorded takes its listing from the cache (its files
//!    are still stat-ed), and each directory is compared with its cached
//!    listing.
//! 2. **Files**: every file the cache does not vouch for is read once,
//!    largest first so that a big file does not start last, by a fixed pool
//!    of threads each with one 256 KiB buffer: only hashing, on as many
//!    threads as cores; or copying or moving into the store, on 16 threads
//!    (or one per core if there are more), because there each thread waits
//!    for the `fsync` of every file it ingests (see below).
//! 3. **Trees**, children before parents. A directory the cache shows
//!    unchanged keeps its cached tree digest; the others get their tree
//!    object built, and written if the store does not have it yet.
//!
//! # Durability
//!
//! A blob is renamed into `blobs/sha256` only after its own bytes are
//! synced (`fsync` of its temp file); one `fsync` of `blobs/sha256` after
//! all the files makes the renames durable before any tree object names
//! them, and the tree objects go in one height at a time, each height made
//! durable before the next, so no tree object is ever in the store before
//! what it names. A file whose blob is already there (and verifies) is not
//! synced at all.
//!
//! Per-file `fsync`s, many in flight, rather than writing every temp file
//! first and then one `syncfs`: measured side by side on a shared 2-core
//! VM, copying 10,000 files (2 GiB) in with an `fsync` per file
//! took 25-30 s with 2 threads, 10-13 s with 8 and 7-8 s with 16, against
//! 6-11 s for one `syncfs` (the disk's own rate: 8.6 s for `dd` of 2 GiB
//! with `fsync`): the filesystem batches concurrent `fsync`s into few
//! journal commits. `syncfs` would also wait for whatever any other process
//! has written to the same filesystem (a training job's checkpoints, a
//! build), which can take unboundedly long, and would keep every temp file
//! of a batch around until the sync.
//!
//! # Memory
//!
//! Files are streamed through the per-thread buffers, never held whole:
//! 4 MiB of buffers when ingesting (16 threads), 256 KiB per core when
//! only hashing. The rest grows with the number of files, not their size:
//! the listing of the whole tree (about 170 bytes per file: name, stat
//! fields, digest), the results of phase 2 until they are merged into it
//! (about 110 bytes per file read), and for a store snapshot the tree
//! objects it writes (about 100 bytes per entry) and the stat cache (about
//! 100 bytes per file, read and written). Measured: about 3 MiB + 0.3 KiB
//! per file for [`hash_dir`], 5 MiB + 0.6 KiB per file for
//! [`Store::snapshot_dir`], under 3 MiB for one 20 GiB file.

use std::ffi::{CStr, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use nix::dir::Type as DirType;
use nix::fcntl::{readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};

use crate::error::io_err;
use crate::fsutil::{kind_of, sync_dir};
use crate::statcache::{self, Cache, CachedKind};
use crate::walk::{
    hash_with, open_walked, stat_opened, FileStat, WalkDir, WalkEntry, WalkFile, WalkKind,
};
use crate::{
    BlobDigest, EntryKind, Error, Hash, Ingest, Result, Store, Tree, TreeDigest, TreeEntry,
};

/// The size of each worker's read buffer. Hashing speed is flat from 64 KiB
/// to 256 KiB on the machine measured; 256 KiB keeps the syscalls few.
pub(crate) const BUF: usize = 256 * 1024;

/// Threads that copy or move files into the store (at least): each waits
/// for the `fsync` of every file it ingests, and enough `fsync`s in flight
/// let the filesystem batch them (see the module docs).
pub(crate) const INGEST_WORKERS: usize = 16;

/// How many threads read files when only hashing: one per core. Asked
/// once per process (it reads the cgroup's CPU quota each time).
pub(crate) fn cpu_workers() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many threads ingest files: [`INGEST_WORKERS`], or one per core on
/// machines with more cores.
pub(crate) fn ingest_workers() -> usize {
    cpu_workers().max(INGEST_WORKERS)
}

/// What one snapshot did; for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SnapshotStats {
    /// Files read (hashed, copied or moved).
    pub(crate) hashed: usize,
    /// Files whose digest came from the stat cache, unread.
    pub(crate) reused: usize,
    /// Tree objects written (not already in the store).
    pub(crate) trees_written: usize,
    /// Whether a stat cache file was (re)written.
    pub(crate) cache_written: bool,
    /// Directories whose listing was read (`getdents64`), not taken from
    /// the stat cache.
    pub(crate) dirs_listed: usize,
}

/// Run `work` on `workers` threads at once (this one among them) and
/// wait for all of them.
fn on_workers(workers: usize, work: impl Fn() + Sync) {
    if workers <= 1 {
        return work();
    }
    std::thread::scope(|sc| {
        for _ in 1..workers {
            sc.spawn(&work);
        }
        work();
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// Walk the tree under `root` (a directory) with `workers` threads.
/// Directory `0` is the root; every subdirectory comes after its parent.
pub(crate) fn walk(
    root: &Path,
    workers: usize,
    cache: Option<&Cache>,
    store: Option<&Store>,
) -> Result<Vec<WalkDir>> {
    struct State {
        dirs: Vec<WalkDir>,
        queue: Vec<usize>,
        busy: usize,
        err: Option<Error>,
    }
    let new_dir = |path: PathBuf, rel: String| WalkDir {
        path,
        rel,
        entries: Vec::new(),
        cached: None,
        same_as_cache: false,
        stat: None,
        listed: false,
    };
    let state = Mutex::new(State {
        dirs: vec![new_dir(root.to_path_buf(), String::new())],
        queue: vec![0],
        busy: 0,
        err: None,
    });
    let wake = Condvar::new();
    // Every directory is opened relative to the root: its path is resolved
    // once, not once per directory.
    let root_dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(io_err("list", root))?;
    let root_fd = root_dir.as_raw_fd();
    let work = || loop {
        let (idx, path, rel) = {
            let mut s = lock(&state);
            loop {
                if s.err.is_some() {
                    return;
                }
                if let Some(i) = s.queue.pop() {
                    s.busy += 1;
                    let d = &s.dirs[i];
                    break (i, d.path.clone(), d.rel.clone());
                }
                if s.busy == 0 {
                    wake.notify_all();
                    return;
                }
                s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        let res = list_dir(root_fd, &path, &rel, cache, store);
        let mut s = lock(&state);
        s.busy -= 1;
        match res {
            Ok(mut listing) => {
                for e in &mut listing.entries {
                    if let WalkKind::Dir(child) = &mut e.kind {
                        let i = s.dirs.len();
                        s.dirs
                            .push(new_dir(path.join(&e.name), join_rel(&rel, &e.name)));
                        s.queue.push(i);
                        *child = i;
                    }
                }
                let d = &mut s.dirs[idx];
                d.entries = listing.entries;
                d.cached = listing.cached;
                d.same_as_cache = listing.same_as_cache;
                d.stat = Some(listing.stat);
                d.listed = listing.listed;
            }
            Err(e) => {
                if s.err.is_none() {
                    s.err = Some(e);
                }
            }
        }
        drop(s);
        wake.notify_all();
    };
    on_workers(workers, work);
    let s = state.into_inner().unwrap_or_else(|e| e.into_inner());
    match s.err {
        Some(e) => Err(e),
        None => Ok(s.dirs),
    }
}

struct Listing {
    entries: Vec<WalkEntry>,
    cached: Option<usize>,
    same_as_cache: bool,
    stat: FileStat,
    listed: bool,
}

/// List one directory (see [`walk`]) and compare it with its cached listing.
///
/// `root_fd` is the walk's root, open; `path` the directory's full path
/// (for messages) and `rel` its path relative to the root. The directory is
/// `fstat`-ed first; if the stat cache vouches for its listing (see
/// [`listing_from_cache`]) the names come from the cache, otherwise they
/// are read straight from the directory (one `getdents64` for a directory
/// of a few hundred files, the names borrowed from it). Each regular file
/// is then `fstatat`-ed by its bare name relative to the open directory:
/// nothing is allocated per entry but its name.
fn list_dir(
    root_fd: RawFd,
    path: &Path,
    rel: &str,
    cache: Option<&Cache>,
    store: Option<&Store>,
) -> Result<Listing> {
    let list_err = |e: nix::Error| io_err("list", path)(io::Error::from(e));
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let rel_path = if rel.is_empty() { "." } else { rel };
    let mut dir =
        nix::dir::Dir::openat(Some(root_fd), rel_path, flags, Mode::empty()).map_err(list_err)?;
    let fd = dir.as_raw_fd();
    // Before the listing: a change made while it is read shows in the
    // next snapshot's stat.
    let stat = FileStat::of_stat(&fstat(fd).map_err(list_err)?);
    let from_cache = match cache {
        Some(cache) => listing_from_cache(cache, rel, fd, &stat),
        None => None,
    };
    let listed = from_cache.is_none();
    let mut entries = match from_cache {
        Some(entries) => entries,
        None => read_listing(&mut dir, path)?,
    };
    drop(dir);
    entries.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    entries.shrink_to_fit();
    let (cached, same_as_cache) = match (cache, store) {
        (Some(cache), Some(store)) => compare_with_cache(cache, store, rel, &mut entries),
        _ => (None, false),
    };
    Ok(Listing {
        entries,
        cached,
        same_as_cache,
        stat,
        listed,
    })
}

/// The listing of the open directory `fd` (`rel`) as the stat cache
/// recorded it, if the cache vouches for it: the directory's device,
/// inode, size, mtime and ctime are as recorded, not racy (see
/// [`crate::statcache`]), and every cached file is still a regular file
/// (each is `fstatat`-ed here, as the walk would). `None` if not: then the
/// directory is listed.
fn listing_from_cache(
    cache: &Cache,
    rel: &str,
    fd: RawFd,
    stat: &FileStat,
) -> Option<Vec<WalkEntry>> {
    let ci = cache.dir(rel)?;
    let recorded = cache.dir_stat(ci)?;
    if recorded != *stat || !cache.trusted(&recorded) {
        return None;
    }
    let mut entries = Vec::with_capacity(cache.len_of(ci));
    for c in cache.entries_of(ci) {
        let name = std::str::from_utf8(c.name).ok()?;
        let kind = match c.kind {
            CachedKind::Dir => WalkKind::Dir(usize::MAX),
            CachedKind::Symlink { target } => {
                WalkKind::Symlink(std::str::from_utf8(target).ok()?.to_owned())
            }
            CachedKind::File { .. } => {
                // Gone, or no longer a regular file: the directory changed
                // after all (its stat cannot tell on this filesystem).
                let st = fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return None;
                }
                WalkKind::File(WalkFile::found(&st))
            }
        };
        entries.push(WalkEntry {
            name: name.to_owned(),
            kind,
        });
    }
    Some(entries)
}

/// Read the listing of the open directory `dir` (`path`), `fstatat`-ing
/// every regular file.
fn read_listing(dir: &mut nix::dir::Dir, path: &Path) -> Result<Vec<WalkEntry>> {
    let list_err = |e: nix::Error| io_err("list", path)(io::Error::from(e));
    let fd = dir.as_raw_fd();
    let mut entries = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(list_err)?;
        let cname = entry.file_name();
        let bytes = cname.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let full = || path.join(OsStr::from_bytes(bytes));
        let name = cname.to_str().map_err(|_| Error::NotUtf8 {
            path: full(),
            what: "name",
        })?;
        // The type comes from the listing itself (no system call) on
        // filesystems that report it.
        let kind = match entry.file_type() {
            Some(DirType::Directory) => WalkKind::Dir(usize::MAX),
            Some(DirType::Symlink) => read_symlink(fd, cname, &full())?,
            _ => {
                // One stat relative to the open directory, not following
                // symlinks; it decides the type where the listing did not.
                let st = fstatat(Some(fd), cname, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err("inspect", full())(io::Error::from(e)))?;
                match st.st_mode & libc::S_IFMT {
                    libc::S_IFREG => WalkKind::File(WalkFile::found(&st)),
                    libc::S_IFDIR => WalkKind::Dir(usize::MAX),
                    libc::S_IFLNK => read_symlink(fd, cname, &full())?,
                    _ => {
                        let p = full();
                        let meta = fs::symlink_metadata(&p).map_err(io_err("inspect", &p))?;
                        return Err(Error::UnsupportedFile {
                            path: p,
                            kind: kind_of(&meta),
                        });
                    }
                }
            }
        };
        entries.push(WalkEntry {
            name: name.to_owned(),
            kind,
        });
    }
    Ok(entries)
}

/// The target of the symlink `name` in the open directory `fd` (`path`).
fn read_symlink(fd: RawFd, name: &CStr, path: &Path) -> Result<WalkKind> {
    let target =
        readlinkat(Some(fd), name).map_err(|e| io_err("read symlink", path)(io::Error::from(e)))?;
    let target = target.into_string().map_err(|_| Error::NotUtf8 {
        path: path.to_path_buf(),
        what: "symlink target",
    })?;
    Ok(WalkKind::Symlink(target))
}

/// Take the digests of trusted cache hits into `entries` (sorted); returns
/// the cached record and whether the listing is the same as the cached one.
///
/// Blobs: where the listing is the same and the cached tree object is in
/// the store, the file blobs are taken to be there too (a tree object is
/// only ever written after every blob it names, and the garbage collector
/// removes a blob only with every tree naming it, invalidating every stat
/// cache before it does). Anywhere else, each hit's blob is checked, and a
/// file whose blob is gone is read again.
fn compare_with_cache(
    cache: &Cache,
    store: &Store,
    rel: &str,
    entries: &mut [WalkEntry],
) -> (Option<usize>, bool) {
    let Some(ci) = cache.dir(rel) else {
        return (None, false);
    };
    let cdir = cache.dir_at(ci);
    let mut same = cache.len_of(ci) == entries.len();
    let mut cached = cache.entries_of(ci).peekable();
    for e in entries.iter_mut() {
        let name = e.name.as_bytes();
        while cached.next_if(|c| c.name < name).is_some() {}
        let hit = cached.next_if(|c| c.name == name);
        let matched = match (&mut e.kind, hit.map(|c| c.kind)) {
            (WalkKind::File(f), Some(CachedKind::File { stat, digest }))
                if f.stat == stat && cache.trusted(&stat) =>
            {
                f.digest = Some(digest);
                f.cacheable = true;
                true
            }
            (WalkKind::Dir(_), Some(CachedKind::Dir)) => true,
            (WalkKind::Symlink(t), Some(CachedKind::Symlink { target })) => t.as_bytes() == target,
            _ => false,
        };
        same &= matched;
    }
    if same && !store.has_blob(&BlobDigest::from_hash(cdir.tree.hash())) {
        same = false;
    }
    if !same {
        for e in entries.iter_mut() {
            if let WalkKind::File(f) = &mut e.kind {
                if f.digest.is_some_and(|d| !store.has_blob(&d)) {
                    f.digest = None;
                    f.cacheable = false;
                }
            }
        }
    }
    (Some(ci), same)
}

/// Run `f` on every job with `workers` threads, each with its own buffer
/// (allocated on first use); results in job order. On the first error the
/// remaining jobs are skipped; of the errors that happened, the one of the
/// lowest job index is returned.
pub(crate) fn parallel_map<J: Sync, T: Send + Sync>(
    jobs: &[J],
    workers: usize,
    f: impl Fn(&mut Vec<u8>, &J) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let workers = workers.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    // One slot per job, filled in place: no second copy of the results.
    let slots: Vec<OnceLock<T>> = std::iter::repeat_with(OnceLock::new)
        .take(jobs.len())
        .collect();
    let run = || {
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= jobs.len() {
                break;
            }
            match f(&mut buf, &jobs[i]) {
                Ok(t) => {
                    let _ = slots[i].set(t);
                }
                Err(e) => {
                    let mut g = lock(&failed);
                    if g.as_ref().is_none_or(|(j, _)| i < *j) {
                        *g = Some((i, e));
                    }
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    };
    on_workers(workers, run);
    if let Some((_, e)) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(slots.into_iter().filter_map(OnceLock::into_inner).collect())
}

/// The worker's buffer, allocated on first use.
pub(crate) fn buffer(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.len() != BUF {
        buf.resize(BUF, 0);
    }
    buf
}

/// Hash a file like the store would: its [`BlobDigest`] and size, without
/// writing anything.
///
/// Symlinks are followed (`path` is what the user named, as in
/// [`Store::put_file_copy`]); anything but a regular file is
/// [`Error::UnsupportedFile`]. One thread, one 256 KiB buffer: SHA-256 of
/// one stream cannot be split across cores.
pub fn hash_file(path: &Path) -> Result<(BlobDigest, u64)> {
    // Check before opening: opening a fifo would block, a device may act.
    let meta = fs::metadata(path).map_err(io_err("inspect", path))?;
    if !meta.is_file() {
        return Err(Error::UnsupportedFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    stat_opened(&f, path)?;
    let mut buf = vec![0u8; BUF];
    let (hash, n) = hash_with(&mut f, &mut buf).map_err(io_err("read", path))?;
    Ok((BlobDigest::from_hash(hash), n))
}

/// The tree digest [`Store::snapshot_dir`] would give directory `dir`,
/// without writing anything: the same canonical tree objects, the same
/// rules for symlinks (stored, never followed), the executable bit, and
/// the same errors for names and symlink targets that are not UTF-8 and
/// for sockets, fifos and devices.
///
/// The tree is walked, and its files hashed, on as many threads as the
/// machine has cores ([`std::thread::available_parallelism`]), each with
/// one 256 KiB buffer; files are never held in memory whole. No stat cache
/// is used: every file is read.
pub fn hash_dir(dir: &Path) -> Result<TreeDigest> {
    check_root(dir)?;
    let workers = cpu_workers();
    let mut dirs = walk(dir, workers, None, None)?;
    let jobs = file_jobs(&dirs);
    let results = parallel_map(&jobs, workers, |buf, job| {
        let path = dirs[job.dir]
            .path
            .join(&dirs[job.dir].entries[job.entry].name);
        let mut f = open_walked(&path)?;
        let stat = stat_opened(&f, &path)?;
        let (hash, n) = hash_with(&mut f, buffer(buf)).map_err(io_err("read", &path))?;
        Ok((BlobDigest::from_hash(hash), n, stat))
    })?;
    fill_results(&mut dirs, &jobs, results);
    Ok(build_trees(&dirs, None, None).digests[0].0)
}

/// The root of a snapshot must be a directory itself, not a symlink to one.
pub(crate) fn check_root(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    if !meta.is_dir() {
        return Err(Error::UnsupportedFile {
            path: dir.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    Ok(())
}

/// A file to read: where it is in the walk.
pub(crate) struct FileJob {
    dir: usize,
    entry: usize,
}

/// Every file without a digest yet, largest first.
fn file_jobs(dirs: &[WalkDir]) -> Vec<FileJob> {
    let mut jobs: Vec<(u64, FileJob)> = Vec::new();
    for (d, dir) in dirs.iter().enumerate() {
        for (e, entry) in dir.entries.iter().enumerate() {
            if let WalkKind::File(f) = &entry.kind {
                if f.digest.is_none() {
                    jobs.push((f.stat.size, FileJob { dir: d, entry: e }));
                }
            }
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
    jobs.into_iter().map(|(_, j)| j).collect()
}

/// Put what reading the files gave into the walk.
fn fill_results(dirs: &mut [WalkDir], jobs: &[FileJob], results: Vec<(BlobDigest, u64, FileStat)>) {
    for (job, (digest, n, stat)) in jobs.iter().zip(results) {
        if let WalkKind::File(f) = &mut dirs[job.dir].entries[job.entry].kind {
            f.digest = Some(digest);
            f.size = n;
            // A file that grew or shrank while it was read is not cached:
            // its stat may not describe the bytes that were hashed.
            f.cacheable = n == stat.size;
            f.stat = stat;
        }
    }
}

/// The tree of every directory: its digest and whether the stat cache
/// vouched for it; and, given a store, the tree objects that were built
/// (not vouched for) and that it does not have yet, each with its height
/// (0 for a directory without subdirectories), so that they can be stored
/// children first.
fn build_trees(dirs: &[WalkDir], cache: Option<&Cache>, store: Option<&Store>) -> Trees {
    let mut digests = vec![(TreeDigest::from_hash(Hash([0; 32])), false); dirs.len()];
    let mut heights = vec![0usize; dirs.len()];
    let mut built = Vec::new();
    // Every subdirectory comes after its parent in the walk's list.
    for i in (0..dirs.len()).rev() {
        let dir = &dirs[i];
        heights[i] = dir
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                WalkKind::Dir(c) => Some(heights[c] + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let reuse = match (cache, dir.cached) {
            (Some(cache), Some(ci)) if dir.same_as_cache => {
                let subdirs_same = dir.entries.iter().all(|e| match e.kind {
                    WalkKind::Dir(c) => dirs[c]
                        .cached
                        .is_some_and(|cc| cache.dir_at(cc).tree == digests[c].0),
                    _ => true,
                });
                subdirs_same.then(|| cache.dir_at(ci).tree)
            }
            _ => None,
        };
        if let Some(tree) = reuse {
            digests[i] = (tree, true);
            continue;
        }
        let entries = dir
            .entries
            .iter()
            .map(|e| TreeEntry {
                name: e.name.clone(),
                kind: match &e.kind {
                    WalkKind::File(f) => EntryKind::File {
                        digest: f.digest.expect("every file was hashed"),
                        size: f.size,
                        executable: f.stat.executable,
                    },
                    WalkKind::Dir(c) => EntryKind::Dir {
                        tree: digests[*c].0,
                    },
                    WalkKind::Symlink(t) => EntryKind::Symlink { target: t.clone() },
                },
            })
            .collect();
        let tree = Tree { entries };
        let digest = tree.digest();
        digests[i] = (digest, false);
        if store.is_some_and(|s| !s.has_blob(&BlobDigest::from_hash(digest.hash()))) {
            built.push((heights[i], tree));
        }
    }
    Trees { digests, built }
}

/// What [`build_trees`] gives.
struct Trees {
    /// Each directory's tree digest, and whether the stat cache vouched
    /// for it (then its tree object was not built).
    digests: Vec<(TreeDigest, bool)>,
    /// The tree objects built and missing from the store, each with its
    /// height.
    built: Vec<(usize, Tree)>,
}

impl Store {
    /// Snapshot the directory `dir` into the store; returns its tree digest.
    ///
    /// Symlinks are stored as symlinks (their target text), never followed.
    /// A name or symlink target that is not UTF-8, a socket, fifo or device
    /// is an error naming the path (found by the walk, before any file is
    /// read). A file is executable if any `x` bit is set; no other metadata
    /// is kept.
    ///
    /// The tree is walked, and its files read, in parallel (see
    /// [`crate::snapshot`] for the phases and the memory used). Each new
    /// blob is renamed into `blobs/sha256` only once its bytes are synced,
    /// and each tree object only once everything it names is durable.
    ///
    /// With [`Ingest::Copy`], files that the directory's stat cache shows
    /// unchanged are not read again (see [`crate::statcache`] for the
    /// rule), so snapshotting an unchanged directory again costs little
    /// more than a `stat` per file.
    pub fn snapshot_dir(&self, dir: &Path, how: Ingest) -> Result<TreeDigest> {
        self.snapshot_with_stats(dir, how, SystemTime::now())
            .map(|(d, _)| d)
    }

    /// [`Store::snapshot_dir`], also telling what it did. `now` is the
    /// time the stat cache records (the current time but in tests).
    pub(crate) fn snapshot_with_stats(
        &self,
        dir: &Path,
        how: Ingest,
        now: SystemTime,
    ) -> Result<(TreeDigest, SnapshotStats)> {
        check_root(dir)?;
        let mut stats = SnapshotStats::default();
        // The stat cache is for user data only: step outputs are moved away.
        let mut session = match how {
            Ingest::Copy => statcache::Session::start(self, dir, now),
            Ingest::Move => None,
        };
        let cache = session.as_mut().and_then(|s| s.cache.take());
        let mut dirs = walk(dir, cpu_workers(), cache.as_ref(), Some(self))?;
        let jobs = file_jobs(&dirs);
        stats.hashed = jobs.len();
        stats.dirs_listed = dirs.iter().filter(|d| d.listed).count();
        stats.reused = dirs
            .iter()
            .flat_map(|d| &d.entries)
            .filter(|e| matches!(&e.kind, WalkKind::File(f) if f.digest.is_some()))
            .count();
        let results = parallel_map(&jobs, ingest_workers(), |buf, job| {
            let path = dirs[job.dir]
                .path
                .join(&dirs[job.dir].entries[job.entry].name);
            match how {
                Ingest::Copy => self.ingest_copy(&path, buffer(buf)),
                Ingest::Move => self.ingest_move(&path, buffer(buf)),
            }
        })?;
        if !jobs.is_empty() {
            // The blobs' renames must be durable before a tree names them.
            sync_dir(&self.layout_dir().join("blobs/sha256"))?;
        }
        fill_results(&mut dirs, &jobs, results);
        let Trees { digests, built } = build_trees(&dirs, cache.as_ref(), Some(self));
        let outdated = cache
            .as_ref()
            .is_some_and(|c| c.version < statcache::VERSION);
        // Not needed any more: free it before the new one is encoded.
        drop(cache);
        stats.trees_written = self.put_trees(&built)?;
        let root = digests[0].0;
        if let Some(session) = session {
            if outdated || digests.iter().any(|(_, reused)| !reused) {
                stats.cache_written = session.save(self, &dirs, &digests);
            }
        }
        Ok((root, stats))
    }

    /// Store the tree objects of `trees` (missing from the store); returns
    /// how many were written. Each is checked as [`Store::put_tree`]
    /// does (valid, and everything it names present), and they go in one
    /// height at a time, children first, each height made durable (one
    /// `fsync` of `blobs/sha256`) before the next: a tree object is never
    /// in the store before what it names.
    fn put_trees(&self, trees: &[(usize, Tree)]) -> Result<usize> {
        // Identical directories (empty ones, say) give one tree object.
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<(usize, &Tree)> = trees
            .iter()
            .filter(|(_, t)| seen.insert(t.digest()))
            .map(|(h, t)| (*h, t))
            .collect();
        todo.sort_by_key(|(h, _)| *h);
        for level in todo.chunk_by(|a, b| a.0 == b.0) {
            parallel_map(level, ingest_workers(), |_, (_, t)| {
                let (d, bytes) = self.check_tree(t)?;
                self.write_blob_nosync(&bytes, &BlobDigest::from_hash(d.hash()))
            })?;
            sync_dir(&self.layout_dir().join("blobs/sha256"))?;
        }
        Ok(todo.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::FileEntry;

    pub(crate) fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("store")).unwrap();
        (t, s)
    }

    pub(crate) fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Nested directories, an empty directory, empty files, executables,
    /// symlinks (absolute, relative, to a directory, dangling) and enough
    /// files of different sizes (up to a few buffers) that several threads
    /// take part.
    pub(crate) fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("sub/deeper/deepest")).unwrap();
        fs::create_dir_all(dir.join("empty")).unwrap();
        fs::create_dir_all(dir.join("many")).unwrap();
        write_mode(&dir.join("data.csv"), b"a,b\n1,2\n", 0o644);
        write_mode(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
        write_mode(&dir.join("sub/empty.txt"), b"", 0o600);
        write_mode(&dir.join("sub/deeper/empty-exec"), b"", 0o700);
        write_mode(
            &dir.join("sub/deeper/deepest/x.bin"),
            &[0, 1, 2, 255],
            0o644,
        );
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../data.csv", dir.join("sub/link")).unwrap();
        std::os::unix::fs::symlink("deeper", dir.join("sub/dirlink")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
        for i in 0..60u32 {
            let len = (i as usize * 7919) % (3 * BUF + 17);
            let bytes: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            let mode = if i % 5 == 0 { 0o750 } else { 0o640 };
            write_mode(&dir.join(format!("many/f{i:02}")), &bytes, mode);
        }
        // The same content twice (one blob).
        write_mode(&dir.join("many/dup-a"), b"same", 0o644);
        write_mode(&dir.join("many/dup-b"), b"same", 0o644);
    }

    /// The tree digest of `dir` computed the plain way: one file at a
    /// time, whole files in memory, recursion; an independent check of
    /// the parallel code's results.
    pub(crate) fn reference_digest(dir: &Path) -> TreeDigest {
        let mut entries = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let kind = if meta.is_dir() {
                EntryKind::Dir {
                    tree: reference_digest(&e.path()),
                }
            } else if meta.file_type().is_symlink() {
                EntryKind::Symlink {
                    target: fs::read_link(e.path())
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                }
            } else {
                let bytes = fs::read(e.path()).unwrap();
                EntryKind::File {
                    digest: BlobDigest::from_hash(Hash::of(&bytes)),
                    size: bytes.len() as u64,
                    executable: meta.mode() & 0o111 != 0,
                }
            };
            entries.push(TreeEntry {
                name: e.file_name().into_string().unwrap(),
                kind,
            });
        }
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Tree { entries }.digest()
    }

    #[test]
    fn hash_dir_gives_the_digest_snapshot_dir_gives() {
        let (t, s) = store();
        let src = t.path().join("src");
        sample(&src);
        let hashed = hash_dir(&src).unwrap();
        assert_eq!(hashed, reference_digest(&src));
        assert_eq!(
            fs::read_dir(s.layout_dir().join("blobs/sha256"))
                .unwrap()
                .count(),
            0,
            "hash_dir stores nothing"
        );
        assert_eq!(s.snapshot_dir(&src, Ingest::Copy).unwrap(), hashed);
        // And moving a copy of it in gives the same again.
        let scratch = s.scratch("out-").unwrap();
        let out = scratch.path().join("out");
        sample(&out);
        assert_eq!(s.snapshot_dir(&out, Ingest::Move).unwrap(), hashed);
        assert!(!out.join("many/f01").exists(), "moved, not copied");
        assert!(s.tree_is_complete(&hashed).unwrap());

        let flat = s.flatten(&hashed).unwrap();
        assert!(matches!(
            flat["sub/deeper/empty-exec"],
            FileEntry::File {
                size: 0,
                executable: true,
                ..
            }
        ));
        assert_eq!(
            flat["sub/dirlink"],
            FileEntry::Symlink {
                target: "deeper".into()
            }
        );
        // The empty directory is in the tree.
        let root = s.get_tree(&hashed).unwrap();
        let empty = root.entries.iter().find(|e| e.name == "empty").unwrap();
        assert_eq!(
            empty.kind,
            EntryKind::Dir {
                tree: Tree::default().digest()
            }
        );
        // Every file's size and digest landed on the right name.
        let mut by_name = BTreeMap::new();
        for (path, e) in &flat {
            if let FileEntry::File { digest, size, .. } = e {
                by_name.insert(path.clone(), (*digest, *size));
            }
        }
        for (path, (digest, size)) in by_name {
            let bytes = fs::read(src.join(&path)).unwrap();
            assert_eq!(digest, BlobDigest::from_hash(Hash::of(&bytes)), "{path}");
            assert_eq!(size, bytes.len() as u64, "{path}");
            assert_eq!(hash_file(&src.join(&path)).unwrap(), (digest, size));
        }
    }

    #[test]
    fn hash_dir_refuses_what_snapshot_dir_refuses() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/ok"), b"x").unwrap();
        let sock = src.join("a/b/control.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = hash_dir(&src).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFile { kind: "socket", .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("`{}`", sock.display())));

        let src = t.path().join("src2");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d").join(OsStr::from_bytes(b"caf\xe9")), b"x").unwrap();
        let err = hash_dir(&src).unwrap_err();
        assert!(matches!(err, Error::NotUtf8 { what: "name", .. }), "{err}");
        assert!(err.to_string().contains("caf"), "{err}");

        let src = t.path().join("src3");
        fs::create_dir(&src).unwrap();
        std::os::unix::fs::symlink(OsStr::from_bytes(b"\xff"), src.join("l")).unwrap();
        let err = hash_dir(&src).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotUtf8 {
                    what: "symlink target",
                    ..
                }
            ),
            "{err}"
        );

        // The root must be a directory, not a symlink to one.
        std::os::unix::fs::symlink(&src, t.path().join("rootlink")).unwrap();
        let err = hash_dir(&t.path().join("rootlink")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let err = hash_dir(&t.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn hash_file_follows_symlinks_and_refuses_other_kinds() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        let bytes: Vec<u8> = (0..(BUF * 2 + 5)).map(|i| (i % 253) as u8).collect();
        fs::write(&f, &bytes).unwrap();
        let want = (BlobDigest::from_hash(Hash::of(&bytes)), bytes.len() as u64);
        assert_eq!(hash_file(&f).unwrap(), want);
        std::os::unix::fs::symlink(&f, t.path().join("l")).unwrap();
        assert_eq!(hash_file(&t.path().join("l")).unwrap(), want);
        let err = hash_file(t.path()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedFile {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        let fifo = t.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = hash_file(&fifo).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFile { kind: "fifo", .. }),
            "{err}"
        );
    }

    #[test]
    fn parallel_map_keeps_order_and_reports_the_first_failing_job() {
        let jobs: Vec<u32> = (0..500).collect();
        let out = parallel_map(&jobs, 7, |buf, j| {
            assert_eq!(buffer(buf).len(), BUF);
            Ok(j * 2)
        })
        .unwrap();
        assert_eq!(out, jobs.iter().map(|j| j * 2).collect::<Vec<_>>());
        for workers in [1, 4] {
            let err = parallel_map(&jobs, workers, |_, &j| {
                if j == 3 || j == 400 {
                    // The later failure is quicker; the earlier one must win.
                    if j == 3 {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(Error::Mismatch {
                        expected: j.to_string(),
                        actual: String::new(),
                    })
                } else {
                    Ok(j)
                }
            })
            .unwrap_err();
            assert!(
                matches!(&err, Error::Mismatch { expected, .. } if expected == "3"),
                "{err}"
            );
        }
        assert!(parallel_map(&[] as &[u32], 4, |_, &j| Ok(j))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn parallel_ingest_of_many_files_with_duplicates() {
        let (t, s) = store();
        // Copy: many small files, a third of them with the same content.
        let src = t.path().join("src");
        for d in 0..8 {
            fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for i in 0..40 {
                let content = if i % 3 == 0 {
                    "shared".to_string()
                } else {
                    format!("file {d}/{i}")
                };
                fs::write(src.join(format!("d{d}/f{i}")), content).unwrap();
            }
        }
        let want = reference_digest(&src);
        assert_eq!(s.snapshot_dir(&src, Ingest::Copy).unwrap(), want);
        assert!(s.tree_is_complete(&want).unwrap());
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
        // Move: the same files again, in scratch; every one leaves.
        let scratch = s.scratch("out-").unwrap();
        let out = scratch.path().join("out");
        fs::create_dir(&out).unwrap();
        for d in 0..8 {
            let dir = out.join(format!("d{d}"));
            fs::create_dir(&dir).unwrap();
            for e in fs::read_dir(src.join(format!("d{d}"))).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        assert_eq!(s.snapshot_dir(&out, Ingest::Move).unwrap(), want);
        // Hard links, two names of a file next to each other in the order
        // the threads take them: every name goes, however they interleave.
        let linked = scratch.path().join("linked");
        fs::create_dir(&linked).unwrap();
        for i in 0..50 {
            let a = linked.join(format!("f{i:02}"));
            fs::write(&a, format!("linked {i:02}")).unwrap();
            fs::hard_link(&a, linked.join(format!("f{i:02}-link"))).unwrap();
        }
        let want_linked = reference_digest(&linked);
        assert_eq!(s.snapshot_dir(&linked, Ingest::Move).unwrap(), want_linked);
        assert_eq!(fs::read_dir(&linked).unwrap().count(), 0);
        for d in 0..8 {
            assert_eq!(fs::read_dir(out.join(format!("d{d}"))).unwrap().count(), 0);
        }
        for b in s.list_blobs().unwrap() {
            s.verify_blob(&b).unwrap();
        }
    }

    #[test]
    fn a_failing_file_stops_the_snapshot_with_its_path() {
        let (t, s) = store();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("a")).unwrap();
        fs::write(src.join("a/ok"), b"fine").unwrap();
        fs::write(src.join("a/gone"), b"soon gone").unwrap();
        // Listed, then removed before it is read: the open fails.
        let dirs = walk(&src, 2, None, None).unwrap();
        fs::remove_file(src.join("a/gone")).unwrap();
        let jobs = file_jobs(&dirs);
        assert_eq!(jobs.len(), 2);
        let err = parallel_map(&jobs, 2, |buf, job| {
            let path = dirs[job.dir]
                .path
                .join(&dirs[job.dir].entries[job.entry].name);
            s.ingest_copy(&path, buffer(buf))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a/gone"), "{err}");
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }
}
