//! The Docker backend against a real daemon, with the busybox test image.
//!
//! All ignored in a plain `cargo test`; CI runs them with `--run-ignored
//! all`, and then a missing daemon fails them loudly.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::container::ListContainersOptions;
use bollard::Docker;
use repro_sandbox::{
    base_env, DockerSandbox, Error, Limits, Mount, StepSpec, Termination, LABEL_STEP,
};
use repro_store::{ImageDigest, Store};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

struct Fixture {
    dir: TempDir,
    image: ImageDigest,
    sandbox: DockerSandbox,
}

async fn fixture() -> Fixture {
    repro_tests::require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let image = repro_tests::busybox_image(&store);
    let sandbox = DockerSandbox::connect().await.expect("connect");
    sandbox
        .ensure_image(&store, &image)
        .await
        .expect("ensure_image");
    Fixture {
        dir,
        image,
        sandbox,
    }
}

/// A step name no other test (or test run) uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

impl Fixture {
    fn spec(&self, step: &str, script: &str) -> StepSpec {
        StepSpec {
            step: unique(step),
            image: self.image,
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: base_env(0, 0, 1),
            inputs: vec![],
            output: self.dir.path().join(format!("{step}-out")),
            log: self.dir.path().join("logs").join(format!("{step}.log")),
            limits: Limits {
                timeout: Duration::from_secs(60),
                ..Limits::default()
            },
        }
    }

    async fn run(&self, spec: &StepSpec) -> (Termination, String) {
        let outcome = self
            .sandbox
            .run(spec, CancellationToken::new())
            .await
            .expect("run");
        let log = std::fs::read_to_string(&spec.log).expect("log");
        (outcome.termination, log)
    }
}

/// The containers (running or not) of one step.
async fn containers_of(step: &str) -> usize {
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_STEP}={step}")])]);
    let options = ListContainersOptions {
        all: true,
        filters,
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .len()
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn exit_code_and_combined_log() {
    let fx = fixture().await;
    let spec = fx.spec("exit", "echo out; echo err >&2; exit 3");
    let (termination, log) = fx.run(&spec).await;
    assert_eq!(termination, Termination::Exited(3));
    assert!(log.contains("out\n") && log.contains("err\n"), "{log:?}");
    assert_eq!(
        containers_of(&spec.step).await,
        0,
        "the container must be removed"
    );

    let spec = fx.spec("ok", "echo fine");
    let outcome = fx
        .sandbox
        .run(&spec, CancellationToken::new())
        .await
        .expect("run");
    assert!(outcome.success());
    assert_eq!(std::fs::read_to_string(&spec.log).expect("log"), "fine\n");
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn env_is_exactly_the_given_env() {
    let fx = fixture().await;
    let mut spec = fx.spec("env", "");
    spec.argv = vec!["env".into()];
    spec.env.insert("EXTRA".into(), "a b=c".into());
    let (termination, log) = fx.run(&spec).await;
    assert_eq!(termination, Termination::Exited(0));
    let mut seen: Vec<&str> = log.lines().collect();
    seen.sort_unstable();
    let want: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        seen, want,
        "no HOSTNAME, no image env (IMAGE_ONLY), nothing from the host"
    );
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn identity_is_fixed() {
    let fx = fixture().await;
    let spec = fx.spec("identity", "hostname; id -u; id -g; pwd; echo $HOME; umask");
    let (termination, log) = fx.run(&spec).await;
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(log, "repro\n65534\n65534\n/tmp\n/tmp\n0022\n");
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn only_out_and_tmp_are_writable() {
    let fx = fixture().await;
    let input = fx.dir.path().join("input");
    std::fs::create_dir_all(&input).expect("input dir");
    std::fs::write(input.join("data.txt"), "hello").expect("input file");
    let mut spec = fx.spec(
        "writes",
        "cat /repro/in/x/data.txt; echo; \
         touch /f 2>/dev/null && echo ROOT-WRITABLE; \
         touch /etc/f 2>/dev/null && echo ETC-WRITABLE; \
         touch /repro/in/x/f 2>/dev/null && echo IN-WRITABLE; \
         (echo y > /repro/in/x/data.txt) 2>/dev/null && echo IN-FILE-WRITABLE; \
         touch /repro/f 2>/dev/null && echo REPRO-WRITABLE; \
         echo result > /repro/out/result.txt && echo out-ok; \
         echo t > /tmp/t && echo tmp-ok",
    );
    spec.inputs = vec![Mount {
        name: "x".into(),
        host: input.clone(),
        tree: None,
    }];
    let (termination, log) = fx.run(&spec).await;
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(log, "hello\nout-ok\ntmp-ok\n");
    assert_eq!(
        std::fs::read_to_string(spec.output.join("result.txt")).expect("output"),
        "result\n"
    );
    let names: Vec<_> = std::fs::read_dir(&input)
        .expect("input")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("data.txt")]);
    assert_eq!(
        std::fs::read_to_string(input.join("data.txt")).expect("input"),
        "hello"
    );
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn no_network() {
    let fx = fixture().await;
    // A server the step could reach through the host's Docker bridge if it
    // had a network.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let bridge = docker
        .inspect_network::<String>("bridge", None)
        .await
        .expect("bridge network");
    let ipam = bridge
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().next());
    let ipam = ipam.expect("the bridge network has an address range");
    // The gateway, or the subnet's first address (what Docker picks).
    let gateway = ipam.gateway.unwrap_or_else(|| {
        let subnet = ipam.subnet.expect("a subnet");
        let base: std::net::Ipv4Addr = subnet
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("an IPv4 subnet");
        std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
    });
    // stdout and stderr are separate streams, so their relative order in
    // the log is not guaranteed: mark the lines that matter.
    let script = format!(
        "for i in $(tail -n +3 /proc/net/dev | cut -d: -f1); do echo \"if:$i\"; done; \
         wget -q -T 3 -O - http://{gateway}:{port}/ 2>/dev/null && echo WGET-CONNECTED; \
         echo | nc -w 3 {gateway} {port} 2>/dev/null && echo NC-CONNECTED; \
         echo | nc -w 3 127.0.0.1 {port} 2>/dev/null && echo LOOPBACK-CONNECTED; \
         true"
    );
    let (termination, log) = fx.run(&fx.spec("network", &script)).await;
    assert_eq!(termination, Termination::Exited(0));
    let interfaces: Vec<&str> = log.lines().filter(|l| l.starts_with("if:")).collect();
    assert_eq!(interfaces, ["if:lo"], "only loopback: {log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    assert!(
        listener.accept().is_err(),
        "nothing may have connected to the host"
    );
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn no_capabilities() {
    let fx = fixture().await;
    let (termination, log) = fx
        .run(&fx.spec(
            "caps",
            "grep Cap /proc/self/status; grep NoNewPrivs /proc/self/status",
        ))
        .await;
    assert_eq!(termination, Termination::Exited(0));
    let caps: Vec<&str> = log.lines().filter(|l| l.starts_with("Cap")).collect();
    assert_eq!(caps.len(), 5, "{log}");
    for line in caps {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn timeout_kills_and_removes_the_container() {
    let fx = fixture().await;
    let mut spec = fx.spec("timeout", "echo started; sleep 60");
    spec.limits.timeout = Duration::from_secs(2);
    let begun = Instant::now();
    let outcome = fx
        .sandbox
        .run(&spec, CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(outcome.termination, Termination::TimedOut);
    assert!(outcome.duration >= Duration::from_secs(2), "{outcome:?}");
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(&spec.log).expect("log"),
        "started\n"
    );
    assert_eq!(containers_of(&spec.step).await, 0);
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn memory_hog_is_out_of_memory() {
    let fx = fixture().await;
    let mut spec = fx.spec("oom", "head -c 400m /dev/zero | tail > /dev/null");
    spec.limits.memory_bytes = Some(64 << 20);
    let (termination, log) = fx.run(&spec).await;
    assert_eq!(termination, Termination::OutOfMemory, "{log}");
    assert_eq!(containers_of(&spec.step).await, 0);
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn pids_limit_holds() {
    let fx = fixture().await;
    let mut spec = fx.spec(
        "pids",
        "for i in $(seq 40); do sleep 5 & done; echo ALL-FORKED",
    );
    spec.limits.pids = 10;
    let (termination, log) = fx.run(&spec).await;
    // busybox sh gives up with status 2 when fork fails.
    assert_eq!(termination, Termination::Exited(2), "{log}");
    assert!(
        log.contains("can't fork") && !log.contains("ALL-FORKED"),
        "{log}"
    );
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn cancellation_kills_and_removes_the_container() {
    let fx = fixture().await;
    let spec = fx.spec("cancel", "sleep 60");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let step = spec.step.clone();
    let watcher = tokio::spawn(async move {
        // Cancel once the container exists, so the test covers a live one.
        for _ in 0..100 {
            if containers_of(&step).await > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let begun = Instant::now();
    let outcome = fx.sandbox.run(&spec, cancel).await.expect("run");
    watcher.await.expect("watcher");
    assert_eq!(outcome.termination, Termination::Cancelled);
    assert!(begun.elapsed() < Duration::from_secs(30));
    assert_eq!(containers_of(&spec.step).await, 0);
}

#[tokio::test]
#[ignore = "needs Docker: runs containers"]
async fn dropping_the_run_future_removes_the_container() {
    let fx = fixture().await;
    let spec = fx.spec("dropped", "sleep 60");
    let step = spec.step.clone();
    let run = fx.sandbox.run(&spec, CancellationToken::new());
    let timed = tokio::time::timeout(Duration::from_secs(3), run).await;
    assert!(timed.is_err(), "the step must still be running");
    assert_eq!(
        containers_of(&step).await,
        1,
        "the container is there while running"
    );
    for _ in 0..100 {
        if containers_of(&step).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the container of a dropped run was not removed");
}

#[tokio::test]
#[ignore = "needs Docker: loads images"]
async fn ensure_image_loads_what_the_daemon_lacks() {
    repro_tests::require_docker();
    // A busybox image no other test uses, so removing it races nothing.
    let blobs = repro_tests::busybox_blobs();
    let mut config: serde_json::Value = serde_json::from_slice(&blobs.config).expect("json");
    config["config"]["Labels"] = serde_json::json!({ "nonce": unique("load") });
    let config = serde_json::to_vec(&config).expect("json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&blobs.manifest).expect("json");
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    manifest["config"]["digest"] = serde_json::json!(config_digest);
    manifest["config"]["size"] = serde_json::json!(config.len());
    let manifest = serde_json::to_vec(&manifest).expect("json");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    store.put_bytes(&blobs.layer).expect("layer");
    store.put_bytes(&config).expect("config");
    let image = store.put_image(&manifest).expect("manifest");

    let docker = Docker::connect_with_local_defaults().expect("docker");
    let remove = bollard::image::RemoveImageOptions {
        force: true,
        noprune: false,
    };
    let _ = docker
        .remove_image(&config_digest, Some(remove), None)
        .await;
    assert!(
        docker.inspect_image(&config_digest).await.is_err(),
        "the daemon must lack it"
    );

    let sandbox = DockerSandbox::connect().await.expect("connect");
    sandbox
        .ensure_image(&store, &image)
        .await
        .expect("ensure_image");
    let loaded = docker.inspect_image(&config_digest).await.expect("loaded");
    assert_eq!(loaded.id.as_deref(), Some(config_digest.as_str()));
    // A second call finds it.
    sandbox
        .ensure_image(&store, &image)
        .await
        .expect("ensure_image again");

    let mut spec = StepSpec {
        step: unique("loaded"),
        image,
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo hi; echo x > /repro/out/f".into(),
        ],
        env: base_env(0, 0, 1),
        inputs: vec![],
        output: dir.path().join("out"),
        log: dir.path().join("log"),
        limits: Limits::default(),
    };
    let outcome = sandbox
        .run(&spec, CancellationToken::new())
        .await
        .expect("run");
    assert!(outcome.success());
    assert_eq!(std::fs::read_to_string(&spec.log).expect("log"), "hi\n");

    // A leftover output makes the next run refuse to start.
    spec.step = unique("dirty");
    let err = sandbox
        .run(&spec, CancellationToken::new())
        .await
        .expect_err("output not empty");
    assert!(matches!(err, Error::OutputNotEmpty { .. }), "{err}");

    // An image removed from the daemon behind the sandbox's back.
    let _ = docker
        .remove_image(&config_digest, Some(remove), None)
        .await;
    spec.step = unique("removed");
    spec.output = dir.path().join("out2");
    let err = sandbox
        .run(&spec, CancellationToken::new())
        .await
        .expect_err("image gone");
    assert!(matches!(err, Error::ImageNotEnsured { .. }), "{err}");
    assert_eq!(containers_of(&spec.step).await, 0);
}

#[tokio::test]
#[ignore = "needs Docker: talks to the daemon"]
async fn run_needs_ensure_image_first_and_describe_names_docker() {
    repro_tests::require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let image = repro_tests::busybox_image(&store);
    let sandbox = DockerSandbox::connect().await.expect("connect");
    let spec = StepSpec {
        step: unique("unloaded"),
        image,
        argv: vec!["true".into()],
        env: BTreeMap::new(),
        inputs: vec![],
        output: dir.path().join("out"),
        log: dir.path().join("log"),
        limits: Limits::default(),
    };
    let err = sandbox
        .run(&spec, CancellationToken::new())
        .await
        .expect_err("not ensured");
    assert!(matches!(err, Error::ImageNotEnsured { .. }), "{err}");
    assert!(
        err.to_string().contains("hint: call `ensure_image`"),
        "{err}"
    );

    let info = sandbox.describe().await.expect("describe");
    assert_eq!(info.backend, "docker");
    assert!(!info.server_version.is_empty());
    assert!(info.api_version.starts_with("1."), "{info:?}");
}

#[tokio::test]
#[ignore = "needs Docker: loads images"]
async fn ensure_image_refuses_a_corrupt_layer() {
    repro_tests::require_docker();
    let blobs = repro_tests::busybox_blobs();
    let mut config: serde_json::Value = serde_json::from_slice(&blobs.config).expect("json");
    config["config"]["Labels"] = serde_json::json!({ "nonce": unique("corrupt") });
    let config = serde_json::to_vec(&config).expect("json");
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let mut manifest: serde_json::Value = serde_json::from_slice(&blobs.manifest).expect("json");
    manifest["config"]["digest"] = serde_json::json!(config_digest);
    manifest["config"]["size"] = serde_json::json!(config.len());
    let manifest = serde_json::to_vec(&manifest).expect("json");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let layer = store.put_bytes(&blobs.layer).expect("layer");
    store.put_bytes(&config).expect("config");
    let image = store.put_image(&manifest).expect("manifest");
    // Same size, different bytes: only re-hashing notices.
    let path = store.blob_path(&layer);
    let mut bytes = std::fs::read(&path).expect("layer blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).expect("corrupt the layer");

    let sandbox = DockerSandbox::connect().await.expect("connect");
    let err = sandbox
        .ensure_image(&store, &image)
        .await
        .expect_err("corrupt layer");
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    let docker = Docker::connect_with_local_defaults().expect("docker");
    assert!(
        docker.inspect_image(&config_digest).await.is_err(),
        "nothing may be loaded"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
