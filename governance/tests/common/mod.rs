//! Fixtures for the governance tests: a temporary store in which records,
//! identities, approvals and attestations are made directly (no build, no
//! sandbox, no root, no network).
//!
//! The model is always `gov`. Alice (the builder) signs every record; the
//! other people are keys that tests register (or not) with roles.

#![allow(dead_code)] // each test file uses a part of the fixtures

use std::collections::BTreeMap;
use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use repro_evidence::attest::{self, Identity, StepSummary, Verified};
use repro_evidence::keys;
use repro_evidence::platform::Platform;
use repro_evidence::record::{
    BuildDefinition, Builder, ExternalParameters, InternalParameters, Metadata, Provenance,
    ResourceDescriptor, RunDetails, Statement, BUILDER_ID, BUILD_TYPE, PREDICATE_TYPE,
    STATEMENT_TYPE,
};
use repro_evidence::VersionRef;
use repro_governance::approvals::{self, Approval, ApprovalStatement, APPROVAL_PREDICATE_TYPE};
use repro_governance::identities::{self, Registered};
use repro_governance::policy::{self, Loaded};
use repro_governance::promote::{self, Actor, Decision};
use repro_governance::registry;
use repro_governance::Stage;
use repro_store::{Hash, Ingest, RecordDigest, Store};

/// The model every test builds.
pub const MODEL: &str = "gov";

/// A person: a key with a name.
pub struct Person {
    /// The signing key.
    pub key: SigningKey,
    /// The name (the e-mail is `<lowercase name>@example.com`).
    pub name: String,
}

impl Person {
    /// A person whose key is made from `seed`.
    pub fn new(name: &str, seed: u8) -> Person {
        Person {
            key: SigningKey::from_bytes(&[seed; 32]),
            name: name.to_string(),
        }
    }

    /// The key id, `sha256:<hex>`.
    pub fn keyid(&self) -> String {
        keys::key_id(&self.key.verifying_key()).to_string()
    }

    /// The e-mail.
    pub fn email(&self) -> String {
        format!("{}@example.com", self.name.to_lowercase())
    }

    /// The identity as approvals name it.
    pub fn identity(&self) -> Identity {
        Identity {
            keyid: self.keyid(),
            name: Some(self.name.clone()),
            email: Some(self.email()),
        }
    }
}

/// What one build of `gov@<version>` wrote.
#[derive(Clone)]
pub struct Build {
    /// The `metrics.json` of step `evaluate` (as text: it need not be JSON).
    pub metrics: String,
    /// Whether the recipe has (and the record holds) the step `validate`.
    pub validate: bool,
    /// `model.owner` in the recipe.
    pub owner: Option<String>,
    /// The record's invocation id (two builds of the same inputs differ only by it).
    pub invocation: String,
    /// A data snapshot the record names as `data.train`, if any.
    pub data: Option<repro_store::TreeDigest>,
}

impl Build {
    /// A build whose evaluation found `overall.auc` = `auc` and a slice gap of 0.02.
    pub fn auc(auc: f64) -> Build {
        Build {
            metrics: serde_json::json!({
                "overall": {"auc": auc},
                "slices": {"gaps": {"auc": {"gap": 0.02}}},
            })
            .to_string(),
            validate: true,
            owner: Some("Olivia Owner <olivia@example.com>".into()),
            invocation: "1".into(),
            data: None,
        }
    }
}

/// A temporary store, its builder and the people who act on it.
pub struct World {
    _tmp: tempfile::TempDir,
    /// Scratch space outside the store (policy files).
    pub work: PathBuf,
    /// The store.
    pub store: Store,
    /// Alice, who builds (signs) every record.
    pub alice: Person,
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

/// The recipe of `gov@<version>` as `b` describes it.
fn recipe(version: &str, b: &Build) -> String {
    let mut r = format!("[model]\nname = \"{MODEL}\"\nversion = \"{version}\"\n");
    if let Some(o) = &b.owner {
        r.push_str(&format!("owner = \"{o}\"\n"));
    }
    r.push_str("\n[toolchains.bb]\narchive = \"image\"\n");
    if b.validate {
        r.push_str(
            "\n[[steps]]\nname = \"validate\"\ntoolchain = \"bb\"\nargv = [\"true\"]\noutputs = [\"validation.json\"]\n",
        );
    }
    r.push_str(
        "\n[[steps]]\nname = \"evaluate\"\ntoolchain = \"bb\"\nargv = [\"true\"]\noutputs = [\"metrics.json\"]\n",
    );
    r
}

impl World {
    /// An empty store; Alice's public key is in it (as after a build).
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let alice = Person::new("Alice", 1);
        keys::publish(&store, &alice.key.verifying_key()).unwrap();
        World {
            _tmp: tmp,
            work,
            store,
            alice,
        }
    }

    /// `gov@<version>`.
    pub fn model(&self, version: &str) -> VersionRef {
        VersionRef {
            name: MODEL.into(),
            version: version.into(),
        }
    }

    /// Snapshot a step's outputs (`files`: path, content) into the store.
    fn outputs(&self, files: &[(&str, &str)]) -> repro_store::TreeDigest {
        let dir = self.store.scratch("out-").unwrap();
        for (path, content) in files {
            std::fs::write(dir.path().join(path), content).unwrap();
        }
        self.store.snapshot_dir(dir.path(), Ingest::Copy).unwrap()
    }

    /// Forge a signed record of `gov@<version>` as a build would leave it:
    /// the recipe as a blob, each step's output tree, the output files as
    /// subjects; signed by Alice and made the version's latest record.
    pub fn build(&self, version: &str, b: &Build) -> RecordDigest {
        let recipe = self.store.put_bytes(recipe(version, b).as_bytes()).unwrap();
        let mut steps: Vec<(&str, &str, &str)> = Vec::new();
        if b.validate {
            steps.push(("validate", "validation.json", "{\"ok\": true}"));
        }
        steps.push(("evaluate", "metrics.json", &b.metrics));
        let mut subject = Vec::new();
        let mut byproducts = Vec::new();
        for (step, file, content) in steps {
            let tree = self.outputs(&[(file, content)]);
            subject.push(ResourceDescriptor::sha256(
                format!("{step}/{file}"),
                Hash::of(content.as_bytes()),
            ));
            byproducts.push(
                ResourceDescriptor::sha256(format!("steps.{step}"), tree)
                    .with("stepKey", Hash::of(step.as_bytes()).to_string()),
            );
        }
        let statement = Statement {
            type_: STATEMENT_TYPE.into(),
            subject,
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: ExternalParameters {
                        recipe: "model.toml".into(),
                        recipe_digest: recipe,
                        lock_digest: None,
                        name: MODEL.into(),
                        version: version.into(),
                    },
                    internal_parameters: InternalParameters {
                        sandbox_policy_version: 1,
                        platform: platform(),
                    },
                    resolved_dependencies: std::iter::once(ResourceDescriptor::sha256(
                        "recipe", recipe,
                    ))
                    .chain(b.data.map(|d| ResourceDescriptor::sha256("data.train", d)))
                    .collect(),
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: BUILDER_ID.into(),
                        version: BTreeMap::new(),
                    },
                    metadata: Metadata {
                        invocation_id: b.invocation.clone(),
                        started_on: "2026-01-01T00:00:00Z".into(),
                        finished_on: "2026-01-01T00:01:00Z".into(),
                    },
                    byproducts,
                },
            },
        };
        let payload = serde_json::to_vec(&statement).unwrap();
        let envelope = keys::sign(&self.alice.key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
        self.store
            .put_record(
                &envelope.to_vec_pretty().unwrap(),
                MODEL,
                version,
                &repro_evidence::record::inputs_of,
            )
            .unwrap()
    }

    /// Register `p` with `roles` (Alice registers them).
    pub fn register(&self, p: &Person, roles: &[&str]) -> Registered {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        identities::add(
            &self.store,
            &p.key.verifying_key(),
            &p.name,
            &p.email(),
            &roles,
            &self.alice.keyid(),
        )
        .unwrap()
    }

    /// Revoke `p` (Alice revokes them).
    pub fn revoke(&self, p: &Person, reason: &str) {
        identities::revoke(&self.store, &p.keyid(), reason, &self.alice.keyid()).unwrap();
    }

    /// Give registered `p` exactly `roles` from now on. `identities` has no
    /// operation for this (a key is registered once); an administrator
    /// editing the identity file `v1/identities/<keyid hex>.json` is the
    /// only way, so that is what this does.
    pub fn set_roles(&self, p: &Person, roles: &[&str]) {
        let mut reg = identities::get(&self.store, &p.keyid()).unwrap().unwrap();
        reg.roles = roles.iter().map(|r| r.to_string()).collect();
        let hex = p.keyid().strip_prefix("sha256:").unwrap().to_string();
        std::fs::write(
            self.store
                .layout_dir()
                .join("identities")
                .join(format!("{hex}.json")),
            serde_json::to_vec_pretty(&reg).unwrap(),
        )
        .unwrap();
        assert_eq!(
            identities::get(&self.store, &p.keyid())
                .unwrap()
                .unwrap()
                .roles,
            roles
        );
    }

    /// The latest record of `gov@<version>`.
    pub fn record(&self, version: &str) -> RecordDigest {
        self.store.resolve_record(MODEL, version).unwrap()
    }

    /// `p` approves `gov@<version>` in `role` through [`approvals::approve`].
    pub fn approve(&self, p: &Person, version: &str, role: &str) -> String {
        approvals::approve(
            &self.store,
            &p.key,
            &self.model(version),
            &self.record(version),
            &self.alice.keyid(),
            role,
            "looks good",
        )
        .unwrap()
        .0
    }

    /// An approval envelope of `record` (of `gov@<version>`), signed by
    /// `signer` and saying what `approval` says, made without the checks of
    /// [`approvals::approve`] (as someone forging one would).
    pub fn forge_approval(
        &self,
        signer: &SigningKey,
        version: &str,
        record: &RecordDigest,
        approval: Approval,
    ) -> Vec<u8> {
        let statement = ApprovalStatement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![ResourceDescriptor::sha256(
                format!("record:{MODEL}@{version}"),
                record,
            )],
            predicate_type: APPROVAL_PREDICATE_TYPE.into(),
            predicate: approval,
        };
        let payload = serde_json::to_vec(&statement).unwrap();
        let envelope = keys::sign(signer, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
        serde_json::to_vec_pretty(&envelope).unwrap()
    }

    /// An approval predicate: `p` approves `gov@<version>` in `role` at `time`.
    pub fn approval(&self, p: &Person, version: &str, role: &str, time: &str) -> Approval {
        Approval {
            expires: None,
            model: format!("{MODEL}@{version}"),
            role: role.into(),
            reason: "looks good".into(),
            time: time.into(),
            approver: p.identity(),
        }
    }

    /// File approval `bytes` under `record`, named by their SHA-256 as
    /// `approve` names them; returns the digest.
    pub fn file_approval(&self, record: &RecordDigest, bytes: &[u8]) -> String {
        let hex = Hash::of(bytes).hex();
        let dir = self.approvals_dir(record);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// `v1/refs/approvals/<record hex>`.
    pub fn approvals_dir(&self, record: &RecordDigest) -> PathBuf {
        self.store
            .layout_dir()
            .join("refs/approvals")
            .join(record.hex())
    }

    /// The stored bytes of approval `digest` of `record`.
    pub fn approval_bytes(&self, record: &RecordDigest, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(self.approvals_dir(record).join(hex)).unwrap()
    }

    /// The approvals of `gov@<version>`'s record, judged.
    pub fn judged(&self, version: &str) -> Vec<approvals::Judged> {
        approvals::list(&self.store, &self.record(version), &self.alice.keyid()).unwrap()
    }

    /// The judged approval `digest` of `gov@<version>`.
    pub fn judged_one(&self, version: &str, digest: &str) -> approvals::Judged {
        self.judged(version)
            .into_iter()
            .find(|j| j.digest == digest)
            .unwrap_or_else(|| panic!("no approval {digest}"))
    }

    /// `p` verifies `gov@<version>` (`passed`: the rebuild matched) and
    /// the attestation is stored with the record.
    pub fn attest(&self, p: &Person, version: &str, passed: bool) {
        self.attest_record(p, version, &self.record(version), passed);
    }

    /// `p`'s attestation about `record`, stored with the latest record of `gov@<version>`.
    pub fn attest_record(&self, p: &Person, version: &str, about: &RecordDigest, passed: bool) {
        keys::publish(&self.store, &p.key.verifying_key()).unwrap();
        let v = Verified {
            model: format!("{MODEL}@{version}"),
            reproduced: passed,
            outputs: Vec::new(),
            steps: vec![StepSummary {
                step: "evaluate".into(),
                expected: "sha256:0".into(),
                actual: None,
                reproduced: passed,
                files: Vec::new(),
            }],
        };
        let env = attest::sign_verification(&v, about, p.identity(), platform(), &p.key).unwrap();
        self.store
            .put_attestation(&self.record(version), &env.to_vec_pretty().unwrap())
            .unwrap();
    }

    /// Store a model card for the record of `gov@<version>` (as `repro card` does).
    pub fn write_card(&self, version: &str) {
        let card = self.store.put_bytes(b"# gov\n").unwrap();
        let dir = self.store.layout_dir().join("refs/cards");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(self.record(version).hex()), format!("{card}\n")).unwrap();
    }

    /// A policy file with `text`, loaded.
    pub fn policy(&self, text: &str) -> Loaded {
        let path = self
            .work
            .join(format!("policy-{}.toml", Hash::of(text.as_bytes()).hex()));
        std::fs::write(&path, text).unwrap();
        policy::load(&self.store, Some(&path)).unwrap()
    }

    /// Alice acting (promotions are logged in her name).
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            key: &self.alice.key,
            identity: self.alice.identity(),
        }
    }

    /// Promote `gov@<version>` to `to` under `policy`.
    pub fn promote(&self, version: &str, to: Stage, policy: &Loaded) -> Decision {
        promote::promote(
            &self.store,
            &self.actor(),
            &self.model(version),
            to,
            policy,
            None,
        )
        .unwrap()
    }

    /// The stage of `gov@<version>`.
    pub fn stage(&self, version: &str) -> Stage {
        registry::stage_of(&self.store, &self.model(version))
            .unwrap()
            .0
    }

    /// Evaluate the gate given by `policy_text` for stage `to` on `gov@<version>`
    /// (without promoting).
    pub fn evaluate(&self, version: &str, policy_text: &str, to: Stage) -> Vec<registry::Check> {
        let policy = policy::parse(std::path::Path::new("p.toml"), policy_text).unwrap();
        let gate = &policy.stages[to.as_str()];
        let m = self.model(version);
        let opened = registry::open(&self.store, &self.record(version)).unwrap();
        promote::evaluate(&self.store, &m, &opened, self.stage(version), gate).unwrap()
    }

    /// Every line of the model's history, as `(action, version, from, to)`.
    pub fn history(&self) -> Vec<(String, String, String, String)> {
        registry::history(&self.store, MODEL)
            .unwrap()
            .into_iter()
            .map(|h| (h.action, h.version, h.from, h.to))
            .collect()
    }
}

/// The one check of `checks` whose requirement starts with `requirement`.
pub fn check<'a>(checks: &'a [registry::Check], requirement: &str) -> &'a registry::Check {
    let found: Vec<_> = checks
        .iter()
        .filter(|c| c.requirement.starts_with(requirement))
        .collect();
    assert_eq!(found.len(), 1, "one `{requirement}` in {checks:#?}");
    found[0]
}

/// The requirements of `checks` that are not met.
pub fn unmet(checks: &[registry::Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.met)
        .map(|c| c.requirement.clone())
        .collect()
}

/// RFC 3339 time `secs` seconds from now (negative: ago).
pub fn time_from_now(secs: i64) -> String {
    repro_evidence::clock::format(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
}

impl World {
    /// Forge a signed record of `gov@<version>` from the recipe text
    /// `recipe` (its `[model]` must name `gov` and `version`) whose steps
    /// wrote `steps` (`(step, [(file, content)])`), as [`World::build`]
    /// does for its fixed recipe.
    pub fn build_recipe(
        &self,
        version: &str,
        recipe: &str,
        steps: &[(&str, Vec<(&str, String)>)],
    ) -> RecordDigest {
        let recipe = self.store.put_bytes(recipe.as_bytes()).unwrap();
        let mut subject = Vec::new();
        let mut byproducts = Vec::new();
        for (step, files) in steps {
            let borrowed: Vec<(&str, &str)> = files.iter().map(|(f, c)| (*f, c.as_str())).collect();
            let tree = self.outputs(&borrowed);
            for (file, content) in files {
                subject.push(ResourceDescriptor::sha256(
                    format!("{step}/{file}"),
                    Hash::of(content.as_bytes()),
                ));
            }
            byproducts.push(
                ResourceDescriptor::sha256(format!("steps.{step}"), tree)
                    .with("stepKey", Hash::of(step.as_bytes()).to_string()),
            );
        }
        let statement = Statement {
            type_: STATEMENT_TYPE.into(),
            subject,
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: ExternalParameters {
                        recipe: "model.toml".into(),
                        recipe_digest: recipe,
                        lock_digest: None,
                        name: MODEL.into(),
                        version: version.into(),
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
                    byproducts,
                },
            },
        };
        let payload = serde_json::to_vec(&statement).unwrap();
        let envelope = keys::sign(&self.alice.key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
        self.store
            .put_record(
                &envelope.to_vec_pretty().unwrap(),
                MODEL,
                version,
                &repro_evidence::record::inputs_of,
            )
            .unwrap()
    }
}

impl World {
    /// As [`World::attest`], the attestation saying it was made at `time`
    /// (RFC 3339): a verification long ago, signed as `repro verify` signs.
    pub fn attest_at(&self, p: &Person, version: &str, passed: bool, time: &str) {
        use repro_evidence::attest::AttestationStatement;
        keys::publish(&self.store, &p.key.verifying_key()).unwrap();
        let v = Verified {
            model: format!("{MODEL}@{version}"),
            reproduced: passed,
            outputs: Vec::new(),
            steps: Vec::new(),
        };
        let record = self.record(version);
        let env = attest::sign_verification(&v, &record, p.identity(), platform(), &p.key).unwrap();
        let mut statement: AttestationStatement =
            serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
        statement.predicate.time_verified = time.to_string();
        let payload = serde_json::to_vec(&statement).unwrap();
        let env = keys::sign(&p.key, keys::IN_TOTO_PAYLOAD_TYPE, &payload);
        self.store
            .put_attestation(&record, &env.to_vec_pretty().unwrap())
            .unwrap();
    }

    /// Put the policy `text` in the store as its default policy
    /// (`v1/policy.toml`, what `repro policy set` keeps there), loaded.
    pub fn policy_in_force(&self, text: &str) -> Loaded {
        std::fs::write(policy::default_path(&self.store), text).unwrap();
        policy::load(&self.store, None).unwrap()
    }

    /// `p` approves `gov@<version>` in `role`, the approval counting until
    /// `expires` (RFC 3339).
    pub fn approve_until(&self, p: &Person, version: &str, role: &str, expires: &str) -> String {
        approvals::approve_until(
            &self.store,
            &p.key,
            &self.model(version),
            &self.record(version),
            &self.alice.keyid(),
            role,
            "looks good",
            Some(expires),
        )
        .unwrap()
        .0
    }
}
