//! `repro fsck`: check the whole store and name everything that is wrong.
//!
//! 1. Read every ref and collect the roots, with who names each: the
//!    records of every version (`v1/refs/records/`, see
//!    `records_of_version`) and what each record names
//!    (the walk of `repro gc`, [`crate::gc::add_record_roots`]: recipe and
//!    lock, images, data and code trees, each step's output tree and log,
//!    the signing keys, the model card) plus its subjects (the output
//!    files); the attestations (`v1/refs/attestations/`) with their keys and
//!    the trees they name; the records that approvals, model cards and
//!    registry stages name (`v1/refs/approvals/`, `v1/refs/cards/`,
//!    `v1/refs/stages/`), when they are in the store; pinned versions and
//!    objects (`v1/refs/pins/`); every action cache entry (`v1/ac/`: its
//!    output tree and log); every registered image (`v1/refs/images/`).
//!    A ref that does not parse is a problem ([`Kind::Malformed`]).
//! 2. Check every signature with the keys kept in the store: records and
//!    attestations with the public keys stored as blobs, approvals with the
//!    registered identities' keys ([`Kind::BadSignature`]); that a version's
//!    ref names a record of that version, an attestation or approval is
//!    filed under the record it is about, and an identity holds the key it
//!    is named after ([`Kind::Mismatch`]).
//! 3. Walk from the roots with the store's mark phase
//!    ([`repro_store::Store::walk`]), re-hashing every object it reaches:
//!    each missing, corrupt or malformed one is named with what refers to
//!    it. Then re-hash every blob the walk did not reach (a corrupt one is
//!    named too).
//!
//! An approval, model card ref or stage ref whose record is not in the
//! store is a note, not a problem: `repro gc` removes a record that no
//! retained version needs but leaves those refs. So is a registered
//! identity whose public key blob is gone (`repro gc` does not keep it;
//! approvals are checked with the key the identity file holds).
//!
//! Not checked here: the audit log (`repro audit verify`), caches that
//! check themselves (stat caches, blob stamps, build memo, unpacked image
//! roots) and the registry history.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ed25519_dalek::VerifyingKey;
use repro_store::gc::Broken;
use repro_store::Ns;
use repro_store::{ActionResult, BlobDigest, Hash, ImageDigest, RecordDigest, Store};
use serde::Serialize;

use crate::approvals::{ApprovalStatement, APPROVAL_PREDICATE_TYPE};
use crate::gc::{self, LabelledRoots, Origin, RootSink};
use crate::identities;
use repro_evidence::attest::{AttestationStatement, VSA_PREDICATE_TYPE};
use repro_evidence::keys::{self, Envelope, EnvelopeError};
use repro_evidence::record::{Statement, STATEMENT_TYPE};

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Something names an object that is not in the store.
    Missing,
    /// A blob (or an approval file) whose bytes do not hash to its name.
    Corrupt,
    /// A record, attestation or approval whose signature does not check
    /// out with the keys kept in the store (or is by a key it does not hold).
    BadSignature,
    /// A ref, envelope or identity that parses but names the wrong thing.
    Mismatch,
    /// A ref or object that does not parse.
    Malformed,
    /// A file that cannot be read.
    Unreadable,
}

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: Kind,
    /// What the object is: `blob`, `tree`, `image`, `record`, `attestation`,
    /// `approval`, `identity`, `ref`, `action cache entry`.
    pub object: &'static str,
    /// The object's digest (`sha256:<hex>`), when it has one.
    pub digest: Option<String>,
    /// What refers to it (``file `model.pkl` of step `train` of fraud@1.0.0``).
    pub referenced_by: Option<String>,
    /// The file at fault, when there is one.
    pub path: Option<PathBuf>,
    /// The whole message.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The outcome of `repro fsck`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether nothing is wrong.
    pub ok: bool,
    /// How many objects (blobs) were re-hashed.
    pub objects: usize,
    /// How many bytes the intact ones hold.
    pub bytes: u64,
    /// Everything wrong, refs first, then what the walk found, then blobs
    /// nothing refers to.
    pub problems: Vec<Problem>,
    /// What is worth knowing but not wrong (refs whose record `repro gc` removed).
    pub notes: Vec<String>,
}

const HINT_MISSING: &str = "put the missing objects back: build the version again (`repro build` runs every step whose outputs are gone), or `repro pull` / `repro import` it from where it was pushed or exported";
const HINT_CORRUPT: &str = "delete each corrupt blob's file, then build again or `repro pull` / `repro import` to put a good copy back (a blob nothing refers to can just go)";
const HINT_SIGNATURE: &str = "what does not check out was changed after it was signed, or by someone without the key: remove it or restore a good copy (`repro pull`, `repro import`), and find out who changed it (`repro audit verify`)";
const HINT_REF: &str = "restore the file from a backup, or remove it";
const HINT_AC: &str = "`repro gc` removes action cache entries that cannot be read; the next build runs the step again";

/// Check the store. Changes nothing (but a corrupt blob, as whenever one
/// is found, makes every stat cache be ignored).
pub fn check(store: &Store) -> Result<Report> {
    let mut f = Fsck {
        store,
        roots: LabelledRoots::default(),
        problems: Vec::new(),
        notes: Vec::new(),
        checked: HashMap::new(),
        orphans: HashSet::new(),
    };
    // Every namespace of the store's layout, each checked by what it holds;
    // exhaustive, so a new namespace does not compile until fsck (and gc,
    // [`gc::namespace_roots`]) say what it is.
    for ns in Ns::ALL {
        match ns {
            Ns::Records => f.versions()?,
            // Walked with the versions: every record of every version.
            Ns::RecordHistory => {}
            Ns::Attestations => f.attestations()?,
            Ns::Approvals => f.approvals()?,
            Ns::Cards => f.cards()?,
            Ns::Stages => f.stages()?,
            Ns::PinnedVersions => f.pins()?,
            // Checked with the pinned versions.
            Ns::PinnedObjects => {}
            Ns::ActionCache => f.action_cache(),
            Ns::Images => f.images(),
            Ns::Identities => {
                f.identities();
                f.governance_chain();
            }
            Ns::Audit => f.governance_keys(Ns::Audit, gc::audit_roots),
            Ns::Registry => f.governance_keys(Ns::Registry, gc::registry_roots),
            // Read and checked by the commands that use them.
            Ns::Policy | Ns::Retention => {}
            // Caches and scratch: checked on use and rebuilt when wrong.
            Ns::Memo | Ns::StatCache | Ns::StatGeneration | Ns::Intact | Ns::Rootfs | Ns::Tmp => {}
        }
    }
    f.strays();
    // Records the pins reached: their signatures too.
    let unchecked: Vec<RecordDigest> = f
        .roots
        .roots
        .records
        .iter()
        .filter(|r| !f.checked.contains_key(r))
        .copied()
        .collect();
    for r in unchecked {
        f.check_record(r, None);
    }

    let mut walk = store.walk(&f.roots.roots)?;
    let mut objects = walk.objects;
    let mut bytes = walk.bytes;
    for b in std::mem::take(&mut walk.broken) {
        f.broken(b);
    }
    for d in store.list_blobs()? {
        if walk.reaches(&d.hash()) {
            continue;
        }
        match store.verify_blob(&d) {
            Ok(n) => {
                objects += 1;
                bytes += n;
            }
            // Removed since it was listed.
            Err(repro_store::Error::Missing { .. }) => {}
            Err(e) => {
                if matches!(e, repro_store::Error::Corrupt { .. }) {
                    objects += 1;
                }
                f.store_error("blob", d.hash(), None, e);
            }
        }
    }
    Ok(Report {
        ok: f.problems.is_empty(),
        objects,
        bytes,
        problems: f.problems,
        notes: f.notes,
    })
}

/// Every record of `name@version` that fsck walks from: the one its ref
/// names and every earlier one its history keeps ([`Store::records_of`]).
fn records_of_version(
    store: &Store,
    name: &str,
    version: &str,
) -> repro_store::Result<Vec<RecordDigest>> {
    store.records_of(name, version)
}

struct Fsck<'a> {
    store: &'a Store,
    roots: LabelledRoots,
    problems: Vec<Problem>,
    notes: Vec<String>,
    /// Records already checked: the `name@version` their statement names
    /// (`None` when it cannot be read or does not parse).
    checked: HashMap<RecordDigest, Option<String>>,
    /// Records not in the store that a note already mentions.
    orphans: HashSet<RecordDigest>,
}

impl Fsck<'_> {
    fn dir(&self, ns: Ns) -> PathBuf {
        self.store.ns_dir(ns)
    }

    fn problem(&mut self, p: Problem) {
        self.problems.push(p);
    }

    /// A ref or file that does not parse.
    fn malformed(&mut self, object: &'static str, path: &Path, why: String, hint: &str) {
        self.problem(Problem {
            kind: Kind::Malformed,
            object,
            digest: None,
            referenced_by: None,
            path: Some(path.to_path_buf()),
            message: why,
            hint: Some(hint.to_string()),
        });
    }

    /// The sorted, non-hidden names in `dir` (none when it is missing); a
    /// folder that cannot be listed, or a name that is not UTF-8, is a problem.
    fn list(&mut self, dir: &Path) -> Vec<String> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.unreadable(dir, &e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    self.unreadable(dir, &e);
                    break;
                }
            };
            match entry.file_name().into_string() {
                Ok(n) if n.starts_with('.') => {}
                Ok(n) => out.push(n),
                Err(n) => self.malformed(
                    "ref",
                    &entry.path(),
                    format!(
                        "`{}` is not a name the store writes (not UTF-8: {n:?})",
                        entry.path().display()
                    ),
                    HINT_REF,
                ),
            }
        }
        out.sort();
        out
    }

    fn unreadable(&mut self, path: &Path, e: &io::Error) {
        self.problem(Problem {
            kind: Kind::Unreadable,
            object: "ref",
            digest: None,
            referenced_by: None,
            path: Some(path.to_path_buf()),
            message: format!("cannot read `{}`: {e}", path.display()),
            hint: Some("check the store's permissions and the disk".to_string()),
        });
    }

    /// A ref file's text; `None` (and a problem) when it cannot be read.
    fn read_ref(&mut self, path: &Path) -> Option<String> {
        match std::fs::read(path) {
            Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) => {
                self.unreadable(path, &e);
                None
            }
        }
    }

    /// A ref file holding a digest `sha256:<hex>`; `None` (and a problem) when it does not.
    fn read_digest_ref<T: std::str::FromStr<Err = repro_store::ParseDigestError>>(
        &mut self,
        what: &str,
        path: &Path,
    ) -> Option<T> {
        let text = self.read_ref(path)?;
        match text.trim().parse::<T>() {
            Ok(d) => Some(d),
            Err(e) => {
                self.malformed(
                    "ref",
                    path,
                    format!("{what} `{}` does not hold a digest: {e}", path.display()),
                    HINT_REF,
                );
                None
            }
        }
    }

    fn model_of(&self, record: &RecordDigest) -> String {
        match self.checked.get(record) {
            Some(Some(model)) => model.clone(),
            _ => format!("record {record}"),
        }
    }

    // ---- records -----------------------------------------------------------

    /// The record refs of every version.
    fn versions(&mut self) -> Result<()> {
        let root = self.dir(Ns::Records);
        for name in self.list(&root) {
            let versions = match self.store.record_versions(&name) {
                Ok(v) => v,
                Err(e) => {
                    let path = root.join(&name);
                    self.malformed(
                        "ref",
                        &path,
                        format!("`{}` is not a folder of record refs: {e}", path.display()),
                        HINT_REF,
                    );
                    continue;
                }
            };
            for version in versions {
                let path = root.join(&name).join(&version);
                let model = format!("{name}@{version}");
                match records_of_version(self.store, &name, &version) {
                    Ok(records) => {
                        for r in records {
                            self.record_root(r, Some(&model), Some((&model, &path)))?;
                            self.check_history_inputs(&name, &version, &r);
                        }
                    }
                    Err(e) => self.malformed(
                        "ref",
                        &path,
                        format!(
                            "the record ref `{}` of {model} cannot be read: {}",
                            path.display(),
                            first_line(&e)
                        ),
                        HINT_REF,
                    ),
                }
            }
        }
        Ok(())
    }

    /// The inputs digest that the history of `name@version` keeps for
    /// record `r` (what a build compares its inputs with) must be the
    /// record's own: an edited one would let a version be rebuilt from
    /// other inputs.
    fn check_history_inputs(&mut self, name: &str, version: &str, r: &RecordDigest) {
        let Some(kept) = self.store.history_inputs(name, version, r) else {
            return;
        };
        let Ok(bytes) = self.store.get_record(r) else {
            return; // the walk names a missing or corrupt record
        };
        let Ok(actual) = repro_evidence::record::inputs_of(&bytes) else {
            return; // check_record names a record that does not parse
        };
        if actual != kept {
            let path = self
                .dir(Ns::RecordHistory)
                .join(name)
                .join(version)
                .join(r.hex());
            self.problem(Problem {
                kind: Kind::Mismatch,
                object: "record history entry",
                digest: Some(r.to_string()),
                referenced_by: Some(format!("record of {name}@{version}")),
                path: Some(path),
                message: format!(
                    "the history of {name}@{version} says record {r} was built from inputs {kept}, but the record says {actual}"
                ),
                hint: Some(HINT_REF.to_string()),
            });
        }
    }

    /// Make record `d` a root with everything it names (once), and check
    /// its signature. `model` labels it (default: what its statement
    /// says); `expect` is the `name@version` that the ref at the given
    /// path says it is.
    fn record_root(
        &mut self,
        d: RecordDigest,
        model: Option<&str>,
        expect: Option<(&str, &Path)>,
    ) -> Result<()> {
        if !self.checked.contains_key(&d) {
            let statement = self.check_record(d, model);
            // What the record names is labelled with the model its statement
            // names; the record itself with the ref's when there is one.
            let label = self.model_of(&d);
            let what = model.unwrap_or(&label);
            self.roots.record(d, || Origin::of("record", what));
            let mut ignored = Vec::new();
            match gc::add_record_roots(
                self.store,
                &d,
                statement.as_ref(),
                &mut self.roots,
                &mut ignored,
            ) {
                Ok(()) => {}
                // An attestation ref whose name is not a digest: the
                // attestation scan names it and adds the others.
                Err(e)
                    if matches!(
                        e.downcast_ref::<repro_store::Error>(),
                        Some(repro_store::Error::Malformed { .. })
                    ) => {}
                Err(e) => return Err(e),
            }
            // The output files, as the record's subjects name them.
            for s in statement.iter().flat_map(|s| &s.subject) {
                let (Some((step, path)), Some(digest)) = (
                    s.name.split_once('/'),
                    s.sha256_text().and_then(|t| t.parse::<BlobDigest>().ok()),
                ) else {
                    continue;
                };
                self.roots.blob(digest, || {
                    Origin::plain(format!("file `{path}` of step `{step}` of {label}"))
                });
            }
        }
        if let (Some((want, path)), Some(Some(got))) = (expect, self.checked.get(&d)) {
            if got != want {
                let got = got.clone();
                self.problem(Problem {
                    kind: Kind::Mismatch,
                    object: "record",
                    digest: Some(d.to_string()),
                    referenced_by: Some(format!("ref of {want}")),
                    path: Some(path.to_path_buf()),
                    message: format!(
                        "the ref `{}` of {want} names record {d}, which is a record of {got}",
                        path.display()
                    ),
                    hint: Some(format!("point the ref at a record of {want}, or remove it")),
                });
            }
        }
        Ok(())
    }

    /// Check record `d`'s envelope and statement (once); returns the
    /// statement when it parses (whether or not the signature checks out:
    /// what it names is walked either way, as `repro gc` keeps it).
    fn check_record(&mut self, d: RecordDigest, model: Option<&str>) -> Option<Statement> {
        let Ok(bytes) = self.store.get_record(&d) else {
            // Missing or corrupt: the walk names it.
            self.checked.insert(d, None);
            return None;
        };
        let statement = gc::payload::<Statement>(&bytes).ok();
        let named = statement.as_ref().map(|s| {
            let ext = &s.predicate.build_definition.external_parameters;
            format!("{}@{}", ext.name, ext.version)
        });
        self.checked.insert(d, named.clone());
        let label = model
            .map(str::to_string)
            .or(named)
            .unwrap_or_else(|| format!("record {d}"));
        let by = format!("record of {label}");
        let store = self.store;
        let opened = self.check_envelope("record", d.to_string(), &by, None, &bytes, |id| {
            keys::lookup_in_store(store, id)
        });
        if opened.is_some() {
            let why = match &statement {
                None => Some("its payload is not a build statement".to_string()),
                Some(s) => s.check_types().err(),
            };
            if let Some(why) = why {
                self.problem(Problem {
                    kind: Kind::Malformed,
                    object: "record",
                    digest: Some(d.to_string()),
                    referenced_by: Some(by.clone()),
                    path: None,
                    message: format!("record {d} ({by}) is not a build record: {why}"),
                    hint: Some(HINT_SIGNATURE.to_string()),
                });
            }
        }
        statement
    }

    /// Check a DSSE envelope's signature with `lookup`; returns the payload
    /// when it checks out, else notes the problem.
    fn check_envelope(
        &mut self,
        object: &'static str,
        digest: String,
        by: &str,
        path: Option<&Path>,
        bytes: &[u8],
        lookup: impl Fn(&str) -> Option<VerifyingKey>,
    ) -> Option<Vec<u8>> {
        let (kind, why) = match serde_json::from_slice::<Envelope>(bytes) {
            Err(e) => (
                Kind::Malformed,
                format!("is not a signed envelope (DSSE): {e}"),
            ),
            Ok(env) => match keys::open(&env, lookup) {
                Ok((payload, _)) => return Some(payload),
                Err(EnvelopeError::Malformed(m)) => {
                    (Kind::Malformed, format!("is not a signed envelope: {m}"))
                }
                Err(EnvelopeError::UnknownKey(k)) => (
                    Kind::BadSignature,
                    format!("does not check out: it is signed by key `{k}`, which the store does not hold"),
                ),
                Err(EnvelopeError::BadSignature(k)) => (
                    Kind::BadSignature,
                    format!("does not check out: its signature by key `{k}` does not match its content: it was altered after it was signed"),
                ),
            },
        };
        let at = path
            .map(|p| format!(", `{}`", p.display()))
            .unwrap_or_default();
        self.problem(Problem {
            kind,
            object,
            digest: Some(digest.clone()),
            referenced_by: Some(by.to_string()),
            path: path.map(Path::to_path_buf),
            message: format!("{object} {digest} ({by}{at}) {why}"),
            hint: Some(HINT_SIGNATURE.to_string()),
        });
        None
    }

    /// A record that governance refs name: walked when it is in the store,
    /// else a note (`repro gc` removes it when no retained version needs it).
    fn governed_record(&mut self, d: RecordDigest, what: &str) -> Result<bool> {
        if self.store.has_blob(&BlobDigest::from_hash(d.hash())) {
            self.record_root(d, None, None)?;
            return Ok(true);
        }
        if self.orphans.insert(d) {
            self.notes.push(format!(
                "{what} record {d}, which is not in the store (`repro gc` removes a record no retained version needs, not the refs about it)"
            ));
        }
        Ok(false)
    }

    // ---- attestations, approvals, cards, stages ----------------------------

    /// The folders of `root` named after a record digest (attestations,
    /// approvals), each with that record; any other name is malformed.
    fn record_folders(&mut self, root: &Path) -> Vec<(PathBuf, RecordDigest)> {
        let mut out = Vec::new();
        for name in self.list(root) {
            let dir = root.join(&name);
            match Hash::from_hex(&name) {
                Ok(h) => out.push((dir, RecordDigest::from_hash(h))),
                Err(_) => self.malformed(
                    "ref",
                    &dir,
                    format!("`{}` is not named after a record digest", dir.display()),
                    HINT_REF,
                ),
            }
        }
        out
    }

    fn attestations(&mut self) -> Result<()> {
        let root = self.dir(Ns::Attestations);
        for (dir, record) in self.record_folders(&root) {
            if self.store.has_blob(&BlobDigest::from_hash(record.hash())) {
                self.record_root(record, None, None)?;
            } else {
                // `repro gc` removes attestations with their record: this is damage.
                self.problem(Problem {
                    kind: Kind::Missing,
                    object: "record",
                    digest: Some(record.to_string()),
                    referenced_by: Some(format!("attestations `{}`", dir.display())),
                    path: Some(dir.clone()),
                    message: format!(
                        "record {record} (the record attested in `{}`) is missing",
                        dir.display()
                    ),
                    hint: Some(HINT_MISSING.to_string()),
                });
            }
            let model = self.model_of(&record);
            for att_name in self.list(&dir) {
                let path = dir.join(&att_name);
                let Ok(a) = Hash::from_hex(&att_name) else {
                    self.malformed(
                        "ref",
                        &path,
                        format!(
                            "`{}` is not named after an attestation digest",
                            path.display()
                        ),
                        HINT_REF,
                    );
                    continue;
                };
                let att = BlobDigest::from_hash(a);
                let mut ignored = Vec::new();
                gc::add_attestation_roots(
                    self.store,
                    &record,
                    &att,
                    &model,
                    &mut self.roots,
                    &mut ignored,
                );
                // Missing or corrupt: the walk names it.
                let Ok(bytes) = self.store.read_blob(&att) else {
                    continue;
                };
                let by = format!("attestation of {model}");
                let store = self.store;
                let Some(payload) = self.check_envelope(
                    "attestation",
                    att.to_string(),
                    &by,
                    Some(&path),
                    &bytes,
                    |id| keys::lookup_in_store(store, id),
                ) else {
                    continue;
                };
                let about = match serde_json::from_slice::<AttestationStatement>(&payload) {
                    Ok(s)
                        if s.type_ == STATEMENT_TYPE && s.predicate_type == VSA_PREDICATE_TYPE =>
                    {
                        if let Err(e) = s.details() {
                            self.envelope_malformed(
                                "attestation",
                                att.to_string(),
                                &by,
                                &path,
                                format!("its statement does not parse: {e}"),
                            );
                            continue;
                        }
                        s.record()
                    }
                    Ok(s) => {
                        self.envelope_malformed(
                            "attestation",
                            att.to_string(),
                            &by,
                            &path,
                            format!(
                                "it is not a verification attestation (predicate `{}`)",
                                s.predicate_type
                            ),
                        );
                        continue;
                    }
                    Err(e) => {
                        self.envelope_malformed(
                            "attestation",
                            att.to_string(),
                            &by,
                            &path,
                            format!("its statement does not parse: {e}"),
                        );
                        continue;
                    }
                };
                if about != Some(record) {
                    self.filed_wrongly("attestation", att.to_string(), &by, &path, &record, about);
                }
            }
        }
        Ok(())
    }

    fn envelope_malformed(
        &mut self,
        object: &'static str,
        digest: String,
        by: &str,
        path: &Path,
        why: String,
    ) {
        self.problem(Problem {
            kind: Kind::Malformed,
            object,
            message: format!(
                "{object} {digest} ({by}, `{}`) is malformed: {why}",
                path.display()
            ),
            digest: Some(digest),
            referenced_by: Some(by.to_string()),
            path: Some(path.to_path_buf()),
            hint: Some(HINT_REF.to_string()),
        });
    }

    fn filed_wrongly(
        &mut self,
        object: &'static str,
        digest: String,
        by: &str,
        path: &Path,
        under: &RecordDigest,
        about: Option<RecordDigest>,
    ) {
        let about = about.map_or("no record".to_string(), |r| format!("record {r}"));
        self.problem(Problem {
            kind: Kind::Mismatch,
            object,
            message: format!(
                "{object} {digest} ({by}) is filed under record {under} (`{}`) but is about {about}",
                path.display()
            ),
            digest: Some(digest),
            referenced_by: Some(by.to_string()),
            path: Some(path.to_path_buf()),
            hint: Some("move it under the record it is about, or remove it".to_string()),
        });
    }

    fn approvals(&mut self) -> Result<()> {
        let root = self.dir(Ns::Approvals);
        for (dir, record) in self.record_folders(&root) {
            self.governed_record(
                record,
                &format!("the approvals in `{}` are about", dir.display()),
            )?;
            let model = self.model_of(&record);
            for file in self.list(&dir) {
                let path = dir.join(&file);
                let Some(bytes) = self.read_file(&path) else {
                    continue;
                };
                let actual = Hash::of(&bytes);
                let digest = Hash::from_hex(&file).map_or(file.clone(), |h| h.to_string());
                let by = format!("approval of {model}");
                if actual.hex() != file {
                    self.problem(Problem {
                        kind: Kind::Corrupt,
                        object: "approval",
                        digest: Some(digest.clone()),
                        referenced_by: Some(by.clone()),
                        path: Some(path.clone()),
                        message: format!(
                            "approval {digest} ({by}) is corrupt: the bytes of `{}` hash to {actual}",
                            path.display()
                        ),
                        hint: Some("an approval file was changed after it was written: remove it, and ask the approver to approve again".to_string()),
                    });
                    continue;
                }
                let store = self.store;
                let Some(payload) = self.check_envelope(
                    "approval",
                    digest.clone(),
                    &by,
                    Some(&path),
                    &bytes,
                    |id| {
                        identities::get(store, id)
                            .ok()
                            .flatten()
                            .and_then(|reg| keys::parse_public(&reg.public_key).ok())
                            .or_else(|| keys::lookup_in_store(store, id))
                    },
                ) else {
                    continue;
                };
                let about = match serde_json::from_slice::<ApprovalStatement>(&payload) {
                    Ok(s)
                        if s.type_ == STATEMENT_TYPE
                            && s.predicate_type == APPROVAL_PREDICATE_TYPE =>
                    {
                        s.subject
                            .first()
                            .and_then(|s| s.sha256_text())
                            .and_then(|t| t.parse::<RecordDigest>().ok())
                    }
                    Ok(s) => {
                        self.envelope_malformed(
                            "approval",
                            digest,
                            &by,
                            &path,
                            format!("it is not an approval (predicate `{}`)", s.predicate_type),
                        );
                        continue;
                    }
                    Err(e) => {
                        self.envelope_malformed(
                            "approval",
                            digest,
                            &by,
                            &path,
                            format!("its statement does not parse: {e}"),
                        );
                        continue;
                    }
                };
                if about != Some(record) {
                    self.filed_wrongly("approval", digest, &by, &path, &record, about);
                }
            }
        }
        Ok(())
    }

    fn read_file(&mut self, path: &Path) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                self.unreadable(path, &e);
                None
            }
        }
    }

    fn cards(&mut self) -> Result<()> {
        let root = self.dir(Ns::Cards);
        for name in self.list(&root) {
            let path = root.join(&name);
            let Ok(h) = Hash::from_hex(&name) else {
                self.malformed(
                    "ref",
                    &path,
                    format!(
                        "the model card ref `{}` is not named after a record digest",
                        path.display()
                    ),
                    HINT_REF,
                );
                continue;
            };
            if self
                .read_digest_ref::<BlobDigest>("the model card ref", &path)
                .is_none()
            {
                continue;
            }
            // The card blob itself is a root of its record (`add_record_roots`).
            let what = format!("the model card ref `{}` is about", path.display());
            self.governed_record(RecordDigest::from_hash(h), &what)?;
        }
        Ok(())
    }

    fn stages(&mut self) -> Result<()> {
        let root = self.dir(Ns::Stages);
        for stage in self.list(&root) {
            let stage_dir = root.join(&stage);
            for name in self.list(&stage_dir) {
                for version in self.list(&stage_dir.join(&name)) {
                    let path = stage_dir.join(&name).join(&version);
                    let Some(d) = self.read_digest_ref::<RecordDigest>("the stage ref", &path)
                    else {
                        continue;
                    };
                    let model = format!("{name}@{version}");
                    let what = format!("stage `{stage}` of {model} (`{}`) names", path.display());
                    if self.governed_record(d, &what)? {
                        self.record_root(d, None, Some((&model, &path)))?;
                    }
                }
            }
        }
        Ok(())
    }

    // ---- pins, action cache, images, identities ----------------------------

    fn pins(&mut self) -> Result<()> {
        let root = self.dir(Ns::PinnedVersions);
        for name in self.list(&root) {
            for version in self.list(&root.join(&name)) {
                let path = root.join(&name).join(&version);
                let pinned = self.read_digest_ref::<RecordDigest>("the pin", &path);
                // A ref that does not parse is named by `versions`.
                let gone = match records_of_version(self.store, &name, &version) {
                    Ok(r) => r.is_empty(),
                    Err(e) => matches!(e, repro_store::Error::UnknownVersion { .. }),
                };
                if gone {
                    self.problem(Problem {
                        kind: Kind::Missing,
                        object: "record",
                        digest: pinned.map(|d| d.to_string()),
                        referenced_by: Some(format!("pin of {name}@{version}")),
                        path: Some(path.clone()),
                        message: format!(
                            "{name}@{version} is pinned (`{}`) but has no record",
                            path.display()
                        ),
                        hint: Some(format!("bring the version back (`repro pull`, `repro import`), or `repro unpin {name}@{version}`")),
                    });
                }
            }
        }
        let objects = self.dir(Ns::PinnedObjects);
        for name in self.list(&objects) {
            if Hash::from_hex(&name).is_err() {
                let path = objects.join(&name);
                self.malformed(
                    "ref",
                    &path,
                    format!("the pin `{}` is not named after a digest", path.display()),
                    "remove it; `repro pin sha256:<hex>` pins an object",
                );
            }
        }
        let mut ignored = Vec::new();
        if let Err(e) = gc::add_pinned_objects(self.store, &mut self.roots, &mut ignored) {
            self.problem(Problem {
                kind: Kind::Unreadable,
                object: "ref",
                digest: None,
                referenced_by: None,
                path: Some(objects),
                message: format!("cannot follow every pinned object: {}", first_line(&*e)),
                hint: None,
            });
        }
        Ok(())
    }

    fn action_cache(&mut self) {
        let root = self.dir(Ns::ActionCache);
        for name in self.list(&root) {
            let path = root.join(&name);
            let Ok(key) = Hash::from_hex(&name) else {
                self.malformed(
                    "action cache entry",
                    &path,
                    format!(
                        "the action cache entry `{}` is not named after a step key",
                        path.display()
                    ),
                    HINT_AC,
                );
                continue;
            };
            let Some(bytes) = self.read_file(&path) else {
                continue;
            };
            let r = match serde_json::from_slice::<ActionResult>(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    self.malformed(
                        "action cache entry",
                        &path,
                        format!(
                            "the action cache entry `{}` does not parse: {e}",
                            path.display()
                        ),
                        HINT_AC,
                    );
                    continue;
                }
            };
            let owner = || format!("action cache entry {key}");
            self.roots.tree(r.output, || Origin::of("output", owner()));
            self.roots.blob(r.log, || Origin::of("log", owner()));
        }
    }

    fn images(&mut self) {
        let root = self.dir(Ns::Images);
        for name in self.list(&root) {
            match Hash::from_hex(&name) {
                Ok(h) => self.roots.image(ImageDigest::from_hash(h), || Origin {
                    what: "registered image".to_string(),
                    holder: format!("image {h}"),
                }),
                Err(_) => {
                    let path = root.join(&name);
                    self.malformed(
                        "ref",
                        &path,
                        format!(
                            "the image ref `{}` is not named after a manifest digest",
                            path.display()
                        ),
                        HINT_REF,
                    );
                }
            }
        }
    }

    fn identities(&mut self) {
        let root = self.dir(Ns::Identities);
        for name in self.list(&root) {
            let path = root.join(&name);
            let hex = name
                .strip_suffix(".json")
                .filter(|h| Hash::from_hex(h).is_ok());
            let Some(hex) = hex else {
                self.malformed(
                    "identity",
                    &path,
                    format!(
                        "`{}` is not an identity file (`<key id hex>.json`)",
                        path.display()
                    ),
                    HINT_REF,
                );
                continue;
            };
            let reg = match identities::get(self.store, hex) {
                Ok(Some(reg)) => reg,
                Ok(None) => continue,
                Err(e) => {
                    self.malformed("identity", &path, e.to_string(), HINT_REF);
                    continue;
                }
            };
            let named = format!("sha256:{hex}");
            let held = keys::parse_public(&reg.public_key).map(|k| keys::key_id(&k).to_string());
            let why = match held {
                _ if reg.keyid != named => Some(format!("it says it is key `{}`", reg.keyid)),
                Err(e) => Some(format!("its public key does not parse: {e}")),
                Ok(id) if id != named => Some(format!("it holds the public key of `{id}`")),
                Ok(_) => None,
            };
            if let Some(why) = why {
                self.problem(Problem {
                    kind: Kind::Mismatch,
                    object: "identity",
                    digest: Some(named.clone()),
                    referenced_by: None,
                    path: Some(path.clone()),
                    message: format!(
                        "the identity `{}` of key `{named}` ({}) does not match its key: {why}",
                        path.display(),
                        reg.name
                    ),
                    hint: Some("an identity was edited: restore it from a backup, or revoke the key and register it anew".to_string()),
                });
                continue;
            }
            // Approvals are checked with the key the identity holds; the
            // audit log's entries with the key blob, which `repro gc` does
            // not keep for an identity.
            let blob = Hash::from_hex(hex).map(BlobDigest::from_hash);
            if blob.is_ok_and(|b| !self.store.has_blob(&b)) {
                self.notes.push(format!(
                    "the public key `{named}` of identity {} <{}> is not in the store as a blob (`repro gc` does not keep it): approvals are checked with the key the identity holds, but `repro audit verify` cannot check the entries it signed",
                    reg.name, reg.email
                ));
            }
        }
    }

    // ---- what the walk found -----------------------------------------------

    /// The keys (and policies) that the audit log or the registry name are
    /// roots: one that is missing is named. A log or history that cannot be
    /// read is a problem of its own.
    fn governance_keys(&mut self, ns: Ns, roots: fn(&Store, &mut LabelledRoots) -> Result<()>) {
        if let Err(e) = roots(self.store, &mut self.roots) {
            self.malformed(
                "governance file",
                &self.dir(ns),
                format!("{e:#}"),
                "restore it from a backup or an export; `repro audit verify` names the broken entry",
            );
        }
    }

    /// Identities, roles, stages and the policy in force must be what the
    /// signed audit log says ([`crate::chain`]). Once governance has a root
    /// every difference is a problem; in a store that predates it they are
    /// notes (nothing governs them: every governance command refuses them).
    fn governance_chain(&mut self) {
        let state = match crate::chain::replay(self.store) {
            Ok(s) => s,
            // The log itself is `repro audit verify`'s to judge (checkpoints,
            // an emptied log); here it only means governance state is unknown.
            Err(e) => {
                self.notes.push(format!(
                    "governance files were not compared with the audit log: {}; run `repro audit verify`",
                    first_line(&e)
                ));
                return;
            }
        };
        let diffs = match crate::chain::differences(self.store, &state) {
            Ok(d) => d,
            Err(e) => {
                self.notes.push(format!(
                    "cannot compare governance files with the audit log: {e:#}"
                ));
                return;
            }
        };
        for d in diffs {
            if state.root.is_none() {
                self.notes
                    .push(format!("{d} (the store has no governance root)"));
                continue;
            }
            self.problem(Problem {
                kind: Kind::Mismatch,
                object: "governance file",
                digest: None,
                referenced_by: None,
                path: None,
                message: d,
                hint: Some(
                    "the signed audit log is the record: restore the file from a backup, or have the administrators redo the change".into(),
                ),
            });
        }
    }

    /// Entries of `v1/` that no namespace of the layout accounts for.
    fn strays(&mut self) {
        match self.store.stray_entries() {
            Ok(found) => {
                for p in found {
                    self.notes.push(format!(
                        "`{}` is not part of the store's layout (left by another tool or an older version?)",
                        p.display()
                    ));
                }
            }
            Err(e) => self
                .notes
                .push(format!("cannot list the store's layout: {e}")),
        }
    }

    fn broken(&mut self, b: Broken) {
        let by = self.roots.origin(&b.root).map(|o| o.describe(&b.via));
        self.store_error(b.kind, b.digest, by, b.error);
    }

    fn store_error(
        &mut self,
        object: &'static str,
        digest: Hash,
        by: Option<String>,
        error: repro_store::Error,
    ) {
        use repro_store::Error as E;
        let named = by.as_ref().map(|b| format!(" ({b})")).unwrap_or_default();
        let (kind, message, path, hint) =
            match &error {
                E::Missing { .. } => (
                    Kind::Missing,
                    format!("{object} {digest}{named} is missing"),
                    None,
                    HINT_MISSING,
                ),
                E::Corrupt { actual, path, .. } => {
                    (
                        Kind::Corrupt,
                        format!(
                    "{object} {digest}{named} is corrupt: its bytes hash to {actual} (`{}`){}",
                    path.display(),
                    if by.is_none() { "; nothing refers to it" } else { "" }
                ),
                        Some(path.clone()),
                        HINT_CORRUPT,
                    )
                }
                E::Malformed { why, .. } => (
                    Kind::Malformed,
                    format!("{object} {digest}{named} is malformed: {why}"),
                    None,
                    HINT_CORRUPT,
                ),
                e => (
                    Kind::Unreadable,
                    format!("{object} {digest}{named} cannot be read: {}", first_line(e)),
                    None,
                    "check the store's permissions and the disk",
                ),
            };
        self.problem(Problem {
            kind,
            object,
            digest: Some(digest.to_string()),
            referenced_by: by,
            path,
            message,
            hint: Some(hint.to_string()),
        });
    }
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The report as text for stderr: one `error:` line per problem, the
/// notes, the summary, and each distinct hint once.
pub fn render(r: &Report, quiet: bool) -> String {
    let mut out = String::new();
    for p in &r.problems {
        let _ = writeln!(out, "error: {}", p.message);
    }
    if !quiet {
        for n in &r.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    if r.ok {
        if !quiet {
            let _ = writeln!(
                out,
                "checked {} objects ({} bytes): all intact",
                r.objects, r.bytes
            );
        }
        return out;
    }
    let n = r.problems.len();
    let _ = writeln!(
        out,
        "checked {} objects ({} bytes): {n} problem{} found",
        r.objects,
        r.bytes,
        if n == 1 { "" } else { "s" }
    );
    let mut seen = HashSet::new();
    for h in r.problems.iter().filter_map(|p| p.hint.as_deref()) {
        if seen.insert(h) {
            let _ = writeln!(out, "hint: {h}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use ed25519_dalek::SigningKey;
    use repro_store::{Ingest, StepKey, TreeDigest};

    use super::*;
    use crate::approvals;
    use repro_evidence::attest::{sign_verification, Identity, StepSummary, Verified};
    use repro_evidence::platform::Platform;
    use repro_evidence::record::{
        BuildDefinition, Builder, ExternalParameters, InternalParameters, Metadata, Provenance,
        ResourceDescriptor, RunDetails, BUILDER_ID, BUILD_TYPE, PREDICATE_TYPE,
    };
    use repro_evidence::VersionRef;

    const MODEL: &str = "fraud@1.0.0";

    /// A store with one signed record of `fraud@1.0.0`: step `train` wrote
    /// `model.pkl` (a subject) and `sub/notes.txt` (only in the tree).
    struct Fixture {
        _tmp: tempfile::TempDir,
        store: Store,
        key: SigningKey,
        statement: Statement,
        record: RecordDigest,
        output: TreeDigest,
        log: BlobDigest,
    }

    fn platform() -> Platform {
        Platform {
            arch: "x86_64".into(),
            os: "linux".into(),
            kernel: "6".into(),
            cpu_model: "cpu".into(),
            cpu_flags: Vec::new(),
            cpus: 1,
            backend: "test".into(),
        }
    }

    fn file(bytes: &[u8]) -> BlobDigest {
        BlobDigest::from_hash(Hash::of(bytes))
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        keys::publish(&store, &key.verifying_key()).unwrap();
        let out = store.scratch("out-").unwrap();
        fs::create_dir(out.path().join("sub")).unwrap();
        fs::write(out.path().join("model.pkl"), b"weights").unwrap();
        fs::write(out.path().join("sub/notes.txt"), b"notes").unwrap();
        let output = store.snapshot_dir(out.path(), Ingest::Copy).unwrap();
        let log = store.put_bytes(b"training\n").unwrap();
        let recipe = store.put_bytes(b"[model]\n").unwrap();
        let statement = Statement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![ResourceDescriptor::sha256(
                "train/model.pkl",
                file(b"weights"),
            )],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: ExternalParameters {
                        recipe: "model.toml".into(),
                        recipe_digest: recipe,
                        lock_digest: None,
                        name: "fraud".into(),
                        version: "1.0.0".into(),
                    },
                    internal_parameters: InternalParameters {
                        sandbox_policy_version: 1,
                        platform: platform(),
                    },
                    resolved_dependencies: vec![ResourceDescriptor::sha256("recipe", recipe)],
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: BUILDER_ID.into(),
                        version: BTreeMap::new(),
                    },
                    metadata: Metadata {
                        invocation_id: "1".into(),
                        started_on: "2026-01-01T00:00:00Z".into(),
                        finished_on: "2026-01-01T00:01:00Z".into(),
                    },
                    byproducts: vec![ResourceDescriptor::sha256("steps.train", output)
                        .with("stepKey", Hash::of(b"train").to_string())
                        .with("log", log.to_string())],
                },
            },
        };
        let mut f = Fixture {
            _tmp: tmp,
            store,
            key,
            statement,
            record: RecordDigest::from_hash(Hash::of(b"")),
            output,
            log,
        };
        f.record = f.put_record("1.0.0", &f.statement.clone(), &f.key.clone());
        // As a build does: its audit entry.
        repro_evidence::audit::append(
            &f.store,
            &f.key,
            &Identity::default(),
            repro_evidence::audit::Event::new(
                "build",
                "fraud@1.0.0",
                serde_json::json!({"record": f.record.to_string()}),
            ),
        )
        .unwrap();
        f.store
            .ac_put(
                &StepKey::from_hash(Hash::of(b"train")),
                &ActionResult {
                    output,
                    log,
                    exit_code: 0,
                    duration_ms: 1,
                },
            )
            .unwrap();
        f
    }

    impl Fixture {
        /// Sign `statement` with `key`, store it and point `fraud@<version>` at it.
        fn put_record(
            &self,
            version: &str,
            statement: &Statement,
            key: &SigningKey,
        ) -> RecordDigest {
            let payload = serde_json::to_vec(statement).unwrap();
            let env = keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
            let d = self.store.put_bytes(&env.to_vec_pretty().unwrap()).unwrap();
            self.point("fraud", version, &RecordDigest::from_hash(d.hash()));
            RecordDigest::from_hash(d.hash())
        }

        fn point(&self, name: &str, version: &str, record: &RecordDigest) {
            let dir = self.store.ns_dir(Ns::Records).join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(version), format!("{record}\n")).unwrap();
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.store.layout_dir().join(rel)
        }

        fn check(&self) -> Report {
            check(&self.store).unwrap()
        }

        /// An attestation of `record` signed by `key`, stored under `under`.
        fn attest(
            &self,
            record: &RecordDigest,
            under: &RecordDigest,
            key: &SigningKey,
        ) -> BlobDigest {
            let verified = Verified {
                model: MODEL.into(),
                reproduced: true,
                steps: vec![StepSummary {
                    step: "train".into(),
                    expected: self.output.to_string(),
                    actual: Some(self.output.to_string()),
                    reproduced: true,
                    files: Vec::new(),
                }],
                outputs: Vec::new(),
            };
            let env =
                sign_verification(&verified, record, Identity::default(), platform(), key).unwrap();
            let mut statement: AttestationStatement =
                serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
            statement.predicate.time_verified = "2026-01-02T00:00:00Z".into();
            let payload = serde_json::to_vec(&statement).unwrap();
            let env = keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
            self.store
                .put_attestation(under, &serde_json::to_vec_pretty(&env).unwrap())
                .unwrap()
        }
    }

    /// Change the payload of an envelope, keeping its signatures.
    /// The notes about objects, without those about governance files (these
    /// fixtures write records and identities directly, with no audit log).
    fn storage_notes(r: &Report) -> Vec<&String> {
        r.notes
            .iter()
            .filter(|n| {
                !n.contains("no governance root") && !n.contains("not compared with the audit log")
            })
            .collect()
    }

    fn forge(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut env: Envelope = serde_json::from_slice(bytes).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&b64.decode(&env.payload).unwrap()).unwrap();
        edit(&mut v);
        env.payload = b64.encode(serde_json::to_vec(&v).unwrap());
        serde_json::to_vec_pretty(&env).unwrap()
    }

    type Found = (Kind, Option<String>, Option<String>);

    /// Each problem's kind, digest and referrer, sorted.
    fn kinds(r: &Report) -> Vec<Found> {
        let mut out: Vec<Found> = r
            .problems
            .iter()
            .map(|p| (p.kind, p.digest.clone(), p.referenced_by.clone()))
            .collect();
        out.sort();
        out
    }

    fn sorted(mut v: Vec<Found>) -> Vec<Found> {
        v.sort();
        v
    }

    /// The inputs digest kept in a version's history is what a build
    /// compares its inputs with: an edited one is named.
    #[test]
    fn an_edited_inputs_digest_in_a_versions_history_is_a_mismatch() {
        let f = fixture();
        let bytes = f.store.get_record(&f.record).unwrap();
        f.store
            .put_record(&bytes, "fraud", "1.0.0", &repro_evidence::record::inputs_of)
            .unwrap();
        let entry = f
            .path("refs/record-history/fraud/1.0.0")
            .join(f.record.hex());
        let kept = fs::read_to_string(&entry).unwrap();
        assert!(kept.starts_with("sha256:"), "{kept:?}");
        assert!(f.check().ok);
        fs::write(&entry, format!("{}\n", Hash::of(b"other inputs"))).unwrap();
        let r = f.check();
        assert_eq!(
            kinds(&r),
            [(
                Kind::Mismatch,
                Some(f.record.to_string()),
                Some(format!("record of {MODEL}"))
            )],
            "{:#?}",
            r.problems
        );
    }

    #[test]
    fn a_consistent_store_has_no_problems() {
        let f = fixture();
        let r = f.check();
        assert!(r.ok, "{:?}", r.problems);
        assert!(storage_notes(&r).is_empty(), "{:?}", r.notes);
        // Record, key, recipe, log, 2 trees, 2 files.
        assert_eq!(r.objects, 8);
        let text = render(&r, false);
        assert_eq!(
            text,
            format!("checked 8 objects ({} bytes): all intact\n", r.bytes)
        );
        assert_eq!(render(&r, true), "");
    }

    #[test]
    fn missing_objects_are_named_with_the_file_step_and_version_that_need_them() {
        let f = fixture();
        let notes = file(b"notes");
        let weights = file(b"weights");
        for d in [notes, weights, f.log] {
            fs::remove_file(f.store.blob_path(&d)).unwrap();
        }
        let r = f.check();
        assert!(!r.ok);
        let by = |s: &str| Some(format!("{s} of step `train` of {MODEL}"));
        assert_eq!(
            kinds(&r),
            sorted(vec![
                (
                    Kind::Missing,
                    Some(weights.to_string()),
                    by("file `model.pkl`")
                ),
                (Kind::Missing, Some(f.log.to_string()), by("log")),
                (
                    Kind::Missing,
                    Some(notes.to_string()),
                    by("file `sub/notes.txt`")
                ),
            ])
        );
        let message =
            format!("blob {weights} (file `model.pkl` of step `train` of {MODEL}) is missing");
        assert!(
            r.problems.iter().any(|p| p.message == message),
            "{:#?}",
            r.problems
        );
        let text = render(&r, false);
        assert!(text.contains("3 problems found"), "{text}");
        assert_eq!(
            text.matches("hint:").count(),
            1,
            "one hint for them all: {text}"
        );
    }

    #[test]
    fn a_forged_record_and_one_signed_by_a_key_the_store_lacks_do_not_check_out() {
        let f = fixture();
        let bytes = f.store.get_record(&f.record).unwrap();
        let forged = f
            .store
            .put_bytes(&forge(&bytes, |v| {
                v["predicate"]["runDetails"]["metadata"]["finishedOn"] =
                    "2020-01-01T00:00:00Z".into();
            }))
            .unwrap();
        let forged = RecordDigest::from_hash(forged.hash());
        f.point("fraud", "1.0.0", &forged);
        let stranger = SigningKey::from_bytes(&[9; 32]);
        let mut two = f.statement.clone();
        two.predicate.build_definition.external_parameters.version = "2.0.0".into();
        let by_stranger = f.put_record("2.0.0", &two, &stranger);

        let r = f.check();
        let stranger_key = keys::key_id(&stranger.verifying_key()).to_string();
        assert_eq!(
            kinds(&r),
            sorted(vec![
                (
                    Kind::BadSignature,
                    Some(forged.to_string()),
                    Some(format!("record of {MODEL}"))
                ),
                (
                    Kind::BadSignature,
                    Some(by_stranger.to_string()),
                    Some("record of fraud@2.0.0".into())
                ),
                (
                    Kind::Missing,
                    Some(stranger_key.clone()),
                    Some("signing key of the record of fraud@2.0.0".into())
                ),
            ]),
            "{:#?}",
            r.problems
        );
        let message = |d: &RecordDigest| {
            r.problems
                .iter()
                .find(|p| p.digest == Some(d.to_string()))
                .unwrap()
                .message
                .clone()
        };
        assert!(
            message(&forged).contains("altered after it was signed"),
            "{}",
            message(&forged)
        );
        assert!(
            message(&by_stranger).contains(&format!(
                "key `{stranger_key}`, which the store does not hold"
            )),
            "{}",
            message(&by_stranger)
        );
    }

    #[test]
    fn every_record_of_a_version_is_walked_the_earlier_ones_too() {
        let f = fixture();
        let mut again = f.statement.clone();
        again.predicate.run_details.metadata.finished_on = "2026-01-03T00:00:00Z".into();
        let env = keys::sign(
            &f.key,
            keys::IN_TOTO_PAYLOAD_TYPE,
            &serde_json::to_vec(&again).unwrap(),
        );
        let latest = f
            .store
            .put_record(
                &env.to_vec_pretty().unwrap(),
                "fraud",
                "1.0.0",
                &repro_evidence::record::inputs_of,
            )
            .unwrap();
        assert_eq!(f.store.resolve_record("fraud", "1.0.0").unwrap(), latest);
        assert!(f.check().ok, "{:#?}", f.check().problems);
        // Only the version's history names the first record now.
        fs::remove_file(f.store.blob_path(&BlobDigest::from_hash(f.record.hash()))).unwrap();
        let r = f.check();
        assert_eq!(
            kinds(&r),
            [(
                Kind::Missing,
                Some(f.record.to_string()),
                Some(format!("record of {MODEL}"))
            )]
        );
    }

    #[test]
    fn a_ref_naming_a_record_of_another_version_is_a_mismatch() {
        let f = fixture();
        f.point("fraud", "2.0.0", &f.record);
        let r = f.check();
        assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
        let p = &r.problems[0];
        assert_eq!(p.kind, Kind::Mismatch);
        assert_eq!(p.digest, Some(f.record.to_string()));
        assert_eq!(p.path, Some(f.path("refs/records/fraud/2.0.0")));
        assert!(
            p.message.contains("of fraud@2.0.0 names record")
                && p.message.ends_with("which is a record of fraud@1.0.0"),
            "{}",
            p.message
        );
    }

    #[test]
    fn refs_that_do_not_parse_are_named_with_their_file() {
        let f = fixture();
        let write = |rel: &str, text: &str| {
            let p = f.path(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
        };
        write(&format!("refs/cards/{}", f.record.hex()), "card?\n");
        write("refs/stages/production/fraud/1.0.0", "sha256:12\n");
        write("refs/pins/versions/fraud/1.0.0", "pinned\n");
        write("refs/attestations/not-hex/x", "");
        write("refs/images/latest", "");
        write("identities/bob.json", "{}");
        let r = f.check();
        let mut named: Vec<PathBuf> = r
            .problems
            .iter()
            .inspect(|p| assert_eq!(p.kind, Kind::Malformed, "{p:?}"))
            .map(|p| p.path.clone().unwrap())
            .collect();
        named.sort();
        let mut want: Vec<PathBuf> = [
            format!("refs/cards/{}", f.record.hex()).as_str(),
            "refs/stages/production/fraud/1.0.0",
            "refs/pins/versions/fraud/1.0.0",
            "refs/attestations/not-hex",
            "refs/images/latest",
            "identities/bob.json",
        ]
        .iter()
        .map(|p| f.path(p))
        .collect();
        want.sort();
        assert_eq!(named, want, "{:#?}", r.problems);
        for p in &r.problems {
            assert!(
                p.message
                    .contains(&p.path.as_ref().unwrap().display().to_string()),
                "{}",
                p.message
            );
            assert!(p.hint.is_some(), "{p:?}");
        }
    }

    #[test]
    fn attestations_are_checked_and_must_be_filed_under_their_record() {
        let f = fixture();
        let good = f.attest(&f.record, &f.record, &f.key);
        assert!(f.check().ok);
        let bytes = f.store.read_blob(&good).unwrap();
        let forged = f
            .store
            .put_attestation(
                &f.record,
                &forge(&bytes, |v| {
                    v["predicate"]["verificationResult"] = "FAILED".into()
                }),
            )
            .unwrap();
        // About another record of the store, filed under this one.
        let mut two = f.statement.clone();
        two.predicate.build_definition.external_parameters.version = "2.0.0".into();
        let other = f.put_record("2.0.0", &two, &f.key);
        let misfiled = f.attest(&other, &f.record, &f.key);
        let r = f.check();
        let by = Some(format!("attestation of {MODEL}"));
        assert_eq!(
            kinds(&r),
            sorted(vec![
                (Kind::BadSignature, Some(forged.to_string()), by.clone()),
                (Kind::Mismatch, Some(misfiled.to_string()), by),
            ]),
            "{:#?}",
            r.problems
        );
        // Deleted, the attestation blob is missing, named as what it is.
        fs::remove_file(f.store.blob_path(&good)).unwrap();
        let r = f.check();
        assert!(
            kinds(&r).contains(&(
                Kind::Missing,
                Some(good.to_string()),
                Some(format!("attestation of {MODEL}"))
            )),
            "{:#?}",
            r.problems
        );
    }

    #[test]
    fn approvals_are_checked_with_the_registered_keys() {
        let f = fixture();
        let bob = SigningKey::from_bytes(&[5; 32]);
        identities::add(
            &f.store,
            &bob.verifying_key(),
            "Bob",
            "bob@example.com",
            &["validator".into()],
            "me",
        )
        .unwrap();
        let builder = keys::key_id(&f.key.verifying_key()).to_string();
        let model = VersionRef::parse(MODEL).unwrap();
        let (digest, _) = approvals::approve(
            &f.store,
            &bob,
            &model,
            &f.record,
            &builder,
            "validator",
            "ok",
        )
        .unwrap();
        assert!(f.check().ok, "{:#?}", f.check().problems);
        // Bob's key blob is not needed for approvals: his identity holds
        // the key. Its absence is a note.
        let bob_id = keys::key_id(&bob.verifying_key());
        fs::remove_file(f.store.blob_path(&bob_id)).unwrap();
        let r = f.check();
        assert!(r.ok, "{:#?}", r.problems);
        let notes = storage_notes(&r);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains(&format!("`{bob_id}` of identity Bob")),
            "{notes:?}"
        );

        let dir = f.path(&format!("refs/approvals/{}", f.record.hex()));
        let genuine = fs::read(dir.join(digest.strip_prefix("sha256:").unwrap())).unwrap();
        let forged = forge(&genuine, |v| v["predicate"]["role"] = "model-risk".into());
        let forged_hash = Hash::of(&forged);
        fs::write(dir.join(forged_hash.hex()), &forged).unwrap();
        let renamed = Hash::of(b"another name");
        fs::write(dir.join(renamed.hex()), &genuine).unwrap();
        // Filed under a record it is not about (and that is not in the store).
        let elsewhere = RecordDigest::from_hash(Hash::of(b"gone"));
        let other_dir = f.path(&format!("refs/approvals/{}", elsewhere.hex()));
        fs::create_dir_all(&other_dir).unwrap();
        fs::write(
            other_dir.join(digest.strip_prefix("sha256:").unwrap()),
            &genuine,
        )
        .unwrap();

        let r = f.check();
        let by = Some(format!("approval of {MODEL}"));
        assert_eq!(
            kinds(&r),
            sorted(vec![
                (Kind::Corrupt, Some(renamed.to_string()), by.clone()),
                (Kind::BadSignature, Some(forged_hash.to_string()), by),
                (
                    Kind::Mismatch,
                    Some(digest.clone()),
                    Some(format!("approval of record {elsewhere}"))
                ),
            ]),
            "{:#?}",
            r.problems
        );
        assert_eq!(storage_notes(&r).len(), 2, "{:?}", r.notes);
        assert!(
            r.notes.iter().any(|n| n.contains(&elsewhere.to_string())),
            "{:?}",
            r.notes
        );

        // An identity edited to hold another key is named too.
        let id_path = f.path(&format!(
            "identities/{}.json",
            keys::key_id(&bob.verifying_key()).hex()
        ));
        let mut reg: serde_json::Value =
            serde_json::from_slice(&fs::read(&id_path).unwrap()).unwrap();
        reg["public_key"] =
            hex::encode(SigningKey::from_bytes(&[6; 32]).verifying_key().as_bytes()).into();
        fs::write(&id_path, serde_json::to_vec(&reg).unwrap()).unwrap();
        let r = f.check();
        assert!(
            r.problems.iter().any(|p| p.kind == Kind::Mismatch
                && p.object == "identity"
                && p.path.as_ref() == Some(&id_path)),
            "{:#?}",
            r.problems
        );
    }

    #[test]
    fn refs_about_records_gc_removed_are_notes_not_problems() {
        let f = fixture();
        let gone = RecordDigest::from_hash(Hash::of(b"a record gc removed"));
        let write = |rel: String, text: String| {
            let p = f.path(&rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
        };
        write(
            format!("refs/cards/{}", gone.hex()),
            format!("{}\n", file(b"card")),
        );
        write(
            "refs/stages/retired/fraud/0.9.0".into(),
            format!("{gone}\n"),
        );
        let r = f.check();
        assert!(r.ok, "{:#?}", r.problems);
        let notes = storage_notes(&r);
        assert_eq!(notes.len(), 1, "one note per record: {notes:?}");
        // One note, by whichever ref about it was checked first.
        let text = render(&r, false);
        assert!(
            text.contains("note: ") && text.contains(&gone.to_string()),
            "{text}"
        );
        assert!(!render(&r, true).contains("note:"));

        // A card ref of a record that is in the store: its card must be too.
        fs::write(
            f.path(&format!("refs/cards/{}", f.record.hex())),
            format!("{}\n", file(b"card")),
        )
        .unwrap();
        let r = f.check();
        assert_eq!(
            kinds(&r),
            [(
                Kind::Missing,
                Some(file(b"card").to_string()),
                Some(format!("model card of {MODEL}"))
            )]
        );
    }

    #[test]
    fn the_action_cache_pins_and_images_are_roots() {
        let f = fixture();
        let log = f.store.put_bytes(b"another run\n").unwrap();
        let key = StepKey::from_hash(Hash::of(b"other"));
        f.store
            .ac_put(
                &key,
                &ActionResult {
                    output: f.output,
                    log,
                    exit_code: 0,
                    duration_ms: 1,
                },
            )
            .unwrap();
        let layer = f.store.put_bytes(b"a layer").unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
        }))
        .unwrap();
        let config_digest = f.store.put_bytes(&config).unwrap();
        let desc = |media: &str, d: BlobDigest, size: usize| repro_store::image::Descriptor {
            media_type: media.into(),
            digest: d.hash(),
            size: size as u64,
            platform: None,
            annotations: None,
        };
        let image = f
            .store
            .put_image(&repro_store::image::oci_manifest_bytes(
                &desc(
                    repro_store::image::media_type::OCI_CONFIG,
                    config_digest,
                    config.len(),
                ),
                &[desc(
                    repro_store::image::media_type::OCI_LAYER_TAR,
                    layer,
                    7,
                )],
            ))
            .unwrap();
        let pinned = f.store.put_bytes(b"pinned").unwrap();
        f.store.pin_object(&pinned.hash()).unwrap();
        f.store.pin_version("fraud", "1.0.0").unwrap();
        assert!(f.check().ok, "{:#?}", f.check().problems);
        fs::remove_file(f.store.blob_path(&log)).unwrap();
        fs::remove_file(f.store.blob_path(&pinned)).unwrap();
        fs::remove_file(f.store.blob_path(&layer)).unwrap();
        fs::remove_file(f.path("refs/records/fraud/1.0.0")).unwrap();
        let r = f.check();
        let ks = kinds(&r);
        assert!(
            ks.contains(&(
                Kind::Missing,
                Some(log.to_string()),
                Some(format!("log of action cache entry {}", key.hash()))
            )),
            "{ks:#?}"
        );
        assert!(
            ks.contains(&(
                Kind::Missing,
                Some(pinned.to_string()),
                Some("pinned object".into())
            )),
            "{ks:#?}"
        );
        assert!(
            ks.contains(&(
                Kind::Missing,
                Some(layer.to_string()),
                Some(format!("layer 1 of image {image}"))
            )),
            "{ks:#?}"
        );
        assert!(
            ks.contains(&(
                Kind::Missing,
                Some(f.record.to_string()),
                Some(format!("pin of {MODEL}"))
            )),
            "{ks:#?}"
        );
    }
}
