//! The promotion policy: a versioned TOML file whose SHA-256 is recorded
//! with every promotion decision.
//!
//! ```toml
//! revalidate_every = "90d"           # validated and production versions are verified again this often
//!
//! [stages.production]
//! from = "validated"                 # the version must be in this stage now (optional)
//! approvals = ["model-risk", "business-owner"]   # one counting approval per role
//! reproductions = 1                  # independent PASSED verifications (not the builder's key)
//! data_validation = "validate"       # this step is in the record and succeeded
//! owner = true                       # the recipe names `model.owner`
//! model_card = true                  # `repro card` was written for this record
//! thresholds = [
//!   { step = "evaluate", file = "metrics.json", path = "overall.auc", min = 0.9 },
//!   { step = "evaluate", file = "metrics.json", path = "slices.gaps.auc.gap", max = 0.05 },
//! ]
//! ```
//!
//! A threshold's `path` walks the metrics JSON: dotted object keys, and
//! `[i]` for the i-th element of an array (`reliability.table[0].count`).
//! The value must be a number; `null` or a missing key is unmet.
//!
//! Separation of duties is always on: the builder's key (the key that signed
//! the record) never counts as an approver nor as an independent
//! reproduction, and approvals and reproductions count only from registered,
//! unrevoked identities.

use std::collections::BTreeMap;
use std::path::Path;

use repro_store::{Hash, Store};
use serde::{Deserialize, Serialize};

use crate::base::{read_optional, Error, Result};

/// The default policy file in the store, `v1/policy.toml`.
pub fn default_path(store: &Store) -> std::path::PathBuf {
    store.ns_dir(repro_store::Ns::Policy)
}

/// A policy file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// How often a validated or production version must be verified again
    /// (`revalidate_every = "90d"`: a duration as in a recipe's `limits`,
    /// `ms`, `s`, `m`, `h`, `d`); `repro status` says when one is due.
    /// Kept with its place in the file, for errors; see
    /// [`Policy::revalidation_interval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revalidate_every: Option<toml::Spanned<String>>,
    /// The gate of each target stage (`validated`, `production`, `retired`).
    #[serde(default)]
    pub stages: BTreeMap<String, Gate>,
    /// What a rollback needs (`[rollback]`); without it no rollback is allowed.
    #[serde(default)]
    pub rollback: Option<RollbackRule>,
    /// What follows an emergency promotion (`[emergency]`).
    #[serde(default)]
    pub emergency: Option<EmergencyRule>,
}

impl Policy {
    /// `revalidate_every` as a duration (`None` when the policy has none;
    /// [`parse`] refuses one that is not a duration).
    pub fn revalidation_interval(&self) -> Option<std::time::Duration> {
        self.revalidate_every
            .as_ref()
            .and_then(|s| repro_recipes::parse_duration(s.get_ref()).ok())
    }
}

/// `[rollback]`: a rollback needs a counting approval of the target's
/// record in each of these roles, and the target's approvals are checked
/// again against the production gate in force.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollbackRule {
    /// Roles that must each approve the rollback target's record.
    pub approvals: Vec<String>,
}

/// `[emergency]`: an emergency promotion must be reviewed afterwards.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRule {
    /// Within how many hours of the emergency promotion.
    pub review_within_hours: u64,
    /// The role whose approval of the record, made after the promotion, is the review.
    pub review_role: String,
}

/// What a version needs to enter a stage.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The stage the version must be in now.
    #[serde(default)]
    pub from: Option<String>,
    /// Roles that must each approve.
    #[serde(default)]
    pub approvals: Vec<String>,
    /// Whether one person (one e-mail, whatever their keys) may fill two
    /// of the roles in `approvals`; by default each role needs another person.
    #[serde(default)]
    pub allow_same_person: bool,
    /// Independent reproductions needed.
    #[serde(default)]
    pub reproductions: u32,
    /// The data validation step that must have succeeded.
    #[serde(default)]
    pub data_validation: Option<String>,
    /// Whether the recipe must name an owner.
    #[serde(default)]
    pub owner: bool,
    /// Whether a model card must be present.
    #[serde(default)]
    pub model_card: bool,
    /// Evaluation thresholds.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
}

/// A bound on one metric.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The step that wrote the metrics.
    pub step: String,
    /// The file in the step's outputs.
    pub file: String,
    /// The JSON path: dotted keys, `[i]` indices.
    pub path: String,
    /// The value must be at least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// The value must be at most this.
    #[serde(default)]
    pub max: Option<f64>,
}

/// A policy read from a file, with its digest.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// `sha256:` of the file's bytes.
    pub digest: String,
    /// Where it came from.
    pub path: std::path::PathBuf,
}

/// Parse a policy from its text (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Policy> {
    let policy: Policy = toml::from_str(text).map_err(|e| {
        Error::Invalid(format!(
            "invalid policy `{}`: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    if let Some(every) = &policy.revalidate_every {
        if repro_recipes::parse_duration(every.get_ref()).is_err() {
            let at = repro_recipes::Location::from_offset(text, every.span().start);
            return Err(Error::Invalid(format!(
                "invalid policy `{}:{at}`: `revalidate_every = \"{}\"` is not a duration greater than zero\nhint: a number and a unit, `s`, `m`, `h` or `d`, e.g. `revalidate_every = \"90d\"` (parts add up: `1d12h`)",
                path.display(),
                every.get_ref().escape_debug(),
            )));
        }
    }
    for (stage, gate) in &policy.stages {
        stage.parse::<super::Stage>().map_err(|_| {
            Error::Invalid(format!(
                "invalid policy `{}`: unknown stage `[stages.{stage}]`\nhint: the stages are validated, production and retired",
                path.display()
            ))
        })?;
        if let Some(from) = &gate.from {
            from.parse::<super::Stage>().map_err(|_| {
                Error::Invalid(format!(
                    "invalid policy `{}`: `from = \"{from}\"` in `[stages.{stage}]` is not a stage, so the gate could never pass\nhint: the stages are candidate, validated, production and retired",
                    path.display()
                ))
            })?;
        }
        for t in &gate.thresholds {
            if t.min.is_none() && t.max.is_none() {
                return Err(Error::Invalid(format!(
                    "invalid policy `{}`: the threshold on `{}` in `[stages.{stage}]` has neither `min` nor `max`",
                    path.display(),
                    t.path
                )));
            }
            parse_path(&t.path).map_err(|why| {
                Error::Invalid(format!(
                    "invalid policy `{}`: threshold path `{}`: {why}",
                    path.display(),
                    t.path
                ))
            })?;
        }
    }
    Ok(policy)
}

/// Read the policy at `path` (or the store's default), and keep a copy of
/// its bytes in the store so the decision can be re-checked later.
pub fn load(store: &Store, path: Option<&Path>) -> Result<Loaded> {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_path(store));
    let Some(bytes) = read_optional(&path)? else {
        return Err(Error::Invalid(format!(
            "no policy at `{}`\nhint: pass `--policy <file>` or put one at `{}`",
            path.display(),
            default_path(store).display()
        )));
    };
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| Error::Invalid(format!("the policy `{}` is not UTF-8", path.display())))?;
    let policy = parse(&path, &text)?;
    store.put_bytes(&bytes)?;
    Ok(Loaded {
        policy,
        digest: format!("sha256:{}", Hash::of(&bytes).hex()),
        path,
    })
}

/// The store's policy (`v1/policy.toml`: the one in force, once `repro
/// policy set` put one there), read without writing anything; `None` when
/// there is none.
pub fn in_force(store: &Store) -> Result<Option<Loaded>> {
    let path = default_path(store);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| Error::Invalid(format!("the policy `{}` is not UTF-8", path.display())))?;
    Ok(Some(Loaded {
        policy: parse(&path, &text)?,
        digest: format!("sha256:{}", Hash::of(&bytes).hex()),
        path,
    }))
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Parse `a.b[0].c`.
pub fn parse_path(path: &str) -> std::result::Result<Vec<PathStep>, String> {
    let mut out = Vec::new();
    if path.is_empty() {
        return Err("it is empty".into());
    }
    for (n, part) in path.split('.').enumerate() {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        // Only the first part may be a bare index (`[0].x`, a top-level array).
        if key.is_empty() && (n != 0 || rest.is_empty()) {
            return Err(format!("empty key in `{path}`"));
        }
        if !key.is_empty() {
            out.push(PathStep::Key(key.to_string()));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("unclosed `[` in `{path}`"))?;
            let n: usize = rest[1..close]
                .parse()
                .map_err(|_| format!("`{}` is not an index in `{path}`", &rest[1..close]))?;
            out.push(PathStep::Index(n));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("expected `.` or `[` after `]` in `{path}`"));
            }
        }
    }
    Ok(out)
}

/// Follow `path` in `doc`.
pub fn lookup<'a>(
    doc: &'a serde_json::Value,
    path: &str,
) -> std::result::Result<&'a serde_json::Value, String> {
    let mut v = doc;
    for step in parse_path(path)? {
        v = match &step {
            PathStep::Key(k) => v.get(k.as_str()),
            PathStep::Index(i) => v.get(*i),
        }
        .ok_or_else(|| match step {
            PathStep::Key(k) => format!("no key `{k}`"),
            PathStep::Index(i) => format!("no element [{i}]"),
        })?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_walk_keys_and_indices() {
        let doc = serde_json::json!({"overall": {"auc": 0.97}, "t": [{"c": 1}, {"c": [5, 6]}]});
        assert_eq!(
            lookup(&doc, "overall.auc").unwrap(),
            &serde_json::json!(0.97)
        );
        assert_eq!(lookup(&doc, "t[1].c[1]").unwrap(), &serde_json::json!(6));
        assert_eq!(lookup(&doc, "overall.gap").unwrap_err(), "no key `gap`");
        assert_eq!(lookup(&doc, "t[2]").unwrap_err(), "no element [2]");
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[0").is_err());
    }

    #[test]
    fn policies_parse_and_bad_ones_are_refused() {
        let p = parse(
            Path::new("p.toml"),
            r#"
[stages.production]
approvals = ["model-risk"]
reproductions = 1
thresholds = [{ step = "evaluate", file = "metrics.json", path = "overall.auc", min = 0.9 }]
"#,
        )
        .unwrap();
        assert_eq!(p.stages["production"].approvals, ["model-risk"]);
        let e = parse(Path::new("p.toml"), "[stages.prod]\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown stage `[stages.prod]`"),
            "{e}"
        );
        let e = parse(
            Path::new("p.toml"),
            "[stages.production]\nthresholds = [{ step = \"e\", file = \"m\", path = \"a\" }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("neither `min` nor `max`"), "{e}");
        let e = parse(Path::new("p.toml"), "[stages.production]\napproval = []\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `approval`"), "{e}");
    }

    #[test]
    fn revalidate_every_is_a_top_level_duration_and_a_bad_one_is_named_with_its_place() {
        let p = parse(
            Path::new("p.toml"),
            "revalidate_every = \"90d\"\n\n[stages.production]\nreproductions = 1\n",
        )
        .unwrap();
        assert_eq!(
            p.revalidation_interval(),
            Some(std::time::Duration::from_secs(90 * 86400))
        );
        assert_eq!(
            parse(Path::new("p.toml"), "revalidate_every = \"1d12h\"\n")
                .unwrap()
                .revalidation_interval(),
            Some(std::time::Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            parse(Path::new("p.toml"), "[stages.production]\n")
                .unwrap()
                .revalidation_interval(),
            None
        );
        for (bad, shown) in [("90 days", "90 days"), ("0d", "0d"), ("", ""), ("3w", "3w")] {
            let text = format!("# policy\nrevalidate_every = \"{bad}\"\n");
            let e = parse(Path::new("p.toml"), &text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "invalid policy `p.toml:2:20`: `revalidate_every = \"{shown}\"` is not a duration greater than zero\nhint: "
                )),
                "{e}"
            );
            assert!(e.contains("e.g. `revalidate_every = \"90d\"`"), "{e}");
        }
        // Not a string, or inside a table where it means nothing: the
        // parser names the place.
        let e = parse(Path::new("p.toml"), "revalidate_every = 90\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1, column 20"), "{e}");
        let e = parse(
            Path::new("p.toml"),
            "[stages.production]\nrevalidate_every = \"90d\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `revalidate_every`"), "{e}");
    }

    #[test]
    fn a_gate_from_a_stage_that_does_not_exist_is_refused() {
        let ok = parse(
            Path::new("p.toml"),
            "[stages.production]\nfrom = \"validated\"\n",
        )
        .unwrap();
        assert_eq!(ok.stages["production"].from.as_deref(), Some("validated"));
        let e = parse(
            Path::new("p.toml"),
            "[stages.production]\nfrom = \"validate\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`p.toml`")
                && e.contains("from = \"validate\"")
                && e.contains("[stages.production]"),
            "{e}"
        );
    }

    #[test]
    fn the_breast_cancer_policy_parses() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/breast-cancer/policy.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let p = parse(&path, &text).unwrap();
        assert!(p.stages["production"]
            .thresholds
            .iter()
            .any(|t| t.path == "overall.auc"));
    }
}
