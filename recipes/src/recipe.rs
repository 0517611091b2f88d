//! The validated recipe and how it is built from the raw TOML.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use repro_store::{BlobDigest, Hash, ImageDigest, TreeDigest};
use serde::Serialize;
use serde_spanned::Spanned;

use crate::de::toml_key;
use crate::error::{list, Collector, Diagnostic, Diagnostics, Error, Location, Result};
use crate::output_path::OutputPath;
use crate::raw::{RawLimits, RawRecipe, RawStep};
use crate::subst::{substitute, ParamValue, SubstError};
use crate::units::{parse_duration, parse_memory};
use crate::version::VersionTemplate;

/// The default step timeout: one hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Environment variables the sandbox sets itself; a recipe may not set them
/// in a toolchain's or a step's `env`.
pub const SANDBOX_FIXED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TZ",
    "LC_ALL",
    "LANG",
    "SOURCE_DATE_EPOCH",
    "PYTHONHASHSEED",
    "PYTHONDONTWRITEBYTECODE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

/// The thread-count variables the sandbox sets to [`BuildSettings::threads`].
pub const THREAD_ENV: &[&str] = &[
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

/// A parsed and validated `model.toml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    /// The recipe's path as given by the caller (used in messages).
    pub path: PathBuf,
    /// The directory holding the recipe; floating paths are relative to it.
    pub dir: PathBuf,
    /// The exact text of the recipe.
    pub source: String,
    /// The SHA-256 of the recipe's exact bytes.
    pub digest: BlobDigest,
    /// The `[model]` table.
    pub model: Model,
    /// The `[build]` table (defaults when absent).
    pub build: BuildSettings,
    /// Toolchains by name.
    pub toolchains: BTreeMap<String, Toolchain>,
    /// Data snapshots by name.
    pub data: BTreeMap<String, DataSnapshot>,
    /// Code trees by name.
    pub code: BTreeMap<String, CodeTree>,
    /// Parameters by name.
    pub params: BTreeMap<String, ParamValue>,
    /// Steps in file order.
    pub steps: Vec<Step>,
}

/// What the model is and who answers for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    /// `[a-z0-9][a-z0-9._-]*`.
    pub name: String,
    /// Free text without `@`, `/` or whitespace, as written: it may be a
    /// template with placeholders (see [`crate::VersionTemplate`]), which
    /// the runner fills in for each build.
    pub version: String,
    /// Where `version` is written.
    #[serde(skip)]
    pub version_location: Option<Location>,
    /// Who answers for the model.
    pub owner: Option<String>,
    /// What the model is for.
    pub purpose: Option<String>,
    /// The uses it is validated for.
    pub intended_use: Option<String>,
    /// Known limitations.
    pub limitations: Option<String>,
}

/// Settings fixed inside every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuildSettings {
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    /// `PYTHONHASHSEED`.
    pub python_hash_seed: u32,
    /// The value of every variable in [`THREAD_ENV`]; at least 1.
    pub threads: u32,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            source_date_epoch: 0,
            python_hash_seed: 0,
            threads: 1,
        }
    }
}

/// How a toolchain's image is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRef {
    /// `image = "sha256:..."`: an image manifest digest.
    Pinned(ImageDigest),
    /// `archive = "..."`: an OCI layout or docker-archive tar, relative to the recipe.
    Archive(PathBuf),
    /// `tag = "..."`: an image in the local Docker daemon.
    Tag(String),
    /// `image = "host[:port]/repo@sha256:..."`: pinned, and pulled by digest
    /// from that registry repository when the store lacks it.
    Registry {
        /// `host[:port]/repo`.
        repository: String,
        /// The manifest digest.
        digest: ImageDigest,
    },
}

impl ImageRef {
    /// The digest, when the reference is pinned.
    pub fn pinned(&self) -> Option<ImageDigest> {
        match self {
            ImageRef::Pinned(d) | ImageRef::Registry { digest: d, .. } => Some(*d),
            ImageRef::Archive(_) | ImageRef::Tag(_) => None,
        }
    }
}

/// How a data snapshot or code tree is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeRef {
    /// `digest = "sha256:..."`: a tree digest.
    Pinned(TreeDigest),
    /// `path = "..."`: a folder relative to the recipe.
    Path(PathBuf),
}

/// A `[toolchains.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Toolchain {
    /// The image.
    pub reference: ImageRef,
    /// Environment set in every step using this toolchain.
    pub env: BTreeMap<String, String>,
    /// Where the reference is written, for messages.
    #[serde(skip)]
    pub location: Option<Location>,
}

/// A `[data.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataSnapshot {
    /// The snapshot.
    pub reference: TreeRef,
    /// What the data is.
    pub description: Option<String>,
    /// Where it came from.
    pub source: Option<String>,
    /// Where the reference is written, for messages.
    #[serde(skip)]
    pub location: Option<Location>,
}

/// A `[code.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeTree {
    /// The tree.
    pub reference: TreeRef,
    /// The git commit the code came from (informational).
    pub git_commit: Option<String>,
    /// Where the reference is written, for messages.
    #[serde(skip)]
    pub location: Option<Location>,
}

/// What a step input refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRef {
    /// `data.NAME`.
    Data(String),
    /// `code.NAME`.
    Code(String),
    /// `steps.NAME`: the whole output tree of that step.
    Step(String),
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputRef::Data(n) => write!(f, "data.{n}"),
            InputRef::Code(n) => write!(f, "code.{n}"),
            InputRef::Step(n) => write!(f, "steps.{n}"),
        }
    }
}

impl FromStr for InputRef {
    type Err = String;
    /// Parse `data.X`, `code.X` or `steps.X` (the name is not checked here).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let make: fn(String) -> InputRef = match s.split_once('.') {
            Some(("data", _)) => InputRef::Data,
            Some(("code", _)) => InputRef::Code,
            Some(("steps", _)) => InputRef::Step,
            _ => return Err(format!("`{s}` is not an input reference")),
        };
        match s.split_once('.') {
            Some((_, name)) if !name.is_empty() => Ok(make(name.to_string())),
            _ => Err(format!("`{s}` names nothing after the `.`")),
        }
    }
}

/// A step's resource limits. None of them is part of the step key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Memory limit in bytes; `None` for no limit.
    pub memory_bytes: Option<u64>,
    /// CPU limit; `None` for no limit.
    pub cpus: Option<f64>,
    /// Wall-clock timeout (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// The GPUs the step asks for; `None` for none.
    pub gpus: Option<Gpus>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: None,
            cpus: None,
            timeout: DEFAULT_TIMEOUT,
            gpus: None,
        }
    }
}

/// A step's GPU request (`gpus = 2` or `gpus = "a100:2"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpus {
    /// The GPU type as the cluster names it (`a100`): a letter or digit,
    /// then letters, digits, `_`, `.` and `-`; `None` for any type.
    pub kind: Option<String>,
    /// How many; at least 1.
    pub count: u32,
}

impl fmt::Display for Gpus {
    /// As written in the recipe's string form: `2` or `a100:2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Some(k) => write!(f, "{k}:{}", self.count),
            None => write!(f, "{}", self.count),
        }
    }
}

/// Where the parts of a step are written, for messages from later stages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepSpans {
    /// The `name` value.
    pub name: Option<Location>,
    /// Each `argv` element.
    pub argv: Vec<Location>,
    /// Each `env` value, by variable name.
    pub env: BTreeMap<String, Location>,
    /// Each `inputs` value, by input name.
    pub inputs: BTreeMap<String, Location>,
    /// Each `needs` element.
    pub needs: Vec<Location>,
}

/// One `[[steps]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Unique name, `[a-z0-9][a-z0-9_-]*`.
    pub name: String,
    /// Position in the recipe's `steps` (0-based), for key paths like `steps[2]`.
    pub index: usize,
    /// The toolchain's name (a key of [`Recipe::toolchains`]).
    pub toolchain: String,
    /// The command, before substitution.
    pub argv: Vec<String>,
    /// Extra environment, before substitution.
    pub env: BTreeMap<String, String>,
    /// Inputs by mount name (`/repro/in/<name>`).
    pub inputs: BTreeMap<String, InputRef>,
    /// Declared outputs.
    pub outputs: Vec<OutputPath>,
    /// Extra ordering, as written.
    pub needs: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Positions, for messages.
    #[serde(skip)]
    pub spans: StepSpans,
}

impl Step {
    /// The steps this one depends on: `needs` plus the steps named in
    /// `inputs`, deduplicated and sorted.
    pub fn deps(&self) -> Vec<&str> {
        let mut deps: BTreeSet<&str> = self.needs.iter().map(String::as_str).collect();
        for input in self.inputs.values() {
            if let InputRef::Step(name) = input {
                deps.insert(name);
            }
        }
        deps.into_iter().collect()
    }

    /// `argv` and `env` with `${params.NAME}` replaced by the recipe's
    /// parameters and `$$` by `$`. Every bad reference is reported.
    pub fn expand(&self, recipe: &Recipe) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let mut diags = Vec::new();
        let mut report = |key: String, location: Option<Location>, e: SubstError| {
            diags.push(subst_diagnostic(
                &recipe.path,
                &recipe.params,
                &self.name,
                key,
                location,
                e,
            ));
        };
        let mut argv = Vec::with_capacity(self.argv.len());
        for (i, arg) in self.argv.iter().enumerate() {
            match substitute(arg, &recipe.params) {
                Ok(s) => argv.push(s),
                Err(e) => report(
                    format!("steps[{}].argv[{i}]", self.index),
                    self.spans.argv.get(i).copied(),
                    e,
                ),
            }
        }
        let mut env = BTreeMap::new();
        for (name, value) in &self.env {
            match substitute(value, &recipe.params) {
                Ok(s) => {
                    env.insert(name.clone(), s);
                }
                Err(e) => report(
                    format!("steps[{}].env.{}", self.index, toml_key(name)),
                    self.spans.env.get(name).copied(),
                    e,
                ),
            }
        }
        Diagnostics(diags).into_result()?;
        Ok((argv, env))
    }
}

fn subst_diagnostic(
    file: &Path,
    params: &BTreeMap<String, ParamValue>,
    step: &str,
    key: String,
    location: Option<Location>,
    e: SubstError,
) -> Diagnostic {
    let d = Diagnostic::new(file, "").at(location).key(key);
    match e {
        SubstError::Unknown(name) => {
            let hint = if params.is_empty() {
                format!("no parameters are declared; add `{name} = ...` under `[params]`")
            } else {
                format!("known parameters: {}", list(params.keys()))
            };
            Diagnostic {
                message: format!("step `{step}` uses unknown parameter `{name}`"),
                ..d
            }
            .hint(hint)
        }
        SubstError::Malformed(why) => Diagnostic {
            message: format!("step `{step}`: {why}"),
            ..d
        }
        .hint("write `${params.NAME}` for a parameter and `$$` for a literal `$`"),
    }
}

impl Recipe {
    /// The lock file beside the recipe: the recipe's path with the
    /// extension `lock` (`model.toml` -> `model.lock`).
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// A floating path resolved against the recipe's directory.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.dir.join(relative)
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Read and validate a recipe file.
pub fn parse_file(path: &Path) -> Result<Recipe> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => parse_str(path, &text),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            Err(Diagnostic::new(path, "the recipe is not valid UTF-8")
                .at(Some(Location::from_offset(&prefix, valid)))
                .hint("TOML files must be UTF-8")
                .into())
        }
    }
}

/// Validate the text of a recipe; `path` is used for messages and to find
/// floating paths. Syntax and type errors stop at the first one; all other
/// problems are collected and returned together.
pub fn parse_str(path: &Path, text: &str) -> Result<Recipe> {
    let raw: RawRecipe = crate::de::from_str(path, text)?;
    let mut c = Collector::new(path, text);
    let recipe = build(&mut c, path, text, raw);
    c.finish()?;
    Ok(recipe)
}

// ---------------------------------------------------------------------------
// Validation

fn span<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

fn is_step_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn is_model_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Toolchain, data, code, parameter and input names.
fn is_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

const IDENTIFIER_HINT: &str =
    "names start with a letter, digit or `_` and contain only letters, digits, `_` and `-`";

fn check_identifier(c: &mut Collector, what: &str, name: &str, at: Range<usize>, key: &str) {
    if !is_identifier(name) {
        c.push(
            at,
            key,
            format!("{what} name `{name}` is not valid"),
            Some(IDENTIFIER_HINT.into()),
        );
    }
}

/// Parse a `sha256:` digest, reporting the store's message at its position.
pub(crate) fn parse_hash(c: &mut Collector, s: &Spanned<String>, key: &str) -> Option<Hash> {
    match s.get_ref().parse::<Hash>() {
        Ok(h) => Some(h),
        Err(e) => {
            let text = e.to_string();
            let (message, hint) = match text.split_once("\nhint: ") {
                Some((m, h)) => (m.to_string(), Some(h.to_string())),
                None => (text, None),
            };
            c.push(span(s), key, message, hint);
            None
        }
    }
}

/// `image = "sha256:<hex>"` (an image in the store) or
/// `image = "host[:port]/repo@sha256:<hex>"` (pulled by digest from a
/// registry when the store lacks it). Both are pinned.
fn parse_image(c: &mut Collector, s: &Spanned<String>, key: &str) -> Option<ImageRef> {
    let text = s.get_ref();
    let Some((repository, digest)) = text.rsplit_once('@') else {
        return parse_hash(c, s, key).map(|h| ImageRef::Pinned(ImageDigest::from_hash(h)));
    };
    let bad_repo = repository.is_empty()
        || !repository.contains('/')
        || repository.contains("://")
        || repository
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_ascii_uppercase());
    if bad_repo {
        c.push(
            span(s),
            key,
            format!("`{repository}` is not a registry repository"),
            Some("write `host[:port]/repository@sha256:<64 hex>`, e.g. `registry.example:5000/ml/sklearn@sha256:...`".into()),
        );
        return None;
    }
    let digest_only = Spanned::new(span(s), digest.to_string());
    parse_hash(c, &digest_only, key).map(|h| ImageRef::Registry {
        repository: repository.to_string(),
        digest: ImageDigest::from_hash(h),
    })
}

/// A floating path: non-empty and relative.
fn check_floating_path(c: &mut Collector, s: &Spanned<String>, key: &str) -> Option<PathBuf> {
    let p = s.get_ref();
    if p.is_empty() {
        c.push(
            span(s),
            key,
            "path is empty",
            Some("write a path relative to the recipe's folder".into()),
        );
        return None;
    }
    if Path::new(p).is_absolute() {
        c.push(
            span(s),
            key,
            format!("path `{p}` is absolute"),
            Some(
                "write it relative to the recipe's folder so the recipe works on any machine"
                    .into(),
            ),
        );
        return None;
    }
    Some(PathBuf::from(p))
}

/// Check environment variable names and values of a toolchain or step.
fn check_env(c: &mut Collector, env: &BTreeMap<String, Spanned<String>>, prefix: &str) {
    for (name, value) in env {
        let key = format!("{prefix}.{}", toml_key(name));
        if !is_env_name(name) {
            c.push(
                span(value),
                key,
                format!("`{name}` is not a valid environment variable name"),
                Some("names match `[A-Za-z_][A-Za-z0-9_]*`".into()),
            );
        } else if SANDBOX_FIXED_ENV.contains(&name.as_str()) {
            let hint = match name.as_str() {
                "SOURCE_DATE_EPOCH" => "set it with `source_date_epoch` in `[build]`",
                "PYTHONHASHSEED" => "set it with `python_hash_seed` in `[build]`",
                n if THREAD_ENV.contains(&n) => "set thread counts with `threads` in `[build]`",
                _ => "remove it; the sandbox sets it the same way for every step (use `[build]` for seeds, epoch and threads)",
            };
            c.push(
                span(value),
                key,
                format!("`{name}` is set by the sandbox and cannot be overridden"),
                Some(hint.into()),
            );
        }
    }
}

fn build(c: &mut Collector, path: &Path, text: &str, raw: RawRecipe) -> Recipe {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    // [model]
    let m = raw.model.into_inner();
    if !is_model_name(m.name.get_ref()) {
        c.push(
            span(&m.name),
            "model.name",
            format!("model name `{}` is not valid", m.name.get_ref()),
            Some(
                "model names match `[a-z0-9][a-z0-9._-]*`, e.g. `breast-cancer-classifier`".into(),
            ),
        );
    }
    let v = m.version.get_ref();
    if v.is_empty() || v.contains(['@', '/']) || v.chars().any(char::is_whitespace) {
        c.push(
            span(&m.version),
            "model.version",
            format!("model version `{v}` is not valid"),
            Some(
                "versions are non-empty and contain no `@`, `/` or whitespace, e.g. `1.0.0`".into(),
            ),
        );
    } else if let Err(why) = VersionTemplate::parse(v) {
        c.push(
            span(&m.version),
            "model.version",
            format!("model version `{v}` is not a valid template: {why}"),
            Some(format!(
                "the placeholders are {}, e.g. `1.1.{{date}}`",
                crate::version::placeholders_help()
            )),
        );
    }
    let version_location = Some(c.loc(span(&m.version)));
    let model = Model {
        name: m.name.into_inner(),
        version: m.version.into_inner(),
        version_location,
        owner: m.owner,
        purpose: m.purpose,
        intended_use: m.intended_use,
        limitations: m.limitations,
    };

    // [build]
    let mut build = BuildSettings::default();
    if let Some(b) = raw.build.map(Spanned::into_inner) {
        if let Some(x) = b.source_date_epoch {
            build.source_date_epoch = x.into_inner();
        }
        if let Some(x) = b.python_hash_seed {
            build.python_hash_seed = x.into_inner();
        }
        if let Some(x) = b.threads {
            if *x.get_ref() == 0 {
                c.push(
                    span(&x),
                    "build.threads",
                    "`threads` must be at least 1",
                    Some("write an integer from 1 to 4294967295, e.g. `threads = 1`".into()),
                );
            }
            build.threads = *x.get_ref();
        }
    }

    // Names declared in the file, valid or not: a reference to a declared
    // but invalid table is not reported again.
    let declared = Declared {
        toolchains: raw.toolchains.keys().cloned().collect(),
        data: raw.data.keys().cloned().collect(),
        code: raw.code.keys().cloned().collect(),
        params: raw.params.keys().cloned().collect(),
    };

    // [toolchains.*]
    let mut toolchains = BTreeMap::new();
    for (name, t) in raw.toolchains {
        let table = span(&t);
        let key = format!("toolchains.{}", toml_key(&name));
        check_identifier(c, "toolchain", &name, table.clone(), &key);
        let t = t.into_inner();
        check_env(c, &t.env, &format!("{key}.env"));
        let given: Vec<(&str, &Spanned<String>)> = [
            ("image", &t.image),
            ("archive", &t.archive),
            ("tag", &t.tag),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let reference = match given.as_slice() {
            [] => {
                c.push(
                    table,
                    key,
                    format!("toolchain `{name}` names no image"),
                    Some("set exactly one of `image = \"sha256:...\"`, `archive = \"<path>\"` or `tag = \"<tag>\"`".into()),
                );
                None
            }
            [(field, s)] => {
                let k = format!("{key}.{field}");
                let location = Some(c.loc(span(s)));
                let r = match *field {
                    "image" => parse_image(c, s, &k),
                    "archive" => check_floating_path(c, s, &k).map(ImageRef::Archive),
                    _ => {
                        let tag = s.get_ref();
                        if tag.is_empty() || tag.chars().any(char::is_whitespace) {
                            c.push(
                                span(s),
                                &k,
                                format!("image tag `{tag}` is not valid"),
                                Some("write a tag such as `example/sklearn:1`".into()),
                            );
                            None
                        } else {
                            Some(ImageRef::Tag(tag.clone()))
                        }
                    }
                };
                r.map(|r| (r, location))
            }
            [_, (second, s), ..] => {
                let fields: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
                c.push(
                    span(s),
                    format!("{key}.{second}"),
                    format!("toolchain `{name}` sets {}; only one is allowed", both(&fields)),
                    Some("keep `image` to pin by digest, or one floating reference (`archive` or `tag`) pinned by the lock".into()),
                );
                None
            }
        };
        if let Some((reference, location)) = reference {
            let env = t
                .env
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect();
            toolchains.insert(
                name,
                Toolchain {
                    reference,
                    env,
                    location,
                },
            );
        }
    }

    // [data.*] and [code.*]
    let mut data = BTreeMap::new();
    for (name, d) in raw.data {
        let table = span(&d);
        let d = d.into_inner();
        if let Some((reference, location)) = tree_ref(
            c,
            "data",
            "data snapshot",
            &name,
            table,
            d.digest.as_ref(),
            d.path.as_ref(),
        ) {
            data.insert(
                name,
                DataSnapshot {
                    reference,
                    description: d.description,
                    source: d.source,
                    location,
                },
            );
        }
    }
    let mut code = BTreeMap::new();
    for (name, t) in raw.code {
        let table = span(&t);
        let t = t.into_inner();
        if let Some((reference, location)) = tree_ref(
            c,
            "code",
            "code tree",
            &name,
            table,
            t.digest.as_ref(),
            t.path.as_ref(),
        ) {
            code.insert(
                name,
                CodeTree {
                    reference,
                    git_commit: t.git_commit,
                    location,
                },
            );
        }
    }

    // [params]
    let mut params = BTreeMap::new();
    for (name, v) in raw.params {
        let key = format!("params.{}", toml_key(&name));
        check_identifier(c, "parameter", &name, span(&v), &key);
        let value = match v.get_ref() {
            toml::Value::String(s) => ParamValue::String(s.clone()),
            toml::Value::Integer(i) => ParamValue::Integer(*i),
            toml::Value::Float(x) => ParamValue::Float(*x),
            toml::Value::Boolean(b) => ParamValue::Bool(*b),
            other => {
                c.push(
                    span(&v),
                    key,
                    format!("parameter `{name}` is {}", a_type(other)),
                    Some("parameters are strings, integers, floats or booleans".into()),
                );
                continue;
            }
        };
        params.insert(name, value);
    }

    // [[steps]]
    let mut first: BTreeMap<&str, Range<usize>> = BTreeMap::new();
    for s in &raw.steps {
        let n = &s.get_ref().name;
        first.entry(n.get_ref().as_str()).or_insert_with(|| span(n));
    }
    let step_names: Vec<&str> = first.keys().copied().collect();
    let mut seen = BTreeSet::new();
    let mut steps = Vec::new();
    for (index, s) in raw.steps.iter().enumerate() {
        let s = s.get_ref();
        let name = s.name.get_ref();
        if !seen.insert(name.as_str()) {
            let line = first
                .get(name.as_str())
                .map_or(0, |r| c.loc(r.clone()).line);
            c.push(
                span(&s.name),
                format!("steps[{index}].name"),
                format!("duplicate step name `{name}`, first used at line {line}"),
                Some("step names must be unique; rename one of them".into()),
            );
        }
        let ctx = Ctx {
            declared: &declared,
            params: &params,
            step_names: &step_names,
        };
        if let Some(step) = build_step(c, index, s, &ctx) {
            steps.push(step);
        }
    }
    if raw.steps.is_empty() {
        c.diags.push(
            Diagnostic::new(path, "the recipe has no steps")
                .key("steps")
                .hint(
                    "add a `[[steps]]` table with `name`, `toolchain` and `argv`; \
                     a recipe without steps would build nothing and sign a record of it",
                ),
        );
    }
    check_cycles(c, &steps);

    Recipe {
        path: path.to_path_buf(),
        dir,
        source: text.to_string(),
        digest: BlobDigest::from_hash(Hash::of(text.as_bytes())),
        model,
        build,
        toolchains,
        data,
        code,
        params,
        steps,
    }
}

fn tree_ref(
    c: &mut Collector,
    table_name: &str,
    what: &str,
    name: &str,
    table: Range<usize>,
    digest: Option<&Spanned<String>>,
    path: Option<&Spanned<String>>,
) -> Option<(TreeRef, Option<Location>)> {
    let key = format!("{table_name}.{}", toml_key(name));
    check_identifier(c, what, name, table.clone(), &key);
    match (digest, path) {
        (Some(d), None) => {
            let location = Some(c.loc(span(d)));
            parse_hash(c, d, &format!("{key}.digest"))
                .map(|h| (TreeRef::Pinned(TreeDigest::from_hash(h)), location))
        }
        (None, Some(p)) => {
            let location = Some(c.loc(span(p)));
            check_floating_path(c, p, &format!("{key}.path")).map(|p| (TreeRef::Path(p), location))
        }
        (Some(d), Some(p)) => {
            let second = if span(p).start > span(d).start {
                ("path", p)
            } else {
                ("digest", d)
            };
            c.push(
                span(second.1),
                format!("{key}.{}", second.0),
                format!("{what} `{name}` sets both `digest` and `path`"),
                Some("keep `digest` to pin it, or `path` to pin it through the lock".into()),
            );
            None
        }
        (None, None) => {
            c.push(
                table,
                key,
                format!("{what} `{name}` sets neither `digest` nor `path`"),
                Some("set `digest = \"sha256:...\"` or `path = \"<folder>\"`".into()),
            );
            None
        }
    }
}

fn a_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
        toml::Value::Datetime(_) => "a date-time",
        _ => "a scalar",
    }
}

struct Declared {
    toolchains: BTreeSet<String>,
    data: BTreeSet<String>,
    code: BTreeSet<String>,
    params: BTreeSet<String>,
}

struct Ctx<'a> {
    declared: &'a Declared,
    params: &'a BTreeMap<String, ParamValue>,
    /// Sorted (the keys of a `BTreeMap`), for binary search.
    step_names: &'a [&'a str],
}

/// `a` and `b`, `a`, `b` and `c`.
fn both(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and `{last}`", list(rest)),
        _ => list(items),
    }
}

impl Ctx<'_> {
    /// An unknown-parameter error about a parameter that is declared but
    /// invalid (already reported).
    fn is_invalid_param(&self, e: &SubstError) -> bool {
        matches!(e, SubstError::Unknown(n) if self.declared.params.contains(n))
    }
}

fn known<'a>(names: impl IntoIterator<Item = &'a str>, what: &str, declare: &str) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        format!("no {what} are declared; {declare}")
    } else {
        format!("known {what}: {}", list(names))
    }
}

fn build_step(c: &mut Collector, index: usize, s: &RawStep, ctx: &Ctx) -> Option<Step> {
    let at = |field: &str| format!("steps[{index}].{field}");
    let name = s.name.get_ref().clone();
    let mut ok = true;
    if !is_step_name(&name) {
        c.push(
            span(&s.name),
            at("name"),
            format!("step name `{name}` is not valid"),
            Some("step names match `[a-z0-9][a-z0-9_-]*`, e.g. `train` or `eval-test`".into()),
        );
    }

    // toolchain
    let toolchain = s.toolchain.get_ref().clone();
    if !ctx.declared.toolchains.contains(&toolchain) {
        ok = false;
        c.push(
            span(&s.toolchain),
            at("toolchain"),
            format!("step `{name}` uses unknown toolchain `{toolchain}`"),
            Some(known(
                ctx.declared.toolchains.iter().map(String::as_str),
                "toolchains",
                &format!("add a `[toolchains.{toolchain}]` table"),
            )),
        );
    }

    // argv
    let mut spans = StepSpans {
        name: Some(c.loc(span(&s.name))),
        ..StepSpans::default()
    };
    let argv_items = s.argv.get_ref();
    if argv_items.is_empty() || argv_items[0].get_ref().is_empty() {
        ok = false;
        c.push(
            span(&s.argv),
            at("argv"),
            format!("step `{name}` has an empty command"),
            Some(
                "write the program and its arguments, e.g. `argv = [\"python3\", \"train.py\"]`"
                    .into(),
            ),
        );
    }
    let mut argv = Vec::new();
    for (i, a) in argv_items.iter().enumerate() {
        spans.argv.push(c.loc(span(a)));
        argv.push(a.get_ref().clone());
        if let Err(e) = substitute(a.get_ref(), ctx.params) {
            ok = false;
            if ctx.is_invalid_param(&e) {
                continue;
            }
            let d = subst_diagnostic(
                c.file,
                ctx.params,
                &name,
                at(&format!("argv[{i}]")),
                Some(c.loc(span(a))),
                e,
            );
            c.diags.push(d);
        }
    }

    // env
    check_env(c, &s.env, &at("env"));
    let mut env = BTreeMap::new();
    for (k, v) in &s.env {
        spans.env.insert(k.clone(), c.loc(span(v)));
        env.insert(k.clone(), v.get_ref().clone());
        if let Err(e) = substitute(v.get_ref(), ctx.params) {
            ok = false;
            if ctx.is_invalid_param(&e) {
                continue;
            }
            let key = at(&format!("env.{}", toml_key(k)));
            let d = subst_diagnostic(c.file, ctx.params, &name, key, Some(c.loc(span(v))), e);
            c.diags.push(d);
        }
    }

    // inputs
    let mut inputs = BTreeMap::new();
    for (input, v) in &s.inputs {
        let key = at(&format!("inputs.{}", toml_key(input)));
        spans.inputs.insert(input.clone(), c.loc(span(v)));
        if !is_identifier(input) {
            ok = false;
            c.push(
                span(v),
                &key,
                format!("input name `{input}` is not valid"),
                Some(format!(
                    "{IDENTIFIER_HINT}; the input is mounted at `/repro/in/<name>`"
                )),
            );
            continue;
        }
        let r = match v.get_ref().parse::<InputRef>() {
            Ok(r) => r,
            Err(why) => {
                ok = false;
                c.push(
                    span(v),
                    &key,
                    format!("input `{input}` of step `{name}`: {why}"),
                    Some("write `data.NAME`, `code.NAME` or `steps.NAME`".into()),
                );
                continue;
            }
        };
        let problem = match &r {
            InputRef::Data(n) if !ctx.declared.data.contains(n) => Some((
                format!("input `{input}` of step `{name}` refers to unknown data snapshot `{n}`"),
                known(
                    ctx.declared.data.iter().map(String::as_str),
                    "data snapshots",
                    &format!("add a `[data.{n}]` table"),
                ),
            )),
            InputRef::Code(n) if !ctx.declared.code.contains(n) => Some((
                format!("input `{input}` of step `{name}` refers to unknown code tree `{n}`"),
                known(
                    ctx.declared.code.iter().map(String::as_str),
                    "code trees",
                    &format!("add a `[code.{n}]` table"),
                ),
            )),
            InputRef::Step(n) if *n == name => Some((
                format!("step `{name}` uses its own output as input `{input}`"),
                "a step can only use the outputs of other steps".to_string(),
            )),
            InputRef::Step(n) if ctx.step_names.binary_search(&n.as_str()).is_err() => Some((
                format!("input `{input}` of step `{name}` refers to unknown step `{n}`"),
                known(
                    ctx.step_names.iter().copied(),
                    "steps",
                    "add a `[[steps]]` entry",
                ),
            )),
            _ => None,
        };
        match problem {
            Some((message, hint)) => {
                ok = false;
                c.push(span(v), key, message, Some(hint));
            }
            None => {
                inputs.insert(input.clone(), r);
            }
        }
    }

    // outputs
    let mut outputs: Vec<OutputPath> = Vec::new();
    for (i, o) in s.outputs.iter().enumerate() {
        let key = at(&format!("outputs[{i}]"));
        match OutputPath::parse(o.get_ref()) {
            Ok(p) => {
                if let Some(prev) = outputs.iter().find(|q| q.contains(&p) || p.contains(q)) {
                    ok = false;
                    let message = if prev.as_str() == p.as_str() {
                        format!("output `{p}` of step `{name}` is declared twice")
                    } else {
                        format!("outputs `{prev}` and `{p}` of step `{name}` overlap")
                    };
                    c.push(span(o), key, message, Some("declare a directory once with a trailing `/`, or list the files in it, not both".into()));
                } else {
                    outputs.push(p);
                }
            }
            Err(why) => {
                ok = false;
                c.push(
                    span(o),
                    key,
                    why,
                    Some("outputs are relative paths inside `/repro/out`, without `..`, `.` or empty components".into()),
                );
            }
        }
    }

    // needs
    let mut needs = Vec::new();
    for (i, n) in s.needs.iter().enumerate() {
        let key = at(&format!("needs[{i}]"));
        spans.needs.push(c.loc(span(n)));
        let dep = n.get_ref();
        if *dep == name {
            ok = false;
            c.push(
                span(n),
                key,
                format!("step `{name}` needs itself"),
                Some("remove it from `needs`".into()),
            );
        } else if ctx.step_names.binary_search(&dep.as_str()).is_err() {
            ok = false;
            c.push(
                span(n),
                key,
                format!("step `{name}` needs unknown step `{dep}`"),
                Some(known(
                    ctx.step_names.iter().copied(),
                    "steps",
                    "add a `[[steps]]` entry",
                )),
            );
        } else {
            needs.push(dep.clone());
        }
    }

    let limits = match &s.limits {
        Some(l) => build_limits(c, index, l.get_ref()),
        None => Some(Limits::default()),
    };

    let limits = limits?;
    ok.then_some(Step {
        name,
        index,
        toolchain,
        argv,
        env,
        inputs,
        outputs,
        needs,
        limits,
        spans,
    })
}

fn build_limits(c: &mut Collector, index: usize, l: &RawLimits) -> Option<Limits> {
    let mut limits = Limits::default();
    let mut ok = true;
    if let Some(m) = &l.memory {
        match parse_memory(m.get_ref()) {
            Ok(b) => limits.memory_bytes = Some(b),
            Err(why) => {
                ok = false;
                c.push(
                    span(m),
                    format!("steps[{index}].limits.memory"),
                    why,
                    Some("write bytes with a unit, e.g. `512MiB`, `2GiB` or `1GB`".into()),
                );
            }
        }
    }
    if let Some(x) = &l.cpus {
        let v = *x.get_ref();
        if v.is_finite() && v > 0.0 {
            limits.cpus = Some(v);
        } else {
            ok = false;
            c.push(
                span(x),
                format!("steps[{index}].limits.cpus"),
                format!("`cpus` must be a positive number, not `{v}`"),
                Some("e.g. `cpus = 1.0` or `cpus = 2`".into()),
            );
        }
    }
    if let Some(t) = &l.timeout {
        match parse_duration(t.get_ref()) {
            Ok(d) => limits.timeout = d,
            Err(why) => {
                ok = false;
                c.push(
                    span(t),
                    format!("steps[{index}].limits.timeout"),
                    why,
                    Some("write a positive duration, e.g. `30s`, `10m`, `2h` or `1h30m`".into()),
                );
            }
        }
    }
    if let Some(g) = &l.gpus {
        match parse_gpus(g.get_ref()) {
            Ok(gpus) => limits.gpus = Some(gpus),
            Err(why) => {
                ok = false;
                c.push(
                    span(g),
                    format!("steps[{index}].limits.gpus"),
                    why,
                    Some(
                        "write a count, e.g. `gpus = 2`, or a GPU type and a count, e.g. `gpus = \"a100:2\"`"
                            .into(),
                    ),
                );
            }
        }
    }
    ok.then_some(limits)
}

/// A `gpus` value: a positive integer, or a string `TYPE:COUNT`.
fn parse_gpus(v: &toml::Value) -> std::result::Result<Gpus, String> {
    let too_many = || format!("more than {} GPUs", u32::MAX);
    match v {
        toml::Value::Integer(n) => match u32::try_from(*n) {
            Ok(0) => Err("`gpus` must be at least 1, not `0`".to_string()),
            Ok(count) => Ok(Gpus { kind: None, count }),
            Err(_) if *n < 0 => Err(format!("`gpus` must be at least 1, not `{n}`")),
            Err(_) => Err(format!("`{n}` is {}", too_many())),
        },
        toml::Value::String(s) => {
            let Some((kind, n)) = s.split_once(':') else {
                return Err(if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
                    format!("`\"{s}\"` is a count in quotes: write it as a number")
                } else {
                    format!("`{s}` is not a GPU type and a count: it has no `:`")
                });
            };
            if kind.is_empty() {
                return Err(format!("`{s}` has no GPU type before the `:`"));
            }
            if n.contains(':') {
                return Err(format!(
                    "`{s}` has more than one `:` (Slurm's `gpu:` is added for you)"
                ));
            }
            let mut b = kind.bytes();
            let kind_ok = matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
                && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
            if !kind_ok {
                return Err(format!(
                    "`{kind}` in `{s}` is not a GPU type (a letter or digit, then letters, digits, `_`, `.` or `-`)"
                ));
            }
            if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "`{n}` in `{s}` is not a count of GPUs (a whole number)"
                ));
            }
            match n.parse::<u32>() {
                Ok(0) => Err(format!(
                    "`{s}` asks for 0 GPUs: the count must be at least 1"
                )),
                Ok(count) => Ok(Gpus {
                    kind: Some(kind.to_string()),
                    count,
                }),
                Err(_) => Err(format!("`{s}` asks for {}", too_many())),
            }
        }
        other => Err(format!(
            "`gpus` must be a count or a `TYPE:COUNT` string, not a {}",
            other.type_str()
        )),
    }
}

/// One dependency of a step on another step, where it is written.
struct Dependency<'a> {
    /// The step depended on (an index into the valid steps).
    on: usize,
    /// Where it is written: `needs[j]` or the input's name.
    via: Via<'a>,
    location: Option<Location>,
}

enum Via<'a> {
    Needs(usize),
    Input(&'a str),
}

impl Dependency<'_> {
    /// Its key path, in step `index` of the file.
    fn key(&self, index: usize) -> String {
        match self.via {
            Via::Needs(j) => format!("steps[{index}].needs[{j}]"),
            Via::Input(name) => format!("steps[{index}].inputs.{}", toml_key(name)),
        }
    }
}

/// Report every cycle of steps through `needs` and `steps.NAME` inputs
/// (each step on at most one reported cycle), at the dependency of the
/// cycle written last in the file: the one that closed it. Only valid
/// steps take part; a step naming itself is reported where it is checked.
fn check_cycles(c: &mut Collector, steps: &[Step]) {
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        by_name.entry(s.name.as_str()).or_insert(i);
    }
    let deps: Vec<Vec<Dependency>> = steps
        .iter()
        .map(|s| {
            let needs = s
                .needs
                .iter()
                .enumerate()
                .map(|(j, n)| (n, Via::Needs(j), s.spans.needs.get(j)));
            let inputs = s.inputs.iter().filter_map(|(input, r)| match r {
                InputRef::Step(n) => Some((n, Via::Input(input), s.spans.inputs.get(input))),
                _ => None,
            });
            let mut out: Vec<Dependency> = needs
                .chain(inputs)
                .filter_map(|(n, via, at)| {
                    Some(Dependency {
                        on: *by_name.get(n.as_str())?,
                        via,
                        location: at.copied(),
                    })
                })
                .collect();
            out.sort_by_key(|d| d.location);
            out
        })
        .collect();

    // Depth-first, without recursion (a chain of 10,000 steps is fine):
    // `stack` holds each step being visited and the index of the next
    // dependency to follow; the one followed last is at that index - 1.
    const NEW: u8 = 0;
    const ON_STACK: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; steps.len()];
    let mut position = vec![0usize; steps.len()];
    let mut on_a_cycle = vec![false; steps.len()];
    for root in 0..steps.len() {
        if state[root] != NEW {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = ON_STACK;
        while let Some(&mut (at, ref mut next)) = stack.last_mut() {
            let Some(d) = deps[at].get(*next) else {
                state[at] = DONE;
                stack.pop();
                continue;
            };
            *next += 1;
            match state[d.on] {
                NEW => {
                    state[d.on] = ON_STACK;
                    position[d.on] = stack.len();
                    stack.push((d.on, 0));
                }
                ON_STACK => {
                    // The stack from `d.on` up, and back to `d.on`.
                    let cycle: Vec<(usize, &Dependency)> = stack[position[d.on]..]
                        .iter()
                        .map(|&(s, n)| (s, &deps[s][n - 1]))
                        .collect();
                    if cycle.iter().any(|&(s, _)| on_a_cycle[s]) {
                        continue;
                    }
                    for &(s, _) in &cycle {
                        on_a_cycle[s] = true;
                    }
                    report_cycle(c, steps, &cycle);
                }
                _ => {}
            }
        }
    }
}

/// How many steps and keys a cycle's diagnostic names before it elides.
const CYCLE_SHOWN: usize = 10;

/// `cycle`: each step of the loop with its dependency on the next one.
fn report_cycle(c: &mut Collector, steps: &[Step], cycle: &[(usize, &Dependency)]) {
    let n = cycle.len();
    let last = (0..n).max_by_key(|&i| cycle[i].1.location).unwrap_or(0);
    // The steps from the one whose dependency closed the loop, around.
    let names: Vec<&str> = (0..n)
        .map(|k| steps[cycle[(last + k) % n].0].name.as_str())
        .collect();
    let mut text = format!("steps form a cycle: `{}` needs ", names[0]);
    let mut links: Vec<String> = names[1..].iter().map(|s| format!("`{s}`")).collect();
    links.push(format!("`{}`", names[0]));
    if links.len() > CYCLE_SHOWN {
        let tail = links.split_off(links.len() - 2);
        links.truncate(CYCLE_SHOWN - 2);
        links.push("…".to_string());
        links.extend(tail);
        text = format!("steps form a cycle of {n} steps: `{}` needs ", names[0]);
    }
    text.push_str(&links.join(", which needs "));
    let mut written: Vec<(usize, &Dependency)> = cycle.to_vec();
    written.sort_by_key(|(_, d)| d.location);
    let mut keys: Vec<String> = written
        .iter()
        .take(CYCLE_SHOWN)
        .map(|&(s, d)| match d.location {
            Some(l) => format!("`{}` (line {})", d.key(steps[s].index), l.line),
            None => format!("`{}`", d.key(steps[s].index)),
        })
        .collect();
    if n > CYCLE_SHOWN {
        keys.push(format!("and {} more", n - CYCLE_SHOWN));
    }
    let (from, closing) = cycle[last];
    c.diags.push(
        Diagnostic::new(c.file, text)
            .at(closing.location)
            .key(closing.key(steps[from].index))
            .hint(format!(
                "a step runs after the steps it needs; remove one of these dependencies: {}",
                keys.join(", ")
            )),
    );
}
