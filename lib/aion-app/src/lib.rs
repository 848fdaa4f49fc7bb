//! The aion-hpc pipelines. Each binary in `bin/` parses its arguments and calls one `run`
//! function here; everything a tool does lives in this crate.
//!
//! - [`args`]: command-line arguments shared by the tools.
//! - [`run_config`]: the TOML run configuration and the dataset→modality mapping.
//! - [`codec_set`]: the codecs a run needs, loaded from a model directory.
//! - [`tokenize`]: `aion-tokenize`.
//! - [`logging`], [`provenance`], [`exit`]: per-rank logging, output provenance, exit codes.

pub mod args;
pub mod codec_set;
pub mod collective;
pub mod exit;
pub mod logging;
pub mod output;
pub mod progress;
pub mod provenance;
pub mod run_config;
pub mod tokenize;
