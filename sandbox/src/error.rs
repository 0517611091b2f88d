//! The errors of the sandbox: problems of the sandbox or the container
//! engine, never a step that fails (that is an [`Outcome`](crate::Outcome)).

use std::path::PathBuf;

use repro_store::{BlobDigest, ImageDigest};

/// A `Result` with the sandbox's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the sandbox could not run a step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The native backend failed (its own error explains how).
    #[error(transparent)]
    Native(#[from] Box<native::Error>),

    /// The Docker daemon does not answer.
    #[error("cannot reach the Docker daemon: {0}\nhint: start it (`dockerd`) or set DOCKER_HOST")]
    Unreachable(String),

    /// A request to the Docker daemon failed.
    #[error("the Docker daemon failed to {action}: {source}")]
    Daemon {
        /// What was asked, e.g. "create the container of step `train`".
        action: String,
        /// The daemon's answer.
        #[source]
        source: bollard::errors::Error,
    },

    /// The image could not be read from the store.
    #[error("cannot read image `{image}` from the store: {source}")]
    Store {
        /// The image's manifest digest.
        image: ImageDigest,
        /// What the store said.
        #[source]
        source: repro_store::Error,
    },

    /// Loading the image gave a different image than its config digest.
    #[error(
        "loading image `{image}` into the Docker daemon gave image ID `{actual}`, expected its config digest `{expected}`\nhint: the image in the store may be damaged; re-import it"
    )]
    ImageMismatch {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The config digest the store records.
        expected: BlobDigest,
        /// What the daemon reported after the load (or "nothing").
        actual: String,
    },

    /// The daemon lacks the image: `run` was called before `ensure_image`,
    /// or the image was removed from the daemon since.
    #[error("image `{image}` is not loaded in the Docker daemon\nhint: call `ensure_image` with the store before `run`")]
    ImageNotEnsured {
        /// The image's manifest digest.
        image: ImageDigest,
    },

    /// The image declares volumes, which would be writable places outside
    /// the contract.
    #[error("image `{image}` declares volumes (`{volumes}`), which would be writable and outlive the step\nhint: use an image built without `VOLUME` instructions")]
    ImageVolumes {
        /// The image's manifest digest.
        image: ImageDigest,
        /// The declared mount points, joined.
        volumes: String,
    },

    /// The image lacks the `env` program the Docker backend needs.
    #[error(
        "image `{image}` has no `env` program on the step's PATH, so step `{step}` cannot start with an exact environment: {source}\nhint: use an image that provides `env` (coreutils or busybox)"
    )]
    NoEnvProgram {
        /// The step.
        step: String,
        /// The image's manifest digest.
        image: ImageDigest,
        /// The daemon's answer.
        #[source]
        source: bollard::errors::Error,
    },

    /// The step's specification is invalid.
    #[error("invalid sandbox spec for step `{step}`: {why}")]
    InvalidSpec {
        /// The step.
        step: String,
        /// What is wrong.
        why: String,
    },

    /// A host file or directory could not be prepared or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create the log file".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The cluster (Slurm) could not run a step: submission refused, the
    /// job failed before the step ran, or its node went away.
    #[error("the cluster could not run step `{step}`: {why}")]
    Cluster {
        /// The step.
        step: String,
        /// What Slurm said, and the job's own log when there is one.
        why: String,
    },

    /// The host directory given as the output is not empty.
    #[error("the output directory `{}` of step `{step}` is not empty\nhint: the sandbox needs a fresh, empty directory for `/repro/out`", path.display())]
    OutputNotEmpty {
        /// The step.
        step: String,
        /// The host directory.
        path: PathBuf,
    },

    /// Writing the image archive from the store failed mid-way.
    #[error("cannot stream image `{image}` into the Docker daemon: {why}")]
    Load {
        /// The image's manifest digest.
        image: ImageDigest,
        /// What went wrong.
        why: String,
    },
}

/// The native backend's errors, here beside the crate's [`Error`] because
/// each can hold the other (the crate re-exports them as
/// [`crate::native::Error`] and [`crate::native::Result`]).
pub mod native {
    use std::path::PathBuf;

    use repro_store::ImageDigest;

    use super::init_died_hint;
    use crate::rootfs::RootfsError;

    /// A `Result` with the native backend's [`Error`].
    pub type Result<T, E = Error> = std::result::Result<T, E>;

    /// Why the native sandbox could not run a step (a step that fails is an
    /// [`Outcome`](crate::Outcome), not an error).
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        /// The runner is not root.
        #[error("the native sandbox needs root (it mounts the step's root as root before entering a user namespace)\nhint: run as root, or use `--sandbox docker`")]
        NotRoot,

        /// The kernel refuses a namespace (the message names it and the
        /// setting to change).
        #[error("{0}")]
        Namespaces(String),

        /// The init executable could not be started.
        #[error("cannot start the sandbox init `{}`: {source}", path.display())]
        InitExe {
            /// The executable.
            path: PathBuf,
            /// The cause.
            #[source]
            source: std::io::Error,
        },

        /// The init ended without reporting.
        #[error(
            "the sandbox init of step `{step}` ended without a report ({status})\nhint: {}",
            init_died_hint(status)
        )]
        InitDied {
            /// The step.
            step: String,
            /// How the init ended.
            status: String,
        },

        /// Building the sandbox failed before the step started.
        #[error("cannot set up the sandbox of step `{step}`: {why}")]
        Setup {
            /// The step.
            step: String,
            /// What failed, from inside the init.
            why: String,
        },

        /// `run` was called before `ensure_image` for the step's image.
        #[error("the root filesystem of image `{image}` is not prepared\nhint: call `ensure_image` before `run`")]
        ImageNotEnsured {
            /// The image's manifest digest.
            image: ImageDigest,
        },

        /// The image's root filesystem could not be prepared.
        #[error(transparent)]
        Rootfs(#[from] RootfsError),

        /// An error shared with the other backend (invalid spec, output
        /// directory not empty, host files).
        #[error(transparent)]
        Sandbox(#[from] super::Error),

        /// A cgroup could not be created, joined or removed.
        #[error("cannot {action} the cgroup of step `{step}`: {source}\nhint: the native sandbox falls back to rlimits only where cgroups are not writable at all")]
        Cgroup {
            /// What was being done.
            action: &'static str,
            /// The step.
            step: String,
            /// The cause.
            #[source]
            source: std::io::Error,
        },

        /// Talking to the init failed.
        #[error("cannot {action} the sandbox init of step `{step}`: {source}")]
        Init {
            /// What was being done.
            action: &'static str,
            /// The step.
            step: String,
            /// The cause.
            #[source]
            source: std::io::Error,
        },
    }
}

/// What to do about an init that ended without a report, by how it ended
/// (`ExitStatus`'s text, or a note when the status is not known): the init
/// reports its own failures, so a signal came from outside the sandbox and
/// an exit is a bug; a pooled init's status is not kept, so it may be either.
fn init_died_hint(status: &str) -> &'static str {
    if status.starts_with("signal:") {
        concat!(
            "it was killed from outside: by a node failure, a scheduler (time limit, preemption, cancellation), the OOM killer or a person; ",
            "run the step again, and if it happens again see the machine's kernel log (`dmesg`)"
        )
    } else if status.starts_with("exit status:") {
        "this is a bug of `repro`; the step's log may say more"
    } else {
        concat!(
            "it was probably killed from outside: by a node failure, a scheduler (time limit, preemption, cancellation), the OOM killer or a person ",
            "(see the machine's kernel log, `dmesg`); if nothing killed it, this is a bug of `repro`, and the step's log may say more"
        )
    }
}

#[cfg(test)]
mod init_died_tests {
    use super::native::Error;

    #[test]
    fn a_killed_init_is_not_called_a_bug() {
        let killed = Error::InitDied {
            step: "train".into(),
            status: "signal: 9 (SIGKILL)".into(),
        }
        .to_string();
        assert!(killed.contains("killed from outside"), "{killed}");
        assert!(!killed.contains("bug of"), "{killed}");
        let exited = Error::InitDied {
            step: "train".into(),
            status: "exit status: 1".into(),
        }
        .to_string();
        assert!(exited.contains("bug of `repro`"), "{exited}");
        assert!(!exited.contains("killed from outside"), "{exited}");
        let unknown = Error::InitDied {
            step: "train".into(),
            status: "a pooled init, whose exit status is not kept".into(),
        }
        .to_string();
        assert!(
            unknown.contains("probably killed from outside"),
            "{unknown}"
        );
        assert!(unknown.contains("if nothing killed it"), "{unknown}");
    }
}
