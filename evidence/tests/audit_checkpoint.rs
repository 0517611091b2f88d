//! Signed checkpoints of the audit log's head (issue item 4, "silent
//! truncation"): the head file lives in the store beside the log, so a log
//! truncated together with its head, or deleted with it, verified as
//! intact. A checkpoint kept outside the store catches both, and so does a
//! store that holds records but no log.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use repro_evidence::attest::Identity;
use repro_evidence::audit::{self, Checkpoint, Event, ProblemKind};
use repro_evidence::exit::Tampered;
use repro_evidence::keys;
use repro_store::{Hash, RecordDigest, Store};

fn ann() -> Identity {
    Identity {
        keyid: String::new(),
        name: Some("Ann".into()),
        email: Some("ann@example.com".into()),
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn append(store: &Store, key: &SigningKey, from: u64, to: u64) {
    for i in from..to {
        let event = Event::new("build", format!("m@{i}"), serde_json::json!({ "i": i }));
        audit::append(store, key, &ann(), event).expect("append");
    }
}

/// A store whose log has `n` entries signed by [`key`].
fn log_of(n: u64) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    append(&store, &key(), 0, n);
    (store, dir)
}

/// Keep the first `n` lines of the log and rewrite the head to match, as
/// someone covering their tracks would.
fn truncate_and_rewrite_head(store: &Store, n: usize) {
    let text = std::fs::read_to_string(audit::log_path(store)).expect("log");
    let kept: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(audit::log_path(store), kept.join("\n") + "\n").expect("write log");
    let last = kept.last().expect("a line");
    let seq = serde_json::from_str::<serde_json::Value>(last).expect("entry")["seq"]
        .as_u64()
        .expect("seq");
    std::fs::write(
        audit::head_path(store),
        format!("{seq} {}\n", Hash::of(last.as_bytes()).hex()),
    )
    .expect("write head");
}

fn signed_checkpoint(store: &Store) -> Checkpoint {
    let env = audit::checkpoint(store, &key(), &ann()).expect("checkpoint");
    audit::open_checkpoint(&env, "cp.json", |k| keys::lookup_in_store(store, k)).expect("open")
}

fn messages(v: &audit::Verified) -> Vec<String> {
    v.problems.iter().map(|p| p.message.clone()).collect()
}

#[test]
fn a_truncated_log_with_a_rewritten_head_fails_a_signed_checkpoint() {
    let (store, _d) = log_of(12);
    let cp = signed_checkpoint(&store);
    assert_eq!(cp.seq, 12);
    assert_eq!(
        cp.signer.as_ref().and_then(|s| s.name.as_deref()),
        Some("Ann")
    );
    assert!(
        audit::verify_against(&store, std::slice::from_ref(&cp))
            .unwrap()
            .intact
    );

    truncate_and_rewrite_head(&store, 7);
    // The head alone cannot tell: this is the hole the checkpoint closes.
    let v = audit::verify(&store).unwrap();
    assert!(v.intact, "{:?}", v.problems);

    let v = audit::verify_against(&store, std::slice::from_ref(&cp)).unwrap();
    assert!(!v.intact);
    assert_eq!(v.checkpoints, 1);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(v.problems[0].kind, ProblemKind::Checkpoint);
    assert_eq!(v.problems[0].seq, Some(12));
    assert_eq!(
        messages(&v),
        [format!(
            "the log ends at entry 7, the checkpoint `cp.json` of {} by Ann <ann@example.com> ({}) names entry 12 (sha256:{}): entries were removed from the end",
            cp.time.as_deref().unwrap(),
            &keys::key_id(&key().verifying_key()).to_string()["sha256:".len()..][..12],
            cp.sha256
        )]
    );
}

#[test]
fn an_expected_head_catches_truncation_and_deletion() {
    let (store, _d) = log_of(12);
    let head = audit::head_of(&store).unwrap().unwrap();
    let expected: Checkpoint = head.compact().parse().unwrap();
    assert_eq!(expected, head);
    assert_eq!(audit::read_head(&store).unwrap(), (12, head.sha256.clone()));

    truncate_and_rewrite_head(&store, 9);
    let v = audit::verify_against(&store, std::slice::from_ref(&expected)).unwrap();
    assert_eq!(
        messages(&v),
        [format!(
            "the log ends at entry 9, the expected head names entry 12 (sha256:{}): entries were removed from the end",
            head.sha256
        )]
    );

    std::fs::remove_file(audit::log_path(&store)).unwrap();
    std::fs::remove_file(audit::head_path(&store)).unwrap();
    let v = audit::verify_against(&store, &[expected]).unwrap();
    assert!(!v.intact);
    assert!(
        messages(&v).contains(&format!(
            "the log is empty, the expected head names entry 12 (sha256:{}): the log was deleted or emptied",
            head.sha256
        )),
        "{:?}",
        v.problems
    );
}

#[test]
fn a_log_that_grew_after_a_checkpoint_still_passes_it() {
    let (store, _d) = log_of(5);
    let cp = signed_checkpoint(&store);
    let expected: Checkpoint = audit::head_of(&store)
        .unwrap()
        .unwrap()
        .compact()
        .parse()
        .unwrap();
    append(&store, &key(), 5, 9);
    let v = audit::verify_against(&store, &[cp, expected]).unwrap();
    assert!(v.intact, "{:?}", v.problems);
    assert_eq!((v.last_seq, v.checkpoints), (9, 2));
}

#[test]
fn a_rewritten_history_fails_the_checkpoint_even_when_it_is_longer() {
    let (store, _d) = log_of(6);
    let cp = signed_checkpoint(&store);
    // Start over with the same key and a different history, longer than before.
    std::fs::remove_file(audit::log_path(&store)).unwrap();
    std::fs::remove_file(audit::head_path(&store)).unwrap();
    append(&store, &key(), 100, 110);
    assert!(audit::verify(&store).unwrap().intact);
    let v = audit::verify_against(&store, std::slice::from_ref(&cp)).unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(v.problems[0].line, Some(6));
    assert!(
        v.problems[0].message.starts_with(&format!(
            "entry 6 (line 6) is not the entry the checkpoint `cp.json` of {} by Ann",
            cp.time.as_deref().unwrap()
        )),
        "{}",
        v.problems[0].message
    );
    assert!(
        v.problems[0].message.ends_with(&format!(
            "not sha256:{}: the history was rewritten",
            cp.sha256
        )),
        "{}",
        v.problems[0].message
    );
}

#[test]
fn an_empty_log_in_a_store_with_records_is_tampering_and_an_empty_store_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v = audit::verify(&store).unwrap();
    assert!(v.intact, "{:?}", v.problems);

    store
        .put_record(b"{}", "fraud", "1", &|_: &[u8]| Ok(Hash::of(b"inputs")))
        .unwrap();
    let v = audit::verify(&store).unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(v.problems[0].kind, ProblemKind::Emptied);
    assert_eq!(
        v.problems[0].message,
        format!(
            "the audit log `{}` is missing but the store holds 1 model with records: the log was deleted or emptied",
            audit::log_path(&store).display()
        )
    );

    std::fs::create_dir_all(audit::dir(&store)).unwrap();
    std::fs::write(audit::log_path(&store), "").unwrap();
    store
        .put_attestation(&RecordDigest::from_hash(Hash::of(b"r")), b"{}")
        .unwrap();
    let v = audit::verify(&store).unwrap();
    assert!(
        v.problems[0].message.contains(
            "is empty but the store holds 1 model with records, 1 attestation: the log was deleted"
        ),
        "{:?}",
        v.problems
    );
}

#[test]
fn an_attestation_alone_makes_an_empty_log_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .put_attestation(&RecordDigest::from_hash(Hash::of(b"r")), b"{}")
        .unwrap();
    let v = audit::verify(&store).unwrap();
    assert_eq!(
        v.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        [ProblemKind::Emptied]
    );
}

/// The error of opening `env`, which must be a [`Tampered`].
fn refused(store: &Store, env: &keys::Envelope) -> String {
    let err = audit::open_checkpoint(env, "cp.json", |k| keys::lookup_in_store(store, k))
        .expect_err("a forged checkpoint must be refused");
    assert!(err.is::<Tampered>(), "{err:#}");
    err.to_string()
}

#[test]
fn a_forged_checkpoint_is_refused() {
    let (store, _d) = log_of(12);
    let env = audit::checkpoint(&store, &key(), &ann()).unwrap();

    // The payload edited to name an earlier entry, signature kept.
    let mut payload: serde_json::Value =
        serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
    payload["seq"] = 7.into();
    let mut edited = env.clone();
    edited.payload = B64.encode(serde_json::to_vec(&payload).unwrap());
    let m = refused(&store, &edited);
    assert!(
        m.starts_with("the checkpoint `cp.json` is refused: the signature of key"),
        "{m}"
    );

    // Signed by a key the store does not know.
    let stranger = SigningKey::from_bytes(&[3u8; 32]);
    let head = audit::head_of(&store).unwrap().unwrap();
    let m = refused(&store, &audit::sign_checkpoint(&head, &stranger, &ann()));
    assert!(m.contains("signed by unknown key"), "{m}");

    // Another kind of envelope.
    let other = keys::sign(
        &key(),
        keys::IN_TOTO_PAYLOAD_TYPE,
        &env.payload_bytes().unwrap(),
    );
    let m = refused(&store, &other);
    assert!(
        m.contains("payload type is `application/vnd.in-toto+json`"),
        "{m}"
    );

    // A payload naming another signer than the key that signed it.
    payload["seq"] = 12.into();
    payload["signer"]["keyid"] = format!("sha256:{}", "1".repeat(64)).into();
    let lied = keys::sign(
        &key(),
        audit::CHECKPOINT_PAYLOAD_TYPE,
        &serde_json::to_vec(&payload).unwrap(),
    );
    let m = refused(&store, &lied);
    assert!(m.contains("names `sha256:1111"), "{m}");
}

#[test]
fn no_checkpoint_vouches_for_a_tampered_or_empty_log() {
    let (store, _d) = log_of(4);
    truncate_and_rewrite_head(&store, 4);
    let text = std::fs::read_to_string(audit::log_path(&store)).unwrap();
    std::fs::write(audit::log_path(&store), text.replace("m@1", "m@7")).unwrap();
    let err = audit::checkpoint(&store, &key(), &ann()).unwrap_err();
    assert!(err.is::<Tampered>(), "{err:#}");
    assert!(
        err.to_string()
            .contains("entry 2 was edited: its signature does not check out"),
        "{err:#}"
    );

    let (empty, _d) = log_of(0);
    let err = audit::checkpoint(&empty, &key(), &ann()).unwrap_err();
    assert!(
        err.to_string().contains("is empty: there is no head"),
        "{err:#}"
    );
}

#[test]
fn the_compact_form_round_trips_and_rejects_what_is_not_a_head() {
    let hex = "ab".repeat(32);
    let cp: Checkpoint = format!("12:{hex}").parse().unwrap();
    assert_eq!((cp.seq, cp.sha256.as_str()), (12, hex.as_str()));
    assert_eq!(cp.compact(), format!("12:{hex}"));
    let prefixed: Checkpoint = format!("12:sha256:{}", hex.to_uppercase()).parse().unwrap();
    assert_eq!(prefixed, cp);
    for bad in [
        String::from("12"),
        format!("x:{hex}"),
        format!("0:{hex}"),
        format!("12:{}", &hex[..63]),
        format!("12:{}zz", &hex[..62]),
    ] {
        let err = bad.parse::<Checkpoint>().unwrap_err();
        assert!(err.contains("is not a head"), "{bad}: {err}");
    }
}

#[test]
fn a_checkpoint_line_carries_the_envelope_and_no_entry_is_one() {
    let (store, _d) = log_of(3);
    let env = audit::checkpoint(&store, &key(), &ann()).unwrap();
    let line = audit::checkpoint_line(&env);
    assert!(
        line.starts_with("{\"type\":\"audit-checkpoint\",\"envelope\":{"),
        "{line}"
    );
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(doc["type"], "audit-checkpoint");
    assert!(doc.get("seq").is_none(), "{line}");
    assert_eq!(audit::parse_checkpoint_line(&line), Some(env));
    let text = std::fs::read_to_string(audit::log_path(&store)).unwrap();
    for entry in text.lines() {
        assert_eq!(audit::parse_checkpoint_line(entry), None);
    }
}
