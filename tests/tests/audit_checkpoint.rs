//! Silent truncation (issue item 4): the head file `v1/audit/head` lives in
//! the store beside the log, so truncating the log and rewriting the head,
//! or deleting both, used to verify as intact. Signed checkpoints of the
//! head kept outside the store (`repro audit checkpoint`, the end of every
//! `repro audit export`, or `--expect-head <seq>:<hex>`) catch it, and an
//! empty log in a store that holds records is tampering. No sandbox needed:
//! `repro key generate`, `data add`, `pin` and `unpin` write the entries.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{stderr, stdout, Repro};

/// A store whose log has 9 entries (key, then pin/unpin of a data snapshot
/// four times), signed by Alice's key.
fn logged_store() -> (Repro, String) {
    let r = Repro::new();
    let out = r.run(&[
        "key",
        "generate",
        "--name",
        "Alice",
        "--email",
        "alice@example.com",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = r.write("data/a.txt", "a\n");
    let out = r.run(&["data", "add", data.parent().unwrap().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = stdout(&out).trim().to_string();
    pin_unpin(&r, &tree, 4);
    assert_eq!(log_lines(&r).len(), 9);
    (r, tree)
}

/// Two entries per round.
fn pin_unpin(r: &Repro, tree: &str, rounds: usize) {
    for _ in 0..rounds {
        for cmd in ["pin", "unpin"] {
            let out = r.run(&[cmd, tree]);
            assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        }
    }
}

fn log_path(r: &Repro) -> PathBuf {
    r.store().join("v1/audit/log.jsonl")
}

fn head_path(r: &Repro) -> PathBuf {
    r.store().join("v1/audit/head")
}

fn log_lines(r: &Repro) -> Vec<String> {
    std::fs::read_to_string(log_path(r))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The head as `--expect-head` takes it, from the head file.
fn expected_head(r: &Repro) -> String {
    let head = std::fs::read_to_string(head_path(r)).unwrap();
    let (seq, hex) = head.trim().split_once(' ').unwrap();
    format!("{seq}:{hex}")
}

/// Keep the first `n` lines and rewrite the head to match them, as someone
/// covering their tracks would.
fn truncate_and_rewrite_head(r: &Repro, n: usize) {
    let kept = log_lines(r)[..n].to_vec();
    std::fs::write(log_path(r), kept.join("\n") + "\n").unwrap();
    std::fs::write(
        head_path(r),
        format!("{n} {}\n", sha256_hex(kept[n - 1].as_bytes())),
    )
    .unwrap();
}

/// A folder outside the store, for what is kept elsewhere.
fn elsewhere(r: &Repro) -> PathBuf {
    let d = r.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `repro audit checkpoint -o <file>` outside the store.
fn checkpoint_file(r: &Repro) -> PathBuf {
    let file = elsewhere(r).join("cp.json");
    let out = r.run(&["audit", "checkpoint", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signed the checkpoint of entry"),
        "{}",
        stderr(&out)
    );
    file
}

/// `repro audit verify` with `args`: exit code, stdout, stderr.
fn verify(r: &Repro, args: &[&str]) -> (Option<i32>, String, String) {
    let mut a = vec!["audit", "verify"];
    a.extend_from_slice(args);
    let out = r.run(&a);
    (out.status.code(), stdout(&out), stderr(&out))
}

fn verify_with(r: &Repro, checkpoint: &Path) -> (Option<i32>, String, String) {
    verify(r, &["--checkpoint", checkpoint.to_str().unwrap()])
}

#[test]
fn a_truncated_log_with_a_rewritten_head_is_caught_by_an_expected_head() {
    let (r, _) = logged_store();
    let head = expected_head(&r);
    let hex = head.strip_prefix("9:").unwrap().to_string();
    assert_eq!(verify(&r, &["--expect-head", &head]).0, Some(0));

    truncate_and_rewrite_head(&r, 7);
    // The head file alone cannot tell: this is the hole.
    let (code, text, _) = verify(&r, &[]);
    assert_eq!(code, Some(0), "{text}");

    let (code, text, err) = verify(&r, &["--expect-head", &head]);
    assert_eq!(code, Some(3), "{text}{err}");
    assert_eq!(
        text,
        format!("the log ends at entry 7, the expected head names entry 9 (sha256:{hex}): entries were removed from the end\n")
    );
    assert!(err.contains("was tampered with (1 problem)"), "{err}");
    assert!(err.contains("hint: the log no longer holds"), "{err}");

    // The same in JSON, with the problem's kind.
    let (code, text, _) = verify(&r, &["--json", "--expect-head", &head]);
    assert_eq!(code, Some(3));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["intact"], false);
    assert_eq!(doc["checkpoints"], 1);
    assert_eq!(doc["problems"][0]["kind"], "checkpoint");
    assert_eq!(doc["problems"][0]["seq"], 9);

    // Not a head at all: the user's mistake.
    let (code, _, err) = verify(&r, &["--expect-head", "9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not a head"), "{err}");
}

#[test]
fn a_truncated_log_with_a_rewritten_head_is_caught_by_a_checkpoint_file() {
    let (r, _) = logged_store();
    let cp = checkpoint_file(&r);
    let (code, text, _) = verify_with(&r, &cp);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("and it holds the entry of the checkpoint"),
        "{text}"
    );

    truncate_and_rewrite_head(&r, 7);
    let (code, text, err) = verify_with(&r, &cp);
    assert_eq!(code, Some(3), "{text}{err}");
    let hex = &expected_head_of_line(&r, &cp);
    assert!(
        text.starts_with(&format!(
            "the log ends at entry 7, the checkpoint `{}` of 20",
            cp.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(" by Alice <alice@example.com> (")
            && text.contains(&format!(
                ") names entry 9 (sha256:{hex}): entries were removed from the end"
            )),
        "{text}"
    );

    // Deleting the log and the head as well is no way out.
    std::fs::remove_file(log_path(&r)).unwrap();
    std::fs::remove_file(head_path(&r)).unwrap();
    let (code, text, _) = verify_with(&r, &cp);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("the log is empty, the checkpoint `") && text.contains("names entry 9"),
        "{text}"
    );
}

/// The hash the checkpoint file names (its payload, unchecked).
fn expected_head_of_line(_r: &Repro, cp: &Path) -> String {
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(cp).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let p: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(p["seq"], 9);
    assert_eq!(p["signer"]["name"], "Alice");
    p["sha256"].as_str().unwrap().to_string()
}

#[test]
fn a_rewritten_history_is_caught_even_when_it_is_longer() {
    let (r, tree) = logged_store();
    let cp = checkpoint_file(&r);
    let head = expected_head(&r);
    // Start the log over: a new, longer history signed with the same key.
    std::fs::remove_file(log_path(&r)).unwrap();
    std::fs::remove_file(head_path(&r)).unwrap();
    pin_unpin(&r, &tree, 6);
    assert_eq!(verify(&r, &[]).0, Some(0));
    let (code, text, _) = verify(
        &r,
        &["--expect-head", &head, "--checkpoint", cp.to_str().unwrap()],
    );
    assert_eq!(code, Some(3), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(
            "entry 9 (line 9) is not the entry the expected head names: its hash is sha256:"
        ) && lines[0].ends_with("the history was rewritten"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "entry 9 (line 9) is not the entry the checkpoint `{}` of",
            cp.display()
        )),
        "{text}"
    );
}

#[test]
fn a_log_that_grew_after_a_checkpoint_still_passes_it() {
    let (r, tree) = logged_store();
    let cp = checkpoint_file(&r);
    let head = expected_head(&r);
    pin_unpin(&r, &tree, 2);
    assert_eq!(log_lines(&r).len(), 13);
    let (code, text, err) = verify(
        &r,
        &["--expect-head", &head, "--checkpoint", cp.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{text}{err}");
    assert_eq!(
        text,
        "the audit log is intact: 13 entries, chain, signatures and head check out, and it holds the entries of all 2 checkpoints\n"
    );
}

#[test]
fn a_deleted_log_in_a_store_with_records_is_tampering() {
    // An empty store with no log is fine.
    let r = Repro::new();
    let (code, text, _) = verify(&r, &[]);
    assert_eq!(code, Some(0), "{text}");

    let (r, _) = logged_store();
    // A record, as a build leaves one (put straight into the store: no sandbox).
    let store = repro_store::Store::open(&r.store()).unwrap();
    store
        .put_record(b"{}", "fraud", "3", &|_: &[u8]| {
            Ok(repro_store::Hash::of(b"inputs"))
        })
        .unwrap();
    assert_eq!(verify(&r, &[]).0, Some(0));

    std::fs::remove_file(log_path(&r)).unwrap();
    std::fs::remove_file(head_path(&r)).unwrap();
    let (code, text, err) = verify(&r, &[]);
    assert_eq!(code, Some(3), "{text}{err}");
    assert_eq!(
        text,
        format!(
            "the audit log `{}` is missing but the store holds 1 model with records: the log was deleted or emptied\n",
            log_path(&r).display()
        )
    );
    assert!(err.contains("hint: restore `v1/audit/log.jsonl`"), "{err}");

    // Emptied rather than deleted: the same.
    std::fs::write(log_path(&r), "").unwrap();
    let (code, text, _) = verify(&r, &[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("is empty but the store holds 1 model with records"),
        "{text}"
    );
}

#[test]
fn a_forged_or_foreign_checkpoint_is_refused() {
    let (r, _) = logged_store();
    let cp = checkpoint_file(&r);
    truncate_and_rewrite_head(&r, 7);

    // Edit the checkpoint to name entry 7 of the truncated log: the
    // signature no longer checks out.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut env: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    payload["seq"] = 7.into();
    payload["sha256"] = sha256_hex(log_lines(&r)[6].as_bytes()).into();
    env["payload"] = b64.encode(serde_json::to_vec(&payload).unwrap()).into();
    let forged = elsewhere(&r).join("forged.json");
    std::fs::write(&forged, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
    let (code, text, err) = verify_with(&r, &forged);
    assert_eq!(code, Some(3), "{text}{err}");
    assert!(
        err.contains(&format!(
            "the checkpoint `{}` is refused: the signature of key `sha256:",
            forged.display()
        )),
        "{err}"
    );

    // A file with no checkpoint in it is the user's mistake.
    let (code, _, err) = verify_with(&r, &log_path(&r));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds no audit checkpoint"), "{err}");

    // A checkpoint is not written into the store it vouches for.
    let inside = r.store().join("cp.json");
    let out = r.run(&["audit", "checkpoint", "-o", inside.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is inside the store"),
        "{}",
        stderr(&out)
    );
    assert!(!inside.exists());
}

#[test]
fn no_checkpoint_is_signed_for_a_tampered_log() {
    let (r, _) = logged_store();
    let mut lines = log_lines(&r);
    lines[3] = lines[3].replace("\"pin\"", "\"unpin\"");
    assert_ne!(lines[3], log_lines(&r)[3]);
    std::fs::write(log_path(&r), lines.join("\n") + "\n").unwrap();
    let out = r.run(&["audit", "checkpoint"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out)
            .contains("was tampered with, so no checkpoint of it is signed: entry 4 was edited"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_export_carries_a_checkpoint_that_verifies() {
    let (r, tree) = logged_store();
    let jsonl = elsewhere(&r).join("audit.jsonl");
    let syslog = elsewhere(&r).join("audit.log");
    let out = r.run(&["audit", "export", "--output", jsonl.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the export ends with the signed checkpoint of entry 9"),
        "{}",
        stderr(&out)
    );
    let out = r.run(&[
        "audit",
        "export",
        "--format",
        "syslog",
        "--output",
        syslog.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // JSON lines: the entries as written, then one line of another type.
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let exported: Vec<&str> = text.lines().collect();
    assert_eq!(exported.len(), 10);
    assert_eq!(exported[..9], log_lines(&r)[..]);
    let last: serde_json::Value = serde_json::from_str(exported[9]).unwrap();
    assert_eq!(last["type"], "audit-checkpoint");
    assert_eq!(
        last["envelope"]["payloadType"],
        "application/vnd.repro.audit-checkpoint+json"
    );
    // Syslog: nine entry messages, then one with its own MSGID.
    let messages = std::fs::read_to_string(&syslog).unwrap();
    let messages: Vec<&str> = messages.lines().collect();
    assert_eq!(messages.len(), 10);
    assert_eq!(messages[9].split(' ').nth(5), Some("audit-checkpoint"));
    assert!(messages[9].contains(" seq=\"9\" "), "{}", messages[9]);

    for f in [&jsonl, &syslog] {
        let (code, text, err) = verify_with(&r, f);
        assert_eq!(code, Some(0), "{}: {text}{err}", f.display());
    }

    // An incremental export carries the head too, and all of an archive's
    // checkpoints are checked.
    pin_unpin(&r, &tree, 1);
    let out = r.run(&["audit", "export", "--since", "9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut archive = text.clone();
    archive.push_str(&stdout(&out));
    std::fs::write(&jsonl, &archive).unwrap();
    assert_eq!(archive.lines().count(), 13);
    let (code, text, _) = verify_with(&r, &jsonl);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("all 2 checkpoints"), "{text}");

    truncate_and_rewrite_head(&r, 8);
    let (code, text, _) = verify_with(&r, &jsonl);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "the log ends at entry 8, the checkpoint `{}:10` of",
            jsonl.display()
        )) && text.contains(&format!("the checkpoint `{}:13` of", jsonl.display())),
        "{text}"
    );
    let (code, text, _) = verify_with(&r, &syslog);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(&format!("the checkpoint `{}:10` of", syslog.display())),
        "{text}"
    );
}
