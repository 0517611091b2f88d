//! What the engine reports while it works. The engine never prints; a
//! reporter turns these into progress bars, plain lines or JSON.

use std::time::Duration;

use repro_sandbox::JobProgress;
use repro_store::{StepKey, TreeDigest};

/// One thing that happened during a build.
#[derive(Debug, Clone)]
pub enum Event {
    /// Something before the steps: resolving, loading images.
    Note(String),
    /// Something the user must hear of even with `--quiet` or `--json`: a
    /// damaged store object found and worked around.
    Warning(String),
    /// A build of `steps` steps begins.
    BuildStarted {
        /// How many steps.
        steps: usize,
    },
    /// A step's key is known and it starts running in the sandbox.
    StepStarted {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
    },
    /// A step was found in the action cache and skipped.
    StepCached {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
        /// Its (cached) output tree.
        output: TreeDigest,
    },
    /// A step handed to a scheduler (a Slurm job) changed where it stands:
    /// its job is pending, it runs on a node, or its node failed and it is
    /// submitted again.
    StepPlacement {
        /// The step.
        step: String,
        /// Where it stands, with the job's id and a sentence for people.
        progress: JobProgress,
    },
    /// A step ran and succeeded.
    StepSucceeded {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
        /// Its output tree.
        output: TreeDigest,
        /// Wall time in the sandbox.
        duration: Duration,
    },
    /// A step ran and failed.
    StepFailed {
        /// The step.
        step: String,
        /// Why, in a sentence.
        reason: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A step did not run because a dependency failed.
    StepSkipped {
        /// The step.
        step: String,
        /// The failed dependency.
        because: String,
    },
}

/// Receives events. Must be cheap: it is called from the engine's tasks.
pub trait Reporter: Send + Sync {
    /// Handle one event.
    fn event(&self, event: &Event);
}
