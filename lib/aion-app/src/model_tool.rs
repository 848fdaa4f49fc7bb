//! `aion-model`: model directories as a whole. `random` writes a complete AION with random
//! weights in the Hub layout (every codec included), `check` verifies a directory strictly
//! without running it, `info` says what it holds. No MPI: one process.
//!
//! The work is in `aion_model::hub`; this is the command line.

use std::io::Write;
use std::path::PathBuf;

use aion_model::hub::check::{check, describe};
use aion_model::hub::random::{Size, create};
use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand};

use crate::cli::{Report, RunContext, Tool, ToolArgs};
use crate::exit;

/// Tool name.
pub const TOOL: &str = "aion-model";

/// Command line of `aion-model`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version,
    about = "Write a random AION model directory (every modality, no weights needed), check a model directory strictly, or describe it.",
    after_help = "Exit codes: 0 = done (check: no problem); 2 = error, or problems found by `check` (each printed).")]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelCommand,
    /// Log level.
    #[arg(long, default_value = "warn", global = true)]
    pub log_level: String,
}

impl ToolArgs for ModelArgs {
    fn log_level(&self) -> &str {
        &self.log_level
    }
}

/// The tool (`aion_app::cli::main::<ModelArgs>()` is the binary).
impl Tool for ModelArgs {
    const NAME: &'static str = TOOL;
    /// No checkpoints: a stop signal ends the process.
    const STOP_SIGNALS: bool = false;

    /// One process, no MPI.
    const MPI: bool = false;

    /// Exit 2 without an error when `check` or `info` found problems (they are printed).
    fn run<B: Backend>(&self, _: &RunContext, _: B::Device) -> Result<Report> {
        Ok(Report {
            exit: run(self)?,
            summary: serde_json::Value::Null,
        })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a complete AION with random weights in the Hub layout: the transformer and a codec
    /// for every modality (image, spectrum, catalog, segmentation map, every scalar incl. Gaia
    /// XP), with the released architectures. For dry runs before the AION-1 weights arrive: the
    /// outputs are meaningless.
    Random {
        /// tiny (D 64; small codecs; a few MB), small (D 256), base (AION-1 base, 312 M
        /// parameters, ~1.7 GB with the codecs), large, xlarge.
        #[arg(long, value_parser = parse_size)]
        size: Size,
        /// Seed of every random draw (same seed, same bytes).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Directory to create (it must not exist, unless --overwrite and it is a random
        /// model made by this command).
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// Replace OUTPUT if it is a random model made by this command (nothing else is ever
        /// replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Verify a model directory without running anything: every tensor of the transformer and
    /// of each codec (names, shapes, dtypes), a codec for every modality of config.json, the
    /// extra modalities (modalities.json), probe head and LoRA adapters when present; prints
    /// what it holds and the SHA-256 of every file. Exit 2 with the list of problems.
    Check {
        /// The model directory.
        dir: PathBuf,
    },
    /// Print what a model directory holds (size, modalities, codecs, tensor counts) from its
    /// JSON files and safetensors headers, without loading the weights.
    Info {
        /// The model directory.
        dir: PathBuf,
    },
}

fn parse_size(s: &str) -> std::result::Result<Size, String> {
    Size::ALL
        .into_iter()
        .find(|z| z.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = Size::ALL.iter().map(|z| z.name()).collect();
            format!("unknown size {s:?}: one of {}", names.join(", "))
        })
}

/// Prints to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Runs a parsed command; returns the exit code.
fn run(args: &ModelArgs) -> Result<u8> {
    match &args.command {
        ModelCommand::Random {
            size,
            seed,
            output,
            overwrite,
        } => {
            let t = std::time::Instant::now();
            create(output, *size, *seed, *overwrite)?;
            emit(&format!(
                "{TOOL}: wrote a random {} model (seed {seed}) to {} in {:.1} s; \
                 `{TOOL} check {}` verifies it\n",
                size.name(),
                output.display(),
                t.elapsed().as_secs_f64(),
                output.display()
            ))?;
            Ok(exit::OK)
        }
        ModelCommand::Check { dir } => {
            let report = check(dir);
            emit(&report.to_string())?;
            Ok(if report.problems.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        ModelCommand::Info { dir } => {
            let report = describe(dir);
            emit(&report.to_string())?;
            Ok(if report.problems.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
    }
}
