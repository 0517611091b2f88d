//! Governance state from the signed, hash-chained audit log.
//!
//! Who may act (the administrators and the quorum they set), who holds
//! which role, which policy is in force and which version is in which stage
//! are not taken from the files in the store: they are replayed from the
//! audit log, entry by entry, counting only what was authorized when it was
//! written. The files (`v1/identities/*.json`, `v1/refs/stages/...`,
//! `v1/policy.toml`) are copies for reading; [`checked`] compares them with
//! the replay and names every difference, so a direct edit of a file (a
//! role added, a stage ref moved, the policy swapped) is tampering, found
//! by `repro fsck`, `repro audit verify` and every governance command.
//!
//! Authorization, as replayed:
//!
//! - `governance-init` (the first governance entry; exactly one): names
//!   the administrators (registered identities holding the role
//!   [`ADMIN_ROLE`]) and the quorum: how many different administrators
//!   must agree to a change of identities, roles or policy (1 or 2);
//! - `identity-add`, `identity-revoke`, `identity-roles` and `policy-set`
//!   count when signed by an administrator who is not revoked; with a
//!   quorum of 2 they must also name a `governance-propose` entry of the
//!   same action, signed by another administrator (another person, by
//!   e-mail);
//! - stage changes (`promote`, `emergency-promote`, `rollback`) move
//!   versions as their details say.

use std::collections::{BTreeMap, BTreeSet};

use repro_evidence::audit::{self, Entry};
use repro_store::{Hash, Ns, RecordDigest, Store};
use serde::{Deserialize, Serialize};

use crate::base::{list_dir, read_optional, Error, Result, Stage};
use crate::identities::Registered;
use repro_evidence::VersionRef;

/// The role of an administrator: may change identities, roles and the policy.
pub const ADMIN_ROLE: &str = "admin";

/// The kinds of audit entries that change governance state.
pub mod kinds {
    /// The governance root: administrators and quorum.
    pub const INIT: &str = "governance-init";
    /// A change proposed by one administrator, awaiting another's.
    pub const PROPOSE: &str = "governance-propose";
    /// An identity registered.
    pub const IDENTITY_ADD: &str = "identity-add";
    /// An identity revoked.
    pub const IDENTITY_REVOKE: &str = "identity-revoke";
    /// An identity's roles changed.
    pub const IDENTITY_ROLES: &str = "identity-roles";
    /// The policy in force changed.
    pub const POLICY_SET: &str = "policy-set";
    /// An action that was refused.
    pub const DENIED: &str = "denied";
}

/// A change of identities, roles or policy: what a `governance-propose`
/// entry proposes and the applying entry carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Change {
    /// Register an identity (the file it gets, exactly).
    IdentityAdd {
        /// The identity.
        registered: Registered,
    },
    /// Revoke an identity (the file it becomes, exactly).
    IdentityRevoke {
        /// The identity after the revocation.
        registered: Registered,
    },
    /// Change an identity's roles (the file it becomes, exactly).
    IdentityRoles {
        /// The identity with its new roles.
        registered: Registered,
    },
    /// Put a policy in force.
    PolicySet {
        /// `sha256:` of the policy file's bytes (kept as a blob).
        digest: String,
    },
}

impl Change {
    /// The audit entry kind that applies it.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::IdentityAdd { .. } => kinds::IDENTITY_ADD,
            Change::IdentityRevoke { .. } => kinds::IDENTITY_REVOKE,
            Change::IdentityRoles { .. } => kinds::IDENTITY_ROLES,
            Change::PolicySet { .. } => kinds::POLICY_SET,
        }
    }

    /// What it is about (the entry's subject).
    pub fn subject(&self) -> String {
        match self {
            Change::IdentityAdd { registered }
            | Change::IdentityRevoke { registered }
            | Change::IdentityRoles { registered } => registered.keyid.clone(),
            Change::PolicySet { digest } => digest.clone(),
        }
    }

    /// Its id: the SHA-256 of its compact JSON.
    pub fn id(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", Hash::of(&bytes).hex())
    }
}

/// The details of an applying entry: the change, and with a quorum of 2
/// the proposal it completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The change.
    pub change: Change,
    /// The id of the `governance-propose` entry's change, when one was needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

/// The governance root, as `governance-init` set it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Root {
    /// How many different administrators must agree to a change (1 or 2).
    pub quorum: u32,
    /// The first administrators (each also registered, holding [`ADMIN_ROLE`]).
    pub admins: Vec<Registered>,
}

/// A proposal awaiting a second administrator.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The change.
    pub change: Change,
    /// Its id.
    pub id: String,
    /// The key id of the administrator who proposed it.
    pub by: String,
    /// Their e-mail (the person).
    pub by_email: String,
    /// When.
    pub time: String,
}

/// Governance state, replayed from the audit log.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The root, once initialised.
    pub root: Option<Root>,
    /// Every identity by key id, as the last authorized entry left it.
    pub identities: BTreeMap<String, Registered>,
    /// The policy in force (`sha256:`) and its version (1, 2, ...).
    pub policy: Option<(String, u32)>,
    /// Every staged version: stage and record.
    pub stages: BTreeMap<(String, String), (Stage, RecordDigest)>,
    /// Proposals not yet applied, by id.
    pub pending: BTreeMap<String, Pending>,
    /// Entries that tried to change governance without authority (seq, why).
    pub unauthorized: Vec<(u64, String)>,
}

impl State {
    /// The quorum (1 before the root exists).
    pub fn quorum(&self) -> u32 {
        self.root.as_ref().map_or(1, |r| r.quorum)
    }

    /// The identity of `keyid` if it is an administrator now (registered,
    /// not revoked, holding [`ADMIN_ROLE`]).
    pub fn admin(&self, keyid: &str) -> Option<&Registered> {
        self.identities
            .get(keyid)
            .filter(|r| r.revoked.is_none() && r.has_role(ADMIN_ROLE))
    }

    /// Why `keyid` may not change governance, or `None` when it may.
    pub fn cannot_administer(&self, keyid: &str) -> Option<String> {
        if self.root.is_none() {
            return Some(
                "the store has no governance root\nhint: the administrators run `repro governance init <admins.toml>` once".into(),
            );
        }
        match self.identities.get(keyid) {
            None => Some(format!("key `{keyid}` is not a registered identity")),
            Some(r) if r.revoked.is_some() => {
                Some(format!("key `{keyid}` ({}) is revoked", r.name))
            }
            Some(r) if !r.has_role(ADMIN_ROLE) => Some(format!(
                "key `{keyid}` ({}) is not an administrator (role `{ADMIN_ROLE}`)",
                r.name
            )),
            Some(_) => None,
        }
    }

    fn apply(&mut self, e: &Entry) {
        match e.kind.as_str() {
            kinds::INIT => self.init(e),
            kinds::PROPOSE => self.propose(e),
            kinds::IDENTITY_ADD
            | kinds::IDENTITY_REVOKE
            | kinds::IDENTITY_ROLES
            | kinds::POLICY_SET => self.change(e),
            "promote" | "emergency-promote" | "rollback" => self.stage(e),
            _ => {}
        }
    }

    fn init(&mut self, e: &Entry) {
        if self.root.is_some() {
            self.unauthorized
                .push((e.seq, "a second governance root".into()));
            return;
        }
        let Ok(root) = serde_json::from_value::<Root>(e.details.clone()) else {
            self.unauthorized
                .push((e.seq, "a governance root that does not parse".into()));
            return;
        };
        if !root.admins.iter().any(|a| a.keyid == e.actor.keyid) {
            self.unauthorized.push((
                e.seq,
                "a governance root signed by a key that is not one of its administrators".into(),
            ));
            return;
        }
        for a in &root.admins {
            self.identities.insert(a.keyid.clone(), a.clone());
        }
        self.root = Some(root);
    }

    fn propose(&mut self, e: &Entry) {
        if let Some(why) = self.cannot_administer(&e.actor.keyid) {
            self.unauthorized.push((e.seq, why));
            return;
        }
        let Ok(change) = serde_json::from_value::<Change>(e.details.clone()) else {
            self.unauthorized
                .push((e.seq, "a proposal that does not parse".into()));
            return;
        };
        let id = change.id();
        let by_email = self
            .identities
            .get(&e.actor.keyid)
            .map(|r| r.email.to_lowercase())
            .unwrap_or_default();
        self.pending.insert(
            id.clone(),
            Pending {
                change,
                id,
                by: e.actor.keyid.clone(),
                by_email,
                time: e.time.clone(),
            },
        );
    }

    fn change(&mut self, e: &Entry) {
        if let Some(why) = self.cannot_administer(&e.actor.keyid) {
            self.unauthorized.push((e.seq, why));
            return;
        }
        let Ok(applied) = serde_json::from_value::<Applied>(e.details.clone()) else {
            self.unauthorized
                .push((e.seq, format!("a `{}` entry that does not parse", e.kind)));
            return;
        };
        if applied.change.kind() != e.kind {
            self.unauthorized.push((
                e.seq,
                format!(
                    "a `{}` entry carrying a `{}` change",
                    e.kind,
                    applied.change.kind()
                ),
            ));
            return;
        }
        if self.quorum() >= 2 {
            let email = self
                .identities
                .get(&e.actor.keyid)
                .map(|r| r.email.to_lowercase())
                .unwrap_or_default();
            let ok = applied
                .proposal
                .as_ref()
                .and_then(|id| self.pending.get(id))
                .filter(|p| p.change == applied.change && p.by_email != email)
                .is_some();
            if !ok {
                self.unauthorized.push((
                    e.seq,
                    format!(
                        "`{}` needs two administrators, and this one was not proposed by another",
                        e.kind
                    ),
                ));
                return;
            }
            if let Some(id) = &applied.proposal {
                self.pending.remove(id);
            }
        }
        match applied.change {
            Change::IdentityAdd { registered } => {
                if self.identities.contains_key(&registered.keyid) {
                    self.unauthorized
                        .push((e.seq, format!("`{}` registered twice", registered.keyid)));
                    return;
                }
                self.identities.insert(registered.keyid.clone(), registered);
            }
            Change::IdentityRevoke { registered } | Change::IdentityRoles { registered } => {
                if !self.identities.contains_key(&registered.keyid) {
                    self.unauthorized
                        .push((e.seq, format!("`{}` is not registered", registered.keyid)));
                    return;
                }
                self.identities.insert(registered.keyid.clone(), registered);
            }
            Change::PolicySet { digest } => {
                let version = self.policy.as_ref().map_or(1, |(_, v)| v + 1);
                self.policy = Some((digest, version));
            }
        }
    }

    fn stage(&mut self, e: &Entry) {
        let Ok(m) = VersionRef::parse(&e.subject) else {
            return;
        };
        let d = &e.details;
        let Some(record) = d["record"].as_str().and_then(|r| r.parse().ok()) else {
            return;
        };
        let Some(to) = d["to"]
            .as_str()
            .or((e.kind == "rollback").then_some("production"))
            .and_then(|t| t.parse::<Stage>().ok())
        else {
            return;
        };
        if let Some(displaced) = d["displaced"].as_str() {
            let key = (m.name.clone(), displaced.to_string());
            let went = d["displaced_to"]
                .as_str()
                .and_then(|s| s.parse::<Stage>().ok())
                .unwrap_or(Stage::Validated);
            if let Some((_, rec)) = self.stages.get(&key).cloned() {
                if went == Stage::Candidate {
                    self.stages.remove(&key);
                } else {
                    self.stages.insert(key, (went, rec));
                }
            }
        }
        let key = (m.name, m.version);
        if to == Stage::Candidate {
            self.stages.remove(&key);
        } else {
            self.stages.insert(key, (to, record));
        }
    }
}

/// Replay the audit log. The log's chain and signatures must be intact
/// (else the error is tampering, naming the first problem).
pub fn replay(store: &Store) -> Result<State> {
    replay_until(store, None)
}

/// Replay the audit log up to and including `at` (every entry when `None`):
/// governance state as it was then.
pub fn replay_until(store: &Store, at: Option<time::OffsetDateTime>) -> Result<State> {
    let verified = audit::verify(store)?;
    if !verified.intact {
        let first = verified
            .problems
            .first()
            .map(|p| p.message.clone())
            .unwrap_or_default();
        return Err(Error::Other(
            repro_evidence::exit::Tampered(format!(
                "the audit log is not intact, so governance state cannot be trusted: {first}\nhint: run `repro audit verify` for every problem"
            ))
            .into(),
        ));
    }
    let mut state = State::default();
    for (_, e) in audit::entries(store)? {
        if let Some(at) = at {
            match repro_evidence::clock::parse(&e.time) {
                Some(t) if t > at => break,
                _ => {}
            }
        }
        state.apply(&e);
    }
    Ok(state)
}

/// Every difference between the files and the replayed state, one line each.
pub fn differences(store: &Store, state: &State) -> Result<Vec<String>> {
    let mut out = Vec::new();
    // Identities: every file must be what the log says, and every
    // identity the log has must have its file.
    let dir = store.ns_dir(Ns::Identities);
    let mut seen = BTreeSet::new();
    for name in list_dir(&dir)? {
        let path = dir.join(&name);
        let Some(hex) = name.strip_suffix(".json") else {
            out.push(format!("`{}` is not an identity file", path.display()));
            continue;
        };
        let keyid = format!("sha256:{hex}");
        seen.insert(keyid.clone());
        let on_file: Option<Registered> =
            read_optional(&path)?.and_then(|b| serde_json::from_slice(&b).ok());
        match (on_file, state.identities.get(&keyid)) {
            (None, _) => out.push(format!(
                "the identity file `{}` does not parse",
                path.display()
            )),
            (Some(_), None) => out.push(format!(
                "the identity file `{}` registers a key the audit log never registered",
                path.display()
            )),
            (Some(f), Some(l)) if &f != l => out.push(format!(
                "the identity file `{}` differs from the audit log: {}",
                path.display(),
                describe(&f, l)
            )),
            _ => {}
        }
    }
    for (keyid, r) in &state.identities {
        if !seen.contains(keyid) {
            out.push(format!(
                "the audit log registers {} <{}> ({keyid}), whose identity file is missing",
                r.name, r.email
            ));
        }
    }
    // Stages.
    let root = store.ns_dir(Ns::Stages);
    let mut on_file = BTreeMap::new();
    for stage in list_dir(&root)? {
        for name in list_dir(&root.join(&stage))? {
            for version in list_dir(&root.join(&stage).join(&name))? {
                let path = root.join(&stage).join(&name).join(&version);
                let text = read_optional(&path)?.unwrap_or_default();
                let record = String::from_utf8_lossy(&text).trim().to_string();
                on_file.insert(
                    (name.clone(), version.clone()),
                    (stage.clone(), record, path),
                );
            }
        }
    }
    for (key, (stage, record, path)) in &on_file {
        match state.stages.get(key) {
            None => out.push(format!(
                "`{}` puts {}@{} in `{stage}`, and the audit log never moved it there",
                path.display(),
                key.0,
                key.1
            )),
            Some((s, r)) if s.as_str() != stage || r.to_string() != *record => {
                out.push(format!(
                    "`{}` puts {}@{} in `{stage}` (record {record}); the audit log says `{s}` (record {r})",
                    path.display(),
                    key.0,
                    key.1
                ))
            }
            _ => {}
        }
    }
    for (key, (s, r)) in &state.stages {
        if !on_file.contains_key(key) {
            out.push(format!(
                "the audit log puts {}@{} in `{s}` (record {r}), and its stage file is missing",
                key.0, key.1
            ));
        }
    }
    // The policy in force.
    let policy = store.ns_dir(Ns::Policy);
    let bytes = read_optional(&policy)?;
    match (&state.policy, bytes) {
        (None, None) => {}
        (None, Some(_)) => out.push(format!(
            "`{}` is no policy the administrators put in force (the audit log has no `policy-set`)",
            policy.display()
        )),
        (Some((d, v)), None) => out.push(format!(
            "the policy in force (version {v}, {d}) is missing from `{}`",
            policy.display()
        )),
        (Some((d, v)), Some(b)) => {
            let actual = format!("sha256:{}", Hash::of(&b).hex());
            if &actual != d {
                out.push(format!(
                    "`{}` ({actual}) is not the policy in force (version {v}, {d})",
                    policy.display()
                ));
            }
        }
    }
    for (seq, why) in &state.unauthorized {
        out.push(format!(
            "audit entry {seq} changes governance without authority: {why}"
        ));
    }
    Ok(out)
}

fn describe(file: &Registered, log: &Registered) -> String {
    let mut d = Vec::new();
    if file.roles != log.roles {
        d.push(format!(
            "roles [{}] on file, [{}] in the log",
            file.roles.join(", "),
            log.roles.join(", ")
        ));
    }
    if file.revoked != log.revoked {
        d.push(format!(
            "revoked {} on file, {} in the log",
            file.revoked.is_some(),
            log.revoked.is_some()
        ));
    }
    if file.name != log.name || file.email != log.email {
        d.push(format!(
            "{} <{}> on file, {} <{}> in the log",
            file.name, file.email, log.name, log.email
        ));
    }
    if d.is_empty() {
        d.push("other fields".into());
    }
    d.join("; ")
}

/// For readers (cards, the registry): [`checked`] once governance has a
/// root, so that nothing is shown from a file the log contradicts; in a
/// store that predates governance, the replay as it is.
pub fn checked_if_governed(store: &Store) -> Result<State> {
    let state = replay(store)?;
    if state.root.is_none() {
        return Ok(state);
    }
    checked(store)
}

/// The replayed state, once the files agree with it; otherwise tampering
/// (exit 3) naming every difference. Every governance command starts here.
pub fn checked(store: &Store) -> Result<State> {
    let state = replay(store)?;
    let diffs = differences(store, &state)?;
    if !diffs.is_empty() {
        return Err(Error::Other(
            repro_evidence::exit::Tampered(format!(
                "governance files in the store disagree with the signed audit log:\n  {}\nhint: the audit log is the record; restore the files from a backup, or ask the administrators",
                diffs.join("\n  ")
            ))
            .into(),
        ));
    }
    Ok(state)
}
