//! What running a step gives back: how it ended and how long it took. A
//! leaf: it uses nothing else of the crate.

use std::time::Duration;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Termination {
    /// The step's process exited with this code (128 + n for signal n).
    Exited(i32),
    /// The wall-time limit passed and the step was killed.
    TimedOut,
    /// The kernel killed a process of the step for exceeding the memory
    /// limit (reported even when the main process survived it).
    OutOfMemory,
    /// The caller cancelled the step and it was killed.
    Cancelled,
}

/// The result of running a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// How the step ended.
    pub termination: Termination,
    /// The wall-clock time from start to end.
    pub duration: Duration,
}

impl Outcome {
    /// Whether the step exited with code 0.
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exit_zero_is_success() {
        let o = |t| Outcome {
            termination: t,
            duration: Duration::ZERO,
        };
        assert!(o(Termination::Exited(0)).success());
        assert!(!o(Termination::Exited(1)).success());
        assert!(!o(Termination::TimedOut).success());
        assert!(!o(Termination::OutOfMemory).success());
        assert!(!o(Termination::Cancelled).success());
    }
}
