//! `repro build` and `repro lock`: pin the inputs, run the plan, sign a record.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use repro_recipes::{ImageRef, Lock, Pins, Recipe, TreeRef};
use repro_store::{Ingest, RecordDigest, Store};

use crate::engine::{BuildOptions, BuildReport, Engine, Plan, StepStatus};
use crate::events::Event;
use crate::keys;
use crate::platform::Platform;
use crate::record::*;

/// Resolve every floating reference of `recipe` (snapshot folders, import
/// image archives) and return the pins with the lock that records them.
pub async fn resolve(engine: &Arc<Engine>, recipe: &Recipe) -> Result<(Pins, Lock)> {
    let store = engine.store();
    let mut pins = Pins::default();
    let mut resolved = repro_recipes::Resolved::default();
    for (name, tc) in &recipe.toolchains {
        let digest = match &tc.reference {
            ImageRef::Pinned(d) => *d,
            ImageRef::Archive(path) => {
                let full = recipe.resolve(path);
                engine.note(format!("importing image archive `{}`", full.display()));
                let store = Arc::clone(&store);
                let d = tokio::task::spawn_blocking(move || {
                    repro_toolchains::import_archive(&store, &full)
                })
                .await??;
                resolved.toolchains.insert(name.clone(), d);
                d
            }
            ImageRef::Tag(tag) => {
                engine.note(format!("exporting image `{tag}` from Docker"));
                let d = engine.import_tag(tag).await?;
                resolved.toolchains.insert(name.clone(), d);
                d
            }
        };
        pins.toolchains.insert(name.clone(), digest);
    }
    for (kind, map, out) in [
        (
            "data",
            tree_refs(recipe.data.iter().map(|(n, d)| (n, &d.reference))),
            &mut resolved.data,
        ),
        (
            "code",
            tree_refs(recipe.code.iter().map(|(n, c)| (n, &c.reference))),
            &mut resolved.code,
        ),
    ] {
        for (name, r) in map {
            let digest = match r {
                TreeRef::Pinned(d) => d,
                TreeRef::Path(path) => {
                    let full = recipe.resolve(&path);
                    engine.note(format!(
                        "snapshotting {kind} `{name}` from `{}`",
                        full.display()
                    ));
                    let store = Arc::clone(&store);
                    let d = tokio::task::spawn_blocking(move || {
                        store.snapshot_dir(&full, Ingest::Copy)
                    })
                    .await??;
                    out.insert(name.clone(), d);
                    d
                }
            };
            if kind == "data" {
                pins.data.insert(name, digest);
            } else {
                pins.code.insert(name, digest);
            }
        }
    }
    let lock = recipe.lock_with(&resolved);
    Ok((pins, lock))
}

fn tree_refs<'a>(it: impl Iterator<Item = (&'a String, &'a TreeRef)>) -> Vec<(String, TreeRef)> {
    it.map(|(n, r)| (n.clone(), r.clone())).collect()
}

/// Everything a finished build produced.
pub struct Built {
    /// The per-step results.
    pub report: BuildReport,
    /// The signed record, when every step succeeded.
    pub record: Option<(RecordDigest, Statement)>,
}

/// Run `plan` and, if it succeeds, sign and store a record.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    engine: &Arc<Engine>,
    recipe: &Recipe,
    lock_bytes: Option<&[u8]>,
    pins: &Pins,
    opts: BuildOptions,
    key: &SigningKey,
) -> Result<Built> {
    let plan = Plan::new(recipe, pins)?;
    let started = now();
    let report = engine.run(&plan, opts).await?;
    if !report.ok() {
        return Ok(Built {
            report,
            record: None,
        });
    }
    let finished = now();
    let store = engine.store();
    let recipe_digest = store.put_bytes(recipe.source.as_bytes())?;
    let lock_digest = lock_bytes.map(|b| store.put_bytes(b)).transpose()?;
    let backend = engine.backend_description().await;
    let statement = statement(
        &store,
        recipe,
        recipe_digest,
        lock_digest,
        pins,
        &report,
        backend,
        started,
        finished,
    )?;
    let payload = serde_json::to_vec(&statement)?;
    let envelope = keys::sign(key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
    keys::publish(&store, &key.verifying_key())?;
    let bytes = serde_json::to_vec_pretty(&envelope)?;
    let digest = store.put_record(&bytes, &recipe.model.name, &recipe.model.version)?;
    Ok(Built {
        report,
        record: Some((digest, statement)),
    })
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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
        for (path, entry) in store.flatten(&output)? {
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
        byproducts.push(b);
    }
    let mut deps = vec![ResourceDescriptor::sha256("recipe", recipe_digest)];
    if let Some(l) = lock_digest {
        deps.push(ResourceDescriptor::sha256("lock", l));
    }
    for (name, d) in &pins.toolchains {
        let info = store.get_image(d)?;
        let mut r = ResourceDescriptor::sha256(format!("toolchains.{name}"), d)
            .with("config", info.config.to_string());
        if let Some(tc) = recipe.toolchains.get(name) {
            match &tc.reference {
                ImageRef::Archive(p) => r.uri = Some(format!("file:{}", p.display())),
                ImageRef::Tag(t) => r.uri = Some(format!("docker:{t}")),
                ImageRef::Pinned(_) => {}
            }
        }
        deps.push(r);
    }
    for (name, d) in &pins.data {
        let mut r = ResourceDescriptor::sha256(format!("data.{name}"), d);
        if let Some(ds) = recipe.data.get(name) {
            if let Some(desc) = &ds.description {
                r = r.with("description", desc);
            }
            if let Some(src) = &ds.source {
                r = r.with("source", src);
            }
            if let TreeRef::Path(p) = &ds.reference {
                r.uri = Some(format!("file:{}", p.display()));
            }
        }
        deps.push(r);
    }
    for (name, d) in &pins.code {
        let mut r = ResourceDescriptor::sha256(format!("code.{name}"), d);
        if let Some(c) = recipe.code.get(name) {
            if let Some(g) = &c.git_commit {
                r = r.with("gitCommit", g);
            }
            if let TreeRef::Path(p) = &c.reference {
                r.uri = Some(format!("file:{}", p.display()));
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
                    recipe_digest: recipe_digest.to_string(),
                    lock_digest: lock_digest.map(|d| d.to_string()),
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

impl Engine {
    /// Report a note.
    pub fn note(&self, text: String) {
        self.reporter().event(&Event::Note(text));
    }
}
