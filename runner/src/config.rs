//! The configuration file: the executor settings `repro build` and `repro
//! verify` take when their flags do not say.
//!
//! The file is TOML, found as [`HELP`] describes (`$REPRO_CONFIG`, else the
//! user's, else the system's); only the first that exists is read, and none
//! need exist. Its problems are reported like a recipe's: the file, the line
//! and column, the key and a hint. Flags override the file key by key
//! ([`settle`]), and the defaults (the local executor, one retry) apply last.

use std::ffi::OsString;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use repro_evidence::env_vars;
use repro_recipes::{Diagnostic, Location};
use repro_sandbox::SlurmOptions;
use serde::Deserialize;
use toml::Spanned;

/// The system-wide file, read when neither `$REPRO_CONFIG` nor the user's
/// file exists.
pub const SYSTEM_FILE: &str = "/etc/repro/config.toml";

/// How often a step whose node failed is submitted again when neither a
/// flag nor the file says.
pub const DEFAULT_RETRIES: u32 = 1;

/// Shown after the options of `repro build --help` and `repro verify --help`.
pub const HELP: &str = "\
Configuration file:
  --executor, --partition, --account and --retries can also be set in a TOML
  file: `$REPRO_CONFIG` when set (it must exist), else
  `$XDG_CONFIG_HOME/repro/config.toml` (default `~/.config/repro/config.toml`),
  else `/etc/repro/config.toml`; only the first that exists is read. A flag
  overrides the file, key by key.

    [executor]
    kind = \"slurm\"        # or \"local\" (the default)
    [executor.slurm]
    partition = \"gpu\"
    account = \"ml-risk\"
    retries = 2           # default 1";

/// What can be wrong with the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not valid: syntax, an unknown key, a wrong type or a bad
    /// value. The diagnostic names the file, line, column, key and a fix.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// The file exists but cannot be read.
    #[error("cannot read the configuration file `{}`: {source}\nhint: make it readable, or move it away to use no configuration file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `$REPRO_CONFIG` names a file that does not exist.
    #[error("`{}` names `{}`, which does not exist\nhint: fix the path, or unset `{}` to use the usual places", env_vars::REPRO_CONFIG, path.display(), env_vars::REPRO_CONFIG)]
    Missing {
        /// The file named.
        path: PathBuf,
    },
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Where steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// This machine, in the local sandbox.
    Local,
    /// A Slurm batch job per step.
    Slurm,
}

/// The executor settings of one source (the file, or the flags); `None`
/// where that source does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// `executor.kind` / `--executor`.
    pub kind: Option<ExecutorKind>,
    /// `executor.slurm.partition` / `--partition`.
    pub partition: Option<String>,
    /// `executor.slurm.account` / `--account`.
    pub account: Option<String>,
    /// `executor.slurm.retries` / `--retries`.
    pub retries: Option<u32>,
}

/// A configuration file, read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from; `None` when there is none.
    pub path: Option<PathBuf>,
    /// Its `[executor]` table.
    pub executor: ExecutorConfig,
}

/// The executor to use, every setting decided.
#[derive(Debug, Clone)]
pub struct Executor {
    /// Where steps run.
    pub kind: ExecutorKind,
    /// With [`ExecutorKind::Slurm`]: where and how jobs are submitted.
    pub slurm: SlurmOptions,
}

/// `flags` over `file`, key by key, then the defaults: the local executor
/// and [`DEFAULT_RETRIES`].
pub fn settle(flags: ExecutorConfig, file: ExecutorConfig) -> Executor {
    Executor {
        kind: flags.kind.or(file.kind).unwrap_or(ExecutorKind::Local),
        slurm: SlurmOptions {
            partition: flags.partition.or(file.partition),
            account: flags.account.or(file.account),
            retries: flags.retries.or(file.retries).unwrap_or(DEFAULT_RETRIES),
        },
    }
}

/// Read the configuration file of this process's environment (see
/// [`HELP`]); an empty [`Config`] when there is none.
pub fn load() -> Result<Config> {
    load_with(|name| std::env::var_os(name), Path::new(SYSTEM_FILE))
}

/// [`load`] with the environment given by `var` and the system-wide file
/// at `system`.
pub fn load_with(var: impl Fn(&str) -> Option<OsString>, system: &Path) -> Result<Config> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(named) = set(env_vars::REPRO_CONFIG) {
        let path = PathBuf::from(named);
        return match read(&path)? {
            Some(text) => parse(&path, &text),
            None => Err(Error::Missing { path }),
        };
    }
    let user = match set(env_vars::XDG_CONFIG_HOME) {
        Some(x) => Some(PathBuf::from(x).join("repro/config.toml")),
        None => set(env_vars::HOME).map(|h| PathBuf::from(h).join(".config/repro/config.toml")),
    };
    for path in user.into_iter().chain([system.to_path_buf()]) {
        if let Some(text) = read(&path)? {
            return parse(&path, &text);
        }
    }
    Ok(Config::default())
}

/// The text of `path`, or `None` when it does not exist.
fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    executor: Option<RawExecutor>,
}

/// `[executor]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecutor {
    kind: Option<Spanned<toml::Value>>,
    slurm: Option<RawSlurm>,
}

/// `[executor.slurm]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlurm {
    partition: Option<Spanned<toml::Value>>,
    account: Option<Spanned<toml::Value>>,
    retries: Option<Spanned<toml::Value>>,
}

const KIND_HINT: &str = "write `kind = \"local\"` or `kind = \"slurm\"`";
const RETRIES_HINT: &str =
    "write how often a step whose node failed is submitted again, e.g. `retries = 2`";

/// The hint for a value of the wrong type or shape at `key`.
fn hint_for(key: &str) -> String {
    match key {
        "executor" => {
            "`executor` is a table: write `[executor]` on a line of its own, then its keys".into()
        }
        "executor.slurm" => {
            "`executor.slurm` is a table: write `[executor.slurm]` on a line of its own, then its keys"
                .into()
        }
        "executor.kind" => KIND_HINT.into(),
        "executor.slurm.retries" => RETRIES_HINT.into(),
        _ => "see `repro build --help` for the keys of the file".into(),
    }
}

/// Parse and check the text of the configuration file `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let diagnostic = |message: String, at: Option<Range<usize>>, key: Option<String>| {
        let mut d = Diagnostic::new(path, message).at(at.map(|s| Location::of_span(text, s)));
        d.hint = Some(match &key {
            Some(k) => hint_for(k),
            None => {
                "the file is TOML, e.g. `[executor]` and then `kind = \"slurm\"` on the next line"
                    .into()
            }
        });
        d.key = key;
        Error::Invalid(Box::new(d))
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| diagnostic(e.message().trim().to_string(), e.span(), None))?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_of(e.path());
        let inner = e.into_inner();
        let span = inner.span();
        let message = inner.message().trim().replace('\n', "; ");
        if let Some(rest) = message.strip_prefix("unknown field ") {
            let (field, expected) = rest.split_once(", ").unwrap_or((rest, ""));
            let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let parent = key
                .as_deref()
                .and_then(|k| k.rsplit_once('.'))
                .map(|(p, _)| p);
            let mut d = Diagnostic::new(path, format!("unknown key {field}"))
                .at(span.map(|s| Location::of_span(text, s)));
            d.key = key.clone();
            d.hint = Some(match parent {
                Some(p) => format!("valid keys in `{p}` are {}", list(&valid)),
                None => format!("valid top-level keys are {}", list(&valid)),
            });
            return Error::Invalid(Box::new(d));
        }
        // `expected struct RawExecutor`: a table, in the file's words.
        let message = match message.split_once(", expected struct ") {
            Some((m, _)) => format!("{m}, expected a table"),
            None => message,
        };
        diagnostic(message, span, key)
    })?;
    let mut config = Config {
        path: Some(path.to_path_buf()),
        executor: ExecutorConfig::default(),
    };
    let Some(executor) = raw.executor else {
        return Ok(config);
    };
    let bad = |v: &Spanned<toml::Value>, key: &str, message: String, hint: String| {
        let mut d = Diagnostic::new(path, message)
            .at(Some(Location::of_span(text, v.span())))
            .key(key);
        d.hint = Some(hint);
        Error::Invalid(Box::new(d))
    };
    if let Some(v) = &executor.kind {
        config.executor.kind = Some(match v.get_ref() {
            toml::Value::String(s) if s == "local" => ExecutorKind::Local,
            toml::Value::String(s) if s == "slurm" => ExecutorKind::Slurm,
            toml::Value::String(s) => {
                return Err(bad(
                    v,
                    "executor.kind",
                    format!("`{s}` is not an executor"),
                    KIND_HINT.into(),
                ))
            }
            other => {
                return Err(bad(
                    v,
                    "executor.kind",
                    format!("`kind` must be a string, not {}", a(other.type_str())),
                    KIND_HINT.into(),
                ))
            }
        });
    }
    let Some(slurm) = executor.slurm else {
        return Ok(config);
    };
    for (v, name, slot) in [
        (
            &slurm.partition,
            "partition",
            &mut config.executor.partition,
        ),
        (&slurm.account, "account", &mut config.executor.account),
    ] {
        let Some(v) = v else { continue };
        let key = format!("executor.slurm.{name}");
        let hint = format!("write the name Slurm knows, e.g. `{name} = \"gpu\"`");
        *slot = Some(match v.get_ref() {
            toml::Value::String(s) => {
                slurm_name(s).map_err(|why| bad(v, &key, format!("`{name}`: {why}"), hint))?
            }
            other => {
                return Err(bad(
                    v,
                    &key,
                    format!("`{name}` must be a string, not {}", a(other.type_str())),
                    hint,
                ))
            }
        });
    }
    if let Some(v) = &slurm.retries {
        let key = "executor.slurm.retries";
        config.executor.retries = Some(match v.get_ref() {
            toml::Value::Integer(n) => u32::try_from(*n).map_err(|_| {
                bad(
                    v,
                    key,
                    format!("`retries` must be from 0 to {}, not `{n}`", u32::MAX),
                    RETRIES_HINT.into(),
                )
            })?,
            other => {
                return Err(bad(
                    v,
                    key,
                    format!("`retries` must be an integer, not {}", a(other.type_str())),
                    RETRIES_HINT.into(),
                ))
            }
        });
    }
    Ok(config)
}

/// Check a Slurm partition or account name (the file's or a flag's): not
/// empty, no whitespace or control characters.
pub fn slurm_name(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() {
        return Err("the name is empty".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{}` contains {c:?}", s.escape_debug()));
    }
    Ok(s.to_string())
}

/// `a string`, `an integer`.
fn a(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dotted key serde was at (the `Spanned` wrapper's own field left out).
fn key_of(path: &serde_path_to_error::Path) -> Option<String> {
    let mut out = String::new();
    for segment in path.iter() {
        if let serde_path_to_error::Segment::Map { key } = segment {
            if key.starts_with("$__serde_spanned") {
                continue;
            }
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# the team's cluster
[executor]
kind = "slurm"

[executor.slurm]
partition = "gpu"
account = "ml-risk"
retries = 2
"#;

    fn parse_err(text: &str) -> String {
        match parse(Path::new("config.toml"), text) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("parsed: {c:?}"),
        }
    }

    #[test]
    fn a_good_file_gives_every_key() {
        let c = parse(Path::new("/c/config.toml"), GOOD).expect("parse");
        assert_eq!(c.path.as_deref(), Some(Path::new("/c/config.toml")));
        assert_eq!(
            c.executor,
            ExecutorConfig {
                kind: Some(ExecutorKind::Slurm),
                partition: Some("gpu".into()),
                account: Some("ml-risk".into()),
                retries: Some(2),
            }
        );
        // Every key is optional, and so is every table.
        for text in ["", "[executor]\n", "[executor.slurm]\nretries = 0\n"] {
            let c = parse(Path::new("c.toml"), text).expect(text);
            assert_eq!(c.executor.kind, None, "{text}");
        }
        let c = parse(Path::new("c.toml"), "[executor]\nkind = \"local\"\n").unwrap();
        assert_eq!(c.executor.kind, Some(ExecutorKind::Local));
    }

    #[test]
    fn an_unknown_key_is_named_at_its_line_with_the_valid_ones() {
        let text = "[executor]\nkind = \"slurm\"\n\n[executor.slurm]\npartitoin = \"gpu\"\n";
        assert_eq!(
            parse_err(text),
            "error: unknown key `partitoin`\n  --> config.toml:5:1\n  = key: executor.slurm.partitoin\n  = hint: valid keys in `executor.slurm` are `partition`, `account`, `retries`"
        );
        let e = parse_err("[executor]\nkind = \"slurm\"\nqueue = \"x\"\n");
        assert!(e.contains("config.toml:3:1"), "{e}");
        assert!(e.contains("= key: executor.queue"), "{e}");
        assert!(
            e.contains("valid keys in `executor` are `kind`, `slurm`"),
            "{e}"
        );
        let e = parse_err("[store]\ndir = \"/x\"\n");
        assert!(e.contains("unknown key `store`"), "{e}");
        assert!(e.contains("valid top-level keys are `executor`"), "{e}");
    }

    #[test]
    fn bad_values_and_types_are_named_at_their_key_with_a_hint() {
        for (text, at, key, message, hint) in [
            (
                "[executor]\nkind = \"cluster\"\n",
                "config.toml:2:8",
                "executor.kind",
                "`cluster` is not an executor",
                "`kind = \"local\"` or `kind = \"slurm\"`",
            ),
            (
                "[executor]\nkind = 1\n",
                "config.toml:2:8",
                "executor.kind",
                "`kind` must be a string, not an integer",
                "`kind = \"slurm\"`",
            ),
            (
                "[executor.slurm]\nretries = -1\n",
                "config.toml:2:11",
                "executor.slurm.retries",
                "`retries` must be from 0 to 4294967295, not `-1`",
                "e.g. `retries = 2`",
            ),
            (
                "[executor.slurm]\nretries = \"2\"\n",
                "config.toml:2:11",
                "executor.slurm.retries",
                "`retries` must be an integer, not a string",
                "e.g. `retries = 2`",
            ),
            (
                "[executor.slurm]\npartition = \"\"\n",
                "config.toml:2:13",
                "executor.slurm.partition",
                "`partition`: the name is empty",
                "`partition = \"gpu\"`",
            ),
            (
                "[executor.slurm]\naccount = \"ml risk\"\n",
                "config.toml:2:11",
                "executor.slurm.account",
                "`account`: `ml risk` contains ' '",
                "`account = \"gpu\"`",
            ),
            (
                "executor = 3\n",
                "config.toml:1:12",
                "executor",
                "invalid type: integer `3`, expected a table",
                "write `[executor]`",
            ),
        ] {
            let e = parse_err(text);
            assert!(e.starts_with(&format!("error: {message}\n")), "{text}: {e}");
            assert!(e.contains(&format!("--> {at}\n")), "{text}: {e}");
            assert!(e.contains(&format!("= key: {key}\n")), "{text}: {e}");
            assert!(e.contains("= hint: ") && e.contains(hint), "{text}: {e}");
        }
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let e = parse_err("[executor]\nkind = slurm\n");
        assert!(e.contains("--> config.toml:2:8"), "{e}");
        assert!(e.contains("= hint: the file is TOML"), "{e}");
    }

    #[test]
    fn flags_override_the_file_key_by_key_and_defaults_come_last() {
        let file = parse(Path::new("c.toml"), GOOD).unwrap().executor;
        let flags = ExecutorConfig {
            kind: None,
            partition: Some("cpu".into()),
            account: None,
            retries: Some(0),
        };
        let e = settle(flags, file.clone());
        assert_eq!(e.kind, ExecutorKind::Slurm);
        assert_eq!(e.slurm.partition.as_deref(), Some("cpu"));
        assert_eq!(e.slurm.account.as_deref(), Some("ml-risk"));
        assert_eq!(e.slurm.retries, 0);

        let local = ExecutorConfig {
            kind: Some(ExecutorKind::Local),
            ..ExecutorConfig::default()
        };
        assert_eq!(settle(local, file).kind, ExecutorKind::Local);

        let e = settle(ExecutorConfig::default(), ExecutorConfig::default());
        assert_eq!(e.kind, ExecutorKind::Local);
        assert_eq!(e.slurm.retries, DEFAULT_RETRIES);
        assert_eq!(e.slurm.partition, None);
    }

    /// A fake environment and a fake `/etc` under one temporary directory.
    struct Env {
        dir: tempfile::TempDir,
        vars: Vec<(&'static str, OsString)>,
    }

    impl Env {
        fn new() -> Env {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("home");
            std::fs::create_dir_all(&home).unwrap();
            Env {
                vars: vec![(env_vars::HOME, home.into_os_string())],
                dir,
            }
        }
        fn set(&mut self, name: &'static str, value: &Path) {
            self.vars.push((name, value.as_os_str().to_owned()));
        }
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }
        fn system(&self) -> PathBuf {
            self.dir.path().join("etc/repro/config.toml")
        }
        fn load(&self) -> Result<Config> {
            load_with(
                |name| {
                    self.vars
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.clone())
                },
                &self.system(),
            )
        }
    }

    fn partition(text: &str) -> String {
        format!("[executor.slurm]\npartition = \"{text}\"\n")
    }

    #[test]
    fn the_first_file_that_exists_is_the_one_read() {
        let mut env = Env::new();
        assert_eq!(env.load().unwrap(), Config::default(), "no file at all");

        let system = env.write("etc/repro/config.toml", &partition("system"));
        let c = env.load().unwrap();
        assert_eq!(c.path, Some(system));
        assert_eq!(c.executor.partition.as_deref(), Some("system"));

        let home = env.write("home/.config/repro/config.toml", &partition("home"));
        let c = env.load().unwrap();
        assert_eq!(c.path, Some(home));
        assert_eq!(c.executor.partition.as_deref(), Some("home"));

        // `$XDG_CONFIG_HOME` replaces `~/.config`: without a file there,
        // the system's is next, not the one in `~/.config`.
        let xdg = env.dir.path().join("xdg");
        env.set(env_vars::XDG_CONFIG_HOME, &xdg);
        assert_eq!(
            env.load().unwrap().executor.partition.as_deref(),
            Some("system")
        );
        env.write("xdg/repro/config.toml", &partition("xdg"));
        assert_eq!(
            env.load().unwrap().executor.partition.as_deref(),
            Some("xdg")
        );

        // Only the first is read: a broken file after it does not matter.
        env.write("etc/repro/config.toml", "not toml at all [");
        assert_eq!(
            env.load().unwrap().executor.partition.as_deref(),
            Some("xdg")
        );

        let named = env.write("named.toml", &partition("named"));
        env.set(env_vars::REPRO_CONFIG, &named);
        let c = env.load().unwrap();
        assert_eq!(c.path, Some(named));
        assert_eq!(c.executor.partition.as_deref(), Some("named"));
    }

    #[test]
    fn a_named_file_must_exist_and_any_file_must_be_readable() {
        let mut env = Env::new();
        env.write("home/.config/repro/config.toml", &partition("home"));
        let missing = env.dir.path().join("nope.toml");
        env.set(env_vars::REPRO_CONFIG, &missing);
        let e = env.load().unwrap_err();
        assert!(
            matches!(&e, Error::Missing { path } if *path == missing),
            "{e:?}"
        );
        assert!(e.to_string().contains("REPRO_CONFIG"), "{e}");

        // A directory where the file should be cannot be read: an error
        // naming it, not a silent fallback to the next place.
        let mut env = Env::new();
        std::fs::create_dir_all(env.dir.path().join("home/.config/repro/config.toml")).unwrap();
        env.write("etc/repro/config.toml", &partition("system"));
        let e = env.load().unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e:?}");
        assert!(e.to_string().contains(".config/repro/config.toml`"), "{e}");
        // An empty `$REPRO_CONFIG` is as if unset.
        env.set(env_vars::REPRO_CONFIG, Path::new(""));
        assert!(matches!(env.load(), Err(Error::Read { .. })));
    }
}
