//! Exit codes, documented in the README.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success; for `verify`: reproduced |
//! | 1 | a step failed (`build`); not reproduced (`verify`) |
//! | 2 | the user's input is wrong: recipe, lock, arguments |
//! | 3 | could not do it: the environment or the evidence is broken (Docker down, missing input, corrupt or tampered store object, bad signature) |
//! | 4 | internal error (a bug in repro) |
//! | 130 | interrupted (Ctrl-C); running steps were stopped and their containers removed |

/// Success; for `verify`: reproduced.
pub const OK: u8 = 0;
/// A step failed; or not reproduced.
pub const FAILED: u8 = 1;
/// Bad recipe, lock or arguments.
pub const USER: u8 = 2;
/// Environment or evidence problem; for `verify`: could not verify.
pub const CANNOT: u8 = 3;
/// A bug.
pub const INTERNAL: u8 = 4;

/// Interrupted by Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// The build or verification was interrupted (Ctrl-C); exits with [`INTERRUPTED`].
#[derive(Debug, thiserror::Error)]
#[error("interrupted: running steps were stopped")]
pub struct Interrupted;

/// An error that is the user's to fix (bad input); exits with [`USER`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Evidence changed after it was signed (a forged or edited attestation);
/// exits with [`CANNOT`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Tampered(pub String);

/// Why a record could not be checked at all (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("could not verify: {0}")]
pub struct CannotVerify(pub String);

/// The exit code that one cause of an error decides, if it is one of the
/// kinds this crate knows (the binary adds the recipe, graph and sandbox
/// errors).
pub fn code_of(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if cause.is::<Interrupted>() {
        Some(INTERRUPTED)
    } else if cause.is::<Tampered>() || cause.is::<CannotVerify>() {
        Some(CANNOT)
    } else if cause.is::<UserError>() || cause.is::<repro_recipes::Error>() {
        Some(USER)
    } else if cause.is::<repro_store::Error>() {
        Some(CANNOT)
    } else {
        None
    }
}

/// Pick the exit code for an error by looking through its causes, with
/// [`code_of`] deciding each; [`CANNOT`] when no cause is known.
pub fn classify(e: &anyhow::Error) -> u8 {
    classify_with(e, |_| None)
}

/// As [`classify`], asking `more` first about each cause.
pub fn classify_with(
    e: &anyhow::Error,
    more: impl Fn(&(dyn std::error::Error + 'static)) -> Option<u8>,
) -> u8 {
    e.chain()
        .find_map(|cause| more(cause).or_else(|| code_of(cause)))
        .unwrap_or(CANNOT)
}
