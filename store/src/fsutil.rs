//! Filesystem helpers shared by the store's modules: durable directory
//! syncs, removal, and naming a file's type in messages. Depends only on
//! [`crate::error`]-level items (see the module order in the crate docs).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{io_err, Result};

/// fsync the directory holding `path`, so a rename into it is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
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
