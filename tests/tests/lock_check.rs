//! `repro lock --check`: whether every floating input of a recipe still
//! resolves to what `model.lock` pins, without writing the lock file or any
//! ref. Exit 0 when nothing moved, 1 naming each input that moved (and, for
//! a folder, how many files were added, removed and changed), 1 without a
//! lock file, 2 for a recipe or lock that does not parse. Needs no sandbox.

mod common;

use std::path::{Path, PathBuf};

use common::{stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "scheduled"
version = "1.0.0"

[toolchains.bb]
archive = "image"

[data.train]
path = "data"

[[steps]]
name = "fit"
toolchain = "bb"
argv = ["sh", "-c", "sort /repro/in/data/rows.txt > /repro/out/model.txt"]
inputs = { data = "data.train" }
outputs = ["model.txt"]
"#;

/// A party with the busybox image, the recipe and three data files, locked.
fn locked() -> Repro {
    let r = Repro::new();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    r.write("data/rows.txt", "b\na\n");
    r.write("data/labels.txt", "1\n0\n");
    r.write("data/old.txt", "gone soon\n");
    let out = r.run(&["lock", "model.toml"]);
    assert!(out.status.success(), "lock: {}", stderr(&out));
    r
}

fn lock_bytes(r: &Repro) -> Vec<u8> {
    std::fs::read(r.work().join("model.lock")).unwrap()
}

/// The tree digest `repro hash` gives for a folder of the work folder.
fn tree_of(r: &Repro, dir: &str) -> String {
    let out = r.run(&["hash", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

/// Every file under `v1/refs` with its contents, and `v1/index.json`.
fn store_refs(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![(
        store.join("v1/index.json"),
        std::fs::read(store.join("v1/index.json")).unwrap_or_default(),
    )];
    let mut stack = vec![store.join("v1/refs")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn check_json(r: &Repro) -> (std::process::Output, serde_json::Value) {
    let out = r.run(&["lock", "--check", "--json", "model.toml"]);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&out), stderr(&out)));
    (out, doc)
}

#[test]
fn an_unchanged_project_checks_out_and_nothing_is_written() {
    let r = locked();
    let lock = lock_bytes(&r);
    let refs = store_refs(&r.store());
    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "all 2 floating inputs still resolve to what `model.lock` pins\n"
    );
    let (out, doc) = check_json(&r);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(doc["moved"], false, "{doc}");
    assert_eq!(doc["lock_found"], true, "{doc}");
    assert_eq!(doc["recipe"], "model.toml");
    assert_eq!(doc["lock"], "model.lock");
    let inputs = doc["inputs"].as_array().unwrap();
    let keys: Vec<&str> = inputs.iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["toolchains.bb", "data.train"]);
    let data = &inputs[1];
    assert_eq!(data["kind"], "data");
    assert_eq!(data["locked"], tree_of(&r, "data"));
    assert_eq!(data["now"], data["locked"]);
    assert_eq!(data["moved"], false);
    assert_eq!(
        (&data["added"], &data["removed"], &data["changed"]),
        (&0.into(), &0.into(), &0.into())
    );
    // An image has no file counts.
    assert_eq!(inputs[0]["kind"], "toolchain");
    assert!(inputs[0]["added"].is_null(), "{doc}");
    assert_eq!(lock_bytes(&r), lock, "the lock file was written");
    assert_eq!(store_refs(&r.store()), refs, "a ref moved");
}

#[test]
fn moved_data_is_named_with_the_files_added_removed_and_changed() {
    let r = locked();
    let lock = lock_bytes(&r);
    let old = tree_of(&r, "data");
    r.write("data/new.txt", "fresh rows\n");
    std::fs::remove_file(r.work().join("data/old.txt")).unwrap();
    r.write("data/rows.txt", "b\na\nc\n");
    let new = tree_of(&r, "data");
    let refs = store_refs(&r.store());

    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "data.train moved: 1 file added, 1 removed, 1 changed ({old} -> {new})\n\
             1 of 2 floating inputs moved since `model.lock` was written; `repro lock model.toml` locks them as they are now\n"
        )
    );
    let (out, doc) = check_json(&r);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(doc["moved"], true, "{doc}");
    let data = &doc["inputs"][1];
    assert_eq!(data["key"], "data.train");
    assert_eq!(data["moved"], true);
    assert_eq!(data["locked"], old.as_str());
    assert_eq!(data["now"], new.as_str());
    assert_eq!(
        (&data["added"], &data["removed"], &data["changed"]),
        (&1.into(), &1.into(), &1.into()),
        "{doc}"
    );
    assert_eq!(doc["inputs"][0]["moved"], false, "the image did not move");

    // Two more files, one of them in a new sub-folder: counted as files.
    r.write("data/more.txt", "x\n");
    r.write("data/sub/deep.txt", "y\n");
    let (out, doc) = check_json(&r);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let data = &doc["inputs"][1];
    assert_eq!(
        (&data["added"], &data["removed"], &data["changed"]),
        (&3.into(), &1.into(), &1.into()),
        "{doc}"
    );

    // Nothing was written but blobs: the lock file is byte for byte as it
    // was, no ref changed, and `build --locked` still refuses the data.
    assert_eq!(lock_bytes(&r), lock, "the lock file was written");
    assert_eq!(store_refs(&r.store()), refs, "a ref moved");

    // Where the store does not hold the locked tree, it says so.
    let other = r.tmp.path().join("other-store");
    let out = r.run(&[
        "--store",
        other.to_str().unwrap(),
        "lock",
        "--check",
        "model.toml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "data.train moved: the locked tree is not in this store, so which files changed is unknown ({old} -> "
        )),
        "{text}"
    );
    let out = r.run(&[
        "--store",
        other.to_str().unwrap(),
        "lock",
        "--check",
        "--json",
        "model.toml",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = &doc["inputs"][1];
    assert!(data["added"].is_null() && data["removed"].is_null() && data["changed"].is_null());
    assert_eq!(data["moved"], true);

    // `repro lock` accepts the change; then the check passes.
    let out = r.run(&["lock", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_moved_image_is_named_with_both_digests_and_not_registered() {
    let r = locked();
    let doc = check_json(&r).1;
    let was = doc["inputs"][0]["locked"].as_str().unwrap().to_string();
    let refs = store_refs(&r.store());
    // Another image in the archive's place.
    std::fs::remove_dir_all(r.work().join("image")).unwrap();
    let other = repro_tests::image_blobs(
        &[repro_tests::ExtraFile {
            path: "etc/retrained".into(),
            mode: 0o644,
            data: b"yes\n".to_vec(),
        }],
        "repro-tests lock --check",
    );
    repro_tests::write_oci_layout(&other, &r.work().join("image"));
    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "toolchains.bb moved: another image ({was} -> sha256:"
        )),
        "{text}"
    );
    let (_, doc) = check_json(&r);
    let image = &doc["inputs"][0];
    assert_eq!(image["moved"], true);
    assert_eq!(image["locked"], was.as_str());
    assert_ne!(image["now"], was.as_str());
    assert!(first.ends_with(&format!("-> {})", image["now"].as_str().unwrap())));
    assert_eq!(doc["inputs"][1]["moved"], false, "the data did not move");
    // The new image was read, not registered.
    assert_eq!(store_refs(&r.store()), refs, "a ref moved");
}

#[test]
fn without_a_lock_file_nothing_is_locked_yet() {
    let r = Repro::new();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    r.write("data/rows.txt", "b\na\n");
    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "no lock file: nothing is locked yet (`model.lock` does not exist; `repro lock model.toml` writes it)\n"
    );
    let (out, doc) = check_json(&r);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["lock_found"], false, "{doc}");
    assert_eq!(doc["moved"], true, "{doc}");
    assert!(!r.work().join("model.lock").exists(), "a lock was written");
}

#[test]
fn a_broken_recipe_or_lock_is_exit_2_at_its_line_and_key() {
    let r = locked();
    let lock = lock_bytes(&r);
    // The recipe: a key the format does not have.
    r.write(
        "model.toml",
        &RECIPE.replace("[data.train]", "[data.train]\nwhere = 1"),
    );
    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("model.toml:10:1"), "{err}");
    assert!(err.contains("key: data.train.where"), "{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    // The lock: a digest that is not one.
    r.write("model.toml", RECIPE);
    let text = String::from_utf8(lock.clone()).unwrap();
    let start = text.find("digest = \"sha256:").unwrap() + "digest = \"sha256:".len();
    let mut broken = text.clone();
    broken.replace_range(start..start + 4, "zzzz");
    r.write("model.lock", &broken);
    let out = r.run(&["lock", "--check", "model.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("model.lock:"), "{err}");
    assert!(err.contains("key: data.train.digest"), "{err}");
    assert_eq!(
        std::fs::read_to_string(r.work().join("model.lock")).unwrap(),
        broken
    );
}
