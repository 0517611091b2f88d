//! What the governance commands share: their errors' exit codes and the
//! actor's key.

use std::path::Path;

use ed25519_dalek::SigningKey;
use repro_evidence::attest::{self, Identity};
use repro_evidence::exit::UserError;
use repro_evidence::keys;
use repro_governance::{identities, Error};
use repro_store::Store;

/// Map a governance error onto the runner's exit codes.
pub fn lift(e: Error) -> anyhow::Error {
    match e {
        e if e.is_user() => UserError(e.to_string()).into(),
        Error::Other(e) => e,
        Error::Store(e) => e.into(),
        e => e.into(),
    }
}

/// The key at `path` and the identity it acts as (registered, else the one
/// written by `repro key generate`).
pub fn actor_key(store: &Store, path: &Path) -> anyhow::Result<(SigningKey, Identity)> {
    let key = keys::load(path)?;
    let keyid = keys::key_id(&key.verifying_key()).to_string();
    let identity = match identities::get(store, &keyid).map_err(lift)? {
        Some(r) => r.identity(),
        None => attest::identity_of(path, &key),
    };
    Ok((key, identity))
}
