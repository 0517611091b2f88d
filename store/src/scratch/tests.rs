//! Tests of the scratch directories, through [`Store`]: a file of its own
//! so that `scratch.rs` itself stays below `lib.rs` in the module order.

use super::*;
use crate::Store;
use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

/// Set in the environment of the child process that
/// [`child_holding_scratch`] runs in: the store it opens.
const CHILD_ENV: &str = "SCRATCH_TEST_CHILD_STORE";

fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    (t, s)
}

fn root(s: &Store) -> PathBuf {
    s.layout_dir().join("tmp")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What a build killed with `kill -9` leaves: the directory of a process
/// that is gone (nothing holds its lock), with a step's scratch (a
/// read-only folder in it) and a half-written temp file.
fn dead_owner(s: &Store, name: &str) -> PathBuf {
    let dir = root(s).join(name);
    let ro = dir.join("step-train-Ab12cd/out/ro");
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("weights.bin"), vec![7u8; 4096]).unwrap();
    fs::write(dir.join(".w-Xy12ab"), b"half written").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    dir
}

/// Process ids are below 2^22 on Linux: this one never runs.
const GONE: &str = "4294967295-1-0";

fn own_start_time() -> u64 {
    start_time(&fs::read_to_string("/proc/self/stat").unwrap()).unwrap()
}

#[test]
fn start_time_is_field_22_even_with_spaces_and_parentheses_in_the_name() {
    let line =
        "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 1234 56";
    assert_eq!(start_time(line), Some(987654));
    assert_eq!(start_time("4242 (x) S 1"), None);
    assert!(own_start_time() > 0);
}

#[test]
fn temp_files_and_scratch_live_in_a_directory_named_after_this_process() {
    let (_t, s) = store();
    // Opening a new store wrote `oci-layout` atomically, before any lock.
    let own = s.tmp_dir();
    assert_eq!(own.parent(), Some(root(&s).as_path()));
    let name = own.file_name().unwrap().to_str().unwrap().to_string();
    assert!(is_owner_name(OsStr::new(&name)), "{name}");
    let parts: Vec<&str> = name.split('-').collect();
    assert_eq!(parts[0], std::process::id().to_string(), "{name}");
    assert_eq!(parts[1], own_start_time().to_string(), "{name}");
    assert_eq!(names(&root(&s)), [name]);
    assert!(names(&own).is_empty(), "no temp file is left");

    let scratch = s.scratch("step-x-").unwrap();
    assert_eq!(scratch.path().parent(), Some(own.as_path()));
    s.put_bytes(b"some blob").unwrap();
    assert_eq!(names(&own).len(), 1, "only the scratch directory");
    // Clones share the directory; another store opened by this process
    // gets its own.
    assert_eq!(s.clone().tmp_dir(), own);
    let other = Store::open(s.dir()).unwrap();
    other.put_bytes(b"another blob").unwrap();
    assert_ne!(other.tmp_dir(), own);
    assert!(is_owner_name(other.tmp_dir().file_name().unwrap()));
}

#[test]
fn the_next_lock_removes_the_scratch_of_a_process_that_is_gone() {
    for lock in ["shared", "exclusive", "try exclusive"] {
        let (_t, s) = store();
        let dead = dead_owner(&s, GONE);
        // A recycled process id: this process's, with another start time.
        let recycled = dead_owner(
            &s,
            &format!("{}-{}-0", std::process::id(), own_start_time() + 1),
        );
        // Leftovers of older versions, not owned: gc's (after an hour).
        fs::write(root(&s).join(".blob-legacy"), b"x").unwrap();
        fs::create_dir(root(&s).join("step-legacy-Zz9")).unwrap();
        fs::create_dir(root(&s).join("rootfs-unpacking")).unwrap();
        // An owner directory being made (or left by a kill just then).
        fs::create_dir(root(&s).join(".owner-Qw3rty")).unwrap();
        // This process's own scratch, in use.
        let mine = s.scratch("step-mine-").unwrap();
        fs::write(mine.path().join("partial"), b"in use").unwrap();

        let held = match lock {
            "shared" => s.lock_shared().unwrap(),
            "exclusive" => s.lock_exclusive().unwrap(),
            _ => s.try_lock_exclusive().unwrap().unwrap(),
        };
        assert!(!dead.exists(), "{lock}");
        assert!(!recycled.exists(), "{lock}");
        assert!(mine.path().join("partial").exists(), "{lock}");
        let mut want = vec![
            ".blob-legacy".to_string(),
            ".owner-Qw3rty".to_string(),
            "rootfs-unpacking".to_string(),
            "step-legacy-Zz9".to_string(),
            s.tmp_dir()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        ];
        want.sort();
        assert_eq!(names(&root(&s)), want, "{lock}");
        drop(held);
    }
}

#[test]
fn a_removal_cut_short_is_finished_by_the_next_one() {
    let (_t, s) = store();
    let dead = dead_owner(&s, GONE);
    // A cleaner killed half-way: the step's scratch went, the rest not.
    let step = dead.join("step-train-Ab12cd");
    fs::set_permissions(step.join("out/ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(&step).unwrap();
    assert_eq!(s.remove_dead_scratch().unwrap(), 1);
    assert!(!dead.exists());
    assert_eq!(s.remove_dead_scratch().unwrap(), 0);
}

#[test]
fn another_stores_scratch_in_this_process_is_left_alone() {
    let (_t, s) = store();
    let other = Store::open(s.dir()).unwrap();
    let theirs = other.scratch("step-theirs-").unwrap();
    drop(s.lock_exclusive().unwrap());
    assert_eq!(s.remove_dead_scratch().unwrap(), 0);
    assert!(theirs.path().exists());
}

#[test]
fn the_directory_goes_with_the_last_store_unless_scratch_outlives_it() {
    let (t, s) = store();
    s.put_bytes(b"x").unwrap();
    let own = s.tmp_dir();
    let clone = s.clone();
    drop(s);
    assert!(own.exists(), "a clone still uses it");
    drop(clone);
    assert!(!own.exists());
    assert!(names(&t.path().join("v1/tmp")).is_empty());

    // A scratch directory kept after its store is dropped stays claimed.
    let s = Store::open(t.path()).unwrap();
    let kept = s.scratch("step-kept-").unwrap();
    drop(s);
    let other = Store::open(t.path()).unwrap();
    drop(other.lock_shared().unwrap());
    assert!(kept.path().exists());
}

/// Not a test on its own: the child process of
/// [`a_live_processs_scratch_survives_another_processs_cleanup`]. It
/// makes scratch in the store named by [`CHILD_ENV`], prints its path
/// and waits until its stdin closes (or it is killed).
#[test]
#[ignore = "helper: run as a child process by another test"]
fn child_holding_scratch() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let s = Store::open(Path::new(&dir)).unwrap();
    let scratch = s.scratch("step-child-").unwrap();
    fs::write(scratch.path().join("partial"), b"in use").unwrap();
    // On a line of its own: libtest has printed `test <name> ... `.
    println!("\nscratch={}", scratch.path().display());
    // Until the parent closes stdin or kills this process; a minute at most.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
}

#[test]
fn a_live_processs_scratch_survives_another_processs_cleanup() {
    let (t, s) = store();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "scratch::tests::child_holding_scratch",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, t.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let scratch = lines
        .find_map(|l| Some(PathBuf::from(l.ok()?.strip_prefix("scratch=")?)))
        .expect("the child printed its scratch");
    let theirs = scratch.parent().unwrap().to_path_buf();
    let name = theirs.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("{}-", child.id())), "{name}");

    // Every way this process cleans leaves the live child's scratch.
    drop(s.lock_shared().unwrap());
    drop(s.lock_exclusive().unwrap());
    drop(s.try_lock_exclusive().unwrap());
    assert_eq!(s.remove_dead_scratch().unwrap(), 0);
    assert!(scratch.join("partial").exists());

    // kill -9: the next lock removes it.
    child.kill().unwrap();
    child.wait().unwrap();
    drop(s.lock_shared().unwrap());
    assert!(!theirs.exists(), "{name} left behind");
}
