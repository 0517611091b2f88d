//! The runner's side of the pool of pre-warmed inits: one zygote per
//! `NativeSandbox` (the module above), started by the first run (see
//! the `zygote` module for the other side).
//!
//! A run hands the zygote's spares the init's end of its socket and its
//! log ([`Pool::request`]); the spare that takes it acknowledges on the
//! run's socket with a pidfd of itself ([`recv_ack`]), and only then does
//! the runner send the spec. Whenever that does not happen (no zygote, a
//! full queue, the socket's end without an acknowledgement, no
//! acknowledgement within [`ACK_WAIT`]) nothing of the step has started,
//! and the run starts an init of its own as without a pool: a step never
//! fails because of the pool.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::protocol::{recv_fds, send_fds, ACK, INIT_ARG, REQUEST, ZYGOTE_ARG};

/// How long a run waits for a spare to take its request before it starts
/// an init of its own (a spare normally takes it within a millisecond).
pub(super) const ACK_WAIT: Duration = Duration::from_secs(2);
/// Zygotes in a row that may fail before the pool is given up for good.
const MAX_FAILURES: u32 = 3;

/// The pool of one sandbox.
#[derive(Debug)]
pub(super) struct Pool {
    exe: PathBuf,
    /// The sandbox's staging directory, passed to the zygote.
    staging: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    zygote: Option<Zygote>,
    /// Zygotes that failed since the last acknowledged run.
    failures: u32,
    /// No pool: asked for, or given up.
    off: bool,
    /// Too few runs are expected for the pool to pay: runs start inits of
    /// their own (see `NativeSandbox::expect_runs`).
    few: bool,
}

#[derive(Debug)]
struct Zygote {
    child: Child,
    /// The runner's end of the control socket (`SOCK_SEQPACKET`).
    ctl: OwnedFd,
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Idle spares die with it; spares serving a run do not.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pool {
    /// A pool whose zygote is `exe` (started by the first request), or no
    /// pool when `on` is false. `staging` is the sandbox's staging
    /// directory (`InitSpec::staging`).
    pub(super) fn new(exe: PathBuf, staging: PathBuf, on: bool) -> Pool {
        Pool {
            exe,
            staging,
            state: Mutex::new(State {
                off: !on,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether runs go through the pool.
    pub(super) fn is_on(&self) -> bool {
        let state = self.state();
        !state.off && !state.few
    }

    /// Whether enough runs are expected for the pool to pay (`worth`): if
    /// so, start the zygote now (unless one runs or the pool is off);
    /// if not, runs start inits of their own, and a zygote already
    /// running stays for when the pool pays again.
    pub(super) fn expect_runs(&self, worth: bool) {
        let mut state = self.state();
        state.few = !worth;
        if worth && !state.off && state.zygote.is_none() {
            match self.spawn() {
                Ok(z) => state.zygote = Some(z),
                Err(_) => state.off = true,
            }
        }
    }

    /// The zygote's pid, when one runs.
    pub(super) fn zygote_pid(&self) -> Option<u32> {
        self.state().zygote.as_ref().map(|z| z.child.id())
    }

    /// Queue a run for the next spare: `init_end` is the init's end of the
    /// run's socket, `log` the step's log. `false` when there is no pool or
    /// the request could not be queued (the run then starts its own init).
    pub(super) fn request(&self, init_end: &OwnedFd, log: &std::fs::File) -> bool {
        let mut state = self.state();
        if state.off || state.few {
            return false;
        }
        if state.zygote.is_none() {
            match self.spawn() {
                Ok(z) => state.zygote = Some(z),
                Err(_) => {
                    // The executable cannot run as a zygote (the pool then
                    // never works): an init per step from now on.
                    state.off = true;
                    return false;
                }
            }
        }
        let Some(z) = state.zygote.as_ref() else {
            return false;
        };
        let fds = [init_end.as_raw_fd(), log.as_raw_fd()];
        match send_fds(z.ctl.as_fd(), REQUEST, &fds, MsgFlags::MSG_DONTWAIT) {
            Ok(()) => true,
            // The queue is full: the zygote is slow, not gone.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => {
                Self::failed(&mut state);
                false
            }
        }
    }

    /// A request got no acknowledgement: when the zygote is gone (or
    /// `stuck`, which kills it), the next run starts a new one.
    pub(super) fn no_ack(&self, stuck: bool) {
        let mut state = self.state();
        let gone = match state.zygote.as_mut() {
            None => false,
            Some(z) => stuck || !matches!(z.child.try_wait(), Ok(None)),
        };
        if gone {
            Self::failed(&mut state);
        }
    }

    /// A spare took a run: the zygote works.
    pub(super) fn acked(&self) {
        self.state().failures = 0;
    }

    fn failed(state: &mut State) {
        state.zygote = None;
        state.failures += 1;
        if state.failures >= MAX_FAILURES {
            state.off = true;
        }
    }

    fn spawn(&self) -> std::io::Result<Zygote> {
        let (ctl, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let child = Command::new(&self.exe)
            .arg(INIT_ARG)
            .arg(ZYGOTE_ARG)
            .arg(&self.staging)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Zygote { child, ctl })
    }
}

/// Wait for a spare's acknowledgement on the runner's end of the run's
/// socket: the spare's pidfd, or `None` when the socket ended first (no
/// spare took the run, or it died before it began).
pub(super) async fn recv_ack(sock: &tokio::net::UnixStream) -> std::io::Result<Option<OwnedFd>> {
    loop {
        sock.readable().await?;
        let got = sock.try_io(Interest::READABLE, || {
            recv_fds(sock.as_fd(), 1, MsgFlags::MSG_DONTWAIT)
        });
        match got {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
            Ok(None) => return Ok(None),
            Ok(Some((ACK, mut fds))) if fds.len() == 1 => return Ok(fds.pop()),
            Ok(Some(_)) => {
                return Err(std::io::Error::other(
                    "the pooled init's first message is not an acknowledgement",
                ))
            }
        }
    }
}

/// A pooled init of one run, through its pidfd: killed when dropped
/// before it ended (as a fresh init is, by `kill_on_drop`).
pub(super) struct PooledInit {
    pidfd: AsyncFd<OwnedFd>,
    ended: bool,
}

impl PooledInit {
    /// Watch the init of `pidfd`.
    pub(super) fn new(pidfd: OwnedFd) -> std::io::Result<PooledInit> {
        Ok(PooledInit {
            // SAFETY: the `OwnedFd` is a valid descriptor, owned by the
            // `AsyncFd` until it is dropped, and never replaced or closed
            // while registered.
            pidfd: unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE)? },
            ended: false,
        })
    }

    /// Send `SIGKILL` (the step's processes follow: their PID 1 dies with
    /// the init).
    pub(super) fn kill(&self) {
        // SAFETY: plain system call on a pidfd this value owns.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
    }

    /// Wait until the init has ended (a pidfd is readable then), so that
    /// its cgroup holds nothing.
    pub(super) async fn wait(&mut self) -> std::io::Result<()> {
        let _guard = self.pidfd.readable().await?;
        self.ended = true;
        Ok(())
    }
}

impl Drop for PooledInit {
    fn drop(&mut self) {
        if !self.ended {
            self.kill();
        }
    }
}
