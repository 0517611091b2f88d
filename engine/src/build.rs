//! `repro build` and `repro lock`: pin the inputs, run the plan, sign a record.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use repro_recipes::{
    Floating, FloatingRef, ImageRef, Kind, Lock, Pins, Placeholder, Recipe, TreeRef,
    VersionTemplate,
};
use repro_store::{Hash, ImageDigest, Ingest, RecordDigest, Store, TreeDigest};

use repro_evidence::exit::UserError;

use crate::engine::{BuildOptions, BuildReport, Engine, Plan, StepStatus};
use crate::events::Event;
use repro_evidence::keys;
use repro_evidence::platform::Platform;
use repro_evidence::record::*;

mod memo;

/// Resolve one floating reference: import an image archive, export a
/// Docker tag, or snapshot a folder into the store. An archive or folder
/// that cannot be taken is reported at the key that names it (exit 3).
async fn resolve_one(engine: &Arc<Engine>, recipe: &Recipe, f: &Floating) -> Result<Hash> {
    resolve_floating(engine, recipe, f, true).await
}

/// [`resolve_one`], registering an image only when `register` is set
/// (else its blobs are stored and no image ref is written: what `repro
/// lock --check` asks of an image that may have moved). A folder is
/// snapshotted either way: its blobs and tree objects go into the store,
/// which writes no ref.
pub(crate) async fn resolve_floating(
    engine: &Arc<Engine>,
    recipe: &Recipe,
    f: &Floating,
    register: bool,
) -> Result<Hash> {
    let store = engine.store();
    match &f.reference {
        FloatingRef::Archive(path) => {
            let full = recipe.resolve(path);
            let verb = if register { "importing" } else { "reading" };
            engine.note(format!("{verb} image archive `{}`", full.display()));
            let shown = std::path::absolute(&full).unwrap_or_else(|_| full.clone());
            let d = tokio::task::spawn_blocking(move || {
                if register {
                    repro_toolchains::import_archive(&store, &shown)
                } else {
                    repro_toolchains::archive_digest(&store, &shown)
                }
            })
            .await?
            .map_err(|e| at_key(recipe, f, &e.to_string()))?;
            Ok(d.hash())
        }
        FloatingRef::Tag(tag) => {
            engine.note(format!("exporting image `{tag}` from Docker"));
            let d = if register {
                engine.import_tag(tag).await?
            } else {
                engine.tag_digest(tag).await?
            };
            Ok(d.hash())
        }
        FloatingRef::Path(path) => {
            let full = recipe.resolve(path);
            engine.note(format!(
                "snapshotting `{}` from `{}`",
                f.key,
                full.display()
            ));
            let dir = full.clone();
            let d = tokio::task::spawn_blocking(move || store.snapshot_dir(&dir, Ingest::Copy))
                .await?
                .map_err(|e| {
                    let shown = std::path::absolute(&full).unwrap_or_else(|_| full.clone());
                    match std::fs::symlink_metadata(&full) {
                        Err(m) if m.kind() == std::io::ErrorKind::NotFound => {
                            let folder = std::path::absolute(&recipe.dir)
                                .unwrap_or_else(|_| recipe.dir.clone());
                            at_key(
                                recipe,
                                f,
                                &format!(
                                    "{} folder `{}` does not exist\nhint: `path` is relative to the recipe's folder `{}`; correct it, or put the {} there",
                                    f.kind,
                                    shown.display(),
                                    folder.display(),
                                    f.kind,
                                ),
                            )
                        }
                        _ => at_key(recipe, f, &e.to_string()),
                    }
                })?;
            Ok(d.hash())
        }
    }
}

/// An error about floating reference `f` (its text, with an optional
/// `\nhint: ` line) as a diagnostic at the key and position that name it in
/// the recipe. Its exit code is 3: the recipe is well formed, the archive or
/// folder it names is missing or unusable.
fn at_key(recipe: &Recipe, f: &Floating, text: &str) -> anyhow::Error {
    let (message, hint) = match text.split_once("\nhint: ") {
        Some((m, h)) => (m, Some(h)),
        None => (text, None),
    };
    let mut d = repro_recipes::Diagnostic::new(&recipe.path, message.replace('\n', "; "))
        .at(f.location)
        .key(&f.key);
    d.hint = hint.map(str::to_string);
    anyhow::anyhow!("{d}")
}

/// The pins of everything the recipe pins itself.
fn inline_pins(recipe: &Recipe) -> Pins {
    let mut pins = Pins::default();
    for (name, tc) in &recipe.toolchains {
        if let Some(d) = tc.reference.pinned() {
            pins.toolchains.insert(name.clone(), d);
        }
    }
    for (name, d) in &recipe.data {
        if let TreeRef::Pinned(t) = &d.reference {
            pins.data.insert(name.clone(), *t);
        }
    }
    for (name, c) in &recipe.code {
        if let TreeRef::Pinned(t) = &c.reference {
            pins.code.insert(name.clone(), *t);
        }
    }
    pins
}

fn insert_pin(pins: &mut Pins, kind: Kind, name: &str, digest: Hash) {
    let name = name.to_string();
    match kind {
        Kind::Toolchain => {
            pins.toolchains.insert(name, ImageDigest::from_hash(digest));
        }
        Kind::Data => {
            pins.data.insert(name, TreeDigest::from_hash(digest));
        }
        Kind::Code => {
            pins.code.insert(name, TreeDigest::from_hash(digest));
        }
    }
}

fn pin_of(pins: &Pins, kind: Kind, name: &str) -> Option<Hash> {
    match kind {
        Kind::Toolchain => pins.toolchains.get(name).map(|d| d.hash()),
        Kind::Data => pins.data.get(name).map(|d| d.hash()),
        Kind::Code => pins.code.get(name).map(|d| d.hash()),
    }
}

/// Resolve every floating reference of `recipe` (snapshot folders, import
/// image archives) and return the pins with the lock that records them.
pub async fn resolve(engine: &Arc<Engine>, recipe: &Recipe) -> Result<(Pins, Lock)> {
    let mut pins = inline_pins(recipe);
    let mut resolved = Pins::default();
    for f in recipe.floating() {
        let digest = resolve_one(engine, recipe, &f).await?;
        insert_pin(&mut pins, f.kind, &f.name, digest);
        insert_pin(&mut resolved, f.kind, &f.name, digest);
    }
    let lock = recipe.lock_with(&repro_recipes::Resolved {
        toolchains: resolved.toolchains,
        data: resolved.data,
        code: resolved.code,
    });
    Ok((pins, lock))
}

/// `--locked`: the lock's pins, refusing anything unpinned. A pinned object
/// that the store lacks (a fresh store) is resolved from its floating
/// reference and must come out exactly as the lock says.
pub async fn resolve_locked(engine: &Arc<Engine>, recipe: &Recipe) -> Result<Pins> {
    let lock_path = recipe.lock_path();
    let lock = Lock::read(&lock_path)?;
    let pins = recipe.pins_from(lock.as_ref())?;
    let store = engine.store();
    for f in recipe.floating() {
        let Some(want) = pin_of(&pins, f.kind, &f.name) else {
            continue;
        };
        let present = match f.kind {
            Kind::Toolchain => store.get_image(&ImageDigest::from_hash(want)).is_ok(),
            Kind::Data | Kind::Code => store
                .tree_is_complete(&TreeDigest::from_hash(want))
                .unwrap_or(false),
        };
        if present {
            continue;
        }
        let got = resolve_one(engine, recipe, &f).await?;
        if got != want {
            return Err(UserError(format!(
                "`{}` no longer matches `{}`: the lock pins {want}, but {} now gives {got}\nhint: run `repro lock {}` to accept the change, or restore the input",
                f.key,
                lock_path.display(),
                f.reference,
                recipe.path.display(),
            ))
            .into());
        }
    }
    Ok(pins)
}

/// Everything a finished build produced.
pub struct Built {
    /// The per-step results.
    pub report: BuildReport,
    /// The signed record, when every step succeeded.
    pub record: Option<(RecordDigest, Statement)>,
    /// The plan that ran (none when the build memo gave every result):
    /// returned rather than dropped so that the command can leave it for
    /// the process's exit to free (see `build_cmd`).
    #[allow(dead_code)] // held, never read
    pub plan: Option<Plan>,
}

/// Plan `recipe` on `graph` (from [`crate::engine::check_graph`]), run it
/// and, if it succeeds, sign and store a record.
///
/// First, before any step runs: a version keeps naming the inputs it was
/// first built from, so building `name@version` from other inputs than its
/// records were built from is refused ([`check_version`], exit 2). The
/// store checks again as it adds the record, under its records lock, so of
/// two builds racing to make the first record of a version from different
/// inputs, the second to finish is refused (its steps ran; their results
/// stay in the action cache).
///
/// When reading the cache, a build of a recipe that is byte for byte what a
/// previous successful build built, with the same inputs, takes that
/// build's results from its memo (see the `memo` module) instead of planning and
/// looking up every step; whether everything those results name is still
/// in the store is checked on a second thread while the record is made,
/// and the record is stored only once the check has passed (else the build
/// runs as if there were no memo). Every successful build that ran or
/// looked up its steps writes the memo.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    engine: &Arc<Engine>,
    recipe: &Recipe,
    graph: repro_dag::Graph,
    lock_bytes: Option<&[u8]>,
    pins: &Pins,
    opts: BuildOptions,
    key: &SigningKey,
) -> Result<Built> {
    let store = engine.store();
    check_version(&store, recipe, lock_bytes, pins)?;
    check_inputs(&store, pins).await?;
    let memo_key = memo::key(recipe, pins, engine.backend().name())?;
    if opts.read_cache {
        if let Some(m) = memo::load(&store, recipe, &memo_key, graph.len(), graph.topo_order()) {
            let started = repro_evidence::clock::now();
            let check = {
                let store = Arc::clone(&store);
                std::thread::spawn(move || store.check_intact(&memo_key, &m.blobs))
            };
            let report = BuildReport { steps: m.steps };
            let sealed = seal(engine, recipe, lock_bytes, pins, &report, started, key).await;
            match check.join() {
                Ok(Ok(_)) => {
                    let (statement, bytes) = sealed?;
                    engine.replay(&report);
                    let digest = store_record(&store, recipe, lock_bytes, pins, key, &bytes)?;
                    return Ok(Built {
                        report,
                        record: Some((digest, statement)),
                        plan: None,
                    });
                }
                Ok(Err(e)) => engine.reporter().event(&crate::events::Event::Warning(format!(
                    "the results of the last build are not taken at once: {e}; looking up every step"
                ))),
                Err(_) => engine.note("the check of the build memo panicked; looking up every step".into()),
            }
        }
    }
    let plan = Plan::with_graph(recipe, pins, graph)?;
    let started = repro_evidence::clock::now();
    let report = engine.run(&plan, opts).await?;
    if !report.ok() {
        return Ok(Built {
            report,
            record: None,
            plan: Some(plan),
        });
    }
    let (statement, bytes) = seal(engine, recipe, lock_bytes, pins, &report, started, key).await?;
    let digest = store_record(&store, recipe, lock_bytes, pins, key, &bytes)?;
    if opts.write_cache {
        // The memo only saves time: a build that cannot write one still
        // succeeded.
        if let Err(e) = memo::save(&store, recipe, &memo_key, &report) {
            engine.note(format!("cannot remember this build for the next: {e:#}"));
        }
    }
    Ok(Built {
        report,
        record: Some((digest, statement)),
        plan: Some(plan),
    })
}

/// Check that every pinned input (toolchain image, data snapshot, code
/// tree) is whole in the store before anything is built on it or a record
/// vouches for it: every blob present and intact, re-hashed unless its
/// stamp from an earlier check vouches for it (see
/// [`repro_store::intact`]). A cached build reads none of these blobs, so
/// without this check it would sign a record over a missing or altered
/// snapshot. The error (exit 3) names the input and the damaged blob.
async fn check_inputs(store: &Arc<Store>, pins: &Pins) -> Result<()> {
    let store = Arc::clone(store);
    let pins = pins.clone();
    tokio::task::spawn_blocking(move || {
        let hint = "hint: if its folder still holds it, `repro lock` (or a build without `--locked`) takes it again; otherwise restore it with `repro pull` or `repro import` of a version that has it";
        for (name, d) in &pins.toolchains {
            let check = || -> repro_store::Result<_> {
                let info = store.get_image(d)?;
                let mut blobs = vec![repro_store::BlobDigest::from_hash(d.hash()), info.config];
                blobs.extend(info.layers.iter().map(|l| l.digest));
                store.check_intact(&d.hash(), &blobs)
            };
            check().with_context(|| {
                format!("toolchain `{name}` ({d}) is damaged in the store\n{hint}")
            })?;
        }
        let trees = pins
            .data
            .iter()
            .map(|(n, d)| ("data", n, d))
            .chain(pins.code.iter().map(|(n, d)| ("code", n, d)));
        for (kind, name, d) in trees {
            let check = || store.check_intact(&d.hash(), &store.tree_blobs(d)?);
            check().with_context(|| {
                format!("{kind} snapshot `{kind}.{name}` ({d}) is damaged in the store\n{hint}")
            })?;
        }
        anyhow::Ok(())
    })
    .await?
}

/// The statement of the successful build `report` (started at `started`,
/// finishing now) and its signed envelope as stored: everything of a
/// record short of writing it.
async fn seal(
    engine: &Arc<Engine>,
    recipe: &Recipe,
    lock_bytes: Option<&[u8]>,
    pins: &Pins,
    report: &BuildReport,
    started: String,
    key: &SigningKey,
) -> Result<(Statement, Vec<u8>)> {
    let finished = repro_evidence::clock::now();
    let store = engine.store();
    let recipe_digest = recipe.digest;
    let lock_digest = lock_bytes.map(|b| repro_store::BlobDigest::from_hash(Hash::of(b)));
    let backend = engine.backend_description().await;
    let statement = statement(
        &store,
        recipe,
        recipe_digest,
        lock_digest,
        pins,
        report,
        backend,
        started,
        finished,
    )?;
    let payload = serde_json::to_vec(&statement)?;
    let envelope = keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
    let bytes = envelope.to_vec_pretty()?;
    Ok((statement, bytes))
}

/// Refuse to build `name@version` of `recipe` from other inputs than the
/// version's records were built from (see [`Inputs`]): a user error (exit
/// 2) naming the version, its record and each input that differs, with a
/// hint to bump the version. Nothing to check for a version without a
/// record.
pub fn check_version(
    store: &Store,
    recipe: &Recipe,
    lock_bytes: Option<&[u8]>,
    pins: &Pins,
) -> Result<()> {
    let (name, version) = (&recipe.model.name, &recipe.model.version);
    let now = Inputs::new(
        recipe.digest,
        lock_bytes.map(|b| repro_store::BlobDigest::from_hash(Hash::of(b))),
        pins,
    );
    let path = recipe.path.display().to_string();
    let Some((record, diffs)) = repro_evidence::record::conflict(
        store,
        name,
        version,
        &now,
        &path,
        ("in the record", "now"),
    )?
    else {
        return Ok(());
    };
    let mut msg = format!(
        "cannot build `{name}@{version}` from other inputs than its record {record} was built from:"
    );
    for d in diffs {
        msg.push_str(&format!("\n  - {d}"));
    }
    msg.push_str(&format!(
        "\nhint: a version keeps naming the inputs it was first built from; bump `version` in `[model]` of `{path}` (or give another `--version`) to build these inputs as a new version, or restore the inputs of `{name}@{version}`; a version with `{{inputs}}` or `{{data}}` in it, such as `--version '1.1.0+data.{{data}}'`, names new inputs by itself"
    ));
    Err(UserError(msg).into())
}

/// The version a build gets: a template (`repro build --version`, else
/// the recipe's `model.version`) with the date the build started on, from
/// [`version_of`]; [`BuildVersion::expand`] fills it in once the inputs are
/// resolved.
#[derive(Debug, Clone)]
pub struct BuildVersion {
    template: VersionTemplate,
    from_flag: bool,
    /// `{date}`'s value, when the template has it.
    date: Option<String>,
}

/// The build's version template: `flag` (`--version`) when given, else
/// `model.version`. Refused (exit 2) before anything is resolved: an
/// unknown placeholder or a stray brace in `flag` (the recipe's are
/// refused as it is parsed), a template whose expansions are not valid
/// versions (non-empty; letters, digits and `._-+`; not starting with `.`;
/// at most 200 bytes: a path component of the store, as
/// [`repro_evidence::version::valid_name`] says, without `@`, which the
/// recipe refuses), and a `SOURCE_DATE_EPOCH` that is not a time when the
/// template has `{date}`. Each message names where the template came from:
/// `--version`, or the recipe's file, line, column and key.
pub fn version_of(recipe: &Recipe, flag: Option<&str>) -> Result<BuildVersion> {
    let text = flag.unwrap_or(&recipe.model.version);
    let hint = format!(
        "a version is made of letters, digits and `._-+`, does not start with `.` and is at most 200 bytes; its placeholders are {}, e.g. `1.1.{{date}}` or `2.0.0+data.{{data}}`",
        repro_recipes::placeholders_help()
    );
    let refuse = |why: String| -> anyhow::Error {
        if flag.is_some() {
            UserError(format!("`--version {text}` {why}\nhint: {hint}")).into()
        } else {
            repro_recipes::Error::from(
                repro_recipes::Diagnostic::new(
                    &recipe.path,
                    format!("model version `{text}` {why}"),
                )
                .at(recipe.model.version_location)
                .key("model.version")
                .hint(hint.clone()),
            )
            .into()
        }
    };
    let template = VersionTemplate::parse(text)
        .map_err(|why| refuse(format!("is not a valid template: {why}")))?;
    let sample = template.sample();
    // `@` is a path component's but not a version's (the recipe refuses it).
    let bad = sample
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-+".contains(*c)));
    let problem = match bad {
        Some(c) => Some(format!("it contains `{}`", c.escape_default())),
        None => repro_evidence::version::name_problem(&sample).map(str::to_string),
    };
    if let Some(why) = problem {
        let what = if template.is_plain() {
            "is not a valid version".to_string()
        } else {
            format!("does not give valid versions (`{sample}` for instance)")
        };
        return Err(refuse(format!("{what}: {why}")));
    }
    let date = if template.uses(Placeholder::Date) {
        Some(repro_evidence::clock::build_date()?)
    } else {
        None
    };
    Ok(BuildVersion {
        template,
        from_flag: flag.is_some(),
        date,
    })
}

impl BuildVersion {
    /// The version of a build of `recipe` (its exact bytes) from `pins`:
    /// `{date}` the build's date, `{inputs}` the first 12 hex digits of
    /// the [`Inputs::digest`] (what [`check_version`] compares), `{data}`
    /// those of [`data_digest`].
    pub fn expand(&self, recipe: &Recipe, pins: &Pins) -> String {
        self.template.expand(|p| match p {
            Placeholder::Date => self.date.clone().unwrap_or_default(),
            Placeholder::Inputs => {
                Inputs::new(recipe.digest, None, pins).digest().hex()[..12].to_string()
            }
            Placeholder::Data => data_digest(pins).hex()[..12].to_string(),
        })
    }

    /// Whether the version is not the recipe's `model.version` as written
    /// (it was given with `--version`, or has placeholders).
    pub fn is_derived(&self) -> bool {
        self.from_flag || !self.template.is_plain()
    }
}

/// The digest of the data snapshots alone, which `{data}` shows: SHA-256
/// of the JSON object of every data snapshot's name and tree digest
/// (`{"train":"sha256:..."}`, names sorted, no spaces; `{}` without data).
pub fn data_digest(pins: &Pins) -> Hash {
    let data: BTreeMap<&str, String> = pins
        .data
        .iter()
        .map(|(n, d)| (n.as_str(), d.to_string()))
        .collect();
    // A map of strings always serializes.
    Hash::of(&serde_json::to_vec(&data).unwrap_or_default())
}

/// Store a record (`bytes`, from [`seal`]) with what it refers to: the
/// recipe, the lock and the signing key's public half. A record refused
/// because the version was meanwhile recorded from other inputs (another
/// build won the race) is the user error of [`check_version`].
fn store_record(
    store: &Store,
    recipe: &Recipe,
    lock_bytes: Option<&[u8]>,
    pins: &Pins,
    key: &SigningKey,
    bytes: &[u8],
) -> Result<RecordDigest> {
    put_if_absent(store, recipe.source.as_bytes())?;
    if let Some(b) = lock_bytes {
        put_if_absent(store, b)?;
    }
    keys::publish(store, &key.verifying_key())?;
    let (name, version) = (&recipe.model.name, &recipe.model.version);
    let inputs = Inputs::new(
        recipe.digest,
        lock_bytes.map(|b| repro_store::BlobDigest::from_hash(Hash::of(b))),
        pins,
    )
    .digest();
    match store.put_record_of_inputs(
        bytes,
        name,
        version,
        inputs,
        &repro_evidence::record::inputs_of,
    ) {
        Ok(d) => Ok(d),
        Err(e @ repro_store::Error::VersionInputsDiffer(_)) => {
            check_version(store, recipe, lock_bytes, pins)?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Store `bytes` unless the store holds them already (re-hashed to be
/// sure): a rebuild of an unchanged recipe then writes and fsyncs nothing.
fn put_if_absent(store: &Store, bytes: &[u8]) -> Result<repro_store::BlobDigest> {
    let d = repro_store::BlobDigest::from_hash(Hash::of(bytes));
    match store.verify_blob(&d) {
        Ok(_) => Ok(d),
        Err(_) => Ok(store.put_bytes(bytes)?),
    }
}

#[allow(clippy::too_many_arguments)]
fn statement(
    store: &Store,
    recipe: &Recipe,
    recipe_digest: repro_store::BlobDigest,
    lock_digest: Option<repro_store::BlobDigest>,
    pins: &Pins,
    report: &BuildReport,
    backend: String,
    started: String,
    finished: String,
) -> Result<Statement> {
    let mut subject = Vec::new();
    let mut byproducts = Vec::new();
    for s in &report.steps {
        let output = s.output.context("a finished step has no output")?;
        let key = s.key.context("a finished step has no key")?;
        let files = s.files(store)?.context("a finished step has no output")?;
        for (path, entry) in files.iter() {
            if let repro_store::FileEntry::File { digest, .. } = entry {
                subject.push(ResourceDescriptor::sha256(
                    format!("{}/{path}", s.name),
                    digest,
                ));
            }
        }
        let mut b = ResourceDescriptor::sha256(format!("steps.{}", s.name), output)
            .with("stepKey", key.to_string())
            .with("cached", s.status == StepStatus::Cached)
            .with("durationMs", s.duration.as_millis() as u64);
        if let Some(log) = s.log {
            b = b.with("log", log.to_string());
        }
        // Where it ran, when not here (a Slurm job and its node): evidence
        // of the build, not an input of the step.
        if let Some(on) = &s.ran_on {
            b = b.with("ranOn", on);
        }
        // Attempts that a node failure ended before this one: the trail of
        // the build, so a retried step is visible in the signed record.
        if !s.retries.is_empty() {
            b = b.with("earlierAttempts", &s.retries);
        }
        byproducts.push(b);
    }
    let mut deps = vec![ResourceDescriptor::sha256("recipe", recipe_digest)];
    if let Some(l) = lock_digest {
        deps.push(ResourceDescriptor::sha256("lock", l));
    }
    // Each input's `uri` means the same on any machine: the content
    // address a repro store or bundle holds it under (`urn:repro:image:` /
    // `urn:repro:tree:` and its SHA-256), or the registry reference it is
    // pulled by. Where it came from on the build machine (a path relative to
    // the recipe, a Docker tag) is only an annotation.
    for (name, d) in &pins.toolchains {
        let info = store.get_image(d)?;
        let mut r = ResourceDescriptor::sha256(format!("toolchains.{name}"), d)
            .with("config", info.config.to_string());
        r.uri = Some(format!("{IMAGE_URI_PREFIX}{d}"));
        if let Some(tc) = recipe.toolchains.get(name) {
            match &tc.reference {
                ImageRef::Archive(p) => r = r.with("path", p.display().to_string()),
                ImageRef::Tag(t) => r = r.with("dockerTag", t),
                ImageRef::Registry { repository, digest } => {
                    r.uri = Some(format!("oci://{repository}@{digest}"))
                }
                ImageRef::Pinned(_) => {}
            }
        }
        deps.push(r);
    }
    for (name, d) in &pins.data {
        let mut r = ResourceDescriptor::sha256(format!("data.{name}"), d);
        r.uri = Some(format!("{TREE_URI_PREFIX}{d}"));
        if let Some(ds) = recipe.data.get(name) {
            if let Some(desc) = &ds.description {
                r = r.with("description", desc);
            }
            if let Some(src) = &ds.source {
                r = r.with("source", src);
            }
            if let TreeRef::Path(p) = &ds.reference {
                r = r.with("path", p.display().to_string());
            }
        }
        deps.push(r);
    }
    for (name, d) in &pins.code {
        let mut r = ResourceDescriptor::sha256(format!("code.{name}"), d);
        r.uri = Some(format!("{TREE_URI_PREFIX}{d}"));
        if let Some(c) = recipe.code.get(name) {
            if let Some(g) = &c.git_commit {
                r = r.with("gitCommit", g);
            }
            if let TreeRef::Path(p) = &c.reference {
                r = r.with("path", p.display().to_string());
            }
        }
        deps.push(r);
    }
    let mut invocation = [0u8; 16];
    getrandom::getrandom(&mut invocation)?;
    Ok(Statement {
        type_: STATEMENT_TYPE.into(),
        subject,
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: ExternalParameters {
                    recipe: recipe.path.display().to_string(),
                    recipe_digest,
                    lock_digest,
                    name: recipe.model.name.clone(),
                    version: recipe.model.version.clone(),
                },
                internal_parameters: InternalParameters {
                    sandbox_policy_version: repro_sandbox::POLICY_VERSION,
                    platform: Platform::detect(backend),
                },
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: Builder {
                    id: BUILDER_ID.into(),
                    version: BTreeMap::from([(
                        "repro".to_string(),
                        env!("CARGO_PKG_VERSION").to_string(),
                    )]),
                },
                metadata: Metadata {
                    invocation_id: hex::encode(invocation),
                    started_on: started,
                    finished_on: finished,
                },
                byproducts,
            },
        },
    })
}

impl Engine {
    /// Report a note.
    pub fn note(&self, text: String) {
        self.reporter().event(&Event::Note(text));
    }
}

/// Pull by digest every toolchain image that the recipe names as
/// `host/repo@sha256:...` and the store lacks (re-hashed before it becomes
/// visible).
pub async fn fetch_registry_images(engine: &Arc<Engine>, recipe: &Recipe) -> Result<()> {
    let store = engine.store();
    for (name, tc) in &recipe.toolchains {
        let ImageRef::Registry { repository, digest } = &tc.reference else {
            continue;
        };
        if store.get_image(digest).is_ok() {
            continue;
        }
        engine.note(format!(
            "pulling image {digest} of `toolchains.{name}` from `{repository}`"
        ));
        let source = engine.image_source().ok_or_else(|| {
            UserError(format!(
                "`toolchains.{name}` names an image in the registry `{repository}`, and this command has no registry client"
            ))
        })?;
        source
            .pull_image(&store, repository, digest)
            .await
            .with_context(|| format!("pulling the image of `toolchains.{name}`"))?;
    }
    Ok(())
}
