//! A shared store on an OCI registry: `repro push`, `repro pull` and
//! `repro build --remote` against a real registry (Debian's
//! `docker-registry`, started per test on 127.0.0.1), with and without
//! basic auth. Builds run on the native sandbox.

mod common;

use common::{statuses, stderr, stdout, Repro};
use repro_tests::Registry;

const RECIPE: &str = r#"
[model]
name = "shared"
version = "1.0"

[toolchains.bb]
archive = "image"

[data.raw]
path = "raw"

[[steps]]
name = "prepare"
toolchain = "bb"
argv = ["sh", "-c", "cat /repro/in/raw/x.txt > /repro/out/prepared.txt; echo prepared"]
inputs = { raw = "data.raw" }
outputs = ["prepared.txt"]

[[steps]]
name = "train"
toolchain = "bb"
argv = ["sh", "-c", "wc -c < /repro/in/prep/prepared.txt > /repro/out/model.txt"]
inputs = { prep = "steps.prepare" }
outputs = ["model.txt"]
"#;

fn party() -> Repro {
    repro_tests::require_namespaces();
    let r = Repro::with_key();
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("raw/x.txt", "some training data\n");
    r.write("model.toml", RECIPE);
    r
}

fn target(reg: &Registry) -> String {
    format!("{}/team/models", reg.host())
}

fn built(r: &Repro) -> String {
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs docker-registry and root (native sandbox)"]
fn push_then_pull_into_a_fresh_store_verifies() {
    let reg = Registry::start(false);
    let a = party();
    built(&a);
    let t = target(&reg);
    let out = a.run(&["push", "shared@1.0", "--to", &t, "--insecure"]);
    assert!(
        out.status.success(),
        "push: {}\n{}",
        stderr(&out),
        reg.log()
    );
    let record = stdout(&out).trim().to_string();
    assert!(record.starts_with("sha256:"), "{record}");
    // A second push uploads nothing new.
    let out = a.run(&["push", "shared@1.0", "--to", &t, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(" 0 uploaded"), "{}", stderr(&out));

    let b = Repro::with_key();
    let out = b.run(&["pull", "shared@1.0", "--from", &t, "--insecure"]);
    assert!(out.status.success(), "pull: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), record);
    // Everything pulled re-hashes, and the version rebuilds from what was pulled alone.
    let out = b.run(&["fsck"]);
    assert!(
        out.status.success(),
        "fsck: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = b.run(&["verify", "shared@1.0"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // The image is a real image manifest, addressed by digest.
    let images: Vec<_> = std::fs::read_dir(b.store().join("v1/refs/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
}

#[test]
#[ignore = "needs docker-registry and root (native sandbox)"]
fn a_registry_missing_one_blob_gives_an_error_naming_it() {
    let reg = Registry::start(false);
    let a = party();
    built(&a);
    let t = target(&reg);
    let out = a.run(&["push", "shared@1.0", "--to", &t, "--insecure"]);
    assert!(out.status.success(), "push: {}", stderr(&out));
    // The output file of `train`: its content is `19\n`.
    let digest = format!("sha256:{}", hex_sha256(b"19\n"));
    let data = reg.blob_data(&digest);
    assert!(data.is_file(), "{} not in the registry", data.display());
    std::fs::remove_file(&data).unwrap();

    let b = Repro::with_key();
    let out = b.run(&["pull", "shared@1.0", "--from", &t, "--insecure"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("missing blob"), "{err}");
    // Nothing half-pulled became visible.
    assert!(!b.store().join("v1/refs/records/shared").exists());
}

#[test]
#[ignore = "needs docker-registry and root (native sandbox)"]
fn remote_cache_hits_skip_every_step_in_a_fresh_store() {
    let reg = Registry::start(false);
    let t = target(&reg);
    let a = party();
    let (out, doc) = a.build_json(&["model.toml", "--remote", &t, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(statuses(&doc), ["prepare=ran", "train=ran"]);

    let b = party();
    let (out, doc) = b.build_json(&["model.toml", "--remote", &t, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(statuses(&doc), ["prepare=cached", "train=cached"]);
    let model = b.store().join("v1/blobs/sha256").join(hex_sha256(b"19\n"));
    assert!(model.is_file(), "the cached output was downloaded");
    let out = b.run(&["fsck"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
#[ignore = "needs docker-registry and root (native sandbox)"]
fn basic_auth_from_env_and_docker_config_and_a_clear_refusal() {
    let reg = Registry::start(true);
    let t = target(&reg);
    let a = party();
    built(&a);

    // No credentials: refused.
    let out = a.run(&["push", "shared@1.0", "--to", &t, "--insecure"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refused access"), "{}", stderr(&out));

    // Wrong password: refused, and the password is in no message.
    let wrong = "Wr0ng-secret-pw";
    let out = a
        .cmd()
        .args(["push", "shared@1.0", "--to", &t, "--insecure"])
        .env("REPRO_REGISTRY_USERNAME", &reg.username)
        .env("REPRO_REGISTRY_PASSWORD", wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("refused access"), "{all}");
    assert!(all.contains("REPRO_REGISTRY_PASSWORD"), "a hint: {all}");
    assert!(!all.contains(wrong), "the password leaked: {all}");

    // Right credentials from the environment.
    let out = a
        .cmd()
        .args(["push", "shared@1.0", "--to", &t, "--insecure"])
        .env("REPRO_REGISTRY_USERNAME", &reg.username)
        .env("REPRO_REGISTRY_PASSWORD", &reg.password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Right credentials from a Docker config file.
    let b = Repro::with_key();
    let cfg = reg.docker_config(&b.tmp.path().join("docker"), &reg.username, &reg.password);
    let out = b
        .cmd()
        .args(["pull", "shared@1.0", "--from", &t, "--insecure"])
        .env("DOCKER_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Nothing the pull wrote holds the password.
    let out = b.run(&["fsck"]);
    assert!(out.status.success());
    for entry in walk(&b.store()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(reg.password.len())
                .any(|w| w == reg.password.as_bytes()),
            "{} holds the password",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
#[ignore = "needs docker-registry and root (native sandbox)"]
fn a_toolchain_image_named_by_registry_and_digest_is_pulled_and_verified() {
    let reg = Registry::start(false);
    let a = party();
    built(&a);
    let t = target(&reg);
    let out = a.run(&["push", "shared@1.0", "--to", &t, "--insecure"]);
    assert!(out.status.success(), "push: {}", stderr(&out));
    let lock = std::fs::read_to_string(a.work().join("model.lock")).unwrap();
    let image = lock
        .lines()
        .find_map(|l| l.strip_prefix("image = \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .expect("the lock pins the image");

    // A fresh store, a recipe that names the image in the registry: the
    // build pulls it by digest and runs.
    let b = party();
    let recipe = RECIPE.replace("archive = \"image\"", &format!("image = \"{t}@{image}\""));
    b.write("model.toml", &recipe);
    let out = b.run(&["build", "--insecure", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pulling image {image}")),
        "{}",
        stderr(&out)
    );
    let out = b.run(&["verify", "--insecure", "shared@1.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A digest the registry does not have: an error naming it.
    let c = party();
    let missing = format!("sha256:{}", "0".repeat(64));
    c.write(
        "model.toml",
        &RECIPE.replace("archive = \"image\"", &format!("image = \"{t}@{missing}\"")),
    );
    let out = c.run(&["build", "--insecure", "model.toml"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
}
