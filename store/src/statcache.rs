//! The stat cache: re-checking an unchanged directory without reading it.
//!
//! [`Store::snapshot_dir`] with [`Ingest::Copy`](crate::Ingest::Copy) (user
//! data) remembers, for each directory it snapshots, every file's stat
//! fields and digest, every symlink's target and every directory's tree
//! digest, in `v1/cache/stat/<hex>` (`<hex>`: the SHA-256 of the
//! directory's canonical absolute path). The next snapshot of the same
//! directory stats every file again (it always walks the whole tree) and
//! takes a file's digest from the cache, without opening the file, when
//!
//! - its device, inode number, size, mtime (to the nanosecond), ctime (to
//!   the nanosecond) and executable bit are all the same as recorded, and
//! - the entry is not *racy*: it was recorded at least [`RACY_MARGIN`]
//!   (2 s) after both the file's mtime and its ctime.
//!
//! Otherwise the file is read (and copied into the store) again. The time
//! an entry is recorded is the time the snapshot that read it started
//! (before its walk). A file changed in place keeps its inode but gets a
//! new ctime, which nobody can set back (`touch` and `utimensat` restore
//! the mtime only), so even a same-size change with the mtime restored is
//! read again. A file replaced by another gets a new inode. The racy rule
//! (git's "racily clean" rule) covers timestamps too coarse to tell two
//! writes apart: without it, a change made within the same clock tick as
//! the recorded mtime and after the snapshot read the file would keep
//! both timestamps. 2 s covers every common granularity (nanoseconds on
//! ext4, XFS and btrfs, 1 s on older filesystems and NFSv2, 2 s on FAT).
//! A directory whose files were all written less than 2 s before it was
//! snapshotted is therefore read in full once more by the next snapshot,
//! after which its entries are trusted. (On a network filesystem whose
//! server clock runs behind this machine's by more than the margin, a
//! change within one timestamp tick of the last one could go unnoticed.)
//!
//! A directory's listing (its names, their kinds and its symlinks'
//! targets) is taken from the cache, without the directory being read,
//! when the directory's own device, inode number, size, mtime and ctime
//! (taken before it was listed) are the same as recorded and not racy, by
//! the same rule and margin as a file's. Adding, removing or renaming an
//! entry, or replacing one (a symlink cannot be changed in place), sets the
//! directory's mtime and ctime, and nobody can set a ctime back; a
//! directory mounted over, or replaced, has another device or inode. Every
//! file of such a listing is still stat-ed by name, as always, so a file
//! changed in place is noticed exactly as in a listed directory; one that
//! turns out gone or no longer a regular file makes the directory be read
//! after all. A directory whose record lacks some of its files (one that
//! changed while it was being read) has no stat recorded. This saves
//! reading the directories (a tenth of an unchanged re-check on ext4, which
//! sorts every directory it lists by hash).
//!
//! A directory whose listing is the same as recorded (same names and kinds,
//! every file a trusted hit, same symlink targets, subdirectories unchanged)
//! keeps its recorded tree digest without the tree object being built
//! again, provided the tree object is still in the store.
//!
//! # Blobs the cache names
//!
//! A reused digest's blob is not looked up file by file (10,000 lookups
//! would cost more than the whole re-check). Instead:
//!
//! - a directory whose listing is the same as recorded is reused only if
//!   its tree object is in the store, which is written only after every
//!   blob it names;
//! - in any other directory, each reused digest's blob is looked up, and a
//!   file whose blob is gone is read and stored again;
//! - the garbage collector, before it removes any blob, invalidates every
//!   stat cache ([`Store::invalidate_stat_caches`]), and so does the store
//!   whenever it finds a blob corrupt or a tree naming a blob that is gone
//!   (someone removed a blob file by hand): the next snapshot of each
//!   directory reads everything and puts any missing blob back.
//!
//! Invalidating writes a new random *generation* to
//! `v1/cache/stat-generation` (durably) and then deletes the cache files.
//! Each cache file carries the generation that was current when the
//! snapshot that wrote it started, and a cache of another generation is
//! ignored, so a snapshot running concurrently with an invalidation cannot
//! bring a stale cache back.
//!
//! # The file
//!
//! Binary, little-endian, ending in a CRC-32 of everything before it. A
//! file that is torn, truncated, garbage, of another format version, for
//! another directory or of another generation is ignored (as if absent)
//! and replaced by the next snapshot. Written to `v1/tmp`, then renamed
//! into place: concurrent snapshots of one directory each write a whole,
//! self-consistent file, and the last rename wins. Not `fsync`ed: it is a
//! cache, and the checksum catches what a crash could leave. Rewritten
//! only when something changed (or it is of format version 1, which had
//! no directory stats; still read). About 90 bytes per file plus the names
//! (JSON would be several times larger and slower to read). Read by
//! mapping it (never written in place, so the mapping cannot change under
//! the reader), and parsed without an allocation per entry: loading the
//! cache of 10,000 files takes a few tenths of a millisecond.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write as _};
use std::ops::Range;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::io_err;
use crate::layout::Ns;
use crate::walk::{epoch_time, nanos, FileStat, WalkDir, WalkKind};
use crate::{BlobDigest, Hash, Result, Store, TreeDigest};

/// How long after a file's last change (the later of its mtime and ctime)
/// an entry must have been recorded to be trusted: see the module docs.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

const MAGIC: &[u8; 16] = b"repro stat cache";
/// The version written. Version 1 (still read, and rewritten by the next
/// snapshot) had no directory stats.
pub(crate) const VERSION: u32 = 2;

const DIR_NO_STAT: u8 = 0;
const DIR_STAT: u8 = 1;
const DIR_STAT_EXEC: u8 = 2;

const KIND_FILE: u8 = 0;
const KIND_EXEC_FILE: u8 = 1;
const KIND_DIR: u8 = 2;
const KIND_SYMLINK: u8 = 3;

fn cache_dir(store: &Store) -> PathBuf {
    store.ns_dir(Ns::StatCache)
}

fn generation_path(store: &Store) -> PathBuf {
    store.ns_dir(Ns::StatGeneration)
}

/// The current generation; all zeros if none was ever written. `None` if
/// it cannot be read (then no cache is used or written).
fn read_generation(store: &Store) -> Option<[u8; 16]> {
    match fs::read(generation_path(store)) {
        Ok(b) => b.try_into().ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some([0; 16]),
        Err(_) => None,
    }
}

impl Store {
    /// Invalidate every stat cache (see [`crate::statcache`]): the next
    /// snapshot of each directory reads every file again. The garbage
    /// collector does this before removing blobs; call it after removing or
    /// replacing blob files by any other means.
    pub fn invalidate_stat_caches(&self) -> Result<()> {
        let gen_path = generation_path(self);
        let dir = cache_dir(self);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        // Unique, not secret: the time, the process and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seed = format!(
            "{:?} {} {}",
            SystemTime::now(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let generation = &Hash::of(seed.as_bytes()).0[..16];
        self.write_atomic(&gen_path, generation)?;
        // The new generation already disowns them; removing them only frees
        // the space.
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
        Ok(())
    }

    /// [`Store::invalidate_stat_caches`] where the caller is already
    /// reporting another error: a failure here is not worth more.
    pub(crate) fn invalidate_stat_caches_quietly(&self) {
        let _ = self.invalidate_stat_caches();
    }
}

/// One snapshot's use of the stat cache of its directory.
pub(crate) struct Session {
    file: PathBuf,
    root: Vec<u8>,
    generation: [u8; 16],
    recorded_at: (i64, u32),
    /// The cache as read, if there was a valid one.
    pub(crate) cache: Option<Cache>,
}

impl Session {
    /// Read the generation and load the cache of `dir`; `now` (taken
    /// before the walk) is the time the new entries will be recorded at.
    /// `None` if the cache cannot be used at all (no canonical path, no
    /// readable generation, a clock before 1970).
    pub(crate) fn start(store: &Store, dir: &Path, now: SystemTime) -> Option<Session> {
        let root = fs::canonicalize(dir).ok()?.into_os_string().into_vec();
        let generation = read_generation(store)?;
        let recorded_at = epoch_time(now)?;
        let file = cache_dir(store).join(Hash::of(&root).hex());
        let cache = Bytes::map(&file)
            .ok()
            .and_then(|bytes| Cache::parse(bytes, &root, &generation));
        Some(Session {
            file,
            root,
            generation,
            recorded_at,
            cache,
        })
    }

    /// Write the cache for what this snapshot found (`digests`: each
    /// directory's tree digest). Best effort: `false` if it was not written.
    pub(crate) fn save(
        &self,
        store: &Store,
        dirs: &[WalkDir],
        digests: &[(TreeDigest, bool)],
    ) -> bool {
        let bytes = self.encode(dirs, digests);
        let write = || -> io::Result<()> {
            let dir = cache_dir(store);
            fs::create_dir_all(&dir)?;
            let mut f = tempfile::Builder::new()
                .prefix(".statcache-")
                .tempfile_in(store.tmp_dir())?;
            f.write_all(&bytes)?;
            f.persist(&self.file).map_err(|e| e.error)?;
            Ok(())
        };
        write().is_ok()
    }

    fn encode(&self, dirs: &[WalkDir], digests: &[(TreeDigest, bool)]) -> Vec<u8> {
        let mut w = Vec::with_capacity(64 + self.root.len() + dirs.len() * 64);
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&VERSION.to_le_bytes());
        w.extend_from_slice(&self.generation);
        put_bytes(&mut w, &self.root);
        w.extend_from_slice(&self.recorded_at.0.to_le_bytes());
        w.extend_from_slice(&self.recorded_at.1.to_le_bytes());
        w.extend_from_slice(&(dirs.len() as u32).to_le_bytes());
        for (dir, (tree, _)) in dirs.iter().zip(digests) {
            put_bytes(&mut w, dir.rel.as_bytes());
            w.extend_from_slice(&tree.hash().0);
            let kept: Vec<_> = dir
                .entries
                .iter()
                .filter(
                    |e| !matches!(&e.kind, WalkKind::File(f) if !f.cacheable || f.digest.is_none()),
                )
                .collect();
            // The directory's stat only with its whole listing: the next
            // snapshot may take the listing from here.
            match dir.stat.filter(|_| kept.len() == dir.entries.len()) {
                Some(s) => {
                    w.push(if s.executable {
                        DIR_STAT_EXEC
                    } else {
                        DIR_STAT
                    });
                    put_stat(&mut w, &s);
                }
                None => w.push(DIR_NO_STAT),
            }
            w.extend_from_slice(&(kept.len() as u32).to_le_bytes());
            for e in kept {
                match &e.kind {
                    WalkKind::File(f) => {
                        let s = &f.stat;
                        w.push(if s.executable {
                            KIND_EXEC_FILE
                        } else {
                            KIND_FILE
                        });
                        put_bytes(&mut w, e.name.as_bytes());
                        put_stat(&mut w, s);
                        let digest = f.digest.expect("filtered above");
                        w.extend_from_slice(&digest.hash().0);
                    }
                    WalkKind::Dir(_) => {
                        w.push(KIND_DIR);
                        put_bytes(&mut w, e.name.as_bytes());
                    }
                    WalkKind::Symlink(target) => {
                        w.push(KIND_SYMLINK);
                        put_bytes(&mut w, e.name.as_bytes());
                        put_bytes(&mut w, target.as_bytes());
                    }
                }
            }
        }
        let crc = crc32fast::hash(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        w
    }
}

/// Device, inode, size, mtime and ctime (not the executable bit).
fn put_stat(w: &mut Vec<u8>, s: &FileStat) {
    for v in [s.dev, s.ino, s.size] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    for t in [s.mtime, s.ctime] {
        w.extend_from_slice(&t.0.to_le_bytes());
        w.extend_from_slice(&t.1.to_le_bytes());
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

/// The bytes of a cache file: mapped, or (in tests) owned.
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    Mapped(Mapping),
}

/// A read-only private mapping of a whole cache file.
pub(crate) struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value (unmapped on
// drop): sharing or sending it is sharing or sending a `&[u8]`/`Box<[u8]>`.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

impl Bytes {
    /// Map the file at `path`, its pages populated at once. Mapping rather
    /// than reading: reading 1 MB (10,000 files) into fresh memory cost
    /// 0.5 to 0.8 ms in page faults, a tenth of a whole re-check.
    fn map(path: &Path) -> io::Result<Bytes> {
        let f = fs::File::open(path)?;
        let len = usize::try_from(f.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        #[allow(unsafe_code)]
        // SAFETY: a fresh mapping (address chosen by the kernel) of `len`
        // bytes of an open file, read-only and private; the result is
        // checked before use. The stat cache's files are never written in
        // place: each is written under another name and renamed over the
        // old one, and removed by unlinking, neither of which changes the
        // mapped inode; only truncating one by hand while a snapshot reads
        // it could make reading it fault (SIGBUS).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("null mapping"))?;
        Ok(Bytes::Mapped(Mapping { ptr, len }))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            #[allow(unsafe_code)]
            // SAFETY: `ptr` is a live read-only mapping of `len` bytes,
            // unmapped only when this value is dropped.
            Bytes::Mapped(m) => unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), m.len) },
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: unmaps exactly the mapping made in `Bytes::map`, which no
        // slice outlives (they borrow the `Bytes`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A loaded stat cache. Only the directory records are indexed; their
/// entries are read from the bytes as they are compared (no per-entry
/// allocation: the cache of 10,000 files is read in well under a
/// millisecond).
pub(crate) struct Cache {
    /// Its format version: an older one is rewritten.
    pub(crate) version: u32,
    buf: Bytes,
    recorded_at: (i64, u32),
    dirs: Vec<CachedDir>,
    index: HashMap<String, usize>,
}

/// One directory of a [`Cache`].
pub(crate) struct CachedDir {
    /// Its tree digest.
    pub(crate) tree: TreeDigest,
    /// Its own stat, taken before it was listed, if its whole listing is
    /// recorded.
    stat: Option<FileStat>,
    /// Where its entries are in the cache's bytes (checked by
    /// [`Cache::parse`]).
    entries: Range<usize>,
    /// How many entries it has.
    len: usize,
}

/// One entry of a [`CachedDir`], borrowed from the cache's bytes.
pub(crate) struct CachedEntry<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) kind: CachedKind<'a>,
}

/// What a [`CachedEntry`] is.
pub(crate) enum CachedKind<'a> {
    File { stat: FileStat, digest: BlobDigest },
    Dir,
    Symlink { target: &'a [u8] },
}

/// A bounds-checked reader over the cache's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<Range<usize>> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len())?;
        let r = self.at..end;
        self.at = end;
        Some(r)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let r = self.take(N)?;
        self.b[r].try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }
    fn time(&mut self) -> Option<(i64, u32)> {
        let s = self.i64()?;
        let ns = self.u32()?;
        (ns < 1_000_000_000).then_some((s, ns))
    }
    fn bytes(&mut self) -> Option<Range<usize>> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn slice(&mut self) -> Option<&'a [u8]> {
        let r = self.bytes()?;
        Some(&self.b[r])
    }
    fn stat(&mut self, executable: bool) -> Option<FileStat> {
        let (dev, ino, size) = (self.u64()?, self.u64()?, self.u64()?);
        let (mtime, ctime) = (self.time()?, self.time()?);
        Some(FileStat {
            dev,
            ino,
            size,
            mtime,
            ctime,
            executable,
        })
    }
    /// One entry of a directory record.
    fn entry(&mut self) -> Option<CachedEntry<'a>> {
        let kind = self.u8()?;
        let name = self.slice()?;
        let kind = match kind {
            KIND_FILE | KIND_EXEC_FILE => CachedKind::File {
                stat: self.stat(kind == KIND_EXEC_FILE)?,
                digest: BlobDigest::from_hash(Hash(self.array()?)),
            },
            KIND_DIR => CachedKind::Dir,
            KIND_SYMLINK => CachedKind::Symlink {
                target: self.slice()?,
            },
            _ => return None,
        };
        Some(CachedEntry { name, kind })
    }
}

impl Cache {
    /// Parse a cache file; `None` if it is not a valid cache of `root` in
    /// `generation`. Every entry is checked here, so that
    /// [`Cache::entries_of`] can read them again without failing.
    pub(crate) fn parse(buf: Bytes, root: &[u8], generation: &[u8; 16]) -> Option<Cache> {
        let body_len = buf.len().checked_sub(4)?;
        let crc = u32::from_le_bytes(buf[body_len..].try_into().ok()?);
        if crc32fast::hash(&buf[..body_len]) != crc {
            return None;
        }
        let mut c = Cursor {
            b: &buf[..body_len],
            at: 0,
        };
        if &c.array::<16>()? != MAGIC {
            return None;
        }
        let version = c.u32()?;
        if !(1..=VERSION).contains(&version) || &c.array::<16>()? != generation {
            return None;
        }
        if c.slice()? != root {
            return None;
        }
        let recorded_at = c.time()?;
        let n_dirs = c.u32()? as usize;
        // Each directory takes at least 40 bytes: no absurd allocation from
        // a count that passed the checksum by chance.
        let mut dirs = Vec::with_capacity(n_dirs.min(c.b.len() / 40));
        let mut index = HashMap::with_capacity(dirs.capacity());
        for i in 0..n_dirs {
            let rel = std::str::from_utf8(c.slice()?).ok()?.to_string();
            let tree = TreeDigest::from_hash(Hash(c.array()?));
            let stat = match version {
                1 => None,
                _ => match c.u8()? {
                    DIR_NO_STAT => None,
                    k @ (DIR_STAT | DIR_STAT_EXEC) => Some(c.stat(k == DIR_STAT_EXEC)?),
                    _ => return None,
                },
            };
            let len = c.u32()? as usize;
            let start = c.at;
            for _ in 0..len {
                c.entry()?;
            }
            if index.insert(rel, i).is_some() {
                return None;
            }
            dirs.push(CachedDir {
                tree,
                stat,
                entries: start..c.at,
                len,
            });
        }
        if c.at != c.b.len() {
            return None;
        }
        Some(Cache {
            version,
            buf,
            recorded_at,
            dirs,
            index,
        })
    }

    /// The record of the directory at `rel` (relative to the root).
    pub(crate) fn dir(&self, rel: &str) -> Option<usize> {
        self.index.get(rel).copied()
    }

    /// Directory record `i`.
    pub(crate) fn dir_at(&self, i: usize) -> &CachedDir {
        &self.dirs[i]
    }

    /// The stat of directory record `i`, if its whole listing is recorded.
    pub(crate) fn dir_stat(&self, i: usize) -> Option<FileStat> {
        self.dirs[i].stat
    }

    /// How many entries directory record `i` has.
    pub(crate) fn len_of(&self, i: usize) -> usize {
        self.dirs[i].len
    }

    /// The entries of directory record `i`, sorted by name.
    pub(crate) fn entries_of(&self, i: usize) -> impl Iterator<Item = CachedEntry<'_>> {
        let d = &self.dirs[i];
        let mut c = Cursor {
            b: &self.buf[..d.entries.end],
            at: d.entries.start,
        };
        // Checked by `parse`: every one of them reads.
        (0..d.len).map_while(move |_| c.entry())
    }

    /// Whether a recorded stat is old enough to be trusted (not racy).
    pub(crate) fn trusted(&self, s: &FileStat) -> bool {
        let changed = nanos(s.mtime).max(nanos(s.ctime));
        changed + RACY_MARGIN.as_nanos() as i128 <= nanos(self.recorded_at)
    }
}

#[cfg(test)]
mod tests;
