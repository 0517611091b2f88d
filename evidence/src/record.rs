//! Build records: an in-toto Statement (v1) with an SLSA provenance (v1)
//! predicate, signed in a DSSE envelope.
//!
//! The statement's subjects are the output files (`<step>/<path>` with their
//! SHA-256). The predicate's `buildDefinition` holds the recipe and lock
//! digests and every resolved input; `runDetails.byproducts` holds one entry
//! per step with its key and output tree; the platform sits in
//! `internalParameters`.
//!
//! A resolved input's `uri` means the same wherever the record goes: its
//! content address (`urn:repro:image:sha256:<hex>`,
//! `urn:repro:tree:sha256:<hex>`) or its registry reference (`oci://`); the
//! path on the build machine is the annotation `path`. Records written
//! before held `file:<path>` and `docker:<tag>` URIs; nothing reads an
//! input's identity from its `uri` (the name and digest are the identity),
//! so they read and verify as before ([`ResourceDescriptor::origin`] shows
//! either shape).

use std::collections::{BTreeMap, BTreeSet};

use repro_recipes::Pins;
use repro_store::{BlobDigest, Hash, RecordDigest, StepKey, Store, TreeDigest};
use serde::{Deserialize, Serialize};

use std::path::Path;

use anyhow::{Context as _, Result};
use ed25519_dalek::VerifyingKey;

use crate::exit::{CannotVerify, UserError};
use crate::keys::{self, Envelope};
use crate::platform::Platform;

/// The statement type of in-toto v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The build type of a `repro` build.
pub const BUILD_TYPE: &str = "urn:repro:build:v1";
/// The builder id of the `repro` runner.
pub const BUILDER_ID: &str = "urn:repro:runner";
/// The `uri` of a toolchain image in `resolvedDependencies`: this prefix and
/// its manifest digest (`sha256:<hex>`), the address a store or bundle keeps
/// it under. An image pulled from a registry has its `oci://` reference
/// instead.
pub const IMAGE_URI_PREFIX: &str = "urn:repro:image:";
/// The `uri` of a data snapshot or code tree in `resolvedDependencies`: this
/// prefix and its tree digest (`sha256:<hex>`).
pub const TREE_URI_PREFIX: &str = "urn:repro:tree:";

/// An in-toto Statement v1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The output files.
    pub subject: Vec<ResourceDescriptor>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The provenance.
    pub predicate: Provenance,
}

/// An in-toto resource descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceDescriptor {
    /// What it is.
    pub name: String,
    /// Digests by algorithm (`sha256` -> hex).
    pub digest: BTreeMap<String, String>,
    /// Where it came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Extra facts.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub annotations: serde_json::Map<String, serde_json::Value>,
}

impl ResourceDescriptor {
    /// A descriptor with a SHA-256 digest given as `sha256:<hex>` or bare hex.
    pub fn sha256(name: impl Into<String>, digest: impl std::fmt::Display) -> Self {
        let d = digest.to_string();
        let hex = d.strip_prefix("sha256:").unwrap_or(&d).to_string();
        ResourceDescriptor {
            name: name.into(),
            digest: BTreeMap::from([("sha256".to_string(), hex)]),
            uri: None,
            annotations: serde_json::Map::new(),
        }
    }

    /// The SHA-256 digest, if it has one that parses.
    pub fn hash(&self) -> Option<Hash> {
        Hash::from_hex(self.digest.get("sha256")?).ok()
    }

    /// The SHA-256 digest as `sha256:<hex>`.
    pub fn sha256_text(&self) -> Option<String> {
        self.digest.get("sha256").map(|h| format!("sha256:{h}"))
    }

    /// Where an input came from, for people: `file:<path>` (as the recipe
    /// gave it, relative to the recipe on the machine that built; the
    /// annotation `path`), `docker:<tag>` (the annotation `dockerTag`), or
    /// the `uri` when it is more than a content address (`oci://...`).
    /// Records written before inputs had content-address URIs held
    /// `file:<path>` and `docker:<tag>` in `uri` itself: read as they are.
    pub fn origin(&self) -> Option<String> {
        let text = |k: &str| self.annotations.get(k).and_then(|v| v.as_str());
        if let Some(p) = text("path") {
            return Some(format!("file:{p}"));
        }
        if let Some(t) = text("dockerTag") {
            return Some(format!("docker:{t}"));
        }
        self.uri.clone().filter(|u| !u.starts_with("urn:repro:"))
    }

    /// Add an annotation.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.annotations.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or_default(),
        );
        self
    }
}

/// SLSA provenance v1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// What was built from what.
    pub build_definition: BuildDefinition,
    /// Who built it, when, and the per-step results.
    pub run_details: RunDetails,
}

/// SLSA `buildDefinition`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// Always [`BUILD_TYPE`].
    pub build_type: String,
    /// The recipe and the model it describes.
    pub external_parameters: ExternalParameters,
    /// Settings of the runner that a user does not choose in the recipe.
    pub internal_parameters: InternalParameters,
    /// Every input: recipe, lock, images, data snapshots, code trees.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// What the user asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalParameters {
    /// The recipe path as given (informational).
    pub recipe: String,
    /// Digest of the recipe's bytes; the bytes are in the store.
    pub recipe_digest: BlobDigest,
    /// Digest of the lock file's bytes, if there was one.
    pub lock_digest: Option<BlobDigest>,
    /// The model's name.
    pub name: String,
    /// The model's version.
    pub version: String,
}

/// Runner settings and platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalParameters {
    /// The sandbox contract version.
    pub sandbox_policy_version: u32,
    /// The machine.
    pub platform: Platform,
}

/// SLSA `runDetails`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    /// The runner.
    pub builder: Builder,
    /// Timing and the signing identity.
    pub metadata: Metadata,
    /// One entry per step: name `steps.<name>`, digest = output tree,
    /// annotations `stepKey`, `cached`, `log`, `durationMs`.
    pub byproducts: Vec<ResourceDescriptor>,
}

/// SLSA `builder`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Builder {
    /// Always [`BUILDER_ID`].
    pub id: String,
    /// `{"repro": "<version>"}`.
    pub version: BTreeMap<String, String>,
}

/// SLSA `metadata`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// A random id for this build.
    pub invocation_id: String,
    /// RFC 3339.
    pub started_on: String,
    /// RFC 3339.
    pub finished_on: String,
}

/// One step as the record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStep {
    /// The step's name.
    pub name: String,
    /// Its key.
    pub key: StepKey,
    /// Its output tree.
    pub output: TreeDigest,
    /// Its log (stdout and stderr), when the record names one.
    pub log: Option<repro_store::BlobDigest>,
}

impl Statement {
    /// The steps, in record order. A step entry (a byproduct named
    /// `steps.<name>`) without a well-formed step key and output digest is
    /// an error naming it, never skipped.
    pub fn steps(&self) -> Result<Vec<RecordedStep>, CannotVerify> {
        let mut out = Vec::new();
        for b in &self.predicate.run_details.byproducts {
            let Some(name) = b.name.strip_prefix("steps.") else {
                continue;
            };
            let bad = |what: &str| {
                CannotVerify(format!(
                    "the record's entry of step `{name}` has no well-formed {what}"
                ))
            };
            let key = b
                .annotations
                .get("stepKey")
                .and_then(|k| k.as_str())
                .and_then(|k| k.parse().ok())
                .ok_or_else(|| bad("step key (annotation `stepKey`)"))?;
            let output =
                TreeDigest::from_hash(b.hash().ok_or_else(|| bad("output digest (sha256)"))?);
            let log = b
                .annotations
                .get("log")
                .and_then(|l| l.as_str())
                .and_then(|l| l.parse().ok());
            out.push(RecordedStep {
                name: name.to_string(),
                key,
                output,
                log,
            });
        }
        Ok(out)
    }

    /// Check the fixed type fields.
    pub fn check_types(&self) -> Result<(), String> {
        if self.type_ != STATEMENT_TYPE {
            return Err(format!(
                "statement type is `{}`, expected `{STATEMENT_TYPE}`",
                self.type_
            ));
        }
        if self.predicate_type != PREDICATE_TYPE {
            return Err(format!(
                "predicate type is `{}`, expected `{PREDICATE_TYPE}`",
                self.predicate_type
            ));
        }
        if self.predicate.build_definition.build_type != BUILD_TYPE {
            return Err(format!(
                "build type is `{}`, expected `{BUILD_TYPE}`",
                self.predicate.build_definition.build_type
            ));
        }
        Ok(())
    }
}

/// What a build of a version was made from, the identity a version label
/// keeps: the recipe (its exact bytes) and every resolved input (toolchain
/// images, data snapshots, code trees, whether pinned in the recipe or by
/// the lock).
///
/// Two builds have identical inputs when their recipe digests are equal and
/// they resolved every input to the same digest ([`Inputs::digest`]). The
/// lock file's digest is not compared itself: what a lock pins is in the
/// resolved inputs, and with the recipe fixed the lock a build can use is
/// fixed by them (its entries must match the recipe's references), so
/// comparing them is comparing the lock's meaning. This makes a recipe with
/// no floating input (no lock; or a stale `model.lock` beside it that a
/// `--locked` build reads) and a lock rewritten with other formatting the
/// same inputs, as they are. The lock digest is kept to be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The recipe's bytes.
    pub recipe: BlobDigest,
    /// The lock file's bytes, when there was one (shown, not compared).
    pub lock: Option<BlobDigest>,
    /// Every input: `toolchains.NAME`, `data.NAME` or `code.NAME` -> `sha256:...`.
    pub pins: BTreeMap<String, Hash>,
}

impl Inputs {
    /// The inputs a build is about to use.
    pub fn new(recipe: BlobDigest, lock: Option<BlobDigest>, pins: &Pins) -> Inputs {
        let mut all = BTreeMap::new();
        for (n, d) in &pins.toolchains {
            all.insert(format!("toolchains.{n}"), d.hash());
        }
        for (n, d) in &pins.data {
            all.insert(format!("data.{n}"), d.hash());
        }
        for (n, d) in &pins.code {
            all.insert(format!("code.{n}"), d.hash());
        }
        Inputs {
            recipe,
            lock,
            pins: all,
        }
    }

    /// The inputs a record says it was built from.
    pub fn of_statement(s: &Statement) -> Inputs {
        let def = &s.predicate.build_definition;
        let pins = def
            .resolved_dependencies
            .iter()
            .filter(|d| {
                ["toolchains.", "data.", "code."]
                    .iter()
                    .any(|p| d.name.starts_with(p))
            })
            .filter_map(|d| Some((d.name.clone(), d.hash()?)))
            .collect();
        Inputs {
            recipe: def.external_parameters.recipe_digest,
            lock: def.external_parameters.lock_digest,
            pins,
        }
    }

    /// The digest that two builds share exactly when their inputs are
    /// identical: SHA-256 of `{"pins":{...},"recipe":"sha256:..."}` (keys
    /// sorted, no spaces).
    pub fn digest(&self) -> Hash {
        let doc = serde_json::json!({ "recipe": self.recipe, "pins": self.pins });
        Hash::of(doc.to_string().as_bytes())
    }

    /// One line per difference from `was` (the version's record) to `self`:
    /// the recipe, each input added, removed or changed, and the lock when
    /// anything else differs. Each line shows both digests as `<was> <then>,
    /// <self> <now>` with the words of `labels` (`("in the record", "now")`).
    pub fn differences(
        &self,
        was: &Inputs,
        recipe_path: &str,
        labels: (&str, &str),
    ) -> Vec<String> {
        let (then_label, now_label) = labels;
        let mut out = Vec::new();
        if self.recipe != was.recipe {
            out.push(format!(
                "the recipe `{recipe_path}`: {} {then_label}, {} {now_label}",
                was.recipe, self.recipe
            ));
        }
        let names: BTreeSet<&String> = was.pins.keys().chain(self.pins.keys()).collect();
        for name in names {
            let (then, now) = (was.pins.get(name), self.pins.get(name));
            if then == now {
                continue;
            }
            let what = match name.split_once('.') {
                Some(("toolchains", n)) => format!("toolchain `{n}`"),
                Some((kind, n)) => format!("{kind} `{n}`"),
                None => format!("`{name}`"),
            };
            let show = |d: Option<&Hash>| d.map_or("none".to_string(), |d| d.to_string());
            out.push(format!(
                "{what}: {} {then_label}, {} {now_label}",
                show(then),
                show(now)
            ));
        }
        if !out.is_empty() && self.lock != was.lock {
            let show =
                |d: &Option<BlobDigest>| d.map_or_else(|| "no lock".to_string(), |d| d.to_string());
            out.push(format!(
                "the lock: {} {then_label}, {} {now_label}",
                show(&was.lock),
                show(&self.lock)
            ));
        }
        out
    }
}

/// The statement of a record envelope, read without checking its
/// signature (for what it names, not for whether to trust it).
pub fn statement_of(envelope: &[u8]) -> anyhow::Result<Statement> {
    let s: Statement = keys::unverified_payload(envelope)?;
    s.check_types().map_err(anyhow::Error::msg)?;
    Ok(s)
}

/// The store's [`repro_store::InputsOf`] for `repro` records: the
/// [`Inputs::digest`] of the record's statement.
pub fn inputs_of(envelope: &[u8]) -> repro_store::Result<Hash> {
    statement_of(envelope)
        .map(|s| Inputs::of_statement(&s).digest())
        .map_err(|e| repro_store::Error::Malformed {
            what: "record",
            digest: Hash::of(envelope).to_string(),
            why: format!("{e:#}"),
        })
}

/// The record whose inputs `name@version` names (its latest record, else
/// the first of its other records that reads) with its statement; `None`
/// when the version has no record.
pub fn version_record(
    store: &Store,
    name: &str,
    version: &str,
) -> anyhow::Result<Option<(RecordDigest, Statement)>> {
    use anyhow::Context as _;
    let mut candidates = Vec::new();
    match store.resolve_record(name, version) {
        Ok(d) => candidates.push(d),
        Err(repro_store::Error::UnknownVersion { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for d in store.records_of(name, version)? {
        if !candidates.contains(&d) {
            candidates.push(d);
        }
    }
    let mut first_err = None;
    for d in candidates {
        let read = store
            .get_record(&d)
            .map_err(anyhow::Error::from)
            .and_then(|b| statement_of(&b));
        match read {
            Ok(s) => return Ok(Some((d, s))),
            Err(e) => {
                first_err.get_or_insert((d, e));
            }
        }
    }
    match first_err {
        None => Ok(None),
        Some((d, e)) => Err(e).with_context(|| {
            format!("cannot tell what `{name}@{version}` was built from: its record `{d}` cannot be read")
        }),
    }
}

/// When `name@version` has a record built from other inputs than `now`:
/// that record and one line per difference (see [`Inputs::differences`],
/// which `labels` is passed to).
pub fn conflict(
    store: &Store,
    name: &str,
    version: &str,
    now: &Inputs,
    recipe_path: &str,
    labels: (&str, &str),
) -> anyhow::Result<Option<(RecordDigest, Vec<String>)>> {
    // The version's history keeps each record's inputs digest: when it
    // matches, no record need be read (a record of many steps is
    // megabytes).
    match store.recorded_inputs(name, version, &inputs_of)? {
        None => return Ok(None),
        Some((_, was)) if was == now.digest() => return Ok(None),
        Some(_) => {}
    }
    let Some((record, statement)) = version_record(store, name, version)? else {
        return Ok(None);
    };
    let was = Inputs::of_statement(&statement);
    if was.digest() == now.digest() {
        return Ok(None);
    }
    Ok(Some((record, now.differences(&was, recipe_path, labels))))
}

/// A record, opened and checked.
pub struct OpenedRecord {
    /// Its digest (the SHA-256 of the envelope's bytes, wherever it came from).
    pub digest: RecordDigest,
    /// The statement.
    pub statement: Statement,
    /// The key that signed it.
    pub signed_by: String,
}

/// Find and open a record: a file holding a DSSE envelope, a record digest
/// (`sha256:...`), or `name@version`.
pub fn open_record(store: &Store, what: &str, trust: &[VerifyingKey]) -> Result<OpenedRecord> {
    let (bytes, digest) = if Path::new(what).is_file() {
        let b = std::fs::read(what).with_context(|| format!("cannot read `{what}`"))?;
        let d = RecordDigest::from_hash(repro_store::Hash::of(&b));
        (b, d)
    } else if what.starts_with("sha256:") || what.contains('@') {
        let d = resolve_record_ref(store, what)?;
        (store.get_record(&d).map_err(tamper_or_missing)?, d)
    } else {
        return Err(UserError(format!(
            "`{what}` is not a record file, a record digest or `name@version`\nhint: for example `repro verify breast-cancer-classifier@1.0.0`"
        ))
        .into());
    };
    let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
        CannotVerify(format!(
            "`{what}` is not a signed record (DSSE envelope): {e}"
        ))
    })?;
    let (payload, signed_by) = keys::open(&envelope, |id| {
        if trust.is_empty() {
            keys::lookup_in_store(store, id)
        } else {
            trust
                .iter()
                .find(|k| keys::key_id(k).to_string() == id)
                .copied()
        }
    })
    .map_err(|e| CannotVerify(format!("tampering detected in record `{what}`: {e}")))?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| CannotVerify(format!("the record's statement does not parse: {e}")))?;
    statement.check_types().map_err(CannotVerify)?;
    Ok(OpenedRecord {
        digest,
        statement,
        signed_by,
    })
}

/// A record digest (`sha256:...`) or `name@version`, resolved in the store.
pub fn resolve_record_ref(store: &Store, what: &str) -> Result<RecordDigest> {
    if what.starts_with("sha256:") {
        return Ok(what.parse().map_err(|e| UserError(format!("{e}")))?);
    }
    if !what.contains('@') {
        return Err(UserError(format!(
            "`{what}` is not a record digest or `name@version`\nhint: for example `breast-cancer-classifier@1.0.0`"
        ))
        .into());
    }
    let v = crate::VersionRef::parse(what)?;
    Ok(store.resolve_record(&v.name, &v.version)?)
}

fn tamper_or_missing(e: repro_store::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(CannotVerify(
        "the record in the store cannot be read".into(),
    ))
}

/// Pins recorded in a statement's resolved dependencies.
pub fn pins_of(statement: &Statement) -> Result<Pins> {
    let mut pins = Pins::default();
    for d in &statement.predicate.build_definition.resolved_dependencies {
        let Some(digest) = d.sha256_text() else {
            continue;
        };
        if let Some(n) = d.name.strip_prefix("toolchains.") {
            pins.toolchains.insert(n.to_string(), digest.parse()?);
        } else if let Some(n) = d.name.strip_prefix("data.") {
            pins.data.insert(n.to_string(), digest.parse()?);
        } else if let Some(n) = d.name.strip_prefix("code.") {
            pins.code.insert(n.to_string(), digest.parse()?);
        }
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use repro_store::{ImageDigest, TreeDigest};

    const NOW: (&str, &str) = ("in the record", "now");

    fn pins(data: &[u8]) -> Pins {
        let mut p = Pins::default();
        p.toolchains
            .insert("bb".into(), ImageDigest::from_hash(Hash::of(b"image")));
        p.data
            .insert("train".into(), TreeDigest::from_hash(Hash::of(data)));
        p
    }

    #[test]
    fn inputs_are_the_recipe_and_every_resolved_input_not_the_lock_bytes() {
        let recipe = BlobDigest::from_hash(Hash::of(b"recipe"));
        let lock = |b: &[u8]| Some(BlobDigest::from_hash(Hash::of(b)));
        let a = Inputs::new(recipe, lock(b"lock"), &pins(b"rows"));
        // The same pins from a lock with other bytes (or none): the same inputs.
        assert_eq!(
            a.digest(),
            Inputs::new(recipe, lock(b"# edited\nlock"), &pins(b"rows")).digest()
        );
        assert_eq!(
            a.digest(),
            Inputs::new(recipe, None, &pins(b"rows")).digest()
        );
        // Other data, or another recipe: other inputs, and each is named.
        let b = Inputs::new(recipe, lock(b"lock 2"), &pins(b"other rows"));
        assert_ne!(a.digest(), b.digest());
        let diff = b.differences(&a, "model.toml", NOW);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].starts_with("data `train`: "), "{diff:?}");
        assert!(diff[0].contains(&TreeDigest::from_hash(Hash::of(b"rows")).to_string()));
        assert!(diff[0].contains(&TreeDigest::from_hash(Hash::of(b"other rows")).to_string()));
        assert!(diff[1].starts_with("the lock: "), "{diff:?}");
        let c = Inputs::new(
            BlobDigest::from_hash(Hash::of(b"recipe 2")),
            lock(b"lock"),
            &pins(b"rows"),
        );
        assert_ne!(a.digest(), c.digest());
        let diff = c.differences(&a, "model.toml", NOW);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].starts_with("the recipe `model.toml`: "), "{diff:?}");
        // An input added or removed.
        let mut more = pins(b"rows");
        more.code
            .insert("src".into(), TreeDigest::from_hash(Hash::of(b"code")));
        let d = Inputs::new(recipe, None, &more);
        assert_eq!(
            d.differences(&a, "m.toml", NOW),
            [
                format!(
                    "code `src`: none in the record, {} now",
                    TreeDigest::from_hash(Hash::of(b"code"))
                ),
                format!(
                    "the lock: {} in the record, no lock now",
                    BlobDigest::from_hash(Hash::of(b"lock"))
                )
            ]
        );
    }
}
