//! Hashing and re-checking speed of the store.
//!
//! ```sh
//! cargo bench -p repro-store --bench hash            # full runs
//! cargo bench -p repro-store --bench hash -- --quick # a quick look
//! ```
//!
//! The fixtures are generated in a temporary directory (in `$TMPDIR`, so on
//! that filesystem) and read from the page cache. Their sizes can be
//! changed through the environment:
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `REPRO_BENCH_FILE_MIB` | 256 | size of the single file for `hash_file` |
//! | `REPRO_BENCH_FILES` | 1000 | number of files of the dataset |
//! | `REPRO_BENCH_DATASET_MIB` | 64 | total size of the dataset |
//! | `REPRO_BENCH_DIRS` | 30 | directories the dataset's files are spread over |
//!
//! The benchmarks: `hash_file` on the single file; `hash_dir` on the
//! dataset (every file read, on all cores); `snapshot_dir` of the dataset
//! with a warm stat cache (the re-check of an unchanged dataset: a `stat`
//! per file, nothing read). Compare with `openssl dgst -sha256` on the
//! same files, in the same minute.

// criterion's macros define public functions without docs.
#![allow(missing_docs)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use repro_store::{hash_dir, hash_file, Ingest, Store};

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Deterministic bytes that do not compress or repeat (xorshift).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn write_file(path: &Path, size: usize, seed: u64) {
    let mut f = fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    let mut block = 0u64;
    while left > 0 {
        let n = left.min(buf.len());
        fill(&mut buf[..n], seed ^ (block << 32));
        f.write_all(&buf[..n]).unwrap();
        left -= n;
        block += 1;
    }
}

/// `files` files of `total` bytes in all over `dirs` directories (two
/// levels), sizes varying from tiny to about twice the mean.
fn write_dataset(root: &Path, files: usize, total: usize, dirs: usize) -> u64 {
    let mean = total / files.max(1);
    let mut written = 0u64;
    for i in 0..files {
        let d = i % dirs.max(1);
        let dir = root.join(format!("d{:02}/s{:03}", d % 10, d));
        fs::create_dir_all(&dir).unwrap();
        let size = (mean as u64 * ((i as u64 * 7919) % 200) / 100) as usize;
        write_file(&dir.join(format!("f{i:06}.bin")), size, i as u64);
        written += size as u64;
    }
    written
}

fn benches(c: &mut Criterion) {
    let file_mib = env_usize("REPRO_BENCH_FILE_MIB", 256);
    let files = env_usize("REPRO_BENCH_FILES", 1000);
    let dataset_mib = env_usize("REPRO_BENCH_DATASET_MIB", 64);
    let dirs = env_usize("REPRO_BENCH_DIRS", 30);

    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    write_file(&big, file_mib << 20, 42);
    let data = tmp.path().join("data");
    let bytes = write_dataset(&data, files, dataset_mib << 20, dirs);
    let created = Instant::now();

    let mut g = c.benchmark_group("hash");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((file_mib as u64) << 20));
    g.bench_function(format!("hash_file {file_mib} MiB"), |b| {
        b.iter(|| hash_file(&big).unwrap())
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("hash_dir {files} files, {dataset_mib} MiB"), |b| {
        b.iter(|| hash_dir(&data).unwrap())
    });
    g.finish();

    // The stat cache trusts an entry only if it was recorded at least 2 s
    // after the file last changed: snapshot once to ingest, once more after
    // that to record trusted entries, then measure the re-check.
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let want = store.snapshot_dir(&data, Ingest::Copy).unwrap();
    let wait = Duration::from_millis(2100).saturating_sub(created.elapsed());
    std::thread::sleep(wait);
    assert_eq!(store.snapshot_dir(&data, Ingest::Copy).unwrap(), want);
    let mut g = c.benchmark_group("recheck");
    g.throughput(Throughput::Elements(files as u64));
    g.bench_function(format!("snapshot_dir unchanged, {files} files"), |b| {
        b.iter(|| assert_eq!(store.snapshot_dir(&data, Ingest::Copy).unwrap(), want))
    });
    g.finish();
}

criterion_group!(hash, benches);
criterion_main!(hash);
