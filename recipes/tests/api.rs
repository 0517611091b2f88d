//! The public API on valid recipes: what parsing yields, substitution,
//! dependencies, floating references, pins and the lock file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use repro_recipes::{
    parse_file, parse_str, Error, FloatingRef, Gpus, ImageRef, InputRef, Kind, Lock, ParamValue,
    Resolved, TreeRef, DEFAULT_TIMEOUT,
};
use repro_store::{BlobDigest, Hash, ImageDigest, TreeDigest};

fn full_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/full.toml")
}

fn hash(c: char) -> Hash {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

const MINIMAL: &str = r#"
[model]
name = "m"
version = "1"

[toolchains.py]
archive = "py.tar"

[data.d]
path = "data"

[[steps]]
name = "a"
toolchain = "py"
argv = ["true"]
"#;

#[test]
fn full_fixture_parses_every_feature() {
    let path = full_path();
    let r = parse_file(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(r.digest, BlobDigest::from_hash(Hash::of(&bytes)));
    assert_eq!(r.source.as_bytes(), &bytes[..]);
    assert_eq!(r.path, path);
    assert_eq!(r.dir, path.parent().unwrap());

    assert_eq!(r.model.name, "breast-cancer-classifier");
    assert_eq!(r.model.version, "1.0.0");
    assert_eq!(
        r.model.owner.as_deref(),
        Some("Jane Doe <jane.doe@example.com>")
    );
    assert!(r.model.limitations.as_deref().unwrap().contains("569 rows"));
    assert_eq!(
        (
            r.build.source_date_epoch,
            r.build.python_hash_seed,
            r.build.threads
        ),
        (1_700_000_000, 7, 2)
    );

    assert_eq!(
        r.toolchains["sklearn"].reference,
        ImageRef::Pinned(ImageDigest::from_hash(hash('1')))
    );
    assert_eq!(r.toolchains["sklearn"].env["MPLBACKEND"], "Agg");
    assert_eq!(
        r.toolchains["local"].reference,
        ImageRef::Archive("images/debian-sklearn.tar".into())
    );
    assert_eq!(
        r.toolchains["daemon"].reference,
        ImageRef::Tag("example/sklearn:1".into())
    );
    assert_eq!(
        r.data["cancer"].reference,
        TreeRef::Pinned(TreeDigest::from_hash(hash('2')))
    );
    assert!(r.data["cancer"].source.is_some() && r.data["cancer"].description.is_some());
    assert_eq!(
        r.data["holdout"].reference,
        TreeRef::Path("data/holdout".into())
    );
    assert_eq!(r.code["pipeline"].reference, TreeRef::Path("src".into()));
    assert_eq!(
        r.code["pipeline"].git_commit.as_deref().map(str::len),
        Some(40)
    );
    assert_eq!(
        r.code["shared"].reference,
        TreeRef::Pinned(TreeDigest::from_hash(hash('3')))
    );

    assert_eq!(r.params["seed"], ParamValue::Integer(42));
    assert_eq!(r.params["learning_rate"], ParamValue::Float(0.5));
    assert_eq!(r.params["criterion"], ParamValue::String("gini".into()));
    assert_eq!(r.params["bootstrap"], ParamValue::Bool(true));

    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["validate", "featurize", "train"]);
    let train = r.step("train").unwrap();
    assert_eq!(train.index, 2);
    assert_eq!(train.toolchain, "sklearn");
    assert_eq!(train.inputs["features"], InputRef::Step("featurize".into()));
    assert_eq!(train.inputs["holdout"], InputRef::Data("holdout".into()));
    assert_eq!(train.inputs["code"], InputRef::Code("pipeline".into()));
    assert_eq!(train.deps(), ["featurize", "validate"]);
    let outs: Vec<(&str, bool)> = train
        .outputs
        .iter()
        .map(|o| (o.as_str(), o.is_dir()))
        .collect();
    assert_eq!(outs, [("model.pkl", false), ("reports", true)]);
    assert_eq!(train.limits.memory_bytes, Some(2 << 30));
    assert_eq!(train.limits.cpus, Some(1.5));
    assert_eq!(train.limits.timeout, Duration::from_secs(600));
    assert_eq!(
        train.limits.gpus,
        Some(Gpus {
            kind: Some("a100".into()),
            count: 2
        })
    );
    assert_eq!(r.step("validate").unwrap().limits.timeout, DEFAULT_TIMEOUT);
    assert_eq!(r.step("validate").unwrap().limits.gpus, None);
    assert_eq!(train.spans.name.map(|l| (l.line, l.column)), Some((62, 8)));

    let (argv, env) = train.expand(&r).unwrap();
    assert_eq!(
        argv,
        [
            "python3",
            "/repro/in/code/train.py",
            "--seed",
            "42",
            "--lr",
            "0.5",
            "--price",
            "$5"
        ]
    );
    assert_eq!(env["N_ESTIMATORS"], "200");
    assert_eq!(env["CRITERION"], "gini");
    assert_eq!(env["BOOTSTRAP"], "true");
}

#[test]
fn floating_lists_every_unpinned_reference_with_its_key() {
    let r = parse_file(&full_path()).unwrap();
    let floating: Vec<(Kind, String, String, FloatingRef)> = r
        .floating()
        .into_iter()
        .map(|f| (f.kind, f.name, f.key, f.reference))
        .collect();
    assert_eq!(
        floating,
        [
            (
                Kind::Toolchain,
                "daemon".into(),
                "toolchains.daemon.tag".into(),
                FloatingRef::Tag("example/sklearn:1".into())
            ),
            (
                Kind::Toolchain,
                "local".into(),
                "toolchains.local.archive".into(),
                FloatingRef::Archive("images/debian-sklearn.tar".into())
            ),
            (
                Kind::Data,
                "holdout".into(),
                "data.holdout.path".into(),
                FloatingRef::Path("data/holdout".into())
            ),
            (
                Kind::Code,
                "pipeline".into(),
                "code.pipeline.path".into(),
                FloatingRef::Path("src".into())
            ),
        ]
    );
}

#[test]
fn locked_pins_need_every_floating_reference_in_the_lock() {
    let r = parse_file(&full_path()).unwrap();
    // No lock: all four floating references are reported at once.
    let err = r.pins_from(None).unwrap_err();
    let keys: Vec<_> = err
        .diagnostics()
        .iter()
        .map(|d| d.key.clone().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "toolchains.local.archive",
            "toolchains.daemon.tag",
            "data.holdout.path",
            "code.pipeline.path"
        ]
    );
    assert!(err.to_string().contains("there is no lock file `"), "{err}");

    let resolved = Resolved {
        toolchains: BTreeMap::from([
            ("local".to_string(), ImageDigest::from_hash(hash('a'))),
            ("daemon".to_string(), ImageDigest::from_hash(hash('b'))),
            // Pinned in the recipe: the lock ignores it.
            ("sklearn".to_string(), ImageDigest::from_hash(hash('f'))),
        ]),
        data: BTreeMap::from([("holdout".to_string(), TreeDigest::from_hash(hash('c')))]),
        code: BTreeMap::from([
            ("pipeline".to_string(), TreeDigest::from_hash(hash('d'))),
            (
                "not-in-recipe".to_string(),
                TreeDigest::from_hash(hash('e')),
            ),
        ]),
    };
    let lock = r.lock_with(&resolved);
    assert!(!lock.code.contains_key("not-in-recipe"));
    assert!(!lock.toolchains.contains_key("sklearn"));
    let pins = r.pins_from(Some(&lock)).unwrap();
    assert_eq!(
        pins.toolchains["sklearn"],
        ImageDigest::from_hash(hash('1'))
    );
    assert_eq!(pins.toolchains["local"], ImageDigest::from_hash(hash('a')));
    assert_eq!(pins.toolchains["daemon"], ImageDigest::from_hash(hash('b')));
    assert_eq!(pins.data["cancer"], TreeDigest::from_hash(hash('2')));
    assert_eq!(pins.data["holdout"], TreeDigest::from_hash(hash('c')));
    assert_eq!(pins.code["pipeline"], TreeDigest::from_hash(hash('d')));
    assert_eq!(pins.code["shared"], TreeDigest::from_hash(hash('3')));

    // Changing a floating reference in the recipe invalidates its entry.
    let text = r.source.replace("path = \"src\"", "path = \"src2\"");
    let moved = parse_str(&r.path, &text).unwrap();
    let err = moved.pins_from(Some(&lock)).unwrap_err();
    assert_eq!(err.diagnostics().len(), 1);
    assert_eq!(
        err.diagnostics()[0].key.as_deref(),
        Some("code.pipeline.path")
    );
    assert!(
        err.to_string()
            .contains("pins `path = \"src\"`, not `path = \"src2\"`"),
        "{err}"
    );
}

#[test]
fn lock_text_is_deterministic_and_round_trips() {
    let r = parse_str(Path::new("model.toml"), MINIMAL).unwrap();
    let resolved = Resolved {
        toolchains: BTreeMap::from([("py".to_string(), ImageDigest::from_hash(hash('a')))]),
        data: BTreeMap::from([("d".to_string(), TreeDigest::from_hash(hash('c')))]),
        ..Resolved::default()
    };
    let lock = r.lock_with(&resolved);
    let text = lock.to_toml_string();
    let expected = format!(
        "# generated by `repro lock`; do not edit\nversion = 1\n\n\
         [toolchains.py]\narchive = \"py.tar\"\nimage = \"{}\"\n\n\
         [data.d]\npath = \"data\"\ndigest = \"{}\"\n",
        hash('a'),
        hash('c')
    );
    assert_eq!(text, expected);
    assert_eq!(
        Lock::parse_str(Path::new("model.lock"), &text).unwrap(),
        lock
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.lock");
    assert_eq!(Lock::read(&file).unwrap(), None);
    lock.write(&file).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);
    assert_eq!(Lock::read(&file).unwrap(), Some(lock));
    // Only the lock itself is left behind (no temporary files).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bad_lock_files_are_diagnosed_with_positions() {
    let text = "version = 2\n\n[data.d]\npath = \"data\"\ndigest = \"sha256:12\"\n";
    let err = Lock::parse_str(Path::new("model.lock"), text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error: lock file version 2 is not supported (expected 1)\n  --> model.lock:1:11\n  \
         = key: version\n  = hint: regenerate it with `repro lock <recipe>`\n\n\
         error: `12` is not a digest: expected 64 hex digits\n  --> model.lock:5:10\n  \
         = key: data.d.digest\n  = hint: digests are written `sha256:` followed by 64 lowercase hex digits"
    );
    let err = Lock::parse_str(Path::new("model.lock"), "version = 1\nextra = 1\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("error: unknown key `extra`\n  --> model.lock:2:1"),
        "{err}"
    );
}

#[test]
fn defaults_apply_when_tables_are_absent() {
    let r = parse_str(Path::new("model.toml"), MINIMAL).unwrap();
    assert_eq!(
        (
            r.build.source_date_epoch,
            r.build.python_hash_seed,
            r.build.threads
        ),
        (0, 0, 1)
    );
    assert_eq!(r.dir, Path::new("."));
    assert_eq!(r.lock_path(), Path::new("model.lock"));
    let a = &r.steps[0];
    assert_eq!(
        (a.limits.memory_bytes, a.limits.cpus, a.limits.timeout),
        (None, None, DEFAULT_TIMEOUT)
    );
    assert_eq!(a.limits.gpus, None);
    assert!(a.deps().is_empty() && a.outputs.is_empty() && a.env.is_empty());
}

/// `gpus` is a count, or a GPU type and a count; either prints back as
/// written in the string form (what follows `gpu:` in Slurm's `--gres`).
#[test]
fn gpus_are_a_count_or_a_type_and_a_count() {
    for (written, kind, count, shown) in [
        ("1", None, 1, "1"),
        ("8", None, 8, "8"),
        ("\"a100:2\"", Some("a100"), 2, "a100:2"),
        (
            "\"nvidia_a100-sxm4.80gb:4\"",
            Some("nvidia_a100-sxm4.80gb"),
            4,
            "nvidia_a100-sxm4.80gb:4",
        ),
        ("\"1g.10gb:02\"", Some("1g.10gb"), 2, "1g.10gb:2"),
        ("4294967295", None, u32::MAX, "4294967295"),
    ] {
        let text = MINIMAL.replace(
            "argv = [\"true\"]",
            &format!("argv = [\"true\"]\nlimits = {{ gpus = {written} }}"),
        );
        let r = parse_str(Path::new("model.toml"), &text)
            .unwrap_or_else(|e| panic!("gpus = {written}: {e}"));
        let gpus = r.steps[0].limits.gpus.clone().expect("gpus");
        assert_eq!(
            gpus,
            Gpus {
                kind: kind.map(String::from),
                count
            },
            "{written}"
        );
        assert_eq!(gpus.to_string(), shown);
    }
    let text = MINIMAL.replace(
        "argv = [\"true\"]",
        "argv = [\"true\"]\nlimits = { gpus = 4294967296 }",
    );
    let e = parse_str(Path::new("model.toml"), &text).unwrap_err();
    assert!(e.to_string().contains("more than 4294967295 GPUs"), "{e}");
    assert_eq!(
        e.diagnostics()[0].key.as_deref(),
        Some("steps[0].limits.gpus")
    );
}

#[test]
fn expand_reports_params_removed_after_parsing() {
    let text = MINIMAL.replace("argv = [\"true\"]", "argv = [\"echo\", \"${params.seed}\"]")
        + "\n[params]\nseed = 1\n";
    let mut r = parse_str(Path::new("model.toml"), &text).unwrap();
    assert_eq!(r.steps[0].expand(&r).unwrap().0, ["echo", "1"]);
    r.params.clear();
    let err = r.steps[0].expand(&r).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error: step `a` uses unknown parameter `seed`\n  --> model.toml:15:17\n  \
         = key: steps[0].argv[1]\n  = hint: no parameters are declared; add `seed = ...` under `[params]`"
    );
}

#[test]
fn param_values_print_as_toml_writes_them() {
    let shown: Vec<String> = [
        ParamValue::Float(2.0),
        ParamValue::Float(0.1),
        ParamValue::Float(-1.5e-7),
        ParamValue::Integer(-3),
        ParamValue::Bool(false),
        ParamValue::String("a \"b\"".into()),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        shown,
        ["2.0", "0.1", "-0.00000015", "-3", "false", "a \"b\""]
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert!(matches!(parse_file(&missing), Err(Error::Read { path, .. }) if path == missing));

    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"[model]\nname = \"caf\xe9\"\n").unwrap();
    let err = parse_file(&latin1).unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.message, "the recipe is not valid UTF-8");
    assert_eq!(d.location.map(|l| (l.line, l.column)), Some((2, 12)));
}

#[test]
fn all_semantic_errors_are_reported_together_in_file_order() {
    let text = MINIMAL
        .replace("name = \"a\"", "name = \"A\"")
        .replace("version = \"1\"", "version = \"1 2\"");
    let err = parse_str(Path::new("model.toml"), &text).unwrap_err();
    let keys: Vec<_> = err
        .diagnostics()
        .iter()
        .map(|d| d.key.clone().unwrap())
        .collect();
    assert_eq!(keys, ["model.version", "steps[0].name"]);
}

/// `n` steps `s0` .. `s{n-1}`, each needing the one before.
fn chain(n: usize) -> String {
    let mut text = String::from(
        "[model]\nname = \"m\"\nversion = \"1\"\n\n[toolchains.t]\nimage = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[steps]]\nname = \"s{i}\"\ntoolchain = \"t\"\nargv = [\"true\"]\n"
        ));
        if i > 0 {
            text.push_str(&format!("needs = [\"s{}\"]\n", i - 1));
        }
    }
    text
}

#[test]
fn a_recipe_without_steps_is_refused_naming_the_file() {
    let text = "[model]\nname = \"m\"\nversion = \"1\"\n";
    let err = parse_str(Path::new("dir/model.toml"), text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error: the recipe has no steps\n  --> dir/model.toml\n  = key: steps\n  = hint: add a \
         `[[steps]]` table with `name`, `toolchain` and `argv`; a recipe without steps would \
         build nothing and sign a record of it"
    );
    // `steps = []` is no better.
    let err = parse_str(Path::new("model.toml"), &format!("steps = []\n{text}")).unwrap_err();
    assert_eq!(err.diagnostics()[0].message, "the recipe has no steps");
}

#[test]
fn a_cycle_through_a_long_chain_is_found_without_recursion_and_named_briefly() {
    // 20,000 steps in a line: the search goes 20,000 steps deep, which a
    // recursive one would do on a test thread's small stack.
    let n = 20_000;
    let text = chain(n);
    assert_eq!(
        parse_str(Path::new("m.toml"), &text).unwrap().steps.len(),
        n
    );

    // `s0` needs the last step: one cycle through all of them, reported at
    // the key that closed it (the last one written, `s0`'s being first in
    // the file is not: `s19999` needs `s19998` is written last).
    let closed = text.replacen(
        "argv = [\"true\"]\n",
        &format!("argv = [\"true\"]\nneeds = [\"s{}\"]\n", n - 1),
        1,
    );
    let err = parse_str(Path::new("m.toml"), &closed).unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(err.diagnostics().len(), 1, "{err}");
    assert_eq!(d.key.as_deref(), Some("steps[19999].needs[0]"));
    assert_eq!(
        d.message,
        "steps form a cycle of 20000 steps: `s19999` needs `s19998`, which needs `s19997`, \
         which needs `s19996`, which needs `s19995`, which needs `s19994`, which needs \
         `s19993`, which needs `s19992`, which needs `s19991`, which needs …, which needs \
         `s0`, which needs `s19999`"
    );
    let hint = d.hint.as_deref().unwrap();
    assert!(
        hint.starts_with("a step runs after the steps it needs; remove one of these dependencies: `steps[0].needs[0]` (line 12), `steps[1].needs[0]` (line 18)"),
        "{hint}"
    );
    assert!(hint.ends_with(", and 19990 more"), "{hint}");
}

#[test]
fn cycles_are_found_among_steps_with_duplicate_names_and_other_errors() {
    // Two steps named `b` (reported as a duplicate); dependencies on `b`
    // mean the first. A step with another error takes no part.
    let text = "[model]\nname = \"m\"\nversion = \"1\"\n\n[toolchains.t]\nimage = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"\n\
        \n[[steps]]\nname = \"a\"\ntoolchain = \"t\"\nargv = [\"true\"]\nneeds = [\"b\"]\n\
        \n[[steps]]\nname = \"b\"\ntoolchain = \"t\"\nargv = [\"true\"]\ninputs = { x = \"steps.a\" }\n\
        \n[[steps]]\nname = \"b\"\ntoolchain = \"t\"\nargv = [\"true\"]\n\
        \n[[steps]]\nname = \"c\"\ntoolchain = \"nope\"\nargv = [\"true\"]\nneeds = [\"a\"]\n";
    let err = parse_str(Path::new("m.toml"), text).unwrap_err();
    let messages: Vec<(&str, Option<&str>)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.message.as_str(), d.key.as_deref()))
        .collect();
    assert_eq!(
        messages,
        [
            (
                "steps form a cycle: `b` needs `a`, which needs `b`",
                Some("steps[1].inputs.x")
            ),
            (
                "duplicate step name `b`, first used at line 15",
                Some("steps[2].name")
            ),
            (
                "step `c` uses unknown toolchain `nope`",
                Some("steps[3].toolchain")
            ),
        ]
    );
}

#[test]
fn duplicate_keys_and_tables_are_named_with_both_positions() {
    let cases = [
        // A table header twice: the second header's key, the first's line.
        (
            "[model]\nname = \"m\"\nversion = \"1\"\n\n[model]\nname = \"n\"\n",
            "duplicate table `[model]`, first defined at line 1",
            "5:2",
            Some("model"),
        ),
        // Dotted and quoted header keys.
        (
            "[toolchains.\"a.b\"]\ntag = \"x\"\n[toolchains.\"a.b\"]\ntag = \"y\"\n",
            "duplicate table `[toolchains.\"a.b\"]`, first defined at line 1",
            "3:13",
            Some("toolchains.\"a.b\""),
        ),
        // A key twice in a table.
        (
            "[model]\nname = \"m\"\nversion = \"1\"\nname = \"n\"\n",
            "duplicate key `model.name`, first defined at line 2",
            "4:1",
            Some("model.name"),
        ),
        // A key twice in the second entry of an array of tables.
        (
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\nargv = []\nname = \"c\"\n",
            "duplicate key `steps[1].name`, first defined at line 4",
            "6:1",
            Some("steps[1].name"),
        ),
        // An array of tables over a table.
        (
            "[model]\nname = \"m\"\n[[model]]\nname = \"n\"\n",
            "duplicate table `[[model]]`, first defined at line 1",
            "3:3",
            Some("model"),
        ),
        // A dotted key at the top level.
        (
            "model.name = \"m\"\nmodel.name = \"n\"\n",
            "duplicate key `model.name`, first defined at line 1",
            "2:7",
            Some("model.name"),
        ),
        // Inside an inline table: the key as written, at its position.
        (
            "model = { name = \"m\", name = \"n\" }\n",
            "duplicate key `name`",
            "1:23",
            None,
        ),
    ];
    for (text, message, at, key) in cases {
        let err = parse_str(Path::new("m.toml"), text).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!(d.message, message, "{text}");
        assert_eq!(
            d.location.map(|l| l.to_string()).as_deref(),
            Some(at),
            "{text}"
        );
        assert_eq!(d.key.as_deref(), key, "{text}");
    }
}

#[test]
fn thread_counts_state_the_range_they_accept() {
    let base = "[model]\nname = \"m\"\nversion = \"1\"\n\n[build]\n";
    for (value, message, hint) in [
        (
            "\"four\"",
            "invalid type: string \"four\", expected an integer from 1 to 4294967295",
            Some("write a number, without quotes"),
        ),
        (
            "4294967296",
            "invalid value: integer `4294967296`, expected an integer from 1 to 4294967295",
            None,
        ),
        (
            "0",
            "`threads` must be at least 1",
            Some("write an integer from 1 to 4294967295, e.g. `threads = 1`"),
        ),
    ] {
        let text = format!("{base}threads = {value}\n");
        let text = format!(
            "{text}{}",
            chain(1).replace("[model]\nname = \"m\"\nversion = \"1\"\n", "")
        );
        let err = parse_str(Path::new("m.toml"), &text).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!(d.message, message);
        assert_eq!(d.hint.as_deref(), hint);
        assert_eq!(d.key.as_deref(), Some("build.threads"));
        assert_eq!(d.location.map(|l| l.to_string()).as_deref(), Some("6:11"));
    }
    // The seed's range does start at 0.
    let text = format!("{base}python_hash_seed = \"0\"\n");
    let err = parse_str(Path::new("m.toml"), &text).unwrap_err();
    assert_eq!(
        err.diagnostics()[0].message,
        "invalid type: string \"0\", expected an integer from 0 to 4294967295"
    );
}
