//! Where a step of `repro` runs: a hermetic sandbox with a fixed contract.
//!
//! # The contract
//!
//! Both backends, [`NativeSandbox`] (Linux namespaces, no daemon, the
//! default; see [`native`]) and [`DockerSandbox`], give a step exactly this,
//! so a step's key and output bytes do not depend on the backend (the
//! [`Sandbox`] enum runs either). [`POLICY_VERSION`] is bumped whenever any
//! of it changes, because the version is part of every step key:
//!
//! - **Image.** The image is pinned by its OCI manifest digest and lives in
//!   the store ([`repro_store::Store`]); the backend loads it itself (the
//!   Docker daemon need not have it, see [`DockerSandbox::ensure_image`]).
//!   The image's root filesystem is read-only.
//! - **Isolation.** No network (not even loopback to the host); all
//!   capabilities dropped; `no-new-privileges`; a private IPC namespace; a
//!   pids limit (default 512); an optional memory limit with swap equal to
//!   memory (so no swap); an optional CPU limit; a wall-time limit.
//! - **Files.** Each input is a host directory bind-mounted read-only at
//!   [`IN_DIR`]`/<name>`. One host directory, empty at the start, is mounted
//!   writable at [`OUT_DIR`]; it is made mode `0777` so the step's user can
//!   write to it, and the caller ingests it afterwards. A private tmpfs is
//!   mounted at [`WORKDIR`] (`/tmp`, also `HOME`), mode `1777`, `nosuid`,
//!   `nodev`, executable, its size the memory limit or 1 GiB without one.
//! - **Identity.** Hostname [`HOSTNAME`], user [`UID`]`:`[`GID`], working
//!   directory [`WORKDIR`].
//! - **Environment.** Exactly [`StepSpec::env`], nothing else: nothing from
//!   the host, nothing from the image's config, and none of the variables
//!   the container engine adds (Docker adds `HOSTNAME` and merges the
//!   image's `Env`). The runner builds it from [`base_env`] plus the
//!   recipe's allowlist. The Docker backend achieves this by running the
//!   step as `env -i -- NAME=VALUE... argv...`, so the image must provide an
//!   `env` program on `PATH` (Debian, Alpine and busybox images all do).
//!   `argv[0]` is looked up on `spec.env`'s `PATH`.
//! - **Output.** The step's stdout and stderr are streamed, interleaved as
//!   they arrive, into one host log file ([`StepSpec::log`]); nothing is
//!   buffered in memory.
//! - **Outcome.** An exit code, or timed out, or killed for running out of
//!   memory, or cancelled, with the wall-clock duration ([`Outcome`]). A
//!   step that fails is an [`Outcome`], not an error: errors are for
//!   problems of the sandbox itself.
//! - **Cleanup.** The container (native: every process, mount and cgroup)
//!   is removed afterwards, whatever happened:
//!   success, failure, timeout, cancellation (through a
//!   [`CancellationToken`](tokio_util::sync::CancellationToken)), or the
//!   future being dropped.
//!
//! Not controlled (yet): the umask (the image's default, normally `022`),
//! the kernel, and the CPU model; the runner records the platform.
//!
//! `repro check` breaks the contract on purpose, one setting at a time
//! ([`Variation`]: hostname, uid, umask, visible CPUs, mount path, listing
//! order of the inputs), through [`Sandbox::run_varied`]; only the native
//! backend applies variations, and `Variation::default()` is exactly the
//! contract.
//!
//! Known differences between the backends that do not touch the contract:
//! files of the image and of the inputs appear owned by `65534` under the
//! native backend (host root is not mapped into its user namespace) and by
//! `0` under Docker, so a step that records file owners (for example by
//! tarring its inputs with owners) writes different bytes on the two; the
//! native backend also refuses `ptrace` by seccomp, where Docker's default
//! profile allows it inside the container.
//!
//! # Module order
//!
//! The modules form layers: each uses items defined only in the modules
//! before it in this list, never one after it (re-exports aside, doc links
//! included), so there are no circles between files.
//!
//! 1. Leaves, using nothing of the crate: `contract` (the fixed paths, ids
//!    and [`base_env`]), `outcome` ([`Outcome`], [`Termination`]).
//! 2. `rootfs`: unpacking and checking an image's root.
//! 3. `error`: [`Error`], and beside it [`native::Error`], since each can
//!    hold the other.
//! 4. `spec`: what a step asks for ([`StepSpec`], [`Variation`]).
//! 5. `backend`: the [`Backend`] trait, [`BackendKind`], [`BackendInfo`].
//! 6. The backends: `docker`, and [`native`], itself in layers: the
//!    leaves `protocol` (the init's arguments and messages), `seccomp`,
//!    `listing` and `cgroup`; then `init`; `zygote`; `entry` (the init's
//!    [`init_main`](native::init_main)); `pool` and `probe`; and last
//!    `native/mod.rs` ([`NativeSandbox`]).
//! 7. `sandbox`: the [`Sandbox`] enum over both backends.
//! 8. This file: docs and re-exports only.

mod backend;
mod contract;
mod docker;
mod error;
pub mod native;
mod outcome;
mod rootfs;
mod sandbox;
pub mod slurm;
mod spec;

pub use backend::{Backend, BackendInfo, BackendKind, JobProgress, JobState, ProgressSink};
pub use contract::{
    base_env, FIXED_ENV_NAMES, GID, HOSTNAME, IN_DIR, OUT_DIR, PATH, POLICY_VERSION, UID, WORKDIR,
};
pub use docker::{DockerSandbox, LABEL_STEP};
pub use error::{Error, Result};
pub use native::NativeSandbox;
pub use outcome::{Outcome, Termination};
pub use rootfs::{
    check_rootfs, check_rootfs_remembered, prepare_rootfs, Rootfs, RootfsError,
    RACY_SECONDS as ROOTFS_RACY_SECONDS,
};
pub use sandbox::Sandbox;
pub use slurm::{SlurmBackend, SlurmOptions};
pub use spec::{Gpus, Limits, Mount, StepSpec, Variation};
