//! The serde shape of `model.toml`, exactly as written, with byte spans.
//!
//! These structs are what the JSON Schema is generated from (their doc
//! comments become the schema's descriptions). Values that need checking
//! beyond their TOML type are kept as spanned strings and checked in
//! `recipe.rs`, so that every problem gets a position and all of them can be
//! reported at once.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;

/// A reproducible ML training recipe (`model.toml`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "repro recipe (model.toml)")]
pub(crate) struct RawRecipe {
    /// What the model is and who answers for it.
    #[schemars(with = "RawModel")]
    pub model: Spanned<RawModel>,
    /// Settings fixed inside every step.
    #[serde(default)]
    #[schemars(with = "Option<RawBuild>")]
    pub build: Option<Spanned<RawBuild>>,
    /// Container images the steps run in, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawToolchain>")]
    pub toolchains: BTreeMap<String, Spanned<RawToolchain>>,
    /// Data snapshots, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawData>")]
    pub data: BTreeMap<String, Spanned<RawData>>,
    /// Code trees, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawCode>")]
    pub code: BTreeMap<String, Spanned<RawCode>>,
    /// Hyperparameters and seeds: TOML scalars, substituted with `${params.NAME}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawParam>")]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
    /// The steps, a DAG through `inputs` and `needs`; at least one.
    #[serde(default)]
    #[schemars(with = "Vec<RawStep>", length(min = 1))]
    pub steps: Vec<Spanned<RawStep>>,
}

/// The `[model]` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Model")]
pub(crate) struct RawModel {
    /// The model's name: `[a-z0-9][a-z0-9._-]*`.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9._-]*$"))]
    pub name: Spanned<String>,
    /// The model's version: free text without `@`, `/` or whitespace; it
    /// may hold the placeholders `{date}`, `{inputs}` and `{data}`, which
    /// each build fills in (e.g. `1.1.{date}`).
    #[schemars(with = "String", regex(pattern = r"^[^@/\s]+$"))]
    pub version: Spanned<String>,
    /// Who answers for the model, e.g. `Jane Doe <jane.doe@example.com>`.
    pub owner: Option<String>,
    /// What the model is for.
    pub purpose: Option<String>,
    /// The uses it is validated for.
    pub intended_use: Option<String>,
    /// Known limitations.
    pub limitations: Option<String>,
}

/// The `[build]` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Build")]
pub(crate) struct RawBuild {
    /// `SOURCE_DATE_EPOCH` inside every step (default 0).
    #[schemars(with = "Option<u64>")]
    pub source_date_epoch: Option<Spanned<u64>>,
    /// `PYTHONHASHSEED` inside every step (default 0).
    #[schemars(with = "Option<u32>")]
    pub python_hash_seed: Option<Spanned<u32>>,
    /// The OMP/MKL/OpenBLAS/NumExpr/VecLib thread counts (default 1, at least 1).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub threads: Option<Spanned<u32>>,
}

/// One `[toolchains.NAME]` table: exactly one of `image`, `archive`, `tag`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Toolchain")]
pub(crate) struct RawToolchain {
    /// Pinned: the OCI image manifest digest, `sha256:<64 hex>`, or
    /// `host[:port]/repo@sha256:<64 hex>` to pull it by digest from a registry.
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// Floating: an OCI layout or docker-archive tar, relative to the recipe.
    #[schemars(with = "Option<String>")]
    pub archive: Option<Spanned<String>>,
    /// Floating: an image tag in the local Docker daemon.
    #[schemars(with = "Option<String>")]
    pub tag: Option<Spanned<String>>,
    /// Environment variables set in every step using this toolchain.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<String, Spanned<String>>,
}

/// One `[data.NAME]` table: exactly one of `digest`, `path`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Data")]
pub(crate) struct RawData {
    /// Pinned: the tree digest of the snapshot, `sha256:<64 hex>`.
    #[schemars(with = "Option<String>")]
    pub digest: Option<Spanned<String>>,
    /// Floating: a folder relative to the recipe.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// What the data is.
    pub description: Option<String>,
    /// Where the data came from.
    pub source: Option<String>,
}

/// One `[code.NAME]` table: exactly one of `digest`, `path`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Code")]
pub(crate) struct RawCode {
    /// Pinned: the tree digest of the code, `sha256:<64 hex>`.
    #[schemars(with = "Option<String>")]
    pub digest: Option<Spanned<String>>,
    /// Floating: a folder relative to the recipe.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// The git commit the code came from (informational, for lineage).
    pub git_commit: Option<String>,
}

/// A parameter value: a TOML string, integer, float or boolean.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Param")]
#[allow(dead_code)] // only its schema is used
pub(crate) enum RawParam {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

/// One `[[steps]]` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub(crate) struct RawStep {
    /// The step's name: `[a-z0-9][a-z0-9_-]*`, unique in the recipe.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub name: Spanned<String>,
    /// The name of the toolchain (a `[toolchains.NAME]` table) to run in.
    #[schemars(with = "String")]
    pub toolchain: Spanned<String>,
    /// The command and its arguments; `${params.NAME}` is substituted, `$$` is a `$`.
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub argv: Spanned<Vec<Spanned<String>>>,
    /// Extra environment variables; values are substituted like `argv`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<String, Spanned<String>>,
    /// Inputs mounted read-only at `/repro/in/<name>`: `data.X`, `code.X` or `steps.X`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub inputs: BTreeMap<String, Spanned<String>>,
    /// Declared outputs, relative to `/repro/out`; a trailing `/` means a directory.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub outputs: Vec<Spanned<String>>,
    /// Steps that must run first (steps named in `inputs` are implied).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    /// Resource limits.
    #[schemars(with = "Option<RawLimits>")]
    pub limits: Option<Spanned<RawLimits>>,
}

/// A step's `limits` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub(crate) struct RawLimits {
    /// Memory: an integer with a unit, e.g. `512MiB`, `2GiB`, `1GB` (default: no limit).
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// CPUs: a positive number (default: no limit).
    #[schemars(with = "Option<f64>")]
    pub cpus: Option<Spanned<f64>>,
    /// Wall-clock timeout, e.g. `30s`, `10m`, `2h`, `1h30m` (default `1h`).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// GPUs: a count, e.g. `2`, or a type and a count, e.g. `"a100:2"`
    /// (default: none). Slurm jobs ask for them (`--gres=gpu:...`); the
    /// local sandboxes expose no GPU, so there the step runs without one
    /// and the build warns.
    #[schemars(with = "Option<RawGpus>")]
    pub gpus: Option<Spanned<toml::Value>>,
}

/// A GPU request: a count, or `TYPE:COUNT`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Gpus")]
#[allow(dead_code)] // only its schema is used
pub(crate) enum RawGpus {
    /// How many GPUs, of any type.
    Count(#[schemars(range(min = 1))] u32),
    /// A GPU type as the cluster names it and how many, e.g. `a100:2`.
    TypeAndCount(
        #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*:0*[1-9][0-9]*$"))] String,
    ),
}

/// The serde shape of `model.lock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLock {
    pub version: Spanned<i64>,
    #[serde(default)]
    pub toolchains: BTreeMap<String, Spanned<RawLockedToolchain>>,
    #[serde(default)]
    pub data: BTreeMap<String, Spanned<RawLockedTree>>,
    #[serde(default)]
    pub code: BTreeMap<String, Spanned<RawLockedTree>>,
}

/// A `[toolchains.NAME]` entry of a lock.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLockedToolchain {
    pub archive: Option<Spanned<String>>,
    pub tag: Option<Spanned<String>>,
    pub image: Spanned<String>,
}

/// A `[data.NAME]` or `[code.NAME]` entry of a lock.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLockedTree {
    pub path: Spanned<String>,
    pub digest: Spanned<String>,
}
