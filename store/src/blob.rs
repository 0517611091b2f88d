//! Blobs: `v1/blobs/sha256/<hex>`, immutable, mode 0444.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::io_err;
use crate::fsutil::{kind_of, sync_dir};
use crate::walk::{hash_with, open_walked, stat_opened, FileStat};
use crate::{BlobDigest, Error, Hash, Result, Store};

const BUF: usize = 256 * 1024;

/// Mode of every blob file.
pub(crate) const BLOB_MODE: u32 = 0o444;

/// Which side of a copy failed.
pub(crate) enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
}

/// Copy `r` into `w`, hashing what passes; returns the hash and byte count.
pub(crate) fn copy_hashing(
    r: &mut (impl Read + ?Sized),
    w: &mut impl Write,
) -> Result<(Hash, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..k]);
        w.write_all(&buf[..k]).map_err(CopyError::Write)?;
        n += k as u64;
    }
    w.flush().map_err(CopyError::Write)?;
    Ok((Hash(hasher.finalize().into()), n))
}

/// Hash everything `r` yields.
pub(crate) fn hash_reader(r: &mut impl Read) -> io::Result<(Hash, u64)> {
    copy_hashing(r, &mut io::sink()).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => e,
    })
}

/// A reader that hashes what it yields.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            n: 0,
        }
    }
    pub(crate) fn finish(self) -> (Hash, u64) {
        (Hash(self.hasher.finalize().into()), self.n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

impl Store {
    /// The path where blob `d` lives (whether or not it is present).
    pub fn blob_path(&self, d: &BlobDigest) -> PathBuf {
        self.layout_dir().join("blobs/sha256").join(d.hex())
    }

    /// Whether blob `d` is present (not verified).
    pub fn has_blob(&self, d: &BlobDigest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Store `bytes`; returns their digest. Idempotent.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobDigest> {
        self.put_reader_inner(&mut &bytes[..], None, Path::new("<bytes>"))
            .map(|(d, _)| d)
    }

    /// Stream `r` into the store (temp file in `v1/tmp`, hashing as it
    /// goes, fsync, rename); returns the digest and size.
    pub fn put_reader(&self, mut r: impl Read) -> Result<(BlobDigest, u64)> {
        self.put_reader_inner(&mut r, None, Path::new("<input stream>"))
    }

    /// Like [`Store::put_reader`], but the content must hash to `expected`;
    /// otherwise nothing is stored and the error is [`Error::Mismatch`].
    pub fn put_reader_expecting(&self, mut r: impl Read, expected: &BlobDigest) -> Result<u64> {
        self.put_reader_inner(&mut r, Some(expected), Path::new("<input stream>"))
            .map(|(_, n)| n)
    }

    fn put_reader_inner(
        &self,
        r: &mut dyn Read,
        expected: Option<&BlobDigest>,
        source: &Path,
    ) -> Result<(BlobDigest, u64)> {
        let tmp = self.tmp_dir();
        let mut f = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&tmp)
            .map_err(io_err("create a temporary file in", &tmp))?;
        let (hash, n) = {
            let path = f.path().to_path_buf();
            let mut w = io::BufWriter::with_capacity(BUF, f.as_file_mut());
            copy_hashing(r, &mut w).map_err(|e| match e {
                CopyError::Read(err) => Error::Io {
                    action: "read",
                    path: source.to_path_buf(),
                    err,
                },
                CopyError::Write(err) => Error::Io {
                    action: "write",
                    path,
                    err,
                },
            })?
        };
        let d = BlobDigest::from_hash(hash);
        if let Some(expected) = expected {
            if *expected != d {
                return Err(Error::Mismatch {
                    expected: expected.to_string(),
                    actual: d.to_string(),
                });
            }
        }
        if self.finish_temp(f, &d)? {
            sync_dir(&self.layout_dir().join("blobs/sha256"))?;
        }
        Ok((d, n))
    }

    /// Make a finished temp file holding the bytes of blob `d` the blob,
    /// unless a good copy is there already (then the temp file is dropped
    /// without being synced). Otherwise: fsync, mode 0444, rename into
    /// place; `true` then, and the caller must fsync `blobs/sha256` before
    /// anything that names the blob is written.
    fn finish_temp(&self, f: tempfile::NamedTempFile, d: &BlobDigest) -> Result<bool> {
        if self.blob_path(d).is_file() {
            match self.verify_blob(d) {
                Ok(_) => return Ok(false),
                Err(Error::Corrupt { .. }) | Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        f.as_file().sync_all().map_err(io_err("fsync", f.path()))?;
        f.as_file()
            .set_permissions(fs::Permissions::from_mode(BLOB_MODE))
            .map_err(io_err("set permissions of", f.path()))?;
        self.publish_nosync(f, d)
    }

    /// Rename a finished, synced temp file into place as blob `d`, unless a
    /// good copy is already there; `true` if it was renamed (the caller
    /// syncs `blobs/sha256`).
    fn publish_nosync(&self, f: tempfile::NamedTempFile, d: &BlobDigest) -> Result<bool> {
        let dest = self.blob_path(d);
        match f.persist_noclobber(&dest) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                // Someone else stored it first. If theirs is damaged, replace it.
                if let Err(Error::Corrupt { .. }) = self.verify_blob(d) {
                    e.file
                        .persist(&dest)
                        .map_err(|e| io_err("rename a temporary file to", &dest)(e.error))?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(io_err("rename a temporary file to", &dest)(e.error)),
        }
    }

    /// Store `bytes`, known to hash to `d`: temp file, fsync, rename; no
    /// fsync of `blobs/sha256` (the caller does it once for many).
    pub(crate) fn write_blob_nosync(&self, bytes: &[u8], d: &BlobDigest) -> Result<()> {
        let tmp = self.tmp_dir();
        let mut f = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&tmp)
            .map_err(io_err("create a temporary file in", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", f.path()))?;
        self.finish_temp(f, d)?;
        Ok(())
    }

    /// Copy the regular file at `path` (found by a walk: not followed if it
    /// has become a symlink) into the store through `buf`, hashing in the
    /// same pass. No fsync of `blobs/sha256`: the caller does it once.
    /// Returns the digest, the bytes copied and the file's stat taken
    /// before reading it.
    pub(crate) fn ingest_copy(
        &self,
        path: &Path,
        buf: &mut [u8],
    ) -> Result<(BlobDigest, u64, FileStat)> {
        let mut src = open_walked(path)?;
        let stat = stat_opened(&src, path)?;
        let tmp = self.tmp_dir();
        let mut f = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&tmp)
            .map_err(io_err("create a temporary file in", &tmp))?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        loop {
            let k = match src.read(buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read", path)(e)),
            };
            hasher.update(&buf[..k]);
            f.as_file_mut()
                .write_all(&buf[..k])
                .map_err(|e| io_err("write", f.path())(e))?;
            n += k as u64;
        }
        let d = BlobDigest::from_hash(Hash(hasher.finalize().into()));
        self.finish_temp(f, &d)?;
        Ok((d, n, stat))
    }

    /// Move the regular file at `path` (found by a walk in a scratch
    /// directory) into the store, as [`Store::put_file_move`] does, reading
    /// through `buf`; no fsync of `blobs/sha256` (the caller does it once).
    pub(crate) fn ingest_move(
        &self,
        path: &Path,
        buf: &mut [u8],
    ) -> Result<(BlobDigest, u64, FileStat)> {
        let mut f = open_walked(path)?;
        let meta = f.metadata().map_err(io_err("inspect", path))?;
        if !meta.is_file() {
            return Err(Error::UnsupportedFile {
                path: path.to_path_buf(),
                kind: kind_of(&meta),
            });
        }
        let stat = FileStat::of(&meta);
        let (hash, n) = hash_with(&mut f, buf).map_err(io_err("read", path))?;
        f.sync_all().map_err(io_err("fsync", path))?;
        drop(f);
        let d = BlobDigest::from_hash(hash);
        self.move_hashed(path, meta.uid(), &d)?;
        if meta.nlink() > 1 {
            // Another name of the same file, moved at the same moment by
            // another thread, makes this rename a no-op (renaming a file
            // onto a link of itself does nothing): remove this name, as a
            // move in turn would have.
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", path)(e)),
            }
        }
        Ok((d, n, stat))
    }

    /// The second half of a move into the store: `path` (owned by `uid`)
    /// hashes to `d` and is synced. Renames it into place, or removes it if
    /// a good copy is there already. `true` if renamed (the caller syncs
    /// `blobs/sha256`).
    fn move_hashed(&self, path: &Path, uid: u32, d: &BlobDigest) -> Result<bool> {
        let dest = self.blob_path(d);
        if dest.is_file() {
            match self.verify_blob(d) {
                Ok(_) => {
                    fs::remove_file(path).map_err(io_err("remove", path))?;
                    return Ok(false);
                }
                Err(Error::Corrupt { .. }) | Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        fs::set_permissions(path, fs::Permissions::from_mode(BLOB_MODE))
            .map_err(io_err("set permissions of", path))?;
        // A step's outputs are owned by the sandbox user: hand them to the
        // store's owner, so that no sandboxed process owns a blob (and could
        // make it writable again). Only possible, and only needed, as root.
        if uid != self.owner_uid() {
            let _ = std::os::unix::fs::lchown(path, Some(self.owner_uid()), Some(self.owner_gid()));
        }
        fs::rename(path, &dest).map_err(|err| {
            if err.raw_os_error() == Some(libc::EXDEV) {
                Error::CrossDevice {
                    path: path.to_path_buf(),
                }
            } else {
                io_err("rename into the store", path)(err)
            }
        })?;
        Ok(true)
    }

    /// Move the regular file at `path` into the store: hash it, then rename it
    /// into `blobs/` (never a copy). If the blob exists already it is
    /// verified (and replaced if corrupt) and the source removed. `path` must
    /// be on the store's filesystem (for step outputs: inside
    /// [`Store::scratch`]), and nothing may still be writing it.
    pub fn put_file_move(&self, path: &Path) -> Result<(BlobDigest, u64)> {
        let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
        if !meta.file_type().is_file() {
            return Err(Error::UnsupportedFile {
                path: path.to_path_buf(),
                kind: kind_of(&meta),
            });
        }
        let mut f = fs::File::open(path).map_err(io_err("open", path))?;
        let (hash, n) = hash_reader(&mut f).map_err(io_err("read", path))?;
        f.sync_all().map_err(io_err("fsync", path))?;
        drop(f);
        let d = BlobDigest::from_hash(hash);
        if self.move_hashed(path, meta.uid(), &d)? {
            sync_dir(&self.layout_dir().join("blobs/sha256"))?;
        }
        Ok((d, n))
    }

    /// Every blob present in the store, sorted (not verified). Files in
    /// `blobs/sha256` whose names are not digests are ignored.
    pub fn list_blobs(&self) -> Result<Vec<BlobDigest>> {
        let dir = self.layout_dir().join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(hash) = entry
                .file_name()
                .to_str()
                .and_then(|n| Hash::from_hex(n).ok())
            {
                out.push(BlobDigest::from_hash(hash));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Copy the file at `path` into the store, hashing in the same pass
    /// (temp file in `v1/tmp`, fsync, rename). For user data. Symlinks are
    /// followed here: `path` is what the user named.
    pub fn put_file_copy(&self, path: &Path) -> Result<(BlobDigest, u64)> {
        // Check before opening: opening a fifo would block.
        let meta = fs::metadata(path).map_err(io_err("inspect", path))?;
        if !meta.is_file() {
            return Err(Error::UnsupportedFile {
                path: path.to_path_buf(),
                kind: kind_of(&meta),
            });
        }
        let mut f = fs::File::open(path).map_err(io_err("open", path))?;
        self.put_reader_inner(&mut f, None, path)
    }

    /// Read blob `d`, re-hashing it.
    pub fn read_blob(&self, d: &BlobDigest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let bytes = fs::read(&path).map_err(|e| self.open_err(d, "blob", &path, e))?;
        let actual = Hash::of(&bytes);
        if actual != d.hash() {
            self.invalidate_stat_caches_quietly();
            return Err(Error::Corrupt {
                digest: d.to_string(),
                actual: actual.to_string(),
                path,
            });
        }
        Ok(bytes)
    }

    /// Re-hash blob `d` without holding it in memory; returns its size.
    pub fn verify_blob(&self, d: &BlobDigest) -> Result<u64> {
        let path = self.blob_path(d);
        let mut f = fs::File::open(&path).map_err(|e| self.open_err(d, "blob", &path, e))?;
        let (actual, n) = hash_reader(&mut f).map_err(io_err("read", &path))?;
        if actual != d.hash() {
            self.invalidate_stat_caches_quietly();
            return Err(Error::Corrupt {
                digest: d.to_string(),
                actual: actual.to_string(),
                path,
            });
        }
        Ok(n)
    }

    /// Open blob `d` for streaming; the caller must re-hash what it reads
    /// (see [`Store::verify_blob`]) if it matters.
    pub fn open_blob(&self, d: &BlobDigest) -> Result<fs::File> {
        let path = self.blob_path(d);
        fs::File::open(&path).map_err(|e| self.open_err(d, "blob", &path, e))
    }

    pub(crate) fn open_err(
        &self,
        d: &impl std::fmt::Display,
        what: &'static str,
        path: &Path,
        e: io::Error,
    ) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Missing {
                what,
                digest: d.to_string(),
                path: path.to_path_buf(),
            }
        } else {
            io_err("read", path)(e)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("store")).unwrap();
        (t, s)
    }

    /// Flip one byte of a blob file in place (blobs are 0444; chmod u+w first).
    pub(crate) fn corrupt(path: &Path) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut b = fs::read(path).unwrap();
        b[0] ^= 0x01;
        fs::write(path, b).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
    }

    #[test]
    fn blob_round_trip() {
        let (_t, s) = store();
        let d = s.put_bytes(b"hello").unwrap();
        assert_eq!(d.hash(), Hash::of(b"hello"));
        assert!(s.has_blob(&d));
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        assert_eq!(s.verify_blob(&d).unwrap(), 5);
        let mode = fs::metadata(s.blob_path(&d)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o444);
        // Idempotent.
        assert_eq!(s.put_bytes(b"hello").unwrap(), d);
        // The empty blob works too.
        let e = s.put_bytes(b"").unwrap();
        assert_eq!(s.read_blob(&e).unwrap(), b"");
    }

    #[test]
    fn corrupted_blob_is_detected_and_named() {
        let (_t, s) = store();
        let d = s.put_bytes(b"precious bytes").unwrap();
        corrupt(&s.blob_path(&d));
        for err in [s.read_blob(&d).unwrap_err(), s.verify_blob(&d).unwrap_err()] {
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&d.to_string()), "{msg}");
            let mut b = b"precious bytes".to_vec();
            b[0] ^= 1;
            assert!(msg.contains(&Hash::of(&b).to_string()), "{msg}");
        }
        // Putting the good bytes again repairs it.
        s.put_bytes(b"precious bytes").unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"precious bytes");
        corrupt(&s.blob_path(&d));
        s.put_reader(&b"precious bytes"[..]).unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"precious bytes");
    }

    #[test]
    fn missing_blob_is_missing() {
        let (_t, s) = store();
        let d = BlobDigest::from_hash(Hash::of(b"never stored"));
        assert!(!s.has_blob(&d));
        let err = s.read_blob(&d).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }));
        assert!(err.to_string().contains(&d.to_string()));
        assert!(matches!(s.verify_blob(&d), Err(Error::Missing { .. })));
    }

    #[test]
    fn put_file_copy_keeps_source_and_put_file_move_renames() {
        let (_t, s) = store();
        let user = tempfile::tempdir().unwrap();
        let src = user.path().join("data.csv");
        fs::write(&src, b"a,b\n1,2\n").unwrap();
        let (d, n) = s.put_file_copy(&src).unwrap();
        assert_eq!(n, 8);
        assert!(src.exists());
        assert_ne!(
            fs::metadata(&src).unwrap().ino(),
            fs::metadata(s.blob_path(&d)).unwrap().ino()
        );

        let scratch = s.scratch("out-").unwrap();
        let out = scratch.path().join("model.bin");
        fs::write(&out, b"weights").unwrap();
        let ino = fs::metadata(&out).unwrap().ino();
        let (d, n) = s.put_file_move(&out).unwrap();
        assert_eq!(n, 7);
        assert!(!out.exists());
        assert_eq!(fs::metadata(s.blob_path(&d)).unwrap().ino(), ino);
        assert_eq!(s.read_blob(&d).unwrap(), b"weights");

        // Moving identical content again removes the source, keeps the blob.
        fs::write(&out, b"weights").unwrap();
        assert_eq!(s.put_file_move(&out).unwrap().0, d);
        assert!(!out.exists());
        assert_eq!(fs::metadata(s.blob_path(&d)).unwrap().ino(), ino);
    }

    #[test]
    fn put_file_move_replaces_a_corrupt_blob() {
        let (_t, s) = store();
        let d = s.put_bytes(b"weights").unwrap();
        corrupt(&s.blob_path(&d));
        let scratch = s.scratch("out-").unwrap();
        let out = scratch.path().join("w");
        fs::write(&out, b"weights").unwrap();
        s.put_file_move(&out).unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"weights");
    }

    #[test]
    fn put_reader_expecting_refuses_and_stores_nothing() {
        let (_t, s) = store();
        let wrong = BlobDigest::from_hash(Hash::of(b"other"));
        let err = s.put_reader_expecting(&b"bytes"[..], &wrong).unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }));
        assert!(!s.has_blob(&BlobDigest::from_hash(Hash::of(b"bytes"))));
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn leftover_temp_files_are_never_blobs() {
        let (_t, s) = store();
        // A writer killed mid-way leaves a temp file named randomly in v1/tmp.
        let half = b"half a blob";
        fs::write(s.layout_dir().join("tmp/.blob-XYZ123"), half).unwrap();
        let d = BlobDigest::from_hash(Hash::of(half));
        assert!(!s.has_blob(&d));
        assert!(matches!(s.read_blob(&d), Err(Error::Missing { .. })));
        assert_eq!(
            fs::read_dir(s.layout_dir().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        // And a later put of the same content works.
        s.put_bytes(half).unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), half);
    }

    #[test]
    fn concurrent_puts_of_same_and_different_blobs() {
        let (_t, s) = store();
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let s = s.clone();
                    let big = &big;
                    sc.spawn(move || {
                        for _ in 0..3 {
                            assert_eq!(s.put_bytes(big).unwrap().hash(), Hash::of(big));
                            let (d, _) = s.put_reader(&big[..]).unwrap();
                            assert_eq!(d.hash(), Hash::of(big));
                            let own = format!("thread {i}");
                            let d = s.put_bytes(own.as_bytes()).unwrap();
                            assert_eq!(s.read_blob(&d).unwrap(), own.as_bytes());
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
        assert_eq!(
            s.read_blob(&BlobDigest::from_hash(Hash::of(&big))).unwrap(),
            big
        );
        assert_eq!(
            fs::read_dir(s.layout_dir().join("blobs/sha256"))
                .unwrap()
                .count(),
            9
        );
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn unsupported_source_is_named() {
        let (_t, s) = store();
        let dir = tempfile::tempdir().unwrap();
        let err = s.put_file_copy(dir.path()).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = s.put_file_copy(&fifo).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFile { kind: "fifo", .. }),
            "{err}"
        );
        let err = s.put_file_move(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("`{}`", dir.path().display())),
            "{err}"
        );
    }
}
