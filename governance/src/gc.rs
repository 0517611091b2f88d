//! `repro gc`, `repro pin` and `repro unpin`: retention-aware garbage
//! collection of the store.
//!
//! 1. Take the store lock exclusively. Builds, verifications and checks hold
//!    it shared for their whole run, so a collection waits for them (or,
//!    with `--no-wait`, fails at once) and no build starts while it runs.
//! 2. Decide which versions are retained (the [`Retention`] rules from
//!    `<store>/v1/retention.toml` and the flags).
//! 3. Collect the roots: for every retained version, each of its records
//!    (the latest and every earlier one of the same inputs, see
//!    [`Store::records_of`]) and what the record names (recipe and lock blobs, toolchain images, data and code
//!    trees, every step's output tree and log, the signing keys), its
//!    attestations (their blobs, signing keys and every tree they name,
//!    including the rebuilt outputs of a failed verification); and every
//!    pinned object.
//! 4. Mark and sweep in the store ([`repro_store::gc`]). A version that is
//!    not retained loses its record refs (every record of it) and their
//!    attestations.
//!
//! Whether a version is retained is decided from its latest record (its
//! `finishedOn` for `keep_days` and `keep_latest`), as before versions had
//! several records; the decision covers all of them.
//!
//! Records and attestations are read without checking their signatures:
//! what matters here is what they name, and keeping too much is safe.
//! A record that cannot be read or parsed keeps its version (with a warning).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use repro_store::gc::Via;
use repro_store::Ns;
use repro_store::{
    BlobDigest, GcKind, GcOptions, GcPlan, GcRoots, Hash, ImageDigest, RecordDigest, Store,
    TreeDigest,
};
use serde::{Deserialize, Serialize};

use repro_evidence::attest::AttestationStatement;
use repro_evidence::exit::UserError;
use repro_evidence::keys::Envelope;
use repro_evidence::record::Statement;

/// Errors of `repro gc` that are not the user's input.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// `--no-wait` and a build, verification or check holds the store.
    #[error("the store `{}` is in use by a running build, verification or check\nhint: wait for it to finish, or run `repro gc` without `--no-wait` to wait for it", store.display())]
    Busy {
        /// The store directory.
        store: PathBuf,
    },
}

/// The retention rules: `<store>/v1/retention.toml`, overridden by flags.
///
/// ```toml
/// keep_days = 90          # versions whose record finished less than 90 days ago
/// keep_latest = 3         # the 3 latest versions of each model (by finishedOn)
/// stages = ["production"] # versions in these registry stages
/// ```
///
/// A version is retained when any rule matches it, and always when it is
/// pinned. When no rule is set (no file, or an empty one), every version
/// with a record is retained: only objects no record reaches go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Retain versions younger than this many days.
    pub keep_days: Option<u64>,
    /// Retain the latest this many versions of each model.
    pub keep_latest: Option<usize>,
    /// Retain versions in these registry stages.
    #[serde(default)]
    pub stages: Vec<String>,
}

impl Retention {
    /// Read the retention file of `store` (the defaults when it is missing).
    pub fn load(store: &Store) -> Result<Retention> {
        let path = store.ns_dir(Ns::Retention);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Retention::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        Retention::parse(&text, &path)
    }

    /// Parse the text of a retention file; errors name `path`, the line and the key.
    pub fn parse(text: &str, path: &Path) -> Result<Retention> {
        toml::from_str(text).map_err(|e| {
            UserError(format!(
                "invalid retention file `{}`: {}\nhint: the keys are `keep_days`, `keep_latest` and `stages` (see the README, \"Garbage collection\")",
                path.display(),
                e.to_string().trim_end()
            ))
            .into()
        })
    }

    /// Apply the flags of `repro gc` over these rules.
    pub fn with_flags(mut self, flags: &Retention) -> Retention {
        if flags.keep_days.is_some() {
            self.keep_days = flags.keep_days;
        }
        if flags.keep_latest.is_some() {
            self.keep_latest = flags.keep_latest;
        }
        if !flags.stages.is_empty() {
            self.stages = flags.stages.clone();
        }
        self
    }

    /// Whether no rule is set (every version is retained).
    pub fn keeps_everything(&self) -> bool {
        self.keep_days.is_none() && self.keep_latest.is_none() && self.stages.is_empty()
    }
}

/// One version of a model and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionFate {
    /// `name@version`.
    pub model: String,
    /// The record the version's ref names (its latest).
    pub record: String,
    /// Every record of the version (the latest included), sorted by digest.
    pub records: Vec<String>,
    /// The record's `finishedOn`, when it could be read.
    pub finished_on: Option<String>,
    /// Whether it is retained.
    pub retained: bool,
    /// Why it is retained (`pinned`, `stage production`, `younger than 90 days`,
    /// `latest 3`, `no retention rule`, `unreadable record`); empty when dropped.
    pub reasons: Vec<String>,
}

/// The outcome of a collection (or of a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// Whether nothing was removed.
    pub dry_run: bool,
    /// The rules applied.
    pub retention: Retention,
    /// Every version, sorted.
    pub versions: Vec<VersionFate>,
    /// What went (or would go), by kind.
    pub removed: BTreeMap<GcKind, KindFigures>,
    /// The bytes that return.
    pub freed_bytes: u64,
    /// Blobs that stay.
    pub kept_blobs: usize,
    /// Bytes those blobs take.
    pub kept_bytes: u64,
    /// Objects a retained version needs that are not in the store.
    pub missing: Vec<String>,
    /// Warnings (unreadable records or attestations, kept to be safe).
    pub warnings: Vec<String>,
    /// Every removed object (only with `--verbose`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<repro_store::GcItem>>,
}

/// How many objects of one kind go and what they take.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct KindFigures {
    /// How many.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Take the store lock exclusively: at once if free, else (unless
/// `no_wait`) after calling `waiting` and blocking until builds finish.
pub fn lock(
    store: &Store,
    no_wait: bool,
    waiting: impl FnOnce(),
) -> Result<repro_store::StoreLock> {
    if let Some(l) = store.try_lock_exclusive()? {
        return Ok(l);
    }
    if no_wait {
        return Err(GcError::Busy {
            store: store.dir().to_path_buf(),
        }
        .into());
    }
    waiting();
    Ok(store.lock_exclusive()?)
}

/// Run a collection. The caller holds the exclusive lock (see [`lock`]).
pub fn collect(
    store: &Store,
    retention: &Retention,
    dry_run: bool,
    verbose: bool,
    now: SystemTime,
) -> Result<GcReport> {
    let mut warnings = Vec::new();
    let versions = read_versions(store, &mut warnings)?;
    let fates = decide(store, retention, &versions, now)?;

    let mut roots = GcRoots::default();
    let mut drop = Vec::new();
    for (v, fate) in versions.iter().zip(&fates) {
        if fate.retained {
            add_record_roots(
                store,
                &v.record,
                v.statement.as_ref(),
                &mut roots,
                &mut warnings,
            )?;
            for r in v.records.iter().filter(|r| **r != v.record) {
                let statement = match store
                    .get_record(r)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| payload::<Statement>(&b))
                {
                    Ok(s) => Some(s),
                    Err(e) => {
                        warnings.push(format!(
                            "the earlier record `{r}` of `{}@{}` cannot be read; only its own blob is kept: {e:#}",
                            v.name, v.version
                        ));
                        None
                    }
                };
                add_record_roots(store, r, statement.as_ref(), &mut roots, &mut warnings)?;
            }
        } else {
            drop.push((v.name.clone(), v.version.clone()));
        }
    }
    for ns in Ns::ALL {
        namespace_roots(store, ns, &mut roots, &mut warnings)?;
    }

    let opts = GcOptions {
        drop_versions: drop,
        tmp_max_age: Duration::from_secs(3600),
        now,
    };
    let plan = store.gc_plan(&roots, &opts)?;
    if !dry_run {
        store.gc_sweep(&plan)?;
    }
    Ok(report(plan, retention, fates, warnings, dry_run, verbose))
}

/// What namespace `ns` of the store keeps alive in a collection. The match
/// is exhaustive on purpose: a namespace added to the store's layout does
/// not compile until it says here (and in [`crate::fsck`]) what it roots.
///
/// Governance and the audit log are kept whatever the retention rules: the
/// public key of every registered identity (approvals are checked with
/// it), of every audit entry's signer and of every registry decision's
/// actor (`repro audit verify` checks each entry with it), and every policy
/// a registry decision was made under (its copy is the evidence of what was
/// checked). A registry or log that cannot be read stops the collection:
/// what it names is not known, so nothing it might name may go.
pub fn namespace_roots(
    store: &Store,
    ns: Ns,
    roots: &mut impl RootSink,
    warnings: &mut Vec<String>,
) -> Result<()> {
    match ns {
        // Versions are walked by [`collect`] under the retention rules:
        // each retained version's records (every one of its history), their
        // attestations and cards ([`add_record_roots`]); pinned and staged
        // versions are retained by [`decide`].
        Ns::Records
        | Ns::RecordHistory
        | Ns::Attestations
        | Ns::Cards
        | Ns::PinnedVersions
        | Ns::Stages => Ok(()),
        Ns::PinnedObjects => add_pinned_objects(store, roots, warnings),
        Ns::Identities => identity_roots(store, roots),
        Ns::Audit => audit_roots(store, roots),
        Ns::Registry => registry_roots(store, roots),
        // Approval envelopes are files, not blobs; the keys that check them
        // are the registered identities' (above).
        Ns::Approvals => Ok(()),
        // Image markers: the store keeps those of the images kept.
        Ns::Images => Ok(()),
        // Files read as they are, naming no object.
        Ns::Policy | Ns::Retention => Ok(()),
        // Caches and scratch: the store trims them itself.
        Ns::ActionCache
        | Ns::Memo
        | Ns::StatCache
        | Ns::StatGeneration
        | Ns::Intact
        | Ns::Rootfs
        | Ns::Tmp => Ok(()),
    }
}

fn key_root(roots: &mut impl RootSink, keyid: &str, what: &str) {
    if let Ok(d) = keyid.parse::<BlobDigest>() {
        roots.blob(d, || Origin::plain(format!("the public key of {what}")));
    }
}

/// The public key of every registered identity.
pub fn identity_roots(store: &Store, roots: &mut impl RootSink) -> Result<()> {
    for id in crate::identities::list(store)
        .context("cannot read the registered identities, so no key may be collected")?
    {
        key_root(roots, &id.keyid, "a registered identity");
    }
    Ok(())
}

/// The public key of every audit log entry's signer.
pub fn audit_roots(store: &Store, roots: &mut impl RootSink) -> Result<()> {
    let entries = repro_evidence::audit::entries(store)
        .context("cannot read the audit log, so none of its signers' keys may be collected")?;
    for (_, e) in &entries {
        key_root(roots, &e.actor.keyid, "an audit log entry's signer");
    }
    Ok(())
}

/// The key of every registry decision's actor and the policy it was made under.
pub fn registry_roots(store: &Store, roots: &mut impl RootSink) -> Result<()> {
    let registry = store.ns_dir(Ns::Registry);
    let models = match std::fs::read_dir(&registry) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot list `{}`", registry.display()))
            )
        }
    };
    for name in models {
        let history = crate::registry::history(store, &name)
            .with_context(|| format!("cannot read the registry history of `{name}`"))?;
        for h in history {
            key_root(roots, &h.actor.keyid, "a registry decision's actor");
            if let Some(p) = h
                .policy
                .as_deref()
                .and_then(|p| p.parse::<BlobDigest>().ok())
            {
                roots.blob(p, || {
                    Origin::plain(format!(
                        "the policy of a decision about {name}@{}",
                        h.version
                    ))
                });
            }
        }
    }
    Ok(())
}

fn report(
    plan: GcPlan,
    retention: &Retention,
    versions: Vec<VersionFate>,
    warnings: Vec<String>,
    dry_run: bool,
    verbose: bool,
) -> GcReport {
    let removed = plan
        .summary()
        .into_iter()
        .map(|(k, count, bytes)| (k, KindFigures { count, bytes }))
        .collect();
    GcReport {
        dry_run,
        retention: retention.clone(),
        versions,
        removed,
        freed_bytes: plan.total_bytes(),
        kept_blobs: plan.kept_blobs,
        kept_bytes: plan.kept_bytes,
        missing: plan.missing.clone(),
        warnings,
        items: verbose.then_some(plan.items),
    }
}

/// A version with a record ref.
struct Version {
    name: String,
    version: String,
    /// The latest record (the ref's).
    record: RecordDigest,
    /// Every record of the version, the latest included.
    records: Vec<RecordDigest>,
    /// `None` when the record cannot be read or parsed.
    statement: Option<Statement>,
}

fn read_versions(store: &Store, warnings: &mut Vec<String>) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    for name in store.record_names()? {
        for version in store.record_versions(&name)? {
            let record = store.resolve_record(&name, &version)?;
            let records = store.records_of(&name, &version)?;
            let statement = match store
                .get_record(&record)
                .map_err(anyhow::Error::from)
                .and_then(|b| payload::<Statement>(&b))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    warnings.push(format!(
                        "the record `{record}` of `{name}@{version}` cannot be read, so the version is kept: {e:#}"
                    ));
                    None
                }
            };
            out.push(Version {
                name: name.clone(),
                version,
                record,
                records,
                statement,
            });
        }
    }
    Ok(out)
}

/// The payload of a DSSE envelope, parsed (signatures not checked).
pub fn payload<T: serde::de::DeserializeOwned>(envelope: &[u8]) -> Result<T> {
    Ok(repro_evidence::keys::unverified_payload(envelope)?)
}

fn keyids(envelope: &[u8]) -> Vec<BlobDigest> {
    serde_json::from_slice::<Envelope>(envelope)
        .map(|e| {
            e.signatures
                .iter()
                .filter_map(|s| s.keyid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn finished(s: &Statement) -> Option<time::OffsetDateTime> {
    repro_evidence::clock::parse(&s.predicate.run_details.metadata.finished_on)
}

/// The stages whose versions every collection keeps, whatever the rules.
pub const ALWAYS_KEPT_STAGES: [crate::Stage; 2] =
    [crate::Stage::Validated, crate::Stage::Production];

fn decide(
    store: &Store,
    r: &Retention,
    versions: &[Version],
    now: SystemTime,
) -> Result<Vec<VersionFate>> {
    let pinned: BTreeSet<(String, String)> = store.pinned_versions()?.into_iter().collect();
    let mut staged: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for stage in &r.stages {
        for m in store.stage_members(stage)? {
            staged.entry(m).or_default().push(stage.clone());
        }
    }
    // A version in a governed stage is evidence in use whatever the rules
    // say: what was validated or runs in production must stay verifiable.
    for stage in ALWAYS_KEPT_STAGES {
        if r.stages.iter().any(|s| s == stage.as_str()) {
            continue;
        }
        for m in store.stage_members(stage.as_str())? {
            staged
                .entry(m)
                .or_default()
                .push(format!("{stage} (always kept)"));
        }
    }
    // The latest K of each model: by finishedOn, newest first (an unknown
    // time counts as newest: such versions are kept anyway).
    let mut latest = BTreeSet::new();
    if let Some(k) = r.keep_latest {
        let mut by_model: BTreeMap<&str, Vec<(Option<time::OffsetDateTime>, &str)>> =
            BTreeMap::new();
        for v in versions {
            by_model
                .entry(&v.name)
                .or_default()
                .push((v.statement.as_ref().and_then(finished), &v.version));
        }
        for (name, mut vs) in by_model {
            vs.sort_by(|a, b| match (a.0, b.0) {
                (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.1.cmp(a.1)),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, None) => b.1.cmp(a.1),
            });
            for (_, v) in vs.into_iter().take(k) {
                latest.insert((name.to_string(), v.to_string()));
            }
        }
    }
    let now = time::OffsetDateTime::from(now);
    let mut out = Vec::new();
    for v in versions {
        let key = (v.name.clone(), v.version.clone());
        let finished_at = v.statement.as_ref().and_then(finished);
        let mut reasons = Vec::new();
        if r.keeps_everything() {
            reasons.push("no retention rule".to_string());
        }
        if pinned.contains(&key) {
            reasons.push("pinned".to_string());
        }
        for stage in staged.get(&key).into_iter().flatten() {
            reasons.push(format!("stage {stage}"));
        }
        if let Some(days) = r.keep_days {
            match finished_at {
                Some(t) if now - t < time::Duration::days(days as i64) => {
                    reasons.push(format!("younger than {days} days"));
                }
                Some(_) => {}
                None => reasons.push("unknown finish time".to_string()),
            }
        }
        if latest.contains(&key) {
            reasons.push(format!("latest {}", r.keep_latest.unwrap_or_default()));
        }
        if v.statement.is_none() {
            reasons.push("unreadable record".to_string());
        }
        out.push(VersionFate {
            model: format!("{}@{}", v.name, v.version),
            record: v.record.to_string(),
            records: v.records.iter().map(|r| r.to_string()).collect(),
            finished_on: v
                .statement
                .as_ref()
                .map(|s| s.predicate.run_details.metadata.finished_on.clone()),
            retained: !reasons.is_empty(),
            reasons,
        });
    }
    Ok(out)
}

/// Who names a root, for the messages of `repro fsck`: `what` describes
/// the root itself (``output of step `train` of fraud@1.0.0``), `holder`
/// what its parts belong to: a file of a tree root is ``file `model.pkl`
/// of step `train` of fraud@1.0.0``, a layer of an image root ``layer 1 of
/// toolchain `bb` of fraud@1.0.0``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The root itself.
    pub what: String,
    /// What the root's files, folders, config and layers are parts of.
    pub holder: String,
}

impl Origin {
    /// `<role> of <owner>`, whose parts are parts of `owner`.
    pub fn of(role: &str, owner: impl Into<String>) -> Origin {
        let holder = owner.into();
        Origin {
            what: format!("{role} of {holder}"),
            holder,
        }
    }

    /// A root that is its own holder.
    pub fn plain(what: impl Into<String>) -> Origin {
        let what = what.into();
        Origin {
            holder: what.clone(),
            what,
        }
    }

    /// What names an object met at `via` below this root.
    pub fn describe(&self, via: &Via) -> String {
        match via {
            Via::Root => self.what.clone(),
            Via::File(p) => format!("file `{p}` of {}", self.holder),
            Via::Folder(p) => format!("folder `{p}` of {}", self.holder),
            Via::Config => format!("config of {}", self.holder),
            Via::Layer(i) => format!("layer {} of {}", i + 1, self.holder),
        }
    }
}

/// Where the roots found by [`add_record_roots`] and co. go: [`GcRoots`]
/// for a collection, [`LabelledRoots`] (which also keeps who names each
/// root) for `repro fsck`. The labels are only made when kept.
pub trait RootSink {
    /// Keep blob `d` as it is.
    fn blob(&mut self, d: BlobDigest, origin: impl FnOnce() -> Origin);
    /// Keep tree `t` with every subtree and file.
    fn tree(&mut self, t: TreeDigest, origin: impl FnOnce() -> Origin);
    /// Keep image `i` with its manifest, config and layers.
    fn image(&mut self, i: ImageDigest, origin: impl FnOnce() -> Origin);
    /// Keep record `r`.
    fn record(&mut self, r: RecordDigest, origin: impl FnOnce() -> Origin);
}

impl RootSink for GcRoots {
    fn blob(&mut self, d: BlobDigest, _: impl FnOnce() -> Origin) {
        self.blobs.insert(d);
    }
    fn tree(&mut self, t: TreeDigest, _: impl FnOnce() -> Origin) {
        self.trees.insert(t);
    }
    fn image(&mut self, i: ImageDigest, _: impl FnOnce() -> Origin) {
        self.images.insert(i);
    }
    fn record(&mut self, r: RecordDigest, _: impl FnOnce() -> Origin) {
        self.records.insert(r);
    }
}

/// Roots with who names each (the first one found).
#[derive(Debug, Default)]
pub struct LabelledRoots {
    /// The roots.
    pub roots: GcRoots,
    origins: HashMap<Hash, Origin>,
}

impl LabelledRoots {
    /// Who names root `h`.
    pub fn origin(&self, h: &Hash) -> Option<&Origin> {
        self.origins.get(h)
    }

    fn label(&mut self, h: Hash, origin: impl FnOnce() -> Origin) {
        self.origins.entry(h).or_insert_with(origin);
    }
}

impl RootSink for LabelledRoots {
    fn blob(&mut self, d: BlobDigest, origin: impl FnOnce() -> Origin) {
        self.roots.blobs.insert(d);
        self.label(d.hash(), origin);
    }
    fn tree(&mut self, t: TreeDigest, origin: impl FnOnce() -> Origin) {
        self.roots.trees.insert(t);
        self.label(t.hash(), origin);
    }
    fn image(&mut self, i: ImageDigest, origin: impl FnOnce() -> Origin) {
        self.roots.images.insert(i);
        self.label(i.hash(), origin);
    }
    fn record(&mut self, r: RecordDigest, origin: impl FnOnce() -> Origin) {
        self.roots.records.insert(r);
        self.label(r.hash(), origin);
    }
}

/// `name@version` as a record's statement names it (`record <digest>`
/// when there is no statement), for labels.
fn model_of(record: &RecordDigest, statement: Option<&Statement>) -> String {
    match statement {
        Some(s) => {
            let ext = &s.predicate.build_definition.external_parameters;
            format!("{}@{}", ext.name, ext.version)
        }
        None => format!("record {record}"),
    }
}

/// Add what record `record` reaches: the record, what its statement names,
/// its signing keys and its attestations with what they name.
pub fn add_record_roots(
    store: &Store,
    record: &RecordDigest,
    statement: Option<&Statement>,
    roots: &mut impl RootSink,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let model = model_of(record, statement);
    roots.record(*record, || Origin::of("record", &model));
    if let Ok(bytes) = store.get_record(record) {
        for k in keyids(&bytes) {
            roots.blob(k, || {
                Origin::of("signing key", format!("the record of {model}"))
            });
        }
    }
    if let Some(s) = statement {
        add_statement_roots(s, &model, roots);
    }
    // Its model card (`repro card` keeps the Markdown as a blob).
    let card = store.ns_dir(Ns::Cards).join(record.hex());
    if let Ok(text) = std::fs::read_to_string(&card) {
        match text.trim().parse::<BlobDigest>() {
            Ok(d) => roots.blob(d, || Origin::of("model card", &model)),
            Err(e) => warnings.push(format!("`{}` is malformed: {e}", card.display())),
        }
    }
    for att in store.attestations_of(record)? {
        add_attestation_roots(store, record, &att, &model, roots, warnings);
    }
    Ok(())
}

/// Add attestation `att` of record `record` (of `model`): its blob, the
/// keys that signed it and every tree and file it names (a failed
/// verification's rebuilt outputs stay, so `repro diff` can explain them).
pub fn add_attestation_roots(
    store: &Store,
    record: &RecordDigest,
    att: &BlobDigest,
    model: &str,
    roots: &mut impl RootSink,
    warnings: &mut Vec<String>,
) {
    roots.blob(*att, || Origin::of("attestation", model));
    let bytes = match store.read_blob(att) {
        Ok(b) => b,
        // Missing or corrupt: the plan lists it as missing, fsck names it.
        Err(_) => return,
    };
    let of = || format!("attestation {att} of {model}");
    for k in keyids(&bytes) {
        roots.blob(k, || Origin::of("signing key", of()));
    }
    // Either shape: the steps are in the record subject's annotation, or
    // (the old shape) in the predicate.
    match payload::<AttestationStatement>(&bytes)
        .and_then(|a| a.details().map_err(anyhow::Error::msg))
    {
        Ok(details) => {
            for step in &details.steps {
                let owner = || format!("step `{}` in {}", step.step, of());
                if let Ok(t) = step.expected.parse::<TreeDigest>() {
                    roots.tree(t, || Origin::of("recorded output", owner()));
                }
                if let Some(t) = step.actual.as_ref().and_then(|t| t.parse::<TreeDigest>().ok()) {
                    roots.tree(t, || Origin::of("rebuilt output", owner()));
                }
                for f in &step.files {
                    for d in f.expected.iter().chain(&f.actual) {
                        if let Ok(d) = d.parse::<BlobDigest>() {
                            roots.blob(d, || {
                                Origin::plain(format!("file `{}` of {}", f.path, owner()))
                            });
                        }
                    }
                }
            }
        }
        Err(e) => warnings.push(format!(
            "the attestation `{att}` of record `{record}` cannot be parsed; only its own blob is kept: {e:#}"
        )),
    }
}

fn add_statement_roots(s: &Statement, model: &str, roots: &mut impl RootSink) {
    let def = &s.predicate.build_definition;
    let ext = &def.external_parameters;
    for (role, d) in std::iter::once(("recipe", &ext.recipe_digest))
        .chain(ext.lock_digest.iter().map(|l| ("lock", l)))
    {
        roots.blob(*d, || Origin::of(role, model));
    }
    for dep in &def.resolved_dependencies {
        let Some(text) = dep.sha256_text() else {
            continue;
        };
        let Ok(hash) = text.parse::<Hash>() else {
            continue;
        };
        if let Some(name) = dep.name.strip_prefix("toolchains.") {
            let owner = || format!("toolchain `{name}` of {model}");
            roots.image(ImageDigest::from_hash(hash), || {
                Origin::of("image", owner())
            });
            if let Some(c) = dep
                .annotations
                .get("config")
                .and_then(|c| c.as_str())
                .and_then(|c| c.parse::<BlobDigest>().ok())
            {
                roots.blob(c, || Origin::of("config", owner()));
            }
        } else if let Some(name) = dep.name.strip_prefix("data.") {
            roots.tree(TreeDigest::from_hash(hash), || {
                Origin::of("snapshot", format!("data `{name}` of {model}"))
            });
        } else if let Some(name) = dep.name.strip_prefix("code.") {
            roots.tree(TreeDigest::from_hash(hash), || {
                Origin::of("tree", format!("code `{name}` of {model}"))
            });
        } else {
            // The recipe, the lock, and anything a later format adds: keep the blob.
            roots.blob(BlobDigest::from_hash(hash), || {
                Origin::plain(format!("`{}` of {model}", dep.name))
            });
        }
    }
    for b in &s.predicate.run_details.byproducts {
        let step = b.name.strip_prefix("steps.").unwrap_or(&b.name);
        let owner = || format!("step `{step}` of {model}");
        if let Some(t) = b.sha256_text().and_then(|t| t.parse::<TreeDigest>().ok()) {
            roots.tree(t, || Origin::of("output", owner()));
        }
        if let Some(log) = b
            .annotations
            .get("log")
            .and_then(|l| l.as_str())
            .and_then(|l| l.parse::<BlobDigest>().ok())
        {
            roots.blob(log, || Origin::of("log", owner()));
        }
    }
}

/// Pinned objects: an image keeps its parts, a record what it reaches, a
/// tree its contents, anything else its own blob.
pub fn add_pinned_objects(
    store: &Store,
    roots: &mut impl RootSink,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let images: BTreeSet<ImageDigest> = store.list_images()?.into_iter().collect();
    for h in store.pinned_objects()? {
        if images.contains(&ImageDigest::from_hash(h)) {
            roots.image(ImageDigest::from_hash(h), || pinned("image", h));
            continue;
        }
        let bytes = match store.read_blob(&BlobDigest::from_hash(h)) {
            Ok(b) => b,
            Err(_) => {
                // Missing or corrupt: keep whatever is there; the plan says so.
                roots.blob(BlobDigest::from_hash(h), || pinned("object", h));
                continue;
            }
        };
        if let Ok(s) = payload::<Statement>(&bytes) {
            if s.check_types().is_ok() {
                add_record_roots(
                    store,
                    &RecordDigest::from_hash(h),
                    Some(&s),
                    roots,
                    warnings,
                )?;
                continue;
            }
        }
        if store.get_tree(&TreeDigest::from_hash(h)).is_ok() {
            roots.tree(TreeDigest::from_hash(h), || pinned("tree", h));
        } else {
            roots.blob(BlobDigest::from_hash(h), || pinned("blob", h));
        }
    }
    Ok(())
}

/// The label of a pinned object: `pinned tree`, whose files are ``file `x`
/// of pinned tree sha256:...``.
fn pinned(kind: &str, h: Hash) -> Origin {
    Origin {
        what: format!("pinned {kind}"),
        holder: format!("pinned {kind} {h}"),
    }
}

/// What `repro pin` / `repro unpin` name: a version or an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTarget {
    /// `name@version`.
    Version(String, String),
    /// `sha256:<hex>`: a blob, tree, image or record.
    Object(Hash),
}

impl PinTarget {
    /// Parse `name@version` or `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<PinTarget> {
        if s.starts_with("sha256:") {
            return Ok(PinTarget::Object(
                s.parse()
                    .map_err(|e| UserError(format!("`{s}` is not a digest: {e}")))?,
            ));
        }
        match repro_evidence::VersionRef::parse(s) {
            Ok(v) => Ok(PinTarget::Version(v.name, v.version)),
            Err(_) => Err(UserError(format!(
                "`{s}` is neither `name@version` nor a digest `sha256:<hex>`\nhint: for example `repro pin breast-cancer-classifier@1.0.0`"
            ))
            .into()),
        }
    }
}

/// Pin a version or an object; returns a line saying what was pinned.
pub fn pin(store: &Store, target: &PinTarget) -> Result<String> {
    match target {
        PinTarget::Version(n, v) => {
            let record = store.pin_version(n, v)?;
            Ok(format!("pinned {n}@{v} (record {record})"))
        }
        PinTarget::Object(h) => {
            if !store.has_blob(&BlobDigest::from_hash(*h)) {
                return Err(UserError(format!(
                    "`{h}` is not in the store\nhint: pin a digest that `repro data add`, `repro image import` or a build printed"
                ))
                .into());
            }
            store.pin_object(h)?;
            Ok(format!("pinned {h}"))
        }
    }
}

/// Unpin a version or an object; refuses one that is not pinned.
pub fn unpin(store: &Store, target: &PinTarget) -> Result<String> {
    let (removed, what) = match target {
        PinTarget::Version(n, v) => (store.unpin_version(n, v)?, format!("{n}@{v}")),
        PinTarget::Object(h) => (store.unpin_object(h)?, h.to_string()),
    };
    if !removed {
        return Err(UserError(format!(
            "`{what}` is not pinned\nhint: `repro gc --dry-run --verbose` lists every version and why it is kept"
        ))
        .into());
    }
    Ok(format!("unpinned {what}"))
}

/// Bytes as a person reads them: `1234 B`, `1.2 KiB`, `3.4 MiB`...
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// The report as text: the versions dropped (all with `verbose`), counts
/// and bytes per kind, every removed object with `verbose`.
pub fn render(r: &GcReport, verbose: bool) -> String {
    let mut out = String::new();
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for v in &r.versions {
        if !v.retained {
            let when = v.finished_on.as_deref().unwrap_or("unknown time");
            let earlier = match v.records.len().saturating_sub(1) {
                0 => String::new(),
                1 => " and 1 earlier record".to_string(),
                n => format!(" and {n} earlier records"),
            };
            let _ = writeln!(
                out,
                "{} {} (finished {when}, record {}{earlier})",
                if r.dry_run { "would drop" } else { "dropped" },
                v.model,
                v.record
            );
        } else if verbose {
            let _ = writeln!(out, "keep {} ({})", v.model, v.reasons.join(", "));
        }
    }
    if r.removed.is_empty() {
        let _ = writeln!(out, "nothing to remove");
    }
    for (kind, f) in &r.removed {
        let bytes = if f.bytes > 0 {
            format!(" ({})", human_bytes(f.bytes))
        } else {
            String::new()
        };
        let _ = writeln!(out, "{verb} {} {}{bytes}", f.count, kind.label());
    }
    if let Some(items) = &r.items {
        for i in items {
            let _ = writeln!(out, "  {} {} {}", kind_word(i.kind), i.id, i.bytes);
        }
    }
    let _ = writeln!(
        out,
        "{}: {} bytes ({}); kept {} blobs ({})",
        if r.dry_run { "would free" } else { "freed" },
        r.freed_bytes,
        human_bytes(r.freed_bytes),
        r.kept_blobs,
        human_bytes(r.kept_bytes)
    );
    for m in &r.missing {
        let _ = writeln!(
            out,
            "warning: a retained version needs {m}, which is not in the store"
        );
    }
    out
}

fn kind_word(k: GcKind) -> &'static str {
    match k {
        GcKind::Record => "record",
        GcKind::Attestation => "attestation",
        GcKind::Image => "image",
        GcKind::ActionCache => "action-cache",
        GcKind::Rootfs => "rootfs",
        GcKind::Blob => "blob",
        GcKind::Tmp => "tmp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_file_parses_and_flags_override_it() {
        let r = Retention::parse(
            "keep_days = 30\nkeep_latest = 2\nstages = [\"production\"]\n",
            Path::new("retention.toml"),
        )
        .unwrap();
        assert_eq!(r.keep_days, Some(30));
        assert_eq!(r.keep_latest, Some(2));
        assert_eq!(r.stages, ["production"]);
        assert!(!r.keeps_everything());
        assert!(Retention::default().keeps_everything());

        let flags = Retention {
            keep_days: Some(7),
            ..Retention::default()
        };
        let r = r.with_flags(&flags);
        assert_eq!(r.keep_days, Some(7));
        assert_eq!(r.keep_latest, Some(2));
        assert_eq!(r.stages, ["production"]);
    }

    #[test]
    fn retention_file_errors_name_the_file_and_key() {
        let err = Retention::parse("keep_dayz = 3\n", Path::new("v1/retention.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`v1/retention.toml`"), "{err}");
        assert!(err.contains("keep_dayz"), "{err}");
        assert!(err.contains("hint:"), "{err}");
        let err = Retention::parse("keep_days = \"x\"\n", Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn pin_targets_parse() {
        assert_eq!(
            PinTarget::parse("m@1.0").unwrap(),
            PinTarget::Version("m".into(), "1.0".into())
        );
        let h = Hash::of(b"x");
        assert_eq!(
            PinTarget::parse(&h.to_string()).unwrap(),
            PinTarget::Object(h)
        );
        for bad in ["m", "@1", "m@", "sha256:zz"] {
            assert!(PinTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
