//! Root filesystems unpacked from images in the store: layers, whiteouts,
//! hard links, containment, modes, the cache, and its checks.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use repro_sandbox::{check_rootfs, check_rootfs_remembered, prepare_rootfs, Rootfs, RootfsError};
use repro_store::{BlobDigest, ImageDigest, Store};
use sha2::{Digest as _, Sha256};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A layer tar under construction.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        Tar(b)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(1000);
        h.set_gid(1000);
        h
    }

    fn dir(mut self, path: &str, mode: u32) -> Tar {
        let mut h = Tar::header(tar::EntryType::Directory, mode, 0);
        self.0
            .append_data(&mut h, path, std::io::empty())
            .expect("append dir");
        self
    }

    fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Tar {
        let mut h = Tar::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data).expect("append file");
        self
    }

    fn symlink(self, path: &str, target: &str) -> Tar {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Symlink,
            target.as_bytes(),
            b"",
        )
    }

    fn hardlink(self, path: &str, target: &str) -> Tar {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Link,
            target.as_bytes(),
            b"",
        )
    }

    /// An entry written byte for byte, bypassing the tar crate's own path
    /// checks (so that hostile paths can be written).
    fn raw(mut self, path: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Tar {
        let mut h = Tar::header(kind, 0o644, data.len() as u64);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..path.len()].copy_from_slice(path);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.0.append(&h, data).expect("append raw");
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("finish tar")
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Store an image made of `layers` (uncompressed tar, media type; gzip
/// types are compressed here). Returns the image and its layer digests.
fn put_image(store: &Store, layers: &[(Vec<u8>, &str)]) -> (ImageDigest, Vec<BlobDigest>) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut digests = Vec::new();
    for (tar, media_type) in layers {
        let blob = if media_type.contains("gzip") {
            gzip(tar)
        } else {
            tar.clone()
        };
        let d = store.put_bytes(&blob).expect("put layer");
        digests.push(d);
        diff_ids.push(sha256(tar));
        descs.push(serde_json::json!({
            "mediaType": media_type,
            "digest": d.to_string(),
            "size": blob.len(),
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("json");
    let config_digest = store.put_bytes(&config).expect("put config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": descs,
    }))
    .expect("json");
    (store.put_image(&manifest).expect("put image"), digests)
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    (dir, store)
}

fn cache_entry(store: &Store, image: &ImageDigest) -> PathBuf {
    store.layout_dir().join("rootfs").join(image.hex())
}

/// Leftover unpacking directories in the store's scratch area.
fn leftovers(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.tmp_dir())
        .expect("read tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rootfs-"))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn listing(root: &Rootfs) -> String {
    std::fs::read_to_string(root.entry_dir().join("listing")).expect("listing")
}

#[test]
fn two_layers_with_whiteouts_and_an_opaque_dir_give_the_expected_tree() {
    let (_dir, store) = temp_store();
    let base = Tar::new()
        .dir("etc", 0o755)
        .file("etc/a", 0o644, b"a")
        .file("etc/b", 0o644, b"b")
        .dir("opt", 0o755)
        .file("opt/x", 0o644, b"x")
        .dir("opt/sub", 0o755)
        .file("opt/sub/y", 0o644, b"y")
        .dir("var", 0o755)
        .file("var/keep", 0o600, b"keep")
        .file("var/becomes-dir", 0o644, b"file")
        .dir("var/becomes-file", 0o755)
        .file("var/becomes-file/inner", 0o644, b"inner")
        .finish();
    // The opaque marker comes after an entry of the same layer in `opt/`,
    // which must survive it.
    let top = Tar::new()
        .file("etc/.wh.a", 0o644, b"")
        .file("etc/.wh.never-existed", 0o644, b"")
        .dir("opt", 0o750)
        .file("opt/new", 0o644, b"new")
        .file("opt/.wh..wh..opq", 0o644, b"")
        .dir("var/becomes-dir", 0o700)
        .file("var/becomes-file", 0o644, b"now a file")
        .file("new/implicit/parents", 0o644, b"p")
        .finish();
    let (image, _) = put_image(&store, &[(base, TAR), (top, GZIP)]);
    let root = prepare_rootfs(&store, &image).expect("prepare");
    let r = &root.path;
    assert_eq!(root.path, cache_entry(&store, &image).join("root"));
    assert!(!r.join("etc/a").exists(), "whiteout ignored");
    assert_eq!(std::fs::read(r.join("etc/b")).expect("etc/b"), b"b");
    assert!(!r.join("opt/x").exists(), "opaque dir kept a lower file");
    assert!(!r.join("opt/sub").exists(), "opaque dir kept a lower dir");
    assert_eq!(std::fs::read(r.join("opt/new")).expect("opt/new"), b"new");
    assert!(!r.join("opt/.wh..wh..opq").exists());
    assert_eq!(mode(&r.join("opt")), 0o750, "the upper layer's mode wins");
    assert_eq!(
        std::fs::read(r.join("var/keep")).expect("var/keep"),
        b"keep"
    );
    assert!(r.join("var/becomes-dir").is_dir());
    assert_eq!(mode(&r.join("var/becomes-dir")), 0o700);
    assert_eq!(
        std::fs::read(r.join("var/becomes-file")).expect("becomes-file"),
        b"now a file"
    );
    assert_eq!(mode(&r.join("new/implicit")), 0o755);
    // Owners are not applied, mtimes are 0.
    let meta = std::fs::metadata(r.join("etc/b")).expect("meta");
    assert_eq!(meta.mtime(), 0);
    assert_eq!(meta.uid(), own_uid());
    assert_eq!(std::fs::metadata(r.join("opt")).expect("opt").mtime(), 0);
    // The sandbox's mount points are added, like any directory, at mtime 0.
    assert_eq!(
        std::fs::metadata(r.join("repro/out")).expect("out").mtime(),
        0
    );

    let listing = listing(&root);
    let expected = format!(
        "repro-rootfs-listing 1
. dir 0755
dev dir 0755
etc dir 0755
etc/b file 0644 1 {}
new dir 0755
new/implicit dir 0755
new/implicit/parents file 0644 1 {}
opt dir 0750
opt/new file 0644 3 {}
proc dir 0755
repro dir 0755
repro/in dir 0755
repro/out dir 0755
tmp dir 0755
var dir 0755
var/becomes-dir dir 0700
var/becomes-file file 0644 10 {}
var/keep file 0600 4 {}
",
        sha256(b"b"),
        sha256(b"p"),
        sha256(b"new"),
        sha256(b"now a file"),
        sha256(b"keep"),
    );
    assert_eq!(listing, expected);
    assert_eq!(root.digest.to_string(), sha256(listing.as_bytes()));
    check_rootfs(&root).expect("a fresh root checks");
}

/// The uid of this process, as the files it creates show it.
fn own_uid() -> u32 {
    let probe = tempfile::NamedTempFile::new().expect("probe");
    probe.as_file().metadata().expect("probe").uid()
}

#[test]
fn docker_gzip_layers_unpack_like_plain_tar() {
    let (_dir, store) = temp_store();
    let layer = Tar::new().file("a/b", 0o644, b"same").finish();
    let (plain, _) = put_image(&store, &[(layer.clone(), TAR)]);
    let (docker, _) = put_image(&store, &[(layer, DOCKER_GZIP)]);
    let a = prepare_rootfs(&store, &plain).expect("plain");
    let b = prepare_rootfs(&store, &docker).expect("docker gzip");
    assert_ne!(a.path, b.path);
    assert_eq!(a.digest, b.digest, "same tree, same listing digest");
}

#[test]
fn hard_links_within_a_layer_and_to_a_lower_layer_share_the_inode() {
    let (_dir, store) = temp_store();
    let base = Tar::new()
        .dir("bin", 0o755)
        .file("bin/tool", 0o755, b"#!/bin/sh\n")
        .hardlink("bin/tool-same-layer", "bin/tool")
        .finish();
    let top = Tar::new()
        .hardlink("usr/tool-lower-layer", "./bin/tool")
        .finish();
    let (image, _) = put_image(&store, &[(base, TAR), (top, TAR)]);
    let root = prepare_rootfs(&store, &image).expect("prepare");
    let ino = |p: &str| std::fs::metadata(root.path.join(p)).expect(p).ino();
    assert_eq!(ino("bin/tool"), ino("bin/tool-same-layer"));
    assert_eq!(ino("bin/tool"), ino("usr/tool-lower-layer"));
    let listing = listing(&root);
    assert!(
        listing.contains("\nbin/tool-same-layer hardlink 0755 10 bin/tool\n"),
        "{listing}"
    );
    assert!(
        listing.contains("\nusr/tool-lower-layer hardlink 0755 10 bin/tool\n"),
        "{listing}"
    );
    assert!(listing.contains("\nbin/tool file 0755 10 sha256:"));
}

#[test]
fn a_hard_link_to_a_missing_file_is_an_error_naming_it() {
    let (_dir, store) = temp_store();
    let layer = Tar::new().hardlink("a", "missing").finish();
    let (image, digests) = put_image(&store, &[(layer, TAR)]);
    let err = prepare_rootfs(&store, &image).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("`missing`"), "{msg}");
    assert!(msg.contains(&digests[0].to_string()), "{msg}");
}

/// Prepare an image that tries to escape; the error must be
/// [`RootfsError::UnsafeEntry`] naming the layer and the entry, nothing may
/// be written to `outside`, and nothing may be left in the cache.
fn assert_refused(layers: Vec<(Vec<u8>, &str)>, bad_layer: usize, entry: &str) {
    let (dir, store) = temp_store();
    let (image, digests) = put_image(&store, &layers);
    let err = prepare_rootfs(&store, &image).expect_err("an escape must be refused");
    let msg = err.to_string();
    match &err {
        RootfsError::UnsafeEntry {
            layer, entry: e, ..
        } => {
            assert_eq!(*layer, digests[bad_layer], "{msg}");
            assert_eq!(e, entry, "{msg}");
        }
        other => panic!("expected UnsafeEntry, got: {other}"),
    }
    assert!(msg.contains(&digests[bad_layer].to_string()), "{msg}");
    assert!(msg.contains(&format!("`{entry}`")), "{msg}");
    assert!(msg.contains("hint: "), "{msg}");
    assert!(!cache_entry(&store, &image).exists());
    assert_eq!(leftovers(&store), Vec::<String>::new());
    // Nothing landed next to the store or the unpacking directory.
    for p in [
        dir.path().join("pwned"),
        store.layout_dir().join("pwned"),
        store.layout_dir().join("tmp/pwned"),
        store.dir().join("pwned"),
    ] {
        assert!(!p.exists(), "`{}` was written", p.display());
    }
}

#[test]
fn an_absolute_path_is_refused() {
    let layer = Tar::new()
        .raw(b"/tmp/pwned", tar::EntryType::Regular, b"", b"x")
        .finish();
    assert_refused(vec![(layer, TAR)], 0, "/tmp/pwned");
}

#[test]
fn a_dotdot_path_is_refused() {
    let layer = Tar::new()
        .dir("a", 0o755)
        .raw(b"a/../../pwned", tar::EntryType::Regular, b"", b"x")
        .finish();
    assert_refused(vec![(layer, GZIP)], 0, "a/../../pwned");
}

#[test]
fn writing_through_an_absolute_symlink_of_a_lower_layer_is_refused() {
    let base = Tar::new().symlink("etc", "/host-etc").finish();
    let top = Tar::new()
        .file("etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
        .finish();
    assert_refused(vec![(base, TAR), (top, TAR)], 1, "etc/passwd");
}

#[test]
fn writing_through_a_dotdot_symlink_is_refused() {
    let base = Tar::new().symlink("link", "../../..").finish();
    let top = Tar::new().file("link/pwned", 0o644, b"x").finish();
    assert_refused(vec![(base, TAR), (top, GZIP)], 1, "link/pwned");
}

#[test]
fn writing_through_a_symlink_of_the_same_layer_is_refused() {
    let layer = Tar::new()
        .symlink("link", "..")
        .dir("link/pwned", 0o755)
        .finish();
    assert_refused(vec![(layer, TAR)], 0, "link/pwned");
}

#[test]
fn whiting_out_through_a_symlink_is_refused() {
    let base = Tar::new().symlink("link", "../..").finish();
    let top = Tar::new().file("link/.wh.pwned", 0o644, b"").finish();
    assert_refused(vec![(base, TAR), (top, TAR)], 1, "link/.wh.pwned");
}

#[test]
fn a_whiteout_of_dotdot_is_refused() {
    let base = Tar::new().file("a/b/keep", 0o644, b"x").finish();
    let top = Tar::new().file("a/b/.wh...", 0o644, b"").finish();
    assert_refused(vec![(base, TAR), (top, TAR)], 1, "a/b/.wh...");
}

#[test]
fn a_hard_link_to_an_absolute_path_is_refused() {
    let layer = Tar::new().hardlink("passwd", "/etc/passwd").finish();
    assert_refused(vec![(layer, TAR)], 0, "passwd");
}

#[test]
fn a_hard_link_out_through_dotdot_is_refused() {
    let layer = Tar::new()
        .hardlink("shadow", "../../../etc/shadow")
        .finish();
    assert_refused(vec![(layer, TAR)], 0, "shadow");
}

#[test]
fn a_hard_link_through_a_symlink_is_refused() {
    let layer = Tar::new()
        .symlink("etc", "/etc")
        .hardlink("passwd", "etc/passwd")
        .finish();
    assert_refused(vec![(layer, TAR)], 0, "passwd");
}

#[test]
fn symlinks_are_kept_as_written_and_special_files_skipped() {
    let (_dir, store) = temp_store();
    let layer = Tar::new()
        .symlink("abs", "/etc/passwd")
        .symlink("up", "../../../..")
        .raw(b"dev/null", tar::EntryType::Char, b"", b"")
        .raw(b"fifo", tar::EntryType::Fifo, b"", b"")
        .finish();
    let (image, _) = put_image(&store, &[(layer, TAR)]);
    let root = prepare_rootfs(&store, &image).expect("prepare");
    assert_eq!(
        std::fs::read_link(root.path.join("abs")).expect("abs"),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(root.path.join("up")).expect("up"),
        Path::new("../../../..")
    );
    assert!(std::fs::symlink_metadata(root.path.join("fifo")).is_err());
    assert!(std::fs::symlink_metadata(root.path.join("dev/null")).is_err());
    let listing = listing(&root);
    assert!(
        listing.contains("\nabs symlink 0777 /etc/passwd\n"),
        "{listing}"
    );
}

#[test]
fn setuid_setgid_and_sticky_bits_are_cleared_and_read_only_dirs_filled() {
    let (_dir, store) = temp_store();
    let base = Tar::new()
        .file("bin/su", 0o4755, b"su")
        .file("bin/wall", 0o2755, b"wall")
        .dir("tmp", 0o1777)
        .dir("ro", 0o555)
        .file("ro/inside", 0o444, b"1")
        .finish();
    let top = Tar::new().file("ro/later", 0o400, b"2").finish();
    let (image, _) = put_image(&store, &[(base, TAR), (top, TAR)]);
    let root = prepare_rootfs(&store, &image).expect("prepare");
    assert_eq!(mode(&root.path.join("bin/su")), 0o755);
    assert_eq!(mode(&root.path.join("bin/wall")), 0o755);
    assert_eq!(mode(&root.path.join("tmp")), 0o777);
    assert_eq!(mode(&root.path.join("ro")), 0o555);
    assert_eq!(mode(&root.path.join("ro/later")), 0o400);
    assert_eq!(
        std::fs::read(root.path.join("ro/later")).expect("later"),
        b"2"
    );
}

#[test]
fn a_cache_hit_reuses_the_tree_without_reading_the_layers() {
    let (_dir, store) = temp_store();
    let layer = Tar::new().file("etc/os-release", 0o644, b"x").finish();
    let (image, digests) = put_image(&store, &[(layer, GZIP)]);
    let first = prepare_rootfs(&store, &image).expect("first");
    let ino = std::fs::metadata(first.path.join("etc/os-release"))
        .expect("file")
        .ino();
    // Without the layer blob, only a cache hit can succeed.
    let blob = store.blob_path(&digests[0]);
    std::fs::remove_file(&blob).expect("remove layer blob");
    let second = prepare_rootfs(&store, &image).expect("cache hit");
    assert_eq!(second, first);
    assert_eq!(
        std::fs::metadata(second.path.join("etc/os-release"))
            .expect("file")
            .ino(),
        ino
    );
}

#[test]
fn a_damaged_listing_makes_the_cache_hit_fail_with_a_hint() {
    let (_dir, store) = temp_store();
    let layer = Tar::new().file("a", 0o644, b"x").finish();
    let (image, _) = put_image(&store, &[(layer, TAR)]);
    let root = prepare_rootfs(&store, &image).expect("prepare");
    let listing = root.entry_dir().join("listing");
    let mut text = std::fs::read_to_string(&listing).expect("listing");
    text.push_str("b file 0644 0 sha256:00\n");
    std::fs::write(&listing, text).expect("write");
    let err = prepare_rootfs(&store, &image).expect_err("damaged");
    assert!(matches!(err, RootfsError::Damaged { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("hint: delete `{}`", root.entry_dir().display())),
        "{msg}"
    );
    // Deleting the entry, as the hint says, repairs it.
    std::fs::remove_dir_all(root.entry_dir()).expect("delete");
    assert_eq!(prepare_rootfs(&store, &image).expect("again"), root);
}

#[test]
fn a_corrupt_layer_blob_is_refused_naming_it_and_leaves_no_cache_entry() {
    let (_dir, store) = temp_store();
    let base = Tar::new().file("a", 0o644, b"fine").finish();
    let top = Tar::new().file("b", 0o644, b"original").finish();
    let (image, digests) = put_image(&store, &[(base, TAR), (top, TAR)]);
    let blob = store.blob_path(&digests[1]);
    let mut bytes = std::fs::read(&blob).expect("blob");
    let at = bytes
        .windows(8)
        .position(|w| w == b"original")
        .expect("content in the tar");
    bytes[at..at + 8].copy_from_slice(b"tampered");
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&blob, &bytes).expect("tamper");
    let err = prepare_rootfs(&store, &image).expect_err("corrupt layer");
    assert!(
        matches!(err, RootfsError::CorruptLayer { layer, .. } if layer == digests[1]),
        "{err}"
    );
    assert!(err.to_string().contains(&digests[1].to_string()), "{err}");
    assert!(!cache_entry(&store, &image).exists());
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

#[test]
fn a_zstd_layer_is_a_clear_error() {
    let (_dir, store) = temp_store();
    let layer = Tar::new().file("a", 0o644, b"x").finish();
    let (image, digests) = put_image(&store, &[(layer, ZSTD)]);
    let err = prepare_rootfs(&store, &image).expect_err("zstd");
    let msg = err.to_string();
    assert!(
        matches!(err, RootfsError::UnsupportedMediaType { .. }),
        "{msg}"
    );
    assert!(msg.contains("zstd"), "{msg}");
    assert!(msg.contains(&digests[0].to_string()), "{msg}");
    assert!(msg.contains("hint: "), "{msg}");
}

/// A small image (two executables and a config file) and its root, as
/// prepared for the sandbox.
fn small_root(store: &Store) -> (ImageDigest, Rootfs) {
    let layer = Tar::new()
        .dir("usr/bin", 0o755)
        .file("usr/bin/python3", 0o755, b"python")
        .file("usr/bin/perl", 0o755, b"perl")
        .file("etc/hosts", 0o644, b"hosts")
        .finish();
    let (image, _) = put_image(store, &[(layer, TAR)]);
    let root = prepare_rootfs(store, &image).expect("prepare");
    (image, root)
}

#[test]
fn check_rootfs_names_modified_removed_and_added_files() {
    let (_dir, store) = temp_store();
    let (image, root) = small_root(&store);
    check_rootfs(&root).expect("fresh");

    // Same size, different bytes.
    std::fs::write(root.path.join("usr/bin/python3"), b"PYTHON").expect("modify");
    let err = check_rootfs(&root).expect_err("modified");
    let msg = err.to_string();
    assert!(matches!(err, RootfsError::Modified { .. }), "{msg}");
    assert!(msg.contains(&image.to_string()), "{msg}");
    assert!(msg.contains("`usr/bin/python3` changed"), "{msg}");
    assert!(
        msg.contains(&format!("hint: delete `{}`", root.entry_dir().display())),
        "{msg}"
    );
    std::fs::write(root.path.join("usr/bin/python3"), b"python").expect("restore");
    check_rootfs(&root).expect("restored");

    std::fs::remove_file(root.path.join("usr/bin/perl")).expect("remove");
    let msg = check_rootfs(&root).expect_err("removed").to_string();
    assert!(msg.contains("`usr/bin/perl` was removed"), "{msg}");

    std::fs::write(root.path.join("etc/extra"), b"").expect("add");
    let msg = check_rootfs(&root).expect_err("added").to_string();
    assert!(msg.contains("`etc/extra` was added"), "{msg}");

    std::fs::set_permissions(
        root.path.join("etc/hosts"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let msg = check_rootfs(&root).expect_err("chmod").to_string();
    assert!(msg.contains("`etc/hosts` changed"), "{msg}");
}

/// A check remembered for the boot is redone whenever anything in the
/// root changed since, by `lstat`; entries changed within the last
/// seconds are never vouched for.
#[test]
fn a_remembered_check_is_redone_when_anything_in_the_root_changes() {
    let (dir, store) = temp_store();
    let (_, root) = small_root(&store);
    let checks = dir.path().join("checks");
    std::fs::create_dir(&checks).expect("mkdir");
    let remembered = || std::fs::read_dir(&checks).expect("list").count();

    // Just unpacked: checked in full, not remembered.
    check_rootfs_remembered(&root, &checks).expect("fresh");
    assert_eq!(remembered(), 0);
    std::thread::sleep(std::time::Duration::from_secs(
        repro_sandbox::ROOTFS_RACY_SECONDS as u64 + 1,
    ));
    check_rootfs_remembered(&root, &checks).expect("settled");
    assert_eq!(remembered(), 1);
    // Remembered: the files are not read (a damaged listing goes unseen
    // here; `prepare_rootfs` re-hashes it every time).
    let listing = root.entry_dir().join("listing");
    let good = std::fs::read(&listing).expect("listing");
    std::fs::write(&listing, b"damaged").expect("damage");
    check_rootfs_remembered(&root, &checks).expect("remembered");
    check_rootfs(&root).expect_err("a full check reads the listing");
    std::fs::write(&listing, good).expect("repair");

    // Same size, different bytes.
    std::fs::write(root.path.join("usr/bin/python3"), b"PYTHON").expect("modify");
    let err = check_rootfs_remembered(&root, &checks).expect_err("modified");
    let msg = err.to_string();
    assert!(matches!(err, RootfsError::Modified { .. }), "{msg}");
    assert!(msg.contains("`usr/bin/python3` changed"), "{msg}");
    std::fs::write(root.path.join("usr/bin/python3"), b"python").expect("restore");
    check_rootfs_remembered(&root, &checks).expect("restored");

    std::fs::set_permissions(
        root.path.join("etc/hosts"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let msg = check_rootfs_remembered(&root, &checks)
        .expect_err("chmod")
        .to_string();
    assert!(msg.contains("`etc/hosts` changed"), "{msg}");
    std::fs::set_permissions(
        root.path.join("etc/hosts"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod back");

    std::fs::write(root.path.join("etc/extra"), b"").expect("add");
    let msg = check_rootfs_remembered(&root, &checks)
        .expect_err("added")
        .to_string();
    assert!(msg.contains("`etc/extra` was added"), "{msg}");
    std::fs::remove_file(root.path.join("etc/extra")).expect("remove again");

    std::fs::remove_file(root.path.join("usr/bin/perl")).expect("remove");
    let msg = check_rootfs_remembered(&root, &checks)
        .expect_err("removed")
        .to_string();
    assert!(msg.contains("`usr/bin/perl` was removed"), "{msg}");
}

#[test]
fn two_threads_preparing_the_same_image_both_succeed_with_one_result() {
    let (_dir, store) = temp_store();
    let mut tar = Tar::new();
    for i in 0..200 {
        tar = tar.file(&format!("d{}/f{i}", i % 10), 0o644, &[i as u8; 4096]);
    }
    let (image, _) = put_image(&store, &[(tar.finish(), GZIP)]);
    let results: Vec<Rootfs> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| prepare_rootfs(&store, &image)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("prepare"))
            .collect()
    });
    assert_eq!(results[0], results[1]);
    check_rootfs(&results[0]).expect("the winner's tree is complete");
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

#[test]
fn the_busybox_image_unpacks_and_checks() {
    let (_dir, store) = temp_store();
    let image = repro_tests::busybox_image(&store);
    let root = prepare_rootfs(&store, &image).expect("prepare");
    let busybox = std::fs::read(repro_tests::BUSYBOX).expect("host busybox");
    assert_eq!(
        std::fs::read(root.path.join("bin/busybox")).expect("busybox"),
        busybox
    );
    assert_eq!(
        std::fs::read_link(root.path.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    assert_eq!(mode(&root.path.join("bin/busybox")), 0o755);
    assert_eq!(mode(&root.path.join("tmp")), 0o777);
    assert!(root.path.join("repro/out").is_dir());
    check_rootfs(&root).expect("check");
}

#[test]
#[ignore = "needs the example image: REPRO_TEST_IMAGE_ARCHIVE"]
fn the_debian_example_image_unpacks_and_has_python3() {
    let archive = std::env::var_os("REPRO_TEST_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .expect("REPRO_TEST_IMAGE_ARCHIVE is not set: run ci/setup and point it at the OCI tar");
    assert!(
        archive.is_file(),
        "REPRO_TEST_IMAGE_ARCHIVE `{}` is not a file",
        archive.display()
    );
    let (_dir, store) = temp_store();
    let image = repro_toolchains::import_archive(&store, &archive).expect("import");
    let t = Instant::now();
    let root = prepare_rootfs(&store, &image).expect("prepare");
    let unpack = t.elapsed();
    let t = Instant::now();
    check_rootfs(&root).expect("check");
    let check = t.elapsed();
    let t = Instant::now();
    let hit = prepare_rootfs(&store, &image).expect("cache hit");
    let cached = t.elapsed();
    assert_eq!(hit, root);
    let python = root.path.join("usr/bin/python3");
    assert!(
        std::fs::symlink_metadata(&python).is_ok(),
        "`{}` is missing",
        python.display()
    );
    let lines = listing(&root).lines().count();
    eprintln!(
        "debian example: {lines} entries; unpack {unpack:?}, check {check:?}, cache hit {cached:?}"
    );
}
