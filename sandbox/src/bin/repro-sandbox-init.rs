//! The native sandbox's init as a binary of its own, for the tests of
//! `repro-sandbox` (the `repro` binary runs the same code as
//! `repro __sandbox-init`).

fn main() {
    repro_sandbox::native::init_main()
}
