//! Support code for the tests of `repro`: a tiny busybox image built from
//! the host's static busybox (no registry needed), the same image with the
//! hermeticity probe (`probes/probe.c`) added, and loud checks for Docker
//! and for Linux namespaces.
//!
//! Test-support code panics with a clear message instead of returning
//! errors: a broken fixture should stop the test right there.

mod registry;
pub use registry::{require_registry, Registry, REGISTRY_BIN};
mod syslog;
pub use syslog::{require_rsyslog, Syslog, RSYSLOGD_BIN};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use repro_store::{ImageDigest, Store};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Where Debian's `busybox-static` installs busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets linked in `/bin` of the busybox image.
pub const APPLETS: &[&str] = &[
    "[",
    "awk",
    "cat",
    "chmod",
    "cp",
    "cut",
    "date",
    "dd",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "head",
    "hostname",
    "id",
    "ln",
    "ls",
    "mkdir",
    "mktemp",
    "mv",
    "nc",
    "printf",
    "pwd",
    "readlink",
    "rm",
    "sed",
    "seq",
    "sh",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "tee",
    "test",
    "touch",
    "tr",
    "true",
    "uname",
    "wc",
    "wget",
    "xargs",
    "yes",
];

/// The `PATH` in the busybox image's config.
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A variable set only by the busybox image's config, so tests can prove
/// that the image's environment does not leak into a step.
pub const IMAGE_ONLY_ENV: &str = "IMAGE_ONLY=leak";

/// The three blobs of the busybox image.
pub struct BusyboxBlobs {
    /// The single layer: an uncompressed tar.
    pub layer: Vec<u8>,
    /// The image config JSON.
    pub config: Vec<u8>,
    /// The OCI image manifest JSON.
    pub manifest: Vec<u8>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => panic!("no OCI architecture name for `{other}`"),
    }
}

/// Read the host's busybox and check that it is statically linked (a
/// dynamic one would not run in an image without a libc).
fn read_static_busybox() -> Vec<u8> {
    let mut bytes = Vec::new();
    std::fs::File::open(BUSYBOX)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .unwrap_or_else(|e| {
            panic!("cannot read `{BUSYBOX}`: {e}\nhint: install busybox-static (`apt-get install busybox-static`)")
        });
    assert!(
        !has_interpreter(&bytes),
        "`{BUSYBOX}` is dynamically linked\nhint: install busybox-static (`apt-get install busybox-static`)"
    );
    bytes
}

/// Whether an ELF file asks for a program interpreter (is dynamically
/// linked). Only 64-bit little-endian ELF is understood; anything else
/// counts as dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize).is_none_or(|t| t == PT_INTERP))
}

/// Build the busybox image's layer, config and manifest. Deterministic:
/// sorted entries, mtime 0, owner 0:0.
pub fn busybox_blobs() -> BusyboxBlobs {
    image_blobs(&[], "repro-tests busybox_blobs")
}

/// The path of the hermeticity probe, a static binary compiled from
/// `tests/probes/probe.c` by the crate's build script.
pub const PROBE: &str = env!("REPRO_PROBE");

/// Where the probe image puts [`PROBE`] (mode `0755`).
pub const PROBE_IN_IMAGE: &str = "/bin/probe";

/// Where the probe image puts a setuid-root copy of [`PROBE`] (mode `04755`,
/// owner 0:0).
pub const SUID_PROBE_IN_IMAGE: &str = "/bin/suid-probe";

/// A file added to the busybox layer: its path inside the image (relative,
/// no leading `/`), mode bits (including setuid) and content. Owned by 0:0.
pub struct ExtraFile {
    /// The path in the image, e.g. `bin/probe`.
    pub path: String,
    /// The mode, e.g. `0o4755`.
    pub mode: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The busybox image plus the probe: `/bin/probe` (0755), `/bin/suid-probe`
/// (04755, owner 0), and an empty `/usr` (so a write there meets the
/// read-only root, not a missing directory). Panics when the probe is not
/// a static binary.
pub fn probe_blobs() -> BusyboxBlobs {
    let probe = std::fs::read(PROBE).unwrap_or_else(|e| {
        panic!("cannot read the probe `{PROBE}`: {e}\nhint: `cargo build -p repro-tests` builds it")
    });
    assert!(
        !has_interpreter(&probe),
        "the probe `{PROBE}` is dynamically linked\nhint: install the static C library (`apt-get install libc6-dev`)"
    );
    let extra = [
        ExtraFile {
            path: PROBE_IN_IMAGE.trim_start_matches('/').to_string(),
            mode: 0o755,
            data: probe.clone(),
        },
        ExtraFile {
            path: SUID_PROBE_IN_IMAGE.trim_start_matches('/').to_string(),
            mode: 0o4755,
            data: probe,
        },
    ];
    image_blobs(&extra, "repro-tests probe_blobs")
}

/// The busybox image with `extra` files added to its layer (and, when there
/// are any, an empty `usr/` directory); `created_by` goes into the history.
pub fn image_blobs(extra: &[ExtraFile], created_by: &str) -> BusyboxBlobs {
    let busybox = read_static_busybox();
    let passwd =
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = b"root:x:0:\nnogroup:x:65534:\n";

    enum Entry<'a> {
        Dir(u32),
        File(u32, &'a [u8]),
        Link(&'a str),
    }
    let mut entries: Vec<(String, Entry)> = vec![
        ("bin/".into(), Entry::Dir(0o755)),
        ("bin/busybox".into(), Entry::File(0o755, &busybox)),
        ("etc/".into(), Entry::Dir(0o755)),
        ("etc/group".into(), Entry::File(0o644, group)),
        ("etc/passwd".into(), Entry::File(0o644, passwd)),
        ("repro/".into(), Entry::Dir(0o755)),
        ("repro/in/".into(), Entry::Dir(0o755)),
        ("repro/out/".into(), Entry::Dir(0o755)),
        ("tmp/".into(), Entry::Dir(0o1777)),
    ];
    entries.extend(
        APPLETS
            .iter()
            .map(|a| (format!("bin/{a}"), Entry::Link("busybox"))),
    );
    entries.extend(
        extra
            .iter()
            .map(|f| (f.path.clone(), Entry::File(f.mode, &f.data))),
    );
    if !extra.is_empty() {
        entries.push(("usr/".into(), Entry::Dir(0o755)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut layer = tar::Builder::new(Vec::new());
    layer.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let appended = match entry {
            Entry::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                layer.append_data(&mut h, path, std::io::empty())
            }
            Entry::File(mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                layer.append_data(&mut h, path, *data)
            }
            Entry::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                layer.append_link(&mut h, path, target)
            }
        };
        appended.unwrap_or_else(|e| panic!("cannot add `{path}` to the busybox layer: {e}"));
    }
    let layer = layer
        .into_inner()
        .expect("writing a tar into memory cannot fail");
    layer_image(layer, created_by)
}

/// An image whose one layer is an empty tar: for tests that need an image
/// in the store but never run a step in it on this machine (a Slurm job
/// would), so they need no busybox.
pub fn empty_image_blobs() -> BusyboxBlobs {
    let layer = tar::Builder::new(Vec::new())
        .into_inner()
        .expect("writing a tar into memory cannot fail");
    layer_image(layer, "repro-tests empty_image_blobs")
}

/// The config and manifest of an image of the one uncompressed `layer`.
fn layer_image(layer: Vec<u8>, created_by: &str) -> BusyboxBlobs {
    let layer_digest = sha256(&layer);

    let config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": [format!("PATH={IMAGE_PATH}"), IMAGE_ONLY_ENV],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": created_by }],
    });
    let config = serde_json::to_vec(&config).expect("json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).expect("json");
    BusyboxBlobs {
        layer,
        config,
        manifest,
    }
}

/// Write the busybox image as an OCI image layout (`oci-layout`,
/// `index.json` and `blobs/sha256/`) into `dest_dir` (created if missing),
/// and return `dest_dir`. Panics with "install busybox-static" when
/// the host has no static busybox.
pub fn busybox_oci_layout(dest_dir: &Path) -> PathBuf {
    write_oci_layout(&busybox_blobs(), dest_dir)
}

/// Write the probe image ([`probe_blobs`]: busybox plus `/bin/probe` and
/// `/bin/suid-probe`) as an OCI image layout into `dest_dir`, and return
/// `dest_dir`.
pub fn probe_oci_layout(dest_dir: &Path) -> PathBuf {
    write_oci_layout(&probe_blobs(), dest_dir)
}

/// Write `blobs` as an OCI image layout into `dest_dir` (created if
/// missing), and return `dest_dir`.
pub fn write_oci_layout(blobs: &BusyboxBlobs, dest_dir: &Path) -> PathBuf {
    let dir = dest_dir.to_path_buf();
    let blob_dir = dir.join("blobs").join("sha256");
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(bytes))
            .unwrap_or_else(|e| panic!("cannot write `{}`: {e}", path.display()));
    };
    std::fs::create_dir_all(&blob_dir)
        .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", blob_dir.display()));
    for bytes in [&blobs.layer, &blobs.config, &blobs.manifest] {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        write(&blob_dir.join(hex), bytes);
    }
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&blobs.manifest),
            "size": blobs.manifest.len(),
        }],
    });
    write(
        &dir.join("index.json"),
        &serde_json::to_vec(&index).expect("json"),
    );
    dir
}

/// Put the busybox image into `store` (layer and config as blobs, then the
/// manifest) and return its manifest digest.
pub fn busybox_image(store: &Store) -> ImageDigest {
    let blobs = busybox_blobs();
    store
        .put_bytes(&blobs.layer)
        .unwrap_or_else(|e| panic!("cannot store the busybox layer: {e}"));
    store
        .put_bytes(&blobs.config)
        .unwrap_or_else(|e| panic!("cannot store the busybox config: {e}"));
    store
        .put_image(&blobs.manifest)
        .unwrap_or_else(|e| panic!("cannot store the busybox manifest: {e}"))
}

/// Panic, loudly and with the reason, when the Docker daemon is unreachable.
/// Tests that need Docker call this first (and are `#[ignore = "needs
/// Docker: ..."]`), so a CI run that turns them on cannot pass silently.
///
/// Speaks `GET /_ping` to `DOCKER_HOST` (`unix://` or `tcp://`) or the
/// default socket `/var/run/docker.sock`.
pub fn require_docker() {
    if let Err(why) = ping_docker() {
        panic!(
            "this test needs a running Docker daemon, and it is unreachable: {why}\nhint: start it (`dockerd`) or set DOCKER_HOST; run without `--run-ignored` to skip"
        );
    }
}

/// Panic, loudly and with the reason, when this process cannot run the
/// native sandbox: it must be root, the kernel must allow user namespaces
/// (`/proc/sys/user/max_user_namespaces` above 0), and creating user, mount,
/// pid, network, ipc and uts namespaces must work (tried with `unshare`).
/// Tests of the native backend call this first (and are `#[ignore = "needs
/// root and user namespaces: ..."]`).
pub fn require_namespaces() {
    if let Err(why) = check_namespaces() {
        panic!(
            "this test needs root and Linux namespaces, and the kernel refuses them: {why}\nhint: run as root on a kernel with user namespaces enabled (`sysctl user.max_user_namespaces=15000`); run without `--run-ignored` to skip"
        );
    }
}

fn check_namespaces() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read `/proc/self/status`: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or("no effective uid in `/proc/self/status`")?;
    if euid != "0" {
        return Err(format!("the effective uid is {euid}, not 0 (root)"));
    }
    let max = "/proc/sys/user/max_user_namespaces";
    let limit = std::fs::read_to_string(max).map_err(|e| format!("cannot read `{max}`: {e}"))?;
    if limit.trim() == "0" {
        return Err(format!("`{max}` is 0: user namespaces are disabled"));
    }
    let args = [
        "--user",
        "--map-root-user",
        "--mount",
        "--pid",
        "--fork",
        "--net",
        "--ipc",
        "--uts",
        "true",
    ];
    let out = std::process::Command::new("unshare")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `unshare`: {e} (install util-linux)"))?;
    if !out.status.success() {
        return Err(format!(
            "`unshare {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn ping_docker() -> Result<(), String> {
    use std::time::Duration;
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let timeout = Some(Duration::from_secs(10));
    let mut response = String::new();
    if let Some(addr) = host.strip_prefix("tcp://") {
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("`{host}`: {e}"))?;
        s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        s.write_all(request).map_err(|e| format!("`{host}`: {e}"))?;
        s.read_to_string(&mut response)
            .map_err(|e| format!("`{host}`: {e}"))?;
    } else {
        let path = match host.strip_prefix("unix://") {
            Some(p) => p.to_string(),
            None if host.is_empty() => "/var/run/docker.sock".to_string(),
            None => return Err(format!("unsupported DOCKER_HOST `{host}`")),
        };
        let mut s =
            std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("`{path}`: {e}"))?;
        s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        s.write_all(request).map_err(|e| format!("`{path}`: {e}"))?;
        s.read_to_string(&mut response)
            .map_err(|e| format!("`{path}`: {e}"))?;
    }
    let status = response.lines().next().unwrap_or("");
    if status.contains(" 200 ") && response.ends_with("OK") {
        Ok(())
    } else {
        Err(format!("unexpected answer to /_ping: `{status}`"))
    }
}

/// The `repro` binary the end-to-end tests drive, built first if needed.
///
/// Cargo builds a package's binaries only for that package's own
/// integration tests, and these tests live in another package; so the first
/// call in each test process runs `cargo build -p repro-runner --bin repro`
/// into the same target directory and profile as the running test (a no-op
/// when it is up to date, and never a stale binary), and panics loudly if
/// that fails.
pub fn repro_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CARGO_BIN_EXE_repro") {
            return PathBuf::from(p);
        }
        // <target>/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("the test executable's path");
        let mut profile_dir = exe.parent().expect("a directory").to_path_buf();
        if profile_dir.ends_with("deps") {
            profile_dir.pop();
        }
        let target = profile_dir
            .parent()
            .expect("the target directory")
            .to_path_buf();
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "repro-runner",
            "--bin",
            "repro",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile != "debug" {
            cmd.args(["--profile", profile]);
        }
        let status = cmd.status().expect("run cargo to build the repro binary");
        assert!(
            status.success(),
            "`cargo build -p repro-runner` failed: the end-to-end tests need the `repro` binary"
        );
        let bin = profile_dir.join("repro");
        assert!(bin.is_file(), "`{}` was not built", bin.display());
        bin
    })
    .clone()
}

/// Wait until the server `child` (`what`) accepts connections on
/// 127.0.0.1:`port`; panic with its log file's contents if it exits first
/// or does not answer within 20 s.
pub(crate) fn wait_for_port(child: &mut std::process::Child, port: u16, what: &str, log: &Path) {
    use std::time::{Duration, Instant};
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before answering:\n{}", log());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not answer on 127.0.0.1:{port} within 20 s:\n{}",
        log()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_blobs_are_deterministic_and_consistent() {
        let a = busybox_blobs();
        let b = busybox_blobs();
        assert_eq!(sha256(&a.layer), sha256(&b.layer));
        assert_eq!(a.manifest, b.manifest);
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).expect("json");
        assert_eq!(manifest["config"]["digest"], sha256(&a.config));
        assert_eq!(manifest["layers"][0]["digest"], sha256(&a.layer));
        let config: serde_json::Value = serde_json::from_slice(&a.config).expect("json");
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&a.layer));
        assert!(config["config"]["Env"]
            .as_array()
            .expect("env")
            .contains(&json!(IMAGE_ONLY_ENV)));
    }

    #[test]
    fn the_layer_is_sorted_owned_by_root_with_mtime_zero() {
        let blobs = busybox_blobs();
        let mut archive = tar::Archive::new(&blobs.layer[..]);
        let mut paths = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let h = entry.header();
            assert_eq!(h.mtime().expect("mtime"), 0);
            assert_eq!(h.uid().expect("uid"), 0);
            assert_eq!(h.gid().expect("gid"), 0);
            paths.push(entry.path().expect("path").to_string_lossy().into_owned());
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/env",
            "etc/passwd",
            "tmp",
            "repro/out",
        ] {
            assert!(
                paths.iter().any(|p| p.trim_end_matches('/') == want),
                "{want} missing: {paths:?}"
            );
        }
    }

    #[test]
    fn the_layout_holds_every_blob_under_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = busybox_oci_layout(&dir.path().join("image"));
        assert_eq!(layout, dir.path().join("image"));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
                .expect("json");
        let digest = index["manifests"][0]["digest"].as_str().expect("digest");
        let hex = digest.trim_start_matches("sha256:");
        let manifest = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("manifest");
        assert_eq!(sha256(&manifest), digest);
        let count = std::fs::read_dir(layout.join("blobs/sha256"))
            .expect("blobs")
            .count();
        assert_eq!(count, 3);
    }

    #[test]
    fn the_probe_image_adds_a_static_probe_and_a_setuid_root_copy() {
        let blobs = probe_blobs();
        let mut archive = tar::Archive::new(&blobs.layer[..]);
        let mut found = std::collections::BTreeMap::new();
        let mut paths = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let h = entry.header();
            found.insert(
                path.clone(),
                (
                    h.mode().expect("mode"),
                    h.uid().expect("uid"),
                    h.size().expect("size"),
                ),
            );
            paths.push(path);
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "the layer must stay sorted");
        let size = std::fs::metadata(PROBE).expect("probe").len();
        assert_eq!(found.get("bin/probe"), Some(&(0o755, 0, size)));
        assert_eq!(found.get("bin/suid-probe"), Some(&(0o4755, 0, size)));
        assert!(found.contains_key("usr/"), "{paths:?}");
        assert!(found.contains_key("bin/busybox"));
        assert!(!has_interpreter(&std::fs::read(PROBE).expect("probe")));
        // A different image from plain busybox, and as deterministic.
        assert_ne!(blobs.manifest, busybox_blobs().manifest);
        assert_eq!(blobs.manifest, probe_blobs().manifest);
        assert!(!busybox_blobs().layer.windows(8).any(|w| w == b"bin/prob"));
    }

    #[test]
    fn the_probe_reports_refusals_with_exit_status_1() {
        let run = |args: &[&str]| {
            std::process::Command::new(PROBE)
                .args(args)
                .output()
                .expect("run the probe")
        };
        let out = run(&["read", "/nonexistent/repro-probe"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("refused: stat"));
        let out = run(&["read", "/proc/self/status"]);
        assert_eq!(out.status.code(), Some(0));
        let out = run(&["no-such-subcommand"]);
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    fn a_dynamic_or_foreign_binary_counts_as_dynamic() {
        assert!(has_interpreter(b"#!/bin/sh\n"));
        let ls = std::fs::read("/bin/ls").expect("/bin/ls");
        assert!(
            has_interpreter(&ls),
            "/bin/ls on Debian is dynamically linked"
        );
    }
}
