//! The entry point of the re-executed init: one process, three modes
//! (probe, zygote, one step), chosen by its arguments (see `protocol`).

use super::init::{probe_main, step_main};
use super::protocol::{PROBE_ARG, ZYGOTE_ARG};
use super::zygote::zygote_main;

/// The entry point of the re-executed init (`repro __sandbox-init ...`):
/// the runner calls it first thing in `main`, before it starts any thread
/// or async runtime, when `argv[1]` is [`INIT_ARG`](super::INIT_ARG); it is also the whole
/// `repro-sandbox-init` binary. Never returns.
pub fn init_main() -> ! {
    let mode = std::env::args_os().nth(2);
    let code = match mode {
        Some(a) if a == PROBE_ARG => probe_main(),
        Some(a) if a == ZYGOTE_ARG => zygote_main(),
        _ => step_main(),
    };
    std::process::exit(code)
}
