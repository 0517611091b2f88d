//! A throwaway OCI registry (Debian's `docker-registry`) for the tests of
//! `repro push`, `repro pull` and `repro build --remote`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The registry binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "docker-registry";

/// Panic, loudly, when the `docker-registry` binary is not on `PATH`.
/// Tests that need it are `#[ignore = "needs docker-registry ..."]`.
pub fn require_registry() {
    let found = Command::new(REGISTRY_BIN)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        panic!(
            "this test needs `{REGISTRY_BIN}` on PATH and it is missing\nhint: `apt-get install docker-registry` (ci/setup does it); run without `--run-ignored` to skip"
        );
    }
}

/// A `docker-registry serve` process on `127.0.0.1:<free port>` with its
/// storage in a temp dir; killed (and the dir removed) on drop.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// The user name accepted when started with auth.
    pub username: String,
    /// The password accepted when started with auth.
    pub password: String,
}

impl Registry {
    /// Start a registry; with `auth`, it requires HTTP basic auth as
    /// [`Registry::username`] / [`Registry::password`] (a bcrypt htpasswd
    /// file made with python3's `crypt`).
    pub fn start(auth: bool) -> Registry {
        require_registry();
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let username = "tester".to_string();
        let password = "Pa55-w0rd-registry".to_string();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("create registry storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if auth {
            let out = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    &password,
                ])
                .output()
                .expect("run python3 to hash the registry password");
            assert!(out.status.success(), "python3 crypt failed: {out:?}");
            let hash = String::from_utf8(out.stdout).expect("utf-8 hash");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{username}:{}\n", hash.trim()))
                .expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: repro-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry {
            child,
            dir,
            port,
            username,
            password,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let log = self.dir.path().join("registry.log");
        crate::wait_for_port(&mut self.child, self.port, "docker-registry", &log);
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the data of blob `digest` (`sha256:<hex>`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A directory holding a Docker `config.json` with this registry's
    /// credentials (for `DOCKER_CONFIG`).
    pub fn docker_config(&self, dest: &Path, username: &str, password: &str) -> PathBuf {
        use std::io::Write as _;
        std::fs::create_dir_all(dest).expect("create docker config dir");
        let auth = base64_encode(format!("{username}:{password}").as_bytes());
        let mut f = std::fs::File::create(dest.join("config.json")).expect("config.json");
        write!(
            f,
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            self.host()
        )
        .expect("write config.json");
        dest.to_path_buf()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(super::base64_encode(b"user:pw"), "dXNlcjpwdw==");
        assert_eq!(super::base64_encode(b"abc"), "YWJj");
        assert_eq!(super::base64_encode(b"ab"), "YWI=");
    }
}
