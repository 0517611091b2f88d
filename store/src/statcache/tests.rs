//! Tests of the stat cache, through [`Store::snapshot_dir`]: a file of its
//! own so that `statcache.rs` itself stays below `snapshot.rs` in the
//! module order (these tests drive both).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::snapshot::tests::{reference_digest, sample, store};
use crate::snapshot::SnapshotStats;
use crate::{EntryKind, GcOptions, GcRoots, Ingest};

/// The number of regular files under `dir`.
fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += count_files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

/// Snapshot (copy) as if it were `later` after now: the files written
/// by the test are then old enough for the stat cache to trust them.
fn snap(s: &Store, dir: &Path, later: Duration) -> (TreeDigest, SnapshotStats) {
    s.snapshot_with_stats(dir, Ingest::Copy, SystemTime::now() + later)
        .unwrap()
}

const LATER: Duration = Duration::from_secs(10);

fn cache_files(s: &Store) -> Vec<PathBuf> {
    match fs::read_dir(cache_dir(s)) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Let the clock move past the timestamps of what was just written
/// (ctime granularity can be a scheduler tick).
fn tick() {
    std::thread::sleep(Duration::from_millis(30));
}

#[test]
fn an_unchanged_directory_is_not_read_again() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let n = count_files(&src);
    let (d1, st1) = snap(&s, &src, LATER);
    assert_eq!(d1, reference_digest(&src));
    assert_eq!((st1.hashed, st1.reused), (n, 0));
    assert!(st1.cache_written);
    assert_eq!(cache_files(&s).len(), 1);
    let (d2, st2) = snap(&s, &src, 2 * LATER);
    assert_eq!(d2, d1);
    assert_eq!(
        st2,
        SnapshotStats {
            hashed: 0,
            reused: n,
            trees_written: 0,
            cache_written: false,
            dirs_listed: 0,
        }
    );
    // The public entry point uses the cache too (its entries are old
    // enough by now in the cache's own terms: recorded "later").
    assert_eq!(s.snapshot_dir(&src, Ingest::Copy).unwrap(), d1);
}

#[test]
fn a_same_size_change_with_the_mtime_restored_is_read_again() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let f = src.join("sub/deeper/deepest/x.bin");
    let (d1, _) = snap(&s, &src, LATER);
    tick();
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    fs::write(&f, [9, 9, 9, 9]).unwrap();
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().modified().unwrap(), mtime);
    let (d2, st) = snap(&s, &src, 2 * LATER);
    assert_ne!(d2, d1);
    assert_eq!(d2, reference_digest(&src));
    assert_eq!(st.hashed, 1);
    // The changed leaf's tree and the three above it.
    assert_eq!(st.trees_written, 4);
    assert!(st.cache_written);
    // And the next one trusts the new entry.
    let (d3, st) = snap(&s, &src, 3 * LATER);
    assert_eq!((d3, st.hashed), (d2, 0));
}

/// A cache of format version 1 (no directory stats) as an earlier
/// `repro` wrote it: the same bytes as `v2` without the directories'
/// stats, with the checksum made again.
fn downgrade_to_v1(v2: &[u8]) -> Vec<u8> {
    let body = &v2[..v2.len() - 4];
    let mut c = Cursor { b: body, at: 0 };
    let mut w = Vec::new();
    let header = |c: &mut Cursor| {
        c.array::<16>().unwrap();
        assert_eq!(c.u32(), Some(VERSION));
        c.array::<16>().unwrap();
        c.bytes().unwrap();
        c.time().unwrap();
    };
    header(&mut c);
    w.extend_from_slice(MAGIC);
    w.extend_from_slice(&1u32.to_le_bytes());
    w.extend_from_slice(&body[20..c.at]);
    let n_dirs = c.u32().unwrap();
    w.extend_from_slice(&n_dirs.to_le_bytes());
    for _ in 0..n_dirs {
        let start = c.at;
        c.bytes().unwrap();
        c.array::<32>().unwrap();
        w.extend_from_slice(&body[start..c.at]);
        match c.u8().unwrap() {
            DIR_NO_STAT => {}
            k => {
                c.stat(k == DIR_STAT_EXEC).unwrap();
            }
        }
        let start = c.at;
        let len = c.u32().unwrap();
        for _ in 0..len {
            c.entry().unwrap();
        }
        w.extend_from_slice(&body[start..c.at]);
    }
    assert_eq!(c.at, body.len());
    let crc = crc32fast::hash(&w);
    w.extend_from_slice(&crc.to_le_bytes());
    w
}

/// A version 1 cache is still trusted for its files (every directory is
/// listed again, as it has no directory stats), and the snapshot
/// rewrites it as the current version.
#[test]
fn a_version_1_cache_is_used_and_upgraded() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let n = count_files(&src);
    let (d1, _) = snap(&s, &src, LATER);
    let files = cache_files(&s);
    assert_eq!(files.len(), 1);
    let v2 = fs::read(&files[0]).unwrap();
    fs::write(&files[0], downgrade_to_v1(&v2)).unwrap();

    let (d2, st) = snap(&s, &src, 2 * LATER);
    assert_eq!(d2, d1);
    assert_eq!((st.hashed, st.reused), (0, n), "files trusted from v1");
    assert_eq!(st.dirs_listed, SAMPLE_DIRS, "v1 has no directory stats");
    assert!(st.cache_written, "upgraded");
    let upgraded = fs::read(&files[0]).unwrap();
    assert_eq!(&upgraded[16..20], &VERSION.to_le_bytes());

    let (d3, st) = snap(&s, &src, 3 * LATER);
    assert_eq!((d3, st.hashed, st.dirs_listed), (d1, 0, 0));
    assert!(!st.cache_written);
}

/// The directories of [`sample`].
const SAMPLE_DIRS: usize = 6;

#[test]
fn entries_added_removed_renamed_or_replaced_are_noticed() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let (_, st) = snap(&s, &src, LATER);
    assert_eq!(st.dirs_listed, SAMPLE_DIRS);
    let (_, st) = snap(&s, &src, 2 * LATER);
    assert_eq!(st.dirs_listed, 0, "every listing from the cache");
    let changes: [(&str, &dyn Fn()); 6] = [
        ("added", &|| {
            fs::write(src.join("many/new"), b"new").unwrap()
        }),
        ("removed", &|| {
            fs::remove_file(src.join("many/f03")).unwrap()
        }),
        ("renamed", &|| {
            fs::rename(src.join("many/f04"), src.join("many/g04")).unwrap()
        }),
        ("symlink replaced", &|| {
            fs::remove_file(src.join("sub/link")).unwrap();
            std::os::unix::fs::symlink("../run.sh", src.join("sub/link")).unwrap();
        }),
        ("file replaced by a directory", &|| {
            fs::remove_file(src.join("sub/deeper/empty-exec")).unwrap();
            fs::create_dir(src.join("sub/deeper/empty-exec")).unwrap();
        }),
        ("directory added", &|| {
            fs::create_dir(src.join("sub/deeper/deepest/more")).unwrap();
            fs::write(src.join("sub/deeper/deepest/more/y"), b"y").unwrap();
        }),
    ];
    for (i, (what, change)) in changes.iter().enumerate() {
        tick();
        change();
        let later = LATER * (3 + 2 * i as u32);
        let (d, st) = snap(&s, &src, later);
        assert_eq!(d, reference_digest(&src), "{what}");
        assert!(st.dirs_listed >= 1, "{what}");
        assert!(st.cache_written, "{what}");
        let (d2, st) = snap(&s, &src, later + LATER);
        assert_eq!((d2, st.hashed, st.dirs_listed), (d, 0, 0), "{what}");
    }
}

#[test]
fn a_directory_changed_just_before_its_snapshot_is_read() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    snap(&s, &src, LATER);
    tick();
    fs::write(src.join("many/new"), b"new").unwrap();
    // Recorded right after the change: racy, so read again next time,
    // even if its stat stays the same.
    let (d, st) = snap(&s, &src, Duration::ZERO);
    assert_eq!(d, reference_digest(&src));
    assert!(st.dirs_listed >= 1);
    let (_, st) = snap(&s, &src, Duration::ZERO);
    assert!(st.dirs_listed >= 1, "racy: listed again");
}

#[test]
fn a_cached_listing_naming_a_file_that_is_gone_is_not_used() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let (d1, _) = snap(&s, &src, LATER);
    // Doctor the cache (a filesystem that does not update a directory's
    // stat would look like this): `many/f19` is recorded as `many/f1:`
    // (which sorts where it did).
    let file = cache_files(&s).pop().unwrap();
    let mut b = fs::read(&file).unwrap();
    let at = b.windows(7).position(|w| w == b"\x03\0\0\0f19").unwrap();
    b[at + 6] = b':';
    let body = b.len() - 4;
    let crc = crc32fast::hash(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&file, &b).unwrap();
    let (d, st) = snap(&s, &src, 2 * LATER);
    assert_eq!(d, d1);
    assert_eq!(d, reference_digest(&src));
    assert_eq!(st.dirs_listed, 1, "`many` listed after all");
    assert_eq!(st.hashed, 1, "`many/f19` has no cache entry");
}

#[test]
fn racy_entries_are_read_again() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let n = count_files(&src);
    // Recorded now, right after the files were written: all racy.
    let (d1, st) = snap(&s, &src, Duration::ZERO);
    assert_eq!(st.hashed, n);
    let (d2, st) = snap(&s, &src, Duration::ZERO);
    assert_eq!((d2, st.hashed, st.reused), (d1, n, 0));
    assert_eq!(st.dirs_listed, SAMPLE_DIRS, "racy directories too");
    // Recorded well after: trusted from the next snapshot on.
    let (_, st) = snap(&s, &src, LATER);
    assert_eq!(st.hashed, n);
    let (d4, st) = snap(&s, &src, 2 * LATER);
    assert_eq!((d4, st.hashed, st.reused), (d1, 0, n));
}

#[test]
fn the_racy_rule_at_its_edge() {
    let cache = |recorded_at: (i64, u32)| Cache {
        version: VERSION,
        buf: Bytes::Owned(Vec::new()),
        recorded_at,
        dirs: Vec::new(),
        index: HashMap::new(),
    };
    let stat = |mtime: (i64, u32), ctime: (i64, u32)| FileStat {
        dev: 1,
        ino: 2,
        size: 3,
        mtime,
        ctime,
        executable: false,
    };
    let c = cache((1_000, 500));
    assert!(c.trusted(&stat((998, 500), (998, 500))));
    assert!(!c.trusted(&stat((998, 501), (998, 500))));
    assert!(!c.trusted(&stat((998, 500), (998, 501))), "ctime counts");
    assert!(c.trusted(&stat((100, 0), (998, 0))));
    assert!(!c.trusted(&stat((100, 0), (999, 999_999_999))));
    assert!(
        !c.trusted(&stat((2_000, 0), (100, 0))),
        "mtime in the future"
    );
}

#[test]
fn a_corrupt_truncated_or_foreign_cache_file_is_ignored() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let n = count_files(&src);
    let (d1, _) = snap(&s, &src, LATER);
    let file = cache_files(&s).pop().unwrap();
    let good = fs::read(&file).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    let other_version = {
        let mut b = good.clone();
        b[16] = 99;
        let body = b.len() - 4;
        let crc = crc32fast::hash(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let bad: [(&str, Vec<u8>); 5] = [
        ("a flipped bit", flipped),
        ("truncated", good[..good.len() - 9].to_vec()),
        ("empty", Vec::new()),
        (
            "garbage",
            b"not a stat cache at all, just some text".to_vec(),
        ),
        ("another format version", other_version),
    ];
    for (what, bytes) in bad {
        fs::write(&file, bytes).unwrap();
        let (d, st) = snap(&s, &src, 2 * LATER);
        assert_eq!(d, d1, "{what}");
        assert_eq!((st.hashed, st.reused), (n, 0), "{what}");
        assert!(st.cache_written, "{what}: replaced by a good one");
        let (_, st) = snap(&s, &src, 3 * LATER);
        assert_eq!(st.hashed, 0, "{what}");
    }
    // A cache file of another directory (same format) is not used.
    let other = t.path().join("other");
    sample(&other);
    let (_, _) = snap(&s, &other, LATER);
    let files = cache_files(&s);
    assert_eq!(files.len(), 2);
    let other_file = files.iter().find(|p| **p != file).unwrap();
    fs::copy(other_file, &file).unwrap();
    let (d, st) = snap(&s, &src, 2 * LATER);
    assert_eq!((d, st.hashed), (d1, n));
}

#[test]
fn gc_invalidates_the_caches_and_a_stale_one_stays_ignored() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let n = count_files(&src);
    let (d1, _) = snap(&s, &src, LATER);
    let file = cache_files(&s).pop().unwrap();
    let saved = fs::read(&file).unwrap();
    // A collection that keeps the tree objects (as plain blobs) but not
    // the file blobs: the cached listings and tree objects all still
    // match, only the generation tells the cache is stale.
    let mut trees = BTreeSet::new();
    let mut todo = vec![d1];
    while let Some(t) = todo.pop() {
        trees.insert(BlobDigest::from_hash(t.hash()));
        for e in s.get_tree(&t).unwrap().entries {
            if let EntryKind::Dir { tree } = e.kind {
                todo.push(tree);
            }
        }
    }
    let roots = GcRoots {
        blobs: trees,
        ..GcRoots::default()
    };
    let plan = s.gc_plan(&roots, &GcOptions::default()).unwrap();
    assert!(plan.count(crate::GcKind::Blob) > 0);
    s.gc_sweep(&plan).unwrap();
    assert!(cache_files(&s).is_empty());
    assert!(!s.tree_is_complete(&d1).unwrap());
    // A snapshot that read the cache before the collection and wrote it
    // after would bring it back: it must not count.
    fs::write(&file, &saved).unwrap();
    let (d2, st) = snap(&s, &src, 2 * LATER);
    assert_eq!((d2, st.hashed, st.reused), (d1, n, 0));
    assert!(s.tree_is_complete(&d1).unwrap(), "every blob is back");
    // A collection that removes no blob leaves the caches alone.
    let roots = GcRoots {
        trees: BTreeSet::from([d1]),
        ..GcRoots::default()
    };
    let plan = s.gc_plan(&roots, &GcOptions::default()).unwrap();
    assert_eq!(plan.count(crate::GcKind::Blob), 0);
    s.gc_sweep(&plan).unwrap();
    let (_, st) = snap(&s, &src, 3 * LATER);
    assert_eq!(st.hashed, 0);
}

#[test]
fn a_replaced_file_is_read_again() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let f = src.join("data.csv");
    let (d1, _) = snap(&s, &src, LATER);
    // Same size, same mtime, but a new file (new inode) renamed over it.
    let meta = fs::metadata(&f).unwrap();
    let new = src.join("data.csv.new");
    fs::write(&new, b"x,y\n3,4\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&new)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    fs::rename(&new, &f).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), meta.len());
    let (d2, st) = snap(&s, &src, 2 * LATER);
    assert_ne!(d2, d1);
    assert_eq!(d2, reference_digest(&src));
    assert_eq!(st.hashed, 1);
}

#[test]
fn chmod_x_is_noticed() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let (d1, _) = snap(&s, &src, LATER);
    tick();
    fs::set_permissions(src.join("data.csv"), fs::Permissions::from_mode(0o755)).unwrap();
    let (d2, st) = snap(&s, &src, 2 * LATER);
    assert_ne!(d2, d1);
    assert_eq!(d2, reference_digest(&src));
    assert_eq!(st.hashed, 1);
    assert!(matches!(
        s.flatten(&d2).unwrap()["data.csv"],
        crate::FileEntry::File {
            executable: true,
            ..
        }
    ));
}

#[test]
fn blobs_removed_by_hand_are_put_back() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let (d1, _) = snap(&s, &src, LATER);
    let flat = s.flatten(&d1).unwrap();
    let blob_of = |path: &str| match &flat[path] {
        crate::FileEntry::File { digest, .. } => *digest,
        e => panic!("{e:?}"),
    };

    // A blob gone from a directory that changed otherwise: that file is
    // read again along with the changed one.
    fs::remove_file(s.blob_path(&blob_of("many/f07"))).unwrap();
    tick();
    fs::write(src.join("many/new"), b"new").unwrap();
    let (_, st) = snap(&s, &src, 2 * LATER);
    assert_eq!(st.hashed, 2);
    assert!(s.has_blob(&blob_of("many/f07")));
    fs::remove_file(src.join("many/new")).unwrap();
    let (d, _) = snap(&s, &src, 3 * LATER);
    assert_eq!(d, d1);

    // A tree object gone: the blobs of its files are looked up (they
    // are there) and the tree object is written again.
    let sub = s.get_tree(&d1).unwrap();
    let sub = sub.entries.iter().find(|e| e.name == "sub").unwrap();
    let EntryKind::Dir { tree: sub } = sub.kind else {
        panic!()
    };
    fs::remove_file(s.blob_path(&BlobDigest::from_hash(sub.hash()))).unwrap();
    let (d, st) = snap(&s, &src, 4 * LATER);
    assert_eq!(d, d1);
    assert_eq!((st.hashed, st.trees_written), (0, 1));
    assert!(s.tree_is_complete(&d1).unwrap());
    // Both gone: the file is read again.
    fs::remove_file(s.blob_path(&BlobDigest::from_hash(sub.hash()))).unwrap();
    fs::remove_file(s.blob_path(&blob_of("sub/empty.txt"))).unwrap();
    let (d, st) = snap(&s, &src, 5 * LATER);
    assert_eq!(d, d1);
    assert_eq!((st.hashed, st.trees_written), (1, 1));
    assert!(s.tree_is_complete(&d1).unwrap());

    // A blob gone from an unchanged directory with its tree: not seen by
    // the snapshot, but the first use of the tree that notices it
    // invalidates the caches, and the next snapshot puts it back.
    let gone = blob_of("sub/deeper/deepest/x.bin");
    fs::remove_file(s.blob_path(&gone)).unwrap();
    let (d, st) = snap(&s, &src, 6 * LATER);
    assert_eq!((d, st.hashed), (d1, 0));
    let err = s.materialize(&d1, &t.path().join("out")).unwrap_err();
    assert!(matches!(err, crate::Error::Missing { .. }), "{err}");
    let (d, st) = snap(&s, &src, 7 * LATER);
    assert_eq!(d, d1);
    assert_eq!(st.hashed, count_files(&src));
    assert!(s.has_blob(&gone));
    s.materialize(&d1, &t.path().join("out")).unwrap();
}

#[test]
fn a_corrupt_blob_found_anywhere_invalidates_the_caches() {
    let (t, s) = store();
    let src = t.path().join("src");
    sample(&src);
    let (d1, _) = snap(&s, &src, LATER);
    let crate::FileEntry::File { digest, .. } = s.flatten(&d1).unwrap()["data.csv"] else {
        panic!()
    };
    crate::blob::tests::corrupt(&s.blob_path(&digest));
    assert!(s.verify_blob(&digest).is_err());
    assert!(cache_files(&s).is_empty());
    let (_, st) = snap(&s, &src, 2 * LATER);
    assert_eq!(st.hashed, count_files(&src));
    s.verify_blob(&digest).unwrap();
}

#[test]
fn move_ingest_keeps_no_cache_and_concurrent_snapshots_agree() {
    let (t, s) = store();
    let scratch = s.scratch("out-").unwrap();
    sample(scratch.path());
    s.snapshot_dir(scratch.path(), Ingest::Move).unwrap();
    assert!(cache_files(&s).is_empty());

    let src = t.path().join("src");
    sample(&src);
    let want = reference_digest(&src);
    std::thread::scope(|sc| {
        for i in 0..4u32 {
            let (s, src) = (&s, &src);
            sc.spawn(move || {
                for j in 0..3u32 {
                    let (d, _) = snap(s, src, LATER * (1 + i * 3 + j));
                    assert_eq!(d, want);
                }
            });
        }
    });
    assert_eq!(cache_files(&s).len(), 1);
    let (d, st) = snap(&s, &src, 20 * LATER);
    assert_eq!((d, st.hashed), (want, 0));
}
