//! Pinning: floating references, the lock file (`model.lock`) and the
//! digests a build uses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use repro_store::{Hash, ImageDigest, TreeDigest};
use serde::Serialize;

use crate::de::toml_key;
use crate::error::{Collector, Diagnostic, Diagnostics, Error, Location, Result};
use crate::raw::RawLock;
use crate::recipe::{parse_hash, ImageRef, Recipe, TreeRef};

/// The lock file format version this crate reads and writes.
pub const LOCK_VERSION: i64 = 1;

/// The kind of thing a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A `[toolchains.NAME]` image.
    Toolchain,
    /// A `[data.NAME]` snapshot.
    Data,
    /// A `[code.NAME]` tree.
    Code,
}

impl Kind {
    /// The recipe table holding this kind: `toolchains`, `data` or `code`.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Toolchain => "toolchains",
            Kind::Data => "data",
            Kind::Code => "code",
        }
    }

    /// The key that pins this kind by digest: `image` or `digest`.
    pub fn pin_key(self) -> &'static str {
        match self {
            Kind::Toolchain => "image",
            Kind::Data | Kind::Code => "digest",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Toolchain => "toolchain",
            Kind::Data => "data snapshot",
            Kind::Code => "code tree",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Toolchain => "toolchain",
            Kind::Data => "data",
            Kind::Code => "code",
        })
    }
}

/// A reference that is not a digest and must be resolved (and locked).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatingRef {
    /// A toolchain's `archive`: a tar relative to the recipe.
    Archive(PathBuf),
    /// A toolchain's `tag`: an image in the local Docker daemon.
    Tag(String),
    /// A data snapshot's or code tree's `path`: a folder relative to the recipe.
    Path(PathBuf),
}

impl FloatingRef {
    /// The key it is written under: `archive`, `tag` or `path`.
    pub fn field(&self) -> &'static str {
        match self {
            FloatingRef::Archive(_) => "archive",
            FloatingRef::Tag(_) => "tag",
            FloatingRef::Path(_) => "path",
        }
    }

    /// The value as written (paths come from TOML text, so they are UTF-8).
    pub fn value(&self) -> String {
        match self {
            FloatingRef::Archive(p) | FloatingRef::Path(p) => p.to_string_lossy().into_owned(),
            FloatingRef::Tag(t) => t.clone(),
        }
    }
}

impl fmt::Display for FloatingRef {
    /// As a TOML key-value pair, e.g. `path = "data"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}",
            self.field(),
            toml::Value::String(self.value())
        )
    }
}

/// A floating reference of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Floating {
    /// What it names.
    pub kind: Kind,
    /// The toolchain's, snapshot's or tree's name.
    pub name: String,
    /// The reference as written.
    pub reference: FloatingRef,
    /// The key path, e.g. `toolchains.sklearn.archive` or `data.cancer.path`.
    pub key: String,
    /// Where it is written.
    #[serde(skip)]
    pub location: Option<Location>,
}

/// One lock entry: a floating reference and the digest it resolved to (an
/// image manifest digest for toolchains, a tree digest for data and code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockEntry {
    /// The floating reference as written in the recipe when locked.
    pub reference: FloatingRef,
    /// What it resolved to.
    pub digest: Hash,
}

/// The contents of a lock file (`model.lock`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lock {
    /// Toolchain entries by name.
    pub toolchains: BTreeMap<String, LockEntry>,
    /// Data snapshot entries by name.
    pub data: BTreeMap<String, LockEntry>,
    /// Code tree entries by name.
    pub code: BTreeMap<String, LockEntry>,
}

impl Lock {
    /// The entries of one kind.
    pub fn entries(&self, kind: Kind) -> &BTreeMap<String, LockEntry> {
        match kind {
            Kind::Toolchain => &self.toolchains,
            Kind::Data => &self.data,
            Kind::Code => &self.code,
        }
    }

    fn entries_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, LockEntry> {
        match kind {
            Kind::Toolchain => &mut self.toolchains,
            Kind::Data => &mut self.data,
            Kind::Code => &mut self.code,
        }
    }

    /// The entry for `name` of `kind`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&LockEntry> {
        self.entries(kind).get(name)
    }

    /// Read a lock file; a missing file is `Ok(None)`.
    pub fn read(path: &Path) -> Result<Option<Lock>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Lock::parse_str(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parse the text of a lock file; `path` is used in messages.
    pub fn parse_str(path: &Path, text: &str) -> Result<Lock> {
        let raw: RawLock = crate::de::from_str(path, text)?;
        let mut c = Collector::new(path, text);
        if *raw.version.get_ref() != LOCK_VERSION {
            c.push(
                raw.version.span(),
                "version",
                format!(
                    "lock file version {} is not supported (expected {LOCK_VERSION})",
                    raw.version.get_ref()
                ),
                Some("regenerate it with `repro lock <recipe>`".into()),
            );
        }
        let mut lock = Lock::default();
        for (name, t) in raw.toolchains {
            let key = format!("toolchains.{}", toml_key(&name));
            let table = t.span();
            let t = t.into_inner();
            let reference = match (t.archive, t.tag) {
                (Some(a), None) => Some(FloatingRef::Archive(PathBuf::from(a.into_inner()))),
                (None, Some(tag)) => Some(FloatingRef::Tag(tag.into_inner())),
                _ => {
                    c.push(
                        table,
                        &key,
                        format!("lock entry `{key}` needs exactly one of `archive` or `tag`"),
                        Some("regenerate it with `repro lock <recipe>`".into()),
                    );
                    None
                }
            };
            let digest = parse_hash(&mut c, &t.image, &format!("{key}.image"));
            if let (Some(reference), Some(digest)) = (reference, digest) {
                lock.toolchains
                    .insert(name, LockEntry { reference, digest });
            }
        }
        for (kind, entries) in [(Kind::Data, raw.data), (Kind::Code, raw.code)] {
            for (name, t) in entries {
                let key = format!("{}.{}", kind.table(), toml_key(&name));
                let t = t.into_inner();
                let reference = FloatingRef::Path(PathBuf::from(t.path.into_inner()));
                if let Some(digest) = parse_hash(&mut c, &t.digest, &format!("{key}.digest")) {
                    lock.entries_mut(kind)
                        .insert(name, LockEntry { reference, digest });
                }
            }
        }
        c.finish()?;
        Ok(lock)
    }

    /// The lock as TOML: a fixed header, then the entries sorted by kind and
    /// name. The same lock always gives the same bytes.
    pub fn to_toml_string(&self) -> String {
        let mut out = String::from("# generated by `repro lock`; do not edit\n");
        out.push_str(&format!("version = {LOCK_VERSION}\n"));
        for kind in [Kind::Toolchain, Kind::Data, Kind::Code] {
            for (name, entry) in self.entries(kind) {
                out.push_str(&format!("\n[{}.{}]\n", kind.table(), toml_key(name)));
                out.push_str(&format!("{}\n", entry.reference));
                out.push_str(&format!("{} = \"{}\"\n", kind.pin_key(), entry.digest));
            }
        }
        out
    }

    /// Write the lock atomically: a temporary file beside `path`, synced,
    /// then renamed over it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let err = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        repro_store::write_atomic(path, self.to_toml_string().as_bytes()).map_err(|e| match e {
            repro_store::Error::Io { err: source, .. } => err(source),
            other => err(std::io::Error::other(other)),
        })
    }
}

/// Every digest a build uses, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pins {
    /// Image manifest digests of the toolchains.
    pub toolchains: BTreeMap<String, ImageDigest>,
    /// Tree digests of the data snapshots.
    pub data: BTreeMap<String, TreeDigest>,
    /// Tree digests of the code trees.
    pub code: BTreeMap<String, TreeDigest>,
}

impl Recipe {
    /// Every floating reference, sorted by kind and name.
    pub fn floating(&self) -> Vec<Floating> {
        let mut out = Vec::new();
        let mut add = |kind: Kind, name: &str, reference: FloatingRef, location| {
            let key = format!("{}.{}.{}", kind.table(), toml_key(name), reference.field());
            out.push(Floating {
                kind,
                name: name.to_string(),
                reference,
                key,
                location,
            });
        };
        for (name, t) in &self.toolchains {
            match &t.reference {
                ImageRef::Pinned(_) | ImageRef::Registry { .. } => {}
                ImageRef::Archive(p) => add(
                    Kind::Toolchain,
                    name,
                    FloatingRef::Archive(p.clone()),
                    t.location,
                ),
                ImageRef::Tag(tag) => add(
                    Kind::Toolchain,
                    name,
                    FloatingRef::Tag(tag.clone()),
                    t.location,
                ),
            }
        }
        for (name, d) in &self.data {
            if let TreeRef::Path(p) = &d.reference {
                add(Kind::Data, name, FloatingRef::Path(p.clone()), d.location);
            }
        }
        for (name, c) in &self.code {
            if let TreeRef::Path(p) = &c.reference {
                add(Kind::Code, name, FloatingRef::Path(p.clone()), c.location);
            }
        }
        out
    }

    /// The digests to build with: pinned references as written, floating
    /// ones from `lock`. This is what `--locked` uses: a floating reference
    /// without a lock entry for the same reference is an error, and every
    /// such reference is reported.
    pub fn pins_from(&self, lock: Option<&Lock>) -> Result<Pins> {
        let mut pins = Pins::default();
        for (name, t) in &self.toolchains {
            if let Some(d) = t.reference.pinned() {
                pins.toolchains.insert(name.clone(), d);
            }
        }
        for (name, d) in &self.data {
            if let TreeRef::Pinned(h) = &d.reference {
                pins.data.insert(name.clone(), *h);
            }
        }
        for (name, c) in &self.code {
            if let TreeRef::Pinned(h) = &c.reference {
                pins.code.insert(name.clone(), *h);
            }
        }
        let lock_path = self.lock_path();
        let lock_name = lock_path.display();
        let mut diags = Vec::new();
        for f in self.floating() {
            let entry = lock.and_then(|l| l.get(f.kind, &f.name));
            let why = match entry {
                Some(e) if e.reference == f.reference => {
                    match f.kind {
                        Kind::Toolchain => pins
                            .toolchains
                            .insert(f.name, ImageDigest::from_hash(e.digest))
                            .map(|_| ()),
                        Kind::Data => pins
                            .data
                            .insert(f.name, TreeDigest::from_hash(e.digest))
                            .map(|_| ()),
                        Kind::Code => pins
                            .code
                            .insert(f.name, TreeDigest::from_hash(e.digest))
                            .map(|_| ()),
                    };
                    continue;
                }
                Some(e) => format!(
                    "`{lock_name}` pins `{}`, not `{}`",
                    e.reference, f.reference
                ),
                None if lock.is_none() => format!("there is no lock file `{lock_name}`"),
                None => format!("`{lock_name}` has no entry for it"),
            };
            diags.push(
                Diagnostic::new(
                    &self.path,
                    format!("{} `{}` is not pinned: {why}", f.kind.noun(), f.name),
                )
                .at(f.location)
                .key(f.key)
                .hint(format!(
                    "run `repro lock {}` or pin it with `{} = \"sha256:...\"`",
                    self.path.display(),
                    f.kind.pin_key()
                )),
            );
        }
        Diagnostics(diags).into_result()?;
        Ok(pins)
    }

    /// A lock from the runner's resolutions of the floating references.
    /// Only floating references get entries (pinned ones and names the
    /// recipe does not have are ignored); one missing from `resolved` gets
    /// no entry, so [`Recipe::pins_from`] will report it.
    pub fn lock_with(&self, resolved: &Resolved) -> Lock {
        let mut lock = Lock::default();
        for f in self.floating() {
            let digest = match f.kind {
                Kind::Toolchain => resolved.toolchains.get(&f.name).map(ImageDigest::hash),
                Kind::Data => resolved.data.get(&f.name).map(TreeDigest::hash),
                Kind::Code => resolved.code.get(&f.name).map(TreeDigest::hash),
            };
            if let Some(digest) = digest {
                lock.entries_mut(f.kind).insert(
                    f.name,
                    LockEntry {
                        reference: f.reference,
                        digest,
                    },
                );
            }
        }
        lock
    }
}

/// What the runner resolved the floating references to (by name), the
/// input of [`Recipe::lock_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Image manifest digests of imported `archive`s and exported `tag`s.
    pub toolchains: BTreeMap<String, ImageDigest>,
    /// Tree digests of snapshotted data folders.
    pub data: BTreeMap<String, TreeDigest>,
    /// Tree digests of snapshotted code folders.
    pub code: BTreeMap<String, TreeDigest>,
}
