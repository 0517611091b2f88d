//! Every environment variable `repro` reads, in one place.

/// The store directory (overrides the default location; `--store` overrides this).
pub const REPRO_STORE: &str = "REPRO_STORE";
/// The signing key file (overrides the default location; `--key` overrides this).
pub const REPRO_KEY: &str = "REPRO_KEY";
/// Any value turns colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// The XDG configuration directory, for the default key location.
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The home directory.
pub const HOME: &str = "HOME";
/// The sandbox backend (`native` or `docker`); `--sandbox` overrides it.
pub const REPRO_SANDBOX: &str = "REPRO_SANDBOX";
