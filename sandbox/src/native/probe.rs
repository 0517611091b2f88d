//! The check that this machine can create a step's namespaces (the init
//! executable run with `--probe`), started by `NativeSandbox::new`
//! without waiting for it, and remembered for the rest of the boot.
//!
//! The probe is an executable start and the creation of seven namespaces,
//! about 2.5 ms, which a one-step `repro verify` paid before anything
//! else. Now:
//!
//! - `new` starts the probe and returns; the sandbox waits for its answer
//!   before it uses an image (`NativeSandbox::ensure_image`, after the
//!   image's root is checked, which runs meanwhile) or runs a step. A
//!   refused namespace is still [`Error::Namespaces`], only reported there
//!   instead of by `new`.
//! - A probe that passed is remembered in a runtime directory
//!   (`native-probe` in [`DEFAULT_CACHE_DIR`], root's only, mode `0700`;
//!   see [`private_dir`]), under a key made
//!   of the kernel's boot id, the kernel release, the effective uid and
//!   the init executable's identity (device, inode, size, modification and
//!   change times), so a reboot or another `repro` binary probes again.
//!   The file is trusted only in a directory owned by this user and
//!   writable by no one else.
//! - Should the machine have changed since (a `sysctl` turning user
//!   namespaces off, say), the step's own init meets the refusal and the
//!   step fails with the same message the probe would have given, naming
//!   the setting; the sandbox then forgets the remembered pass
//!   ([`Probe::forget`]), so the next `repro` probes again.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::protocol::{self, FromInit, INIT_ARG, PROBE_ARG};
use crate::error::native::{Error, Result};

/// Where the native sandbox remembers, until the next boot, the checks that
/// passed (the namespace probe, the check of each image's root), unless it
/// is told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/run/repro";

/// Bumped when what the probe checks changes, so older passes are not used.
const PROBE_VERSION: &str = "1";

/// The probe of one sandbox.
#[derive(Debug)]
pub(super) struct Probe {
    exe: PathBuf,
    /// The file remembering a pass (when there is a usable cache).
    cache_file: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// Running (or not yet waited for).
    Running(Child),
    /// It passed (`cached`: remembered from an earlier run in this boot).
    Passed { cached: bool },
    /// It failed; the error is rebuilt from this for every caller.
    Failed(Failure),
}

#[derive(Debug, Clone)]
enum Failure {
    Namespaces(String),
    InitExe(String),
}

impl Probe {
    /// Start the probe of `exe`, or take a pass remembered in `cache_dir`
    /// (none: never remember). Only an executable that cannot be started
    /// at all fails here.
    pub(super) fn start(exe: &Path, cache_dir: Option<&Path>) -> Result<Probe> {
        let cache_file = cache_dir
            .and_then(|d| private_dir(&d.join("native-probe")))
            .and_then(|d| cache_file(&d, exe));
        if let Some(f) = &cache_file {
            if remembered(f) {
                return Ok(Probe {
                    exe: exe.to_path_buf(),
                    cache_file,
                    state: Mutex::new(State::Passed { cached: true }),
                });
            }
        }
        let child = Command::new(exe)
            .arg(INIT_ARG)
            .arg(PROBE_ARG)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::InitExe {
                path: exe.to_path_buf(),
                source,
            })?;
        Ok(Probe {
            exe: exe.to_path_buf(),
            cache_file,
            state: Mutex::new(State::Running(child)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the answer is known (no waiting needed).
    pub(super) fn is_done(&self) -> bool {
        !matches!(*self.state(), State::Running(_))
    }

    /// Whether the pass was remembered from an earlier run (for tests).
    pub(super) fn was_cached(&self) -> bool {
        matches!(*self.state(), State::Passed { cached: true })
    }

    /// Wait for the probe's answer (blocking; a probe takes a few
    /// milliseconds): `Ok` when every namespace can be created.
    pub(super) fn check(&self) -> Result<()> {
        let mut state = self.state();
        if let State::Running(child) = &mut *state {
            let mut out = Vec::new();
            let read = child
                .stdout
                .take()
                .map(|mut s| std::io::Read::read_to_end(&mut s, &mut out));
            let status = child.wait();
            let answer = match read {
                Some(Ok(_)) => protocol::read_frame::<FromInit>(&mut out.as_slice()),
                _ => Ok(None),
            };
            *state = match answer {
                Ok(Some(FromInit::Exited(0))) => {
                    if let Some(f) = &self.cache_file {
                        remember(f);
                    }
                    State::Passed { cached: false }
                }
                Ok(Some(FromInit::Error(why))) => State::Failed(Failure::Namespaces(why)),
                other => State::Failed(Failure::InitExe(format!(
                    "its probe answered {other:?} and ended with {}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                ))),
            };
        }
        match &*state {
            State::Passed { .. } => Ok(()),
            State::Failed(Failure::Namespaces(why)) => Err(Error::Namespaces(why.clone())),
            State::Failed(Failure::InitExe(why)) => Err(Error::InitExe {
                path: self.exe.clone(),
                source: std::io::Error::other(why.clone()),
            }),
            State::Running(_) => unreachable!("waited for above"),
        }
    }

    /// A step's sandbox could not be built: when the pass came from the
    /// cache, drop it, so that the next sandbox probes again.
    pub(super) fn forget(&self) {
        if self.was_cached() {
            if let Some(f) = &self.cache_file {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Never left as a zombie: it ends by itself within milliseconds.
        if let State::Running(child) = &mut *self.state() {
            let _ = child.wait();
        }
    }
}

/// `dir`, created if needed with mode `0700`, when it can hold what the
/// sandbox remembers: a directory (not a symlink) of this user that no
/// one else may write to. `None` otherwise (nothing is remembered then).
pub(super) fn private_dir(dir: &Path) -> Option<PathBuf> {
    let euid = nix::unistd::Uid::effective().as_raw();
    if std::fs::create_dir_all(dir).is_err() {
        return None;
    }
    let d = std::fs::symlink_metadata(dir).ok()?;
    if !d.is_dir() || d.uid() != euid {
        return None;
    }
    if d.mode() & 0o077 != 0
        && std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).is_err()
    {
        return None;
    }
    Some(dir.to_path_buf())
}

/// The file that remembers a pass of `exe` in this boot, in `dir` (see
/// [`private_dir`]), or `None` when the key cannot be made.
fn cache_file(dir: &Path, exe: &Path) -> Option<PathBuf> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let m = std::fs::metadata(exe).ok()?;
    let euid = nix::unistd::Uid::effective().as_raw();
    let key = format!(
        "repro native probe {PROBE_VERSION}\nboot {}\nkernel {}\neuid {euid}\nexe {} {} {} {} {}.{} {}.{}\n",
        boot.trim(),
        release.trim(),
        exe.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    );
    Some(dir.join(repro_store::Hash::of(key.as_bytes()).hex()))
}

/// What a pass file holds.
const PASSED: &[u8] = b"passed\n";

fn remembered(file: &Path) -> bool {
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.is_file() && m.uid() == nix::unistd::Uid::effective().as_raw() => {
            std::fs::read(file).is_ok_and(|b| b == PASSED)
        }
        _ => false,
    }
}

/// Remember a pass (atomically; failing to is not an error). Passes
/// written before this boot are removed (their keys can never match
/// again); those of other binaries in this boot stay.
fn remember(file: &Path) {
    let Some(dir) = file.parent() else { return };
    if let Some(booted) = boot_time() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < booted);
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(PASSED));
    if written.is_err() || std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// When this boot began (a second early), from `/proc/uptime`.
fn boot_time() -> Option<std::time::SystemTime> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    std::time::SystemTime::now().checked_sub(std::time::Duration::from_secs_f64(secs + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_remembered_per_binary_and_only_in_a_private_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("cache");
        let exe = d.path().join("exe");
        std::fs::write(&exe, b"one").expect("write");
        let dir = private_dir(&dir).expect("a private directory");
        let f = cache_file(&dir, &exe).expect("a cache file");
        assert!(!remembered(&f));
        remember(&f);
        assert!(remembered(&f));
        assert_eq!(std::fs::metadata(&dir).expect("dir").mode() & 0o777, 0o700);
        // Another binary (or the same path rewritten) has another key;
        // remembering it keeps the other pass (of this boot), and drops
        // passes older than the boot.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&exe, b"two!").expect("write");
        let g = cache_file(&dir, &exe).expect("a cache file");
        assert_ne!(f, g);
        assert!(!remembered(&g));
        let old = dir.join("from-an-earlier-boot");
        std::fs::write(&old, PASSED).expect("write");
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|o| o.set_modified(std::time::UNIX_EPOCH))
            .expect("age it");
        remember(&g);
        assert!(remembered(&f) && remembered(&g));
        assert!(!old.exists());
        // Anything but the exact content is not a pass.
        std::fs::write(&g, b"passed").expect("write");
        assert!(!remembered(&g));
        // A remembered pass that turns out wrong is forgotten.
        let p = Probe {
            exe: exe.clone(),
            cache_file: Some(g.clone()),
            state: Mutex::new(State::Passed { cached: true }),
        };
        assert!(p.check().is_ok());
        p.forget();
        assert!(!g.exists());
        assert!(remembered(&f));
        // A directory others may write to is made private again; a
        // symlink in its place is not used.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(private_dir(&dir), Some(dir.clone()));
        assert_eq!(std::fs::metadata(&dir).expect("dir").mode() & 0o777, 0o700);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert_eq!(private_dir(&link), None);
    }
}
