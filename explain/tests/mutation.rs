//! Deterministic mutation testing: every fixture of each format is damaged
//! in a few thousand seeded ways (bit flips, bytes overwritten with 0x00,
//! 0xff, 0x7f or 0x80, little-endian integers overwritten with huge values,
//! numbers written as text made huge, truncations, duplicated spans,
//! inserted bytes; one to three at once) and
//! explained against the original. Each explanation must come back without
//! panicking and quickly; a failure names the fixture, the seed and the
//! mutations, so that it replays exactly.
//!
//! Zip-based fixtures (PyTorch files, `.npz`) are also damaged inside: one
//! entry (the pickle, an array) is mutated and the archive written again,
//! so that the damage reaches the parsers behind the zip reader.
//!
//! A stack overflow aborts the process before any report: set
//! `REPRO_MUTATION_TRACE=1` to print each case before it runs.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repro_explain::explain;

mod common;

use common::{fixture, unzip};

/// One explanation taking longer than this (debug build; a case usually
/// takes well under a millisecond) is reported as a near-hang. A limit for
/// hangs, not a speed goal.
const SLOW: Duration = Duration::from_secs(20);
/// With no case finished for this long, the test stops the process.
const STALLED: Duration = Duration::from_secs(120);

/// xorshift64*: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Spread small seeds over the state; never zero.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Damages `d` with one to three mutations; returns what was done.
fn mutate(d: &mut Vec<u8>, rng: &mut Rng) -> String {
    let mut done = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if d.is_empty() {
            d.push(rng.next() as u8);
            done.push("push".to_string());
            continue;
        }
        let at = rng.below(d.len());
        match rng.below(8) {
            0 => {
                let bit = rng.below(8);
                d[at] ^= 1 << bit;
                done.push(format!("flip bit {bit} at {at}"));
            }
            1 => {
                let v = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
                d[at] = v;
                done.push(format!("set {at} to {v:#04x}"));
            }
            2 => {
                // A run of one value, as a length or count would be.
                let v = [0x00, 0xff, 0x7f][rng.below(3)];
                let n = (1 + rng.below(8)).min(d.len() - at);
                d[at..at + n].fill(v);
                done.push(format!("fill {n} bytes at {at} with {v:#04x}"));
            }
            3 => {
                let v: u64 = [
                    u64::MAX,
                    1 << 63,
                    1 << 62,
                    1 << 40,
                    u64::from(u32::MAX),
                    1 << 31,
                ][rng.below(6)];
                let bytes = v.to_le_bytes();
                let n = [2, 4, 8][rng.below(3)].min(d.len() - at);
                d[at..at + n].copy_from_slice(&bytes[..n]);
                done.push(format!("write {v:#x} ({n} bytes) at {at}"));
            }
            4 => {
                d.truncate(at);
                done.push(format!("truncate to {at}"));
            }
            5 => {
                let n = (1 + rng.below(64)).min(d.len() - at);
                let span = d[at..at + n].to_vec();
                let to = rng.below(d.len() + 1);
                d.splice(to..to, span);
                done.push(format!("copy {n} bytes from {at} to {to}"));
            }
            6 => {
                let v = rng.next() as u8;
                d.insert(at, v);
                done.push(format!("insert {v:#04x} at {at}"));
            }
            _ => {
                // A number written as text (an npy shape, a safetensors
                // offset, a protocol 0 pickle INT) made huge.
                let Some(start) = d[at..].iter().position(u8::is_ascii_digit).map(|p| at + p)
                else {
                    continue;
                };
                let end = d[start..]
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .map_or(d.len(), |p| start + p);
                let v = [
                    "0",
                    "4294967296",
                    "4611686018427387904",
                    "18446744073709551615",
                    "99999999999999999999",
                ][rng.below(5)];
                d.splice(start..end, v.bytes());
                done.push(format!("number at {start} set to {v}"));
            }
        }
    }
    done.join(", ")
}

fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(
            zip::DateTime::from_date_and_time(2024, 5, 1, 0, 0, 0).expect("valid time"),
        );
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).expect("start entry");
        w.write_all(data).expect("write entry");
    }
    w.finish().expect("finish zip").into_inner()
}

/// Stops the process when no case finishes for [`STALLED`], naming the
/// case that hangs.
struct Watchdog {
    done: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    current: Arc<std::sync::Mutex<String>>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let w = Watchdog {
            done: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(AtomicU64::new(0)),
            current: Arc::new(std::sync::Mutex::new(String::new())),
        };
        let (done, progress, current) = (w.done.clone(), w.progress.clone(), w.current.clone());
        std::thread::spawn(move || {
            let mut last = (0, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let p = progress.load(Ordering::Relaxed);
                if p != last.0 {
                    last = (p, Instant::now());
                } else if last.1.elapsed() > STALLED {
                    let case = current.lock().map(|c| c.clone()).unwrap_or_default();
                    eprintln!("no progress for {STALLED:?}: hangs on {case}");
                    std::process::exit(101);
                }
            }
        });
        w
    }

    fn case(&self, what: &str) {
        if let Ok(mut c) = self.current.lock() {
            what.clone_into(&mut c);
        }
    }

    fn finished(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Explains `cases` mutations of each fixture against the original (and,
/// for zip fixtures, as many of the entry whose name ends with `inner`);
/// fails with every case that panicked or was slow.
fn survive_mutations(fixtures: &[&str], cases: u64, inner: Option<&str>) {
    let trace = std::env::var_os("REPRO_MUTATION_TRACE").is_some();
    let watchdog = Watchdog::start();
    let mut failures = Vec::new();
    let mut count = 0u64;
    let started = Instant::now();
    for (k, &name) in fixtures.iter().enumerate() {
        let original = fixture(name);
        let entries = inner.map(|_| unzip(&original));
        for i in 0..cases {
            let seed = (k as u64) << 32 | i;
            let mut rng = Rng::new(seed);
            // For zips, every other case damages an entry instead.
            let (mutated, what) = match (&entries, inner) {
                (Some(entries), Some(suffix)) if i % 2 == 1 => {
                    let mut entries = entries.clone();
                    let e = entries
                        .iter_mut()
                        .find(|(n, _)| n.ends_with(suffix))
                        .unwrap_or_else(|| panic!("{name} has no entry `{suffix}`"));
                    let what = mutate(&mut e.1, &mut rng);
                    (rezip(&entries), format!("in entry `{suffix}`: {what}"))
                }
                _ => {
                    let mut d = original.clone();
                    let what = mutate(&mut d, &mut rng);
                    (d, what)
                }
            };
            // Damage either side.
            let swap = rng.below(2) == 1;
            let case = format!(
                "{name} seed {seed:#x}{}: {what}",
                if swap { " (expected side)" } else { "" }
            );
            watchdog.case(&case);
            if trace {
                let _ = writeln!(std::io::stderr(), "{case}");
            }
            let (a, b) = if swap {
                (&mutated, &original)
            } else {
                (&original, &mutated)
            };
            let t = Instant::now();
            let res = catch_unwind(AssertUnwindSafe(|| explain(name, a, b)));
            let took = t.elapsed();
            match res {
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{case}: panicked: {msg}"));
                }
                Ok(e) if e.summary.is_empty() => failures.push(format!("{case}: empty summary")),
                Ok(_) if took > SLOW => failures.push(format!("{case}: took {took:?}")),
                Ok(_) => {}
            }
            watchdog.finished();
            count += 1;
        }
    }
    eprintln!(
        "{count} mutations of {} in {:?}",
        fixtures.join(", "),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} mutations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn mutated_npy_files_are_survived() {
    survive_mutations(&["f8_a.npy", "f4be_a.npy", "i8_a.npy"], 3000, None);
}

#[test]
fn mutated_npz_files_are_survived() {
    survive_mutations(&["arrays_a.npz"], 3000, Some(".npy"));
}

#[test]
fn mutated_pickles_are_survived() {
    survive_mutations(&["hgb_threads_1.pkl", "memo_a.pkl"], 3000, None);
}

#[test]
fn mutated_joblib_files_are_survived() {
    survive_mutations(&["hgb_b.joblib", "hgb_threads_1_z.joblib"], 2000, None);
}

#[test]
fn mutated_torch_files_are_survived() {
    survive_mutations(
        &["mlp_a.pt", "ckpt_a.pt", "whole_a.pt"],
        1800,
        Some("data.pkl"),
    );
}

#[test]
fn mutated_safetensors_files_are_survived() {
    survive_mutations(&["mlp_a.safetensors"], 4000, None);
}

#[test]
fn mutated_onnx_models_are_survived() {
    survive_mutations(&["mlp_a.onnx", "helper_a.onnx"], 4000, None);
}
