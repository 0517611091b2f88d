//! The fixed settings of the sandbox contract (see the crate docs): where
//! things are mounted, who the step runs as, and the environment every step
//! starts from. A leaf: it uses nothing else of the crate.

use std::collections::BTreeMap;

/// The version of the sandbox contract. Bump it when anything in the
/// contract changes: it is part of every step key, so old cache entries stop
/// matching.
pub const POLICY_VERSION: u32 = 1;

/// Where inputs are mounted: each at `/repro/in/<name>`, read-only.
pub const IN_DIR: &str = "/repro/in";
/// Where the one writable output directory is mounted.
pub const OUT_DIR: &str = "/repro/out";
/// The working directory, `HOME`, and a private tmpfs.
pub const WORKDIR: &str = "/tmp";
/// The fixed hostname inside the sandbox.
pub const HOSTNAME: &str = "repro";
/// The user id a step runs as (`nobody`).
pub const UID: u32 = 65534;
/// The group id a step runs as (`nogroup`).
pub const GID: u32 = 65534;
/// The `PATH` inside the sandbox.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The names [`base_env`] sets; a recipe may not override them.
pub const FIXED_ENV_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "TZ",
    "LC_ALL",
    "LANG",
    "SOURCE_DATE_EPOCH",
    "PYTHONHASHSEED",
    "PYTHONDONTWRITEBYTECODE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

/// The environment every step starts from: the fixed `PATH`, `HOME=/tmp`,
/// UTC, the `C.UTF-8` locale, `SOURCE_DATE_EPOCH`, `PYTHONHASHSEED`,
/// `PYTHONDONTWRITEBYTECODE=1`, and the thread counts of the usual numeric
/// libraries. Exactly the names in [`FIXED_ENV_NAMES`].
pub fn base_env(
    source_date_epoch: u64,
    python_hash_seed: u32,
    threads: u32,
) -> BTreeMap<String, String> {
    let threads = threads.to_string();
    let pairs = [
        ("PATH", PATH.to_string()),
        ("HOME", WORKDIR.to_string()),
        ("TZ", "UTC".to_string()),
        ("LC_ALL", "C.UTF-8".to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("SOURCE_DATE_EPOCH", source_date_epoch.to_string()),
        ("PYTHONHASHSEED", python_hash_seed.to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
        ("OMP_NUM_THREADS", threads.clone()),
        ("MKL_NUM_THREADS", threads.clone()),
        ("OPENBLAS_NUM_THREADS", threads.clone()),
        ("NUMEXPR_NUM_THREADS", threads.clone()),
        ("VECLIB_MAXIMUM_THREADS", threads),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_env_sets_exactly_the_fixed_names() {
        let env = base_env(1_700_000_000, 7, 3);
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        let mut fixed = FIXED_ENV_NAMES.to_vec();
        fixed.sort_unstable();
        assert_eq!(names, fixed);
        assert_eq!(env["SOURCE_DATE_EPOCH"], "1700000000");
        assert_eq!(env["PYTHONHASHSEED"], "7");
        assert_eq!(env["OMP_NUM_THREADS"], "3");
        assert_eq!(env["VECLIB_MAXIMUM_THREADS"], "3");
        assert_eq!(env["HOME"], WORKDIR);
        assert_eq!(env["PATH"], PATH);
        assert_eq!(env["TZ"], "UTC");
    }
}
