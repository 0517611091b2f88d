//! `repro-bench`: whole `repro` commands timed side by side with reference
//! tools in one run, reported as medians and ratios against the goals of
//! BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release -p repro-runner -p repro-bench
//! target/release/repro-bench run --repro target/release/repro
//! ```
//!
//! Fixtures (a 2 GiB file, a 10,000-file dataset, recipes of 1,000 and
//! 10,000 steps with an equivalent `build.ninja`) are generated into the
//! work folder on first use and kept for later runs.

mod cases;
mod gen;
mod measure;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "repro-bench", about = "Side-by-side benchmarks of repro")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmarks and print a Markdown table of medians and ratios
    Run(cases::Options),
    /// Write a dataset of many files
    GenDataset {
        /// Where (created)
        dir: PathBuf,
        /// How many files
        #[arg(long, default_value_t = 10_000)]
        files: u64,
        /// Bytes in all
        #[arg(long, default_value_t = 2 << 30)]
        bytes: u64,
    },
    /// Write a recipe of N steps (and the equivalent build.ninja)
    GenRecipe {
        /// Where (created)
        dir: PathBuf,
        /// How many steps
        #[arg(long)]
        steps: usize,
        /// The image's manifest digest (`repro image import` prints it)
        #[arg(long)]
        image: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run(opts) => cases::run(opts),
        Cmd::GenDataset { dir, files, bytes } => {
            gen::write_dataset(&dir, files, bytes)?;
            Ok(())
        }
        Cmd::GenRecipe { dir, steps, image } => gen::write_recipe(&dir, steps, &image),
    }
}
