//! Is every blob of a set still present and intact? Re-hashing answers it;
//! blob stamps make the answer cheap when nothing changed.
//!
//! A cache hit (an action cache entry, the build memo) and a build's pinned
//! inputs name blobs that the build's record will vouch for without reading
//! them. [`Store::check_intact`] makes sure that they are all there and hash
//! to their names before the record is signed. Re-hashing every blob of
//! every cache hit would make a no-op build cost as much as reading every
//! output, so a check remembers, per set, each blob's *stamp*: the device,
//! inode, size, mtime and ctime (to the nanosecond) of the blob file when it
//! was last re-hashed and found intact, and when that was. A later check
//! trusts a blob without reading it only when
//!
//! - its file's stamp is exactly as recorded, and
//! - the stamp was recorded at least [`RACY_MARGIN`] after the file's last
//!   change (the later of mtime and ctime): a change within one timestamp
//!   tick of the recording could leave both times as they were (git's
//!   "racily clean" rule, as in [`crate::statcache`]).
//!
//! Anything else is re-hashed ([`Store::verify_blob`]). Blobs are mode 0444
//! and owned by the store's owner: altering one in place needs a `chmod` and
//! a write, each of which sets the ctime to the current time, and the ctime
//! cannot be set back by `touch` or `utimensat`; replacing one gives a new
//! inode. What the stamps do not withstand is someone who can set the
//! system clock back or write the block device, or who rewrites the stamp
//! files themselves: they are a cache in the store, as trustworthy as the
//! action cache beside them. `repro verify` and `repro fsck` never use them:
//! they re-hash every blob they vouch for.
//!
//! Stamps live in `v1/cache/intact/<hex>`, one file per set (the caller
//! names it: a step key, a memo key, a tree digest): a checksummed binary
//! file, rewritten (atomically) only when a check re-hashed something. A
//! torn, foreign or unreadable one is ignored (every blob is re-hashed).

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::io_err;
use crate::fsutil::kind_of;
use crate::layout::Ns;
use crate::statcache::RACY_MARGIN;
use crate::walk::{epoch_time, nanos, FileStat};
use crate::{BlobDigest, EntryKind, Error, Hash, Result, Store, TreeDigest};

const MAGIC: &[u8; 16] = b"repro blob stamp";
const VERSION: u32 = 1;
/// Magic, version, recorded time (seconds, nanoseconds), count.
const HEADER: usize = 16 + 4 + 8 + 4 + 8;
/// Digest, dev, ino, size, mtime (s, ns), ctime (s, ns).
const ENTRY: usize = 32 + 8 + 8 + 8 + 8 + 4 + 8 + 4;

/// Below this many blobs per thread a check stays on one thread.
const PARALLEL_CHECKS: usize = 256;

/// What a check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Blobs in the set.
    pub blobs: usize,
    /// Blobs re-hashed (the others were vouched for by their stamps).
    pub rehashed: usize,
    /// Bytes re-hashed.
    pub rehashed_bytes: u64,
}

/// The stamps of one set, as read from or written to its file.
struct Stamps {
    recorded_at: (i64, u32),
    /// Sorted by digest.
    entries: Vec<(Hash, FileStat)>,
}

impl Stamps {
    fn get(&self, h: &Hash) -> Option<&FileStat> {
        self.entries
            .binary_search_by(|(k, _)| k.cmp(h))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// Whether `stat` is the recorded stamp of `h`, recorded late enough
    /// after the file's last change to be trusted.
    fn vouches(&self, h: &Hash, stat: &FileStat) -> bool {
        let Some(s) = self.get(h) else {
            return false;
        };
        let changed = nanos(s.mtime).max(nanos(s.ctime));
        s == stat && changed + RACY_MARGIN.as_nanos() as i128 <= nanos(self.recorded_at)
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(HEADER + ENTRY * self.entries.len() + 4);
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&VERSION.to_le_bytes());
        w.extend_from_slice(&self.recorded_at.0.to_le_bytes());
        w.extend_from_slice(&self.recorded_at.1.to_le_bytes());
        w.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (h, s) in &self.entries {
            w.extend_from_slice(&h.0);
            w.extend_from_slice(&s.dev.to_le_bytes());
            w.extend_from_slice(&s.ino.to_le_bytes());
            w.extend_from_slice(&s.size.to_le_bytes());
            w.extend_from_slice(&s.mtime.0.to_le_bytes());
            w.extend_from_slice(&s.mtime.1.to_le_bytes());
            w.extend_from_slice(&s.ctime.0.to_le_bytes());
            w.extend_from_slice(&s.ctime.1.to_le_bytes());
        }
        let crc = crc32fast::hash(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        w
    }

    /// `None` for anything but a whole, current stamp file.
    fn decode(b: &[u8]) -> Option<Stamps> {
        let body = b.len().checked_sub(4)?;
        let crc = u32::from_le_bytes(b[body..].try_into().ok()?);
        if body < HEADER || crc32fast::hash(&b[..body]) != crc || &b[..16] != MAGIC {
            return None;
        }
        let mut c = Reader {
            b: &b[..body],
            at: 16,
        };
        if c.u32()? != VERSION {
            return None;
        }
        let recorded_at = (c.i64()?, c.u32()?);
        let n = usize::try_from(c.u64()?).ok()?;
        if body - HEADER != n.checked_mul(ENTRY)? {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let h = Hash(c.take(32)?.try_into().ok()?);
            let s = FileStat {
                dev: c.u64()?,
                ino: c.u64()?,
                size: c.u64()?,
                mtime: (c.i64()?, c.u32()?),
                ctime: (c.i64()?, c.u32()?),
                executable: false,
            };
            entries.push((h, s));
        }
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return None;
        }
        Some(Stamps {
            recorded_at,
            entries,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The stat of a blob file as a stamp compares it (the execute bit is not
/// part of it: blobs are all 0444).
fn stamp_of(m: &fs::Metadata) -> FileStat {
    FileStat {
        executable: false,
        ..FileStat::of(m)
    }
}

/// One blob's check: its stamp, and the bytes re-hashed (`None` if its
/// stamp vouched for it).
fn check_one(
    store: &Store,
    d: &BlobDigest,
    known: Option<&Stamps>,
) -> Result<(FileStat, Option<u64>)> {
    let path = store.blob_path(d);
    let meta = fs::symlink_metadata(&path).map_err(|e| {
        // A blob removed by hand: the stat caches may name it too.
        store.invalidate_stat_caches_quietly();
        store.open_err(d, "blob", &path, e)
    })?;
    if !meta.file_type().is_file() {
        return Err(Error::Corrupt {
            digest: d.to_string(),
            actual: format!("not a regular file ({})", kind_of(&meta)),
            path,
        });
    }
    let stat = stamp_of(&meta);
    if known.is_some_and(|k| k.vouches(&d.hash(), &stat)) {
        return Ok((stat, None));
    }
    // Stat first, hash second: a change made while hashing either shows in
    // the hash or leaves a stamp that no longer matches next time.
    let n = store.verify_blob(d)?;
    Ok((stat, Some(n)))
}

impl Store {
    fn stamp_path(&self, set: &Hash) -> PathBuf {
        self.ns_dir(Ns::Intact).join(set.hex())
    }

    /// Check that every blob of `blobs` is present and intact: each is
    /// re-hashed unless the stamps of set `set` (a name of the caller's
    /// choosing, see the module docs) vouch for it. The first missing or
    /// corrupt blob is the error ([`Error::Missing`], [`Error::Corrupt`],
    /// naming its digest). When anything was re-hashed, the set's stamps
    /// are rewritten.
    pub fn check_intact(&self, set: &Hash, blobs: &[BlobDigest]) -> Result<Checked> {
        let now = SystemTime::now();
        let path = self.stamp_path(set);
        let known = fs::read(&path).ok().and_then(|b| Stamps::decode(&b));
        let mut sorted = blobs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let results = self.check_all(&sorted, known.as_ref())?;
        let mut checked = Checked {
            blobs: sorted.len(),
            ..Checked::default()
        };
        let mut entries = Vec::with_capacity(sorted.len());
        for (d, (stat, hashed)) in sorted.iter().zip(results) {
            if let Some(n) = hashed {
                checked.rehashed += 1;
                checked.rehashed_bytes += n;
            }
            entries.push((d.hash(), stat));
        }
        let same_set = known.as_ref().is_some_and(|k| {
            k.entries.len() == entries.len()
                && k.entries.iter().zip(&entries).all(|(a, b)| a.0 == b.0)
        });
        if checked.rehashed > 0 || !same_set {
            let stamps = Stamps {
                recorded_at: epoch_time(now).unwrap_or((0, 0)),
                entries,
            };
            let dir = self.ns_dir(Ns::Intact);
            // Only a cache: a store where it cannot be written still works.
            if fs::create_dir_all(&dir).is_ok() {
                let _ = self.write_atomic(&path, &stamps.encode());
            }
        }
        Ok(checked)
    }

    /// Check every blob of `sorted`, on several threads when there are
    /// many; in the same order.
    fn check_all(
        &self,
        sorted: &[BlobDigest],
        known: Option<&Stamps>,
    ) -> Result<Vec<(FileStat, Option<u64>)>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(sorted.len() / PARALLEL_CHECKS).max(1);
        let run = |chunk: &[BlobDigest]| -> Result<Vec<(FileStat, Option<u64>)>> {
            chunk.iter().map(|d| check_one(self, d, known)).collect()
        };
        if threads == 1 {
            return run(sorted);
        }
        let per_thread = sorted.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut chunks = sorted.chunks(per_thread);
            let first = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks.map(|c| scope.spawn(move || run(c))).collect();
            let mut all = run(first)?;
            for h in others {
                match h.join() {
                    Ok(part) => all.extend(part?),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(all)
        })
    }

    /// Re-hash every blob of `blobs` (no stamps: for `verify` and `fsck`),
    /// on every core; the first missing or corrupt one is the error.
    /// Returns the bytes read.
    pub fn verify_blobs(&self, blobs: &[BlobDigest]) -> Result<u64> {
        let mut sorted = blobs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(sorted.len()).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Largest first would balance better; the sizes are not known
        // without a stat, and one thread per core taking the next blob
        // keeps every core busy until the last few.
        let work = || -> Result<u64> {
            let mut n = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(d) = sorted.get(i) else {
                    return Ok(n);
                };
                n += self.verify_blob(d)?;
            }
        };
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut total = work()?;
            for h in others {
                match h.join() {
                    Ok(n) => total += n?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(total)
        })
    }

    /// Every blob tree `t` needs: its tree objects (each re-hashed as it is
    /// read here) and the blobs of its files, at any depth.
    pub fn tree_blobs(&self, t: &TreeDigest) -> Result<Vec<BlobDigest>> {
        let mut out = vec![BlobDigest::from_hash(t.hash())];
        let mut todo = vec![*t];
        while let Some(t) = todo.pop() {
            for e in self.get_tree(&t)?.entries {
                match e.kind {
                    EntryKind::File { digest, .. } => out.push(digest),
                    EntryKind::Dir { tree } => {
                        out.push(BlobDigest::from_hash(tree.hash()));
                        todo.push(tree);
                    }
                    EntryKind::Symlink { .. } => {}
                }
            }
        }
        Ok(out)
    }

    /// Remove every blob stamp file (the garbage collector does, before it
    /// removes blobs: the sets they describe may be gone).
    pub fn clear_blob_stamps(&self) -> Result<()> {
        let dir = self.ns_dir(Ns::Intact);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::blob::tests::corrupt;

    fn ino(p: &std::path::Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap())
    }

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("store")).unwrap();
        (t, s)
    }

    /// Make the stamps of `set` look recorded `secs` seconds later than
    /// they were (as if the check had run that much later), so that fresh
    /// blobs are not racy any more.
    fn age(s: &Store, set: &Hash, secs: i64) {
        let p = s.stamp_path(set);
        let mut st = Stamps::decode(&fs::read(&p).unwrap()).unwrap();
        st.recorded_at.0 += secs;
        fs::write(&p, st.encode()).unwrap();
    }

    #[test]
    fn a_fresh_set_is_rehashed_then_trusted_once_not_racy() {
        let (_t, s) = store();
        let a = s.put_bytes(b"weights").unwrap();
        let b = s.put_bytes(b"metrics").unwrap();
        let set = Hash::of(b"set");
        let c = s.check_intact(&set, &[a, b, a]).unwrap();
        assert_eq!((c.blobs, c.rehashed, c.rehashed_bytes), (2, 2, 14));
        // Recorded right after the blobs were written: racy, so read again.
        let c = s.check_intact(&set, &[a, b]).unwrap();
        assert_eq!(c.rehashed, 2);
        age(&s, &set, 3);
        let c = s.check_intact(&set, &[b, a]).unwrap();
        assert_eq!((c.blobs, c.rehashed), (2, 0));
        // A blob the stamps do not know is re-hashed; the others are not.
        let new = s.put_bytes(b"new").unwrap();
        let c = s.check_intact(&set, &[a, b, new]).unwrap();
        assert_eq!(c.rehashed, 1);
    }

    #[test]
    fn a_blob_altered_in_place_is_caught_although_stamped() {
        let (_t, s) = store();
        let a = s.put_bytes(b"precious metrics").unwrap();
        let set = Hash::of(b"set");
        s.check_intact(&set, &[a]).unwrap();
        age(&s, &set, 3);
        assert_eq!(s.check_intact(&set, &[a]).unwrap().rehashed, 0);
        // chmod u+w, change a byte, chmod back, and even restore the mtime:
        // the ctime moved on.
        let path = s.blob_path(&a);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        corrupt(&path);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let err = s.check_intact(&set, &[a]).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&a.to_string()), "{err}");
    }

    #[test]
    fn a_blob_replaced_by_another_file_is_caught() {
        let (_t, s) = store();
        let a = s.put_bytes(b"model v1").unwrap();
        let set = Hash::of(b"set");
        s.check_intact(&set, &[a]).unwrap();
        age(&s, &set, 3);
        let path = s.blob_path(&a);
        let before = ino(&path);
        let other = path.with_extension("new");
        fs::write(&other, b"model v2").unwrap();
        fs::rename(&other, &path).unwrap();
        assert_ne!(ino(&path), before);
        assert!(matches!(
            s.check_intact(&set, &[a]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_missing_blob_is_named() {
        let (_t, s) = store();
        let a = s.put_bytes(b"log").unwrap();
        let set = Hash::of(b"set");
        s.check_intact(&set, &[a]).unwrap();
        age(&s, &set, 3);
        fs::remove_file(s.blob_path(&a)).unwrap();
        let err = s.check_intact(&set, &[a]).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains(&a.to_string()), "{err}");
    }

    #[test]
    fn torn_or_foreign_stamps_are_ignored() {
        let (_t, s) = store();
        let a = s.put_bytes(b"x").unwrap();
        let set = Hash::of(b"set");
        s.check_intact(&set, &[a]).unwrap();
        age(&s, &set, 3);
        let p = s.stamp_path(&set);
        let good = fs::read(&p).unwrap();
        for bad in [
            good[..good.len() - 1].to_vec(),
            {
                let mut b = good.clone();
                b[HEADER + 40] ^= 1;
                b
            },
            b"not a stamp file".to_vec(),
        ] {
            fs::write(&p, &bad).unwrap();
            assert_eq!(s.check_intact(&set, &[a]).unwrap().rehashed, 1);
            fs::write(&p, &good).unwrap();
        }
        assert_eq!(s.check_intact(&set, &[a]).unwrap().rehashed, 0);
    }

    #[test]
    fn many_blobs_are_checked_on_several_threads_in_order() {
        let (_t, s) = store();
        let blobs: Vec<BlobDigest> = (0..2000)
            .map(|i| s.put_bytes(format!("blob {i}").as_bytes()).unwrap())
            .collect();
        let set = Hash::of(b"many");
        assert_eq!(s.check_intact(&set, &blobs).unwrap().rehashed, 2000);
        age(&s, &set, 3);
        assert_eq!(s.check_intact(&set, &blobs).unwrap().rehashed, 0);
        corrupt(&s.blob_path(&blobs[1234]));
        let err = s.check_intact(&set, &blobs).unwrap_err();
        assert!(err.to_string().contains(&blobs[1234].to_string()), "{err}");
        assert_eq!(
            s.verify_blobs(&blobs).unwrap_err().to_string(),
            err.to_string()
        );
    }

    #[test]
    fn verify_blobs_rehashes_everything_and_tree_blobs_lists_a_tree() {
        let (_t, s) = store();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("a"), b"aaa").unwrap();
        fs::write(dir.path().join("sub/b"), b"bbbb").unwrap();
        let t = s.snapshot_dir(dir.path(), crate::Ingest::Copy).unwrap();
        let blobs = s.tree_blobs(&t).unwrap();
        assert_eq!(blobs.len(), 4, "root tree, sub tree, two files");
        assert!(blobs.contains(&BlobDigest::from_hash(Hash::of(b"aaa"))));
        let n = s.verify_blobs(&blobs).unwrap();
        assert!(n > 7);
        corrupt(&s.blob_path(&BlobDigest::from_hash(Hash::of(b"bbbb"))));
        assert!(matches!(s.verify_blobs(&blobs), Err(Error::Corrupt { .. })));
    }
}
