//! Compile the hermeticity probe (`probes/probe.c`) into a static binary
//! with the system C compiler, and tell the crate where it is through
//! `REPRO_PROBE`.
//!
//! The compiler is `$CC` when set, `cc` otherwise. A missing compiler or a
//! missing static libc fails the build with a hint, rather than leaving the
//! hermeticity tests without their probe.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "probes/probe.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CC");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let probe = out_dir.join("probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());

    let output = Command::new(&cc)
        .args(["-static", "-O2", "-Wall", "-Wextra", "-o"])
        .arg(&probe)
        .arg(source)
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run the C compiler `{cc}` to build the hermeticity probe: {e}\n\
             hint: install a C compiler and the static C library (`apt-get install gcc libc6-dev`), or set CC"
        ),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("-lc") || stderr.contains("libc.a") {
            "the static C library is missing: install it (`apt-get install libc6-dev`)"
        } else {
            "check that `cc -static` works on this machine (`apt-get install gcc libc6-dev`)"
        };
        panic!(
            "`{cc} -static -O2 {source}` failed ({}):\n{stderr}\nhint: {hint}",
            output.status
        );
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("cargo:warning=probe.c: {line}");
    }
    println!("cargo:rustc-env=REPRO_PROBE={}", probe.display());
}
