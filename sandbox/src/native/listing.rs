//! The listing-order variation of `repro check`: each input is copied
//! into a private tmpfs at its mount point, the entries of every directory
//! created so that listing it returns them in the reverse of the order the
//! plain bind mount gives.
//!
//! How tmpfs orders a listing depends on the kernel (newest first before
//! Linux 6.6, creation order since), so the copy first probes the fresh
//! tmpfs with two entries, then picks the creation order, and finally
//! reads every directory back and fails if its order is not the reverse
//! of the source's. File bytes (streamed, never whole in memory), modes,
//! owners and modification times are kept; the tmpfs is read-only at the
//! end. The copies live in memory and count against the step's memory
//! limit.
//!
//! Runs in the step's process as host root, in its own mount namespace,
//! before `pivot_root` (see the `init` module).

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};

/// The names of the probe files (removed before the copy).
const PROBE: [&str; 2] = [".repro-order-probe-a", ".repro-order-probe-b"];

/// Mount a tmpfs on `dst` holding a copy of the directory `src` whose
/// listings are reversed (see the module docs), read-only at the end.
pub(super) fn copy_input_reversed(src: &Path, dst: &Path) -> Result<(), String> {
    let meta =
        fs::symlink_metadata(src).map_err(|e| format!("cannot use `{}`: {e}", src.display()))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let data = format!(
        "mode={:o},uid={},gid={}",
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| format!("cannot mount a tmpfs on `{}`: {}", dst.display(), e.desc()))?;
    let newest_first = lists_newest_first(dst)?;
    copy_dir(src, dst, newest_first)?;
    set_mtime(dst, &meta)?;
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot make the copy of the input at `{}` read-only: {}",
            dst.display(),
            e.desc()
        )
    })
}

/// The names in `dir`, in the order the filesystem lists them.
fn listing(dir: &Path) -> Result<Vec<std::ffi::OsString>, String> {
    let err = |e: std::io::Error| format!("cannot list `{}`: {e}", dir.display());
    fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.file_name()).map_err(err))
        .collect()
}

/// Whether the (empty) tmpfs directory `dir` lists its newest entry
/// first: create two files, read the order, remove them.
fn lists_newest_first(dir: &Path) -> Result<bool, String> {
    for name in PROBE {
        let p = dir.join(name);
        fs::File::create(&p).map_err(|e| format!("cannot create `{}`: {e}", p.display()))?;
    }
    let order = listing(dir)?;
    for name in PROBE {
        let p = dir.join(name);
        fs::remove_file(&p).map_err(|e| format!("cannot remove `{}`: {e}", p.display()))?;
    }
    Ok(order.first().is_some_and(|n| n == PROBE[1]))
}

/// The order to create `source_order`'s entries in so that a directory
/// listing (newest first or oldest first) returns them reversed.
fn creation_order<T: Clone>(source_order: &[T], newest_first: bool) -> Vec<T> {
    let mut order = source_order.to_vec();
    if !newest_first {
        order.reverse();
    }
    order
}

/// Copy the contents of the directory `src` into the existing empty
/// directory `dst`, recursively, reversing each listing.
fn copy_dir(src: &Path, dst: &Path, newest_first: bool) -> Result<(), String> {
    let names = listing(src)?;
    for name in creation_order(&names, newest_first) {
        let (from, to) = (src.join(&name), dst.join(&name));
        let meta = fs::symlink_metadata(&from)
            .map_err(|e| format!("cannot use `{}`: {e}", from.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| format!("cannot create `{}`: {e}", to.display()))?;
            copy_dir(&from, &to, newest_first)?;
            set_owner_and_mode(&to, &meta)?;
            set_mtime(&to, &meta)?;
        } else if ft.is_file() {
            copy_file(&from, &to)?;
            set_owner_and_mode(&to, &meta)?;
            set_mtime(&to, &meta)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from)
                .map_err(|e| format!("cannot read the link `{}`: {e}", from.display()))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| format!("cannot create the link `{}`: {e}", to.display()))?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| format!("cannot set the owner of `{}`: {e}", to.display()))?;
        } else {
            return Err(format!(
                "cannot copy `{}` for the listing-order variation: not a file, directory or symlink",
                from.display()
            ));
        }
    }
    let got = listing(dst)?;
    let mut want = names;
    want.reverse();
    if got != want {
        return Err(format!(
            "the copy of `{}` does not list its entries in reverse order (this kernel's tmpfs orders listings in an unexpected way)",
            src.display()
        ));
    }
    Ok(())
}

/// Stream `from` into a new file `to`.
fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    let mut r =
        fs::File::open(from).map_err(|e| format!("cannot open `{}`: {e}", from.display()))?;
    let mut w = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| format!("cannot create `{}`: {e}", to.display()))?;
    // `io::copy` between files uses copy_file_range/sendfile: no
    // whole-file buffer.
    std::io::copy(&mut r, &mut w).map_err(|e| {
        format!(
            "cannot copy `{}` to `{}`: {e}",
            from.display(),
            to.display()
        )
    })?;
    Ok(())
}

/// The owner, then the mode (a `chown` clears set-id bits), of `meta`.
fn set_owner_and_mode(to: &Path, meta: &fs::Metadata) -> Result<(), String> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| format!("cannot set the owner of `{}`: {e}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| format!("cannot set the mode of `{}`: {e}", to.display()))
}

/// The access and modification times of `meta` on `to` (a file or a
/// directory).
fn set_mtime(to: &Path, meta: &fs::Metadata) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot set the times of `{}`: {e}", to.display());
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().map_err(err)?)
        .set_modified(meta.modified().map_err(err)?);
    fs::File::open(to)
        .and_then(|f| f.set_times(times))
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_order_yields_the_reverse_listing_either_way() {
        let source = ["b", "c", "a"];
        // Newest first: create in the source order, list the last first.
        let mut listed = creation_order(&source, true);
        listed.reverse();
        assert_eq!(listed, ["a", "c", "b"]);
        // Oldest first: the creation order is the listing.
        assert_eq!(creation_order(&source, false), ["a", "c", "b"]);
    }
}
