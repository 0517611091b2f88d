//! Scratch ownership: which leftovers in `v1/tmp` belong to a process that
//! is gone, so that the next command can remove them at once.
//!
//! ```text
//! <root>/v1/tmp/<pid>-<start>-<n>/   the scratch of one Store of a running (or killed) process
//! <root>/v1/tmp/.owner-XXXXXX/       such a directory being made (renamed at once)
//! <root>/v1/tmp/<anything else>      not owned: left by an older version, or by the sandbox's
//!                                    rootfs unpacking; `repro gc` removes it after an hour
//! ```
//!
//! **Ownership.** A [`Store`] keeps its temp files (those of the atomic
//! writers, `.w-*`, `.blob-*`, `.statcache-*`) and its scratch directories
//! ([`Store::scratch`], e.g. a step's `step-<name>-XXXXXX`) in a directory
//! of its own, [`Store::tmp_dir`], made on first use (by a write as much
//! as by a lock: [`Store::open`] may write before any lock is taken). It
//! is named after the process, its id and its start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot), and a number counting
//! the stores this process opened, so that no two processes, even one
//! that got a recycled process id, and no two stores of one process share
//! a name. The process holds an exclusive `flock` on the directory itself
//! for as long as it may use it. The directory is made as `.owner-XXXXXX`,
//! locked, then renamed: a directory with an owner's name is locked from
//! the moment it has that name.
//!
//! **Who is gone.** A lock proves it, not the process id: the kernel drops a
//! `flock` when the last descriptor of it closes, however the process
//! ended (`kill -9` included), and a process that still runs (in another
//! pid namespace too) still holds it. The descriptor is close-on-exec,
//! so a step's sandbox does not inherit it. Every function that takes the
//! store lock ([`Store::lock_shared`], [`Store::lock_exclusive`],
//! [`Store::try_lock_exclusive`]), once it holds it, calls
//! [`Store::remove_dead_scratch`]: one `readdir` of `v1/tmp`, and for each
//! other owner directory a non-blocking exclusive `flock`. Refused: its
//! owner runs, it stays. Granted: its owner is gone; its contents are
//! removed, then the directory itself (still locked by the cleaner, so two
//! cleaners never work on one directory at once). A cleaner killed half-way
//! leaves the directory unlocked, and the next one finishes the job. With
//! nothing to clean that is the `readdir` alone (plus an `open` and a
//! `flock` for each other process that has a directory there). Cleaning runs under the store lock, so never while `repro gc`
//! (which holds it exclusively) sweeps; `gc` itself removes a dead
//! owner's directory at any age and a live owner's never (see [`crate::gc`]).
//!
//! **End.** When the last clone of a [`Store`] is dropped, its directory is
//! removed if it is empty. If a scratch directory outlives the store, the
//! lock is kept (its descriptor left open) until the process ends, and the
//! next command after that removes what is left.
//!
//! If the directory cannot be made or locked (a file system without
//! `flock`), temp files go to `v1/tmp` itself, unowned, as before owners
//! existed.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::io_err;
use crate::Result;
#[cfg(doc)]
use crate::Store;

/// One [`Store`]'s claim on its scratch directory in `v1/tmp`: made on
/// first use, shared by the store's clones, given up when the last one is
/// dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    /// `v1/tmp`.
    root: PathBuf,
    /// The directory and the locked descriptor of it, once made.
    owned: OnceLock<Owned>,
    /// Held while the directory is made, so that it is made once.
    making: Mutex<()>,
}

#[derive(Debug)]
struct Owned {
    dir: PathBuf,
    lock: fs::File,
}

/// How many owner directories this process has made: the `<n>` of their names.
static MADE: AtomicU64 = AtomicU64::new(0);

impl Lease {
    pub(crate) fn new(root: PathBuf) -> Lease {
        Lease {
            root,
            owned: OnceLock::new(),
            making: Mutex::new(()),
        }
    }

    /// The directory to put scratch in: this lease's, made now if need be;
    /// `v1/tmp` itself if it cannot be made.
    pub(crate) fn dir(&self) -> PathBuf {
        if let Some(o) = self.owned.get() {
            return o.dir.clone();
        }
        let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = self.owned.get() {
            return o.dir.clone();
        }
        match make(&self.root) {
            Ok(o) => {
                let dir = o.dir.clone();
                let _ = self.owned.set(o);
                dir
            }
            Err(_) => self.root.clone(),
        }
    }

    /// The name of this lease's directory, if made.
    pub(crate) fn name(&self) -> Option<&OsStr> {
        self.owned.get().and_then(|o| o.dir.file_name())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(o) = self.owned.take() else {
            return;
        };
        match fs::remove_dir(&o.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not empty: scratch outlives the store. Keep the claim until
            // the process ends.
            Err(_) => std::mem::forget(o.lock),
        }
    }
}

/// Make, lock and name an owner directory in `root`.
fn make(root: &Path) -> io::Result<Owned> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let start = start_time(&stat).ok_or_else(|| io::Error::other("no start time"))?;
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{start}-{n}", std::process::id());
    let staging = tempfile::Builder::new()
        .prefix(".owner-")
        .tempdir_in(root)?;
    // Close-on-exec (as std opens every file): no child inherits the claim.
    let lock = fs::File::open(staging.path())?;
    fs4::fs_std::FileExt::try_lock_exclusive(&lock)?;
    let dir = root.join(name);
    // The name is this process's alone. (Were it taken all the same, an
    // empty directory would be replaced and anything else make this fail.)
    fs::rename(staging.path(), &dir)?;
    let _ = staging.keep();
    Ok(Owned { dir, lock })
}

/// Whether `name` is an owner directory's: `<pid>-<start>-<n>`, digits.
pub(crate) fn is_owner_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let mut parts = 0;
    for part in name.split('-') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        parts += 1;
    }
    parts == 3
}

/// Whether the owner of the directory at `path` is gone: `Some` with the
/// lock on it, now the caller's, if so.
pub(crate) fn claim_if_dead(path: &Path) -> Result<Option<fs::File>> {
    let dir = match fs::File::open(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    match fs4::fs_std::FileExt::try_lock_exclusive(&dir) {
        Ok(()) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(io_err("lock", path)(e)),
    }
}

/// Remove the owner directory at `path` if its owner is gone: its
/// contents, then itself. `true` if it was removed.
pub(crate) fn remove_if_dead(path: &Path) -> Result<bool> {
    let Some(lock) = claim_if_dead(path)? else {
        return Ok(false);
    };
    // remove_tree removes the directory last: cut short, it stays for the
    // next cleaner, unlocked.
    crate::gc::remove_tree(path)?;
    drop(lock);
    Ok(true)
}

/// Remove the owner directories in `root` (`v1/tmp`) whose owner is gone,
/// except `own`; returns how many. Goes on past a directory it cannot
/// remove, and returns the first such error at the end.
pub(crate) fn remove_dead(root: &Path, own: Option<&OsStr>) -> Result<usize> {
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("list", root)(e)),
    };
    let mut removed = 0;
    let mut first_error = None;
    for entry in rd {
        let entry = entry.map_err(io_err("list", root))?;
        let name = entry.file_name();
        if Some(name.as_os_str()) == own || !is_owner_name(&name) {
            continue;
        }
        match remove_if_dead(&entry.path()) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Field 22 of a `/proc/<pid>/stat` line: the process's start time, in
/// clock ticks since boot. The second field (the command name, in
/// parentheses) may hold spaces and parentheses: fields are counted from
/// the last `)`.
pub(crate) fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after it.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
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
}
