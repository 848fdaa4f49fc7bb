//! `aion-finetune`: adapt AION to a survey's columns and labels, data-parallel over MPI ranks.
//!
//! Modes (`docs/finetune.md`): `probe` (a head on frozen pooled embeddings), `lora` (adapters),
//! `full` (every weight, supervised), `masked` (4M masked modelling, also from scratch). A run:
//! 1. reads the configuration, registers new modalities, reads the needed catalogue columns
//!    (each rank a block, then shared), splits train / validation / test ([`data`]);
//! 2. fits quantile codecs of new modalities on the training rows across ranks ([`codecs`]);
//! 3. builds the model: a base model (with new modalities added, existing weights untouched) or
//!    a from-scratch one (`aion_model::train`);
//! 4. trains with data-parallel AdamW, checkpointing every N steps and on the stop signal
//!    ([`trainer`], [`checkpoint`]);
//! 5. writes the result as a Hub-layout model directory that every tool loads, the training log
//!    and its learning curves, and a test-split evaluation ([`export`]).

pub mod checkpoint;
pub mod codecs;
pub mod config;
pub mod data;
pub mod export;
pub mod log;
pub mod modes;
pub mod prepare;
pub mod probe;
pub mod setup;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod trainer;

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Parser;

use crate::backend::{self, DeviceChoice, Precision};
use crate::cli::{Report, RunContext, Tool, ToolArgs};

/// Tool name.
pub const TOOL: &str = "aion-finetune";

/// Command line of `aion-finetune`.
#[derive(Debug, Clone, Parser)]
#[command(name = TOOL, version,
    about = "Fine-tune AION-1 (probe, LoRA, full, masked modelling) on a catalogue, data-parallel over MPI ranks.",
    after_help = "Exit codes: 0 = finished (or already finished); 2 = error; \
3 = stopped by a signal (e.g. the Slurm time limit) after checkpointing: run the same command again to continue.")]
pub struct FinetuneArgs {
    /// Run configuration (TOML, see configs/finetune/ and docs/finetune.md).
    #[arg(long, value_name = "run.toml")]
    pub config: PathBuf,
    /// Output model directory (overrides `output` of the config).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Catalogue file(s) or glob(s) (override `catalog` of the config).
    #[arg(long, value_name = "IN.h5", num_args = 1..)]
    pub catalog: Vec<String>,
    /// Survey preset (overrides `survey` of the config): how a survey's own files become the
    /// tools' columns (`legacysurvey`, `desi`, `gaia`, … or `FILE.toml`; docs/surveys.md).
    #[arg(long, value_name = "NAME|FILE.toml")]
    pub survey: Option<String>,
    /// Base model directory (overrides `[model] base`).
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// Number of optimiser steps.
    #[arg(long, value_name = "N",
        help = crate::args::with_default("Number of optimiser steps", "[train] steps of the config"))]
    pub steps: Option<u64>,
    /// Start afresh: discard an existing checkpoint and log in the output directory.
    #[arg(long)]
    pub overwrite: bool,
    /// `cpu` (NdArray), or `cuda` (LibTorch, GPU = node-local rank; needs the `tch` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads per rank.
    #[arg(long, value_name = "N",
        help = crate::args::with_default("CPU threads per rank", &crate::args::threads_default()))]
    pub threads: Option<usize>,
    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl ToolArgs for FinetuneArgs {
    fn log_level(&self) -> &str {
        &self.log_level
    }

    fn threads(&self) -> usize {
        backend::thread_budget_from_env(self.threads)
    }

    /// `--device`: `cpu`, or `cuda` (the GPU of the rank's node-local index) in the `tch` build;
    /// always f32.
    fn device(&self) -> Result<(DeviceChoice, Precision)> {
        let device = match self.device.as_str() {
            "cpu" => DeviceChoice::Cpu,
            "cuda" if cfg!(feature = "tch") => DeviceChoice::Cuda(None),
            other => anyhow::bail!(
                "--device {other}: use cpu{}",
                if cfg!(feature = "tch") {
                    " or cuda"
                } else {
                    " (cuda needs a build with --features tch)"
                }
            ),
        };
        Ok((device, Precision::F32))
    }
}

/// The tool (`aion_app::cli::main::<FinetuneArgs>()` is the binary).
impl Tool for FinetuneArgs {
    const NAME: &'static str = TOOL;
    const STOP_SIGNALS: bool = true;

    /// Trains on burn's autodiff of backend `B`; returns how the run ended (no summary: the
    /// output directory's `train_log.jsonl` records the run).
    fn run<B: Backend>(&self, ctx: &RunContext, device: B::Device) -> Result<Report> {
        let outcome =
            prepare::run::<burn::backend::Autodiff<B>>(self, ctx.session(), &ctx.stop, device)?;
        Ok(Report::new(outcome, serde_json::Value::Null))
    }
}

pub use crate::pipeline::Outcome;
