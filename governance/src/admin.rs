//! The governance root and the changes only administrators make:
//! registering and revoking identities, changing roles, putting a policy in
//! force. Each change is an audit entry ([`crate::chain`] replays them);
//! with a quorum of 2 one administrator proposes and another (another
//! person) confirms.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use repro_evidence::audit::{self, Event};
use repro_evidence::keys;
use repro_store::{Hash, Ns, Store};
use serde::Deserialize;

use crate::base::{Error, Result};
use crate::chain::{self, kinds, Applied, Change, Root, State, ADMIN_ROLE};
use crate::identities::{self, Registered, Revocation};
use crate::promote::Actor;

/// `admins.toml`, the file `repro governance init` reads.
///
/// ```toml
/// quorum = 2
/// [[admin]]
/// name = "Ada Admin"
/// email = "ada@example.com"
/// key = "ada.key.pub"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminsFile {
    /// How many different administrators must agree to a change (1 or 2).
    pub quorum: u32,
    /// The administrators.
    pub admin: Vec<AdminEntry>,
}

/// One administrator of [`AdminsFile`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminEntry {
    /// Their name.
    pub name: String,
    /// Their e-mail (the person: two keys with one e-mail are one person).
    pub email: String,
    /// Their public key file (`.pub`), relative to the admins file.
    pub key: PathBuf,
}

/// An administrator named at the start: key, name, e-mail.
pub type NewAdmin = (VerifyingKey, String, String);

/// Read `admins.toml`: the quorum and the administrators' keys, names and e-mails.
pub fn read_admins(path: &Path) -> Result<(u32, Vec<NewAdmin>)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let file: AdminsFile = toml::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "invalid admins file `{}`: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for a in file.admin {
        let key_path = base.join(&a.key);
        let text = std::fs::read_to_string(&key_path).map_err(|source| Error::Io {
            action: "read",
            path: key_path.clone(),
            source,
        })?;
        let key = keys::parse_public(&text)
            .map_err(|e| Error::Invalid(format!("`{}`: {e:#}", key_path.display())))?;
        out.push((key, a.name, a.email));
    }
    Ok((file.quorum, out))
}

/// Initialise governance: register the administrators (role [`ADMIN_ROLE`])
/// and the quorum, once. The actor must be one of them.
pub fn init(store: &Store, actor: &Actor<'_>, quorum: u32, admins: &[NewAdmin]) -> Result<Root> {
    let state = chain::replay(store)?;
    if state.root.is_some() {
        return Err(Error::Refused(
            "governance is already initialised\nhint: `repro governance show` shows the administrators"
                .into(),
        ));
    }
    if !identities::list(store)?.is_empty() {
        return Err(Error::Refused(
            "the store already holds identities registered without a governance root\nhint: start governance in a new store, or remove `v1/identities/` after recording who they were".into(),
        ));
    }
    let mut people: Vec<String> = admins.iter().map(|a| a.2.trim().to_lowercase()).collect();
    people.sort();
    people.dedup();
    if !(1..=2).contains(&quorum) || people.len() < quorum as usize {
        return Err(Error::Invalid(format!(
            "a quorum of {quorum} needs at least {quorum} administrators who are different people (different e-mails); the file names {}\nhint: the quorum is 1 or 2",
            people.len()
        )));
    }
    let me = keys::key_id(&actor.key.verifying_key()).to_string();
    let now = repro_evidence::clock::now();
    let mut registered = Vec::new();
    for (key, name, email) in admins {
        registered.push(identities::registration(
            key,
            name,
            email,
            &[ADMIN_ROLE.to_string()],
            &now,
            &me,
        )?);
    }
    if !registered.iter().any(|r| r.keyid == me) {
        return Err(Error::Refused(format!(
            "the key `{me}` that signs the governance root must be one of its administrators"
        )));
    }
    for (key, ..) in admins {
        keys::publish(store, key)?;
    }
    for r in &registered {
        identities::write_file(store, r)?;
    }
    let root = Root {
        quorum,
        admins: registered,
    };
    audit::append(
        store,
        actor.key,
        &actor.identity,
        Event::new(
            kinds::INIT,
            "governance",
            serde_json::to_value(&root).map_err(anyhow::Error::from)?,
        ),
    )?;
    Ok(root)
}

/// What [`submit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The change is in force.
    Applied(Box<Change>),
    /// The change waits for another administrator: its id.
    Proposed(String),
}

/// Submit `change` as `actor`: applied at once with a quorum of 1, or when
/// it completes another administrator's proposal; proposed otherwise.
pub fn submit(store: &Store, actor: &Actor<'_>, change: Change) -> Result<Outcome> {
    let state = chain::checked(store)?;
    let me = &actor.identity.keyid;
    if let Some(why) = state.cannot_administer(me) {
        return Err(Error::Refused(format!("refused: {why}")));
    }
    validate(&state, &change)?;
    let id = change.id();
    let proposal = if state.quorum() >= 2 {
        match state.pending.get(&id) {
            None => {
                audit::append(
                    store,
                    actor.key,
                    &actor.identity,
                    Event::new(
                        kinds::PROPOSE,
                        change.subject(),
                        serde_json::to_value(&change).map_err(anyhow::Error::from)?,
                    ),
                )?;
                return Ok(Outcome::Proposed(id));
            }
            Some(p) => {
                let mine = state
                    .identities
                    .get(me)
                    .map(|r| r.email.to_lowercase())
                    .unwrap_or_default();
                if p.by_email == mine {
                    return Err(Error::Refused(format!(
                        "refused: you proposed {id}; another administrator (another person) must confirm it"
                    )));
                }
                Some(id)
            }
        }
    } else {
        None
    };
    apply(store, &change)?;
    let kind = change.kind();
    let subject = change.subject();
    audit::append(
        store,
        actor.key,
        &actor.identity,
        Event::new(
            kind,
            subject,
            serde_json::to_value(Applied {
                change: change.clone(),
                proposal,
            })
            .map_err(anyhow::Error::from)?,
        ),
    )?;
    Ok(Outcome::Applied(Box::new(change)))
}

/// Confirm the pending proposal `id` (another administrator's) as `actor`.
pub fn confirm(store: &Store, actor: &Actor<'_>, id: &str) -> Result<Outcome> {
    let state = chain::checked(store)?;
    let Some(p) = state.pending.get(id) else {
        return Err(Error::Refused(format!(
            "there is no pending proposal `{id}`\nhint: `repro governance show` lists them"
        )));
    };
    submit(store, actor, p.change.clone())
}

/// Whether `change` makes sense in `state` (before authority is counted).
fn validate(state: &State, change: &Change) -> Result<()> {
    match change {
        Change::IdentityAdd { registered } => {
            if let Some(r) = state.identities.get(&registered.keyid) {
                return Err(Error::Refused(format!(
                    "key `{}` is already registered as {} <{}>",
                    r.keyid, r.name, r.email
                )));
            }
        }
        Change::IdentityRevoke { registered } | Change::IdentityRoles { registered } => {
            match state.identities.get(&registered.keyid) {
                None => {
                    return Err(Error::Refused(format!(
                        "key `{}` is not a registered identity",
                        registered.keyid
                    )))
                }
                Some(r) if r.revoked.is_some() => {
                    return Err(Error::Refused(format!(
                        "key `{}` ({}) is revoked",
                        r.keyid, r.name
                    )))
                }
                Some(_) => {}
            }
        }
        Change::PolicySet { .. } => {}
    }
    Ok(())
}

/// Make the files say what `change` says.
fn apply(store: &Store, change: &Change) -> Result<()> {
    match change {
        Change::IdentityAdd { registered }
        | Change::IdentityRevoke { registered }
        | Change::IdentityRoles { registered } => {
            let key = keys::parse_public(&registered.public_key)
                .map_err(|e| Error::Invalid(format!("{e:#}")))?;
            keys::publish(store, &key)?;
            identities::write_file(store, registered)
        }
        Change::PolicySet { digest } => {
            let d: repro_store::BlobDigest =
                digest.parse().map_err(|e| Error::Invalid(format!("{e}")))?;
            let bytes = store.read_blob(&d)?;
            Ok(store.write_atomic(&store.ns_dir(Ns::Policy), &bytes)?)
        }
    }
}

/// The change that registers `key`.
pub fn add_identity(
    actor: &Actor<'_>,
    key: &VerifyingKey,
    name: &str,
    email: &str,
    roles: &[String],
) -> Result<Change> {
    Ok(Change::IdentityAdd {
        registered: identities::registration(
            key,
            name,
            email,
            roles,
            &repro_evidence::clock::now(),
            &actor.identity.keyid,
        )?,
    })
}

/// The change that revokes `keyid` (as the store has it) for `reason`.
pub fn revoke_identity(
    store: &Store,
    actor: &Actor<'_>,
    keyid: &str,
    reason: &str,
) -> Result<Change> {
    if reason.trim().is_empty() {
        return Err(Error::Invalid(
            "a revocation needs a reason\nhint: pass `--reason \"...\"`".into(),
        ));
    }
    let mut r = known(store, keyid)?;
    r.revoked = Some(Revocation {
        time: repro_evidence::clock::now(),
        reason: reason.to_string(),
        by: actor.identity.keyid.clone(),
    });
    Ok(Change::IdentityRevoke { registered: r })
}

/// The change that gives `keyid` exactly `roles`.
pub fn set_roles(store: &Store, keyid: &str, roles: &[String]) -> Result<Change> {
    let mut r = known(store, keyid)?;
    let mut roles: Vec<String> = roles.iter().map(|r| r.trim().to_string()).collect();
    roles.sort();
    roles.dedup();
    r.roles = roles;
    Ok(Change::IdentityRoles { registered: r })
}

/// The change that puts the policy in `bytes` in force (parsed first; the
/// bytes are kept as a blob).
pub fn set_policy(store: &Store, path: &Path, bytes: &[u8]) -> Result<Change> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::Invalid(format!("the policy `{}` is not UTF-8", path.display())))?;
    crate::policy::parse(path, text)?;
    store.put_bytes(bytes)?;
    Ok(Change::PolicySet {
        digest: format!("sha256:{}", Hash::of(bytes).hex()),
    })
}

fn known(store: &Store, keyid: &str) -> Result<Registered> {
    let keyid = if keyid.starts_with("sha256:") {
        keyid.to_string()
    } else {
        format!("sha256:{keyid}")
    };
    identities::get(store, &keyid)?.ok_or_else(|| {
        Error::Refused(format!(
            "key `{keyid}` is not a registered identity\nhint: `repro identity list` shows the registered keys"
        ))
    })
}
