//! Registered identities: a public key bound to a person (name, e-mail) and
//! the roles the policy asks for (`validator`, `model-risk`,
//! `business-owner`, `emergency`, ... : free strings).
//!
//! Each identity is `v1/identities/<keyid hex>.json` in the store (see
//! [`Registered`]); its public key is also kept as a blob, so everything it
//! signs can be checked. A revoked identity stays on file with the time and
//! reason of the revocation: nothing it signed counts any more.

use ed25519_dalek::VerifyingKey;
use repro_store::Store;
use serde::{Deserialize, Serialize};

use crate::base::{list_dir, read_optional, Error, Result};
use repro_evidence::attest::Identity;
use repro_evidence::keys;

/// A registered identity, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registered {
    /// The key id, `sha256:<hex of the public key>`.
    pub keyid: String,
    /// The public key, 64 hex digits.
    pub public_key: String,
    /// The person's name.
    pub name: String,
    /// The person's e-mail.
    pub email: String,
    /// The roles, sorted.
    pub roles: Vec<String>,
    /// When it was registered (RFC 3339).
    pub added: String,
    /// The key id of whoever registered it.
    pub added_by: String,
    /// Set once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// A revocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    /// When (RFC 3339).
    pub time: String,
    /// Why.
    pub reason: String,
    /// The key id of whoever revoked it.
    pub by: String,
}

impl Registered {
    /// The identity as written into approvals and audit entries.
    pub fn identity(&self) -> Identity {
        Identity {
            keyid: self.keyid.clone(),
            name: Some(self.name.clone()),
            email: Some(self.email.clone()),
        }
    }

    /// Whether it holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

fn dir(store: &Store) -> std::path::PathBuf {
    store.ns_dir(repro_store::Ns::Identities)
}

fn hex_of(keyid: &str) -> &str {
    keyid.strip_prefix("sha256:").unwrap_or(keyid)
}

fn path_of(store: &Store, keyid: &str) -> std::path::PathBuf {
    dir(store).join(format!("{}.json", hex_of(keyid)))
}

/// The registered identity of `keyid` (`sha256:<hex>` or bare hex), if any.
pub fn get(store: &Store, keyid: &str) -> Result<Option<Registered>> {
    let hex = hex_of(keyid);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let path = path_of(store, keyid);
    match read_optional(&path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Malformed {
                path,
                why: e.to_string(),
            }),
    }
}

/// Every registered identity (revoked ones included), sorted by key id.
pub fn list(store: &Store) -> Result<Vec<Registered>> {
    let mut out = Vec::new();
    for name in list_dir(&dir(store))? {
        if let Some(hex) = name.strip_suffix(".json") {
            if let Some(r) = get(store, hex)? {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// Register `key` as `name <email>` with `roles`, on behalf of `by` (a key
/// id). Refuses a key that is already registered (revoked or not).
pub fn add(
    store: &Store,
    key: &VerifyingKey,
    name: &str,
    email: &str,
    roles: &[String],
    by: &str,
) -> Result<Registered> {
    let keyid = keys::key_id(key).to_string();
    let reg = registration(key, name, email, roles, &repro_evidence::clock::now(), by)?;
    if let Some(existing) = get(store, &keyid)? {
        let hint = if existing.revoked.is_some() {
            "it was revoked; a revoked key stays revoked: register a new key"
        } else {
            "revoke it first (`repro identity revoke`) and register a new key"
        };
        return Err(Error::Refused(format!(
            "key `{keyid}` is already registered as {} <{}>\nhint: {hint}",
            existing.name, existing.email
        )));
    }
    keys::publish(store, key)?;
    write(store, &reg)?;
    Ok(reg)
}

/// The identity file that registers `key` as `name <email>` with `roles`
/// at `added`, on behalf of `by` (a key id); checked, not written.
pub fn registration(
    key: &VerifyingKey,
    name: &str,
    email: &str,
    roles: &[String],
    added: &str,
    by: &str,
) -> Result<Registered> {
    if name.trim().is_empty() || email.trim().is_empty() {
        return Err(Error::Invalid(
            "an identity needs a name and an e-mail\nhint: pass `--name` and `--email`".into(),
        ));
    }
    if roles.iter().any(|r| r.trim().is_empty()) {
        return Err(Error::Invalid("a role cannot be empty".into()));
    }
    let mut roles: Vec<String> = roles.iter().map(|r| r.trim().to_string()).collect();
    roles.sort();
    roles.dedup();
    Ok(Registered {
        keyid: keys::key_id(key).to_string(),
        public_key: hex::encode(key.as_bytes()),
        name: name.to_string(),
        email: email.to_string(),
        roles,
        added: added.to_string(),
        added_by: by.to_string(),
        revoked: None,
    })
}

/// Write `reg` as its identity file (as an administrator's change says).
pub fn write_file(store: &Store, reg: &Registered) -> Result<()> {
    write(store, reg)
}

/// Revoke `keyid` for `reason`, on behalf of `by`.
pub fn revoke(store: &Store, keyid: &str, reason: &str, by: &str) -> Result<Registered> {
    if reason.trim().is_empty() {
        return Err(Error::Invalid(
            "a revocation needs a reason\nhint: pass `--reason \"...\"`".into(),
        ));
    }
    let Some(mut reg) = get(store, keyid)? else {
        return Err(Error::Refused(format!(
            "key `{keyid}` is not a registered identity\nhint: `repro identity list` shows the registered keys"
        )));
    };
    if let Some(r) = &reg.revoked {
        return Err(Error::Refused(format!(
            "key `{}` was already revoked at {}: {}",
            reg.keyid, r.time, r.reason
        )));
    }
    reg.revoked = Some(Revocation {
        time: repro_evidence::clock::now(),
        reason: reason.to_string(),
        by: by.to_string(),
    });
    write(store, &reg)?;
    Ok(reg)
}

fn write(store: &Store, reg: &Registered) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(reg).map_err(anyhow::Error::from)?;
    Ok(store.write_atomic(&path_of(store, &reg.keyid), &bytes)?)
}

/// Why `keyid` cannot act as `role` at `at` (RFC 3339; `None`: now), or
/// `None` when it can: it must be registered (before `at`), hold the role and
/// not be revoked.
pub fn cannot_act(
    store: &Store,
    keyid: &str,
    role: &str,
    at: Option<&str>,
) -> Result<Option<String>> {
    let Some(reg) = get(store, keyid)? else {
        return Ok(Some(format!("key `{keyid}` is not a registered identity")));
    };
    if let Some(r) = &reg.revoked {
        return Ok(Some(format!(
            "key `{keyid}` ({}) was revoked at {}: {}",
            reg.name, r.time, r.reason
        )));
    }
    if let Some(at) = at {
        let registered_before = match (
            repro_evidence::clock::parse(&reg.added),
            repro_evidence::clock::parse(at),
        ) {
            (Some(added), Some(at)) => added <= at,
            _ => false,
        };
        if !registered_before {
            return Ok(Some(format!(
                "key `{keyid}` ({}) was not registered at {at}",
                reg.name
            )));
        }
    }
    if !reg.has_role(role) {
        return Ok(Some(format!(
            "key `{keyid}` ({}) does not hold the role `{role}` (it holds: {})",
            reg.name,
            if reg.roles.is_empty() {
                "none".to_string()
            } else {
                reg.roles.join(", ")
            }
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn add_revoke_and_role_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let k = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let id = keys::key_id(&k).to_string();
        let r = add(
            &store,
            &k,
            "Val",
            "val@example.com",
            &["validator".into()],
            "me",
        )
        .unwrap();
        assert_eq!(r.roles, ["validator"]);
        assert!(cannot_act(&store, &id, "validator", None)
            .unwrap()
            .is_none());
        let why = cannot_act(&store, &id, "model-risk", None)
            .unwrap()
            .unwrap();
        assert!(why.contains("does not hold the role `model-risk`"), "{why}");
        let why = cannot_act(&store, &id, "validator", Some("2000-01-01T00:00:00Z"))
            .unwrap()
            .unwrap();
        assert!(why.contains("was not registered at"), "{why}");
        // Registering twice is refused.
        assert!(add(&store, &k, "Val", "v@e", &[], "me")
            .unwrap_err()
            .is_user());
        revoke(&store, &id, "left the team", "me").unwrap();
        let why = cannot_act(&store, &id, "validator", None).unwrap().unwrap();
        assert!(
            why.contains("was revoked") && why.contains("left the team"),
            "{why}"
        );
        assert_eq!(list(&store).unwrap().len(), 1);
        let other = keys::key_id(&SigningKey::from_bytes(&[4u8; 32]).verifying_key()).to_string();
        let why = cannot_act(&store, &other, "validator", None)
            .unwrap()
            .unwrap();
        assert!(why.contains("is not a registered identity"), "{why}");
    }
}
