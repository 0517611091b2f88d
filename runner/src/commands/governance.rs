//! What the governance commands share: their errors' exit codes and the
//! actor's key.

use std::path::Path;

use ed25519_dalek::SigningKey;
use repro_evidence::attest::{self, Identity};
use repro_evidence::exit::UserError;
use repro_evidence::keys;
use repro_governance::admin::{self, Outcome};
use repro_governance::chain::Change;
use repro_governance::promote::Actor;
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

/// Log a refused action as a `denied` audit entry signed by whoever tried
/// it, so that refusals leave evidence too. A failure to log is printed,
/// not raised: the refusal is the answer.
pub fn log_denied(
    store: &Store,
    key: &SigningKey,
    actor: &Identity,
    action: &str,
    subject: &str,
    reason: &str,
) {
    let event = repro_evidence::audit::Event::new(
        repro_governance::chain::kinds::DENIED,
        subject,
        serde_json::json!({"action": action, "reason": reason}),
    );
    if let Err(e) = repro_evidence::audit::append(store, key, actor, event) {
        eprintln!("warning: the refusal could not be written to the audit log: {e:#}");
    }
}

/// Run an administrator's change: build it as the actor (`--key`), submit
/// it, print what happened; a refusal is logged as `denied`.
pub fn administer(
    store: &Store,
    quiet: bool,
    key: Option<std::path::PathBuf>,
    action: &str,
    subject: &str,
    change: impl FnOnce(&Actor<'_>) -> repro_governance::Result<Change>,
) -> anyhow::Result<u8> {
    let (key, identity) = actor_key(store, &super::key_path(key)?)?;
    let actor = Actor {
        key: &key,
        identity: identity.clone(),
    };
    let outcome = change(&actor).and_then(|c| admin::submit(store, &actor, c));
    match outcome {
        Ok(Outcome::Applied(c)) => {
            if !quiet {
                eprintln!("{}", describe(&c));
            }
            println!("{}", c.subject());
            Ok(repro_evidence::exit::OK)
        }
        Ok(Outcome::Proposed(id)) => {
            if !quiet {
                eprintln!(
                    "proposed {action} of {subject}: another administrator confirms it with `repro governance confirm {id}`"
                );
            }
            println!("{id}");
            Ok(repro_evidence::exit::OK)
        }
        Err(e) => {
            if e.is_user() {
                log_denied(store, &key, &identity, action, subject, &e.to_string());
            }
            Err(lift(e))
        }
    }
}

/// One line saying what an applied change did.
pub fn describe(c: &Change) -> String {
    match c {
        Change::IdentityAdd { registered: r } => format!(
            "registered {} <{}> ({}) with roles: {}",
            r.name,
            r.email,
            r.keyid,
            r.roles.join(", ")
        ),
        Change::IdentityRevoke { registered: r } => {
            format!("revoked {} <{}> ({})", r.name, r.email, r.keyid)
        }
        Change::IdentityRoles { registered: r } => format!(
            "{} <{}> ({}) now holds: {}",
            r.name,
            r.email,
            r.keyid,
            if r.roles.is_empty() {
                "no role".to_string()
            } else {
                r.roles.join(", ")
            }
        ),
        Change::PolicySet { digest } => format!("policy {digest} is in force"),
    }
}
