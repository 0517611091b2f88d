//! Filesystem helpers shared by the store's modules: durable atomic
//! writes, durable directory creation, directory syncs, removal, and naming
//! a file's type in messages. Uses only `error` (see the module order in
//! the crate docs).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{io_err, Error, Result};

/// The buffer between a [`write_atomic_with`] callback and its temp file.
const WRITE_BUF: usize = 64 * 1024;

/// Write `bytes` to `dest` atomically and durably, for a path outside any
/// store (inside one, use [`Store::write_atomic`](crate::Store::write_atomic)).
///
/// The bytes go to a temp file (`.w-XXXXXX`) in `dest`'s own directory,
/// which is fsynced, renamed over `dest` (replacing what was there) and
/// followed by an fsync of the directory: after a crash `dest` holds either
/// its old content or the new one, never a part. Missing parent directories
/// of `dest` are created, each made durable the same way. The file is
/// created with the mode [`std::fs::write`] would give it (`0666` less the
/// umask) and replaces `dest` as a new inode.
///
/// Errors are [`Error::Io`], naming what was done and the path (the temp
/// file for a failed write or fsync, `dest` for the rename); on any error
/// `dest` is untouched and no temp file is left.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(dest, |w| -> Result<()> {
        w.write_all(bytes)
            .map_err(io_err("write a temporary file for", dest))
    })
}

/// [`write_atomic`] with the content streamed by `write`, for outputs too
/// large to hold in memory (e.g. a bundle export).
///
/// `write` is given a buffered writer to the temp file; its `Ok` value is
/// returned once the file is in place. If `write` fails, its error is
/// returned, the temp file is removed and `dest` keeps its old content (or
/// stays missing). `E` is the callback's error type: any type a store
/// [`Error`] converts into (`anyhow::Error`, `Box<dyn std::error::Error>`,
/// or [`Error`] itself).
pub fn write_atomic_with<T, E>(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::result::Result<T, E>,
) -> std::result::Result<T, E>
where
    E: From<Error>,
{
    let dir = parent_dir(dest);
    create_dir_durable(dir)?;
    write_atomic_in(dir, dest, Some(0o666), write)
}

/// The atomic write itself: a temp file in `tmp_dir` (on `dest`'s
/// filesystem), filled by `write` through a buffer, fsynced, renamed to
/// `dest`, then an fsync of `dest`'s directory. `mode`: the mode the temp
/// file is created with (less the umask); `None` for the `tempfile`
/// default, `0600`.
pub(crate) fn write_atomic_in<T, E>(
    tmp_dir: &Path,
    dest: &Path,
    mode: Option<u32>,
    write: impl FnOnce(&mut dyn Write) -> std::result::Result<T, E>,
) -> std::result::Result<T, E>
where
    E: From<Error>,
{
    let mut builder = tempfile::Builder::new();
    builder.prefix(".w-");
    if let Some(mode) = mode {
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    let tmp = builder
        .tempfile_in(tmp_dir)
        .map_err(io_err("create a temporary file in", tmp_dir))?;
    let tmp_path = tmp.path().to_path_buf();
    // On any early return the temp file is dropped, which removes it.
    let mut w = io::BufWriter::with_capacity(WRITE_BUF, tmp);
    let value = write(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(|e| io_err("write", &tmp_path)(e.into_error()))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("fsync", &tmp_path))?;
    tmp.persist(dest)
        .map_err(|e| io_err("rename a temporary file to", dest)(e.error))?;
    sync_parent(dest)?;
    Ok(value)
}

/// The directory holding `path`: its parent, `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create directory `dir` and any missing parents (like `mkdir -p`),
/// fsyncing the parent of each one made so that it survives a crash. An
/// existing directory is left as it is; a file in the way is an error
/// naming it.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io_err("create directory", cur)(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a directory is in the way",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(io_err("inspect", cur)(e)),
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Made by someone else meanwhile: as good.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(io_err("create directory", d)(e)),
        }
        sync_parent(d)?;
    }
    Ok(())
}

/// fsync the directory holding `path`, so a rename into it is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    sync_dir(parent_dir(path))
}

/// fsync directory `dir`, so entries made or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir).map_err(io_err("open directory", dir))?;
    d.sync_all().map_err(io_err("fsync directory", dir))
}

/// Remove the file `path`; `false` if it was not there.
pub(crate) fn remove_file_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Remove a file or a directory tree, making read-only directories (an
/// unpacked image root keeps the image's modes) writable when that is what
/// stands in the way.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.is_dir() {
        return remove_file_if_present(path).map(|_| ());
    }
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::PermissionDenied => {
            return Err(io_err("remove", path)(e));
        }
        Err(_) => {}
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("make writable", &dir))?;
        let rd = fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        for entry in rd {
            let entry = entry.map_err(io_err("list", &dir))?;
            if entry
                .file_type()
                .map_err(io_err("inspect", entry.path()))?
                .is_dir()
            {
                stack.push(entry.path());
            }
        }
    }
    fs::remove_dir_all(path).map_err(io_err("remove", path))
}

/// What `meta` describes, for messages: "regular file", "symlink", "fifo", ...
pub(crate) fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_socket() {
        "socket"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_file() {
        "regular file"
    } else {
        "file of unknown type"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_writes_replaces_and_leaves_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("out.json");
        write_atomic(&dest, b"one").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        write_atomic(&dest, b"two, longer").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two, longer");
        assert_eq!(names(t.path()), ["out.json"]);
    }

    #[test]
    fn write_atomic_creates_missing_parents() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("a/b/c/out");
        write_atomic(&dest, b"x").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"x");
        assert_eq!(names(&t.path().join("a/b/c")), ["out"]);
    }

    #[test]
    fn write_atomic_with_streams_and_returns_the_callbacks_value() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("big");
        let n = write_atomic_with(&dest, |w| -> Result<usize> {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes())
                    .map_err(io_err("write", "big"))?;
            }
            Ok(1000)
        })
        .unwrap();
        assert_eq!(n, 1000);
        let bytes = fs::read(&dest).unwrap();
        assert_eq!(bytes.len(), 4000);
        assert_eq!(&bytes[4 * 999..], &999u32.to_le_bytes());
        assert_eq!(names(t.path()), ["big"]);
    }

    /// A callback's own error type, to show any `E: From<Error>` works.
    #[derive(Debug)]
    enum Failed {
        Callback,
        Store,
    }

    impl From<Error> for Failed {
        fn from(_: Error) -> Failed {
            Failed::Store
        }
    }

    #[test]
    fn a_failing_callback_keeps_the_old_content_and_leaves_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("out");
        write_atomic(&dest, b"old").unwrap();
        let err = write_atomic_with(&dest, |w| -> std::result::Result<(), Failed> {
            // More than the buffer, so some of it reached the temp file.
            w.write_all(&vec![7u8; 3 * WRITE_BUF]).unwrap();
            Err(Failed::Callback)
        })
        .unwrap_err();
        assert!(matches!(err, Failed::Callback), "{err:?}");
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(t.path()), ["out"]);
        // Nor is a missing `dest` made.
        let fresh = t.path().join("fresh");
        assert!(write_atomic_with(&fresh, |_| Err::<(), _>(Failed::Callback)).is_err());
        assert_eq!(names(t.path()), ["out"]);
    }

    #[test]
    fn a_file_in_the_way_of_a_parent_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"").unwrap();
        let err = write_atomic(&t.path().join("a/b/out"), b"x").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&t.path().join("a").display().to_string()),
            "{msg}"
        );
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
