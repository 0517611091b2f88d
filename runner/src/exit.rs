//! The exit code of an error (the codes are documented in
//! [`repro_evidence::exit`] and the README).

pub use repro_evidence::exit::*;

/// Pick the exit code for an error by looking through its causes: the
/// recipe, graph and configuration file errors are the user's, the sandbox's are the
/// environment's, and the evidence crate knows the rest.
pub fn classify(e: &anyhow::Error) -> u8 {
    classify_with(e, |cause| {
        if cause.is::<repro_dag::Error>() || cause.is::<crate::config::Error>() {
            Some(USER)
        } else if cause.is::<repro_sandbox::Error>() {
            Some(CANNOT)
        } else {
            None
        }
    })
}
