//! Records: signed build records (opaque bytes to the store) and the refs
//! `v1/refs/records/<name>/<version>` naming the latest one of each version.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::error::io_err;
use crate::{BlobDigest, Error, RecordDigest, Result, Store};

/// Check a record name or version: it becomes a path component.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |why| {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("it starts with `.`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b))
    {
        return bad("it contains a character other than letters, digits and `._-+@`");
    }
    Ok(())
}

impl Store {
    fn record_ref_dir(&self, name: &str) -> PathBuf {
        self.layout_dir().join("refs/records").join(name)
    }

    /// Store a record envelope and point `name@version` at it.
    pub fn put_record(&self, envelope: &[u8], name: &str, version: &str) -> Result<RecordDigest> {
        check_name("record name", name)?;
        check_name("version", version)?;
        let d = RecordDigest(self.put_bytes(envelope)?.0);
        let dir = self.record_ref_dir(name);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&dir.join(version), format!("{d}\n").as_bytes())?;
        Ok(d)
    }

    /// Read record `d`, re-hashing it.
    pub fn get_record(&self, d: &RecordDigest) -> Result<Vec<u8>> {
        self.read_blob(&BlobDigest(d.0)).map_err(|e| match e {
            Error::Missing { digest, path, .. } => Error::Missing {
                what: "record",
                digest,
                path,
            },
            e => e,
        })
    }

    /// The digest of the latest record of `name@version`.
    pub fn resolve_record(&self, name: &str, version: &str) -> Result<RecordDigest> {
        check_name("record name", name)?;
        check_name("version", version)?;
        let path = self.record_ref_dir(name).join(version);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::UnknownVersion {
                    name: name.to_string(),
                    version: version.to_string(),
                    known: self.record_versions(name)?,
                });
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        text.trim_end()
            .parse()
            .map_err(|e: crate::ParseDigestError| Error::Malformed {
                what: "record ref",
                digest: format!("{name}@{version}"),
                why: format!("{e} (in `{}`)", path.display()),
            })
    }

    /// The versions of `name` that have a record, sorted (empty if none).
    pub fn record_versions(&self, name: &str) -> Result<Vec<String>> {
        check_name("record name", name)?;
        list_names(&self.record_ref_dir(name))
    }

    /// Store an attestation envelope (opaque bytes) about record `record`;
    /// returns its blob digest. Idempotent.
    pub fn put_attestation(&self, record: &RecordDigest, envelope: &[u8]) -> Result<BlobDigest> {
        let d = self.put_bytes(envelope)?;
        let dir = self
            .layout_dir()
            .join("refs/attestations")
            .join(record.hex());
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&dir.join(d.hex()), b"")?;
        Ok(d)
    }

    /// The attestations stored about record `record`, sorted by digest (not verified).
    pub fn attestations_of(&self, record: &RecordDigest) -> Result<Vec<BlobDigest>> {
        let dir = self
            .layout_dir()
            .join("refs/attestations")
            .join(record.hex());
        let mut out = Vec::new();
        for name in list_names(&dir)? {
            let hash = crate::Hash::from_hex(&name).map_err(|e| Error::Malformed {
                what: "attestation ref",
                digest: name.clone(),
                why: format!("{e} (in `{}`)", dir.display()),
            })?;
            out.push(BlobDigest(hash));
        }
        Ok(out)
    }

    /// The model names that have at least one record, sorted.
    pub fn record_names(&self) -> Result<Vec<String>> {
        list_names(&self.layout_dir().join("refs/records"))
    }
}

/// The UTF-8, non-hidden entry names of `dir`, sorted; empty if it is missing.
pub(crate) fn list_names(dir: &std::path::Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            if !name.starts_with('.') {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unknown_versions_are_listed() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d1 = s
            .put_record(b"{\"payload\":1}", "credit-risk", "1.0.0")
            .unwrap();
        let d2 = s
            .put_record(b"{\"payload\":2}", "credit-risk", "1.1.0")
            .unwrap();
        assert_eq!(s.resolve_record("credit-risk", "1.0.0").unwrap(), d1);
        assert_eq!(s.get_record(&d2).unwrap(), b"{\"payload\":2}");
        // A rebuild of the same version moves the ref to the latest record.
        let d3 = s
            .put_record(b"{\"payload\":3}", "credit-risk", "1.0.0")
            .unwrap();
        assert_eq!(s.resolve_record("credit-risk", "1.0.0").unwrap(), d3);
        assert_eq!(s.get_record(&d1).unwrap(), b"{\"payload\":1}");

        let err = s.resolve_record("credit-risk", "2.0.0").unwrap_err();
        assert!(matches!(err, Error::UnknownVersion { .. }));
        let msg = err.to_string();
        assert!(msg.contains("`2.0.0`") && msg.contains("hint:"), "{msg}");
        assert!(msg.contains("`1.0.0`, `1.1.0`"), "{msg}");

        let err = s.resolve_record("fraud", "1.0.0").unwrap_err();
        assert!(err.to_string().contains("no version of `fraud`"), "{err}");
        assert_eq!(s.record_names().unwrap(), ["credit-risk"]);
    }

    #[test]
    fn record_names_cannot_escape_the_refs_dir() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        for (name, version) in [
            ("..", "1"),
            ("a/b", "1"),
            ("m", "../../x"),
            ("", "1"),
            ("m", ".hidden"),
        ] {
            let err = s.put_record(b"x", name, version).unwrap_err();
            assert!(
                matches!(err, Error::InvalidName { .. }),
                "{name}@{version}: {err}"
            );
        }
    }

    #[test]
    fn tampered_record_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d = s.put_record(b"signed", "m", "1").unwrap();
        crate::blob::tests::corrupt(&s.blob_path(&BlobDigest(d.0)));
        let err = s.get_record(&d).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }));
        assert!(err.to_string().contains(&d.to_string()));
    }
}
