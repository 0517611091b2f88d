//! The audit log: every state change is appended as a signed, hash-chained
//! entry; `repro audit verify` names an edited, deleted, inserted or
//! reordered entry and a truncated end; `repro audit export` writes JSON
//! lines or RFC 5424 syslog, received here by a real rsyslog.

mod common;

use common::{stderr, stdout, Repro};

const RECIPE: &str = r#"
[model]
name = "audited"
version = "1"

[toolchains.bb]
archive = "image"

[[steps]]
name = "write"
toolchain = "bb"
argv = ["sh", "-c", "echo hello > /repro/out/hello.txt"]
outputs = ["hello.txt"]
"#;

fn generate_key(r: &Repro, name: &str) {
    let out = r.run(&[
        "key",
        "generate",
        "--name",
        name,
        "--email",
        &format!("{}@example.com", name.to_lowercase()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A store whose log has 9 entries (key, then pin/unpin of a data snapshot
/// four times); no sandbox needed.
fn logged_store() -> Repro {
    let r = Repro::new();
    generate_key(&r, "Alice");
    let data = r.write("data/a.txt", "a\n");
    let out = r.run(&["data", "add", data.parent().unwrap().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = stdout(&out).trim().to_string();
    for _ in 0..4 {
        for cmd in ["pin", "unpin"] {
            let out = r.run(&[cmd, &tree]);
            assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        }
    }
    r
}

fn log_lines(r: &Repro) -> Vec<String> {
    std::fs::read_to_string(r.store().join("v1/audit/log.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_log(r: &Repro, lines: &[String]) {
    std::fs::write(
        r.store().join("v1/audit/log.jsonl"),
        lines.join("\n") + "\n",
    )
    .unwrap();
}

/// `repro audit verify`: exit code and stdout.
fn audit_verify(r: &Repro) -> (Option<i32>, String) {
    let out = r.run(&["audit", "verify"]);
    (out.status.code(), stdout(&out))
}

#[test]
fn every_state_change_is_logged_and_an_untouched_log_verifies() {
    let r = logged_store();
    let lines = log_lines(&r);
    assert_eq!(lines.len(), 9);
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds[..3], ["key", "pin", "unpin"]);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["actor"]["name"], "Alice");
    assert_eq!(first["seq"], 1);

    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(0), "{text}");
    let out = r.run(&["audit", "verify", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["intact"], true);
    assert_eq!(doc["last_seq"], 9);

    // jsonl export writes the lines as they are, then a line of another
    // type with the signed checkpoint of the head (tests/audit_checkpoint.rs);
    // --since exports incrementally; --no-checkpoint writes only the lines.
    let out = r.run(&["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (entries, checkpoint) = text.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(entries.to_string() + "\n", lines.join("\n") + "\n");
    assert!(
        checkpoint.starts_with("{\"type\":\"audit-checkpoint\","),
        "{checkpoint}"
    );
    let out = r.run(&["audit", "export", "--since", "7", "--no-checkpoint"]);
    assert_eq!(stdout(&out), lines[7..].join("\n") + "\n");
}

#[test]
fn an_edited_entry_is_detected_and_named() {
    let r = logged_store();
    let mut lines = log_lines(&r);
    lines[6] = lines[6].replace("\"unpin\"", "\"pin\"");
    assert_ne!(lines[6], log_lines(&r)[6]);
    write_log(&r, &lines);
    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("entry 7 was edited: its hash does not match entry 8's prev"),
        "{text}"
    );
    assert!(
        text.contains("entry 7 was edited: its signature does not check out"),
        "{text}"
    );
}

#[test]
fn a_deleted_entry_is_detected_and_named() {
    let r = logged_store();
    let mut lines = log_lines(&r);
    lines.remove(4);
    write_log(&r, &lines);
    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("entry 5 is missing (entry 6 follows entry 4)"),
        "{text}"
    );
}

#[test]
fn an_inserted_entry_is_detected_and_named() {
    let r = logged_store();
    let mut lines = log_lines(&r);
    let copy = lines[2].clone();
    lines.insert(5, copy);
    write_log(&r, &lines);
    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("entry 3 appears twice (lines 3 and 6)"),
        "{text}"
    );
}

#[test]
fn reordered_entries_are_detected_and_named() {
    let r = logged_store();
    let mut lines = log_lines(&r);
    lines.swap(3, 4);
    write_log(&r, &lines);
    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("entry 4 is out of order: it comes after entry 5"),
        "{text}"
    );
}

#[test]
fn a_truncated_end_is_detected_and_named() {
    let r = logged_store();
    let mut lines = log_lines(&r);
    lines.truncate(7);
    write_log(&r, &lines);
    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(
            "the log ends at entry 7 but the head says 9: entries were removed from the end"
        ),
        "{text}"
    );
}

#[test]
fn without_a_key_nothing_is_logged_and_a_warning_says_so() {
    let r = Repro::new();
    let data = r.write("data/a.txt", "a\n");
    let out = r.run(&["data", "add", data.parent().unwrap().to_str().unwrap()]);
    let tree = stdout(&out).trim().to_string();
    let out = r.run(&["pin", &tree]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("not written to the audit log").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(!r.store().join("v1/audit/log.jsonl").exists());
}

/// The parts of a received RFC 5424 message the test checks.
struct Received {
    pri: String,
    kind: String,
    seq: u64,
    subject: String,
}

fn sd_param(msg: &str, name: &str) -> String {
    let start = msg
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
        + name.len()
        + 3;
    let mut out = String::new();
    let mut chars = msg[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => return out,
            c => out.push(c),
        }
    }
    panic!("unterminated {name} in {msg}");
}

fn parse(msg: &str) -> Received {
    let fields: Vec<&str> = msg.splitn(7, ' ').collect();
    assert_eq!(fields.len(), 7, "{msg}");
    assert!(fields[0].ends_with(">1"), "not RFC 5424: {msg}");
    assert_eq!(fields[3], "repro", "{msg}");
    assert!(fields[6].starts_with("[repro@32473 "), "{msg}");
    Received {
        pri: fields[0].to_string(),
        kind: fields[5].to_string(),
        seq: sd_param(msg, "seq").parse().unwrap(),
        subject: sd_param(msg, "subject"),
    }
}

#[test]
#[ignore = "needs root, user namespaces and rsyslog"]
fn rsyslog_receives_every_event_over_tcp() {
    repro_tests::require_namespaces();
    let syslog = repro_tests::Syslog::start();
    let r = Repro::new();
    generate_key(&r, "Alice");
    repro_tests::busybox_oci_layout(&r.work().join("image"));
    r.write("model.toml", RECIPE);
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["verify", "audited@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for args in [&["pin", "audited@1"][..], &["unpin", "audited@1"], &["gc"]] {
        let out = r.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let (code, text) = audit_verify(&r);
    assert_eq!(code, Some(0), "{text}");

    let out = r.run(&[
        "audit",
        "export",
        "--format",
        "syslog",
        "--tcp",
        &syslog.addr(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Six entries, then the signed checkpoint of the head (its own MSGID).
    let all = syslog.wait_for(7);
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(
        all[6].split(' ').nth(5),
        Some("audit-checkpoint"),
        "{}",
        all[6]
    );
    assert_eq!(sd_param(&all[6], "seq"), "6");
    let got: Vec<Received> = all[..6].iter().map(|m| parse(m)).collect();
    let kinds: Vec<&str> = got.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["key", "build", "verify", "pin", "unpin", "gc"]);
    assert_eq!(
        got.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(got[1].subject, "audited@1");
    assert_eq!(got[2].subject, "audited@1");
    assert!(got.iter().all(|m| m.pri == "<85>1"), "authpriv.notice");
    let build: serde_json::Value =
        serde_json::from_str(syslog.messages()[1].split_once("] ").unwrap().1).unwrap();
    assert_eq!(build["ran"], 1);
    assert!(build["record"].as_str().unwrap().starts_with("sha256:"));

    // Incrementally: only what is new.
    let out = r.run(&["build", "model.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&[
        "audit",
        "export",
        "--format",
        "syslog",
        "--tcp",
        &syslog.addr(),
        "--since",
        "6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = syslog.wait_for(9);
    assert_eq!(got.len(), 9, "{got:?}");
    let last = parse(&got[7]);
    assert_eq!((last.seq, last.kind.as_str()), (7, "build"));
    assert_eq!(sd_param(&got[8], "seq"), "7");
    let cached: serde_json::Value =
        serde_json::from_str(got[7].split_once("] ").unwrap().1).unwrap();
    assert_eq!(cached["cached"], 1);
}
