//! The init: the small, single-threaded process the runner re-executes
//! (`repro __sandbox-init`) for each step. It builds the sandbox with
//! plain system calls (no async runtime, no threads) and then becomes the
//! step.
//!
//! Two processes:
//!
//! - **the init** (`P`, host root): reads the [`InitSpec`] from its stdin
//!   (a Unix socket to the runner), joins the run's cgroups, creates the
//!   pid, network, IPC, UTS and cgroup namespaces, forks `C`, writes
//!   `C`'s user namespace maps, then waits for `C` (or a kill request, or
//!   the runner going away) and reports how it ended;
//! - **the step** (`C`, PID 1 of the new pid namespace): creates its own
//!   mount namespace (so that its `pivot_root` leaves `P` alone), mounts the new
//!   root while it still has host privileges, pivots into it, sets the
//!   hostname and brings up loopback, enters a new user namespace
//!   (`65534` mapped to host `65534` only), becomes `65534:65534` with no
//!   groups, drops every capability, sets no_new_privs, installs the
//!   seccomp filters and execs the step. Being PID 1, its end kills
//!   everything else in the sandbox (as in a Docker container without
//!   `--init`). It dies with the init (`PR_SET_PDEATHSIG`).
//!
//! Every failure before the step starts is sent to the runner as a
//! message, never left as a bare exit code.
//!
//! A pooled init (a "spare" of the zygote, see the `zygote` module) is the
//! same `P`, forked from the zygote instead of executed, that has already
//! done the part that does not depend on the step before it is given a
//! run ([`Warm`]): created the pid, network, IPC and UTS namespaces,
//! brought up loopback, and forked `C`, which has entered its own session
//! and mount namespace and waits. Given a run, `P` passes `C` the run's
//! socket, log and spec; `C` joins the run's cgroups, creates the cgroup
//! namespace (which must come after the join) and goes on as above, while
//! `P` joins the cgroups too and supervises it as above.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use seccompiler::BpfProgram;

use super::protocol::{read_frame, write_frame, FromInit, InitSpec, ToInit};
use crate::contract::{GID, HOSTNAME, UID, WORKDIR};

/// The exit code of the init when it could not report (the runner treats
/// a missing report as an error).
pub(super) const INIT_FAILED: i32 = 125;

/// The namespaces the init creates for its child, with their names (the
/// child creates its mount namespace itself, so that its `pivot_root`
/// does not move the init, and then its user namespace). All but the
/// last, [`CGROUP_NS`], do not depend on the step: a pooled init has
/// created them before it is given a run.
const NAMESPACES: &[(CloneFlags, &str)] = &[
    (CloneFlags::CLONE_NEWPID, "pid"),
    (CloneFlags::CLONE_NEWNET, "network"),
    (CloneFlags::CLONE_NEWIPC, "ipc"),
    (CloneFlags::CLONE_NEWUTS, "uts"),
    CGROUP_NS,
];
/// The cgroup namespace: its root is the cgroup the init is in when it
/// creates it, so it must come after joining the run's cgroups.
const CGROUP_NS: (CloneFlags, &str) = (CloneFlags::CLONE_NEWCGROUP, "cgroup");

/// The host devices bound into the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// `/proc` files hidden behind `/dev/null` (as runc does).
const MASKED_FILES: &[&str] = &["kcore", "keys", "timer_list", "sched_debug"];
/// `/proc` directories hidden behind an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &["acpi", "scsi"];

/// Take stdin (the runner's socket) out of the way, as a close-on-exec
/// descriptor, and put `/dev/null` in its place.
pub(super) fn take_stdin() -> Result<OwnedFd, String> {
    let fd = nix::fcntl::fcntl(0, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| format!("cannot move the init's stdin: {e}"))?;
    // SAFETY: `fd` was just returned by F_DUPFD_CLOEXEC and is owned by
    // nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    null_stdin()?;
    Ok(fd)
}

/// Run one step: read the spec, build the sandbox, report the end.
/// Returns the exit code.
pub(super) fn step_main() -> i32 {
    // The runner's socket is stdin: move it out of the way (close-on-exec)
    // and give the step `/dev/null` as stdin.
    match take_stdin() {
        Ok(fd) => serve(UnixStream::from(fd), None),
        Err(e) => {
            // SAFETY: fd 0 is still the runner's socket when moving it
            // failed; `ManuallyDrop` keeps it open.
            let mut sock = std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(0) });
            let _ = write_frame(&mut *sock, &FromInit::Error(e));
            INIT_FAILED
        }
    }
}

/// What a pooled init did before it was given a run.
pub(super) struct Warm {
    /// Creating the step-independent namespaces, bringing up loopback and
    /// forking the step's process; a failure is reported to the run that
    /// takes this init.
    pub ready: Result<(), String>,
    /// The seccomp filters, compiled once by the zygote.
    pub filters: Result<Vec<BpfProgram>, String>,
    /// The highest capability number of the kernel.
    pub cap_last: u32,
    /// The step's process, forked ahead and waiting for its run.
    forked: Option<Forked>,
    /// The runner's staging directory (`InitSpec::staging`), on which a
    /// step process forked ahead mounts its `/dev` and `/proc`.
    staging: Option<PathBuf>,
}

/// A step process forked ahead by a pooled init: PID 1 of the new pid
/// namespace, in its own session and mount namespace, waiting on `chan`
/// for the run's socket and log (one message with both descriptors),
/// then the [`InitSpec`] as a frame.
struct Forked {
    child: Pid,
    chan: UnixStream,
    /// Read end: the child is ready for its user namespace's maps.
    ready: OwnedFd,
    /// Write end: the maps are written.
    go: OwnedFd,
}

impl Warm {
    /// What does not depend on the step or the namespaces (the zygote's
    /// part): the filters and the capability count.
    /// `staging` is the runner's staging directory, if it gave one.
    pub(super) fn compile(staging: Option<PathBuf>) -> Warm {
        Warm {
            ready: Err("the pooled init was not prepared".into()),
            filters: super::seccomp::filters(),
            cap_last: cap_last(),
            forked: None,
            staging,
        }
    }

    /// Create the pid, network, IPC and UTS namespaces (the pid namespace
    /// for the children of this process), bring up loopback in the
    /// network namespace, and fork the step's process, which enters its
    /// own session and mount namespace and waits: everything but the
    /// cgroup namespace, which waits for the cgroup join. `close_in_child`
    /// are descriptors of the pool the step's process must not hold.
    pub(super) fn prepare(&mut self, close_in_child: &[RawFd]) {
        let flags = &NAMESPACES[..NAMESPACES.len() - 1];
        self.ready = unshare_namespaces(flags)
            .and_then(|()| loopback_up())
            .and_then(|()| self.fork_step(close_in_child));
    }

    fn fork_step(&mut self, close_in_child: &[RawFd]) -> Result<(), String> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))
        };
        let (ready_r, ready_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        let (chan, chan_child) =
            UnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
        // SAFETY: this process is single-threaded (forked from the
        // single-threaded zygote), so the child may allocate and use any
        // function.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(format!("cannot fork the step's process: {e}")),
            Ok(ForkResult::Child) => {
                drop((ready_r, go_w, chan));
                for fd in close_in_child {
                    // SAFETY: closing descriptors of the pool this process
                    // never uses (it ends without returning).
                    unsafe { libc::close(*fd) };
                }
                waiting_step(chan_child, ready_w, go_r, self)
            }
            Ok(ForkResult::Parent { child }) => {
                self.forked = Some(Forked {
                    child,
                    chan,
                    ready: ready_r,
                    go: go_w,
                });
                Ok(())
            }
        }
    }
}

impl Warm {
    /// Whether this pooled init can serve a run: prepared without an
    /// error, and its step process still waits (an init that cannot does
    /// not acknowledge the run, which then starts an init of its own).
    pub(super) fn is_intact(&self) -> bool {
        let Some(f) = self.forked.as_ref().filter(|_| self.ready.is_ok()) else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: f.chan.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0
    }
}

/// Enter a new mount namespace in which nothing propagates to the host.
fn enter_mount_ns() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| namespace_message("mount", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys(|| "cannot make the mounts private".into()))
}

/// The step's process forked ahead by a pooled init: enter a session and
/// a mount namespace of its own, wait for the run, then join its cgroups
/// and become the step as a freshly forked one does. Never returns.
fn waiting_step(chan: UnixStream, ready: OwnedFd, go: OwnedFd, warm: &Warm) -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // (Its parent is outside its pid namespace, so `getppid` is 0 either
    // way: an init that died before the line above shows as the end of
    // `chan` below instead.)
    let _ = nix::unistd::setsid();
    let entered = enter_mount_ns();
    // Without it (no staging directory, or a failure) the step mounts
    // `/dev` and `/proc` itself, and reports what fails then.
    let premounted = match (&entered, &warm.staging) {
        (Ok(()), Some(staging)) => premount(staging).ok().map(|()| staging.clone()),
        _ => None,
    };
    let fds = match super::protocol::recv_fds(chan.as_fd(), 2, nix::sys::socket::MsgFlags::empty())
    {
        Ok(Some((_, fds))) if fds.len() == 2 => fds,
        // The init ended without a run for this process.
        // SAFETY: as above.
        _ => unsafe { libc::_exit(0) },
    };
    let mut fds = fds.into_iter();
    let (Some(sock), Some(log)) = (fds.next(), fds.next()) else {
        // SAFETY: as above.
        unsafe { libc::_exit(INIT_FAILED) }
    };
    if nix::unistd::dup2(log.as_raw_fd(), 1).is_err()
        || nix::unistd::dup2(log.as_raw_fd(), 2).is_err()
    {
        // SAFETY: as above.
        unsafe { libc::_exit(INIT_FAILED) }
    }
    drop(log);
    let mut sock = UnixStream::from(sock);
    let mut chan = chan;
    let why = match read_frame::<InitSpec>(&mut chan) {
        Ok(Some(spec)) => {
            drop(chan);
            let run = || -> Result<Never, String> {
                entered?;
                join_cgroups(&spec)?;
                unshare_namespaces(&[CGROUP_NS])?;
                let prep = prepare(&spec, Some(warm))?;
                let premounted = premounted.as_deref().filter(|p| *p == spec.staging);
                step_inner(&spec, &prep, true, premounted, true, ready, go)
            };
            match run() {
                Ok(never) => match never {},
                Err(e) => e,
            }
        }
        Ok(None) => {
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        Err(e) => format!("cannot read the step's spec from the init: {e}"),
    };
    let _ = write_frame(&mut sock, &FromInit::Error(why));
    // SAFETY: as above.
    unsafe { libc::_exit(INIT_FAILED) }
}

/// Join the run's cgroups: `0` is the writing thread itself; the init and
/// the step's process each have only one (see `Cgroup::join_files` for
/// why v1 joins through `tasks`).
fn join_cgroups(spec: &InitSpec) -> Result<(), String> {
    for file in &spec.cgroup_join {
        fs::write(file, "0")
            .map_err(|e| format!("cannot join the cgroup `{}`: {e}", file.display()))?;
    }
    Ok(())
}

/// Read the spec from `sock`, run the step, report. `warm` is what a
/// pooled init prepared; `None` for a fresh init.
pub(super) fn serve(sock: UnixStream, warm: Option<&mut Warm>) -> i32 {
    let mut sock = sock;
    let spec = match read_frame::<ToInit>(&mut sock) {
        Ok(Some(ToInit::Run(spec))) => spec,
        Ok(Some(ToInit::Kill)) | Ok(None) => return 0,
        Err(e) => {
            let _ = write_frame(
                &mut sock,
                &FromInit::Error(format!("cannot read the step's spec: {e}")),
            );
            return INIT_FAILED;
        }
    };
    let report = match run(&spec, &sock, warm) {
        Ok(status) => status,
        Err(e) => FromInit::Error(e),
    };
    match write_frame(&mut sock, &report) {
        Ok(()) => 0,
        Err(_) => INIT_FAILED,
    }
}

fn null_stdin() -> Result<(), String> {
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open `/dev/null`: {e}"))?;
    nix::unistd::dup2(null, 0)
        .map_err(|e| format!("cannot make `/dev/null` the step's stdin: {e}"))?;
    let _ = nix::unistd::close(null);
    Ok(())
}

/// What the step process needs, prepared before the fork.
struct Prepared {
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Where `argv[0]` may be, in `PATH` order (inside the new root).
    candidates: Vec<CString>,
    filters: Vec<BpfProgram>,
    cap_last: u32,
    /// The step's uid and gid (the same number).
    uid: u32,
    gid: u32,
}

fn cstring(s: impl Into<Vec<u8>>, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

fn cap_last() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

fn prepare(spec: &InitSpec, warm: Option<&Warm>) -> Result<Prepared, String> {
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(program) = spec.argv.first() else {
        return Err("`argv` is empty".into());
    };
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}"), "the environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = if program.contains('/') {
        vec![cstring(program.as_bytes(), "the program name")?]
    } else {
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("/bin:/usr/bin", |(_, v)| v.as_str());
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                cstring(format!("{}/{program}", dir.trim_end_matches('/')), "`PATH`")
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let (filters, cap_last) = match warm {
        Some(w) => (w.filters.clone()?, w.cap_last),
        None => (super::seccomp::filters()?, cap_last()),
    };
    let (uid, gid) = match spec.variation.uid {
        Some(id) => (id, id),
        None => (UID, GID),
    };
    Ok(Prepared {
        argv,
        envp,
        candidates,
        filters,
        cap_last,
        uid,
        gid,
    })
}

/// The message for a namespace the kernel refuses, naming the setting to
/// change.
pub(crate) fn namespace_message(name: &str, errno: Errno) -> String {
    let setting = match (name, errno) {
        ("user", Errno::ENOSPC) => "; `user.max_user_namespaces` is 0 or used up: raise it (`sysctl -w user.max_user_namespaces=10000`)".to_string(),
        ("user", Errno::EPERM | Errno::EACCES) => "; check `kernel.unprivileged_userns_clone`, `kernel.apparmor_restrict_unprivileged_userns` and, inside a container, its seccomp profile".to_string(),
        ("user", Errno::EINVAL) => "; the kernel was built without user namespaces (`CONFIG_USER_NS`)".to_string(),
        (_, Errno::ENOSPC) => format!("; `user.max_{name}_namespaces` is 0 or used up: raise it"),
        (_, Errno::EPERM) => "; the runner lacks `CAP_SYS_ADMIN` (is it inside a container?)".to_string(),
        _ => String::new(),
    };
    format!(
        "the kernel refuses to create a {name} namespace: {}{setting}\nhint: use `--sandbox docker`",
        errno.desc()
    )
}

/// Create the namespaces `which` (for the pid namespace: for the children
/// of this process), naming the one that fails.
fn unshare_namespaces(which: &[(CloneFlags, &str)]) -> Result<(), String> {
    let all = which
        .iter()
        .fold(CloneFlags::empty(), |acc, (f, _)| acc | *f);
    if unshare(all).is_ok() {
        return Ok(());
    }
    for (flag, name) in which {
        unshare(*flag).map_err(|e| namespace_message(name, e))?;
    }
    Ok(())
}

/// The init's side of one run; returns how the step ended.
fn run(spec: &InitSpec, sock: &UnixStream, warm: Option<&mut Warm>) -> Result<FromInit, String> {
    if let Some(w) = warm {
        w.ready.clone()?;
        let Some(f) = w.forked.take() else {
            return Err("the pooled init has no step process".into());
        };
        return run_forked(spec, sock, f);
    }
    join_cgroups(spec)?;
    let prep = prepare(spec, None)?;
    unshare_namespaces(NAMESPACES)?;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (go_r, go_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;

    // SAFETY: this process is single-threaded (the runner re-executes it
    // fresh), so the child may allocate and use any function.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork the step's process: {e}")),
        Ok(ForkResult::Child) => {
            drop(ready_r);
            drop(go_w);
            let why = step(spec, &prep, ready_w, go_r);
            let mut s = sock;
            let _ = write_frame(&mut s, &FromInit::Error(why));
            // SAFETY: `_exit` ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(INIT_FAILED) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_w);
            drop(go_r);
            supervise(child, (prep.uid, prep.gid), ready_r, go_w, sock)
        }
    }
}

/// A pooled init's side of one run: hand the step's process forked ahead
/// the run's socket, log (this process's stdout) and spec, join the
/// cgroups, and supervise it as a fresh init does.
fn run_forked(spec: &InitSpec, sock: &UnixStream, f: Forked) -> Result<FromInit, String> {
    let Forked {
        child,
        mut chan,
        ready,
        go,
    } = f;
    let handed = super::protocol::send_fds(
        chan.as_fd(),
        b's',
        &[sock.as_raw_fd(), 1],
        nix::sys::socket::MsgFlags::empty(),
    )
    .and_then(|()| write_frame(&mut chan, spec));
    drop(chan);
    let joined = join_cgroups(spec);
    if let Err(e) = handed
        .map_err(|e| format!("cannot hand the run to the step's process: {e}"))
        .and(joined)
    {
        let _ = kill(child, Signal::SIGKILL);
        let _ = wait(child);
        return Err(e);
    }
    let ids = match spec.variation.uid {
        Some(id) => (id, id),
        None => (UID, GID),
    };
    supervise(child, ids, ready, go, sock)
}

/// Map the child's user namespace, let it go on, then wait for it (or a
/// kill request, or the runner's end of the socket closing).
fn supervise(
    child: Pid,
    (uid, gid): (u32, u32),
    ready: OwnedFd,
    go: OwnedFd,
    sock: &UnixStream,
) -> Result<FromInit, String> {
    let mut byte = [0u8; 1];
    let mut ready = fs::File::from(ready);
    let got = loop {
        match ready.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    if matches!(got, Ok(1)) {
        if let Err(e) = write_maps(child, uid, gid) {
            let _ = kill(child, Signal::SIGKILL);
            let _ = wait(child);
            return Err(e);
        }
        let mut go = fs::File::from(go);
        if go.write_all(&[1]).is_err() {
            return wait(child);
        }
        // `go` stays open: the child polls it to notice this process dying.
        let status = wait_or_kill(child, sock);
        drop(go);
        return status;
    }
    // The child failed before it was ready and has reported why.
    wait(child)
}

/// Map `uid` and `gid` of the child's user namespace to the same host ids,
/// and nothing else.
fn write_maps(child: Pid, uid: u32, gid: u32) -> Result<(), String> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    let map = |file: &str, text: String| {
        fs::write(proc.join(file), text).map_err(|e| {
            format!("cannot write the user namespace's `{file}`: {e}\nhint: use `--sandbox docker`")
        })
    };
    map("setgroups", "deny".into())?;
    map("uid_map", format!("{uid} {uid} 1\n"))?;
    map("gid_map", format!("{gid} {gid} 1\n"))
}

/// Block until the child ends.
fn wait(child: Pid) -> Result<FromInit, String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(FromInit::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(FromInit::Signaled(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("cannot wait for the step's process: {e}")),
        }
    }
}

/// Wait for the child while watching the runner's socket: a kill request
/// or the socket closing kills the child (and with it the whole pid
/// namespace).
fn wait_or_kill(child: Pid, sock: &UnixStream) -> Result<FromInit, String> {
    // SAFETY: plain system call with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    if pidfd < 0 {
        // No pidfd (Linux < 5.3): the runner kills this process instead,
        // and the child follows through PR_SET_PDEATHSIG.
        return wait(child);
    }
    // SAFETY: `pidfd` was just returned by pidfd_open and is owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let mut sock_fd = sock.as_raw_fd();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sock_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return wait(child);
        }
        if fds[0].revents != 0 {
            return wait(child);
        }
        if fds[1].revents != 0 {
            let mut s = sock;
            // A kill request, the end of the stream or garbage: all kill.
            let _ = read_frame::<ToInit>(&mut s);
            let _ = kill(child, Signal::SIGKILL);
            sock_fd = -1;
        }
    }
}

/// The step's side: build the sandbox and exec. Returns only on failure,
/// with the message for the runner.
fn step(spec: &InitSpec, prep: &Prepared, ready: OwnedFd, go: OwnedFd) -> String {
    match step_inner(spec, prep, false, None, false, ready, go) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn sys(what: impl FnOnce() -> String) -> impl FnOnce(Errno) -> String {
    move |e| format!("{}: {}", what(), e.desc())
}

/// `forked_ahead`: this process was forked by a pooled init before its
/// run, and has already set its parent-death signal, entered its own
/// session and mount namespace, and (in the init) loopback is up;
/// `premounted`: where it mounted `/dev` and `/proc` (see `premount`).
fn step_inner(
    spec: &InitSpec,
    prep: &Prepared,
    forked_ahead: bool,
    premounted: Option<&Path>,
    loopback_is_up: bool,
    ready: OwnedFd,
    go: OwnedFd,
) -> Result<Never, String> {
    if !forked_ahead {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        let _ = nix::unistd::setsid();
        enter_mount_ns()?;
    }

    let root = &spec.root;
    build_root(spec, premounted)?;

    // Into the new root.
    nix::unistd::chdir(root).map_err(sys(|| format!("cannot enter `{}`", root.display())))?;
    nix::unistd::pivot_root(".", ".").map_err(sys(|| "cannot pivot into the new root".into()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys(|| "cannot detach the host's root".into()))?;
    nix::unistd::chdir(WORKDIR).map_err(sys(|| format!("cannot enter `{WORKDIR}`")))?;

    let hostname = spec.variation.hostname.as_deref().unwrap_or(HOSTNAME);
    nix::unistd::sethostname(hostname).map_err(sys(|| "cannot set the hostname".into()))?;
    if !loopback_is_up {
        loopback_up()?;
    }
    set_rlimits(spec)?;
    // Supplementary groups: exactly the step's own group, as Docker gives
    // (`id` prints `groups=65534`). Set while still host root; the user
    // namespace then denies setgroups, so the step cannot change them.
    nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(prep.gid)])
        .map_err(sys(|| "cannot set the supplementary groups".into()))?;

    // The user namespace, mapped by the init.
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| namespace_message("user", e))?;
    let mut ready = fs::File::from(ready);
    ready
        .write_all(&[1])
        .map_err(|e| format!("cannot signal the sandbox init: {e}"))?;
    drop(ready);
    let mut go = fs::File::from(go);
    let mut byte = [0u8; 1];
    match go.read(&mut byte) {
        Ok(1) => {}
        _ => return Err("the sandbox init stopped before mapping the user namespace".into()),
    }

    drop_privileges(prep)?;
    if let Some(n) = spec.variation.cpus {
        restrict_cpus(n)?;
    }
    // The uid change cleared the parent-death signal: set it again, then
    // make sure the init did not die in between.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut pfd = libc::pollfd {
        fd: go.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
        return Err("the sandbox init stopped".into());
    }
    drop(go);
    reset_signals();
    // Nothing but stdin, stdout and stderr crosses the exec.
    // SAFETY: plain system call with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    super::seccomp::install(&prep.filters)?;
    if let Some(mask) = spec.variation.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    exec(prep)
}

/// Whether `root/rel` is a directory, with no symlink on the way.
fn is_real_dir(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn bind(src: &Path, dst: &Path, extra: MsFlags) -> Result<(), String> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys(|| {
        format!("cannot bind `{}` on `{}`", src.display(), dst.display())
    }))?;
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra,
        None::<&str>,
    )
    .map_err(sys(|| {
        format!("cannot restrict the mount on `{}`", dst.display())
    }))
}

fn tmpfs(dst: &Path, flags: MsFlags, data: &str) -> Result<(), String> {
    mount(Some("tmpfs"), dst, Some("tmpfs"), flags, Some(data)).map_err(sys(|| {
        format!("cannot mount a tmpfs on `{}`", dst.display())
    }))
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(mode).create(p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("cannot create `{}`: {e}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Mount everything under `spec.root` (see the crate docs for the
/// contract), ending with the root read-only.
/// `premounted`: the staging directory on which `premount` mounted `/dev`
/// and `/proc`, to be moved into the root.
fn build_root(spec: &InitSpec, premounted: Option<&Path>) -> Result<(), String> {
    let root = &spec.root;
    // Where the inputs and the output go, relative to the root: `repro`,
    // or the variation's mount root.
    let base = spec
        .variation
        .mount_root
        .as_deref()
        .map_or("repro", |r| r.trim_matches('/'));
    let (in_rel, out_rel) = (format!("{base}/in"), format!("{base}/out"));
    let mut needed = vec!["dev", "proc", "tmp", out_rel.as_str()];
    if !spec.inputs.is_empty() {
        needed.push(in_rel.as_str());
    }
    let plain = needed.iter().all(|d| is_real_dir(root, d));
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if plain {
        mount(
            Some(root),
            root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(|| {
            format!("cannot bind the image root `{}`", root.display())
        }))?;
    } else {
        // The image lacks mount points: lay a throwaway overlay on it (in
        // this mount namespace only) and create them there, as Docker
        // does in a container's first layer.
        let staging = match premounted {
            Some(p) => p.join("ovl"),
            None => spec.staging.clone(),
        };
        tmpfs(&staging, nosuid_nodev, "size=4m,mode=700")?;
        let (upper, work) = (staging.join("upper"), staging.join("work"));
        mkdir(&upper, 0o755)?;
        mkdir(&work, 0o700)?;
        let opt = |p: &Path| -> Result<String, String> {
            let s = p.to_str().unwrap_or(",");
            if s.contains([',', ':', '\\']) {
                return Err(format!(
                    "the path `{}` cannot be an overlay option",
                    p.display()
                ));
            }
            Ok(s.to_string())
        };
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            opt(root)?,
            opt(&upper)?,
            opt(&work)?
        );
        mount(
            Some("overlay"),
            root,
            Some("overlay"),
            nosuid_nodev,
            Some(data.as_str()),
        )
        .map_err(sys(|| {
            format!(
                "cannot lay an overlay on the image root `{}` to create its mount points",
                root.display()
            )
        }))?;
        for d in &needed {
            let mut p = root.clone();
            for part in d.split('/') {
                p.push(part);
                mkdir(&p, 0o755)?;
            }
        }
        for (name, _) in &spec.inputs {
            mkdir(&root.join(&in_rel).join(name), 0o755)?;
        }
        let names = spec.inputs.iter().map(|(n, _)| format!("{in_rel}/{n}"));
        for d in needed.iter().map(|d| d.to_string()).chain(names) {
            if !is_real_dir(root, &d) {
                return Err(format!(
                    "the image's `/{d}` is not a directory (a symlink or a file), so it cannot be a mount point"
                ));
            }
        }
    }

    let tmp_data = format!("size={},mode=1777", spec.tmp_bytes);
    tmpfs(&root.join("tmp"), nosuid_nodev, &tmp_data)?;

    let dev = root.join("dev");
    let proc = root.join("proc");
    match premounted {
        Some(staging) => {
            move_mount(&staging.join("dev"), &dev)?;
            move_mount(&staging.join("proc"), &proc)?;
        }
        None => {
            make_dev(&dev)?;
            make_proc(&proc, &dev.join("null"))?;
        }
    }

    if !spec.inputs.is_empty() {
        let inputs = root.join(&in_rel);
        if plain {
            tmpfs(&inputs, nosuid_nodev, "size=64k,mode=755")?;
            for (name, _) in &spec.inputs {
                mkdir(&inputs.join(name), 0o755)?;
            }
        }
        for (name, host) in &spec.inputs {
            let dst = inputs.join(name);
            if spec.variation.reverse_listing {
                super::listing::copy_input_reversed(host, &dst)?;
            } else {
                bind(host, &dst, MsFlags::MS_RDONLY | nosuid_nodev)?;
            }
        }
        if plain {
            mount(
                None::<&str>,
                &inputs,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev,
                Some("size=64k,mode=755"),
            )
            .map_err(sys(|| format!("cannot make `/{in_rel}` read-only")))?;
        }
    }
    bind(&spec.output, &root.join(&out_rel), nosuid_nodev)?;
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid_nodev,
        None::<&str>,
    )
    .map_err(sys(|| "cannot make the root read-only".into()))
}

/// Move the mount at `src` (with what is mounted under it) to `dst`.
fn move_mount(src: &Path, dst: &Path) -> Result<(), String> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(sys(|| {
        format!("cannot move `{}` to `{}`", src.display(), dst.display())
    }))
}

/// Mount the sandbox's `/dev` on `dev`: a tmpfs with the host's
/// [`DEVICES`], the `fd`, `stdin`, `stdout`, `stderr` links and a `shm`
/// tmpfs.
fn make_dev(dev: &Path) -> Result<(), String> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    tmpfs(
        dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "size=64k,mode=755",
    )?;
    for d in DEVICES {
        let target = dev.join(d);
        fs::File::create(&target)
            .map_err(|e| format!("cannot create `{}`: {e}", target.display()))?;
        let host = Path::new("/dev").join(d);
        let meta =
            fs::metadata(&host).map_err(|e| format!("cannot use `{}`: {e}", host.display()))?;
        if !meta.file_type().is_char_device() {
            return Err(format!("`{}` is not a character device", host.display()));
        }
        bind(&host, &target, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("cannot create `/dev/{link}`: {e}"))?;
    }
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    tmpfs(
        &shm,
        nosuid_nodev | MsFlags::MS_NOEXEC,
        "size=64m,mode=1777",
    )
}

/// Mount the `/proc` of this process's pid namespace on `proc`, with
/// [`MASKED_FILES`] behind `null` (a null device) and [`MASKED_DIRS`]
/// behind empty read-only tmpfs.
fn make_proc(proc: &Path, null: &Path) -> Result<(), String> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("proc"),
        proc,
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys(|| "cannot mount `/proc`".into()))?;
    for f in MASKED_FILES {
        let p = proc.join(f);
        if p.exists() {
            bind(
                null,
                &p,
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            )?;
        }
    }
    for d in MASKED_DIRS {
        let p = proc.join(d);
        if p.is_dir() {
            tmpfs(
                &p,
                MsFlags::MS_RDONLY | nosuid_nodev | MsFlags::MS_NOEXEC,
                "size=0",
            )?;
        }
    }
    Ok(())
}

/// A step process forked ahead (PID 1 of its pid namespace, in its own
/// mount namespace) mounts its `/dev` and `/proc` before its run, on a
/// private tmpfs at `staging` (which hides nothing: an empty directory of
/// the runner's). `build_root` moves them into the root, and the image
/// root's overlay, when it needs one, goes under `staging/ovl`.
fn premount(staging: &Path) -> Result<(), String> {
    tmpfs(
        staging,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "size=64k,mode=700",
    )?;
    let (dev, proc) = (staging.join("dev"), staging.join("proc"));
    mkdir(&dev, 0o755)?;
    mkdir(&proc, 0o755)?;
    mkdir(&staging.join("ovl"), 0o700)?;
    make_dev(&dev)?;
    make_proc(&proc, &dev.join("null"))
}

/// Bring up `lo`, the only interface of the new network namespace.
fn loopback_up() -> Result<(), String> {
    let fail = |e: Errno| format!("cannot bring up the loopback interface: {}", e.desc());
    // SAFETY: plain socket call; the fd is wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: `fd` is a fresh socket owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for these ioctls.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(fail(Errno::last()));
    }
    Ok(())
}

fn set_rlimits(spec: &InitSpec) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let r = &spec.rlimits;
    for (res, value, name) in [
        (Resource::RLIMIT_AS, r.address_space, "RLIMIT_AS"),
        (Resource::RLIMIT_CPU, r.cpu_seconds, "RLIMIT_CPU"),
        (Resource::RLIMIT_NPROC, r.processes, "RLIMIT_NPROC"),
    ] {
        if let Some(v) = value {
            setrlimit(res, v, v).map_err(sys(|| format!("cannot set `{name}`")))?;
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Keep only the first `n` CPUs of this process's affinity mask (all of
/// them when it has fewer), so `nproc` and `os.sched_getaffinity` see `n`.
fn restrict_cpus(n: usize) -> Result<(), String> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let me = Pid::from_raw(0);
    let now = sched_getaffinity(me).map_err(sys(|| "cannot read the CPU affinity".into()))?;
    let mut keep = CpuSet::new();
    let allowed = (0..CpuSet::count()).filter(|&c| now.is_set(c).unwrap_or(false));
    for cpu in allowed.take(n) {
        keep.set(cpu)
            .map_err(sys(|| format!("cannot add CPU {cpu} to the affinity mask")))?;
    }
    sched_setaffinity(me, &keep).map_err(sys(|| format!("cannot restrict the step to {n} CPUs")))
}

/// Become the step's uid and gid with every capability gone, for good.
fn drop_privileges(prep: &Prepared) -> Result<(), String> {
    for cap in 0..=prep.cap_last {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0
            && Errno::last() != Errno::EINVAL
        {
            return Err(format!(
                "cannot drop capability {cap} from the bounding set: {}",
                Errno::last().desc()
            ));
        }
    }
    let gid = Gid::from_raw(prep.gid);
    let uid = Uid::from_raw(prep.uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(sys(|| format!("cannot become group {gid}")))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys(|| format!("cannot become user {uid}")))?;
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are valid for capset version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(format!(
            "cannot drop the capabilities: {}",
            Errno::last().desc()
        ));
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("cannot set no_new_privs: {}", Errno::last().desc()));
    }
    Ok(())
}

/// Default dispositions and an empty mask, as a fresh container has (the
/// Rust runtime ignores `SIGPIPE`, and ignored signals survive exec).
fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: setting a default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Exec the step, searching `PATH` like `execvpe`; on failure write the
/// reason to the step's log and exit 127 (not found) or 126.
fn exec(prep: &Prepared) -> Result<Never, String> {
    let mut denied = None;
    for path in &prep.candidates {
        let e = match nix::unistd::execve(path, &prep.argv, &prep.envp) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        match e {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENAMETOOLONG => {}
            other => {
                denied.get_or_insert((path, other));
            }
        }
    }
    let program = OsStr::from_bytes(prep.argv[0].as_bytes()).to_string_lossy();
    let (msg, code) = match denied {
        Some((path, e)) => (
            format!(
                "repro-sandbox: cannot run `{}`: {}\n",
                OsStr::from_bytes(path.as_bytes()).to_string_lossy(),
                e.desc()
            ),
            126,
        ),
        None => (
            format!("repro-sandbox: `{program}`: command not found\n"),
            127,
        ),
    };
    let _ = std::io::stderr().write_all(msg.as_bytes());
    // SAFETY: ends the process without unwinding.
    unsafe { libc::_exit(code) }
}

/// Probe the kernel: create each namespace and a mapped user namespace
/// the way a step does. Writes one [`FromInit`] frame to stdout:
/// `Exited(0)` when everything works, `Error` naming what the kernel
/// refused.
pub(super) fn probe_main() -> i32 {
    let result = probe();
    let msg = match result {
        Ok(()) => FromInit::Exited(0),
        Err(e) => FromInit::Error(e),
    };
    let mut out = std::io::stdout();
    match write_frame(&mut out, &msg).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => INIT_FAILED,
    }
}

fn probe() -> Result<(), String> {
    let mount_ns = (CloneFlags::CLONE_NEWNS, "mount");
    for (flag, name) in NAMESPACES.iter().chain([&mount_ns]) {
        unshare(*flag).map_err(|e| namespace_message(name, e))?;
    }
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (go_r, go_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: single-threaded process (see `run`).
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(ready_r);
            drop(go_w);
            let code = match unshare(CloneFlags::CLONE_NEWUSER) {
                Err(e) => e as i32,
                Ok(()) => {
                    let mut w = fs::File::from(ready_w);
                    let _ = w.write_all(&[1]);
                    let mut byte = [0u8; 1];
                    match fs::File::from(go_r).read(&mut byte) {
                        Ok(1) => {
                            let uid = Uid::from_raw(UID);
                            match nix::unistd::setresuid(uid, uid, uid) {
                                Ok(()) => 0,
                                Err(e) => 200 + e as i32 % 50,
                            }
                        }
                        _ => 199,
                    }
                }
            };
            // SAFETY: ends the child without running destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_w);
            drop(go_r);
            let mut byte = [0u8; 1];
            let ready = fs::File::from(ready_r).read(&mut byte);
            if matches!(ready, Ok(1)) {
                let mapped = write_maps(child, UID, GID);
                let _ = fs::File::from(go_w).write_all(&[1]);
                mapped?;
            }
            match wait(child)? {
                FromInit::Exited(0) => Ok(()),
                FromInit::Exited(code) if code < 199 => {
                    Err(namespace_message("user", Errno::from_raw(code)))
                }
                other => Err(format!(
                    "a process in a new user namespace cannot become user {UID} ({other:?})\nhint: use `--sandbox docker`"
                )),
            }
        }
    }
}
