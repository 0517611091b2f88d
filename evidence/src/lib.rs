//! The evidence of `repro`: what a build, a verification or a governance
//! action leaves behind, signed, so that it can be checked long after.
//!
//! - [`keys`]: ed25519 signing keys and DSSE envelopes (the one decoder of
//!   a signed payload is [`keys::Envelope::payload`]);
//! - [`record`]: the build record, an in-toto statement with a SLSA
//!   provenance predicate, and how a record is found and opened;
//! - [`attest`]: verification attestations (SLSA verification summaries);
//! - [`audit`]: the hash-chained, signed audit log, and [`syslog`] its
//!   RFC 5424 form;
//! - [`version`]: `name@version`; [`clock`]: timestamps; [`exit`]: the
//!   error kinds that decide a command's exit code.
//!
//! Module order (a module uses only those before it): `env_vars`, `exit`,
//! `clock`, `version`, `platform`, `keys`, `record`, `attest`, `audit`,
//! `syslog`.

pub mod attest;
pub mod audit;
pub mod clock;
pub mod env_vars;
pub mod exit;
pub mod keys;
pub mod platform;
pub mod record;
pub mod syslog;
pub mod version;

pub use version::VersionRef;
