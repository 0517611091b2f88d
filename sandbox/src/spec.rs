//! What a step asks of the sandbox (what it gets back is in `outcome`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use repro_store::{ImageDigest, TreeDigest};

use crate::error::{Error, Result};

/// A host directory mounted read-only at `/repro/in/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// The input's name: one path component, mounted at `/repro/in/<name>`.
    pub name: String,
    /// The host directory.
    pub host: PathBuf,
    /// The tree laid out at `host`, when it came from the store: an
    /// executor that moves inputs through a registry sends this tree, not
    /// the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeDigest>,
}

/// The resource limits of one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory in bytes (swap is set equal, so there is none); `None` for no
    /// limit. At least 6 MiB, Docker's minimum.
    pub memory_bytes: Option<u64>,
    /// CPUs, e.g. `1.5`; `None` for no limit.
    pub cpus: Option<f64>,
    /// The wall-clock limit; the step is killed when it passes.
    pub timeout: Duration,
    /// The largest number of processes and threads.
    pub pids: u64,
    /// The GPUs the step asks for; `None` for none. Not part of the step
    /// key, like the other limits. The Slurm executor asks the cluster for
    /// them (`--gres`); the local sandboxes expose no GPU device, so there
    /// the step runs without one. Absent in specs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Gpus>,
}

/// A step's GPU request: how many, and optionally of which type, as a
/// cluster names GPU types (`a100`). Displays as Slurm writes it after
/// `gpu:`: `2` or `a100:2`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gpus {
    /// The GPU type (letters, digits, `_`, `.` and `-`), or `None` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// How many; at least 1.
    pub count: u32,
}

impl std::fmt::Display for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Some(k) => write!(f, "{k}:{}", self.count),
            None => write!(f, "{}", self.count),
        }
    }
}

impl Default for Limits {
    /// No memory or CPU limit, a one-hour timeout, 512 pids, no GPUs.
    fn default() -> Self {
        Limits {
            memory_bytes: None,
            cpus: None,
            timeout: Duration::from_secs(3600),
            pids: 512,
            gpus: None,
        }
    }
}

/// Everything the sandbox needs to run one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepSpec {
    /// The step's name (for labels and messages).
    pub step: String,
    /// The image, by manifest digest; load it with `ensure_image` first.
    pub image: ImageDigest,
    /// The command; `argv[0]` is looked up on `env["PATH"]`.
    pub argv: Vec<String>,
    /// The complete environment of the step.
    pub env: BTreeMap<String, String>,
    /// The inputs, each mounted read-only at `/repro/in/<name>`.
    pub inputs: Vec<Mount>,
    /// The host directory mounted at `/repro/out`: created if missing, must
    /// be empty, made mode `0777`.
    pub output: PathBuf,
    /// The host file that receives stdout and stderr (created or truncated).
    pub log: PathBuf,
    /// The resource limits.
    pub limits: Limits,
}

/// Deliberate changes to the sandbox contract, used by `repro check` to
/// find what a step secretly depends on. The default changes nothing; a run
/// with any change is never cached or recorded. Only the native backend
/// applies them (`NativeSandbox::run_varied`); what it cannot apply is
/// [`Error::InvalidSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variation {
    /// The UTS hostname inside instead of [`HOSTNAME`](crate::HOSTNAME)
    /// (1 to 64 bytes).
    pub hostname: Option<String>,
    /// Run as this uid, with the same number as gid and as the one
    /// supplementary group, instead of [`UID`](crate::UID):[`GID`](crate::GID).
    /// The user namespace maps this id (to the same host id) instead of
    /// `65534`, so files the step writes belong to it on the host. Not `0`.
    pub uid: Option<u32>,
    /// The umask set right before the step is executed (at most `0777`);
    /// without it the step keeps the image's default, `022`.
    pub umask: Option<u32>,
    /// Restrict the step's CPU affinity to the first this many CPUs it may
    /// use (all of them when there are fewer), so `nproc` (without
    /// `OMP_NUM_THREADS`) and `os.sched_getaffinity` see this many. At
    /// least 1. The CPU quota of [`Limits::cpus`] is unchanged.
    pub cpus: Option<usize>,
    /// Mount the inputs and the output under this directory instead of
    /// `/repro` (`<root>/in/<name>`, `<root>/out`); the caller rewrites argv
    /// and env. An absolute path of plain components, not `/` and not under
    /// `/tmp`, `/dev` or `/proc`; its directories are created in a
    /// throwaway overlay on the image root (the cached root is not written).
    pub mount_root: Option<String>,
    /// Lay the inputs out so that listing any of their directories returns
    /// the entries in the reverse of the order the plain bind mount gives:
    /// each input is copied into a private tmpfs at its mount point (file
    /// bytes streamed, modes, owners and modification times kept, read-only
    /// afterwards). Directory sizes, as `stat` reports them, are the
    /// tmpfs's. The copies count against the step's memory limit.
    pub reverse_listing: bool,
}

impl Variation {
    /// Whether this changes nothing.
    pub fn is_none(&self) -> bool {
        *self == Variation::default()
    }
}

/// Docker refuses memory limits under 6 MiB.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

impl StepSpec {
    /// Check what the sandbox cannot express, before touching anything.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |why: String| {
            Err(Error::InvalidSpec {
                step: self.step.clone(),
                why,
            })
        };
        match self.argv.first() {
            None => return bad("`argv` is empty".into()),
            Some(a) if a.contains('=') => {
                return bad(format!("the program name `{a}` contains `=`"));
            }
            Some(_) => {}
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return bad("an argument contains a NUL byte".into());
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return bad(format!("`{k}` is not a valid environment variable name"));
            }
            if v.contains('\0') {
                return bad(format!("the value of `{k}` contains a NUL byte"));
            }
        }
        let mut names = BTreeSet::new();
        for m in &self.inputs {
            let n = m.name.as_str();
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return bad(format!(
                    "`{n}` is not a valid input name (one path component)"
                ));
            }
            if !names.insert(n) {
                return bad(format!("input `{n}` is given twice"));
            }
        }
        let l = &self.limits;
        if let Some(m) = l.memory_bytes {
            if m < MIN_MEMORY || i64::try_from(m).is_err() {
                return bad(format!("memory limit {m} bytes is outside 6 MiB..=2^63"));
            }
        }
        if let Some(c) = l.cpus {
            if !(c.is_finite() && c > 0.0 && c < 1e6) {
                return bad(format!("CPU limit {c} is not a positive number"));
            }
        }
        if l.timeout.is_zero() {
            return bad("the timeout is zero".into());
        }
        if l.pids == 0 || i64::try_from(l.pids).is_err() {
            return bad(format!("pids limit {} is out of range", l.pids));
        }
        if let Some(g) = &l.gpus {
            if g.count == 0 {
                return bad("the GPU count is zero".into());
            }
            if let Some(k) = &g.kind {
                let mut b = k.bytes();
                let ok = matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
                    && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
                if !ok {
                    return bad(format!("`{k}` is not a GPU type"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use repro_store::Hash;

    fn spec() -> StepSpec {
        StepSpec {
            step: "s".into(),
            image: ImageDigest::from_hash(Hash::of(b"x")),
            argv: vec!["true".into()],
            env: BTreeMap::new(),
            inputs: vec![Mount {
                name: "data".into(),
                host: "/x".into(),
                tree: None,
            }],
            output: "/o".into(),
            log: "/l".into(),
            limits: Limits::default(),
        }
    }

    fn why(s: &StepSpec) -> String {
        match s.validate() {
            Err(Error::InvalidSpec { why, .. }) => why,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        spec().validate().expect("valid");
    }

    #[test]
    fn rejects_what_the_sandbox_cannot_express() {
        let mut s = spec();
        s.argv.clear();
        assert!(why(&s).contains("`argv` is empty"));

        let mut s = spec();
        s.argv[0] = "A=B".into();
        assert!(why(&s).contains("contains `=`"));

        let mut s = spec();
        s.env.insert("A=B".into(), "x".into());
        assert!(why(&s).contains("not a valid environment variable name"));

        for name in ["", ".", "..", "a/b"] {
            let mut s = spec();
            s.inputs[0].name = name.into();
            assert!(why(&s).contains("not a valid input name"), "{name}");
        }

        let mut s = spec();
        s.inputs.push(s.inputs[0].clone());
        assert!(why(&s).contains("given twice"));

        let mut s = spec();
        s.limits.memory_bytes = Some(1024);
        assert!(why(&s).contains("memory limit"));

        let mut s = spec();
        s.limits.cpus = Some(0.0);
        assert!(why(&s).contains("CPU limit"));
        s.limits.cpus = Some(f64::NAN);
        assert!(why(&s).contains("CPU limit"));

        let mut s = spec();
        s.limits.timeout = Duration::ZERO;
        assert!(why(&s).contains("timeout"));

        let mut s = spec();
        s.limits.pids = 0;
        assert!(why(&s).contains("pids"));

        let mut s = spec();
        s.limits.gpus = Some(Gpus {
            kind: None,
            count: 0,
        });
        assert!(why(&s).contains("GPU count is zero"));
        for kind in ["", "a100:2", "a b", "-x", "gpu,a100"] {
            s.limits.gpus = Some(Gpus {
                kind: Some(kind.into()),
                count: 1,
            });
            assert!(why(&s).contains("is not a GPU type"), "{kind}");
        }
        s.limits.gpus = Some(Gpus {
            kind: Some("nvidia_a100-sxm4.80gb".into()),
            count: 8,
        });
        s.validate().expect("a typed GPU request is valid");
    }

    /// A spec written before GPUs existed (no `gpus` key) still reads, and
    /// a spec without GPUs is written as before; one with GPUs round-trips.
    #[test]
    fn gpus_are_optional_in_the_serialized_spec() {
        let plain = serde_json::to_value(spec()).expect("serialize");
        assert!(plain["limits"].get("gpus").is_none(), "{plain}");
        let old: StepSpec = serde_json::from_value(plain).expect("an old spec reads");
        assert_eq!(old.limits.gpus, None);

        let mut s = spec();
        s.limits.gpus = Some(Gpus {
            kind: Some("a100".into()),
            count: 2,
        });
        let text = serde_json::to_string(&s).expect("serialize");
        let back: StepSpec = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, s);
        assert_eq!(
            s.limits.gpus.as_ref().map(|g| g.to_string()).as_deref(),
            Some("a100:2")
        );
    }
}
