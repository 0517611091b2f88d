//! Resource limits through cgroups: v1 (one hierarchy per controller) or
//! v2 (the unified hierarchy), one cgroup per run under a `repro` parent,
//! removed afterwards. When neither is writable the native sandbox falls
//! back to rlimits (see [`CgroupMode::None`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::spec::Limits;

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of every run's cgroup.
const PARENT: &str = "repro";
/// The CFS period used for CPU limits, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// How long removal waits for the processes of a cgroup to go.
const DRAIN: Duration = Duration::from_secs(10);

/// Which cgroup interface the machine offers the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupMode {
    /// cgroup v1: `<root>/<controller>/repro/<run>`.
    V1(PathBuf),
    /// cgroup v2: `<root>/repro/<run>`.
    V2(PathBuf),
    /// No writable cgroups: limits are rlimits, and running out of memory
    /// shows as an allocation failure, not as [`Termination::OutOfMemory`](crate::Termination).
    None,
}

impl CgroupMode {
    /// Find the cgroup interface and create the `repro` parent (enabling
    /// the controllers on v2). Anything not writable gives `None`.
    pub(crate) fn detect() -> CgroupMode {
        Self::detect_at(Path::new(CGROUP_ROOT))
    }

    fn detect_at(root: &Path) -> CgroupMode {
        if root.join("cgroup.controllers").is_file() {
            let enable = || -> io::Result<()> {
                let have = fs::read_to_string(root.join("cgroup.controllers"))?;
                for c in ["memory", "pids"] {
                    if !have.split_whitespace().any(|h| h == c) {
                        return Err(io::Error::other(format!("no `{c}` controller")));
                    }
                }
                let want: Vec<&str> = ["memory", "pids", "cpu"]
                    .into_iter()
                    .filter(|c| have.split_whitespace().any(|h| h == *c))
                    .collect();
                let line = want
                    .iter()
                    .map(|c| format!("+{c}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                fs::write(root.join("cgroup.subtree_control"), &line)?;
                let parent = root.join(PARENT);
                mkdir(&parent)?;
                fs::write(parent.join("cgroup.subtree_control"), &line)
            };
            return match enable() {
                Ok(()) => CgroupMode::V2(root.to_path_buf()),
                Err(_) => CgroupMode::None,
            };
        }
        let v1 = || -> io::Result<()> {
            for c in ["pids", "memory"] {
                let dir = root.join(c);
                if !dir.join("cgroup.procs").is_file() {
                    return Err(io::Error::other(format!("no `{c}` hierarchy")));
                }
                mkdir(&dir.join(PARENT))?;
            }
            if root.join("cpu").join("cpu.cfs_quota_us").is_file() {
                mkdir(&root.join("cpu").join(PARENT))?;
            }
            Ok(())
        };
        match v1() {
            Ok(()) => CgroupMode::V1(root.to_path_buf()),
            Err(_) => CgroupMode::None,
        }
    }

    /// A short name for the build record: `cgroup-v1`, `cgroup-v2` or
    /// `rlimits`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            CgroupMode::V1(_) => "cgroup-v1",
            CgroupMode::V2(_) => "cgroup-v2",
            CgroupMode::None => "rlimits",
        }
    }
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The cgroup(s) of one run.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// Every directory created, in creation order.
    dirs: Vec<PathBuf>,
    /// The directory whose `cgroup.procs` lists every process of the run.
    procs: PathBuf,
    /// The directory with the memory controller's files, with a limit.
    memory: Option<PathBuf>,
    /// Whether this is cgroup v2.
    v2: bool,
}

impl Cgroup {
    /// Create the cgroup of run `name` (a unique, path-safe name) with
    /// `limits`. Returns `None` when `mode` is [`CgroupMode::None`].
    pub(crate) fn create(
        mode: &CgroupMode,
        name: &str,
        limits: &Limits,
    ) -> io::Result<Option<Cgroup>> {
        let mut cg = match mode {
            CgroupMode::None => return Ok(None),
            CgroupMode::V1(root) => Cgroup {
                dirs: Vec::new(),
                procs: root.join("pids").join(PARENT).join(name),
                memory: None,
                v2: false,
            },
            CgroupMode::V2(root) => Cgroup {
                dirs: Vec::new(),
                procs: root.join(PARENT).join(name),
                memory: None,
                v2: true,
            },
        };
        // On failure, what was created is removed by `Drop`.
        match cg.setup(mode, name, limits) {
            Ok(()) => Ok(Some(cg)),
            Err(e) => Err(e),
        }
    }

    fn setup(&mut self, mode: &CgroupMode, name: &str, limits: &Limits) -> io::Result<()> {
        let write = |dir: &Path, file: &str, value: String| -> io::Result<()> {
            fs::write(dir.join(file), value).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write `{}`: {e}", dir.join(file).display()),
                )
            })
        };
        let procs = self.procs.clone();
        fs::create_dir(&procs)?;
        self.dirs.push(procs.clone());
        write(&procs, "pids.max", limits.pids.to_string())?;
        match mode {
            CgroupMode::V2(_) => {
                if let Some(m) = limits.memory_bytes {
                    write(&procs, "memory.max", m.to_string())?;
                    if procs.join("memory.swap.max").is_file() {
                        write(&procs, "memory.swap.max", "0".into())?;
                    }
                    self.memory = Some(procs.clone());
                }
                if let Some(c) = limits.cpus {
                    write(&procs, "cpu.max", format!("{} {CPU_PERIOD_US}", quota(c)))?;
                }
            }
            CgroupMode::V1(root) => {
                if let Some(m) = limits.memory_bytes {
                    let dir = root.join("memory").join(PARENT).join(name);
                    fs::create_dir(&dir)?;
                    self.dirs.push(dir.clone());
                    write(&dir, "memory.limit_in_bytes", m.to_string())?;
                    if dir.join("memory.memsw.limit_in_bytes").is_file() {
                        write(&dir, "memory.memsw.limit_in_bytes", m.to_string())?;
                    }
                    self.memory = Some(dir);
                }
                if let Some(c) = limits.cpus {
                    let dir = root.join("cpu").join(PARENT).join(name);
                    fs::create_dir(&dir)?;
                    self.dirs.push(dir.clone());
                    write(&dir, "cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                    write(&dir, "cpu.cfs_quota_us", quota(c).to_string())?;
                }
            }
            CgroupMode::None => {}
        }
        Ok(())
    }

    /// The files the init writes `0` (itself) to, to join the run's
    /// cgroups before it creates anything.
    ///
    /// On v1 these are the `tasks` files, not `cgroup.procs`: the kernel
    /// moves a whole thread group (`cgroup.procs`) only under the global
    /// `cgroup_threadgroup_rwsem` write lock, whose first taking after an
    /// idle moment waits for an RCU grace period (10 to 20 ms on a small
    /// VM, which was the largest single cost of a step), while a thread
    /// moving itself through `tasks` skips that lock. The init is
    /// single-threaded, so moving its one thread moves the process (and
    /// the step is forked by that thread, so it is born in the cgroup even
    /// if the init had other threads). v2 refuses thread moves into
    /// domain cgroups, so it keeps `cgroup.procs`.
    pub(crate) fn join_files(&self) -> Vec<PathBuf> {
        let file = if self.v2 { "cgroup.procs" } else { "tasks" };
        self.dirs.iter().map(|d| d.join(file)).collect()
    }

    /// Whether the kernel killed a process of this cgroup for running out
    /// of memory.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory else {
            return false;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let Ok(text) = fs::read_to_string(dir.join(file)) else {
            return false;
        };
        count(&text, "oom_kill") > 0
    }

    /// The pids of the processes in the cgroup.
    fn pids(&self) -> io::Result<Vec<i32>> {
        let text = fs::read_to_string(self.procs.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kill whatever is left (there is normally nothing: the kernel kills
    /// the pid namespace with its first process), then remove the
    /// directories. Waits up to 10 s for the processes to go.
    pub(crate) fn remove(&mut self) -> io::Result<()> {
        let start = Instant::now();
        loop {
            let pids = self.pids().unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            if self.v2 && self.procs.join("cgroup.kill").is_file() {
                let _ = fs::write(self.procs.join("cgroup.kill"), "1");
            } else {
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if start.elapsed() > DRAIN {
                return Err(io::Error::other(format!(
                    "processes are still in `{}` after {}s",
                    self.procs.display(),
                    DRAIN.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        while let Some(dir) = self.dirs.pop() {
            let mut tries = 0;
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // A dying process may still hold it for a moment.
                    Err(_) if tries < 500 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        self.dirs.push(dir.clone());
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot remove `{}`: {e}", dir.display()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The directories of this cgroup (for tests).
    #[cfg(test)]
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            let _ = self.remove();
        }
    }
}

/// The CFS quota for `cpus` CPUs (at least 1 ms per period).
fn quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// The value of `key` in a `key value` per line file, 0 when absent.
fn count(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counts_are_read_from_both_formats() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(count(v1, "oom_kill"), 2);
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(count(v2, "oom_kill"), 1);
        assert_eq!(count("oom_kill_disable 1\n", "oom_kill"), 0);
    }

    #[test]
    fn cpu_quota_is_per_period_with_a_floor() {
        assert_eq!(quota(1.5), 150_000);
        assert_eq!(quota(0.001), 1000);
    }

    #[test]
    fn a_machine_without_cgroup_files_falls_back_to_rlimits() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(CgroupMode::detect_at(dir.path()), CgroupMode::None);
        assert_eq!(CgroupMode::None.name(), "rlimits");
    }

    #[test]
    fn a_v1_layout_creates_per_run_groups_and_removes_them() {
        // A fake v1 hierarchy: plain directories and files.
        let dir = tempfile::tempdir().expect("tempdir");
        for c in ["pids", "memory", "cpu"] {
            fs::create_dir(dir.path().join(c)).expect("mkdir");
            fs::write(dir.path().join(c).join("cgroup.procs"), "").expect("write");
        }
        fs::write(dir.path().join("cpu/cpu.cfs_quota_us"), "-1").expect("write");
        let mode = CgroupMode::detect_at(dir.path());
        assert_eq!(mode, CgroupMode::V1(dir.path().to_path_buf()));
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpus: Some(0.5),
            ..Limits::default()
        };
        let mut cg = Cgroup::create(&mode, "run-1", &limits)
            .expect("create")
            .expect("some");
        let pids = dir.path().join("pids/repro/run-1");
        assert_eq!(
            fs::read_to_string(pids.join("pids.max")).expect("read"),
            "512"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("memory/repro/run-1/memory.limit_in_bytes"))
                .expect("read"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("cpu/repro/run-1/cpu.cfs_quota_us")).expect("read"),
            "50000"
        );
        let join = cg.join_files();
        assert_eq!(join.len(), 3);
        assert!(join.iter().all(|f| f.ends_with("tasks")), "{join:?}");
        assert!(!cg.oom_killed());
        // A real cgroup directory holds only kernel files; the fake one
        // holds the files written above, so empty it first.
        for d in cg.dirs().to_vec() {
            for e in fs::read_dir(&d).expect("read_dir") {
                fs::remove_file(e.expect("entry").path()).expect("rm");
            }
        }
        cg.remove().expect("remove");
        assert!(!pids.exists());
    }
}
