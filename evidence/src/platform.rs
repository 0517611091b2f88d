//! What machine a build ran on: recorded so that a later mismatch can be
//! traced to a CPU feature or a kernel.

use serde::{Deserialize, Serialize};

/// The platform section of a record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// The OS (`linux`).
    pub os: String,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// The CPU model name.
    pub cpu_model: String,
    /// The CPU feature flags, sorted.
    pub cpu_flags: Vec<String>,
    /// Logical CPUs visible to the runner.
    pub cpus: usize,
    /// The sandbox backend and its version.
    pub backend: String,
}

impl Platform {
    /// Read the platform of this machine.
    pub fn detect(backend: String) -> Platform {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let mut cpu_flags: Vec<String> = {
            let f = field("flags");
            let f = if f.is_empty() { field("Features") } else { f };
            f.split_whitespace().map(str::to_string).collect()
        };
        cpu_flags.sort();
        cpu_flags.dedup();
        let cpu_model = {
            let m = field("model name");
            if m.is_empty() {
                field("CPU part")
            } else {
                m
            }
        };
        Platform {
            arch: std::env::consts::ARCH.to_string(),
            os: std::env::consts::OS.to_string(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cpu_model,
            cpu_flags,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_linux_machine() {
        let p = Platform::detect("test".into());
        assert_eq!(p.os, "linux");
        assert!(!p.kernel.is_empty());
        assert!(p.cpus >= 1);
        let mut sorted = p.cpu_flags.clone();
        sorted.sort();
        assert_eq!(sorted, p.cpu_flags);
    }
}
