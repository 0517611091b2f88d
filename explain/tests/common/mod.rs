//! Helpers shared by the explain crate's test files.

use std::io::Read;
use std::path::PathBuf;

/// The bytes of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture `{}`: {e}", p.display()))
}

/// The entries of the zip `d`, in order.
pub fn unzip(d: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = zip::ZipArchive::new(std::io::Cursor::new(d)).expect("zip fixture");
    (0..ar.len())
        .map(|i| {
            let mut f = ar.by_index(i).expect("entry");
            let mut out = Vec::new();
            f.read_to_end(&mut out).expect("read entry");
            (f.name().to_string(), out)
        })
        .collect()
}
