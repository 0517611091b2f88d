//! Root filesystems for the native sandbox, unpacked from an image's layers
//! in the store and cached there.
//!
//! # Layout
//!
//! ```text
//! <store>/v1/rootfs/<manifest hex>/root/             the unpacked tree
//! <store>/v1/rootfs/<manifest hex>/listing           its canonical listing
//! <store>/v1/rootfs/<manifest hex>/listing.sha256    `sha256:<hex>` of the listing
//! <store>/v1/tmp/<owner>/rootfs-*/                   unpacking in progress (in this process's scratch)
//! ```
//!
//! [`prepare_rootfs`] unpacks into a fresh directory in the process's scratch
//! ([`Store::tmp_dir`], under `v1/tmp/`), writes
//! the listing, and renames the whole directory into place, so another
//! process sees either nothing or a complete entry. When two processes race,
//! the loser deletes its copy and uses the winner's (both unpacked the same
//! bytes). A cache hit only re-hashes the listing file (a few megabytes for
//! a full Debian image) against `listing.sha256` and checks that `root/` is
//! there; [`check_rootfs`] re-walks and re-hashes the whole tree. The
//! native sandbox checks each image once per process with
//! [`check_rootfs_remembered`]: in full the first time in a boot, then by
//! `lstat` only while nothing in the tree changed since the full check.
//!
//! # Unpacking
//!
//! Layers are applied base first. Each layer blob is re-hashed while it is
//! read; a mismatch (or a size that differs from the manifest) fails the
//! unpacking and nothing is left in the cache. Media types: plain tar and
//! gzip (OCI and Docker names); zstd is refused with a clear error.
//!
//! - Whiteouts (`.wh.<name>`) delete `<name>` from lower layers; the opaque
//!   marker (`.wh..wh..opq`) empties its directory of everything that lower
//!   layers put there (entries of the same layer stay, in any order).
//! - Regular files, directories, symlinks (the target is kept as is and never
//!   followed), and hard links to an entry of the same or a lower layer.
//!   Device nodes, fifos and sockets are skipped: the sandbox supplies its
//!   own `/dev`. Extended attributes (including file capabilities) are not
//!   unpacked.
//! - **Containment.** Every file is created through a capability handle
//!   ([`cap_std::fs::Dir`]) on the unpacked root, one path component at a
//!   time, without following symlinks. An entry (or a hard link target)
//!   whose path is absolute, contains `..`, or passes through a symlink is
//!   refused with an error naming the layer and the entry; it is never
//!   silently skipped. Docker follows a symlink in the middle of a path as
//!   long as it stays inside the root; layers written by `docker build` and
//!   other snapshotters never need that, because they record the real path.
//! - **Modes.** Permission bits are kept; setuid, setgid and sticky bits are
//!   cleared (the sandbox also mounts the root `nosuid`). Directory modes are
//!   set after all layers are applied, so a `0555` directory can still be
//!   filled by a later entry or layer.
//! - **Owners.** Everything belongs to the user who unpacked it (root on a
//!   normal installation); the image's owners are not applied. The step runs
//!   as [`UID`](crate::UID) `65534`, so the mode bits decide what it may read
//!   or run, exactly as in Docker for the usual image whose files belong to
//!   root. Files that Docker would give to another user (e.g. a home
//!   directory of `1000:1000` with mode `0700`) differ: under Docker the
//!   step cannot read them either, here it cannot write them; neither is
//!   the step's user.
//! - **Mount points.** After the last layer, the directories the native
//!   sandbox mounts on (`/dev`, `/proc`, `/tmp`, `/repro`, `/repro/in`,
//!   `/repro/out`) are created, mode `0755`, where the image has nothing at
//!   that path (an image's own file or symlink there is left alone). They
//!   are part of the tree and of its listing like any other directory. With
//!   them the sandbox binds the cached root as it is; without them (a root
//!   unpacked by an older version) it must lay a throwaway overlay on it
//!   for every step, which costs time.
//! - **Times.** Every modification time is set to 0 (the Unix epoch).
//! - **Durability.** The listing files are fsynced before the rename, the
//!   unpacked files are not (that would cost seconds for a large image). A
//!   crash just after the rename can leave a file whose data never reached
//!   the disk; [`check_rootfs`] finds it.
//! - **Races.** Concurrent preparations of one image each unpack in full
//!   and the first rename wins; nothing is locked. A process killed while
//!   unpacking leaves a `rootfs-*` directory in its process's scratch that
//!   is never read, and that the next command taking the store lock removes.
//!
//! # The listing
//!
//! One line per entry after a header line (`repro-rootfs-listing 1`), sorted
//! by the bytes of the path (relative to the root, `.` for the root itself):
//!
//! ```text
//! <path> dir <mode>
//! <path> file <mode> <size> sha256:<hex>
//! <path> hardlink <mode> <size> <first path of the same file>
//! <path> symlink <mode> <target>
//! ```
//!
//! `<mode>` is four octal digits. Paths and targets escape `%`, spaces,
//! control characters and non-ASCII bytes as `%XX`. A file with several
//! names is listed as `file` under the first name and `hardlink` under the
//! others. The digest of the listing is [`Rootfs::digest`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, OpenOptionsFollowExt, SystemTimeSpec};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt, PermissionsExt as _};
use repro_store::image::media_type;
use repro_store::{BlobDigest, Hash, ImageDigest, Layer, Store};
use sha2::{Digest as _, Sha256};

/// A `Result` with the [`RootfsError`] of this module.
pub type Result<T, E = RootfsError> = std::result::Result<T, E>;

/// The first line of every listing; change it when the format changes.
const LISTING_HEADER: &str = "repro-rootfs-listing 1";

/// Buffer size for reading layers and hashing files.
const BUF: usize = 256 * 1024;

/// Show at most this many differences in [`RootfsError::Modified`].
const MAX_SHOWN_CHANGES: usize = 10;

/// An unpacked root filesystem in the store's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// The image it was unpacked from.
    pub image: ImageDigest,
    /// The root directory of the tree (`<store>/v1/rootfs/<hex>/root`).
    pub path: PathBuf,
    /// The SHA-256 of the canonical listing of the tree (see the module docs).
    pub digest: Hash,
}

impl Rootfs {
    /// The cache entry holding [`Rootfs::path`] and the listing; deleting it
    /// makes the next [`prepare_rootfs`] unpack the image again.
    pub fn entry_dir(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }
}

/// Why a root filesystem could not be prepared or checked.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The image or one of its blobs could not be read from the store.
    #[error("cannot read image `{image}` from the store: {source}")]
    Store {
        /// The image's manifest digest.
        image: ImageDigest,
        /// What the store said.
        #[source]
        source: repro_store::Error,
    },

    /// A layer's media type cannot be unpacked.
    #[error("cannot unpack layer `{layer}` of image `{image}`: its media type `{media_type}` is not supported\nhint: {hint}")]
    UnsupportedMediaType {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The layer.
        layer: BlobDigest,
        /// Its media type.
        media_type: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// A layer blob does not hash to its digest (or has the wrong size).
    #[error("layer `{layer}` of image `{image}` is corrupt: {why}\nhint: delete `{}` and re-import the image", path.display())]
    CorruptLayer {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The layer.
        layer: BlobDigest,
        /// What differs.
        why: String,
        /// The blob's file in the store.
        path: PathBuf,
    },

    /// A layer is not a readable tar archive (or does not decompress).
    #[error("cannot read layer `{layer}` of image `{image}`: {source}")]
    MalformedLayer {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The layer.
        layer: BlobDigest,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A layer entry would write outside the root, or through a symlink.
    #[error("layer `{layer}` of image `{image}` has an entry `{entry}` that {why}; refused\nhint: the image is malformed or malicious; rebuild it from a trusted source")]
    UnsafeEntry {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The layer.
        layer: BlobDigest,
        /// The entry's path as written in the layer.
        entry: String,
        /// What it tries to do, e.g. "writes through the symlink `etc`".
        why: String,
    },

    /// An entry could not be unpacked.
    #[error("cannot unpack `{entry}` from layer `{layer}` of image `{image}`: {why}")]
    Entry {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The layer.
        layer: BlobDigest,
        /// The entry's path as written in the layer.
        entry: String,
        /// What went wrong.
        why: String,
    },

    /// A filesystem operation on the cache failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A cache entry is incomplete or its listing does not match its hash.
    #[error("the cached root of image `{image}` at `{}` is damaged: {why}\nhint: delete `{}` and it will be unpacked again", dir.display(), dir.display())]
    Damaged {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The cache entry.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },

    /// The unpacked tree differs from its listing.
    #[error("the unpacked root of image `{image}` was modified: {}\nhint: delete `{}` and it will be unpacked again", describe_changes(changes, *total), dir.display())]
    Modified {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The cache entry.
        dir: PathBuf,
        /// The first differences, e.g. "`usr/bin/python3` changed".
        changes: Vec<String>,
        /// How many paths differ in all.
        total: usize,
    },
}

fn describe_changes(changes: &[String], total: usize) -> String {
    let mut s = changes.join(", ");
    if total > changes.len() {
        s.push_str(&format!(" and {} more", total - changes.len()));
    }
    s
}

fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.into();
    move |source| RootfsError::Io {
        action,
        path,
        source,
    }
}

/// Unpack (or find in the cache) the root filesystem of `image`; returns
/// the directory and the digest of its listing.
///
/// A cache hit costs one read and hash of the listing file. A miss applies
/// every layer (see the module docs) and moves the result into the cache
/// atomically; concurrent calls for the same image, in threads or
/// processes, all succeed with the same result.
pub fn prepare_rootfs(store: &Store, image: &ImageDigest) -> Result<Rootfs> {
    let info = store
        .get_image(image)
        .map_err(|source| RootfsError::Store {
            image: *image,
            source,
        })?;
    let cache = store.ns_dir(repro_store::Ns::Rootfs);
    let entry = cache.join(image.hex());
    if entry.exists() {
        return open_cached(image, &entry);
    }
    fs::create_dir_all(&cache).map_err(io_err("create directory", &cache))?;
    let tmp = TempEntry::create(&store.tmp_dir(), image)?;
    let root_path = tmp.path.join("root");
    fs::create_dir(&root_path).map_err(io_err("create directory", &root_path))?;
    let root = Dir::open_ambient_dir(&root_path, ambient_authority())
        .map_err(io_err("open", &root_path))?;
    let mut unpacker = Unpacker {
        image: *image,
        root: &root,
        dir_modes: BTreeMap::new(),
        buf: vec![0u8; BUF],
    };
    for layer in &info.layers {
        unpacker.apply_layer(store, layer)?;
    }
    let dir_modes = std::mem::take(&mut unpacker.dir_modes);
    add_mount_points(&root).map_err(io_err("create the mount points in", &root_path))?;
    finish_dirs(&root, &[], &dir_modes).map_err(io_err("set the modes in", &root_path))?;
    let root_mode = dir_modes.get(&Vec::new()).copied().unwrap_or(0o755);
    fs::set_permissions(&root_path, fs::Permissions::from_mode(root_mode))
        .map_err(io_err("set the mode of", &root_path))?;
    fs::File::open(&root_path)
        .and_then(|f| {
            f.set_times(
                fs::FileTimes::new()
                    .set_accessed(UNIX_EPOCH)
                    .set_modified(UNIX_EPOCH),
            )
        })
        .map_err(io_err("set the times of", &root_path))?;
    let listing = listing(&root).map_err(io_err("list", &root_path))?;
    drop(root);
    let digest = Hash::of(&listing);
    write_synced(&tmp.path.join("listing"), &listing)?;
    write_synced(
        &tmp.path.join("listing.sha256"),
        format!("{digest}\n").as_bytes(),
    )?;
    match fs::rename(&tmp.path, &entry) {
        Ok(()) => {
            tmp.disarm();
            if let Ok(d) = fs::File::open(&cache) {
                // Make the rename durable; failing to is not worth an error.
                let _ = d.sync_all();
            }
            Ok(Rootfs {
                image: *image,
                path: entry.join("root"),
                digest,
            })
        }
        Err(_) if entry.is_dir() => {
            // Another process or thread won the race: use its entry.
            drop(tmp);
            open_cached(image, &entry)
        }
        Err(e) => Err(io_err("move into the cache", &entry)(e)),
    }
}

/// Re-walk and re-hash the unpacked tree and compare it with the listing
/// recorded when it was unpacked. A difference is
/// [`RootfsError::Modified`], naming the paths.
pub fn check_rootfs(root: &Rootfs) -> Result<()> {
    let entry = root.entry_dir().to_path_buf();
    let listing_path = entry.join("listing");
    let recorded = fs::read(&listing_path).map_err(|e| RootfsError::Damaged {
        image: root.image,
        dir: entry.clone(),
        why: format!("cannot read `{}`: {e}", listing_path.display()),
    })?;
    if Hash::of(&recorded) != root.digest {
        return Err(RootfsError::Damaged {
            image: root.image,
            dir: entry,
            why: format!("its listing no longer hashes to `{}`", root.digest),
        });
    }
    let dir = Dir::open_ambient_dir(&root.path, ambient_authority()).map_err(|e| {
        RootfsError::Damaged {
            image: root.image,
            dir: entry.clone(),
            why: format!("cannot open `{}`: {e}", root.path.display()),
        }
    })?;
    let actual = listing(&dir).map_err(io_err("list", &root.path))?;
    if actual == recorded {
        return Ok(());
    }
    let changes = diff_listings(&recorded, &actual);
    let total = changes.len().max(1);
    let mut shown: Vec<String> = changes.into_iter().take(MAX_SHOWN_CHANGES).collect();
    if shown.is_empty() {
        shown.push("its listing differs".to_string());
    }
    Err(RootfsError::Modified {
        image: root.image,
        dir: entry,
        changes: shown,
        total,
    })
}

/// [`check_rootfs`], skipped when this root passed it earlier in this boot
/// and no entry of it has changed since as far as `lstat` tells: the same
/// paths, kinds, modes, owners, inodes, sizes, modification and change
/// times, and symlink targets. A write to a file, a `chmod`, a rename, a
/// new or removed entry all change one of these (the change time cannot be
/// set back short of changing the clock), so this walks the tree without
/// reading any file. The pass is remembered in `dir` (a directory only
/// this user may write to; see `NativeSandbox::new_with_runtime_cache`),
/// keyed by the kernel's boot id, the image and the listing's digest; a
/// pass is not remembered while an entry changed less than
/// [`RACY_SECONDS`] ago (timestamps are coarse: a change in the same tick
/// could go unseen). Only a digest of the `lstat` data is kept.
pub fn check_rootfs_remembered(root: &Rootfs, dir: &Path) -> Result<()> {
    let file = dir.join(format!("{}.check", root.image.hex()));
    // Only the digest of the state is kept (that of a big image is
    // megabytes).
    let state = stat_state(root).map(|(s, newest)| (format!("{}\n", Hash::of(&s)), newest));
    if let Some((state, _)) = &state {
        if fs::read(&file).is_ok_and(|b| b == state.as_bytes()) {
            return Ok(());
        }
    }
    check_rootfs(root)?;
    if let Some((state, newest)) = state {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if newest < now - RACY_SECONDS {
            static WRITES: AtomicU64 = AtomicU64::new(0);
            let tmp = dir.join(format!(
                ".{}.{}.{}",
                root.image.hex(),
                std::process::id(),
                WRITES.fetch_add(1, Ordering::Relaxed)
            ));
            if fs::write(&tmp, state).is_err() || fs::rename(&tmp, &file).is_err() {
                let _ = fs::remove_file(&tmp);
            }
        }
    }
    Ok(())
}

/// Entries changed less than this many seconds before a check are not
/// vouched for by their `lstat` (see [`check_rootfs_remembered`]).
pub const RACY_SECONDS: i64 = 2;

/// What [`check_rootfs_remembered`] compares: the boot, the root and the
/// `lstat` of every entry, and the newest change time among them; `None`
/// when the tree cannot be walked (the full check then says why).
fn stat_state(root: &Rootfs) -> Option<(Vec<u8>, i64)> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let mut out = format!(
        "repro-rootfs-stat 1\nboot {}\nimage {}\nlisting {}\nroot ",
        boot.trim(),
        root.image,
        root.digest
    )
    .into_bytes();
    escape(root.path.as_os_str().as_bytes(), &mut out);
    out.push(b'\n');
    let dir = Dir::open_ambient_dir(&root.path, ambient_authority()).ok()?;
    let mut newest = i64::MIN;
    let meta = dir.dir_metadata().ok()?;
    stat_line(b".", &meta, None, &mut out, &mut newest);
    stat_walk(&dir, &mut Vec::new(), &mut out, &mut newest).ok()?;
    Some((out, newest))
}

fn stat_line(
    path: &[u8],
    m: &cap_std::fs::Metadata,
    target: Option<&[u8]>,
    out: &mut Vec<u8>,
    newest: &mut i64,
) {
    escape(path, out);
    out.extend_from_slice(
        format!(
            " {:o} {} {} {} {} {} {}.{} {}.{}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
        .as_bytes(),
    );
    if let Some(t) = target {
        out.push(b' ');
        escape(t, out);
    }
    out.push(b'\n');
    *newest = (*newest).max(m.ctime()).max(m.mtime());
}

/// The `lstat` lines of everything under `d`, by name within each
/// directory, depth first.
fn stat_walk(d: &Dir, prefix: &mut Vec<u8>, out: &mut Vec<u8>, newest: &mut i64) -> io::Result<()> {
    let mut names: Vec<OsString> = d
        .entries()?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name.as_bytes());
        let meta = d.symlink_metadata(&name)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = d.read_link_contents(&name)?.into_os_string().into_vec();
            stat_line(prefix, &meta, Some(&target), out, newest);
        } else {
            stat_line(prefix, &meta, None, out, newest);
        }
        if ft.is_dir() {
            let sub = d.open_dir_nofollow(&name)?;
            stat_walk(&sub, prefix, out, newest)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// Use an existing cache entry after the cheap check.
fn open_cached(image: &ImageDigest, entry: &Path) -> Result<Rootfs> {
    let damaged = |why: String| RootfsError::Damaged {
        image: *image,
        dir: entry.to_path_buf(),
        why,
    };
    let sum_path = entry.join("listing.sha256");
    let sum = fs::read_to_string(&sum_path)
        .map_err(|e| damaged(format!("cannot read `{}`: {e}", sum_path.display())))?;
    let expected: Hash = sum.trim_end().parse().map_err(|e| {
        damaged(format!(
            "`{}` does not hold a digest: {e}",
            sum_path.display()
        ))
    })?;
    let listing_path = entry.join("listing");
    let file = fs::File::open(&listing_path)
        .map_err(|e| damaged(format!("cannot read `{}`: {e}", listing_path.display())))?;
    let (actual, _) = Hash::of_reader(BufReader::with_capacity(BUF, file))
        .map_err(|e| damaged(format!("cannot read `{}`: {e}", listing_path.display())))?;
    if actual != expected {
        return Err(damaged(format!(
            "its listing hashes to `{actual}`, not `{expected}`"
        )));
    }
    let path = entry.join("root");
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(damaged("its `root` directory is missing".to_string())),
    }
    Ok(Rootfs {
        image: *image,
        path,
        digest: expected,
    })
}

/// Write `bytes` to a new file and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("write", path))
}

/// A directory under `v1/tmp` that is removed on drop unless disarmed.
struct TempEntry {
    path: PathBuf,
    armed: bool,
}

impl TempEntry {
    fn create(tmp: &Path, image: &ImageDigest) -> Result<TempEntry> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(tmp).map_err(io_err("create directory", tmp))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!(
                "rootfs-{}-{}-{n}-{nanos}",
                image.short(),
                std::process::id()
            );
            let path = tmp.join(name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempEntry { path, armed: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create directory", &path)(e)),
            }
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if self.armed {
            remove_tree(&self.path);
        }
    }
}

/// Remove a tree, making its directories writable first if a plain removal
/// fails (an unprivileged user cannot empty a `0555` directory). Best effort.
fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() {
        return;
    }
    fn make_writable(path: &Path) {
        if let Ok(m) = fs::symlink_metadata(path) {
            if m.is_dir() {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
                if let Ok(entries) = fs::read_dir(path) {
                    for e in entries.flatten() {
                        make_writable(&e.path());
                    }
                }
            }
        }
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

/// How a layer blob is compressed.
enum Compression {
    None,
    Gzip,
}

fn compression(image: &ImageDigest, layer: &Layer) -> Result<Compression> {
    let mt = layer.media_type.as_str();
    let unsupported = |hint: &'static str| RootfsError::UnsupportedMediaType {
        image: *image,
        layer: layer.digest,
        media_type: mt.to_string(),
        hint,
    };
    if mt == media_type::OCI_LAYER_TAR
        || mt == media_type::DOCKER_LAYER_TAR
        || mt == "application/vnd.oci.image.layer.nondistributable.v1.tar"
    {
        Ok(Compression::None)
    } else if mt == media_type::OCI_LAYER_GZIP
        || mt == media_type::DOCKER_LAYER_GZIP
        || mt == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        || mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    {
        Ok(Compression::Gzip)
    } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
        Err(unsupported(
            "zstd layers are not supported yet; rebuild or convert the image with gzip or uncompressed layers, or use `--sandbox docker`",
        ))
    } else {
        Err(unsupported(
            "only tar and gzip-compressed tar layers can be unpacked; use `--sandbox docker`",
        ))
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// A layer path split into its components: relative, no `.`, no `..`.
type Components = Vec<OsString>;

/// Why a path from a layer cannot be used.
enum BadPath {
    Absolute,
    DotDot,
}

/// Split a path from a tar header into components, refusing absolute
/// paths and `..`. Empty and `.` components are dropped (`./etc//x` is
/// `etc/x`); no components at all means the root itself.
fn components(raw: &[u8]) -> std::result::Result<Components, BadPath> {
    if raw.first() == Some(&b'/') {
        return Err(BadPath::Absolute);
    }
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(BadPath::DotDot),
            _ => out.push(OsString::from_vec(part.to_vec())),
        }
    }
    Ok(out)
}

/// The canonical `a/b/c` form of components, used as map keys.
fn key(comps: &[OsString]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            k.push(b'/');
        }
        k.extend_from_slice(c.as_bytes());
    }
    k
}

fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// An entry-level failure, turned into a [`RootfsError`] by the caller
/// who knows the layer and the entry.
enum EntryFail {
    /// The entry tries to leave the root or write through a symlink.
    Unsafe(String),
    /// Anything else.
    Other(String),
}

impl From<io::Error> for EntryFail {
    fn from(e: io::Error) -> Self {
        EntryFail::Other(e.to_string())
    }
}

type EntryResult<T> = std::result::Result<T, EntryFail>;

struct Unpacker<'a> {
    image: ImageDigest,
    root: &'a Dir,
    /// Declared modes of directories, by key; applied at the end.
    dir_modes: BTreeMap<Vec<u8>, u32>,
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn apply_layer(&mut self, store: &Store, layer: &Layer) -> Result<()> {
        let compression = compression(&self.image, layer)?;
        let blob_path = store.blob_path(&layer.digest);
        let file = store
            .open_blob(&layer.digest)
            .map_err(|source| RootfsError::Store {
                image: self.image,
                source,
            })?;
        let mut hashing = HashingReader {
            inner: file,
            hasher: Sha256::new(),
            n: 0,
        };
        let entries_result = {
            let buffered = BufReader::with_capacity(BUF, &mut hashing);
            let reader: Box<dyn Read + '_> = match compression {
                Compression::None => Box::new(buffered),
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            };
            let mut archive = tar::Archive::new(reader);
            self.apply_entries(&mut archive, layer)
        };
        // Hash the rest of the blob (tar padding, gzip trailer), then check
        // the digest before reporting anything the bytes may have caused:
        // a corrupt blob is named as such, not as a strange entry.
        let drained = io::copy(&mut hashing, &mut io::sink());
        let actual = Hash(hashing.hasher.finalize().into());
        let n = hashing.n;
        if drained.is_ok() && (actual != layer.digest.hash() || n != layer.size) {
            let why = if actual != layer.digest.hash() {
                format!("its bytes hash to `{actual}`")
            } else {
                format!("it is {n} bytes but the manifest says {}", layer.size)
            };
            return Err(RootfsError::CorruptLayer {
                image: self.image,
                layer: layer.digest,
                why,
                path: blob_path,
            });
        }
        entries_result?;
        drained.map_err(io_err("read", &blob_path))?;
        Ok(())
    }

    fn apply_entries<R: Read>(
        &mut self,
        archive: &mut tar::Archive<R>,
        layer: &Layer,
    ) -> Result<()> {
        let image = self.image;
        let malformed = |source: io::Error| RootfsError::MalformedLayer {
            image,
            layer: layer.digest,
            source,
        };
        // Everything this layer has put in place (and its parents), so that
        // an opaque marker only removes what lower layers left.
        let mut this_layer: HashSet<Vec<u8>> = HashSet::new();
        let mut opaque: Vec<Components> = Vec::new();
        for entry in archive.entries().map_err(malformed)? {
            let mut entry = entry.map_err(malformed)?;
            let raw = entry.path_bytes().into_owned();
            let fail = |f: EntryFail| match f {
                EntryFail::Unsafe(why) => RootfsError::UnsafeEntry {
                    image,
                    layer: layer.digest,
                    entry: show(&raw),
                    why,
                },
                EntryFail::Other(why) => RootfsError::Entry {
                    image,
                    layer: layer.digest,
                    entry: show(&raw),
                    why,
                },
            };
            let comps = match components(&raw) {
                Ok(c) => c,
                Err(BadPath::Absolute) => {
                    return Err(fail(EntryFail::Unsafe("has an absolute path".into())))
                }
                Err(BadPath::DotDot) => {
                    return Err(fail(EntryFail::Unsafe("has `..` in its path".into())))
                }
            };
            let name = comps.last().map(|c| c.as_bytes().to_vec());
            if let Some(name) = name.as_deref() {
                if name == b".wh..wh..opq" {
                    let parent = comps[..comps.len() - 1].to_vec();
                    // Make sure the directory exists and is safe to reach now;
                    // empty it at the end of the layer.
                    self.open_parent(&comps).map_err(fail)?;
                    opaque.push(parent);
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(b".wh.") {
                    if hidden.starts_with(b".wh.") {
                        continue; // other aufs metadata
                    }
                    if matches!(hidden, b"" | b"." | b"..") {
                        return Err(fail(EntryFail::Unsafe(format!(
                            "whites out `{}`, which is not a name",
                            show(hidden)
                        ))));
                    }
                    let mut target = comps[..comps.len() - 1].to_vec();
                    target.push(OsString::from_vec(hidden.to_vec()));
                    if !this_layer.contains(&key(&target)) {
                        self.whiteout(&target).map_err(fail)?;
                    }
                    continue;
                }
            }
            let written = self.apply_entry(&mut entry, &comps).map_err(fail)?;
            if written {
                for i in 1..=comps.len() {
                    this_layer.insert(key(&comps[..i]));
                }
            }
        }
        for dir in opaque {
            let d = self.open_dir_path(&dir).map_err(|f| {
                let why = match f {
                    EntryFail::Unsafe(w) | EntryFail::Other(w) => w,
                };
                let mut raw = key(&dir);
                raw.extend_from_slice(b"/.wh..wh..opq");
                RootfsError::UnsafeEntry {
                    image,
                    layer: layer.digest,
                    entry: show(&raw),
                    why,
                }
            })?;
            self.empty_lower(&d, &key(&dir), &this_layer)
                .map_err(|e| RootfsError::Entry {
                    image,
                    layer: layer.digest,
                    entry: format!("{}/.wh..wh..opq", show(&key(&dir))),
                    why: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Apply one entry; returns whether something was put in place.
    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        comps: &[OsString],
    ) -> EntryResult<bool> {
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|e| EntryFail::Other(format!("bad mode: {e}")))?
            & 0o777;
        use tar::EntryType as T;
        let Some(name) = comps.last() else {
            // The root itself (`./`).
            if kind == T::Directory {
                self.dir_modes.insert(Vec::new(), mode);
                return Ok(true);
            }
            return Err(EntryFail::Unsafe(
                "replaces the root directory with something else".into(),
            ));
        };
        match kind {
            T::Directory => {
                let parent = self.open_parent(comps)?;
                match parent.symlink_metadata(name) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        parent.remove_file(name)?;
                        parent.create_dir(name)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => parent.create_dir(name)?,
                    Err(e) => return Err(e.into()),
                }
                self.dir_modes.insert(key(comps), mode);
                Ok(true)
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let parent = self.open_parent(comps)?;
                self.remove_existing(&parent, comps)?;
                let file = parent.open_with(
                    name,
                    OpenOptions::new().write(true).create_new(true).mode(0o600),
                )?;
                let mut file = file.into_std();
                loop {
                    let k = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(EntryFail::Other(format!("cannot read its data: {e}")))
                        }
                    };
                    file.write_all(&self.buf[..k])?;
                }
                file.set_permissions(fs::Permissions::from_mode(mode))?;
                file.set_times(
                    fs::FileTimes::new()
                        .set_accessed(UNIX_EPOCH)
                        .set_modified(UNIX_EPOCH),
                )?;
                Ok(true)
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryFail::Other("a symlink without a target".into()))?
                    .into_owned();
                let parent = self.open_parent(comps)?;
                self.remove_existing(&parent, comps)?;
                parent.symlink_contents(OsStr::from_bytes(&target), name)?;
                parent.set_symlink_times(name, epoch(), epoch())?;
                Ok(true)
            }
            T::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryFail::Other("a hard link without a target".into()))?
                    .into_owned();
                let target = match components(&raw_target) {
                    Ok(t) => t,
                    Err(BadPath::Absolute) => {
                        return Err(EntryFail::Unsafe(format!(
                            "is a hard link to the absolute path `{}`",
                            show(&raw_target)
                        )))
                    }
                    Err(BadPath::DotDot) => {
                        return Err(EntryFail::Unsafe(format!(
                            "is a hard link to `{}`, which has `..` in its path",
                            show(&raw_target)
                        )))
                    }
                };
                let Some(target_name) = target.last() else {
                    return Err(EntryFail::Unsafe(
                        "is a hard link to the root directory".into(),
                    ));
                };
                if target == comps {
                    return Ok(true);
                }
                let target_parent = self.open_existing_parent(&target).map_err(|f| match f {
                    EntryFail::Unsafe(why) => EntryFail::Unsafe(format!(
                        "is a hard link to `{}`, whose path {why}",
                        show(&raw_target)
                    )),
                    other => other,
                })?;
                match target_parent.symlink_metadata(target_name) {
                    Ok(m) if m.is_dir() => {
                        return Err(EntryFail::Other(format!(
                            "it is a hard link to `{}`, which is a directory",
                            show(&raw_target)
                        )))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(EntryFail::Other(format!(
                            "it is a hard link to `{}`, which is not in this or a lower layer",
                            show(&raw_target)
                        )))
                    }
                    Err(e) => return Err(e.into()),
                }
                let parent = self.open_parent(comps)?;
                self.remove_existing(&parent, comps)?;
                target_parent.hard_link(target_name, &parent, name)?;
                Ok(true)
            }
            // Device nodes, fifos: the sandbox has its own /dev. Pax and GNU
            // metadata entries are consumed by the tar reader; anything else
            // unknown carries no file.
            _ => Ok(false),
        }
    }

    /// Remove whatever is at `comps` (not following a symlink there).
    fn remove_existing(&mut self, parent: &Dir, comps: &[OsString]) -> io::Result<()> {
        let Some(name) = comps.last() else {
            return Ok(());
        };
        match parent.symlink_metadata(name) {
            Ok(m) if m.is_dir() => {
                parent.remove_dir_all(name)?;
                self.forget_modes(&key(comps));
                Ok(())
            }
            Ok(_) => parent.remove_file(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Apply the whiteout of `target`: remove it if a lower layer made it.
    fn whiteout(&mut self, target: &[OsString]) -> EntryResult<()> {
        let parent = match self.open_existing_parent(target) {
            Ok(p) => p,
            // Whiting out inside a directory that does not exist: nothing to do.
            Err(EntryFail::Other(_)) => return Ok(()),
            Err(f) => return Err(f),
        };
        self.remove_existing(&parent, target)?;
        Ok(())
    }

    /// Forget the declared modes of the directory `k` and all below it.
    fn forget_modes(&mut self, k: &[u8]) {
        let doomed: Vec<Vec<u8>> = self
            .dir_modes
            .range(k.to_vec()..)
            .take_while(|(p, _)| p.starts_with(k))
            .filter(|(p, _)| p.len() == k.len() || p[k.len()] == b'/' || k.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.dir_modes.remove(&p);
        }
    }

    /// Empty directory `d` (key `k`) of everything not put there by the
    /// current layer, recursing into directories the current layer kept.
    fn empty_lower(&mut self, d: &Dir, k: &[u8], this_layer: &HashSet<Vec<u8>>) -> io::Result<()> {
        let mut names: Vec<OsString> = Vec::new();
        for e in d.entries()? {
            names.push(e?.file_name());
        }
        for name in names {
            let mut child = k.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let meta = d.symlink_metadata(&name)?;
            if this_layer.contains(&child) {
                if meta.is_dir() {
                    let sub = d.open_dir_nofollow(&name)?;
                    self.empty_lower(&sub, &child, this_layer)?;
                }
            } else if meta.is_dir() {
                d.remove_dir_all(&name)?;
                self.forget_modes(&child);
            } else {
                d.remove_file(&name)?;
            }
        }
        Ok(())
    }

    /// Open the parent directory of `comps`, creating missing directories
    /// (mode 0755) and refusing to pass through a symlink or a file.
    fn open_parent(&self, comps: &[OsString]) -> EntryResult<Dir> {
        self.walk_dirs(&comps[..comps.len().saturating_sub(1)], true)
    }

    /// Like [`Unpacker::open_parent`] but without creating anything; a
    /// missing directory is [`EntryFail::Other`].
    fn open_existing_parent(&self, comps: &[OsString]) -> EntryResult<Dir> {
        self.walk_dirs(&comps[..comps.len().saturating_sub(1)], false)
    }

    /// Open the directory at `comps` itself, creating it if missing.
    fn open_dir_path(&self, comps: &[OsString]) -> EntryResult<Dir> {
        self.walk_dirs(comps, true)
    }

    fn walk_dirs(&self, dirs: &[OsString], create: bool) -> EntryResult<Dir> {
        let mut cur = self.root.try_clone()?;
        for (i, c) in dirs.iter().enumerate() {
            let here = || show(&key(&dirs[..=i]));
            match cur.symlink_metadata(c) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(EntryFail::Unsafe(format!(
                        "writes through the symlink `{}`",
                        here()
                    )))
                }
                Ok(_) => return Err(EntryFail::Other(format!("`{}` is not a directory", here()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    cur.create_dir(c)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(EntryFail::Other(format!("`{}` does not exist", here())))
                }
                Err(e) => return Err(e.into()),
            }
            cur = cur
                .open_dir_nofollow(c)
                .map_err(|e| EntryFail::Other(format!("cannot open `{}`: {e}", here())))?;
        }
        Ok(cur)
    }
}

/// After all layers: give every directory below `d` (key `k`) its
/// declared mode (or keep the one it was created with) and modification
/// time 0, children first so a read-only directory is finished last.
/// (`cap_std` directory handles are `O_PATH`, so each directory is changed
/// through its parent.)
/// The directories the native sandbox mounts on, parents first.
const MOUNT_POINTS: &[&str] = &["dev", "proc", "tmp", "repro", "repro/in", "repro/out"];

/// Create each of [`MOUNT_POINTS`] that is missing, mode `0755` (see the
/// module docs); anything already at that path is left as it is.
fn add_mount_points(root: &Dir) -> io::Result<()> {
    for p in MOUNT_POINTS {
        // A missing parent (because the image has a file or symlink there)
        // makes the child fail too: skip it, the sandbox then overlays.
        let parent_ok = match p.rsplit_once('/') {
            Some((parent, _)) => root.symlink_metadata(parent).is_ok_and(|m| m.is_dir()),
            None => true,
        };
        if !parent_ok {
            continue;
        }
        match root.symlink_metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                root.create_dir(p)?;
                root.set_permissions(p, cap_std::fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Ok(())
}

fn finish_dirs(d: &Dir, k: &[u8], modes: &BTreeMap<Vec<u8>, u32>) -> io::Result<()> {
    let mut subdirs = Vec::new();
    for e in d.entries()? {
        let e = e?;
        if e.file_type()?.is_dir() {
            subdirs.push(e.file_name());
        }
    }
    for name in subdirs {
        let mut child = k.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(name.as_bytes());
        let sub = d.open_dir_nofollow(&name)?;
        finish_dirs(&sub, &child, modes)?;
        if let Some(mode) = modes.get(&child) {
            d.set_permissions(&name, cap_std::fs::Permissions::from_mode(*mode))?;
        }
        d.set_symlink_times(&name, epoch(), epoch())?;
    }
    Ok(())
}

/// The Unix epoch, for `set_*times`.
fn epoch() -> Option<SystemTimeSpec> {
    Some(SystemTimeSpec::Absolute(
        cap_std::time::SystemTime::from_std(UNIX_EPOCH),
    ))
}

/// One entry of a walked tree.
struct Walked {
    path: Vec<u8>,
    kind: WalkedKind,
    mode: u32,
}

enum WalkedKind {
    Dir,
    File {
        size: u64,
        inode: (u64, u64),
        hash: Hash,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A device node, fifo or socket (never unpacked; only found if added).
    Other,
}

/// The canonical listing of the tree under `root` (see the module docs).
fn listing(root: &Dir) -> io::Result<Vec<u8>> {
    let mut items = Vec::new();
    let mut hashes: HashMap<(u64, u64), Hash> = HashMap::new();
    let mut buf = vec![0u8; BUF];
    let root_mode = root.dir_metadata()?.mode() & 0o7777;
    items.push(Walked {
        path: b".".to_vec(),
        kind: WalkedKind::Dir,
        mode: root_mode,
    });
    walk(root, Vec::new(), &mut items, &mut hashes, &mut buf)?;
    items.sort_by(|a, b| a.path.cmp(&b.path));
    let mut first_name: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(items.len() * 96);
    out.extend_from_slice(LISTING_HEADER.as_bytes());
    out.push(b'\n');
    for it in &items {
        escape(&it.path, &mut out);
        match &it.kind {
            WalkedKind::Dir => out.extend_from_slice(format!(" dir {:04o}", it.mode).as_bytes()),
            WalkedKind::File { size, inode, hash } => {
                if let Some(first) = first_name.get(inode) {
                    out.extend_from_slice(format!(" hardlink {:04o} {size} ", it.mode).as_bytes());
                    escape(first, &mut out);
                } else {
                    first_name.insert(*inode, it.path.clone());
                    out.extend_from_slice(
                        format!(" file {:04o} {size} {hash}", it.mode).as_bytes(),
                    );
                }
            }
            WalkedKind::Symlink { target } => {
                out.extend_from_slice(format!(" symlink {:04o} ", it.mode).as_bytes());
                escape(target, &mut out);
            }
            WalkedKind::Other => {
                out.extend_from_slice(format!(" other {:04o}", it.mode).as_bytes())
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}

fn walk(
    d: &Dir,
    prefix: Vec<u8>,
    items: &mut Vec<Walked>,
    hashes: &mut HashMap<(u64, u64), Hash>,
    buf: &mut [u8],
) -> io::Result<()> {
    for e in d.entries()? {
        let e = e?;
        let name = e.file_name();
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let meta = d.symlink_metadata(&name)?;
        let mode = meta.mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            items.push(Walked {
                path: path.clone(),
                kind: WalkedKind::Dir,
                mode,
            });
            let sub = d.open_dir_nofollow(&name)?;
            walk(&sub, path, items, hashes, buf)?;
        } else if ft.is_symlink() {
            let target = d.read_link_contents(&name)?.into_os_string().into_vec();
            items.push(Walked {
                path,
                kind: WalkedKind::Symlink { target },
                mode,
            });
        } else if ft.is_file() {
            let inode = (meta.dev(), meta.ino());
            let hash = match hashes.get(&inode) {
                Some(h) => *h,
                None => {
                    let h = hash_file(d, &name, buf)?;
                    hashes.insert(inode, h);
                    h
                }
            };
            items.push(Walked {
                path,
                kind: WalkedKind::File {
                    size: meta.len(),
                    inode,
                    hash,
                },
                mode,
            });
        } else {
            // Nothing else is ever unpacked; list it so a check notices.
            items.push(Walked {
                path,
                kind: WalkedKind::Other,
                mode,
            });
        }
    }
    Ok(())
}

fn hash_file(d: &Dir, name: &OsStr, buf: &mut [u8]) -> io::Result<Hash> {
    let mut f = d.open_with(
        name,
        OpenOptions::new()
            .read(true)
            .follow(cap_fs_ext::FollowSymlinks::No),
    )?;
    let mut hasher = Sha256::new();
    loop {
        let k = match f.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..k]);
    }
    Ok(Hash(hasher.finalize().into()))
}

/// Append `raw` with `%`, space, control and non-ASCII bytes as `%XX`.
fn escape(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        if b <= b' ' || b >= 0x7f || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// The paths whose lines differ between two listings, described for a
/// person: "`p` changed", "`p` was removed", "`p` was added".
fn diff_listings(recorded: &[u8], actual: &[u8]) -> Vec<String> {
    fn parse(listing: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = BTreeMap::new();
        for line in listing.split(|&b| b == b'\n').skip(1) {
            if line.is_empty() {
                continue;
            }
            let (path, rest) = match line.iter().position(|&b| b == b' ') {
                Some(i) => (&line[..i], &line[i..]),
                None => (line, &[][..]),
            };
            m.insert(path.to_vec(), rest.to_vec());
        }
        m
    }
    let before = parse(recorded);
    let after = parse(actual);
    let mut out = Vec::new();
    let mut paths: Vec<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let shown = show(p);
        match (before.get(p), after.get(p)) {
            (Some(a), Some(b)) if a != b => out.push(format!(
                "`{shown}` changed (was `{}`, now `{}`)",
                show(a).trim(),
                show(b).trim()
            )),
            (Some(_), None) => out.push(format!("`{shown}` was removed")),
            (None, Some(_)) => out.push(format!("`{shown}` was added")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_added_but_an_images_own_entries_are_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path();
        std::os::unix::fs::symlink("/var/tmp", p.join("tmp")).expect("symlink");
        fs::write(p.join("repro"), b"a file").expect("write");
        fs::create_dir(p.join("proc")).expect("mkdir");
        fs::set_permissions(p.join("proc"), fs::Permissions::from_mode(0o555)).expect("chmod");
        let dir = Dir::open_ambient_dir(p, ambient_authority()).expect("open");
        add_mount_points(&dir).expect("mount points");
        let mode = |n: &str| {
            fs::symlink_metadata(p.join(n))
                .expect(n)
                .permissions()
                .mode()
        };
        assert!(p.join("dev").is_dir());
        assert_eq!(mode("dev") & 0o7777, 0o755);
        assert_eq!(
            mode("proc") & 0o7777,
            0o555,
            "an existing directory is left alone"
        );
        assert!(fs::symlink_metadata(p.join("tmp"))
            .expect("tmp")
            .is_symlink());
        assert!(!p.join("var").exists(), "a symlink was followed");
        assert!(p.join("repro").is_file());
        add_mount_points(&dir).expect("a second time changes nothing");
    }

    #[test]
    fn components_refuse_absolute_and_dotdot_and_drop_dots() {
        assert!(matches!(components(b"/etc/passwd"), Err(BadPath::Absolute)));
        assert!(matches!(components(b"a/../../b"), Err(BadPath::DotDot)));
        assert!(matches!(components(b".."), Err(BadPath::DotDot)));
        let c = components(b"./etc//x/.").ok().expect("valid");
        assert_eq!(key(&c), b"etc/x");
        assert!(components(b"./").ok().expect("root").is_empty());
    }

    #[test]
    fn escape_encodes_spaces_newlines_percent_and_non_ascii() {
        let mut out = Vec::new();
        escape("a b\n%é/c".as_bytes(), &mut out);
        assert_eq!(out, b"a%20b%0A%25%C3%A9/c");
    }

    #[test]
    fn diff_names_changed_removed_and_added_paths() {
        let a = b"h\n. dir 0755\na file 0644 1 x\nb dir 0755\n";
        let b = b"h\n. dir 0755\na file 0644 2 y\nc dir 0755\n";
        let d = diff_listings(a, b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("`a` changed"), "{d:?}");
        assert_eq!(d[1], "`b` was removed");
        assert_eq!(d[2], "`c` was added");
    }
}
