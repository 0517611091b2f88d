//! Build records: an in-toto Statement (v1) with an SLSA provenance (v1)
//! predicate, signed in a DSSE envelope.
//!
//! The statement's subjects are the output files (`<step>/<path>` with their
//! SHA-256). The predicate's `buildDefinition` holds the recipe and lock
//! digests and every resolved input; `runDetails.byproducts` holds one entry
//! per step with its key and output tree; the platform sits in
//! `internalParameters`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::platform::Platform;

/// The statement type of in-toto v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The build type of a `repro` build.
pub const BUILD_TYPE: &str = "urn:repro:build:v1";
/// The builder id of the `repro` runner.
pub const BUILDER_ID: &str = "urn:repro:runner";

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

    /// The SHA-256 digest as `sha256:<hex>`.
    pub fn sha256_text(&self) -> Option<String> {
        self.digest.get("sha256").map(|h| format!("sha256:{h}"))
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
    /// `sha256:` digest of the recipe's bytes; the bytes are in the store.
    pub recipe_digest: String,
    /// `sha256:` digest of the lock file's bytes, if there was one.
    pub lock_digest: Option<String>,
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
    pub key: String,
    /// Its output tree.
    pub output: String,
}

impl Statement {
    /// The steps, in record order.
    pub fn steps(&self) -> Vec<RecordedStep> {
        self.predicate
            .run_details
            .byproducts
            .iter()
            .filter_map(|b| {
                let name = b.name.strip_prefix("steps.")?.to_string();
                let key = b.annotations.get("stepKey")?.as_str()?.to_string();
                Some(RecordedStep {
                    name,
                    key,
                    output: b.sha256_text()?,
                })
            })
            .collect()
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
