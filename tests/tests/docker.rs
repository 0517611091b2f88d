//! End-to-end tests of `repro build` and `repro verify` on the Docker backend.
//!
//! They need a Docker daemon and the host's static busybox (Debian's
//! `busybox-static`); they are ignored in a plain `cargo test` and run in CI
//! with `--run-ignored all`, where a missing daemon fails them loudly.

mod common;

use common::{flip_byte, statuses, stderr, stdout, Repro};

const PIPELINE: &str = r#"
[model]
name = "pipeline"
version = "1"
owner = "Test Owner <owner@example.com>"

[toolchains.bb]
archive = "image"

[data.raw]
path = "data"
description = "two lines of text"
source = "the test"

[params]
greeting = "hello"
factor = 3

[[steps]]
name = "prepare"
toolchain = "bb"
argv = ["sh", "-c", "cat /repro/in/raw/input.txt > /repro/out/prepared.txt && echo ${params.greeting} >> /repro/out/prepared.txt"]
inputs = { raw = "data.raw" }
outputs = ["prepared.txt"]

[[steps]]
name = "count"
toolchain = "bb"
argv = ["sh", "-c", "wc -l < /repro/in/prep/prepared.txt > /repro/out/count.txt"]
inputs = { prep = "steps.prepare" }
outputs = ["count.txt"]

[[steps]]
name = "scale"
toolchain = "bb"
argv = ["sh", "-c", "echo $$((${params.factor} * 2)) > /repro/out/scaled.txt"]
outputs = ["scaled.txt"]
"#;

/// A work folder with the busybox image layout, a data folder and `model.toml`.
fn setup(recipe: &str) -> Repro {
    repro_tests::require_docker();
    let mut r = Repro::with_key();
    r.sandbox = Some("docker".to_string());
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("data/input.txt", "one\ntwo\n");
    r.write("model.toml", recipe);
    r
}

fn single_step(name: &str, script: &str, outputs: &str) -> String {
    format!(
        r#"
[model]
name = "{name}"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "{name}"
toolchain = "bb"
argv = ["sh", "-c", {script:?}]
outputs = [{outputs}]
"#
    )
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn second_build_is_all_cache_hits_and_a_param_change_reruns_only_affected_steps() {
    let r = setup(PIPELINE);
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut s = statuses(&doc);
    s.sort();
    assert_eq!(s, ["count=ran", "prepare=ran", "scale=ran"]);
    let count = &doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "count")
        .unwrap()["files"]["count.txt"];
    let blob = std::fs::read_to_string(r.blob_path(count["digest"].as_str().unwrap())).unwrap();
    assert_eq!(blob.trim(), "3");

    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut s = statuses(&doc);
    s.sort();
    assert_eq!(s, ["count=cached", "prepare=cached", "scale=cached"]);

    // `factor` is used by `scale` only. (Other inputs, so another version:
    // a version keeps naming the inputs it was first built from.)
    r.write(
        "model.toml",
        &PIPELINE
            .replace("factor = 3", "factor = 4")
            .replace("version = \"1\"", "version = \"2\""),
    );
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut s = statuses(&doc);
    s.sort();
    assert_eq!(s, ["count=cached", "prepare=cached", "scale=ran"]);

    // `greeting` changes `prepare`'s output, so `count` runs again too.
    r.write(
        "model.toml",
        &PIPELINE
            .replace("factor = 3", "factor = 4")
            .replace("\"hello\"", "\"bonjour\"")
            .replace("version = \"1\"", "version = \"3\""),
    );
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut s = statuses(&doc);
    s.sort();
    assert_eq!(s, ["count=ran", "prepare=ran", "scale=cached"]);

    // --no-cache runs everything.
    let (out, doc) = r.build_json(&["--no-cache", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        statuses(&doc).iter().all(|s| s.ends_with("=ran")),
        "{:?}",
        statuses(&doc)
    );
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn locked_build_uses_the_lock_and_verify_reproduces() {
    let r = setup(PIPELINE);
    let out = r.run(&["lock", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lock = std::fs::read_to_string(r.work().join("model.lock")).unwrap();
    assert!(
        lock.contains("[data.raw]") && lock.contains("sha256:"),
        "{lock}"
    );
    let out = r.run(&["build", "--locked", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["verify", "pipeline@1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("reproduced: pipeline@1 (3 steps, byte for byte)"),
        "{}",
        stdout(&out)
    );
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn verify_names_the_file_and_offset_of_a_nondeterministic_step() {
    let r = setup(&single_step(
        "clock",
        "echo stamp: $$(date +%s) $$(cat /proc/uptime) > /repro/out/time.txt",
        "\"time.txt\"",
    ));
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["verify", "clock@1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("DIFFERS  clock"), "{text}");
    assert!(text.contains("file `time.txt`"), "{text}");
    assert!(text.contains("first differing byte at offset"), "{text}");
    let offset: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("first differing byte at offset "))
        .unwrap()
        .parse()
        .unwrap();
    // "stamp: " is 7 bytes; the times differ after it.
    assert!(offset >= 7, "{text}");
    assert!(
        text.contains("not reproduced: clock@1 (1 of 1 steps differ)"),
        "{text}"
    );

    // The same verdict as JSON, for CI.
    let out = r.run(&["verify", "--json", "clock@1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reproduced"], false);
    assert_eq!(v["model"], "clock@1");
    let file = &v["steps"][0]["files"][0];
    assert_eq!(file["path"], "time.txt");
    assert!(file["first_difference"].as_u64().unwrap() >= 7, "{v}");
    assert_ne!(file["expected"]["digest"], file["actual"]["digest"]);
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_step_cannot_reach_the_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script =
        format!("echo hi | nc -w 3 127.0.0.1 {port} && echo connected > /repro/out/result.txt");
    let r = setup(&single_step("net", &script, "\"result.txt\""));
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("FAILED net"), "{}", stderr(&out));
    assert!(listener.accept().is_err(), "the step reached the host");

    let r = setup(&single_step(
        "dns",
        "wget -T 3 -O /repro/out/page http://example.org/",
        "\"page\"",
    ));
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_step_cannot_write_outside_its_output_directory() {
    for (name, target) in [
        ("etc", "/etc/evil"),
        ("root", "/evil"),
        ("input", "/repro/in/raw/evil"),
    ] {
        let mut recipe = single_step(
            name,
            &format!("echo x > {target} && echo ok > /repro/out/ok"),
            "\"ok\"",
        );
        recipe.push_str("inputs = { raw = \"data.raw\" }\n[data.raw]\npath = \"data\"\n");
        let r = setup(&recipe);
        let out = r.run(&["build", "model.toml"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("Read-only file system"), "{name}: {err}");
        assert!(!r.work().join("data/evil").exists());
    }
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_failing_step_stops_its_dependents_and_shows_its_log() {
    let recipe = PIPELINE.replace(
        "cat /repro/in/raw/input.txt > /repro/out/prepared.txt",
        "echo something went wrong >&2; exit 3; cat /repro/in/raw/input.txt > /repro/out/prepared.txt",
    );
    let r = setup(&recipe);
    let (out, doc) = r.build_json(&["model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut s = statuses(&doc);
    s.sort();
    assert_eq!(s, ["count=skipped", "prepare=failed", "scale=ran"]);
    let err = stderr(&out);
    assert!(err.contains("prepare: exited with status 3"), "{err}");
    assert!(err.contains("something went wrong"), "{err}");
    assert!(doc["record"].is_null());
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn undeclared_outputs_fail_the_step() {
    let r = setup(&single_step(
        "extra",
        "echo a > /repro/out/a; echo b > /repro/out/b",
        "\"a\"",
    ));
    let out = r.run(&["build", "model.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the step wrote undeclared output `b`"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_corrupted_store_object_is_detected_and_named() {
    let r = setup(PIPELINE);
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The data blob of input.txt is the sha256 of its bytes.
    let digest = format!("sha256:{}", sha256_hex(b"one\ntwo\n"));
    flip_byte(&r.blob_path(&digest), 0);
    let out = r.run(&["verify", "pipeline@1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    // A build that needs the object says the same.
    let out = r.run(&["build", "--no-cache", "--locked", "model.toml"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&digest), "{}", stderr(&out));
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_tampered_record_is_tampering_not_a_mismatch() {
    use base64::Engine as _;
    let r = setup(PIPELINE);
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record = doc["record"].as_str().unwrap().to_string();
    // Change one output digest inside the signed payload.
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.blob_path(&record)).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged = payload.replacen("\"sha256\":\"", "\"sha256\":\"0", 1);
    assert_ne!(forged, payload);
    env["payload"] = b64.encode(forged.as_bytes()).into();
    let file = r.write("forged.json", &serde_json::to_string(&env).unwrap());
    let out = r.run(&["verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tampering detected"),
        "{}",
        stderr(&out)
    );

    // The record blob itself, flipped in the store.
    flip_byte(&r.blob_path(&record), 10);
    let out = r.run(&["verify", "pipeline@1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&record), "{}", stderr(&out));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Containers (running or not) whose step label is `step`.
fn containers_of(step: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=repro.step={step}")])
        .output()
        .expect("the docker command line");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn ctrl_c_stops_the_build_and_removes_the_container() {
    let step = unique("sleeper");
    let r = setup(&single_step(
        &step,
        "sleep 60; echo done > /repro/out/done",
        "\"done\"",
    ));
    let child = r.std_cmd().args(["build", "model.toml"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while containers_of(&step).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step's container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "Ctrl-C took too long"
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(
        containers_of(&step),
        Vec::<String>::new(),
        "the container was left behind"
    );
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn two_builds_on_one_store_at_once_are_safe() {
    let r = setup(PIPELINE);
    let a = r
        .std_cmd()
        .args(["build", "--json", "model.toml"])
        .spawn()
        .unwrap();
    let b = r
        .std_cmd()
        .args(["build", "--json", "model.toml"])
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let da: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let db: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let outputs = |d: &serde_json::Value| {
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["output"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(outputs(&da), outputs(&db));
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success());
    assert!(
        statuses(&doc).iter().all(|s| s.ends_with("=cached")),
        "{:?}",
        statuses(&doc)
    );
    let fsck = r.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", stderr(&fsck));
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_build_killed_mid_step_leaves_no_partial_object() {
    let step = unique("writer");
    // The step writes a large output slowly; the build is killed while it runs.
    let script = "i=0; while [ $$i -lt 20 ]; do head -c 1000000 /dev/zero >> /repro/out/big; i=$$((i+1)); sleep 0.1; done";
    let r = setup(&single_step(&step, script, "\"big\""));
    let mut child = r.std_cmd().args(["build", "model.toml"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while containers_of(&step).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step's container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    // A SIGKILL leaves no chance to remove the container: clean it up here.
    for c in containers_of(&step) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &c])
            .output();
    }
    let fsck = r.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", stderr(&fsck));
    assert!(r.run(&["verify", &format!("{step}@1")]).status.code() == Some(3));
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fsck = r.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", stderr(&fsck));
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn the_record_is_a_signed_in_toto_slsa_statement() {
    use base64::Engine as _;
    let r = setup(PIPELINE);
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record = doc["record"].as_str().unwrap();
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.blob_path(record)).unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let key_id = stdout(&r.run(&["key", "show"]))
        .lines()
        .find_map(|l| l.strip_prefix("id:").map(|s| s.trim().to_string()))
        .unwrap();
    assert_eq!(env["signatures"][0]["keyid"], key_id.as_str());
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects: Vec<&str> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "prepare/prepared.txt",
            "count/count.txt",
            "scale/scaled.txt"
        ]
    );
    let def = &st["predicate"]["buildDefinition"];
    let deps: Vec<&str> = def["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(deps, ["recipe", "lock", "toolchains.bb", "data.raw"]);
    let recipe_sha = format!(
        "sha256:{}",
        sha256_hex(&std::fs::read(r.work().join("model.toml")).unwrap())
    );
    assert_eq!(
        def["externalParameters"]["recipeDigest"],
        recipe_sha.as_str()
    );
    let data = &def["resolvedDependencies"][3];
    assert_eq!(data["annotations"]["source"], "the test");
    let platform = &def["internalParameters"]["platform"];
    assert_eq!(platform["os"], "linux");
    assert!(platform["cpuFlags"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));
    assert!(
        platform["backend"].as_str().unwrap().starts_with("docker"),
        "{platform}"
    );
    assert!(!platform["kernel"].as_str().unwrap().is_empty());
    let byproducts = st["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    for (b, s) in byproducts.iter().zip(doc["steps"].as_array().unwrap()) {
        assert_eq!(
            b["name"].as_str().unwrap(),
            format!("steps.{}", s["name"].as_str().unwrap())
        );
        assert_eq!(b["annotations"]["stepKey"], s["key"]);
        assert_eq!(
            format!("sha256:{}", b["digest"]["sha256"].as_str().unwrap()),
            s["output"].as_str().unwrap()
        );
    }
    assert_eq!(
        st["predicate"]["runDetails"]["builder"]["version"]["repro"],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
#[ignore = "needs Docker and busybox-static"]
fn a_declared_directory_output_collects_everything_under_it() {
    let r = setup(&single_step(
        "reports",
        "mkdir -p /repro/out/reports/deep && echo a > /repro/out/reports/a.json && echo c > /repro/out/reports/deep/c.txt && echo m > /repro/out/model.bin",
        "\"reports/\", \"model.bin\"",
    ));
    let (out, doc) = r.build_json(&["model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<&String> = doc["steps"][0]["files"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(files, ["model.bin", "reports/a.json", "reports/deep/c.txt"]);
}
