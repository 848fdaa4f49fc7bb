//! The aion-hpc pipelines. Each binary in `bin/` is one line, [`cli::main`] of its tool (a
//! [`cli::Tool`]); everything a tool does lives in this crate.
//!
//! - [`args`]: command-line arguments shared by the tools.
//! - [`run_config`]: the TOML run configuration and the dataset→modality mapping;
//!   [`config_path`]: paths in config files are relative to the file; [`survey`]: survey
//!   presets (`--survey`).
//! - [`codec_set`]: the codecs a run needs, loaded from a model directory.
//! - [`pipeline`], [`resume`], [`signals`]: chunked resumable runs, time-limit stops;
//!   [`stages`]: where each rank's time goes.
//! - [`tokenize`] runs `aion-tokenize`; [`search`] runs `aion-search`; [`embed`], [`predict`]
//!   and [`generate`] run the model tools; [`finetune`] runs `aion-finetune`.
//! - [`model_tool`] runs `aion-model` (random model directories, strict checks).
//! - [`export`] runs `aion-export` (results joined with catalogue columns as Parquet, FITS or
//!   HATS).
//! - [`logging`], [`provenance`], [`exit`]: per-rank logging, output provenance, exit codes;
//!   [`version`]: what `--version` prints.
//!
//! Exit codes are in [`exit`].

pub mod args;
pub mod backend;
pub mod batching;
pub mod calibration;
pub mod cli;
pub mod codec_set;
pub mod collective;
pub mod config_path;
pub mod decode;
pub mod embed;
pub mod exit;
pub mod export;
pub mod fault;
pub mod finetune;
pub mod fit_codecs;
pub mod generate;
pub mod guard;
pub mod help;
pub mod logging;
pub mod metrics;
pub mod model_plan;
pub mod model_tool;
pub mod output;
pub mod pipeline;
pub mod plot;
pub mod posterior;
pub mod predict;
pub mod progress;
pub mod provenance;
pub mod resume;
pub mod run_config;
pub mod search;
pub mod signals;
pub mod stages;
pub mod survey;
pub mod tokenize;
pub mod tool;
pub mod version;
