//! Explains, in terms an ML engineer can act on, why two versions of one
//! output file differ.
//!
//! [`explain`] picks the file's [`Format`] from its name and magic bytes,
//! compares the structure both versions hold and sorts the difference into a
//! [`Class`]: metadata only, order only, numeric (with magnitudes) or
//! unknown. It never fails: input it cannot parse is explained as text or
//! bytes (a PyTorch file as a zip), and the reason is kept in the details.
//!
//! The formats:
//!
//! - zip archives (`.zip`, `.keras`, ...): entries added, removed, reordered
//!   or with other timestamps; differing entries explained by their format;
//! - PyTorch `torch.save` files (a zip with `data.pkl`, whatever the name):
//!   the pickled object is rebuilt without running it, each tensor named by
//!   its state_dict key or path (`fc1.weight`, `model.fc1.weight`,
//!   `history[1]`) and compared element by element through its dtype,
//!   shape, strides and storage offset; the other pickled values by path;
//! - safetensors files: tensors by name, `__metadata__` and layout as
//!   metadata;
//! - ONNX models: initializers by name; nodes, inputs and outputs as the
//!   graph's structure; producer and doc fields as metadata;
//! - NumPy `.npy` / `.npz`: dtype, shape and elements;
//! - pickles and joblib files: the object graph by path;
//! - JSON: values by path, with key order, formatting and lists that are
//!   permutations of each other told apart; CSV: rows and columns; text:
//!   lines; anything else: a hex window.
//!
//! Tensors and arrays are compared the same way: how many elements differ,
//! the largest absolute and relative difference and, for floats (float16,
//! bfloat16, float32, float64), the largest distance in ULPs.
//!
//! ```
//! let e = repro_explain::explain("metrics.json", br#"{"auc": 0.91}"#, br#"{"auc": 0.92}"#);
//! assert_eq!(e.summary, "numeric: 1 of 1 values differ, max abs 1.0e-2, max rel 1.1e-2");
//! ```
//!
//! Memory stays within a few times the inputs: zip entries are read one pair
//! at a time, arrays are compared in place (a PyTorch file's storages are
//! held for both sides, and only strided views are copied), and formats that
//! build a tree (JSON, CSV, text) are only parsed below [`STRUCTURE_LIMIT`]
//! bytes.
//!
//! The files may be an attacker's, so nothing a file claims is believed
//! before it is checked against the bytes really there: sizes, shapes,
//! strides, offsets and lengths are multiplied and added with overflow
//! checks; everything decompressed (zip entries, nested archives, joblib
//! streams) or laid out (strided PyTorch views) in one explanation shares
//! one budget of 64 MiB plus 16 times the inputs' size; nesting is bounded
//! (pickled objects, pickle streams, zip archives) and so is the work spent
//! on objects a pickle shares through its memo.
//!
//! # Module order
//!
//! A module uses items defined only in modules below it, so no two files
//! refer to each other (tests excepted):
//!
//! 1. `common` (the vocabulary: `Format`, `Class`, `Finding`, shared helpers)
//!    and `error`: leaves, they use no other module of the crate.
//! 2. `numeric`: uses `common`.
//! 3. `binary` uses `common`; `text`, `npy` use `common`, `error` and
//!    `numeric`.
//! 4. `json` and `table` also use `text`; `pickle` also uses `npy`; `tensors` (named
//!    tensors compared by name) uses `common`, `numeric` and `npy`;
//!    `archive` uses `common` and `error`, and explains its entries through
//!    a closure it is handed rather than by calling the dispatcher.
//! 5. `safetensors` and `onnx` use `common`, `error` and `tensors`; `torch`
//!    also uses `pickle` (its object graph) and `archive` (for zip header
//!    metadata), and is handed the same closure.
//! 6. `lib.rs`: the dispatcher ([`explain`]), which uses every format
//!    module, and the public API, re-exported from `common` and `error`.

mod archive;
mod binary;
mod common;
mod error;
mod json;
mod npy;
mod numeric;
mod onnx;
mod pickle;
mod safetensors;
mod table;
mod tensors;
mod text;
mod torch;

use std::path::Path;

use serde_json::json;

pub use common::{first_difference, Class, Format, STRUCTURE_LIMIT};
use common::{is_text, Budget, Finding};
pub use error::Error;

/// Most detail lines an [`Explanation`] carries; the last one says how many
/// were left out.
pub const MAX_DETAILS: usize = 40;

/// How deep zip archives nested in zip archives are opened.
const MAX_DEPTH: usize = 4;

/// Why two versions of one file differ.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The format the files were compared as.
    pub format: Format,
    /// The kind of difference.
    pub class: Class,
    /// One line, `<class>: <what>`, e.g. `metadata only: zip entry timestamps`
    /// or `numeric: 12 of 4096 elements differ, max abs 3.1e-7, max rel 2.4e-6, max 3 ULP`.
    pub summary: String,
    /// Lines for a human, unindented (the caller indents them); at most
    /// [`MAX_DETAILS`] lines, the last saying how many more there were.
    pub details: Vec<String>,
    /// The same facts, structured, for `--json` output. Always has the keys
    /// `format`, `class`, `summary`, `details`, `expected_size`,
    /// `actual_size` and `first_difference` (byte offset or null), plus
    /// format-specific facts under `facts`.
    pub json: serde_json::Value,
}

/// Explains why `expected` and `actual`, two versions of the file at `path`
/// (used only for its extension and in messages), differ.
///
/// The format is chosen by extension first and magic bytes second; input
/// that does not parse as its format is explained as text or bytes and the
/// parse error is kept in the details. Never panics.
pub fn explain(path: &str, expected: &[u8], actual: &[u8]) -> Explanation {
    let budget = Budget::for_inputs(expected, actual);
    let finding = explain_finding(path, expected, actual, 0, &budget);
    let first = first_difference(expected, actual);
    let summary = finding.summary();
    let mut details = Vec::new();
    if finding.class != Class::Identical {
        details.push(format!(
            "sizes: {} vs {} bytes",
            expected.len(),
            actual.len()
        ));
        if let Some(off) = first {
            details.push(format!("first difference at byte {off} (0x{off:x})"));
        }
    }
    details.extend(finding.details);
    let details = bound_lines(details, MAX_DETAILS);
    let json = json!({
        "format": finding.format.as_str(),
        "class": finding.class.to_json(),
        "summary": summary,
        "details": details,
        "expected_size": expected.len(),
        "actual_size": actual.len(),
        "first_difference": first,
        "facts": finding.facts,
    });
    Explanation {
        format: finding.format,
        class: finding.class,
        summary,
        details,
        json,
    }
}

/// The format-specific part of [`explain`]; also used, through a closure
/// handed to [`archive::explain`], for zip entries. `budget` bounds what all
/// the nested levels decompress together.
fn explain_finding(path: &str, a: &[u8], b: &[u8], depth: usize, budget: &Budget) -> Finding {
    let format = detect(path, a, b);
    if a == b {
        return Finding::new(format, Class::Identical, "");
    }
    let parsed = match format {
        Format::Zip | Format::Npz | Format::Torch if depth >= MAX_DEPTH => Err(Error::TooDeep),
        Format::Zip | Format::Npz => archive::explain(path, a, b, budget, |name, x, y| {
            explain_finding(name, x, y, depth + 1, budget)
        }),
        Format::Torch => {
            let entry =
                |name: &str, x: &[u8], y: &[u8]| explain_finding(name, x, y, depth + 1, budget);
            torch::explain(path, a, b, budget, &entry).or_else(|err| {
                // Still a zip: explain it entry by entry, saying why not as torch.
                archive::explain(path, a, b, budget, entry).map(|mut f| {
                    f.details.insert(
                        0,
                        format!("could not compare as torch: {err}; compared as zip"),
                    );
                    f
                })
            })
        }
        Format::Safetensors => safetensors::explain(a, b),
        Format::Onnx => onnx::explain(a, b),
        Format::Npy => npy::explain(a, b),
        Format::Pickle => pickle::explain(a, b, budget),
        Format::Json => json::explain(a, b),
        Format::Csv => table::explain(path, a, b),
        Format::Text => text::explain(a, b),
        Format::Binary => return binary::explain(a, b),
    };
    match parsed {
        Ok(finding) => finding,
        Err(err) => {
            let mut fallback = if format != Format::Text && is_text(a) && is_text(b) && small(a, b)
            {
                text::explain(a, b).unwrap_or_else(|_| binary::explain(a, b))
            } else {
                binary::explain(a, b)
            };
            fallback.details.insert(
                0,
                format!(
                    "could not compare as {format}: {err}; compared as {}",
                    fallback.format
                ),
            );
            fallback
        }
    }
}

fn small(a: &[u8], b: &[u8]) -> bool {
    a.len() <= STRUCTURE_LIMIT && b.len() <= STRUCTURE_LIMIT
}

/// Chooses the format by extension, then by magic bytes of either side.
fn detect(path: &str, a: &[u8], b: &[u8]) -> Format {
    let name = path
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "npz" => return Format::Npz,
        "zip" | "keras" | "pt" | "pth" | "mar" | "nemo" if is_zip(a) || is_zip(b) => {
            return zip_kind(a, b)
        }
        "npy" => return Format::Npy,
        "safetensors" => return Format::Safetensors,
        "onnx" => return Format::Onnx,
        "pkl" | "pickle" | "joblib" | "sav" => return Format::Pickle,
        "json" | "ipynb" => return Format::Json,
        "csv" | "tsv" => return Format::Csv,
        _ => {}
    }
    let magic = |f: fn(&[u8]) -> bool| f(a) || f(b);
    if magic(is_zip) {
        zip_kind(a, b)
    } else if magic(npy::is_npy) {
        Format::Npy
    } else if magic(safetensors::is_safetensors) {
        // Before pickles: a header of 0x280 bytes starts `\x80\x02`, as a
        // protocol 2 pickle does.
        Format::Safetensors
    } else if magic(pickle::is_pickle) {
        Format::Pickle
    } else if is_text(a) && is_text(b) {
        let starts_json = |d: &[u8]| {
            matches!(
                d.iter().find(|c| !c.is_ascii_whitespace()),
                Some(b'{' | b'[')
            )
        };
        if starts_json(a)
            && starts_json(b)
            && small(a, b)
            && serde_json::from_slice::<serde_json::Value>(a).is_ok()
            && serde_json::from_slice::<serde_json::Value>(b).is_ok()
        {
            Format::Json
        } else {
            Format::Text
        }
    } else {
        Format::Binary
    }
}

/// A zip holding a `data.pkl` is a PyTorch file (whatever its extension:
/// `.pt`, `.pth`, `.ckpt`, `pytorch_model.bin`).
fn zip_kind(a: &[u8], b: &[u8]) -> Format {
    if (is_zip(a) && torch::is_torch(a)) || (is_zip(b) && torch::is_torch(b)) {
        Format::Torch
    } else {
        Format::Zip
    }
}

fn is_zip(d: &[u8]) -> bool {
    d.starts_with(b"PK\x03\x04") || d.starts_with(b"PK\x05\x06")
}

/// Runs `diffoscope --text - <expected> <actual>` when `diffoscope` is on
/// `PATH` and returns its report; `None` when it is not installed.
///
/// diffoscope exits 1 when the files differ, which is not an error here; an
/// error is a failure to run it or an exit status above 1 (its stderr).
pub fn diffoscope(expected: &Path, actual: &Path) -> Option<Result<String, String>> {
    let program = find_on_path("diffoscope")?;
    let out = std::process::Command::new(program)
        .arg("--text")
        .arg("-")
        .arg(expected)
        .arg(actual)
        .stdin(std::process::Stdio::null())
        .output();
    Some(match out {
        Err(e) => Err(format!("could not run `diffoscope`: {e}")),
        Ok(out) if matches!(out.status.code(), Some(0 | 1)) => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(out) => Err(format!(
            "`diffoscope` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    })
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Keeps at most `max` lines; the last kept line says how many lines were
/// dropped.
fn bound_lines(mut lines: Vec<String>, max: usize) -> Vec<String> {
    if lines.len() > max {
        let more = lines.len() - (max - 1);
        lines.truncate(max - 1);
        lines.push(format!("... {more} more lines"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_bounded() {
        let lines: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let b = bound_lines(lines, 10);
        assert_eq!(b.len(), 10);
        assert_eq!(b[9], "... 91 more lines");
    }
}
