//! The zygote: a long-lived init (`repro __sandbox-init --zygote`) that
//! keeps one pre-warmed init ready, so that a step does not wait for an
//! executable to start and for its namespaces to be created (about half of
//! the sandbox's cost per step; see `BENCHMARKS.md`).
//!
//! The runner starts it once (see the `pool` module), its stdin a
//! `SOCK_SEQPACKET` socket (the control socket). Single-threaded, like
//! every init. It forks a **spare**, which at once creates the pid,
//! network, IPC and UTS namespaces, brings up loopback and forks the
//! step's process, which enters its own mount namespace and waits
//! ([`Warm`]); the spare then waits on the control socket. A request (a [`REQUEST`] byte with the
//! init's end of the run's socket and the step's log) is read by whichever
//! spare waits: the kernel gives each message to one reader only. The
//! spare that took it tells the zygote (its "idle" pipe closes), sends the
//! runner an [`ACK`] with a pidfd of itself, and from then on is a plain
//! init of that run ([`serve`]). The zygote forks the next spare at once,
//! on the other core while the step runs.
//!
//! Every spare serves at most one run, so every step gets namespaces no
//! other step had. Idle spares die with the zygote (`PR_SET_PDEATHSIG`,
//! reliable here as the zygote is single-threaded); a spare that took a
//! run clears it, so a running step does not depend on the zygote. The
//! zygote ends when the runner's end of the control socket closes (the
//! runner exited, or dropped its `NativeSandbox`), which the kernel does
//! even when the runner is killed. (Not the parent-death signal: that
//! follows the runner's *thread* that started the zygote, which may end
//! long before the runner does.)
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::socket::MsgFlags;
use nix::unistd::{ForkResult, Pid};

use super::init::{serve, take_stdin, Warm, INIT_FAILED};
use super::protocol::{recv_fds, send_fds, ACK, REQUEST};

/// Spares in a row that may die without taking a request before the
/// zygote gives up (the runner then starts an init per step).
const MAX_LOST_SPARES: u32 = 5;
/// A spare that lives this long is not counted as lost.
const SPARE_GRACE: Duration = Duration::from_secs(1);

/// The zygote's main loop. Returns the exit code.
pub(super) fn zygote_main() -> i32 {
    let Ok(ctl) = take_stdin() else {
        return INIT_FAILED;
    };
    // Spares are reaped by the kernel; a spare sets this back to the
    // default before it forks the step.
    // SAFETY: setting a disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let staging = std::env::args_os().nth(3).map(std::path::PathBuf::from);
    let mut warm = Warm::compile(staging);
    let me = nix::unistd::getpid();
    let mut lost = 0;
    loop {
        let Ok((idle_r, idle_w)) = nix::unistd::pipe2(OFlag::O_CLOEXEC) else {
            return INIT_FAILED;
        };
        let born = Instant::now();
        // SAFETY: this process is single-threaded, so the child may
        // allocate and use any function.
        match unsafe { nix::unistd::fork() } {
            Err(_) => return INIT_FAILED,
            Ok(ForkResult::Child) => {
                drop(idle_r);
                spare(me, &ctl, idle_w, &mut warm)
            }
            Ok(ForkResult::Parent { .. }) => drop(idle_w),
        }
        match wait_idle_end(&ctl, idle_r) {
            IdleEnd::RunnerGone => return 0,
            IdleEnd::Taken => lost = 0,
            IdleEnd::Died => {
                if born.elapsed() < SPARE_GRACE {
                    lost += 1;
                    if lost >= MAX_LOST_SPARES {
                        return INIT_FAILED;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

enum IdleEnd {
    /// The spare took a request.
    Taken,
    /// The spare ended without taking one.
    Died,
    /// The runner closed the control socket.
    RunnerGone,
}

/// Wait until the spare whose idle pipe is `idle` is no longer idle, or
/// the runner closes the control socket.
fn wait_idle_end(ctl: &OwnedFd, idle: OwnedFd) -> IdleEnd {
    let mut idle = std::fs::File::from(idle);
    loop {
        let mut fds = [
            libc::pollfd {
                fd: idle.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // No POLLIN: requests are for the spares; only the hang-up
            // (always reported) matters here.
            libc::pollfd {
                fd: ctl.as_raw_fd(),
                events: 0,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return IdleEnd::RunnerGone;
        }
        if fds[1].revents != 0 {
            return IdleEnd::RunnerGone;
        }
        if fds[0].revents != 0 {
            let mut byte = [0u8; 1];
            return match idle.read(&mut byte) {
                Ok(1) => IdleEnd::Taken,
                _ => IdleEnd::Died,
            };
        }
    }
}

/// A spare: prepare, wait for a request, then serve it as an init. Never
/// returns.
fn spare(zygote: Pid, ctl: &OwnedFd, idle: OwnedFd, warm: &mut Warm) -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if nix::unistd::getppid() != zygote {
        // SAFETY: ends the child without running the zygote's destructors.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: setting a disposition (the init waits for its step).
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    warm.prepare(&[ctl.as_raw_fd(), idle.as_raw_fd()]);

    let fds = loop {
        match recv_fds(ctl.as_fd(), 2, MsgFlags::empty()) {
            Ok(Some((REQUEST, fds))) if fds.len() == 2 => break fds,
            // A malformed request: its descriptors are closed, so the
            // runner sees its run's socket end without an acknowledgement
            // and starts an init of its own.
            Ok(Some(_)) => continue,
            // The runner is gone.
            Ok(None) | Err(_) => {
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
        }
    };
    if !warm.is_intact() {
        // Its step process died, or preparing failed: no acknowledgement
        // (the descriptors close with this process), so the run starts
        // an init of its own, and the zygote forks the next spare.
        // SAFETY: as above.
        unsafe { libc::_exit(INIT_FAILED) }
    }
    // This init now belongs to a run: it must outlive the zygote.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    let _ = std::fs::File::from(idle).write_all(&[1]);
    let mut fds = fds.into_iter();
    let (Some(sock), Some(log)) = (fds.next(), fds.next()) else {
        // SAFETY: as above.
        unsafe { libc::_exit(INIT_FAILED) }
    };
    // Not the zygote's control socket: a run's init holds nothing of the
    // pool (the runner notices a dead zygote by its socket's end).
    // SAFETY: closing a descriptor this process owns; `ctl` is not used
    // again in this process, which ends below without returning.
    unsafe { libc::close(ctl.as_raw_fd()) };
    let code = match start_run(&sock, log) {
        Ok(()) => serve(UnixStream::from(sock), Some(warm)),
        Err(_) => INIT_FAILED,
    };
    std::process::exit(code)
}

/// Make `log` the step's stdout and stderr and acknowledge the run with a
/// pidfd of this process.
fn start_run(sock: &OwnedFd, log: OwnedFd) -> Result<(), nix::errno::Errno> {
    nix::unistd::dup2(log.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    drop(log);
    // SAFETY: plain system call with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, nix::unistd::getpid().as_raw(), 0) };
    if pidfd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: `pidfd` was just returned by pidfd_open and is owned here.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32) };
    send_fds(sock.as_fd(), ACK, &[pidfd.as_raw_fd()], MsgFlags::empty())
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}
