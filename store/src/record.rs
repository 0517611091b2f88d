//! Records: signed build records (opaque bytes to the store), the refs
//! `v1/refs/records/<name>/<version>` naming the latest one of each
//! version, and the history `v1/refs/record-history/<name>/<version>/<hex>`
//! of every record ever made of it.
//!
//! # A version names its inputs
//!
//! A version label keeps naming the inputs it was first built from: every
//! record of `name@version` must have been built from the same inputs. The
//! store does not read records, so whoever stores one says what its inputs
//! are ([`InputsOf`]: a digest that two records share exactly when they
//! were built from the same inputs). [`Store::put_record`] refuses a record
//! whose inputs differ from those of the version's records
//! ([`Error::VersionInputsDiffer`]) and otherwise adds it to the version's
//! history and points the version's ref at it.
//!
//! # Layout and compatibility
//!
//! ```text
//! v1/refs/records/<name>/<version>                     `sha256:<hex>\n`: the latest record
//! v1/refs/record-history/<name>/<version>/<record hex> one file per record of the version, holding its inputs digest
//! v1/records.lock                                      flock held while a record is added
//! ```
//!
//! The records of a version ([`Store::records_of`]) are its history plus
//! the record its ref names: a store written before histories existed (the
//! ref alone) reads correctly, and its record joins the history the next
//! time a record of that version is added. A version exists when it has a
//! ref ([`Store::record_versions`]).
//!
//! # Concurrency and crashes
//!
//! Adding a record holds `v1/records.lock` exclusively (a flock, separate
//! from the whole-store lock) from reading the version's inputs to writing
//! its refs, so of two processes racing to make the first record of a
//! version from different inputs exactly one wins and the other is refused.
//! Under the lock: the record the ref names now joins the history (if it is
//! not there yet), the ref moves to the new record, the new record joins
//! the history; each write is atomic. A crash in between leaves the new
//! record named by the ref and not yet in the history, which
//! [`Store::records_of`] still lists; never a history without a ref.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::error::{io_err, VersionInputsDiffer};
use crate::layout::Ns;
use crate::{BlobDigest, Error, Hash, RecordDigest, Result, Store};

/// What the store is told about a record's inputs (it keeps records as
/// opaque bytes): given a record's envelope, a digest that two records
/// share exactly when they were built from the same inputs. An error (the
/// envelope does not parse) refuses the record.
pub type InputsOf<'a> = &'a dyn Fn(&[u8]) -> Result<Hash>;

/// The flock serializing record writes, relative to the format directory.
const RECORDS_LOCK: &str = "records.lock";

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
        self.ns_dir(Ns::Records).join(name)
    }

    pub(crate) fn record_history_dir(&self, name: &str, version: &str) -> PathBuf {
        self.ns_dir(Ns::RecordHistory).join(name).join(version)
    }

    /// Store a record envelope as a record of `name@version` and point the
    /// version's ref at it. `inputs_of` says what a record was built from
    /// (see [`InputsOf`]): a record whose inputs differ from those of the
    /// version's records is refused with [`Error::VersionInputsDiffer`] and
    /// changes no ref (its blob stays, for `repro gc` to collect). The same
    /// record again is accepted (and becomes the latest).
    ///
    /// The version's inputs are those of its latest record, or, when that
    /// cannot be read, of the first of its other records that can; when
    /// none can, the error reading the latest is returned.
    pub fn put_record(
        &self,
        envelope: &[u8],
        name: &str,
        version: &str,
        inputs_of: InputsOf<'_>,
    ) -> Result<RecordDigest> {
        let inputs = inputs_of(envelope)?;
        self.put_record_of_inputs(envelope, name, version, inputs, inputs_of)
    }

    /// [`Store::put_record`] of a record whose inputs digest the caller
    /// knows already (`inputs`, what `inputs_of` would give for
    /// `envelope`): a build, which made the record from those inputs,
    /// need not parse it back.
    pub fn put_record_of_inputs(
        &self,
        envelope: &[u8],
        name: &str,
        version: &str,
        inputs: Hash,
        inputs_of: InputsOf<'_>,
    ) -> Result<RecordDigest> {
        check_name("record name", name)?;
        check_name("version", version)?;
        let d = RecordDigest::from_hash(self.put_bytes(envelope)?.hash());
        let _lock = self.lock_records()?;
        let latest = self.latest_record(name, version)?;
        let known = self.version_inputs(name, version, latest, inputs_of)?;
        if let Some((existing, existing_inputs)) = known {
            if existing_inputs != inputs && existing != d {
                return Err(Error::VersionInputsDiffer(Box::new(VersionInputsDiffer {
                    name: name.to_string(),
                    version: version.to_string(),
                    record: d,
                    inputs,
                    existing,
                    existing_inputs,
                })));
            }
        }
        let history = self.record_history_dir(name, version);
        if let Some(latest) = latest {
            // A ref written before histories existed (or a crash after the
            // ref moved): its record joins the history before the ref moves,
            // with its inputs digest when that is what was just read.
            let read = known.filter(|(e, _)| *e == latest).map(|(_, h)| h);
            self.add_to_history(&history, &latest, read.as_ref())?;
        }
        let dir = self.record_ref_dir(name);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&dir.join(version), format!("{d}\n").as_bytes())?;
        self.add_to_history(&history, &d, Some(&inputs))?;
        Ok(d)
    }

    /// The inputs `name@version` names, as [`Store::put_record`] compares
    /// them: a record of the version and its inputs digest, `None` when the
    /// version has no record. Read from the version's history (where each
    /// record's inputs digest is kept when it is added), else from the
    /// record itself through `inputs_of`. The history is a ref like the
    /// version's own: `repro fsck` checks it against the records.
    pub fn recorded_inputs(
        &self,
        name: &str,
        version: &str,
        inputs_of: InputsOf<'_>,
    ) -> Result<Option<(RecordDigest, Hash)>> {
        check_name("record name", name)?;
        check_name("version", version)?;
        let latest = self.latest_record(name, version)?;
        self.version_inputs(name, version, latest, inputs_of)
    }

    /// The inputs digest kept in the history entry of record `d` of
    /// `name@version`; `None` if there is none (an entry written before
    /// they were kept, or none at all).
    pub fn history_inputs(&self, name: &str, version: &str, d: &RecordDigest) -> Option<Hash> {
        let path = self.record_history_dir(name, version).join(d.hex());
        let text = fs::read_to_string(path).ok()?;
        text.trim_end().parse().ok()
    }

    /// Hold `v1/records.lock` exclusively until the returned file is dropped.
    fn lock_records(&self) -> Result<fs::File> {
        let path = self.layout_dir().join(RECORDS_LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        fs4::fs_std::FileExt::lock_exclusive(&file).map_err(io_err("lock", &path))?;
        Ok(file)
    }

    /// Add record `d`, built from `inputs` (when known), to the history in
    /// `dir`: an entry holds the record's inputs digest, or nothing when it
    /// is not known. An entry that holds a digest is never rewritten.
    fn add_to_history(
        &self,
        dir: &std::path::Path,
        d: &RecordDigest,
        inputs: Option<&Hash>,
    ) -> Result<()> {
        let path = dir.join(d.hex());
        match fs::read(&path) {
            Ok(b) if !b.is_empty() || inputs.is_none() => return Ok(()),
            _ => {}
        }
        let line = inputs.map(|h| format!("{h}\n")).unwrap_or_default();
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        self.write_atomic(&path, line.as_bytes())
    }

    /// The record the ref of `name@version` names, `None` without a ref.
    fn latest_record(&self, name: &str, version: &str) -> Result<Option<RecordDigest>> {
        match self.resolve_record(name, version) {
            Ok(d) => Ok(Some(d)),
            Err(Error::UnknownVersion { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The inputs `name@version` names: a record of it and that record's
    /// inputs (the latest record's, else the first other readable one's);
    /// `None` when the version has no record.
    fn version_inputs(
        &self,
        name: &str,
        version: &str,
        latest: Option<RecordDigest>,
        inputs_of: InputsOf<'_>,
    ) -> Result<Option<(RecordDigest, Hash)>> {
        let mut candidates: Vec<RecordDigest> = latest.into_iter().collect();
        for d in self.records_of(name, version)? {
            if !candidates.contains(&d) {
                candidates.push(d);
            }
        }
        let mut first_err = None;
        for d in candidates {
            if let Some(h) = self.history_inputs(name, version, &d) {
                return Ok(Some((d, h)));
            }
            match self.get_record(&d).and_then(|bytes| inputs_of(&bytes)) {
                Ok(h) => return Ok(Some((d, h))),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Every record ever stored for `name@version` (its history and the
    /// record its ref names), sorted by digest; empty when it has none.
    /// Not verified: a digest may name a missing or corrupt blob.
    pub fn records_of(&self, name: &str, version: &str) -> Result<Vec<RecordDigest>> {
        check_name("record name", name)?;
        check_name("version", version)?;
        let dir = self.record_history_dir(name, version);
        let mut out = Vec::new();
        for entry in list_names(&dir)? {
            let hash = Hash::from_hex(&entry).map_err(|e| Error::Malformed {
                what: "record history entry",
                digest: entry.clone(),
                why: format!("{e} (in `{}`)", dir.display()),
            })?;
            out.push(RecordDigest::from_hash(hash));
        }
        if let Some(latest) = self.latest_record(name, version)? {
            if !out.contains(&latest) {
                out.push(latest);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Read record `d`, re-hashing it.
    pub fn get_record(&self, d: &RecordDigest) -> Result<Vec<u8>> {
        self.read_blob(&BlobDigest::from_hash(d.hash()))
            .map_err(|e| match e {
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
        let dir = self.ns_dir(Ns::Attestations).join(record.hex());
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&dir.join(d.hex()), b"")?;
        Ok(d)
    }

    /// The attestations stored about record `record`, sorted by digest (not verified).
    pub fn attestations_of(&self, record: &RecordDigest) -> Result<Vec<BlobDigest>> {
        let dir = self.ns_dir(Ns::Attestations).join(record.hex());
        let mut out = Vec::new();
        for name in list_names(&dir)? {
            let hash = crate::Hash::from_hex(&name).map_err(|e| Error::Malformed {
                what: "attestation ref",
                digest: name.clone(),
                why: format!("{e} (in `{}`)", dir.display()),
            })?;
            out.push(BlobDigest::from_hash(hash));
        }
        Ok(out)
    }

    /// The model names that have at least one record, sorted.
    pub fn record_names(&self) -> Result<Vec<String>> {
        list_names(&self.ns_dir(Ns::Records))
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
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// The inputs of a test record `b"<inputs>;<anything>"`: the part before
    /// the first `;` (the whole record when there is none).
    pub(crate) fn inputs(envelope: &[u8]) -> Result<Hash> {
        let end = envelope
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(envelope.len());
        Ok(Hash::of(&envelope[..end]))
    }

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        (t, s)
    }

    /// The history keeps each record's inputs digest, so that the
    /// version's inputs are known without reading a record (which may be
    /// megabytes); an entry is never rewritten, and a history from before
    /// digests were kept still reads through the records.
    #[test]
    fn the_history_keeps_each_records_inputs() {
        let (_t, s) = store();
        let d1 = s.put_record(b"a;1", "m", "1", &inputs).unwrap();
        let a = inputs(b"a").unwrap();
        assert_eq!(s.history_inputs("m", "1", &d1), Some(a));
        // Known to the caller: not parsed back.
        let never = |_: &[u8]| -> Result<Hash> { panic!("parsed") };
        let d2 = s.put_record_of_inputs(b"a;2", "m", "1", a, &never).unwrap();
        assert_eq!(s.recorded_inputs("m", "1", &never).unwrap(), Some((d2, a)));
        // The record blob itself is not needed for the comparison.
        fs::remove_file(s.blob_path(&BlobDigest::from_hash(d2.hash()))).unwrap();
        let err = s
            .put_record_of_inputs(b"b;1", "m", "1", inputs(b"b").unwrap(), &never)
            .unwrap_err();
        assert!(matches!(err, Error::VersionInputsDiffer(_)), "{err}");
        // An entry without a digest (an older store) reads the record.
        let entry = s.record_history_dir("m", "1").join(d1.hex());
        fs::write(&entry, b"").unwrap();
        assert_eq!(s.history_inputs("m", "1", &d1), None);
        fs::remove_file(s.record_history_dir("m", "1").join(d2.hex())).unwrap();
        fs::write(s.layout_dir().join("refs/records/m/1"), format!("{d1}\n")).unwrap();
        assert_eq!(s.recorded_inputs("m", "1", &inputs).unwrap(), Some((d1, a)));
    }

    fn sorted(mut v: Vec<RecordDigest>) -> Vec<RecordDigest> {
        v.sort();
        v
    }

    #[test]
    fn records_round_trip_and_unknown_versions_are_listed() {
        let (_t, s) = store();
        let d1 = s
            .put_record(b"a;{\"payload\":1}", "credit-risk", "1.0.0", &inputs)
            .unwrap();
        let d2 = s
            .put_record(b"b;{\"payload\":2}", "credit-risk", "1.1.0", &inputs)
            .unwrap();
        assert_eq!(s.resolve_record("credit-risk", "1.0.0").unwrap(), d1);
        assert_eq!(s.get_record(&d2).unwrap(), b"b;{\"payload\":2}");
        // A rebuild of the same version from the same inputs moves the ref
        // to the latest record; the first one stays a record of the version.
        let d3 = s
            .put_record(b"a;{\"payload\":3}", "credit-risk", "1.0.0", &inputs)
            .unwrap();
        assert_eq!(s.resolve_record("credit-risk", "1.0.0").unwrap(), d3);
        assert_eq!(s.get_record(&d1).unwrap(), b"a;{\"payload\":1}");
        assert_eq!(
            s.records_of("credit-risk", "1.0.0").unwrap(),
            sorted(vec![d1, d3])
        );
        assert_eq!(s.records_of("credit-risk", "1.1.0").unwrap(), [d2]);
        assert!(s.records_of("credit-risk", "9").unwrap().is_empty());

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
    fn a_version_keeps_naming_the_inputs_it_was_first_built_from() {
        let (_t, s) = store();
        let first = s.put_record(b"old data;1", "m", "1.0.0", &inputs).unwrap();
        let err = s
            .put_record(b"new data;2", "m", "1.0.0", &inputs)
            .unwrap_err();
        let refused = RecordDigest::from_hash(Hash::of(b"new data;2"));
        match &err {
            Error::VersionInputsDiffer(e) => {
                assert_eq!((e.name.as_str(), e.version.as_str()), ("m", "1.0.0"));
                assert_eq!(e.record, refused);
                assert_eq!(e.existing, first);
                assert_eq!(e.inputs, Hash::of(b"new data"));
                assert_eq!(e.existing_inputs, Hash::of(b"old data"));
            }
            e => panic!("expected VersionInputsDiffer, got {e}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("`m@1.0.0`"), "{msg}");
        assert!(msg.contains(&first.to_string()), "{msg}");
        assert!(msg.contains("\nhint: ") && msg.contains("version"), "{msg}");
        // Nothing moved: the version still names its first record only.
        assert_eq!(s.resolve_record("m", "1.0.0").unwrap(), first);
        assert_eq!(s.records_of("m", "1.0.0").unwrap(), [first]);
        assert!(!s
            .layout_dir()
            .join("refs/record-history/m/1.0.0")
            .join(refused.hex())
            .exists());

        // The same record again (an import of what is already here): fine.
        assert_eq!(
            s.put_record(b"old data;1", "m", "1.0.0", &inputs).unwrap(),
            first
        );
        // Another record of the same inputs: added, and the latest.
        let second = s.put_record(b"old data;2", "m", "1.0.0", &inputs).unwrap();
        assert_eq!(s.resolve_record("m", "1.0.0").unwrap(), second);
        assert_eq!(
            s.records_of("m", "1.0.0").unwrap(),
            sorted(vec![first, second])
        );
        // Still refused after several records.
        assert!(matches!(
            s.put_record(b"new data;3", "m", "1.0.0", &inputs),
            Err(Error::VersionInputsDiffer(_))
        ));
        // Another version is free to use other inputs.
        s.put_record(b"new data;4", "m", "1.0.1", &inputs).unwrap();
    }

    #[test]
    fn a_store_with_only_the_latest_ref_reads_and_keeps_its_record() {
        // A store written before per-version histories: the blob and the
        // ref `v1/refs/records/<name>/<version>`, nothing else.
        let (_t, s) = store();
        let old = RecordDigest::from_hash(s.put_bytes(b"old data;1").unwrap().hash());
        let dir = s.layout_dir().join("refs/records/m");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1"), format!("{old}\n")).unwrap();

        assert_eq!(s.records_of("m", "1").unwrap(), [old]);
        // Its inputs are the version's: others are refused...
        assert!(matches!(
            s.put_record(b"new data;2", "m", "1", &inputs),
            Err(Error::VersionInputsDiffer(_))
        ));
        // ...the same are added beside it, and it stays a record of the version.
        let new = s.put_record(b"old data;2", "m", "1", &inputs).unwrap();
        assert_eq!(s.resolve_record("m", "1").unwrap(), new);
        assert_eq!(s.records_of("m", "1").unwrap(), sorted(vec![old, new]));
    }

    #[test]
    fn the_latest_record_unreadable_the_others_still_say_what_the_version_names() {
        let (_t, s) = store();
        let first = s.put_record(b"old data;1", "m", "1", &inputs).unwrap();
        let latest = s.put_record(b"old data;2", "m", "1", &inputs).unwrap();
        fs::remove_file(s.blob_path(&BlobDigest::from_hash(latest.hash()))).unwrap();
        // The history knows the latest record's inputs without its blob.
        assert!(matches!(
            s.put_record(b"new data;3", "m", "1", &inputs),
            Err(Error::VersionInputsDiffer(ref e)) if e.existing == latest
        ));
        // A history that does not keep them (an older store): the records
        // are read, the latest unreadable, the first says.
        for d in [first, latest] {
            fs::write(s.record_history_dir("m", "1").join(d.hex()), b"").unwrap();
        }
        assert!(matches!(
            s.put_record(b"new data;3", "m", "1", &inputs),
            Err(Error::VersionInputsDiffer(ref e)) if e.existing == first
        ));
        // No record readable at all: refused, naming the missing record.
        fs::remove_file(s.blob_path(&BlobDigest::from_hash(first.hash()))).unwrap();
        let err = s.put_record(b"old data;4", "m", "1", &inputs).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains(&latest.to_string()), "{err}");
    }

    #[test]
    fn concurrent_first_records_of_a_version_with_different_inputs_exactly_one_wins() {
        let (_t, s) = store();
        const N: usize = 8;
        for round in 0..10 {
            let version = format!("1.{round}");
            let barrier = Arc::new(Barrier::new(N));
            let threads: Vec<_> = (0..N)
                .map(|i| {
                    let (s, barrier, version) = (s.clone(), Arc::clone(&barrier), version.clone());
                    std::thread::spawn(move || {
                        let envelope = format!("data {i};{round}");
                        barrier.wait();
                        s.put_record(envelope.as_bytes(), "m", &version, &inputs)
                    })
                })
                .collect();
            let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let won: Vec<RecordDigest> = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .copied()
                .collect();
            assert_eq!(won.len(), 1, "round {round}: {results:?}");
            for r in &results {
                if let Err(e) = r {
                    assert!(matches!(e, Error::VersionInputsDiffer(_)), "{e}");
                }
            }
            assert_eq!(s.resolve_record("m", &version).unwrap(), won[0]);
            assert_eq!(s.records_of("m", &version).unwrap(), won);
        }
    }

    #[test]
    fn concurrent_records_of_a_version_with_the_same_inputs_all_land() {
        let (_t, s) = store();
        const N: usize = 8;
        let barrier = Arc::new(Barrier::new(N));
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (s, barrier) = (s.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let envelope = format!("same data;{i}");
                    barrier.wait();
                    s.put_record(envelope.as_bytes(), "m", "1", &inputs)
                        .unwrap()
                })
            })
            .collect();
        let all: Vec<RecordDigest> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(s.records_of("m", "1").unwrap(), sorted(all.clone()));
        assert!(all.contains(&s.resolve_record("m", "1").unwrap()));
    }

    #[test]
    fn record_names_cannot_escape_the_refs_dir() {
        let (_t, s) = store();
        for (name, version) in [
            ("..", "1"),
            ("a/b", "1"),
            ("m", "../../x"),
            ("", "1"),
            ("m", ".hidden"),
        ] {
            let err = s.put_record(b"x", name, version, &inputs).unwrap_err();
            assert!(
                matches!(err, Error::InvalidName { .. }),
                "{name}@{version}: {err}"
            );
            assert!(matches!(
                s.records_of(name, version),
                Err(Error::InvalidName { .. })
            ));
        }
    }

    #[test]
    fn tampered_record_is_refused() {
        let (_t, s) = store();
        let d = s.put_record(b"signed", "m", "1", &inputs).unwrap();
        crate::blob::tests::corrupt(&s.blob_path(&BlobDigest::from_hash(d.hash())));
        let err = s.get_record(&d).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }));
        assert!(err.to_string().contains(&d.to_string()));
    }
}
