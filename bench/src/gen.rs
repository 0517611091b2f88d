//! Generated fixtures: datasets of many files, big files, and recipes of
//! thousands of steps with an equivalent `build.ninja`.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// A small, fast, deterministic generator (xorshift64*), so that every run
/// of the benchmark hashes the same bytes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fill `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Write `size` pseudo-random bytes (seeded by `seed`) to `path`.
pub fn write_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()?;
    Ok(())
}

/// A sparse file of `size` bytes (all zero): for memory bounds on huge
/// inputs without writing them first.
pub fn write_sparse(path: &Path, size: u64) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}

/// A dataset of `files` files, `total` bytes in all, in folders of at most
/// 100 files (`d0000/f0000.bin`, ...). File sizes vary between half and one
/// and a half times the mean. Returns the bytes written.
pub fn write_dataset(dir: &Path, files: u64, total: u64) -> Result<u64> {
    fs::create_dir_all(dir)?;
    let mean = total / files.max(1);
    let mut rng = Rng::new(files ^ total);
    let mut written = 0u64;
    for i in 0..files {
        let sub = dir.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&sub)?;
        }
        let size = if i + 1 == files {
            total.saturating_sub(written)
        } else {
            let jitter = if mean > 1 { rng.next_u64() % mean } else { 0 };
            (mean / 2 + jitter).min(total - written)
        };
        write_file(&sub.join(format!("f{:04}.bin", i % 100)), size, i)?;
        written += size;
    }
    Ok(written)
}

/// The inputs of step `i` in the generated graph: a wide DAG where step
/// `i` reads the outputs of steps `(i-1)/2` and `i/3` (one input when they
/// coincide); step 0 has none.
pub fn step_inputs(i: usize) -> Vec<usize> {
    if i == 0 {
        return vec![];
    }
    let a = (i - 1) / 2;
    let b = i / 3;
    if a == b {
        vec![a]
    } else {
        vec![a, b]
    }
}

/// Write `model.toml` with `steps` steps on the image `image` (a manifest
/// digest already in the store) and a `build.ninja` with the same graph and
/// the same commands, into `dir`.
pub fn write_recipe(dir: &Path, steps: usize, image: &str) -> Result<()> {
    fs::create_dir_all(dir)?;
    let mut toml = String::new();
    toml.push_str(&format!(
        "[model]\nname = \"bench-{steps}\"\nversion = \"1\"\n\n[toolchains.bb]\nimage = \"{image}\"\n"
    ));
    let mut ninja = String::from(
        "rule first\n  command = echo $n > $out\nrule step\n  command = cat $in > $out && echo $n >> $out\n\n",
    );
    for i in 0..steps {
        let ins = step_inputs(i);
        toml.push_str(&format!(
            "\n[[steps]]\nname = \"s{i:05}\"\ntoolchain = \"bb\"\n"
        ));
        if ins.is_empty() {
            toml.push_str(&format!(
                "argv = [\"sh\", \"-c\", \"echo {i} > /repro/out/o\"]\n"
            ));
            ninja.push_str(&format!("build s{i:05}/o: first\n  n = {i}\n"));
        } else {
            let paths: Vec<String> = (0..ins.len())
                .map(|k| format!("/repro/in/i{k}/o"))
                .collect();
            toml.push_str(&format!(
                "argv = [\"sh\", \"-c\", \"cat {} > /repro/out/o && echo {i} >> /repro/out/o\"]\n",
                paths.join(" ")
            ));
            let inputs: Vec<String> = ins
                .iter()
                .enumerate()
                .map(|(k, j)| format!("i{k} = \"steps.s{j:05}\""))
                .collect();
            toml.push_str(&format!("inputs = {{ {} }}\n", inputs.join(", ")));
            let deps: Vec<String> = ins.iter().map(|j| format!("s{j:05}/o")).collect();
            ninja.push_str(&format!(
                "build s{i:05}/o: step {}\n  n = {i}\n",
                deps.join(" ")
            ));
        }
        toml.push_str("outputs = [\"o\"]\n");
    }
    write_atomic(&dir.join("model.toml"), toml.as_bytes())?;
    write_atomic(&dir.join("build.ninja"), ninja.as_bytes())?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_has_the_requested_files_and_bytes() {
        let tmp = std::env::temp_dir().join(format!("repro-bench-gen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let n = write_dataset(&tmp, 250, 100_000).unwrap();
        assert_eq!(n, 100_000);
        let mut files = 0;
        let mut bytes = 0;
        for d in fs::read_dir(&tmp).unwrap() {
            for f in fs::read_dir(d.unwrap().path()).unwrap() {
                files += 1;
                bytes += f.unwrap().metadata().unwrap().len();
            }
        }
        assert_eq!((files, bytes), (250, 100_000));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn graph_is_acyclic_and_reaches_every_step() {
        for i in 1..10_000 {
            let ins = step_inputs(i);
            assert!(
                !ins.is_empty() && ins.iter().all(|&j| j < i),
                "step {i}: {ins:?}"
            );
        }
    }

    #[test]
    fn generated_recipe_is_valid_and_matches_the_ninja_graph() {
        let tmp = std::env::temp_dir().join(format!("repro-bench-recipe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let image = format!("sha256:{}", "ab".repeat(32));
        write_recipe(&tmp, 50, &image).unwrap();
        let path = tmp.join("model.toml");
        let recipe = repro_recipes::parse_file(&path).unwrap();
        assert_eq!(recipe.steps.len(), 50);
        let ninja = fs::read_to_string(tmp.join("build.ninja")).unwrap();
        for (i, step) in recipe.steps.iter().enumerate() {
            let from: Vec<&str> = step.deps();
            let mut want: Vec<String> = step_inputs(i).iter().map(|j| format!("s{j:05}")).collect();
            want.sort();
            assert_eq!(from, want, "step {i}");
            let line = ninja
                .lines()
                .find(|l| l.starts_with(&format!("build s{i:05}/o:")))
                .unwrap();
            assert_eq!(line.split_whitespace().count() - 3, want.len(), "{line}");
        }
        fs::remove_dir_all(&tmp).unwrap();
    }
}
