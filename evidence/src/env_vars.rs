//! Every environment variable `repro` reads, in one place.

/// The store directory (overrides the default location; `--store` overrides this).
pub const REPRO_STORE: &str = "REPRO_STORE";
/// The signing key file (overrides the default location; `--key` overrides this).
pub const REPRO_KEY: &str = "REPRO_KEY";
/// Any value turns colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// The XDG configuration directory, for the default key and configuration file locations.
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The home directory.
pub const HOME: &str = "HOME";
/// The configuration file of `build` and `verify` (instead of
/// `$XDG_CONFIG_HOME/repro/config.toml` or `/etc/repro/config.toml`).
pub const REPRO_CONFIG: &str = "REPRO_CONFIG";
/// The sandbox backend (`native` or `docker`); `--sandbox` overrides it.
pub const REPRO_SANDBOX: &str = "REPRO_SANDBOX";
/// The user name for a registry (`push`, `pull`, `build --remote`); with `REPRO_REGISTRY_PASSWORD`.
pub const REPRO_REGISTRY_USERNAME: &str = "REPRO_REGISTRY_USERNAME";
/// The password for a registry; never written to records, logs or messages.
pub const REPRO_REGISTRY_PASSWORD: &str = "REPRO_REGISTRY_PASSWORD";
/// A PEM file of CA certificates to trust for a registry (`--ca-file` overrides it).
pub const REPRO_REGISTRY_CA_FILE: &str = "REPRO_REGISTRY_CA_FILE";
/// Docker's configuration directory (holds `config.json` with registry credentials).
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// On a Slurm node without the shared store: the node's own store for
/// `--slurm-registry` jobs (default `repro-node-store` in the node's
/// temporary directory).
pub const REPRO_NODE_STORE: &str = "REPRO_NODE_STORE";
/// The build time for the version placeholder `{date}` (seconds since the
/// epoch, <https://reproducible-builds.org/specs/source-date-epoch/>);
/// record times stay the real ones.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
