//! repro-toolchains
