//! A sandbox for running the `repro` binary: its own store, key and work folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub struct Repro {
    pub tmp: tempfile::TempDir,
    /// The sandbox backend passed as `REPRO_SANDBOX` (the binary's default when `None`).
    pub sandbox: Option<String>,
}

impl Repro {
    pub fn new() -> Repro {
        let r = Repro {
            tmp: tempfile::tempdir().expect("temp dir"),
            sandbox: None,
        };
        std::fs::create_dir_all(r.work()).unwrap();
        r
    }

    /// A repro with a signing key.
    pub fn with_key() -> Repro {
        let r = Repro::new();
        let out = r.run(&["key", "generate"]);
        assert!(out.status.success(), "key generate: {}", stderr(&out));
        r
    }

    pub fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    pub fn key(&self) -> PathBuf {
        self.tmp.path().join("signing.key")
    }

    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The command as a `std::process::Command` with piped output, for
    /// spawning in the background.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(repro_tests::repro_bin());
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("REPRO_STORE", self.store())
            .env("REPRO_KEY", self.key())
            .env("NO_COLOR", "1")
            // No configuration file: one in `/etc/repro` must not send the
            // tests' builds elsewhere (an empty file sets nothing).
            .env("REPRO_CONFIG", "/dev/null")
            .current_dir(self.work());
        if let Some(b) = &self.sandbox {
            c.env("REPRO_SANDBOX", b);
        }
        if let Some(h) = std::env::var_os("DOCKER_HOST") {
            c.env("DOCKER_HOST", h);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run repro")
    }

    /// The key of the store's administrator (see [`Repro::govern`]).
    pub fn admin_key(&self) -> PathBuf {
        self.tmp.path().join("admin.key")
    }

    /// Start governance with one administrator, Ada Admin (quorum 1), and
    /// put `policy` in force when given. Returns the administrator's key.
    pub fn govern(&self, policy: Option<&str>) -> PathBuf {
        let key = self.admin_key();
        let k = key.to_str().unwrap();
        let out = self.run(&[
            "key",
            "generate",
            "--key",
            k,
            "--name",
            "Ada Admin",
            "--email",
            "ada@example.com",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admins = self.write(
            "admins.toml",
            &format!(
                "quorum = 1\n[[admin]]\nname = \"Ada Admin\"\nemail = \"ada@example.com\"\nkey = \"{k}.pub\"\n"
            ),
        );
        let out = self.run(&["governance", "init", admins.to_str().unwrap(), "--key", k]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(text) = policy {
            let file = self.write("policy-in-force.toml", text);
            let out = self.run(&["policy", "set", file.to_str().unwrap(), "--key", k]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        key
    }

    /// Write a file under the work folder.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.work().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Build with `--json` and return the document.
    pub fn build_json(&self, args: &[&str]) -> (Output, serde_json::Value) {
        let mut a = vec!["build", "--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, doc)
    }

    /// Every blob file in the store.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.store().join("v1/blobs/sha256").join(hex)
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Flip one byte of a file in place (making it writable first).
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// The status of each step in a `--json` build document, as `name=status`.
pub fn statuses(doc: &serde_json::Value) -> Vec<String> {
    doc["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}={}",
                        s["name"].as_str().unwrap_or("?"),
                        s["status"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copy a directory tree (regular files and folders).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A DSSE envelope (`bytes`) with its statement changed by `edit`, the
/// signatures left as they were: a forgery that must not check out.
pub fn forge(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    let mut env: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let payload = B64.decode(env["payload"].as_str().unwrap()).unwrap();
    let mut statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    edit(&mut statement);
    env["payload"] = B64.encode(serde_json::to_vec(&statement).unwrap()).into();
    serde_json::to_vec_pretty(&env).unwrap()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Put `bytes` in the store of `r` as a valid blob (named by its hash).
pub fn put_blob(r: &Repro, bytes: &[u8]) -> String {
    let store = repro_store::Store::open(&r.store()).unwrap();
    store.put_bytes(bytes).unwrap().to_string()
}
