//! Signing keys (ed25519) and DSSE envelopes.
//!
//! A key file holds the 32-byte ed25519 seed as 64 hex digits, mode 0600.
//! The public key goes beside it as `<file>.pub` (64 hex digits). A key's id
//! is the SHA-256 of the raw 32-byte public key, written `sha256:<hex>`; the
//! public key is also kept in the store as a blob under that digest, so a
//! record can be checked wherever the store goes.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use repro_store::{BlobDigest, Hash, Store};
use serde::{Deserialize, Serialize};

use crate::env_vars;

/// The payload type of in-toto statements in DSSE envelopes.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Where the signing key lives unless `--key` or `REPRO_KEY` says otherwise:
/// `$XDG_CONFIG_HOME/repro/signing.key`, else `~/.config/repro/signing.key`.
pub fn default_key_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os(env_vars::XDG_CONFIG_HOME).filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("repro/signing.key"));
    }
    std::env::var_os(env_vars::HOME).map(|h| PathBuf::from(h).join(".config/repro/signing.key"))
}

/// The id of a public key: the SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> BlobDigest {
    BlobDigest::from_hash(Hash::of(key.as_bytes()))
}

/// Create a new key at `path`; refuses to overwrite one.
pub fn generate(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        return Err(crate::exit::UserError(format!(
            "a signing key already exists at `{}`\nhint: use it as it is, or move it away first",
            path.display()
        ))
        .into());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).context("cannot get random bytes for a new key")?;
    let key = SigningKey::from_bytes(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    writeln!(f, "{}", hex::encode(seed))?;
    f.sync_all()?;
    let pubpath = pub_path(path);
    std::fs::write(
        &pubpath,
        format!("{}\n", hex::encode(key.verifying_key().as_bytes())),
    )
    .with_context(|| format!("cannot write `{}`", pubpath.display()))?;
    Ok(key)
}

/// The public key file beside a key file.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Load the signing key at `path`.
pub fn load(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "no signing key at `{}`\nhint: run `repro key generate` (or pass `--key <file>`)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot read the signing key `{}`: {e}", path.display())
        }
    })?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
        anyhow::anyhow!(
            "`{}` is not a repro signing key (expected 64 hex digits)",
            path.display()
        )
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parse a public key written as 64 hex digits.
pub fn parse_public(text: &str) -> Result<VerifyingKey> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut raw)
        .map_err(|_| anyhow::anyhow!("not an ed25519 public key (expected 64 hex digits)"))?;
    VerifyingKey::from_bytes(&raw).map_err(|e| anyhow::anyhow!("not an ed25519 public key: {e}"))
}

/// A DSSE envelope (<https://github.com/secure-systems-lab/dsse>).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The base64 of the payload bytes.
    pub payload: String,
    /// What the payload is.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Signatures over the pre-authentication encoding.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of a DSSE envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The signing key's id (`sha256:<hex of the public key>`).
    pub keyid: String,
    /// The base64 of the ed25519 signature.
    pub sig: String,
}

/// The DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Payloads from which on [`sign`] encodes the payload on a second thread
/// while it signs (a build record of 10,000 steps is about 4 MiB).
const PARALLEL_ENCODE: usize = 1 << 20;

/// Sign `payload` into an envelope.
pub fn sign(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Envelope {
    let (sig, payload): (Signature, String) = if payload.len() < PARALLEL_ENCODE {
        (key.sign(&pae(payload_type, payload)), B64.encode(payload))
    } else {
        std::thread::scope(|scope| {
            let encoded = scope.spawn(|| B64.encode(payload));
            let sig = key.sign(&pae(payload_type, payload));
            let encoded = encoded
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (sig, encoded)
        })
    };
    Envelope {
        payload,
        payload_type: payload_type.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: key_id(&key.verifying_key()).to_string(),
            sig: B64.encode(sig.to_bytes()),
        }],
    }
}

impl Envelope {
    /// Parse `bytes` as an envelope (its signatures are not checked: see
    /// [`open`]).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Envelope, EnvelopeError> {
        serde_json::from_slice(bytes)
            .map_err(|e| EnvelopeError::Malformed(format!("not a DSSE envelope: {e}")))
    }

    /// The payload's bytes: the one decoder of a DSSE payload. Unchecked:
    /// only [`open`] says whether a trusted key signed them.
    pub fn payload_bytes(&self) -> std::result::Result<Vec<u8>, EnvelopeError> {
        B64.decode(&self.payload)
            .map_err(|e| EnvelopeError::Malformed(format!("payload is not base64: {e}")))
    }

    /// The payload parsed as JSON of type `T`, unchecked (for what an
    /// envelope names, never for whether to trust it).
    pub fn unverified_payload<T: serde::de::DeserializeOwned>(
        &self,
    ) -> std::result::Result<T, EnvelopeError> {
        serde_json::from_slice(&self.payload_bytes()?)
            .map_err(|e| EnvelopeError::Malformed(format!("the payload does not parse: {e}")))
    }

    /// The envelope as `serde_json::to_vec_pretty` writes it, byte for
    /// byte, without running the (multi-megabyte) base64 payload through
    /// the JSON string escaper: base64 needs no escaping, so the payload is
    /// put between the quotes of an envelope written with an empty one.
    pub fn to_vec_pretty(&self) -> serde_json::Result<Vec<u8>> {
        let plain = self
            .payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        let shell = Envelope {
            payload: String::new(),
            payload_type: self.payload_type.clone(),
            signatures: self.signatures.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&shell)?;
        const EMPTY: &[u8] = b"{\n  \"payload\": \"\"";
        if !plain || !bytes.starts_with(EMPTY) {
            return serde_json::to_vec_pretty(self);
        }
        let at = EMPTY.len() - 1;
        let mut out = Vec::with_capacity(bytes.len() + self.payload.len());
        out.extend_from_slice(&bytes[..at]);
        out.extend_from_slice(self.payload.as_bytes());
        out.extend_from_slice(&bytes[at..]);
        Ok(out)
    }
}

/// Why an envelope does not check out.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not an envelope at all.
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    /// No signature made by a key we can find.
    #[error("signed by unknown key `{0}`\nhint: the key's public half must be in the store or given with `--trust`")]
    UnknownKey(String),
    /// The signature does not match the payload: the envelope was changed after signing.
    #[error("the signature of key `{0}` does not match the payload: the record was altered after it was signed")]
    BadSignature(String),
}

/// The payload of the envelope in `bytes`, parsed as `T`, signatures not
/// checked (see [`Envelope::unverified_payload`]).
pub fn unverified_payload<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<T, EnvelopeError> {
    Envelope::parse(bytes)?.unverified_payload()
}

/// Check an envelope: at least one signature must verify with a key that
/// `lookup` finds by key id. Returns the payload and the key id that verified.
pub fn open(
    envelope: &Envelope,
    lookup: impl Fn(&str) -> Option<VerifyingKey>,
) -> std::result::Result<(Vec<u8>, String), EnvelopeError> {
    let payload = envelope.payload_bytes()?;
    if envelope.signatures.is_empty() {
        return Err(EnvelopeError::Malformed("no signatures".into()));
    }
    let msg = pae(&envelope.payload_type, &payload);
    let mut first_err = None;
    for s in &envelope.signatures {
        let Some(key) = lookup(&s.keyid) else {
            first_err.get_or_insert(EnvelopeError::UnknownKey(s.keyid.clone()));
            continue;
        };
        if key_id(&key).to_string() != s.keyid {
            first_err.get_or_insert(EnvelopeError::UnknownKey(s.keyid.clone()));
            continue;
        }
        let ok = B64
            .decode(&s.sig)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .is_some_and(|sig| key.verify(&msg, &sig).is_ok());
        if ok {
            return Ok((payload, s.keyid.clone()));
        }
        first_err = Some(EnvelopeError::BadSignature(s.keyid.clone()));
    }
    Err(first_err.unwrap_or_else(|| EnvelopeError::Malformed("no signatures".into())))
}

/// Keep a public key in the store, so records signed with it can be checked later.
///
/// A key the store already holds intact (re-hashed: 32 bytes) is not
/// written again: a build or a verification publishes its key once or
/// twice, and every write costs a temporary file.
pub fn publish(store: &Store, key: &VerifyingKey) -> Result<BlobDigest> {
    let d = BlobDigest::from_hash(Hash::of(key.as_bytes()));
    if store.verify_blob(&d).is_ok() {
        return Ok(d);
    }
    Ok(store.put_bytes(key.as_bytes())?)
}

/// Find a public key in the store by key id.
pub fn lookup_in_store(store: &Store, keyid: &str) -> Option<VerifyingKey> {
    let d: BlobDigest = keyid.parse().ok()?;
    let bytes = store.read_blob(&d).ok()?;
    let raw: [u8; 32] = bytes.try_into().ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_open_round_trip_and_tamper_is_caught() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let vk = key.verifying_key();
        let env = sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}");
        let id = key_id(&vk).to_string();
        let (payload, by) = open(&env, |k| (k == id).then_some(vk)).unwrap();
        assert_eq!(payload, b"{\"a\":1}");
        assert_eq!(by, id);

        let mut tampered = env.clone();
        tampered.payload = B64.encode(b"{\"a\":2}");
        let err = open(&tampered, |k| (k == id).then_some(vk)).unwrap_err();
        assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err}");

        let err = open(&env, |_| None).unwrap_err();
        assert!(matches!(err, EnvelopeError::UnknownKey(_)), "{err}");
    }

    /// The envelope's own writer gives exactly what serde's pretty printer
    /// does, for a payload big enough to be encoded on a second thread and
    /// for payloads that are not base64 (never made by `sign`).
    #[test]
    fn envelopes_are_written_like_serde_writes_them() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let big: Vec<u8> = (0..3 * PARALLEL_ENCODE)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for payload in [&b"{\"a\":1}"[..], &b""[..], &big[..]] {
            let env = sign(&key, IN_TOTO_PAYLOAD_TYPE, payload);
            assert_eq!(B64.decode(&env.payload).unwrap(), payload);
            assert_eq!(
                env.to_vec_pretty().unwrap(),
                serde_json::to_vec_pretty(&env).unwrap()
            );
            let vk = key.verifying_key();
            let (back, _) = open(&env, |_| Some(vk)).unwrap();
            assert_eq!(back, payload);
        }
        let mut odd = sign(&key, "x", b"y");
        odd.payload = "not \"base64\"\n".into();
        assert_eq!(
            odd.to_vec_pretty().unwrap(),
            serde_json::to_vec_pretty(&odd).unwrap()
        );
    }

    /// Publishing twice keeps one intact copy; a damaged copy is written
    /// anew rather than trusted.
    #[test]
    fn publish_writes_a_key_once_and_repairs_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let d = publish(&store, &key).unwrap();
        assert_eq!(d, BlobDigest::from_hash(Hash::of(key.as_bytes())));
        assert_eq!(
            lookup_in_store(&store, &key_id(&key).to_string()),
            Some(key)
        );
        assert_eq!(publish(&store, &key).unwrap(), d);
        let path = store.blob_path(&d);
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, b"not the key").unwrap();
        assert_eq!(lookup_in_store(&store, &key_id(&key).to_string()), None);
        assert_eq!(publish(&store, &key).unwrap(), d);
        assert_eq!(
            lookup_in_store(&store, &key_id(&key).to_string()),
            Some(key)
        );
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn generate_refuses_to_overwrite_and_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/signing.key");
        let key = generate(&path).unwrap();
        assert_eq!(load(&path).unwrap().to_bytes(), key.to_bytes());
        let pubkey = parse_public(&std::fs::read_to_string(pub_path(&path)).unwrap()).unwrap();
        assert_eq!(pubkey, key.verifying_key());
        assert!(generate(&path)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
