//! What the runner and the re-executed init say to each other: the
//! arguments it is started with ([`INIT_ARG`] and a mode), then messages
//! over the init's standard input (a Unix stream socket): length-prefixed
//! JSON frames, so a message may hold newlines and any size of environment.
//!
//! With the pool of pre-warmed inits (see the `pool` module), two more
//! messages carry file descriptors (`SCM_RIGHTS`): a [`REQUEST`] from the
//! runner to the zygote, with the run's socket and log, and the [`ACK`] a
//! pooled init sends first on the run's socket, with a pidfd of itself.
//! The runner sends the spec only after the acknowledgement, so a request
//! it gave up on can never start a step.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use serde::{Deserialize, Serialize};

/// `argv[1]` of the re-executed init: `repro __sandbox-init`.
pub const INIT_ARG: &str = "__sandbox-init";
/// `argv[2]` that asks the init to probe the kernel instead of running a
/// step.
pub(crate) const PROBE_ARG: &str = "--probe";
/// `argv[2]` that makes the init the zygote of a pool of pre-warmed inits
/// (see the `zygote` module); `argv[3]` is the runner's staging directory.
pub(crate) const ZYGOTE_ARG: &str = "--zygote";

/// The largest frame either side accepts (a step's whole spec).
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// Everything the init needs to set up one step, resolved by the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    /// The unpacked image root on the host (read-only bind).
    pub root: PathBuf,
    /// An empty host directory on which the init mounts its private
    /// staging tmpfs (in its own mount namespace).
    pub staging: PathBuf,
    /// `(name, host directory)` of each input, canonical.
    pub inputs: Vec<(String, PathBuf)>,
    /// The host output directory, canonical.
    pub output: PathBuf,
    /// The command.
    pub argv: Vec<String>,
    /// The complete environment, in order.
    pub env: Vec<(String, String)>,
    /// The size of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
    /// The cgroup files (`tasks` on v1, `cgroup.procs` on v2) the init
    /// writes `0` to, joining the run's cgroups before anything else.
    pub cgroup_join: Vec<PathBuf>,
    /// Limits enforced with rlimits (when there are no cgroups).
    pub rlimits: Rlimits,
    /// Deliberate changes to the contract (`repro check`); the default
    /// changes nothing.
    #[serde(default)]
    pub variation: InitVariation,
}

/// [`Variation`](crate::Variation) as the init receives it, checked by the
/// runner (see `NativeSandbox::run_varied`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InitVariation {
    /// The hostname instead of [`HOSTNAME`](crate::HOSTNAME).
    pub hostname: Option<String>,
    /// The uid and gid instead of [`UID`](crate::UID):[`GID`](crate::GID).
    pub uid: Option<u32>,
    /// The umask set right before the exec.
    pub umask: Option<u32>,
    /// Keep only the first this many CPUs of the affinity mask.
    pub cpus: Option<usize>,
    /// Mount inputs and output under this absolute directory instead of
    /// `/repro`.
    pub mount_root: Option<String>,
    /// Copy each input into a private tmpfs so its listings come back in
    /// the reverse of the bind mount's order.
    pub reverse_listing: bool,
}

/// Limits enforced with `setrlimit` when the machine has no writable
/// cgroups; `None` leaves a limit as inherited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rlimits {
    /// `RLIMIT_AS`, bytes.
    pub address_space: Option<u64>,
    /// `RLIMIT_CPU`, seconds.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_NPROC` (counted per user on the whole host).
    pub processes: Option<u64>,
}

/// A message from the runner to the init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ToInit {
    /// Run this step.
    Run(Box<InitSpec>),
    /// Kill the step (everything in its pid namespace) and report.
    Kill,
}

/// A message from the init to the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FromInit {
    /// Setting up the sandbox failed before the step started.
    Error(String),
    /// The step's first process exited with this code.
    Exited(i32),
    /// The step's first process was killed by this signal.
    Signaled(i32),
}

/// Write one frame: a little-endian `u32` length, then the JSON.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Write one frame to a blocking writer.
pub(crate) fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    w.write_all(&encode(msg))
}

/// Read one frame from a blocking reader; `None` at a clean end of stream.
pub(crate) fn read_frame<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let body = read_body(r, u32::from_le_bytes(len) as usize)?;
    decode(&body).map(Some)
}

fn read_body(r: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is larger than {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Parse a frame's JSON body.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(body).map_err(std::io::Error::other)
}

/// Read one frame from an async reader; `None` at a clean end of stream.
pub(crate) async fn read_frame_async<T: for<'de> Deserialize<'de>>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<Option<T>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is larger than {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

/// The byte of a request to the zygote; its descriptors are the init's
/// end of the run's socket and the step's log.
pub(crate) const REQUEST: u8 = b'r';
/// The first byte a pooled init sends on the run's socket; its one
/// descriptor is a pidfd of the init.
pub(crate) const ACK: u8 = b'a';

/// Send the byte `tag` with `fds` attached (`SCM_RIGHTS`). `flags` are
/// added to `MSG_NOSIGNAL`.
pub(crate) fn send_fds(
    sock: BorrowedFd<'_>,
    tag: u8,
    fds: &[RawFd],
    flags: MsgFlags,
) -> std::io::Result<()> {
    let byte = [tag];
    let cmsg = [ControlMessage::ScmRights(fds)];
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&byte)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL | flags,
            None,
        ) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(std::io::Error::other("a one-byte message was not sent")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive one byte and the descriptors attached to it (close-on-exec),
/// at most `max` of them (more, or a truncated control message, is an
/// error). `None` at the end of the stream. `flags` are added to
/// `MSG_CMSG_CLOEXEC`.
pub(crate) fn recv_fds(
    sock: BorrowedFd<'_>,
    max: usize,
    flags: MsgFlags,
) -> std::io::Result<Option<(u8, Vec<OwnedFd>)>> {
    let mut byte = [0u8; 1];
    // Room for a few more than `max`, so that extra descriptors are
    // received (and closed) rather than truncated.
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let (bytes, truncated, raw) = loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | flags,
        ) {
            Ok(msg) => {
                let mut raw = Vec::new();
                let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            raw.extend(fds);
                        }
                    }
                }
                break (msg.bytes, truncated, raw);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: the kernel just installed these descriptors in this process
    // for this message; nothing else owns them.
    let fds: Vec<OwnedFd> = raw
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated || fds.len() > max {
        return Err(std::io::Error::other(format!(
            "a message carried more than {max} file descriptors"
        )));
    }
    Ok(Some((byte[0], fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let spec = InitSpec {
            root: "/r".into(),
            staging: "/s".into(),
            inputs: vec![("data".into(), "/d".into())],
            output: "/o".into(),
            argv: vec!["sh".into(), "-c".into(), "echo 'a\nb'".into()],
            env: vec![("PATH".into(), "/bin".into())],
            tmp_bytes: 1 << 20,
            cgroup_join: vec!["/sys/fs/cgroup/pids/repro/x/tasks".into()],
            rlimits: Rlimits {
                address_space: Some(7),
                ..Rlimits::default()
            },
            variation: InitVariation {
                uid: Some(1000),
                mount_root: Some("/elsewhere".into()),
                reverse_listing: true,
                ..InitVariation::default()
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToInit::Run(Box::new(spec.clone()))).expect("write");
        write_frame(&mut buf, &ToInit::Kill).expect("write");
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame::<ToInit>(&mut r).expect("read"),
            Some(ToInit::Run(Box::new(spec)))
        );
        assert_eq!(
            read_frame::<ToInit>(&mut r).expect("read"),
            Some(ToInit::Kill)
        );
        assert_eq!(read_frame::<ToInit>(&mut r).expect("read"), None);
    }

    #[test]
    fn a_spec_without_a_variation_reads_as_none() {
        let body = br#"{"root":"/r","staging":"/s","inputs":[],"output":"/o","argv":["true"],"env":[],"tmp_bytes":1,"cgroup_join":[],"rlimits":{"address_space":null,"cpu_seconds":null,"processes":null}}"#;
        let spec: InitSpec = decode(body).expect("decode");
        assert_eq!(spec.variation, InitVariation::default());
    }

    #[test]
    fn descriptors_cross_a_socket_with_their_tag() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"through the socket").expect("write");
        send_fds(a.as_fd(), REQUEST, &[file.as_raw_fd()], MsgFlags::empty()).expect("send");
        let (tag, fds) = recv_fds(b.as_fd(), 2, MsgFlags::empty())
            .expect("recv")
            .expect("a message");
        assert_eq!(tag, REQUEST);
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().expect("fd"));
        use std::io::Seek;
        got.rewind().expect("rewind");
        let mut text = String::new();
        got.read_to_string(&mut text).expect("read");
        assert_eq!(text, "through the socket");
        // Too many descriptors for the receiver is an error, not a
        // silent loss.
        let raw = [file.as_raw_fd(); 3];
        send_fds(a.as_fd(), REQUEST, &raw, MsgFlags::empty()).expect("send");
        assert!(recv_fds(b.as_fd(), 2, MsgFlags::empty()).is_err());
        drop(a);
        assert!(recv_fds(b.as_fd(), 2, MsgFlags::empty())
            .expect("eof")
            .is_none());
    }

    #[test]
    fn a_truncated_or_oversized_frame_is_an_error() {
        let buf = encode(&FromInit::Error("multi\nline".into()));
        let mut r = &buf[..buf.len() - 1];
        assert!(read_frame::<FromInit>(&mut r).is_err());
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame::<FromInit>(&mut &huge[..]).is_err());
    }
}
