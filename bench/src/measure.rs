//! Running whole commands and timing them: wall time and peak memory of
//! each run, medians of runs taken alternately with a reference.

// `wait4` (the only way to get one child's peak memory) has no safe
// wrapper in std or nix; its two uses are commented.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One run of a command.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak resident set size of the process (and the largest of the
    /// children it waited for), in KiB, as `wait4` reports it.
    pub max_rss_kib: u64,
}

/// A command line with its environment, runnable many times.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// How it is named in messages.
    pub label: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>, args: &[&str]) -> Cmd {
        let program = program.as_ref().to_string_lossy().into_owned();
        let label = std::iter::once(
            Path::new(&program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.clone()),
        )
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
        Cmd {
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            label,
        }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((k.to_string(), v.as_ref().to_string_lossy().into_owned()));
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run once with output discarded; fails unless it exits 0.
    pub fn time(&self) -> Result<Run> {
        let mut c = self.command();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let child = c
            .spawn()
            .with_context(|| format!("start `{}`", self.label))?;
        self.reap(child.id() as libc::pid_t, start)
    }

    /// Run once, timed, and return its stdout too; fails unless it exits 0.
    pub fn time_output(&self) -> Result<(Run, String)> {
        use std::io::Read;
        let mut c = self.command();
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = c
            .spawn()
            .with_context(|| format!("start `{}`", self.label))?;
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_string(&mut out)
            .with_context(|| format!("read the output of `{}`", self.label))?;
        let run = self.reap(child.id() as libc::pid_t, start)?;
        Ok((run, out))
    }

    /// Wait for `pid` (spawned at `start`) with `wait4`, for its peak memory.
    fn reap(&self, pid: libc::pid_t, start: Instant) -> Result<Run> {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not yet waited for (its `Child` is
        // never waited through std); status and usage point to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let wall = start.elapsed();
        if r != pid {
            bail!(
                "wait for `{}`: {}",
                self.label,
                std::io::Error::last_os_error()
            );
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!(
                "`{}` failed (wait status {status}); run it by hand to see why",
                self.label
            );
        }
        Ok(Run {
            wall,
            max_rss_kib: usage.ru_maxrss as u64,
        })
    }

    /// Run once and return its stdout; fails unless it exits 0, showing
    /// its stderr.
    pub fn output(&self) -> Result<String> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("start `{}`", self.label))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}):\n{}",
                self.label,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[Duration]) -> Duration {
    assert!(!xs.is_empty(), "median of nothing");
    let mut v = xs.to_vec();
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// Run `a` and `b` alternately `runs` times each (after one untimed
/// warm-up run of each); returns the wall times of each.
pub fn side_by_side(a: &Cmd, b: &Cmd, runs: usize) -> Result<(Vec<Run>, Vec<Run>)> {
    a.time()?;
    b.time()?;
    let mut ra = Vec::with_capacity(runs);
    let mut rb = Vec::with_capacity(runs);
    for i in 0..runs {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            ra.push(a.time()?);
            rb.push(b.time()?);
        } else {
            rb.push(b.time()?);
            ra.push(a.time()?);
        }
    }
    Ok((ra, rb))
}

/// The wall times of `runs`.
pub fn walls(runs: &[Run]) -> Vec<Duration> {
    runs.iter().map(|r| r.wall).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(
            median(&[ms(4), ms(1), ms(3), ms(2)]),
            Duration::from_micros(2500)
        );
    }

    #[test]
    fn a_failing_command_is_an_error() {
        let err = Cmd::new("false", &[]).time().unwrap_err();
        assert!(err.to_string().contains("`false` failed"), "{err}");
    }

    #[test]
    fn peak_memory_of_the_child_is_reported() {
        // A child that touches 64 MiB must report at least that much.
        let r = Cmd::new(
            "python3",
            &[
                "-c",
                "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])",
            ],
        )
        .time()
        .unwrap();
        assert!(r.max_rss_kib >= 64 * 1024, "{r:?}");
    }
}
